/**
 * The Store contract on a Hazelcast cluster (cluster mode): every STS node sees the same sessions, tokens,
 * tickets, throttling counters, keys and user secrets.
 *
 * The grid is untrusted storage (open-source Hazelcast authenticates nobody): every value STS puts in a map
 * is sealed under the cluster data key and bound to its map, kind and key (src/cluster/cluster-seal.ts), and a
 * value that does not open, is not valid or is older than this node's copy is never used: an ephemeral record
 * is treated as absent, a durable one is served from this node's own authentic copy, which is then published
 * again over the refused value (repair). Map keys that are secrets (token ids, tickets) are hashes, and group
 * attributes (a user's uid) are HMAC tags: members hold no personal data in clear.
 *
 * - Ephemeral records live in IMaps `sts-<namespace>` with a per-entry TTL; `consume` is IMap.remove and
 *   `insertIfAbsent` IMap.putIfAbsent, which the owning partition executes atomically, so of concurrent
 *   consumers (or inserters) on any nodes exactly one wins.
 * - Durable records (keys, user secrets) carry a revision inside their seal: created with putIfAbsent (one
 *   winner cluster-wide), changed only with replaceIfSame (re-wrap, re-seal, erasure), and every node keeps
 *   every record it accepts in its local SQLite (entry listeners) with its revision, and syncs both ways on
 *   start and after a reconnect. A full cluster restart therefore loses no key and no secret, a node never
 *   creates a record it already has a copy of, and erasing or rolling back a record in the grid changes no
 *   node's copy.
 *
 * Every cluster failure surfaces as UNAVAILABLE: a node that cannot reach the cluster refuses, it never
 * answers from partial state.
 */
import { Client, type IMap, LifecycleState, Predicates, ReconnectMode } from 'hazelcast-client';
import type { Clock } from '../../clock.js';
import { ClusterSeal, type RejectReason, SealRejected } from '../../cluster/cluster-seal.js';
import type { ClusterRejections } from '../../cluster/rejections.js';
import type { RevisionStore } from '../../cluster/revisions.js';
import { type SealContext, UNREADABLE, type Version, VersionedMap, dropUndecodableEvents, isSerializationError, readEntry } from '../../cluster/versioned-map.js';
import { coalesced } from '../../coalesce.js';
import { StartupError, StsError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { DurableNamespace, DurableStore, EphemeralNamespace, EphemeralStore, GroupEntry, Store } from '../adapter.js';
import type { SqliteDurableStore } from '../sqlite/sqlite-store.js';

export interface HazelcastOptions {
  clusterName: string;
  members: string[];
  /** How long the first connection may take before start-up fails. */
  connectTimeoutMs: number;
  /** Per-operation timeout. */
  invocationTimeoutMs: number;
}

/** How the grid is protected (cluster.* options and the master key ring). */
export interface ClusterProtection {
  seal: ClusterSeal;
  rejections: ClusterRejections;
  revisions: RevisionStore;
  /**
   * Checks a durable record as the code that creates it would (the same rules as the front door); throws
   * when the record is not valid. Runs before a record from the grid is used or copied.
   */
  validate: Record<DurableNamespace, (id: string, value: string) => void | Promise<void>>;
  /** A cluster written by an STS from before sealing: refuse to start (default), or seal what it holds once. */
  unsealedRecords: 'refuse' | 'reseal';
  /** Lease length; an unreadable lease counts as expired this long after this node first saw it. */
  leaseMs: number;
}

/** What an ephemeral entry is in the grid: the sealed record, and the HMAC tag of its group for the index. */
interface SealedEntry {
  s: string;
  grp: string | null;
}

/** The sealed part of an ephemeral entry. */
interface EphemeralRecord {
  v: string;
  /** Expiry, epoch ms (Hazelcast TTLs have one-second resolution). */
  e: number;
  g: string | null;
}

/** A lease in `sts-lock`: who holds it, until when. */
interface LeaseRecord {
  o: string;
  e: number;
}

const EPHEMERAL: readonly EphemeralNamespace[] = ['app_token', 'user_token', 'participant', 'user_ticket', 'throttle', 'credential_jti', 'third_party_jti'];
const DURABLE: readonly DurableNamespace[] = ['key', 'user_secret'];
const REPLICATED = ['sts-directory', 'sts-registry'] as const;
export type ReplicatedMapName = (typeof REPLICATED)[number];
const LEASES = 'sts-lock';

/** Hazelcast TTLs have one-second resolution: round up (and every read checks the expiry inside the seal). */
const ttlOf = (ms: number): number => Math.max(1000, Math.ceil(ms / 1000) * 1000);
/** The kind of a replicated-table entry is its key's prefix ("app:notes" -> "app"). */
const prefixKind = (key: string): string => key.slice(0, Math.max(0, key.indexOf(':')));

function unavailable(err: unknown): StsError {
  if (err instanceof StsError) return err;
  return new StsError('unavailable', 'cluster state is unavailable; retry shortly', { cause: err, retryAfterMs: 1000 });
}

async function guarded<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw unavailable(err);
  }
}

