/**
 * Issue 9, "bad input": property-based fuzzing (fast-check) of every RPC of PopService, SessionService and
 * SecretService against a real server.
 *
 * The RPCs come from the generated service definitions (`XxxServiceService`), and each request message is
 * generated from its descriptor (src/gen/sts.binpb), so a new RPC or field is fuzzed without touching this
 * file. String fields get values chosen by what the field holds (tokens get malformed JWTs/JWEs, ids get ids
 * that exist and ids that do not, secrets carry a marker) mixed with unicode, control characters, injection
 * strings and strings up to 1 MiB; numbers get negative, huge and unknown-enum values; oneofs are empty or
 * set. Half the requests are hostile throughout, half are plausible with about one hostile field per message,
 * so that hostile values also meet the checks behind the first one. Requests are sent as bytes with a raw
 * grpc-js client (identity serializer), which also sends undecodable bytes. Every call goes out with (a) no or a garbage credential, (b) a plain application token
 * (registered as a resource server, so SecretService validates the token), (c) the admin key.
 *
 * For every call: the status is one of ALLOWED (never INTERNAL, UNKNOWN, a hang or a crash); OK only where
 * the authorization policy (src/auth/policy.ts) allows the caller; an error message has no stack trace, no
 * file path, is short, and never contains the marker, nor does any server log line; a refused call changes
 * no stored state (the directory, registries, keys and user secrets). After the run the server is healthy.
 * Then hostile cases one by one: 3 MiB strings, a JWE with "zip":"DEF", alg "none", HS256 signed with an
 * identity provider's public key, negative and huge durations, and more.
 *
 * Reproduce a failure: FUZZ_SEED=<seed from the report> npx vitest run test/fuzz.test.ts. FUZZ_RUNS=<n>
 * changes the runs per RPC and credential (default 60; each property also has a time budget), FUZZ_ONLY=<part
 * of a method path> narrows the RPCs. The summary printed after the run shows, per RPC and credential, which
 * statuses the fuzzed calls got (how deep they reached).
 */
import { type JsonWebKey, KeyObject, createCipheriv, createHash, createHmac, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, sign as nodeSign, type webcrypto } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { ScalarType, create, createFileRegistry, fromBinary, toBinary, type DescField, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { Client, Metadata, credentials, status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { type CryptoKey, type JWK, SignJWT, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CallerKind, POLICY, allowed } from '../src/auth/policy.js';
import { ManualClock } from '../src/clock.js';
import { KeyKind, KeyState, PopServiceService } from '../src/gen/sts/v1/pop.js';
import { SecretServiceService } from '../src/gen/sts/v1/secret.js';
import { Application, SessionServiceService } from '../src/gen/sts/v1/session.js';
import { call, callError } from './helpers/call.js';
import { addRole, adminToken, createApp, createUser } from './helpers/directory.js';
import { type TestSts, startTestSts } from './helpers/server.js';

// ---------------------------------------------------------------------------------------------------------
// Configuration

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 0x7fffffff));
const RUNS = Number(process.env.FUZZ_RUNS ?? 60);
const ONLY = process.env.FUZZ_ONLY ?? '';
/** Wall-clock budget of one property (one RPC, one credential); shrinking a failure gets SHRINK_MS more. */
const PROPERTY_MS = 2500;
const SHRINK_MS = 10_000;
fc.configureGlobal({ seed: SEED });
console.log(`fuzz.test.ts: FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}${ONLY ? ` FUZZ_ONLY=${ONLY}` : ''}`);

/** Put into every secret-looking value; must never come back in an error message or a log line. */
const MARKER = `mrk${randomBytes(8).toString('hex')}`;
const T0 = Date.UTC(2026, 5, 1);
const NOW_S = Math.floor(T0 / 1000);
const MiB = 1024 * 1024;
const PASSWORD = 'fuzz correct horse battery';
const ISSUER = 'https://idp.fuzz.example';
const DOWN_ISSUER = 'https://down.fuzz.example';
const AUD = 'api://fuzz';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
/** Longest error message we accept: messages name the field and the rule; they never echo the input. */
const MAX_DETAILS = 1024;

const ALLOWED = new Set<status>([
  status.OK,
  status.INVALID_ARGUMENT,
  status.UNAUTHENTICATED,
  status.PERMISSION_DENIED,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.FAILED_PRECONDITION,
  status.RESOURCE_EXHAUSTED,
  status.UNAVAILABLE,
]);

/** Logon throttling would turn the fuzzed logons into waits and RESOURCE_EXHAUSTED: keep it out of the way. */
const OVERRIDES = {
  'session.throttleFreeFailures': 1000,
  'session.throttleMaxFailures': 10000,
  'session.throttleMaxFailuresPerAddress': 100000,
  'session.throttleMaxFailuresPerUser': 100000,
  'session.throttleMaxUsernamesPerApplication': 1000000,
  'session.throttleMaxFailuresPerApplication': 100000,
  // No key ring maintenance during the run: stored state changes only through the fuzzed calls.
  'pop.rotationCheckIntervalMs': 24 * 60 * 60 * 1000,
} as const;

// ---------------------------------------------------------------------------------------------------------
// The RPCs: every method of the generated service definitions, with its request descriptor.

const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(new URL('../src/gen/sts.binpb', import.meta.url))));

interface Rpc {
  /** "/sts.v1.PopService/Decrypt" */
  path: string;
  input: DescMessage;
  /** The generated deserializer the server uses. */
  decode: (b: Buffer) => unknown;
}

const DEFINITIONS: Record<string, { path: string; requestDeserialize: (b: Buffer) => unknown }>[] = [PopServiceService, SessionServiceService, SecretServiceService];

const ALL_RPCS: Rpc[] = DEFINITIONS.flatMap((def) =>
  Object.values(def).map((m) => {
    const [, service, method] = /^\/([^/]+)\/([^/]+)$/.exec(m.path)!;
    const input = registry.getService(service!)?.methods.find((x) => x.name === method)?.input;
    if (!input) throw new Error(`${m.path}: not in src/gen/sts.binpb (run npm run generate)`);
    return { path: m.path, input, decode: (b: Buffer) => m.requestDeserialize(b) };
  }),
);
const RPCS = ALL_RPCS.filter((r) => r.path.includes(ONLY));
const rpcOf = (path: string): Rpc => ALL_RPCS.find((r) => r.path === path)!;

// ---------------------------------------------------------------------------------------------------------
// Raw calls and what every answer must satisfy

type Arm = 'none' | 'app' | 'admin';
const CALLER_OF: Record<Arm, CallerKind> = { none: 'anonymous', app: 'resource server', admin: 'admin key' };

interface Outcome {
  code: status;
  details: string;
  stsCode: string | undefined;
}

/**
 * A channel of its own (not grpc-js's shared subchannel pool, so a broken connection cannot stall the typed
 * clients the test uses for its checks), replaced after a call that did not end with an allowed status.
 */
class RawChannel {
  private client: Client;
  constructor(private readonly address: string) {
    this.client = RawChannel.open(address);
  }
  private static open(address: string): Client {
    return new Client(address, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  }
  async call(path: string, body: Uint8Array, md: Metadata, deadlineMs = 4_000): Promise<Outcome> {
    const o = await rawCall(this.client, path, body, md, deadlineMs);
    if (!ALLOWED.has(o.code)) {
      this.client.close();
      this.client = RawChannel.open(this.address);
    }
    return o;
  }
  /** The health check: SERVING is the bytes 08 01. */
  health(service: string): Promise<Buffer> {
    const body = service ? Buffer.concat([Buffer.from([0x0a, service.length]), Buffer.from(service)]) : Buffer.alloc(0);
    return new Promise((resolve, reject) =>
      this.client.makeUnaryRequest('/grpc.health.v1.Health/Check', (b: Buffer) => b, (b: Buffer) => b, body, new Metadata(), { deadline: Date.now() + 5000 }, (err, r) =>
        err ? reject(err) : resolve(r!),
      ),
    );
  }
  close(): void {
    this.client.close();
  }
}

function rawCall(client: Client, path: string, body: Uint8Array, md: Metadata, deadlineMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      md,
      { deadline: Date.now() + deadlineMs },
      (err) => {
        if (!err) resolve({ code: status.OK, details: '', stsCode: undefined });
        else resolve({ code: err.code, details: err.details ?? '', stsCode: err.metadata?.get('sts-error-code')[0]?.toString() });
      },
    );
  });
}

function bearer(token: string): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

/** Throws (failing the property) when an answer breaks a rule that holds for every call. */
function checkOutcome(o: Outcome, rpc: Rpc, arm: Arm): void {
  const where = `${rpc.path} as ${arm}`;
  if (!ALLOWED.has(o.code)) throw new Error(`${where}: status ${status[o.code] ?? o.code} is not allowed (${clip(o.details)})`);
  const req = POLICY[rpc.path];
  if (o.code === status.OK && (req === undefined || !allowed(req, CALLER_OF[arm]))) {
    throw new Error(`${where}: answered OK, but the policy says ${req ?? '(no entry in src/auth/policy.ts)'}`);
  }
  // No credential: everything but the anonymous RPCs is UNAUTHENTICATED (or the message was too big to read).
  if (arm === 'none' && req !== 'anonymous' && o.code !== status.UNAUTHENTICATED && o.code !== status.RESOURCE_EXHAUSTED) {
    throw new Error(`${where}: without a credential expected UNAUTHENTICATED, got ${status[o.code]} (${clip(o.details)})`);
  }
  if (o.code === status.OK) return;
  if (o.details.includes('    at ') || /\bat .*:\d+:\d+\)?$/m.test(o.details)) throw new Error(`${where}: stack trace in the error message: ${clip(o.details)}`);
  if (/\/work\/|\.ts:\d|\.js:\d|node_modules/.test(o.details)) throw new Error(`${where}: file path in the error message: ${clip(o.details)}`);
  if (o.details.includes(MARKER)) throw new Error(`${where}: the error message echoes a submitted secret: ${clip(o.details)}`);
  if (o.details.length > MAX_DETAILS) throw new Error(`${where}: the error message is ${o.details.length} characters long (echoes the input?): ${clip(o.details)}`);
}

/**
 * The rule for every answer: a request the generated decoder cannot read gets INVALID_ARGUMENT from a caller
 * who may call the method, and UNAUTHENTICATED / PERMISSION_DENIED from one who may not (the caller is checked
 * first, so a stranger learns nothing about the request); any other gets an answer that passes `checkOutcome`.
 */
function checkAnswer(o: Outcome, rpc: Rpc, arm: Arm, body: Uint8Array): void {
  let decodes = true;
  try {
    rpc.decode(Buffer.from(body));
  } catch {
    decodes = false;
  }
  if (decodes) return checkOutcome(o, rpc, arm);
  const req = POLICY[rpc.path];
  const mayCall = req !== undefined && allowed(req, CALLER_OF[arm]);
  const expected = mayCall ? [status.INVALID_ARGUMENT] : arm === 'none' ? [status.UNAUTHENTICATED] : [status.PERMISSION_DENIED];
  if (!expected.includes(o.code)) {
    throw new Error(
      `${rpc.path} as ${arm}: a request that does not decode got ${status[o.code] ?? o.code} "${clip(o.details)}" (sts-error-code ${o.stsCode ?? 'none'}), expected ${expected.map((c) => status[c]).join(' or ')}`,
    );
  }
  checkOutcome(o, rpc, arm);
}

