/**
 * `npm run bench`: the STS benchmark harness.
 *
 * Starts, as separate child processes, a raw grpc-js echo server (the baseline), an STS server (real
 * composition root, embedded SQLite, temporary data directory) and, one scenario at a time, a load
 * generator (closed loop). Then measures the STS crypto operations in-process against bare node:crypto.
 * Prints the tables (Markdown) and writes bench/results/<timestamp>.json, latest.json, latest.md and
 * throughput-vs-concurrency.png. Only 127.0.0.1 is used; every child is killed on exit or error, and every
 * step has a time limit.
 *
 * Flags: --duration <s> (5) --warmup <s> (1) --concurrency <n> (64) --only <rpc,...> --quick (1 s each)
 *        --no-sweep --no-crypto --wait-idle <s> --help (see HELP below)
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { once } from 'node:events';
import { cpus } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { IDLE_CORES, backgroundCores, coresBetween, round3, snapshot, type CpuSnapshot, waitIdle } from './cpu.js';
import { type CryptoResult, cryptoBench } from './crypto.js';
import { type LoadResult, MEASURE_END, MEASURE_START } from './load-protocol.js';
import { type Rgb, lineChartPng } from './png.js';
import { SCENARIOS, type Scenario, type Target } from './scenarios.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH = join(ROOT, 'bench');
const RESULTS = join(BENCH, 'results');
/** The RPCs of the throughput-vs-concurrency sweep, and its concurrency levels. */
const SWEEP_RPCS = ['Echo', 'GetJwks'];
const SWEEP_LEVELS = [1, 4, 16, 64];
const SWEEP_COLORS: Record<string, Rgb> = { Echo: [31, 119, 180], GetJwks: [255, 127, 14] };
const CRYPTO_MS = 1000;

const HELP = `npm run bench -- [flags]

  --duration <s>       measured seconds per scenario (default 5)
  --warmup <s>         warm-up seconds before each measurement (default 1)
  --concurrency <n>    calls in flight in the main table (default 64)
  --only <rpc,...>     only these RPCs (${SCENARIOS.map((s) => s.name).join(', ')}); add "crypto" to keep the crypto table
  --quick              1 s per scenario
  --no-sweep           skip the throughput-vs-concurrency sweep (${SWEEP_RPCS.join(', ')} at ${SWEEP_LEVELS.join(', ')})
  --no-crypto          skip the in-process crypto table
  --wait-idle <s>      on a shared machine: for up to <s> seconds per row, wait for other processes to leave
                       the CPU idle and measure again when they disturbed the row; the least disturbed
                       measurement is kept (the "other cores" columns show how busy the rest of the machine was)
`;

interface Settings {
  durationMs: number;
  warmupMs: number;
  concurrency: number;
  quick: boolean;
  scenarios: Scenario[];
  sweep: string[];
  crypto: boolean;
  waitIdleMs: number;
}

interface Row {
  rpc: string;
  concurrency: number;
  result?: LoadResult;
  /** Why the scenario produced no result. */
  failed?: string;
  /** rps / rps of Echo at the same concurrency in this run. */
  ratioToEcho?: number;
  /** CPU use during the measured window, in cores: the server, the load generator, and everything else. */
  cpu?: { server: number | null; load: number; other: number | null };
}

function log(line: string): void {
  process.stderr.write(`[bench] ${line}\n`);
}

function seconds(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return Math.round(fallback * 1000);
  const s = Number(value.replace(/s$/, ''));
  if (!Number.isFinite(s) || s < 0.1 || s > 600) throw new Error(`--${flag}: expected seconds between 0.1 and 600, got "${value}"`);
  return Math.round(s * 1000);
}

