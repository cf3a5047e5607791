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
} as const;

/** `server.maxMessageBytes` -> `STS_SERVER_MAX_MESSAGE_BYTES` */
export function envName(option: string): string {
  return 'STS_' + option.replace(/\./g, '_').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** The configuration table in Markdown, as it appears in the README. */
export function optionsMarkdown(): string {
  const rows = Object.entries(OPTIONS).map(([name, spec]) => {
    const s = spec as OptionSpec;
    const def = s.type === 'string' && s.default === '' ? '(empty)' : `\`${String(s.default)}\``;
    const prod = s.prod === undefined ? '' : ` (prod: \`${String(s.prod)}\`)`;
    const unit = s.type === 'enum' ? s.values.map((v) => `\`${v}\``).join(' \\| ') : (s.unit ?? s.type);
    return `| \`${name}\` | \`${envName(name)}\` | ${unit} | ${def}${prod} | ${s.doc} |`;
  });
  return ['| option | environment | unit | default | effect |', '| --- | --- | --- | --- | --- |', ...rows].join('\n');
}
