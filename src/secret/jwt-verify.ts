/**
 * Verification of third-party JWTs (compact JWS, RFC 7519 section 7.2) on node:crypto, synchronously: the key
 * of a JWKS for the token's alg and kid, the signature, then the claims.
 *
 * It replaced jose's `jwtVerify` with `createLocalJWKSet` and makes the same decisions in the same order, so
 * that callers see the same errors (test/jose-fast-path.test.ts runs both over a corpus of tokens): the key
 * is chosen as createLocalJWKSet chooses it, the claims are checked as jwtVerify checks them with the options
 * the registry gave it (issuer, audience, required "exp", clock tolerance; no "typ"). It is stricter than
 * jose in two places only, both refusals: a "crit" header is refused whatever it names (jose accepts
 * `"crit":["b64"]` with `"b64":true`), and so is a "b64" header other than true (jose ignores "b64" when
 * "crit" does not name it). Both are refused after the signature check, where jose refuses the unencoded
 * payload, so a token jose refuses for another reason is refused for the same one.
 *
 * Every refusal is a {@link JwtRejected} whose `reason` completes "<label> ..." in the caller's message.
 */
import { type JsonWebKeyInput, type KeyObject, createPublicKey } from 'node:crypto';
import { type JwsAlg, decodeB64u, isJwsAlg, jwsKeyType, jwsVerify } from '../crypto/jose-primitives.js';

export const UNKNOWN_KEY = 'signed with an unknown key';

export class JwtRejected extends Error {
  constructor(
    /** Completes "subject token ..." ("expired", "signature invalid", ...). */
    readonly reason: string,
    /** What exactly failed, for the log. */
    detail: string = reason,
  ) {
    super(detail);
    this.name = 'JwtRejected';
  }
}

const rejected = (detail: string) => new JwtRejected('invalid', detail);

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** base64url, then strict UTF-8, then JSON: the value, or undefined when any step fails. */
function decodeJson(part: string): unknown {
  const bytes = decodeB64u(part);
  if (!bytes) return undefined;
  try {
    return JSON.parse(strictUtf8.decode(bytes));
  } catch {
    return undefined;
  }
}

/** A compact JWS whose header has been checked, before any key is looked up. */
export interface ParsedJws {
  alg: JwsAlg;
  /** The header's kid, of whatever type (only a string can match a key). */
  kid: unknown;
  header: Record<string, unknown>;
  /** The encoded header and payload, the signature's input (RFC 7515 section 5.2 step 8). */
  signingInput: string;
  payloadPart: string;
  signaturePart: string;
  /** Why the token is refused once its signature has been checked (see the module comment). */
  refusal: string | undefined;
}

/**
 * Splits and checks a compact JWS: three base64url parts, a header that is a JSON object with an "alg" among
 * `algorithms` (and one STS implements), a "crit" that jose would let through at this step. JwtRejected
 * "invalid" or "algorithm not allowed" otherwise.
 */
export function parseCompactJws(jwt: string, algorithms: readonly string[]): ParsedJws {
  const parts = jwt.split('.');
  if (parts.length !== 3) throw rejected('not a compact JWS (three parts)');
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
  const header = decodeJson(headerPart);
  if (!isObject(header)) throw rejected('the protected header is not a base64url JSON object');
  let refusal: string | undefined;
  if (header.crit !== undefined) {
    // RFC 7515 section 4.1.11, as jose reads it: a list of names, each an extension it implements (only
    // "b64", RFC 7797) and present in the header. Anything else is refused here, the rest after the signature.
    const crit = header.crit;
    if (!Array.isArray(crit) || crit.length === 0 || crit.some((c) => typeof c !== 'string' || c.length === 0)) throw rejected('"crit" is not a list of names');
    for (const name of crit as string[]) {
      if (name !== 'b64') throw rejected(`"crit" names the extension "${name.slice(0, 32)}"`);
      if (header.b64 === undefined) throw rejected('"crit" names "b64", which the header does not have');
    }
    if (typeof header.b64 !== 'boolean') throw rejected('"b64" is not a boolean');
    refusal = 'critical header parameters are not accepted';
  }
  if (header.b64 !== undefined && header.b64 !== true) refusal = 'unencoded payloads ("b64") are not accepted';
  const alg = header.alg;
  if (typeof alg !== 'string' || alg.length === 0) throw rejected('no "alg"');
  if (!algorithms.includes(alg) || !isJwsAlg(alg)) throw new JwtRejected('algorithm not allowed');
  return { alg, kid: header.kid, header, signingInput: `${headerPart}.${payloadPart}`, payloadPart, signaturePart, refusal };
}

