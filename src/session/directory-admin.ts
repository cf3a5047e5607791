/**
 * SessionService, directory administration (administrators only): applications, users and roles.
 */
import { StsError, invalidArgument } from '../errors.js';
import type { Application, User } from '../gen/sts/v1/session.js';
import type { Role } from '../gen/sts/v1/common.js';
import type { Duration } from '../gen/google/protobuf/duration.js';
import type { ApplicationRecord, RoleRecord, UserRecord } from './directory.js';
import { newSecret } from './sessions.js';
import { MAX_TEXT, type SessionHandlers, type SessionKit, applicationPb, text, userFields } from './session-common.js';

export const APP_ID = /^[A-Za-z0-9._-]{1,128}$/;

const TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000;

function durationMs(d: Duration | undefined, field: string): number {
  if (!d) return 0;
  const ms = d.seconds * 1000 + Math.floor(d.nanos / 1e6);
  if (!Number.isFinite(ms) || ms < 0 || ms > TEN_YEARS_MS) throw invalidArgument(field, 'must be 0 to 10 years');
  return ms;
}

export function roleRecord(r: Role | undefined, field: string): RoleRecord {
  if (!r) throw invalidArgument(field, 'is required');
  return {
    applicationId: text(`${field}.application_id`, r.applicationId, 1, 128),
    organizationName: text(`${field}.organization_name`, r.organizationName, 0, MAX_TEXT),
    roleName: text(`${field}.role_name`, r.roleName, 1, MAX_TEXT),
    roleValue: r.roleValue.length <= 4096 ? r.roleValue : (() => { throw invalidArgument(`${field}.role_value`, 'at most 4096 characters'); })(),
  };
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

const APP_MUTABLE = ['name', 'tags', 'default_roles', 'trusted', 'admin', 'personal_fields_allowed', 'full_token', 'minimum_security_level', 'user_token_idle_timeout', 'user_token_max_lifetime', 'disabled', 'transform_sources', 'data_key_group'] as const;
const USER_MUTABLE = ['username', 'first_name', 'last_name', 'email', 'cellphone', 'person_ref', 'disabled'] as const;

/**
 * AIP-134: an update takes from the request only the fields its mask names; the others keep their stored
 * values, and so are neither validated nor needed (`sts admin apps disable --id X` sends nothing else).
 */
function masked<T extends object>(stored: T, given: T, paths: ReadonlySet<string>): T {
  const out = { ...stored };
  for (const path of paths) {
    const key = path.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()) as keyof T;
    out[key] = given[key];
  }
  return out;
}

export function directoryAdmin(k: SessionKit): SessionHandlers {
  const { audit, admin, adminHash } = k;
  const { directory, sessions, clock } = k.deps;
  return {
    async createApplication(req, ctx) {
      const caller = await admin(ctx);
      const a = req.application;
      if (!a) throw invalidArgument('application', 'is required');
      if (!APP_ID.test(a.applicationId)) throw invalidArgument('application.application_id', '1 to 128 characters of A-Z a-z 0-9 . _ -');
      const madeBySts = !req.applicationSecret;
      const secret = req.applicationSecret || newSecret();
      if (secret.length < 24 || secret.length > 1024) throw invalidArgument('application_secret', 'must be 24 to 1024 characters (or empty to let STS make one)');
      const record: ApplicationRecord = {
        ...appFields(a, 'application'),
        id: a.applicationId,
        secretHash: await adminHash(caller, ctx, secret, { id: a.applicationId, madeBySts }),
        disabled: a.disabled,
        createdAt: clock.now(),
      };
      directory.createApplication(record);
      audit('application.created', { application: record.id, by: caller.id, trusted: record.trusted, admin: record.admin, ...(record.dataKeyGroup ? { dataKeyGroup: record.dataKeyGroup } : {}) });
      return { application: applicationPb(record), applicationSecret: secret };
    },

    async updateApplication(req, ctx) {
      const caller = await admin(ctx);
      const a = req.application;
      if (!a) throw invalidArgument('application', 'is required');
      const current = directory.getApplication(text('application.application_id', a.applicationId, 1, 128));
      if (!current) throw new StsError('not_found', `application ${a.applicationId} not found`);
      const paths = maskPaths(req.updateMask, APP_MUTABLE, 'update_mask');
      const fields = appFields(masked(applicationPb(current), a, paths), 'application');
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
      set('transform_sources', 'transformSources', fields.transformSources);
      set('data_key_group', 'dataKeyGroup', fields.dataKeyGroup);
      if (req.applicationSecret && req.generateSecret) throw invalidArgument('generate_secret', 'give either application_secret or generate_secret, not both');
      const generated = req.generateSecret ? newSecret() : '';
      const secret = req.applicationSecret || generated;
      if (req.applicationSecret && (secret.length < 24 || secret.length > 1024)) throw invalidArgument('application_secret', 'must be 24 to 1024 characters');
      if (secret) next.secretHash = await adminHash(caller, ctx, secret, { id: next.id, madeBySts: req.generateSecret });
      directory.updateApplication(next);
      // Disabling an application, or changing its secret (after a leak, typically), ends its tokens at once.
      if ((next.disabled && !current.disabled) || secret) await sessions.releaseAppTokensOf(next.id);
      audit('application.updated', { application: next.id, by: caller.id, fields: [...paths], secretChanged: Boolean(secret), ...(generated ? { secretGenerated: true } : {}) });
      return { application: applicationPb(next), applicationSecret: generated };
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
        { ...userFields(u, 'user'), passwordHash: req.password ? await adminHash(caller, ctx, req.password) : null, disabled: u.disabled, externalIssuer: null, externalSubject: null },
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
      const fields = userFields(masked(userPb(current), u, paths), 'user');
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
        next.passwordHash = await adminHash(caller, ctx, req.password);
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
}

export function appFields(a: Application, field: string): Omit<ApplicationRecord, 'id' | 'secretHash' | 'disabled' | 'createdAt'> {
  if (a.minimumSecurityLevel > 4) throw invalidArgument(`${field}.minimum_security_level`, 'must be 0 to 4');
  if (a.tags.length > 64) throw invalidArgument(`${field}.tags`, 'at most 64 tags');
  a.tags.forEach((t, i) => text(`${field}.tags[${i}]`, t, 1, 128));
  if (a.transformSources.length > 64) throw invalidArgument(`${field}.transform_sources`, 'at most 64 applications');
  a.transformSources.forEach((id, i) => {
    if (!APP_ID.test(id)) throw invalidArgument(`${field}.transform_sources[${i}]`, 'an application id: 1 to 128 characters of A-Z a-z 0-9 . _ -');
  });
  if (a.dataKeyGroup !== '' && !APP_ID.test(a.dataKeyGroup)) throw invalidArgument(`${field}.data_key_group`, 'empty, or 1 to 128 characters of A-Z a-z 0-9 . _ -');
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
    transformSources: [...new Set(a.transformSources)],
    dataKeyGroup: a.dataKeyGroup,
  };
}
