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
import { LOOP_ARGS, closedLoop, loopArgs, watchdog } from './closed-loop.js';
import type { LoadResult } from './load-protocol.js';
import { readFixture } from './fixture.js';
import { newClient, scenario } from './scenarios.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      rpc: { type: 'string' },
      'token-file': { type: 'string' },
      fixture: { type: 'string' },
      'full-decode': { type: 'boolean', default: false },
      ...LOOP_ARGS,
    },
    strict: true,
  });
  const addresses = (values.target ?? '').split(',');
  if (!addresses.every((a) => /^127\.0\.0\.1:\d+$/.test(a))) throw new Error('--target: expected 127.0.0.1:PORT[,127.0.0.1:PORT...] (the benchmark only talks to localhost)');
  if (!values.rpc) throw new Error('--rpc: required');
  const s = scenario(values.rpc);
  const loop = loopArgs(values);
  watchdog(`load ${s.name}`, loop);

  const token = values['token-file'] ? readFileSync(values['token-file'], 'utf8').trim() : undefined;
  const fixture = values.fixture ? readFixture(values.fixture) : undefined;
  const clients = addresses.map(newClient);
  try {
    const invoke = await s.prepare({ addresses, token, fixture, deadlineMs: loop.deadlineMs, clients, fullDecode: values['full-decode'] });
    const result = await closedLoop(invoke, loop);
    const out: LoadResult = { rpc: s.name, concurrency: loop.concurrency, targets: addresses.length, ...result };
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
