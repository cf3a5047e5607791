/**
 * The Go and Python clients' behaviour (clients/go/stsclient, clients/python/sts_client) against real STS
 * servers, through each language's own tests (clients/go/stsclient/client_test.go,
 * clients/python/tests/test_client.py): TLS by default, logon at first use, renewal at 80% of the lifetime and
 * a new logon when refused or at the absolute lifetime, deadlines, retries of idempotent reads only, the error
 * fields, offline JWT verification with the cached JWKS and single-use credential JWEs. These are the README's
 * client table, row by row; test/client-ts.test.ts checks the TypeScript client the same way.
 *
 * This file starts the servers, passes them in STSCLIENT_TEST_* variables and runs the language tests; each
 * expected test must report a pass (a missing or skipped one fails here). One server runs on a manual clock
 * that the tests advance through a small HTTP control endpoint, so renewals are real RPCs on real tokens.
 * The Go toolchain, its module cache and the Python venv come from scripts/ensure-tools.sh (`npm test`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type Server, createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { freePort } from './helpers/net.js';
import { addRole, createApp, createUser } from './helpers/directory.js';
import { ROOT, run, runOk } from './helpers/process.js';
import { type TestSts, startTestSts } from './helpers/server.js';

const PASSWORD = 'a long enough password';
const MIN = 60_000;
const PYTHON = join(ROOT, '.tools/python/bin/python');

let clockSts: TestSts;
let sts: TestSts;
let tlsSts: TestSts;
let control: Server;
let pki: string;
let env: NodeJS.ProcessEnv;


/** A CA and a server certificate for 127.0.0.1 (openssl). */
function makePki(dir: string): void {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test-ca', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=server');
  writeFileSync(join(dir, 'server.ext'), 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'server.pem', '-extfile', 'server.ext');
}

beforeAll(async () => {
  // On a manual clock: application tokens live 1 min, at most 2.2 min.
  const clock = new ManualClock(Date.UTC(2026, 5, 1));
  clockSts = await startTestSts({ clock, overrides: { 'session.applicationTokenLifetimeMs': MIN, 'session.applicationTokenMaxLifetimeMs': 2.2 * MIN } });
  const { secret: clockSecret } = await createApp(clockSts, 'shop');
  control = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const ms = Number(url.searchParams.get('ms'));
    if (req.method !== 'POST' || url.pathname !== '/advance' || !(Number.isInteger(ms) && ms >= 0)) {
      res.writeHead(400).end('POST /advance?ms=<non-negative integer>');
      return;
    }
    clock.advance(ms);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ now: clock.now() }));
  });
  await new Promise<void>((r) => control.listen(0, '127.0.0.1', r));

  // Real time, strict throttling (a username is refused after 2 failures); "shop" may Decrypt.
  sts = await startTestSts({ overrides: { 'session.throttleFreeFailures': 0, 'session.throttleMaxFailures': 2 } });
  const { secret } = await createApp(sts, 'shop', { trusted: true });
  const uid = await createUser(sts, 'alice', PASSWORD);
  await addRole(sts, uid, 'shop', 'buyer');
  for (const variant of ['go', 'sync', 'async']) await createUser(sts, `mallory-${variant}`, PASSWORD);

  pki = mkdtempSync(join(tmpdir(), 'sts-clients-pki-'));
  makePki(pki);
  tlsSts = await startTestSts({ overrides: { 'tls.certFile': join(pki, 'server.pem'), 'tls.keyFile': join(pki, 'server.key') } });

  env = {
    STSCLIENT_TEST_CLOCK_ADDRESS: clockSts.address,
    STSCLIENT_TEST_CLOCK_SECRET: clockSecret,
    STSCLIENT_TEST_CONTROL: `http://127.0.0.1:${(control.address() as AddressInfo).port}`,
    STSCLIENT_TEST_ADDRESS: sts.address,
    STSCLIENT_TEST_SECRET: secret,
    STSCLIENT_TEST_PASSWORD: PASSWORD,
    STSCLIENT_TEST_ISSUER: 'urn:sts:local',
    STSCLIENT_TEST_TLS_ADDRESS: tlsSts.address,
    STSCLIENT_TEST_CA_FILE: join(pki, 'ca.pem'),
    STSCLIENT_TEST_UNUSED_ADDRESS: `127.0.0.1:${await freePort()}`,
    PYTHONDONTWRITEBYTECODE: '1',
  };
});

