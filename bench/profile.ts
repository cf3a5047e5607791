/**
 * Summary of a V8 CPU profile (.cpuprofile, as written by node --cpu-prof or the inspector's Profiler):
 * self time by function and by where the code lives (STS, grpc-js, better-sqlite3, node internals, GC...).
 *
 *   node --import tsx bench/profile.ts <file.cpuprofile> [top]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  /** Sampled wall time of the main thread, ms. */
  totalMs: number;
  /** Share of samples where the thread was idle (waiting in the event loop). */
  idleShare: number;
  /** Self time by area, as shares of the non-idle samples, largest first. */
  areas: { area: string; share: number }[];
  /** Functions with the most self time, as shares of the non-idle samples. */
  top: { fn: string; where: string; share: number }[];
}

/** Where a function lives, coarsely. */
export function areaOf(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'garbage collector';
  if (fn === '(program)') return 'V8/native (program)';
  if (fn === '(idle)') return 'idle';
  if (url === '') return 'native (no script)';
  if (url.includes('/node_modules/@grpc/')) return 'grpc-js';
  if (url.includes('/node_modules/better-sqlite3/')) return 'better-sqlite3 (JS side)';
  if (url.includes('/node_modules/@bufbuild/protobuf/')) return 'protobuf encoding (@bufbuild/protobuf)';
  if (url.includes('/node_modules/jose/')) return 'jose';
  if (url.includes('/node_modules/hazelcast-client/')) return 'hazelcast-client';
  if (url.includes('/node_modules/')) return `other packages (${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ?? '?'})`;
  if (url.includes('/src/gen/')) return 'generated protobuf code (src/gen)';
  if (url.includes('/src/')) return 'STS (src/)';
  if (url.startsWith('node:')) return 'node internals';
  return 'other';
}

const short = (url: string): string => url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules\/|src\/)/, '$1');

export function summarizeProfile(file: string, topN = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Self time per node from the sample timeline (hitCount alone ignores the varying sample intervals).
  const self = new Map<number, number>();
  if (p.samples && p.timeDeltas) {
    for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0));
  } else {
    const total = p.endTime - p.startTime;
    const hits = p.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0) || 1;
    for (const n of p.nodes) self.set(n.id, ((n.hitCount ?? 0) * total) / hits);
  }
  let totalUs = 0;
  let idleUs = 0;
  const areas = new Map<string, number>();
  const fns = new Map<string, { fn: string; where: string; us: number }>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    totalUs += us;
    const { functionName, url, lineNumber } = n.callFrame;
    const fn = functionName || '(anonymous)';
    const area = areaOf(url, fn);
    if (area === 'idle') {
      idleUs += us;
      continue;
    }
    areas.set(area, (areas.get(area) ?? 0) + us);
    const where = url ? `${short(url)}:${lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const e = fns.get(key) ?? { fn, where, us: 0 };
    e.us += us;
    fns.set(key, e);
  }
  const busy = Math.max(1, totalUs - idleUs);
  const r3 = (x: number): number => Math.round(x * 1000) / 1000;
  return {
    totalMs: Math.round(totalUs / 1000),
    idleShare: r3(idleUs / Math.max(1, totalUs)),
    areas: [...areas].sort((a, b) => b[1] - a[1]).map(([area, us]) => ({ area, share: r3(us / busy) })),
    top: [...fns.values()].sort((a, b) => b.us - a.us).slice(0, topN).map((e) => ({ fn: e.fn, where: e.where, share: r3(e.us / busy) })),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const s = summarizeProfile(process.argv[2]!, Number(process.argv[3] ?? 25));
  process.stdout.write(`sampled ${s.totalMs} ms, idle ${(s.idleShare * 100).toFixed(1)}%\n\nby area (share of busy time):\n`);
  for (const a of s.areas) process.stdout.write(`  ${(a.share * 100).toFixed(1).padStart(5)}%  ${a.area}\n`);
  process.stdout.write('\ntop functions by self time:\n');
  for (const t of s.top) process.stdout.write(`  ${(t.share * 100).toFixed(1).padStart(5)}%  ${t.fn}  ${t.where}\n`);
}
