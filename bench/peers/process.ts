/**
 * Processes of the --peers part: servers pinned to one core, load generators pinned to the other, their output
 * in log files (nothing to drain during a measurement), and readings of /proc for CPU and memory.
 *
 * Every process started here runs in a process group of its own (a server may be a wrapper script with the
 * real server as its child, like Keycloak's kc.sh); stopping it signals the whole group, and every group still
 * running when the benchmark exits, however it exits, is killed.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { cpus } from 'node:os';
import { createServer } from 'node:net';
import { basename } from 'node:path';

/** The server's core and the load generator's: each side has a core of its own on a 2-core machine. */
export const SERVER_CORE = 0;
export const LOAD_CORE = 1;

let pinning: boolean | undefined;

/** Pinning needs taskset (util-linux) and two cores; without them processes run unpinned (the report says so). */
export function canPin(): boolean {
  if (pinning === undefined) {
    pinning = cpus().length >= 2 && ['/usr/bin/taskset', '/bin/taskset'].some((p) => existsSync(p));
  }
  return pinning;
}

/** The command line that runs `cmd` on `core` (unchanged when pinning is not possible). */
export function onCore(core: number, cmd: string, args: string[]): [string, string[]] {
  return canPin() ? ['taskset', ['-c', String(core), cmd, ...args]] : [cmd, args];
}

const groups = new Set<number>();

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // Already gone.
  }
}

process.on('exit', () => {
  for (const g of groups) killGroup(g, 'SIGKILL');
});

/** Marks a process started with `detached: true` (a group of its own) to be killed if the benchmark exits. */
export function ownGroup(pid: number): void {
  groups.add(pid);
}

/** Kills what is left of a group and forgets it. */
export function releaseGroup(pid: number): void {
  killGroup(pid, 'SIGKILL');
  groups.delete(pid);
}

export interface Proc {
  name: string;
  child: ChildProcess;
  /** The process started (and the id of its process group). */
  pid: number;
  logFile: string;
  /** Set once it has exited. */
  exit?: string;
  /** The last lines of its log, for error messages. */
  tail(chars?: number): string;
  stop(graceMs?: number): Promise<void>;
}

/** Starts `cmd` in a process group of its own, output (stdout and stderr) appended to `logFile`. */
export function startProc(name: string, cmd: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv; logFile: string }): Proc {
  const fd = openSync(options.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', fd, fd], detached: true });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
  ownGroup(pid);
  const proc: Proc = {
    name,
    child,
    pid,
    logFile: options.logFile,
    tail: (chars = 1500) => {
      try {
        return readFileSync(options.logFile, 'utf8').slice(-chars);
      } catch {
        return '';
      }
    },
    stop: async (graceMs = 15_000) => {
      if (proc.exit === undefined) {
        const done = once(child, 'exit');
        killGroup(pid, 'SIGTERM');
        const timer = setTimeout(() => killGroup(pid, 'SIGKILL'), graceMs);
        await done;
        clearTimeout(timer);
      }
      // Whatever the leader did, nothing of the group outlives it.
      releaseGroup(pid);
    },
  };
  child.on('exit', (code, signal) => {
    proc.exit = signal ?? `code ${code}`;
  });
  child.on('error', (err) => {
    proc.exit = err.message;
  });
  return proc;
}

/** Polls `probe` until it returns a value; fails early when `proc` exits, and after `timeoutMs`. */
export async function waitFor<T>(what: string, proc: Proc | undefined, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    if (proc?.exit !== undefined) throw new Error(`${what}: ${proc.name} exited (${proc.exit}) before it was ready; its log ends with:\n${proc.tail()}`);
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > until) throw new Error(`${what}: not ready within ${Math.round(timeoutMs / 1000)} s${last ? ` (${last})` : ''}${proc ? `; ${proc.name}'s log ends with:\n${proc.tail()}` : ''}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Runs a command to completion (stdout returned, and stderr after it with `stderr`); rejects with its output's end when it fails. */
export function run(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number; stderr?: boolean }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, timeout: options.timeoutMs, maxBuffer: 64 << 20, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${[cmd, ...args].join(' ').slice(0, 300)}: ${err.killed ? `killed after ${Math.round(options.timeoutMs / 1000)} s` : err.message.split('\n')[0]}\n${(stderr || stdout).slice(-1500)}`));
      else resolve(options.stderr ? stdout + stderr : stdout);
    });
  });
}

/** `n` distinct free ports on 127.0.0.1: all bound at once (so they differ), then released for the server. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  try {
    return await Promise.all(
      servers.map(
        (s) =>
          new Promise<number>((resolve, reject) => {
            s.once('error', reject);
            s.listen(0, '127.0.0.1', () => resolve((s.address() as { port: number }).port));
          }),
      ),
    );
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve()))));
  }
}

/** The environment a peer server gets: this one's, without variables meant for other programs' config. */
export function cleanEnv(extra: Record<string, string>, drop: RegExp): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!drop.test(k)) env[k] = v;
  return { ...env, ...extra };
}

// ---------------------------------------------------------------------------------------------------------
// /proc readings (Linux).

const SHELLS = new Set(['bash', 'sh', 'dash', 'busybox']);

function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return [stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), ...stat.slice(stat.lastIndexOf(')') + 2).split(' ')];
  } catch {
    return undefined;
  }
}

/**
 * The processes of a group that do the server's work: every member but shell wrappers (kc.sh is a bash script
 * that starts java as its child, or replaces itself with java). A script's name is its comm, so the test is on
 * the executable.
 */
export function serverPids(pgid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    // f[0] comm, f[1] state, f[2] ppid, f[3] pgrp.
    if (!f || Number(f[3]) !== pgid) continue;
    let exe: string;
    try {
      exe = basename(readlinkSync(`/proc/${entry}/exe`));
    } catch {
      continue;
    }
    if (!SHELLS.has(exe)) out.push(Number(entry));
  }
  return out.sort((a, b) => a - b);
}

/** Names of the processes, for the report (e.g. "java"). */
export function processName(pid: number): string | undefined {
  return statFields(pid)?.[0];
}

/** A field of /proc/<pid>/status in bytes (VmRSS, VmHWM), or undefined. */
export function statusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Sum of a status field over processes; undefined when any is unreadable. */
export function sumBytes(pids: readonly number[], field: 'VmRSS' | 'VmHWM'): number | undefined {
  let total = 0;
  for (const pid of pids) {
    const v = statusBytes(pid, field);
    if (v === undefined) return undefined;
    total += v;
  }
  return pids.length > 0 ? total : undefined;
}

/**
 * Resets the peak RSS (VmHWM) of the processes to their current RSS (`echo 5 > /proc/<pid>/clear_refs`, Linux
 * 4.0+), so the peak read afterwards is the peak of what came after. False when the kernel refuses.
 */
export function resetPeak(pids: readonly number[]): boolean {
  try {
    for (const pid of pids) writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return pids.length > 0;
  } catch {
    return false;
  }
}
