/**
 * Standard JOSE libraries of three languages against a real STS, through its HTTP endpoints only (discovery,
 * then the jwks_uri): user tokens from LogonUser and from ticket redemption verify, with iss, aud and typ
 * checked, and refusals where they must; data each library encrypts to the POP key decrypts through
 * PopService.Decrypt; and after RotateKeys each picks up the new keys through its usual refresh (the
 * JWKS client fetches again when it meets a token signed with a kid it does not know).
 *
 *   TypeScript  jose: createRemoteJWKSet + jwtVerify, CompactEncrypt (in this process)
 *   Go          keyfunc/v3 (jwkset) + golang-jwt/v5, go-jose/v4            test/interop/go
 *   Python      PyJWT's PyJWKClient + jwt.decode, jwcrypto                  test/interop/python
 *
 * The Go modules and the Python venv come from scripts/ensure-tools.sh (`npm test` runs it).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { CompactEncrypt, type JWK, createRemoteJWKSet, importJWK, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyKind } from '../src/gen/sts/v1/pop.js';
import { call } from './helpers/call.js';
import { adminToken, createApp, createUser } from './helpers/directory.js';
import { type TestSts, startTestSts } from './helpers/server.js';

const ROOT = resolve(import.meta.dirname, '..');
const PYTHON = join(ROOT, '.tools/interop-python/bin/python');
const ISSUER = 'https://sts.example.test';
const PASSWORD = 'a long enough password';
const USER_TOKEN_TYP = 'sts-user+jwt';

interface Answer {
  ok: boolean;
  error?: string;
  kid?: string;
  claims?: Record<string, unknown>;
  jwe?: string;
}

/** One language's libraries, holding their key cache across calls as a long-running service would. */
interface Library {
  verify(token: string, issuer: string, audience: string): Promise<Answer>;
  encrypt(text: string): Promise<Answer>;
  close(): void;
}

/** jose, in this process. */
async function joseLibrary(discoveryUrl: string): Promise<Library> {
  const doc = (await (await fetch(discoveryUrl)).json()) as { jwks_uri: string; id_token_signing_alg_values_supported: string[] };
  // A short cooldown: the refresh on an unknown kid may happen a second after the last fetch (default 30 s).
  const jwks = createRemoteJWKSet(new URL(doc.jwks_uri), { cooldownDuration: 1000 });
  const failed = (err: unknown): Answer => ({ ok: false, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  return {
    async verify(token, issuer, audience) {
      try {
        const { payload, protectedHeader } = await jwtVerify(token, jwks, {
          issuer,
          audience,
          typ: USER_TOKEN_TYP,
          algorithms: doc.id_token_signing_alg_values_supported,
          requiredClaims: ['exp', 'iat', 'sub'],
        });
        return { ok: true, kid: protectedHeader.kid!, claims: payload as Record<string, unknown> };
      } catch (err) {
        return failed(err);
      }
    },
    async encrypt(text) {
      try {
        // The remote set's cached JWKS: STS lists its PRIMARY key first.
        if (!jwks.jwks()) await jwks.reload();
        const jwk = jwks.jwks()!.keys.find((k: JWK) => k.use === 'enc')!;
        const key = await importJWK(jwk, jwk.alg);
        const jwe = await new CompactEncrypt(new TextEncoder().encode(text)).setProtectedHeader({ alg: jwk.alg!, enc: 'A256GCM', kid: jwk.kid!, cty: 'text/plain' }).encrypt(key);
        return { ok: true, kid: jwk.kid!, jwe };
      } catch (err) {
        return failed(err);
      }
    },
    close() {},
  };
}

/** A program speaking one JSON line per request and answer (test/interop/go, test/interop/python). */
function lineProgram(cmd: string, args: string[], env: NodeJS.ProcessEnv): Library & { stderr: () => string } {
  const child: ChildProcessWithoutNullStreams = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const waiting: ((line: string | undefined) => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => waiting.shift()?.(line));
  child.on('close', () => waiting.splice(0).forEach((w) => w(undefined)));
  let queue = Promise.resolve<unknown>(undefined);
  const ask = (request: Record<string, string>): Promise<Answer> => {
    const next = queue.then(
      () =>
        new Promise<Answer>((resolvePromise, reject) => {
          const timer = setTimeout(() => reject(new Error(`${cmd}: no answer within 120 s; stderr: ${stderr}`)), 120_000);
          waiting.push((line) => {
            clearTimeout(timer);
            if (line === undefined) reject(new Error(`${cmd} exited; stderr: ${stderr}`));
            else resolvePromise(JSON.parse(line) as Answer);
          });
          child.stdin.write(JSON.stringify(request) + '\n');
        }),
    );
    queue = next.catch(() => undefined);
    return next;
  };
  return {
    verify: (token, issuer, audience) => ask({ op: 'verify', token, issuer, audience }),
    encrypt: (text) => ask({ op: 'encrypt', text }),
    close: () => {
      child.stdin.end();
      child.kill();
    },
    stderr: () => stderr,
  };
}

let t: TestSts;
let bin: string;
let goBuild: { code: number; stderr: string };
let shopToken: string;
let crmToken: string;
let trustedToken: string;
let uid: string;
const libraries = new Map<string, Library>();

function run(cmd: string, args: string[], cwd: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code: code ?? -1, stderr }));
  });
}

