/**
 * Routing: compile (Model → route tables) and decide (facts → decision), through the real loader.
 * Configurations are small YAML files written to a temp directory; certificates are made with openssl.
 * The property test at the end pins the guarantee behind the SNI index: the indexed lookup gives the
 * same route as a linear scan, whatever the table.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import type { SourcePos } from "../src/config/located.ts";
import type { Router } from "../src/config/model.ts";
import { buildTable, compile, defaultEntryPoints, priorityOf } from "../src/routing/compile.ts";
import { type ConnectionFacts, type Decision, decide, findRoute } from "../src/routing/decide.ts";
import { compareRoutes, type Route, type RouteMode, type RouteTable } from "../src/routing/table.ts";
import { compileRule, defaultPriority, type RuleSyntax } from "../src/rules/index.ts";
import { openWorkspace, type Workspace } from "../src/workspace.ts";
import { type IssuedCert, makePki } from "./helpers/pki.ts";

const tempRoot = mkdtempSync(path.join(tmpdir(), "tlsroute-routing-"));
after(() => rmSync(tempRoot, { recursive: true, force: true }));

let configCounter = 0;

/** Writes `files` (name → text) into a fresh directory and opens it as a workspace. */
function workspaceOf(files: Record<string, string> | string): Workspace {
  configCounter += 1;
  const dir = path.join(tempRoot, `config-${configCounter}`);
  mkdirSync(dir, { recursive: true });
  const entries = typeof files === "string" ? { "tlsroute.yml": files } : files;
  for (const [name, text] of Object.entries(entries)) writeFileSync(path.join(dir, name), text);
  return openWorkspace([dir]);
}

function table(ws: Workspace, entryPoint: string): RouteTable {
  const t = ws.context.tables.get(entryPoint);
  if (!t) assert.fail(`no route table for entry point "${entryPoint}"`);
  return t;
}

function names(routes: readonly Route[]): string[] {
  return routes.map((r) => r.name);
}

function facts(partial: Partial<ConnectionFacts> = {}): ConnectionFacts {
  return {
    entryPoint: "web",
    sni: "",
    alpn: [],
    clientIp: "10.1.2.3",
    localIp: "127.0.0.1",
    tls: true,
    postgres: false,
    ...partial,
  };
}

function decideIn(ws: Workspace, partial: Partial<ConnectionFacts> = {}): Decision {
  return decide(ws.context, facts(partial));
}

/** A one-entry-point configuration whose routers all go to one whoami service. */
function config(routers: string, extra = ""): string {
  return `entryPoints:
  web: { address: "127.0.0.1:8443" }
tcp:
  routers:
${routers}
  services:
    svc: { loadBalancer: { servers: [{ address: "whoami@internal" }] } }
    other: { loadBalancer: { servers: [{ address: "whoami@internal" }] } }
${extra}`;
}

