/**
 * The HTTP listener (http.address): what browsers and standard JWT libraries need from STS, read-only.
 *
 *   GET /.well-known/jwks.json               the JWKS, exactly as PopService.GetJwks publishes it
 *   GET /.well-known/openid-configuration    issuer, jwks_uri and the signing algorithms (discovery.ts)
 *   GET /healthz                             the gRPC health of the whole server: 200 SERVING, else 503
 *   GET /test-page, /test-page/*            the browser test page and its files, with http.testPage (test-page.ts)
 *
 * Every other path gets 404; methods other than GET and HEAD get 405 (OPTIONS answers CORS preflights).
 * No route takes a body (413). Request heads are bounded by http.maxHeaderBytes (431) and whole requests by
 * http.requestTimeoutMs (408). Cross-origin reads are allowed to the origins of http.corsOrigins only;
 * others get 403. TLS: the tls.* certificate and key when tls.certFile is set; with tls.requireClientCert the
 * HTTP listener requires a client certificate too (the same settings as gRPC). Nothing here reads a secret
 * or a key's private half, so nothing here needs authentication.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createHash } from 'node:crypto';
import type { Config } from '../config/defaults.js';
import { corsOrigins, parseAddress } from '../config/load.js';
import type { Logger } from '../log.js';
import type { JwksPublisher, PublishedJwks } from '../pop/jwks-publisher.js';
import type { Metrics } from '../server/metrics.js';
import { readTlsFiles } from '../server/server.js';
import { DISCOVERY_PATH, JWKS_PATH, discoveryDocument } from './discovery.js';
import { listen } from './listen.js';
import { TEST_PAGE_CSP, loadTestPage } from './test-page.js';

export interface HttpDeps {
  config: Config;
  jwks: JwksPublisher;
  metrics: Metrics;
  logger: Logger;
  /** gRPC health of the whole server ('' service): /healthz mirrors it. */
  serving: () => boolean;
}

export interface HttpListener {
  readonly port: number;
  /** The base URL of the jwks_uri (http.publicUrl, or derived from the bound address). */
  readonly baseUrl: string;
  close(): Promise<void>;
}

/** One answer: status, headers and body (omitted for HEAD by node:http). */
interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string | Buffer;
}

type Route = () => Reply;

const ALLOW = 'GET, HEAD, OPTIONS';
/** How long a browser may cache a preflight's answer (Fetch: Access-Control-Max-Age), in seconds. */
const PREFLIGHT_MAX_AGE_S = 600;
/** Metrics label of requests that match no route: the raw path never becomes a label (unbounded series). */
const UNMATCHED = 'unmatched';

const text = (status: number, message: string, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...headers },
  body: message + '\n',
});

const etagOf = (body: string | Buffer): string => `"${createHash('sha256').update(body).digest('base64url')}"`;

/**
 * If-None-Match (RFC 9110 section 13.1.2): "*" or a list of entity tags, compared weakly (a W/ prefix on
 * either side does not matter).
 */