beforeAll(async () => {
  // Offline after ensure-tools' `go mod download` (go.sum pins every module).
  bin = mkdtempSync(join(tmpdir(), 'sts-interop-'));
  goBuild = await run('go', ['build', '-o', join(bin, 'interop'), '.'], join(ROOT, 'test/interop/go'));

  t = await startTestSts({
    overrides: {
      'session.issuer': ISSUER,
      // A rotation takes effect a second after RotateKeys, so the test sees it happen on the real clock.
      'pop.encryption.stagingLeadMs': 1000,
      'pop.signing.stagingLeadMs': 1000,
      'pop.jwksMaxAgeMs': 1000,
    },
  });
  shopToken = (await createApp(t, 'shop')).token;
  crmToken = (await createApp(t, 'crm')).token;
  trustedToken = (await createApp(t, 'vault', { trusted: true })).token;
  uid = await createUser(t, 'dave', PASSWORD);

  const discoveryUrl = `${t.sts.http!.baseUrl}/.well-known/openid-configuration`;
  const env = { STS_DISCOVERY_URL: discoveryUrl, STS_JWKS_COOLDOWN_S: '1' };
  libraries.set('TypeScript (jose)', await joseLibrary(discoveryUrl));
  if (goBuild.code === 0) libraries.set('Go (keyfunc, golang-jwt, go-jose)', lineProgram(join(bin, 'interop'), [], env));
  if (existsSync(PYTHON)) libraries.set('Python (PyJWT, jwcrypto)', lineProgram(PYTHON, [join(ROOT, 'test/interop/python/interop.py')], { ...env, PYTHONDONTWRITEBYTECODE: '1' }));
}, 600_000);

afterAll(async () => {
  for (const l of libraries.values()) l.close();
  await t?.stop(true);
  if (bin) rmSync(bin, { recursive: true, force: true });
});

/** The library of a language; a missing toolchain fails the test (never skips it). */
function library(name: string): Library {
  if (name.startsWith('Go')) expect(goBuild.code, `go build of test/interop/go failed:\n${goBuild.stderr}`).toBe(0);
  if (name.startsWith('Python')) expect(existsSync(PYTHON), 'the venv .tools/interop-python is missing: run scripts/ensure-tools.sh (npm test does it)').toBe(true);
  return libraries.get(name)!;
}

const NAMES = ['TypeScript (jose)', 'Go (keyfunc, golang-jwt, go-jose)', 'Python (PyJWT, jwcrypto)'];

/** LogonUser through shop (with a ticket for crm), and crm's redemption of the ticket: two user tokens. */
async function userTokens(): Promise<{ logon: string; redeemed: string }> {
  const logon = await call(t.session.logonUser, t.session, { credential: { $case: 'userCredential', value: { username: 'dave', password: PASSWORD } }, ticketApplicationId: 'crm' }, shopToken);
  const redeemed = await call(t.session.getUserTokenByUserTicket, t.session, { userTicket: logon.userTicket }, crmToken);
  return { logon: logon.userTokenJwt, redeemed: redeemed.userTokenJwt };
}

const decrypt = (jwe: string) => call(t.pop.decrypt, t.pop, { jwe }, trustedToken);

