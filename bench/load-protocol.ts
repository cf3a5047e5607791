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
  /** Message of the first error in the measured window, if any. */
  firstError?: string;
}

/** Lines printed at the start and the end of the measured window, so the parent can sample CPU use. */
export const MEASURE_START = '{"event":"measure-start"}';
export const MEASURE_END = '{"event":"measure-end"}';
