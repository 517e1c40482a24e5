/**
 * `tlsroute inspect` as users run it: the built CLI in a subprocess (run `npm run build` first when
 * running this file on its own), against real servers on loopback: `openssl s_server` with certificates
 * made by a throwaway CA, our own `tlsroute serve` (termination, passthrough, PostgreSQL), and small
 * node:net servers for the failure cases (a PostgreSQL that answers N, a server that never answers).
 * Certificate fields are checked against what `openssl x509` says about the same file.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { alertFromError } from "../src/inspect/failures.ts";
import { chooseEntryPoint } from "../src/inspect/route.ts";
import { chooseSni, parseTarget } from "../src/inspect/target.ts";
import { type CliResult, parseJsonOutput, ROOT, runCliAsync } from "./helpers/cli.ts";
import { type IssuedCert, makePki, type Pki, type TestCa } from "./helpers/pki.ts";
import { type LogLine, type ServeProcess, startServe } from "./helpers/serve.ts";

// ----- JSON shape ------------------------------------------------------------------------------------------

interface CertJson {
  subject: string;
  issuer: string;
  sans: string[];
  notBefore: string;
  notAfter: string;
  daysLeft: number;
  fingerprint256: string;
  serialNumber: string;
  keyType: string;
  keySize: number | null;
  curve: string | null;
  signatureAlgorithm: string | null;
  selfSigned: boolean;
  isCA: boolean;
  inTrustStore: boolean;
}

interface InspectJson {
  ok: boolean;
  target: string;
  address: string | null;
  localAddress: string | null;
  sni: string | null;
  alpnOffered: string[];
  postgres: { mode: "starttls" | "direct"; answer: string | null } | null;
  tls: { version: string | null; cipher: string | null; alpn: string | null; group: string | null } | null;
  certificate: CertJson | null;
  chain: CertJson[];
  verification: {
    ok: boolean;
    error: string | null;
    message: string | null;
    hostnameMatch: boolean;
    name: string;
    trust: string;
    enforced: boolean;
    clientCertificate: boolean;
  } | null;
  timings: { connectMs: number | null; startTlsMs: number | null; handshakeMs: number | null };
  error: {
    stage: string;
    code: string;
    message: string;
    summary: string;
    hint: string | null;
    alert: { name: string; code: number } | null;
  } | null;
  warnings: { code: string; message: string }[];
  route: {
    matched: boolean;
    router: string | null;
    service: string | null;
    mode: string | null;
    alpn: string | null;
    refusal: string | null;
    reason: string;
    entryPointChosenBy: string;
    facts: { entryPoint: string; sni: string; alpn: string[]; clientIp: string; postgres: boolean };
    certificate: { source: string; fingerprint256: string | null; subject: string | null } | null;
    postgres: string[] | null;
    candidates: unknown[];
  } | null;
}

// ----- running the CLI (async: the servers below live in this process) -------------------------------------

function inspect(args: string[]): Promise<CliResult> {
  return runCliAsync(["inspect", ...args]);
}

async function inspectJson(args: string[]): Promise<CliResult & { json: InspectJson }> {
  return parseJsonOutput<InspectJson>(await inspect([...args, "--format", "json"]));
}

// ----- servers ---------------------------------------------------------------------------------------------

interface SServer {
  port: number;
  output(): string;
  stop(): void;
}

/** `openssl s_server` on loopback port 0; the port comes from its ACCEPT line. stdin stays open. */
function sServer(args: string[], host = "127.0.0.1"): Promise<SServer> {
  return new Promise((resolve, reject) => {
    const accept = host.includes(":") ? `[${host}]:0` : `${host}:0`;
    const child: ChildProcessWithoutNullStreams = spawn("openssl", ["s_server", "-accept", accept, ...args]);
    let out = "";
    let found = false;
    const onData = (s: string) => {
      out += s;
      const m = /ACCEPT .*:(\d+)/.exec(out);
      if (m && !found) {
        found = true;
        clearTimeout(timer);
        resolve({ port: Number(m[1]), output: () => out, stop: () => child.kill("SIGKILL") });
      }
    };
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.stdin.on("error", () => {});
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`openssl s_server ${args.join(" ")} did not start:\n${out}`));
    }, 10_000);
    child.on("exit", () => {
      if (!found) reject(new Error(`openssl s_server ${args.join(" ")} exited:\n${out}`));
    });
  });
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)),
  );
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  const port = await listen(server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ----- certificates and openssl's view of them -------------------------------------------------------------

function x509(file: string, ...args: string[]): string {
  return execFileSync("openssl", ["x509", "-in", file, "-noout", ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** What `openssl x509` reports, in inspect's notation. */
function opensslView(file: string) {
  const name = (flag: string) =>
    x509(file, flag)
      .trim()
      .replace(/^(subject|issuer)=/, "")
      .replace(/ = /g, "=");
  const date = (flag: string) =>
    new Date(
      x509(file, flag)
        .trim()
        .replace(/^not(Before|After)=/, ""),
    ).toISOString();
  const sanText = x509(file, "-ext", "subjectAltName").split("\n").slice(1).join(" ").trim();
  const sans = sanText
    ? sanText.split(/,\s*/).map((entry) => entry.replace(/^DNS:/, "").replace(/^IP Address:/, ""))
    : [];
  const text = x509(file, "-text");
  return {
    subject: name("-subject"),
    issuer: name("-issuer"),
    notBefore: date("-startdate"),
    notAfter: date("-enddate"),
    fingerprint256: x509(file, "-fingerprint", "-sha256")
      .trim()
      .replace(/^sha256 Fingerprint=/i, ""),
    serialNumber: x509(file, "-serial")
      .trim()
      .replace(/^serial=/, ""),
    sans,
    keyBits: Number(/Public-Key: \((\d+) bit\)/.exec(text)?.[1]),
    curve: /ASN1 OID: (\S+)/.exec(text)?.[1] ?? null,
    signatureAlgorithm: /Signature Algorithm: (\S+)/.exec(text)?.[1] ?? null,
  };
}

/** A leaf whose validity starts in the future: `openssl ca` with our own dates (pki.ts only goes backwards). */
function futureLeaf(pki: Pki, ca: TestCa, cn: string): IssuedCert {
  const base = path.join(pki.dir, `future-${cn}`);
  const run = (args: string[]) =>
    execFileSync("openssl", args, { cwd: pki.dir, stdio: ["ignore", "pipe", "pipe"] });
  const stamp = (d: Date) => `${d.toISOString().slice(0, 19).replace(/[-:T]/g, "")}Z`;
  const start = new Date(Date.now() + 10 * 86_400_000);
  const end = new Date(Date.now() + 400 * 86_400_000);
  writeFileSync(`${base}.ext`, `basicConstraints = CA:FALSE\nsubjectAltName = DNS:${cn}\n`);
  run(
    [
      "req",
      "-new",
      "-config",
      "openssl-ca.cnf",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
    ].concat(["-keyout", `${base}.key`, "-out", `${base}.csr`, "-subj", `/CN=${cn}`]),
  );
  run(
    [
      "ca",
      "-batch",
      "-config",
      "openssl-ca.cnf",
      "-notext",
      "-cert",
      ca.certFile,
      "-keyfile",
      ca.keyFile,
    ].concat(
      ["-startdate", stamp(start), "-enddate", stamp(end), "-extfile", `${base}.ext`].concat([
        "-in",
        `${base}.csr`,
        "-out",
        `${base}.crt`,
      ]),
    ),
  );
  return {
    certFile: `${base}.crt`,
    keyFile: `${base}.key`,
    certPem: "",
    keyPem: "",
    chainPem: "",
    chainFile: `${base}.crt`,
  };
}

// ----- fixtures --------------------------------------------------------------------------------------------

let dir: string;
let pki: Pki;
let ca: TestCa;
let otherCa: TestCa;
let leaf: IssuedCert;
const servers: SServer[] = [];

async function server(args: string[], host?: string): Promise<SServer> {
  const s = await sServer(args, host);
  servers.push(s);
  return s;
}

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), "tlsroute-inspect-"));
  pki = makePki(path.join(dir, "pki"));
  ca = pki.ca("Inspect Test CA");
  otherCa = pki.ca("Some Other CA");
  leaf = pki.leaf({
    ca,
    cn: "localhost",
    subject: { O: "tlsroute test" },
    dns: ["localhost", "db.inspect.test"],
    ips: ["127.0.0.1", "::1"],
  });
});

