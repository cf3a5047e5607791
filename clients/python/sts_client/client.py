"""``StsClient``: the synchronous STS client (grpcio). See the package docstring for what it does."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import grpc

from . import _core
from ._core import IDEMPOTENT_METHODS, LOGON_APPLICATION, RENEW_APPLICATION_TOKEN, Method, Service, StsClientEvent, StsError
from .jwks import JwksCache
from .v1 import common_pb2, pop_pb2, session_pb2

#: Reconnect soon after a restart, so read retries find the server again (unless ``options`` says otherwise).
DEFAULT_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 10_000))


class StsClient:
    """One channel to STS with its three services (``pop``, ``session``, ``secret``), each RPC an attribute:
    ``client.session.LogonUser(request)``. ``client.call(client.session.LogonUser, request)`` does the same.

    - TLS by default, with grpc's default roots or ``root_certificates`` (PEM bytes); ``private_key`` and
      ``certificate_chain`` for mTLS; ``insecure=True`` for plaintext (development only).
    - With ``application_id`` and ``application_secret`` the application logs on at first use and every
      call but LogonApplication and GetJwks carries ``authorization: Bearer <application token>``. The token
      is renewed once ``renew_at`` (80%) of its lifetime has passed, by the first call after that point (no
      background thread); a renewal refused with UNAUTHENTICATED, or a token at its absolute lifetime, means
      a new logon; a renewal that fails otherwise keeps the token in use until it ends. A call refused because
      the token is no longer valid (``sts-error-code: unauthenticated``) logs on again and is sent once more.
    - A deadline on every call: ``timeout`` seconds (default 10), per call ``timeout=``, retries included.
    - Idempotent reads only (``IDEMPOTENT_METHODS``) are retried on UNAVAILABLE, ``retries`` times (3), with
      exponential backoff and jitter (``retry_backoff``: initial and maximum seconds), at least
      ``retry-after-ms``.
    - Every failure raises ``StsError`` (``code``, ``sts_code``, ``retry_after_ms``, ``details``, ``method``).
    - ``keys``: a ``JwksCache`` bound to GetJwks for ``encrypt_for``, ``encrypt_credential``, ``verify_token``
      and ``verify_user_token``.

    ``clock`` (monotonic seconds) and ``wall_clock`` (epoch seconds, for JWT expiry and the JWKS lifetime)
    are for tests; ``on_event`` receives a ``StsClientEvent`` per logon, renewal, failed renewal and retry.
    """

    RENEW_AT = 0.8

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
        self.channel = grpc.secure_channel(address, creds, options=opts) if creds else grpc.insecure_channel(address, options=opts)
        self.timeout = timeout
        self.retries = retries
        self._backoff = retry_backoff
        self._credentials = (application_id, application_secret) if application_id and application_secret else None
        self._clock = clock
        self._on_event = on_event
        self._state = _core.TokenState(renew_at=renew_at)
        self._lock = threading.RLock()
        self._closed = False
        self._callables: Dict[str, Any] = {}
        self.pop = Service(_core.SERVICES["pop"], self._invoke)
        self.session = Service(_core.SERVICES["session"], self._invoke)
        self.secret = Service(_core.SERVICES["secret"], self._invoke)
        self.keys = JwksCache(lambda: self.pop.GetJwks(pop_pb2.GetJwksRequest()), clock=wall_clock, min_refetch_interval=jwks_min_refetch_interval)

    # -- application token -------------------------------------------------------------------------------

    def logon(self) -> common_pb2.ApplicationToken:
        """Logs the application on now and keeps the token."""
        with self._lock:
            return self._logon(time.monotonic() + self.timeout)

    def application_token(self) -> str:
        """The application token id, after logging on or renewing it when due."""
        return self._token(time.monotonic() + self.timeout)

    def _token(self, deadline: float) -> str:
        with self._lock:
            state = self._state
            now = self._clock()
            due = state.due(now)
            if due == "logon":
                self._logon(deadline)
            elif due == "relogon":
                # At its absolute lifetime (session.applicationTokenMaxLifetimeMs): a new logon replaces it; until
                # that succeeds the current token stays in use.
                try:
                    self._logon(deadline)
                except StsError:
                    state.relogon_failed(now)
            elif due == "renew":
                self._renew(deadline)
            return state.token.application_token_id

    def _logon(self, deadline: float) -> common_pb2.ApplicationToken:
        if not self._credentials:
            raise ValueError("StsClient: no application credentials given")
        sent_at = self._clock()
        try:
            res = self._unary(LOGON_APPLICATION, _core.logon_request(*self._credentials), None, deadline)
        except grpc.RpcError as err:
            raise StsError.from_rpc_error(err, LOGON_APPLICATION) from None
        self._state.logged_on(res.application_token, sent_at)
        self._emit(StsClientEvent("logon", self._credentials[0], expires_at=self._state.expires_at))
        return res.application_token

    def _renew(self, deadline: float) -> None:
        state = self._state
        token_id = state.token.application_token_id
        sent_at = self._clock()
        try:
            res = self._unary(RENEW_APPLICATION_TOKEN, session_pb2.RenewApplicationTokenRequest(application_token_id=token_id), token_id, deadline)
        except grpc.RpcError as err:
            error = StsError.from_rpc_error(err, RENEW_APPLICATION_TOKEN)
            self._emit(StsClientEvent("renewal-failed", self._app_id(), error=error))
            if error.code == grpc.StatusCode.UNAUTHENTICATED:
                # The token ended (released, expired, STS lost it): a new logon replaces it.
                state.forget()
                self._logon(deadline)
            else:
                state.renewal_failed(self._clock(), error.retry_after_ms)
            return
        state.renewed(res.application_token, sent_at)
        self._emit(StsClientEvent("renewed", self._app_id(), expires_at=state.expires_at))

    # -- calls ---------------------------------------------------------------------------------------------

    def call(self, method: Any, request: Any = None, *, timeout: Optional[float] = None, bearer: Optional[str] = None,
             metadata: Sequence[Tuple[str, str]] = ()) -> Any:
        """Calls an RPC of ``pop``, ``session`` or ``secret`` (for example ``client.session.LogonUser``)."""
        return method(request, timeout=timeout, bearer=bearer, metadata=metadata)

    def _invoke(self, method: Method, request: Any, *, timeout: Optional[float] = None, bearer: Optional[str] = None,
                metadata: Sequence[Tuple[str, str]] = ()) -> Any:
        path = method.path
        if self._closed:
            raise StsError(grpc.StatusCode.CANCELLED, "the client is closed", method=path)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        request = method.request_type() if request is None else request
        managed = bearer is None and self._credentials is not None and path not in _core.ANONYMOUS_METHODS
        reauthenticated = False
        attempt = 0
        # An attempt includes the logon it may need, so a read retried on UNAVAILABLE also retries that logon.
        while True:
            used = None
            try:
                token = bearer
                if managed:
                    token = used = self._token(deadline)
                return self._unary(path, request, token, deadline, metadata, method)
            except grpc.RpcError as err:
                error = StsError.from_rpc_error(err, path)
            except StsError as err:
                error = err
            if self._closed:
                raise error
            # Our token was refused as a credential: the server did nothing, so log on again and resend once.
            if managed and not reauthenticated and used and error.code == grpc.StatusCode.UNAUTHENTICATED and error.sts_code == "unauthenticated":
                reauthenticated = True
                with self._lock:
                    self._state.forget(used)
                continue
            if path not in IDEMPOTENT_METHODS or error.code != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
                raise error
            delay = _core.backoff_delay(attempt, *self._backoff, error.retry_after_ms)
            if time.monotonic() + delay >= deadline:
                raise error
            attempt += 1
            self._emit(StsClientEvent("retry", method=path, attempt=attempt, delay=delay, error=error))
            time.sleep(delay)
            if self._closed:
                raise error

    def _unary(self, path: str, request: Any, bearer: Optional[str], deadline: float,
               metadata: Sequence[Tuple[str, str]] = (), method: Optional[Method] = None) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StsError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", method=path)
        return self._callable(path, method)(request, metadata=_core.bearer_metadata(bearer, metadata), timeout=remaining)

    def _callable(self, path: str, method: Optional[Method]) -> Any:
        c = self._callables.get(path)
        if c is None:
            m = method or _core.method_by_path(path)
            c = self._callables[path] = self.channel.unary_unary(
                path, request_serializer=m.request_type.SerializeToString, response_deserializer=m.response_type.FromString
            )
        return c

    def _app_id(self) -> str:
        return self._credentials[0] if self._credentials else ""

    def _emit(self, event: StsClientEvent) -> None:
        _core.emit(self._on_event, event)

    def close(self) -> None:
        """Closes the channel; later calls raise StsError CANCELLED. Idempotent."""
        self._closed = True
        self.channel.close()

    def __enter__(self) -> "StsClient":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
