/**
 * The identity directory: applications, users and roles.
 *
 * `IdentityDirectory` is the contract an external user identity backend (LDAP, another user admin service)
 * implements to replace the embedded one; `SqliteDirectory` is the embedded implementation. Domain types
 * here are plain data, independent of the wire contract.
 */
import { randomBytes } from 'node:crypto';
import { StsError } from '../errors.js';
import type { Db } from '../store/sqlite/database.js';

export interface RoleRecord {
  applicationId: string;
  organizationName: string;
  roleName: string;
  roleValue: string;
}

export interface ApplicationRecord {
  id: string;
  name: string;
  secretHash: string;
  tags: string[];
  defaultRoles: RoleRecord[];
  trusted: boolean;
  admin: boolean;
  personalFields: boolean;
  fullToken: boolean;
  minSecurityLevel: number;
  /** 0 = server default. */
  idleTimeoutMs: number;
  /** 0 = server default. */
  maxLifetimeMs: number;
  disabled: boolean;
  createdAt: number;
  /** Applications that may make this application's view of a session (TransformUserToken). */
  transformSources: string[];
  /** Applications with the same non-empty group share data keys; '' = the application's own. */
  dataKeyGroup: string;
}

export interface UserRecord {
  uid: string;
  username: string;
  firstName: string;
  lastName: string;
  email: string;
  cellphone: string;
  personRef: string;
  passwordHash: string | null;
  disabled: boolean;
  createdAt: number;
  externalIssuer: string | null;
  externalSubject: string | null;
}

export type NewUser = Omit<UserRecord, 'uid' | 'createdAt'>;

export interface IdentityDirectory {
  getApplication(id: string): ApplicationRecord | undefined;
  listApplications(): ApplicationRecord[];
  createApplication(app: ApplicationRecord): void;
  /**
   * `maintenance`: a change nobody decided (a hash replaced by its current form after a logon); in cluster
   * mode it loses any tie with another node's change of the same record (src/cluster/revisions.ts).
   */
  updateApplication(app: ApplicationRecord, maintenance?: boolean): void;

  getUser(uid: string): UserRecord | undefined;
  findUserByUsername(username: string): UserRecord | undefined;
  findUserByExternal(issuer: string, subject: string): UserRecord | undefined;
  /** Creates the user with these roles in one step; ALREADY_EXISTS for a used username. */
  createUser(user: NewUser, roles: readonly RoleRecord[], now: number): UserRecord;
  /** `maintenance`: as for updateApplication. */
  updateUser(user: UserRecord, maintenance?: boolean): void;
  listUsers(prefix: string, after: string, limit: number): UserRecord[];

  rolesOf(uid: string, applicationId?: string): RoleRecord[];
  addRole(uid: string, role: RoleRecord): void;
  /** False when there was no such role. */
  removeRole(uid: string, role: RoleRecord): boolean;
}

interface AppRow {
  id: string;
  name: string;
  secret_hash: string;
  tags: string;
  default_roles: string;
  trusted: number;
  admin: number;
  personal_fields: number;
  full_token: number;
  min_security_level: number;
  idle_timeout_ms: number;
  max_lifetime_ms: number;
  disabled: number;
  created_at: number;
  transform_sources: string;
  data_key_group: string;
}

interface UserRow {
  uid: string;
  username: string;
  first_name: string;
  last_name: string;
  email: string;
  cellphone: string;
  person_ref: string;
  password_hash: string | null;
  disabled: number;
  created_at: number;
  external_issuer: string | null;
  external_subject: string | null;
}

interface RoleRow {
  application_id: string;
  organization_name: string;
  role_name: string;
  role_value: string;
}

const appFromRow = (r: AppRow): ApplicationRecord => ({
  id: r.id,
  name: r.name,
  secretHash: r.secret_hash,
  tags: JSON.parse(r.tags) as string[],
  defaultRoles: JSON.parse(r.default_roles) as RoleRecord[],
  trusted: r.trusted === 1,
  admin: r.admin === 1,
  personalFields: r.personal_fields === 1,
  fullToken: r.full_token === 1,
  minSecurityLevel: r.min_security_level,
  idleTimeoutMs: r.idle_timeout_ms,
  maxLifetimeMs: r.max_lifetime_ms,
  disabled: r.disabled === 1,
  createdAt: r.created_at,
  transformSources: JSON.parse(r.transform_sources) as string[],
  dataKeyGroup: r.data_key_group,
});

