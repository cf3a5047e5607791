/**
 * TLS and mTLS with real certificates made by `openssl` (a CA, a server certificate for IP 127.0.0.1, a
 * client certificate, and a second, untrusted CA with its own client certificate) against a real STS.
 *
 * A GetJwks call that reaches the server gets an answer from it (OK, or UNIMPLEMENTED while the method is
 * not implemented); a call refused by the transport fails with UNAVAILABLE. The client certificate seen by handlers
 * (CallContext.clientCertSha256) is checked through a real StsGrpcServer with a probe handler.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ChannelCredentials, type Client, type ServiceError, credentials, status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSts } from '../src/app.js';
import type { OptionName } from '../src/config/defaults.js';
import { StartupError } from '../src/errors.js';
import { GetJwksResponse, PopServiceClient, type PopServiceServer, PopServiceService } from '../src/gen/sts/v1/pop.js';
import { silentLogger } from '../src/log.js';
import type { CallContext } from '../src/rpc-contract.js';
import { bindService } from '../src/server/rpc.js';
import { StsGrpcServer } from '../src/server/server.js';
import { call } from './helpers/call.js';
import { httpGet } from './helpers/http.js';
import { type TestSts, startTestSts, tempDir, testConfig } from './helpers/server.js';

let pki: string;
const pem: Record<string, Buffer> = {};
const path = (name: string): string => join(pki, name);

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: pki, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(name: string): void {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`,
    '-days', '2', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}

function makeLeaf(name: string, ca: string, ext: string[]): void {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
  writeFileSync(path(`${name}.ext`), ['basicConstraints=CA:FALSE', ...ext].join('\n') + '\n');
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '2', '-out', `${name}.pem`, '-extfile', `${name}.ext`);
}

beforeAll(() => {
  // openssl is a standard tool of the build image; fail loudly (not skip) when it is missing.
  execFileSync('openssl', ['version'], { stdio: 'ignore' });
  pki = mkdtempSync(join(tmpdir(), 'sts-tls-'));
  makeCa('ca');
  makeLeaf('server', 'ca', ['subjectAltName=IP:127.0.0.1', 'extendedKeyUsage=serverAuth']);
  makeLeaf('client', 'ca', ['extendedKeyUsage=clientAuth']);
  makeCa('rogue-ca');
  makeLeaf('rogue-client', 'rogue-ca', ['extendedKeyUsage=clientAuth']);
  for (const n of ['ca', 'server', 'client', 'rogue-ca', 'rogue-client']) {
    pem[`${n}.pem`] = readFileSync(path(`${n}.pem`));
    pem[`${n}.key`] = readFileSync(path(`${n}.key`));
  }
});
afterAll(() => {
  if (pki) rmSync(pki, { recursive: true, force: true });
});

const TLS = (): Partial<Record<OptionName, string | boolean>> => ({ 'tls.certFile': path('server.pem'), 'tls.keyFile': path('server.key') });
const MTLS = (required: boolean): Partial<Record<OptionName, string | boolean>> => ({ ...TLS(), 'tls.clientCaFile': path('ca.pem'), 'tls.requireClientCert': required });

const trustCa = (): ChannelCredentials => credentials.createSsl(pem['ca.pem']);
const withClientCert = (name = 'client'): ChannelCredentials => credentials.createSsl(pem['ca.pem'], pem[`${name}.key`], pem[`${name}.pem`]);

let t: TestSts | undefined;
const clients: Client[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  clients.splice(0).forEach((c) => c.close());
  await t?.stop(true);
  t = undefined;
  for (const c of cleanups.splice(0)) await c();
});

function pop(address: string, creds: ChannelCredentials): PopServiceClient {
  const c = new PopServiceClient(address, creds);
  clients.push(c);
  return c;
}

/** Status codes only the server itself produces for GetJwks: the call got through the transport. */
const REACHED = [status.OK, status.UNIMPLEMENTED];

/** The gRPC status of a GetJwks call (OK when it succeeds). */
async function getJwksCode(client: PopServiceClient): Promise<status> {
  try {
    await call(client.getJwks, client, {}, undefined, 10_000);
    return status.OK;
  } catch (err) {
    return (err as ServiceError).code;
  }
}

