/**
 * One-time setup of a benchmark deployment (a separate process, run by bench/run.ts after STS starts), all
 * through the admin RPCs, as an operator would do it:
 *
 * - applications "bench-app" (trusted, so it may Sign and Decrypt; personal fields allowed) and "bench-sso"
 *   (the target of SSO handovers), each logged on once (their application tokens go into the fixture);
 * - users with a password and roles in both applications (4, or --users N), the first 4 logged on twice each
 *   (LogonUser: real sessions);
 * - optionally (--seed-users N) N users without a password, with roles, for the scale part's sessions;
 * - an identity provider with an inline JWKS (an ES256 key made here with jose) and the resource server
 *   "bench-rs" (credential: bench-app; an inline ECDH-ES+A256KW encryption JWKS);
 * - pre-signed subject tokens for 1000 subjects, each presented once with GetUserSecret so every user secret
 *   exists before the measurements (they measure the steady state, not the first creation).
 *
 * With several targets (cluster mode) everything is made through the first node; then the others are polled
 * until they see it all (directory and registries replicate through the cluster).
 *
 *   node --import tsx bench/setup.ts --target 127.0.0.1:P1[,127.0.0.1:P2] --token-file F --out fixture.json [--users N] [--seed-users N]
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Client } from '@grpc/grpc-js';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { SecretServiceService } from '../src/gen/sts/v1/secret.js';
import { Application, SessionServiceService, User } from '../src/gen/sts/v1/session.js';
import { type AppFixture, type Fixture, MAIN_APP, RESOURCE_SERVER, SSO_APP } from './fixture.js';
import { type LoadContext, newClient, unaryAsync } from './scenarios.js';

const USERS = 4;
const SESSIONS_PER_USER = 2;
const SUBJECTS = 1000;
const ISSUER = 'https://idp.bench.example';
const AUDIENCE = 'bench-api';

function log(line: string): void {
  process.stderr.write(`[setup] ${line}\n`);
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not ready within ${timeoutMs} ms${last ? ` (${last instanceof Error ? last.message : String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { target: { type: 'string' }, 'token-file': { type: 'string' }, out: { type: 'string' }, users: { type: 'string' }, 'seed-users': { type: 'string' } },
    strict: true,
  });
  const addresses = (values.target ?? '').split(',');
  if (!addresses.every((a) => /^127\.0\.0\.1:\d+$/.test(a))) throw new Error('--target: expected 127.0.0.1:PORT[,...]');
  if (!values['token-file'] || !values.out) throw new Error('--token-file and --out are required');
  const seedUsers = Number(values['seed-users'] ?? 0);
  const userCount = Number(values.users ?? USERS);
  if (!Number.isSafeInteger(userCount) || userCount < 1) throw new Error('--users: a positive whole number');
  const admin = readFileSync(values['token-file'], 'utf8').trim();
  const clients = addresses.map(newClient);
  const ctx: LoadContext = { addresses, token: admin, fixture: undefined, deadlineMs: 60_000, clients, fullDecode: true };
  const first = clients[0]!;
  const S = SessionServiceService;
  try {
    // Applications, each logged on once.
    const app = async (id: string, extra: Partial<Application>): Promise<AppFixture> => {
      const created = await unaryAsync(ctx, S.createApplication, { application: Application.fromPartial({ applicationId: id, name: id, ...extra }), applicationSecret: '' }, admin, first);
      const logon = await unaryAsync(ctx, S.logonApplication, { credential: { $case: 'applicationCredential', value: { applicationId: id, applicationSecret: created.applicationSecret } } }, undefined, first);
      return { id, secret: created.applicationSecret, token: logon.applicationToken!.applicationTokenId };
    };
    const main = await app(MAIN_APP, { name: 'Benchmark backend', trusted: true, personalFieldsAllowed: true });
    const sso = await app(SSO_APP, { name: 'Benchmark SSO target' });
    log('applications created');

    const role = (uid: string, applicationId: string, roleName: string) =>
      unaryAsync(ctx, S.addUserRole, { uid, role: { applicationId, organizationName: 'ACME', roleName, roleValue: 'true' } }, admin, first);
    const newUser = async (username: string, password: string, roles: [string, string][]) => {
      const res = await unaryAsync(
        ctx,
        S.createUser,
        { user: User.fromPartial({ username, firstName: 'Bench', lastName: username, email: `${username}@bench.example`, cellphone: '+4790000000', personRef: `ref-${username}` }), password },
        admin,
        first,
      );
      const uid = res.user!.uid;
      for (const [a, r] of roles) await role(uid, a, r);
      return uid;
    };

    // Users with a password (an Argon2id hash each, on the server's thread pool) and real sessions.
    const users = await mapLimit(Array.from({ length: userCount }, (_, i) => i), 4, async (i) => {
      const username = `bench-user-${i}`;
      const password = randomBytes(12).toString('base64url');
      const uid = await newUser(username, password, [[MAIN_APP, 'reader'], [MAIN_APP, 'writer'], [SSO_APP, 'viewer']]);
      return { uid, username, password };
    });
    const sessions = await mapLimit(
      users.slice(0, USERS).flatMap((u) => Array.from({ length: SESSIONS_PER_USER }, () => u)),
      4,
      async (u) => {
        const res = await unaryAsync(ctx, S.logonUser, { credential: { $case: 'userCredential', value: { username: u.username, password: u.password } }, ticketApplicationId: '' }, main.token, first);
        return { tokenId: res.userToken!.userTokenId, uid: u.uid };
      },
    );
    log(`${users.length} users, ${sessions.length} sessions (LogonUser)`);

    const seedUids = await mapLimit(Array.from({ length: seedUsers }, (_, i) => i), 16, (i) =>
      newUser(`bench-seed-${String(i).padStart(6, '0')}`, '', [[MAIN_APP, 'reader'], [MAIN_APP, 'writer']]),
    );
    if (seedUsers > 0) log(`${seedUids.length} users without a password for the scale part`);

    // Identity provider (inline JWKS) and resource server (bench-app, inline encryption JWKS).
    const idp = await generateKeyPair('ES256', { extractable: true });
    const idpJwk = { ...(await exportJWK(idp.publicKey)), kid: 'bench-idp-1', alg: 'ES256', use: 'sig' };
    await unaryAsync(
      ctx,
      SecretServiceService.putIdentityProvider,
      { identityProvider: { issuer: ISSUER, jwksSource: { $case: 'jwksJson', value: JSON.stringify({ keys: [idpJwk] }) }, audiences: [AUDIENCE], algorithms: ['ES256'], subjectClaim: '', securityLevel: 0, applicationAudiences: [], tokensWithoutJti: false, acceptTokensWithoutIat: false } },
      admin,
      first,
    );
    const rs = await generateKeyPair('ECDH-ES+A256KW', { extractable: true });
    const rsJwk = { ...(await exportJWK(rs.publicKey)), kid: 'bench-rs-enc-1', alg: 'ECDH-ES+A256KW', use: 'enc' };
    await unaryAsync(
      ctx,
      SecretServiceService.putResourceServer,
      {
        resourceServer: {
          resourceServerId: RESOURCE_SERVER,
          credential: { $case: 'applicationId', value: MAIN_APP },
          audiences: [AUDIENCE],
          encryptionKeySource: { $case: 'jwksJson', value: JSON.stringify({ keys: [rsJwk] }) },
        },
      },
      admin,
      first,
    );

    // Subject tokens, valid for 3 hours, and every subject's secret made once.
    const now = Math.floor(Date.now() / 1000);
    const subjects = await mapLimit(Array.from({ length: SUBJECTS }, (_, i) => `subject-${String(i).padStart(4, '0')}`), 8, async (subject) => ({
      subject,
      token: await new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: 'bench-idp-1', typ: 'JWT' })
        .setIssuer(ISSUER)
        .setSubject(subject)
        .setAudience(AUDIENCE)
        .setIssuedAt(now)
        .setExpirationTime(now + 3 * 3600)
        .sign(idp.privateKey),
    }));
    await mapLimit(subjects, 16, (s) => unaryAsync(ctx, SecretServiceService.getUserSecret, { subjectToken: s.token }, main.token, first));
    log(`identity provider, resource server, ${subjects.length} subjects with their secrets`);

    // Cluster mode: every other node must see the directory, the registries and the sessions.
    for (const client of clients.slice(1)) {
      await until('other node: application, identity provider and resource server', 60_000, async () => {
        await unaryAsync(ctx, SecretServiceService.getUserSecret, { subjectToken: subjects[0]!.token }, main.token, client);
        const v = await unaryAsync(ctx, S.validateUserToken, { token: { $case: 'userTokenId', value: sessions[0]!.tokenId } }, main.token, client);
        return v.active && (v.userToken?.roles.length ?? 0) > 0 ? true : undefined;
      });
      await until('other node: every user', 120_000, async () => {
        let seen = 0;
        let pageToken = '';
        do {
          const page = await unaryAsync(ctx, S.listUsers, { usernamePrefix: 'bench-', pageSize: 1000, pageToken }, admin, client);
          seen += page.users.length;
          pageToken = page.nextPageToken;
        } while (pageToken);
        return seen >= users.length + seedUids.length ? true : undefined;
      });
    }
    if (clients.length > 1) log('the other nodes see everything');

    const fixture: Fixture = {
      apps: { main, sso },
      users,
      sessions,
      issuer: ISSUER,
      audience: AUDIENCE,
      subjects,
      rsPrivateJwk: await exportJWK(rs.privateKey),
      seedUids,
    };
    writeFileSync(values.out, JSON.stringify(fixture));
  } finally {
    for (const c of clients as Client[]) c.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`setup: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
