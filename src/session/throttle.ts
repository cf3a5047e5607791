/**
 * Logon throttling (ASVS 6.3 / OWASP brute-force guidance), built so that nobody can turn it against a
 * legitimate caller: every counter belongs to the party whose failures it counts.
 *
 * User logons (LogonUser, step-up) count failures
 * - per application and username: past `freeFailures` each attempt of that application for that username
 *   waits (100 ms, doubling, at most 2 s); past `maxFailures` that application's logons for it get
 *   RESOURCE_EXHAUSTED until the window ends;
 * - per username across applications, with a higher limit (`maxFailuresPerUser`), which caps guessing spread
 *   over many applications; one application alone reaches its own limit first, so it cannot lock the user
 *   out of the others;
 * - per application, the distinct usernames with failures (`maxUsernamesPerApplication`): password spraying
 *   (one guess for each of many usernames) exhausts the application's budget, and its user logons get
 *   RESOURCE_EXHAUSTED until the window ends.
 * The client address is never counted for users: it is the calling backend's, shared by all its end users.
 * Attempts still running count as failures, so parallel guesses cannot all slip past a limit while the hash
 * runs.
 *
 * Application logons (anonymous) count failures per application id when the id is known, and per client
 * address only for unknown ids: an application presenting its secret is never refused because of other ids'
 * failures behind the same address (a NAT, a sidecar, a load balancer). A known application whose secret STS
 * made (its keyed hash says so: password.ts isMadeBySts) has no limit at all: guessing its 256 random bits is
 * hopeless whatever the rate, each check costs microseconds, and a limit would only let anyone who knows the
 * (public) id lock the application out. A secret somebody chose keeps the per-id limit, and with it that
 * lockout (README, Security), even under the keyed hash: its 128 bits are an estimate (carries128Bits cannot
 * see words glued together).
 * Attempts in flight are not counted against a known id: a fleet of instances logging on at once is never
 * refused for it.
 *
 * Counters live in the ephemeral store, so in cluster mode every node sees the same counts (attempts in
 * flight are counted per node).
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../clock.js';
import { StsError } from '../errors.js';
import type { EphemeralStore } from '../store/adapter.js';

export interface ThrottlePolicy {
  windowMs: number;
  freeFailures: number;
  /** Per application and username. */
  maxFailures: number;
  /** Per username, across applications. */
  maxFailuresPerUser: number;
  /** Distinct usernames with failures, per application. */
  maxUsernamesPerApplication: number;
  /** Application logons, per known application id. */
  maxFailuresPerApplication: number;
  /** Application logons with unknown ids, per client address. */
  maxFailuresPerAddress: number;
}

interface Counter {
  count: number;
  windowEndsAt: number;
}

const MAX_DELAY_MS = 2000;

/** The address part of a grpc-js peer ("1.2.3.4:5678", "[::1]:5678"). */
export function addressOf(peer: string): string {
  const m = /^(?:ipv[46]:)?\[?([^\]]*?)\]?:\d+$/.exec(peer);
  return m ? m[1]! : peer;
}

/** Who is trying to log on. */
export type LogonSubject =
  | { kind: 'user'; application: string; username: string }
  /** `madeBySts`: the id is known and STS made its secret (no limit; see the header); never true for an unknown id. */
  | { kind: 'application'; applicationId: string; known: boolean; madeBySts: boolean; peer: string };

/** A reserved attempt: end it exactly once. */
export interface LogonAttempt {
  /** The secret was wrong (or the credential replayed): counts. */
  failed(): Promise<void>;
  /** The secret was right: clears what a success clears. */
  succeeded(): Promise<void>;
  /** No answer was reached (the hash never ran: queue full, deadline passed): counts nothing. */
  abandoned(): void;
}

interface Limit {
  key: string;
  max: number;
  /** Attempts in flight on this node count as failures. */
  inFlight: boolean;
  /** A success clears the counter (the application's count for a username: it is in the right hands there). */
  clearOnSuccess: boolean;
}

/** The application's budget of distinct usernames: bumped when a failure is the first of its pair counter. */
interface Budget {
  pair: Limit;
  budget: Limit;
}

