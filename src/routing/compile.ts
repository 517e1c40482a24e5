/**
 * Model → route tables. Every router is checked for what it needs to route at all (a valid rule, a
 * service that exists, entry points, TLS options, middlewares); a router that fails is disabled
 * and the reason is kept so `explain` can show it, as Traefik disables a broken router and keeps
 * the others running.
 */
import { DEFAULT_TLS_OPTIONS, type Model, type Router, ruleSyntaxOf } from "../config/model.ts";
import { Diagnostics } from "../config/reader.ts";
import { resolveRef } from "../config/refs.ts";
import { positionInValue } from "../config/source-text.ts";
import type { Diagnostic } from "../diagnostics.ts";
import { type CompiledRule, compileRule, sniIndexKeys } from "../rules/index.ts";
import { closestName } from "../text/suggest.ts";
import { compareRoutes, type Route, type RouteTable, SniIndex } from "./table.ts";

/** Traefik refuses user priorities above MaxInt64 - 1000; JavaScript numbers are exact up to 2^53. */
const MAX_PRIORITY = Number.MAX_SAFE_INTEGER;

export interface RouterStatus {
  name: string;
  router: Router;
  /** Entry points the router listens on (after defaults), valid ones only. */
  entryPoints: string[];
  /** Why the router is disabled; empty when it routes. */
  problems: string[];
  rule: CompiledRule | null;
  route: Omit<Route, "rank"> | null;
}

export interface CompiledConfig {
  tables: Map<string, RouteTable>;
  routers: Map<string, RouterStatus>;
  diagnostics: Diagnostic[];
}

/**
 * The default priority of a compiled rule: -1 for the catch-all, else the rule's length in UTF-8
 * bytes. The same as the rules module's defaultPriority(text) (a test pins that), without parsing
 * the rule a second time, which is a sixth of compile's time at 100k routers.
 */
export function priorityOf(rule: CompiledRule): number {
  return rule.catchAll ? -1 : utf8Length(rule.text);
}

/** UTF-8 length of UTF-16 text without encoding it (a lone surrogate counts as U+FFFD, like TextEncoder). */
function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && isLowSurrogate(text.charCodeAt(i + 1))) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

function isLowSurrogate(unit: number): boolean {
  return unit >= 0xdc00 && unit <= 0xdfff;
}

export function defaultEntryPoints(model: Model): string[] {
  const marked = [...model.entryPoints.values()].filter((ep) => ep.asDefault).map((ep) => ep.name);
  return marked.length > 0 ? marked : [...model.entryPoints.keys()];
}

export function compile(model: Model): CompiledConfig {
  const diags = new Diagnostics();
  const routers = new Map<string, RouterStatus>();
  const defaults = defaultEntryPoints(model);
  for (const router of model.routers.values()) {
    routers.set(router.name, compileRouter(router, model, defaults, diags));
  }
  const tables = new Map<string, RouteTable>();
  for (const ep of model.entryPoints.keys()) {
    const onEp = [...routers.values()]
      .filter((s) => s.route && s.entryPoints.includes(ep))
      .map((s) => s.route!);
    tables.set(ep, buildTable(ep, onEp));
  }
  return { tables, routers, diagnostics: diags.list };
}

export function buildTable(entryPoint: string, routes: Omit<Route, "rank">[]): RouteTable {
  const rank = (list: Omit<Route, "rank">[]): Route[] =>
    list.sort(compareRoutes).map((r, i) => ({ ...r, rank: i }));
  const tls = rank(routes.filter((r) => r.mode !== "tcp"));
  const tcp = rank(routes.filter((r) => r.mode === "tcp"));
  return {
    entryPoint,
    tls,
    tcp,
    tlsIndex: new SniIndex(tls, (r) => sniIndexKeys(r.rule)),
    fastPath: tcp.length > 0 && tls.length === 0,
  };
}

