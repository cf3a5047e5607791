/**
 * Real Hazelcast members (Java processes from scripts/hazelcast.sh) and real STS processes in cluster mode,
 * for the cluster tests. Everything listens on 127.0.0.1 only; every process is killed in `stopAll`.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { credentials, type Client } from '@grpc/grpc-js';
import { afterAll, beforeAll } from 'vitest';
import { hashAdminKey, newAdminKey } from '../../src/auth/caller.js';
import { PopServiceClient } from '../../src/gen/sts/v1/pop.js';
import { SecretServiceClient } from '../../src/gen/sts/v1/secret.js';
import { SessionServiceClient } from '../../src/gen/sts/v1/session.js';
import type { ManualClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { HazelcastStore } from '../../src/store/hazelcast/hazelcast-store.js';
import { clusterProtection } from '../../src/app.js';
import { ClusterRejections } from '../../src/cluster/rejections.js';
import { MasterKeyRing } from '../../src/crypto/master-key.js';
import { openDatabase } from '../../src/store/sqlite/database.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { tempDir } from './server.js';

const children = new Set<ChildProcess>();

export async function freePort(): Promise<number> {
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

/**
 * A free port for a Hazelcast member, below the kernel's ephemeral range: tests kill members and start them
 * again on the same port (the member list is fixed), and a port from the ephemeral range can meanwhile become
 * the local port of any outgoing connection on the machine ("Port ... is already in use").
 */
export async function memberPort(): Promise<number> {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // not Linux: the usual lower bound
  }
  const from = 10_000;
  const to = Math.max(from + 1000, low);
  for (;;) {
    const port = from + randomInt(to - from);
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.unref();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

/** Resolves when `pattern` appears in the child's output; rejects on exit or after `timeoutMs`. */
function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${what}: not ready within ${timeoutMs} ms; output:\n${seen.slice(-2000)}`)), timeoutMs);
    const onData = (d: Buffer) => {
      seen += d.toString();
      const m = pattern.exec(seen);
      if (m) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.stderr?.off('data', onData);
        resolve(m[0]);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what}: exited with ${code} before it was ready; output:\n${seen.slice(-2000)}`));
    });
  });
}

