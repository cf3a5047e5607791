/**
 * Key records: the stored form of every STS key, and the rules that derive a key's state from the clock.
 *
 * A record is immutable once written (cluster nodes may copy it freely): its state is never stored but
 * derived from its timestamps and from the other keys of its kind, following the staged -> primary ->
 * decrypt-only -> destroyed model (Tink's add/promote, NIST SP 800-57 pre-activation/active/deactivated/
 * destroyed). The only change a record ever sees is erasure: its sealed material is dropped after
 * destroy-after.
 */
import { createPrivateKey, createPublicKey, createSecretKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { MasterKeyRing } from '../crypto/master-key.js';

export type KeyKind = 'encryption' | 'signing' | 'secret';
export type KeyState = 'staged' | 'primary' | 'decrypt_only' | 'destroyed';
export type EncryptionAlg = 'ECDH-ES+A256KW' | 'RSA-OAEP-256';
export type SigningAlg = 'EdDSA' | 'ES256' | 'RS256' | 'PS256';
export type SecretAlg = 'A256GCM';
export type KeyAlg = EncryptionAlg | SigningAlg | SecretAlg;

export const KEY_KINDS: readonly KeyKind[] = ['encryption', 'signing', 'secret'];

/**
 * Kinds whose destruction waits for what is stored under them: secret keys wrap users' secrets, so one is
 * destroyed only when the maintenance erases its material, which it does once no stored user secret is
 * wrapped under it (KeyRing's destruction guard). Until then a key of such a kind past its destroyAfter stays
 * DECRYPT_ONLY on every node (the erasure, not the clock, ends it). Other kinds end at destroyAfter.
 */
export function destructionWaitsForErasure(kind: KeyKind): boolean {
  return kind === 'secret';
}

/** True when a record is past its destroyAfter yet still holds its material and may still be used: held. */
export function destructionHeld(record: KeyRecord, now: number): boolean {
  return record.sealed !== undefined && now >= record.destroyAfter && destructionWaitsForErasure(record.kind);
}

/** True when a record can no longer be used: erased, or past destroyAfter (unless its destruction is held). */
export function isDestroyed(record: KeyRecord, now: number): boolean {
  return record.sealed === undefined || (now >= record.destroyAfter && !destructionWaitsForErasure(record.kind));
}

/** The stored record (JSON in the durable store, namespace "key", id = kid). */
export interface KeyRecord {
  v: 1;
  kid: string;
  kind: KeyKind;
  alg: KeyAlg;
  /** Public JWK (asymmetric kinds only), with kid, use and alg. */
  publicJwk?: JWK;
  /** Private JWK JSON or raw secret bytes, sealed under the master key (base64url). Absent once erased. */
  sealed?: string;
  /** Epoch ms. */
  createdAt: number;
  notBefore: number;
  notAfter: number;
  destroyAfter: number;
}

/** A record with its material opened, ready for use. */
export interface LiveKey {
  readonly record: KeyRecord;
  /** Private key (asymmetric) or secret key (AES); undefined once destroyed. */
  readonly privateKey: KeyObject | undefined;
  readonly publicKey: KeyObject | undefined;
}

export interface RotationPolicy {
  validityMs: number;
  stagingLeadMs: number;
  legacyWindowMs: number;
  minimumKeys: number;
}

const RSA_BITS = 3072;

export function useOf(kind: KeyKind): 'enc' | 'sig' | undefined {
  return kind === 'encryption' ? 'enc' : kind === 'signing' ? 'sig' : undefined;
}

/** The AAD that binds a sealed key to its own record. */
function sealAad(kid: string): string {
  return `sts:key:${kid}`;
}

function generateMaterial(kind: KeyKind, alg: KeyAlg): { privateKey: KeyObject; publicKey?: KeyObject } {
  switch (alg) {
    case 'ECDH-ES+A256KW':
    case 'ES256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'RSA-OAEP-256':
    case 'RS256':
    case 'PS256':
      return generateKeyPairSync('rsa', { modulusLength: RSA_BITS });
    case 'EdDSA':
      return generateKeyPairSync('ed25519');
    case 'A256GCM':
      if (kind !== 'secret') break;
      return { privateKey: createSecretKey(randomBytes(32)) };
  }
  throw new Error(`algorithm ${alg} does not fit key kind ${kind}`);
}

/** Generates a new key and seals its material; nothing is stored here. */
export async function generateKey(
  kind: KeyKind,
  alg: KeyAlg,
  times: { createdAt: number; notBefore: number; notAfter: number; destroyAfter: number },
  master: MasterKeyRing,
): Promise<LiveKey> {
  const { privateKey, publicKey } = generateMaterial(kind, alg);
  let kid: string;
  let publicJwk: JWK | undefined;
  let material: Buffer;
  if (publicKey) {
    const jwk = publicKey.export({ format: 'jwk' }) as JWK;
    // RFC 7638: the kid is the JWK thumbprint, so any party can recompute and check it.
    kid = await calculateJwkThumbprint(jwk, 'sha256');
    publicJwk = { ...jwk, kid, use: useOf(kind), alg };
    material = Buffer.from(JSON.stringify(privateKey.export({ format: 'jwk' })));
  } else {
    kid = randomBytes(16).toString('base64url');
    material = privateKey.export();
  }
  const record: KeyRecord = {
    v: 1,
    kid,
    kind,
    alg,
    ...(publicJwk ? { publicJwk } : {}),
    sealed: master.seal(material, sealAad(kid)).toString('base64url'),
    ...times,
  };
  material.fill(0);
  return { record, privateKey, publicKey };
}

/** Opens a stored record. Throws EnvelopeError when the master key does not open it. */
export function openKey(record: KeyRecord, master: MasterKeyRing): LiveKey {
  if (!record.sealed) return { record, privateKey: undefined, publicKey: record.publicJwk ? createPublicKey({ key: record.publicJwk, format: 'jwk' }) : undefined };
  const material = master.open(Buffer.from(record.sealed, 'base64url'), sealAad(record.kid));
  try {
    if (record.kind === 'secret') return { record, privateKey: createSecretKey(Buffer.from(material)), publicKey: undefined };
    const privateKey = createPrivateKey({ key: JSON.parse(material.toString('utf8')) as JWK, format: 'jwk' });
    return { record, privateKey, publicKey: createPublicKey(privateKey) };
  } finally {
    material.fill(0);
  }
}

/** The record re-sealed under the current primary master key (master key rotation). */
export function resealKey(record: KeyRecord, master: MasterKeyRing): KeyRecord {
  if (!record.sealed) return record;
  const material = master.open(Buffer.from(record.sealed, 'base64url'), sealAad(record.kid));
  try {
    return { ...record, sealed: master.seal(material, sealAad(record.kid)).toString('base64url') };
  } finally {
    material.fill(0);
  }
}

/** The record without its material (what remains after destruction). */
export function eraseKey(record: KeyRecord): KeyRecord {
  const { sealed: _sealed, ...rest } = record;
  return rest;
}

const ALGS_OF: Record<KeyKind, readonly KeyAlg[]> = {
  encryption: ['ECDH-ES+A256KW', 'RSA-OAEP-256'],
  signing: ['EdDSA', 'ES256', 'RS256', 'PS256'],
  secret: ['A256GCM'],
};
/** JWK members that hold private material (RFC 7518 section 6): never in a published key. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/**
 * Checks a key record from elsewhere (the cluster) as thoroughly as STS makes one: shape, kind and algorithm,
 * ordered times, a public JWK that is public, carries this kid, use and alg and whose RFC 7638 thumbprint is
 * the kid, and sealed material that opens with the master keys into the private half of that very public
 * key. Throws when any of it fails: a key ring never loads a record it could not have written itself.
 */
export async function validateKeyRecord(id: string, json: string, master: MasterKeyRing): Promise<void> {
  const r = parseKeyRecord(json);
  const fail = (why: string): never => {
    throw new Error(`key record ${id.slice(0, 64)}: ${why}`);
  };
  if (r.kid !== id) fail('its kid is not its record id');
  if (!ALGS_OF[r.kind].includes(r.alg)) fail(`algorithm ${String(r.alg).slice(0, 32)} does not fit kind ${r.kind}`);
  const times = [r.createdAt, r.notBefore, r.notAfter, r.destroyAfter];
  if (!times.every((t) => Number.isSafeInteger(t) && t >= 0) || !(r.createdAt <= r.notBefore && r.notBefore <= r.notAfter && r.notAfter <= r.destroyAfter)) fail('times are not ordered epoch milliseconds');
  if (r.sealed !== undefined && (typeof r.sealed !== 'string' || !/^[A-Za-z0-9_-]{1,16384}$/.test(r.sealed))) fail('sealed material is not base64url');
  if (r.kind === 'secret') {
    if (r.publicJwk !== undefined || !/^[A-Za-z0-9_-]{22}$/.test(r.kid)) fail('a secret key has a random kid and no public key');
  } else {
    const jwk = r.publicJwk;
    if (!jwk || typeof jwk !== 'object' || PRIVATE_MEMBERS.some((m) => m in jwk)) fail('needs a public JWK without private members');
    if (jwk!.kid !== r.kid || jwk!.use !== useOf(r.kind) || jwk!.alg !== r.alg) fail('public JWK kid, use or alg differ from the record');
    if ((await calculateJwkThumbprint(jwk!, 'sha256')) !== r.kid) fail('kid is not the thumbprint of its public JWK');
  }
  if (r.sealed === undefined) return;
  const live = openKey(r, master);
  if (r.publicJwk) {
    const derived = live.publicKey!.export({ format: 'jwk' }) as JWK;
    const { kid: _k, use: _u, alg: _a, ...published } = r.publicJwk;
    if (!Object.entries(derived).every(([k, v]) => (published as Record<string, unknown>)[k] === v) || Object.keys(published).length !== Object.keys(derived).length) {
      fail('the public JWK is not the public half of the sealed private key');
    }
  }
}

export function parseKeyRecord(json: string): KeyRecord {
  const r = JSON.parse(json) as KeyRecord;
  if (r.v !== 1 || typeof r.kid !== 'string' || !KEY_KINDS.includes(r.kind)) throw new Error('not a key record');
  return r;
}

/**
 * The primary key of a kind at `now`: of the keys whose validity has begun and that are not destroyed, the
 * one that began last. A key therefore stays primary past its notAfter when no successor exists yet (a
 * server that was down does not wake up without a primary), and an on-demand rotation supersedes it early.
 */
export function selectPrimary<K extends { record: KeyRecord }>(keys: readonly K[], now: number): K | undefined {
  let best: K | undefined;
  for (const k of keys) {
    const r = k.record;
    if (r.notBefore <= now && now < r.destroyAfter && r.sealed !== undefined && (!best || r.notBefore > best.record.notBefore)) best = k;
  }
  return best;
}

export function stateOf(record: KeyRecord, primaryKid: string | undefined, now: number): KeyState {
  if (isDestroyed(record, now)) return 'destroyed';
  if (record.kid === primaryKid) return 'primary';
  if (now < record.notBefore) return 'staged';
  return 'decrypt_only';
}
