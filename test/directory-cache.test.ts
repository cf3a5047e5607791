/**
 * The directory cache (src/session/directory-cache.ts): records are served from memory, but a change made
 * through STS is seen by the very next call, and a change another process makes to the same SQLite file
 * (`sts admin directory import` while the server runs) within the generation check interval.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/sqlite/database.js';
import type { Db } from '../src/store/sqlite/database.js';
import { CachedDirectory, GENERATION_CHECK_MS } from '../src/session/directory-cache.js';
import { type ApplicationRecord, SqliteDirectory } from '../src/session/directory.js';
import { exportDirectory, importDirectory } from '../src/session/directory-file.js';
import { call } from './helpers/call.js';
import { addRole, appRecord, createApp, createUser } from './helpers/directory.js';
import { type TestSts, startTestSts, tempDir } from './helpers/server.js';

const open: Db[] = [];
let t: TestSts | undefined;
afterEach(async () => {
  for (const db of open.splice(0)) if (db.open) db.close();
  await t?.stop(true);
  t = undefined;
});

/** An application whose record has arrays, so freezing is tested on them too. */
const app = (id: string, overrides: Partial<ApplicationRecord> = {}): ApplicationRecord =>
  appRecord(id, { tags: ['t'], defaultRoles: [{ applicationId: id, organizationName: '', roleName: 'r', roleValue: '' }], ...overrides });

/** The server's connection and, on the same file, "another process" (a second connection). */
function twoConnections(): { dir: string; db: Db; other: Db } {
  const dir = tempDir();
  const db = openDatabase(dir);
  const other = openDatabase(dir);
  open.push(db, other);
  return { dir, db, other };
}

function cached(db: Db, maxEntries = 100, checkIntervalMs = 60_000): { dir: CachedDirectory; inner: SqliteDirectory } {
  const inner = new SqliteDirectory(db);
  return { dir: new CachedDirectory(inner, { maxEntries, generation: () => inner.generation(), checkIntervalMs }), inner };
}

describe('directory generation', () => {
  it('moves with every insert, update and delete of applications, users and roles, from any connection', () => {
    const { db, other } = twoConnections();
    const d = new SqliteDirectory(db);
    const o = new SqliteDirectory(other);
    const seen = [d.generation()];
    const moved = () => {
      const g = d.generation();
      expect(g).not.toBe(seen.at(-1));
      seen.push(g);
    };
    d.createApplication(app('a'));
    moved();
    o.updateApplication(app('a', { disabled: true }));
    moved();
    const u = o.createUser({ username: 'u', firstName: '', lastName: '', email: '', cellphone: '', personRef: '', passwordHash: null, disabled: false, externalIssuer: null, externalSubject: null }, [], 0);
    moved();
    d.addRole(u.uid, { applicationId: 'a', organizationName: '', roleName: 'r', roleValue: '' });
    moved();
    expect(o.removeRole(u.uid, { applicationId: 'a', organizationName: '', roleName: 'r', roleValue: '' })).toBe(true);
    moved();
    other.prepare('DELETE FROM users').run();
    moved();
    other.prepare('DELETE FROM applications').run();
    moved();
  });
});

/** A cache holding application "a", which another connection has renamed since (no generation check yet). */
function renamedBehindItsBack(): CachedDirectory {
  const { db, other } = twoConnections();
  const { dir } = cached(db);
  dir.createApplication(app('a'));
  expect(dir.getApplication('a')!.name).toBe('a');
  other.prepare("UPDATE applications SET name = 'renamed' WHERE id = 'a'").run();
  expect(dir.getApplication('a')!.name).toBe('a');
  return dir;
}

