/**
 * KeyRing in process (no server): a failed write leaves the ring as it was; successors follow the
 * configured policy; a secret key is not destroyed while a user secret is still wrapped under it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { MasterKeyRing, newMasterKey } from '../src/crypto/master-key.js';
import { createLogger, silentLogger } from '../src/log.js';
import { KeyRing } from '../src/pop/key-ring.js';
import type { KeyKind, KeyRecord, RotationPolicy } from '../src/pop/key-record.js';
import { UserSecrets } from '../src/secret/user-secrets.js';
import type { DurableStore } from '../src/store/adapter.js';
import { type Db, openDatabase } from '../src/store/sqlite/database.js';
import { SqliteDurableStore } from '../src/store/sqlite/sqlite-store.js';
import { tempDir } from './helpers/server.js';

const HOUR = 3_600_000;
const policy: RotationPolicy = { validityMs: 10 * HOUR, stagingLeadMs: HOUR, legacyWindowMs: 5 * HOUR, minimumKeys: 1 };
const policies: Record<KeyKind, RotationPolicy> = { encryption: policy, signing: policy, secret: policy };

let db: Db | undefined;
afterEach(() => db?.close());

function ring(store: DurableStore, clock: ManualClock, logger = silentLogger, master = new MasterKeyRing([newMasterKey()])): KeyRing {
  return new KeyRing({
    store,
    master,
    clock,
    logger,
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
  listVersions: DurableStore['listVersions'] = (...a) => this.inner.listVersions(...a);
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

/**
 * The real SQLite store, where re-wrapping a user secret can be made to fail (the node doing it went down, the
 * cluster refused the write) and counting the stored secrets can be made to fail (the cluster is unreachable).
 */
class Faulty implements DurableStore {
  failRewrap = false;
  failCount = false;
  constructor(private readonly inner: DurableStore) {}
  insertIfAbsent: DurableStore['insertIfAbsent'] = (...a) => this.inner.insertIfAbsent(...a);
  insertAll: DurableStore['insertAll'] = (...a) => this.inner.insertAll(...a);
  get: DurableStore['get'] = (...a) => this.inner.get(...a);
  list: DurableStore['list'] = (...a) => this.inner.list(...a);
  listVersions: DurableStore['listVersions'] = async (...a) => {
    if (this.failCount) throw new Error('cluster unreachable');
    return this.inner.listVersions(...a);
  };
  replaceIfSame: DurableStore['replaceIfSame'] = async (ns, ...rest) => {
    if (this.failRewrap && ns === 'user_secret') throw new Error('node down');
    return this.inner.replaceIfSame(ns, ...rest);
  };
}

