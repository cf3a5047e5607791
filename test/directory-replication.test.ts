/**
 * Directory replication in cluster mode against a real Hazelcast member: a change whose publish fails (the
 * cluster went away between the local write and the publish) is published again at the next resync, instead
 * of being undone on this node by the cluster's older record and never reaching the other nodes.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { VersionedMap } from '../src/cluster/versioned-map.js';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { silentLogger } from '../src/log.js';
import { ReplicatedDirectory } from '../src/session/replicated-directory.js';
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
});
