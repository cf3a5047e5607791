/**
 * SecretService against a real server, a real identity provider (node:http on 127.0.0.1 serving a JWKS made
 * with jose) and a resource server that is a real directory application: secrets released as JWEs the
 * resource server decrypts, stable across calls, restarts and management key rotation; every rejection with
 * its status and without a secret being made; exactly one secret for 100 concurrent first requests; RFC 8693
 * token exchange; registry validation; unreadable records; and SessionService's third-party logon.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ServiceError, credentials, status } from '@grpc/grpc-js';
import { type CryptoKey, type JWK, SignJWT, compactDecrypt, exportJWK, generateKeyPair } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { JwksCache } from '../clients/ts/src/jwks.js';
import { ManualClock } from '../src/clock.js';
import type { OptionName } from '../src/config/defaults.js';
import { KeyKind, KeyState } from '../src/gen/sts/v1/pop.js';
import { type IdentityProvider, type ResourceServer, SecretServiceClient } from '../src/gen/sts/v1/secret.js';
import { Application } from '../src/gen/sts/v1/session.js';
import { call, callError } from './helpers/call.js';
import { FAST_ROTATION, type TestSts, startTestSts } from './helpers/server.js';

const MIN = 60_000;
const T0 = Date.UTC(2026, 5, 1);
const AUD = 'api://orders';
const OTHER_AUD = 'api://billing';
const RS_ID = 'orders';
const RS_APP = 'orders-rs';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

// ---------------------------------------------------------------------------------------------------------
// Fixtures: an identity provider over HTTP, a resource server key pair, a running STS. Closed after each test.

interface Idp {
  issuer: string;
  jwksUri: string;
  /** Number of JWKS requests served. */
  hits: () => number;
  /** What /jwks serves. */
  keys: JWK[];
  /** Extra documents by path (a resource server's JWKS). */
  docs: Map<string, unknown>;
  signer: { kid: string; key: CryptoKey };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

async function startIdp(): Promise<Idp> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  let hits = 0;
  const idp = {
    keys: [{ ...(await exportJWK(publicKey)), kid: 'idp-1', use: 'sig', alg: 'ES256' }] as JWK[],
    docs: new Map<string, unknown>(),
    signer: { kid: 'idp-1', key: privateKey },
  };
  const server = createServer((req, res) => {
    const doc = req.url === '/jwks' ? { keys: idp.keys } : idp.docs.get(req.url ?? '');
    if (req.url === '/jwks') hits++;
    if (doc === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
  });
  const port = await listen(server);
  const base = `http://127.0.0.1:${port}`;
  return { ...idp, issuer: base, jwksUri: `${base}/jwks`, hits: () => hits };
}

/** A port with nothing listening. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

interface ResourceServerKeys {
  kid: string;
  privateKey: CryptoKey;
  jwks: { keys: JWK[] };
}

async function resourceServerKeys(alg: 'ECDH-ES+A256KW' | 'RSA-OAEP-256' = 'ECDH-ES+A256KW', kid = 'rs-enc-1'): Promise<ResourceServerKeys> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, privateKey, jwks: { keys: [{ ...(await exportJWK(publicKey)), kid, use: 'enc', alg }] } };
}

interface World {
  t: TestSts;
  clock: ManualClock;
  idp: Idp;
  admin: string;
  /** Application token of the resource server's directory application. */
  rsToken: string;
  rs: ResourceServerKeys;
}

function adminToken(s: TestSts): string {
  return readFileSync(join(s.dataDir, 'admin.token'), 'utf8').trim();
}

async function createApp(t: TestSts, admin: string, id: string, extra: Partial<Application> = {}): Promise<string> {
  const created = await call(t.session.createApplication, t.session, { application: Application.fromPartial({ applicationId: id, name: id, ...extra }), applicationSecret: '' }, admin);
  return logon(t, id, created.applicationSecret);
}

async function logon(t: TestSts, id: string, secret: string): Promise<string> {
  const res = await call(t.session.logonApplication, t.session, { credential: { $case: 'applicationCredential', value: { applicationId: id, applicationSecret: secret } } });
  return res.applicationToken!.applicationTokenId;
}

function putIdp(w: { t: TestSts; admin: string }, p: Partial<IdentityProvider> & { issuer: string }) {
  const idp: IdentityProvider = { jwksSource: undefined, audiences: [AUD, OTHER_AUD], algorithms: ['ES256'], subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false, ...p };
  return call(w.t.secret.putIdentityProvider, w.t.secret, { identityProvider: idp }, w.admin);
}

function putRs(w: { t: TestSts; admin: string }, r: Partial<ResourceServer> & { resourceServerId: string }) {
  const rs: ResourceServer = { credential: undefined, audiences: [AUD], encryptionKeySource: undefined, ...r };
  return call(w.t.secret.putResourceServer, w.t.secret, { resourceServer: rs }, w.admin);
}

const ROTATION: Partial<Record<OptionName, number | string>> = {
  ...FAST_ROTATION,
  'session.userTokenIdleTimeoutMs': 30 * MIN,
  'session.applicationTokenLifetimeMs': 30 * 24 * 60 * MIN,
  'session.applicationTokenMaxLifetimeMs': 30 * 24 * 60 * MIN,
};

async function startSts(clock: ManualClock, overrides: Partial<Record<OptionName, number | string | boolean>> = {}, dataDir?: string): Promise<TestSts> {
  const t = await startTestSts({ clock, overrides, ...(dataDir ? { dataDir } : {}) });
  let stopped = false;
  const stop = t.stop.bind(t);
  t.stop = async (removeData = false) => {
    if (!stopped) await stop(removeData);
    stopped = true;
  };
  cleanups.push(() => t.stop(true));
  return t;
}

/** STS with the identity provider and the resource server "orders" (application orders-rs) registered. */
async function world(overrides: Partial<Record<OptionName, number | string>> = {}): Promise<World> {
  const clock = new ManualClock(T0);
  const t = await startSts(clock, overrides);
  const admin = adminToken(t);
  const idp = await startIdp();
  await putIdp({ t, admin }, { issuer: idp.issuer, jwksSource: { $case: 'jwksUri', value: idp.jwksUri } });
  const rsToken = await createApp(t, admin, RS_APP);
  const rs = await resourceServerKeys();
  await putRs({ t, admin }, { resourceServerId: RS_ID, credential: { $case: 'applicationId', value: RS_APP }, encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify(rs.jwks) } });
  return { t, clock, idp, admin, rsToken, rs };
}

interface TokenOptions {
  sub?: string;
  aud?: string | string[];
  iss?: string;
  /** Seconds relative to the clock. */
  iat?: number;
  exp?: number;
  nbf?: number;
  kid?: string;
  key?: CryptoKey | Uint8Array;
  alg?: string;
  claims?: Record<string, unknown>;
}

async function idToken(w: { clock: ManualClock; idp: Idp }, o: TokenOptions = {}): Promise<string> {
  const now = Math.floor(w.clock.now() / 1000);
  const jwt = new SignJWT({ ...o.claims })
    .setProtectedHeader({ alg: o.alg ?? 'ES256', kid: o.kid ?? w.idp.signer.kid, typ: 'JWT' })
    .setIssuer(o.iss ?? w.idp.issuer)
    .setSubject(o.sub ?? 'alice')
    .setAudience(o.aud ?? AUD)
    .setIssuedAt(now + (o.iat ?? 0))
    .setExpirationTime(now + (o.exp ?? 600));
  if (o.nbf !== undefined) jwt.setNotBefore(now + o.nbf);
  return jwt.sign(o.key ?? w.idp.signer.key);
}

