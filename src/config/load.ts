/**
 * Loads and validates the configuration once, at start-up. Every error names the option and where its value
 * came from, so an operator can fix it without reading code.
 */
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { createRequire } from 'node:module';
import { StartupError } from '../errors.js';
import { type Config, type OptionName, type OptionSpec, OPTIONS, SECRET_ENV, envName } from './defaults.js';
import { OWASP_ARGON2ID, meetsOwaspFloor } from '../session/hash-policy.js';

export interface ConfigSources {
  /** Path of a JSON or YAML config file. */
  file?: string | undefined;
  /** Environment (normally process.env). */
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags: the highest precedence. */
  overrides?: Partial<Record<OptionName, string | number | boolean>>;
}

type Raw = { value: unknown; source: string };

function fail(message: string): never {
  throw new StartupError('config_invalid', message);
}

function isOption(name: string): name is OptionName {
  return Object.hasOwn(OPTIONS, name);
}

/** Flattens nested objects to dotted keys: {server: {address: x}} -> {'server.address': x}. */
function flatten(obj: Record<string, unknown>, prefix: string, out: Map<string, unknown>): void {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && !isOption(key)) {
      flatten(v as Record<string, unknown>, key, out);
    } else {
      out.set(key, v);
    }
  }
}

function readConfigFile(path: string): Map<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    fail(`config file ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let parsed: unknown;
  const ext = extname(path).toLowerCase();
  try {
    if (ext === '.json') parsed = JSON.parse(text);
    // Loaded only for a YAML file: a command without one (most `sts admin` calls) starts without the parser.
    else if (ext === '.yaml' || ext === '.yml') parsed = (createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse(text);
    else fail(`config file ${path}: unknown format; use a .json, .yaml or .yml file`);
  } catch (err) {
    if (err instanceof StartupError) throw err;
    fail(`config file ${path}: not valid ${ext === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || parsed === undefined) return new Map();
  if (typeof parsed !== 'object' || Array.isArray(parsed)) fail(`config file ${path}: the top level must be an object`);
  const out = new Map<string, unknown>();
  flatten(parsed as Record<string, unknown>, '', out);
  return out;
}

function coerce(name: OptionName, spec: OptionSpec, raw: Raw): string | number | boolean {
  const { value, source } = raw;
  const where = `${name} (from ${source})`;
  switch (spec.type) {
    case 'string':
      if (typeof value !== 'string') fail(`${where}: expected a string`);
      return value;
    case 'int': {
      const n = typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n)) fail(`${where}: expected a whole number${spec.unit ? ` of ${spec.unit}` : ''}`);
      if (n < spec.min || n > spec.max) fail(`${where}: ${n} is out of range ${spec.min}..${spec.max}${spec.unit ? ` ${spec.unit}` : ''}`);
      return n;
    }
    case 'bool':
      if (typeof value === 'boolean') return value;
      if (value === 'true' || value === '1') return true;
      if (value === 'false' || value === '0') return false;
      return fail(`${where}: expected true or false`);
    case 'enum':
      if (typeof value !== 'string' || !spec.values.includes(value)) fail(`${where}: expected one of ${spec.values.join(', ')}`);
      return value;
  }
}

/** Splits "host:port" and checks the port. Exported for the server, which listens on it. */
export function parseAddress(address: string, option = 'server.address'): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(address);
  if (!m) fail(`${option}: "${address}" is not host:port (for example 127.0.0.1:50051)`);
  const port = Number(m[2]);
  if (port > 65535) fail(`${option}: port ${port} is out of range 0..65535`);
  return { host: m[1]!, port };
}

export function loadConfig(sources: ConfigSources = {}): Config {
  return loadConfigWithSources(sources).config;
}

/**
 * The configuration and, for each option, where its value came from: `default`, `default (prod profile)`,
 * `config file PATH`, `environment STS_...` or `command line` (`sts config --sources`).
 */
