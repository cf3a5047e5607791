/**
 * In-process crypto micro-benchmarks: each STS crypto operation through the STS code path
 * (src/pop/jose-ops.ts with the key ring of a real, in-process STS) against the same primitive done
 * directly with node:crypto, one at a time on one thread, ~1 s each.
 */
import {
  createCipheriv,
  createDecipheriv,
  createECDH,
  createHash,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  sign,
  verify,
  type JsonWebKey,
  type KeyObject,
} from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { CompactEncrypt, SignJWT, compactDecrypt, createLocalJWKSet, jwtVerify } from 'jose';
import { EcdhRecipient } from '../src/crypto/jose-primitives.js';
import { JwsKeySet, parseCompactJws, verifyJwt } from '../src/secret/jwt-verify.js';
import { startSts } from '../src/app.js';
import { loadConfig } from '../src/config/load.js';
import { silentLogger } from '../src/log.js';
import { decryptCompact, signCompact, unwrapKey, verifyCompact, wrapKey } from '../src/pop/jose-ops.js';
import type { KeyRing } from '../src/pop/key-ring.js';
import { JwksCache } from '../clients/ts/src/jwks.js';
import { IDLE_CORES, coresBetween, round3, snapshot, waitIdle } from './cpu.js';

export interface CryptoResult {
  op: string;
  /** What the STS path and the node:crypto path each do, in one line. */
  detail: string;
  stsOpsPerSec: number;
  nodeOpsPerSec: number;
  /** stsOpsPerSec / nodeOpsPerSec: 1 means STS adds nothing over the bare primitive. */
  ratio: number;
  /** Cores used by other processes meanwhile (should be ~0). */
  otherCores: number;
}

export interface CryptoBenchOptions {
  /** Measuring time per path and operation. */
  msPerOp: number;
  progress?: (line: string) => void;
  /** When > 0: for up to this long per operation, wait for an idle machine and measure again when disturbed. */
  waitIdleMs?: number;
}

type Op = () => unknown;

/** Runs `fn` for ~`ms` after a short warm-up, one call at a time (awaiting it when it returns a promise). */
export async function opsPerSecond(fn: Op, ms: number): Promise<number> {
  const first = fn();
  const isAsync = first instanceof Promise;
  if (isAsync) await first;
  const run = async (budgetMs: number): Promise<{ n: number; elapsed: number }> => {
    const start = performance.now();
    let n = 0;
    let now = start;
    while (now - start < budgetMs) {
      for (let i = 0; i < 16; i++) {
        if (isAsync) await fn();
        else fn();
      }
      n += 16;
      now = performance.now();
    }
    return { n, elapsed: now - start };
  };
  await run(Math.max(50, ms / 5));
  const { n, elapsed } = await run(ms);
  return n / (elapsed / 1000);
}

const unb64 = (s: string): Buffer => Buffer.from(s, 'base64url');
const AES_KW_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');

/** RFC 7518 section 4.6.2: Concat KDF (one SHA-256 round, enough for a 256-bit key). */
function concatKdf256(z: Buffer, alg: string, apu: Buffer, apv: Buffer): Buffer {
  const len = (b: Buffer): Buffer => {
    const l = Buffer.alloc(4);
    l.writeUInt32BE(b.length);
    return Buffer.concat([l, b]);
  };
  const algId = Buffer.from(alg, 'ascii');
  return createHash('sha256')
    .update(Buffer.from([0, 0, 0, 1]))
    .update(z)
    .update(len(algId))
    .update(len(apu))
    .update(len(apv))
    .update(Buffer.from([0, 0, 1, 0])) // keydatalen 256 bits
    .digest();
}

/**
 * Decrypts an ECDH-ES+A256KW / A256GCM compact JWE with node:crypto only: parse, import the ephemeral
 * key, ECDH on P-256, Concat KDF, AES-256 key unwrap (RFC 3394), AES-256-GCM decrypt.
 */
