/**
 * The closed loop shared by the load generators (bench/load.ts for gRPC, bench/http-load.ts for HTTP):
 * `concurrency` operations in flight, each one issued as soon as the previous one on its slot completes.
 * Only operations that complete inside the measured window count. The window is announced on stdout with
 * MEASURE_START and MEASURE_END lines, so the parent can sample CPU and memory exactly around it.
 */
import { performance } from 'node:perf_hooks';
import { type LoadResult, MEASURE_END, MEASURE_START } from './load-protocol.js';

/** Issues one operation; `done` gets the error, or null on success. */
export type Invoke = (done: (err: Error | null) => void) => void;

export interface LoopOptions {
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  /**
   * Also wait, before the window starts, until `concurrency` operations have completed: every call of the
   * first round has then returned, and the calls measured were issued into a full queue, so their latency is
   * the steady state (about concurrency / rate), not the time since the start. For slow operations (password
   * hashing) at high concurrency. At most `maxWarmupMs` in all.
   */
  warmupRound?: boolean;
  maxWarmupMs?: number;
}

export type LoopResult = Omit<LoadResult, 'rpc' | 'concurrency' | 'targets'>;

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Runs the closed loop; resolves when every slot has seen the end of the window. */
export function closedLoop(invoke: Invoke, options: LoopOptions): Promise<LoopResult> {
  const { concurrency, warmupMs, durationMs } = options;
  const maxWarmupMs = Math.max(warmupMs, options.maxWarmupMs ?? warmupMs);
  return new Promise((resolve) => {
    const start = performance.now();
    // The window: [measureFrom, end). Infinity until it starts.
    let measureFrom = Infinity;
    let end = Infinity;
    let latencies = new Float64Array(1 << 16);
    let n = 0;
    let completed = 0;
    let errors = 0;
    let firstError: string | undefined;
    let active = concurrency;
    let cpuAtStart = process.cpuUsage();
    let loadCpuCores = NaN;
    let warmupRoundMs: number | undefined;
    let endTimer: NodeJS.Timeout | undefined;
    let warmupOver = false;

    const endWindow = (): void => {
      if (!Number.isNaN(loadCpuCores) || measureFrom === Infinity) return;
      const used = process.cpuUsage(cpuAtStart);
      loadCpuCores = (used.user + used.system) / 1000 / durationMs;
      process.stdout.write(MEASURE_END + '\n');
    };
    const startWindow = (): void => {
      if (measureFrom !== Infinity) return;
      measureFrom = performance.now();
      end = measureFrom + durationMs;
      cpuAtStart = process.cpuUsage();
      process.stdout.write(MEASURE_START + '\n');
      endTimer = setTimeout(endWindow, durationMs);
    };
    const maybeStart = (): void => {
      if (warmupOver && (!options.warmupRound || completed >= concurrency)) startWindow();
    };
    const startTimer = setTimeout(() => {
      warmupOver = true;
      maybeStart();
    }, warmupMs);
    // Slow servers: the window starts after maxWarmupMs even if the first round has not completed.
    const forceTimer = setTimeout(startWindow, maxWarmupMs);

    const record = (t0: number, err: Error | null): void => {
      const t1 = performance.now();
      completed += 1;
      if (options.warmupRound && completed === concurrency) {
        warmupRoundMs = round(t1 - start);
        maybeStart();
      }
      if (t1 < measureFrom || t1 > end) return;
      if (err) {
        errors += 1;
        firstError ??= err.message;
        return;
      }
      if (n === latencies.length) {
        const bigger = new Float64Array(latencies.length * 2);
        bigger.set(latencies);
        latencies = bigger;
      }
      latencies[n++] = t1 - t0;
    };

    const finish = (): void => {
      clearTimeout(startTimer);
      clearTimeout(forceTimer);
      clearTimeout(endTimer);
      endWindow();
      const sorted = latencies.subarray(0, n).sort();
      resolve({
        requests: n,
        errors,
        rps: n / (durationMs / 1000),
        p50Ms: round(percentile(sorted, 0.5)),
        p99Ms: round(percentile(sorted, 0.99)),
        durationMs,
        loadCpuCores: round(loadCpuCores),
        ...(options.warmupRound ? { warmupMs: round((measureFrom === Infinity ? performance.now() : measureFrom) - start), ...(warmupRoundMs === undefined ? {} : { firstRoundMs: warmupRoundMs }) } : {}),
        ...(firstError === undefined ? {} : { firstError }),
      });
    };

    const worker = (): void => {
      const t0 = performance.now();
      if (t0 >= end) {
        if (--active === 0) finish();
        return;
      }
      let called = false;
      const done = (err: Error | null): void => {
        if (called) return;
        called = true;
        record(t0, err);
        worker();
      };
      try {
        invoke(done);
      } catch (err) {
        // A synchronous failure: count it and go on from the event loop, not the stack.
        setImmediate(() => done(err instanceof Error ? err : new Error(String(err))));
      }
    };
    for (let i = 0; i < concurrency; i++) worker();
  });
}

/** Parses a whole-number option. */
function intArg(value: string | undefined, name: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name}: expected a whole number >= ${min}, got "${value}"`);
  return n;
}

/** The load generators' command-line options for the loop (node:util parseArgs), and what they mean. */
export const LOOP_ARGS = {
  concurrency: { type: 'string' },
  'duration-ms': { type: 'string' },
  'warmup-ms': { type: 'string' },
  'deadline-ms': { type: 'string' },
  'warmup-round': { type: 'boolean', default: false },
  'max-warmup-ms': { type: 'string' },
} as const;

export interface LoopArgs extends LoopOptions {
  /** Per-call deadline. */
  deadlineMs: number;
  maxWarmupMs: number;
}

export function loopArgs(values: { concurrency?: string; 'duration-ms'?: string; 'warmup-ms'?: string; 'deadline-ms'?: string; 'warmup-round'?: boolean; 'max-warmup-ms'?: string }): LoopArgs {
  const warmupMs = intArg(values['warmup-ms'], 'warmup-ms', 1000, 0);
  return {
    concurrency: intArg(values.concurrency, 'concurrency', 64, 1),
    durationMs: intArg(values['duration-ms'], 'duration-ms', 5000, 100),
    warmupMs,
    deadlineMs: intArg(values['deadline-ms'], 'deadline-ms', 10_000, 1),
    warmupRound: values['warmup-round'] ?? false,
    maxWarmupMs: intArg(values['max-warmup-ms'], 'max-warmup-ms', warmupMs, warmupMs),
  };
}

/** Bounded in time whatever happens: preparation gets 60 s, the run its own length plus a margin. */
export function watchdog(what: string, a: LoopArgs): void {
  setTimeout(() => {
    process.stderr.write(`${what}: watchdog expired, giving up\n`);
    process.exit(3);
  }, 60_000 + a.maxWarmupMs + a.durationMs + 2 * a.deadlineMs).unref();
}
