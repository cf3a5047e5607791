/**
 * Cluster mode: the identity provider and resource server registries are small tables kept in every node's
 * SQLite and replicated through the sealed cluster map `sts-registry` (src/cluster/replicated-records.ts): a
 * local change is published, other nodes take it once it is authentic, newer than their copy and valid by the
 * rules of the admin RPC that stores such a record. A deletion is a tombstone entry ({record: null}).
 */
import { ReplicatedRecords } from '../cluster/replicated-records.js';
import { RevisionStore } from '../cluster/revisions.js';
import type { VersionedMap } from '../cluster/versioned-map.js';
import { invalidArgument } from '../errors.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/sqlite/database.js';

export interface ReplicatedTable<R> {
  get(id: string): R | undefined;
  list(): R[];
  apply(id: string, record: R | null): boolean;
  onChange: ((id: string, record: R | null) => void) | undefined;
}

export interface TableReplication<R> {
  table: ReplicatedTable<R>;
  idOf: (r: R) => string;
  /** The validation of the admin RPC that stores such a record; throws INVALID_ARGUMENT when `r` is not valid. */
  validate: (r: R) => void;
}

/** One table's replication, typed for its records. */
export function replicated<R>(table: ReplicatedTable<R>, idOf: (r: R) => string, validate: (r: R) => void): TableReplication<unknown> {
  return { table, idOf, validate } as TableReplication<unknown>;
}

interface Entry {
  record: unknown;
}

/** Starts replication of `tables` (by key prefix); returns the re-read to run after every reconnect. */
export async function replicateTables(map: VersionedMap, db: Db, tables: Record<string, TableReplication<unknown>>, logger: Logger): Promise<() => Promise<void>> {
  const split = (key: string) => {
    const sep = key.indexOf(':');
    const t = tables[key.slice(0, sep)];
    if (!t) throw invalidArgument('key', 'names no replicated table');
    return { t, id: key.slice(sep + 1) };
  };
  const records = new ReplicatedRecords(
    map.with({ revisions: new RevisionStore(db) }),
    {
      keys: () => Object.entries(tables).flatMap(([prefix, { table, idOf }]) => table.list().map((r) => `${prefix}:${idOf(r)}`)),
      get: (key) => {
        const { t, id } = split(key);
        const r = t.table.get(id);
        return r === undefined ? undefined : JSON.stringify({ record: r } satisfies Entry);
      },
      tombstone: () => JSON.stringify({ record: null } satisfies Entry),
      validate: (key, json) => {
        const { t, id } = split(key);
        const { record } = JSON.parse(json) as Entry;
        if (record === null) return;
        t.validate(record);
        if (t.idOf(record) !== id) throw invalidArgument('key', 'the record is not the one its entry key names');
      },
      apply: (key, json) => {
        const { t, id } = split(key);
        t.table.apply(id, (JSON.parse(json) as Entry).record);
      },
    },
    logger,
  );
  await records.start();
  for (const [prefix, { table }] of Object.entries(tables)) {
    table.onChange = (id, record) => records.publish(`${prefix}:${id}`, JSON.stringify({ record } satisfies Entry));
  }
  return () => records.resync();
}