describe("route order", () => {
  it("puts an explicit priority before a longer rule", () => {
    const ws = workspaceOf(
      config(`    long: { rule: "HostSNI(\`a-very-long-name.example.com\`)", service: svc, tls: {} }
    pinned: { rule: "HostSNI(\`a.example.com\`)", service: svc, priority: 1000, tls: {} }`),
    );
    const t = table(ws, "web");
    assert.deepEqual(names(t.tls), ["pinned", "long"]);
    assert.equal(t.tls[0]?.priority, 1000);
    assert.equal(t.tls[0]?.explicitPriority, true);
    assert.equal(t.tls[1]?.explicitPriority, false);
  });

  it("orders by rule length in bytes when no priority is set, and priority 0 means the same", () => {
    const ws = workspaceOf(
      config(`    short: { rule: "HostSNI(\`b.example.com\`)", service: svc, tls: {} }
    longer: { rule: "HostSNI(\`bb.example.com\`)", service: svc, priority: 0, tls: {} }
    longest: { rule: "HostSNI(\`b.example.com\`) && ALPN(\`h2\`)", service: svc, tls: {} }`),
    );
    const t = table(ws, "web");
    assert.deepEqual(names(t.tls), ["longest", "longer", "short"]);
    assert.deepEqual(
      t.tls.map((r) => r.priority),
      [
        "HostSNI(`b.example.com`) && ALPN(`h2`)".length,
        "HostSNI(`bb.example.com`)".length,
        "HostSNI(`b.example.com`)".length,
      ],
    );
    assert.equal(t.tls.find((r) => r.name === "longer")?.explicitPriority, false);
  });

  it("gives a bare HostSNI(`*`) priority -1, so it is tried after every positive priority", () => {
    const ws = workspaceOf(
      config(`    all: { rule: "HostSNI(\`*\`)", service: svc, tls: {} }
    spaced: { rule: " ( HostSNI( \\"*\\" ) ) ", service: svc, tls: {} }
    one: { rule: "HostSNI(\`x.io\`)", service: svc, priority: 1, tls: {} }
    below: { rule: "HostSNI(\`y.io\`)", service: svc, priority: -2, tls: {} }`),
    );
    const t = table(ws, "web");
    assert.deepEqual(
      t.tls.map((r) => [r.name, r.priority]),
      [
        ["one", 1],
        ["all", -1],
        ["spaced", -1],
        ["below", -2],
      ],
    );
    // The catch-all really is the fallback: an SNI that only it covers goes there.
    assert.equal(decideIn(ws, { sni: "x.io" }).router, "one");
    assert.equal(decideIn(ws, { sni: "y.io" }).router, "all");
  });

  it("orders equal priorities by router name, whatever the declaration order or file split", () => {
    // Three rules of equal length: two exact names and a wildcard of the same length covering both.
    const routers = {
      zeta: "HostSNI(`z.example.org`)",
      alpha: "HostSNI(`*.example.org`)",
      mid: "HostSNI(`m.example.org`)",
    };
    const lengths = new Set(Object.values(routers).map((r) => r.length));
    assert.equal(lengths.size, 1, "the test needs rules of equal length");
    const yaml = (order: string[]) =>
      config(
        order
          .map((n) => `    ${n}: { rule: "${routers[n as keyof typeof routers]}", service: svc, tls: {} }`)
          .join("\n"),
      );
    const a = workspaceOf(yaml(["zeta", "alpha", "mid"]));
    const b = workspaceOf(yaml(["mid", "zeta", "alpha"]));
    // Split over two files: the merge order must not matter either.
    const c = workspaceOf({
      "a.yml": config(`    zeta: { rule: "${routers.zeta}", service: svc, tls: {} }`),
      "b.yml": `tcp:\n  routers:\n    mid: { rule: "${routers.mid}", service: svc, tls: {} }\n    alpha: { rule: "${routers.alpha}", service: svc, tls: {} }\n`,
    });
    for (const ws of [a, b, c]) {
      assert.deepEqual(names(table(ws, "web").tls), ["alpha", "mid", "zeta"]);
      // Compiling the same model again gives the same order (no hidden iteration-order dependence).
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(names(compile(ws.model).tables.get("web")?.tls ?? []), ["alpha", "mid", "zeta"]);
      }
      // alpha's wildcard covers z.example.org and comes first by name: it wins, every time.
      assert.equal(decideIn(ws, { sni: "z.example.org" }).router, "alpha");
    }
  });

  it("compareRoutes: priority descending, then name ascending", () => {
    const list = [
      { name: "b", priority: 5 },
      { name: "a", priority: 5 },
      { name: "c", priority: 7 },
      { name: "d", priority: -1 },
    ];
    assert.deepEqual(
      [...list].sort(compareRoutes).map((r) => r.name),
      ["c", "a", "b", "d"],
    );
  });
});