export function noneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const tag = etag.replace(/^W\//, '');
  return header.split(',').some((t) => {
    const v = t.trim();
    return v === '*' || v.replace(/^W\//, '') === tag;
  });
}

/** The request has a body: Content-Length above 0, or any Transfer-Encoding (RFC 9112 section 6.3). */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** http(s)://host:port of a bound address; a wildcard host becomes loopback (http.publicUrl names the rest). */
function derivedBaseUrl(address: string, port: number, tls: boolean): string {
  const { host } = parseAddress(address, 'http.address');
  const reachable = host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host;
  return `${tls ? 'https' : 'http'}://${reachable}:${port}`;
}

export async function startHttp(deps: HttpDeps): Promise<HttpListener> {
  const { config, jwks, metrics, logger } = deps;
  const tls = config['tls.certFile'] ? readTlsFiles(config) : undefined;
  const origins = corsOrigins(config['http.corsOrigins']);
  const anyOrigin = origins.includes('*');
  const allowedOrigins = new Set(origins);
  const publicOrigin = config['http.publicUrl'] ? new URL(config['http.publicUrl']).origin : undefined;
  let baseUrl = '';

  const cacheable = (body: string | Buffer, type: string, etag: string, cacheControl: string, headers: Record<string, string> = {}): Reply => ({
    status: 200,
    headers: { 'content-type': type, 'cache-control': cacheControl, etag, ...headers },
    body,
  });

  /** Cache lifetime of the JWKS (and of the discovery document, whose algorithm list follows the keys). */
  const keysCacheControl = (): { cacheControl: string; snapshot: PublishedJwks } => {
    const snapshot = jwks.current();
    return { snapshot, cacheControl: `public, max-age=${Math.floor(jwks.maxAgeMsOf(snapshot) / 1000)}` };
  };

  let discovery: { jwksEtag: string; json: string; etag: string } | undefined;
  const routes = new Map<string, Route>([
    [
      JWKS_PATH,
      () => {
        // RFC 7517 section 8.5: application/jwk-set+json.
        const { snapshot, cacheControl } = keysCacheControl();
        return cacheable(snapshot.json, 'application/jwk-set+json', snapshot.etag, cacheControl);
      },
    ],
    [
      DISCOVERY_PATH,
      () => {
        const { snapshot, cacheControl } = keysCacheControl();
        if (discovery?.jwksEtag !== snapshot.etag) {
          const json = JSON.stringify(discoveryDocument(config['session.issuer'], baseUrl, snapshot));
          discovery = { jwksEtag: snapshot.etag, json, etag: etagOf(json) };
        }
        return cacheable(discovery.json, 'application/json', discovery.etag, cacheControl);
      },
    ],
    [
      '/healthz',
      () => {
        const serving = deps.serving();
        return { status: serving ? 200 : 503, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' }, body: JSON.stringify({ status: serving ? 'SERVING' : 'NOT_SERVING' }) };
      },
    ],
  ]);
  if (config['http.testPage']) {
    for (const [path, asset] of loadTestPage()) {
      // no-cache: revalidated on every load (ETag), so a new build of the page is seen at once.
      const headers: Record<string, string> = asset.type.startsWith('text/html') ? { 'content-security-policy': TEST_PAGE_CSP, 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' } : {};
      const etag = etagOf(asset.body);
      routes.set(path, () => cacheable(asset.body, asset.type, etag, 'no-cache', headers));
    }
  }

  /**
   * The CORS decision (Fetch standard, CORS protocol): a request without Origin (a library, a same-origin
   * navigation) or from this server's own origin needs no CORS headers; a listed origin gets them; any other
   * origin is refused (403) rather than answered without them, so the refusal shows in the status and in
   * the metrics, not only in a browser console.
   */
  const corsOf = (req: IncomingMessage): { allowed: boolean; headers: Record<string, string> } => {
    const origin = req.headers.origin;
    if (origin === undefined) return { allowed: true, headers: {} };
    const own = `${tls ? 'https' : 'http'}://${req.headers.host ?? ''}`;
    if (origin === own || origin === publicOrigin) return { allowed: true, headers: {} };
    if (anyOrigin) return { allowed: true, headers: { 'access-control-allow-origin': '*', 'access-control-expose-headers': 'ETag' } };
    if (allowedOrigins.has(origin)) return { allowed: true, headers: { 'access-control-allow-origin': origin, 'access-control-expose-headers': 'ETag' } };
    return { allowed: false, headers: {} };
  };

  const refusedOrigin = () => text(403, 'forbidden: this origin may not call STS cross-origin; an operator can add it to http.corsOrigins');

  const answer = (req: IncomingMessage, route: Route | undefined): Reply => {
    const method = req.method ?? '';
    if (!route) return text(404, `not found: STS serves ${JWKS_PATH}, ${DISCOVERY_PATH} and /healthz here`);
    if (hasBody(req)) {
      // Nothing here reads a body; Connection: close (set by the caller) keeps node from reading it.
      return ['GET', 'HEAD', 'OPTIONS'].includes(method) ? text(413, 'content too large: no request body is accepted here') : text(405, `method not allowed: use GET or HEAD`, { allow: ALLOW });
    }
    const cors = corsOf(req);
    if (method === 'OPTIONS') {
      if (req.headers.origin === undefined || req.headers['access-control-request-method'] === undefined) return { status: 204, headers: { allow: ALLOW }, body: '' };
      if (!cors.allowed) return refusedOrigin();
      // A preflight (Fetch, CORS-preflight request): read-only methods, and If-None-Match for revalidation.
      return {
        status: 204,
        headers: {
          ...cors.headers,
          'access-control-allow-methods': 'GET, HEAD',
          'access-control-allow-headers': 'If-None-Match',
          'access-control-max-age': String(PREFLIGHT_MAX_AGE_S),
        },
        body: '',
      };
    }
    if (method !== 'GET' && method !== 'HEAD') return text(405, `method not allowed: use GET or HEAD`, { allow: ALLOW });
    if (!cors.allowed) return refusedOrigin();
    const reply = route();
    reply.headers = { ...reply.headers, ...cors.headers };
    const etag = reply.headers.etag;
    if (reply.status === 200 && etag !== undefined && noneMatch(req.headers['if-none-match'], etag)) {
      // RFC 9110 section 15.4.5: a 304 carries the ETag and Cache-Control a 200 would have had.
      const { 'content-type': _type, ...headers } = reply.headers;
      return { status: 304, headers, body: '' };
    }
    return reply;
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    const path = (req.url ?? '').split('?')[0]!;
    const route = routes.get(path);
    const label = route ? path : UNMATCHED;
    res.once('finish', () => {
      const seconds = (performance.now() - started) / 1000;
      metrics.observeHttp(label, res.statusCode, seconds);
      logger.debug('http request', { method: req.method, route: label, status: res.statusCode, ms: Math.round(seconds * 1000) });
    });
    let reply: Reply;
    try {
      reply = answer(req, route);
    } catch (err) {
      logger.error('http request failed', { route: label, err });
      reply = text(500, 'internal error');
    }
    const body = reply.status === 304 || reply.status === 204 ? '' : reply.body;
    res.writeHead(reply.status, {
      'x-content-type-options': 'nosniff',
      // Answers differ by Origin (CORS headers, 403): shared caches must keep them apart.
      vary: 'Origin',
      ...(hasBody(req) ? { connection: 'close' } : {}),
      ...(reply.status === 304 || reply.status === 204 ? {} : { 'content-length': String(Buffer.byteLength(body)) }),
      ...reply.headers,
    });
    res.end(body);
  };

  const timeout = config['http.requestTimeoutMs'];
  const limits = {
    maxHeaderSize: config['http.maxHeaderBytes'],
    requestTimeout: timeout,
    headersTimeout: timeout,
    // node checks the two timeouts at this interval (default 30 s, far beyond a short requestTimeout).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(timeout / 4))),
  };
  const server: Server = tls
    ? createHttpsServer({ ...limits, cert: tls.cert, key: tls.key, ...(config['tls.requireClientCert'] && tls.ca ? { ca: tls.ca, requestCert: true, rejectUnauthorized: true } : {}) }, handle)
    : createHttpServer(limits, handle);
  // node's own answers to a malformed, oversized or slow request (400, 431, 408), counted like the others.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code !== 'ECONNRESET' && socket.writable && socket.bytesWritten === 0) {
      const [status, reason] = err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large'] : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout'] : [400, 'Bad Request'];
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
      metrics.observeHttp(UNMATCHED, status, 0);
      return;
    }
    socket.destroy();
  });

  const port = await listen(server, config['http.address'], 'http.address');
  baseUrl = config['http.publicUrl'] ? config['http.publicUrl'].replace(/\/+$/, '') : derivedBaseUrl(config['http.address'], port, tls !== undefined);
  let closing: Promise<void> | undefined;
  return {
    port,
    baseUrl,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}
