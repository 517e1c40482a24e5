/**
 * `tlsroute explain` as users run it: the built CLI in a subprocess (run `npm run build` first when
 * running this file on its own). Checks the JSON contract, the exit codes, fact canonicalisation,
 * `--rule` mode, the PostgreSQL steps and the text rendering.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { BIN, type CliResult, ROOT, runCli, runCliJson } from "./helpers/cli.ts";
import { type IssuedCert, makePki } from "./helpers/pki.ts";

interface TraceJson {
  kind: "and" | "or" | "not" | "matcher";
  text: string;
  result: boolean | null;
  reason?: string;
  children?: TraceJson[];
}

interface CandidateJson {
  router: string;
  entryPoints: string[];
  priority: number | null;
  rule: string | null;
  matched: boolean | null;
  chosen: boolean;
  trace: TraceJson | null;
  disabled?: string[];
}

interface ExplainJson {
  matched: boolean;
  router: string | null;
  service: string | null;
  mode: "terminate" | "passthrough" | "tcp" | null;
  tlsOptions: string | null;
  certificate: { source: string; subject: string | null; sans: string[]; notAfter: string | null } | null;
  alpn: string | null;
  reason: string;
  refusal: string | null;
  facts: { sni: string; alpn: string[]; clientIp: string; tls: boolean; entryPoint: string };
  postgres: string[] | null;
  fastPath: boolean;
  candidates: CandidateJson[];
}

interface RuleJson {
  matched: boolean;
  rule: string;
  priority: number;
  trace: TraceJson;
}

const EXAMPLE = path.join(ROOT, "fixtures", "example");
const tempRoot = mkdtempSync(path.join(tmpdir(), "tlsroute-explain-"));
after(() => rmSync(tempRoot, { recursive: true, force: true }));

let configDir: string;
let dbCert: IssuedCert;

/** Rules whose length (their default priority) the tests compare. */
const DB_RULE = "HostSNI(`db.example.com`) || HostSNI(`*.db.example.com`)";
const APPS_RULE = "HostSNI(`*.apps.example.com`) && ALPN(`h2`)";
const STRICT_RULE = "HostSNI(`strict.example.com`)";

/**
 * Entry points: `web` (TLS and plain routers), `pg` (one TLS router for PostgreSQL), `plain` (only a
 * plain catch-all: fast path), `guarded` (only a plain ClientIP router).
 */
function writeConfig(dir: string, cert: IssuedCert): void {
  writeFileSync(
    path.join(dir, "tlsroute.yml"),
    `entryPoints:
  web: { address: "127.0.0.1:8443" }
  pg: { address: "127.0.0.1:6432" }
  plain: { address: "127.0.0.1:9000" }
  guarded: { address: "127.0.0.1:9001" }
tcp:
  routers:
    db:
      entryPoints: [web]
      rule: "${DB_RULE}"
      service: backend
      tls: { options: modern }
    apps:
      entryPoints: [web]
      rule: "${APPS_RULE}"
      service: backend
      tls: { passthrough: true }
    strict:
      entryPoints: [web]
      rule: "${STRICT_RULE}"
      service: backend
      tls: { options: strict }
    broken:
      entryPoints: [web]
      rule: "HostSNI(\`db.example.com\`)"
      service: no-such-service
      tls: {}
    fallback:
      entryPoints: [web]
      rule: "HostSNI(\`*\`)"
      service: other
      tls: {}
    web-plain:
      entryPoints: [web]
      rule: "HostSNI(\`*\`)"
      service: other
    postgres:
      entryPoints: [pg]
      rule: "HostSNI(\`pg.example.com\`)"
      service: backend
      tls: { options: modern }
    raw:
      entryPoints: [plain]
      rule: "HostSNI(\`*\`)"
      service: backend
    internal-only:
      entryPoints: [guarded]
      rule: "ClientIP(\`10.0.0.0/8\`)"
      service: backend
  services:
    backend: { loadBalancer: { servers: [{ address: "127.0.0.1:5432" }] } }
    other: { loadBalancer: { servers: [{ address: "whoami@internal" }] } }
tls:
  certificates:
    - { certFile: ${cert.chainFile}, keyFile: ${cert.keyFile} }
  options:
    modern: { minVersion: VersionTLS13, alpnProtocols: [h2, http/1.1] }
    strict: { sniStrict: true }
`,
  );
}

