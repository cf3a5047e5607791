/**
 * The benchmark scenarios: one entry per RPC. The parent (bench/run.ts) uses `name` and `target` to start
 * the right server and label the results; the load process (bench/load.ts) calls `prepare` once, before the
 * warm-up, to build the request(s) and get back the function that issues one call.
 *
 * To benchmark another RPC, add one entry, for example
 *   { name: 'ValidateUserToken', target: 'sts', prepare: async (ctx) => { ...; return stsCall(ctx, SessionServiceService.validateUserToken, () => req, { auth: true }); } }
 */
import { randomBytes } from 'node:crypto';
import { Client, Metadata, credentials, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import { PopServiceService } from '../src/gen/sts/v1/pop.js';
import { JwksCache } from '../clients/ts/src/jwks.js';
import { EchoService } from './echo-def.js';

export type Target = 'echo' | 'sts';

/** Issues one call; `done` gets the error, or null on success. */
export type Invoke = (done: (err: Error | null) => void) => void;

export interface LoadContext {
  /** host:port of the target server. */
  address: string;
  /** Admin bearer token of the STS (read from <dataDir>/admin.token), when the target is the STS. */
  token: string | undefined;
  /** Per-call deadline. */
  deadlineMs: number;
  /** The one client (one HTTP/2 connection) every call of the run goes through. */
  client: Client;
}

export interface Scenario {
  /** RPC name as shown in the tables and accepted by --only (case-insensitive). */
  name: string;
  target: Target;
  /** Runs in the load process before the warm-up: prepares requests, checks one call, returns the invoker. */
  prepare(ctx: LoadContext): Promise<Invoke>;
}

/** One unary call through `ctx.client`, with the admin token when `auth`. */
export function unary<Req, Res>(ctx: LoadContext, method: MethodDefinition<Req, Res>, request: Req, auth: boolean, done: (err: ServiceError | null, res?: Res) => void): void {
  const md = new Metadata();
  if (auth) {
    if (!ctx.token) throw new Error('this scenario needs the STS admin token');
    md.set('authorization', `Bearer ${ctx.token}`);
  }
  ctx.client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, md, { deadline: Date.now() + ctx.deadlineMs }, (err, res) =>
    done(err, res),
  );
}

/** Promise form of `unary`, for preparation and sanity checks. */
export function unaryAsync<Req, Res>(ctx: LoadContext, method: MethodDefinition<Req, Res>, request: Req, auth: boolean): Promise<Res> {
  return new Promise((resolve, reject) => unary(ctx, method, request, auth, (err, res) => (err ? reject(err) : resolve(res!))));
}

/**
 * The usual scenario body: checks that one call succeeds (and `check` accepts its response), then returns an
 * invoker that cycles through `requests`.
 */
async function cycling<Req, Res>(ctx: LoadContext, method: MethodDefinition<Req, Res>, requests: readonly Req[], auth: boolean, check?: (res: Res, req: Req) => void): Promise<Invoke> {
  const first = await unaryAsync(ctx, method, requests[0]!, auth);
  check?.(first, requests[0]!);
  let i = 0;
  return (done) => {
    const req = requests[i]!;
    i = (i + 1) % requests.length;
    unary(ctx, method, req, auth, (err) => done(err));
  };
}

function expect(cond: boolean, what: string): void {
  if (!cond) throw new Error(`sanity check failed: ${what}`);
}

const PAYLOAD_BYTES = 100;
const DECRYPT_JWES = 1000;

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'Echo',
    target: 'echo',
    prepare: (ctx) =>
      cycling(ctx, EchoService.echo, [{ data: randomBytes(PAYLOAD_BYTES) }], false, (res, req) => expect(res.data.equals(req.data), 'echo returns its input')),
  },
  {
    name: 'GetJwks',
    target: 'sts',
    prepare: (ctx) => cycling(ctx, PopServiceService.getJwks, [{}], false, (res) => expect(res.primarySigningKid !== '' && res.jwksJson.startsWith('{'), 'GetJwks returns keys')),
  },
  {
    name: 'Sign',
    target: 'sts',
    prepare: (ctx) =>
      cycling(ctx, PopServiceService.sign, [{ payload: randomBytes(PAYLOAD_BYTES), type: '', contentType: '' }], true, (res) =>
        expect(res.jws.split('.').length === 3, 'Sign returns a compact JWS'),
      ),
  },
  {
    name: 'Decrypt',
    target: 'sts',
    prepare: async (ctx) => {
      // Compact JWEs made the way a client makes them (JwksCache.encryptFor), before the clock starts.
      const cache = new JwksCache(() => unaryAsync(ctx, PopServiceService.getJwks, {}, false));
      const plaintexts = Array.from({ length: DECRYPT_JWES }, () => randomBytes(PAYLOAD_BYTES));
      const jwes: string[] = [];
      for (const p of plaintexts) jwes.push(await cache.encryptFor(p));
      return cycling(
        ctx,
        PopServiceService.decrypt,
        jwes.map((jwe) => ({ jwe })),
        true,
        (res) => expect(res.plaintext.equals(plaintexts[0]!), 'Decrypt returns the plaintext'),
      );
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
