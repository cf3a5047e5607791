/**
 * The directory in cluster mode: every node keeps the whole directory in its local SQLite (reads stay local
 * and synchronous) and every change is published to the sealed cluster map `sts-directory`, from which the
 * other nodes take it (src/cluster/replicated-records.ts). Records are whole applications and whole users with
 * their roles; each change raises the record's revision, and a record from the cluster is applied only when it
 * is authentic, newer, and valid by the rules of the admin RPCs (src/session/directory-validation.ts).
 */
import type { Logger } from '../log.js';
import type { Db } from '../store/sqlite/database.js';
import { type ReplicatedSource, ReplicatedRecords } from '../cluster/replicated-records.js';
import { RevisionStore } from '../cluster/revisions.js';
import type { VersionedMap } from '../cluster/versioned-map.js';
import { invalidArgument } from '../errors.js';
import type { ApplicationRecord, IdentityDirectory, NewUser, RoleRecord, UserRecord } from './directory.js';
import { SqliteDirectory } from './directory.js';
import { importDirectory } from './directory-file.js';
import { validateApplicationRecord, validateRoles, validateUserRecord } from './directory-validation.js';

type Entry = { kind: 'app'; app: ApplicationRecord } | { kind: 'user'; user: UserRecord; roles: RoleRecord[] };

const keyOf = (e: Entry): string => (e.kind === 'app' ? `app:${e.app.id}` : `user:${e.user.uid}`);

/** A directory entry from the cluster, checked as the admin RPCs check what they store. */
function validateEntry(key: string, json: string): Entry {
  const e = JSON.parse(json) as Entry;
  if (e?.kind === 'app') validateApplicationRecord(e.app);
  else if (e?.kind === 'user') {
    validateUserRecord(e.user);
    validateRoles(e.roles);
  } else throw invalidArgument('kind', 'must be "app" or "user"');
  if (keyOf(e) !== key) throw invalidArgument('key', 'the record is not the one its entry key names');
  return e;
}

export class ReplicatedDirectory implements IdentityDirectory {
  private readonly local: SqliteDirectory;
  private readonly records: ReplicatedRecords;

  private constructor(db: Db, map: VersionedMap, logger: Logger) {
    this.local = new SqliteDirectory(db);
    const local = this.local;
    const source: ReplicatedSource = {
      keys: () => [...local.listApplications().map((a) => `app:${a.id}`), ...local.listUsers('', '', 1_000_000).map((u) => `user:${u.uid}`)],
      get: (key) => {
        const entry = this.entryOf(key);
        return entry && JSON.stringify(entry);
      },
      validate: (key, json) => void validateEntry(key, json),
      apply: (_key, json) => {
        const e = JSON.parse(json) as Entry;
        if (e.kind === 'app') importDirectory(db, { version: 1, applications: [e.app], users: [] });
        else importDirectory(db, { version: 1, applications: [], users: [{ ...e.user, roles: e.roles }] });
      },
    };
    // The revisions of the records this node holds live beside them, in its own database.
    this.records = new ReplicatedRecords(map.with({ revisions: new RevisionStore(db) }), source, logger);
    this.records.onApplied = () => this.onApplied?.();
  }

  static async open(db: Db, map: VersionedMap, logger: Logger): Promise<ReplicatedDirectory> {
    const d = new ReplicatedDirectory(db, map, logger);
    await d.records.start();
    return d;
  }

  private entryOf(key: string): Entry | undefined {
    if (key.startsWith('app:')) {
      const app = this.local.getApplication(key.slice(4));
      return app && { kind: 'app', app };
    }
    const user = key.startsWith('user:') ? this.local.getUser(key.slice(5)) : undefined;
    return user && { kind: 'user', user, roles: this.local.rolesOf(user.uid) };
  }

  /** Publishes what the cluster missed from this node, then applies what it holds (after a reconnect). */
  resync(): Promise<void> {
    return this.records.resync();
  }

  /** Keys of changes made here that the cluster has not confirmed yet (metrics and tests). */
  get pendingKeys(): string[] {
    return this.records.pendingKeys;
  }

  /** Called after a change from the cluster is written under this object (the directory cache listens). */
  onApplied: (() => void) | undefined;

  private publish(key: string, maintenance = false): void {
    const entry = this.entryOf(key);
    if (entry) this.records.publish(key, JSON.stringify(entry), maintenance);
  }

  /** See SqliteDirectory.generation: replicated changes are written to the same tables and move it too. */
  generation(): number {
    return this.local.generation();
  }

  getApplication(id: string) {
    return this.local.getApplication(id);
  }
  listApplications() {
    return this.local.listApplications();
  }
  createApplication(app: ApplicationRecord): void {
    this.local.createApplication(app);
    this.publish(`app:${app.id}`);
  }
  updateApplication(app: ApplicationRecord, maintenance = false): void {
    this.local.updateApplication(app);
    this.publish(`app:${app.id}`, maintenance);
  }
  getUser(uid: string) {
    return this.local.getUser(uid);
  }
  findUserByUsername(username: string) {
    return this.local.findUserByUsername(username);
  }
  findUserByExternal(issuer: string, subject: string) {
    return this.local.findUserByExternal(issuer, subject);
  }
  createUser(user: NewUser, roles: readonly RoleRecord[], now: number): UserRecord {
    const created = this.local.createUser(user, roles, now);
    this.publish(`user:${created.uid}`);
    return created;
  }
  updateUser(user: UserRecord, maintenance = false): void {
    this.local.updateUser(user);
    this.publish(`user:${user.uid}`, maintenance);
  }
  listUsers(prefix: string, after: string, limit: number) {
    return this.local.listUsers(prefix, after, limit);
  }
  rolesOf(uid: string, applicationId?: string) {
    return this.local.rolesOf(uid, applicationId);
  }
  addRole(uid: string, role: RoleRecord): void {
    this.local.addRole(uid, role);
    this.publish(`user:${uid}`);
  }
  removeRole(uid: string, role: RoleRecord): boolean {
    const removed = this.local.removeRole(uid, role);
    if (removed) this.publish(`user:${uid}`);
    return removed;
  }
}
