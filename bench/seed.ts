/**
 * Bench-only: stores many user sessions at once for the scale part, straight through the store, because
 * LogonUser (an Argon2id hash, ~25 ms of a core each) would take hours for a million. The records are exactly what
 * STS writes: SessionStore.createUserSession over the same store (the running server's SQLite file in
 * embedded mode, the same Hazelcast cluster in cluster mode), for users that exist in the directory (the
 * fixture's seed users, with roles), with the policy's idle timeout and lifetime, security level 2
 * (password) like a LogonUser session.
 *
 * Writes a uniform sample of the sessions made to --out (JSON [{tokenId, uid}]: their token ids are the
 * credentials; the store keeps only their hashes) and prints one JSON line {count, ms}.
 *
 *   node --import tsx bench/seed.ts --fixture F --count N --sample K --out sample.json
 *        (--data-dir D | --cluster-members M --cluster-name C)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { clusterProtection } from '../src/app.js';
import { ClusterRejections } from '../src/cluster/rejections.js';
import { systemClock } from '../src/clock.js';
import { MasterKeyRing, parseMasterKeys } from '../src/crypto/master-key.js';
import { loadConfig } from '../src/config/load.js';
import { silentLogger } from '../src/log.js';
import { SECURITY_LEVEL, SessionStore } from '../src/session/sessions.js';
import { HazelcastStore } from '../src/store/hazelcast/hazelcast-store.js';
import { openDatabase } from '../src/store/sqlite/database.js';
import { SqliteEphemeralStore, SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { MAIN_APP, type SessionFixture, readFixture } from './fixture.js';

const BATCH = 5000;
const IN_FLIGHT = 256;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      fixture: { type: 'string' },
      count: { type: 'string' },
      sample: { type: 'string' },
      out: { type: 'string' },
      'data-dir': { type: 'string' },
      'cluster-members': { type: 'string' },
      'cluster-name': { type: 'string' },
    },
    strict: true,
  });
  const count = Number(values.count);
  const sampleSize = Number(values.sample ?? 10_000);
  if (!Number.isSafeInteger(count) || count < 1) throw new Error('--count: a positive whole number');
  if (!values.fixture || !values.out) throw new Error('--fixture and --out are required');
  const uids = readFixture(values.fixture).seedUids;
  if (uids.length === 0) throw new Error('the fixture has no seed users (setup --seed-users)');

  // The same policy as the server's defaults (the bench application sets no timeouts of its own).
  const config = loadConfig({ env: {}, overrides: { dataDir: values['data-dir'] ?? tmpdir() } });
  const maxLifetime = config['session.userTokenMaxLifetimeMs'];
  const idle = Math.min(config['session.userTokenIdleTimeoutMs'], maxLifetime);

  // Reservoir sample of the sessions made.
  const sample: SessionFixture[] = [];
  let seen = 0;
  const keep = (s: SessionFixture): void => {
    seen++;
    if (sample.length < sampleSize) sample.push(s);
    else {
      const j = Math.floor(Math.random() * seen);
      if (j < sampleSize) sample[j] = s;
    }
  };
  const one = async (sessions: SessionStore, i: number): Promise<void> => {
    const uid = uids[i % uids.length]!;
    const { id } = await sessions.createUserSession({ uid, applicationId: MAIN_APP, securityLevel: SECURITY_LEVEL.password, authMethod: 'password', idleTimeoutMs: idle }, maxLifetime);
    keep({ tokenId: id, uid });
  };

  const started = performance.now();
  if (values['data-dir']) {
    // Embedded: the server's own SQLite file (WAL lets it keep serving), through the same ephemeral store
    // class the server uses, on this process's own connection; one transaction per batch.
    const db = openDatabase(values['data-dir']);
    const sessions = new SessionStore(new SqliteEphemeralStore(db, systemClock), systemClock);
    try {
      for (let i = 0; i < count; ) {
        const end = Math.min(count, i + BATCH);
        db.exec('BEGIN IMMEDIATE');
        try {
          for (; i < end; i++) await one(sessions, i);
          db.exec('COMMIT');
        } catch (err) {
          db.exec('ROLLBACK');
          throw err;
        }
      }
    } finally {
      db.close();
    }
  } else if (values['cluster-members']) {
    // Cluster mode: the same IMap writes (set with the session's TTL) as a node makes, IN_FLIGHT at a time.
    const localDir = mkdtempSync(join(tmpdir(), 'sts-bench-seed-'));
    const db = openDatabase(localDir);
    const local = new SqliteStore(db, systemClock);
    try {
      // Sessions are sealed under the cluster data key like a node's: the deployment's master key is needed.
      if (!process.env.STS_MASTER_KEY) throw new Error('cluster mode: STS_MASTER_KEY (the deployment\'s master key) is required to seal sessions');
      const master = new MasterKeyRing(parseMasterKeys(process.env.STS_MASTER_KEY, 'STS_MASTER_KEY'));
      const hz = await HazelcastStore.connect(
        { clusterName: values['cluster-name'] ?? 'sts', members: values['cluster-members'].split(','), connectTimeoutMs: 30_000, invocationTimeoutMs: 30_000 },
        local.durable,
        systemClock,
        silentLogger,
        () => {},
        clusterProtection(master, db, new ClusterRejections(silentLogger), { ...config, 'cluster.name': values['cluster-name'] ?? 'sts' }),
      );
      try {
        const sessions = new SessionStore(hz.ephemeral, systemClock);
        let next = 0;
        const worker = async (): Promise<void> => {
          while (next < count) await one(sessions, next++);
        };
        await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, count) }, worker));
      } finally {
        await hz.close();
      }
    } finally {
      await local.close();
      rmSync(localDir, { recursive: true, force: true });
    }
  } else {
    throw new Error('give --data-dir (embedded) or --cluster-members (cluster mode)');
  }
  const ms = Math.round(performance.now() - started);
  writeFileSync(values.out, JSON.stringify(sample));
  process.stdout.write(JSON.stringify({ count, ms }) + '\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`seed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
