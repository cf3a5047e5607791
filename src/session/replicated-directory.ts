/**
 * The directory in cluster mode: every node keeps the whole directory in its local SQLite (reads stay
 * local and synchronous) and every change is published to the cluster map `sts-directory`, from which the
 * other nodes apply it (entry listeners). On start a node pulls what the cluster has and publishes what
 * only it has. Records are whole applications and whole users with their roles; the last write wins.
 */
import type { IMap } from 'hazelcast-client';
import type { Logger } from '../log.js';
import type { Db } from '../store/sqlite/database.js';
import type { ApplicationRecord, IdentityDirectory, NewUser, RoleRecord, UserRecord } from './directory.js';
import { SqliteDirectory } from './directory.js';
import { importDirectory } from './directory-file.js';

type Entry = { kind: 'app'; app: ApplicationRecord } | { kind: 'user'; user: UserRecord; roles: RoleRecord[] };

export class ReplicatedDirectory implements IdentityDirectory {
  private readonly local: SqliteDirectory;
  /**
   * Changes made here that the cluster has not confirmed, by map key. A publish that fails (the cluster went
   * away between the local write and the publish) stays here and is published again before the next resync,
   * which would otherwise bring the cluster's older record back over it, and other nodes would never learn of it.
   */
  private readonly unpublished = new Map<string, Entry>();

  private constructor(
    private readonly db: Db,
    private readonly map: IMap<string, string>,
    private readonly logger: Logger,
  ) {
    this.local = new SqliteDirectory(db);
  }

  static async open(db: Db, map: IMap<string, string>, logger: Logger): Promise<ReplicatedDirectory> {
    const d = new ReplicatedDirectory(db, map, logger);
    const apply = (json: string | null) => {
      if (json) d.apply(JSON.parse(json) as Entry);
    };
    await map.addEntryListener({ added: (e) => apply(e.value), updated: (e) => apply(e.value) }, undefined, true);
    await d.resync();
    for (const app of d.local.listApplications()) await map.putIfAbsent(`app:${app.id}`, JSON.stringify({ kind: 'app', app } satisfies Entry));
    for (const user of d.local.listUsers('', '', 1_000_000)) {
      await map.putIfAbsent(`user:${user.uid}`, JSON.stringify({ kind: 'user', user, roles: d.local.rolesOf(user.uid) } satisfies Entry));
    }
    return d;
  }

  /**
   * Publishes what the cluster missed from this node, then applies everything the cluster holds (start-up, and
   * after a reconnect: missed events are not replayed). Throws, changing nothing here, if the cluster is
   * still unreachable: the reconnect hook runs again.
   */
  async resync(): Promise<void> {
    for (const [key, e] of [...this.unpublished]) {
      await this.map.set(key, JSON.stringify(e));
      if (this.unpublished.get(key) === e) this.unpublished.delete(key);
    }
    for (const [, json] of await this.map.entrySet()) if (json) this.apply(JSON.parse(json) as Entry);
  }

  /** Keys of changes made here that the cluster has not confirmed yet (metrics and tests). */
  get pendingKeys(): string[] {
    return [...this.unpublished.keys()];
  }

  /** Called after a change from the cluster is written under this object (the directory cache listens). */
  onApplied: (() => void) | undefined;

  private apply(e: Entry): void {
    try {
      if (e.kind === 'app') importDirectory(this.db, { version: 1, applications: [e.app], users: [] });
      else importDirectory(this.db, { version: 1, applications: [], users: [{ ...e.user, roles: e.roles }] });
    } catch (err) {
      this.logger.error('could not apply a directory change from the cluster', { kind: e.kind, err });
    } finally {
      this.onApplied?.();
    }
  }

  private publish(e: Entry): void {
    const key = e.kind === 'app' ? `app:${e.app.id}` : `user:${e.user.uid}`;
    this.unpublished.set(key, e);
    this.map.set(key, JSON.stringify(e)).then(
      () => {
        // A later change of the same record may be on its way: only this one is confirmed.
        if (this.unpublished.get(key) === e) this.unpublished.delete(key);
      },
      (err: unknown) => this.logger.error('could not publish a directory change to the cluster; it is published again after the next reconnect', { key, err }),
    );
  }

  private publishUser(uid: string): void {
    const user = this.local.getUser(uid);
    if (user) this.publish({ kind: 'user', user, roles: this.local.rolesOf(uid) });
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
    this.publish({ kind: 'app', app });
  }
  updateApplication(app: ApplicationRecord): void {
    this.local.updateApplication(app);
    this.publish({ kind: 'app', app });
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
    this.publishUser(created.uid);
    return created;
  }
  updateUser(user: UserRecord): void {
    this.local.updateUser(user);
    this.publishUser(user.uid);
  }
  listUsers(prefix: string, after: string, limit: number) {
    return this.local.listUsers(prefix, after, limit);
  }
  rolesOf(uid: string, applicationId?: string) {
    return this.local.rolesOf(uid, applicationId);
  }
  addRole(uid: string, role: RoleRecord): void {
    this.local.addRole(uid, role);
    this.publishUser(uid);
  }
  removeRole(uid: string, role: RoleRecord): boolean {
    const removed = this.local.removeRole(uid, role);
    if (removed) this.publishUser(uid);
    return removed;
  }
}
