/**
 * Credential JWEs: LogonApplication's `application_credential_jwe`, LogonUser's `user_credential_jwe` and a
 * step-up's `password_jwe`, a secret encrypted to STS so that proxies and logs between see only ciphertext.
 *
 * The JWE itself is a bearer credential: whoever captures one (a request log, a proxy, a trusted application
 * it passed through) could log on with it again, or have STS decrypt it through PopService.Decrypt and read
 * the secret. So a credential JWE is bound to one use, the way a JWT is (RFC 7519, RFC 8725):
 * - its protected header has the explicit type `sts-credential+jwe` (TOKEN_TYP.credential; RFC 8725 section
 *   3.11): no other JWE is accepted as a credential, and Decrypt refuses JWEs of reserved types;
 * - its JSON carries `exp` (RFC 7519 section 4.1.4, a NumericDate), which must not have passed and may be at
 *   most `maxLifetimeMs` ahead, both with CREDENTIAL_CLOCK_SKEW_MS of leeway for the clocks;
 * - a user's credential (LogonUser, step-up) carries `aud` (RFC 7519 section 4.1.3), the application that
 *   presents it: no other application can redeem it;
 * - and `jti` (RFC 7519 section 4.1.7), at least 128 random bits in base64url, which STS accepts once: the
 *   SHA-256 of every jti accepted is kept in the ephemeral store until after its JWE expires (SessionStore.
 *   spendCredentialId), so a captured credential JWE is refused however soon it is replayed.
 *
 * Every refusal gets the same answer as a wrong secret (UNAUTHENTICATED, invalid credentials); only the audit
 * log says why.
 */
import { TOKEN_TYP } from '../pop/jose-ops.js';

/** Leeway between the clocks of STS and its clients (RFC 7519 section 4.1.4 allows "some small leeway"). */
export const CREDENTIAL_CLOCK_SKEW_MS = 60_000;

/** base64url; 22 characters carry 132 bits, the fewest that hold 128. */
const JTI = /^[A-Za-z0-9_-]{22,256}$/;

/** Why a credential JWE was refused (audit only, never told to the caller). */
export type CredentialRefusal = 'typ' | 'exp' | 'aud' | 'jti' | 'replayed';

export type CredentialCheck =
  /** Fresh: spend `jti`, remembering it for `ttlMs` (past the time any node would still accept the JWE). */
  | { ok: true; jti: string; ttlMs: number }
  | { ok: false; reason: Exclude<CredentialRefusal, 'replayed'> };

/** Whether the claims name `audience` in "aud" (RFC 7519 section 4.1.3: a string, or an array of strings). */
function hasAudience(claims: Record<string, unknown>, audience: string): boolean {
  const aud = claims.aud;
  return aud === audience || (Array.isArray(aud) && aud.every((a) => typeof a === 'string') && aud.includes(audience));
}

/**
 * Checks the type and the claims of a decrypted credential JWE at `now` (ms); `audience`, for a user's
 * credential, is the application that must be named in "aud". Whether the jti was seen before is the
 * caller's second step, once the secret in it has been verified.
 */

export function checkCredentialClaims(typ: string | undefined, claims: Record<string, unknown>, now: number, maxLifetimeMs: number, audience?: string): CredentialCheck {
  if (typ !== TOKEN_TYP.credential) return { ok: false, reason: 'typ' };
  const exp = claims.exp;
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return { ok: false, reason: 'exp' };
  // RFC 7519 section 4.1.4: not accepted on or after exp (plus the leeway).
  const acceptableUntil = exp * 1000 + CREDENTIAL_CLOCK_SKEW_MS;
  if (acceptableUntil <= now) return { ok: false, reason: 'exp' };
  // A far-future exp would make STS remember the jti for that long, and keep a captured JWE useful until then.
  if (exp * 1000 > now + maxLifetimeMs + CREDENTIAL_CLOCK_SKEW_MS) return { ok: false, reason: 'exp' };
  // A user's credential is for the application that presents it: another application that sees it pass (a
  // trusted one in the middle, a shared log) cannot redeem it first for a session of its own.
  if (audience !== undefined && !hasAudience(claims, audience)) return { ok: false, reason: 'aud' };
  const jti = claims.jti;
  if (typeof jti !== 'string' || !JTI.test(jti)) return { ok: false, reason: 'jti' };
  // Remembered longer than the JWE can be accepted here: a node whose clock runs behind (up to the skew) would
  // still accept it after the record expired, and Hazelcast keeps expiry times in whole seconds.
  return { ok: true, jti, ttlMs: Math.ceil(acceptableUntil - now) + CREDENTIAL_CLOCK_SKEW_MS + 1000 };
}
