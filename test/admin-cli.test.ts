/**
 * `sts admin` as an operator uses it: the real CLI process against a real server, and the directory
 * export/import round trip into a second installation.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { exportJWK, generateKeyPair } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { call } from './helpers/call.js';
import { type TestSts, startTestSts, tempDir } from './helpers/server.js';

let servers: TestSts[] = [];
afterEach(async () => {
  for (const s of servers) await s.stop(true);
  servers = [];
});

function sts(args: string[], stdin = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STS_')));
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(stdin);
  });
}

describe('sts admin', { timeout: 180_000 }, () => {
  it('manages applications, users, roles and keys through the server, and reports refusals', async () => {
    const t = await startTestSts();
    servers.push(t);
    const conn = ['--address', t.address, '--data-dir', t.dataDir];
    const app = await sts(['admin', 'apps', 'create', '--id', 'shop', '--name', 'Shop', '--trusted', ...conn]);
    expect(app.code, app.stderr).toBe(0);
    const created = JSON.parse(app.stdout) as { application: { applicationId: string; trusted: boolean }; applicationSecret: string };
    expect(created.application).toMatchObject({ applicationId: 'shop', trusted: true });

    const user = await sts(['admin', 'users', 'create', '--username', 'dave', '--email', 'd@example.org', '--password-stdin', ...conn], 'dave-password-1\n');
    expect(user.code, user.stderr).toBe(0);
    const uid = (JSON.parse(user.stdout) as { uid: string }).uid;
    expect((await sts(['admin', 'roles', 'add', '--uid', uid, '--app', 'shop', '--role', 'buyer', ...conn])).code).toBe(0);

    // The user and role work for a real logon by the application.
    const logonApp = await call(t.session.logonApplication, t.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'shop', applicationSecret: created.applicationSecret } } });
    const token = logonApp.applicationToken!.applicationTokenId;
    const logon = await call(t.session.logonUser, t.session, { credential: { $case: 'userCredential', value: { username: 'dave', password: 'dave-password-1' } }, ticketApplicationId: '' }, token);
    expect(logon.userToken!.roles.map((r) => r.roleName)).toEqual(['buyer']);

    const sessions = await sts(['admin', 'sessions', 'list', '--uid', uid, ...conn]);
    expect(JSON.parse(sessions.stdout)).toHaveLength(1);
    const released = await sts(['admin', 'sessions', 'release', '--uid', uid, ...conn]);
    expect(JSON.parse(released.stdout)).toEqual({ releasedCount: 1 });

    // A new secret made by STS (after a leak): printed once; the application's tokens end, the old secret fails.
    const reset = await sts(['admin', 'apps', 'reset-secret', '--id', 'shop', ...conn]);
    expect(reset.code, reset.stderr).toBe(0);
    const fresh = (JSON.parse(reset.stdout) as { applicationSecret: string }).applicationSecret;
    expect(fresh).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await call(t.session.validateApplicationToken, t.session, { applicationTokenId: token }, token).catch((e: { code: number }) => e.code))).toBe(status.UNAUTHENTICATED);
    const logonOld = await call(t.session.logonApplication, t.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'shop', applicationSecret: created.applicationSecret } } }).catch((e: { code: number }) => e.code);
    expect(logonOld).toBe(status.UNAUTHENTICATED);
    expect((await call(t.session.logonApplication, t.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'shop', applicationSecret: fresh } } })).applicationToken!.applicationId).toBe('shop');

    // Disable and enable send only the flag (the update mask's one field): the rest stays as stored.
    for (const [cmd, flag] of [['disable', true], ['enable', false]] as const) {
      const appFlag = await sts(['admin', 'apps', cmd, '--id', 'shop', ...conn]);
      expect(appFlag.code, appFlag.stderr).toBe(0);
      expect((JSON.parse(appFlag.stdout) as { application: { name: string; disabled: boolean } }).application).toMatchObject({ name: 'Shop', disabled: flag });
      const userFlag = await sts(['admin', 'users', cmd, '--uid', uid, ...conn]);
      expect(userFlag.code, userFlag.stderr).toBe(0);
      expect(JSON.parse(userFlag.stdout) as unknown).toMatchObject({ username: 'dave', disabled: flag });
    }

    const rotated = await sts(['admin', 'keys', 'rotate', '--kind', 'signing', ...conn]);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(JSON.parse(rotated.stdout)).toEqual([expect.objectContaining({ kind: 'KEY_KIND_SIGNING', state: 'KEY_STATE_STAGED' })]);

    const dup = await sts(['admin', 'apps', 'create', '--id', 'shop', '--name', 'Shop', ...conn]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toContain('application shop already exists');
    const badKind = await sts(['admin', 'keys', 'rotate', '--kind', 'weird', ...conn]);
    expect(badKind.code).toBe(64);
    const wrongToken = await sts(['admin', 'apps', 'list', '--token', 'sts_admin_nope', ...conn]);
    expect(wrongToken.code).toBe(1);
    expect(wrongToken.stderr).toContain('gRPC status 16');
    expect(wrongToken.stderr).not.toContain('sts_admin_nope');
  });

  it('exports the directory and imports it into another installation where the same credentials work', async () => {
    const t = await startTestSts();
    servers.push(t);
    const conn = ['--address', t.address, '--data-dir', t.dataDir];
    const app = JSON.parse((await sts(['admin', 'apps', 'create', '--id', 'crm', '--name', 'CRM', ...conn])).stdout) as { applicationSecret: string };
    const uid = (JSON.parse((await sts(['admin', 'users', 'create', '--username', 'erin', '--password-stdin', ...conn], 'erin-password-1\n')).stdout) as { uid: string }).uid;
    const added = await sts(['admin', 'roles', 'add', '--uid', uid, '--app', 'crm', '--role', 'agent', '--org', 'Sales', ...conn]);
    expect(added.code, added.stderr).toBe(0);

    const file = join(tempDir(), 'directory.json');
    const exported = await sts(['admin', 'directory', 'export', '--out', file, '--data-dir', t.dataDir]);
    expect(exported.code, exported.stderr).toBe(0);

    // An installation with another master key: the application secret STS made is keyed by the source's
    // master key, so the import names it (its secret must be reset there), and changes everything else.
    const elsewhere = tempDir();
    const warned = await sts(['admin', 'directory', 'import', file, '--data-dir', elsewhere]);
    expect(warned.code, warned.stderr).toBe(0);
    expect(JSON.parse(warned.stdout)).toEqual({ applications: 1, users: 1, roles: 1, secretsToReset: ['crm'] });
    expect(warned.stderr).toContain('keyed by a master key this installation does not hold (crm)');

    // The same master key (the dev profile keeps it in <dataDir>/master.key): the same credentials work.
    const target = tempDir();
    copyFileSync(join(t.dataDir, 'master.key'), join(target, 'master.key'));
    const imported = await sts(['admin', 'directory', 'import', file, '--data-dir', target]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(JSON.parse(imported.stdout)).toEqual({ applications: 1, users: 1, roles: 1, secretsToReset: [] });
    expect(imported.stderr).not.toContain('warning');

    const t2 = await startTestSts({ dataDir: target });
    servers.push(t2);
    const token = (await call(t2.session.logonApplication, t2.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'crm', applicationSecret: app.applicationSecret } } })).applicationToken!.applicationTokenId;
    const logon = await call(t2.session.logonUser, t2.session, { credential: { $case: 'userCredential', value: { username: 'erin', password: 'erin-password-1' } }, ticketApplicationId: '' }, token);
    expect(logon.userToken!.uid).toBe(uid);
    expect(logon.userToken!.roles).toEqual([{ applicationId: 'crm', organizationName: 'Sales', roleName: 'agent', roleValue: '' }]);

    // A malformed file changes nothing.
    const bad = join(tempDir(), 'bad.json');
    writeFileSync(bad, JSON.stringify({ version: 1, applications: [{ id: 'x' }], users: [] }));
    const refused = await sts(['admin', 'directory', 'import', bad, '--data-dir', target]);
    expect(refused.code).toBe(65);
    expect(refused.stderr).toContain('applications[0]');
  });

  it('registers identity providers and resource servers', async () => {
    const t = await startTestSts();
    servers.push(t);
    const conn = ['--address', t.address, '--data-dir', t.dataDir];
    const { publicKey } = await generateKeyPair('ES256');
    const jwksFile = join(tempDir(), 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] }));
    const idp = await sts(['admin', 'idps', 'put', '--issuer', 'https://idp.example', '--jwks-file', jwksFile, '--audience', 'api', '--alg', 'ES256', ...conn]);
    expect(idp.code, idp.stderr).toBe(0);
    expect(JSON.parse(idp.stdout)).toMatchObject({ issuer: 'https://idp.example', audiences: ['api'], algorithms: ['ES256'] });
    const hmac = await sts(['admin', 'idps', 'put', '--issuer', 'https://bad.example', '--jwks-file', jwksFile, '--audience', 'api', '--alg', 'HS256', ...conn]);
    expect(hmac.code).toBe(1);
    expect(hmac.stderr).toContain('HS256');
    await sts(['admin', 'apps', 'create', '--id', 'notes', '--name', 'Notes', ...conn]);
    const { publicKey: encKey } = await generateKeyPair('ECDH-ES+A256KW');
    const rsJwks = join(tempDir(), 'rs.json');
    writeFileSync(rsJwks, JSON.stringify({ keys: [{ ...(await exportJWK(encKey)), kid: 'e1', alg: 'ECDH-ES+A256KW', use: 'enc' }] }));
    const rs = await sts(['admin', 'resource-servers', 'put', '--id', 'notes-rs', '--app', 'notes', '--audience', 'api', '--jwks-file', rsJwks, ...conn]);
    expect(rs.code, rs.stderr).toBe(0);
    expect(JSON.parse((await sts(['admin', 'resource-servers', 'list', ...conn])).stdout)).toEqual([expect.objectContaining({ resourceServerId: 'notes-rs' })]);
    expect((await sts(['admin', 'idps', 'delete', '--issuer', 'https://idp.example', ...conn])).code).toBe(0);
    expect(JSON.parse((await sts(['admin', 'idps', 'list', ...conn])).stdout)).toEqual([]);
    const both = await sts(['admin', 'resource-servers', 'put', '--id', 'x', '--app', 'notes', '--cert-sha256', 'ab', '--audience', 'api', '--jwks-file', rsJwks, ...conn]);
    expect(both.code).toBe(64);
  });

  it('generates master key and admin key material in the formats the server reads', async () => {
    const mk = await sts(['admin', 'master-key', 'generate']);
    expect(mk.stdout.trim()).toMatch(/^mk-[A-Za-z0-9_-]+:[A-Za-z0-9_-]{43}$/);
    const ak = JSON.parse((await sts(['admin', 'admin-key', 'generate'])).stdout) as { adminKey: string; adminKeyFileLine: string };
    const dir = tempDir();
    writeFileSync(join(dir, 'admin-keys'), ak.adminKeyFileLine + '\n');
    const t = await startTestSts({ overrides: { 'auth.adminKeyFile': join(dir, 'admin-keys') }, env: { STS_MASTER_KEY: mk.stdout.trim() } });
    servers.push(t);
    const apps = await call(t.session.listApplications, t.session, {}, ak.adminKey);
    expect(apps.applications).toEqual([]);
  });
});
