/**
 * The fast EC key check (src/tls/ec-key-check.ts) and how checkKeyMatches uses it: a yes only when
 * the private scalar really yields the certificate's public point, and for everything else the
 * OpenSSL path with its usual diagnostics.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { checkKeyMatches, checkLeafKey, parseCertificateChain } from "../src/tls/certificate.ts";
import { ecKeyMatchesCertificate } from "../src/tls/ec-key-check.ts";

interface Pair {
  certPem: string;
  keyPem: string;
  der: Uint8Array;
}

let dir = "";

/** A self-signed certificate and its key (PKCS#8 PEM, as `openssl req -newkey` writes it). */
function selfSigned(name: string, keyArgs: string[]): Pair {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      ...keyArgs,
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "30",
      "-subj",
      `/CN=${name}.test`,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const certPem = readFileSync(cert, "utf8");
  return {
    certPem,
    keyPem: readFileSync(key, "utf8"),
    der: new Uint8Array(new X509Certificate(certPem).raw),
  };
}

const ec = (curve: string) => ["-newkey", "ec", "-pkeyopt", `ec_paramgen_curve:${curve}`];

/** The key as SEC 1 ("EC PRIVATE KEY"), which is what `openssl ecparam -genkey` and older tools write. */
function sec1(keyPem: string): string {
  return createPrivateKey(keyPem).export({ type: "sec1", format: "pem" }).toString();
}

function pemOf(type: string, der: Uint8Array): string {
  const base64 = Buffer.from(der).toString("base64");
  return `-----BEGIN ${type}-----\n${base64.match(/.{1,64}/g)?.join("\n")}\n-----END ${type}-----\n`;
}

function derOf(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, ""), "base64");
}

/** Offset of the 65-byte uncompressed P-256 point inside a SEC 1 key's [1] BIT STRING (it ends the key). */
function pointOffset(sec1Der: Buffer): number {
  return sec1Der.length - 65;
}

let p256: Pair;
let p256b: Pair;
let p384: Pair;
let p521: Pair;
let rsa: Pair;
let ed: Pair;

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), "tlsroute-keycheck-"));
  p256 = selfSigned("p256", ec("P-256"));
  p256b = selfSigned("p256b", ec("P-256"));
  p384 = selfSigned("p384", ec("P-384"));
  p521 = selfSigned("p521", ec("P-521"));
  rsa = selfSigned("rsa", ["-newkey", "rsa:2048"]);
  ed = selfSigned("ed", ["-newkey", "ed25519"]);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("fast EC key check", () => {
  it("proves matching keys on P-256, P-384 and P-521, as PKCS#8 and as SEC 1", () => {
    for (const pair of [p256, p384, p521]) {
      assert.equal(ecKeyMatchesCertificate(pair.keyPem, pair.der), true);
      assert.equal(ecKeyMatchesCertificate(sec1(pair.keyPem), pair.der), true);
      assert.equal(ecKeyMatchesCertificate(pair.keyPem.replaceAll("\n", "\r\n"), pair.der), true);
    }
  });

  it("agrees with OpenSSL on every key/certificate combination", () => {
    const pairs = [p256, p256b, p384, p521, rsa, ed];
    for (const cert of pairs) {
      const x509 = new X509Certificate(cert.certPem);
      for (const key of pairs) {
        const fast = ecKeyMatchesCertificate(key.keyPem, cert.der);
        const openssl = x509.checkPrivateKey(createPrivateKey(key.keyPem));
        // RSA and Ed25519 are never decided here: they take the OpenSSL path.
        const decidable = key !== rsa && key !== ed;
        assert.equal(fast, decidable && openssl, `${key.keyPem.slice(0, 40)} vs ${x509.subject}`);
      }
    }
  });

  it("does not trust a public point carried in the key file", () => {
    // The right scalar with another key's point: Go ignores the point (and accepts); OpenSSL compares
    // the point (and refuses). Not decided here, so the answer stays OpenSSL's, as before.
    const own = derOf(sec1(p256.keyPem));
    const other = derOf(sec1(p256b.keyPem));
    const forged = Buffer.from(own);
    other.copy(forged, pointOffset(forged), pointOffset(other));
    const forgedPem = pemOf("EC PRIVATE KEY", forged);
    assert.equal(ecKeyMatchesCertificate(forgedPem, p256.der), false);
    const result = checkKeyMatches(p256.certPem, forgedPem);
    assert.ok(!result.ok && result.code === "key-mismatch", JSON.stringify(result));

    // Another scalar with this certificate's point: the derived point differs, so no fast yes either.
    const borrowed = Buffer.from(other);
    own.copy(borrowed, pointOffset(borrowed), pointOffset(own));
    assert.equal(ecKeyMatchesCertificate(pemOf("EC PRIVATE KEY", borrowed), p256.der), false);
  });

  it("leaves unusual encodings to OpenSSL", () => {
    const der = derOf(p256.keyPem);
    // PEM headers, a blank line inside, trailing bytes, a non-minimal length.
    const withHeader = p256.keyPem.replace("-----\n", "-----\nComment: x\n\n");
    assert.equal(ecKeyMatchesCertificate(withHeader, p256.der), false);
    const blank = p256.keyPem.replace(/\n(?=[^\n]*\n-----END)/, "\n\n");
    assert.equal(ecKeyMatchesCertificate(blank, p256.der), false);
    assert.equal(
      ecKeyMatchesCertificate(pemOf("PRIVATE KEY", Buffer.concat([der, Buffer.from([0])])), p256.der),
      false,
    );
    const long = Buffer.concat([Buffer.from([0x30, 0x81, der[1] ?? 0]), der.subarray(2)]);
    assert.equal(ecKeyMatchesCertificate(pemOf("PRIVATE KEY", long), p256.der), false);
    // A scalar equal to the group order (not a valid private key).
    const order = Buffer.from("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", "hex");
    const sec = derOf(sec1(p256.keyPem));
    const scalarAt = sec.indexOf(Buffer.from([0x04, 0x20])) + 2;
    order.copy(sec, scalarAt);
    assert.equal(ecKeyMatchesCertificate(pemOf("EC PRIVATE KEY", sec), p256.der), false);
    // Not a key at all.
    assert.equal(ecKeyMatchesCertificate(p256.certPem, p256.der), false);
  });

  it("gives the catalog the same answers through checkLeafKey as checkKeyMatches gives", () => {
    const [leaf] = parseCertificateChain(p256.certPem).ok
      ? (parseCertificateChain(p256.certPem) as { value: Parameters<typeof checkLeafKey>[0][] }).value
      : [];
    assert.ok(leaf);
    for (const key of [p256.keyPem, sec1(p256.keyPem), p256b.keyPem, rsa.keyPem, "", p256.certPem]) {
      assert.deepEqual(checkLeafKey(leaf, key), checkKeyMatches(p256.certPem, key));
    }
    assert.deepEqual(checkLeafKey(leaf, p256.keyPem), { ok: true, value: { keyType: "EC" } });
    const wrong = checkLeafKey(leaf, p256b.keyPem);
    assert.ok(!wrong.ok && wrong.code === "key-mismatch");
    assert.match(
      wrong.message,
      /^the private key \(EC\) does not belong to the certificate CN=p256\.test \(its public key is a different EC key\)$/,
    );
  });
});