function parseSettings(argv: string[]): Settings | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string' },
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      'no-sweep': { type: 'boolean', default: false },
      'no-crypto': { type: 'boolean', default: false },
      'wait-idle': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return undefined;
  }
  const concurrency = values.concurrency === undefined ? 64 : Number(values.concurrency);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 10_000) throw new Error(`--concurrency: expected 1..10000, got "${values.concurrency}"`);
  const only = values.only?.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  if (only) {
    const known = new Set([...SCENARIOS.map((s) => s.name.toLowerCase()), 'crypto']);
    const unknown = only.filter((o) => !known.has(o));
    if (unknown.length > 0) throw new Error(`--only: unknown ${unknown.join(', ')}; known: ${[...SCENARIOS.map((s) => s.name), 'crypto'].join(', ')}`);
  }
  const wanted = (name: string): boolean => !only || only.includes(name.toLowerCase());
  return {
    durationMs: seconds(values.duration, 'duration', values.quick ? 1 : 5),
    warmupMs: seconds(values.warmup, 'warmup', 1),
    concurrency,
    quick: values.quick,
    scenarios: SCENARIOS.filter((s) => wanted(s.name)),
    sweep: values['no-sweep'] ? [] : SWEEP_RPCS.filter(wanted),
    crypto: !values['no-crypto'] && (!only || only.includes('crypto')),
    waitIdleMs: values['wait-idle'] === undefined ? 0 : seconds(values['wait-idle'], 'wait-idle', 0),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Child processes: every one is tracked and killed on every way out.

const children = new Set<ChildProcess>();

function spawnTs(file: string, args: string[]): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', join(BENCH, file), ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.on('error', () => children.delete(child));
  return child;
}

const exited = (c: ChildProcess): boolean => c.exitCode !== null || c.signalCode !== null;

async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (exited(child)) return;
  const done = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

function killAll(): void {
  for (const c of children) if (!exited(c)) c.kill('SIGKILL');
}

/** Runs a child to completion and returns its stdout; `onLine` sees each line as it comes. Killed after `timeoutMs`. */
function runChild(file: string, args: string[], timeoutMs: number, onLine: (line: string) => void = () => {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnTs(file, args);
    let out = '';
    let pending = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      pending += d;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        onLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} ${args.join(' ')}: no result within ${timeoutMs} ms; killed`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${file} exited with ${signal ?? `code ${code}`}`));
    });
  });
}

interface Server {
  child: ChildProcess;
  address: string;
  dataDir?: string;
}

