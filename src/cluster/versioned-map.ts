/**
 * A Hazelcast map of replicated records (keys, user secrets, the directory, the registries), sealed and
 * versioned: each value is {revision, value} sealed under the cluster data key, bound to its map, kind and
 * entry key. Opening refuses what is not sealed, does not authenticate or is not well formed, and reports it
 * (src/cluster/rejections.ts); the callers decide what is valid and what is newer (src/cluster/revisions.ts).
 */
import type { IMap } from 'hazelcast-client';
import { BoundedMap } from '../bounded-map.js';
import type { ClusterSeal, RejectReason } from './cluster-seal.js';
import { SealRejected } from './cluster-seal.js';
import type { ClusterRejections } from './rejections.js';
import { type Revision, type RevisionStore, compareRevisions, digestOf } from './revisions.js';

export interface Version {
  value: string;
  rev: number;
  /** A maintenance write (revisions.ts): loses every tie with another change of the same revision. */
  maintenance?: boolean;
}

/** The digest of a version, the tie-break between two versions of one revision (revisions.ts). */
export const digestOfVersion = (v: Version): string => digestOf(v.value, v.maintenance === true);

/** What every sealed map of a node shares. */
export interface SealContext {
  seal: ClusterSeal;
  rejections: ClusterRejections;
  revisions: RevisionStore;
}

/** How often a node puts its own copy back over one refused entry before it stops trying for a while. */
const REPAIRS_PER_WINDOW = 5;
const REPAIR_WINDOW_MS = 60_000;

export class VersionedMap {
  /**
   * Repairs per key in the current window. Two nodes that disagree for a reason no repair can end (one lacks
   * the other's master key, or validates by older rules during an upgrade) would otherwise overwrite each
   * other for ever; past the limit the entry is left as it is until the window ends.
   */
  private readonly repairs = new BoundedMap<{ count: number; since: number }>(10_000);

  constructor(
    readonly imap: IMap<string, unknown>,
    readonly name: string,
    /** The record kind of an entry key (the AAD binds it): a namespace, or a key prefix such as "app". */
    private readonly kindOf: (key: string) => string,
    readonly ctx: SealContext,
  ) {}

  /** The same map seen by another node's revision store, or through another IMap (tests make one fail). */
  with(changes: { revisions?: RevisionStore; imap?: IMap<string, unknown> }): VersionedMap {
    return new VersionedMap(changes.imap ?? this.imap, this.name, this.kindOf, { ...this.ctx, revisions: changes.revisions ?? this.ctx.revisions });
  }

  private address(key: string) {
    return { map: this.name, kind: this.kindOf(key), key };
  }

  seal(key: string, v: Version): string {
    return this.ctx.seal.seal(this.address(key), JSON.stringify(v.maintenance ? { r: v.rev, v: v.value, m: 1 } : { r: v.rev, v: v.value }));
  }

  /** The version in a grid value, or why it was refused (reported once per value). */
  open(key: string, raw: unknown): Version | RejectReason {
    try {
      const p = JSON.parse(this.ctx.seal.open(this.address(key), raw)) as { r?: unknown; v?: unknown; m?: unknown };
      if (!Number.isSafeInteger(p.r) || (p.r as number) < 1 || typeof p.v !== 'string' || (p.m !== undefined && p.m !== 1)) throw new SealRejected('invalid', 'not a versioned record');
      return p.m === 1 ? { rev: p.r as number, value: p.v, maintenance: true } : { rev: p.r as number, value: p.v };
    } catch (err) {
      const reason = err instanceof SealRejected ? err.reason : 'invalid';
      this.reject(key, reason, raw);
      return reason;
    }
  }

  /** True while `key` may still be repaired in this window (and counts the repair). */
  mayRepair(key: string, now = Date.now()): boolean {
    const r = this.repairs.get(key);
    if (!r || now - r.since >= REPAIR_WINDOW_MS) {
      this.repairs.set(key, { count: 1, since: now });
      return true;
    }
    r.count++;
    return r.count <= REPAIRS_PER_WINDOW;
  }

