/**
 * Trusted identity providers: the registry (SQLite) and the verification of their JWTs.
 *
 * `verify(jwt)` picks the provider by the unverified "iss" claim (only to choose the keys), then checks the
 * signature with the provider's key for the token's kid (RFC 8725: the provider's algorithm allow-list, never
 * "none" or HMAC), the issuer, the audience, exp and nbf with the provider's clock skew, all against the
 * injectable clock, and "iat" (required unless the provider accepts tokens without it). Failures are
 * StsErrors with a short message naming the reason class; the token itself is never echoed. The checks run
 * synchronously on node:crypto (./jwt-verify.ts), with the key objects of each JWKS document made once.
 *
 * STS never trusts itself (RFC 8725 section 3.11, explicit typing): a token typed as one of STS's own
 * ("typ" starting with "sts-") is refused, so is a token signed with one of STS's own keys, and so is the
 * registration of STS's own issuer or of a JWKS that holds one of its keys. Otherwise an application that may
 * have STS sign payloads (PopService.Sign) could mint "third-party" tokens for any subject.
 *
 * For a logon (SessionService.CreateUserFromThirdPartyToken, `application` set) the token must be meant for
 * that application: its "aud" holds an audience the provider entry registers for the application, or its
 * "azp" names it; and it must carry a "jti" to be spent once (or, for a provider marked tokensWithoutJti,
 * have little time left to live).
 */
import { type JsonWebKeyInput, type KeyObject, createPublicKey } from 'node:crypto';
import type { Clock } from '../clock.js';
import { StsError, invalidArgument } from '../errors.js';
import type { Duration } from '../gen/google/protobuf/duration.js';
import type { ApplicationAudiences, IdentityProvider } from '../gen/sts/v1/secret.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/sqlite/database.js';
import { type Jwks, type RemoteJwksOptions, RemoteJwks, checkJwksUri, parsePublicJwks } from './jwks.js';
import { JwsKeySet, JwtRejected, type ParsedJws, UNKNOWN_KEY, parseCompactJws, verifyJwt } from './jwt-verify.js';
import { checkTime, sameAfterFrontDoor } from '../validation.js';

/** JWS algorithms a provider may allow: asymmetric only (no "none", no HMAC: RFC 8725 sections 2.1, 3.1). */
export const SIGNATURE_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