describe("entry points", () => {
  const services = `  services:
    svc: { loadBalancer: { servers: [{ address: "whoami@internal" }] } }`;

  it("puts a router without entryPoints on every entry point", () => {
    const ws = workspaceOf(`entryPoints:
  a: { address: ":1001" }
  b: { address: ":1002" }
tcp:
  routers:
    everywhere: { rule: "HostSNI(\`e.io\`)", service: svc, tls: {} }
    only-b: { rule: "HostSNI(\`b.io\`)", entryPoints: [b], service: svc, tls: {} }
    empty-list: { rule: "HostSNI(\`x.io\`)", entryPoints: [], service: svc, tls: {} }
${services}
`);
    assert.deepEqual(defaultEntryPoints(ws.model), ["a", "b"]);
    assert.deepEqual(names(table(ws, "a").tls), ["empty-list", "everywhere"]);
    assert.deepEqual(names(table(ws, "b").tls), ["empty-list", "everywhere", "only-b"]);
    assert.deepEqual(ws.compiled.routers.get("everywhere")?.entryPoints, ["a", "b"]);
  });

  it("puts it only on the asDefault entry points when some are marked", () => {
    const ws = workspaceOf(`entryPoints:
  a: { address: ":1001" }
  b: { address: ":1002", asDefault: true }
  c: { address: ":1003", asDefault: true }
tcp:
  routers:
    dflt: { rule: "HostSNI(\`d.io\`)", service: svc, tls: {} }
    explicit: { rule: "HostSNI(\`x.io\`)", entryPoints: [a], service: svc, tls: {} }
${services}
`);
    assert.deepEqual(defaultEntryPoints(ws.model), ["b", "c"]);
    assert.deepEqual(names(table(ws, "a").tls), ["explicit"]);
    assert.deepEqual(names(table(ws, "b").tls), ["dflt"]);
    assert.deepEqual(names(table(ws, "c").tls), ["dflt"]);
    assert.equal(decideIn(ws, { entryPoint: "a", sni: "d.io" }).matched, false);
    assert.equal(decideIn(ws, { entryPoint: "c", sni: "d.io" }).router, "dflt");
  });

  it("keeps a router on its valid entry points when one is unknown, and reports the unknown one", () => {
    const ws = workspaceOf(`entryPoints:
  a: { address: ":1001" }
  b: { address: ":1002" }
tcp:
  routers:
    typo: { rule: "HostSNI(\`t.io\`)", entryPoints: [a, bb], service: svc, tls: {} }
    lost: { rule: "HostSNI(\`l.io\`)", entryPoints: [nope], service: svc, tls: {} }
${services}
`);
    assert.deepEqual(names(table(ws, "a").tls), ["typo"]);
    assert.deepEqual(names(table(ws, "b").tls), []);
    const unknown = ws.diagnostics.filter((d) => d.code === "unknown-entrypoint");
    assert.equal(unknown.length, 2);
    assert.match(unknown[0]?.message ?? "", /"bb"/);
    assert.equal(unknown[0]?.hint, 'Did you mean "b"?');
    // With no valid entry point at all the router is disabled.
    assert.equal(ws.compiled.routers.get("lost")?.route, null);
    assert.ok((ws.compiled.routers.get("lost")?.problems.length ?? 0) > 0);
    assert.equal(decideIn(ws, { entryPoint: "a", sni: "t.io" }).router, "typo");
  });

  it("refuses a connection on an entry point that does not exist", () => {
    const ws = workspaceOf(config(`    r: { rule: "HostSNI(\`*\`)", service: svc, tls: {} }`));
    const d = decideIn(ws, { entryPoint: "nowhere" });
    assert.equal(d.matched, false);
    assert.equal(d.refusal, "no_route");
    assert.match(d.reason, /nowhere/);
  });
});

describe("TLS and plain TCP route lists", () => {
  const yaml = `entryPoints:
  mixed: { address: ":1001" }
  plain: { address: ":1002" }
  tlsonly: { address: ":1003" }
  empty: { address: ":1004" }
tcp:
  routers:
    term: { rule: "HostSNI(\`t.io\`)", entryPoints: [mixed, tlsonly], service: svc, tls: {} }
    pass: { rule: "HostSNI(\`p.io\`)", entryPoints: [mixed, tlsonly], service: svc, tls: { passthrough: true, options: ignored } }
    raw: { rule: "HostSNI(\`*\`)", entryPoints: [mixed, plain], service: svc }
    byip: { rule: "ClientIP(\`10.0.0.0/8\`)", entryPoints: [plain], service: other }
  services:
    svc: { loadBalancer: { servers: [{ address: "whoami@internal" }] } }
    other: { loadBalancer: { servers: [{ address: "whoami@internal" }] } }
`;
  let ws: Workspace;
  before(() => {
    ws = workspaceOf(yaml);
  });

  it("splits routers with tls (terminating and passthrough) from plain TCP routers", () => {
    const mixed = table(ws, "mixed");
    assert.deepEqual(names(mixed.tls), ["pass", "term"]);
    assert.deepEqual(names(mixed.tcp), ["raw"]);
    assert.deepEqual(
      mixed.tls.map((r) => r.rank),
      [0, 1],
    );
  });

  it("uses the fast path only when an entry point has plain TCP routers and no TLS router", () => {
    assert.equal(table(ws, "mixed").fastPath, false);
    assert.equal(table(ws, "plain").fastPath, true);
    assert.equal(table(ws, "tlsonly").fastPath, false);
    assert.equal(table(ws, "empty").fastPath, false);
  });

  it("matches plain TCP connections against the TCP list only, with no SNI or ALPN", () => {
    // tls: false → the TLS router for t.io is not consulted even with that SNI given.
    const d = decideIn(ws, { entryPoint: "mixed", tls: false, sni: "t.io", alpn: ["h2"] });
    assert.equal(d.router, "raw");
    assert.equal(d.mode, "tcp");
    assert.equal(d.tlsOptions, null);
    assert.equal(d.certificate, null);
    // ClientIP rules work on plain TCP (priority: length of ClientIP(`10.0.0.0/8`) > -1).
    assert.equal(decideIn(ws, { entryPoint: "plain", tls: false, clientIp: "10.9.9.9" }).router, "byip");
    assert.equal(decideIn(ws, { entryPoint: "plain", tls: false, clientIp: "192.0.2.1" }).router, "raw");
  });

  it("never routes a TLS client to a plain TCP router when the entry point has TLS routers", () => {
    const d = decideIn(ws, { entryPoint: "mixed", sni: "other.io" });
    assert.equal(d.matched, false);
    assert.equal(d.refusal, "no_route");
    assert.match(d.reason, /no TLS router on entry point "mixed" matches SNI "other\.io"/);
  });

  it("routes any client on a fast-path entry point before reading a byte, TLS or not", () => {
    // serve hands the socket over unread, so it cannot know the client speaks TLS: the plain router
    // takes it, matched with no SNI and no ALPN, and the TLS bytes go to the backend as they are.
    const d = decideIn(ws, { entryPoint: "plain", sni: "t.io", alpn: ["h2"], clientIp: "10.2.2.2" });
    assert.equal(d.router, "byip");
    assert.equal(d.mode, "tcp");
    assert.equal(d.certificate, null);
    assert.match(d.reason, /fast path/);
    assert.equal(decideIn(ws, { entryPoint: "plain", sni: "t.io", clientIp: "192.0.2.1" }).router, "raw");
  });

  it("reads the first bytes when no plain router takes the connection on the fast path", () => {
    const only = workspaceOf(config(`    internal: { rule: "ClientIP(\`10.0.0.0/8\`)", service: svc }`));
    assert.equal(table(only, "web").fastPath, true);
    assert.equal(decideIn(only, { sni: "t.io", clientIp: "10.0.0.1" }).router, "internal");
    // Outside the range: no fast-path match; as TLS no router exists either.
    const d = decideIn(only, { sni: "t.io", clientIp: "192.0.2.1" });
    assert.equal(d.matched, false);
    assert.equal(d.refusal, "no_route");
    assert.match(d.reason, /no TLS router/);
  });

  it("reports the mode and the TLS options name of the chosen route", () => {
    const term = decideIn(ws, { entryPoint: "mixed", sni: "t.io" });
    assert.equal(term.mode, "terminate");
    assert.equal(term.tlsOptions, "default");
    assert.equal(term.service, "svc");
    const pass = decideIn(ws, { entryPoint: "mixed", sni: "p.io" });
    assert.equal(pass.mode, "passthrough");
    // Passthrough ignores `options` (even one that does not exist): the backend does the handshake.
    assert.equal(pass.tlsOptions, null);
    assert.equal(pass.certificate, null);
    assert.equal(pass.alpn, null);
    assert.equal(pass.refusal, null);
    assert.match(pass.reason, /still encrypted/);
  });
});

