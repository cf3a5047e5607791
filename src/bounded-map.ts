/**
 * A Map that holds at most `max` entries and forgets the oldest-written one when full (insertion order;
 * reads do not reorder, so a hit costs one lookup). `max` 0 holds nothing. The in-memory caches of the hot
 * path (sessions, directory records) use it so that their memory has a bound an operator sets.
 */
export class BoundedMap<V> {
  private readonly m = new Map<string, V>();

  constructor(private readonly max: number) {}

  get(k: string): V | undefined {
    return this.m.get(k);
  }

  set(k: string, v: V): void {
    if (this.max === 0) return;
    // A rewritten entry counts as new; a new one makes room first.
    if (!this.m.delete(k) && this.m.size >= this.max) this.m.delete(this.m.keys().next().value!);
    this.m.set(k, v);
  }

  delete(k: string): void {
    this.m.delete(k);
  }

  clear(): void {
    this.m.clear();
  }

  get size(): number {
    return this.m.size;
  }
}
