/**
 * The compiled form of a configuration: per entry point, the routes in evaluation order and an SNI
 * index that finds the few routes that can match a name without scanning all of them.
 */
import type { Router } from "../config/model.ts";
import type { CompiledRule } from "../rules/index.ts";

export type RouteMode = "terminate" | "passthrough" | "tcp";

export interface Route {
  name: string;
  router: Router;
  rule: CompiledRule;
  priority: number;
  /** True when the priority came from the configuration rather than the rule length. */
  explicitPriority: boolean;
  mode: RouteMode;
  /** TLS options name for terminating routes, null otherwise. */
  tlsOptions: string | null;
  service: string;
  middlewares: string[];
  /** Position in the entry point's evaluation order (0 = evaluated first). */
  rank: number;
}

export interface RouteTable {
  entryPoint: string;
  /** Routers with `tls` (terminating and passthrough), in evaluation order. */
  tls: Route[];
  /** Plain TCP routers, in evaluation order. */
  tcp: Route[];
  tlsIndex: SniIndex;
  /** Only plain TCP routers: connections are handed over without reading a byte (server-first protocols). */
  fastPath: boolean;
}

/** Traefik's order: priority descending; we break ties by router name so the order never changes between runs. */
export function compareRoutes(
  a: Pick<Route, "priority" | "name">,
  b: Pick<Route, "priority" | "name">,
): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** Everything after the first label, or null for a one-label name. */
export function parentDomain(name: string): string | null {
  const dot = name.indexOf(".");
  return dot === -1 ? null : name.slice(dot + 1);
}

export class SniIndex {
  private readonly exact = new Map<string, Route[]>();
  private readonly wildcard = new Map<string, Route[]>();
  /** Routes the index cannot narrow (catch-all, regexp, ClientIP-only ...): always candidates. */
  private readonly unindexed: Route[] = [];

  /** `routes` must be in evaluation order. */
  constructor(
    routes: readonly Route[],
    keysOf: (route: Route) => { exact: string[]; wildcardParents: string[] } | null,
  ) {
    for (const route of routes) {
      const keys = keysOf(route);
      if (!keys) {
        this.unindexed.push(route);
        continue;
      }
      for (const name of new Set(keys.exact)) push(this.exact, name, route);
      for (const parent of new Set(keys.wildcardParents)) push(this.wildcard, parent, route);
    }
  }

  /** Routes that may match `sni`, in evaluation order. */
  *candidates(sni: string): Generator<Route> {
    const parent = parentDomain(sni);
    const lists = [
      this.exact.get(sni) ?? [],
      (parent !== null ? this.wildcard.get(parent) : undefined) ?? [],
      this.unindexed,
    ].filter((l) => l.length > 0);
    if (lists.length === 1) {
      yield* lists[0]!;
      return;
    }
    const cursor = lists.map(() => 0);
    let lastRank = -1;
    for (;;) {
      let best = -1;
      for (let i = 0; i < lists.length; i++) {
        const r = lists[i]![cursor[i]!];
        if (r && (best === -1 || r.rank < lists[best]![cursor[best]!]!.rank)) best = i;
      }
      if (best === -1) return;
      const route = lists[best]![cursor[best]!]!;
      cursor[best]!++;
      // A route indexed under both its exact name and a wildcard parent appears twice: yield it once.
      if (route.rank === lastRank) continue;
      lastRank = route.rank;
      yield route;
    }
  }

  get size(): { exact: number; wildcard: number; unindexed: number } {
    return { exact: this.exact.size, wildcard: this.wildcard.size, unindexed: this.unindexed.length };
  }
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}
