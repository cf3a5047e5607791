/**
 * Password and application secret hashing: what is stored, how it is checked, and when it is replaced.
 *
 * Stored formats (a directory record holds one; `isStoredHash` bounds what a replicated record may hold):
 *
 * - `$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>` (the PHC string format, standard base64
 *   without padding): user passwords, and application secrets an operator chose that do not pass
 *   {@link carries128Bits}. Argon2id (RFC 9106) through @node-rs/argon2, whose async API runs each hash as a
 *   N-API async work item on the libuv thread pool, never on the event loop. Its parameters are configured
 *   (`session.passwordHash.*`), and never below OWASP's floor (Password Storage Cheat Sheet: m=19 MiB, t=2,
 *   p=1, or one of its equivalents, {@link OWASP_ARGON2ID}).
 * - `hmac-sha256$<master key id>$<salt b64url>$<mac b64url>`: application secrets STS made (256 random bits)
 *   or that carry at least 128 bits. A memory-hard hash protects a secret a person can remember from a search
 *   through guesses; a 128-bit secret cannot be searched, so a keyed hash is as strong, and costs a few
 *   microseconds instead of tens of milliseconds (Keycloak compares client secrets directly, Hydra uses
 *   PBKDF2). The key is derived from the master key named in the string (HKDF, see MasterKeyRing.derive), so
 *   the stored hashes alone (a stolen export, a read of the grid) allow no check at all, and a master key
 *   rotation keeps old hashes verifiable; they are re-keyed under the new primary at the next logon. The MAC
 *   covers the application id too, so a hash copied into another application's record matches nothing there.
 * - `scrypt$<log2 N>$<r>$<p>$<salt b64url>$<hash b64url>`: what STS stored before (N=2^17, r=8 for passwords,
 *   N=2^14 for application secrets). Still verified, and replaced at the next successful logon.
 *
 * A check whose stored hash is not in the current form ({@link SecretHashing.status}) computes the current
 * form when it succeeds (`replacement`); the caller stores it (see session-common.ts, upgradeHash).
 */
import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { hash as argon2Hash, verify as argon2Verify } from '@node-rs/argon2';
import type { MasterKeyRing } from '../crypto/master-key.js';
import { type Argon2Params, HASH_LIMITS, meetsOwaspFloor } from './hash-policy.js';

function withinLimits(p: Argon2Params): boolean {
  return meetsOwaspFloor(p) && p.memoryKiB <= HASH_LIMITS.maxMemoryKiB && p.timeCost <= HASH_LIMITS.maxTimeCost && p.parallelism >= 1 && p.parallelism <= HASH_LIMITS.maxParallelism;
}

/**
 * When a secret chosen by someone else than STS is taken to carry at least 128 bits, and so may be stored
 * under the keyed hash: at least 32 characters, all of the base64url alphabet (A-Z a-z 0-9 - _), either hex
 * (one case) or with upper case letters, lower case letters and digits (as a random base64url string of that
 * length has, bar a few in a thousand), no 4 characters in a row that occur twice, and at least 128 bits by
 * the estimate
 * length x min(H(characters), H(steps)), H being the Shannon entropy of the string's own character
 * frequencies and of the differences between neighbouring characters. Random strings score near their
 * length x log2 of their alphabet (STS's 43-character secrets about 200 bits; 32 random base64url characters
 * about 140; random hex needs about 40 characters); repeats, narrow alphabets and runs such as "abcdef..."
 * score far less. Nobody can prove a string random, and this estimate cannot see words glued together: such
 * a secret, written by hand, takes the keyed hash anyway. Hence the advice in the README: let STS make
 * application secrets (or use 32 random bytes, base64url encoded).
 */
export function carries128Bits(secret: string): boolean {
  if (secret.length < 32 || !/^[A-Za-z0-9_-]+$/.test(secret)) return false;
  const hex = /^[0-9a-f]+$/.test(secret) || /^[0-9A-F]+$/.test(secret);
  if (!hex && !(/[A-Z]/.test(secret) && /[a-z]/.test(secret) && /[0-9]/.test(secret))) return false;
  const seen = new Set<string>();
  for (let i = 0; i + 4 <= secret.length; i++) {
    const quad = secret.slice(i, i + 4);
    if (seen.has(quad)) return false;
    seen.add(quad);
  }
  const codes = [...secret].map((c) => c.charCodeAt(0));
  const steps = codes.slice(1).map((c, i) => c - codes[i]!);
  return Math.min(shannonBits(codes), shannonBits(steps)) >= 128;
}

