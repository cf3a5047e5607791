/**
 * The key ring: every STS key in memory, kept in step with the durable store, rotated on a schedule.
 *
 * Like Vault transit, the ring is explicit data (records with timestamps; the primary and the legacy keys
 * follow from the clock) and every change is written in one step before memory changes: if the write fails,
 * the ring in memory stays as it was and the caller gets the error.
 */
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
}

/** Raised when the stored key ring cannot be opened with the configured master keys. */
export class KeyRingOpenError extends Error {
  override name = 'KeyRingOpenError';
}

export class KeyRing {
  private keys = new Map<string, LiveKey>();
  private byKind: Record<KeyKind, LiveKey[]> = { encryption: [], signing: [], secret: [] };
  /** Serializes rotations and maintenance within this process. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly o: KeyRingOptions;
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
      if (now >= record.destroyAfter) {
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

  /** A key that may still decrypt/verify/unwrap (STAGED, PRIMARY or DECRYPT_ONLY), or undefined. */
  usable(kid: string, kind: KeyKind): LiveKey | undefined {
    const k = this.keys.get(kid);
    if (!k || k.record.kind !== kind || !k.privateKey) return undefined;
    return this.o.clock.now() < k.record.destroyAfter ? k : undefined;
  }

  /** Every key with its state at `now`, ordered by kind then notBefore. */
  view(now = this.o.clock.now()): KeyView[] {
    const out: KeyView[] = [];
    for (const kind of KEY_KINDS) {
      const primaryKid = selectPrimary(this.byKind[kind], now)?.record.kid;
      for (const k of this.byKind[kind]) out.push({ record: k.record, state: stateOf(k.record, primaryKid, now) });
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
   * material, and re-seals keys still sealed under an older master key. Returns the keys created.
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

  /** On-demand rotation: a new key per kind, STAGED for stagingLeadMs, then PRIMARY. */
  rotate(kinds: readonly KeyKind[] = KEY_KINDS): Promise<KeyRecord[]> {
    return this.exclusive(async () => {
      const release = await this.acquire();
      if (!release) throw new StsError('unavailable', 'another node is changing the key ring; retry in a moment', { retryAfterMs: 1000 });
      try {
        return await this.rotateNow(kinds);
      } finally {
        await release();
      }
    });
  }

  private async rotateNow(kinds: readonly KeyKind[]): Promise<KeyRecord[]> {
    {
      const now = this.o.clock.now();
      const fresh: LiveKey[] = [];
      for (const kind of kinds) {
        const p = this.o.policies[kind];
        const notBefore = now + p.stagingLeadMs;
        fresh.push(await this.newKey(kind, now, notBefore));
      }
      await this.commit(fresh);
      for (const k of fresh) this.o.logger.info('audit', { event: 'key.rotated', kid: k.record.kid, kind: k.record.kind, alg: k.record.alg, notBefore: iso(k.record.notBefore), trigger: 'on-demand' });
      return fresh.map((k) => k.record);
    }
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

  private async eraseAndReseal(): Promise<void> {
    const now = this.o.clock.now();
    let changed = false;
    const next = new Map(this.keys);
    for (const k of this.keys.values()) {
      const r = k.record;
      let replacement: KeyRecord | undefined;
      let event: string | undefined;
      if (r.sealed && now >= r.destroyAfter) {
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
