/**
 * The real `sts` command line, run as a child process (`node --import tsx src/cli/main.ts`): exit codes
 * (sysexits), one-line error messages without stack traces, help and config output, and a server that
 * starts, logs, and stops cleanly on SIGTERM without touching a data directory it may not open.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { credentials, loadPackageDefinition, type Client, type GrpcObject, type ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { optionsMarkdown } from '../src/config/defaults.js';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts')];
const WAIT_MS = 30_000;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The parent's environment without any STS_* variable, plus `extra`. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('STS_')) env[k] = v;
  // Servers started in parallel must not all take the HTTP listener's default port.
  return { ...env, STS_HTTP_ADDRESS: '127.0.0.1:0', ...extra };
}

class Cli {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<Exit>;

  constructor(args: string[], env: Record<string, string>) {
    this.child = spawn(process.execPath, [...CLI, ...args], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve, reject) => {
      this.child.on('error', reject);
      this.child.on('close', (code, signal) => resolve({ code, signal, stdout: this.stdout, stderr: this.stderr }));
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the exit, or rejects after `ms`. */
  exit(ms = WAIT_MS): Promise<Exit> {
    return within(this.exited, ms, () => `sts ${this.child.spawnargs.slice(3).join(' ')} did not exit; stdout: ${this.stdout} stderr: ${this.stderr}`);
  }

  /** Resolves with the first JSON log line on stdout whose msg is `msg`. */
  logLine(msg: string, ms = WAIT_MS): Promise<Record<string, unknown>> {
    const find = (): Record<string, unknown> | undefined => {
      for (const line of this.stdout.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          if (entry.msg === msg) return entry;
        } catch {
          // a partial line; wait for the rest
        }
      }
      return undefined;
    };
    const found = new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = (): void => {
        const entry = find();
        if (entry) {
          this.child.stdout!.off('data', check);
          resolve(entry);
        }
      };
      this.child.stdout!.on('data', check);
      this.exited.then((e) => reject(new Error(`sts exited (code ${e.code}) before logging "${msg}"; stderr: ${e.stderr}`)), reject);
      check();
    });
    return within(found, ms, () => `no "${msg}" log line; stdout: ${this.stdout} stderr: ${this.stderr}`);
  }
}

function within<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what()}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const children: Cli[] = [];
function sts(args: string[], env: Record<string, string> = {}): Cli {
  const c = new Cli(args, env);
  children.push(c);
  return c;
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sts-cli-'));
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.running) c.child.kill('SIGKILL');
    await c.exit(10_000).catch(() => undefined);
  }
  rmSync(dir, { recursive: true, force: true });
});

/** A start-up failure: the exit code, exactly one stderr line containing every needle, no stack trace. */
function expectFailure(e: Exit, code: number, ...needles: string[]): void {
  expect(e.code, `stderr: ${e.stderr}`).toBe(code);
  expect(e.stderr).not.toContain('    at ');
  const lines = e.stderr.trimEnd().split('\n');
  expect(lines, e.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^sts: /);
  for (const n of needles) expect(lines[0]).toContain(n);
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Hashes of sts.db and, when present, its WAL. */
function dbState(dataDir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['sts.db', 'sts.db-wal']) {
    const p = join(dataDir, name);
    if (existsSync(p)) out[name] = sha256(p);
  }
  return out;
}

/** The port from the "sts started" log line. */
function portOf(started: Record<string, unknown>): number {
  return Number(/:(\d+)$/.exec(String(started.address))?.[1]);
}

type HealthClient = Client & { check(req: { service: string }, opts: { deadline: number }, cb: (err: Error | null, res: { status: string }) => void): void };

/** A grpc.health.v1 Check answered by the server: proof that its event loop has run since it logged "sts started". */
async function healthCheck(port: number): Promise<string> {
  const pkg = loadPackageDefinition(loadSync(healthProtoPath, { enums: String })) as GrpcObject;
  const Health = ((pkg.grpc as GrpcObject).health as GrpcObject).v1 as GrpcObject;
  const client = new (Health.Health as ServiceClientConstructor)(`127.0.0.1:${port}`, credentials.createInsecure()) as unknown as HealthClient;
  try {
    return await new Promise<string>((resolve, reject) =>
      client.check({ service: '' }, { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res.status))),
    );
  } finally {
    client.close();
  }
}

/**
 * Waits until the server is up and has answered a call. Signalling right after the "sts started" line is a
 * separate test (see "SIGTERM right after ..."); the other tests must not depend on that race.
 */
async function ready(cli: Cli): Promise<Record<string, unknown>> {
  const started = await cli.logLine('sts started');
  expect(await healthCheck(portOf(started))).toBe('SERVING');
  return started;
}

const masterKey = (id: string): string => `${id}:${randomBytes(32).toString('base64url')}`;

describe('usage', () => {
  it('--help prints usage and exits 0', async () => {
    const e = await sts(['--help']).exit();
    expect(e.code).toBe(0);
    expect(e.stdout).toContain('Usage:');
    expect(e.stdout).toContain('sts serve');
    expect(e.stdout).toContain('Exit codes');
    expect(e.stderr).toBe('');
  });

  it('an unknown command exits 64 with one line naming it', async () => {
    expectFailure(await sts(['frobnicate']).exit(), 64, 'frobnicate');
  });

  it('an unknown flag exits 64', async () => {
    expectFailure(await sts(['serve', '--no-such-flag']).exit(), 64, 'no-such-flag');
  });

  it('config --markdown prints the option table', async () => {
    const e = await sts(['config', '--markdown']).exit();
    expect(e.code).toBe(0);
    expect(e.stdout).toBe(optionsMarkdown() + '\n');
    expect(e.stdout).toContain('| `server.address` | `STS_SERVER_ADDRESS` |');
  });

  it('config prints the effective values from file and environment', async () => {
    const file = join(dir, 'sts.yaml');
    writeFileSync(file, 'server:\n  maxMessageBytes: 8192\n');
    const e = await sts(['config', '--config', file], { STS_LOG_LEVEL: 'debug' }).exit();
    expect(e.code, e.stderr).toBe(0);
    expect(e.stdout).toContain('server.maxMessageBytes = 8192');
    expect(e.stdout).toContain('log.level = "debug"');
    expect(e.stdout).toContain('(STS_LOG_LEVEL)');
  });
});

