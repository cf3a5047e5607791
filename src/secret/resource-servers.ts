/**
 * Registered resource servers (SQLite): who they are (a directory application or an mTLS certificate
 * fingerprint), which token audiences they may present, and the public key STS encrypts their secrets to.
 */
import { type JsonWebKeyInput, createPublicKey } from 'node:crypto';
import { type JWK, CompactEncrypt, calculateJwkThumbprint, importJWK } from 'jose';
import { BoundedMap } from '../bounded-map.js';
import { EcdhRecipient } from '../crypto/jose-primitives.js';
import { StsError, invalidArgument } from '../errors.js';
import type { ResourceServer } from '../gen/sts/v1/secret.js';
import type { Db } from '../store/sqlite/database.js';
import { text, textList } from './identity-providers.js';
import { type Jwks, type KeyEncryptionAlg, type RemoteJwksOptions, RemoteJwks, checkJwksUri, chooseEncryptionKey, parsePublicJwks } from './jwks.js';
import { checkTime, sameAfterFrontDoor } from '../validation.js';

export interface ResourceServerRecord {
  id: string;
  applicationId: string | null;
  /** Lowercase hex, no separators. */
  certificateSha256: string | null;
  audiences: string[];
  jwksUri: string | null;
  jwksJson: string | null;
  updatedAt: number;
}

/** The key a resource server's secrets are encrypted to. */
export interface RecipientKey {
  kid: string;
  alg: KeyEncryptionAlg;
  /** A compact JWE of `plaintext` to this key, "enc" A256GCM, with "alg" and "kid" in its protected header. */
  encrypt(plaintext: Uint8Array): string | Promise<string>;
}

/**
 * How secrets are encrypted to a key: ECDH-ES and ECDH-ES+A256KW on P-256, P-384, P-521, X25519 and X448 on
 * node:crypto (synchronous, several times faster; jose 6 cannot do X448 at all); every other form (RSA-OAEP-256) with jose, whose import
 * also refuses, before any secret is made, a key jose cannot encrypt to.
 */
async function encrypter(jwk: JWK, alg: KeyEncryptionAlg, kid: string): Promise<RecipientKey['encrypt']> {
  const { alg: _alg, use: _use, key_ops: _ops, ...material } = jwk;
  if (alg === 'ECDH-ES+A256KW' || alg === 'ECDH-ES') {
    const ecdh = EcdhRecipient.from(createPublicKey({ key: material as JsonWebKeyInput['key'], format: 'jwk' }));
    if (ecdh) return (plaintext) => ecdh.encrypt(alg, kid, plaintext);
  }
  const key = await importJWK(material, alg);
  return (plaintext) => new CompactEncrypt(plaintext).setProtectedHeader({ alg, enc: 'A256GCM', kid }).encrypt(key);
}

/** Validates a ResourceServer message into a record; INVALID_ARGUMENT naming the field otherwise. */
export function resourceServerRecord(r: ResourceServer | undefined, field: string, now: number): ResourceServerRecord {
  if (!r) throw invalidArgument(field, 'is required');
  const id = text(`${field}.resource_server_id`, r.resourceServerId, 1, 128);
  const cred = r.credential;
  if (!cred) throw invalidArgument(`${field}.credential`, 'give application_id or certificate_sha256');
  let applicationId: string | null = null;
  let certificateSha256: string | null = null;
  if (cred.$case === 'applicationId') {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(cred.value)) throw invalidArgument(`${field}.application_id`, '1 to 128 characters of A-Z a-z 0-9 . _ -');
    applicationId = cred.value;
  } else {
    // Accept the "AB:CD:..." form openssl prints as well as plain hex; store lowercase hex.
    const hex = cred.value.replace(/:/g, '').toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(hex)) throw invalidArgument(`${field}.certificate_sha256`, 'must be the SHA-256 fingerprint of the certificate: 64 hex digits (colons allowed)');
    certificateSha256 = hex;
  }
  const audiences = textList(`${field}.audiences`, r.audiences, 512);
  const src = r.encryptionKeySource;
  if (!src) throw invalidArgument(`${field}.encryption_key_source`, 'give jwks_uri or jwks_json');
  let jwksJson: string | null = null;
  if (src.$case === 'jwksJson') {
    const jwks = parsePublicJwks(`${field}.jwks_json`, src.value);
    if (!chooseEncryptionKey(jwks)) {
      throw invalidArgument(`${field}.jwks_json`, 'has no key usable for encryption (use "enc" or no use; alg ECDH-ES+A256KW, ECDH-ES or RSA-OAEP-256, or none with an EC, OKP or RSA key)');
    }
    jwksJson = JSON.stringify(jwks);
  }
  return {
    id,
    applicationId,
    certificateSha256,
    audiences,
    jwksUri: src.$case === 'jwksUri' ? checkJwksUri(`${field}.jwks_uri`, src.value) : null,
    jwksJson,
    updatedAt: now,
  };
}

