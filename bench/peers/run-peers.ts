/**
 * `npm run bench -- --peers`: STS side by side with Ory Hydra and Keycloak in one run (issue 15).
 *
 * One server at a time runs, pinned to one core (taskset, SERVER_CORE), with its load generator pinned to
 * the other (LOAD_CORE): bench/load.ts for STS (gRPC), bench/http-load.ts for Hydra and Keycloak (HTTP), the
 * same closed loop in both. Every server gets the same three kinds of work, at the same concurrency levels,
 * warm-up and duration:
 *   - token introspection: STS ValidateUserToken, Hydra /admin/oauth2/introspect, Keycloak token introspection;
 *   - client credentials: STS LogonApplication, Hydra and Keycloak grant_type=client_credentials;
 *   - password logon: STS LogonUser, Keycloak grant_type=password (Hydra has no user store).
 * Each row reports req/s, p50, p99, server CPU per call (/proc/<pid>/stat) and the server's peak RSS during
 * the measured window (VmHWM, reset at the window's start through /proc/<pid>/clear_refs).
 *
 * A peer that cannot be fetched, built or started is reported as such, with the reason; the rest still runs.
 * Optional, and not part of CI: the peers are fetched once into .peers/ (ignored by git) and reused.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { coresBetween, round3, snapshot, type CpuSnapshot, waitIdle } from '../cpu.js';
import { type LoadResult, MEASURE_END, MEASURE_START } from '../load-protocol.js';
import { hydra } from './hydra.js';
import { keycloak } from './keycloak.js';
import { LOAD_CORE, SERVER_CORE, canPin, onCore, ownGroup, processName, releaseGroup, resetPeak, serverPids, sumBytes } from './process.js';
import { type Context, type Load, PASSWORD_USERS, type PeerServer, type Running, type Work, WORKS } from './server.js';
import { sts } from './sts.js';

/** Calls in flight: the issue's two levels. */
export const PEER_LEVELS = [32, 64] as const;
/** JIT-compiled servers (Keycloak) need a few seconds before they run at speed; every server gets the same. */
const MIN_WARMUP_MS = 3000;
/** Password logons are slow (a memory-hard hash each): three times the window, and the first round waited out. */
const PASSWORD_DURATION_FACTOR = 3;
/**
 * Before its rows, every server gets each fast work (introspection, client credentials) for this many windows,
 * unmeasured, at the lower concurrency: JIT compilation (Keycloak's JVM, V8) and caches settle first. Password
 * logons need no priming of their own: their warm-up lasts a whole round of hashes.
 */
const PRIME_WINDOWS = 6;
/** A row starts once the server has finished what the previous row left in flight (below this many cores). */
const SERVER_IDLE_CORES = 0.05;
const SERVER_IDLE_MAX_MS = 300_000;
const MAX_WARMUP_MS = 240_000;
const DEADLINE_MS: Record<Work, number> = { introspection: 30_000, 'client-credentials': 60_000, password: 600_000 };
const SERVERS: readonly PeerServer[] = [sts, hydra, keycloak];

export interface PeersOptions {
  root: string;
  /** Temporary folder of this run (removed by the caller). */
  runDir: string;
  durationMs: number;
  warmupMs: number;
  /** --wait-idle: wait up to this long before each row for other processes to leave the machine idle. */
  waitIdleMs: number;
  log(line: string): void;
}

export interface PeerRow {
  server: string;
  work: Work;
  what: string;
  concurrency: number;
  result?: LoadResult;
  failed?: string;
  /** Cores used in the measured window: the server's processes, the load generator, everything else. */
  cpu?: { server: number | null; load: number | null; other: number | null };
  serverCpuMsPerCall?: number;
  /** The server's peak RSS in the measured window (or since it started, when the kernel refused a reset). */
  peakRssBytes?: number;
  peakRssScope?: 'window' | 'since start';
}

export interface PeerResult {
  name: string;
  version: string;
  status: 'measured' | 'not fetched' | 'not started';
  /** Why it was not measured. */
  reason?: string;
  notes: string[];
  cannot: Partial<Record<Work, string>>;
  /** Names of the measured processes (e.g. java). */
  processes?: string[];
  startS?: number;
  /** RSS after start-up and test data, before any load. */
  idleRssBytes?: number;
  rows: PeerRow[];
}

export interface PeersResult {
  pinned: boolean;
  serverCore: number;
  loadCore: number;
  levels: readonly number[];
  warmupMs: number;
  durationMs: Record<Work, number>;
  /** Unmeasured load per fast work before a server's rows. */
  primeMs: number;
  passwordUsers: number;
  servers: PeerResult[];
  /** STS failures (not built, not started, a row failed): the run's failures. A missing peer is not one. */
  failures: string[];
}

function durations(opts: PeersOptions): Record<Work, number> {
  return { introspection: opts.durationMs, 'client-credentials': opts.durationMs, password: PASSWORD_DURATION_FACTOR * opts.durationMs };
}

