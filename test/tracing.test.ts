/**
 * OpenTelemetry tracing of every RPC through @opentelemetry/instrumentation-grpc, into an in-memory exporter:
 * one server span per RPC with the gRPC semantic attributes and status, the caller's W3C trace continued, and
 * nothing from the request in any span. Also which OTEL_* settings turn tracing on.
 *
 * The instrumentation patches @grpc/grpc-js as it loads, so this file starts tracing before it imports
 * anything that loads grpc-js (vitest runs each test file in a fresh module graph): the server and its
 * clients are imported dynamically below.
 */
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Tracing, startTracing, tracingExporters } from '../src/server/tracing.js';

const exporter = new InMemorySpanExporter();
let tracing: Tracing | undefined;

beforeAll(async () => {
  tracing = await startTracing({ exporter, env: {} });
});
afterAll(async () => {
  await tracing?.shutdown();
});

describe('tracing', () => {
  it('is off unless OTEL_* asks for it', () => {
    expect(tracingExporters({})).toEqual([]);
    expect(tracingExporters({ OTEL_TRACES_EXPORTER: 'none' })).toEqual([]);
    expect(tracingExporters({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_SDK_DISABLED: 'true' })).toEqual([]);
    expect(tracingExporters({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toEqual(['otlp']);
    expect(tracingExporters({ OTEL_TRACES_EXPORTER: 'otlp,console' })).toEqual(['otlp', 'console']);
    expect(() => tracingExporters({ OTEL_TRACES_EXPORTER: 'zipkin' })).toThrow('environment OTEL_TRACES_EXPORTER: "zipkin" is not supported; use otlp, console or none');
    expect(() => tracingExporters({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toThrow('OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" is not supported');
  });

  it('records one server span per RPC, with method and status, continuing the caller trace, without request content', async () => {
    expect(tracing).toBeDefined();
    const { Metadata, status } = await import('@grpc/grpc-js');
    const { startTestSts } = await import('./helpers/server.js');
    const { call, callError } = await import('./helpers/call.js');
    const t = await startTestSts();
    try {
      exporter.reset();
      await call(t.pop.getJwks, t.pop, {});
      const marker = 'no-span-may-hold-this-secret-3f9a';
      expect((await callError(call(t.pop.decrypt, t.pop, { jwe: marker }))).code).toBe(status.UNAUTHENTICATED);
      // A caller's trace continues through the (instrumented) client's traceparent into the server span.
      const { ROOT_CONTEXT, context, trace } = await import('@opentelemetry/api');
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
      const caller = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: '00f067aa0ba902b7', traceFlags: 1, isRemote: true });
      await context.with(caller, () => new Promise<void>((resolve, reject) => t.pop.getJwks({}, new Metadata(), (err) => (err ? reject(err) : resolve()))));

      const deadline = Date.now() + 10_000;
      const server = () => exporter.getFinishedSpans().filter((s) => s.kind === 1 /* SERVER */);
      while (server().length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const spans = server();
      expect(spans.map((s) => s.name)).toEqual(['grpc.sts.v1.PopService/GetJwks', 'grpc.sts.v1.PopService/Decrypt', 'grpc.sts.v1.PopService/GetJwks']);
      expect(spans[0]!.attributes).toMatchObject({ 'rpc.system': 'grpc', 'rpc.service': 'sts.v1.PopService', 'rpc.method': 'GetJwks', 'rpc.grpc.status_code': status.OK });
      expect(spans[1]!.attributes).toMatchObject({ 'rpc.method': 'Decrypt', 'rpc.grpc.status_code': status.UNAUTHENTICATED });
      expect(spans[1]!.status.code).toBe(2); // ERROR
      expect(spans[2]!.spanContext().traceId).toBe(traceId);
      const client = exporter.getFinishedSpans().find((c) => c.kind === 2 /* CLIENT */ && c.spanContext().traceId === traceId)!;
      expect(client.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
      expect(spans[2]!.parentSpanContext?.spanId).toBe(client.spanContext().spanId);
      expect(JSON.stringify(exporter.getFinishedSpans().map((s) => ({ a: s.attributes, e: s.events, n: s.name })))).not.toContain(marker);
    } finally {
      await t.stop(true);
    }
  });
});

describe('sts serve with OTEL_TRACES_EXPORTER=console', { timeout: 120_000 }, () => {
  it('traces the RPCs of the real server process', async () => {
    const { spawn } = await import('node:child_process');
    const { resolve } = await import('node:path');
    const { cleanEnv, ROOT } = await import('./helpers/cli.js');
    const { tempDir } = await import('./helpers/server.js');
    const { PopServiceClient } = await import('../src/gen/sts/v1/pop.js');
    const { credentials } = await import('@grpc/grpc-js');
    const child = spawn(process.execPath, ['--import', 'tsx', resolve(ROOT, 'src/cli/main.ts'), 'serve', '--address', '127.0.0.1:0', '--http-address', '', '--data-dir', tempDir()], {
      env: cleanEnv({ OTEL_TRACES_EXPORTER: 'console', OTEL_SERVICE_NAME: 'sts-under-test' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const until = async (what: RegExp) => {
        const end = Date.now() + 60_000;
        while (!what.test(out)) {
          if (Date.now() > end || child.exitCode !== null) throw new Error(`no ${what} in: ${out.slice(-2000)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      await until(/"msg":"sts started".*\n/);
      expect(out).toContain('"msg":"tracing on","exporters":["console"],"serviceName":"sts-under-test"');
      const port = /"address":"127\.0\.0\.1:(\d+)"/.exec(out)![1];
      const pop = new PopServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
      await new Promise<void>((res, rej) => pop.getJwks({}, (err) => (err ? rej(err) : res())));
      pop.close();
      await until(/name: 'grpc\.sts\.v1\.PopService\/GetJwks'/);
      expect(out).toMatch(/'service\.name': 'sts-under-test'/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
