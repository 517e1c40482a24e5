/**
 * A Bun socket seen as a `node:stream` Duplex with the address fields of a `net.Socket`, so that the
 * connection pipeline (peek, PostgreSQL negotiation, PROXY header, alerts) works on it unchanged; TLS
 * is terminated on it by Bun's own TLS (`startTls`, the connection then goes on as a BunTlsStream). A connection that ends up relayed to a plain backend
 * leaves the stream with `detach()`: from then on its socket belongs to a native tunnel
 * (bun-tunnel.ts) and the stream object can be collected.
 */
import { Duplex } from "node:stream";
import { type NativeSocket, type SocketOwner, upgradeNative } from "./bun-socket.ts";
import type { ProxyAddresses } from "./dial.ts";

/** Tells the listener which socket stands for the connection once TLS started on it (server.ts). */
export type Retrack = (before: NativeSocket, after: NativeSocket) => void;

/**
 * How a TLS handshake on Bun's own TLS ended: done, out of time, the connection closed (`error` when
 * Bun gave one), or refused by the TLS layer (`error` says why). The words are terminate.ts's.
 */
export type NativeHandshake =
  | { ok: true; stream: BunTlsStream }
  | { ok: false; reason: "timeout" | "closed" | "failed"; error: Error | null };

export interface Detached {
  socket: NativeSocket;
  /** Bytes the stream had read and nobody consumed: they go first. */
  unread: Buffer | null;
  /** Whether the client's end of stream was already read. */
  ended: boolean;
}

export class BunSocketStream extends Duplex implements SocketOwner {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  protected socket: NativeSocket | null;
  /** A write the kernel took only part of: the rest, and the callback that waits for it. */
  private pending: { bytes: Uint8Array; callback: (error?: Error | null) => void } | null = null;
  /** `_final` came while a write was pending: the FIN follows the last byte. */
  private finalCallback: ((error?: Error | null) => void) | null = null;
  private readEnded = false;

  /** `addresses`: the socket's, read at accept (Bun's getters answer nothing once it is closed). */
  constructor(
    socket: NativeSocket | null,
    private readonly addresses: ProxyAddresses,
    private readonly retrack: Retrack,
  ) {
    super({ allowHalfOpen: true });
    this.socket = socket;
    this.remoteAddress = addresses.src?.ip ?? "";
    this.remotePort = addresses.src?.port ?? 0;
    this.localAddress = addresses.dst?.ip ?? "";
    this.localPort = addresses.dst?.port ?? 0;
  }

  setNoDelay(noDelay = true): this {
    this.socket?.setNoDelay(noDelay);
    return this;
  }

  setKeepAlive(enable = false, initialDelayMs = 0): this {
    this.socket?.setKeepAlive(enable, initialDelayMs);
    return this;
  }

  // ----- SocketOwner: the socket's events --------------------------------------------------------
  onData(socket: NativeSocket, chunk: Buffer): void {
    // A full read buffer stops the socket until the reader asks for more (_read).
    if (!this.push(chunk)) socket.pause();
  }

  onEnd(): void {
    this.readEnded = true;
    this.push(null);
  }

  onDrain(socket: NativeSocket): void {
    const pending = this.pending;
    if (!pending) return;
    const written = socket.write(pending.bytes);
    if (written < pending.bytes.length) {
      pending.bytes = pending.bytes.subarray(Math.max(0, written));
      return;
    }
    this.pending = null;
    pending.callback();
    if (this.finalCallback) this.shutdownNow(this.finalCallback);
  }

  onClose(_socket: NativeSocket, error: Error | undefined): void {
    this.socket = null;
    if (error) this.destroy(error);
    else {
      // Both FINs exchanged (Bun reports the second as close): what was not read as 'end' ends now.
      if (!this.readEnded) this.onEnd();
      this.destroy();
    }
  }

