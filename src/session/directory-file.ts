/**
 * JSON export and import of the embedded directory (applications, users, roles), for backups and moving
 * between installations. The export holds secret and password hashes (never secrets): protect the file.
 * Import upserts everything in one transaction: a file that fails validation changes nothing.
 */
import { StsError, invalidArgument } from '../errors.js';
import type { Db } from '../store/sqlite/database.js';
import { type ApplicationRecord, type RoleRecord, SqliteDirectory, type UserRecord } from './directory.js';
import { validateApplicationRecord, validateRoles, validateUserRecord } from './directory-validation.js';
import { keyedHashKeyId } from './password.js';

export interface DirectoryFile {
  version: 1;
  applications: ApplicationRecord[];
  users: (UserRecord & { roles: RoleRecord[] })[];
}

export function exportDirectory(db: Db): DirectoryFile {
  const dir = new SqliteDirectory(db);
  const users = db.prepare('SELECT uid FROM users ORDER BY username').pluck().all() as string[];
  return {
    version: 1,
    applications: dir.listApplications(),
    users: users.map((uid) => ({ ...dir.getUser(uid)!, roles: dir.rolesOf(uid) })),
  };
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function check(cond: boolean, field: string, message: string): void {
  if (!cond) throw invalidArgument(field, message);
}

/** An application of an import file with the defaults of absent optional fields filled in. */
function fullApplication(a: ApplicationRecord): ApplicationRecord {
  return {
    ...a,
    tags: a.tags ?? [],
    defaultRoles: a.defaultRoles ?? [],
    trusted: a.trusted ?? false,
    admin: a.admin ?? false,
    personalFields: a.personalFields ?? false,
    fullToken: a.fullToken ?? false,
    minSecurityLevel: a.minSecurityLevel ?? 0,
    idleTimeoutMs: a.idleTimeoutMs ?? 0,
    maxLifetimeMs: a.maxLifetimeMs ?? 0,
    disabled: a.disabled ?? false,
    createdAt: a.createdAt ?? Date.now(),
    transformSources: a.transformSources ?? [],
    dataKeyGroup: a.dataKeyGroup ?? '',
  };
}

function fullUser(u: UserRecord & { roles: RoleRecord[] }): UserRecord & { roles: RoleRecord[] } {
  return {
    ...u,
    firstName: u.firstName ?? '',
    lastName: u.lastName ?? '',
    email: u.email ?? '',
    cellphone: u.cellphone ?? '',
    personRef: u.personRef ?? '',
    passwordHash: u.passwordHash ?? null,
    disabled: u.disabled ?? false,
    createdAt: u.createdAt ?? Date.now(),
    externalIssuer: u.externalIssuer ?? null,
    externalSubject: u.externalSubject ?? null,
    roles: (u.roles ?? []).map((r) => ({ ...r, organizationName: r.organizationName ?? '', roleValue: r.roleValue ?? '' })),
  };
}

export interface ImportResult {
  applications: number;
  users: number;
  roles: number;
  /**
   * Applications whose secret hash is keyed by a master key that `masterKeyIds` does not hold (a file from an
   * installation with another master key): they cannot log on here until that key is in this installation's
   * ring or their secret is reset (UpdateApplication with generate_secret: `sts admin apps reset-secret`).
   */
  secretsToReset: string[];
}

/**
 * Upserts a directory file in one transaction. Every record passes the validation of the admin RPC that
 * creates it (src/session/directory-validation.ts), as replicated records do; a file with one invalid record
 * changes nothing. `masterKeyIds`: the master key ids of the installation imported into (none when it has no
 * master key yet), to name the application secrets that cannot be checked there.
 */
export function importDirectory(db: Db, file: unknown, masterKeyIds: readonly string[] = []): ImportResult {
  check(isObj(file) && file.version === 1, 'version', 'expected a directory export with "version": 1');
  const raw = file as unknown as DirectoryFile;
  check(Array.isArray(raw.applications) && Array.isArray(raw.users), 'applications/users', 'expected arrays');
  raw.applications.forEach((a, i) => check(isObj(a), `applications[${i}]`, 'must be an object'));
  raw.users.forEach((u, i) => check(isObj(u) && (u.roles === undefined || Array.isArray(u.roles)), `users[${i}]`, 'must be an object with a list of roles'));
  const f: DirectoryFile = { version: 1, applications: raw.applications.map(fullApplication), users: raw.users.map(fullUser) };
  f.applications.forEach((a, i) => validateApplicationRecord(a, `applications[${i}]`));
  f.users.forEach((u, i) => {
    const { roles, ...user } = u;
    validateUserRecord(user, `users[${i}]`);
    validateRoles(roles, `users[${i}].roles`);
  });
  const app = db.prepare(
    `INSERT INTO applications (id, name, secret_hash, tags, default_roles, trusted, admin, personal_fields, full_token, min_security_level, idle_timeout_ms, max_lifetime_ms, disabled, created_at, transform_sources, data_key_group)
     VALUES (@id, @name, @secretHash, @tags, @defaultRoles, @trusted, @admin, @personalFields, @fullToken, @minSecurityLevel, @idleTimeoutMs, @maxLifetimeMs, @disabled, @createdAt, @transformSources, @dataKeyGroup)
     ON CONFLICT (id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash, tags = excluded.tags, default_roles = excluded.default_roles,
       trusted = excluded.trusted, admin = excluded.admin, personal_fields = excluded.personal_fields, full_token = excluded.full_token,
       min_security_level = excluded.min_security_level, idle_timeout_ms = excluded.idle_timeout_ms, max_lifetime_ms = excluded.max_lifetime_ms,
       disabled = excluded.disabled, transform_sources = excluded.transform_sources, data_key_group = excluded.data_key_group`,
  );
  const user = db.prepare(
    `INSERT INTO users (uid, username, first_name, last_name, email, cellphone, person_ref, password_hash, disabled, created_at, external_issuer, external_subject)
     VALUES (@uid, @username, @firstName, @lastName, @email, @cellphone, @personRef, @passwordHash, @disabled, @createdAt, @externalIssuer, @externalSubject)
     ON CONFLICT (uid) DO UPDATE SET username = excluded.username, first_name = excluded.first_name, last_name = excluded.last_name, email = excluded.email,
       cellphone = excluded.cellphone, person_ref = excluded.person_ref, password_hash = excluded.password_hash, disabled = excluded.disabled,
       external_issuer = excluded.external_issuer, external_subject = excluded.external_subject`,
  );
  const clearRoles = db.prepare('DELETE FROM roles WHERE uid = ?');
  const role = db.prepare('INSERT INTO roles (uid, application_id, organization_name, role_name, role_value) VALUES (?, ?, ?, ?, ?)');
  let roles = 0;
  try {
    db.transaction(() => {
      for (const a of f.applications) {
        app.run({
          ...a,
          tags: JSON.stringify(a.tags),
          defaultRoles: JSON.stringify(a.defaultRoles),
          trusted: a.trusted ? 1 : 0,
          admin: a.admin ? 1 : 0,
          personalFields: a.personalFields ? 1 : 0,
          fullToken: a.fullToken ? 1 : 0,
          disabled: a.disabled ? 1 : 0,
          transformSources: JSON.stringify(a.transformSources),
        });
      }
      for (const u of f.users) {
        const { roles: _roles, ...fields } = u;
        user.run({ ...fields, disabled: u.disabled ? 1 : 0 });
        clearRoles.run(u.uid);
        for (const r of u.roles) {
          role.run(u.uid, r.applicationId, r.organizationName, r.roleName, r.roleValue);
          roles++;
        }
      }
    })();
  } catch (err) {
    throw new StsError('invalid_argument', `import refused, nothing changed: ${(err as Error).message}`, { cause: err });
  }
  const secretsToReset = f.applications.filter((a) => {
    const keyId = keyedHashKeyId(a.secretHash);
    return keyId !== undefined && !masterKeyIds.includes(keyId);
  });
  return { applications: f.applications.length, users: f.users.length, roles, secretsToReset: secretsToReset.map((a) => a.id) };
}
