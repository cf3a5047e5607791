/**
 * Password and secret hashing with scrypt (memory-hard; OWASP Password Storage Cheat Sheet: N=2^17, r=8,
 * p=1). node:crypto's async scrypt runs on the libuv thread pool, never on the event loop.
 *
 * Stored format: `scrypt$<log2 N>$<r>$<p>$<salt b64url>$<hash b64url>`, so parameters can be raised later
 * and old hashes still verify (and can be upgraded on the next successful logon).
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export interface ScryptParams {
  log2N: number;
  r: number;
  p: number;
}

/** OWASP minimum for user passwords: 128 MiB of memory per hash, about 0.4 s of one core here. */
export const PASSWORD_PARAMS: ScryptParams = { log2N: 17, r: 8, p: 1 };
/**
 * Application secrets are long random strings (256 bits when STS makes them; at least 24 characters when
 * given), so a memory-hard hash with lower cost keeps LogonApplication fast without weakening them.
 */
export const APP_SECRET_PARAMS: ScryptParams = { log2N: 14, r: 8, p: 1 };

const KEY_LEN = 32;

function derive(secret: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const N = 2 ** params.log2N;
  return new Promise((resolve, reject) =>
    scrypt(secret.normalize('NFKC'), salt, KEY_LEN, { N, r: params.r, p: params.p, maxmem: 256 * N * params.r + 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

export async function hashSecret(secret: string, params: ScryptParams = PASSWORD_PARAMS): Promise<string> {
  const salt = randomBytes(16);
  const hash = await derive(secret, salt, params);
  return `scrypt$${params.log2N}$${params.r}$${params.p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/**
 * A stored hash of a secret nobody knows, with the parameters of real ones: verifying against it costs the same
 * as verifying against a real one. Its bytes are random rather than computed, because nothing ever matches
 * them: computing one would only make the first check of an unknown account twice as slow as all the others.
 */
const dummyHashes = new Map<string, string>();
function dummyHash(params: ScryptParams): string {
  const key = `${params.log2N}/${params.r}/${params.p}`;
  let h = dummyHashes.get(key);
  if (!h) {
    h = `scrypt$${params.log2N}$${params.r}$${params.p}$${randomBytes(16).toString('base64url')}$${randomBytes(KEY_LEN).toString('base64url')}`;
    dummyHashes.set(key, h);
  }
  return h;
}

const SCRYPT_HASH = /^scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/;

/**
 * Whether `h` is a stored hash this STS makes and can verify at a bounded cost: the check applied to hashes
 * that arrive from elsewhere (replicated directory records), so that none can make a logon allocate
 * gigabytes or run for minutes.
 */
export function isStoredHash(h: unknown): boolean {
  const m = typeof h === 'string' && h.length <= 512 ? SCRYPT_HASH.exec(h) : null;
  if (!m) return false;
  const [log2N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return log2N >= 10 && log2N <= 20 && r >= 1 && r <= 16 && p >= 1 && p <= 4 && m[4]!.length >= 16 && m[5]!.length >= 32;
}

/**
 * Verifies in constant time with respect to the secret. With `stored` undefined (unknown user, no password)
 * it still spends a full hash and returns false, so a wrong username and a wrong password take the same time.
 */
export async function verifySecret(secret: string, stored: string | undefined | null, params: ScryptParams = PASSWORD_PARAMS): Promise<boolean> {
  const parsed = stored ? SCRYPT_HASH.exec(stored) : null;
  if (!parsed) {
    const dummy = dummyHash(params).split('$');
    await derive(secret, Buffer.from(dummy[4]!, 'base64url'), params);
    return false;
  }
  const p: ScryptParams = { log2N: Number(parsed[1]), r: Number(parsed[2]), p: Number(parsed[3]) };
  const expected = Buffer.from(parsed[5]!, 'base64url');
  const actual = await derive(secret, Buffer.from(parsed[4]!, 'base64url'), p);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
