/**
 * Composition root: builds a running STS from a validated configuration. Used by `sts serve` and by the
 * integration tests (which pass port 0, a temporary data directory and, where they need it, a manual clock).
 */
import { type Clock, systemClock } from './clock.js';
import type { Config } from './config/defaults.js';
import { MasterKeyRing, EnvelopeError, loadMasterKeyRing } from './crypto/master-key.js';
import { StartupError } from './errors.js';
import { type Logger, createLogger } from './log.js';
import { PopServiceService } from './gen/sts/v1/pop.js';
import { SecretServiceService } from './gen/sts/v1/secret.js';
import { SessionServiceService } from './gen/sts/v1/session.js';
import type { CallContext } from './rpc-contract.js';
import { bindService, guardedDefinition } from './server/rpc.js';
import { checkCaller } from './auth/policy.js';
import { type ServiceBinding, StsGrpcServer } from './server/server.js';
import { type Db, getMeta, lockDataDir, openDatabase, setMeta } from './store/sqlite/database.js';
import { SqliteStore } from './store/sqlite/sqlite-store.js';
import type { Store } from './store/adapter.js';
import { type ClusterProtection, HazelcastStore } from './store/hazelcast/hazelcast-store.js';
import { ReplicatedDirectory } from './session/replicated-directory.js';
import { replicateTables, replicated } from './secret/registry-replication.js';
import { ClusterSeal } from './cluster/cluster-seal.js';
import { ClusterRejections } from './cluster/rejections.js';
import { RevisionStore } from './cluster/revisions.js';
import { coalesced } from './coalesce.js';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { Server as HttpServer } from 'node:http';
import { Metrics } from './server/metrics.js';
import { type HttpListener, startHttp } from './http/http-server.js';
import { Authenticator, loadAdminKeys } from './auth/caller.js';
import { KeyRing, KeyRingOpenError } from './pop/key-ring.js';
import { type KeyKind, type RotationPolicy, validateKeyRecord } from './pop/key-record.js';
import { JwksPublisher } from './pop/jwks-publisher.js';
import { popService } from './pop/pop-service.js';
import { IdentityProviderRegistry, validateIdentityProviderRecord } from './secret/identity-providers.js';
import { ResourceServerRegistry, validateResourceServerRecord } from './secret/resource-servers.js';
import { secretService } from './secret/secret-service.js';
import { type RewrapResult, UserSecrets, validateUserSecretRecord } from './secret/user-secrets.js';
import { type IdentityDirectory, SqliteDirectory } from './session/directory.js';
import { CachedDirectory } from './session/directory-cache.js';
import { sessionService } from './session/session-service.js';
import { SessionStore } from './session/sessions.js';
import { LogonThrottle } from './session/throttle.js';
import { HashScheduler } from './session/hash-scheduler.js';
import { SecretHashing } from './session/password.js';

export interface StartOptions {
  config: Config;
  clock?: Clock;
  logger?: Logger;
  /** Environment for secrets read directly (STS_MASTER_KEY); defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

export interface RunningSts {
  /** The bound port (useful with server.address port 0). */
  readonly port: number;
  readonly grpc: StsGrpcServer;
  /** The shared state: SQLite (embedded) or Hazelcast (cluster mode). */
  readonly store: Store;
  readonly ring: KeyRing;
  /** Port of the Prometheus listener, when metrics.address is set. */
  readonly metricsPort: number | undefined;
  /** The HTTP listener (JWKS, discovery, health, test page), when http.address is set. */
  readonly http: HttpListener | undefined;
  /** Walks every user secret and re-wraps those under an older management key (maintenance does it too). */
  rewrapUserSecrets(): Promise<RewrapResult>;
  /** Graceful stop: drains calls, then closes the store. Idempotent. */
  close(): Promise<void>;
}

const MASTER_KEY_CHECK = 'master_key_check';
const MASTER_KEY_CHECK_AAD = 'sts:meta:master_key_check';
const MASTER_KEY_CHECK_TEXT = Buffer.from('sts master key check v1');
const SWEEP_INTERVAL_MS = 60_000;

