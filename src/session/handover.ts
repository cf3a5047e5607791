/**
 * SessionService, handing a session to another application: one-time user tickets (CreateUserTicket,
 * GetUserTokenByUserTicket) and TransformUserToken (another application's view, with an optional step-up).
 *
 * Both make the other application a participant of the session with a user token id of its own; neither ever
 * hands one application's token id to another. Only a participant may hand its session on, with its own id.
 */
import { StsError } from '../errors.js';
import { SECURITY_LEVEL } from './sessions.js';
import { INVALID_USER_CREDENTIALS, SESSION_NOT_ACTIVE, type SessionHandlers, type SessionKit, text } from './session-common.js';

export function handover(k: SessionKit): SessionHandlers {
  const { audit, callerApp, targetApp, activeBySid, requireActive, viewAndJwt, joinAndView, openCredential, str, checkPassword } = k;
  const { sessions, policy } = k.deps;
  return {
    async createUserTicket(req, ctx) {
      const app = await callerApp(ctx);
      const s = await requireActive(req.userTokenId, app, ctx);
      const target = req.ticketApplicationId ? targetApp(req.ticketApplicationId, 'ticket_application_id') : app;
      const t = await sessions.createTicket(s.sid, target.id, policy.userTicketLifetimeMs);
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
      const s = await activeBySid(ticket.sid);
      if (!s) throw notFound();
      audit('user.ticket_redeemed', { application: app.id, sid: s.sid });
      // The redeemer joins with a token id of its own: a ticket's binding to one application outlives it.
      return joinAndView({ ...s, tokenId: '', ref: '', participant: '' }, app, 'ticket');
    },

    async transformUserToken(req, ctx) {
      const caller = await callerApp(ctx);
      let s = await requireActive(req.userTokenId, caller, ctx);
      const target = targetApp(req.targetApplicationId, 'target_application_id');
      // The view is a credential for the target (a JWT it accepts, with its roles): only the target itself or
      // an application the target names may make one. Trusted and admin applications get no exception.
      if (target.id !== caller.id && !target.transformSources.includes(caller.id)) {
        throw new StsError('permission_denied', `application ${target.id} does not accept views made by application ${caller.id} (transform_sources)`);
      }
      const proof = req.stepUp?.proof;
      if (proof) {
        const { value: password, spend } =
          proof.$case === 'password'
            ? { value: proof.value, spend: undefined }
            : await openCredential(proof.value, { field: 'step_up.password_jwe', invalid: INVALID_USER_CREDENTIALS, event: 'user.logon_failed', ctx, application: caller.id }, (o) =>
                str(o, 'password', 'step_up.password_jwe'),
              );
        text('step_up.password', password, 1, 1024);
        await checkPassword(caller, s.user.username, password, ctx, spend);
        // A fresh password proof on top of the session's own logon: two proofs.
        const record = await sessions.raiseSecurityLevel(s.sid, s.record, SECURITY_LEVEL.stepUp);
        if (!record) throw new StsError('not_found', SESSION_NOT_ACTIVE);
        audit('user.step_up', { uid: s.user.uid, sid: s.sid, securityLevel: record.securityLevel });
        s = { ...s, record };
      }
      return target.id === caller.id ? viewAndJwt(s, caller) : joinAndView(s, target, 'transform', caller);
    },
  };
}
