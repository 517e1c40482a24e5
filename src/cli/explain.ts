import { isIP } from "node:net";
import { defineCommand } from "citty";
import { type Explanation, explain } from "../routing/explain.ts";
import { explanationJson } from "../routing/explain-json.ts";
import { canonicalSni, compileRule, defaultPriority, type TraceNode, traceRule } from "../rules/index.ts";
import { openWorkspace, type Workspace } from "../workspace.ts";
import {
  csvFlag,
  displayPath,
  EXIT_FINDINGS,
  EXIT_OK,
  formatFlag,
  lastString,
  listFlag,
  paint,
  UsageError,
  writeJson,
} from "./common.ts";

export const explainCommand = defineCommand({
  meta: {
    name: "explain",
    description: "Trace how a connection with the given facts is routed, router by router, node by node",
  },
  args: {
    config: { type: "string", alias: "c", description: "Configuration file or directory (repeatable)" },
    rule: { type: "string", description: "Explain one rule on its own instead of a configuration" },
    syntax: { type: "string", description: "Rule syntax for --rule: v3 (default) or v2" },
    entrypoint: { type: "string", description: "Entry point the connection arrives on" },
    sni: { type: "string", description: "Server name the client sends" },
    alpn: { type: "string", description: "ALPN protocols the client offers, comma-separated (repeatable)" },
    "client-ip": { type: "string", description: "Client IP address (default 127.0.0.1)" },
    postgres: {
      type: "boolean",
      description: "The client starts with a PostgreSQL SSLRequest",
      default: false,
    },
    tls: { type: "boolean", description: "The client speaks TLS (--no-tls: plain TCP)", default: true },
    format: { type: "string", description: "text or json", default: "text" },
    debug: { type: "boolean", description: "Print stack traces of internal errors", default: false },
  },
  run({ args }) {
    const format = formatFlag(args.format);
    const clientIp = lastString(args["client-ip"]) ?? "127.0.0.1";
    if (!isIP(clientIp)) throw new UsageError(`--client-ip "${clientIp}" is not an IP address`);
    const facts = {
      sni: canonicalSni(lastString(args.sni) ?? ""),
      alpn: csvFlag(args.alpn),
      clientIp,
      tls: args.tls !== false || args.postgres === true,
      postgres: args.postgres === true,
    };
    const rule = lastString(args.rule);
    if (rule !== undefined) return explainRule(rule, lastString(args.syntax), facts, format);
    const workspace = openWorkspace(listFlag(args.config));
    const entryPoint = chooseEntryPoint(workspace, lastString(args.entrypoint));
    const ep = workspace.model.entryPoints.get(entryPoint);
    const localIp = ep && isIP(ep.host) ? ep.host : "127.0.0.1";
    const result = explain(workspace.context, workspace.compiled.routers, { ...facts, entryPoint, localIp });
    const configErrors = workspace.diagnostics.filter((d) => d.severity === "error");
    if (format === "json") writeJson(explanationJson(result, configErrors.length));
    else writeExplanation(result, configErrors.length);
    return result.decision.matched && !result.decision.refusal ? EXIT_OK : EXIT_FINDINGS;
  },
});

function chooseEntryPoint(workspace: Workspace, requested: string | undefined): string {
  const names = [...workspace.model.entryPoints.keys()];
  if (requested !== undefined) {
    if (!workspace.model.entryPoints.has(requested)) {
      throw new UsageError(
        `entry point "${requested}" does not exist`,
        names.length ? `Entry points: ${names.join(", ")}.` : "The configuration declares no entry point.",
      );
    }
    return requested;
  }
  if (names.length === 1) return names[0]!;
  throw new UsageError(
    names.length === 0
      ? "the configuration declares no entry point"
      : `the configuration has ${names.length} entry points; say which one with --entrypoint`,
    names.length
      ? `Entry points: ${names.join(", ")}.`
      : 'Declare one, e.g. entryPoints: { websecure: { address: ":8443" } }.',
  );
}

type RuleFacts = { sni: string; alpn: string[]; clientIp: string; tls: boolean };

