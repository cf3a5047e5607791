/**
 * Backups of a data directory: `sts admin backup`, `sts backup verify`, `sts restore`.
 *
 * A backup is one SQLite file made with SQLite's online backup API (better-sqlite3's `backup()`) while STS
 * serves: every page is copied in one step, so the copy is the database as one read transaction saw it (WAL
 * mode lets the server keep writing meanwhile). It holds everything durable: the key ring (private and secret
 * keys still sealed under the master key), users' secrets (still wrapped), the directory (password hashes
 * included), the identity provider and resource server registries, and the cluster revisions. Sessions,
 * tickets, throttle counters and spent credential ids are left out: restoring them would bring back sessions
 * that were ended after the backup. The copy is then vacuumed, so nothing deleted survives in free pages.
 *
 * Nothing in a backup opens without the master key, which is never in it: store the two apart.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, chmodSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { StartupError } from '../../errors.js';
import { MasterKeyRing } from '../../crypto/master-key.js';
import { parseKeyRecord, validateKeyRecord } from '../../pop/key-record.js';
import { validateUserSecretRecord } from '../../secret/user-secrets.js';
import { STS_VERSION } from '../../version.js';
import { MIGRATIONS } from './database.js';

const LATEST = MIGRATIONS[MIGRATIONS.length - 1]!.version;
const META_PREFIX = 'backup.';
/** The tables a backup must hold (schema version 6). */
const TABLES = ['meta', 'durable', 'applications', 'users', 'roles', 'identity_providers', 'resource_servers', 'cluster_revisions'];

export interface BackupSummary {
  file: string;
  createdAt: string;
  stsVersion: string;
  schemaVersion: number;
  /** The master key that seals this backup's keys: without it the backup is useless. */
  masterKeyId: string | undefined;
  keys: Record<string, number>;
  userSecrets: number;
  applications: number;
  users: number;
  roles: number;
  identityProviders: number;
  resourceServers: number;
  clusterRevisions: number;
  /** With a master key: every key opened and every user secret is wrapped under a key that is present. */
  masterKeyChecked: boolean;
}

function bad(file: string, why: string, cause?: unknown): never {
  throw new StartupError('store_invalid', `${file}: ${why}`, cause === undefined ? {} : { cause });
}

function count(db: Database.Database, sql: string, ...params: unknown[]): number {
  return (db.prepare(sql).get(...params) as { n: number }).n;
}

function meta(db: Database.Database, name: string): string | undefined {
  const row = db.prepare('SELECT value FROM meta WHERE name = ?').get(name) as { value: Buffer } | undefined;
  return row ? Buffer.from(row.value).toString('utf8') : undefined;
}

/**
 * Copies `<dataDir>/sts.db` to `out` while STS may be serving from it. Refuses to overwrite `out`; writes a
 * temporary file beside it and renames it into place, so `out` is either complete or absent.
 */
