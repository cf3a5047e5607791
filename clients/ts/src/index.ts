/**
 * The STS TypeScript client: `createStsClient` (promise API with logon, renewal, deadlines, retries of reads
 * and typed errors), the generated stubs (as namespaces, since ts-proto repeats helper names) and the JWKS
 * helpers.
 */
export * as common from './gen/sts/v1/common.js';
export * as pop from './gen/sts/v1/pop.js';
export * as session from './gen/sts/v1/session.js';
export * as secret from './gen/sts/v1/secret.js';
export { PopServiceClient } from './gen/sts/v1/pop.js';
export { SessionServiceClient } from './gen/sts/v1/session.js';
export { SecretServiceClient } from './gen/sts/v1/secret.js';
/** The gRPC status codes (of @grpc/grpc-js), to compare with `StsClientError.code`. */
export { status } from '@grpc/grpc-js';
export { JwksCache, encryptFor, CREDENTIAL_JWE_TYP, type CredentialJson, type JwksDocument, type JwksFetcher, type JwksCacheOptions } from './jwks.js';
export {
  createStsClient,
  StsClientError,
  IDEMPOTENT_METHODS,
  type StsClient,
  type StsClientOptions,
  type StsCallOptions,
  type StsClientEvent,
  type StsScheduler,
  type PromiseService,
  type PopApi,
  type SessionApi,
  type SecretApi,
} from './client.js';
