/**
 * Small tables that every node keeps whole in its own SQLite and replicates through one sealed cluster map
 * (the directory in `sts-directory`; the identity provider and resource server registries in `sts-registry`).
 *
 * A change made on a node is written locally, raised one revision and published; the other nodes take it
 * from an entry event. A value from the grid is used only when it opens (src/cluster/versioned-map.ts),
 * passes the validation of the admin RPC that creates such a record, and is newer than the node's own copy;
 * otherwise the node keeps its copy and puts it back over the refused value. A record deleted from the grid
 * is put back too (the tables delete by publishing a tombstone, never by erasing an entry). Two nodes that
 * change one record at once converge on the value with the greater digest (src/cluster/revisions.ts).
 * On start and after every reconnect a node publishes what the cluster missed from it, then takes what it
 * missed from the cluster.
 */
import { coalesced } from '../coalesce.js';
import type { Logger } from '../log.js';
import { MAINTENANCE } from './revisions.js';
import type { Version, VersionedMap } from './versioned-map.js';

/** One node's side of a replicated table, by entry key ("app:<id>", "idp:<issuer>", ...). */
export interface ReplicatedSource {
  /** Keys of every record this node holds. */
  keys(): string[];
  /** This node's record under `key`, as the JSON it publishes; undefined when it holds none. */
  get(key: string): string | undefined;
  /** The JSON that says `key` was deleted (tables that delete), published for a key known but absent here. */
  tombstone?(key: string): string;
  /** Throws (INVALID_ARGUMENT naming the field) when `json` is not a valid record for `key`. */
  validate(key: string, json: string): void;
  /** Writes a validated record from the cluster here. */
  apply(key: string, json: string): void;
}

export class ReplicatedRecords {
  /**
   * Changes made here that the cluster has not confirmed, by key. A publish that fails (the cluster went away
   * between the local write and the publish) stays here and is published again before the next resync, which
   * would otherwise bring the cluster's older record back over it, and other nodes would never learn of it.
   */
  private readonly unpublished = new Map<string, Version>();

  /** Called after a change from the cluster is written here (caches listen). */
  onApplied: (() => void) | undefined;

  constructor(
    private readonly map: VersionedMap,
    private readonly source: ReplicatedSource,
    private readonly logger: Logger,
  ) {}

  /** Listens for other nodes' changes, then resyncs. */
  async start(): Promise<void> {
    const onValue = (e: { key: string; value: unknown }) => {
      if (e.value !== null && e.value !== undefined) this.absorb(e.key, e.value).catch((err: unknown) => this.failed('take', e.key, err));
    };
    const onRemoved = (e: { key: string }) => {
      this.republish(e.key, null).catch((err: unknown) => this.failed('restore', e.key, err));
    };
    // A burst of clears costs at most two resyncs, not one per event.
    const onCleared = coalesced(
      () => this.resync(),
      (err) => this.failed('restore', '*', err),
    );
    await this.map.imap.addEntryListener({ added: onValue, updated: onValue, removed: onRemoved, evicted: onRemoved, mapCleared: onCleared, mapEvicted: onCleared }, undefined, true);
    await this.resync();
  }

  /**
   * A change made on this node (already written locally): one revision up, and published. `maintenance`: a
   * change nobody decided (a hash replaced by its current form), which loses a tie with any other change.
   */
  publish(key: string, json: string, maintenance = false): void {
    const v: Version = { value: json, rev: (this.map.local(key)?.rev ?? 0) + 1, ...(maintenance ? { maintenance } : {}) };
    this.map.remember(key, v);
    this.unpublished.set(key, v);
    this.send(key, v).catch((err: unknown) =>
      this.logger.error(`could not publish a ${this.map.name} change to the cluster; it is published again after the next reconnect`, { key, err }),
    );
  }

  /**
   * Puts a change made here in the grid unless the grid already holds a newer version of the record (another
   * node's concurrent change, which this node then takes instead): a compare-and-set, so a publish never
   * overwrites a newer revision.
   */
  private async send(key: string, v: Version): Promise<void> {
    const sealed = this.map.seal(key, v);
    for (let round = 0; round < 3; round++) {
      const raw = await this.map.imap.get(key);
      if (raw === null) {
        if ((await this.map.imap.putIfAbsent(key, sealed)) === null) break;
        continue;
      }
      const theirs = this.map.open(key, raw);
      if (typeof theirs === 'object' && this.map.newer(theirs, v)) {
        await this.absorb(key, raw);
        break;
      }
      if (await this.map.imap.replaceIfSame(key, raw, sealed)) break;
    }
    // A later change of the same record may be on its way: only this one is confirmed.
    if (this.unpublished.get(key) === v) this.unpublished.delete(key);
  }

