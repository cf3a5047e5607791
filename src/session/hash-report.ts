/**
 * `sts admin hashes`: how many stored password and application secret hashes are in the current form, and
 * how many are old (an earlier scheme, other Argon2id parameters, a keyed hash under a master key that is no
 * longer the primary) and will be replaced at their owner's next successful logon. Read from a data directory,
 * like `sts admin directory export`: in cluster mode every node holds the whole directory, so any node's
 * data directory gives the cluster's count.
 */
import type { Db } from '../store/sqlite/database.js';
import type { Argon2Params } from './hash-policy.js';
import { type HashOwner, type HashStatus, describeHash, hashStatus } from './password.js';

export interface HashCounts {
  total: number;
  current: number;
  /** Verifiable, replaced by the current form at the next successful logon. */
  old: number;
  /** Keyed by a master key that is not configured (or not a hash STS makes): their owner cannot log on. */
  unverifiable: number;
  /** Keyed hashes whose status is unknown because the master key ids could not be read. */
  unknown: number;
  /** How many use each scheme and parameters (describeHash). */
  bySchemes: Record<string, number>;
}

export interface HashReport {
  /** The current forms: Argon2id's parameters, and the master key id of new keyed hashes. */
  settings: { passwords: string; applicationSecretKey: string };
  users: HashCounts & { withoutPassword: number };
  applications: HashCounts;
  /** users.old + applications.old: the hashes that still use old parameters. */
  old: number;
}

function count(hashes: readonly string[], owner: HashOwner, argon2: Argon2Params, keyIds: readonly string[] | undefined): HashCounts {
  const c: HashCounts = { total: hashes.length, current: 0, old: 0, unverifiable: 0, unknown: 0, bySchemes: {} };
  for (const h of hashes) {
    const scheme = describeHash(h);
    c.bySchemes[scheme] = (c.bySchemes[scheme] ?? 0) + 1;
    const status: HashStatus | 'unknown' = keyIds === undefined && scheme.startsWith('hmac-sha256 ') ? 'unknown' : hashStatus(h, owner, argon2, keyIds ?? []);
    c[status] += 1;
  }
  return c;
}

/**
 * Counts the hashes in `db` against the current settings. `keyIds`: the configured master key ids, primary
 * first; undefined when they cannot be read here, which leaves keyed hashes 'unknown'.
 */
export function hashReport(db: Db, argon2: Argon2Params, keyIds: readonly string[] | undefined): HashReport {
  const passwords = db.prepare('SELECT password_hash FROM users').pluck().all() as (string | null)[];
  const secrets = db.prepare('SELECT secret_hash FROM applications').pluck().all() as string[];
  const withPassword = passwords.filter((h): h is string => h !== null);
  const users = { ...count(withPassword, 'user', argon2, keyIds), withoutPassword: passwords.length - withPassword.length };
  const applications = count(secrets, 'application', argon2, keyIds);
  return {
    settings: {
      passwords: `argon2id m=${argon2.memoryKiB} t=${argon2.timeCost} p=${argon2.parallelism}`,
      applicationSecretKey: keyIds?.[0] ?? 'unknown: no master key readable here (masterKey.file, STS_MASTER_KEY or <dataDir>/master.key)',
    },
    users,
    applications,
    old: users.old + applications.old,
  };
}