afterAll(async () => {
  await new Promise<void>((r) => (control ? control.close(() => r()) : r()));
  for (const s of [clockSts, sts, tlsSts]) await s?.stop(true);
  if (pki) rmSync(pki, { recursive: true, force: true });
});

/** Each name must have passed (and none failed) in a language test's verbose output. */
function expectPassed(output: string, passed: RegExp, names: string[]): void {
  const seen = [...output.matchAll(passed)].map((m) => m[1]);
  expect(seen.sort()).toEqual([...names].sort());
}

/** The behaviour tests: Go name, Python name. */
const BEHAVIOUR: [string, string][] = [
  ['LogonAtFirstUseAndUserSession', 'logon_at_first_use_and_user_session'],
  ['RenewalAt80PercentAndLogonWhenRefused', 'renewal_at_80_percent_and_logon_when_refused'],
  ['RenewalStopsAtAbsoluteLifetime', 'renewal_stops_at_absolute_lifetime'],
  ['KeysEncryptAndVerifyOffline', 'keys_encrypt_and_verify_offline'],
  ['CredentialJweIsSingleUse', 'credential_jwe_is_single_use'],
  ['RetriesOnlyIdempotentReads', 'retries_only_idempotent_reads'],
  ['ErrorCarriesCodeStsCodeAndRetryAfter', 'error_carries_code_sts_code_and_retry_after'],
  ['DeadlineOnEveryCall', 'deadline_on_every_call'],
  ['TLSByDefault', 'tls_by_default'],
];

describe('Go client (stsclient)', () => {
  it('passes its behaviour tests against real servers', { timeout: 600_000 }, async () => {
    // Built offline from the module cache ensure-tools filled (go.sum pins every module); the first build on a
    // machine compiles grpc-go, so give it time.
    const bin = mkdtempSync(join(tmpdir(), 'sts-go-test-'));
    try {
      await runOk('go', ['test', '-c', '-o', join(bin, 'stsclient.test'), './stsclient'], { cwd: join(ROOT, 'clients/go'), env: { GOFLAGS: '-mod=readonly' }, timeoutMs: 540_000 });
      const res = await run(join(bin, 'stsclient.test'), ['-test.v', '-test.count=1'], { cwd: join(ROOT, 'clients/go'), env, timeoutMs: 300_000 });
      expect(res.code, res.stdout + res.stderr).toBe(0);
      expect(res.stdout).not.toMatch(/--- (FAIL|SKIP)/);
      expectPassed(res.stdout, /^--- PASS: Test(\w+) /gm, [...BEHAVIOUR.map(([go]) => go), 'CloseStopsTheTimer']);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});

describe('Python client (sts_client)', () => {
  it('passes its behaviour tests against real servers, with StsClient and AsyncStsClient alike', { timeout: 300_000 }, async () => {
    expect(existsSync(PYTHON), 'the Python venv is missing: run scripts/ensure-tools.sh (npm test does it)').toBe(true);
    const res = await run(PYTHON, ['-m', 'unittest', '-v', 'tests.test_client'], { cwd: join(ROOT, 'clients/python'), env: { ...env, GRPC_VERBOSITY: 'ERROR' }, timeoutMs: 280_000 });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/^OK$/m);
    expect(res.stderr).not.toMatch(/\.\.\. (FAIL|ERROR|skipped)|Warning:/);
    const names = [...BEHAVIOUR.map(([, py]) => py), 'close_fails_later_calls'];
    // gRPC's own log lines (failed TLS handshakes) may come between a test's name and its "ok".
    expectPassed(res.stderr, /^test_(\w+) \(tests\.test_client\.SyncClientTest\.\w+\) \.\.\. (?:.*\n)*?ok$/gm, names);
    expectPassed(res.stderr, /^test_(\w+) \(tests\.test_client\.AsyncClientTest\.\w+\) \.\.\. (?:.*\n)*?ok$/gm, names);
  });
});
