/**
 * Users' secrets in the durable store (namespace `user_secret`).
 *
 * One record per (issuer, subject): id = base64url(SHA-256(issuer + "\0" + subject)), value JSON
 * {v: 1, issuer, subject, createdAt, wrapped}, where `wrapped` is the secret wrapped under the PRIMARY
 * PopService secret key (the management key) with the record id (under STS's reserved context prefix) as
 * encryption context, so a wrapped value copied to another record does not open.
 *
 * A secret is made exactly once: the first request stores a candidate with insertIfAbsent and every request,
 * the first included, uses the value the store returns, so concurrent first requests on any node agree on
 * one winner. A record that does not open is never replaced: FAILED_PRECONDITION, and an operator must act
 * (restore the management key or the record), because a new secret would silently lose the user's data.
 *
 * The key ring never destroys a secret key while a record is wrapped under it (`destructionGuard`): a
 * re-wrap that lagged or failed delays the key's destruction instead of losing the secrets.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import type { Clock } from '../clock.js';
import { StsError } from '../errors.js';
import type { Logger } from '../log.js';
import { RESERVED_CONTEXT_PREFIX, unwrapKey, wrapKey } from '../pop/jose-ops.js';
import type { DestructionGuard, KeyRing } from '../pop/key-ring.js';
import type { DurableStore } from '../store/adapter.js';

export interface UserSecretRecord {
  v: 1;
  issuer: string;
  subject: string;
  createdAt: number;
  wrapped: string;
}

export interface UserSecret {
  id: string;
  /** The secret; callers overwrite it (fill(0)) when done. */
  secret: Buffer;
  createdAt: number;
  /** True when this call made the secret. */
  created: boolean;
}

export interface RewrapResult {
  /** Records re-wrapped under the primary secret key. */
  rewrapped: number;
  /** Records already under the primary key, or changed by someone else meanwhile. */
  unchanged: number;
  /** Records that could not be opened (logged as errors; left as they are). */
  failed: number;
}

export interface UserSecretsOptions {
  store: DurableStore;
  ring: KeyRing;
  clock: Clock;
  logger: Logger;
  /** Length of new secrets in bytes. */
  secretBytes: number;
}

/**
 * The encryption context of a user secret's wrapping: the record id under STS's reserved prefix, which
 * PopService's Unwrap refuses, so no caller can unwrap a stored user secret through it.
 */
function secretContext(id: string): Buffer {
  return Buffer.from(`${RESERVED_CONTEXT_PREFIX}user-secret:${id}`);
}

export function userSecretId(issuer: string, subject: string): string {
  return createHash('sha256').update(`${issuer}\0${subject}`).digest('base64url');
}

const randomBytesAsync = promisify(randomBytes);
const FULL_WALK_INTERVAL_MS = 60 * 60_000;
const UNREADABLE = "the user's stored secret cannot be decrypted; it is never replaced: an operator must restore the management key or the record";

/** The kid in a wrapped value's protected header, or undefined. */
function wrappedKid(wrapped: string): string | undefined {
  try {
    const header = JSON.parse(Buffer.from(wrapped.split('.')[0] ?? '', 'base64url').toString('utf8')) as { kid?: unknown };
    return typeof header.kid === 'string' ? header.kid : undefined;
  } catch {
    return undefined;
  }
}

function parseRecord(value: string): UserSecretRecord {
  const r = JSON.parse(value) as UserSecretRecord;
  if (r?.v !== 1 || typeof r.wrapped !== 'string' || typeof r.issuer !== 'string' || typeof r.subject !== 'string' || typeof r.createdAt !== 'number') {
    throw new Error('not a user secret record');
  }
  return r;
}

/**
 * Checks a user secret record from elsewhere (the cluster) as STS makes one: its shape, issuer and subject
 * as text, an id that is the hash of that issuer and subject, and a wrapped value in JWE compact form.
 * Whether it opens is decided when it is read (never by replacing it).
 */
export function validateUserSecretRecord(id: string, value: string): void {
  const r = parseRecord(value);
  const text = (v: string, max: number) => v.length >= 1 && v.length <= max && !/[\x00-\x1f\x7f]/.test(v);
  if (!text(r.issuer, 1024) || !text(r.subject, 1024)) throw new Error('issuer or subject is not 1 to 1024 characters of text');
  if (userSecretId(r.issuer, r.subject) !== id) throw new Error('the record id is not the hash of its issuer and subject');
  if (!Number.isSafeInteger(r.createdAt) || r.createdAt < 0) throw new Error('createdAt is not a time');
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(r.wrapped) || r.wrapped.length > 8192) throw new Error('wrapped is not a compact JWE');
}

export class UserSecrets {
  /** Kid of the primary secret key under which the last complete walk left every record, and when. */
  private walkedUnder: string | undefined;
  private walkedAt = Number.NEGATIVE_INFINITY;
  private walking: Promise<RewrapResult> | undefined;

  constructor(private readonly o: UserSecretsOptions) {}

