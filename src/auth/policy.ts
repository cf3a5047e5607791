/**
 * The authorization model: which caller may call which RPC. The handlers enforce it (each checks its own
 * caller); this table is the single written statement of it, printed into the README and checked cell by
 * cell by test/authorization.test.ts, so the three cannot drift apart.
 *
 * Callers, from weakest to strongest:
 * - anonymous: no credential;
 * - application: a valid application token (`authorization: Bearer <token>`);
 * - trusted: an application marked trusted (may use STS's private and secret keys);
 * - resource_server: an application (or mTLS certificate) registered as a resource server;
 * - admin: an admin API key, or an application marked admin.
 *
 * A second table, SESSION_ACCESS, says whose user token ids an application may use in the RPCs that take one
 * (a user session belongs to the applications that take part in it; see SessionService in session.proto).
 */
import type { Authenticator } from './caller.js';
import { StsError } from '../errors.js';

export type Requirement = 'anonymous' | 'authenticated' | 'application' | 'trusted' | 'resource_server' | 'admin';

export const POLICY: Record<string, Requirement> = {
  '/sts.v1.PopService/GetJwks': 'anonymous',
  '/sts.v1.PopService/Decrypt': 'trusted',
  '/sts.v1.PopService/Sign': 'trusted',
  '/sts.v1.PopService/Verify': 'authenticated',
  '/sts.v1.PopService/GenerateDataKey': 'trusted',
  '/sts.v1.PopService/Unwrap': 'trusted',
  '/sts.v1.PopService/Rewrap': 'trusted',
  '/sts.v1.PopService/RotateKeys': 'admin',
  '/sts.v1.PopService/ListKeys': 'authenticated',
  '/sts.v1.SessionService/LogonApplication': 'anonymous',
  '/sts.v1.SessionService/ValidateApplicationToken': 'authenticated',
  '/sts.v1.SessionService/RenewApplicationToken': 'application',
  '/sts.v1.SessionService/ReleaseApplicationToken': 'application',
  '/sts.v1.SessionService/GetApplicationInfo': 'application',
  '/sts.v1.SessionService/LogonUser': 'application',
  '/sts.v1.SessionService/ValidateUserToken': 'application',
  '/sts.v1.SessionService/GetUserTokenByUserTokenId': 'application',
  '/sts.v1.SessionService/CreateUserTicket': 'application',
  '/sts.v1.SessionService/GetUserTokenByUserTicket': 'application',
  '/sts.v1.SessionService/RefreshUserToken': 'application',
  '/sts.v1.SessionService/ReleaseUserToken': 'application',
  '/sts.v1.SessionService/ReleaseUserSessions': 'admin',
  '/sts.v1.SessionService/ListUserSessions': 'admin',
  '/sts.v1.SessionService/TransformUserToken': 'application',
  '/sts.v1.SessionService/CreateUserFromThirdPartyToken': 'application',
  '/sts.v1.SessionService/CreateApplication': 'admin',
  '/sts.v1.SessionService/UpdateApplication': 'admin',
  '/sts.v1.SessionService/ListApplications': 'admin',
  '/sts.v1.SessionService/CreateUser': 'admin',
  '/sts.v1.SessionService/UpdateUser': 'admin',
  '/sts.v1.SessionService/ListUsers': 'admin',
  '/sts.v1.SessionService/AddUserRole': 'admin',
  '/sts.v1.SessionService/RemoveUserRole': 'admin',
  '/sts.v1.SecretService/GetUserSecret': 'resource_server',
  '/sts.v1.SecretService/ExchangeToken': 'resource_server',
  '/sts.v1.SecretService/PutIdentityProvider': 'admin',
  '/sts.v1.SecretService/ListIdentityProviders': 'admin',
  '/sts.v1.SecretService/DeleteIdentityProvider': 'admin',
  '/sts.v1.SecretService/PutResourceServer': 'admin',
  '/sts.v1.SecretService/ListResourceServers': 'admin',
  '/sts.v1.SecretService/DeleteResourceServer': 'admin',
};

