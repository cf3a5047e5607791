/**
 * `sts admin ...`: operator commands. Most talk to a running server over gRPC with an admin key (the same
 * RPCs any client can use, so the CLI adds no back door); directory export/import, backups and key material
 * helpers work on files.
 *
 * Connection: --address (default: server.address of --config / STS_* / the default), --token (default:
 * STS_ADMIN_TOKEN, else <dataDir>/admin.token written by the dev profile); TLS when the server's config has
 * tls.certFile or --ca is given: trusted roots from --ca, else the server's own tls.certFile (a self-signed
 * certificate, or a chain that ends with its CA); --cert/--key for a client certificate (mTLS).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type CallOptions, type ChannelCredentials, type Client, Metadata, type ServiceError, credentials, status } from '@grpc/grpc-js';
import { loadConfigWithSources } from '../config/load.js';
import { KeyInfo, KeyKind, PopServiceClient } from '../gen/sts/v1/pop.js';
import { SecretServiceClient } from '../gen/sts/v1/secret.js';
import { Application, SessionServiceClient, User } from '../gen/sts/v1/session.js';
import { AdminConnectError, UsageError, type Values, need, str } from './args.js';
import type { AdminCommand } from './commands.js';

function out(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

/** The server's config as `--config`, STS_* and `--data-dir` give it, with where each value came from. */
function serverConfig(values: Values) {
  const dataDir = str(values, 'data-dir');
  return loadConfigWithSources({ file: str(values, 'config'), overrides: dataDir ? { dataDir } : {} });
}


interface Connection {
  session: SessionServiceClient;
  pop: PopServiceClient;
  secret: SecretServiceClient;
  token: string;
  /** "127.0.0.1:50051 (from --address)", for messages. */
  target: string;
  close(): void;
}

