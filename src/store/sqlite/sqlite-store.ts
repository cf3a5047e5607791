/**
 * The Store contract on SQLite. All operations are synchronous underneath (better-sqlite3) and therefore
 * atomic with respect to each other within the process: `consume` is a single DELETE ... RETURNING, so of
 * concurrent consumers exactly one gets the row.
 */
import type { Clock } from '../../clock.js';
import type { DurableNamespace, DurableStore, EphemeralNamespace, EphemeralStore, GroupEntry, Store } from '../adapter.js';
import Database from 'better-sqlite3';
import type { Db } from './database.js';
import { EphemeralCache } from './ephemeral-cache.js';

export interface SqliteStoreOptions {
  /** Live application tokens and user sessions kept in memory, per kind (see EphemeralCache). 0: none. */
  cacheEntries?: number;
}

export class SqliteEphemeralStore implements EphemeralStore {
  private readonly stmts;
  /** Every write below updates it in the same synchronous step as its statement (see EphemeralCache). */
  readonly cache: EphemeralCache;

  constructor(
    db: Db,
    private readonly clock: Clock,
    options: SqliteStoreOptions = {},
  ) {
    this.cache = new EphemeralCache(options.cacheEntries ?? 0);
    this.stmts = {
      upsert: db.prepare(
        'INSERT INTO ephemeral (ns, id, value, expires_at, grp) VALUES (?, ?, ?, ?, ?) ' +
          'ON CONFLICT (ns, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, grp = excluded.grp',
      ),
      update: db.prepare('UPDATE ephemeral SET value = ?, expires_at = ? WHERE ns = ? AND id = ? AND expires_at > ?'),
      updateIfSame: db.prepare('UPDATE ephemeral SET value = ?, expires_at = ? WHERE ns = ? AND id = ? AND expires_at > ? AND value = ?'),
      // One statement, so atomic against every other connection: a new id is inserted, an expired row that the
      // sweep has not deleted yet is taken over (the WHERE of DO UPDATE), a live row is left alone (no change).
      insertIfAbsent: db.prepare(
        'INSERT INTO ephemeral (ns, id, value, expires_at, grp) VALUES (?, ?, ?, ?, NULL) ' +
          'ON CONFLICT (ns, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, grp = NULL WHERE ephemeral.expires_at <= ?',
      ),
      findEntry: db.prepare('SELECT value, expires_at FROM ephemeral WHERE ns = ? AND id = ? AND expires_at > ?').raw(),
      consume: db.prepare('DELETE FROM ephemeral WHERE ns = ? AND id = ? RETURNING value, expires_at'),
      destroy: db.prepare('DELETE FROM ephemeral WHERE ns = ? AND id = ?'),
      findGroup: db.prepare('SELECT id, value FROM ephemeral WHERE ns = ? AND grp = ? AND expires_at > ?'),
      destroyGroup: db.prepare('DELETE FROM ephemeral WHERE ns = ? AND grp = ? RETURNING id, expires_at'),
      sweep: db.prepare('DELETE FROM ephemeral WHERE expires_at <= ?'),
    };
  }

  async upsert(ns: EphemeralNamespace, id: string, value: string, ttlMs: number, group?: string): Promise<void> {
    const expiresAt = this.clock.now() + ttlMs;
    this.cache.forget(ns, id);
    this.stmts.upsert.run(ns, id, value, expiresAt, group ?? null);
    this.cache.set(ns, id, value, expiresAt);
  }

  async update(ns: EphemeralNamespace, id: string, value: string, ttlMs: number, expected?: string): Promise<boolean> {
    const now = this.clock.now();
    this.cache.forget(ns, id);
    const updated = (expected === undefined ? this.stmts.update.run(value, now + ttlMs, ns, id, now) : this.stmts.updateIfSame.run(value, now + ttlMs, ns, id, now, expected)).changes === 1;
    if (updated) this.cache.set(ns, id, value, now + ttlMs);
    return updated;
  }

  async insertIfAbsent(ns: EphemeralNamespace, id: string, value: string, ttlMs: number): Promise<boolean> {
    const now = this.clock.now();
    this.cache.forget(ns, id);
    return this.stmts.insertIfAbsent.run(ns, id, value, now + ttlMs, now).changes === 1;
  }

  async find(ns: EphemeralNamespace, id: string): Promise<string | undefined> {
    const now = this.clock.now();
    const hit = this.cache.get(ns, id, now);
    if (hit) return hit.value;
    const row = this.stmts.findEntry.get(ns, id, now) as [string, number] | undefined;
    if (!row) return undefined;
    this.cache.set(ns, id, row[0], row[1]); // kept only for the cached namespaces
    return row[0];
  }

