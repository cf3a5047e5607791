/**
 * A Hazelcast map of replicated records (keys, user secrets, the directory, the registries), sealed and
 * versioned: each value is {revision, value} sealed under the cluster data key, bound to its map, kind and
 * entry key. Opening refuses what is not sealed, does not authenticate or is not well formed, and reports it
 * (src/cluster/rejections.ts); the callers decide what is valid and what is newer (src/cluster/revisions.ts).
 */
import type { IMap } from 'hazelcast-client';
import type { ClusterSeal, RejectReason } from './cluster-seal.js';
import { SealRejected } from './cluster-seal.js';
import type { ClusterRejections } from './rejections.js';
import { type Revision, type RevisionStore, compareRevisions, digestOf } from './revisions.js';

export interface Version {
  value: string;
  rev: number;
}

/** What every sealed map of a node shares. */
export interface SealContext {
  seal: ClusterSeal;
  rejections: ClusterRejections;
  revisions: RevisionStore;
}

export class VersionedMap {
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
    return this.ctx.seal.seal(this.address(key), JSON.stringify({ r: v.rev, v: v.value }));
  }

  /** The version in a grid value, or why it was refused (reported once per value). */
  open(key: string, raw: unknown): Version | RejectReason {
    try {
      const p = JSON.parse(this.ctx.seal.open(this.address(key), raw)) as { r?: unknown; v?: unknown };
      if (!Number.isSafeInteger(p.r) || (p.r as number) < 1 || typeof p.v !== 'string') throw new SealRejected('invalid', 'not a versioned record');
      return { rev: p.r as number, value: p.v };
    } catch (err) {
      const reason = err instanceof SealRejected ? err.reason : 'invalid';
      this.reject(key, reason, raw);
      return reason;
    }
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
    return mine ? compareRevisions({ rev: v.rev, digest: digestOf(v.value) }, mine) : 1;
  }

  /** Records the version this node now holds, together with the local write `fn`, in one transaction. */
  remember(key: string, v: Version, fn: () => void = () => undefined): void {
    this.ctx.revisions.write(this.name, key, v.rev, v.value, fn);
  }

  /** True when a sealed grid value should be sealed again under the current master key. */
  isStale(raw: unknown): boolean {
    return typeof raw === 'string' && this.ctx.seal.isStale(raw);
  }
}
