/**
 * `sts admin ...`: operator commands. Most talk to a running server over gRPC with an admin key (the same
 * RPCs any client can use, so the CLI adds no back door); directory export/import and key material helpers
 * work on files.
 *
 * Connection: --address (default: server.address from the config), --token (default: STS_ADMIN_TOKEN, else
 * <dataDir>/admin.token written by the dev profile), --ca FILE for a TLS server.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { type CallOptions, type Client, Metadata, type ServiceError, credentials } from '@grpc/grpc-js';
import { loadConfig } from '../config/load.js';
import { newMasterKey, formatMasterKeys } from '../crypto/master-key.js';
import { hashAdminKey, newAdminKey } from '../auth/caller.js';
import { KeyInfo, KeyKind, PopServiceClient } from '../gen/sts/v1/pop.js';
import { SecretServiceClient } from '../gen/sts/v1/secret.js';
import { Application, SessionServiceClient, User } from '../gen/sts/v1/session.js';
import { openDatabase } from '../store/sqlite/database.js';
import { exportDirectory, importDirectory } from '../session/directory-file.js';

export const ADMIN_HELP = `sts admin: operator commands

Connection options (server commands): --address HOST:PORT  --token ADMIN_KEY  --ca FILE  --config FILE  --data-dir DIR

  apps list
  apps create --id ID --name NAME [--trusted] [--admin] [--personal-fields] [--full-token] [--min-level N] [--tag T]...
              [--transform-source APP]... [--data-key-group GROUP]
  apps disable --id ID | apps enable --id ID
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
  directory export [--out FILE]        (reads <dataDir>/sts.db directly; contains password hashes)
  directory import FILE                (upserts applications, users and roles in one transaction)
  master-key generate                  (prints a new "id:key" line for masterKey.file)
  admin-key generate                   (prints a new admin key and the "id:hash" line for auth.adminKeyFile)
`;

export class AdminUsageError extends Error {}

const CONNECTION = {
  address: { type: 'string' },
  token: { type: 'string' },
  ca: { type: 'string' },
  config: { type: 'string' },
  'data-dir': { type: 'string' },
} as const satisfies NonNullable<ParseArgsConfig['options']>;

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>): { values: Values; positionals: string[] } {
  try {
    const r = parseArgs({ args, options: { ...CONNECTION, ...options }, allowPositionals: true, strict: true });
    return { values: r.values as Values, positionals: r.positionals };
  } catch (err) {
    throw new AdminUsageError((err as Error).message);
  }
}

function need(values: Values, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v === '') throw new AdminUsageError(`--${name} is required`);
  return v;
}

function out(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

interface Connection {
  session: SessionServiceClient;
  pop: PopServiceClient;
  secret: SecretServiceClient;
  token: string;
  close(): void;
}

function connect(values: Values): Connection {
  const config = loadConfig({ file: values.config as string | undefined, overrides: values['data-dir'] ? { dataDir: values['data-dir'] as string } : {} });
  const address = (values.address as string | undefined) ?? config['server.address'];
  let token = (values.token as string | undefined) ?? process.env.STS_ADMIN_TOKEN;
  if (!token) {
    try {
      token = readFileSync(join(config.dataDir, 'admin.token'), 'utf8').trim();
    } catch {
      throw new AdminUsageError(`no admin key: pass --token, set STS_ADMIN_TOKEN, or run in the data directory of a dev server (${join(config.dataDir, 'admin.token')})`);
    }
  }
  const ca = values.ca as string | undefined;
  const creds = ca || config['tls.certFile'] ? credentials.createSsl(ca ? readFileSync(ca) : null) : credentials.createInsecure();
  const clients: Client[] = [];
  const make = <T extends Client>(C: new (a: string, c: typeof creds) => T): T => {
    const c = new C(address, creds);
    clients.push(c);
    return c;
  };
  return { session: make(SessionServiceClient), pop: make(PopServiceClient), secret: make(SecretServiceClient), token, close: () => clients.forEach((c) => c.close()) };
}

type Unary<Req, Res> = (req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void) => unknown;

function rpc<Req, Res>(c: Connection, client: Client, method: Unary<Req, Res>, req: Req): Promise<Res> {
  const md = new Metadata();
  md.set('authorization', `Bearer ${c.token}`);
  return new Promise((resolve, reject) => method.call(client, req, md, { deadline: Date.now() + 30_000 }, (err, res) => (err ? reject(err) : resolve(res))));
}

const emptyApp = (id: string): Application => Application.fromPartial({ applicationId: id });
const emptyUser = (uid: string): User => User.fromPartial({ uid });

const KINDS: Record<string, KeyKind> = { encryption: KeyKind.KEY_KIND_ENCRYPTION, signing: KeyKind.KEY_KIND_SIGNING, secret: KeyKind.KEY_KIND_SECRET };

/** --jwks-uri URL or --jwks-file FILE (inline JWKS), exactly one. */
function jwksSource(values: Values): { $case: 'jwksUri'; value: string } | { $case: 'jwksJson'; value: string } {
  const uri = values['jwks-uri'] as string | undefined;
  const file = values['jwks-file'] as string | undefined;
  if (Boolean(uri) === Boolean(file)) throw new AdminUsageError('give exactly one of --jwks-uri and --jwks-file');
  return uri ? { $case: 'jwksUri', value: uri } : { $case: 'jwksJson', value: readFileSync(file!, 'utf8') };
}

