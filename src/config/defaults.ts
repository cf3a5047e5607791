/**
 * Every configuration option of STS, in one table: type, unit, default and effect.
 *
 * Options are addressed by a dotted name (`server.address`). They come, later source winning, from these
 * defaults, the profile's defaults, a config file (JSON or YAML, nested objects or dotted keys), and
 * environment variables named `STS_` + the dotted name in upper snake case (`server.maxMessageBytes` is
 * `STS_SERVER_MAX_MESSAGE_BYTES`). They are validated once at start-up (`src/config/load.ts`); an error
 * names the option and its source.
 *
 * The README's configuration table is printed from this module (`sts config --markdown`), so the two can
 * not drift apart (a test compares them).
 */

import { DEFAULT_ARGON2, HASH_LIMITS, OWASP_ARGON2ID } from '../session/hash-policy.js';

export type Profile = 'dev' | 'prod';

interface BaseSpec {
  /** What the option does, for the README and `sts config`. */
  doc: string;
  /** Unit of a number, or the format of a string. */
  unit?: string;
  /** Never print the value (keys, passwords). */
  secret?: boolean;
}
interface StringSpec extends BaseSpec {
  type: 'string';
  default: string;
  /** Default under the prod profile, when it differs. */
  prod?: string;
}
interface IntSpec extends BaseSpec {
  type: 'int';
  default: number;
  prod?: number;
  min: number;
  max: number;
}
interface BoolSpec extends BaseSpec {
  type: 'bool';
  default: boolean;
  prod?: boolean;
}
interface EnumSpec<V extends string = string> extends BaseSpec {
  type: 'enum';
  values: readonly V[];
  default: V;
  prod?: V;
}
export type OptionSpec = StringSpec | IntSpec | BoolSpec | EnumSpec;

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

function enumSpec<const V extends string>(spec: Omit<EnumSpec<V>, 'type'>): EnumSpec<V> {
  return { type: 'enum', ...spec };
}

/** Rotation policy options of one key kind (see docs/key-rotation in the README). */
function rotationOptions<const K extends 'encryption' | 'signing' | 'secret'>(kind: K, d: { validity: number; staging: number; legacy: number }) {
  const what = { encryption: 'encryption key pair', signing: 'signing key pair', secret: 'secret (AES-256) key' }[kind];
  return {
    [`pop.${kind}.validityMs`]: {
      type: 'int',
      default: d.validity,
      min: MINUTE,
      max: 3 * 365 * DAY,
      unit: 'ms',
      doc: `How long a ${what} is PRIMARY (encrypts/signs) before its successor takes over.`,
    },
    [`pop.${kind}.stagingLeadMs`]: {
      type: 'int',
      default: d.staging,
      min: 0,
      max: 90 * DAY,
      unit: 'ms',
      doc: `How long a new ${what} is published (STAGED) before it becomes PRIMARY.`,
    },
    [`pop.${kind}.legacyWindowMs`]: {
      type: 'int',
      default: d.legacy,
      min: MINUTE,
      max: 10 * 365 * DAY,
      unit: 'ms',
      doc: `How long a ${what} stays DECRYPT_ONLY after its validity ends; then it is DESTROYED.`,
    },
    [`pop.${kind}.minimumKeys`]: {
      type: 'int',
      default: 2,
      min: 1,
      max: 100,
      unit: 'keys',
      doc: `How many ${what}s are PRIMARY or STAGED at any time. 1: a successor is staged stagingLeadMs before it is needed; 2: the next key is always published.`,
    },
  } as { [P in `pop.${K}.${'validityMs' | 'stagingLeadMs' | 'legacyWindowMs' | 'minimumKeys'}`]: IntSpec };
}

