/**
 * Cluster mode against an attacker on the member network: a plain hazelcast-client with only the member's
 * address and the cluster name writes to every map STS uses. Two in-process STS nodes on one real member
 * must never believe what they did not write: after each attack GetJwks publishes only STS's own keys, forged
 * credentials are refused, every user secret is the same as before (also after a node restart), the nodes'
 * SQLite copies are unchanged, and the metric counts the refusals. Then a forged lease cannot stall key
 * rotation, and the shipped member configuration has no REST or memcache endpoint.
 */
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { connect } from 'node:net';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { Client as HazelcastClient } from 'hazelcast-client';
import { type CryptoKey, type JWK, SignJWT, calculateJwkThumbprint, compactDecrypt, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterSeal } from '../src/cluster/cluster-seal.js';
import { ManualClock } from '../src/clock.js';
import { MasterKeyRing, parseMasterKeys } from '../src/crypto/master-key.js';
import { KeyKind } from '../src/gen/sts/v1/pop.js';
import { LEGACY_APP_SECRET_SCRYPT, scryptHash } from '../src/session/password.js';
import { refOf } from '../src/session/sessions.js';
import { userSecretId } from '../src/secret/user-secrets.js';
import { call, callError } from './helpers/call.js';
import { type Cluster, type Deployment, newDeployment, startCluster, stopAll, waitFor } from './helpers/cluster.js';
import { appDefaults } from './helpers/directory.js';
import { FAST_ROTATION, type TestSts, startTestSts } from './helpers/server.js';

const MIN = 60_000;
const ISSUER = 'https://idp.sealed.test';
const AUDIENCE = 'notes-api';
const APP = 'notes';
const SUBJECTS = ['alice', 'bob', 'carol'];
const MAPS = ['sts-directory', 'sts-registry', 'sts-key', 'sts-user_secret', 'sts-app_token', 'sts-user_token', 'sts-participant', 'sts-user_ticket', 'sts-throttle', 'sts-credential_jti', 'sts-third_party_jti', 'sts-lock'];

const clock = new ManualClock(Date.now());
let cluster: Cluster;
let deployment: Deployment;
let seal: ClusterSeal;
let hostile: HazelcastClient;
let a: TestSts;
let b: TestSts;
let idpKey: CryptoKey;
let rsKey: CryptoKey;
const app = { secret: '', token: '' };
const user = { uid: '', tokenId: '' };

function startNode(dataDir?: string): Promise<TestSts> {
  return startTestSts({
    clock,
    ...(dataDir ? { dataDir } : {}),
    env: { STS_MASTER_KEY: deployment.masterKey },
    overrides: {
      ...FAST_ROTATION,
      'cluster.enabled': true,
      'cluster.members': cluster.memberList,
      'cluster.name': cluster.name,
      'cluster.leaseMs': 2000,
      'auth.adminKeyFile': deployment.adminKeyFile,
      'metrics.address': '127.0.0.1:0',
      'pop.rotationCheckIntervalMs': 15 * MIN, // only the explicit maintenance below changes keys (the clock is manual)
    },
  });
}

const nodes = (): TestSts[] => [a, b];
const map = (name: string) => hostile.getMap<string, unknown>(name);

/** The refusals a node has counted for a map (sts_cluster_records_rejected_total). */
async function rejected(node: TestSts, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.sts.metricsPort}/metrics`)).text();
  const m = new RegExp(`^sts_cluster_records_rejected_total\\{map="${name}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

async function rejections(): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const name of MAPS) out[name] = await Promise.all(nodes().map((n) => rejected(n, name)));
  return out;
}

/** Waits until every node has counted more refusals for each of `names` than in `before`. */
async function refusedBy(before: Record<string, number[]>, ...names: string[]): Promise<void> {
  return refusedOn(nodes(), before, ...names);
}

async function refusedOn(on: TestSts[], before: Record<string, number[]>, ...names: string[]): Promise<void> {
  await waitFor(`refusals counted for ${names.join(', ')}`, async () => {
    for (const name of names) {
      const now = await Promise.all(on.map((n) => rejected(n, name)));
      if (now.some((v, i) => v <= before[name]![i]!)) return false;
    }
    return true;
  }, 60_000);
}

