/**
 * The command table of `sts`: every command's words and options, and the help texts. It imports nothing
 * heavy, so `sts` can parse its command line and load only what the command needs (`sts serve` sets up
 * tracing before the gRPC library is loaded; `sts admin` never loads the server).
 */
import type { CommandDef, OptionSpecs } from './args.js';
import { SECRET_ENV } from '../config/defaults.js';

export const HELP = `sts: the security token service (gRPC)

Usage:
  sts serve [--config FILE] [--address HOST:PORT] [--http-address HOST:PORT] [--metrics-address HOST:PORT]
            [--data-dir DIR] [--profile dev|prod] [--cluster [--members HOST:PORT,...]]
      Start the server (embedded SQLite, or cluster mode on Hazelcast with --cluster). --http-address is
      the HTTP listener for browsers and JWT libraries (JWKS, discovery; "" turns it off). Options override
      the config file and STS_* environment variables. OTEL_* variables turn on OpenTelemetry tracing.
  sts config [--config FILE] [--markdown | --sources]
      Print every option with its value (secrets hidden) and its environment variable; --sources: where
      each value came from; --markdown: the option table.
  sts admin ...
      Operator commands (applications, users, roles, identity providers, resource servers, keys, backup);
      run \`sts admin --help\` for the list.
  sts cluster init --dir DIR [--members HOST:PORT,...] [--name NAME]
      Write what every node of a cluster shares: master.key, admin.keys (mode 0600), the operators'
      admin.token, and a config skeleton sts.yaml.
  sts migrate [--dry-run] [--config FILE | --data-dir DIR]
      Bring the data directory's schema up to date (STS does it at start too); --dry-run lists what would run.
  sts backup verify FILE [--master-key-file FILE] [--config FILE]
      Check a backup without restoring it; with a master key (the file, or the config's), that it opens.
  sts restore FILE --data-dir DIR [--config FILE]
      Fill an empty data directory from a backup (\`sts admin backup\`).
  sts --help | sts --version

Options may stand anywhere on the line. Environment: STS_<OPTION> for every option (see \`sts config\`),
${Object.keys(SECRET_ENV).join(', ')}.
Exit codes: 0 ok, 1 the server refused an admin command, 64 usage, 65 bad data (master key, store, backup),
69 cannot listen or cannot reach the server, 73 data dir unusable, 78 configuration invalid, 70 internal error.
`;

export const ADMIN_HELP = `sts admin: operator commands

Connection options (server commands), anywhere on the line:
  --config FILE (the server's config: its address and TLS)  --address HOST:PORT  --token ADMIN_KEY
  --ca FILE  --cert FILE --key FILE (mTLS)  --data-dir DIR (where the dev profile's admin.token is)

  health [--wait SECONDS]              (grpc.health.v1 of the server; --wait: until SERVING)
  apps list
  apps create --id ID --name NAME [--trusted] [--admin] [--personal-fields] [--full-token] [--min-level N] [--tag T]...
              [--transform-source APP]... [--data-key-group GROUP]
  apps disable --id ID | apps enable --id ID
  apps reset-secret --id ID            (STS makes a new secret, printed once; the application's tokens end)
  users list [--prefix P]
  users create --username U [--first-name F] [--last-name L] [--email E] [--cellphone C] [--person-ref R] [--password-stdin]
  users disable --uid UID | users enable --uid UID
  users set-password --uid UID --password-stdin
  roles add --uid UID --app APP --role NAME [--org ORG] [--value V]
  roles remove --uid UID --app APP --role NAME [--org ORG]
  sessions list --uid UID | sessions release --uid UID
  keys list [--all] | keys rotate [--kind encryption|signing|secret]...
  idps list
  idps put --issuer ISS (--jwks-uri URL | --jwks-file FILE) [--audience AUD]... --alg ALG... [--clock-skew-ms N]
           [--subject-claim CLAIM] [--security-level N] [--app-audience APP=AUD]... [--tokens-without-jti]
           [--accept-tokens-without-iat]
  idps delete --issuer ISS
  resource-servers list
  resource-servers put --id ID (--app APP_ID | --cert-sha256 HEX) --audience AUD... (--jwks-uri URL | --jwks-file FILE)
  resource-servers delete --id ID

Files (on the server's host; --config FILE or --data-dir DIR name the data directory):
  backup --out FILE                    (consistent copy of sts.db while STS serves: keys, user secrets,
                                        directory, registries; sealed: useless without the master key)
  directory export [--out FILE]        (reads <dataDir>/sts.db directly; contains password hashes)
  directory import FILE                (upserts applications, users and roles in one transaction)
  hashes                               (counts password and application secret hashes: current, and old ones
                                        that are replaced at their owner's next logon; reads <dataDir>/sts.db)
  master-key generate                  (prints a new "id:key" line for masterKey.file)
  admin-key generate                   (prints a new admin key and the "id:hash" line for auth.adminKeyFile)
`;

const CONNECTION = {
  address: { type: 'string' },
  token: { type: 'string' },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  config: { type: 'string' },
  'data-dir': { type: 'string' },
} as const satisfies OptionSpecs;

