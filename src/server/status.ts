/**
 * The one place where errors become gRPC statuses.
 *
 * A domain error (StsError) keeps its message and gets its code's status; the stable code travels in the
 * trailing metadata `sts-error-code` (and `retry-after-ms` where retrying helps, `sts-oauth-error` for the
 * OAuth-shaped RPCs). Anything else is a bug or
 * an infrastructure failure: it is logged in full by the caller of this function and the client sees only
 * INTERNAL with a fixed message, so no internals leak.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { type StsErrorCode, StsError } from '../errors.js';

export const STATUS_BY_CODE: Record<StsErrorCode, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  decryption_failed: status.INVALID_ARGUMENT,
  signature_invalid: status.INVALID_ARGUMENT,
  unauthenticated: status.UNAUTHENTICATED,
  invalid_credentials: status.UNAUTHENTICATED,
  token_invalid: status.UNAUTHENTICATED,
  permission_denied: status.PERMISSION_DENIED,
  security_level_too_low: status.PERMISSION_DENIED,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  failed_precondition: status.FAILED_PRECONDITION,
  throttled: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  internal: status.INTERNAL,
};

export const INTERNAL_MESSAGE = 'internal error; the server log has the details';

/**
 * Messages are written for people, never for data; the clip is a safety net against a message that quotes
 * caller input: long trailers break HTTP/2 header limits and stall the connection.
 */
const MAX_DETAILS = 512;
const clip = (m: string): string => (m.length > MAX_DETAILS ? `${m.slice(0, MAX_DETAILS - 3)}...` : m);

export interface MappedError {
  error: Partial<ServiceError>;
  /** True when the error was not a deliberate domain error and must be logged with its detail. */
  unexpected: boolean;
  /** The stable STS code, for the RPC log line. */
  stsCode: StsErrorCode;
}

export function toServiceError(err: unknown): MappedError {
  const metadata = new Metadata();
  if (err instanceof StsError && err.code !== 'internal') {
    metadata.set('sts-error-code', err.code);
    if (err.retryAfterMs !== undefined) metadata.set('retry-after-ms', String(Math.ceil(err.retryAfterMs)));
    if (err.oauthError !== undefined) metadata.set('sts-oauth-error', err.oauthError);
    // AIP-193 BadRequest.field_violations in its simplest form: which request field to fix.
    if (err.field !== undefined) metadata.set('sts-error-field', err.field);
    return { error: { code: STATUS_BY_CODE[err.code], details: clip(err.message), metadata }, unexpected: false, stsCode: err.code };
  }
  metadata.set('sts-error-code', 'internal');
  return { error: { code: status.INTERNAL, details: INTERNAL_MESSAGE, metadata }, unexpected: true, stsCode: 'internal' };
}
