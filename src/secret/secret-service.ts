/**
 * SecretService handlers: grpc-free domain functions over the identity provider and resource server
 * registries and the users' secrets.
 *
 * A release (GetUserSecret, ExchangeToken) runs in this order, so nothing is created for a request that is
 * refused: the caller must be a registered resource server; the user's token must verify with a trusted
 * identity provider; its audience must be one the resource server may present; the resource server's
 * encryption key must be at hand; only then is the user's secret read (or made, once) and encrypted to it.
 */
import { randomBytes } from 'node:crypto';
import type { Authenticator, Caller } from '../auth/caller.js';
import type { Clock } from '../clock.js';
import { StsError } from '../errors.js';
import type { SecretServiceServer } from '../gen/sts/v1/secret.js';
import type { Logger } from '../log.js';
import { TOKEN_TYP, signCompact } from '../pop/jose-ops.js';
import type { KeyRing } from '../pop/key-ring.js';
import type { CallContext, DomainService } from '../rpc-contract.js';
import { type IdentityProviderRegistry, type VerifiedIdentity, identityProviderPb, identityProviderRecord, text } from './identity-providers.js';
import { type ResourceServerRecord, type ResourceServerRegistry, resourceServerPb, resourceServerRecord } from './resource-servers.js';
import type { UserSecrets } from './user-secrets.js';

export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const INPUT_TOKEN_TYPES = [TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS_TOKEN];
/** RFC 6749 section 3.3: scope tokens are printable ASCII except space, '"' and '\', separated by spaces. */
const SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/;

export interface SecretServicePolicy {
  /** "iss" of the tokens ExchangeToken issues (session.issuer). */
  issuer: string;
  /** Lifetime of the tokens ExchangeToken issues. */
  exchangedTokenLifetimeMs: number;
}

export interface SecretServiceDeps {
  auth: Authenticator;
  ring: KeyRing;
  clock: Clock;
  logger: Logger;
  identityProviders: IdentityProviderRegistry;
  resourceServers: ResourceServerRegistry;
  userSecrets: UserSecrets;
  /** True when the directory has this application (resource servers name one as their credential). */
  applicationExists: (applicationId: string) => boolean;
  policy: SecretServicePolicy;
}

type Via = 'GetUserSecret' | 'ExchangeToken';

/** The RFC 6749/8693 error name of a failure that did not set one itself. */
const OAUTH_ERROR_BY_CODE: Partial<Record<StsError['code'], string>> = {
  invalid_argument: 'invalid_request',
  token_invalid: 'invalid_grant',
  unauthenticated: 'invalid_client',
  invalid_credentials: 'invalid_client',
  permission_denied: 'unauthorized_client',
  unavailable: 'temporarily_unavailable',
};

function oauthError(oauth: string, code: StsError['code'], message: string, field?: string): StsError {
  return new StsError(code, message, { oauthError: oauth, ...(field ? { field } : {}) });
}

/** Gives every StsError of `fn` an OAuth error name (RFC 8693 section 2.2.2). */
async function withOAuthErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof StsError) || err.oauthError !== undefined || err.code === 'internal') throw err;
    throw new StsError(err.code, err.message, {
      cause: err.cause,
      ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}),
      ...(err.field !== undefined ? { field: err.field } : {}),
      oauthError: OAUTH_ERROR_BY_CODE[err.code] ?? 'server_error',
    });
  }
}

