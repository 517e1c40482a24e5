/**
 * Lints on the route tables: what no peer checks and what users lose hours to. Routers that can
 * never win, wildcards that beat exact names by rule length alone, equal priorities that overlap,
 * one name served with different TLS options. Each check works from the SNI keys of the routes
 * (hash lookups), so 10k routers stay fast.
 */
import type { Model } from "../config/model.ts";
import type { Diagnostics } from "../config/reader.ts";
import { resolveRef } from "../config/refs.ts";
import type { CompiledConfig } from "../routing/compile.ts";
import { parentDomain, type Route } from "../routing/table.ts";
import { type RuleExpr, sniIndexKeys } from "../rules/index.ts";
import { WHOAMI_INTERNAL } from "./services.ts";

interface HostSet {
  exact: string[];
  wildcardParents: string[];
}

/** The names a rule matches when it is nothing but HostSNI leaves joined by `||`: then it matches all of them. */
export function pureHostSet(expr: RuleExpr): HostSet | null {
  if (expr.type === "or") {
    const left = pureHostSet(expr.left);
    const right = pureHostSet(expr.right);
    if (!left || !right) return null;
    return {
      exact: [...left.exact, ...right.exact],
      wildcardParents: [...left.wildcardParents, ...right.wildcardParents],
    };
  }
  if (expr.type !== "matcher" || expr.name !== "HostSNI") return null;
  const set: HostSet = { exact: [], wildcardParents: [] };
  for (const raw of expr.args) {
    const value = raw.toLowerCase().replace(/\.$/, "");
    if (value === "*") return null;
    if (value.startsWith("*.")) set.wildcardParents.push(value.slice(2));
    else set.exact.push(value);
  }
  return set;
}

function keysOf(route: Route): HostSet | null {
  return sniIndexKeys(route.rule);
}

/** Earliest rank at which each name (or wildcard parent) is fully taken by a pure-host route. */
class Coverage {
  readonly exact = new Map<string, Route>();
  readonly wildcard = new Map<string, Route>();
  catchAll: Route | null = null;

  add(route: Route): void {
    if (route.rule.catchAll) {
      this.catchAll ??= route;
      return;
    }
    const pure = pureHostSet(route.rule.expr);
    if (!pure) return;
    for (const name of pure.exact) if (!this.exact.has(name)) this.exact.set(name, route);
    for (const parent of pure.wildcardParents)
      if (!this.wildcard.has(parent)) this.wildcard.set(parent, route);
  }

  /** The earlier routes that together take every connection `keys` allows, or null when some name escapes. */
  coverers(keys: HostSet): Route[] | null {
    const found = new Set<Route>();
    for (const name of keys.exact) {
      const parent = parentDomain(name);
      const by = this.exact.get(name) ?? (parent !== null ? this.wildcard.get(parent) : undefined);
      if (!by) return null;
      found.add(by);
    }
    for (const parent of keys.wildcardParents) {
      const by = this.wildcard.get(parent);
      if (!by) return null;
      found.add(by);
    }
    return found.size > 0 ? [...found] : null;
  }
}

function describe(route: Route): string {
  return `"${route.name}" (priority ${route.priority}${route.explicitPriority ? "" : ", from the rule length"})`;
}

/** True when a service (directly or through weighted children) sends connections to whoami@internal. */
function servesWhoami(model: Model, service: string, seen = new Set<string>()): boolean {
  if (seen.has(service)) return false;
  seen.add(service);
  const s = model.services.get(service);
  if (!s) return false;
  if (s.loadBalancer?.servers.some((server) => server.address.value === WHOAMI_INTERNAL)) return true;
  return (s.weighted?.services ?? []).some((child) => {
    const ref = resolveRef(child.name.value);
    return ref.ok && servesWhoami(model, ref.name, seen);
  });
}

