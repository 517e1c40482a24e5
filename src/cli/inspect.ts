import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { defineCommand } from "citty";
import { parseDuration } from "../config/duration.ts";
import { type ProbeOptions, probe, type StartTls, trustStoreFingerprints } from "../inspect/probe.ts";
import { buildReport, type CertificateJson, type InspectReport } from "../inspect/report.ts";
import { chooseEntryPoint, type RouteJson, routeFor, routeJson } from "../inspect/route.ts";
import { chooseSni, parseTarget } from "../inspect/target.ts";
import { checkKeyMatches, parseCaBundle } from "../tls/certificate.ts";
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

const DEFAULT_TIMEOUT = "10s";

export const inspectCommand = defineCommand({
  meta: {
    name: "inspect",
    description: "Dial a host and report the negotiated TLS, the certificate chain and our routing decision",
  },
  args: {
    target: {
      type: "positional",
      description: "HOST[:PORT] (default port 443; IPv6 in brackets)",
      required: false,
    },
    sni: { type: "string", description: "Server name to send (default: the host name; none for an IP)" },
    alpn: { type: "string", description: "ALPN protocols to offer, comma-separated (repeatable)" },
    starttls: {
      type: "string",
      description: "postgres (SSLRequest, then TLS) or postgres-direct (TLS first, ALPN postgresql)",
    },
    ca: { type: "string", description: "PEM file of CAs to trust instead of the default store" },
    insecure: {
      type: "boolean",
      description: "Do not fail on verification errors (they are still reported)",
      default: false,
    },
    cert: { type: "string", description: "Client certificate (PEM) to present" },
    key: { type: "string", description: "Private key (PEM) of --cert" },
    timeout: { type: "string", description: "Limit for the whole probe (default 10s)" },
    config: {
      type: "string",
      alias: "c",
      description: "Configuration to compare with: report its route for this connection (repeatable)",
    },
    entrypoint: { type: "string", description: "Entry point for the route (default: chosen by port)" },
    format: { type: "string", description: "text or json", default: "text" },
    debug: { type: "boolean", description: "Print stack traces of internal errors", default: false },
  },
  async run({ args }) {
    const format = formatFlag(args.format);
    const extra = (args._ ?? []).slice(1);
    if (extra.length > 0)
      throw new UsageError(`unexpected argument "${extra[0]}"`, "inspect takes one HOST[:PORT].");
    const targetText = typeof args.target === "string" ? args.target : undefined;
    if (targetText === undefined) {
      throw new UsageError(
        "missing HOST[:PORT]",
        "e.g. tlsroute inspect example.com or tlsroute inspect 127.0.0.1:8443",
      );
    }
    const parsed = parseTarget(targetText);
    if (!parsed.ok) throw new UsageError(parsed.message, parsed.hint);
    const target = parsed.target;

    const sniFlag = lastString(args.sni);
    if (sniFlag !== undefined && isIP(sniFlag.trim()) !== 0) {
      throw new UsageError(
        `--sni "${sniFlag}" is an IP address; SNI carries host names only (RFC 6066)`,
        "Leave --sni out: no SNI is sent to an IP address.",
      );
    }
    const sni = chooseSni(target, sniFlag);
    const startTls = startTlsFlag(lastString(args.starttls));
    // libpq 17 offers ALPN postgresql in both PostgreSQL modes; --alpn "" offers none.
    const alpn = args.alpn !== undefined ? csvFlag(args.alpn) : startTls ? ["postgresql"] : [];
    const caFile = lastString(args.ca) ?? null;
    const ca = caFile === null ? null : readCa(caFile);
    const clientCertificate = readClientCertificate(lastString(args.cert), lastString(args.key));
    const timeoutMs = timeoutFlag(lastString(args.timeout) ?? DEFAULT_TIMEOUT);

    const configPaths = listFlag(args.config);
    const entryPointFlag = lastString(args.entrypoint);
    if (configPaths.length === 0 && entryPointFlag !== undefined) {
      throw new UsageError("--entrypoint needs a configuration", "Give it with -c PATH.");
    }
    let workspace: Workspace | null = null;
    let entryPoint: { name: string; by: "flag" | "port" | "only" } | null = null;
    if (configPaths.length > 0) {
      workspace = openWorkspace(configPaths);
      const choice = chooseEntryPoint(workspace.model.entryPoints, target.port, entryPointFlag);
      if (!choice.ok) throw new UsageError(choice.message, choice.hint);
      entryPoint = choice;
    }

    const identity = sni ?? target.host;
    const options: ProbeOptions = {
      host: target.host,
      port: target.port,
      servername: sni,
      alpn,
      startTls,
      ca,
      clientCertificate,
      timeoutMs,
      identity,
    };
    const result = await probe(options);

    let route: RouteJson | null = null;
    if (workspace && entryPoint && result.local && result.remote) {
      const explanation = routeFor(workspace, {
        entryPoint: entryPoint.name,
        sni,
        alpnOffered: alpn,
        clientIp: result.local.address,
        serverIp: result.remote.address,
        postgresStartTls: startTls === "postgres",
      });
      const configErrors = workspace.diagnostics.filter((d) => d.severity === "error").length;
      route = routeJson(explanation, configErrors, entryPoint.by);
    }

    const report = buildReport({
      target,
      sni,
      alpnOffered: alpn,
      startTls,
      insecure: args.insecure === true,
      caFile: caFile === null ? null : displayPath(caFile),
      clientCertificate: clientCertificate !== null,
      timeoutMs,
      identity,
      probe: result,
      trusted: result.peerChain.some((c) => c.issuer === c.subject) ? trustStoreFingerprints(ca) : new Set(),
      route,
      now: new Date(),
    });
    if (format === "json") writeJson(report);
    else writeReport(report, configPaths.length > 0);
    return report.ok ? EXIT_OK : EXIT_FINDINGS;
  },
});

