/**
 * JOSE operations with the key ring: compact JWS sign/verify, compact JWE decrypt, and data-key wrapping.
 *
 * JWS and the data-key JWE are assembled here directly on node:crypto: they are the hot paths, and the
 * formats are small (RFC 7515 section 7.1, RFC 7516 section 7.1). JWE decryption with ECDH-ES/RSA-OAEP key
 * management goes through jose, which implements the key agreement and every content encryption algorithm.
 *
 * Every failure of a crypto operation surfaces as one error with one fixed message per operation, whatever
 * the cause (malformed input, unknown kid, destroyed key, wrong key, tampering): RFC 7516 section 11.5 and
 * the brief's rule that crypto failures are indistinguishable.
 */
import { createHash, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';
import { compactDecrypt, type CompactJWEHeaderParameters } from 'jose';
import { B64URL, aesKeyUnwrap256, b64u as b64, concatKdf, gcmDecrypt, gcmEncrypt, isJwsAlg, jwsSign, jwsVerify } from '../crypto/jose-primitives.js';
import { StsError } from '../errors.js';
import type { KeyRing } from './key-ring.js';
import type { KeyAlg, LiveKey } from './key-record.js';

/**
 * Explicit types of the tokens STS issues itself (RFC 8725 section 3.11). Sign refuses every type with the
 * reserved prefix, so a JWS that an application has STS sign can never pass for an STS token.
 *
 * `credential` types the JWEs that carry a logon credential to STS (LogonApplication, LogonUser, step-up):
 * SessionService accepts no other JWE as a credential, and Decrypt refuses every JWE with a reserved type
 * (as "decryption failed"), so a trusted application cannot have STS open a credential meant for logon.
 */
export const TOKEN_TYP = { user: 'sts-user+jwt', exchange: 'sts-exchange+jwt', credential: 'sts-credential+jwe' } as const;
export const RESERVED_TYP_PREFIX = 'sts-';
/**
 * Encryption contexts beginning with this are STS's own (user secrets are wrapped with one): GenerateDataKey,
 * Unwrap and Rewrap refuse them, so a trusted application holding a copy of the store cannot unwrap users'
 * secrets through PopService.
 */
export const RESERVED_CONTEXT_PREFIX = 'sts:';

export const DECRYPTION_FAILED = 'decryption failed';
export const VERIFICATION_FAILED = 'signature verification failed';
export const UNWRAP_FAILED = 'unwrap failed';

const decryptionFailed = (cause?: unknown) => new StsError('decryption_failed', DECRYPTION_FAILED, { cause });
const verificationFailed = (cause?: unknown) => new StsError('signature_invalid', VERIFICATION_FAILED, { cause });
const unwrapFailed = (cause?: unknown) => new StsError('decryption_failed', UNWRAP_FAILED, { cause });

function signBytes(alg: KeyAlg, key: KeyObject, data: Buffer): Buffer {
  if (!isJwsAlg(alg)) throw new Error(`${alg} is not a signing algorithm`);
  return jwsSign(alg, key, data);
}

function verifyBytes(alg: KeyAlg, key: KeyObject, data: Buffer, signature: Buffer): boolean {
  return isJwsAlg(alg) && jwsVerify(alg, key, data, signature);
}

export interface SignOptions {
  typ?: string;
  cty?: string;
}

/** Compact JWS over `payload` with the PRIMARY signing key. */
export function signCompact(ring: KeyRing, payload: Buffer, options: SignOptions = {}): { jws: string; kid: string } {
  const key = ring.primary('signing');
  const header: Record<string, string> = { alg: key.record.alg, kid: key.record.kid };
  if (options.typ) header.typ = options.typ;
  if (options.cty) header.cty = options.cty;
  const signingInput = `${b64(JSON.stringify(header))}.${b64(payload)}`;
  const sig = signBytes(key.record.alg, key.privateKey!, Buffer.from(signingInput, 'ascii'));
  return { jws: `${signingInput}.${b64(sig)}`, kid: key.record.kid };
}

export interface Verified {
  payload: Buffer;
  kid: string;
  alg: string;
  header: Record<string, unknown>;
}

/**
 * Verifies a compact JWS made by STS: the header's kid must name a published signing key (STAGED, PRIMARY,
 * DECRYPT_ONLY) and its alg must be that key's algorithm (RFC 8725 section 3.1: the key pins the algorithm,
 * the token does not choose it).
 */
export function verifyCompact(ring: KeyRing, jws: string): Verified {
  const parts = jws.split('.');
  if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) throw verificationFailed();
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw verificationFailed(err);
  }
  if (typeof header !== 'object' || header === null || typeof header.kid !== 'string' || typeof header.alg !== 'string') throw verificationFailed();
  // RFC 7515 section 4.1.11: a critical extension we do not understand makes the JWS invalid.
  if (header.crit !== undefined) throw verificationFailed();
  const key = ring.usable(header.kid, 'signing');
  if (!key || header.alg !== key.record.alg || !key.publicKey) throw verificationFailed();
  const ok = verifyBytes(key.record.alg, key.publicKey, Buffer.from(`${parts[0]}.${parts[1]}`, 'ascii'), Buffer.from(parts[2]!, 'base64url'));
  if (!ok) throw verificationFailed();
  return { payload: Buffer.from(parts[1]!, 'base64url'), kid: key.record.kid, alg: key.record.alg, header };
}

