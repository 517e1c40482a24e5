/**
 * End-to-end tests of `tlsroute validate`, run as a user runs it: the built CLI as a subprocess.
 * Run `npm run build` first when running this file on its own (`npm test` does it).
 *
 * Every diagnostic code has a fixture in fixtures/invalid/ (or, for certificate checks, a configuration
 * written next to certificates generated here), and every expected position is computed from the fixture
 * text, so a diagnostic that points at the wrong line or column fails.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { isEcdhGroupSupported, missingCipherSuites } from "../src/tls/runtime-support.ts";
import { ROOT, runCli, runCliJson } from "./helpers/cli.ts";
import { makePki, type Pki } from "./helpers/pki.ts";

// ---------------------------------------------------------------------------------------------------------
// The JSON contract

interface JsonDiagnostic {
  severity: "error" | "warning";
  code: string;
  message: string;
  file: string | null;
  line: number | null;
  column: number | null;
  path: string | null;
  hint: string | null;
}

interface JsonIgnored {
  path: string;
  why: string;
  file: string | null;
  line: number | null;
  column: number | null;
}

interface ValidateJson {
  ok: boolean;
  errors: number;
  warnings: number;
  files: string[];
  diagnostics: JsonDiagnostic[];
  ignored: JsonIgnored[];
}

const INVALID = "fixtures/invalid";
const VALID = "fixtures/valid";

function validateJson(args: string[], cwd?: string) {
  return runCliJson<ValidateJson>(["validate", ...args, "--format", "json"], cwd ? { cwd } : undefined);
}

function read(relative: string, cwd = ROOT): string {
  return readFileSync(path.resolve(cwd, relative), "utf8");
}

// ---------------------------------------------------------------------------------------------------------
// Positions, computed from the fixture text

/**
 * Where a diagnostic must point: the line of `text` that contains `line` (which must be unique unless
 * `nth` picks one), at the column where `token` starts in it (default: where `line` itself starts),
 * moved right by `offset`.
 */
interface Anchor {
  line: string;
  token?: string;
  offset?: number;
  nth?: number;
}

type AnchorSpec = string | Anchor;

function positionOf(text: string, spec: AnchorSpec): { line: number; column: number } {
  const anchor = typeof spec === "string" ? { line: spec } : spec;
  const lines = text.split("\n");
  const hits = lines.flatMap((l, i) => (l.includes(anchor.line) ? [i] : []));
  if (anchor.nth === undefined && hits.length !== 1) {
    throw new Error(`anchor ${JSON.stringify(anchor.line)} matches ${hits.length} lines; make it unique`);
  }
  const index = hits[(anchor.nth ?? 1) - 1];
  if (index === undefined)
    throw new Error(`anchor ${JSON.stringify(anchor.line)} has no line #${anchor.nth}`);
  const lineText = lines[index]!;
  const token = anchor.token ?? anchor.line;
  const at = lineText.indexOf(token);
  if (at === -1) throw new Error(`token ${JSON.stringify(token)} is not on line ${index + 1}`);
  return { line: index + 1, column: at + 1 + (anchor.offset ?? 0) };
}

/** Runs openssl in `dir`: the fixed part as one string (no spaces inside arguments), then the rest. */
function openssl(dir: string, fixed: string, rest: string[]): void {
  execFileSync("openssl", [...fixed.split(" "), ...rest], { cwd: dir, stdio: "pipe" });
}

