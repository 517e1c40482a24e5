/**
 * Certificate resolvers against a real ACME server: Pebble with pebble-challtestsrv as its DNS, on
 * loopback. serve runs as a subprocess; openssl s_client checks what a client is served, verifying
 * against Pebble's issuing root.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { freePort, type Pebble, pebbleInstalled, startPebble } from "./helpers/pebble.ts";
import { makePki } from "./helpers/pki.ts";
import { DENO_FLAGS, runOn, runtimeUnderTest } from "./helpers/runtime.ts";
import { type ServeProcess, startServe } from "./helpers/serve.ts";

/** The runtime serve runs on: TLSROUTE_RUNTIME (npm run test:bun / test:deno run this file too). */
const runtime = runtimeUnderTest();
const skip = !pebbleInstalled()
  ? "pebble is not installed (Debian package pebble; .ci/run installs it)"
  : runtime === "deno"
    ? "Deno cannot serve TLS-ALPN-01 challenge certificates (see the Deno test below)"
    : false;

interface Served {
  ok: boolean;
  subject: string;
  issuer: string;
  sans: string;
  serial: string;
  /** Public key as openssl names it: "id-ecPublicKey 256", "rsaEncryption 2048". */
  key: string;
  verify: string;
  pem: string;
}

/** What `openssl s_client -servername NAME` sees: the leaf, its issuer, and whether it verifies. */
function served(port: number, name: string, caFile?: string): Served {
  const args = ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", name, "-showcerts"];
  if (caFile) args.push("-CAfile", caFile, "-verify_hostname", name);
  const run = spawnSync("openssl", args, { input: "", encoding: "utf8", timeout: 10_000 });
  const out = `${run.stdout}${run.stderr}`;
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(run.stdout)?.[0] ?? "";
  if (!pem) return { ok: false, subject: "", issuer: "", sans: "", serial: "", key: "", verify: out, pem };
  const text = execFileSync(
    "openssl",
    ["x509", "-noout", "-subject", "-issuer", "-serial", "-ext", "subjectAltName"],
    {
      input: pem,
      encoding: "utf8",
    },
  );
  return {
    ok: true,
    subject: /subject=(.*)/.exec(text)?.[1]?.trim() ?? "",
    issuer: /issuer=(.*)/.exec(text)?.[1]?.trim() ?? "",
    serial: /serial=(.*)/.exec(text)?.[1]?.trim() ?? "",
    key: publicKeyOf(pem),
    sans: /X509v3 Subject Alternative Name:\s*\n\s*(.*)/.exec(text)?.[1]?.trim() ?? "",
    verify: /Verify return code: (.*)/.exec(out)?.[1]?.trim() ?? out,
    pem,
  };
}

function publicKeyOf(pem: string): string {
  const text = execFileSync("openssl", ["x509", "-noout", "-text"], { input: pem, encoding: "utf8" });
  const algorithm = /Public Key Algorithm: (\S+)/.exec(text)?.[1] ?? "?";
  const bits = /Public-Key: \((\d+) bit\)/.exec(text)?.[1] ?? "?";
  return `${algorithm} ${bits}`;
}

function config(options: {
  port: number;
  directory: string;
  caFile: string;
  storage: string;
  routers: string;
  extraAcme?: string;
}): string {
  return `entryPoints:
  websecure:
    address: "127.0.0.1:${options.port}"
certificatesResolvers:
  pebble:
    acme:
      email: ops@example.com
      storage: ${options.storage}
      caServer: "${options.directory}"
      caCertificates: ["${options.caFile}"]
      tlsChallenge: {}
${options.extraAcme ?? ""}
tcp:
  services:
    whoami:
      loadBalancer:
        servers:
          - address: whoami@internal
  routers:
${options.routers}
`;
}