/** A stored record from elsewhere (the cluster): valid by the very rules of PutResourceServer. */
export function validateResourceServerRecord(r: ResourceServerRecord): void {
  checkTime(r?.updatedAt, 'resource_server.update_time');
  sameAfterFrontDoor('resource_server', r, () => resourceServerRecord(resourceServerPb(r), 'resource_server', r.updatedAt));
}

export function resourceServerPb(r: ResourceServerRecord): ResourceServer {
  return {
    resourceServerId: r.id,
    credential: r.applicationId !== null ? { $case: 'applicationId', value: r.applicationId } : { $case: 'certificateSha256', value: r.certificateSha256 ?? '' },
    audiences: r.audiences,
    encryptionKeySource: r.jwksUri !== null ? { $case: 'jwksUri', value: r.jwksUri } : { $case: 'jwksJson', value: r.jwksJson ?? '' },
  };
}

interface Row {
  id: string;
  application_id: string | null;
  certificate_sha256: string | null;
  audiences: string;
  jwks_uri: string | null;
  jwks_json: string | null;
  updated_at: number;
}

const fromRow = (r: Row): ResourceServerRecord => ({
  id: r.id,
  applicationId: r.application_id,
  certificateSha256: r.certificate_sha256,
  audiences: JSON.parse(r.audiences) as string[],
  jwksUri: r.jwks_uri,
  jwksJson: r.jwks_json,
  updatedAt: r.updated_at,
});

export class ResourceServerRegistry {
  private readonly stmts;
  private readonly remote = new Map<string, RemoteJwks>();
  /** Imported recipient keys, by the JWK JSON they came from and by the inline JWKS text that chose them. */
  private readonly imported = new BoundedMap<RecipientKey>(1000);

  constructor(
    db: Db,
    private readonly o: RemoteJwksOptions,
  ) {
    this.stmts = {
      get: db.prepare('SELECT * FROM resource_servers WHERE id = ?'),
      byApp: db.prepare('SELECT * FROM resource_servers WHERE application_id = ?'),
      byCert: db.prepare('SELECT * FROM resource_servers WHERE certificate_sha256 = ?'),
      list: db.prepare('SELECT * FROM resource_servers ORDER BY id'),
      put: db.prepare(
        'INSERT INTO resource_servers (id, application_id, certificate_sha256, audiences, jwks_uri, jwks_json, updated_at) ' +
          'VALUES (@id, @applicationId, @certificateSha256, @audiences, @jwksUri, @jwksJson, @updatedAt) ' +
          'ON CONFLICT (id) DO UPDATE SET application_id = excluded.application_id, certificate_sha256 = excluded.certificate_sha256, ' +
          'audiences = excluded.audiences, jwks_uri = excluded.jwks_uri, jwks_json = excluded.jwks_json, updated_at = excluded.updated_at',
      ),
      delete: db.prepare('DELETE FROM resource_servers WHERE id = ?'),
    };
  }