export function loadConfigWithSources(sources: ConfigSources = {}): { config: Config; sources: Record<OptionName, string> } {
  const env = sources.env ?? process.env;
  const raws = new Map<OptionName, Raw>();

  const file = sources.file ?? env.STS_CONFIG;
  if (file) {
    for (const [key, value] of readConfigFile(file)) {
      if (!isOption(key)) fail(`config file ${file}: unknown option "${key}" (see \`sts config\` for the list)`);
      raws.set(key, { value, source: `config file ${file}` });
    }
  }

  const byEnv = new Map(Object.keys(OPTIONS).map((name) => [envName(name), name as OptionName]));
  for (const [key, value] of Object.entries(env)) {
    if (!key.startsWith('STS_') || value === undefined) continue;
    const name = byEnv.get(key);
    if (name) raws.set(name, { value, source: `environment ${key}` });
    else if (!Object.hasOwn(SECRET_ENV, key)) fail(`environment ${key}: unknown STS variable (see \`sts config\` for the list)`);
  }

  for (const [name, value] of Object.entries(sources.overrides ?? {})) {
    if (!isOption(name)) fail(`unknown option "${name}"`);
    if (value !== undefined) raws.set(name, { value, source: 'command line' });
  }

  const profileRaw = raws.get('profile');
  const profile = profileRaw ? coerce('profile', OPTIONS.profile, profileRaw) : OPTIONS.profile.default;
  const values: Record<string, string | number | boolean> = {};
  const origin: Record<string, string> = {};
  for (const [name, spec] of Object.entries(OPTIONS) as [OptionName, OptionSpec][]) {
    const raw = raws.get(name);
    if (raw) {
      values[name] = coerce(name, spec, raw);
      origin[name] = raw.source;
    } else if (profile === 'prod' && spec.prod !== undefined) {
      values[name] = spec.prod;
      origin[name] = 'default (prod profile)';
    } else {
      values[name] = spec.default;
      origin[name] = 'default';
    }
  }
  const config = values as unknown as Config;
  validateTogether(config, env);
  return { config, sources: origin as Record<OptionName, string> };
}