  /** The user's secret, made on first use. FAILED_PRECONDITION when the stored record does not open. */
  async getOrCreate(issuer: string, subject: string): Promise<UserSecret> {
    const { store, ring, clock } = this.o;
    const id = userSecretId(issuer, subject);
    const context = secretContext(id);
    let stored = await store.get('user_secret', id);
    let created = false;
    if (stored === undefined) {
      // From the thread pool: the event loop keeps serving (and concurrent first requests do race here).
      const fresh = await randomBytesAsync(this.o.secretBytes);
      let candidate: string;
      try {
        const record: UserSecretRecord = { v: 1, issuer, subject, createdAt: clock.now(), wrapped: wrapKey(ring, fresh, context).wrapped };
        candidate = JSON.stringify(record);
      } finally {
        fresh.fill(0);
      }
      // Always the stored value, never our own candidate: with a concurrent first request only one wins.
      stored = await store.insertIfAbsent('user_secret', id, candidate);
      created = stored === candidate;
      if (created) this.o.logger.info('audit', { event: 'secret.created', record: id, issuer });
    }
    return { id, ...this.open(id, stored, issuer, subject), created };
  }

  private open(id: string, value: string, issuer: string, subject: string): { secret: Buffer; createdAt: number } {
    let record: UserSecretRecord;
    try {
      record = parseRecord(value);
      if (record.issuer !== issuer || record.subject !== subject) throw new Error('the record belongs to another issuer and subject');
    } catch (err) {
      this.o.logger.error('user secret record unreadable', { record: id, err });
      throw new StsError('failed_precondition', UNREADABLE, { cause: err });
    }
    try {
      return { secret: unwrapKey(this.o.ring, record.wrapped, secretContext(id), { includeHeld: true }).plaintext, createdAt: record.createdAt };
    } catch (err) {
      this.o.logger.error('user secret cannot be unwrapped', { record: id, kid: wrappedKid(record.wrapped), err });
      throw new StsError('failed_precondition', UNREADABLE, { cause: err });
    }
  }

  /**
   * The key ring's guard for secret keys (register it with `ring.guardDestruction('secret', ...)` before the
   * first maintenance): a key due for destruction is kept while `countWrappedUnder` finds records under it,
   * after a full re-wrap walk has tried to move them.
   */
  destructionGuard(): DestructionGuard {
    return {
      what: 'user secrets',
      inUse: (kids) => this.countWrappedUnder(kids),
      release: async () => {
        await this.rewrap({ full: true });
      },
    };
  }

  /**
   * How many stored records are wrapped under each of `kids`, over every version the store holds
   * (`listVersions`: in cluster mode the cluster's map as well as this node's copies, and both versions of a
   * conflicting record). A record whose wrapping key cannot be read counts for every kid: nobody can tell
   * which key it needs, so none is destroyed until an operator repairs or restores it (fail closed).
   */
  async countWrappedUnder(kids: readonly string[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>(kids.map((kid) => [kid, 0]));
    for (const { id, value } of await this.o.store.listVersions('user_secret')) {
      let kid: string | undefined;
      try {
        kid = wrappedKid(parseRecord(value).wrapped);
      } catch {
        kid = undefined;
      }
      if (kid === undefined) {
        this.o.logger.error('user secret record unreadable; no secret key is destroyed while it may need one', { record: id });
        for (const k of kids) counts.set(k, counts.get(k)! + 1);
      } else if (counts.has(kid)) {
        counts.set(kid, counts.get(kid)! + 1);
      }
    }
    return counts;
  }

  /**
   * Re-wraps every record whose wrapping key is not the PRIMARY secret key (after a management key
   * rotation), each with replaceIfSame so a concurrent change is never overwritten. Records that do not open
   * are logged and left alone. Walks the store when the primary key changed since the last complete walk,
   * when that walk had failures, and at least hourly (a record made just as the primary changed is caught),
   * or always with `full`; one walk at a time.
   */
  rewrap(options: { full?: boolean } = {}): Promise<RewrapResult> {
    this.walking ??= this.walk(options.full ?? false).finally(() => {
      this.walking = undefined;
    });
    return this.walking;
  }

  private async walk(full: boolean): Promise<RewrapResult> {
    const { store, ring, logger } = this.o;
    const primary = ring.primary('secret');
    const result: RewrapResult = { rewrapped: 0, unchanged: 0, failed: 0 };
    const now = this.o.clock.now();
    if (!full && this.walkedUnder === primary.record.kid && now - this.walkedAt < FULL_WALK_INTERVAL_MS) return result;
    let complete = true;
    for (const { id, value } of await store.list('user_secret')) {
      let record: UserSecretRecord;
      try {
        record = parseRecord(value);
      } catch (err) {
        logger.error('user secret record unreadable; not re-wrapped', { record: id, err });
        result.failed++;
        continue;
      }
      const kid = wrappedKid(record.wrapped);
      if (kid === primary.record.kid) {
        result.unchanged++;
        continue;
      }
      let next: string;
      try {
        const context = secretContext(id);
        const { plaintext } = unwrapKey(ring, record.wrapped, context, { includeHeld: true });
        try {
          next = JSON.stringify({ ...record, wrapped: wrapKey(ring, plaintext, context, primary).wrapped });
        } finally {
          plaintext.fill(0);
        }
      } catch (err) {
        logger.error('user secret cannot be unwrapped; not re-wrapped', { record: id, kid, err });
        result.failed++;
        continue;
      }
      if (await store.replaceIfSame('user_secret', id, value, next)) result.rewrapped++;
      else {
        result.unchanged++; // changed meanwhile (another node re-wrapped it); the next walk looks again
        complete = false;
      }
    }
    if (result.rewrapped > 0) logger.info('audit', { event: 'secret.rewrapped', kid: primary.record.kid, count: result.rewrapped });
    if (result.failed === 0 && complete) {
      this.walkedUnder = primary.record.kid;
      this.walkedAt = now;
    }
    return result;
  }
}
