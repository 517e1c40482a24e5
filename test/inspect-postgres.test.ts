/**
 * `tlsroute inspect --starttls postgres|postgres-direct` against real PostgreSQL servers on loopback:
 * one with `ssl=on` and a certificate from a throwaway CA, one with `ssl=off`, and `tlsroute serve`
 * in front of them (termination and passthrough) for the comparison with `-c`. The built CLI runs as
 * a subprocess: run `npm run build` first when running this file on its own.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type CliResult, parseJsonOutput, runCliAsync } from "./helpers/cli.ts";
import { type IssuedCert, makePki, type TestCa } from "./helpers/pki.ts";
import { type PostgresServer, postgresMajor, postgresSkip, startPostgres } from "./helpers/postgres.ts";
import { type LogLine, type ServeProcess, startServe } from "./helpers/serve.ts";

const HOST = "127.0.0.1";
const PG_NAME = "pg.test.localhost";
const TERM_NAME = "db.test.localhost";

interface InspectJson {
  ok: boolean;
  localAddress: string | null;
  sni: string | null;
  alpnOffered: string[];
  postgres: { mode: "starttls" | "direct"; answer: string | null } | null;
  tls: { version: string | null; cipher: string | null; alpn: string | null } | null;
  certificate: { subject: string; issuer: string; sans: string[]; fingerprint256: string } | null;
  chain: { subject: string }[];
  verification: { ok: boolean; error: string | null; hostnameMatch: boolean; name: string } | null;
  timings: { connectMs: number | null; startTlsMs: number | null; handshakeMs: number | null };
  error: { stage: string; code: string; summary: string; hint: string | null } | null;
  route: {
    matched: boolean;
    router: string | null;
    mode: string | null;
    postgres: string[] | null;
    facts: { postgres: boolean };
  } | null;
}

function inspect(args: string[]): Promise<CliResult> {
  return runCliAsync(["inspect", ...args]);
}

async function inspectJson(args: string[]): Promise<CliResult & { json: InspectJson }> {
  return parseJsonOutput<InspectJson>(await inspect([...args, "--format", "json"]));
}

/** The SHA-256 fingerprint as `openssl x509` prints it (AA:BB:…). */
function opensslFingerprint(file: string): string {
  return execFileSync("openssl", ["x509", "-in", file, "-noout", "-fingerprint", "-sha256"], {
    encoding: "utf8",
  })
    .trim()
    .replace(/^sha256 Fingerprint=/i, "");
}

interface World {
  dir: string;
  ca: TestCa;
  proxyCa: TestCa;
  serverCert: IssuedCert;
  proxyCert: IssuedCert;
  tlsPg: PostgresServer;
  plainPg: PostgresServer;
  serve: ServeProcess;
  servePort: number;
  configFile: string;
}

const w = {} as World;

