/**
 * The node:crypto fast paths of SecretService against jose, which they replaced:
 *
 * - JWT verification (src/secret/jwt-verify.ts through IdentityProviderRegistry.verify): a corpus of tokens,
 *   signed by jose for every allowed algorithm and mutated in every way that matters (tampering, "none", HMAC
 *   with the public key, alg/key mismatch, crit, b64, kids, time claims, issuer, audience, encodings, DER
 *   signatures), each verified both ways: the registry's outcome must be the expected one and the one jose's
 *   jwtVerify gives with the options the registry used to pass it, mapped as the registry mapped jose's errors.
 * - ECDH-ES(+A256KW) encryption to resource servers (src/crypto/jose-primitives.ts): JWEs for every curve that
 *   jose's compactDecrypt opens, with the header jose would write; the Concat KDF and AES Key Wrap against the
 *   known answers of RFC 7518 appendix C and RFC 3394 section 4.6.
 */
import { type JsonWebKeyInput, type KeyObject, constants, createDecipheriv, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, sign as nodeSign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompactEncrypt, type JWK, SignJWT, compactDecrypt, createLocalJWKSet, decodeProtectedHeader, errors, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { type EcdhEsAlg, EcdhRecipient, type JwsAlg, aesKeyUnwrap256, aesKeyWrap256, b64u, concatKdf, jwsSign } from '../src/crypto/jose-primitives.js';
import { StsError } from '../src/errors.js';
import { silentLogger } from '../src/log.js';
import { IdentityProviderRegistry, SIGNATURE_ALGS, identityProviderRecord } from '../src/secret/identity-providers.js';
import { JwsKeySet, JwtRejected } from '../src/secret/jwt-verify.js';
import { ResourceServerRegistry, resourceServerRecord } from '../src/secret/resource-servers.js';
import { type Db, openDatabase } from '../src/store/sqlite/database.js';

const T0 = Date.UTC(2026, 5, 1);
const ISS = 'https://idp.example';
const AUD = 'api://orders';
const OTHER_AUD = 'api://billing';
const SKEW_S = 60;

interface Signer {
  kid: string;
  publicKey: KeyObject;
  privateKey: KeyObject;
  jwk: JWK;
}

function signer(kid: string, pair: { publicKey: KeyObject; privateKey: KeyObject }, extra: Partial<JWK> = {}): Signer {
  return { kid, ...pair, jwk: { ...(pair.publicKey.export({ format: 'jwk' }) as JWK), kid, ...extra } };
}

// One key per family; an RSA key pinned to RS256; keys that jose would not use for verification.
const K = {
  p256: signer('p256', generateKeyPairSync('ec', { namedCurve: 'P-256' }), { use: 'sig' }),
  p384: signer('p384', generateKeyPairSync('ec', { namedCurve: 'P-384' }), { alg: 'ES384' }),
  p521: signer('p521', generateKeyPairSync('ec', { namedCurve: 'P-521' })),
  rsa: signer('rsa', generateKeyPairSync('rsa', { modulusLength: 2048 })),
  rs256: signer('rsa-rs256', generateKeyPairSync('rsa', { modulusLength: 2048 }), { alg: 'RS256' }),
  ed: signer('ed', generateKeyPairSync('ed25519')),
  /** key_ops that WebCrypto refuses for a public key. */
  ops: signer('ops', generateKeyPairSync('ec', { namedCurve: 'P-256' }), { key_ops: ['verify', 'sign'] }),
  opsSign: signer('ops-sign', generateKeyPairSync('ec', { namedCurve: 'P-256' }), { key_ops: ['sign'] }),
  enc: signer('enc', generateKeyPairSync('ec', { namedCurve: 'P-256' }), { use: 'enc' }),
};
const JWKS = { keys: Object.values(K).map((s) => s.jwk) };
/** The signer of each algorithm. */
const BY_ALG: Record<(typeof SIGNATURE_ALGS)[number], Signer> = {
  RS256: K.rsa,
  RS384: K.rsa,
  RS512: K.rsa,
  PS256: K.rsa,
  PS384: K.rsa,
  PS512: K.rsa,
  ES256: K.p256,
  ES384: K.p384,
  ES512: K.p521,
  EdDSA: K.ed,
  Ed25519: K.ed,
};

const clock = new ManualClock(T0);
/** The registry's view of STS itself: no key of these tests is STS's. */
const NOT_STS = { issuer: 'urn:sts:local', isOwnKey: () => false };
const NOW = Math.floor(T0 / 1000);
let dir: string;
let db: Db;
let registry: IdentityProviderRegistry;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sts-jose-fast-'));
  db = openDatabase(dir);
  registry = new IdentityProviderRegistry(db, { clock, logger: silentLogger, isOwnKey: NOT_STS.isOwnKey });
  registry.put(
    identityProviderRecord(
      { issuer: ISS, jwksSource: { $case: 'jwksJson', value: JSON.stringify(JWKS) }, audiences: [AUD, OTHER_AUD], algorithms: [...SIGNATURE_ALGS], subjectClaim: '', securityLevel: 0, clockSkew: undefined, applicationAudiences: [], tokensWithoutJti: false,
        // jose does not ask for "iat"; the registry does unless told otherwise (tested in session-authority.test.ts).
        acceptTokensWithoutIat: true },
      'identity_provider',
      clock.now(),
      NOT_STS,
    ),
  );
});