/** The durable rows of a node's SQLite (keys, user secrets), read beside the running node. */
function durableRows(node: TestSts): Map<string, string> {
  const db = new Database(join(node.dataDir, 'sts.db'), { readonly: true });
  try {
    return new Map((db.prepare('SELECT ns, id, value FROM durable ORDER BY ns, id').all() as { ns: string; id: string; value: string }[]).map((r) => [`${r.ns}/${r.id}`, r.value]));
  } finally {
    db.close();
  }
}

async function subjectToken(sub: string): Promise<string> {
  const now = Math.floor(clock.now() / 1000);
  return new SignJWT({ sub }).setProtectedHeader({ alg: 'ES256', kid: 'idp-1' }).setIssuer(ISSUER).setAudience(AUDIENCE).setIssuedAt(now).setExpirationTime(now + 600).sign(idpKey);
}

async function userSecret(node: TestSts, sub: string): Promise<string> {
  const res = await call(node.secret.getUserSecret, node.secret, { subjectToken: await subjectToken(sub) }, app.token);
  return Buffer.from((await compactDecrypt(res.secretJwe, rsKey)).plaintext).toString('base64url');
}

function logonApp(node: TestSts, id = APP, secret = app.secret) {
  return call(node.session.logonApplication, node.session, { credential: { $case: 'applicationCredential', value: { applicationId: id, applicationSecret: secret } } });
}

interface Snapshot {
  jwks: string;
  secrets: string[];
  rows: Map<string, string>[];
}

async function snapshot(): Promise<Snapshot> {
  const jwks = (await call(a.pop.getJwks, a.pop, {})).jwksJson;
  return { jwks, secrets: await Promise.all(SUBJECTS.map((s) => userSecret(a, s))), rows: nodes().map(durableRows) };
}

/** What every case must leave as it was; and a credential nobody issued is refused. */
async function expectIntact(before: Snapshot): Promise<void> {
  for (const node of nodes()) {
    expect((await callError(call(node.session.getApplicationInfo, node.session, {}, `forged-${randomBytes(16).toString('hex')}`))).code).toBe(status.UNAUTHENTICATED);
    expect((await call(node.pop.getJwks, node.pop, {})).jwksJson).toBe(before.jwks);
    expect(await Promise.all(SUBJECTS.map((s) => userSecret(node, s)))).toEqual(before.secrets);
    expect((await call(node.session.getApplicationInfo, node.session, {}, app.token)).application!.admin).toBe(false);
  }
  expect(nodes().map(durableRows)).toEqual(before.rows);
}

/** The value a node would publish for `key`, as STS seals it (for checking that the grid was repaired). */
function opened(name: string, kind: string, key: string, raw: unknown): string {
  return seal.open({ map: name, kind, key }, raw);
}

beforeAll(async () => {
  cluster = await startCluster(1);
  deployment = newDeployment();
  seal = new ClusterSeal(new MasterKeyRing(parseMasterKeys(deployment.masterKey, 'test')), cluster.name);
  a = await startNode();
  b = await startNode();
  hostile = await HazelcastClient.newHazelcastClient({
    clusterName: cluster.name,
    network: { clusterMembers: [cluster.memberList] },
    connectionStrategy: { connectionRetry: { clusterConnectTimeoutMillis: 30_000 } },
    properties: { 'hazelcast.logging.level': 'OFF' },
  });

  const idp = await generateKeyPair('ES256');
  idpKey = idp.privateKey;
  const rs = await generateKeyPair('ECDH-ES+A256KW');
  rsKey = rs.privateKey;
  const admin = deployment.adminKey;
  app.secret = (await call(a.session.createApplication, a.session, { application: appDefaults(APP), applicationSecret: '' }, admin)).applicationSecret;
  const idpJwk: JWK = { ...(await exportJWK(idp.publicKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' };
  const rsJwk: JWK = { ...(await exportJWK(rs.publicKey)), kid: 'rs-1', alg: 'ECDH-ES+A256KW', use: 'enc' };
  await call(a.secret.putIdentityProvider, a.secret, { identityProvider: { issuer: ISSUER, jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [idpJwk] }) }, audiences: [AUDIENCE], algorithms: ['ES256'], clockSkew: undefined, subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false } }, admin);
  await call(a.secret.putResourceServer, a.secret, { resourceServer: { resourceServerId: 'notes-rs', credential: { $case: 'applicationId', value: APP }, audiences: [AUDIENCE], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [rsJwk] }) } } }, admin);
  app.token = (await logonApp(a)).applicationToken!.applicationTokenId;
  const created = await call(a.session.createUser, a.session, { user: { uid: '', username: 'zoe', firstName: 'Zoe', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createTime: undefined }, password: 'zoe-password-1' }, admin);
  user.uid = created.user!.uid;
  user.tokenId = (await call(a.session.logonUser, a.session, { credential: { $case: 'userCredential', value: { username: 'zoe', password: 'zoe-password-1' } }, ticketApplicationId: '' }, app.token)).userToken!.userTokenId;
  await waitFor('B knows the application and the registries', async () => {
    try {
      await userSecret(b, SUBJECTS[0]!);
      return true;
    } catch {
      return false;
    }
  }, 30_000);
}, 240_000);

