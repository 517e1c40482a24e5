/**
 * Bun's own TCP sockets (`Bun.listen`, `Bun.connect`), typed for the part we use. On Bun they replace
 * `node:net` at the edges of serve: a connection on them costs a fraction of the memory and CPU of a
 * `net.Socket` (docs/benchmarks.md, "Reference rows"), which is what the passthrough memory goal needs.
 *
 * What differs from `node:net`, measured on Bun 1.4.5 and relied on here and in bun-stream.ts /
 * bun-tunnel.ts:
 * - handlers instead of events: one handler object per listener; the per-connection state is the
 *   socket's `data`, an owner that can change during the connection (a stream adapter, then a tunnel);
 * - `write()` takes what the kernel accepts and returns how much; the rest is the caller's to keep
 *   until `drain` (Bun buffers nothing);
 * - `shutdown()` sends FIN and keeps reading (the half-close); `end()` closes (FIN, no reset), and
 *   the socket's `close` handler runs before it returns;
 * - once both sides have sent FIN, the socket closes: the second FIN arrives as `close`, not `end`;
 * - the chunk a `data` handler gets is its own (not reused by the next read).
 */
import { currentRuntime } from "../tls/runtime-support.ts";

/** The part of a Bun TCP socket serve uses. */
export interface NativeSocket {
  data: SocketOwner;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  write(data: Uint8Array): number;
  shutdown(): void;
  end(): void;
  pause(): void;
  resume(): void;
  setNoDelay(noDelay: boolean): boolean;
  setKeepAlive(enable: boolean, initialDelayMs: number): boolean;
  /**
   * Starts TLS on this socket, as the server when `isServer`; `initialData` are bytes already read
   * (the ClientHello the router peeked). Returns [raw, tls]: from then on the raw socket still reports
   * the encrypted bytes it reads, and the TLS socket carries the connection.
   */
  upgradeTLS?(options: {
    isServer: boolean;
    initialData: Uint8Array;
    data: SocketOwner;
    tls: object;
    socket: Handlers;
  }): [NativeSocket, NativeSocket] | undefined;
  /** 1 while open, -1 once closed (Bun 1.4.5). */
  readonly readyState?: number;
  /** On a TLS socket: "TLSv1.3", …, once the handshake is done. */
  getTLSVersion?(): string | null;
}

/** Whoever handles a socket's events now. `open` only for dialled sockets, whose owner exists before. */
export interface SocketOwner {
  onData(socket: NativeSocket, chunk: Buffer): void;
  onEnd(socket: NativeSocket): void;
  onDrain(socket: NativeSocket): void;
  onClose(socket: NativeSocket, error: Error | undefined): void;
  onOpen?(socket: NativeSocket): void;
  onConnectError?(error: Error): void;
  /** On a TLS socket: the handshake finished, or failed (`error` says why). */
  onHandshake?(socket: NativeSocket, success: boolean, error: Error | undefined): void;
}

interface Handlers {
  open(socket: NativeSocket): void;
  data(socket: NativeSocket, chunk: Buffer): void;
  end(socket: NativeSocket): void;
  drain(socket: NativeSocket): void;
  close(socket: NativeSocket, error?: Error): void;
  error(socket: NativeSocket, error: Error): void;
  connectError?(socket: NativeSocket, error: Error): void;
  handshake?(socket: NativeSocket, success: boolean, error: Error | undefined): void;
}

export interface NativeListener {
  readonly port: number;
  readonly hostname: string;
  stop(closeActiveConnections?: boolean): void;
}

interface BunApi {
  listen(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    reusePort?: boolean;
    socket: Handlers;
  }): NativeListener;
  connect(options: {
    hostname: string;
    port: number;
    allowHalfOpen: boolean;
    data: SocketOwner;
    socket: Handlers;
  }): Promise<NativeSocket>;
}

/** Set `TLSROUTE_SOCKETS=node` to keep Bun on `node:net` (to compare, or if its sockets misbehave). */
export const SOCKETS_ENV = "TLSROUTE_SOCKETS";

/** Bun's socket API when serve should use it: on Bun, unless `TLSROUTE_SOCKETS=node`. */
export function nativeSockets(): BunApi | null {
  if (currentRuntime() !== "bun" || process.env[SOCKETS_ENV] === "node") return null;
  return (globalThis as unknown as { Bun: BunApi }).Bun;
}

