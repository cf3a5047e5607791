/**
 * The package as an operator installs it, and the README as an operator follows it:
 * - `npm pack` (its prepack builds dist/), then `npm install -g --prefix TMP sts-<v>.tgz
 *   --allow-scripts=better-sqlite3` into a temporary prefix, as the README says; the installed `sts` is the
 *   compiled one, with no tsx anywhere in the installed tree;
 * - `sts --version`, `sts serve` and `sts admin` from that prefix (and how long a compiled admin command takes);
 * - every README block marked `sh runnable` run with that `sts` on the PATH (test/helpers/readme.ts): the
 *   quick start, the grpcurl session to the handover and the logout, the secret server end to end, a backup
 *   restored into a second server; and the `sh runnable=cluster` blocks: two Hazelcast members and two STS nodes
 *   started as written, after which a logon on one node validates on the other.
 * Each session runs in its own empty directory and process group, killed at the end.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Application, SessionServiceClient } from '../src/gen/sts/v1/session.js';
import { call } from './helpers/call.js';
import { ROOT, cleanEnv } from './helpers/cli.js';
import { freePort } from './helpers/cluster.js';
import { README, README_PORTS, sessionScript } from './helpers/readme.js';
import { tempDir } from './helpers/server.js';

const run = promisify(execFile);
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const groups: ChildProcess[] = [];

let prefix = '';
let bin = '';

beforeAll(async () => {
  const work = tempDir('sts-install-');
  // Output to files, not pipes: npm's child processes may outlive it.
  await run('nice', ['-n', '15', 'npm', 'pack', '--pack-destination', work, '--silent'], { cwd: ROOT, maxBuffer: 64 << 20 });
  const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
  expect(tarball).toBe(`sts-${VERSION}.tgz`);
  prefix = join(work, 'prefix');
  // Niced: the native build takes minutes of CPU, and the other test files running meanwhile come first.
  await run('nice', ['-n', '15', 'npm', 'install', '-g', '--prefix', prefix, join(work, tarball!), '--allow-scripts=better-sqlite3', '--no-audit', '--no-fund', '--prefer-offline'], {
    cwd: work,
    env: cleanEnv(),
    maxBuffer: 64 << 20,
  });
  bin = join(prefix, 'bin');
}, 1_800_000); // the SQLite binding compiles from source: minutes on a loaded 2-core machine

afterAll(async () => {
  for (const g of groups) await killGroup(g);
});

/** The environment of an operator's shell: the installed sts and grpcurl first on the PATH, no STS_* variable. */
function shellEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return cleanEnv({ PATH: `${bin}:${join(ROOT, '.tools/bin')}:${process.env.PATH}`, npm_config_prefix: prefix, ...extra });
}

async function killGroup(child: ChildProcess): Promise<void> {
  if (child.pid === undefined) return;
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, s);
    } catch {
      // the group is gone
    }
  };
  signal('SIGTERM');
  await new Promise((r) => setTimeout(r, 3000));
  signal('SIGKILL');
}

/** Runs a script with bash in `cwd`, in a process group of its own (left running: see killGroup). */
function bash(script: string, cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    groups.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    // 'exit', not 'close': servers started in the background may hold the pipes open.
    child.on('exit', (code) => {
      clearTimeout(timer);
      setTimeout(() => resolve({ code, stdout, stderr }), 100);
    });
  });
}

async function ports(): Promise<Map<number, number>> {
  const map = new Map<number, number>();
  for (const p of README_PORTS) map.set(p, await freePort());
  return map;
}

