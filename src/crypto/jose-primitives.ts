/**
 * JOSE building blocks on node:crypto, shared by the fast paths of PopService (src/pop/jose-ops.ts) and
 * SecretService (src/secret): base64url, JWS signatures by algorithm (RFC 7518 section 3), the ECDH-ES Concat
 * KDF (section 4.6.2), AES Key Wrap (section 4.4, RFC 3394), AES-256-GCM (section 5.3) and ECDH-ES
 * encryption of a compact JWE to a public key (sections 4.6 and 5.3, RFC 7516 section 5.1).
 *
 * Every function here is synchronous and one or two OpenSSL calls: several times cheaper than the same
 * operation through jose on WebCrypto, which is asynchronous and imports a CryptoKey per use. jose remains for
 * the forms these do not cover.
 */
import {
  type CipherKey,
  type KeyObject,
  constants,
  createCipheriv,
  createDecipheriv,
  createECDH,
  createHash,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  sign as nodeSign,
  verify as nodeVerify,
} from 'node:crypto';

export const b64u = (b: Buffer | Uint8Array | string): string => Buffer.from(b).toString('base64url');

/** The base64url alphabet without padding (RFC 7515 section 2), possibly empty. */
export const B64URL = /^[A-Za-z0-9_-]*$/;

/**
 * Decodes base64url as jose does (WHATWG forgiving-base64): only the unpadded base64url alphabet, and not a
 * length of 4n+1 (which no byte string encodes to). Undefined when the text is not base64url.
 */
export function decodeB64u(text: string): Buffer | undefined {
  if (text.length % 4 === 1 || !B64URL.test(text)) return undefined;
  return Buffer.from(text, 'base64url');
}

// ---------------------------------------------------------------------------------------------------------
// JWS signatures (RFC 7518 section 3; RFC 8037 section 3.1 for EdDSA).

interface JwsAlgorithm {
  kty: 'EC' | 'RSA' | 'OKP';
  /** The JWK "crv" the key must have (EC and OKP). */
  crv?: 'P-256' | 'P-384' | 'P-521' | 'Ed25519';
  /** null for EdDSA, which hashes internally. */
  hash: 'sha256' | 'sha384' | 'sha512' | null;
  /** ECDSA: the length of R || S (section 3.4). */
  signatureBytes?: number;
  /** RSASSA-PSS: the salt length, equal to the hash length (section 3.5). */
  pssSalt?: number;
}

/** Every asymmetric JWS algorithm STS verifies; never "none", never HMAC (RFC 8725 sections 2.1 and 3.1). */
export const JWS_ALGORITHMS = {
  RS256: { kty: 'RSA', hash: 'sha256' },
  RS384: { kty: 'RSA', hash: 'sha384' },
  RS512: { kty: 'RSA', hash: 'sha512' },
  PS256: { kty: 'RSA', hash: 'sha256', pssSalt: 32 },
  PS384: { kty: 'RSA', hash: 'sha384', pssSalt: 48 },
  PS512: { kty: 'RSA', hash: 'sha512', pssSalt: 64 },
  ES256: { kty: 'EC', crv: 'P-256', hash: 'sha256', signatureBytes: 64 },
  ES384: { kty: 'EC', crv: 'P-384', hash: 'sha384', signatureBytes: 96 },
  ES512: { kty: 'EC', crv: 'P-521', hash: 'sha512', signatureBytes: 132 },
  EdDSA: { kty: 'OKP', crv: 'Ed25519', hash: null },
  Ed25519: { kty: 'OKP', crv: 'Ed25519', hash: null },
} as const satisfies Record<string, JwsAlgorithm>;

export type JwsAlg = keyof typeof JWS_ALGORITHMS;

export function isJwsAlg(alg: unknown): alg is JwsAlg {
  return typeof alg === 'string' && Object.hasOwn(JWS_ALGORITHMS, alg);
}

/** The JWK kty and crv an algorithm's key has (RFC 7518 sections 3.3 to 3.5, RFC 8037). */
export function jwsKeyType(alg: JwsAlg): JwsAlgorithm {
  return JWS_ALGORITHMS[alg];
}

/** node:crypto's name of each curve, for a KeyObject's asymmetricKeyDetails.namedCurve. */
const NODE_CURVE: Record<string, string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1' };

/** True when the key object is of the algorithm's type and curve: no algorithm confusion (RFC 8725 section 3.1). */
function keyFits(a: JwsAlgorithm, key: KeyObject): boolean {
  switch (a.kty) {
    case 'EC':
      return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === NODE_CURVE[a.crv!];
    case 'RSA':
      return key.asymmetricKeyType === 'rsa' || (a.pssSalt !== undefined && key.asymmetricKeyType === 'rsa-pss');
    case 'OKP':
      return key.asymmetricKeyType === 'ed25519';
  }
}

