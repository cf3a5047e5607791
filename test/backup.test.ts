/**
 * Backup, restore and upgrades as an operator runs them, with the real `sts` command line against real
 * servers: `sts admin backup` while the server is under load, `sts backup verify`, `sts restore` into a fresh
 * data directory, and a node started there that serves the same keys, identical user secrets (GetUserSecret
 * through a registered identity provider and resource server, opened at the resource server) and the same
 * directory, but none of the old sessions. Then `sts migrate --dry-run` and the refusal of a newer schema.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { type CryptoKey, type JWK, SignJWT, compactDecrypt, exportJWK, generateKeyPair } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { KeyKind } from '../src/gen/sts/v1/pop.js';
import { Application, User } from '../src/gen/sts/v1/session.js';
import { MIGRATIONS } from '../src/store/sqlite/database.js';
import { call, callError } from './helpers/call.js';
import { runSts } from './helpers/cli.js';
import { type TestSts, startTestSts, tempDir } from './helpers/server.js';

const AUD = 'api://orders';
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function sts(dataDir: string, env: Record<string, string>): Promise<TestSts> {
  const t = await startTestSts({ dataDir, env });
  let stopped = false;
  cleanups.push(async () => {
    if (!stopped) await t.stop(true);
    stopped = true;
  });
  return t;
}

/** An identity provider: a JWKS over HTTP and a key that signs its ID tokens. */
async function identityProvider(): Promise<{ issuer: string; sign(sub: string): Promise<string> }> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'idp-1', use: 'sig', alg: 'ES256' }] };
  const server: Server = createServer((req, res) => {
    if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const sign = (sub: string) =>
    new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'idp-1', typ: 'JWT' }).setIssuer(issuer).setSubject(sub).setAudience(AUD).setIssuedAt().setExpirationTime('10m').sign(privateKey);
  return { issuer, sign };
}

interface Deployment {
  t: TestSts;
  admin: string;
  rsSecret: string;
  rsKey: CryptoKey;
  rsJwks: { keys: JWK[] };
  idp: Awaited<ReturnType<typeof identityProvider>>;
}

async function logonApp(t: TestSts, id: string, secret: string): Promise<string> {
  return (await call(t.session.logonApplication, t.session, { credential: { $case: 'applicationCredential', value: { applicationId: id, applicationSecret: secret } } })).applicationToken!.applicationTokenId;
}

/** GetUserSecret for `sub` as the resource server, opened with the resource server's private key. */
async function userSecret(t: TestSts, d: Pick<Deployment, 'idp' | 'rsKey'>, rsToken: string, sub: string): Promise<string> {
  const { secretJwe } = await call(t.secret.getUserSecret, t.secret, { subjectToken: await d.idp.sign(sub) }, rsToken);
  return Buffer.from((await compactDecrypt(secretJwe, d.rsKey)).plaintext).toString('base64url');
}

const kidsOf = async (t: TestSts, admin: string) =>
  (await call(t.pop.listKeys, t.pop, { kind: KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed: true }, admin)).keys.map((k) => `${k.kind}/${k.kid}/${k.state}`).sort();
const directoryOf = async (t: TestSts, admin: string) => ({
  apps: (await call(t.session.listApplications, t.session, {}, admin)).applications.map((a) => Application.toJSON(a)),
  users: (await call(t.session.listUsers, t.session, { usernamePrefix: '', pageSize: 1000, pageToken: '' }, admin)).users.map((u) => User.toJSON(u)),
});