/** Rules that involve more than one option. */
function validateTogether(c: Config, env: NodeJS.ProcessEnv): void {
  parseAddress(c['server.address']);
  if (!c.dataDir) fail('dataDir: must not be empty');
  if (Boolean(c['tls.certFile']) !== Boolean(c['tls.keyFile'])) fail('tls.certFile and tls.keyFile: give both or neither');
  if (c['tls.clientCaFile'] && !c['tls.certFile']) fail('tls.clientCaFile: mTLS needs tls.certFile and tls.keyFile as well');
  if (c['tls.requireClientCert'] && !c['tls.clientCaFile']) fail('tls.requireClientCert: needs tls.clientCaFile');
  if (c['server.keepaliveTimeoutMs'] >= c['server.keepaliveTimeMs'] * 10) {
    fail('server.keepaliveTimeoutMs: must be less than ten times server.keepaliveTimeMs');
  }
  for (const kind of ['encryption', 'signing'] as const) {
    // A client that fetched the JWKS just before a key was staged must refetch before that key is used.
    if (c[`pop.${kind}.stagingLeadMs`] < c['pop.jwksMaxAgeMs']) {
      fail(`pop.${kind}.stagingLeadMs: must be at least pop.jwksMaxAgeMs (${c['pop.jwksMaxAgeMs']} ms), so JWKS caches learn a key before it is used`);
    }
  }
  // Vault identity pitfall (vault#11441): tokens outliving the verification window fail after rotation.
  if (c['pop.signing.legacyWindowMs'] < c['session.userTokenMaxLifetimeMs']) {
    fail(`pop.signing.legacyWindowMs: must be at least session.userTokenMaxLifetimeMs (${c['session.userTokenMaxLifetimeMs']} ms), the longest token lifetime, so every token stays verifiable until it expires`);
  }
  if (c['metrics.address']) parseAddress(c['metrics.address'], 'metrics.address');
  if (c['cluster.enabled']) {
    const members = c['cluster.members'].split(',').map((m) => m.trim());
    if (members.length === 0 || members.some((m) => m === '')) fail('cluster.members: give at least one host:port');
    for (const m of members) parseAddress(m, 'cluster.members');
  }
  // User secrets are re-wrapped by the maintenance after a new secret key becomes primary; the old key must
  // outlive at least two maintenance passes, or secrets still wrapped under it become unreadable.
  if (c['pop.secret.legacyWindowMs'] < 2 * c['pop.rotationCheckIntervalMs']) {
    fail(`pop.secret.legacyWindowMs: must be at least twice pop.rotationCheckIntervalMs (${2 * c['pop.rotationCheckIntervalMs']} ms), so every user secret is re-wrapped before the old key is destroyed`);
  }
  if (c['session.userTokenIdleTimeoutMs'] > c['session.userTokenMaxLifetimeMs']) {
    fail('session.userTokenIdleTimeoutMs: must not exceed session.userTokenMaxLifetimeMs');
  }
  if (c['session.applicationTokenMaxLifetimeMs'] < c['session.applicationTokenLifetimeMs']) {
    fail(`session.applicationTokenMaxLifetimeMs: must be at least session.applicationTokenLifetimeMs (${c['session.applicationTokenLifetimeMs']} ms), the lifetime every new application token gets`);
  }
  if (!meetsOwaspFloor({ memoryKiB: c['session.passwordHash.memoryKib'], timeCost: c['session.passwordHash.timeCost'] })) {
    fail(
      `session.passwordHash.memoryKib and session.passwordHash.timeCost: m=${c['session.passwordHash.memoryKib']} KiB, t=${c['session.passwordHash.timeCost']} is below OWASP's Argon2id floor; use at least the memory and passes of one of ${OWASP_ARGON2ID.map((f) => `m=${f.memoryKiB} t=${f.timeCost}`).join(', ')}`,
    );
  }
  if (c['session.throttleFreeFailures'] >= c['session.throttleMaxFailures']) {
    fail('session.throttleFreeFailures: must be less than session.throttleMaxFailures');
  }
  if (c.profile === 'prod') {
    // The prod profile refuses every default that is only acceptable on a developer's machine.
    if (!c['masterKey.file'] && !env.STS_MASTER_KEY) {
      fail('masterKey.file: the prod profile needs a master key (masterKey.file or STS_MASTER_KEY); it never generates one');
    }
    if (!c['tls.certFile']) fail('tls.certFile: the prod profile refuses plaintext gRPC; configure TLS');
  }
  validateHttp(c);
}

/** The HTTP listener's options (src/http): addresses, origins, and what the prod profile refuses. */
function validateHttp(c: Config): void {
  if (c['http.address']) parseAddress(c['http.address'], 'http.address');
  if (c['http.publicUrl']) {
    let url: URL | undefined;
    try {
      url = new URL(c['http.publicUrl']);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.search || url.hash || url.username || url.password) {
      fail(`http.publicUrl: "${c['http.publicUrl']}" is not an http(s) URL without query, fragment or credentials (for example https://sts.example.com)`);
    }
  }
  const origins = corsOrigins(c['http.corsOrigins']);
  for (const o of origins) {
    if (o === '*') continue;
    let origin: string | undefined;
    try {
      origin = new URL(o).origin;
    } catch {
      origin = undefined;
    }
    // An origin is exactly scheme://host[:port] (RFC 6454 section 6.2): what a browser sends in Origin.
    if (origin !== o || !/^https?:$/.test(new URL(o).protocol)) fail(`http.corsOrigins: "${o}" is not an origin; give scheme://host[:port] in lower case, without path or trailing slash (for example https://app.example.com)`);
  }
  if (c.profile === 'prod' && c['http.address']) {
    if (origins.includes('*')) fail('http.corsOrigins: the prod profile refuses "*"; list the origins whose pages may call STS');
    if (!c['http.publicUrl'].startsWith('https://')) fail('http.publicUrl: the prod profile needs the https URL clients reach the HTTP listener at (it names the jwks_uri)');
  }
  if (c.profile === 'prod' && c['http.testPage']) fail('http.testPage: the prod profile refuses the browser test page; it is for dev and test deployments');
}

/** http.corsOrigins as a list (entries trimmed, empty ones dropped). */
export function corsOrigins(value: string): string[] {
  return value
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o !== '');
}