describe('the installed package', { timeout: 300_000 }, () => {
  it('puts the compiled sts on the PATH: --version, serve and admin work, without tsx', async () => {
    const target = realpathSync(join(bin, 'sts'));
    expect(target).toBe(join(prefix, 'lib/node_modules/sts/dist/src/cli/main.js'));
    expect(existsSync(join(prefix, 'lib/node_modules/sts/node_modules/tsx'))).toBe(false);
    expect(existsSync(join(prefix, 'lib/node_modules/sts/dist/web/test-page/page.js'))).toBe(true);
    expect((await run(join(bin, 'sts'), ['--version'], { env: shellEnv() })).stdout).toBe(`sts ${VERSION}\n`);

    const dir = tempDir();
    const p = await ports();
    const out = await bash(
      [
        'set -euo pipefail',
        `sts serve --address 127.0.0.1:${p.get(50051)} --http-address 127.0.0.1:${p.get(8080)} --metrics-address 127.0.0.1:${p.get(8081)} > sts.log &`,
        'sts admin health --wait 60',
        'sts admin apps create --id shop --name Shop > /dev/null',
        // The compiled admin command, timed: reported, not asserted.
        'for i in 1 2 3 4 5; do s=$(date +%s%N); sts admin apps list > apps.json; echo "admin-ms $(( ($(date +%s%N) - s) / 1000000 ))"; done',
        'jq -e \'.[0].applicationId == "shop"\' apps.json',
        `curl -sf http://127.0.0.1:${p.get(8081)}/metrics | grep '^sts_build_info{version="${VERSION}"'`,
      ].join('\n'),
      dir,
      shellEnv({ STS_SERVER_ADDRESS: `127.0.0.1:${p.get(50051)}` }),
      240_000,
    );
    expect(out.code, `${out.stdout}\n${out.stderr}\n${readFileSync(join(dir, 'sts.log'), 'utf8').slice(-3000)}`).toBe(0);
    const times = [...out.stdout.matchAll(/admin-ms (\d+)/g)].map((m) => Number(m[1]));
    expect(times).toHaveLength(5);
    console.log(`compiled \`sts admin apps list\`: ${times.join(', ')} ms (load average ${(await run('cat', ['/proc/loadavg'])).stdout.trim()})`);
    expect(readFileSync(join(dir, 'sts.log'), 'utf8')).toMatch(/"msg":"sts started".*"metrics":"http:\/\/127\.0\.0\.1:\d+\/metrics"/);
  });
});

describe('the README, as written', { timeout: 600_000 }, () => {
  it('runs the quick start, the grpcurl session, the secret server and a restored backup', async () => {
    const dir = tempDir('sts-readme-');
    const p = await ports();
    const env = shellEnv({ STS_SERVER_ADDRESS: `127.0.0.1:${p.get(50051)}`, STS_HTTP_ADDRESS: `127.0.0.1:${p.get(8080)}` });
    const out = await bash(sessionScript(README(ROOT), 'main', p), dir, env, 500_000);
    const logs = ['sts.log', 'restored.log'].filter((f) => existsSync(join(dir, f))).map((f) => `${f}:\n${readFileSync(join(dir, f), 'utf8').slice(-2000)}`);
    expect(out.code, `${out.stdout.slice(-4000)}\n${out.stderr.slice(-4000)}\n${logs.join('\n')}`).toBe(0);
    // The session ended in the restored server's answer: alice's secret, as the resource server opened it.
    expect(readFileSync(join(dir, 'alice.secret'), 'utf8').trim()).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('starts two Hazelcast members and two STS nodes as written; a logon on one node validates on the other', async () => {
    const dir = tempDir('sts-readme-cluster-');
    const p = await ports();
    const env = shellEnv({ STS_SERVER_ADDRESS: `127.0.0.1:${p.get(50051)}`, STS_HTTP_ADDRESS: `127.0.0.1:${p.get(8080)}` });
    const out = await bash(sessionScript(README(ROOT), 'cluster', p), dir, env, 500_000);
    const logs = ['node-a.log', 'node-b.log', 'member-1.log'].filter((f) => existsSync(join(dir, f))).map((f) => `${f}:\n${readFileSync(join(dir, f), 'utf8').slice(-2000)}`);
    expect(out.code, `${out.stdout.slice(-4000)}\n${out.stderr.slice(-4000)}\n${logs.join('\n')}`).toBe(0);
    expect(out.stdout.trim().split('\n').at(-1)).toBe('true');

    // Checked again here, with the generated client: a session made through node B validates on node A.
    const a = new SessionServiceClient(`127.0.0.1:${p.get(50051)}`, credentials.createInsecure());
    const b = new SessionServiceClient(`127.0.0.1:${p.get(50052)}`, credentials.createInsecure());
    try {
      const admin = readFileSync(join(dir, 'cluster/admin.token'), 'utf8').trim();
      const created = await call(a.createApplication, a, { application: Application.fromPartial({ applicationId: 'check', name: 'Check' }), applicationSecret: '' }, admin);
      const logon = async (c: SessionServiceClient) => (await call(c.logonApplication, c, { credential: { $case: 'applicationCredential', value: { applicationId: 'check', applicationSecret: created.applicationSecret } } })).applicationToken!.applicationTokenId;
      const onB = await logon(b);
      const user = await call(b.logonUser, b, { credential: { $case: 'userCredential', value: { username: 'dave', password: 'a long password' } }, ticketApplicationId: '' }, onB);
      const valid = await call(a.validateUserToken, a, { token: { $case: 'userTokenId', value: user.userToken!.userTokenId } }, await logon(a));
      expect(valid).toMatchObject({ active: true, userToken: { uid: user.userToken!.uid } });
    } finally {
      a.close();
      b.close();
    }
    mkdirSync(join(dir, 'done'), { recursive: true });
  });
});
