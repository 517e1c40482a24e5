/**
 * PostgreSQL cancel requests. A client cancels a running query by opening a new, plaintext
 * connection that carries only the process id and secret key of its session: no TLS, no SNI, nothing
 * to route on. On connections where we terminate TLS we see the backend's BackendKeyData go by, so we
 * remember which server owns each key and send the cancel there. On passthrough connections the key
 * travels encrypted and cannot be learned (see the README).
 */
import type { Duplex } from "node:stream";
import type { ConnectionFacts, Decision } from "../routing/decide.ts";
import { type BackendKeyData, BackendMessageScanner, encodeCancelRequest } from "../wire/postgres.ts";
import { dialServer, type ProxyAddresses } from "./dial.ts";
import type { ServerTarget } from "./services.ts";

/**
 * Whether a connection's cancel key is learned (the backend's stream watched): a PostgreSQL session
 * (STARTTLS, ALPN `postgresql`, or a plaintext startup) whose backend bytes we can read, which is any
 * mode but passthrough.
 */
export function learnsCancelKey(
  mode: Decision["mode"],
  facts: ConnectionFacts,
  postgresPlaintext: boolean,
): boolean {
  const speaksPostgres = facts.postgres || facts.alpn.includes("postgresql") || postgresPlaintext;
  return speaksPostgres && mode !== "passthrough";
}

function keyOf(data: BackendKeyData): string {
  return `${data.processId}:${Buffer.from(data.secretKey).toString("hex")}`;
}

/** Which server owns which cancel key; process-wide, so sessions survive a reload. */
export class CancelRegistry {
  private readonly owners = new Map<string, ServerTarget>();

  /** Watches the start of a backend's stream for its BackendKeyData; forgets it when the session ends. */
  watch(backend: Duplex, server: ServerTarget): void {
    const scanner = new BackendMessageScanner();
    let learned: string | null = null;
    const onData = (chunk: Buffer) => {
      const scan = scanner.push(chunk);
      if (scan.keyData) {
        learned = keyOf(scan.keyData);
        this.owners.set(learned, server);
      }
      if (scan.done) backend.removeListener("data", onData);
    };
    backend.on("data", onData);
    backend.once("close", () => {
      if (learned !== null) this.owners.delete(learned);
    });
  }

  owner(data: BackendKeyData): ServerTarget | undefined {
    return this.owners.get(keyOf(data));
  }

  get size(): number {
    return this.owners.size;
  }
}

/** The one registry of this process: sessions outlive configuration reloads, so it is not per snapshot. */
export const cancelRegistry = new CancelRegistry();

/**
 * Sends a CancelRequest to the server that owns the session (with the transport's PROXY header, as its
 * other connections get) and closes; resolves with an error message, or null when it was delivered.
 */
export async function sendCancel(
  server: ServerTarget,
  data: BackendKeyData,
  proxy: ProxyAddresses,
): Promise<string | null> {
  // Cancel requests are plaintext: a backend that speaks TLS expects its own negotiation first.
  const dialed = await dialServer(server.address, false, server.transport, proxy);
  if (!dialed.ok) return dialed.message;
  const socket = dialed.socket;
  return new Promise((resolve) => {
    socket.once("close", () => resolve(null));
    // The server closes after reading a cancel request; it never answers.
    socket.end(encodeCancelRequest(data.processId, data.secretKey));
    setTimeout(() => socket.destroy(), 5000).unref();
  });
}