class HazelcastEphemeralStore implements EphemeralStore {
  constructor(
    private readonly maps: Map<EphemeralNamespace, IMap<string, SealedEntry>>,
    private readonly clock: Clock,
    private readonly p: ClusterProtection,
  ) {}

  private map(ns: EphemeralNamespace): IMap<string, SealedEntry> {
    return this.maps.get(ns)!;
  }

  private entry(ns: EphemeralNamespace, id: string, record: EphemeralRecord): SealedEntry {
    return { s: this.p.seal.seal({ map: `sts-${ns}`, kind: ns, key: id }, JSON.stringify(record)), grp: record.g === null ? null : this.p.seal.groupTag(record.g) };
  }

  /** The record in a grid entry, or why it was refused (reported once per value). Expiry is not checked here. */
  private open(ns: EphemeralNamespace, id: string, raw: unknown): EphemeralRecord | RejectReason {
    try {
      const s = raw !== null && typeof raw === 'object' ? (raw as Partial<SealedEntry>).s : undefined;
      const r = JSON.parse(this.p.seal.open({ map: `sts-${ns}`, kind: ns, key: id }, s)) as Partial<EphemeralRecord>;
      if (typeof r.v !== 'string' || typeof r.e !== 'number' || (r.g !== null && typeof r.g !== 'string')) throw new SealRejected('invalid', 'not an ephemeral record');
      return r as EphemeralRecord;
    } catch (err) {
      const reason = err instanceof SealRejected ? err.reason : 'invalid';
      this.p.rejections.report(`sts-${ns}`, id, reason, raw);
      return reason;
    }
  }

  /** The live record of an entry: undefined when absent, refused or expired. */
  private live(ns: EphemeralNamespace, id: string, raw: unknown): EphemeralRecord | undefined {
    if (raw === null || raw === undefined) return undefined;
    if (raw === UNREADABLE) {
      this.p.rejections.report(`sts-${ns}`, id, 'invalid', 'a value the client cannot read');
      return undefined;
    }
    const r = this.open(ns, id, raw);
    return typeof r === 'object' && r.e > this.clock.now() ? r : undefined;
  }

  upsert(ns: EphemeralNamespace, id: string, value: string, ttlMs: number, group?: string): Promise<void> {
    const entry = this.entry(ns, id, { v: value, e: this.clock.now() + ttlMs, g: group ?? null });
    return guarded(() => this.map(ns).set(id, entry, ttlOf(ttlMs)));
  }

  async update(ns: EphemeralNamespace, id: string, value: string, ttlMs: number, expected?: string): Promise<boolean> {
    const raw = await guarded(() => readEntry(() => this.map(ns).get(id)));
    const current = this.live(ns, id, raw);
    if (!current || raw === UNREADABLE || raw === null || (expected !== undefined && current.v !== expected)) return false;
    const next = this.entry(ns, id, { v: value, e: this.clock.now() + ttlMs, g: current.g });
    // replaceIfSame is atomic on the owning partition: a logout that removed the entry meanwhile wins.
    const replaced = await guarded(() => this.map(ns).replaceIfSame(id, raw, next));
    if (replaced) await guarded(() => this.map(ns).setTtl(id, ttlOf(ttlMs)));
    return replaced;
  }

  async insertIfAbsent(ns: EphemeralNamespace, id: string, value: string, ttlMs: number): Promise<boolean> {
    // putIfAbsent runs on the key's partition owner: one winner across all nodes. An entry past its expiry
    // may still be in the map (TTLs have one-second resolution and are rounded up), and a forged one may be
    // there too: neither may block, so it is removed only if it is still that very entry (remove(key, value)
    // is atomic too) and the insert is tried again. An entry sealed under a master key this node lacks is
    // another node's and counts as live: refusing a credential is safer than accepting it twice. A few
    // rounds only: losing to a concurrent insert means a live entry, so false.
    for (let round = 0; round < 3; round++) {
      const now = this.clock.now();
      const entry = this.entry(ns, id, { v: value, e: now + ttlMs, g: null });
      const existing = await guarded(() => readEntry(() => this.map(ns).putIfAbsent(id, entry, ttlOf(ttlMs))));
      if (existing === null) return true;
      // A value no client can read cannot be removed as that very value: it blocks (denial of service only).
      if (existing === UNREADABLE) return false;
      const r = this.open(ns, id, existing);
      if (r === 'unknown_key' || (typeof r === 'object' && r.e > now)) return false;
      await guarded(() => this.map(ns).remove(id, existing));
    }
    return false;
  }

