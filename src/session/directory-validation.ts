/**
 * Validation of whole directory records (an application; a user with its roles) that arrive from elsewhere:
 * from the cluster (another node's change) or from a directory import. They pass exactly the rules of the
 * admin RPCs that create them: each record is turned back into its RPC message and validated by the same
 * functions, and must come out unchanged; the fields the RPCs derive themselves (ids, hashes, times) get
 * their own checks. INVALID_ARGUMENT naming the field otherwise.
 */
import { invalidArgument } from '../errors.js';
import { checkTime, sameAfterFrontDoor } from '../validation.js';
import type { ApplicationRecord, RoleRecord, UserRecord } from './directory.js';
import { isStoredHash } from './password.js';
import { APP_ID, appFields, roleRecord, userPb } from './directory-admin.js';
import { applicationPb, rolePb, userFields } from './session-common.js';

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const CONTROL = /[\x00-\x1f\x7f]/;
const MAX_ROLES = 10_000;

function check(cond: boolean, field: string, message: string): void {
  if (!cond) throw invalidArgument(field, message);
}

function bool(v: unknown, field: string): void {
  check(typeof v === 'boolean', field, 'must be true or false');
}

export function validateApplicationRecord(a: unknown, field = 'application'): ApplicationRecord {
  check(isObj(a), field, 'must be an object');
  const app = a as unknown as ApplicationRecord;
  check(typeof app.id === 'string' && APP_ID.test(app.id), `${field}.id`, '1 to 128 characters of A-Z a-z 0-9 . _ -');
  check(isStoredHash(app.secretHash, 'application'), `${field}.secret_hash`, 'is not a secret hash STS makes, or its cost parameters are out of bounds');
  ['trusted', 'admin', 'personalFields', 'fullToken', 'disabled'].forEach((k) => bool((app as unknown as Record<string, unknown>)[k], `${field}.${k}`));
  check(Number.isSafeInteger(app.minSecurityLevel), `${field}.minimum_security_level`, 'must be an integer');
  checkTime(app.createdAt, `${field}.create_time`);
  const { id: _id, secretHash: _h, disabled: _d, createdAt: _c, ...fields } = app;
  sameAfterFrontDoor(field, fields, () => appFields(applicationPb(app), field));
  return app;
}

export function validateRoles(roles: unknown, field = 'roles'): RoleRecord[] {
  check(Array.isArray(roles) && roles.length <= MAX_ROLES, field, `must be a list of at most ${MAX_ROLES} roles`);
  (roles as unknown[]).forEach((r, i) => {
    check(isObj(r), `${field}[${i}]`, 'must be an object');
    sameAfterFrontDoor(`${field}[${i}]`, r, () => roleRecord(rolePb(r as unknown as RoleRecord), `${field}[${i}]`));
  });
  return roles as RoleRecord[];
}

export function validateUserRecord(u: unknown, field = 'user'): UserRecord {
  check(isObj(u), field, 'must be an object');
  const user = u as unknown as UserRecord;
  check(typeof user.uid === 'string' && /^[A-Za-z0-9_-]{1,128}$/.test(user.uid), `${field}.uid`, '1 to 128 characters of A-Z a-z 0-9 _ -');
  check(user.passwordHash === null || isStoredHash(user.passwordHash, 'user'), `${field}.password_hash`, 'is not a password hash STS makes, or its cost parameters are out of bounds');
  bool(user.disabled, `${field}.disabled`);
  checkTime(user.createdAt, `${field}.create_time`);
  const external = [user.externalIssuer, user.externalSubject];
  check(
    external.every((v) => v === null) || external.every((v) => typeof v === 'string' && v.length >= 1 && v.length <= 1024 && !CONTROL.test(v)),
    `${field}.external`,
    'external issuer and subject: both absent, or both 1 to 1024 characters without control characters',
  );
  const { uid: _u, passwordHash: _p, disabled: _d, createdAt: _c, externalIssuer: _i, externalSubject: _s, ...fields } = user;
  sameAfterFrontDoor(field, fields, () => userFields(userPb(user), field));
  return user;
}