export const DEFAULT_CLOCK_SKEW_MS = 60_000;
const MAX_CLOCK_SKEW_MS = 10 * 60_000;
export const MAX_TOKEN_CHARS = 16 * 1024;
const MAX_AUDIENCES = 50;
const MAX_AUDIENCE_APPLICATIONS = 100;
const MAX_SUBJECT_CHARS = 1024;
const MAX_JTI_CHARS = 256;
const APPLICATION_ID = /^[A-Za-z0-9._-]{1,128}$/;
/** RFC 7515 section 4.1.9: "application/" may be left out of typ, so compare without it. */
const stsTyped = (typ: unknown): boolean => typeof typ === 'string' && typ.toLowerCase().replace(/^application\//, '').startsWith('sts-');

export interface IdentityProviderRecord {
  issuer: string;
  jwksUri: string | null;
  jwksJson: string | null;
  audiences: string[];
  algorithms: string[];
  /** 0 = the default (60 s). */
  clockSkewMs: number;
  /** '' = "sub". */
  subjectClaim: string;
  /** 0 = 1. */
  securityLevel: number;
  updatedAt: number;
  /** The audiences of tokens meant for each application (CreateUserFromThirdPartyToken). */
  applicationAudiences: { applicationId: string; audiences: string[] }[];
  /** The provider's tokens carry no jti: accepted for a logon only while short-lived. */
  tokensWithoutJti: boolean;
  /** Tokens without "iat" are accepted (refused by default). */
  acceptTokensWithoutIat: boolean;
}

/** A verified third-party token. */
export interface VerifiedIdentity {
  issuer: string;
  subject: string;
  securityLevel: number;
  claims: Record<string, unknown>;
  /** The token's "aud", as a list. */
  audience: string[];
  /** The token's "jti", when it has one. */
  jti: string | undefined;
  /** Until when (epoch ms) this token could be accepted: its "exp" plus the provider's clock skew. */
  acceptableUntil: number;
}

export interface VerifyOptions {
  /** Request field carrying the token, for INVALID_ARGUMENT ("subject_token"). */
  field: string;
  /** Name of the token in messages ("subject token"). */
  label: string;
  /**
   * A logon for this application (CreateUserFromThirdPartyToken): the token must be meant for it (the
   * provider's application_audiences, or "azp") and carry a usable "jti", unless the provider is marked
   * tokensWithoutJti, whose tokens must then expire within `withoutJtiMaxLifetimeMs`.
   */
  application?: { id: string; withoutJtiMaxLifetimeMs: number };
}

/** What identifies STS itself, which is never an identity provider. */
export interface OwnIdentity {
  /** STS's own issuer (session.issuer). */
  issuer: string;
  /** True for a public key that is one of STS's own (any state, destroyed too). */
  isOwnKey: (key: KeyObject) => boolean;
}

/** Text without control characters, `min` to `max` characters long. */
export function text(field: string, value: string, min: number, max: number): string {
  if (value.length < min || value.length > max) throw invalidArgument(field, `must be ${min} to ${max} characters long`);
  if (/[\x00-\x1f\x7f]/.test(value)) throw invalidArgument(field, 'must not contain control characters');
  return value;
}

/** A list of 1 to `max` distinct texts. */
export function textList(field: string, values: readonly string[], maxChars: number, max = MAX_AUDIENCES): string[] {
  if (values.length === 0 || values.length > max) throw invalidArgument(field, `must hold 1 to ${max} values`);
  values.forEach((v, i) => text(`${field}[${i}]`, v, 1, maxChars));
  return [...new Set(values)];
}

function durationMs(field: string, d: Duration | undefined): number {
  if (!d) return 0;
  const ms = d.seconds * 1000 + Math.floor(d.nanos / 1e6);
  if (ms < 0 || d.nanos < 0) throw invalidArgument(field, 'must not be negative');
  if (ms > MAX_CLOCK_SKEW_MS) throw invalidArgument(field, `must be at most ${MAX_CLOCK_SKEW_MS / 1000} s`);
  return ms;
}

function applicationAudiences(field: string, list: readonly ApplicationAudiences[]): IdentityProviderRecord['applicationAudiences'] {
  if (list.length > MAX_AUDIENCE_APPLICATIONS) throw invalidArgument(field, `at most ${MAX_AUDIENCE_APPLICATIONS} applications`);
  const seen = new Set<string>();
  return list.map((a, i) => {
    const f = `${field}[${i}]`;
    if (!APPLICATION_ID.test(a.applicationId)) throw invalidArgument(`${f}.application_id`, 'an application id: 1 to 128 characters of A-Z a-z 0-9 . _ -');
    if (seen.has(a.applicationId)) throw invalidArgument(`${f}.application_id`, `application ${a.applicationId} is listed twice`);
    seen.add(a.applicationId);
    return { applicationId: a.applicationId, audiences: textList(`${f}.audiences`, a.audiences, 512) };
  });
}

/**
 * Validates an IdentityProvider message into a record; INVALID_ARGUMENT naming the field otherwise, also for
 * STS's own issuer and for a JWKS holding one of STS's own keys (`own`).
 */
export function identityProviderRecord(p: IdentityProvider | undefined, field: string, now: number, own: OwnIdentity): IdentityProviderRecord {
  if (!p) throw invalidArgument(field, 'is required');
  const issuer = text(`${field}.issuer`, p.issuer, 1, 512);
  try {
    new URL(issuer);
  } catch {
    throw invalidArgument(`${field}.issuer`, 'must be an absolute URI, exactly as in the tokens\' "iss" claim');
  }
  if (issuer === own.issuer) throw invalidArgument(`${field}.issuer`, 'is STS\'s own issuer (session.issuer): STS never accepts its own tokens as third-party tokens');
  const src = p.jwksSource;
  if (!src) throw invalidArgument(`${field}.jwks_source`, 'give jwks_uri or jwks_json');
  const jwksUri = src.$case === 'jwksUri' ? checkJwksUri(`${field}.jwks_uri`, src.value) : null;
  let jwksJson: string | null = null;
  if (src.$case === 'jwksJson') {
    const jwks = parsePublicJwks(`${field}.jwks_json`, src.value);
    if (!jwks.keys.some((k) => k.use === undefined || k.use === 'sig')) throw invalidArgument(`${field}.jwks_json`, 'has no key usable for signatures (use "sig" or no use)');
    jwks.keys.forEach((k, i) => {
      if (isOwnJwk(k, own)) throw invalidArgument(`${field}.jwks_json`, `key ${i} is one of STS's own keys: STS is never its own identity provider`);
    });
    jwksJson = JSON.stringify(jwks);
  }
  const perApplication = applicationAudiences(`${field}.application_audiences`, p.applicationAudiences);
  // A provider may serve logons only (per-application audiences) and then needs no resource server audience.
  const audiences = perApplication.length > 0 && p.audiences.length === 0 ? [] : textList(`${field}.audiences`, p.audiences, 512);
  if (p.algorithms.length === 0) throw invalidArgument(`${field}.algorithms`, `must name at least one of ${SIGNATURE_ALGS.join(', ')}`);
  p.algorithms.forEach((alg, i) => {
    const f = `${field}.algorithms[${i}]`;
    if (alg.toLowerCase() === 'none') throw invalidArgument(f, '"none" is refused: unsigned tokens are never accepted');
    if (/^HS\d+$/i.test(alg)) throw invalidArgument(f, `"${alg.slice(0, 16)}" is refused: HMAC algorithms need a shared secret, which proves nothing about the issuer`);
    if (!(SIGNATURE_ALGS as readonly string[]).includes(alg)) throw invalidArgument(f, `unsupported algorithm; use one of ${SIGNATURE_ALGS.join(', ')}`);
  });
  const subjectClaim = p.subjectClaim;
  if (subjectClaim !== '' && !/^[\x21-\x7e]{1,256}$/.test(subjectClaim)) throw invalidArgument(`${field}.subject_claim`, 'must be empty (meaning "sub") or 1 to 256 printable ASCII characters');
  if (p.securityLevel > 4) throw invalidArgument(`${field}.security_level`, 'must be 0 to 4 (0 means 1)');
  return {
    issuer,
    jwksUri,
    jwksJson,
    audiences,
    algorithms: [...new Set(p.algorithms)],
    clockSkewMs: durationMs(`${field}.clock_skew`, p.clockSkew),
    subjectClaim,
    securityLevel: p.securityLevel,
    updatedAt: now,
    applicationAudiences: perApplication,
    tokensWithoutJti: p.tokensWithoutJti,
    acceptTokensWithoutIat: p.acceptTokensWithoutIat,
  };
}

/** A stored record from elsewhere (the cluster): valid by the very rules of PutIdentityProvider. */
export function validateIdentityProviderRecord(r: IdentityProviderRecord, own: OwnIdentity): void {
  checkTime(r?.updatedAt, 'identity_provider.update_time');
  sameAfterFrontDoor('identity_provider', r, () => identityProviderRecord(identityProviderPb(r), 'identity_provider', r.updatedAt, own));
}

/** Whether a JWK of a registered JWKS is one of STS's own public keys (a key that does not import is not). */
function isOwnJwk(jwk: Record<string, unknown>, own: OwnIdentity): boolean {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: jwk as JsonWebKeyInput['key'], format: 'jwk' });
  } catch {
    return false;
  }
  return own.isOwnKey(key);
}

