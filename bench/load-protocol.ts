/**
 * What bench/load.ts prints on stdout for bench/run.ts (kept apart from load.ts, which runs when imported).
 */
export interface LoadResult {
  rpc: string;
  concurrency: number;
  /** Servers the calls were spread over. */
  targets: number;
  /** Operations completed in the measured window (a handover is one operation of two calls). */
  requests: number;
  errors: number;
  /** Operations per second. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Measured window (ms), warm-up excluded. */
  durationMs: number;
  /** CPU time of this load process during the measured window, in cores (1 = one core busy). */
  loadCpuCores: number;
  /** With --warmup-round: when the window started, and when the first round had returned (ms from the start). */
  warmupMs?: number;
  firstRoundMs?: number;
  /** Message of the first error in the measured window, if any. */
  firstError?: string;
}

/** Lines printed at the start and the end of the measured window, so the parent can sample CPU use. */
export const MEASURE_START = '{"event":"measure-start"}';
export const MEASURE_END = '{"event":"measure-end"}';

/**
 * What bench/http-load.ts sends (a JSON file, --spec): one kind of HTTP request, its bodies cycled, and
 * what a successful response looks like.
 */
export interface HttpLoadSpec {
  /** Shown in logs and errors. */
  name: string;
  /** http://127.0.0.1:PORT/path (the benchmark only talks to localhost). */
  url: string;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  /** Request bodies, cycled (one per call); [''] for none. */
  bodies: string[];
  /** A success: this status and a body that contains `contains`. */
  status: number;
  contains: string;
}
