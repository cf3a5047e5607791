/**
 * Keycloak 26.5.6 for the --peers part: the `keycloak-quarkus-dist` zip from Maven Central, fetched with the
 * pinned maven-dependency-plugin (as scripts/hazelcast.sh fetches the Hazelcast jar: a bare dependency:copy
 * resolves an old plugin that needs a pom.xml), unpacked into .peers/keycloak/, run on the machine's Java 17+
 * with `bin/kc.sh start-dev` (dev mode: H2 database, plain HTTP) on 127.0.0.1. The first start also builds
 * the Quarkus application (a minute or more), kept in the unpacked folder for the next runs; the database
 * (data/) is removed before every start, so every run starts from an empty server.
 *
 * Test data through the admin REST API: a realm "bench" (access tokens valid for an hour), a confidential
 * client "bench-app" with service accounts (client_credentials) and direct access grants (password grant),
 * and users with passwords, hashed with the realm's default password policy (Argon2id in Keycloak 26).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SERVER_CORE, cleanEnv, freePorts, onCore, run, startProc, waitFor } from './process.js';
import { type Context, PASSWORD_USERS, type PeerServer, type Running, accessToken, basic, form, formPost, httpJson } from './server.js';

const VERSION = '26.5.6';
const ARTIFACT = `org.keycloak:keycloak-quarkus-dist:${VERSION}:zip`;
const REALM = 'bench';
const CLIENT = 'bench-app';
/** As the STS fixture (bench/setup.ts): the first 4 users log on twice; those 8 sessions' access tokens are introspected. */
const SESSION_USERS = 4;
const SESSIONS_PER_USER = 2;

const home = (ctx: Context): string => join(ctx.peersDir, 'keycloak', `keycloak-${VERSION}`);

async function javaMajor(cwd: string): Promise<number> {
  // `java -version` writes to stderr.
  const out = await run('java', ['-version'], { cwd, timeoutMs: 60_000, stderr: true }).catch(() => '');
  const m = /version "(\d+)/.exec(out);
  return m ? Number(m[1]) : NaN;
}

