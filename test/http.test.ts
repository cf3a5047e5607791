/**
 * The HTTP listener (src/http) of a real STS on 127.0.0.1:0: the JWKS is GetJwks's to the byte, with its
 * cache lifetime and ETag/304; discovery; /healthz following gRPC health; 404/405/413/431/408/400; CORS for
 * listed origins only, preflights included; metrics by route and status; and the options' validation.
 */
import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import type { OptionName } from '../src/config/defaults.js';
import { loadConfig } from '../src/config/load.js';
import { StartupError } from '../src/errors.js';
import { KeyKind } from '../src/gen/sts/v1/pop.js';
import { USER_TOKEN_CLAIMS } from '../src/http/discovery.js';
import { noneMatch } from '../src/http/http-server.js';
import { call } from './helpers/call.js';
import { addRole, adminToken, createApp, createUser } from './helpers/directory.js';
import { httpGet } from './helpers/http.js';
import { FAST_ROTATION, type TestSts, startTestSts } from './helpers/server.js';

const MIN = 60_000;
const JWKS = '/.well-known/jwks.json';
const DISCOVERY = '/.well-known/openid-configuration';

type Overrides = Partial<Record<OptionName, string | number | boolean>>;

const started: TestSts[] = [];
async function sts(overrides: Overrides = {}, clock?: ManualClock): Promise<TestSts> {
  const t = await startTestSts({ overrides, ...(clock ? { clock } : {}) });
  started.push(t);
  return t;
}
afterAll(async () => {
  for (const t of started.splice(0)) await t.stop(true);
});
const portOf = (t: TestSts): number => t.sts.http!.port;

/** max-age of a Cache-Control header, in seconds. */
const maxAge = (cacheControl: string | undefined): number => Number(/(?:^|,\s*)max-age=(\d+)/.exec(cacheControl ?? '')?.[1] ?? NaN);