function compileRouter(router: Router, model: Model, defaults: string[], diags: Diagnostics): RouterStatus {
  const status: RouterStatus = {
    name: router.name,
    router,
    entryPoints: [],
    problems: [],
    rule: null,
    route: null,
  };
  const problem = (code: string, message: string, pos = router.pos, path = router.path, hint?: string) => {
    status.problems.push(message);
    diags.error(code, message, pos, path, hint);
  };

  // Entry points. Like Traefik, an empty list means "the default ones", and an unknown name is an
  // error that does not disable the router on its valid entry points; only a router left with none is
  // disabled.
  if (router.entryPoints && router.entryPoints.length > 0) {
    for (const ep of router.entryPoints) {
      if (model.entryPoints.has(ep.value)) status.entryPoints.push(ep.value);
      else {
        const near = closestName(ep.value, model.entryPoints.keys());
        diags.error(
          "unknown-entrypoint",
          `router "${router.name}" uses entry point "${ep.value}", which does not exist`,
          ep.pos,
          `${router.path}.entryPoints`,
          near
            ? `Did you mean "${near}"?`
            : `Declare it under entryPoints, or use one of: ${[...model.entryPoints.keys()].join(", ") || "(none declared)"}.`,
        );
      }
    }
  } else status.entryPoints.push(...defaults);
  if (status.entryPoints.length === 0 && model.entryPoints.size === 0) {
    problem(
      "no-entrypoint",
      `router "${router.name}" has no entry point to listen on: no valid entry point is declared`,
      router.pos,
      router.path,
      'Declare one, e.g. entryPoints: { websecure: { address: ":8443" } }.',
    );
  } else if (status.entryPoints.length === 0) {
    // Each unknown name has its diagnostic already; this only records why the router is off.
    status.problems.push(`router "${router.name}" has no valid entry point`);
  }

  // Service.
  let service = "";
  if (!router.service) {
    problem(
      "missing-service",
      `router "${router.name}" has no service`,
      router.pos,
      router.path,
      "Add service: <name>.",
    );
  } else {
    const ref = resolveRef(router.service.value);
    if (!ref.ok)
      problem("unknown-provider", ref.message, router.service.pos, `${router.path}.service`, ref.hint);
    else if (!model.services.has(ref.name)) {
      const near = closestName(ref.name, model.services.keys());
      problem(
        "unknown-service",
        `router "${router.name}" uses service "${ref.name}", which does not exist`,
        router.service.pos,
        `${router.path}.service`,
        near ? `Did you mean "${near}"?` : "Declare it under tcp.services.",
      );
    } else service = ref.name;
  }

  // Rule.
  const syntax = ruleSyntaxOf(router, model);
  if (!router.rule || router.rule.value.trim() === "") {
    problem(
      "missing-rule",
      `router "${router.name}" has no rule`,
      router.rule?.pos ?? router.pos,
      `${router.path}.rule`,
      'Add a rule such as rule: "HostSNI(`db.example.com`)".',
    );
  } else {
    const compiled = compileRule(router.rule.value, syntax);
    if (!compiled.ok) {
      problem(
        "invalid-rule",
        `invalid rule: ${compiled.error.message}`,
        positionInValue(router.rule.pos, compiled.error.column - 1),
        `${router.path}.rule`,
        compiled.error.hint,
      );
    } else {
      status.rule = compiled.rule;
      for (const warning of compiled.rule.warnings) {
        diags.warning(
          warning.code,
          `router "${router.name}": ${warning.message}`,
          positionInValue(router.rule.pos, warning.column - 1),
          `${router.path}.rule`,
          warning.hint,
        );
      }
      const first = compiled.rule.hostSNIValues[0];
      if (!router.tls && first !== undefined && first !== "*") {
        problem(
          "hostsni-without-tls",
          `router "${router.name}" matches HostSNI(\`${first}\`) but has no tls section: a plain TCP connection has no SNI, so it can never match`,
          router.rule.pos,
          `${router.path}.rule`,
          "Add tls: {} to terminate TLS (or tls: { passthrough: true }), or use HostSNI(`*`) for plain TCP.",
        );
      }
    }
  }

  if (router.priority && Math.abs(router.priority.value) > MAX_PRIORITY) {
    problem(
      "priority-too-large",
      `priority ${router.priority.value} of router "${router.name}" is beyond ±${MAX_PRIORITY}`,
      router.priority.pos,
      `${router.path}.priority`,
    );
  }

  // TLS options.
  let tlsOptions: string | null = null;
  if (router.tls && !router.tls.passthrough) {
    tlsOptions = DEFAULT_TLS_OPTIONS;
    if (router.tls.options) {
      const ref = resolveRef(router.tls.options.value);
      if (!ref.ok)
        problem(
          "unknown-provider",
          ref.message,
          router.tls.options.pos,
          `${router.path}.tls.options`,
          ref.hint,
        );
      else if (ref.name !== DEFAULT_TLS_OPTIONS && !model.tlsOptions.has(ref.name)) {
        const near = closestName(ref.name, model.tlsOptions.keys());
        problem(
          "unknown-tls-options",
          `router "${router.name}" uses TLS options "${ref.name}", which do not exist`,
          router.tls.options.pos,
          `${router.path}.tls.options`,
          near ? `Did you mean "${near}"?` : "Declare them under tls.options.",
        );
      } else tlsOptions = ref.name;
    }
  }

  // Middlewares.
  const middlewares: string[] = [];
  router.middlewares.forEach((m, i) => {
    const ref = resolveRef(m.value);
    if (!ref.ok) {
      problem("unknown-provider", ref.message, m.pos, `${router.path}.middlewares[${i}]`, ref.hint);
      return;
    }
    if (!model.middlewares.has(ref.name)) {
      const near = closestName(ref.name, model.middlewares.keys());
      problem(
        "unknown-middleware",
        `router "${router.name}" uses middleware "${ref.name}", which does not exist`,
        m.pos,
        `${router.path}.middlewares[${i}]`,
        near ? `Did you mean "${near}"?` : "Declare it under tcp.middlewares.",
      );
      return;
    }
    middlewares.push(ref.name);
  });

  if (status.problems.length === 0 && status.rule) {
    status.route = {
      name: router.name,
      router,
      rule: status.rule,
      priority: router.priority ? router.priority.value : priorityOf(status.rule),
      explicitPriority: router.priority !== null,
      mode: router.tls ? (router.tls.passthrough ? "passthrough" : "terminate") : "tcp",
      tlsOptions,
      service,
      middlewares,
    };
  }
  return status;
}
