/**
 * loadConfig(): defaults, config files (JSON and YAML, nested and dotted keys), STS_* environment variables,
 * precedence (file < environment < command line) and every start-up error, which must be a StartupError
 * 'config_invalid' (exit 78) whose message names the option and where its value came from.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OPTIONS, SECRET_ENV, envName, optionsMarkdown, type OptionName, type OptionSpec } from '../src/config/defaults.js';
import { type ConfigSources, loadConfig, parseAddress } from '../src/config/load.js';
import { StartupError } from '../src/errors.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sts-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Runs loadConfig expecting a config_invalid StartupError whose message contains every needle. */
function configError(sources: ConfigSources, ...needles: string[]): StartupError {
  let caught: unknown;
  try {
    loadConfig({ env: {}, ...sources });
  } catch (err) {
    caught = err;
  }
  expect(caught, 'loadConfig should have failed').toBeInstanceOf(StartupError);
  const err = caught as StartupError;
  expect(err.code).toBe('config_invalid');
  expect(err.exitCode).toBe(78);
  for (const n of needles) expect(err.message).toContain(n);
  // One line: the CLI prints it as is.
  expect(err.message).not.toContain('\n');
  return err;
}

describe('defaults', () => {
  it('without any source every option has its documented default', () => {
    const c = loadConfig({ env: {} });
    expect(c.profile).toBe('dev');
    expect(c['server.address']).toBe('127.0.0.1:50051');
    expect(c['server.maxMessageBytes']).toBe(4 * 1024 * 1024);
    expect(c['server.keepaliveTimeMs']).toBe(60_000);
    expect(c['server.keepaliveTimeoutMs']).toBe(20_000);
    expect(c['server.maxConnectionAgeMs']).toBe(0);
    expect(c['server.shutdownGraceMs']).toBe(10_000);
    expect(c['tls.certFile']).toBe('');
    expect(c['tls.requireClientCert']).toBe(false);
    expect(c.dataDir).toBe('./data');
    expect(c['masterKey.file']).toBe('');
    expect(c['log.level']).toBe('info');
    for (const [name, spec] of Object.entries(OPTIONS) as [OptionName, OptionSpec][]) expect(c[name], name).toBe(spec.default);
    expect(Object.keys(c).sort()).toEqual(Object.keys(OPTIONS).sort());
  });

  it('reads process.env when no environment is given', () => {
    const before = process.env.STS_LOG_LEVEL;
    process.env.STS_LOG_LEVEL = 'error';
    try {
      expect(loadConfig()['log.level']).toBe('error');
    } finally {
      if (before === undefined) delete process.env.STS_LOG_LEVEL;
      else process.env.STS_LOG_LEVEL = before;
    }
  });
});

describe('config files', () => {
  it('reads JSON with nested objects and dotted keys, keeping value types', () => {
    const path = file(
      'sts.json',
      JSON.stringify({
        server: { address: '0.0.0.0:6000', maxMessageBytes: 8192 },
        'server.shutdownGraceMs': 250,
        tls: { requireClientCert: false },
        log: { level: 'debug' },
        dataDir: '/var/lib/sts',
      }),
    );
    const c = loadConfig({ file: path, env: {} });
    expect(c['server.address']).toBe('0.0.0.0:6000');
    expect(c['server.maxMessageBytes']).toBe(8192);
    expect(c['server.shutdownGraceMs']).toBe(250);
    expect(c['tls.requireClientCert']).toBe(false);
    expect(c['log.level']).toBe('debug');
    expect(c.dataDir).toBe('/var/lib/sts');
    // Untouched options keep their defaults.
    expect(c['server.keepaliveTimeMs']).toBe(60_000);
  });

  it('reads YAML (.yaml and .yml) with nested objects and dotted keys', () => {
    const yaml = [
      'server:',
      '  address: "[::1]:7000"',
      '  keepaliveTimeMs: 30000',
      'server.maxConnectionAgeMs: 3600000',
      'log:',
      '  level: warn',
      'masterKey.file: /etc/sts/master.key',
      '',
    ].join('\n');
    for (const name of ['sts.yaml', 'sts.yml']) {
      const c = loadConfig({ file: file(name, yaml), env: {} });
      expect(c['server.address']).toBe('[::1]:7000');
      expect(c['server.keepaliveTimeMs']).toBe(30_000);
      expect(c['server.maxConnectionAgeMs']).toBe(3_600_000);
      expect(c['log.level']).toBe('warn');
      expect(c['masterKey.file']).toBe('/etc/sts/master.key');
    }
  });

  it('an empty YAML file means all defaults', () => {
    expect(loadConfig({ file: file('empty.yaml', ''), env: {} })['server.address']).toBe('127.0.0.1:50051');
  });

  it('STS_CONFIG names the file when no file is given', () => {
    const path = file('via-env.json', JSON.stringify({ log: { level: 'error' } }));
    expect(loadConfig({ env: { STS_CONFIG: path } })['log.level']).toBe('error');
  });
});

