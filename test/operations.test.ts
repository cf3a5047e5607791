/**
 * What an operator sees of a running STS: Prometheus metrics through prom-client (process and runtime figures,
 * sts_build_info, every STS family), the start-up line with every listening address, the server.reflection
 * switch, `sts config --sources`, and the `sts` command line: --version, options anywhere on the line,
 * `sts admin --config` taking the server's address and TLS settings, and an unreachable address named at once.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, loadConfigWithSources } from '../src/config/load.js';
import { call } from './helpers/call.js';
import { ROOT, runSts } from './helpers/cli.js';
import { freePort } from './helpers/cluster.js';
import { type TestSts, startTestSts, tempDir } from './helpers/server.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const GRPCURL = join(ROOT, '.tools/bin/grpcurl');

const servers: TestSts[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop(true);
});

async function start(overrides: Parameters<typeof startTestSts>[0] = {}): Promise<TestSts> {
  const t = await startTestSts(overrides);
  servers.push(t);
  return t;
}

async function scrape(t: TestSts): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${t.sts.metricsPort}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

describe('metrics', () => {
  it('adds process and runtime metrics and sts_build_info to every STS family, once each, with two servers in one process', async () => {
    const a = await start({ overrides: { 'metrics.address': '127.0.0.1:0' } });
    const b = await start({ overrides: { 'metrics.address': '127.0.0.1:0' } });
    await call(a.pop.getJwks, a.pop, {});
    await fetch(`${a.sts.http!.baseUrl}/healthz`);
    const text = await scrape(a);
    expect(text).toContain(`sts_build_info{version="${VERSION}",node="${process.version}"} 1`);
    for (const family of [
      'sts_rpc_requests_total counter',
      'sts_rpc_duration_seconds histogram',
      'sts_http_requests_total counter',
      'sts_http_duration_seconds histogram',
      'sts_keys gauge',
      'sts_key_ring_next_change_seconds gauge',
      'sts_cluster_connected gauge',
      'sts_build_info gauge',
      // prom-client's default metrics, under their standard names
      'process_cpu_user_seconds_total counter',
      'process_resident_memory_bytes gauge',
      'process_open_fds gauge',
      'nodejs_eventloop_lag_seconds gauge',
      'nodejs_eventloop_lag_p99_seconds gauge',
      'nodejs_heap_size_used_bytes gauge',
      'nodejs_heap_space_size_used_bytes gauge',
      'nodejs_gc_duration_seconds histogram',
      'nodejs_active_handles_total gauge',
    ]) {
      const [name] = family.split(' ');
      expect(text.split('\n').filter((l) => l.startsWith(`# TYPE ${name} `)), family).toEqual([`# TYPE ${family}`]);
    }
    expect(text).toContain('sts_rpc_requests_total{method="/sts.v1.PopService/GetJwks",code="OK"} 1');
    expect(text).toContain('sts_http_requests_total{route="/healthz",status="200"} 1');
    expect(Number(/^process_resident_memory_bytes (\d+)/m.exec(text)?.[1])).toBeGreaterThan(10_000_000);
    // The other server counts only its own calls, and reports the same process figures.
    const other = await scrape(b);
    expect(other).not.toContain('sts_rpc_requests_total{method="/sts.v1.PopService/GetJwks"');
    expect(other).toContain('# TYPE nodejs_eventloop_lag_seconds gauge');
  });

  it('the start-up line names every listening address (gRPC, HTTP, metrics), and each answers there', async () => {
    const t = await start({ overrides: { 'metrics.address': '127.0.0.1:0' } });
    const started = t.logs.map((l) => JSON.parse(l) as Record<string, string>).find((l) => l.msg === 'sts started')!;
    expect(started.address).toBe(t.address);
    expect((await fetch(`${started.http}/healthz`)).status).toBe(200);
    expect(started.metrics).toBe(`http://127.0.0.1:${t.sts.metricsPort}/metrics`);
    expect(await (await fetch(started.metrics!)).text()).toContain('sts_build_info');
  });
});

describe('server.reflection', () => {
  it('is on by default in dev and off by default under prod; off, grpcurl cannot list the services', async () => {
    const prod = { profile: 'prod', 'masterKey.file': '/k', 'tls.certFile': '/c', 'tls.keyFile': '/k' };
    expect(loadConfig({ env: {} })['server.reflection']).toBe(true);
    expect(loadConfig({ env: {}, overrides: prod })['server.reflection']).toBe(false);
    expect(loadConfig({ env: { STS_SERVER_REFLECTION: 'true' }, overrides: prod })['server.reflection']).toBe(true);

    const run = promisify(execFile);
    const on = await start();
    expect((await run(GRPCURL, ['-plaintext', on.address, 'list'])).stdout).toContain('sts.v1.PopService');
    const off = await start({ overrides: { 'server.reflection': false } });
    const refused = await run(GRPCURL, ['-plaintext', off.address, 'list']).then(
      () => undefined,
      (err: { stderr: string }) => err.stderr,
    );
    expect(refused).toMatch(/does not support the reflection API|Unimplemented/i);
    // The services themselves still answer.
    expect((await call(off.pop.getJwks, off.pop, {})).primarySigningKid).not.toBe('');
  });
});

describe('sts config --sources', () => {
  it('names where each value came from: default, prod default, config file, environment, command line', () => {
    const dir = tempDir();
    const file = join(dir, 'sts.yaml');
    writeFileSync(file, 'log:\n  level: warn\nprofile: prod\nmasterKey:\n  file: /k\ntls:\n  certFile: /c\n  keyFile: /k\n');
    const { config, sources } = loadConfigWithSources({ file, env: { STS_SESSION_ISSUER: 'https://sts.example' }, overrides: { 'server.address': '127.0.0.1:1' } });
    expect(config['log.level']).toBe('warn');
    expect(sources['log.level']).toBe(`config file ${file}`);
    expect(sources['session.issuer']).toBe('environment STS_SESSION_ISSUER');
    expect(sources['server.address']).toBe('command line');
    expect(sources['server.reflection']).toBe('default (prod profile)');
    expect(sources['pop.jwksMaxAgeMs']).toBe('default');
  });

  it('prints the sources, with the config file given before or after the command', async () => {
    const dir = tempDir();
    const file = join(dir, 'sts.yaml');
    writeFileSync(file, 'log:\n  level: warn\n');
    for (const args of [['config', '--sources', '--config', file], ['--config', file, 'config', '--sources']]) {
      const r = await runSts(args, { env: { STS_SESSION_ISSUER: 'https://sts.example' } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`log.level = "warn"    (config file ${file})`);
      expect(r.stdout).toContain('session.issuer = "https://sts.example"    (environment STS_SESSION_ISSUER)');
      expect(r.stdout).toContain('server.address = "127.0.0.1:50051"    (default)');
    }
  });
});

describe('the sts command line', { timeout: 240_000 }, () => {
  it('--version prints the package version, wherever it stands', async () => {
    for (const args of [['--version'], ['admin', 'apps', 'list', '--version']]) {
      const r = await runSts(args);
      expect(r).toEqual({ code: 0, stdout: `sts ${VERSION}\n`, stderr: '' });
    }
  });

  it('sts admin takes connection options before or after the command, and --config gives it the address and the dev admin key', async () => {
    const t = await start();
    const token = readFileSync(join(t.dataDir, 'admin.token'), 'utf8').trim();
    const before = await runSts(['admin', '--address', t.address, '--token', token, 'apps', 'create', '--id', 'shop', '--name', 'Shop']);
    expect(before.code, before.stderr).toBe(0);
    const after = await runSts(['admin', 'apps', 'list', '--address', t.address, '--token', token]);
    expect(after.code, after.stderr).toBe(0);
    expect((JSON.parse(after.stdout) as { applicationId: string }[]).map((a) => a.applicationId)).toContain('shop');

    const config = join(tempDir(), 'sts.yaml');
    writeFileSync(config, `server:\n  address: ${t.address}\ndataDir: ${JSON.stringify(t.dataDir)}\n`);
    const viaConfig = await runSts(['admin', '--config', config, 'apps', 'list']);
    expect(viaConfig.code, viaConfig.stderr).toBe(0);
    expect(viaConfig.stdout).toContain('"shop"');

    // Options of another command are refused, naming the command.
    const wrong = await runSts(['admin', 'apps', 'list', '--username', 'x', '--config', config]);
    expect(wrong.code).toBe(64);
    expect(wrong.stderr).toBe('sts: --username is not an option of `sts admin apps list`\n');
  });

  it('an address where no STS listens fails at once, naming the address and where it came from', async () => {
    const port = await freePort();
    const config = join(tempDir(), 'sts.yaml');
    writeFileSync(config, `server:\n  address: 127.0.0.1:${port}\n`);
    const started = Date.now();
    const r = await runSts(['admin', 'apps', 'list', '--config', config, '--token', 'sts_admin_x']);
    const ms = Date.now() - started;
    expect(r.code).toBe(69);
    expect(r.stderr).toBe(`sts: cannot reach STS at 127.0.0.1:${port} (server.address from config file ${config}): connect ECONNREFUSED 127.0.0.1:${port}\n`);
    const flag = await runSts(['admin', '--address', `127.0.0.1:${port}`, '--token', 'sts_admin_x', 'health']);
    expect(flag.code).toBe(69);
    expect(flag.stderr).toContain(`STS at 127.0.0.1:${port} (--address) is not serving`);
    console.log(`unreachable address reported after ${ms} ms (process start included)`);
  });

  it('sts admin --config of a TLS server connects with TLS, trusting the server certificate the config names', async () => {
    const pki = tempDir('sts-pki-');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'server.key', '-out', 'server.pem', '-days', '2', '-subj', '/CN=sts-test', '-addext', 'subjectAltName=IP:127.0.0.1'], {
      cwd: pki,
      stdio: 'ignore',
    });
    const t = await start({ overrides: { 'tls.certFile': join(pki, 'server.pem'), 'tls.keyFile': join(pki, 'server.key') } });
    const config = join(pki, 'sts.yaml');
    writeFileSync(config, `server:\n  address: ${t.address}\ndataDir: ${JSON.stringify(t.dataDir)}\ntls:\n  certFile: ${join(pki, 'server.pem')}\n  keyFile: ${join(pki, 'server.key')}\n`);
    const r = await runSts(['admin', 'keys', 'list', '--config', config]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveLength(6);
    const health = await runSts(['admin', 'health', '--config', config]);
    expect(health).toMatchObject({ code: 0, stdout: '{\n  "status": "SERVING"\n}\n' });
  });
});
