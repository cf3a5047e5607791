/**
 * The key ring: every STS key in memory, kept in step with the durable store, rotated on a schedule.
 *
 * Like Vault transit, the ring is explicit data (records with timestamps; the primary and the legacy keys
 * follow from the clock) and every change is written in one step before memory changes: if the write fails,
 * the ring in memory stays as it was and the caller gets the error.
 *
 * Destruction erases a key's material for good, so for the kinds that wrap stored data (secret keys: users'
 * secrets) it first asks a DestructionGuard whether anything stored still needs the key, and waits while
 * anything does (fail closed: a guard that cannot tell also makes it wait).
 */
import { type JsonWebKeyInput, type KeyObject, createPublicKey } from 'node:crypto';
import type { Clock } from '../clock.js';
import { EnvelopeError, MasterKeyRing } from '../crypto/master-key.js';
import { StsError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DurableStore } from '../store/adapter.js';
import {
  type KeyAlg,
  type KeyKind,
  type KeyRecord,
  type KeyState,
  type LiveKey,
  type RotationPolicy,
  KEY_KINDS,
  destructionHeld,
  destructionWaitsForErasure,
  eraseKey,
  generateKey,
  openKey,
  parseKeyRecord,
  resealKey,
  selectPrimary,
  stateOf,
} from './key-record.js';

export interface KeyRingOptions {
  store: DurableStore;
  master: MasterKeyRing;
  clock: Clock;
  logger: Logger;
  algorithms: Record<KeyKind, KeyAlg>;
  policies: Record<KeyKind, RotationPolicy>;
  /**
   * Cluster mode: a cluster-wide lease, so that one node at a time creates, erases and re-seals keys.
   * Returns a release function, or undefined when another node holds the lease.
   */
  lease?: (name: string) => Promise<(() => Promise<void>) | undefined>;
}

export interface KeyView {
  record: KeyRecord;
  state: KeyState;
  /** Past destroyAfter, yet its material is kept (DECRYPT_ONLY) because stored data may still need it. */
  destructionHeld: boolean;
}

/**
 * What still needs the keys of one kind: for secret keys, the stored user secrets wrapped under them. The
 * ring consults it before erasing a key of that kind past its destroyAfter; destruction waits while anything
 * needs the key.
 */
export interface DestructionGuard {
  /** What the records are, for logs ("user secrets"). */
  readonly what: string;
  /**
   * How many stored records still need each of `kids`. Must answer every kid (a kid left out counts as
   * needed) and throw when it cannot tell: the ring then keeps every one of them.
   */
  inUse(kids: readonly string[]): Promise<Map<string, number>>;
  /** Moves what it can off those keys (re-wraps it under the primary); the ring counts again afterwards. */
  release(kids: readonly string[]): Promise<void>;
}

/** A key whose destruction the last maintenance on this node held back, and why. */
export interface BlockedDestruction {
  kid: string;
  kind: KeyKind;
  /** Stored records still wrapped under the key, or undefined when they could not be counted. */
  records: number | undefined;
}

/** Raised when the stored key ring cannot be opened with the configured master keys. */
export class KeyRingOpenError extends Error {
  override name = 'KeyRingOpenError';
}

/** RotateKeys within this long of a staged key of the same kind returns that key (see KeyRing.rotate). */
export const ROTATION_COALESCE_MS = 1000;

export class KeyRing {
  private keys = new Map<string, LiveKey>();
  private byKind: Record<KeyKind, LiveKey[]> = { encryption: [], signing: [], secret: [] };
  /** Serializes rotations and maintenance within this process. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly o: KeyRingOptions;
  private readonly guards = new Map<KeyKind, DestructionGuard>();
  /** What the last maintenance on this node found blocking destruction, by kid. */
  private blocked = new Map<string, BlockedDestruction>();
  /** Bumped on every change; caches derived from the ring compare it. */
  version = 0;

  constructor(options: KeyRingOptions) {
    this.o = options;
  }

  /** Loads every stored key. Throws KeyRingOpenError when a key does not open with the master keys. */
  async load(): Promise<void> {
    const now = this.o.clock.now();
    const next = new Map<string, LiveKey>();
    for (const { id, value } of await this.o.store.list('key')) {
      const record = parseKeyRecord(value);
      // A key whose destruction is held is still opened: what is wrapped under it must keep opening.
      if (now >= record.destroyAfter && !destructionHeld(record, now)) {
        next.set(id, { record, privateKey: undefined, publicKey: undefined });
        continue;
      }
      try {
        next.set(id, openKey(record, this.o.master));
      } catch (err) {
        if (err instanceof EnvelopeError) throw new KeyRingOpenError(`key ${record.kid} (${record.kind}): ${err.message}`);
        throw err;
      }
    }
    this.replaceAll(next);
  }

