/**
 * The benchmark scenarios: one entry per RPC (or per pair of RPCs that make one operation, like the SSO
 * handover). The parent (bench/run.ts) uses `name`, `target`, `section` and the other settings to start the
 * right server and label the results; the load process (bench/load.ts) calls `prepare` once, before the
 * warm-up, to build the request(s), check one call on every target, and get back the function that issues
 * one operation.
 *
 * The STS scenarios use the fixture made by bench/setup.ts (applications, users, sessions, an identity
 * provider, a resource server, subject tokens): the application token of the trusted application "bench-app"
 * is the bearer of the session, secret and PopService calls, as a backend would send it.
 *
 * To benchmark another RPC, add one entry, for example
 *   { name: 'RefreshUserToken', target: 'sts', prepare: (ctx) => cycling(ctx, SessionServiceService.refreshUserToken, reqs, appToken(ctx), check) }
 */
import { createPrivateKey, randomBytes } from 'node:crypto';
import { Client, Metadata, credentials, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import { compactDecrypt } from 'jose';
import { PopServiceService } from '../src/gen/sts/v1/pop.js';
import { SecretServiceService } from '../src/gen/sts/v1/secret.js';
import { type LogonUserRequest, SessionServiceService, type ValidateUserTokenRequest } from '../src/gen/sts/v1/session.js';
import type { UserToken } from '../src/gen/sts/v1/common.js';
import { JwksCache } from '../clients/ts/src/jwks.js';
import type { Invoke } from './closed-loop.js';
import { EchoService } from './echo-def.js';
import { type Fixture, MAIN_APP, SSO_APP } from './fixture.js';

export type Target = 'echo' | 'sts';

/** Issues one operation (the closed loop's type). */
export type { Invoke };

export interface LoadContext {
  /** host:port of each target server; calls go round-robin over them (one client each). */
  addresses: string[];
  /** Admin bearer token of the STS (read from the token file), when the target is the STS. */
  token: string | undefined;
  /** Test data made by bench/setup.ts, when the target is the STS. */
  fixture: Fixture | undefined;
  /** Per-call deadline. */
  deadlineMs: number;
  /** One client (one HTTP/2 connection) per address; every call of the run goes through one of them. */
  clients: Client[];
  /**
   * Measured calls encode every request and decode every response with the generated code, as an
   * application would. Default (false): requests are encoded once in `prepare` and responses are only
   * checked on the wire (the first call on every target is decoded and checked in full), so the load
   * generator spends its CPU on the calls, not on protobuf; the server does exactly the same work.
   */
  fullDecode: boolean;
}

export interface Scenario {
  /** Name as shown in the tables and accepted by --only (case-insensitive). */
  name: string;
  target: Target;
  /** What one operation is, when it is not one call: e.g. a handover is two calls. */
  unit?: { name: string; calls: number };
  /** 'logon': password-hash dominated; reported in its own table, at its own concurrency and duration. */
  section?: 'main' | 'logon';
  /** Fixed concurrency (instead of --concurrency) and measured duration for this scenario. */
  concurrency?: number;
  durationMs?: number;
  /** Also measured against STS in cluster mode (--cluster), one node and two. */
  cluster?: boolean;
  /** Runs in the load process before the warm-up: prepares requests, checks a call, returns the invoker. */
  prepare(ctx: LoadContext): Promise<Invoke>;
}

let nextClient = 0;

/** One unary call through one of `ctx.clients` (round-robin, or `client` when given), with `bearer` when set. */
export function unary<Req, Res>(
  ctx: LoadContext,
  method: MethodDefinition<Req, Res>,
  request: Req,
  bearer: string | undefined,
  done: (err: ServiceError | null, res?: Res) => void,
  client?: Client,
): void {
  const md = new Metadata();
  if (bearer) md.set('authorization', `Bearer ${bearer}`);
  const c = client ?? ctx.clients[(nextClient = (nextClient + 1) % ctx.clients.length)]!;
  c.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, md, { deadline: Date.now() + ctx.deadlineMs }, (err, res) => done(err, res));
}

