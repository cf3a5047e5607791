/**
 * SessionService against a real server: every RPC's success path and failure codes, one-time tickets under
 * concurrency, expiry with a controllable clock, release, transform, security levels, filtering, throttling,
 * disabled users, and sessions across a restart.
 */
import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { CompactEncrypt, type JWK, importJWK } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { type CredentialJson, JwksCache } from '../clients/ts/src/jwks.js';
import { ManualClock } from '../src/clock.js';
import type { OptionName } from '../src/config/defaults.js';
import { decryptCompact } from '../src/pop/jose-ops.js';
import { SessionStore, newSecret, refOf } from '../src/session/sessions.js';
import { call, callError } from './helpers/call.js';
import { addRole, adminToken, appDefaults, createApp, createUser } from './helpers/directory.js';
import { type TestSts, startTestSts, tempDir } from './helpers/server.js';
import type { SqliteStore } from '../src/store/sqlite/sqlite-store.js';

const MIN = 60_000;
const PASSWORD = 'correct horse battery staple';

let t: TestSts | undefined;
afterEach(async () => {
  await t?.stop(true);
  t = undefined;
});

interface World {
  t: TestSts;
  clock: ManualClock;
  a: { secret: string; token: string };
  b: { secret: string; token: string };
  uid: string;
}

/** A server with applications "app-a" and "app-b" and user "alice" (roles in both, different ones). */
async function world(overrides: Partial<Record<OptionName, string | number | boolean>> = {}, dataDir?: string): Promise<World> {
  const clock = new ManualClock(Date.UTC(2026, 5, 1));
  t = await startTestSts({ clock, overrides, ...(dataDir ? { dataDir } : {}) });
  const a = await createApp(t, 'app-a');
  // app-b accepts views of a session that app-a makes for it (TransformUserToken).
  const b = await createApp(t, 'app-b', { personalFieldsAllowed: true, transformSources: ['app-a'] });
  const uid = await createUser(t, 'alice', PASSWORD);
  await addRole(t, uid, 'app-a', 'reader');
  await addRole(t, uid, 'app-b', 'editor');
  return { t, clock, a, b, uid };
}

function logon(w: World, app: { token: string }, username = 'alice', password = PASSWORD, ticketApplicationId = '') {
  return call(w.t.session.logonUser, w.t.session, { credential: { $case: 'userCredential', value: { username, password } }, ticketApplicationId }, app.token);
}

/**
 * A credential JWE as the TypeScript client makes it (typ, exp, jti; aud for the application presenting a
 * user's credential, "app-a" in these tests), on the server's clock.
 */
function credentialJwe(w: World, credential: CredentialJson, audience = 'app-a'): Promise<string> {
  return new JwksCache(() => call(w.t.pop.getJwks, w.t.pop, {}), { now: () => w.clock.now() }).encryptCredential(credential, { audience });
}

describe('application sessions', () => {
  it('logs on with a secret or a JWE credential; wrong, unknown and disabled look the same', async () => {
    const w = await world();
    expect(w.a.token).toMatch(/^[A-Za-z0-9_-]{43}$/); // 256 bits, base64url
    const jwe = await credentialJwe(w, { application_id: 'app-a', application_secret: w.a.secret });
    const viaJwe = await call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredentialJwe', value: jwe } });
    expect(viaJwe.applicationToken!.applicationId).toBe('app-a');
    expect(viaJwe.applicationToken!.applicationTokenId).not.toBe(w.a.token);

    await call(w.t.session.updateApplication, w.t.session, { application: appDefaults('app-b', { disabled: true }), updateMask: ['disabled'], generateSecret: false, applicationSecret: '' }, adminToken(w.t));
    const attempts = [
      { applicationId: 'app-a', applicationSecret: 'wrong-secret-wrong-secret' },
      { applicationId: 'no-such-app', applicationSecret: w.a.secret },
      { applicationId: 'app-b', applicationSecret: w.b.secret },
    ];
    for (const value of attempts) {
      const e = await callError(call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredential', value } }));
      expect([e.code, e.details]).toEqual([status.UNAUTHENTICATED, 'invalid application credentials']);
    }
    // Disabling app-b ended its tokens at once.
    const e = await callError(call(w.t.session.getApplicationInfo, w.t.session, {}, w.b.token));
    expect(e.code).toBe(status.UNAUTHENTICATED);
    const badJwe = await callError(call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredentialJwe', value: 'x.y.z' } }));
    expect([badJwe.code, badJwe.details]).toEqual([status.INVALID_ARGUMENT, 'decryption failed']);
    const missing = await callError(call(w.t.session.logonApplication, w.t.session, { credential: undefined }));
    expect(missing.code).toBe(status.INVALID_ARGUMENT);
  });

  it('validates, renews and releases application tokens; only the owner may renew or release', async () => {
    const w = await world({ 'session.applicationTokenLifetimeMs': 10 * MIN });
    const v = await call(w.t.session.validateApplicationToken, w.t.session, { applicationTokenId: w.a.token }, w.b.token);
    expect(v.active).toBe(true);
    expect(v.applicationToken!.applicationId).toBe('app-a');
    const info = await call(w.t.session.getApplicationInfo, w.t.session, {}, w.a.token);
    expect(info.application!.applicationId).toBe('app-a');

    const foreign = await callError(call(w.t.session.renewApplicationToken, w.t.session, { applicationTokenId: w.a.token }, w.b.token));
    expect(foreign.code).toBe(status.PERMISSION_DENIED);
    const foreignRelease = await callError(call(w.t.session.releaseApplicationToken, w.t.session, { applicationTokenId: w.a.token }, w.b.token));
    expect(foreignRelease.code).toBe(status.PERMISSION_DENIED);

    w.clock.advance(8 * MIN);
    const renewed = await call(w.t.session.renewApplicationToken, w.t.session, { applicationTokenId: w.a.token }, w.a.token);
    expect(renewed.applicationToken!.expireTime!.getTime()).toBe(w.clock.now() + 10 * MIN);
    w.clock.advance(8 * MIN); // past the original expiry, within the renewed one
    expect((await call(w.t.session.validateApplicationToken, w.t.session, { applicationTokenId: w.a.token }, w.a.token)).active).toBe(true);
    // app-b did not renew: its token expired by age.
    const expired = await callError(call(w.t.session.getApplicationInfo, w.t.session, {}, w.b.token));
    expect(expired.code).toBe(status.UNAUTHENTICATED);
    expect((await call(w.t.session.validateApplicationToken, w.t.session, { applicationTokenId: w.b.token }, w.a.token)).active).toBe(false);

    await call(w.t.session.releaseApplicationToken, w.t.session, { applicationTokenId: w.a.token }, w.a.token);
    const used = await callError(call(w.t.session.getApplicationInfo, w.t.session, {}, w.a.token));
    expect(used.code).toBe(status.UNAUTHENTICATED);
    const fresh = await call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'app-b', applicationSecret: w.b.secret } } });
    expect((await call(w.t.session.validateApplicationToken, w.t.session, { applicationTokenId: w.a.token }, fresh.applicationToken!.applicationTokenId)).active).toBe(false);
  });
});