function describeAll(diagnostics: JsonDiagnostic[]): string {
  return diagnostics
    .map((d) => `${d.file}:${d.line}:${d.column} ${d.severity} ${d.code}: ${d.message}`)
    .join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// One fixture per code

interface FixtureCase {
  /** Path under fixtures/invalid, and the code it must produce. */
  file: string;
  code: string;
  severity: "error" | "warning";
  /** Where the diagnostic points; null: a finding about the whole configuration, with no position. */
  at: AnchorSpec | null;
  /** The file the diagnostic is in, when not `file` itself (directories). */
  in?: string;
  path?: string | null;
  /** true: the code promises a hint; a RegExp: the hint must match it. */
  hint?: true | RegExp;
  message?: RegExp;
  /** Other error codes the same single mistake legitimately produces. */
  alsoErrors?: string[];
}

const X25519MLKEM768_SUPPORTED = isEcdhGroupSupported("X25519MLKEM768");
const RC4_MISSING = missingCipherSuites(["TLS_ECDHE_RSA_WITH_RC4_128_SHA"]).length > 0;
const TRIPLE_DES_MISSING = missingCipherSuites(["TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"]).length > 0;

const CASES: FixtureCase[] = [
  // Files that are not configuration at all.
  {
    file: "syntax.yml",
    code: "syntax",
    severity: "error",
    at: { line: 'rule: "HostSNI', token: '"' },
    message: /never closed/,
  },
  {
    file: "syntax.toml",
    code: "syntax",
    severity: "error",
    at: { line: "service = s", token: " s", offset: 1 },
    hint: /quoted/,
  },
  { file: "syntax.json", code: "syntax", severity: "error", at: { line: '"r":', token: '"service"' } },

  // Shape of the configuration.
  {
    file: "unknown-key.toml",
    code: "unknown-key",
    severity: "error",
    at: { line: "priorty = 5", token: "priorty" },
    path: "tcp.routers.r.priorty",
    hint: /Did you mean "priority"\?/,
  },
  {
    file: "unknown-key.yml",
    code: "unknown-key",
    severity: "error",
    at: "entryPoint:",
    path: "entryPoint",
    hint: /Did you mean "entryPoints"\?/,
  },
  {
    file: "duplicate-key.yml",
    code: "duplicate-key",
    severity: "error",
    at: { line: "Service: s", token: "Service" },
    path: "tcp.routers.r.Service",
  },
  {
    file: "duplicate-key.toml",
    code: "duplicate-key",
    severity: "error",
    at: { line: "Rule =", token: "Rule" },
    path: "tcp.routers.r.Rule",
    hint: /"rule"/,
  },
  {
    file: "wrong-type.yml",
    code: "wrong-type",
    severity: "error",
    at: { line: "priority: high", token: "high" },
    path: "tcp.routers.r.priority",
    message: /whole number/,
  },
  {
    file: "invalid-duration.yml",
    code: "invalid-duration",
    severity: "error",
    at: { line: "dialTimeout:", token: "5 seconds" },
    path: "tcp.serversTransports.slow.dialTimeout",
    hint: /100ms/,
  },
  {
    file: "invalid-name.yml",
    code: "invalid-name",
    severity: "error",
    at: { line: "local@docker:", token: "local" },
    hint: /Rename it to "local"/,
  },

  // Entry points and providers.
  {
    file: "missing-address.yml",
    code: "missing-address",
    severity: "error",
    at: { line: "  admin:", token: "admin" },
    path: "entryPoints.admin",
    hint: true,
  },
  {
    file: "invalid-address.yml",
    code: "invalid-address",
    severity: "error",
    at: { line: 'address: "127.0.0.1"', token: '"' },
    path: "entryPoints.admin.address",
    hint: true,
  },
  {
    file: "udp-entrypoint-ignored.yml",
    code: "udp-entrypoint-ignored",
    severity: "warning",
    at: { line: ":5353/udp", token: '"' },
  },
  {
    file: "duplicate-address.yml",
    code: "duplicate-address",
    severity: "error",
    at: { line: 'address: ":9000"', token: '"', nth: 2 },
    path: "entryPoints.other.address",
    hint: true,
  },
  {
    file: "no-read-timeout.yml",
    code: "no-read-timeout",
    severity: "warning",
    at: { line: "readTimeout: 0", token: "0" },
    hint: true,
  },
  {
    file: "proxy-protocol-insecure.yml",
    code: "proxy-protocol-insecure",
    severity: "warning",
    at: { line: "insecure: true", token: "true" },
    hint: true,
  },
  {
    file: "provider-file-both.yml",
    code: "provider-file-both",
    severity: "error",
    at: { line: "directory: .", token: "." },
    path: "providers.file.directory",
    hint: true,
  },
  {
    file: "provider-file-missing.yml",
    code: "provider-file-missing",
    severity: "error",
    at: { line: "directory:", token: "./no-such" },
    hint: /directory of the file/,
  },

  // Routers.
  {
    file: "invalid-rule.json",
    code: "invalid-rule",
    severity: "error",
    // Inside the rule: at the second value, which v3 does not accept.
    at: { line: '"rule"', token: "`b.example.com`" },
    path: "tcp.routers.two-names.rule",
    hint: /HostSNI\(`a\.example\.com`\) \|\| HostSNI\(`b\.example\.com`\)/,
  },
  {
    file: "missing-rule.yml",
    code: "missing-rule",
    severity: "error",
    at: { line: "no-rule:", token: "no-rule" },
    hint: true,
  },
  {
    file: "missing-service.yml",
    code: "missing-service",
    severity: "error",
    at: { line: "no-service:", token: "no-service" },
    hint: true,
  },
  {
    file: "unknown-service.yml",
    code: "unknown-service",
    severity: "error",
    at: { line: "service: postgress", token: "postgress" },
    path: "tcp.routers.r.service",
    hint: /Did you mean "postgres"\?/,
  },
  {
    file: "unknown-provider.yml",
    code: "unknown-provider",
    severity: "error",
    at: { line: "service: s@docker", token: "s@docker" },
    hint: true,
  },
  {
    file: "unknown-entrypoint.yml",
    code: "unknown-entrypoint",
    severity: "error",
    at: { line: "entryPoints: [webscure]", token: "webscure" },
    hint: /Did you mean "websecure"\?/,
  },
  {
    file: "no-entrypoint.yml",
    code: "no-entrypoint",
    severity: "error",
    at: { line: "    r:", token: "r" },
    hint: true,
  },
  {
    file: "unknown-tls-options.yml",
    code: "unknown-tls-options",
    severity: "error",
    at: { line: "options: modrn", token: "modrn" },
    hint: /Did you mean "modern"\?/,
  },
  {
    file: "unknown-middleware.yml",
    code: "unknown-middleware",
    severity: "error",
    at: { line: "- internal-olny", token: "internal-olny" },
    path: "tcp.routers.r.middlewares[0]",
    hint: /Did you mean "internal-only"\?/,
  },
  {
    file: "hostsni-without-tls.yml",
    code: "hostsni-without-tls",
    severity: "error",
    at: { line: "rule:", token: '"' },
    hint: /tls/,
  },
  {
    file: "priority-too-large.yml",
    code: "priority-too-large",
    severity: "error",
    at: { line: "priority:", token: "9223372036854775807" },
  },
  {
    file: "unknown-rule-syntax.yml",
    code: "unknown-rule-syntax",
    severity: "warning",
    at: { line: "ruleSyntax: v4", token: "v4" },
    hint: true,
  },

  // Rule warnings: legal rules that are probably mistakes, pointed at inside the rule.
  {
    file: "hostsni-port.yml",
    code: "hostsni-port",
    severity: "warning",
    at: { line: "rule:", token: "`app.example.com:443`" },
    hint: /HostSNI\(`app\.example\.com`\)/,
  },
  {
    file: "hostsni-ip-literal.yml",
    code: "hostsni-ip-literal",
    severity: "warning",
    at: { line: "rule:", token: "`10.0.0.5`" },
    hint: true,
  },
  {
    file: "regexp-unanchored.yml",
    code: "regexp-unanchored",
    severity: "warning",
    at: { line: "rule:", token: "`[a-z]" },
    hint: true,
  },
  {
    file: "regexp-uppercase.yml",
    code: "regexp-uppercase",
    severity: "warning",
    at: { line: "rule:", token: "`^App" },
    hint: true,
  },
  {
    file: "regexp-v2-template.yml",
    code: "regexp-v2-template",
    severity: "warning",
    at: { line: "rule:", token: "`^{sub" },
    hint: true,
  },
  {
    file: "never-matches.yml",
    code: "never-matches",
    severity: "warning",
    at: { line: "rule:", token: "!" },
  },
  {
    file: "ellipsis-ignored.yml",
    code: "ellipsis-ignored",
    severity: "warning",
    at: { line: "rule:", token: "..." },
  },

  // Routing lints.
  {
    file: "shadowed-router.yml",
    code: "shadowed-router",
    severity: "warning",
    at: { line: "HostSNI(`db.example.com`)", token: '"' },
    path: "tcp.routers.db.rule",
    hint: true,
    message: /"catch-all"/,
  },
  {
    file: "wildcard-outranks-exact.yml",
    code: "wildcard-outranks-exact",
    severity: "warning",
    at: { line: "HostSNI(`api.example.com`)", token: '"' },
    path: "tcp.routers.api.rule",
    hint: /priority: 51 on "api"/,
    message: /"wild-internal"/,
  },
  {
    file: "equal-priority-overlap.yml",
    code: "equal-priority-overlap",
    severity: "warning",
    // The second router's priority: the value to change.
    at: { line: "priority: 10", token: "10", nth: 2 },
    path: "tcp.routers.app-public.priority",
    hint: true,
    message: /"app-internal" and "app-public"/,
  },
  {
    file: "sni-options-conflict.yml",
    code: "sni-options-conflict",
    severity: "warning",
    // "app" uses the default options: its tls section is what differs.
    at: { line: "tls: {}", token: "{}" },
    hint: true,
    message: /"app-internal" uses "mtls", "app" uses "default"/,
  },
  {
    file: "passthrough-to-whoami.yml",
    code: "passthrough-to-whoami",
    severity: "error",
    at: { line: "passthrough: true", token: "passthrough" },
    path: "tcp.routers.debug.tls.passthrough",
    hint: true,
  },
  {
    file: "tls-options-on-passthrough.yml",
    code: "tls-options-on-passthrough",
    severity: "warning",
    at: { line: "options: modern", token: "modern" },
    hint: true,
  },

  // Services.
  {
    file: "service-multi-type.yml",
    code: "service-multi-type",
    severity: "error",
    at: { line: "both:", token: "both" },
    hint: true,
  },
  {
    file: "service-no-type.yml",
    code: "service-no-type",
    severity: "error",
    at: { line: "empty: {}", token: "empty" },
    hint: true,
  },
  {
    file: "service-no-servers.yml",
    code: "service-no-servers",
    severity: "warning",
    at: { line: "servers: []", token: "servers" },
  },
  {
    file: "invalid-server-address.yml",
    code: "invalid-server-address",
    severity: "error",
    at: { line: '"10.0.0.5"', token: '"' },
    hint: true,
  },
  {
    file: "unknown-servers-transport.yml",
    code: "unknown-servers-transport",
    severity: "error",
    at: { line: "serversTransport: backend-tsl", token: "backend-tsl" },
    hint: /Did you mean "backend-tls"\?/,
  },
  {
    file: "backend-tls-no-server-name.yml",
    code: "backend-tls-no-server-name",
    severity: "error",
    at: { line: "peerCertURI:", token: "peerCertURI" },
    path: "tcp.serversTransports.backend.tls",
    hint: true,
  },
  {
    file: "backend-tls-no-transport.yml",
    code: "backend-tls-no-transport",
    severity: "error",
    at: { line: "servers:", token: "servers" },
    hint: true,
  },
  {
    file: "deprecated-ignored.yml",
    code: "deprecated-ignored",
    severity: "warning",
    at: { line: "terminationDelay: 200", token: "200" },
    path: "tcp.services.s.loadBalancer.terminationDelay",
    hint: true,
  },
  {
    file: "deprecated-field.yml",
    code: "deprecated-field",
    severity: "warning",
    at: { line: "version: 2", token: "2" },
    path: "tcp.services.s.loadBalancer.proxyProtocol",
    hint: true,
  },
  {
    file: "invalid-port.yml",
    code: "invalid-port",
    severity: "error",
    at: { line: "port: 70000", token: "70000" },
    path: "tcp.services.s.loadBalancer.healthCheck.port",
  },
  {
    file: "healthcheck-timeout.yml",
    code: "healthcheck-timeout",
    severity: "warning",
    at: { line: "timeout: 0s", token: "0s" },
  },
  {
    file: "negative-weight.yml",
    code: "negative-weight",
    severity: "error",
    at: { line: "weight: -1", token: "-1" },
  },
  {
    file: "all-weights-zero.yml",
    code: "all-weights-zero",
    severity: "warning",
    at: { line: "services:", token: "services", nth: 2 },
  },
  {
    file: "healthcheck-child.yml",
    code: "healthcheck-child",
    severity: "error",
    at: { line: "- name: unchecked", token: "unchecked" },
    hint: true,
  },
  {
    file: "service-cycle.yml",
    code: "service-cycle",
    severity: "error",
    // The weighted section of the service where the loop was entered.
    at: { line: "services:", token: "services", nth: 2 },
    path: "tcp.services.blue.weighted",
    message: /blue → green → blue/,
    hint: true,
  },
  {
    file: "invalid-proxy-protocol-version.yml",
    code: "invalid-proxy-protocol-version",
    severity: "error",
    at: { line: "version: 3", token: "3" },
    hint: true,
  },
  {
    file: "negative-duration.yml",
    code: "negative-duration",
    severity: "error",
    at: { line: "dialTimeout: -5s", token: "-5s" },
  },
  {
    file: "invalid-peer-san-type.yml",
    code: "invalid-peer-san-type",
    severity: "error",
    at: { line: "type: IPAddress", token: "IPAddress" },
  },
  {
    file: "spiffe-unsupported.yml",
    code: "spiffe-unsupported",
    severity: "error",
    at: { line: "  spiffe:", token: "spiffe" },
    hint: true,
  },

  // Middlewares.
  {
    file: "middleware-multi-type.yml",
    code: "middleware-multi-type",
    severity: "error",
    at: { line: "guard:", token: "guard" },
    hint: true,
  },
  {
    file: "middleware-no-type.yml",
    code: "middleware-no-type",
    severity: "error",
    at: { line: "guard: {}", token: "guard" },
    hint: true,
  },
  {
    file: "deprecated-ipwhitelist.yml",
    code: "deprecated-ipwhitelist",
    severity: "warning",
    at: { line: "guard:", token: "guard" },
    hint: /ipAllowList/,
  },
  {
    file: "empty-source-range.yml",
    code: "empty-source-range",
    severity: "error",
    at: { line: "sourceRange: []", token: "[]" },
    hint: true,
  },
  {
    file: "invalid-cidr.yml",
    code: "invalid-cidr",
    severity: "error",
    at: { line: "192.168.0.0/33", token: "192" },
    path: "tcp.middlewares.guard.ipAllowList.sourceRange[1]",
    hint: true,
  },
  {
    file: "invalid-cidr-trusted-ips.json",
    code: "invalid-cidr",
    severity: "error",
    at: { line: '"trustedIPs"', token: '"10.0.0.300"' },
    path: "entryPoints.tcp.proxyProtocol.trustedIPs[1]",
    hint: true,
  },
  {
    file: "allow-everyone.yml",
    code: "allow-everyone",
    severity: "warning",
    at: { line: '["0.0.0.0/0"]', token: '"' },
  },
  {
    file: "inflight-zero.yml",
    code: "inflight-zero",
    severity: "warning",
    at: { line: "amount: 0", token: "0" },
    hint: true,
  },

  // Unused definitions.
  { file: "unused-service.yml", code: "unused-service", severity: "warning", at: "spare:", hint: true },
  {
    file: "unused-middleware.yml",
    code: "unused-middleware",
    severity: "warning",
    at: { line: "guard:", token: "guard" },
    hint: true,
  },
  {
    file: "unused-servers-transport.yml",
    code: "unused-servers-transport",
    severity: "warning",
    at: { line: "slow:", token: "slow" },
    hint: true,
  },
  {
    file: "unused-tls-options.yml",
    code: "unused-tls-options",
    severity: "warning",
    at: { line: "spare:", token: "spare" },
    hint: true,
  },

  // TLS options.
  {
    file: "unknown-tls-version.yml",
    code: "unknown-tls-version",
    severity: "error",
    at: { line: "minVersion: TLSv1.2", token: "TLSv1.2" },
    path: "tls.options.custom.minVersion",
    message: /silently ignore/,
    hint: /Did you mean "VersionTLS12"\?/,
  },
  {
    file: "min-above-max.yml",
    code: "min-above-max",
    severity: "error",
    at: { line: "minVersion: VersionTLS13", token: "VersionTLS13" },
    hint: true,
  },
  {
    file: "legacy-tls-version.yml",
    code: "legacy-tls-version",
    severity: "warning",
    at: { line: "minVersion: VersionTLS10", token: "VersionTLS10" },
    hint: true,
  },
  {
    file: "unknown-cipher-suite.yml",
    code: "unknown-cipher-suite",
    severity: "error",
    at: { line: "- TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA265", token: "TLS_" },
    path: "tls.options.custom.cipherSuites[1]",
    hint: /Did you mean "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"\?/,
  },
  {
    file: "insecure-cipher-suite.yml",
    code: "insecure-cipher-suite",
    severity: "warning",
    at: { line: "_RC4_", token: "TLS_" },
    hint: true,
    ...(RC4_MISSING ? { alsoErrors: ["cipher-suite-unavailable"] } : {}),
  },
  ...(TRIPLE_DES_MISSING
    ? [
        {
          file: "cipher-suite-unavailable.yml",
          code: "cipher-suite-unavailable",
          severity: "error",
          at: { line: "_3DES_", token: "TLS_" },
          hint: true,
        } satisfies FixtureCase,
      ]
    : []),
  {
    file: "unknown-curve.yml",
    code: "unknown-curve",
    severity: "error",
    at: { line: "- P-256", token: "P-256" },
    hint: /Did you mean "secp256r1"\?/,
  },
  ...(X25519MLKEM768_SUPPORTED
    ? []
    : [
        {
          file: "curve-unavailable.yml",
          code: "curve-unavailable",
          severity: "warning",
          at: { line: "X25519MLKEM768", token: "X25519MLKEM768" },
        } satisfies FixtureCase,
      ]),
  {
    file: "empty-alpn.yml",
    code: "empty-alpn",
    severity: "error",
    at: { line: '- ""', token: '"' },
  },
  {
    file: "deprecated-option.yml",
    code: "deprecated-option",
    severity: "warning",
    at: { line: "preferServerCipherSuites:", token: "true" },
    hint: true,
  },
  {
    file: "unknown-client-auth-type.yml",
    code: "unknown-client-auth-type",
    severity: "error",
    at: { line: "clientAuthType:", token: "Require" },
    hint: /RequireAndVerifyClientCert/,
  },
  {
    file: "client-auth-needs-ca.yml",
    code: "client-auth-needs-ca",
    severity: "error",
    at: { line: "clientAuthType:", token: "Require" },
    path: "tls.options.custom.clientAuth.caFiles",
    hint: true,
  },
  {
    file: "invalid-ca.yml",
    code: "invalid-ca",
    severity: "error",
    at: { line: "- |", token: "|" },
    path: "tls.options.custom.clientAuth.caFiles[0]",
  },
  {
    file: "sni-strict-no-certificate.yml",
    code: "sni-strict-no-certificate",
    severity: "warning",
    at: { line: "rule:", token: '"' },
    hint: true,
  },
  {
    file: "postgres-alpn.yml",
    code: "postgres-alpn",
    severity: "warning",
    at: { line: "alpnProtocols:", token: "h2" },
    hint: /postgresql/,
  },

  // Certificates that need no certificate content.
  {
    file: "no-certificates.yml",
    code: "no-certificates",
    severity: "warning",
    at: null,
    path: "tls.certificates",
    hint: true,
  },
  {
    file: "file-not-found.yml",
    code: "file-not-found",
    severity: "error",
    at: { line: "certFile:", token: "certs/missing.crt" },
    path: "tls.certificates[0].certFile",
    hint: /relative to the file/,
  },
  {
    file: "file-unreadable.yml",
    code: "file-unreadable",
    severity: "error",
    at: { line: "certFile:", token: "." },
    message: /directory/,
  },
  {
    file: "certificate-incomplete.yml",
    code: "certificate-incomplete",
    severity: "error",
    at: { line: "- certFile:", token: "certFile" },
    hint: /keyFile/,
  },
  {
    file: "store-ignored.yml",
    code: "store-ignored",
    severity: "warning",
    at: { line: "internal:", token: "internal" },
    hint: true,
  },
  {
    file: "default-generated-cert-unsupported.yml",
    code: "default-generated-cert-unsupported",
    severity: "warning",
    at: { line: "resolver: le", token: "resolver" },
    hint: true,
  },

  // Certificate resolvers.
  {
    file: "resolver-no-acme.yml",
    code: "resolver-no-acme",
    severity: "error",
    at: { line: "  le:", token: "le" },
    hint: true,
  },
  {
    file: "resolver-unsupported.yml",
    code: "resolver-unsupported",
    severity: "error",
    at: { line: "  ts:", token: "ts" },
    hint: true,
  },
  {
    file: "unsupported-challenge.yml",
    code: "unsupported-challenge",
    severity: "error",
    at: { line: "httpChallenge:", token: "httpChallenge" },
    hint: /tlsChallenge/,
  },
  {
    file: "acme-no-email.yml",
    code: "acme-no-email",
    severity: "warning",
    at: { line: "  le:", token: "le" },
    hint: true,
  },
  {
    file: "acme-no-storage.yml",
    code: "acme-no-storage",
    severity: "warning",
    at: { line: "  le:", token: "le" },
    hint: true,
  },
  {
    file: "unknown-cert-resolver.yml",
    code: "unknown-cert-resolver",
    severity: "error",
    at: { line: "certResolver:", token: "letsencrpyt" },
    hint: /Did you mean "letsencrypt"\?/,
  },
  {
    file: "acme-no-challenge.yml",
    code: "acme-no-challenge",
    severity: "error",
    // The acme section's first key: where a challenge would be added.
    at: { line: "email: ops@example.com", token: "email" },
    path: "certificatesResolvers.le.acme",
    hint: /tlsChallenge/,
  },
  {
    file: "acme-unknown-key-type.yml",
    code: "acme-unknown-key-type",
    severity: "error",
    at: { line: "keyType:", token: "EC265" },
    path: "certificatesResolvers.le.acme.keyType",
    hint: /Did you mean "EC256"\?/,
  },
  {
    file: "acme-invalid-ca-server.yml",
    code: "acme-invalid-ca-server",
    severity: "error",
    at: { line: "caServer:", token: "http://" },
    path: "certificatesResolvers.le.acme.caServer",
    hint: /https:\/\//,
  },
  {
    file: "acme-storage-not-writable.yml",
    code: "acme-storage-not-writable",
    severity: "error",
    at: { line: "storage:", token: "no-such-directory" },
    path: "certificatesResolvers.le.acme.storage",
    message: /no-such-directory\/acme\.json does not exist/,
    hint: /Create .*no-such-directory/,
  },
  {
    // A directory: the configuration, and a storage file in a hidden directory (not read as configuration).
    file: "acme-storage-unreadable",
    in: "acme-storage-unreadable/tlsroute.yml",
    code: "acme-storage-unreadable",
    severity: "error",
    at: { line: "storage:", token: ".state" },
    path: "certificatesResolvers.le.acme.storage",
    message: /\.state\/acme\.json is not valid JSON/,
    hint: /will not overwrite/,
  },
  {
    file: "acme-stored-certificate-invalid",
    in: "acme-stored-certificate-invalid/tlsroute.yml",
    code: "acme-stored-certificate-invalid",
    severity: "warning",
    at: { line: "storage:", token: ".state" },
    path: "certificatesResolvers.le.acme.storage",
    message: /"app\.example\.com" cannot be used .*a new one is requested/,
  },
  {
    file: "acme-name-not-certifiable.yml",
    code: "acme-name-not-certifiable",
    severity: "warning",
    at: { line: "rule:", token: '"' },
    path: "tcp.routers.apps.rule",
    message: /"\*\.example\.com" is a wildcard/,
    hint: true,
  },
  {
    file: "acme-name-not-certifiable-regexp.yml",
    code: "acme-name-not-certifiable",
    severity: "warning",
    at: { line: "rule:", token: '"' },
    path: "tcp.routers.tenants.rule",
    message: /HostSNIRegexp/,
    hint: /tls\.domains/,
  },
  {
    file: "acme-name-not-certifiable-domains.yml",
    code: "acme-name-not-certifiable",
    severity: "warning",
    // The domains entry holding the wildcard, not the one before it.
    at: { line: "- main: example.com", token: "main" },
    path: "tcp.routers.app.tls.domains[1]",
    message: /"\*\.example\.com" is a wildcard/,
    hint: true,
  },
  {
    file: "acme-resolver-on-passthrough.yml",
    code: "acme-resolver-on-passthrough",
    severity: "warning",
    at: { line: "certResolver:", token: "le" },
    path: "tcp.routers.app.tls.certResolver",
    hint: /passthrough: false/,
  },
  {
    file: "acme-challenge-bypassed.yml",
    code: "acme-challenge-bypassed",
    severity: "warning",
    at: { line: "  websecure:", token: "websecure" },
    path: "entryPoints.websecure.allowACMEByPass",
    message: /"app\.example\.com"/,
    hint: true,
  },
  {
    file: "acme-passthrough-conflict.yml",
    code: "acme-passthrough-conflict",
    severity: "warning",
    at: { line: 'rule: "HostSNI(`app.example.com`)"', token: '"', nth: 2 },
    path: "tcp.routers.legacy.rule",
    message:
      /router "legacy" on entry point "legacy" takes "app\.example\.com", which resolver "le" certifies/,
    // No resolver router on "legacy": allowACMEByPass there lets the backend answer for itself.
    hint: /allowACMEByPass: true on entry point "legacy"/,
  },

  // Several files: the second definition is the error, and it says where the first one is.
  {
    file: "duplicate-name",
    in: "duplicate-name/b.yml",
    code: "duplicate-name",
    severity: "error",
    at: { line: "    s:", token: "s" },
    path: "tcp.services.s",
    message: new RegExp(
      `service "s" is defined twice; the first definition is at fixtures/invalid/duplicate-name/a\\.yml:${(() => {
        const p = positionOf(read(`${INVALID}/duplicate-name/a.yml`), { line: "    s:", token: "s" });
        return `${p.line}:${p.column}`;
      })()}`,
    ),
    hint: true,
  },
];

/** Checks one fixture case against a validate --format json run; returns the matching diagnostic. */
function checkCase(
  c: FixtureCase,
  result: ReturnType<typeof validateJson>,
  displayFile: string,
  text: string,
) {
  const { json } = result;
  const all = describeAll(json.diagnostics);
  const withCode = json.diagnostics.filter((d) => d.code === c.code);
  assert.ok(withCode.length > 0, `expected a ${c.code} diagnostic, got:\n${all}`);

  let found: JsonDiagnostic | undefined;
  if (c.at === null) {
    found = withCode.find((d) => d.line === null);
    assert.ok(found, `expected ${c.code} without a position, got:\n${all}`);
    assert.equal(found.file, null);
    assert.equal(found.column, null);
  } else {
    const want = positionOf(text, c.at);
    found = withCode.find((d) => d.file === displayFile && d.line === want.line && d.column === want.column);
    assert.ok(found, `expected ${c.code} at ${displayFile}:${want.line}:${want.column}, got:\n${all}`);
  }
  assert.equal(found.severity, c.severity);
  assert.ok(found.message.trim().length > 0, "message must not be empty");
  if (c.message) assert.match(found.message, c.message);
  if (c.hint) {
    assert.ok(found.hint && found.hint.trim().length > 0, `${c.code} promises a hint`);
    if (c.hint instanceof RegExp) assert.match(found.hint, c.hint);
  }
  if (c.path !== undefined) assert.equal(found.path, c.path);

  // Exactly the mistake: no unrelated error rides along.
  const allowed = new Set([c.code, ...(c.alsoErrors ?? [])]);
  const stray = json.diagnostics.filter((d) => d.severity === "error" && !allowed.has(d.code));
  assert.deepEqual(stray, [], `unexpected errors:\n${describeAll(stray)}`);

  const errors = json.diagnostics.filter((d) => d.severity === "error").length;
  assert.equal(json.errors, errors);
  assert.equal(json.warnings, json.diagnostics.length - errors);
  assert.equal(result.code, errors > 0 ? 1 : 0, `exit code; stderr:\n${result.stderr}`);
  assert.equal(json.ok, errors === 0);
  return found;
}

describe("validate: one failing fixture per diagnostic code", () => {
  for (const c of CASES) {
    it(`${c.file} → ${c.severity} ${c.code}`, () => {
      const result = validateJson([`${INVALID}/${c.file}`]);
      const displayFile = `${INVALID}/${c.in ?? c.file}`;
      checkCase(c, result, displayFile, read(displayFile));
      if (c.severity === "warning" && !c.alsoErrors) {
        const strict = validateJson([`${INVALID}/${c.file}`, "--strict"]);
        assert.equal(strict.code, 1, "--strict makes warnings fail");
        assert.equal(strict.json.ok, false);
        assert.equal(strict.json.errors, 0);
      }
    });
  }

  it("every fixture in fixtures/invalid is exercised by a case", () => {
    const used = new Set(CASES.map((c) => c.file));
    const runtimeDependent = new Set(["cipher-suite-unavailable.yml", "curve-unavailable.yml"]);
    const unused = readdirSync(path.join(ROOT, INVALID)).filter(
      (f) => !used.has(f) && !runtimeDependent.has(f),
    );
    assert.deepEqual(unused, []);
  });

  it("runtime-dependent fixtures say what this runtime does", () => {
    // On a TLS library that has the suite or group, the fixture must be clean of that finding.
    const curve = validateJson([`${INVALID}/curve-unavailable.yml`]).json;
    assert.equal(
      curve.diagnostics.some((d) => d.code === "curve-unavailable"),
      !X25519MLKEM768_SUPPORTED,
    );
    const suite = validateJson([`${INVALID}/cipher-suite-unavailable.yml`]).json;
    assert.equal(
      suite.diagnostics.some((d) => d.code === "cipher-suite-unavailable"),
      TRIPLE_DES_MISSING,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// Certificates, generated here so that nothing committed can expire

describe("validate: certificate checks with generated certificates", () => {
  let dir: string;
  let pki: Pki;
  let ca: ReturnType<Pki["ca"]>;

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "tlsroute-validate-"));
    pki = makePki(dir);
    ca = pki.ca("Test CA");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const base = (router: string, extra: string) => `entryPoints:
  websecure:
    address: ":9443"
tcp:
  routers:
    app:
      rule: "HostSNI(\`${router}\`)"
      service: s
      tls:
        options: custom
  services:
    s:
      loadBalancer:
        servers:
          - address: "127.0.0.1:9001"
${extra}`;

  const certificates = (certFile: string, keyFile: string) => `tls:
  certificates:
    - certFile: ${path.basename(certFile)}
      keyFile: ${path.basename(keyFile)}
  options:
    custom:
      minVersion: VersionTLS12
`;

  /** Writes the configuration next to the certificates and validates it from that directory. */
  function run(name: string, text: string, extra: string[] = []) {
    writeFileSync(path.join(dir, name), text);
    return { ...validateJson([name, ...extra], dir), text };
  }

  function check(name: string, text: string, c: Omit<FixtureCase, "file">) {
    const result = run(name, text);
    return checkCase({ ...c, file: name }, result, name, text);
  }

  it("a certificate that covers the routed name, with a client CA: no finding at all", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const text = `${base("app.example.com", certificates(leaf.chainFile, leaf.keyFile))}      clientAuth:
        clientAuthType: RequireAndVerifyClientCert
        caFiles:
          - ${path.basename(ca.certFile)}
`;
    const { json, code } = run("covered.yml", text, ["--strict"]);
    assert.deepEqual(json.diagnostics, [], describeAll(json.diagnostics));
    assert.equal(code, 0);
    assert.equal(json.ok, true);
  });

  it("inline PEM in a YAML block scalar is read like a file", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const indent = (pem: string) =>
      pem
        .trim()
        .split("\n")
        .map((l) => `        ${l}`)
        .join("\n");
    const text = base(
      "app.example.com",
      `tls:
  certificates:
    - certFile: |
${indent(leaf.certPem)}
      keyFile: |
${indent(leaf.keyPem)}
  options:
    custom:
      sniStrict: true
`,
    );
    const { json, code } = run("inline.yml", text, ["--strict"]);
    assert.deepEqual(json.diagnostics, [], describeAll(json.diagnostics));
    assert.equal(code, 0);
  });

  it("name-not-covered: the certificate is for another name", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const text = base("other.example.com", certificates(leaf.chainFile, leaf.keyFile));
    const found = check("not-covered.yml", text, {
      code: "name-not-covered",
      severity: "warning",
      at: { line: "rule:", token: '"' },
      path: "tcp.routers.app.rule",
      hint: true,
      message: /"other\.example\.com"/,
    });
    assert.match(found.message, /generated self-signed/);
  });

  it("sni-strict-no-certificate: sniStrict and a certificate for another name", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const text = `${base("other.example.com", certificates(leaf.chainFile, leaf.keyFile))}      sniStrict: true
`;
    check("sni-strict.yml", text, {
      code: "sni-strict-no-certificate",
      severity: "warning",
      at: { line: "rule:", token: '"' },
      hint: true,
      message: /"other\.example\.com"/,
    });
  });

  it("certificate-expired is an error at certFile", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"], days: -2 });
    const text = base("app.example.com", certificates(leaf.certFile, leaf.keyFile));
    const found = check("expired.yml", text, {
      code: "certificate-expired",
      severity: "error",
      at: { line: "certFile:", token: path.basename(leaf.certFile) },
      path: "tls.certificates[0].certFile",
      hint: true,
    });
    const day = new Date(Date.now() - 2 * 86_400_000).toISOString().slice(0, 10);
    assert.match(found.message, new RegExp(`expired on ${day}`));
  });

  it("certificate-expiring within 30 days is a warning: exit 0, and 1 with --strict", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"], days: 10 });
    const text = base("app.example.com", certificates(leaf.certFile, leaf.keyFile));
    const found = check("expiring.yml", text, {
      code: "certificate-expiring",
      severity: "warning",
      at: { line: "certFile:", token: path.basename(leaf.certFile) },
      hint: true,
    });
    assert.match(found.message, /expires in (9|10) days/);
    assert.equal(run("expiring.yml", text, ["--strict"]).code, 1);
  });

  it("a certificate valid for 60 more days is not reported", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"], days: 60 });
    const { json } = run("fine.yml", base("app.example.com", certificates(leaf.certFile, leaf.keyFile)));
    assert.deepEqual(json.diagnostics, [], describeAll(json.diagnostics));
  });

  it("certificate-not-yet-valid: notBefore in the future", () => {
    // makePki always starts validity in the past; sign one with its CA database, starting in two days.
    const key = path.join(dir, "future.key");
    const csr = path.join(dir, "future.csr");
    const cert = path.join(dir, "future.crt");
    const ext = path.join(dir, "future.ext");
    writeFileSync(ext, "basicConstraints = CA:FALSE\nsubjectAltName = DNS:app.example.com\n");
    const stamp = (d: Date) => `${d.toISOString().slice(0, 19).replace(/[-:T]/g, "")}Z`;
    const start = stamp(new Date(Date.now() + 2 * 86_400_000));
    const end = stamp(new Date(Date.now() + 400 * 86_400_000));
    openssl(dir, "req -new -config openssl-ca.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes", [
      ...["-keyout", key, "-out", csr, "-subj", "/CN=app.example.com"],
    ]);
    openssl(dir, "ca -batch -config openssl-ca.cnf -notext", [
      ...["-cert", ca.certFile, "-keyfile", ca.keyFile, "-startdate", start, "-enddate", end],
      ...["-extfile", ext, "-in", csr, "-out", cert],
    ]);
    const text = base("app.example.com", certificates(cert, key));
    check("future.yml", text, {
      code: "certificate-not-yet-valid",
      severity: "warning",
      at: { line: "certFile:", token: "future.crt" },
    });
  });

  it("key-mismatch: the key belongs to another certificate", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const other = pki.leaf({ ca, cn: "other.example.com", dns: ["other.example.com"] });
    const text = base("app.example.com", certificates(leaf.certFile, other.keyFile));
    check("mismatch.yml", text, {
      code: "key-mismatch",
      severity: "error",
      at: { line: "keyFile:", token: path.basename(other.keyFile) },
      path: "tls.certificates[0].keyFile",
    });
  });

  it("invalid-key: the key file is PEM-shaped garbage", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const bad = path.join(dir, "garbage.key");
    writeFileSync(bad, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
    const text = base("app.example.com", certificates(leaf.certFile, bad));
    check("bad-key.yml", text, {
      code: "invalid-key",
      severity: "error",
      at: { line: "keyFile:", token: "garbage.key" },
    });
  });

  it("invalid-certificate: a truncated certificate", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const body = leaf.certPem.split("\n").filter((l) => l && !l.startsWith("-----"));
    const truncated = path.join(dir, "truncated.crt");
    writeFileSync(
      truncated,
      `-----BEGIN CERTIFICATE-----\n${body.slice(0, 3).join("\n")}\n-----END CERTIFICATE-----\n`,
    );
    const text = base("app.example.com", certificates(truncated, leaf.keyFile));
    check("truncated.yml", text, {
      code: "invalid-certificate",
      severity: "error",
      at: { line: "certFile:", token: "truncated.crt" },
      path: "tls.certificates[0].certFile",
    });
  });

  it("weak-key: a 1024-bit RSA certificate", () => {
    const key = path.join(dir, "weak.key");
    const cert = path.join(dir, "weak.crt");
    openssl(dir, "req -x509 -newkey rsa:1024 -nodes -days 365 -subj /CN=app.example.com", [
      ...["-addext", "subjectAltName=DNS:app.example.com", "-keyout", key, "-out", cert],
    ]);
    const text = base("app.example.com", certificates(cert, key));
    check("weak.yml", text, {
      code: "weak-key",
      severity: "warning",
      at: { line: "certFile:", token: "weak.crt" },
      hint: true,
      message: /1024-bit/,
    });
  });

  it("invalid-ca: a client CA file that holds a private key", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const text = `${base("app.example.com", certificates(leaf.chainFile, leaf.keyFile))}      clientAuth:
        clientAuthType: RequireAndVerifyClientCert
        caFiles:
          - ${path.basename(ca.keyFile)}
`;
    check("ca-is-key.yml", text, {
      code: "invalid-ca",
      severity: "error",
      at: { line: `- ${path.basename(ca.keyFile)}`, token: path.basename(ca.keyFile) },
      path: "tls.options.custom.clientAuth.caFiles[0]",
    });
  });

  it("implicit-client-auth: caFiles without clientAuthType", () => {
    const leaf = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"] });
    const text = `${base("app.example.com", certificates(leaf.chainFile, leaf.keyFile))}      clientAuth:
        caFiles:
          - ${path.basename(ca.certFile)}
`;
    check("implicit.yml", text, {
      code: "implicit-client-auth",
      severity: "warning",
      at: { line: "caFiles:", token: "caFiles" },
      path: "tls.options.custom.clientAuth.clientAuthType",
      hint: /RequireAndVerifyClientCert/,
    });
  });

  it("a servers transport: expired client certificate and a missing root CA", () => {
    const client = pki.leaf({ ca, cn: "tlsroute client", days: -1 });
    const text = `entryPoints:
  tcp:
    address: ":9000"
tcp:
  routers:
    r:
      rule: "HostSNI(\`*\`)"
      service: s
  services:
    s:
      loadBalancer:
        servers:
          - address: "127.0.0.1:9001"
            tls: true
        serversTransport: backend
  serversTransports:
    backend:
      tls:
        serverName: db.internal
        rootCAs:
          - no-such-ca.pem
        certificates:
          - certFile: ${path.basename(client.certFile)}
            keyFile: ${path.basename(client.keyFile)}
`;
    const result = run("transport.yml", text);
    const expired = checkCase(
      {
        file: "transport.yml",
        code: "certificate-expired",
        severity: "error",
        at: { line: "- certFile:", token: path.basename(client.certFile) },
        alsoErrors: ["file-not-found"],
      },
      result,
      "transport.yml",
      text,
    );
    assert.match(expired.message, /client certificate #1 of "backend"/);
    checkCase(
      {
        file: "transport.yml",
        code: "file-not-found",
        severity: "error",
        at: { line: "- no-such-ca.pem", token: "no-such" },
        path: "tcp.serversTransports.backend.tls.rootCAs[0]",
        alsoErrors: ["certificate-expired"],
      },
      result,
      "transport.yml",
      text,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// Valid configurations

describe("validate: valid configurations", () => {
  const clean: [string, number][] = [
    [`${VALID}/passthrough.yml`, 1],
    [`${VALID}/acme.toml`, 1],
    [`${VALID}/whoami.json`, 1],
    [`${VALID}/traefik/traefik.yml`, 3],
    [`${VALID}/split`, 3],
  ];
  for (const [target, files] of clean) {
    it(`${target}: no finding, exit 0 even with --strict`, () => {
      const { json, code, stderr } = validateJson([target, "--strict"]);
      assert.deepEqual(json.diagnostics, [], describeAll(json.diagnostics));
      assert.equal(code, 0, stderr);
      assert.equal(json.ok, true);
      assert.equal(json.errors, 0);
      assert.equal(json.warnings, 0);
      assert.equal(json.files.length, files);
    });
  }

  it("the example in fixtures/example validates with 0 errors", () => {
    const { json, code } = validateJson(["fixtures/example"]);
    const errors = json.diagnostics.filter((d) => d.severity === "error");
    assert.deepEqual(errors, [], describeAll(errors));
    assert.equal(json.errors, 0);
    assert.equal(code, 0);
    assert.equal(json.ok, true);
    assert.deepEqual(json.files, ["fixtures/example/tlsroute.yml"]);
  });

  it("the example in fixtures/example validates from its own directory, with no argument", () => {
    const result = runCli(["validate"], { cwd: path.join(ROOT, "fixtures/example") });
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /0 errors, \d+ warnings? in 1 file/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Loading: several files, directories, Traefik static files, defaults

describe("validate: loading", () => {
  it("several files and a directory are merged into one configuration", () => {
    const split = `${VALID}/split`;
    const together = validateJson([`${split}/entrypoints.yml`, `${split}/tcp`]);
    assert.equal(together.code, 0);
    assert.deepEqual(together.json.files, [
      `${split}/entrypoints.yml`,
      `${split}/tcp/routers.toml`,
      `${split}/tcp/services.json`,
    ]);
    assert.deepEqual(together.json.diagnostics, []);
    // Alone, the routers have no entry point: the merge is what makes the configuration valid.
    const alone = validateJson([`${split}/tcp`]);
    assert.equal(alone.code, 1);
    const text = read(`${split}/tcp/routers.toml`);
    const d = alone.json.diagnostics.find((x) => x.code === "no-entrypoint");
    assert.ok(d, describeAll(alone.json.diagnostics));
    assert.deepEqual(
      [d.file, d.line, d.column],
      [
        `${split}/tcp/routers.toml`,
        ...Object.values(positionOf(text, { line: "[tcp.routers.db]", token: "db" })),
      ],
    );
  });

  it("a name defined in two files: the error is at the file loaded second and points at the first", () => {
    const a = `${INVALID}/duplicate-name/a.yml`;
    const b = `${INVALID}/duplicate-name/b.yml`;
    // Reverse order: now a.yml is the second definition.
    const { json, code } = validateJson([b, a]);
    assert.equal(code, 1);
    const dups = json.diagnostics.filter((d) => d.code === "duplicate-name");
    assert.equal(dups.length, 1, describeAll(json.diagnostics));
    const inA = positionOf(read(a), { line: "    s:", token: "s" });
    const inB = positionOf(read(b), { line: "    s:", token: "s" });
    assert.equal(dups[0]!.file, a);
    assert.deepEqual([dups[0]!.line, dups[0]!.column], [inA.line, inA.column]);
    assert.match(dups[0]!.message, new RegExp(`${b.replace(/[.]/g, "\\.")}:${inB.line}:${inB.column}`));
  });

  it("a Traefik static file loads its provider directory; ignored sections are notes, not errors", () => {
    const staticFile = `${VALID}/traefik/traefik.yml`;
    const dynamic = `${VALID}/traefik/dynamic/tcp.yml`;
    const { json, code, stdout } = validateJson([staticFile]);
    assert.equal(code, 0);
    assert.deepEqual(json.files, [staticFile, `${VALID}/traefik/dynamic/services.yml`, dynamic]);
    assert.deepEqual(json.diagnostics, []);
    const staticText = read(staticFile);
    const dynamicText = read(dynamic);
    const expected = [
      { path: "api", file: staticFile, ...positionOf(staticText, "api:") },
      { path: "log", file: staticFile, ...positionOf(staticText, "log:") },
      { path: "http", file: dynamic, ...positionOf(dynamicText, { line: "http:", nth: 1 }) },
    ];
    assert.deepEqual(
      json.ignored.map(({ path: p, file, line, column }) => ({ path: p, file, line, column })),
      expected,
    );
    for (const note of json.ignored) assert.ok(note.why.length > 0);
    assert.ok(!/"code": "(api|log|http)"/.test(stdout));

    const text = runCli(["validate", staticFile]);
    assert.equal(text.code, 0);
    const api = positionOf(staticText, "api:");
    assert.ok(
      text.stdout.includes(`${staticFile}:${api.line}:${api.column}: note: api is ignored`),
      text.stdout,
    );
    assert.match(text.stdout, /note: http is ignored/);
    assert.match(text.stdout, /0 errors, 0 warnings in 3 files/);
  });

  it("the static file's directory given whole: every file is loaded once, no duplicate", () => {
    const { json, code } = validateJson([`${VALID}/traefik`]);
    assert.equal(code, 0, describeAll(json.diagnostics));
    assert.equal(json.files.length, 3);
    assert.equal(new Set(json.files).size, 3);
  });

  describe("no path given", () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(path.join(tmpdir(), "tlsroute-cwd-"));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it("uses tlsroute.yml in the working directory", () => {
      const work = path.join(dir, "with-config");
      mkdirSync(work);
      cpSync(path.join(ROOT, INVALID, "unknown-service.yml"), path.join(work, "tlsroute.yml"));
      // A lower-priority name next to it must not be the one read.
      cpSync(path.join(ROOT, VALID, "acme.toml"), path.join(work, "tlsroute.toml"));
      const { json, code } = runCliJson<ValidateJson>(["validate", "--format", "json"], { cwd: work });
      assert.equal(code, 1);
      assert.deepEqual(json.files, ["tlsroute.yml"]);
      const want = positionOf(read("tlsroute.yml", work), { line: "service: postgress", token: "postgress" });
      const d = json.diagnostics.find((x) => x.code === "unknown-service");
      assert.deepEqual([d?.file, d?.line, d?.column], ["tlsroute.yml", want.line, want.column]);
    });

    it("fails with exit 2 in an empty directory, saying how to start", () => {
      const empty = path.join(dir, "empty");
      mkdirSync(empty);
      const result = runCli(["validate"], { cwd: empty });
      assert.equal(result.code, 2);
      assert.equal(result.stdout, "");
      assert.match(result.stderr, /tlsroute\.yml/);
      assert.match(result.stderr, /create tlsroute\.yml/i);
      assert.doesNotMatch(result.stderr, /-c PATH/, "validate takes paths as arguments, not -c");
      assertNoStackTrace(result.stderr);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------
// Output formats

function assertNoStackTrace(output: string): void {
  assert.doesNotMatch(output, /^\s+at .+:\d+:\d+\)?$/m, `stack trace in:\n${output}`);
  assert.doesNotMatch(output, /internal error/i, output);
}

describe("validate: output formats", () => {
  const fixture = `${INVALID}/unknown-service.yml`;
  const text = read(fixture);
  const error = positionOf(text, { line: "service: postgress", token: "postgress" });
  const warning = positionOf(text, { line: "postgres:", token: "postgres" });

  it("json: one document on stdout with the contract's fields, nothing on stderr", () => {
    const result = validateJson([fixture]);
    assert.equal(result.stderr, "");
    assert.deepEqual(Object.keys(result.json).sort(), [
      "diagnostics",
      "errors",
      "files",
      "ignored",
      "ok",
      "warnings",
    ]);
    assert.equal(result.json.ok, false);
    assert.equal(result.json.errors, 1);
    assert.equal(result.json.warnings, 1);
    assert.deepEqual(result.json.files, [fixture]);
    for (const d of result.json.diagnostics) {
      assert.deepEqual(Object.keys(d).sort(), [
        "code",
        "column",
        "file",
        "hint",
        "line",
        "message",
        "path",
        "severity",
      ]);
      assert.match(d.code, /^[a-z]+(-[a-z0-9]+)*$/);
    }
    assert.deepEqual(result.json.diagnostics[0], {
      severity: "error",
      code: "unknown-service",
      message: 'router "r" uses service "postgress", which does not exist',
      file: fixture,
      line: error.line,
      column: error.column,
      path: "tcp.routers.r.service",
      hint: 'Did you mean "postgres"?',
    });
    assert.equal(result.json.diagnostics[1]?.code, "unused-service");
    assert.deepEqual(result.json.ignored, []);
  });

  it("json: diagnostics are ordered by file and position", () => {
    const { json } = validateJson([`${INVALID}/file-not-found.yml`, `${INVALID}/duplicate-name`]);
    const located = json.diagnostics.filter((d) => d.line !== null);
    const sorted = [...located].sort(
      (a, b) =>
        (a.file! < b.file! ? -1 : a.file! > b.file! ? 1 : 0) || a.line! - b.line! || a.column! - b.column!,
    );
    assert.deepEqual(located, sorted);
    assert.ok(located.length >= 3);
  });

  it("text: file:line:column, severity, [code], message, hint, summary; no colour when not a TTY", () => {
    const result = runCli(["validate", fixture]);
    assert.equal(result.code, 1);
    assert.equal(result.stderr, "");
    assert.ok(!result.stdout.includes("\u001b["), "no ANSI colour codes");
    const lines = result.stdout.trimEnd().split("\n");
    assert.deepEqual(lines, [
      `${fixture}:${error.line}:${error.column}: error [unknown-service] router "r" uses service "postgress", which does not exist`,
      '  hint: Did you mean "postgres"?',
      `${fixture}:${warning.line}:${warning.column}: warning [unused-service] service "postgres" is not used by any router or weighted service`,
      "  hint: Remove it, or reference it.",
      "✖ 1 error, 1 warning in 1 file",
    ]);
  });

  it("text: a clean configuration says so in its summary", () => {
    const result = runCli(["validate", `${VALID}/passthrough.yml`]);
    assert.equal(result.code, 0);
    assert.equal(result.stdout, "✔ 0 errors, 0 warnings in 1 file\n");
  });

  it("text: warnings only exit 0, and 1 with --strict", () => {
    const warningsOnly = `${INVALID}/unused-service.yml`;
    const plain = runCli(["validate", warningsOnly]);
    assert.equal(plain.code, 0);
    assert.match(plain.stdout, /⚠ 0 errors, 1 warning in 1 file\n$/);
    assert.equal(runCli(["validate", warningsOnly, "--strict"]).code, 1);
  });

  it("github: one workflow annotation per diagnostic", () => {
    const result = runCli(["validate", fixture, "--format", "github"]);
    assert.equal(result.code, 1);
    const lines = result.stdout.trimEnd().split("\n");
    assert.deepEqual(lines.slice(0, 2), [
      `::error file=${fixture},line=${error.line},col=${error.column},title=unknown-service::router "r" uses service "postgress", which does not exist (hint: Did you mean "postgres"?)`,
      `::warning file=${fixture},line=${warning.line},col=${warning.column},title=unused-service::service "postgres" is not used by any router or weighted service (hint: Remove it, or reference it.)`,
    ]);
    assert.equal(lines.length, 3);
    assert.match(lines[2]!, /^1 error, 1 warning in 1 file$/);
  });

  it("github: a finding without a position has no file property", () => {
    const result = runCli(["validate", `${INVALID}/no-certificates.yml`, "--format", "github"]);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /^::warning title=no-certificates::1 terminating router serves names/m);
  });

  it("github: commas, colons and percent signs in properties and data are escaped", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-gh-"));
    try {
      const name = "odd,name:100%.yml";
      cpSync(path.join(ROOT, fixture), path.join(dir, name));
      const result = runCli(["validate", name, "--format", "github"], { cwd: dir });
      assert.equal(result.code, 1);
      assert.ok(
        result.stdout.startsWith(
          `::error file=odd%2Cname%3A100%25.yml,line=${error.line},col=${error.column},title=unknown-service::`,
        ),
        result.stdout,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// The command cannot run: exit 2, a message, no stack trace

describe("validate: exit 2 when the command cannot run", () => {
  it("a path that does not exist", () => {
    for (const format of ["text", "json"]) {
      const result = runCli(["validate", "fixtures/no-such-config.yml", "--format", format]);
      assert.equal(result.code, 2);
      assert.equal(result.stdout, "", "nothing on stdout, so a JSON consumer sees no half result");
      assert.match(result.stderr, /fixtures\/no-such-config\.yml" does not exist/);
      assertNoStackTrace(result.stderr);
    }
  });

  it("a directory with no configuration file", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-nofiles-"));
    try {
      writeFileSync(path.join(dir, "README.txt"), "not a configuration\n");
      const result = runCli(["validate", dir]);
      assert.equal(result.code, 2);
      assert.match(result.stderr, /no \.yml, \.yaml, \.toml or \.json file/);
      assertNoStackTrace(result.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a file whose format cannot be told from its name", () => {
    const result = runCli(["validate", "README.md"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /cannot tell the format/);
    assertNoStackTrace(result.stderr);
  });

  it("a bad --format", () => {
    const result = runCli(["validate", "fixtures/example", "--format", "xml"]);
    assert.equal(result.code, 2);
    assert.equal(result.stdout, "");
    assert.match(result.stderr, /--format must be one of text, json, github, got "xml"/);
    assertNoStackTrace(result.stderr);
  });

  it("an unknown flag", () => {
    const result = runCli(["validate", "fixtures/example", "--strcit"]);
    assert.equal(result.code, 2);
    assert.equal(result.stdout, "");
    assert.match(result.stderr, /unknown flag --strcit/);
    assert.match(result.stderr, /--help/);
    assertNoStackTrace(result.stderr);
  });

  it("--help describes the command and exits 0", () => {
    const result = runCli(["validate", "--help"]);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /--strict/);
    assert.match(result.stdout, /--format/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Every code tlsroute can emit has a case here

/** Codes no configuration can trigger from the command line, and why. */
const UNTRIGGERABLE: Record<string, string> = {};

/** Codes whose case lives outside CASES (generated certificates), or that depend on the TLS library. */
const COVERED_ELSEWHERE = [
  // test/runtimes.test.ts: `validate --runtime deno` on fixtures/runtimes/ignored-settings.yml.
  "runtime-ignores-setting",
  // test/serve-acme.test.ts, validate run on Deno itself (the second needs Deno's permission API).
  "runtime-acme-challenge-unsupported",
  "deno-storage-not-allowed",
  "name-not-covered",
  "certificate-expired",
  "certificate-expiring",
  "certificate-not-yet-valid",
  "key-mismatch",
  "invalid-key",
  "invalid-certificate",
  "weak-key",
  "implicit-client-auth",
  "cipher-suite-unavailable",
  "curve-unavailable",
];

/** Every diagnostic code a literal in src/ can emit (config, compile, lints, catalog, rule warnings). */
function emittedCodes(): Set<string> {
  const codes = new Set<string>();
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith(".ts") ? [path.join(dir, e.name)] : [],
    );
  for (const file of walk(path.join(ROOT, "src"))) {
    const source = readFileSync(file, "utf8");
    // diags.error("code", ...), diags.warning(cond ? "a" : "b", ...), problem("code", ...)
    for (const call of source.matchAll(/(?:diags\.(?:error|warning)|\bproblem)\(\s*([^,]+),/g)) {
      for (const literal of call[1]!.matchAll(/"([a-z][a-z0-9]*(?:-[a-z0-9]+)*)"/g)) codes.add(literal[1]!);
    }
    // Rule warnings, which compile.ts passes on as diagnostics with their own code.
    for (const w of source.matchAll(/(?:\bwarn|warnings\.push)\(\{\s*code:\s*"([a-z0-9-]+)"/g))
      codes.add(w[1]!);
    // Problems collected first and reported later declare their codes in a type: `code: "a" | "b";`
    // (acme/plan.ts). Only a declaration ends with ";", so object literals are not read here.
    for (const t of source.matchAll(/\bcode:\s*("[a-z0-9-]+"(?:\s*\|\s*"[a-z0-9-]+")*)\s*;/g)) {
      for (const literal of t[1]!.matchAll(/"([a-z0-9-]+)"/g)) codes.add(literal[1]!);
    }
    // The unused-* family is built from a template.
    if (source.includes("`unused-${")) {
      for (const kind of ["service", "middleware", "servers-transport", "tls-options"])
        codes.add(`unused-${kind}`);
    }
  }
  return codes;
}

describe("validate: code coverage", () => {
  it("every diagnostic code in src/ has a fixture case, or a reason why it cannot be triggered", () => {
    const covered = new Set([
      ...CASES.map((c) => c.code),
      ...COVERED_ELSEWHERE,
      ...Object.keys(UNTRIGGERABLE),
    ]);
    const emitted = emittedCodes();
    assert.ok(emitted.size > 80, `the scan found only ${emitted.size} codes; is the pattern stale?`);
    const missing = [...emitted].filter((c) => !covered.has(c)).sort();
    assert.deepEqual(missing, [], "codes without a case");
    const stale = [...covered].filter((c) => !emitted.has(c)).sort();
    assert.deepEqual(stale, [], "cases for codes that src/ no longer emits");
  });
});
