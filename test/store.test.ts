/**
 * The SQLite store on a real database in a temporary directory: ephemeral records with TTL (on a manual
 * clock), one-time consume and insert-if-absent under concurrency, groups, durable records that are never
 * overwritten, atomic batch inserts, compare-and-set, schema migrations and durability across reopen. The
 * insertIfAbsent suite (test/helpers/ephemeral-contract.ts) runs against Hazelcast too (store-hazelcast.test.ts).
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { StartupError } from '../src/errors.js';
import { MIGRATIONS, getMeta, lockDataDir, openDatabase, prepareDataDir, setMeta } from '../src/store/sqlite/database.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { insertIfAbsentContract } from './helpers/ephemeral-contract.js';

let dir: string;
let clock: ManualClock;
let store: SqliteStore;

function open(cacheEntries = 0): SqliteStore {
  store = new SqliteStore(openDatabase(dir), clock, { cacheEntries });
  return store;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sts-store-'));
  clock = new ManualClock();
  open();
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

// The contract holds with embedded mode's in-memory copy of sessions and tokens (src/store/sqlite/ephemeral-cache.ts)
// off, and on with room for 2 records, so that eviction happens too.
describe.each([0, 2])('ephemeral records (cacheEntries %i)', (cacheEntries) => {
  beforeEach(async () => {
    await store.close();
    open(cacheEntries);
  });
  ephemeralContract();
});

function ephemeralContract(): void {
  it('upsert, find, replace and destroy', async () => {
    const e = store.ephemeral;
    expect(await e.find('app_token', 't1')).toBeUndefined();
    await e.upsert('app_token', 't1', 'v1', 60_000);
    expect(await e.find('app_token', 't1')).toBe('v1');
    // Namespaces are separate.
    expect(await e.find('user_token', 't1')).toBeUndefined();
    await e.upsert('app_token', 't1', 'v2', 60_000);
    expect(await e.find('app_token', 't1')).toBe('v2');
    await e.destroy('app_token', 't1');
    expect(await e.find('app_token', 't1')).toBeUndefined();
    // Destroying an absent record is fine.
    await expect(e.destroy('app_token', 't1')).resolves.toBeUndefined();
  });

  it('records expire after their TTL (find and consume)', async () => {
    const e = store.ephemeral;
    await e.upsert('user_ticket', 'a', 'va', 1000);
    await e.upsert('user_ticket', 'b', 'vb', 1000);
    clock.advance(999);
    expect(await e.find('user_ticket', 'a')).toBe('va');
    clock.advance(1);
    expect(await e.find('user_ticket', 'a')).toBeUndefined();
    expect(await e.consume('user_ticket', 'b')).toBeUndefined();
  });

  it('upsert renews the TTL', async () => {
    const e = store.ephemeral;
    await e.upsert('throttle', 'k', '1', 1000);
    clock.advance(900);
    await e.upsert('throttle', 'k', '2', 1000);
    clock.advance(900);
    expect(await e.find('throttle', 'k')).toBe('2');
  });

  it('consume returns the value once', async () => {
    const e = store.ephemeral;
    await e.upsert('user_ticket', 'x', 'once', 60_000);
    expect(await e.consume('user_ticket', 'x')).toBe('once');
    expect(await e.consume('user_ticket', 'x')).toBeUndefined();
    expect(await e.find('user_ticket', 'x')).toBeUndefined();
    expect(await e.consume('user_ticket', 'never-there')).toBeUndefined();
  });

  it('of 200 concurrent consumers exactly one gets the value', async () => {
    const e = store.ephemeral;
    await e.upsert('user_ticket', 'race', 'winner', 60_000);
    const results = await Promise.all(Array.from({ length: 200 }, () => e.consume('user_ticket', 'race')));
    expect(results.filter((r) => r === 'winner')).toHaveLength(1);
    expect(results.filter((r) => r === undefined)).toHaveLength(199);
  });

  it('findGroup and destroyGroup see only unexpired records of the group', async () => {
    const e = store.ephemeral;
    await e.upsert('user_token', 't1', 'v1', 10_000, 'uid-1');
    await e.upsert('user_token', 't2', 'v2', 1000, 'uid-1');
    await e.upsert('user_token', 't3', 'v3', 10_000, 'uid-2');
    await e.upsert('user_token', 't4', 'v4', 10_000);
    await e.upsert('app_token', 't5', 'v5', 10_000, 'uid-1');
    const sorted = (xs: { id: string; value: string }[]) => [...xs].sort((a, b) => a.id.localeCompare(b.id));
    expect(sorted(await e.findGroup('user_token', 'uid-1'))).toEqual([
      { id: 't1', value: 'v1' },
      { id: 't2', value: 'v2' },
    ]);
    clock.advance(1000);
    expect(await e.findGroup('user_token', 'uid-1')).toEqual([{ id: 't1', value: 'v1' }]);

    expect(await e.destroyGroup('user_token', 'uid-1')).toBe(1);
    expect(await e.findGroup('user_token', 'uid-1')).toEqual([]);
    expect(await e.find('user_token', 't1')).toBeUndefined();
    // Other groups, ungrouped records and other namespaces are untouched.
    expect(await e.find('user_token', 't3')).toBe('v3');
    expect(await e.find('user_token', 't4')).toBe('v4');
    expect(await e.find('app_token', 't5')).toBe('v5');
    expect(await e.destroyGroup('user_token', 'uid-1')).toBe(0);
  });

  it('upsert moves a record to another group', async () => {
    const e = store.ephemeral;
    await e.upsert('user_token', 't', 'v', 10_000, 'g1');
    await e.upsert('user_token', 't', 'v', 10_000, 'g2');
    expect(await e.findGroup('user_token', 'g1')).toEqual([]);
    expect(await e.findGroup('user_token', 'g2')).toEqual([{ id: 't', value: 'v' }]);
  });

  it('sweep deletes expired records only', async () => {
    const e = store.ephemeral;
    await e.upsert('throttle', 'short', '1', 1000);
    await e.upsert('throttle', 'long', '2', 5000);
    clock.advance(1000);
    expect(e.sweep()).toBe(1);
    expect(await e.find('throttle', 'long')).toBe('2');
    const rows = store.db.prepare('SELECT id FROM ephemeral').pluck().all();
    expect(rows).toEqual(['long']);
  });
}

describe('durable records', () => {
  it('insertIfAbsent keeps the first value and returns it to later inserts', async () => {
    const d = store.durable;
    expect(await d.insertIfAbsent('key', 'k1', 'first')).toBe('first');
    expect(await d.insertIfAbsent('key', 'k1', 'second')).toBe('first');
    expect(await d.get('key', 'k1')).toBe('first');
    // Same id in another namespace is another record.
    expect(await d.insertIfAbsent('user_secret', 'k1', 'other')).toBe('other');
    expect(await d.get('key', 'missing')).toBeUndefined();
  });

  it('insertAll is all or none', async () => {
    const d = store.durable;
    await d.insertAll('key', [
      { id: 'a', value: '1' },
      { id: 'b', value: '2' },
    ]);
    expect(await d.list('key')).toEqual([
      { id: 'a', value: '1' },
      { id: 'b', value: '2' },
    ]);
    await expect(
      d.insertAll('key', [
        { id: 'c', value: '3' },
        { id: 'b', value: 'changed' },
        { id: 'd', value: '4' },
      ]),
    ).rejects.toThrow();
    expect(await d.get('key', 'c')).toBeUndefined();
    expect(await d.get('key', 'd')).toBeUndefined();
    expect(await d.get('key', 'b')).toBe('2');
    expect((await d.list('key')).map((r) => r.id)).toEqual(['a', 'b']);
  });

  it('replaceIfSame replaces only the expected value', async () => {
    const d = store.durable;
    await d.insertIfAbsent('user_secret', 's', 'v1');
    expect(await d.replaceIfSame('user_secret', 's', 'stale', 'v2')).toBe(false);
    expect(await d.get('user_secret', 's')).toBe('v1');
    expect(await d.replaceIfSame('user_secret', 's', 'v1', 'v2')).toBe(true);
    expect(await d.get('user_secret', 's')).toBe('v2');
    expect(await d.replaceIfSame('user_secret', 'absent', 'v1', 'v2')).toBe(false);
    expect(await d.get('user_secret', 'absent')).toBeUndefined();
  });

  it('list returns the records of a namespace ordered by id', async () => {
    const d = store.durable;
    await d.insertIfAbsent('key', 'z', '1');
    await d.insertIfAbsent('key', 'm', '2');
    await d.insertIfAbsent('user_secret', 'a', '3');
    expect(await d.list('key')).toEqual([
      { id: 'm', value: '2' },
      { id: 'z', value: '1' },
    ]);
  });
});

describe('database', () => {
  it('migrations bring user_version to the latest and create the tables', () => {
    const latest = MIGRATIONS[MIGRATIONS.length - 1]!.version;
    expect(latest).toBeGreaterThan(0);
    expect(store.db.pragma('user_version', { simple: true })).toBe(latest);
    const tables = store.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
    expect(tables).toEqual(expect.arrayContaining(['durable', 'ephemeral', 'meta']));
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal');
  });

  it('reopening an up-to-date database runs no migration again', async () => {
    await store.durable.insertIfAbsent('key', 'k', 'v');
    await store.close();
    open();
    expect(await store.durable.get('key', 'k')).toBe('v');
  });

  it('refuses a database with a newer schema version (store_invalid) and leaves it as it was', async () => {
    const latest = MIGRATIONS[MIGRATIONS.length - 1]!.version;
    await store.close();
    const raw = new Database(join(dir, 'sts.db'));
    raw.pragma(`user_version = ${latest + 1}`);
    raw.close();
    let caught: unknown;
    try {
      openDatabase(dir);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StartupError);
    expect((caught as StartupError).code).toBe('store_invalid');
    expect((caught as StartupError).exitCode).toBe(65);
    expect((caught as StartupError).message).toContain(String(latest + 1));
    const check = new Database(join(dir, 'sts.db'), { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(latest + 1);
    check.close();
  });

  it('refuses a file that is not an SQLite database (store_invalid)', async () => {
    const other = join(dir, 'other');
    mkdirSync(other);
    writeFileSync(join(other, 'sts.db'), 'this is not a database, just some text that is long enough '.repeat(20));
    let caught: unknown;
    try {
      openDatabase(other);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StartupError);
    expect((caught as StartupError).code).toBe('store_invalid');
    expect((caught as StartupError).message).toContain(join(other, 'sts.db'));
  });

  it('a data directory that is a regular file is data_dir_unusable', () => {
    const path = join(dir, 'a-file');
    writeFileSync(path, 'x');
    let caught: unknown;
    try {
      prepareDataDir(path);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StartupError);
    expect((caught as StartupError).code).toBe('data_dir_unusable');
    expect((caught as StartupError).exitCode).toBe(73);
    expect((caught as StartupError).message).toContain(path);
  });

  it('makes the data directory 0700 and its database files 0600, whatever modes existed before', async () => {
    const data = join(dir, 'shared');
    mkdirSync(data, { mode: 0o755 });
    chmodSync(data, 0o755);
    // A database created by an earlier run under a permissive umask, with its WAL files.
    const old = new Database(join(data, 'sts.db'));
    old.pragma('journal_mode = WAL');
    old.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1)');
    for (const f of ['sts.db', 'sts.db-wal', 'sts.db-shm']) chmodSync(join(data, f), 0o644);
    const s = new SqliteStore(openDatabase(data), clock);
    const lock = lockDataDir(data);
    try {
      expect(statSync(data).mode & 0o777).toBe(0o700);
      for (const f of ['sts.db', 'sts.db-wal', 'sts.db-shm', 'sts.lock']) expect([f, statSync(join(data, f)).mode & 0o777]).toEqual([f, 0o600]);
    } finally {
      lock.release();
      await s.close();
      old.close();
    }
  });

  it('creates a missing data directory', async () => {
    const nested = join(dir, 'a', 'b');
    const s = new SqliteStore(openDatabase(nested), clock);
    await s.durable.insertIfAbsent('key', 'k', 'v');
    await s.close();
    const again = new SqliteStore(openDatabase(nested), clock);
    expect(await again.durable.get('key', 'k')).toBe('v');
    await again.close();
  });

  it('data survives close and reopen', async () => {
    await store.ephemeral.upsert('app_token', 't', 'ephemeral-value', 60_000, 'g');
    await store.durable.insertIfAbsent('key', 'k', 'durable-value');
    setMeta(store.db, 'check', Buffer.from([1, 2, 3]));
    await store.close();
    expect(store.db.open).toBe(false);
    // close is idempotent
    await store.close();

    open();
    expect(await store.ephemeral.find('app_token', 't')).toBe('ephemeral-value');
    expect(await store.ephemeral.findGroup('app_token', 'g')).toEqual([{ id: 't', value: 'ephemeral-value' }]);
    expect(await store.durable.get('key', 'k')).toBe('durable-value');
    expect(getMeta(store.db, 'check')).toEqual(Buffer.from([1, 2, 3]));
    expect(getMeta(store.db, 'absent')).toBeUndefined();
  });
});

describe('ephemeral update', () => {
  it('replaces only a live record, so a refresh cannot revive a destroyed or expired one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sts-store-update-'));
    const db = openDatabase(dir);
    const clock = new ManualClock();
    const store = new SqliteStore(db, clock);
    try {
      expect(await store.ephemeral.update('user_token', 'a', 'v2', 1000)).toBe(false);
      await store.ephemeral.upsert('user_token', 'a', 'v1', 1000, 'g');
      expect(await store.ephemeral.update('user_token', 'a', 'v2', 5000)).toBe(true);
      expect(await store.ephemeral.find('user_token', 'a')).toBe('v2');
      clock.advance(4000);
      expect(await store.ephemeral.find('user_token', 'a')).toBe('v2');
      expect((await store.ephemeral.findGroup('user_token', 'g')).map((e) => e.id)).toEqual(['a']);
      await store.ephemeral.destroy('user_token', 'a');
      expect(await store.ephemeral.update('user_token', 'a', 'v3', 5000)).toBe(false);
      expect(await store.ephemeral.find('user_token', 'a')).toBeUndefined();
      await store.ephemeral.upsert('user_token', 'b', 'v1', 1000);
      clock.advance(1001);
      expect(await store.ephemeral.update('user_token', 'b', 'v2', 5000)).toBe(false);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

insertIfAbsentContract('SQLite', () => ({ store: store.ephemeral, clock }));

describe('ephemeral insertIfAbsent across connections (SQLite)', () => {
  it('a second store on the same file (another process, in effect) sees the first one insert, and the sweep ends it', async () => {
    const other = new SqliteStore(openDatabase(dir), clock);
    try {
      expect(await store.ephemeral.insertIfAbsent('credential_jti', 'j', 'a', 1000)).toBe(true);
      expect(await other.ephemeral.insertIfAbsent('credential_jti', 'j', 'b', 1000)).toBe(false);
      clock.advance(1000);
      expect(store.ephemeral.sweep()).toBe(1);
      expect(await other.ephemeral.insertIfAbsent('credential_jti', 'j', 'b', 1000)).toBe(true);
      expect(await store.ephemeral.find('credential_jti', 'j')).toBe('b');
    } finally {
      await other.close();
    }
  });
});