before(() => {
  if (!existsSync(path.join(ROOT, "dist", "cli.mjs"))) {
    throw new Error(`dist/cli.mjs is missing: run "npm run build" before this test (bin: ${BIN})`);
  }
  const pki = makePki(path.join(tempRoot, "pki"));
  const ca = pki.ca("explain test CA");
  dbCert = pki.leaf({ ca, cn: "db.example.com", dns: ["db.example.com", "*.db.example.com"] });
  // A directory of its own: a configuration directory loads every .yml/.json/.toml file in it.
  configDir = mkdtempSync(path.join(tempRoot, "config-"));
  writeConfig(configDir, dbCert);
});

function explainJson(args: string[]): CliResult & { json: ExplainJson } {
  return runCliJson<ExplainJson>(["explain", "-c", configDir, "--format", "json", ...args]);
}

function candidate(json: ExplainJson, router: string): CandidateJson {
  const c = json.candidates.find((x) => x.router === router);
  if (!c) assert.fail(`no candidate "${router}" in ${json.candidates.map((x) => x.router).join(", ")}`);
  return c;
}

function assertNoStack(result: CliResult): void {
  assert.doesNotMatch(result.stderr, /\n\s+at .+:\d+:\d+/, "a stack trace was printed");
  assert.doesNotMatch(result.stderr, /internal error/);
}

