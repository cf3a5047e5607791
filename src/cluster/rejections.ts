/**
 * What a node does with a grid value it refuses: one error log line and one audit line per entry (the same
 * refused value read again is not logged again), and the counter `sts_cluster_records_rejected_total{map}`.
 * Neither says anything about the value itself beyond its map, its key and why it was refused.
 */
import { hash } from 'node:crypto';
import { BoundedMap } from '../bounded-map.js';
import type { Logger } from '../log.js';
import type { RejectReason } from './cluster-seal.js';

export class ClusterRejections {
  private readonly counts = new Map<string, number>();
  /** Refusals already reported, by map, key, reason and a digest of the value. */
  private readonly seen = new BoundedMap<true>(10_000);

  constructor(private readonly logger: Logger) {}

  /** Reports a refused value; returns true the first time this very value is refused. */
  report(map: string, key: string, reason: RejectReason, raw: unknown): boolean {
    let digest: string;
    try {
      digest = hash('sha256', typeof raw === 'string' ? raw : JSON.stringify(raw) ?? String(raw), 'base64url');
    } catch {
      digest = '?';
    }
    const id = `${map}\0${key}\0${reason}\0${digest}`;
    if (this.seen.get(id)) return false;
    this.seen.set(id, true);
    this.counts.set(map, (this.counts.get(map) ?? 0) + 1);
    // Entry keys of secret-bearing maps are already hashes; clip anything long an attacker may have chosen.
    const shown = key.length > 96 ? `${key.slice(0, 96)}...` : key;
    this.logger.error('refused a cluster record: it is not used, and this node keeps its own authentic copy where it has one', { map, key: shown, reason });
    this.logger.info('audit', { event: 'cluster.record_rejected', map, key: shown, reason });
    return true;
  }

  /** Refused entries per map since start (each distinct value once). */
  get totals(): ReadonlyMap<string, number> {
    return this.counts;
  }

  total(map?: string): number {
    if (map !== undefined) return this.counts.get(map) ?? 0;
    let n = 0;
    for (const v of this.counts.values()) n += v;
    return n;
  }
}