/** Caller kinds as the tests and the README table name them. */
export const CALLERS = ['anonymous', 'application', 'trusted application', 'resource server', 'admin key'] as const;
export type CallerKind = (typeof CALLERS)[number];

/** May a caller of this kind call an RPC with this requirement? */
export function allowed(req: Requirement, caller: CallerKind): boolean {
  switch (req) {
    case 'anonymous':
      return true;
    case 'authenticated':
      return caller !== 'anonymous';
    case 'application':
      // Admin keys manage STS; they are not applications and cannot hold user sessions.
      return caller === 'application' || caller === 'trusted application' || caller === 'resource server';
    case 'trusted':
      return caller === 'trusted application' || caller === 'admin key';
    case 'resource_server':
      return caller === 'resource server';
    case 'admin':
      return caller === 'admin key';
  }
}

export function policyMarkdown(): string {
  const head = `| RPC | ${CALLERS.join(' | ')} |`;
  const sep = `| --- |${CALLERS.map(() => ' :-: |').join('')}`;
  const rows = Object.entries(POLICY).map(([method, req]) => `| \`${method.slice(8)}\` | ${CALLERS.map((c) => (allowed(req, c) ? 'yes' : '-')).join(' | ')} |`);
  return [head, sep, ...rows].join('\n');
}

/**
 * Checks a caller against a method's row without running the method (used for requests that do not decode).
 * Resource servers identified by certificate are let through here; the method itself would check them.
 */
export async function checkCaller(auth: Authenticator, method: string, bearer: string | undefined, clientCert: boolean): Promise<void> {
  const req = POLICY[method];
  if (req === undefined || req === 'anonymous') return;
  if (req === 'resource_server' && clientCert && !bearer) return;
  const caller = await auth.authenticate(bearer);
  const ok =
    req === 'authenticated' ||
    (req === 'application' && caller.kind === 'application') ||
    (req === 'resource_server' && caller.kind === 'application') ||
    (req === 'trusted' && caller.trusted) ||
    (req === 'admin' && caller.admin);
  if (!ok) throw new StsError('permission_denied', `${caller.kind} ${caller.id} may not call ${method}`);
}

/**
 * Whose user token id an RPC accepts: 'own', only one issued to the calling application (a participant of the
 * session, using its own part); 'any_part', also any application's when the caller is an administrator
 * application (it manages the directory, so it could take over any account anyway; the reads and the release
 * only). Any other caller gets exactly what an unknown token id gets. The session handlers look their rule up
 * here, so this table, the README and the behaviour cannot drift apart.
 */
export type SessionRule = 'own' | 'any_part';

export const SESSION_ACCESS: Record<string, SessionRule> = {
  '/sts.v1.SessionService/ValidateUserToken': 'any_part',
  '/sts.v1.SessionService/GetUserTokenByUserTokenId': 'any_part',
  '/sts.v1.SessionService/RefreshUserToken': 'own',
  '/sts.v1.SessionService/CreateUserTicket': 'own',
  '/sts.v1.SessionService/ReleaseUserToken': 'any_part',
  '/sts.v1.SessionService/TransformUserToken': 'own',
};

/** Callers of the session access table: who presents a user token id issued to another application. */
export const SESSION_CALLERS = ['participant (its own token id)', 'other application', 'trusted application', 'admin application'] as const;
export type SessionCaller = (typeof SESSION_CALLERS)[number];

/** May this caller use a user token id that the RPC with this rule is given? */
export function sessionAllowed(rule: SessionRule, caller: SessionCaller): boolean {
  if (caller === 'participant (its own token id)') return true;
  return caller === 'admin application' && rule === 'any_part';
}

export function sessionAccessMarkdown(): string {
  const head = `| RPC (user token id) | ${SESSION_CALLERS.join(' | ')} |`;
  const sep = `| --- |${SESSION_CALLERS.map(() => ' :-: |').join('')}`;
  const rows = Object.entries(SESSION_ACCESS).map(([method, rule]) => `| \`${method.slice(8)}\` | ${SESSION_CALLERS.map((c) => (sessionAllowed(rule, c) ? 'yes' : '-')).join(' | ')} |`);
  return [head, sep, ...rows].join('\n');
}