/** A backend that records the first bytes of its first connection. */
async function firstBytesServer(): Promise<{ port: number; first: Promise<Buffer>; close(): Promise<void> }> {
  const server = createServer();
  const first = new Promise<Buffer>((resolve) =>
    server.once("connection", (socket) => {
      socket.once("data", (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
      });
      socket.on("error", () => undefined);
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return { port, first, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

const ROUTER_APP = `    app:
      rule: "HostSNI(\`app.tlsroute.test\`)"
      service: whoami
      tls: { certResolver: pebble }
`;

describe("ACME certificate resolvers with Pebble", { skip, concurrency: false }, () => {
  let dir: string;
  let port: number;
  let pebble: Pebble;
  let rootFile: string;
  const running: ServeProcess[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "tlsroute-acme-"));
    port = await freePort();
    pebble = await startPebble(join(dir, "pebble"), port);
    rootFile = await pebble.issuingRootFile();
  });

  // A failed test must not leave its serve holding the port the next test (and Pebble) use.
  afterEach(async () => {
    for (const s of running.splice(0)) await s.stop("SIGKILL").catch(() => undefined);
  });

  after(async () => {
    await pebble?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function serve(configText: string, name: string): Promise<ServeProcess> {
    const file = join(dir, `${name}.yml`);
    writeFileSync(file, configText);
    const s = await startServe(["-c", file, "--log-level", "debug"], { runtime });
    running.push(s);
    return s;
  }

  /** The configuration of a test: this Pebble, the entry point it validates through, `storage`. */
  function pebbleConfig(storage: string, routers: string, extraAcme?: string): string {
    return config({
      port,
      directory: pebble.directory,
      caFile: pebble.apiCa.certFile,
      storage,
      routers,
      ...(extraAcme ? { extraAcme } : {}),
    });
  }

  async function stop(s: ServeProcess): Promise<void> {
    await s.stop("SIGTERM");
    running.splice(running.indexOf(s), 1);
  }

  test("a router with certResolver gets a certificate for its HostSNI name; restart reuses it and the account", async () => {
    const storage = join(dir, "acme-app.json");
    const text = pebbleConfig(storage, ROUTER_APP);
    const first = await serve(text, "app");
    await first.waitFor((l) => l.msg === "certificate obtained", 60_000);

    const cert = served(port, "app.tlsroute.test", rootFile);
    assert.equal(cert.ok, true, cert.verify);
    assert.match(cert.sans, /DNS:app\.tlsroute\.test/);
    assert.match(cert.issuer, /Pebble/i);
    assert.equal(cert.verify, "0 (ok)");
    assert.equal(cert.key, "id-ecPublicKey 256", "EC P-256 keys by default");

    // The CA's validation connections are in the access log as acme-tls/1 challenge handshakes.
    const challenges = first.accessLines().filter((l) => l.reason === "acme_challenge");
    assert.ok(challenges.length >= 1, "the CA's validation handshake is logged");
    assert.equal(challenges[0]!.sni, "app.tlsroute.test");
    assert.deepEqual(challenges[0]!.alpn, ["acme-tls/1"]);

    const stored = JSON.parse(readFileSync(storage, "utf8"));
    assert.equal(statSync(storage).mode & 0o777, 0o600);
    assert.match(stored.pebble.Account.Registration.uri, /^https:\/\/127\.0\.0\.1:\d+\//);
    assert.equal(stored.pebble.Certificates.length, 1);
    assert.equal(stored.pebble.Certificates[0].domain.main, "app.tlsroute.test");
    const accountUri = stored.pebble.Account.Registration.uri;
    await stop(first);

    const second = await serve(text, "app");
    await second.waitFor((l) => l.msg === "stored certificate is valid", 20_000);
    const again = served(port, "app.tlsroute.test", rootFile);
    assert.equal(again.serial, cert.serial, "the stored certificate is served again");
    assert.equal(second.lines.filter((l) => l.msg === "requesting certificate").length, 0, "no new order");
    assert.equal(
      second.lines.filter((l) => l.msg === "registering ACME account").length,
      0,
      "no new account",
    );
    assert.equal(JSON.parse(readFileSync(storage, "utf8")).pebble.Account.Registration.uri, accountUri);
    await stop(second);
  });

  test("a reload while an order runs: the certificate is served and not ordered twice", async () => {
    const storage = join(dir, "acme-reload.json");
    const routers = `    reload:
      rule: "HostSNI(\`reload.tlsroute.test\`)"
      service: whoami
      tls: { certResolver: pebble }
`;
    const s = await serve(pebbleConfig(storage, routers), "reload");
    await s.waitFor((l) => l.msg === "requesting certificate", 20_000);
    s.child.kill("SIGHUP");
    await s.waitFor((l) => l.msg === "configuration reloaded", 20_000);
    await s.waitFor((l) => l.msg === "certificate obtained", 60_000);
    // Give a second order (the bug this pins) time to start.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(s.lines.filter((l) => l.msg === "requesting certificate").length, 1);
    assert.equal(served(port, "reload.tlsroute.test", rootFile).verify, "0 (ok)");
    await stop(s);
  });

  test("tls.domains asks for one certificate with the main name and every SAN", async () => {
    const storage = join(dir, "acme-domains.json");
    const routers = `    multi:
      rule: "HostSNI(\`a.tlsroute.test\`) || HostSNI(\`b.tlsroute.test\`)"
      service: whoami
      tls:
        certResolver: pebble
        domains:
          - main: multi.tlsroute.test
            sans: [a.tlsroute.test, b.tlsroute.test]
`;
    const s = await serve(pebbleConfig(storage, routers), "domains");
    await s.waitFor((l) => l.msg === "certificate obtained", 60_000);
    const cert = served(port, "b.tlsroute.test", rootFile);
    assert.equal(cert.verify, "0 (ok)");
    assert.match(cert.subject, /CN\s*=\s*multi\.tlsroute\.test/);
    for (const name of ["multi.tlsroute.test", "a.tlsroute.test", "b.tlsroute.test"])
      assert.match(cert.sans, new RegExp(`DNS:${name.replaceAll(".", "\\.")}`));
    assert.equal(
      served(port, "a.tlsroute.test", rootFile).serial,
      cert.serial,
      "one certificate for all names",
    );
    const stored = JSON.parse(readFileSync(storage, "utf8")).pebble.Certificates;
    assert.equal(stored.length, 1);
    assert.deepEqual(stored[0].domain, {
      main: "multi.tlsroute.test",
      sans: ["a.tlsroute.test", "b.tlsroute.test"],
    });
    await stop(s);
  });

  test("a stored certificate near expiry (read from Traefik's acme.json layout) is renewed and the new one served", async () => {
    const storage = join(dir, "acme-renew.json");
    const pki = makePki(join(dir, "old-pki"));
    const oldCa = pki.ca("Old CA");
    // 90-day lifetime, 80 days gone: less than a third left, so renewal is due at start.
    const old = pki.leaf({
      ca: oldCa,
      cn: "renew.tlsroute.test",
      dns: ["renew.tlsroute.test"],
      days: 10,
      issuedDaysAgo: 80,
    });
    const b64 = (text: string) => Buffer.from(text).toString("base64");
    writeFileSync(
      storage,
      JSON.stringify({
        pebble: {
          Account: null,
          Certificates: [
            {
              domain: { main: "renew.tlsroute.test" },
              certificate: b64(old.chainPem),
              key: b64(old.keyPem),
              Store: "default",
            },
          ],
        },
      }),
    );
    const routers = `    renew:
      rule: "HostSNI(\`renew.tlsroute.test\`)"
      service: whoami
      tls: { certResolver: pebble }
`;
    const s = await serve(pebbleConfig(storage, routers, "      keyType: RSA2048"), "renew");
    const request = await s.waitFor((l) => l.msg === "requesting certificate", 20_000);
    assert.match(String(request.reason), /renewal due/);
    await s.waitFor((l) => l.msg === "certificate obtained", 60_000);
    const cert = served(port, "renew.tlsroute.test", rootFile);
    assert.equal(cert.verify, "0 (ok)", "the renewed certificate comes from Pebble");
    assert.equal(cert.key, "rsaEncryption 2048", "keyType RSA2048");
    const entries = JSON.parse(readFileSync(storage, "utf8")).pebble.Certificates;
    assert.equal(entries.length, 1, "the renewed certificate replaces the old one");
    assert.notEqual(Buffer.from(entries[0].certificate, "base64").toString(), old.chainPem);
    await stop(s);
  });

  test("an unreachable CA: attempts are logged and retried, the default certificate is served, nothing crashes", async () => {
    const storage = join(dir, "acme-down.json");
    const closed = await freePort();
    const text = config({
      port,
      directory: `https://127.0.0.1:${closed}/dir`,
      caFile: pebble.apiCa.certFile,
      storage,
      routers: ROUTER_APP,
    });
    const s = await serve(text, "down");
    const first = await s.waitFor((l) => l.msg === "certificate request failed", 30_000);
    assert.match(String(first.error), /connection refused/);
    assert.equal(first.attempt, 1);
    assert.equal(first.retryInSeconds, 5);
    const second = await s.waitFor((l) => l.msg === "certificate request failed" && l.attempt === 2, 30_000);
    assert.equal(second.retryInSeconds, 10, "the back-off doubles");
    // Meanwhile the router serves with the generated default certificate and keeps running.
    const cert = served(port, "app.tlsroute.test");
    assert.equal(cert.ok, true);
    assert.doesNotMatch(cert.issuer, /Pebble/i);
    const line = spawnSync(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "app.tlsroute.test", "-quiet"],
      { input: "", encoding: "utf8", timeout: 10_000 },
    ).stdout;
    assert.match(line, /"router":"app"/, "the connection is routed meanwhile");
    assert.equal(s.child.exitCode, null);

    // Fixing caServer and reloading retries at once instead of waiting out the back-off.
    writeFileSync(join(dir, "down.yml"), pebbleConfig(storage, ROUTER_APP));
    s.child.kill("SIGHUP");
    await s.waitFor((l) => l.msg === "certificate obtained", 30_000);
    assert.equal(served(port, "app.tlsroute.test", rootFile).verify, "0 (ok)");
    await stop(s);
  });

  test("acme-tls/1 with no order in progress is refused; allowACMEByPass routes it to the passthrough backend instead", async () => {
    const storage = join(dir, "acme-alpn.json");
    const text = pebbleConfig(storage, ROUTER_APP);
    const s = await serve(text, "alpn");
    await s.waitFor((l) => l.msg === "certificate obtained", 60_000);
    const refused = spawnSync(
      "openssl",
      [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        "-servername",
        "other.tlsroute.test",
        "-alpn",
        "acme-tls/1",
      ],
      { input: "", encoding: "utf8", timeout: 10_000 },
    );
    assert.match(`${refused.stdout}${refused.stderr}`, /unrecognized name/i);
    const access = await s.waitFor((l) => l.msg === "connection" && l.sni === "other.tlsroute.test");
    assert.equal(access.reason, "no_route");
    assert.match(String(access.detail), /no ACME challenge is pending/);
    await stop(s);

    // The same connection on an entry point that lets backends answer their own challenges.
    const backend = await firstBytesServer();
    const bypass = `entryPoints:
  websecure:
    address: "127.0.0.1:${port}"
    allowACMEByPass: true
certificatesResolvers:
  pebble:
    acme:
      email: ops@example.com
      storage: ${storage}
      caServer: "${pebble.directory}"
      caCertificates: ["${pebble.apiCa.certFile}"]
      tlsChallenge: {}
tcp:
  routers:
    backend-owns-certs:
      rule: "HostSNI(\`other.tlsroute.test\`)"
      service: backend
      tls: { passthrough: true }
  services:
    backend:
      loadBalancer:
        servers:
          - address: "127.0.0.1:${backend.port}"
`;
    const s2 = await serve(bypass, "bypass");
    spawnSync(
      "openssl",
      [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        "-servername",
        "other.tlsroute.test",
        "-alpn",
        "acme-tls/1",
      ],
      { input: "", encoding: "utf8", timeout: 10_000 },
    );
    const first = await backend.first;
    assert.equal(first[0], 0x16, "the backend receives the ClientHello itself");
    const routed = await s2.waitFor((l) => l.msg === "connection" && l.sni === "other.tlsroute.test");
    assert.equal(routed.router, "backend-owns-certs");
    assert.equal(routed.mode, "passthrough");
    await backend.close();
    await stop(s2);
  });
});

describe("ACME on Deno", { skip: runtime === "deno" ? false : "runs under npm run test:deno" }, () => {
  test("validate warns and serve orders nothing, saying why, while stored certificates stay served", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tlsroute-acme-deno-"));
    try {
      const port = await freePort();
      const file = join(dir, "deno.yml");
      // A private CA to trust, as users of an internal ACME server have: it must not make Deno ask
      // for --allow-sys (the system roots it would be added to).
      const privateCa = makePki(join(dir, "pki")).ca("private ACME CA");
      writeFileSync(
        file,
        config({
          port,
          directory: "https://127.0.0.1:1/dir",
          caFile: privateCa.certFile,
          storage: join(dir, "acme.json"),
          routers: ROUTER_APP,
        }),
      );
      // validate with its documented permissions: it warns that serve needs --allow-write, and why orders fail.
      const validate = await runOn("deno", ["validate", file, "--format", "json"]);
      const json = JSON.parse(validate.stdout) as { ok: boolean; diagnostics: { code: string }[] };
      const codes = json.diagnostics.map((d) => d.code);
      assert.ok(codes.includes("runtime-acme-challenge-unsupported"), validate.stdout);
      assert.ok(codes.includes("deno-storage-not-allowed"), validate.stdout);
      assert.equal(json.ok, true, "warnings only");
      // The README's serve permissions, with --allow-write for the storage file.
      const s = await startServe(["-c", file], {
        runtime,
        denoFlags: [...DENO_FLAGS.serve, `--allow-write=${dir}`],
      });
      try {
        await s.waitFor((l) => l.msg.startsWith("ACME orders are off on Deno"), 20_000);
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(s.lines.filter((l) => l.msg === "requesting certificate").length, 0);
        // Routing goes on with the generated certificate.
        const line = spawnSync(
          "openssl",
          ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "app.tlsroute.test", "-quiet"],
          { input: "", encoding: "utf8", timeout: 10_000 },
        ).stdout;
        assert.match(line, /"router":"app"/);
      } finally {
        await s.stop("SIGTERM");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