/** Promise form of `unary`, for preparation and sanity checks. */
export function unaryAsync<Req, Res>(ctx: LoadContext, method: MethodDefinition<Req, Res>, request: Req, bearer: string | undefined, client?: Client): Promise<Res> {
  return new Promise((resolve, reject) => unary(ctx, method, request, bearer, (err, res) => (err ? reject(err) : resolve(res!)), client));
}

/** The same method with bytes in and bytes out (requests encoded beforehand, responses not decoded). */
export function rawMethod<Req, Res>(method: MethodDefinition<Req, Res>): MethodDefinition<Buffer, Buffer> {
  return { ...method, requestSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } as unknown as MethodDefinition<Buffer, Buffer>;
}

/**
 * The usual scenario body: checks that one call on every target succeeds (and `check` accepts its decoded
 * response), then returns an invoker that cycles through `requests`. Unless `ctx.fullDecode`, the measured
 * calls send pre-encoded requests and `wireCheck` (when given) checks each response's bytes.
 */
async function cycling<Req, Res>(
  ctx: LoadContext,
  method: MethodDefinition<Req, Res>,
  requests: readonly Req[],
  bearer: string | undefined,
  check?: (res: Res, req: Req) => void | Promise<void>,
  wireCheck?: (res: Buffer, req: Buffer) => boolean,
): Promise<Invoke> {
  for (const [k, client] of ctx.clients.entries()) {
    const req = requests[k % requests.length]!;
    await check?.(await unaryAsync(ctx, method, req, bearer, client), req);
  }
  let i = 0;
  if (ctx.fullDecode) {
    return (done) => {
      const req = requests[i]!;
      i = (i + 1) % requests.length;
      unary(ctx, method, req, bearer, (err) => done(err));
    };
  }
  const raw = rawMethod(method);
  const wire = requests.map((r) => method.requestSerialize(r));
  return (done) => {
    const req = wire[i]!;
    i = (i + 1) % wire.length;
    unary(ctx, raw, req, bearer, (err, res) => done(err ?? (wireCheck && !wireCheck(res!, req) ? new Error(`${method.path}: unexpected response`) : null)));
  };
}

/** ValidateUserTokenResponse on the wire starts with field 1 (active) = true. */
const ACTIVE_TRUE = (res: Buffer): boolean => res[0] === 0x08 && res[1] === 0x01;
const NON_EMPTY = (res: Buffer): boolean => res.length > 0;

function expect(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Error(`sanity check failed: ${what}`);
}

function fixture(ctx: LoadContext): Fixture {
  if (!ctx.fixture) throw new Error('this scenario needs the fixture made by bench/setup.ts (--fixture)');
  return ctx.fixture;
}

/** The application token of the trusted bench application; the admin key when there is no fixture. */
function appToken(ctx: LoadContext): string | undefined {
  return ctx.fixture?.apps.main.token ?? ctx.token;
}

/** A user token as the main application sees it: the session's user, with the roles set up for it. */
function checkUserToken(t: UserToken | undefined, uid: string, applicationId: string, what: string): asserts t is UserToken {
  expect(t !== undefined, `${what} returns a user token`);
  expect(t.uid === uid, `${what} returns the session's user`);
  expect(t.applicationId === applicationId, `${what} returns the view of ${applicationId}`);
  expect(t.roles.length > 0 && !t.anonymised, `${what} returns the user's roles`);
}

