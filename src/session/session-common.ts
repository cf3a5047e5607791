/**
 * What the SessionService handlers share: their dependencies and policy, the text and record conversions,
 * and the helpers that read the caller, the sessions and the credentials (requireActive, throttledCheck,
 * openCredential, startSession ...). Each group of handlers (app-sessions.ts, user-sessions.ts, handover.ts,
 * directory-admin.ts) is built over one {@link SessionKit}.
 */
import type { Authenticator, Caller } from '../auth/caller.js';
import type { Clock } from '../clock.js';
import { StsError, invalidArgument } from '../errors.js';
import type { Application, SessionServiceServer } from '../gen/sts/v1/session.js';
import type { Role } from '../gen/sts/v1/common.js';
import type { Duration } from '../gen/google/protobuf/duration.js';
import type { Logger } from '../log.js';
import { decryptCompact, verifyCompact } from '../pop/jose-ops.js';
import type { KeyRing } from '../pop/key-ring.js';
import type { CallContext, DomainService } from '../rpc-contract.js';
import type { ApplicationRecord, IdentityDirectory, RoleRecord, UserRecord } from './directory.js';
import { checkCredentialClaims } from './credential-jwe.js';
import { verifySecret } from './password.js';
import { type SessionStore, refOf } from './sessions.js';
import type { LogonThrottle } from './throttle.js';
import { type AnonymousView, type SessionHandle, USER_TOKEN_TYP, type ViewContext, signUserToken, userTokenView } from './user-token-view.js';

export interface SessionPolicy {
  issuer: string;
  applicationTokenLifetimeMs: number;
  /** Renewal never extends an application token past this time after its logon. */
  applicationTokenMaxLifetimeMs: number;
  /** How far ahead a credential JWE's exp may be (see credential-jwe.ts). */
  credentialJweMaxLifetimeMs: number;
  userTokenIdleTimeoutMs: number;
  userTokenMaxLifetimeMs: number;
  userTicketLifetimeMs: number;
  anonymousView: AnonymousView;
}

/** Verifies a third-party JWT (SecretService's identity provider registry); plugged in by the app. */
export type ThirdPartyVerifier = (jwt: string) => Promise<{ issuer: string; subject: string; securityLevel: number; claims: Record<string, unknown> }>;

export interface SessionServiceDeps {
  directory: IdentityDirectory;
  sessions: SessionStore;
  throttle: LogonThrottle;
  auth: Authenticator;
  ring: KeyRing;
  clock: Clock;
  logger: Logger;
  policy: SessionPolicy;
  verifyThirdParty?: ThirdPartyVerifier;
}

/** The handlers of SessionService, or a group of them. */
export type SessionHandlers = DomainService<SessionServiceServer>;

export const INVALID_APP_CREDENTIALS = 'invalid application credentials';
export const INVALID_USER_CREDENTIALS = 'invalid user credentials';
export const SESSION_NOT_ACTIVE = 'user session not found: unknown, expired or released';
export const MAX_TEXT = 256;

export function text(field: string, value: string, min: number, max: number): string {
  if (value.length < min || value.length > max) throw invalidArgument(field, `must be ${min} to ${max} characters long`);
  // Control characters have no place in names and ids; they are how log and header injection starts.
  if (/[\x00-\x1f\x7f]/.test(value)) throw invalidArgument(field, 'must not contain control characters');
  return value;
}

export const toDuration = (ms: number): Duration | undefined => (ms > 0 ? { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 } : undefined);

export const rolePb = (r: RoleRecord): Role => ({ applicationId: r.applicationId, organizationName: r.organizationName, roleName: r.roleName, roleValue: r.roleValue });

export function applicationPb(a: ApplicationRecord): Application {
  return {
    applicationId: a.id,
    name: a.name,
    tags: a.tags,
    defaultRoles: a.defaultRoles.map(rolePb),
    trusted: a.trusted,
    admin: a.admin,
    personalFieldsAllowed: a.personalFields,
    fullToken: a.fullToken,
    minimumSecurityLevel: a.minSecurityLevel,
    userTokenIdleTimeout: toDuration(a.idleTimeoutMs),
    userTokenMaxLifetime: toDuration(a.maxLifetimeMs),
    disabled: a.disabled,
    createTime: new Date(a.createdAt),
  };
}