describe("certificates", () => {
  let dir: string;
  let exact: IssuedCert;
  let wildcard: IssuedCert;
  let byIp: IssuedCert;
  let fallback: IssuedCert;

  before(() => {
    dir = path.join(tempRoot, "pki");
    const pki = makePki(dir);
    const ca = pki.ca("routing test CA");
    exact = pki.leaf({ ca, cn: "db.example.com", dns: ["db.example.com"] });
    wildcard = pki.leaf({ ca, cn: "*.apps.example.com", dns: ["*.apps.example.com"] });
    byIp = pki.leaf({ ca, cn: "loopback", ips: ["127.0.0.1"] });
    fallback = pki.selfSigned({ cn: "fallback.invalid", dns: ["fallback.invalid"] });
  });

  const routers = `    strict: { rule: "HostSNI(\`strict.example.com\`) || HostSNI(\`db.example.com\`) && ClientIP(\`192.0.2.0/24\`)", service: svc, tls: { options: strict } }
    all: { rule: "HostSNI(\`*\`)", service: svc, tls: {} }`;

  function withCerts(defaultCert: boolean): Workspace {
    const store = defaultCert
      ? `  stores:
    default:
      defaultCertificate: { certFile: ${fallback.certFile}, keyFile: ${fallback.keyFile} }`
      : "";
    return workspaceOf(
      config(
        routers,
        `tls:
  certificates:
    - { certFile: ${exact.chainFile}, keyFile: ${exact.keyFile} }
    - { certFile: ${wildcard.chainFile}, keyFile: ${wildcard.keyFile} }
    - { certFile: ${byIp.chainFile}, keyFile: ${byIp.keyFile} }
  options:
    strict: { sniStrict: true }
${store}
`,
      ),
    );
  }

  it("serves the store certificate that names the SNI exactly", () => {
    const d = decideIn(withCerts(true), { sni: "db.example.com" });
    assert.equal(d.router, "all");
    assert.equal(d.certificate?.source, "store");
    assert.equal(d.certificate?.match, "exact");
    assert.equal(d.certificate?.certificate?.source, exact.chainFile);
    assert.deepEqual(d.certificate?.certificate?.sans, ["db.example.com"]);
    assert.match(d.certificate?.certificate?.subject ?? "", /db\.example\.com/);
    assert.ok(d.certificate?.certificate?.notAfter instanceof Date);
  });

  it("serves a one-label wildcard certificate, and not for two labels", () => {
    const ws = withCerts(true);
    const one = decideIn(ws, { sni: "shop.apps.example.com" });
    assert.equal(one.certificate?.source, "store");
    assert.equal(one.certificate?.match, "wildcard");
    assert.equal(one.certificate?.certificate?.source, wildcard.chainFile);
    const two = decideIn(ws, { sni: "a.shop.apps.example.com" });
    assert.equal(two.certificate?.source, "default");
  });

  it("names the certificate by the local IP when the client sends no SNI", () => {
    const d = decideIn(withCerts(true), { sni: "", localIp: "127.0.0.1" });
    assert.equal(d.certificate?.source, "store");
    assert.equal(d.certificate?.certificate?.source, byIp.chainFile);
    const other = decideIn(withCerts(true), { sni: "", localIp: "127.0.0.2" });
    assert.equal(other.certificate?.source, "default");
    assert.match(other.certificate?.why ?? "", /no SNI/);
  });

  it("falls back to the default certificate, else to the generated one", () => {
    const withDefault = decideIn(withCerts(true), { sni: "unknown.example.net" });
    assert.equal(withDefault.certificate?.source, "default");
    assert.equal(withDefault.certificate?.certificate?.source, fallback.certFile);
    assert.equal(withDefault.refusal, null);
    const generated = decideIn(withCerts(false), { sni: "unknown.example.net" });
    assert.equal(generated.certificate?.source, "generated");
    assert.equal(generated.certificate?.certificate, null);
    assert.equal(generated.refusal, null);
    assert.equal(generated.matched, true);
  });

  it("refuses under sniStrict when no store certificate covers the name", () => {
    const ws = withCerts(true);
    const refused = decideIn(ws, { sni: "strict.example.com" });
    assert.equal(refused.router, "strict");
    assert.equal(refused.tlsOptions, "strict");
    assert.equal(refused.matched, true);
    assert.equal(refused.refusal, "sni_strict");
    assert.equal(refused.certificate?.certificate, null);
    assert.match(refused.reason, /sniStrict/);
    // The same options with a covered name: the store certificate, no refusal (never the default one).
    const ok = decideIn(ws, { sni: "db.example.com", clientIp: "192.0.2.7" });
    assert.equal(ok.router, "strict");
    assert.equal(ok.refusal, null);
    assert.equal(ok.certificate?.source, "store");
  });
});

