/**
 * STS for the --peers part: the compiled server (`npm run build`, then `node dist/src/cli/main.js serve`) as an
 * operator runs it, with its defaults (dev profile, embedded SQLite in a fresh data directory, JSON log at
 * info level, here into a file; one throttle raised, see startSts), on 127.0.0.1, pinned to the server core. Its test data is the main
 * benchmark's (bench/setup.ts through the admin RPCs), and the load is bench/load.ts with the main benchmark's
 * scenarios.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LOAD_CORE, SERVER_CORE, cleanEnv, onCore, run, startProc, waitFor } from './process.js';
import { type Context, PASSWORD_USERS, type PeerServer, type Running } from './server.js';

async function build(ctx: Context): Promise<void> {
  ctx.log('sts: npm run build (dist/)');
  await run('npm', ['run', 'build'], { cwd: ctx.root, timeoutMs: 900_000 });
  if (!existsSync(join(ctx.root, 'dist', 'src', 'cli', 'main.js'))) throw new Error('npm run build left no dist/src/cli/main.js');
}

async function startSts(ctx: Context): Promise<Running> {
  const dataDir = join(ctx.runDir, 'sts');
  mkdirSync(dataDir, { recursive: true });
  const logFile = join(ctx.runDir, 'sts.log');
  const [cmd, args] = onCore(SERVER_CORE, process.execPath, [join(ctx.root, 'dist', 'src', 'cli', 'main.js'), 'serve', '--address', '127.0.0.1:0', '--http-address', '', '--data-dir', dataDir]);
  // The one setting changed: an application's budget of distinct usernames whose logons may fail in a window
  // (session.throttleMaxUsernamesPerApplication, 50) counts logons under way as possible failures, so 64 users
  // logging on at once from one application would meet the spraying defence instead of the password hash.
  // Keycloak's brute-force detection is off by default; the per-username throttles stay on.
  const proc = startProc('sts', cmd, args, { cwd: dataDir, env: cleanEnv({ STS_SESSION_THROTTLE_MAX_USERNAMES_PER_APPLICATION: '1000' }, /^STS_/), logFile });
  try {
    // The port is in the start-up line of its log.
    const target = await waitFor('sts', proc, 120_000, async () => {
      for (const line of readFileSync(logFile, 'utf8').split('\n')) {
        if (!line.includes('"sts started"')) continue;
        const address = (JSON.parse(line) as { address?: string }).address;
        if (address && /^127\.0\.0\.1:\d+$/.test(address)) return address;
      }
      return undefined;
    });
    const tokenFile = join(dataDir, 'admin.token');
    const fixtureFile = join(ctx.runDir, 'sts-fixture.json');
    ctx.log(`sts: setting up applications, ${PASSWORD_USERS} users and sessions (bench/setup.ts)`);
    const [setupCmd, setupArgs] = onCore(LOAD_CORE, process.execPath, ['--import', 'tsx', join(ctx.root, 'bench', 'setup.ts'), '--target', target, '--token-file', tokenFile, '--out', fixtureFile, '--users', String(PASSWORD_USERS), '--seed-users', '0']);
    await run(setupCmd, setupArgs, { cwd: ctx.root, timeoutMs: 600_000 });
    const grpc = (rpc: string, what: string) => ({ tool: 'grpc' as const, rpc, target, fixtureFile, tokenFile, what });
    return {
      proc,
      loads: {
        introspection: grpc('ValidateUserToken', 'ValidateUserToken by token id (8 sessions made with LogonUser), bearer: an application token'),
        'client-credentials': grpc('LogonApplication', 'LogonApplication with the application id and its generated secret'),
        password: grpc('LogonUser', `LogonUser with username and password (${PASSWORD_USERS} users in turn), bearer: an application token`),
      },
      cannot: {},
      notes: [
        'STS from `dist/` (`npm run build`; `node dist/src/cli/main.js serve`): the defaults (dev profile, embedded SQLite, one JSON log line per RPC at info level and an audit line per logon, written to a file; session.throttleMaxUsernamesPerApplication raised from 50 to 1000, so that 64 users logging on at once from one application are not taken for password spraying; password hashing: Argon2id m=19456 KiB t=2 p=1, OWASP\'s first setting; generated application secrets: HMAC-SHA-256 under a key derived from the master key), plaintext gRPC on 127.0.0.1; test data from bench/setup.ts, load from bench/load.ts (the main benchmark\'s scenarios).',
      ],
    };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

export const sts: PeerServer = { name: 'STS', version: 'this build', fetch: build, start: startSts };
