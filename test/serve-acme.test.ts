/**
 * Certificate resolvers against a real ACME server: Pebble with pebble-challtestsrv as its DNS, on
 * loopback. serve runs as a subprocess; openssl s_client checks what a client is served, verifying
 * against Pebble's issuing root.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { freePort, type Pebble, pebbleInstalled, startPebble } from "./helpers/pebble.ts";
import { type ServeProcess, startServe } from "./helpers/serve.ts";

const available = pebbleInstalled();
const skip = available ? false : "pebble is not installed (Debian package pebble; .ci/run installs it)";

interface Served {
  ok: boolean;
  subject: string;
  issuer: string;
  sans: string;
  serial: string;
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
  if (!pem) return { ok: false, subject: "", issuer: "", sans: "", serial: "", verify: out, pem };
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
    sans: /X509v3 Subject Alternative Name:\s*\n\s*(.*)/.exec(text)?.[1]?.trim() ?? "",
    verify: /Verify return code: (.*)/.exec(out)?.[1]?.trim() ?? out,
    pem,
  };
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

  after(async () => {
    for (const s of running) await s.stop("SIGKILL").catch(() => undefined);
    await pebble?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function serve(configText: string, name: string): Promise<ServeProcess> {
    const file = join(dir, `${name}.yml`);
    writeFileSync(file, configText);
    const s = await startServe(["-c", file, "--log-level", "debug"]);
    running.push(s);
    return s;
  }

  async function stop(s: ServeProcess): Promise<void> {
    await s.stop("SIGTERM");
    running.splice(running.indexOf(s), 1);
  }

  test("a router with certResolver gets a certificate for its HostSNI name; restart reuses it and the account", async () => {
    const storage = join(dir, "acme-app.json");
    const text = config({
      port,
      directory: pebble.directory,
      caFile: pebble.apiCa.certFile,
      storage,
      routers: ROUTER_APP,
    });
    const first = await serve(text, "app");
    await first.waitFor((l) => l.msg === "certificate obtained", 60_000);

    const cert = served(port, "app.tlsroute.test", rootFile);
    assert.equal(cert.ok, true, cert.verify);
    assert.match(cert.sans, /DNS:app\.tlsroute\.test/);
    assert.match(cert.issuer, /Pebble/i);
    assert.equal(cert.verify, "0 (ok)");

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
});
