/**
 * Soak with faults (bounded, 127.0.0.1 only): two Hazelcast members and two STS processes serve concurrent
 * logons, validations, ticket handovers and secret releases while keys rotate every few seconds, one STS
 * node restarts and one Hazelcast member is killed. Afterwards every released secret is still identical,
 * no ticket was redeemed twice, and no response was wrong. The counts are printed.
 */
import { status } from '@grpc/grpc-js';
import { type CryptoKey, type JWK, SignJWT, compactDecrypt, exportJWK, generateKeyPair } from 'jose';
import { afterAll, expect, it } from 'vitest';
import { KeyKind } from '../src/gen/sts/v1/pop.js';
import { call } from './helpers/call.js';
import { appDefaults } from './helpers/directory.js';
import { type StsNode, newDeployment, startCluster, startStsNode, stopAll } from './helpers/cluster.js';

const SOAK_MS = 24_000;
const ISSUER = 'https://idp.soak.test';
/** Keys rotate for real during the run: staged for 1 s, then primary. */
const FAST_KEYS = {
  STS_POP_JWKS_MAX_AGE_MS: '1000',
  STS_POP_ENCRYPTION_STAGING_LEAD_MS: '1000',
  STS_POP_SIGNING_STAGING_LEAD_MS: '1000',
  STS_POP_SECRET_STAGING_LEAD_MS: '1000',
};

afterAll(async () => {
  await stopAll();
});