const FILES = { config: { type: 'string' }, 'data-dir': { type: 'string' } } as const satisfies OptionSpecs;

const SERVER_COMMANDS: Record<string, OptionSpecs> = {
  health: { wait: { type: 'string' } },
  'apps list': {},
  'apps create': {
    id: { type: 'string' },
    name: { type: 'string' },
    trusted: { type: 'boolean' },
    admin: { type: 'boolean' },
    'personal-fields': { type: 'boolean' },
    'full-token': { type: 'boolean' },
    'min-level': { type: 'string' },
    tag: { type: 'string', multiple: true },
    'transform-source': { type: 'string', multiple: true },
    'data-key-group': { type: 'string' },
  },
  'apps disable': { id: { type: 'string' } },
  'apps enable': { id: { type: 'string' } },
  'apps reset-secret': { id: { type: 'string' } },
  'users list': { prefix: { type: 'string' } },
  'users create': {
    username: { type: 'string' },
    'first-name': { type: 'string' },
    'last-name': { type: 'string' },
    email: { type: 'string' },
    cellphone: { type: 'string' },
    'person-ref': { type: 'string' },
    'password-stdin': { type: 'boolean' },
  },
  'users disable': { uid: { type: 'string' } },
  'users enable': { uid: { type: 'string' } },
  'users set-password': { uid: { type: 'string' }, 'password-stdin': { type: 'boolean' } },
  'roles add': { uid: { type: 'string' }, app: { type: 'string' }, role: { type: 'string' }, org: { type: 'string' }, value: { type: 'string' } },
  'roles remove': { uid: { type: 'string' }, app: { type: 'string' }, role: { type: 'string' }, org: { type: 'string' } },
  'sessions list': { uid: { type: 'string' } },
  'sessions release': { uid: { type: 'string' } },
  'keys list': { all: { type: 'boolean' } },
  'keys rotate': { kind: { type: 'string', multiple: true } },
  'idps list': {},
  'idps put': {
    issuer: { type: 'string' },
    'jwks-uri': { type: 'string' },
    'jwks-file': { type: 'string' },
    audience: { type: 'string', multiple: true },
    alg: { type: 'string', multiple: true },
    'clock-skew-ms': { type: 'string' },
    'subject-claim': { type: 'string' },
    'security-level': { type: 'string' },
    'app-audience': { type: 'string', multiple: true },
    'tokens-without-jti': { type: 'boolean' },
    'accept-tokens-without-iat': { type: 'boolean' },
  },
  'idps delete': { issuer: { type: 'string' } },
  'resource-servers list': {},
  'resource-servers put': {
    id: { type: 'string' },
    app: { type: 'string' },
    'cert-sha256': { type: 'string' },
    audience: { type: 'string', multiple: true },
    'jwks-uri': { type: 'string' },
    'jwks-file': { type: 'string' },
  },
  'resource-servers delete': { id: { type: 'string' } },
};

export interface AdminCommand extends CommandDef {
  /** The words after "admin", for example "apps create". */
  name: string;
  server: boolean;
}

const words = (name: string) => ['admin', ...name.split(' ')];

/** Every `sts admin` command with its options (connection options on every server command). */
export const ADMIN_COMMANDS: AdminCommand[] = [
  ...Object.entries(SERVER_COMMANDS).map(([name, options]) => ({ name, path: words(name), options: { ...CONNECTION, ...options }, server: true })),
  { name: 'backup', path: words('backup'), options: { ...FILES, out: { type: 'string' } }, server: false },
  { name: 'directory export', path: words('directory export'), options: { ...FILES, out: { type: 'string' } }, server: false },
  { name: 'directory import', path: words('directory import'), options: FILES, args: ['FILE'], server: false },
  { name: 'hashes', path: words('hashes'), options: FILES, server: false },
  { name: 'master-key generate', path: words('master-key generate'), options: {}, server: false },
  { name: 'admin-key generate', path: words('admin-key generate'), options: {}, server: false },
];


const CONFIG = { config: { type: 'string' } } as const satisfies OptionSpecs;

/** The top-level commands (`sts admin ...` are in ADMIN_COMMANDS). */
export const TOP_COMMANDS: CommandDef[] = [
  {
    path: ['serve'],
    options: {
      ...CONFIG,
      address: { type: 'string' },
      'http-address': { type: 'string' },
      'metrics-address': { type: 'string' },
      'data-dir': { type: 'string' },
      profile: { type: 'string' },
      cluster: { type: 'boolean' },
      members: { type: 'string' },
    },
  },
  { path: ['config'], options: { ...CONFIG, markdown: { type: 'boolean' }, sources: { type: 'boolean' } } },
  { path: ['cluster', 'init'], options: { dir: { type: 'string' }, members: { type: 'string' }, name: { type: 'string' } } },
  { path: ['migrate'], options: { ...CONFIG, 'data-dir': { type: 'string' }, 'dry-run': { type: 'boolean' } } },
  { path: ['backup', 'verify'], options: { ...CONFIG, 'master-key-file': { type: 'string' } }, args: ['FILE'] },
  { path: ['restore'], options: { ...CONFIG, 'data-dir': { type: 'string' } }, args: ['FILE'] },
];
