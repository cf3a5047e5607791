/**
 * SessionService, user sessions: LogonUser and logons with a third-party token, validation, refresh and
 * release of a session, and the administrators' view of a user's sessions.
 */
import { StsError, invalidArgument } from '../errors.js';
import { SECURITY_LEVEL, refOf } from './sessions.js';
import { INVALID_USER_CREDENTIALS, MAX_TEXT, SESSION_NOT_ACTIVE, type SessionHandlers, type SessionKit, text } from './session-common.js';
import { type SessionHandle, userTokenView } from './user-token-view.js';

export function userSessions(k: SessionKit): SessionHandlers {
  const { vc, audit, callerApp, admin, targetApp, activeById, requireActive, viewAndJwt, openCredential, str, checkPassword, startSession, sessionFromJwt } = k;
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
  };
}
