/**
 * Upgrading a cluster written by an STS from before sealing: its maps hold the same records without a seal.
 * A node refuses to start on it by default, naming the option, and changes nothing; started once with
 * cluster.unsealedRecords=reseal it seals what the cluster holds (keys, directory, live application tokens), and
 * every node then serves as before. Also: after a master key rotation, a starting node re-seals what it syncs
 * under the new key, and the older key still opens what is not re-sealed yet. And the scrypt hashes an earlier
 * STS replicated: they log on at any node, the node that checks one replaces it (Argon2id, the keyed hash), and
 * the other node takes the new form and logs on with it.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Client as HazelcastClient } from 'hazelcast-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterSeal } from '../src/cluster/cluster-seal.js';
import { MasterKeyRing, parseMasterKeys } from '../src/crypto/master-key.js';
import { StartupError } from '../src/errors.js';
import { LEGACY_APP_SECRET_SCRYPT, LEGACY_PASSWORD_SCRYPT, describeHash, scryptHash } from '../src/session/password.js';
import { call } from './helpers/call.js';
import { type Cluster, type Deployment, newDeployment, startCluster, stopAll } from './helpers/cluster.js';
import { appDefaults } from './helpers/directory.js';
import { type TestSts, startTestSts, tempDir } from './helpers/server.js';

const VERSIONED = ['sts-key', 'sts-user_secret', 'sts-directory', 'sts-registry'];
let cluster: Cluster;
let deployment: Deployment;
let hostile: HazelcastClient;

function startNode(options: { dataDir?: string; masterKey?: string; overrides?: Record<string, string> } = {}): Promise<TestSts> {
  return startTestSts({
    dataDir: options.dataDir ?? tempDir(),
    env: { STS_MASTER_KEY: options.masterKey ?? deployment.masterKey },
    overrides: { 'cluster.enabled': true, 'cluster.members': cluster.memberList, 'cluster.name': cluster.name, 'auth.adminKeyFile': deployment.adminKeyFile, ...options.overrides },
  });
}

const kindOf = (name: string, key: string) => (name === 'sts-key' ? 'key' : name === 'sts-user_secret' ? 'user_secret' : key.slice(0, key.indexOf(':')));

beforeAll(async () => {
  cluster = await startCluster(1);
  deployment = newDeployment();
  hostile = await HazelcastClient.newHazelcastClient({
    clusterName: cluster.name,
    network: { clusterMembers: [cluster.memberList] },
    connectionStrategy: { connectionRetry: { clusterConnectTimeoutMillis: 30_000 } },
    properties: { 'hazelcast.logging.level': 'OFF' },
  });
}, 180_000);

afterAll(async () => {
  await hostile?.shutdown();
  await stopAll();
});

describe('a cluster from before sealing', () => {
  it('is refused by default, naming the option, and sealed once with cluster.unsealedRecords=reseal', async () => {
    const seal = new ClusterSeal(new MasterKeyRing(parseMasterKeys(deployment.masterKey, 'test')), cluster.name);
    // What an earlier STS left: a node's keys, directory and a live application token, all without a seal.
    const first = await startNode();
    const { applicationSecret } = await call(first.session.createApplication, first.session, { application: appDefaults('legacy-app'), applicationSecret: '' }, deployment.adminKey);
    const token = (await call(first.session.logonApplication, first.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'legacy-app', applicationSecret } } })).applicationToken!.applicationTokenId;
    const jwks = (await call(first.pop.getJwks, first.pop, {})).jwksJson;
    await first.stop();
    const unsealed = new Map<string, Map<string, unknown>>();
    for (const name of VERSIONED) {
      const map = await hostile.getMap<string, unknown>(name);
      const entries = new Map<string, unknown>();
      for (const [key, raw] of await map.entrySet()) entries.set(key, (JSON.parse(seal.open({ map: name, kind: kindOf(name, key), key }, raw)) as { v: string }).v);
      await map.clear();
      for (const [key, value] of entries) await map.put(key, value);
      unsealed.set(name, entries);
    }
    const tokens = await hostile.getMap<string, unknown>('sts-app_token');
    for (const [key, raw] of await tokens.entrySet()) {
      const r = JSON.parse(seal.open({ map: 'sts-app_token', kind: 'app_token', key }, (raw as { s: string }).s)) as { v: string; e: number; g: string | null };
      await tokens.put(key, { value: r.v, grp: r.g, exp: r.e });
    }
    expect(unsealed.get('sts-key')!.size).toBeGreaterThan(0);

    // A new node refuses, and leaves the cluster as it was.
    const dataDir = tempDir();
    const refused = await startNode({ dataDir }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(StartupError);
    expect((refused as Error).message).toMatch(/cluster\.unsealedRecords=reseal/);
    for (const name of VERSIONED) {
      for (const [key, value] of unsealed.get(name)!) expect(await (await hostile.getMap<string, unknown>(name)).get(key)).toBe(value);
    }

    // A node that has run in a sealed cluster (the first one: it holds revisions) never vouches, whatever the
    // option says: the grid may have been emptied and refilled by someone else.
    const vouched = await startNode({ dataDir: first.dataDir, overrides: { 'cluster.unsealedRecords': 'reseal' } }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((vouched as Error).message).toMatch(/already run in a sealed cluster/);
    for (const [key, value] of unsealed.get('sts-key')!) expect(await (await hostile.getMap<string, unknown>('sts-key')).get(key)).toBe(value);

    // Once, vouching for it: everything is sealed, and the node serves the old keys, directory and token.
    const upgraded = await startNode({ dataDir, overrides: { 'cluster.unsealedRecords': 'reseal' } });
    expect((await call(upgraded.pop.getJwks, upgraded.pop, {})).jwksJson).toBe(jwks);
    expect((await call(upgraded.session.getApplicationInfo, upgraded.session, {}, token)).application!.applicationId).toBe('legacy-app');
    for (const name of VERSIONED) {
      for (const [key, raw] of await (await hostile.getMap<string, unknown>(name)).entrySet()) expect(ClusterSeal.looksSealed(raw), `${name} ${key}`).toBe(true);
    }
    // Another node with the default setting joins the sealed cluster; an unsealed value put now is a forgery.
    await (await hostile.getMap<string, unknown>('sts-directory')).put('app:late', JSON.stringify({ kind: 'app', app: { id: 'late' } }));
    const other = await startNode();
    expect((await call(other.pop.getJwks, other.pop, {})).jwksJson).toBe(jwks);
    expect((await call(other.session.getApplicationInfo, other.session, {}, token)).application!.applicationId).toBe('legacy-app');
    expect((await call(other.session.listApplications, other.session, {}, deployment.adminKey)).applications.map((a) => a.applicationId)).toEqual(['legacy-app']);
    await other.stop(true);
    await upgraded.stop(true);
  });
});

describe('hashes of an earlier STS in the cluster', () => {
  it('log on at any node; the node that checks one replaces it, and the other node takes the new form and logs on with it', async () => {
    const seal = new ClusterSeal(new MasterKeyRing(parseMasterKeys(deployment.masterKey, 'test')), cluster.name);
    const a = await startNode();
    const b = await startNode();
    try {
      const admin = deployment.adminKey;
      const { applicationSecret } = await call(a.session.createApplication, a.session, { application: appDefaults('migrating'), applicationSecret: '' }, admin);
      const password = 'mig-password-1';
      const { user } = await call(a.session.createUser, a.session, { user: { uid: '', username: 'mig', firstName: '', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createTime: undefined }, password }, admin);
      const uid = user!.uid;
      const hashesAt = (node: TestSts) => {
        const db = new Database(join(node.dataDir, 'sts.db'), { readonly: true });
        try {
          const app = db.prepare('SELECT secret_hash FROM applications WHERE id = ?').pluck().get('migrating') as string | undefined;
          const pw = db.prepare('SELECT password_hash FROM users WHERE uid = ?').pluck().get(uid) as string | undefined;
          return { app: describeHash(app), user: describeHash(pw) };
        } finally {
          db.close();
        }
      };
      const until = async (what: string, fn: () => boolean) => {
        const end = Date.now() + 20_000;
        while (!fn()) {
          if (Date.now() > end) throw new Error(`${what}: not within 20 s`);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      await until('B holds both records', () => hashesAt(b).app.startsWith('hmac-sha256') && hashesAt(b).user.startsWith('argon2id'));

      // What an earlier STS replicated: the same records with scrypt hashes, at the next revision.
      const map = await hostile.getMap<string, unknown>('sts-directory');
      const legacy = { app: await scryptHash(applicationSecret, LEGACY_APP_SECRET_SCRYPT), user: await scryptHash(password, LEGACY_PASSWORD_SCRYPT) };
      for (const [key, kind, field, field2, hash] of [
        ['app:migrating', 'app', 'app', 'secretHash', legacy.app],
        [`user:${uid}`, 'user', 'user', 'passwordHash', legacy.user],
      ] as const) {
        const address = { map: 'sts-directory', kind, key };
        const { r, v } = JSON.parse(seal.open(address, await map.get(key))) as { r: number; v: string };
        const entry = JSON.parse(v) as Record<string, Record<string, unknown>>;
        entry[field] = { ...entry[field], [field2]: hash };
        await map.put(key, seal.seal(address, JSON.stringify({ r: r + 1, v: JSON.stringify(entry) })));
      }
      const scrypt = { app: 'scrypt N=2^14 r=8 p=1', user: 'scrypt N=2^17 r=8 p=1' };
      await until('both nodes hold the scrypt hashes', () => JSON.stringify([hashesAt(a), hashesAt(b)]) === JSON.stringify([scrypt, scrypt]));

      // The first logon, at A: A replaces both hashes, and B takes the new forms.
      const logon = async (node: TestSts) => {
        const token = (await call(node.session.logonApplication, node.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'migrating', applicationSecret } } })).applicationToken!.applicationTokenId;
        return call(node.session.logonUser, node.session, { credential: { $case: 'userCredential', value: { username: 'mig', password } }, ticketApplicationId: '' }, token);
      };
      await logon(a);
      const current = { app: `hmac-sha256 key=${deployment.masterKey.split(':')[0]}`, user: 'argon2id m=19456 t=2 p=1' };
      expect(hashesAt(a)).toEqual(current);
      await until('B takes the new forms', () => JSON.stringify(hashesAt(b)) === JSON.stringify(current));
      // And logs on with them, replacing nothing.
      expect((await logon(b)).userToken!.userTokenId).not.toBe('');
      expect(b.logs.filter((l) => /rehashed/.test(l))).toEqual([]);
      expect(a.logs.filter((l) => /rehashed/.test(l))).toHaveLength(2);
    } finally {
      await b.stop(true);
      await a.stop(true);
    }
  });
});

describe('a master key rotation', () => {
  it('a node started with the new master key first re-seals every record it syncs under the new cluster key', async () => {
    const newKey = `mk-new:${randomBytes(32).toString('base64url')}`;
    const both = `${newKey},${deployment.masterKey}`;
    const oldSeal = new ClusterSeal(new MasterKeyRing(parseMasterKeys(deployment.masterKey, 'test')), cluster.name);
    const newSeal = new ClusterSeal(new MasterKeyRing(parseMasterKeys(newKey, 'test')), cluster.name);
    const node = await startNode();
    const jwks = (await call(node.pop.getJwks, node.pop, {})).jwksJson;
    const sealedUnder = async (sealer: ClusterSeal): Promise<number> => {
      let n = 0;
      for (const name of VERSIONED) {
        for (const [key, raw] of await (await hostile.getMap<string, unknown>(name)).entrySet()) {
          try {
            sealer.open({ map: name, kind: kindOf(name, key), key }, raw);
            n++;
          } catch {
            // sealed under another key
          }
        }
      }
      return n;
    };
    const records = await sealedUnder(oldSeal);
    expect(records).toBeGreaterThan(3); // keys and the directory, from the test above and this node
    await node.stop();
    // The rotated node: the new key seals, the old one still opens (its data directory was sealed under it).
    const rotated = await startNode({ dataDir: node.dataDir, masterKey: both });
    expect((await call(rotated.pop.getJwks, rotated.pop, {})).jwksJson).toBe(jwks);
    expect(await sealedUnder(newSeal)).toBe(records);
    expect(await sealedUnder(oldSeal)).toBe(0);
    await rotated.stop(true);
  });
});
