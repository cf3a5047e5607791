/**
 * STS under test: the real composition root (startSts) with its defaults (embedded SQLite, dev profile),
 * a fresh temporary data directory, 127.0.0.1:0 and a silent logger. Prints {"port", "dataDir", "pid"} once
 * listening; the dev profile writes the admin bearer token to <dataDir>/admin.token. The data directory is
 * removed on exit.
 *
 * One optional JSON argument {"clusterMembers", "clusterName", "adminKeyFile", "overrides"}; the master key
 * comes from STS_MASTER_KEY (every node of a deployment shares it, and the admin key file).
 *
 * Commands from the parent (bench/child.ts): "mem" (memory after a full GC when run with --expose-gc, and
 * the SQLite file sizes in embedded mode), "profile-start" and "profile-stop" {file} (the V8 CPU profiler,
 * the same one as node --cpu-prof, around one measured window only).
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RunningSts, startSts } from '../src/app.js';
import type { OptionName } from '../src/config/defaults.js';
import { loadConfig } from '../src/config/load.js';
import { silentLogger } from '../src/log.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { announce, stopOnParentExit } from './child.js';

interface ClusterOptions {
  clusterMembers?: string;
  clusterName?: string;
  adminKeyFile?: string;
  /** Configuration options to set (src/config/defaults.ts names), for example a cache turned off. */
  overrides?: Partial<Record<OptionName, string | number | boolean>>;
}

const options = (process.argv[2] ? JSON.parse(process.argv[2]) : {}) as ClusterOptions;
const dataDir = mkdtempSync(join(tmpdir(), 'sts-bench-'));
const removeData = (): void => rmSync(dataDir, { recursive: true, force: true });
let sts: RunningSts;
try {
  const overrides: Partial<Record<OptionName, string | number | boolean>> = { ...options.overrides, 'server.address': '127.0.0.1:0', 'http.address': '', dataDir, 'server.shutdownGraceMs': 1000 };
  if (options.clusterMembers) {
    overrides['cluster.enabled'] = true;
    overrides['cluster.members'] = options.clusterMembers;
    overrides['cluster.name'] = options.clusterName ?? 'sts';
  }
  if (options.adminKeyFile) overrides['auth.adminKeyFile'] = options.adminKeyFile;
  const config = loadConfig({ env: {}, overrides });
  const env = process.env.STS_MASTER_KEY ? { STS_MASTER_KEY: process.env.STS_MASTER_KEY } : {};
  sts = await startSts({ config, env, logger: silentLogger });
} catch (err) {
  removeData();
  throw err;
}
const running = sts;

const size = (path: string): number => {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
};

let profiler: Session | undefined;

async function command(cmd: string, arg: unknown): Promise<unknown> {
  switch (cmd) {
    case 'mem': {
      const gc = (globalThis as { gc?: () => void }).gc;
      if (gc) {
        gc();
        gc();
      }
      let db: { dbBytes: number; walBytes: number } | undefined;
      if (running.store instanceof SqliteStore) {
        // Everything committed moves into the main file, so its size is the store's size.
        running.store.db.pragma('wal_checkpoint(TRUNCATE)');
        db = { dbBytes: size(join(dataDir, 'sts.db')), walBytes: size(join(dataDir, 'sts.db-wal')) };
      }
      return { ...process.memoryUsage(), gcForced: Boolean(gc), ...db };
    }
    case 'profile-start': {
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
      await profiler.post('Profiler.start');
      return {};
    }
    case 'profile-stop': {
      if (!profiler) throw new Error('no profile running');
      const { profile } = await profiler.post('Profiler.stop');
      profiler.disconnect();
      profiler = undefined;
      writeFileSync((arg as { file: string }).file, JSON.stringify(profile));
      return {};
    }
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

stopOnParentExit(
  async () => {
    try {
      await running.close();
    } finally {
      removeData();
    }
  },
  5_000,
  command,
);
announce({ port: running.port, dataDir, pid: process.pid });
