/**
 * The in-memory copy of live application tokens, user sessions and their participants that the embedded store
 * reads before SQLite: authenticating the caller, finding the caller's part in a session and the session are
 * the reads every token check makes.
 *
 * It is exact, not a best effort with a TTL, because of two facts the embedded mode guarantees:
 *  - one process serves a data directory (lockDataDir in database.ts), and every change that process makes
 *    to an ephemeral record goes through SqliteEphemeralStore, which updates this copy in the same
 *    synchronous step as the SQL statement: no call can run in between and read the old value;
 *  - other processes on the same file only ever insert new records (bench/seed.ts), and only records that
 *    were found are kept here, so an insert by anyone is seen at once.
 * Expiry is checked here against the same clock as in SQL, so a cached record ends when its row would.
 */
import { BoundedMap } from '../../bounded-map.js';
import type { EphemeralNamespace } from '../adapter.js';

interface Entry {
  value: string;
  expiresAt: number;
}

/** Namespaces read on every call; tickets are read once, throttling counters rarely: not worth memory. */
const CACHED_NAMESPACES: ReadonlySet<EphemeralNamespace> = new Set(['app_token', 'user_token', 'participant']);

export class EphemeralCache {
  private readonly maps = new Map<EphemeralNamespace, BoundedMap<Entry>>();

  /** `maxEntries` per namespace; the oldest entry goes first. 0: nothing is kept. */
  constructor(maxEntries: number) {
    for (const ns of CACHED_NAMESPACES) this.maps.set(ns, new BoundedMap(maxEntries));
  }

  /** The value if cached and live at `now`; undefined if not cached (the caller reads SQLite). */
  get(ns: EphemeralNamespace, id: string, now: number): Entry | undefined {
    const m = this.maps.get(ns);
    const e = m?.get(id);
    if (!e) return undefined;
    if (e.expiresAt > now) return e;
    m!.delete(id);
    return undefined;
  }

  set(ns: EphemeralNamespace, id: string, value: string, expiresAt: number): void {
    this.maps.get(ns)?.set(id, { value, expiresAt });
  }

  forget(ns: EphemeralNamespace, id: string): void {
    this.maps.get(ns)?.delete(id);
  }

  /** Entries held in a namespace (tests). */
  size(ns: EphemeralNamespace): number {
    return this.maps.get(ns)?.size ?? 0;
  }
}