after(() => {
  for (const s of servers) s.stop();
  rmSync(dir, { recursive: true, force: true });
});

// ----- pure parts ------------------------------------------------------------------------------------------

describe("inspect: target, SNI and entry point (pure)", () => {
  it("parses HOST[:PORT] with the default port 443 and bracketed IPv6", () => {
    const ok = (text: string) => {
      const r = parseTarget(text);
      assert.ok(r.ok, `${text}: ${r.ok ? "" : r.message}`);
      return r.target;
    };
    assert.deepEqual(ok("example.com"), {
      host: "example.com",
      port: 443,
      ip: false,
      display: "example.com:443",
    });
    assert.deepEqual(ok("db.example.com:5432"), {
      host: "db.example.com",
      port: 5432,
      ip: false,
      display: "db.example.com:5432",
    });
    assert.deepEqual(ok("127.0.0.1:8443"), {
      host: "127.0.0.1",
      port: 8443,
      ip: true,
      display: "127.0.0.1:8443",
    });
    assert.deepEqual(ok("[::1]:8443"), { host: "::1", port: 8443, ip: true, display: "[::1]:8443" });
    assert.deepEqual(ok("[2001:db8::1]"), {
      host: "2001:db8::1",
      port: 443,
      ip: true,
      display: "[2001:db8::1]:443",
    });
    assert.deepEqual(ok("::1"), { host: "::1", port: 443, ip: true, display: "[::1]:443" });
  });

  it("refuses what is not HOST[:PORT], with a reason", () => {
    for (const [text, words] of [
      ["", /empty/],
      ["example.com:0", /1 to 65535/],
      ["example.com:65536", /1 to 65535/],
      ["example.com:https", /1 to 65535/],
      ["https://example.com", /URL/],
      ["[::1", /missing "\]"/],
      ["[example.com]:443", /not an IPv6/],
      ["2001:db8::1::443", /not HOST\[:PORT\]|IPv6/],
      ["exa mple.com", /not a host name/],
      [":443", /host is empty/],
    ] as const) {
      const r = parseTarget(text);
      assert.equal(r.ok, false, text);
      if (!r.ok) assert.match(r.message, words, text);
    }
  });

  it("sends the host name as SNI, none for an IP literal, and --sni overrides ('' = none)", () => {
    const t = (text: string) => {
      const r = parseTarget(text);
      if (!r.ok) throw new Error(r.message);
      return r.target;
    };
    assert.equal(chooseSni(t("db.example.com:5432"), undefined), "db.example.com");
    assert.equal(chooseSni(t("db.example.com."), undefined), "db.example.com");
    assert.equal(chooseSni(t("127.0.0.1:5432"), undefined), null);
    assert.equal(chooseSni(t("[::1]:5432"), undefined), null);
    assert.equal(chooseSni(t("127.0.0.1:5432"), "db.example.com"), "db.example.com");
    assert.equal(chooseSni(t("db.example.com"), ""), null);
  });

  it("chooses the entry point by flag, then by port, then the only one", () => {
    const eps = new Map([
      ["web", { name: "web", port: 443 }],
      ["pg", { name: "pg", port: 5432 }],
      ["pg2", { name: "pg2", port: 5432 }],
    ]);
    assert.deepEqual(chooseEntryPoint(eps, 443, undefined), { ok: true, name: "web", by: "port" });
    assert.deepEqual(chooseEntryPoint(eps, 5432, "pg2"), { ok: true, name: "pg2", by: "flag" });
    const ambiguous = chooseEntryPoint(eps, 5432, undefined);
    assert.equal(ambiguous.ok, false);
    assert.match(ambiguous.ok ? "" : ambiguous.message, /pg, pg2 all listen on port 5432/);
    assert.equal(chooseEntryPoint(eps, 8443, undefined).ok, false);
    assert.equal(chooseEntryPoint(eps, 443, "nope").ok, false);
    assert.deepEqual(chooseEntryPoint(new Map([["only", { name: "only", port: 8443 }]]), 40000, undefined), {
      ok: true,
      name: "only",
      by: "only",
    });
  });

  it("recognises the alert the server sent, from the code or the alert number", () => {
    assert.deepEqual(alertFromError("ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", ""), {
      name: "certificate_required",
      code: 116,
    });
    assert.deepEqual(alertFromError("ERR_SSL_TLSV1_ALERT_CERTIFICATE_REQUIRED", ""), {
      name: "certificate_required",
      code: 116,
    });
    assert.deepEqual(alertFromError("ERR_SSL_TLSV1_UNRECOGNIZED_NAME", ""), {
      name: "unrecognized_name",
      code: 112,
    });
    assert.deepEqual(alertFromError("ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE", ""), {
      name: "handshake_failure",
      code: 40,
    });
    assert.deepEqual(alertFromError("ECONNRESET", "... SSL alert number 48"), {
      name: "unknown_ca",
      code: 48,
    });
    assert.equal(alertFromError("ERR_SSL_WRONG_VERSION_NUMBER", "wrong version number"), null);
  });
});

