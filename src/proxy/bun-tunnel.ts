/**
 * Dial and relay on Bun's own sockets: what a passthrough or plain TCP connection does once routed,
 * without a stream object on either side. Same contract as dial.ts + relay.ts (one bound for the dial,
 * the PROXY header first, half-close propagation, Traefik's terminationDelay, a RelayResult for the
 * access line); written against handlers because that is what keeps an idle connection at a few KB.
 *
 * Backpressure: a write the kernel takes only in part leaves the rest queued on the receiving side,
 * and the sending side is paused until that side's `drain` has written it all.
 */

import { encodeProxyHeader } from "../wire/proxy-protocol.ts";
import { connectNative, type NativeSocket, nativeSockets, type SocketOwner } from "./bun-socket.ts";
import type { BunSocketStream } from "./bun-stream.ts";
import type { DialFailure, ProxyAddresses, ResolvedTransport } from "./dial.ts";
import { splitHostPort, tcpFailure } from "./dial.ts";
import type { RelayResult, RelaySide } from "./relay.ts";

const DEFAULT_KEEPALIVE_MS = 15_000;

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
    const keepAlive = this.transport.dialKeepAliveMs;
    if (keepAlive >= 0) socket.setKeepAlive(true, keepAlive === 0 ? DEFAULT_KEEPALIVE_MS : keepAlive);
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
  /** Bytes for this socket that the kernel has not taken yet, oldest first. */
  queue: Uint8Array[] = [];
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

class Tunnel implements SocketOwner {
  /** Set by start(), when the client's socket is taken from its stream. */
  private client!: Side;
  private readonly backend: Side;
  private readonly result: RelayResult = {
    bytesFromClient: 0,
    bytesFromBackend: 0,
    error: null,
    firstClose: "error",
    cutBy: null,
    errorSide: null,
    assumedEnd: null,
  };
  private firstDecided = false;
  private terminationTimer: ReturnType<typeof setTimeout> | null = null;
  private resolved = false;

  constructor(
    private readonly backendDial: NativeBackend,
    private readonly terminationDelayMs: number,
    private readonly resolve: (result: RelayResult) => void,
  ) {
    this.backend = new Side("backend", backendDial.socket);
  }

  private sideOf(socket: NativeSocket): Side {
    return socket === this.client.socket ? this.client : this.backend;
  }

  private other(side: Side): Side {
    return side === this.client ? this.backend : this.client;
  }

  /** Copies a chunk read on `from` to the other socket, queueing what the kernel does not take. */
  forward(from: Side, chunk: Uint8Array): void {
    from.bytesRead += chunk.length;
    const to = this.other(from);
    if (to.closed || to.shut || to.shutdownDue) return;
    if (to.queue.length === 0) {
      const written = to.socket.write(chunk);
      if (written >= chunk.length) return;
      to.queue.push(chunk.subarray(Math.max(0, written)));
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
    while (to.queue.length > 0) {
      const chunk = to.queue[0]!;
      const written = socket.write(chunk);
      if (written < chunk.length) {
        to.queue[0] = chunk.subarray(Math.max(0, written));
        return;
      }
      to.queue.shift();
    }
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
    if (!this.firstDecided) {
      this.firstDecided = true;
      this.result.firstClose = side.name;
    }
    // Propagate the EOF once everything before it is written: the peer may still answer.
    const peer = this.other(side);
    if (!peer.closed && !peer.shut) {
      if (peer.queue.length === 0) this.shutdown(peer);
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
        this.result.cutBy ??= "terminationDelay";
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
      if (!this.result.error) {
        this.result.error = error;
        this.result.errorSide = side.name;
      }
      this.decideFirst("error");
      this.closeBoth();
    } else if (!side.ended && side.shut && side.queue.length === 0) {
      // Bun reports the peer's FIN after ours as the close: a clean end of that direction.
      this.ended(side);
    } else if (!side.ended || side.queue.length > 0) {
      // Closed without its end, or before taking what it was owed: the tunnel goes with it.
      this.decideFirst("error");
      this.closeBoth();
    }
    if (this.client.closed && this.backend.closed) this.finish();
  }

  private decideFirst(how: "error"): void {
    if (this.firstDecided) return;
    this.firstDecided = true;
    this.result.firstClose = how;
  }

  /** Closes both sockets (each close comes back through onClose). */
  closeBoth(): void {
    if (this.terminationTimer) clearTimeout(this.terminationTimer);
    this.terminationTimer = null;
    for (const side of [this.client, this.backend]) if (!side.closed) side.socket.end();
  }

  private finish(): void {
    if (this.resolved) return;
    this.resolved = true;
    if (this.terminationTimer) clearTimeout(this.terminationTimer);
    this.result.bytesFromClient = this.client.bytesRead;
    this.result.bytesFromBackend = this.backend.bytesRead;
    this.resolve(this.result);
  }

  /** Takes both sockets and starts relaying: the peeked bytes first, then what the stream had read. */
  start(stream: BunSocketStream, firstBytes: Uint8Array): void {
    const backend = this.backendDial;
    const client = stream.detach(this);
    if (!client) {
      // The client left while the backend was being dialled: nothing to relay.
      backend.socket.end();
      this.resolved = true;
      this.resolve(this.result);
      return;
    }
    this.client = new Side("client", client.socket);
    backend.socket.data = this;
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
 * Relays between a client taken from its stream and a backend dialled natively, until both are
 * closed. `firstBytes` (the peeked ClientHello) go to the backend before anything else and are not
 * counted. Never rejects; a client already gone ends it at once, as relay() does.
 */
export function relayNative(
  client: BunSocketStream,
  backend: NativeBackend,
  firstBytes: Uint8Array,
  terminationDelayMs: number,
): Promise<RelayResult> {
  return new Promise((resolve) => new Tunnel(backend, terminationDelayMs, resolve).start(client, firstBytes));
}