afterAll(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

const claims = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ iss: ISS, sub: 'alice', aud: AUD, iat: NOW, exp: NOW + 600, ...extra });

/** A JWT signed by jose. */
function joseJwt(alg: JwsAlg, o: { kid?: string | null; claims?: Record<string, unknown>; header?: Record<string, unknown> } = {}): Promise<string> {
  const s = BY_ALG[alg];
  const header = { alg, ...(o.kid === null ? {} : { kid: o.kid ?? s.kid }), typ: 'JWT', ...o.header };
  return new SignJWT(o.claims ?? claims()).setProtectedHeader(header).sign(s.privateKey);
}

const enc = (v: unknown): string => b64u(typeof v === 'string' ? v : JSON.stringify(v));

/** A compact JWS of the given encoded parts, signed with `key` under `alg` (whatever the header says). */
function signParts(headerPart: string, payloadPart: string, alg: JwsAlg, key: KeyObject): string {
  const input = `${headerPart}.${payloadPart}`;
  return `${input}.${b64u(jwsSign(alg, key, Buffer.from(input, 'ascii')))}`;
}

/** A compact JWS of this header and these claims (objects, or raw JSON text), signed by `s` under `alg`. */
function signed(header: Record<string, unknown>, body: unknown, s: Signer = K.p256, alg: JwsAlg = (header.alg as JwsAlg | undefined) ?? 'ES256'): string {
  return signParts(enc(header), enc(body), alg, s.privateKey);
}

const parts = (jwt: string) => jwt.split('.') as [string, string, string];
const flipLastByte = (part: string) => {
  const b = Buffer.from(part, 'base64url');
  b[b.length - 1]! ^= 1;
  return b64u(b);
};
/** A JSON object whose encoding is a multiple of 4 characters (its JSON a multiple of 3 bytes). */
function padded(obj: Record<string, unknown>): Record<string, unknown> {
  for (let pad = '';; pad += 'x') {
    const o = { ...obj, pad };
    if (JSON.stringify(o).length % 3 === 0) return o;
  }
}

const OK = 'ok';
const INVALID = 'subject token invalid';
const SIG = 'subject token signature invalid';
const UNKNOWN = 'subject token signed with an unknown key';
const AMBIGUOUS = 'subject token key is ambiguous (several keys match its kid)';
const ALG = 'subject token algorithm not allowed';
/** Refused by the registry before any signature check (not a JWT, untrusted issuer): jose must refuse too. */
const MALFORMED = 'invalid_argument';

/** The registry's outcome: "ok", the token_invalid message, or the code of any other StsError. */
async function fastOutcome(jwt: string): Promise<string> {
  try {
    const v = await registry.verify(jwt);
    expect(v.subject).toBe('alice');
    return 'ok';
  } catch (err) {
    if (!(err instanceof StsError)) throw err;
    return err.code === 'token_invalid' ? err.message : err.code;
  }
}

/**
 * The registry's outcome before the fast path: its own algorithm check (unchanged), then jose's jwtVerify with
 * the options it passed, its errors mapped as it mapped them (joseFailure), then its subject check.
 */