  /**
   * Every entry of the map, for a start-up sync or a resync, robust to entries planted by others: a key that
   * is not a string is refused and left out, and a value the client cannot even deserialize (a type it has no
   * serializer for) makes the whole listing fail, so the entries are then read one by one and each that fails
   * is refused. Only a map whose very keys cannot be read gives nothing (reported): the node then goes on with
   * its own copies rather than never starting.
   */
  async entries(): Promise<[string, unknown][]> {
    let all: [unknown, unknown][];
    try {
      all = await this.imap.entrySet();
    } catch (err) {
      if (!isSerializationError(err)) throw err;
      all = [];
      let keys: unknown[];
      try {
        keys = await this.imap.keySet();
      } catch (keyErr) {
        if (!isSerializationError(keyErr)) throw keyErr;
        this.reject('*', 'invalid', 'keys that cannot be read');
        return [];
      }
      for (const key of keys) {
        try {
          all.push([key, await this.imap.get(key as string)]);
        } catch (getErr) {
          if (!isSerializationError(getErr)) throw getErr;
          if (typeof key === 'string') this.reject(key, 'invalid', 'a value that cannot be read');
        }
      }
    }
    const out: [string, unknown][] = [];
    for (const [key, raw] of all) {
      if (typeof key === 'string') out.push([key, raw]);
      else this.reject(String(key).slice(0, 64), 'invalid', raw);
    }
    return out;
  }

  reject(key: string, reason: RejectReason, raw: unknown): void {
    this.ctx.rejections.report(this.name, key, reason, raw);
  }

  /** The revision of the copy this node holds, if it has recorded one. */
  local(key: string): Revision | undefined {
    return this.ctx.revisions.get(this.name, key);
  }

  /** How a grid version compares with this node's copy: negative when older (a rollback). */
  compareWithLocal(key: string, v: Version): number {
    const mine = this.local(key);
    return mine ? compareRevisions({ rev: v.rev, digest: digestOfVersion(v) }, mine) : 1;
  }

  /** True when version `a` is newer than `b` (revision first, then digest: the same order on every node). */
  newer(a: Version, b: Version): boolean {
    return compareRevisions({ rev: a.rev, digest: digestOfVersion(a) }, { rev: b.rev, digest: digestOfVersion(b) }) > 0;
  }

  /** Records the version this node now holds, together with the local write `fn`, in one transaction. */
  remember(key: string, v: Version, fn: () => void = () => undefined): void {
    this.ctx.revisions.write(this.name, key, v.rev, digestOfVersion(v), fn);
  }

  /** True when a sealed grid value should be sealed again under the current master key. */
  isStale(raw: unknown): boolean {
    return typeof raw === 'string' && this.ctx.seal.isStale(raw);
  }
}

/**
 * A value (or key) the Hazelcast client could not turn into an object: planted by something other than STS
 * (a type id or factory this client has no serializer for: hazelcast-client throws a RangeError or a
 * HazelcastSerializationError).
 */
export function isSerializationError(err: unknown): boolean {
  return err instanceof RangeError || (err instanceof Error && /Serialization/i.test(err.name + (err.constructor?.name ?? '')));
}

/** Stands for a grid value this client cannot read: it never opens. */
export const UNREADABLE: unique symbol = Symbol('a value the client cannot read');

/** Reads one entry; a value the client cannot read comes back as UNREADABLE (refused like any forgery). */
export async function readEntry<T>(read: () => Promise<T>): Promise<T | typeof UNREADABLE> {
  try {
    return await read();
  } catch (err) {
    if (isSerializationError(err)) return UNREADABLE;
    throw err;
  }
}

/**
 * hazelcast-client decodes an entry event (key and value) before it calls any listener, and an error there is
 * rethrown on process.nextTick: one value of a type this client cannot read, put in any map a node listens to,
 * would end the node's process. Such events are dropped and logged instead. This reaches into the client's
 * invocation service (pinned hazelcast-client 5.6.0); test/cluster-sealed.test.ts plants such values and fails
 * if a client version changes what this relies on.
 */
export function dropUndecodableEvents(client: object, onDrop: (err: unknown) => void): void {
  const service = (client as { invocationService?: { callEventHandlerWithMessage?: (...args: unknown[]) => unknown } }).invocationService;
  const original = service?.callEventHandlerWithMessage;
  if (!service || typeof original !== 'function') throw new Error('hazelcast-client: the event handler this node guards is not where it was (client version changed?)');
  service.callEventHandlerWithMessage = function guarded(this: unknown, ...args: unknown[]): unknown {
    try {
      return original.apply(this, args);
    } catch (err) {
      if (!isSerializationError(err)) throw err;
      onDrop(err);
      return undefined;
    }
  };
}
