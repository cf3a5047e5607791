/**
 * The secret key destruction guard in cluster mode, against a real Hazelcast member: the durable store's
 * `listVersions` (what the guard counts) reads the cluster's map as well as the node's own copies, and keeps
 * both versions of a conflicting record; two in-process STS nodes on one manual clock, where the node holding
 * the rotation lease keeps a secret key alive because of a user secret that only the cluster map holds (its
 * own copy is gone), until a re-wrap moves the secret.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { silentLogger } from '../src/log.js';
import type { KeyRecord } from '../src/pop/key-record.js';
import { UserSecrets, userSecretId } from '../src/secret/user-secrets.js';
import { connectStore, oneMemberPerFile, waitFor } from './helpers/cluster.js';
import { FAST_ROTATION, type TestSts, startTestSts } from './helpers/server.js';

const MIN = 60_000;
const member = oneMemberPerFile();


/** A user secret record whose wrapped value names the key `kid` (not a real one: these records stay unread). */
const secretRecordOf = (createdAt: number, kid: string, subject = 's') =>
  JSON.stringify({ v: 1, issuer: 'https://idp.example', subject, createdAt, wrapped: `${Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM', kid })).toString('base64url')}..iv.ct.tag` });
const kidOf = (value: string) => JSON.parse(Buffer.from((JSON.parse(value) as { wrapped: string }).wrapped.split('.')[0]!, 'base64url').toString()).kid as string;

describe('DurableStore.listVersions', () => {
  it('Hazelcast: the cluster map merged with the local copies; a stale copy is healed, a conflict gives both versions', async () => {
    const clock = new ManualClock();
    const { store, local, close } = await connectStore(member.cluster(), clock);
    member.cleanup(close);
    const ns = 'user_secret';
    const p = randomBytes(4).toString('hex'); // the member is shared with the other test: subjects of our own
    // Record ids are what the cluster checks them against: the hash of issuer and subject.
    const names = ['same', 'remote-only', 'local-only', 'stale', 'conflict'];
    const [same, remoteOnly, localOnly, stale, conflicting] = names.map((n) => userSecretId('https://idp.example', `${p}-${n}`)) as [string, string, string, string, string];
    const subjectOf = new Map(names.map((n) => [userSecretId('https://idp.example', `${p}-${n}`), `${p}-${n}`]));
    const secretRecord = (createdAt: number, kid: string, id: string) => secretRecordOf(createdAt, kid, subjectOf.get(id));
    const events = new Set<string>();
    store.onDurableChange((_ns, id) => events.add(id));
    for (const [id, value] of [
      [same, secretRecord(1, 'w-same', same)],
      [remoteOnly, secretRecord(1, 'w-remote', remoteOnly)],
      [stale, secretRecord(1, 'w-new', stale)],
      [conflicting, secretRecord(1, 'w-first', conflicting)],
    ] as const) {
      await store.durable.insertIfAbsent(ns, id, value);
    }
    // Let the entry events land in the local copy first, then make the copy diverge from the cluster.
    await waitFor('entry events', () => [same, remoteOnly, stale, conflicting].every((id) => events.has(id)));
    local.db.prepare('DELETE FROM durable WHERE ns = ? AND id = ?').run(ns, remoteOnly); // this node lost its copy
    local.durable.put(ns, localOnly, secretRecord(1, 'w-local', localOnly)); // the cluster lost it (a full restart)
    local.durable.put(ns, stale, secretRecord(1, 'w-old', stale)); // same secret, older wrapping: the cluster's wins
    local.durable.put(ns, conflicting, secretRecord(2, 'w-second', conflicting)); // another secret for the same user

    const mine = (entries: { id: string; value: string }[]) => entries.filter((e) => subjectOf.has(e.id)).map((e) => [e.id, kidOf(e.value)]);
    expect(mine(await store.durable.listVersions(ns)).sort()).toEqual(
      [
        [same, 'w-same'],
        [remoteOnly, 'w-remote'],
        [localOnly, 'w-local'],
        [stale, 'w-new'],
        [conflicting, 'w-first'],
        [conflicting, 'w-second'],
      ].sort(),
    );
    // `list` leaves the conflicting record out (reading it fails closed); `listVersions` must not.
    expect(mine(await store.durable.list(ns)).map(([id]) => id)).not.toContain(conflicting);
    // The stale local copy now holds the cluster's version; the conflicting one is left for an operator.
    expect(await local.durable.get(ns, stale)).toBe(secretRecord(1, 'w-new', stale));
    expect(await local.durable.get(ns, conflicting)).toBe(secretRecord(2, 'w-second', conflicting));
    // SQLite alone (embedded mode): one row per record, so exactly `list`.
    expect(await local.durable.listVersions(ns)).toEqual(await local.durable.list(ns));
  });
});