  async find(ns: EphemeralNamespace, id: string): Promise<string | undefined> {
    const raw = await guarded(() => readEntry(() => this.map(ns).get(id)));
    return this.live(ns, id, raw)?.v;
  }

  async consume(ns: EphemeralNamespace, id: string): Promise<string | undefined> {
    const raw = await guarded(() => readEntry(() => this.map(ns).remove(id)));
    return this.live(ns, id, raw)?.v;
  }

  destroy(ns: EphemeralNamespace, id: string): Promise<void> {
    return guarded(() => this.map(ns).delete(id));
  }

  private groupPredicate(group: string) {
    const tags = this.p.seal.groupTags(group);
    return tags.length === 1 ? Predicates.equal('grp', tags[0]) : Predicates.inPredicate('grp', ...tags);
  }

  /**
   * Entries indexed under `group`: the index holds HMAC tags (one per configured master key), and the group
   * inside the seal must match too, so an entry whose tag was changed in the grid is not counted in.
   */
  async findGroup(ns: EphemeralNamespace, group: string): Promise<GroupEntry[]> {
    const entries = await guarded(async () => {
      try {
        return await this.map(ns).entrySetWithPredicate(this.groupPredicate(group));
      } catch (err) {
        // A planted value the client cannot read among them: read them one by one instead.
        if (!isSerializationError(err)) throw err;
        const keys = await this.map(ns).keySetWithPredicate(this.groupPredicate(group));
        return Promise.all(keys.map(async (k) => [k, await readEntry(() => this.map(ns).get(k))] as [string, unknown]));
      }
    });
    const out: GroupEntry[] = [];
    for (const [id, raw] of entries) {
      const r = this.live(ns, id, raw);
      if (r && r.g === group) out.push({ id, value: r.v });
    }
    return out;
  }

  async destroyGroup(ns: EphemeralNamespace, group: string): Promise<number> {
    const keys = await guarded(() => this.map(ns).keySetWithPredicate(this.groupPredicate(group)));
    let live = 0;
    for (const k of keys) {
      const r = this.live(ns, k, await guarded(() => readEntry(() => this.map(ns).remove(k))));
      if (r && r.g === group) live++;
    }
    return live;
  }
}

/**
 * Reconciles two versions of one durable record (a local copy and the cluster's). Returns the version to keep,
 * or undefined when they cannot both be right.
 * - Keys: an erased key beats a sealed one (erasure is final); otherwise the cluster's version.
 * - User secrets: versions with the same `createdAt` wrap the same secret (a re-wrap changes only the
 *   wrapping); different `createdAt` means two different secrets for one user, which must never be resolved
 *   by picking one: the caller fails closed.
 */
function reconcile(ns: DurableNamespace, local: string, remote: string): string | undefined {
  if (local === remote) return remote;
  const l = JSON.parse(local) as { sealed?: unknown; createdAt?: unknown };
  const r = JSON.parse(remote) as { sealed?: unknown; createdAt?: unknown };
  if (ns === 'key') return !l.sealed && r.sealed ? local : remote;
  return l.createdAt === r.createdAt ? remote : undefined;
}

function conflict(ns: DurableNamespace, id: string): StsError {
  return new StsError('failed_precondition', `the stored ${ns === 'key' ? 'key' : 'secret'} record has two different versions in the cluster; an operator must resolve it (record ${id.slice(0, 12)}...)`);
}

/** A version this node serves, with the grid value that holds it (null: the grid has none; undefined: unknown). */
type Served = Version & { raw: unknown };

class HazelcastDurableStore implements DurableStore {
  /** False from a lost connection until the node has synced with the cluster again: durable reads refuse. */
  ready = true;

  constructor(
    private readonly maps: Map<DurableNamespace, VersionedMap>,
    private readonly local: SqliteDurableStore,
    private readonly logger: Logger,
    private readonly p: ClusterProtection,
  ) {}

  private vm(ns: DurableNamespace): VersionedMap {
    return this.maps.get(ns)!;
  }

  private requireReady(): void {
    if (!this.ready) throw unavailable(new Error('not yet synced with the cluster after a reconnect'));
  }

  /** This node's copy and its revision (1 when none is recorded: a copy made before revisions existed). */
  private async mine(ns: DurableNamespace, id: string): Promise<Version | undefined> {
    const value = await this.local.get(ns, id);
    return value === undefined ? undefined : { value, rev: this.vm(ns).local(id)?.rev ?? 1 };
  }

  /** Writes this node's copy and its revision in one SQLite transaction. */
  private keep(ns: DurableNamespace, id: string, v: Version): void {
    this.vm(ns).remember(id, v, () => this.local.put(ns, id, v.value));
  }