describe('start-up errors', () => {
  it('a port out of range exits 78 naming server.address', async () => {
    expectFailure(await sts(['serve', '--address', '127.0.0.1:99999', '--data-dir', dir]).exit(), 78, 'server.address', '99999');
  });

  it('a config file with an unknown key exits 78 naming the key and the file', async () => {
    const file = join(dir, 'sts.json');
    writeFileSync(file, JSON.stringify({ server: { address: '127.0.0.1:0', maxMessageSize: 1 } }));
    expectFailure(await sts(['serve', '--config', file, '--data-dir', join(dir, 'data')]).exit(), 78, 'server.maxMessageSize', file);
  });

  it('an unknown STS_ environment variable exits 78', async () => {
    expectFailure(await sts(['serve', '--address', '127.0.0.1:0', '--data-dir', dir], { STS_LOGLEVEL: 'debug' }).exit(), 78, 'STS_LOGLEVEL');
  });

  it('the prod profile without a master key exits 78', async () => {
    expectFailure(await sts(['serve', '--address', '127.0.0.1:0', '--data-dir', dir, '--profile', 'prod']).exit(), 78, 'masterKey.file');
  });

  it('a data directory that is a regular file exits 73 naming it', async () => {
    const file = join(dir, 'not-a-dir');
    writeFileSync(file, 'x');
    expectFailure(await sts(['serve', '--address', '127.0.0.1:0', '--data-dir', file]).exit(), 73, 'dataDir', file);
  });

  it('a corrupt master key file exits 65 naming masterKey.file, without echoing its content', async () => {
    const keyFile = join(dir, 'master.key');
    const material = randomBytes(31).toString('base64url');
    writeFileSync(keyFile, `mk-1:${material}\n`);
    const e = await sts(['serve', '--address', '127.0.0.1:0', '--data-dir', join(dir, 'data')], { STS_MASTER_KEY_FILE: keyFile }).exit();
    expectFailure(e, 65, 'masterKey.file', keyFile);
    expect(e.stderr).not.toContain(material);
    expect(e.stderr).not.toContain(material.slice(0, 12));
  });

  it('a wrong master key exits 65 and changes nothing in the data directory', async () => {
    const data = join(dir, 'data');
    const first = sts(['serve', '--address', '127.0.0.1:0', '--data-dir', data], { STS_MASTER_KEY: masterKey('a') });
    await ready(first);
    first.child.kill('SIGTERM');
    const stopped = await first.exit();
    expect(stopped.code, stopped.stderr).toBe(0);
    const before = dbState(data);
    expect(before['sts.db']).toBeDefined();

    // Same key id, other key bytes.
    const sameId = masterKey('a');
    const e1 = await sts(['serve', '--address', '127.0.0.1:0', '--data-dir', data], { STS_MASTER_KEY: sameId }).exit();
    expectFailure(e1, 65, 'master key');
    expect(e1.stderr).not.toContain(sameId.slice(2));
    expect(e1.stdout).not.toContain('sts started');
    expect(dbState(data)).toEqual(before);

    // Another key id.
    const e2 = await sts(['serve', '--address', '127.0.0.1:0', '--data-dir', data], { STS_MASTER_KEY: masterKey('b') }).exit();
    expectFailure(e2, 65, 'master key', '"a"');
    expect(dbState(data)).toEqual(before);
  });
});

describe('serve', () => {
  it('starts, answers calls, and on SIGTERM logs "sts stopped" and exits 0', async () => {
    const data = join(dir, 'data');
    const server = sts(['serve', '--address', '127.0.0.1:0', '--data-dir', data]);
    const started = await ready(server);
    const port = portOf(started);
    expect(port).toBeGreaterThan(0);
    expect(started.dataDir).toBe(data);
    // dev profile: the master key was generated on first start.
    expect(existsSync(join(data, 'master.key'))).toBe(true);
    server.child.kill('SIGTERM');
    const e = await server.exit();
    expect(e.code, e.stderr).toBe(0);
    expect(e.signal).toBeNull();
    expect(e.stderr).toBe('');
    const msgs = e.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(msgs).toContain('shutting down');
    expect(msgs[msgs.length - 1]).toBe('sts stopped');
  });

  it('SIGTERM right after the "sts started" line still shuts down gracefully (signal handlers are in place)', async () => {
    // An orchestrator may stop a server as soon as it reports started. Repeated, because the window is short.
    for (let i = 0; i < 10; i++) {
      const server = sts(['serve', '--address', '127.0.0.1:0', '--data-dir', join(dir, `data-${i}`)]);
      await server.logLine('sts started');
      server.child.kill('SIGTERM');
      const e = await server.exit();
      expect({ attempt: i, code: e.code, signal: e.signal }, e.stdout + e.stderr).toEqual({ attempt: i, code: 0, signal: null });
      expect(e.stdout).toContain('"sts stopped"');
    }
    // Ten server starts: about 3 s each idle, over 10 s each on a loaded 2-core machine.
  }, 300_000);
});