  private replaceAll(next: Map<string, LiveKey>): void {
    const byKind: Record<KeyKind, LiveKey[]> = { encryption: [], signing: [], secret: [] };
    for (const k of next.values()) byKind[k.record.kind].push(k);
    for (const kind of KEY_KINDS) byKind[kind].sort((a, b) => a.record.notBefore - b.record.notBefore || a.record.kid.localeCompare(b.record.kid));
    this.keys = next;
    this.byKind = byKind;
    this.version += 1;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** The PRIMARY key of a kind. Throws UNAVAILABLE when there is none (the ring was never initialized). */
  primary(kind: KeyKind): LiveKey {
    const p = selectPrimary(this.byKind[kind], this.o.clock.now());
    if (!p?.privateKey) throw new StsError('unavailable', `no primary ${kind} key; the key ring is not initialized yet`);
    return p;
  }

  /** True when every kind has a PRIMARY key (a node serves only then). */
  complete(): boolean {
    const now = this.o.clock.now();
    return KEY_KINDS.every((kind) => selectPrimary(this.byKind[kind], now)?.privateKey !== undefined);
  }

  /**
   * A key that may still decrypt/verify/unwrap (STAGED, PRIMARY or DECRYPT_ONLY), or undefined. A secret key
   * past destroyAfter whose destruction is held only for the user secrets still wrapped under it is usable
   * with `includeHeld` alone (UserSecrets): for everyone else, applications unwrapping their data keys
   * through PopService included, it is destroyed at destroyAfter as promised.
   */
  usable(kid: string, kind: KeyKind, options: { includeHeld?: boolean } = {}): LiveKey | undefined {
    const k = this.keys.get(kid);
    if (!k || k.record.kind !== kind || !k.privateKey) return undefined;
    const now = this.o.clock.now();
    return now < k.record.destroyAfter || (options.includeHeld === true && destructionHeld(k.record, now)) ? k : undefined;
  }

  /**
   * Makes the destruction of keys of `kind` wait while `guard` says stored data still needs them (one guard
   * per kind). Register it before the first maintenance.
   */
  guardDestruction(kind: KeyKind, guard: DestructionGuard): void {
    this.guards.set(kind, guard);
  }

  /** Keys whose destruction this node's last maintenance held back, still held now. */
  blockedDestructions(now = this.o.clock.now()): BlockedDestruction[] {
    return [...this.blocked.values()].filter((b) => {
      const k = this.keys.get(b.kid);
      return k !== undefined && destructionHeld(k.record, now);
    });
  }

  /** Public keys of every asymmetric key in the ring (destroyed ones too), made from `version`'s records. */
  private ownPublicKeys: { version: number; keys: KeyObject[] } = { version: -1, keys: [] };

  /**
   * True when `key` is the public key of one of STS's own key pairs, in any state (a destroyed key's public
   * part still names it): STS never accepts as a third-party token something it signed itself.
   */
  isOwnPublicKey(key: KeyObject): boolean {
    if (key.type !== 'public') return false;
    if (this.ownPublicKeys.version !== this.version) {
      const keys: KeyObject[] = [];
      for (const k of this.keys.values()) if (k.record.publicJwk) keys.push(createPublicKey({ key: k.record.publicJwk as JsonWebKeyInput['key'], format: 'jwk' }));
      this.ownPublicKeys = { version: this.version, keys };
    }
    return this.ownPublicKeys.keys.some((k) => k.asymmetricKeyType === key.asymmetricKeyType && k.equals(key));
  }

  /** Every key with its state at `now`, ordered by kind then notBefore. */
  view(now = this.o.clock.now()): KeyView[] {
    const out: KeyView[] = [];
    for (const kind of KEY_KINDS) {
      const primaryKid = selectPrimary(this.byKind[kind], now)?.record.kid;
      for (const k of this.byKind[kind]) out.push({ record: k.record, state: stateOf(k.record, primaryKid, now), destructionHeld: destructionHeld(k.record, now) });
    }
    return out;
  }

  /**
   * The next instant at which the ring changes by itself: a key becomes primary, a primary's validity ends
   * (a successor is due), or a key is destroyed.
   */
  nextChange(now = this.o.clock.now()): number {
    let next = Number.POSITIVE_INFINITY;
    for (const k of this.keys.values()) {
      for (const t of [k.record.notBefore, k.record.notAfter, k.record.destroyAfter]) if (t > now && t < next) next = t;
    }
    for (const kind of KEY_KINDS) {
      const due = this.successorDueAt(kind);
      if (due > now && due < next) next = due;
    }
    return next;
  }

  /** When the newest key of a kind needs a successor (stagingLead before its validity ends). */
  private successorDueAt(kind: KeyKind): number {
    const newest = this.byKind[kind].at(-1);
    return newest ? newest.record.notAfter - this.o.policies[kind].stagingLeadMs : Number.POSITIVE_INFINITY;
  }

  /**
   * The scheduled maintenance, run at start-up and on a timer: creates keys that are due (a primary where
   * none is usable, successors before validity ends, enough PRIMARY+STAGED keys), erases destroyed keys'
   * material (once their destruction guard lets it), and re-seals keys still sealed under an older master
   * key. Returns the keys created.
   */
  maintain(): Promise<KeyRecord[]> {
    return this.exclusive(async () => {
      const release = await this.acquire();
      if (!release) {
        // Another node maintains the ring; keep in step with what it writes.
        await this.load();
        return [];
      }
      try {
        if (this.o.lease) await this.load(); // see what other nodes wrote before deciding what is due
        const created = await this.createDue();
        await this.eraseAndReseal();
        return created;
      } finally {
        await release();
      }
    });
  }

  /** Reloads the ring from the store (another node changed it). */
  refresh(): Promise<void> {
    return this.exclusive(() => this.load());
  }

  private async acquire(): Promise<(() => Promise<void>) | undefined> {
    if (!this.o.lease) return async () => {};
    return this.o.lease('key-ring');
  }

  /**
   * On-demand rotation: a new key per kind, STAGED for stagingLeadMs, then PRIMARY. A kind whose newest key
   * was staged less than ROTATION_COALESCE_MS ago (by a RotateKeys or by the schedule) gets that key back
   * instead of another: concurrent or repeated
   * calls (a retrying client, several operators, several nodes) make one rotation, not a row of staged keys
   * milliseconds apart, which would each become PRIMARY for an instant and crowd the JWKS.
   */
  rotate(kinds: readonly KeyKind[] = KEY_KINDS): Promise<KeyRecord[]> {
    return this.exclusive(async () => {
      const release = await this.acquire();
      if (!release) throw new StsError('unavailable', 'another node is changing the key ring; retry in a moment', { retryAfterMs: 1000 });
      try {
        if (this.o.lease) await this.load(); // a rotation another node has just made counts too
        return await this.rotateNow(kinds);
      } finally {
        await release();
      }
    });
  }

  private async rotateNow(kinds: readonly KeyKind[]): Promise<KeyRecord[]> {
    const now = this.o.clock.now();
    const out: KeyRecord[] = [];
    const fresh: LiveKey[] = [];
    for (const kind of kinds) {
      const recent = this.byKind[kind].filter((k) => now < k.record.notBefore && now - k.record.createdAt < ROTATION_COALESCE_MS).at(-1);
      if (recent) {
        out.push(recent.record);
        continue;
      }
      const k = await this.newKey(kind, now, now + this.o.policies[kind].stagingLeadMs);
      fresh.push(k);
      out.push(k.record);
    }
    if (fresh.length > 0) await this.commit(fresh);
    for (const k of fresh) this.o.logger.info('audit', { event: 'key.rotated', kid: k.record.kid, kind: k.record.kind, alg: k.record.alg, notBefore: iso(k.record.notBefore), trigger: 'on-demand' });
    return out;
  }

  private async newKey(kind: KeyKind, now: number, notBefore: number): Promise<LiveKey> {
    const p = this.o.policies[kind];
    const notAfter = notBefore + p.validityMs;
    return generateKey(kind, this.o.algorithms[kind], { createdAt: now, notBefore, notAfter, destroyAfter: notAfter + p.legacyWindowMs }, this.o.master);
  }

  private async createDue(): Promise<KeyRecord[]> {
    const now = this.o.clock.now();
    const fresh: LiveKey[] = [];
    for (const kind of KEY_KINDS) {
      const p = this.o.policies[kind];
      const keys = [...this.byKind[kind]];
      if (!selectPrimary(keys, now)) {
        // Bootstrap (or a ring whose every key expired while the server was down): a primary is needed now,
        // so this one key cannot be staged first.
        const k = await this.newKey(kind, now, now);
        keys.push(k);
        fresh.push(k);
      }
      for (let i = 0; i <= p.minimumKeys; i++) {
        const newest = keys.reduce((a, b) => (b.record.notBefore > a.record.notBefore ? b : a));
        const ahead = keys.filter((k) => k.record.notAfter > now && now < k.record.destroyAfter).length;
        if (newest.record.notAfter - now > p.stagingLeadMs && ahead >= p.minimumKeys) break;
        const k = await this.newKey(kind, now, Math.max(newest.record.notAfter, now + p.stagingLeadMs));
        keys.push(k);
        fresh.push(k);
      }
    }
    if (fresh.length > 0) {
      await this.commit(fresh);
      for (const k of fresh) this.o.logger.info('audit', { event: 'key.created', kid: k.record.kid, kind: k.record.kind, alg: k.record.alg, notBefore: iso(k.record.notBefore), trigger: 'schedule' });
    }
    return fresh.map((k) => k.record);
  }

  /** Writes new keys in one step, then (only then) adds them to memory. */
  private async commit(fresh: readonly LiveKey[]): Promise<void> {
    await this.o.store.insertAll('key', fresh.map((k) => ({ id: k.record.kid, value: JSON.stringify(k.record) })));
    const next = new Map(this.keys);
    for (const k of fresh) next.set(k.record.kid, k);
    this.replaceAll(next);
  }

  /**
   * Asks each kind's guard about the keys of that kind due for erasure: if stored data still needs one, the
   * guard first re-wraps what it can, then counts again. Returns the keys whose erasure must wait (logged
   * here, at error level, once per run): a key the guard could not answer for is kept as well.
   */
  private async heldBack(now: number): Promise<Map<string, BlockedDestruction>> {
    const held = new Map<string, BlockedDestruction>();
    for (const kind of KEY_KINDS) {
      const guard = this.guards.get(kind);
      const due = this.byKind[kind].filter((k) => k.record.sealed !== undefined && now >= k.record.destroyAfter).map((k) => k.record.kid);
      if (due.length === 0) continue;
      if (!guard) {
        // A kind whose destruction waits for its data, with nobody to ask about that data: fail closed.
        if (destructionWaitsForErasure(kind)) for (const kid of due) held.set(kid, { kid, kind, records: undefined });
        continue;
      }
      // kid -> records still wrapped under it; a kid without an answer is kept (records unknown).
      const counts = new Map<string, number | undefined>(due.map((kid) => [kid, undefined]));
      try {
        for (const [kid, n] of await guard.inUse(due)) if (counts.has(kid)) counts.set(kid, n);
        const waiting = due.filter((kid) => counts.get(kid) !== 0);
        if (waiting.length > 0) {
          // Stragglers (a re-wrap that lagged or failed): try once more now, before giving up for this run.
          try {
            await guard.release(waiting);
          } catch (err) {
            this.o.logger.error(`re-wrapping ${guard.what} off keys due for destruction failed`, { kind, kids: waiting, err });
          }
          const again = await guard.inUse(waiting);
          for (const kid of waiting) counts.set(kid, again.get(kid));
        }
      } catch (err) {
        // Cannot tell: every key not already counted free is kept (fail closed); the next maintenance retries.
        this.o.logger.error(`cannot count the ${guard.what} wrapped under keys due for destruction; they are kept`, { kind, kids: due, err });
      }
      for (const [kid, records] of counts) if (records !== 0) held.set(kid, { kid, kind, records });
    }
    for (const b of held.values()) {
      const what = this.guards.get(b.kind)?.what ?? `data (no destruction guard registered for ${b.kind} keys)`;
      this.o.logger.error(`key destruction blocked: stored ${what} still need it; it stays DECRYPT_ONLY and the next maintenance tries again`, {
        event: 'key.destruction_blocked',
        kid: b.kid,
        kind: b.kind,
        records: b.records ?? 'unknown',
      });
    }
    return held;
  }

  private async eraseAndReseal(): Promise<void> {
    const now = this.o.clock.now();
    const held = await this.heldBack(now);
    this.blocked = held;
    let changed = false;
    const next = new Map(this.keys);
    for (const k of this.keys.values()) {
      const r = k.record;
      let replacement: KeyRecord | undefined;
      let event: string | undefined;
      if (r.sealed && now >= r.destroyAfter && !held.has(r.kid)) {
        replacement = eraseKey(r);
        event = 'key.destroyed';
      } else if (r.sealed && MasterKeyRing.envelopeKeyId(Buffer.from(r.sealed, 'base64url')) !== this.o.master.primary.id) {
        replacement = resealKey(r, this.o.master);
        event = 'key.resealed';
      }
      if (!replacement) continue;
      const ok = await this.o.store.replaceIfSame('key', r.kid, JSON.stringify(r), JSON.stringify(replacement));
      if (!ok) continue; // changed elsewhere meanwhile; the next load sees it
      next.set(r.kid, event === 'key.destroyed' ? { record: replacement, privateKey: undefined, publicKey: k.publicKey } : { ...k, record: replacement });
      changed = true;
      this.o.logger.info('audit', { event, kid: r.kid, kind: r.kind });
    }
    if (changed) this.replaceAll(next);
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
