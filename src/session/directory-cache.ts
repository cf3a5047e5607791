/**
 * An in-memory read cache in front of an IdentityDirectory, for the records every token check reads: the
 * calling application, the session's user and the user's roles. Without it ValidateUserToken makes three
 * directory reads per call (a third of its server CPU in the benchmark); with it, none.
 *
 * Staleness is what matters for a security service, so the cache is never trusted longer than the directory
 * says it may be:
 *  - every change made through this object empties the cache before it returns, so an administrator who
 *    disables a user or an application sees the next call refused;
 *  - a change made under it (cluster replication applying another node's change, which calls `invalidate`)
 *    empties it too;
 *  - a change made by another process on the same SQLite file (`sts admin directory import` while the server
 *    runs) moves the directory generation (triggers, migration 4), which is read at most every
 *    GENERATION_CHECK_MS: such a change applies within that time.
 *
 * Only found records are kept (an unknown id is read again every time: nothing to invalidate when it is
 * created), and they are frozen, so a handler that modifies a record by mistake fails loudly instead of
 * corrupting what the next call sees.
 */
import { BoundedMap } from '../bounded-map.js';
import type { ApplicationRecord, IdentityDirectory, NewUser, RoleRecord, UserRecord } from './directory.js';

/** How often, at most, the directory generation is read (ms). */
export const GENERATION_CHECK_MS = 250;

export interface DirectoryCacheOptions {
  /** Records kept per kind (applications, users, role lists); the oldest goes first. 0 turns caching off. */
  maxEntries: number;
  /** A number every change to the directory moves, whoever makes it. */
  generation: () => number;
  /** Override of GENERATION_CHECK_MS (tests). */
  checkIntervalMs?: number;
}

function freezeApp(a: ApplicationRecord): ApplicationRecord {
  Object.freeze(a.tags);
  for (const r of a.defaultRoles) Object.freeze(r);
  Object.freeze(a.defaultRoles);
  return Object.freeze(a);
}

function freezeRoles(roles: RoleRecord[]): RoleRecord[] {
  for (const r of roles) Object.freeze(r);
  return Object.freeze(roles) as RoleRecord[];
}

export class CachedDirectory implements IdentityDirectory {
  private readonly apps: BoundedMap<ApplicationRecord>;
  private readonly users: BoundedMap<UserRecord>;
  /** Keyed by uid, then "\n" and the application id ("" for every application's roles). */
  private readonly roles: BoundedMap<RoleRecord[]>;
  private readonly checkIntervalMs: number;
  private seenGeneration: number;
  private checkedAt: number;

  constructor(
    private readonly inner: IdentityDirectory,
    private readonly options: DirectoryCacheOptions,
  ) {
    this.apps = new BoundedMap(options.maxEntries);
    this.users = new BoundedMap(options.maxEntries);
    this.roles = new BoundedMap(options.maxEntries);
    this.checkIntervalMs = options.checkIntervalMs ?? GENERATION_CHECK_MS;
    this.seenGeneration = options.generation();
    this.checkedAt = performance.now();
  }

  /** Forgets everything (a change arrived that did not go through this object). */
  invalidate(): void {
    this.apps.clear();
    this.users.clear();
    this.roles.clear();
  }

  /** Records held, by kind (metrics and tests). */
  get size(): { applications: number; users: number; roleLists: number } {
    return { applications: this.apps.size, users: this.users.size, roleLists: this.roles.size };
  }

  /** Empties the cache if the directory changed under it since the last look. */
  private current(): void {
    const now = performance.now();
    if (now - this.checkedAt < this.checkIntervalMs) return;
    this.checkedAt = now;
    const generation = this.options.generation();
    if (generation !== this.seenGeneration) {
      this.seenGeneration = generation;
      this.invalidate();
    }
  }

  /**
   * Runs a change, then empties the cache and takes note of the generation the change produced. Both happen
   * in the same synchronous step with no read in between, so a change another process commits meanwhile is
   * either already visible to the reads that refill the cache or moves the generation again.
   */
  private write<T>(change: () => T): T {
    try {
      return change();
    } finally {
      this.invalidate();
      this.seenGeneration = this.options.generation();
      this.checkedAt = performance.now();
    }
  }

  getApplication(id: string): ApplicationRecord | undefined {
    this.current();
    const hit = this.apps.get(id);
    if (hit) return hit;
    const app = this.inner.getApplication(id);
    if (app) this.apps.set(id, freezeApp(app));
    return app;
  }

  getUser(uid: string): UserRecord | undefined {
    this.current();
    const hit = this.users.get(uid);
    if (hit) return hit;
    const user = this.inner.getUser(uid);
    if (user) this.users.set(uid, Object.freeze(user));
    return user;
  }

  rolesOf(uid: string, applicationId?: string): RoleRecord[] {
    this.current();
    const key = `${uid}\n${applicationId ?? ''}`;
    const hit = this.roles.get(key);
    if (hit) return hit;
    const roles = freezeRoles(this.inner.rolesOf(uid, applicationId));
    // An empty list is kept too: "no role here" is what anonymous views are made of, and adding a role is a
    // change that empties the cache.
    this.roles.set(key, roles);
    return roles;
  }

  // Reads that are not on a hot path (logon is dominated by the password hash) go straight through.
  listApplications(): ApplicationRecord[] {
    return this.inner.listApplications();
  }
  findUserByUsername(username: string): UserRecord | undefined {
    return this.inner.findUserByUsername(username);
  }
  findUserByExternal(issuer: string, subject: string): UserRecord | undefined {
    return this.inner.findUserByExternal(issuer, subject);
  }
  listUsers(prefix: string, after: string, limit: number): UserRecord[] {
    return this.inner.listUsers(prefix, after, limit);
  }

  createApplication(app: ApplicationRecord): void {
    this.write(() => this.inner.createApplication(app));
  }
  updateApplication(app: ApplicationRecord, maintenance?: boolean): void {
    this.write(() => this.inner.updateApplication(app, maintenance));
  }
  createUser(user: NewUser, roles: readonly RoleRecord[], now: number): UserRecord {
    return this.write(() => this.inner.createUser(user, roles, now));
  }
  updateUser(user: UserRecord, maintenance?: boolean): void {
    this.write(() => this.inner.updateUser(user, maintenance));
  }
  addRole(uid: string, role: RoleRecord): void {
    this.write(() => this.inner.addRole(uid, role));
  }
  removeRole(uid: string, role: RoleRecord): boolean {
    return this.write(() => this.inner.removeRole(uid, role));
  }
}
