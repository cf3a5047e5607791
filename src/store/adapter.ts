/**
 * The storage contract of STS, implemented by each backend: SQLite (embedded, the default) and Hazelcast
 * (cluster mode). Modelled on node-oidc-provider's adapter: a few operations on records addressed by
 * namespace and id, values are opaque strings (JSON made by the domain code).
 *
 * Two families, because they have opposite lifecycles:
 * - Ephemeral records (sessions, application tokens, tickets, throttling counters) expire by TTL and may be
 *   lost in a full cluster restart where configured so.
 * - Durable records (keys, user secrets) are immutable once written: created with insertIfAbsent, so two
 *   nodes racing to create the same record agree on one winner, and never lost.
 */

/**
 * Namespaces of ephemeral records. `credential_jti` holds the SHA-256 of each credential JWE id (jti) STS has
 * accepted, until that JWE expires, so each is accepted once; `third_party_jti` the same for the third-party
 * tokens CreateUserFromThirdPartyToken has accepted. `participant` holds one record per application's part in
 * a user session, keyed by the SHA-256 of that application's user token id and grouped by the session.
 */
export type EphemeralNamespace = 'app_token' | 'user_token' | 'participant' | 'user_ticket' | 'throttle' | 'credential_jti' | 'third_party_jti';
/** Namespaces of durable records. */
export type DurableNamespace = 'key' | 'user_secret';

export interface GroupEntry {
  id: string;
  value: string;
}

export interface EphemeralStore {
  /** Creates or replaces a record that expires `ttlMs` from now; `group` indexes it (for example by uid). */
  upsert(ns: EphemeralNamespace, id: string, value: string, ttlMs: number, group?: string): Promise<void>;
  /**
   * Replaces a record only while it exists and has not expired (a refresh must never bring back a session
   * that a concurrent logout removed), and, with `expected`, only while it still holds exactly that value (a
   * compare-and-set: counters updated by concurrent callers on any node lose no increment). Returns false when
   * there was nothing to replace, or the value had changed.
   */
  update(ns: EphemeralNamespace, id: string, value: string, ttlMs: number, expected?: string): Promise<boolean>;
  /**
   * Creates a record that expires `ttlMs` from now unless a live one with this id exists, atomically: of
   * concurrent inserts of one id, on any node, exactly one returns true. A record past its expiry does not
   * block (it is replaced). Returns false, changing nothing, when a live record exists. Never grouped.
   */
  insertIfAbsent(ns: EphemeralNamespace, id: string, value: string, ttlMs: number): Promise<boolean>;
  /** The record, or undefined when absent or expired. */
  find(ns: EphemeralNamespace, id: string): Promise<string | undefined>;
  /** Atomically reads and deletes: of concurrent consumers exactly one gets the value. */
  consume(ns: EphemeralNamespace, id: string): Promise<string | undefined>;
  /** Deletes a record; absent records are fine. */
  destroy(ns: EphemeralNamespace, id: string): Promise<void>;
  /** Unexpired records of a group. */
  findGroup(ns: EphemeralNamespace, group: string): Promise<GroupEntry[]>;
  /** Deletes every record of a group; returns how many there were. */
  destroyGroup(ns: EphemeralNamespace, group: string): Promise<number>;
}

export interface DurableStore {
  /**
   * Stores `value` unless a record with this id exists. Returns the stored value: ours, or the one that
   * won the race. Never overwrites.
   */
  insertIfAbsent(ns: DurableNamespace, id: string, value: string): Promise<string>;
  /** Inserts several records in one step: all or none (a key ring rotation is one write). */
  insertAll(ns: DurableNamespace, records: readonly GroupEntry[]): Promise<void>;
  get(ns: DurableNamespace, id: string): Promise<string | undefined>;
  list(ns: DurableNamespace): Promise<GroupEntry[]>;
  /**
   * Every version of every record, for a caller that must not miss one (the key ring asks, through user
   * secrets, whether anything stored is still wrapped under a key before destroying it). Like `list`, but
   * where a backend holds two versions of a record that cannot be reconciled (cluster mode: this node's copy
   * and the cluster's), both are returned, under the same id, where `list` leaves the record out. In cluster
   * mode it reads the cluster's map (every node writes there first), merged with this node's copies.
   */
  listVersions(ns: DurableNamespace): Promise<GroupEntry[]>;
  /**
   * Replaces a record only if it still holds `expected` (re-wrapping under a new key). Returns false when
   * the record changed meanwhile.
   */
  replaceIfSame(ns: DurableNamespace, id: string, expected: string, next: string): Promise<boolean>;
}

export interface Store {
  readonly ephemeral: EphemeralStore;
  readonly durable: DurableStore;
  close(): Promise<void>;
}