async function joseOutcome(jwt: string): Promise<string> {
  let alg: unknown;
  try {
    alg = (JSON.parse(Buffer.from(jwt.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>).alg;
  } catch {
    // not a JWT: jose refuses it below
  }
  if (typeof alg !== 'string' || !(SIGNATURE_ALGS as readonly string[]).includes(alg)) return ALG;
  try {
    const { payload } = await jwtVerify(jwt, createLocalJWKSet(JWKS), {
      issuer: ISS,
      audience: [AUD, OTHER_AUD],
      algorithms: [...SIGNATURE_ALGS],
      clockTolerance: SKEW_S,
      currentDate: new Date(clock.now()),
      requiredClaims: ['exp'],
    });
    return typeof payload.sub === 'string' && payload.sub !== '' ? OK : 'subject token has no usable "sub" claim';
  } catch (err) {
    return `subject token ${joseReason(err)}`;
  }
}

function joseReason(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    const reasons: Record<string, string> = { nbf: 'not yet valid', aud: 'audience not accepted', iss: 'issuer mismatch', exp: 'has no valid "exp" claim' };
    return reasons[err.claim] ?? `has an invalid "${err.claim}" claim`;
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature invalid';
  if (err instanceof errors.JWKSNoMatchingKey) return 'signed with an unknown key';
  if (err instanceof errors.JWKSMultipleMatchingKeys) return 'key is ambiguous (several keys match its kid)';
  if (err instanceof errors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  return 'invalid';
}

interface Case {
  name: string;
  jwt: () => string | Promise<string>;
  expect: string;
}

async function corpus(): Promise<Case[]> {
  const es = await joseJwt('ES256');
  const rs = await joseJwt('RS256');
  const ed = await joseJwt('EdDSA');
  const [esH, esP, esS] = parts(es);
  const cases: Case[] = [];
  for (const alg of SIGNATURE_ALGS) {
    cases.push({ name: `${alg} signed by jose`, jwt: () => joseJwt(alg), expect: OK });
  }
  for (const [name, jwt] of [['ES256', es], ['RS256', rs], ['EdDSA', ed]] as const) {
    const [h, p, s] = parts(jwt);
    cases.push(
      { name: `${name}: tampered payload`, jwt: () => `${h}.${enc({ ...claims(), sub: 'mallory' })}.${s}`, expect: SIG },
      { name: `${name}: tampered signature`, jwt: () => `${h}.${p}.${flipLastByte(s)}`, expect: SIG },
      { name: `${name}: tampered header`, jwt: () => `${enc({ ...decodeProtectedHeader(jwt), typ: 'at+jwt' })}.${p}.${s}`, expect: SIG },
      { name: `${name}: truncated signature`, jwt: () => `${h}.${p}.${s.slice(0, -4)}`, expect: SIG },
      { name: `${name}: empty signature`, jwt: () => `${h}.${p}.`, expect: SIG },
      { name: `${name}: signature of 4n+1 characters`, jwt: () => `${h}.${p}.${s}AAA`, expect: INVALID },
      { name: `${name}: padding in the signature`, jwt: () => `${h}.${p}.${s}=`, expect: MALFORMED },
    );
  }
  cases.push(
    // "none", HMAC keyed with the provider's public key (the classic confusion), alg/key mismatches.
    { name: 'alg none', jwt: () => `${enc({ alg: 'none' })}.${enc(claims())}.`, expect: ALG },
    { name: 'alg "None"', jwt: () => `${enc({ alg: 'None', kid: 'p256' })}.${enc(claims())}.`, expect: ALG },
    {
      name: 'HS256 keyed with the public key (PEM)',
      jwt: async () => new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'p256' }).sign(Buffer.from(K.p256.publicKey.export({ type: 'spki', format: 'pem' }))),
      expect: ALG,
    },
    { name: 'HS256 keyed with the public JWK', jwt: async () => new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'p256' }).sign(Buffer.from(JSON.stringify(K.p256.jwk))), expect: ALG },
    { name: 'alg missing', jwt: () => signed({ kid: 'p256' }, claims()), expect: ALG },
    { name: 'alg not a string', jwt: () => signed({ alg: ['ES256'], kid: 'p256' }, claims(), K.p256, 'ES256'), expect: ALG },
    { name: 'duplicate alg member, last one "none"', jwt: () => `${b64u('{"alg":"ES256","kid":"p256","alg":"none"}')}.${esP}.${esS}`, expect: ALG },
    { name: 'ES384 header on a P-256 key', jwt: () => signed({ alg: 'ES384', kid: 'p256' }, claims(), K.p256, 'ES256'), expect: UNKNOWN },
    { name: 'ES256 header on a P-384 key', jwt: () => signed({ alg: 'ES256', kid: 'p384' }, claims(), K.p384, 'ES384'), expect: UNKNOWN },
    { name: 'RS256 header on an EC key', jwt: () => signed({ alg: 'RS256', kid: 'p256' }, claims(), K.p256, 'ES256'), expect: UNKNOWN },
    { name: 'EdDSA header on an RSA key', jwt: () => signed({ alg: 'EdDSA', kid: 'rsa' }, claims(), K.rsa, 'RS256'), expect: UNKNOWN },
    { name: 'ES256 header on an Ed25519 key', jwt: () => signed({ alg: 'ES256', kid: 'ed' }, claims(), K.ed, 'EdDSA'), expect: UNKNOWN },
    { name: 'PS256 on a key pinned to RS256', jwt: () => signed({ alg: 'PS256', kid: 'rsa-rs256' }, claims(), K.rs256, 'PS256'), expect: UNKNOWN },
    { name: 'RS256 on the key pinned to RS256', jwt: () => signed({ alg: 'RS256', kid: 'rsa-rs256' }, claims(), K.rs256), expect: OK },
    { name: 'PKCS#1 v1.5 signature under a PS256 header', jwt: () => signed({ alg: 'PS256', kid: 'rsa' }, claims(), K.rsa, 'RS256'), expect: SIG },
    {
      name: 'PS256 with a 20-byte salt',
      jwt: () => {
        const input = `${enc({ alg: 'PS256', kid: 'rsa' })}.${enc(claims())}`;
        return `${input}.${b64u(nodeSign('sha256', Buffer.from(input), { key: K.rsa.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 20 }))}`;
      },
      expect: SIG,
    },
    {
      name: 'DER-encoded ECDSA signature',
      jwt: () => `${esH}.${esP}.${b64u(nodeSign('sha256', Buffer.from(`${esH}.${esP}`), { key: K.p256.privateKey, dsaEncoding: 'der' }))}`,
      expect: SIG,
    },
    { name: 'signature of another token', jwt: async () => `${esH}.${esP}.${parts(await joseJwt('ES256', { claims: claims({ sub: 'bob' }) }))[2]}`, expect: SIG },
    // crit and b64 (RFC 7515 section 4.1.11, RFC 7797).
    { name: 'crit naming an unknown extension', jwt: () => signed({ alg: 'ES256', kid: 'p256', crit: ['exp'], exp: NOW + 600 }, claims()), expect: INVALID },
    { name: 'crit naming an unknown extension, with an unknown kid', jwt: () => signed({ alg: 'ES256', kid: 'nope', crit: ['exp'], exp: NOW + 600, b64: true }, claims()), expect: INVALID },
    { name: 'crit naming an absent member', jwt: () => signed({ alg: 'ES256', kid: 'p256', crit: ['b64'] }, claims()), expect: INVALID },
    { name: 'crit empty', jwt: () => signed({ alg: 'ES256', kid: 'p256', crit: [] }, claims()), expect: INVALID },
    { name: 'crit not a list', jwt: () => signed({ alg: 'ES256', kid: 'p256', crit: 'b64', b64: false }, claims()), expect: INVALID },
    { name: 'crit b64 with a non-boolean b64', jwt: () => signed({ alg: 'ES256', kid: 'p256', crit: ['b64'], b64: 'false' }, claims()), expect: INVALID },
    { name: 'b64 false (crit b64), signed', jwt: () => signed({ alg: 'ES256', kid: 'p256', crit: ['b64'], b64: false }, claims()), expect: INVALID },
    { name: 'b64 false (crit b64), bad signature', jwt: () => `${enc({ alg: 'ES256', kid: 'p256', crit: ['b64'], b64: false })}.${esP}.${esS}`, expect: SIG },
    { name: 'crit with an unknown kid', jwt: () => signed({ alg: 'ES256', kid: 'nope', crit: ['b64'], b64: false }, claims()), expect: UNKNOWN },
    { name: 'b64 true without crit', jwt: () => signed({ alg: 'ES256', kid: 'p256', b64: true }, claims()), expect: OK },
    // kid (RFC 7515 section 4.1.4) and the key set.
    { name: 'unknown kid', jwt: () => joseJwt('ES256', { kid: 'p256-old' }), expect: UNKNOWN },
    { name: 'kid not a string', jwt: () => signed({ alg: 'ES256', kid: 5 }, claims()), expect: UNKNOWN },
    { name: 'kid of an encryption key (use enc)', jwt: () => signed({ alg: 'ES256', kid: 'enc' }, claims(), K.enc), expect: UNKNOWN },
    { name: 'kid of a key whose key_ops lack verify', jwt: () => signed({ alg: 'ES256', kid: 'ops-sign' }, claims(), K.opsSign), expect: UNKNOWN },
    { name: 'kid of a key whose key_ops WebCrypto refuses', jwt: () => signed({ alg: 'ES256', kid: 'ops' }, claims(), K.ops), expect: INVALID },
    { name: 'no kid, one ES384 key', jwt: () => joseJwt('ES384', { kid: null }), expect: OK },
    { name: 'no kid, one Ed25519 key', jwt: () => joseJwt('Ed25519', { kid: null }), expect: OK },
    { name: 'no kid, one RSA key without alg for PS256', jwt: () => joseJwt('PS256', { kid: null }), expect: OK },
    { name: 'no kid, two RSA keys for RS256', jwt: () => joseJwt('RS256', { kid: null }), expect: AMBIGUOUS },
    { name: 'no kid, two P-256 keys for ES256', jwt: () => joseJwt('ES256', { kid: null }), expect: AMBIGUOUS },
    { name: 'kid of another key of the same type', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, claims(), K.ops), expect: SIG },
    // Time claims, with 60 s of tolerance.
    { name: 'expired', jwt: () => joseJwt('ES256', { claims: claims({ iat: NOW - 3600, exp: NOW - 61 }) }), expect: 'subject token expired' },
    { name: 'exp exactly at the tolerance', jwt: () => joseJwt('ES256', { claims: claims({ exp: NOW - SKEW_S }) }), expect: 'subject token expired' },
    { name: 'exp within the tolerance', jwt: () => joseJwt('ES256', { claims: claims({ exp: NOW - SKEW_S + 1 }) }), expect: OK },
    { name: 'exp missing', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, { iss: ISS, sub: 'alice', aud: AUD }), expect: 'subject token has no valid "exp" claim' },
    { name: 'exp a string', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, claims({ exp: String(NOW + 600) })), expect: 'subject token has no valid "exp" claim' },
    { name: 'exp null', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, claims({ exp: null })), expect: 'subject token has no valid "exp" claim' },
    { name: 'exp 1e400 (Infinity)', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, JSON.stringify(claims()).replace(/"exp":\d+/, '"exp":1e400')), expect: OK },
    { name: 'nbf in the future', jwt: () => joseJwt('ES256', { claims: claims({ nbf: NOW + SKEW_S + 1 }) }), expect: 'subject token not yet valid' },
    { name: 'nbf within the tolerance', jwt: () => joseJwt('ES256', { claims: claims({ nbf: NOW + SKEW_S }) }), expect: OK },
    { name: 'nbf a string', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, claims({ nbf: 'soon' })), expect: 'subject token not yet valid' },
    { name: 'iat a string', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, claims({ iat: 'yesterday', nbf: 'soon' })), expect: 'subject token has an invalid "iat" claim' },
    { name: 'iat in the future is no reason', jwt: () => joseJwt('ES256', { claims: claims({ iat: NOW + 86_400 }) }), expect: OK },
    // Issuer and audience.
    { name: 'untrusted issuer', jwt: () => joseJwt('ES256', { claims: claims({ iss: 'https://rogue.example' }) }), expect: MALFORMED },
    { name: 'issuer as a list', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, claims({ iss: [ISS] })), expect: MALFORMED },
    { name: 'wrong audience', jwt: () => joseJwt('ES256', { claims: claims({ aud: 'api://elsewhere' }) }), expect: 'subject token audience not accepted' },
    { name: 'audience list with one accepted', jwt: () => joseJwt('ES256', { claims: claims({ aud: ['api://elsewhere', OTHER_AUD] }) }), expect: OK },
    { name: 'audience list with a number', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, claims({ aud: [5, AUD] })), expect: OK },
    { name: 'audience a number', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, claims({ aud: 5 })), expect: 'subject token audience not accepted' },
    { name: 'audience missing', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, { iss: ISS, sub: 'alice', exp: NOW + 600 }), expect: 'subject token audience not accepted' },
    { name: 'no subject', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, { iss: ISS, aud: AUD, exp: NOW + 600 }), expect: 'subject token has no usable "sub" claim' },
    // Encodings.
    { name: 'padding in the payload', jwt: () => `${esH}.${esP}=.${esS}`, expect: MALFORMED },
    { name: 'padding in the header', jwt: () => `${esH}=.${esP}.${esS}`, expect: MALFORMED },
    { name: 'base64 (not url) characters', jwt: () => `${esH}.${esP.replace(/-/g, '+').replace(/_/g, '/')}+/.${esS}`, expect: MALFORMED },
    { name: 'four parts', jwt: () => `${es}.`, expect: MALFORMED },
    { name: 'two parts', jwt: () => `${esH}.${esP}`, expect: MALFORMED },
    { name: 'five parts (a JWE)', jwt: () => `${es}.x.y`, expect: MALFORMED },
    { name: 'space inside', jwt: () => `${esH}.${esP} .${esS}`, expect: MALFORMED },
    { name: 'payload a JSON array', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, [claims()]), expect: MALFORMED },
    { name: 'payload a JSON string', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, JSON.stringify('x')), expect: MALFORMED },
    { name: 'payload not JSON', jwt: () => signed({ alg: 'ES256', kid: 'p256' }, 'iss=x'), expect: MALFORMED },
    { name: 'header a JSON array', jwt: () => `${enc(['ES256'])}.${esP}.${esS}`, expect: MALFORMED },
    {
      name: 'payload with invalid UTF-8, signed',
      jwt: () => signParts(enc({ alg: 'ES256', kid: 'p256' }), b64u(Buffer.concat([Buffer.from(JSON.stringify(claims()).slice(0, -1)), Buffer.from(',"x":"\xff"}', 'latin1')])), 'ES256', K.p256.privateKey),
      expect: INVALID,
    },
    {
      name: 'header with invalid UTF-8, signed',
      jwt: () => signParts(b64u(Buffer.concat([Buffer.from('{"alg":"ES256","kid":"p256","x":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')])), enc(claims()), 'ES256', K.p256.privateKey),
      expect: INVALID,
    },
    {
      name: 'header of 4n+1 characters (a trailing character base64 drops), signed',
      jwt: () => signParts(`${enc(padded({ alg: 'ES256', kid: 'p256' }))}A`, enc(claims()), 'ES256', K.p256.privateKey),
      expect: INVALID,
    },
    {
      name: 'payload of 4n+1 characters, signed',
      jwt: () => signParts(enc({ alg: 'ES256', kid: 'p256' }), `${enc(padded(claims()))}A`, 'ES256', K.p256.privateKey),
      expect: INVALID,
    },
    { name: 'payload of 4n+1 characters, bad signature', jwt: () => `${esH}.${enc(padded(claims()))}A.${esS}`, expect: SIG },
  );
  return cases;
}

