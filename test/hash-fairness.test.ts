/**
 * Issue 14: "its hashing work made other applications' logons go from 1.5 s to 20-25 s". While one application
 * floods LogonUser with bad passwords, another application's logons stay within 2x of their latency without
 * the flood, measured in the same test on the same server (real Argon2id), so the bound is relative, never an
 * absolute speed. The throttles are set out of the way: the flood must reach the hashing, where only the hash
 * scheduler (src/session/hash-scheduler.ts) protects the other application.
 *
 * The other application's users log on one after another at random moments (0.3 to 2.3 s apart), as users do; the hashing runs one hash at a time (session.hashConcurrency 1), so that the test measures the
 * scheduling and not how well the machine runs two memory-hard hashes at once (on a shared 2-core VM two
 * hashes side by side take about twice as long each). Fair scheduling then bounds a logon by the rest
 * of the flood hash running when it arrives plus its own: 1.5x on average, 2x at worst.
 *
 * The machine is shared (other test files, other processes), so a logon takes 40 ms in one second and 70 ms in
 * the next. The latencies are therefore taken in rounds, each an unloaded phase followed at once by a phase
 * under the flood, and the ratio that counts is the median of the rounds' ratios (as the benchmark pairs its
 * rounds): a slow patch of the machine falls on both sides of a round.
 *
 * Without the scheduler's fairness (one queue for everyone, as libuv's thread pool is) the calm application's
 * logons wait behind the flood's whole queue: 4 to 5 times their unloaded latency with the flood below (and 20
 * times with a flood of 12: 1.2 s became 24 s in one run, with the scrypt hashes of earlier versions).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from './helpers/call.js';
import { addRole, createApp, createUser } from './helpers/directory.js';
import { type TestSts, startTestSts } from './helpers/server.js';

const PASSWORD = 'correct horse battery staple';
/** Logons in flight from the flooding application, each followed at once by the next. */
const FLOOD = 4;
const ROUNDS = 7;
/** The calm application's logons per phase. */
const SAMPLES = 3;
/**
 * Pause before each of the calm application's logons, 0.3 to 2.3 s: users arrive at random moments, not in step
 * with the flood's hashes (a fixed short pause would always land early in the flood hash that started as the
 * previous logon ended).
 */
const pause = () => new Promise((r) => setTimeout(r, 300 + Math.random() * 2000));

let t: TestSts;
let calm: string;
let flood: string;

beforeAll(async () => {
  t = await startTestSts({
    overrides: {
      // Nothing but the hashing stands between the flood and the calm application's logons.
      'session.throttleFreeFailures': 1000,
      'session.throttleMaxFailures': 10_000,
      'session.throttleMaxFailuresPerUser': 100_000,
      'session.throttleMaxUsernamesPerApplication': 1_000_000,
      'session.hashQueuePerApplication': 1000,
      'session.hashConcurrency': 1,
    },
  });
  calm = (await createApp(t, 'calm')).token;
  flood = (await createApp(t, 'flood')).token;
  const uid = await createUser(t, 'carla', PASSWORD);
  await addRole(t, uid, 'calm', 'user');
});
afterAll(async () => {
  await t?.stop(true);
});

const logon = (token: string, password: string) =>
  call(t.session.logonUser, t.session, { credential: { $case: 'userCredential', value: { username: 'carla', password } }, ticketApplicationId: '' }, token, 120_000);

async function calmLatencies(): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    await pause();
    const started = performance.now();
    await logon(calm, PASSWORD);
    out.push(performance.now() - started);
  }
  return out;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Starts FLOOD loops of bad-password logons; the returned function stops them and waits until they ended. */
async function startFlood(): Promise<{ stop: () => Promise<number> }> {
  let running = true;
  let calls = 0;
  const worker = async (): Promise<void> => {
    while (running) {
      await logon(flood, 'a wrong password').catch(() => undefined);
      calls++;
    }
  };
  const workers = Array.from({ length: FLOOD }, worker);
  // The flood has reached the hashing once a first of its logons has been answered.
  while (calls < 1) await new Promise((r) => setTimeout(r, 20));
  return {
    stop: async () => {
      running = false;
      await Promise.all(workers);
      return calls;
    },
  };
}

describe('password hashing is shared fairly between applications', () => {
  it('while one application floods bad passwords, another application\'s logons stay within 2x of their unloaded latency', { timeout: 600_000 }, async () => {
    await logon(calm, PASSWORD); // warm-up (code paths, JIT)
    const rounds: { unloaded: number; loaded: number; floodCalls: number }[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const unloaded = median(await calmLatencies());
      const f = await startFlood();
      const loaded = median(await calmLatencies());
      rounds.push({ unloaded, loaded, floodCalls: await f.stop() });
    }
    const ratios = rounds.map((r) => r.loaded / r.unloaded);
    const report = rounds.map((r) => `${Math.round(r.unloaded)} -> ${Math.round(r.loaded)} ms (${(r.loaded / r.unloaded).toFixed(2)}x, ${r.floodCalls} flood logons)`).join('; ');
    console.log(`hash-fairness: median ratio ${median(ratios).toFixed(2)}x over rounds: ${report}`);
    expect(Math.min(...rounds.map((r) => r.floodCalls)), report).toBeGreaterThanOrEqual(FLOOD);
    expect(median(ratios), report).toBeLessThanOrEqual(2);
  });
});
