/**
 * Writes bench/results/peers.md again from a saved run (bench/results/<timestamp>.json with a `peers` part),
 * for example after the report's layout changed:
 *
 *   npx tsx bench/peers/render.ts bench/results/<timestamp>.json
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { type RunMeta, writePeersReport } from './report.js';
import type { PeersResult } from './run-peers.js';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: npx tsx bench/peers/render.ts bench/results/<timestamp>.json\n');
  process.exit(64);
}
const run = JSON.parse(readFileSync(file, 'utf8')) as { meta?: RunMeta; peers?: PeersResult };
if (!run.meta || !run.peers) {
  process.stderr.write(`${file}: no --peers part in this run\n`);
  process.exit(65);
}
const out = join(dirname(file), 'peers.md');
writePeersReport(out, run.meta, run.peers, basename(file));
process.stdout.write(`${out}\n`);
