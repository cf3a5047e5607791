/**
 * PopService against a real server with real crypto and a controllable clock: key states and JWKS content
 * through a whole rotation cycle, decrypt/sign/verify across rotation, uniform crypto errors, data keys,
 * restart and master key handling, and load during repeated rotations.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { CompactEncrypt, exportJWK, generateKeyPair } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { JwksCache } from '../clients/ts/src/jwks.js';
import { ManualClock } from '../src/clock.js';
import { StartupError } from '../src/errors.js';
import { KeyKind, KeyState, type KeyInfo } from '../src/gen/sts/v1/pop.js';
import { MasterKeyRing } from '../src/crypto/master-key.js';
import { call, callError } from './helpers/call.js';
import { createApp } from './helpers/directory.js';
import { FAST_ROTATION, type TestSts, startTestSts, tempDir } from './helpers/server.js';

const MIN = 60_000;

const masterKey = (id: string) => `${id}:${randomBytes(32).toString('base64url')}`;

let t: TestSts | undefined;
afterEach(async () => {
  await t?.stop(true);
  t = undefined;
});

function adminToken(s: TestSts): string {
  return readFileSync(join(s.dataDir, 'admin.token'), 'utf8').trim();
}

function cacheFor(s: TestSts, clock?: ManualClock): JwksCache {
  return new JwksCache(() => call(s.pop.getJwks, s.pop, {}), { ...(clock ? { now: () => clock.now() } : {}), minRefetchIntervalMs: 0 });
}

async function listKeys(s: TestSts, kind = KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed = false): Promise<KeyInfo[]> {
  return (await call(s.pop.listKeys, s.pop, { kind, includeDestroyed }, adminToken(s))).keys;
}

async function jwksKids(s: TestSts): Promise<string[]> {
  const res = await call(s.pop.getJwks, s.pop, {});
  return (JSON.parse(res.jwksJson) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
}

function decrypt(s: TestSts, jwe: string) {
  return call(s.pop.decrypt, s.pop, { jwe }, adminToken(s));
}

describe('key lifecycle through a rotation cycle', () => {
  it('stages, promotes, keeps decrypting legacy ciphertext, then destroys', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    t = await startTestSts({ clock, overrides: FAST_ROTATION });
    const cache = cacheFor(t, clock);

    const [enc1] = await listKeys(t, KeyKind.KEY_KIND_ENCRYPTION);
    expect(enc1!.state).toBe(KeyState.KEY_STATE_PRIMARY);
    expect(await listKeys(t, KeyKind.KEY_KIND_ENCRYPTION)).toHaveLength(1);
    const jweOld = await cache.encryptFor('legacy data');
    const jwsOld = (await call(t.pop.sign, t.pop, { payload: Buffer.from('signed before rotation'), type: 'JWT', contentType: '' }, adminToken(t))).jws;

    // 50 minutes in, the successor is due (validity 60 min, staging lead 10 min): it is published first.
    clock.advance(50 * MIN);
    await t.sts.ring.maintain();
    const encKeys = await listKeys(t, KeyKind.KEY_KIND_ENCRYPTION);
    expect(encKeys.map((k) => k.state)).toEqual([KeyState.KEY_STATE_PRIMARY, KeyState.KEY_STATE_STAGED]);
    const enc2 = encKeys[1]!;
    expect(await jwksKids(t)).toContain(enc2.kid);
    expect((await call(t.pop.getJwks, t.pop, {})).primaryEncryptionKid).toBe(enc1!.kid);

    // 65 minutes in: the staged key is primary; the old one is decrypt-only and no longer offered for encryption.
    clock.advance(15 * MIN);
    const after = await listKeys(t, KeyKind.KEY_KIND_ENCRYPTION);
    expect(after.find((k) => k.kid === enc1!.kid)!.state).toBe(KeyState.KEY_STATE_DECRYPT_ONLY);
    expect(after.find((k) => k.kid === enc2.kid)!.state).toBe(KeyState.KEY_STATE_PRIMARY);
    const jwks = await call(t.pop.getJwks, t.pop, {});
    expect(jwks.primaryEncryptionKid).toBe(enc2.kid);
    expect(await jwksKids(t)).not.toContain(enc1!.kid);
    expect(Buffer.from((await decrypt(t, jweOld)).plaintext).toString()).toBe('legacy data');
    const jweNew = await cache.encryptFor('new data');
    expect((await decrypt(t, jweNew)).kid).toBe(enc2.kid);
    // Signatures made before the rotation still verify, on the server and offline from the JWKS.
    await t.sts.ring.maintain();
    expect((await call(t.pop.verify, t.pop, { jws: jwsOld }, adminToken(t))).kid).not.toBe('');
    expect(new TextDecoder().decode((await cache.verifyToken(jwsOld)).payload)).toBe('signed before rotation');

    // Past destroy-after (validity end + 30 min legacy): the old key is gone.
    clock.advance(26 * MIN);
    const err = await callError(decrypt(t, jweOld));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toBe('decryption failed');
    await t.sts.ring.maintain();
    const all = await listKeys(t, KeyKind.KEY_KIND_ENCRYPTION, true);
    expect(all.find((k) => k.kid === enc1!.kid)!.state).toBe(KeyState.KEY_STATE_DESTROYED);
    expect((await listKeys(t, KeyKind.KEY_KIND_ENCRYPTION)).map((k) => k.kid)).not.toContain(enc1!.kid);
    // The material is erased from the store, not only hidden.
    const stored = JSON.parse((await t.sts.store.durable.get('key', enc1!.kid))!) as Record<string, unknown>;
    expect(stored.sealed).toBeUndefined();
    expect((await decrypt(t, jweNew)).kid).toBe(enc2.kid);
  });

  it('RotateKeys stages a new key per kind now and it becomes primary after the staging lead', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    t = await startTestSts({ clock, overrides: FAST_ROTATION });
    const res = await call(t.pop.rotateKeys, t.pop, { kinds: [KeyKind.KEY_KIND_SIGNING] }, adminToken(t));
    expect(res.created).toHaveLength(1);
    expect(res.created[0]!.state).toBe(KeyState.KEY_STATE_STAGED);
    expect(res.created[0]!.kind).toBe(KeyKind.KEY_KIND_SIGNING);
    expect(await jwksKids(t)).toContain(res.created[0]!.kid);
    clock.advance(10 * MIN);
    const signed = await call(t.pop.sign, t.pop, { payload: Buffer.from('x'), type: '', contentType: '' }, adminToken(t));
    expect(signed.kid).toBe(res.created[0]!.kid);
    const all = await call(t.pop.rotateKeys, t.pop, { kinds: [] }, adminToken(t));
    expect(all.created.map((k) => k.kind).sort()).toEqual([KeyKind.KEY_KIND_ENCRYPTION, KeyKind.KEY_KIND_SIGNING, KeyKind.KEY_KIND_SECRET]);
  });

  it('the client cache refetches the JWKS when it meets an unknown kid, and only then', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    t = await startTestSts({ clock, overrides: FAST_ROTATION });
    const s = t;
    let fetches = 0;
    // The client's own clock stands still: its cached JWKS never expires by age in this test.
    const clientClock = new ManualClock(clock.now());
    const cache = new JwksCache(
      () => {
        fetches++;
        return call(s.pop.getJwks, s.pop, {});
      },
      { now: () => clientClock.now(), minRefetchIntervalMs: 0 },
    );
    const sign = async () => (await call(s.pop.sign, s.pop, { payload: Buffer.from('p'), type: '', contentType: '' }, adminToken(s))).jws;
    await cache.verifyToken(await sign());
    await cache.verifyToken(await sign());
    expect(fetches).toBe(1);
    await call(s.pop.rotateKeys, s.pop, { kinds: [KeyKind.KEY_KIND_SIGNING] }, adminToken(s));
    clock.advance(10 * MIN);
    const byNewKey = await sign();
    expect(new TextDecoder().decode((await cache.verifyToken(byNewKey)).payload)).toBe('p');
    expect(fetches).toBe(2);
    // Flip one full sextet in the middle of the signature (the last character carries padding bits).
    const [h, p, sig] = byNewKey.split('.') as [string, string, string];
    const mid = sig.length >> 1;
    const tampered = `${h}.${p}.${sig.slice(0, mid)}${sig[mid] === 'A' ? 'B' : 'A'}${sig.slice(mid + 1)}`;
    await expect(cache.verifyToken(tampered)).rejects.toThrow();
  });

  it('ListKeys and GetJwks never carry private or secret material', async () => {
    t = await startTestSts();
    const listed = JSON.stringify(await listKeys(t, KeyKind.KEY_KIND_UNSPECIFIED, true));
    const jwks = JSON.parse((await call(t.pop.getJwks, t.pop, {})).jwksJson) as { keys: Record<string, unknown>[] };
    expect(listed).not.toMatch(/"d"|sealed|"k"/);
    for (const k of jwks.keys) {
      expect(k.d).toBeUndefined();
      expect(k.k).toBeUndefined();
      expect(typeof k.kid).toBe('string');
      expect(['enc', 'sig']).toContain(k.use);
      expect(typeof k.alg).toBe('string');
    }
    expect(jwks.keys.some((k) => k.use === 'enc')).toBe(true);
    expect(jwks.keys.some((k) => k.use === 'sig')).toBe(true);
  });
});

describe('crypto failures are indistinguishable', () => {
  it('wrong key, tampered JWE, unknown kid and destroyed key give the same status, message and code', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    t = await startTestSts({ clock, overrides: FAST_ROTATION });
    const cache = cacheFor(t, clock);
    const good = await cache.encryptFor('payload');
    const { kid } = await decrypt(t, good);

    const foreign = await generateKeyPair('ECDH-ES+A256KW');
    const wrongKey = await new CompactEncrypt(new TextEncoder().encode('x')).setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid }).encrypt(foreign.publicKey);
    const parts = good.split('.');
    const ct = Buffer.from(parts[3]!, 'base64url');
    ct[0] = ct[0]! ^ 1;
    const tampered = [...parts.slice(0, 3), ct.toString('base64url'), parts[4]].join('.');
    const unknownKid = await new CompactEncrypt(new TextEncoder().encode('x'))
      .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM', kid: 'no-such-kid' })
      .encrypt(foreign.publicKey);
    const algConfusion = [Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid })).toString('base64url'), ...parts.slice(1)].join('.');

    const errors: ServiceError[] = [];
    for (const jwe of [wrongKey, tampered, unknownKid, algConfusion, 'not-a-jwe']) errors.push(await callError(decrypt(t, jwe)));
    clock.advance(60 * MIN + 30 * MIN + 1); // the key that encrypted `good` is past destroy-after
    errors.push(await callError(decrypt(t, good)));
    for (const e of errors) {
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.details).toBe('decryption failed');
      expect(e.metadata.get('sts-error-code')).toEqual(['decryption_failed']);
    }
  });

  it('decrypts every standard form a JOSE library makes, and refuses off-curve and compressed ones alike', async () => {
    t = await startTestSts();
    const jwks = JSON.parse((await call(t.pop.getJwks, t.pop, {})).jwksJson) as { keys: (Record<string, string> & { use: string })[] };
    const jwk = jwks.keys.find((k) => k.use === 'enc')!;
    const { importJWK } = await import('jose');
    const pub = await importJWK(jwk, 'ECDH-ES+A256KW');
    const make = (header: Record<string, unknown> & { enc: string }, text: string) =>
      new CompactEncrypt(new TextEncoder().encode(text)).setProtectedHeader({ alg: 'ECDH-ES+A256KW', kid: jwk.kid, ...header }).encrypt(pub);
    const forms: (Record<string, unknown> & { enc: string })[] = [
      { enc: 'A256GCM' },
      { enc: 'A256GCM', apu: Buffer.from('Alice').toString('base64url'), apv: Buffer.from('Bob').toString('base64url'), cty: 'text/plain' },
      { enc: 'A128GCM' },
      { enc: 'A128CBC-HS256' },
      { enc: 'A256CBC-HS512' },
    ];
    for (const f of forms) {
      const text = `form ${JSON.stringify(f)}`;
      const out = await decrypt(t, await make(f, text));
      expect(Buffer.from(out.plaintext).toString()).toBe(text);
      expect(out.contentType).toBe((f.cty as string | undefined) ?? '');
    }
    // An ephemeral key that is not on P-256 (invalid-curve attack) and a "zip" header: the same refusal.
    const good = await make({ enc: 'A256GCM' }, 'x');
    const [h, ...rest] = good.split('.');
    const header = JSON.parse(Buffer.from(h!, 'base64url').toString()) as { epk: { x: string; y: string } };
    const y = Buffer.from(header.epk.y, 'base64url');
    y[31] = y[31]! ^ 1;
    const offCurve = [Buffer.from(JSON.stringify({ ...header, epk: { ...header.epk, y: y.toString('base64url') } })).toString('base64url'), ...rest].join('.');
    const zipped = [Buffer.from(JSON.stringify({ ...header, zip: 'DEF' })).toString('base64url'), ...rest].join('.');
    for (const bad of [offCurve, zipped]) {
      const e = await callError(decrypt(t, bad));
      expect([e.code, e.details]).toEqual([status.INVALID_ARGUMENT, 'decryption failed']);
    }
  });

  it('a tampered or re-labelled signature fails verification with one message', async () => {
    t = await startTestSts();
    const { jws } = await call(t.pop.sign, t.pop, { payload: Buffer.from('{"sub":"a"}'), type: 'JWT', contentType: '' }, adminToken(t));
    const [h, p, s] = jws.split('.');
    const forgedPayload = `${h}.${Buffer.from('{"sub":"b"}').toString('base64url')}.${s}`;
    const hs256 = `${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(h!, 'base64url').toString()), alg: 'HS256' })).toString('base64url')}.${p}.${s}`;
    for (const bad of [forgedPayload, hs256, `${h}.${p}.`, 'a.b', `${h}.${p}.${s}x`]) {
      const e = await callError(call(t.pop.verify, t.pop, { jws: bad }, adminToken(t)));
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.details).toBe('signature verification failed');
    }
    const ok = await call(t.pop.verify, t.pop, { jws }, adminToken(t));
    expect(Buffer.from(ok.payload).toString()).toBe('{"sub":"a"}');
    expect(JSON.parse(ok.protectedHeaderJson)).toMatchObject({ alg: 'EdDSA', typ: 'JWT' });
  });
});

describe('data keys', () => {
  it('generates, unwraps with the same context only, and rewraps to the new primary after rotation', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    t = await startTestSts({ clock, overrides: FAST_ROTATION });
    const token = adminToken(t);
    const context = Buffer.from('tenant=42');
    const dk = await call(t.pop.generateDataKey, t.pop, { keyLengthBits: 0, context }, token);
    expect(dk.plaintext).toHaveLength(32);
    const dk128 = await call(t.pop.generateDataKey, t.pop, { keyLengthBits: 128, context: Buffer.alloc(0) }, token);
    expect(dk128.plaintext).toHaveLength(16);
    expect(Buffer.from((await call(t.pop.unwrap, t.pop, { wrappedKey: dk.wrappedKey, context }, token)).plaintext)).toEqual(Buffer.from(dk.plaintext));
    const wrongContext = await callError(call(t.pop.unwrap, t.pop, { wrappedKey: dk.wrappedKey, context: Buffer.from('tenant=43') }, token));
    expect([wrongContext.code, wrongContext.details]).toEqual([status.INVALID_ARGUMENT, 'unwrap failed']);
    for (const reserved of [Buffer.from('sts:user-secret:abc'), Buffer.from('sts:')]) {
      const e = await callError(call(t.pop.unwrap, t.pop, { wrappedKey: dk.wrappedKey, context: reserved }, token));
      expect([e.code, e.details]).toEqual([status.INVALID_ARGUMENT, 'context: contexts starting with "sts:" are reserved for STS']);
    }
    const badLength = await callError(call(t.pop.generateDataKey, t.pop, { keyLengthBits: 192, context }, token));
    expect(badLength.code).toBe(status.INVALID_ARGUMENT);
    expect(badLength.details).toContain('key_length_bits');

    await call(t.pop.rotateKeys, t.pop, { kinds: [KeyKind.KEY_KIND_SECRET] }, token);
    clock.advance(10 * MIN);
    const re = await call(t.pop.rewrap, t.pop, { wrappedKey: dk.wrappedKey, context }, token);
    expect(re.kid).not.toBe(dk.kid);
    expect(Buffer.from((await call(t.pop.unwrap, t.pop, { wrappedKey: re.wrappedKey, context }, token)).plaintext)).toEqual(Buffer.from(dk.plaintext));
  });
});

describe('authentication and audit', () => {
  it('refuses key operations without a valid credential and audits every use of a key without its data', async () => {
    t = await startTestSts();
    const plaintextMarker = 'very-secret-plaintext-' + randomBytes(8).toString('hex');
    const jwe = await cacheFor(t).encryptFor(plaintextMarker);
    for (const bearer of [undefined, 'sts_admin_wrong', 'some-app-token']) {
      const e = await callError(call(t.pop.decrypt, t.pop, { jwe }, bearer));
      expect(e.code).toBe(status.UNAUTHENTICATED);
      const s = await callError(call(t.pop.sign, t.pop, { payload: Buffer.from('x'), type: '', contentType: '' }, bearer));
      expect(s.code).toBe(status.UNAUTHENTICATED);
      const g = await callError(call(t.pop.generateDataKey, t.pop, { keyLengthBits: 0, context: Buffer.alloc(0) }, bearer));
      expect(g.code).toBe(status.UNAUTHENTICATED);
      const r = await callError(call(t.pop.rotateKeys, t.pop, { kinds: [] }, bearer));
      expect(r.code).toBe(status.UNAUTHENTICATED);
    }
    const { kid } = await decrypt(t, jwe);
    const audit = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'audit' && l.event === 'pop.decrypt');
    expect(audit).toContainEqual(expect.objectContaining({ event: 'pop.decrypt', caller: 'admin', kid, outcome: 'ok' }));
    const rpcLine = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'rpc' && l.method === '/sts.v1.PopService/Decrypt' && l.code === 'OK');
    expect(rpcLine).toMatchObject({ caller: 'admin' });
    expect(typeof rpcLine!.durationMs).toBe('number');
    const all = t.logs.join('\n');
    expect(all).not.toContain(plaintextMarker);
    expect(all).not.toContain(jwe);
    expect(all).not.toContain(adminToken(t));
  });
});

describe('application callers', () => {
  it('trusted applications may use keys; others get PERMISSION_DENIED; only administrators rotate', async () => {
    t = await startTestSts();
    const trusted = await createApp(t, 'vault-app', { trusted: true });
    const plain = await createApp(t, 'plain-app');
    const jwe = await cacheFor(t).encryptFor('for trusted eyes');
    expect(Buffer.from((await call(t.pop.decrypt, t.pop, { jwe }, trusted.token)).plaintext).toString()).toBe('for trusted eyes');
    const signed = await call(t.pop.sign, t.pop, { payload: Buffer.from('x'), type: '', contentType: '' }, trusted.token);
    // Verify and ListKeys need only an authenticated application.
    expect((await call(t.pop.verify, t.pop, { jws: signed.jws }, plain.token)).kid).toBe(signed.kid);
    expect((await call(t.pop.listKeys, t.pop, { kind: KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed: false }, plain.token)).keys.length).toBeGreaterThan(0);
    const denied = [
      await callError(call(t.pop.decrypt, t.pop, { jwe }, plain.token)),
      await callError(call(t.pop.sign, t.pop, { payload: Buffer.from('x'), type: '', contentType: '' }, plain.token)),
      await callError(call(t.pop.generateDataKey, t.pop, { keyLengthBits: 0, context: Buffer.alloc(0) }, plain.token)),
      await callError(call(t.pop.rotateKeys, t.pop, { kinds: [] }, trusted.token)),
    ];
    for (const e of denied) expect(e.code).toBe(status.PERMISSION_DENIED);
    const audit = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.event === 'pop.decrypt' && l.outcome === 'ok');
    expect(audit).toMatchObject({ caller: 'vault-app', callerKind: 'application' });
  });
});

describe('persistence and the master key', () => {
  it('a restart keeps the key ring: old ciphertexts decrypt and old data keys unwrap', async () => {
    const dataDir = tempDir();
    t = await startTestSts({ dataDir });
    const kidsBefore = (await listKeys(t)).map((k) => k.kid);
    const jwe = await cacheFor(t).encryptFor('survives restarts');
    const dk = await call(t.pop.generateDataKey, t.pop, { keyLengthBits: 0, context: Buffer.alloc(0) }, adminToken(t));
    await t.stop();
    t = await startTestSts({ dataDir });
    expect((await listKeys(t)).map((k) => k.kid)).toEqual(kidsBefore);
    expect(Buffer.from((await decrypt(t, jwe)).plaintext).toString()).toBe('survives restarts');
    const un = await call(t.pop.unwrap, t.pop, { wrappedKey: dk.wrappedKey, context: Buffer.alloc(0) }, adminToken(t));
    expect(Buffer.from(un.plaintext)).toEqual(Buffer.from(dk.plaintext));
  });

  it('a wrong master key refuses to start with a clear error and changes nothing', async () => {
    const dataDir = tempDir();
    t = await startTestSts({ dataDir, env: { STS_MASTER_KEY: masterKey('right') } });
    await t.stop();
    t = undefined;
    const before = await snapshotStore(dataDir);
    const err = await startTestSts({ dataDir, env: { STS_MASTER_KEY: masterKey('wrong') } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StartupError);
    expect((err as StartupError).code).toBe('master_key_invalid');
    expect((err as StartupError).message).toContain('"right"');
    const sameIdOtherBytes = await startTestSts({ dataDir, env: { STS_MASTER_KEY: masterKey('right') } }).catch((e: unknown) => e);
    expect((sameIdOtherBytes as StartupError).code).toBe('master_key_invalid');
    expect((sameIdOtherBytes as StartupError).message).toContain('does not match');
    expect(await snapshotStore(dataDir)).toEqual(before);
  });

  it('rotating the master key re-seals every key; afterwards the old master key can be removed', async () => {
    const dataDir = tempDir();
    const a = masterKey('mk-a');
    const b = masterKey('mk-b');
    t = await startTestSts({ dataDir, env: { STS_MASTER_KEY: a } });
    const jwe = await cacheFor(t).encryptFor('across master keys');
    await t.stop();
    // New key first (it encrypts), old key second (it still decrypts): the start-up maintenance re-seals.
    t = await startTestSts({ dataDir, env: { STS_MASTER_KEY: `${b},${a}` } });
    const records = await t.sts.store.durable.list('key');
    for (const r of records) {
      const sealed = (JSON.parse(r.value) as { sealed?: string }).sealed;
      if (sealed) expect(MasterKeyRing.envelopeKeyId(Buffer.from(sealed, 'base64url'))).toBe('mk-b');
    }
    expect(t.logs.some((l) => l.includes('"key.resealed"'))).toBe(true);
    await t.stop();
    t = await startTestSts({ dataDir, env: { STS_MASTER_KEY: b } });
    expect(Buffer.from((await decrypt(t, jwe)).plaintext).toString()).toBe('across master keys');
  });
});

async function snapshotStore(dataDir: string): Promise<string> {
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(join(dataDir, 'sts.db'), { readonly: true });
  try {
    return JSON.stringify([db.prepare('SELECT * FROM durable ORDER BY ns, id').all(), db.prepare('SELECT name, hex(value) FROM meta ORDER BY name').all()]);
  } finally {
    db.close();
  }
}

describe('algorithms', () => {
  const cases: { enc: string; sig: string }[] = [
    { enc: 'RSA-OAEP-256', sig: 'ES256' },
    { enc: 'ECDH-ES+A256KW', sig: 'RS256' },
    { enc: 'ECDH-ES+A256KW', sig: 'PS256' },
  ];
  for (const c of cases) {
    it(`encrypts with ${c.enc} and signs with ${c.sig}, verifiable offline`, async () => {
      t = await startTestSts({ overrides: { 'pop.encryption.alg': c.enc, 'pop.signing.alg': c.sig } });
      const cache = cacheFor(t);
      const jwe = await cache.encryptFor('hello');
      expect(JSON.parse(Buffer.from(jwe.split('.')[0]!, 'base64url').toString()).alg).toBe(c.enc);
      expect(Buffer.from((await decrypt(t, jwe)).plaintext).toString()).toBe('hello');
      const { jws } = await call(t.pop.sign, t.pop, { payload: Buffer.from('payload'), type: '', contentType: '' }, adminToken(t));
      const v = await cache.verifyToken(jws);
      expect(v.header.alg).toBe(c.sig);
      expect(new TextDecoder().decode(v.payload)).toBe('payload');
      // A JWE built by any standard library to the published key works, not only ours.
      const jwk = (JSON.parse((await call(t.pop.getJwks, t.pop, {})).jwksJson) as { keys: { use: string; kid: string }[] }).keys.find((k) => k.use === 'enc')!;
      expect(jwk.kid).toBeTruthy();
    });
  }
  it('the published kid is the RFC 7638 thumbprint of the key', async () => {
    t = await startTestSts();
    const { calculateJwkThumbprint } = await import('jose');
    const keys = (JSON.parse((await call(t.pop.getJwks, t.pop, {})).jwksJson) as { keys: Record<string, string>[] }).keys;
    for (const k of keys) expect(await calculateJwkThumbprint(k, 'sha256')).toBe(k.kid);
    void exportJWK;
  });
});

describe('load during rotation', () => {
  it('concurrent encrypt/decrypt while keys rotate repeatedly: zero failures', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    t = await startTestSts({ clock, overrides: FAST_ROTATION });
    const token = adminToken(t);
    const cache = cacheFor(t, clock);
    const s = t;
    let failures = 0;
    let done = 0;
    const worker = async (w: number) => {
      for (let i = 0; i < 40; i++) {
        const msg = `w${w}-${i}`;
        try {
          const jwe = await cache.encryptFor(msg);
          const out = await call(s.pop.decrypt, s.pop, { jwe }, token);
          if (Buffer.from(out.plaintext).toString() !== msg) failures++;
          done++;
        } catch {
          failures++;
        }
      }
    };
    const rotator = async () => {
      for (let r = 0; r < 6; r++) {
        await call(s.pop.rotateKeys, s.pop, { kinds: [KeyKind.KEY_KIND_ENCRYPTION] }, token);
        clock.advance(10 * MIN); // staged -> primary
        await s.sts.ring.maintain();
        await new Promise((r2) => setTimeout(r2, 20));
      }
    };
    await Promise.all([...Array.from({ length: 8 }, (_, w) => worker(w)), rotator()]);
    expect(failures).toBe(0);
    expect(done).toBe(8 * 40);
    expect((await listKeys(t, KeyKind.KEY_KIND_ENCRYPTION)).length).toBeGreaterThanOrEqual(6);
  });
});