function signOptions(a: JwsAlgorithm, key: KeyObject) {
  // ECDSA signatures are R || S of fixed length, not DER (section 3.4).
  if (a.signatureBytes !== undefined) return { key, dsaEncoding: 'ieee-p1363' as const };
  if (a.pssSalt !== undefined) return { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: a.pssSalt };
  return key;
}

/** The JWS signature of `data`; throws for a key that is not of the algorithm's type. */
export function jwsSign(alg: JwsAlg, key: KeyObject, data: Buffer): Buffer {
  const a: JwsAlgorithm = JWS_ALGORITHMS[alg];
  if (!keyFits(a, key)) throw new Error(`the key is not a ${alg} key`);
  return nodeSign(a.hash, data, signOptions(a, key));
}

/**
 * Verifies a JWS signature. False for a wrong signature, one of the wrong length (a DER-encoded ECDSA
 * signature, say) and a key that is not of the algorithm's type; never throws.
 */
export function jwsVerify(alg: JwsAlg, key: KeyObject, data: Buffer, signature: Buffer): boolean {
  const a: JwsAlgorithm = JWS_ALGORITHMS[alg];
  if (!keyFits(a, key) || (a.signatureBytes !== undefined && signature.length !== a.signatureBytes)) return false;
  try {
    return nodeVerify(a.hash, data, signOptions(a, key), signature);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------
// ECDH-ES (RFC 7518 section 4.6), AES Key Wrap (section 4.4) and A256GCM (section 5.3).

/** RFC 3394 section 2.2.3.1: the default initial value of AES Key Wrap. */
const AES_KW_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
const EMPTY = Buffer.alloc(0);

function lengthPrefixed(b: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/**
 * The Concat KDF of NIST SP 800-56A section 5.8.1 as RFC 7518 section 4.6.2 uses it: SHA-256, OtherInfo =
 * AlgorithmID || PartyUInfo || PartyVInfo (each length-prefixed) || SuppPubInfo (keydatalen in bits).
 * `algorithmId` is the "alg" with key wrapping, the "enc" for direct key agreement.
 */
export function concatKdf(z: Buffer, algorithmId: string, keyBits: number, apu: Buffer = EMPTY, apv: Buffer = EMPTY): Buffer {
  const suppPubInfo = Buffer.alloc(4);
  suppPubInfo.writeUInt32BE(keyBits);
  const otherInfo = Buffer.concat([lengthPrefixed(Buffer.from(algorithmId, 'ascii')), lengthPrefixed(apu), lengthPrefixed(apv), suppPubInfo]);
  const keyBytes = keyBits >> 3;
  const rounds: Buffer[] = [];
  for (let counter = 1; rounds.length * 32 < keyBytes; counter++) {
    const round = Buffer.alloc(4);
    round.writeUInt32BE(counter);
    rounds.push(createHash('sha256').update(round).update(z).update(otherInfo).digest());
  }
  const out = Buffer.concat(rounds);
  return out.length === keyBytes ? out : out.subarray(0, keyBytes);
}

/** AES-256 Key Wrap (RFC 3394) of a content encryption key. */
export function aesKeyWrap256(kek: Buffer, cek: Buffer): Buffer {
  const wrap = createCipheriv('id-aes256-wrap', kek, AES_KW_IV);
  return Buffer.concat([wrap.update(cek), wrap.final()]);
}

/** Unwraps an AES-256 Key Wrap; throws when the integrity check fails. */
export function aesKeyUnwrap256(kek: Buffer, wrapped: Buffer): Buffer {
  const unwrap = createDecipheriv('id-aes256-wrap', kek, AES_KW_IV);
  return Buffer.concat([unwrap.update(wrapped), unwrap.final()]);
}

/** AES-256-GCM with a random 96-bit IV and a 128-bit tag. */
export function gcmEncrypt(key: CipherKey, plaintext: Uint8Array, aad: Buffer): { iv: Buffer; ciphertext: Buffer; tag: Buffer } {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, ciphertext, tag: cipher.getAuthTag() };
}

/**
 * Opens AES-256-GCM; throws when the tag does not verify. Only a 96-bit IV and a full 128-bit tag are taken
 * (RFC 7518 section 5.3): node would accept tags down to 4 bytes, and a truncated tag is a forgery's friend.
 */
export function gcmDecrypt(key: CipherKey, iv: Buffer, ciphertext: Buffer, tag: Buffer, aad: Buffer): Buffer {
  if (iv.length !== 12 || tag.length !== 16) throw new Error('AES-GCM: the IV must be 96 bits and the tag 128 bits');
  const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

/** The JWE key management algorithms of the ECDH-ES fast path, always with "enc" A256GCM. */
export type EcdhEsAlg = 'ECDH-ES+A256KW' | 'ECDH-ES';

const EC_CURVES: Record<string, 'P-256' | 'P-384' | 'P-521'> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

/**
 * A recipient of ECDH-ES JWEs: a public key on P-256, P-384, P-521 (RFC 7518 section 4.6), X25519 or X448
 * (RFC 8037 section 3.2; jose 6 cannot import X448 for ECDH-ES, so here is its only path). `from` returns
 * undefined for any other key, whose JWEs stay with jose.
 */
export class EcdhRecipient {
  private constructor(
    private readonly publicKey: KeyObject,
    private readonly crv: 'P-256' | 'P-384' | 'P-521' | 'X25519' | 'X448',
    /** EC: the uncompressed point, for ECDH.computeSecret (which checks that it is on the curve). */
    private readonly point: Buffer | undefined,
    private readonly nodeCurve: string | undefined,
  ) {}

  static from(publicKey: KeyObject): EcdhRecipient | undefined {
    if (publicKey.type !== 'public') return undefined;
    if (publicKey.asymmetricKeyType === 'x25519') return new EcdhRecipient(publicKey, 'X25519', undefined, undefined);
    if (publicKey.asymmetricKeyType === 'x448') return new EcdhRecipient(publicKey, 'X448', undefined, undefined);
    const nodeCurve = publicKey.asymmetricKeyDetails?.namedCurve;
    const crv = publicKey.asymmetricKeyType === 'ec' && nodeCurve ? EC_CURVES[nodeCurve] : undefined;
    if (!crv || !nodeCurve) return undefined;
    // Exported coordinates have the full length of the curve (RFC 7518 section 6.2.1.2).
    const jwk = publicKey.export({ format: 'jwk' });
    const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
    return new EcdhRecipient(publicKey, crv, point, nodeCurve);
  }

  /** A fresh ephemeral key pair: its public JWK (only kty, crv, x, y; jose's member order) and the shared secret Z. */
  private agree(): { epk: Record<string, string>; z: Buffer } {
    if (this.point && this.nodeCurve) {
      const ecdh = createECDH(this.nodeCurve);
      const pub = ecdh.generateKeys();
      const n = (pub.length - 1) / 2;
      const epk = { x: b64u(pub.subarray(1, 1 + n)), crv: this.crv, kty: 'EC', y: b64u(pub.subarray(1 + n)) };
      return { epk, z: ecdh.computeSecret(this.point) };
    }
    const ephemeral = this.crv === 'X448' ? generateKeyPairSync('x448') : generateKeyPairSync('x25519');
    const epk = { x: ephemeral.publicKey.export({ format: 'jwk' }).x!, crv: this.crv, kty: 'OKP' };
    return { epk, z: diffieHellman({ privateKey: ephemeral.privateKey, publicKey: this.publicKey }) };
  }

  /**
   * A compact JWE of `plaintext` with "enc" A256GCM: protected header {alg, enc, kid, epk}, apu and apv empty
   * (as jose makes them), the CEK wrapped under the Concat KDF output (ECDH-ES+A256KW) or that output itself
   * (ECDH-ES), and the encoded protected header as the AAD (RFC 7516 section 5.1 step 14).
   */
  encrypt(alg: EcdhEsAlg, kid: string, plaintext: Uint8Array): string {
    const { epk, z } = this.agree();
    const protectedB64 = b64u(JSON.stringify({ alg, enc: 'A256GCM', kid, epk }));
    let cek: Buffer;
    let encryptedKey = '';
    if (alg === 'ECDH-ES') {
      cek = concatKdf(z, 'A256GCM', 256);
    } else {
      const kek = concatKdf(z, alg, 256);
      cek = randomBytes(32);
      encryptedKey = b64u(aesKeyWrap256(kek, cek));
      kek.fill(0);
    }
    z.fill(0);
    try {
      const { iv, ciphertext, tag } = gcmEncrypt(cek, plaintext, Buffer.from(protectedB64, 'ascii'));
      return `${protectedB64}.${encryptedKey}.${b64u(iv)}.${b64u(ciphertext)}.${b64u(tag)}`;
    } finally {
      cek.fill(0);
    }
  }
}