function readOption(path: string, option: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new UsageError(`${option} ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Where to reach the server: --address, else the config's server.address (a wildcard host means this host). */
function targetOf(values: Values, config: ReturnType<typeof serverConfig>): { address: string; source: string } {
  const given = str(values, 'address');
  if (given !== undefined) return { address: given, source: '--address' };
  const address = config.config['server.address'];
  const source = `server.address from ${config.sources['server.address']}`;
  if (/:0$/.test(address)) throw new UsageError(`${source} is ${address}: port 0 is picked at start; pass --address HOST:PORT with the port the server printed`);
  return { address: address.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:'), source };
}

/** Address and channel credentials of the server: --address/--config, TLS from --ca/--cert/--key or the config. */
function channel(values: Values, config: ReturnType<typeof serverConfig>): { address: string; source: string; creds: ChannelCredentials } {
  const { address, source } = targetOf(values, config);
  const ca = str(values, 'ca');
  const tlsCert = config.config['tls.certFile'];
  const cert = str(values, 'cert');
  const key = str(values, 'key');
  if (Boolean(cert) !== Boolean(key)) throw new UsageError('give both --cert and --key (a client certificate for mTLS), or neither');
  const creds =
    ca || tlsCert
      ? credentials.createSsl(ca ? readOption(ca, '--ca') : readOption(tlsCert, 'tls.certFile'), key ? readOption(key, '--key') : null, cert ? readOption(cert, '--cert') : null)
      : credentials.createInsecure();
  return { address, source, creds };
}

/** What grpc-js says about a failed connection, without its resolver notes: the socket error, where there is one. */
function reason(details: string): string {
  return /Error: ((?:connect|getaddrinfo) [A-Z]+ \S+?)\.?(?:\s|$)/.exec(details)?.[1] ?? details.replace(/\s*Resolution note:.*$/s, '');
}

function connect(values: Values): Connection {
  const config = serverConfig(values);
  const { address, source, creds } = channel(values, config);
  let token = str(values, 'token') ?? process.env.STS_ADMIN_TOKEN;
  if (!token) {
    const path = join(config.config.dataDir, 'admin.token');
    try {
      token = readFileSync(path, 'utf8').trim();
    } catch {
      throw new UsageError(`no admin key: pass --token, set STS_ADMIN_TOKEN, or run in the data directory of a dev server (${path})`);
    }
  }
  const clients: Client[] = [];
  const make = <T extends Client>(C: new (a: string, c: typeof creds) => T): T => {
    const c = new C(address, creds);
    clients.push(c);
    return c;
  };
  return {
    session: make(SessionServiceClient),
    pop: make(PopServiceClient),
    secret: make(SecretServiceClient),
    token,
    target: `${address} (${source})`,
    close: () => clients.forEach((c) => c.close()),
  };
}

type Unary<Req, Res> = (req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void) => unknown;

/**
 * One admin RPC. A server that cannot be reached fails at once (grpc-js does not wait for a connection unless
 * asked), and the error names the address tried and where it came from.
 */
function rpc<Req, Res>(c: Connection, client: Client, method: Unary<Req, Res>, req: Req): Promise<Res> {
  const md = new Metadata();
  md.set('authorization', `Bearer ${c.token}`);
  return new Promise((resolve, reject) =>
    method.call(client, req, md, { deadline: Date.now() + 30_000 }, (err, res) => {
      if (!err) return resolve(res);
      if (err.code === status.UNAVAILABLE || err.code === status.DEADLINE_EXCEEDED) {
        return reject(new AdminConnectError(`cannot reach STS at ${c.target}: ${reason(err.details)}`));
      }
      reject(err);
    }),
  );
}

const emptyApp = (id: string): Application => Application.fromPartial({ applicationId: id });
const emptyUser = (uid: string): User => User.fromPartial({ uid });

const KINDS: Record<string, KeyKind> = { encryption: KeyKind.KEY_KIND_ENCRYPTION, signing: KeyKind.KEY_KIND_SIGNING, secret: KeyKind.KEY_KIND_SECRET };

/** --jwks-uri URL or --jwks-file FILE (inline JWKS), exactly one. */
function jwksSource(values: Values): { $case: 'jwksUri'; value: string } | { $case: 'jwksJson'; value: string } {
  const uri = values['jwks-uri'] as string | undefined;
  const file = values['jwks-file'] as string | undefined;
  if (Boolean(uri) === Boolean(file)) throw new UsageError('give exactly one of --jwks-uri and --jwks-file');
  return uri ? { $case: 'jwksUri', value: uri } : { $case: 'jwksJson', value: readFileSync(file!, 'utf8') };
}

/**
 * The configured master key ids, primary first (never the keys), from where the server finds them; undefined
 * when there is none to read here. Never generates one (as a dev server's first start does).
 */
async function masterKeyIds(config: ReturnType<typeof serverConfig>['config']): Promise<string[] | undefined> {
  const { loadMasterKeyRing } = await import('../crypto/master-key.js');
  const file = config['masterKey.file'];
  const env = process.env.STS_MASTER_KEY;
  if (!file && !env && !existsSync(join(config.dataDir, 'master.key'))) return undefined;
  try {
    return loadMasterKeyRing({ file, env, dataDir: config.dataDir, profile: config.profile }).ids;
  } catch {
    return undefined;
  }
}

/** Runs one `sts admin` command (already parsed against ADMIN_COMMANDS). */
export async function admin(command: AdminCommand, values: Values, args: string[]): Promise<void> {
  const cmd = command.name;
  const action = command.path[2];

  // Commands that need no server; what they use is loaded only for them, so server commands start fast.
  switch (cmd) {
    case 'master-key generate': {
      const { formatMasterKeys, newMasterKey } = await import('../crypto/master-key.js');
      process.stdout.write(formatMasterKeys([newMasterKey()]));
      return;
    }
    case 'admin-key generate': {
      const { hashAdminKey, newAdminKey } = await import('../auth/caller.js');
      const key = newAdminKey();
      out({ adminKey: key, adminKeyFileLine: `admin-${Date.now().toString(36)}:${hashAdminKey(key)}` });
      return;
    }
    case 'backup': {
      const { backupDatabase } = await import('../store/sqlite/backup.js');
      return out(await backupDatabase(serverConfig(values).config.dataDir, need(values, 'out')));
    }
    case 'directory export': {
      const { openDatabase } = await import('../store/sqlite/database.js');
      const { exportDirectory } = await import('../session/directory-file.js');
      const db = openDatabase(serverConfig(values).config.dataDir);
      try {
        const json = JSON.stringify(exportDirectory(db), null, 2) + '\n';
        const file = str(values, 'out');
        if (file) writeFileSync(file, json, { mode: 0o600 });
        else process.stdout.write(json);
      } finally {
        db.close();
      }
      return;
    }
    case 'hashes': {
      const { config } = serverConfig(values);
      const { openDatabase } = await import('../store/sqlite/database.js');
      const { hashReport } = await import('../session/hash-report.js');
      if (!existsSync(join(config.dataDir, 'sts.db'))) throw new UsageError(`dataDir ${config.dataDir} holds no sts.db: give the server's --config or --data-dir`);
      const db = openDatabase(config.dataDir);
      try {
        const argon2 = { memoryKiB: config['session.passwordHash.memoryKib'], timeCost: config['session.passwordHash.timeCost'], parallelism: config['session.passwordHash.parallelism'] };
        out({ dataDir: config.dataDir, ...hashReport(db, argon2, await masterKeyIds(config)) });
      } finally {
        db.close();
      }
      return;
    }
    case 'directory import': {
      const { openDatabase } = await import('../store/sqlite/database.js');
      const { importDirectory } = await import('../session/directory-file.js');
      const { config } = serverConfig(values);
      const db = openDatabase(config.dataDir);
      try {
        const result = importDirectory(db, JSON.parse(readFileSync(args[0]!, 'utf8')) as unknown, (await masterKeyIds(config)) ?? []);
        if (result.secretsToReset.length > 0) {
          process.stderr.write(
            `warning: ${result.secretsToReset.length} application secret(s) are keyed by a master key this installation does not hold (${result.secretsToReset.slice(0, 20).join(', ')}): ` +
              'those applications cannot log on here until that master key is in this installation\'s ring (masterKey.file, STS_MASTER_KEY, or <dataDir>/master.key) or their secret is reset (sts admin apps reset-secret --id ID)\n',
          );
        }
        out(result);
      } finally {
        db.close();
      }
      return;
    }
    case 'health':
      return health(values);
  }

  const c = connect(values);
  try {
    switch (cmd) {
      case 'apps list':
        return out((await rpc(c, c.session, c.session.listApplications, {})).applications);
      case 'apps create': {
        const level = Number(values['min-level'] ?? 0);
        if (!Number.isInteger(level) || level < 0 || level > 4) throw new UsageError('--min-level must be 0 to 4');
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
            generateSecret: false,
          }),
        );
      case 'apps reset-secret':
        return out(await rpc(c, c.session, c.session.updateApplication, { application: emptyApp(need(values, 'id')), updateMask: [], applicationSecret: '', generateSecret: true }));
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
        if (!values['password-stdin']) throw new UsageError('users set-password reads the password from stdin: pass --password-stdin');
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
          if (kind === undefined) throw new UsageError(`--kind must be encryption, signing or secret, not "${k}"`);
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
        if (!Number.isInteger(skew) || skew < 0) throw new UsageError('--clock-skew-ms must be a whole number of milliseconds');
        if (!Number.isInteger(level) || level < 0 || level > 4) throw new UsageError('--security-level must be 0 to 4');
        // --app-audience shop=client-123 --app-audience shop=client-456 --app-audience crm=crm-client
        const perApp = new Map<string, string[]>();
        for (const pair of (values['app-audience'] as string[] | undefined) ?? []) {
          const eq = pair.indexOf('=');
          if (eq <= 0 || eq === pair.length - 1) throw new UsageError(`--app-audience must be APP=AUDIENCE, not "${pair}"`);
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
        if (Boolean(app) === Boolean(cert)) throw new UsageError('give exactly one of --app and --cert-sha256');
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

/**
 * `sts admin health [--wait SECONDS]`: what grpc.health.v1 answers for the whole server. With --wait it asks
 * again every 500 ms until SERVING (a start script's readiness check), and fails naming the address when the
 * time is up.
 */
async function health(values: Values): Promise<void> {
  const waitText = str(values, 'wait');
  const waitS = waitText === undefined ? 0 : Number(waitText);
  if (!Number.isFinite(waitS) || waitS < 0 || waitS > 3600) throw new UsageError('--wait must be a number of seconds, 0 to 3600');
  const { makeGenericClientConstructor } = await import('@grpc/grpc-js');
  const { service } = await import('grpc-health-check');
  const { address, source, creds } = channel(values, serverConfig(values));
  const Health = makeGenericClientConstructor(service, 'Health');
  const client = new Health(address, creds) as unknown as Client & {
    Check(req: { service: string }, md: Metadata, o: Partial<CallOptions>, cb: (err: ServiceError | null, res: { status: string }) => void): void;
  };
  const end = Date.now() + waitS * 1000;
  let last: string;
  try {
    for (;;) {
      const answer = await new Promise<{ status: string } | ServiceError>((resolve) =>
        client.Check({ service: '' }, new Metadata(), { deadline: Date.now() + 5000 }, (err, res) => resolve(err ?? res)),
      );
      if ('status' in answer && answer.status === 'SERVING') return out({ status: answer.status });
      last = 'status' in answer && typeof answer.status === 'string' ? answer.status : reason((answer as ServiceError).details);
      if (Date.now() + 500 > end) break;
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    client.close();
  }
  throw new AdminConnectError(`STS at ${address} (${source}) is not serving${waitS ? ` after ${waitS} s` : ''}: ${last}`);
}
