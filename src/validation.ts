/**
 * Validation of whole stored records that arrive from elsewhere (the cluster, an import): they must pass the
 * very rules of the RPC that creates them. Each is turned back into its request message and validated by the
 * same function the RPC uses, and must come out unchanged, so there is one set of rules, not two.
 */
import { isDeepStrictEqual } from 'node:util';
import { StsError, invalidArgument } from './errors.js';

/** Throws INVALID_ARGUMENT (naming `field`) unless `redo()` accepts the record and gives it back unchanged. */
export function sameAfterFrontDoor<T>(field: string, record: T, redo: () => T): void {
  let again: T;
  try {
    again = redo();
  } catch (err) {
    if (err instanceof StsError) throw err;
    throw invalidArgument(field, 'is not a well-formed record');
  }
  if (!isDeepStrictEqual(again, record)) throw invalidArgument(field, 'differs from what the admin RPCs would store');
}

/** Throws INVALID_ARGUMENT unless `v` is a time in epoch milliseconds. */
export function checkTime(v: unknown, field: string): void {
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw invalidArgument(field, 'must be a time in epoch milliseconds');
}
