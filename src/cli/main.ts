#!/usr/bin/env node
/**
 * The `sts` command line: `sts serve`, `sts config`, `sts admin ...`, `sts --help`.
 * Start-up errors print one line naming what to fix and exit with a sysexits(3) code; no stack traces.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { type RunningSts, startSts } from '../app.js';
import { OPTIONS, SECRET_ENV, envName, optionsMarkdown, type OptionName } from '../config/defaults.js';
import { loadConfig } from '../config/load.js';
import { StartupError, StsError } from '../errors.js';
import { ADMIN_HELP, AdminUsageError, admin } from './admin.js';
import { createLogger } from '../log.js';

const HELP = `sts: the security token service (gRPC)

Usage:
  sts serve [--config FILE] [--address HOST:PORT] [--http-address HOST:PORT] [--data-dir DIR]
            [--profile dev|prod] [--cluster [--members HOST:PORT,...]]
      Start the server (embedded SQLite, or cluster mode on Hazelcast with --cluster). --http-address is
      the HTTP listener for browsers and JWT libraries (JWKS, discovery; "" turns it off). Options override
      the config file and STS_* environment variables.
  sts config [--markdown] [--config FILE]
      Print every option with its value (secrets hidden), or the option table as Markdown.
  sts admin ...
      Operator commands (applications, users, roles, identity providers, resource servers, keys);
      run \`sts admin --help\` for the list.
  sts --help | sts --version

Environment: STS_<OPTION> for every option (see \`sts config\`), ${Object.keys(SECRET_ENV).join(', ')}.
Exit codes: 0 ok, 1 the server refused an admin command, 64 usage, 65 bad data (master key, store), 69 cannot listen, 73 data dir unusable,
78 configuration invalid, 70 internal error.
`;


class UsageError extends Error {}

function usage(message: string): never {
  throw new UsageError(message);
}

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (err) {
    return usage((err as Error).message);
  }
}

async function serve(args: string[]): Promise<void> {
  const { values } = parse(args, {
    config: { type: 'string' },
    address: { type: 'string' },
    'http-address': { type: 'string' },
    'data-dir': { type: 'string' },
    profile: { type: 'string' },
    cluster: { type: 'boolean' },
    members: { type: 'string' },
  });
  const overrides: Partial<Record<OptionName, string>> = {};
  if (typeof values.address === 'string') overrides['server.address'] = values.address;
  if (typeof values['http-address'] === 'string') overrides['http.address'] = values['http-address'];
  if (typeof values['data-dir'] === 'string') overrides.dataDir = values['data-dir'];
  if (typeof values.profile === 'string') overrides.profile = values.profile;
  if (values.cluster === true) overrides['cluster.enabled'] = 'true';
  if (typeof values.members === 'string') overrides['cluster.members'] = values.members;
  const config = loadConfig({ file: values.config as string | undefined, overrides });
  const logger = createLogger(config['log.level']);

  // Handlers go in before the server starts: a signal during start-up must still drain and exit cleanly.
  const running: { sts?: RunningSts } = {};
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
    sts.close().then(
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

function showConfig(args: string[]): void {
  const { values } = parse(args, { markdown: { type: 'boolean' }, config: { type: 'string' } });
  if (values.markdown) {
    process.stdout.write(optionsMarkdown() + '\n');
    return;
  }
  const config = loadConfig({ file: values.config as string | undefined });
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    process.stdout.write(`${name} = ${JSON.stringify(config[name])}    (${envName(name)})\n`);
  }
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'config':
      return showConfig(rest);
    case 'admin':
      if (rest.length === 0 || rest[0] === '--help' || rest[0] === 'help') {
        process.stdout.write(ADMIN_HELP);
        return;
      }
      try {
        return await admin(rest);
      } catch (err) {
        if (err instanceof AdminUsageError) return usage(err.message);
        throw err;
      }
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(HELP);
      return;
    case '--version':
      process.stdout.write('sts 0.1.0\n');
      return;
    default:
      return usage(`unknown command "${command}"; see \`sts --help\``);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`sts: ${err.message}\n`);
    process.exit(64);
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
    process.stderr.write(`sts: cannot start: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  process.stderr.write(`sts: internal error: ${(err as Error)?.message ?? String(err)}\n${(err as Error)?.stack ?? ''}\n`);
  process.exit(70);
});
