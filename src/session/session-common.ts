/**
 * What the SessionService handlers share: their dependencies and policy, the text and record conversions,
 * and the helpers that read the caller, the sessions and the credentials (requireActive, throttledCheck,
 * openCredential, startSession ...). Each group of handlers (app-sessions.ts, user-sessions.ts, handover.ts,
 * directory-admin.ts) is built over one {@link SessionKit}.
 */
import type { Authenticator, Caller } from '../auth/caller.js';
import { BoundedMap } from '../bounded-map.js';
import { SESSION_ACCESS } from '../auth/policy.js';
import type { Clock } from '../clock.js';
import { StsError, invalidArgument } from '../errors.js';
import type { Application, SessionServiceServer, User } from '../gen/sts/v1/session.js';
import type { Role } from '../gen/sts/v1/common.js';
import type { Duration } from '../gen/google/protobuf/duration.js';
import type { Logger } from '../log.js';
import { decryptCompact, verifyCompact } from '../pop/jose-ops.js';
import type { KeyRing } from '../pop/key-ring.js';
import type { CallContext, DomainService } from '../rpc-contract.js';
import type { ApplicationRecord, IdentityDirectory, RoleRecord, UserRecord } from './directory.js';
import { checkCredentialClaims } from './credential-jwe.js';
import { HashNotRun, type HashScheduler } from './hash-scheduler.js';
import { type Checked, type HashOwner, type SecretHashing, describeHash, takesKeyedHash } from './password.js';
import { type AuthMethod, type JoinedVia, type SessionStore, type UserSessionRecord, refOf } from './sessions.js';
import { type LogonSubject, type LogonThrottle, addressOf } from './throttle.js';
import { type AnonymousView, type SessionHandle, USER_TOKEN_TYP, type ViewContext, signUserToken, userTokenView } from './user-token-view.js';

/** Audit lines per minute for the failed logons of one application whose secret STS made (auditFailure). */
const FAILURE_AUDITS_PER_MINUTE = 10;

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

/** A third-party token verified for one application (see IdentityProviderRegistry.verify). */
export interface ThirdPartyIdentity {
  issuer: string;
  subject: string;
  securityLevel: number;
  claims: Record<string, unknown>;
  /** The token's jti, to spend (undefined for a provider whose tokens carry none: short-lived instead). */
  jti: string | undefined;
  /** Until when (epoch ms) the token could still be accepted: its exp plus the provider's clock skew. */
  acceptableUntil: number;
}

/**
 * Verifies a third-party JWT for the calling application (SecretService's identity provider registry: the
 * token's audience must be one registered for that application); plugged in by the app.
 */
export type ThirdPartyVerifier = (jwt: string, applicationId: string) => Promise<ThirdPartyIdentity>;

export interface SessionServiceDeps {
  directory: IdentityDirectory;
  sessions: SessionStore;
  throttle: LogonThrottle;
  /** Every slow password and secret hash runs in its turn here (fair between applications). */
  hashing: HashScheduler;
  /** How passwords and application secrets are hashed and checked (src/session/password.ts). */
  hashes: SecretHashing;
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
    transformSources: a.transformSources,
    dataKeyGroup: a.dataKeyGroup,
  };
}

/** The text fields of a user, checked as an administrator's input is (and an identity provider's claims). */
export function userFields(u: User, field: string): Pick<UserRecord, 'username' | 'firstName' | 'lastName' | 'email' | 'cellphone' | 'personRef'> {
  return {
    username: text(`${field}.username`, u.username, 1, 256),
    firstName: text(`${field}.first_name`, u.firstName, 0, MAX_TEXT),
    lastName: text(`${field}.last_name`, u.lastName, 0, MAX_TEXT),
    email: text(`${field}.email`, u.email, 0, MAX_TEXT),
    cellphone: text(`${field}.cellphone`, u.cellphone, 0, 64),
    personRef: text(`${field}.person_ref`, u.personRef, 0, MAX_TEXT),
  };
}