export function identityProviderPb(r: IdentityProviderRecord): IdentityProvider {
  return {
    issuer: r.issuer,
    jwksSource: r.jwksUri !== null ? { $case: 'jwksUri', value: r.jwksUri } : { $case: 'jwksJson', value: r.jwksJson ?? '' },
    audiences: r.audiences,
    algorithms: r.algorithms,
    clockSkew: r.clockSkewMs > 0 ? { seconds: Math.floor(r.clockSkewMs / 1000), nanos: (r.clockSkewMs % 1000) * 1e6 } : undefined,
    subjectClaim: r.subjectClaim,
    securityLevel: r.securityLevel,
    applicationAudiences: r.applicationAudiences,
    tokensWithoutJti: r.tokensWithoutJti,
    acceptTokensWithoutIat: r.acceptTokensWithoutIat,
  };
}

interface Row {
  issuer: string;
  jwks_uri: string | null;
  jwks_json: string | null;
  audiences: string;
  algorithms: string;
  clock_skew_ms: number;
  subject_claim: string;
  security_level: number;
  updated_at: number;
  application_audiences: string;
  tokens_without_jti: number;
  accept_tokens_without_iat: number;
}

const fromRow = (r: Row): IdentityProviderRecord => ({
  issuer: r.issuer,
  jwksUri: r.jwks_uri,
  jwksJson: r.jwks_json,
  audiences: JSON.parse(r.audiences) as string[],
  algorithms: JSON.parse(r.algorithms) as string[],
  clockSkewMs: r.clock_skew_ms,
  subjectClaim: r.subject_claim,
  securityLevel: r.security_level,
  updatedAt: r.updated_at,
  applicationAudiences: JSON.parse(r.application_audiences) as IdentityProviderRecord['applicationAudiences'],
  tokensWithoutJti: r.tokens_without_jti === 1,
  acceptTokensWithoutIat: r.accept_tokens_without_iat === 1,
});