describe("explain --format json", () => {
  it("gives the decision with every contract field", () => {
    const { code, json, stderr } = explainJson([
      "--entrypoint",
      "web",
      "--sni",
      "db.example.com",
      "--alpn",
      "h2",
    ]);
    assert.equal(code, 0, stderr);
    assert.equal(json.matched, true);
    assert.equal(json.router, "db");
    assert.equal(json.service, "backend");
    assert.equal(json.mode, "terminate");
    assert.equal(json.tlsOptions, "modern");
    assert.equal(json.alpn, "h2");
    assert.equal(json.refusal, null);
    assert.match(json.reason, /router "db" matches; TLS is terminated with options "modern"/);
    assert.ok(json.certificate);
    assert.equal(json.certificate.source, "store");
    assert.match(json.certificate.subject ?? "", /CN=db\.example\.com/);
    assert.deepEqual([...json.certificate.sans].sort(), ["*.db.example.com", "db.example.com"]);
    assert.ok(json.certificate.notAfter);
    const days = (Date.parse(json.certificate.notAfter) - Date.now()) / 86_400_000;
    assert.ok(days > 360 && days < 366, `notAfter ${json.certificate.notAfter}`);
    for (const c of json.candidates) {
      for (const key of ["router", "entryPoints", "priority", "rule", "matched", "trace"]) {
        assert.ok(key in c, `candidate ${c.router} lacks ${key}`);
      }
    }
  });

  it("lists the candidates in evaluation order, then the disabled routers", () => {
    const { json } = explainJson(["--entrypoint", "web", "--sni", "db.example.com"]);
    const enabled = json.candidates.filter((c) => !c.disabled);
    // Rule lengths, then the catch-all at -1. The plain router is not a TLS candidate.
    assert.deepEqual(
      enabled.map((c) => [c.router, c.priority, c.rule]),
      [
        ["db", DB_RULE.length, DB_RULE],
        ["apps", APPS_RULE.length, APPS_RULE],
        ["strict", STRICT_RULE.length, STRICT_RULE],
        ["fallback", -1, "HostSNI(`*`)"],
      ],
    );
    assert.deepEqual(
      enabled.map((c) => c.chosen),
      [true, false, false, false],
    );
    assert.deepEqual(candidate(json, "db").entryPoints, ["web"]);
    const broken = candidate(json, "broken");
    assert.equal(broken.matched, null);
    assert.equal(broken.trace, null);
    assert.match(broken.disabled?.join(" ") ?? "", /no-such-service/);
    assert.equal(json.candidates.at(-1)?.router, "broken");
  });

  it("traces every node: true and false leaves, and null for short-circuited ones", () => {
    const { json } = explainJson(["--entrypoint", "web", "--sni", "db.example.com", "--alpn", "http/1.1"]);
    const db = candidate(json, "db").trace;
    assert.equal(db?.kind, "or");
    assert.equal(db?.result, true);
    assert.equal(db?.children?.[0]?.text, "HostSNI(`db.example.com`)");
    assert.equal(db?.children?.[0]?.result, true);
    assert.match(db?.children?.[0]?.reason ?? "", /equals/);
    // || stopped at the first true operand.
    assert.equal(db?.children?.[1]?.text, "HostSNI(`*.db.example.com`)");
    assert.equal(db?.children?.[1]?.result, null);

    const apps = candidate(json, "apps");
    assert.equal(apps.matched, false);
    assert.equal(apps.trace?.kind, "and");
    assert.equal(apps.trace?.result, false);
    assert.equal(apps.trace?.children?.[0]?.result, false);
    assert.match(apps.trace?.children?.[0]?.reason ?? "", /not under "apps\.example\.com"/);
    // && stopped at the first false operand.
    assert.equal(apps.trace?.children?.[1]?.text, "ALPN(`h2`)");
    assert.equal(apps.trace?.children?.[1]?.result, null);
  });

  it("shows a later match as matched but not chosen", () => {
    const { json } = explainJson(["--entrypoint", "web", "--sni", "x.apps.example.com", "--alpn", "h2"]);
    assert.equal(json.router, "apps");
    assert.equal(json.mode, "passthrough");
    assert.equal(json.tlsOptions, null);
    assert.equal(json.certificate, null);
    const fallback = candidate(json, "fallback");
    assert.equal(fallback.matched, true);
    assert.equal(fallback.chosen, false);
  });

  it("uses the default TLS options and the generated certificate when nothing else applies", () => {
    const { code, json } = explainJson(["--entrypoint", "web", "--sni", "unknown.example.org"]);
    assert.equal(code, 0);
    assert.equal(json.router, "fallback");
    assert.equal(json.tlsOptions, "default");
    assert.equal(json.certificate?.source, "generated");
    assert.equal(json.certificate?.subject, null);
    assert.deepEqual(json.certificate?.sans, []);
  });

  it("matches plain TCP routers only with --no-tls", () => {
    const { code, json } = explainJson(["--entrypoint", "web", "--no-tls", "--sni", "db.example.com"]);
    assert.equal(code, 0);
    assert.equal(json.router, "web-plain");
    assert.equal(json.mode, "tcp");
    assert.equal(json.facts.tls, false);
    assert.deepEqual(
      json.candidates.filter((c) => !c.disabled).map((c) => c.router),
      ["web-plain"],
    );
  });

  it("takes every -c and --alpn given more than once, not just the last", () => {
    const dir = mkdtempSync(path.join(tempRoot, "repeat-"));
    writeFileSync(path.join(dir, "entrypoints.yml"), 'entryPoints:\n  web:\n    address: "127.0.0.1:9443"\n');
    writeFileSync(
      path.join(dir, "routers.yml"),
      [
        "tcp:",
        "  routers:",
        "    h2-only:",
        '      rule: "ALPN(`h2`) && ALPN(`http/1.1`)"',
        "      service: w",
        "      tls: {}",
        "  services:",
        "    w:",
        "      loadBalancer:",
        "        servers:",
        "          - address: whoami@internal",
        "",
      ].join("\n"),
    );
    const result = runCliJson<ExplainJson>(
      [
        "explain",
        "-c",
        "entrypoints.yml",
        "--config",
        "routers.yml",
        "--alpn",
        "h2",
        "--alpn=http/1.1",
        "--format",
        "json",
      ],
      { cwd: dir },
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.json.router, "h2-only");
    assert.deepEqual(result.json.facts.alpn, ["h2", "http/1.1"]);
  });

  it("canonicalises the SNI like serve does (trimmed, lowercased)", () => {
    const { code, json } = explainJson(["--entrypoint", "web", "--sni", " DB.Example.COM "]);
    assert.equal(code, 0);
    assert.equal(json.router, "db");
    assert.equal(json.facts.sni, "db.example.com");
    assert.equal(json.certificate?.source, "store");
  });

  it("exits 1 when nothing matches, with matched false and a reason", () => {
    const result = explainJson(["--entrypoint", "pg", "--sni", "nothing.example.com"]);
    assert.equal(result.code, 1);
    assert.equal(result.json.matched, false);
    assert.equal(result.json.router, null);
    assert.equal(result.json.mode, null);
    assert.equal(result.json.refusal, "no_route");
    assert.match(result.json.reason, /no TLS router on entry point "pg" matches SNI "nothing\.example\.com"/);
    assert.equal(candidate(result.json, "postgres").matched, false);
  });

  it("exits 1 on a refusal, naming the router that matched", () => {
    const strict = explainJson(["--entrypoint", "web", "--sni", "strict.example.com"]);
    assert.equal(strict.code, 1);
    assert.equal(strict.json.matched, false);
    assert.equal(strict.json.router, "strict");
    assert.equal(strict.json.refusal, "sni_strict");
    const alpn = explainJson(["--entrypoint", "web", "--sni", "db.example.com", "--alpn", "imap"]);
    assert.equal(alpn.code, 1);
    assert.equal(alpn.json.refusal, "alpn_mismatch");
  });

  it("works on the shipped example", () => {
    const run = (args: string[]) =>
      runCliJson<ExplainJson>(["explain", "-c", EXAMPLE, "--format", "json", ...args]).json;
    const beta = run(["--sni", "beta.localhost", "--alpn", "h2"]);
    assert.equal(beta.router, "beta");
    assert.equal(beta.tlsOptions, "modern");
    assert.equal(run(["--sni", "x.beta.localhost"]).router, "beta");
    assert.equal(run(["--sni", "alpha.localhost"]).tlsOptions, "default");
    // ALPN(`postgresql`) has priority 100: it outranks every HostSNI router.
    assert.equal(run(["--sni", "alpha.localhost", "--alpn", "postgresql"]).router, "postgres-clients");
    assert.equal(run(["--sni", "who.knows"]).router, "fallback");
  });
});

