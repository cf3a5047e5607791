/**
 * `npm run bench`: the STS benchmark harness.
 *
 * Starts, as separate child processes, a raw grpc-js echo server (the baseline), an STS server (real
 * composition root, embedded SQLite, temporary data directory), a one-time setup of test data through the
 * admin RPCs (bench/setup.ts) and, one scenario at a time, a load generator (closed loop). Then measures the
 * STS crypto operations in-process against bare node:crypto. Optional parts: --cluster (STS in cluster mode
 * with two Hazelcast members, one STS node and two) and --scale (many stored sessions: memory per 100k and
 * ValidateUserToken throughput at 10k, 100k, 1M). Prints the tables (Markdown) and writes
 * bench/results/<timestamp>.json, latest.json, latest.md and throughput-vs-concurrency.png. Only 127.0.0.1 is
 * used; every child is killed on exit or error, and every step has a time limit.
 *
 * Flags: see HELP below.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { once } from 'node:events';
import { cpus, tmpdir } from 'node:os';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { hashAdminKey, newAdminKey } from '../src/auth/caller.js';
import { IDLE_CORES, backgroundCores, coresBetween, round3, snapshot, type CpuSnapshot, waitIdle } from './cpu.js';
import { type CryptoResult, cryptoBench } from './crypto.js';
import { type Fixture, type SessionFixture, readFixture } from './fixture.js';
import { type LoadResult, MEASURE_END, MEASURE_START } from './load-protocol.js';
import { type Rgb, lineChartPng } from './png.js';
import { type ProfileSummary, summarizeProfile } from './profile.js';
import { SCENARIOS, type Scenario } from './scenarios.js';
import { type PeersResult, PEER_LEVELS, peersBudgetMs, runPeers } from './peers/run-peers.js';
import { peersMarkdown, writePeersReport } from './peers/report.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH = join(ROOT, 'bench');
const RESULTS = join(BENCH, 'results');
/** The RPCs of the throughput-vs-concurrency sweep, and its concurrency levels. */
const SWEEP_RPCS = ['Echo', 'GetJwks', 'ValidateUserToken'];
const SWEEP_LEVELS = [1, 4, 16, 64];
const SWEEP_COLORS: Record<string, Rgb> = { Echo: [31, 119, 180], GetJwks: [255, 127, 14], ValidateUserToken: [44, 160, 44] };
const CRYPTO_MS = 1000;
/** Scale part: stored sessions at each step, and how many of their token ids the load cycles through. */
const SCALE_LEVELS = [10_000, 100_000, 1_000_000];
const CLUSTER_SCALE_LEVELS = [10_000, 100_000, 1_000_000];
/** Hazelcast member heap (scripts/hazelcast.sh HZ_HEAP): a million sessions take ~1.8 GB over both members. */
const MEMBER_HEAP = { normal: '384m', scale: '3g' } as const;
const SCALE_SAMPLE = 10_000;
/**
 * The ValidateUserToken goal is decided on paired rounds: Echo and ValidateUserToken back to back, in
 * alternating order, this many times; the median ratio counts. One pair of 5 s rows moves by 10-30% on a
 * shared 2-core VM (both processes and their GC threads take turns on the cores); pairs cancel the drift.
 */
const GOAL_ROUNDS = 3;
/** Users the scale part's sessions are spread over (made without a password, so without a password hash). */
const SCALE_USERS = 1000;
const HAZELCAST_MEMBERS = 2;

const HELP = `npm run bench -- [flags]

  --duration <s>       measured seconds per scenario (default 5)
  --warmup <s>         warm-up seconds before each measurement (default 1)
  --concurrency <n>    calls in flight in the main table (default 64)
  --only <rpc,...>     only these scenarios (${SCENARIOS.map((s) => s.name).join(', ')}); add "crypto" to keep the crypto table,
                       "peers" for the --peers part (--only peers: that part alone)
  --quick              1 s per scenario (and fewer scale steps)
  --no-sweep           skip the throughput-vs-concurrency sweep (${SWEEP_RPCS.join(', ')} at ${SWEEP_LEVELS.join(', ')})
  --no-crypto          skip the in-process crypto table
  --cluster            also run the cluster scenarios against STS in cluster mode: ${HAZELCAST_MEMBERS} Hazelcast members
                       (scripts/hazelcast.sh; Java 17+), one STS node, then two with the load spread over both
  --compare-ref <ref>  with --cluster: also run ValidateUserToken in cluster mode against the STS of git ref <ref>
                       (a temporary worktree, its own members), in ${GOAL_ROUNDS} paired rounds alternating with this build,
                       and report both server CPU per call (what sealing the cluster state costs: issue 13)
  --peers              also run STS (from dist/, npm run build) side by side with Ory Hydra v2.3.0 and Keycloak 26.5.6,
                       fetched once into .peers/ (Keycloak from Maven Central, Hydra built from the Go module proxy):
                       token introspection, client credentials and password logon at ${PEER_LEVELS.join(' and ')} in flight, each
                       server alone on one core, the load on the other (issue 15; optional, not part of CI)
  --scale              memory per 100k stored sessions and ValidateUserToken with ${SCALE_LEVELS.map(k).join(', ')} stored
                       sessions (embedded); with --cluster also in cluster mode (${CLUSTER_SCALE_LEVELS.map(k).join(', ')})
  --cpu-prof <dir>     CPU-profile the STS server (V8 profiler) during every measured STS window; writes
                       <dir>/<deployment>-<rpc>-c<n>.cpuprofile and a summary table (profiling slows the server)
  --full-decode        the load generator encodes every request and decodes every response with the generated
                       code, as an application does (default: requests encoded once, responses checked on
                       the wire, so the single-threaded load generator is less of a bottleneck)
  --wait-idle <s>      on a shared machine: for up to <s> seconds per row, wait for other processes to leave
                       the CPU idle and measure again when they disturbed the row; the least disturbed
                       measurement is kept (the "other cores" columns show how busy the rest of the machine was)
`;

function k(n: number): string {
  return n >= 1_000_000 ? `${n / 1_000_000}M` : n >= 1000 ? `${n / 1000}k` : String(n);
}

interface Settings {
  durationMs: number;
  warmupMs: number;
  concurrency: number;
  quick: boolean;
  scenarios: Scenario[];
  sweep: string[];
  crypto: boolean;
  cluster: boolean;
  /** --compare-ref: a git ref whose STS runs the cluster ValidateUserToken rounds beside this build's. */
  compareRef: string | undefined;
  scale: boolean;
  /** --peers: STS beside Hydra and Keycloak (bench/peers/). */
  peers: boolean;
  cpuProfDir: string | undefined;
  fullDecode: boolean;
  waitIdleMs: number;
}