/** Records from a node or an export older than a field get the field's default. */
const appParams = (a: ApplicationRecord) => ({
  id: a.id,
  name: a.name,
  secret_hash: a.secretHash,
  tags: JSON.stringify(a.tags),
  default_roles: JSON.stringify(a.defaultRoles),
  trusted: a.trusted ? 1 : 0,
  admin: a.admin ? 1 : 0,
  personal_fields: a.personalFields ? 1 : 0,
  full_token: a.fullToken ? 1 : 0,
  min_security_level: a.minSecurityLevel,
  idle_timeout_ms: a.idleTimeoutMs,
  max_lifetime_ms: a.maxLifetimeMs,
  disabled: a.disabled ? 1 : 0,
  created_at: a.createdAt,
  transform_sources: JSON.stringify(a.transformSources ?? []),
  data_key_group: a.dataKeyGroup ?? '',
});

const userFromRow = (r: UserRow): UserRecord => ({
  uid: r.uid,
  username: r.username,
  firstName: r.first_name,
  lastName: r.last_name,
  email: r.email,
  cellphone: r.cellphone,
  personRef: r.person_ref,
  passwordHash: r.password_hash,
  disabled: r.disabled === 1,
  createdAt: r.created_at,
  externalIssuer: r.external_issuer,
  externalSubject: r.external_subject,
});

const userParams = (u: UserRecord) => ({
  uid: u.uid,
  username: u.username,
  first_name: u.firstName,
  last_name: u.lastName,
  email: u.email,
  cellphone: u.cellphone,
  person_ref: u.personRef,
  password_hash: u.passwordHash,
  disabled: u.disabled ? 1 : 0,
  created_at: u.createdAt,
  external_issuer: u.externalIssuer,
  external_subject: u.externalSubject,
});

const roleFromRow = (r: RoleRow): RoleRecord => ({
  applicationId: r.application_id,
  organizationName: r.organization_name,
  roleName: r.role_name,
  roleValue: r.role_value,
});

const APP_COLUMNS = 'id, name, secret_hash, tags, default_roles, trusted, admin, personal_fields, full_token, min_security_level, idle_timeout_ms, max_lifetime_ms, disabled, created_at, transform_sources, data_key_group';
const USER_COLUMNS = 'uid, username, first_name, last_name, email, cellphone, person_ref, password_hash, disabled, created_at, external_issuer, external_subject';
const named = (cols: string) => cols.split(', ').map((c) => `@${c}`).join(', ');
const assignments = (cols: string, key: string) =>
  cols
    .split(', ')
    .filter((c) => c !== key)
    .map((c) => `${c} = @${c}`)
    .join(', ');

function isUniqueViolation(err: unknown): boolean {
  return (err as { code?: string }).code?.startsWith('SQLITE_CONSTRAINT') === true;
}

export class SqliteDirectory implements IdentityDirectory {
  private readonly s;

  constructor(private readonly db: Db) {
    this.s = {
      getApp: db.prepare(`SELECT ${APP_COLUMNS} FROM applications WHERE id = ?`),
      listApps: db.prepare(`SELECT ${APP_COLUMNS} FROM applications ORDER BY id`),
      insertApp: db.prepare(`INSERT INTO applications (${APP_COLUMNS}) VALUES (${named(APP_COLUMNS)})`),
      updateApp: db.prepare(`UPDATE applications SET ${assignments(APP_COLUMNS, 'id')} WHERE id = @id`),
      getUser: db.prepare(`SELECT ${USER_COLUMNS} FROM users WHERE uid = ?`),
      userByName: db.prepare(`SELECT ${USER_COLUMNS} FROM users WHERE username = ?`),
      userByExternal: db.prepare(`SELECT ${USER_COLUMNS} FROM users WHERE external_issuer = ? AND external_subject = ?`),
      insertUser: db.prepare(`INSERT INTO users (${USER_COLUMNS}) VALUES (${named(USER_COLUMNS)})`),
      updateUser: db.prepare(`UPDATE users SET ${assignments(USER_COLUMNS, 'uid')} WHERE uid = @uid`),
      listUsers: db.prepare(`SELECT ${USER_COLUMNS} FROM users WHERE username LIKE ? ESCAPE '\\' AND username > ? ORDER BY username LIMIT ?`),
      roles: db.prepare('SELECT application_id, organization_name, role_name, role_value FROM roles WHERE uid = ? ORDER BY application_id, organization_name, role_name'),
      rolesForApp: db.prepare('SELECT application_id, organization_name, role_name, role_value FROM roles WHERE uid = ? AND application_id = ? ORDER BY organization_name, role_name'),
      addRole: db.prepare(
        'INSERT INTO roles (uid, application_id, organization_name, role_name, role_value) VALUES (?, ?, ?, ?, ?) ' +
          'ON CONFLICT (uid, application_id, organization_name, role_name) DO UPDATE SET role_value = excluded.role_value',
      ),
      removeRole: db.prepare('DELETE FROM roles WHERE uid = ? AND application_id = ? AND organization_name = ? AND role_name = ?'),
      generation: db.prepare('SELECT gen FROM directory_generation').pluck(),
    };
  }

