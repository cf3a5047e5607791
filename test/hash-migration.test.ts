/**
 * Issue 15, the migration of stored hashes, end to end through a real server and the real CLI: a data
 * directory whose user password and application secrets were hashed with scrypt by an earlier STS logs on,
 * each hash is replaced by its current form at its first successful logon (the stored string changes
 * format: Argon2id for the password and for an operator's low-entropy secret, the keyed HMAC-SHA-256 for a
 * secret STS made), a wrong secret replaces nothing, everything logs on again, and `sts admin hashes` counts
 * the old hashes before and none after. Then a master key rotation: keyed hashes verify under the old key
 * while it is second in the ring, are re-keyed at the next logon, and log on with the new key alone; a hash
 * whose key was removed too early fails closed, is named at start, and a new secret repairs it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { newMasterKey } from '../src/crypto/master-key.js';
import { LEGACY_APP_SECRET_SCRYPT, LEGACY_PASSWORD_SCRYPT, describeHash, scryptHash } from '../src/session/password.js';
import { call, callError } from './helpers/call.js';
import { runSts } from './helpers/cli.js';
import { adminToken, appDefaults } from './helpers/directory.js';
import { type TestSts, startTestSts, tempDir } from './helpers/server.js';

const PASSWORD = 'olga-password-1';
/** An operator's secret of 24 characters: far from 128 bits. */
const CRM_SECRET = 'crm-operator-secret-0001';
const ARGON2 = 'argon2id m=19456 t=2 p=1';

const dataDir = tempDir('sts-hash-migration-');
let server: TestSts | undefined;
afterAll(async () => {
  await server?.stop(true);
});

async function start(env: NodeJS.ProcessEnv = {}): Promise<TestSts> {
  server = await startTestSts({ dataDir, env });
  return server;
}

async function stop(): Promise<void> {
  await server?.stop();
  server = undefined;
}

/** The stored hashes, read from the data directory as an operator's tool would (read-only, beside the server). */
function stored(): { users: Record<string, string>; apps: Record<string, string> } {
  const db = new Database(join(dataDir, 'sts.db'), { readonly: true });
  try {
    const users = db.prepare('SELECT username, password_hash FROM users').all() as { username: string; password_hash: string }[];
    const apps = db.prepare('SELECT id, secret_hash FROM applications').all() as { id: string; secret_hash: string }[];
    return { users: Object.fromEntries(users.map((u) => [u.username, u.password_hash])), apps: Object.fromEntries(apps.map((a) => [a.id, a.secret_hash])) };
  } finally {
    db.close();
  }
}

const schemes = () => {
  const s = stored();
  return { olga: describeHash(s.users.olga), shop: describeHash(s.apps.shop), crm: describeHash(s.apps.crm) };
};

interface Report {
  settings: { passwords: string; applicationSecretKey: string };
  users: { total: number; old: number; current: number; bySchemes: Record<string, number> };
  applications: { total: number; old: number; current: number; unverifiable: number; bySchemes: Record<string, number> };
  old: number;
}

async function report(env: Record<string, string> = {}): Promise<Report> {
  const r = await runSts(['admin', 'hashes', '--data-dir', dataDir], { env });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Report;
}

const logonApp = (t: TestSts, id: string, secret: string) =>
  call(t.session.logonApplication, t.session, { credential: { $case: 'applicationCredential', value: { applicationId: id, applicationSecret: secret } } }).then((r) => r.applicationToken!.applicationTokenId);
const logonUser = (t: TestSts, token: string, password: string) =>
  call(t.session.logonUser, t.session, { credential: { $case: 'userCredential', value: { username: 'olga', password } }, ticketApplicationId: '' }, token);

