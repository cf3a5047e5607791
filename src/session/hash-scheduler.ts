/**
 * Fair sharing of password-hashing capacity between the applications that ask for it.
 *
 * A password check is deliberately slow (scrypt today: 128 MiB and about 0.4 s of a core), and the libuv
 * thread pool that runs it serves requests first come, first served. Without a scheduler one application
 * flooding LogonUser with bad passwords queues hundreds of hashes, and every other application's logon waits
 * behind all of them (measured: 1.5 s became 20-25 s). So every hash goes through this scheduler first:
 *
 * - at most `concurrency` hashes run at once (by default one per core: more would only queue inside libuv);
 * - each key (an application, an application id claimed at LogonApplication, an administrator) has its own
 *   queue, served round robin, and while several keys are active none runs more than its share
 *   (`concurrency` divided by the active keys, at least one). A key stays active for HOLD_SHARE_MS after its
 *   last hash ends, so an application logging users on one after another keeps its share between them
 *   instead of finding every slot taken by a flood each time;
 * - a key may have at most `maxQueuedPerKey` hashes waiting: past that its callers get RESOURCE_EXHAUSTED at
 *   once rather than waiting behind themselves;
 * - a job whose gRPC deadline has passed while it waited is dropped unhashed: the caller has gone.
 *
 * The work itself is any `() => Promise<T>`, so another hash (Argon2id) can run behind the same scheduler.
 */
import { StsError } from '../errors.js';

/** Thrown when the work was never run (queue full, deadline passed): the attempt has no outcome. */
export class HashNotRun extends StsError {
  override name = 'HashNotRun';
}

export interface HashSchedulerOptions {
  /** Hashes running at once, at least 1. */
  concurrency: number;
  /** Hashes one key may have waiting. */
  maxQueuedPerKey: number;
  /** Wall clock for deadlines (gRPC deadlines are wall-clock epoch ms); Date.now by default. */
  now?: () => number;
}

/** How long a key keeps its share after its last hash ended. */
export const HOLD_SHARE_MS = 1000;

interface Job {
  deadline: number;
  run: () => void;
  drop: (err: HashNotRun) => void;
}

interface Lane {
  queue: Job[];
  running: number;
  lastDoneAt: number;
}

export class HashScheduler {
  private readonly lanes = new Map<string, Lane>();
  private running = 0;
  /** The key served last: the round robin goes on after it. */
  private lastServed: string | undefined;
  private readonly now: () => number;

  constructor(private readonly o: HashSchedulerOptions) {
    if (!(o.concurrency >= 1)) throw new Error('HashScheduler: concurrency must be at least 1');
    this.now = o.now ?? Date.now;
  }

  /** Hashes running and waiting (metrics, tests). */
  get load(): { running: number; waiting: number } {
    let waiting = 0;
    for (const l of this.lanes.values()) waiting += l.queue.length;
    return { running: this.running, waiting };
  }

  /**
   * Runs `work` when `key`'s turn comes. Rejects with HashNotRun (RESOURCE_EXHAUSTED) when `key` already has
   * `maxQueuedPerKey` hashes waiting, and (UNAVAILABLE) when `deadline` (epoch ms) passes before it starts.
   */
  run<T>(key: string, deadline: number, work: () => Promise<T>): Promise<T> {
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = { queue: [], running: 0, lastDoneAt: -Infinity };
      this.lanes.set(key, lane);
    }
    this.dropExpired(lane);
    if (lane.queue.length >= this.o.maxQueuedPerKey) {
      return Promise.reject(new HashNotRun('throttled', 'too many password checks are waiting for this caller; retry shortly', { retryAfterMs: 1000 }));
    }
    const l = lane;
    return new Promise<T>((resolve, reject) => {
      l.queue.push({
        deadline,
        drop: reject,
        run: () => {
          work()
            .then(resolve, reject)
            .finally(() => {
              l.running -= 1;
              this.running -= 1;
              l.lastDoneAt = this.now();
              this.pump();
            });
        },
      });
      this.pump();
    });
  }

  private dropExpired(lane: Lane): void {
    const now = this.now();
    const live = lane.queue.filter((j) => j.deadline > now);
    if (live.length === lane.queue.length) return;
    for (const j of lane.queue) if (j.deadline <= now) j.drop(expired());
    lane.queue = live;
  }

  /** Starts jobs while there is capacity, one key after the other. */
  private pump(): void {
    while (this.running < this.o.concurrency) {
      const now = this.now();
      const keys = this.activeKeys(now);
      const share = Math.max(1, Math.floor(this.o.concurrency / Math.max(1, keys.length)));
      const start = this.lastServed === undefined ? 0 : keys.indexOf(this.lastServed) + 1;
      let picked: string | undefined;
      for (let i = 0; i < keys.length; i++) {
        const k = keys[(start + i) % keys.length]!;
        const lane = this.lanes.get(k)!;
        if (lane.queue.length > 0 && lane.running < share) {
          picked = k;
          break;
        }
      }
      if (picked === undefined) return;
      const lane = this.lanes.get(picked)!;
      this.lastServed = picked;
      const job = lane.queue.shift()!;
      if (job.deadline <= now) {
        job.drop(expired());
        continue;
      }
      lane.running += 1;
      this.running += 1;
      job.run();
    }
  }

  /** Keys with work waiting or running, or that hashed within HOLD_SHARE_MS; idle lanes are forgotten. */
  private activeKeys(now: number): string[] {
    const keys: string[] = [];
    for (const [k, lane] of this.lanes) {
      if (lane.queue.length > 0 || lane.running > 0 || now - lane.lastDoneAt < HOLD_SHARE_MS) keys.push(k);
      else this.lanes.delete(k);
    }
    return keys;
  }
}

function expired(): HashNotRun {
  return new HashNotRun('unavailable', 'the call\'s deadline passed while it waited for its password check; nothing was checked', { retryAfterMs: 1000 });
}
