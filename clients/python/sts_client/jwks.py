"""Client-side use of STS's published keys (joserfc): encrypt data and credentials to STS (JWE) and verify
tokens STS signed, with one JWKS cache that honours the advertised lifetime and refetches when it meets an
unknown kid. ``JwksCache`` fetches synchronously, ``AsyncJwksCache`` with await; both share ``KeySet``."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Tuple, Union

from joserfc import jwe, jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwk import import_key
from joserfc.jws import JWSRegistry

#: The protected-header type of a credential JWE (LogonApplication ``application_credential_jwe``, LogonUser
#: ``user_credential_jwe``, TransformUserToken ``step_up.password_jwe``). STS accepts no other JWE there.
CREDENTIAL_JWE_TYP = "sts-credential+jwe"
#: The protected-header type of the user token JWTs STS signs (RFC 8725 section 3.11).
USER_TOKEN_TYP = "sts-user+jwt"
#: Default lifetime of a credential JWE, seconds. STS accepts ``exp`` at most 5 minutes ahead.
CREDENTIAL_LIFETIME = 120.0


class JwksError(Exception):
    """A token that does not verify, or keys STS does not publish."""


class KeySet:
    """One fetched JWKS (a GetJwksResponse): its keys by kid and the primary encryption kid."""

    def __init__(self, response: Any, fetched_at: float):
        doc = json.loads(response.jwks_json)
        self.keys: Dict[str, Dict[str, Any]] = {k["kid"]: k for k in doc.get("keys", []) if isinstance(k, dict) and k.get("kid")}
        self.primary_encryption_kid: str = response.primary_encryption_kid
        self.fetched_at = fetched_at
        max_age = response.max_age.seconds + response.max_age.nanos / 1e9 if response.HasField("max_age") else 0.0
        self.expires_at = fetched_at + max_age
        self._imported: Dict[str, Any] = {}

    def key(self, kid: str, use: str) -> Optional[Tuple[Dict[str, Any], Any]]:
        jwk = self.keys.get(kid)
        if jwk is None or jwk.get("use") != use or not jwk.get("alg"):
            return None
        if kid not in self._imported:
            self._imported[kid] = import_key(jwk)
        return jwk, self._imported[kid]


def _encrypt(keys: KeySet, plaintext: bytes, header: Mapping[str, str]) -> str:
    target = keys.key(keys.primary_encryption_kid, "enc")
    if target is None:
        raise JwksError("STS publishes no primary encryption key")
    jwk, key = target
    protected = {"alg": jwk["alg"], "enc": "A256GCM", "kid": jwk["kid"], **header}
    return jwe.encrypt_compact(protected, plaintext, key, algorithms=[jwk["alg"], "A256GCM"])


def _credential_plaintext(credential: Mapping[str, str], lifetime: float, audience: Optional[str], now: float) -> bytes:
    if not lifetime > 0:
        raise ValueError("lifetime must be positive")
    # A user's credential (LogonUser, step-up) is bound to the application that presents it (RFC 7519 4.1.3).
    if "application_id" not in credential and not audience:
        raise ValueError("a user credential needs audience: the application id that will present it")
    claims: Dict[str, Any] = dict(credential)
    if audience:
        claims["aud"] = audience
    claims["jti"] = secrets.token_urlsafe(32)
    claims["exp"] = int(now + lifetime)
    return json.dumps(claims).encode()


def _header_kid(token: str) -> Optional[str]:
    try:
        head = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise JwksError("not a compact JWS") from None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


class _PinnedAlgorithm(JWSRegistry):
    """Allows exactly the algorithm of the key STS published (RFC 8725 section 3.1). Unlike joserfc's default
    lookup it does not warn on "EdDSA": RFC 9864 deprecates that name for "Ed25519", but STS's Ed25519 keys
    carry it (RFC 8037) and the algorithm comes from the key, not the token, so there is nothing to act on."""

    def __init__(self, alg: str):
        super().__init__(algorithms=[alg])
        self._alg = alg

    def get_alg(self, name: str) -> Any:
        if name != self._alg or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


def _verify(target: Optional[Tuple[Dict[str, Any], Any]], token: str) -> Tuple[bytes, Dict[str, Any]]:
    if target is None:
        raise JwksError("signed with a key STS does not publish")
    jwk, key = target
    try:
        obj = jws.deserialize_compact(token, key, registry=_PinnedAlgorithm(jwk["alg"]))
    except (JoseError, ValueError) as err:
        raise JwksError("invalid JWS") from err
    return obj.payload, dict(obj.headers())


def _user_claims(payload: bytes, header: Dict[str, Any], issuer: str, audience: str, now: float) -> Dict[str, Any]:
    if header.get("typ") != USER_TOKEN_TYP:
        raise JwksError("not an STS user token (typ)")
    try:
        claims = json.loads(payload)
    except ValueError:
        raise JwksError("not an STS user token (claims)") from None
    if not isinstance(claims, dict):
        raise JwksError("not an STS user token (claims)")
    if claims.get("iss") != issuer:
        raise JwksError("user token from another issuer")
    if claims.get("aud") != audience:
        raise JwksError("user token for another application")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp <= now:
        raise JwksError("user token expired")
    return claims


class _CacheBase:
    def __init__(self, clock: Callable[[], float], min_refetch_interval: float):
        self._clock = clock
        self._min_refetch = min_refetch_interval
        self._keys: Optional[KeySet] = None

    def _stale(self) -> bool:
        return self._keys is None or self._clock() >= self._keys.expires_at

    def _may_refetch(self, kid: str) -> bool:
        return self._keys is not None and kid not in self._keys.keys and self._clock() - self._keys.fetched_at >= self._min_refetch


class JwksCache(_CacheBase):
    """STS's published keys behind ``fetch`` (a GetJwks call), for ``encrypt_for``, ``encrypt_credential``,
    ``verify_token`` and ``verify_user_token``. ``clock`` is wall-clock seconds (for ``exp`` and max_age)."""

    def __init__(self, fetch: Callable[[], Any], *, clock: Callable[[], float] = time.time, min_refetch_interval: float = 10.0):
        super().__init__(clock, min_refetch_interval)
        self._fetch = fetch

    def refresh(self) -> None:
        """Fetches the JWKS now."""
        response = self._fetch()
        self._keys = KeySet(response, self._clock())

    def _fresh(self) -> KeySet:
        if self._stale():
            self.refresh()
        assert self._keys is not None
        return self._keys

    def _key(self, kid: str, use: str) -> Optional[Tuple[Dict[str, Any], Any]]:
        self._fresh()
        if self._may_refetch(kid):
            self.refresh()
        assert self._keys is not None
        return self._keys.key(kid, use)

    def encrypt_for(self, data: Union[bytes, str], content_type: Optional[str] = None) -> str:
        """Encrypts ``data`` to STS's PRIMARY encryption key as a compact JWE (enc A256GCM): only STS can
        decrypt it, whatever proxies sit between."""
        plaintext = data.encode() if isinstance(data, str) else data
        return _encrypt(self._fresh(), plaintext, {"cty": content_type} if content_type else {})

    def encrypt_credential(self, credential: Mapping[str, str], *, lifetime: float = CREDENTIAL_LIFETIME, audience: Optional[str] = None) -> str:
        """A credential JWE for LogonApplication (``{"application_id", "application_secret"}``), LogonUser
        (``{"username", "password"}``) or a step-up (``{"password"}``): typed ``sts-credential+jwe``, a fresh
        256-bit ``jti`` and an ``exp`` ``lifetime`` seconds from now (RFC 7519 sections 4.1.7, 4.1.4). STS
        accepts each once and only until it expires: make a new one for every call. A user's credential needs
        ``audience``: the id of the application that will present it."""
        plaintext = _credential_plaintext(credential, lifetime, audience, self._clock())
        return _encrypt(self._fresh(), plaintext, {"typ": CREDENTIAL_JWE_TYP})

    def verify_token(self, token: str) -> Tuple[bytes, Dict[str, Any]]:
        """Verifies a compact JWS signed by STS; returns (payload, protected header). Raises JwksError."""
        kid = _header_kid(token)
        return _verify(self._key(kid, "sig") if kid else None, token)

    def verify_user_token(self, token: str, *, issuer: str, audience: str, now: Optional[float] = None) -> Dict[str, Any]:
        """Verifies a user token JWT offline: STS's signature, the type ``sts-user+jwt``, the issuer, the
        audience (your application id) and the expiry; returns the claims. Offline verification cannot see a
        logout: use ValidateUserToken where that matters."""
        payload, header = self.verify_token(token)
        return _user_claims(payload, header, issuer, audience, self._clock() if now is None else now)


class AsyncJwksCache(_CacheBase):
    """``JwksCache`` for asyncio: the same methods, awaited; ``fetch`` returns an awaitable GetJwksResponse."""

    def __init__(self, fetch: Callable[[], Awaitable[Any]], *, clock: Callable[[], float] = time.time, min_refetch_interval: float = 10.0):
        super().__init__(clock, min_refetch_interval)
        self._fetch = fetch

    async def refresh(self) -> None:
        response = await self._fetch()
        self._keys = KeySet(response, self._clock())

    async def _fresh(self) -> KeySet:
        if self._stale():
            await self.refresh()
        assert self._keys is not None
        return self._keys

    async def _key(self, kid: str, use: str) -> Optional[Tuple[Dict[str, Any], Any]]:
        await self._fresh()
        if self._may_refetch(kid):
            await self.refresh()
        assert self._keys is not None
        return self._keys.key(kid, use)

    async def encrypt_for(self, data: Union[bytes, str], content_type: Optional[str] = None) -> str:
        plaintext = data.encode() if isinstance(data, str) else data
        return _encrypt(await self._fresh(), plaintext, {"cty": content_type} if content_type else {})

    async def encrypt_credential(self, credential: Mapping[str, str], *, lifetime: float = CREDENTIAL_LIFETIME, audience: Optional[str] = None) -> str:
        plaintext = _credential_plaintext(credential, lifetime, audience, self._clock())
        return _encrypt(await self._fresh(), plaintext, {"typ": CREDENTIAL_JWE_TYP})

    async def verify_token(self, token: str) -> Tuple[bytes, Dict[str, Any]]:
        kid = _header_kid(token)
        return _verify(await self._key(kid, "sig") if kid else None, token)

    async def verify_user_token(self, token: str, *, issuer: str, audience: str, now: Optional[float] = None) -> Dict[str, Any]:
        payload, header = await self.verify_token(token)
        return _user_claims(payload, header, issuer, audience, self._clock() if now is None else now)
