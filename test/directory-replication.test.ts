/**
 * Directory replication in cluster mode against a real Hazelcast member: a change whose publish fails (the
 * cluster went away between the local write and the publish) is published again at the next resync, instead
 * of being undone on this node by the cluster's older record and never reaching the other nodes. Records with
 * the hash formats of issue 15 (Argon2id passwords, keyed application secrets) replicate; a hash with cost
 * parameters out of bounds is refused by the node that receives it.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { VersionedMap } from '../src/cluster/versioned-map.js';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { silentLogger } from '../src/log.js';
import { ReplicatedDirectory } from '../src/session/replicated-directory.js';
import { MasterKeyRing, newMasterKey } from '../src/crypto/master-key.js';
import { SecretHashing } from '../src/session/password.js';
import { newSecret } from '../src/session/sessions.js';
import { openDatabase } from '../src/store/sqlite/database.js';
import { connectStore, oneMemberPerFile, waitFor } from './helpers/cluster.js';
import { appRecord } from './helpers/directory.js';
import { tempDir } from './helpers/server.js';

const member = oneMemberPerFile();


/** A node's directory: its own SQLite, the cluster's real map (through `map`). */
async function node(map: VersionedMap): Promise<ReplicatedDirectory> {
  const dir = tempDir('sts-dir-repl-');
  const db = openDatabase(dir);
  member.cleanup(async () => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return ReplicatedDirectory.open(db, map, silentLogger);
}

describe('ReplicatedDirectory', () => {
  it('publishes again, at the next resync, a change the cluster did not take; the resync does not undo it', async () => {
    const clock = new ManualClock();
    const { store, close } = await connectStore(member.cluster(), clock);
    member.cleanup(close);
    const real = await store.replicationMap('sts-directory');
    // Node A's view of the real map, whose calls fail while `failing` (the cluster unreachable for a moment).
    let failing = false;
    const flaky = new Proxy(real.imap, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        const f = (value as (...a: unknown[]) => unknown).bind(target);
        // Every read and write of the entries fails while `failing` (the listener stays registered).
        return prop === 'addEntryListener' ? f : (...a: unknown[]) => (failing ? Promise.reject(new Error('cluster unreachable')) : f(...a));
      },
    });
    const a = await node(real.with({ imap: flaky }));
    const b = await node(real);
    const id = `app-${randomBytes(4).toString('hex')}`;
    a.createApplication(appRecord(id));
    await waitFor('B learns the application', () => b.getApplication(id) !== undefined);
    await waitFor('the cluster confirms A\'s publish', () => a.pendingKeys.length === 0);

    failing = true;
    a.updateApplication(appRecord(id, { disabled: true }));
    const user = a.createUser({ username: `u-${id}`, firstName: '', lastName: '', email: '', cellphone: '', personRef: '', passwordHash: null, disabled: false, externalIssuer: null, externalSubject: null }, [], 0);
    await waitFor('both publishes failed', () => a.pendingKeys.length === 2);
    expect(b.getApplication(id)!.disabled).toBe(false);
    expect(b.getUser(user.uid)).toBeUndefined();
    // Still unreachable: the resync fails and changes nothing here.
    await expect(a.resync()).rejects.toThrow('cluster unreachable');
    expect(a.getApplication(id)!.disabled).toBe(true);

    // Back: the resync publishes first, then pulls; nothing is undone here, and B learns both changes.
    failing = false;
    await a.resync();
    expect(a.pendingKeys).toEqual([]);
    expect(a.getApplication(id)!.disabled).toBe(true);
    await waitFor('B learns the disabled application and the new user', () => b.getApplication(id)?.disabled === true && b.getUser(user.uid) !== undefined);
  });

  it('takes records with Argon2id and keyed hashes from another node, and refuses a hash whose cost is out of bounds', async () => {
    const clock = new ManualClock();
    const { store, close } = await connectStore(member.cluster(), clock);
    member.cleanup(close);
    const real = await store.replicationMap('sts-directory');
    const a = await node(real);
    const b = await node(real);
    const hashes = new SecretHashing(new MasterKeyRing([newMasterKey()]), { memoryKiB: 19456, timeCost: 2, parallelism: 1 });
    const id = `app-${randomBytes(4).toString('hex')}`;
    const secretHash = await hashes.hashApplicationSecret(id, newSecret(), true);
    a.createApplication(appRecord(id, { secretHash }));
    const passwordHash = await hashes.hashPassword('a password');
    const user = a.createUser({ username: `u-${id}`, firstName: '', lastName: '', email: '', cellphone: '', personRef: '', passwordHash, disabled: false, externalIssuer: null, externalSubject: null }, [], 0);
    await waitFor('B takes both records', () => b.getApplication(id)?.secretHash === secretHash && b.getUser(user.uid)?.passwordHash === passwordHash);

    // A newer, authentic record (sealed with the cluster key, as a node of another build would write it) with a
    // hash that would make every logon of this user allocate 1 GiB: both nodes keep their copy and put it back.
    const key = `user:${user.uid}`;
    const current = real.open(key, await real.imap.get(key));
    if (typeof current === 'string') throw new Error(`the record does not open: ${current}`);
    const entry = JSON.parse(current.value) as { user: Record<string, unknown> };
    const oversized = passwordHash.replace('m=19456', `m=${1024 * 1024}`);
    await real.imap.set(key, real.seal(key, { rev: current.rev + 1, value: JSON.stringify({ ...entry, user: { ...entry.user, passwordHash: oversized, firstName: 'changed' } }) }));
    await waitFor('the grid holds the nodes\' record again', async () => {
      const v = real.open(`user:${user.uid}`, await real.imap.get(`user:${user.uid}`));
      return typeof v !== 'string' && (JSON.parse(v.value) as { user: { passwordHash: string } }).user.passwordHash === passwordHash;
    });
    for (const n of [a, b]) expect(n.getUser(user.uid)).toMatchObject({ passwordHash, firstName: '' });
  });

  it('a rehash after a logon never undoes a secret an administrator set at once on another node, whichever publishes first', async () => {
    const clock = new ManualClock();
    const { store, close } = await connectStore(member.cluster(), clock);
    member.cleanup(close);
    const real = await store.replicationMap('sts-directory');
    // Each node's view of the map fails while its flag is set, so both changes are made from the same revision
    // and reach the grid in the order the test chooses (each node's resync).
    const failing = { a: false, b: false };
    const flakyFor = (who: 'a' | 'b') =>
      new Proxy(real.imap, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver) as unknown;
          if (typeof value !== 'function') return value;
          const f = (value as (...x: unknown[]) => unknown).bind(target);
          return prop === 'addEntryListener' ? f : (...x: unknown[]) => (failing[who] ? Promise.reject(new Error('cluster unreachable')) : f(...x));
        },
      });
    const a = await node(real.with({ imap: flakyFor('a') }));
    const b = await node(real.with({ imap: flakyFor('b') }));
    const hashes = new SecretHashing(new MasterKeyRing([newMasterKey()]), { memoryKiB: 19456, timeCost: 2, parallelism: 1 });
    const id = `app-${randomBytes(4).toString('hex')}`;
    a.createApplication(appRecord(id, { secretHash: await hashes.hashApplicationSecret(id, newSecret(), true) }));
    await waitFor('B takes the application', () => b.getApplication(id) !== undefined);
    // Five rounds, alternating which node's change reaches the grid first: with a plain tie-break by digest, the
    // rehash would win about half the rounds.
    for (let round = 0; round < 5; round++) {
      await waitFor('both nodes agree and have published', () => a.pendingKeys.length === 0 && b.pendingKeys.length === 0 && a.getApplication(id)!.secretHash === b.getApplication(id)!.secretHash);
      const checked = a.getApplication(id)!;
      failing.a = failing.b = true;
      a.updateApplication({ ...checked, secretHash: await hashes.hashApplicationSecret(id, newSecret(), true) }, true); // what upgradeHash does
      const reset = await hashes.hashApplicationSecret(id, newSecret(), true);
      b.updateApplication({ ...checked, secretHash: reset }); // an administrator's new secret
      await waitFor('both publishes failed', () => a.pendingKeys.length === 1 && b.pendingKeys.length === 1);
      const [first, second] = round % 2 === 0 ? (['a', 'b'] as const) : (['b', 'a'] as const);
      failing[first] = false;
      await (first === 'a' ? a : b).resync();
      failing[second] = false;
      await (second === 'a' ? a : b).resync();
      await waitFor(`round ${round}: both nodes hold the administrator's secret`, () => a.getApplication(id)!.secretHash === reset && b.getApplication(id)!.secretHash === reset);
    }
  });
});