describe('stored hashes of an earlier STS', { timeout: 240_000 }, () => {
  let shopSecret = '';

  it('old scrypt hashes log on, are replaced by the current form at the first successful logon, and log on again', async () => {
    // The directory as an earlier STS made it: made through the RPCs, then the hashes put back in scrypt form.
    let t = await start();
    const admin = adminToken(t);
    shopSecret = (await call(t.session.createApplication, t.session, { application: appDefaults('shop'), applicationSecret: '' }, admin)).applicationSecret;
    await call(t.session.createApplication, t.session, { application: appDefaults('crm'), applicationSecret: CRM_SECRET }, admin);
    await call(t.session.createUser, t.session, { user: { uid: '', username: 'olga', firstName: 'Olga', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createTime: undefined }, password: PASSWORD }, admin);
    const masterKeyId = readFileSync(join(dataDir, 'master.key'), 'utf8').split(':')[0]!;
    // What this version stores for new records.
    expect(schemes()).toEqual({ olga: ARGON2, shop: `hmac-sha256 key=${masterKeyId}`, crm: ARGON2 });
    await stop();
    const db = new Database(join(dataDir, 'sts.db'));
    db.prepare('UPDATE users SET password_hash = ? WHERE username = ?').run(await scryptHash(PASSWORD, LEGACY_PASSWORD_SCRYPT), 'olga');
    db.prepare('UPDATE applications SET secret_hash = ? WHERE id = ?').run(await scryptHash(shopSecret, LEGACY_APP_SECRET_SCRYPT), 'shop');
    db.prepare('UPDATE applications SET secret_hash = ? WHERE id = ?').run(await scryptHash(CRM_SECRET, LEGACY_APP_SECRET_SCRYPT), 'crm');
    db.close();
    const legacy = stored();
    expect(schemes()).toEqual({ olga: 'scrypt N=2^17 r=8 p=1', shop: 'scrypt N=2^14 r=8 p=1', crm: 'scrypt N=2^14 r=8 p=1' });

    const before = await report();
    expect(before.settings).toEqual({ passwords: ARGON2, applicationSecretKey: masterKeyId });
    expect(before.users).toMatchObject({ total: 1, old: 1, current: 0, bySchemes: { 'scrypt N=2^17 r=8 p=1': 1 } });
    expect(before.applications).toMatchObject({ total: 2, old: 2, current: 0, bySchemes: { 'scrypt N=2^14 r=8 p=1': 2 } });
    expect(before.old).toBe(3);

    t = await start();
    // A wrong secret or password replaces nothing.
    expect((await callError(logonApp(t, 'shop', `${shopSecret.slice(0, -1)}x`))).code).toBe(status.UNAUTHENTICATED);
    const crmToken = await logonApp(t, 'crm', CRM_SECRET);
    expect((await callError(logonUser(t, crmToken, 'not-her-password'))).code).toBe(status.UNAUTHENTICATED);
    expect(stored().users.olga).toBe(legacy.users.olga);
    expect(stored().apps.shop).toBe(legacy.apps.shop);

    // The first successful logons: each hash changes format.
    const shopToken = await logonApp(t, 'shop', shopSecret);
    expect((await logonUser(t, shopToken, PASSWORD)).userToken!.userTokenId).not.toBe('');
    expect(schemes()).toEqual({ olga: ARGON2, shop: `hmac-sha256 key=${masterKeyId}`, crm: ARGON2 });
    const upgraded = stored();
    const audit = t.logs.filter((l) => /rehashed/.test(l));
    expect(audit.map((l) => (JSON.parse(l) as { event: string }).event).sort()).toEqual(['application.secret_rehashed', 'application.secret_rehashed', 'user.password_rehashed']);
    for (const secret of [PASSWORD, shopSecret, CRM_SECRET]) expect(t.logs.join('\n')).not.toContain(secret);

    // And again, from the new hashes, which stay as they are.
    expect((await logonUser(t, await logonApp(t, 'crm', CRM_SECRET), PASSWORD)).userToken!.userTokenId).not.toBe('');
    await logonApp(t, 'shop', shopSecret);
    expect(stored()).toEqual(upgraded);
    const after = await report();
    expect([after.old, after.users.current, after.applications.current]).toEqual([0, 1, 2]);
    await stop();
  });

  it('a master key rotation: keyed hashes verify under the old key, are re-keyed at the next logon, and log on with the new key alone; one whose key was removed fails closed until its secret is reset', async () => {
    const oldKey = readFileSync(join(dataDir, 'master.key'), 'utf8').trim();
    const oldId = oldKey.split(':')[0]!;
    const k = newMasterKey();
    const newKey = `${k.id}:${k.key.toString('base64url')}`;
    const both = { STS_MASTER_KEY: `${newKey},${oldKey}` };
    expect(describeHash(stored().apps.shop)).toBe(`hmac-sha256 key=${oldId}`);
    expect((await report(both)).applications).toMatchObject({ old: 1, current: 1 }); // crm's Argon2id does not follow the key

    let t = await start(both);
    await logonApp(t, 'shop', shopSecret);
    expect(describeHash(stored().apps.shop)).toBe(`hmac-sha256 key=${k.id}`);
    expect(t.logs.some((l) => /application\.secret_rehashed/.test(l) && l.includes(`key=${oldId}`))).toBe(true);
    await stop();

    t = await start({ STS_MASTER_KEY: newKey });
    await logonApp(t, 'shop', shopSecret);
    await logonApp(t, 'crm', CRM_SECRET);
    expect((await report({ STS_MASTER_KEY: newKey })).old).toBe(0);
    await stop();

    // A key removed too early (no logon of shop in between): shop cannot log on, which STS says at start and the
    // report counts, until its secret is reset.
    const k3 = newMasterKey();
    const third = `${k3.id}:${k3.key.toString('base64url')}`;
    await (await start({ STS_MASTER_KEY: `${third},${newKey}` })).stop();
    t = await start({ STS_MASTER_KEY: third });
    const warning = t.logs.find((l) => l.includes('cannot be checked here'));
    expect(warning && (JSON.parse(warning) as { applications: string[] }).applications).toEqual(['shop']);
    expect((await callError(logonApp(t, 'shop', shopSecret))).code).toBe(status.UNAUTHENTICATED);
    expect((await report({ STS_MASTER_KEY: third })).applications).toMatchObject({ unverifiable: 1, current: 1 });
    const reset = newMasterKey().key.toString('base64url');
    await call(t.session.updateApplication, t.session, { application: appDefaults('shop'), updateMask: [], generateSecret: false, applicationSecret: reset }, adminToken(t));
    await logonApp(t, 'shop', reset);
    expect(describeHash(stored().apps.shop)).toBe(`hmac-sha256 key=${k3.id}`);
    await stop();
  });
});