function startTlsFlag(value: string | undefined): StartTls | null {
  if (value === undefined) return null;
  if (value === "postgres" || value === "postgres-direct") return value;
  throw new UsageError(
    `--starttls must be postgres or postgres-direct, got "${value}"`,
    "postgres: SSLRequest first (every PostgreSQL client); postgres-direct: TLS first with ALPN postgresql (PostgreSQL 17 sslnegotiation=direct).",
  );
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    const code = err && typeof err === "object" && "code" in err ? String(err.code) : "";
    throw new UsageError(
      `cannot read ${what} ${displayPath(file)}: ${code === "ENOENT" ? "no such file" : err instanceof Error ? err.message : String(err)}`,
    );
  }
}

function readCa(file: string): string {
  const text = readText(file, "--ca");
  const parsed = parseCaBundle(text);
  if (!parsed.ok) throw new UsageError(`--ca ${displayPath(file)}: ${parsed.message}`);
  return text;
}

function readClientCertificate(
  certFile: string | undefined,
  keyFile: string | undefined,
): { cert: string; key: string } | null {
  if (certFile === undefined && keyFile === undefined) return null;
  if (certFile === undefined || keyFile === undefined) {
    throw new UsageError("--cert and --key go together", "Give the client certificate and its private key.");
  }
  const cert = readText(certFile, "--cert");
  const key = readText(keyFile, "--key");
  const matches = checkKeyMatches(cert, key);
  if (!matches.ok)
    throw new UsageError(
      `--cert ${displayPath(certFile)} / --key ${displayPath(keyFile)}: ${matches.message}`,
    );
  return { cert, key };
}

function timeoutFlag(text: string): number {
  const parsed = parseDuration(text);
  if (!parsed.ok || parsed.ms <= 0) {
    throw new UsageError(
      `--timeout "${text}" is not a positive duration`,
      'Go syntax ("500ms", "10s", "1m") or a number of seconds.',
    );
  }
  return parsed.ms;
}

// ---------------------------------------------------------------------------------------------------------------
// Text report

const LABEL_WIDTH = 14;

function row(label: string, value: string): string {
  return `${paint.bold(label.padEnd(LABEL_WIDTH))}${value}`;
}

function subRow(label: string, value: string): string {
  return `${paint.dim(`  ${label}`.padEnd(LABEL_WIDTH))}${value}`;
}

function more(value: string): string {
  return `${" ".repeat(LABEL_WIDTH)}${value}`;
}