async function fetchKeycloak(ctx: Context): Promise<void> {
  const dir = join(ctx.peersDir, 'keycloak');
  if (existsSync(join(home(ctx), 'bin', 'kc.sh'))) return;
  mkdirSync(dir, { recursive: true });
  await run('mvn', ['-v'], { cwd: dir, timeoutMs: 60_000 }).catch((err: unknown) => {
    throw new Error(`Maven (mvn) is needed to fetch Keycloak from Maven Central: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  });
  ctx.log(`keycloak: fetching ${ARTIFACT} from Maven Central (about 160 MB)`);
  await run('mvn', ['-B', '-q', 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy', `-Dartifact=${ARTIFACT}`, `-DoutputDirectory=${dir}`], { cwd: dir, timeoutMs: 1_200_000 });
  const zip = join(dir, `keycloak-quarkus-dist-${VERSION}.zip`);
  if (!existsSync(zip)) throw new Error(`${ARTIFACT}: the plugin reported success but ${zip} is not there`);
  rmSync(home(ctx), { recursive: true, force: true });
  await run('unzip', ['-q', zip, '-d', dir], { cwd: dir, timeoutMs: 300_000 });
  if (!existsSync(join(home(ctx), 'bin', 'kc.sh'))) throw new Error(`${zip}: no keycloak-${VERSION}/bin/kc.sh inside (found ${readdirSync(dir).join(', ')})`);
  // Maven's local repository keeps its own copy of the zip.
  rmSync(zip, { force: true });
}

async function startKeycloak(ctx: Context): Promise<Running> {
  const kc = home(ctx);
  const major = await javaMajor(kc);
  if (!(major >= 17)) throw new Error(`Keycloak ${VERSION} needs Java 17 or later; \`java -version\` says ${Number.isNaN(major) ? 'nothing usable' : major}`);
  // Every run starts from an empty database.
  rmSync(join(kc, 'data'), { recursive: true, force: true });
  const [port, managementPort] = await freePorts(2);
  const base = `http://127.0.0.1:${port}`;
  const adminPassword = randomBytes(24).toString('base64url');
  const env = cleanEnv({ KC_BOOTSTRAP_ADMIN_USERNAME: 'admin', KC_BOOTSTRAP_ADMIN_PASSWORD: adminPassword }, /^(KC_|KEYCLOAK_|JAVA_OPTS|QUARKUS_)/);
  const [cmd, args] = onCore(SERVER_CORE, join(kc, 'bin', 'kc.sh'), ['start-dev', '--http-host=127.0.0.1', `--http-port=${port}`, `--http-management-port=${managementPort}`]);
  ctx.log(`keycloak: starting (kc.sh start-dev on one core: 1-3 minutes, longer the first time)`);
  const proc = startProc('keycloak', cmd, args, { cwd: kc, env, logFile: join(ctx.runDir, 'keycloak.log') });
  try {
    await waitFor('keycloak', proc, 900_000, async () => ((await fetch(`${base}/realms/master`, { signal: AbortSignal.timeout(5000) })).ok ? true : undefined));
    const adminToken = await accessToken(`${base}/realms/master/protocol/openid-connect/token`, undefined, { grant_type: 'password', client_id: 'admin-cli', username: 'admin', password: adminPassword });
    const adminApi = (path: string, body: unknown): Promise<unknown> =>
      httpJson(`${base}/admin/realms${path}`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body), expect: [201] });
    await adminApi('', { realm: REALM, enabled: true, accessTokenLifespan: 3600 });
    const secret = randomBytes(32).toString('base64url');
    await adminApi(`/${REALM}/clients`, {
      clientId: CLIENT,
      enabled: true,
      publicClient: false,
      clientAuthenticatorType: 'client-secret',
      secret,
      serviceAccountsEnabled: true,
      directAccessGrantsEnabled: true,
      standardFlowEnabled: false,
    });
    const users: { username: string; password: string }[] = [];
    for (let i = 0; i < PASSWORD_USERS; i++) {
      const user = { username: `bench-user-${i}`, password: randomBytes(12).toString('base64url') };
      await adminApi(`/${REALM}/users`, {
        username: user.username,
        enabled: true,
        firstName: 'Bench',
        lastName: user.username,
        email: `${user.username}@bench.example`,
        emailVerified: true,
        credentials: [{ type: 'password', value: user.password, temporary: false }],
      });
      users.push(user);
    }
    const auth = basic(CLIENT, secret);
    const tokenUrl = `${base}/realms/${REALM}/protocol/openid-connect/token`;
    const tokens: string[] = [];
    for (const u of users.slice(0, SESSION_USERS)) for (let s = 0; s < SESSIONS_PER_USER; s++) tokens.push(await accessToken(tokenUrl, auth, { grant_type: 'password', username: u.username, password: u.password }));
    return {
      proc,
      loads: {
        introspection: {
          tool: 'http',
          what: 'POST /realms/bench/protocol/openid-connect/token/introspect (client_secret_basic; access tokens of 8 password-grant sessions)',
          spec: formPost('keycloak introspect', `${tokenUrl}/introspect`, auth, tokens.map((token) => form({ token })), '"active":true'),
        },
        'client-credentials': {
          tool: 'http',
          what: 'POST .../openid-connect/token grant_type=client_credentials (client_secret_basic)',
          spec: formPost('keycloak client_credentials', tokenUrl, auth, [form({ grant_type: 'client_credentials' })], '"access_token"'),
        },
        password: {
          tool: 'http',
          what: `POST .../openid-connect/token grant_type=password (direct access grants; ${PASSWORD_USERS} users in turn)`,
          spec: formPost('keycloak password grant', tokenUrl, auth, users.map((u) => form({ grant_type: 'password', username: u.username, password: u.password })), '"access_token"'),
        },
      },
      cannot: {},
      notes: [
        `Keycloak ${VERSION} (\`${ARTIFACT}\` from Maven Central): \`kc.sh start-dev\` (H2 database, plain HTTP), default JVM options (G1, -Xms64m -Xmx512m), default realm settings (password hashing: Argon2id, Keycloak 26's default; client secrets compared as stored), access tokens valid 1 h, no log line per request (its default).`,
      ],
    };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

export const keycloak: PeerServer = { name: 'Keycloak', version: VERSION, fetch: fetchKeycloak, start: startKeycloak };