afterAll(async () => {
  await hostile?.shutdown();
  for (const n of [a, b]) await n?.stop(true).catch(() => undefined);
  await stopAll();
});

describe('a hostile client on the member network', () => {
  it('(a) an admin application record in sts-directory: refused, and the real record put back', async () => {
    const before = await snapshot();
    const counted = await rejections();
    const dir = await map('sts-directory');
    const evil = { id: 'evil', name: 'evil', secretHash: await scryptHash('evil-secret-evil-secret-1234', LEGACY_APP_SECRET_SCRYPT), tags: [], defaultRoles: [], trusted: true, admin: true, personalFields: true, fullToken: true, minSecurityLevel: 0, idleTimeoutMs: 0, maxLifetimeMs: 0, disabled: false, createdAt: clock.now() };
    await dir.put('app:evil', JSON.stringify({ kind: 'app', app: evil }));
    // The real application made admin, with the attacker's secret; and a value of the sealed form that is not STS's.
    await dir.put(`app:${APP}`, JSON.stringify({ kind: 'app', app: { ...evil, id: APP, name: APP } }));
    await dir.put('app:evil2', `sts1.${randomBytes(96).toString('base64url')}`);
    await refusedBy(counted, 'sts-directory');

    for (const node of nodes()) {
      expect((await callError(logonApp(node, 'evil', 'evil-secret-evil-secret-1234'))).code).toBe(status.UNAUTHENTICATED);
      expect((await callError(logonApp(node, APP, 'evil-secret-evil-secret-1234'))).code).toBe(status.UNAUTHENTICATED);
      expect((await callError(call(node.session.listApplications, node.session, {}, app.token))).code).toBe(status.PERMISSION_DENIED);
      expect((await call(node.session.listApplications, node.session, {}, deployment.adminKey)).applications.map((x) => x.applicationId)).toEqual([APP]);
    }
    // Repair: the nodes put their own record back over the forged one.
    await waitFor('the real application record is back in the grid', async () => {
      const raw = await dir.get(`app:${APP}`);
      return ClusterSeal.looksSealed(raw) && (JSON.parse(JSON.parse(opened('sts-directory', 'app', `app:${APP}`, raw)).v) as { app: { admin: boolean } }).app.admin === false;
    });
    await expectIntact(before);
  });

  it('(b) an application token entry for a token the attacker chose: UNAUTHENTICATED', async () => {
    const before = await snapshot();
    const counted = await rejections();
    const tokens = await map('sts-app_token');
    const chosen = [`chosen-${randomBytes(16).toString('hex')}`, `chosen-${randomBytes(16).toString('hex')}`];
    const record = { applicationId: APP, issuedAt: clock.now(), expiresAt: clock.now() + 60 * MIN, absoluteExpiresAt: clock.now() + 60 * MIN };
    // The form STS wrote before sealing, and the sealed form with a seal of the attacker's.
    await tokens.put(refOf(chosen[0]!), { value: JSON.stringify(record), grp: null, exp: clock.now() + 60 * MIN });
    await tokens.put(refOf(chosen[1]!), { s: `sts1.${randomBytes(96).toString('base64url')}`, grp: null });
    for (const node of nodes()) {
      for (const token of chosen) {
        expect((await callError(call(node.session.getApplicationInfo, node.session, {}, token))).code).toBe(status.UNAUTHENTICATED);
        expect((await callError(call(node.pop.rotateKeys, node.pop, { kinds: [KeyKind.KEY_KIND_SIGNING] }, token))).code).toBe(status.UNAUTHENTICATED);
      }
    }
    // A user token id of the attacker's, made a participant of a real session (the session ids are the keys of
    // sts-user_token, which anyone on the member network can list).
    const participants = await map('sts-participant');
    const [sid] = await (await map('sts-user_token')).keySet();
    const stolen = `chosen-${randomBytes(16).toString('hex')}`;
    await participants.put(refOf(stolen), { value: JSON.stringify({ sid, applicationId: APP, joinedAt: clock.now(), via: 'logon' }), grp: sid, exp: clock.now() + 60 * MIN });
    for (const node of nodes()) {
      expect((await call(node.session.validateUserToken, node.session, { token: { $case: 'userTokenId', value: stolen } }, app.token)).active).toBe(false);
      // The control: the real user's own token id is active.
      expect((await call(node.session.validateUserToken, node.session, { token: { $case: 'userTokenId', value: user.tokenId } }, app.token)).active).toBe(true);
    }
    await refusedBy(counted, 'sts-app_token', 'sts-participant');
    await expectIntact(before);
  });

  it('(c) a key record carrying the attacker\'s public key: GetJwks publishes only STS\'s keys, and tokens it signs are not active', async () => {
    const before = await snapshot();
    const counted = await rejections();
    const keys = await map('sts-key');
    const { primarySigningKid: kid } = await call(a.pop.getJwks, a.pop, {});
    const mine = JSON.parse(before.rows[0]!.get(`key/${kid}`)!) as { publicJwk: JWK };
    const attacker = generateKeyPairSync('ed25519');
    const attackerJwk = attacker.publicKey.export({ format: 'jwk' }) as JWK;
    const ownKid = await calculateJwkThumbprint(attackerJwk);
    await keys.put(kid, JSON.stringify({ ...mine, publicJwk: { ...attackerJwk, kid, use: 'sig', alg: 'EdDSA' } }));
    await keys.put(ownKid, JSON.stringify({ ...mine, kid: ownKid, publicJwk: { ...attackerJwk, kid: ownKid, use: 'sig', alg: 'EdDSA' }, notBefore: clock.now() - MIN }));
    await refusedBy(counted, 'sts-key');

    // A user token JWT the attacker signs, for a real session (claims copied from STS's own JWT of it), under
    // STS's kid and under its own. STS's JWT is the control: it is active.
    const real = (await call(a.session.getUserTokenByUserTokenId, a.session, { userTokenId: user.tokenId }, app.token)).userTokenJwt;
    for (const node of nodes()) expect((await call(node.session.validateUserToken, node.session, { token: { $case: 'userTokenJwt', value: real } }, app.token)).active).toBe(true);
    const payload = real.split('.')[1]!;
    for (const k of [kid, ownKid]) {
      const header = Buffer.from(JSON.stringify({ ...(JSON.parse(Buffer.from(real.split('.')[0]!, 'base64url').toString()) as object), kid: k })).toString('base64url');
      const jwt = `${header}.${payload}.${sign(null, Buffer.from(`${header}.${payload}`), attacker.privateKey).toString('base64url')}`;
      for (const node of nodes()) expect((await call(node.session.validateUserToken, node.session, { token: { $case: 'userTokenJwt', value: jwt } }, app.token)).active).toBe(false);
    }
    await waitFor('the real key record is back in the grid', async () => opened('sts-key', 'key', kid, await keys.get(kid)).includes(mine.publicJwk.x as string));
    await expectIntact(before);
  });
});