/** Length x the Shannon entropy (bits per symbol) of the sequence's own symbol frequencies. */
function shannonBits(xs: readonly number[]): number {
  const counts = new Map<number, number>();
  for (const x of xs) counts.set(x, (counts.get(x) ?? 0) + 1);
  let h = 0;
  for (const n of counts.values()) h -= (n / xs.length) * Math.log2(n / xs.length);
  return h * xs.length;
}

// ---- scrypt: the earlier format, verified and replaced ----

export interface ScryptParams {
  log2N: number;
  r: number;
  p: number;
}

/** The scrypt settings of earlier versions: user passwords, application secrets. */
export const LEGACY_PASSWORD_SCRYPT: ScryptParams = { log2N: 17, r: 8, p: 1 };
export const LEGACY_APP_SECRET_SCRYPT: ScryptParams = { log2N: 14, r: 8, p: 1 };

const SCRYPT_HASH = /^scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9_-]{16,64})\$([A-Za-z0-9_-]{32,64})$/;

function parseScrypt(h: string): { params: ScryptParams; salt: Buffer; hash: Buffer } | undefined {
  const m = SCRYPT_HASH.exec(h);
  if (!m) return undefined;
  const params = { log2N: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
  // Memory is 128 * N * r bytes; the work N * r * p at most that of the old password setting.
  const { log2N, r, p } = params;
  if (log2N < 10 || log2N > 20 || r < 1 || r > 16 || p < 1 || p > HASH_LIMITS.maxParallelism) return undefined;
  if (128 * 2 ** log2N * r > HASH_LIMITS.maxMemoryKiB * 1024 || 2 ** log2N * r * p > 2 ** 17 * 8) return undefined;
  return { params, salt: Buffer.from(m[4]!, 'base64url'), hash: Buffer.from(m[5]!, 'base64url') };
}

function scryptDerive(secret: string, salt: Buffer, params: ScryptParams, keyLen: number): Promise<Buffer> {
  const N = 2 ** params.log2N;
  return new Promise((resolve, reject) =>
    scrypt(secret.normalize('NFKC'), salt, keyLen, { N, r: params.r, p: params.p, maxmem: 256 * N * params.r + 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

/** A hash in the earlier scrypt format: STS no longer stores these; tests make them to check the migration. */
export async function scryptHash(secret: string, params: ScryptParams): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptDerive(secret, salt, params, 32);
  return `scrypt$${params.log2N}$${params.r}$${params.p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

// ---- Argon2id ----

/** Only what STS makes: Argon2id, version 19, a salt of 16 to 48 bytes, a 32-byte hash. */
const ARGON2_HASH = /^\$argon2id\$v=19\$m=(\d{1,7}),t=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{22,64})\$([A-Za-z0-9+/]{43})$/;

function parseArgon2(h: string): Argon2Params | undefined {
  const m = ARGON2_HASH.exec(h);
  if (!m) return undefined;
  const p = { memoryKiB: Number(m[1]), timeCost: Number(m[2]), parallelism: Number(m[3]) };
  return withinLimits(p) ? p : undefined;
}

const sameArgon2 = (a: Argon2Params, b: Argon2Params): boolean => a.memoryKiB === b.memoryKiB && a.timeCost === b.timeCost && a.parallelism === b.parallelism;

// ---- the keyed hash of application secrets ----

const MAC_KEY_INFO = 'sts application secret mac v1';
/**
 * hmac-sha256$<master key id>$<salt>$<mac>, and "$sts" at the end for a secret STS made (not chosen by anyone):
 * only those have no per-id throttle (throttle.ts), since only their randomness is known rather than estimated.
 */
const MAC_HASH = /^hmac-sha256\$([A-Za-z0-9_-]{1,64})\$([A-Za-z0-9_-]{22})\$([A-Za-z0-9_-]{43})(\$sts)?$/;
const SALT_BYTES = 16;

function mac(key: Buffer, applicationId: string, madeBySts: boolean, salt: Buffer, secret: string): Buffer {
  // Application ids have no NUL and the salt has a fixed length: the input is unambiguous. Who made the secret
  // is inside the MAC, so the "$sts" mark (no per-id throttle) cannot be added to a chosen secret's hash.
  return createHmac('sha256', key).update(`sts-app-secret\0${applicationId}\0${madeBySts ? 'sts' : 'chosen'}\0`).update(salt).update(secret, 'utf8').digest();
}

// ---- what may be stored ----

/** Whose secret a hash holds: a user's password, or an application's secret. */
export type HashOwner = 'user' | 'application';

/**
 * Whether `h` is a stored hash this STS makes and can check at a bounded cost (see HASH_LIMITS): the check
 * applied to hashes that arrive from elsewhere (replicated directory records, import files). A user's
 * password is never under the keyed hash (a password does not carry 128 bits).
 */
export function isStoredHash(h: unknown, owner: HashOwner): boolean {
  if (typeof h !== 'string' || h.length > 512) return false;
  if (h.startsWith('$argon2id$')) return parseArgon2(h) !== undefined;
  if (h.startsWith('scrypt$')) return parseScrypt(h) !== undefined;
  return owner === 'application' && MAC_HASH.test(h);
}

/** How a stored hash stands against the current settings. */
export type HashStatus =
  /** In the current form: left as it is. */
  | 'current'
  /** Verifiable, and replaced by the current form at the next successful logon. */
  | 'old'
  /** Cannot be checked here (not a hash STS makes; keyed by a master key that is not configured). */
  | 'unverifiable';

/** A short name of a stored hash's scheme and parameters, for reports and the scheduler's estimates. */
export function describeHash(h: string | null | undefined): string {
  if (!h) return 'none';
  const a = h.startsWith('$argon2id$') ? parseArgon2(h) : undefined;
  if (a) return `argon2id m=${a.memoryKiB} t=${a.timeCost} p=${a.parallelism}`;
  const s = h.startsWith('scrypt$') ? parseScrypt(h) : undefined;
  if (s) return `scrypt N=2^${s.params.log2N} r=${s.params.r} p=${s.params.p}`;
  const k = MAC_HASH.exec(h);
  if (k) return `hmac-sha256 key=${k[1]}`;
  return 'invalid';
}

/** Whether a new application secret is stored under the keyed hash: one STS made, or one that carries 128 bits. */
export function takesKeyedHash(secret: string, madeBySts: boolean): boolean {
  return madeBySts || carries128Bits(secret);
}

/** True for the keyed hash of an application secret STS made (see MAC_HASH). */
export function isMadeBySts(h: string | null | undefined): boolean {
  return h ? MAC_HASH.exec(h)?.[4] !== undefined : false;
}

/** The master key id a keyed application secret hash is under, or undefined for any other hash. */
export function keyedHashKeyId(h: string | null | undefined): string | undefined {
  return h ? MAC_HASH.exec(h)?.[1] : undefined;
}

/**
 * The status of a stored hash against the current settings: `argon2` for passwords and low-entropy
 * application secrets, `macKeyIds` (the configured master key ids, primary first) for keyed hashes.
 */
export function hashStatus(h: string, owner: HashOwner, argon2: Argon2Params, macKeyIds: readonly string[]): HashStatus {
  if (!isStoredHash(h, owner)) return 'unverifiable';
  const a = h.startsWith('$argon2id$') ? parseArgon2(h) : undefined;
  if (a) return sameArgon2(a, argon2) ? 'current' : 'old';
  const k = MAC_HASH.exec(h);
  if (k) return k[1] === macKeyIds[0] ? 'current' : macKeyIds.includes(k[1]!) ? 'old' : 'unverifiable';
  return 'old'; // scrypt
}

/** The outcome of a check: whether it matched and, when it did from an old hash, the hash to store instead. */
export interface Checked {
  ok: boolean;
  /** The current form of the secret's hash, when `ok` and the stored one is 'old'. */
  replacement?: string;
}

export class SecretHashing {
  private readonly macKeys: ReadonlyMap<string, Buffer>;
  private readonly macKeyIds: readonly string[];
  private readonly argon2Options: { algorithm: 2; memoryCost: number; timeCost: number; parallelism: number; outputLen: number };
  private readonly dummyArgon2: string;

  constructor(
    master: MasterKeyRing,
    readonly argon2: Argon2Params,
  ) {
    if (!withinLimits(argon2)) throw new Error('SecretHashing: Argon2id parameters below OWASP\'s floor or above HASH_LIMITS');
    const keys = master.derive(MAC_KEY_INFO).keys;
    this.macKeys = new Map(keys.map((k) => [k.id, k.key]));
    this.macKeyIds = keys.map((k) => k.id);
    // Algorithm.Argon2id is a const enum in the package's types, which isolated modules cannot import.
    this.argon2Options = { algorithm: 2, memoryCost: argon2.memoryKiB, timeCost: argon2.timeCost, parallelism: argon2.parallelism, outputLen: 32 };
    // A hash of a secret nobody knows, with the parameters of real ones: checking an unknown user costs the same
    // as checking a real one. Random bytes rather than computed ones: nothing ever matches them anyway.
    const b64 = (n: number) => randomBytes(n).toString('base64').replace(/=+$/, '');
    this.dummyArgon2 = `$argon2id$v=19$m=${argon2.memoryKiB},t=${argon2.timeCost},p=${argon2.parallelism}$${b64(16)}$${b64(32)}`;
  }

  /** The master key ids of keyed hashes, primary (the one new hashes use) first. */
  get keyIds(): readonly string[] {
    return this.macKeyIds;
  }

  /** A new user password's hash (Argon2id, the configured setting). */
  hashPassword(password: string): Promise<string> {
    return argon2Hash(password.normalize('NFKC'), this.argon2Options);
  }

  /**
   * A new application secret's hash: the keyed hash when STS made the secret (`madeBySts`) or it carries 128
   * bits (carries128Bits), Argon2id as for a password otherwise.
   */
  hashApplicationSecret(applicationId: string, secret: string, madeBySts: boolean): Promise<string> {
    if (!takesKeyedHash(secret, madeBySts)) return this.hashPassword(secret);
    const [id] = this.macKeyIds;
    const salt = randomBytes(SALT_BYTES);
    const made = madeBySts ? '$sts' : '';
    return Promise.resolve(`hmac-sha256$${id}$${salt.toString('base64url')}$${mac(this.macKeys.get(id!)!, applicationId, madeBySts, salt, secret).toString('base64url')}${made}`);
  }

  /**
   * What checking a secret against `stored` costs, for the hash scheduler's estimates: a slow hash's scheme and
   * parameters (describeHash; the current setting when nothing valid is stored: the check then spends a hash
   * of it), or undefined for a keyed hash, which is done at once. An unknown application is checked against a
   * keyed hash, as most are.
   */
  costOf(stored: string | null | undefined, owner: HashOwner): string | undefined {
    if (owner === 'application' && (stored === undefined || stored === null || MAC_HASH.test(stored))) return undefined;
    const d = describeHash(stored);
    return d.startsWith('argon2id ') || d.startsWith('scrypt ') ? d : this.currentCost;
  }

  /** describeHash of a hash of the current Argon2id setting. */
  get currentCost(): string {
    return describeHash(this.dummyArgon2);
  }

  status(stored: string, owner: HashOwner): HashStatus {
    return hashStatus(stored, owner, this.argon2, this.macKeyIds);
  }

  /**
   * Checks a user's password against the stored hash. Without one (an unknown user, a user without a password)
   * it still spends a full hash of the current setting and fails, so a wrong username and a wrong password
   * take the same time.
   */
  async checkPassword(password: string, stored: string | null | undefined): Promise<Checked> {
    const ok = await this.slowCheck(password, stored && isStoredHash(stored, 'user') ? stored : undefined);
    return ok && stored && this.status(stored, 'user') === 'old' ? { ok, replacement: await this.hashPassword(password) } : { ok };
  }

  /** Checks an application's secret; without a stored hash (an unknown id) it spends a keyed hash and fails. */
  async checkApplicationSecret(applicationId: string, secret: string, stored: string | undefined): Promise<Checked> {
    const valid = stored !== undefined && isStoredHash(stored, 'application') ? stored : undefined;
    const k = valid ? MAC_HASH.exec(valid) : null;
    let ok: boolean;
    if (k || !valid) {
      // Keyed: a key that is not configured (or no stored hash) still costs one MAC, and matches nothing.
      const key = k ? this.macKeys.get(k[1]!) : undefined;
      const salt = k ? Buffer.from(k[2]!, 'base64url') : randomBytes(SALT_BYTES);
      const actual = mac(key ?? this.macKeys.get(this.macKeyIds[0]!)!, applicationId, k?.[4] !== undefined, salt, secret);
      const expected = k ? Buffer.from(k[3]!, 'base64url') : randomBytes(32);
      ok = timingSafeEqual(actual, expected) && key !== undefined;
    } else ok = await this.slowCheck(secret, valid);
    // Re-keyed, a secret STS made stays marked as such (and keyed, whatever carries128Bits says of it).
    return ok && valid && this.status(valid, 'application') === 'old' ? { ok, replacement: await this.hashApplicationSecret(applicationId, secret, k?.[4] !== undefined) } : { ok };
  }

  /** Argon2id or scrypt; `stored` undefined: a full Argon2id hash of the current setting that matches nothing. */
  private async slowCheck(secret: string, stored: string | undefined): Promise<boolean> {
    const s = stored?.startsWith('scrypt$') ? parseScrypt(stored) : undefined;
    if (s) {
      const actual = await scryptDerive(secret, s.salt, s.params, s.hash.length);
      return timingSafeEqual(actual, s.hash);
    }
    try {
      return (await argon2Verify(stored ?? this.dummyArgon2, secret.normalize('NFKC'))) && stored !== undefined;
    } catch {
      return false;
    }
  }
}
