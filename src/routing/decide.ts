/**
 * The routing decision. `decide` is pure and is the only place where tlsroute decides what happens
 * to a connection: serve calls it with facts from a real ClientHello, explain with facts from flags,
 * inspect with facts from an outbound handshake. Same input, same answer, everywhere.
 */
import { resolveRef } from "../config/refs.ts";
import type { IpMatcher } from "../rules/index.ts";
import { negotiateAlpn } from "../tls/alpn.ts";
import {
  type CertificateChoice,
  type CertificateIndex,
  chooseCertificate,
  type StoreCertificate,
} from "../tls/select.ts";
import type { Route, RouteMode, RouteTable } from "./table.ts";

/** What a connection tells us before any byte goes to a backend. */
export interface ConnectionFacts {
  entryPoint: string;
  /** Canonical SNI (lowercased, trimmed); "" when none. */
  sni: string;
  /** ALPN protocols the client offered. */
  alpn: readonly string[];
  clientIp: string;
  /** Local address the client connected to; names the certificate when there is no SNI. */
  localIp: string;
  /** The client speaks TLS (a ClientHello came, directly or after a Postgres SSLRequest). */
  tls: boolean;
  /** The TLS arrived after a PostgreSQL SSLRequest answered with `S`. */
  postgres: boolean;
}

/** The fixed set of refusal reasons shared with serve's access log. */
export type RefusalReason = "no_route" | "sni_strict" | "alpn_mismatch" | "ip_denied";

/** The certificate a served (or stored) certificate description must provide to be shown. */
export interface ServedCertificate extends StoreCertificate {
  subject: string;
  sans: string[];
  notAfter: Date | null;
  /** Where it came from, for people: a file path, "inline PEM", "generated". */
  source: string;
}

export interface CertificateDecision {
  source: "store" | "default" | "generated";
  match: "exact" | "wildcard" | null;
  certificate: ServedCertificate | null;
  why: string;
  /** The router's certificate resolver, and whether the chosen certificate is one it obtained. */
  resolver?: { name: string; stored: boolean };
}

export interface EffectiveTlsOptions {
  name: string;
  sniStrict: boolean;
  alpnProtocols: readonly string[];
  clientAuthType: string;
}

export interface RoutingContext {
  tables: ReadonlyMap<string, RouteTable>;
  tlsOptions: ReadonlyMap<string, EffectiveTlsOptions>;
  /** ipAllowList middlewares by name; other middleware types are absent (they do not decide on facts). */
  ipAllowLists: ReadonlyMap<string, IpMatcher>;
  certificates: CertificateIndex<ServedCertificate>;
  /** The default store's configured default certificate, if any (else a generated one is served). */
  defaultCertificate: ServedCertificate | null;
  /**
   * Entry points where tlsroute answers TLS-ALPN-01 challenges itself: a resolver uses tlsChallenge
   * and the entry point does not set allowACMEByPass.
   */
  acmeChallengeEntryPoints: ReadonlySet<string>;
}

/** The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737). */
export const ACME_TLS_ALPN = "acme-tls/1";

export interface Decision {
  matched: boolean;
  route: Route | null;
  router: string | null;
  service: string | null;
  mode: RouteMode | null;
  tlsOptions: string | null;
  certificate: CertificateDecision | null;
  /** ALPN protocol the handshake would settle on (terminating routes); null = none. */
  alpn: string | null;
  refusal: RefusalReason | null;
  /** An ACME TLS-ALPN-01 validation connection, answered by tlsroute before any router is consulted. */
  acmeChallenge: boolean;
  /** One sentence for people. */
  reason: string;
}

const NO_MATCH: Omit<Decision, "reason" | "refusal"> = {
  matched: false,
  route: null,
  router: null,
  service: null,
  mode: null,
  tlsOptions: null,
  certificate: null,
  alpn: null,
  acmeChallenge: false,
};

/** The routes a connection with these facts is matched against, in evaluation order. */
export function candidateRoutes(table: RouteTable, facts: ConnectionFacts): Iterable<Route> {
  if (!facts.tls) return table.tcp;
  return table.tlsIndex.candidates(facts.sni);
}

