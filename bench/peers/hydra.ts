/**
 * Ory Hydra v2.3.0 for the --peers part, built from the Go module proxy and run with SQLite.
 *
 * `go install github.com/ory/hydra/v2@v2.3.0` is refused: its go.mod has replace directives, which `go install`
 * of a remote module rejects. Built as the main module instead, the replace directives count: the module is
 * downloaded (`go mod download -json`), copied to a writable folder, and built there with the sqlite build tags
 * its Makefile uses. One of its replace directives points to ./internal/httpclient, a nested module that the
 * module zip leaves out; that directive is dropped, so the build uses the published
 * github.com/ory/hydra-client-go/v2 at the version its go.mod requires (the CLI's client; the server does not
 * use it). The binary is .peers/hydra/hydra-v2.3.0; the Go module and build caches are the machine's usual ones.
 *
 * Started as the quickstart does, with the SQLite DSN: `hydra migrate sql up -e --yes`, then
 * `hydra serve all --dev --sqa-opt-out` (--dev: plain HTTP on loopback; --sqa-opt-out: no telemetry).
 */
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { SERVER_CORE, cleanEnv, freePorts, onCore, run, startProc, waitFor } from './process.js';
import { type Context, type PeerServer, type Running, accessToken, basic, form, formPost, httpJson } from './server.js';

const VERSION = 'v2.3.0';
const MODULE = 'github.com/ory/hydra/v2';
const BUILD_TAGS = 'sqlite,sqlite_omit_load_extension';
/** Access tokens introspected in turn (as many as the STS fixture has sessions). */
const TOKENS = 8;

const binary = (ctx: Context): string => join(ctx.peersDir, 'hydra', `hydra-${VERSION}`);

async function fetchHydra(ctx: Context): Promise<void> {
  const bin = binary(ctx);
  if (existsSync(bin)) return;
  const dir = join(ctx.peersDir, 'hydra');
  mkdirSync(dir, { recursive: true });
  await run('go', ['version'], { cwd: dir, timeoutMs: 30_000 }).catch((err: unknown) => {
    throw new Error(`Go is needed to build Hydra from the Go module proxy: ${err instanceof Error ? err.message : String(err)}`);
  });
  ctx.log(`hydra: downloading ${MODULE}@${VERSION} from the Go module proxy`);
  const info = JSON.parse(await run('go', ['mod', 'download', '-json', `${MODULE}@${VERSION}`], { cwd: dir, timeoutMs: 600_000 })) as { Dir?: string; Error?: string };
  if (!info.Dir) throw new Error(`go mod download ${MODULE}@${VERSION}: ${info.Error ?? 'no module directory'}`);
  const src = join(dir, 'src');
  rmSync(src, { recursive: true, force: true });
  // The module cache is read-only: build in a writable copy.
  await run('cp', ['-R', info.Dir, src], { cwd: dir, timeoutMs: 120_000 });
  await run('chmod', ['-R', 'u+w', src], { cwd: dir, timeoutMs: 60_000 });
  await run('go', ['mod', 'edit', '-dropreplace', 'github.com/ory/hydra-client-go/v2'], { cwd: src, timeoutMs: 60_000 });
  ctx.log(`hydra: building (go build -tags ${BUILD_TAGS}; the first build takes about 5-10 minutes on 2 cores)`);
  const tmp = `${bin}.tmp`;
  await run('go', ['build', '-mod=mod', '-tags', BUILD_TAGS, '-ldflags', `-X github.com/ory/hydra/v2/driver/config.Version=${VERSION}`, '-o', tmp, '.'], {
    cwd: src,
    env: { ...process.env, CGO_ENABLED: '1' },
    timeoutMs: 1_800_000,
  });
  renameSync(tmp, bin);
  rmSync(src, { recursive: true, force: true });
}

async function startHydra(ctx: Context): Promise<Running> {
  const bin = binary(ctx);
  const data = join(ctx.runDir, 'hydra');
  mkdirSync(data, { recursive: true });
  const [publicPort, adminPort] = await freePorts(2);
  const pub = `http://127.0.0.1:${publicPort}`;
  const admin = `http://127.0.0.1:${adminPort}`;
  const env = cleanEnv(
    {
      DSN: `sqlite://${join(data, 'hydra.sqlite')}?_fk=true`,
      SECRETS_SYSTEM: randomBytes(32).toString('base64url'),
      URLS_SELF_ISSUER: pub,
      SERVE_PUBLIC_HOST: '127.0.0.1',
      SERVE_PUBLIC_PORT: String(publicPort),
      SERVE_ADMIN_HOST: '127.0.0.1',
      SERVE_ADMIN_PORT: String(adminPort),
    },
    /^(DSN|SECRETS_|URLS_|SERVE_|LOG_|OAUTH2_|STRATEGIES_|TTL_|OIDC_|WEBFINGER_|SQA_)/,
  );
  const logFile = join(ctx.runDir, 'hydra.log');
  ctx.log('hydra: migrating the SQLite database');
  await run(bin, ['migrate', 'sql', 'up', '-e', '--yes'], { cwd: data, env, timeoutMs: 300_000 });
  const [cmd, args] = onCore(SERVER_CORE, bin, ['serve', 'all', '--dev', '--sqa-opt-out']);
  const proc = startProc('hydra', cmd, args, { cwd: data, env, logFile });
  try {
    await waitFor('hydra', proc, 120_000, async () => ((await fetch(`${admin}/health/ready`, { signal: AbortSignal.timeout(5000) })).ok ? true : undefined));
    const clientId = 'bench-app';
    // A generated secret, as STS generates application secrets: 256 bits.
    const secret = randomBytes(32).toString('base64url');
    await httpJson(`${admin}/admin/clients`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: clientId, client_secret: secret, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' }),
      expect: [201],
    });
    const auth = basic(clientId, secret);
    const tokenUrl = `${pub}/oauth2/token`;
    const tokens: string[] = [];
    for (let i = 0; i < TOKENS; i++) tokens.push(await accessToken(tokenUrl, auth, { grant_type: 'client_credentials' }));
    return {
      proc,
      loads: {
        introspection: {
          tool: 'http',
          what: 'POST /admin/oauth2/introspect (admin port; client-credentials access tokens)',
          spec: formPost('hydra introspect', `${admin}/admin/oauth2/introspect`, undefined, tokens.map((token) => form({ token })), '"active":true'),
        },
        'client-credentials': {
          tool: 'http',
          what: 'POST /oauth2/token grant_type=client_credentials (client_secret_basic)',
          spec: formPost('hydra client_credentials', tokenUrl, auth, [form({ grant_type: 'client_credentials' })], '"access_token"'),
        },
      },
      cannot: { password: 'no user store: Hydra delegates login and consent to an application of your own, and has no password grant' },
      notes: [
        `Hydra ${VERSION} (built from the Go module proxy with -tags ${BUILD_TAGS}): \`hydra serve all --dev --sqa-opt-out\`, SQLite (${'`sqlite://...?_fk=true`'}, migrated first), default settings: opaque access tokens, client secrets hashed with PBKDF2 (its default: 25,000 iterations), two log lines per request (started, completed) at its default level, written to a file.`,
      ],
    };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

export const hydra: PeerServer = { name: 'Hydra', version: VERSION, fetch: fetchHydra, start: startHydra };