/** GetUserSecret as the resource server "orders" (its application token). */
function getSecret(w: World, subjectToken: string) {
  return getSecretAs(w.t.secret, subjectToken, w.rsToken);
}

function getSecretAs(client: SecretServiceClient, subjectToken: string, bearer: string | undefined) {
  return call(client.getUserSecret, client, { subjectToken }, bearer);
}

async function open(w: { rs: ResourceServerKeys }, jwe: string): Promise<Buffer> {
  const { plaintext, protectedHeader } = await compactDecrypt(jwe, w.rs.privateKey);
  expect(protectedHeader).toMatchObject({ enc: 'A256GCM', kid: w.rs.kid });
  return Buffer.from(plaintext);
}

async function secretOf(w: World, sub: string): Promise<Buffer> {
  return open(w, (await getSecret(w, await idToken(w, { sub }))).secretJwe);
}

const storedSecrets = async (t: TestSts) => t.sts.store.durable.list('user_secret');
const recordId = (issuer: string, subject: string) => createHash('sha256').update(`${issuer}\0${subject}`).digest('base64url');
const wrappedKid = (value: string): string => JSON.parse(Buffer.from((JSON.parse(value) as { wrapped: string }).wrapped.split('.')[0]!, 'base64url').toString()).kid as string;

async function primarySecretKid(t: TestSts, admin: string): Promise<string> {
  const keys = (await call(t.pop.listKeys, t.pop, { kind: KeyKind.KEY_KIND_SECRET, includeDestroyed: false }, admin)).keys;
  return keys.find((k) => k.state === KeyState.KEY_STATE_PRIMARY)!.kid;
}

function expectStatus(e: ServiceError, code: status, stsCode: string, details?: string | RegExp): void {
  expect({ code: status[e.code], stsCode: e.metadata.get('sts-error-code')[0] }, e.details).toEqual({ code: status[code], stsCode });
  if (typeof details === 'string') expect(e.details).toContain(details);
  else if (details) expect(e.details).toMatch(details);
}

// ---------------------------------------------------------------------------------------------------------

