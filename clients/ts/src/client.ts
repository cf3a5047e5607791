/**
 * `createStsClient`: the generated ts-proto stubs behind promise-based methods, with what every caller of STS
 * otherwise writes by hand:
 *
 * - the application logs on (LogonApplication) on first use when `credentials` are given, and the
 *   application token is renewed (RenewApplicationToken) at `renewAt` (80%) of its lifetime; a renewal
 *   answered UNAUTHENTICATED logs on again, and so does the timer once STS renews the token by less than a
 *   lifetime (it has reached its absolute lifetime, `session.applicationTokenMaxLifetimeMs`);
 * - `authorization: Bearer <application token>` on every call but the anonymous ones (LogonApplication,
 *   GetJwks); a call refused because the token is no longer valid (`sts-error-code: unauthenticated`) logs on
 *   again and is sent once more, since the server did nothing with it;
 * - a deadline on every call (`defaultDeadlineMs`, per call `deadlineMs`), covering its retries;
 * - idempotent reads only (GetJwks, ValidateUserToken, ValidateApplicationToken, GetUserTokenByUserTokenId,
 *   ListKeys, GetApplicationInfo, Verify) are retried on UNAVAILABLE, with exponential backoff and jitter
 *   (at least `retry-after-ms` when the server sent one);
 * - every failure is a {@link StsClientError}: the gRPC status, the stable STS code from the trailing
 *   metadata `sts-error-code`, and `retry-after-ms`;
 * - `keys`, a {@link JwksCache} bound to GetJwks, for `encryptFor` and `verifyToken`;
 * - requests are partial objects: what a message's `fromPartial` accepts (left-out fields get their proto3
 *   defaults), so adding a field to a request never breaks a caller's code.
 */
import {
  type ChannelCredentials,
  Client,
  type ClientOptions,
  Metadata,
  type ServiceError,
  credentials as grpcCredentials,
  status,
} from '@grpc/grpc-js';
import type { DeepPartial } from './gen/sts/v1/common.js';
import { PopServiceDefinition } from './gen/sts/v1/pop.js';
import { SecretServiceDefinition } from './gen/sts/v1/secret.js';
import { SessionServiceDefinition } from './gen/sts/v1/session.js';
import { JwksCache, type JwksCacheOptions } from './jwks.js';

/** Methods retried on UNAVAILABLE: they read, so sending them twice changes nothing. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  '/sts.v1.PopService/GetJwks',
  '/sts.v1.PopService/ListKeys',
  '/sts.v1.PopService/Verify',
  '/sts.v1.SessionService/ValidateUserToken',
  '/sts.v1.SessionService/ValidateApplicationToken',
  '/sts.v1.SessionService/GetUserTokenByUserTokenId',
  '/sts.v1.SessionService/GetApplicationInfo',
]);

const LOGON_APPLICATION = '/sts.v1.SessionService/LogonApplication';
const RENEW_APPLICATION_TOKEN = '/sts.v1.SessionService/RenewApplicationToken';
/** Methods that need no credential. */
const ANONYMOUS_METHODS: ReadonlySet<string> = new Set([LOGON_APPLICATION, '/sts.v1.PopService/GetJwks']);

/** A failed STS call. */
export class StsClientError extends Error {
  override readonly name = 'StsClientError';
  /** The gRPC status code (`status` of @grpc/grpc-js). */
  readonly code: status;
  /**
   * The stable STS error code from the trailing metadata `sts-error-code` (for example `invalid_credentials`).
   * When the server sent none (transport failures, deadlines, UNIMPLEMENTED), the gRPC status name in lower
   * case (`unavailable`, `deadline_exceeded`, ...).
   */
  readonly stsCode: string;
  /** From `retry-after-ms`, where the server says when retrying may succeed. */
  readonly retryAfterMs?: number;
  /** The status message as the server wrote it. */
  readonly details: string;
  /** Full method path, for example "/sts.v1.SessionService/LogonUser". */
  readonly method: string;
  /** The trailing metadata. */
  readonly metadata: Metadata;

