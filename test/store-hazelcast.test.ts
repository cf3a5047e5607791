/**
 * The Hazelcast store against a real member (one open-source Hazelcast 5.6 member started for this file):
 * the ephemeral contract suites that every backend runs (test/helpers/ephemeral-contract.ts), here
 * insertIfAbsent, whose atomicity comes from IMap.putIfAbsent on the key's partition owner. The store keeps
 * expiry on a manual clock while the member's own TTLs run in real time, so records past their expiry may
 * still sit in the map: exactly the case an expired record must not block.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { silentLogger } from '../src/log.js';
import { HazelcastStore } from '../src/store/hazelcast/hazelcast-store.js';
import { openDatabase } from '../src/store/sqlite/database.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { type Cluster, startCluster, stopAll } from './helpers/cluster.js';
import { insertIfAbsentContract } from './helpers/ephemeral-contract.js';
import { tempDir } from './helpers/server.js';

let cluster: Cluster;
let local: SqliteStore;
let store: HazelcastStore;
let dir: string;
const clock = new ManualClock();

beforeAll(async () => {
  cluster = await startCluster(1);
  dir = tempDir('sts-store-hz-');
  local = new SqliteStore(openDatabase(dir), clock);
  store = await HazelcastStore.connect(
    { clusterName: cluster.name, members: [cluster.memberList], connectTimeoutMs: 30_000, invocationTimeoutMs: 5000 },
    local.durable,
    clock,
    silentLogger,
    () => undefined,
  );
});

afterAll(async () => {
  await store?.close();
  await local?.close();
  await stopAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

insertIfAbsentContract('Hazelcast', () => ({ store: store.ephemeral, clock }));
