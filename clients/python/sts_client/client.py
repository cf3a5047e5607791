"""``StsClient``: the synchronous STS client (grpcio). See the package docstring for what it does."""

from __future__ import annotations

import threading
import time
from typing import Any, Optional, Sequence, Tuple

import grpc

from . import _core
from ._core import LOGON_APPLICATION, RENEW_APPLICATION_TOKEN, ClientBase, Method, StsError
from .jwks import JwksCache
from .v1 import common_pb2, session_pb2


class StsClient(ClientBase):
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
    Safe to share between threads.
    """

    _secure_channel = staticmethod(grpc.secure_channel)
    _insecure_channel = staticmethod(grpc.insecure_channel)
    _lock_type = threading.RLock
    _cache_type = JwksCache

    # -- application token -------------------------------------------------------------------------------

    def logon(self) -> common_pb2.ApplicationToken:
        """Logs the application on now and keeps the token."""
        with self._lock:
            return self._logon(time.monotonic() + self.timeout)

    def application_token(self) -> str:
        """The application token id, after logging on or renewing it when due."""
        return self._token(time.monotonic() + self.timeout)

    def _token(self, deadline: float) -> str:
        # One logon or renewal at a time: concurrent callers wait for it and share its token.
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
        self._logged_on(res.application_token, sent_at)
        return res.application_token

    def _renew(self, deadline: float) -> None:
        token_id = self._state.token.application_token_id
        sent_at = self._clock()
        try:
            res = self._unary(RENEW_APPLICATION_TOKEN, session_pb2.RenewApplicationTokenRequest(application_token_id=token_id), token_id, deadline)
        except grpc.RpcError as err:
            if self._renewal_failed(StsError.from_rpc_error(err, RENEW_APPLICATION_TOKEN)):
                self._logon(deadline)
            return
        self._renewed(res.application_token, sent_at)

    # -- calls ---------------------------------------------------------------------------------------------

    def call(self, method: Any, request: Any = None, *, timeout: Optional[float] = None, bearer: Optional[str] = None,
             metadata: Sequence[Tuple[str, str]] = ()) -> Any:
        """Calls an RPC of ``pop``, ``session`` or ``secret`` (for example ``client.session.LogonUser``)."""
        return method(request, timeout=timeout, bearer=bearer, metadata=metadata)

    def _invoke(self, method: Method, request: Any, *, timeout: Optional[float] = None, bearer: Optional[str] = None,
                metadata: Sequence[Tuple[str, str]] = ()) -> Any:
        path = method.path
        if self._closed:
            raise self._closed_error(path)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        request = method.request_type() if request is None else request
        managed = self._managed(path, bearer)
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
            step = self._next_step(error, path, managed, used, reauthenticated, attempt, deadline)
            if step is None:
                raise error
            if step < 0:
                reauthenticated = True
                continue
            attempt += 1
            time.sleep(step)
            if self._closed:
                raise error

    def _unary(self, path: str, request: Any, bearer: Optional[str], deadline: float,
               metadata: Sequence[Tuple[str, str]] = (), method: Optional[Method] = None) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StsError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", method=path)
        return self._callable(path, method)(request, metadata=_core.bearer_metadata(bearer, metadata), timeout=remaining)

    def close(self) -> None:
        """Closes the channel; later calls raise StsError CANCELLED. Idempotent."""
        self._closed = True
        self.channel.close()

    def __enter__(self) -> "StsClient":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
