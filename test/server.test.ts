/**
 * The gRPC server itself: health (overall and per service, NOT_SERVING during shutdown), reflection through
 * real grpcurl, message size limits, one JSON log line per RPC.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { credentials, loadPackageDefinition, status, type Client, type GrpcObject, type ServiceClientConstructor, type ClientReadableStream } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { afterEach, describe, expect, it } from 'vitest';
import { call, callError } from './helpers/call.js';
import { startTestSts, type TestSts } from './helpers/server.js';

const run = promisify(execFile);
const GRPCURL = '.tools/bin/grpcurl';

type HealthClient = Client & {
  check(req: { service: string }, cb: (err: Error | null, res: { status: string }) => void): void;
  watch(req: { service: string }): ClientReadableStream<{ status: string }>;
};

function healthClient(address: string): HealthClient {
  const pkg = loadPackageDefinition(loadSync(healthProtoPath, { enums: String })) as GrpcObject;
  const Health = ((pkg.grpc as GrpcObject).health as GrpcObject).v1 as GrpcObject;
  return new (Health.Health as ServiceClientConstructor)(address, credentials.createInsecure()) as unknown as HealthClient;
}

let t: TestSts | undefined;
const open: Client[] = [];
afterEach(async () => {
  open.splice(0).forEach((c) => c.close());
  await t?.stop(true);
  t = undefined;
});

describe('health', () => {
  it('reports SERVING for the server and for each STS service, NOT_FOUND for unknown services', async () => {
    t = await startTestSts();
    const h = healthClient(t.address);
    open.push(h);
    const check = (service: string) => new Promise<string>((resolve, reject) => h.check({ service }, (e, r) => (e ? reject(e) : resolve(r.status))));
    expect(await check('')).toBe('SERVING');
    for (const s of ['sts.v1.PopService', 'sts.v1.SessionService', 'sts.v1.SecretService']) expect(await check(s)).toBe('SERVING');
    const err = (await check('sts.v1.NoSuchService').catch((e: unknown) => e)) as { code: number };
    expect(err.code).toBe(status.NOT_FOUND);
  });

  it('turns NOT_SERVING as soon as a graceful shutdown begins', async () => {
    t = await startTestSts();
    const h = healthClient(t.address);
    open.push(h);
    const seen: string[] = [];
    const stream = h.watch({ service: '' });
    const notServing = new Promise<void>((resolve) => {
      stream.on('data', (m: { status: string }) => {
        seen.push(m.status);
        if (m.status === 'SERVING') void t!.sts.close();
        if (m.status === 'NOT_SERVING') resolve();
      });
      stream.on('error', () => resolve());
    });
    await notServing;
    stream.cancel();
    expect(seen).toEqual(['SERVING', 'NOT_SERVING']);
  });
});

describe('limits and logs', () => {
  it('refuses a request larger than server.maxMessageBytes with RESOURCE_EXHAUSTED', async () => {
    t = await startTestSts({ overrides: { 'server.maxMessageBytes': 2048 } });
    const err = await callError(call(t.pop.decrypt, t.pop, { jwe: 'x'.repeat(4096) }));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
  });

  it('writes one JSON log line per RPC with method, status and duration, and no request content', async () => {
    t = await startTestSts();
    const marker = 'eyJhbGciOiJub25lIn0.secret-looking-value';
    await call(t.pop.decrypt, t.pop, { jwe: marker }).catch(() => undefined);
    const lines = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'rpc');
    const line = lines.find((l) => l.method === '/sts.v1.PopService/Decrypt');
    expect(line).toMatchObject({ code: 'UNAUTHENTICATED', stsCode: 'unauthenticated' });
    expect(typeof line!.durationMs).toBe('number');
    expect(typeof line!.peer).toBe('string');
    expect(t.logs.join('\n')).not.toContain(marker);
  });
});

describe('metrics', () => {
  it('serves Prometheus text with RPC counts and latency by method and status, key ring state, password hashing and cluster connection', async () => {
    t = await startTestSts({ overrides: { 'metrics.address': '127.0.0.1:0' } });
    await call(t.pop.getJwks, t.pop, {});
    await call(t.pop.getJwks, t.pop, {});
    await callError(call(t.pop.decrypt, t.pop, { jwe: 'x' }));
    const res = await fetch(`http://127.0.0.1:${t.sts.metricsPort}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(text).toContain('sts_rpc_requests_total{method="/sts.v1.PopService/GetJwks",code="OK"} 2');
    expect(text).toContain('sts_rpc_requests_total{method="/sts.v1.PopService/Decrypt",code="UNAUTHENTICATED"} 1');
    expect(text).toContain('sts_rpc_duration_seconds_count{method="/sts.v1.PopService/GetJwks",code="OK"} 2');
    expect(text).toMatch(/sts_rpc_duration_seconds_bucket\{le="\+Inf",method="\/sts.v1.PopService\/GetJwks",code="OK"\} 2/);
    expect(text).toContain('sts_keys{kind="signing",state="primary"} 1');
    expect(text).toContain('sts_cluster_connected{mode="embedded"} 1');
    expect(text).toContain('sts_password_hashes{state="running"} 0');
    expect(text).toContain('sts_password_hashes{state="waiting"} 0');
    expect((await fetch(`http://127.0.0.1:${t.sts.metricsPort}/other`)).status).toBe(404);
  });
});

describe('reflection with real grpcurl', () => {
  it('lists the three services and answers a health check', async () => {
    expect(existsSync(GRPCURL), 'grpcurl missing: run scripts/ensure-tools.sh (npm test does it)').toBe(true);
    t = await startTestSts();
    const list = await run(GRPCURL, ['-plaintext', t.address, 'list']);
    const services = list.stdout.trim().split('\n');
    expect(services).toEqual(expect.arrayContaining(['sts.v1.PopService', 'sts.v1.SessionService', 'sts.v1.SecretService', 'grpc.health.v1.Health']));
    const health = await run(GRPCURL, ['-plaintext', t.address, 'grpc.health.v1.Health/Check']);
    expect(JSON.parse(health.stdout)).toEqual({ status: 'SERVING' });
    const perService = await run(GRPCURL, ['-plaintext', '-d', '{"service":"sts.v1.SessionService"}', t.address, 'grpc.health.v1.Health/Check']);
    expect(JSON.parse(perService.stdout)).toEqual({ status: 'SERVING' });
  });

  it('describes methods and messages with their documentation, without .proto files', async () => {
    t = await startTestSts();
    const out = await run(GRPCURL, ['-plaintext', t.address, 'describe', 'sts.v1.UserToken']);
    expect(out.stdout).toContain('google.protobuf.Timestamp issue_time');
    expect(out.stdout).toContain('// Opaque token id');
    const method = await run(GRPCURL, ['-plaintext', t.address, 'describe', 'sts.v1.PopService.GetJwks']);
    expect(method.stdout).toContain('rpc GetJwks ( .sts.v1.GetJwksRequest ) returns ( .sts.v1.GetJwksResponse )');
  });
});
