import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { closestName } from "../src/text/suggest.ts";
import {
  type CertificateInfo,
  certificateInfo,
  checkKeyMatches,
  expiryStatus,
  goIpString,
  parseCaBundle,
  parseCertificateChain,
  parseDistinguishedName,
  parseSubjectAltName,
} from "../src/tls/certificate.ts";
import {
  CIPHER_SUITE_NAMES,
  CIPHER_SUITES,
  CLIENT_AUTH_TYPES,
  CURVES,
  cipherSuite,
  cipherSuiteByOpenSslName,
  curve,
  DEFAULT_ALPN_PROTOCOLS,
  DEFAULT_CIPHER_SUITES,
  effectiveClientAuthType,
  isTlsVersionName,
  looseCurve,
  looseTlsVersion,
  TLS_VERSIONS,
  TRAEFIK_DEFAULT_ALPN_PROTOCOLS,
  tlsVersionFromNode,
} from "../src/tls/names.ts";
import { classifyPemValue, readPem, resolvePemSource } from "../src/tls/pem.ts";
import {
  availableOpenSslCiphers,
  currentRuntime,
  ignoredTlsSettings,
  isEcdhGroupSupported,
  missingCipherSuites,
  runtimeTlsSupport,
} from "../src/tls/runtime-support.ts";
import {
  type CertificateChoice,
  CertificateIndex,
  certificateKey,
  chooseCertificate,
  compareCodePoints,
  type StoreCertificate,
  wildcardOf,
} from "../src/tls/select.ts";
import { type IssuedCert, makePki, type Pki, type TestCa } from "./helpers/pki.ts";

const DAY = 86_400_000;

function openssl(args: string[]): string {
  return execFileSync("openssl", args, { encoding: "utf8" });
}

function must<T>(result: { ok: true; value: T } | { ok: false; code: string; message: string }): T {
  if (!result.ok) assert.fail(`expected success, got ${result.code}: ${result.message}`);
  return result.value;
}

// ---------------------------------------------------------------------------------------------------------------

describe("names: TLS versions", () => {
  it("maps Traefik names to node:tls names with an order", () => {
    assert.equal(TLS_VERSIONS.VersionTLS10.node, "TLSv1");
    assert.equal(TLS_VERSIONS.VersionTLS11.node, "TLSv1.1");
    assert.equal(TLS_VERSIONS.VersionTLS12.node, "TLSv1.2");
    assert.equal(TLS_VERSIONS.VersionTLS13.node, "TLSv1.3");
    assert.ok(TLS_VERSIONS.VersionTLS12.order < TLS_VERSIONS.VersionTLS13.order);
    assert.equal(TLS_VERSIONS.VersionTLS13.wire, 0x0304);
    assert.equal(tlsVersionFromNode("TLSv1.2"), "VersionTLS12");
    assert.equal(tlsVersionFromNode("SSLv3"), undefined);
  });

  it("accepts only the exact, case-sensitive names", () => {
    assert.ok(isTlsVersionName("VersionTLS12"));
    assert.ok(!isTlsVersionName("versiontls12"));
    assert.ok(!isTlsVersionName("TLSv1.2"));
    assert.ok(!isTlsVersionName("toString"));
  });

  it("recognises spellings from other tools, for hints", () => {
    assert.equal(looseTlsVersion("TLSv1.2"), "VersionTLS12");
    assert.equal(looseTlsVersion("tls1_3"), "VersionTLS13");
    assert.equal(looseTlsVersion("1.1"), "VersionTLS11");
    assert.equal(looseTlsVersion("TLSv1"), "VersionTLS10");
    assert.equal(looseTlsVersion("versiontls13"), "VersionTLS13");
    assert.equal(looseTlsVersion("TLS 1.4"), undefined);
    assert.equal(looseTlsVersion("modern"), undefined);
  });
});

