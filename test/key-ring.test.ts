/**
 * KeyRing in process (no server): a failed write leaves the ring as it was; successors follow the
 * configured policy.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { MasterKeyRing, newMasterKey } from '../src/crypto/master-key.js';
import { silentLogger } from '../src/log.js';
import { KeyRing } from '../src/pop/key-ring.js';
import type { KeyKind, RotationPolicy } from '../src/pop/key-record.js';
import type { DurableStore } from '../src/store/adapter.js';
import { type Db, openDatabase } from '../src/store/sqlite/database.js';
import { SqliteDurableStore } from '../src/store/sqlite/sqlite-store.js';
import { tempDir } from './helpers/server.js';

const HOUR = 3_600_000;
const policy: RotationPolicy = { validityMs: 10 * HOUR, stagingLeadMs: HOUR, legacyWindowMs: 5 * HOUR, minimumKeys: 1 };
const policies: Record<KeyKind, RotationPolicy> = { encryption: policy, signing: policy, secret: policy };

let db: Db | undefined;
afterEach(() => db?.close());

function ring(store: DurableStore, clock: ManualClock): KeyRing {
  return new KeyRing({
    store,
    master: new MasterKeyRing([newMasterKey()]),
    clock,
    logger: silentLogger,
    algorithms: { encryption: 'ECDH-ES+A256KW', signing: 'EdDSA', secret: 'A256GCM' },
    policies,
  });
}

/** The real SQLite store whose one-step write can be made to fail (the disk is full, the cluster is gone). */
class FailingWrites implements DurableStore {
  fail = false;
  constructor(private readonly inner: DurableStore) {}
  insertIfAbsent: DurableStore['insertIfAbsent'] = (...a) => this.inner.insertIfAbsent(...a);
  get: DurableStore['get'] = (...a) => this.inner.get(...a);
  list: DurableStore['list'] = (...a) => this.inner.list(...a);
  replaceIfSame: DurableStore['replaceIfSame'] = (...a) => this.inner.replaceIfSame(...a);
  insertAll: DurableStore['insertAll'] = async (...a) => {
    if (this.fail) throw new Error('disk full');
    return this.inner.insertAll(...a);
  };
}

describe('KeyRing', () => {
  it('a rotation whose write fails changes nothing in memory or in the store', async () => {
    db = openDatabase(tempDir());
    const store = new FailingWrites(new SqliteDurableStore(db));
    const clock = new ManualClock();
    const r = ring(store, clock);
    await r.load();
    await r.maintain();
    const before = JSON.stringify(r.view());
    const stored = (await store.list('key')).length;
    store.fail = true;
    await expect(r.rotate()).rejects.toThrow('disk full');
    clock.advance(9 * HOUR + 1); // a successor is due: the scheduled write fails the same way
    await expect(r.maintain()).rejects.toThrow('disk full');
    clock.set(clock.now() - (9 * HOUR + 1));
    expect(JSON.stringify(r.view())).toBe(before);
    expect((await store.list('key')).length).toBe(stored);
    // The primary still works, and once writes succeed again the rotation goes through.
    expect(r.primary('signing').record.kid).toBeTruthy();
    store.fail = false;
    expect(await r.rotate(['signing'])).toHaveLength(1);
    expect((await store.list('key')).length).toBe(stored + 1);
  });

  it('stages a successor stagingLead before validity ends and keeps minimumKeys ahead', async () => {
    db = openDatabase(tempDir());
    const clock = new ManualClock();
    const r = ring(new SqliteDurableStore(db), clock);
    await r.load();
    const first = await r.maintain();
    expect(first.map((k) => k.kind).sort()).toEqual(['encryption', 'secret', 'signing']);
    clock.advance(9 * HOUR - 1);
    expect(await r.maintain()).toHaveLength(0);
    clock.advance(1);
    const next = await r.maintain();
    expect(next).toHaveLength(3);
    for (const k of next) {
      const prev = first.find((f) => f.kind === k.kind)!;
      expect(k.notBefore).toBe(prev.notAfter);
      expect(k.destroyAfter).toBe(k.notAfter + 5 * HOUR);
    }
    expect(r.nextChange()).toBe(first[0]!.notAfter);
  });
});
