/**
 * Dial and relay on Bun's own sockets: what a passthrough or plain TCP connection does once routed,
 * without a stream object on either side. Same contract as dial.ts + relay.ts (one bound for the dial,
 * the PROXY header first, half-close propagation, Traefik's terminationDelay, a RelayResult for the
 * access line); written against handlers because that is what keeps an idle connection at a few KB.
 *
 * Backpressure: a write the kernel takes only in part leaves the rest queued on the receiving side,
 * and the sending side is paused until that side's `drain` has written it all.
 *
 * `fitsBunTunnel` says which routed connections may take this path; `tunnelOnBun` is the path, for
 * connections peeked on the socket's handlers (bun-connection.ts) and for those the stream pipeline
 * routed (connection.ts).
 */

import type { ConnectionFacts, Decision } from "../routing/decide.ts";
import { encodeProxyHeader } from "../wire/proxy-protocol.ts";
import { dialFirst, relayEnded } from "./backend.ts";
import { connectNative, type NativeSocket, nativeSockets, type SocketOwner } from "./bun-socket.ts";
import type { Detached } from "./bun-stream.ts";
import type { DialFailure, ProxyAddresses, ResolvedTransport } from "./dial.ts";
import { keepAliveDelayMs, splitHostPort, tcpFailure } from "./dial.ts";
import type { AccessReason, AccessRecord, Logger } from "./log.ts";
import { emptyRelayResult, type RelayResult, type RelaySide } from "./relay.ts";
import type { ServerTarget } from "./services.ts";

/** A dialled backend, paused until the tunnel takes it; what came before that is kept. */
export interface NativeBackend {
  socket: NativeSocket;
  /** Set when the backend closed between the dial and the tunnel. */
  closedEarly: Error | true | null;
}

export type NativeDialResult = { ok: true; backend: NativeBackend } | DialFailure;

/** The dial's owner of the socket: settles once, then only remembers a close until the tunnel takes over. */
class Dial implements SocketOwner {
  private settled = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private backend: NativeBackend | null = null;

  constructor(
    private readonly address: string,
    private readonly transport: ResolvedTransport,
    private readonly proxy: ProxyAddresses,
    private readonly resolve: (result: NativeDialResult) => void,
  ) {
    if (transport.dialTimeoutMs > 0) {
      this.timer = setTimeout(
        () =>
          this.fail({
            ok: false,
            code: "timeout",
            message: `no connection to ${address} within ${transport.dialTimeoutMs}ms`,
          }),
        transport.dialTimeoutMs,
      );
      this.timer.unref?.();
    }
  }

  private fail(failure: DialFailure): void {
    if (this.settled) return;
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
    this.resolve(failure);
  }

  onOpen(socket: NativeSocket): void {
    if (this.settled) {
      // Connected after the bound: nobody wants it any more.
      socket.end();
      return;
    }
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
    // Nothing is read before the tunnel is ready for it.
    socket.pause();
    socket.setNoDelay(true);
    const keepAlive = keepAliveDelayMs(this.transport);
    if (keepAlive !== null) socket.setKeepAlive(true, keepAlive);
    const version = this.transport.proxyProtocolVersion;
    if (version !== null) {
      // A header is a few dozen bytes: a fresh connection's send buffer takes it whole.
      const header = encodeProxyHeader(version, this.proxy.src, this.proxy.dst);
      if (socket.write(header) < header.length) {
        socket.end();
        this.resolve({
          ok: false,
          code: "other",
          message: `${this.address}: the PROXY header could not be sent`,
        });
        return;
      }
    }
    this.backend = { socket, closedEarly: null };
    this.resolve({ ok: true, backend: this.backend });
  }

  onConnectError(error: Error & { code?: string }): void {
    // Bun says only "Failed to connect"; the access line names the error and the address as Node does.
    const described =
      error.code && !error.message.includes(error.code)
        ? Object.assign(new Error(`connect ${error.code} ${this.address}`), { code: error.code })
        : error;
    this.fail(tcpFailure(described));
  }

  onClose(_socket: NativeSocket, error: Error | undefined): void {
    if (this.backend) this.backend.closedEarly = error ?? true;
    else this.fail({ ok: false, code: "other", message: `${this.address} closed the connection` });
  }

  // Paused from open to hand-over: nothing to read yet.
  onData(): void {}
  onEnd(): void {}
  onDrain(): void {}
}