function ruleFacts(facts: ConnectionFacts) {
  return { sni: facts.tls ? facts.sni : "", alpn: facts.tls ? facts.alpn : [], clientIp: facts.clientIp };
}

/** The first route whose rule matches, found through the SNI index. */
export function findRoute(table: RouteTable, facts: ConnectionFacts): Route | null {
  const rf = ruleFacts(facts);
  for (const route of candidateRoutes(table, facts)) {
    if (route.rule.match(rf)) return route;
  }
  return null;
}

/** What serve knows of a connection it has not read a byte of: the addresses only. */
function unreadFacts(facts: ConnectionFacts): ConnectionFacts {
  return { ...facts, tls: false, postgres: false };
}

/**
 * Traefik's fast path (server-first protocols): on an entry point with only plain TCP routers, serve
 * matches before reading a byte, so it never learns whether the client speaks TLS (or PostgreSQL).
 * The route a connection gets that way, or null when the entry point has no fast path or no plain
 * router takes the connection (then serve reads the first bytes and routes as usual).
 */
export function fastPathRoute(table: RouteTable, facts: ConnectionFacts): Route | null {
  return table.fastPath ? findRoute(table, unreadFacts(facts)) : null;
}

export function decide(ctx: RoutingContext, facts: ConnectionFacts): Decision {
  const table = ctx.tables.get(facts.entryPoint);
  if (!table) {
    return { ...NO_MATCH, refusal: "no_route", reason: `entry point "${facts.entryPoint}" does not exist` };
  }
  if (facts.tls) {
    const fast = fastPathRoute(table, facts);
    if (fast) {
      const decision = decideForRoute(ctx, unreadFacts(facts), fast);
      if (!decision.refusal) {
        decision.reason = `router "${fast.name}" matches before any byte is read (entry point "${facts.entryPoint}" has only plain TCP routers: fast path); the bytes go to service "${fast.service}" exactly as the client sends them`;
      }
      return decision;
    }
  }
  if (facts.tls && facts.alpn.includes(ACME_TLS_ALPN) && ctx.acmeChallengeEntryPoints.has(facts.entryPoint)) {
    return {
      ...NO_MATCH,
      matched: true,
      acmeChallenge: true,
      refusal: null,
      alpn: ACME_TLS_ALPN,
      reason: `the client offers ALPN "${ACME_TLS_ALPN}": an ACME TLS-ALPN-01 validation, which tlsroute answers itself on entry point "${facts.entryPoint}" (no router is consulted) with the challenge certificate of an order in progress for "${facts.sni || "(no SNI)"}", or refuses when none is; set allowACMEByPass on the entry point to route these connections instead`,
    };
  }
  const route = findRoute(table, facts);
  return decideForRoute(ctx, facts, route);
}

