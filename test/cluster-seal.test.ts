/**
 * The cluster seal on its own: what it binds (map, kind, key), what it refuses and why, group tags, and master
 * key rotation (the first key seals, every configured key opens).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ClusterSeal, type RejectReason, SealRejected } from '../src/cluster/cluster-seal.js';
import { MasterKeyRing } from '../src/crypto/master-key.js';

const key = (id: string) => ({ id, key: randomBytes(32) });
const at = { map: 'sts-key', kind: 'key', key: 'kid-1' };

function reason(fn: () => unknown): RejectReason | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof SealRejected) return err.reason;
    throw err;
  }
  return undefined;
}

describe('ClusterSeal', () => {
  const k1 = key('mk-1');
  const seal = new ClusterSeal(new MasterKeyRing([k1]), 'sts');

  it('opens what it sealed, only at the same map, kind and key', () => {
    const raw = seal.seal(at, 'record');
    expect(seal.open(at, raw)).toBe('record');
    expect(reason(() => seal.open({ ...at, key: 'kid-2' }, raw))).toBe('forged');
    expect(reason(() => seal.open({ ...at, map: 'sts-user_secret' }, raw))).toBe('forged');
    expect(reason(() => seal.open({ ...at, kind: 'user_secret' }, raw))).toBe('forged');
  });

  it('refuses, by reason: unsealed values, altered ones, unknown master keys', () => {
    const raw = seal.seal(at, 'record');
    expect(reason(() => seal.open(at, 'record'))).toBe('unsealed');
    expect(reason(() => seal.open(at, { s: raw }))).toBe('unsealed');
    expect(reason(() => seal.open(at, null))).toBe('unsealed');
    const i = raw.length - 10;
    expect(reason(() => seal.open(at, raw.slice(0, i) + (raw[i] === 'A' ? 'B' : 'A') + raw.slice(i + 1)))).toBe('forged');
    expect(reason(() => seal.open(at, 'sts1.'))).toBe('forged');
    const other = new ClusterSeal(new MasterKeyRing([key('mk-other')]), 'sts');
    expect(reason(() => seal.open(at, other.seal(at, 'record')))).toBe('unknown_key');
    // The same id with another key is not "unknown": it does not authenticate.
    expect(reason(() => seal.open(at, new ClusterSeal(new MasterKeyRing([key('mk-1')]), 'sts').seal(at, 'record')))).toBe('forged');
  });

  it('is bound to its cluster: a value sealed for another cluster with the same master keys does not open', () => {
    const staging = new ClusterSeal(new MasterKeyRing([k1]), 'sts-staging');
    expect(reason(() => seal.open(at, staging.seal(at, 'record')))).toBe('forged');
    expect(staging.groupTag('uid-1')).not.toBe(seal.groupTag('uid-1'));
  });

  it('is not the master key: a value sealed with the master key itself does not open', () => {
    const direct = `sts1.${new MasterKeyRing([k1]).seal(Buffer.from('record'), `sts-cluster-v1\0${at.map}\0${at.kind}\0${at.key}`).toString('base64url')}`;
    expect(reason(() => seal.open(at, direct))).toBe('forged');
  });

  it('after a master key rotation the new key seals, the old one still opens, and stale values are told apart', () => {
    const k2 = key('mk-2');
    const rotated = new ClusterSeal(new MasterKeyRing([k2, k1]), 'sts');
    const old = seal.seal(at, 'old');
    expect(rotated.open(at, old)).toBe('old');
    expect(rotated.isStale(old)).toBe(true);
    const fresh = rotated.seal(at, 'new');
    expect(rotated.isStale(fresh)).toBe(false);
    expect(reason(() => seal.open(at, fresh))).toBe('unknown_key');
  });

  it('group tags: keyed (no uid in clear), stable, one per master key, the primary\'s first', () => {
    const tag = seal.groupTag('uid-1');
    expect(tag).not.toContain('uid-1');
    expect(seal.groupTag('uid-1')).toBe(tag);
    expect(seal.groupTag('uid-2')).not.toBe(tag);
    expect(new ClusterSeal(new MasterKeyRing([key('mk-1')]), 'sts').groupTag('uid-1')).not.toBe(tag);
    const rotated = new ClusterSeal(new MasterKeyRing([key('mk-2'), k1]), 'sts');
    expect(rotated.groupTags('uid-1')).toHaveLength(2);
    expect(rotated.groupTags('uid-1')[1]).toBe(tag);
    expect(rotated.groupTags('uid-1')[0]).toBe(rotated.groupTag('uid-1'));
  });
});