describe('TLS', () => {
  it('a client that trusts the CA reaches the server', async () => {
    t = await startTestSts({ overrides: TLS() });
    expect(await getJwksCode(pop(t.address, trustCa()))).toBeOneOf(REACHED);
    expect(t.logs.some((l) => l.includes('"sts started"') && l.includes('"tls":true'))).toBe(true);
  });

  it('a plaintext client cannot talk to a TLS server', async () => {
    t = await startTestSts({ overrides: TLS() });
    expect(await getJwksCode(pop(t.address, credentials.createInsecure()))).toBe(status.UNAVAILABLE);
    // The server is fine: a TLS client still gets through.
    expect(await getJwksCode(pop(t.address, trustCa()))).toBeOneOf(REACHED);
  });

  it('a client that does not trust the server certificate is refused', async () => {
    t = await startTestSts({ overrides: TLS() });
    expect(await getJwksCode(pop(t.address, credentials.createSsl(pem['rogue-ca.pem'])))).toBe(status.UNAVAILABLE);
  });

  it('an unreadable certificate file fails start-up with config_invalid naming tls.certFile', async () => {
    const dataDir = tempDir();
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    const missing = path('missing.pem');
    const err = await startSts({ config: testConfig(dataDir, { 'tls.certFile': missing, 'tls.keyFile': path('server.key') }), env: {}, logger: silentLogger }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StartupError);
    expect((err as StartupError).code).toBe('config_invalid');
    expect((err as StartupError).message).toContain('tls.certFile');
    expect((err as StartupError).message).toContain(missing);
  });

  it('a certificate that is not PEM, or a key that does not match it, is config_invalid (exit 78), not listen_failed', async () => {
    const dataDir = tempDir();
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    writeFileSync(path('garbage.pem'), 'this is not a certificate\n');
    for (const [cert, key] of [
      [path('garbage.pem'), path('server.key')],
      [path('server.pem'), path('client.key')],
    ] as const) {
      const err = await startSts({ config: testConfig(dataDir, { 'tls.certFile': cert, 'tls.keyFile': key }), env: {}, logger: silentLogger }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StartupError);
      expect({ code: (err as StartupError).code, exitCode: (err as StartupError).exitCode }, (err as Error).message).toEqual({ code: 'config_invalid', exitCode: 78 });
      expect((err as StartupError).message).toContain('tls.certFile');
    }
  });
});

describe('the HTTP listener (src/http) with the same TLS settings', () => {
  it('serves HTTPS with the tls.* certificate, names an https jwks_uri, and refuses plaintext', async () => {
    t = await startTestSts({ overrides: TLS() });
    const port = t.sts.http!.port;
    const res = await httpGet(port, '/.well-known/jwks.json', { tls: { ca: pem['ca.pem'] } });
    expect(res.status).toBe(200);
    const grpc = pop(t.address, trustCa());
    expect(res.body).toBe((await call(grpc.getJwks, grpc, {})).jwksJson);
    const doc = JSON.parse((await httpGet(port, '/.well-known/openid-configuration', { tls: { ca: pem['ca.pem'] } })).body) as { jwks_uri: string };
    expect(doc.jwks_uri).toBe(`https://127.0.0.1:${port}/.well-known/jwks.json`);
    await expect(httpGet(port, '/healthz')).rejects.toThrow();
    await expect(httpGet(port, '/healthz', { tls: { ca: pem['rogue-ca.pem'] } })).rejects.toThrow(/certificate/);
  });

  it('requires a client certificate from the client CA with tls.requireClientCert, and none without it', async () => {
    t = await startTestSts({ overrides: MTLS(true) });
    const port = t.sts.http!.port;
    await expect(httpGet(port, '/healthz', { tls: { ca: pem['ca.pem'] } })).rejects.toThrow();
    await expect(httpGet(port, '/healthz', { tls: { ca: pem['ca.pem'], cert: pem['rogue-client.pem'], key: pem['rogue-client.key'] } })).rejects.toThrow();
    expect((await httpGet(port, '/healthz', { tls: { ca: pem['ca.pem'], cert: pem['client.pem'], key: pem['client.key'] } })).status).toBe(200);
    await t.stop(true);
    // mTLS optional on gRPC: browsers and JWT libraries are not asked for a certificate.
    t = await startTestSts({ overrides: MTLS(false) });
    expect((await httpGet(t.sts.http!.port, '/healthz', { tls: { ca: pem['ca.pem'] } })).status).toBe(200);
  });
});