export function lintRouting(model: Model, compiled: CompiledConfig, diags: Diagnostics): void {
  const reported = new Set<string>();
  const once = (key: string) => {
    if (reported.has(key)) return false;
    reported.add(key);
    return true;
  };
  for (const table of compiled.tables.values()) {
    for (const list of [table.tls, table.tcp]) {
      shadowing(list, table.entryPoint, diags, once);
      equalPriorities(list, table.entryPoint, diags, once);
    }
    conflictingOptions(table.tls, table.entryPoint, diags, once);
  }
  for (const status of compiled.routers.values()) {
    const tls = status.router.tls;
    if (tls?.passthrough && status.route && servesWhoami(model, status.route.service)) {
      diags.error(
        "passthrough-to-whoami",
        `router "${status.name}" passes TLS through to service "${status.route.service}", whose target is ${WHOAMI_INTERNAL}: it answers in plaintext and cannot read the client's TLS`,
        tls.pos,
        `${status.router.path}.tls.passthrough`,
        `Terminate TLS for this router (passthrough: false) to use ${WHOAMI_INTERNAL}.`,
      );
    }
    if (tls?.passthrough && tls.options) {
      diags.warning(
        "tls-options-on-passthrough",
        `router "${status.name}" passes TLS through, so its TLS options "${tls.options.value}" have no effect: the backend does the handshake`,
        tls.options.pos,
        `${status.router.path}.tls.options`,
        "Remove tls.options, or terminate TLS here (passthrough: false).",
      );
    }
  }
}

function shadowing(list: Route[], ep: string, diags: Diagnostics, once: (k: string) => boolean): void {
  const coverage = new Coverage();
  // Wildcard routes seen so far, by parent domain, to spot a wildcard that outranks an exact name.
  const wildcards = new Map<string, Route>();
  for (const route of list) {
    const keys = keysOf(route);
    const router = route.router;
    if (coverage.catchAll && once(`shadow:${route.name}`)) {
      diags.warning(
        "shadowed-router",
        `router "${route.name}" can never match on entry point "${ep}": catch-all router ${describe(coverage.catchAll)} comes first and takes every connection`,
        router.rule?.pos ?? router.pos,
        `${router.path}.rule`,
        `Give "${route.name}" a priority above ${coverage.catchAll.priority}, or lower the catch-all's priority (HostSNI(\`*\`) alone defaults to -1).`,
      );
    } else if (keys) {
      const by = coverage.coverers(keys);
      if (by && once(`shadow:${route.name}`)) {
        diags.warning(
          "shadowed-router",
          `router "${route.name}" can never match on entry point "${ep}": ${by.map(describe).join(" and ")} ${by.length > 1 ? "come" : "comes"} first and ${by.length > 1 ? "match" : "matches"} every name it matches`,
          router.rule?.pos ?? router.pos,
          `${router.path}.rule`,
          `Set a higher priority on "${route.name}", or remove it.`,
        );
      } else {
        for (const name of keys.exact) {
          const parent = parentDomain(name);
          const wild = parent !== null ? wildcards.get(parent) : undefined;
          if (!wild || (wild.explicitPriority && route.explicitPriority)) continue;
          if (!once(`wild:${wild.name}:${route.name}`)) continue;
          diags.warning(
            "wildcard-outranks-exact",
            `on entry point "${ep}", wildcard router ${describe(wild)} is evaluated before router ${describe(route)} for "${name}"${wild.priority === route.priority ? ", only because its name sorts first" : " because its rule is longer"}`,
            router.rule?.pos ?? router.pos,
            `${router.path}.rule`,
            `Set explicit priorities, e.g. priority: ${Math.max(wild.priority, route.priority) + 1} on "${route.name}".`,
          );
        }
      }
    }
    if (keys)
      for (const parent of keys.wildcardParents) if (!wildcards.has(parent)) wildcards.set(parent, route);
    coverage.add(route);
  }
}

function overlapName(a: HostSet, b: HostSet): string | null {
  const aExact = new Set(a.exact);
  const aWild = new Set(a.wildcardParents);
  for (const name of b.exact) {
    const parent = parentDomain(name);
    if (aExact.has(name)) return name;
    if (parent !== null && aWild.has(parent)) return name;
  }
  for (const parent of b.wildcardParents) if (aWild.has(parent)) return `*.${parent}`;
  for (const name of a.exact) {
    const parent = parentDomain(name);
    if (parent !== null && b.wildcardParents.includes(parent)) return name;
  }
  return null;
}

