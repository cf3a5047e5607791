/**
 * The generated Go and Python clients, through their example programs (clients/go/example,
 * clients/python/example.py), against a real STS: application logon, user logon, validation, JWKS and the
 * optional GetUserSecret step, with the JSON each prints checked against the server. A contract change that
 * breaks a language's generated code or its example fails here (the Go build, the Python import, or the
 * output). The Go toolchain and the Python venv come from scripts/ensure-tools.sh (`npm test` runs it).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JwksCache } from '../clients/ts/src/jwks.js';
import { call } from './helpers/call.js';
import { addRole, createApp, createUser } from './helpers/directory.js';
import { type TestSts, startTestSts } from './helpers/server.js';

const ROOT = resolve(import.meta.dirname, '..');
const PYTHON = join(ROOT, '.tools/python/bin/python');
const PASSWORD = 'a long enough password';
const SUBJECT_TOKEN = 'not-a-token-from-any-identity-provider';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd ?? ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** The JSON the examples print (protobuf JSON names). */
interface ExampleOutput {
  applicationToken: { applicationTokenId: string; applicationId: string; expireTime: string };
  userLogon: { userToken: { userTokenId: string; uid: string; username: string; applicationId: string; securityLevel: number; roles: unknown[] }; userTokenJwt: string };
  validate: { active: boolean; userToken: { uid: string } };
  jwks: { jwksJson: string; primarySigningKid: string; primaryEncryptionKid: string; maxAge: string };
  userSecret?: { error?: { code: number; codeName: string; message: string; stsErrorCode: string } };
}

let t: TestSts;
let appSecret: string;
let uid: string;
let appToken: string;
let bin: string;
let goBuild: Run;
let expectedSecretError: { code: number; stsCode: string };

beforeAll(async () => {
  // Build the Go example once (the first build on a machine compiles grpc-go: give it time). Offline after
  // ensure-tools' `go mod download`; go.sum pins every module.
  // A failed build is reported by every Go test (not as skipped tests).
  bin = mkdtempSync(join(tmpdir(), 'sts-go-example-'));
  goBuild = await run('go', ['build', '-o', join(bin, 'example'), './example'], { cwd: join(ROOT, 'clients/go'), timeoutMs: 540_000 });

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
}, 600_000);

afterAll(async () => {
  await t?.stop(true);
  if (bin) rmSync(bin, { recursive: true, force: true });
});

function exampleEnv(password = PASSWORD): NodeJS.ProcessEnv {
  return { STS_ADDRESS: t.address, STS_APP_ID: 'shop', STS_APP_SECRET: appSecret, STS_USERNAME: 'dave', STS_PASSWORD: password, STS_SUBJECT_TOKEN: SUBJECT_TOKEN, PYTHONDONTWRITEBYTECODE: '1' };
}

function pythonReady(): void {
  expect(existsSync(PYTHON), 'the Python venv is missing: run scripts/ensure-tools.sh (npm test does it)').toBe(true);
}

const languages: { name: string; run: (env: NodeJS.ProcessEnv) => Promise<Run> }[] = [
  {
    name: 'Go',
    run: (env) => {
      expect(goBuild.code, `go build ./example failed:\n${goBuild.stderr}`).toBe(0);
      return run(join(bin, 'example'), [], { env });
    },
  },
  {
    name: 'Python',
    run: (env) => {
      pythonReady();
      return run(PYTHON, [join(ROOT, 'clients/python/example.py')], { env });
    },
  },
];

