/**
 * The three clients as a team outside this repo gets them: each test makes a new project in os.tmpdir(),
 * installs the client the way the README says, builds the client's example there (it imports only the
 * installed package) and runs it against a real STS: application logon, LogonUser, ValidateUserToken, ticket
 * handover (CreateUserTicket, GetUserTokenByUserTicket), logout (ReleaseUserToken) and GetJwks, plus the
 * optional GetUserSecret and a failing logon.
 *
 * - TypeScript: `npm pack` of clients/ts installed into a fresh ES module project, and `npm install <path>`
 *   into a fresh CommonJS project; the example is type-checked and compiled by tsc in each module system.
 * - Go: a fresh module with the README's `replace`, built offline from the module cache that
 *   scripts/ensure-tools.sh fills.
 * - Python: a fresh venv with `pip install <path>`, offline from the wheels scripts/ensure-tools.sh keeps.
 * The packed tarball is cached under .tools/clients-install, keyed by the client's sources.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwksCache } from '../clients/ts/src/jwks.js';
import { call } from './helpers/call.js';
import { addRole, createApp, createUser } from './helpers/directory.js';
import { ROOT, type Run, run, runOk } from './helpers/process.js';
import { type TestSts, startTestSts } from './helpers/server.js';

const PASSWORD = 'a long enough password';
const SUBJECT_TOKEN = 'not-a-token-from-any-identity-provider';
const CACHE = join(ROOT, '.tools/clients-install');
const TSC = join(ROOT, 'node_modules/.bin/tsc');
/** Installs take a while on a busy machine; none of these is a timing assertion. */
const INSTALL_MS = 300_000;

let t: TestSts;
let appSecret: string;
let appToken: string;
let uid: string;
let expectedSecretError: { code: number; stsCode: string };
const dirs: string[] = [];