/**
 * Proves at start-up that the configured master keys open this data directory, before anything is read
 * or written with them. A wrong key refuses to start and changes nothing.
 */
export function verifyMasterKey(db: Db, ring: MasterKeyRing): void {
  const check = getMeta(db, MASTER_KEY_CHECK);
  if (!check) {
    setMeta(db, MASTER_KEY_CHECK, ring.seal(MASTER_KEY_CHECK_TEXT, MASTER_KEY_CHECK_AAD));
    return;
  }
  try {
    if (!ring.open(check, MASTER_KEY_CHECK_AAD).equals(MASTER_KEY_CHECK_TEXT)) throw new EnvelopeError('check text differs');
  } catch (err) {
    const id = err instanceof EnvelopeError ? safeKeyId(check) : undefined;
    const hint = id && !ring.has(id)
      ? `this data directory is protected by master key "${id}", which is not among the configured keys (${ring.ids.join(', ')})`
      : `the configured master key "${id ?? '?'}" does not match this data directory`;
    throw new StartupError('master_key_invalid', `master key rejected: ${hint}. Nothing was changed.`, { cause: err });
  }
}

/** After every key is re-sealed under a new primary master key, the check follows, so the old key can go. */
function resealMasterKeyCheck(db: Db, ring: MasterKeyRing): void {
  const check = getMeta(db, MASTER_KEY_CHECK);
  if (check && MasterKeyRing.envelopeKeyId(check) !== ring.primary.id) {
    setMeta(db, MASTER_KEY_CHECK, ring.seal(ring.open(check, MASTER_KEY_CHECK_AAD), MASTER_KEY_CHECK_AAD));
  }
}

function safeKeyId(envelope: Buffer): string | undefined {
  try {
    return MasterKeyRing.envelopeKeyId(envelope);
  } catch {
    return undefined;
  }
}

