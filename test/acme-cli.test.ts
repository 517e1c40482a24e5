/**
 * What `tlsroute explain` says about ACME certificate resolvers, run as users run it: the built CLI in
 * a subprocess (run `npm run build` first when running this file on its own). No CA is involved: the
 * storage file is written here in Traefik's acme.json layout, with certificates made by openssl, the
 * way a user migrating from Traefik brings theirs.
 *
 * Covered: a router with certResolver and nothing stored yet, an empty storage file (Traefik creates
 * one before its first write), a stored certificate that explain (and so serve) chooses, one stored by
 * another resolver, and the acme-tls/1 interception with and without allowACMEByPass.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { certificateEntry, writeTraefikAcmeJson } from "./helpers/acme-json.ts";
import { BIN, type CliResult, ROOT, runCli, runCliJson } from "./helpers/cli.ts";
import { type IssuedCert, makePki, type TestCa } from "./helpers/pki.ts";

interface ExplainJson {
  matched: boolean;
  router: string | null;
  service: string | null;
  mode: string | null;
  certificate: {
    source: string;
    match: "exact" | "wildcard" | null;
    subject: string | null;
    sans: string[];
    notAfter: string | null;
    file: string | null;
    fingerprint256: string | null;
    resolver?: { name: string; stored: boolean };
    why: string;
  } | null;
  alpn: string | null;
  acmeChallenge: boolean;
  reason: string;
  refusal: string | null;
  candidates: { router: string }[];
}

const tempRoot = mkdtempSync(path.join(tmpdir(), "tlsroute-acme-cli-"));
after(() => rmSync(tempRoot, { recursive: true, force: true }));

let ca: TestCa;
let appCert: IssuedCert;
let otherCert: IssuedCert;

before(() => {
  if (!existsSync(path.join(ROOT, "dist", "cli.mjs"))) {
    throw new Error(`dist/cli.mjs is missing: run "npm run build" before this test (bin: ${BIN})`);
  }
  const pki = makePki(path.join(tempRoot, "pki"));
  ca = pki.ca("acme cli test CA");
  appCert = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com"], days: 90 });
  otherCert = pki.leaf({ ca, cn: "other.example.com", dns: ["other.example.com"], days: 90 });
});

/**
 * `websecure` carries the resolver's router; `legacy` hands acme-tls/1 connections to its routers
 * (allowACMEByPass), here a passthrough backend that answers its own validations. A second resolver,
 * `backup`, shares the storage file.
 */
const CONFIG = `entryPoints:
  websecure:
    address: "127.0.0.1:9443"
  legacy:
    address: "127.0.0.1:9444"
    allowACMEByPass: true
certificatesResolvers:
  le:
    acme:
      email: ops@example.com
      storage: acme.json
      tlsChallenge: {}
  backup:
    acme:
      email: ops@example.com
      storage: acme.json
      tlsChallenge: {}
tcp:
  routers:
    app:
      entryPoints: [websecure]
      rule: "HostSNI(\`app.example.com\`)"
      service: s
      tls:
        certResolver: le
    legacy-app:
      entryPoints: [legacy]
      rule: "HostSNI(\`app.example.com\`)"
      service: legacy
      tls:
        passthrough: true
  services:
    s:
      loadBalancer:
        servers:
          - address: "127.0.0.1:9001"
    legacy:
      loadBalancer:
        servers:
          - address: "127.0.0.1:9002"
`;

/**
 * A directory holding the configuration as tlsroute.yml and, if given, acme.json.
 */
function workDir(name: string, config: string, acmeJson?: (file: string) => void): string {
  const dir = path.join(tempRoot, name);
  mkdirSync(dir);
  writeFileSync(path.join(dir, "tlsroute.yml"), config);
  acmeJson?.(path.join(dir, "acme.json"));
  return dir;
}

function explain(dir: string, args: string[]): CliResult & { json: ExplainJson } {
  return runCliJson<ExplainJson>(["explain", "-c", "tlsroute.yml", "--format", "json", ...args], {
    cwd: dir,
  });
}