  get(id: string): ResourceServerRecord | undefined {
    const row = this.stmts.get.get(id) as Row | undefined;
    return row && fromRow(row);
  }

  byApplication(applicationId: string): ResourceServerRecord | undefined {
    const row = this.stmts.byApp.get(applicationId) as Row | undefined;
    return row && fromRow(row);
  }

  byCertificate(sha256Hex: string): ResourceServerRecord | undefined {
    const row = this.stmts.byCert.get(sha256Hex.toLowerCase()) as Row | undefined;
    return row && fromRow(row);
  }

  list(): ResourceServerRecord[] {
    return (this.stmts.list.all() as Row[]).map(fromRow);
  }

  /** Creates or replaces; ALREADY_EXISTS when the credential already identifies another resource server. */
  put(r: ResourceServerRecord, field: string): void {
    const other = r.applicationId !== null ? this.byApplication(r.applicationId) : this.byCertificate(r.certificateSha256!);
    if (other && other.id !== r.id) {
      const what = r.applicationId !== null ? `${field}.application_id: application ${r.applicationId}` : `${field}.certificate_sha256: this certificate`;
      throw new StsError('already_exists', `${what} already identifies resource server ${other.id}`);
    }
    this.apply(r.id, r);
    this.onChange?.(r.id, r);
  }

  /** False when there was no such resource server. */
  delete(id: string): boolean {
    const deleted = this.apply(id, null);
    this.onChange?.(id, null);
    return deleted;
  }

  /** Cluster mode: told of every local change, to publish it to the other nodes. */
  onChange: ((id: string, record: ResourceServerRecord | null) => void) | undefined;

  /** Writes (or, with null, deletes) a resource server locally: a local change, or one made on another node. */
  apply(id: string, r: ResourceServerRecord | null): boolean {
    const before = this.get(id);
    const changed = r ? this.stmts.put.run({ ...r, audiences: JSON.stringify(r.audiences) }).changes === 1 : this.stmts.delete.run(id).changes === 1;
    if (before?.jwksUri) this.remote.delete(before.jwksUri);
    return changed;
  }

  /**
   * The resource server's current encryption key: the first usable key of its JWKS (fetched and cached when
   * given by URL). UNAVAILABLE when the JWKS cannot be fetched, FAILED_PRECONDITION when it has no usable key.
   */
  async recipientKey(rs: ResourceServerRecord): Promise<RecipientKey> {
    // An inline JWKS determines the recipient by its text alone: a hit skips parsing and choosing the key.
    const inlineKey = rs.jwksJson !== null ? `jwks:${rs.jwksJson}` : undefined;
    const known = inlineKey === undefined ? undefined : this.imported.get(inlineKey);
    if (known) return known;
    let jwks: Jwks;
    if (rs.jwksJson !== null) {
      jwks = JSON.parse(rs.jwksJson) as Jwks;
    } else {
      let remote = this.remote.get(rs.jwksUri!);
      if (!remote) {
        remote = new RemoteJwks(rs.jwksUri!, 'resource server', this.o);
        this.remote.set(rs.jwksUri!, remote);
      }
      jwks = await remote.current();
    }
    const chosen = chooseEncryptionKey(jwks);
    if (!chosen) throw new StsError('failed_precondition', `resource server ${rs.id} publishes no key usable for encryption`);
    const cacheKey = `${chosen.alg}:${JSON.stringify(chosen.jwk)}`;
    let recipient = this.imported.get(cacheKey);
    if (!recipient) {
      const kid = chosen.jwk.kid ?? (await calculateJwkThumbprint(chosen.jwk as JWK, 'sha256'));
      recipient = { kid, alg: chosen.alg, encrypt: await encrypter(chosen.jwk, chosen.alg, kid) };
      this.imported.set(cacheKey, recipient);
    }
    if (inlineKey !== undefined) this.imported.set(inlineKey, recipient);
    return recipient;
  }
}
