/**
 * Who is calling: authentication of the bearer credential into a Caller, and the permission checks the
 * services make with it. Grpc-free: the server hands over the bearer string from the CallContext.
 *
 * Credentials today: admin API keys (hashes in auth.adminKeyFile). Application tokens from SessionService
 * plug in through `TokenAuthenticator`.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { StartupError, StsError } from '../errors.js';
import type { ApplicationRecord } from '../session/directory.js';

export interface Caller {
  kind: 'admin' | 'application';
  /** Admin key id or application id. Safe to log. */
  id: string;
  /** May call privileged PopService RPCs (Decrypt, Sign, GenerateDataKey, Unwrap, Rewrap). */
  trusted: boolean;
  /** May manage the directory and rotate keys. */
  admin: boolean;
  /**
   * Application tokens: the application's directory record as read while authenticating this call, so a
   * handler that needs it does not read the directory a second time in the same call.
   */
  application?: ApplicationRecord;
}

/** Resolves a bearer credential other than an admin key (application tokens), or undefined. */
export type TokenAuthenticator = (bearer: string) => Promise<Caller | undefined>;

const ADMIN_KEY_PREFIX = 'sts_admin_';
const HASH_LINE = /^([A-Za-z0-9_-]{1,64}):([0-9a-f]{64})$/;

export class Authenticator {
  private readonly adminKeys: { id: string; hash: Buffer }[];
  private tokenAuthenticator: TokenAuthenticator | undefined;

  constructor(adminKeyHashes: readonly { id: string; hash: Buffer }[]) {
    this.adminKeys = [...adminKeyHashes];
  }

  setTokenAuthenticator(fn: TokenAuthenticator): void {
    this.tokenAuthenticator = fn;
  }

  /** The caller, or UNAUTHENTICATED. */
  async authenticate(bearer: string | undefined): Promise<Caller> {
    if (!bearer) throw new StsError('unauthenticated', 'missing credential: send "authorization: Bearer <application token or admin key>"');
    if (bearer.startsWith(ADMIN_KEY_PREFIX)) {
      const hash = createHash('sha256').update(bearer).digest();
      // Compare against every key in constant time, so the position of a match leaks nothing.
      let match: string | undefined;
      for (const k of this.adminKeys) if (timingSafeEqual(k.hash, hash)) match = k.id;
      if (match) return { kind: 'admin', id: match, trusted: true, admin: true };
    } else if (this.tokenAuthenticator) {
      const caller = await this.tokenAuthenticator(bearer);
      if (caller) return caller;
    }
    throw new StsError('unauthenticated', 'invalid credential: unknown, expired or released');
  }

  async requireTrusted(bearer: string | undefined): Promise<Caller> {
    const caller = await this.authenticate(bearer);
    if (!caller.trusted) throw new StsError('permission_denied', `application ${caller.id} is not trusted for this operation`);
    return caller;
  }

  async requireAdmin(bearer: string | undefined): Promise<Caller> {
    const caller = await this.authenticate(bearer);
    if (!caller.admin) throw new StsError('permission_denied', `${caller.kind} ${caller.id} is not an administrator`);
    return caller;
  }
}

export function hashAdminKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export function newAdminKey(): string {
  return ADMIN_KEY_PREFIX + randomBytes(32).toString('base64url');
}

export function parseAdminKeyHashes(text: string, source: string): { id: string; hash: Buffer }[] {
  const out: { id: string; hash: Buffer }[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = HASH_LINE.exec(line);
    if (!m) throw new StartupError('config_invalid', `auth.adminKeyFile ${source}: line ${i + 1}: expected "id:<64 hex digits of sha256(key)>"`);
    out.push({ id: m[1]!, hash: Buffer.from(m[2]!, 'hex') });
  });
  return out;
}

function writeNew(path: string, text: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Loads the admin key hashes. In dev with no file configured, generates one admin key on first start:
 * `<dataDir>/admin.key` holds its hash (what the server reads), `<dataDir>/admin.token` the key itself for
 * the local operator (`sts admin` uses it).
 */
export function loadAdminKeys(file: string, dataDir: string, profile: 'dev' | 'prod', onGenerated?: (tokenPath: string) => void): { id: string; hash: Buffer }[] {
  const read = (path: string): string => {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new StartupError('config_invalid', `auth.adminKeyFile ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  };
  if (file) return parseAdminKeyHashes(read(file), file);
  if (profile === 'prod') return [];
  const hashPath = join(dataDir, 'admin.key');
  if (!existsSync(hashPath)) {
    const key = newAdminKey();
    writeNew(join(dataDir, 'admin.token'), key + '\n');
    writeNew(hashPath, `admin:${hashAdminKey(key)}\n`);
    onGenerated?.(join(dataDir, 'admin.token'));
  }
  return parseAdminKeyHashes(read(hashPath), hashPath);
}