describe('environment', () => {
  it('envName maps dotted camelCase names to STS_ upper snake case', () => {
    expect(envName('server.maxMessageBytes')).toBe('STS_SERVER_MAX_MESSAGE_BYTES');
    expect(envName('log.level')).toBe('STS_LOG_LEVEL');
    expect(envName('dataDir')).toBe('STS_DATA_DIR');
    expect(envName('masterKey.file')).toBe('STS_MASTER_KEY_FILE');
    expect(envName('tls.clientCaFile')).toBe('STS_TLS_CLIENT_CA_FILE');
    expect(envName('tls.requireClientCert')).toBe('STS_TLS_REQUIRE_CLIENT_CERT');
    expect(envName('server.keepaliveTimeoutMs')).toBe('STS_SERVER_KEEPALIVE_TIMEOUT_MS');
    expect(envName('profile')).toBe('STS_PROFILE');
  });

  it('every option has its own environment variable, distinct from the secret ones', () => {
    const names = Object.keys(OPTIONS).map(envName);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) {
      expect(n).toMatch(/^STS_[A-Z0-9_]+$/);
      expect(Object.hasOwn(SECRET_ENV, n), n).toBe(false);
    }
  });

  it('reads STS_* variables and converts them to the option types', () => {
    const c = loadConfig({
      env: {
        STS_SERVER_MAX_MESSAGE_BYTES: '2048',
        STS_LOG_LEVEL: 'debug',
        STS_TLS_REQUIRE_CLIENT_CERT: 'false',
        STS_DATA_DIR: '/srv/sts',
        STS_SERVER_ADDRESS: '0.0.0.0:0',
        PATH: '/usr/bin',
      },
    });
    expect(c['server.maxMessageBytes']).toBe(2048);
    expect(c['log.level']).toBe('debug');
    expect(c['tls.requireClientCert']).toBe(false);
    expect(c.dataDir).toBe('/srv/sts');
    expect(c['server.address']).toBe('0.0.0.0:0');
  });

  it('accepts 1/0 and true/false for booleans', () => {
    const base = { STS_TLS_CERT_FILE: '/c.pem', STS_TLS_KEY_FILE: '/k.pem', STS_TLS_CLIENT_CA_FILE: '/ca.pem' };
    expect(loadConfig({ env: { ...base, STS_TLS_REQUIRE_CLIENT_CERT: '1' } })['tls.requireClientCert']).toBe(true);
    expect(loadConfig({ env: { ...base, STS_TLS_REQUIRE_CLIENT_CERT: 'true' } })['tls.requireClientCert']).toBe(true);
    expect(loadConfig({ env: { ...base, STS_TLS_REQUIRE_CLIENT_CERT: '0' } })['tls.requireClientCert']).toBe(false);
  });

  it('STS_MASTER_KEY and STS_CONFIG are not unknown variables', () => {
    const path = file('empty.json', '{}');
    expect(() => loadConfig({ env: { STS_MASTER_KEY: 'a:x', STS_CONFIG: path } })).not.toThrow();
  });
});