describe("ALPN negotiation", () => {
  const ws = () =>
    workspaceOf(
      config(
        `    web: { rule: "HostSNI(\`web.io\`)", service: svc, tls: { options: web } }
    h2only: { rule: "HostSNI(\`h2.io\`)", service: svc, tls: { options: h2only } }
    dflt: { rule: "HostSNI(\`dflt.io\`)", service: svc, tls: {} }
    pass: { rule: "HostSNI(\`pass.io\`)", service: svc, tls: { passthrough: true, options: web } }`,
        `tls:
  options:
    web: { alpnProtocols: [h2, http/1.1] }
    h2only: { alpnProtocols: [h2] }
`,
      ),
    );
  let w: Workspace;
  before(() => {
    w = ws();
  });

  it("picks the server's first protocol that the client offered (server order)", () => {
    assert.equal(decideIn(w, { sni: "web.io", alpn: ["http/1.1", "h2"] }).alpn, "h2");
    assert.equal(decideIn(w, { sni: "web.io", alpn: ["foo", "http/1.1"] }).alpn, "http/1.1");
  });

  it("negotiates nothing when the client offers nothing", () => {
    const d = decideIn(w, { sni: "web.io", alpn: [] });
    assert.equal(d.alpn, null);
    assert.equal(d.refusal, null);
  });

  it("fails the handshake when nothing overlaps", () => {
    const d = decideIn(w, { sni: "web.io", alpn: ["imap", "smtp"] });
    assert.equal(d.refusal, "alpn_mismatch");
    assert.equal(d.router, "web");
    assert.match(d.reason, /no_application_protocol/);
  });

  it("goes on without ALPN when the server speaks h2 and the client offered http/1.1", () => {
    const d = decideIn(w, { sni: "h2.io", alpn: ["http/1.1"] });
    assert.equal(d.refusal, null);
    assert.equal(d.alpn, null);
    assert.equal(decideIn(w, { sni: "h2.io", alpn: ["spdy/3"] }).refusal, "alpn_mismatch");
  });

  it("accepts postgresql after an SSLRequest even when the options do not list it", () => {
    assert.equal(decideIn(w, { sni: "web.io", alpn: ["postgresql"] }).refusal, "alpn_mismatch");
    const d = decideIn(w, { sni: "web.io", alpn: ["postgresql"], postgres: true });
    assert.equal(d.refusal, null);
    assert.equal(d.alpn, "postgresql");
    // Still server order first: h2 offered too → h2.
    assert.equal(decideIn(w, { sni: "web.io", alpn: ["postgresql", "h2"], postgres: true }).alpn, "h2");
  });

  it("lists postgresql in the default options, so direct-TLS PostgreSQL 17 clients work", () => {
    assert.equal(decideIn(w, { sni: "dflt.io", alpn: ["postgresql"] }).alpn, "postgresql");
    assert.equal(decideIn(w, { sni: "dflt.io", alpn: ["acme-tls/1", "x"] }).alpn, "acme-tls/1");
  });

  it("leaves ALPN to the backend on passthrough", () => {
    const d = decideIn(w, { sni: "pass.io", alpn: ["imap"] });
    assert.equal(d.refusal, null);
    assert.equal(d.alpn, null);
    assert.equal(d.mode, "passthrough");
  });
});

