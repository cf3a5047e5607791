"""What the sync client (``StsClient``) and the asyncio client (``AsyncStsClient``) share: the error type, the
method tables, the channel credentials, the retry backoff and the application token's bookkeeping. No I/O
here: each client does its own calls with what this module decides."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import grpc

from .v1 import pop_pb2, secret_pb2, session_pb2

#: Methods retried on UNAVAILABLE: they read, so sending them twice changes nothing.
IDEMPOTENT_METHODS = frozenset(
    {
        "/sts.v1.PopService/GetJwks",
        "/sts.v1.PopService/ListKeys",
        "/sts.v1.PopService/Verify",
        "/sts.v1.SessionService/ValidateUserToken",
        "/sts.v1.SessionService/ValidateApplicationToken",
        "/sts.v1.SessionService/GetUserTokenByUserTokenId",
        "/sts.v1.SessionService/GetApplicationInfo",
    }
)
LOGON_APPLICATION = "/sts.v1.SessionService/LogonApplication"
RENEW_APPLICATION_TOKEN = "/sts.v1.SessionService/RenewApplicationToken"
GET_JWKS = "/sts.v1.PopService/GetJwks"
#: Methods that need no credential.
ANONYMOUS_METHODS = frozenset({LOGON_APPLICATION, GET_JWKS})


class StsError(Exception):
    """A failed STS call.

    ``code`` (grpc.StatusCode); ``sts_code``, the stable STS error code from the trailing metadata
    ``sts-error-code`` (for example ``invalid_credentials``), or the status name in lower case when the server
    sent none (``unavailable``, ``deadline_exceeded``, ...); ``retry_after_ms`` (int, or None when the server
    sent no ``retry-after-ms``); ``details``, the status message; ``method``, the full method path; and
    ``trailing_metadata``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        sts_code: str = "",
        retry_after_ms: Optional[int] = None,
        method: str = "",
        trailing_metadata: Sequence[Tuple[str, Any]] = (),
    ):
        self.code = code
        self.sts_code = sts_code or code.name.lower()
        self.details = details
        self.retry_after_ms = retry_after_ms
        self.method = method
        self.trailing_metadata = tuple(trailing_metadata)
        super().__init__(f"{method or 'STS call'}: {code.name} ({self.sts_code}): {details}")

    @classmethod
    def from_rpc_error(cls, err: Any, method: str = "") -> "StsError":
        """Wraps a grpc.RpcError (sync) or grpc.aio.AioRpcError."""
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = (err.details() if hasattr(err, "details") else str(err)) or ""
        trailing = (err.trailing_metadata() if hasattr(err, "trailing_metadata") else None) or ()
        md = {k: v for k, v in trailing}
        retry = str(md.get("retry-after-ms", ""))
        return cls(code, details, str(md.get("sts-error-code", "")), int(retry) if retry.isdigit() else None, method, trailing)


@dataclass
class StsClientEvent:
    """What the client did on its own, for logs and metrics (never carries a token): ``type`` is "logon",
    "renewed", "renewal-failed" or "retry"."""

    type: str
    application_id: str = ""
    #: When the token stops being valid, on the client's clock (logon, renewed).
    expires_at: Optional[float] = None
    method: str = ""
    attempt: int = 0
    delay: float = 0.0
    error: Optional[StsError] = None


def channel_credentials(
    insecure: bool,
    root_certificates: Optional[bytes],
    private_key: Optional[bytes],
    certificate_chain: Optional[bytes],
) -> Optional[grpc.ChannelCredentials]:
    """TLS unless ``insecure``: the default roots, or ``root_certificates``; a client certificate for mTLS.
    None means plaintext."""
    if insecure:
        if root_certificates or private_key or certificate_chain:
            raise ValueError("insecure=True takes no certificates: they are for TLS")
        return None
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


def backoff_delay(attempt: int, initial: float, maximum: float, retry_after_ms: Optional[int]) -> float:
    """Seconds before retry ``attempt`` (0-based): min(maximum, initial * 2^attempt), half fixed, half random,
    and at least ``retry-after-ms``."""
    ceiling = min(maximum, initial * 2**attempt)
    return max(ceiling / 2 + random.random() * ceiling / 2, (retry_after_ms or 0) / 1000)


@dataclass
class Method:
    """One unary RPC: its full path and message classes."""

    path: str
    request_type: Any
    response_type: Any


