/**
 * SessionService handlers: grpc-free domain functions over the directory, the session store and the keys.
 */
import type { Authenticator, Caller } from '../auth/caller.js';
import type { Clock } from '../clock.js';
import { StsError, invalidArgument } from '../errors.js';
import type { Application, SessionServiceServer, User } from '../gen/sts/v1/session.js';
import type { ApplicationToken, Role } from '../gen/sts/v1/common.js';
import type { Duration } from '../gen/google/protobuf/duration.js';
import type { Logger } from '../log.js';
import { decryptCompact, verifyCompact } from '../pop/jose-ops.js';
import type { KeyRing } from '../pop/key-ring.js';
import type { CallContext, DomainService } from '../server/rpc.js';
import type { ApplicationRecord, IdentityDirectory, RoleRecord, UserRecord } from './directory.js';
import { checkCredentialClaims } from './credential-jwe.js';
import { APP_SECRET_PARAMS, hashSecret, verifySecret } from './password.js';
import { type AppTokenRecord, SECURITY_LEVEL, type SessionStore, newSecret, refOf } from './sessions.js';
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

export const APP_ID = /^[A-Za-z0-9._-]{1,128}$/;
const INVALID_APP_CREDENTIALS = 'invalid application credentials';
const INVALID_USER_CREDENTIALS = 'invalid user credentials';
const SESSION_NOT_ACTIVE = 'user session not found: unknown, expired or released';
const MAX_TEXT = 256;

function text(field: string, value: string, min: number, max: number): string {
  if (value.length < min || value.length > max) throw invalidArgument(field, `must be ${min} to ${max} characters long`);
  // Control characters have no place in names and ids; they are how log and header injection starts.
  if (/[\x00-\x1f\x7f]/.test(value)) throw invalidArgument(field, 'must not contain control characters');
  return value;
}

const TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000;

function durationMs(d: Duration | undefined, field: string): number {
  if (!d) return 0;
  const ms = d.seconds * 1000 + Math.floor(d.nanos / 1e6);
  if (!Number.isFinite(ms) || ms < 0 || ms > TEN_YEARS_MS) throw invalidArgument(field, 'must be 0 to 10 years');
  return ms;
}

const toDuration = (ms: number): Duration | undefined => (ms > 0 ? { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 } : undefined);

export function roleRecord(r: Role | undefined, field: string): RoleRecord {
  if (!r) throw invalidArgument(field, 'is required');
  return {
    applicationId: text(`${field}.application_id`, r.applicationId, 1, 128),
    organizationName: text(`${field}.organization_name`, r.organizationName, 0, MAX_TEXT),
    roleName: text(`${field}.role_name`, r.roleName, 1, MAX_TEXT),
    roleValue: r.roleValue.length <= 4096 ? r.roleValue : (() => { throw invalidArgument(`${field}.role_value`, 'at most 4096 characters'); })(),
  };
}

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

function appTokenPb(id: string, app: ApplicationRecord, rec: AppTokenRecord): ApplicationToken {
  return { applicationTokenId: id, applicationId: app.id, applicationName: app.name, issueTime: new Date(rec.issuedAt), expireTime: new Date(rec.expiresAt) };
}

export function userPb(u: UserRecord): User {
  return {
    uid: u.uid,
    username: u.username,
    firstName: u.firstName,
    lastName: u.lastName,
    email: u.email,
    cellphone: u.cellphone,
    personRef: u.personRef,
    disabled: u.disabled,
    createTime: new Date(u.createdAt),
  };
}

/** AIP-134 field masks arrive as snake_case (binary) or camelCase (JSON); compare in snake_case. */
function maskPaths(mask: string[] | undefined, allowed: readonly string[], field: string): Set<string> {
  const paths = new Set((mask ?? []).map((p) => p.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)));
  for (const p of paths) {
    if (!allowed.includes(p)) throw invalidArgument(field, `cannot update "${p.length > 64 ? `${p.slice(0, 64)}...` : p}"; allowed: ${allowed.join(', ')}`);
  }
  return paths;
}