  /** A number every change to applications, users or roles moves, whoever makes it (triggers, migration 4). */
  generation(): number {
    return this.s.generation.get() as number;
  }

  getApplication(id: string): ApplicationRecord | undefined {
    const row = this.s.getApp.get(id) as AppRow | undefined;
    return row && appFromRow(row);
  }

  listApplications(): ApplicationRecord[] {
    return (this.s.listApps.all() as AppRow[]).map(appFromRow);
  }

  createApplication(app: ApplicationRecord): void {
    try {
      this.s.insertApp.run(appParams(app));
    } catch (err) {
      if (isUniqueViolation(err)) throw new StsError('already_exists', `application ${app.id} already exists`);
      throw err;
    }
  }

  updateApplication(app: ApplicationRecord): void {
    if (this.s.updateApp.run(appParams(app)).changes === 0) throw new StsError('not_found', `application ${app.id} not found`);
  }

  getUser(uid: string): UserRecord | undefined {
    const row = this.s.getUser.get(uid) as UserRow | undefined;
    return row && userFromRow(row);
  }

  findUserByUsername(username: string): UserRecord | undefined {
    const row = this.s.userByName.get(username) as UserRow | undefined;
    return row && userFromRow(row);
  }

  findUserByExternal(issuer: string, subject: string): UserRecord | undefined {
    const row = this.s.userByExternal.get(issuer, subject) as UserRow | undefined;
    return row && userFromRow(row);
  }

  createUser(user: NewUser, roles: readonly RoleRecord[], now: number): UserRecord {
    // Hex, not base64url: a uid that began with "-" would read as an option on a command line (sts admin
    // ... --uid <uid> failed for one user in 64).
    const record: UserRecord = { ...user, uid: randomBytes(16).toString('hex'), createdAt: now };
    try {
      this.db.transaction(() => {
        this.s.insertUser.run(userParams(record));
        for (const r of roles) this.s.addRole.run(record.uid, r.applicationId, r.organizationName, r.roleName, r.roleValue);
      })();
    } catch (err) {
      if (isUniqueViolation(err)) throw new StsError('already_exists', `username ${user.username} is taken`);
      throw err;
    }
    return record;
  }

  updateUser(user: UserRecord): void {
    try {
      if (this.s.updateUser.run(userParams(user)).changes === 0) throw new StsError('not_found', `user ${user.uid} not found`);
    } catch (err) {
      if (isUniqueViolation(err)) throw new StsError('already_exists', `username ${user.username} is taken`);
      throw err;
    }
  }

  listUsers(prefix: string, after: string, limit: number): UserRecord[] {
    const like = prefix.replace(/[\\%_]/g, (c) => `\\${c}`) + '%';
    return (this.s.listUsers.all(like, after, limit) as UserRow[]).map(userFromRow);
  }

  rolesOf(uid: string, applicationId?: string): RoleRecord[] {
    const rows = (applicationId === undefined ? this.s.roles.all(uid) : this.s.rolesForApp.all(uid, applicationId)) as RoleRow[];
    return rows.map(roleFromRow);
  }

  addRole(uid: string, role: RoleRecord): void {
    if (!this.getUser(uid)) throw new StsError('not_found', `user ${uid} not found`);
    this.s.addRole.run(uid, role.applicationId, role.organizationName, role.roleName, role.roleValue);
  }

  removeRole(uid: string, role: RoleRecord): boolean {
    return this.s.removeRole.run(uid, role.applicationId, role.organizationName, role.roleName).changes === 1;
  }
}