function nodeDecryptJwe(privateKey: KeyObject, jwe: string): Buffer {
  const [h, ek, iv, ct, tag] = jwe.split('.') as [string, string, string, string, string];
  const header = JSON.parse(unb64(h).toString('utf8')) as { alg: string; enc: string; epk: JsonWebKey; apu?: string; apv?: string };
  if (header.alg !== 'ECDH-ES+A256KW' || header.enc !== 'A256GCM') throw new Error('unexpected JWE algorithms');
  const z = diffieHellman({ privateKey, publicKey: createPublicKey({ key: header.epk, format: 'jwk' }) });
  const kek = concatKdf256(z, header.alg, unb64(header.apu ?? ''), unb64(header.apv ?? ''));
  const kw = createDecipheriv('id-aes256-wrap', kek, AES_KW_IV);
  const cek = Buffer.concat([kw.update(unb64(ek)), kw.final()]);
  const gcm = createDecipheriv('aes-256-gcm', cek, unb64(iv));
  gcm.setAAD(Buffer.from(h, 'ascii'));
  gcm.setAuthTag(unb64(tag));
  return Buffer.concat([gcm.update(unb64(ct)), gcm.final()]);
}

/**
 * Encrypts to a P-256 public key as ECDH-ES+A256KW / A256GCM with node:crypto only: ephemeral key pair, ECDH,
 * Concat KDF, AES-256 key wrap of a random CEK, AES-256-GCM with the encoded header as AAD.
 */
function nodeEncryptJwe(point: Buffer, kid: string, plaintext: Buffer): string {
  const ecdh = createECDH('prime256v1');
  const pub = ecdh.generateKeys();
  const epk = { x: pub.subarray(1, 33).toString('base64url'), crv: 'P-256', kty: 'EC', y: pub.subarray(33).toString('base64url') };
  const h = Buffer.from(JSON.stringify({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid, epk })).toString('base64url');
  const kek = concatKdf256(ecdh.computeSecret(point), 'ECDH-ES+A256KW', Buffer.alloc(0), Buffer.alloc(0));
  const cek = randomBytes(32);
  const kw = createCipheriv('id-aes256-wrap', kek, AES_KW_IV);
  const ek = Buffer.concat([kw.update(cek), kw.final()]);
  const iv = randomBytes(12);
  const gcm = createCipheriv('aes-256-gcm', cek, iv);
  gcm.setAAD(Buffer.from(h, 'ascii'));
  const ct = Buffer.concat([gcm.update(plaintext), gcm.final()]);
  return `${h}.${ek.toString('base64url')}.${iv.toString('base64url')}.${ct.toString('base64url')}.${gcm.getAuthTag().toString('base64url')}`;
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`crypto bench sanity check failed: ${what}`);
}

async function makeJwes(ring: KeyRing, plaintexts: readonly Buffer[]): Promise<string[]> {
  const primary = ring.primary('encryption');
  // The JWEs a client makes (JwksCache.encryptFor), from the JWKS the ring publishes.
  const cache = new JwksCache(async () => ({
    jwksJson: JSON.stringify({ keys: ring.view().flatMap((v) => (v.record.publicJwk && v.state !== 'destroyed' ? [v.record.publicJwk] : [])) }),
    maxAge: { seconds: 300, nanos: 0 },
    primaryEncryptionKid: primary.record.kid,
    primarySigningKid: ring.primary('signing').record.kid,
  }));
  const out: string[] = [];
  for (const p of plaintexts) out.push(await cache.encryptFor(p));
  return out;
}