  async consume(ns: EphemeralNamespace, id: string): Promise<string | undefined> {
    this.cache.forget(ns, id);
    const row = this.stmts.consume.get(ns, id) as { value: string; expires_at: number } | undefined;
    return row && row.expires_at > this.clock.now() ? row.value : undefined;
  }

  async destroy(ns: EphemeralNamespace, id: string): Promise<void> {
    this.cache.forget(ns, id);
    this.stmts.destroy.run(ns, id);
  }

  async findGroup(ns: EphemeralNamespace, group: string): Promise<GroupEntry[]> {
    return this.stmts.findGroup.all(ns, group, this.clock.now()) as GroupEntry[];
  }

  async destroyGroup(ns: EphemeralNamespace, group: string): Promise<number> {
    const now = this.clock.now();
    const removed = this.stmts.destroyGroup.all(ns, group) as { id: string; expires_at: number }[];
    for (const r of removed) this.cache.forget(ns, r.id);
    return removed.filter((r) => r.expires_at > now).length;
  }

  /** Deletes expired records; returns how many. Called on a timer by the server. */
  sweep(): number {
    return this.stmts.sweep.run(this.clock.now()).changes;
  }
}

export class SqliteDurableStore implements DurableStore {
  private readonly stmts;
  private readonly insertMany;

  constructor(db: Db) {
    this.stmts = {
      insert: db.prepare('INSERT INTO durable (ns, id, value) VALUES (?, ?, ?) ON CONFLICT (ns, id) DO NOTHING'),
      insertStrict: db.prepare('INSERT INTO durable (ns, id, value) VALUES (?, ?, ?)'),
      get: db.prepare('SELECT value FROM durable WHERE ns = ? AND id = ?').pluck(),
      list: db.prepare('SELECT id, value FROM durable WHERE ns = ? ORDER BY id'),
      replace: db.prepare('UPDATE durable SET value = ? WHERE ns = ? AND id = ? AND value = ?'),
      put: db.prepare('INSERT INTO durable (ns, id, value) VALUES (?, ?, ?) ON CONFLICT (ns, id) DO UPDATE SET value = excluded.value'),
    };
    this.insertMany = db.transaction((ns: DurableNamespace, records: readonly GroupEntry[]) => {
      for (const r of records) this.stmts.insertStrict.run(ns, r.id, r.value);
    });
  }

  async insertIfAbsent(ns: DurableNamespace, id: string, value: string): Promise<string> {
    this.stmts.insert.run(ns, id, value);
    return this.stmts.get.get(ns, id) as string;
  }

  async insertAll(ns: DurableNamespace, records: readonly GroupEntry[]): Promise<void> {
    this.insertMany(ns, records);
  }

  async get(ns: DurableNamespace, id: string): Promise<string | undefined> {
    return this.stmts.get.get(ns, id) as string | undefined;
  }

  async list(ns: DurableNamespace): Promise<GroupEntry[]> {
    return this.stmts.list.all(ns) as GroupEntry[];
  }

  /** One version per record here: the `durable` table has one row per (ns, id). */
  async listVersions(ns: DurableNamespace): Promise<GroupEntry[]> {
    return this.list(ns);
  }

  async replaceIfSame(ns: DurableNamespace, id: string, expected: string, next: string): Promise<boolean> {
    return this.stmts.replace.run(next, ns, id, expected).changes === 1;
  }

  /** Writes a copy of a record decided elsewhere (cluster mode's local mirror). Not part of the contract. */
  put(ns: DurableNamespace, id: string, value: string): void {
    this.stmts.put.run(ns, id, value);
  }
}

export class SqliteStore implements Store {
  readonly ephemeral: SqliteEphemeralStore;
  readonly durable: SqliteDurableStore;
  /**
   * A second connection to the same file for ephemeral records, with synchronous=NORMAL: in WAL mode a commit
   * then waits for no fsync (the WAL is synced at checkpoints), so logons, refreshes and tickets do not queue
   * behind the disk. A power loss may lose the last sessions and tickets, which their users simply repeat;
   * keys, secrets and the directory stay on the synchronous=FULL connection and are never lost.
   */
  private readonly ephemeralDb: Db;

  constructor(
    readonly db: Db,
    clock: Clock,
    options: SqliteStoreOptions = {},
  ) {
    this.ephemeralDb = db.memory ? db : new Database(db.name);
    if (this.ephemeralDb !== db) {
      this.ephemeralDb.pragma('synchronous = NORMAL');
      this.ephemeralDb.pragma('busy_timeout = 5000');
    }
    this.ephemeral = new SqliteEphemeralStore(this.ephemeralDb, clock, options);
    this.durable = new SqliteDurableStore(db);
  }

  async close(): Promise<void> {
    if (this.ephemeralDb.open) this.ephemeralDb.close();
    if (this.db.open) this.db.close();
  }
}