describe('application token lifetime cap', () => {
  it('renewal never extends a token past its absolute lifetime; after it, renewal says to log on again', async () => {
    const w = await world({ 'session.applicationTokenLifetimeMs': 10 * MIN, 'session.applicationTokenMaxLifetimeMs': 25 * MIN });
    const loggedOnAt = w.clock.now();
    const renew = (id: string, bearer = id) => call(w.t.session.renewApplicationToken, w.t.session, { applicationTokenId: id }, bearer);
    const expiry = async (id: string) => (await renew(id)).applicationToken!.expireTime!.getTime();

    w.clock.advance(8 * MIN);
    expect(await expiry(w.a.token)).toBe(w.clock.now() + 10 * MIN); // a full lifetime: 18 min after logon
    w.clock.advance(8 * MIN);
    expect(await expiry(w.a.token)).toBe(loggedOnAt + 25 * MIN); // capped: not 26
    w.clock.advance(8 * MIN);
    expect(await expiry(w.a.token)).toBe(loggedOnAt + 25 * MIN); // and it stays there
    const v = await call(w.t.session.validateApplicationToken, w.t.session, { applicationTokenId: w.a.token }, w.a.token);
    expect(v.applicationToken!.expireTime!.getTime()).toBe(loggedOnAt + 25 * MIN);

    // A second token of app-a to ask with: the first one ends exactly at the cap.
    const fresh = (await call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'app-a', applicationSecret: w.a.secret } } }))
      .applicationToken!;
    expect(fresh.expireTime!.getTime()).toBe(w.clock.now() + 10 * MIN); // a new logon gets a full lifetime again
    w.clock.advance(1 * MIN);
    expect((await call(w.t.session.validateApplicationToken, w.t.session, { applicationTokenId: w.a.token }, fresh.applicationTokenId)).active).toBe(false);
    const asOwnBearer = await callError(renew(w.a.token));
    expect([asOwnBearer.code, asOwnBearer.metadata.get('sts-error-code')[0]]).toEqual([status.UNAUTHENTICATED, 'unauthenticated']);
    const e = await callError(renew(w.a.token, fresh.applicationTokenId));
    expect([e.code, e.metadata.get('sts-error-code')[0]]).toEqual([status.UNAUTHENTICATED, 'token_invalid']);
    expect(e.details).toContain('log on again');
  });

  it('tokens stored before the cap existed are capped at their logon time plus the maximum', async () => {
    const w = await world({ 'session.applicationTokenLifetimeMs': 10 * MIN, 'session.applicationTokenMaxLifetimeMs': 25 * MIN });
    const now = w.clock.now();
    // Records as the previous version wrote them: no absoluteExpiresAt.
    const legacy = async (issuedAgoMs: number, expiresInMs: number): Promise<string> => {
      const id = newSecret();
      const record = { applicationId: 'app-a', issuedAt: now - issuedAgoMs, expiresAt: now + expiresInMs };
      await w.t.sts.store.ephemeral.upsert('app_token', refOf(id), JSON.stringify(record), expiresInMs, 'app-a');
      return id;
    };
    const young = await legacy(20 * MIN, 5 * MIN);
    const renewed = await call(w.t.session.renewApplicationToken, w.t.session, { applicationTokenId: young }, young);
    expect(renewed.applicationToken!.expireTime!.getTime()).toBe(now - 20 * MIN + 25 * MIN);
    // Renewed forever under the old version: still valid until its expiry, but never renewed again.
    const old = await legacy(3 * 60 * MIN, 5 * MIN);
    expect((await call(w.t.session.getApplicationInfo, w.t.session, {}, old)).application!.applicationId).toBe('app-a');
    const e = await callError(call(w.t.session.renewApplicationToken, w.t.session, { applicationTokenId: old }, old));
    expect([e.code, e.metadata.get('sts-error-code')[0]]).toEqual([status.UNAUTHENTICATED, 'token_invalid']);
    expect(e.details).toContain('maximum lifetime');
    expect(e.details).toContain('log on again');
    const v = await call(w.t.session.validateApplicationToken, w.t.session, { applicationTokenId: old }, old);
    expect(v.applicationToken!.expireTime!.getTime()).toBe(now + 5 * MIN); // the refused renewal changed nothing
  });

  it('a renewal does not bring back a token released meanwhile', async () => {
    const w = await world();
    const rec = { applicationId: 'app-a', issuedAt: w.clock.now(), expiresAt: w.clock.now() + MIN };
    const store = new SessionStore(w.t.sts.store.ephemeral, w.clock);
    await call(w.t.session.releaseApplicationToken, w.t.session, { applicationTokenId: w.a.token }, w.a.token);
    expect(await store.renewAppToken(w.a.token, rec, 10 * MIN, 60 * MIN)).toBeUndefined();
    expect(await store.findAppToken(w.a.token)).toBeUndefined();
  });
});