function clip(s: string, n = 240): string {
  return s.length <= n ? s : `${s.slice(0, n)}…(${s.length} chars)`;
}

/** A short rendering of a generated value: long strings and byte arrays are abbreviated. */
function brief(v: unknown): string {
  return JSON.stringify(v, function (this: unknown, key: string, value: unknown) {
    const raw = (this as Record<string, unknown>)[key];
    if (typeof raw === 'bigint') return `${raw}n`;
    if (raw instanceof Uint8Array) return `bytes(${raw.length}):${Buffer.from(raw.subarray(0, 24)).toString('hex')}`;
    if (typeof raw === 'string' && raw.length > 120) return `${raw.slice(0, 60)}…(${raw.length} chars of ${JSON.stringify(raw.slice(-4))})`;
    if (raw instanceof Metadata) return raw.toJSON();
    return value;
  });
}

// ---------------------------------------------------------------------------------------------------------
// JOSE helpers: raw JWS/JWE assembly, so headers can say anything

const b64 = (v: string | Uint8Array): string => Buffer.from(v).toString('base64url');
const sha256 = (s: string): string => createHash('sha256').update(s).digest('base64url');

/** A compact JWS with any header, signed with HMAC-SHA256 under `key` (or unsigned with `key` undefined). */
function hmacJws(header: unknown, claims: unknown, key: Uint8Array | undefined): string {
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
  return `${input}.${key ? createHmac('sha256', key).update(input).digest('base64url') : ''}`;
}

function concatKdf(z: Buffer, alg: string, bits: number): Buffer {
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const lp = (b: Buffer) => Buffer.concat([u32(b.length), b]);
  const otherInfo = Buffer.concat([lp(Buffer.from(alg)), lp(Buffer.alloc(0)), lp(Buffer.alloc(0)), u32(bits)]);
  return createHash('sha256').update(u32(1)).update(z).update(otherInfo).digest().subarray(0, bits / 8);
}

/**
 * A genuine compact JWE (ECDH-ES+A256KW; A256GCM, or A128GCM with `enc`) to an EC P-256 public JWK, assembled
 * by hand so that the protected header may carry anything (`extra`): with "zip":"DEF" the plaintext is
 * deflated as RFC 7516 says.
 */
function jweTo(recipient: JWK, plaintext: Uint8Array, extra: Record<string, unknown> = {}, enc: 'A256GCM' | 'A128GCM' = 'A256GCM'): string {
  const eph = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const epk = eph.publicKey.export({ format: 'jwk' });
  const z = diffieHellman({ privateKey: eph.privateKey, publicKey: createPublicKey({ key: { kty: recipient.kty, crv: recipient.crv, x: recipient.x, y: recipient.y } as JsonWebKey, format: 'jwk' }) });
  const kek = concatKdf(z, 'ECDH-ES+A256KW', 256);
  const cek = randomBytes(enc === 'A256GCM' ? 32 : 16);
  const kw = createCipheriv('id-aes256-wrap', kek, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
  const encryptedKey = Buffer.concat([kw.update(cek), kw.final()]);
  const header: Record<string, unknown> = { alg: 'ECDH-ES+A256KW', enc, kid: recipient.kid, epk: { kty: epk.kty, crv: epk.crv, x: epk.x, y: epk.y }, ...extra };
  const protectedB64 = b64(JSON.stringify(header));
  const iv = randomBytes(12);
  const cipher = createCipheriv(enc === 'A256GCM' ? 'aes-256-gcm' : 'aes-128-gcm', cek, iv);
  cipher.setAAD(Buffer.from(protectedB64, 'ascii'));
  const body = header.zip === 'DEF' ? deflateRawSync(plaintext) : plaintext;
  const ct = Buffer.concat([cipher.update(body), cipher.final()]);
  return [protectedB64, b64(encryptedKey), b64(iv), b64(ct), b64(cipher.getAuthTag())].join('.');
}

/** A port with nothing listening (JWKS URLs that fail at once, never the network). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

// ---------------------------------------------------------------------------------------------------------
// The world the fuzzer attacks: real ids, tokens and keys, so that fuzzed values reach the deep paths.

interface World {
  t: TestSts;
  raw: RawChannel;
  admin: string;
  /** The plain application (neither trusted nor admin), registered as resource server "fuzz-rs". */
  app: { id: string; token: string };
  /** Another application: its token is a valid credential of someone else. */
  other: { id: string; token: string };
  uid: string;
  username: string;
  /** A live session of the user (renewed when a fuzzed call ends it). */
  session: { tokenId: string; jwt: string; ticket: string };
  closedPort: number;
  enc: JWK;
  sigKid: string;
  secretKid: string;
  /** Real tokens and their near misses (never one that would pass every check and create state). */
  tokens: string[];
  /** STS-signed JWSs: the user token JWT, forgeries of it, and JWSs typed "JWT" over other payloads. */
  stsTokens: string[];
  /** Identity provider JWTs that each fail one check. */
  idpTokens: string[];
  /** Wrapped data keys and near misses. */
  wrapped: string[];
  jwes: string[];
  /** Pieces of real tokens, for splicing. */
  segments: string[];
  jwksJsons: string[];
  idpPublicJwk: JWK;
}

/** A compact JWS signed with node:crypto: headers jose would refuse to write (unknown crit, b64) are fine. */
function signJws(alg: 'ES256' | 'RS256', key: CryptoKey | KeyObject, header: Record<string, unknown>, claims: unknown): string {
  const k = key instanceof KeyObject ? key : KeyObject.from(key as unknown as webcrypto.CryptoKey);
  const input = Buffer.from(`${b64(JSON.stringify({ alg, ...header }))}.${b64(JSON.stringify(claims))}`);
  const sig = alg === 'ES256' ? nodeSign('sha256', input, { key: k, dsaEncoding: 'ieee-p1363' }) : nodeSign('sha256', input, k);
  return `${input.toString()}.${b64(sig)}`;
}

function idpJwt(key: CryptoKey, claims: Record<string, unknown>, header: Record<string, unknown> = {}): string {
  return signJws('ES256', key, { kid: 'fuzz-idp-1', typ: 'JWT', ...header }, claims);
}