const SEP = paint.dim(" · ");

function ms(value: number | null): string {
  return value === null ? "–" : `${value} ms`;
}

function keyDescription(c: CertificateJson): string {
  const size = c.keySize !== null ? ` ${c.keySize}` : "";
  const curve = c.curve ? ` (${c.curve})` : "";
  const sig = c.signatureAlgorithm ? `${SEP}signed with ${c.signatureAlgorithm}` : "";
  return `${c.keyType}${size}${curve}${sig}`;
}

function validity(c: CertificateJson): string {
  const span = `${c.notBefore.slice(0, 10)} → ${c.notAfter.slice(0, 10)}`;
  if (c.daysLeft < 0) return `${span} ${paint.error(`(expired ${-c.daysLeft} days ago)`)}`;
  const left = `(${c.daysLeft} day${c.daysLeft === 1 ? "" : "s"} left)`;
  return `${span} ${c.daysLeft < 30 ? paint.warning(left) : paint.dim(left)}`;
}

function chainLines(chain: CertificateJson[]): string[] {
  return chain.map((c, i) => {
    const notes: string[] = [];
    if (c.selfSigned) notes.push("self-signed");
    else if (c.isCA) notes.push("CA");
    if (c.inTrustStore) notes.push("in the trust store");
    const issuer = c.selfSigned ? "" : ` ${paint.dim("← issued by")} ${c.issuer}`;
    const text = `${paint.dim(`${i}`)} ${c.subject || paint.dim("(empty subject)")}${issuer}${notes.length ? paint.dim(` (${notes.join(", ")})`) : ""}`;
    return i === 0 ? row("Chain", text) : more(text);
  });
}

function targetLine(r: InspectReport): string {
  const parts = [
    r.address && r.address !== r.target ? `${r.target} ${paint.dim(`(${r.address})`)}` : r.target,
  ];
  parts.push(`SNI ${r.sni ? paint.accent(r.sni) : paint.dim("(none)")}`);
  parts.push(`ALPN offered ${r.alpnOffered.length ? r.alpnOffered.join(", ") : paint.dim("(none)")}`);
  return row("Target", parts.join(SEP));
}

function postgresLine(r: InspectReport): string | null {
  if (!r.postgres) return null;
  if (r.postgres.mode === "direct") return row("PostgreSQL", "direct TLS (no SSLRequest; ALPN postgresql)");
  const answer = r.postgres.answer;
  if (answer === null) return row("PostgreSQL", `SSLRequest sent ${paint.dim("(no answer)")}`);
  const painted = answer === "S" ? paint.ok("S") : paint.error(answer);
  return row("PostgreSQL", `SSLRequest answered ${painted} ${paint.dim(`(${ms(r.timings.startTlsMs)})`)}`);
}

function verificationLines(r: InspectReport): string[] {
  const v = r.verification;
  if (!v) return [];
  const trust = v.trust === "default" ? "default trust store" : `--ca ${v.trust}`;
  if (v.ok) {
    return [
      row(
        "Verification",
        `${paint.ok("✔")} trusted ${paint.dim(`(${trust})`)}${SEP}name ${paint.accent(v.name)} matches`,
      ),
    ];
  }
  const lines = [
    row(
      "Verification",
      `${v.enforced ? paint.error("✖") : paint.warning("✖")} ${paint.bold(v.error ?? "")}: ${v.message ?? ""} ${paint.dim(`(${trust})`)}`,
    ),
  ];
  if (!v.hostnameMatch && v.error !== "ERR_TLS_CERT_ALTNAME_INVALID") {
    lines.push(more(`${paint.error("✖")} the name ${paint.accent(v.name)} does not match either`));
  }
  if (!v.enforced) lines.push(more(paint.dim("not enforced (--insecure)")));
  return lines;
}

