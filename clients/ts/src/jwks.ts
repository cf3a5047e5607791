/**
 * Client-side use of STS's published keys: encrypt data to STS (JWE) and verify tokens STS signed, with one
 * JWKS cache that honours the advertised lifetime and refetches when it meets an unknown kid.
 */
import { randomBytes } from 'node:crypto';
import { CompactEncrypt, compactVerify, importJWK, type JWK, type CryptoKey } from 'jose';

/**
 * The protected-header type of a credential JWE (LogonApplication `application_credential_jwe`, LogonUser
 * `user_credential_jwe`, TransformUserToken `step_up.password_jwe`). STS accepts no other JWE there.
 */
export const CREDENTIAL_JWE_TYP = 'sts-credential+jwe';

/** What a credential JWE carries: LogonApplication, LogonUser, or a step-up proof. */
export type CredentialJson = { application_id: string; application_secret: string } | { username: string; password: string } | { password: string };

/** Default lifetime of a credential JWE. STS accepts `exp` at most 5 minutes ahead (session.credentialJweMaxLifetimeMs). */
const CREDENTIAL_LIFETIME_MS = 2 * 60_000;

/** What a JWKS fetch returns (the GetJwksResponse fields the cache needs). */
export interface JwksDocument {
  jwksJson: string;
  /** Advertised cache lifetime. */
  maxAge?: { seconds: number; nanos: number } | undefined;
  primaryEncryptionKid: string;
  primarySigningKid: string;
}

export type JwksFetcher = () => Promise<JwksDocument>;

interface Entry {
  jwk: JWK;
  key: CryptoKey | Uint8Array | undefined;
}

export interface JwksCacheOptions {
  /** Milliseconds since the epoch (tests pass a manual clock). */
  now?: () => number;
  /** Refetch on an unknown kid at most this often, so garbage kids cannot hammer STS. Default 10 s. */
  minRefetchIntervalMs?: number;
}

export class JwksCache {
  private keys = new Map<string, Entry>();
  private primaryEncryptionKid = '';
  private expiresAt = 0;
  private lastFetch = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | undefined;
  private readonly now: () => number;
  private readonly minRefetchIntervalMs: number;

  constructor(
    private readonly fetchJwks: JwksFetcher,
    options: JwksCacheOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.minRefetchIntervalMs = options.minRefetchIntervalMs ?? 10_000;
  }

