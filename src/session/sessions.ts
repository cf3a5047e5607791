/**
 * Session state: application tokens, user sessions and user tickets, kept in the ephemeral store.
 *
 * Token ids and tickets are 256-bit CSPRNG values (ASVS 7.2.3 asks for 128). The store never sees them: records
 * are keyed by SHA-256 of the id, so a copy of the store holds no usable credential.
 *
 * A user session has participants: the applications that take part in it (the one that logged the user on,
 * each one that redeemed a ticket for it, each one a transform made a view for). Each participant holds its
 * own user token id; its record (namespace `participant`, keyed by the SHA-256 of that id, grouped by the
 * session) says which session and which application the id belongs to. The session itself (namespace
 * `user_token`) is keyed by its session id `sid`, a random value no token id hashes to, shared by every
 * participant and named in the JWTs. A token id therefore authorizes exactly one application's part.
 *
 * Sessions made before participation (records without `participants`) are keyed by the SHA-256 of their
 * creator's token id and have no participant record for it: that token id keeps working for the creating
 * application (see {@link SessionStore.resolveToken}).
 */
import { hash, randomBytes } from 'node:crypto';
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
  /**
   * Set on every session made since sessions have participants: its token ids are participant records. Absent
   * on older records, whose key is the SHA-256 of the creator's token id (a "legacy" session).
   */
  participants?: 'records';
}

/** Token ids one application may hold for one session at a time (see SessionStore.join). */
export const MAX_PARTS_PER_APPLICATION = 16;

/** How an application came to take part in a session. */
export type JoinedVia = 'logon' | 'third_party' | 'ticket' | 'transform';

/** One application's part in a session (namespace `participant`, id = SHA-256 of its user token id). */
export interface ParticipantRecord {
  sid: string;
  applicationId: string;
  joinedAt: number;
  via: JoinedVia;
  /**
   * A legacy session's creator that left the session (ReleaseUserToken): its token id has no participant
   * record to delete, so this one, under the same key, says it no longer counts.
   */
  left?: true;
}

/** Whose a user token id is, and the session it names. */
export interface Participation {
  /** SHA-256 of the token id: the participant record's key (the `sid` itself for a legacy creator). */
  ref: string;
  sid: string;
  applicationId: string;
  /** The session record, when it was read on the way (legacy sessions). */
  record?: UserSessionRecord;
}

export interface TicketRecord {
  sid: string;
  /** The only application that may redeem it. */
  applicationId: string;
  createdAt: number;
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

  /**
   * Spends a third-party token's id (issuer and jti) for CreateUserFromThirdPartyToken: true the first time,
   * false for a replay, also under concurrency across nodes. Only a SHA-256 is stored, until `ttlMs` from now
   * (past the time the token could still be accepted).
   */
  spendThirdPartyId(issuer: string, jti: string, ttlMs: number): Promise<boolean> {
    return this.store.insertIfAbsent('third_party_jti', refOf(`${issuer}\0${jti}`), '1', Math.max(1000, ttlMs + 1000));
  }

  /**
   * Creates a session with a random `sid` and makes `record.applicationId` its first participant: the returned
   * `id` is that application's user token id.
   */
  async createUserSession(
    record: Omit<UserSessionRecord, 'issuedAt' | 'expiresAt' | 'absoluteExpiresAt' | 'participants'>,
    maxLifetimeMs: number,
    via: JoinedVia = 'logon',
  ): Promise<{ id: string; sid: string; ref: string; record: UserSessionRecord }> {
    const sid = newSecret();
    const now = this.clock.now();
    const absoluteExpiresAt = now + maxLifetimeMs;
    const full: UserSessionRecord = { ...record, issuedAt: now, expiresAt: Math.min(now + record.idleTimeoutMs, absoluteExpiresAt), absoluteExpiresAt, participants: 'records' };
    await this.saveSession(sid, full);
    const { id, ref } = await this.join(sid, full, record.applicationId, via);
    return { id, sid, ref, record: full };
  }

  /**
   * Makes an application a participant of a session: a new user token id of its own, valid until the
   * session's absolute expiry (the session record decides whether it is still active).
   */
  async join(sid: string, record: UserSessionRecord, applicationId: string, via: JoinedVia): Promise<{ id: string; ref: string }> {
    const id = newSecret();
    const ref = refOf(id);
    const now = this.clock.now();
    // An application that joins one session again and again (a ticket for itself, redeemed in a loop) keeps
    // at most MAX_PARTS_PER_APPLICATION token ids for it: the oldest goes, so the store cannot be filled.
    if (via === 'ticket' || via === 'transform') {
      const parts = (await this.store.findGroup('participant', sid))
        .map((e) => ({ ref: e.id, p: JSON.parse(e.value) as ParticipantRecord }))
        .filter(({ p }) => p.applicationId === applicationId && !p.left)
        .sort((a, b) => a.p.joinedAt - b.p.joinedAt);
      for (const old of parts.slice(0, Math.max(0, parts.length - MAX_PARTS_PER_APPLICATION + 1))) await this.store.destroy('participant', old.ref);
    }
    const p: ParticipantRecord = { sid, applicationId, joinedAt: now, via };
    await this.store.upsert('participant', ref, JSON.stringify(p), Math.max(1, record.absoluteExpiresAt - now), sid);
    return { id, ref };
  }

