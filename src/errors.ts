/**
 * Domain errors of STS.
 *
 * Every error the domain code raises on purpose is an {@link StsError} whose `code` is one of the stable
 * strings below. The codes are part of the public contract: they travel to callers in the trailing
 * metadata `sts-error-code`, and client code may switch on them. The mapping to a gRPC status lives in
 * exactly one place (`src/server/status.ts`); domain code never imports grpc.
 *
 * Messages are written for the caller and must never contain secrets, keys, passwords or tokens.
 */

/** Stable error codes. A closed union: add a code here, and the compiler finds the mapping to update. */
export type StsErrorCode =
  // INVALID_ARGUMENT: the request itself is wrong; retrying it unchanged will fail again.
  | 'invalid_argument'
  // INVALID_ARGUMENT: one fixed message for every crypto failure (RFC 7516 section 11.5: an attacker must not
  // learn which step failed, so a wrong key, a tampered JWE, an unknown and a destroyed kid look the same).
  | 'decryption_failed'
  | 'signature_invalid'
  // UNAUTHENTICATED
  | 'unauthenticated'
  | 'invalid_credentials'
  | 'token_invalid'
  // PERMISSION_DENIED
  | 'permission_denied'
  | 'security_level_too_low'
  // NOT_FOUND
  | 'not_found'
  // ALREADY_EXISTS
  | 'already_exists'
  // FAILED_PRECONDITION
  | 'failed_precondition'
  // RESOURCE_EXHAUSTED
  | 'throttled'
  // UNAVAILABLE
  | 'unavailable'
  // DEADLINE_EXCEEDED: the call's deadline passed, or would pass before the work could end (a password check
  // whose turn on the hash scheduler comes too late): nothing was done.
  | 'deadline_exceeded'
  // INTERNAL: never carries detail to the caller.
  | 'internal';

export interface StsErrorOptions {
  /** The underlying error, for logs only (never sent to the caller). */
  cause?: unknown;
  /** When retrying may succeed, after how many milliseconds (RESOURCE_EXHAUSTED, UNAVAILABLE). */
  retryAfterMs?: number;
  /** The request field that is wrong, for INVALID_ARGUMENT (AIP-193 BadRequest.field_violations style). */
  field?: string;
  /** OAuth 2.0 error name (RFC 6749 section 5.2, RFC 8693 section 2.2.2), sent as `sts-oauth-error`. */
  oauthError?: string;
}

/** Base class of every domain error. */
export class StsError extends Error {
  readonly code: StsErrorCode;
  readonly retryAfterMs: number | undefined;
  readonly field: string | undefined;
  readonly oauthError: string | undefined;

  constructor(code: StsErrorCode, message: string, options: StsErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StsError';
    this.code = code;
    this.retryAfterMs = options.retryAfterMs;
    this.field = options.field;
    this.oauthError = options.oauthError;
  }
}

/** Shorthand for the most common error: a request field with a bad value. */
export function invalidArgument(field: string, message: string): StsError {
  return new StsError('invalid_argument', `${field}: ${message}`, { field });
}

/**
 * Start-up errors (configuration, data directory, master key). The CLI prints the message and exits with
 * `exitCode`; no stack trace is shown for these, because the message says what to fix.
 */
export type StartupErrorCode = 'config_invalid' | 'data_dir_unusable' | 'master_key_invalid' | 'store_invalid' | 'listen_failed';

export class StartupError extends Error {
  readonly code: StartupErrorCode;
  /** Process exit code; follows sysexits(3): 78 EX_CONFIG, 73 EX_CANTCREAT, 65 EX_DATAERR, 69 EX_UNAVAILABLE. */
  readonly exitCode: number;

  constructor(code: StartupErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StartupError';
    this.code = code;
    this.exitCode = STARTUP_EXIT_CODES[code];
  }
}

const STARTUP_EXIT_CODES: Record<StartupErrorCode, number> = {
  config_invalid: 78,
  data_dir_unusable: 73,
  master_key_invalid: 65,
  store_invalid: 65,
  listen_failed: 69,
};
