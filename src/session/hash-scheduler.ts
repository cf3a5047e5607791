/**
 * Fair sharing of password-hashing capacity between the applications that ask for it.
 *
 * A password check is deliberately slow (Argon2id at the default setting: 19 MiB and about 25 ms of a core;
 * a scrypt hash stored by an earlier version: 128 MiB and about 0.5 s), and the libuv thread pool that runs it
 * serves requests first come, first served. Without a scheduler one application
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
 * - a job whose gRPC deadline has passed while it waited, or would pass before it could finish, is dropped
 *   unhashed: the caller has gone, or will have gone by the time its answer is ready. "Could finish" is
 *   estimated from the hashes measured so far, per kind of work (`cost`: Argon2id with its parameters, or an
 *   old scrypt hash), as a moving average of their wall time. A new job is refused at once when even the most
 *   favourable order cannot finish it in time: the rest of the running hashes, plus the hashes before it in
 *   its own queue, plus as many from each other queue as the round robin serves before it, spread over the
 *   slots. A job is dropped when its turn comes if its own hash would end after its deadline. A kind of work
 *   not measured yet is estimated at 0 ms: nothing is dropped on a guess.
 *
 * The work itself is any `() => Promise<T>` (Argon2id, or scrypt for hashes stored by earlier versions).
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

/** Weight of the newest measurement in a kind of work's moving average of wall time. */
const EWMA_WEIGHT = 0.2;

interface Job {
  deadline: number;
  cost: string;
  /** The kind of work whose estimate decides whether it can still meet its deadline (see run). */
  admitAs: string;
  run: () => void;
  drop: (err: HashNotRun) => void;
}

interface Running {
  cost: string;
  startedAt: number;
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
  /** Moving average of the wall time (ms) of each kind of work. */
  private readonly estimates = new Map<string, number>();
  private readonly inFlight = new Set<Running>();

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

  /** The estimated wall time (ms) of a kind of work: 0 until one has been measured. */
  estimate(cost: string): number {
    return this.estimates.get(cost) ?? 0;
  }

  /**
   * Runs `work` when `key`'s turn comes. Rejects with HashNotRun (RESOURCE_EXHAUSTED) when `key` already has
   * `maxQueuedPerKey` hashes waiting, and (DEADLINE_EXCEEDED) when `deadline` (epoch ms) passes, or would pass
   * before the work could end, before it starts. `cost` names the kind of work, whose measured time is the estimate.
   * `admitAs`: the kind of work whose estimate decides that admission, when it must not depend on the work's own
   * kind (a user's old hash must not answer differently from an unknown user's: session-common.ts turnOf).
   */
  run<T>(key: string, deadline: number, work: () => Promise<T>, cost = 'hash', admitAs = cost): Promise<T> {
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = { queue: [], running: 0, lastDoneAt: -Infinity };
      this.lanes.set(key, lane);
    }
    this.dropExpired(lane);
    if (lane.queue.length >= this.o.maxQueuedPerKey) {
      return Promise.reject(new HashNotRun('throttled', 'too many password checks are waiting for this caller; retry shortly', { retryAfterMs: 1000 }));
    }
    const finish = this.earliestFinish(lane, admitAs);
    if (finish > deadline) {
      return Promise.reject(
        new HashNotRun('deadline_exceeded', `the password checks queued before this call need about ${Math.ceil(finish - this.now())} ms, more than its deadline leaves; nothing was checked. Retry with a longer deadline, or later`, { retryAfterMs: 1000 }),
      );
    }
    const l = lane;
    return new Promise<T>((resolve, reject) => {
      l.queue.push({
        deadline,
        cost,
        admitAs,
        drop: reject,
        run: () => {
          const r: Running = { cost, startedAt: this.now() };
          this.inFlight.add(r);
          work()
            .then(resolve, reject)
            .finally(() => {
              this.measure(cost, this.now() - r.startedAt);
              this.inFlight.delete(r);
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

  private measure(cost: string, ms: number): void {
    const prev = this.estimates.get(cost);
    this.estimates.set(cost, prev === undefined ? ms : prev + EWMA_WEIGHT * (ms - prev));
  }

  /**
   * The earliest a new job of `cost` in `lane` could end (epoch ms): what is left of the running hashes, the
   * hashes waiting before it in its lane, and from every other lane as many as the round robin serves before
   * it (at most its position in its own lane), shared by the slots; then its own hash. A lower bound: the
   * order that favours it most, and later arrivals of other lanes ignored.
   */
  private earliestFinish(lane: Lane, cost: string): number {
    const now = this.now();
    let work = 0;
    for (const r of this.inFlight) work += Math.max(0, this.estimate(r.cost) - (now - r.startedAt));
    const position = lane.queue.length;
    for (const l of this.lanes.values()) {
      const ahead = l === lane ? l.queue : l.queue.slice(0, position);
      for (const j of ahead) work += this.estimate(j.cost);
    }
    return now + work / this.o.concurrency + this.estimate(cost);
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
      if (job.deadline <= now + this.estimate(job.admitAs)) {
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
  return new HashNotRun('deadline_exceeded', 'the call\'s deadline passed, or would pass before its password check could end, while it waited; nothing was checked', { retryAfterMs: 1000 });
}
