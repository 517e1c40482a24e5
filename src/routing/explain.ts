/**
 * The explanation of a decision: every router the connection is checked against, in evaluation
 * order, with the rule tree and each node's result. The decision itself comes from `decide`, so the
 * explanation can never disagree with what serve does.
 */
import { type TraceNode, traceRule } from "../rules/index.ts";
import type { RouterStatus } from "./compile.ts";
import { type ConnectionFacts, type Decision, decide, fastPathRoute, type RoutingContext } from "./decide.ts";
import type { Route } from "./table.ts";

export interface Candidate {
  router: string;
  entryPoints: string[];
  priority: number | null;
  rule: string | null;
  /** null when the router is disabled by a configuration error. */
  matched: boolean | null;
  trace: TraceNode | null;
  /** Configuration errors that disable this router. */
  disabled?: string[];
  /** True for the router the decision picked. */
  chosen: boolean;
}

export interface Explanation {
  facts: ConnectionFacts;
  decision: Decision;
  candidates: Candidate[];
  /** For `--postgres`: the negotiation steps, in order. */
  postgresSteps: string[] | null;
  /** True when serve routes this connection before reading a byte (only plain TCP routers on the entry point). */
  fastPath: boolean;
}

export function explain(
  ctx: RoutingContext,
  routers: ReadonlyMap<string, RouterStatus>,
  factsIn: ConnectionFacts,
): Explanation {
  const table = ctx.tables.get(factsIn.entryPoint);
  // On a fast-path entry point serve may route before reading a byte; then SNI, ALPN and any
  // SSLRequest are never seen, and only the plain TCP routers are consulted.
  const fastPath = table !== undefined && factsIn.tls && fastPathRoute(table, factsIn) !== null;
  let facts = factsIn;
  let postgresSteps: string[] | null = null;
  if (facts.postgres && table) {
    postgresSteps = [`client sends an SSLRequest (00 00 00 08 04 d2 16 2f)`];
    if (fastPath) {
      postgresSteps.push(
        `entry point "${facts.entryPoint}" has only plain TCP routers: tlsroute hands the connection over before reading a byte (fast path) and does not answer the SSLRequest itself`,
      );
    } else if (table.tls.length === 0) {
      postgresSteps.push(
        `tlsroute answers "N": entry point "${facts.entryPoint}" has no TLS router`,
        "a client with sslmode=prefer goes on in plaintext and is routed as plain TCP; sslmode=require gives up",
      );
      facts = { ...facts, tls: false, postgres: false };
    } else {
      postgresSteps.push(
        `tlsroute answers "S"`,
        `client sends its ClientHello (SNI "${facts.sni || "(none)"}", ALPN [${facts.alpn.join(", ")}])`,
      );
      facts = { ...facts, tls: true };
    }
  }

  // The decision comes from decide(), the indexed lookup serve uses; the scan below only explains it.
  const decision = decide(ctx, facts);
  const plain = fastPath || !facts.tls;
  // An ACME validation is answered before any router is looked at: there is nothing to trace.
  const routes: readonly Route[] = table && !decision.acmeChallenge ? (plain ? table.tcp : table.tls) : [];
  const ruleFacts = {
    sni: plain ? "" : facts.sni,
    alpn: plain ? [] : facts.alpn,
    clientIp: facts.clientIp,
  };
  const candidates: Candidate[] = routes.map((route) => {
    const trace = traceRule(route.rule, ruleFacts);
    return {
      router: route.name,
      entryPoints: routers.get(route.name)?.entryPoints ?? [],
      priority: route.priority,
      rule: route.rule.text,
      matched: trace.result === true,
      trace,
      chosen: route === decision.route,
    };
  });
  for (const status of routers.values()) {
    if (status.route || !status.entryPoints.includes(facts.entryPoint)) continue;
    candidates.push({
      router: status.name,
      entryPoints: status.entryPoints,
      priority: null,
      rule: status.router.rule?.value ?? null,
      matched: null,
      trace: null,
      disabled: status.problems,
      chosen: false,
    });
  }
  if (postgresSteps) postgresSteps.push(...postgresOutcome(decision, fastPath));
  return { facts, decision, candidates, postgresSteps, fastPath };
}

function postgresOutcome(decision: Decision, fastPath: boolean): string[] {
  if (!decision.matched || decision.refusal) return [`the connection is closed: ${decision.reason}`];
  if (fastPath) {
    return [
      `service "${decision.service}" receives the SSLRequest unchanged; its server answers "S" or "N" and the client goes on with it`,
    ];
  }
  switch (decision.mode) {
    case "terminate":
      return [
        `tlsroute completes the TLS handshake with options "${decision.tlsOptions}"`,
        `service "${decision.service}" receives the StartupMessage in plaintext (no SSLRequest is sent to it)`,
      ];
    case "passthrough":
      return [
        `tlsroute sends its own SSLRequest to the backend of service "${decision.service}" and requires "S"`,
        "then the client's TLS bytes are forwarded unchanged; the backend terminates TLS",
      ];
    default:
      return [`service "${decision.service}" receives the plaintext protocol`];
  }
}
