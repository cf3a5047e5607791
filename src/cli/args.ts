/**
 * Command-line parsing for `sts`: a table of commands (a path of words such as `admin apps create`) with
 * their options, parsed by node:util's parseArgs. Options may stand anywhere on the line, before or after
 * the words of the command (`sts admin --address h:p apps list` = `sts admin apps list --address h:p`);
 * the command is found from the words, then every option given is checked against that command's own.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';

export type OptionSpecs = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

export class UsageError extends Error {}

/** A command could not reach the server: the message names the address and where it came from (exit 69). */
export class AdminConnectError extends Error {}

export interface CommandDef {
  /** The words of the command, for example ['admin', 'apps', 'create']. */
  path: readonly string[];
  options: OptionSpecs;
  /** Arguments after the command words: their names, for the usage message. Default: none. */
  args?: readonly string[];
  /** How many of `args` must be given (default: all of them). */
  minArgs?: number;
}

export interface Parsed<C extends CommandDef> {
  command: C | undefined;
  values: Values;
  args: string[];
  /** Words that matched no command (when `command` is undefined). */
  words: string[];
}

/** Options every command accepts, wherever they stand. */
export const GLOBAL_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const satisfies OptionSpecs;

/** The union of every command's options; two commands that give one name different types is a bug here. */
function union(commands: readonly CommandDef[]): OptionSpecs {
  const all: OptionSpecs = { ...GLOBAL_OPTIONS };
  for (const c of commands) {
    for (const [name, spec] of Object.entries(c.options)) {
      const seen = all[name];
      if (seen && (seen.type !== spec.type || Boolean(seen.multiple) !== Boolean(spec.multiple))) {
        throw new Error(`option --${name} has two types in the command table`);
      }
      all[name] = spec;
    }
  }
  return all;
}

/** Parses `argv` against `commands`: the longest command whose words begin the positionals wins. */
export function parseCommandLine<C extends CommandDef>(argv: string[], commands: readonly C[]): Parsed<C> {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options: union(commands), allowPositionals: true, strict: true }) as typeof parsed;
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  const { values, positionals } = parsed;
  let command: C | undefined;
  for (const c of commands) {
    if (c.path.length <= positionals.length && c.path.every((w, i) => positionals[i] === w) && (!command || c.path.length > command.path.length)) command = c;
  }
  if (!command) return { command, values, args: [], words: positionals };
  const args = positionals.slice(command.path.length);
  const name = `sts ${command.path.join(' ')}`;
  for (const option of Object.keys(values)) {
    if (!Object.hasOwn(command.options, option) && !Object.hasOwn(GLOBAL_OPTIONS, option)) throw new UsageError(`--${option} is not an option of \`${name}\``);
  }
  if (!values.help) {
    const max = command.args?.length ?? 0;
    const min = command.minArgs ?? max;
    if (args.length > max) throw new UsageError(`\`${name}\` takes ${max === 0 ? 'no arguments' : `at most ${max} argument(s) (${command.args!.join(' ')})`}, not "${args.slice(max).join(' ')}"`);
    if (args.length < min) throw new UsageError(`\`${name}\` needs ${command.args!.slice(args.length, min).join(' ')}`);
  }
  return { command, values, args, words: positionals };
}

/** A string option, or undefined. */
export function str(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

/** A string option that must be given and not empty. */
export function need(values: Values, name: string): string {
  const v = str(values, name);
  if (v === undefined || v === '') throw new UsageError(`--${name} is required`);
  return v;
}
