/**
 * Prometheus metrics on a separate HTTP listener (`metrics.address`), through prom-client: RPC counts and
 * latency by method and status, HTTP requests of src/http by route and status code, the key ring's state, the
 * cluster connection, the build (`sts_build_info{version}`), and prom-client's default process and Node.js
 * runtime metrics (CPU, resident memory, heap by space, event-loop lag, GC pauses, open handles and file
 * descriptors) under their standard names, so stock dashboards work.
 * Recording is a label lookup and a few additions per RPC, so it stays on for every call.
 */
import { type Server, createServer } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { listen } from '../http/listen.js';
import { STS_VERSION } from '../version.js';

/** Latency buckets in seconds: from sub-millisecond lookups to multi-second password hashing. */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export type GaugeSource = () => { name: string; help: string; type?: 'gauge' | 'counter'; samples: { labels: Record<string, string>; value: number }[] }[];

/**
 * Process-wide figures belong to the process, not to one server: they are collected once, into their own
 * registry, however many servers a process runs (the tests run many), and merged into every answer.
 */
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** A counter of finished requests and a latency histogram, both by the same two labels. */
function requestFamily(registry: Registry, prefix: string, what: string, labelNames: [string, string]) {
  const total = new Counter({ name: `${prefix}_requests_total`, help: `Finished ${what}.`, labelNames, registers: [registry] });
  const duration = new Histogram({ name: `${prefix}_duration_seconds`, help: `Handling time of ${what}.`, labelNames, buckets: BUCKETS, registers: [registry] });
  return (a: string, b: string, seconds: number): void => {
    const labels = { [labelNames[0]]: a, [labelNames[1]]: b };
    total.inc(labels);
    duration.observe(labels, seconds);
  };
}

export class Metrics {
  private readonly registry = new Registry();
  private readonly rpc = requestFamily(this.registry, 'sts_rpc', 'RPCs by method and gRPC status', ['method', 'code']);
  private readonly http = requestFamily(this.registry, 'sts_http', 'HTTP requests by route and status code', ['route', 'status']);
  private readonly sources: GaugeSource[] = [];
  /** Families reported by the gauge sources, created at their first sample (prom-client wants label names up front). */
  private readonly families = new Map<string, Gauge | Counter>();

  constructor() {
    new Gauge({ name: 'sts_build_info', help: 'Always 1; the labels name the running STS and Node.js versions.', labelNames: ['version', 'node'], registers: [this.registry] }).set(
      { version: STS_VERSION, node: process.version },
      1,
    );
    processMetrics();
  }

  /** Records one finished RPC. */
  observe(method: string, code: string, seconds: number): void {
    this.rpc(method, code, seconds);
  }

  /** Records one finished HTTP request; `route` is one of a fixed set, never the raw path. */
  observeHttp(route: string, status: number, seconds: number): void {
    this.http(route, String(status), seconds);
  }

  /** Values computed at each scrape (key ring state, cluster connection, ...). */
  addGauges(source: GaugeSource): void {
    this.sources.push(source);
  }

  private refreshSources(): void {
    for (const source of this.sources) {
      for (const g of source()) {
        let family = this.families.get(g.name);
        if (!family) {
          const first = g.samples[0];
          if (!first) continue;
          const options = { name: g.name, help: g.help, labelNames: Object.keys(first.labels), registers: [this.registry] };
          family = g.type === 'counter' ? new Counter(options) : new Gauge(options);
          this.families.set(g.name, family);
        }
        // Each scrape reports exactly the samples the source gives now (a key that is gone disappears).
        family.reset();
        for (const s of g.samples) {
          if (family instanceof Gauge) family.set(s.labels, s.value);
          else family.inc(s.labels, s.value);
        }
      }
    }
  }

  /** The exposition text: this server's metrics, then the process's. */
  async render(): Promise<string> {
    this.refreshSources();
    const own = await this.registry.metrics();
    return own + '\n' + (await processMetrics().metrics());
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Serves GET /metrics; resolves with the bound port. */
  async listen(address: string): Promise<{ port: number; server: Server }> {
    const server = createServer((req, res) => {
      if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
        this.render().then(
          (text) => {
            res.writeHead(200, { 'content-type': this.contentType });
            res.end(text);
          },
          (err: unknown) => {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(`metrics failed: ${(err as Error).message}\n`);
          },
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found: metrics are at /metrics\n');
      }
    });
    return { port: await listen(server, address, 'metrics.address'), server };
  }
}