export const OPTIONS = {
  profile: enumSpec({
    values: ['dev', 'prod'],
    default: 'dev',
    doc: 'Deployment profile. `dev` generates a master key on first start and allows plaintext gRPC; `prod` refuses insecure settings (no master key given, no TLS, generated keys).',
  }),
  'server.address': {
    type: 'string',
    default: '127.0.0.1:50051',
    unit: 'host:port',
    doc: 'Address the gRPC server listens on. Port 0 picks a free port (printed at start).',
  },
  'server.maxMessageBytes': {
    type: 'int',
    default: 4 * 1024 * 1024,
    min: 1024,
    max: 64 * 1024 * 1024,
    unit: 'bytes',
    doc: 'Largest request or response message. Larger requests get RESOURCE_EXHAUSTED before any handler runs.',
  },
  'server.keepaliveTimeMs': {
    type: 'int',
    default: 60 * SECOND,
    min: 1 * SECOND,
    max: DAY,
    unit: 'ms',
    doc: 'Interval of the server HTTP/2 keepalive pings on idle connections.',
  },
  'server.keepaliveTimeoutMs': {
    type: 'int',
    default: 20 * SECOND,
    min: 1 * SECOND,
    max: HOUR,
    unit: 'ms',
    doc: 'A connection whose keepalive ping is not answered within this time is closed.',
  },
  'server.maxConnectionAgeMs': {
    type: 'int',
    default: 0,
    min: 0,
    max: 30 * DAY,
    unit: 'ms',
    doc: 'Close connections after this age so clients rebalance behind L4 load balancers; 0 disables.',
  },
  'server.shutdownGraceMs': {
    type: 'int',
    default: 10 * SECOND,
    min: 0,
    max: 10 * MINUTE,
    unit: 'ms',
    doc: 'On SIGTERM/SIGINT: health turns NOT_SERVING, in-flight calls may finish for this long, then the server closes every connection.',
  },
  'server.reflection': {
    type: 'bool',
    default: true,
    prod: false,
    doc: 'Serve gRPC server reflection (grpc.reflection.v1 and v1alpha), which lets grpcurl and similar tools list the services and describe every message with its documentation. Off: such tools need the .proto files (`proto/`).',
  },
  'tls.certFile': {
    type: 'string',
    default: '',
    unit: 'path (PEM)',
    doc: 'Server certificate chain. Empty: plaintext gRPC (refused by the prod profile).',
  },
  'tls.keyFile': {
    type: 'string',
    default: '',
    unit: 'path (PEM)',
    doc: 'Private key of tls.certFile.',
  },
  'tls.clientCaFile': {
    type: 'string',
    default: '',
    unit: 'path (PEM)',
    doc: 'CA bundle that client certificates must chain to. Setting it enables mTLS.',
  },
  'tls.requireClientCert': {
    type: 'bool',
    default: false,
    doc: 'With tls.clientCaFile: refuse connections without a valid client certificate (true) or only verify certificates that are offered (false).',
  },
  dataDir: {
    type: 'string',
    default: './data',
    unit: 'path',
    doc: 'Directory of the embedded store (sts.db, SQLite in WAL mode) and, in dev, the generated master key.',
  },
  'masterKey.file': {
    type: 'string',
    default: '',
    unit: 'path',
    doc: 'Master key file: one `id:base64url(32 bytes)` per line, first line encrypts, all decrypt. Empty: `STS_MASTER_KEY`, else (dev only) `<dataDir>/master.key`, generated on first start.',
  },
  'auth.adminKeyFile': {
    type: 'string',
    default: '',
    unit: 'path',
    doc: 'Admin API keys: one `id:sha256hex(key)` per line. Bearer `<key>` authenticates as administrator (directory, key rotation). Empty: (dev) `<dataDir>/admin.key` is generated with one key; (prod) no admin key.',
  },
  'pop.encryption.alg': enumSpec({
    values: ['ECDH-ES+A256KW', 'RSA-OAEP-256'],
    default: 'ECDH-ES+A256KW',
    doc: 'JWE key management algorithm of new encryption keys (P-256, or RSA 3072 bits).',
  }),
  'pop.signing.alg': enumSpec({
    values: ['EdDSA', 'ES256', 'RS256', 'PS256'],
    default: 'EdDSA',
    doc: 'JWS algorithm of new signing keys (Ed25519, P-256, RSA 3072 bits).',
  }),
  ...rotationOptions('encryption', { validity: 30 * DAY, staging: DAY, legacy: 7 * DAY }),
  ...rotationOptions('signing', { validity: 30 * DAY, staging: DAY, legacy: 7 * DAY }),
  ...rotationOptions('secret', { validity: 90 * DAY, staging: DAY, legacy: 730 * DAY }),
  'pop.rotationCheckIntervalMs': {
    type: 'int',
    default: MINUTE,
    min: SECOND,
    max: DAY,
    unit: 'ms',
    doc: 'How often the rotation timer looks at the key ring (creates successors, erases destroyed keys).',
  },
  'pop.jwksMaxAgeMs': {
    type: 'int',
    default: 5 * MINUTE,
    min: SECOND,
    max: DAY,
    unit: 'ms',
    doc: 'Cache lifetime advertised with the JWKS (never beyond the next key change). Must be shorter than every staging lead, so caches learn a key before it is used.',
  },
  'pop.unboundDataKeys': enumSpec({
    values: ['accept', 'refuse'],
    default: 'accept',
    prod: 'refuse',
    doc: 'Data keys wrapped before data keys were bound to their owner (no `own` header): `accept` lets any trusted application Unwrap or Rewrap them (Rewrap binds them to the caller, audited as `unboundDataKey`), `refuse` answers them like a wrong context. Accept only during an upgrade window while the owners Rewrap their keys.',
  }),
  'session.issuer': {
    type: 'string',
    default: 'urn:sts:local',
    unit: 'URI',
    doc: 'The "iss" claim of every JWT STS signs (user tokens, exchanged tokens). Use the public URL of the deployment.',
  },
  'session.applicationTokenLifetimeMs': {
    type: 'int',
    default: HOUR,
    min: MINUTE,
    max: 30 * DAY,
    unit: 'ms',
    doc: 'Lifetime of an application token; RenewApplicationToken extends it by this much, never past session.applicationTokenMaxLifetimeMs.',
  },
  'session.applicationTokenMaxLifetimeMs': {
    type: 'int',
    default: DAY,
    min: MINUTE,
    max: 365 * DAY,
    unit: 'ms',
    doc: 'Longest absolute lifetime of an application token: RenewApplicationToken never extends a token past this time after its logon; then the application logs on again (its secret is checked afresh). At least session.applicationTokenLifetimeMs.',
  },
  'session.credentialJweMaxLifetimeMs': {
    type: 'int',
    default: 5 * MINUTE,
    min: 10 * SECOND,
    max: HOUR,
    unit: 'ms',
    doc: 'Credential JWEs (LogonApplication, LogonUser, step-up) must have `typ` `sts-credential+jwe` and carry `exp` at most this far ahead (plus 60 s of clock skew) and a `jti` of at least 128 bits, which STS accepts once. Bounds how long a captured credential JWE is worth anything and how long STS remembers each jti.',
  },
  'session.userTokenIdleTimeoutMs': {
    type: 'int',
    default: HOUR,
    min: MINUTE,
    max: 30 * DAY,
    unit: 'ms',
    doc: 'A user session not refreshed for this long ends (sliding; ASVS 7.3.1). Applications may set a shorter one.',
  },
  'session.userTicketLifetimeMs': {
    type: 'int',
    default: MINUTE,
    min: SECOND,
    max: HOUR,
    unit: 'ms',
    doc: 'An unused user ticket expires after this long.',
  },
  'session.anonymousView': enumSpec({
    values: ['anonymised', 'basic', 'deny'],
    default: 'anonymised',
    doc: 'What an application where the user has no role sees: `anonymised` (uid and security level only), `basic` (names too, never personal fields), `deny` (PERMISSION_DENIED).',
  }),
  'session.throttleWindowMs': {
    type: 'int',
    default: 15 * MINUTE,
    min: SECOND,
    max: DAY,
    unit: 'ms',
    doc: 'Logon failures are counted over this window: user logons per username, per application and username, and per application (distinct usernames); application logons per known application id, and per client address for unknown ids.',
  },
  'session.throttleFreeFailures': {
    type: 'int',
    default: 3,
    min: 0,
    max: 1000,
    unit: 'failures',
    doc: 'Failures allowed in a window before further attempts are slowed down (100 ms, doubling, at most 2 s).',
  },
  'session.throttleMaxFailures': {
    type: 'int',
    default: 10,
    min: 1,
    max: 10000,
    unit: 'failures',
    doc: 'After this many failures for one username at one application in a window, that application\'s logons for the username get RESOURCE_EXHAUSTED until the window ends (other applications\' logons for it are not refused by them).',
  },
  'session.throttleMaxFailuresPerUser': {
    type: 'int',
    default: 30,
    min: 1,
    max: 100000,
    unit: 'failures',
    doc: 'After this many failures for one username in a window, across all applications, every logon for it gets RESOURCE_EXHAUSTED until the window ends. Keep it above session.throttleMaxFailures, so that one application alone cannot lock a user out of the others.',
  },
  'session.throttleMaxUsernamesPerApplication': {
    type: 'int',
    default: 50,
    min: 1,
    max: 1000000,
    unit: 'usernames',
    doc: 'Failure budget of one application: after failed user logons for this many distinct usernames in a window (password spraying), the application\'s user logons get RESOURCE_EXHAUSTED until the window ends. Raise it for applications with many users.',
  },
  'session.throttleMaxFailuresPerApplication': {
    type: 'int',
    default: 100,
    min: 1,
    max: 100000,
    unit: 'failures',
    doc: 'Application logons with a known application id whose secret an operator chose (or an earlier STS hashed with scrypt): after this many failures for that id in a window, its logons get RESOURCE_EXHAUSTED until the window ends (its tokens keep working and renewing). Failures of other ids never count against it. An application whose secret STS made has no such limit: nobody can lock it out.',
  },
  'session.throttleMaxFailuresPerAddress': {
    type: 'int',
    default: 100,
    min: 1,
    max: 100000,
    unit: 'failures',
    doc: 'Application logons with unknown application ids: after this many from one client address in a window, further logons with unknown ids from it get RESOURCE_EXHAUSTED. Known ids are counted per id instead, so an application presenting its secret is never refused for others\' failures. User logons never count the address (it is the calling backend).',
  },
  'session.hashConcurrency': {
    type: 'int',
    default: 0,
    min: 0,
    max: 1024,
    unit: 'hashes',
    doc: 'Password and secret hashes (Argon2id, and scrypt hashes stored by earlier versions) computed at once, each on a libuv thread pool thread. They are shared fairly between the applications asking: round robin, and while several applications are hashing none takes more than its share; a logon whose deadline has passed, or would pass before its hash could end (estimated from the hashes measured), is answered DEADLINE_EXCEEDED without hashing. 0: the number of CPU cores, at most the thread pool size (UV_THREADPOOL_SIZE, default 4, read by Node at start: set it in the environment to go past 4). Keyed hashes of application secrets (HMAC-SHA-256) take microseconds and do not take a turn. Where memory-hard hashes side by side slow each other down (a small or shared machine: on a busy 2-core VM two hashes at once took twice as long each), 1 keeps another application\'s logon under a flood within 2x of its unloaded latency, and leaves a core to everything else.',
  },
  'session.hashQueuePerApplication': {
    type: 'int',
    default: 64,
    min: 1,
    max: 100000,
    unit: 'hashes',
    doc: 'Hashes one application (or, for application logons, one claimed application id or client address) may have waiting; past it its logons get RESOURCE_EXHAUSTED with retry-after-ms. Work whose gRPC deadline has passed while waiting, or would pass before it could end, is dropped unhashed (DEADLINE_EXCEEDED).',
  },
  'session.passwordHash.memoryKib': {
    type: 'int',
    default: DEFAULT_ARGON2.memoryKiB,
    min: Math.min(...OWASP_ARGON2ID.map((f) => f.memoryKiB)),
    max: HASH_LIMITS.maxMemoryKiB,
    unit: 'KiB',
    doc: 'Argon2id memory per user password hash (and per hash of an application secret chosen by an operator that does not carry 128 bits). With session.passwordHash.timeCost it must meet OWASP\'s floor: at least one of m=47104 t=1, m=19456 t=2, m=12288 t=3, m=9216 t=4, m=7168 t=5 (memory and passes both at least those of one row); checked at start. Each running hash holds this much memory: session.hashConcurrency of them at once. Stored hashes with other parameters keep verifying and are rehashed at the next successful logon (`sts admin hashes` counts them).',
  },
  'session.passwordHash.timeCost': {
    type: 'int',
    default: DEFAULT_ARGON2.timeCost,
    min: 1,
    max: HASH_LIMITS.maxTimeCost,
    unit: 'passes',
    doc: 'Argon2id passes over its memory (t). See session.passwordHash.memoryKib for the OWASP floor.',
  },
  'session.passwordHash.parallelism': {
    type: 'int',
    default: DEFAULT_ARGON2.parallelism,
    min: 1,
    max: HASH_LIMITS.maxParallelism,
    unit: 'lanes',
    doc: 'Argon2id lanes (p). OWASP\'s settings all use 1.',
  },
  'session.thirdPartyTokenWithoutJtiMaxLifetimeMs': {
    type: 'int',
    default: 5 * MINUTE,
    min: 10 * SECOND,
    max: HOUR,
    unit: 'ms',
    doc: 'CreateUserFromThirdPartyToken remembers each token\'s jti until it expires and refuses it a second time. For an identity provider marked tokens_without_jti that is impossible, so its tokens are accepted only while they have at most this long to live (plus its clock skew): a replay is possible only within that time.',
  },
  'session.userTokenMaxLifetimeMs': {
    type: 'int',
    default: DAY,
    min: MINUTE,
    max: 365 * DAY,
    unit: 'ms',
    doc: 'Longest absolute lifetime of a user session and its signed JWT. The signing legacy window must be at least this long, so every token stays verifiable until it expires.',
  },
  'session.directoryCacheEntries': {
    type: 'int',
    default: 10_000,
    min: 0,
    max: 10_000_000,
    unit: 'records',
    doc: 'Applications, users and role lists kept in memory (each kind up to this many), so validating a token reads no directory row. Changes made through STS apply at once; `sts admin directory import` into the running server\'s data directory within 250 ms. 0: off.',
  },
  'session.storeCacheEntries': {
    type: 'int',
    default: 10_000,
    min: 0,
    max: 10_000_000,
    unit: 'records',
    doc: 'Embedded mode: live application tokens, user sessions and their participants (each kind up to this many) kept in memory in front of SQLite, so validating a token reads no row. Exact, not time-based: one process serves a data directory and every change goes through it. Cluster mode reads the cluster every time. 0: off.',
  },
  'secret.secretBytes': {
    type: 'int',
    default: 32,
    min: 16,
    max: 64,
    unit: 'bytes',
    doc: 'Length of the secret SecretService creates (CSPRNG) for a user on first use. Secrets already created keep their length.',
  },
  'cluster.enabled': {
    type: 'bool',
    default: false,
    doc: 'Cluster mode: keep sessions, tokens, tickets, throttling counters, keys and user secrets in a Hazelcast cluster shared by every STS node (`sts serve --cluster`). Off: the embedded SQLite store.',
  },
  'cluster.name': {
    type: 'string',
    default: 'sts',
    unit: 'name',
    doc: 'Hazelcast cluster name (must match the members\' `cluster-name`).',
  },
  'cluster.members': {
    type: 'string',
    default: '127.0.0.1:5701',
    unit: 'host:port,...',
    doc: 'Hazelcast members to connect to, comma separated. List them all: the client connects to every member.',
  },
  'cluster.connectTimeoutMs': {
    type: 'int',
    default: 30 * SECOND,
    min: SECOND,
    max: 10 * MINUTE,
    unit: 'ms',
    doc: 'How long start-up waits for the cluster before it fails. After start the client reconnects by itself, forever.',
  },
  'cluster.invocationTimeoutMs': {
    type: 'int',
    default: 5 * SECOND,
    min: 500,
    max: MINUTE,
    unit: 'ms',
    doc: 'Longest wait for one cluster operation; past it the RPC answers UNAVAILABLE.',
  },
  'cluster.leaseMs': {
    type: 'int',
    default: 30 * SECOND,
    min: SECOND,
    max: 10 * MINUTE,
    unit: 'ms',
    doc: 'How long a node holds the cluster lease under which it creates, erases and re-seals keys. A lease in the cluster that does not open (forged, or sealed under a master key this node lacks) counts as expired this long after the node first saw it, so nobody on the member network can stall key rotation.',
  },
  'cluster.unsealedRecords': enumSpec({
    values: ['refuse', 'reseal'],
    default: 'refuse',
    doc: 'What a starting node does with a cluster written by an STS from before sealing (its maps hold unsealed records and no sealed one). `refuse`: do not start, and change nothing. `reseal`: vouch for what the cluster holds and seal it, once, during the upgrade (README: "Security model of cluster mode"); set it back to `refuse` afterwards. In a cluster that holds sealed records an unsealed value is a forgery, and is refused whatever this says.',
  }),
  'metrics.address': {
    type: 'string',
    default: '',
    unit: 'host:port',
    doc: 'Where to serve Prometheus metrics (`GET /metrics`: RPC counts and latency by method and status, key ring state, cluster connection). Empty: off.',
  },
  'http.address': {
    type: 'string',
    default: '127.0.0.1:8080',
    prod: '',
    unit: 'host:port',
    doc: 'Where the HTTP listener serves browsers and standard JWT libraries: the JWKS (`/.well-known/jwks.json`), OpenID discovery, `/healthz` and, with http.testPage, the browser test page. HTTPS with the tls.* certificate when tls.certFile is set. Port 0 picks a free port. Empty: off (the prod default: give it explicitly).',
  },
  'http.publicUrl': {
    type: 'string',
    default: '',
    unit: 'URL',
    doc: 'The base URL clients reach the HTTP listener at (`https://sts.example.com`, a path prefix allowed), for the `jwks_uri` of the discovery document. Empty: `http(s)://` + http.address. The prod profile needs it, with https, when http.address is set.',
  },
  'http.corsOrigins': {
    type: 'string',
    default: '',
    unit: 'origin,...',
    doc: 'Origins (`scheme://host[:port]`, comma separated) whose pages may call the HTTP endpoints cross-origin (CORS, read-only: GET and HEAD). A request from any other origin gets 403. `*`: every origin (refused by the prod profile). Empty: same-origin pages and non-browser clients only.',
  },
  'http.testPage': {
    type: 'bool',
    default: true,
    prod: false,
    doc: 'Serve the browser test page at `/test-page`: it encrypts text, or a LogonUser credential, to the POP key in the browser and shows the JWE. Refused by the prod profile.',
  },
  'http.maxHeaderBytes': {
    type: 'int',
    default: 8 * 1024,
    min: 1024,
    max: 64 * 1024,
    unit: 'bytes',
    doc: 'Largest HTTP request head (request line and headers). A larger one gets 431 and the connection is closed. No HTTP route takes a request body: one gets 413.',
  },
  'http.requestTimeoutMs': {
    type: 'int',
    default: 10 * SECOND,
    min: SECOND,
    max: 5 * MINUTE,
    unit: 'ms',
    doc: 'An HTTP client must send its whole request within this time, else it gets 408 and the connection is closed (slow clients cannot hold connections open).',
  },
  'log.level': enumSpec({
    values: ['debug', 'info', 'warn', 'error'],
    default: 'info',
    doc: 'Lowest level written to the JSON log on stdout. Each RPC writes one `info` line.',
  }),
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;

type ValueOf<S> = S extends { type: 'int' }
  ? number
  : S extends { type: 'bool' }
    ? boolean
    : S extends { type: 'enum'; values: readonly (infer V)[] }
      ? V
      : string;

/** The validated configuration: one typed value per option. */
export type Config = { readonly [K in OptionName]: ValueOf<(typeof OPTIONS)[K]> };

/** Environment variables that are not options but are read directly (secrets stay out of config files). */
export const SECRET_ENV = {
  STS_MASTER_KEY: 'Master key(s) as `id:base64url` entries separated by commas; used when masterKey.file is empty.',
  STS_CONFIG: 'Path of the config file (same as `sts serve --config`).',
  STS_ADMIN_TOKEN: 'Admin key used by `sts admin` commands (instead of --token).',
} as const;

/** `server.maxMessageBytes` -> `STS_SERVER_MAX_MESSAGE_BYTES` */
export function envName(option: string): string {
  return 'STS_' + option.replace(/\./g, '_').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** The configuration table in Markdown, as it appears in the README. */
export function optionsMarkdown(): string {
  const code = (v: unknown): string => '`' + String(v) + '`';
  const rows = Object.entries(OPTIONS).map(([name, spec]) => {
    const s = spec as OptionSpec;
    const def = s.type === 'string' && s.default === '' ? '(empty)' : code(s.default);
    const prod = s.prod === undefined ? '' : ` (prod: ${code(s.prod)})`;
    const unit = s.type === 'enum' ? s.values.map(code).join(' \\| ') : (s.unit ?? s.type);
    return `| ${code(name)} | ${code(envName(name))} | ${unit} | ${def}${prod} | ${s.doc} |`;
  });
  return ['| option | environment | unit | default | effect |', '| --- | --- | --- | --- | --- |', ...rows].join('\n');
}