function explainRule(text: string, syntaxFlag: string | undefined, facts: RuleFacts, format: string): number {
  if (syntaxFlag !== undefined && syntaxFlag !== "v2" && syntaxFlag !== "v3") {
    throw new UsageError(`--syntax must be v2 or v3, got "${syntaxFlag}"`);
  }
  const syntax = syntaxFlag === "v2" ? "v2" : "v3";
  const compiled = compileRule(text, syntax);
  if (!compiled.ok) {
    const caret = `${" ".repeat(Math.max(0, compiled.error.column - 1))}^`;
    throw new UsageError(
      `invalid rule (column ${compiled.error.column}): ${compiled.error.message}\n  ${text}\n  ${caret}`,
      compiled.error.hint,
    );
  }
  const ruleFacts = {
    sni: facts.tls ? facts.sni : "",
    alpn: facts.tls ? facts.alpn : [],
    clientIp: facts.clientIp,
  };
  const trace = traceRule(compiled.rule, ruleFacts);
  const matched = trace.result === true;
  if (format === "json") {
    writeJson({ matched, rule: text, syntax, priority: defaultPriority(text, syntax), facts, trace });
  } else {
    const lines = [
      `${paint.bold("Connection")}  ${describeFacts({ ...facts, entryPoint: null })}`,
      `${paint.bold("Rule")}        ${text} ${paint.dim(`(priority ${defaultPriority(text, syntax)} when not set)`)}`,
      ...renderTrace(trace, "  "),
      matched ? paint.ok("✔ the rule matches") : paint.error("✖ the rule does not match"),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  }
  return matched ? EXIT_OK : EXIT_FINDINGS;
}

function describeFacts(f: {
  entryPoint: string | null;
  sni: string;
  alpn: readonly string[];
  clientIp: string;
  tls: boolean;
  postgres?: boolean;
}): string {
  const parts: string[] = [];
  if (f.entryPoint) parts.push(`entry point ${paint.accent(f.entryPoint)}`);
  parts.push(f.postgres ? "PostgreSQL SSLRequest then TLS" : f.tls ? "TLS" : "plain TCP");
  if (f.tls) {
    parts.push(`SNI ${f.sni ? paint.accent(f.sni) : paint.dim("(none)")}`);
    parts.push(`ALPN ${f.alpn.length ? f.alpn.join(",") : paint.dim("(none)")}`);
  }
  parts.push(`client ${f.clientIp}`);
  return parts.join(" · ");
}

function mark(result: boolean | null): string {
  if (result === null) return paint.dim("–");
  return result ? paint.ok("✔") : paint.error("✖");
}

function renderTrace(node: TraceNode, indent: string): string[] {
  const head = `${indent}${mark(node.result)} ${node.kind === "matcher" ? node.text : paint.dim(node.kind.toUpperCase())}`;
  const reason =
    node.reason && node.result !== null
      ? `  ${paint.dim(node.reason)}`
      : node.result === null
        ? `  ${paint.dim("not evaluated")}`
        : "";
  const lines = [head + reason];
  for (const child of node.children ?? []) lines.push(...renderTrace(child, `${indent}  `));
  return lines;
}

function writeExplanation(result: Explanation, configErrors: number): void {
  const d = result.decision;
  const lines: string[] = [`${paint.bold("Connection")}  ${describeFacts(result.facts)}`];
  if (result.postgresSteps) {
    lines.push(paint.bold("PostgreSQL"));
    result.postgresSteps.forEach((step, i) => {
      lines.push(`  ${i + 1}. ${step}`);
    });
  }
  if (result.fastPath) {
    lines.push(
      `${paint.bold("Fast path")}   entry point ${result.facts.entryPoint} has only plain TCP routers: serve matches before reading a byte, so SNI and ALPN are not looked at`,
    );
  }
  lines.push(paint.bold("Routers, in evaluation order"));
  if (d.acmeChallenge)
    lines.push(paint.dim("  (none consulted: an ACME TLS-ALPN-01 validation comes first)"));
  else if (result.candidates.length === 0)
    lines.push(paint.dim("  (no router on this entry point for this kind of connection)"));
  let afterChoice = false;
  for (const c of result.candidates) {
    if (c.disabled) {
      lines.push(
        `  ${paint.warning("!")} ${c.router}  ${paint.warning("disabled:")} ${c.disabled.join("; ")}`,
      );
      continue;
    }
    const label = c.chosen ? paint.ok(paint.bold(c.router)) : c.router;
    const note = afterChoice ? paint.dim("  (not consulted: an earlier router matched)") : "";
    lines.push(`  ${mark(c.matched)} ${label}  ${paint.dim(`priority ${c.priority}`)}${note}`);
    if (c.trace) lines.push(...renderTrace(c.trace, "      "));
    if (c.chosen) afterChoice = true;
  }
  lines.push(paint.bold("Decision"));
  if (d.acmeChallenge) {
    lines.push(`  ${paint.ok("✔")} ACME challenge → answered by tlsroute (ALPN ${d.alpn})`);
  } else if (d.matched && !d.refusal) {
    lines.push(
      `  ${paint.ok("✔")} router ${paint.bold(d.router ?? "")} → service ${paint.bold(d.service ?? "")} (${d.mode})`,
    );
  } else {
    lines.push(`  ${paint.error("✖")} ${d.refusal ?? "no_route"}`);
  }
  lines.push(`  ${d.reason}`);
  if (d.mode === "terminate" && d.certificate) {
    const cert = d.certificate.certificate;
    const what = cert
      ? `${cert.subject}${cert.sans.length ? ` (SANs ${cert.sans.join(", ")})` : ""}, ${displayPath(cert.source)}${cert.notAfter ? `, expires ${cert.notAfter.toISOString().slice(0, 10)}` : ""}`
      : paint.dim("(none)");
    lines.push(`  certificate  ${d.certificate.source}: ${what}`);
    lines.push(`               ${paint.dim(d.certificate.why)}`);
    if (!d.refusal) lines.push(`  ALPN         ${d.alpn ?? paint.dim("(none negotiated)")}`);
  }
  if (configErrors > 0) {
    lines.push(
      paint.warning(
        `⚠ the configuration has ${configErrors} error${configErrors === 1 ? "" : "s"}; routers with errors are disabled (run tlsroute validate)`,
      ),
    );
  }
  process.stdout.write(`${lines.join("\n")}\n`);
}
