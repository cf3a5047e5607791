/**
 * Session state: application tokens, user sessions and user tickets, kept in the ephemeral store.
 *
 * Token ids and tickets are 256-bit CSPRNG values (ASVS 7.2.3 asks for 128). The store never sees them: records
 * are keyed by SHA-256 of the id (the "session ref"), so a copy of the store holds no usable credential, and
 * the ref can name a session in listings and JWTs ("sid") without being a credential itself.
 */
import { createCipheriv, createDecipheriv, createHash, hash, randomBytes } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { EphemeralStore } from '../store/adapter.js';

export interface AppTokenRecord {
  applicationId: string;
  issuedAt: number;
  /** Moves with RenewApplicationToken, never past the absolute expiry. */
  expiresAt: number;
  /**
   * Renewal never extends the token past this: the application must log on again (its secret is checked
   * afresh), so a stolen token cannot be kept alive forever. Absent in records made before it existed;
   * those are capped at issuedAt plus the configured maximum (see {@link appTokenAbsoluteExpiry}).
   */
  absoluteExpiresAt?: number;
}

/** When renewal can extend an application token no further. */
export function appTokenAbsoluteExpiry(record: AppTokenRecord, maxLifetimeMs: number): number {
  return typeof record.absoluteExpiresAt === 'number' ? record.absoluteExpiresAt : record.issuedAt + maxLifetimeMs;
}

export type AuthMethod = 'password' | 'third_party';

export interface UserSessionRecord {
  uid: string;
  /** Application that created the session. */
  applicationId: string;
  securityLevel: number;
  authMethod: AuthMethod;
  issuedAt: number;
  /** Idle expiry: moves with RefreshUserToken, never past absoluteExpiresAt. */
  expiresAt: number;
  absoluteExpiresAt: number;
  /** Idle timeout applied on refresh (the creating application's or the server's). */
  idleTimeoutMs: number;
}

export interface TicketRecord {
  sid: string;
  /** The only application that may redeem it. */
  applicationId: string;
  createdAt: number;
  /**
   * The session's token id, which the redeeming application needs, sealed under a key derived from the
   * ticket itself: the store holds only the ticket's hash, so nobody who reads the store can open it.
   */
  sealedTokenId: string;
}

/** Security levels (common.proto UserToken.security_level). */
export const SECURITY_LEVEL = { none: 0, thirdParty: 1, password: 2, stepUp: 3, certificate: 4 } as const;

export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * The storage key and public reference of a token id or ticket. One-shot `hash` (Node 20.12+): a third of
 * createHash's cost, and every authenticated call computes two of these.
 */
export function refOf(secret: string): string {
  return hash('sha256', secret, 'base64url');
}

export class SessionStore {
  constructor(
    private readonly store: EphemeralStore,
    private readonly clock: Clock,
  ) {}

  async createAppToken(applicationId: string, lifetimeMs: number, maxLifetimeMs: number): Promise<{ id: string; record: AppTokenRecord }> {
    const id = newSecret();
    const now = this.clock.now();
    const absoluteExpiresAt = now + maxLifetimeMs;
    const record: AppTokenRecord = { applicationId, issuedAt: now, expiresAt: Math.min(now + lifetimeMs, absoluteExpiresAt), absoluteExpiresAt };
    await this.store.upsert('app_token', refOf(id), JSON.stringify(record), record.expiresAt - now, applicationId);
    return { id, record };
  }

  async findAppToken(id: string): Promise<AppTokenRecord | undefined> {
    const json = await this.store.find('app_token', refOf(id));
    if (!json) return undefined;
    const r = JSON.parse(json) as AppTokenRecord;
    return r.expiresAt > this.clock.now() ? r : undefined;
  }

  /**
   * Extends a token by `lifetimeMs`, never past its absolute expiry. 'max_lifetime' when that has passed (the
   * application must log on again); undefined when the token ended meanwhile: a renewal never revives a
   * token that a concurrent release removed.
   */
  async renewAppToken(id: string, record: AppTokenRecord, lifetimeMs: number, maxLifetimeMs: number): Promise<AppTokenRecord | 'max_lifetime' | undefined> {
    const now = this.clock.now();
    // Records made before the cap existed get one now, from their logon time, and keep it.
    const absoluteExpiresAt = appTokenAbsoluteExpiry(record, maxLifetimeMs);
    if (absoluteExpiresAt <= now) return 'max_lifetime';
    const next: AppTokenRecord = { ...record, expiresAt: Math.min(now + lifetimeMs, absoluteExpiresAt), absoluteExpiresAt };
    return (await this.store.update('app_token', refOf(id), JSON.stringify(next), next.expiresAt - now)) ? next : undefined;
  }

  releaseAppToken(id: string): Promise<void> {
    return this.store.destroy('app_token', refOf(id));
  }

  /** Ends every token of an application (when it is disabled). */
  releaseAppTokensOf(applicationId: string): Promise<number> {
    return this.store.destroyGroup('app_token', applicationId);
  }

