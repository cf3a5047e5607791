/**
 * The published JWKS (RFC 7517 section 5): STS's public keys, exactly as PopService.GetJwks and the HTTP
 * `jwks_uri` serve them. Both read the same snapshot, so a gRPC client and an HTTP client see the same keys
 * and the same cache lifetime at any instant.
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { KeyRing } from './key-ring.js';

export interface PublishedJwks {
  /** `{"keys":[...]}`: public JWKs of the STAGED and PRIMARY keys, and DECRYPT_ONLY signing keys. */
  readonly json: string;
  /** Strong entity tag of `json` (RFC 9110 section 8.8.3), quoted. */
  readonly etag: string;
  /** When the key ring next changes by itself (epoch ms; Infinity when never). */
  readonly validUntil: number;
  readonly primaryEncryptionKid: string;
  readonly primarySigningKid: string;
  /** JWS algorithms of the published signing keys (the ones tokens STS signs may carry), sorted. */
  readonly signingAlgs: readonly string[];
}

export class JwksPublisher {
  private snapshot: (PublishedJwks & { version: number }) | undefined;

  constructor(
    private readonly ring: KeyRing,
    private readonly clock: Clock,
    /** pop.jwksMaxAgeMs: the longest cache lifetime advertised. */
    private readonly maxAgeMs: number,
  ) {}

  /** The JWKS now; rebuilt only when the ring changed or a key changed state since the last one. */
  current(now = this.clock.now()): PublishedJwks {
    const s = this.snapshot;
    if (s && s.version === this.ring.version && now < s.validUntil) return s;
    const published = [];
    let primaryEncryptionKid = '';
    let primarySigningKid = '';
    for (const v of this.ring.view(now)) {
      if (!v.record.publicJwk || v.state === 'destroyed') continue;
      // Clients must not encrypt to a key on its way out; signatures made with it must still verify.
      if (v.record.kind === 'encryption' && v.state === 'decrypt_only') continue;
      if (v.state === 'primary') {
        if (v.record.kind === 'encryption') primaryEncryptionKid = v.record.kid;
        else primarySigningKid = v.record.kid;
      }
      published.push({ jwk: v.record.publicJwk, primary: v.state === 'primary' });
    }
    // The PRIMARY keys come first (a stable sort keeps the rest in ring order): an HTTP client that knows
    // nothing of STS's key states and encrypts to "the first key with use enc" encrypts to the PRIMARY one.
    published.sort((a, b) => Number(b.primary) - Number(a.primary));
    const keys = published.map((p) => p.jwk);
    const json = JSON.stringify({ keys });
    const signingAlgs = [...new Set(keys.filter((k) => k.use === 'sig' && k.alg).map((k) => k.alg!))].sort();
    const etag = `"${createHash('sha256').update(json).digest('base64url')}"`;
    this.snapshot = { version: this.ring.version, validUntil: this.ring.nextChange(now), json, etag, primaryEncryptionKid, primarySigningKid, signingAlgs };
    return this.snapshot;
  }

  /**
   * How long a client may cache `jwks` from `now`: pop.jwksMaxAgeMs, never past the next key change, and at
   * least one second (GetJwks's max_age, the HTTP Cache-Control max-age).
   */
  maxAgeMsOf(jwks: PublishedJwks, now = this.clock.now()): number {
    return Math.max(1000, Math.min(this.maxAgeMs, jwks.validUntil - now));
  }
}
