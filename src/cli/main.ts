#!/usr/bin/env node
/**
 * The `sts` command line: `sts serve`, `sts config`, `sts admin ...`, `sts cluster init`, `sts migrate`,
 * `sts backup verify`, `sts restore`, `sts --help`, `sts --version`.
 * Options may stand anywhere on the line (src/cli/args.ts). Each command loads only what it needs: an admin
 * command never loads the server, and `sts serve` starts tracing (when OTEL_* asks for it) before the gRPC
 * library is loaded. Errors print one line naming what to fix and exit with a sysexits(3) code; no stack traces.
 */
import type { OptionName } from '../config/defaults.js';
import { StartupError, StsError } from '../errors.js';
import { AdminConnectError, UsageError, type Values, need, parseCommandLine, str } from './args.js';
import { ADMIN_COMMANDS, ADMIN_HELP, type AdminCommand, HELP, TOP_COMMANDS } from './commands.js';
import { STS_VERSION } from '../version.js';

const COMMANDS = [...TOP_COMMANDS, ...ADMIN_COMMANDS];

async function serve(values: Values): Promise<void> {
  const overrides: Partial<Record<OptionName, string>> = {};
  const flag = (name: string, option: OptionName) => {
    const v = str(values, name);
    if (v !== undefined) overrides[option] = v;
  };
  flag('address', 'server.address');
  flag('http-address', 'http.address');
  flag('metrics-address', 'metrics.address');
  flag('data-dir', 'dataDir');
  flag('profile', 'profile');
  flag('members', 'cluster.members');
  if (values.cluster === true) overrides['cluster.enabled'] = 'true';
  const { loadConfig } = await import('../config/load.js');
  const { createLogger } = await import('../log.js');
  const config = loadConfig({ file: str(values, 'config'), overrides });
  const logger = createLogger(config['log.level']);
  const { startTracing } = await import('../server/tracing.js');
  const tracing = await startTracing({ logger });
  const { startSts } = await import('../app.js');

  // Handlers go in before the server starts: a signal during start-up must still drain and exit cleanly.
  const running: { sts?: Awaited<ReturnType<typeof startSts>> } = {};
  let pending: NodeJS.Signals | undefined;
  let signals = 0;
  const stop = (signal: NodeJS.Signals): void => {
    signals += 1;
    if (signals > 1) {
      logger.warn('second signal: exiting now', { signal });
      process.exit(130);
    }
    const sts = running.sts;
    if (!sts) {
      pending = signal;
      return;
    }
    logger.info('shutting down', { signal, graceMs: config['server.shutdownGraceMs'] });
    sts
      .close()
      .then(() => tracing?.shutdown())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error('shutdown failed', { err });
          process.exit(70);
        },
      );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  running.sts = await startSts({ config, logger });
  if (pending) {
    signals -= 1;
    stop(pending);
  }
}

async function showConfig(values: Values): Promise<void> {
  const { OPTIONS, envName, optionsMarkdown } = await import('../config/defaults.js');
  if (values.markdown) {
    process.stdout.write(optionsMarkdown() + '\n');
    return;
  }
  const { loadConfigWithSources } = await import('../config/load.js');
  const { config, sources } = loadConfigWithSources({ file: str(values, 'config') });
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    const spec = OPTIONS[name] as { secret?: boolean };
    const value = spec.secret && config[name] !== '' ? '(hidden)' : JSON.stringify(config[name]);
    process.stdout.write(`${name} = ${value}    (${values.sources ? sources[name] : envName(name)})\n`);
  }
}

