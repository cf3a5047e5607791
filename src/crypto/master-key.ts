/**
 * The master key ring: the root of everything STS keeps secret at rest.
 *
 * Private keys, secret keys and stored user secrets are sealed with AES-256-GCM under a master key. The
 * envelope names the master key id, so the ring can hold several keys: the first encrypts, every key
 * decrypts (the model of Hydra's `secrets.system` and Vault's keyring), which makes rotation a re-wrap,
 * not a flag day.
 *
 * Key file / STS_MASTER_KEY format: one `id:base64url(32 random bytes)` entry per line (or comma separated
 * in the environment variable). Ids are 1-64 characters of [A-Za-z0-9_-].
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { StartupError } from '../errors.js';

export interface MasterKey {
  readonly id: string;
  readonly key: Buffer;
}

const ID = /^[A-Za-z0-9_-]{1,64}$/;
const B64URL = /^[A-Za-z0-9_-]+$/;
const ENVELOPE_VERSION = 1;
const IV_BYTES = 12; // NIST SP 800-38D section 8.2: 96-bit IVs, random per message
const TAG_BYTES = 16;

/** Raised when an envelope cannot be opened. Deliberately says nothing about why beyond the key id. */
export class EnvelopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EnvelopeError';
  }
}

export class MasterKeyRing {
  readonly primary: MasterKey;
  private readonly byId: Map<string, MasterKey>;

  constructor(keys: readonly MasterKey[]) {
    if (keys.length === 0) throw new Error('a master key ring needs at least one key');
    this.primary = keys[0]!;
    this.byId = new Map(keys.map((k) => [k.id, k]));
  }

  get ids(): string[] {
    return [...this.byId.keys()];
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /**
   * A ring of keys derived from these for one purpose (HKDF-SHA-256, RFC 5869, with `info` as the purpose
   * label), under the same ids and in the same order: the first still seals, every one still opens. A derived
   * key reveals nothing about its master key (RFC 5869 section 3.3), so one master key can protect several
   * kinds of data without one kind's key opening another's, and rotating the master key rotates them all.
   */
  derive(info: string): MasterKeyRing {
    return new MasterKeyRing([...this.byId.values()].map((k) => ({ id: k.id, key: Buffer.from(hkdfSync('sha256', k.key, Buffer.alloc(0), info, 32)) })));
  }

  /** The keys, primary first (derivations of other purposes, such as index keys, need each of them). */
  get keys(): readonly MasterKey[] {
    return [...this.byId.values()];
  }

  /**
   * Seals plaintext under the primary master key. `aad` binds the envelope to its record (for example
   * "sts:key:<kid>"), so an envelope copied into another record does not open there.
   * Layout: version(1) | idLength(1) | id | iv(12) | ciphertext | tag(16).
   */
  seal(plaintext: Buffer, aad: string): Buffer {
    const { id, key } = this.primary;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    const header = Buffer.concat([Buffer.from([ENVELOPE_VERSION, id.length]), Buffer.from(id, 'ascii')]);
    cipher.setAAD(Buffer.concat([header, Buffer.from(aad, 'utf8')]));
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([header, iv, ct, cipher.getAuthTag()]);
  }

  /** The master key id an envelope was sealed with (without opening it). */
  static envelopeKeyId(envelope: Buffer): string {
    if (envelope.length < 2 || envelope[0] !== ENVELOPE_VERSION) throw new EnvelopeError('not an STS envelope');
    const idLength = envelope[1]!;
    if (envelope.length < 2 + idLength + IV_BYTES + TAG_BYTES) throw new EnvelopeError('envelope truncated');
    return envelope.subarray(2, 2 + idLength).toString('ascii');
  }

  open(envelope: Buffer, aad: string): Buffer {
    const id = MasterKeyRing.envelopeKeyId(envelope);
    const mk = this.byId.get(id);
    if (!mk) throw new EnvelopeError(`sealed with master key "${id}", which is not configured`);
    const headerEnd = 2 + id.length;
    const iv = envelope.subarray(headerEnd, headerEnd + IV_BYTES);
    const tag = envelope.subarray(envelope.length - TAG_BYTES);
    const ct = envelope.subarray(headerEnd + IV_BYTES, envelope.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', mk.key, iv);
    decipher.setAAD(Buffer.concat([envelope.subarray(0, headerEnd), Buffer.from(aad, 'utf8')]));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(ct), decipher.final()]);
    } catch {
      throw new EnvelopeError(`envelope does not open with master key "${id}" (wrong key or damaged data)`);
    }
  }
}