/** The rest of the decision once the route is known (shared with explain's full scan). */
export function decideForRoute(ctx: RoutingContext, facts: ConnectionFacts, route: Route | null): Decision {
  if (!route) {
    const kind = facts.tls ? "TLS" : "plain TCP";
    return {
      ...NO_MATCH,
      refusal: "no_route",
      reason: `no ${kind} router on entry point "${facts.entryPoint}" matches${facts.tls ? ` SNI "${facts.sni || "(none)"}"` : ""}`,
    };
  }
  const base: Decision = {
    matched: true,
    route,
    router: route.name,
    service: route.service,
    mode: route.mode,
    tlsOptions: route.tlsOptions,
    certificate: null,
    alpn: null,
    refusal: null,
    acmeChallenge: false,
    reason: `router "${route.name}" matches`,
  };

  for (const name of route.middlewares) {
    const allow = ctx.ipAllowLists.get(name);
    if (allow && !allow.contains(facts.clientIp)) {
      return {
        ...base,
        refusal: "ip_denied",
        reason: `router "${route.name}" matches, but middleware "${name}" refuses client ${facts.clientIp || "(unknown)"}: not in ${allow.describe()}`,
      };
    }
  }

  if (route.mode !== "terminate") {
    base.reason =
      route.mode === "passthrough"
        ? `router "${route.name}" matches; the TLS bytes go to service "${route.service}" still encrypted`
        : `router "${route.name}" matches; the connection goes to service "${route.service}" as plain TCP`;
    return base;
  }

  const options = ctx.tlsOptions.get(route.tlsOptions ?? "default");
  const certificate = certificateFor(ctx, facts, options?.sniStrict ?? false);
  base.certificate = certificate.decision && withResolver(certificate.decision, route, facts);
  if (certificate.refused) {
    return {
      ...base,
      refusal: "sni_strict",
      reason: `router "${route.name}" matches, but TLS options "${route.tlsOptions}" set sniStrict and no certificate covers "${facts.sni || facts.localIp}"`,
    };
  }

  const serverProtocols = [...(options?.alpnProtocols ?? [])];
  if (facts.postgres && !serverProtocols.includes("postgresql")) serverProtocols.push("postgresql");
  const alpn = negotiateAlpn(serverProtocols, facts.alpn);
  if (!alpn.ok) {
    return {
      ...base,
      refusal: "alpn_mismatch",
      reason: `router "${route.name}" matches, but none of the offered ALPN protocols [${facts.alpn.join(", ")}] is in TLS options "${route.tlsOptions}" [${serverProtocols.join(", ")}]: the handshake fails with no_application_protocol`,
    };
  }
  base.alpn = alpn.protocol;
  base.reason = `router "${route.name}" matches; TLS is terminated with options "${route.tlsOptions}" and the decrypted bytes go to service "${route.service}"`;
  return base;
}

/** Says whether the certificate comes from the router's resolver, or what serve does until it does. */
function withResolver(
  decision: CertificateDecision,
  route: Route,
  facts: ConnectionFacts,
): CertificateDecision {
  const ref = route.router.tls?.certResolver?.value;
  if (!ref) return decision;
  const parsed = resolveRef(ref);
  const name = parsed.ok ? parsed.name : ref;
  const from = decision.certificate?.resolver;
  const stored = typeof from === "string";
  const wanted = facts.sni || facts.localIp;
  return {
    ...decision,
    resolver: { name, stored: stored && from === name },
    why:
      stored && from === name
        ? `${decision.why}; resolver "${name}" obtained it and keeps it in its storage`
        : `${decision.why}; resolver "${name}" has no stored certificate for "${wanted}" yet: serve orders one at start and serves this one until it arrives`,
  };
}

function certificateFor(
  ctx: RoutingContext,
  facts: ConnectionFacts,
  sniStrict: boolean,
): { decision: CertificateDecision | null; refused: boolean } {
  const choice: CertificateChoice<ServedCertificate> = chooseCertificate(ctx.certificates, {
    sni: facts.sni,
    localIp: facts.localIp,
    sniStrict,
  });
  switch (choice.kind) {
    case "store":
      return {
        refused: false,
        decision: {
          source: "store",
          match: choice.match,
          certificate: choice.cert,
          why: `${choice.match === "exact" ? "exact" : "wildcard"} match for "${choice.name}" in the certificate store`,
        },
      };
    case "refused":
      return {
        refused: true,
        decision: {
          source: "store",
          match: null,
          certificate: null,
          why: `no certificate in the store covers "${choice.name}" and sniStrict forbids the default certificate`,
        },
      };
    case "default": {
      const why =
        choice.reason === "no-sni"
          ? "the client sent no SNI"
          : `no certificate in the store covers "${choice.name}"`;
      return ctx.defaultCertificate
        ? {
            refused: false,
            decision: {
              source: "default",
              match: null,
              certificate: ctx.defaultCertificate,
              why: `${why}: the default certificate is served`,
            },
          }
        : {
            refused: false,
            decision: {
              source: "generated",
              match: null,
              certificate: null,
              why: `${why}: a self-signed certificate generated at start is served`,
            },
          };
    }
  }
}