describe("explain exit code 2", () => {
  const usage = (args: string[], pattern: RegExp) => {
    const result = runCli(["explain", "--format", "json", ...args]);
    assert.equal(result.code, 2, `${args.join(" ")}\n${result.stdout}${result.stderr}`);
    assert.equal(result.stdout, "", "nothing on stdout when the command cannot run");
    assert.match(result.stderr, pattern);
    assertNoStack(result);
  };

  it("for a --rule that is not a valid rule, with the column", () => {
    usage(["--rule", "HostSNI(`a.io`) &&"], /column 19/);
    usage(["--rule", "HostSNI(`a.io`, `b.io`)"], /column 17/);
    usage(["--rule", "Host(`a.io`)"], /invalid rule/);
  });

  it("for an entry point that does not exist", () => {
    usage(["-c", configDir, "--entrypoint", "nope", "--sni", "a.io"], /entry point "nope" does not exist/);
  });

  it("for several entry points without --entrypoint", () => {
    usage(["-c", configDir, "--sni", "a.io"], /4 entry points; say which one with --entrypoint/);
  });

  it("for a --client-ip that is not an IP address", () => {
    usage(["-c", EXAMPLE, "--client-ip", "10.0.0.300"], /--client-ip "10\.0\.0\.300" is not an IP address/);
    usage(["-c", EXAMPLE, "--client-ip", "localhost"], /not an IP address/);
  });

  it("for a configuration path that does not exist", () => {
    usage(["-c", path.join(tempRoot, "missing")], /does not exist/);
  });
});

