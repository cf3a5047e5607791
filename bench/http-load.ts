/**
 * HTTP load generator (a separate process), the counterpart of bench/load.ts for servers spoken to over HTTP
 * (the --peers part: Hydra, Keycloak): the same closed loop (bench/closed-loop.ts), `concurrency` requests in
 * flight over one keep-alive agent (at most `concurrency` connections, each reused), request bodies cycled
 * from the spec. One request is checked in full before the warm-up; every measured response must have the
 * spec's status and contain its marker (e.g. "active":true), else it counts as an error. Prints the same JSON
 * line as bench/load.ts, preceded by MEASURE_START and MEASURE_END.
 *
 *   node --import tsx bench/http-load.ts --spec spec.json --concurrency 64 --duration-ms 5000 [--warmup-ms 1000]
 *        [--deadline-ms 10000] [--warmup-round [--max-warmup-ms N]]
 */
import { Agent, request } from 'node:http';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type Invoke, LOOP_ARGS, closedLoop, loopArgs, watchdog } from './closed-loop.js';
import type { HttpLoadSpec, LoadResult } from './load-protocol.js';

function readSpec(file: string): HttpLoadSpec {
  const spec = JSON.parse(readFileSync(file, 'utf8')) as HttpLoadSpec;
  const url = new URL(spec.url);
  if (url.protocol !== 'http:' || url.hostname !== '127.0.0.1') throw new Error(`${spec.name}: expected an http://127.0.0.1:PORT URL (the benchmark only talks to localhost), got ${spec.url}`);
  if (!Array.isArray(spec.bodies) || spec.bodies.length === 0) throw new Error(`${spec.name}: no request bodies`);
  return spec;
}

/** One request: resolves with null on success, or the error (status, marker missing, network, time-out). */
function call(spec: HttpLoadSpec, agent: Agent, body: string, deadlineMs: number, done: (err: Error | null, text?: string) => void): void {
  let finished = false;
  const finish = (err: Error | null, text?: string): void => {
    if (finished) return;
    finished = true;
    done(err, text);
  };
  const req = request(spec.url, { method: spec.method, agent, headers: { ...spec.headers, 'content-length': Buffer.byteLength(body) } }, (res) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (res.statusCode !== spec.status) finish(new Error(`${spec.name}: HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
      else if (!text.includes(spec.contains)) finish(new Error(`${spec.name}: the response lacks ${spec.contains}: ${text.slice(0, 200)}`));
      else finish(null, text);
    });
    res.on('error', (err) => finish(err));
  });
  req.setTimeout(deadlineMs, () => req.destroy(new Error(`${spec.name}: no response within ${deadlineMs} ms`)));
  req.on('error', (err) => finish(err));
  req.end(body);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      spec: { type: 'string' },
      ...LOOP_ARGS,
    },
    strict: true,
  });
  if (!values.spec) throw new Error('--spec: required');
  const spec = readSpec(values.spec);
  const loop = loopArgs(values);
  watchdog(`http-load ${spec.name}`, loop);
  const { concurrency, deadlineMs } = loop;

  const agent = new Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  try {
    // One request checked before the clock starts: a wrong spec fails here, not as a row of errors.
    await new Promise<void>((resolve, reject) => call(spec, agent, spec.bodies[0]!, deadlineMs, (err) => (err ? reject(err) : resolve())));
    let i = 0;
    const invoke: Invoke = (done) => {
      const body = spec.bodies[i]!;
      i = (i + 1) % spec.bodies.length;
      call(spec, agent, body, deadlineMs, (err) => done(err));
    };
    const result = await closedLoop(invoke, loop);
    const out: LoadResult = { rpc: spec.name, concurrency, targets: 1, ...result };
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    agent.destroy();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`http-load: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