  /**
   * The participation a user token id stands for, or undefined: a participant record, else (sessions made
   * before participants) a legacy session keyed by the id's SHA-256, which stands for its creator.
   */
  async resolveToken(tokenId: string): Promise<Participation | undefined> {
    const ref = refOf(tokenId);
    const found = await this.participantRecord(ref);
    if (found) return found.left ? undefined : { ref, sid: found.sid, applicationId: found.applicationId };
    return this.legacySession(ref);
  }

  private async participantRecord(ref: string): Promise<ParticipantRecord | undefined> {
    const json = await this.store.find('participant', ref);
    return json ? (JSON.parse(json) as ParticipantRecord) : undefined;
  }

  /** The participation behind a participant record's key (from a JWT's "pref"), or undefined. */
  async participationByRef(ref: string): Promise<Participation | undefined> {
    const p = await this.participantRecord(ref);
    return p && !p.left ? { ref, sid: p.sid, applicationId: p.applicationId } : undefined;
  }

  /** A legacy session named by `sid` (the SHA-256 of its creator's token id) whose creator has not left it. */
  async legacyCreator(sid: string): Promise<Participation | undefined> {
    if (await this.participantRecord(sid)) return undefined; // the creator left
    return this.legacySession(sid);
  }

  /** The legacy session keyed `sid`, as its creator's participation (whether it left is the caller's check). */
  private async legacySession(sid: string): Promise<Participation | undefined> {
    const record = await this.findSession(sid);
    if (!record || record.participants !== undefined) return undefined;
    return { ref: sid, sid, applicationId: record.applicationId, record };
  }

  /** The applications taking part in a session, one entry per user token id. */
  async participantsOf(sid: string, record?: UserSessionRecord): Promise<Participation[]> {
    const list: Participation[] = (await this.store.findGroup('participant', sid))
      .map((e) => ({ ref: e.id, p: JSON.parse(e.value) as ParticipantRecord }))
      .filter(({ p }) => !p.left)
      .map(({ ref, p }) => ({ ref, sid, applicationId: p.applicationId }));
    const r = record ?? (await this.findSession(sid));
    if (r && r.participants === undefined) {
      const creator = await this.legacyCreator(sid);
      if (creator) list.push(creator);
    }
    return list;
  }

  /**
   * Ends one application's part in a session (every token id it holds for it). When no participant is left
   * the session ends with its tickets. Returns true when the whole session ended.
   */
  async leave(sid: string, applicationId: string): Promise<boolean> {
    const record = await this.findSession(sid);
    if (!record) return false;
    for (const p of await this.participantsOf(sid, record)) {
      if (p.applicationId !== applicationId) continue;
      if (p.ref === sid) {
        // A legacy creator's token id has no record of its own: mark it as gone under the same key.
        const left: ParticipantRecord = { sid, applicationId, joinedAt: record.issuedAt, via: 'logon', left: true };
        await this.store.upsert('participant', sid, JSON.stringify(left), Math.max(1, record.absoluteExpiresAt - this.clock.now()), sid);
      } else {
        await this.store.destroy('participant', p.ref);
      }
    }
    if ((await this.participantsOf(sid, record)).length > 0) return false;
    await this.releaseSession(sid);
    return true;
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

  /** Logout of the whole session: the session, every participant's token id and every ticket stop working at once. */
  async releaseSession(sid: string): Promise<void> {
    await this.store.destroy('user_token', sid);
    await this.store.destroyGroup('user_ticket', sid);
    await this.store.destroyGroup('participant', sid);
  }

  async sessionsOf(uid: string): Promise<{ sid: string; record: UserSessionRecord }[]> {
    const now = this.clock.now();
    return (await this.store.findGroup('user_token', uid))
      .map((e) => ({ sid: e.id, record: JSON.parse(e.value) as UserSessionRecord }))
      .filter((s) => s.record.expiresAt > now);
  }

  async releaseSessionsOf(uid: string): Promise<number> {
    const sessions = await this.store.findGroup('user_token', uid);
    for (const s of sessions) {
      await this.store.destroyGroup('user_ticket', s.id);
      await this.store.destroyGroup('participant', s.id);
    }
    return this.store.destroyGroup('user_token', uid);
  }

  /** A one-time ticket that lets `applicationId` join the session (it gets a user token id of its own). */
  async createTicket(sid: string, applicationId: string, lifetimeMs: number): Promise<{ ticket: string; expiresAt: number }> {
    const ticket = newSecret();
    const now = this.clock.now();
    const record: TicketRecord = { sid, applicationId, createdAt: now };
    await this.store.upsert('user_ticket', refOf(ticket), JSON.stringify(record), lifetimeMs, sid);
    return { ticket, expiresAt: now + lifetimeMs };
  }

  /**
   * One-time: the store's consume has exactly one winner among concurrent redemptions. Tickets made before
   * participants also carried the creator's token id sealed under the ticket; it is no longer read: a
   * redeemer gets a token id of its own.
   */
  async consumeTicket(ticket: string): Promise<TicketRecord | undefined> {
    const json = await this.store.consume('user_ticket', refOf(ticket));
    if (!json) return undefined;
    const r = JSON.parse(json) as TicketRecord;
    return { sid: r.sid, applicationId: r.applicationId, createdAt: r.createdAt };
  }
}