/** The owner of a socket being closed without ever being served (accepted during shutdown). */
export const CLOSED_OWNER: SocketOwner = {
  onData: () => undefined,
  onEnd: () => undefined,
  onDrain: () => undefined,
  onClose: () => undefined,
};

export interface AcceptCallbacks {
  /** A new connection: sets its first owner (`socket.data`) before anything else happens to it. */
  accept(socket: NativeSocket): void;
  /** The connection closed, whoever owned it last. */
  closed(socket: NativeSocket): void;
}

/** The listener's handlers: an accepted socket gets its owner from `accept`, then every event goes to the owner. */
function acceptHandlers(callbacks: AcceptCallbacks): Handlers {
  const close = (socket: NativeSocket, error?: Error): void => {
    callbacks.closed(socket);
    socket.data.onClose(socket, error);
  };
  return {
    open: (socket) => callbacks.accept(socket),
    data: (socket, chunk) => socket.data.onData(socket, chunk),
    end: (socket) => socket.data.onEnd(socket),
    drain: (socket) => socket.data.onDrain(socket),
    close,
    // Whether Bun follows an error with a close varies: owners take a second close as a no-op.
    error: close,
  };
}

/** One set for every dialled socket: their owner is set at connect time. */
const dialHandlers: Handlers = {
  open: (socket) => socket.data.onOpen?.(socket),
  data: (socket, chunk) => socket.data.onData(socket, chunk),
  end: (socket) => socket.data.onEnd(socket),
  drain: (socket) => socket.data.onDrain(socket),
  close: (socket, error) => socket.data.onClose(socket, error),
  error: (socket, error) => socket.data.onClose(socket, error),
  // A name that does not resolve fails before the socket has its data: the promise reports that one.
  connectError: (socket, error) => socket.data?.onConnectError?.(error),
};

/** Whether Bun has closed the socket already. */
export function isClosed(socket: NativeSocket): boolean {
  return socket.readyState !== undefined && socket.readyState < 0;
}

/** One set for every TLS socket started on an accepted one: their owner is set by the upgrade. */
const upgradedHandlers: Handlers = {
  ...dialHandlers,
  handshake: (socket, success, error) => socket.data.onHandshake?.(socket, success, error),
};

/**
 * Starts the server side of TLS on an accepted socket, with the bytes already read from it; `owner`
 * gets the TLS socket's events, `onHandshake` first. Null when this Bun cannot upgrade a socket.
 *
 * The accepted socket object is done with after this: Bun carries the connection on two new ones.
 * `raw` keeps the listener's handlers and reports the encrypted bytes (ignored here); it is the one
 * whose close the listener sees, and its `end()` sends FIN and leads to the close. `tls` carries the
 * plaintext.
 */
export function upgradeNative(
  accepted: NativeSocket,
  config: object,
  initialData: Uint8Array,
  owner: SocketOwner,
): { raw: NativeSocket; tls: NativeSocket } | null {
  if (typeof accepted.upgradeTLS !== "function") return null;
  let pair: [NativeSocket, NativeSocket] | undefined;
  try {
    pair = accepted.upgradeTLS({
      isServer: true,
      initialData,
      data: owner,
      tls: config,
      socket: upgradedHandlers,
    });
  } catch {
    // A configuration Bun refuses: the caller says the handshake could not start.
    return null;
  }
  if (!pair) return null;
  pair[0].data = CLOSED_OWNER;
  return { raw: pair[0], tls: pair[1] };
}

/** Listens with half-open connections allowed; under --workers every worker binds the same port. */
export function listenNative(
  bun: BunApi,
  host: string,
  port: number,
  sharedPort: boolean,
  callbacks: AcceptCallbacks,
): NativeListener {
  return bun.listen({
    // "" (every interface) is "::" as for node:net: IPv6 and IPv4-mapped connections alike.
    hostname: host || "::",
    port,
    allowHalfOpen: true,
    ...(sharedPort ? { reusePort: true } : {}),
    socket: acceptHandlers(callbacks),
  });
}

/** Dials host:port; the owner gets `onOpen` or `onConnectError` (the promise is only for errors nobody else sees). */
export function connectNative(bun: BunApi, host: string, port: number, owner: SocketOwner): void {
  bun
    .connect({ hostname: host, port, allowHalfOpen: true, data: owner, socket: dialHandlers })
    .catch((error: unknown) =>
      owner.onConnectError?.(error instanceof Error ? error : new Error(String(error))),
    );
}