function routeLines(route: RouteJson): string[] {
  const ep = `entry point ${paint.accent(route.facts.entryPoint)} ${paint.dim(`(${route.entryPointChosenBy === "flag" ? "--entrypoint" : route.entryPointChosenBy === "port" ? "by port" : "the only one"})`)}`;
  const lines: string[] = [];
  if (route.matched) {
    lines.push(
      row(
        "Route",
        `${paint.ok("✔")} router ${paint.bold(route.router ?? "")} → service ${paint.bold(route.service ?? "")} (${route.mode})${SEP}${ep}`,
      ),
    );
  } else {
    lines.push(row("Route", `${paint.error("✖")} ${route.refusal ?? "no_route"}${SEP}${ep}`));
  }
  lines.push(more(paint.dim(route.reason)));
  if (route.mode === "terminate" && route.certificate) {
    const cert = route.certificate;
    const what = cert.subject
      ? `${cert.subject}${cert.file ? ` from ${cert.file}` : ""}`
      : cert.source === "generated"
        ? "the generated default certificate"
        : `${cert.source} certificate`;
    lines.push(
      more(`${paint.dim("certificate")} ${what}${SEP}${paint.dim("ALPN")} ${route.alpn ?? "(none)"}`),
    );
  }
  for (const step of route.postgres ?? []) lines.push(more(paint.dim(`PostgreSQL: ${step}`)));
  if (route.configErrors > 0) {
    lines.push(
      more(
        paint.warning(
          `⚠ the configuration has ${route.configErrors} error${route.configErrors === 1 ? "" : "s"}; routers with errors are disabled (run tlsroute validate)`,
        ),
      ),
    );
  }
  return lines;
}

function writeReport(r: InspectReport, configGiven: boolean): void {
  const lines: string[] = [targetLine(r)];
  const pg = postgresLine(r);
  if (pg) lines.push(pg);
  if (r.tls) {
    lines.push(
      row(
        "TLS",
        [
          r.tls.version ?? "?",
          r.tls.cipher ?? "?",
          `ALPN ${r.tls.alpn ?? paint.dim("(none)")}`,
          `group ${r.tls.group ?? paint.dim("(not reported)")}`,
        ].join(SEP),
      ),
    );
  }
  const c = r.certificate;
  if (c) {
    lines.push(row("Certificate", c.subject || paint.dim("(empty subject)")));
    lines.push(subRow("issuer", c.issuer));
    lines.push(
      subRow("names", c.sans.length ? c.sans.join(", ") : paint.dim("(no subject alternative names)")),
    );
    lines.push(subRow("valid", validity(c)));
    lines.push(subRow("key", keyDescription(c)));
    lines.push(subRow("sha256", c.fingerprint256));
    lines.push(...chainLines(r.chain));
  }
  lines.push(...verificationLines(r));
  const timings = [`connect ${ms(r.timings.connectMs)}`];
  if (r.timings.startTlsMs !== null) timings.push(`SSLRequest ${ms(r.timings.startTlsMs)}`);
  if (r.timings.handshakeMs !== null) timings.push(`handshake ${ms(r.timings.handshakeMs)}`);
  if (r.timings.connectMs !== null) lines.push(row("Timings", timings.join(SEP)));
  if (r.route) lines.push(...routeLines(r.route));
  else if (configGiven) lines.push(row("Route", paint.dim("(not computed: no connection was made)")));
  r.warnings.forEach((w, i) => {
    const text = `${paint.warning("⚠")} ${w.message}`;
    lines.push(i === 0 ? row("Warnings", text) : more(text));
  });
  if (r.error) {
    lines.push(row("Result", `${paint.error("✖")} ${r.error.summary}`));
    if (r.error.hint) lines.push(more(`${paint.accent("hint:")} ${r.error.hint}`));
  } else if (r.ok) {
    lines.push(
      row(
        "Result",
        `${paint.ok("✔")} ${r.verification?.ok ? "handshake and verification succeeded" : "handshake succeeded"}`,
      ),
    );
  } else if (r.verification && !r.verification.ok && r.verification.enforced) {
    lines.push(row("Result", `${paint.error("✖")} verification failed: ${r.verification.error}`));
    lines.push(
      more(
        `${paint.accent("hint:")} ${r.verification.trust === "default" ? "For a private CA, pass it with --ca FILE; " : ""}--insecure reports without failing.`,
      ),
    );
  } else if (r.route && !r.route.matched) {
    lines.push(row("Result", `${paint.error("✖")} the configuration does not route this connection`));
  }
  process.stdout.write(`${lines.join("\n")}\n`);
}