it('serves correctly through key rotations, a node restart and a member loss', async () => {
  const cluster = await startCluster(2);
  const deployment = newDeployment();
  const nodes: StsNode[] = await Promise.all([startStsNode(cluster, deployment, { env: FAST_KEYS }), startStsNode(cluster, deployment, { env: FAST_KEYS })]);
  const admin = deployment.adminKey;
  const idp = await generateKeyPair('ES256');
  const idpJwk: JWK = { ...(await exportJWK(idp.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const rs = await generateKeyPair('ECDH-ES+A256KW');
  const rsJwk: JWK = { ...(await exportJWK(rs.publicKey)), kid: 'r1', alg: 'ECDH-ES+A256KW', use: 'enc' };

  const created = await call(nodes[0]!.session.createApplication, nodes[0]!.session, { application: appDefaults('soak', { trusted: true }), applicationSecret: '' }, admin);
  const secret = created.applicationSecret;
  const users: string[] = [];
  for (let i = 0; i < 3; i++) {
    const u = await call(nodes[0]!.session.createUser, nodes[0]!.session, { user: { uid: '', username: `soaker${i}`, firstName: '', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createTime: undefined }, password: `soak-password-${i}` }, admin);
    users.push(u.user!.uid);
  }
  await call(nodes[0]!.secret.putIdentityProvider, nodes[0]!.secret, { identityProvider: { issuer: ISSUER, jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [idpJwk] }) }, audiences: ['soak-api'], algorithms: ['ES256'], clockSkew: undefined, subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false } }, admin);
  await call(nodes[0]!.secret.putResourceServer, nodes[0]!.secret, { resourceServer: { resourceServerId: 'soak-rs', credential: { $case: 'applicationId', value: 'soak' }, audiences: ['soak-api'], encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [rsJwk] }) } } }, admin);

  const tokens = new Map<StsNode, string>();
  const appToken = async (node: StsNode): Promise<string> => {
    let t = tokens.get(node);
    if (!t) {
      t = (await call(node.session.logonApplication, node.session, { credential: { $case: 'applicationCredential', value: { applicationId: 'soak', applicationSecret: secret } } })).applicationToken!.applicationTokenId;
      tokens.set(node, t);
    }
    return t;
  };
  // Wait until node B has the replicated directory and registries.
  for (const node of nodes) {
    for (let i = 0; ; i++) {
      try {
        await call(node.secret.getUserSecret, node.secret, { subjectToken: await subjectToken('warmup', idp.privateKey) }, await appToken(node));
        break;
      } catch (err) {
        tokens.delete(node);
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  const counts = { requests: 0, ok: 0, wrong: 0, byStatus: {} as Record<string, number>, ticketsRedeemed: 0, ticketsRedeemedTwice: 0, secretsReleased: 0, rotations: 0 };
  const firstSecret = new Map<string, string>();
  const wrong = (what: string) => {
    counts.wrong++;
    console.error('wrong answer:', what);
  };
  const record = async <T>(fn: () => Promise<T>): Promise<T | undefined> => {
    counts.requests++;
    try {
      const v = await fn();
      counts.ok++;
      return v;
    } catch (err) {
      const code = codeOf(err);
      const name = status[code]!;
      counts.byStatus[name] = (counts.byStatus[name] ?? 0) + 1;
      // Refusals while a node restarts or the cluster reshuffles are expected; anything else is a wrong answer.
      if (!(code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === status.CANCELLED)) wrong(`${name}: ${(err as Error).message}`);
      return undefined;
    }
  };
  const pick = () => nodes[Math.floor(Math.random() * nodes.length)]!;
  const end = Date.now() + SOAK_MS;

  const sessionWorker = async (w: number) => {
    while (Date.now() < end) {
      const a = pick();
      const b = pick();
      const i = w % users.length;
      const tokA = await record(() => appToken(a));
      if (!tokA) continue;
      const logon = await record(() =>
        call(a.session.logonUser, a.session, { credential: { $case: 'userCredential', value: { username: `soaker${i}`, password: `soak-password-${i}` } }, ticketApplicationId: 'soak' }, tokA),
      );
      if (!logon) continue;
      if (logon.userToken!.uid !== users[i]) wrong('logon returned another user');
      for (let v = 0; v < 5 && Date.now() < end; v++) {
        const n = pick();
        const tok = await record(() => appToken(n));
        if (!tok) continue;
        const res = await record(() => call(n.session.validateUserToken, n.session, { token: { $case: 'userTokenId', value: logon.userToken!.userTokenId } }, tok));
        if (res && (!res.active || res.userToken!.uid !== users[i])) wrong('validation of a live session failed');
      }
      // Handover: the same ticket redeemed on two nodes at once; at most one may win.
      const tokB = await record(() => appToken(b));
      if (!tokB) continue;
      const tries = await Promise.allSettled([a, b].map((n) => call(n.session.getUserTokenByUserTicket, n.session, { userTicket: logon.userTicket }, tokens.get(n) ?? tokB)));
      const wins = tries.filter((r) => r.status === 'fulfilled').length;
      counts.requests += 2;
      counts.ok += wins;
      if (wins > 1) counts.ticketsRedeemedTwice++;
      if (wins === 1) counts.ticketsRedeemed++;
      for (const r of tries) {
        if (r.status === 'rejected') {
          const code = codeOf(r.reason);
          counts.byStatus[status[code]!] = (counts.byStatus[status[code]!] ?? 0) + 1;
          if (code !== status.NOT_FOUND && code !== status.UNAVAILABLE) wrong(`ticket: ${status[code]}`);
        } else if (r.value.userToken!.uid !== users[i]) wrong('ticket for another user');
      }
    }
  };

  const secretWorker = async () => {
    while (Date.now() < end) {
      const n = pick();
      const sub = `subject-${Math.floor(Math.random() * 20)}`;
      const tok = await record(() => appToken(n));
      if (!tok) continue;
      const res = await record(async () => call(n.secret.getUserSecret, n.secret, { subjectToken: await subjectToken(sub, idp.privateKey) }, tok));
      if (!res) continue;
      const value = Buffer.from((await compactDecrypt(res.secretJwe, rs.privateKey)).plaintext).toString('base64url');
      counts.secretsReleased++;
      const first = firstSecret.get(sub);
      if (first === undefined) firstSecret.set(sub, value);
      else if (first !== value) wrong(`secret of ${sub} changed`);
    }
  };

  const faults = async () => {
    const at = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, end - SOAK_MS + ms - Date.now())));
    const rotator = (async () => {
      while (Date.now() < end - 2000) {
        const n = pick();
        const ok = await record(() => call(n.pop.rotateKeys, n.pop, { kinds: [KeyKind.KEY_KIND_ENCRYPTION, KeyKind.KEY_KIND_SIGNING, KeyKind.KEY_KIND_SECRET] }, admin));
        if (ok) counts.rotations++;
        await new Promise((r) => setTimeout(r, 3000));
      }
    })();
    await at(7000);
    const old = nodes[1]!;
    await old.stop();
    tokens.delete(old);
    nodes[1] = await startStsNode(cluster, deployment, { dataDir: old.dataDir, env: FAST_KEYS });
    await at(14_000);
    await cluster.members[1]!.kill();
    await rotator;
  };

  await Promise.all([sessionWorker(0), sessionWorker(1), sessionWorker(2), secretWorker(), secretWorker(), faults()]);

  // Afterwards: every secret released is still identical, on every node.
  for (const [sub, value] of firstSecret) {
    for (const n of nodes) {
      const tok = await appToken(n);
      const res = await call(n.secret.getUserSecret, n.secret, { subjectToken: await subjectToken(sub, idp.privateKey) }, tok);
      if (Buffer.from((await compactDecrypt(res.secretJwe, rs.privateKey)).plaintext).toString('base64url') !== value) wrong(`secret of ${sub} differs afterwards`);
    }
  }
  console.log('soak counts', JSON.stringify({ ...counts, subjects: firstSecret.size, durationMs: SOAK_MS }));
  expect(counts.wrong).toBe(0);
  expect(counts.ticketsRedeemedTwice).toBe(0);
  // The soak did real work (how much depends on how busy the machine is: these are not throughput goals).
  expect(counts.ticketsRedeemed).toBeGreaterThan(0);
  expect(counts.secretsReleased).toBeGreaterThan(0);
  expect(counts.rotations).toBeGreaterThan(2);
}, 240_000);

/** The status of a failed call; the harness closing the channel of a stopped node counts as UNAVAILABLE. */
function codeOf(err: unknown): number {
  const code = (err as { code?: number }).code;
  if (typeof code === 'number') return code;
  if (/Channel has been shut down/.test((err as Error).message)) return status.UNAVAILABLE;
  return status.UNKNOWN;
}

function subjectToken(sub: string, key: CryptoKey): Promise<string> {
  return new SignJWT({ sub }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(ISSUER).setAudience('soak-api').setIssuedAt().setExpirationTime('5m').sign(key);
}
