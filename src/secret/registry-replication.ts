/**
 * Cluster mode: the identity provider and resource server registries are small tables kept in every
 * node's SQLite and replicated through the cluster map `sts-registry` (the pattern of the replicated
 * directory): a local change is published, other nodes apply it from an entry listener, and a starting
 * node pulls what the cluster has and publishes what only it has. A deletion is a tombstone entry.
 */
import type { IMap } from 'hazelcast-client';
import type { Logger } from '../log.js';

export interface ReplicatedTable<R> {
  list(): R[];
  apply(id: string, record: R | null): boolean;
  onChange: ((id: string, record: R | null) => void) | undefined;
}

interface Entry {
  record: unknown;
}

/** Starts replication; returns the re-read to run after every reconnect (missed events are not replayed). */
export async function replicateTables(
  map: IMap<string, string>,
  tables: Record<string, { table: ReplicatedTable<unknown>; idOf: (r: unknown) => string }>,
  logger: Logger,
): Promise<() => Promise<void>> {
  const apply = (key: string, json: string | null) => {
    if (!json) return;
    const sep = key.indexOf(':');
    const t = tables[key.slice(0, sep)];
    if (!t) return;
    try {
      t.table.apply(key.slice(sep + 1), (JSON.parse(json) as Entry).record);
    } catch (err) {
      logger.error('could not apply a registry change from the cluster', { key, err });
    }
  };
  await map.addEntryListener({ added: (e) => apply(e.key, e.value), updated: (e) => apply(e.key, e.value) }, undefined, true);
  const resync = async (): Promise<void> => {
    for (const [key, json] of await map.entrySet()) apply(key, json);
  };
  await resync();
  for (const [prefix, { table, idOf }] of Object.entries(tables)) {
    for (const r of table.list()) await map.putIfAbsent(`${prefix}:${idOf(r)}`, JSON.stringify({ record: r } satisfies Entry));
    table.onChange = (id, record) => {
      map.set(`${prefix}:${id}`, JSON.stringify({ record } satisfies Entry)).catch((err: unknown) => logger.error('could not publish a registry change to the cluster', { prefix, id, err }));
    };
  }
  return resync;
}