/** Starts an STS in-process (temporary data directory, silent) and measures every crypto operation. */
export async function cryptoBench(options: CryptoBenchOptions): Promise<CryptoResult[]> {
  const dataDir = mkdtempSync(join(tmpdir(), 'sts-bench-crypto-'));
  try {
    const config = loadConfig({ env: {}, overrides: { 'server.address': '127.0.0.1:0', 'http.address': '', dataDir, 'server.shutdownGraceMs': 1000 } });
    const sts = await startSts({ config, env: {}, logger: silentLogger });
    try {
      return await measureAll(sts.ring, { progress: () => {}, waitIdleMs: 0, ...options });
    } finally {
      await sts.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function measureAll(ring: KeyRing, { msPerOp: ms, progress, waitIdleMs }: Required<CryptoBenchOptions>): Promise<CryptoResult[]> {
  const signing = ring.primary('signing');
  const encryption = ring.primary('encryption');
  const secret = ring.primary('secret');
  const payload = randomBytes(100);

  // JWS: the same signing input for both paths.
  const { jws } = signCompact(ring, payload);
  const [jh, jp, js] = jws.split('.') as [string, string, string];
  const signingInput = Buffer.from(`${jh}.${jp}`, 'ascii');
  const signature = unb64(js);
  check(signing.record.alg === 'EdDSA', 'the default signing key is Ed25519');
  check(verify(null, signingInput, signing.publicKey!, signature), 'node verifies the STS signature');

  // JWE: 200 JWEs, 100-byte plaintexts, cycled.
  const plaintexts = Array.from({ length: 200 }, () => randomBytes(100));
  const jwes = await makeJwes(ring, plaintexts);
  check((await decryptCompact(ring, jwes[0]!)).plaintext.equals(plaintexts[0]!), 'STS decrypts the JWE');
  check(nodeDecryptJwe(encryption.privateKey!, jwes[0]!).equals(plaintexts[0]!), 'node:crypto decrypts the JWE');
  let j = 0;
  const nextJwe = (): string => jwes[(j = (j + 1) % jwes.length)]!;

  // Data keys: 32 bytes, with a context, as GenerateDataKey/Unwrap do.
  const dataKey = randomBytes(32);
  const context = Buffer.from('bench-context');
  const { wrapped } = wrapKey(ring, dataKey, context);
  const [wh, , wiv, wct, wtag] = wrapped.split('.') as [string, string, string, string, string];
  const wAad = Buffer.from(wh, 'ascii');
  const wIv = unb64(wiv);
  const wCt = unb64(wct);
  const wTag = unb64(wtag);
  const nodeUnwrap = (): Buffer => {
    const d = createDecipheriv('aes-256-gcm', secret.privateKey!, wIv);
    d.setAAD(wAad);
    d.setAuthTag(wTag);
    return Buffer.concat([d.update(wCt), d.final()]);
  };
  check(unwrapKey(ring, wrapped, context).plaintext.equals(dataKey) && nodeUnwrap().equals(dataKey), 'both paths unwrap the data key');

  // GetUserSecret's two operations: an identity provider's ES256 JWT, and the secret's JWE to a resource server.
  const idp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const idpJwk = { ...idp.publicKey.export({ format: 'jwk' }), kid: 'idp-1', alg: 'ES256', use: 'sig' };
  const now = Date.now();
  const idpJwt = await new SignJWT({ sub: 'user-1' })
    .setProtectedHeader({ alg: 'ES256', kid: 'idp-1' })
    .setIssuer('https://idp.example')
    .setAudience('sts')
    .setIssuedAt()
    .setExpirationTime(Math.floor(now / 1000) + 3600)
    .sign(idp.privateKey);
  const keySet = new JwsKeySet({ keys: [idpJwk] });
  const rules = { issuer: 'https://idp.example', audiences: ['sts'], clockToleranceS: 30, nowMs: now };
  const stsVerifyJwt = (): Record<string, unknown> => {
    const parsed = parseCompactJws(idpJwt, ['ES256']);
    return verifyJwt(parsed, keySet.key(parsed.alg, parsed.kid), rules);
  };
  const [ih, ip, is] = idpJwt.split('.') as [string, string, string];
  const idpInput = Buffer.from(`${ih}.${ip}`, 'ascii');
  const idpSignature = unb64(is);
  const nodeVerifyEs256 = (): boolean => verify('sha256', idpInput, { key: idp.publicKey, dsaEncoding: 'ieee-p1363' }, idpSignature);
  const joseJwks = createLocalJWKSet({ keys: [idpJwk] });
  check(stsVerifyJwt().sub === 'user-1' && nodeVerifyEs256(), 'both paths verify the identity provider\'s JWT');
  const rs = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rsJwk = rs.publicKey.export({ format: 'jwk' });
  const rsPoint = Buffer.concat([Buffer.from([4]), unb64(rsJwk.x!), unb64(rsJwk.y!)]);
  const recipient = EcdhRecipient.from(rs.publicKey)!;
  const userSecret = randomBytes(32);
  for (const jwe of [recipient.encrypt('ECDH-ES+A256KW', 'rs-1', userSecret), nodeEncryptJwe(rsPoint, 'rs-1', userSecret)]) {
    check(nodeDecryptJwe(rs.privateKey, jwe).equals(userSecret), 'the resource server opens both paths\' JWEs');
  }

  const cases: { op: string; detail: string; sts: Op; node: Op }[] = [
    {
      op: 'JWS sign (EdDSA, 100 B)',
      detail: 'signCompact vs crypto.sign(Ed25519) of the same signing input',
      sts: () => signCompact(ring, payload),
      node: () => sign(null, signingInput, signing.privateKey!),
    },
    {
      op: 'JWS verify (EdDSA, 100 B)',
      detail: 'verifyCompact vs crypto.verify(Ed25519) of the same signing input',
      sts: () => verifyCompact(ring, jws),
      node: () => verify(null, signingInput, signing.publicKey!, signature),
    },
    {
      op: 'JWE decrypt (ECDH-ES+A256KW, A256GCM, 100 B)',
      detail: 'decryptCompact vs node:crypto alone: parse, import epk, ECDH P-256, Concat KDF, AES-KW unwrap, AES-256-GCM decrypt',
      sts: () => decryptCompact(ring, nextJwe()),
      node: () => nodeDecryptJwe(encryption.privateKey!, nextJwe()),
    },
    {
      op: 'JWE decrypt, jose.compactDecrypt (reference)',
      detail: 'jose.compactDecrypt with the private KeyObject (no STS code) vs the same node:crypto path: what a jose-based decrypt costs',
      sts: () => compactDecrypt(nextJwe(), encryption.privateKey!),
      node: () => nodeDecryptJwe(encryption.privateKey!, nextJwe()),
    },
    {
      op: 'Identity provider JWT verify (ES256, GetUserSecret)',
      detail: 'parseCompactJws + JwsKeySet.key + verifyJwt (signature and claims) vs crypto.verify(ES256, ieee-p1363) of the same signing input',
      sts: stsVerifyJwt,
      node: nodeVerifyEs256,
    },
    {
      op: 'Identity provider JWT verify, jose.jwtVerify (reference)',
      detail: 'jose.jwtVerify with createLocalJWKSet and the same claim rules (what STS used before) vs the same crypto.verify',
      sts: () => jwtVerify(idpJwt, joseJwks, { issuer: rules.issuer, audience: rules.audiences as string[], clockTolerance: rules.clockToleranceS, requiredClaims: ['exp'] }),
      node: nodeVerifyEs256,
    },
    {
      op: 'JWE to a resource server (ECDH-ES+A256KW P-256, 32 B, GetUserSecret)',
      detail: 'EcdhRecipient.encrypt vs node:crypto alone: ephemeral P-256 key, ECDH, Concat KDF, AES-KW wrap, AES-256-GCM encrypt',
      sts: () => recipient.encrypt('ECDH-ES+A256KW', 'rs-1', userSecret),
      node: () => nodeEncryptJwe(rsPoint, 'rs-1', userSecret),
    },
    {
      op: 'JWE to a resource server, jose.CompactEncrypt (reference)',
      detail: 'jose.CompactEncrypt with the public KeyObject (what STS used before) vs the same node:crypto path',
      sts: () => new CompactEncrypt(userSecret).setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: 'rs-1' }).encrypt(rs.publicKey),
      node: () => nodeEncryptJwe(rsPoint, 'rs-1', userSecret),
    },
    {
      op: 'Data key wrap (32 B, A256GCM dir)',
      detail: 'wrapKey vs AES-256-GCM encrypt (random IV, same AAD)',
      sts: () => wrapKey(ring, dataKey, context),
      node: () => {
        const c = createCipheriv('aes-256-gcm', secret.privateKey!, randomBytes(12));
        c.setAAD(wAad);
        return [Buffer.concat([c.update(dataKey), c.final()]), c.getAuthTag()];
      },
    },
    {
      op: 'Data key unwrap (32 B, A256GCM dir)',
      detail: 'unwrapKey vs AES-256-GCM decrypt of the same wrapped key',
      sts: () => unwrapKey(ring, wrapped, context),
      node: nodeUnwrap,
    },
  ];

  const results: CryptoResult[] = [];
  for (const c of cases) {
    let best: CryptoResult | undefined;
    const until = performance.now() + waitIdleMs;
    for (let attempt = 0; attempt === 0 || performance.now() < until; attempt++) {
      if (waitIdleMs > 0) await waitIdle(Math.max(0, until - performance.now()), progress, [process.pid]);
      progress(`crypto: ${c.op}${attempt > 0 ? ' (again: the machine was busy)' : ''}`);
      const before = snapshot([process.pid]);
      const stsOps = await opsPerSecond(c.sts, ms);
      const nodeOps = await opsPerSecond(c.node, ms);
      const { machine, procs } = coresBetween(before, snapshot([process.pid]));
      const otherCores = round3(Math.max(0, machine - (procs.get(process.pid) ?? 0)));
      const r = { op: c.op, detail: c.detail, stsOpsPerSec: Math.round(stsOps), nodeOpsPerSec: Math.round(nodeOps), ratio: round3(stsOps / nodeOps), otherCores };
      if (!best || r.otherCores < best.otherCores) best = r;
      if (otherCores < IDLE_CORES) break;
    }
    results.push(best!);
  }
  return results;
}
