/**
 * Logon throttling (ASVS 6.3 / OWASP brute-force guidance).
 *
 * - User logons are counted per username: past `free` failures in the window each attempt waits (100 ms,
 *   doubling, at most 2 s); past `max` the username gets RESOURCE_EXHAUSTED with a retry time. Attempts still
 *   running count as failures, so parallel guesses cannot all slip past the limit while scrypt runs. The
 *   client address is not counted for users: it is the calling backend's, shared by all its end users, and
 *   counting it would let one end user lock an application's logons.
 * - Application logons (anonymous) are counted per client address only: an application account is never
 *   locked (its secret is long and random), so nobody can lock another application out by guessing.
 *
 * Counters live in the ephemeral store, so in cluster mode every node sees the same counts.
 */
import { createHash } from 'node:crypto';
import type { Clock } from '../clock.js';
import { StsError } from '../errors.js';
import type { EphemeralStore } from '../store/adapter.js';

export interface ThrottlePolicy {
  windowMs: number;
  freeFailures: number;
  maxFailures: number;
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

export type LogonKind = 'user' | 'application';

export class LogonThrottle {
  constructor(
    private readonly store: EphemeralStore,
    private readonly clock: Clock,
    private readonly policy: ThrottlePolicy,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {}

  private key(kind: 'user' | 'address', value: string): string {
    return `${kind}:${createHash('sha256').update(value.toLowerCase()).digest('base64url')}`;
  }

  private async counter(key: string): Promise<Counter | undefined> {
    const json = await this.store.find('throttle', key);
    const c = json ? (JSON.parse(json) as Counter) : undefined;
    return c && c.windowEndsAt > this.clock.now() ? c : undefined;
  }

  /** Attempts under way per counter key on this node (counted as failures until they end). */
  private readonly inFlight = new Map<string, number>();

  private counterKey(kind: LogonKind, account: string, peer: string): string {
    return kind === 'user' ? this.key('user', account) : this.key('address', addressOf(peer));
  }

  /**
   * Before an attempt: refuses when the limit is reached, otherwise waits as long as past failures ask for,
   * and reserves the attempt (end it with `failed` or `succeeded`). The message is the same whether the
   * account exists or not.
   */
  async before(kind: LogonKind, account: string, peer: string): Promise<void> {
    const key = this.counterKey(kind, account, peer);
    const max = kind === 'user' ? this.policy.maxFailures : this.policy.maxFailuresPerAddress;
    const c = await this.counter(key);
    const pending = this.inFlight.get(key) ?? 0;
    const now = this.clock.now();
    const count = (c?.count ?? 0) + pending;
    if (count >= max) {
      const until = c && c.count >= max ? c.windowEndsAt : now + 1000;
      throw new StsError('throttled', `too many failed logons; retry after ${Math.ceil((until - now) / 1000)} s`, { retryAfterMs: until - now });
    }
    this.inFlight.set(key, pending + 1);
    const excess = count - this.policy.freeFailures;
    if (kind === 'user' && excess > 0) await this.sleep(Math.min(MAX_DELAY_MS, 100 * 2 ** (excess - 1)));
  }

  private release(key: string): void {
    const n = (this.inFlight.get(key) ?? 1) - 1;
    if (n <= 0) this.inFlight.delete(key);
    else this.inFlight.set(key, n);
  }

  async failed(kind: LogonKind, account: string, peer: string): Promise<void> {
    const key = this.counterKey(kind, account, peer);
    try {
      await this.bump(key);
    } finally {
      this.release(key);
    }
  }

  /** A successful user logon clears the username's counter; an application's address counter stays. */
  async succeeded(kind: LogonKind, account: string, peer: string): Promise<void> {
    const key = this.counterKey(kind, account, peer);
    this.release(key);
    if (kind === 'user') await this.store.destroy('throttle', key);
  }

  private async bump(key: string): Promise<void> {
    const now = this.clock.now();
    const c = (await this.counter(key)) ?? { count: 0, windowEndsAt: now + this.policy.windowMs };
    c.count += 1;
    await this.store.upsert('throttle', key, JSON.stringify(c), c.windowEndsAt - now);
  }
}