describe.each(languages)('$name client example', (lang) => {
  it('logs the application and a user on, validates the session, fetches the JWKS and reports GetUserSecret', async () => {
    const res = await lang.run(exampleEnv());
    expect(res.code, res.stderr).toBe(0);
    const out = JSON.parse(res.stdout) as ExampleOutput;

    expect(out.applicationToken.applicationTokenId).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(out.applicationToken.applicationId).toBe('shop');
    expect(Date.parse(out.applicationToken.expireTime)).toBeGreaterThan(Date.now());

    const user = out.userLogon.userToken;
    expect([user.uid, user.username, user.applicationId, user.securityLevel]).toEqual([uid, 'dave', 'shop', 2]);
    expect(user.roles).toEqual([{ applicationId: 'shop', organizationName: 'ACME', roleName: 'buyer', roleValue: 'gold' }]);
    expect([out.validate.active, out.validate.userToken.uid]).toEqual([true, uid]);

    const jwks = JSON.parse(out.jwks.jwksJson) as { keys: { kid: string }[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    expect(jwks.keys.map((k) => k.kid)).toContain(out.jwks.primarySigningKid);
    expect(jwks.keys.map((k) => k.kid)).toContain(out.jwks.primaryEncryptionKid);
    expect(out.jwks.maxAge).toMatch(/^\d+(\.\d+)?s$/);

    // What the example got is real: the session exists for STS, and its JWT verifies with the JWKS.
    const v = await call(t.session.validateUserToken, t.session, { token: { $case: 'userTokenId', value: user.userTokenId } }, appToken);
    expect([v.active, v.userToken?.uid]).toEqual([true, uid]);
    const cache = new JwksCache(() => call(t.pop.getJwks, t.pop, {}));
    const claims = JSON.parse(new TextDecoder().decode((await cache.verifyToken(out.userLogon.userTokenJwt)).payload)) as { sub: string; aud: string };
    expect([claims.sub, claims.aud]).toEqual([uid, 'shop']);

    // The optional step reports STS's refusal with the status and the sts-error-code trailer.
    expect(out.userSecret?.error).toMatchObject({ code: expectedSecretError.code, stsErrorCode: expectedSecretError.stsCode });
    expect(out.userSecret!.error!.code).toBeGreaterThan(0);
  });

  it('fails with exit code 1 and the STS error code when the user credentials are wrong', async () => {
    const res = await lang.run(exampleEnv('not the password'));
    expect(res.code).toBe(1);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain('LogonUser failed');
    expect(res.stderr).toContain('invalid user credentials');
    expect(res.stderr).toMatch(/gRPC 16 (Unauthenticated|UNAUTHENTICATED)/); // each language names the status its way
    expect(res.stderr).toMatch(/sts-error-code ["']invalid_credentials["']/);
  });

  it('refuses to run without the required settings (usage, exit code 64)', async () => {
    const res = await lang.run({ STS_ADDRESS: t.address, STS_APP_ID: '', STS_APP_SECRET: '', STS_USERNAME: '', STS_PASSWORD: '' });
    expect(res.code).toBe(64);
    expect(res.stderr).toContain('required');
  });
});

describe('Python sts_client', () => {
  it('renews the application token lazily at 80% of its lifetime and logs on again when a renewal is refused', async () => {
    // The client's clock is injected; STS keeps real time, so the renewals are real RPCs on real tokens.
    const script = `
import json, os, sys
sys.path.insert(0, os.path.join(os.environ["ROOT"], "clients", "python"))
from sts_client import StsClient, StsError, session_pb2
now = [1000.0]
out = {}
with StsClient(os.environ["STS_ADDRESS"], application_id="shop", application_secret=os.environ["STS_APP_SECRET"], clock=lambda: now[0]) as c:
    first = c.application_token()
    now[0] += 0.79 * c._lifetime
    out["before80"] = c.application_token() == first and c._obtained == 1000.0
    now[0] += 0.02 * c._lifetime
    out["renewedSame"] = c.application_token() == first
    out["renewedFrom"] = c._obtained
    c.call(c.session.ReleaseApplicationToken, session_pb2.ReleaseApplicationTokenRequest(application_token_id=first))
    now[0] += 0.9 * c._lifetime
    second = c.application_token()
    out["newToken"] = second != first
    out["info"] = c.call(c.session.GetApplicationInfo, session_pb2.GetApplicationInfoRequest()).application.application_id
    try:
        c.call(c.session.LogonUser, session_pb2.LogonUserRequest(user_credential=session_pb2.UserCredential(username="dave", password="wrong")))
    except StsError as e:
        out["error"] = [e.code.name, e.sts_code, e.details]
    out["tokens"] = [first, second]
print(json.dumps(out))
`;
    pythonReady();
    const res = await run(PYTHON, ['-c', script], { env: { ROOT, STS_ADDRESS: t.address, STS_APP_SECRET: appSecret, PYTHONDONTWRITEBYTECODE: '1' } });
    expect(res.code, res.stderr).toBe(0);
    const out = JSON.parse(res.stdout) as { before80: boolean; renewedSame: boolean; renewedFrom: number; newToken: boolean; info: string; error: string[]; tokens: string[] };
    expect(out).toMatchObject({ before80: true, renewedSame: true, newToken: true, info: 'shop', error: ['UNAUTHENTICATED', 'invalid_credentials', 'invalid user credentials'] });
    expect(out.renewedFrom).toBeGreaterThan(1000);
    // STS agrees: the first token was released, the second is active.
    const [first, second] = out.tokens;
    const check = (id: string) => call(t.session.validateApplicationToken, t.session, { applicationTokenId: id }, appToken);
    expect([(await check(first!)).active, (await check(second!)).active]).toEqual([false, true]);
  });
});
