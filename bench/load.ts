/**
 * Load generator (a separate process): a closed loop with `concurrency` operations in flight against one
 * server (or several: calls go round-robin over one grpc-js client per address). After `prepare` (requests
 * built, one call per target checked), it runs for warm-up + duration; only operations that complete inside
 * the measured window count. Prints one JSON line: {rpc, concurrency, requests, errors, rps, p50Ms, p99Ms, ...},
 * preceded by MEASURE_START and MEASURE_END lines when the measured window starts and ends.
 *
 *   node --import tsx bench/load.ts --target 127.0.0.1:PORT[,127.0.0.1:PORT2] --rpc GetJwks --concurrency 64
 *        --duration-ms 5000 [--warmup-ms 1000] [--token-file <admin token file>] [--fixture <fixture.json>] [--full-decode]
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { type LoadResult, MEASURE_END, MEASURE_START } from './load-protocol.js';
import { readFixture } from './fixture.js';
import { type Invoke, newClient, scenario } from './scenarios.js';

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function intArg(value: string | undefined, name: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name}: expected a whole number >= ${min}, got "${value}"`);
  return n;
}

/** Runs the closed loop; resolves when every worker has seen the end of the window. */
function closedLoop(invoke: Invoke, concurrency: number, warmupMs: number, durationMs: number): Promise<Omit<LoadResult, 'rpc' | 'concurrency' | 'targets'>> {
  return new Promise((resolve) => {
    const start = performance.now();
    const measureFrom = start + warmupMs;
    const end = measureFrom + durationMs;
    let latencies = new Float64Array(1 << 16);
    let n = 0;
    let errors = 0;
    let firstError: string | undefined;
    let active = concurrency;
    let cpuAtStart = process.cpuUsage();
    let loadCpuCores = NaN;
    const startTimer = setTimeout(() => {
      cpuAtStart = process.cpuUsage();
      process.stdout.write(MEASURE_START + '\n');
    }, warmupMs);
    const endWindow = (): void => {
      if (!Number.isNaN(loadCpuCores)) return;
      const used = process.cpuUsage(cpuAtStart);
      loadCpuCores = (used.user + used.system) / 1000 / durationMs;
      process.stdout.write(MEASURE_END + '\n');
    };
    const endTimer = setTimeout(endWindow, warmupMs + durationMs);

    const record = (t0: number, err: Error | null): void => {
      const t1 = performance.now();
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

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      rpc: { type: 'string' },
      concurrency: { type: 'string' },
      'duration-ms': { type: 'string' },
      'warmup-ms': { type: 'string' },
      'token-file': { type: 'string' },
      fixture: { type: 'string' },
      'full-decode': { type: 'boolean', default: false },
      'deadline-ms': { type: 'string' },
    },
    strict: true,
  });
  const addresses = (values.target ?? '').split(',');
  if (!addresses.every((a) => /^127\.0\.0\.1:\d+$/.test(a))) throw new Error('--target: expected 127.0.0.1:PORT[,127.0.0.1:PORT...] (the benchmark only talks to localhost)');
  if (!values.rpc) throw new Error('--rpc: required');
  const s = scenario(values.rpc);
  const concurrency = intArg(values.concurrency, 'concurrency', 64, 1);
  const durationMs = intArg(values['duration-ms'], 'duration-ms', 5000, 100);
  const warmupMs = intArg(values['warmup-ms'], 'warmup-ms', 1000, 0);
  const deadlineMs = intArg(values['deadline-ms'], 'deadline-ms', 10_000, 1);

  // Bounded in time whatever happens: preparation gets 60 s, the run its own length plus a margin.
  const watchdog = setTimeout(() => {
    process.stderr.write(`load ${s.name}: watchdog expired, giving up\n`);
    process.exit(3);
  }, 60_000 + warmupMs + durationMs + 2 * deadlineMs);
  watchdog.unref();

  const token = values['token-file'] ? readFileSync(values['token-file'], 'utf8').trim() : undefined;
  const fixture = values.fixture ? readFixture(values.fixture) : undefined;
  const clients = addresses.map(newClient);
  try {
    const invoke = await s.prepare({ addresses, token, fixture, deadlineMs, clients, fullDecode: values['full-decode'] });
    const result = await closedLoop(invoke, concurrency, warmupMs, durationMs);
    const out: LoadResult = { rpc: s.name, concurrency, targets: addresses.length, ...result };
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    for (const c of clients) c.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`load: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
