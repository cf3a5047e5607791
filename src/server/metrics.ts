/**
 * Prometheus metrics (text exposition format 0.0.4) on a separate HTTP listener (`metrics.address`):
 * RPC counts and latency by method and status, the key ring's state, and the cluster connection.
 * Recording is a couple of map lookups per RPC, so it stays on for every call.
 */
import { type Server, createServer } from 'node:http';
import { StartupError } from '../errors.js';
import { parseAddress } from '../config/load.js';

/** Latency buckets in seconds: from sub-millisecond lookups to multi-second password hashing. */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

interface Series {
  method: string;
  code: string;
  count: number;
  sum: number;
  buckets: number[];
}

export type GaugeSource = () => { name: string; help: string; type?: 'gauge' | 'counter'; samples: { labels: Record<string, string>; value: number }[] }[];

const escape = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const labels = (l: Record<string, string>) => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escape(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
};

export class Metrics {
  private readonly series = new Map<string, Series>();
  private readonly gauges: GaugeSource[] = [];

  /** Records one finished RPC. */
  observe(method: string, code: string, seconds: number): void {
    const key = `${method} ${code}`;
    let s = this.series.get(key);
    if (!s) {
      s = { method, code, count: 0, sum: 0, buckets: BUCKETS.map(() => 0) };
      this.series.set(key, s);
    }
    s.count++;
    s.sum += seconds;
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) s.buckets[i]!++;
  }

  addGauges(source: GaugeSource): void {
    this.gauges.push(source);
  }

  render(): string {
    const out: string[] = [];
    out.push('# HELP sts_rpc_requests_total Finished RPCs by method and gRPC status.', '# TYPE sts_rpc_requests_total counter');
    const all = [...this.series.values()].sort((a, b) => (a.method + a.code < b.method + b.code ? -1 : 1));
    for (const s of all) out.push(`sts_rpc_requests_total${labels({ method: s.method, code: s.code })} ${s.count}`);
    out.push('# HELP sts_rpc_duration_seconds RPC handling time by method and gRPC status.', '# TYPE sts_rpc_duration_seconds histogram');
    for (const s of all) {
      const l = { method: s.method, code: s.code };
      BUCKETS.forEach((b, i) => out.push(`sts_rpc_duration_seconds_bucket${labels({ ...l, le: String(b) })} ${s.buckets[i]}`));
      out.push(`sts_rpc_duration_seconds_bucket${labels({ ...l, le: '+Inf' })} ${s.count}`);
      out.push(`sts_rpc_duration_seconds_sum${labels(l)} ${s.sum}`);
      out.push(`sts_rpc_duration_seconds_count${labels(l)} ${s.count}`);
    }
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
    const { host, port } = parseAddress(address, 'metrics.address');
    const server = createServer((req, res) => {
      if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(this.render());
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found: metrics are at /metrics\n');
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new StartupError('listen_failed', `metrics.address ${address}: cannot listen (${err.message})`, { cause: err })));
      server.listen(port, host.replace(/^\[|\]$/g, ''), () => resolve());
    });
    return { port: (server.address() as { port: number }).port, server };
  }
}
