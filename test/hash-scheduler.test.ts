/**
 * The hash scheduler with work that ends when the test says so: the concurrency limit, round robin between
 * keys, the share of a key while others are active, the per-key queue limit, deadlines, and the estimate of
 * when a job would end (from the measured time of each kind of work). Deterministic: no hashing, no timing
 * (the wall clock it reads for deadlines, shares and measurements is the test's).
 */
import { describe, expect, it } from 'vitest';
import { StsError } from '../src/errors.js';
import { HOLD_SHARE_MS, HashNotRun, HashScheduler } from '../src/session/hash-scheduler.js';

/** One scrypt hash of 500 ms and one Argon2id hash of 20 ms, measured in lane "a". */
async function measureScryptAndArgon2(h: ReturnType<typeof harness>): Promise<void> {
  for (const [name, cost, ms] of [['a1', 'scrypt', 500], ['a2', 'argon2id', 20]] as const) {
    void h.submit('a', name, Infinity, cost);
    h.advance(ms);
    await h.finish(name);
  }
}

/** Work items that record their start and end when released. */
function harness(concurrency: number, maxQueuedPerKey = 100) {
  let now = 1_000_000;
  const started: string[] = [];
  const release = new Map<string, () => void>();
  const s = new HashScheduler({ concurrency, maxQueuedPerKey, now: () => now });
  const submit = (key: string, name: string, deadline = Infinity, cost?: string): Promise<string> =>
    s.run(
      key,
      deadline,
      () => {
        started.push(name);
        return new Promise<string>((resolve) => release.set(name, () => resolve(name)));
      },
      cost,
    );
  const finish = async (name: string): Promise<void> => {
    release.get(name)!();
    // Let the completion and the next start run.
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  return { s, started, submit, finish, advance: (ms: number) => (now += ms), now: () => now };
}

describe('HashScheduler', () => {
  it('runs at most `concurrency` jobs at once, and the next one as soon as one ends', async () => {
    const h = harness(2);
    const jobs = ['x1', 'x2', 'x3', 'x4'].map((n) => h.submit('x', n));
    expect(h.started).toEqual(['x1', 'x2']);
    expect(h.s.load).toEqual({ running: 2, waiting: 2 });
    await h.finish('x1');
    expect(h.started).toEqual(['x1', 'x2', 'x3']);
    await h.finish('x2');
    await h.finish('x3');
    await h.finish('x4');
    expect(await Promise.all(jobs)).toEqual(['x1', 'x2', 'x3', 'x4']);
    expect(h.s.load).toEqual({ running: 0, waiting: 0 });
  });

  it('a flood from one key does not make another key wait behind it: the next free slot is the other key\'s', async () => {
    const h = harness(2);
    for (let i = 1; i <= 20; i++) void h.submit('flood', `f${i}`);
    expect(h.started).toEqual(['f1', 'f2']); // alone, the flood may use every slot
    void h.submit('calm', 'c1');
    await h.finish('f1');
    expect(h.started).toEqual(['f1', 'f2', 'c1']); // not f3: two keys active, one slot each
    await h.finish('c1');
    // calm just hashed: it keeps its share for HOLD_SHARE_MS, so its next logon finds a free slot.
    expect(h.started).toEqual(['f1', 'f2', 'c1']);
    void h.submit('calm', 'c2');
    expect(h.started.at(-1)).toBe('c2');
    await h.finish('f2');
    expect(h.started.at(-1)).toBe('f3');
    await h.finish('c2');
    // Once calm has been idle for HOLD_SHARE_MS the flood may use every slot again.
    h.advance(HOLD_SHARE_MS);
    await h.finish('f3');
    expect(h.started.slice(-2)).toEqual(['f4', 'f5']);
  });

  it('serves waiting keys round robin', async () => {
    const h = harness(1);
    void h.submit('a', 'a1');
    for (const k of ['a', 'b', 'c']) for (let i = 2; i <= 3; i++) void h.submit(k, `${k}${i}`);
    for (const n of ['a1', 'b2', 'c2', 'a2', 'b3', 'c3']) await h.finish(n);
    expect(h.started).toEqual(['a1', 'b2', 'c2', 'a2', 'b3', 'c3', 'a3']);
  });

  it('refuses a key past its queue limit at once (RESOURCE_EXHAUSTED), other keys unaffected', async () => {
    const h = harness(1, 2);
    void h.submit('x', 'x1');
    void h.submit('x', 'x2');
    void h.submit('x', 'x3');
    const refused = await h.submit('x', 'x4').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(HashNotRun);
    expect([(refused as StsError).code, (refused as StsError).retryAfterMs]).toEqual(['throttled', 1000]);
    expect(h.started).toEqual(['x1']);
    void h.submit('y', 'y1');
    await h.finish('x1');
    expect(h.started).toEqual(['x1', 'y1']);
  });

  it('drops a job whose deadline passed while it waited, without running it', async () => {
    const h = harness(1);
    void h.submit('x', 'x1');
    const late = h.submit('y', 'y1', 1_000_500);
    const onTime = h.submit('z', 'z1', Infinity);
    h.advance(1000);
    await h.finish('x1');
    const err = await late.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HashNotRun);
    expect((err as StsError).code).toBe('deadline_exceeded');
    expect(h.started).toEqual(['x1', 'z1']);
    await h.finish('z1');
    expect(await onTime).toBe('z1');
  });

  it('refuses at once a job that cannot end before its deadline, by the measured time of the hashes before it', async () => {
    const h = harness(1);
    void h.submit('x', 'x1');
    h.advance(100);
    await h.finish('x1'); // one hash measured: 100 ms
    expect(h.s.estimate('hash')).toBe(100);
    for (const n of ['y1', 'y2', 'y3']) void h.submit('y', n);
    expect(h.started).toEqual(['x1', 'y1']);
    // y1 has 100 ms left, then its own 100 ms: 200 ms at the earliest, whatever the order.
    const hopeless = await h.submit('z', 'z1', h.now() + 150).catch((e: unknown) => e);
    expect(hopeless).toBeInstanceOf(HashNotRun);
    expect([(hopeless as StsError).code, (hopeless as StsError).retryAfterMs]).toEqual(['deadline_exceeded', 1000]);
    expect((hopeless as StsError).message).toMatch(/about 200 ms/);
    // In the same position with a deadline it can meet: queued, and served next (round robin), before y2.
    const feasible = h.submit('z', 'z2', h.now() + 250);
    h.advance(100);
    await h.finish('y1');
    expect(h.started).toEqual(['x1', 'y1', 'z2']);
    h.advance(100);
    await h.finish('z2');
    expect(await feasible).toBe('z2');
    // Its own lane counts in full: y2 runs (100 ms), y3 waits (100 ms), then its own (100 ms).
    expect(h.started.at(-1)).toBe('y2');
    const behindOwn = await h.submit('y', 'y4', h.now() + 250).catch((e: unknown) => e);
    expect((behindOwn as StsError).code).toBe('deadline_exceeded');
  });

  it('drops a job when its turn comes if its hash would end after its deadline', async () => {
    const h = harness(1);
    void h.submit('x', 'x0');
    h.advance(100);
    await h.finish('x0');
    void h.submit('x', 'x1');
    const tight = h.submit('y', 'y1', h.now() + 250); // 100 ms left of x1, then 100 ms: accepted
    h.advance(200); // x1 takes twice as long as measured
    await h.finish('x1');
    const err = await tight.catch((e: unknown) => e);
    expect((err as StsError).code).toBe('deadline_exceeded'); // 50 ms left: its 100 ms hash would end too late
    expect(h.started).toEqual(['x0', 'x1']);
  });

  it('estimates each kind of work apart (an old scrypt hash against Argon2id), and never drops on a guess', async () => {
    const h = harness(1);
    // Nothing measured yet: even a deadline 1 ms away is accepted.
    void h.submit('a', 'a0', Infinity, 'new kind');
    const unmeasured = h.submit('b', 'b0', h.now() + 1, 'another new kind');
    await h.finish('a0');
    await h.finish('b0');
    expect(await unmeasured).toBe('b0');
    await measureScryptAndArgon2(h);
    expect([h.s.estimate('scrypt'), h.s.estimate('argon2id')]).toEqual([500, 20]);
    void h.submit('a', 'a3', Infinity, 'scrypt');
    const argon = h.submit('b', 'b1', h.now() + 600, 'argon2id'); // 500 + 20
    const scrypt = await h.submit('c', 'c1', h.now() + 600, 'scrypt').catch((e: unknown) => e); // 500 + 500
    expect((scrypt as StsError).code).toBe('deadline_exceeded');
    h.advance(500);
    await h.finish('a3');
    expect(h.started.at(-1)).toBe('b1');
    await h.finish('b1');
    expect(await argon).toBe('b1');
  });

  it('admits by the estimate it is told to (admitAs), so an old hash is admitted and run exactly like a current one', async () => {
    const h = harness(1);
    await measureScryptAndArgon2(h);
    // A deadline 100 ms away: enough for an Argon2id hash, not for a scrypt one; admitted as Argon2id, the
    // scrypt check is queued and run (a logon decides by the current setting whatever the stored hash is).
    const asCurrent = h.s.run('c', h.now() + 100, async () => 'checked', 'scrypt', 'argon2id');
    expect(await asCurrent).toBe('checked');
    const byOwn = await h.s.run('c', h.now() + 100, async () => 'checked', 'scrypt').catch((e: unknown) => e);
    expect((byOwn as StsError).code).toBe('deadline_exceeded');
  });

  it('a job that throws frees its slot and rejects with its own error', async () => {
    const s = new HashScheduler({ concurrency: 1, maxQueuedPerKey: 10 });
    await expect(s.run('k', Infinity, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await s.run('k', Infinity, async () => 'next')).toBe('next');
  });
});