  /**
   * Spends a credential JWE id (RFC 7519 section 4.1.7 jti): true the first time, false for a replay, also
   * under concurrency across nodes. Only its SHA-256 is stored, for `ttlMs` (until the JWE has expired and
   * would be refused anyway).
   */
  spendCredentialId(jti: string, ttlMs: number): Promise<boolean> {
    return this.store.insertIfAbsent('credential_jti', refOf(jti), '1', ttlMs);
  }

  async createUserSession(record: Omit<UserSessionRecord, 'issuedAt' | 'expiresAt' | 'absoluteExpiresAt'>, maxLifetimeMs: number): Promise<{ id: string; sid: string; record: UserSessionRecord }> {
    const id = newSecret();
    const sid = refOf(id);
    const now = this.clock.now();
    const absoluteExpiresAt = now + maxLifetimeMs;
    const full: UserSessionRecord = { ...record, issuedAt: now, expiresAt: Math.min(now + record.idleTimeoutMs, absoluteExpiresAt), absoluteExpiresAt };
    await this.saveSession(sid, full);
    return { id, sid, record: full };
  }

  private saveSession(sid: string, record: UserSessionRecord): Promise<void> {
    return this.store.upsert('user_token', sid, JSON.stringify(record), record.expiresAt - this.clock.now(), record.uid);
  }

  async findSession(sid: string): Promise<UserSessionRecord | undefined> {
    const json = await this.store.find('user_token', sid);
    if (!json) return undefined;
    const r = JSON.parse(json) as UserSessionRecord;
    return r.expiresAt > this.clock.now() ? r : undefined;
  }

  /**
   * Slides the idle expiry, capped by the absolute lifetime (ASVS 7.3.1, 7.3.2). Undefined when the session
   * ended meanwhile: a refresh never revives a session a concurrent logout removed.
   */
  async refreshSession(sid: string, record: UserSessionRecord): Promise<UserSessionRecord | undefined> {
    const next = { ...record, expiresAt: Math.min(this.clock.now() + record.idleTimeoutMs, record.absoluteExpiresAt) };
    return (await this.updateSession(sid, next)) ? next : undefined;
  }

  /** Undefined when the session ended meanwhile. */
  async raiseSecurityLevel(sid: string, record: UserSessionRecord, level: number): Promise<UserSessionRecord | undefined> {
    if (level <= record.securityLevel) return record;
    const next = { ...record, securityLevel: level };
    return (await this.updateSession(sid, next)) ? next : undefined;
  }

  private updateSession(sid: string, record: UserSessionRecord): Promise<boolean> {
    return this.store.update('user_token', sid, JSON.stringify(record), record.expiresAt - this.clock.now());
  }

  /** Logout: the session and every ticket made for it stop working at once. */
  async releaseSession(sid: string): Promise<void> {
    await this.store.destroy('user_token', sid);
    await this.store.destroyGroup('user_ticket', sid);
  }

  async sessionsOf(uid: string): Promise<{ sid: string; record: UserSessionRecord }[]> {
    const now = this.clock.now();
    return (await this.store.findGroup('user_token', uid))
      .map((e) => ({ sid: e.id, record: JSON.parse(e.value) as UserSessionRecord }))
      .filter((s) => s.record.expiresAt > now);
  }

  async releaseSessionsOf(uid: string): Promise<number> {
    const sessions = await this.store.findGroup('user_token', uid);
    for (const s of sessions) await this.store.destroyGroup('user_ticket', s.id);
    return this.store.destroyGroup('user_token', uid);
  }

  async createTicket(tokenId: string, applicationId: string, lifetimeMs: number): Promise<{ ticket: string; expiresAt: number }> {
    const ticket = newSecret();
    const sid = refOf(tokenId);
    const now = this.clock.now();
    const record: TicketRecord = { sid, applicationId, createdAt: now, sealedTokenId: sealWithTicket(ticket, tokenId) };
    await this.store.upsert('user_ticket', refOf(ticket), JSON.stringify(record), lifetimeMs, sid);
    return { ticket, expiresAt: now + lifetimeMs };
  }

  /** One-time: the store's consume has exactly one winner among concurrent redemptions. */
  async consumeTicket(ticket: string): Promise<(TicketRecord & { tokenId: string }) | undefined> {
    const json = await this.store.consume('user_ticket', refOf(ticket));
    if (!json) return undefined;
    const record = JSON.parse(json) as TicketRecord;
    const tokenId = openWithTicket(ticket, record.sealedTokenId);
    return tokenId === undefined || refOf(tokenId) !== record.sid ? undefined : { ...record, tokenId };
  }
}

/** Domain-separated from refOf (which is the plain SHA-256 of the ticket, stored as the record key). */
function ticketKey(ticket: string): Buffer {
  return createHash('sha256').update('sts ticket sealing key\0').update(ticket).digest();
}

function sealWithTicket(ticket: string, tokenId: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', ticketKey(ticket), iv);
  const ct = Buffer.concat([cipher.update(tokenId, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, ct, cipher.getAuthTag()]).toString('base64url');
}

function openWithTicket(ticket: string, sealed: string): string | undefined {
  const b = Buffer.from(sealed, 'base64url');
  if (b.length < 28) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', ticketKey(ticket), b.subarray(0, 12));
    decipher.setAuthTag(b.subarray(b.length - 16));
    return Buffer.concat([decipher.update(b.subarray(12, b.length - 16)), decipher.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}