function explainText(dir: string, args: string[]): CliResult {
  return runCli(["explain", "-c", "tlsroute.yml", ...args], { cwd: dir });
}

const APP = ["--entrypoint", "websecure", "--sni", "app.example.com"];

describe("explain: a router whose certificate comes from a resolver", () => {
  it("nothing stored yet: the generated certificate, and the resolver has none stored", () => {
    const dir = workDir("nothing-stored", CONFIG);
    const { code, json, stderr } = explain(dir, APP);
    assert.equal(code, 0, stderr);
    assert.equal(json.router, "app");
    assert.equal(json.mode, "terminate");
    assert.ok(json.certificate);
    assert.equal(json.certificate.source, "generated");
    assert.deepEqual(json.certificate.resolver, { name: "le", stored: false });
    assert.match(
      json.certificate.why,
      /resolver "le" has no stored certificate for "app\.example\.com" yet: serve orders one at start/,
    );
    assert.equal(json.acmeChallenge, false);

    const text = explainText(dir, APP);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /resolver "le" has no stored certificate for "app\.example\.com" yet/);
  });

  it("an empty storage file (Traefik creates one before its first write) means nothing stored", () => {
    const dir = workDir("empty-storage", CONFIG, (file) => writeFileSync(file, "", { mode: 0o600 }));
    const { code, json } = explain(dir, APP);
    assert.equal(code, 0);
    assert.equal(json.certificate?.source, "generated");
    assert.deepEqual(json.certificate?.resolver, { name: "le", stored: false });
    // And validate finds nothing wrong with it.
    const validate = runCli(["validate", "tlsroute.yml", "--strict"], { cwd: dir });
    assert.equal(validate.code, 0, validate.stdout);
  });

  it("a certificate stored in Traefik's layout is chosen, and the file says which storage and resolver", () => {
    let storage = "";
    const dir = workDir("stored", CONFIG, (file) => {
      storage = file;
      writeTraefikAcmeJson(file, {
        le: {
          Account: null,
          Certificates: [
            certificateEntry("other.example.com", otherCert.chainPem, otherCert.keyPem),
            certificateEntry("app.example.com", appCert.chainPem, appCert.keyPem),
          ],
        },
      });
    });
    const { code, json, stderr } = explain(dir, APP);
    assert.equal(code, 0, stderr);
    const cert = json.certificate;
    assert.ok(cert);
    assert.equal(cert.source, "store");
    assert.equal(cert.match, "exact");
    assert.equal(cert.subject, "CN=app.example.com");
    assert.deepEqual(cert.sans, ["app.example.com"]);
    assert.equal(cert.file, `${storage} (resolver "le")`);
    assert.equal(cert.fingerprint256, new X509Certificate(appCert.certPem).fingerprint256);
    assert.equal(cert.notAfter, new Date(new X509Certificate(appCert.certPem).validTo).toISOString());
    assert.deepEqual(cert.resolver, { name: "le", stored: true });
    assert.match(cert.why, /resolver "le" obtained it/);
    assert.doesNotMatch(cert.why, /no stored certificate/);

    const text = explainText(dir, APP);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /store: CN=app\.example\.com .*acme\.json \(resolver "le"\)/);

    // validate reads the same file and has nothing to say about it.
    const validate = runCli(["validate", "tlsroute.yml", "--strict"], { cwd: dir });
    assert.equal(validate.code, 0, validate.stdout);
    // Pointed at the directory, acme.json next to the configuration is storage, not configuration.
    const directory = runCli(["validate", ".", "--strict"], { cwd: dir });
    assert.equal(directory.code, 0, directory.stdout);
  });

  it("a certificate another resolver stored is served, but this router's resolver still has none", () => {
    const dir = workDir("other-resolver", CONFIG, (file) =>
      writeTraefikAcmeJson(file, {
        backup: {
          Account: null,
          Certificates: [certificateEntry("app.example.com", appCert.chainPem, appCert.keyPem)],
        },
      }),
    );
    const { json } = explain(dir, APP);
    assert.equal(json.certificate?.source, "store");
    assert.match(json.certificate?.file ?? "", /acme\.json \(resolver "backup"\)$/);
    assert.deepEqual(json.certificate?.resolver, { name: "le", stored: false });
    assert.match(
      json.certificate?.why ?? "",
      /resolver "le" has no stored certificate for "app\.example\.com"/,
    );
  });

  it("a stored certificate for other names is not chosen", () => {
    const dir = workDir("stored-other-name", CONFIG, (file) =>
      writeTraefikAcmeJson(file, {
        le: {
          Account: null,
          Certificates: [certificateEntry("other.example.com", otherCert.chainPem, otherCert.keyPem)],
        },
      }),
    );
    const { json } = explain(dir, APP);
    assert.equal(json.certificate?.source, "generated");
    assert.deepEqual(json.certificate?.resolver, { name: "le", stored: false });
  });

  it("a router without certResolver gets no resolver field", () => {
    const config = CONFIG.replace("      tls:\n        certResolver: le\n", "      tls: {}\n");
    const dir = workDir("no-resolver-router", config);
    const { json } = explain(dir, APP);
    assert.equal(json.router, "app");
    assert.ok(json.certificate);
    assert.equal("resolver" in json.certificate, false);
  });
});