describe('precedence', () => {
  it('config file < environment < command line, option by option', () => {
    const path = file('sts.json', JSON.stringify({ log: { level: 'debug' }, server: { maxMessageBytes: 2048, shutdownGraceMs: 111 } }));
    const fromFile = loadConfig({ file: path, env: {} });
    expect(fromFile['log.level']).toBe('debug');
    expect(fromFile['server.maxMessageBytes']).toBe(2048);

    const env = { STS_LOG_LEVEL: 'warn', STS_SERVER_MAX_MESSAGE_BYTES: '4096' };
    const withEnv = loadConfig({ file: path, env });
    expect(withEnv['log.level']).toBe('warn');
    expect(withEnv['server.maxMessageBytes']).toBe(4096);
    expect(withEnv['server.shutdownGraceMs']).toBe(111);

    const withOverrides = loadConfig({ file: path, env, overrides: { 'log.level': 'error' } });
    expect(withOverrides['log.level']).toBe('error');
    expect(withOverrides['server.maxMessageBytes']).toBe(4096);
    expect(withOverrides['server.shutdownGraceMs']).toBe(111);
  });

  it('an explicit file wins over STS_CONFIG', () => {
    const a = file('a.json', JSON.stringify({ log: { level: 'warn' } }));
    const b = file('b.json', JSON.stringify({ log: { level: 'error' } }));
    expect(loadConfig({ file: a, env: { STS_CONFIG: b } })['log.level']).toBe('warn');
  });

  it('overrides accept typed values', () => {
    const c = loadConfig({ env: {}, overrides: { 'server.maxMessageBytes': 1024, 'server.address': '127.0.0.1:0' } });
    expect(c['server.maxMessageBytes']).toBe(1024);
    expect(c['server.address']).toBe('127.0.0.1:0');
  });
});