describe('two STS nodes', () => {
  it('the lease holder keeps a secret key whose user secret only the cluster map holds, until it is re-wrapped', async () => {
    const clock = new ManualClock(Date.UTC(2026, 5, 1));
    const env = { STS_MASTER_KEY: `mk-test:${randomBytes(32).toString('base64url')}` };
    const overrides = {
      ...FAST_ROTATION,
      'pop.rotationCheckIntervalMs': 15 * MIN, // only the explicit maintenance runs below
      'cluster.enabled': true,
      'cluster.name': member.cluster().name,
      'cluster.members': member.cluster().memberList,
    };
    const start = async (): Promise<TestSts> => {
      const t = await startTestSts({ clock, env, overrides });
      member.cleanup(() => t.stop(true));
      return t;
    };
    const a = await start();
    const b = await start();
    const secretsOn = (t: TestSts) => new UserSecrets({ store: t.sts.store.durable, ring: t.sts.ring, clock, logger: silentLogger, secretBytes: 32 });
    const onB = secretsOn(b);
    const subject = `alice-${randomBytes(4).toString('hex')}`;
    const made = await onB.getOrCreate('https://idp.example', subject);
    const secret = Buffer.from(made.secret);
    const kid1 = a.sts.ring.primary('secret').record.kid;

    // A new management key (rotated on A, learnt by B), primary 10 minutes later.
    await a.sts.ring.rotate(['secret']);
    clock.advance(10 * MIN);
    await waitFor('B has the new key', () => b.sts.ring.primary('secret').record.kid !== kid1);

    // A's own copy of the secret is gone (it missed it; only the cluster map has it), and A cannot re-wrap.
    const aDb = new Database(join(a.dataDir, 'sts.db'));
    await waitFor('A holds a copy', () => aDb.prepare("SELECT count(*) FROM durable WHERE ns = 'user_secret' AND id = ?").pluck().get(made.id) === 1);
    aDb.prepare("DELETE FROM durable WHERE ns = 'user_secret' AND id = ?").run(made.id);
    aDb.close();
    const durable = a.sts.store.durable;
    const replace = durable.replaceIfSame.bind(durable);
    durable.replaceIfSame = async (ns, id, expected, next) => {
      if (ns === 'user_secret') throw new Error('store unavailable');
      return replace(ns, id, expected, next);
    };

    // Past kid1's destroy-after, A runs the maintenance under the lease: kid1 is kept, on A and on B.
    const key1 = JSON.parse((await a.sts.store.durable.get('key', kid1))!) as KeyRecord;
    clock.set(key1.destroyAfter);
    await a.sts.ring.maintain();
    expect(a.sts.ring.blockedDestructions()).toEqual([{ kid: kid1, kind: 'secret', records: 1 }]);
    expect((JSON.parse((await b.sts.store.durable.get('key', kid1))!) as KeyRecord).sealed).toBeDefined();
    expect(b.sts.ring.view().find((v) => v.record.kid === kid1)!.state).toBe('decrypt_only');
    expect((await onB.getOrCreate('https://idp.example', subject)).secret).toEqual(secret);
    expect((await secretsOn(a).getOrCreate('https://idp.example', subject)).secret).toEqual(secret);

    // A can re-wrap again: its next maintenance re-wraps the secret, then destroys kid1 on every node.
    durable.replaceIfSame = replace;
    await a.sts.ring.maintain();
    expect(a.sts.ring.blockedDestructions()).toEqual([]);
    await waitFor('B sees kid1 destroyed', () => b.sts.ring.view().find((v) => v.record.kid === kid1)!.state === 'destroyed');
    expect((JSON.parse((await b.sts.store.durable.get('key', kid1))!) as KeyRecord).sealed).toBeUndefined();
    expect((await onB.getOrCreate('https://idp.example', subject)).secret).toEqual(secret);
  });
});
