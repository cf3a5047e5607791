"""``AsyncStsClient``: the asyncio STS client (grpc.aio), with the same behaviour as ``StsClient``."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional, Sequence, Tuple

import grpc
import grpc.aio

from . import _core
from ._core import LOGON_APPLICATION, RENEW_APPLICATION_TOKEN, ClientBase, Method, StsError
from .jwks import AsyncJwksCache
from .v1 import common_pb2, session_pb2


class AsyncStsClient(ClientBase):
    """``StsClient`` for asyncio: the same options and rules (TLS by default, logon at first use, renewal at
    80% of the lifetime by the first call after it, a deadline on every call, retries of idempotent reads
    only, ``StsError``), with every call awaited: ``await client.session.LogonUser(request)``. ``keys`` is an
    ``AsyncJwksCache``. Use it as ``async with AsyncStsClient(...) as sts:``, or ``await client.close()``."""

    _secure_channel = staticmethod(grpc.aio.secure_channel)
    _insecure_channel = staticmethod(grpc.aio.insecure_channel)
    _lock_type = asyncio.Lock
    _cache_type = AsyncJwksCache

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
        self._logged_on(res.application_token, sent_at)
        return res.application_token

    async def _renew(self, deadline: float) -> None:
        token_id = self._state.token.application_token_id
        sent_at = self._clock()
        try:
            res = await self._unary(RENEW_APPLICATION_TOKEN, session_pb2.RenewApplicationTokenRequest(application_token_id=token_id), token_id, deadline)
        except grpc.RpcError as err:
            if self._renewal_failed(StsError.from_rpc_error(err, RENEW_APPLICATION_TOKEN)):
                await self._logon(deadline)
            return
        self._renewed(res.application_token, sent_at)

    # -- calls ---------------------------------------------------------------------------------------------

    async def call(self, method: Any, request: Any = None, *, timeout: Optional[float] = None, bearer: Optional[str] = None,
                   metadata: Sequence[Tuple[str, str]] = ()) -> Any:
        """Calls an RPC of ``pop``, ``session`` or ``secret`` (for example ``client.session.LogonUser``)."""
        return await method(request, timeout=timeout, bearer=bearer, metadata=metadata)

    async def _invoke(self, method: Method, request: Any, *, timeout: Optional[float] = None, bearer: Optional[str] = None,
                      metadata: Sequence[Tuple[str, str]] = ()) -> Any:
        path = method.path
        if self._closed:
            raise self._closed_error(path)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        request = method.request_type() if request is None else request
        managed = self._managed(path, bearer)
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
            step = self._next_step(error, path, managed, used, reauthenticated, attempt, deadline)
            if step is None:
                raise error
            if step < 0:
                reauthenticated = True
                continue
            attempt += 1
            await asyncio.sleep(step)
            if self._closed:
                raise error

    async def _unary(self, path: str, request: Any, bearer: Optional[str], deadline: float,
                     metadata: Sequence[Tuple[str, str]] = (), method: Optional[Method] = None) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StsError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", method=path)
        return await self._callable(path, method)(request, metadata=_core.bearer_metadata(bearer, metadata), timeout=remaining)

    async def close(self) -> None:
        """Closes the channel; later calls raise StsError CANCELLED. Idempotent."""
        self._closed = True
        await self.channel.close()

    async def __aenter__(self) -> "AsyncStsClient":
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.close()