describe('JWT verification on node:crypto agrees with jose', () => {
  it('every token of the corpus: the expected outcome, and jose\'s', async () => {
    const cases = await corpus();
    expect(cases.length).toBeGreaterThan(80);
    const mismatches: unknown[] = [];
    for (const c of cases) {
      const jwt = await c.jwt();
      const fast = await fastOutcome(jwt);
      const jose = await joseOutcome(jwt);
      // A token the registry refuses before any check jose made (not a JWT, untrusted issuer): jose refuses it too.
      const agrees = fast === MALFORMED ? jose !== OK : fast === jose;
      if (fast !== c.expect || !agrees) mismatches.push({ case: c.name, expected: c.expect, fast, jose });
    }
    expect(mismatches).toEqual([]);
  });

  it('refuses what jose accepts in two places only: any crit, and b64 other than true', async () => {
    const critB64True = signed({ alg: 'ES256', kid: 'p256', crit: ['b64'], b64: true }, claims());
    const b64FalseNoCrit = signed({ alg: 'ES256', kid: 'p256', b64: false }, claims());
    for (const jwt of [critB64True, b64FalseNoCrit]) {
      expect(await joseOutcome(jwt)).toBe(OK);
      expect(await fastOutcome(jwt)).toBe(INVALID);
    }
  });

  it('refuses RSA keys under 2048 bits, as jose does', async () => {
    const small = signer('small', generateKeyPairSync('rsa', { modulusLength: 1024 }));
    let refusal: unknown;
    try {
      new JwsKeySet({ keys: [small.jwk] }).key('RS256', 'small');
    } catch (err) {
      refusal = err;
    }
    expect(refusal).toBeInstanceOf(JwtRejected);
    expect((refusal as JwtRejected).reason).toBe('invalid');
    const jwt = signed({ alg: 'RS256', kid: 'small' }, claims(), small, 'RS256');
    await expect(jwtVerify(jwt, createLocalJWKSet({ keys: [small.jwk] }))).rejects.toThrow(/2048/);
  });

  it('makes each key object once per JWKS document and drops them with it', async () => {
    const keys = new JwsKeySet(JWKS);
    const a = keys.key('ES256', 'p256');
    expect(keys.key('ES256', 'p256')).toBe(a);
    expect(keys.key('ES384', undefined)).toBe(keys.key('ES384', 'p384'));
    // The same key for another algorithm is the same key object.
    expect(keys.key('PS512', 'rsa')).toBe(keys.key('RS256', 'rsa'));
    expect(() => keys.key('ES256', 'nope')).toThrow(JwtRejected);

    // A provider registered again with another key under the same kid: the old key no longer verifies.
    const issuer = 'https://rotating.example';
    const put = (s: Signer) =>
      registry.put(identityProviderRecord({ issuer, jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [s.jwk] }) }, audiences: [AUD], algorithms: ['ES256'], subjectClaim: '', securityLevel: 0, clockSkew: undefined, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false }, 'identity_provider', clock.now(), NOT_STS));
    const first = signer('k', generateKeyPairSync('ec', { namedCurve: 'P-256' }));
    const second = signer('k', generateKeyPairSync('ec', { namedCurve: 'P-256' }));
    const tokenOf = (s: Signer) => signed({ alg: 'ES256', kid: 'k' }, claims({ iss: issuer }), s);
    put(first);
    await expect(registry.verify(tokenOf(first))).resolves.toMatchObject({ subject: 'alice', issuer });
    put(second);
    await expect(registry.verify(tokenOf(first))).rejects.toThrow(SIG);
    await expect(registry.verify(tokenOf(second))).resolves.toMatchObject({ subject: 'alice', issuer });
  });
});