describe("names: cipher suites", () => {
  it("has every name of the reference table with its IANA id and OpenSSL name", () => {
    assert.equal(CIPHER_SUITE_NAMES.length, 28);
    const spot: Array<[string, number, string | null]> = [
      ["TLS_RSA_WITH_RC4_128_SHA", 0x0005, "RC4-SHA"],
      ["TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000a, "DES-CBC3-SHA"],
      ["TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009c, "AES128-GCM-SHA256"],
      ["TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xc00a, "ECDHE-ECDSA-AES256-SHA"],
      ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f, "ECDHE-RSA-AES128-GCM-SHA256"],
      ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c, "ECDHE-ECDSA-AES256-GCM-SHA384"],
      ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca9, "ECDHE-ECDSA-CHACHA20-POLY1305"],
      ["TLS_CHACHA20_POLY1305_SHA256", 0x1303, "TLS_CHACHA20_POLY1305_SHA256"],
      ["TLS_FALLBACK_SCSV", 0x5600, null],
    ];
    for (const [name, id, opensslName] of spot) {
      const suite = cipherSuite(name);
      assert.ok(suite, name);
      assert.equal(suite.id, id, name);
      assert.equal(suite.openssl, opensslName, name);
    }
    assert.equal(cipherSuite("toString"), undefined);
    assert.equal(cipherSuite("tls_aes_128_gcm_sha256"), undefined, "names are case-sensitive");
  });

  it("lists the default suites in Go's order, all known, none insecure", () => {
    assert.equal(DEFAULT_CIPHER_SUITES.length, 13);
    assert.deepEqual(DEFAULT_CIPHER_SUITES.slice(0, 3), [
      "TLS_AES_128_GCM_SHA256",
      "TLS_AES_256_GCM_SHA384",
      "TLS_CHACHA20_POLY1305_SHA256",
    ]);
    assert.equal(DEFAULT_CIPHER_SUITES.at(-1), "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");
    for (const name of DEFAULT_CIPHER_SUITES) {
      const suite = CIPHER_SUITES[name];
      assert.ok(suite?.inGoDefault, name);
      assert.ok(!suite.insecure, name);
    }
    const flagged = Object.values(CIPHER_SUITES).filter((s) => s.inGoDefault);
    assert.equal(flagged.length, DEFAULT_CIPHER_SUITES.length);
  });

  it("maps legacy CHACHA aliases to the same suite", () => {
    for (const kind of ["RSA", "ECDSA"]) {
      const legacy = CIPHER_SUITES[`TLS_ECDHE_${kind}_WITH_CHACHA20_POLY1305`];
      const current = CIPHER_SUITES[`TLS_ECDHE_${kind}_WITH_CHACHA20_POLY1305_SHA256`];
      assert.ok(legacy && current);
      assert.equal(legacy.id, current.id);
      assert.equal(legacy.openssl, current.openssl);
      assert.equal(legacy.aliasOf, current.name);
      assert.ok(!legacy.inGoDefault && current.inGoDefault);
    }
  });

  it("flags TLS 1.3 and insecure suites", () => {
    const tls13 = Object.values(CIPHER_SUITES)
      .filter((s) => s.tls13)
      .map((s) => s.name);
    assert.deepEqual(tls13.sort(), [
      "TLS_AES_128_GCM_SHA256",
      "TLS_AES_256_GCM_SHA384",
      "TLS_CHACHA20_POLY1305_SHA256",
    ]);
    for (const name of [
      "TLS_RSA_WITH_RC4_128_SHA",
      "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
      "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
      "TLS_RSA_WITH_AES_256_GCM_SHA384",
    ]) {
      assert.ok(CIPHER_SUITES[name]?.insecure, name);
    }
    assert.ok(!CIPHER_SUITES.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA?.insecure);
  });

  it("finds the Go name for an OpenSSL name, preferring the current spelling", () => {
    assert.equal(
      cipherSuiteByOpenSslName("ecdhe-rsa-aes128-gcm-sha256")?.name,
      "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    );
    assert.equal(
      cipherSuiteByOpenSslName("ECDHE-RSA-CHACHA20-POLY1305")?.name,
      "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    );
    assert.equal(cipherSuiteByOpenSslName("NULL-MD5"), undefined);
  });

  it("knows which OpenSSL names this build offers", () => {
    const available = availableOpenSslCiphers();
    for (const name of DEFAULT_CIPHER_SUITES) {
      const opensslName = CIPHER_SUITES[name]?.openssl;
      assert.ok(opensslName && available.has(opensslName), `${opensslName} missing from tls.getCiphers()`);
    }
    assert.deepEqual(
      missingCipherSuites(
        ["TLS_RSA_WITH_RC4_128_SHA", "TLS_FALLBACK_SCSV", "TLS_RSA_WITH_AES_128_CBC_SHA", "nope"],
        new Set(["AES128-SHA"]),
      ).map((s) => s.name),
      ["TLS_RSA_WITH_RC4_128_SHA"],
    );
  });
});

describe("names: curves, client auth, ALPN", () => {
  it("accepts both spellings of each group and nothing else", () => {
    assert.equal(CURVES.secp256r1, CURVES.CurveP256);
    assert.equal(CURVES.x25519, CURVES.X25519);
    assert.equal(CURVES.x25519mlkem768, CURVES.X25519MLKEM768);
    assert.equal(curve("CurveP384")?.id, 24);
    assert.equal(curve("secp521r1")?.openssl, "P-521");
    assert.equal(curve("X25519")?.id, 29);
    assert.equal(curve("SecP256r1MLKEM768")?.id, 4587);
    assert.equal(curve("X25519MLKEM768")?.id, 0x11ec);
    assert.equal(curve("secp384r1mlkem1024")?.id, 4589);
    assert.ok(curve("X25519MLKEM768")?.postQuantum);
    assert.ok(!curve("X25519")?.postQuantum);
    for (const rejected of ["P-256", "prime256v1", "X448", "ffdhe2048", "x25519MLKEM768", "constructor"]) {
      assert.equal(curve(rejected), undefined, rejected);
    }
    assert.equal(Object.keys(CURVES).length, 14);
  });

  it("suggests the accepted spelling for common alternatives", () => {
    assert.equal(looseCurve("P-256")?.goName, "CurveP256");
    assert.equal(looseCurve("prime256v1")?.goName, "CurveP256");
    assert.equal(looseCurve("p384")?.goName, "CurveP384");
    assert.equal(looseCurve("X25519")?.goName, "X25519");
    assert.equal(looseCurve("X448"), undefined);
  });

  it("probes which groups OpenSSL accepts", () => {
    assert.ok(isEcdhGroupSupported("P-256"));
    assert.ok(isEcdhGroupSupported("X25519"));
    assert.ok(!isEcdhGroupSupported("no-such-group"));
  });

  it("describes client auth types", () => {
    assert.deepEqual(CLIENT_AUTH_TYPES.NoClientCert, {
      requestCert: false,
      requireCert: false,
      verify: false,
      needsCaFiles: false,
    });
    assert.deepEqual(CLIENT_AUTH_TYPES.RequireAnyClientCert, {
      requestCert: true,
      requireCert: true,
      verify: false,
      needsCaFiles: false,
    });
    assert.deepEqual(CLIENT_AUTH_TYPES.VerifyClientCertIfGiven, {
      requestCert: true,
      requireCert: false,
      verify: true,
      needsCaFiles: true,
    });
    assert.ok(CLIENT_AUTH_TYPES.RequestClientCert.requestCert && !CLIENT_AUTH_TYPES.RequestClientCert.verify);
    assert.ok(CLIENT_AUTH_TYPES.RequireAndVerifyClientCert.requireCert);
    assert.equal(effectiveClientAuthType(undefined, false), "NoClientCert");
    assert.equal(effectiveClientAuthType("", true), "RequireAndVerifyClientCert");
    assert.equal(effectiveClientAuthType("RequestClientCert", true), "RequestClientCert");
    assert.equal(effectiveClientAuthType("requireandverifyclientcert", true), undefined);
  });

  it("has Traefik's default ALPN list and ours", () => {
    assert.deepEqual(TRAEFIK_DEFAULT_ALPN_PROTOCOLS, ["h2", "http/1.1", "acme-tls/1"]);
    assert.deepEqual(DEFAULT_ALPN_PROTOCOLS, ["h2", "http/1.1", "acme-tls/1", "postgresql"]);
  });
});

describe("runtime support", () => {
  it("records what each runtime ignores", () => {
    assert.equal(currentRuntime(), "node");
    const node = runtimeTlsSupport("node");
    assert.ok(node.tls12CipherSuites && node.tls13CipherSuites && node.curvePreferences);
    const bun = runtimeTlsSupport("bun");
    assert.ok(bun.tls12CipherSuites && !bun.tls13CipherSuites && !bun.dhparamAuto);
    const deno = runtimeTlsSupport("deno");
    assert.ok(!deno.tls12CipherSuites && !deno.curvePreferences && !deno.rejectsInvalidSettings);
    assert.ok(deno.versions && !deno.alpnRefusalAlert);
  });

  it("lists settings of an option that a runtime will not apply", () => {
    const option = {
      cipherSuites: ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", "bogus"],
      curvePreferences: ["CurveP384", "P-256"],
    };
    assert.deepEqual(ignoredTlsSettings("node", option), []);
    assert.deepEqual(ignoredTlsSettings("bun", option), []);
    const deno = ignoredTlsSettings("deno", option);
    assert.deepEqual(
      deno.map((d) => [d.setting, d.names]),
      [
        ["cipherSuites", ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]],
        ["curvePreferences", ["CurveP384"]],
      ],
    );
    assert.match(deno[0]?.message ?? "", /deno/);
    assert.deepEqual(ignoredTlsSettings("deno", {}), []);
  });
});

describe("closestName (src/text/suggest.ts)", () => {
  const versions = Object.keys(TLS_VERSIONS);
  it("prefers a case-insensitive exact match", () => {
    assert.equal(closestName("versiontls12", versions), "VersionTLS12");
    assert.equal(closestName("CURVEP256", ["CurveP256", "CurveP384"]), "CurveP256");
  });
  it("suggests the nearest name for a typo", () => {
    assert.equal(closestName("VersoinTLS12", versions), "VersionTLS12");
    assert.equal(
      closestName("RequireAndVerifyClientCerts", Object.keys(CLIENT_AUTH_TYPES)),
      "RequireAndVerifyClientCert",
    );
    assert.equal(
      closestName("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA384", CIPHER_SUITE_NAMES),
      "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    );
  });
  it("says nothing when nothing is close", () => {
    assert.equal(closestName("modern", versions), undefined);
    assert.equal(closestName("anything", []), undefined);
  });
});

// ---------------------------------------------------------------------------------------------------------------

let workDir = "";
let pki: Pki;
let ca: TestCa;
let leaf: IssuedCert;

before(() => {
  workDir = mkdtempSync(path.join(tmpdir(), "tlsroute-tls-"));
  pki = makePki(path.join(workDir, "pki"));
  ca = pki.ca("tlsroute test root");
  leaf = pki.leaf({
    ca,
    cn: "DB.Example.com",
    dns: ["db.example.com", "*.DB.example.com", "replica.example.com"],
    ips: ["127.0.0.1", "::1", "2001:db8:0:0:1:0:0:1", "::ffff:1.2.3.4"],
    subject: { O: "Acme, Inc." },
  });
});

after(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe("pem sources (FileOrContent)", () => {
  it("classifies paths, inline PEM and missing files relative to the base directory", () => {
    const base = "/etc/tlsroute";
    const exists = (p: string) => p === "/etc/tlsroute/certs/db.crt" || p === "/abs/ca.pem";
    assert.deepEqual(classifyPemValue("certs/db.crt", base, exists), {
      kind: "file",
      path: "/etc/tlsroute/certs/db.crt",
    });
    assert.deepEqual(classifyPemValue("/abs/ca.pem", base, exists), { kind: "file", path: "/abs/ca.pem" });
    assert.deepEqual(classifyPemValue("certs/other.crt", base, exists), {
      kind: "missing",
      path: "/etc/tlsroute/certs/other.crt",
    });
    const inline = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    assert.deepEqual(
      classifyPemValue(inline, base, () => assert.fail("PEM text must not be stat'ed")),
      { kind: "inline", text: inline },
    );
    assert.deepEqual(classifyPemValue("", base, exists), { kind: "missing", path: "" });
  });

  it("resolves and reads against the real file system", () => {
    const configDir = path.join(workDir, "conf");
    mkdirSync(path.join(configDir, "certs"), { recursive: true });
    writeFileSync(path.join(configDir, "certs", "db.crt"), leaf.certPem);

    const file = resolvePemSource("certs/db.crt", configDir);
    assert.deepEqual(file, { kind: "file", path: path.join(configDir, "certs", "db.crt") });
    assert.equal(must(readPem(file)), leaf.certPem);

    const inline = resolvePemSource(leaf.keyPem, configDir);
    assert.equal(inline.kind, "inline");
    assert.equal(must(readPem(inline)), leaf.keyPem);

    const missing = resolvePemSource("certs/nope.crt", configDir);
    assert.deepEqual(missing, { kind: "missing", path: path.join(configDir, "certs", "nope.crt") });
    const read = readPem(missing);
    assert.ok(!read.ok && read.code === "file-not-found");
    assert.match(read.message, /file not found: .*certs\/nope\.crt/);

    const dir = resolvePemSource("certs", configDir);
    assert.equal(dir.kind, "file");
    const dirRead = readPem(dir);
    assert.ok(!dirRead.ok && dirRead.code === "not-a-file");
  });
});

// ---------------------------------------------------------------------------------------------------------------

interface OpensslView {
  subject: string;
  fingerprint: string;
  notAfter: Date;
  serial: string;
  dns: string[];
  signatureAlgorithm: string;
}

function opensslView(certFile: string): OpensslView {
  const out = openssl([
    "x509",
    "-in",
    certFile,
    "-noout",
    "-subject",
    "-fingerprint",
    "-sha256",
    "-enddate",
    "-serial",
    "-ext",
    "subjectAltName",
    "-nameopt",
    "esc_2253,esc_ctrl,utf8,sep_comma_plus_space,sname",
  ]);
  const field = (re: RegExp) => re.exec(out)?.[1] ?? assert.fail(`no ${re} in ${out}`);
  const sanLine = /Subject Alternative Name:\s*\n\s*(.*)/.exec(out)?.[1] ?? "";
  const text = openssl(["x509", "-in", certFile, "-noout", "-text"]);
  return {
    subject: field(/^subject=(.*)$/m),
    fingerprint: field(/^sha256 Fingerprint=(.*)$/m),
    notAfter: new Date(field(/^notAfter=(.*)$/m)),
    serial: field(/^serial=(.*)$/m),
    dns: sanLine
      .split(", ")
      .filter((e) => e.startsWith("DNS:"))
      .map((e) => e.slice(4)),
    signatureAlgorithm:
      /Signature Algorithm: (.*)/.exec(text)?.[1] ?? assert.fail(`no signature algorithm in ${text}`),
  };
}

function assertMatchesOpenssl(info: CertificateInfo, certFile: string): void {
  const view = opensslView(certFile);
  assert.equal(info.subject, view.subject);
  assert.equal(info.fingerprint256, view.fingerprint);
  assert.equal(info.notAfter.getTime(), view.notAfter.getTime());
  assert.equal(info.serialNumber, view.serial);
  assert.deepEqual(info.dnsNames, view.dns);
  assert.equal(info.signatureAlgorithm, view.signatureAlgorithm);
}

describe("certificates", () => {
  it("reads a leaf certificate like openssl does", () => {
    const [info] = must(parseCertificateChain(leaf.certPem));
    assert.ok(info);
    assertMatchesOpenssl(info, leaf.certFile);
    assert.equal(info.subject, "O=Acme\\, Inc., CN=DB.Example.com");
    assert.equal(info.subjectCN, "DB.Example.com");
    assert.equal(info.issuer, "CN=tlsroute test root");
    assert.deepEqual(info.dnsNames, ["db.example.com", "*.DB.example.com", "replica.example.com"]);
    assert.deepEqual(info.ipAddresses, ["127.0.0.1", "::1", "2001:db8::1:0:0:1", "1.2.3.4"]);
    assert.deepEqual(info.names, [
      "db.example.com",
      "*.db.example.com",
      "replica.example.com",
      "127.0.0.1",
      "::1",
      "2001:db8::1:0:0:1",
      "1.2.3.4",
    ]);
    assert.equal(info.keyType, "EC");
    assert.equal(info.keySize, 256);
    assert.equal(info.curve, "prime256v1");
    assert.equal(info.signatureAlgorithm, "ecdsa-with-SHA256");
    assert.ok(!info.selfSigned);
    assert.ok(!info.isCA);
    const start = openssl(["x509", "-in", leaf.certFile, "-noout", "-startdate"])
      .trim()
      .replace("notBefore=", "");
    assert.equal(info.notBefore.getTime(), new Date(start).getTime());
    assert.ok(info.notBefore < info.notAfter);
  });

  it("reads a chain in order and recognises the CA", () => {
    const chain = must(parseCertificateChain(leaf.chainPem));
    assert.equal(chain.length, 2);
    assert.equal(chain[0]?.subjectCN, "DB.Example.com");
    const root = chain[1];
    assert.ok(root);
    assert.ok(root.isCA && root.selfSigned);
    assertMatchesOpenssl(root, ca.certFile);
  });

  it("reads RSA and Ed25519 self-signed certificates", () => {
    const rsa = pki.selfSigned({ cn: "rsa.test", dns: ["rsa.test"], keyType: "rsa" });
    const [rsaInfo] = must(parseCertificateChain(rsa.certPem));
    assert.ok(rsaInfo);
    assertMatchesOpenssl(rsaInfo, rsa.certFile);
    assert.equal(rsaInfo.keyType, "RSA");
    assert.equal(rsaInfo.keySize, 2048);
    assert.equal(rsaInfo.curve, null);
    assert.equal(rsaInfo.signatureAlgorithm, "sha256WithRSAEncryption");
    assert.ok(rsaInfo.selfSigned && !rsaInfo.isCA);

    const ed = pki.selfSigned({ cn: "ed.test", keyType: "ed25519" });
    const [edInfo] = must(parseCertificateChain(ed.certPem));
    assert.ok(edInfo);
    assertMatchesOpenssl(edInfo, ed.certFile);
    assert.equal(edInfo.keyType, "Ed25519");
    assert.equal(edInfo.signatureAlgorithm, "ED25519");
    assert.deepEqual(edInfo.names, ["ed.test"]);
    assert.ok(edInfo.selfSigned);
  });

  it("handles escaped subjects, several CNs and odd SAN values", () => {
    const odd = pki.leaf({
      ca,
      cn: "Last Ünï",
      subject: { C: "DE", O: "Acme, Inc.", OU: "a+CN=Multi" },
      dns: ["we,ird", "plain.test"],
    });
    const [info] = must(parseCertificateChain(odd.certPem));
    assert.ok(info);
    assert.equal(info.subject, opensslView(odd.certFile).subject);
    assert.equal(info.subjectCN, "Last Ünï", "Go uses the last CN attribute");
    assert.deepEqual(info.dnsNames, ["we,ird", "plain.test"]);
    assert.deepEqual(info.names, ["last ünï", "we,ird", "plain.test"]);
  });

  it("has a certificate without CN, named by its SANs only", () => {
    const noCn = pki.leaf({ ca, dns: ["only-san.test"] });
    const [info] = must(parseCertificateChain(noCn.certPem));
    assert.equal(info?.subjectCN, null);
    assert.deepEqual(info?.names, ["only-san.test"]);
  });

  it("parses names and SAN strings in X509Certificate's notation", () => {
    assert.deepEqual(parseDistinguishedName("C=DE\nO=Acme\\, Inc.\nOU=a + CN=Multi\nCN=x\\0Ay"), [
      ["C", "DE"],
      ["O", "Acme, Inc."],
      ["OU", "a"],
      ["CN", "Multi"],
      ["CN", "x\ny"],
    ]);
    assert.deepEqual(
      parseSubjectAltName(
        'DNS:a.test, IP Address:0:0:0:0:0:0:0:1, email:x@y.z, URI:spiffe://a/b, DNS:"q\\u002cr", DNS:z.test',
      ),
      { dnsNames: ["a.test", "q,r", "z.test"], ipAddresses: ["::1"] },
    );
    assert.deepEqual(parseSubjectAltName(undefined), { dnsNames: [], ipAddresses: [] });
  });

  it("writes IP addresses the way Go does", () => {
    assert.equal(goIpString("10.0.0.1"), "10.0.0.1");
    assert.equal(goIpString("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
    assert.equal(goIpString("0:0:0:0:0:0:0:0"), "::");
    assert.equal(goIpString("0:0:0:0:0:FFFF:A00:1"), "10.0.0.1");
    assert.equal(goIpString("1:0:0:2:0:0:0:3"), "1:0:0:2::3", "longest zero run wins");
    assert.equal(goIpString("1:0:0:2:0:0:3:4"), "1::2:0:0:3:4", "first of equal runs wins");
    assert.equal(goIpString("1:2:3:4:5:6:0:8"), "1:2:3:4:5:6:0:8", "a single zero group stays");
    assert.equal(goIpString("FE80::1"), "fe80::1");
  });

  it("explains unusable certificate input", () => {
    const notPem = parseCertificateChain("hello");
    assert.ok(!notPem.ok && notPem.code === "not-pem");

    const keyOnly = parseCertificateChain(leaf.keyPem);
    assert.ok(!keyOnly.ok && keyOnly.code === "no-certificate");
    assert.match(keyOnly.message, /PRIVATE KEY.*swapped/);

    const corrupt = parseCertificateChain("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert.ok(!corrupt.ok && corrupt.code === "invalid-certificate");
    assert.match(corrupt.message, /not a valid X\.509 certificate/);

    const secondBad = parseCertificateChain(
      `${leaf.certPem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`,
    );
    assert.ok(!secondBad.ok);
    assert.match(secondBad.message, /certificate #2/);

    const unterminated = parseCertificateChain(leaf.certPem.replace("-----END CERTIFICATE-----", ""));
    assert.ok(!unterminated.ok && unterminated.code === "invalid-certificate");
    assert.match(unterminated.message, /END CERTIFICATE/);
  });

  it("parses CA bundles and refuses ones without a certificate", () => {
    const other = pki.ca("second root");
    const bundle = must(parseCaBundle(`# trusted roots\n${ca.certPem}\n${other.certPem}`));
    assert.deepEqual(
      bundle.map((c) => c.subjectCN),
      ["tlsroute test root", "second root"],
    );
    const empty = parseCaBundle("");
    assert.ok(!empty.ok && empty.code === "not-pem");
    assert.match(empty.message, /CA bundle/);
    const keys = parseCaBundle(ca.keyPem);
    assert.ok(!keys.ok && keys.code === "no-certificate");
  });

  it("describes an X509Certificate obtained elsewhere", () => {
    const [parsed] = must(parseCertificateChain(leaf.certPem));
    assert.ok(parsed);
    const again = certificateInfo(parsed.raw);
    assert.deepEqual({ ...again, raw: null }, { ...parsed, raw: null });
  });
});

describe("key pairs", () => {
  it("accepts the matching key and rejects another one", () => {
    assert.deepEqual(must(checkKeyMatches(leaf.certPem, leaf.keyPem)), { keyType: "EC" });
    assert.deepEqual(must(checkKeyMatches(leaf.chainPem, leaf.keyPem)), { keyType: "EC" });

    const other = pki.leaf({ ca, cn: "other.test" });
    const wrong = checkKeyMatches(leaf.certPem, other.keyPem);
    assert.ok(!wrong.ok && wrong.code === "key-mismatch");
    assert.match(wrong.message, /does not belong to the certificate O=Acme\\, Inc\., CN=DB\.Example\.com/);
    assert.match(wrong.message, /a different EC key/);

    const rsa = pki.selfSigned({ cn: "rsa2.test", keyType: "rsa" });
    const wrongType = checkKeyMatches(leaf.certPem, rsa.keyPem);
    assert.ok(!wrongType.ok && wrongType.code === "key-mismatch");
    assert.match(wrongType.message, /\(RSA\).*its public key is EC\)$/);
    assert.deepEqual(must(checkKeyMatches(rsa.certPem, rsa.keyPem)), { keyType: "RSA" });
  });

  it("explains keys that cannot be used", () => {
    const encryptedFile = path.join(workDir, "encrypted.key");
    openssl(["pkey", "-in", leaf.keyFile, "-aes256", "-passout", "pass:secret", "-out", encryptedFile]);
    const encryptedPem = execFileSync("cat", [encryptedFile], { encoding: "utf8" });
    const encrypted = checkKeyMatches(leaf.certPem, encryptedPem);
    assert.ok(!encrypted.ok && encrypted.code === "key-encrypted");

    const legacyEncrypted = openssl(["ec", "-in", leaf.keyFile, "-aes256", "-passout", "pass:secret"]);
    const legacy = checkKeyMatches(leaf.certPem, legacyEncrypted);
    assert.ok(!legacy.ok && legacy.code === "key-encrypted", legacyEncrypted.slice(0, 80));

    const swapped = checkKeyMatches(leaf.certPem, leaf.certPem);
    assert.ok(!swapped.ok && swapped.code === "no-key");
    assert.match(swapped.message, /swapped/);

    const garbage = checkKeyMatches(
      leaf.certPem,
      "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    assert.ok(!garbage.ok && garbage.code === "key-invalid");

    const nothing = checkKeyMatches(leaf.certPem, "");
    assert.ok(!nothing.ok && nothing.code === "no-key");

    const badCert = checkKeyMatches("nope", leaf.keyPem);
    assert.ok(!badCert.ok && badCert.code === "not-pem");
  });
});

describe("expiry", () => {
  it("classifies generated certificates", () => {
    const now = new Date();
    const expired = pki.leaf({ ca, cn: "old.test", days: -3 });
    const soon = pki.leaf({ ca, cn: "soon.test", days: 10 });
    const [expiredInfo] = must(parseCertificateChain(expired.certPem));
    const [soonInfo] = must(parseCertificateChain(soon.certPem));
    const [leafInfo] = must(parseCertificateChain(leaf.certPem));
    assert.ok(expiredInfo && soonInfo && leafInfo);

    const e = expiryStatus(expiredInfo.notAfter, now);
    assert.equal(e.status, "expired");
    assert.ok(e.daysLeft <= -3 && e.daysLeft >= -4, String(e.daysLeft));
    assert.ok(expiredInfo.notBefore < expiredInfo.notAfter);

    const s = expiryStatus(soonInfo.notAfter, now);
    assert.equal(s.status, "expiring");
    assert.ok(s.daysLeft === 9 || s.daysLeft === 10, String(s.daysLeft));
    assert.equal(expiryStatus(soonInfo.notAfter, now, 7).status, "ok");

    assert.equal(expiryStatus(leafInfo.notAfter, now).status, "ok");
  });

  it("draws the lines exactly", () => {
    const now = new Date("2030-01-01T00:00:00Z");
    const at = (ms: number) => new Date(now.getTime() + ms);
    assert.deepEqual(expiryStatus(at(0), now), { status: "expiring", daysLeft: 0 });
    assert.deepEqual(expiryStatus(at(-1), now), { status: "expired", daysLeft: -1 });
    assert.deepEqual(expiryStatus(at(30 * DAY), now), { status: "ok", daysLeft: 30 });
    assert.deepEqual(expiryStatus(at(30 * DAY - 1), now), { status: "expiring", daysLeft: 29 });
    assert.deepEqual(expiryStatus(at(5 * DAY), now, 5), { status: "ok", daysLeft: 5 });
  });
});

// ---------------------------------------------------------------------------------------------------------------

interface TestCert extends StoreCertificate {
  id: string;
  names: string[];
}

const cert = (id: string, ...names: string[]): TestCert => ({ id, names });

function choose(
  certs: TestCert[],
  sni: string,
  options: { localIp?: string; sniStrict?: boolean } = {},
): CertificateChoice<TestCert> {
  return chooseCertificate(new CertificateIndex(certs), {
    sni,
    localIp: options.localIp ?? "192.0.2.10",
    sniStrict: options.sniStrict ?? false,
  });
}

function chosenId(choice: CertificateChoice<TestCert>): string | null {
  return choice.kind === "store" ? choice.cert.id : null;
}

describe("certificate selection: Traefik's vectors", () => {
  it("empty store → default", () => {
    assert.deepEqual(choose([], "snitest.com"), { kind: "default", reason: "no-match", name: "snitest.com" });
  });

  it("{snitest.org} + snitest.com → none", () => {
    assert.equal(chosenId(choose([cert("org", "snitest.org")], "snitest.com")), null);
  });

  it("{snitest.com} + snitest.com → it, exactly", () => {
    const choice = choose([cert("com", "snitest.com")], "snitest.com");
    assert.deepEqual(choice, {
      kind: "store",
      cert: cert("com", "snitest.com"),
      match: "exact",
      name: "snitest.com",
    });
  });

  it("{*.snitest.com} + www.snitest.com → it, by wildcard", () => {
    const choice = choose([cert("wild", "*.snitest.com")], "www.snitest.com");
    assert.equal(chosenId(choice), "wild");
    assert.equal(choice.kind === "store" && choice.match, "wildcard");
  });

  it("{*.www.snitest.com} (uppercase in the certificate) + bar.www.snitest.com → it", () => {
    const upper = pki.selfSigned({ cn: "*.WWW.SNITEST.COM", dns: ["*.WWW.SNITEST.COM"] });
    const [info] = must(parseCertificateChain(upper.certPem));
    assert.ok(info);
    assert.deepEqual(info.names, ["*.www.snitest.com"]);
    assert.equal(chosenId(choose([{ id: "upper", names: info.names }], "bar.www.snitest.com")), "upper");
    assert.equal(
      chosenId(choose([cert("raw-upper", "*.WWW.SNITEST.COM")], "bar.www.snitest.com")),
      "raw-upper",
    );
  });

  it("the exact-only certificate beats one that also has a wildcard (issue 13286)", () => {
    const wild = cert("wild", "*.app.example.test", "app.example.test");
    const exact = cert("exact", "app.example.test");
    assert.equal(chosenId(choose([wild, exact], "app.example.test")), "exact");
    assert.equal(chosenId(choose([exact, wild], "app.example.test")), "exact");
  });

  it("compares keys across exact and wildcard matches", () => {
    // Key "*.aaa.test,abc.example.test" < "*.example.test": the wildcard certificate wins although the
    // other one names the host exactly.
    const exact = cert("exact", "abc.example.test", "*.aaa.test");
    const wild = cert("wild", "*.example.test");
    const choice = choose([exact, wild], "abc.example.test");
    assert.equal(chosenId(choice), "wild");
    assert.equal(choice.kind === "store" && choice.match, "wildcard");
    // Among wildcard matches the greater key wins as well.
    const broad = cert("broad", "*.a.test");
    const broader = cert("broader", "*.a.test", "b.a.test");
    assert.equal(chosenId(choose([broad, broader], "x.a.test")), "broader");
  });

  it("a one-label wildcard matches exactly one label", () => {
    const wild = [cert("wild", "*.example.com")];
    assert.equal(chosenId(choose(wild, "foo.example.com")), "wild");
    assert.equal(chosenId(choose(wild, "example.com")), null);
    assert.equal(chosenId(choose(wild, "a.b.example.com")), null);
    assert.equal(chosenId(choose([cert("star", "*")], "localhost")), "star", "`*` covers one-label names");
    assert.equal(chosenId(choose([cert("star", "*")], "a.b")), null);
  });

  it("ignores a certificate name's trailing dots for wildcards only", () => {
    assert.equal(chosenId(choose([cert("dot", "foo.com.")], "foo.com")), null);
    assert.equal(chosenId(choose([cert("dot", "*.foo.com.")], "a.foo.com")), "dot");
  });

  it("uses the local IP when there is no SNI", () => {
    const ipCert = [cert("ip", "127.0.0.1", "::1")];
    assert.deepEqual(choose(ipCert, "", { localIp: "127.0.0.1" }), {
      kind: "store",
      cert: cert("ip", "127.0.0.1", "::1"),
      match: "exact",
      name: "127.0.0.1",
    });
    assert.equal(chosenId(choose(ipCert, "", { localIp: "::ffff:127.0.0.1" })), "ip", "dual-stack socket");
    assert.equal(chosenId(choose(ipCert, "", { localIp: "::1" })), "ip");
    assert.deepEqual(choose(ipCert, "", { localIp: "10.0.0.1" }), {
      kind: "default",
      reason: "no-sni",
      name: "10.0.0.1",
    });
    assert.equal(chosenId(choose(ipCert, "127.0.0.1", { localIp: "10.0.0.1" })), "ip", "IP literal as SNI");
  });

  it("refuses under sniStrict only when nothing matches", () => {
    const store = [cert("a", "a.test")];
    assert.deepEqual(choose(store, "b.test", { sniStrict: true }), {
      kind: "refused",
      reason: "sni-strict",
      name: "b.test",
    });
    assert.deepEqual(choose(store, "", { sniStrict: true, localIp: "10.1.1.1" }), {
      kind: "refused",
      reason: "sni-strict",
      name: "10.1.1.1",
    });
    assert.equal(chosenId(choose(store, "a.test", { sniStrict: true })), "a");
    assert.equal(
      chosenId(choose([cert("ip", "10.1.1.1")], "", { sniStrict: true, localIp: "10.1.1.1" })),
      "ip",
    );
  });

  it("normalises the SNI like serve does", () => {
    assert.equal(chosenId(choose([cert("a", "a.test")], "  A.Test ")), "a");
  });

  it("keeps the first of two certificates with the same names", () => {
    const first = cert("first", "x.test", "y.test");
    const second = cert("second", "Y.test", "x.test");
    const index = new CertificateIndex([first, second]);
    assert.equal(index.lookup("y.test")?.cert.id, "first");
    assert.deepEqual(index.shadowed, [{ cert: second, by: first }]);
    assert.equal(index.size, 1);
    assert.equal(index.keyOf(first), "x.test,y.test");
    assert.equal(index.keyOf(second), undefined);
  });

  it("answers lookups from its maps, without revisiting the certificates", () => {
    let reads = 0;
    const counted = Array.from({ length: 1000 }, (_, i) => {
      const names = [`host${i}.example.test`, `*.zone${i % 10}.example.test`];
      return {
        id: `c${i}`,
        get names() {
          reads++;
          return names;
        },
      };
    });
    const index = new CertificateIndex(counted);
    reads = 0;
    assert.equal(index.lookup("host7.example.test")?.cert.id, "c7");
    assert.equal(index.lookup("x.zone3.example.test")?.match, "wildcard");
    assert.equal(index.lookup("nowhere.test"), null);
    assert.equal(reads, 0);
  });

  it("orders keys by code point like Go", () => {
    assert.ok(compareCodePoints("*.a", "a") < 0);
    assert.ok(compareCodePoints("a", "ab") < 0);
    assert.ok(compareCodePoints("\u{1F600}", "\uFFFD") > 0, "astral characters sort after the BMP");
    assert.equal(certificateKey(["B.test", "a.test", "b.test"]), "a.test,b.test");
    assert.equal(wildcardOf("a.b.c"), "*.b.c");
    assert.equal(wildcardOf("localhost"), "*");
  });
});

// A literal transcription of Traefik's scan, written independently of select.ts: certificates keyed by
// their sorted names (first of equal keys kept), visited by key from greatest to smallest; the first key
// with a part equal to the name, or equal after trimming trailing dots to the name with its first label
// replaced by "*", wins.
function naiveLookup(certs: TestCert[], name: string): { id: string; match: "exact" | "wildcard" } | null {
  const byKey = new Map<string, TestCert>();
  for (const c of certs) {
    const key = [...new Set(c.names.map((n) => n.toLowerCase()))].sort().join(",");
    if (!byKey.has(key)) byKey.set(key, c);
  }
  const labels = name.split(".");
  labels[0] = "*";
  const candidate = labels.join(".");
  for (const key of [...byKey.keys()].sort().reverse()) {
    const parts = key.split(",");
    const exact = parts.includes(name);
    if (exact || parts.some((p) => p.replace(/\.+$/, "") === candidate)) {
      return { id: byKey.get(key)?.id ?? "", match: exact ? "exact" : "wildcard" };
    }
  }
  return null;
}

describe("certificate selection: index = linear scan", () => {
  const label = fc.constantFrom("a", "b", "c", "xn--d", "0", "*", "A", "B");
  const certName = fc.oneof(
    { weight: 8, arbitrary: fc.array(label, { minLength: 1, maxLength: 3 }).map((l) => l.join(".")) },
    { weight: 1, arbitrary: fc.array(label, { minLength: 1, maxLength: 3 }).map((l) => `${l.join(".")}.`) },
    { weight: 1, arbitrary: fc.constantFrom("a,b", "*.a,b.c", "", "127.0.0.1", "::1") },
  );
  const store = fc.array(fc.array(certName, { minLength: 0, maxLength: 3 }), { maxLength: 8 });
  const sniLabel = fc.constantFrom("a", "b", "c", "xn--d", "0", "*");
  const sni = fc.oneof(
    { weight: 9, arbitrary: fc.array(sniLabel, { minLength: 1, maxLength: 4 }).map((l) => l.join(".")) },
    { weight: 1, arbitrary: fc.constantFrom("127.0.0.1", "::1", "") },
  );

  it("picks what Traefik's scan picks, on random stores and names", () => {
    fc.assert(
      fc.property(store, fc.array(sni, { minLength: 1, maxLength: 6 }), (nameLists, names) => {
        const certs = nameLists.map((n, i) => cert(`c${i}`, ...n));
        const index = new CertificateIndex(certs);
        for (const name of names) {
          const got = index.lookup(name);
          const want = naiveLookup(certs, name);
          assert.deepEqual(
            got && { id: got.cert.id, match: got.match },
            want,
            `name ${JSON.stringify(name)}`,
          );
        }
      }),
      { numRuns: 500 },
    );
  });
});
