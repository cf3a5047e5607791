/**
 * Public key sets of other parties (identity providers, resource servers): validation of JWKS given by an
 * administrator, and a fetcher for JWKS URLs with a timeout, a size limit and a TTL cache that refetches on
 * an unknown kid at most once per interval.
 *
 * A JWKS here holds public keys only: a private member (`d`, RSA primes) or a symmetric key is refused when
 * an administrator registers it and dropped (with a warning) when a fetched document carries one.
 */
import { type JsonWebKeyInput, createPublicKey } from 'node:crypto';
import type { JWK } from 'jose';
import type { Clock } from '../clock.js';
import { StsError, invalidArgument } from '../errors.js';
import type { Logger } from '../log.js';

export interface Jwks {
  keys: JWK[];
}

/** Members that only private or secret keys have (RFC 7518 section 6). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
const PUBLIC_KTY = ['EC', 'RSA', 'OKP'];
const MAX_KEYS = 100;
export const MAX_JWKS_JSON = 64 * 1024;

/** Key management algorithms STS encrypts to a resource server with (content encryption is A256GCM). */
export const KEY_ENCRYPTION_ALGS = ['ECDH-ES+A256KW', 'ECDH-ES', 'RSA-OAEP-256'] as const;
export type KeyEncryptionAlg = (typeof KEY_ENCRYPTION_ALGS)[number];

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;

/** An https URL (plain http only on the loopback interface, for development and tests). */
export function checkJwksUri(field: string, value: string): string {
  if (value.length === 0 || value.length > 2048) throw invalidArgument(field, 'must be 1 to 2048 characters');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalidArgument(field, 'must be an absolute https URL');
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.test(url.hostname))) {
    throw invalidArgument(field, 'must be an https URL (plain http only for 127.0.0.1, [::1] or localhost)');
  }
  if (url.username || url.password) throw invalidArgument(field, 'must not contain credentials');
  return value;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Why a JWK is not an acceptable public key, or undefined when it is. */
function publicKeyProblem(jwk: unknown): string | undefined {
  if (!isObject(jwk)) return 'is not a JSON object';
  if (jwk.kty === 'oct') return 'is a symmetric key (kty "oct"); give public keys only';
  if (typeof jwk.kty !== 'string' || !PUBLIC_KTY.includes(jwk.kty)) return `has an unsupported kty; use one of ${PUBLIC_KTY.join(', ')}`;
  const priv = PRIVATE_MEMBERS.find((m) => jwk[m] !== undefined);
  if (priv) return `is a private key (has "${priv}"); give public keys only`;
  if (jwk.kid !== undefined && (typeof jwk.kid !== 'string' || jwk.kid.length === 0 || jwk.kid.length > 256)) return 'has a kid that is not a string of 1 to 256 characters';
  if (jwk.use !== undefined && jwk.use !== 'sig' && jwk.use !== 'enc') return 'has a use other than "sig" or "enc"';
  let key;
  try {
    key = createPublicKey({ key: jwk as JsonWebKeyInput['key'], format: 'jwk' });
  } catch {
    return 'is not a valid public key';
  }
  // RFC 7518 sections 3.3 and 4.3: RSA keys of at least 2048 bits (jose refuses smaller ones at use time).
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (key.asymmetricKeyType?.startsWith('rsa') && (bits === undefined || bits < 2048)) return `is an RSA key of ${bits ?? '?'} bits; at least 2048 are required`;
  return undefined;
}

/**
 * Parses a JWKS given by an administrator: valid JSON, 1 to 100 public keys, no private members, no
 * duplicate kids. INVALID_ARGUMENT naming the field and the key otherwise.
 */
export function parsePublicJwks(field: string, text: string): Jwks {
  if (text.length === 0 || text.length > MAX_JWKS_JSON) throw invalidArgument(field, `must be 1 to ${MAX_JWKS_JSON} characters of JWKS JSON`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw invalidArgument(field, 'is not valid JSON');
  }
  if (!isObject(doc) || !Array.isArray(doc.keys)) throw invalidArgument(field, 'must be a JWKS: a JSON object with a "keys" array (RFC 7517 section 5)');
  if (doc.keys.length === 0 || doc.keys.length > MAX_KEYS) throw invalidArgument(field, `must hold 1 to ${MAX_KEYS} keys`);
  const kids = new Set<string>();
  doc.keys.forEach((k: unknown, i: number) => {
    const problem = publicKeyProblem(k);
    if (problem) throw invalidArgument(field, `keys[${i}] ${problem}`);
    const kid = (k as JWK).kid;
    if (kid !== undefined) {
      if (kids.has(kid)) throw invalidArgument(field, `keys[${i}] repeats kid "${kid}"`);
      kids.add(kid);
    }
  });
  return { keys: doc.keys as JWK[] };
}

/** Keeps the acceptable public keys of a fetched document; undefined when it is not a JWKS at all. */
function sanitizeFetched(doc: unknown, onDropped: (index: number, problem: string) => void): Jwks | undefined {
  if (!isObject(doc) || !Array.isArray(doc.keys)) return undefined;
  const keys: JWK[] = [];
  doc.keys.slice(0, MAX_KEYS).forEach((k: unknown, i: number) => {
    const problem = publicKeyProblem(k);
    if (problem) onDropped(i, problem);
    else keys.push(k as JWK);
  });
  return { keys };
}

