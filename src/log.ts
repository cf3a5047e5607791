/**
 * Structured JSON logs: one object per line on stdout (or a given sink).
 *
 * Callers pass fields, never whole requests: the log must never see secrets, keys, passwords or tokens.
 * Errors are reduced to name, code and message plus the cause chain, which the domain code keeps free of
 * secrets (see src/errors.ts).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds these fields to every line. */
  child(fields: LogFields): Logger;
}

export type LogSink = (line: string) => void;

/** Turns an Error into plain fields, following `cause` a few levels (stack only for non-STS errors). */
export function errorFields(err: unknown, depth = 0): unknown {
  if (!(err instanceof Error)) return { value: String(err) };
  const out: Record<string, unknown> = { name: err.name, message: err.message };
  const code = (err as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (err.name !== 'StsError' && err.stack) out.stack = err.stack.split('\n').slice(0, 8).join('\n');
  if (err.cause !== undefined && depth < 3) out.cause = errorFields(err.cause, depth + 1);
  return out;
}

export function createLogger(level: LogLevel = 'info', sink: LogSink = (l) => process.stdout.write(l + '\n'), base: LogFields = {}): Logger {
  const min = RANK[level];
  const write = (lvl: LogLevel, msg: string, fields?: LogFields): void => {
    if (RANK[lvl] < min) return;
    const entry: LogFields = { time: new Date().toISOString(), level: lvl, msg, ...base, ...fields };
    if (entry.err !== undefined) entry.err = errorFields(entry.err);
    sink(JSON.stringify(entry));
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (fields) => createLogger(level, sink, { ...base, ...fields }),
  };
}

/** A logger that discards everything (tests that do not inspect logs). */
export const silentLogger: Logger = createLogger('error', () => {});