describe('KeyRing destruction guard (secret keys and user secrets)', () => {
  const masterKey = newMasterKey();
  const master = new MasterKeyRing([masterKey]);

  /** A node: ring and user secrets on one store, the guard registered as src/app.ts does. */
  function node(store: DurableStore, clock: ManualClock, logs: string[], masterKeys = master) {
    const logger = createLogger('debug', (l) => logs.push(l));
    const r = ring(store, clock, logger, masterKeys);
    const secrets = new UserSecrets({ store, ring: r, clock, logger, secretBytes: 32 });
    r.guardDestruction('secret', secrets.destructionGuard());
    return { ring: r, secrets };
  }

  async function world() {
    db = openDatabase(tempDir());
    const store = new Faulty(new SqliteDurableStore(db));
    const clock = new ManualClock();
    const logs: string[] = [];
    const n = node(store, clock, logs);
    await n.ring.load();
    await n.ring.maintain();
    const old = n.ring.primary('secret').record;
    const alice = await n.secrets.getOrCreate('https://idp.example', 'alice');
    // A new management key, primary an hour later.
    await n.ring.rotate(['secret']);
    clock.advance(HOUR);
    expect(n.ring.primary('secret').record.kid).not.toBe(old.kid);
    return { store, clock, logs, ...n, old, alice: Buffer.from(alice.secret) };
  }

  const kidOf = async (store: DurableStore) => {
    const [r] = await store.list('user_secret');
    return JSON.parse(Buffer.from((JSON.parse(r!.value) as { wrapped: string }).wrapped.split('.')[0]!, 'base64url').toString()).kid as string;
  };
  const storedKey = async (store: DurableStore, kid: string) => JSON.parse((await store.get('key', kid))!) as KeyRecord;
  const blockedLines = (logs: string[], kid: string) =>
    logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 'key.destruction_blocked' && l.kid === kid);

  it('keeps a secret key past destroyAfter while a secret is still wrapped under it, across restarts; destroys it once re-wrapped', async () => {
    const w = await world();
    // The re-wrap after the rotation fails: the secret stays wrapped under the old key.
    w.store.failRewrap = true;
    await expect(w.secrets.rewrap()).rejects.toThrow('node down');
    expect(await kidOf(w.store)).toBe(w.old.kid);

    w.clock.set(w.old.destroyAfter);
    await w.ring.maintain(); // the guard re-wraps (fails again), counts 1, keeps the key
    const view = w.ring.view().find((v) => v.record.kid === w.old.kid)!;
    expect([view.state, view.destructionHeld]).toEqual(['decrypt_only', true]);
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeDefined();
    // Usable for the user secrets it is held for, and for nothing else (PopService data keys).
    expect(w.ring.usable(w.old.kid, 'secret', { includeHeld: true })).toBeDefined();
    expect(w.ring.usable(w.old.kid, 'secret')).toBeUndefined();
    expect(w.ring.blockedDestructions()).toEqual([{ kid: w.old.kid, kind: 'secret', records: 1 }]);
    expect(blockedLines(w.logs, w.old.kid)).toEqual([expect.objectContaining({ level: 'error', kind: 'secret', records: 1 })]);
    expect(w.logs.join('\n')).not.toContain(w.alice.toString('base64url'));
    // The secret is returned identically, here and after a restart (the held key is loaded with its material).
    expect((await w.secrets.getOrCreate('https://idp.example', 'alice')).secret).toEqual(w.alice);
    const restarted = node(w.store, w.clock, []);
    await restarted.ring.load();
    expect((await restarted.secrets.getOrCreate('https://idp.example', 'alice')).secret).toEqual(w.alice);

    // The next maintenance tries again and logs again: once per run.
    w.clock.advance(60_000);
    await w.ring.maintain();
    expect(blockedLines(w.logs, w.old.kid)).toHaveLength(2);
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeDefined();

    // Re-wrapping works again: the maintenance re-wraps the straggler, then destroys the key.
    w.store.failRewrap = false;
    await w.ring.maintain();
    expect(await kidOf(w.store)).toBe(w.ring.primary('secret').record.kid);
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeUndefined();
    expect(w.ring.view().find((v) => v.record.kid === w.old.kid)!.state).toBe('destroyed');
    expect(w.ring.usable(w.old.kid, 'secret', { includeHeld: true })).toBeUndefined();
    expect(w.ring.blockedDestructions()).toEqual([]);
    expect(blockedLines(w.logs, w.old.kid)).toHaveLength(2);
    expect((await w.secrets.getOrCreate('https://idp.example', 'alice')).secret).toEqual(w.alice);
  });

  it('re-wraps a straggler the scheduled re-wrap skipped before destroying the key, in the same run', async () => {
    const w = await world();
    // No re-wrap ran since the rotation (a node down, a walk that skipped the record).
    w.clock.set(w.old.destroyAfter);
    await w.ring.maintain();
    expect(await kidOf(w.store)).toBe(w.ring.primary('secret').record.kid);
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeUndefined();
    expect(blockedLines(w.logs, w.old.kid)).toEqual([]);
    expect(w.logs.some((l) => l.includes('"secret.rewrapped"'))).toBe(true);
    expect((await w.secrets.getOrCreate('https://idp.example', 'alice')).secret).toEqual(w.alice);
  });

  it('fails closed: a key is kept while the secrets cannot be counted, and while an unreadable record may need it', async () => {
    const w = await world();
    await w.secrets.rewrap();
    expect(await kidOf(w.store)).not.toBe(w.old.kid); // nothing needs the old key any more ...
    w.store.failCount = true; // ... but the store cannot say so
    w.clock.set(w.old.destroyAfter);
    await w.ring.maintain();
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeDefined();
    expect(w.ring.blockedDestructions()).toEqual([{ kid: w.old.kid, kind: 'secret', records: undefined }]);
    expect(blockedLines(w.logs, w.old.kid)).toEqual([expect.objectContaining({ records: 'unknown' })]);

    // A record whose wrapping cannot be read might be under any key: it keeps them all.
    w.store.failCount = false;
    await w.store.insertIfAbsent('user_secret', 'damaged', '{"v":1,"wrapped":"not a JWE"');
    await w.ring.maintain();
    expect(w.ring.blockedDestructions()).toEqual([{ kid: w.old.kid, kind: 'secret', records: 1 }]);
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeDefined();

    db!.prepare("DELETE FROM durable WHERE ns = 'user_secret' AND id = 'damaged'").run();
    await w.ring.maintain();
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeUndefined();
    expect((await w.secrets.getOrCreate('https://idp.example', 'alice')).secret).toEqual(w.alice);
  });

  it('a held key is re-sealed under a new master key like any other, so the old master key can go', async () => {
    const w = await world();
    w.store.failRewrap = true;
    w.clock.set(w.old.destroyAfter);
    await w.ring.maintain();
    expect(w.ring.blockedDestructions()).toHaveLength(1);
    // Master key rotation: the new key first, the old one second; the start-up maintenance re-seals.
    const next = newMasterKey();
    const rotated = node(w.store, w.clock, [], new MasterKeyRing([next, masterKey]));
    await rotated.ring.load();
    await rotated.ring.maintain();
    expect(MasterKeyRing.envelopeKeyId(Buffer.from((await storedKey(w.store, w.old.kid)).sealed!, 'base64url'))).toBe(next.id);
    // Without the old master key, the held key still opens and the secret is the same.
    const only = node(w.store, w.clock, [], new MasterKeyRing([next]));
    await only.ring.load();
    expect((await only.secrets.getOrCreate('https://idp.example', 'alice')).secret).toEqual(w.alice);
  });

  it('other kinds are destroyed at destroyAfter as before: the guard holds secret keys only', async () => {
    const w = await world();
    const signing = w.ring.view().find((v) => v.record.kind === 'signing')!.record;
    w.store.failRewrap = true;
    w.clock.set(Math.max(signing.destroyAfter, w.old.destroyAfter));
    expect(w.ring.usable(signing.kid, 'signing')).toBeUndefined(); // by the clock, before any maintenance
    await w.ring.maintain();
    expect((await storedKey(w.store, signing.kid)).sealed).toBeUndefined();
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeDefined();
  });

  it('a ring with no guard registered keeps secret keys past destroyAfter (fail closed), and says so', async () => {
    const w = await world();
    const logs: string[] = [];
    const unguarded = ring(w.store, w.clock, createLogger('debug', (l) => logs.push(l)), master);
    await unguarded.load();
    w.clock.set(w.old.destroyAfter);
    await unguarded.maintain();
    expect((await storedKey(w.store, w.old.kid)).sealed).toBeDefined();
    expect(unguarded.blockedDestructions()).toEqual([{ kid: w.old.kid, kind: 'secret', records: undefined }]);
    expect(blockedLines(logs, w.old.kid)).toEqual([expect.objectContaining({ records: 'unknown' })]);
  });
});