const B64URL_PART = /^[A-Za-z0-9_-]+$/;

export interface IdentityProviderRegistryOptions extends Omit<RemoteJwksOptions, 'clock' | 'logger'> {
  clock: Clock;
  logger: Logger;
  /** STS's own public keys: a token signed with one is never accepted (see the module comment). */
  isOwnKey: (key: KeyObject) => boolean;
}

export class IdentityProviderRegistry {
  private readonly stmts;
  /** Key sets of inline providers, by issuer, with the JSON they were made from. */
  private readonly inline = new Map<string, { json: string; keys: JwsKeySet }>();
  /** Fetched key sets, by URL: the key objects of the fetched document of `version`. */
  private readonly remote = new Map<string, { jwks: RemoteJwks; version: number; keys: JwsKeySet | undefined }>();

  constructor(
    db: Db,
    private readonly o: IdentityProviderRegistryOptions,
  ) {
    this.stmts = {
      get: db.prepare('SELECT * FROM identity_providers WHERE issuer = ?'),
      list: db.prepare('SELECT * FROM identity_providers ORDER BY issuer'),
      put: db.prepare(
        'INSERT INTO identity_providers (issuer, jwks_uri, jwks_json, audiences, algorithms, clock_skew_ms, subject_claim, security_level, updated_at, ' +
          'application_audiences, tokens_without_jti, accept_tokens_without_iat) ' +
          'VALUES (@issuer, @jwksUri, @jwksJson, @audiences, @algorithms, @clockSkewMs, @subjectClaim, @securityLevel, @updatedAt, ' +
          '@applicationAudiences, @tokensWithoutJti, @acceptTokensWithoutIat) ' +
          'ON CONFLICT (issuer) DO UPDATE SET jwks_uri = excluded.jwks_uri, jwks_json = excluded.jwks_json, audiences = excluded.audiences, ' +
          'algorithms = excluded.algorithms, clock_skew_ms = excluded.clock_skew_ms, subject_claim = excluded.subject_claim, ' +
          'security_level = excluded.security_level, updated_at = excluded.updated_at, application_audiences = excluded.application_audiences, ' +
          'tokens_without_jti = excluded.tokens_without_jti, accept_tokens_without_iat = excluded.accept_tokens_without_iat',
      ),
      delete: db.prepare('DELETE FROM identity_providers WHERE issuer = ?'),
    };
  }

  get(issuer: string): IdentityProviderRecord | undefined {
    const row = this.stmts.get.get(issuer) as Row | undefined;
    return row && fromRow(row);
  }

  list(): IdentityProviderRecord[] {
    return (this.stmts.list.all() as Row[]).map(fromRow);
  }

  /** Cluster mode: told of every local change, to publish it to the other nodes. */
  onChange: ((id: string, record: IdentityProviderRecord | null) => void) | undefined;

