/** Plain HTTP(S) requests with full control of method, headers and body (fetch hides some of them). */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** HTTPS options (ca, cert, key); plain HTTP when absent. */
  tls?: Pick<RequestOptions, 'ca' | 'cert' | 'key'>;
}

/** One request on a fresh connection to 127.0.0.1:`port`; resolves with the whole answer. */
export function httpGet(port: number, path: string, req: HttpRequest = {}): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port, path, method: req.method ?? 'GET', headers: req.headers ?? {}, agent: false as const, timeout: 30_000 };
    const r = req.tls ? httpsRequest({ ...options, ...req.tls }) : httpRequest(options);
    r.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    r.on('timeout', () => r.destroy(new Error(`no answer from 127.0.0.1:${port}${path}`)));
    r.on('error', reject);
    r.end(req.body);
  });
}
