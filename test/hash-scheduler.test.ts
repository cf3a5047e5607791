/**
 * The hash scheduler with work that ends when the test says so: the concurrency limit, round robin between
 * keys, the share of a key while others are active, the per-key queue limit and deadlines. Deterministic: no
 * hashing, no timing (the wall clock it reads for deadlines and shares is the test's).
 */
import { describe, expect, it } from 'vitest';
import { StsError } from '../src/errors.js';
import { HOLD_SHARE_MS, HashNotRun, HashScheduler } from '../src/session/hash-scheduler.js';

/** Work items that record their start and end when released. */
function harness(concurrency: number, maxQueuedPerKey = 100) {
  let now = 1_000_000;
  const started: string[] = [];
  const release = new Map<string, () => void>();
  const s = new HashScheduler({ concurrency, maxQueuedPerKey, now: () => now });
  const submit = (key: string, name: string, deadline = Infinity): Promise<string> =>
    s.run(key, deadline, () => {
      started.push(name);
      return new Promise<string>((resolve) => release.set(name, () => resolve(name)));
    });
  const finish = async (name: string): Promise<void> => {
    release.get(name)!();
    // Let the completion and the next start run.
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  return { s, started, submit, finish, advance: (ms: number) => (now += ms) };
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
    expect((err as StsError).code).toBe('unavailable');
    expect(h.started).toEqual(['x1', 'z1']);
    await h.finish('z1');
    expect(await onTime).toBe('z1');
  });

  it('a job that throws frees its slot and rejects with its own error', async () => {
    const s = new HashScheduler({ concurrency: 1, maxQueuedPerKey: 10 });
    await expect(s.run('k', Infinity, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await s.run('k', Infinity, async () => 'next')).toBe('next');
  });
});