async function buildWorld(): Promise<World> {
  const t = await startTestSts({ clock: new ManualClock(T0), overrides: OVERRIDES });
  const admin = adminToken(t);
  const raw = new RawChannel(t.address);
  const app = { id: 'fuzz-app', token: (await createApp(t, 'fuzz-app')).token };
  const other = { id: 'fuzz-other', token: (await createApp(t, 'fuzz-other')).token };
  const username = 'fuzz-user';
  const uid = await createUser(t, username, PASSWORD);
  await addRole(t, uid, 'fuzz-app', 'reader');
  await addRole(t, uid, 'fuzz-other', 'writer');

  // Identity providers: one with an inline JWKS, one whose JWKS URL is a closed local port.
  const idp = await generateKeyPair('ES256', { extractable: true });
  const idpPublicJwk: JWK = { ...(await exportJWK(idp.publicKey)), kid: 'fuzz-idp-1', use: 'sig', alg: 'ES256' };
  const port = await closedPort();
  for (const [issuer, jwksSource] of [
    [ISSUER, { $case: 'jwksJson' as const, value: JSON.stringify({ keys: [idpPublicJwk] }) }],
    [DOWN_ISSUER, { $case: 'jwksUri' as const, value: `http://127.0.0.1:${port}/jwks` }],
  ] as const) {
    await call(t.secret.putIdentityProvider, t.secret, { identityProvider: { issuer, jwksSource, audiences: [AUD], algorithms: ['ES256'], clockSkew: undefined, subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false } }, admin);
  }
  const rsKeys = await generateKeyPair('ECDH-ES+A256KW', { extractable: true });
  const rsJwks = { keys: [{ ...(await exportJWK(rsKeys.publicKey)), kid: 'fuzz-rs-enc', use: 'enc', alg: 'ECDH-ES+A256KW' }] };
  await call(
    t.secret.putResourceServer,
    t.secret,
    { resourceServer: { resourceServerId: 'fuzz-rs', credential: { $case: 'applicationId', value: app.id }, audiences: [AUD], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify(rsJwks) } } },
    admin,
  );

  const w: World = {
    t,
    raw,
    admin,
    app,
    other,
    uid,
    username,
    session: { tokenId: '', jwt: '', ticket: '' },
    closedPort: port,
    enc: {},
    sigKid: '',
    secretKid: '',
    tokens: [],
    stsTokens: [],
    idpTokens: [],
    wrapped: [],
    jwes: [],
    segments: [],
    jwksJsons: [],
    idpPublicJwk,
  };
  await ensureSession(w);

  const jwks = await call(t.pop.getJwks, t.pop, {});
  const keys = (JSON.parse(jwks.jwksJson) as { keys: JWK[] }).keys;
  w.enc = keys.find((k) => k.kid === jwks.primaryEncryptionKid)!;
  w.sigKid = jwks.primarySigningKid;
  const sigJwk = keys.find((k) => k.kid === jwks.primarySigningKid)!;
  w.secretKid = (await call(t.pop.listKeys, t.pop, { kind: KeyKind.KEY_KIND_SECRET, includeDestroyed: false }, admin)).keys.find((k) => k.state === KeyState.KEY_STATE_PRIMARY)!.kid;

  // STS-made tokens: a data key, plain JWSs, and JWSs typed "JWT" over payloads that are not user tokens.
  const dataKey = await call(t.pop.generateDataKey, t.pop, { keyLengthBits: 256, context: Buffer.from('ctx') }, admin);
  const bare = (await call(t.pop.generateDataKey, t.pop, { keyLengthBits: 128, context: Buffer.alloc(0) }, admin)).wrappedKey;
  const [wh, , wiv, wct, wtag] = dataKey.wrappedKey.split('.') as [string, string, string, string, string];
  const wrappedHeader = JSON.parse(Buffer.from(wh, 'base64url').toString()) as Record<string, unknown>;
  const reheaded = (h: Record<string, unknown>) => [b64(JSON.stringify({ ...wrappedHeader, ...h })), '', wiv, wct, wtag].join('.');
  w.wrapped = [
    dataKey.wrappedKey,
    bare,
    reheaded({ ctx: undefined }),
    reheaded({ ctx: sha256('other') }),
    reheaded({ kid: 'no-such-kid' }),
    reheaded({ enc: 'A128GCM' }),
    reheaded({ alg: 'A256KW' }),
    [wh, '', b64(Buffer.alloc(11)), wct, wtag].join('.'),
    [wh, '', wiv, wct, b64(Buffer.alloc(15))].join('.'),
    [wh, '', wiv, '', wtag].join('.'),
    [wh, 'AAAA', wiv, wct, wtag].join('.'),
    [wh, '', wiv, wct, wtag, ''].join('.'),
  ];
  const sign = async (payload: string, type = 'JWT') => (await call(t.pop.sign, t.pop, { payload: Buffer.from(payload), type, contentType: '' }, admin)).jws;
  const stsJws = [
    await sign(MARKER, ''),
    await sign('null'),
    await sign('[]'),
    await sign('"just a string"'),
    await sign(JSON.stringify({ iss: 'urn:sts:local', sid: MARKER, exp: NOW_S + 600 })),
    await sign(`{"iss":"urn:sts:local","sid":"${sha256(MARKER)}","exp":1e400}`),
    await sign(JSON.stringify({ iss: 'urn:sts:local', sid: sha256(w.session.tokenId), exp: NOW_S + 1e6 })),
  ];

  // JWEs to STS: credentials that are wrong (carrying the marker), odd plaintexts, odd headers.
  const text = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o));
  const appCred = text({ application_id: app.id, application_secret: `${MARKER}-not-the-secret` });
  w.jwes = [
    jweTo(w.enc, appCred),
    jweTo(w.enc, text({ username, password: `${MARKER} wrong` })),
    // Typed, fresh and with a jti, as credential JWEs must be (the first use reaches the secret check, every
    // later one is a replay).
    jweTo(w.enc, text({ application_id: app.id, application_secret: `${MARKER}-not-the-secret`, exp: NOW_S + 60, jti: b64(randomBytes(32)) }), { typ: 'sts-credential+jwe' }),
    jweTo(w.enc, text({ username, password: `${MARKER} wrong`, exp: NOW_S + 60, jti: b64(randomBytes(32)) }), { typ: 'sts-credential+jwe' }),
    jweTo(w.enc, text({ password: `${MARKER} wrong` })),
    jweTo(w.enc, text({ application_id: 1, application_secret: [MARKER] })),
    jweTo(w.enc, text({ username: `${username}\u0000`, password: MARKER })),
    jweTo(w.enc, text('null')),
    jweTo(w.enc, text('[]')),
    jweTo(w.enc, text('"str"')),
    jweTo(w.enc, text(`{"__proto__":{"application_id":"${app.id}"},"application_secret":"${MARKER}"}`)),
    jweTo(w.enc, Buffer.alloc(0)),
    jweTo(w.enc, Buffer.from([0xff, 0xfe, 0x00])),
    jweTo(w.enc, appCred, { zip: 'DEF' }),
    jweTo(w.enc, Buffer.alloc(4 * MiB), { zip: 'DEF' }),
    jweTo(w.enc, appCred, {}, 'A128GCM'),
    jweTo(w.enc, appCred, { zip: 'DEF' }, 'A128GCM'),
    jweTo(w.enc, Buffer.alloc(4 * MiB), { zip: 'DEF' }, 'A128GCM'),
    jweTo(w.enc, appCred, { crit: ['x-unknown'], 'x-unknown': true }),
    jweTo(w.enc, appCred, { crit: 'not-an-array' }),
    jweTo(w.enc, appCred, { kid: w.sigKid }),
    jweTo(w.enc, appCred, { kid: MARKER }),
    jweTo(w.enc, appCred, { kid: 'k'.repeat(100_000) }),
    jweTo(w.enc, appCred, { enc: 'A128GCM' }),
    jweTo(w.enc, appCred, { alg: 'ECDH-ES' }),
    jweTo(w.enc, appCred, { cty: MARKER, typ: 'JWT' }),
    jweTo(w.enc, appCred, { epk: { kty: 'EC', crv: 'P-256', x: b64(Buffer.alloc(32)), y: b64(Buffer.alloc(32)) } }),
    jweTo(w.enc, appCred, { epk: { kty: 'EC', crv: 'P-384', x: b64(Buffer.alloc(48, 1)), y: b64(Buffer.alloc(48, 2)) } }),
    jweTo(w.enc, appCred, { epk: { kty: 'OKP', crv: 'X25519', x: b64(Buffer.alloc(32)) } }),
    jweTo(w.enc, appCred, { epk: null }),
    jweTo(w.enc, appCred, { p2c: 2 ** 31 - 1, p2s: b64(randomBytes(16)) }),
    jweTo({ ...w.enc, kid: w.enc.kid }, appCred, { apu: b64(randomBytes(10_000)), apv: MARKER }),
  ];
  const realJwe = w.jwes[0]!.split('.');
  w.jwes.push(
    [b64(JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid: w.secretKid })), '', ...realJwe.slice(2)].join('.'),
    [b64(JSON.stringify({ alg: 'PBES2-HS512+A256KW', enc: 'A256GCM', kid: w.enc.kid, p2c: 2 ** 31 - 1, p2s: 'AAAAAAAAAAAAAAAAAAAAAA' })), ...realJwe.slice(1)].join('.'),
    [b64(JSON.stringify({ alg: 'RSA1_5', enc: 'A128CBC-HS256', kid: w.enc.kid })), ...realJwe.slice(1)].join('.'),
    [b64(JSON.stringify({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: w.enc.kid, zip: 'XYZ' })), ...realJwe.slice(1)].join('.'),
    [realJwe[0], realJwe[1], realJwe[2], realJwe[3], b64(Buffer.alloc(16))].join('.'),
    [realJwe[0], realJwe[1], b64(Buffer.alloc(0)), realJwe[3], realJwe[4]].join('.'),
  );

  // Near misses from the identity provider: real signatures over claims that must fail a check.
  const good = { iss: ISSUER, sub: `${MARKER}-sub`, aud: AUD, iat: NOW_S, exp: NOW_S + 600 };
  const idpTokens = [
    idpJwt(idp.privateKey, { ...good, iat: NOW_S - 7200, exp: NOW_S - 3600 }),
    idpJwt(idp.privateKey, { ...good, nbf: NOW_S + 3600, exp: NOW_S + 7200 }),
    idpJwt(idp.privateKey, { ...good, aud: 'api://elsewhere' }),
    idpJwt(idp.privateKey, { ...good, aud: [] }),
    idpJwt(idp.privateKey, { ...good, exp: undefined }),
    idpJwt(idp.privateKey, { ...good, exp: 'tomorrow' }),
    idpJwt(idp.privateKey, { ...good, sub: undefined }),
    idpJwt(idp.privateKey, { ...good, sub: 42 }),
    idpJwt(idp.privateKey, { ...good, sub: '' }),
    idpJwt(idp.privateKey, { ...good, sub: MARKER.repeat(100) }),
    idpJwt(idp.privateKey, { ...good, iss: [ISSUER] }),
    idpJwt(idp.privateKey, good, { kid: 'no-such-kid' }),
    idpJwt(idp.privateKey, good, { kid: 'k'.repeat(10_000) }),
    idpJwt(idp.privateKey, good, { crit: ['x-unknown'], 'x-unknown': 1 }),
    idpJwt(idp.privateKey, good, { b64: false, crit: ['b64'] }),
    idpJwt(idp.privateKey, { ...good, iss: DOWN_ISSUER }),
    await new SignJWT(good).setProtectedHeader({ alg: 'ES384', kid: 'fuzz-idp-1' }).sign((await generateKeyPair('ES384')).privateKey),
    idpJwt((await generateKeyPair('ES256')).privateKey, good),
    hmacJws({ alg: 'none', typ: 'JWT' }, good, undefined),
    hmacJws({ alg: 'none', kid: 'fuzz-idp-1' }, good, undefined),
    hmacJws({ alg: 'HS256', kid: 'fuzz-idp-1' }, good, Buffer.from(JSON.stringify(idpPublicJwk))),
    hmacJws({ alg: 'HS256', kid: 'fuzz-idp-1' }, good, Buffer.from(createPublicKey({ key: idpPublicJwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }))),
    hmacJws({ alg: 'ES256', kid: 'fuzz-idp-1', jwk: idpPublicJwk }, good, randomBytes(32)),
    hmacJws({ alg: 'ES256', kid: 'fuzz-idp-1', jku: `http://127.0.0.1:${port}/jwks` }, good, randomBytes(64)),
  ];
  // STS's own tokens with the signature or header swapped.
  const [uh, up, us] = w.session.jwt.split('.') as [string, string, string];
  const stsForgeries = [
    hmacJws({ alg: 'none', kid: w.sigKid, typ: 'JWT' }, JSON.parse(Buffer.from(up, 'base64url').toString()), undefined),
    hmacJws({ alg: 'HS256', kid: w.sigKid, typ: 'JWT' }, JSON.parse(Buffer.from(up, 'base64url').toString()), Buffer.from(JSON.stringify(sigJwk))),
    `${uh}.${b64(JSON.stringify({ ...JSON.parse(Buffer.from(up, 'base64url').toString()), exp: NOW_S + 1e9 }))}.${us}`,
    `${uh}.${up}.`,
    `${uh}.${up}.${us}.${us}`,
  ];
  w.stsTokens = [w.session.jwt, ...stsJws, ...stsForgeries];
  w.idpTokens = idpTokens;
  w.tokens = [...w.stsTokens, ...w.idpTokens, ...w.wrapped];
  w.segments = [...new Set([...w.tokens, ...w.jwes.slice(0, 6)].flatMap((x) => x.split('.')))].filter((s) => s.length < 4096);

  const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' });
  const ecPriv = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  w.jwksJsons = [
    JSON.stringify({ keys: [idpPublicJwk] }),
    JSON.stringify(rsJwks),
    JSON.stringify({ keys: [{ ...ecPriv, kid: MARKER }] }),
    JSON.stringify({ keys: [{ kty: 'oct', k: b64(MARKER), kid: 'hmac' }] }),
    JSON.stringify({ keys: [{ ...rsa1024, kid: 'rsa-1024', alg: 'RS256', use: 'sig' }] }),
    JSON.stringify({ keys: [{ ...rsa1024, kid: 'rsa-1024-enc', alg: 'RSA-OAEP-256', use: 'enc' }] }),
    JSON.stringify({ keys: [idpPublicJwk, idpPublicJwk] }),
    JSON.stringify({ keys: Array.from({ length: 101 }, (_, i) => ({ ...idpPublicJwk, kid: `k${i}` })) }),
    JSON.stringify({ keys: [{ ...idpPublicJwk, kid: 'k'.repeat(257) }] }),
    JSON.stringify({ keys: [{ ...idpPublicJwk, x: b64(Buffer.alloc(32)) }] }),
    JSON.stringify({ keys: [{ ...idpPublicJwk, crv: 'P-521' }] }),
    JSON.stringify({ keys: [{ ...idpPublicJwk, use: 'enc', alg: 'ECDH-ES+A256KW' }] }),
    JSON.stringify({ keys: [{ kty: 'OKP', crv: 'X25519', x: b64(randomBytes(32)) }] }),
    JSON.stringify({ keys: [{ kty: 'RSA', n: 'AQAB', e: 'AQAB' }] }),
    '{"keys":[{"__proto__":{"kty":"EC"}}]}',
    '{"keys":{}}',
    '{"keys":[]}',
    '{"keys":[null,1,"x",[]]}',
    '{}',
    '[]',
    'null',
    '{"keys":[',
    `{"keys":${'['.repeat(10_000)}`,
    JSON.stringify({ keys: [idpPublicJwk], pad: 'x'.repeat(64 * 1024) }),
  ];
  return w;
}