export class LogonThrottle {
  constructor(
    private readonly store: EphemeralStore,
    private readonly clock: Clock,
    private readonly policy: ThrottlePolicy,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {}

  private key(kind: string, ...parts: string[]): string {
    const h = createHash('sha256');
    for (const p of parts) h.update(p.toLowerCase()).update('\0');
    return `${kind}:${h.digest('base64url')}`;
  }

  private async counter(key: string): Promise<Counter | undefined> {
    const json = await this.store.find('throttle', key);
    const c = json ? (JSON.parse(json) as Counter) : undefined;
    return c && c.windowEndsAt > this.clock.now() ? c : undefined;
  }

  /** Attempts under way per counter key on this node (counted as failures until they end). */
  private readonly inFlight = new Map<string, number>();

  private pending(key: string): number {
    return this.inFlight.get(key) ?? 0;
  }

  private reserve(key: string): void {
    this.inFlight.set(key, this.pending(key) + 1);
  }

  private release(key: string): void {
    const n = this.pending(key) - 1;
    if (n <= 0) this.inFlight.delete(key);
    else this.inFlight.set(key, n);
  }

  private refuse(c: Counter | undefined, max: number, now: number): StsError {
    const until = c && c.count >= max ? c.windowEndsAt : now + 1000;
    return new StsError('throttled', `too many failed logons; retry after ${Math.ceil((until - now) / 1000)} s`, { retryAfterMs: until - now });
  }

  /**
   * Before an attempt: refuses when a limit is reached, otherwise waits as long as past failures ask for, and
   * reserves the attempt. The message is the same whether the account exists or not.
   */
  async before(subject: LogonSubject): Promise<LogonAttempt> {
    const p = this.policy;
    if (subject.kind === 'application') {
      if (subject.madeBySts) return this.attempt([]);
      const limit: Limit = subject.known
        ? { key: this.key('app', subject.applicationId), max: p.maxFailuresPerApplication, inFlight: false, clearOnSuccess: false }
        : { key: this.key('address', addressOf(subject.peer)), max: p.maxFailuresPerAddress, inFlight: true, clearOnSuccess: false };
      await this.check([limit]);
      return this.attempt([limit]);
    }
    // A success clears the application's own count for the username, never the count across applications: an
    // attacker spreading guesses over many applications is not reset by the user logging on somewhere.
    const user: Limit = { key: this.key('user', subject.username), max: p.maxFailuresPerUser, inFlight: true, clearOnSuccess: false };
    const pair: Limit = { key: this.key('pair', subject.application, subject.username), max: p.maxFailures, inFlight: true, clearOnSuccess: true };
    const budget: Limit = { key: this.key('usernames', subject.application), max: p.maxUsernamesPerApplication, inFlight: true, clearOnSuccess: false };
    const [, pairCount = 0] = await this.check([user, pair, budget]);
    // A username without failures in the window yet is a new one for the application's budget: reserved too.
    const attempt = this.attempt([user, pair], pairCount === 0 ? { pair, budget } : undefined);
    const excess = pairCount - p.freeFailures;
    if (excess > 0) await this.sleep(Math.min(MAX_DELAY_MS, 100 * 2 ** (excess - 1)));
    return attempt;
  }

  /** Refuses when any limit is reached; the counts (stored plus in flight) otherwise. */
  private async check(limits: Limit[]): Promise<number[]> {
    const counters = await Promise.all(limits.map((l) => this.counter(l.key)));
    const now = this.clock.now();
    return limits.map((l, i) => {
      const count = (counters[i]?.count ?? 0) + (l.inFlight ? this.pending(l.key) : 0);
      if (count >= l.max) throw this.refuse(counters[i], l.max, now);
      return count;
    });
  }

  /** Reserves `limits` (and the budget, bumped only if the failure is the first of its pair counter). */
  private attempt(limits: Limit[], first?: Budget): LogonAttempt {
    const reserved = [...limits, ...(first ? [first.budget] : [])].filter((l) => l.inFlight).map((l) => l.key);
    for (const k of reserved) this.reserve(k);
    let ended = false;
    const end = (): boolean => {
      if (ended) return false;
      ended = true;
      for (const k of reserved) this.release(k);
      return true;
    };
    return {
      failed: async () => {
        if (!end()) return;
        const counts = await Promise.all(limits.map((l) => this.bump(l.key)));
        // The pair counter went from 0 to 1: a username new to the application's failures in this window.
        if (first && counts[limits.indexOf(first.pair)] === 1) await this.bump(first.budget.key);
      },
      succeeded: async () => {
        if (!end()) return;
        for (const l of limits) if (l.clearOnSuccess) await this.store.destroy('throttle', l.key);
      },
      abandoned: () => {
        end();
      },
    };
  }

  /**
   * Counts one failure: a compare-and-set, retried, so that failures ending at once on any nodes each count
   * (a read followed by a write would lose increments, and a spray would get several times its limit).
   */
  private async bump(key: string): Promise<number> {
    for (let round = 0; ; round++) {
      const now = this.clock.now();
      const json = await this.store.find('throttle', key);
      const current = json ? (JSON.parse(json) as Counter) : undefined;
      if (!current || current.windowEndsAt <= now) {
        const fresh: Counter = { count: 1, windowEndsAt: now + this.policy.windowMs };
        if (await this.store.insertIfAbsent('throttle', key, JSON.stringify(fresh), this.policy.windowMs)) return 1;
      } else {
        const next: Counter = { ...current, count: current.count + 1 };
        if (await this.store.update('throttle', key, JSON.stringify(next), current.windowEndsAt - now, json)) return next.count;
      }
      // Lost a race with another failure: read again (after many rounds something is wrong: fail closed).
      if (round >= 20) throw new StsError('unavailable', 'logon throttling is busy; retry shortly', { retryAfterMs: 1000 });
    }
  }
}