export async function startSts(options: StartOptions): Promise<RunningSts> {
  const { config } = options;
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? createLogger(config['log.level']);
  const env = options.env ?? process.env;

  const lock = lockDataDir(config.dataDir);
  let db: Db;
  try {
    db = openDatabase(config.dataDir);
  } catch (err) {
    lock.release();
    throw err;
  }
  const sqlite = new SqliteStore(db, clock, { cacheEntries: config['session.storeCacheEntries'] });
  let store: Store = sqlite;
  let hz: HazelcastStore | undefined;
  let grpc: StsGrpcServer | undefined;
  let sweeper: NodeJS.Timeout | undefined;
  let maintenance: NodeJS.Timeout | undefined;
  let keyRing: KeyRing | undefined;
  let metricsServer: HttpServer | undefined;
  let metricsPort: number | undefined;
  let http: HttpListener | undefined;
  try {
    const master = loadMasterKeyRing({
      file: config['masterKey.file'],
      env: env.STS_MASTER_KEY,
      dataDir: config.dataDir,
      profile: config.profile,
      onGenerated: (path) =>
        logger.warn('generated a new master key for the dev profile; back it up: without it nothing stored here can be read', { path }),
      onInsecureMode: (path, mode) => logger.warn('the master key file can be read by group or others; the prod profile refuses to start with it: chmod 600 it', { path, mode }),
    });
    verifyMasterKey(db, master);
    const auth = new Authenticator(
      loadAdminKeys(config['auth.adminKeyFile'], config.dataDir, config.profile, (path) =>
        logger.warn('generated an admin key for the dev profile; it authenticates as administrator', { path }),
      ),
    );

    // Cluster mode: the grid is untrusted storage; what STS puts there is sealed, and what it reads is refused
    // unless it opens, is valid and is not older than this node's copy (src/cluster/).
    const rejections = new ClusterRejections(logger);
    if (config['cluster.enabled']) {
      hz = await HazelcastStore.connect(
        {
          clusterName: config['cluster.name'],
          members: config['cluster.members'].split(',').map((m) => m.trim()),
          connectTimeoutMs: config['cluster.connectTimeoutMs'],
          invocationTimeoutMs: config['cluster.invocationTimeoutMs'],
        },
        sqlite.durable,
        clock,
        logger,
        // Health follows the cluster connection: NOT_SERVING while cluster state cannot be reached.
        (connected) => grpc?.setServing(connected),
        clusterProtection(master, db, rejections, config),
      ).catch((err: unknown) => {
        if (err instanceof StartupError) throw err;
        throw new StartupError('listen_failed', `cluster.members ${config['cluster.members']}: ${(err as Error).message}`, { cause: err });
      });
      store = hz;
    }
    const cluster = hz;
    const nodeId = randomBytes(8).toString('base64url');
    keyRing = new KeyRing({
      store: store.durable,
      master,
      clock,
      logger,
      algorithms: keyAlgorithms(config),
      policies: rotationPolicies(config),
      // One node at a time creates and erases keys; the others learn the result through listeners.
      ...(cluster ? { lease: (name: string) => cluster.tryLease(name, nodeId) } : {}),
    });
    const ring = keyRing;
    if (cluster) {
      // Keys created or erased by another node take effect here at once, not at the next timer tick. An
      // event during a reload triggers one more reload, so no change is missed.
      const reload = coalesced(
        () => ring.refresh(),
        (err) => logger.error('reloading the key ring after a cluster change failed', { err }),
      );
      cluster.onDurableChange((ns) => {
        if (ns === 'key') reload();
      });
    }
    // Users' secrets follow the management key (the PRIMARY secret key) after every rotation, and no secret
    // key is destroyed while a user secret is still wrapped under it: the guard is in place before the first
    // maintenance below, which may already be due to destroy keys.
    const userSecrets = new UserSecrets({ store: store.durable, ring, clock, logger, secretBytes: config['secret.secretBytes'] });
    ring.guardDestruction('secret', userSecrets.destructionGuard());
    try {
      await ring.load();
    } catch (err) {
      if (err instanceof KeyRingOpenError) throw new StartupError('master_key_invalid', `the key ring does not open with the configured master keys: ${err.message}. Nothing was changed.`, { cause: err });
      throw err;
    }
    // In a cluster another node may hold the rotation lease while it creates the first keys: wait for them.
    const readyBy = Date.now() + config['cluster.connectTimeoutMs'];
    for (;;) {
      await ring.maintain();
      if (ring.complete()) break;
      if (Date.now() > readyBy) throw new StartupError('listen_failed', 'the key ring has no primary key of every kind yet, and another node holds the rotation lease');
      await new Promise((r) => setTimeout(r, 200));
    }
    resealMasterKeyCheck(db, master);
    const rewrap = () => userSecrets.rewrap().catch((err: unknown) => logger.error('re-wrapping user secrets failed; will retry', { err }));
    await rewrap();
    maintenance = setInterval(() => {
      ring.maintain().then(rewrap, (err: unknown) => logger.error('key ring maintenance failed; will retry', { err }));
    }, config['pop.rotationCheckIntervalMs']);
    maintenance.unref();

    const stored = cluster ? await ReplicatedDirectory.open(db, await cluster.replicationMap('sts-directory'), logger) : new SqliteDirectory(db);
    // After a reconnect, re-read what changed while away before serving again (entry events are not replayed).
    if (stored instanceof ReplicatedDirectory) cluster?.reconnectHooks.push(() => stored.resync());
    const directory = new CachedDirectory(stored, { maxEntries: config['session.directoryCacheEntries'], generation: () => stored.generation() });
    if (stored instanceof ReplicatedDirectory) stored.onApplied = () => directory.invalidate();
    const identityProviders = new IdentityProviderRegistry(db, { clock, logger, isOwnKey: (k) => ring.isOwnPublicKey(k) });
    const sessions = new SessionStore(store.ephemeral, clock);
    // Application tokens authenticate every call; the directory decides what the application may do.
    auth.setTokenAuthenticator(async (bearer) => {
      const token = bearer.length <= 256 ? await sessions.findAppToken(bearer) : undefined;
      const app = token && directory.getApplication(token.applicationId);
      return app && !app.disabled ? { kind: 'application', id: app.id, trusted: app.trusted, admin: app.admin, application: app } : undefined;
    });
    const hashing = new HashScheduler({ concurrency: hashConcurrency(config, logger), maxQueuedPerKey: config['session.hashQueuePerApplication'] });
    const hashes = new SecretHashing(master, {
      memoryKiB: config['session.passwordHash.memoryKib'],
      timeCost: config['session.passwordHash.timeCost'],
      parallelism: config['session.passwordHash.parallelism'],
    });
    warnUnverifiableSecrets(directory, hashes, logger);
    const session = sessionService({
      directory,
      sessions,
      throttle: new LogonThrottle(store.ephemeral, clock, {
        windowMs: config['session.throttleWindowMs'],
        freeFailures: config['session.throttleFreeFailures'],
        maxFailures: config['session.throttleMaxFailures'],
        maxFailuresPerUser: config['session.throttleMaxFailuresPerUser'],
        maxUsernamesPerApplication: config['session.throttleMaxUsernamesPerApplication'],
        maxFailuresPerApplication: config['session.throttleMaxFailuresPerApplication'],
        maxFailuresPerAddress: config['session.throttleMaxFailuresPerAddress'],
      }),
      hashing,
      hashes,
      auth,
      ring,
      clock,
      logger,
      policy: {
        issuer: config['session.issuer'],
        applicationTokenLifetimeMs: config['session.applicationTokenLifetimeMs'],
        applicationTokenMaxLifetimeMs: config['session.applicationTokenMaxLifetimeMs'],
        credentialJweMaxLifetimeMs: config['session.credentialJweMaxLifetimeMs'],
        userTokenIdleTimeoutMs: config['session.userTokenIdleTimeoutMs'],
        userTokenMaxLifetimeMs: config['session.userTokenMaxLifetimeMs'],
        userTicketLifetimeMs: config['session.userTicketLifetimeMs'],
        anonymousView: config['session.anonymousView'],
      },
      verifyThirdParty: async (jwt, applicationId) => {
        const v = await identityProviders.verify(jwt, {
          field: 'third_party_token',
          label: 'third-party token',
          application: { id: applicationId, withoutJtiMaxLifetimeMs: config['session.thirdPartyTokenWithoutJtiMaxLifetimeMs'] },
        });
        return { issuer: v.issuer, subject: v.subject, securityLevel: v.securityLevel, claims: v.claims, jti: v.jti, acceptableUntil: v.acceptableUntil };
      },
    });
    const resourceServers = new ResourceServerRegistry(db, { clock, logger });
    if (cluster) {
      const resyncRegistries = await replicateTables(
        await cluster.replicationMap('sts-registry'),
        db,
        {
          // What PutIdentityProvider refuses (STS's own issuer or keys as a provider) is refused here too.
          idp: replicated(identityProviders, (r) => r.issuer, (r) => validateIdentityProviderRecord(r, { issuer: config['session.issuer'], isOwnKey: (k) => ring.isOwnPublicKey(k) })),
          rs: replicated(resourceServers, (r) => r.id, validateResourceServerRecord),
        },
        logger,
      );
      cluster.reconnectHooks.push(resyncRegistries);
    }
    const jwks = new JwksPublisher(ring, clock, config['pop.jwksMaxAgeMs']);
    const pop = popService({ ring, auth, clock, logger, jwks, refuseUnboundDataKeys: config['pop.unboundDataKeys'] === 'refuse' });
    const secret = secretService({
      auth,
      ring,
      clock,
      logger,
      identityProviders,
      resourceServers,
      userSecrets,
      applicationExists: (id) => directory.getApplication(id) !== undefined,
      // Exchanged tokens live 5 minutes, never longer than a user token (which the signing keys outlive).
      policy: { issuer: config['session.issuer'], exchangedTokenLifetimeMs: Math.min(5 * 60_000, config['session.userTokenMaxLifetimeMs']) },
    });
    const precheck = (method: string, c: CallContext) => checkCaller(auth, method, c.bearer, c.clientCertSha256 !== undefined);
    const metrics = new Metrics();
    metrics.addGauges(() => {
      const counts = new Map<string, number>();
      for (const v of ring.view()) counts.set(`${v.record.kind}/${v.state}`, (counts.get(`${v.record.kind}/${v.state}`) ?? 0) + 1);
      const next = ring.nextChange();
      return [
        {
          name: 'sts_keys',
          help: 'Keys in the key ring by kind and state.',
          samples: [...counts].map(([k, value]) => ({ labels: { kind: k.split('/')[0]!, state: k.split('/')[1]! }, value })),
        },
        {
          name: 'sts_key_destruction_blocked',
          help: 'Keys past their destroy-after whose material is kept because stored user secrets are still wrapped under them: the records counted by this node\'s last maintenance (-1: could not be counted).',
          samples: ring.blockedDestructions().map((b) => ({ labels: { kind: b.kind, kid: b.kid }, value: b.records ?? -1 })),
        },
        { name: 'sts_key_ring_next_change_seconds', help: 'Seconds until the key ring next changes by itself.', samples: [{ labels: {}, value: Number.isFinite(next) ? Math.max(0, (next - clock.now()) / 1000) : -1 }] },
        {
          name: 'sts_cluster_records_rejected_total',
          type: 'counter',
          help: 'Values read from the cluster and refused (not sealed by STS, not authentic, not valid, or older than this node\'s copy), by map: each distinct value once. Anything above 0 means someone else writes to the grid.',
          samples: [...rejections.totals].map(([map, value]) => ({ labels: { map }, value })),
        },
        {
          name: 'sts_password_hashes',
          help: 'Password and secret hashes running and waiting for their turn (session.hashConcurrency, fair between applications).',
          samples: [
            { labels: { state: 'running' }, value: hashing.load.running },
            { labels: { state: 'waiting' }, value: hashing.load.waiting },
          ],
        },
        { name: 'sts_cluster_connected', help: '1 when the node reaches its Hazelcast cluster (always 1 in embedded mode).', samples: [{ labels: { mode: cluster ? 'cluster' : 'embedded' }, value: !cluster || cluster.isConnected ? 1 : 0 }] },
      ];
    });
    const services: ServiceBinding[] = [
      { name: 'sts.v1.PopService', definition: guardedDefinition(PopServiceService), implementation: bindService(PopServiceService, pop, logger, metrics, precheck) },
      { name: 'sts.v1.SessionService', definition: guardedDefinition(SessionServiceService), implementation: bindService(SessionServiceService, session, logger, metrics, precheck) },
      { name: 'sts.v1.SecretService', definition: guardedDefinition(SecretServiceService), implementation: bindService(SecretServiceService, secret, logger, metrics, precheck) },
    ];
    grpc = new StsGrpcServer(config, services, logger);
    const port = await grpc.start();
    if (config['metrics.address']) {
      const m = await metrics.listen(config['metrics.address']);
      metricsServer = m.server;
      metricsPort = m.port;
    }
    const grpcServer = grpc;
    if (config['http.address']) http = await startHttp({ config, jwks, metrics, logger, serving: () => grpcServer.serving });
    // Hazelcast expires entries itself; SQLite needs a sweep.
    if (!cluster) sweeper = setInterval(() => sqlite.ephemeral.sweep(), SWEEP_INTERVAL_MS).unref();
    logger.info('sts started', {
      address: config['server.address'].replace(/:\d+$/, `:${port}`),
      profile: config.profile,
      dataDir: config.dataDir,
      tls: Boolean(config['tls.certFile']),
      ...(http ? { http: http.baseUrl } : {}),
      ...(metricsPort !== undefined ? { metrics: `http://${config['metrics.address'].replace(/:\d+$/, `:${metricsPort}`)}/metrics` } : {}),
      store: cluster ? `hazelcast ${config['cluster.name']}@${config['cluster.members']}` : 'sqlite',
    });

    let closing: Promise<void> | undefined;
    const server = grpc;
    return {
      port,
      grpc: server,
      store,
      metricsPort,
      http,
      ring,
      rewrapUserSecrets: () => userSecrets.rewrap({ full: true }),
      close: () =>
        (closing ??= (async () => {
          clearInterval(sweeper);
          clearInterval(maintenance);
          metricsServer?.close();
          // /healthz answers 503 while calls drain, as gRPC health does; then the HTTP listener closes.
          await server.shutdown();
          await http?.close();
          await hz?.close();
          await sqlite.close();
          lock.release();
          logger.info('sts stopped');
        })()),
    };
  } catch (err) {
    clearInterval(sweeper);
    clearInterval(maintenance);
    metricsServer?.close();
    await http?.close();
    await grpc?.shutdown();
    await hz?.close().catch(() => undefined);
    await sqlite.close();
    lock.release();
    throw err;
  }
}