/** Content encryption algorithms accepted in JWEs sent to STS (RFC 7518 section 5.1, no legacy ones). */
const CONTENT_ALGS = ['A128GCM', 'A192GCM', 'A256GCM', 'A128CBC-HS256', 'A192CBC-HS384', 'A256CBC-HS512'];

/** A decrypted JWE: `typ` and `cty` come from its protected header, which the decryption has authenticated. */
export interface Decrypted {
  plaintext: Buffer;
  kid: string;
  cty: string | undefined;
  typ: string | undefined;
}

const headerString = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/**
 * The default form, ECDH-ES+A256KW with A256GCM, straight on node:crypto: jose runs it on WebCrypto at about
 * a quarter of the speed (bench/results). Every step follows RFC 7518: section 4.6.2 (Concat KDF with
 * AlgorithmID, apu, apv and keydatalen 256), section 4.4 (AES Key Wrap, RFC 3394) and section 5.3 (AES-GCM
 * with the encoded protected header as AAD). Returns undefined for any other form (jose handles those).
 */
function decryptEcdhA256kwA256gcm(ring: KeyRing, parts: string[], header: Record<string, unknown>): Decrypted | undefined {
  if (header.alg !== 'ECDH-ES+A256KW' || header.enc !== 'A256GCM') return undefined;
  // Compression is refused (RFC 8725 section 3.6: compressing before encrypting leaks); so is crit.
  if (header.zip !== undefined || header.crit !== undefined || typeof header.kid !== 'string') throw decryptionFailed();
  const key = ring.usable(header.kid, 'encryption');
  if (!key || key.record.alg !== 'ECDH-ES+A256KW') throw decryptionFailed();
  const epk = header.epk as Record<string, unknown> | undefined;
  if (!epk || epk.kty !== 'EC' || epk.crv !== 'P-256' || typeof epk.x !== 'string' || typeof epk.y !== 'string' || 'd' in epk) throw decryptionFailed();
  const opt = (v: unknown) => (v === undefined ? Buffer.alloc(0) : typeof v === 'string' && B64URL.test(v) ? Buffer.from(v, 'base64url') : undefined);
  const apu = opt(header.apu);
  const apv = opt(header.apv);
  if (!apu || !apv) throw decryptionFailed();
  const encryptedKey = Buffer.from(parts[1]!, 'base64url');
  const iv = Buffer.from(parts[2]!, 'base64url');
  const tag = Buffer.from(parts[4]!, 'base64url');
  if (encryptedKey.length !== 40 || iv.length !== 12 || tag.length !== 16) throw decryptionFailed();
  try {
    // createPublicKey checks that the point is on the curve (no invalid-curve attack on the static key).
    const peer = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: epk.x, y: epk.y }, format: 'jwk' });
    const z = diffieHellman({ privateKey: key.privateKey!, publicKey: peer });
    const kek = concatKdf(z, 'ECDH-ES+A256KW', 256, apu, apv);
    const cek = aesKeyUnwrap256(kek, encryptedKey);
    const plaintext = gcmDecrypt(cek, iv, Buffer.from(parts[3]!, 'base64url'), tag, Buffer.from(parts[0]!, 'ascii'));
    cek.fill(0);
    return { plaintext, kid: key.record.kid, cty: headerString(header.cty), typ: headerString(header.typ) };
  } catch (err) {
    throw decryptionFailed(err);
  }
}