describe("ipAllowList middleware", () => {
  let ws: Workspace;
  before(() => {
    ws = workspaceOf(
      config(
        `    inner: { rule: "HostSNI(\`in.io\`)", service: svc, middlewares: [cap, internal], tls: {} }
    plain: { rule: "HostSNI(\`*\`)", service: svc, middlewares: [internal] }`,
        `  middlewares:
    internal: { ipAllowList: { sourceRange: ["10.0.0.0/8", "2001:db8::/32"] } }
    cap: { inFlightConn: { amount: 10 } }
`,
      ),
    );
  });

  it("lets an address in the ranges through", () => {
    for (const clientIp of ["10.200.1.1", "2001:db8::5"]) {
      const d = decideIn(ws, { sni: "in.io", clientIp });
      assert.equal(d.refusal, null, clientIp);
      assert.equal(d.router, "inner");
    }
  });

  it("refuses any other address with ip_denied, after the route is chosen", () => {
    const d = decideIn(ws, { sni: "in.io", clientIp: "192.0.2.10" });
    assert.equal(d.refusal, "ip_denied");
    assert.equal(d.router, "inner");
    assert.equal(d.matched, true);
    assert.match(d.reason, /middleware "internal" refuses client 192\.0\.2\.10/);
    // Refused before the handshake: no certificate is chosen.
    assert.equal(d.certificate, null);
    assert.equal(decideIn(ws, { tls: false, clientIp: "192.0.2.10" }).refusal, "ip_denied");
    assert.equal(decideIn(ws, { tls: false, clientIp: "10.0.0.1" }).refusal, null);
  });
});

describe("disabled routers", () => {
  let ws: Workspace;
  before(() => {
    // Every broken router outranks the fallback by priority, so routing to it would show.
    ws = workspaceOf(
      config(
        `    no-service: { rule: "HostSNI(\`a.io\`)", service: missing, priority: 100, tls: {} }
    bad-rule: { rule: "HostSNI(\`a.io\`) &&", service: svc, priority: 100, tls: {} }
    bad-options: { rule: "HostSNI(\`a.io\`)", service: svc, priority: 100, tls: { options: nosuch } }
    bad-mw: { rule: "HostSNI(\`a.io\`)", service: svc, priority: 100, middlewares: [nosuch], tls: {} }
    no-tls: { rule: "HostSNI(\`a.io\`)", service: svc, priority: 100 }
    no-rule: { service: svc, priority: 100, tls: {} }
    no-svc: { rule: "HostSNI(\`a.io\`)", priority: 100, tls: {} }
    fallback: { rule: "HostSNI(\`*\`)", service: other, tls: {} }
    plain-fallback: { rule: "HostSNI(\`*\`)", service: other }`,
      ),
    );
  });

  it("keeps them out of every route table", () => {
    const t = table(ws, "web");
    assert.deepEqual(names(t.tls), ["fallback"]);
    assert.deepEqual(names(t.tcp), ["plain-fallback"]);
    for (const name of ["no-service", "bad-rule", "bad-options", "bad-mw", "no-tls", "no-rule", "no-svc"]) {
      const status = ws.compiled.routers.get(name);
      assert.ok(status, name);
      assert.equal(status.route, null, name);
      assert.ok(status.problems.length > 0, name);
    }
  });

  it("never routes to them: the next route takes the connection", () => {
    const d = decideIn(ws, { sni: "a.io" });
    assert.equal(d.router, "fallback");
    assert.equal(d.service, "other");
    assert.equal(decideIn(ws, { sni: "a.io", tls: false }).router, "plain-fallback");
  });

  it("reports each problem as an error diagnostic", () => {
    const codes = new Set(ws.compiled.diagnostics.map((d) => d.code));
    for (const code of [
      "unknown-service",
      "invalid-rule",
      "unknown-tls-options",
      "unknown-middleware",
      "hostsni-without-tls",
      "missing-rule",
      "missing-service",
    ]) {
      assert.ok(codes.has(code), `missing diagnostic ${code}`);
    }
  });
});

