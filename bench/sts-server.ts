/**
 * STS under test: the real composition root (startSts) with its defaults (embedded SQLite, dev profile),
 * a fresh temporary data directory, 127.0.0.1:0 and a silent logger. Prints {"port", "dataDir"} once
 * listening; the dev profile writes the admin bearer token to <dataDir>/admin.token. The data directory is
 * removed on exit.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RunningSts, startSts } from '../src/app.js';
import { loadConfig } from '../src/config/load.js';
import { silentLogger } from '../src/log.js';
import { announce, stopOnParentExit } from './child.js';

const dataDir = mkdtempSync(join(tmpdir(), 'sts-bench-'));
const removeData = (): void => rmSync(dataDir, { recursive: true, force: true });
let sts: RunningSts;
try {
  const config = loadConfig({ env: {}, overrides: { 'server.address': '127.0.0.1:0', dataDir, 'server.shutdownGraceMs': 1000 } });
  sts = await startSts({ config, env: {}, logger: silentLogger });
} catch (err) {
  removeData();
  throw err;
}
const running = sts;
stopOnParentExit(async () => {
  try {
    await running.close();
  } finally {
    removeData();
  }
});
announce({ port: running.port, dataDir });
