/**
 * Load generator (a separate process): a closed loop with `concurrency` operations in flight against one
 * server (or several: calls go round-robin over one grpc-js client per address). After `prepare` (requests
 * built, one call per target checked), it runs for warm-up + duration; only operations that complete inside
 * the measured window count. Prints one JSON line: {rpc, concurrency, requests, errors, rps, p50Ms, p99Ms, ...},
 * preceded by MEASURE_START and MEASURE_END lines when the measured window starts and ends.
 *
 *   node --import tsx bench/load.ts --target 127.0.0.1:PORT[,127.0.0.1:PORT2] --rpc GetJwks --concurrency 64
 *        --duration-ms 5000 [--warmup-ms 1000] [--token-file <admin token file>] [--fixture <fixture.json>] [--full-decode]
 *        [--deadline-ms 10000] [--warmup-round [--max-warmup-ms N]]
 *
 * --warmup-round: the window starts only once every call of the first round has returned (closed-loop.ts).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { closedLoop, intArg } from './closed-loop.js';
import type { LoadResult } from './load-protocol.js';
import { readFixture } from './fixture.js';
import { newClient, scenario } from './scenarios.js';

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
      'warmup-round': { type: 'boolean', default: false },
      'max-warmup-ms': { type: 'string' },
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
  const maxWarmupMs = intArg(values['max-warmup-ms'], 'max-warmup-ms', warmupMs, warmupMs);

  // Bounded in time whatever happens: preparation gets 60 s, the run its own length plus a margin.
  const watchdog = setTimeout(() => {
    process.stderr.write(`load ${s.name}: watchdog expired, giving up\n`);
    process.exit(3);
  }, 60_000 + maxWarmupMs + durationMs + 2 * deadlineMs);
  watchdog.unref();

  const token = values['token-file'] ? readFileSync(values['token-file'], 'utf8').trim() : undefined;
  const fixture = values.fixture ? readFixture(values.fixture) : undefined;
  const clients = addresses.map(newClient);
  try {
    const invoke = await s.prepare({ addresses, token, fixture, deadlineMs, clients, fullDecode: values['full-decode'] });
    const result = await closedLoop(invoke, { concurrency, warmupMs, durationMs, warmupRound: values['warmup-round'], maxWarmupMs });
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