describe('a hostile client on the member network, continued', () => {
  it('(d) key and user-secret records with their seal removed or altered: refused, repaired, and a restarted node serves the same', async () => {
    const before = await snapshot();
    const counted = await rejections();
    const keys = await map('sts-key');
    const secrets = await map('sts-user_secret');
    const kids = [...before.rows[0]!.keys()].filter((k) => k.startsWith('key/')).map((k) => k.slice(4));
    const secretIds = SUBJECTS.map((s) => userSecretId(ISSUER, s));
    const flip = (raw: unknown) => {
      const s = String(raw);
      const i = Math.floor(s.length / 2);
      return s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
    };
    // B is down while the grid is changed: it must come back from its own copies, not from the grid.
    await b.stop();
    await keys.put(kids[0]!, flip(await keys.get(kids[0]!)));
    await keys.put(kids[1]!, before.rows[0]!.get(`key/${kids[1]}`)!); // the plaintext record, without a seal
    await secrets.put(secretIds[0]!, flip(await secrets.get(secretIds[0]!)));
    await secrets.put(secretIds[1]!, before.rows[0]!.get(`user_secret/${secretIds[1]}`)!);
    b = await startNode(b.dataDir);
    // A saw every forged value (B, restarted, may find the grid already repaired by A).
    await refusedOn([a], counted, 'sts-key', 'sts-user_secret');
    // Repaired: every record in the grid opens again to the nodes' own copy.
    await waitFor('the grid holds the authentic records again', async () => {
      for (const kid of kids.slice(0, 2)) if (!ClusterSeal.looksSealed(await keys.get(kid))) return false;
      try {
        opened('sts-key', 'key', kids[0]!, await keys.get(kids[0]!));
        opened('sts-user_secret', 'user_secret', secretIds[0]!, await secrets.get(secretIds[0]!));
        return ClusterSeal.looksSealed(await secrets.get(secretIds[1]!));
      } catch {
        return false;
      }
    });
    await expectIntact(before);
  });

  it('(f) an authentic value copied to another key: refused (the seal names its key)', async () => {
    const before = await snapshot();
    const counted = await rejections();
    const keys = await map('sts-key');
    const secrets = await map('sts-user_secret');
    const tokens = await map('sts-app_token');
    const dir = await map('sts-directory');
    const kids = [...before.rows[0]!.keys()].filter((k) => k.startsWith('key/')).map((k) => k.slice(4));
    const [s0, s1] = SUBJECTS.map((s) => userSecretId(ISSUER, s)) as [string, string];
    await keys.put(kids[1]!, await keys.get(kids[0]!));
    await secrets.put(s1, await secrets.get(s0));
    await dir.put('app:copied', await dir.get(`app:${APP}`));
    // The application token's entry under the hash of a token the attacker chose.
    const chosen = `chosen-${randomBytes(16).toString('hex')}`;
    await tokens.put(refOf(chosen), await tokens.get(refOf(app.token)));
    for (const node of nodes()) expect((await callError(call(node.session.getApplicationInfo, node.session, {}, chosen))).code).toBe(status.UNAUTHENTICATED);
    await refusedBy(counted, 'sts-key', 'sts-user_secret', 'sts-directory', 'sts-app_token');
    expect((await call(a.session.listApplications, a.session, {}, deployment.adminKey)).applications.map((x) => x.applicationId)).toEqual([APP]);
    await expectIntact(before);
  });

  it('(g) every durable entry deleted: the nodes publish their copies again and keep serving', async () => {
    const before = await snapshot();
    const durable = ['sts-key', 'sts-user_secret', 'sts-directory', 'sts-registry'];
    // The entries STS wrote (earlier cases left refused values of the attacker's beside them).
    const authentic = async (n: string): Promise<string[]> => {
      const out: string[] = [];
      for (const [key, raw] of await (await map(n)).entrySet()) {
        try {
          opened(n, n === 'sts-key' ? 'key' : n === 'sts-user_secret' ? 'user_secret' : key.slice(0, key.indexOf(':')), key, raw);
          out.push(key);
        } catch {
          // not STS's
        }
      }
      return out.sort();
    };
    const entries = Object.fromEntries(await Promise.all(durable.map(async (n) => [n, await authentic(n)] as const)));
    for (const n of durable) await (await map(n)).clear();
    await waitFor('the durable maps are whole again', async () => {
      for (const n of durable) if (JSON.stringify(await authentic(n)) !== JSON.stringify(entries[n])) return false;
      return true;
    }, 30_000);
    await expectIntact(before);
    for (const node of nodes()) expect((await logonApp(node)).applicationToken!.applicationId).toBe(APP);
    // The same with single deletions (an entry event per record).
    const keys = await map('sts-key');
    for (const kid of await keys.keySet()) await keys.delete(kid);
    await waitFor('the key records are back', async () => JSON.stringify(await authentic('sts-key')) === JSON.stringify(entries['sts-key']));
    await expectIntact(before);
  });

  it('sealed records that the admin RPCs would refuse are refused too (the same validation as the front door)', async () => {
    // Sealed with the deployment's own key, as a node with a bug or an old version might: authentic, not valid.
    const before = await snapshot();
    const counted = await rejections();
    const dir = await map('sts-directory');
    const registry = await map('sts-registry');
    const put = async (name: string, kind: string, key: string, value: unknown) =>
      (await map(name)).put(key, seal.seal({ map: name, kind, key }, JSON.stringify({ r: 1_000_000, v: JSON.stringify(value) })));
    const current = JSON.parse(JSON.parse(opened('sts-directory', 'app', `app:${APP}`, await dir.get(`app:${APP}`))).v) as { app: Record<string, unknown> };
    await put('sts-directory', 'app', `app:${APP}`, { kind: 'app', app: { ...current.app, name: 'notes\u001b[31m', admin: true } });
    await put('sts-directory', 'app', 'app:other', { kind: 'app', app: { ...current.app, id: 'not-other' } });
    const idp = JSON.parse(JSON.parse(opened('sts-registry', 'idp', `idp:${ISSUER}`, await registry.get(`idp:${ISSUER}`))).v) as { record: Record<string, unknown> };
    await put('sts-registry', 'idp', `idp:${ISSUER}`, { record: { ...idp.record, algorithms: ['HS256'] } });
    const kid = (await call(a.pop.getJwks, a.pop, {})).primarySigningKid;
    await put('sts-key', 'key', kid, { ...JSON.parse(before.rows[0]!.get(`key/${kid}`)!), alg: 'none' });
    await refusedBy(counted, 'sts-directory', 'sts-registry', 'sts-key');
    for (const node of nodes()) {
      const listed = await call(node.session.listApplications, node.session, {}, deployment.adminKey);
      expect(listed.applications.map((x) => [x.applicationId, x.name, x.admin])).toEqual([[APP, `${APP} app`, false]]);
      const idps = await call(node.secret.listIdentityProviders, node.secret, {}, deployment.adminKey);
      expect(idps.identityProviders[0]!.algorithms).toEqual(['ES256']);
    }
    await expectIntact(before);
  });

  it('(e) an older authentic version of a key record and of a user secret (rollback): refused', async () => {
    const keys = await map('sts-key');
    const secrets = await map('sts-user_secret');
    const { primarySigningKid: oldKid } = await call(a.pop.getJwks, a.pop, {});
    const s0 = userSecretId(ISSUER, SUBJECTS[0]!);
    const oldKey = await keys.get(oldKid);
    const oldSecret = await secrets.get(s0);
    const secretsBefore = await Promise.all(SUBJECTS.map((s) => userSecret(a, s)));
    // Time passes: keys rotate, the old signing key is erased and user secrets are re-wrapped under the new
    // management key; every one of these writes raises the record's revision.
    await call(a.pop.rotateKeys, a.pop, { kinds: [] }, deployment.adminKey);
    clock.advance(100 * MIN);
    for (const node of nodes()) await node.sts.ring.maintain();
    await a.sts.rewrapUserSecrets();
    await waitFor('the erasure and the re-wrap are in every node\'s copy', () =>
      nodes().every((n) => {
        const rows = durableRows(n);
        return !('sealed' in JSON.parse(rows.get(`key/${oldKid}`)!)) && rows.get(`user_secret/${s0}`) !== JSON.parse(opened('sts-user_secret', 'user_secret', s0, oldSecret)).v;
      }),
    );
    app.token = (await logonApp(a)).applicationToken!.applicationTokenId; // the old one expired with the clock
    const before = await snapshot();
    expect(before.secrets).toEqual(secretsBefore);
    expect(JSON.parse(before.jwks).keys.map((k: JWK) => k.kid)).not.toContain(oldKid);
    const counted = await rejections();
    await keys.put(oldKid, oldKey);
    await secrets.put(s0, oldSecret);
    await refusedBy(counted, 'sts-key', 'sts-user_secret');
    await waitFor('the current versions are back in the grid', async () => {
      try {
        return JSON.parse(opened('sts-key', 'key', oldKid, await keys.get(oldKid))).r > JSON.parse(opened('sts-key', 'key', oldKid, oldKey)).r;
      } catch {
        return false;
      }
    });
    await expectIntact(before);
  });
});

