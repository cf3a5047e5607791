/**
 * Password and application secret hashing (src/session/password.ts): the high-entropy rule, what a stored
 * hash may be (the bounds replicated and imported records are held to), checks against every stored format,
 * and when a check hands back the current form (rehash at the next logon). Real Argon2id, scrypt and HMAC.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MasterKeyRing, newMasterKey } from '../src/crypto/master-key.js';
import { validateApplicationRecord, validateUserRecord } from '../src/session/directory-validation.js';
import { LEGACY_APP_SECRET_SCRYPT, LEGACY_PASSWORD_SCRYPT, SecretHashing, carries128Bits, describeHash, isMadeBySts, isStoredHash, scryptHash } from '../src/session/password.js';
import { meetsOwaspFloor } from '../src/session/hash-policy.js';
import { newSecret } from '../src/session/sessions.js';
import { appRecord } from './helpers/directory.js';

const OWASP = { memoryKiB: 19456, timeCost: 2, parallelism: 1 };
const k1 = newMasterKey();
const k2 = newMasterKey();
const b64 = (n: number) => randomBytes(n).toString('base64').replace(/=+$/, '');
const argon2String = (m: number, t: number, p: number) => `$argon2id$v=19$m=${m},t=${t},p=${p}$${b64(16)}$${b64(32)}`;

describe('the high-entropy rule (carries128Bits)', () => {
  it('takes nearly every random base64url string of 32 characters or more (STS\'s own secrets need no estimate)', () => {
    // A few in a thousand lack a digit or a case, hence counts rather than every one; STS's own secrets are
    // keyed whatever the estimate says of them (see the re-keying tests).
    for (const make of [() => newSecret(), () => randomBytes(24).toString('base64url')]) {
      let passed = 0;
      for (let i = 0; i < 200; i++) if (carries128Bits(make())) passed++;
      expect(passed).toBeGreaterThanOrEqual(190);
    }
  });

  it('refuses short, repeated, sequential, lower-case phrase and non-base64url secrets', () => {
    for (const s of [
      randomBytes(16).toString('hex'), // 32 hex characters: at most 128 bits, estimated below
      'a'.repeat(64),
      'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
      'Xk3_9aQzP1mN7bVcXk3_9aQzP1mN7bVc', // 16 characters twice
      'a-brand-new-secret-of-enough-length',
      'correct horse battery staple, correct horse battery staple',
      `${newSecret()}!`,
      newSecret().slice(0, 31),
    ]) {
      expect(carries128Bits(s), s).toBe(false);
    }
  });
});

describe('stored hashes', () => {
  it('accepts the formats STS makes, each for its owner: a user\'s password is never under the keyed hash', async () => {
    const h = new SecretHashing(new MasterKeyRing([k1]), OWASP);
    const keyed = await h.hashApplicationSecret('app', newSecret(), true);
    const argon = await h.hashPassword('a password');
    const scrypt = await scryptHash('a password', LEGACY_APP_SECRET_SCRYPT);
    expect(keyed).toMatch(new RegExp(`^hmac-sha256\\$${k1.id}\\$`));
    expect(argon).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    for (const s of [keyed, argon, scrypt]) expect(isStoredHash(s, 'application'), s).toBe(true);
    expect([isStoredHash(argon, 'user'), isStoredHash(scrypt, 'user'), isStoredHash(keyed, 'user')]).toEqual([true, true, false]);
  });

  it('refuses cost parameters out of bounds, and parameters below OWASP\'s floor', () => {
    for (const bad of [
      argon2String(262144, 2, 1), // 256 MiB
      argon2String(4 * 1024 * 1024, 1, 1), // 4 GiB
      argon2String(19456, 11, 1),
      argon2String(19456, 2, 8),
      argon2String(19456, 1, 1), // under the floor
      argon2String(4096, 5, 1),
      `$argon2i$v=19$m=19456,t=2,p=1$${b64(16)}$${b64(32)}`,
      `$argon2id$v=16$m=19456,t=2,p=1$${b64(16)}$${b64(32)}`,
      `scrypt$20$8$1$${'A'.repeat(22)}$${'A'.repeat(43)}`, // 1 GiB
      `scrypt$17$16$1$${'A'.repeat(22)}$${'A'.repeat(43)}`, // 256 MiB
      `scrypt$17$8$2$${'A'.repeat(22)}$${'A'.repeat(43)}`, // twice the work of a password hash
      `hmac-sha256$${k1.id}$${'A'.repeat(22)}$${'A'.repeat(42)}`,
      `hmac-sha256$bad id$${'A'.repeat(22)}$${'A'.repeat(43)}`,
    ]) {
      expect(isStoredHash(bad, 'application'), bad).toBe(false);
      expect(() => validateApplicationRecord(appRecord('a', { secretHash: bad }))).toThrow(/secret_hash/);
    }
    expect(isStoredHash(argon2String(47104, 1, 1), 'user')).toBe(true);
    expect(isStoredHash(argon2String(131072, 10, 4), 'user')).toBe(true);
    expect(isStoredHash(`scrypt$17$8$1$${'A'.repeat(22)}$${'A'.repeat(43)}`, 'user')).toBe(true);
    expect(meetsOwaspFloor({ memoryKiB: 7168, timeCost: 5 })).toBe(true);
    expect(meetsOwaspFloor({ memoryKiB: 19455, timeCost: 2 })).toBe(false);
  });

  it('a replicated or imported user record with a keyed or oversized password hash is refused, naming the field', () => {
    const user = { uid: 'u1', username: 'u', firstName: '', lastName: '', email: '', cellphone: '', personRef: '', disabled: false, createdAt: 0, externalIssuer: null, externalSubject: null };
    expect(validateUserRecord({ ...user, passwordHash: argon2String(19456, 2, 1) }).uid).toBe('u1');
    expect(() => validateUserRecord({ ...user, passwordHash: `hmac-sha256$${k1.id}$${'A'.repeat(22)}$${'A'.repeat(43)}` })).toThrow(/user\.password_hash/);
    expect(() => validateUserRecord({ ...user, passwordHash: argon2String(1 << 20, 2, 1) })).toThrow(/user\.password_hash/);
  });
});

describe('SecretHashing', () => {
  it('checks passwords under Argon2id; an old scrypt or Argon2id hash is replaced by the current form when the password is right', async () => {
    const h = new SecretHashing(new MasterKeyRing([k1]), OWASP);
    const current = await h.hashPassword('right password');
    expect(await h.checkPassword('right password', current)).toEqual({ ok: true });
    expect(await h.checkPassword('wrong password', current)).toEqual({ ok: false });
    expect(await h.checkPassword('right password', undefined)).toEqual({ ok: false });
    expect(await h.checkPassword('right password', null)).toEqual({ ok: false });

    const scrypt = await scryptHash('right password', LEGACY_PASSWORD_SCRYPT);
    expect(h.status(scrypt, 'user')).toBe('old');
    expect(await h.checkPassword('wrong password', scrypt)).toEqual({ ok: false });
    const upgraded = await h.checkPassword('right password', scrypt);
    expect(upgraded.ok).toBe(true);
    expect(describeHash(upgraded.replacement)).toBe('argon2id m=19456 t=2 p=1');
    expect(await h.checkPassword('right password', upgraded.replacement)).toEqual({ ok: true });

    // Other parameters (a configuration change): verified with their own, replaced by the configured ones.
    const other = new SecretHashing(new MasterKeyRing([k1]), { memoryKiB: 7168, timeCost: 5, parallelism: 1 });
    const older = await other.hashPassword('right password');
    expect(h.status(older, 'user')).toBe('old');
    expect(describeHash((await h.checkPassword('right password', older)).replacement)).toBe('argon2id m=19456 t=2 p=1');
  });

  it('keys STS-made and high-entropy application secrets to the primary master key and the application; low-entropy ones get Argon2id', async () => {
    const h = new SecretHashing(new MasterKeyRing([k1]), OWASP);
    const secret = newSecret();
    const stored = await h.hashApplicationSecret('shop', secret, true);
    expect(h.costOf(stored, 'application')).toBeUndefined(); // no turn on the hash pool
    expect(await h.checkApplicationSecret('shop', secret, stored)).toEqual({ ok: true });
    expect(await h.checkApplicationSecret('shop', newSecret(), stored)).toEqual({ ok: false });
    // Copied into another application's record, it matches nothing there.
    expect(await h.checkApplicationSecret('admin-app', secret, stored)).toEqual({ ok: false });
    expect(await h.checkApplicationSecret('shop', secret, undefined)).toEqual({ ok: false });
    // Salted: the same secret twice gives two strings.
    expect(await h.hashApplicationSecret('shop', secret, true)).not.toBe(stored);

    const chosen = 'an operator chose this secret';
    const slow = await h.hashApplicationSecret('crm', chosen, false);
    expect(describeHash(slow)).toBe('argon2id m=19456 t=2 p=1');
    expect(h.costOf(slow, 'application')).toBe('argon2id m=19456 t=2 p=1');
    expect(await h.checkApplicationSecret('crm', chosen, slow)).toEqual({ ok: true });
    // An operator's secret of 48 random hex digits (192 bits) is as good as one STS makes.
    const strongChosen = '6b57d6284c67c0ef33928eb577b6711ca8a892b97c14dbe0';
    const keyed = await h.hashApplicationSecret('crm', strongChosen, false);
    expect(describeHash(keyed)).toBe(`hmac-sha256 key=${k1.id}`);
    expect(await h.checkApplicationSecret('crm', strongChosen, keyed)).toEqual({ ok: true });
  });

  it('an old scrypt application secret is replaced by the keyed hash when it carries 128 bits, by Argon2id when it does not', async () => {
    const h = new SecretHashing(new MasterKeyRing([k1]), OWASP);
    const made = '1Ha8fox2ugnxPwLeHH_dKu4wlpUMTRadEQLvV5CArLA'; // one STS made (and that carries 128 bits)
    const fromMade = await h.checkApplicationSecret('shop', made, await scryptHash(made, LEGACY_APP_SECRET_SCRYPT));
    expect(fromMade.ok).toBe(true);
    expect(describeHash(fromMade.replacement)).toBe(`hmac-sha256 key=${k1.id}`);
    expect(await h.checkApplicationSecret('shop', made, fromMade.replacement)).toEqual({ ok: true });
    const weak = 'weak-operator-secret-24chars';
    const fromWeak = await h.checkApplicationSecret('crm', weak, await scryptHash(weak, LEGACY_APP_SECRET_SCRYPT));
    expect(describeHash(fromWeak.replacement)).toBe('argon2id m=19456 t=2 p=1');
    expect((await h.checkApplicationSecret('crm', 'wrong-operator-secret-24ch', await scryptHash(weak, LEGACY_APP_SECRET_SCRYPT))).ok).toBe(false);
  });

  it('a master key rotation keeps keyed hashes verifiable and re-keys them at the next check; without their key they fail', async () => {
    const before = new SecretHashing(new MasterKeyRing([k1]), OWASP);
    const secret = newSecret();
    const stored = await before.hashApplicationSecret('shop', secret, true);
    const rotated = new SecretHashing(new MasterKeyRing([k2, k1]), OWASP);
    expect(rotated.status(stored, 'application')).toBe('old');
    expect(await rotated.checkApplicationSecret('shop', newSecret(), stored)).toEqual({ ok: false });
    const checked = await rotated.checkApplicationSecret('shop', secret, stored);
    expect(checked.ok).toBe(true);
    expect(describeHash(checked.replacement)).toBe(`hmac-sha256 key=${k2.id}`);
    // Made by STS, and still marked as such after the re-keying (no per-id throttle); a chosen one is not.
    expect([isMadeBySts(stored), isMadeBySts(checked.replacement)]).toEqual([true, true]);
    const chosen = '6b57d6284c67c0ef33928eb577b6711ca8a892b97c14dbe0';
    const chosenHash = await before.hashApplicationSecret('crm', chosen, false);
    expect(isMadeBySts(chosenHash)).toBe(false);
    // The mark is inside the MAC: added to a chosen secret's hash (an edited import file), nothing matches.
    expect(await before.checkApplicationSecret('crm', chosen, chosenHash)).toEqual({ ok: true });
    expect(await before.checkApplicationSecret('crm', chosen, `${chosenHash}$sts`)).toEqual({ ok: false });
    // An STS-made secret the estimate would not take (no digit) stays keyed when re-keyed.
    const noDigit = 'AbcdefGhijKlmnOpqrStuvWxyzaBcDefgHijkLmnoPq';
    expect(carries128Bits(noDigit)).toBe(false);
    const rekeyed = await rotated.checkApplicationSecret('shop', noDigit, await before.hashApplicationSecret('shop', noDigit, true));
    expect([describeHash(rekeyed.replacement), isMadeBySts(rekeyed.replacement)]).toEqual([`hmac-sha256 key=${k2.id}`, true]);
    const after = new SecretHashing(new MasterKeyRing([k2]), OWASP);
    expect(after.status(checked.replacement!, 'application')).toBe('current');
    expect(await after.checkApplicationSecret('shop', secret, checked.replacement)).toEqual({ ok: true });
    expect(after.status(stored, 'application')).toBe('unverifiable');
    expect(await after.checkApplicationSecret('shop', secret, stored)).toEqual({ ok: false });
  });

  it('refuses parameters under OWASP\'s floor', () => {
    expect(() => new SecretHashing(new MasterKeyRing([k1]), { memoryKiB: 4096, timeCost: 2, parallelism: 1 })).toThrow(/floor/);
  });
});
