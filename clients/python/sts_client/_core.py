"""What the sync client (``StsClient``) and the asyncio client (``AsyncStsClient``) share: the error type, the
method tables, the channel credentials, the retry backoff and the application token's bookkeeping. No I/O
here: each client does its own calls with what this module decides."""

from __future__ import annotations

import random
import time
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


#: Reconnect soon after a restart, so read retries find the server again (unless ``options`` says otherwise).
DEFAULT_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 10_000))


class ClientBase:
    """What StsClient and AsyncStsClient share: the options, the channel, the services and the decisions a
    failed call leads to. Subclasses name their channel constructors, lock and JWKS cache, and do the I/O."""

    RENEW_AT = 0.8
    _secure_channel: Callable[..., Any]
    _insecure_channel: Callable[..., Any]
    _lock_type: Callable[[], Any]
    _cache_type: Callable[..., Any]

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
        creds = channel_credentials(insecure, root_certificates, private_key, certificate_chain)
        opts = list(DEFAULT_CHANNEL_OPTIONS) + list(options)
        self.channel = type(self)._secure_channel(address, creds, options=opts) if creds else type(self)._insecure_channel(address, options=opts)
        self.timeout = timeout
        self.retries = retries
        self._backoff = retry_backoff
        self._credentials = (application_id, application_secret) if application_id and application_secret else None
        self._clock = clock
        self._on_event = on_event
        self._state = TokenState(renew_at=renew_at)
        self._lock = type(self)._lock_type()
        self._closed = False
        self._callables: Dict[str, Any] = {}
        self.pop = Service(SERVICES["pop"], self._invoke)
        self.session = Service(SERVICES["session"], self._invoke)
        self.secret = Service(SERVICES["secret"], self._invoke)
        self.keys = type(self)._cache_type(lambda: self.pop.GetJwks(pop_pb2.GetJwksRequest()), clock=wall_clock, min_refetch_interval=jwks_min_refetch_interval)

    def _invoke(self, method: Method, request: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _app_id(self) -> str:
        return self._credentials[0] if self._credentials else ""

    def _emit(self, event: StsClientEvent) -> None:
        emit(self._on_event, event)

    def _callable(self, path: str, method: Optional[Method]) -> Any:
        c = self._callables.get(path)
        if c is None:
            m = method or method_by_path(path)
            c = self._callables[path] = self.channel.unary_unary(
                path, request_serializer=m.request_type.SerializeToString, response_deserializer=m.response_type.FromString
            )
        return c

    def _closed_error(self, path: str) -> StsError:
        return StsError(grpc.StatusCode.CANCELLED, "the client is closed", method=path)

    def _managed(self, path: str, bearer: Optional[str]) -> bool:
        """Whether the client's own application token goes with this call."""
        return bearer is None and self._credentials is not None and path not in ANONYMOUS_METHODS

    def _renewal_failed(self, error: StsError) -> bool:
        """Records a refused renewal; True when a new logon must replace the token (it ended)."""
        self._emit(StsClientEvent("renewal-failed", self._app_id(), error=error))
        if error.code == grpc.StatusCode.UNAUTHENTICATED:
            # The token ended (released, expired, STS lost it): a new logon replaces it.
            self._state.forget()
            return True
        # STS unreachable or busy: the token stays in use; try again before it runs out.
        self._state.renewal_failed(self._clock(), error.retry_after_ms)
        return False

    def _renewed(self, token: Any, sent_at: float) -> None:
        self._state.renewed(token, sent_at)
        self._emit(StsClientEvent("renewed", self._app_id(), expires_at=self._state.expires_at))

    def _logged_on(self, token: Any, sent_at: float) -> None:
        self._state.logged_on(token, sent_at)
        self._emit(StsClientEvent("logon", self._app_id(), expires_at=self._state.expires_at))

    def _next_step(self, error: StsError, path: str, managed: bool, used: Optional[str], reauthenticated: bool, attempt: int, deadline: float) -> Optional[float]:
        """After a failed attempt: -1.0 to log on again and resend at once, seconds to wait before a retry, or
        None to give up (raise ``error``)."""
        if self._closed:
            return None
        # Our token was refused as a credential: the server did nothing, so log on again and resend once.
        if managed and not reauthenticated and used and error.code == grpc.StatusCode.UNAUTHENTICATED and error.sts_code == "unauthenticated":
            self._state.forget(used)
            return -1.0
        if path not in IDEMPOTENT_METHODS or error.code != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
            return None
        delay = backoff_delay(attempt, *self._backoff, error.retry_after_ms)
        if time.monotonic() + delay >= deadline:
            return None
        self._emit(StsClientEvent("retry", method=path, attempt=attempt + 1, delay=delay, error=error))
        return delay


def logon_request(app_id: str, secret: str) -> Any:
    return session_pb2.LogonApplicationRequest(
        application_credential=session_pb2.ApplicationCredential(application_id=app_id, application_secret=secret)
    )


def bearer_metadata(bearer: Optional[str], metadata: Sequence[Tuple[str, str]]) -> Tuple[Tuple[str, str], ...]:
    md = tuple(metadata)
    return md + (("authorization", f"Bearer {bearer}"),) if bearer else md
