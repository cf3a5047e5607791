/**
 * SessionService, application sessions: LogonApplication, and the application token RPCs (validate, renew,
 * release) and GetApplicationInfo.
 */
import { StsError, invalidArgument } from '../errors.js';
import type { ApplicationToken } from '../gen/sts/v1/common.js';
import type { ApplicationRecord } from './directory.js';
import { addressOf } from './throttle.js';
import { type Checked, isMadeBySts } from './password.js';
import type { AppTokenRecord } from './sessions.js';
import { INVALID_APP_CREDENTIALS, type SessionHandlers, type SessionKit, applicationPb, text } from './session-common.js';

function appTokenPb(id: string, app: ApplicationRecord, rec: AppTokenRecord): ApplicationToken {
  return { applicationTokenId: id, applicationId: app.id, applicationName: app.name, issueTime: new Date(rec.issuedAt), expireTime: new Date(rec.expiresAt) };
}

export function appSessions(k: SessionKit): SessionHandlers {
  const { audit, callerApp, openCredential, stillHolds, str, throttledCheck, turnOf, upgradeHash } = k;
  const { directory, sessions, auth, policy, hashes } = k.deps;
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
      // A known id's failures are counted, and its hashes queued, under the id; unknown ids under the address
      // they come from, so that nobody's guesses can refuse or delay an application presenting its secret. A
      // keyed hash (the secrets STS makes, and unknown ids) is checked at once, without a turn, and a known id
      // whose secret STS made is never throttled (throttle.ts: nobody can lock it out by failing with its id).
      let found = directory.getApplication(id);
      const known = found !== undefined;
      let checked: Checked = { ok: false };
      await throttledCheck(
        { kind: 'application', applicationId: id, known, madeBySts: known && isMadeBySts(found!.secretHash), peer: ctx.peer },
        () => turnOf(known ? `logon:${id}` : `address:${addressOf(ctx.peer)}`, directory.getApplication(id)?.secretHash, 'application'),
        ctx,
        async () => {
          found = directory.getApplication(id);
          checked = await hashes.checkApplicationSecret(id, secret, found?.secretHash);
          return checked.ok && found !== undefined && !found.disabled;
        },
        spend,
        { event: 'application.logon_failed', message: INVALID_APP_CREDENTIALS },
      );
      upgradeHash('application', id, found!.secretHash, checked);
      const app = found!;
      const token = await sessions.createAppToken(app.id, policy.applicationTokenLifetimeMs, policy.applicationTokenMaxLifetimeMs);
      // A secret reset or a disable since the check (while the hash ran, or since) wins: the token goes.
      if (!stillHolds('application', id, app.secretHash, checked)) {
        await sessions.releaseAppToken(token.id);
        throw new StsError('invalid_credentials', INVALID_APP_CREDENTIALS);
      }
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
  };
}