  /**
   * Puts this node's authentic copy in the grid in place of `raw` (a refused value, or nothing: null). Returns
   * the sealed value written, or undefined when the entry changed meanwhile (its own event follows).
   */
  private async republish(ns: DurableNamespace, id: string, v: Version, raw: unknown): Promise<string | undefined> {
    const vm = this.vm(ns);
    const sealed = vm.seal(id, v);
    const ok = raw === null ? (await guarded(() => vm.imap.putIfAbsent(id, sealed))) === null : await guarded(() => vm.imap.replaceIfSame(id, raw, sealed));
    return ok ? sealed : undefined;
  }

  /**
   * What a grid value means for this node. The grid's version is used (and copied here) only when it opens,
   * is a valid record and is not older than this node's copy; otherwise this node keeps serving its own copy
   * and publishes it again over the refused value, except over a value sealed under a master key it does not
   * have (a node with a newer ring may have written it). Returns undefined when there is nothing usable, and
   * throws FAILED_PRECONDITION on two versions that cannot both be right (a user secret made twice).
   */
  private async absorb(ns: DurableNamespace, id: string, raw: unknown): Promise<Served | undefined> {
    const vm = this.vm(ns);
    const mine = await this.mine(ns, id);
    // Refused: this node serves its own copy, and puts it back over the refused value, except over a value
    // sealed under a master key it lacks (a node with a newer ring may have written it), and not for ever.
    const refuse = async (reason: RejectReason, report: boolean): Promise<Served | undefined> => {
      if (report) vm.reject(id, reason, raw);
      if (!mine) return undefined;
      const repair = reason !== 'unknown_key' && vm.mayRepair(id);
      return { ...mine, raw: repair ? await this.republish(ns, id, mine, raw) : undefined };
    };
    // A value no client can read cannot be replaced as that very value: refused, and left for deletion.
    if (raw === UNREADABLE) return refuse('unknown_key', true);
    const theirs = vm.open(id, raw);
    if (typeof theirs === 'string') return refuse(theirs, false);
    try {
      // This node's own copy was validated when it was accepted (or written here): only a new value is checked.
      if (theirs.value !== mine?.value) await this.p.validate[ns](id, theirs.value);
    } catch (err) {
      this.logger.debug('cluster record failed validation', { ns, id, err });
      return refuse('invalid', true);
    }
    if (!mine) {
      this.keep(ns, id, theirs);
      return { ...theirs, raw };
    }
    if (theirs.rev < mine.rev) return refuse('rollback', true);
    const keep = mine.value === theirs.value ? theirs.value : reconcile(ns, mine.value, theirs.value);
    if (keep === undefined) {
      this.logger.error('durable record conflict: the local copy and the cluster differ; refusing to serve it', { ns, id });
      throw conflict(ns, id);
    }
    if (keep === theirs.value) {
      if (theirs.rev !== mine.rev || theirs.value !== mine.value) this.keep(ns, id, theirs);
      return { ...theirs, raw };
    }
    // This node's copy wins (an erased key is never brought back): publish it above the grid's revision.
    const next = { value: mine.value, rev: theirs.rev + 1 };
    this.keep(ns, id, next);
    return { ...next, raw: await this.republish(ns, id, next, raw) };
  }

  async insertIfAbsent(ns: DurableNamespace, id: string, value: string): Promise<string> {
    this.requireReady();
    const vm = this.vm(ns);
    // A node that already holds a copy republishes it instead of offering a new value.
    const mine = await this.mine(ns, id);
    const offer = mine ?? { value, rev: 1 };
    const existing = await guarded(() => readEntry(() => vm.imap.putIfAbsent(id, vm.seal(id, offer))));
    if (existing === null) {
      if (!mine) this.keep(ns, id, offer);
      return offer.value;
    }
    const served = await this.absorb(ns, id, existing);
    if (served) return served.value;
    // The grid holds a value that does not open and this node has no copy: another node's authentic record
    // may be behind it (that node puts it back). A second record for one id is never made: fail closed.
    throw unavailable(new Error(`the cluster record ${ns}/${id} was refused and this node has no copy`));
  }

  async insertAll(ns: DurableNamespace, records: readonly GroupEntry[]): Promise<void> {
    this.requireReady();
    const vm = this.vm(ns);
    // Each record has a fresh random or thumbprint id, so putIfAbsent cannot meet another value; the local
    // copies are written only once the cluster has them all.
    for (const r of records) {
      const existing = await guarded(() => vm.imap.putIfAbsent(r.id, vm.seal(r.id, { value: r.value, rev: 1 })));
      const theirs = existing === null ? undefined : vm.open(r.id, existing);
      if (existing !== null && (typeof theirs !== 'object' || theirs.value !== r.value)) throw new StsError('internal', `durable record ${ns}/${r.id} exists with another value`);
    }
    for (const r of records) this.keep(ns, r.id, { value: r.value, rev: 1 });
  }

