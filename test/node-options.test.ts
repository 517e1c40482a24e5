/**
 * TLS options mapped to node:tls settings, checked with real handshakes on loopback: the server is
 * configured from a parsed tlsroute configuration and `openssl s_client` is the client.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, type Server } from "node:tls";
import { loadConfig } from "../src/config/load.ts";
import { nodeTlsSettings } from "../src/tls/node-options.ts";
import { makePki } from "./helpers/pki.ts";

const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-node-options-"));
const pki = makePki(dir);
const ca = pki.ca("Test CA");
const leaf = pki.leaf({ ca, cn: "db.example.test", dns: ["db.example.test"] });

function optionsFrom(yaml: string, name: string) {
  const file = path.join(dir, `${name}.yml`);
  writeFileSync(file, yaml);
  const { model, diagnostics } = loadConfig([file]);
  assert.deepEqual(diagnostics, []);
  return nodeTlsSettings(model.tlsOptions.get(name) ?? null);
}

function serve(settings: ReturnType<typeof nodeTlsSettings>): Promise<{ server: Server; port: number }> {
  const server = createServer(
    {
      key: leaf.keyPem,
      cert: leaf.certPem,
      minVersion: settings.minVersion,
      maxVersion: settings.maxVersion,
      ciphers: settings.ciphers,
      ...(settings.ecdhCurve ? { ecdhCurve: settings.ecdhCurve } : {}),
      ALPNProtocols: settings.alpnProtocols,
    },
    (socket) => socket.end("hello\n"),
  );
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port })),
  );
}

/** Runs openssl s_client and returns what it printed (async: the server runs in this process). */
async function sClient(port: number, args: string[]): Promise<string> {
  const { spawn } = await import("node:child_process");
  return new Promise((resolve) => {
    const child = spawn(
      "openssl",
      [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        "-servername",
        "db.example.test",
        "-CAfile",
        ca.certFile,
        ...args,
      ],
      {
        stdio: ["pipe", "pipe", "pipe"],
      },
    );
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.stdin.end();
    child.on("close", () => resolve(out));
  });
}

describe("TLS options on a real handshake", () => {
  const servers: Server[] = [];
  after(() => {
    for (const s of servers) s.close();
  });
  before(() => {
    assert.equal(spawnSync("openssl", ["version"]).status, 0, "openssl is needed for these tests");
  });

  it("built-in default: TLS 1.2 minimum, TLS 1.3 negotiated", async () => {
    const { server, port } = await serve(nodeTlsSettings(null));
    servers.push(server);
    assert.match(await sClient(port, []), /New, TLSv1\.3, Cipher is /);
    assert.match(
      await sClient(port, ["-tls1_1"]),
      /no protocols available|alert protocol version|wrong version/i,
    );
  });

  it("minVersion VersionTLS13 refuses a TLS 1.2 client", async () => {
    const settings = optionsFrom("tls:\n  options:\n    modern:\n      minVersion: VersionTLS13\n", "modern");
    assert.equal(settings.minVersion, "TLSv1.3");
    const { server, port } = await serve(settings);
    servers.push(server);
    assert.match(await sClient(port, ["-tls1_2"]), /alert protocol version/i);
    assert.match(await sClient(port, ["-tls1_3"]), /New, TLSv1\.3, Cipher is /);
  });

  it("cipherSuites limit TLS 1.2 suites and keep TLS 1.3 working", async () => {
    const settings = optionsFrom(
      "tls:\n  options:\n    one:\n      cipherSuites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n",
      "one",
    );
    const { server, port } = await serve(settings);
    servers.push(server);
    assert.match(await sClient(port, ["-tls1_2"]), /New, TLSv1\.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384/);
    assert.match(
      await sClient(port, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]),
      /alert handshake failure|no shared cipher/i,
    );
    assert.match(await sClient(port, ["-tls1_3"]), /New, TLSv1\.3, Cipher is /);
  });

  it("curvePreferences pick the key exchange group", async () => {
    const settings = optionsFrom(
      "tls:\n  options:\n    p384:\n      curvePreferences: [CurveP384]\n",
      "p384",
    );
    assert.equal(settings.ecdhCurve, "P-384");
    const { server, port } = await serve(settings);
    servers.push(server);
    assert.match(await sClient(port, ["-tls1_2"]), /Server Temp Key: ECDH, (secp384r1|P-384)/);
  });

  it("client auth types map to request/verify flags", () => {
    const yaml = (type: string) =>
      `tls:\n  options:\n    m:\n      clientAuth:\n        caFiles: [${JSON.stringify(ca.certFile)}]\n        clientAuthType: ${type}\n`;
    assert.deepEqual(
      [
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
      ].map((t) => {
        const s = optionsFrom(yaml(t), "m");
        return [s.clientAuth, s.requestCert, s.rejectUnauthorized];
      }),
      [
        ["RequestClientCert", true, false],
        ["RequireAnyClientCert", true, false],
        ["VerifyClientCertIfGiven", true, false],
        ["RequireAndVerifyClientCert", true, true],
      ],
    );
    // caFiles without a type: Traefik requires and verifies.
    const implicit = optionsFrom(
      `tls:\n  options:\n    m:\n      clientAuth:\n        caFiles: [${JSON.stringify(ca.certFile)}]\n`,
      "m",
    );
    assert.equal(implicit.clientAuth, "RequireAndVerifyClientCert");
  });
});