export interface Member {
  port: number;
  process: ChildProcess;
  /** SIGKILL: the member dies without saying goodbye (a crash). */
  kill(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

export async function startMember(port: number, allPorts: number[], cluster: string): Promise<Member> {
  const members = allPorts.map((p) => `127.0.0.1:${p}`).join(',');
  const cmd = execFileSync('bash', ['scripts/hazelcast.sh', 'java-command', String(port), members, cluster], { encoding: 'utf8' }).trim().split('\n');
  const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  await waitForOutput(child, new RegExp(`127\\.0\\.0\\.1\\]:${port} is STARTED`), 90_000, `hazelcast member ${port}`);
  return {
    port,
    process: child,
    async kill() {
      child.kill('SIGKILL');
      await exited(child);
    },
  };
}

export interface Cluster {
  name: string;
  ports: number[];
  members: Member[];
  /** STS's `cluster.members` value. */
  memberList: string;
}

export async function startCluster(size: number): Promise<Cluster> {
  const name = `sts-test-${randomBytes(4).toString('hex')}`;
  const ports: number[] = [];
  for (let i = 0; i < size; i++) ports.push(await memberPort());
  // The first member waits out its join timeout alone; the others join it.
  const members: Member[] = [];
  for (const p of ports) members.push(await startMember(p, ports, name));
  return { name, ports, members, memberList: ports.map((p) => `127.0.0.1:${p}`).join(',') };
}

/** What every STS node of one deployment shares: the master key and the admin key. */
export interface Deployment {
  masterKey: string;
  adminKey: string;
  adminKeyFile: string;
}

export function newDeployment(): Deployment {
  const dir = tempDir('sts-deploy-');
  const adminKey = newAdminKey();
  const adminKeyFile = join(dir, 'admin-keys');
  writeFileSync(adminKeyFile, `ops:${hashAdminKey(adminKey)}\n`);
  return { masterKey: `mk-test:${randomBytes(32).toString('base64url')}`, adminKey, adminKeyFile };
}

export interface StsNode {
  address: string;
  dataDir: string;
  process: ChildProcess;
  pop: PopServiceClient;
  session: SessionServiceClient;
  secret: SecretServiceClient;
  logs: string[];
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export async function startStsNode(cluster: Cluster, deployment: Deployment, options: { dataDir?: string; env?: Record<string, string> } = {}): Promise<StsNode> {
  const dataDir = options.dataDir ?? tempDir('sts-node-');
  const port = await freePort();
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STS_'))),
    STS_MASTER_KEY: deployment.masterKey,
    STS_AUTH_ADMIN_KEY_FILE: deployment.adminKeyFile,
    STS_CLUSTER_NAME: cluster.name,
    STS_SERVER_SHUTDOWN_GRACE_MS: '2000',
    STS_HTTP_ADDRESS: '127.0.0.1:0',
    ...options.env,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--cluster', '--members', cluster.memberList, '--address', `127.0.0.1:${port}`, '--data-dir', dataDir], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const logs: string[] = [];
  child.stdout!.on('data', (d: Buffer) => logs.push(...d.toString().split('\n').filter(Boolean)));
  await waitForOutput(child, /"msg":"sts started"/, 90_000, `sts node ${port}`);
  const address = `127.0.0.1:${port}`;
  const creds = credentials.createInsecure();
  const clients: Client[] = [];
  const make = <T extends Client>(C: new (a: string, c: typeof creds) => T): T => {
    const c = new C(address, creds);
    clients.push(c);
    return c;
  };
  return {
    address,
    dataDir,
    process: child,
    pop: make(PopServiceClient),
    session: make(SessionServiceClient),
    secret: make(SecretServiceClient),
    logs,
    async stop() {
      clients.forEach((c) => c.close());
      child.kill('SIGTERM');
      await exited(child);
    },
    async kill() {
      clients.forEach((c) => c.close());
      child.kill('SIGKILL');
      await exited(child);
    },
  };
}

/** Kills every member and node still running (afterEach/afterAll). */
export async function stopAll(): Promise<void> {
  const all = [...children];
  for (const c of all) c.kill('SIGKILL');
  await Promise.all(all.map(exited));
}

/** The master key of in-process test stores: every store of one test shares it, as every node of a cluster does. */
export const TEST_MASTER = new MasterKeyRing([{ id: 'mk-test', key: randomBytes(32) }]);

/**
 * An in-process HazelcastStore on `cluster` over its own SQLite copy (a node's store without the rest of
 * STS), on `clock`; `close` ends both and removes the copy.
 */
export async function connectStore(
  cluster: Cluster,
  clock: ManualClock,
  master: MasterKeyRing = TEST_MASTER,
): Promise<{ store: HazelcastStore; local: SqliteStore; rejections: ClusterRejections; close(): Promise<void> }> {
  const dir = tempDir('sts-hz-store-');
  const local = new SqliteStore(openDatabase(dir), clock);
  const rejections = new ClusterRejections(silentLogger);
  const store = await HazelcastStore.connect(
    { clusterName: cluster.name, members: [cluster.memberList], connectTimeoutMs: 30_000, invocationTimeoutMs: 5000 },
    local.durable,
    clock,
    silentLogger,
    () => undefined,
    clusterProtection(master, local.db, rejections, { 'cluster.name': cluster.name, 'cluster.unsealedRecords': 'refuse', 'cluster.leaseMs': 30_000 }),
  );
  return {
    store,
    local,
    rejections,
    close: async () => {
      await store.close();
      await local.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * For a test file of in-process cluster tests: one real member started before its tests and stopped after
 * them, and cleanups (stores, directories) run before the member stops.
 */
export function oneMemberPerFile(): { cluster: () => Cluster; cleanup: (fn: () => Promise<void>) => void } {
  let cluster: Cluster | undefined;
  const cleanups: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    cluster = await startCluster(1);
  }, 120_000);
  afterAll(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
    await stopAll();
  });
  return {
    cluster: () => cluster ?? (() => { throw new Error('the member is not started yet'); })(),
    cleanup: (fn) => cleanups.push(fn),
  };
}

/** Polls `fn` every 50 ms until it is true; throws naming `what` after `timeoutMs`. */
export async function waitFor(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not true within ${timeoutMs} ms`);
}