describe('credential JWEs are single-use and short-lived', () => {
  const SECRET_WRONG = 'wrong-secret-wrong-secret';

  /** A JWE to STS's primary encryption key with any header type and claims (what a careless or hostile client sends). */
  async function handMade(w: World, claims: Record<string, unknown>, header: Record<string, string> = { typ: 'sts-credential+jwe' }): Promise<string> {
    const jwks = await call(w.t.pop.getJwks, w.t.pop, {});
    const jwk = (JSON.parse(jwks.jwksJson) as { keys: JWK[] }).keys.find((k) => k.kid === jwks.primaryEncryptionKid)!;
    return new CompactEncrypt(Buffer.from(JSON.stringify(claims)))
      .setProtectedHeader({ alg: jwk.alg!, enc: 'A256GCM', kid: jwk.kid!, ...header })
      .encrypt(await importJWK(jwk, jwk.alg));
  }

  const logonAppJwe = (w: World, jwe: string) => call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredentialJwe', value: jwe } });
  const logonUserJwe = (w: World, jwe: string) => call(w.t.session.logonUser, w.t.session, { credential: { $case: 'userCredentialJwe', value: jwe }, ticketApplicationId: '' }, w.a.token);
  const answer = (e: { code: number; details: string; metadata: { get(k: string): unknown[] } }) => [e.code, e.details, e.metadata.get('sts-error-code')];
  const audits = (w: World) => w.t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'audit');

  it('a credential JWE logs on once: its replay gets the wrong-secret answer, is audited, and nothing secret is logged', async () => {
    const w = await world();
    const wrongSecret = answer(await callError(call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'app-a', applicationSecret: SECRET_WRONG } } })));
    expect(wrongSecret).toEqual([status.UNAUTHENTICATED, 'invalid application credentials', ['invalid_credentials']]);

    const appJwe = await credentialJwe(w, { application_id: 'app-a', application_secret: w.a.secret });
    expect((await logonAppJwe(w, appJwe)).applicationToken!.applicationId).toBe('app-a');
    expect(answer(await callError(logonAppJwe(w, appJwe)))).toEqual(wrongSecret);
    // The same credential in a new JWE is fine: it is the JWE that is spent, not the secret.
    expect((await logonAppJwe(w, await credentialJwe(w, { application_id: 'app-a', application_secret: w.a.secret }))).applicationToken!.applicationId).toBe('app-a');

    const userJwe = await credentialJwe(w, { username: 'alice', password: PASSWORD });
    expect((await logonUserJwe(w, userJwe)).userToken!.uid).toBe(w.uid);
    const wrongPassword = answer(await callError(logon(w, w.a, 'alice', 'wrong password')));
    expect(answer(await callError(logonUserJwe(w, userJwe)))).toEqual(wrongPassword);

    // Step-up proofs too: a replayed one does not raise the level again.
    const s = await logon(w, w.a);
    const proof = await credentialJwe(w, { password: PASSWORD });
    const stepUp = () => call(w.t.session.transformUserToken, w.t.session, { userTokenId: s.userToken!.userTokenId, targetApplicationId: 'app-b', stepUp: { proof: { $case: 'passwordJwe', value: proof } } }, w.a.token);
    expect((await stepUp()).userToken!.securityLevel).toBe(3);
    expect(answer(await callError(stepUp()))).toEqual(wrongPassword);

    const refusals = audits(w).filter((a) => typeof a.reason === 'string' && (a.reason as string).startsWith('credential_jwe_'));
    expect(refusals.map((a) => [a.event, a.credential, a.reason])).toEqual([
      ['application.logon_failed', 'application_credential_jwe', 'credential_jwe_replayed'],
      ['user.logon_failed', 'user_credential_jwe', 'credential_jwe_replayed'],
      ['user.logon_failed', 'step_up.password_jwe', 'credential_jwe_replayed'],
    ]);
    expect(refusals[1]).toMatchObject({ application: 'app-a', peer: expect.any(String), jtiRef: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    // Neither the secrets nor the jtis (nor the JWEs) appear in any log line.
    const jtiOf = async (jwe: string) => (JSON.parse((await decryptCompact(w.t.sts.ring, jwe)).plaintext.toString()) as { jti: string }).jti;
    const logText = w.t.logs.join('\n');
    for (const secret of [w.a.secret, PASSWORD, await jtiOf(appJwe), await jtiOf(userJwe), await jtiOf(proof), appJwe.split('.')[3]!]) expect(logText).not.toContain(secret);
  });

  it('a credential JWE with a wrong secret spends nothing (nobody without a secret can fill the store), and a replay counts as a failed logon', async () => {
    const w = await world({ 'session.throttleFreeFailures': 2, 'session.throttleMaxFailures': 3 });
    const jtiRecords = () => (w.t.sts.store as SqliteStore).db.prepare("SELECT count(*) FROM ephemeral WHERE ns = 'credential_jti'").pluck().get();
    for (let i = 0; i < 3; i++) {
      const e = await callError(logonAppJwe(w, await credentialJwe(w, { application_id: `no-such-app-${i}`, application_secret: SECRET_WRONG })));
      expect(e.code).toBe(status.UNAUTHENTICATED);
      const u = await callError(logonUserJwe(w, await credentialJwe(w, { username: `nobody-${i}`, password: 'wrong password' })));
      expect(u.code).toBe(status.UNAUTHENTICATED);
    }
    expect(jtiRecords()).toBe(0);
    const jwe = await credentialJwe(w, { application_id: 'app-a', application_secret: w.a.secret });
    await logonAppJwe(w, jwe);
    expect(jtiRecords()).toBe(1);
    // Replays are throttled like wrong passwords (per username): past the limit they are refused.
    const userJwe = await credentialJwe(w, { username: 'alice', password: PASSWORD });
    await logonUserJwe(w, userJwe);
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await callError(logonUserJwe(w, userJwe))).code);
    expect(codes, JSON.stringify(codes)).toEqual([status.UNAUTHENTICATED, status.UNAUTHENTICATED, status.UNAUTHENTICATED, status.RESOURCE_EXHAUSTED, status.RESOURCE_EXHAUSTED]);
  });

  it('of many concurrent logons with one credential JWE exactly one succeeds', async () => {
    const w = await world();
    const jwe = await credentialJwe(w, { application_id: 'app-a', application_secret: w.a.secret });
    const results = await Promise.allSettled(Array.from({ length: 30 }, () => logonAppJwe(w, jwe)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: number }).code).toBe(status.UNAUTHENTICATED);
  });

  it('a user\'s credential is for the application that presents it ("aud"): no other application can redeem it', async () => {
    const w = await world();
    const nowS = () => Math.floor(w.clock.now() / 1000);
    const jti = () => randomBytes(16).toString('base64url');
    const user = { username: 'alice', password: PASSWORD };
    const wrongPassword = answer(await callError(logon(w, w.a, 'alice', 'wrong password')));
    const refused: [string, Record<string, unknown>][] = [
      ['no aud', { ...user, jti: jti(), exp: nowS() + 60 }],
      ['another application', { ...user, aud: 'app-b', jti: jti(), exp: nowS() + 60 }],
      ['not a string', { ...user, aud: 42, jti: jti(), exp: nowS() + 60 }],
      ['a list without it', { ...user, aud: ['app-b', 'app-c'], jti: jti(), exp: nowS() + 60 }],
    ];
    for (const [what, claims] of refused) {
      expect(answer(await callError(logonUserJwe(w, await handMade(w, claims)))), what).toEqual(wrongPassword);
      expect(audits(w).at(-1), what).toMatchObject({ event: 'user.logon_failed', application: 'app-a', reason: 'credential_jwe_aud' });
    }
    // app-b, which saw app-a's credential pass, cannot use it; app-a still can (nothing was spent).
    const forA = await credentialJwe(w, user, 'app-a');
    const byB = await callError(call(w.t.session.logonUser, w.t.session, { credential: { $case: 'userCredentialJwe', value: forA }, ticketApplicationId: '' }, w.b.token));
    expect(answer(byB)).toEqual(wrongPassword);
    expect((await logonUserJwe(w, forA)).userToken!.uid).toBe(w.uid);
    expect((await logonUserJwe(w, await handMade(w, { ...user, aud: ['app-c', 'app-a'], jti: jti(), exp: nowS() + 60 }))).userToken!.uid).toBe(w.uid);
    // The client refuses to make an unbound user credential.
    await expect(new JwksCache(() => call(w.t.pop.getJwks, w.t.pop, {})).encryptCredential(user)).rejects.toThrow(/audience/);
  });

  it('expired, too far ahead, without a usable jti or of another type: refused like a wrong secret', async () => {
    const w = await world();
    const cred = { application_id: 'app-a', application_secret: w.a.secret };
    const nowS = () => Math.floor(w.clock.now() / 1000);
    const jti = () => randomBytes(16).toString('base64url'); // 128 bits: the least accepted
    const wrongSecret = answer(await callError(call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'app-a', applicationSecret: SECRET_WRONG } } })));
    const refused: [string, () => Promise<string>, string][] = [
      ['expired beyond the clock skew', () => handMade(w, { ...cred, jti: jti(), exp: nowS() - 61 }), 'exp'],
      ['exp too far ahead', () => handMade(w, { ...cred, jti: jti(), exp: nowS() + 5 * 60 + 61 }), 'exp'],
      ['no exp', () => handMade(w, { ...cred, jti: jti() }), 'exp'],
      ['exp not a number', () => handMade(w, { ...cred, jti: jti(), exp: String(nowS() + 60) }), 'exp'],
      ['no jti', () => handMade(w, { ...cred, exp: nowS() + 60 }), 'jti'],
      ['jti under 128 bits', () => handMade(w, { ...cred, jti: 'A'.repeat(21), exp: nowS() + 60 }), 'jti'],
      ['jti not base64url', () => handMade(w, { ...cred, jti: `${'A'.repeat(30)}+/=`, exp: nowS() + 60 }), 'jti'],
      ['jti not a string', () => handMade(w, { ...cred, jti: 1234567890123456, exp: nowS() + 60 }), 'jti'],
      ['no typ (a plain JWE, as encryptFor makes)', () => handMade(w, { ...cred, jti: jti(), exp: nowS() + 60 }, {}), 'typ'],
      ['typ JWT', () => handMade(w, { ...cred, jti: jti(), exp: nowS() + 60 }, { typ: 'JWT' }), 'typ'],
      ['typ of a user token', () => handMade(w, { ...cred, jti: jti(), exp: nowS() + 60 }, { typ: 'sts-user+jwt' }), 'typ'],
    ];
    for (const [what, make, reason] of refused) {
      expect(answer(await callError(logonAppJwe(w, await make()))), what).toEqual(wrongSecret);
      expect(audits(w).at(-1), what).toMatchObject({ event: 'application.logon_failed', reason: `credential_jwe_${reason}` });
    }
    // The limits themselves are accepted: within the skew after exp, exactly the maximum ahead, 128 bits.
    for (const exp of [nowS() - 59, nowS() + 5 * 60]) expect((await logonAppJwe(w, await handMade(w, { ...cred, jti: jti(), exp }))).applicationToken!.applicationId).toBe('app-a');

    // A genuine client JWE expires with the clock: the client's default lifetime (2 min) plus the skew.
    const made = await credentialJwe(w, cred);
    w.clock.advance(3 * MIN + 1000);
    expect(answer(await callError(logonAppJwe(w, made)))).toEqual(wrongSecret);
    expect(audits(w).at(-1)).toMatchObject({ event: 'application.logon_failed', reason: 'credential_jwe_exp' });
    // Malformed content is still a bad request, as before.
    const notJson = await handMade(w, { username: 1 });
    expect((await callError(logonAppJwe(w, notJson))).code).toBe(status.INVALID_ARGUMENT);
  });

  it('a spent jti is remembered past the time any node (clock up to the skew behind) would accept its JWE', async () => {
    const w = await world();
    const claims = { application_id: 'app-a', application_secret: w.a.secret, jti: randomBytes(32).toString('base64url'), exp: Math.floor(w.clock.now() / 1000) + 60 };
    const jwe = await handMade(w, claims);
    await logonAppJwe(w, jwe);
    w.clock.advance(2 * MIN - 1000); // exp + skew - 1 s: still acceptable by time, so the jti must still be known
    expect((await callError(logonAppJwe(w, jwe))).code).toBe(status.UNAUTHENTICATED);
    expect(audits(w).at(-1)).toMatchObject({ reason: 'credential_jwe_replayed' });
    // Only the jti's hash is stored.
    const stored = w.t.sts.store.ephemeral;
    expect(await stored.find('credential_jti', refOf(claims.jti))).toBeDefined();
    expect(await stored.find('credential_jti', claims.jti)).toBeUndefined();
    w.clock.advance(1000);
    // Refused by time from here on, yet remembered one more skew (plus a second for Hazelcast's rounding).
    expect((await callError(logonAppJwe(w, jwe))).code).toBe(status.UNAUTHENTICATED);
    expect(audits(w).at(-1)).toMatchObject({ reason: 'credential_jwe_exp' });
    w.clock.advance(MIN + 999);
    expect(await stored.find('credential_jti', refOf(claims.jti))).toBeDefined();
    w.clock.advance(1);
    expect(await stored.find('credential_jti', refOf(claims.jti))).toBeUndefined();
  });

  it('PopService.Decrypt refuses a credential JWE exactly as any JWE it cannot decrypt, and spends nothing', async () => {
    const w = await world();
    const trusted = await createApp(w.t, 'decrypter', { trusted: true });
    const decrypt = (jwe: string) => call(w.t.pop.decrypt, w.t.pop, { jwe }, trusted.token);
    const cred = { username: 'alice', password: PASSWORD };
    const garbage = answer(await callError(decrypt('not.a.jwe.at.all')));
    expect(garbage).toEqual([status.INVALID_ARGUMENT, 'decryption failed', ['decryption_failed']]);
    const jwe = await credentialJwe(w, cred);
    expect(answer(await callError(decrypt(jwe)))).toEqual(garbage);
    const claims = { ...cred, jti: randomBytes(32).toString('base64url'), exp: Math.floor(w.clock.now() / 1000) + 60 };
    for (const header of [{ typ: 'application/sts-credential+jwe' }, { typ: 'STS-Credential+JWE' }, { typ: 'sts-anything' }, { cty: 'sts-credential+jwe' }] as Record<string, string>[]) {
      expect(answer(await callError(decrypt(await handMade(w, claims, header)))), JSON.stringify(header)).toEqual(garbage);
    }
    // Control: the same content without the reserved type decrypts, so the refusal is the type's.
    expect(JSON.parse(Buffer.from((await decrypt(await handMade(w, claims, { typ: 'JWT' }))).plaintext).toString())).toEqual(claims);
    const refused = audits(w).filter((a) => a.event === 'pop.decrypt' && a.outcome === 'failed');
    expect(refused.length).toBeGreaterThanOrEqual(6);
    // The refused Decrypt did not spend the JWE: the user logs on with it.
    expect((await logonUserJwe(w, jwe)).userToken!.uid).toBe(w.uid);
  });
});