describe('GetUserSecret', () => {
  it('returns the same secret on every call and after a restart; different users get different secrets', async () => {
    const w = await world();
    const token = await idToken(w, { sub: 'alice' });
    const first = await getSecret(w, token);
    expect(first).toMatchObject({ subject: 'alice', issuer: w.idp.issuer, recipientKid: w.rs.kid });
    expect(first.createTime!.getTime()).toBe(T0);
    const secret = await open(w, first.secretJwe);
    expect(secret).toHaveLength(32);
    expect(await open(w, (await getSecret(w, token)).secretJwe)).toEqual(secret);
    // A fresh token of the same user later on: the same secret, the same creation time.
    w.clock.advance(MIN);
    const again = await getSecret(w, await idToken(w, { sub: 'alice' }));
    expect(await open(w, again.secretJwe)).toEqual(secret);
    expect(again.createTime!.getTime()).toBe(T0);
    const bob = await secretOf(w, 'bob');
    expect(bob).not.toEqual(secret);

    // The stored form: one record per user, the secret wrapped under the primary management key.
    const records = await storedSecrets(w.t);
    expect(records.map((r) => r.id).sort()).toEqual([recordId(w.idp.issuer, 'alice'), recordId(w.idp.issuer, 'bob')].sort());
    const alice = JSON.parse(records.find((r) => r.id === recordId(w.idp.issuer, 'alice'))!.value) as Record<string, unknown>;
    expect(alice).toMatchObject({ v: 1, issuer: w.idp.issuer, subject: 'alice', createdAt: T0 });
    expect(wrappedKid(JSON.stringify(alice))).toBe(await primarySecretKid(w.t, w.admin));
    expect(JSON.stringify(alice)).not.toContain(secret.toString('base64url'));

    // Audit: every release, with the record id and resource server; never the secret, token or subject.
    const audit = w.t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 'secret.released');
    expect(audit).toHaveLength(4);
    expect(audit[0]).toMatchObject({ resourceServer: RS_ID, issuer: w.idp.issuer, record: recordId(w.idp.issuer, 'alice'), created: true, recipientKid: w.rs.kid });
    expect(audit[1]).toMatchObject({ created: false });
    const logs = w.t.logs.join('\n');
    for (const s of [secret.toString('base64url'), secret.toString('hex'), secret.toString('base64'), token, '"alice"']) expect(logs).not.toContain(s);

    // Restart on the same data directory: the same secret.
    const dataDir = w.t.dataDir;
    await w.t.stop();
    const t2 = await startSts(w.clock, {}, dataDir);
    const w2 = { ...w, t: t2 };
    expect(await secretOf(w2, 'alice')).toEqual(secret);
    expect(await secretOf(w2, 'bob')).toEqual(bob);
    expect(await storedSecrets(t2)).toHaveLength(2);
  });

  it('secret.secretBytes sets the length of new secrets; a resource server key from a JWKS URL (RSA-OAEP-256) works', async () => {
    const w = await world({ 'secret.secretBytes': 64 });
    const rsa = await resourceServerKeys('RSA-OAEP-256', 'rs-rsa-1');
    w.idp.docs.set('/rs-jwks', rsa.jwks);
    await putRs(w, { resourceServerId: RS_ID, credential: { $case: 'applicationId', value: RS_APP }, encryptionKeySource: { $case: 'jwksUri', value: `${w.idp.issuer}/rs-jwks` } });
    const res = await getSecret(w, await idToken(w));
    expect(res.recipientKid).toBe('rs-rsa-1');
    expect(JSON.parse(Buffer.from(res.secretJwe.split('.')[0]!, 'base64url').toString())).toMatchObject({ alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: 'rs-rsa-1' });
    expect(await open({ rs: rsa }, res.secretJwe)).toHaveLength(64);
  });

  it('refuses bad tokens and callers with a precise status, never echoing the token, and creates no secret', async () => {
    const w = await world();
    const other = await createApp(w.t, w.admin, 'not-a-resource-server');
    const foreign = await generateKeyPair('ES256');
    const now = Math.floor(w.clock.now() / 1000);
    const unsigned = (claims: Record<string, unknown>) =>
      `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
    const cases: { name: string; token: () => Promise<string> | string; bearer?: string | undefined; code: status; sts: string; details: string }[] = [
      { name: 'expired', token: () => idToken(w, { iat: -3600, exp: -120 }), code: status.UNAUTHENTICATED, sts: 'token_invalid', details: 'subject token expired' },
      { name: 'not yet valid', token: () => idToken(w, { nbf: 300 }), code: status.UNAUTHENTICATED, sts: 'token_invalid', details: 'subject token not yet valid' },
      { name: 'bad signature', token: () => idToken(w, { key: foreign.privateKey }), code: status.UNAUTHENTICATED, sts: 'token_invalid', details: 'subject token signature invalid' },
      { name: 'unknown issuer', token: () => idToken(w, { iss: 'https://rogue.example' }), code: status.INVALID_ARGUMENT, sts: 'invalid_argument', details: 'subject_token: the subject token issuer is not a trusted identity provider' },
      { name: 'audience the provider does not accept', token: () => idToken(w, { aud: 'api://elsewhere' }), code: status.UNAUTHENTICATED, sts: 'token_invalid', details: 'subject token audience not accepted' },
      { name: 'audience this resource server may not present', token: () => idToken(w, { aud: OTHER_AUD }), code: status.PERMISSION_DENIED, sts: 'permission_denied', details: `resource server ${RS_ID} may not present tokens for this audience` },
      { name: 'caller not a resource server', token: () => idToken(w), bearer: other, code: status.PERMISSION_DENIED, sts: 'permission_denied', details: 'application not-a-resource-server is not a registered resource server' },
      { name: 'admin key is not a resource server', token: () => idToken(w), bearer: w.admin, code: status.PERMISSION_DENIED, sts: 'permission_denied', details: 'is not a registered resource server' },
      { name: 'no credential', token: () => idToken(w), bearer: undefined, code: status.UNAUTHENTICATED, sts: 'unauthenticated', details: 'missing credential' },
      { name: 'alg none', token: () => unsigned({ iss: w.idp.issuer, sub: 'alice', aud: AUD, iat: now, exp: now + 600 }), code: status.UNAUTHENTICATED, sts: 'token_invalid', details: 'subject token algorithm not allowed' },
      { name: 'HMAC', token: () => idToken(w, { alg: 'HS256', key: randomBytes(32) }), code: status.UNAUTHENTICATED, sts: 'token_invalid', details: 'subject token algorithm not allowed' },
      { name: 'allowed-list: ES384 not configured', token: async () => idToken(w, { alg: 'ES384', key: (await generateKeyPair('ES384')).privateKey }), code: status.UNAUTHENTICATED, sts: 'token_invalid', details: 'subject token algorithm not allowed' },
      { name: 'no exp', token: () => new SignJWT({ sub: 'alice', aud: AUD, iss: w.idp.issuer }).setProtectedHeader({ alg: 'ES256', kid: 'idp-1' }).sign(w.idp.signer.key), code: status.UNAUTHENTICATED, sts: 'token_invalid', details: 'subject token has no valid "exp" claim' },
      { name: 'malformed', token: () => 'not.a.jwt!', code: status.INVALID_ARGUMENT, sts: 'invalid_argument', details: 'subject_token: the subject token is not a JWT' },
      { name: 'empty', token: () => '', code: status.INVALID_ARGUMENT, sts: 'invalid_argument', details: 'subject_token: must be 1 to 16384 characters' },
    ];
    for (const c of cases) {
      const token = await c.token();
      const e = await callError(getSecretAs(w.t.secret, token, 'bearer' in c ? c.bearer : w.rsToken));
      expect({ case: c.name, code: status[e.code], sts: e.metadata.get('sts-error-code')[0] }, e.details).toEqual({ case: c.name, code: status[c.code], sts: c.sts });
      expect(e.details, c.name).toContain(c.details);
      if (token.length > 20) expect(e.details).not.toContain(token.split('.')[1]);
    }
    expect(await storedSecrets(w.t)).toHaveLength(0);
    // The same user with a good token: accepted (the refusals above were about the token, not the setup).
    await getSecret(w, await idToken(w));
    expect(await storedSecrets(w.t)).toHaveLength(1);
  });

  it('an unknown kid refetches the JWKS at most once per 10 s; a newly published key is then accepted', async () => {
    const w = await world();
    await getSecret(w, await idToken(w, { sub: 'alice' }));
    expect(w.idp.hits()).toBe(1);

    const next = await generateKeyPair('ES256', { extractable: true });
    const rotated = await idToken(w, { sub: 'carol', kid: 'idp-2', key: next.privateKey });
    // Fetched a moment ago: no refetch yet, the kid is unknown.
    expectStatus(await callError(getSecret(w, rotated)), status.UNAUTHENTICATED, 'token_invalid', 'subject token signed with an unknown key');
    expect(w.idp.hits()).toBe(1);
    // The provider publishes its new key; still within the interval, nothing is fetched.
    w.idp.keys.push({ ...(await exportJWK(next.publicKey)), kid: 'idp-2', use: 'sig', alg: 'ES256' });
    expectStatus(await callError(getSecret(w, rotated)), status.UNAUTHENTICATED, 'token_invalid', 'unknown key');
    expect(w.idp.hits()).toBe(1);
    // 10 s later the unknown kid triggers one refetch, and the new key verifies.
    w.clock.advance(10_000);
    expect((await getSecret(w, rotated)).subject).toBe('carol');
    expect(w.idp.hits()).toBe(2);

    // A kid the provider never publishes: one refetch, then refused; again at once: no refetch.
    w.clock.advance(10_000);
    const garbage = await idToken(w, { sub: 'mallory', kid: 'no-such-kid' });
    expectStatus(await callError(getSecret(w, garbage)), status.UNAUTHENTICATED, 'token_invalid', 'subject token signed with an unknown key');
    expect(w.idp.hits()).toBe(3);
    expectStatus(await callError(getSecret(w, garbage)), status.UNAUTHENTICATED, 'token_invalid', 'unknown key');
    expect(w.idp.hits()).toBe(3);
    // The cache lives 5 minutes, then the JWKS is fetched again.
    await getSecret(w, await idToken(w, { sub: 'alice' }));
    expect(w.idp.hits()).toBe(3);
    w.clock.advance(5 * MIN);
    await getSecret(w, await idToken(w, { sub: 'alice' }));
    expect(w.idp.hits()).toBe(4);
    expect((await storedSecrets(w.t)).map((r) => r.id).sort()).toEqual([recordId(w.idp.issuer, 'alice'), recordId(w.idp.issuer, 'carol')].sort());
  });

  it('an identity provider JWKS that is unreachable, too large or too slow gives UNAVAILABLE and no secret', async () => {
    const w = await world();
    const huge = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [], pad: 'x'.repeat(1024 * 1024 + 1) })));
    const hugePort = await listen(huge);
    const slow = createServer(() => undefined); // accepts and never answers
    const slowPort = await listen(slow);
    const cases = [
      { issuer: 'https://down.example', uri: `http://127.0.0.1:${await closedPort()}/jwks`, details: 'identity provider keys unavailable: the JWKS URL cannot be reached' },
      { issuer: 'https://huge.example', uri: `http://127.0.0.1:${hugePort}/jwks`, details: 'identity provider keys unavailable: the JWKS is larger than 1048576 bytes' },
      { issuer: 'https://slow.example', uri: `http://127.0.0.1:${slowPort}/jwks`, details: 'identity provider keys unavailable: no answer within 3000 ms' },
    ];
    for (const c of cases) {
      await putIdp(w, { issuer: c.issuer, jwksSource: { $case: 'jwksUri', value: c.uri } });
      const started = Date.now();
      const e = await callError(getSecret(w, await idToken(w, { iss: c.issuer })));
      expectStatus(e, status.UNAVAILABLE, 'unavailable', c.details);
      expect(e.metadata.get('retry-after-ms')).toEqual(['1000']);
      if (c.issuer === 'https://slow.example') expect(Date.now() - started).toBeGreaterThanOrEqual(2900);
    }
    // A resource server whose JWKS URL is down: UNAVAILABLE too, and still no secret.
    await putRs(w, { resourceServerId: RS_ID, credential: { $case: 'applicationId', value: RS_APP }, encryptionKeySource: { $case: 'jwksUri', value: `http://127.0.0.1:${await closedPort()}/rs` } });
    expectStatus(await callError(getSecret(w, await idToken(w))), status.UNAVAILABLE, 'unavailable', 'resource server keys unavailable');
    expect(await storedSecrets(w.t)).toHaveLength(0);
  });

  it('100 concurrent first requests for a new user store exactly one secret and all get it', async () => {
    const w = await world();
    const tokens = await Promise.all(Array.from({ length: 100 }, () => idToken(w, { sub: 'dave' })));
    const responses = await Promise.all(tokens.map((token) => getSecret(w, token)));
    const secrets = await Promise.all(responses.map((r) => open(w, r.secretJwe)));
    expect(new Set(secrets.map((s) => s.toString('hex'))).size).toBe(1);
    expect(new Set(responses.map((r) => r.createTime!.getTime())).size).toBe(1);
    expect(await storedSecrets(w.t)).toHaveLength(1);
    const logLines = w.t.logs.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logLines.filter((l) => l.event === 'secret.created')).toHaveLength(1);
    expect(logLines.filter((l) => l.event === 'secret.released')).toHaveLength(100);
    expect(w.idp.hits()).toBe(1);
  });

  it('a stored record that cannot be unwrapped gives FAILED_PRECONDITION and is never replaced', async () => {
    const w = await world();
    const secret = await secretOf(w, 'erin');
    await secretOf(w, 'frank');
    const [erinId, frankId] = [recordId(w.idp.issuer, 'erin'), recordId(w.idp.issuer, 'frank')];

    // Erin's ciphertext is damaged; Frank's record names a wrapping key that does not exist.
    const erin = (await w.t.sts.store.durable.get('user_secret', erinId))!;
    const rec = JSON.parse(erin) as { wrapped: string };
    const parts = rec.wrapped.split('.');
    const ct = Buffer.from(parts[3]!, 'base64url');
    ct[0] = ct[0]! ^ 1;
    const tamperedErin = JSON.stringify({ ...rec, wrapped: [...parts.slice(0, 3), ct.toString('base64url'), parts[4]].join('.') });
    expect(await w.t.sts.store.durable.replaceIfSame('user_secret', erinId, erin, tamperedErin)).toBe(true);
    const frank = (await w.t.sts.store.durable.get('user_secret', frankId))!;
    const frankRec = JSON.parse(frank) as { wrapped: string };
    const header = JSON.parse(Buffer.from(frankRec.wrapped.split('.')[0]!, 'base64url').toString()) as Record<string, string>;
    const tamperedFrank = JSON.stringify({ ...frankRec, wrapped: [Buffer.from(JSON.stringify({ ...header, kid: 'gone' })).toString('base64url'), ...frankRec.wrapped.split('.').slice(1)].join('.') });
    expect(await w.t.sts.store.durable.replaceIfSame('user_secret', frankId, frank, tamperedFrank)).toBe(true);

    for (const [sub, id, stored] of [['erin', erinId, tamperedErin], ['frank', frankId, tamperedFrank]] as const) {
      for (let i = 0; i < 2; i++) {
        const e = await callError(getSecret(w, await idToken(w, { sub })));
        expectStatus(e, status.FAILED_PRECONDITION, 'failed_precondition', "the user's stored secret cannot be decrypted; it is never replaced");
      }
      expect(await w.t.sts.store.durable.get('user_secret', id)).toBe(stored);
    }
    // Re-wrapping leaves them alone too, and says so.
    expect(await w.t.sts.rewrapUserSecrets()).toEqual({ rewrapped: 0, unchanged: 1, failed: 1 });
    expect(await w.t.sts.store.durable.get('user_secret', frankId)).toBe(tamperedFrank);
    expect(await storedSecrets(w.t)).toHaveLength(2);
    const errors = w.t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === 'error');
    expect(errors).toContainEqual(expect.objectContaining({ msg: 'user secret cannot be unwrapped', record: erinId }));
    expect(errors).toContainEqual(expect.objectContaining({ msg: 'user secret cannot be unwrapped; not re-wrapped', record: frankId, kid: 'gone' }));
    expect(w.t.logs.join('\n')).not.toContain(secret.toString('base64url'));
  });
});

