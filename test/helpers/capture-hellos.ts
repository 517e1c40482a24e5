/**
 * Regenerates fixtures/clienthello/*.hex from real clients on this machine:
 *
 *   node --import tsx test/helpers/capture-hellos.ts
 *
 * Each client connects to a loopback server that records the first bytes and closes. The expectations in
 * test/clienthello.test.ts follow the flags used here, so change both together.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { bytesToHex, captureFirstBytes, FIXTURE_DIR } from "./hello.ts";

/** ALPN list that makes Node's hello larger than one 1500-byte Ethernet segment. */
export const BIG_ALPN = Array.from({ length: 120 }, (_, i) => `x-proto-${String(i).padStart(3, "0")}`);

function command(argv: readonly string[]) {
  return (port: number) => {
    const args = argv.map((a) => a.replaceAll("PORT", String(port)));
    const child = spawn(args[0]!, args.slice(1), { stdio: ["pipe", "ignore", "ignore"] });
    child.on("error", () => {});
    return { stop: () => child.kill() };
  };
}

function nodeClient(options: tls.ConnectionOptions) {
  return (port: number) => {
    const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...options });
    socket.on("error", () => {});
    return { stop: () => socket.destroy() };
  };
}

const captures: Record<string, (port: number) => { stop(): void }> = {
  "openssl-tls13": command([
    "openssl",
    "s_client",
    "-connect",
    "127.0.0.1:PORT",
    "-servername",
    "foo.example",
    "-alpn",
    "h2,http/1.1",
    "-groups",
    "X25519:P-256",
  ]),
  "openssl-tls12": command([
    "openssl",
    "s_client",
    "-connect",
    "127.0.0.1:PORT",
    "-tls1_2",
    "-servername",
    "tls12.example",
    "-alpn",
    "http/1.1",
  ]),
  "openssl-nosni": command(["openssl", "s_client", "-connect", "127.0.0.1:PORT", "-noservername"]),
  curl: command([
    "curl",
    "-sk",
    "--http2",
    "--max-time",
    "5",
    "--resolve",
    "curl.example:PORT:127.0.0.1",
    "https://curl.example:PORT/",
  ]),
  node: nodeClient({ servername: "node.example", ALPNProtocols: ["h2", "http/1.1"] }),
  "node-big": nodeClient({ servername: "big.example", ALPNProtocols: BIG_ALPN }),
};

async function main(): Promise<void> {
  for (const [name, client] of Object.entries(captures)) {
    const bytes = await captureFirstBytes(client);
    writeFileSync(path.join(FIXTURE_DIR, `${name}.hex`), bytesToHex(bytes));
    console.log(`${name}: ${bytes.length} bytes`);
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === import.meta.filename) {
  await main();
}