/** Dials `address` (host:port) on Bun's sockets: connected, no Nagle delay, keep-alive, PROXY header sent. */
export function dialNative(
  address: string,
  transport: ResolvedTransport,
  proxy: ProxyAddresses,
): Promise<NativeDialResult> {
  const bun = nativeSockets();
  const target = splitHostPort(address);
  if (!bun || !target) {
    return Promise.resolve({ ok: false, code: "other", message: `"${address}" is not host:port` });
  }
  return new Promise((resolve) =>
    connectNative(bun, target.host, target.port, new Dial(address, transport, proxy, resolve)),
  );
}

/** One socket of a tunnel and what is still owed to it. */
class Side {
  /** Bytes for this socket that the kernel has not taken yet, oldest first (null while none). */
  queue: Uint8Array[] | null = null;
  /** Its peer's end of stream was read. */
  ended = false;
  /** We sent it our FIN (or will once the queue is written: shutdownDue). */
  shut = false;
  shutdownDue = false;
  closed = false;
  /** Reading stopped because the other side's queue is full. */
  paused = false;
  bytesRead = 0;

  constructor(
    readonly name: RelaySide,
    readonly socket: NativeSocket,
  ) {}
}

/**
 * Both sockets' owner. What an idle tunnel holds is kept to this object, its two sides and the
 * callback: no promise, no result object before the end (an idle connection costs what it keeps).
 */
class Tunnel implements SocketOwner {
  private readonly client: Side;
  private readonly backend: Side;
  private firstClose: RelayResult["firstClose"] | null = null;
  private error: Error | null = null;
  private errorSide: RelaySide | null = null;
  private cutBy: RelayResult["cutBy"] = null;
  private terminationTimer: ReturnType<typeof setTimeout> | null = null;
  private done = false;

  constructor(
    client: NativeSocket,
    backend: NativeSocket,
    private readonly terminationDelayMs: number,
    private readonly onDone: (result: RelayResult) => void,
  ) {
    this.client = new Side("client", client);
    this.backend = new Side("backend", backend);
  }

  private sideOf(socket: NativeSocket): Side {
    return socket === this.client.socket ? this.client : this.backend;
  }

  private other(side: Side): Side {
    return side === this.client ? this.backend : this.client;
  }

  /** Copies a chunk read on `from` to the other socket, queueing what the kernel does not take. */
  private forward(from: Side, chunk: Uint8Array): void {
    from.bytesRead += chunk.length;
    const to = this.other(from);
    if (to.closed || to.shut || to.shutdownDue) return;
    if (to.queue === null) {
      const written = to.socket.write(chunk);
      if (written >= chunk.length) return;
      to.queue = [chunk.subarray(Math.max(0, written))];
    } else to.queue.push(chunk);
    if (!from.paused && !from.ended) {
      from.paused = true;
      from.socket.pause();
    }
  }

  onData(socket: NativeSocket, chunk: Buffer): void {
    this.forward(this.sideOf(socket), chunk);
  }

  onDrain(socket: NativeSocket): void {
    const to = this.sideOf(socket);
    const queue = to.queue;
    if (queue === null) return;
    while (queue.length > 0) {
      const chunk = queue[0]!;
      const written = socket.write(chunk);
      if (written < chunk.length) {
        queue[0] = chunk.subarray(Math.max(0, written));
        return;
      }
      queue.shift();
    }
    to.queue = null;
    if (to.shutdownDue) this.shutdown(to);
    const from = this.other(to);
    if (from.paused) {
      from.paused = false;
      if (!from.closed) from.socket.resume();
    }
  }

  private shutdown(side: Side): void {
    side.shutdownDue = false;
    side.shut = true;
    side.socket.shutdown();
  }

  onEnd(socket: NativeSocket): void {
    this.ended(this.sideOf(socket));
  }

  private ended(side: Side): void {
    if (side.ended) return;
    side.ended = true;
    this.firstClose ??= side.name;
    // Propagate the EOF once everything before it is written: the peer may still answer.
    const peer = this.other(side);
    if (!peer.closed && !peer.shut) {
      if (peer.queue === null) this.shutdown(peer);
      else peer.shutdownDue = true;
    }
    if (peer.ended) {
      // Both directions finished: the sockets close by themselves once their FINs have crossed.
      if (this.terminationTimer) clearTimeout(this.terminationTimer);
      this.terminationTimer = null;
      return;
    }
    if (this.terminationDelayMs >= 0 && !this.terminationTimer) {
      this.terminationTimer = setTimeout(() => {
        this.terminationTimer = null;
        if (peer.ended) return;
        this.cutBy ??= "terminationDelay";
        this.closeBoth();
      }, this.terminationDelayMs);
      this.terminationTimer.unref?.();
    }
  }