// ------------------------------------------------------------------------------ index ≡ linear scan

const POS: SourcePos = { file: "generated.yml", line: 1, column: 1 };

function fakeRouter(name: string): Router {
  return {
    name,
    pos: POS,
    path: `tcp.routers.${name}`,
    entryPoints: null,
    rule: null,
    ruleSyntax: null,
    priority: null,
    service: null,
    middlewares: [],
    tls: null,
  };
}

const LABELS = ["a", "b", "db", "x-1"];
const PARENTS = ["example.com", "svc.example.com", "io", "b.example.com"];

const parent = fc.constantFrom(...PARENTS);
const host = fc.tuple(fc.constantFrom(...LABELS), parent).map(([l, p]) => `${l}.${p}`);
/** A host as a rule may spell it: any case, sometimes with the trailing dot rules ignore. */
const spelledHost = fc
  .tuple(host, fc.boolean(), fc.boolean())
  .map(([h, upper, dot]) => `${upper ? h.toUpperCase() : h}${dot ? "." : ""}`);

const v3Leaf: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: spelledHost.map((h) => `HostSNI(\`${h}\`)`) },
  { weight: 3, arbitrary: parent.map((p) => `HostSNI(\`*.${p}\`)`) },
  { weight: 1, arbitrary: parent.map((p) => `HostSNI(\`${p}\`)`) },
  { weight: 1, arbitrary: fc.constant("HostSNI(`*`)") },
  { weight: 1, arbitrary: fc.constant("HostSNIRegexp(`^(a|db)\\.example\\.com$`)") },
  { weight: 1, arbitrary: fc.constant("HostSNIRegexp(`^[^.]+\\.io$`)") },
  { weight: 2, arbitrary: fc.constantFrom("ALPN(`h2`)", "ALPN(`postgresql`)") },
  { weight: 2, arbitrary: fc.constantFrom("ClientIP(`10.0.0.0/8`)", "ClientIP(`192.0.2.1`)") },
);

const v3Rule: fc.Arbitrary<string> = fc.letrec<{ rule: string }>((tie) => ({
  rule: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    { weight: 5, arbitrary: v3Leaf },
    { weight: 2, arbitrary: fc.tuple(tie("rule"), tie("rule")).map(([a, b]) => `(${a}) || (${b})`) },
    { weight: 2, arbitrary: fc.tuple(tie("rule"), tie("rule")).map(([a, b]) => `${a} && (${b})`) },
    { weight: 1, arbitrary: tie("rule").map((a) => `!(${a})`) },
  ),
})).rule;

/** v2: several values per HostSNI, `*` anywhere in the list. */
const v2Rule: fc.Arbitrary<string> = fc.oneof(
  fc
    .array(fc.oneof(spelledHost, parent, fc.constant("*")), { minLength: 1, maxLength: 3 })
    .map((hs) => `HostSNI(${hs.map((h) => `\`${h}\``).join(", ")})`),
  fc
    .tuple(fc.array(host, { minLength: 1, maxLength: 2 }), fc.constantFrom("h2", "postgresql"))
    .map(([hs, p]) => `HostSNI(${hs.map((h) => `\`${h}\``).join(", ")}) && ALPN(\`${p}\`)`),
  fc.constant("HostSNIRegexp(`{sub:[a-z]+}.example.com`)"),
);

interface GenRoute {
  text: string;
  syntax: RuleSyntax;
  priority: number;
  mode: RouteMode;
}

const genRule: fc.Arbitrary<{ text: string; syntax: RuleSyntax }> = fc.oneof(
  { weight: 5, arbitrary: v3Rule.map((text) => ({ text, syntax: "v3" as const })) },
  { weight: 1, arbitrary: v2Rule.map((text) => ({ text, syntax: "v2" as const })) },
);

const genRoute: fc.Arbitrary<GenRoute> = fc
  .record({
    rule: genRule,
    priority: fc.oneof(fc.constant(0), fc.integer({ min: -3, max: 60 })),
    mode: fc.constantFrom<RouteMode>("terminate", "passthrough", "tcp"),
  })
  .map(({ rule, priority, mode }) => ({ ...rule, priority, mode }));

const genRoutes = fc.array(genRoute, { minLength: 0, maxLength: 25 });
const genFacts = fc.record({
  sni: fc.oneof(
    { weight: 6, arbitrary: host },
    { weight: 2, arbitrary: parent },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...LABELS), host).map(([l, h]) => `${l}.${h}`) },
    { weight: 1, arbitrary: host.map((h) => `${h}.`) },
    { weight: 1, arbitrary: fc.constantFrom("", "localhost", "unrelated.net", "example.com.") },
  ),
  alpn: fc.subarray(["h2", "http/1.1", "postgresql", "imap"]),
  clientIp: fc.constantFrom("10.1.1.1", "192.0.2.1", "192.0.2.2", "2001:db8::1", ""),
  tls: fc.boolean(),
});

