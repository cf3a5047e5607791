/**
 * `sts cluster init --dir DIR`: the material every node of one cluster must share, made once.
 *
 * - master.key   the master key ring (mode 0600). Every node needs the same ring: it seals keys and user
 *                secrets, and the cluster data key that seals everything in the grid is derived from it, so a
 *                node with another ring can open nothing the others wrote (and refuses to start).
 * - admin.keys   the admin key hashes (auth.adminKeyFile, mode 0600): the same on every node, so an operator's
 *                key works on whichever node the load balancer picks.
 * - admin.token  the admin key itself (mode 0600), for operators (STS_ADMIN_TOKEN); nodes do not need it.
 * - sts.yaml     a config skeleton that points at the two shared files and turns cluster mode on.
 *
 * Nothing is overwritten: a second run on the same directory refuses, so a running cluster's key cannot be
 * replaced by accident.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { hashAdminKey, newAdminKey } from '../auth/caller.js';
import { parseAddress } from '../config/load.js';
import { newMasterKey, writeMasterKeyFile } from '../crypto/master-key.js';
import { StartupError } from '../errors.js';

export interface ClusterInitOptions {
  dir: string;
  /** Hazelcast members, host:port comma separated. */
  members: string;
  /** Hazelcast cluster name. */
  name: string;
}

export interface ClusterInitResult {
  masterKeyFile: string;
  adminKeyFile: string;
  adminTokenFile: string;
  configFile: string;
  masterKeyId: string;
}

function writeNew(path: string, text: string, mode: number): void {
  const fd = openSync(path, 'wx', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function clusterInit(o: ClusterInitOptions): ClusterInitResult {
  const members = o.members.split(',').map((m) => m.trim());
  for (const m of members) parseAddress(m, '--members');
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(o.name)) throw new StartupError('config_invalid', `--name: "${o.name}" is not 1-64 characters of A-Z a-z 0-9 _ . -`);
  const dir = resolve(o.dir);
  const files = {
    masterKeyFile: join(dir, 'master.key'),
    adminKeyFile: join(dir, 'admin.keys'),
    adminTokenFile: join(dir, 'admin.token'),
    configFile: join(dir, 'sts.yaml'),
  };
  const existing = Object.values(files).filter((f) => existsSync(f));
  if (existing.length > 0) throw new StartupError('data_dir_unusable', `--dir ${o.dir}: ${existing.join(', ')} exist(s) already; cluster init never overwrites shared material (choose a new directory)`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new StartupError('data_dir_unusable', `--dir ${o.dir}: cannot create it (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  const master = newMasterKey();
  const adminKey = newAdminKey();
  writeMasterKeyFile(files.masterKeyFile, [master]);
  writeNew(files.adminKeyFile, `ops:${hashAdminKey(adminKey)}\n`, 0o600);
  writeNew(files.adminTokenFile, `${adminKey}\n`, 0o600);
  writeNew(
    files.configFile,
    [
      '# STS cluster configuration, written by `sts cluster init`. Every node runs with this file and the same',
      '# master.key and admin.keys (copy all three to each node, at these paths); each node has its own data',
      '# directory and addresses (sts serve --data-dir, --address, --http-address). admin.token is for operators.',
      '# Production: profile prod, tls.certFile and tls.keyFile, http.publicUrl (README: Configuration).',
      'profile: dev',
      'masterKey:',
      `  file: ${JSON.stringify(files.masterKeyFile)}`,
      'auth:',
      `  adminKeyFile: ${JSON.stringify(files.adminKeyFile)}`,
      'cluster:',
      '  enabled: true',
      `  name: ${JSON.stringify(o.name)}`,
      '  # Every Hazelcast member, host:port (the members\' own list must match: scripts/hazelcast.sh start PORT MEMBERS).',
      `  members: ${JSON.stringify(members.join(','))}`,
      '  # Nodes may start before the members are up: wait for them this long.',
      '  connectTimeoutMs: 120000',
      '',
    ].join('\n'),
    0o600,
  );
  return { ...files, masterKeyId: master.id };
}
