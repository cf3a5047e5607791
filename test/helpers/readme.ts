/**
 * The README's runnable shell blocks (```sh runnable, or ```sh runnable=SESSION), as the install test runs
 * them: every block of one session, in document order, as one bash script.
 *
 * A block whose lines start with "$ " is a transcript: its commands are those lines (and the lines they
 * continue with a trailing backslash); the output shown between them is for the reader and is not run. Any
 * other block runs as it stands. The only change made to the text is the ports: each well-known port of the
 * README (50051, 8080, ...) becomes a free one, so the test never takes a fixed port on a shared machine.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface RunnableBlock {
  session: string;
  /** 1-based line of the opening fence, for messages. */
  line: number;
  /** The commands to run. */
  script: string;
}

const FENCE = /^```sh runnable(?:=([A-Za-z0-9_-]+))?\s*$/;

export function runnableBlocks(readme: string): RunnableBlock[] {
  const lines = readme.split('\n');
  const blocks: RunnableBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = FENCE.exec(lines[i]!);
    if (!m) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== '```'; i++) body.push(lines[i]!);
    if (i >= lines.length) throw new Error(`README line ${start + 1}: runnable block is not closed`);
    blocks.push({ session: m[1] ?? 'main', line: start + 1, script: commandsOf(body) });
  }
  return blocks;
}

function commandsOf(body: string[]): string {
  if (!body.some((l) => l.startsWith('$ '))) return body.join('\n');
  const out: string[] = [];
  let continuing = false;
  for (const l of body) {
    if (l.startsWith('$ ') || continuing) {
      out.push(continuing ? l : l.slice(2));
      continuing = l.endsWith('\\');
    }
  }
  return out.join('\n');
}

/** The well-known ports the README uses; each is replaced by a free port when run. */
export const README_PORTS = [50051, 50052, 8080, 8081, 5701, 5702] as const;

export function withPorts(script: string, ports: ReadonlyMap<number, number>): string {
  return script.replace(new RegExp(`\\b(${[...ports.keys()].join('|')})\\b`, 'g'), (p) => String(ports.get(Number(p))));
}

/** The session's script: each block preceded by an echo of where it comes from, so a failure names it. */
export function sessionScript(readmePath: string, session: string, ports: ReadonlyMap<number, number>): string {
  const blocks = runnableBlocks(readFileSync(readmePath, 'utf8')).filter((b) => b.session === session);
  if (blocks.length === 0) throw new Error(`README has no runnable block of session ${session}`);
  return [
    'set -euo pipefail',
    ...blocks.map((b) => `echo "== README.md line ${b.line}" >&2\n${withPorts(b.script, ports)}`),
  ].join('\n');
}

export const README = (root: string) => join(root, 'README.md');