/** An upper bound on the part's time, for the benchmark's watchdog: first fetches and builds included. */
export function peersBudgetMs(opts: { durationMs: number; warmupMs: number }): number {
  const rows = SERVERS.length * WORKS.length * PEER_LEVELS.length;
  const perRow = 120_000 + MAX_WARMUP_MS + PASSWORD_DURATION_FACTOR * opts.durationMs + Math.max(opts.warmupMs, MIN_WARMUP_MS);
  return 90 * 60_000 + rows * perRow;
}

interface Timing {
  warmupMs: number;
  durationMs: number;
  /** The window starts only once the first round of calls has returned (bench/closed-loop.ts). */
  warmupRound: boolean;
}

function timing(opts: PeersOptions, work: Work): Timing {
  return { warmupMs: Math.max(opts.warmupMs, MIN_WARMUP_MS), durationMs: durations(opts)[work], warmupRound: work === 'password' };
}

/** Waits until the server's processes are (nearly) idle: calls abandoned by the previous load process are done. */
async function serverIdle(ctx: Context, name: string, pids: number[]): Promise<void> {
  const until = performance.now() + SERVER_IDLE_MAX_MS;
  for (let i = 0; ; i++) {
    const a = snapshot(pids);
    await new Promise((r) => setTimeout(r, 500));
    const used = [...coresBetween(a, snapshot(pids)).procs.values()].reduce<number>((sum, v) => sum + (v ?? 0), 0);
    if (used < SERVER_IDLE_CORES) return;
    if (performance.now() > until) return ctx.log(`${name}: still busy (${used.toFixed(2)} cores) after ${SERVER_IDLE_MAX_MS / 1000} s; measuring anyway`);
    if (i === 0) ctx.log(`${name}: waiting for the calls left in flight to finish (${used.toFixed(2)} cores busy)`);
  }
}

/** Runs one load process pinned to the load core; samples the server around its measured window. */
function measure(ctx: Context, name: string, running: Running, work: Work, load: Load, concurrency: number, t: Timing): Promise<PeerRow> {
  const { warmupMs, durationMs } = t;
  const common = ['--concurrency', String(concurrency), '--duration-ms', String(durationMs), '--warmup-ms', String(warmupMs), '--deadline-ms', String(DEADLINE_MS[work])];
  if (t.warmupRound) common.push('--warmup-round', '--max-warmup-ms', String(MAX_WARMUP_MS));
  let file: string;
  let args: string[];
  if (load.tool === 'grpc') {
    file = 'load.ts';
    args = ['--target', load.target, '--rpc', load.rpc, '--token-file', load.tokenFile, '--fixture', load.fixtureFile, ...common];
  } else {
    file = 'http-load.ts';
    const spec = join(ctx.runDir, `spec-${name}-${work}.json`.toLowerCase());
    writeFileSync(spec, JSON.stringify(load.spec));
    args = ['--spec', spec, ...common];
  }
  const pids = serverPids(running.proc.pid);
  const row: PeerRow = { server: name, work, what: load.what, concurrency };
  ctx.log(`${name} ${work}: ${concurrency} in flight, ${warmupMs / 1000} s warm-up${t.warmupRound ? ' (and until the first round returned)' : ''} + ${durationMs / 1000} s`);
  const [cmd, cmdArgs] = onCore(LOAD_CORE, process.execPath, ['--import', 'tsx', join(ctx.root, 'bench', file), ...args]);
  const limitMs = 120_000 + (t.warmupRound ? MAX_WARMUP_MS : warmupMs) + durationMs + DEADLINE_MS[work];
  return new Promise((resolve) => {
    const child = spawn(cmd, cmdArgs, { cwd: ctx.root, stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    const pid = child.pid;
    if (pid !== undefined) ownGroup(pid);
    let out = '';
    let pending = '';
    let start: CpuSnapshot | undefined;
    let end: CpuSnapshot | undefined;
    let peakScope: PeerRow['peakRssScope'] = 'since start';
    let peak: number | undefined;
    const watched = pid === undefined ? pids : [...pids, pid];
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      pending += d;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line === MEASURE_START) {
          start = snapshot(watched);
          if (resetPeak(pids)) peakScope = 'window';
        } else if (line === MEASURE_END) {
          end = snapshot(watched);
          peak = sumBytes(pids, 'VmHWM');
        }
      }
    });
    const timer = setTimeout(() => {
      if (pid !== undefined) releaseGroup(pid);
    }, limitMs);
    let finished = false;
    const finish = (failed: string | undefined, result?: LoadResult): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (pid !== undefined) releaseGroup(pid);
      if (failed || !result) {
        row.failed = failed ?? 'no result';
        ctx.log(`${name} ${work} c=${concurrency}: FAILED: ${failed}`);
        return resolve(row);
      }
      row.result = result;
      if (start && end) {
        const { machine, procs } = coresBetween(start, end);
        let server: number | null = 0;
        for (const p of pids) {
          const v = procs.get(p);
          server = v === null || v === undefined || server === null ? null : server + v;
        }
        const loadCores = pid === undefined ? null : (procs.get(pid) ?? null);
        row.cpu = { server: server === null ? null : round3(server), load: loadCores, other: server === null || loadCores === null ? null : round3(Math.max(0, machine - server - loadCores)) };
        if (server !== null && result.rps > 0) row.serverCpuMsPerCall = round3((server * 1000) / result.rps);
      }
      if (peak !== undefined) {
        row.peakRssBytes = peak;
        row.peakRssScope = peakScope;
      }
      ctx.log(
        `${name} ${work} c=${concurrency}: ${result.rps.toFixed(1)}/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${result.errors} errors${result.firstError ? ` (${result.firstError})` : ''}; server ${row.cpu?.server ?? '?'} cores, ${row.serverCpuMsPerCall ?? '?'} ms CPU per call, other ${row.cpu?.other ?? '?'} cores; peak RSS ${peak === undefined ? '?' : Math.round(peak / 1048576)} MiB`,
      );
      resolve(row);
    };
    child.on('error', (err) => finish(err.message));
    child.on('exit', (code, signal) => {
      if (code === 0) {
        let result: LoadResult | undefined;
        try {
          result = JSON.parse(out.trim().split('\n').at(-1)!) as LoadResult;
        } catch (err) {
          return finish(`unreadable result: ${err instanceof Error ? err.message : String(err)}`);
        }
        finish(undefined, result);
      } else finish(signal === 'SIGKILL' ? `no result within ${Math.round(limitMs / 1000)} s; killed` : `${file} exited with ${signal ?? `code ${code}`}`);
    });
  });
}

