/**
 * The browser test page (http.testPage; Whydah's "test page" of its dev and test modes): static files from
 * web/test-page, read once at start-up. The page fetches the JWKS from the same origin and encrypts in the
 * browser with jose, bundled into web/test-page/page.js at build time (scripts/build-test-page.ts), so it
 * loads nothing from anywhere else.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { StartupError } from '../errors.js';

export const TEST_PAGE_PATH = '/test-page';

/** web/test-page, from src/http (tsx) and from dist/src/http (the build copies it to dist/web/test-page). */
const DIR = fileURLToPath(new URL('../../web/test-page/', import.meta.url));

export interface StaticAsset {
  body: Buffer;
  type: string;
}

const FILES: [path: string, file: string, type: string][] = [
  [TEST_PAGE_PATH, 'index.html', 'text/html; charset=utf-8'],
  [`${TEST_PAGE_PATH}/page.js`, 'page.js', 'text/javascript; charset=utf-8'],
  [`${TEST_PAGE_PATH}/page.css`, 'page.css', 'text/css; charset=utf-8'],
  [`${TEST_PAGE_PATH}/favicon.svg`, 'favicon.svg', 'image/svg+xml'],
];

/**
 * What the page may do (CSP Level 3): run and style itself from this origin and fetch from it (the JWKS),
 * nothing else; no inline script, no forms posted anywhere, no framing.
 */
export const TEST_PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** The page's files by URL path. Fails start-up, naming http.testPage, when one cannot be read. */
export function loadTestPage(dir = DIR): Map<string, StaticAsset> {
  const assets = new Map<string, StaticAsset>();
  for (const [path, file, type] of FILES) {
    let body: Buffer;
    try {
      body = readFileSync(dir + file);
    } catch (err) {
      throw new StartupError('config_invalid', `http.testPage: cannot read the page's file ${dir + file} (${(err as NodeJS.ErrnoException).code ?? 'error'}); turn http.testPage off or reinstall`, { cause: err });
    }
    assets.set(path, { body, type });
  }
  return assets;
}