/** Parses key entries; `source` names where they came from, for the error message. Never echoes key bytes. */
export function parseMasterKeys(text: string, source: string): MasterKey[] {
  const entries = text
    .split(/[\n,]/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (entries.length === 0) throw new StartupError('master_key_invalid', `${source}: contains no master key`);
  const keys: MasterKey[] = [];
  entries.forEach((entry, i) => {
    const at = `${source}: entry ${i + 1}`;
    const sep = entry.indexOf(':');
    if (sep < 0) throw new StartupError('master_key_invalid', `${at}: expected "id:base64url-key"`);
    const id = entry.slice(0, sep);
    const b64 = entry.slice(sep + 1);
    if (!ID.test(id)) throw new StartupError('master_key_invalid', `${at}: key id must be 1-64 characters of A-Z a-z 0-9 _ -`);
    if (!B64URL.test(b64)) throw new StartupError('master_key_invalid', `${at} ("${id}"): key is not base64url`);
    const key = Buffer.from(b64, 'base64url');
    if (key.length !== 32) throw new StartupError('master_key_invalid', `${at} ("${id}"): key must be 32 bytes, found ${key.length}`);
    if (keys.some((k) => k.id === id)) throw new StartupError('master_key_invalid', `${at}: duplicate key id "${id}"`);
    keys.push({ id, key });
  });
  return keys;
}

export function newMasterKey(): MasterKey {
  return { id: `mk-${randomBytes(6).toString('base64url')}`, key: randomBytes(32) };
}

export function formatMasterKeys(keys: readonly MasterKey[]): string {
  return keys.map((k) => `${k.id}:${k.key.toString('base64url')}`).join('\n') + '\n';
}

/** Writes a key file readable by the owner only, durably, refusing to overwrite. */
export function writeMasterKeyFile(path: string, keys: readonly MasterKey[]): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, formatMasterKeys(keys));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export interface MasterKeySources {
  file: string;
  env: string | undefined;
  dataDir: string;
  profile: 'dev' | 'prod';
  /** Called once when a dev key is generated. */
  onGenerated?: (path: string) => void;
  /** Dev profile: called for a key file that group or others may access (prod refuses to start instead). */
  onInsecureMode?: (path: string, mode: string) => void;
}

/** Finds the master keys: the configured file, else STS_MASTER_KEY, else (dev only) <dataDir>/master.key. */
export function loadMasterKeyRing(s: MasterKeySources): MasterKeyRing {
  if (s.file) {
    checkKeyFileMode(s.file, 'masterKey.file', s);
    return new MasterKeyRing(parseMasterKeys(readKeyFile(s.file, 'masterKey.file'), `masterKey.file ${s.file}`));
  }
  if (s.env) return new MasterKeyRing(parseMasterKeys(s.env, 'STS_MASTER_KEY'));
  if (s.profile === 'prod') throw new StartupError('master_key_invalid', 'the prod profile needs masterKey.file or STS_MASTER_KEY');
  const path = join(s.dataDir, 'master.key');
  if (existsSync(path)) {
    checkKeyFileMode(path, 'generated master key', s);
    return new MasterKeyRing(parseMasterKeys(readKeyFile(path, 'generated master key'), `master key file ${path}`));
  }
  const key = newMasterKey();
  try {
    writeMasterKeyFile(path, [key]);
  } catch (err) {
    throw new StartupError('data_dir_unusable', `cannot write the dev master key to ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  s.onGenerated?.(path);
  return new MasterKeyRing([key]);
}

/**
 * A master key file must be the owner's alone: group or others able to read it (or write it) could read every
 * key STS has. Refused under prod, warned about under dev (where the generated file is 0600 unless changed).
 */
function checkKeyFileMode(path: string, what: string, s: MasterKeySources): void {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return; // readKeyFile names the problem
  }
  if ((mode & 0o077) === 0) return;
  const octal = `0${mode.toString(8).padStart(3, '0')}`;
  if (s.profile === 'prod') {
    throw new StartupError('master_key_invalid', `${what} ${path}: group or others can access it (mode ${octal}); make it the owner's alone: chmod 600 ${path}`);
  }
  s.onInsecureMode?.(path, octal);
}

function readKeyFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new StartupError('master_key_invalid', `${what} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
}