describe.each(NAMES)('%s', (name) => {
  it('verifies user tokens from LogonUser and from ticket redemption through the jwks_uri, checking iss and aud', async () => {
    const lib = library(name);
    const { logon, redeemed } = await userTokens();
    const primarySigningKid = (await call(t.pop.getJwks, t.pop, {})).primarySigningKid;
    const a = await lib.verify(logon, ISSUER, 'shop');
    expect(a, a.error).toMatchObject({ ok: true, kid: primarySigningKid, claims: { iss: ISSUER, sub: uid, aud: 'shop' } });
    const b = await lib.verify(redeemed, ISSUER, 'crm');
    expect(b, b.error).toMatchObject({ ok: true, kid: primarySigningKid, claims: { iss: ISSUER, sub: uid, aud: 'crm' } });
  });

  it('refuses a token for another audience, from another issuer, tampered with, or not typed as a user token', async () => {
    const lib = library(name);
    const { logon, redeemed } = await userTokens();
    // Each library says why in its own words; each names the claim or the signature.
    expect(await lib.verify(redeemed, ISSUER, 'shop')).toMatchObject({ ok: false, error: expect.stringMatching(/aud/i) });
    expect(await lib.verify(logon, 'https://other-issuer.example', 'shop')).toMatchObject({ ok: false, error: expect.stringMatching(/iss/i) });
    const [h, p, s] = logon.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>;
    const forged = Buffer.from(JSON.stringify({ ...claims, sub: 'someone-else' })).toString('base64url');
    expect(await lib.verify(`${h}.${forged}.${s}`, ISSUER, 'shop')).toMatchObject({ ok: false, error: expect.stringMatching(/signature/i) });
    // A JWS STS signed through PopService.Sign with the same claims: a valid signature, but not a user token.
    const signed = await call(t.pop.sign, t.pop, { payload: Buffer.from(JSON.stringify(claims)), type: 'JWT', contentType: '' }, trustedToken);
    const typ = await lib.verify(signed.jws, ISSUER, 'shop');
    expect(typ.ok).toBe(false);
    expect(typ.error).toMatch(/typ/i);
  });

  it('encrypts to the POP key so that PopService.Decrypt returns the same text', async () => {
    const lib = library(name);
    const text = `secret from ${name}: blåbærsyltetøy ✓ ${'x'.repeat(100)}`;
    const e = await lib.encrypt(text);
    expect(e, e.error).toMatchObject({ ok: true, kid: (await call(t.pop.getJwks, t.pop, {})).primaryEncryptionKid });
    const d = await decrypt(e.jwe!);
    expect(Buffer.from(d.plaintext).toString('utf8')).toBe(text);
    expect([d.kid, d.contentType]).toEqual([e.kid, 'text/plain']);
  });
});

describe('after RotateKeys', () => {
  it('every library picks up the new signing and encryption keys through its usual refresh', async () => {
    for (const name of NAMES) library(name);
    const before = await call(t.pop.getJwks, t.pop, {});
    const created = (await call(t.pop.rotateKeys, t.pop, { kinds: [KeyKind.KEY_KIND_ENCRYPTION, KeyKind.KEY_KIND_SIGNING] }, adminToken(t))).created;
    const newSig = created.find((k) => k.kind === KeyKind.KEY_KIND_SIGNING)!.kid;
    const newEnc = created.find((k) => k.kind === KeyKind.KEY_KIND_ENCRYPTION)!.kid;
    // The new keys are STAGED for stagingLeadMs (1 s), then PRIMARY.
    for (let i = 0; ; i++) {
      const now = await call(t.pop.getJwks, t.pop, {});
      if (now.primarySigningKid === newSig && now.primaryEncryptionKid === newEnc) break;
      expect(i, 'the rotated keys did not become PRIMARY within 60 s').toBeLessThan(300);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(newSig).not.toBe(before.primarySigningKid);
    const { logon, redeemed } = await userTokens();
    for (const name of NAMES) {
      const lib = libraries.get(name)!;
      // Signed with a kid the library's cached JWKS does not have: it must fetch the JWKS again.
      const a = await lib.verify(logon, ISSUER, 'shop');
      expect([name, a.ok, a.kid, a.error]).toEqual([name, true, newSig, undefined]);
      expect((await lib.verify(redeemed, ISSUER, 'crm')).ok).toBe(true);
      const e = await lib.encrypt(`after rotation, ${name}`);
      expect([name, e.ok, e.kid, e.error]).toEqual([name, true, newEnc, undefined]);
      expect(Buffer.from((await decrypt(e.jwe!)).plaintext).toString('utf8')).toBe(`after rotation, ${name}`);
    }
  });
});