  put(r: IdentityProviderRecord): void {
    this.apply(r.issuer, r);
    this.onChange?.(r.issuer, r);
  }

  /** False when there was no such provider. */
  delete(issuer: string): boolean {
    const deleted = this.apply(issuer, null);
    this.onChange?.(issuer, null);
    return deleted;
  }

  /** Writes (or, with null, deletes) a provider locally: a local change, or one made on another node. */
  apply(issuer: string, r: IdentityProviderRecord | null): boolean {
    const before = this.get(issuer);
    const changed = r
      ? this.stmts.put.run({
          ...r,
          audiences: JSON.stringify(r.audiences),
          algorithms: JSON.stringify(r.algorithms),
          // A record from a node older than these fields gets their defaults.
          applicationAudiences: JSON.stringify(r.applicationAudiences ?? []),
          tokensWithoutJti: r.tokensWithoutJti ? 1 : 0,
          acceptTokensWithoutIat: r.acceptTokensWithoutIat ? 1 : 0,
        }).changes === 1
      : this.stmts.delete.run(issuer).changes === 1;
    this.forget(before);
    return changed;
  }

  /** Drops cached keys of a provider's old configuration, so a changed registration takes effect at once. */
  private forget(r: IdentityProviderRecord | undefined): void {
    if (!r) return;
    this.inline.delete(r.issuer);
    if (r.jwksUri) this.remote.delete(r.jwksUri);
  }

  /** The provider's key for the token's alg and kid (see JwsKeySet.key for how it is chosen). */
  private async keyFor(p: IdentityProviderRecord, jws: ParsedJws): Promise<KeyObject> {
    if (p.jwksJson !== null) {
      let entry = this.inline.get(p.issuer);
      if (!entry || entry.json !== p.jwksJson) {
        entry = { json: p.jwksJson, keys: new JwsKeySet(JSON.parse(p.jwksJson) as Jwks) };
        this.inline.set(p.issuer, entry);
      }
      return entry.keys.key(jws.alg, jws.kid);
    }
    const url = p.jwksUri!;
    let entry = this.remote.get(url);
    if (!entry) {
      entry = { jwks: new RemoteJwks(url, 'identity provider', this.o), version: -1, keys: undefined };
      this.remote.set(url, entry);
    }
    const e = entry;
    const keySet = async (): Promise<JwsKeySet> => {
      const doc = await e.jwks.current();
      if (!e.keys || e.version !== e.jwks.version) {
        e.keys = new JwsKeySet(doc);
        e.version = e.jwks.version;
      }
      return e.keys;
    };
    try {
      return (await keySet()).key(jws.alg, jws.kid);
    } catch (err) {
      // An unknown kid may be a key the provider has just added: fetch again, at most once per interval.
      if (!(err instanceof JwtRejected && err.reason === UNKNOWN_KEY) || !e.jwks.mayRefetch()) throw err;
      await e.jwks.refresh();
      return (await keySet()).key(jws.alg, jws.kid);
    }
  }

