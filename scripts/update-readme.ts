/**
 * Regenerates the parts of README.md that are derived from code (the configuration table, the authorization and
 * session access tables), between `<!-- config:start -->` and `<!-- config:end -->` (and the `authorization`
 * and `session-access` pairs). `npm run docs`; a test fails when the README is stale.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { optionsMarkdown } from '../src/config/defaults.js';
import { policyMarkdown, sessionAccessMarkdown } from '../src/auth/policy.js';

const path = new URL('../README.md', import.meta.url);
const readme = readFileSync(path, 'utf8');
const next = readme
  .replace(/(<!-- config:start -->\n)[\s\S]*?(<!-- config:end -->)/, `$1${optionsMarkdown()}\n$2`)
  .replace(/(<!-- authorization:start -->\n)[\s\S]*?(<!-- authorization:end -->)/, `$1${policyMarkdown()}\n$2`)
  .replace(/(<!-- session-access:start -->\n)[\s\S]*?(<!-- session-access:end -->)/, `$1${sessionAccessMarkdown()}\n$2`);
if (next === readme) {
  console.log('README.md is up to date');
} else {
  writeFileSync(path, next);
  console.log('README.md updated');
}