export async function backupDatabase(dataDir: string, out: string): Promise<BackupSummary> {
  const source = join(dataDir, 'sts.db');
  if (!existsSync(source)) throw new StartupError('data_dir_unusable', `dataDir ${dataDir}: holds no sts.db to back up`);
  if (existsSync(out)) throw new StartupError('data_dir_unusable', `${out}: exists already; a backup never overwrites a file`);
  const tmp = join(dirname(out), `.${basename(out)}.${randomBytes(6).toString('hex')}.tmp`);
  let db: Database.Database;
  try {
    db = new Database(source, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 5000');
  } catch (err) {
    throw new StartupError('store_invalid', `${source}: cannot open it (${(err as Error).message})`, { cause: err });
  }
  try {
    // The first step only sizes the backup; the handler then asks for every page in the next one, so the copy
    // is made in a single read transaction (a consistent snapshot) instead of restarting whenever STS writes.
    await db.backup(tmp, { progress: () => 0x7fffffff });
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new StartupError('data_dir_unusable', `cannot write the backup next to ${out} (${(err as Error).message})`, { cause: err });
  } finally {
    db.close();
  }
  try {
    chmodSync(tmp, 0o600);
    const copy = new Database(tmp);
    try {
      copy.pragma('journal_mode = DELETE');
      const version = copy.pragma('user_version', { simple: true }) as number;
      copy.transaction(() => {
        if (copy.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ephemeral'").get()) copy.exec('DELETE FROM ephemeral');
        const put = copy.prepare('INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value');
        put.run(`${META_PREFIX}created_at`, Buffer.from(new Date().toISOString()));
        put.run(`${META_PREFIX}sts_version`, Buffer.from(STS_VERSION));
        put.run(`${META_PREFIX}schema_version`, Buffer.from(String(version)));
      })();
      copy.exec('VACUUM');
    } finally {
      copy.close();
    }
    renameSync(tmp, out);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return inspectBackup(out);
}

/**
 * Checks a backup without restoring it: SQLite's integrity check, a schema this STS can run, the tables and
 * records it holds. With `master`: every key record opens under it and is valid, and every user secret is a
 * valid record wrapped under a key the backup holds.
 */
export async function inspectBackup(file: string, master?: MasterKeyRing): Promise<BackupSummary> {
  if (!existsSync(file) || !statSync(file).isFile()) bad(file, 'no such file');
  let db: Database.Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    db.pragma('schema_version'); // reads the header: fails on a file that is not SQLite
  } catch (err) {
    return bad(file, `not an SQLite database (${(err as Error).message})`, err);
  }
  try {
    const integrity = db.pragma('integrity_check') as { integrity_check: string }[];
    if (integrity.length !== 1 || integrity[0]!.integrity_check !== 'ok') bad(file, `damaged: ${integrity.map((r) => r.integrity_check).slice(0, 3).join('; ')}`);
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > LATEST) bad(file, `schema version ${version} is newer than this STS ${STS_VERSION} supports (${LATEST}); restore it with a newer STS`);
    const tables = new Set((db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name));
    if (version === 0) bad(file, 'not an STS backup (no STS schema)');
    // An older schema lacks the newer tables; STS adds them when it starts on the restored directory.
    const missing = TABLES.filter((t) => !tables.has(t));
    if (missing.length > 0 && version === LATEST) bad(file, `not an STS backup: tables ${missing.join(', ')} are missing`);
    const has = (t: string) => tables.has(t);
    const checkRow = db.prepare("SELECT value FROM meta WHERE name = 'master_key_check'").get() as { value: Buffer } | undefined;
    let masterKeyId: string | undefined;
    if (checkRow) {
      try {
        masterKeyId = MasterKeyRing.envelopeKeyId(Buffer.from(checkRow.value));
      } catch {
        bad(file, 'its master key check record is damaged');
      }
    }
    const keyRows = (has('durable') ? db.prepare("SELECT id, value FROM durable WHERE ns = 'key'").all() : []) as { id: string; value: string }[];
    const secretRows = (has('durable') ? db.prepare("SELECT id, value FROM durable WHERE ns = 'user_secret'").all() : []) as { id: string; value: string }[];
    const keys: Record<string, number> = { encryption: 0, signing: 0, secret: 0 };
    const liveKids = new Set<string>();
    for (const row of keyRows) {
      let record;
      try {
        record = parseKeyRecord(row.value);
        if (master) await validateKeyRecord(row.id, row.value, master);
      } catch (err) {
        return bad(file, `key ${row.id.slice(0, 64)} does not ${master ? 'open with the given master key' : 'parse'} (${(err as Error).message})`, err);
      }
      keys[record.kind] = (keys[record.kind] ?? 0) + 1;
      if (record.sealed !== undefined) liveKids.add(record.kid);
    }
    for (const row of secretRows) {
      try {
        validateUserSecretRecord(row.id, row.value);
      } catch (err) {
        return bad(file, `user secret ${row.id.slice(0, 64)} is not a valid record (${(err as Error).message})`, err);
      }
      if (master) {
        const wrapped = (JSON.parse(row.value) as { wrapped: string }).wrapped;
        const kid = (JSON.parse(Buffer.from(wrapped.split('.')[0]!, 'base64url').toString('utf8')) as { kid?: string }).kid;
        if (!kid || !liveKids.has(kid)) bad(file, `user secret ${row.id.slice(0, 64)} is wrapped under key ${String(kid).slice(0, 64)}, which the backup does not hold`);
      }
    }
    const n = (t: string) => (has(t) ? count(db, `SELECT count(*) AS n FROM ${t}`) : 0);
    return {
      file,
      createdAt: meta(db, `${META_PREFIX}created_at`) ?? '',
      stsVersion: meta(db, `${META_PREFIX}sts_version`) ?? '',
      schemaVersion: version,
      masterKeyId,
      keys,
      userSecrets: secretRows.length,
      applications: n('applications'),
      users: n('users'),
      roles: n('roles'),
      identityProviders: n('identity_providers'),
      resourceServers: n('resource_servers'),
      clusterRevisions: n('cluster_revisions'),
      masterKeyChecked: master !== undefined,
    };
  } finally {
    db.close();
  }
}

/**
 * Fills an empty (or absent) data directory from a backup, after checking it (with `master` when the master
 * keys are configured). Start STS on the directory afterwards: migrations bring an older schema up to date.
 */
export async function restoreBackup(file: string, dataDir: string, master?: MasterKeyRing): Promise<BackupSummary> {
  if (existsSync(dataDir)) {
    if (!statSync(dataDir).isDirectory()) throw new StartupError('data_dir_unusable', `--data-dir ${dataDir}: is not a directory`);
    const entries = readdirSync(dataDir);
    if (entries.length > 0) throw new StartupError('data_dir_unusable', `--data-dir ${dataDir}: is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''}); restore only into an empty or new directory, never over live data`);
  }
  const summary = await inspectBackup(file, master);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const target = join(dataDir, 'sts.db');
  const source = new Database(file, { readonly: true, fileMustExist: true });
  try {
    await source.backup(target, { progress: () => 0x7fffffff });
  } finally {
    source.close();
  }
  chmodSync(target, 0o600);
  const db = new Database(target);
  try {
    db.prepare('DELETE FROM meta WHERE name LIKE ?').run(`${META_PREFIX}%`);
    db.pragma('journal_mode = WAL');
  } finally {
    db.close();
  }
  return summary;
}
