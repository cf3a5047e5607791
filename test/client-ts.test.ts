/**
 * The TypeScript client package (clients/ts, `createStsClient`) against real servers: logon on first use,
 * user logon and validation, JWKS encryption and JWT verification, single-use credential JWEs, renewal of the
 * application token before it expires and a new logon at its absolute lifetime (the server on a manual clock,
 * the client on an injected clock and scheduler), retries of reads
 * (and only reads) on UNAVAILABLE across a server that is not yet listening or restarts, typed errors with
 * the STS code, deadlines, and mTLS.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  CREDENTIAL_JWE_TYP,
  IDEMPOTENT_METHODS,
  JwksCache,
  type StsClient,
  type StsClientEvent,
  type StsClientOptions,
  StsClientError,
  type StsScheduler,
  createStsClient,
} from '../clients/ts/src/index.js';
import { ManualClock } from '../src/clock.js';
import { freePort } from './helpers/net.js';
import { addRole, adminToken, createApp, createUser } from './helpers/directory.js';
import { type StartTestOptions, type TestSts, startTestSts } from './helpers/server.js';

const PASSWORD = 'correct horse battery staple';
const MIN = 60_000;

let servers: TestSts[] = [];
const clients: StsClient[] = [];
const cleanups: (() => void)[] = [];
afterEach(async () => {
  clients.splice(0).forEach((c) => c.close());
  for (const s of servers.splice(0)) await s.stop(true);
  cleanups.splice(0).forEach((f) => f());
});

async function server(options: StartTestOptions = {}): Promise<TestSts> {
  const t = await startTestSts(options);
  servers.push(t);
  return t;
}

/** A server with application "shop" (trusted, so it may Decrypt) and user "alice" with a role in it. */
async function world(options: StartTestOptions = {}): Promise<{ t: TestSts; secret: string; uid: string }> {
  const t = await server(options);
  const { secret } = await createApp(t, 'shop', { trusted: true });
  const uid = await createUser(t, 'alice', PASSWORD);
  await addRole(t, uid, 'shop', 'buyer');
  return { t, secret, uid };
}

/** Collects the client's events and lets a test wait for the next one of a type. */
function recorder() {
  const events: StsClientEvent[] = [];
  const waiting: { type: StsClientEvent['type']; resolve: (e: StsClientEvent) => void }[] = [];
  return {
    events,
    onEvent(e: StsClientEvent) {
      events.push(e);
      for (const w of waiting.filter((x) => x.type === e.type)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(e);
      }
    },
    next(type: StsClientEvent['type']): Promise<StsClientEvent> {
      return new Promise((resolve) => waiting.push({ type, resolve }));
    },
    count(type: StsClientEvent['type']): number {
      return events.filter((e) => e.type === type).length;
    },
  };
}

function client(options: StsClientOptions): StsClient {
  const c = createStsClient(options);
  clients.push(c);
  return c;
}

function logonUser(c: StsClient, username = 'alice', password = PASSWORD) {
  // ticketApplicationId is left out: requests take partial objects (proto3 defaults fill the rest).
  return c.session.logonUser({ credential: { $case: 'userCredential', value: { username, password } } });
}

async function failure(p: Promise<unknown>): Promise<StsClientError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(StsClientError);
    return err as StsClientError;
  }
  throw new Error('expected the call to fail, but it succeeded');
}


/** A scheduler whose timers run only when the test fires them. */
class ManualScheduler implements StsScheduler {
  private timers = new Map<number, { fn: () => void; ms: number }>();
  private nextId = 1;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { fn, ms });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  /** Delays of the pending timers. */
  pending(): number[] {
    return [...this.timers.values()].map((t) => t.ms);
  }
  fire(): void {
    expect(this.timers.size).toBe(1);
    const [[id, timer]] = [...this.timers];
    this.timers.delete(id);
    timer.fn();
  }
}