const PAYLOAD_BYTES = 100;
const DECRYPT_JWES = 1000;

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'Echo',
    target: 'echo',
    prepare: (ctx) =>
      cycling(
        ctx,
        EchoService.echo,
        [{ data: randomBytes(PAYLOAD_BYTES) }],
        undefined,
        (res, req) => expect(res.data.equals(req.data), 'echo returns its input'),
        (res, req) => res.equals(req),
      ),
  },
  {
    name: 'GetJwks',
    target: 'sts',
    cluster: true,
    prepare: (ctx) =>
      cycling(ctx, PopServiceService.getJwks, [{}], undefined, (res) => expect(res.primarySigningKid !== '' && res.jwksJson.startsWith('{'), 'GetJwks returns keys'), NON_EMPTY),
  },
  {
    name: 'ValidateUserToken',
    target: 'sts',
    cluster: true,
    prepare: (ctx) => {
      const fx = fixture(ctx);
      const requests: ValidateUserTokenRequest[] = fx.sessions.map((s) => ({ token: { $case: 'userTokenId', value: s.tokenId } }));
      const session = new Map(requests.map((r, i) => [r, fx.sessions[i]!]));
      return cycling(ctx, SessionServiceService.validateUserToken, requests, fx.apps.main.token, (res, req) => {
        const s = session.get(req)!;
        expect(res.active, 'ValidateUserToken: the session is active');
        checkUserToken(res.userToken, s.uid, MAIN_APP, 'ValidateUserToken');
        expect(res.userToken.userTokenId === s.tokenId, 'ValidateUserToken returns the token id it was given');
      }, ACTIVE_TRUE);
    },
  },
  {
    name: 'GetUserTokenByUserTokenId',
    target: 'sts',
    cluster: true,
    prepare: (ctx) => {
      const fx = fixture(ctx);
      const uid = new Map(fx.sessions.map((s) => [s.tokenId, s.uid]));
      return cycling(ctx, SessionServiceService.getUserTokenByUserTokenId, fx.sessions.map((s) => ({ userTokenId: s.tokenId })), fx.apps.main.token, (res, req) => {
        checkUserToken(res.userToken, uid.get(req.userTokenId)!, MAIN_APP, 'GetUserTokenByUserTokenId');
        expect(res.userTokenJwt.split('.').length === 3, 'GetUserTokenByUserTokenId returns a signed JWT');
      }, NON_EMPTY);
    },
  },
  {
    name: 'Handover',
    target: 'sts',
    cluster: true,
    unit: { name: 'handover', calls: 2 },
    prepare: async (ctx) => {
      // One SSO handover: bench-app makes a ticket for bench-sso (CreateUserTicket), bench-sso redeems it
      // (GetUserTokenByUserTicket). With two nodes the two calls usually land on different nodes.
      const fx = fixture(ctx);
      const handover = (s: { tokenId: string }, done: (err: ServiceError | null, token?: UserToken) => void): void =>
        unary(ctx, SessionServiceService.createUserTicket, { userTokenId: s.tokenId, ticketApplicationId: SSO_APP }, fx.apps.main.token, (err, res) => {
          if (err) return done(err);
          unary(ctx, SessionServiceService.getUserTokenByUserTicket, { userTicket: res!.userTicket }, fx.apps.sso.token, (err2, res2) => done(err2, res2?.userToken));
        });
      for (let k = 0; k < Math.max(2, ctx.clients.length); k++) {
        const s = fx.sessions[k % fx.sessions.length]!;
        const token = await new Promise<UserToken | undefined>((resolve, reject) => handover(s, (err, t) => (err ? reject(err) : resolve(t))));
        checkUserToken(token, s.uid, SSO_APP, 'Handover (GetUserTokenByUserTicket)');
      }
      let i = 0;
      if (ctx.fullDecode) {
        return (done) => {
          const s = fx.sessions[i]!;
          i = (i + 1) % fx.sessions.length;
          handover(s, (err) => done(err));
        };
      }
      // The ticket has to be read from the first response; the redeemed user token is checked on the wire.
      const redeem = rawMethod(SessionServiceService.getUserTokenByUserTicket);
      const encode = SessionServiceService.getUserTokenByUserTicket.requestSerialize;
      return (done) => {
        const s = fx.sessions[i]!;
        i = (i + 1) % fx.sessions.length;
        unary(ctx, SessionServiceService.createUserTicket, { userTokenId: s.tokenId, ticketApplicationId: SSO_APP }, fx.apps.main.token, (err, res) => {
          if (err) return done(err);
          unary(ctx, redeem, encode({ userTicket: res!.userTicket }), fx.apps.sso.token, (err2, res2) => done(err2 ?? (NON_EMPTY(res2!) ? null : new Error('empty redemption response'))));
        });
      };
    },
  },
  {
    name: 'GetUserSecret',
    target: 'sts',
    cluster: true,
    prepare: async (ctx) => {
      const fx = fixture(ctx);
      const rsKey = createPrivateKey({ key: fx.rsPrivateJwk as import('node:crypto').JsonWebKey, format: 'jwk' });
      const subject = new Map(fx.subjects.map((s) => [s.token, s.subject]));
      return cycling(ctx, SecretServiceService.getUserSecret, fx.subjects.map((s) => ({ subjectToken: s.token })), fx.apps.main.token, async (res, req) => {
        expect(res.subject === subject.get(req.subjectToken) && res.issuer === fx.issuer, 'GetUserSecret returns the subject and issuer of the token');
        const { plaintext } = await compactDecrypt(res.secretJwe, rsKey);
        expect(plaintext.length === 32, 'GetUserSecret returns a 32-byte secret encrypted to the resource server');
        expect(res.createTime !== undefined && res.createTime.getTime() < Date.now() - 50, 'GetUserSecret returns a secret made before the run (steady state)');
      }, NON_EMPTY);
    },
  },
  {
    name: 'Sign',
    target: 'sts',
    prepare: (ctx) =>
      cycling(ctx, PopServiceService.sign, [{ payload: randomBytes(PAYLOAD_BYTES), type: '', contentType: '' }], appToken(ctx), (res) => expect(res.jws.split('.').length === 3, 'Sign returns a compact JWS'), NON_EMPTY),
  },
  {
    name: 'Decrypt',
    target: 'sts',
    prepare: async (ctx) => {
      // Compact JWEs made the way a client makes them (JwksCache.encryptFor), before the clock starts.
      const cache = new JwksCache(() => unaryAsync(ctx, PopServiceService.getJwks, {}, undefined));
      const plaintexts = Array.from({ length: DECRYPT_JWES }, () => randomBytes(PAYLOAD_BYTES));
      const jwes: string[] = [];
      for (const p of plaintexts) jwes.push(await cache.encryptFor(p));
      const byJwe = new Map(jwes.map((jwe, i) => [jwe, plaintexts[i]!]));
      return cycling(
        ctx,
        PopServiceService.decrypt,
        jwes.map((jwe) => ({ jwe })),
        appToken(ctx),
        (res, req) => expect(res.plaintext.equals(byJwe.get(req.jwe)!), 'Decrypt returns the plaintext'),
        NON_EMPTY,
      );
    },
  },
  {
    name: 'LogonApplication',
    target: 'sts',
    section: 'logon',
    concurrency: 4,
    durationMs: 3000,
    prepare: (ctx) => {
      const { id, secret } = fixture(ctx).apps.main;
      return cycling(
        ctx,
        SessionServiceService.logonApplication,
        [{ credential: { $case: 'applicationCredential' as const, value: { applicationId: id, applicationSecret: secret } } }],
        undefined,
        (res) => expect(res.applicationToken?.applicationId === id && res.applicationToken.applicationTokenId.length > 0, 'LogonApplication returns an application token'),
      );
    },
  },
  {
    name: 'LogonUser',
    target: 'sts',
    section: 'logon',
    concurrency: 4,
    durationMs: 3000,
    prepare: (ctx) => {
      const fx = fixture(ctx);
      const requests: LogonUserRequest[] = fx.users.map((u) => ({ credential: { $case: 'userCredential', value: { username: u.username, password: u.password } }, ticketApplicationId: '' }));
      const user = new Map(requests.map((r, i) => [r, fx.users[i]!]));
      return cycling(ctx, SessionServiceService.logonUser, requests, fx.apps.main.token, (res, req) => {
        checkUserToken(res.userToken, user.get(req)!.uid, MAIN_APP, 'LogonUser');
        expect(res.userToken.userTokenId.length > 0, 'LogonUser returns a new token id');
      });
    },
  },
];

export function scenario(name: string): Scenario {
  const s = SCENARIOS.find((x) => x.name.toLowerCase() === name.toLowerCase());
  if (!s) throw new Error(`unknown RPC "${name}"; known: ${SCENARIOS.map((x) => x.name).join(', ')}`);
  return s;
}

export function newClient(address: string): Client {
  return new Client(address, credentials.createInsecure());
}
