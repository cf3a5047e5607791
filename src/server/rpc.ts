/**
 * Binds grpc-free domain handlers to grpc-js.
 *
 * A domain handler is `(request, context) => Promise<response>`; it never sees grpc types. This module builds
 * the CallContext from the call, runs the handler, maps any error through `toServiceError`, and writes one
 * log line per RPC (method, status, duration, peer, caller; never request or response content). The handler
 * types live in src/rpc-contract.ts, which the domains import: they never import from server/.
 */
import { createHash } from 'node:crypto';
import { type ServerUnaryCall, type sendUnaryData, type UntypedServiceImplementation, status } from '@grpc/grpc-js';
import type { CallContext, DomainHandler, DomainService } from '../rpc-contract.js';
import type { Logger } from '../log.js';
import type { Metrics } from './metrics.js';
import { toServiceError } from './status.js';
import { invalidArgument } from '../errors.js';

const BEARER = /^Bearer ([\x21-\x7e]{1,4096})$/;

/** What a request that does not decode becomes, so the handler wrapper can answer INVALID_ARGUMENT. */
const UNDECODABLE = Symbol('undecodable request');
type Undecodable = { [UNDECODABLE]: string };

/**
 * The service definition with request decoding that never throws. grpc-js answers a decoder exception with
 * INTERNAL before any handler runs; a request that is not valid protobuf (or carries an int64 past 2^53,
 * which ts-proto refuses) is the caller's mistake and gets INVALID_ARGUMENT from bindService instead.
 */
export function guardedDefinition<D extends Record<string, { requestDeserialize: (b: Buffer) => unknown; path: string }>>(definition: D): D {
  const out: Record<string, unknown> = {};
  for (const [name, m] of Object.entries(definition)) {
    const type = m.path.slice(m.path.lastIndexOf('/') + 1) + 'Request';
    out[name] = {
      ...m,
      requestDeserialize: (b: Buffer): unknown => {
        try {
          return m.requestDeserialize(b);
        } catch {
          return { [UNDECODABLE]: type } satisfies Undecodable;
        }
      },
    };
  }
  return out as D;
}

function contextOf(call: ServerUnaryCall<unknown, unknown>, method: string): CallContext {
  const auth = call.metadata.get('authorization')[0];
  const bearer = typeof auth === 'string' ? BEARER.exec(auth)?.[1] : undefined;
  const cert = call.getAuthContext?.().sslPeerCertificate;
  const deadline = call.getDeadline();
  return {
    method,
    bearer,
    peer: call.getPeer(),
    clientCertSha256: cert?.raw ? createHash('sha256').update(cert.raw).digest('hex') : undefined,
    deadline: deadline instanceof Date ? deadline.getTime() : deadline,
    logFields: {},
  };
}

/** Turns a definition plus domain handlers into a grpc-js implementation. Missing methods stay UNIMPLEMENTED. */
export function bindService<S>(
  definition: Record<string, { path: string }>,
  handlers: DomainService<S>,
  logger: Logger,
  metrics?: Metrics,
  /**
   * Checks the caller of a request that did not decode, so that such a request says nothing to a caller
   * who may not call the method (UNAUTHENTICATED / PERMISSION_DENIED first, INVALID_ARGUMENT after).
   */
  checkCaller?: (method: string, context: CallContext) => Promise<void>,
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [name, def] of Object.entries(definition)) {
    const handler = (handlers as Record<string, DomainHandler<unknown, unknown> | undefined>)[name];
    if (!handler) continue;
    const method = def.path;
    impl[name] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      const started = performance.now();
      const ctx = contextOf(call, method);
      const request = call.request as unknown;
      const run =
        typeof request === 'object' && request !== null && UNDECODABLE in request
          ? (checkCaller?.(method, ctx) ?? Promise.resolve()).then(() => {
              throw invalidArgument('request', `not a valid sts.v1.${(request as Undecodable)[UNDECODABLE]} message (protobuf, int64 values within 2^53)`);
            })
          : handler(request, ctx);
      run.then(
        (response) => {
          callback(null, response);
          const ms = performance.now() - started;
          metrics?.observe(method, 'OK', ms / 1000);
          logger.info('rpc', { method, code: 'OK', durationMs: round(ms), peer: ctx.peer, ...ctx.logFields });
        },
        (err: unknown) => {
          const mapped = toServiceError(err);
          if (mapped.unexpected) logger.error('rpc failed unexpectedly', { method, err });
          callback(mapped.error, null);
          const ms = performance.now() - started;
          const code = status[mapped.error.code!]!;
          metrics?.observe(method, code, ms / 1000);
          logger.info('rpc', {
            method,
            code,
            stsCode: mapped.stsCode,
            durationMs: round(ms),
            peer: ctx.peer,
            ...ctx.logFields,
          });
        },
      );
    };
  }
  return impl;
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