/**
 * The public keys of one JWKS document for JWS verification, with the key objects made once and the key of
 * each (alg, kid) remembered. Made anew for every new document, so it is dropped with it.
 */
export class JwsKeySet {
  private readonly keys: readonly Record<string, unknown>[];
  /** Key objects, by index in `keys`. */
  private readonly objects = new Map<number, KeyObject>();
  /** The chosen key, by alg and kid; only successes, so at most (keys + 1) x algorithms entries. */
  private readonly chosen = new Map<string, KeyObject>();

  constructor(jwks: { keys: readonly unknown[] }) {
    this.keys = jwks.keys.filter(isObject);
  }

  /**
   * The key for a token's alg and kid, as jose's createLocalJWKSet picks it: the one key whose kty and crv
   * fit the algorithm, whose kid equals the token's (any key when the token has none), whose alg is absent or
   * the token's, whose use is absent or "sig", whose key_ops are absent or list "verify" and whose ext is
   * absent or a boolean. JwtRejected "signed with an unknown key" when no key is, "key is ambiguous" when
   * several are, "invalid" when the key cannot verify this algorithm (key_ops with operations WebCrypto
   * refuses for a public key, RSA under 2048 bits).
   */
  key(alg: JwsAlg, kid: unknown): KeyObject {
    if (kid !== undefined && typeof kid !== 'string') throw new JwtRejected(UNKNOWN_KEY, 'the "kid" is not a string');
    const cacheKey = kid === undefined ? alg : `${alg}#${kid}`;
    const cached = this.chosen.get(cacheKey);
    if (cached) return cached;
    const { kty, crv } = jwsKeyType(alg);
    let found = -1;
    for (let i = 0; i < this.keys.length; i++) {
      const jwk = this.keys[i]!;
      const ops = jwk.key_ops;
      const usable =
        jwk.kty === kty &&
        (crv === undefined || jwk.crv === crv) &&
        (kid === undefined || jwk.kid === kid) &&
        (jwk.alg === undefined || jwk.alg === alg) &&
        (jwk.use === undefined || jwk.use === 'sig') &&
        (jwk.ext === undefined || typeof jwk.ext === 'boolean') &&
        (ops === undefined || (Array.isArray(ops) && ops.every((op, j) => typeof op === 'string' && ops.indexOf(op) === j) && ops.includes('verify')));
      if (!usable) continue;
      if (found >= 0) throw new JwtRejected('key is ambiguous (several keys match its kid)');
      found = i;
    }
    if (found < 0) throw new JwtRejected(UNKNOWN_KEY, 'no key of the set fits the token\'s kid and alg');
    const jwk = this.keys[found]!;
    // WebCrypto imports a public key only for "verify": jose refused any other operation when importing.
    if (Array.isArray(jwk.key_ops) && jwk.key_ops.length !== 1) throw rejected('the key\'s key_ops allow more than "verify"');
    let key = this.objects.get(found);
    if (!key) {
      try {
        key = createPublicKey({ key: jwk as JsonWebKeyInput['key'], format: 'jwk' });
      } catch (err) {
        throw new JwtRejected('invalid', `the key cannot be imported: ${(err as Error).message}`);
      }
      this.objects.set(found, key);
    }
    if (key.type !== 'public') throw rejected('the key is not a public key');
    // RFC 7518 sections 3.3 and 3.5 (and RFC 8725 section 3.5): RSA keys of at least 2048 bits.
    if (kty === 'RSA' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) throw rejected('the RSA key is shorter than 2048 bits');
    this.chosen.set(cacheKey, key);
    return key;
  }
}