describe('user sessions', () => {
  it('LogonUser returns the calling application view and a JWT verifiable offline', async () => {
    const w = await world();
    const res = await logon(w, w.a);
    const u = res.userToken!;
    expect(u.userTokenId).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(u.uid).toBe(w.uid);
    expect(u.username).toBe('alice');
    expect(u.securityLevel).toBe(2);
    expect(u.roles).toEqual([{ applicationId: 'app-a', organizationName: 'ACME', roleName: 'reader', roleValue: 'true' }]);
    expect(u.email).toBe(''); // app-a is not allowed personal fields
    const cache = new JwksCache(() => call(w.t.pop.getJwks, w.t.pop, {}));
    const { payload, header } = await cache.verifyToken(res.userTokenJwt);
    const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    expect(header.typ).toBe('sts-user+jwt');
    expect(claims).toMatchObject({ iss: 'urn:sts:local', sub: w.uid, aud: 'app-a', acr: '2', preferred_username: 'alice' });
    expect(JSON.stringify(claims)).not.toContain(u.userTokenId);

    expect((await cache.verifyUserToken(res.userTokenJwt, { issuer: 'urn:sts:local', audience: 'app-a', now: w.clock.now() })).sub).toBe(w.uid);
    await expect(cache.verifyUserToken(res.userTokenJwt, { issuer: 'urn:sts:local', audience: 'app-b', now: w.clock.now() })).rejects.toThrow('another application');
    await expect(cache.verifyUserToken(res.userTokenJwt, { issuer: 'urn:sts:local', audience: 'app-a', now: w.clock.now() + 2 * 3_600_000 })).rejects.toThrow('expired');

    const viaB = await logon(w, w.b);
    expect(viaB.userToken!.roles.map((r) => r.roleName)).toEqual(['editor']);
    expect(viaB.userToken!.email).toBe('alice@example.org');
    expect(viaB.userToken!.userTokenId).not.toBe(u.userTokenId);
  });

  it('accepts the credential as a JWE; wrong password, unknown user and disabled user are indistinguishable', async () => {
    const w = await world();
    const jwe = await credentialJwe(w, { username: 'alice', password: PASSWORD });
    const res = await call(w.t.session.logonUser, w.t.session, { credential: { $case: 'userCredentialJwe', value: jwe }, ticketApplicationId: '' }, w.a.token);
    expect(res.userToken!.uid).toBe(w.uid);
    const bobUid = await createUser(w.t, 'bob', PASSWORD);
    await call(w.t.session.updateUser, w.t.session, { user: { uid: bobUid, username: 'bob', firstName: '', lastName: '', email: '', cellphone: '', personRef: '', disabled: true, createTime: undefined }, updateMask: ['disabled'], password: '' }, adminToken(w.t));
    for (const [username, password] of [['alice', 'wrong password'], ['nobody', PASSWORD], ['bob', PASSWORD]] as const) {
      const e = await callError(logon(w, w.a, username, password));
      expect([e.code, e.details, e.metadata.get('sts-error-code')[0]]).toEqual([status.UNAUTHENTICATED, 'invalid user credentials', 'invalid_credentials']);
    }
    const asAdmin = await callError(call(w.t.session.logonUser, w.t.session, { credential: { $case: 'userCredential', value: { username: 'alice', password: PASSWORD } }, ticketApplicationId: '' }, adminToken(w.t)));
    expect(asAdmin.code).toBe(status.PERMISSION_DENIED);
    const noApp = await callError(call(w.t.session.logonUser, w.t.session, { credential: { $case: 'userCredential', value: { username: 'alice', password: PASSWORD } }, ticketApplicationId: '' }));
    expect(noApp.code).toBe(status.UNAUTHENTICATED);
  });

  it('validates by id and by JWT, refreshes with a sliding idle timeout capped by the absolute lifetime', async () => {
    const w = await world({ 'session.userTokenIdleTimeoutMs': 10 * MIN, 'session.userTokenMaxLifetimeMs': 25 * MIN });
    const res = await logon(w, w.a);
    const id = res.userToken!.userTokenId;
    const byId = await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: id } }, w.a.token);
    expect(byId.active).toBe(true);
    expect(byId.userToken!.applicationId).toBe('app-a');
    // app-a's token id is not app-b's: exactly as unknown.
    expect(await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: id } }, w.b.token)).toEqual({ active: false, userToken: undefined });
    const byJwt = await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenJwt', value: res.userTokenJwt } }, w.a.token);
    expect(byJwt.active).toBe(true);
    expect(byJwt.userToken!.uid).toBe(w.uid);

    w.clock.advance(9 * MIN);
    const r1 = await call(w.t.session.refreshUserToken, w.t.session, { userTokenId: id }, w.a.token);
    expect(r1.userToken!.expireTime!.getTime()).toBe(w.clock.now() + 10 * MIN);
    w.clock.advance(9 * MIN);
    const r2 = await call(w.t.session.refreshUserToken, w.t.session, { userTokenId: id }, w.a.token);
    // Capped: 25 minutes after logon, not 18 + 10.
    expect(r2.userToken!.expireTime!.getTime()).toBe(r2.userToken!.absoluteExpireTime!.getTime());
    w.clock.advance(7 * MIN + 1);
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: id } }, w.a.token)).active).toBe(false);
    const gone = await callError(call(w.t.session.refreshUserToken, w.t.session, { userTokenId: id }, w.a.token));
    expect(gone.code).toBe(status.NOT_FOUND);

    // Idle timeout without refresh.
    const res2 = await logon(w, w.a);
    w.clock.advance(10 * MIN + 1);
    const idle = await callError(call(w.t.session.getUserTokenByUserTokenId, w.t.session, { userTokenId: res2.userToken!.userTokenId }, w.a.token));
    expect(idle.code).toBe(status.NOT_FOUND);
    // A JWT whose signature is fine but whose session is gone is not active; neither is garbage.
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenJwt', value: res2.userTokenJwt } }, w.a.token)).active).toBe(false);
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenJwt', value: 'a.b.c' } }, w.a.token)).active).toBe(false);
  });

  it('a JWS a trusted application has STS sign cannot pass for a user token', async () => {
    const w = await world();
    const trusted = await createApp(w.t, 'signer', { trusted: true });
    const res = await logon(w, w.a);
    const claims = JSON.parse(Buffer.from(res.userTokenJwt.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    // The same claims (sid of a live session, far future exp), signed by STS through the Sign RPC.
    const forged = await call(w.t.pop.sign, w.t.pop, { payload: Buffer.from(JSON.stringify({ ...claims, exp: claims.exp as number + 86_400 })), type: 'JWT', contentType: '' }, trusted.token);
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenJwt', value: forged.jws } }, w.a.token)).active).toBe(false);
    const cache = new JwksCache(() => call(w.t.pop.getJwks, w.t.pop, {}));
    await expect(cache.verifyUserToken(forged.jws, { issuer: 'urn:sts:local', audience: 'app-a', now: w.clock.now() })).rejects.toThrow('typ');
    for (const type of ['sts-user+jwt', 'STS-anything', 'application/sts-user+jwt']) {
      const e = await callError(call(w.t.pop.sign, w.t.pop, { payload: Buffer.from('{}'), type, contentType: '' }, trusted.token));
      expect([e.code, e.details]).toEqual([status.INVALID_ARGUMENT, 'type: types starting with "sts-" are reserved for tokens STS issues itself']);
    }
    // The genuine user token JWT is still active.
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenJwt', value: res.userTokenJwt } }, w.a.token)).active).toBe(true);
  });

  it('a user token JWT is active only at the application it was issued to', async () => {
    const w = await world();
    const res = await logon(w, w.a);
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenJwt', value: res.userTokenJwt } }, w.a.token)).active).toBe(true);
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenJwt', value: res.userTokenJwt } }, w.b.token)).active).toBe(false);
  });

  it('release (logout) ends the session and its tickets at once', async () => {
    const w = await world();
    const res = await logon(w, w.a, 'alice', PASSWORD, 'app-b');
    const id = res.userToken!.userTokenId;
    const ticket2 = (await call(w.t.session.createUserTicket, w.t.session, { userTokenId: id, ticketApplicationId: 'app-b' }, w.a.token)).userTicket;
    await call(w.t.session.releaseUserToken, w.t.session, { userTokenId: id, endSession: false }, w.a.token);
    await call(w.t.session.releaseUserToken, w.t.session, { userTokenId: id, endSession: false }, w.a.token); // idempotent
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: id } }, w.a.token)).active).toBe(false);
    for (const ticket of [res.userTicket, ticket2]) {
      const e = await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: ticket }, w.b.token));
      expect(e.code).toBe(status.NOT_FOUND);
    }
    const e = await callError(call(w.t.session.getUserTokenByUserTokenId, w.t.session, { userTokenId: id }, w.a.token));
    expect(e.code).toBe(status.NOT_FOUND);
  });
});

