/**
 * SessionService, handing a session to another application: one-time user tickets (CreateUserTicket,
 * GetUserTokenByUserTicket) and TransformUserToken (another application's view, with an optional step-up).
 */
import { StsError } from '../errors.js';
import { SECURITY_LEVEL } from './sessions.js';
import { INVALID_USER_CREDENTIALS, SESSION_NOT_ACTIVE, type SessionHandlers, type SessionKit, text } from './session-common.js';

export function handover(k: SessionKit): SessionHandlers {
  const { audit, callerApp, targetApp, activeById, requireActive, viewAndJwt, openCredential, str, checkPassword } = k;
  const { sessions, policy } = k.deps;
  return {
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
  };
}