describe('management key rotation', () => {
  it('re-wraps every secret under the new primary key; secrets stay identical after the old key is destroyed', async () => {
    const w = await world(ROTATION);
    const before = { alice: await secretOf(w, 'alice'), bob: await secretOf(w, 'bob') };
    const kid1 = await primarySecretKid(w.t, w.admin);
    const oldWrapped = (await storedSecrets(w.t)).map((r) => ({ id: r.id, wrapped: (JSON.parse(r.value) as { wrapped: string }).wrapped }));

    // Rotation 1: RotateKeys stages a secret key, which is primary after the staging lead; re-wrap moves all.
    await call(w.t.pop.rotateKeys, w.t.pop, { kinds: [KeyKind.KEY_KIND_SECRET] }, w.admin);
    w.clock.advance(10 * MIN);
    await w.t.sts.ring.maintain();
    const kid2 = await primarySecretKid(w.t, w.admin);
    expect(kid2).not.toBe(kid1);
    expect(await w.t.sts.rewrapUserSecrets()).toEqual({ rewrapped: 2, unchanged: 0, failed: 0 });
    for (const r of await storedSecrets(w.t)) expect(wrappedKid(r.value)).toBe(kid2);
    expect(await secretOf(w, 'alice')).toEqual(before.alice);
    expect(await w.t.sts.rewrapUserSecrets()).toEqual({ rewrapped: 0, unchanged: 2, failed: 0 }); // nothing left to do
    expect(w.t.logs.some((l) => l.includes('"secret.rewrapped"'))).toBe(true);

    // Rotation 2, then a restart: the start-up maintenance re-wraps (no explicit call).
    await call(w.t.pop.rotateKeys, w.t.pop, { kinds: [KeyKind.KEY_KIND_SECRET] }, w.admin);
    w.clock.advance(10 * MIN);
    const dataDir = w.t.dataDir;
    await w.t.stop();
    const t2 = await startSts(w.clock, ROTATION, dataDir);
    const w2 = { ...w, t: t2 };
    const kid3 = await primarySecretKid(t2, w.admin);
    expect(kid3).not.toBe(kid2);
    for (const r of await storedSecrets(t2)) expect(wrappedKid(r.value)).toBe(kid3);

    // Past destroy-after of the first two keys (validity 60 min + legacy 30 min after T0 and T0+10): erased.
    w.clock.set(T0 + 101 * MIN);
    await t2.sts.ring.maintain();
    expect(await secretOf(w2, 'alice')).toEqual(before.alice);
    expect(await secretOf(w2, 'bob')).toEqual(before.bob);
    // Without the re-wrap they would be lost: the values wrapped under the first key no longer open.
    for (const o of oldWrapped) {
      const e = await callError(call(t2.pop.unwrap, t2.pop, { wrappedKey: o.wrapped, context: Buffer.from(o.id) }, w.admin));
      expect([e.code, e.details]).toEqual([status.INVALID_ARGUMENT, 'unwrap failed']);
    }
  });
});

