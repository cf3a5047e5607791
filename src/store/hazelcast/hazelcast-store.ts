/**
 * The Store contract on a Hazelcast cluster (cluster mode): every STS node sees the same sessions, tokens,
 * tickets, throttling counters, keys and user secrets.
 *
 * - Ephemeral records live in IMaps `sts-<namespace>` with a per-entry TTL; `consume` is IMap.remove and
 *   `insertIfAbsent` IMap.putIfAbsent, which the owning partition executes atomically, so of concurrent
 *   consumers (or inserters) on any nodes exactly one wins.
 * - Durable records (keys, user secrets) are immutable once written: created with putIfAbsent (one winner
 *   cluster-wide), and every node also keeps every record it sees in its local SQLite (entry listeners) and
 *   syncs both ways on start and after a reconnect. A full cluster restart therefore loses no key and no
 *   secret, and a node never creates a record it already has a copy of.
 *
 * Every cluster failure surfaces as UNAVAILABLE: a node that cannot reach the cluster refuses, it never
 * answers from partial state.
 */
import { Client, type IMap, LifecycleState, Predicates, ReconnectMode } from 'hazelcast-client';
import type { Clock } from '../../clock.js';
import { StsError } from '../../errors.js';
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

interface EphemeralEntry {
  value: string;
  grp: string | null;
  exp: number;
}