describe('errors name the option and its source', () => {
  it('unknown key in a config file (nested and dotted)', () => {
    const nested = file('nested.json', JSON.stringify({ server: { adress: '127.0.0.1:1' } }));
    configError({ file: nested }, 'server.adress', nested);
    const dotted = file('dotted.yaml', 'log.levle: debug\n');
    configError({ file: dotted }, 'log.levle', dotted);
  });

  it('unknown STS_ environment variable', () => {
    configError({ env: { STS_LOG_LEVLE: 'debug' } }, 'STS_LOG_LEVLE');
  });

  it('unknown command-line option', () => {
    configError({ overrides: { 'no.such': 'x' } as unknown as ConfigSources['overrides'] }, 'no.such');
  });

  it('port out of range', () => {
    configError({ env: { STS_SERVER_ADDRESS: '127.0.0.1:70000' } }, 'server.address', '70000');
    configError({ overrides: { 'server.address': '127.0.0.1:99999' } }, 'server.address', '99999');
  });

  it('Argon2id below OWASP\'s floor refuses to start, naming both options; each of OWASP\'s settings is accepted', () => {
    configError({ env: { STS_SESSION_PASSWORD_HASH_MEMORY_KIB: '12288', STS_SESSION_PASSWORD_HASH_TIME_COST: '2' } }, 'session.passwordHash.memoryKib', 'session.passwordHash.timeCost', 'm=12288', 'm=19456 t=2');
    configError({ overrides: { 'session.passwordHash.timeCost': 1 } }, 'session.passwordHash', 'floor');
    configError({ overrides: { 'session.passwordHash.memoryKib': 4096 } }, 'session.passwordHash.memoryKib');
    configError({ overrides: { 'session.passwordHash.memoryKib': 262144 } }, 'session.passwordHash.memoryKib');
    for (const [m, t] of [[47104, 1], [19456, 2], [12288, 3], [9216, 4], [7168, 5], [131072, 10]] as const) {
      const c = loadConfig({ env: {}, overrides: { 'session.passwordHash.memoryKib': m, 'session.passwordHash.timeCost': t } });
      expect([c['session.passwordHash.memoryKib'], c['session.passwordHash.timeCost'], c['session.passwordHash.parallelism']]).toEqual([m, t, 1]);
    }
  });

  it('address without a port', () => {
    configError({ env: { STS_SERVER_ADDRESS: '127.0.0.1' } }, 'server.address', '127.0.0.1');
    configError({ env: { STS_SERVER_ADDRESS: 'localhost:' } }, 'server.address');
  });

  it('parseAddress splits host and port', () => {
    expect(parseAddress('127.0.0.1:50051')).toEqual({ host: '127.0.0.1', port: 50051 });
    expect(parseAddress('[::1]:0')).toEqual({ host: '[::1]', port: 0 });
  });

  it('integer out of range, from the environment and from a file', () => {
    configError({ env: { STS_SERVER_MAX_MESSAGE_BYTES: '10' } }, 'server.maxMessageBytes', 'STS_SERVER_MAX_MESSAGE_BYTES', 'out of range');
    const path = file('big.json', JSON.stringify({ server: { maxMessageBytes: 1024 * 1024 * 1024 } }));
    configError({ file: path }, 'server.maxMessageBytes', path, 'out of range');
    configError({ env: { STS_SERVER_SHUTDOWN_GRACE_MS: '-1' } }, 'server.shutdownGraceMs', 'out of range');
  });

  it('non-integer values', () => {
    configError({ env: { STS_SERVER_MAX_MESSAGE_BYTES: '4k' } }, 'server.maxMessageBytes', 'whole number');
    configError({ env: { STS_SERVER_MAX_MESSAGE_BYTES: '2048.5' } }, 'server.maxMessageBytes', 'whole number');
    configError({ env: { STS_SERVER_MAX_MESSAGE_BYTES: '' } }, 'server.maxMessageBytes', 'whole number');
    const path = file('float.json', JSON.stringify({ 'server.keepaliveTimeMs': 1500.5 }));
    configError({ file: path }, 'server.keepaliveTimeMs', path, 'whole number');
  });

  it('bad enum value', () => {
    configError({ env: { STS_LOG_LEVEL: 'verbose' } }, 'log.level', 'STS_LOG_LEVEL', 'debug, info, warn, error');
    configError({ overrides: { profile: 'staging' } }, 'profile', 'dev, prod');
  });

  it('bad boolean', () => {
    configError({ env: { STS_TLS_REQUIRE_CLIENT_CERT: 'yes' } }, 'tls.requireClientCert', 'true or false');
  });

  it('wrong type in a file', () => {
    const path = file('types.json', JSON.stringify({ server: { address: 50051 } }));
    configError({ file: path }, 'server.address', 'expected a string');
  });

  it('certificate without key, and key without certificate', () => {
    configError({ env: { STS_TLS_CERT_FILE: '/c.pem' } }, 'tls.keyFile');
    configError({ env: { STS_TLS_KEY_FILE: '/k.pem' } }, 'tls.certFile');
  });

  it('mTLS CA without a server certificate', () => {
    configError({ env: { STS_TLS_CLIENT_CA_FILE: '/ca.pem' } }, 'tls.clientCaFile', 'tls.certFile');
  });

  it('requireClientCert without a client CA', () => {
    configError({ env: { STS_TLS_CERT_FILE: '/c.pem', STS_TLS_KEY_FILE: '/k.pem', STS_TLS_REQUIRE_CLIENT_CERT: 'true' } }, 'tls.requireClientCert', 'tls.clientCaFile');
  });

  it('empty dataDir', () => {
    configError({ env: { STS_DATA_DIR: '' } }, 'dataDir');
  });

  it('keepalive timeout too long for the keepalive interval', () => {
    configError({ env: { STS_SERVER_KEEPALIVE_TIME_MS: '1000', STS_SERVER_KEEPALIVE_TIMEOUT_MS: '10000' } }, 'server.keepaliveTimeoutMs');
  });

  it('application token maximum lifetime shorter than its lifetime', () => {
    configError(
      { env: { STS_SESSION_APPLICATION_TOKEN_LIFETIME_MS: String(2 * 3_600_000), STS_SESSION_APPLICATION_TOKEN_MAX_LIFETIME_MS: String(3_600_000) } },
      'session.applicationTokenMaxLifetimeMs',
      'session.applicationTokenLifetimeMs',
    );
    // A lifetime beyond the default cap needs a cap to match; equal is fine.
    configError({ overrides: { 'session.applicationTokenLifetimeMs': 2 * 86_400_000 } }, 'session.applicationTokenMaxLifetimeMs');
    const c = loadConfig({ env: {}, overrides: { 'session.applicationTokenLifetimeMs': 3_600_000, 'session.applicationTokenMaxLifetimeMs': 3_600_000 } });
    expect(c['session.applicationTokenMaxLifetimeMs']).toBe(3_600_000);
  });

  it('prod profile without a master key', () => {
    const tls = { STS_TLS_CERT_FILE: '/c.pem', STS_TLS_KEY_FILE: '/k.pem' };
    configError({ env: { ...tls, STS_PROFILE: 'prod' } }, 'masterKey.file', 'STS_MASTER_KEY');
    // Either source of a master key satisfies it.
    expect(loadConfig({ env: { ...tls, STS_PROFILE: 'prod', STS_MASTER_KEY: 'a:x' } }).profile).toBe('prod');
    expect(loadConfig({ env: { ...tls, STS_PROFILE: 'prod', STS_MASTER_KEY_FILE: '/m.key' } }).profile).toBe('prod');
  });

  it('prod profile without TLS', () => {
    configError({ env: { STS_MASTER_KEY: 'a:x' }, overrides: { profile: 'prod' } }, 'tls.certFile', 'prod');
  });

  it('missing config file', () => {
    const path = join(dir, 'missing.json');
    configError({ file: path }, path, 'ENOENT');
  });

  it('unreadable config file', () => {
    // A directory named like a config file: readFileSync fails with EISDIR, also for root.
    const asDir = join(dir, 'dir.json');
    mkdirSync(asDir);
    configError({ file: asDir }, asDir, 'cannot read', 'EISDIR');
  });

  it('malformed JSON and YAML', () => {
    const json = file('bad.json', '{"server": {"address": ');
    configError({ file: json }, json, 'not valid JSON');
    const yaml = file('bad.yaml', 'server:\n  address: [unclosed\n');
    configError({ file: yaml }, yaml, 'not valid YAML');
  });

  it('top level that is not an object, and unknown file formats', () => {
    const arr = file('list.json', '[1, 2]');
    configError({ file: arr }, arr, 'top level');
    const toml = file('sts.toml', 'a = 1\n');
    configError({ file: toml }, toml, 'unknown format');
  });
});