describe('management key destruction waits for the secrets wrapped under it', () => {
  it('a secret whose re-wrap keeps failing keeps its key past destroy-after (DECRYPT_ONLY, logged, in the metrics) and stays identical; a restart that can re-wrap destroys the key', async () => {
    // No timer maintenance during the test: only the explicit runs below.
    const overrides = { ...ROTATION, 'pop.rotationCheckIntervalMs': 15 * MIN, 'metrics.address': '127.0.0.1:0' };
    const w = await world(overrides);
    const before = await secretOf(w, 'alice');
    const kid1 = await primarySecretKid(w.t, w.admin);
    // An application's data key under the same key: it is promised destruction at destroy-after.
    const context = Buffer.from('tenant=42');
    const dataKey = await call(w.t.pop.generateDataKey, w.t.pop, { keyLengthBits: 0, context }, w.admin);
    await call(w.t.pop.rotateKeys, w.t.pop, { kinds: [KeyKind.KEY_KIND_SECRET] }, w.admin);
    w.clock.advance(10 * MIN);
    await w.t.sts.ring.maintain();
    expect(await primarySecretKid(w.t, w.admin)).not.toBe(kid1);
    expect(Buffer.from((await call(w.t.pop.unwrap, w.t.pop, { wrappedKey: dataKey.wrappedKey, context }, w.admin)).plaintext)).toEqual(Buffer.from(dataKey.plaintext));

    // Re-wrapping user secrets fails (say the node doing it lost its store): alice's stays under kid1.
    const breakRewrap = (t: TestSts) => {
      const durable = t.sts.store.durable;
      const replace = durable.replaceIfSame.bind(durable);
      durable.replaceIfSame = async (ns, id, expected, next) => {
        if (ns === 'user_secret') throw new Error('store unavailable');
        return replace(ns, id, expected, next);
      };
    };
    breakRewrap(w.t);
    await expect(w.t.sts.rewrapUserSecrets()).rejects.toThrow('store unavailable');
    expect(wrappedKid((await storedSecrets(w.t))[0]!.value)).toBe(kid1);

    // Past kid1's destroy-after (validity 60 min + legacy 30 min): the maintenance keeps it, DECRYPT_ONLY.
    w.clock.set(T0 + 91 * MIN);
    await w.t.sts.ring.maintain();
    const listed = async (t: TestSts) => (await call(t.pop.listKeys, t.pop, { kind: KeyKind.KEY_KIND_SECRET, includeDestroyed: true }, w.admin)).keys.find((k) => k.kid === kid1)!;
    const held = await listed(w.t);
    expect(held.state).toBe(KeyState.KEY_STATE_DECRYPT_ONLY);
    expect(held.destroyAfterTime!.getTime()).toBeLessThan(w.clock.now());
    const blocked = (t: TestSts) => t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 'key.destruction_blocked');
    expect(blocked(w.t)).toEqual([expect.objectContaining({ level: 'error', kid: kid1, kind: 'secret', records: 1 })]);
    const metrics = await (await fetch(`http://127.0.0.1:${w.t.sts.metricsPort}/metrics`)).text();
    expect(metrics).toContain(`sts_key_destruction_blocked{kind="secret",kid="${kid1}"} 1`);
    expect(await secretOf(w, 'alice')).toEqual(before);
    expect(w.t.logs.join('\n')).not.toContain(before.toString('base64url'));
    // The hold is for user secrets only: the application's data key is gone, as for any destroyed key.
    const unwrap = await callError(call(w.t.pop.unwrap, w.t.pop, { wrappedKey: dataKey.wrappedKey, context }, w.admin));
    expect([unwrap.code, unwrap.details]).toEqual([status.INVALID_ARGUMENT, 'unwrap failed']);

    // The next maintenance tries again (logging once per run) and keeps it again.
    w.clock.advance(MIN);
    await w.t.sts.ring.maintain();
    expect(blocked(w.t)).toHaveLength(2);
    expect((await listed(w.t)).state).toBe(KeyState.KEY_STATE_DECRYPT_ONLY);
    expect(await secretOf(w, 'alice')).toEqual(before);

    // A restart, where re-wrapping works: the start-up maintenance (guarded like every other) re-wraps the
    // straggler, then destroys kid1; the secret is the same.
    const dataDir = w.t.dataDir;
    await w.t.stop();
    const t2 = await startSts(w.clock, overrides, dataDir);
    expect(wrappedKid((await storedSecrets(t2))[0]!.value)).toBe(await primarySecretKid(t2, w.admin));
    expect((await listed(t2)).state).toBe(KeyState.KEY_STATE_DESTROYED);
    expect((JSON.parse((await t2.sts.store.durable.get('key', kid1))!) as Record<string, unknown>).sealed).toBeUndefined();
    expect(blocked(t2)).toEqual([]);
    expect(await secretOf({ ...w, t: t2 }, 'alice')).toEqual(before);
  });

  it('once the straggler is re-wrapped, the next maintenance destroys the key', async () => {
    const w = await world({ ...ROTATION, 'pop.rotationCheckIntervalMs': 15 * MIN });
    const before = await secretOf(w, 'alice');
    const kid1 = await primarySecretKid(w.t, w.admin);
    await call(w.t.pop.rotateKeys, w.t.pop, { kinds: [KeyKind.KEY_KIND_SECRET] }, w.admin);
    w.clock.advance(10 * MIN);
    await w.t.sts.ring.maintain();
    const durable = w.t.sts.store.durable;
    const replace = durable.replaceIfSame.bind(durable);
    durable.replaceIfSame = async (ns, id, expected, next) => {
      if (ns === 'user_secret') return false; // lost every race: the record never moves
      return replace(ns, id, expected, next);
    };
    w.clock.set(T0 + 91 * MIN);
    await w.t.sts.ring.maintain();
    const state = async () => (await call(w.t.pop.listKeys, w.t.pop, { kind: KeyKind.KEY_KIND_SECRET, includeDestroyed: true }, w.admin)).keys.find((k) => k.kid === kid1)!.state;
    expect(await state()).toBe(KeyState.KEY_STATE_DECRYPT_ONLY);
    expect(await secretOf(w, 'alice')).toEqual(before);
    durable.replaceIfSame = replace;
    expect(await w.t.sts.rewrapUserSecrets()).toEqual({ rewrapped: 1, unchanged: 0, failed: 0 });
    await w.t.sts.ring.maintain();
    expect(await state()).toBe(KeyState.KEY_STATE_DESTROYED);
    expect(await secretOf(w, 'alice')).toEqual(before);
  });
});

