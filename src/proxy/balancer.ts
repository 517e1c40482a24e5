/**
 * Traefik's weighted round robin, used for the servers of a load balancer (weight 1 each) and for the
 * children of a weighted service. It is the interleaved WRR of LVS: weights 3:1 give A, A, A, B rather
 * than a smooth A, B, A, A, so that picks over a cycle follow Traefik's exactly.
 *
 * One difference, on purpose: Traefik's loop never ends when every entry that is up has weight 0
 * while a down entry has a positive weight; here `pick` answers null in that case, as it does for
 * "nothing up" and "every weight is 0".
 */

export interface WeightedEntry<T> {
  name: string;
  weight: number;
  item: T;
}

function gcd(a: number, b: number): number {
  let x = a;
  let y = b;
  while (y !== 0) [x, y] = [y, x % y];
  return x;
}

export class WeightedRoundRobin<T> {
  private readonly entries: WeightedEntry<T>[];
  /** Names, not entries: entries with the same name (equal server addresses) share one status. */
  private readonly down = new Set<string>();
  private readonly maxWeight: number;
  private readonly weightGcd: number;
  private index = -1;
  private currentWeight = 0;

  constructor(entries: WeightedEntry<T>[]) {
    // Negative weights are refused by validation; should one get here, it is never picked.
    this.entries = entries.map((e) => ({ ...e, weight: e.weight > 0 ? Math.floor(e.weight) : 0 }));
    this.maxWeight = this.entries.reduce((m, e) => Math.max(m, e.weight), 0);
    this.weightGcd = this.entries.reduce((g, e) => gcd(g, e.weight), 0);
  }

  /** The next entry's item, or null when no entry that is up can ever be chosen. */
  pick(): T | null {
    const n = this.entries.length;
    if (n === 0 || this.maxWeight === 0) return null;
    if (!this.entries.some((e) => e.weight > 0 && !this.down.has(e.name))) return null;
    // With an up entry of positive weight, a full sweep of currentWeight from max down to gcd meets
    // it; the bound is a belt over those braces.
    const bound = n * (this.maxWeight / this.weightGcd + 1);
    for (let step = 0; step <= bound; step++) {
      this.index = (this.index + 1) % n;
      if (this.index === 0) {
        this.currentWeight -= this.weightGcd;
        if (this.currentWeight <= 0) this.currentWeight = this.maxWeight;
      }
      const entry = this.entries[this.index]!;
      if (!this.down.has(entry.name) && entry.weight > 0 && entry.weight >= this.currentWeight) {
        return entry.item;
      }
    }
    return null;
  }

  setStatus(name: string, up: boolean): void {
    if (up) this.down.delete(name);
    else this.down.add(name);
  }

  isUp(name: string): boolean {
    return !this.down.has(name);
  }

  /** Entries that are up (any weight). */
  get upCount(): number {
    return this.entries.filter((e) => !this.down.has(e.name)).length;
  }

  /** Whether `pick` can answer anything: some entry is up and has a positive weight. */
  get available(): boolean {
    return this.entries.some((e) => e.weight > 0 && !this.down.has(e.name));
  }

  /** The items in declaration order with their status, for failover lists and reports. */
  list(): { name: string; weight: number; item: T; up: boolean }[] {
    return this.entries.map((e) => ({ ...e, up: !this.down.has(e.name) }));
  }
}
