/**
 * The EphemeralStore contract of `insertIfAbsent` and of `update` as a compare-and-set, as one suite that every backend runs against a real store:
 * SQLite in test/store.test.ts, a real Hazelcast member in test/store-hazelcast.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { ManualClock } from '../../src/clock.js';
import type { EphemeralStore } from '../../src/store/adapter.js';

export interface EphemeralFixture {
  store: EphemeralStore;
  /** The clock the store computes expiry with (Hazelcast's own TTL keeps real time and may lag behind it). */
  clock: ManualClock;
}

/** Registers the insertIfAbsent suite; `fixture` gives the store of the running test (fresh ids per test). */
export function insertIfAbsentContract(backend: string, fixture: () => EphemeralFixture): void {
  let n = 0;
  const fresh = (what: string) => `${what}-${Date.now()}-${n++}`;

  describe(`ephemeral insertIfAbsent (${backend})`, () => {
    it('inserts once: a live record with the id, however made, is never replaced', async () => {
      const { store } = fixture();
      const id = fresh('once');
      expect(await store.insertIfAbsent('credential_jti', id, 'first', 60_000)).toBe(true);
      expect(await store.insertIfAbsent('credential_jti', id, 'second', 60_000)).toBe(false);
      expect(await store.find('credential_jti', id)).toBe('first');
      // Another namespace and another id are other records.
      expect(await store.insertIfAbsent('throttle', id, 'other', 60_000)).toBe(true);
      expect(await store.insertIfAbsent('credential_jti', `${id}-2`, 'other', 60_000)).toBe(true);
      // A record made by upsert blocks just the same.
      const upserted = fresh('upserted');
      await store.upsert('credential_jti', upserted, 'kept', 60_000);
      expect(await store.insertIfAbsent('credential_jti', upserted, 'lost', 60_000)).toBe(false);
      expect(await store.find('credential_jti', upserted)).toBe('kept');
    });

    it('an expired record does not block, and the new one lives its own TTL', async () => {
      const { store, clock } = fixture();
      const id = fresh('expiring');
      expect(await store.insertIfAbsent('credential_jti', id, 'old', 1000)).toBe(true);
      clock.advance(999);
      expect(await store.insertIfAbsent('credential_jti', id, 'early', 60_000)).toBe(false);
      clock.advance(1);
      expect(await store.find('credential_jti', id)).toBeUndefined();
      expect(await store.insertIfAbsent('credential_jti', id, 'new', 60_000)).toBe(true);
      expect(await store.find('credential_jti', id)).toBe('new');
      clock.advance(59_999);
      expect(await store.insertIfAbsent('credential_jti', id, 'newer', 60_000)).toBe(false);
      expect(await store.find('credential_jti', id)).toBe('new');
    });

    it('a destroyed record does not block', async () => {
      const { store } = fixture();
      const id = fresh('destroyed');
      expect(await store.insertIfAbsent('credential_jti', id, 'v1', 60_000)).toBe(true);
      await store.destroy('credential_jti', id);
      expect(await store.insertIfAbsent('credential_jti', id, 'v2', 60_000)).toBe(true);
      expect(await store.find('credential_jti', id)).toBe('v2');
    });

    it('of 50 concurrent inserts of one id exactly one wins, also over an expired record', async () => {
      const { store, clock } = fixture();
      const id = fresh('race');
      const race = async () => (await Promise.all(Array.from({ length: 50 }, (_, i) => store.insertIfAbsent('credential_jti', id, `v${i}`, 60_000)))).filter(Boolean).length;
      expect(await race()).toBe(1);
      clock.advance(60_000);
      expect(await race()).toBe(1);
    });

    it('update with an expected value is a compare-and-set: of 20 concurrent increments none is lost', async () => {
      const { store } = fixture();
      const id = fresh('counter');
      expect(await store.update('throttle', id, '1', 60_000, '0')).toBe(false); // nothing to replace
      await store.upsert('throttle', id, '0', 60_000);
      expect(await store.update('throttle', id, '1', 60_000, 'not-0')).toBe(false);
      expect(await store.find('throttle', id)).toBe('0');
      const increment = async (): Promise<void> => {
        for (;;) {
          const current = (await store.find('throttle', id))!;
          if (await store.update('throttle', id, String(Number(current) + 1), 60_000, current)) return;
        }
      };
      await Promise.all(Array.from({ length: 20 }, increment));
      expect(await store.find('throttle', id)).toBe('20');
    });
  });
}