describe('mTLS with tls.requireClientCert=true', () => {
  it('a client without a certificate is refused', async () => {
    t = await startTestSts({ overrides: MTLS(true) });
    expect(await getJwksCode(pop(t.address, trustCa()))).toBe(status.UNAVAILABLE);
  });

  it('a client with a certificate from the client CA reaches the server', async () => {
    t = await startTestSts({ overrides: MTLS(true) });
    expect(await getJwksCode(pop(t.address, withClientCert()))).toBeOneOf(REACHED);
  });

  it('a client certificate from another CA is refused', async () => {
    t = await startTestSts({ overrides: MTLS(true) });
    expect(await getJwksCode(pop(t.address, withClientCert('rogue-client')))).toBe(status.UNAVAILABLE);
  });
});

/** A real StsGrpcServer whose GetJwks reports the client certificate hash its handler saw. */
async function probeServer(overrides: Partial<Record<OptionName, string | boolean>>): Promise<{ address: string; seen: (string | undefined)[] }> {
  const dataDir = tempDir();
  const seen: (string | undefined)[] = [];
  const implementation = bindService<PopServiceServer>(
    PopServiceService,
    {
      getJwks: async (_req: unknown, ctx: CallContext) => {
        seen.push(ctx.clientCertSha256);
        return GetJwksResponse.fromPartial({ jwksJson: '{"keys":[]}' });
      },
    },
    silentLogger,
  );
  const server = new StsGrpcServer(testConfig(dataDir, overrides), [{ name: 'sts.v1.PopService', definition: PopServiceService, implementation }], silentLogger);
  const port = await server.start();
  cleanups.push(async () => {
    clients.splice(0).forEach((c) => c.close());
    await server.shutdown();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { address: `127.0.0.1:${port}`, seen };
}

const clientCertSha256 = (): string => createHash('sha256').update(new X509Certificate(pem['client.pem']!).raw).digest('hex');

describe('client certificate seen by handlers', () => {
  it('required: the handler gets the SHA-256 of the verified client certificate', async () => {
    const p = await probeServer(MTLS(true));
    expect(await getJwksCode(pop(p.address, withClientCert()))).toBe(status.OK);
    expect(p.seen).toEqual([clientCertSha256()]);
  });

  it('plain TLS: no client certificate', async () => {
    const p = await probeServer(TLS());
    expect(await getJwksCode(pop(p.address, withClientCert()))).toBe(status.OK);
    expect(p.seen).toEqual([undefined]);
  });

  it('optional (tls.requireClientCert=false): a client without a certificate gets through', async () => {
    const p = await probeServer(MTLS(false));
    expect(await getJwksCode(pop(p.address, trustCa()))).toBe(status.OK);
    expect(p.seen).toEqual([undefined]);
  });

  it('optional (tls.requireClientCert=false): an offered certificate is verified and reported', async () => {
    // Documented: "With tls.clientCaFile: ... only verify certificates that are offered (false)".
    const p = await probeServer(MTLS(false));
    expect(await getJwksCode(pop(p.address, withClientCert()))).toBe(status.OK);
    expect(p.seen).toEqual([clientCertSha256()]);
  });

  it('optional (tls.requireClientCert=false): a certificate from another CA is never reported as verified', async () => {
    const p = await probeServer(MTLS(false));
    const code = await getJwksCode(pop(p.address, withClientCert('rogue-client')));
    // Refusing the connection or treating the caller as anonymous are both acceptable; trusting it is not.
    expect(code).toBeOneOf([status.OK, status.UNAVAILABLE]);
    expect(p.seen.filter((s) => s !== undefined)).toEqual([]);
  });
});
