"""``AsyncStsClient``: the asyncio STS client (grpc.aio), with the same behaviour as ``StsClient``."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import grpc
import grpc.aio

from . import _core
from ._core import IDEMPOTENT_METHODS, LOGON_APPLICATION, RENEW_APPLICATION_TOKEN, Method, Service, StsClientEvent, StsError
from .client import DEFAULT_CHANNEL_OPTIONS, StsClient
from .jwks import AsyncJwksCache
from .v1 import common_pb2, pop_pb2, session_pb2


class AsyncStsClient:
    """``StsClient`` for asyncio: the same options and rules (TLS by default, logon at first use, renewal at
    80% of the lifetime by the first call after it, a deadline on every call, retries of idempotent reads
    only, ``StsError``), with every call awaited: ``await client.session.LogonUser(request)``. ``keys`` is an
    ``AsyncJwksCache``. Use it as ``async with AsyncStsClient(...) as sts:``, or ``await client.close()``."""

    RENEW_AT = StsClient.RENEW_AT

    def __init__(
        self,
        address: str,
        *,
        application_id: Optional[str] = None,
        application_secret: Optional[str] = None,
        insecure: bool = False,
        root_certificates: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        timeout: float = 10.0,
        retries: int = 3,
        retry_backoff: Tuple[float, float] = (0.2, 5.0),
        renew_at: float = RENEW_AT,
        options: Sequence[Tuple[str, Any]] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jwks_min_refetch_interval: float = 10.0,
        on_event: Optional[Callable[[StsClientEvent], None]] = None,
    ):
        if not 0 < renew_at < 1:
            raise ValueError("renew_at must be between 0 and 1")
        creds = _core.channel_credentials(insecure, root_certificates, private_key, certificate_chain)
        opts = list(DEFAULT_CHANNEL_OPTIONS) + list(options)
        self.channel = grpc.aio.secure_channel(address, creds, options=opts) if creds else grpc.aio.insecure_channel(address, options=opts)
        self.timeout = timeout
        self.retries = retries
        self._backoff = retry_backoff
        self._credentials = (application_id, application_secret) if application_id and application_secret else None
        self._clock = clock
        self._on_event = on_event
        self._state = _core.TokenState(renew_at=renew_at)
        self._lock = asyncio.Lock()
        self._closed = False
        self._callables: Dict[str, Any] = {}
        self.pop = Service(_core.SERVICES["pop"], self._invoke)
        self.session = Service(_core.SERVICES["session"], self._invoke)
        self.secret = Service(_core.SERVICES["secret"], self._invoke)
        self.keys = AsyncJwksCache(lambda: self.pop.GetJwks(pop_pb2.GetJwksRequest()), clock=wall_clock, min_refetch_interval=jwks_min_refetch_interval)

    # -- application token -------------------------------------------------------------------------------

    async def logon(self) -> common_pb2.ApplicationToken:
        """Logs the application on now and keeps the token."""
        async with self._lock:
            return await self._logon(time.monotonic() + self.timeout)

    async def application_token(self) -> str:
        """The application token id, after logging on or renewing it when due."""
        return await self._token(time.monotonic() + self.timeout)

    async def _token(self, deadline: float) -> str:
        # One logon or renewal at a time: concurrent callers wait for it and share its token.
        async with self._lock:
            state = self._state
            now = self._clock()
            due = state.due(now)
            if due == "logon":
                await self._logon(deadline)
            elif due == "relogon":
                try:
                    await self._logon(deadline)
                except StsError:
                    state.relogon_failed(now)
            elif due == "renew":
                await self._renew(deadline)
            return state.token.application_token_id

    async def _logon(self, deadline: float) -> common_pb2.ApplicationToken:
        if not self._credentials:
            raise ValueError("AsyncStsClient: no application credentials given")
        sent_at = self._clock()
        try:
            res = await self._unary(LOGON_APPLICATION, _core.logon_request(*self._credentials), None, deadline)
        except grpc.RpcError as err:
            raise StsError.from_rpc_error(err, LOGON_APPLICATION) from None
        self._state.logged_on(res.application_token, sent_at)
        _core.emit(self._on_event, StsClientEvent("logon", self._credentials[0], expires_at=self._state.expires_at))
        return res.application_token

    async def _renew(self, deadline: float) -> None:
        state = self._state
        token_id = state.token.application_token_id
        sent_at = self._clock()
        try:
            res = await self._unary(RENEW_APPLICATION_TOKEN, session_pb2.RenewApplicationTokenRequest(application_token_id=token_id), token_id, deadline)
        except grpc.RpcError as err:
            error = StsError.from_rpc_error(err, RENEW_APPLICATION_TOKEN)
            _core.emit(self._on_event, StsClientEvent("renewal-failed", self._app_id(), error=error))
            if error.code == grpc.StatusCode.UNAUTHENTICATED:
                state.forget()
                await self._logon(deadline)
            else:
                state.renewal_failed(self._clock(), error.retry_after_ms)
            return
        state.renewed(res.application_token, sent_at)
        _core.emit(self._on_event, StsClientEvent("renewed", self._app_id(), expires_at=state.expires_at))

    # -- calls ---------------------------------------------------------------------------------------------

    async def call(self, method: Any, request: Any = None, *, timeout: Optional[float] = None, bearer: Optional[str] = None,
                   metadata: Sequence[Tuple[str, str]] = ()) -> Any:
        """Calls an RPC of ``pop``, ``session`` or ``secret`` (for example ``client.session.LogonUser``)."""
        return await method(request, timeout=timeout, bearer=bearer, metadata=metadata)

    async def _invoke(self, method: Method, request: Any, *, timeout: Optional[float] = None, bearer: Optional[str] = None,
                      metadata: Sequence[Tuple[str, str]] = ()) -> Any:
        path = method.path
        if self._closed:
            raise StsError(grpc.StatusCode.CANCELLED, "the client is closed", method=path)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        request = method.request_type() if request is None else request
        managed = bearer is None and self._credentials is not None and path not in _core.ANONYMOUS_METHODS
        reauthenticated = False
        attempt = 0
        while True:
            used = None
            try:
                token = bearer
                if managed:
                    token = used = await self._token(deadline)
                return await self._unary(path, request, token, deadline, metadata, method)
            except grpc.RpcError as err:
                error = StsError.from_rpc_error(err, path)
            except StsError as err:
                error = err
            if self._closed:
                raise error
            if managed and not reauthenticated and used and error.code == grpc.StatusCode.UNAUTHENTICATED and error.sts_code == "unauthenticated":
                reauthenticated = True
                self._state.forget(used)
                continue
            if path not in IDEMPOTENT_METHODS or error.code != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
                raise error
            delay = _core.backoff_delay(attempt, *self._backoff, error.retry_after_ms)
            if time.monotonic() + delay >= deadline:
                raise error
            attempt += 1
            _core.emit(self._on_event, StsClientEvent("retry", method=path, attempt=attempt, delay=delay, error=error))
            await asyncio.sleep(delay)
            if self._closed:
                raise error

    async def _unary(self, path: str, request: Any, bearer: Optional[str], deadline: float,
                     metadata: Sequence[Tuple[str, str]] = (), method: Optional[Method] = None) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StsError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", method=path)
        c = self._callables.get(path)
        if c is None:
            m = method or _core.method_by_path(path)
            c = self._callables[path] = self.channel.unary_unary(
                path, request_serializer=m.request_type.SerializeToString, response_deserializer=m.response_type.FromString
            )
        return await c(request, metadata=_core.bearer_metadata(bearer, metadata), timeout=remaining)

    def _app_id(self) -> str:
        return self._credentials[0] if self._credentials else ""

    async def close(self) -> None:
        """Closes the channel; later calls raise StsError CANCELLED. Idempotent."""
        self._closed = True
        await self.channel.close()

    async def __aenter__(self) -> "AsyncStsClient":
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.close()