describe('after all of it', () => {
  it('both nodes, restarted one after the other, serve the same keys and user secrets from the same copies', async () => {
    const before = await snapshot();
    await a.stop();
    a = await startNode(a.dataDir);
    await b.stop();
    b = await startNode(b.dataDir);
    await expectIntact(before);
  });
});

describe('leases and the member configuration', () => {
  it('a forged rotation lease counts as expired after its bound (cluster.leaseMs), so rotation goes on, however often it is rewritten', async () => {
    const locks = await map('sts-lock');
    await locks.put('key-ring', `sts1.${randomBytes(64).toString('base64url')}`);
    const err = await callError(call(a.pop.rotateKeys, a.pop, { kinds: [KeyKind.KEY_KIND_SIGNING] }, deployment.adminKey));
    expect(err.code).toBe(status.UNAVAILABLE);
    // The forger writes a new value before the bound ends (the unsealed form this time): the bound runs on.
    clock.advance(1500);
    await locks.put('key-ring', 'attacker');
    expect((await callError(call(a.pop.rotateKeys, a.pop, { kinds: [KeyKind.KEY_KIND_SIGNING] }, deployment.adminKey))).code).toBe(status.UNAVAILABLE);
    clock.advance(600); // 2.1 s since the first unreadable lease: past cluster.leaseMs (2 s)
    await locks.put('key-ring', `sts1.${randomBytes(64).toString('base64url')}`);
    const rotated = await call(a.pop.rotateKeys, a.pop, { kinds: [KeyKind.KEY_KIND_SIGNING] }, deployment.adminKey);
    expect(rotated.created).toHaveLength(1);
    expect(await rejected(a, 'sts-lock')).toBeGreaterThan(0);
  });

  it('entries no table knows, keys that are not strings and values no client can read stop no node from starting', async () => {
    const before = await snapshot();
    // A client with a serializer of its own: its values are bytes the nodes' clients cannot turn into objects.
    class Planted {
      factoryId = 4242;
      classId = 1;
      readData(): void {}
      writeData(out: { writeString(s: string): void }): void {
        out.writeString('planted');
      }
    }
    const planter = await HazelcastClient.newHazelcastClient({
      clusterName: cluster.name,
      network: { clusterMembers: [cluster.memberList] },
      serialization: { dataSerializableFactories: { 4242: () => new Planted() } },
      properties: { 'hazelcast.logging.level': 'OFF' },
    });
    const planted: [string, unknown][] = [
      ['sts-registry', 'no-such-table:x'],
      ['sts-directory', 42],
      ['sts-key', 'planted'],
      ['sts-user_secret', 'planted'],
      ['sts-directory', 'app:planted'],
    ];
    try {
      for (const [name, key] of planted) await (await planter.getMap<unknown, unknown>(name)).put(key, name === 'sts-registry' ? 'y' : new Planted());
      await a.stop();
      a = await startNode(a.dataDir);
      await b.stop();
      b = await startNode(b.dataDir);
      app.token = (await logonApp(a)).applicationToken!.applicationTokenId;
      await expectIntact(before);
    } finally {
      for (const [name, key] of planted) await (await planter.getMap<unknown, unknown>(name)).delete(key);
      await planter.shutdown();
    }
  });

  it('the shipped member configuration answers neither REST nor memcache on the member port', async () => {
    const port = cluster.ports[0]!;
    const exchange = (request: string) =>
      new Promise<string>((resolve) => {
        let got = '';
        const socket = connect(port, '127.0.0.1', () => socket.write(request));
        socket.on('data', (d) => (got += d.toString('latin1')));
        socket.on('error', () => resolve(got));
        socket.on('close', () => resolve(got));
        setTimeout(() => socket.destroy(), 3000);
      });
    expect(await exchange('GET /hazelcast/rest/cluster HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')).not.toMatch(/^HTTP\/1\.[01] 200/);
    expect(await exchange('GET /hazelcast/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')).not.toMatch(/^HTTP\/1\.[01] 200/);
    expect(await exchange('stats\r\n')).not.toMatch(/STAT /);
  });
});