describe('JWKS and discovery', () => {
  let t: TestSts;
  let clock: ManualClock;
  beforeAll(async () => {
    clock = new ManualClock(Date.UTC(2026, 0, 1));
    t = await sts({ ...FAST_ROTATION, 'metrics.address': '127.0.0.1:0' }, clock);
  });

  it('serves the JWKS GetJwks publishes, byte for byte, with the same cache lifetime and an ETag', async () => {
    const res = await httpGet(portOf(t), JWKS);
    const grpc = await call(t.pop.getJwks, t.pop, {});
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/jwk-set+json');
    expect(res.body).toBe(grpc.jwksJson);
    expect(res.headers['cache-control']).toMatch(/^public, max-age=\d+$/);
    expect(maxAge(res.headers['cache-control'])).toBe(grpc.maxAge!.seconds);
    expect(maxAge(res.headers['cache-control'])).toBe(60); // pop.jwksMaxAgeMs of FAST_ROTATION
    expect(res.headers.etag).toMatch(/^"[A-Za-z0-9_-]{43}"$/);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    // Public keys only: no private member of any JWK.
    for (const k of JSON.parse(res.body).keys as Record<string, unknown>[]) for (const p of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) expect(k).not.toHaveProperty(p);
  });

  it('answers If-None-Match with 304 (ETag and Cache-Control, no body), a HEAD without a body', async () => {
    const first = await httpGet(portOf(t), JWKS);
    const etag = first.headers.etag!;
    for (const inm of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const res = await httpGet(portOf(t), JWKS, { headers: { 'if-none-match': inm } });
      expect([inm, res.status, res.body]).toEqual([inm, 304, '']);
      expect(res.headers.etag).toBe(etag);
      expect(res.headers['cache-control']).toBe(first.headers['cache-control']);
    }
    const other = await httpGet(portOf(t), JWKS, { headers: { 'if-none-match': '"not-the-etag"' } });
    expect([other.status, other.body]).toEqual([200, first.body]);
    const head = await httpGet(portOf(t), JWKS, { method: 'HEAD' });
    expect([head.status, head.body, head.headers['content-length'], head.headers.etag]).toEqual([200, '', String(Buffer.byteLength(first.body)), etag]);
  });

  it('follows the rotation schedule: max-age never outlives the next key change, a new key changes the ETag, PRIMARY keys come first', async () => {
    const before = await httpGet(portOf(t), JWKS);
    // On-demand rotation at T0+1min: new keys STAGED until T0+11min (stagingLeadMs 10 min), published at once.
    clock.advance(MIN);
    const created = (await call(t.pop.rotateKeys, t.pop, { kinds: [KeyKind.KEY_KIND_ENCRYPTION, KeyKind.KEY_KIND_SIGNING] }, adminToken(t))).created;
    const staged = await httpGet(portOf(t), JWKS, { headers: { 'if-none-match': before.headers.etag! } });
    expect(staged.status).toBe(200);
    expect(staged.headers.etag).not.toBe(before.headers.etag);
    const stagedKids = (JSON.parse(staged.body).keys as { kid: string }[]).map((k) => k.kid);
    for (const c of created) expect(stagedKids).toContain(c.kid);

    // 20 s before the staged keys become PRIMARY, caches may keep the JWKS for 20 s only, on both protocols.
    clock.advance(10 * MIN - 20_000);
    const late = await httpGet(portOf(t), JWKS);
    const grpc = await call(t.pop.getJwks, t.pop, {});
    expect(maxAge(late.headers['cache-control'])).toBe(20);
    expect(grpc.maxAge!.seconds).toBe(20);
    expect(late.body).toBe(grpc.jwksJson);

    clock.advance(20_000);
    const after = await httpGet(portOf(t), JWKS);
    const now = await call(t.pop.getJwks, t.pop, {});
    expect(after.body).toBe(now.jwksJson);
    const keys = JSON.parse(after.body).keys as { kid: string; use: string }[];
    const newEnc = created.find((c) => c.kind === KeyKind.KEY_KIND_ENCRYPTION)!.kid;
    const newSig = created.find((c) => c.kind === KeyKind.KEY_KIND_SIGNING)!.kid;
    expect([now.primaryEncryptionKid, now.primarySigningKid]).toEqual([newEnc, newSig]);
    // The first key of each use is the PRIMARY one (clients that know no key states encrypt to it).
    expect(keys.find((k) => k.use === 'enc')!.kid).toBe(newEnc);
    expect(keys.find((k) => k.use === 'sig')!.kid).toBe(newSig);
    // The old signing key still verifies (DECRYPT_ONLY, published); the old encryption key is no longer offered.
    expect(keys.filter((k) => k.use === 'sig')).toHaveLength(2);
    expect(keys.filter((k) => k.use === 'enc')).toHaveLength(1);
  });

  it('publishes discovery: the issuer, a jwks_uri that serves the JWKS, the signing algorithms and no endpoint STS lacks', async () => {
    const res = await httpGet(portOf(t), DISCOVERY);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json');
    const doc = JSON.parse(res.body) as Record<string, unknown>;
    expect(doc.issuer).toBe('urn:sts:local');
    expect(doc.jwks_uri).toBe(`http://127.0.0.1:${portOf(t)}${JWKS}`);
    const viaUri = await fetch(doc.jwks_uri as string);
    expect(await viaUri.text()).toBe((await call(t.pop.getJwks, t.pop, {})).jwksJson);
    const sigAlgs = (JSON.parse((await httpGet(portOf(t), JWKS)).body).keys as { use: string; alg: string }[]).filter((k) => k.use === 'sig').map((k) => k.alg);
    expect(doc.id_token_signing_alg_values_supported).toEqual([...new Set(sigAlgs)].sort());
    expect(doc.id_token_signing_alg_values_supported).toEqual(['EdDSA']);
    expect(Object.keys(doc).sort()).toEqual(['claims_supported', 'id_token_signing_alg_values_supported', 'issuer', 'jwks_uri', 'subject_types_supported']);
    expect(maxAge(res.headers['cache-control'])).toBeGreaterThan(0);
    const again = await httpGet(portOf(t), DISCOVERY, { headers: { 'if-none-match': res.headers.etag! } });
    expect([again.status, again.body]).toEqual([304, '']);
  });

  it('lists every claim a real user token carries in claims_supported', async () => {
    const { token } = await createApp(t, 'claims-app', { personalFieldsAllowed: true });
    const uid = await createUser(t, 'carol', 'a long enough password');
    await addRole(t, uid, 'claims-app', 'reader');
    const res = await call(t.session.logonUser, t.session, { credential: { $case: 'userCredential', value: { username: 'carol', password: 'a long enough password' } }, ticketApplicationId: '' }, token);
    const claims = JSON.parse(Buffer.from(res.userTokenJwt.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    expect(claims).toHaveProperty('email');
    expect(Object.keys(claims).length).toBeGreaterThan(12);
    for (const c of Object.keys(claims)) expect(USER_TOKEN_CLAIMS).toContain(c);
  });

  it('mirrors gRPC health on /healthz', async () => {
    const ok = await httpGet(portOf(t), '/healthz');
    expect([ok.status, JSON.parse(ok.body), ok.headers['cache-control']]).toEqual([200, { status: 'SERVING' }, 'no-store']);
    t.sts.grpc.setServing(false);
    try {
      const down = await httpGet(portOf(t), '/healthz');
      expect([down.status, JSON.parse(down.body)]).toEqual([503, { status: 'NOT_SERVING' }]);
    } finally {
      t.sts.grpc.setServing(true);
    }
    expect((await httpGet(portOf(t), '/healthz')).status).toBe(200);
  });

  it('answers 404 to every other path and 405 to methods other than GET, HEAD and OPTIONS', async () => {
    for (const path of ['/', '/jwks.json', `${JWKS}/`, '/.well-known/jwks%2Ejson', '/.WELL-KNOWN/jwks.json', '/metrics', 'http://evil.example/.well-known/jwks.json']) {
      const res = await httpGet(portOf(t), path);
      expect([path, res.status, res.headers['cache-control']]).toEqual([path, 404, 'no-store']);
    }
    // A query string does not change the route.
    expect((await httpGet(portOf(t), `${JWKS}?x=1`)).status).toBe(200);
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'TRACE']) {
      const res = await httpGet(portOf(t), JWKS, { method });
      expect([method, res.status, res.headers.allow]).toEqual([method, 405, 'GET, HEAD, OPTIONS']);
    }
    const options = await httpGet(portOf(t), JWKS, { method: 'OPTIONS' });
    expect([options.status, options.headers.allow, options.headers['access-control-allow-origin']]).toEqual([204, 'GET, HEAD, OPTIONS', undefined]);
    // The test page is on by default in dev; its absence is tested with http.testPage off below.
    expect((await httpGet(portOf(t), '/test-page')).status).toBe(200);
  });

  it('counts requests by route and status, never by raw path', async () => {
    await httpGet(portOf(t), '/secret-looking-path-123');
    const text = await (await fetch(`http://127.0.0.1:${t.sts.metricsPort}/metrics`)).text();
    const count = (route: string, status: number): number => Number(new RegExp(`sts_http_requests_total\\{route="${route.replace(/\./g, '\\.')}",status="${status}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
    expect(count(JWKS, 200)).toBeGreaterThanOrEqual(8);
    expect(count(JWKS, 304)).toBe(4);
    expect(count(JWKS, 405)).toBe(5);
    expect(count('unmatched', 404)).toBe(8);
    expect(count('/healthz', 503)).toBe(1);
    expect(text).toMatch(/sts_http_duration_seconds_count\{route="\/healthz",status="200"\} 2/);
    expect(text).not.toContain('secret-looking-path');
  });
});

describe('CORS', () => {
  const APP = 'https://app.example.com';
  let t: TestSts;
  beforeAll(async () => {
    t = await sts({ 'http.corsOrigins': `${APP}, http://localhost:3000` });
  });

  it('lets a listed origin read, with the headers a browser needs', async () => {
    for (const path of [JWKS, DISCOVERY, '/healthz']) {
      const res = await httpGet(portOf(t), path, { headers: { origin: APP } });
      expect([path, res.status, res.headers['access-control-allow-origin']]).toEqual([path, 200, APP]);
      expect(res.headers.vary).toBe('Origin');
      expect(res.headers['access-control-expose-headers']).toBe('ETag');
      expect(res.headers['access-control-allow-credentials']).toBeUndefined();
    }
    expect((await httpGet(portOf(t), JWKS, { headers: { origin: 'http://localhost:3000' } })).headers['access-control-allow-origin']).toBe('http://localhost:3000');
  });

  it('refuses any other origin with 403 and no CORS header', async () => {
    for (const origin of ['https://evil.example', 'https://app.example.com:8443', 'http://app.example.com', 'null', 'https://app.example.com.evil.example']) {
      const res = await httpGet(portOf(t), JWKS, { headers: { origin } });
      expect([origin, res.status, res.headers['access-control-allow-origin']]).toEqual([origin, 403, undefined]);
      expect(res.body).toContain('http.corsOrigins');
    }
  });

  it('needs no CORS for non-browser clients and the page\'s own origin', async () => {
    const plain = await httpGet(portOf(t), JWKS);
    expect([plain.status, plain.headers['access-control-allow-origin']]).toEqual([200, undefined]);
    const own = await httpGet(portOf(t), JWKS, { headers: { origin: `http://127.0.0.1:${portOf(t)}` } });
    expect([own.status, own.headers['access-control-allow-origin']]).toEqual([200, undefined]);
  });

  it('answers preflights: read-only methods and If-None-Match for listed origins, 403 for others', async () => {
    const ok = await httpGet(portOf(t), JWKS, { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'GET', 'access-control-request-headers': 'if-none-match' } });
    expect(ok.status).toBe(204);
    expect(ok.headers).toMatchObject({
      'access-control-allow-origin': APP,
      'access-control-allow-methods': 'GET, HEAD',
      'access-control-allow-headers': 'If-None-Match',
      'access-control-max-age': '600',
      vary: 'Origin',
    });
    const refused = await httpGet(portOf(t), JWKS, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' } });
    expect([refused.status, refused.headers['access-control-allow-origin'], refused.headers['access-control-allow-methods']]).toEqual([403, undefined, undefined]);
    const unknown = await httpGet(portOf(t), '/nothing-here', { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'GET' } });
    expect(unknown.status).toBe(404);
  });

  it('allows every origin with "*" in dev', async () => {
    const any = await sts({ 'http.corsOrigins': '*' });
    const res = await httpGet(portOf(any), JWKS, { headers: { origin: 'https://whatever.example' } });
    expect([res.status, res.headers['access-control-allow-origin']]).toEqual([200, '*']);
  });
});

describe('request limits', () => {
  let t: TestSts;
  beforeAll(async () => {
    t = await sts({ 'http.requestTimeoutMs': 1000, 'http.maxHeaderBytes': 4096, 'metrics.address': '127.0.0.1:0' });
  });

  /** Sends raw bytes on a new connection and resolves with everything the server sends until it closes. */
  function raw(data: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(portOf(t), '127.0.0.1');
      let received = '';
      socket.setTimeout(30_000, () => socket.destroy(new Error('the server neither answered nor closed the connection')));
      socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
      socket.on('close', () => resolve(received));
      socket.on('error', reject);
      socket.write(data);
    });
  }

  it('answers a request head over http.maxHeaderBytes with 431, and takes one under it', async () => {
    const over = await httpGet(portOf(t), JWKS, { headers: { 'x-pad': 'a'.repeat(5000) } });
    expect(over.status).toBe(431);
    const under = await httpGet(portOf(t), JWKS, { headers: { 'x-pad': 'a'.repeat(3000) } });
    expect(under.status).toBe(200);
  });

  it('refuses request bodies: 413 on GET, 405 on POST, closing the connection unread', async () => {
    const get = await httpGet(portOf(t), JWKS, { headers: { 'content-type': 'text/plain', 'content-length': '5' }, body: 'hello' });
    expect([get.status, get.headers.connection]).toEqual([413, 'close']);
    const post = await httpGet(portOf(t), JWKS, { method: 'POST', body: Buffer.alloc(1024 * 1024) });
    expect([post.status, post.headers.connection, post.headers.allow]).toEqual([405, 'close', 'GET, HEAD, OPTIONS']);
    // A chunked body on a keep-alive connection: answered once, then the connection closes.
    const chunked = await raw(`GET ${JWKS} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET ${JWKS} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(chunked.match(/^HTTP\/1\.1 \d+/gm)).toEqual(['HTTP/1.1 413']);
  });

  it('closes a request that does not arrive within http.requestTimeoutMs with 408', async () => {
    const answer = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('answers a malformed request with 400 and counts the refusals', async () => {
    expect(await raw('NOT HTTP AT ALL\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    const text = await (await fetch(`http://127.0.0.1:${t.sts.metricsPort}/metrics`)).text();
    for (const status of [400, 408, 431]) expect(text).toMatch(new RegExp(`sts_http_requests_total\\{route="unmatched",status="${status}"\\} [1-9]`));
    expect(text).toMatch(/sts_http_requests_total\{route="\/\.well-known\/jwks\.json",status="413"\} 2/);
  });
});

