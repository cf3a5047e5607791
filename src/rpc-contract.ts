/**
 * The contract between the transport (src/server) and the domains (pop/, session/, secret/): what a handler
 * is and what it may know about the call. Domain modules import these types from here, never from server/,
 * so the dependency arrow points from the server to the domains only.
 */
import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';

/** What a domain handler may know about the call. */
export interface CallContext {
  /** Full method path, for example "/sts.v1.PopService/GetJwks". */
  readonly method: string;
  /** The bearer credential from `authorization: Bearer <x>`, if any. Never log it. */
  readonly bearer: string | undefined;
  /** Remote address as "ip:port". */
  readonly peer: string;
  /** SHA-256 (lowercase hex) of the verified TLS client certificate, when mTLS presented one. */
  readonly clientCertSha256: string | undefined;
  /** Absolute deadline in epoch ms, or Infinity. */
  readonly deadline: number;
  /** Fields the handler wants on the RPC log line (for example the authenticated caller). Never secrets. */
  readonly logFields: Record<string, unknown>;
}

export type DomainHandler<Req, Res> = (request: Req, context: CallContext) => Promise<Res>;

/** Maps a ts-proto `...Server` interface to the domain handler shape of each method. */
export type DomainService<S> = {
  // `as` drops the index signature that ts-proto's ...Server interfaces inherit from grpc-js.
  [K in keyof S as string extends K ? never : K]?: S[K] extends (call: ServerUnaryCall<infer Req, infer Res>, callback: sendUnaryData<infer _Res>) => void
    ? DomainHandler<Req, Res>
    : never;
};
