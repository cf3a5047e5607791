/**
 * PopService handlers: grpc-free domain functions over the key ring.
 */
import { randomBytes } from 'node:crypto';
import type { Authenticator, Caller } from '../auth/caller.js';
import type { Clock } from '../clock.js';
import { StsError, invalidArgument } from '../errors.js';
import { KeyKind as PbKeyKind, KeyState as PbKeyState, type KeyInfo, type PopServiceServer } from '../gen/sts/v1/pop.js';
import type { Logger } from '../log.js';
import type { CallContext, DomainService } from '../rpc-contract.js';
import type { JwksPublisher } from './jwks-publisher.js';
import type { KeyRing, KeyView } from './key-ring.js';
import { type KeyKind, type KeyState, useOf } from './key-record.js';
import { DECRYPTION_FAILED, RESERVED_CONTEXT_PREFIX, RESERVED_TYP_PREFIX, decryptCompact, signCompact, unwrapKey, verifyCompact, wrapKey } from './jose-ops.js';

const MiB = 1024 * 1024;
/** The "typ" of a Sign output when the caller names none. */
export const SIGNED_DEFAULT_TYP = 'JOSE';

function requireContext(context: Uint8Array): Buffer {
  requireSize('context', context, 0, 4096);
  const b = Buffer.from(context);
  if (b.subarray(0, RESERVED_CONTEXT_PREFIX.length).toString('latin1') === RESERVED_CONTEXT_PREFIX) {
    throw invalidArgument('context', `contexts starting with "${RESERVED_CONTEXT_PREFIX}" are reserved for STS`);
  }
  return b;
}
const HEADER_VALUE = /^[\x20-\x7e]{0,128}$/;
/** RFC 7515 section 4.1.9: "application/" may be left out of typ and cty, so compare without it. */
const reservedType = (t: string | undefined): boolean => t !== undefined && t.toLowerCase().replace(/^application\//, '').startsWith(RESERVED_TYP_PREFIX);

const KIND_TO_PB: Record<KeyKind, PbKeyKind> = {
  encryption: PbKeyKind.KEY_KIND_ENCRYPTION,
  signing: PbKeyKind.KEY_KIND_SIGNING,
  secret: PbKeyKind.KEY_KIND_SECRET,
};
const STATE_TO_PB: Record<KeyState, PbKeyState> = {
  staged: PbKeyState.KEY_STATE_STAGED,
  primary: PbKeyState.KEY_STATE_PRIMARY,
  decrypt_only: PbKeyState.KEY_STATE_DECRYPT_ONLY,
  destroyed: PbKeyState.KEY_STATE_DESTROYED,
};

function kindFromPb(kind: PbKeyKind, field: string): KeyKind | undefined {
  switch (kind) {
    case PbKeyKind.KEY_KIND_UNSPECIFIED:
      return undefined;
    case PbKeyKind.KEY_KIND_ENCRYPTION:
      return 'encryption';
    case PbKeyKind.KEY_KIND_SIGNING:
      return 'signing';
    case PbKeyKind.KEY_KIND_SECRET:
      return 'secret';
    default:
      throw invalidArgument(field, `unknown key kind ${String(kind)}`);
  }
}

export function keyInfo(v: KeyView): KeyInfo {
  const r = v.record;
  return {
    kid: r.kid,
    kind: KIND_TO_PB[r.kind],
    alg: r.alg,
    use: useOf(r.kind) ?? '',
    state: STATE_TO_PB[v.state],
    createTime: new Date(r.createdAt),
    notBeforeTime: new Date(r.notBefore),
    notAfterTime: new Date(r.notAfter),
    destroyAfterTime: new Date(r.destroyAfter),
  };
}

function requireSize(field: string, value: { length: number }, min: number, max: number): void {
  if (value.length < min || value.length > max) throw invalidArgument(field, `must be ${min} to ${max} bytes long, got ${value.length}`);
}

/**
 * Whose data keys a caller's are: an application's own, or its data key group's when an administrator set
 * one (applications that must share keys); an admin key's own. Another owner's wrapped keys do not open.
 */
function dataKeyOwner(caller: Caller): string {
  if (caller.kind === 'admin') return `admin-key:${caller.id}`;
  const group = caller.application?.dataKeyGroup;
  return group ? `group:${group}` : `application:${caller.id}`;
}

/** Audits a data key that opened without an owner (wrapped before data keys were bound): Rewrap binds it. */
const unboundNote = (r: { bound: boolean }): Record<string, unknown> => (r.bound ? {} : { unboundDataKey: true });

export interface PopServiceDeps {
  ring: KeyRing;
  auth: Authenticator;
  clock: Clock;
  logger: Logger;
  /** The published JWKS, shared with the HTTP jwks_uri. */
  jwks: JwksPublisher;
  /** pop.unboundDataKeys = refuse: data keys wrapped before owners existed no longer open for applications. */
  refuseUnboundDataKeys?: boolean;
}

export function popService(deps: PopServiceDeps): DomainService<PopServiceServer> {
  const { ring, auth, clock, logger } = deps;

  /** Audit line for every use of a private or secret key: who, which key, what; never the data. */
  const audit = (event: string, caller: Caller, ctx: CallContext, fields: Record<string, unknown>): void => {
    ctx.logFields.caller = caller.id;
    logger.info('audit', { event, caller: caller.id, callerKind: caller.kind, ...fields });
  };

  /** Runs a key operation and audits its outcome, success or failure (with `note`'s fields on success). */
  const audited = async <T extends { kid: string }>(event: string, caller: Caller, ctx: CallContext, op: () => T | Promise<T>, note?: (result: T) => Record<string, unknown>): Promise<T> => {
    try {
      const result = await op();
      audit(event, caller, ctx, { kid: result.kid, outcome: 'ok', ...note?.(result) });
      return result;
    } catch (err) {
      audit(event, caller, ctx, { outcome: 'failed', reason: err instanceof StsError ? err.code : 'internal' });
      throw err;
    }
  };

  return {
    async getJwks() {
      const now = clock.now();
      const s = deps.jwks.current(now);
      // Never let a cache outlive the next key change.
      const maxAgeMs = deps.jwks.maxAgeMsOf(s, now);
      return {
        jwksJson: s.json,
        maxAge: { seconds: Math.floor(maxAgeMs / 1000), nanos: (maxAgeMs % 1000) * 1e6 },
        nextRotationTime: Number.isFinite(s.validUntil) ? new Date(s.validUntil) : undefined,
        primaryEncryptionKid: s.primaryEncryptionKid,
        primarySigningKid: s.primarySigningKid,
      };
    },

    async decrypt(req, ctx) {
      const caller = await auth.requireTrusted(ctx.bearer);
      requireSize('jwe', req.jwe, 1, MiB);
      const out = await audited('pop.decrypt', caller, ctx, async () => {
        const d = await decryptCompact(ring, req.jwe);
        // A JWE typed for STS's own use (a logon credential: TOKEN_TYP.credential) is opened only by the RPC
        // it is meant for, never handed back in clear: else a trusted application could read the password in
        // a credential JWE it saw pass. Refused like every other JWE Decrypt will not open, so the answer
        // says nothing more than the (readable) header does.
        if (reservedType(d.typ) || reservedType(d.cty)) {
          d.plaintext.fill(0);
          throw new StsError('decryption_failed', DECRYPTION_FAILED);
        }
        return d;
      });
      return { plaintext: out.plaintext, kid: out.kid, contentType: out.cty ?? '' };
    },

    async sign(req, ctx) {
      const caller = await auth.requireTrusted(ctx.bearer);
      requireSize('payload', req.payload, 1, MiB);
      if (!HEADER_VALUE.test(req.type)) throw invalidArgument('type', 'at most 128 printable ASCII characters');
      if (!HEADER_VALUE.test(req.contentType)) throw invalidArgument('content_type', 'at most 128 printable ASCII characters');
      if (reservedType(req.type) || reservedType(req.contentType)) {
        throw invalidArgument('type', `types starting with "${RESERVED_TYP_PREFIX}" are reserved for tokens STS issues itself`);
      }
      return audited('pop.sign', caller, ctx, () =>
        // Every JWS STS signs is explicitly typed (RFC 8725 section 3.11): without a caller's type, "JOSE" (RFC
        // 7515 section 4.1.9), so no signed payload is ever an untyped JWT that some verifier might take for its own.
        signCompact(ring, Buffer.from(req.payload), { typ: req.type || SIGNED_DEFAULT_TYP, ...(req.contentType ? { cty: req.contentType } : {}) }),
      );
    },

    async verify(req, ctx) {
      ctx.logFields.caller = (await auth.authenticate(ctx.bearer)).id;
      requireSize('jws', req.jws, 1, 2 * MiB);
      const v = verifyCompact(ring, req.jws);
      return { payload: v.payload, kid: v.kid, alg: v.alg, protectedHeaderJson: JSON.stringify(v.header) };
    },

    async generateDataKey(req, ctx) {
      const caller = await auth.requireTrusted(ctx.bearer);
      const bits = req.keyLengthBits === 0 ? 256 : req.keyLengthBits;
      if (bits !== 128 && bits !== 256) throw invalidArgument('key_length_bits', 'must be 128 or 256 (0 means 256)');
      const context = requireContext(req.context);
      const plaintext = randomBytes(bits / 8);
      const { wrapped, kid } = await audited('pop.generate_data_key', caller, ctx, () => wrapKey(ring, plaintext, context, undefined, dataKeyOwner(caller)));
      return { plaintext, wrappedKey: wrapped, kid };
    },

    async unwrap(req, ctx) {
      const caller = await auth.requireTrusted(ctx.bearer);
      requireSize('wrapped_key', req.wrappedKey, 1, 64 * 1024);
      const context = requireContext(req.context);
      const out = await audited('pop.unwrap', caller, ctx, () => unwrapKey(ring, req.wrappedKey, context, { owner: dataKeyOwner(caller), refuseUnbound: deps.refuseUnboundDataKeys === true }), unboundNote);
      return { plaintext: out.plaintext, kid: out.kid };
    },

    async rewrap(req, ctx) {
      const caller = await auth.requireTrusted(ctx.bearer);
      requireSize('wrapped_key', req.wrappedKey, 1, 64 * 1024);
      const context = requireContext(req.context);
      const owner = dataKeyOwner(caller);
      const out = await audited(
        'pop.rewrap',
        caller,
        ctx,
        () => {
          const { plaintext, bound } = unwrapKey(ring, req.wrappedKey, context, { owner, refuseUnbound: deps.refuseUnboundDataKeys === true });
          try {
            // A key from before owners is bound to the caller from now on.
            return { ...wrapKey(ring, plaintext, context, undefined, owner), bound };
          } finally {
            plaintext.fill(0);
          }
        },
        unboundNote,
      );
      return { wrappedKey: out.wrapped, kid: out.kid };
    },

    async rotateKeys(req, ctx) {
      const caller = await auth.requireAdmin(ctx.bearer);
      ctx.logFields.caller = caller.id;
      const kinds = req.kinds.map((k, i) => kindFromPb(k, `kinds[${i}]`)).filter((k): k is KeyKind => k !== undefined);
      const created = await ring.rotate(kinds.length === 0 ? undefined : [...new Set(kinds)]);
      const views = new Map(ring.view().map((v) => [v.record.kid, v]));
      return { created: created.map((r) => keyInfo(views.get(r.kid)!)) };
    },

    async listKeys(req, ctx) {
      ctx.logFields.caller = (await auth.authenticate(ctx.bearer)).id;
      const kind = kindFromPb(req.kind, 'kind');
      const keys = ring.view().filter((v) => (kind === undefined || v.record.kind === kind) && (req.includeDestroyed || v.state !== 'destroyed'));
      return { keys: keys.map(keyInfo) };
    },
  };
}