/** Starts a server child and waits for the JSON line it prints once listening. */
function startServer(file: string, timeoutMs = 60_000): Promise<Server> {
  return new Promise((resolve, reject) => {
    const child = spawnTs(file, []);
    let buf = '';
    const fail = (err: Error): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`${file}: not listening within ${timeoutMs} ms`)), timeoutMs);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => fail(new Error(`${file} exited with ${signal ?? `code ${code}`} before listening`));
    child.on('exit', onExit);
    child.on('error', fail);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      try {
        const info = JSON.parse(buf.slice(0, nl)) as { port: number; dataDir?: string };
        resolve({ child, address: `127.0.0.1:${info.port}`, ...(info.dataDir ? { dataDir: info.dataDir } : {}) });
      } catch {
        fail(new Error(`${file}: unexpected first line: ${buf.slice(0, nl)}`));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Load runs.

const servers = new Map<Target, Promise<Server>>();

function server(target: Target): Promise<Server> {
  let s = servers.get(target);
  if (!s) {
    log(`starting ${target} server`);
    s = startServer(target === 'echo' ? 'echo-server.ts' : 'sts-server.ts');
    servers.set(target, s);
  }
  return s;
}

async function measureOnce(settings: Settings, s: Scenario, concurrency: number, srv: Server, idleUntil: number): Promise<Row> {
  if (settings.waitIdleMs > 0) await waitIdle(Math.max(0, idleUntil - performance.now()), log, [srv.child.pid]);
  log(`${s.name}: concurrency ${concurrency}, ${settings.warmupMs / 1000} s warm-up + ${settings.durationMs / 1000} s`);
  const args = ['--target', srv.address, '--rpc', s.name, '--concurrency', String(concurrency), '--duration-ms', String(settings.durationMs), '--warmup-ms', String(settings.warmupMs)];
  if (srv.dataDir) args.push('--token-file', join(srv.dataDir, 'admin.token'));
  let start: CpuSnapshot | undefined;
  let end: CpuSnapshot | undefined;
  const out = await runChild('load.ts', args, 90_000 + settings.warmupMs + settings.durationMs, (line) => {
    if (line === MEASURE_START) start = snapshot([srv.child.pid]);
    else if (line === MEASURE_END) end = snapshot([srv.child.pid]);
  });
  const result = JSON.parse(out.trim().split('\n').at(-1)!) as LoadResult;
  const row: Row = { rpc: s.name, concurrency, result };
  if (start && end) {
    const { machine, procs } = coresBetween(start, end);
    const server = procs.get(srv.child.pid!) ?? null;
    row.cpu = { server, load: result.loadCpuCores, other: server === null ? null : round3(Math.max(0, machine - server - result.loadCpuCores)) };
  }
  const cpuNote = row.cpu ? `; CPU cores: server ${row.cpu.server ?? '?'}, load ${row.cpu.load}, other ${row.cpu.other ?? '?'}` : '';
  log(`${s.name}: ${Math.round(result.rps)} req/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${result.errors} errors${cpuNote}`);
  return row;
}

async function runLoad(settings: Settings, s: Scenario, concurrency: number): Promise<Row> {
  try {
    const srv = await server(s.target);
    // With --wait-idle, a row disturbed by other processes is measured again until the time is up; the
    // least disturbed measurement is kept.
    const until = performance.now() + settings.waitIdleMs;
    let best = await measureOnce(settings, s, concurrency, srv, until);
    while (settings.waitIdleMs > 0 && (best.cpu?.other ?? 0) >= IDLE_CORES && performance.now() < until) {
      log(`${s.name}: other processes used ${best.cpu!.other} cores meanwhile; measuring again`);
      const again = await measureOnce(settings, s, concurrency, srv, until);
      if ((again.cpu?.other ?? Infinity) < (best.cpu?.other ?? Infinity)) best = again;
    }
    return best;
  } catch (err) {
    const failed = err instanceof Error ? err.message : String(err);
    log(`${s.name}: FAILED: ${failed}`);
    return { rpc: s.name, concurrency, failed };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Report.

const fmt = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

function throughputTable(rows: Row[]): string {
  const lines = ['| RPC | req/s | p50 ms | p99 ms | errors | ratio to echo |', '| --- | ---: | ---: | ---: | ---: | ---: |'];
  for (const r of rows) {
    if (!r.result) lines.push(`| ${r.rpc} | FAILED | | | | |`);
    else
      lines.push(
        `| ${r.rpc} | ${Math.round(r.result.rps)} | ${fmt(r.result.p50Ms)} | ${fmt(r.result.p99Ms)} | ${r.result.errors} | ${r.ratioToEcho === undefined ? 'n/a' : fmt(r.ratioToEcho)} |`,
      );
  }
  return lines.join('\n');
}

function cpuTable(rows: Row[]): string {
  const c = (x: number | null | undefined): string => (x === null || x === undefined ? 'n/a' : fmt(x));
  const perCall = (cores: number | null, rps: number): string => (cores === null || rps <= 0 ? 'n/a' : String(Math.round((cores * 1e6) / rps)));
  const lines = [
    '| RPC | concurrency | server cores | load cores | other cores | server CPU us/call | load CPU us/call |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows)
    if (r.cpu && r.result)
      lines.push(
        `| ${r.rpc} | ${r.concurrency} | ${c(r.cpu.server)} | ${c(r.cpu.load)} | ${c(r.cpu.other)} | ${perCall(r.cpu.server, r.result.rps)} | ${perCall(r.cpu.load, r.result.rps)} |`,
      );
  return lines.join('\n');
}

function sweepTable(sweep: Row[]): string {
  const levels = [...new Set(sweep.map((r) => r.concurrency))].sort((a, b) => a - b);
  const lines = [`| RPC | ${levels.map((c) => `c=${c}`).join(' | ')} |`, `| --- | ${levels.map(() => '---:').join(' | ')} |`];
  for (const rpc of [...new Set(sweep.map((r) => r.rpc))]) {
    const cells = levels.map((c) => {
      const r = sweep.find((x) => x.rpc === rpc && x.concurrency === c)?.result;
      return r ? `${Math.round(r.rps)} (p50 ${fmt(r.p50Ms)}, p99 ${fmt(r.p99Ms)})` : 'FAILED';
    });
    lines.push(`| ${rpc} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

function cryptoTable(crypto: CryptoResult[]): string {
  const lines = ['| operation | STS ops/s | node:crypto ops/s | STS / node:crypto | other cores | what is compared |', '| --- | ---: | ---: | ---: | ---: | --- |'];
  for (const c of crypto) lines.push(`| ${c.op} | ${c.stsOpsPerSec} | ${c.nodeOpsPerSec} | ${fmt(c.ratio)} | ${fmt(c.otherCores)} | ${c.detail} |`);
  return lines.join('\n');
}

function gitCommit(): string | undefined {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const settings = parseSettings(process.argv.slice(2));
  if (!settings) return 0;
  const started = new Date();
  const background = await backgroundCores();
  if (background > 0.25) log(`warning: the machine is already busy (${background} cores in use before the benchmark); results will be lower and noisier`);

  // The whole run is bounded: every step's own limit, plus a margin.
  const perLoad = settings.waitIdleMs + 2 * (100_000 + settings.warmupMs + settings.durationMs);
  const perCryptoOp = settings.waitIdleMs + 2 * (3 * CRYPTO_MS + 2000);
  const budget = 120_000 + perLoad * (settings.scenarios.length + settings.sweep.length * SWEEP_LEVELS.length) + (settings.crypto ? 60_000 + 6 * perCryptoOp : 0);
  const watchdog = setTimeout(() => {
    log(`the run exceeded its time budget (${Math.round(budget / 1000)} s); stopping`);
    killAll();
    process.exit(2);
  }, budget);
  watchdog.unref();

  const rows: Row[] = [];
  for (const s of settings.scenarios) rows.push(await runLoad(settings, s, settings.concurrency));
  const echoRps = rows.find((r) => r.rpc === 'Echo')?.result?.rps;
  for (const r of rows) if (r.result && echoRps) r.ratioToEcho = Math.round((r.result.rps / echoRps) * 1000) / 1000;

  const sweep: Row[] = [];
  for (const rpc of settings.sweep) {
    const s = SCENARIOS.find((x) => x.name === rpc)!;
    for (const c of SWEEP_LEVELS) sweep.push(await runLoad(settings, s, c));
  }
  for (const r of sweep) {
    const echo = sweep.find((e) => e.rpc === 'Echo' && e.concurrency === r.concurrency)?.result?.rps;
    if (r.result && echo) r.ratioToEcho = Math.round((r.result.rps / echo) * 1000) / 1000;
  }

  // Servers are no longer needed: stop them before the in-process crypto measurements.
  for (const [target, s] of servers) {
    const srv = await s.catch(() => undefined);
    if (!srv) continue;
    log(`stopping ${target} server`);
    await stopChild(srv.child);
  }
  servers.clear();

  let crypto: CryptoResult[] = [];
  if (settings.crypto) crypto = await cryptoBench({ msPerOp: CRYPTO_MS, progress: log, waitIdleMs: settings.waitIdleMs });

  // Results.
  const cpu = cpus();
  const meta = {
    date: started.toISOString(),
    commit: gitCommit(),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    cpus: cpu.length,
    cpuModel: cpu[0]?.model.trim(),
    /** Cores in use by other processes just before the run (should be ~0 for trustworthy numbers). */
    backgroundCores: background,
  };
  const config = { durationMs: settings.durationMs, warmupMs: settings.warmupMs, concurrency: settings.concurrency, quick: settings.quick, sweepLevels: SWEEP_LEVELS, waitIdleMs: settings.waitIdleMs };
  const summary = { meta, config, scenarios: rows, sweep, crypto };

  const md: string[] = [
    `# STS benchmark, ${meta.date}`,
    '',
    `Node ${meta.node}, ${meta.platform}, ${meta.cpus} x ${meta.cpuModel ?? 'unknown CPU'}, commit ${meta.commit ?? 'unknown'} (the working tree may differ); ${background} cores busy with other processes before the run.`,
    `Closed loop, one grpc-js client (one HTTP/2 connection), ${settings.warmupMs / 1000} s warm-up + ${settings.durationMs / 1000} s measured per row; load generator and server are separate processes sharing the machine's ${meta.cpus} cores. STS: dev profile, embedded SQLite, silent logger, plaintext gRPC on 127.0.0.1. Sign/Decrypt use the admin bearer token; Decrypt cycles through 1000 JWEs (ECDH-ES+A256KW, A256GCM) of 100 B made with JwksCache.encryptFor; Sign/Echo payloads are 100 B.`,
    '',
  ];
  if (rows.length > 0) md.push(`## Throughput at concurrency ${settings.concurrency}`, '', throughputTable(rows), '');
  if (rows.some((r) => r.cpu))
    md.push(
      `CPU during the measured window, in cores (of ${meta.cpus}), and per call. "other" is the rest of the machine and should be near 0. A load generator near 1 core is the bottleneck (Node is single-threaded): then the server has headroom, and "ratio to echo" mostly reflects client-side cost; server CPU per call is the better measure of what an RPC costs STS.`,
      '',
      cpuTable(rows),
      '',
    );
  if (sweep.length > 0) {
    md.push('## Throughput vs concurrency (req/s, latency in ms)', '', sweepTable(sweep), '', '![throughput vs concurrency](throughput-vs-concurrency.png)', '');
    if (sweep.some((r) => r.cpu)) md.push(cpuTable(sweep), '');
  }
  if (crypto.length > 0)
    md.push(`## Crypto, in-process (one operation at a time, ~${CRYPTO_MS / 1000} s each)`, '', cryptoTable(crypto), '');
  const markdown = md.join('\n');

  mkdirSync(RESULTS, { recursive: true });
  const json = JSON.stringify(summary, null, 2) + '\n';
  const stamp = meta.date.replace(/[:.]/g, '-');
  writeFileSync(join(RESULTS, `${stamp}.json`), json);
  writeFileSync(join(RESULTS, 'latest.json'), json);
  writeFileSync(join(RESULTS, 'latest.md'), markdown);
  if (sweep.some((r) => r.result)) {
    const series = [...new Set(sweep.map((r) => r.rpc))].map((rpc) => ({
      label: rpc === 'Echo' ? 'Echo (raw grpc-js)' : `STS ${rpc}`,
      color: SWEEP_COLORS[rpc] ?? ([44, 160, 44] as const),
      points: sweep.filter((r) => r.rpc === rpc && r.result).map((r) => ({ x: r.concurrency, y: r.result!.rps })),
    }));
    writeFileSync(
      join(RESULTS, 'throughput-vs-concurrency.png'),
      lineChartPng({ title: 'Throughput vs concurrency', xLabel: 'Concurrency (calls in flight)', yLabel: 'Req/s', series, xLog2: true }),
    );
  }
  process.stdout.write(markdown);
  log(`results: ${join('bench', 'results', `${stamp}.json`)}, latest.json, latest.md${sweep.length > 0 ? ', throughput-vs-concurrency.png' : ''}`);
  clearTimeout(watchdog);
  return [...rows, ...sweep].some((r) => r.failed) ? 1 : 0;
}

process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    log(`${sig}: stopping`);
    killAll();
    process.exit(130);
  });
}

main().then(
  async (code) => {
    for (const s of servers.values()) {
      const srv = await s.catch(() => undefined);
      if (srv) await stopChild(srv.child);
    }
    process.exit(code);
  },
  (err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    killAll();
    process.exit(1);
  },
);