// ----- against openssl s_server ----------------------------------------------------------------------------

describe("inspect against openssl s_server", () => {
  let port: number;

  before(async () => {
    port = (await server(["-cert", leaf.certFile, "-key", leaf.keyFile])).port;
  });

  it("reports every certificate field as openssl x509 reads it, and verifies with --ca", async () => {
    const { code, json, stderr } = await inspectJson([`localhost:${port}`, "--ca", ca.certFile]);
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
    assert.equal(json.ok, true);
    assert.equal(json.target, `localhost:${port}`);
    assert.equal(json.sni, "localhost");
    const expected = opensslView(leaf.certFile);
    const c = json.certificate;
    assert.ok(c);
    assert.equal(c.subject, expected.subject);
    assert.equal(c.subject, "O=tlsroute test, CN=localhost");
    assert.equal(c.issuer, expected.issuer);
    assert.equal(c.issuer, "CN=Inspect Test CA");
    assert.equal(c.notBefore, expected.notBefore);
    assert.equal(c.notAfter, expected.notAfter);
    assert.equal(c.fingerprint256, expected.fingerprint256);
    assert.equal(c.serialNumber, expected.serialNumber.toUpperCase());
    assert.deepEqual(
      [...c.sans].sort(),
      expected.sans.map((s) => (s === "0:0:0:0:0:0:0:1" ? "::1" : s)).sort(),
    );
    assert.deepEqual([...c.sans].sort(), ["127.0.0.1", "::1", "db.inspect.test", "localhost"]);
    assert.equal(c.keyType, "EC");
    assert.equal(c.keySize, expected.keyBits);
    assert.equal(c.curve, expected.curve);
    assert.equal(c.signatureAlgorithm, expected.signatureAlgorithm);
    assert.equal(c.daysLeft, Math.floor((Date.parse(expected.notAfter) - Date.now()) / 86_400_000));
    assert.equal(c.selfSigned, false);
    // The chain as the runtime reports it: the leaf, then the root it found in the --ca store.
    assert.equal(json.chain.length, 2);
    assert.deepEqual(json.chain[0], c);
    assert.equal(json.chain[1]?.fingerprint256, opensslView(ca.certFile).fingerprint256);
    assert.equal(json.chain[1]?.selfSigned, true);
    assert.equal(json.chain[1]?.inTrustStore, true);
    assert.deepEqual(json.verification, {
      ok: true,
      error: null,
      message: null,
      hostnameMatch: true,
      name: "localhost",
      trust: path.relative(ROOT, ca.certFile).startsWith("..")
        ? ca.certFile
        : path.relative(ROOT, ca.certFile),
      enforced: true,
      clientCertificate: false,
    });
    assert.equal(json.tls?.version, "TLSv1.3");
    assert.match(json.tls?.cipher ?? "", /^TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$/);
    assert.equal(json.tls?.group, "X25519");
    assert.equal(json.tls?.alpn, null);
    assert.equal(json.error, null);
    assert.deepEqual(json.warnings, []);
    assert.ok((json.timings.connectMs ?? -1) >= 0 && (json.timings.handshakeMs ?? -1) > 0);
    assert.equal(json.route, null);
    assert.equal(json.address, `127.0.0.1:${port}`);
  });

  it("without --ca fails verification with the runtime's code and names the missing issuer", async () => {
    const { code, json } = await inspectJson([`localhost:${port}`]);
    assert.equal(code, 1);
    assert.equal(json.ok, false);
    assert.equal(json.error, null, "the handshake itself succeeded");
    assert.equal(json.verification?.ok, false);
    assert.equal(json.verification?.error, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
    assert.equal(json.verification?.hostnameMatch, true);
    assert.equal(json.verification?.trust, "default");
    assert.equal(json.chain.length, 1, "the server sent the leaf alone");
    assert.ok(
      json.warnings.some(
        (w) => w.code === "missing-intermediate" && w.message.includes("CN=Inspect Test CA"),
      ),
    );
  });

  it("--insecure still reports what verification says, and exits 0", async () => {
    const { code, json } = await inspectJson([`localhost:${port}`, "--insecure"]);
    assert.equal(code, 0);
    assert.equal(json.ok, true);
    assert.equal(json.verification?.ok, false);
    assert.equal(json.verification?.error, "UNABLE_TO_VERIFY_LEAF_SIGNATURE");
    assert.equal(json.verification?.enforced, false);
    const text = await inspect([`localhost:${port}`, "--insecure"]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /^Verification {2}✖ UNABLE_TO_VERIFY_LEAF_SIGNATURE: /m);
    assert.match(text.stdout, /not enforced \(--insecure\)/);
  });

  it("a name the certificate does not cover fails with ERR_TLS_CERT_ALTNAME_INVALID", async () => {
    const { code, json } = await inspectJson([
      `127.0.0.1:${port}`,
      "--sni",
      "wrong.inspect.test",
      "--ca",
      ca.certFile,
    ]);
    assert.equal(code, 1);
    assert.equal(json.sni, "wrong.inspect.test");
    assert.equal(json.verification?.error, "ERR_TLS_CERT_ALTNAME_INVALID");
    assert.equal(json.verification?.hostnameMatch, false);
    assert.equal(json.verification?.name, "wrong.inspect.test");
    assert.ok(
      json.warnings.some((w) => w.code === "name-mismatch" && w.message.includes('"wrong.inspect.test"')),
    );
  });

  it("an IP target sends no SNI and is checked against the IP SANs", async () => {
    const { code, json } = await inspectJson([`127.0.0.1:${port}`, "--ca", ca.certFile]);
    assert.equal(code, 0, JSON.stringify(json.verification));
    assert.equal(json.sni, null);
    assert.equal(json.verification?.name, "127.0.0.1");
    assert.equal(json.verification?.hostnameMatch, true);
  });

  it("dials a bracketed IPv6 literal", async (t) => {
    let v6: SServer;
    try {
      v6 = await server(["-cert", leaf.certFile, "-key", leaf.keyFile], "::1");
    } catch {
      t.skip("no IPv6 loopback here");
      return;
    }
    const { code, json } = await inspectJson([`[::1]:${v6.port}`, "--ca", ca.certFile]);
    assert.equal(code, 0, JSON.stringify(json.error));
    assert.equal(json.target, `[::1]:${v6.port}`);
    assert.equal(json.address, `[::1]:${v6.port}`);
    assert.equal(json.sni, null);
    assert.equal(json.verification?.name, "::1");
    assert.equal(json.verification?.ok, true);
  });

  it("prints a short aligned report", async () => {
    const { code, stdout } = await inspect([`localhost:${port}`, "--ca", ca.certFile]);
    assert.equal(code, 0);
    const expected = opensslView(leaf.certFile);
    const lines = stdout.split("\n");
    assert.match(
      lines[0] ?? "",
      /^Target {8}localhost:\d+ \(127\.0\.0\.1:\d+\) · SNI localhost · ALPN offered \(none\)$/,
    );
    assert.match(stdout, /^TLS {11}TLSv1\.3 · TLS_\w+ · ALPN \(none\) · group X25519$/m);
    assert.match(stdout, /^Certificate {3}O=tlsroute test, CN=localhost$/m);
    assert.match(stdout, /^ {2}issuer {6}CN=Inspect Test CA$/m);
    assert.match(stdout, /^ {2}names {7}localhost, db\.inspect\.test, 127\.0\.0\.1, ::1$/m);
    assert.ok(stdout.includes(`  sha256      ${expected.fingerprint256}\n`));
    assert.match(stdout, /^ {2}key {9}EC 256 \(prime256v1\) · signed with ecdsa-with-SHA256$/m);
    assert.match(stdout, /^Verification {2}✔ trusted .* name localhost matches$/m);
    assert.match(stdout, /^Result {8}✔ handshake and verification succeeded$/m);
    // Every label is padded to the same column.
    for (const line of lines.filter((l) => /^\S/.test(l))) assert.match(line, /^\S.{13}\S/, line);
  });
});

describe("inspect: certificates with problems", () => {
  it("reports an expired certificate (CERT_HAS_EXPIRED) and a warning", async () => {
    const expired = pki.leaf({ ca, cn: "localhost", dns: ["localhost"], days: -3 });
    const s = await server(["-cert", expired.certFile, "-key", expired.keyFile]);
    const { code, json } = await inspectJson([`localhost:${s.port}`, "--ca", ca.certFile]);
    assert.equal(code, 1);
    assert.equal(json.verification?.error, "CERT_HAS_EXPIRED");
    assert.ok(json.certificate && json.certificate.daysLeft < 0);
    assert.ok(json.warnings.some((w) => w.code === "expired" && /ago/.test(w.message)));
  });

  it("reports a certificate that is not valid yet (CERT_NOT_YET_VALID)", async () => {
    const future = futureLeaf(pki, ca, "localhost");
    const s = await server(["-cert", future.certFile, "-key", future.keyFile]);
    const { code, json } = await inspectJson([`localhost:${s.port}`, "--ca", ca.certFile]);
    assert.equal(code, 1);
    assert.equal(json.verification?.error, "CERT_NOT_YET_VALID");
    assert.ok(json.warnings.some((w) => w.code === "not-yet-valid"));
  });

  it("warns about a certificate expiring within 30 days but still succeeds", async () => {
    const soon = pki.leaf({ ca, cn: "localhost", dns: ["localhost"], days: 10 });
    const s = await server(["-cert", soon.certFile, "-key", soon.keyFile]);
    const { code, json } = await inspectJson([`localhost:${s.port}`, "--ca", ca.certFile]);
    assert.equal(code, 0);
    assert.equal(json.verification?.ok, true);
    const w = json.warnings.find((x) => x.code === "expiring");
    assert.ok(w, JSON.stringify(json.warnings));
    assert.match(w.message, /in (9|10) days/);
  });

  it("reports a self-signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)", async () => {
    const self = pki.selfSigned({ cn: "localhost", dns: ["localhost"] });
    const s = await server(["-cert", self.certFile, "-key", self.keyFile]);
    const { code, json } = await inspectJson([`localhost:${s.port}`]);
    assert.equal(code, 1);
    assert.equal(json.verification?.error, "DEPTH_ZERO_SELF_SIGNED_CERT");
    assert.equal(json.certificate?.selfSigned, true);
    assert.ok(json.warnings.some((w) => w.code === "self-signed"));
    assert.ok(!json.warnings.some((w) => w.code === "missing-intermediate"));
  });

  it("a chain that includes its (untrusted) root is not a missing intermediate", async () => {
    const s = await server(["-cert", leaf.certFile, "-key", leaf.keyFile, "-cert_chain", ca.certFile]);
    const { code, json } = await inspectJson([`localhost:${s.port}`]);
    assert.equal(code, 1);
    assert.equal(json.verification?.error, "SELF_SIGNED_CERT_IN_CHAIN");
    assert.equal(json.chain.length, 2);
    assert.equal(json.chain[1]?.inTrustStore, false);
    assert.ok(!json.warnings.some((w) => w.code === "missing-intermediate"));
  });

  it("warns when the server negotiates TLS below 1.2", async () => {
    const s = await server([
      "-cert",
      leaf.certFile,
      "-key",
      leaf.keyFile,
      "-tls1_1",
      "-cipher",
      "DEFAULT:@SECLEVEL=0",
    ]);
    const { code, json } = await inspectJson([`localhost:${s.port}`, "--ca", ca.certFile]);
    assert.equal(json.tls?.version, "TLSv1.1");
    assert.ok(json.warnings.some((w) => w.code === "old-tls"));
    assert.equal(code, 0);
  });
});

describe("inspect: ALPN and client certificates against openssl s_server", () => {
  let alpnPort: number;
  let mtlsPort: number;

  before(async () => {
    alpnPort = (await server(["-cert", leaf.certFile, "-key", leaf.keyFile, "-alpn", "h2,http/1.1"])).port;
    mtlsPort = (
      await server([
        "-cert",
        leaf.certFile,
        "-key",
        leaf.keyFile,
        "-Verify",
        "1",
        "-CAfile",
        ca.certFile,
        "-verify_return_error",
      ])
    ).port;
  });

  it("reports the offered and the negotiated ALPN", async () => {
    const { code, json } = await inspectJson([
      `localhost:${alpnPort}`,
      "--ca",
      ca.certFile,
      "--alpn",
      "foo,http/1.1",
    ]);
    assert.equal(code, 0);
    assert.deepEqual(json.alpnOffered, ["foo", "http/1.1"]);
    assert.equal(json.tls?.alpn, "http/1.1");
    const both = await inspectJson([`localhost:${alpnPort}`, "--ca", ca.certFile, "--alpn", "http/1.1,h2"]);
    assert.equal(both.json.tls?.alpn, "h2", "s_server picks by its own preference");
  });

  it("no common ALPN protocol is a handshake alert (no_application_protocol, 120)", async () => {
    const { code, json, stdout } = await inspectJson([
      `localhost:${alpnPort}`,
      "--ca",
      ca.certFile,
      "--alpn",
      "foo",
    ]);
    assert.equal(code, 1, stdout);
    assert.equal(json.ok, false);
    assert.equal(json.tls, null);
    assert.equal(json.error?.stage, "handshake");
    assert.deepEqual(json.error?.alert, { name: "no_application_protocol", code: 120 });
    assert.match(json.error?.summary ?? "", /no_application_protocol \(120\)/);
  });

  it("a server that requires a client certificate refuses us without one, and says so", async () => {
    const { code, json } = await inspectJson([`localhost:${mtlsPort}`, "--ca", ca.certFile]);
    assert.equal(code, 1);
    assert.equal(json.error?.stage, "handshake");
    assert.deepEqual(json.error?.alert, { name: "certificate_required", code: 116 });
    // TLS 1.3: our side finished first, so the server's certificate is still reported.
    assert.equal(json.certificate?.fingerprint256, opensslView(leaf.certFile).fingerprint256);
    const text = await inspect([`localhost:${mtlsPort}`, "--ca", ca.certFile]);
    assert.match(
      text.stdout,
      /^Result {8}✖ the server sent the TLS alert certificate_required \(116\) after the handshake: .*--cert and --key/m,
    );
  });

  it("with --cert/--key the client certificate is accepted", async () => {
    const client = pki.leaf({ ca, cn: "inspect client" });
    const { code, json } = await inspectJson([
      `localhost:${mtlsPort}`,
      "--ca",
      ca.certFile,
      "--cert",
      client.certFile,
      "--key",
      client.keyFile,
    ]);
    assert.equal(code, 0, JSON.stringify(json.error));
    assert.equal(json.error, null);
    assert.equal(json.verification?.clientCertificate, true);
  });

  it("a client certificate from another CA is refused with an alert", async () => {
    const stranger = pki.leaf({ ca: otherCa, cn: "stranger" });
    const { code, json } = await inspectJson([
      `localhost:${mtlsPort}`,
      "--ca",
      ca.certFile,
      "--cert",
      stranger.certFile,
      "--key",
      stranger.keyFile,
    ]);
    assert.equal(code, 1);
    assert.equal(json.error?.stage, "handshake");
    assert.deepEqual(json.error?.alert, { name: "unknown_ca", code: 48 });
  });
});

// ----- against tlsroute serve ------------------------------------------------------------------------------

describe("inspect against tlsroute serve, with -c the same configuration", () => {
  let serve: ServeProcess;
  let backend: SServer;
  let configFile: string;
  let webPort: number;
  let otherPort: number;
  let termCert: IssuedCert;
  let passCert: IssuedCert;

  before(async () => {
    termCert = pki.leaf({ ca, cn: "term.test", dns: ["term.test", "db.test"] });
    passCert = pki.leaf({ ca, cn: "pass.test", dns: ["pass.test"] });
    backend = await server(["-cert", passCert.certFile, "-key", passCert.keyFile]);
    webPort = await freePort();
    otherPort = await freePort();
    configFile = path.join(dir, "serve.yml");
    writeFileSync(
      configFile,
      `entryPoints:
  websecure:
    address: "127.0.0.1:${webPort}"
  other:
    address: "127.0.0.1:${otherPort}"
tcp:
  routers:
    term:
      entryPoints: [websecure]
      rule: "HostSNI(\`term.test\`)"
      service: whoami
      tls: {}
    pass:
      entryPoints: [websecure]
      rule: "HostSNI(\`pass.test\`)"
      service: backend
      tls: { passthrough: true }
    db:
      entryPoints: [websecure]
      rule: "HostSNI(\`db.test\`) && ALPN(\`postgresql\`)"
      service: whoami
      tls: {}
    catchall:
      entryPoints: [other]
      rule: "HostSNI(\`*\`)"
      service: whoami
      tls: {}
  services:
    whoami:
      loadBalancer:
        servers: [{ address: "whoami@internal" }]
    backend:
      loadBalancer:
        servers: [{ address: "127.0.0.1:${backend.port}" }]
tls:
  certificates:
    - certFile: ${JSON.stringify(termCert.certFile)}
      keyFile: ${JSON.stringify(termCert.keyFile)}
`,
    );
    serve = await startServe(["-c", configFile], { expectEntryPoints: 2 });
  });

  after(async () => {
    await serve?.stop();
  });

  async function accessLineFor(localAddress: string | null): Promise<LogLine> {
    assert.ok(localAddress);
    return serve.waitFor((l) => l.msg === "connection" && l.client === localAddress);
  }

  it("termination: the route inspect reports is what serve did, with the certificate the config names", async () => {
    const { code, json } = await inspectJson([
      `127.0.0.1:${webPort}`,
      "--sni",
      "term.test",
      "--alpn",
      "h2,http/1.1",
      "--ca",
      ca.certFile,
      "-c",
      configFile,
    ]);
    assert.equal(code, 0, JSON.stringify({ error: json.error, warnings: json.warnings }));
    const line = await accessLineFor(json.localAddress);
    assert.equal(line.reason, "closed");
    assert.equal(line.sni, "term.test");
    assert.ok(json.route);
    assert.equal(json.route.entryPointChosenBy, "port");
    assert.equal(json.route.facts.entryPoint, line.entryPoint);
    assert.equal(json.route.router, line.router);
    assert.equal(json.route.service, line.service);
    assert.equal(json.route.mode, line.mode);
    assert.equal(json.route.mode, "terminate");
    assert.equal(json.tls?.version, line.tlsVersion);
    assert.equal(json.tls?.alpn, "h2");
    assert.equal(json.route.alpn, "h2");
    assert.equal(json.certificate?.fingerprint256, opensslView(termCert.certFile).fingerprint256);
    assert.equal(json.route.certificate?.fingerprint256, json.certificate?.fingerprint256);
    assert.equal(json.verification?.ok, true);
    assert.deepEqual(json.warnings, []);
  });

  it("passthrough: the backend's certificate comes through and the route says passthrough", async () => {
    const { code, json } = await inspectJson([
      `127.0.0.1:${webPort}`,
      "--sni",
      "pass.test",
      "--ca",
      ca.certFile,
      "-c",
      configFile,
    ]);
    assert.equal(code, 0, JSON.stringify(json.error));
    const line = await accessLineFor(json.localAddress);
    assert.equal(line.mode, "passthrough");
    assert.equal(json.route?.mode, line.mode);
    assert.equal(json.route?.router, line.router);
    assert.equal(json.route?.router, "pass");
    assert.equal(json.route?.service, line.service);
    assert.equal(json.certificate?.fingerprint256, opensslView(passCert.certFile).fingerprint256);
  });

  it("no route: serve's alert (unrecognized_name) and the route's no_route agree; exit 1", async () => {
    const { code, json } = await inspectJson([
      `127.0.0.1:${webPort}`,
      "--sni",
      "nothing.test",
      "--ca",
      ca.certFile,
      "-c",
      configFile,
    ]);
    assert.equal(code, 1);
    assert.deepEqual(json.error?.alert, { name: "unrecognized_name", code: 112 });
    assert.equal(json.route?.matched, false);
    assert.equal(json.route?.refusal, "no_route");
    const line = await accessLineFor(json.localAddress);
    assert.equal(line.reason, json.route?.refusal);
  });

  it("an IP target sends no SNI: serve sees none, and the route is computed for none", async () => {
    const { json } = await inspectJson([`127.0.0.1:${otherPort}`, "--insecure", "-c", configFile]);
    assert.equal(json.sni, null);
    const line = await accessLineFor(json.localAddress);
    assert.equal(line.sni, "");
    assert.equal(json.route?.facts.sni, "");
    assert.equal(json.route?.facts.entryPoint, "other");
    assert.equal(json.route?.router, line.router);
    assert.equal(json.route?.router, "catchall");
  });

  it("--entrypoint overrides the choice by port", async () => {
    const { json } = await inspectJson([
      `127.0.0.1:${webPort}`,
      "--sni",
      "term.test",
      "--insecure",
      "-c",
      configFile,
      "--entrypoint",
      "other",
    ]);
    assert.equal(json.route?.entryPointChosenBy, "flag");
    assert.equal(json.route?.router, "catchall");
    // serve routed this connection (it arrived on websecure) to "term"; the route answers for "other".
    const line = await accessLineFor(json.localAddress);
    assert.equal(line.router, "term");
  });

  it("--starttls postgres: serve answers S, terminates, and routes by ALPN postgresql", async () => {
    const { code, json } = await inspectJson([
      `127.0.0.1:${webPort}`,
      "--sni",
      "db.test",
      "--starttls",
      "postgres",
      "--ca",
      ca.certFile,
      "-c",
      configFile,
    ]);
    assert.equal(code, 0, JSON.stringify(json.error));
    assert.deepEqual(json.postgres, { mode: "starttls", answer: "S" });
    assert.deepEqual(json.alpnOffered, ["postgresql"]);
    assert.equal(json.tls?.alpn, "postgresql");
    assert.ok((json.timings.startTlsMs ?? -1) >= 0);
    const line = await accessLineFor(json.localAddress);
    assert.equal(line.postgres, "sslrequest");
    assert.equal(json.route?.facts.postgres, true);
    assert.equal(json.route?.router, line.router);
    assert.equal(json.route?.router, "db");
    assert.ok((json.route?.postgres ?? []).some((s) => s.includes('answers "S"')));
  });

  it("--starttls postgres-direct: TLS first with ALPN postgresql", async () => {
    const { code, json } = await inspectJson([
      `127.0.0.1:${webPort}`,
      "--sni",
      "db.test",
      "--starttls",
      "postgres-direct",
      "--ca",
      ca.certFile,
      "-c",
      configFile,
    ]);
    assert.equal(code, 0, JSON.stringify(json.error));
    assert.deepEqual(json.postgres, { mode: "direct", answer: null });
    const line = await accessLineFor(json.localAddress);
    assert.equal(line.postgres, null);
    assert.deepEqual(line.alpn, ["postgresql"]);
    assert.equal(json.route?.router, line.router);
    assert.equal(json.route?.router, "db");
  });

  it("text output shows the route next to what the server did", async () => {
    const { code, stdout } = await inspect([
      `127.0.0.1:${webPort}`,
      "--sni",
      "term.test",
      "--ca",
      ca.certFile,
      "-c",
      configFile,
    ]);
    assert.equal(code, 0, stdout);
    assert.match(
      stdout,
      /^Route {9}✔ router term → service whoami \(terminate\) · entry point websecure \(by port\)$/m,
    );
  });
});

// ----- failures --------------------------------------------------------------------------------------------

describe("inspect: failures are results", () => {
  const local: net.Server[] = [];
  after(() => {
    for (const s of local) s.close();
  });

  it("a PostgreSQL server that answers N is reported clearly, exit 1", async () => {
    const received: Buffer[] = [];
    const pg = net.createServer((socket) => {
      socket.once("data", (d) => {
        received.push(d);
        socket.end("N");
      });
    });
    local.push(pg);
    const port = await listen(pg);
    const { code, json } = await inspectJson([`127.0.0.1:${port}`, "--starttls", "postgres"]);
    assert.equal(code, 1);
    assert.equal(received[0]?.toString("hex"), "0000000804d2162f", "an SSLRequest was sent");
    assert.deepEqual(json.postgres, { mode: "starttls", answer: "N" });
    assert.equal(json.error?.stage, "starttls");
    assert.equal(json.error?.code, "postgres_ssl_refused");
    assert.equal(json.tls, null);
    const text = await inspect([`127.0.0.1:${port}`, "--starttls", "postgres"]);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /^PostgreSQL {4}SSLRequest answered N/m);
    assert.match(
      text.stdout,
      /^Result {8}✖ the server answered "N" to the SSLRequest: it does not accept TLS connections$/m,
    );
  });

  it("a refused connection is a result, exit 1", async () => {
    const port = await freePort();
    const { code, json, stderr } = await inspectJson([`127.0.0.1:${port}`]);
    assert.equal(code, 1);
    assert.equal(stderr, "");
    assert.equal(json.error?.stage, "connect");
    assert.equal(json.error?.code, "ECONNREFUSED");
    assert.match(json.error?.summary ?? "", /^connection refused/);
    assert.equal(json.timings.connectMs, null);
  });

  it("a server that accepts and never answers times out after --timeout", async () => {
    const silent = net.createServer(() => {});
    local.push(silent);
    const port = await listen(silent);
    const started = Date.now();
    const { code, json } = await inspectJson([`127.0.0.1:${port}`, "--timeout", "300ms"]);
    assert.equal(code, 1);
    assert.ok(Date.now() - started < 5000);
    assert.equal(json.error?.code, "timeout");
    assert.equal(json.error?.stage, "handshake");
    assert.match(json.error?.summary ?? "", /timed out after 300 ms/);
    const pgSilent = await inspectJson([`127.0.0.1:${port}`, "--timeout", "300ms", "--starttls", "postgres"]);
    assert.equal(pgSilent.json.error?.stage, "starttls");
  });

  it("a plaintext server is reported as not speaking TLS", async () => {
    const plain = net.createServer((socket) => socket.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    local.push(plain);
    const port = await listen(plain);
    const { code, json } = await inspectJson([`127.0.0.1:${port}`]);
    assert.equal(code, 1);
    assert.equal(json.error?.stage, "handshake");
    assert.equal(json.error?.alert, null);
  });
});

describe("inspect: bad arguments exit 2 before dialing", () => {
  const cases: [string, string[], RegExp][] = [
    ["no target", [], /missing HOST\[:PORT\]/],
    ["a bad port", ["localhost:70000"], /1 to 65535/],
    ["a URL", ["https://example.com"], /URL/],
    [
      "an unknown --starttls",
      ["localhost", "--starttls", "smtp"],
      /--starttls must be postgres or postgres-direct/,
    ],
    ["a bad --timeout", ["localhost", "--timeout", "soon"], /--timeout "soon"/],
    ["--cert without --key", ["localhost", "--cert", "x.pem"], /--cert and --key go together/],
    ["a missing --ca file", ["localhost", "--ca", "/nonexistent/ca.pem"], /cannot read --ca/],
    ["--entrypoint without -c", ["localhost", "--entrypoint", "web"], /needs a configuration/],
    ["an IP as --sni", ["localhost", "--sni", "10.0.0.1"], /RFC 6066/],
    ["an unknown flag", ["localhost", "--verify"], /unknown flag --verify/],
    ["a bad --format", ["localhost", "--format", "yaml"], /--format/],
  ];
  for (const [what, args, message] of cases) {
    it(what, async () => {
      const { code, stdout, stderr } = await inspect(args);
      assert.equal(code, 2, stdout + stderr);
      assert.equal(stdout, "");
      assert.match(stderr, message);
    });
  }

  it("a client key that does not match the certificate", async () => {
    const a = pki.leaf({ ca, cn: "a" });
    const b = pki.leaf({ ca, cn: "b" });
    const { code, stderr } = await inspect(["localhost", "--cert", a.certFile, "--key", b.keyFile]);
    assert.equal(code, 2);
    assert.match(stderr, /--cert .* \/ --key/);
  });

  it("an entry point that cannot be chosen", async () => {
    const config = path.join(dir, "two-entrypoints.yml");
    writeFileSync(
      config,
      `entryPoints:\n  a: { address: "127.0.0.1:1" }\n  b: { address: "127.0.0.1:2" }\ntcp:\n  routers:\n    r: { rule: "HostSNI(\`*\`)", service: s, tls: {} }\n  services:\n    s: { loadBalancer: { servers: [{ address: "whoami@internal" }] } }\n`,
    );
    const port = await freePort();
    const { code, stderr } = await inspect([`127.0.0.1:${port}`, "-c", config]);
    assert.equal(code, 2, "decided before dialing (the port is closed: dialing would give 1)");
    assert.match(
      stderr,
      /no entry point listens on port \d+ and there are 2; say which one with --entrypoint/,
    );
    const named = await inspect([`127.0.0.1:${port}`, "-c", config, "--entrypoint", "c"]);
    assert.equal(named.code, 2);
    assert.match(named.stderr, /entry point "c" does not exist/);
  });
});
