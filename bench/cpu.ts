/**
 * CPU accounting for a shared machine: whole-machine busy time (os.cpus), one process's CPU time (Linux
 * /proc), and waiting until other processes leave the CPU idle. Every benchmark row records how busy the
 * rest of the machine was while it ran, so a disturbed row is visible (and, with --wait-idle, retried).
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';

/** Other processes using fewer cores than this count as "idle". */
export const IDLE_CORES = 0.25;

/** Busy CPU time of the whole machine so far, in ms. */
export function machineBusyMs(): number {
  return cpus().reduce((sum, c) => sum + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0);
}

/** CPU time of a process so far, in ms (Linux /proc; undefined elsewhere). Assumes USER_HZ = 100. */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }
  if (process.platform !== 'linux') return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

export interface CpuSnapshot {
  at: number;
  machine: number;
  /** CPU ms of each watched process, by pid. */
  procs: Map<number, number | undefined>;
}

export function snapshot(pids: readonly (number | undefined)[] = []): CpuSnapshot {
  const procs = new Map<number, number | undefined>();
  for (const pid of pids) if (pid !== undefined) procs.set(pid, processCpuMs(pid));
  return { at: performance.now(), machine: machineBusyMs(), procs };
}

export const round3 = (x: number): number => Math.round(x * 1000) / 1000;

/** Cores used between two snapshots: by the machine, and by each watched process (null when unknown). */
export function coresBetween(a: CpuSnapshot, b: CpuSnapshot): { machine: number; procs: Map<number, number | null> } {
  const ms = b.at - a.at;
  const procs = new Map<number, number | null>();
  for (const [pid, before] of a.procs) {
    const after = b.procs.get(pid);
    procs.set(pid, before === undefined || after === undefined ? null : round3((after - before) / ms));
  }
  return { machine: round3((b.machine - a.machine) / ms), procs };
}

/** Cores busy on the machine over `ms`, excluding the watched processes. */
export async function backgroundCores(ms = 1000, exclude: readonly (number | undefined)[] = []): Promise<number> {
  const a = snapshot(exclude);
  await new Promise((r) => setTimeout(r, ms));
  const { machine, procs } = coresBetween(a, snapshot(exclude));
  let own = 0;
  for (const v of procs.values()) own += v ?? 0;
  return round3(Math.max(0, machine - own));
}

/** Waits, at most `maxMs`, until other processes use fewer than IDLE_CORES. Returns the last reading. */
export async function waitIdle(maxMs: number, log: (line: string) => void, exclude: readonly (number | undefined)[] = []): Promise<number> {
  const until = performance.now() + maxMs;
  for (;;) {
    const bg = await backgroundCores(1000, exclude);
    if (bg < IDLE_CORES) return bg;
    if (performance.now() >= until) {
      log(`machine still busy (${bg} cores used by other processes); measuring anyway`);
      return bg;
    }
    log(`waiting for the machine to be idle (${bg} cores used by other processes)`);
  }
}
