/**
 * Opt-in OpenTelemetry tracing of every RPC, configured by the standard OTEL_* variables (not STS_* options:
 * an OpenTelemetry deployment sets them the same way for every service).
 *
 * On when OTEL_TRACES_EXPORTER names an exporter other than `none`, or an OTLP endpoint variable is set, and
 * OTEL_SDK_DISABLED is not `true`. Exporters: `otlp` (OTLP over HTTP/protobuf, the OpenTelemetry default:
 * OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _HEADERS, _TIMEOUT) and `console`.
 * The SDK reads the rest itself: OTEL_SERVICE_NAME (default `sts`), OTEL_RESOURCE_ATTRIBUTES,
 * OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*. Incoming `traceparent` headers (W3C Trace Context) continue the
 * caller's trace.
 *
 * Spans come from @opentelemetry/instrumentation-grpc: one server span per RPC (`rpc.system`, `rpc.service`,
 * `rpc.method`, `rpc.grpc.status_code`); no request or response content, so no secret reaches a span. The
 * instrumentation patches @grpc/grpc-js when it is loaded, so tracing must start before the server module is
 * imported (`sts serve` does; see src/cli/main.ts).
 */
import { createRequire } from 'node:module';
import { StartupError } from '../errors.js';
import type { Logger } from '../log.js';
import type { SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';

export interface Tracing {
  /** Exports what is buffered, then stops. */
  shutdown(): Promise<void>;
}

const OTLP_ENDPOINTS = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'];

/** The exporters OTEL_* asks for (empty: tracing off). */
export function tracingExporters(env: NodeJS.ProcessEnv): string[] {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return [];
  const listed = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((e) => e.trim().toLowerCase())
    .filter((e) => e !== '');
  if (listed.length === 0) return OTLP_ENDPOINTS.some((v) => env[v]) ? ['otlp'] : [];
  if (listed.includes('none')) return [];
  for (const e of listed) {
    if (e !== 'otlp' && e !== 'console') throw new StartupError('config_invalid', `environment OTEL_TRACES_EXPORTER: "${e}" is not supported; use otlp, console or none`);
  }
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL;
  if (listed.includes('otlp') && protocol && protocol !== 'http/protobuf') {
    throw new StartupError('config_invalid', `environment OTEL_EXPORTER_OTLP_PROTOCOL: "${protocol}" is not supported; STS exports OTLP over http/protobuf`);
  }
  return listed;
}

export interface TracingOptions {
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Exports to this exporter instead of the ones OTEL_TRACES_EXPORTER names, one span at a time (tests). */
  exporter?: SpanExporter;
}

/**
 * Starts tracing when OTEL_* asks for it (or an exporter is given); resolves with undefined when it is off.
 * Throws if @grpc/grpc-js is loaded already: its RPCs would not be traced.
 */
export async function startTracing(options: TracingOptions = {}): Promise<Tracing | undefined> {
  const env = options.env ?? process.env;
  const exporters = options.exporter ? [] : tracingExporters(env);
  if (!options.exporter && exporters.length === 0) return undefined;
  const require = createRequire(import.meta.url);
  if (require.cache[require.resolve('@grpc/grpc-js')]) throw new Error('tracing must start before @grpc/grpc-js is loaded');

  // Loaded only when tracing is on: a server without it loads none of the SDK.
  const [{ NodeTracerProvider }, base, { registerInstrumentations }, { GrpcInstrumentation }, resources] = await Promise.all([
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/instrumentation'),
    import('@opentelemetry/instrumentation-grpc'),
    import('@opentelemetry/resources'),
  ]);
  const processors: SpanProcessor[] = options.exporter ? [new base.SimpleSpanProcessor(options.exporter)] : [];
  for (const e of exporters) {
    if (e === 'console') processors.push(new base.SimpleSpanProcessor(new base.ConsoleSpanExporter()));
    else {
      const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
      processors.push(new base.BatchSpanProcessor(new OTLPTraceExporter()));
    }
  }
  const resource = resources
    .defaultResource()
    .merge(resources.resourceFromAttributes({ 'service.name': 'sts' }))
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new NodeTracerProvider({ resource, spanProcessors: processors });
  provider.register();
  const unregister = registerInstrumentations({ tracerProvider: provider, instrumentations: [new GrpcInstrumentation()] });
  // Through require, so the instrumentation's hook sees the module load and patches it; the server's own
  // `import` then gets this same, patched, module from the cache.
  require('@grpc/grpc-js');
  options.logger?.info('tracing on', { exporters: options.exporter ? ['custom'] : exporters, serviceName: resource.attributes['service.name'] });
  return {
    async shutdown() {
      unregister();
      await provider.shutdown();
    },
  };
}