describe('key lifetime rules', () => {
  it('refuses settings under which keys could be destroyed while still needed', () => {
    configError({ env: {}, overrides: { 'pop.secret.legacyWindowMs': 60_000, 'pop.rotationCheckIntervalMs': 60_000 } }, 'pop.secret.legacyWindowMs', 'pop.rotationCheckIntervalMs');
    configError({ env: {}, overrides: { 'pop.signing.legacyWindowMs': 60_000 } }, 'pop.signing.legacyWindowMs', 'session.userTokenMaxLifetimeMs');
    configError({ env: {}, overrides: { 'pop.encryption.stagingLeadMs': 1000, 'pop.jwksMaxAgeMs': 60_000 } }, 'pop.encryption.stagingLeadMs', 'pop.jwksMaxAgeMs');
    expect(loadConfig({ env: {}, overrides: { 'pop.secret.legacyWindowMs': 120_000, 'pop.rotationCheckIntervalMs': 60_000 } })['pop.secret.legacyWindowMs']).toBe(120_000);
  });
});

describe('documentation', () => {
  it('optionsMarkdown has one row per option with its environment variable', () => {
    const lines = optionsMarkdown().split('\n');
    expect(lines).toHaveLength(2 + Object.keys(OPTIONS).length);
    for (const name of Object.keys(OPTIONS)) {
      expect(lines.some((l) => l.startsWith(`| \`${name}\` | \`${envName(name)}\` |`)), name).toBe(true);
    }
  });

  it('README.md contains the exact output of optionsMarkdown()', () => {
    const readme = join(import.meta.dirname, '..', 'README.md');
    expect(existsSync(readme), 'README.md must exist and hold the configuration table (`sts config --markdown`)').toBe(true);
    expect(readFileSync(readme, 'utf8')).toContain(optionsMarkdown());
  });
});