  /**
   * Publishes what the cluster missed from this node, then takes everything the cluster holds (start-up, and
   * after a reconnect: missed events are not replayed). Throws, changing nothing here, if the cluster is
   * unreachable: the reconnect hook runs again.
   */
  async resync(): Promise<void> {
    for (const [key, v] of [...this.unpublished]) await this.send(key, v);
    const remote = new Map(await this.map.entries());
    for (const [key, raw] of remote) {
      // One entry planted by someone else (a key no table knows, a value of a shape nobody writes) must not
      // stop a node from starting or resyncing: it is refused and the rest goes on.
      await this.absorb(key, raw).catch((err: unknown) => {
        this.map.reject(key, 'invalid', raw);
        this.logger.debug('a cluster entry could not be taken', { map: this.map.name, key, err });
      });
    }
    for (const key of this.source.keys()) if (!remote.has(key)) await this.republish(key, null);
  }

  /** Keys of changes made here that the cluster has not confirmed yet (metrics and tests). */
  get pendingKeys(): string[] {
    return [...this.unpublished.keys()];
  }

  private async absorb(key: string, raw: unknown): Promise<void> {
    const theirs = this.map.open(key, raw);
    if (typeof theirs === 'string') {
      // Refused (open reported it): ours goes back, except over a value sealed under a master key this node
      // lacks, which a node with a newer ring may have written.
      if (theirs !== 'unknown_key') await this.republish(key, raw);
      return;
    }
    const order = this.map.compareWithLocal(key, theirs);
    if (order > 0) {
      // Newer than this node's copy: applied only if the admin RPC that makes such a record would accept it.
      try {
        this.source.validate(key, theirs.value);
      } catch (err) {
        this.logger.debug('cluster record failed validation', { map: this.map.name, key, err });
        this.map.reject(key, 'invalid', raw);
        await this.republish(key, raw);
        return;
      }
      this.source.apply(key, theirs.value);
      this.map.remember(key, theirs);
      // A change of ours still waiting to be published lost to this newer one: never put it back later.
      this.unpublished.delete(key);
      this.onApplied?.();
      return;
    }
    if (order < 0) {
      // Older than this node's copy: a replayed value when its revision is lower (refused and reported); a
      // concurrent change of the same revision that lost the tie-break otherwise. Either way ours goes back.
      if (theirs.rev < this.map.local(key)!.rev) this.map.reject(key, 'rollback', raw);
      await this.republish(key, raw);
      return;
    }
    // The same version: seal it again under the current master key if an older one sealed it.
    if (this.map.isStale(raw)) await this.map.imap.replaceIfSame(key, raw, this.map.seal(key, theirs));
  }

  /**
   * Puts this node's record back in place of `raw` (a refused value, or nothing: null): its unconfirmed change
   * if it has one, else its record as it stands, at the revision it holds; a few times per window only (two
   * nodes that disagree for good must not overwrite each other for ever).
   */
  private async republish(key: string, raw: unknown): Promise<void> {
    if (raw !== null && !this.map.mayRepair(key)) return;
    let v = this.unpublished.get(key);
    if (!v) {
      const known = this.map.local(key);
      let json: string | undefined;
      try {
        json = this.source.get(key) ?? (known && this.source.tombstone?.(key));
      } catch {
        json = undefined; // a key no table of this node knows: nothing of ours to put back
      }
      if (json === undefined) return;
      v = { value: json, rev: known?.rev ?? 1, ...(known?.digest.startsWith(MAINTENANCE) ? { maintenance: true } : {}) };
      this.map.remember(key, v);
    }
    const sealed = this.map.seal(key, v);
    if (raw === null) await this.map.imap.putIfAbsent(key, sealed);
    else await this.map.imap.replaceIfSame(key, raw, sealed);
  }

  private failed(what: 'take' | 'restore', key: string, err: unknown): void {
    this.logger.error(what === 'take' ? `could not apply a ${this.map.name} change from the cluster` : `could not put a deleted ${this.map.name} record back`, { key, err });
  }
}
