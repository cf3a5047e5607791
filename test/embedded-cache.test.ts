/**
 * Embedded mode's in-memory copy of live application tokens and sessions (src/store/sqlite/ephemeral-cache.ts)
 * and the data directory lock it relies on: one process serves a data directory, every change it makes
 * updates the copy in the same step, and what another process inserts is seen at once.
 */
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { StartupError } from '../src/errors.js';
import { lockDataDir, openDatabase } from '../src/store/sqlite/database.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { call, callError } from './helpers/call.js';
import { createApp } from './helpers/directory.js';
import { type TestSts, startTestSts, tempDir } from './helpers/server.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function stores(cacheEntries: number): { a: SqliteStore; other: SqliteStore; clock: ManualClock } {
  const dir = tempDir();
  const clock = new ManualClock();
  const a = new SqliteStore(openDatabase(dir), clock, { cacheEntries });
  const other = new SqliteStore(openDatabase(dir), clock);
  cleanup.push(
    () => rmSync(dir, { recursive: true, force: true }),
    () => a.close(),
    () => other.close(),
  );
  return { a, other, clock };
}

describe('the ephemeral cache', () => {
  it('answers from memory what it has found', async () => {
    const { a, other } = stores(10);
    await a.ephemeral.upsert('user_token', 's', 'v1', 60_000, 'uid');
    expect(a.ephemeral.cache.size('user_token')).toBe(1);
    // Proof that the read is served from memory: a change behind its back (which the lock rules out for a
    // server) is not seen.
    other.db.prepare("UPDATE ephemeral SET value = 'changed' WHERE id = 's'").run();
    expect(await a.ephemeral.find('user_token', 's')).toBe('v1');
    expect(await other.ephemeral.find('user_token', 's')).toBe('changed');
  });

  it('follows every change made through the store at once', async () => {
    const { a, clock } = stores(10);
    const e = a.ephemeral;
    await e.upsert('user_token', 's', 'v1', 60_000, 'uid');
    expect(await e.find('user_token', 's')).toBe('v1');
    await e.upsert('user_token', 's', 'v2', 60_000, 'uid');
    expect(await e.find('user_token', 's')).toBe('v2');
    expect(await e.update('user_token', 's', 'v3', 1000)).toBe(true);
    expect(await e.find('user_token', 's')).toBe('v3');
    clock.advance(1000);
    // The TTL the update set applies to the cached copy too.
    expect(await e.find('user_token', 's')).toBeUndefined();
    expect(await e.update('user_token', 's', 'v4', 1000)).toBe(false);
    expect(await e.find('user_token', 's')).toBeUndefined();

    await e.upsert('app_token', 't', 'tv', 60_000, 'app');
    expect(await e.find('app_token', 't')).toBe('tv');
    await e.destroy('app_token', 't');
    expect(await e.find('app_token', 't')).toBeUndefined();

    await e.upsert('app_token', 't1', 'x', 60_000, 'app');
    await e.upsert('app_token', 't2', 'y', 60_000, 'other-app');
    expect(await e.find('app_token', 't1')).toBe('x');
    expect(await e.find('app_token', 't2')).toBe('y');
    expect(await e.destroyGroup('app_token', 'app')).toBe(1);
    // Only the group's records leave the cache: other applications' tokens stay in memory.
    expect(e.cache.size('app_token')).toBe(1);
    expect(await e.find('app_token', 't1')).toBeUndefined();
    expect(await e.find('app_token', 't2')).toBe('y');

    await e.upsert('user_token', 'c', 'once', 60_000);
    expect(await e.find('user_token', 'c')).toBe('once');
    expect(await e.consume('user_token', 'c')).toBe('once');
    expect(await e.find('user_token', 'c')).toBeUndefined();
  });

  it('sees at once what another process inserts, since it keeps only what it found', async () => {
    const { a, other } = stores(10);
    expect(await a.ephemeral.find('user_token', 'later')).toBeUndefined();
    await other.ephemeral.upsert('user_token', 'later', 'v', 60_000);
    expect(await a.ephemeral.find('user_token', 'later')).toBe('v');
  });

  it('keeps a found record only until its expiry in the database', async () => {
    const { a, other, clock } = stores(10);
    await other.ephemeral.upsert('app_token', 'k', 'v', 5000);
    expect(await a.ephemeral.find('app_token', 'k')).toBe('v');
    clock.advance(4999);
    expect(await a.ephemeral.find('app_token', 'k')).toBe('v');
    clock.advance(1);
    expect(await a.ephemeral.find('app_token', 'k')).toBeUndefined();
  });

  it('holds at most cacheEntries per kind, only the hot kinds, and nothing with 0', async () => {
    const { a } = stores(2);
    for (const id of ['1', '2', '3']) await a.ephemeral.upsert('user_token', id, id, 60_000);
    await a.ephemeral.upsert('user_ticket', 't', 't', 60_000);
    await a.ephemeral.upsert('throttle', 'n', '1', 60_000);
    expect(a.ephemeral.cache.size('user_token')).toBe(2);
    expect(a.ephemeral.cache.size('user_ticket')).toBe(0);
    expect(a.ephemeral.cache.size('throttle')).toBe(0);
    for (const id of ['1', '2', '3']) expect(await a.ephemeral.find('user_token', id)).toBe(id);
    const off = stores(0).a;
    await off.ephemeral.upsert('user_token', 'x', 'x', 60_000);
    expect(await off.ephemeral.find('user_token', 'x')).toBe('x');
    expect(off.ephemeral.cache.size('user_token')).toBe(0);
  });
});

describe('the data directory lock', () => {
  it('lets one holder at a time serve a data directory, and is free again after release', () => {
    const dir = tempDir();
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const first = lockDataDir(dir);
    let err: unknown;
    try {
      lockDataDir(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StartupError);
    expect((err as StartupError).code).toBe('data_dir_unusable');
    expect((err as Error).message).toMatch(/another STS process is serving from it/);
    first.release();
    lockDataDir(dir).release();
  });

  it('refuses a second server on a data directory in use, while tools may still open it', async () => {
    let t: TestSts | undefined = await startTestSts();
    cleanup.push(() => t?.stop(true));
    const app = await createApp(t, 'app-a');
    const second = await startTestSts({ dataDir: t.dataDir }).catch((e: unknown) => e);
    expect(second).toBeInstanceOf(StartupError);
    // The first one is unharmed: its token still authenticates.
    expect((await call(t.session.getApplicationInfo, t.session, {}, app.token)).application!.applicationId).toBe('app-a');
    // `sts admin directory export|import` open the database without the lock.
    const db = openDatabase(t.dataDir);
    expect(db.prepare('SELECT count(*) FROM applications').pluck().get()).toBe(1);
    db.close();
    // Released at stop: the next server starts, and the token is still valid (sessions survive restarts).
    const dataDir = t.dataDir;
    await t.stop();
    t = await startTestSts({ dataDir });
    expect((await call(t.session.getApplicationInfo, t.session, {}, app.token)).application!.applicationId).toBe('app-a');
    await call(t.session.releaseApplicationToken, t.session, { applicationTokenId: app.token }, app.token);
    expect((await callError(call(t.session.getApplicationInfo, t.session, {}, app.token))).details).toMatch(/invalid credential/);
  });
});
