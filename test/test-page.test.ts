/**
 * The browser test page (http.testPage) in headless Chromium (Debian's chromium, installed by
 * scripts/ensure-tools.sh, driven by playwright-core) against a real STS on 127.0.0.1:0: text encrypted in
 * the page decrypts through PopService.Decrypt to the same text, and the LogonUser credential JWE the page
 * makes logs the user on. The page loads nothing from another origin and logs no error (its CSP included).
 * A screenshot is kept in test-artifacts/test-page.png for a person to look at.
 *
 * Also: the committed bundle web/test-page/page.js is what scripts/build-test-page.ts makes today, and it
 * is what STS serves.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_PAGE_BUNDLE, bundleTestPage } from '../scripts/build-test-page.js';
import { call, callError } from './helpers/call.js';
import { addRole, createApp, createUser } from './helpers/directory.js';
import { httpGet } from './helpers/http.js';
import { type TestSts, startTestSts } from './helpers/server.js';

const ROOT = resolve(import.meta.dirname, '..');
const CHROMIUM = '/usr/bin/chromium';
export const SCREENSHOT = join(ROOT, 'test-artifacts/test-page.png');
const PASSWORD = 'correct horse battery staple';

let t: TestSts;
let browser: Browser | undefined;
let page: Page;
let shopToken: string;
let trustedToken: string;
let uid: string;
const requests: string[] = [];
const problems: string[] = [];

beforeAll(async () => {
  expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/ensure-tools.sh chromium (npm test does it)`).toBe(true);
  t = await startTestSts();
  shopToken = (await createApp(t, 'shop')).token;
  trustedToken = (await createApp(t, 'vault', { trusted: true })).token;
  uid = await createUser(t, 'erin', PASSWORD);
  await addRole(t, uid, 'shop', 'customer');
  browser = await chromium.launch({ executablePath: CHROMIUM, timeout: 120_000 });
  page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  page.setDefaultTimeout(60_000);
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await t?.stop(true);
});

describe('the browser test page in Chromium', () => {
  it('encrypts typed text in the browser to the POP key; PopService.Decrypt returns the same text', async () => {
    const base = t.sts.http!.baseUrl;
    await page.goto(`${base}/test-page`);
    await page.locator('#status', { hasText: 'ready' }).waitFor();
    const jwks = await call(t.pop.getJwks, t.pop, {});
    expect(await page.locator('#key-kid').textContent()).toBe(jwks.primaryEncryptionKid);

    const text = 'Personnummer 010203 12345, kontonummer 1234.56.78903 ✓';
    await page.fill('#plaintext', text);
    await page.click('#encrypt');
    await page.locator('#status', { hasText: 'text encrypted' }).waitFor();
    const jwe = await page.inputValue('#jwe');
    expect(jwe.split('.')).toHaveLength(5);
    expect(jwe).not.toContain(Buffer.from(text).toString('base64url').slice(0, 12));
    const header = JSON.parse(Buffer.from(jwe.split('.')[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    expect(header).toMatchObject({ kid: jwks.primaryEncryptionKid, alg: 'ECDH-ES+A256KW', enc: 'A256GCM', cty: 'text/plain' });

    const d = await call(t.pop.decrypt, t.pop, { jwe }, trustedToken);
    expect(Buffer.from(d.plaintext).toString('utf8')).toBe(text);
    expect(d.kid).toBe(jwks.primaryEncryptionKid);
  }, 180_000);

  it('makes a LogonUser credential JWE that logs the user on, once', async () => {
    await page.fill('#username', 'erin');
    await page.fill('#password', PASSWORD);
    await page.fill('#audience', 'shop');
    await page.click('#make-credential');
    await page.locator('#status', { hasText: 'credential JWE made' }).waitFor();
    const jwe = await page.inputValue('#credential-jwe');
    // The password is not left in the form.
    expect(await page.inputValue('#password')).toBe('');
    const header = JSON.parse(Buffer.from(jwe.split('.')[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    expect(header.typ).toBe('sts-credential+jwe');

    mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });

    const logon = await call(t.session.logonUser, t.session, { credential: { $case: 'userCredentialJwe', value: jwe }, ticketApplicationId: '' }, shopToken);
    expect([logon.userToken?.uid, logon.userToken?.username, logon.userToken?.applicationId]).toEqual([uid, 'erin', 'shop']);
    // Single use; and a credential JWE never opens through Decrypt (its type is reserved for STS).
    expect((await callError(call(t.session.logonUser, t.session, { credential: { $case: 'userCredentialJwe', value: jwe }, ticketApplicationId: '' }, shopToken))).details).toBe('invalid user credentials');
    expect((await callError(call(t.pop.decrypt, t.pop, { jwe }, trustedToken))).details).toMatch(/decryption failed/);
  }, 180_000);

  it('loaded everything from its own origin and reported no error', () => {
    const base = t.sts.http!.baseUrl;
    expect(requests.length).toBeGreaterThanOrEqual(5); // page, script, style sheet, icon, JWKS
    for (const url of requests) expect(url.startsWith(`${base}/`), url).toBe(true);
    expect(requests).toContain(`${base}/.well-known/jwks.json`);
    expect(problems).toEqual([]);
    expect(readFileSync(SCREENSHOT).subarray(1, 4).toString('latin1')).toBe('PNG');
  });
});

describe('the page bundle', () => {
  it('is what scripts/build-test-page.ts makes from page.ts and the installed jose and esbuild', async () => {
    const fresh = await bundleTestPage();
    expect(fresh.length).toBeGreaterThan(10_000);
    expect(readFileSync(TEST_PAGE_BUNDLE, 'utf8') === fresh, 'web/test-page/page.js is stale: run `npm run build:test-page` and commit it').toBe(true);
  }, 60_000);

  it('is the file STS serves', async () => {
    const res = await httpGet(t.sts.http!.port, '/test-page/page.js');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(res.body).toBe(readFileSync(TEST_PAGE_BUNDLE, 'utf8'));
    const html = await httpGet(t.sts.http!.port, '/test-page');
    expect(html.headers['content-security-policy']).toContain("script-src 'self'");
    expect(html.body).not.toMatch(/<script(?![^>]*\bsrc=)/); // no inline script: the CSP would block it
  });
});