/**
 * Hashes running at once: session.hashConcurrency, or by default one per core. Each runs on a libuv thread pool
 * thread (Argon2id through N-API async work, scrypt through node:crypto), and the pool has UV_THREADPOOL_SIZE
 * threads (4 by default), read from the environment when Node starts, before any of STS's code runs: the
 * default never goes past it (more would only queue inside libuv, out of the scheduler's fair order), and a
 * configured value that does is said at start.
 */
function hashConcurrency(config: Config, logger: Logger): number {
  const pool = Math.min(1024, Math.max(1, Number(process.env.UV_THREADPOOL_SIZE) || 4));
  const configured = config['session.hashConcurrency'];
  if (configured === 0) return Math.min(availableParallelism(), pool);
  if (configured > pool) {
    logger.warn('session.hashConcurrency is above the libuv thread pool size: the hashes past it wait inside libuv, outside the fair order; start STS with UV_THREADPOOL_SIZE set higher', { hashConcurrency: configured, threadPool: pool });
  }
  return configured;
}

/**
 * Application secrets under the keyed hash are checked with a key derived from the master key their hash
 * names. One whose master key was removed from the ring before the application logged on again (which re-keys
 * it) can no longer log on: said at start, with what to do, so that it is not found at the next logon.
 */
function warnUnverifiableSecrets(directory: IdentityDirectory, hashes: SecretHashing, logger: Logger): void {
  const ids = directory.listApplications().filter((a) => hashes.status(a.secretHash, 'application') === 'unverifiable').map((a) => a.id);
  if (ids.length > 0) {
    logger.warn('applications whose secret hash cannot be checked here (keyed by a master key that is not configured, or not a hash STS makes): they cannot log on until the key is back in the ring or their secret is reset (UpdateApplication with a new secret)', {
      applications: ids.slice(0, 20),
      count: ids.length,
    });
  }
}