/** Makes sure the world's user session is live (a fuzzed ReleaseUserToken may have ended it). */
async function ensureSession(w: World): Promise<void> {
  if (w.session.tokenId) {
    const v = await call(w.t.session.validateUserToken, w.t.session, { token: { $case: 'userTokenId', value: w.session.tokenId } }, w.app.token);
    if (v.active) return;
  }
  const res = await call(
    w.t.session.logonUser,
    w.t.session,
    { credential: { $case: 'userCredential', value: { username: w.username, password: PASSWORD } }, ticketApplicationId: w.app.id },
    w.app.token,
  );
  w.session = { tokenId: res.userToken!.userTokenId, jwt: res.userTokenJwt, ticket: res.userTicket };
}

// ---------------------------------------------------------------------------------------------------------
// Arbitraries: values by field, messages by descriptor, credentials by arm

const CONTROL = fc.constantFrom(...Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)), '\x7f', 'a', '-');
const HOSTILE = [
  '',
  ' ',
  '\u0000',
  'null',
  'undefined',
  'NaN',
  '-1',
  '0',
  '1e309',
  'true',
  '[]',
  '{}',
  '__proto__',
  'constructor',
  'toString',
  "'; DROP TABLE users; --",
  '" OR 1=1 --',
  '%',
  '_',
  '%_%',
  '\\',
  '\\%',
  '*',
  '../../../../etc/passwd',
  '.',
  '..',
  '${jndi:ldap://127.0.0.1:1/a}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  '\r\nx-injected: 1',
  '\u202e\u0635\u0644',
  '\ufeff',
  '\u200b',
  'A\u0301',
  'İı',
  'ß',
  '\ud800',
  '\udfff',
  '😀',
  '\u2028\u2029',
];
const LONG_LENGTHS = [129, 256, 257, 513, 1025, 2049, 4097, 16_385, 65_537, 262_145, MiB];

function longString(marker: string): fc.Arbitrary<string> {
  return fc
    .tuple(fc.constantFrom(...LONG_LENGTHS), fc.constantFrom('A', 'é', '😀', '\u0000', '.', '%', marker))
    .map(([n, c]) => c.repeat(Math.ceil(n / c.length)).slice(0, n));
}

/** Unicode, control characters, injection strings, long strings; with `secret`, also strings with the marker. */
function genericString(secret = false): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.string({ unit: 'grapheme', maxLength: 24 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }) },
    { weight: 2, arbitrary: fc.string({ unit: CONTROL, minLength: 1, maxLength: 8 }) },
    { weight: 3, arbitrary: fc.constantFrom(...HOSTILE) },
    { weight: 1, arbitrary: longString(secret ? MARKER : 'A') },
    { weight: secret ? 2 : 0, arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 6 }).map((s) => `${s}${MARKER}${s}`) },
  );
}

/** Malformed, truncated, spliced and hostile compact JWS/JWE strings. */
function joseString(w: World): fc.Arbitrary<string> {
  const base = { iss: ISSUER, sub: MARKER, aud: AUD, iat: NOW_S, exp: NOW_S + 600 };
  const headers: unknown[] = [
    { alg: 'none' },
    { alg: 'none', typ: 'JWT', kid: w.sigKid },
    { alg: 'None' },
    { alg: 'NONE', kid: 'fuzz-idp-1' },
    { alg: 'HS256', kid: w.sigKid },
    { alg: 'HS256', kid: 'fuzz-idp-1' },
    { alg: 'HS512' },
    { alg: 'EdDSA', kid: w.sigKid, crit: ['x-unknown'], 'x-unknown': true },
    { alg: 'EdDSA', kid: w.sigKid, typ: 'JWT' },
    { alg: 'ES256', kid: 'fuzz-idp-1', crit: ['exp'] },
    { alg: 'EdDSA', kid: 'k'.repeat(100_000) },
    { alg: 'ES256', kid: MARKER },
    { alg: 'ES256', kid: 'fuzz-idp-1', jku: `http://127.0.0.1:${w.closedPort}/jwks` },
    { alg: 'ES256', kid: 'fuzz-idp-1', jwk: w.idpPublicJwk },
    { alg: 'ES256', kid: ['fuzz-idp-1'] },
    { alg: 42, kid: null },
    { alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: w.enc.kid, zip: 'DEF' },
    { alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: w.enc.kid, epk: { kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' } },
    { alg: 'RSA1_5', enc: 'A128CBC-HS256', kid: w.enc.kid },
    { alg: 'PBES2-HS512+A256KW', enc: 'A256GCM', p2c: 2 ** 31 - 1, p2s: 'AAAAAAAAAAAAAAAAAAAAAA' },
    { alg: 'dir', enc: 'A256GCM', kid: w.secretKid },
    { alg: 'dir', enc: 'A256GCM', kid: w.secretKid, ctx: MARKER },
    { b64: false, crit: ['b64'], alg: 'EdDSA', kid: w.sigKid },
    [],
    null,
    42,
    'header',
    {},
  ];
  const rawHeaders = [
    '{"alg":"none",',
    '{"__proto__":{"alg":"none"},"kid":"fuzz-idp-1"}',
    `{"alg":"EdDSA","kid":"${w.sigKid}","alg":"none"}`,
    `{"alg":"ES256","kid":"fuzz-idp-1","alg":"none"}`,
    '['.repeat(50_000),
    `{"alg":"EdDSA","kid":"${w.sigKid}"}\u0000junk`,
    '\ufeff{"alg":"ES256"}',
  ];
  const claims: unknown[] = [
    base,
    { ...base, iss: DOWN_ISSUER },
    { ...base, sub: { nested: true } },
    { iss: 'urn:sts:local', sid: sha256(w.session.tokenId), exp: NOW_S + 1e9, aud: w.app.id },
    { iss: 'urn:sts:local', sid: MARKER, exp: 'never' },
    { iss: ['a'], exp: -1 },
    null,
    [],
    'claims',
    1e21,
  ];
  const segment = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...headers).map((h) => b64(JSON.stringify(h))) },
    { weight: 1, arbitrary: fc.constantFrom(...rawHeaders).map((h) => b64(h)) },
    { weight: 2, arbitrary: fc.constantFrom(...claims).map((c) => b64(JSON.stringify(c))) },
    { weight: 1, arbitrary: fc.constantFrom(...w.segments) },
    { weight: 2, arbitrary: fc.constantFrom('', '=', '==', 'A', 'AAAA', '+/+/', 'a+b/c=', '!!!', ' ', '%', '\u0000', MARKER, 'é') },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map(b64) },
    { weight: 1, arbitrary: genericString(true) },
  );
  const composed = fc
    .oneof(fc.constant(3), fc.constant(5), fc.integer({ min: 0, max: 8 }))
    .chain((n) => fc.array(segment, { minLength: n, maxLength: n }))
    .map((parts) => parts.join('.'));
  const spliced = fc
    .tuple(fc.constantFrom(...w.tokens, ...w.jwes), fc.nat(), segment)
    .map(([tok, i, seg]) => {
      const parts = tok.split('.');
      parts[i % parts.length] = seg;
      return parts.join('.');
    });
  const mangled = fc
    .tuple(fc.constantFrom(...w.tokens, ...w.jwes), fc.nat(), fc.constantFrom('.', '', 'A', '=', ' ', '\n', MARKER))
    .map(([tok, i, s]) => {
      const at = i % (tok.length + 1);
      return `${tok.slice(0, at)}${s}${tok.slice(at + (s === '' ? 1 : 0))}`;
    });
  return fc.oneof(
    { weight: 4, arbitrary: composed },
    { weight: 3, arbitrary: spliced },
    { weight: 2, arbitrary: mangled },
    { weight: 3, arbitrary: fc.constantFrom(...w.tokens, ...w.jwes) },
    { weight: 1, arbitrary: fc.constantFrom(w.session.tokenId, w.session.ticket, w.other.token) },
    { weight: 1, arbitrary: genericString(true) },
  );
}

/**
 * What a string field holds, by its proto name: `valid` values pass the field's checks (or name things that
 * exist), `odd` ones are near misses; `secret` fields also get strings carrying the marker.
 */
interface Pools {
  valid: fc.Arbitrary<string>;
  odd: fc.Arbitrary<string> | undefined;
  secret: boolean;
}