/** The helpers every group of handlers uses, over one set of dependencies. */
export function sessionKit(deps: SessionServiceDeps) {
  const { directory, sessions, throttle, hashing, hashes, auth, ring, clock, logger, policy } = deps;
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

  /**
   * Administrator applications may act on any application's part of a session, in the RPCs whose rule in
   * SESSION_ACCESS (src/auth/policy.ts) is 'any_part': they can manage the directory, so they could take over
   * any account anyway. Admin keys are not applications and never get here.
   */
  const mayActOnOthers = (caller: ApplicationRecord): boolean => caller.admin;

  /** An active session by its id (with its user, who must not be disabled), or undefined. */
  async function activeBySid(sid: string, known?: UserSessionRecord): Promise<Omit<SessionHandle, 'tokenId' | 'ref' | 'participant'> | undefined> {
    const record = known ?? (await sessions.findSession(sid));
    if (!record || record.expiresAt <= clock.now()) return undefined;
    const user = directory.getUser(record.uid);
    if (!user || user.disabled) return undefined;
    return { sid, record, user };
  }

  /**
   * The active session a user token id names, for `caller` in the RPC of `ctx`: only when the id was issued to
   * the caller, or the RPC's rule in SESSION_ACCESS is 'any_part' and the caller is an administrator
   * application. Anything else gives undefined, exactly as an unknown id does, so an application learns
   * nothing about another application's token ids.
   */
  async function sessionOf(tokenId: string, caller: ApplicationRecord, ctx: CallContext): Promise<SessionHandle | undefined> {
    if (tokenId.length === 0 || tokenId.length > 256) return undefined;
    const p = await sessions.resolveToken(tokenId);
    if (!p) return undefined;
    // The session is read before the owner is compared, so another application's id costs the same reads as
    // one's own (and as an unknown id: a participant record, then a session): its existence does not show in
    // the time the answer takes either.
    const s = await activeBySid(p.sid, p.record);
    if (p.applicationId !== caller.id && !(SESSION_ACCESS[ctx.method] === 'any_part' && mayActOnOthers(caller))) return undefined;
    return s && { ...s, tokenId, ref: p.ref, participant: p.applicationId };
  }

  async function requireActive(tokenId: string, caller: ApplicationRecord, ctx: CallContext): Promise<SessionHandle> {
    const s = await sessionOf(tokenId, caller, ctx);
    if (!s) throw new StsError('not_found', SESSION_NOT_ACTIVE);
    return s;
  }

  function viewAndJwt(s: SessionHandle, viewer: ApplicationRecord, requester: ApplicationRecord = viewer) {
    const userToken = userTokenView(vc, s, viewer, requester);
    return { userToken, userTokenJwt: signUserToken(vc, userToken, s, clock.now()) };
  }

  /**
   * Makes `viewer` a participant of the session (a ticket redeemed, a transform) and returns its view, with its
   * own new token id, and JWT. The view is checked first, so a viewer that may not see the session (security
   * level, no role under `deny`) does not join it.
   */
  async function joinAndView(s: SessionHandle, viewer: ApplicationRecord, via: JoinedVia, requester: ApplicationRecord = viewer) {
    userTokenView(vc, s, viewer, requester);
    const joined = await sessions.join(s.sid, s.record, viewer.id, via);
    audit('user.session_joined', { application: viewer.id, via, sid: s.sid, ...(requester.id !== viewer.id ? { by: requester.id } : {}) });
    return viewAndJwt({ ...s, tokenId: joined.id, ref: joined.ref, participant: viewer.id }, viewer, requester);
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

  /**
   * Where a logon's secret check runs: its turn on the hash scheduler for a slow hash (`lane`: whose share of
   * the hashing capacity it uses; `cost`: the kind of hash, for the scheduler's estimate of its time), or at
   * once for a keyed hash (undefined).
   */
  interface CheckTurn {
    lane: string;
    cost: string;
  }

  /**
   * The turn of a check against `stored` in `lane`: none for a keyed hash. Admitted (or dropped for its deadline)
   * on the estimate of the current setting whatever `stored` is, so that the answer never tells a user whose
   * hash is old (slower) from an unknown one.
   */
  function turnOf(lane: string, stored: string | null | undefined, owner: HashOwner): CheckTurn | undefined {
    const cost = hashes.costOf(stored, owner);
    return cost === undefined ? undefined : { lane, cost };
  }

  /**
   * A logon's secret check under the throttle: `verify` does the hash comparison, in its turn (`turn`, decided
   * once the throttle let the attempt through, from the record as it is then), and a credential JWE's jti
   * (`spend`) is spent only once it passes. A wrong secret is audited here; a replay was audited by `spend`
   * with its reason. Both count as failures and get the same answer. A check that never ran (the lane's queue
   * is full, the call's deadline passed or would pass while it waited) counts nothing.
   */
  async function throttledCheck(
    subject: LogonSubject,
    turn: () => CheckTurn | undefined,
    ctx: CallContext,
    verify: () => Promise<boolean>,
    spend: (() => Promise<boolean>) | undefined,
    failed: { event: string; message: string },
  ): Promise<void> {
    const attempt = await throttle.before(subject);
    let ok: boolean;
    let replayed = false;
    try {
      const t = turn();
      ok = t ? await hashing.run(t.lane, ctx.deadline, verify, t.cost, hashes.currentCost) : await verify();
      if (ok && spend) replayed = !(ok = await spend());
    } catch (err) {
      if (err instanceof HashNotRun) attempt.abandoned();
      else await attempt.failed();
      throw err;
    }
    await (ok ? attempt.succeeded() : attempt.failed());
    if (!ok) {
      if (!replayed) auditFailure(subject, failed.event, { peer: ctx.peer, ...(subject.kind === 'user' ? { application: subject.application } : {}) });
      throw new StsError('invalid_credentials', failed.message);
    }
  }

  /**
   * Failed logons of an application whose secret STS made are not throttled (throttle.ts), so that they cannot
   * flood the audit log either: per application id and client address (one address cannot use up another's
   * lines), the first FAILURE_AUDITS_PER_MINUTE in a minute are written, then one
   * `application.logon_failures_suppressed` line, and the rest are counted and written as `suppressed` on the
   * first line of a later minute.
   */
  const failureAudits = new BoundedMap<{ since: number; written: number; suppressed: number }>(10_000);
  function auditFailure(subject: LogonSubject, event: string, fields: Record<string, unknown>): void {
    if (subject.kind !== 'application' || !subject.madeBySts) return audit(event, fields);
    const key = `${subject.applicationId}\0${addressOf(subject.peer)}`;
    const now = clock.now();
    const w = failureAudits.get(key);
    if (!w || now - w.since >= 60_000) {
      failureAudits.set(key, { since: now, written: 1, suppressed: 0 });
      return audit(event, { ...fields, ...(w?.suppressed ? { suppressed: w.suppressed } : {}) });
    }
    if (w.written < FAILURE_AUDITS_PER_MINUTE) {
      w.written++;
      return audit(event, fields);
    }
    if (w.suppressed++ === 0) audit('application.logon_failures_suppressed', { ...fields, application: subject.applicationId, perMinute: FAILURE_AUDITS_PER_MINUTE });
  }

  /** The hash scheduler lane of an application's user password checks. */
  const userLane = (app: ApplicationRecord): string => `users:${app.id}`;

  /**
   * Hashes a new password or application secret for an administrator: a slow hash in the caller's own lane,
   * a keyed hash (an application secret STS made, or one that carries 128 bits) at once.
   */
  function adminHash(caller: Caller, ctx: CallContext, secret: string, application?: { id: string; madeBySts: boolean }): Promise<string> {
    const make = () => (application ? hashes.hashApplicationSecret(application.id, secret, application.madeBySts) : hashes.hashPassword(secret));
    return application && takesKeyedHash(secret, application.madeBySts) ? make() : hashing.run(`admin:${caller.id}`, ctx.deadline, make, hashes.currentCost);
  }

  /**
   * After a successful logon checked against an old hash (an earlier format, other parameters, a master key
   * that is no longer the primary): stores the current form, if the record still holds the hash that was
   * checked (an administrator may have set a new secret meanwhile, which must not be undone). The read and the
   * write are one synchronous step. In cluster mode the directory publishes it as a maintenance write, which
   * loses the tie with an administrator's change made at once on another node (src/cluster/revisions.ts). A
   * failure is logged and the logon stands: the old hash still verifies, and the next logon tries again.
   */
  function upgradeHash(owner: HashOwner, id: string, checkedHash: string | null | undefined, checked: Checked): void {
    const replacement = checked.replacement;
    if (!replacement || !checkedHash) return;
    try {
      const fields = { from: describeHash(checkedHash), to: describeHash(replacement) };
      if (owner === 'user') {
        const current = directory.getUser(id);
        if (current?.passwordHash !== checkedHash) return;
        directory.updateUser({ ...current, passwordHash: replacement }, true);
        audit('user.password_rehashed', { uid: id, ...fields });
      } else {
        const current = directory.getApplication(id);
        if (current?.secretHash !== checkedHash) return;
        directory.updateApplication({ ...current, secretHash: replacement }, true);
        audit('application.secret_rehashed', { application: id, ...fields });
      }
    } catch (err) {
      logger.error('could not store the upgraded hash after a logon; the old one still verifies, the next logon tries again', { owner, id, err });
    }
  }

  /**
   * After a logon was checked: whether the record still holds the secret that was checked (or the form it was
   * rehashed to) and is not disabled. False when an administrator reset the secret or disabled the account
   * between the check and the token: that reset ended the tokens it knew of, so the new one must go as well.
   */
  function stillHolds(owner: HashOwner, id: string, checkedHash: string | null | undefined, checked: Checked): boolean {
    const r = owner === 'user' ? directory.getUser(id) : directory.getApplication(id);
    const h = r && ('passwordHash' in r ? r.passwordHash : r.secretHash);
    return r !== undefined && !r.disabled && (h === checkedHash || (checked.replacement !== undefined && h === checked.replacement));
  }

  /**
   * `spend`: the credential JWE's jti, spent once the password is right (see OpenedCredential). `holds` tells,
   * once the session exists, whether the password checked is still the user's (stillHolds).
   */
  async function checkPassword(
    app: ApplicationRecord,
    username: string,
    password: string,
    ctx: CallContext,
    spend?: () => Promise<boolean>,
  ): Promise<{ user: UserRecord; holds: () => boolean }> {
    let user: UserRecord | undefined;
    let checked: Checked = { ok: false };
    await throttledCheck(
      { kind: 'user', application: app.id, username },
      () => turnOf(userLane(app), directory.findUserByUsername(username)?.passwordHash, 'user'),
      ctx,
      async () => {
        // Read again in the job's turn: the record as it is when it is checked.
        user = directory.findUserByUsername(username);
        checked = await hashes.checkPassword(password, user?.passwordHash);
        // Unknown user, no password, wrong password and disabled user: the same work and the same answer.
        return checked.ok && user !== undefined && !user.disabled;
      },
      spend,
      { event: 'user.logon_failed', message: INVALID_USER_CREDENTIALS },
    );
    const found = user!;
    upgradeHash('user', found.uid, found.passwordHash, checked);
    return { user: found, holds: () => stillHolds('user', found.uid, found.passwordHash, checked) };
  }

  async function startSession(user: UserRecord, app: ApplicationRecord, level: number, method: AuthMethod): Promise<SessionHandle> {
    if (level < app.minSecurityLevel) {
      throw new StsError('security_level_too_low', `application ${app.id} requires security level ${app.minSecurityLevel}; this logon gives ${level}`);
    }
    const idle = Math.min(app.idleTimeoutMs || policy.userTokenIdleTimeoutMs, policy.userTokenMaxLifetimeMs);
    const max = Math.min(app.maxLifetimeMs || policy.userTokenMaxLifetimeMs, policy.userTokenMaxLifetimeMs);
    const created = await sessions.createUserSession({ uid: user.uid, applicationId: app.id, securityLevel: level, authMethod: method, idleTimeoutMs: idle }, max, method === 'password' ? 'logon' : 'third_party');
    audit('user.logon', { uid: user.uid, application: app.id, method, securityLevel: level, sid: created.sid });
    return { tokenId: created.id, ref: created.ref, participant: app.id, sid: created.sid, record: created.record, user };
  }

  /**
   * A session from an STS-signed user token JWT made for `caller` ("aud": a JWT issued to one application is
   * not active at another), while the part it was made from ("pref"; a JWT from before participants names
   * none and stands for the legacy creator) still takes part in the session, or undefined.
   */
  async function sessionFromJwt(jwt: string, caller: ApplicationRecord, ctx: CallContext): Promise<SessionHandle | undefined> {
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
    const { sid, pref = sid } = claims;
    if (claims.iss !== policy.issuer || claims.aud !== caller.id || typeof sid !== 'string' || typeof pref !== 'string' || typeof claims.exp !== 'number') return undefined;
    if (claims.exp * 1000 <= clock.now() || sid.length > 256 || pref.length > 256) return undefined;
    const p = pref === sid ? await sessions.legacyCreator(sid) : await sessions.participationByRef(pref);
    if (!p || p.sid !== sid || (p.applicationId !== caller.id && !(SESSION_ACCESS[ctx.method] === 'any_part' && mayActOnOthers(caller)))) return undefined;
    const s = await activeBySid(sid, p.record);
    return s && { ...s, tokenId: '', ref: p.ref, participant: p.applicationId };
  }

  return { deps, vc, audit, callerApp, admin, targetApp, activeBySid, sessionOf, requireActive, viewAndJwt, joinAndView, openCredential, str, throttledCheck, turnOf, adminHash, upgradeHash, stillHolds, checkPassword, startSession, sessionFromJwt };
}

export type SessionKit = ReturnType<typeof sessionKit>;
