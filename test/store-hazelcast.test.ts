/**
 * The Hazelcast store against a real member (one open-source Hazelcast 5.6 member started for this file):
 * the ephemeral contract suites that every backend runs (test/helpers/ephemeral-contract.ts), here
 * insertIfAbsent, whose atomicity comes from IMap.putIfAbsent on the key's partition owner. The store keeps
 * expiry on a manual clock while the member's own TTLs run in real time, so records past their expiry may
 * still sit in the map: exactly the case an expired record must not block.
 */
import { beforeAll } from 'vitest';
import { ManualClock } from '../src/clock.js';
import type { HazelcastStore } from '../src/store/hazelcast/hazelcast-store.js';
import { connectStore, oneMemberPerFile } from './helpers/cluster.js';
import { insertIfAbsentContract } from './helpers/ephemeral-contract.js';

const member = oneMemberPerFile();
const clock = new ManualClock();
let store: HazelcastStore;

beforeAll(async () => {
  const connected = await connectStore(member.cluster(), clock);
  member.cleanup(connected.close);
  store = connected.store;
});

insertIfAbsentContract('Hazelcast', () => ({ store: store.ephemeral, clock }));