const APP_MUTABLE = ['name', 'tags', 'default_roles', 'trusted', 'admin', 'personal_fields_allowed', 'full_token', 'minimum_security_level', 'user_token_idle_timeout', 'user_token_max_lifetime', 'disabled'] as const;
const USER_MUTABLE = ['username', 'first_name', 'last_name', 'email', 'cellphone', 'person_ref', 'disabled'] as const;

export function sessionService(deps: SessionServiceDeps): DomainService<SessionServiceServer> {
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

  return {
    async logonApplication(req, ctx) {
      const cred = req.credential;
      if (!cred) throw invalidArgument('credential', 'give application_credential or application_credential_jwe');
      const {
        value: { id, secret },
        spend,
      } =
        cred.$case === 'applicationCredential'
          ? { value: { id: cred.value.applicationId, secret: cred.value.applicationSecret }, spend: undefined }
          : await openCredential(cred.value, { field: 'application_credential_jwe', invalid: INVALID_APP_CREDENTIALS, event: 'application.logon_failed', ctx }, (o) => ({
              id: str(o, 'application_id', 'application_credential_jwe'),
              secret: str(o, 'application_secret', 'application_credential_jwe'),
            }));
      text('application_id', id, 1, 128);
      text('application_secret', secret, 1, 1024);
      let found: ApplicationRecord | undefined;
      await throttledCheck(
        'application',
        id,
        ctx.peer,
        async () => {
          found = directory.getApplication(id);
          return (await verifySecret(secret, found?.secretHash, APP_SECRET_PARAMS)) && found !== undefined && !found.disabled;
        },
        spend,
        { event: 'application.logon_failed', message: INVALID_APP_CREDENTIALS },
      );
      const app = found!;
      const token = await sessions.createAppToken(app.id, policy.applicationTokenLifetimeMs, policy.applicationTokenMaxLifetimeMs);
      ctx.logFields.caller = app.id;
      audit('application.logon', { application: app.id });
      return { applicationToken: appTokenPb(token.id, app, token.record) };
    },

    async validateApplicationToken(req, ctx) {
      ctx.logFields.caller = (await auth.authenticate(ctx.bearer)).id;
      const rec = req.applicationTokenId.length <= 256 ? await sessions.findAppToken(req.applicationTokenId) : undefined;
      const app = rec && directory.getApplication(rec.applicationId);
      if (!rec || !app || app.disabled) return { active: false, applicationToken: undefined };
      return { active: true, applicationToken: appTokenPb(req.applicationTokenId, app, rec) };
    },

    async renewApplicationToken(req, ctx) {
      const app = await callerApp(ctx);
      const rec = req.applicationTokenId.length <= 256 ? await sessions.findAppToken(req.applicationTokenId) : undefined;
      const notActive = () => new StsError('token_invalid', 'application token not active: unknown, expired or released; log on again (LogonApplication)');
      if (!rec) throw notActive();
      if (rec.applicationId !== app.id) throw new StsError('permission_denied', 'an application may renew only its own tokens');
      // Never past the token's absolute lifetime (a renewal near it gets less than a full lifetime).
      const next = await sessions.renewAppToken(req.applicationTokenId, rec, policy.applicationTokenLifetimeMs, policy.applicationTokenMaxLifetimeMs);
      if (next === 'max_lifetime') {
        throw new StsError('token_invalid', 'application token reached its maximum lifetime (session.applicationTokenMaxLifetimeMs) and cannot be renewed; log on again (LogonApplication)');
      }
      if (!next) throw notActive();
      return { applicationToken: appTokenPb(req.applicationTokenId, app, next) };
    },

    async releaseApplicationToken(req, ctx) {
      const app = await callerApp(ctx);
      const rec = req.applicationTokenId.length <= 256 ? await sessions.findAppToken(req.applicationTokenId) : undefined;
      if (rec && rec.applicationId !== app.id) throw new StsError('permission_denied', 'an application may release only its own tokens');
      if (rec) await sessions.releaseAppToken(req.applicationTokenId);
      audit('application.released', { application: app.id });
      return {};
    },

    async getApplicationInfo(_req, ctx) {
      return { application: applicationPb(await callerApp(ctx)) };
    },

    async logonUser(req, ctx) {
      const app = await callerApp(ctx);
      const cred = req.credential;
      if (!cred) throw invalidArgument('credential', 'give user_credential or user_credential_jwe');
      const {
        value: { username, password },
        spend,
      } =
        cred.$case === 'userCredential'
          ? { value: cred.value, spend: undefined }
          : await openCredential(cred.value, { field: 'user_credential_jwe', invalid: INVALID_USER_CREDENTIALS, event: 'user.logon_failed', ctx, application: app.id }, (o) => ({
              username: str(o, 'username', 'user_credential_jwe'),
              password: str(o, 'password', 'user_credential_jwe'),
            }));
      text('username', username, 1, 256);
      text('password', password, 1, 1024);
      const ticketApp = req.ticketApplicationId ? targetApp(req.ticketApplicationId, 'ticket_application_id') : undefined;
      const user = await checkPassword(username, password, ctx.peer, spend);
      const s = await startSession(user, app, SECURITY_LEVEL.password, 'password');
      const out = viewAndJwt(s, app);
      const ticket = ticketApp ? await sessions.createTicket(s.tokenId, ticketApp.id, policy.userTicketLifetimeMs) : undefined;
      return { ...out, userTicket: ticket?.ticket ?? '' };
    },

    async validateUserToken(req, ctx) {
      const app = await callerApp(ctx);
      const t = req.token;
      if (!t) throw invalidArgument('token', 'give user_token_id or user_token_jwt');
      let s: SessionHandle | undefined;
      if (t.$case === 'userTokenId') {
        s = await activeById(t.value);
      } else {
        if (t.value.length > 64 * 1024) throw invalidArgument('user_token_jwt', 'at most 64 KiB');
        s = await sessionFromJwt(t.value, app.id);
      }
      if (!s) return { active: false, userToken: undefined };
      return { active: true, userToken: userTokenView(vc, s, app) };
    },

    async getUserTokenByUserTokenId(req, ctx) {
      const app = await callerApp(ctx);
      return viewAndJwt(await requireActive(req.userTokenId), app);
    },

    async createUserTicket(req, ctx) {
      const app = await callerApp(ctx);
      const s = await requireActive(req.userTokenId);
      const target = req.ticketApplicationId ? targetApp(req.ticketApplicationId, 'ticket_application_id') : app;
      const t = await sessions.createTicket(s.tokenId, target.id, policy.userTicketLifetimeMs);
      audit('user.ticket_created', { application: app.id, for: target.id, sid: s.sid });
      return { userTicket: t.ticket, expireTime: new Date(t.expiresAt) };
    },

    async getUserTokenByUserTicket(req, ctx) {
      const app = await callerApp(ctx);
      const notFound = () => new StsError('not_found', 'user ticket not found: unknown, used, expired or not for this application');
      if (req.userTicket.length === 0 || req.userTicket.length > 256) throw notFound();
      // Consumed before any check: a ticket shown to the wrong application is spent, never reusable.
      const ticket = await sessions.consumeTicket(req.userTicket);
      if (!ticket || ticket.applicationId !== app.id) throw notFound();
      const s = await activeById(ticket.tokenId);
      if (!s) throw notFound();
      audit('user.ticket_redeemed', { application: app.id, sid: s.sid });
      return viewAndJwt(s, app);
    },

    async refreshUserToken(req, ctx) {
      const app = await callerApp(ctx);
      const s = await requireActive(req.userTokenId);
      const record = await sessions.refreshSession(s.sid, s.record);
      if (!record) throw new StsError('not_found', SESSION_NOT_ACTIVE);
      return viewAndJwt({ ...s, record }, app);
    },

    async releaseUserToken(req, ctx) {
      const app = await callerApp(ctx);
      if (req.userTokenId.length > 0 && req.userTokenId.length <= 256) {
        const sid = refOf(req.userTokenId);
        await sessions.releaseSession(sid);
        audit('user.logout', { application: app.id, sid });
      }
      return {};
    },

    async releaseUserSessions(req, ctx) {
      const caller = await admin(ctx);
      const uid = text('uid', req.uid, 1, 128);
      const count = await sessions.releaseSessionsOf(uid);
      audit('user.sessions_released', { uid, count, by: caller.id });
      return { releasedCount: count };
    },

    async listUserSessions(req, ctx) {
      await admin(ctx);
      const uid = text('uid', req.uid, 1, 128);
      const list = (await sessions.sessionsOf(uid)).sort((a, b) => b.record.issuedAt - a.record.issuedAt);
      return {
        sessions: list.map(({ sid, record }) => ({
          sessionRef: sid,
          applicationId: record.applicationId,
          securityLevel: record.securityLevel,
          issueTime: new Date(record.issuedAt),
          expireTime: new Date(record.expiresAt),
          absoluteExpireTime: new Date(record.absoluteExpiresAt),
        })),
      };
    },

    async transformUserToken(req, ctx) {
      const caller = await callerApp(ctx);
      let s = await requireActive(req.userTokenId);
      const target = targetApp(req.targetApplicationId, 'target_application_id');
      const proof = req.stepUp?.proof;
      if (proof) {
        const { value: password, spend } =
          proof.$case === 'password'
            ? { value: proof.value, spend: undefined }
            : await openCredential(proof.value, { field: 'step_up.password_jwe', invalid: INVALID_USER_CREDENTIALS, event: 'user.logon_failed', ctx, application: caller.id }, (o) =>
                str(o, 'password', 'step_up.password_jwe'),
              );
        text('step_up.password', password, 1, 1024);
        await checkPassword(s.user.username, password, ctx.peer, spend);
        // A fresh password proof on top of the session's own logon: two proofs.
        const record = await sessions.raiseSecurityLevel(s.sid, s.record, SECURITY_LEVEL.stepUp);
        if (!record) throw new StsError('not_found', SESSION_NOT_ACTIVE);
        audit('user.step_up', { uid: s.user.uid, sid: s.sid, securityLevel: record.securityLevel });
        s = { ...s, record };
      }
      return viewAndJwt(s, target, caller);
    },

    async createUserFromThirdPartyToken(req, ctx) {
      const app = await callerApp(ctx);
      if (!deps.verifyThirdParty) throw new StsError('failed_precondition', 'no identity providers are configured');
      if (req.thirdPartyToken.length === 0 || req.thirdPartyToken.length > 16 * 1024) throw invalidArgument('third_party_token', 'must be 1 to 16384 characters');
      const ticketApp = req.ticketApplicationId ? targetApp(req.ticketApplicationId, 'ticket_application_id') : app;
      const id = await deps.verifyThirdParty(req.thirdPartyToken);
      let user = directory.findUserByExternal(id.issuer, id.subject);
      let created = false;
      if (!user) {
        const c = id.claims;
        const s = (k: string) => (typeof c[k] === 'string' ? (c[k] as string).slice(0, MAX_TEXT) : '');
        const preferred = s('preferred_username') || s('email');
        const username = preferred && !directory.findUserByUsername(preferred) ? preferred : `${id.subject.slice(0, 128)}@${new URL(id.issuer).host || 'idp'}`;
        try {
          user = directory.createUser(
            { username, firstName: s('given_name'), lastName: s('family_name'), email: s('email'), cellphone: s('phone_number'), personRef: '', passwordHash: null, disabled: false, externalIssuer: id.issuer, externalSubject: id.subject },
            app.defaultRoles,
            clock.now(),
          );
          created = true;
          audit('user.created', { uid: user.uid, application: app.id, issuer: id.issuer });
        } catch (err) {
          // Two first logons raced: the other one created the user.
          user = directory.findUserByExternal(id.issuer, id.subject);
          if (!user) throw err;
        }
      }
      if (user.disabled) throw new StsError('invalid_credentials', INVALID_USER_CREDENTIALS);
      const s = await startSession(user, app, id.securityLevel, 'third_party');
      const ticket = await sessions.createTicket(s.tokenId, ticketApp.id, policy.userTicketLifetimeMs);
      return { ...viewAndJwt(s, app), userTicket: ticket.ticket, userCreated: created };
    },

    async createApplication(req, ctx) {
      const caller = await admin(ctx);
      const a = req.application;
      if (!a) throw invalidArgument('application', 'is required');
      if (!APP_ID.test(a.applicationId)) throw invalidArgument('application.application_id', '1 to 128 characters of A-Z a-z 0-9 . _ -');
      const secret = req.applicationSecret || newSecret();
      if (secret.length < 24 || secret.length > 1024) throw invalidArgument('application_secret', 'must be 24 to 1024 characters (or empty to let STS make one)');
      const record: ApplicationRecord = {
        ...appFields(a, 'application'),
        id: a.applicationId,
        secretHash: await hashSecret(secret, APP_SECRET_PARAMS),
        disabled: a.disabled,
        createdAt: clock.now(),
      };
      directory.createApplication(record);
      audit('application.created', { application: record.id, by: caller.id, trusted: record.trusted, admin: record.admin });
      return { application: applicationPb(record), applicationSecret: secret };
    },

    async updateApplication(req, ctx) {
      const caller = await admin(ctx);
      const a = req.application;
      if (!a) throw invalidArgument('application', 'is required');
      const current = directory.getApplication(text('application.application_id', a.applicationId, 1, 128));
      if (!current) throw new StsError('not_found', `application ${a.applicationId} not found`);
      const paths = maskPaths(req.updateMask, APP_MUTABLE, 'update_mask');
      const fields = appFields(a, 'application');
      const next: ApplicationRecord = { ...current };
      const set = <K extends keyof ApplicationRecord>(path: string, key: K, value: ApplicationRecord[K]) => {
        if (paths.has(path)) next[key] = value;
      };
      set('name', 'name', fields.name);
      set('tags', 'tags', fields.tags);
      set('default_roles', 'defaultRoles', fields.defaultRoles);
      set('trusted', 'trusted', fields.trusted);
      set('admin', 'admin', fields.admin);
      set('personal_fields_allowed', 'personalFields', fields.personalFields);
      set('full_token', 'fullToken', fields.fullToken);
      set('minimum_security_level', 'minSecurityLevel', fields.minSecurityLevel);
      set('user_token_idle_timeout', 'idleTimeoutMs', fields.idleTimeoutMs);
      set('user_token_max_lifetime', 'maxLifetimeMs', fields.maxLifetimeMs);
      set('disabled', 'disabled', a.disabled);
      if (req.applicationSecret) {
        if (req.applicationSecret.length < 24 || req.applicationSecret.length > 1024) throw invalidArgument('application_secret', 'must be 24 to 1024 characters');
        next.secretHash = await hashSecret(req.applicationSecret, APP_SECRET_PARAMS);
      }
      directory.updateApplication(next);
      // Disabling an application, or changing its secret (after a leak, typically), ends its tokens at once.
      if ((next.disabled && !current.disabled) || req.applicationSecret) await sessions.releaseAppTokensOf(next.id);
      audit('application.updated', { application: next.id, by: caller.id, fields: [...paths], secretChanged: Boolean(req.applicationSecret) });
      return { application: applicationPb(next) };
    },

    async listApplications(_req, ctx) {
      await admin(ctx);
      return { applications: directory.listApplications().map(applicationPb) };
    },

    async createUser(req, ctx) {
      const caller = await admin(ctx);
      const u = req.user;
      if (!u) throw invalidArgument('user', 'is required');
      if (req.password && (req.password.length < 8 || req.password.length > 1024)) throw invalidArgument('password', 'must be 8 to 1024 characters');
      const record = directory.createUser(
        { ...userFields(u, 'user'), passwordHash: req.password ? await hashSecret(req.password) : null, disabled: u.disabled, externalIssuer: null, externalSubject: null },
        [],
        clock.now(),
      );
      audit('user.created', { uid: record.uid, by: caller.id });
      return { user: userPb(record) };
    },

    async updateUser(req, ctx) {
      const caller = await admin(ctx);
      const u = req.user;
      if (!u) throw invalidArgument('user', 'is required');
      const current = directory.getUser(text('user.uid', u.uid, 1, 128));
      if (!current) throw new StsError('not_found', `user ${u.uid} not found`);
      const paths = maskPaths(req.updateMask, USER_MUTABLE, 'update_mask');
      const fields = userFields(u, 'user');
      const next: UserRecord = { ...current };
      if (paths.has('username')) next.username = fields.username;
      if (paths.has('first_name')) next.firstName = fields.firstName;
      if (paths.has('last_name')) next.lastName = fields.lastName;
      if (paths.has('email')) next.email = fields.email;
      if (paths.has('cellphone')) next.cellphone = fields.cellphone;
      if (paths.has('person_ref')) next.personRef = fields.personRef;
      if (paths.has('disabled')) next.disabled = u.disabled;
      if (req.password) {
        if (req.password.length < 8 || req.password.length > 1024) throw invalidArgument('password', 'must be 8 to 1024 characters');
        next.passwordHash = await hashSecret(req.password);
      }
      directory.updateUser(next);
      // ASVS 7.4.2 / 7.4.3: disabling a user, or changing the password, ends their sessions everywhere.
      let released = 0;
      if ((next.disabled && !current.disabled) || req.password) released = await sessions.releaseSessionsOf(next.uid);
      audit('user.updated', { uid: next.uid, by: caller.id, fields: [...paths], passwordChanged: Boolean(req.password), sessionsReleased: released });
      return { user: userPb(next) };
    },

    async listUsers(req, ctx) {
      await admin(ctx);
      const size = req.pageSize === 0 ? 100 : req.pageSize;
      if (size > 1000) throw invalidArgument('page_size', 'at most 1000');
      const users = directory.listUsers(text('username_prefix', req.usernamePrefix, 0, 256), text('page_token', req.pageToken, 0, 256), size + 1);
      const page = users.slice(0, size);
      return { users: page.map(userPb), nextPageToken: users.length > size ? page.at(-1)!.username : '' };
    },

    async addUserRole(req, ctx) {
      const caller = await admin(ctx);
      const role = roleRecord(req.role, 'role');
      if (!directory.getApplication(role.applicationId)) throw new StsError('not_found', `role.application_id: application ${role.applicationId} not found`);
      directory.addRole(text('uid', req.uid, 1, 128), role);
      audit('user.role_added', { uid: req.uid, application: role.applicationId, role: role.roleName, by: caller.id });
      return {};
    },

    async removeUserRole(req, ctx) {
      const caller = await admin(ctx);
      const role = roleRecord(req.role, 'role');
      if (!directory.removeRole(text('uid', req.uid, 1, 128), role)) throw new StsError('not_found', 'no such role for this user');
      audit('user.role_removed', { uid: req.uid, application: role.applicationId, role: role.roleName, by: caller.id });
      return {};
    },
  };

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
}

export function appFields(a: Application, field: string): Omit<ApplicationRecord, 'id' | 'secretHash' | 'disabled' | 'createdAt'> {
  if (a.minimumSecurityLevel > 4) throw invalidArgument(`${field}.minimum_security_level`, 'must be 0 to 4');
  if (a.tags.length > 64) throw invalidArgument(`${field}.tags`, 'at most 64 tags');
  a.tags.forEach((t, i) => text(`${field}.tags[${i}]`, t, 1, 128));
  return {
    name: text(`${field}.name`, a.name, 1, 256),
    tags: a.tags,
    defaultRoles: a.defaultRoles.map((r, i) => roleRecord(r, `${field}.default_roles[${i}]`)),
    trusted: a.trusted,
    admin: a.admin,
    personalFields: a.personalFieldsAllowed,
    fullToken: a.fullToken,
    minSecurityLevel: a.minimumSecurityLevel,
    idleTimeoutMs: durationMs(a.userTokenIdleTimeout, `${field}.user_token_idle_timeout`),
    maxLifetimeMs: durationMs(a.userTokenMaxLifetime, `${field}.user_token_max_lifetime`),
  };
}

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

