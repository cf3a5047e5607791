/**
 * Revisions of replicated records, so that no node goes back in time.
 *
 * Every replicated record (a key, a user secret, a directory entry, a registry entry) carries a revision
 * inside its seal, raised by one on every change. A node keeps, in its own SQLite, the revision of each
 * record it holds and refuses an older one: an authentic value copied from the grid before a change (a key
 * before its erasure, a secret wrapped under a key since destroyed, an application before it was disabled)
 * cannot be played back. Two nodes that change one record at once make two values of the same revision;
 * the one with the greater digest wins on every node, so they converge without a coordinator. A maintenance
 * write (a hash replaced by its current form after a logon: no one decided it) has its digest prefixed with
 * MAINTENANCE, which sorts below every base64url character: it loses every tie with a change an administrator
 * made at the same revision on another node, so a rehash can never undo a secret or password reset.
 */
import { hash } from 'node:crypto';
import type { Db } from '../store/sqlite/database.js';

export interface Revision {
  rev: number;
  /** SHA-256 of the record's value (base64url): the tie-break between two values of one revision. */
  digest: string;
}

/** The prefix of a maintenance write's digest ("!" is below every base64url character). */
export const MAINTENANCE = '!';

export function digestOf(value: string, maintenance = false): string {
  return (maintenance ? MAINTENANCE : '') + hash('sha256', value, 'base64url');
}

/** Negative when `a` is older than `b`, 0 when they are the same version, positive when newer. */
export function compareRevisions(a: Revision, b: Revision): number {
  return a.rev - b.rev || (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0);
}

export class RevisionStore {
  private readonly stmts;

  constructor(readonly db: Db) {
    this.stmts = {
      get: db.prepare('SELECT rev, digest FROM cluster_revisions WHERE map = ? AND key = ?'),
      any: db.prepare('SELECT 1 FROM cluster_revisions LIMIT 1').pluck(),
      set: db.prepare('INSERT INTO cluster_revisions (map, key, rev, digest) VALUES (?, ?, ?, ?) ON CONFLICT (map, key) DO UPDATE SET rev = excluded.rev, digest = excluded.digest'),
    };
  }

  get(map: string, key: string): Revision | undefined {
    return this.stmts.get.get(map, key) as Revision | undefined;
  }

  /** True when this node holds no revision at all: it has never run in a sealed cluster. */
  isEmpty(): boolean {
    return this.stmts.any.get() === undefined;
  }

  /** `digest`: digestOf the value (with its maintenance mark). */
  set(map: string, key: string, rev: number, digest: string): void {
    this.stmts.set.run(map, key, rev, digest);
  }

  /** Runs `fn` (a local write) and records the revision in the same SQLite transaction. */
  write(map: string, key: string, rev: number, digest: string, fn: () => void): void {
    this.db.transaction(() => {
      fn();
      this.set(map, key, rev, digest);
    })();
  }
}
