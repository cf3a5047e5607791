/**
 * Prometheus metrics (text exposition format 0.0.4) on a separate HTTP listener (`metrics.address`):
 * RPC counts and latency by method and status, HTTP requests of src/http by route and status code, the key
 * ring's state, and the cluster connection.
 * Recording is a couple of map lookups per RPC, so it stays on for every call.
 */
import { type Server, createServer } from 'node:http';
import { listen } from '../http/listen.js';

/** Latency buckets in seconds: from sub-millisecond lookups to multi-second password hashing. */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

const escape = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const labels = (l: Record<string, string>) => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escape(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
};

interface Series {
  labels: Record<string, string>;
  count: number;
  sum: number;
  buckets: number[];
}

/** A counter of finished requests and a latency histogram, both by the same two labels. */
class RequestFamily {
  private readonly series = new Map<string, Series>();

  constructor(
    private readonly prefix: string,
    private readonly what: string,
    private readonly labelNames: readonly [string, string],
  ) {}

  observe(a: string, b: string, seconds: number): void {
    const key = `${a} ${b}`;
    let s = this.series.get(key);
    if (!s) {
      s = { labels: { [this.labelNames[0]]: a, [this.labelNames[1]]: b }, count: 0, sum: 0, buckets: BUCKETS.map(() => 0) };
      this.series.set(key, s);
    }
    s.count++;
    s.sum += seconds;
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) s.buckets[i]!++;
  }

  render(out: string[]): void {
    const { prefix, what } = this;
    out.push(`# HELP ${prefix}_requests_total Finished ${what}.`, `# TYPE ${prefix}_requests_total counter`);
    const all = [...this.series.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, s]) => s);
    for (const s of all) out.push(`${prefix}_requests_total${labels(s.labels)} ${s.count}`);
    out.push(`# HELP ${prefix}_duration_seconds Handling time of ${what}.`, `# TYPE ${prefix}_duration_seconds histogram`);
    for (const s of all) {
      BUCKETS.forEach((b, i) => out.push(`${prefix}_duration_seconds_bucket${labels({ ...s.labels, le: String(b) })} ${s.buckets[i]}`));
      out.push(`${prefix}_duration_seconds_bucket${labels({ ...s.labels, le: '+Inf' })} ${s.count}`);
      out.push(`${prefix}_duration_seconds_sum${labels(s.labels)} ${s.sum}`);
      out.push(`${prefix}_duration_seconds_count${labels(s.labels)} ${s.count}`);
    }
  }
}

export type GaugeSource = () => { name: string; help: string; type?: 'gauge' | 'counter'; samples: { labels: Record<string, string>; value: number }[] }[];

export class Metrics {
  private readonly rpc = new RequestFamily('sts_rpc', 'RPCs by method and gRPC status', ['method', 'code']);
  private readonly http = new RequestFamily('sts_http', 'HTTP requests by route and status code', ['route', 'status']);
  private readonly gauges: GaugeSource[] = [];

  /** Records one finished RPC. */
  observe(method: string, code: string, seconds: number): void {
    this.rpc.observe(method, code, seconds);
  }

  /** Records one finished HTTP request; `route` is one of a fixed set, never the raw path. */
  observeHttp(route: string, status: number, seconds: number): void {
    this.http.observe(route, String(status), seconds);
  }

  addGauges(source: GaugeSource): void {
    this.gauges.push(source);
  }

  render(): string {
    const out: string[] = [];
    this.rpc.render(out);
    this.http.render(out);
    for (const source of this.gauges) {
      for (const g of source()) {
        out.push(`# HELP ${g.name} ${g.help}`, `# TYPE ${g.name} ${g.type ?? 'gauge'}`);
        for (const sample of g.samples) out.push(`${g.name}${labels(sample.labels)} ${sample.value}`);
      }
    }
    return out.join('\n') + '\n';
  }

  /** Serves GET /metrics; resolves with the bound port. */
  async listen(address: string): Promise<{ port: number; server: Server }> {
    const server = createServer((req, res) => {
      if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(this.render());
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found: metrics are at /metrics\n');
      }
    });
    return { port: await listen(server, address, 'metrics.address'), server };
  }
}