interface Row {
  rpc: string;
  /** Where the load went: echo, embedded, "cluster, 1 node", "cluster, 2 nodes". */
  deployment: string;
  concurrency: number;
  /** What one operation is, when not one call (a handover is two). */
  unit?: { name: string; calls: number };
  /** Scale part: user sessions in the store during the row. */
  storedSessions?: number;
  result?: LoadResult;
  /** Why the scenario produced no result. */
  failed?: string;
  /** ops/s / req/s of Echo (`echoRef` says which Echo row) in this run. */
  ratioToEcho?: number;
  echoRef?: string;
  /**
   * CPU use during the measured window, in cores: the STS (or echo) server processes, the Hazelcast members
   * (cluster mode), the load generator, and everything else.
   */
  cpu?: { server: number | null; members?: number | null; load: number; other: number | null };
  profile?: ProfileSummary & { file: string };
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
      cluster: { type: 'boolean', default: false },
      scale: { type: 'boolean', default: false },
      peers: { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'full-decode': { type: 'boolean', default: false },
      'wait-idle': { type: 'string' },
      'compare-ref': { type: 'string' },
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
    const known = new Set([...SCENARIOS.map((s) => s.name.toLowerCase()), 'crypto', 'peers']);
    const unknown = only.filter((o) => !known.has(o));
    if (unknown.length > 0) throw new Error(`--only: unknown ${unknown.join(', ')}; known: ${[...SCENARIOS.map((s) => s.name), 'crypto', 'peers'].join(', ')}`);
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
    cluster: values.cluster,
    compareRef: values['compare-ref'],
    scale: values.scale,
    peers: values.peers || (only?.includes('peers') ?? false),
    cpuProfDir: values['cpu-prof'],
    fullDecode: values['full-decode'],
    waitIdleMs: values['wait-idle'] === undefined ? 0 : seconds(values['wait-idle'], 'wait-idle', 0),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Child processes: every one is tracked and killed on every way out.

const children = new Set<ChildProcess>();
/** Files of this run (fixtures, cluster admin key); removed on exit. */
const runDir = mkdtempSync(join(tmpdir(), 'sts-bench-run-'));

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.on('error', () => children.delete(child));
  return child;
}

function spawnTs(file: string, args: string[], options: { nodeArgs?: string[]; env?: NodeJS.ProcessEnv; root?: string } = {}): ChildProcess {
  const root = options.root ?? ROOT;
  return track(
    spawn(process.execPath, [...(options.nodeArgs ?? []), '--import', 'tsx', join(root, 'bench', file), ...args], {
      cwd: root,
      stdio: ['pipe', 'pipe', 'inherit'],
      ...(options.env ? { env: options.env } : {}),
    }),
  );
}

const exited = (c: ChildProcess): boolean => c.exitCode !== null || c.signalCode !== null;

async function stopChild(child: ChildProcess, graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (exited(child)) return;
  const done = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

function killAll(): void {
  for (const c of children) if (!exited(c)) c.kill('SIGKILL');
}

/** Runs a child to completion and returns its stdout; `onLine` sees each line as it comes. Killed after `timeoutMs`. */
function runChild(file: string, args: string[], timeoutMs: number, onLine: (line: string) => void = () => {}, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnTs(file, args, env ? { env } : {});
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
      reject(new Error(`${file} ${args.join(' ').slice(0, 200)}: no result within ${timeoutMs} ms; killed`));
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
  pid: number;
  address: string;
  dataDir?: string;
  /** Sends a command (bench/child.ts) and resolves with its result. */
  command(cmd: string, arg?: unknown, timeoutMs?: number): Promise<unknown>;
}

/** Starts a server child and waits for the JSON line it prints once listening; later lines answer commands. */
function startServer(file: string, args: string[] = [], options: { nodeArgs?: string[]; env?: NodeJS.ProcessEnv; root?: string } = {}, timeoutMs = 90_000): Promise<Server> {
  return new Promise((resolve, reject) => {
    const child = spawnTs(file, args, options);
    let buf = '';
    let announced = false;
    let nextId = 0;
    const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
    const fail = (err: Error): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`${file}: not listening within ${timeoutMs} ms`)), timeoutMs);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => fail(new Error(`${file} exited with ${signal ?? `code ${code}`} before listening`));
    child.on('exit', onExit);
    child.on('error', fail);
    child.on('exit', () => {
      for (const p of pending.values()) p.reject(new Error(`${file} exited`));
      pending.clear();
    });
    const command = (cmd: string, arg?: unknown, ms = 60_000): Promise<unknown> =>
      new Promise((res, rej) => {
        const id = ++nextId;
        const t = setTimeout(() => {
          pending.delete(id);
          rej(new Error(`${file}: no answer to "${cmd}" within ${ms} ms`));
        }, ms);
        pending.set(id, {
          resolve: (v) => {
            clearTimeout(t);
            res(v);
          },
          reject: (e) => {
            clearTimeout(t);
            rej(e);
          },
        });
        child.stdin!.write(JSON.stringify({ id, cmd, arg }) + '\n');
      });
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!announced) {
          announced = true;
          clearTimeout(timer);
          child.off('exit', onExit);
          try {
            const info = JSON.parse(line) as { port: number; dataDir?: string };
            resolve({ child, pid: child.pid!, address: `127.0.0.1:${info.port}`, ...(info.dataDir ? { dataDir: info.dataDir } : {}), command });
          } catch {
            fail(new Error(`${file}: unexpected first line: ${line}`));
          }
          continue;
        }
        try {
          const msg = JSON.parse(line) as { reply?: number; result?: unknown; error?: string };
          const p = msg.reply === undefined ? undefined : pending.get(msg.reply);
          if (!p) continue;
          pending.delete(msg.reply!);
          if (msg.error !== undefined) p.reject(new Error(msg.error));
          else p.resolve(msg.result);
        } catch {
          // Not a reply: ignore.
        }
      }
    });
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Deployments: what the load goes to.

interface Deployment {
  label: string;
  /** Servers that receive the load (calls go round-robin over them). */
  nodes: Server[];
  /** Processes whose CPU counts as "server": every STS node of the deployment (or the echo server). */
  serverPids: number[];
  /** Hazelcast members (cluster mode). */
  memberPids: number[];
  tokenFile?: string;
  fixtureFile?: string;
}

const started = new Map<string, Promise<Deployment>>();
const stoppers: (() => Promise<void>)[] = [];

function deployment(label: string, make: () => Promise<Deployment>): Promise<Deployment> {
  let d = started.get(label);
  if (!d) {
    d = make();
    started.set(label, d);
  }
  return d;
}

async function setupFixture(nodes: Server[], tokenFile: string, name: string, seedUsers: number): Promise<string> {
  const out = join(runDir, `fixture-${name}.json`);
  log(`${name}: setting up applications, users, sessions, identity provider, resource server${seedUsers ? `, ${seedUsers} users for the scale part` : ''}`);
  const t0 = performance.now();
  await runChild('setup.ts', ['--target', nodes.map((n) => n.address).join(','), '--token-file', tokenFile, '--out', out, '--seed-users', String(seedUsers)], 600_000);
  log(`${name}: setup done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return out;
}

function echoDeployment(): Promise<Deployment> {
  return deployment('echo', async () => {
    log('starting echo server');
    const srv = await startServer('echo-server.ts');
    stoppers.push(() => stopChild(srv.child));
    return { label: 'echo', nodes: [srv], serverPids: [srv.pid], memberPids: [] };
  });
}

async function newEmbedded(name: string, seedUsers: number, nodeArgs: string[] = [], overrides: Record<string, number | string | boolean> = {}): Promise<Deployment> {
  log(`starting STS (${name})`);
  const srv = await startServer('sts-server.ts', Object.keys(overrides).length > 0 ? [JSON.stringify({ overrides })] : [], { nodeArgs });
  stoppers.push(() => stopChild(srv.child));
  const tokenFile = join(srv.dataDir!, 'admin.token');
  const fixtureFile = await setupFixture([srv], tokenFile, name, seedUsers);
  return { label: 'embedded', nodes: [srv], serverPids: [srv.pid], memberPids: [], tokenFile, fixtureFile };
}

function embeddedDeployment(): Promise<Deployment> {
  return deployment('embedded', () => newEmbedded('embedded', 0));
}

function stsTarget(s: Scenario): Promise<Deployment> {
  return s.target === 'echo' ? echoDeployment() : embeddedDeployment();
}

async function stopDeployments(): Promise<void> {
  for (const stop of stoppers.splice(0).reverse()) await stop().catch(() => undefined);
  started.clear();
}

// ---------------------------------------------------------------------------------------------------------
// Hazelcast (cluster mode), as test/helpers/cluster.ts starts it.

interface Member {
  port: number;
  child: ChildProcess;
  pid: number;
}

function startMember(port: number, memberList: string, cluster: string, heap: string): Promise<Member> {
  const cmd = execFileSync('bash', ['scripts/hazelcast.sh', 'java-command', String(port), memberList, cluster], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, HZ_HEAP: heap } })
    .trim()
    .split('\n');
  const child = track(spawn(cmd[0]!, cmd.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
  return new Promise((resolve, reject) => {
    let seen = '';
    const ready = new RegExp(`127\\.0\\.0\\.1\\]:${port} is STARTED`);
    const timer = setTimeout(() => reject(new Error(`hazelcast member ${port}: not started within 120 s; output:\n${seen.slice(-2000)}`)), 120_000);
    // The output is always drained (a full pipe would stall the JVM); only the tail is kept.
    const onData = (d: Buffer): void => {
      seen = (seen + d.toString()).slice(-20_000);
      if (ready.test(seen)) {
        clearTimeout(timer);
        resolve({ port, child, pid: child.pid! });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hazelcast member ${port}: exited with ${code}; output:\n${seen.slice(-2000)}`));
    });
  });
}