describe('backup and restore', { timeout: 300_000 }, () => {
  it('a backup taken under load restores onto a fresh node that serves the same keys, identical user secrets and the directory, and no old session', async () => {
    const masterKey = `mk-backup:${randomBytes(32).toString('base64url')}`;
    const env = { STS_MASTER_KEY: masterKey };
    const a = await sts(tempDir(), env);
    const admin = readFileSync(join(a.dataDir, 'admin.token'), 'utf8').trim();
    const idp = await identityProvider();
    const { publicKey, privateKey } = await generateKeyPair('ECDH-ES+A256KW', { extractable: true });
    const rsJwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'rs-1', use: 'enc', alg: 'ECDH-ES+A256KW' }] };
    const created = await call(a.session.createApplication, a.session, { application: Application.fromPartial({ applicationId: 'orders-rs', name: 'Orders' }), applicationSecret: '' }, admin);
    await call(a.secret.putIdentityProvider, a.secret, { identityProvider: { issuer: idp.issuer, jwksSource: { $case: 'jwksUri', value: `${idp.issuer}/jwks` }, audiences: [AUD], algorithms: ['ES256'], subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false } }, admin);
    await call(
      a.secret.putResourceServer,
      a.secret,
      { resourceServer: { resourceServerId: 'orders', credential: { $case: 'applicationId', value: 'orders-rs' }, audiences: [AUD], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify(rsJwks) } } },
      admin,
    );
    const d = { idp, rsKey: privateKey };
    const user = (await call(a.session.createUser, a.session, { user: User.fromPartial({ username: 'dave', email: 'dave@example.org' }), password: 'a long password for dave' }, admin)).user!;
    await call(a.session.addUserRole, a.session, { uid: user.uid, role: { applicationId: 'orders-rs', organizationName: 'ACME', roleName: 'buyer', roleValue: '1' } }, admin);
    const rsOnA = await logonApp(a, 'orders-rs', created.applicationSecret);
    const before = new Map<string, string>();
    for (let i = 0; i < 8; i++) before.set(`user-${i}`, await userSecret(a, d, rsOnA, `user-${i}`));

    // Load while the backup runs: new users' secrets, logons, and repeated reads of the old ones.
    let stop = false;
    let calls = 0;
    const during = new Map<string, string>();
    const load = (async () => {
      for (let i = 0; !stop; i++) {
        await Promise.all([
          userSecret(a, d, rsOnA, `load-${i}`).then((s) => during.set(`load-${i}`, s)),
          userSecret(a, d, rsOnA, `user-${i % 8}`).then((s) => expect(s).toBe(before.get(`user-${i % 8}`))),
          logonApp(a, 'orders-rs', created.applicationSecret),
        ]);
        calls += 3;
      }
    })();
    const file = join(tempDir('sts-backup-'), 'sts-backup.db');
    const backup = await runSts(['admin', 'backup', '--data-dir', a.dataDir, '--out', file]);
    const callsAtBackup = calls;
    stop = true;
    await load;
    expect(backup.code, backup.stderr).toBe(0);
    expect(callsAtBackup).toBeGreaterThan(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const summary = JSON.parse(backup.stdout) as { masterKeyId: string; userSecrets: number; users: number; applications: number; identityProviders: number; resourceServers: number; keys: Record<string, number> };
    expect(summary).toMatchObject({ masterKeyId: 'mk-backup', users: 1, applications: 1, identityProviders: 1, resourceServers: 1, keys: { encryption: 2, signing: 2, secret: 2 } });
    expect(summary.userSecrets).toBeGreaterThanOrEqual(8);

    // verify: without a master key it names the key it needs; with the right one everything opens; a wrong one fails.
    const plain = await runSts(['backup', 'verify', file]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(JSON.parse(plain.stdout)).toMatchObject({ masterKeyId: 'mk-backup', masterKeyChecked: false });
    const checked = await runSts(['backup', 'verify', file], { env });
    expect(checked.code, checked.stderr).toBe(0);
    expect(JSON.parse(checked.stdout)).toMatchObject({ masterKeyChecked: true, userSecrets: summary.userSecrets });
    const wrong = await runSts(['backup', 'verify', file], { env: { STS_MASTER_KEY: `mk-backup:${randomBytes(32).toString('base64url')}` } });
    expect(wrong.code).toBe(65);
    expect(wrong.stderr).toMatch(/^sts: .*sts-backup\.db: key \S+ does not open with the given master key/);

    // restore: never over existing data; into a fresh directory with the master key.
    const occupied = tempDir();
    writeFileSync(join(occupied, 'sts.db'), 'live data');
    const refused = await runSts(['restore', file, '--data-dir', occupied], { env });
    expect(refused.code).toBe(73);
    expect(refused.stderr).toContain('is not empty (sts.db)');
    const fresh = join(tempDir(), 'restored');
    const restored = await runSts(['restore', '--data-dir', fresh, file], { env });
    expect(restored.code, restored.stderr).toBe(0);
    expect(statSync(join(fresh, 'sts.db')).mode & 0o777).toBe(0o600);

    const b = await sts(fresh, env);
    const adminB = readFileSync(join(b.dataDir, 'admin.token'), 'utf8').trim(); // a dev admin key of its own
    expect(await kidsOf(b, adminB)).toEqual(await kidsOf(a, admin));
    expect((await call(b.pop.getJwks, b.pop, {})).jwksJson).toBe((await call(a.pop.getJwks, a.pop, {})).jwksJson);
    expect(await directoryOf(b, adminB)).toEqual(await directoryOf(a, admin));
    // Sessions are not in a backup: the resource server's old token is unknown, its secret still logs it on.
    expect((await callError(call(b.session.validateApplicationToken, b.session, { applicationTokenId: rsOnA }, rsOnA))).code).toBe(status.UNAUTHENTICATED);
    const rsOnB = await logonApp(b, 'orders-rs', created.applicationSecret);
    for (const [sub, secret] of before) expect(await userSecret(b, d, rsOnB, sub), sub).toBe(secret);
    // Secrets made while the backup ran are in it when they were stored before its snapshot; in it, identical.
    let carried = 0;
    for (const [sub, secret] of during) {
      const again = await userSecret(b, d, rsOnB, sub);
      if (again === secret) carried++;
    }
    expect(carried).toBe(summary.userSecrets - before.size);
    // The user logs on with the password they had.
    const logon = await call(b.session.logonUser, b.session, { credential: { $case: 'userCredential', value: { username: 'dave', password: 'a long password for dave' } }, ticketApplicationId: '' }, rsOnB);
    expect(logon.userToken!.uid).toBe(user.uid);
  });

  it('verify refuses a file that is not a backup, or a damaged one', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'junk.db'), randomBytes(8192));
    const junk = await runSts(['backup', 'verify', join(dir, 'junk.db')]);
    expect(junk.code).toBe(65);
    expect(junk.stderr).toContain('junk.db: not an SQLite database');
    const empty = join(dir, 'empty.db');
    new Database(empty).close();
    const none = await runSts(['backup', 'verify', empty]);
    expect(none.code).toBe(65);
    expect(none.stderr).toContain('not an STS backup');
    const missing = await runSts(['backup', 'verify', join(dir, 'absent.db')]);
    expect(missing.code).toBe(65);
    expect(missing.stderr).toContain('absent.db: no such file');
  });
});