describe("inspect --starttls against real PostgreSQL servers", () => {
  before(async () => {
    assert.equal(postgresSkip, false, `cannot run PostgreSQL: ${postgresSkip}; .ci/run installs postgresql`);
    w.dir = mkdtempSync(path.join(tmpdir(), "tlsroute-inspect-pg-"));
    const pki = makePki(path.join(w.dir, "pki"));
    w.ca = pki.ca("pg-ca");
    w.proxyCa = pki.ca("proxy-ca");
    w.serverCert = pki.leaf({ ca: w.ca, cn: PG_NAME, dns: [PG_NAME], ips: [HOST] });
    w.proxyCert = pki.leaf({ ca: w.proxyCa, cn: TERM_NAME, dns: [TERM_NAME] });
    [w.tlsPg, w.plainPg] = await Promise.all([
      startPostgres({ ssl: { certFile: w.serverCert.chainFile, keyFile: w.serverCert.keyFile } }),
      startPostgres(),
    ]);
    w.configFile = path.join(w.dir, "tlsroute.json");
    const backend = (pgServer: PostgresServer) => ({
      loadBalancer: { servers: [{ address: `${HOST}:${pgServer.port}` }] },
    });
    writeFileSync(
      w.configFile,
      JSON.stringify({
        entryPoints: { pg: { address: `${HOST}:0` } },
        tcp: {
          routers: {
            term: { rule: `HostSNI(\`${TERM_NAME}\`)`, service: "tls-pg", tls: {} },
            pass: { rule: `HostSNI(\`${PG_NAME}\`)`, service: "tls-pg", tls: { passthrough: true } },
          },
          services: { "tls-pg": backend(w.tlsPg) },
        },
        tls: { certificates: [{ certFile: w.proxyCert.chainFile, keyFile: w.proxyCert.keyFile }] },
      }),
    );
    w.serve = await startServe(["-c", w.configFile, "--entrypoint", `pg=${HOST}:0`]);
    w.servePort = w.serve.ports.get("pg") ?? 0;
  });

  after(async () => {
    await w.serve?.stop();
    w.tlsPg?.stop();
    w.plainPg?.stop();
    if (w.dir) rmSync(w.dir, { recursive: true, force: true });
  });

  it("ssl=on: the SSLRequest is answered S and the server's certificate is reported; exit 0 with --ca", async () => {
    const { code, json } = await inspectJson([
      `${HOST}:${w.tlsPg.port}`,
      "--starttls",
      "postgres",
      "--ca",
      w.ca.certFile,
    ]);
    assert.equal(code, 0, JSON.stringify(json.error));
    assert.equal(json.ok, true);
    assert.deepEqual(json.postgres, { mode: "starttls", answer: "S" });
    assert.equal(json.sni, null, "no SNI for an IP address");
    assert.ok((json.timings.startTlsMs ?? -1) >= 0);
    assert.match(String(json.tls?.version), /^TLSv1\.[23]$/);
    assert.equal(json.certificate?.subject, `CN=${PG_NAME}`);
    assert.deepEqual(json.certificate?.sans, [PG_NAME, HOST]);
    assert.equal(json.certificate?.fingerprint256, opensslFingerprint(w.serverCert.certFile));
    assert.equal(json.certificate?.issuer, "CN=pg-ca");
    // The IP SAN covers the address we dialed.
    assert.deepEqual(
      { ok: json.verification?.ok, name: json.verification?.name, match: json.verification?.hostnameMatch },
      { ok: true, name: HOST, match: true },
    );
    const text = await inspect([
      `${HOST}:${w.tlsPg.port}`,
      "--starttls",
      "postgres",
      "--sni",
      PG_NAME,
      "--ca",
      w.ca.certFile,
    ]);
    assert.equal(text.code, 0, text.stdout);
    assert.match(text.stdout, /^PostgreSQL {4}SSLRequest answered S \(/m);
    assert.match(text.stdout, new RegExp(`^Certificate {3}CN=${PG_NAME.replaceAll(".", "\\.")}$`, "m"));
    assert.match(text.stdout, /^Result {8}✔ handshake and verification succeeded$/m);
  });

  it("ssl=on without --ca: the handshake works, the chain is not trusted, exit 1", async () => {
    const { code, json } = await inspectJson([`${HOST}:${w.tlsPg.port}`, "--starttls", "postgres"]);
    assert.equal(code, 1);
    assert.deepEqual(json.postgres, { mode: "starttls", answer: "S" });
    assert.equal(json.certificate?.subject, `CN=${PG_NAME}`);
    assert.equal(json.verification?.ok, false);
    assert.match(
      String(json.verification?.error),
      /UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN/,
    );
  });

  it("ssl=off: the answer N is reported clearly, exit 1", async () => {
    const { code, json } = await inspectJson([`${HOST}:${w.plainPg.port}`, "--starttls", "postgres"]);
    assert.equal(code, 1);
    assert.equal(json.ok, false);
    assert.deepEqual(json.postgres, { mode: "starttls", answer: "N" });
    assert.equal(json.tls, null);
    assert.equal(json.certificate, null);
    assert.equal(json.error?.stage, "starttls");
    assert.equal(json.error?.code, "postgres_ssl_refused");
    const text = await inspect([`${HOST}:${w.plainPg.port}`, "--starttls", "postgres"]);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /^PostgreSQL {4}SSLRequest answered N/m);
    assert.match(
      text.stdout,
      /^Result {8}✖ the server answered "N" to the SSLRequest: it does not accept TLS connections$/m,
    );
    assert.match(text.stdout, /PostgreSQL with ssl=off answers N/);
  });

  it("postgres-direct against this server: direct TLS needs PostgreSQL 17; before that it fails, exit 1", async () => {
    const { code, json } = await inspectJson([
      `${HOST}:${w.tlsPg.port}`,
      "--starttls",
      "postgres-direct",
      "--ca",
      w.ca.certFile,
      "--timeout",
      "5s",
    ]);
    assert.deepEqual(json.postgres, { mode: "direct", answer: null });
    assert.deepEqual(json.alpnOffered, ["postgresql"]);
    if (postgresMajor() >= 17) {
      assert.equal(code, 0, JSON.stringify(json.error));
      assert.equal(json.tls?.alpn, "postgresql");
    } else {
      assert.equal(code, 1);
      assert.equal(json.tls, null);
      assert.equal(json.error?.stage, "handshake");
      assert.ok(json.error?.summary, "the failure is described");
    }
  });

  it("through serve with -c: termination shows our certificate, passthrough the server's, as the access log says", async () => {
    const accessLine = (local: string | null): Promise<LogLine> => {
      assert.ok(local);
      return w.serve.waitFor((l) => l.msg === "connection" && l.client === local, 10_000);
    };
    const term = await inspectJson([
      `${HOST}:${w.servePort}`,
      "--starttls",
      "postgres",
      "--sni",
      TERM_NAME,
      "--ca",
      w.proxyCa.certFile,
      "-c",
      w.configFile,
    ]);
    assert.equal(term.code, 0, JSON.stringify(term.json.error));
    assert.equal(term.json.certificate?.fingerprint256, opensslFingerprint(w.proxyCert.certFile));
    assert.equal(term.json.tls?.alpn, "postgresql");
    assert.equal(term.json.route?.router, "term");
    assert.equal(term.json.route?.facts.postgres, true);
    const termLine = await accessLine(term.json.localAddress);
    assert.equal(termLine.router, "term");
    assert.equal(termLine.postgres, "sslrequest");

    const pass = await inspectJson([
      `${HOST}:${w.servePort}`,
      "--starttls",
      "postgres",
      "--sni",
      PG_NAME,
      "--ca",
      w.ca.certFile,
      "-c",
      w.configFile,
    ]);
    assert.equal(pass.code, 0, JSON.stringify(pass.json.error));
    // The server's own certificate: tlsroute asked it for TLS with its own SSLRequest and relayed.
    assert.equal(pass.json.certificate?.fingerprint256, opensslFingerprint(w.serverCert.certFile));
    assert.equal(pass.json.tls?.alpn, null, "PostgreSQL 15 does not negotiate ALPN");
    assert.equal(pass.json.route?.router, "pass");
    assert.equal(pass.json.route?.mode, "passthrough");
    assert.ok((pass.json.route?.postgres ?? []).some((s) => s.includes("sends its own SSLRequest")));
    const passLine = await accessLine(pass.json.localAddress);
    assert.equal(passLine.router, "pass");
    assert.equal(passLine.mode, "passthrough");
    assert.equal(passLine.postgres, "sslrequest");
  });
});
