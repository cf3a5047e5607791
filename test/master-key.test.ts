/**
 * The master key ring: AES-256-GCM envelopes bound to their record (AAD) and to a key id, rotation through a
 * ring of several keys, parsing of key files / STS_MASTER_KEY without ever echoing key material, and the
 * dev-only generated <dataDir>/master.key.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  EnvelopeError,
  type MasterKey,
  MasterKeyRing,
  formatMasterKeys,
  loadMasterKeyRing,
  newMasterKey,
  parseMasterKeys,
} from '../src/crypto/master-key.js';
import { StartupError } from '../src/errors.js';

const key = (id: string): MasterKey => ({ id, key: randomBytes(32) });
const AAD = 'sts:key:kid-1';

function envelopeError(fn: () => unknown): EnvelopeError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected an EnvelopeError').toBeInstanceOf(EnvelopeError);
  return caught as EnvelopeError;
}

function startupError(fn: () => unknown, code: StartupError['code']): StartupError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a StartupError').toBeInstanceOf(StartupError);
  expect((caught as StartupError).code).toBe(code);
  return caught as StartupError;
}

describe('MasterKeyRing', () => {
  it('seals and opens a round trip, with a fresh IV each time', () => {
    const ring = new MasterKeyRing([key('a')]);
    const plaintext = Buffer.from('the private key of kid-1');
    const e1 = ring.seal(plaintext, AAD);
    const e2 = ring.seal(plaintext, AAD);
    expect(e1.equals(e2)).toBe(false);
    expect(e1.includes(plaintext)).toBe(false);
    expect(ring.open(e1, AAD).equals(plaintext)).toBe(true);
    expect(ring.open(e2, AAD).equals(plaintext)).toBe(true);
    expect(MasterKeyRing.envelopeKeyId(e1)).toBe('a');
  });

  it('seals an empty plaintext', () => {
    const ring = new MasterKeyRing([key('a')]);
    expect(ring.open(ring.seal(Buffer.alloc(0), AAD), AAD)).toHaveLength(0);
  });

  it('binds the envelope to its AAD', () => {
    const ring = new MasterKeyRing([key('a')]);
    const env = ring.seal(Buffer.from('secret'), 'sts:key:kid-1');
    envelopeError(() => ring.open(env, 'sts:key:kid-2'));
    envelopeError(() => ring.open(env, ''));
    expect(ring.open(env, 'sts:key:kid-1').toString()).toBe('secret');
  });

  it('rejects an envelope with any single byte changed', () => {
    const ring = new MasterKeyRing([key('mk-1')]);
    const env = ring.seal(Buffer.from('sixteen byte msg'), AAD);
    for (let i = 0; i < env.length; i++) {
      const tampered = Buffer.from(env);
      tampered[i] = tampered[i]! ^ 0x01;
      envelopeError(() => ring.open(tampered, AAD));
    }
  });

  it('rejects truncated and foreign data', () => {
    const ring = new MasterKeyRing([key('a')]);
    const env = ring.seal(Buffer.from('x'), AAD);
    envelopeError(() => ring.open(env.subarray(0, env.length - 1), AAD));
    envelopeError(() => ring.open(env.subarray(0, 10), AAD));
    envelopeError(() => ring.open(Buffer.alloc(0), AAD));
    envelopeError(() => ring.open(Buffer.from('{"not":"an envelope"}'), AAD));
  });

  it('a ring decrypts with every key and encrypts with the first', () => {
    const oldKey = key('old');
    const newKey = key('new');
    const before = new MasterKeyRing([oldKey]);
    const sealedByOld = before.seal(Buffer.from('record'), AAD);

    const rotated = new MasterKeyRing([newKey, oldKey]);
    expect(rotated.primary.id).toBe('new');
    expect(rotated.ids).toEqual(['new', 'old']);
    expect(rotated.open(sealedByOld, AAD).toString()).toBe('record');

    const sealedByNew = rotated.seal(Buffer.from('record'), AAD);
    expect(MasterKeyRing.envelopeKeyId(sealedByNew)).toBe('new');
    // The old ring does not know the new key.
    const err = envelopeError(() => before.open(sealedByNew, AAD));
    expect(err.message).toContain('"new"');
  });

  it('refuses an envelope of an unknown key id, and of the same id with other key bytes', () => {
    const sealed = new MasterKeyRing([key('a')]).seal(Buffer.from('x'), AAD);
    const other = new MasterKeyRing([key('b')]);
    expect(other.has('a')).toBe(false);
    expect(envelopeError(() => other.open(sealed, AAD)).message).toContain('"a"');
    envelopeError(() => new MasterKeyRing([key('a')]).open(sealed, AAD));
  });

  it('needs at least one key', () => {
    expect(() => new MasterKeyRing([])).toThrow();
  });
});

describe('parseMasterKeys', () => {
  it('parses lines and comma separated entries, skipping blanks and comments, in order', () => {
    const a = key('a');
    const b = key('key_2-B');
    const text = `# master keys\n\n${a.id}:${a.key.toString('base64url')}\n  ${b.id}:${b.key.toString('base64url')}  \n`;
    const keys = parseMasterKeys(text, 'test');
    expect(keys.map((k) => k.id)).toEqual(['a', 'key_2-B']);
    expect(keys[0]!.key.equals(a.key)).toBe(true);
    expect(keys[1]!.key.equals(b.key)).toBe(true);
    const fromEnv = parseMasterKeys(`${b.id}:${b.key.toString('base64url')},${a.id}:${a.key.toString('base64url')}`, 'STS_MASTER_KEY');
    expect(fromEnv.map((k) => k.id)).toEqual(['key_2-B', 'a']);
  });

  it('formatMasterKeys output parses back to the same keys', () => {
    const keys = [newMasterKey(), newMasterKey()];
    const parsed = parseMasterKeys(formatMasterKeys(keys), 'file');
    expect(parsed.map((k) => [k.id, k.key.toString('hex')])).toEqual(keys.map((k) => [k.id, k.key.toString('hex')]));
  });

  const material = randomBytes(32).toString('base64url');
  const cases: [string, string, string][] = [
    ['no entry', '# only a comment\n\n', 'no master key'],
    ['no separator', material, 'id:base64url'],
    ['bad id', `bad id!:${material}`, 'key id'],
    ['id too long', `${'x'.repeat(65)}:${material}`, 'key id'],
    ['not base64url (standard base64)', `a:+${material.slice(1)}`, 'base64url'],
    ['not base64url (padding)', `a:${material}=`, 'base64url'],
    ['wrong length (31 bytes)', `a:${randomBytes(31).toString('base64url')}`, '32 bytes'],
    ['wrong length (33 bytes)', `a:${randomBytes(33).toString('base64url')}`, '32 bytes'],
    ['empty key', 'a:', 'base64url'],
    ['duplicate id', `a:${material}\na:${randomBytes(32).toString('base64url')}`, 'duplicate'],
  ];
  for (const [name, text, needle] of cases) {
    it(`refuses ${name} with master_key_invalid, without echoing key material`, () => {
      const err = startupError(() => parseMasterKeys(text, 'masterKey.file /etc/sts/master.key'), 'master_key_invalid');
      expect(err.exitCode).toBe(65);
      expect(err.message).toContain(needle);
      expect(err.message).toContain('masterKey.file /etc/sts/master.key');
      // No key material: neither the value nor any 8-character piece of any base64 run of the input.
      for (const run of text.match(/[A-Za-z0-9_+/-]{16,}/g) ?? []) {
        for (let i = 0; i + 8 <= run.length; i += 4) expect(err.message).not.toContain(run.slice(i, i + 8));
      }
    });
  }
});

describe('loadMasterKeyRing', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'sts-mk-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('dev: generates <dataDir>/master.key readable by the owner only, then reuses it', () => {
    const generated: string[] = [];
    const first = loadMasterKeyRing({ file: '', env: undefined, dataDir: dir, profile: 'dev', onGenerated: (p) => generated.push(p) });
    const path = join(dir, 'master.key');
    expect(generated).toEqual([path]);
    expect(existsSync(path)).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const text = readFileSync(path, 'utf8');
    expect(parseMasterKeys(text, 'x')[0]!.key.equals(first.primary.key)).toBe(true);

    const sealed = first.seal(Buffer.from('kept'), AAD);
    const second = loadMasterKeyRing({ file: '', env: undefined, dataDir: dir, profile: 'dev', onGenerated: (p) => generated.push(p) });
    expect(generated).toHaveLength(1);
    expect(second.primary.id).toBe(first.primary.id);
    expect(second.open(sealed, AAD).toString()).toBe('kept');
    expect(readFileSync(path, 'utf8')).toBe(text);
  });

  it('dev: a missing data directory is data_dir_unusable', () => {
    const err = startupError(() => loadMasterKeyRing({ file: '', env: undefined, dataDir: join(dir, 'missing'), profile: 'dev' }), 'data_dir_unusable');
    expect(err.message).toContain(join(dir, 'missing', 'master.key'));
  });

  it('prod: refuses without a file or STS_MASTER_KEY, and writes nothing', () => {
    const err = startupError(() => loadMasterKeyRing({ file: '', env: undefined, dataDir: dir, profile: 'prod' }), 'master_key_invalid');
    expect(err.message).toContain('prod');
    expect(existsSync(join(dir, 'master.key'))).toBe(false);
  });

  it('uses masterKey.file first, then STS_MASTER_KEY, and never generates then', () => {
    const fromFile = key('file-key');
    const fromEnv = key('env-key');
    const path = join(dir, 'keys');
    writeFileSync(path, formatMasterKeys([fromFile]), { mode: 0o600 });
    const env = formatMasterKeys([fromEnv]).trim();
    const a = loadMasterKeyRing({ file: path, env, dataDir: dir, profile: 'prod' });
    expect(a.ids).toEqual(['file-key']);
    const b = loadMasterKeyRing({ file: '', env, dataDir: dir, profile: 'prod' });
    expect(b.ids).toEqual(['env-key']);
    expect(b.primary.key.equals(fromEnv.key)).toBe(true);
    expect(existsSync(join(dir, 'master.key'))).toBe(false);
  });

  it('a master key file group or others can access is refused under prod and warned about under dev', () => {
    const path = join(dir, 'keys');
    writeFileSync(path, formatMasterKeys([key('shared-key')]), { mode: 0o600 });
    chmodSync(path, 0o640);
    const err = startupError(() => loadMasterKeyRing({ file: path, env: undefined, dataDir: dir, profile: 'prod' }), 'master_key_invalid');
    expect(err.message).toBe(`masterKey.file ${path}: group or others can access it (mode 0640); make it the owner's alone: chmod 600 ${path}`);
    const warned: string[] = [];
    expect(loadMasterKeyRing({ file: path, env: undefined, dataDir: dir, profile: 'dev', onInsecureMode: (p, mode) => warned.push(`${p} ${mode}`) }).ids).toEqual(['shared-key']);
    expect(warned).toEqual([`${path} 0640`]);
    // The generated dev key file is checked too; 0600 passes everywhere.
    const generated = join(dir, 'master.key');
    loadMasterKeyRing({ file: '', env: undefined, dataDir: dir, profile: 'dev' });
    chmodSync(generated, 0o604);
    loadMasterKeyRing({ file: '', env: undefined, dataDir: dir, profile: 'dev', onInsecureMode: (p, mode) => warned.push(`${p} ${mode}`) });
    expect(warned).toEqual([`${path} 0640`, `${generated} 0604`]);
    chmodSync(path, 0o600);
    expect(loadMasterKeyRing({ file: path, env: undefined, dataDir: dir, profile: 'prod' }).ids).toEqual(['shared-key']);
  });

  it('an unreadable or corrupt masterKey.file is master_key_invalid naming the file', () => {
    const missing = join(dir, 'nope.key');
    expect(startupError(() => loadMasterKeyRing({ file: missing, env: undefined, dataDir: dir, profile: 'dev' }), 'master_key_invalid').message).toContain(missing);
    const corrupt = join(dir, 'corrupt.key');
    writeFileSync(corrupt, 'garbage\n');
    expect(startupError(() => loadMasterKeyRing({ file: corrupt, env: undefined, dataDir: dir, profile: 'dev' }), 'master_key_invalid').message).toContain(corrupt);
  });
});