/**
 * How a node protects itself from the grid: the cluster data key derived from the master keys, the record of
 * refusals, the revisions this node holds, and the same validation of each replicated record as its admin RPC.
 */
export function clusterProtection(master: MasterKeyRing, db: Db, rejections: ClusterRejections, config: Pick<Config, 'cluster.name' | 'cluster.unsealedRecords' | 'cluster.leaseMs'>): ClusterProtection {
  return {
    seal: new ClusterSeal(master, config['cluster.name']),
    rejections,
    revisions: new RevisionStore(db),
    validate: { key: (id, value) => validateKeyRecord(id, value, master), user_secret: validateUserSecretRecord },
    unsealedRecords: config['cluster.unsealedRecords'],
    leaseMs: config['cluster.leaseMs'],
  };
}

export function keyAlgorithms(config: Config): Record<KeyKind, import('./pop/key-record.js').KeyAlg> {
  return { encryption: config['pop.encryption.alg'], signing: config['pop.signing.alg'], secret: 'A256GCM' };
}

export function rotationPolicies(config: Config): Record<KeyKind, RotationPolicy> {
  const policy = (k: KeyKind): RotationPolicy => ({
    validityMs: config[`pop.${k}.validityMs`],
    stagingLeadMs: config[`pop.${k}.stagingLeadMs`],
    legacyWindowMs: config[`pop.${k}.legacyWindowMs`],
    minimumKeys: config[`pop.${k}.minimumKeys`],
  });
  return { encryption: policy('encryption'), signing: policy('signing'), secret: policy('secret') };
}