/** Decrypts a compact JWE addressed to a usable STS encryption key. */
export async function decryptCompact(ring: KeyRing, jwe: string): Promise<Decrypted> {
  const parts = jwe.split('.');
  if (parts.length !== 5 || !parts.every((p) => B64URL.test(p))) throw decryptionFailed();
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw decryptionFailed(err);
  }
  if (typeof header !== 'object' || header === null) throw decryptionFailed();
  const fast = decryptEcdhA256kwA256gcm(ring, parts, header);
  if (fast) return fast;
  let key: LiveKey | undefined;
  try {
    const { plaintext, protectedHeader } = await compactDecrypt(
      jwe,
      (header: CompactJWEHeaderParameters) => {
        key = typeof header.kid === 'string' ? ring.usable(header.kid, 'encryption') : undefined;
        // The key pins its algorithm: a JWE naming another alg for this kid is refused (RFC 8725 section 3.1).
        if (!key || header.alg !== key.record.alg) throw new Error('no usable key for this JWE');
        return key.privateKey!;
      },
      // maxDecompressedLength 0: compressed JWEs ("zip") are refused, as on the node:crypto path (RFC 8725 section 3.6).
      { keyManagementAlgorithms: ['ECDH-ES+A256KW', 'RSA-OAEP-256'], contentEncryptionAlgorithms: CONTENT_ALGS, maxDecompressedLength: 0 },
    );
    return { plaintext: Buffer.from(plaintext), kid: key!.record.kid, cty: headerString(protectedHeader.cty), typ: headerString(protectedHeader.typ) };
  } catch (err) {
    throw decryptionFailed(err);
  }
}

const DATA_KEY_ENC = 'A256GCM';

function contextHash(context: Buffer): string | undefined {
  return context.length === 0 ? undefined : createHash('sha256').update(context).digest('base64url');
}

/** The "own" header of a data key bound to `owner` (domain-separated from the context's hash). */
function ownerHash(owner: string): string {
  return createHash('sha256').update('sts data key owner\0').update(owner).digest('base64url');
}

/**
 * Wraps a data key under the PRIMARY secret key (or a given one) as a compact JWE with "alg":"dir" and
 * "enc":"A256GCM" (RFC 7516 section 7.1; RFC 7518 section 4.5). The SHA-256 of the caller's context is an
 * integrity-protected header ("ctx"), so the wrapped key only opens with the same context, as with KMS
 * encryption context. `owner` (PopService: the calling application, or its data key group) binds the key the
 * same way, as the "own" header: only the same owner unwraps it.
 */
export function wrapKey(ring: KeyRing, plaintext: Buffer, context: Buffer, key: LiveKey = ring.primary('secret'), owner?: string): { wrapped: string; kid: string } {
  const header: Record<string, string> = { alg: 'dir', enc: DATA_KEY_ENC, kid: key.record.kid };
  const ctx = contextHash(context);
  if (ctx) header.ctx = ctx;
  if (owner !== undefined) header.own = ownerHash(owner);
  const protectedB64 = b64(JSON.stringify(header));
  // RFC 7516 section 5.1 step 14: the AAD is ASCII(BASE64URL(UTF8(JWE Protected Header))).
  const { iv, ciphertext, tag } = gcmEncrypt(key.privateKey!, plaintext, Buffer.from(protectedB64, 'ascii'));
  return { wrapped: `${protectedB64}..${b64(iv)}.${b64(ciphertext)}.${b64(tag)}`, kid: key.record.kid };
}

/**
 * `includeHeld`: also with a secret key whose destruction is held for user secrets (see KeyRing.usable).
 * `owner`: the key must have been wrapped for this owner; a key without an "own" header (wrapped before data
 * keys were bound to their owners) is accepted too unless `refuseUnbound`, and `bound` says which it was.
 * Without `owner` only a key without "own" opens. A wrong owner fails exactly like a wrong context.
 */
export function unwrapKey(ring: KeyRing, wrapped: string, context: Buffer, options: { includeHeld?: boolean; owner?: string; refuseUnbound?: boolean } = {}): { plaintext: Buffer; kid: string; bound: boolean } {
  const parts = wrapped.split('.');
  if (parts.length !== 5 || parts[1] !== '' || !parts.every((p) => B64URL.test(p))) throw unwrapFailed();
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw unwrapFailed(err);
  }
  if (header?.alg !== 'dir' || header.enc !== DATA_KEY_ENC || typeof header.kid !== 'string' || header.ctx !== contextHash(context)) throw unwrapFailed();
  if (header.own !== undefined && (options.owner === undefined || header.own !== ownerHash(options.owner))) throw unwrapFailed();
  if (header.own === undefined && options.owner !== undefined && options.refuseUnbound) throw unwrapFailed();
  const key = ring.usable(header.kid, 'secret', options);
  const iv = Buffer.from(parts[2]!, 'base64url');
  const tag = Buffer.from(parts[4]!, 'base64url');
  if (!key || iv.length !== 12 || tag.length !== 16) throw unwrapFailed();
  try {
    return { plaintext: gcmDecrypt(key.privateKey!, iv, Buffer.from(parts[3]!, 'base64url'), tag, Buffer.from(parts[0]!, 'ascii')), kid: key.record.kid, bound: header.own !== undefined };
  } catch (err) {
    throw unwrapFailed(err);
  }
}