// ---------------------------------------------------------------------------------------------------------
// ECDH-ES encryption.

const CURVES = [
  { crv: 'P-256', pair: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }) },
  { crv: 'P-384', pair: () => generateKeyPairSync('ec', { namedCurve: 'P-384' }) },
  { crv: 'P-521', pair: () => generateKeyPairSync('ec', { namedCurve: 'P-521' }) },
  { crv: 'X25519', pair: () => generateKeyPairSync('x25519') },
] as const;
const ECDH_ALGS: EcdhEsAlg[] = ['ECDH-ES+A256KW', 'ECDH-ES'];

describe('ECDH-ES encryption on node:crypto opens with jose', () => {
  it('Concat KDF: RFC 7518 appendix C; AES-256 Key Wrap: RFC 3394 section 4.6', () => {
    const z = Buffer.from([158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196]);
    expect(b64u(concatKdf(z, 'A128GCM', 128, Buffer.from('Alice'), Buffer.from('Bob')))).toBe('VqqN6vgjbSBcIijNcacQGg');
    const kek = Buffer.from('000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F', 'hex');
    const cek = Buffer.from('00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F', 'hex');
    const wrapped = aesKeyWrap256(kek, cek);
    expect(wrapped.toString('hex').toUpperCase()).toBe('28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21');
    expect(aesKeyUnwrap256(kek, wrapped)).toEqual(cek);
    wrapped[0]! ^= 1;
    expect(() => aesKeyUnwrap256(kek, wrapped)).toThrow();
  });

  for (const { crv, pair } of CURVES) {
    for (const alg of ECDH_ALGS) {
      it(`${alg} on ${crv}: jose decrypts, and the header is the one jose writes`, async () => {
        const { publicKey, privateKey } = pair();
        const recipient = EcdhRecipient.from(publicKey)!;
        expect(recipient).toBeDefined();
        const joseHeader = decodeProtectedHeader(await new CompactEncrypt(Buffer.from('x')).setProtectedHeader({ alg, enc: 'A256GCM', kid: 'rs-1' }).encrypt(publicKey));
        // Many times: a shared secret or a coordinate with leading zero bytes must come out right too.
        for (let i = 0; i < 24; i++) {
          const plaintext = randomBytes(32 + i);
          const jwe = recipient.encrypt(alg, 'rs-1', plaintext);
          const [protectedB64, encryptedKey, iv, , tag] = jwe.split('.');
          const { plaintext: opened, protectedHeader } = await compactDecrypt(jwe, privateKey, { keyManagementAlgorithms: [alg], contentEncryptionAlgorithms: ['A256GCM'] });
          expect(Buffer.from(opened)).toEqual(plaintext);
          expect(Object.keys(protectedHeader)).toEqual(Object.keys(joseHeader));
          expect(Object.keys(protectedHeader.epk!)).toEqual(Object.keys(joseHeader.epk!));
          expect(protectedHeader).toEqual({ alg, enc: 'A256GCM', kid: 'rs-1', epk: crv === 'X25519' ? { kty: 'OKP', crv, x: expect.any(String) } : { kty: 'EC', crv, x: expect.any(String), y: expect.any(String) } });
          expect(Buffer.from(encryptedKey!, 'base64url')).toHaveLength(alg === 'ECDH-ES' ? 0 : 40);
          expect(Buffer.from(iv!, 'base64url')).toHaveLength(12);
          expect(Buffer.from(tag!, 'base64url')).toHaveLength(16);
          // The ephemeral key is fresh every time and a public key only.
          expect(protectedHeader.epk).not.toHaveProperty('d');
          expect(JSON.parse(Buffer.from(protectedB64!, 'base64url').toString())).toEqual(protectedHeader);
        }
        const a = recipient.encrypt(alg, 'rs-1', Buffer.from('same'));
        const b = recipient.encrypt(alg, 'rs-1', Buffer.from('same'));
        expect(decodeProtectedHeader(a).epk).not.toEqual(decodeProtectedHeader(b).epk);
        // Tampering with the protected header (the AAD) or the ciphertext is detected.
        const [h, k, iv, ct, tag] = a.split('.') as [string, string, string, string, string];
        const otherKid = b64u(JSON.stringify({ ...decodeProtectedHeader(a), kid: 'rs-2' }));
        for (const bad of [`${otherKid}.${k}.${iv}.${ct}.${tag}`, `${h}.${k}.${iv}.${flipLastByte(ct)}.${tag}`]) {
          await expect(compactDecrypt(bad, privateKey)).rejects.toThrow();
        }
        // Another recipient's key does not open it.
        await expect(compactDecrypt(a, pair().privateKey)).rejects.toThrow();
      });
    }
  }

  // jose 6 cannot import X448 for ECDH-ES, so this decrypts by RFC 7518 section 4.6 and RFC 8037 section 3.2 on
  // node:crypto: the KDF, key wrap and GCM steps are the ones the curves above prove against jose.
  for (const alg of ECDH_ALGS) {
    it(`${alg} on X448 (which jose cannot do): the recipient's private key opens it`, () => {
      const { publicKey, privateKey } = generateKeyPairSync('x448');
      const plaintext = randomBytes(32);
      const jwe = EcdhRecipient.from(publicKey)!.encrypt(alg, 'rs-1', plaintext);
      const [h, k, iv, ct, tag] = jwe.split('.') as [string, string, string, string, string];
      const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { alg: string; enc: string; kid: string; epk: JWK };
      expect(header).toEqual({ alg, enc: 'A256GCM', kid: 'rs-1', epk: { x: expect.any(String), crv: 'X448', kty: 'OKP' } });
      expect(Buffer.from(header.epk.x!, 'base64url')).toHaveLength(56);
      const z = diffieHellman({ privateKey, publicKey: createPublicKey({ key: header.epk as JsonWebKeyInput['key'], format: 'jwk' }) });
      const cek = alg === 'ECDH-ES' ? concatKdf(z, 'A256GCM', 256) : aesKeyUnwrap256(concatKdf(z, alg, 256), Buffer.from(k, 'base64url'));
      const decipher = createDecipheriv('aes-256-gcm', cek, Buffer.from(iv, 'base64url'));
      decipher.setAAD(Buffer.from(h, 'ascii'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      expect(Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()])).toEqual(plaintext);
    });
  }

  it('takes no key it does not implement: RSA, Ed25519 and private keys stay with jose', () => {
    expect(EcdhRecipient.from(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey)).toBeUndefined();
    expect(EcdhRecipient.from(generateKeyPairSync('ed25519').publicKey)).toBeUndefined();
    expect(EcdhRecipient.from(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey)).toBeUndefined();
    expect(EcdhRecipient.from(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)).toBeUndefined();
  });

  it('the resource server registry encrypts ECDH-ES keys on the fast path and RSA-OAEP-256 keys with jose', async () => {
    const rsDir = mkdtempSync(join(tmpdir(), 'sts-jose-fast-rs-'));
    const rsDb = openDatabase(rsDir);
    try {
      const servers = new ResourceServerRegistry(rsDb, { clock, logger: silentLogger });
      const forms = [
        { alg: 'ECDH-ES+A256KW', pair: generateKeyPairSync('ec', { namedCurve: 'P-256' }), fast: true },
        { alg: 'ECDH-ES', pair: generateKeyPairSync('x25519'), fast: true },
        { alg: undefined, pair: generateKeyPairSync('ec', { namedCurve: 'P-521' }), fast: true },
        { alg: 'RSA-OAEP-256', pair: generateKeyPairSync('rsa', { modulusLength: 2048 }), fast: false },
      ];
      for (const [i, f] of forms.entries()) {
        const jwk = { ...(f.pair.publicKey.export({ format: 'jwk' }) as JWK), kid: `k${i}`, use: 'enc', ...(f.alg ? { alg: f.alg } : {}) };
        const record = resourceServerRecord(
          { resourceServerId: `rs${i}`, credential: { $case: 'applicationId', value: `app${i}` }, audiences: [AUD], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [jwk] }) } },
          'resource_server',
          clock.now(),
        );
        servers.put(record, 'resource_server');
        const recipient = await servers.recipientKey(record);
        expect(recipient).toMatchObject({ kid: `k${i}`, alg: f.alg ?? 'ECDH-ES+A256KW' });
        const out = recipient.encrypt(Buffer.from('secret'));
        // The fast path answers synchronously; jose with a promise.
        expect(typeof out === 'string', f.alg).toBe(f.fast);
        const { plaintext, protectedHeader } = await compactDecrypt(await out, f.pair.privateKey);
        expect(Buffer.from(plaintext).toString()).toBe('secret');
        expect(protectedHeader).toMatchObject({ alg: f.alg ?? 'ECDH-ES+A256KW', enc: 'A256GCM', kid: `k${i}` });
        expect(await servers.recipientKey(record)).toBe(recipient);
      }
    } finally {
      rsDb.close();
      rmSync(rsDir, { recursive: true, force: true });
    }
  });
});