function equalPriorities(list: Route[], ep: string, diags: Diagnostics, once: (k: string) => boolean): void {
  const byPriority = new Map<number, Route[]>();
  for (const route of list) {
    const group = byPriority.get(route.priority);
    if (group) group.push(route);
    else byPriority.set(route.priority, [route]);
  }
  for (const group of byPriority.values()) {
    if (group.length < 2) continue;
    // Index the group by name so overlaps are found without comparing every pair.
    const owners = new Map<string, Route>();
    // The first exact name taken under each parent domain (in the order owners were taken), so a
    // wildcard finds an exact name seen earlier under it by one lookup, not by a scan of every name.
    const firstExactUnder = new Map<string, { key: string; owner: Route }>();
    const take = (key: string, owner: Route, exactParent: string | null) => {
      if (owners.has(key)) return;
      owners.set(key, owner);
      if (exactParent !== null && !firstExactUnder.has(exactParent))
        firstExactUnder.set(exactParent, { key, owner });
    };
    for (const route of group) {
      const keys = keysOf(route);
      let other: Route | undefined;
      let name: string | null = null;
      if (route.rule.catchAll) {
        other = owners.get("*");
        name = "every name";
        if (!other) take("*", route, null);
      } else if (keys) {
        for (const key of keys.exact) {
          const exact = !key.startsWith("*.");
          const parent = exact ? parentDomain(key) : null;
          const hit = owners.get(key) ?? (parent !== null ? owners.get(`*.${parent}`) : undefined);
          if (hit && !other) {
            other = hit;
            name = key;
          }
          take(key, route, parent);
        }
        for (const wildcardParent of keys.wildcardParents) {
          const key = `*.${wildcardParent}`;
          const hit = owners.get(key);
          if (hit && !other) {
            other = hit;
            name = key;
          }
          take(key, route, null);
        }
        if (!other) {
          // An exact name seen earlier under this wildcard. Names this route took itself come after
          // every earlier route's, so when the first one under a parent is its own, no other exists.
          for (const parent of keys.wildcardParents) {
            const first = firstExactUnder.get(parent);
            if (first && first.owner !== route) {
              other = first.owner;
              name = first.key;
              break;
            }
          }
        }
      }
      if (!other || !name) continue;
      const first = other;
      if (!once(`tie:${first.name}:${route.name}`)) continue;
      const keysA = keysOf(first);
      const overlap = keysA && keys ? (overlapName(keysA, keys) ?? name) : name;
      diags.warning(
        "equal-priority-overlap",
        `routers "${first.name}" and "${route.name}" on entry point "${ep}" have the same priority ${route.priority} and both match ${overlap === "every name" ? overlap : `"${overlap}"`}; "${first.name}" wins because its name sorts first (Traefik would pick either)`,
        // The priority to change when it is written; the rule whose length made it otherwise.
        route.router.priority?.pos ?? route.router.rule?.pos ?? route.router.pos,
        route.router.priority ? `${route.router.path}.priority` : `${route.router.path}.rule`,
        "Set explicit, different priorities to say which one should win.",
      );
    }
  }
}

function conflictingOptions(
  list: Route[],
  ep: string,
  diags: Diagnostics,
  once: (k: string) => boolean,
): void {
  const optionsByName = new Map<string, Map<string, Route>>();
  for (const route of list) {
    if (route.mode !== "terminate") continue;
    const keys = keysOf(route);
    if (!keys) continue;
    for (const name of keys.exact) {
      let byOptions = optionsByName.get(name);
      if (!byOptions) {
        byOptions = new Map();
        optionsByName.set(name, byOptions);
      }
      if (!byOptions.has(route.tlsOptions ?? "default")) byOptions.set(route.tlsOptions ?? "default", route);
    }
  }
  for (const [name, byOptions] of optionsByName) {
    if (byOptions.size < 2) continue;
    const routes = [...byOptions.entries()];
    const last = routes[routes.length - 1]![1];
    if (!once(`opts:${ep}:${name}`)) continue;
    diags.warning(
      "sni-options-conflict",
      `on entry point "${ep}", "${name}" is reachable through routers with different TLS options: ${routes.map(([o, r]) => `"${r.name}" uses "${o}"`).join(", ")}; which options a client gets depends on its other connection facts`,
      last.router.tls?.options?.pos ?? last.router.tls?.pos ?? last.router.pos,
      `${last.router.path}.tls.options`,
      "Use the same TLS options for every router of one name, unless the difference is intended (e.g. mTLS only for some client IPs).",
    );
  }
}
