/**
 * What the --peers part needs from each server it compares (STS, Hydra, Keycloak): how to fetch it once, how
 * to start it pinned to one core with its test data, and what each of the three kinds of work calls on it.
 */
import type { HttpLoadSpec } from '../load-protocol.js';
import type { Proc } from './process.js';

/** The issue's three comparisons. */
export type Work = 'introspection' | 'client-credentials' | 'password';
export const WORKS: readonly Work[] = ['introspection', 'client-credentials', 'password'];

/**
 * Users with a password on every server that has users, logged on in turn: as many as the highest concurrency,
 * so no username has more than one logon in flight. STS counts logons under way against the username's
 * throttle (session.throttle*: slowed down past 3, refused past 10), as a brute-force defence; a benchmark
 * that sent 16 parallel logons for one user would measure the throttle, not the logon.
 */
export const PASSWORD_USERS = 64;

/** One kind of call under load: an STS RPC through bench/load.ts, or an HTTP request through bench/http-load.ts. */
export type Load =
  | { tool: 'grpc'; rpc: string; target: string; fixtureFile: string; tokenFile: string; what: string }
  | { tool: 'http'; spec: HttpLoadSpec; what: string };

export interface Context {
  /** The checkout. */
  root: string;
  /** The ignored folder peers are fetched into (.peers/). */
  peersDir: string;
  /** This run's temporary files (data directories, specs, fixtures, logs). */
  runDir: string;
  log(line: string): void;
}

export interface Running {
  proc: Proc;
  /** What each work calls; a work the server cannot do is in `cannot`, with the reason. */
  loads: Partial<Record<Work, Load>>;
  cannot: Partial<Record<Work, string>>;
  /** What the report should say about this server's setup (storage, hashing, logging). */
  notes: string[];
}

export interface PeerServer {
  name: string;
  version: string;
  /** Fetches (or builds) the server once into ctx.peersDir; a no-op when it is there. Throws when it cannot. */
  fetch(ctx: Context): Promise<void>;
  /** Starts the server on 127.0.0.1, pinned to the server core, and makes its test data. */
  start(ctx: Context): Promise<Running>;
}

/** A request body in application/x-www-form-urlencoded. */
export function form(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString();
}

/** HTTP Basic client authentication (RFC 6749 section 2.3.1: both parts form-urlencoded first). */
export function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

/** A JSON request during setup (not under load); throws with the response body on an unexpected status. */
export async function httpJson(url: string, init: { method?: string; headers?: Record<string, string>; body?: string; expect?: number[] } = {}): Promise<unknown> {
  const res = await fetch(url, { method: init.method ?? 'GET', headers: init.headers ?? {}, ...(init.body === undefined ? {} : { body: init.body }), signal: AbortSignal.timeout(60_000) });
  const text = await res.text();
  if (!(init.expect ?? [200]).includes(res.status)) throw new Error(`${init.method ?? 'GET'} ${url}: HTTP ${res.status}: ${text.slice(0, 300)}`);
  return text ? (JSON.parse(text) as unknown) : undefined;
}

/** A token endpoint's access_token (client_credentials or password grant), for setup. */
export async function accessToken(url: string, authorization: string | undefined, fields: Record<string, string>): Promise<string> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', ...(authorization ? { authorization } : {}) };
  const res = (await httpJson(url, { method: 'POST', headers, body: form(fields) })) as { access_token?: string };
  if (!res.access_token) throw new Error(`${url}: no access_token in the response`);
  return res.access_token;
}

/** The spec of a token endpoint or introspection request with client authentication, bodies cycled. */
export function formPost(name: string, url: string, authorization: string | undefined, bodies: string[], contains: string): HttpLoadSpec {
  return {
    name,
    url,
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...(authorization ? { authorization } : {}) },
    bodies,
    status: 200,
    contains,
  };
}