/** The key management algorithm a JWK can be used with for encryption, or undefined. */
export function encryptionAlgOf(jwk: JWK): KeyEncryptionAlg | undefined {
  if (jwk.use !== undefined && jwk.use !== 'enc') return undefined;
  if (jwk.key_ops !== undefined && !jwk.key_ops.some((op) => op === 'wrapKey' || op === 'deriveKey' || op === 'encrypt')) return undefined;
  const ecdh = jwk.kty === 'EC' ? ['P-256', 'P-384', 'P-521'].includes(jwk.crv ?? '') : jwk.kty === 'OKP' && (jwk.crv === 'X25519' || jwk.crv === 'X448');
  if (jwk.alg === undefined) return ecdh ? 'ECDH-ES+A256KW' : jwk.kty === 'RSA' ? 'RSA-OAEP-256' : undefined;
  if (!(KEY_ENCRYPTION_ALGS as readonly string[]).includes(jwk.alg)) return undefined;
  if (jwk.alg === 'RSA-OAEP-256') return jwk.kty === 'RSA' ? 'RSA-OAEP-256' : undefined;
  return ecdh ? (jwk.alg as KeyEncryptionAlg) : undefined;
}

/** The first key of the set usable for encryption (publishers list their current key first). */
export function chooseEncryptionKey(jwks: Jwks): { jwk: JWK; alg: KeyEncryptionAlg } | undefined {
  for (const jwk of jwks.keys) {
    const alg = encryptionAlgOf(jwk);
    if (alg) return { jwk, alg };
  }
  return undefined;
}

export interface RemoteJwksOptions {
  clock: Clock;
  logger: Logger;
  /** Abort a fetch after this long. Default 3 s. */
  timeoutMs?: number;
  /** Largest accepted document. Default 1 MiB. */
  maxBytes?: number;
  /** How long a fetched document is used before it is fetched again. Default 5 min. */
  ttlMs?: number;
  /** Refetch for an unknown kid at most this often. Default 10 s. */
  minRefetchIntervalMs?: number;
}

/** Who the fetched keys belong to, for log lines and error messages ("identity provider", "resource server"). */
export type JwksOwner = 'identity provider' | 'resource server';

/** The cached JWKS of one URL. */
export class RemoteJwks {
  private doc: Jwks | undefined;
  private fetchedAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<Jwks> | undefined;
  /** Bumped on every successful fetch (derived caches compare it). */
  version = 0;
  private readonly timeoutMs: number;
  private readonly maxBytes: number;
  private readonly ttlMs: number;
  private readonly minRefetchIntervalMs: number;

  constructor(
    readonly url: string,
    private readonly owner: JwksOwner,
    private readonly o: RemoteJwksOptions,
  ) {
    this.timeoutMs = o.timeoutMs ?? 3000;
    this.maxBytes = o.maxBytes ?? 1024 * 1024;
    this.ttlMs = o.ttlMs ?? 5 * 60_000;
    this.minRefetchIntervalMs = o.minRefetchIntervalMs ?? 10_000;
  }

  /** The cached document, fetched first when there is none or it is older than the TTL. */
  async current(): Promise<Jwks> {
    if (this.doc && this.o.clock.now() - this.fetchedAt < this.ttlMs) return this.doc;
    return this.refresh();
  }

  /** True when a refetch for an unknown kid is allowed now. */
  mayRefetch(): boolean {
    return this.o.clock.now() - this.fetchedAt >= this.minRefetchIntervalMs;
  }

  /** Fetches now; concurrent callers share one fetch. UNAVAILABLE when the document cannot be had. */
  refresh(): Promise<Jwks> {
    this.inflight ??= this.fetchOnce().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private unavailable(reason: string, cause?: unknown): StsError {
    this.o.logger.warn('jwks fetch failed', { owner: this.owner, url: this.url, reason, err: cause });
    return new StsError('unavailable', `${this.owner} keys unavailable: ${reason}`, { cause, retryAfterMs: 1000 });
  }

  private async fetchOnce(): Promise<Jwks> {
    let text: string;
    try {
      const res = await fetch(this.url, {
        signal: AbortSignal.timeout(this.timeoutMs),
        redirect: 'error',
        headers: { accept: 'application/jwk-set+json, application/json' },
      });
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        throw this.unavailable(`the JWKS URL answered HTTP ${res.status}`);
      }
      text = await readLimited(res, this.maxBytes);
    } catch (err) {
      if (err instanceof StsError) throw err;
      if (err instanceof TooLarge) throw this.unavailable(`the JWKS is larger than ${this.maxBytes} bytes`);
      const name = (err as Error)?.name;
      if (name === 'TimeoutError' || name === 'AbortError') throw this.unavailable(`no answer within ${this.timeoutMs} ms`, err);
      throw this.unavailable('the JWKS URL cannot be reached', err);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw this.unavailable('the JWKS is not valid JSON', err);
    }
    const doc = sanitizeFetched(parsed, (index, problem) => this.o.logger.warn('jwks key ignored', { owner: this.owner, url: this.url, index, problem }));
    if (!doc) throw this.unavailable('the document is not a JWKS');
    this.doc = doc;
    this.fetchedAt = this.o.clock.now();
    this.version += 1;
    return doc;
  }
}

class TooLarge extends Error {}

async function readLimited(res: Response, maxBytes: number): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    throw new TooLarge();
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new TooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