function project(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

beforeAll(async () => {
  t = await startTestSts();
  ({ secret: appSecret, token: appToken } = await createApp(t, 'shop'));
  uid = await createUser(t, 'dave', PASSWORD);
  await addRole(t, uid, 'shop', 'buyer', 'gold');
  // What STS answers to the optional GetUserSecret step, asked directly: the examples must report the same.
  try {
    await call(t.secret.getUserSecret, t.secret, { subjectToken: SUBJECT_TOKEN }, appToken);
    throw new Error('GetUserSecret with a garbage token succeeded');
  } catch (err) {
    const e = err as ServiceError;
    expectedSecretError = { code: e.code, stsCode: String(e.metadata?.get('sts-error-code')[0] ?? '') };
  }
});

afterAll(async () => {
  await t?.stop(true);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** The examples' settings. Plaintext is asked for explicitly: every client defaults to TLS. */
function exampleEnv(password = PASSWORD): NodeJS.ProcessEnv {
  return {
    STSCLIENT_ADDRESS: t.address,
    STSCLIENT_INSECURE: 'true',
    STSCLIENT_APP_ID: 'shop',
    STSCLIENT_APP_SECRET: appSecret,
    STSCLIENT_USERNAME: 'dave',
    STSCLIENT_PASSWORD: password,
    STSCLIENT_SUBJECT_TOKEN: SUBJECT_TOKEN,
    PYTHONDONTWRITEBYTECODE: '1',
  };
}

interface UserTokenJson {
  userTokenId: string;
  uid: string;
  username: string;
  applicationId: string;
  securityLevel: number;
  roles: unknown[];
}
/** The JSON every example prints (protobuf JSON names). */
interface ExampleOutput {
  applicationToken: { applicationTokenId: string; applicationId: string; expireTime: string };
  userLogon: { userToken: UserTokenJson; userTokenJwt: string };
  validate: { active: boolean; userToken: { uid: string } };
  ticket: { userTicket: string; expireTime: string };
  handover: { userToken: UserTokenJson; userTokenJwt: string };
  afterLogout: { active: boolean };
  jwks: { jwksJson: string; primarySigningKid: string; primaryEncryptionKid: string };
  userSecret?: { error?: { code: number; message: string; stsErrorCode: string } };
}

/** Runs an installed example three ways: the full flow (checked against STS), a wrong password, no settings. */
async function checkExample(runExample: (env: NodeJS.ProcessEnv) => Promise<Run>): Promise<void> {
  const res = await runExample(exampleEnv());
  expect(res.code, res.stderr).toBe(0);
  const out = JSON.parse(res.stdout) as ExampleOutput;

  expect(out.applicationToken.applicationTokenId).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(out.applicationToken.applicationId).toBe('shop');
  expect(Date.parse(out.applicationToken.expireTime)).toBeGreaterThan(Date.now());
  // The application token is real: STS knows it as shop's.
  const app = await call(t.session.validateApplicationToken, t.session, { applicationTokenId: out.applicationToken.applicationTokenId }, appToken);
  expect([app.active, app.applicationToken?.applicationId]).toEqual([true, 'shop']);

  const user = out.userLogon.userToken;
  expect([user.uid, user.username, user.applicationId, user.securityLevel]).toEqual([uid, 'dave', 'shop', 2]);
  expect(user.roles).toEqual([{ applicationId: 'shop', organizationName: 'ACME', roleName: 'buyer', roleValue: 'gold' }]);
  expect([out.validate.active, out.validate.userToken.uid]).toEqual([true, uid]);
  // The JWT verifies with STS's JWKS.
  const cache = new JwksCache(() => call(t.pop.getJwks, t.pop, {}));
  const claims = JSON.parse(new TextDecoder().decode((await cache.verifyToken(out.userLogon.userTokenJwt)).payload)) as { sub: string; aud: string };
  expect([claims.sub, claims.aud]).toEqual([uid, 'shop']);

  // Handover: the ticket is a 256-bit one-time value, redeemed for the same user's session; it is spent.
  expect(out.ticket.userTicket).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(Date.parse(out.ticket.expireTime)).toBeGreaterThan(Date.now() - 60_000);
  expect([out.handover.userToken.uid, out.handover.userToken.applicationId]).toEqual([uid, 'shop']);
  await expect(call(t.session.getUserTokenByUserTicket, t.session, { userTicket: out.ticket.userTicket }, appToken)).rejects.toMatchObject({ code: 5 });

  // Logout: the example saw the session end, and STS agrees.
  expect(out.afterLogout).toEqual({ active: false });
  const v = await call(t.session.validateUserToken, t.session, { token: { $case: 'userTokenId', value: user.userTokenId } }, appToken);
  expect(v.active).toBe(false);

  const jwks = JSON.parse(out.jwks.jwksJson) as { keys: { kid: string }[] };
  expect(jwks.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([out.jwks.primarySigningKid, out.jwks.primaryEncryptionKid]));
  // The optional step reports STS's refusal with the status and the sts-error-code trailer.
  expect(out.userSecret?.error).toMatchObject({ code: expectedSecretError.code, stsErrorCode: expectedSecretError.stsCode });
  expect(out.userSecret!.error!.code).toBeGreaterThan(0);

  const wrong = await runExample(exampleEnv('not the password'));
  expect([wrong.code, wrong.stdout]).toEqual([1, '']);
  expect(wrong.stderr).toContain('LogonUser failed: invalid user credentials');
  expect(wrong.stderr).toMatch(/gRPC 16 (Unauthenticated|UNAUTHENTICATED)/); // each language names the status its way
  expect(wrong.stderr).toMatch(/sts-error-code ["']invalid_credentials["']/);

  const usage = await runExample({ STSCLIENT_ADDRESS: t.address, STSCLIENT_APP_ID: '', STSCLIENT_APP_SECRET: '', STSCLIENT_USERNAME: '', STSCLIENT_PASSWORD: '' });
  expect(usage.code).toBe(64);
  expect(usage.stderr).toContain('required');
}

// ---- TypeScript -------------------------------------------------------------------------------------------

/** Hash of what goes into the TS package, so the packed tarball is rebuilt only when the client changes. */
function tsSourceHash(): string {
  const h = createHash('sha256');
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else h.update(p.slice(ROOT.length)).update(readFileSync(p));
    }
  };
  walk(join(ROOT, 'clients/ts/src'));
  for (const f of ['package.json', 'tsconfig.json', 'tsconfig.cjs.json', 'LICENSE']) h.update(f).update(readFileSync(join(ROOT, 'clients/ts', f)));
  return h.digest('hex').slice(0, 16);
}

/** `npm pack` of clients/ts (its prepare script builds dist/), cached under .tools/clients-install. */
async function packedTarball(): Promise<string> {
  const dir = join(CACHE, `ts-${tsSourceHash()}`);
  const existing = existsSync(dir) ? readdirSync(dir).find((f) => f.endsWith('.tgz')) : undefined;
  if (existing) return join(dir, existing);
  rmSync(CACHE, { recursive: true, force: true }); // older tarballs
  mkdirSync(dir, { recursive: true });
  await runOk('npm', ['pack', join(ROOT, 'clients/ts'), '--pack-destination', dir, '--silent'], { cwd: dir, timeoutMs: INSTALL_MS });
  return join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
}

const NPM_QUIET = ['--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'];

/**
 * A fresh npm project (`npm init -y`, then `type` set), the client installed from `spec`, and the example
 * type-checked and compiled for that module system by tsc with the package's own type declarations.
 */
async function tsProject(type: 'module' | 'commonjs', spec: string): Promise<string> {
  const dir = project(`sts-ts-${type}-`);
  await runOk('npm', ['init', '-y'], { cwd: dir });
  await runOk('npm', ['pkg', 'set', `type=${type}`], { cwd: dir });
  await runOk('npm', ['install', spec, ...NPM_QUIET], { cwd: dir, timeoutMs: INSTALL_MS });
  copyFileSync(join(ROOT, 'clients/ts/example/example.ts'), join(dir, 'example.ts'));
  // Types are real, not `any`: a request of the wrong shape does not compile.
  writeFileSync(
    join(dir, 'types.ts'),
    [
      "import { createStsClient } from '@sts/client';",
      "const sts = createStsClient({ address: 'localhost:1' });",
      '// @ts-expect-error username is a string',
      "void sts.session.logonUser({ credential: { $case: 'userCredential', value: { username: 1 } } });",
      '// @ts-expect-error no such field',
      "void sts.session.validateUserToken({ tokenId: 'x' });",
      'sts.close();',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        types: ['node'],
        typeRoots: [join(ROOT, 'node_modules/@types')],
        // The ES module project also checks the package's own declarations; the CommonJS one is set as
        // `tsc --init` sets a project (skipLibCheck), which is faster.
        skipLibCheck: type === 'commonjs',
        outDir: 'out',
      },
      files: ['example.ts', 'types.ts'],
    }),
  );
  await runOk(TSC, ['-p', dir], { cwd: dir, timeoutMs: INSTALL_MS });
  return dir;
}

describe('TypeScript client (@sts/client) from a fresh project', () => {
  it('installs from the packed tarball into an ES module project: dist, types and LICENSE ship, the example runs', { timeout: 2 * INSTALL_MS }, async () => {
    const tarball = await packedTarball();
    const dir = await tsProject('module', tarball);
    const pkg = join(dir, 'node_modules/@sts/client');
    expect(existsSync(join(pkg, 'dist/esm/index.d.ts')) && existsSync(join(pkg, 'dist/cjs/index.d.ts'))).toBe(true);
    expect(readFileSync(join(pkg, 'LICENSE'), 'utf8')).toBe(readFileSync(join(ROOT, 'LICENSE'), 'utf8'));
    // The ES module build was loaded (import), not the CommonJS one.
    const which = await runOk('node', ['--input-type=module', '-e', "import('@sts/client').then((m) => console.log(typeof m.createStsClient, import.meta.resolve('@sts/client')))"], { cwd: dir });
    expect(which.stdout).toMatch(/^function .*\/dist\/esm\/index\.js$/m);
    await checkExample((env) => run('node', [join(dir, 'out/example.js')], { cwd: dir, env }));
  });

  it('installs from its path into a CommonJS project (built by its prepare script): require() works, the example runs', { timeout: 2 * INSTALL_MS }, async () => {
    const dir = await tsProject('commonjs', join(ROOT, 'clients/ts'));
    // The example compiled to require(), and require resolves to the CommonJS build.
    expect(readFileSync(join(dir, 'out/example.js'), 'utf8')).toContain('require("@sts/client")');
    const which = await runOk('node', ['-e', "console.log(typeof require('@sts/client').createStsClient, require.resolve('@sts/client'), typeof require('@sts/client/jwks').JwksCache)"], { cwd: dir });
    expect(which.stdout).toMatch(/^function .*\/dist\/cjs\/index\.js function$/m);
    await checkExample((env) => run('node', [join(dir, 'out/example.js')], { cwd: dir, env }));
  });
});

// ---- Go ---------------------------------------------------------------------------------------------------

describe('Go client from a fresh module', () => {
  it('builds with the README replace directive, offline from the module cache, and the example runs', { timeout: 2 * INSTALL_MS }, async () => {
    const dir = project('sts-go-');
    // Offline: every module comes from the cache ensure-tools filled, whose contents were checked against
    // clients/go/go.sum when they were downloaded (the checksum database is not reachable offline).
    const env = { GOPROXY: 'off', GOSUMDB: 'off', GOFLAGS: '-mod=mod' };
    await runOk('go', ['mod', 'init', 'example.com/shop'], { cwd: dir, env });
    await runOk('go', ['mod', 'edit', `-replace=github.com/sts-project/sts/clients/go=${join(ROOT, 'clients/go')}`], { cwd: dir, env });
    copyFileSync(join(ROOT, 'clients/go/example/main.go'), join(dir, 'main.go'));
    await runOk('go', ['mod', 'tidy'], { cwd: dir, env, timeoutMs: INSTALL_MS });
    expect(readFileSync(join(dir, 'go.mod'), 'utf8')).toMatch(/require \(\n\tgithub\.com\/sts-project\/sts\/clients\/go v0\.0\.0-00010101000000-000000000000/);
    await runOk('go', ['build', '-o', 'shop', '.'], { cwd: dir, env, timeoutMs: INSTALL_MS });
    await checkExample((e) => run(join(dir, 'shop'), [], { cwd: dir, env: e }));
  });
});

// ---- Python -----------------------------------------------------------------------------------------------

describe('Python client from a fresh venv', () => {
  it('pip installs from its path (no bare `sts` package, py.typed shipped) and the example runs', { timeout: 2 * INSTALL_MS }, async () => {
    const wheels = join(ROOT, '.tools/python-wheels');
    expect(existsSync(wheels), 'the wheel cache is missing: run scripts/ensure-tools.sh (npm test does it)').toBe(true);
    const dir = project('sts-py-');
    await runOk('python3', ['-m', 'venv', join(dir, '.venv')], { cwd: dir, timeoutMs: INSTALL_MS });
    const py = join(dir, '.venv/bin/python');
    // `pip install <path>`, with the dependencies from ensure-tools' wheels instead of PyPI.
    await runOk(py, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-index', '--find-links', wheels, join(ROOT, 'clients/python')], {
      cwd: dir,
      timeoutMs: INSTALL_MS,
    });
    const site = await runOk(py, ['-c', 'import sts_client, sysconfig; print(sysconfig.get_paths()["purelib"]); print(sts_client.__file__)'], { cwd: dir });
    const [purelib, file] = site.stdout.trim().split('\n') as [string, string];
    expect(file.startsWith(purelib)).toBe(true); // the installed copy, not the repo's
    expect(existsSync(join(purelib, 'sts'))).toBe(false);
    expect(existsSync(join(purelib, 'sts_client/py.typed')) && existsSync(join(purelib, 'sts_client/v1/session_pb2.pyi'))).toBe(true);
    const meta = await runOk(py, ['-c', 'from importlib.metadata import metadata; m = metadata("sts-client"); print(m["License-Expression"])'], { cwd: dir });
    expect(meta.stdout.trim()).toBe('Apache-2.0');
    copyFileSync(join(ROOT, 'clients/python/example.py'), join(dir, 'example.py'));
    await checkExample((env) => run(py, [join(dir, 'example.py')], { cwd: dir, env }));
  });
});

// ---- Licence ----------------------------------------------------------------------------------------------

describe('licence', () => {
  it('the repository is Apache-2.0, and every client ships the same LICENSE and says so in its metadata', () => {
    const license = readFileSync(join(ROOT, 'LICENSE'), 'utf8');
    expect(license).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
    for (const dir of ['clients/ts', 'clients/go', 'clients/python']) expect(readFileSync(join(ROOT, dir, 'LICENSE'), 'utf8'), dir).toBe(license);
    for (const pkg of ['package.json', 'clients/ts/package.json']) expect((JSON.parse(readFileSync(join(ROOT, pkg), 'utf8')) as { license: string }).license, pkg).toBe('Apache-2.0');
    expect(readFileSync(join(ROOT, 'clients/python/pyproject.toml'), 'utf8')).toMatch(/^license = "Apache-2\.0"$/m);
  });
});