describe('user tickets (SSO handover)', () => {
  it('a ticket is redeemed once, by the application it was made for, within its lifetime', async () => {
    const w = await world({ 'session.userTicketLifetimeMs': 60_000 });
    const res = await logon(w, w.a, 'alice', PASSWORD, 'app-b');
    expect(res.userTicket).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const redeemed = await call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: res.userTicket }, w.b.token);
    // The redeemer takes part with a token id of its own, never app-a's.
    expect(redeemed.userToken!.userTokenId).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(redeemed.userToken!.userTokenId).not.toBe(res.userToken!.userTokenId);
    expect(redeemed.userToken!.applicationId).toBe('app-b');
    expect(redeemed.userToken!.roles.map((r) => r.roleName)).toEqual(['editor']);
    const again = await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: res.userTicket }, w.b.token));
    expect(again.code).toBe(status.NOT_FOUND);

    // Made for app-b, shown by app-a: refused, and spent.
    const t2 = (await call(w.t.session.createUserTicket, w.t.session, { userTokenId: res.userToken!.userTokenId, ticketApplicationId: 'app-b' }, w.a.token)).userTicket;
    expect((await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: t2 }, w.a.token))).code).toBe(status.NOT_FOUND);
    expect((await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: t2 }, w.b.token))).code).toBe(status.NOT_FOUND);

    // Expiry.
    const t3 = await call(w.t.session.createUserTicket, w.t.session, { userTokenId: res.userToken!.userTokenId, ticketApplicationId: '' }, w.a.token);
    expect(t3.expireTime!.getTime()).toBe(w.clock.now() + 60_000);
    w.clock.advance(60_001);
    expect((await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: t3.userTicket }, w.a.token))).code).toBe(status.NOT_FOUND);

    const unknownTarget = await callError(call(w.t.session.createUserTicket, w.t.session, { userTokenId: res.userToken!.userTokenId, ticketApplicationId: 'nope' }, w.a.token));
    expect(unknownTarget.code).toBe(status.NOT_FOUND);
    const deadSession = await callError(call(w.t.session.createUserTicket, w.t.session, { userTokenId: 'not-a-token', ticketApplicationId: '' }, w.a.token));
    expect(deadSession.code).toBe(status.NOT_FOUND);
  });

  it('many concurrent redemptions of one ticket: exactly one wins', async () => {
    const w = await world();
    const res = await logon(w, w.a);
    for (let round = 0; round < 5; round++) {
      const { userTicket } = await call(w.t.session.createUserTicket, w.t.session, { userTokenId: res.userToken!.userTokenId, ticketApplicationId: 'app-b' }, w.a.token);
      const results = await Promise.allSettled(Array.from({ length: 50 }, () => call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket }, w.b.token)));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: number }).code).toBe(status.NOT_FOUND);
    }
  });
});