  /** Fetches now (deduplicating concurrent refreshes). */
  refresh(): Promise<void> {
    this.inflight ??= (async () => {
      try {
        const doc = await this.fetchJwks();
        const parsed = JSON.parse(doc.jwksJson) as { keys: JWK[] };
        const next = new Map<string, Entry>();
        for (const jwk of parsed.keys) if (jwk.kid) next.set(jwk.kid, { jwk, key: this.keys.get(jwk.kid)?.key });
        this.keys = next;
        this.primaryEncryptionKid = doc.primaryEncryptionKid;
        const maxAgeMs = doc.maxAge ? doc.maxAge.seconds * 1000 + Math.floor(doc.maxAge.nanos / 1e6) : 0;
        this.lastFetch = this.now();
        this.expiresAt = this.lastFetch + maxAgeMs;
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }

  private async fresh(): Promise<void> {
    if (this.now() >= this.expiresAt) await this.refresh();
  }

  private async keyFor(kid: string, use: 'enc' | 'sig'): Promise<{ jwk: JWK; key: CryptoKey | Uint8Array } | undefined> {
    await this.fresh();
    let entry = this.keys.get(kid);
    if (!entry && this.now() - this.lastFetch >= this.minRefetchIntervalMs) {
      await this.refresh();
      entry = this.keys.get(kid);
    }
    if (!entry || entry.jwk.use !== use || !entry.jwk.alg) return undefined;
    entry.key ??= await importJWK(entry.jwk, entry.jwk.alg);
    return { jwk: entry.jwk, key: entry.key };
  }

  /**
   * Encrypts `data` to STS's PRIMARY encryption key as a compact JWE (enc A256GCM). Only STS can decrypt it,
   * whatever proxies sit between.
   */
  async encryptFor(data: Uint8Array | string, options: { contentType?: string } = {}): Promise<string> {
    return this.encrypt(typeof data === 'string' ? new TextEncoder().encode(data) : data, options.contentType ? { cty: options.contentType } : {});
  }

  /**
   * Encrypts a credential for LogonApplication (`application_credential_jwe`), LogonUser
   * (`user_credential_jwe`) or a step-up (`step_up.password_jwe`) as a credential JWE: typed
   * `sts-credential+jwe`, with a fresh 256-bit `jti` and an `exp` `lifetimeMs` from now (default 2 minutes;
   * RFC 7519 sections 4.1.7 and 4.1.4). STS accepts each credential JWE once and only until it expires, so a
   * copy of it (a request log, a proxy) is worth nothing: make a new one for every call. A user's credential
   * (username and password, or a step-up password) needs `audience`: the id of the application that will
   * present it, which STS checks against the caller.
   */
  async encryptCredential(credential: CredentialJson, options: { lifetimeMs?: number; audience?: string } = {}): Promise<string> {
    const lifetimeMs = options.lifetimeMs ?? CREDENTIAL_LIFETIME_MS;
    if (!(lifetimeMs > 0)) throw new RangeError('lifetimeMs must be positive');
    // A user's credential (LogonUser, step-up) is bound to the application that presents it (RFC 7519 4.1.3).
    const forUser = !('application_id' in credential);
    if (forUser && !options.audience) throw new TypeError('a user credential needs options.audience: the application id that will present it');
    const claims = {
      ...credential,
      ...(options.audience ? { aud: options.audience } : {}),
      jti: randomBytes(32).toString('base64url'),
      exp: Math.floor((this.now() + lifetimeMs) / 1000),
    };
    return this.encrypt(new TextEncoder().encode(JSON.stringify(claims)), { typ: CREDENTIAL_JWE_TYP });
  }

  private async encrypt(bytes: Uint8Array, header: { cty?: string; typ?: string }): Promise<string> {
    await this.fresh();
    const target = await this.keyFor(this.primaryEncryptionKid, 'enc');
    if (!target) throw new Error('STS publishes no primary encryption key');
    return new CompactEncrypt(bytes).setProtectedHeader({ alg: target.jwk.alg!, enc: 'A256GCM', kid: target.jwk.kid!, ...header }).encrypt(target.key);
  }

  /** Verifies a compact JWS signed by STS; returns the payload and protected header. Throws when invalid. */
  async verifyToken(jws: string): Promise<{ payload: Uint8Array; header: Record<string, unknown> }> {
    const headerB64 = jws.split('.')[0] ?? '';
    let kid: unknown;
    try {
      kid = (JSON.parse(new TextDecoder().decode(base64urlDecode(headerB64))) as { kid?: unknown }).kid;
    } catch {
      throw new Error('not a compact JWS');
    }
    const target = typeof kid === 'string' ? await this.keyFor(kid, 'sig') : undefined;
    if (!target) throw new Error('signed with a key STS does not publish');
    const { payload, protectedHeader } = await compactVerify(jws, target.key, { algorithms: [target.jwk.alg!] });
    return { payload, header: protectedHeader as Record<string, unknown> };
  }

  /**
   * Verifies a user token JWT offline: STS's signature, the explicit type `sts-user+jwt` (RFC 8725 section
   * 3.11; a JWS an application had STS sign through PopService.Sign never has it), the issuer, the audience
   * (your application id) and the expiry. Returns the claims. Offline verification cannot see a logout:
   * use ValidateUserToken where that matters.
   */
  async verifyUserToken(jwt: string, expect: { issuer: string; audience: string; now?: number }): Promise<Record<string, unknown>> {
    const { payload, header } = await this.verifyToken(jwt);
    if (header.typ !== 'sts-user+jwt') throw new Error('not an STS user token (typ)');
    const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
    if (typeof claims !== 'object' || claims === null) throw new Error('not an STS user token (claims)');
    if (claims.iss !== expect.issuer) throw new Error('user token from another issuer');
    if (claims.aud !== expect.audience) throw new Error('user token for another application');
    if (typeof claims.exp !== 'number' || claims.exp * 1000 <= (expect.now ?? this.now())) throw new Error('user token expired');
    return claims;
  }
}

function base64urlDecode(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s, 'base64url'));
}

/** Shorthand: `encryptFor(cache, data)`. */
export function encryptFor(sts: JwksCache, data: Uint8Array | string): Promise<string> {
  return sts.encryptFor(data);
}
