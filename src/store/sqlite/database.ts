/**
 * Opens the embedded SQLite database (better-sqlite3) and brings its schema up to date.
 *
 * WAL mode lets readers run while a write commits; synchronous=FULL makes every committed transaction
 * durable across power loss, because a user secret, once returned, must never be lost.
 * Migrations are versioned in code (PRAGMA user_version) and each runs in its own transaction.
 */
import { accessSync, chmodSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { StartupError } from '../../errors.js';
import { STS_VERSION } from '../../version.js';

export type Db = Database.Database;

export interface Migration {
  version: number;
  description: string;
  sql: string;
}

/** Append only: never edit a migration that has shipped; add a new one. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'meta, ephemeral and durable records',
    sql: `
      CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
      CREATE TABLE ephemeral (
        ns TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL,
        expires_at INTEGER NOT NULL, grp TEXT,
        PRIMARY KEY (ns, id)) STRICT, WITHOUT ROWID;
      CREATE INDEX ephemeral_group ON ephemeral (ns, grp) WHERE grp IS NOT NULL;
      CREATE INDEX ephemeral_expiry ON ephemeral (expires_at);
      CREATE TABLE durable (
        ns TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (ns, id)) STRICT, WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    description: 'identity directory: applications, users, roles',
    sql: `
      CREATE TABLE applications (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]', default_roles TEXT NOT NULL DEFAULT '[]',
        trusted INTEGER NOT NULL DEFAULT 0, admin INTEGER NOT NULL DEFAULT 0,
        personal_fields INTEGER NOT NULL DEFAULT 0, full_token INTEGER NOT NULL DEFAULT 0,
        min_security_level INTEGER NOT NULL DEFAULT 0,
        idle_timeout_ms INTEGER NOT NULL DEFAULT 0, max_lifetime_ms INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL) STRICT;
      CREATE TABLE users (
        uid TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        first_name TEXT NOT NULL DEFAULT '', last_name TEXT NOT NULL DEFAULT '',
        email TEXT NOT NULL DEFAULT '', cellphone TEXT NOT NULL DEFAULT '', person_ref TEXT NOT NULL DEFAULT '',
        password_hash TEXT, disabled INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,
        external_issuer TEXT, external_subject TEXT) STRICT;
      CREATE UNIQUE INDEX users_external ON users (external_issuer, external_subject) WHERE external_issuer IS NOT NULL;
      CREATE TABLE roles (
        uid TEXT NOT NULL REFERENCES users (uid) ON DELETE CASCADE,
        application_id TEXT NOT NULL, organization_name TEXT NOT NULL, role_name TEXT NOT NULL,
        role_value TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (uid, application_id, organization_name, role_name)) STRICT, WITHOUT ROWID;
      CREATE INDEX roles_app ON roles (application_id);
    `,
  },
  {
    version: 3,
    description: 'secret server registries: identity providers, resource servers',
    sql: `
      CREATE TABLE identity_providers (
        issuer TEXT PRIMARY KEY, jwks_uri TEXT, jwks_json TEXT,
        audiences TEXT NOT NULL DEFAULT '[]', algorithms TEXT NOT NULL DEFAULT '[]',
        clock_skew_ms INTEGER NOT NULL DEFAULT 0, subject_claim TEXT NOT NULL DEFAULT '',
        security_level INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL,
        CHECK ((jwks_uri IS NULL) <> (jwks_json IS NULL))) STRICT;
      CREATE TABLE resource_servers (
        id TEXT PRIMARY KEY, application_id TEXT, certificate_sha256 TEXT,
        audiences TEXT NOT NULL DEFAULT '[]', jwks_uri TEXT, jwks_json TEXT, updated_at INTEGER NOT NULL,
        CHECK ((application_id IS NULL) <> (certificate_sha256 IS NULL)),
        CHECK ((jwks_uri IS NULL) <> (jwks_json IS NULL))) STRICT;
      CREATE UNIQUE INDEX resource_servers_app ON resource_servers (application_id) WHERE application_id IS NOT NULL;
      CREATE UNIQUE INDEX resource_servers_cert ON resource_servers (certificate_sha256) WHERE certificate_sha256 IS NOT NULL;
    `,
  },
  {
    version: 4,
    description: 'directory generation: a counter every change to applications, users or roles bumps',
    // Any writer bumps it, this process or another one on the same file (sts admin directory import while the
    // server runs): the in-process directory cache compares it to know that what it holds may be stale.
    sql: `
      CREATE TABLE directory_generation (only INTEGER PRIMARY KEY CHECK (only = 1), gen INTEGER NOT NULL) STRICT;
      INSERT INTO directory_generation (only, gen) VALUES (1, 0);
      CREATE TRIGGER applications_insert_generation AFTER INSERT ON applications BEGIN UPDATE directory_generation SET gen = gen + 1; END;
      CREATE TRIGGER applications_update_generation AFTER UPDATE ON applications BEGIN UPDATE directory_generation SET gen = gen + 1; END;
      CREATE TRIGGER applications_delete_generation AFTER DELETE ON applications BEGIN UPDATE directory_generation SET gen = gen + 1; END;
      CREATE TRIGGER users_insert_generation AFTER INSERT ON users BEGIN UPDATE directory_generation SET gen = gen + 1; END;
      CREATE TRIGGER users_update_generation AFTER UPDATE ON users BEGIN UPDATE directory_generation SET gen = gen + 1; END;
      CREATE TRIGGER users_delete_generation AFTER DELETE ON users BEGIN UPDATE directory_generation SET gen = gen + 1; END;
      CREATE TRIGGER roles_insert_generation AFTER INSERT ON roles BEGIN UPDATE directory_generation SET gen = gen + 1; END;
      CREATE TRIGGER roles_update_generation AFTER UPDATE ON roles BEGIN UPDATE directory_generation SET gen = gen + 1; END;
      CREATE TRIGGER roles_delete_generation AFTER DELETE ON roles BEGIN UPDATE directory_generation SET gen = gen + 1; END;
    `,
  },
  {
    version: 5,
    description: 'cluster revisions: the version of each replicated record this node holds',
    // Cluster mode: every replicated record (keys, user secrets, directory entries, registry entries) carries a
    // revision inside its seal; a node refuses a record older than the one it holds (src/cluster/revisions.ts).
    sql: `
      CREATE TABLE cluster_revisions (
        map TEXT NOT NULL, key TEXT NOT NULL, rev INTEGER NOT NULL, digest TEXT NOT NULL,
        PRIMARY KEY (map, key)) STRICT, WITHOUT ROWID;
    `,
  },
  {
    version: 6,
    description: 'session participation and caller-bound data keys: transform sources and data key groups of applications; per-application audiences, jti and iat rules of identity providers',
    sql: `
      ALTER TABLE applications ADD COLUMN transform_sources TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE applications ADD COLUMN data_key_group TEXT NOT NULL DEFAULT '';
      ALTER TABLE identity_providers ADD COLUMN application_audiences TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE identity_providers ADD COLUMN tokens_without_jti INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE identity_providers ADD COLUMN accept_tokens_without_iat INTEGER NOT NULL DEFAULT 0;
    `,
  },
];

/**
 * Checks that the data directory exists (creating it if needed) and is writable, and makes it private (0700)
 * whatever mode it had: it holds the database, the dev master key and admin token. Errors name the path.
 */
export function prepareDataDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new StartupError('data_dir_unusable', `dataDir ${dir}: cannot create it (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  try {
    if (!statSync(dir).isDirectory()) throw new StartupError('data_dir_unusable', `dataDir ${dir}: is not a directory`);
    accessSync(dir, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (err) {
    if (err instanceof StartupError) throw err;
    throw new StartupError('data_dir_unusable', `dataDir ${dir}: not readable and writable by this process (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  makePrivate(dir, 0o700, `dataDir ${dir}`);
}

/**
 * Sets `path`'s mode (owner only) when it differs: a directory or file that existed before STS may have been
 * made group- or world-readable. StartupError naming `what` when it cannot be changed (another owner).
 */
function makePrivate(path: string, mode: number, what: string): void {
  try {
    if ((statSync(path).mode & 0o777) !== mode) chmodSync(path, mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    throw new StartupError('data_dir_unusable', `${what}: cannot restrict it to its owner (chmod ${mode.toString(8)}: ${code ?? 'error'})`, { cause: err });
  }
}

/** The database, its WAL and shared-memory files and the lock file: owner only (0600), whatever existed. */
function makeDatabaseFilesPrivate(dataDir: string): void {
  for (const name of ['sts.db', 'sts.db-wal', 'sts.db-shm', 'sts.lock']) makePrivate(join(dataDir, name), 0o600, `dataDir ${dataDir}: ${name}`);
}

/** What `lockDataDir` returns: call `release` once the process no longer serves from the directory. */
export interface DataDirLock {
  release(): void;
}

/**
 * Makes this process the only STS serving from `dataDir`, until `release` or the process ends. Two servers
 * on one data directory would each believe they alone write its sessions and keys: each would rotate keys
 * on its own and serve from memory what the other has since released (src/store/sqlite/sqlite-store.ts
 * caches sessions on that belief).
 *
 * The lock is SQLite's own: an open EXCLUSIVE transaction on `sts.lock`, a POSIX advisory lock the kernel
 * drops when the process dies, so a crash never leaves a stale lock behind (unlike a pid file). Tools that
 * only read or import (`sts admin directory export|import`) do not take it.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  prepareDataDir(dataDir);
  const path = join(dataDir, 'sts.lock');
  const lock = new Database(path, { timeout: 0 });
  try {
    makePrivate(path, 0o600, `dataDir ${dataDir}: sts.lock`);
    lock.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    lock.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      throw new StartupError('data_dir_unusable', `dataDir ${dataDir}: another STS process is serving from it (${path} is locked); give every STS process its own data directory`);
    }
    throw new StartupError('data_dir_unusable', `dataDir ${dataDir}: cannot lock ${path} (${(err as Error).message})`, { cause: err });
  }
  return {
    release: () => {
      if (lock.open) lock.close();
    },
  };
}

export function openDatabase(dataDir: string): Db {
  prepareDataDir(dataDir);
  const path = join(dataDir, 'sts.db');
  let db: Db;
  try {
    db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
  } catch (err) {
    throw new StartupError('store_invalid', `dataDir ${dataDir}: cannot open ${path} as an SQLite database (${(err as Error).message})`, { cause: err });
  }
  // SQLite creates the -wal and -shm files with the database file's mode, so fixing all three now keeps them
  // private from here on.
  try {
    makeDatabaseFilesPrivate(dataDir);
  } catch (err) {
    db.close();
    throw err;
  }
  try {
    migrate(db, path);
  } catch (err) {
    db.close();
    if (err instanceof StartupError) throw err;
    throw new StartupError('store_invalid', `${path}: schema migration failed (${(err as Error).message})`, { cause: err });
  }
  return db;
}

/** The newest schema version this STS knows. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/**
 * The migrations a database at `current` still needs. A schema newer than this STS is refused, naming both
 * versions: a newer STS wrote it, and this one would misread it (downgrade by restoring a backup instead).
 */
export function pendingMigrations(current: number, path: string): Migration[] {
  if (current > SCHEMA_VERSION) {
    throw new StartupError(
      'store_invalid',
      `${path}: database schema version ${current} is newer than this STS ${STS_VERSION} supports (schema version ${SCHEMA_VERSION}); run the newer STS that wrote it, or restore a backup taken before the upgrade`,
    );
  }
  return MIGRATIONS.filter((m) => m.version > current);
}

/**
 * `sts migrate --dry-run`: the schema version of `<dataDir>/sts.db` and the migrations STS would run at its
 * next start, read without changing anything (no file is created either).
 */
export function inspectSchema(dataDir: string): { path: string; exists: boolean; version: number; pending: Migration[] } {
  const path = join(dataDir, 'sts.db');
  if (!existsSync(path)) return { path, exists: false, version: 0, pending: pendingMigrations(0, path) };
  let db: Db;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new StartupError('store_invalid', `${path}: cannot open it as an SQLite database (${(err as Error).message})`, { cause: err });
  }
  try {
    const version = db.pragma('user_version', { simple: true }) as number;
    return { path, exists: true, version, pending: pendingMigrations(version, path) };
  } finally {
    db.close();
  }
}

export function migrate(db: Db, path = 'sts.db'): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  for (const m of pendingMigrations(current, path)) {
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
  }
}

export function getMeta(db: Db, name: string): Buffer | undefined {
  const row = db.prepare('SELECT value FROM meta WHERE name = ?').get(name) as { value: Buffer } | undefined;
  return row?.value;
}

export function setMeta(db: Db, name: string, value: Buffer): void {
  db.prepare('INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value').run(name, value);
}