export async function admin(args: string[]): Promise<void> {
  const [group, action, ...rest] = args;
  const cmd = `${group ?? ''} ${action ?? ''}`.trim();

  // Commands that need no server.
  switch (cmd) {
    case 'master-key generate':
      process.stdout.write(formatMasterKeys([newMasterKey()]));
      return;
    case 'admin-key generate': {
      const key = newAdminKey();
      out({ adminKey: key, adminKeyFileLine: `admin-${Date.now().toString(36)}:${hashAdminKey(key)}` });
      return;
    }
    case 'directory export': {
      const { values } = parse(rest, { out: { type: 'string' } });
      const config = loadConfig({ file: values.config as string | undefined, overrides: values['data-dir'] ? { dataDir: values['data-dir'] as string } : {} });
      const db = openDatabase(config.dataDir);
      try {
        const json = JSON.stringify(exportDirectory(db), null, 2) + '\n';
        if (values.out) writeFileSync(values.out as string, json, { mode: 0o600 });
        else process.stdout.write(json);
      } finally {
        db.close();
      }
      return;
    }
    case 'directory import': {
      const { values, positionals } = parse(rest, {});
      if (positionals.length !== 1) throw new AdminUsageError('directory import needs one FILE');
      const config = loadConfig({ file: values.config as string | undefined, overrides: values['data-dir'] ? { dataDir: values['data-dir'] as string } : {} });
      const db = openDatabase(config.dataDir);
      try {
        out(importDirectory(db, JSON.parse(readFileSync(positionals[0]!, 'utf8')) as unknown));
      } finally {
        db.close();
      }
      return;
    }
  }

  const specs: Record<string, NonNullable<ParseArgsConfig['options']>> = {
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
  const spec = specs[cmd];
  if (!spec) throw new AdminUsageError(`unknown admin command "${cmd}"; see \`sts admin --help\``);
  const { values } = parse(rest, spec);
  const c = connect(values);
  try {
    switch (cmd) {
      case 'apps list':
        return out((await rpc(c, c.session, c.session.listApplications, {})).applications);
      case 'apps create': {
        const level = Number(values['min-level'] ?? 0);
        if (!Number.isInteger(level) || level < 0 || level > 4) throw new AdminUsageError('--min-level must be 0 to 4');
        const app: Application = {
          ...emptyApp(need(values, 'id')),
          name: need(values, 'name'),
          tags: (values.tag as string[] | undefined) ?? [],
          trusted: values.trusted === true,
          admin: values.admin === true,
          personalFieldsAllowed: values['personal-fields'] === true,
          fullToken: values['full-token'] === true,
          minimumSecurityLevel: level,
          transformSources: (values['transform-source'] as string[] | undefined) ?? [],
          dataKeyGroup: (values['data-key-group'] as string | undefined) ?? '',
        };
        return out(await rpc(c, c.session, c.session.createApplication, { application: app, applicationSecret: '' }));
      }
      case 'apps disable':
      case 'apps enable':
        return out(
          await rpc(c, c.session, c.session.updateApplication, {
            application: { ...emptyApp(need(values, 'id')), disabled: action === 'disable' },
            updateMask: ['disabled'],
            applicationSecret: '',
          }),
        );
      case 'users list':
        return out((await rpc(c, c.session, c.session.listUsers, { usernamePrefix: (values.prefix as string | undefined) ?? '', pageSize: 1000, pageToken: '' })).users);
      case 'users create': {
        const password = values['password-stdin'] ? await readStdinLine() : '';
        const user: User = {
          ...emptyUser(''),
          username: need(values, 'username'),
          firstName: (values['first-name'] as string | undefined) ?? '',
          lastName: (values['last-name'] as string | undefined) ?? '',
          email: (values.email as string | undefined) ?? '',
          cellphone: (values.cellphone as string | undefined) ?? '',
          personRef: (values['person-ref'] as string | undefined) ?? '',
        };
        return out((await rpc(c, c.session, c.session.createUser, { user, password })).user);
      }
      case 'users disable':
      case 'users enable':
        return out(
          (await rpc(c, c.session, c.session.updateUser, { user: { ...emptyUser(need(values, 'uid')), disabled: action === 'disable' }, updateMask: ['disabled'], password: '' })).user,
        );
      case 'users set-password': {
        if (!values['password-stdin']) throw new AdminUsageError('users set-password reads the password from stdin: pass --password-stdin');
        const password = await readStdinLine();
        return out((await rpc(c, c.session, c.session.updateUser, { user: emptyUser(need(values, 'uid')), updateMask: [], password })).user);
      }
      case 'roles add':
      case 'roles remove': {
        const role = { applicationId: need(values, 'app'), organizationName: (values.org as string | undefined) ?? '', roleName: need(values, 'role'), roleValue: (values.value as string | undefined) ?? '' };
        const method = action === 'add' ? c.session.addUserRole : c.session.removeUserRole;
        await rpc(c, c.session, method as Unary<{ uid: string; role: typeof role }, object>, { uid: need(values, 'uid'), role });
        return out({ ok: true });
      }
      case 'sessions list':
        return out((await rpc(c, c.session, c.session.listUserSessions, { uid: need(values, 'uid') })).sessions);
      case 'sessions release':
        return out(await rpc(c, c.session, c.session.releaseUserSessions, { uid: need(values, 'uid') }));
      case 'keys list':
        return out((await rpc(c, c.pop, c.pop.listKeys, { kind: KeyKind.KEY_KIND_UNSPECIFIED, includeDestroyed: values.all === true })).keys.map((k) => KeyInfo.toJSON(k)));
      case 'keys rotate': {
        const kinds = ((values.kind as string[] | undefined) ?? []).map((k) => {
          const kind = KINDS[k];
          if (kind === undefined) throw new AdminUsageError(`--kind must be encryption, signing or secret, not "${k}"`);
          return kind;
        });
        return out((await rpc(c, c.pop, c.pop.rotateKeys, { kinds })).created.map((k) => KeyInfo.toJSON(k)));
      }
      case 'idps list':
        return out((await rpc(c, c.secret, c.secret.listIdentityProviders, {})).identityProviders);
      case 'resource-servers list':
        return out((await rpc(c, c.secret, c.secret.listResourceServers, {})).resourceServers);
      case 'idps put': {
        const skew = Number(values['clock-skew-ms'] ?? 0);
        const level = Number(values['security-level'] ?? 0);
        if (!Number.isInteger(skew) || skew < 0) throw new AdminUsageError('--clock-skew-ms must be a whole number of milliseconds');
        if (!Number.isInteger(level) || level < 0 || level > 4) throw new AdminUsageError('--security-level must be 0 to 4');
        // --app-audience shop=client-123 --app-audience shop=client-456 --app-audience crm=crm-client
        const perApp = new Map<string, string[]>();
        for (const pair of (values['app-audience'] as string[] | undefined) ?? []) {
          const eq = pair.indexOf('=');
          if (eq <= 0 || eq === pair.length - 1) throw new AdminUsageError(`--app-audience must be APP=AUDIENCE, not "${pair}"`);
          perApp.set(pair.slice(0, eq), [...(perApp.get(pair.slice(0, eq)) ?? []), pair.slice(eq + 1)]);
        }
        return out(
          (
            await rpc(c, c.secret, c.secret.putIdentityProvider, {
              identityProvider: {
                issuer: need(values, 'issuer'),
                jwksSource: jwksSource(values),
                audiences: (values.audience as string[] | undefined) ?? [],
                algorithms: (values.alg as string[] | undefined) ?? [],
                clockSkew: skew ? { seconds: Math.floor(skew / 1000), nanos: (skew % 1000) * 1e6 } : undefined,
                subjectClaim: (values['subject-claim'] as string | undefined) ?? '',
                securityLevel: level,
                applicationAudiences: [...perApp].map(([applicationId, audiences]) => ({ applicationId, audiences })),
                tokensWithoutJti: values['tokens-without-jti'] === true,
                acceptTokensWithoutIat: values['accept-tokens-without-iat'] === true,
              },
            })
          ).identityProvider,
        );
      }
      case 'idps delete':
        await rpc(c, c.secret, c.secret.deleteIdentityProvider, { issuer: need(values, 'issuer') });
        return out({ ok: true });
      case 'resource-servers put': {
        const app = values.app as string | undefined;
        const cert = values['cert-sha256'] as string | undefined;
        if (Boolean(app) === Boolean(cert)) throw new AdminUsageError('give exactly one of --app and --cert-sha256');
        const source = jwksSource(values);
        return out(
          (
            await rpc(c, c.secret, c.secret.putResourceServer, {
              resourceServer: {
                resourceServerId: need(values, 'id'),
                credential: app ? { $case: 'applicationId', value: app } : { $case: 'certificateSha256', value: cert! },
                audiences: (values.audience as string[] | undefined) ?? [],
                encryptionKeySource: source,
              },
            })
          ).resourceServer,
        );
      }
      case 'resource-servers delete':
        await rpc(c, c.secret, c.secret.deleteResourceServer, { resourceServerId: need(values, 'id') });
        return out({ ok: true });
    }
  } finally {
    c.close();
  }
}