describe('transform and security levels', () => {
  it('shows only the target application roles, and a higher level only after a step-up proof', async () => {
    const w = await world();
    const bankSecret = (await createApp(w.t, 'bank', { minimumSecurityLevel: 3, transformSources: ['app-a'] })).secret;
    await addRole(w.t, w.uid, 'bank', 'customer');
    const res = await logon(w, w.a);
    const id = res.userToken!.userTokenId;

    const toB = await call(w.t.session.transformUserToken, w.t.session, { userTokenId: id, targetApplicationId: 'app-b', stepUp: undefined }, w.a.token);
    expect(toB.userToken!.roles.map((r) => [r.applicationId, r.roleName])).toEqual([['app-b', 'editor']]);
    // app-b now takes part in the session, with a token id of its own.
    expect(toB.userToken!.userTokenId).not.toBe(id);
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: toB.userToken!.userTokenId } }, w.b.token)).active).toBe(true);

    const denied = await callError(call(w.t.session.transformUserToken, w.t.session, { userTokenId: id, targetApplicationId: 'bank', stepUp: undefined }, w.a.token));
    expect([denied.code, denied.metadata.get('sts-error-code')[0]]).toEqual([status.PERMISSION_DENIED, 'security_level_too_low']);
    const wrongProof = await callError(
      call(w.t.session.transformUserToken, w.t.session, { userTokenId: id, targetApplicationId: 'bank', stepUp: { proof: { $case: 'password', value: 'nope nope' } } }, w.a.token),
    );
    expect(wrongProof.code).toBe(status.UNAUTHENTICATED);
    const stepUpJwe = await credentialJwe(w, { password: PASSWORD });
    const stepped = await call(
      w.t.session.transformUserToken,
      w.t.session,
      { userTokenId: id, targetApplicationId: 'bank', stepUp: { proof: { $case: 'passwordJwe', value: stepUpJwe } } },
      w.a.token,
    );
    expect(stepped.userToken!.securityLevel).toBe(3);
    expect(stepped.userToken!.roles.map((r) => r.roleName)).toEqual(['customer']);
    // The session itself was raised: the bank now accepts it without another proof.
    const later = await call(w.t.session.transformUserToken, w.t.session, { userTokenId: id, targetApplicationId: 'bank', stepUp: undefined }, w.a.token);
    expect(later.userToken!.securityLevel).toBe(3);
    // Logon straight to an application that needs more than a password: refused, and no session is made.
    const bankApp = await call(w.t.session.logonApplication, w.t.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'bank', applicationSecret: bankSecret } } });
    const direct = await callError(logon(w, { token: bankApp.applicationToken!.applicationTokenId }));
    expect([direct.code, direct.metadata.get('sts-error-code')[0]]).toEqual([status.PERMISSION_DENIED, 'security_level_too_low']);
    expect((await call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, adminToken(w.t))).sessions).toHaveLength(1);
  });

  it('a transform never shows the requester personal fields it may not see itself', async () => {
    const w = await world();
    const res = await logon(w, w.a); // app-a may not see personal fields; app-b may
    const toB = await call(w.t.session.transformUserToken, w.t.session, { userTokenId: res.userToken!.userTokenId, targetApplicationId: 'app-b', stepUp: undefined }, w.a.token);
    expect(toB.userToken!.email).toBe('');
    expect(toB.userToken!.roles.map((r) => r.roleName)).toEqual(['editor']);
    const direct = await call(w.t.session.getUserTokenByUserTokenId, w.t.session, { userTokenId: toB.userToken!.userTokenId }, w.b.token);
    expect(direct.userToken!.email).toBe('alice@example.org');
  });

  it('filters what each application sees: personal fields, anonymised view, full token', async () => {
    const w = await world();
    await createApp(w.t, 'no-roles', { transformSources: ['app-a'] });
    const full = await createApp(w.t, 'portal', { fullToken: true });
    const res = await logon(w, w.a, 'alice', PASSWORD, 'portal');
    const id = res.userToken!.userTokenId;
    const anon = await call(w.t.session.transformUserToken, w.t.session, { userTokenId: id, targetApplicationId: 'no-roles', stepUp: undefined }, w.a.token);
    expect(anon.userToken).toMatchObject({ anonymised: true, uid: w.uid, username: '', firstName: '', email: '', roles: [] });
    const all = await call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: res.userTicket }, full.token);
    expect(all.userToken!.roles.map((r) => r.roleName).sort()).toEqual(['editor', 'reader']);
    expect(all.userToken!.email).toBe('alice@example.org');
    expect(all.userToken!.personRef).toBe('ref-alice');
  });

  it('the anonymous view can be configured to deny', async () => {
    const w = await world({ 'session.anonymousView': 'deny' });
    const other = await createApp(w.t, 'no-roles');
    const res = await logon(w, w.a, 'alice', PASSWORD, 'no-roles');
    const e = await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: res.userTicket }, other.token));
    expect(e.code).toBe(status.PERMISSION_DENIED);
  });
});