/** What the claims must be, as the registry configured jwtVerify: issuer, audience, clock tolerance; "exp" required. */
export interface ClaimRules {
  issuer: string;
  audiences: readonly string[];
  /**
   * When given, a token whose "aud" names none of `audiences` is still accepted if its "azp" (OpenID Connect
   * Core section 2, the party the token was issued to) is one of these. jose has no such rule.
   */
  authorizedParties?: readonly string[];
  /** Seconds. */
  clockToleranceS: number;
  /** Milliseconds since the epoch. */
  nowMs: number;
}

const claimFailed = (claim: string, detail: string): JwtRejected => {
  const reasons: Record<string, string> = { nbf: 'not yet valid', aud: 'audience not accepted', iss: 'issuer mismatch', exp: 'has no valid "exp" claim' };
  return new JwtRejected(reasons[claim] ?? `has an invalid "${claim.slice(0, 32)}" claim`, detail);
};

/** A NumericDate claim (RFC 7519 section 2), undefined when absent; a claim failure when it is not a number. */
function numericDate(claims: Record<string, unknown>, claim: string): number | undefined {
  const value = claims[claim];
  if (value === undefined) return undefined;
  if (typeof value !== 'number') throw claimFailed(claim, `"${claim}" claim must be a number`);
  return value;
}

/**
 * Checks the signature of a parsed JWS with `key`, then its claims (RFC 7519 section 7.2): "iss", "aud" and
 * "exp" present, the issuer and one of the audiences, "iat" and "nbf" numbers when present, "nbf" not after
 * now plus the tolerance, "exp" after now minus it. The claims, or JwtRejected.
 */
export function verifyJwt(jws: ParsedJws, key: KeyObject, rules: ClaimRules): Record<string, unknown> {
  const signature = decodeB64u(jws.signaturePart);
  if (!signature) throw rejected('the signature is not base64url');
  if (!jwsVerify(jws.alg, key, Buffer.from(jws.signingInput, 'ascii'), signature)) throw new JwtRejected('signature invalid');
  const payload = decodeB64u(jws.payloadPart);
  if (!payload) throw rejected('the payload is not base64url');
  if (jws.refusal) throw rejected(jws.refusal);
  let claims: unknown;
  try {
    claims = JSON.parse(strictUtf8.decode(payload));
  } catch {
    throw rejected('the claims are not UTF-8 JSON');
  }
  if (!isObject(claims)) throw rejected('the claims are not a JSON object');
  for (const claim of ['iss', 'aud', 'exp']) {
    if (!Object.hasOwn(claims, claim)) throw claimFailed(claim, `missing required "${claim}" claim`);
  }
  if (claims.iss !== rules.issuer) throw claimFailed('iss', 'unexpected "iss" claim value');
  const aud = claims.aud;
  const audOk = typeof aud === 'string' ? rules.audiences.includes(aud) : Array.isArray(aud) && rules.audiences.some((a) => aud.includes(a));
  const azpOk = rules.authorizedParties !== undefined && typeof claims.azp === 'string' && rules.authorizedParties.includes(claims.azp);
  if (!audOk && !azpOk) throw claimFailed('aud', 'unexpected "aud" claim value');
  const now = Math.floor(rules.nowMs / 1000);
  const tolerance = rules.clockToleranceS;
  numericDate(claims, 'iat');
  const nbf = numericDate(claims, 'nbf');
  if (nbf !== undefined && nbf > now + tolerance) throw claimFailed('nbf', '"nbf" claim timestamp check failed');
  const exp = numericDate(claims, 'exp');
  if (exp !== undefined && exp <= now - tolerance) throw new JwtRejected('expired', '"exp" claim timestamp check failed');
  return claims;
}