describe('options', () => {
  afterEach(() => undefined);

  it('serves no test page with http.testPage off, and no listener at all with http.address empty', async () => {
    const off = await sts({ 'http.testPage': false });
    for (const p of ['/test-page', '/test-page/page.js', '/test-page/page.css', '/test-page/favicon.svg']) expect((await httpGet(portOf(off), p)).status).toBe(404);
    expect((await httpGet(portOf(off), JWKS)).status).toBe(200);
    const none = await sts({ 'http.address': '' });
    expect(none.sts.http).toBeUndefined();
  });

  it('names the jwks_uri after http.publicUrl', async () => {
    const p = await sts({ 'http.publicUrl': 'https://sts.example.com/auth/', 'session.issuer': 'https://sts.example.com/auth' });
    const doc = JSON.parse((await httpGet(portOf(p), DISCOVERY)).body) as { issuer: string; jwks_uri: string };
    expect(doc).toMatchObject({ issuer: 'https://sts.example.com/auth', jwks_uri: `https://sts.example.com/auth${JWKS}` });
    // Its origin counts as the server's own.
    const own = await httpGet(portOf(p), JWKS, { headers: { origin: 'https://sts.example.com' } });
    expect(own.status).toBe(200);
  });

  it('fails start-up when the port is taken, naming http.address', async () => {
    const first = await sts();
    const err = await startTestSts({ overrides: { 'http.address': `127.0.0.1:${portOf(first)}` } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StartupError);
    expect((err as StartupError).message).toContain('http.address');
  });

  const prodEnv = { STS_MASTER_KEY: `k1:${Buffer.alloc(32, 7).toString('base64url')}` };
  const prod = (overrides: Overrides) => () => loadConfig({ env: prodEnv, overrides: { profile: 'prod', 'tls.certFile': '/c.pem', 'tls.keyFile': '/k.pem', ...overrides } });

  it('is off under the prod profile unless given, and prod refuses the test page, "*" and a missing or plain-http public URL', () => {
    const c = prod({})();
    expect([c['http.address'], c['http.testPage']]).toEqual(['', false]);
    expect(prod({ 'http.address': '0.0.0.0:8443', 'http.publicUrl': 'https://sts.example.com' })).not.toThrow();
    expect(prod({ 'http.address': '0.0.0.0:8443' })).toThrow(/http\.publicUrl: the prod profile/);
    expect(prod({ 'http.address': '0.0.0.0:8443', 'http.publicUrl': 'http://sts.example.com' })).toThrow(/http\.publicUrl/);
    expect(prod({ 'http.address': '0.0.0.0:8443', 'http.publicUrl': 'https://sts.example.com', 'http.corsOrigins': 'https://a.example,*' })).toThrow(/http\.corsOrigins: the prod profile refuses "\*"/);
    expect(prod({ 'http.testPage': true })).toThrow(/http\.testPage: the prod profile refuses/);
    const dev = loadConfig({ env: {} });
    expect([dev['http.address'], dev['http.testPage']]).toEqual(['127.0.0.1:8080', true]);
  });

  it('refuses malformed addresses, URLs and origins, naming the option', () => {
    const dev = (overrides: Overrides) => () => loadConfig({ env: {}, overrides });
    expect(dev({ 'http.address': 'localhost' })).toThrow(/http\.address/);
    expect(dev({ 'http.address': '127.0.0.1:70000' })).toThrow(/http\.address/);
    for (const url of ['sts.example.com', 'ftp://sts.example.com', 'https://sts.example.com/?q=1', 'https://user:pw@sts.example.com']) expect(dev({ 'http.publicUrl': url })).toThrow(/http\.publicUrl/);
    for (const origin of ['https://app.example.com/', 'https://App.example.com', 'https://app.example.com/path', 'app.example.com', 'null', 'file:///x']) {
      expect(dev({ 'http.corsOrigins': origin })).toThrow(/http\.corsOrigins/);
    }
    expect(dev({ 'http.corsOrigins': ' https://a.example.com , http://localhost:3000 ,' })).not.toThrow();
    expect(dev({ 'http.maxHeaderBytes': 100 })).toThrow(/http\.maxHeaderBytes/);
  });

  it('compares entity tags weakly (RFC 9110 section 13.1.2)', () => {
    expect(noneMatch('"a"', '"a"')).toBe(true);
    expect(noneMatch('W/"a"', '"a"')).toBe(true);
    expect(noneMatch(' "b" ,W/"a"', '"a"')).toBe(true);
    expect(noneMatch('*', '"a"')).toBe(true);
    expect(noneMatch('"b"', '"a"')).toBe(false);
    expect(noneMatch('a', '"a"')).toBe(false);
    expect(noneMatch(undefined, '"a"')).toBe(false);
  });
});
