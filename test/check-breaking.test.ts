/**
 * scripts/check-breaking.sh, the CI step that runs `buf breaking` against the previous commit: in a scratch
 * git repository holding this repo's buf.yaml and proto/, a compatible change passes, a renumbered field fails,
 * the same break passes once CHANGELOG.md notes it in the same commit, an older note does not wave a later
 * break through, and a shallow clone (depth 1) deepens itself to find the previous commit.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, run, runOk } from './helpers/process.js';

let dir: string;
const BUF = join(ROOT, 'node_modules/.bin/buf');
const git = (cwd: string, ...args: string[]) => runOk('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.org', ...args], { cwd });
const check = (cwd: string) => run('bash', ['scripts/check-breaking.sh'], { cwd, env: { BUF } });

function edit(file: string, from: string, to: string): void {
  const path = join(dir, file);
  const text = readFileSync(path, 'utf8');
  expect(text).toContain(from);
  writeFileSync(path, text.replace(from, to));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sts-breaking-'));
  cpSync(join(ROOT, 'proto'), join(dir, 'proto'), { recursive: true });
  mkdirSync(join(dir, 'scripts'));
  cpSync(join(ROOT, 'scripts/check-breaking.sh'), join(dir, 'scripts/check-breaking.sh'));
  cpSync(join(ROOT, 'buf.yaml'), join(dir, 'buf.yaml'));
  writeFileSync(join(dir, 'CHANGELOG.md'), '# Changelog\n\n## Unreleased\n');
  await git(dir, 'init', '-q', '-b', 'main');
  await git(dir, 'add', '.');
  await git(dir, 'commit', '-q', '-m', 'first');
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('scripts/check-breaking.sh', () => {
  it('passes the first commit and compatible changes, fails a break unless the same commit notes it in CHANGELOG.md', { timeout: 120_000 }, async () => {
    const first = await check(dir);
    expect([first.code, first.stdout.trim()]).toEqual([0, 'check-breaking: HEAD is the first commit: nothing to compare with']);

    // Adding a field is compatible.
    edit('proto/sts/v1/session.proto', '  string user_ticket = 1;\n}', '  string user_ticket = 1;\n  // A new field.\n  string note = 2;\n}');
    await git(dir, 'commit', '-q', '-am', 'add a field');
    const added = await check(dir);
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).toContain('compatible');

    // Renumbering a field breaks deployed clients.
    edit('proto/sts/v1/session.proto', 'string note = 2;', 'string note = 3;');
    await git(dir, 'commit', '-q', '-am', 'renumber');
    const broken = await check(dir);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/note/);
    expect(broken.stderr).toContain("line starting '- Breaking contract change:'");

    // The same break with a note in the same commit passes.
    writeFileSync(join(dir, 'CHANGELOG.md'), '# Changelog\n\n## Unreleased\n\n- Breaking contract change: `note` is field 3; regenerate clients.\n');
    await git(dir, 'commit', '-q', '-a', '--amend', '-m', 'renumber, noted');
    const noted = await check(dir);
    expect(noted.code, noted.stderr).toBe(0);
    expect(noted.stdout).toContain('deliberate');

    // A later break is not waved through by that older note.
    edit('proto/sts/v1/session.proto', 'string note = 3;', 'string note = 4;');
    await git(dir, 'commit', '-q', '-am', 'renumber again');
    expect((await check(dir)).code).toBe(1);
    await git(dir, 'reset', '-q', '--hard', 'HEAD~1');
  });

  it('deepens a shallow clone to read the previous commit', { timeout: 120_000 }, async () => {
    const shallow = mkdtempSync(join(tmpdir(), 'sts-breaking-shallow-'));
    try {
      await git(shallow, 'clone', '-q', '--depth', '1', `file://${dir}`, 'repo');
      const repo = join(shallow, 'repo');
      expect((await runOk('git', ['rev-list', '--count', 'HEAD'], { cwd: repo })).stdout.trim()).toBe('1');
      const res = await check(repo);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stderr).toContain('fetching one more commit');
      expect(res.stdout).toContain('deliberate');
    } finally {
      rmSync(shallow, { recursive: true, force: true });
    }
  });
});