def service_methods(module: Any, service: str) -> Dict[str, Method]:
    """The unary methods of a service in a generated *_pb2 module, by RPC name (``LogonUser``)."""
    desc = module.DESCRIPTOR.services_by_name[service]
    return {
        m.name: Method(f"/{desc.full_name}/{m.name}", getattr(module, m.input_type.name), getattr(module, m.output_type.name))
        for m in desc.methods
    }


SERVICES = {
    "pop": service_methods(pop_pb2, "PopService"),
    "session": service_methods(session_pb2, "SessionService"),
    "secret": service_methods(secret_pb2, "SecretService"),
}


class Service:
    """A service's RPCs as attributes (``client.session.LogonUser(request)``), each sent through the client
    with its logon, deadline, retry and error rules. ``request`` may be left out (an empty message)."""

    def __init__(self, methods: Dict[str, Method], invoke: Callable[..., Any]):
        self._methods = methods
        self._invoke = invoke

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            method = self._methods[name]
        except KeyError:
            raise AttributeError(name) from None

        def call(request: Any = None, **kwargs: Any) -> Any:
            return self._invoke(method, request, **kwargs)

        call.path = method.path  # type: ignore[attr-defined]
        call.__name__ = name
        return call


@dataclass
class TokenState:
    """The application token and when to renew it, on the client's clock (seconds).

    Lifetimes come from the server's own times (expire - issue), so clock skew to STS does not matter; the
    offset (local send time minus issue time, never more than the true offset) converts STS's expiry times to
    local ones, erring early."""

    renew_at: float
    token: Any = None
    lifetime: float = 0.0
    offset: float = 0.0
    expires_at: float = 0.0
    next_renewal: float = 0.0
    #: False once a renewal granted less than a lifetime: STS will not extend it further, so log on again.
    renewable: bool = True

    def due(self, now: float) -> str:
        """'logon' (no valid token), 'renew', 'relogon' (at its absolute lifetime) or 'valid'."""
        if self.token is None or now >= self.expires_at:
            return "logon"
        if now >= self.next_renewal:
            return "renew" if self.renewable else "relogon"
        return "valid"

    def logged_on(self, token: Any, sent_at: float) -> None:
        issue = token.issue_time.ToMilliseconds() / 1000
        self.lifetime = max(0.0, token.expire_time.ToMilliseconds() / 1000 - issue)
        self.offset = sent_at - issue
        self.token = token
        self.expires_at = sent_at + self.lifetime
        self.next_renewal = sent_at + self.renew_at * self.lifetime
        self.renewable = True

    def renewed(self, token: Any, sent_at: float) -> None:
        # STS never renews past the token's absolute lifetime: trust the expiry it answered, not a lifetime.
        granted = max(0.0, min(self.lifetime, token.expire_time.ToMilliseconds() / 1000 + self.offset - sent_at))
        self.token = token
        self.expires_at = sent_at + granted
        self.next_renewal = sent_at + self.renew_at * granted
        # Under 90% of a lifetime (10% for the offset's error): renewing again gains less each time.
        self.renewable = granted >= 0.9 * self.lifetime

    def renewal_failed(self, now: float, retry_after_ms: Optional[int]) -> None:
        """STS unreachable or busy: try again before the token runs out (it stays in use until then)."""
        left = self.expires_at - now
        self.next_renewal = now + min(left / 2, max(1.0, (retry_after_ms or 0) / 1000))

    def relogon_failed(self, now: float) -> None:
        self.next_renewal = now + min((self.expires_at - now) / 2, 1.0)

    def forget(self, token_id: Optional[str] = None) -> None:
        if self.token is not None and (token_id is None or self.token.application_token_id == token_id):
            self.token = None


def emit(on_event: Optional[Callable[[StsClientEvent], None]], event: StsClientEvent) -> None:
    if on_event is None:
        return
    try:
        on_event(event)
    except Exception:  # noqa: BLE001  (a listener's failure is not the client's)
        pass


def method_by_path(path: str) -> Method:
    for methods in SERVICES.values():
        for m in methods.values():
            if m.path == path:
                return m
    raise KeyError(path)


def logon_request(app_id: str, secret: str) -> Any:
    return session_pb2.LogonApplicationRequest(
        application_credential=session_pb2.ApplicationCredential(application_id=app_id, application_secret=secret)
    )


def bearer_metadata(bearer: Optional[str], metadata: Sequence[Tuple[str, str]]) -> Tuple[Tuple[str, str], ...]:
    md = tuple(metadata)
    return md + (("authorization", f"Bearer {bearer}"),) if bearer else md
