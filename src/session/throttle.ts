/**
 * Logon throttling (ASVS 6.3 / OWASP brute-force guidance): failures are counted per account (username or
 * application id) and per client address over a window. Past `free` failures each attempt waits (100 ms,
 * doubling, at most 2 s); past `max` the attempt is refused with RESOURCE_EXHAUSTED and a retry time.
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

export class LogonThrottle {
  constructor(
    private readonly store: EphemeralStore,
    private readonly clock: Clock,
    private readonly policy: ThrottlePolicy,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {}

  private key(kind: 'account' | 'address', value: string): string {
    return `${kind}:${createHash('sha256').update(value.toLowerCase()).digest('base64url')}`;
  }

  private async counter(key: string): Promise<Counter | undefined> {
    const json = await this.store.find('throttle', key);
    const c = json ? (JSON.parse(json) as Counter) : undefined;
    return c && c.windowEndsAt > this.clock.now() ? c : undefined;
  }

  /**
   * Before an attempt: refuses when a limit is reached, otherwise waits as long as past failures ask for.
   * The message is the same whether the account exists or not.
   */
  async before(account: string, peer: string): Promise<void> {
    const [acc, addr] = await Promise.all([this.counter(this.key('account', account)), this.counter(this.key('address', addressOf(peer)))]);
    const now = this.clock.now();
    const blockedUntil = Math.max(
      acc && acc.count >= this.policy.maxFailures ? acc.windowEndsAt : 0,
      addr && addr.count >= this.policy.maxFailuresPerAddress ? addr.windowEndsAt : 0,
    );
    if (blockedUntil > now) {
      throw new StsError('throttled', `too many failed logons; retry after ${Math.ceil((blockedUntil - now) / 1000)} s`, { retryAfterMs: blockedUntil - now });
    }
    const excess = (acc?.count ?? 0) - this.policy.freeFailures;
    if (excess > 0) await this.sleep(Math.min(MAX_DELAY_MS, 100 * 2 ** (excess - 1)));
  }

  async failed(account: string, peer: string): Promise<void> {
    await Promise.all([this.bump(this.key('account', account)), this.bump(this.key('address', addressOf(peer)))]);
  }

  /** A successful logon clears the account's counter (not the address's). */
  async succeeded(account: string): Promise<void> {
    await this.store.destroy('throttle', this.key('account', account));
  }

  private async bump(key: string): Promise<void> {
    const now = this.clock.now();
    const c = (await this.counter(key)) ?? { count: 0, windowEndsAt: now + this.policy.windowMs };
    c.count += 1;
    await this.store.upsert('throttle', key, JSON.stringify(c), c.windowEndsAt - now);
  }
}