describe('administration and disabled users', () => {
  it('lists and releases a user sessions; disabling a user ends them and blocks logon', async () => {
    const w = await world();
    const s1 = await logon(w, w.a);
    await logon(w, w.b);
    const listed = await call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, adminToken(w.t));
    expect(listed.sessions).toHaveLength(2);
    expect(listed.sessions.map((s) => s.applicationId).sort()).toEqual(['app-a', 'app-b']);
    expect(JSON.stringify(listed)).not.toContain(s1.userToken!.userTokenId);
    const notAdmin = await callError(call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, w.a.token));
    expect(notAdmin.code).toBe(status.PERMISSION_DENIED);

    const released = await call(w.t.session.releaseUserSessions, w.t.session, { uid: w.uid }, adminToken(w.t));
    expect(released.releasedCount).toBe(2);
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: s1.userToken!.userTokenId } }, w.a.token)).active).toBe(false);

    const s3 = await logon(w, w.a);
    await call(
      w.t.session.updateUser,
      w.t.session,
      { user: { uid: w.uid, username: 'alice', firstName: '', lastName: '', email: '', cellphone: '', personRef: '', disabled: true, createTime: undefined }, updateMask: ['disabled'], password: '' },
      adminToken(w.t),
    );
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: s3.userToken!.userTokenId } }, w.a.token)).active).toBe(false);
    expect((await call(w.t.session.listUserSessions, w.t.session, { uid: w.uid }, adminToken(w.t))).sessions).toHaveLength(0);
    expect((await callError(logon(w, w.a))).code).toBe(status.UNAUTHENTICATED);
  });

  it('admin RPCs validate input and refuse non-administrators', async () => {
    const w = await world();
    const dup = await callError(call(w.t.session.createApplication, w.t.session, { application: appDefaults('app-a'), applicationSecret: '' }, adminToken(w.t)));
    expect(dup.code).toBe(status.ALREADY_EXISTS);
    const badId = await callError(call(w.t.session.createApplication, w.t.session, { application: appDefaults('bad id!'), applicationSecret: '' }, adminToken(w.t)));
    expect([badId.code, badId.details]).toEqual([status.INVALID_ARGUMENT, 'application.application_id: 1 to 128 characters of A-Z a-z 0-9 . _ -']);
    expect(badId.metadata.get('sts-error-field')).toEqual(['application.application_id']);
    const shortSecret = await callError(call(w.t.session.createApplication, w.t.session, { application: appDefaults('x'), applicationSecret: 'short' }, adminToken(w.t)));
    expect(shortSecret.code).toBe(status.INVALID_ARGUMENT);
    const notAdmin = await callError(call(w.t.session.createApplication, w.t.session, { application: appDefaults('y'), applicationSecret: '' }, w.a.token));
    expect(notAdmin.code).toBe(status.PERMISSION_DENIED);
    const dupUser = await callError(createUser(w.t, 'ALICE', PASSWORD));
    expect(dupUser.code).toBe(status.ALREADY_EXISTS);
    const badMask = await callError(
      call(w.t.session.updateUser, w.t.session, { user: { uid: w.uid, username: 'alice', firstName: '', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createTime: undefined }, updateMask: ['uid'], password: '' }, adminToken(w.t)),
    );
    expect(badMask.code).toBe(status.INVALID_ARGUMENT);
    const noRole = await callError(call(w.t.session.removeUserRole, w.t.session, { uid: w.uid, role: { applicationId: 'app-a', organizationName: 'ACME', roleName: 'ghost', roleValue: '' } }, adminToken(w.t)));
    expect(noRole.code).toBe(status.NOT_FOUND);
    const roleForUnknownApp = await callError(call(w.t.session.addUserRole, w.t.session, { uid: w.uid, role: { applicationId: 'nope', organizationName: '', roleName: 'r', roleValue: '' } }, adminToken(w.t)));
    expect(roleForUnknownApp.code).toBe(status.NOT_FOUND);
    const users = await call(w.t.session.listUsers, w.t.session, { usernamePrefix: 'al', pageSize: 0, pageToken: '' }, adminToken(w.t));
    expect(users.users.map((u) => u.username)).toEqual(['alice']);
    expect(JSON.stringify(users)).not.toContain('scrypt');
    // Nothing changed by the refused calls.
    expect((await call(w.t.session.listApplications, w.t.session, {}, adminToken(w.t))).applications.map((a) => a.applicationId)).toEqual(['app-a', 'app-b']);
  });

  it('changing a password ends the user sessions (ASVS 7.4.3)', async () => {
    const w = await world();
    const s = await logon(w, w.a);
    await call(
      w.t.session.updateUser,
      w.t.session,
      { user: { uid: w.uid, username: 'alice', firstName: '', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createTime: undefined }, updateMask: [], password: 'a brand new password' },
      adminToken(w.t),
    );
    expect((await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: s.userToken!.userTokenId } }, w.a.token)).active).toBe(false);
    expect((await logon(w, w.a, 'alice', 'a brand new password')).userToken!.uid).toBe(w.uid);
  });
});

