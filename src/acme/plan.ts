/**
 * Which certificates the resolvers must obtain: one certificate per router that names a resolver,
 * covering the router's `tls.domains` entries (each main + sans is one certificate) or else every
 * name in its HostSNI rule. Pure: serve plans its orders with it and validate reports the names it
 * cannot turn into a certificate.
 */
import type { SourcePos } from "../config/located.ts";
import type { Model } from "../config/model.ts";
import { resolveRef } from "../config/refs.ts";
import type { CompiledConfig } from "../routing/compile.ts";
import type { RuleExpr } from "../rules/types.ts";

export interface CertificateRequest {
  resolver: string;
  /** First name of the certificate (its subject CN); then the other names. */
  main: string;
  sans: string[];
  /** Routers that asked for these names. */
  routers: string[];
}

export interface PlanProblem {
  code: "acme-name-not-certifiable" | "acme-resolver-on-passthrough";
  router: string;
  /** Where to point: the rule, or the domains entry. */
  pos: SourcePos;
  path: string;
  message: string;
  hint: string;
}

export interface AcmePlan {
  requests: CertificateRequest[];
  problems: PlanProblem[];
}

/** Why a name cannot be validated with TLS-ALPN-01, or null when it can. */
export function uncertifiableName(name: string): string | null {
  if (name === "*") return "the catch-all HostSNI(`*`) names no host";
  if (name.includes("*")) return `"${name}" is a wildcard, which only the DNS-01 challenge can validate`;
  if (/^[0-9.]+$/.test(name) || name.includes(":"))
    return `"${name}" is an IP address; ACME certificates here are for DNS names only`;
  if (!/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$/.test(name))
    return `"${name}" is not a fully qualified DNS name`;
  return null;
}

/**
 * The HostSNI names and HostSNIRegexp uses a rule matches on, in source order. Negated ones are left
 * out: `!HostSNI(x)` names a host the router refuses, so certifying it would be wrong.
 */
function hostMatchers(expr: RuleExpr, negated = false, out = { names: [] as string[], regexp: false }) {
  switch (expr.type) {
    case "and":
    case "or":
      hostMatchers(expr.left, negated, out);
      hostMatchers(expr.right, negated, out);
      break;
    case "not":
      hostMatchers(expr.operand, !negated, out);
      break;
    default:
      if (negated) break;
      if (expr.name === "HostSNI") out.names.push(...expr.args.map((a) => a.toLowerCase()));
      else if (expr.name === "HostSNIRegexp") out.regexp = true;
  }
  return out;
}

function canonical(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, "");
}

export function planCertificates(model: Model, compiled: CompiledConfig): AcmePlan {
  const problems: PlanProblem[] = [];
  const byNames = new Map<string, CertificateRequest>();
  const add = (resolver: string, names: string[], router: string) => {
    const unique = [...new Set(names)];
    if (unique.length === 0) return;
    const key = `${resolver}\u0000${[...unique].sort().join(",")}`;
    const known = byNames.get(key);
    if (known) known.routers.push(router);
    else byNames.set(key, { resolver, main: unique[0]!, sans: unique.slice(1), routers: [router] });
  };

  for (const status of compiled.routers.values()) {
    const tls = status.router.tls;
    if (!tls?.certResolver || !status.route) continue;
    const ref = resolveRef(tls.certResolver.value);
    if (!ref.ok || !model.resolvers.has(ref.name)) continue; // reported as unknown-cert-resolver
    const resolver = ref.name;
    const rulePos = status.router.rule?.pos ?? status.router.pos;
    const problem = (
      message: string,
      hint: string,
      pos = rulePos,
      path = `${status.router.path}.rule`,
      code: PlanProblem["code"] = "acme-name-not-certifiable",
    ) => problems.push({ code, router: status.name, pos, path, message, hint });

    if (status.route.mode === "passthrough") {
      problem(
        `router "${status.name}" passes TLS through, so a certificate from resolver "${resolver}" would never be served`,
        "Remove tls.certResolver, or terminate TLS here (passthrough: false).",
        tls.certResolver.pos,
        `${status.router.path}.tls.certResolver`,
        "acme-resolver-on-passthrough",
      );
      continue;
    }

    if (tls.domains.length > 0) {
      tls.domains.forEach((domain, i) => {
        const names = [domain.main?.value ?? "", ...domain.sans.map((s) => s.value)].map(canonical);
        const bad = names.map((n) => (n === "" ? "an empty name" : uncertifiableName(n))).find((m) => m);
        if (bad) {
          problem(
            `router "${status.name}" asks resolver "${resolver}" for a certificate it cannot obtain: ${bad}`,
            "TLS-ALPN-01 validates one exact DNS name at a time; list exact names in tls.domains.",
            domain.pos,
            `${status.router.path}.tls.domains[${i}]`,
          );
          return;
        }
        add(resolver, names, status.name);
      });
      continue;
    }

    const rule = status.rule;
    if (!rule) continue;
    const matchers = hostMatchers(rule.expr);
    if (matchers.regexp) {
      problem(
        `router "${status.name}" matches names with HostSNIRegexp, which resolver "${resolver}" cannot turn into certificate names`,
        "List the names to certify in tls.domains (main and sans).",
      );
    }
    const names = matchers.names.map(canonical);
    const certifiable: string[] = [];
    for (const name of names) {
      const why = uncertifiableName(name);
      if (why) {
        problem(
          `router "${status.name}" cannot get a certificate from resolver "${resolver}" for every name of its rule: ${why}`,
          "List the names to certify in tls.domains, or give the wildcard a certificate in tls.certificates.",
        );
      } else certifiable.push(name);
    }
    if (names.length === 0 && !matchers.regexp) {
      problem(
        `router "${status.name}" names resolver "${resolver}" but its rule has no HostSNI name to certify`,
        "Add HostSNI(`name`) to the rule, or list the names in tls.domains.",
      );
    }
    add(resolver, certifiable, status.name);
  }
  return { requests: [...byNames.values()], problems };
}

/** True when a stored certificate's names include every name of the request. */
export function covers(storedNames: readonly string[], request: CertificateRequest): boolean {
  const have = new Set(storedNames.map(canonical));
  return [request.main, ...request.sans].every((n) => have.has(n));
}