  async get(ns: DurableNamespace, id: string): Promise<string | undefined> {
    this.requireReady();
    const raw = await guarded(() => readEntry(() => this.vm(ns).imap.get(id)));
    if (raw !== null) return (await this.absorb(ns, id, raw))?.value;
    const mine = await this.mine(ns, id);
    if (mine !== undefined) return this.insertIfAbsent(ns, id, mine.value);
    return undefined;
  }

  async list(ns: DurableNamespace): Promise<GroupEntry[]> {
    this.requireReady();
    const remote = await guarded(() => this.vm(ns).entries());
    const merged = new Map<string, string>();
    for (const r of await this.local.list(ns)) merged.set(r.id, r.value);
    for (const [id, raw] of remote) {
      try {
        const served = await this.absorb(ns, id, raw);
        if (served) merged.set(id, served.value);
      } catch (err) {
        // A conflicting user secret is left out of listings (re-wrap skips it); reading it fails closed.
        if (!(err instanceof StsError) || err.code !== 'failed_precondition') throw err;
        merged.delete(id);
      }
    }
    return [...merged].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, value]) => ({ id, value }));
  }

  /**
   * The cluster's map (every node writes a record there before its own copy, so it holds every node's
   * records) merged with this node's copies (a record the cluster lost and that no node has republished yet).
   * Two versions that reconcile count once, as the version kept (this node's copy is brought up to date on the
   * way); two that cannot both be right (a user secret made twice) are both returned, under the same id, where
   * `list` leaves the record out. Refused grid values count as absent.
   */
  async listVersions(ns: DurableNamespace): Promise<GroupEntry[]> {
    this.requireReady();
    const vm = this.vm(ns);
    const remote = new Map(await guarded(() => vm.entries()));
    const ids = new Set([...(await this.local.list(ns)).map((r) => r.id), ...remote.keys()]);
    const out: GroupEntry[] = [];
    for (const id of ids) {
      const raw = remote.get(id);
      try {
        const served = raw === undefined ? await this.mine(ns, id) : await this.absorb(ns, id, raw);
        if (served) out.push({ id, value: served.value });
      } catch (err) {
        if (!(err instanceof StsError) || err.code !== 'failed_precondition') throw err;
        const theirs = vm.open(id, raw);
        out.push({ id, value: (await this.local.get(ns, id))! });
        if (typeof theirs === 'object') out.push({ id, value: theirs.value });
      }
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async replaceIfSame(ns: DurableNamespace, id: string, expected: string, next: string): Promise<boolean> {
    this.requireReady();
    const vm = this.vm(ns);
    const raw = await guarded(() => readEntry(() => vm.imap.get(id)));
    // The version being replaced is the one this node serves: the grid's once accepted, else its own copy
    // (in place of a refused or missing grid value, which this write then repairs).
    const served: Served | undefined = raw === null ? ((m) => m && { ...m, raw: null })(await this.mine(ns, id)) : await this.absorb(ns, id, raw);
    if (!served || served.value !== expected || served.raw === undefined) return false;
    const v = { value: next, rev: served.rev + 1 };
    const sealed = vm.seal(id, v);
    const ok = served.raw === null ? (await guarded(() => vm.imap.putIfAbsent(id, sealed))) === null : await guarded(() => vm.imap.replaceIfSame(id, served.raw, sealed));
    if (ok) this.keep(ns, id, v);
    return ok;
  }

  /**
   * Start-up and every reconnect, before serving: accepts every valid cluster record this node lacks or holds
   * an older version of (a node started after a record was made must hold it too, for the next full cluster
   * restart), puts its own copy back over every refused one, re-seals records sealed under an older master
   * key, and publishes every local record the cluster lacks. Conflicting user secrets are logged and never
   * overwritten on either side.
   */
  async sync(): Promise<{ pulled: number; published: number; conflicts: number; resealed: number }> {
    let pulled = 0;
    let published = 0;
    let conflicts = 0;
    let resealed = 0;
    for (const ns of DURABLE) {
      const vm = this.vm(ns);
      const remote = new Map(await guarded(() => vm.entries()));
      for (const [id, raw] of remote) {
        const had = (await this.local.get(ns, id)) !== undefined;
        try {
          const served = await this.absorb(ns, id, raw);
          if (served && !had) pulled++;
          if (served && typeof served.raw === 'string' && vm.isStale(served.raw) && (await guarded(() => vm.imap.replaceIfSame(id, served.raw, vm.seal(id, served))))) resealed++;
        } catch (err) {
          if (!(err instanceof StsError) || err.code !== 'failed_precondition') throw err;
          conflicts++;
        }
      }
      for (const r of await this.local.list(ns)) {
        if (remote.has(r.id)) continue;
        if (await this.republish(ns, r.id, (await this.mine(ns, r.id))!, null)) published++;
      }
    }
    return { pulled, published, conflicts, resealed };
  }

  /** Entry events of the durable maps: accept (or refuse) each change at once, and put back what was deleted. */
  async listen(onChange: (ns: DurableNamespace, id: string) => void): Promise<void> {
    for (const ns of DURABLE) {
      const onValue = (e: { key: string; value: unknown }) => {
        if (e.value === null || e.value === undefined) return;
        this.absorb(ns, e.key, e.value).then(
          (served) => served && onChange(ns, e.key),
          (err: unknown) => this.logger.error('could not take a durable record from the cluster', { ns, id: e.key, err }),
        );
      };
      // Erasing a record in the grid erases no node's copy (there are no durable tombstones): put it back.
      const restore = async (what: string, ids: string[]): Promise<void> => {
        let restored = 0;
        for (const id of ids) {
          const mine = await this.mine(ns, id);
          if (mine && (await this.republish(ns, id, mine, null))) restored++;
        }
        if (restored > 0) this.logger.warn(`durable records were ${what} in the cluster; this node published its copies again`, { ns, restored });
      };
      const failed = (err: unknown) => this.logger.error('could not publish deleted durable records again', { ns, err });
      const onRemoved = (e: { key: string }) => void restore('deleted', [e.key]).catch(failed);
      // A burst of clears costs at most two full republications, not one per event.
      const onCleared = coalesced(async () => restore('cleared', (await this.local.list(ns)).map((r) => r.id)), failed);
      await this.vm(ns).imap.addEntryListener({ added: onValue, updated: onValue, removed: onRemoved, evicted: onRemoved, mapCleared: onCleared, mapEvicted: onCleared }, undefined, true);
    }
  }
}

export type DurableChangeListener = (ns: DurableNamespace, id: string) => void;

export class HazelcastStore implements Store {
  readonly ephemeral: EphemeralStore;
  readonly durable: HazelcastDurableStore;
  private readonly listeners: DurableChangeListener[] = [];
  /** Run after every reconnect, before the node serves again (re-reading replicated tables). */
  readonly reconnectHooks: (() => Promise<void>)[] = [];
  private connected = true;
  /**
   * Since when each lease (by name) has been unreadable, as this node saw it: a lease that does not open
   * counts as expired leaseMs after that, whatever value it holds meanwhile (a forger rewriting it does not
   * restart the bound). A readable lease, or one this node takes, ends it.
   */
  private readonly unreadableSince = new Map<string, number>();

  private constructor(
    private readonly client: Client,
    ephemeral: Map<EphemeralNamespace, IMap<string, SealedEntry>>,
    durable: Map<DurableNamespace, VersionedMap>,
    local: SqliteDurableStore,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly p: ClusterProtection,
  ) {
    this.ephemeral = new HazelcastEphemeralStore(ephemeral, clock, p);
    this.durable = new HazelcastDurableStore(durable, local, logger, p);
  }

  static async connect(
    options: HazelcastOptions,
    local: SqliteDurableStore,
    clock: Clock,
    logger: Logger,
    onState: (connected: boolean) => void,
    protection: ClusterProtection,
  ): Promise<HazelcastStore> {
    // The lifecycle listener is registered before the store exists; it reaches it through this holder.
    const self: { store?: HazelcastStore } = {};
    let client: Client;
    try {
      client = await Client.newHazelcastClient({
        clusterName: options.clusterName,
        network: { clusterMembers: options.members, connectionTimeout: 5000, smartRouting: true, redoOperation: false },
        connectionStrategy: {
          asyncStart: false,
          // ASYNC: while disconnected, calls fail at once (ClientOfflineError -> UNAVAILABLE) and the client
          // keeps reconnecting in the background.
          reconnectMode: ReconnectMode.ASYNC,
          connectionRetry: { initialBackoffMillis: 200, maxBackoffMillis: 2000, multiplier: 1.5, jitter: 0.1, clusterConnectTimeoutMillis: options.connectTimeoutMs },
        },
        properties: {
          'hazelcast.client.heartbeat.interval': 1000,
          'hazelcast.client.heartbeat.timeout': 5000,
          'hazelcast.client.invocation.timeout.millis': options.invocationTimeoutMs,
          'hazelcast.logging.level': 'ERROR',
        },
        lifecycleListeners: [
          (state: LifecycleState) => {
            if (state === LifecycleState.DISCONNECTED) {
              logger.warn('cluster connection lost; cluster RPCs answer UNAVAILABLE until it is back');
              if (self.store) {
                self.store.connected = false;
                self.store.durable.ready = false;
              }
              onState(false);
            } else if (state === LifecycleState.CONNECTED || state === LifecycleState.CHANGED_CLUSTER) {
              // After a reconnect (possibly to a restarted, empty cluster): sync both ways, re-read the
              // replicated tables (events missed while away are not replayed), then serve again.
              self.store?.resyncAfterReconnect(onState);
            }
          },
        ],
      });
    } catch (err) {
      throw new StsError('unavailable', `cannot connect to the Hazelcast cluster ${options.clusterName} at ${options.members.join(', ')}`, { cause: err });
    }
    try {
      dropUndecodableEvents(client, (err) => {
        logger.error('dropped a cluster event that cannot be decoded: a value STS did not write', { err });
        protection.rejections.report('*', 'event', 'invalid', String(err));
      });
      await checkUnsealed(client, protection, local, clock, logger);
      const ctx: SealContext = protection;
      const ephemeral = new Map<EphemeralNamespace, IMap<string, SealedEntry>>();
      for (const ns of EPHEMERAL) ephemeral.set(ns, await client.getMap<string, SealedEntry>(`sts-${ns}`));
      const durable = new Map<DurableNamespace, VersionedMap>();
      for (const ns of DURABLE) durable.set(ns, new VersionedMap(await client.getMap<string, unknown>(`sts-${ns}`), `sts-${ns}`, () => ns, ctx));
      const store = new HazelcastStore(client, ephemeral, durable, local, clock, logger, protection);
      self.store = store;
      await store.durable.listen((ns, id) => {
        for (const l of store.listeners) l(ns, id);
      });
      const synced = await store.durable.sync();
      logger.info('connected to the cluster', { cluster: options.clusterName, ...synced });
      return store;
    } catch (err) {
      await client.shutdown().catch(() => undefined);
      throw err;
    }
  }

  private resyncing = false;

  /**
   * After a reconnect (possibly to a restarted, empty cluster): sync both ways, re-read the replicated tables
   * (events missed while away are not replayed), then serve again. A failed attempt is tried again every few
   * seconds while the node stays connected, so a node never stays NOT_SERVING for want of a retry.
   */
  resyncAfterReconnect(onState: (connected: boolean) => void): void {
    if (this.connected || this.resyncing) return;
    this.resyncing = true;
    void (async () => {
      for (let attempt = 1; !this.connected && this.client.getLifecycleService().isRunning(); attempt++) {
        try {
          const n = await this.durable.sync();
          for (const hook of this.reconnectHooks) await hook();
          this.durable.ready = true;
          this.connected = true;
          this.logger.info('cluster connection restored', n);
          onState(true);
        } catch (err) {
          this.logger.error('syncing with the cluster failed; staying unavailable and trying again', { attempt, err });
          await new Promise((r) => setTimeout(r, Math.min(10_000, 1000 * attempt)));
        }
      }
    })().finally(() => {
      this.resyncing = false;
    });
  }

  onDurableChange(listener: DurableChangeListener): void {
    this.listeners.push(listener);
  }

  /**
   * A cluster-wide lease: at most one holder until `leaseMs` passes or it is released. Hazelcast's
   * FencedLock is Enterprise-only since 5.5 and IMap locks are per client, not per request, so the lease is
   * a sealed {owner, expiry} put with putIfAbsent and a TTL, released with remove(key, value). A lease that
   * does not open (forged, or sealed under a master key this node lacks) cannot stall the cluster: it counts
   * as expired once leaseMs has passed since this node first saw it.
   */
  async tryLease(name: string, owner: string): Promise<(() => Promise<void>) | undefined> {
    const map = await guarded(() => this.client.getMap<string, unknown>(LEASES));
    const address = { map: LEASES, kind: 'lease', key: name };
    const leaseMs = this.p.leaseMs;
    for (let round = 0; round < 3; round++) {
      const now = this.clock.now();
      const mine = this.p.seal.seal(address, JSON.stringify({ o: owner, e: now + leaseMs } satisfies LeaseRecord));
      const existing = await guarded(() => map.putIfAbsent(name, mine, ttlOf(leaseMs)));
      const held = existing === null ? mine : undefined;
      if (held) {
        this.unreadableSince.delete(name);
        return async () => void (await map.remove(name, held).catch(() => undefined));
      }
      let lease: LeaseRecord | undefined;
      try {
        const r = JSON.parse(this.p.seal.open(address, existing)) as Partial<LeaseRecord>;
        if (typeof r.o === 'string' && typeof r.e === 'number') lease = r as LeaseRecord;
        else this.p.rejections.report(LEASES, name, 'invalid', existing);
      } catch (err) {
        this.p.rejections.report(LEASES, name, err instanceof SealRejected ? err.reason : 'invalid', existing);
      }
      if (lease) {
        this.unreadableSince.delete(name);
        if (lease.e > now) return lease.o === owner ? async () => void (await map.remove(name, existing).catch(() => undefined)) : undefined;
      } else {
        const since = this.unreadableSince.get(name) ?? now;
        this.unreadableSince.set(name, since);
        if (now - since < leaseMs) return undefined;
        this.logger.warn('an unreadable lease outlived its bound; it is removed', { lease: name });
      }
      // Expired (its TTL not yet applied), or unreadable past its bound: remove exactly it and try again.
      await guarded(() => map.remove(name, existing));
    }
    return undefined;
  }

  /** A sealed, versioned cluster map for replicated tables: `sts-directory` (the directory), `sts-registry` (IdPs, resource servers). */
  async replicationMap(name: ReplicatedMapName): Promise<VersionedMap> {
    return new VersionedMap(await guarded(() => this.client.getMap<string, unknown>(name)), name, prefixKind, this.p);
  }

  get isConnected(): boolean {
    return this.connected;
  }

  async close(): Promise<void> {
    await this.client.shutdown();
  }
}

/**
 * Before anything is read: a cluster whose replicated maps hold records without a seal and none with one was
 * written by an STS from before sealing. Such records cannot be told from forgeries, so the node refuses to
 * start, naming the option that vouches for them once (`cluster.unsealedRecords=reseal`): every unsealed
 * value is then sealed (keys and user secrets from this node's own copy where it has one, else as the grid
 * holds them; directory and registry entries at revision 1; ephemeral ones with their remaining lifetime),
 * and each is still validated like any grid record when a node takes it. A node that has already run in a
 * sealed cluster (it holds revisions) never vouches: the option is an upgrade step, not a setting to leave
 * on, and an empty grid filled with unsealed values by someone else must not become authentic. In a cluster
 * that holds sealed records, an unsealed value is a forgery and is refused like one.
 */
async function checkUnsealed(client: Client, p: ClusterProtection, local: SqliteDurableStore, clock: Clock, logger: Logger): Promise<void> {
  const mapOf = async (name: string, kindOf: (key: string) => string) => new VersionedMap(await client.getMap<string, unknown>(name), name, kindOf, p);
  const versioned = [...DURABLE.map((ns) => mapOf(`sts-${ns}`, () => ns)), ...REPLICATED.map((name) => mapOf(name, prefixKind))];
  let sealed = 0;
  const unsealed: { map: VersionedMap; key: string; raw: string }[] = [];
  for (const pending of versioned) {
    const map = await pending;
    for (const [key, raw] of await map.entries()) {
      if (ClusterSeal.looksSealed(raw)) sealed++;
      else if (typeof raw === 'string') unsealed.push({ map, key, raw });
    }
  }
  if (unsealed.length === 0 || sealed > 0) return;
  const refuse = (why: string): never => {
    throw new StartupError('store_invalid', `the cluster holds ${unsealed.length} records written by an STS without sealing and none sealed: ${why} Nothing was changed.`);
  };
  if (p.unsealedRecords === 'refuse') {
    refuse(
      'this is a cluster from before sealing (an upgrade). To vouch for what it holds, stop every node and start one node once with cluster.unsealedRecords=reseal ' +
        '(STS_CLUSTER_UNSEALED_RECORDS=reseal), then set it back (README: "Security model of cluster mode", upgrades).',
    );
  }
  if (!p.revisions.isEmpty()) {
    refuse('this node has already run in a sealed cluster, so it does not vouch for them (cluster.unsealedRecords=reseal is a one-time upgrade step: set it back to refuse). If the grid was emptied and refilled by something other than STS, this is an attack.');
  }
  let count = 0;
  for (const u of unsealed) {
    const ns = DURABLE.find((d) => `sts-${d}` === u.map.name);
    const value = (ns && (await local.get(ns, u.key))) ?? u.raw;
    if (await u.map.imap.replaceIfSame(u.key, u.raw, u.map.seal(u.key, { value, rev: 1 }))) count++;
  }
  const now = clock.now();
  for (const ns of EPHEMERAL) {
    const map = await mapOf(`sts-${ns}`, () => ns);
    for (const [id, raw] of await map.entries()) {
      const old = raw as { value?: unknown; grp?: unknown; exp?: unknown; s?: unknown } | null;
      if (!old || typeof old !== 'object' || typeof old.s === 'string' || typeof old.value !== 'string' || typeof old.exp !== 'number' || old.exp <= now) continue;
      const g = typeof old.grp === 'string' ? old.grp : null;
      const entry: SealedEntry = { s: p.seal.seal({ map: `sts-${ns}`, kind: ns, key: id }, JSON.stringify({ v: old.value, e: old.exp, g } satisfies EphemeralRecord)), grp: g === null ? null : p.seal.groupTag(g) };
      if (await map.imap.replaceIfSame(id, raw, entry)) {
        await map.imap.setTtl(id, ttlOf(old.exp - now));
        count++;
      }
    }
  }
  await (await client.getMap<string, unknown>(LEASES)).clear();
  logger.warn('sealed the records of a cluster written before sealing (cluster.unsealedRecords=reseal); set the option back to refuse', { sealed: count });
}
