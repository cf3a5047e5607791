/**
 * Sealing of everything STS keeps in the Hazelcast grid.
 *
 * Open-source Hazelcast authenticates nobody: whoever reaches a member can read and write every map. STS
 * therefore treats the grid as untrusted storage. Every value it puts there is sealed with AES-256-GCM under
 * the cluster data key, and a value that does not open is never used: it may have been lost or withheld, but
 * STS never believes something it did not write.
 *
 * - The cluster data key is derived from each master key with HKDF (RFC 5869) under its own purpose label and
 *   the cluster's name, so it is shared by every node of the cluster that shares the master keys, changes when
 *   the master key rotates (the older master keys still configured keep opening what was sealed under them
 *   until it is re-sealed), and differs between clusters: a staging cluster made from a production backup
 *   shares the master keys, yet what it seals does not open in production.
 * - The associated data binds a sealed value to its map, its record kind and its entry key (RFC 5116 section
 *   3: AAD is authenticated, not encrypted), so an authentic value moved to another key or map does not open.
 * - Group attributes that Hazelcast must index (the uid of a session, so that all of a user's sessions can be
 *   found without a scan) are stored as HMAC tags under an index key, never in clear.
 *
 * Layout of a sealed value: "sts1." + base64url(MasterKeyRing envelope), the envelope naming the master key id.
 */
import { createHmac } from 'node:crypto';
import { BoundedMap } from '../bounded-map.js';
import { EnvelopeError, MasterKeyRing } from '../crypto/master-key.js';

/** Why a value read from the grid was not used. */
export type RejectReason =
  // Not a sealed value at all: written by something other than this STS version (an attacker, or an STS
  // from before sealing: see cluster.unsealedRecords).
  | 'unsealed'
  // Sealed under a master key this node does not have (a node configured with a newer ring wrote it, or a
  // forgery naming an unknown key): neither used nor overwritten.
  | 'unknown_key'
  // Does not authenticate: altered, forged, or moved from another entry or map.
  | 'forged'
  // Opens, but is not a valid record of its kind (the validation of the admin RPC that creates it).
  | 'invalid'
  // Opens and is valid, but is older than the version this node holds (a replayed authentic value).
  | 'rollback';

export class SealRejected extends Error {
  constructor(
    readonly reason: RejectReason,
    message: string,
  ) {
    super(message);
    this.name = 'SealRejected';
  }
}

/** Where a sealed value lives: the associated data of its seal. */
export interface RecordAddress {
  /** The Hazelcast map, e.g. "sts-key". */
  map: string;
  /** The record kind, e.g. "key", "user_token", "app". */
  kind: string;
  /** The entry key in the map. */
  key: string;
}

const PREFIX = 'sts1.';
/**
 * Opened values kept in memory, by address and sealed value: a hot session or application token is read from
 * the grid on every call, and opening it (an AES-GCM context per call in node:crypto) would cost more than
 * the read itself. Exact, not time-based: a sealed value authenticates at an address either always or never.
 */
const OPENED_CACHE_ENTRIES = 10_000;
const DATA_KEY_INFO = 'sts cluster data key v1';
const INDEX_KEY_INFO = 'sts cluster index key v1';
/** The HKDF info of a purpose for one cluster: the name is the last part, so the encoding is unambiguous. */
const info = (purpose: string, clusterName: string) => `${purpose}\0${clusterName}`;

function aad(a: RecordAddress): string {
  // NUL cannot occur in map names or kinds, and keys are the last part: the encoding is unambiguous.
  return `sts-cluster-v1\0${a.map}\0${a.kind}\0${a.key}`;
}

export class ClusterSeal {
  private readonly data: MasterKeyRing;
  /** Index keys, primary first: one per master key, so tags made before a master key rotation still match. */
  private readonly index: readonly Buffer[];
  private readonly opened = new BoundedMap<string>(OPENED_CACHE_ENTRIES);

  constructor(master: MasterKeyRing, clusterName: string) {
    this.data = master.derive(info(DATA_KEY_INFO, clusterName));
    this.index = master.derive(info(INDEX_KEY_INFO, clusterName)).keys.map((k) => k.key);
  }

  seal(address: RecordAddress, plaintext: string): string {
    return PREFIX + this.data.seal(Buffer.from(plaintext, 'utf8'), aad(address)).toString('base64url');
  }

  /** The plaintext of a sealed value read from the grid. Throws SealRejected. */
  open(address: RecordAddress, raw: unknown): string {
    if (typeof raw !== 'string' || !raw.startsWith(PREFIX)) throw new SealRejected('unsealed', 'not a sealed value');
    const cacheKey = `${aad(address)}\0${raw}`;
    const hit = this.opened.get(cacheKey);
    if (hit !== undefined) return hit;
    const envelope = Buffer.from(raw.slice(PREFIX.length), 'base64url');
    let id: string;
    try {
      id = MasterKeyRing.envelopeKeyId(envelope);
    } catch {
      throw new SealRejected('forged', 'not a well-formed envelope');
    }
    if (!this.data.has(id)) throw new SealRejected('unknown_key', `sealed under master key "${id.slice(0, 64)}", which this node does not have`);
    let plaintext: string;
    try {
      plaintext = this.data.open(envelope, aad(address)).toString('utf8');
    } catch (err) {
      if (err instanceof EnvelopeError) throw new SealRejected('forged', 'does not authenticate');
      throw err;
    }
    this.opened.set(cacheKey, plaintext);
    return plaintext;
  }

  /** True when a sealed value is not sealed under the primary master key (re-seal it after a rotation). */
  isStale(raw: string): boolean {
    try {
      return MasterKeyRing.envelopeKeyId(Buffer.from(raw.slice(PREFIX.length), 'base64url')) !== this.data.primary.id;
    } catch {
      return true;
    }
  }

  /** Whether a grid value has the sealed form (cheap; says nothing about authenticity). */
  static looksSealed(raw: unknown): boolean {
    return typeof raw === 'string' && raw.startsWith(PREFIX);
  }

  /** The tag under which new entries of `group` are indexed. */
  groupTag(group: string): string {
    return tag(this.index[0]!, group);
  }

  /** Every tag an entry of `group` may carry (one per configured master key). */
  groupTags(group: string): string[] {
    return this.index.map((k) => tag(k, group));
  }
}

function tag(key: Buffer, group: string): string {
  return createHmac('sha256', key).update(group, 'utf8').digest('base64url');
}