describe('CachedDirectory', () => {
  it('serves records from memory until the directory changes under it', () => {
    const dir = renamedBehindItsBack();
    expect(dir.size.applications).toBe(1);
    // ...until told, as cluster replication does after applying another node's change.
    dir.invalidate();
    expect(dir.getApplication('a')!.name).toBe('renamed');
  });

  it('sees another process\'s change after the generation check interval', async () => {
    const { db, other } = twoConnections();
    const { dir } = cached(db, 100, 50);
    dir.createApplication(app('a'));
    const uid = dir.createUser({ username: 'u', firstName: 'F', lastName: '', email: '', cellphone: '', personRef: '', passwordHash: null, disabled: false, externalIssuer: null, externalSubject: null }, [], 0).uid;
    expect(dir.getUser(uid)!.disabled).toBe(false);
    expect(dir.rolesOf(uid, 'a')).toEqual([]);
    // What `sts admin directory import` does: one transaction on its own connection.
    const file = exportDirectory(other);
    file.users[0]!.disabled = true;
    file.users[0]!.roles = [{ applicationId: 'a', organizationName: 'o', roleName: 'r', roleValue: 'v' }];
    importDirectory(other, file);
    await new Promise((r) => setTimeout(r, 80));
    expect(dir.getUser(uid)!.disabled).toBe(true);
    expect(dir.rolesOf(uid, 'a').map((r) => r.roleName)).toEqual(['r']);
  });

  it('applies a change made through it at once, whatever the check interval', () => {
    const { db } = twoConnections();
    const { dir } = cached(db, 100, 3_600_000);
    dir.createApplication(app('a'));
    dir.createApplication(app('b'));
    const uid = dir.createUser({ username: 'u', firstName: 'F', lastName: '', email: '', cellphone: '', personRef: '', passwordHash: null, disabled: false, externalIssuer: null, externalSubject: null }, [], 0).uid;
    // Hex: a uid never starts with "-", which a command line would read as an option (sts admin --uid).
    expect(uid).toMatch(/^[0-9a-f]{32}$/);
    expect(dir.getApplication('a')!.trusted).toBe(false);
    expect(dir.rolesOf(uid)).toEqual([]);
    expect(dir.rolesOf(uid, 'a')).toEqual([]);

    dir.updateApplication({ ...dir.getApplication('a')!, trusted: true });
    expect(dir.getApplication('a')!.trusted).toBe(true);
    dir.addRole(uid, { applicationId: 'a', organizationName: '', roleName: 'r', roleValue: '' });
    expect(dir.rolesOf(uid, 'a')).toHaveLength(1);
    expect(dir.rolesOf(uid)).toHaveLength(1);
    expect(dir.rolesOf(uid, 'b')).toHaveLength(0);
    dir.updateUser({ ...dir.getUser(uid)!, disabled: true });
    expect(dir.getUser(uid)!.disabled).toBe(true);
    expect(dir.removeRole(uid, { applicationId: 'a', organizationName: '', roleName: 'r', roleValue: '' })).toBe(true);
    expect(dir.rolesOf(uid, 'a')).toHaveLength(0);
  });

  it('empties itself even when a change through it fails half way', () => {
    const dir = renamedBehindItsBack();
    expect(() => dir.createApplication(app('a'))).toThrow(/already exists/);
    expect(dir.getApplication('a')!.name).toBe('renamed');
  });

  it('hands out frozen records, so no caller can change what the next call reads', () => {
    const { db } = twoConnections();
    const { dir } = cached(db);
    dir.createApplication(app('a'));
    const a = dir.getApplication('a')!;
    expect(() => {
      (a as { trusted: boolean }).trusted = true;
    }).toThrow(TypeError);
    expect(() => a.tags.push('x')).toThrow(TypeError);
    expect(dir.getApplication('a')!.trusted).toBe(false);
  });

  it('keeps at most maxEntries records of a kind, and none with 0', () => {
    const { db, other } = twoConnections();
    const small = cached(db, 2).dir;
    for (const id of ['a', 'b', 'c']) small.createApplication(app(id));
    for (const id of ['a', 'b', 'c']) expect(small.getApplication(id)!.id).toBe(id);
    expect(small.size.applications).toBe(2);
    // The oldest went first: "a" is read again (and sees a change the cache could not know of).
    other.prepare("UPDATE applications SET name = 'A' WHERE id = 'a'").run();
    expect(small.getApplication('a')!.name).toBe('A');
    const off = cached(db, 0).dir;
    off.getApplication('b');
    other.prepare("UPDATE applications SET name = 'B' WHERE id = 'b'").run();
    expect(off.getApplication('b')!.name).toBe('B');
    expect(off.size.applications).toBe(0);
  });

  it('does not keep what it did not find', () => {
    const { db, other } = twoConnections();
    const { dir } = cached(db);
    expect(dir.getApplication('later')).toBeUndefined();
    new SqliteDirectory(other).createApplication(app('later'));
    expect(dir.getApplication('later')!.id).toBe('later');
  });
});

describe('the running server', () => {
  it('answers with a role added, a user disabled and an import done while it runs', async () => {
    t = await startTestSts();
    const a = await createApp(t, 'app-a');
    const uid = await createUser(t, 'alice', 'correct horse battery staple');
    await addRole(t, uid, 'app-a', 'reader');
    const logon = await call(t.session.logonUser, t.session, { credential: { $case: 'userCredential', value: { username: 'alice', password: 'correct horse battery staple' } }, ticketApplicationId: '' }, a.token);
    const tokenId = logon.userToken!.userTokenId;
    const validate = () => call(t!.session.validateUserToken, t!.session, { token: { $case: 'userTokenId', value: tokenId } }, a.token);
    expect((await validate()).userToken!.roles.map((r) => r.roleName)).toEqual(['reader']);
    // Through the admin RPC: the very next call sees it.
    await addRole(t, uid, 'app-a', 'writer');
    expect((await validate()).userToken!.roles.map((r) => r.roleName)).toEqual(['reader', 'writer']);

    // Through the data directory, as `sts admin directory import` does while the server runs.
    const other = openDatabase(t.dataDir);
    open.push(other);
    const file = exportDirectory(other);
    const alice = file.users.find((u) => u.uid === uid)!;
    alice.roles = alice.roles.filter((r) => r.roleName !== 'writer');
    importDirectory(other, file);
    // Role removal through import: the server drops the stale role within the check interval.
    await new Promise((r) => setTimeout(r, GENERATION_CHECK_MS + 100));
    expect((await validate()).userToken!.roles.map((r) => r.roleName)).toEqual(['reader']);
    alice.disabled = true;
    importDirectory(other, file);
    await new Promise((r) => setTimeout(r, GENERATION_CHECK_MS + 100));
    expect((await validate()).active).toBe(false);
  });
});
