/**
 * The --peers section of the bench report (bench/results/latest.md): how the servers were run, one row per
 * server, work and concurrency, the side-by-side summary, and issue 15's goals against this run. The same
 * section also goes, with the run's header, to bench/results/peers.md: the last comparison stays there when
 * later runs without --peers replace latest.md.
 */
import { writeFileSync } from 'node:fs';
import type { PeerResult, PeerRow, PeersResult } from './run-peers.js';
import type { Work } from './server.js';

const WORK_LABEL: Record<Work, string> = {
  introspection: 'token introspection',
  'client-credentials': 'client credentials',
  password: 'password logon',
};

const mib = (b: number | undefined): string => (b === undefined ? 'n/a' : String(Math.round(b / 1048576)));
const rate = (x: number): string => (x >= 100 ? String(Math.round(x)) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const ms = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? 'n/a' : x >= 100 ? String(Math.round(x)) : x.toFixed(x >= 10 ? 1 : 2));
const cores = (x: number | null | undefined): string => (x === null || x === undefined ? 'n/a' : x.toFixed(2));

function row(rows: readonly PeerRow[], work: Work, c: number): PeerRow | undefined {
  return rows.find((r) => r.work === work && r.concurrency === c);
}

/** What a server's cell says when it has no figure for a work. */
function missing(s: PeerResult, work: Work, r: PeerRow | undefined): string {
  if (s.status !== 'measured') return s.status;
  if (s.cannot[work]) return s.cannot[work].split(':')[0]!;
  if (r?.failed) return 'FAILED';
  return 'n/a';
}