describe('createStsClient', () => {
  it('logs the application on at first use (once for concurrent calls), logs a user on and validates the session', async () => {
    const { t, secret, uid } = await world();
    const ev = recorder();
    const c = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret }, onEvent: ev.onEvent });
    expect(ev.events).toEqual([]); // nothing happens before the first call

    const infos = await Promise.all([1, 2, 3, 4].map(() => c.session.getApplicationInfo({})));
    expect(infos.map((i) => i.application!.applicationId)).toEqual(['shop', 'shop', 'shop', 'shop']);
    expect(ev.count('logon')).toBe(1);

    const logon = await logonUser(c);
    expect(logon.userToken!.uid).toBe(uid);
    expect(logon.userToken!.applicationId).toBe('shop');
    expect(logon.userToken!.roles.map((r) => r.roleName)).toEqual(['buyer']);
    const byId = await c.session.validateUserToken({ token: { $case: 'userTokenId', value: logon.userToken!.userTokenId } });
    expect([byId.active, byId.userToken?.uid]).toEqual([true, uid]);
    const byJwt = await c.session.validateUserToken({ token: { $case: 'userTokenJwt', value: logon.userTokenJwt } });
    expect(byJwt.active).toBe(true);

    // Every call carried the same application token: STS knows it as shop's.
    const token = await c.applicationToken();
    const v = await c.session.validateApplicationToken({ applicationTokenId: token });
    expect([v.active, v.applicationToken?.applicationId]).toEqual([true, 'shop']);
    expect(ev.count('logon')).toBe(1);

    await c.session.releaseUserToken({ userTokenId: logon.userToken!.userTokenId, endSession: false });
    expect((await c.session.validateUserToken({ token: { $case: 'userTokenId', value: logon.userToken!.userTokenId } })).active).toBe(false);
  });

  it('keys: fetches the JWKS, encrypts to STS (a trusted application decrypts it) and verifies the user JWT', async () => {
    const { t, secret, uid } = await world();
    const c = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret } });
    const jwe = await c.keys.encryptFor('for STS only', { contentType: 'text/plain' });
    expect(jwe.split('.')).toHaveLength(5);
    const jwks = await c.pop.getJwks({});
    expect(JSON.parse(Buffer.from(jwe.split('.')[0]!, 'base64url').toString()).kid).toBe(jwks.primaryEncryptionKid);
    const dec = await c.pop.decrypt({ jwe });
    expect([Buffer.from(dec.plaintext).toString(), dec.contentType]).toEqual(['for STS only', 'text/plain']);

    const logon = await logonUser(c);
    const verified = await c.keys.verifyToken(logon.userTokenJwt);
    const claims = JSON.parse(new TextDecoder().decode(verified.payload)) as { sub: string; aud: string; roles: unknown };
    expect([claims.sub, claims.aud]).toEqual([uid, 'shop']);
    expect(verified.header.kid).toBe(jwks.primarySigningKid);
    const [h, p, s] = logon.userTokenJwt.split('.');
    const tampered = `${h}.${p}.${s!.startsWith('A') ? 'B' : 'A'}${s!.slice(1)}`;
    await expect(c.keys.verifyToken(tampered)).rejects.toThrow();
  });

  it('renews the application token at 80% of its lifetime, and logs on again when a renewal or a call is refused', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const { t, secret } = await world({ clock, overrides: { 'session.applicationTokenLifetimeMs': MIN } });
    let clientNow = 1_000_000;
    const scheduler = new ManualScheduler();
    const ev = recorder();
    const c = client({
      address: t.address,
      tls: false,
      credentials: { applicationId: 'shop', applicationSecret: secret },
      now: () => clientNow,
      scheduler,
      onEvent: ev.onEvent,
    });
    const advance = (ms: number) => {
      clock.advance(ms);
      clientNow += ms;
    };

    const first = await c.applicationToken();
    expect(ev.events).toEqual([{ type: 'logon', applicationId: 'shop', expiresAt: clientNow + MIN }]);
    expect(scheduler.pending()).toEqual([0.8 * MIN]);

    // At 80%, the timer renews the same token: STS now keeps it a full lifetime from then.
    advance(0.8 * MIN);
    const renewed = ev.next('renewed');
    scheduler.fire();
    expect(await renewed).toEqual({ type: 'renewed', applicationId: 'shop', expiresAt: clientNow + MIN });
    expect(scheduler.pending()).toEqual([0.8 * MIN]);
    const v = await c.session.validateApplicationToken({ applicationTokenId: first });
    expect(v.applicationToken!.expireTime!.getTime()).toBe(clock.now() + MIN);

    // Past the original expiry the token still works, and it is still the first one.
    advance(0.5 * MIN);
    expect((await c.session.getApplicationInfo({})).application!.applicationId).toBe('shop');
    expect(await c.applicationToken()).toBe(first);
    expect(ev.count('logon')).toBe(1);

    // The token ends behind the client's back: the next renewal is refused (UNAUTHENTICATED) and the
    // client logs on again.
    await c.session.releaseApplicationToken({ applicationTokenId: first });
    const relogon = ev.next('logon');
    scheduler.fire();
    await relogon;
    const failed = ev.events.find((e) => e.type === 'renewal-failed');
    expect(failed?.type === 'renewal-failed' && [failed.error.code, failed.error.stsCode]).toEqual([status.UNAUTHENTICATED, 'unauthenticated']);
    const second = await c.applicationToken();
    expect(second).not.toBe(first);
    expect((await c.session.getApplicationInfo({})).application!.applicationId).toBe('shop');
    expect(scheduler.pending()).toEqual([0.8 * MIN]);

    // A call refused because the token ended is sent once more after a new logon.
    await c.session.releaseApplicationToken({ applicationTokenId: second });
    expect((await c.session.getApplicationInfo({})).application!.applicationId).toBe('shop');
    expect(ev.count('logon')).toBe(3);
    expect(await c.applicationToken()).not.toBe(second);

    // A token whose local lifetime ran out (the timer never fired: a suspended process) is not used: the
    // next call logs on first.
    advance(2 * MIN);
    expect((await c.session.getApplicationInfo({})).application!.applicationId).toBe('shop');
    expect(ev.count('logon')).toBe(4);
    expect(ev.count('renewal-failed')).toBe(1);
  });

  it('renews no further than STS allows: at the absolute lifetime the timer logs on again, before the token ends', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const { t, secret } = await world({ clock, overrides: { 'session.applicationTokenLifetimeMs': MIN, 'session.applicationTokenMaxLifetimeMs': 2.2 * MIN } });
    let clientNow = 5_000_000;
    const scheduler = new ManualScheduler();
    const ev = recorder();
    const c = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret }, now: () => clientNow, scheduler, onEvent: ev.onEvent });
    const advance = (ms: number) => {
      clock.advance(ms);
      clientNow += ms;
    };
    const fire = async (type: StsClientEvent['type']) => {
      const next = ev.next(type);
      scheduler.fire();
      return next;
    };

    const first = await c.applicationToken();
    advance(0.8 * MIN);
    expect(await fire('renewed')).toEqual({ type: 'renewed', applicationId: 'shop', expiresAt: clientNow + MIN });
    expect(scheduler.pending()).toEqual([0.8 * MIN]);
    // 1.6 min after logon: STS renews only up to 2.2 min, and the client believes it.
    advance(0.8 * MIN);
    expect(await fire('renewed')).toEqual({ type: 'renewed', applicationId: 'shop', expiresAt: clientNow + 0.6 * MIN });
    expect(scheduler.pending()).toEqual([0.8 * 0.6 * MIN]);
    // At 80% of what is left, a new logon instead of a renewal that would gain nothing.
    advance(0.48 * MIN);
    await fire('logon');
    const second = await c.applicationToken();
    expect(second).not.toBe(first);
    expect(scheduler.pending()).toEqual([0.8 * MIN]);
    expect(ev.count('renewal-failed')).toBe(0);
    expect(ev.count('renewed')).toBe(2);
    // The first token was still valid when it was replaced; it ends at the cap.
    expect((await c.session.validateApplicationToken({ applicationTokenId: first })).active).toBe(true);
    advance(0.12 * MIN);
    expect((await c.session.validateApplicationToken({ applicationTokenId: first })).active).toBe(false);
    expect((await c.session.getApplicationInfo({})).application!.applicationId).toBe('shop');
  });

  it('keys.verifyUserToken verifies offline with the cached JWKS (one fetch): issuer, audience, type, signature', async () => {
    const { t, secret, uid } = await world();
    const c = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret } });
    const { userTokenJwt } = await logonUser(c);
    let fetches = 0;
    const keys = new JwksCache(() => {
      fetches++;
      return c.pop.getJwks({});
    });
    for (let i = 0; i < 3; i++) expect((await keys.verifyUserToken(userTokenJwt, { issuer: 'urn:sts:local', audience: 'shop' })).sub).toBe(uid);
    expect(fetches).toBe(1);
    await expect(keys.verifyUserToken(userTokenJwt, { issuer: 'urn:sts:local', audience: 'another-app' })).rejects.toThrow(/another application/);
    await expect(keys.verifyUserToken(userTokenJwt, { issuer: 'urn:another', audience: 'shop' })).rejects.toThrow(/another issuer/);
    await expect(keys.verifyUserToken(userTokenJwt, { issuer: 'urn:sts:local', audience: 'shop', now: Date.now() + 2 * 86_400_000 })).rejects.toThrow(/expired/);
    // A JWS the application had STS sign (PopService.Sign) verifies, but is no user token.
    const { jws } = await c.pop.sign({ payload: Buffer.from('{"sub":"x"}') });
    expect(new TextDecoder().decode((await keys.verifyToken(jws)).payload)).toBe('{"sub":"x"}');
    await expect(keys.verifyUserToken(jws, { issuer: 'urn:sts:local', audience: 'shop' })).rejects.toThrow(/typ/);
    expect(fetches).toBe(1);
  });

  it('uses TLS unless told otherwise: without `tls` it cannot talk to a plaintext server', async () => {
    const { t } = await world();
    const byDefault = client({ address: t.address, retries: 0 });
    expect((await failure(byDefault.pop.getJwks({}))).code).toBe(status.UNAVAILABLE);
    const plaintext = client({ address: t.address, tls: false, retries: 0 });
    expect((await plaintext.pop.getJwks({})).primarySigningKid).not.toBe('');
  });

  it('keys.encryptCredential makes single-use credential JWEs that STS logs on with once and Decrypt refuses', async () => {
    const { t, secret, uid } = await world();
    const c = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret } });
    const jwe = await c.keys.encryptCredential({ username: 'alice', password: PASSWORD }, { audience: 'shop' });
    const header = JSON.parse(Buffer.from(jwe.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;
    expect(header).toMatchObject({ typ: CREDENTIAL_JWE_TYP, enc: 'A256GCM', kid: (await c.pop.getJwks({})).primaryEncryptionKid });
    const logonWith = (value: string) => c.session.logonUser({ credential: { $case: 'userCredentialJwe', value }, ticketApplicationId: '' });
    expect((await logonWith(jwe)).userToken!.uid).toBe(uid);
    const replay = await failure(logonWith(jwe));
    expect([replay.code, replay.stsCode, replay.details]).toEqual([status.UNAUTHENTICATED, 'invalid_credentials', 'invalid user credentials']);
    // Each call makes a new one; the application's own credential works the same way.
    expect((await logonWith(await c.keys.encryptCredential({ username: 'alice', password: PASSWORD }, { audience: 'shop' }))).userToken!.uid).toBe(uid);
    const app = await c.session.logonApplication({ credential: { $case: 'applicationCredentialJwe', value: await c.keys.encryptCredential({ application_id: 'shop', application_secret: secret }) } });
    expect(app.applicationToken!.applicationId).toBe('shop');
    // Even the trusted application cannot have STS open a credential JWE.
    const refused = await failure(c.pop.decrypt({ jwe: await c.keys.encryptCredential({ password: PASSWORD }, { audience: 'shop' }) }));
    expect([refused.code, refused.stsCode, refused.details]).toEqual([status.INVALID_ARGUMENT, 'decryption_failed', 'decryption failed']);
    await expect(c.keys.encryptCredential({ password: PASSWORD }, { lifetimeMs: 0, audience: 'shop' })).rejects.toThrow(RangeError);
  });

  it('retries reads on UNAVAILABLE until the server listens, and across a restart on the same port', async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const ev = recorder();
    // Enough retries (and deadline) to outlast a slow server start on a busy machine.
    const patient = { retries: 60, retryBackoff: { initialMs: 100, maxMs: 500 } };
    const c = client({ address, tls: false, ...patient, onEvent: ev.onEvent });

    // GetJwks before anything listens: it is retried until the server is up.
    const jwksCall = c.pop.getJwks({}, { deadlineMs: 30_000 });
    await new Promise((r) => setTimeout(r, 300));
    const t = await server({ overrides: { 'server.address': address } });
    const jwks = await jwksCall;
    expect((JSON.parse(jwks.jwksJson) as { keys: unknown[] }).keys.length).toBeGreaterThan(0);
    const retries = ev.events.filter((e) => e.type === 'retry');
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.every((e) => e.type === 'retry' && e.method === '/sts.v1.PopService/GetJwks' && e.error.code === status.UNAVAILABLE)).toBe(true);

    // An authenticated client and a user session, then the server stops.
    const { secret } = await createApp(t, 'shop', { trusted: true });
    const uid = await createUser(t, 'alice', PASSWORD);
    const app = client({ address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret }, ...patient, onEvent: ev.onEvent });
    const session = (await logonUser(app)).userToken!;
    const dataDir = t.dataDir;
    await t.stop();
    servers = servers.filter((s) => s !== t);
    ev.events.length = 0;

    // Writes and other non-idempotent calls fail at once, never retried.
    const write = await failure(logonUser(app));
    expect([write.code, write.stsCode, write.method]).toEqual([status.UNAVAILABLE, 'unavailable', '/sts.v1.SessionService/LogonUser']);
    const decrypt = await failure(app.pop.decrypt({ jwe: 'a.b.c.d.e' }));
    expect(decrypt.code).toBe(status.UNAVAILABLE);
    expect(ev.count('retry')).toBe(0);

    // A read while the server is down is retried until it is back (same port, same data).
    const validate = app.session.validateUserToken({ token: { $case: 'userTokenId', value: session.userTokenId } }, { deadlineMs: 30_000 });
    await new Promise((r) => setTimeout(r, 300));
    await server({ dataDir, overrides: { 'server.address': address } });
    const v = await validate;
    expect([v.active, v.userToken?.uid]).toEqual([true, uid]);
    expect(ev.count('retry')).toBeGreaterThan(0);
    expect(ev.events.filter((e) => e.type === 'retry').every((e) => e.type === 'retry' && e.method === '/sts.v1.SessionService/ValidateUserToken')).toBe(true);
  });

  it('gives up a read after `retries` retries, and the retried methods are exactly the idempotent reads', async () => {
    const ev = recorder();
    const c = client({ address: `127.0.0.1:${await freePort()}`, tls: false, retries: 2, retryBackoff: { initialMs: 20, maxMs: 40 }, onEvent: ev.onEvent });
    const err = await failure(c.pop.listKeys({ kind: 0, includeDestroyed: false }));
    expect([err.code, err.stsCode]).toEqual([status.UNAVAILABLE, 'unavailable']);
    expect(ev.events.map((e) => e.type === 'retry' && e.attempt)).toEqual([1, 2]);
    expect([...IDEMPOTENT_METHODS].sort()).toEqual([
      '/sts.v1.PopService/GetJwks',
      '/sts.v1.PopService/ListKeys',
      '/sts.v1.PopService/Verify',
      '/sts.v1.SessionService/GetApplicationInfo',
      '/sts.v1.SessionService/GetUserTokenByUserTokenId',
      '/sts.v1.SessionService/ValidateApplicationToken',
      '/sts.v1.SessionService/ValidateUserToken',
    ]);
  });

  it('raises StsClientError with the gRPC status, the STS code and retry-after-ms', async () => {
    const { t, secret } = await world({ overrides: { 'session.throttleFreeFailures': 0, 'session.throttleMaxFailures': 2 } });
    const c = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret } });

    const wrong = await failure(logonUser(c, 'alice', 'wrong password'));
    expect(wrong).toBeInstanceOf(Error);
    expect([wrong.name, wrong.code, wrong.stsCode, wrong.details, wrong.method]).toEqual([
      'StsClientError', status.UNAUTHENTICATED, 'invalid_credentials', 'invalid user credentials', '/sts.v1.SessionService/LogonUser',
    ]);
    expect(wrong.retryAfterMs).toBeUndefined();
    await failure(logonUser(c, 'alice', 'wrong password'));
    const throttled = await failure(logonUser(c, 'alice', 'wrong password'));
    expect([throttled.code, throttled.stsCode]).toEqual([status.RESOURCE_EXHAUSTED, 'throttled']);
    expect(throttled.retryAfterMs).toBeGreaterThan(0);

    // Wrong application credentials surface from the first call that needs the token.
    const bad = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: 'not-the-secret' } });
    const refused = await failure(bad.session.getApplicationInfo({}));
    expect([refused.code, refused.stsCode, refused.method]).toEqual([status.UNAUTHENTICATED, 'invalid_credentials', '/sts.v1.SessionService/LogonApplication']);

    // Without credentials no token is sent; a per-call bearer (here the admin key) is used as given.
    const anon = client({ address: t.address, tls: false });
    const missing = await failure(anon.session.getApplicationInfo({}));
    expect([missing.code, missing.stsCode]).toEqual([status.UNAUTHENTICATED, 'unauthenticated']);
    const apps = await anon.session.listApplications({}, { bearer: adminToken(t) });
    expect(apps.applications.map((a) => a.applicationId)).toEqual(['shop']);
    await expect(anon.applicationToken()).rejects.toThrow(/no credentials/);
  });

  it('puts a deadline on every call: the default one, and a per-call one', async () => {
    const { t, secret } = await world();
    const c = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret } });
    await c.applicationToken();
    // A password logon takes the password hash's time, more than 2 ms (or the server sees that it cannot end
    // within them and answers DEADLINE_EXCEEDED itself).
    const perCall = await failure(c.session.logonUser({ credential: { $case: 'userCredential', value: { username: 'alice', password: PASSWORD } }, ticketApplicationId: '' }, { deadlineMs: 2 }));
    expect([perCall.code, perCall.stsCode]).toEqual([status.DEADLINE_EXCEEDED, 'deadline_exceeded']);

    const hasty = client({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret }, defaultDeadlineMs: 2 });
    const byDefault = await failure(hasty.session.getApplicationInfo({}));
    expect(byDefault.code).toBe(status.DEADLINE_EXCEEDED);
    // The same call with room succeeds on the same client (its logon gets the call's deadline).
    expect((await hasty.session.getApplicationInfo({}, { deadlineMs: 10_000 })).application!.applicationId).toBe('shop');
  });

  it('connects with mTLS: CA, client certificate and key', async () => {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    const pki = mkdtempSync(join(tmpdir(), 'sts-client-pki-'));
    cleanups.push(() => rmSync(pki, { recursive: true, force: true }));
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: pki, stdio: ['ignore', 'ignore', 'pipe'] });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    for (const [name, ext] of [['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'], ['client', 'extendedKeyUsage=clientAuth']] as const) {
      openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      writeFileSync(join(pki, `${name}.ext`), `basicConstraints=CA:FALSE\n${ext}\n`);
      openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.pem`, '-extfile', `${name}.ext`);
    }
    const file = (n: string) => join(pki, n);
    const t = await server({
      overrides: { 'tls.certFile': file('server.pem'), 'tls.keyFile': file('server.key'), 'tls.clientCaFile': file('ca.pem'), 'tls.requireClientCert': true },
    });
    const ca = readFileSync(file('ca.pem'));
    const c = client({ address: t.address, tls: { ca, cert: readFileSync(file('client.pem')), key: readFileSync(file('client.key')).toString() }, retries: 0 });
    expect((await c.pop.getJwks({})).primarySigningKid).not.toBe('');
    const noCert = client({ address: t.address, tls: { ca }, retries: 0 });
    expect((await failure(noCert.pop.getJwks({}))).code).toBe(status.UNAVAILABLE);
    const plaintext = client({ address: t.address, tls: false, retries: 0 });
    expect((await failure(plaintext.pop.getJwks({}))).code).toBe(status.UNAVAILABLE);
  });

  it('close() stops the renewal timer and fails later calls', async () => {
    const { t, secret } = await world();
    const scheduler = new ManualScheduler();
    const c = createStsClient({ address: t.address, tls: false, credentials: { applicationId: 'shop', applicationSecret: secret }, scheduler });
    await c.applicationToken();
    expect(scheduler.pending()).toHaveLength(1);
    c.close();
    expect(scheduler.pending()).toEqual([]);
    const closed = await failure(c.pop.getJwks({}));
    expect([closed.code, closed.stsCode]).toEqual([status.CANCELLED, 'cancelled']);
    c.close(); // idempotent
  });
});
