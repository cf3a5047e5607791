/**
 * The limits of password hashing, apart from the hashing itself (src/session/password.ts), so that the
 * configuration can check them without loading the native Argon2 binding.
 */

/** Argon2id's cost parameters, as the PHC string and `session.passwordHash.*` give them. */
export interface Argon2Params {
  /** Memory, in KiB (`m`). */
  memoryKiB: number;
  /** Passes over the memory (`t`). */
  timeCost: number;
  /** Lanes (`p`). */
  parallelism: number;
}

/**
 * OWASP Password Storage Cheat Sheet, Argon2id: "m=47104 (46 MiB), t=1, p=1 ... m=7168 (7 MiB), t=5, p=1";
 * equivalent strengths, trading memory for passes. A setting meets the floor when it has at least the memory
 * and at least the passes of one of them.
 */
export const OWASP_ARGON2ID: readonly { memoryKiB: number; timeCost: number }[] = [
  { memoryKiB: 47104, timeCost: 1 },
  { memoryKiB: 19456, timeCost: 2 },
  { memoryKiB: 12288, timeCost: 3 },
  { memoryKiB: 9216, timeCost: 4 },
  { memoryKiB: 7168, timeCost: 5 },
];

/** OWASP's first recommendation; the default of `session.passwordHash.*`. */
export const DEFAULT_ARGON2: Argon2Params = { memoryKiB: 19456, timeCost: 2, parallelism: 1 };

/**
 * The most one stored hash may cost, whoever made it: 128 MiB of memory (what a scrypt N=2^17, r=8 password
 * hash of earlier versions takes), 10 passes, 4 lanes. A record from the grid or an import file with more is
 * refused, so none can make a logon allocate gigabytes or run for minutes; the configuration is held to the
 * same limits, so that every node accepts what another makes.
 */
export const HASH_LIMITS = { maxMemoryKiB: 128 * 1024, maxTimeCost: 10, maxParallelism: 4 } as const;

export function meetsOwaspFloor(p: Pick<Argon2Params, 'memoryKiB' | 'timeCost'>): boolean {
  return OWASP_ARGON2ID.some((f) => p.memoryKiB >= f.memoryKiB && p.timeCost >= f.timeCost);
}