const EPHEMERAL: readonly EphemeralNamespace[] = ['app_token', 'user_token', 'participant', 'user_ticket', 'throttle', 'credential_jti', 'third_party_jti'];
const DURABLE: readonly DurableNamespace[] = ['key', 'user_secret'];

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
    private readonly maps: Map<EphemeralNamespace, IMap<string, EphemeralEntry>>,
    private readonly clock: Clock,
  ) {}

  private map(ns: EphemeralNamespace): IMap<string, EphemeralEntry> {
    return this.maps.get(ns)!;
  }

  upsert(ns: EphemeralNamespace, id: string, value: string, ttlMs: number, group?: string): Promise<void> {
    // Hazelcast TTLs have one-second resolution: round up, and check `exp` on every read as well.
    const exp = this.clock.now() + ttlMs;
    return guarded(() => this.map(ns).set(id, { value, grp: group ?? null, exp }, Math.max(1000, Math.ceil(ttlMs / 1000) * 1000)));
  }

  async update(ns: EphemeralNamespace, id: string, value: string, ttlMs: number): Promise<boolean> {
    const current = await guarded(() => this.map(ns).get(id));
    if (!current || current.exp <= this.clock.now()) return false;
    const next: EphemeralEntry = { value, grp: current.grp, exp: this.clock.now() + ttlMs };
    // replaceIfSame is atomic on the owning partition: a logout that removed the entry meanwhile wins.
    const replaced = await guarded(() => this.map(ns).replaceIfSame(id, current, next));
    if (replaced) await guarded(() => this.map(ns).setTtl(id, Math.max(1000, Math.ceil(ttlMs / 1000) * 1000)));
    return replaced;
  }

  async insertIfAbsent(ns: EphemeralNamespace, id: string, value: string, ttlMs: number): Promise<boolean> {
    // putIfAbsent runs on the key's partition owner: one winner across all nodes. An entry past its `exp`
    // may still be in the map (TTLs have one-second resolution and are rounded up); it must not block, so it
    // is removed only if it is still that very entry (remove(key, value) is atomic too) and the insert is
    // tried again. A few rounds only: losing to a concurrent insert means a live entry, so false.
    for (let round = 0; round < 3; round++) {
      const now = this.clock.now();
      const entry: EphemeralEntry = { value, grp: null, exp: now + ttlMs };
      const existing = await guarded(() => this.map(ns).putIfAbsent(id, entry, Math.max(1000, Math.ceil(ttlMs / 1000) * 1000)));
      if (existing === null) return true;
      if (existing.exp > now) return false;
      await guarded(() => this.map(ns).remove(id, existing));
    }
    return false;
  }

  async find(ns: EphemeralNamespace, id: string): Promise<string | undefined> {
    const e = await guarded(() => this.map(ns).get(id));
    return e && e.exp > this.clock.now() ? e.value : undefined;
  }

  async consume(ns: EphemeralNamespace, id: string): Promise<string | undefined> {
    const e = (await guarded(() => this.map(ns).remove(id))) as EphemeralEntry | null;
    return e && e.exp > this.clock.now() ? e.value : undefined;
  }

  destroy(ns: EphemeralNamespace, id: string): Promise<void> {
    return guarded(() => this.map(ns).delete(id));
  }

  async findGroup(ns: EphemeralNamespace, group: string): Promise<GroupEntry[]> {
    const now = this.clock.now();
    const entries = await guarded(() => this.map(ns).entrySetWithPredicate(Predicates.equal('grp', group)));
    return entries.filter(([, e]) => e.exp > now).map(([id, e]) => ({ id, value: e.value }));
  }

  async destroyGroup(ns: EphemeralNamespace, group: string): Promise<number> {
    const now = this.clock.now();
    const keys = await guarded(() => this.map(ns).keySetWithPredicate(Predicates.equal('grp', group)));
    let live = 0;
    for (const k of keys) {
      const e = (await guarded(() => this.map(ns).remove(k))) as EphemeralEntry | null;
      if (e && e.exp > now) live++;
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

class HazelcastDurableStore implements DurableStore {
  /** False from a lost connection until the node has synced with the cluster again: durable reads refuse. */
  ready = true;

  constructor(
    private readonly maps: Map<DurableNamespace, IMap<string, string>>,
    private readonly local: SqliteDurableStore,
    private readonly logger: Logger,
  ) {}

  private map(ns: DurableNamespace): IMap<string, string> {
    return this.maps.get(ns)!;
  }

  private requireReady(): void {
    if (!this.ready) throw unavailable(new Error('not yet synced with the cluster after a reconnect'));
  }

  /** Keeps `remote` as the local copy after reconciling; throws FAILED_PRECONDITION on a conflict. */
  private async adopt(ns: DurableNamespace, id: string, remote: string): Promise<string> {
    const mine = await this.local.get(ns, id);
    if (mine === undefined) {
      this.local.put(ns, id, remote);
      return remote;
    }
    const keep = reconcile(ns, mine, remote);
    if (keep === undefined) {
      this.logger.error('durable record conflict: the local copy and the cluster differ; refusing to serve it', { ns, id });
      throw conflict(ns, id);
    }
    if (keep !== mine) this.local.put(ns, id, keep);
    return keep;
  }

  async insertIfAbsent(ns: DurableNamespace, id: string, value: string): Promise<string> {
    this.requireReady();
    // A node that already holds a copy republishes it instead of offering a new value.
    const mine = (await this.local.get(ns, id)) ?? value;
    const existing = await guarded(() => this.map(ns).putIfAbsent(id, mine));
    return existing === null ? (this.local.put(ns, id, mine), mine) : this.adopt(ns, id, existing);
  }

  async insertAll(ns: DurableNamespace, records: readonly GroupEntry[]): Promise<void> {
    this.requireReady();
    // Each record has a fresh random or thumbprint id, so putIfAbsent cannot meet another value; the local
    // copy is written only once the cluster has them all.
    for (const r of records) {
      const existing = await guarded(() => this.map(ns).putIfAbsent(r.id, r.value));
      if (existing !== null && existing !== r.value) throw new StsError('internal', `durable record ${ns}/${r.id} exists with another value`);
    }
    for (const r of records) this.local.put(ns, r.id, r.value);
  }

  async get(ns: DurableNamespace, id: string): Promise<string | undefined> {
    this.requireReady();
    const remote = await guarded(() => this.map(ns).get(id));
    if (remote !== null) return this.adopt(ns, id, remote);
    const mine = await this.local.get(ns, id);
    if (mine !== undefined) return this.insertIfAbsent(ns, id, mine);
    return undefined;
  }

  async list(ns: DurableNamespace): Promise<GroupEntry[]> {
    this.requireReady();
    const remote = await guarded(() => this.map(ns).entrySet());
    const merged = new Map<string, string>();
    for (const r of await this.local.list(ns)) merged.set(r.id, r.value);
    for (const [id, value] of remote) {
      const m = merged.get(id);
      // A conflicting user secret is left out of listings (re-wrap skips it); reading it fails closed.
      const keep = m === undefined ? value : reconcile(ns, m, value);
      if (keep === undefined) merged.delete(id);
      else merged.set(id, keep);
    }
    return [...merged].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, value]) => ({ id, value }));
  }

  /**
   * The cluster's map (every node writes a record there before its own copy, so it holds every node's
   * records) merged with this node's copies (a record the cluster lost in a full restart and that no node has
   * republished yet). Two versions that reconcile count once, as the version kept, and a stale copy here is
   * brought up to date on the way (only if it is still the one read: an entry event may be newer); two that
   * cannot both be right (a user secret made twice) are both returned, where `list` leaves the record out.
   */
  async listVersions(ns: DurableNamespace): Promise<GroupEntry[]> {
    this.requireReady();
    const remote = new Map(await guarded(() => this.map(ns).entrySet()));
    const out: GroupEntry[] = [];
    for (const mine of await this.local.list(ns)) {
      const theirs = remote.get(mine.id);
      remote.delete(mine.id);
      const keep = theirs === undefined ? mine.value : reconcile(ns, mine.value, theirs);
      if (keep === undefined) {
        out.push(mine, { id: mine.id, value: theirs! });
        continue;
      }
      if (keep !== mine.value) await this.local.replaceIfSame(ns, mine.id, mine.value, keep);
      out.push({ id: mine.id, value: keep });
    }
    for (const [id, value] of remote) out.push({ id, value });
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async replaceIfSame(ns: DurableNamespace, id: string, expected: string, next: string): Promise<boolean> {
    this.requireReady();
    const ok = await guarded(() => this.map(ns).replaceIfSame(id, expected, next));
    if (ok) this.local.put(ns, id, next);
    return ok;
  }

  /**
   * Start-up and every reconnect, before serving: copies every cluster record this node lacks into its
   * SQLite (a node started after a record was made must hold it too, for the next full cluster restart), then
   * publishes every local record the cluster lacks. Conflicting user secrets are logged and never
   * overwritten on either side.
   */
  async sync(): Promise<{ pulled: number; published: number; conflicts: number }> {
    let pulled = 0;
    let published = 0;
    let conflicts = 0;
    for (const ns of DURABLE) {
      const remote = new Map(await guarded(() => this.map(ns).entrySet()));
      for (const [id, value] of remote) {
        const mine = await this.local.get(ns, id);
        if (mine === undefined) {
          this.local.put(ns, id, value);
          pulled++;
          continue;
        }
        const keep = reconcile(ns, mine, value);
        if (keep === undefined) {
          conflicts++;
          this.logger.error('durable record conflict during sync: the local copy and the cluster differ; both kept, reads refuse', { ns, id });
        } else if (keep !== mine) {
          this.local.put(ns, id, keep);
        } else if (keep !== value) {
          await guarded(() => this.map(ns).replaceIfSame(id, value, keep));
        }
      }
      for (const r of await this.local.list(ns)) {
        if (remote.has(r.id)) continue;
        const existing = await guarded(() => this.map(ns).putIfAbsent(r.id, r.value));
        if (existing === null) published++;
      }
    }
    return { pulled, published, conflicts };
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

  private constructor(
    private readonly client: Client,
    ephemeral: Map<EphemeralNamespace, IMap<string, EphemeralEntry>>,
    private readonly durableMaps: Map<DurableNamespace, IMap<string, string>>,
    private readonly local: SqliteDurableStore,
    clock: Clock,
    private readonly logger: Logger,
  ) {
    this.ephemeral = new HazelcastEphemeralStore(ephemeral, clock);
    this.durable = new HazelcastDurableStore(durableMaps, local, logger);
  }

  static async connect(options: HazelcastOptions, local: SqliteDurableStore, clock: Clock, logger: Logger, onState: (connected: boolean) => void): Promise<HazelcastStore> {
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
              const store = self.store;
              if (store && !store.connected) {
                void store.durable
                  .sync()
                  .then(async (n) => {
                    for (const hook of store.reconnectHooks) await hook();
                    store.durable.ready = true;
                    store.connected = true;
                    logger.info('cluster connection restored', n);
                    onState(true);
                  })
                  .catch((err: unknown) => logger.error('syncing with the cluster failed; staying unavailable', { err }));
              }
            }
          },
        ],
      });
    } catch (err) {
      throw new StsError('unavailable', `cannot connect to the Hazelcast cluster ${options.clusterName} at ${options.members.join(', ')}`, { cause: err });
    }
    const ephemeral = new Map<EphemeralNamespace, IMap<string, EphemeralEntry>>();
    for (const ns of EPHEMERAL) ephemeral.set(ns, await client.getMap<string, EphemeralEntry>(`sts-${ns}`));
    const durable = new Map<DurableNamespace, IMap<string, string>>();
    for (const ns of DURABLE) durable.set(ns, await client.getMap<string, string>(`sts-${ns}`));
    const store = new HazelcastStore(client, ephemeral, durable, local, clock, logger);
    self.store = store;
    await store.listen();
    const synced = await store.durable.sync();
    logger.info('connected to the cluster', { cluster: options.clusterName, ...synced });
    return store;
  }

  /** Every node keeps every durable record it sees in its local SQLite, and tells its listeners. */
  private async listen(): Promise<void> {
    for (const [ns, map] of this.durableMaps) {
      const onEvent = (e: { key: string; value: string | null }) => {
        if (e.value === null) return;
        try {
          this.local.put(ns, e.key, e.value);
        } catch (err) {
          this.logger.error('could not keep a local copy of a cluster record', { ns, id: e.key, err });
        }
        for (const l of this.listeners) l(ns, e.key);
      };
      await map.addEntryListener({ added: onEvent, updated: onEvent }, undefined, true);
    }
  }

  onDurableChange(listener: DurableChangeListener): void {
    this.listeners.push(listener);
  }

  /**
   * A cluster-wide lease: at most one holder until `leaseMs` passes or it is released. Hazelcast's
   * FencedLock is Enterprise-only since 5.5 and IMap locks are per client, not per request, so the lease is
   * a putIfAbsent with TTL on a map, released with remove(key, owner).
   */
  async tryLease(name: string, owner: string, leaseMs: number): Promise<(() => Promise<void>) | undefined> {
    const map = await guarded(() => this.client.getMap<string, string>('sts-lock'));
    const existing = await guarded(() => map.putIfAbsent(name, owner, leaseMs));
    if (existing !== null && existing !== owner) return undefined;
    return async () => {
      await map.remove(name, owner).catch(() => undefined);
    };
  }

  /** A cluster map for replicated tables: `sts-directory` (the directory), `sts-registry` (IdPs, resource servers). */
  replicationMap(name: 'sts-directory' | 'sts-registry'): Promise<IMap<string, string>> {
    return guarded(() => this.client.getMap<string, string>(name));
  }

  get isConnected(): boolean {
    return this.connected;
  }

  async close(): Promise<void> {
    await this.client.shutdown();
  }
}