function out(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** The configured master keys (masterKey.file or STS_MASTER_KEY), or undefined; never generates one. */
async function configuredMaster(values: Values, file?: string) {
  const { loadMasterKeyRing } = await import('../crypto/master-key.js');
  if (file) return loadMasterKeyRing({ file, env: undefined, dataDir: '', profile: 'prod' });
  const { loadConfig } = await import('../config/load.js');
  const config = loadConfig({ file: str(values, 'config') });
  if (!config['masterKey.file'] && !process.env.STS_MASTER_KEY) return undefined;
  return loadMasterKeyRing({ file: config['masterKey.file'], env: process.env.STS_MASTER_KEY, dataDir: '', profile: 'prod' });
}

async function migrateCommand(values: Values): Promise<void> {
  const { loadConfig } = await import('../config/load.js');
  const dataDir = str(values, 'data-dir');
  const config = loadConfig({ file: str(values, 'config'), overrides: dataDir ? { dataDir } : {} });
  const db = await import('../store/sqlite/database.js');
  const before = db.inspectSchema(config.dataDir);
  const list = before.pending.map((m) => ({ version: m.version, description: m.description }));
  if (values['dry-run']) {
    return out({ database: before.path, exists: before.exists, schemaVersion: before.version, latest: db.SCHEMA_VERSION, pending: list });
  }
  // Not while a server runs on the directory: the server migrates at its own start.
  const lock = db.lockDataDir(config.dataDir);
  try {
    db.openDatabase(config.dataDir).close();
  } finally {
    lock.release();
  }
  out({ database: before.path, schemaVersion: db.SCHEMA_VERSION, applied: list });
}

export async function main(argv: string[]): Promise<void> {
  const { command, values, args, words } = parseCommandLine(argv, COMMANDS);
  if (values.version) {
    process.stdout.write(`sts ${STS_VERSION}\n`);
    return;
  }
  const isAdmin = (command?.path[0] ?? words[0]) === 'admin';
  if (values.help || !command) {
    if (!command && words.length > 0 && !(words.length === 1 && (words[0] === 'help' || words[0] === 'admin'))) {
      throw new UsageError(isAdmin ? `unknown admin command "${words.slice(1).join(' ')}"; see \`sts admin --help\`` : `unknown command "${words.join(' ')}"; see \`sts --help\``);
    }
    process.stdout.write(isAdmin ? ADMIN_HELP : HELP);
    return;
  }
  if (isAdmin) {
    const { admin } = await import('./admin.js');
    return admin(command as AdminCommand, values, args);
  }
  switch (command.path.join(' ')) {
    case 'serve':
      return serve(values);
    case 'config':
      return showConfig(values);
    case 'migrate':
      return migrateCommand(values);
    case 'cluster init': {
      const { clusterInit } = await import('./cluster-init.js');
      return out(clusterInit({ dir: need(values, 'dir'), members: str(values, 'members') ?? '127.0.0.1:5701', name: str(values, 'name') ?? 'sts' }));
    }
    case 'backup verify': {
      const { inspectBackup } = await import('../store/sqlite/backup.js');
      return out(await inspectBackup(args[0]!, await configuredMaster(values, str(values, 'master-key-file'))));
    }
    case 'restore': {
      const { restoreBackup } = await import('../store/sqlite/backup.js');
      const master = await configuredMaster(values);
      const summary = await restoreBackup(args[0]!, need(values, 'data-dir'), master);
      return out({
        ...summary,
        dataDir: str(values, 'data-dir'),
        next: master
          ? 'start STS on the data directory with the same master keys'
          : `no master key is configured: start STS on the data directory with master key "${summary.masterKeyId ?? '?'}" (masterKey.file or STS_MASTER_KEY)`,
      });
    }
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`sts: ${err.message}\n`);
    process.exit(64);
  }
  if (err instanceof AdminConnectError) {
    process.stderr.write(`sts: ${(err as Error).message}\n`);
    process.exit(69);
  }
  if (err instanceof StsError) {
    process.stderr.write(`sts: ${err.message}\n`);
    process.exit(65);
  }
  const grpcErr = err as { code?: unknown; details?: unknown };
  if (typeof grpcErr?.code === 'number' && typeof grpcErr.details === 'string') {
    // A refused admin RPC: the server's message says what to fix.
    process.stderr.write(`sts: server refused: ${grpcErr.details} (gRPC status ${grpcErr.code})\n`);
    process.exit(1);
  }
  if (err instanceof StartupError) {
    // Only the server "starts"; other commands (restore, backup verify, migrate) say what failed as it is.
    process.stderr.write(`sts: ${process.argv.includes('serve') ? 'cannot start: ' : ''}${err.message}\n`);
    process.exit(err.exitCode);
  }
  process.stderr.write(`sts: internal error: ${(err as Error)?.message ?? String(err)}\n${(err as Error)?.stack ?? ''}\n`);
  process.exit(70);
});
