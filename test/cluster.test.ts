/**
 * Cluster mode with real Hazelcast members and real STS processes: two members, two STS nodes sharing
 * sessions, tickets, spent credential JWE ids, keys, secrets and the directory; a member killed under load; a full cluster restart.
 */
import { loadPackageDefinition, credentials, status, type GrpcObject, type ServiceClientConstructor, type Client } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { CompactEncrypt, type CryptoKey, type JWK, SignJWT, compactDecrypt, exportJWK, generateKeyPair, importJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwksCache } from '../clients/ts/src/jwks.js';
import { KeyKind } from '../src/gen/sts/v1/pop.js';
import { appDefaults } from './helpers/directory.js';
import { call, callError } from './helpers/call.js';
import { type Cluster, type Deployment, type StsNode, newDeployment, startCluster, startMember, startStsNode, stopAll } from './helpers/cluster.js';

const ISSUER = 'https://idp.cluster.test';
const AUDIENCE = 'notes-api';

let cluster: Cluster;
let deployment: Deployment;
let a: StsNode;
let b: StsNode;
let idpKey: { privateKey: CryptoKey; publicJwk: JWK };
let rsKey: { privateKey: CryptoKey; publicJwk: JWK };
const app = { id: 'notes', secret: '', tokenA: '', tokenB: '' };

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not true within ${timeoutMs} ms (${String((last as Error)?.message ?? last)})`);
}

function logonApp(node: StsNode): Promise<string> {
  return call(node.session.logonApplication, node.session, { credential: { $case: 'applicationCredential', value: { applicationId: app.id, applicationSecret: app.secret } } }).then(
    (r) => r.applicationToken!.applicationTokenId,
  );
}

function logonUser(node: StsNode, token: string, ticketApplicationId = '') {
  return call(node.session.logonUser, node.session, { credential: { $case: 'userCredential', value: { username: 'zoe', password: 'zoe-password-1' } }, ticketApplicationId }, token);
}

async function subjectToken(sub: string): Promise<string> {
  return new SignJWT({ sub }).setProtectedHeader({ alg: 'ES256', kid: 'idp-1' }).setIssuer(ISSUER).setAudience(AUDIENCE).setIssuedAt().setExpirationTime('10m').sign(idpKey.privateKey);
}

async function userSecret(node: StsNode, token: string, sub: string): Promise<string> {
  const res = await call(node.secret.getUserSecret, node.secret, { subjectToken: await subjectToken(sub) }, token);
  const { plaintext } = await compactDecrypt(res.secretJwe, rsKey.privateKey);
  return Buffer.from(plaintext).toString('base64url');
}

function health(node: StsNode): Promise<string> {
  const pkg = loadPackageDefinition(loadSync(healthProtoPath, { enums: String })) as GrpcObject;
  const Health = (((pkg.grpc as GrpcObject).health as GrpcObject).v1 as GrpcObject).Health as ServiceClientConstructor;
  const c = new Health(node.address, credentials.createInsecure()) as unknown as Client & { check(r: object, o: object, cb: (e: Error | null, r: { status: string }) => void): void };
  return new Promise<string>((resolve) => c.check({ service: '' }, { deadline: Date.now() + 3000 }, (e, r) => resolve(e ? 'ERROR' : r.status))).finally(() => c.close());
}

beforeAll(async () => {
  cluster = await startCluster(2);
  deployment = newDeployment();
  [a, b] = await Promise.all([startStsNode(cluster, deployment), startStsNode(cluster, deployment)]);

  const idp = await generateKeyPair('ES256');
  idpKey = { privateKey: idp.privateKey, publicJwk: { ...(await exportJWK(idp.publicKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' } };
  const rs = await generateKeyPair('ECDH-ES+A256KW');
  rsKey = { privateKey: rs.privateKey, publicJwk: { ...(await exportJWK(rs.publicKey)), kid: 'rs-1', alg: 'ECDH-ES+A256KW', use: 'enc' } };

  // The directory and the registries are written on A only; B learns them from the cluster.
  const admin = deployment.adminKey;
  const created = await call(a.session.createApplication, a.session, { application: appDefaults(app.id, { trusted: true }), applicationSecret: '' }, admin);
  app.secret = created.applicationSecret;
  const user = await call(a.session.createUser, a.session, { user: { uid: '', username: 'zoe', firstName: 'Zoe', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createTime: undefined }, password: 'zoe-password-1' }, admin);
  await call(a.session.addUserRole, a.session, { uid: user.user!.uid, role: { applicationId: app.id, organizationName: 'ACME', roleName: 'writer', roleValue: '' } }, admin);
  await call(a.secret.putIdentityProvider, a.secret, { identityProvider: { issuer: ISSUER, jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [idpKey.publicJwk] }) }, audiences: [AUDIENCE], algorithms: ['ES256'], clockSkew: undefined, subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false } }, admin);
  await call(a.secret.putResourceServer, a.secret, { resourceServer: { resourceServerId: 'notes-rs', credential: { $case: 'applicationId', value: app.id }, audiences: [AUDIENCE], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [rsKey.publicJwk] }) } } }, admin);
  app.tokenA = await logonApp(a);
  app.tokenB = await until('B knows the application', () => logonApp(b));
  await until('B knows the user', async () => (await logonUser(b, app.tokenB)).userToken!.roles.length === 1);
  await until('B knows the resource server', async () => (await call(b.secret.listResourceServers, b.secret, {}, admin)).resourceServers.length === 1);
  await until('B knows the identity provider', async () => (await call(b.secret.listIdentityProviders, b.secret, {}, admin)).identityProviders.length === 1);
}, 240_000);

afterAll(async () => {
  await stopAll();
});

describe('two STS nodes, one state', () => {
  it('a session made on A validates on B, and logout on B ends it on A at once', async () => {
    const s = await logonUser(a, app.tokenA);
    const id = s.userToken!.userTokenId;
    const onB = await call(b.session.validateUserToken, b.session, { token: { $case: 'userTokenId', value: id } }, app.tokenB);
    expect(onB.active).toBe(true);
    expect(onB.userToken!.roles.map((r) => r.roleName)).toEqual(['writer']);
    // The application token made on A works on B too.
    expect((await call(b.session.getApplicationInfo, b.session, {}, app.tokenA)).application!.applicationId).toBe(app.id);
    const refreshed = await call(b.session.refreshUserToken, b.session, { userTokenId: id }, app.tokenB);
    expect(refreshed.userToken!.expireTime!.getTime()).toBeGreaterThanOrEqual(s.userToken!.expireTime!.getTime());
    await call(b.session.releaseUserToken, b.session, { userTokenId: id, endSession: false }, app.tokenB);
    expect((await call(a.session.validateUserToken, a.session, { token: { $case: 'userTokenId', value: id } }, app.tokenA)).active).toBe(false);
    // A refresh after the logout does not bring the session back.
    expect((await callError(call(a.session.refreshUserToken, a.session, { userTokenId: id }, app.tokenA))).code).toBe(status.NOT_FOUND);
    expect((await call(b.session.validateUserToken, b.session, { token: { $case: 'userTokenId', value: id } }, app.tokenB)).active).toBe(false);
  });

  it('a ticket made on A is redeemed exactly once across A and B under concurrent attempts', async () => {
    const s = await logonUser(a, app.tokenA);
    for (let round = 0; round < 3; round++) {
      const { userTicket } = await call(a.session.createUserTicket, a.session, { userTokenId: s.userToken!.userTokenId, ticketApplicationId: '' }, app.tokenA);
      const attempts = Array.from({ length: 40 }, (_, i) => {
        const node = i % 2 === 0 ? a : b;
        return call(node.session.getUserTokenByUserTicket, node.session, { userTicket }, i % 2 === 0 ? app.tokenA : app.tokenB);
      });
      const results = await Promise.allSettled(attempts);
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: number }).code).toBe(status.NOT_FOUND);
      // The redeemer joined the session with a token id of its own, which every node knows.
      const joined = (won[0] as PromiseFulfilledResult<{ userToken?: { userTokenId: string } }>).value.userToken!.userTokenId;
      expect(joined).not.toBe(s.userToken!.userTokenId);
      for (const node of [a, b]) expect((await call(node.session.validateUserToken, node.session, { token: { $case: 'userTokenId', value: joined } }, app.tokenA)).active).toBe(true);
    }
    // Ending the whole session on B ends it on A at once.
    await call(b.session.releaseUserToken, b.session, { userTokenId: s.userToken!.userTokenId, endSession: true }, app.tokenB);
    expect((await call(a.session.validateUserToken, a.session, { token: { $case: 'userTokenId', value: s.userToken!.userTokenId } }, app.tokenA)).active).toBe(false);
  });

  it('a credential JWE logs on once across A and B under concurrent attempts', async () => {
    const keys = new JwksCache(() => call(a.pop.getJwks, a.pop, {}));
    for (let round = 0; round < 3; round++) {
      // A user of its own per round: replays count as failed logons, and must not throttle zoe for the other tests.
      const username = `replay-${round}`;
      const created = { uid: '', username, firstName: 'R', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createTime: undefined };
      await call(a.session.createUser, a.session, { user: created, password: 'replay-password-1' }, deployment.adminKey);
      await until('B knows the user', async () => (await call(b.session.listUsers, b.session, { usernamePrefix: username, pageSize: 1, pageToken: '' }, deployment.adminKey)).users.length === 1);
      const user = await keys.encryptCredential({ username, password: 'replay-password-1' }, { audience: app.id });
      const attempts = Array.from({ length: 10 }, (_, i) => {
        const [node, token] = i % 2 === 0 ? [a, app.tokenA] : [b, app.tokenB];
        return call(node.session.logonUser, node.session, { credential: { $case: 'userCredentialJwe', value: user }, ticketApplicationId: '' }, token);
      });
      const results = await Promise.allSettled(attempts);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      // The others are replays: refused like a wrong password, and counted like one, so the username's
      // throttle may refuse the later ones first.
      for (const r of results) {
        if (r.status === 'rejected') expect((r.reason as { code: number; details: string }).details).toMatch(/^(invalid user credentials|too many failed logons; retry after \d+ s)$/);
      }
    }
  });

  it('a key rotated on A is published by B at once and decrypts on B', async () => {
    const rotated = await call(a.pop.rotateKeys, a.pop, { kinds: [KeyKind.KEY_KIND_ENCRYPTION] }, deployment.adminKey);
    const kid = rotated.created[0]!.kid;
    const jwks = await until('B publishes the new key', async () => {
      const j = JSON.parse((await call(b.pop.getJwks, b.pop, {})).jwksJson) as { keys: JWK[] };
      return j.keys.find((k) => k.kid === kid);
    }, 5000);
    const jwe = await new CompactEncrypt(new TextEncoder().encode('to the new key')).setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid }).encrypt(await importJWK(jwks, 'ECDH-ES+A256KW'));
    const out = await call(b.pop.decrypt, b.pop, { jwe }, app.tokenB);
    expect(Buffer.from(out.plaintext).toString()).toBe('to the new key');
    expect(out.kid).toBe(kid);
  });

  it('the first secret of a subject requested on A and B at the same moment is one secret', async () => {
    const sub = `user-${Date.now()}`;
    const secrets = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? userSecret(a, app.tokenA, sub) : userSecret(b, app.tokenB, sub))));
    expect(new Set(secrets).size).toBe(1);
    expect(await userSecret(b, app.tokenB, sub)).toBe(secrets[0]);
    expect(await userSecret(a, app.tokenA, `${sub}-other`)).not.toBe(secrets[0]);
  });
});

describe('faults', () => {
  it('killing a member under load gives no wrong answer and loses nothing', async () => {
    const subs = Array.from({ length: 5 }, (_, i) => `steady-${i}`);
    const known = new Map<string, string>();
    for (const sub of subs) known.set(sub, await userSecret(a, app.tokenA, sub));
    const session = await logonUser(a, app.tokenA);
    const id = session.userToken!.userTokenId;

    let wrong = 0;
    let ok = 0;
    const unavailable: number[] = [];
    let running = true;
    const worker = async (node: StsNode, token: string) => {
      while (running) {
        const sub = subs[Math.floor(Math.random() * subs.length)]!;
        try {
          if ((await userSecret(node, token, sub)) !== known.get(sub)) wrong++;
          const v = await call(node.session.validateUserToken, node.session, { token: { $case: 'userTokenId', value: id } }, token);
          if (!v.active || v.userToken!.uid !== session.userToken!.uid) wrong++;
          ok++;
        } catch (err) {
          const code = (err as { code?: number }).code;
          if (code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED) unavailable.push(code);
          else wrong++;
        }
      }
    };
    const load = Promise.all([worker(a, app.tokenA), worker(b, app.tokenB), worker(a, app.tokenA), worker(b, app.tokenB)]);
    await new Promise((r) => setTimeout(r, 1500));
    const victim = cluster.members[1]!;
    await victim.kill();
    await new Promise((r) => setTimeout(r, 4000));
    running = false;
    await load;
    expect(wrong).toBe(0);
    expect(ok).toBeGreaterThan(20);
    // Backups were promoted: every secret and the session are still there, on both nodes.
    for (const [sub, secret] of known) {
      expect(await until('secret readable', () => userSecret(b, app.tokenB, sub))).toBe(secret);
    }
    expect((await call(b.session.validateUserToken, b.session, { token: { $case: 'userTokenId', value: id } }, app.tokenB)).active).toBe(true);
    // Bring the cluster back to two members for the next test.
    cluster.members[1] = await startMember(victim.port, cluster.ports, cluster.name);
  }, 120_000);

  it('a full cluster restart loses no key and no secret; nodes are NOT_SERVING while it is down', async () => {
    const kidsBefore = (await call(a.pop.listKeys, a.pop, { kind: KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed: true }, deployment.adminKey)).keys.map((k) => k.kid).sort();
    const sub = 'survives-restart';
    const secret = await userSecret(a, app.tokenA, sub);
    const session = await logonUser(a, app.tokenA);

    for (const m of cluster.members) await m.kill();
    await until('A reports NOT_SERVING', async () => (await health(a)) === 'NOT_SERVING');
    const down = await callError(call(a.session.validateUserToken, a.session, { token: { $case: 'userTokenId', value: session.userToken!.userTokenId } }, app.tokenA, 5000));
    expect([down.code, down.metadata.get('sts-error-code')[0]]).toEqual([status.UNAVAILABLE, 'unavailable']);

    cluster.members = [];
    for (const p of cluster.ports) cluster.members.push(await startMember(p, cluster.ports, cluster.name));
    await until('A serves again', async () => (await health(a)) === 'SERVING', 60_000);
    await until('B serves again', async () => (await health(b)) === 'SERVING', 60_000);

    // Keys and secrets came back from the nodes' local copies; ephemeral sessions are gone.
    const token = await until('application logon after restart', () => logonApp(b), 30_000);
    const kidsAfter = (await call(b.pop.listKeys, b.pop, { kind: KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed: true }, deployment.adminKey)).keys.map((k) => k.kid).sort();
    expect(kidsAfter).toEqual(kidsBefore);
    expect(await userSecret(b, token, sub)).toBe(secret);
    expect((await call(b.session.validateUserToken, b.session, { token: { $case: 'userTokenId', value: session.userToken!.userTokenId } }, token)).active).toBe(false);
  }, 180_000);
});
