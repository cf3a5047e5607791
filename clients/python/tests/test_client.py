"""The behaviour of StsClient and AsyncStsClient against real STS servers, which test/clients.test.ts starts
(the same rules the TypeScript and Go clients' tests check, row by row of the README's client table). Every
test body is written once, as a coroutine, and runs against both clients: the sync one through an adapter
that runs each call in a thread. The harness passes the servers in STSCLIENT_TEST_* variables; run it with
`npx vitest run test/clients.test.ts`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import unittest
import urllib.request
from typing import Any, Callable, Dict, List

import grpc

from sts_client import (
    IDEMPOTENT_METHODS,
    AsyncStsClient,
    JwksError,
    StsClient,
    StsClientEvent,
    StsError,
    pop_pb2,
    session_pb2,
)

MIN = 60.0
_missing = [n for n in ("CLOCK_ADDRESS", "CLOCK_SECRET", "CONTROL", "ADDRESS", "SECRET", "PASSWORD", "ISSUER", "TLS_ADDRESS", "CA_FILE", "UNUSED_ADDRESS") if not os.environ.get(f"STSCLIENT_TEST_{n}")]
if _missing:
    sys.exit(f"these tests need real STS servers (STSCLIENT_TEST_{_missing[0]} is not set): run `npx vitest run test/clients.test.ts` from the repository root")
ENV = {n: os.environ[f"STSCLIENT_TEST_{n}"] for n in ("CLOCK_ADDRESS", "CLOCK_SECRET", "CONTROL", "ADDRESS", "SECRET", "PASSWORD", "ISSUER", "TLS_ADDRESS", "CA_FILE", "UNUSED_ADDRESS")}


class Synced:
    """The sync client (or its services, or its JWKS cache) as awaitables: each call runs in a thread, so
    concurrent awaits are concurrent calls, as they would be from a thread pool."""

    def __init__(self, target: Any):
        self._target = target

    def __getattr__(self, name: str) -> Any:
        if name == "call":
            # StsClient.call(method, request) is method(request): here method is already awaitable.
            return lambda method, request=None, **kwargs: method(request, **kwargs)
        value = getattr(self._target, name)
        if name in ("session", "pop", "secret", "keys"):
            return Synced(value)
        if callable(value):
            async def call(*args: Any, **kwargs: Any) -> Any:
                return await asyncio.to_thread(value, *args, **kwargs)
            return call
        return value


class Clocks:
    """The client's manual clock and the server's, moved together (the server's through the control URL)."""

    def __init__(self, start: float):
        self.now = start

    def client(self) -> float:
        return self.now

    def advance(self, seconds: float) -> int:
        self.now += seconds
        req = urllib.request.Request(f"{ENV['CONTROL']}/advance?ms={round(seconds * 1000)}", method="POST")
        with urllib.request.urlopen(req) as res:
            return json.load(res)["now"]


class Behaviour:
    """The tests; subclasses say which client ``make`` builds."""

    variant = ""

    def make(self, address: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def client(self, address: str = "", **kwargs: Any) -> Any:
        c = self.make(address or ENV["ADDRESS"], **kwargs)
        self.addAsyncCleanup(c.close)
        return c

    def recorder(self) -> "tuple[List[StsClientEvent], Callable[[str], int]]":
        events: List[StsClientEvent] = []
        return events, lambda kind: sum(1 for e in events if e.type == kind)

    async def app_info(self, c: Any) -> str:
        return (await c.session.GetApplicationInfo(session_pb2.GetApplicationInfoRequest())).application.application_id

    async def failure(self, awaitable: Any) -> StsError:
        with self.assertRaises(StsError) as caught:
            await awaitable
        return caught.exception

    async def test_logon_at_first_use_and_user_session(self) -> None:
        events, count = self.recorder()
        c = self.client(insecure=True, application_id="shop", application_secret=ENV["SECRET"], on_event=events.append)
        self.assertEqual(events, [])
        infos = await asyncio.gather(*(self.app_info(c) for _ in range(4)))
        self.assertEqual(infos, ["shop"] * 4)
        self.assertEqual(count("logon"), 1)

        # Fields left out take their defaults (no ticket).
        user = await c.session.LogonUser(session_pb2.LogonUserRequest(user_credential=session_pb2.UserCredential(username="alice", password=ENV["PASSWORD"])))
        self.assertEqual(user.user_token.application_id, "shop")
        by_id = await c.session.ValidateUserToken(session_pb2.ValidateUserTokenRequest(user_token_id=user.user_token.user_token_id))
        by_jwt = await c.call(c.session.ValidateUserToken, session_pb2.ValidateUserTokenRequest(user_token_jwt=user.user_token_jwt))
        self.assertEqual([by_id.active, by_jwt.active], [True, True])
        token = await c.application_token()
        v = await c.session.ValidateApplicationToken(session_pb2.ValidateApplicationTokenRequest(application_token_id=token))
        self.assertEqual([v.active, v.application_token.application_id], [True, "shop"])
        self.assertEqual(count("logon"), 1)
        await c.session.ReleaseUserToken(session_pb2.ReleaseUserTokenRequest(user_token_id=user.user_token.user_token_id))
        after = await c.session.ValidateUserToken(session_pb2.ValidateUserTokenRequest(user_token_id=user.user_token.user_token_id))
        self.assertFalse(after.active)

    async def test_renewal_at_80_percent_and_logon_when_refused(self) -> None:
        clocks = Clocks(1_000_000.0)
        events, count = self.recorder()
        c = self.client(ENV["CLOCK_ADDRESS"], insecure=True, application_id="shop", application_secret=ENV["CLOCK_SECRET"], clock=clocks.client, on_event=events.append)
        first = await c.application_token()
        self.assertAlmostEqual(events[-1].expires_at, clocks.now + MIN, places=3)
        # Before 80% of the lifetime nothing is renewed; at 80% the next call renews the same token.
        clocks.advance(0.79 * MIN)
        self.assertEqual(await c.application_token(), first)
        self.assertEqual(count("renewed"), 0)
        server_now = clocks.advance(0.01 * MIN)
        self.assertEqual(await self.app_info(c), "shop")
        self.assertEqual(count("renewed"), 1)
        self.assertAlmostEqual(events[-1].expires_at, clocks.now + MIN, places=3)
        v = await c.session.ValidateApplicationToken(session_pb2.ValidateApplicationTokenRequest(application_token_id=first))
        self.assertEqual(v.application_token.expire_time.ToMilliseconds(), server_now + MIN * 1000)

        # Past the original expiry the token still works, and it is still the first one.
        clocks.advance(0.5 * MIN)
        self.assertEqual(await self.app_info(c), "shop")
        self.assertEqual(await c.application_token(), first)
        self.assertEqual(count("logon"), 1)

        # The token ends behind the client's back: at the next renewal it is refused, and the client logs on.
        await c.session.ReleaseApplicationToken(session_pb2.ReleaseApplicationTokenRequest(application_token_id=first))
        clocks.advance(0.3 * MIN)
        second = await c.application_token()
        self.assertNotEqual(second, first)
        failed = [e for e in events if e.type == "renewal-failed"]
        self.assertEqual([(e.error.code, e.error.sts_code) for e in failed], [(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")])
        self.assertEqual(count("logon"), 2)

        # A call refused because the token ended is sent once more after a new logon.
        await c.session.ReleaseApplicationToken(session_pb2.ReleaseApplicationTokenRequest(application_token_id=second))
        self.assertEqual(await self.app_info(c), "shop")
        self.assertEqual(count("logon"), 3)

        # A token whose lifetime ran out (no call for a while) is not used: the next call logs on first.
        clocks.advance(2 * MIN)
        self.assertEqual(await self.app_info(c), "shop")
        self.assertEqual(count("logon"), 4)
        self.assertEqual(count("renewal-failed"), 1)

    async def test_renewal_stops_at_absolute_lifetime(self) -> None:
        clocks = Clocks(5_000_000.0)
        events, count = self.recorder()
        c = self.client(ENV["CLOCK_ADDRESS"], insecure=True, application_id="shop", application_secret=ENV["CLOCK_SECRET"], clock=clocks.client, on_event=events.append)
        first = await c.application_token()
        clocks.advance(0.8 * MIN)
        await c.application_token()
        self.assertEqual(events[-1].type, "renewed")
        self.assertAlmostEqual(events[-1].expires_at, clocks.now + MIN, places=3)
        # 1.6 min after logon STS renews only up to 2.2 min, and the client believes it.
        clocks.advance(0.8 * MIN)
        await c.application_token()
        self.assertEqual(events[-1].type, "renewed")
        self.assertAlmostEqual(events[-1].expires_at, clocks.now + 0.6 * MIN, places=3)
        # At 80% of what is left: a new logon instead of a renewal that would gain nothing.
        clocks.advance(0.48 * MIN)
        second = await c.application_token()
        self.assertNotEqual(second, first)
        self.assertEqual([count("logon"), count("renewed"), count("renewal-failed")], [2, 2, 0])
        # The first token was still valid when it was replaced; it ends at the cap.
        active = lambda token: c.session.ValidateApplicationToken(session_pb2.ValidateApplicationTokenRequest(application_token_id=token))  # noqa: E731
        self.assertTrue((await active(first)).active)
        clocks.advance(0.12 * MIN)
        self.assertFalse((await active(first)).active)
        self.assertEqual(await self.app_info(c), "shop")

    async def test_keys_encrypt_and_verify_offline(self) -> None:
        c = self.client(insecure=True, application_id="shop", application_secret=ENV["SECRET"])
        jwe = await c.keys.encrypt_for("for STS only", "text/plain")
        self.assertEqual(len(jwe.split(".")), 5)
        dec = await c.pop.Decrypt(pop_pb2.DecryptRequest(jwe=jwe))
        self.assertEqual([dec.plaintext, dec.content_type], [b"for STS only", "text/plain"])

        user = await c.session.LogonUser(session_pb2.LogonUserRequest(user_credential=session_pb2.UserCredential(username="alice", password=ENV["PASSWORD"])))
        # One JWKS fetch (encrypt_for made it), then verification is offline: the server is not asked again.
        fetches: List[int] = []
        inner = c.keys._target._fetch if isinstance(c.keys, Synced) else c.keys._fetch
        if isinstance(c.keys, Synced):
            c.keys._target._fetch = lambda: (fetches.append(1), inner())[1]
        else:
            async def counted() -> Any:
                fetches.append(1)
                return await inner()
            c.keys._fetch = counted
        for _ in range(3):
            claims = await c.keys.verify_user_token(user.user_token_jwt, issuer=ENV["ISSUER"], audience="shop")
            self.assertEqual(claims["sub"], user.user_token.uid)
        self.assertEqual(fetches, [])
        with self.assertRaises(JwksError):
            await c.keys.verify_user_token(user.user_token_jwt, issuer=ENV["ISSUER"], audience="another-app")
        with self.assertRaises(JwksError):
            await c.keys.verify_user_token(user.user_token_jwt, issuer="urn:another", audience="shop")
        with self.assertRaisesRegex(JwksError, "expired"):
            await c.keys.verify_user_token(user.user_token_jwt, issuer=ENV["ISSUER"], audience="shop", now=time.time() + 2 * 86400)
        h, p, s = user.user_token_jwt.split(".")
        with self.assertRaises(JwksError):
            await c.keys.verify_token(f"{h}.{p}.{'B' if s.startswith('A') else 'A'}{s[1:]}")
        # A JWS the application had STS sign (PopService.Sign) verifies, but is no user token.
        signed = await c.pop.Sign(pop_pb2.SignRequest(payload=b'{"sub":"x"}'))
        payload, _ = await c.keys.verify_token(signed.jws)
        self.assertEqual(payload, b'{"sub":"x"}')
        with self.assertRaises(JwksError):
            await c.keys.verify_user_token(signed.jws, issuer=ENV["ISSUER"], audience="shop")

    async def test_credential_jwe_is_single_use(self) -> None:
        c = self.client(insecure=True, application_id="shop", application_secret=ENV["SECRET"])
        jwe = await c.keys.encrypt_credential({"username": "alice", "password": ENV["PASSWORD"]}, audience="shop")
        request = session_pb2.LogonUserRequest(user_credential_jwe=jwe)
        self.assertEqual((await c.session.LogonUser(request)).user_token.username, "alice")
        replay = await self.failure(c.session.LogonUser(request))
        self.assertEqual([replay.code, replay.sts_code, replay.details], [grpc.StatusCode.UNAUTHENTICATED, "invalid_credentials", "invalid user credentials"])
        app_jwe = await c.keys.encrypt_credential({"application_id": "shop", "application_secret": ENV["SECRET"]})
        app = await c.session.LogonApplication(session_pb2.LogonApplicationRequest(application_credential_jwe=app_jwe))
        self.assertEqual(app.application_token.application_id, "shop")
        with self.assertRaises(ValueError):
            await c.keys.encrypt_credential({"password": ENV["PASSWORD"]})

    async def test_retries_only_idempotent_reads(self) -> None:
        events, count = self.recorder()
        c = self.client(ENV["UNUSED_ADDRESS"], insecure=True, application_id="shop", application_secret="secret", retries=2, retry_backoff=(0.02, 0.04), on_event=events.append)
        err = await self.failure(c.pop.ListKeys(pop_pb2.ListKeysRequest()))
        self.assertEqual([err.code, err.sts_code], [grpc.StatusCode.UNAVAILABLE, "unavailable"])
        self.assertEqual([e.attempt for e in events if e.type == "retry"], [1, 2])
        # A write (and the logon it needs first) is never retried.
        write = await self.failure(c.session.LogonUser(session_pb2.LogonUserRequest()))
        self.assertEqual([write.code, write.method], [grpc.StatusCode.UNAVAILABLE, "/sts.v1.SessionService/LogonApplication"])
        self.assertEqual((await self.failure(c.pop.Decrypt(pop_pb2.DecryptRequest(jwe="a.b.c.d.e")))).code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(count("retry"), 2)
        self.assertEqual(sorted(IDEMPOTENT_METHODS), [
            "/sts.v1.PopService/GetJwks", "/sts.v1.PopService/ListKeys", "/sts.v1.PopService/Verify",
            "/sts.v1.SessionService/GetApplicationInfo", "/sts.v1.SessionService/GetUserTokenByUserTokenId",
            "/sts.v1.SessionService/ValidateApplicationToken", "/sts.v1.SessionService/ValidateUserToken",
        ])

    async def test_error_carries_code_sts_code_and_retry_after(self) -> None:
        c = self.client(insecure=True, application_id="shop", application_secret=ENV["SECRET"])
        mallory = f"mallory-{self.variant}"
        logon = lambda: c.session.LogonUser(session_pb2.LogonUserRequest(user_credential=session_pb2.UserCredential(username=mallory, password="wrong password")))  # noqa: E731
        wrong = await self.failure(logon())
        self.assertEqual([wrong.code, wrong.sts_code, wrong.details, wrong.method, wrong.retry_after_ms],
                         [grpc.StatusCode.UNAUTHENTICATED, "invalid_credentials", "invalid user credentials", "/sts.v1.SessionService/LogonUser", None])
        self.assertEqual(str(wrong), "/sts.v1.SessionService/LogonUser: UNAUTHENTICATED (invalid_credentials): invalid user credentials")
        await self.failure(logon())
        throttled = await self.failure(logon())
        self.assertEqual([throttled.code, throttled.sts_code], [grpc.StatusCode.RESOURCE_EXHAUSTED, "throttled"])
        self.assertGreater(throttled.retry_after_ms, 0)

        # Wrong application credentials surface from the first call that needs the token.
        bad = self.client(insecure=True, application_id="shop", application_secret="not-the-secret")
        refused = await self.failure(self.app_info(bad))
        self.assertEqual([refused.code, refused.sts_code, refused.method], [grpc.StatusCode.UNAUTHENTICATED, "invalid_credentials", "/sts.v1.SessionService/LogonApplication"])
        # Without credentials no token is sent; a per-call bearer is sent as given.
        anon = self.client(insecure=True)
        missing = await self.failure(self.app_info(anon))
        self.assertEqual([missing.code, missing.sts_code], [grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"])
        info = await anon.session.GetApplicationInfo(bearer=await c.application_token())
        self.assertEqual(info.application.application_id, "shop")

    async def test_deadline_on_every_call(self) -> None:
        c = self.client(insecure=True, application_id="shop", application_secret=ENV["SECRET"])
        await c.application_token()
        # A password logon takes the password hash's time: far more than 2 ms.
        per_call = await self.failure(c.session.LogonUser(session_pb2.LogonUserRequest(user_credential=session_pb2.UserCredential(username="alice", password=ENV["PASSWORD"])), timeout=0.002))
        self.assertEqual([per_call.code, per_call.sts_code], [grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded"])
        hasty = self.client(insecure=True, application_id="shop", application_secret=ENV["SECRET"], timeout=0.002)
        self.assertEqual((await self.failure(self.app_info(hasty))).code, grpc.StatusCode.DEADLINE_EXCEEDED)
        info = await hasty.session.GetApplicationInfo(timeout=10)
        self.assertEqual(info.application.application_id, "shop")

    async def test_tls_by_default(self) -> None:
        # The default is TLS: against a plaintext server it fails.
        plain = self.client(retries=0)
        self.assertEqual((await self.failure(plain.pop.GetJwks())).code, grpc.StatusCode.UNAVAILABLE)
        with open(ENV["CA_FILE"], "rb") as f:
            ca = f.read()
        good = self.client(ENV["TLS_ADDRESS"], root_certificates=ca, retries=0)
        self.assertNotEqual((await good.pop.GetJwks()).primary_signing_kid, "")
        # grpc's default roots do not know that CA, and plaintext to a TLS server fails.
        roots = self.client(ENV["TLS_ADDRESS"], retries=0, timeout=5)
        self.assertEqual((await self.failure(roots.pop.GetJwks())).code, grpc.StatusCode.UNAVAILABLE)
        insecure = self.client(ENV["TLS_ADDRESS"], insecure=True, retries=0, timeout=5)
        self.assertEqual((await self.failure(insecure.pop.GetJwks())).code, grpc.StatusCode.UNAVAILABLE)
        with self.assertRaises(ValueError):
            self.make(ENV["TLS_ADDRESS"], insecure=True, root_certificates=ca)

    async def test_close_fails_later_calls(self) -> None:
        c = self.make(ENV["ADDRESS"], insecure=True, application_id="shop", application_secret=ENV["SECRET"])
        await c.application_token()
        await c.close()
        closed = await self.failure(c.pop.GetJwks())
        self.assertEqual([closed.code, closed.sts_code], [grpc.StatusCode.CANCELLED, "cancelled"])
        await c.close()  # idempotent


class SyncClientTest(Behaviour, unittest.IsolatedAsyncioTestCase):
    variant = "sync"

    def make(self, address: str, **kwargs: Any) -> Any:
        return Synced(StsClient(address, **kwargs))


class AsyncClientTest(Behaviour, unittest.IsolatedAsyncioTestCase):
    variant = "async"

    def make(self, address: str, **kwargs: Any) -> Any:
        return AsyncStsClient(address, **kwargs)


if __name__ == "__main__":
    unittest.main()