describe('upgrades', { timeout: 120_000 }, () => {
  it('migrate --dry-run lists the pending migrations and changes nothing; migrate applies them', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'data'));
    const db = new Database(join(dir, 'data', 'sts.db'));
    for (const m of MIGRATIONS.slice(0, 3)) db.exec(m.sql);
    db.pragma('user_version = 3');
    db.close();
    const copy = join(dir, 'copy.db');
    copyFileSync(join(dir, 'data', 'sts.db'), copy);
    const dry = await runSts(['migrate', '--dry-run', '--data-dir', join(dir, 'data')]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout)).toMatchObject({ schemaVersion: 3, latest: MIGRATIONS.at(-1)!.version, pending: MIGRATIONS.slice(3).map((m) => ({ version: m.version, description: m.description })) });
    expect(readFileSync(join(dir, 'data', 'sts.db'))).toEqual(readFileSync(copy));
    const applied = await runSts(['migrate', '--data-dir', join(dir, 'data')]);
    expect(applied.code, applied.stderr).toBe(0);
    const again = await runSts(['migrate', '--dry-run', '--data-dir', join(dir, 'data')]);
    expect(JSON.parse(again.stdout)).toMatchObject({ schemaVersion: MIGRATIONS.at(-1)!.version, pending: [] });
  });

  it('a schema newer than this STS is refused by migrate and by serve, naming both versions', async () => {
    const dir = tempDir();
    const db = new Database(join(dir, 'sts.db'));
    db.pragma('user_version = 99');
    db.close();
    const latest = MIGRATIONS.at(-1)!.version;
    const dry = await runSts(['migrate', '--dry-run', '--data-dir', dir]);
    expect(dry.code).toBe(65);
    expect(dry.stderr).toMatch(new RegExp(`sts\\.db: database schema version 99 is newer than this STS \\S+ supports \\(schema version ${latest}\\)`));
    const serve = await runSts(['serve', '--data-dir', dir, '--address', '127.0.0.1:0', '--http-address', '']);
    expect(serve.code).toBe(65);
    expect(serve.stderr).toContain('database schema version 99 is newer than this STS');
  });
});