/** Used heap of a Hazelcast member after a full GC, in bytes (jcmd GC.run, then GC.heap_info). */
function memberHeapUsed(pid: number): number {
  execFileSync('jcmd', [String(pid), 'GC.run'], { encoding: 'utf8', timeout: 60_000 });
  const info = execFileSync('jcmd', [String(pid), 'GC.heap_info'], { encoding: 'utf8', timeout: 60_000 });
  const m = /heap\s+total \d+K, used (\d+)K/.exec(info);
  if (!m) throw new Error(`jcmd ${pid} GC.heap_info: unexpected output: ${info.slice(0, 300)}`);
  return Number(m[1]) * 1024;
}

interface ClusterInfo {
  name: string;
  memberList: string;
  members: Member[];
  /** The nodes' environment (their shared master key): what else writes to the cluster needs it too. */
  env: NodeJS.ProcessEnv;
  one: Deployment;
  two: Deployment;
}

/**
 * STS nodes in cluster mode on members of their own. `root`: the checkout whose STS the nodes run (another
 * git ref's worktree for --compare-ref); `tag` names its deployments.
 */
async function startClusterDeployments(seedUsers: number, heap: string, root = ROOT, tag = ''): Promise<ClusterInfo> {
  log('fetching the Hazelcast member jar (scripts/hazelcast.sh fetch)');
  execFileSync('bash', ['scripts/hazelcast.sh', 'fetch'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
  const name = `sts-bench-${randomBytes(4).toString('hex')}`;
  const ports: number[] = [];
  for (let i = 0; i < HAZELCAST_MEMBERS; i++) ports.push(await freePort());
  const memberList = ports.map((p) => `127.0.0.1:${p}`).join(',');
  const members: Member[] = [];
  // The first member waits out its join timeout alone; the others join it.
  for (const p of ports) {
    log(`starting Hazelcast member 127.0.0.1:${p} (cluster ${name})`);
    const m = await startMember(p, memberList, name, heap);
    members.push(m);
    stoppers.push(() => stopChild(m.child, 5000, 'SIGKILL'));
  }
  // What every node of one deployment shares: the master key and the admin key.
  const adminKey = newAdminKey();
  const adminKeyFile = join(runDir, `${name}-admin-keys`);
  const tokenFile = join(runDir, `${name}-admin.token`);
  writeFileSync(adminKeyFile, `bench:${hashAdminKey(adminKey)}\n`);
  writeFileSync(tokenFile, adminKey + '\n');
  const env = { ...process.env, STS_MASTER_KEY: `mk-bench:${randomBytes(32).toString('base64url')}` };
  const nodes: Server[] = [];
  for (let i = 0; i < 2; i++) {
    log(`starting STS node ${i + 1} in cluster mode`);
    const srv = await startServer('sts-server.ts', [JSON.stringify({ clusterMembers: memberList, clusterName: name, adminKeyFile })], { env, root });
    nodes.push(srv);
    stoppers.push(() => stopChild(srv.child));
  }
  const fixtureFile = await setupFixture(nodes, tokenFile, `cluster${tag.replace(/[^A-Za-z0-9]+/g, '-')}`, seedUsers);
  const common = { serverPids: nodes.map((n) => n.pid), memberPids: members.map((m) => m.pid), tokenFile, fixtureFile };
  return {
    name,
    memberList,
    members,
    // Sessions the scale part seeds are sealed under the cluster data key: the seeder needs the master key.
    env,
    one: { label: `cluster, 1 node${tag}`, nodes: [nodes[0]!], ...common },
    two: { label: `cluster, 2 nodes${tag}`, nodes, ...common },
  };
}

/** --compare-ref: this build's cluster ValidateUserToken beside another git ref's, in paired rounds. */
interface RefComparison {
  ref: string;
  commit: string;
  rounds: { thisRps: number; refRps: number; thisServerUs: number | undefined; refServerUs: number | undefined }[];
}

/**
 * Runs ValidateUserToken on one node of this build's cluster deployment and on one node of `ref`'s (a
 * temporary git worktree sharing node_modules, on members of its own with this build's member config), in
 * GOAL_ROUNDS rounds of alternating order, so both builds meet the same machine state.
 */
async function compareWithRef(settings: Settings, mine: ClusterInfo, heap: string): Promise<RefComparison> {
  const ref = settings.compareRef!;
  const commit = execFileSync('git', ['rev-parse', '--verify', `${ref}^{commit}`], { cwd: ROOT, encoding: 'utf8' }).trim();
  const dir = join(runDir, 'compare-ref');
  log(`--compare-ref: checking out ${ref} (${commit.slice(0, 10)}) into a temporary worktree`);
  execFileSync('git', ['worktree', 'add', '--detach', dir, commit], { cwd: ROOT, stdio: 'ignore' });
  // Registered first, so it runs after the ref's nodes stop.
  stoppers.push(async () => void execFileSync('git', ['worktree', 'remove', '--force', dir], { cwd: ROOT, stdio: 'ignore' }));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  const theirs = await startClusterDeployments(0, heap, dir, `, ${ref}`);
  const validate = SCENARIOS.find((x) => x.name === 'ValidateUserToken')!;
  const rounds: RefComparison['rounds'] = [];
  for (let i = 0; i < GOAL_ROUNDS; i++) {
    const order = i % 2 === 0 ? [mine.one, theirs.one] : [theirs.one, mine.one];
    const first = await runLoad(settings, validate, settings.concurrency, order[0]!);
    const second = await runLoad(settings, validate, settings.concurrency, order[1]!);
    const [a, b] = order[0] === mine.one ? [first, second] : [second, first];
    if (a.result && b.result) rounds.push({ thisRps: a.result.rps, refRps: b.result.rps, thisServerUs: perOp(a.cpu?.server, a.result.rps), refServerUs: perOp(b.cpu?.server, b.result.rps) });
  }
  return { ref, commit, rounds };
}

function comparisonLines(c: RefComparison): string[] {
  const us = (v: number | undefined) => (v === undefined ? 'n/a' : String(Math.round(v)));
  const ratios = c.rounds.filter((r) => r.thisServerUs && r.refServerUs).map((r) => r.thisServerUs! / r.refServerUs!);
  return [
    `## This build against ${c.ref} (${c.commit.slice(0, 10)}): cluster ValidateUserToken`,
    '',
    `ValidateUserToken by token id at the run's concurrency, all load to one node, each build on its own two Hazelcast members (this build's member config), ${GOAL_ROUNDS} rounds in alternating order. Server CPU per call is the figure to compare (throughput moves with whatever else runs on the 2 cores).`,
    '',
    '| round | this build req/s | this build server CPU us/call | ref req/s | ref server CPU us/call | CPU this / ref |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...c.rounds.map((r, i) => `| ${i + 1} | ${Math.round(r.thisRps)} | ${us(r.thisServerUs)} | ${Math.round(r.refRps)} | ${us(r.refServerUs)} | ${r.thisServerUs && r.refServerUs ? fmt(r.thisServerUs / r.refServerUs) : 'n/a'} |`),
    '',
    ratios.length > 0 ? `Median server CPU per call, this build / ${c.ref}: **${fmt(median(ratios))}** (issue 13 asks at most 1.15).` : 'No round gave both figures.',
    '',
  ];
}

// ---------------------------------------------------------------------------------------------------------
// Load runs.

interface RunOptions {
  durationMs?: number;
  /** A fixture other than the deployment's (the scale part's sampled sessions). */
  fixtureFile?: string;
  storedSessions?: number;
}

function profileFile(settings: Settings, dep: Deployment, rpc: string, concurrency: number, extra = ''): string | undefined {
  if (!settings.cpuProfDir || dep.label === 'echo') return undefined;
  mkdirSync(settings.cpuProfDir, { recursive: true });
  return join(settings.cpuProfDir, `${dep.label.replace(/[^a-z0-9]+/gi, '-')}-${rpc}-c${concurrency}${extra}.cpuprofile`);
}

async function measureOnce(settings: Settings, s: Scenario, concurrency: number, dep: Deployment, idleUntil: number, opts: RunOptions): Promise<Row> {
  const durationMs = opts.durationMs ?? settings.durationMs;
  const watched = [...dep.serverPids, ...dep.memberPids];
  if (settings.waitIdleMs > 0) await waitIdle(Math.max(0, idleUntil - performance.now()), log, watched);
  const where = dep.label === 'echo' ? '' : ` [${dep.label}${opts.storedSessions !== undefined ? `, ${k(opts.storedSessions)} sessions` : ''}]`;
  log(`${s.name}${where}: concurrency ${concurrency}, ${settings.warmupMs / 1000} s warm-up + ${durationMs / 1000} s`);
  const args = ['--target', dep.nodes.map((n) => n.address).join(','), '--rpc', s.name, '--concurrency', String(concurrency), '--duration-ms', String(durationMs), '--warmup-ms', String(settings.warmupMs)];
  if (dep.tokenFile) args.push('--token-file', dep.tokenFile);
  if (settings.fullDecode) args.push('--full-decode');
  const fixture = opts.fixtureFile ?? dep.fixtureFile;
  if (fixture) args.push('--fixture', fixture);
  const prof = profileFile(settings, dep, s.name, concurrency, opts.storedSessions !== undefined ? `-${k(opts.storedSessions)}` : '');
  let start: CpuSnapshot | undefined;
  let end: CpuSnapshot | undefined;
  let profiling: Promise<unknown> | undefined;
  const out = await runChild('load.ts', args, 90_000 + settings.warmupMs + durationMs, (line) => {
    if (line === MEASURE_START) {
      start = snapshot(watched);
      if (prof) profiling = dep.nodes[0]!.command('profile-start');
    } else if (line === MEASURE_END) {
      end = snapshot(watched);
      if (prof) profiling = (profiling ?? Promise.resolve()).then(() => dep.nodes[0]!.command('profile-stop', { file: prof }));
    }
  });
  const result = JSON.parse(out.trim().split('\n').at(-1)!) as LoadResult;
  const row: Row = { rpc: s.name, deployment: dep.label, concurrency, result, ...(s.unit ? { unit: s.unit } : {}), ...(opts.storedSessions !== undefined ? { storedSessions: opts.storedSessions } : {}) };
  if (start && end) {
    const { machine, procs } = coresBetween(start, end);
    const sum = (pids: number[]): number | null => {
      let total = 0;
      for (const pid of pids) {
        const v = procs.get(pid);
        if (v === null || v === undefined) return null;
        total += v;
      }
      return round3(total);
    };
    const server = sum(dep.serverPids);
    const members = dep.memberPids.length > 0 ? sum(dep.memberPids) : undefined;
    const known = server === null || members === null ? null : server + (members ?? 0) + result.loadCpuCores;
    row.cpu = { server, ...(members !== undefined ? { members } : {}), load: result.loadCpuCores, other: known === null ? null : round3(Math.max(0, machine - known)) };
  }
  if (prof && profiling) {
    await profiling;
    row.profile = { file: prof, ...summarizeProfile(prof) };
  }
  const cpuNote = row.cpu
    ? `; CPU cores: server ${row.cpu.server ?? '?'}${row.cpu.members !== undefined ? `, members ${row.cpu.members ?? '?'}` : ''}, load ${row.cpu.load}, other ${row.cpu.other ?? '?'}`
    : '';
  log(`${s.name}${where}: ${Math.round(result.rps)} ${s.unit ? `${s.unit.name}s` : 'req'}/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ${result.errors} errors${result.firstError ? ` (${result.firstError})` : ''}${cpuNote}`);
  return row;
}

async function runLoad(settings: Settings, s: Scenario, concurrency: number, dep: Deployment | (() => Promise<Deployment>), opts: RunOptions = {}): Promise<Row> {
  let label = typeof dep === 'function' ? (s.target === 'echo' ? 'echo' : 'embedded') : dep.label;
  try {
    const d = typeof dep === 'function' ? await dep() : dep;
    label = d.label;
    // With --wait-idle, a row disturbed by other processes is measured again until the time is up; the
    // least disturbed measurement is kept.
    const until = performance.now() + settings.waitIdleMs;
    let best = await measureOnce(settings, s, concurrency, d, until, opts);
    while (settings.waitIdleMs > 0 && (best.cpu?.other ?? 0) >= IDLE_CORES && performance.now() < until) {
      log(`${s.name}: other processes used ${best.cpu!.other} cores meanwhile; measuring again`);
      const again = await measureOnce(settings, s, concurrency, d, until, opts);
      if ((again.cpu?.other ?? Infinity) < (best.cpu?.other ?? Infinity)) best = again;
    }
    return best;
  } catch (err) {
    const failed = err instanceof Error ? err.message : String(err);
    log(`${s.name}: FAILED: ${failed}`);
    return { rpc: s.name, deployment: label, concurrency, failed, ...(opts.storedSessions !== undefined ? { storedSessions: opts.storedSessions } : {}) };
  }
}

const scenarioNamed = (name: string): Scenario => SCENARIOS.find((x) => x.name === name)!;

// ---------------------------------------------------------------------------------------------------------
// Scale: many stored sessions.

interface MemoryPoint {
  storedSessions: number;
  /** STS process (embedded): RSS and V8 heap after a forced GC, bytes. */
  rss?: number;
  heapUsed?: number;
  /** SQLite file after a WAL checkpoint (embedded), bytes. */
  dbBytes?: number;
  /** Hazelcast members: used heap after a full GC, summed over the members, bytes. */
  memberHeapUsed?: number;
  memberHeapUsedEach?: number[];
}

interface ScaleResult {
  mode: 'embedded' | 'cluster';
  /** How the sessions were made and the memory measured. */
  method: string;
  rows: Row[];
  memory: MemoryPoint[];
  /** Seeding times (ms) per step. */
  seeding: { count: number; ms: number }[];
}

/** Token ids to validate at a level: from each seeding step a share proportional to its size (uniform overall). */
function mergeSamples(steps: { count: number; sample: SessionFixture[] }[], level: number, size: number): SessionFixture[] {
  const out: SessionFixture[] = [];
  for (const st of steps) out.push(...st.sample.slice(0, Math.max(1, Math.round((size * st.count) / level))));
  // Shuffle, so consecutive calls hit unrelated sessions.
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function scalePart(settings: Settings, mode: 'embedded' | 'cluster', dep: Deployment, levels: number[], seedArgs: string[], memory: (n: number) => Promise<MemoryPoint>, baseline?: Row, seedEnv?: NodeJS.ProcessEnv): Promise<ScaleResult> {
  const validate = scenarioNamed('ValidateUserToken');
  const fixture: Fixture = readFixture(dep.fixtureFile!);
  const rows: Row[] = [];
  const points: MemoryPoint[] = [];
  const seeding: { count: number; ms: number }[] = [];
  // Baseline: only the setup's few LogonUser sessions.
  const base = baseline ?? (await runLoad(settings, validate, settings.concurrency, dep, { storedSessions: fixture.sessions.length }));
  rows.push({ ...base, storedSessions: fixture.sessions.length });
  points.push(await memory(0));
  const steps: { count: number; sample: SessionFixture[] }[] = [];
  let seeded = 0;
  for (const level of levels) {
    const count = level - seeded;
    log(`scale (${mode}): storing ${k(count)} more sessions (${k(level)} in all)`);
    const sampleFile = join(runDir, `sample-${mode}-${level}.json`);
    const out = await runChild('seed.ts', ['--fixture', dep.fixtureFile!, '--count', String(count), '--sample', String(SCALE_SAMPLE), '--out', sampleFile, ...seedArgs], 1_800_000, undefined, seedEnv);
    const r = { ...(JSON.parse(out.trim().split('\n').at(-1)!) as { count: number; ms: number }), sample: JSON.parse(readFileSync(sampleFile, 'utf8')) as SessionFixture[] };
    log(`scale (${mode}): ${k(r.count)} sessions stored in ${(r.ms / 1000).toFixed(1)} s`);
    seeding.push({ count: r.count, ms: r.ms });
    steps.push({ count: r.count, sample: r.sample });
    seeded = level;
    const file = join(runDir, `fixture-scale-${mode}-${level}.json`);
    writeFileSync(file, JSON.stringify({ ...fixture, sessions: mergeSamples(steps, level, SCALE_SAMPLE) } satisfies Fixture));
    rows.push(await runLoad(settings, validate, settings.concurrency, dep, { fixtureFile: file, storedSessions: level }));
    points.push(await memory(level));
  }
  const method =
    mode === 'embedded'
      ? 'sessions written by bench/seed.ts with SessionStore.createUserSession into the running server\'s SQLite file (one transaction per 5000); STS memory from process.memoryUsage() after two forced GCs (--expose-gc), after a ValidateUserToken run over the sampled sessions; SQLite file size after PRAGMA wal_checkpoint(TRUNCATE)'
      : 'sessions written by bench/seed.ts with SessionStore.createUserSession through HazelcastStore (IMap.set with the session TTL, as a node writes them; 256 in flight); member heap: jcmd <pid> GC.run, then the "used" figure of jcmd <pid> GC.heap_info, summed over both members (backup-count 1: every entry is held twice)';
  return { mode, method, rows, memory: points, seeding };
}

async function embeddedMemory(srv: Server, storedSessions: number): Promise<MemoryPoint> {
  const m = (await srv.command('mem')) as { rss: number; heapUsed: number; dbBytes: number; walBytes: number };
  return { storedSessions, rss: m.rss, heapUsed: m.heapUsed, dbBytes: m.dbBytes + m.walBytes };
}

function clusterMemory(members: Member[], storedSessions: number): MemoryPoint {
  const each = members.map((m) => memberHeapUsed(m.pid));
  return { storedSessions, memberHeapUsed: each.reduce((a, b) => a + b, 0), memberHeapUsedEach: each };
}

// ---------------------------------------------------------------------------------------------------------
// Report.

const fmt = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
const mb = (bytes: number | undefined): string => (bytes === undefined ? 'n/a' : (bytes / 1048576).toFixed(1));
const label = (r: Row): string => (r.unit ? `${r.rpc} (${r.unit.calls} calls)` : r.rpc);
const perOp = (cores: number | null | undefined, rps: number | undefined, scale = 1e6): number | undefined =>
  cores === null || cores === undefined || !rps || rps <= 0 ? undefined : (cores * scale) / rps;
const num = (x: number | undefined, digits = 0): string => (x === undefined ? 'n/a' : digits === 0 ? String(Math.round(x)) : x.toFixed(digits));

function throughputTable(rows: Row[]): string {
  const lines = ['| RPC | ops/s | p50 ms | p99 ms | errors | ratio to echo |', '| --- | ---: | ---: | ---: | ---: | ---: |'];
  for (const r of rows) {
    if (!r.result) lines.push(`| ${label(r)} | FAILED | | | | |`);
    else lines.push(`| ${label(r)} | ${Math.round(r.result.rps)} | ${fmt(r.result.p50Ms)} | ${fmt(r.result.p99Ms)} | ${r.result.errors} | ${r.ratioToEcho === undefined ? 'n/a' : fmt(r.ratioToEcho)} |`);
  }
  return lines.join('\n');
}

function cpuTable(rows: Row[], echoServerUs?: number): string {
  const c = (x: number | null | undefined): string => (x === null || x === undefined ? 'n/a' : fmt(x));
  const members = rows.some((r) => r.cpu?.members !== undefined);
  const lines = [
    `| RPC | concurrency | server cores |${members ? ' member cores |' : ''} load cores | other cores | server CPU us/op |${echoServerUs ? ' server CPU vs Echo |' : ''} load CPU us/op |`,
    `| --- | ---: | ---: |${members ? ' ---: |' : ''} ---: | ---: | ---: |${echoServerUs ? ' ---: |' : ''} ---: |`,
  ];
  for (const r of rows)
    if (r.cpu && r.result) {
      const server = perOp(r.cpu.server, r.result.rps);
      lines.push(
        `| ${label(r)} | ${r.concurrency} | ${c(r.cpu.server)} |${members ? ` ${c(r.cpu.members)} |` : ''} ${c(r.cpu.load)} | ${c(r.cpu.other)} | ${num(server)} |${echoServerUs ? ` ${server === undefined ? 'n/a' : `${fmt(server / echoServerUs)}x`} |` : ''} ${num(perOp(r.cpu.load, r.result.rps))} |`,
      );
    }
  return lines.join('\n');
}

function logonTable(rows: Row[]): string {
  const lines = [
    '| RPC | concurrency | logons/s | p50 ms | p99 ms | errors | ratio to echo | server cores | server CPU ms/logon | other cores |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) {
    if (!r.result) {
      lines.push(`| ${r.rpc} | ${r.concurrency} | FAILED | | | | | | | |`);
      continue;
    }
    lines.push(
      `| ${r.rpc} | ${r.concurrency} | ${fmt(r.result.rps, 1)} | ${fmt(r.result.p50Ms, 1)} | ${fmt(r.result.p99Ms, 1)} | ${r.result.errors} | ${r.ratioToEcho === undefined ? 'n/a' : r.ratioToEcho.toFixed(4)}${r.echoRef ? ` (${r.echoRef})` : ''} | ${r.cpu?.server === null || r.cpu?.server === undefined ? 'n/a' : fmt(r.cpu.server)} | ${num(perOp(r.cpu?.server, r.result.rps, 1e3), 1)} | ${r.cpu?.other === null || r.cpu?.other === undefined ? 'n/a' : fmt(r.cpu.other)} |`,
    );
  }
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

function clusterTable(embedded: Row[], cluster: Row[]): string {
  const lines = [
    '| RPC | embedded ops/s | cluster, 1 node ops/s | cluster, 2 nodes ops/s | 2 nodes / 1 node | ratio to echo (1 node / 2 nodes) | p99 ms (1 node / 2 nodes) | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const rpc of [...new Set(cluster.map((r) => r.rpc))]) {
    const one = cluster.find((r) => r.rpc === rpc && r.deployment === 'cluster, 1 node');
    const two = cluster.find((r) => r.rpc === rpc && r.deployment === 'cluster, 2 nodes');
    const emb = embedded.find((r) => r.rpc === rpc)?.result?.rps;
    const ops = (r: Row | undefined): string => (r?.result ? String(Math.round(r.result.rps)) : 'FAILED');
    const scaling = one?.result && two?.result ? fmt(two.result.rps / one.result.rps) : 'n/a';
    const ratio = (r: Row | undefined): string => (r?.ratioToEcho === undefined ? 'n/a' : fmt(r.ratioToEcho));
    const p99 = (r: Row | undefined): string => (r?.result ? fmt(r.result.p99Ms, 1) : 'n/a');
    const errors = (one?.result?.errors ?? 0) + (two?.result?.errors ?? 0);
    lines.push(`| ${label(one ?? two!)} | ${emb === undefined ? 'n/a' : Math.round(emb)} | ${ops(one)} | ${ops(two)} | ${scaling} | ${ratio(one)} / ${ratio(two)} | ${p99(one)} / ${p99(two)} | ${errors} |`);
  }
  return lines.join('\n');
}

function scaleTable(results: ScaleResult[]): string {
  const lines = [
    '| mode | stored sessions | ValidateUserToken req/s | p50 ms | p99 ms | errors | ratio to echo | server CPU us/call | other cores |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const s of results)
    for (const r of s.rows) {
      const stored = r.storedSessions === undefined ? '?' : r === s.rows[0] ? `${r.storedSessions} (setup's LogonUser sessions)` : k(r.storedSessions);
      if (!r.result) lines.push(`| ${s.mode}${s.mode === 'cluster' ? ', 2 nodes' : ''} | ${stored} | FAILED | | | | | | |`);
      else
        lines.push(
          `| ${s.mode}${s.mode === 'cluster' ? ', 2 nodes' : ''} | ${stored} | ${Math.round(r.result.rps)} | ${fmt(r.result.p50Ms)} | ${fmt(r.result.p99Ms)} | ${r.result.errors} | ${r.ratioToEcho === undefined ? 'n/a' : fmt(r.ratioToEcho)} | ${num(perOp(r.cpu?.server, r.result.rps))} | ${r.cpu?.other === null || r.cpu?.other === undefined ? 'n/a' : fmt(r.cpu.other)} |`,
        );
    }
  return lines.join('\n');
}

function memoryTable(results: ScaleResult[]): string {
  const lines: string[] = [];
  for (const s of results) {
    const levels = s.memory.map((p) => p.storedSessions);
    if (lines.length === 0) lines.push('| mode | measured (MB) | ' + 'values by stored sessions | per 100k sessions |', '| --- | --- | --- | ---: |');
    const series: [string, (p: MemoryPoint) => number | undefined][] =
      s.mode === 'embedded'
        ? [
            ['STS process RSS', (p) => p.rss],
            ['STS V8 heap used (after GC)', (p) => p.heapUsed],
            ['SQLite file (sts.db after checkpoint)', (p) => p.dbBytes],
          ]
        : [['Hazelcast members\' heap used after GC (both members)', (p) => p.memberHeapUsed]];
    for (const [what, get] of series) {
      const base = get(s.memory[0]!);
      const last = s.memory.at(-1)!;
      const at100k = s.memory.find((p) => p.storedSessions === 100_000);
      const per = (p: MemoryPoint | undefined): string => (p && base !== undefined && get(p) !== undefined && p.storedSessions > 0 ? mb(((get(p)! - base) * 100_000) / p.storedSessions) : 'n/a');
      const values = s.memory.map((p, i) => `${k(levels[i]!)}: ${mb(get(p))}`).join(', ');
      const perText = at100k && at100k !== last ? `${per(at100k)} (from 100k), ${per(last)} (from ${k(last.storedSessions)})` : per(last);
      lines.push(`| ${s.mode} | ${what} | ${values} | ${perText} |`);
    }
  }
  return lines.join('\n');
}

function profileSection(rows: Row[]): string {
  const out: string[] = [];
  for (const r of rows) {
    if (!r.profile) continue;
    const p = r.profile;
    out.push(
      `### ${label(r)}, ${r.deployment}, c=${r.concurrency}${r.storedSessions !== undefined ? `, ${k(r.storedSessions)} sessions` : ''}`,
      '',
      `Profile: \`${p.file}\`; ${p.totalMs} ms sampled on the server's main thread, idle ${(p.idleShare * 100).toFixed(1)}%. Shares are of the busy (non-idle) samples.`,
      '',
      '| area | share |',
      '| --- | ---: |',
      ...p.areas.slice(0, 10).map((a) => `| ${a.area} | ${(a.share * 100).toFixed(1)}% |`),
      '',
      '| function (self time) | where | share |',
      '| --- | --- | ---: |',
      ...p.top.map((t) => `| ${t.fn} | ${t.where} | ${(t.share * 100).toFixed(1)}% |`),
      '',
    );
  }
  return out.join('\n');
}

/** One paired round of the ValidateUserToken goal. */
interface GoalRound {
  echoRps: number;
  validateRps: number;
  ratio: number;
  echoServerUs: number | undefined;
  validateServerUs: number | undefined;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The issue's goals against this run: ValidateUserToken vs Echo, Sign and Decrypt vs node:crypto. */
function goalLines(rows: Row[], crypto: CryptoResult[], echoServerUs: number | undefined, rounds: GoalRound[]): string[] {
  const out: string[] = [];
  const mark = (ok: boolean): string => (ok ? 'met' : 'NOT met');
  const v = rows.find((r) => r.rpc === 'ValidateUserToken');
  if (rounds.length > 0) {
    const m = median(rounds.map((r) => r.ratio));
    const us = (x: number | undefined): string => (x === undefined ? '?' : String(Math.round(x)));
    out.push(
      `- ValidateUserToken (by token id) at ${fmt(m)} of Echo's throughput, the median of ${rounds.length} paired rounds (goal 0.80: ${mark(m >= 0.8)}): ${rounds
        .map((r) => `${fmt(r.ratio)} (${Math.round(r.validateRps)} vs ${Math.round(r.echoRps)} req/s; server CPU ${us(r.validateServerUs)} vs ${us(r.echoServerUs)} us per call)`)
        .join(', ')}${v?.ratioToEcho !== undefined ? `; the single row of the main table below gives ${fmt(v.ratioToEcho)}` : ''}.`,
    );
  } else if (v?.ratioToEcho !== undefined) {
    const server = perOp(v.cpu?.server, v.result?.rps);
    out.push(
      `- ValidateUserToken (by token id) at ${fmt(v.ratioToEcho)} of Echo's throughput (goal 0.80: ${mark(v.ratioToEcho >= 0.8)})${server !== undefined && echoServerUs ? `; server CPU ${Math.round(server)} us per call, ${fmt(server / echoServerUs)}x Echo's ${Math.round(echoServerUs)} us` : ''}.`,
    );
  }
  for (const [name, prefix] of [
    ['Sign (JWS EdDSA)', 'JWS sign'],
    ['Decrypt (JWE ECDH-ES+A256KW)', 'JWE decrypt (ECDH'],
  ] as const) {
    const c = crypto.find((x) => x.op.startsWith(prefix));
    if (c) out.push(`- ${name} at ${fmt(c.ratio)} of bare node:crypto in-process (goal 0.80: ${mark(c.ratio >= 0.8)}).`);
  }
  if (out.length > 0)
    out.push(
      '',
      'One 5 s measurement per row on a shared 2-core VM: throughput ratios move by 10-20% from run to run (the two processes take turns on the cores), so compare the server CPU per call as well; --cpu-prof shows where it goes.',
    );
  return out;
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
  const startedAt = new Date();
  const background = await backgroundCores();
  if (background > 0.25) log(`warning: the machine is already busy (${background} cores in use before the benchmark); results will be lower and noisier`);

  const mainScenarios = settings.scenarios.filter((s) => (s.section ?? 'main') === 'main');
  const logonScenarios = settings.scenarios.filter((s) => s.section === 'logon');
  const clusterScenarios = settings.cluster ? settings.scenarios.filter((s) => s.cluster) : [];
  const scaleLevels = settings.quick ? SCALE_LEVELS.slice(0, 2) : SCALE_LEVELS;
  const clusterScaleLevels = settings.quick ? CLUSTER_SCALE_LEVELS.slice(0, 1) : CLUSTER_SCALE_LEVELS;

  // The whole run is bounded: every step's own limit, plus a margin.
  const perLoad = settings.waitIdleMs + 2 * (100_000 + settings.warmupMs + settings.durationMs);
  const perCryptoOp = settings.waitIdleMs + 2 * (3 * CRYPTO_MS + 2000);
  const loads =
    mainScenarios.length + 2 * GOAL_ROUNDS + logonScenarios.length + settings.sweep.length * SWEEP_LEVELS.length + 2 * clusterScenarios.length + (settings.scale ? 1 + scaleLevels.length + (settings.cluster ? clusterScaleLevels.length : 0) : 0);
  const budget = 300_000 + perLoad * loads + (settings.crypto ? 60_000 + 6 * perCryptoOp : 0) + (settings.cluster ? 600_000 : 0) + (settings.scale ? 3_600_000 : 0) + (settings.peers ? peersBudgetMs(settings) : 0);
  const watchdog = setTimeout(() => {
    log(`the run exceeded its time budget (${Math.round(budget / 1000)} s); stopping`);
    killAll();
    process.exit(2);
  }, budget);
  watchdog.unref();

  const stsOrEcho = (s: Scenario) => () => stsTarget(s);

  // Main table.
  const rows: Row[] = [];
  for (const s of mainScenarios) rows.push(await runLoad(settings, s, settings.concurrency, stsOrEcho(s)));
  const echoMain = rows.find((r) => r.rpc === 'Echo')?.result?.rps;
  const echoServerUs = (() => {
    const e = rows.find((r) => r.rpc === 'Echo');
    return perOp(e?.cpu?.server, e?.result?.rps);
  })();
  const ratio = (rps: number, echo: number): number => Math.round((rps / echo) * 1000) / 1000;
  for (const r of rows) if (r.result && echoMain) r.ratioToEcho = ratio(r.result.rps, echoMain);

  // Paired rounds for the ValidateUserToken goal (see GOAL_ROUNDS).
  const goalRounds: GoalRound[] = [];
  const echoScenario = mainScenarios.find((s) => s.name === 'Echo');
  const validateScenario = mainScenarios.find((s) => s.name === 'ValidateUserToken');
  if (echoScenario && validateScenario && !settings.quick) {
    for (let i = 0; i < GOAL_ROUNDS; i++) {
      const order = i % 2 === 0 ? [echoScenario, validateScenario] : [validateScenario, echoScenario];
      const [a, b] = [await runLoad(settings, order[0]!, settings.concurrency, stsOrEcho(order[0]!)), await runLoad(settings, order[1]!, settings.concurrency, stsOrEcho(order[1]!))];
      const echo = order[0] === echoScenario ? a : b;
      const validate = order[0] === echoScenario ? b : a;
      if (echo.result && validate.result) {
        goalRounds.push({
          echoRps: echo.result.rps,
          validateRps: validate.result.rps,
          ratio: ratio(validate.result.rps, echo.result.rps),
          echoServerUs: perOp(echo.cpu?.server, echo.result.rps),
          validateServerUs: perOp(validate.cpu?.server, validate.result.rps),
        });
      }
    }
  }

  // Logons, at their own (low) concurrency and a short duration.
  const logons: Row[] = [];
  for (const s of logonScenarios) {
    logons.push(await runLoad(settings, s, s.concurrency ?? settings.concurrency, stsOrEcho(s), { durationMs: settings.quick ? settings.durationMs : (s.durationMs ?? settings.durationMs) }));
  }

  // Throughput vs concurrency.
  const sweep: Row[] = [];
  for (const rpc of settings.sweep) {
    const s = scenarioNamed(rpc);
    for (const c of SWEEP_LEVELS) sweep.push(await runLoad(settings, s, c, stsOrEcho(s)));
  }
  for (const r of sweep) {
    const echo = sweep.find((e) => e.rpc === 'Echo' && e.concurrency === r.concurrency)?.result?.rps;
    if (r.result && echo) r.ratioToEcho = ratio(r.result.rps, echo);
  }
  for (const r of logons) {
    const echoSame = [...rows, ...sweep].find((e) => e.rpc === 'Echo' && e.concurrency === r.concurrency)?.result?.rps;
    const echo = echoSame ?? echoMain;
    if (r.result && echo) {
      r.ratioToEcho = Math.round((r.result.rps / echo) * 1e6) / 1e6;
      r.echoRef = `vs Echo at c=${echoSame ? r.concurrency : settings.concurrency}`;
    }
  }

  // Servers are no longer needed: stop them before the in-process crypto measurements.
  log('stopping the servers');
  await stopDeployments();

  let crypto: CryptoResult[] = [];
  if (settings.crypto) crypto = await cryptoBench({ msPerOp: CRYPTO_MS, progress: log, waitIdleMs: settings.waitIdleMs });

  const scale: ScaleResult[] = [];
  const failures: string[] = [];
  if (settings.scale) {
    try {
      // The session cache off: every lookup reads SQLite, as when the hot set outgrows session.storeCacheEntries.
      const dep = await newEmbedded('scale', SCALE_USERS, ['--expose-gc'], { 'session.storeCacheEntries': 0 });
      const srv = dep.nodes[0]!;
      scale.push(await scalePart(settings, 'embedded', dep, scaleLevels, ['--data-dir', srv.dataDir!], (n) => embeddedMemory(srv, n)));
    } catch (err) {
      failures.push(`scale (embedded): ${err instanceof Error ? err.message : String(err)}`);
      log(`scale (embedded): FAILED: ${failures.at(-1)}`);
    }
    await stopDeployments();
  }

  const clusterRows: Row[] = [];
  let clusterNote = '';
  let comparison: RefComparison | undefined;
  if (settings.cluster && (clusterScenarios.length > 0 || settings.scale)) {
    try {
      const heap = settings.scale ? MEMBER_HEAP.scale : MEMBER_HEAP.normal;
      const c = await startClusterDeployments(settings.scale ? SCALE_USERS : 0, heap);
      clusterNote = `cluster "${c.name}": ${c.members.length} Hazelcast 5.6 members (${c.memberList}; -Xmx${heap} each, scripts/hazelcast.sh), 2 STS nodes (cluster.enabled, smart routing).`;
      for (const dep of [c.one, c.two]) for (const s of clusterScenarios) clusterRows.push(await runLoad(settings, s, settings.concurrency, dep));
      if (settings.compareRef) comparison = await compareWithRef(settings, c, heap);
      if (settings.scale) {
        const baseline = clusterRows.find((r) => r.rpc === 'ValidateUserToken' && r.deployment === c.two.label && r.result);
        scale.push(
          await scalePart(settings, 'cluster', c.two, clusterScaleLevels, ['--cluster-members', c.memberList, '--cluster-name', c.name], async (n) => clusterMemory(c.members, n), baseline, c.env),
        );
      }
    } catch (err) {
      failures.push(`cluster: ${err instanceof Error ? err.message : String(err)}`);
      log(`cluster: FAILED: ${failures.at(-1)}`);
    }
    log('stopping the cluster');
    await stopDeployments();
  }
  for (const r of [...clusterRows, ...scale.flatMap((s) => s.rows)]) if (r.result && echoMain) r.ratioToEcho = ratio(r.result.rps, echoMain);

  let peers: PeersResult | undefined;
  if (settings.peers) {
    peers = await runPeers({ root: ROOT, runDir, durationMs: settings.durationMs, warmupMs: settings.warmupMs, waitIdleMs: settings.waitIdleMs, log });
    failures.push(...peers.failures);
  }

  // Results.
  const cpu = cpus();
  const meta = {
    date: startedAt.toISOString(),
    commit: gitCommit(),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    cpus: cpu.length,
    cpuModel: cpu[0]?.model.trim(),
    /** Cores in use by other processes just before the run (should be ~0 for trustworthy numbers). */
    backgroundCores: background,
    elapsedS: Math.round((Date.now() - startedAt.getTime()) / 1000),
  };
  const parts = {
    main: rows.length > 0,
    logons: logons.length > 0,
    sweep: sweep.length > 0,
    crypto: crypto.length > 0,
    cluster: settings.cluster,
    scale: settings.scale,
    peers: settings.peers,
    cpuProfile: Boolean(settings.cpuProfDir),
  };
  const config = {
    durationMs: settings.durationMs,
    warmupMs: settings.warmupMs,
    concurrency: settings.concurrency,
    quick: settings.quick,
    sweepLevels: SWEEP_LEVELS,
    waitIdleMs: settings.waitIdleMs,
    fullDecode: settings.fullDecode,
    scaleLevels: settings.scale ? scaleLevels : [],
    clusterScaleLevels: settings.scale && settings.cluster ? clusterScaleLevels : [],
  };
  const summary = { meta, config, parts, scenarios: rows, goalRounds, logons, sweep, crypto, cluster: { note: clusterNote, rows: clusterRows, comparison }, scale, peers, failures };

  const yes = (b: boolean, why = ''): string => (b ? 'yes' : `no${why}`);
  const md: string[] = [
    `# STS benchmark, ${meta.date}`,
    '',
    `Node ${meta.node}, ${meta.platform}, ${meta.cpus} x ${meta.cpuModel ?? 'unknown CPU'}, commit ${meta.commit ?? 'unknown'} (the working tree may differ); ${background} cores busy with other processes before the run; the run took ${meta.elapsedS} s.`,
    '',
    `Parts in this run: main table ${yes(parts.main)}, logons ${yes(parts.logons)}, concurrency sweep ${yes(parts.sweep)}, crypto ${yes(parts.crypto)}, cluster mode ${yes(parts.cluster, ' (--cluster)')}, scale ${yes(parts.scale, ' (--scale)')}, peers ${yes(parts.peers, ' (--peers)')}${parts.cpuProfile ? ', CPU profiles of the STS server (--cpu-prof: profiled rows are slower)' : ''}.`,
    '',
    !(parts.main || parts.logons || parts.sweep || parts.crypto || parts.cluster || parts.scale) ? 'Only the --peers part ran (below).' :
    `Closed loop, one grpc-js client (one HTTP/2 connection per server), ${settings.warmupMs / 1000} s warm-up + ${settings.durationMs / 1000} s measured per row; load generator and server are separate processes sharing the machine's ${meta.cpus} cores. STS: dev profile, embedded SQLite, silent logger, plaintext gRPC on 127.0.0.1. ` +
      (settings.fullDecode
        ? 'The load generator encodes every request and decodes every response with the generated code (--full-decode). '
        : 'The load generator encodes each distinct request once and checks each response on the wire (Echo: same bytes; ValidateUserToken: active=true; others: a non-empty message) instead of decoding it, so its CPU goes to the calls (the first call on every server is decoded and checked in full; --full-decode measures with full client-side protobuf work). ') +
      'Test data is made once per deployment through the admin RPCs (bench/setup.ts): the trusted application "bench-app" (its application token is the bearer of every session, secret and PopService call; admin keys are not applications), the handover target "bench-sso", 4 users with a password and roles, 8 sessions made with LogonUser, an identity provider with an inline ES256 JWKS (made with jose) and the resource server "bench-rs" (credential bench-app, inline ECDH-ES+A256KW JWKS). ' +
      'ValidateUserToken validates by token id and GetUserTokenByUserTokenId also signs the JWT, both cycling over the 8 sessions; a Handover is CreateUserTicket (bench-app, for bench-sso) + GetUserTokenByUserTicket (bench-sso), counted once per pair; GetUserSecret cycles over 1000 pre-signed subject tokens whose secrets exist already (steady state; secret released as a JWE to bench-rs). ' +
      'Decrypt cycles through 1000 JWEs (ECDH-ES+A256KW, A256GCM) of 100 B made with JwksCache.encryptFor; Sign/Echo payloads are 100 B.',
    '',
  ];
  const goals = goalLines(rows, crypto, echoServerUs, goalRounds);
  if (goals.length > 0) md.push('## Goals (issue 8)', '', ...goals, '');
  if (rows.length > 0) md.push(`## Throughput at concurrency ${settings.concurrency}`, '', throughputTable(rows), '');
  if (rows.some((r) => r.cpu))
    md.push(
      `CPU during the measured window, in cores (of ${meta.cpus}), and per operation. "other" is the rest of the machine and should be near 0. A load generator near 1 core is the bottleneck (Node is single-threaded): then the server has headroom, and "ratio to echo" mostly reflects client-side cost; server CPU per operation (and its multiple of Echo's) is the better measure of what an RPC costs STS.`,
      '',
      cpuTable(rows, echoServerUs),
      '',
    );
  if (logons.length > 0)
    md.push(
      '## Logons (password hashing dominates)',
      '',
      'LogonUser verifies the password with Argon2id at the default setting (OWASP: m=19456 KiB, t=2, p=1; 19 MiB and roughly 20-30 ms of one core per hash, on the libuv thread pool, in its turn on the fair hash scheduler). LogonApplication verifies the application secret STS generated (256 bits) with HMAC-SHA-256 under a key derived from the master key: microseconds, on the event loop, no turn on the hash pool (an operator-chosen secret below 128 bits would take Argon2id like a password). The password hash is deliberately expensive, so both are measured apart, at low concurrency and for a short time; LogonUser capacity grows with cores, not with anything in STS\'s request path. "ratio to echo" is included for completeness only.',
      '',
      logonTable(logons),
      '',
    );
  if (sweep.length > 0) {
    md.push('## Throughput vs concurrency (req/s, latency in ms)', '', sweepTable(sweep), '', '![throughput vs concurrency](throughput-vs-concurrency.png)', '');
    if (sweep.some((r) => r.cpu)) md.push(cpuTable(sweep), '');
  }
  if (crypto.length > 0) md.push(`## Crypto, in-process (one operation at a time, ~${CRYPTO_MS / 1000} s each)`, '', cryptoTable(crypto), '');
  if (settings.cluster) {
    md.push('## Cluster mode (Hazelcast)', '');
    if (clusterRows.length > 0) {
      md.push(
        `${clusterNote} "1 node": all load to node 1; "2 nodes": the load generator spreads its calls round-robin over both nodes (one HTTP/2 connection each), so a handover's two calls usually land on different nodes. Same concurrency (${settings.concurrency}) and the same kind of fixture as the embedded table; "ratio to echo" is against this run's Echo at c=${settings.concurrency}.`,
        '',
        `**On this ${meta.cpus}-core machine both STS nodes, both Hazelcast members and the load generator share the same ${meta.cpus} cores**, so "2 nodes / 1 node" shows the cost of the extra hops more than the capacity a second machine would add: with real hosts each node and member has its own cores.`,
        '',
        clusterTable(rows, clusterRows),
        '',
        cpuTable(clusterRows.map((r) => ({ ...r, rpc: `${r.rpc}, ${r.deployment}` }))),
        '',
      );
    } else md.push('No cluster results (see failures below).', '');
    if (comparison) md.push(...comparisonLines(comparison));
  }
  if (scale.length > 0) {
    md.push(
      '## Scale: stored sessions',
      '',
      `ValidateUserToken at c=${settings.concurrency} with many stored sessions; the calls cycle through a uniform sample of ${k(SCALE_SAMPLE)} token ids of the stored sessions (spread over ${SCALE_USERS} users with roles), so lookups hit the whole store; the embedded server runs with session.storeCacheEntries=0, so every lookup reads SQLite (the main table uses the defaults, where live sessions are found in memory). LogonUser would need ~0.4 s of a core per session, so the sessions are inserted through the store by bench/seed.ts: the same SessionStore.createUserSession and the same JSON that LogonUser stores. ${settings.cluster ? `Cluster mode: each member has a ${MEMBER_HEAP.scale}B heap for this part (HZ_HEAP, scripts/hazelcast.sh; 384 MiB otherwise).` : ''}`,
      '',
      scaleTable(scale),
      '',
      '### Memory per stored session',
      '',
      ...scale.map((s) => `- ${s.mode}: ${s.method}. Seeding: ${s.seeding.map((x) => `${k(x.count)} in ${(x.ms / 1000).toFixed(1)} s`).join(', ')}.`),
      '',
      memoryTable(scale),
      '',
    );
  }
  if (peers) md.push(...peersMarkdown(peers));
  if (failures.length > 0) md.push('## Failures', '', ...failures.map((f) => `- ${f}`), '');
  const profiled = [...rows, ...logons, ...sweep, ...clusterRows, ...scale.flatMap((s) => s.rows)];
  if (profiled.some((r) => r.profile)) md.push('## Server CPU profiles (--cpu-prof)', '', profileSection(profiled));
  const markdown = md.join('\n');

  mkdirSync(RESULTS, { recursive: true });
  const json = JSON.stringify(summary, null, 2) + '\n';
  const stamp = meta.date.replace(/[:.]/g, '-');
  writeFileSync(join(RESULTS, `${stamp}.json`), json);
  writeFileSync(join(RESULTS, 'latest.json'), json);
  writeFileSync(join(RESULTS, 'latest.md'), markdown);
  if (peers) writePeersReport(join(RESULTS, 'peers.md'), meta, peers, `${stamp}.json`);
  if (sweep.some((r) => r.result)) {
    const series = [...new Set(sweep.map((r) => r.rpc))].map((rpc) => ({
      label: rpc === 'Echo' ? 'Echo (raw grpc-js)' : `STS ${rpc}`,
      color: SWEEP_COLORS[rpc] ?? ([148, 103, 189] as const),
      points: sweep.filter((r) => r.rpc === rpc && r.result).map((r) => ({ x: r.concurrency, y: r.result!.rps })),
    }));
    writeFileSync(
      join(RESULTS, 'throughput-vs-concurrency.png'),
      lineChartPng({ title: 'Throughput vs concurrency', xLabel: 'Concurrency (calls in flight)', yLabel: 'Req/s', series, xLog2: true }),
    );
  }
  process.stdout.write(markdown);
  log(`results: ${join('bench', 'results', `${stamp}.json`)}, latest.json, latest.md${sweep.length > 0 ? ', throughput-vs-concurrency.png' : ''}${peers ? ', peers.md' : ''}`);
  clearTimeout(watchdog);
  return failures.length > 0 || [...rows, ...logons, ...sweep, ...clusterRows, ...scale.flatMap((s) => s.rows)].some((r) => r.failed) ? 1 : 0;
}

function cleanup(): void {
  killAll();
  rmSync(runDir, { recursive: true, force: true });
}

process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    log(`${sig}: stopping`);
    cleanup();
    process.exit(130);
  });
}

main().then(
  async (code) => {
    await stopDeployments();
    process.exit(code);
  },
  (err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    cleanup();
    process.exit(1);
  },
);