describe("explain --rule", () => {
  it("exits 0 when the rule matches", () => {
    const result = runCli([
      "explain",
      "--rule",
      "HostSNI(`a.io`) && ALPN(`h2`)",
      "--sni",
      "A.io",
      "--alpn",
      "h2",
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /the rule matches/);
  });

  it("exits 1 when it does not", () => {
    const result = runCli(["explain", "--rule", "HostSNI(`a.io`)", "--sni", "b.io"]);
    assert.equal(result.code, 1);
    assert.match(result.stdout, /does not match/);
  });

  it("gives the trace as JSON", () => {
    const { code, json } = runCliJson<RuleJson>([
      "explain",
      "--rule",
      "ClientIP(`10.0.0.0/8`) || HostSNI(`a.io`)",
      "--client-ip",
      "10.1.2.3",
      "--format",
      "json",
    ]);
    assert.equal(code, 0);
    assert.equal(json.matched, true);
    assert.equal(json.priority, "ClientIP(`10.0.0.0/8`) || HostSNI(`a.io`)".length);
    assert.equal(json.trace.kind, "or");
    assert.equal(json.trace.children?.[0]?.result, true);
    assert.equal(json.trace.children?.[1]?.result, null);
  });

  it("treats --no-tls as a connection without SNI or ALPN", () => {
    const { code, json } = runCliJson<RuleJson>([
      "explain",
      "--rule",
      "HostSNI(`a.io`)",
      "--sni",
      "a.io",
      "--no-tls",
      "--format",
      "json",
    ]);
    assert.equal(code, 1);
    assert.equal(json.matched, false);
    assert.match(json.trace.reason ?? "", /no SNI/);
  });
});

describe("explain --postgres", () => {
  it("answers S on an entry point with TLS routers, and accepts ALPN postgresql", () => {
    // The `modern` options list only h2 and http/1.1: postgresql is accepted because of the SSLRequest.
    const { code, json } = explainJson([
      "--entrypoint",
      "pg",
      "--postgres",
      "--sni",
      "pg.example.com",
      "--alpn",
      "postgresql",
    ]);
    assert.equal(code, 0, JSON.stringify(json));
    assert.equal(json.router, "postgres");
    assert.equal(json.alpn, "postgresql");
    const steps = json.postgres ?? [];
    assert.match(steps[0] ?? "", /SSLRequest/);
    assert.match(steps[1] ?? "", /answers "S"/);
    assert.ok(steps.some((s) => /StartupMessage in plaintext/.test(s)));
    // Without the SSLRequest the same client is refused: the options do not list postgresql.
    const direct = explainJson(["--entrypoint", "pg", "--sni", "pg.example.com", "--alpn", "postgresql"]);
    assert.equal(direct.code, 1);
    assert.equal(direct.json.refusal, "alpn_mismatch");
  });

  it("answers N when the entry point has only plain routers and none takes the connection unread", () => {
    const { code, json } = explainJson(["--entrypoint", "guarded", "--postgres", "--client-ip", "192.0.2.1"]);
    assert.equal(code, 1);
    const steps = json.postgres ?? [];
    assert.match(steps[1] ?? "", /answers "N"/);
    assert.equal(json.facts.tls, false);
    assert.equal(json.refusal, "no_route");
  });

  it("hands the SSLRequest to the backend on a fast-path entry point", () => {
    const { code, json } = explainJson(["--entrypoint", "plain", "--postgres"]);
    assert.equal(code, 0);
    assert.equal(json.router, "raw");
    assert.equal(json.mode, "tcp");
    assert.equal(json.fastPath, true);
    const steps = json.postgres ?? [];
    assert.match(steps[1] ?? "", /fast path/);
    assert.ok(!steps.some((s) => /tlsroute answers/.test(s)), steps.join("\n"));
    assert.match(steps.at(-1) ?? "", /receives the SSLRequest unchanged/);
    // The ClientIP router admits this client before a byte is read too.
    const guarded = explainJson(["--entrypoint", "guarded", "--postgres", "--client-ip", "10.0.0.9"]);
    assert.equal(guarded.json.router, "internal-only");
    assert.equal(guarded.json.fastPath, true);
  });
});

describe("explain text output", () => {
  it("shows the routers, the chosen one and the decision line", () => {
    const result = runCli(["explain", "-c", configDir, "--entrypoint", "web", "--sni", "db.example.com"]);
    assert.equal(result.code, 0, result.stderr);
    const out = result.stdout;
    assert.match(out, /^Connection\s+entry point web · TLS · SNI db\.example\.com/m);
    assert.match(out, /Routers, in evaluation order/);
    assert.match(out, new RegExp(`✔ db\\s+priority ${DB_RULE.length}\n`));
    assert.match(
      out,
      new RegExp(`✖ apps\\s+priority ${APPS_RULE.length}\\s+\\(not consulted: an earlier router matched\\)`),
    );
    assert.match(out, /! broken\s+disabled:.*no-such-service/);
    assert.match(out, /^Decision$/m);
    assert.match(out, /✔ router db → service backend \(terminate\)/);
    assert.match(out, /certificate\s+store: .*db\.example\.com/);
    assert.match(out, /the configuration has 1 error/);
    // NO_COLOR is set by the helper: no escape codes.
    assert.ok(!out.includes("\u001b["), "escape codes in the output");
  });

  it("shows the refusal reason when nothing matches", () => {
    const result = runCli(["explain", "-c", configDir, "--entrypoint", "pg", "--sni", "x.io"]);
    assert.equal(result.code, 1);
    assert.match(result.stdout, /✖ no_route/);
    assert.match(result.stdout, /no TLS router on entry point "pg" matches SNI "x\.io"/);
  });

  it("says when the fast path applies", () => {
    const result = runCli(["explain", "-c", configDir, "--entrypoint", "plain", "--sni", "db.example.com"]);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /^Fast path\s+entry point plain has only plain TCP routers/m);
    assert.match(result.stdout, /✔ router raw → service backend \(tcp\)/);
  });

  it("lists the PostgreSQL steps in order", () => {
    const result = runCli([
      "explain",
      "-c",
      configDir,
      "--entrypoint",
      "pg",
      "--postgres",
      "--sni",
      "pg.example.com",
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /PostgreSQL\n {2}1\. client sends an SSLRequest.*\n {2}2\. tlsroute answers "S"/,
    );
  });
});