  onClose(socket: NativeSocket, error: Error | undefined): void {
    const side = this.sideOf(socket);
    if (side.closed) return;
    side.closed = true;
    if (error) {
      if (!this.error) {
        this.error = error;
        this.errorSide = side.name;
      }
      this.firstClose ??= "error";
      this.closeBoth();
    } else if (!side.ended && side.shut && side.queue === null) {
      // Bun reports the peer's FIN after ours as the close: a clean end of that direction.
      this.ended(side);
    } else if (!side.ended || side.queue !== null) {
      // Closed without its end, or before taking what it was owed: the tunnel goes with it.
      this.firstClose ??= "error";
      this.closeBoth();
    }
    if (this.client.closed && this.backend.closed) this.finish();
  }

  /** Closes both sockets (each close comes back through onClose). */
  private closeBoth(): void {
    if (this.terminationTimer) clearTimeout(this.terminationTimer);
    this.terminationTimer = null;
    for (const side of [this.client, this.backend]) if (!side.closed) side.socket.end();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.terminationTimer) clearTimeout(this.terminationTimer);
    this.onDone({
      bytesFromClient: this.client.bytesRead,
      bytesFromBackend: this.backend.bytesRead,
      error: this.error,
      firstClose: this.firstClose ?? "error",
      cutBy: this.cutBy,
      errorSide: this.errorSide,
      assumedEnd: null,
    });
  }

  /** Starts relaying: the peeked bytes first, then what the stream had read, then both sockets read. */
  start(client: Detached, backend: NativeBackend, firstBytes: Uint8Array): void {
    if (firstBytes.length > 0) {
      this.forward(this.client, firstBytes);
      this.client.bytesRead -= firstBytes.length;
    }
    if (client.unread && client.unread.length > 0) this.forward(this.client, client.unread);
    if (client.ended) this.ended(this.client);
    if (backend.closedEarly) {
      this.onClose(backend.socket, backend.closedEarly === true ? undefined : backend.closedEarly);
      return;
    }
    for (const side of [this.client, this.backend]) if (!side.paused && !side.closed) side.socket.resume();
  }
}

/**
 * Relays between a client's socket (null: it left while the backend was dialled) and a backend
 * dialled natively, until both are closed; then `onDone` gets the result. `firstBytes` (the peeked
 * ClientHello) go to the backend before anything else and are not counted.
 */
export function relayNative(
  client: Detached | null,
  backend: NativeBackend,
  firstBytes: Uint8Array,
  terminationDelayMs: number,
  onDone: (result: RelayResult) => void,
): void {
  if (!client) {
    // Nothing to relay, as relay() does for a client handed over dead.
    backend.socket.end();
    onDone(emptyRelayResult());
    return;
  }
  const tunnel = new Tunnel(client.socket, backend.socket, terminationDelayMs, onDone);
  client.socket.data = tunnel;
  backend.socket.data = tunnel;
  tunnel.start(client, backend, firstBytes);
}

/**
 * Whether a routed connection can be relayed on Bun's sockets: nothing in it needs a stream. Not
 * for TLS terminated by node:tls (`terminatesNatively` false: Bun's own TLS does it on an accepted
 * socket, bun-connection.ts), nor PostgreSQL STARTTLS (the SSLRequest exchange with the backend) or
 * a session whose cancel key is learned (`learnsCancelKey`: the backend's stream is watched), nor a
 * service with whoami or a backend dialled with TLS (`plainServers` false).
 */
export function fitsBunTunnel(
  decision: Decision,
  facts: ConnectionFacts,
  plainServers: boolean,
  learnsCancelKey: boolean,
  terminatesNatively = false,
): boolean {
  return (
    (decision.mode !== "terminate" || terminatesNatively) &&
    !facts.postgres &&
    plainServers &&
    !learnsCancelKey
  );
}

/** Where the client's socket comes from once a backend answered, and how to let it go if none does. */
export interface TunnelClient {
  take(): Detached | null;
  drop(): void;
}

/** Dials the candidates on Bun's sockets and relays; the access line is written when the tunnel ends. */
export async function tunnelOnBun(
  client: TunnelClient,
  candidates: readonly ServerTarget[],
  firstBytes: Uint8Array,
  peer: ProxyAddresses,
  record: AccessRecord,
  finish: (reason: AccessReason, detail?: string) => void,
  log: Logger,
): Promise<void> {
  const dialed = await dialFirst(candidates, record, (target) =>
    dialNative(target.address, target.transport, peer),
  );
  if (!dialed.ok) {
    client.drop();
    finish("backend_unreachable", dialed.message);
    return;
  }
  const terminationDelayMs = dialed.target.transport.terminationDelayMs;
  const onDone = relayEnded(firstBytes.length, { terminationDelayMs }, record, finish, log);
  relayNative(client.take(), dialed.backend, firstBytes, terminationDelayMs, onDone);
}