function detailTable(p: PeersResult): string[] {
  const lines = [
    '| work | server | concurrency | req/s | p50 ms | p99 ms | errors | server cores | server CPU ms/call | peak RSS MiB | load cores | other cores |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const work of Object.keys(WORK_LABEL) as Work[])
    for (const s of p.servers)
      for (const c of p.levels) {
        const r = row(s.rows, work, c);
        if (!r?.result) {
          if (s.status === 'measured' && !s.cannot[work]) lines.push(`| ${WORK_LABEL[work]} | ${s.name} | ${c} | ${missing(s, work, r)} | | | | | | | | |`);
          continue;
        }
        const x = r.result;
        lines.push(
          `| ${WORK_LABEL[work]} | ${s.name} | ${c} | ${rate(x.rps)} | ${ms(x.p50Ms)} | ${ms(x.p99Ms)} | ${x.errors} | ${cores(r.cpu?.server)} | ${ms(r.serverCpuMsPerCall)} | ${mib(r.peakRssBytes)}${r.peakRssScope === 'since start' ? ' (since start)' : ''} | ${cores(r.cpu?.load)} | ${cores(r.cpu?.other)} |`,
        );
      }
  return lines;
}

/** The issue's table: req/s at each level and CPU per call, side by side, and RSS. */
function summaryTable(p: PeersResult): string[] {
  const lines = [`| work | ${p.servers.map((s) => s.name).join(' | ')} |`, `| --- | ${p.servers.map(() => '---:').join(' | ')} |`];
  for (const work of Object.keys(WORK_LABEL) as Work[]) {
    const cells = p.servers.map((s) => {
      const rs = p.levels.map((c) => row(s.rows, work, c));
      if (!rs.some((r) => r?.result)) return missing(s, work, rs.find(Boolean));
      const rates = rs.map((r) => (r?.result ? `${rate(r.result.rps)}/s` : 'FAILED')).join(' / ');
      const cpu = rs.map((r) => r?.serverCpuMsPerCall).filter((x): x is number => x !== undefined);
      return `${rates}${cpu.length > 0 ? ` (${cpu.map(ms).join(' / ')} ms CPU)` : ''}`;
    });
    lines.push(`| ${WORK_LABEL[work]} (${p.levels.join(' / ')} in flight) | ${cells.join(' | ')} |`);
  }
  const rss = p.servers.map((s) => {
    if (s.status !== 'measured') return s.status;
    const peaks = s.rows.map((r) => r.peakRssBytes).filter((x): x is number => x !== undefined);
    return `${mib(s.idleRssBytes)} / ${peaks.length > 0 ? mib(Math.max(...peaks)) : 'n/a'} MiB`;
  });
  lines.push(`| idle RSS / peak RSS under load | ${rss.join(' | ')} |`);
  return lines;
}

interface Goal {
  text: string;
  mine: Work;
  peer: string;
  theirs: Work;
  factor: number;
}

const GOALS: Goal[] = [
  { text: 'LogonApplication at least 10x Keycloak\'s client-credentials rate', mine: 'client-credentials', peer: 'Keycloak', theirs: 'client-credentials', factor: 10 },
  { text: 'LogonUser at least 5x Keycloak\'s password-grant rate', mine: 'password', peer: 'Keycloak', theirs: 'password', factor: 5 },
  { text: 'ValidateUserToken at least 3x Hydra\'s introspection', mine: 'introspection', peer: 'Hydra', theirs: 'introspection', factor: 3 },
];
/** Issue 15: peak RSS under the logon load at most 256 MiB. */
const RSS_GOAL_BYTES = 256 * 1048576;

function goalLines(p: PeersResult): string[] {
  const mine = p.servers.find((s) => s.name === 'STS');
  const out: string[] = [];
  for (const g of GOALS) {
    const peer = p.servers.find((s) => s.name === g.peer);
    if (!mine || mine.status !== 'measured' || !peer || peer.status !== 'measured') {
      out.push(`- ${g.text}: not measured (${!mine || mine.status !== 'measured' ? `STS ${mine?.status ?? 'missing'}` : `${g.peer} ${peer?.status ?? 'missing'}`}).`);
      continue;
    }
    const ratios = p.levels.map((c) => {
      const a = row(mine.rows, g.mine, c);
      const b = row(peer.rows, g.theirs, c);
      const ratio = a?.result && b?.result && b.result.rps > 0 ? a.result.rps / b.result.rps : NaN;
      // Calls per core-second, theirs over ours: the rate ratio on a machine where each had a whole core.
      const cpuRatio = a?.serverCpuMsPerCall && b?.serverCpuMsPerCall ? b.serverCpuMsPerCall / a.serverCpuMsPerCall : NaN;
      return { c, ratio, cpuRatio, a: a?.result?.rps, b: b?.result?.rps };
    });
    const known = ratios.filter((r) => Number.isFinite(r.ratio));
    const worst = known.length > 0 ? Math.min(...known.map((r) => r.ratio)) : NaN;
    const verdict = known.length === 0 ? 'not measured' : worst >= g.factor ? 'met' : worst > 0 ? `NOT met (gap: ${(g.factor / worst).toFixed(1)}x)` : 'NOT met (no STS call completed in the window)';
    const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}x` : 'n/a');
    out.push(
      `- ${g.text}: ${ratios.map((r) => `${x(r.ratio)} at ${r.c} in flight (${r.a === undefined ? 'n/a' : rate(r.a)} vs ${r.b === undefined ? 'n/a' : rate(r.b)}/s; per core-second of server CPU ${x(r.cpuRatio)})`).join(', ')}: **${verdict}**.`,
    );
  }
  if (mine?.status === 'measured') {
    const logon = mine.rows.filter((r) => (r.work === 'password' || r.work === 'client-credentials') && r.peakRssBytes !== undefined);
    const peak = logon.length > 0 ? Math.max(...logon.map((r) => r.peakRssBytes!)) : undefined;
    out.push(`- STS peak RSS under the logon load at most 256 MiB: ${peak === undefined ? 'not measured' : `${mib(peak)} MiB: **${peak <= RSS_GOAL_BYTES ? 'met' : 'NOT met'}**`}.`);
  }
  return out;
}

export function peersMarkdown(p: PeersResult): string[] {
  const pin = p.pinned
    ? `Each server ran alone, pinned to core ${p.serverCore} (taskset, every thread and child process of it), its load generator pinned to core ${p.loadCore}`
    : 'taskset or a second core was missing: servers and load generators ran unpinned';
  const dur = p.durationMs;
  const out = [
    '## Peers side by side (--peers, issue 15)',
    '',
    `${pin}. One load tool per protocol, the same closed loop in both: bench/load.ts (one grpc-js client, one HTTP/2 connection) for STS, bench/http-load.ts (one keep-alive node:http agent, one connection per call in flight) for Hydra and Keycloak. ` +
      `Every server got the same concurrency (${p.levels.join(' and ')} calls in flight), the same ${p.warmupMs / 1000} s warm-up and the same measured window: ${dur.introspection / 1000} s for introspection and client credentials, ${dur.password / 1000} s for password logons, whose warm-up also lasts until every call of the first round has returned (so the latencies are those of a full queue, about concurrency / rate, not the time since the start). ` +
      `Before its rows, each server got each fast work for ${p.primeMs / 1000} s at ${p.levels[0]} in flight, unmeasured (JIT compilation and caches), and every row started once the server had finished the calls the previous row left in flight. Password logons cycle over the same ${p.passwordUsers} users on every server (enough that no username has two logons in flight: STS counts logons under way against the username's throttle). ` +
      'Server CPU per call: the server\'s processes\' CPU time (/proc/<pid>/stat) in the window over the calls completed in it; on a shared machine it is the steadier figure, and "per core-second of server CPU" compares the servers by it. Peak RSS: VmHWM of the server\'s processes, reset at the start of the window (/proc/<pid>/clear_refs), read at its end. "other cores": the rest of the machine (other users of this shared machine), which should be near 0.',
    '',
  ];
  for (const s of p.servers) {
    if (s.status === 'measured') {
      out.push(`- **${s.name}** ${s.version}: started and set up in ${s.startS} s; measured processes: ${s.processes?.join(', ') ?? 'n/a'}. ${s.notes.join(' ')}`);
      for (const [work, why] of Object.entries(s.cannot)) out.push(`  - ${WORK_LABEL[work as Work]}: not measured: ${why}.`);
    } else out.push(`- **${s.name}** ${s.version}: **${s.status === 'not fetched' ? 'could not be fetched' : 'could not be started'}**, so it is not in the tables: ${(s.reason ?? '').split('\n')[0]}`);
  }
  out.push('', '### Side by side', '', ...summaryTable(p), '', '### Issue 15\'s goals in this run', '', ...goalLines(p), '', '### Every row', '', ...detailTable(p), '');
  return out;
}

/** What the report header needs from the run (bench/run.ts's `meta`). */
export interface RunMeta {
  date: string;
  commit?: string | undefined;
  node: string;
  platform: string;
  cpus: number;
  cpuModel?: string | undefined;
  backgroundCores: number;
}

/** bench/results/peers.md: the --peers section on its own, with the run's header. */
export function writePeersReport(file: string, meta: RunMeta, p: PeersResult, resultsJson: string): void {
  const head = [
    `# STS beside Hydra and Keycloak, ${meta.date}`,
    '',
    `\`npm run bench -- --peers\` (README, Benchmarks). Node ${meta.node}, ${meta.platform}, ${meta.cpus} x ${meta.cpuModel ?? 'unknown CPU'}, commit ${meta.commit ?? 'unknown'} (the working tree may differ); ${meta.backgroundCores} cores busy with other processes before the run. Every figure is in ${resultsJson} (\`peers\`).`,
    '',
  ];
  const body = peersMarkdown(p);
  writeFileSync(file, [...head, ...body.slice(2)].join('\n'));
}