function poolsFor(name: string, w: World): Pools | undefined {
  const port = w.closedPort;
  const choose = (...values: string[]) => fc.constantFrom(...values);
  // Live values are read when a value is generated: the session may have been renewed since.
  const live = (f: () => string[]) => fc.nat().map((i) => f()[i % f().length]!);
  const pools = (valid: fc.Arbitrary<string>, odd?: fc.Arbitrary<string>, secret = false): Pools => ({ valid, odd, secret });
  if (/jwks_json/.test(name)) return pools(choose(...w.jwksJsons.slice(0, 2)), choose(...w.jwksJsons.slice(2)));
  if (/jwks_uri/.test(name)) {
    return pools(
      choose(`http://127.0.0.1:${port}/jwks`, `https://127.0.0.1:${port}/jwks`, `http://[::1]:${port}/jwks`, `http://localhost:${port}/jwks`),
      choose(
        'http://169.254.169.254/latest/meta-data/',
        'http://10.0.0.1/jwks',
        'ftp://127.0.0.1/jwks',
        'file:///etc/passwd',
        `http://user:${MARKER}@127.0.0.1:${port}/`,
        'javascript:alert(1)',
        'https://',
        'not a url',
        `http://127.0.0.1:${port}/${'x'.repeat(2100)}`,
      ),
    );
  }
  if (/_token_type$/.test(name)) return pools(choose(JWT_TYPE, ACCESS_TYPE, ''), choose('urn:ietf:params:oauth:token-type:id_token', `${JWT_TYPE} `, JWT_TYPE.toUpperCase(), EXCHANGE));
  if (/grant_type/.test(name)) return pools(choose(EXCHANGE), choose(`${EXCHANGE} `, 'client_credentials', EXCHANGE.toUpperCase(), JWT_TYPE, ''));
  if (/user_token_jwt|^jws$/.test(name)) return pools(choose(...w.stsTokens), joseString(w), true);
  if (/subject_token|actor_token|third_party_token/.test(name)) return pools(choose(...w.idpTokens), joseString(w), true);
  if (/jwe$/.test(name)) return pools(choose(...w.jwes), joseString(w), true);
  if (/wrapped_key/.test(name)) return pools(choose(...w.wrapped), joseString(w), true);
  if (/token_id$|ticket$/.test(name)) {
    return pools(
      live(() => [w.session.tokenId, w.session.ticket, w.other.token]),
      fc.oneof(
        live(() => [sha256(w.session.tokenId), w.session.tokenId.slice(1), `${w.session.tokenId}A`, w.session.tokenId.toUpperCase(), w.session.jwt]),
        choose('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'x', MARKER, `${MARKER}${'A'.repeat(40)}`),
      ),
      true,
    );
  }
  if (/password|secret/.test(name)) {
    return pools(
      choose(PASSWORD, 'correct horse battery staple and more', ''),
      fc.oneof(choose(`${PASSWORD} `, PASSWORD.toUpperCase(), 'x', 'short', 'x'.repeat(1024), 'x'.repeat(1025)), choose('', 'x', 'a long enough secret, 24+ ').map((v) => `${v}${MARKER}`)),
      true,
    );
  }
  if (/application_id$/.test(name)) return pools(choose(w.app.id, w.other.id, 'new-app-1', 'new-app-2'), choose('FUZZ-APP', `${w.app.id} `, `${w.app.id}\u0000`, 'no-such-app', 'a'.repeat(128), 'a'.repeat(129), '.', '..', 'fuzz_app'));
  if (/^uid$/.test(name)) return pools(choose(w.uid), choose(w.uid.toUpperCase(), `${w.uid}=`, 'no-such-uid', 'x'.repeat(129)));
  if (/username/.test(name)) return pools(choose(w.username, 'new-user-1', 'new-user-2'), choose(w.username.toUpperCase(), ` ${w.username}`, 'admin', '%', '_'));
  if (/issuer/.test(name)) return pools(choose(ISSUER, DOWN_ISSUER, 'https://new.fuzz.example'), choose(`${ISSUER}/`, 'urn:sts:local', 'https://', 'not a url', 'javascript:alert(1)', 'file:///etc/passwd'));
  if (/algorithms/.test(name)) return pools(choose('ES256', 'RS256', 'EdDSA'), choose('none', 'None', 'NONE', 'HS256', 'hs256', 'HS512', 'Ed25519', 'ES256K', 'RSA-OAEP', 'dir', 'x'.repeat(1000)));
  if (/audience|^resource$/.test(name)) return pools(choose(AUD, 'fuzz-rs'), choose('api://other', 'x'.repeat(513)));
  if (/^paths$/.test(name)) {
    return pools(
      choose('name', 'tags', 'default_roles', 'trusted', 'admin', 'personal_fields_allowed', 'full_token', 'minimum_security_level', 'user_token_idle_timeout', 'user_token_max_lifetime', 'disabled', 'username', 'first_name', 'last_name', 'email', 'cellphone', 'person_ref', 'fullToken', 'firstName'),
      choose('uid', 'application_id', 'secret_hash', 'password_hash', 'create_time', '*', '', '__proto__', 'name,admin', 'x'.repeat(5000)),
    );
  }
  if (/scope/.test(name)) return pools(choose('openid', 'read:orders write:orders', ''), choose('a  b', ' a', '"', '\\', 'x'.repeat(1025)));
  if (/certificate_sha256/.test(name)) return pools(choose('ab'.repeat(32), 'AB:'.repeat(31) + 'AB'), choose('a'.repeat(63), 'a'.repeat(65), 'g'.repeat(64)));
  if (/^(type|content_type)$/.test(name)) return pools(choose('JWT', 'application/example+jwt', ''), choose('x'.repeat(129), 'a\nb', 'é', '"'));
  if (/subject_claim/.test(name)) return pools(choose('', 'sub', 'email'), choose('__proto__', 'constructor', ' ', 'x'.repeat(257)));
  if (/resource_server_id/.test(name)) return pools(choose('fuzz-rs', 'new-rs'), choose('no-such-rs', 'x'.repeat(129)));
  return undefined;
}

/** Hostile mode: the field's pools mixed with generic hostile strings (unicode, control, long, marker). */
function hostileString(name: string, w: World): fc.Arbitrary<string> {
  const p = poolsFor(name, w);
  if (!p) return genericString(false);
  const specific = p.odd ? fc.oneof(p.valid, p.odd) : p.valid;
  return fc.oneof({ weight: 3, arbitrary: specific }, { weight: 1, arbitrary: genericString(p.secret) });
}

/** Plausible mode: a value that passes the field's checks or names something that exists. */
function plausibleString(name: string, w: World): fc.Arbitrary<string> {
  return poolsFor(name, w)?.valid ?? fc.constantFrom('a', 'Fuzz Name', 'reader');
}

function bytesFor(name: string): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.uint8Array({ maxLength: 64 }) },
    { weight: 1, arbitrary: fc.constantFrom(0, 1, 4096, 4097, 65_536, MiB, MiB + 1, 3 * MiB).map((n) => new Uint8Array(n)) },
    { weight: 1, arbitrary: fc.constant(Buffer.from(/context/.test(name) ? 'ctx' : MARKER)) },
    { weight: 1, arbitrary: fc.constantFrom('null', '{}', '\u0000', MARKER).map((s) => Buffer.from(s)) },
  );
}

const INT32_EDGES = [0, -1, 1, 2, 3, 4, 5, 127, 128, 255, 256, 999_999_999, 1_000_000_000, -1_000_000_000, 2 ** 31 - 1, -(2 ** 31)];
const UINT32_EDGES = [0, 1, 2, 3, 4, 5, 128, 255, 256, 257, 1000, 1001, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1];
const INT64_EDGES = [0n, -1n, 1n, 59n, 600n, 601n, 315_576_000_000n, 315_576_000_001n, -315_576_000_001n, 2n ** 53n - 1n, 2n ** 53n, -(2n ** 53n), 2n ** 63n - 1n, -(2n ** 63n)];

type Mode = 'hostile' | 'plausible';

function scalarFor(t: ScalarType, name: string, w: World, mode: Mode): fc.Arbitrary<unknown> {
  const plausible = mode === 'plausible';
  switch (t) {
    case ScalarType.STRING:
      return plausible ? plausibleString(name, w) : hostileString(name, w);
    case ScalarType.BYTES:
      return plausible ? fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 32 }), fc.constant(Buffer.from('ctx'))) : bytesFor(name);
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return plausible ? fc.constantFrom(0, 1, 500_000_000) : fc.oneof(fc.constantFrom(...INT32_EDGES), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return plausible ? fc.constantFrom(0, 1, 2, 128, 256) : fc.oneof(fc.constantFrom(...UINT32_EDGES), fc.integer({ min: 0, max: 2 ** 32 - 1 }));
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return plausible
        ? fc.constantFrom(0n, 1n, 60n, 600n, 3600n)
        : fc.oneof(fc.constantFrom(...INT64_EDGES), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.bigInt({ min: -100_000n, max: 100_000n }));
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return plausible ? fc.constantFrom(0n, 1n) : fc.oneof(fc.constantFrom(0n, 1n, 2n ** 53n, 2n ** 64n - 1n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
    default:
      return plausible ? fc.constantFrom(0, 1) : fc.double();
  }
}

function enumFor(numbers: number[], mode: Mode): fc.Arbitrary<number> {
  if (mode === 'plausible') return fc.constantFrom(...numbers);
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...numbers) }, { weight: 1, arbitrary: fc.constantFrom(-1, numbers.length, 2 ** 31 - 1, -(2 ** 31)) }, { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) });
}

type Init = Record<string, unknown>;

/**
 * Request shapes: "hostile" makes every field hostile; "near" makes a plausible message in which about one
 * field per message is hostile (so the hostile value meets the deep checks, after the others have passed).
 */
type Shape = 'hostile' | 'near';

function elementFor(f: DescField, w: World, depth: number, mode: Mode, shape: Shape): fc.Arbitrary<unknown> {
  switch (f.fieldKind) {
    case 'scalar':
      return scalarFor(f.scalar, f.name, w, mode);
    case 'enum':
      return enumFor(f.enum.values.map((v) => v.number), mode);
    case 'message':
      return messageFor(f.message, w, depth + 1, shape);
    case 'list':
      if (f.listKind === 'scalar') return scalarFor(f.scalar, f.name, w, mode);
      if (f.listKind === 'enum') return enumFor(f.enum.values.map((v) => v.number), mode);
      return messageFor(f.message, w, depth + 1, shape);
    default:
      return fc.constant(undefined);
  }
}

function fieldFor(f: DescField, w: World, depth: number, mode: Mode, shape: Shape): fc.Arbitrary<unknown> {
  if (f.fieldKind === 'list') {
    const el = elementFor(f, w, depth, mode, shape);
    if (mode === 'plausible') return fc.array(el, { minLength: 1, maxLength: 2 });
    const many = f.listKind === 'scalar' && f.scalar === ScalarType.STRING ? fc.constantFrom(51, 65, 101).map((n) => Array.from({ length: n }, (_, i) => `v${i}`)) : fc.constant([]);
    return fc.oneof({ weight: 8, arbitrary: fc.array(el, { maxLength: 4 }) }, { weight: 1, arbitrary: many });
  }
  if (f.fieldKind === 'message') return mode === 'plausible' ? elementFor(f, w, depth, mode, shape) : fc.option(elementFor(f, w, depth, mode, shape), { nil: undefined, freq: 4 });
  return elementFor(f, w, depth, mode, shape);
}

/** An init object for `create(desc, init)`: every field and oneof of the message. */
function messageFor(desc: DescMessage, w: World, depth = 0, shape: Shape = 'hostile'): fc.Arbitrary<Init> {
  if (depth > 4) return fc.constant({});
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  const n = Math.max(1, desc.members.length);
  const oneofFor = (m: { fields: DescField[] }, mode: Mode) => {
    const cases = m.fields.map((f) => elementFor(f, w, depth, mode, shape).map((value) => ({ case: f.localName, value })));
    return mode === 'plausible' ? fc.oneof(...cases) : fc.oneof({ weight: 1, arbitrary: fc.constant(undefined) }, ...cases.map((arbitrary) => ({ weight: 2, arbitrary })));
  };
  for (const m of desc.members) {
    const hostile = m.kind === 'oneof' ? oneofFor(m, 'hostile') : fieldFor(m, w, depth, 'hostile', shape);
    if (shape === 'hostile') {
      parts[m.localName] = hostile;
    } else {
      // Nested messages stay "near" (plausible with one hostile field) rather than wholly hostile.
      const plausible = m.kind === 'oneof' ? oneofFor(m, 'plausible') : fieldFor(m, w, depth, 'plausible', shape);
      parts[m.localName] = fc.oneof({ weight: n, arbitrary: plausible }, { weight: 1, arbitrary: hostile });
    }
  }
  return fc.record(parts);
}

/** Requests for the fuzz arms: half wholly hostile, half plausible with one hostile field. */
function requestFor(desc: DescMessage, w: World): fc.Arbitrary<Init> {
  return fc.oneof(messageFor(desc, w, 0, 'hostile'), messageFor(desc, w, 0, 'near'));
}

const encode = (desc: DescMessage, init: Init): Uint8Array => toBinary(desc, create(desc, init as never));