function tableOf(gen: GenRoute[]): RouteTable {
  const routes: Omit<Route, "rank">[] = gen.map((g, i) => {
    const compiled = compileRule(g.text, g.syntax);
    if (!compiled.ok)
      throw new Error(`generator produced an invalid rule ${g.text}: ${compiled.error.message}`);
    const name = `r${String(i).padStart(2, "0")}`;
    return {
      name,
      router: fakeRouter(name),
      rule: compiled.rule,
      priority: g.priority !== 0 ? g.priority : defaultPriority(g.text, g.syntax),
      explicitPriority: g.priority !== 0,
      mode: g.mode,
      tlsOptions: g.mode === "terminate" ? "default" : null,
      service: "svc",
      middlewares: [],
    };
  });
  return buildTable("gen", routes);
}

function linearScan(t: RouteTable, f: ConnectionFacts): Route | null {
  const list = f.tls ? t.tls : t.tcp;
  const ruleFacts = { sni: f.tls ? f.sni : "", alpn: f.tls ? f.alpn : [], clientIp: f.clientIp };
  for (const route of list) if (route.rule.match(ruleFacts)) return route;
  return null;
}

describe("priorityOf", () => {
  const compiled = (text: string, syntax: RuleSyntax = "v3") => {
    const result = compileRule(text, syntax);
    if (!result.ok) assert.fail(`${text}: ${result.error.message}`);
    return result.rule;
  };

  it("equals the rules module's defaultPriority for every generated rule", () => {
    fc.assert(
      fc.property(genRule, ({ text, syntax }) => {
        assert.equal(priorityOf(compiled(text, syntax)), defaultPriority(text, syntax));
      }),
      { numRuns: 500 },
    );
  });

  it("counts UTF-8 bytes, and -1 for every spelling of the catch-all", () => {
    for (const text of [
      "ALPN(`ħ2`)",
      "ALPN(`🚀`) || HostSNI(`a.io`)",
      "ALPN(`\u{1F680}`)",
      ' ( hostsni( "*" ) ) ',
      "!HostSNI(`*`)",
      "HostSNI(`*`) && HostSNI(`*`)",
    ]) {
      assert.equal(priorityOf(compiled(text)), defaultPriority(text), text);
    }
    assert.equal(priorityOf(compiled("ALPN(`🚀`)")), "ALPN(``)".length + 4);
    assert.equal(priorityOf(compiled(' ( hostsni( "*" ) ) ')), -1);
  });
});

describe("the SNI index", () => {
  it("finds exactly the route a linear scan in evaluation order finds", () => {
    fc.assert(
      fc.property(genRoutes, fc.array(genFacts, { minLength: 1, maxLength: 12 }), (gen, factList) => {
        const t = tableOf(gen);
        // The lists are in evaluation order and ranked.
        for (const list of [t.tls, t.tcp]) {
          list.forEach((r, i) => {
            assert.equal(r.rank, i);
            if (i > 0) assert.ok(compareRoutes(list[i - 1]!, r) < 0);
          });
        }
        for (const f of factList) {
          const connection = facts({ ...f, entryPoint: "gen" });
          const indexed = findRoute(t, connection);
          const scanned = linearScan(t, connection);
          assert.equal(indexed?.name ?? null, scanned?.name ?? null, JSON.stringify(f));
          assert.equal(indexed, scanned);
        }
      }),
      { numRuns: 400 },
    );
  });

  it("actually narrows: an exact-name table yields only the routes for that name", () => {
    const gen: GenRoute[] = [];
    for (let i = 0; i < 200; i++)
      gen.push({ text: `HostSNI(\`h${i}.example.com\`)`, syntax: "v3", priority: 0, mode: "terminate" });
    gen.push({ text: "HostSNI(`*.example.com`)", syntax: "v3", priority: 0, mode: "terminate" });
    gen.push({ text: "HostSNI(`*`)", syntax: "v3", priority: 0, mode: "terminate" });
    const t = tableOf(gen);
    const seen = [...t.tlsIndex.candidates("h7.example.com")].map((r) => r.rule.text);
    // h7's rule is one byte longer than the wildcard's, so it comes first.
    assert.deepEqual(seen, ["HostSNI(`h7.example.com`)", "HostSNI(`*.example.com`)", "HostSNI(`*`)"]);
    assert.deepEqual(t.tlsIndex.size, { exact: 200, wildcard: 1, unindexed: 1 });
  });
});
