/**
 * The generated default certificate, checked by independent readers (node:crypto, the openssl CLI, the
 * project's own certificate reader) and by real TLS handshakes on loopback.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, createServer, type Server } from "node:tls";
import { certificateInfo, checkKeyMatches } from "../src/tls/certificate.ts";
import {
  describeGenerated,
  GENERATED_CERT_CN,
  type GeneratedCertificate,
  generateDefaultCertificate,
} from "../src/tls/generated.ts";

const DAY_MS = 86_400_000;
const SAN_PATTERN = /^[0-9a-f]{32}\.[0-9a-f]{32}\.tlsroute\.default$/;
const SERVER_AUTH_OID = "1.3.6.1.5.5.7.3.1";

const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-generated-"));

function writePem(cert: GeneratedCertificate, name: string): { certFile: string; keyFile: string } {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  writeFileSync(certFile, cert.certPem);
  writeFileSync(keyFile, cert.keyPem);
  return { certFile, keyFile };
}

function openssl(args: string[]): string {
  const result = spawnSync("openssl", args, { encoding: "utf8" });
  assert.equal(result.status, 0, `openssl ${args.join(" ")} failed: ${result.stderr}`);
  return result.stdout;
}

function onlySan(cert: GeneratedCertificate): string {
  assert.equal(cert.dnsNames.length, 1);
  return cert.dnsNames[0] ?? "";
}

/** A TLS server on 127.0.0.1:0 presenting `cert`, answering every connection with a greeting. */
function serve(cert: GeneratedCertificate): Promise<{ server: Server; port: number }> {
  const server = createServer({ key: cert.keyPem, cert: cert.certPem }, (socket) => socket.end("hello\n"));
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port })),
  );
}

/** openssl s_client against our in-process server (async, so the server can answer). */
function sClient(port: number, args: string[]): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.stdin.end();
    child.on("close", (status) => resolve({ status, output }));
  });
}