/** Wire-level oddities: bad wire types, lengths past the end, overlong varints, groups, bad UTF-8. */
const CRAFTED = [
  [0x0f],
  [0x0e],
  [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
  [0x0a, 0x05, 0x41],
  [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
  [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
  [0x0b],
  [0x0c],
  [0x80],
  [0x0a, 0x02, 0xff, 0xfe],
  [0x12, 0x03, 0x08, 0x96, 0x01],
  [0x12, 0x02, 0x0a, 0x05],
  [0x1a, 0x04, 0x0a, 0x02, 0x08, 0x80],
  [0xfa, 0xff, 0xff, 0xff, 0x0f],
  [0x00],
  [0x09, 1, 2, 3],
  [0x0d, 1],
].map((b) => Uint8Array.from(b));

function undecodableFor(rpc: Rpc, w: World): fc.Arbitrary<Uint8Array> {
  const valid = requestFor(rpc.input, w).map((init) => encode(rpc.input, init));
  return fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 64 }),
    fc.uint8Array({ minLength: 1, maxLength: 2048 }),
    fc.tuple(valid, fc.nat()).map(([b, i]) => b.subarray(0, b.length === 0 ? 0 : i % b.length)),
    fc.tuple(valid, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([b, i, x]) => {
      const c = Uint8Array.from(b);
      const j = i % Math.max(1, c.length);
      if (c.length > 0) c[j] = c[j]! ^ x;
      return c;
    }),
    fc.tuple(valid, fc.constantFrom(...CRAFTED)).map(([b, c]) => Buffer.concat([b, c])),
    fc.tuple(fc.constantFrom(...CRAFTED), valid).map(([c, b]) => Buffer.concat([c, b])),
  );
}

/** Authorization metadata for arm "none": absent, malformed, or a credential that is not valid. */
type Auth = readonly (readonly [string, string])[];

function garbageAuth(w: World): fc.Arbitrary<Auth> {
  const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });
  const header = fc.oneof(
    printable.map((s) => `Bearer ${s}`),
    printable.map((s) => `Bearer ${MARKER}${s}`),
    printable.map((s) => `Bearer sts_admin_${s}`),
    fc.constantFrom(
      'Bearer',
      'Bearer ',
      'Bearer  x',
      `bearer ${w.admin}`,
      `BEARER ${w.admin}`,
      `Basic ${b64(`${w.app.id}:${MARKER}`)}`,
      `Bearer ${w.admin.slice(0, -1)}${w.admin.endsWith('A') ? 'B' : 'A'}`,
      `Bearer ${w.admin} `,
      `Bearer ${w.admin}x`,
      `Bearer ${w.app.token.slice(0, -1)}`,
      `Bearer ${w.session.tokenId}`,
      `Bearer ${w.session.ticket}`,
      `Bearer ${w.session.jwt}`,
      `Bearer ${sha256(w.app.token)}`,
      `Bearer ${'A'.repeat(4097)}`,
      `Bearer ${'A'.repeat(4096)}`,
      `Bearer ${MARKER.repeat(200)}`,
      `Token ${w.admin}`,
      w.admin,
      w.app.token,
    ),
  );
  return fc.oneof(
    fc.constant([]),
    header.map((h) => [['authorization', h]] as const),
    header.map((h) => [['authorization', `${h}, Bearer ${w.admin}`]] as const),
    fc.constant([['x-authorization', `Bearer ${w.admin}`]] as const),
    fc.constant([['authorization-bin', b64(w.admin)]] as const),
  );
}

function metadataOf(auth: Auth): Metadata {
  const md = new Metadata();
  for (const [k, v] of auth) {
    if (k.endsWith('-bin')) md.add(k, Buffer.from(v, 'base64url'));
    else md.add(k, v);
  }
  return md;
}

// ---------------------------------------------------------------------------------------------------------
// State the attacker could change

async function listingSnapshot(w: World): Promise<string> {
  const { t, admin } = w;
  const users = [];
  for (let pageToken = ''; ; ) {
    const page = await call(t.session.listUsers, t.session, { usernamePrefix: '', pageSize: 1000, pageToken }, admin);
    users.push(...page.users);
    if (!page.nextPageToken) break;
    pageToken = page.nextPageToken;
  }
  return JSON.stringify({
    applications: (await call(t.session.listApplications, t.session, {}, admin)).applications,
    users,
    identityProviders: (await call(t.secret.listIdentityProviders, t.secret, {}, admin)).identityProviders,
    resourceServers: (await call(t.secret.listResourceServers, t.secret, {}, admin)).resourceServers,
    keys: (await call(t.pop.listKeys, t.pop, { kind: KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed: true }, admin)).keys,
    userSecrets: (await t.sts.store.durable.list('user_secret')).length,
  });
}

/** Every durable table, read directly: also what the listings do not show (secret and password hashes, roles). */
class TableSnapshot {
  private readonly db: Database.Database;
  private readonly stmts: [string, Database.Statement][];
  constructor(dataDir: string) {
    this.db = new Database(join(dataDir, 'sts.db'), { readonly: true, fileMustExist: true });
    this.stmts = (['applications', 'users', 'roles', 'identity_providers', 'resource_servers', 'durable'] as const).map((tb) => [tb, this.db.prepare(`SELECT * FROM ${tb} ORDER BY 1, 2`)]);
  }
  take(): Record<string, string> {
    return Object.fromEntries(this.stmts.map(([tb, s]) => [tb, JSON.stringify(s.all())]));
  }
  close(): void {
    this.db.close();
  }
}

function changedTables(a: Record<string, string>, b: Record<string, string>): string[] {
  return Object.keys(a).filter((k) => a[k] !== b[k]);
}

// ---------------------------------------------------------------------------------------------------------
// Running one property with a time budget, collecting failures instead of stopping at the first

interface Stats {
  calls: number;
  byCode: Map<string, number>;
  /** "Decrypt as admin" -> status -> count */
  byRpc: Map<string, Map<string, number>>;
  properties: number;
}

function count(stats: Stats, o: Outcome, rpc: Rpc, arm: string): void {
  stats.calls += 1;
  const k = status[o.code] ?? String(o.code);
  stats.byCode.set(k, (stats.byCode.get(k) ?? 0) + 1);
  const key = `${rpc.path.split('/')[2]} ${arm}`;
  const m = stats.byRpc.get(key) ?? new Map<string, number>();
  m.set(k, (m.get(k) ?? 0) + 1);
  stats.byRpc.set(key, m);
}

async function runProperty<T>(name: string, arb: fc.Arbitrary<T>, predicate: (v: T) => Promise<void>, failures: string[], runs = RUNS): Promise<void> {
  let deadline = Date.now() + PROPERTY_MS;
  let failed = false;
  const details = await fc.check(
    fc.asyncProperty(arb, async (v) => {
      if (Date.now() > deadline) return; // over budget: the remaining runs pass without a call
      try {
        await predicate(v);
      } catch (err) {
        if (!failed) deadline = Date.now() + SHRINK_MS;
        failed = true;
        throw err;
      }
    }),
    { numRuns: runs, seed: SEED },
  );
  if (details.failed) {
    const err = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    failures.push(`${name}: ${clip(err.split('\n')[0]!, 600)}\n    counterexample: ${clip(brief(details.counterexample), 1500)}\n    replay: FUZZ_SEED=${details.seed} (fc path ${details.counterexamplePath}), after ${details.numRuns} runs and ${details.numShrinks} shrinks`);
  }
}

// ---------------------------------------------------------------------------------------------------------