async function measureServer(ctx: Context, opts: PeersOptions, server: PeerServer): Promise<PeerResult> {
  const res: PeerResult = { name: server.name, version: server.version, status: 'not fetched', notes: [], cannot: {}, rows: [] };
  try {
    await server.fetch(ctx);
  } catch (err) {
    res.reason = err instanceof Error ? err.message : String(err);
    ctx.log(`${server.name}: could not be fetched: ${res.reason}`);
    return res;
  }
  const t0 = performance.now();
  let running: Running;
  try {
    running = await server.start(ctx);
  } catch (err) {
    res.status = 'not started';
    res.reason = err instanceof Error ? err.message : String(err);
    ctx.log(`${server.name}: could not be started: ${res.reason}`);
    return res;
  }
  res.status = 'measured';
  res.startS = Math.round((performance.now() - t0) / 100) / 10;
  res.notes = running.notes;
  res.cannot = running.cannot;
  try {
    const pids = serverPids(running.proc.pid);
    res.processes = pids.map((p) => processName(p) ?? String(p));
    // Settle after the set-up before the idle reading.
    await new Promise((r) => setTimeout(r, 2000));
    res.idleRssBytes = sumBytes(pids, 'VmRSS');
    const idle = async (): Promise<void> => {
      const now = serverPids(running.proc.pid);
      await serverIdle(ctx, server.name, now);
      if (opts.waitIdleMs > 0) await waitIdle(opts.waitIdleMs, ctx.log, now);
    };
    for (const work of WORKS) {
      const load = running.loads[work];
      if (!load || work === 'password') continue;
      ctx.log(`${server.name}: priming ${work} (unmeasured)`);
      await idle();
      await measure(ctx, server.name, running, work, load, PEER_LEVELS[0], { warmupMs: 0, durationMs: PRIME_WINDOWS * opts.durationMs, warmupRound: false });
    }
    for (const work of WORKS) {
      const load = running.loads[work];
      if (!load) continue;
      for (const c of PEER_LEVELS) {
        await idle();
        res.rows.push(await measure(ctx, server.name, running, work, load, c, timing(opts, work)));
      }
    }
  } finally {
    ctx.log(`${server.name}: stopping`);
    await running.proc.stop();
  }
  return res;
}

export async function runPeers(opts: PeersOptions): Promise<PeersResult> {
  const ctx: Context = { root: opts.root, peersDir: join(opts.root, '.peers'), runDir: join(opts.runDir, 'peers'), log: opts.log };
  mkdirSync(ctx.peersDir, { recursive: true });
  mkdirSync(ctx.runDir, { recursive: true });
  if (!canPin()) opts.log('peers: taskset or a second core is missing: servers and load generators run unpinned');
  const servers: PeerResult[] = [];
  for (const server of SERVERS) servers.push(await measureServer(ctx, opts, server));
  const failures: string[] = [];
  const mine = servers.find((s) => s.name === sts.name)!;
  if (mine.status !== 'measured') failures.push(`peers: STS ${mine.status}: ${mine.reason}`);
  for (const r of mine.rows) if (r.failed) failures.push(`peers: STS ${r.work} at ${r.concurrency} in flight: ${r.failed}`);
  return {
    pinned: canPin(),
    serverCore: SERVER_CORE,
    loadCore: LOAD_CORE,
    levels: PEER_LEVELS,
    warmupMs: Math.max(opts.warmupMs, MIN_WARMUP_MS),
    durationMs: durations(opts),
    primeMs: PRIME_WINDOWS * opts.durationMs,
    passwordUsers: PASSWORD_USERS,
    servers,
    failures,
  };
}
