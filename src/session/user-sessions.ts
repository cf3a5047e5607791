/**
 * SessionService, user sessions: LogonUser and logons with a third-party token, validation, refresh and
 * release of a session, and the administrators' view of a user's sessions.
 */
import { StsError, invalidArgument } from '../errors.js';
import { SECURITY_LEVEL, refOf } from './sessions.js';
import { INVALID_USER_CREDENTIALS, SESSION_NOT_ACTIVE, type SessionHandlers, type SessionKit, text, userFields } from './session-common.js';
import { type SessionHandle, userTokenView } from './user-token-view.js';

export function userSessions(k: SessionKit): SessionHandlers {
  const { vc, audit, callerApp, admin, targetApp, sessionOf, requireActive, viewAndJwt, openCredential, str, checkPassword, startSession, sessionFromJwt } = k;
  const { deps } = k;
  const { directory, sessions, clock, policy } = deps;
  return {
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
      const { user, holds } = await checkPassword(app, username, password, ctx, spend);
      const s = await startSession(user, app, SECURITY_LEVEL.password, 'password');
      if (!holds()) {
        await sessions.releaseSession(s.sid);
        throw new StsError('invalid_credentials', INVALID_USER_CREDENTIALS);
      }
      const out = viewAndJwt(s, app);
      const ticket = ticketApp ? await sessions.createTicket(s.sid, ticketApp.id, policy.userTicketLifetimeMs) : undefined;
      return { ...out, userTicket: ticket?.ticket ?? '' };
    },

    async validateUserToken(req, ctx) {
      const app = await callerApp(ctx);
      const t = req.token;
      if (!t) throw invalidArgument('token', 'give user_token_id or user_token_jwt');
      let s: SessionHandle | undefined;
      if (t.$case === 'userTokenId') {
        s = await sessionOf(t.value, app, ctx);
      } else {
        if (t.value.length > 64 * 1024) throw invalidArgument('user_token_jwt', 'at most 64 KiB');
        s = await sessionFromJwt(t.value, app, ctx);
      }
      if (!s) return { active: false, userToken: undefined };
      return { active: true, userToken: userTokenView(vc, s, app) };
    },

    async getUserTokenByUserTokenId(req, ctx) {
      const app = await callerApp(ctx);
      return viewAndJwt(await requireActive(req.userTokenId, app, ctx), app);
    },

    async refreshUserToken(req, ctx) {
      const app = await callerApp(ctx);
      const s = await requireActive(req.userTokenId, app, ctx);
      const record = await sessions.refreshSession(s.sid, s.record);
      if (!record) throw new StsError('not_found', SESSION_NOT_ACTIVE);
      return viewAndJwt({ ...s, record }, app);
    },

    async releaseUserToken(req, ctx) {
      const app = await callerApp(ctx);
      // Another application's token id (unless the caller is an administrator application), an unknown and an
      // ended one are answered alike, and change nothing.
      const s = await sessionOf(req.userTokenId, app, ctx);
      if (s) {
        if (req.endSession) {
          await sessions.releaseSession(s.sid);
          audit('user.logout', { application: app.id, sid: s.sid, scope: 'session', ...(s.participant !== app.id ? { participant: s.participant } : {}) });
        } else {
          const ended = await sessions.leave(s.sid, s.participant);
          audit('user.logout', { application: app.id, sid: s.sid, scope: 'application', participant: s.participant, sessionEnded: ended });
        }
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
        sessions: await Promise.all(
          list.map(async ({ sid, record }) => ({
            sessionRef: sid,
            applicationId: record.applicationId,
            securityLevel: record.securityLevel,
            issueTime: new Date(record.issuedAt),
            expireTime: new Date(record.expiresAt),
            absoluteExpireTime: new Date(record.absoluteExpiresAt),
            participantApplicationIds: [...new Set((await sessions.participantsOf(sid, record)).map((p) => p.applicationId))].sort(),
          })),
        ),
      };
    },

    async createUserFromThirdPartyToken(req, ctx) {
      const app = await callerApp(ctx);
      if (!deps.verifyThirdParty) throw new StsError('failed_precondition', 'no identity providers are configured');
      if (req.thirdPartyToken.length === 0 || req.thirdPartyToken.length > 16 * 1024) throw invalidArgument('third_party_token', 'must be 1 to 16384 characters');
      const ticketApp = req.ticketApplicationId ? targetApp(req.ticketApplicationId, 'ticket_application_id') : app;
      const id = await deps.verifyThirdParty(req.thirdPartyToken, app.id);
      // Used once (RFC 7519 section 4.1.7): of concurrent uses of one token, on any node, exactly one wins.
      if (id.jti !== undefined && !(await sessions.spendThirdPartyId(id.issuer, id.jti, id.acceptableUntil - clock.now()))) {
        audit('user.logon_failed', { application: app.id, issuer: id.issuer, reason: 'third_party_token_replayed', jtiRef: refOf(id.jti) });
        throw new StsError('token_invalid', 'third-party token already used: each token starts one session');
      }
      let user = directory.findUserByExternal(id.issuer, id.subject);
      let created = false;
      if (!user) {
        const fields = userFromClaims(id.claims, id.issuer, id.subject, (name) => !directory.findUserByUsername(name));
        try {
          user = directory.createUser({ ...fields, personRef: '', passwordHash: null, disabled: false, externalIssuer: id.issuer, externalSubject: id.subject }, app.defaultRoles, clock.now());
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
      const ticket = await sessions.createTicket(s.sid, ticketApp.id, policy.userTicketLifetimeMs);
      return { ...viewAndJwt(s, app), userTicket: ticket.ticket, userCreated: created };
    },
  };
}

/** The user field each claim fills (OpenID Connect Core section 5.1 names). */
const CLAIM_OF: Record<string, string> = { first_name: 'given_name', last_name: 'family_name', email: 'email', cellphone: 'phone_number' };

/**
 * A new user's fields from an identity provider's claims, checked exactly as an administrator's input is
 * (userFields): a claim with control characters or too long is refused with INVALID_ARGUMENT naming it,
 * never cut or stored. The username is preferred_username, else email, unless taken; else "<sub>@<issuer host>"
 * (sub is cut to 128 characters there, as before).
 */
function userFromClaims(c: Record<string, unknown>, issuer: string, subject: string, free: (username: string) => boolean) {
  const claim = (k: string): string => (typeof c[k] === 'string' ? (c[k] as string) : '');
  const preferredFrom = claim('preferred_username') ? 'preferred_username' : claim('email') ? 'email' : undefined;
  const preferred = preferredFrom && claim(preferredFrom);
  const usernameFrom = preferred && free(preferred) ? preferredFrom! : 'sub';
  const username = usernameFrom === 'sub' ? `${subject.slice(0, 128)}@${new URL(issuer).host || 'idp'}` : preferred!;
  try {
    return userFields({ uid: '', username, firstName: claim('given_name'), lastName: claim('family_name'), email: claim('email'), cellphone: claim('phone_number'), personRef: '', disabled: false, createTime: undefined }, 'claims');
  } catch (err) {
    if (!(err instanceof StsError) || err.field === undefined) throw err;
    const field = err.field.slice('claims.'.length);
    const from = `"${field === 'username' ? usernameFrom : (CLAIM_OF[field] ?? field)}"`;
    throw invalidArgument('third_party_token', `the token's ${from} claim ${err.message.slice(err.field.length + 2)} (it becomes the user's ${field})`);
  }
}
