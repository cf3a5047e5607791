/**
 * What an application sees of a user session: its own roles only (all roles for full-token applications),
 * personal fields only where allowed, an anonymised view where the user has no role, and a refusal where
 * the session's security level is below the application's minimum. The same view is signed as a JWT.
 */
import { randomBytes } from 'node:crypto';
import { StsError } from '../errors.js';
import type { UserToken } from '../gen/sts/v1/common.js';
import type { KeyRing } from '../pop/key-ring.js';
import { TOKEN_TYP, signCompact } from '../pop/jose-ops.js';
import type { ApplicationRecord, IdentityDirectory, RoleRecord, UserRecord } from './directory.js';
import type { UserSessionRecord } from './sessions.js';

export type AnonymousView = 'anonymised' | 'basic' | 'deny';

/** The explicit type of user token JWTs (see TOKEN_TYP in src/pop/jose-ops.ts). */
export const USER_TOKEN_TYP = TOKEN_TYP.user;

export interface ViewContext {
  directory: IdentityDirectory;
  ring: KeyRing;
  issuer: string;
  anonymousView: AnonymousView;
}

export interface SessionHandle {
  /** The token id of the part the view is made from (empty when validated from a JWT). */
  tokenId: string;
  /** The key of that part's participant record (the session's `sid` for a legacy creator): a JWT's "pref". */
  ref: string;
  /** The application that part belongs to. */
  participant: string;
  sid: string;
  record: UserSessionRecord;
  user: UserRecord;
}

/**
 * The view of `session` for `viewer`; PERMISSION_DENIED where the viewer may not see it. `requester`, when
 * another application asks for the viewer's view (TransformUserToken), also bounds the personal fields: it
 * learns them only if it may see personal fields itself.
 */
export function userTokenView(vc: ViewContext, s: SessionHandle, viewer: ApplicationRecord, requester: ApplicationRecord = viewer): UserToken {
  if (s.record.securityLevel < viewer.minSecurityLevel) {
    throw new StsError(
      'security_level_too_low',
      `application ${viewer.id} requires security level ${viewer.minSecurityLevel}; this session has ${s.record.securityLevel}: step up with TransformUserToken`,
    );
  }
  const roles: RoleRecord[] = viewer.fullToken ? vc.directory.rolesOf(s.user.uid) : vc.directory.rolesOf(s.user.uid, viewer.id);
  const anonymous = roles.length === 0 && !viewer.fullToken;
  if (anonymous && vc.anonymousView === 'deny') {
    throw new StsError('permission_denied', `the user has no role in application ${viewer.id}`);
  }
  const names = !anonymous || vc.anonymousView === 'basic';
  const mayPersonal = (a: ApplicationRecord) => a.personalFields || a.fullToken;
  const personal = mayPersonal(viewer) && mayPersonal(requester) && !anonymous;
  const u = s.user;
  return {
    userTokenId: s.tokenId,
    uid: u.uid,
    username: names ? u.username : '',
    firstName: names ? u.firstName : '',
    lastName: names ? u.lastName : '',
    email: personal ? u.email : '',
    cellphone: personal ? u.cellphone : '',
    personRef: personal ? u.personRef : '',
    securityLevel: s.record.securityLevel,
    issueTime: new Date(s.record.issuedAt),
    expireTime: new Date(s.record.expiresAt),
    absoluteExpireTime: new Date(s.record.absoluteExpiresAt),
    applicationId: viewer.id,
    roles: roles.map((r) => ({ applicationId: r.applicationId, organizationName: r.organizationName, roleName: r.roleName, roleValue: r.roleValue })),
    anonymised: anonymous,
  };
}

/**
 * The view as a JWT signed by the PRIMARY signing key (RFC 7519). It carries the session id ("sid") and the
 * participant record it was made from ("pref", the SHA-256 of that part's token id: no credential), never the
 * token id: a JWT travels further than a credential should. Claims: iss, sub (uid), aud (viewer), iat, exp
 * (the session's idle expiry at signing), jti, sid, pref, acr (security level), and the view's fields.
 */
export function signUserToken(vc: ViewContext, view: UserToken, s: Pick<SessionHandle, 'sid' | 'ref'>, now: number): string {
  const claims: Record<string, unknown> = {
    iss: vc.issuer,
    sub: view.uid,
    aud: view.applicationId,
    iat: Math.floor(now / 1000),
    exp: Math.floor(view.expireTime!.getTime() / 1000),
    jti: randomBytes(16).toString('base64url'),
    sid: s.sid,
    pref: s.ref,
    acr: String(view.securityLevel),
    auth_time: Math.floor(view.issueTime!.getTime() / 1000),
    roles: view.roles.map((r) => ({ application_id: r.applicationId, organization: r.organizationName, name: r.roleName, value: r.roleValue })),
  };
  if (view.username) claims.preferred_username = view.username;
  if (view.firstName) claims.given_name = view.firstName;
  if (view.lastName) claims.family_name = view.lastName;
  if (view.email) claims.email = view.email;
  if (view.cellphone) claims.phone_number = view.cellphone;
  if (view.personRef) claims.person_ref = view.personRef;
  if (view.anonymised) claims.anonymised = true;
  return signCompact(vc.ring, Buffer.from(JSON.stringify(claims)), { typ: USER_TOKEN_TYP }).jws;
}
