"""STS client for Python.

The generated stubs live in ``sts.v1`` (``*_pb2`` messages, ``*_pb2_grpc`` stubs, made by
``scripts/generate-python.sh``); this module adds the little every caller needs around them:

- ``StsClient``: one channel with the three service stubs, the application logon on first use, lazy renewal
  of the application token (at 80% of its lifetime; on UNAUTHENTICATED it logs on again, and so it does once
  STS renews the token by less than a lifetime: the token has reached its absolute lifetime), the
  ``authorization: Bearer <token>`` metadata and a deadline on every call.
- ``StsError``: a failed call as the gRPC status plus the STS error code from the trailing metadata
  ``sts-error-code`` and ``retry-after-ms`` where retrying helps.

    from sts_client import StsClient, session_pb2

    with StsClient("127.0.0.1:50051", application_id="shop", application_secret=secret) as sts:
        res = sts.call(sts.session.LogonUser, session_pb2.LogonUserRequest(
            user_credential=session_pb2.UserCredential(username="dave", password="...")))
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, Sequence, Tuple

import grpc

from sts.v1 import (  # noqa: F401  (re-exported for callers)
    common_pb2,
    pop_pb2,
    pop_pb2_grpc,
    secret_pb2,
    secret_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)

__all__ = [
    "StsClient",
    "StsError",
    "common_pb2",
    "pop_pb2",
    "pop_pb2_grpc",
    "secret_pb2",
    "secret_pb2_grpc",
    "session_pb2",
    "session_pb2_grpc",
]

class StsError(Exception):
    """A failed STS call: ``code`` (grpc.StatusCode), ``sts_code`` (stable STS error code, '' when the
    server sent none, as for transport failures), ``retry_after_ms`` (int or None) and ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str, sts_code: str = "", retry_after_ms: Optional[int] = None, method: str = ""):
        super().__init__(f"{method or 'STS call'}: {code.name} {details}" + (f" [{sts_code}]" if sts_code else ""))
        self.code = code
        self.details = details
        self.sts_code = sts_code
        self.retry_after_ms = retry_after_ms
        self.method = method

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError, method: str = "") -> "StsError":
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = (err.details() if hasattr(err, "details") else str(err)) or ""
        trailing: Sequence[Tuple[str, Any]] = (err.trailing_metadata() if hasattr(err, "trailing_metadata") else None) or ()
        md = {k: v for k, v in trailing}
        retry = md.get("retry-after-ms")
        return cls(code, details, str(md.get("sts-error-code", "")), int(retry) if retry and str(retry).isdigit() else None, method)


class StsClient:
    """One channel to STS with its three stubs (``pop``, ``session``, ``secret``).

    TLS: pass ``root_certificates`` (PEM bytes; None with ``tls=True`` uses the system roots), and
    ``private_key``/``certificate_chain`` for mTLS. Without them the channel is plaintext.
    """

    RENEW_AT = 0.8

    def __init__(
        self,
        address: str,
        *,
        application_id: Optional[str] = None,
        application_secret: Optional[str] = None,
        tls: bool = False,
        root_certificates: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        timeout: float = 10.0,
        options: Sequence[Tuple[str, Any]] = (),
        clock: Callable[[], float] = time.monotonic,
    ):
        if tls or root_certificates or private_key or certificate_chain:
            creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self.channel = grpc.secure_channel(address, creds, options=list(options))
        else:
            self.channel = grpc.insecure_channel(address, options=list(options))
        self.pop = pop_pb2_grpc.PopServiceStub(self.channel)
        self.session = session_pb2_grpc.SessionServiceStub(self.channel)
        self.secret = secret_pb2_grpc.SecretServiceStub(self.channel)
        self.timeout = timeout
        self._credentials = (application_id, application_secret) if application_id and application_secret else None
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Optional[common_pb2.ApplicationToken] = None
        self._lifetime = 0.0
        self._obtained = 0.0
        # Seconds of validity from _obtained that the last logon or renewal gave (at most _lifetime).
        self._granted = 0.0
        # Local clock minus STS time (seconds), measured at logon: converts STS's expiry times to local ones.
        self._offset = 0.0
        # False once a renewal gave less than a lifetime: STS will not extend the token further.
        self._renewable = True

    # -- application token -------------------------------------------------------------------------------

    def logon(self) -> common_pb2.ApplicationToken:
        """Logs the application on now and keeps the token."""
        if not self._credentials:
            raise ValueError("StsClient: no application credentials given")
        app_id, secret = self._credentials
        started = self._clock()
        res = self.call(
            self.session.LogonApplication,
            session_pb2.LogonApplicationRequest(
                application_credential=session_pb2.ApplicationCredential(application_id=app_id, application_secret=secret)
            ),
        )
        token = res.application_token
        # Lifetimes come from the server's own times, so clock skew between here and STS does not matter.
        self._lifetime = max(0.0, token.expire_time.ToMilliseconds() - token.issue_time.ToMilliseconds()) / 1000
        # Send time minus issue time is never more than the true offset: converted expiries err early.
        self._offset = started - token.issue_time.ToMilliseconds() / 1000
        self._obtained = started
        self._granted = self._lifetime
        self._renewable = True
        self._token = token
        return token

    def application_token(self) -> str:
        """The application token id, after logging on or renewing it when due."""
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._obtained + self._granted:
                self.logon()
            elif now >= self._obtained + self.RENEW_AT * self._granted and not self._renewable:
                # At its absolute lifetime (session.applicationTokenMaxLifetimeMs): a new logon replaces it.
                self.logon()
            elif now >= self._obtained + self.RENEW_AT * self._granted:
                started = now
                try:
                    res = self.call(
                        self.session.RenewApplicationToken,
                        session_pb2.RenewApplicationTokenRequest(application_token_id=self._token.application_token_id),
                        bearer=self._token.application_token_id,
                    )
                    self._token = res.application_token
                    self._obtained = started
                    # STS never renews past the token's absolute lifetime: trust the expiry it answered.
                    expires = self._token.expire_time.ToMilliseconds() / 1000 + self._offset
                    self._granted = max(0.0, min(self._lifetime, expires - started))
                    # Under 90% of a lifetime (10% for the offset's error): renewing again gains less each time.
                    self._renewable = self._granted >= 0.9 * self._lifetime
                except StsError as err:
                    if err.code != grpc.StatusCode.UNAUTHENTICATED:
                        raise
                    self.logon()
            assert self._token is not None
            return self._token.application_token_id

    # -- calls ---------------------------------------------------------------------------------------------

    def call(self, method: Any, request: Any, *, timeout: Optional[float] = None, bearer: Optional[str] = None) -> Any:
        """Calls a stub method (for example ``client.session.LogonUser``) with a deadline and, unless the RPC
        is anonymous, the application token; raises StsError on failure."""
        anonymous = method is self.session.LogonApplication or method is self.pop.GetJwks
        if bearer is None and self._credentials and not anonymous:
            bearer = self.application_token()
        metadata = (("authorization", f"Bearer {bearer}"),) if bearer else ()
        try:
            return method(request, metadata=metadata, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as err:
            raise StsError.from_rpc_error(err, _method_name(method)) from None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "StsClient":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


def _method_name(method: Any) -> str:
    # grpc's multi-callables keep the method path ("/sts.v1.SessionService/LogonUser"); only for messages.
    path = getattr(method, "_method", b"")
    return path.decode() if isinstance(path, bytes) else str(path)