describe("explain: ACME TLS-ALPN-01 validation connections (ALPN acme-tls/1)", () => {
  const CHALLENGE = ["--sni", "app.example.com", "--alpn", "acme-tls/1"];

  it("are answered by tlsroute itself when a resolver uses tlsChallenge: no router is consulted", () => {
    const dir = workDir("challenge", CONFIG);
    const { code, json, stderr } = explain(dir, ["--entrypoint", "websecure", ...CHALLENGE]);
    assert.equal(code, 0, stderr);
    assert.equal(json.acmeChallenge, true);
    assert.equal(json.matched, true);
    assert.equal(json.router, null);
    assert.equal(json.service, null);
    assert.equal(json.certificate, null);
    assert.equal(json.alpn, "acme-tls/1");
    assert.equal(json.refusal, null);
    assert.deepEqual(json.candidates, []);
    assert.match(
      json.reason,
      /TLS-ALPN-01 validation, which tlsroute answers itself on entry point "websecure"/,
    );
    assert.match(json.reason, /allowACMEByPass/);

    const text = explainText(dir, ["--entrypoint", "websecure", ...CHALLENGE]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /none consulted: an ACME TLS-ALPN-01 validation comes first/);
    assert.match(text.stdout, /ACME challenge → answered by tlsroute \(ALPN acme-tls\/1\)/);
  });

  it("are routed like any connection on an entry point that sets allowACMEByPass", () => {
    const dir = workDir("bypass", CONFIG);
    const { code, json } = explain(dir, ["--entrypoint", "legacy", ...CHALLENGE]);
    assert.equal(code, 0);
    assert.equal(json.acmeChallenge, false);
    assert.equal(json.router, "legacy-app");
    assert.equal(json.mode, "passthrough");
    assert.equal(json.service, "legacy");
    assert.deepEqual(
      json.candidates.map((c) => c.router),
      ["legacy-app"],
    );
  });

  it("are routed like any connection when no resolver uses tlsChallenge", () => {
    const config = `entryPoints:
  websecure:
    address: "127.0.0.1:9443"
tcp:
  routers:
    app:
      rule: "HostSNI(\`app.example.com\`)"
      service: s
      tls:
        passthrough: true
  services:
    s:
      loadBalancer:
        servers:
          - address: "127.0.0.1:9001"
`;
    const dir = workDir("no-challenge-resolver", config);
    const { code, json } = explain(dir, CHALLENGE);
    assert.equal(code, 0);
    assert.equal(json.acmeChallenge, false);
    assert.equal(json.router, "app");
    assert.equal(json.mode, "passthrough");
  });

  it("only with TLS: a plain connection is never a validation", () => {
    const dir = workDir("plain", CONFIG);
    const { json } = explain(dir, ["--entrypoint", "websecure", "--no-tls", "--alpn", "acme-tls/1"]);
    assert.equal(json.acmeChallenge, false);
  });
});