/** The helpers every group of handlers uses, over one set of dependencies. */
export function sessionKit(deps: SessionServiceDeps) {
  const { directory, sessions, throttle, auth, ring, clock, logger, policy } = deps;
  const vc: ViewContext = { directory, ring, issuer: policy.issuer, anonymousView: policy.anonymousView };

  const audit = (event: string, fields: Record<string, unknown>): void => logger.info('audit', { event, ...fields });

  /** The calling application and its directory record. Admin keys are not applications. */
  async function callerApp(ctx: CallContext): Promise<ApplicationRecord> {
    const caller = await auth.authenticate(ctx.bearer);
    ctx.logFields.caller = caller.id;
    if (caller.kind !== 'application') throw new StsError('permission_denied', 'this RPC needs an application token: admin keys are not applications');
    // The record the authenticator has just read for this call (read again only if it did not keep it).
    const app = caller.application ?? directory.getApplication(caller.id);
    if (!app || app.disabled) throw new StsError('unauthenticated', 'invalid credential: unknown, expired or released');
    return app;
  }

  async function admin(ctx: CallContext): Promise<Caller> {
    const caller = await auth.requireAdmin(ctx.bearer);
    ctx.logFields.caller = caller.id;
    return caller;
  }

  function targetApp(id: string, field: string): ApplicationRecord {
    const app = directory.getApplication(text(field, id, 1, 128));
    if (!app || app.disabled) throw new StsError('not_found', `${field}: application ${id} not found`);
    return app;
  }

  /** An active session by token id (with its user, who must not be disabled), or undefined. */
  async function activeById(tokenId: string): Promise<SessionHandle | undefined> {
    if (tokenId.length === 0 || tokenId.length > 256) return undefined;
    const sid = refOf(tokenId);
    const s = await activeBySid(sid);
    return s && { ...s, tokenId };
  }

  async function activeBySid(sid: string): Promise<SessionHandle | undefined> {
    const record = await sessions.findSession(sid);
    if (!record) return undefined;
    const user = directory.getUser(record.uid);
    if (!user || user.disabled) return undefined;
    return { tokenId: '', sid, record, user };
  }

  async function requireActive(tokenId: string): Promise<SessionHandle> {
    const s = await activeById(tokenId);
    if (!s) throw new StsError('not_found', SESSION_NOT_ACTIVE);
    return s;
  }

  function viewAndJwt(s: SessionHandle, viewer: ApplicationRecord, requester: ApplicationRecord = viewer) {
    const userToken = userTokenView(vc, s, viewer, requester);
    return { userToken, userTokenJwt: signUserToken(vc, userToken, s.sid, clock.now()) };
  }

  /** How a refused credential JWE is answered and audited: exactly as a wrong secret of the same RPC. */
  interface CredentialUse {
    field: string;
    /** The message of the RPC's invalid_credentials error. */
    invalid: string;
    /** The audit event of the RPC's failed logon. */
    event: string;
    ctx: CallContext;
    /** The calling application, where there is one (LogonUser, step-up): the credential's required "aud". */
    application?: string;
  }

  /**
   * A credential and, for a credential JWE, how to spend its jti: true the first time, false for a replay
   * (audited here). Called only once the secret in it has been verified, so that nobody without a valid
   * secret can fill the store with jtis, and a replay is counted by the throttle like a wrong secret.
   */
  interface OpenedCredential<T> {
    value: T;
    spend?: () => Promise<boolean>;
  }

  /**
   * Opens a credential sent as a compact JWE to STS's encryption key: it must be a fresh credential JWE
   * (typ, exp, jti: see credential-jwe.ts), and its jti is spent once the secret is verified (`spend`). A JWE
   * STS cannot decrypt or whose content is malformed is INVALID_ARGUMENT, as before; a stale, untyped or
   * replayed one gets the same UNAUTHENTICATED answer as a wrong secret, so a replay learns nothing, and is
   * audited (why, never the content).
   */
  async function openCredential<T>(jwe: string, use: CredentialUse, parse: (o: Record<string, unknown>) => T): Promise<OpenedCredential<T>> {
    const { field } = use;
    if (jwe.length > 64 * 1024) throw invalidArgument(field, 'at most 64 KiB');
    const { plaintext, typ } = await decryptCompact(ring, jwe);
    let obj: unknown;
    try {
      obj = JSON.parse(plaintext.toString('utf8'));
    } catch {
      throw invalidArgument(field, 'the decrypted credential is not JSON');
    }
    if (typeof obj !== 'object' || obj === null) throw invalidArgument(field, 'the decrypted credential is not a JSON object');
    const claims = obj as Record<string, unknown>;
    const value = parse(claims);
    const check = checkCredentialClaims(typ, claims, clock.now(), policy.credentialJweMaxLifetimeMs, use.application);
    const refuse = (reason: string, jti?: string): void =>
      audit(use.event, {
        peer: use.ctx.peer,
        ...(use.application ? { application: use.application } : {}),
        credential: field,
        reason: `credential_jwe_${reason}`,
        // The jti's hash (the store's key, not a credential) lets an investigation tie replays together.
        ...(jti ? { jtiRef: refOf(jti) } : {}),
      });
    if (!check.ok) {
      refuse(check.reason);
      throw new StsError('invalid_credentials', use.invalid);
    }
    return {
      value,
      // Of concurrent uses of one JWE exactly one spends it (insertIfAbsent), on any node.
      spend: async () => {
        if (await sessions.spendCredentialId(check.jti, check.ttlMs)) return true;
        refuse('replayed', check.jti);
        return false;
      },
    };
  }

  const str = (o: Record<string, unknown>, k: string, field: string): string => {
    const v = o[k];
    if (typeof v !== 'string') throw invalidArgument(field, `the decrypted credential has no string "${k}"`);
    return v;
  };

  /** `spend`: the credential JWE's jti, spent once the password is right (see OpenedCredential). */
  /**
   * A logon's secret check under the throttle: `verify` does the deliberately slow hash comparison, and a
   * credential JWE's jti (`spend`) is spent only once it passes. A wrong secret is audited here; a replay
   * was audited by `spend` with its reason. Both count as failures and get the same answer.
   */
  async function throttledCheck(
    kind: 'user' | 'application',
    key: string,
    peer: string,
    verify: () => Promise<boolean>,
    spend: (() => Promise<boolean>) | undefined,
    failed: { event: string; message: string },
  ): Promise<void> {
    await throttle.before(kind, key, peer);
    let ok = false;
    let replayed = false;
    try {
      ok = await verify();
      if (ok && spend) replayed = !(ok = await spend());
    } finally {
      await (ok ? throttle.succeeded(kind, key, peer) : throttle.failed(kind, key, peer));
    }
    if (!ok) {
      if (!replayed) audit(failed.event, { peer });
      throw new StsError('invalid_credentials', failed.message);
    }
  }

  async function checkPassword(username: string, password: string, peer: string, spend?: () => Promise<boolean>): Promise<UserRecord> {
    let user: UserRecord | undefined;
    await throttledCheck(
      'user',
      username,
      peer,
      async () => {
        user = directory.findUserByUsername(username);
        // Unknown user, no password, wrong password and disabled user: the same work and the same answer.
        return (await verifySecret(password, user?.passwordHash)) && user !== undefined && !user.disabled;
      },
      spend,
      { event: 'user.logon_failed', message: INVALID_USER_CREDENTIALS },
    );
    return user!;
  }

  async function startSession(user: UserRecord, app: ApplicationRecord, level: number, method: 'password' | 'third_party') {
    if (level < app.minSecurityLevel) {
      throw new StsError('security_level_too_low', `application ${app.id} requires security level ${app.minSecurityLevel}; this logon gives ${level}`);
    }
    const idle = Math.min(app.idleTimeoutMs || policy.userTokenIdleTimeoutMs, policy.userTokenMaxLifetimeMs);
    const max = Math.min(app.maxLifetimeMs || policy.userTokenMaxLifetimeMs, policy.userTokenMaxLifetimeMs);
    const created = await sessions.createUserSession({ uid: user.uid, applicationId: app.id, securityLevel: level, authMethod: method, idleTimeoutMs: idle }, max);
    audit('user.logon', { uid: user.uid, application: app.id, method, securityLevel: level, sid: created.sid });
    return { tokenId: created.id, sid: created.sid, record: created.record, user } satisfies SessionHandle;
  }

  /**
   * A session from an STS-signed user token JWT made for `audience` (a JWT issued to one application is not
   * replayable at another), or undefined when the JWT or the session is not valid.
   */
  async function sessionFromJwt(jwt: string, audience: string): Promise<SessionHandle | undefined> {
    let claims: Record<string, unknown>;
    try {
      const v = verifyCompact(ring, jwt);
      if (v.header.typ !== USER_TOKEN_TYP) return undefined;
      const parsed: unknown = JSON.parse(v.payload.toString('utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
      claims = parsed as Record<string, unknown>;
    } catch {
      return undefined;
    }
    if (claims.iss !== policy.issuer || claims.aud !== audience || typeof claims.sid !== 'string' || typeof claims.exp !== 'number') return undefined;
    if (claims.exp * 1000 <= clock.now()) return undefined;
    return activeBySid(claims.sid);
  }

  return { deps, vc, audit, callerApp, admin, targetApp, activeById, activeBySid, requireActive, viewAndJwt, openCredential, str, throttledCheck, checkPassword, startSession, sessionFromJwt };
}

export type SessionKit = ReturnType<typeof sessionKit>;