describe('management key rotation on the maintenance timer', () => {
  it('the periodic maintenance re-wraps after the new secret key becomes primary', async () => {
    const w = await world({ ...ROTATION, 'pop.rotationCheckIntervalMs': 1000 });
    const secret = await secretOf(w, 'alice');
    await call(w.t.pop.rotateKeys, w.t.pop, { kinds: [KeyKind.KEY_KIND_SECRET] }, w.admin);
    w.clock.advance(10 * MIN);
    const kid2 = await primarySecretKid(w.t, w.admin);
    const deadline = Date.now() + 10_000;
    let kid = '';
    while (Date.now() < deadline) {
      kid = wrappedKid((await storedSecrets(w.t))[0]!.value);
      if (kid === kid2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(kid).toBe(kid2);
    expect(await secretOf(w, 'alice')).toEqual(secret);
  });
});

describe('ExchangeToken (RFC 8693)', () => {
  it('issues an STS-signed JWT for the resource server with sub, act, may_act and the encrypted secret', async () => {
    const w = await world();
    const secret = await secretOf(w, 'alice');
    const mayAct = { sub: 'gateway' };
    const res = await call(
      w.t.secret.exchangeToken,
      w.t.secret,
      {
        grantType: EXCHANGE,
        subjectToken: await idToken(w, { sub: 'alice', claims: { may_act: mayAct } }),
        subjectTokenType: JWT_TYPE,
        actorToken: await idToken(w, { sub: 'gateway' }),
        actorTokenType: 'urn:ietf:params:oauth:token-type:access_token',
        requestedTokenType: JWT_TYPE,
        resource: [RS_ID],
        audience: [AUD],
        scope: 'orders.read orders.write',
      },
      w.rsToken,
    );
    expect(res).toMatchObject({ issuedTokenType: JWT_TYPE, tokenType: 'N_A', expiresIn: 300, scope: 'orders.read orders.write' });

    // Verified offline with STS's published keys, as a resource server would.
    const cache = new JwksCache(() => call(w.t.pop.getJwks, w.t.pop, {}), { now: () => w.clock.now() });
    const { payload, header } = await cache.verifyToken(res.accessToken);
    expect(header).toMatchObject({ typ: 'sts-exchange+jwt' });
    const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    const now = Math.floor(T0 / 1000);
    expect(claims).toMatchObject({ iss: 'urn:sts:local', sub: 'alice', aud: RS_ID, iat: now, exp: now + 300, act: { sub: 'gateway', iss: w.idp.issuer }, may_act: mayAct, scope: 'orders.read orders.write' });
    expect(typeof claims.jti).toBe('string');
    expect(await open(w, claims.secret_jwe as string)).toEqual(secret);

    // Without an actor: no act claim; a second exchange has a new jti and the same secret.
    const plain = await call(w.t.secret.exchangeToken, w.t.secret, { grantType: EXCHANGE, subjectToken: await idToken(w), subjectTokenType: JWT_TYPE, actorToken: '', actorTokenType: '', requestedTokenType: '', resource: [], audience: [], scope: '' }, w.rsToken);
    const plainClaims = JSON.parse(new TextDecoder().decode((await cache.verifyToken(plain.accessToken)).payload)) as Record<string, unknown>;
    expect(plainClaims.act).toBeUndefined();
    expect(plainClaims.may_act).toBeUndefined();
    expect(plainClaims.jti).not.toBe(claims.jti);
    expect(await open(w, plainClaims.secret_jwe as string)).toEqual(secret);
    expect(await storedSecrets(w.t)).toHaveLength(1);
  });

  it('puts the RFC 8693 error name in sts-oauth-error and creates no secret', async () => {
    const w = await world();
    const other = await createApp(w.t, w.admin, 'not-a-resource-server');
    const good = await idToken(w, { sub: 'alice' });
    const base = { grantType: EXCHANGE, subjectToken: good, subjectTokenType: JWT_TYPE, actorToken: '', actorTokenType: '', requestedTokenType: '', resource: [] as string[], audience: [] as string[], scope: '' };
    const cases: { name: string; req: Partial<typeof base>; bearer?: string | undefined; code: status; oauth: string; details: string }[] = [
      { name: 'missing grant_type', req: { grantType: '' }, code: status.INVALID_ARGUMENT, oauth: 'invalid_request', details: 'grant_type: is required' },
      { name: 'other grant_type', req: { grantType: 'authorization_code' }, code: status.INVALID_ARGUMENT, oauth: 'unsupported_grant_type', details: 'grant_type: must be' },
      { name: 'missing subject_token', req: { subjectToken: '' }, code: status.INVALID_ARGUMENT, oauth: 'invalid_request', details: 'subject_token: is required' },
      { name: 'malformed subject_token', req: { subjectToken: 'garbage' }, code: status.INVALID_ARGUMENT, oauth: 'invalid_request', details: 'subject_token: the subject token is not a JWT' },
      { name: 'saml subject_token_type', req: { subjectTokenType: 'urn:ietf:params:oauth:token-type:saml2' }, code: status.INVALID_ARGUMENT, oauth: 'unsupported_token_type', details: 'subject_token_type: must be' },
      { name: 'requested access_token', req: { requestedTokenType: 'urn:ietf:params:oauth:token-type:access_token' }, code: status.INVALID_ARGUMENT, oauth: 'unsupported_token_type', details: 'requested_token_type' },
      { name: 'actor without type', req: { actorToken: good }, code: status.INVALID_ARGUMENT, oauth: 'invalid_request', details: 'actor_token_type: is required with actor_token' },
      { name: 'foreign audience', req: { audience: [AUD, 'api://elsewhere'] }, code: status.INVALID_ARGUMENT, oauth: 'invalid_target', details: `audience[1]: not a target of resource server ${RS_ID}` },
      { name: 'foreign resource', req: { resource: ['https://elsewhere.example/'] }, code: status.INVALID_ARGUMENT, oauth: 'invalid_target', details: 'resource[0]' },
      { name: 'bad scope', req: { scope: 'a  "b"' }, code: status.INVALID_ARGUMENT, oauth: 'invalid_scope', details: 'scope' },
      { name: 'expired subject token', req: { subjectToken: await idToken(w, { exp: -300, iat: -900 }) }, code: status.UNAUTHENTICATED, oauth: 'invalid_grant', details: 'subject token expired' },
      { name: 'expired actor token', req: { actorToken: await idToken(w, { sub: 'gw', exp: -300, iat: -900 }), actorTokenType: JWT_TYPE }, code: status.UNAUTHENTICATED, oauth: 'invalid_grant', details: 'actor token expired' },
      { name: 'token for another audience', req: { subjectToken: await idToken(w, { aud: OTHER_AUD }) }, code: status.PERMISSION_DENIED, oauth: 'invalid_grant', details: 'may not present tokens for this audience' },
      { name: 'caller not a resource server', req: {}, bearer: other, code: status.PERMISSION_DENIED, oauth: 'unauthorized_client', details: 'is not a registered resource server' },
      { name: 'no credential', req: {}, bearer: undefined, code: status.UNAUTHENTICATED, oauth: 'invalid_client', details: 'missing credential' },
    ];
    for (const c of cases) {
      const e = await callError(call(w.t.secret.exchangeToken, w.t.secret, { ...base, ...c.req }, 'bearer' in c ? c.bearer : w.rsToken));
      expect({ case: c.name, code: status[e.code], oauth: e.metadata.get('sts-oauth-error') }, e.details).toEqual({ case: c.name, code: status[c.code], oauth: [c.oauth] });
      expect(e.details, c.name).toContain(c.details);
    }
    expect(await storedSecrets(w.t)).toHaveLength(0);
    // GetUserSecret errors carry no OAuth name.
    const plain = await callError(getSecret(w, 'garbage'));
    expect(plain.metadata.get('sts-oauth-error')).toEqual([]);
  });
});

describe('registry administration', () => {
  it('Put/List/Delete identity providers and resource servers, admin only', async () => {
    const w = await world();
    const stored = await putIdp(w, {
      issuer: 'https://idp.example/realms/a',
      jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: w.idp.keys }) },
      audiences: ['x', 'x', 'y'],
      algorithms: ['ES256', 'EdDSA'],
      clockSkew: { seconds: 30, nanos: 0 },
      subjectClaim: 'oid',
      securityLevel: 2,
    });
    expect(stored.identityProvider).toMatchObject({ issuer: 'https://idp.example/realms/a', audiences: ['x', 'y'], algorithms: ['ES256', 'EdDSA'], clockSkew: { seconds: 30, nanos: 0 }, subjectClaim: 'oid', securityLevel: 2 });
    const list = await call(w.t.secret.listIdentityProviders, w.t.secret, {}, w.admin);
    expect(list.identityProviders.map((p) => p.issuer)).toEqual([w.idp.issuer, 'https://idp.example/realms/a'].sort());
    expect(list.identityProviders.find((p) => p.issuer === w.idp.issuer)!.jwksSource).toEqual({ $case: 'jwksUri', value: w.idp.jwksUri });

    const cert = await putRs(w, { resourceServerId: 'by-cert', credential: { $case: 'certificateSha256', value: 'AB:'.repeat(31) + 'AB' }, encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify(w.rs.jwks) } });
    expect(cert.resourceServer!.credential).toEqual({ $case: 'certificateSha256', value: 'ab'.repeat(32) });
    const rsList = await call(w.t.secret.listResourceServers, w.t.secret, {}, w.admin);
    expect(rsList.resourceServers.map((r) => r.resourceServerId)).toEqual(['by-cert', RS_ID]);

    // One application identifies one resource server.
    const dup = await callError(putRs(w, { resourceServerId: 'second', credential: { $case: 'applicationId', value: RS_APP }, encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify(w.rs.jwks) } }));
    expectStatus(dup, status.ALREADY_EXISTS, 'already_exists', `resource_server.application_id: application ${RS_APP} already identifies resource server ${RS_ID}`);

    // Only administrators.
    for (const [bearer, code] of [[w.rsToken, status.PERMISSION_DENIED], [undefined, status.UNAUTHENTICATED]] as const) {
      expect((await callError(call(w.t.secret.listIdentityProviders, w.t.secret, {}, bearer))).code).toBe(code);
      expect((await callError(call(w.t.secret.deleteResourceServer, w.t.secret, { resourceServerId: RS_ID }, bearer))).code).toBe(code);
      expect((await callError(putIdp({ t: w.t, admin: bearer as string }, { issuer: 'https://x.example', jwksSource: { $case: 'jwksUri', value: 'https://x.example/jwks' } }))).code).toBe(code);
    }

    // Deleting the provider makes its tokens unknown; deleting the resource server makes its caller unknown.
    await call(w.t.secret.deleteIdentityProvider, w.t.secret, { issuer: w.idp.issuer }, w.admin);
    expectStatus(await callError(getSecret(w, await idToken(w))), status.INVALID_ARGUMENT, 'invalid_argument', 'not a trusted identity provider');
    expectStatus(await callError(call(w.t.secret.deleteIdentityProvider, w.t.secret, { issuer: w.idp.issuer }, w.admin)), status.NOT_FOUND, 'not_found', `issuer: identity provider ${w.idp.issuer} not found`);
    await call(w.t.secret.deleteResourceServer, w.t.secret, { resourceServerId: RS_ID }, w.admin);
    expectStatus(await callError(call(w.t.secret.deleteResourceServer, w.t.secret, { resourceServerId: RS_ID }, w.admin)), status.NOT_FOUND, 'not_found', `resource server ${RS_ID} not found`);
    await putIdp(w, { issuer: w.idp.issuer, jwksSource: { $case: 'jwksUri', value: w.idp.jwksUri } });
    expectStatus(await callError(getSecret(w, await idToken(w))), status.PERMISSION_DENIED, 'permission_denied', 'is not a registered resource server');
    expect(await storedSecrets(w.t)).toHaveLength(0);
  });

  it('refuses invalid registrations with INVALID_ARGUMENT naming the field', async () => {
    const w = await world();
    const pub = w.idp.keys[0]!;
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const privateJwk = await exportJWK(privateKey);
    const uri = { $case: 'jwksUri' as const, value: 'https://idp.example/jwks' };
    const idpCases: [Partial<IdentityProvider> & { issuer: string }, string][] = [
      [{ issuer: 'https://a.example', jwksSource: uri, algorithms: ['none'] }, 'identity_provider.algorithms[0]: "none" is refused'],
      [{ issuer: 'https://a.example', jwksSource: uri, algorithms: ['ES256', 'HS256'] }, 'identity_provider.algorithms[1]: "HS256" is refused: HMAC'],
      [{ issuer: 'https://a.example', jwksSource: uri, algorithms: ['RSA1_5'] }, 'identity_provider.algorithms[0]: unsupported algorithm'],
      [{ issuer: 'https://a.example', jwksSource: uri, algorithms: [] }, 'identity_provider.algorithms: must name at least one'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [privateJwk] }) } }, 'identity_provider.jwks_json: keys[0] is a private key (has "d")'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }) } }, 'identity_provider.jwks_json: keys[0] is a symmetric key'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksJson', value: '{"keys": [' } }, 'identity_provider.jwks_json: is not valid JSON'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksJson', value: '{"k": []}' } }, 'identity_provider.jwks_json: must be a JWKS'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [{ ...pub, x: 'AAAA' }] }) } }, 'identity_provider.jwks_json: keys[0] is not a valid public key'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [pub, pub] }) } }, 'identity_provider.jwks_json: keys[1] repeats kid "idp-1"'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksUri', value: 'ftp://idp.example/jwks' } }, 'identity_provider.jwks_uri: must be an https URL'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksUri', value: 'http://idp.example/jwks' } }, 'identity_provider.jwks_uri: must be an https URL (plain http only for 127.0.0.1'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksUri', value: 'https://user:pw@idp.example/jwks' } }, 'identity_provider.jwks_uri: must not contain credentials'],
      [{ issuer: 'https://a.example', jwksSource: { $case: 'jwksUri', value: 'jwks' } }, 'identity_provider.jwks_uri: must be an absolute https URL'],
      [{ issuer: 'https://a.example' }, 'identity_provider.jwks_source: give jwks_uri or jwks_json'],
      [{ issuer: '', jwksSource: uri }, 'identity_provider.issuer: must be 1 to 512 characters'],
      [{ issuer: 'no uri', jwksSource: uri }, 'identity_provider.issuer: must be an absolute URI'],
      [{ issuer: 'https://a.example', jwksSource: uri, audiences: [] }, 'identity_provider.audiences: must hold 1 to 50 values'],
      [{ issuer: 'https://a.example', jwksSource: uri, audiences: ['ok', ''] }, 'identity_provider.audiences[1]: must be 1 to 512 characters'],
      [{ issuer: 'https://a.example', jwksSource: uri, clockSkew: { seconds: 3600, nanos: 0 } }, 'identity_provider.clock_skew: must be at most 600 s'],
      [{ issuer: 'https://a.example', jwksSource: uri, clockSkew: { seconds: -1, nanos: 0 } }, 'identity_provider.clock_skew: must not be negative'],
      [{ issuer: 'https://a.example', jwksSource: uri, securityLevel: 5 }, 'identity_provider.security_level: must be 0 to 4'],
      [{ issuer: 'https://a.example', jwksSource: uri, subjectClaim: 'has space' }, 'identity_provider.subject_claim'],
    ];
    for (const [p, details] of idpCases) expectStatus(await callError(putIdp(w, p)), status.INVALID_ARGUMENT, 'invalid_argument', details);
    expect(idpCases.length).toBeGreaterThan(20);

    const encJson = { $case: 'jwksJson' as const, value: JSON.stringify(w.rs.jwks) };
    const app = { $case: 'applicationId' as const, value: RS_APP };
    const rsCases: [Partial<ResourceServer> & { resourceServerId: string }, status, string][] = [
      [{ resourceServerId: '', credential: app, encryptionKeySource: encJson }, status.INVALID_ARGUMENT, 'resource_server.resource_server_id: must be 1 to 128 characters'],
      [{ resourceServerId: 'x', encryptionKeySource: encJson }, status.INVALID_ARGUMENT, 'resource_server.credential: give application_id or certificate_sha256'],
      [{ resourceServerId: 'x', credential: { $case: 'certificateSha256', value: 'abc' }, encryptionKeySource: encJson }, status.INVALID_ARGUMENT, 'resource_server.certificate_sha256: must be the SHA-256 fingerprint'],
      [{ resourceServerId: 'x', credential: { $case: 'applicationId', value: 'bad id!' }, encryptionKeySource: encJson }, status.INVALID_ARGUMENT, 'resource_server.application_id'],
      [{ resourceServerId: 'x', credential: app }, status.INVALID_ARGUMENT, 'resource_server.encryption_key_source: give jwks_uri or jwks_json'],
      [{ resourceServerId: 'x', credential: app, encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [pub] }) } }, status.INVALID_ARGUMENT, 'resource_server.jwks_json: has no key usable for encryption'],
      [{ resourceServerId: 'x', credential: app, encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [{ ...w.rs.jwks.keys[0], d: privateJwk.d }] }) } }, status.INVALID_ARGUMENT, 'resource_server.jwks_json: keys[0] is a private key (has "d")'],
      [{ resourceServerId: 'x', credential: app, encryptionKeySource: { $case: 'jwksUri', value: 'http://rs.example/jwks' } }, status.INVALID_ARGUMENT, 'resource_server.jwks_uri: must be an https URL'],
      [{ resourceServerId: 'x', credential: app, encryptionKeySource: encJson, audiences: [] }, status.INVALID_ARGUMENT, 'resource_server.audiences: must hold 1 to 50 values'],
      [{ resourceServerId: 'x', credential: { $case: 'applicationId', value: 'no-such-app' }, encryptionKeySource: encJson }, status.NOT_FOUND, 'resource_server.application_id: application no-such-app not found'],
    ];
    for (const [r, code, details] of rsCases) {
      const e = await callError(putRs(w, r));
      expect(status[e.code], e.details).toBe(status[code]);
      expect(e.details).toContain(details);
    }
    // Nothing was stored by the refused calls.
    expect((await call(w.t.secret.listIdentityProviders, w.t.secret, {}, w.admin)).identityProviders).toHaveLength(1);
    expect((await call(w.t.secret.listResourceServers, w.t.secret, {}, w.admin)).resourceServers).toHaveLength(1);
  });
});