  /** Verifies a third-party JWT; see the module comment for the checks and their errors. */
  async verify(jwt: string, opts: VerifyOptions = { field: 'subject_token', label: 'subject token' }): Promise<VerifiedIdentity> {
    const { field, label, application } = opts;
    if (jwt.length === 0 || jwt.length > MAX_TOKEN_CHARS) throw invalidArgument(field, `must be 1 to ${MAX_TOKEN_CHARS} characters`);
    const { header, claims } = decodeUnverified(jwt, field, label);
    // The unverified issuer only chooses the provider (and so the keys); verifyJwt checks it again.
    const provider = typeof claims.iss === 'string' ? this.get(claims.iss) : undefined;
    if (!provider) throw invalidArgument(field, `the ${label} issuer is not a trusted identity provider`);
    const invalid = (reason: string, cause?: unknown) => new StsError('token_invalid', `${label} ${reason}`, { cause });
    // Before any key lookup: "none", HMAC and every algorithm the provider does not use are refused outright.
    if (typeof header.alg !== 'string' || !provider.algorithms.includes(header.alg)) throw invalid('algorithm not allowed');
    // RFC 8725 section 3.11: a token typed as one of STS's own is never a third-party token.
    if (stsTyped(header.typ)) throw invalid('is typed as an STS token');
    let audiences: readonly string[] = provider.audiences;
    let authorizedParties: readonly string[] | undefined;
    if (application) {
      const registered = provider.applicationAudiences.find((a) => a.applicationId === application.id);
      if (!registered) {
        throw new StsError('failed_precondition', `identity provider ${provider.issuer} registers no audience for application ${application.id} (identity_provider.application_audiences): its tokens start no session there`);
      }
      audiences = registered.audiences;
      // OpenID Connect Core section 2: "azp" names the party the token was issued to, in the identity
      // provider's own client ids: the audiences registered for this application, never an STS application id
      // (an identity-provider client that happened to share its name would pass).
      authorizedParties = registered.audiences;
    }
    const skewMs = provider.clockSkewMs || DEFAULT_CLOCK_SKEW_MS;
    const nowMs = this.o.clock.now();
    let payload: Record<string, unknown>;
    try {
      const jws = parseCompactJws(jwt, provider.algorithms);
      const key = await this.keyFor(provider, jws);
      if (this.o.isOwnKey(key)) throw new JwtRejected('signed with one of STS\'s own keys');
      payload = verifyJwt(jws, key, { issuer: provider.issuer, audiences, ...(authorizedParties ? { authorizedParties } : {}), clockToleranceS: skewMs / 1000, nowMs });
    } catch (err) {
      if (err instanceof StsError) throw err; // the provider's keys could not be fetched (UNAVAILABLE)
      throw invalid(err instanceof JwtRejected ? err.reason : 'invalid', err);
    }
    if (payload.iat === undefined && !provider.acceptTokensWithoutIat) throw invalid('has no "iat" claim (the provider does not accept tokens without one)');
    const claim = provider.subjectClaim || 'sub';
    const subject = payload[claim];
    // The same text rules as admin input: a subject becomes a directory record and a user secret's id, and both
    // are refused by other nodes (and logs) with control characters in them.
    if (typeof subject !== 'string' || subject.length === 0 || subject.length > MAX_SUBJECT_CHARS) throw invalid(`has no usable "${claim}" claim`);
    if (/[\x00-\x1f\x7f]/.test(subject)) throw invalid(`has a "${claim}" claim that must not contain control characters`);
    const acceptableUntil = (payload.exp as number) * 1000 + skewMs;
    const jti = payload.jti;
    if (jti !== undefined && (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_CHARS)) throw invalid('has an invalid "jti" claim');
    if (application && jti === undefined) {
      if (!provider.tokensWithoutJti) throw invalid('has no "jti" claim: a token starts one session only, so it must be identifiable');
      // Nothing tells two uses apart: only a token about to expire is accepted, which bounds any replay.
      if (acceptableUntil - nowMs > application.withoutJtiMaxLifetimeMs + skewMs) throw invalid('lives too long for a provider without "jti" (session.thirdPartyTokenWithoutJtiMaxLifetimeMs)');
    }
    const aud = payload.aud;
    return {
      issuer: provider.issuer,
      subject,
      securityLevel: provider.securityLevel || 1,
      claims: payload,
      audience: typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [],
      jti,
      acceptableUntil,
    };
  }
}

/** Header and claims of a compact JWS, unverified; INVALID_ARGUMENT when it is not one. */
function decodeUnverified(jwt: string, field: string, label: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const parts = jwt.split('.');
  if (parts.length === 5) throw invalidArgument(field, `the ${label} is a JWE; give a signed JWT (JWS)`);
  const malformed = () => invalidArgument(field, `the ${label} is not a JWT (compact JWS with a JSON header and JSON claims)`);
  if (parts.length !== 3 || !B64URL_PART.test(parts[0]!) || !B64URL_PART.test(parts[1]!) || !/^[A-Za-z0-9_-]*$/.test(parts[2]!)) throw malformed();
  const json = (s: string): Record<string, unknown> => {
    let v: unknown;
    try {
      v = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
    } catch {
      throw malformed();
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw malformed();
    return v as Record<string, unknown>;
  };
  return { header: json(parts[0]!), claims: json(parts[1]!) };
}