describe('fuzz: every RPC with malformed, oversized, truncated and hostile input', () => {
  let w: World;
  let tables: TableSnapshot;
  const stats: Stats = { calls: 0, byCode: new Map(), byRpc: new Map(), properties: 0 };
  let logsChecked = 0;
  const started = Date.now();

  beforeAll(async () => {
    w = await buildWorld();
    tables = new TableSnapshot(w.t.dataDir);
  });
  afterAll(async () => {
    const codes = [...stats.byCode].map(([k, v]) => `${k} ${v}`).join(', ');
    console.log(`fuzz: ${RPCS.length} RPCs, ${stats.properties} properties, ${stats.calls} calls (${codes}) in ${((Date.now() - started) / 1000).toFixed(1)} s; seed ${SEED}`);
    // Which answers each RPC gave per credential: shows how deep the fuzzed values got.
    const abbrev = (m: Map<string, number>) => [...m].map(([k, v]) => `${k.split('_').map((x) => x[0]).join('')}${v}`).join(' ');
    console.log([...stats.byRpc].map(([k, m]) => `  ${k}: ${abbrev(m)}`).join('\n'));
    tables?.close();
    w?.raw.close();
    await w?.t.stop(true);
  });

  /** Log lines since the last check: none carries the marker, none is an error. */
  function newLogProblems(): string[] {
    const lines = w.t.logs.slice(logsChecked);
    logsChecked = w.t.logs.length;
    const bad = lines.filter((l) => l.includes(MARKER) || l.includes('"level":"error"'));
    return bad.slice(0, 2).map((l, i) => `log line${i === 1 && bad.length > 2 ? ` (and ${bad.length - 2} more)` : ''}: ${clip(l, 400)}`);
  }

  async function fuzzArm(arm: Arm): Promise<string[]> {
    const failures: string[] = [];
    const authArb: fc.Arbitrary<Auth> = arm === 'none' ? garbageAuth(w) : fc.constant([['authorization', `Bearer ${arm === 'app' ? w.app.token : w.admin}`]] as const);
    for (const rpc of RPCS) {
      if (arm === 'app') await ensureSession(w);
      const before = await listingSnapshot(w);
      let last = tables.take();
      const oks: string[] = [];
      stats.properties += 1;
      await runProperty(
        `${rpc.path} as ${arm}`,
        fc.record({ request: requestFor(rpc.input, w), auth: authArb }),
        async ({ request, auth }) => {
          const body = encode(rpc.input, request);
          const o = await w.raw.call(rpc.path, body, metadataOf(auth));
          count(stats, o, rpc, arm);
          checkAnswer(o, rpc, arm, body);
          const now = tables.take();
          const changed = changedTables(last, now);
          last = now;
          if (o.code === status.OK && changed.length > 0) oks.push(`${rpc.path} changed ${changed.join(', ')}`);
          if (o.code !== status.OK && changed.length > 0) {
            throw new Error(`${rpc.path} as ${arm}: refused with ${status[o.code]} (${clip(o.details)}) but changed ${changed.join(', ')}`);
          }
        },
        failures,
      );
      const after = await listingSnapshot(w);
      // Without an admin key nothing may change at all; with it, only calls that succeeded may have.
      if (after !== before && (arm !== 'admin' || oks.length === 0)) {
        failures.push(`${rpc.path} as ${arm}: the listings changed (${oks.length ? oks.join('; ') : 'no call succeeded'})`);
      }
      failures.push(...newLogProblems().map((p) => `${rpc.path} as ${arm}: ${p}`));
    }
    return failures;
  }

  it('(a) without a valid credential: garbage authorization metadata, every RPC', { timeout: 300_000 }, async () => {
    expect(RPCS.length).toBeGreaterThan(0);
    expect(await fuzzArm('none')).toEqual([]);
  });

  it('(b) with a plain application token (a resource server, neither trusted nor admin), every RPC', { timeout: 300_000 }, async () => {
    expect(await fuzzArm('app')).toEqual([]);
  });

  it('undecodable requests (random, truncated, corrupted bytes) get INVALID_ARGUMENT, never INTERNAL', { timeout: 300_000 }, async () => {
    const failures: string[] = [];
    for (const rpc of RPCS) {
      stats.properties += 1;
      let last = tables.take();
      await runProperty(
        `${rpc.path} undecodable`,
        fc.record({ body: undecodableFor(rpc, w), arm: fc.constantFrom<Arm>('none', 'app', 'admin') }),
        async ({ body, arm }) => {
          const md = arm === 'none' ? new Metadata() : bearer(arm === 'app' ? w.app.token : w.admin);
          const o = await w.raw.call(rpc.path, body, md);
          count(stats, o, rpc, `${arm} bytes`);
          checkAnswer(o, rpc, arm, body);
          const now = tables.take();
          const changed = changedTables(last, now);
          last = now;
          if (o.code !== status.OK && changed.length > 0) throw new Error(`${rpc.path} as ${arm}: refused, but changed ${changed.join(', ')}`);
        },
        failures,
      );
      failures.push(...newLogProblems().map((p) => `${rpc.path} undecodable: ${p}`));
    }
    expect(failures).toEqual([]);
  });

  it('(c) with the admin key, every RPC: refused calls change nothing', { timeout: 300_000 }, async () => {
    expect(await fuzzArm('admin')).toEqual([]);
  });

  it('is still healthy afterwards: GetJwks and the health check succeed', async () => {
    const jwks = await call(w.t.pop.getJwks, w.t.pop, {});
    expect(JSON.parse(jwks.jwksJson).keys.length).toBeGreaterThan(0);
    for (const service of ['', 'sts.v1.PopService', 'sts.v1.SessionService', 'sts.v1.SecretService']) {
      expect((await w.raw.health(service)).toString('hex'), service).toBe('0801'); // status: SERVING
    }
    // And it still does its job (with a new application and user: the admin arm may have changed the old ones).
    const fresh = await createApp(w.t, 'fuzz-after');
    const uid = await createUser(w.t, 'fuzz-after-user', PASSWORD);
    const logon = await call(w.t.session.logonUser, w.t.session, { credential: { $case: 'userCredential', value: { username: 'fuzz-after-user', password: PASSWORD } }, ticketApplicationId: '' }, fresh.token);
    expect(logon.userToken!.uid).toBe(uid);
    expect(w.t.logs.filter((l) => l.includes(MARKER))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('hostile cases', () => {
  const RS_APP = 'hostile-rs';
  const HOSTILE_ISSUER = 'https://idp.hostile.example';
  let t: TestSts;
  let raw: RawChannel;
  let admin: string;
  let rsToken: string;
  let appToken: string;
  let stsEnc: JWK;
  let sigJwk: JWK;
  let rsa: { privateKey: CryptoKey; jwk: JWK };
  let ec: { privateKey: CryptoKey; jwk: JWK };
  let userJwt: string;

  const claims = (sub: string) => ({ iss: HOSTILE_ISSUER, sub, aud: AUD, iat: NOW_S, exp: NOW_S + 600 });
  const storedSecrets = async () => (await t.sts.store.durable.list('user_secret')).length;
  const userCount = async () => (await call(t.session.listUsers, t.session, { usernamePrefix: '', pageSize: 1000, pageToken: '' }, admin)).users.length;
  const appIds = async () => (await call(t.session.listApplications, t.session, {}, admin)).applications.map((a) => a.applicationId);

  beforeAll(async () => {
    t = await startTestSts({ clock: new ManualClock(T0), overrides: OVERRIDES });
    raw = new RawChannel(t.address);
    admin = adminToken(t);
    rsToken = (await createApp(t, RS_APP)).token;
    appToken = (await createApp(t, 'hostile-app')).token;
    const rsaPair = await generateKeyPair('RS256', { extractable: true });
    const ecPair = await generateKeyPair('ES256', { extractable: true });
    rsa = { privateKey: rsaPair.privateKey, jwk: { ...(await exportJWK(rsaPair.publicKey)), kid: 'rsa-1', use: 'sig', alg: 'RS256' } };
    ec = { privateKey: ecPair.privateKey, jwk: { ...(await exportJWK(ecPair.publicKey)), kid: 'ec-1', use: 'sig', alg: 'ES256' } };
    await call(
      t.secret.putIdentityProvider,
      t.secret,
      { identityProvider: { issuer: HOSTILE_ISSUER, jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [rsa.jwk, ec.jwk] }) }, audiences: [AUD], algorithms: ['RS256', 'ES256'], clockSkew: undefined, subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false } },
      admin,
    );
    const rsKeys = await generateKeyPair('ECDH-ES+A256KW', { extractable: true });
    const rsJwks = { keys: [{ ...(await exportJWK(rsKeys.publicKey)), kid: 'rs-enc', use: 'enc', alg: 'ECDH-ES+A256KW' }] };
    await call(t.secret.putResourceServer, t.secret, { resourceServer: { resourceServerId: 'hostile', credential: { $case: 'applicationId', value: RS_APP }, audiences: [AUD], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify(rsJwks) } } }, admin);
    const jwks = await call(t.pop.getJwks, t.pop, {});
    const keys = (JSON.parse(jwks.jwksJson) as { keys: JWK[] }).keys;
    stsEnc = keys.find((k) => k.kid === jwks.primaryEncryptionKid)!;
    sigJwk = keys.find((k) => k.kid === jwks.primarySigningKid)!;
    await createUser(t, 'hostile-user', PASSWORD);
    userJwt = (await call(t.session.logonUser, t.session, { credential: { $case: 'userCredential', value: { username: 'hostile-user', password: PASSWORD } }, ticketApplicationId: '' }, appToken)).userTokenJwt;
  });
  afterAll(async () => {
    raw?.close();
    await t?.stop(true);
  });

  /** The three ways a third-party token reaches STS: all must refuse it as UNAUTHENTICATED, making nothing. */
  async function expectThirdPartyTokenRefused(token: string, what: string): Promise<void> {
    const users = await userCount();
    const secrets = await storedSecrets();
    const e1 = await callError(call(t.secret.getUserSecret, t.secret, { subjectToken: token }, rsToken));
    const e2 = await callError(
      call(t.secret.exchangeToken, t.secret, { grantType: EXCHANGE, subjectToken: token, subjectTokenType: JWT_TYPE, actorToken: '', actorTokenType: '', requestedTokenType: '', resource: [], audience: [], scope: '' }, rsToken),
    );
    const e3 = await callError(call(t.session.createUserFromThirdPartyToken, t.session, { thirdPartyToken: token, ticketApplicationId: '' }, appToken));
    for (const [rpc, e] of [['GetUserSecret', e1], ['ExchangeToken', e2], ['CreateUserFromThirdPartyToken', e3]] as const) {
      expect({ what, rpc, code: status[e.code], sts: e.metadata.get('sts-error-code')[0] }, e.details).toEqual({ what, rpc, code: 'UNAUTHENTICATED', sts: 'token_invalid' });
    }
    expect(e2.metadata.get('sts-oauth-error')[0]).toBe('invalid_grant');
    expect(await userCount(), what).toBe(users);
    expect(await storedSecrets(), what).toBe(secrets);
  }

  it('a 3 MiB value in each string field of every RPC is refused cleanly (no INTERNAL, no echo)', { timeout: 120_000 }, async () => {
    const huge = `${MARKER}${'A'.repeat(3 * MiB)}`;
    const failures: string[] = [];
    let calls = 0;
    for (const rpc of RPCS) {
      const arm: Arm = POLICY[rpc.path] === 'admin' || POLICY[rpc.path] === 'trusted' ? 'admin' : 'app';
      for (const init of hugeInits(rpc.input, huge)) {
        const body = encode(rpc.input, init);
        const o = await raw.call(rpc.path, body, bearer(arm === 'app' ? rsToken : admin));
        calls += 1;
        try {
          checkAnswer(o, rpc, arm, body);
        } catch (err) {
          failures.push(`${(err as Error).message} — request ${clip(brief(init), 300)}`);
        }
      }
    }
    console.log(`hostile: ${calls} calls with a 3 MiB string`);
    expect(calls).toBeGreaterThan(RPCS.length / 2);
    expect(failures).toEqual([]);
  });

  it('a JWE with "zip":"DEF" is refused (RFC 8725 section 3.6), also as a decompression bomb, on every decryption path', { timeout: 30_000 }, async () => {
    const plaintext = Buffer.from(JSON.stringify({ hello: 'world', pad: 'x'.repeat(1000) }));
    const decrypt = rpcOf('/sts.v1.PopService/Decrypt');
    const logon = rpcOf('/sts.v1.SessionService/LogonApplication');
    const failures: string[] = [];
    // A256GCM takes STS's own ECDH-ES+A256KW code, A128GCM the jose path.
    for (const enc of ['A256GCM', 'A128GCM'] as const) {
      // Control: the hand-made JWE is genuine, so a refusal below is about "zip".
      const plain = await call(t.pop.decrypt, t.pop, { jwe: jweTo(stsEnc, plaintext, {}, enc) }, admin);
      expect(Buffer.from(plain.plaintext)).toEqual(plaintext);
      const cred = Buffer.from(JSON.stringify({ application_id: RS_APP, application_secret: `${MARKER}-wrong-secret` }));
      for (const [what, body] of [['small', plaintext], ['bomb (64 MiB of zeros)', Buffer.alloc(64 * MiB)], ['credential', cred]] as const) {
        const jwe = jweTo(stsEnc, body, { zip: 'DEF' }, enc);
        expect(jwe.length).toBeLessThan(MiB);
        const started = Date.now();
        const o = await raw.call(decrypt.path, encode(decrypt.input, { jwe }), bearer(admin));
        if (o.code !== status.INVALID_ARGUMENT || o.details !== 'decryption failed') failures.push(`Decrypt ${enc} zip ${what}: ${status[o.code]} "${o.details}"`);
        if (Date.now() - started > 5000) failures.push(`Decrypt ${enc} zip ${what}: took ${Date.now() - started} ms`);
        const l = await raw.call(logon.path, encode(logon.input, { credential: { case: 'applicationCredentialJwe', value: jwe } }), new Metadata());
        // (The bomb is refused for its size before decryption: any INVALID_ARGUMENT will do.)
        if (l.code !== status.INVALID_ARGUMENT || (l.details !== 'decryption failed' && what !== 'bomb (64 MiB of zeros)')) failures.push(`LogonApplication ${enc} zip ${what}: ${status[l.code]} "${l.details}"`);
        expect(l.details).not.toContain(MARKER);
      }
    }
    expect(failures).toEqual([]);
  });

  it('a JWT with "alg":"none" is refused everywhere', { timeout: 30_000 }, async () => {
    for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
      await expectThirdPartyTokenRefused(hmacJws({ alg, typ: 'JWT' }, claims(`${MARKER}-none`), undefined), `alg ${alg}`);
      await expectThirdPartyTokenRefused(hmacJws({ alg, kid: 'rsa-1', typ: 'JWT' }, claims(`${MARKER}-none`), undefined), `alg ${alg} with kid`);
    }
    // STS's own user token JWT, re-headed as unsigned.
    const payload = JSON.parse(Buffer.from(userJwt.split('.')[1]!, 'base64url').toString()) as unknown;
    const unsigned = hmacJws({ alg: 'none', kid: sigJwk.kid, typ: 'JWT' }, payload, undefined);
    expect((await call(t.session.validateUserToken, t.session, { token: { $case: 'userTokenJwt', value: unsigned } }, appToken)).active).toBe(false);
    expect((await call(t.session.validateUserToken, t.session, { token: { $case: 'userTokenJwt', value: userJwt } }, appToken)).active).toBe(true);
    const v = await callError(call(t.pop.verify, t.pop, { jws: unsigned }, appToken));
    expect([status[v.code], v.details]).toEqual(['INVALID_ARGUMENT', 'signature verification failed']);
  });

  it("a JWT signed with HS256 using the identity provider's public key as the HMAC secret is refused", { timeout: 30_000 }, async () => {
    const rsaPub = createPublicKey({ key: rsa.jwk as JsonWebKey, format: 'jwk' });
    const ecPub = createPublicKey({ key: ec.jwk as JsonWebKey, format: 'jwk' });
    const secrets: [string, Uint8Array][] = [
      ['RSA PEM', Buffer.from(rsaPub.export({ type: 'spki', format: 'pem' }))],
      ['RSA PEM without newline', Buffer.from((rsaPub.export({ type: 'spki', format: 'pem' }) as string).trim())],
      ['RSA PKCS#1 PEM', Buffer.from(rsaPub.export({ type: 'pkcs1', format: 'pem' }))],
      ['RSA DER', rsaPub.export({ type: 'spki', format: 'der' })],
      ['RSA JWK JSON', Buffer.from(JSON.stringify(rsa.jwk))],
      ['RSA modulus', Buffer.from(rsa.jwk.n!, 'base64url')],
      ['EC PEM', Buffer.from(ecPub.export({ type: 'spki', format: 'pem' }))],
      ['EC JWK JSON', Buffer.from(JSON.stringify(ec.jwk))],
    ];
    for (const [what, key] of secrets) {
      for (const [alg, kid] of [['HS256', 'rsa-1'], ['HS256', 'ec-1'], ['HS384', 'rsa-1'], ['HS512', undefined]] as const) {
        await expectThirdPartyTokenRefused(hmacJws({ alg, typ: 'JWT', ...(kid ? { kid } : {}) }, claims(`${MARKER}-hs`), key), `${alg} kid ${kid} with the ${what}`);
      }
    }
    // The same trick against STS's own signing key: not a user token, not a valid JWS.
    const payload = JSON.parse(Buffer.from(userJwt.split('.')[1]!, 'base64url').toString()) as unknown;
    const sigPub = createPublicKey({ key: sigJwk as JsonWebKey, format: 'jwk' });
    for (const key of [Buffer.from(JSON.stringify(sigJwk)), Buffer.from(sigPub.export({ type: 'spki', format: 'pem' })), Buffer.from(sigJwk.x ?? '', 'base64url')]) {
      const forged = hmacJws({ alg: 'HS256', kid: sigJwk.kid, typ: 'JWT' }, payload, key);
      expect((await call(t.session.validateUserToken, t.session, { token: { $case: 'userTokenJwt', value: forged } }, appToken)).active).toBe(false);
      const v = await callError(call(t.pop.verify, t.pop, { jws: forged }, appToken));
      expect(status[v.code]).toBe('INVALID_ARGUMENT');
    }
    // Control: the same claims properly signed are accepted (the refusals above were about the algorithm).
    const good = await new SignJWT(claims('hs-control')).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1', typ: 'JWT' }).sign(rsa.privateKey);
    expect((await call(t.secret.getUserSecret, t.secret, { subjectToken: good }, rsToken)).subject).toBe('hs-control');
  });

  it('CreateApplication with negative or out-of-range durations is INVALID_ARGUMENT and creates nothing', async () => {
    const before = await appIds();
    const cases: [string, Partial<Application>][] = [
      ['idle -1 s', { userTokenIdleTimeout: { seconds: -1, nanos: 0 } }],
      ['idle -1 ns', { userTokenIdleTimeout: { seconds: 0, nanos: -1 } }],
      ['idle -1 ms', { userTokenIdleTimeout: { seconds: 0, nanos: -1_000_000 } }],
      ['max lifetime -1 s', { userTokenMaxLifetime: { seconds: -1, nanos: 0 } }],
      ['max lifetime -2^53 s', { userTokenMaxLifetime: { seconds: -(2 ** 53), nanos: 0 } }],
      ['idle 2^53 s', { userTokenIdleTimeout: { seconds: 2 ** 53, nanos: 0 } }],
      ['idle 2^62 s', { userTokenIdleTimeout: { seconds: 2 ** 62, nanos: 0 } }],
    ];
    const failures: string[] = [];
    for (const [what, fields] of cases) {
      const id = `neg-${what.replace(/[^a-z0-9]+/gi, '-')}`;
      const e = await callError(call(t.session.createApplication, t.session, { application: Application.fromPartial({ applicationId: id, name: id, ...fields }), applicationSecret: '' }, admin));
      const got = { code: status[e.code], sts: e.metadata.get('sts-error-code')[0], details: e.details };
      // Past 2^53 the request does not even decode (ts-proto numbers): the message names the int64 range instead.
      const named = /user_token_(idle_timeout|max_lifetime)/.test(got.details) || (/2\^(53|62)/.test(what) && /int64 values within 2\^53/.test(got.details));
      if (got.code !== 'INVALID_ARGUMENT' || got.sts !== 'invalid_argument' || !named) failures.push(`${what}: ${JSON.stringify(got)}`);
    }
    expect(failures).toEqual([]);
    expect(await appIds()).toEqual(before);
  });

  it('a JWS that STS signed over "null", presented as a user token JWT, is simply not active', async () => {
    for (const payload of ['null', '0', '"x"', '[]', 'true']) {
      const { jws } = await call(t.pop.sign, t.pop, { payload: Buffer.from(payload), type: 'JWT', contentType: '' }, admin);
      const o = await raw.call('/sts.v1.SessionService/ValidateUserToken', encode(rpcOf('/sts.v1.SessionService/ValidateUserToken').input, { token: { case: 'userTokenJwt', value: jws } }), bearer(appToken));
      expect({ payload, code: status[o.code], details: o.details }).toEqual({ payload, code: 'OK', details: '' });
    }
  });

  it('an identity provider key below 2048-bit RSA never leads to INTERNAL', { timeout: 60_000 }, async () => {
    // An identity provider that publishes an RSA-1024 signing key, and a token signed with it.
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const weakJwk = { ...weak.publicKey.export({ format: 'jwk' }), kid: 'rsa-1024', use: 'sig', alg: 'RS256' };
    const weakIssuer = 'https://weak.hostile.example';
    const putIdp = rpcOf('/sts.v1.SecretService/PutIdentityProvider');
    const put = await raw.call(
      putIdp.path,
      encode(putIdp.input, { identityProvider: { issuer: weakIssuer, jwksSource: { case: 'jwksJson', value: JSON.stringify({ keys: [weakJwk] }) }, audiences: [AUD], algorithms: ['RS256'] } }),
      bearer(admin),
    );
    expect(['OK', 'INVALID_ARGUMENT']).toContain(status[put.code]);
    const getSecret = rpcOf('/sts.v1.SecretService/GetUserSecret');
    if (put.code === status.OK) {
      const token = signJws('RS256', weak.privateKey, { kid: 'rsa-1024' }, { ...claims('weak-idp'), iss: weakIssuer });
      const secrets = await storedSecrets();
      const o = await raw.call(getSecret.path, encode(getSecret.input, { subjectToken: token }), bearer(rsToken));
      expect({ code: status[o.code], sts: o.stsCode }, `GetUserSecret with a token signed by an RSA-1024 key: ${o.details}`).toEqual({ code: 'UNAUTHENTICATED', sts: 'token_invalid' });
      expect(await storedSecrets()).toBe(secrets);
    }

  });

  it('a resource server encryption key below 2048-bit RSA never leads to INTERNAL or a secret made for a refused call', { timeout: 60_000 }, async () => {
    const getSecret = rpcOf('/sts.v1.SecretService/GetUserSecret');
    const weakEnc = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const rsApp = 'weak-rs';
    const weakRsToken = (await createApp(t, rsApp)).token;
    const putRs = rpcOf('/sts.v1.SecretService/PutResourceServer');
    const stored = await raw.call(
      putRs.path,
      encode(putRs.input, {
        resourceServer: {
          resourceServerId: 'weak',
          credential: { case: 'applicationId', value: rsApp },
          audiences: [AUD],
          encryptionKeySource: { case: 'jwksJson', value: JSON.stringify({ keys: [{ ...weakEnc.publicKey.export({ format: 'jwk' }), kid: 'weak-enc', use: 'enc', alg: 'RSA-OAEP-256' }] }) },
        },
      }),
      bearer(admin),
    );
    expect(['OK', 'INVALID_ARGUMENT']).toContain(status[stored.code]);
    if (stored.code === status.OK) {
      const token = signJws('ES256', ec.privateKey, { kid: 'ec-1' }, claims('weak-rs-user'));
      const secrets = await storedSecrets();
      const o = await raw.call(getSecret.path, encode(getSecret.input, { subjectToken: token }), bearer(weakRsToken));
      expect.soft(ALLOWED.has(o.code), `GetUserSecret for a resource server with an RSA-1024 key: ${status[o.code]} ${o.details}`).toBe(true);
      if (o.code !== status.OK) expect.soft(await storedSecrets(), `GetUserSecret answered ${status[o.code]}, yet made a user secret`).toBe(secrets);
    }
  });
});

/** One request per string field (and per bytes field) of the message, that field holding `huge`. */
function hugeInits(desc: DescMessage, huge: string, depth = 0): Init[] {
  const out: Init[] = [];
  for (const f of desc.fields) {
    const put = (v: unknown): Init => (f.oneof ? { [f.oneof.localName]: { case: f.localName, value: v } } : { [f.localName]: v });
    if (f.fieldKind === 'scalar' && f.scalar === ScalarType.STRING) out.push(put(huge));
    else if (f.fieldKind === 'scalar' && f.scalar === ScalarType.BYTES) out.push(put(Buffer.from(huge)));
    else if (f.fieldKind === 'list' && f.listKind === 'scalar' && f.scalar === ScalarType.STRING) out.push({ [f.localName]: [huge] });
    else if (f.fieldKind === 'message' && depth < 2) out.push(...hugeInits(f.message, huge, depth + 1).map(put));
    else if (f.fieldKind === 'list' && f.listKind === 'message' && depth < 2) out.push(...hugeInits(f.message, huge, depth + 1).map((m) => ({ [f.localName]: [m] })));
  }
  return out;
}