  constructor(init: { code: status; details: string; stsCode?: string; retryAfterMs?: number; method: string; metadata?: Metadata; cause?: unknown }) {
    const stsCode = init.stsCode || (status[init.code] ?? 'unknown').toLowerCase();
    super(`${init.method}: ${status[init.code] ?? init.code} (${stsCode}): ${init.details}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = init.code;
    this.stsCode = stsCode;
    if (init.retryAfterMs !== undefined) this.retryAfterMs = init.retryAfterMs;
    this.details = init.details;
    this.method = init.method;
    this.metadata = init.metadata ?? new Metadata();
  }

  /** Wraps a grpc-js error. */
  static fromServiceError(err: ServiceError, method: string): StsClientError {
    const md = err.metadata ?? new Metadata();
    const stsCode = md.get('sts-error-code')[0];
    const retry = Number(md.get('retry-after-ms')[0]);
    return new StsClientError({
      code: err.code ?? status.UNKNOWN,
      details: err.details ?? err.message,
      ...(typeof stsCode === 'string' ? { stsCode } : {}),
      ...(Number.isFinite(retry) && retry >= 0 ? { retryAfterMs: retry } : {}),
      method,
      metadata: md,
      cause: err,
    });
  }
}

/** Per-call options. */
export interface StsCallOptions {
  /** Deadline of this call, retries included. Default: the client's `defaultDeadlineMs`. */
  deadlineMs?: number;
  /** Send this credential (an application token or an admin key) instead of the client's application token. */
  bearer?: string;
  /** Extra request metadata. */
  metadata?: Metadata;
}

/** What the client needs of a ts-proto message type (`MessageFns`): untyped, for the call machinery. */
interface MessageType {
  encode(message: never): { finish(): Uint8Array };
  decode(input: Uint8Array): unknown;
  fromPartial(object: never): unknown;
}
/** One unary method as the client calls it: the full path and how to (de)serialize. */
type UnaryDefinition = { path: string; serialize: (request: unknown) => Buffer; deserialize: (bytes: Buffer) => unknown };
/** A ts-proto generic service definition (outputServices=generic-definitions). */
type ServiceDefinition = { fullName: string; methods: Record<string, { name: string; requestType: MessageType; responseType: MessageType }> };

/**
 * The promise form of a ts-proto generic service definition: `method(request, options?) => Promise<response>`.
 * A request may leave out any field, as `fromPartial` allows (proto3 defaults fill them in).
 */
export type PromiseService<D extends { methods: object }> = {
  [K in keyof D['methods']]: D['methods'][K] extends { requestType: { fromPartial: (...args: never[]) => infer Req }; responseType: { decode: (...args: never[]) => infer Res } }
    ? (request: DeepPartial<Req>, options?: StsCallOptions) => Promise<Res>
    : never;
};

export type PopApi = PromiseService<typeof PopServiceDefinition>;
export type SessionApi = PromiseService<typeof SessionServiceDefinition>;
export type SecretApi = PromiseService<typeof SecretServiceDefinition>;

/** The unary definitions of a service, by method name (lowerCamel), with partial requests completed. */
function unaryDefinitions(service: ServiceDefinition): Record<string, UnaryDefinition> {
  const out: Record<string, UnaryDefinition> = {};
  for (const [name, m] of Object.entries(service.methods)) {
    const req = m.requestType as unknown as { encode(message: unknown): { finish(): Uint8Array }; fromPartial(object: unknown): unknown };
    out[name] = {
      path: `/${service.fullName}/${m.name}`,
      serialize: (request) => Buffer.from(req.encode(req.fromPartial(request ?? {})).finish()),
      deserialize: (bytes) => m.responseType.decode(bytes),
    };
  }
  return out;
}
const POP = unaryDefinitions(PopServiceDefinition);
const SESSION = unaryDefinitions(SessionServiceDefinition);
const SECRET = unaryDefinitions(SecretServiceDefinition);

/** Runs the renewal timer. The default uses real timers (unref'd); tests pass one they fire themselves. */
export interface StsScheduler {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** What the client did on its own, for logs and metrics (never carries a token). */
export type StsClientEvent =
  | { type: 'logon'; applicationId: string; expiresAt: number }
  | { type: 'renewed'; applicationId: string; expiresAt: number }
  | { type: 'renewal-failed'; applicationId: string; error: StsClientError }
  | { type: 'retry'; method: string; attempt: number; delayMs: number; error: StsClientError };

export interface StsClientOptions {
  /** host:port of STS. */
  address: string;
  /**
   * TLS: `false` for plaintext (development only); an object for TLS with an optional CA bundle (PEM; the
   * system roots without it) and a client certificate and key for mTLS. Default: TLS with the system roots.
   */
  tls?: { ca?: Buffer | string; cert?: Buffer | string; key?: Buffer | string } | false;
  /** The application's credentials. Without them calls carry no token unless a call passes `bearer`. */
  credentials?: { applicationId: string; applicationSecret: string };
  /** Deadline of every call (retries included) unless the call sets `deadlineMs`. Default 10 s. */
  defaultDeadlineMs?: number;
  /** How often an idempotent read is sent again after UNAVAILABLE. Default 3. */
  retries?: number;
  /** Backoff before retry n (0-based): min(maxMs, initialMs * 2^n), half of it fixed, half random. */
  retryBackoff?: { initialMs?: number; maxMs?: number };
  /** When to renew the application token, as a fraction of its lifetime. Default 0.8. */
  renewAt?: number;
  /** Milliseconds since the epoch, for token expiry (tests pass a manual clock). Default Date.now. */
  now?: () => number;
  /** Runs the renewal timer (see {@link StsScheduler}). */
  scheduler?: StsScheduler;
  /** Called for logons, renewals, failed renewals and retries. */
  onEvent?: (event: StsClientEvent) => void;
  /** Options of the JWKS cache behind `keys`. Its clock defaults to `now`. */
  jwks?: JwksCacheOptions;
  /** grpc-js channel options (they win over the client's defaults). */
  channelOptions?: Partial<ClientOptions>;
}

export interface StsClient {
  pop: PopApi;
  session: SessionApi;
  secret: SecretApi;
  /** STS's published keys: `keys.encryptFor(data)`, `keys.verifyToken(jws)`. */
  keys: JwksCache;
  /** The current application token id, logging on first if needed (requires `credentials`). */
  applicationToken(): Promise<string>;
  /** Stops the renewal timer and closes the channel; later calls fail with CANCELLED. Idempotent. */
  close(): void;
}

const realScheduler: StsScheduler = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

/** Applied unless `channelOptions` says otherwise: reconnect soon after a restart, so read retries find it. */
const DEFAULT_CHANNEL_OPTIONS: Partial<ClientOptions> = {
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 10_000,
};

function channelCredentials(tls: StsClientOptions['tls']): ChannelCredentials {
  if (tls === false) return grpcCredentials.createInsecure();
  const buf = (v: Buffer | string | undefined) => (v === undefined ? null : Buffer.isBuffer(v) ? v : Buffer.from(v));
  return grpcCredentials.createSsl(buf(tls?.ca), buf(tls?.key), buf(tls?.cert));
}

export function createStsClient(options: StsClientOptions): StsClient {
  const defaultDeadlineMs = options.defaultDeadlineMs ?? 10_000;
  const retries = options.retries ?? 3;
  const initialBackoffMs = options.retryBackoff?.initialMs ?? 200;
  const maxBackoffMs = options.retryBackoff?.maxMs ?? 5_000;
  const renewAt = options.renewAt ?? 0.8;
  const now = options.now ?? Date.now;
  const scheduler = options.scheduler ?? realScheduler;
  const emit = (e: StsClientEvent) => {
    try {
      options.onEvent?.(e);
    } catch {
      // A listener's failure is not the client's.
    }
  };
  if (!(renewAt > 0 && renewAt < 1)) throw new RangeError('renewAt must be between 0 and 1');
  const channel = new Client(options.address, channelCredentials(options.tls), { ...DEFAULT_CHANNEL_OPTIONS, ...options.channelOptions });
  let closed = false;

  /** One attempt: a unary call with the given metadata and absolute deadline (real time). */
  function unary<Res>(def: UnaryDefinition, request: unknown, metadata: Metadata, deadline: number): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      channel.makeUnaryRequest<unknown, Res>(
        def.path,
        def.serialize,
        def.deserialize as (value: Buffer) => Res,
        request,
        metadata,
        { deadline },
        (err, res) => (err ? reject(StsClientError.fromServiceError(err, def.path)) : resolve(res as Res)),
      );
    });
  }

  // ---- the application token -------------------------------------------------------------------------
  interface Held {
    id: string;
    /** Local time after which the token is no longer valid. */
    expiresAt: number;
    /** Lifetime as the server gave it (expire - issue), so clock skew to STS does not matter. */
    lifetimeMs: number;
    /**
     * Local time minus STS time, measured at logon (send time minus issue time: never more than the true
     * offset, so expiries converted with it err on the early side).
     */
    offsetMs: number;
    /** False once a renewal granted less than a lifetime: STS will not extend it further, so log on again. */
    renewable: boolean;
  }
  let held: Held | undefined;
  let logonInflight: Promise<string> | undefined;
  let timer: unknown;
  const applicationId = options.credentials?.applicationId ?? '';

  function schedule(at: number): void {
    if (timer !== undefined) scheduler.clearTimeout(timer);
    timer = closed ? undefined : scheduler.setTimeout(() => {
      timer = undefined;
      void renew();
    }, Math.max(0, at - now()));
  }

  /** Logs on (one logon at a time: concurrent callers share it) within `deadline` (epoch ms, real time). */
  function logon(deadline = Date.now() + defaultDeadlineMs): Promise<string> {
    const creds = options.credentials;
    if (!creds) return Promise.reject(new Error('createStsClient: no credentials given, so there is no application token'));
    logonInflight ??= (async () => {
      try {
        const sentAt = now();
        const res = await unary<{ applicationToken?: { applicationTokenId: string; issueTime?: Date; expireTime?: Date } }>(
          SESSION.logonApplication!,
          { credential: { $case: 'applicationCredential', value: { applicationId: creds.applicationId, applicationSecret: creds.applicationSecret } } },
          new Metadata(),
          deadline,
        );
        const t = res.applicationToken;
        if (!t?.applicationTokenId) throw new Error('LogonApplication returned no token');
        const lifetimeMs = t.expireTime && t.issueTime ? Math.max(0, t.expireTime.getTime() - t.issueTime.getTime()) : 0;
        const offsetMs = t.issueTime ? sentAt - t.issueTime.getTime() : 0;
        held = { id: t.applicationTokenId, expiresAt: sentAt + lifetimeMs, lifetimeMs, offsetMs, renewable: true };
        emit({ type: 'logon', applicationId, expiresAt: held.expiresAt });
        if (lifetimeMs > 0) schedule(sentAt + renewAt * lifetimeMs);
        return held.id;
      } finally {
        logonInflight = undefined;
      }
    })();
    return logonInflight;
  }

  async function renew(): Promise<void> {
    const current = held;
    if (closed || !current) return;
    if (!current.renewable) {
      // The token is at its absolute lifetime: a new logon replaces it before it ends. Until that succeeds
      // the current token stays in use; past its end, the next call logs on itself.
      await logon().catch(() => {
        if (closed || held !== current) return;
        const left = current.expiresAt - now();
        if (left <= 0) held = undefined;
        else schedule(now() + Math.min(left / 2, 1_000));
      });
      return;
    }
    const sentAt = now();
    try {
      const md = new Metadata();
      md.set('authorization', `Bearer ${current.id}`);
      const res = await unary<{ applicationToken?: { expireTime?: Date } }>(
        SESSION.renewApplicationToken!,
        { applicationTokenId: current.id },
        md,
        Date.now() + defaultDeadlineMs,
      );
      if (held !== current) return; // replaced meanwhile
      // STS never renews past the token's absolute lifetime: trust the expiry it answered, not a full lifetime.
      const expireTime = res.applicationToken?.expireTime;
      const grantedMs = expireTime ? Math.min(current.lifetimeMs, expireTime.getTime() + current.offsetMs - sentAt) : current.lifetimeMs;
      current.expiresAt = sentAt + Math.max(0, grantedMs);
      // Less than 90% of a lifetime (10% allows for the offset's error): renewing again would gain less each
      // time, so the timer logs on instead.
      current.renewable = grantedMs >= 0.9 * current.lifetimeMs;
      emit({ type: 'renewed', applicationId, expiresAt: current.expiresAt });
      schedule(sentAt + renewAt * Math.max(0, grantedMs));
    } catch (err) {
      const error = err instanceof StsClientError ? err : new StsClientError({ code: status.UNKNOWN, details: String(err), method: RENEW_APPLICATION_TOKEN, cause: err });
      emit({ type: 'renewal-failed', applicationId, error });
      if (closed || held !== current) return;
      if (error.code === status.UNAUTHENTICATED) {
        // The token ended (released, expired while we slept, STS lost it): a new logon replaces it.
        held = undefined;
        await logon().catch(() => {
          // The next call logs on again and reports the failure to its caller.
        });
        return;
      }
      // STS unreachable or busy: try again before the token runs out; past that, the next call logs on.
      const left = current.expiresAt - now();
      if (left <= 0) held = undefined;
      else schedule(now() + Math.min(left / 2, Math.max(1_000, error.retryAfterMs ?? 0)));
    }
  }

  async function token(deadline?: number): Promise<string> {
    if (held && now() < held.expiresAt) return held.id;
    held = undefined;
    return logon(deadline);
  }

  // ---- calls ---------------------------------------------------------------------------------------------
  const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

  async function invoke(def: UnaryDefinition, request: unknown, callOptions: StsCallOptions = {}): Promise<unknown> {
    if (closed) throw new StsClientError({ code: status.CANCELLED, details: 'the client is closed', method: def.path });
    const deadline = Date.now() + (callOptions.deadlineMs ?? defaultDeadlineMs);
    const retryable = IDEMPOTENT_METHODS.has(def.path);
    const managed = callOptions.bearer === undefined && options.credentials !== undefined && !ANONYMOUS_METHODS.has(def.path);
    let reauthenticated = false;
    // An attempt includes the logon it may need, so a read retried on UNAVAILABLE also retries that logon.
    for (let attempt = 0; ; attempt++) {
      let used: string | undefined;
      try {
        const md = callOptions.metadata ? callOptions.metadata.clone() : new Metadata();
        const bearer = callOptions.bearer ?? (managed ? (used = await token(deadline)) : undefined);
        if (bearer !== undefined) md.set('authorization', `Bearer ${bearer}`);
        return await unary(def, request, md, deadline);
      } catch (err) {
        if (!(err instanceof StsClientError)) throw err;
        if (closed) throw err;
        // Our token was refused as a credential: the server did nothing, so log on again and resend once.
        if (managed && !reauthenticated && err.code === status.UNAUTHENTICATED && err.stsCode === 'unauthenticated' && used !== undefined) {
          reauthenticated = true;
          if (held?.id === used) held = undefined;
          attempt--;
          continue;
        }
        if (!retryable || err.code !== status.UNAVAILABLE || attempt >= retries) throw err;
        const ceiling = Math.min(maxBackoffMs, initialBackoffMs * 2 ** attempt);
        const delayMs = Math.max(Math.round(ceiling / 2 + Math.random() * (ceiling / 2)), err.retryAfterMs ?? 0);
        if (Date.now() + delayMs >= deadline) throw err;
        emit({ type: 'retry', method: def.path, attempt: attempt + 1, delayMs, error: err });
        await sleep(delayMs);
        if (closed) throw err;
      }
    }
  }

  function bind<A>(definitions: Record<string, UnaryDefinition>): A {
    const api: Record<string, (request: unknown, o?: StsCallOptions) => Promise<unknown>> = {};
    for (const [name, def] of Object.entries(definitions)) api[name] = (request, o) => invoke(def, request, o);
    return api as A;
  }

  const pop = bind<PopApi>(POP);
  const keys = new JwksCache(() => pop.getJwks({}), { now, ...options.jwks });
  return {
    pop,
    session: bind<SessionApi>(SESSION),
    secret: bind<SecretApi>(SECRET),
    keys,
    applicationToken: () => token(),
    close() {
      closed = true;
      if (timer !== undefined) scheduler.clearTimeout(timer);
      timer = undefined;
      channel.close();
    },
  };
}