describe('throttling', () => {
  it('parallel wrong guesses cannot all pass the limit while passwords are being checked', async () => {
    const w = await world({ 'session.throttleFreeFailures': 0, 'session.throttleMaxFailures': 3, 'session.throttleWindowMs': 5 * MIN });
    const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => logon(w, w.a, 'alice', `guess ${i}`)));
    const codes = results.map((r) => (r.status === 'rejected' ? (r.reason as { code: number }).code : status.OK));
    expect(codes.filter((c) => c === status.UNAUTHENTICATED).length).toBeLessThanOrEqual(3);
    expect(codes.filter((c) => c === status.RESOURCE_EXHAUSTED).length).toBeGreaterThanOrEqual(9);
  });

  it('an application secret change ends its tokens', async () => {
    const w = await world();
    await call(w.t.session.updateApplication, w.t.session, { application: appDefaults('app-a'), updateMask: [], generateSecret: false, applicationSecret: 'a-brand-new-secret-of-enough-length' }, adminToken(w.t));
    expect((await callError(call(w.t.session.getApplicationInfo, w.t.session, {}, w.a.token))).code).toBe(status.UNAUTHENTICATED);
  });

  it('slows down repeated failures, then refuses with RESOURCE_EXHAUSTED and a retry time; the window ends it', async () => {
    const w = await world({ 'session.throttleFreeFailures': 1, 'session.throttleMaxFailures': 3, 'session.throttleWindowMs': 5 * MIN });
    for (let i = 0; i < 3; i++) expect((await callError(logon(w, w.a, 'alice', 'bad password'))).code).toBe(status.UNAUTHENTICATED);
    const blocked = await callError(logon(w, w.a, 'alice', PASSWORD));
    expect(blocked.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(Number(blocked.metadata.get('retry-after-ms')[0])).toBe(5 * MIN);
    // The same for an unknown username: the limit does not reveal which accounts exist.
    for (let i = 0; i < 3; i++) await callError(logon(w, w.a, 'mallory', 'bad password'));
    expect((await callError(logon(w, w.a, 'mallory', 'bad password'))).code).toBe(status.RESOURCE_EXHAUSTED);
    w.clock.advance(5 * MIN);
    expect((await logon(w, w.a)).userToken!.uid).toBe(w.uid);
  });
});

describe('persistence', () => {
  it('sessions survive an STS restart in embedded mode', async () => {
    const dataDir = tempDir();
    const w = await world({}, dataDir);
    const res = await logon(w, w.a, 'alice', PASSWORD, 'app-b');
    await w.t.stop();
    t = await startTestSts({ dataDir, clock: w.clock });
    const v = await call(t.session.validateUserToken, t.session, { token: { $case: 'userTokenId', value: res.userToken!.userTokenId } }, w.a.token);
    expect(v.active).toBe(true);
    const redeemed = await call(t.session.getUserTokenByUserTicket, t.session, { userTicket: res.userTicket }, w.b.token);
    expect(redeemed.userToken!.uid).toBe(w.uid);
  });
});