describe('mTLS resource servers', () => {
  it('a resource server identified by its client certificate gets secrets without an application token', async () => {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    const pki = mkdtempSync(join(tmpdir(), 'sts-secret-pki-'));
    cleanups.push(async () => rmSync(pki, { recursive: true, force: true }));
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: pki, stdio: ['ignore', 'ignore', 'pipe'] });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=ca', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    for (const [name, ext] of [['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'], ['client', 'extendedKeyUsage=clientAuth']] as const) {
      openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      writeFileSync(join(pki, `${name}.ext`), `basicConstraints=CA:FALSE\n${ext}\n`);
      openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${name}.pem`, '-extfile', `${name}.ext`);
    }
    const read = (f: string) => readFileSync(join(pki, f));
    const der = Buffer.from(read('client.pem').toString().replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const fingerprint = createHash('sha256').update(der).digest('hex');

    const clock = new ManualClock(T0);
    const t = await startSts(clock, { 'tls.certFile': join(pki, 'server.pem'), 'tls.keyFile': join(pki, 'server.key'), 'tls.clientCaFile': join(pki, 'ca.pem'), 'tls.requireClientCert': false });
    const tls = (withCert: boolean) => {
      const c = new SecretServiceClient(t.address, withCert ? credentials.createSsl(read('ca.pem'), read('client.key'), read('client.pem')) : credentials.createSsl(read('ca.pem')));
      cleanups.push(async () => c.close());
      return c;
    };
    const adminClient = tls(false);
    const admin = adminToken(t);
    const idp = await startIdp();
    const rs = await resourceServerKeys();
    await call(adminClient.putIdentityProvider, adminClient, { identityProvider: { issuer: idp.issuer, jwksSource: { $case: 'jwksUri', value: idp.jwksUri }, audiences: [AUD], algorithms: ['ES256'], subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false } }, admin);
    await call(adminClient.putResourceServer, adminClient, { resourceServer: { resourceServerId: 'cert-rs', credential: { $case: 'certificateSha256', value: fingerprint }, audiences: [AUD], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify(rs.jwks) } } }, admin);
    const w = { t, clock, idp, admin, rsToken: '', rs };

    const withCert = tls(true);
    const res = await getSecretAs(withCert, await idToken(w), undefined);
    expect(res.subject).toBe('alice');
    expect(await open(w, res.secretJwe)).toHaveLength(32);
    expect(t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.event === 'secret.released')).toMatchObject({ resourceServer: 'cert-rs' });
    // Without the certificate (and without a token) the same call is refused.
    expectStatus(await callError(getSecretAs(adminClient, await idToken(w), undefined)), status.UNAUTHENTICATED, 'unauthenticated');
  });
});

describe('SessionService.CreateUserFromThirdPartyToken', () => {
  it("creates the user with the application's default roles, returns a redeemable ticket, and reuses the user", async () => {
    const w = await world();
    // Tokens for the portal name its client id at the provider ("portal-client") in "aud".
    await putIdp(w, { issuer: w.idp.issuer, jwksSource: { $case: 'jwksUri', value: w.idp.jwksUri }, securityLevel: 2, applicationAudiences: [{ applicationId: 'portal', audiences: ['portal-client'] }] });
    const role = { applicationId: 'portal', organizationName: 'ACME', roleName: 'reader', roleValue: 'true' };
    const portal = await createApp(w.t, w.admin, 'portal', { defaultRoles: [role] });
    const claims = { preferred_username: 'carol.c', given_name: 'Carol', family_name: 'Carlsen', email: 'carol@example.com' };
    const forPortal = (o: TokenOptions = {}) => idToken(w, { aud: 'portal-client', ...o, claims: { jti: randomBytes(16).toString('base64url'), ...o.claims } });
    const first = await call(w.t.session.createUserFromThirdPartyToken, w.t.session, { thirdPartyToken: await forPortal({ sub: 'carol', claims }), ticketApplicationId: '' }, portal);
    expect(first.userCreated).toBe(true);
    expect(first.userToken).toMatchObject({ username: 'carol.c', securityLevel: 2, applicationId: 'portal', roles: [role] });
    const redeemed = await call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: first.userTicket }, portal);
    expect(redeemed.userToken).toMatchObject({ uid: first.userToken!.uid, username: 'carol.c', roles: [role] });
    // One-time ticket.
    expect((await callError(call(w.t.session.getUserTokenByUserTicket, w.t.session, { userTicket: first.userTicket }, portal))).code).toBe(status.NOT_FOUND);

    w.clock.advance(MIN);
    const second = await call(w.t.session.createUserFromThirdPartyToken, w.t.session, { thirdPartyToken: await forPortal({ sub: 'carol', claims }), ticketApplicationId: '' }, portal);
    expect(second.userCreated).toBe(false);
    expect(second.userToken!.uid).toBe(first.userToken!.uid);

    // The provider's checks apply here too.
    const expired = await callError(call(w.t.session.createUserFromThirdPartyToken, w.t.session, { thirdPartyToken: await forPortal({ sub: 'carol', exp: -300, iat: -900 }), ticketApplicationId: '' }, portal));
    expectStatus(expired, status.UNAUTHENTICATED, 'token_invalid', 'third-party token expired');
    const unknown = await callError(call(w.t.session.createUserFromThirdPartyToken, w.t.session, { thirdPartyToken: await forPortal({ iss: 'https://rogue.example' }), ticketApplicationId: '' }, portal));
    expectStatus(unknown, status.INVALID_ARGUMENT, 'invalid_argument', 'third_party_token: the third-party token issuer is not a trusted identity provider');
  });
});
