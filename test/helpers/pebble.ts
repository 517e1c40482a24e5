/**
 * Pebble, Let's Encrypt's ACME test server, and pebble-challtestsrv as its DNS, started on loopback
 * for one test. Pebble validates TLS-ALPN-01 by connecting to `tlsPort` on the address the DNS
 * gives for the name: challtestsrv answers 127.0.0.1 for every name, and `tlsPort` is the entry
 * point tlsroute listens on, so the CA's validation connections reach our proxy.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { makePki, type TestCa } from "./pki.ts";

export interface Pebble {
  /** ACME directory URL. */
  directory: string;
  /** The CA of Pebble's own HTTPS API certificate: goes to acme.caCertificates. */
  apiCa: TestCa;
  /** PEM of the root Pebble signs certificates with (fetched from its management API). */
  issuingRoot(): Promise<string>;
  /** File holding issuingRoot(), for openssl -CAfile. */
  issuingRootFile(): Promise<string>;
  output(): string;
  stop(): Promise<void>;
}

export function pebbleInstalled(): boolean {
  try {
    execFileSync("sh", ["-c", "command -v pebble && command -v pebble-challtestsrv"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** A port free right now on 127.0.0.1 (the caller binds it at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, out: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited early (${child.exitCode}):\n${out()}`);
    const open = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} did not open:\n${out()}`);
}

/**
 * Starts challtestsrv and Pebble. `tlsPort` is where Pebble sends TLS-ALPN-01 validations.
 */
export async function startPebble(dir: string, tlsPort: number): Promise<Pebble> {
  mkdirSync(dir, { recursive: true });
  const pki = makePki(join(dir, "pki"));
  const apiCa = pki.ca("Pebble API test CA");
  const apiCert = pki.leaf({ ca: apiCa, cn: "localhost", dns: ["localhost"], ips: ["127.0.0.1"] });
  const [acmePort, managementPort, dnsPort, challManagementPort, httpPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`,
      managementListenAddress: `127.0.0.1:${managementPort}`,
      certificate: apiCert.certFile,
      privateKey: apiCert.keyFile,
      httpPort,
      tlsPort,
      ocspResponderURL: "",
      externalAccountBindingRequired: false,
    },
  };
  const configFile = join(dir, "pebble-config.json");
  writeFileSync(configFile, JSON.stringify(config, null, 2));

  let log = "";
  const collect = (name: string) => (chunk: Buffer) => {
    log += `[${name}] ${chunk.toString()}`;
  };
  const dns = spawn(
    "pebble-challtestsrv",
    [
      "-dns01",
      `127.0.0.1:${dnsPort}`,
      "-http01",
      "",
      "-https01",
      "",
      "-tlsalpn01",
      "",
      "-management",
      `127.0.0.1:${challManagementPort}`,
      "-defaultIPv4",
      "127.0.0.1",
      "-defaultIPv6",
      "",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  dns.stdout?.on("data", collect("challtestsrv"));
  dns.stderr?.on("data", collect("challtestsrv"));
  const pebble = spawn("pebble", ["-config", configFile, "-dnsserver", `127.0.0.1:${dnsPort}`], {
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      // No random waits before validation and no deliberately rejected nonces: fast, deterministic runs.
      PEBBLE_VA_NOSLEEP: "1",
      PEBBLE_WFE_NONCEREJECT: "0",
      PEBBLE_AUTHZREUSE: "0",
    },
  });
  pebble.stdout?.on("data", collect("pebble"));
  pebble.stderr?.on("data", collect("pebble"));
  const stop = async () => {
    for (const child of [pebble, dns]) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
        child.kill("SIGKILL");
      }
    }
  };
  try {
    await waitForPort(challManagementPort, dns, () => log);
    await waitForPort(acmePort, pebble, () => log);
    await waitForPort(managementPort, pebble, () => log);
  } catch (err) {
    await stop();
    throw err;
  }

  let root: string | null = null;
  const issuingRoot = async () => {
    if (root) return root;
    // The management API is HTTPS with the same test certificate as the ACME API.
    root = execFileSync(
      "curl",
      ["-sS", "--cacert", apiCa.certFile, `https://127.0.0.1:${managementPort}/roots/0`],
      {
        encoding: "utf8",
      },
    );
    return root;
  };
  return {
    directory: `https://127.0.0.1:${acmePort}/dir`,
    apiCa,
    issuingRoot,
    async issuingRootFile() {
      const file = join(dir, "pebble-root.pem");
      writeFileSync(file, await issuingRoot());
      return file;
    },
    output: () => log,
    stop,
  };
}
