/** The STS TypeScript client: generated stubs (as namespaces, since ts-proto repeats helper names) and the JWKS helpers. */
export * as common from './gen/sts/v1/common.js';
export * as pop from './gen/sts/v1/pop.js';
export * as session from './gen/sts/v1/session.js';
export * as secret from './gen/sts/v1/secret.js';
export { PopServiceClient } from './gen/sts/v1/pop.js';
export { SessionServiceClient } from './gen/sts/v1/session.js';
export { SecretServiceClient } from './gen/sts/v1/secret.js';
export { JwksCache, encryptFor, type JwksDocument, type JwksFetcher, type JwksCacheOptions } from './jwks.js';