describe("generateDefaultCertificate", () => {
  let cert: GeneratedCertificate;
  let x509: X509Certificate;
  let generatedAt: number;

  before(async () => {
    assert.equal(spawnSync("openssl", ["version"]).status, 0, "openssl is needed for these tests");
    generatedAt = Date.now();
    cert = await generateDefaultCertificate();
    x509 = new X509Certificate(cert.certPem);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("node:crypto reads subject, SAN, EKU serverAuth, CA false and a P-256 key", () => {
    assert.equal(x509.subject, `CN=${GENERATED_CERT_CN}`);
    assert.equal(x509.issuer, `CN=${GENERATED_CERT_CN}`);
    assert.equal(cert.subject, "CN=TLSROUTE DEFAULT CERT");
    const san = onlySan(cert);
    assert.match(san, SAN_PATTERN);
    assert.equal(x509.subjectAltName, `DNS:${san}`);
    assert.deepEqual(x509.keyUsage, [SERVER_AUTH_OID]);
    assert.equal(x509.ca, false);
    assert.equal(x509.publicKey.asymmetricKeyType, "ec");
    assert.equal(x509.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.ok(x509.verify(x509.publicKey), "self-signed: its own key verifies the signature");
    assert.equal(x509.checkHost(san), san);
    assert.equal(x509.checkHost("example.com"), undefined);
  });

  it("is valid for one year from now, starting a minute early", () => {
    const notBefore = Date.parse(x509.validFrom);
    const notAfter = Date.parse(x509.validTo);
    // X.509 times have one-second resolution.
    assert.ok(Math.abs(notBefore - (generatedAt - 60_000)) < 5_000, `notBefore ${x509.validFrom}`);
    assert.ok(Math.abs(notAfter - (generatedAt + 365 * DAY_MS)) < 5_000, `notAfter ${x509.validTo}`);
    assert.ok(Math.abs(cert.notAfter.getTime() - notAfter) < 1_000);
  });

  it("takes its validity window from options.now", async () => {
    const now = new Date("2030-06-15T12:00:00Z");
    const fixed = await generateDefaultCertificate({ now });
    const parsed = new X509Certificate(fixed.certPem);
    assert.equal(new Date(parsed.validFrom).toISOString(), "2030-06-15T11:59:00.000Z");
    assert.equal(new Date(parsed.validTo).toISOString(), "2031-06-15T12:00:00.000Z");
    assert.equal(fixed.notAfter.toISOString(), "2031-06-15T12:00:00.000Z");
  });

  it("comes with its own PKCS#8 P-256 private key", () => {
    assert.match(cert.keyPem, /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/);
    const key = createPrivateKey(cert.keyPem);
    assert.equal(key.asymmetricKeyType, "ec");
    assert.equal(key.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.equal(x509.checkPrivateKey(key), true);
    const other = createPrivateKey(
      // A key from another generation must not match: the check above can fail.
      spawnSync("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], {
        encoding: "utf8",
      }).stdout,
    );
    assert.equal(x509.checkPrivateKey(other), false);
  });

  it("openssl x509 -text shows the same certificate", () => {
    const { certFile, keyFile } = writePem(cert, "text");
    const text = openssl(["x509", "-in", certFile, "-noout", "-text"]);
    assert.match(text, /Version: 3 \(0x2\)/);
    assert.match(text, /Subject: CN ?= ?TLSROUTE DEFAULT CERT\n/);
    assert.match(text, /Issuer: CN ?= ?TLSROUTE DEFAULT CERT\n/);
    assert.ok(text.includes(`DNS:${onlySan(cert)}`), text);
    assert.match(text, /X509v3 Extended Key Usage: *\n\s+TLS Web Server Authentication\n/);
    assert.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
    assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
    assert.match(text, /Public Key Algorithm: id-ecPublicKey/);
    assert.match(text, /ASN1 OID: prime256v1/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);

    const notBefore = Date.parse(text.match(/Not Before: (.+)\n/)?.[1] ?? "");
    const notAfter = Date.parse(text.match(/Not After : (.+)\n/)?.[1] ?? "");
    const days = (notAfter - notBefore) / DAY_MS;
    assert.ok(days > 365 && days < 365.01, `validity ${days} days`);

    // openssl agrees that the key belongs to the certificate.
    assert.equal(
      openssl(["pkey", "-in", keyFile, "-pubout"]),
      openssl(["x509", "-in", certFile, "-noout", "-pubkey"]),
    );
    assert.match(openssl(["verify", "-CAfile", certFile, "-purpose", "sslserver", certFile]), /: OK\n/);
  });

  it("is read by the project's own certificate reader like any store certificate", () => {
    const info = certificateInfo(x509);
    assert.equal(info.subjectCN, GENERATED_CERT_CN);
    assert.deepEqual(info.dnsNames, cert.dnsNames);
    assert.deepEqual(info.names, ["tlsroute default cert", onlySan(cert)]);
    assert.equal(info.selfSigned, true);
    assert.equal(info.isCA, false);
    assert.equal(info.keyType, "EC");
    assert.equal(info.curve, "prime256v1");
    assert.equal(info.signatureAlgorithm, "ecdsa-with-SHA256");
    assert.deepEqual(checkKeyMatches(cert.certPem, cert.keyPem), { ok: true, value: { keyType: "EC" } });
  });

  it("serves a real handshake to openssl s_client, whatever SNI it sends", async () => {
    const { server, port } = await serve(cert);
    try {
      const { certFile } = writePem(cert, "handshake");
      const { output } = await sClient(port, [
        "-servername",
        "unrelated.example",
        "-CAfile",
        certFile,
        "-verify_hostname",
        onlySan(cert),
        "-verify_return_error",
        // Keep reading after stdin's EOF, until the server has sent its greeting and closed.
        "-ign_eof",
      ]);
      // -verify_return_error aborts the handshake on a failed check, so the greeting proves it succeeded.
      // (The exit status is not checked: node:tls closes without close_notify, which openssl 3 reports.)
      assert.match(output, /subject=CN ?= ?TLSROUTE DEFAULT CERT/);
      assert.match(output, /Peer signature type: ECDSA/);
      assert.match(output, /Verify return code: 0 \(ok\)/);
      assert.match(output, /\nhello\n/);

      // Without trusting it, the client sees exactly what it is: a self-signed certificate.
      const untrusted = await sClient(port, ["-noservername"]);
      assert.match(untrusted.output, /subject=CN ?= ?TLSROUTE DEFAULT CERT/);
      assert.match(untrusted.output, /Verify return code: 18 \(self[- ]signed certificate\)/);
    } finally {
      server.close();
    }
  });

  it("can be pinned by a node:tls client that trusts it", async () => {
    const { server, port } = await serve(cert);
    try {
      const result = await new Promise<{ authorized: boolean; cn: unknown; data: string }>(
        (resolve, reject) => {
          const socket = connect({ host: "127.0.0.1", port, servername: onlySan(cert), ca: cert.certPem });
          let data = "";
          socket.setEncoding("utf8");
          socket.on("data", (chunk: string) => (data += chunk));
          socket.on("error", reject);
          socket.on("end", () =>
            resolve({ authorized: socket.authorized, cn: socket.getPeerCertificate().subject?.CN, data }),
          );
        },
      );
      assert.deepEqual(result, { authorized: true, cn: GENERATED_CERT_CN, data: "hello\n" });
    } finally {
      server.close();
    }
  });

  it("gives a new key, serial and SAN on every call", async () => {
    const second = await generateDefaultCertificate();
    const other = new X509Certificate(second.certPem);
    assert.notEqual(onlySan(second), onlySan(cert));
    assert.match(onlySan(second), SAN_PATTERN);
    assert.notEqual(other.serialNumber, x509.serialNumber);
    assert.notEqual(second.keyPem, cert.keyPem);
    assert.equal(x509.checkPrivateKey(createPrivateKey(second.keyPem)), false);
    // Serials are 16 octets, positive, without a leading zero octet: the first hex digit is 4-7. Eight
    // more certificates make a serial that breaks this pattern (half of all random values) show up.
    const more = await Promise.all(Array.from({ length: 8 }, () => generateDefaultCertificate()));
    const serials = [cert, second, ...more].map((c) => new X509Certificate(c.certPem).serialNumber);
    for (const serial of serials) assert.match(serial, /^[4-7][0-9A-F]{31}$/i);
    assert.equal(new Set(serials).size, serials.length);
    assert.equal(new Set([cert, second, ...more].map(onlySan)).size, serials.length);
  });

  it("describeGenerated names the SAN, the expiry and the fingerprint", () => {
    const line = describeGenerated(cert);
    assert.ok(line.includes(`DNS:${onlySan(cert)}`), line);
    assert.ok(line.includes(cert.notAfter.toISOString()), line);
    assert.ok(line.includes(x509.fingerprint256), line);
    assert.ok(line.includes("CN=TLSROUTE DEFAULT CERT"), line);
    assert.ok(line.includes("ECDSA P-256"), line);
  });

  it("is quick to generate (measured, not asserted)", async (t) => {
    const timings: number[] = [];
    for (let i = 0; i < 5; i++) {
      const start = performance.now();
      await generateDefaultCertificate();
      timings.push(performance.now() - start);
    }
    t.diagnostic(`generation took ${timings.map((ms) => ms.toFixed(1)).join(", ")} ms`);
  });
});