export function secretService(deps: SecretServiceDeps): DomainService<SecretServiceServer> {
  const { auth, ring, clock, logger, identityProviders: idps, resourceServers: servers, userSecrets, policy } = deps;

  const audit = (event: string, fields: Record<string, unknown>): void => logger.info('audit', { event, ...fields });

  async function admin(ctx: CallContext): Promise<Caller> {
    const caller = await auth.requireAdmin(ctx.bearer);
    ctx.logFields.caller = caller.id;
    return caller;
  }

  /** The calling resource server: by its mTLS certificate, else by its application token. */
  async function resourceServer(ctx: CallContext): Promise<ResourceServerRecord> {
    if (ctx.clientCertSha256) {
      const rs = servers.byCertificate(ctx.clientCertSha256);
      if (rs) {
        ctx.logFields.caller = `resource_server:${rs.id}`;
        return rs;
      }
    }
    const caller = await auth.authenticate(ctx.bearer);
    ctx.logFields.caller = caller.id;
    const rs = caller.kind === 'application' ? servers.byApplication(caller.id) : undefined;
    if (!rs) throw new StsError('permission_denied', `${caller.kind} ${caller.id} is not a registered resource server`);
    return rs;
  }

  /** Checks the audience, then reads or makes the user's secret and encrypts it to the resource server. */
  async function release(rs: ResourceServerRecord, user: VerifiedIdentity, via: Via, fields: Record<string, unknown> = {}) {
    if (!user.audience.some((a) => rs.audiences.includes(a))) {
      throw new StsError('permission_denied', `resource server ${rs.id} may not present tokens for this audience`, {
        ...(via === 'ExchangeToken' ? { oauthError: 'invalid_grant' } : {}),
      });
    }
    // The recipient key first: when it cannot be had, no secret is made for nothing.
    const recipient = await servers.recipientKey(rs);
    const s = await userSecrets.getOrCreate(user.issuer, user.subject);
    let jwe: string;
    try {
      jwe = await recipient.encrypt(s.secret);
    } finally {
      s.secret.fill(0);
    }
    // Never the secret, the token or the raw subject: the record id names the user's secret.
    audit('secret.released', { via, resourceServer: rs.id, issuer: user.issuer, record: s.id, created: s.created, recipientKid: recipient.kid, ...fields });
    return { jwe, recipientKid: recipient.kid, createdAt: s.createdAt };
  }

  function checkTargets(rs: ResourceServerRecord, field: string, values: readonly string[]): void {
    values.forEach((v, i) => {
      if (v !== rs.id && !rs.audiences.includes(v)) {
        throw oauthError('invalid_target', 'invalid_argument', `${field}[${i}]: not a target of resource server ${rs.id} (its id or one of its audiences)`, field);
      }
    });
  }

  return {
    async getUserSecret(req, ctx) {
      const rs = await resourceServer(ctx);
      const user = await idps.verify(req.subjectToken, { field: 'subject_token', label: 'subject token' });
      const out = await release(rs, user, 'GetUserSecret');
      return { secretJwe: out.jwe, subject: user.subject, issuer: user.issuer, recipientKid: out.recipientKid, createTime: new Date(out.createdAt) };
    },

    async exchangeToken(req, ctx) {
      return withOAuthErrors(async () => {
        const rs = await resourceServer(ctx);
        if (!req.grantType) throw oauthError('invalid_request', 'invalid_argument', `grant_type: is required ("${GRANT_TYPE_TOKEN_EXCHANGE}")`, 'grant_type');
        if (req.grantType !== GRANT_TYPE_TOKEN_EXCHANGE) {
          throw oauthError('unsupported_grant_type', 'invalid_argument', `grant_type: must be "${GRANT_TYPE_TOKEN_EXCHANGE}"`, 'grant_type');
        }
        if (!req.subjectToken) throw oauthError('invalid_request', 'invalid_argument', 'subject_token: is required', 'subject_token');
        if (!req.subjectTokenType) throw oauthError('invalid_request', 'invalid_argument', 'subject_token_type: is required', 'subject_token_type');
        const types = INPUT_TOKEN_TYPES.map((t) => `"${t}"`).join(' or ');
        if (!INPUT_TOKEN_TYPES.includes(req.subjectTokenType)) throw oauthError('unsupported_token_type', 'invalid_argument', `subject_token_type: must be ${types}`, 'subject_token_type');
        if (req.actorToken && !req.actorTokenType) throw oauthError('invalid_request', 'invalid_argument', 'actor_token_type: is required with actor_token', 'actor_token_type');
        if (!req.actorToken && req.actorTokenType) throw oauthError('invalid_request', 'invalid_argument', 'actor_token_type: given without actor_token', 'actor_token_type');
        if (req.actorTokenType && !INPUT_TOKEN_TYPES.includes(req.actorTokenType)) throw oauthError('unsupported_token_type', 'invalid_argument', `actor_token_type: must be ${types}`, 'actor_token_type');
        if (req.requestedTokenType && req.requestedTokenType !== TOKEN_TYPE_JWT) {
          throw oauthError('unsupported_token_type', 'invalid_argument', `requested_token_type: must be empty or "${TOKEN_TYPE_JWT}"`, 'requested_token_type');
        }
        checkTargets(rs, 'audience', req.audience);
        checkTargets(rs, 'resource', req.resource);
        if (req.scope !== '' && (req.scope.length > 1024 || !SCOPE.test(req.scope))) {
          throw oauthError('invalid_scope', 'invalid_argument', 'scope: space-separated scope tokens (RFC 6749 section 3.3), at most 1024 characters', 'scope');
        }

        const user = await idps.verify(req.subjectToken, { field: 'subject_token', label: 'subject token' });
        const actor = req.actorToken ? await idps.verify(req.actorToken, { field: 'actor_token', label: 'actor token' }) : undefined;
        const jti = randomBytes(16).toString('base64url');
        const out = await release(rs, user, 'ExchangeToken', { jti, ...(actor ? { actorIssuer: actor.issuer } : {}) });
        const iat = Math.floor(clock.now() / 1000);
        const lifetimeS = Math.floor(policy.exchangedTokenLifetimeMs / 1000);
        const claims: Record<string, unknown> = {
          iss: policy.issuer,
          sub: user.subject,
          aud: rs.id,
          iat,
          exp: iat + lifetimeS,
          jti,
          // RFC 8693 section 4.1: the acting party; section 4.4: who may act, as the subject token said.
          ...(actor ? { act: { sub: actor.subject, iss: actor.issuer } } : {}),
          ...(user.claims.may_act !== undefined ? { may_act: user.claims.may_act } : {}),
          ...(req.scope ? { scope: req.scope } : {}),
          secret_jwe: out.jwe,
        };
        const { jws } = signCompact(ring, Buffer.from(JSON.stringify(claims)), { typ: TOKEN_TYP.exchange });
        return { accessToken: jws, issuedTokenType: TOKEN_TYPE_JWT, tokenType: 'N_A', expiresIn: lifetimeS, scope: req.scope };
      });
    },

    async putIdentityProvider(req, ctx) {
      const caller = await admin(ctx);
      const record = identityProviderRecord(req.identityProvider, 'identity_provider', clock.now(), { issuer: policy.issuer, isOwnKey: (k) => ring.isOwnPublicKey(k) });
      idps.put(record);
      audit('secret.identity_provider_put', { issuer: record.issuer, by: caller.id });
      return { identityProvider: identityProviderPb(record) };
    },

    async listIdentityProviders(_req, ctx) {
      await admin(ctx);
      return { identityProviders: idps.list().map(identityProviderPb) };
    },

    async deleteIdentityProvider(req, ctx) {
      const caller = await admin(ctx);
      const issuer = text('issuer', req.issuer, 1, 512);
      if (!idps.delete(issuer)) throw new StsError('not_found', `issuer: identity provider ${issuer} not found`);
      audit('secret.identity_provider_deleted', { issuer, by: caller.id });
      return {};
    },

    async putResourceServer(req, ctx) {
      const caller = await admin(ctx);
      const record = resourceServerRecord(req.resourceServer, 'resource_server', clock.now());
      if (record.applicationId !== null && !deps.applicationExists(record.applicationId)) {
        throw new StsError('not_found', `resource_server.application_id: application ${record.applicationId} not found`);
      }
      servers.put(record, 'resource_server');
      audit('secret.resource_server_put', { resourceServer: record.id, by: caller.id });
      return { resourceServer: resourceServerPb(record) };
    },

    async listResourceServers(_req, ctx) {
      await admin(ctx);
      return { resourceServers: servers.list().map(resourceServerPb) };
    },

    async deleteResourceServer(req, ctx) {
      const caller = await admin(ctx);
      const id = text('resource_server_id', req.resourceServerId, 1, 128);
      if (!servers.delete(id)) throw new StsError('not_found', `resource_server_id: resource server ${id} not found`);
      audit('secret.resource_server_deleted', { resourceServer: id, by: caller.id });
      return {};
    },
  };
}