  // ----- Duplex ----------------------------------------------------------------------------------
  override _read(): void {
    this.socket?.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const socket = this.socket;
    if (!socket) {
      callback(new Error("the connection is closed"));
      return;
    }
    const written = socket.write(chunk);
    // Bun answers -1 for a socket that is closing: its close comes next and ends the stream.
    if (written < 0) callback(new Error("the connection is closed"));
    else if (written >= chunk.length) callback();
    else this.pending = { bytes: chunk.subarray(written), callback };
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.pending) this.finalCallback = callback;
    else this.shutdownNow(callback);
  }

  private shutdownNow(callback: (error?: Error | null) => void): void {
    this.finalCallback = null;
    this.socket?.shutdown();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const socket = this.socket;
    this.socket = null;
    // end(), not terminate(): a close, as net.Socket's destroy() does, not a reset.
    socket?.end();
    callback(error);
  }

  /** Whether this connection can start TLS with Bun's own TLS (startTls). */
  canStartTls(): boolean {
    return typeof this.socket?.upgradeTLS === "function";
  }

  /**
   * Terminates TLS on this connection with Bun's own TLS (`config`: Terminator.nativeConfig()), fed
   * `peeked` (the ClientHello the pipeline read) and whatever the stream still holds. The connection
   * goes on in the BunTlsStream it resolves with; this stream is done either way. `timeoutMs` bounds
   * the handshake.
   */
  startTls(config: object, peeked: Uint8Array, timeoutMs: number): Promise<NativeHandshake> {
    const socket = this.socket;
    // A client whose end came before the upgrade would never be seen to end by Bun's TLS.
    if (!socket || this.pending || this.destroyed || this.readEnded) {
      this.destroy();
      return Promise.resolve({ ok: false, reason: "closed", error: null });
    }
    const unread = this.readableLength > 0 ? (this.read() as Buffer | null) : null;
    const initial = unread ? Buffer.concat([peeked, unread]) : peeked;
    this.socket = null;
    return new Promise((resolve) => {
      const tls = new BunTlsStream(this.addresses, this.retrack, resolve, timeoutMs);
      const upgraded = upgradeNative(socket, config, initial, tls);
      this.destroy();
      if (!upgraded) {
        socket.end();
        tls.settle({
          ok: false,
          reason: "failed",
          error: new Error("this Bun cannot start TLS on the socket"),
        });
        return;
      }
      this.retrack(socket, upgraded.raw);
      tls.attach(upgraded.tls);
    });
  }

  /**
   * Gives the socket up, with the bytes read and not consumed; the caller makes itself the socket's
   * owner (`socket.data`) before returning to the event loop. Null when the stream can no longer give
   * it up: closed, or a write still pending.
   */
  detach(): Detached | null {
    const socket = this.socket;
    if (!socket || this.pending || this.destroyed) return null;
    const unread = this.readableLength > 0 ? (this.read() as Buffer | null) : null;
    this.socket = null;
    const detached: Detached = { socket, unread, ended: this.readEnded };
    // The stream says goodbye like a closed socket would, so whoever tracks it lets go.
    this.destroy();
    return detached;
  }
}

/** What a TLS socket of Bun's own says about its session (Bun 1.4.5). */
interface NativeTlsSocket extends NativeSocket {
  getCipher?(): { name: string } | undefined;
  getPeerCertificate?(): Record<string, unknown> | undefined;
  readonly alpnProtocol?: string | false | null;
  readonly authorized?: boolean;
}

/**
 * A connection whose TLS Bun's own TLS terminated (BunSocketStream.startTls): the same Duplex over the
 * TLS socket, with what the pipeline reads of a `tls.TLSSocket` (version, cipher, ALPN, the client's
 * certificate and whether it verified).
 */
export class BunTlsStream extends BunSocketStream {
  private resolveHandshake: ((outcome: NativeHandshake) => void) | null;
  private timer: ReturnType<typeof setTimeout> | null;
  /** Why the client certificate did not verify, as the handshake reported it (OpenSSL's code). */
  authorizationError: string | null = null;

  constructor(
    addresses: ProxyAddresses,
    retrack: Retrack,
    resolve: (outcome: NativeHandshake) => void,
    timeoutMs: number,
  ) {
    super(null, addresses, retrack);
    this.resolveHandshake = resolve;
    this.timer = setTimeout(
      () => this.settle({ ok: false, reason: "timeout", error: null }),
      Math.max(1, timeoutMs),
    );
  }

  /** The TLS socket, once the upgrade returned (its handshake may already have failed inside it). */
  attach(socket: NativeSocket): void {
    if (!this.destroyed) this.socket ??= socket;
  }

  /** Reports the handshake's outcome, once; a failed one closes the connection. */
  settle(outcome: NativeHandshake): void {
    const resolve = this.resolveHandshake;
    if (!resolve) return;
    this.resolveHandshake = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!outcome.ok) this.destroy();
    resolve(outcome);
  }

  onHandshake(socket: NativeSocket, success: boolean, error: Error | undefined): void {
    this.socket ??= socket;
    const reason = error as (Error & { code?: string }) | undefined;
    this.authorizationError = reason ? (reason.code ?? reason.message) : null;
    this.settle(success ? { ok: true, stream: this } : { ok: false, reason: "failed", error: error ?? null });
  }

  override onClose(socket: NativeSocket, error: Error | undefined): void {
    this.settle({ ok: false, reason: "closed", error: error ?? null });
    super.onClose(socket, error);
  }

  private get tls(): NativeTlsSocket | null {
    return this.socket as NativeTlsSocket | null;
  }

  getProtocol(): string | null {
    return this.tls?.getTLSVersion?.() ?? null;
  }

  getCipher(): { name: string } | undefined {
    return this.tls?.getCipher?.();
  }

  get alpnProtocol(): string | false | null {
    return this.tls?.alpnProtocol ?? null;
  }

  get authorized(): boolean {
    return this.tls?.authorized === true;
  }

  getPeerCertificate(): Record<string, unknown> {
    return this.tls?.getPeerCertificate?.() ?? {};
  }
}
