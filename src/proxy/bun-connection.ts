/**
 * A connection accepted on Bun's own sockets. Its first bytes are read on the socket's handlers and
 * decide() is asked at once: a passthrough or plain TCP route to plain backends, and a terminating one
 * with no client certificate to check (TLS started on this socket by Bun's own TLS first), is dialled
 * and relayed on Bun's sockets (bun-tunnel.ts) without any stream object; anything else (PROXY protocol, PostgreSQL,
 * refusals and their alerts, whoami, inFlightConn limits, an ACME challenge) goes to serveConnection
 * over a BunSocketStream, with the bytes already read. Allocating nothing per connection beyond what
 * it keeps is the point: on Bun, garbage left by each connection counts in its memory until a GC.
 */
import type { ConnectionFacts } from "../routing/decide.ts";
import { decide } from "../routing/decide.ts";
import { type NativeSocket, type SocketOwner, upgradeNative } from "./bun-socket.ts";
import { BunSocketStream, type Detached, type Retrack } from "./bun-stream.ts";
import { fitsBunTunnel, type TunnelClient, tunnelOnBun } from "./bun-tunnel.ts";
import {
  type ConnectionEnv,
  classify,
  factsBeforeBytes,
  finishRefusedHandshake,
  serveConnection,
} from "./connection.ts";
import type { ProxyAddresses } from "./dial.ts";
import {
  type AccessReason,
  type AccessRecord,
  accessLineWriter,
  logUnexpected,
  newAccessRecord,
} from "./log.ts";
import { learnsCancelKey } from "./postgres-cancel.ts";
import type { ServerTarget } from "./services.ts";
import { inFlightLimits, servingCertificate } from "./snapshot.ts";
import { HANDSHAKE_BACKSTOP_MS, type NativeTlsConfig, nativeHandshakeFailure } from "./terminate.ts";

/** A routed connection waiting for its TLS handshake: what the tunnel needs once it is done. */
interface AfterHandshake {
  candidates: readonly ServerTarget[];
  record: AccessRecord;
  finish: (reason: AccessReason, detail?: string) => void;
}

const NO_BYTES = new Uint8Array(0);

/**
 * The first owner of an accepted socket: reads until the first bytes say what the connection is,
 * then either tunnels it or hands it to the stream pipeline. While a backend is dialled it holds the
 * paused socket (and remembers a close).
 */
export class BunConnection implements SocketOwner, TunnelClient {
  /** Peeking: what was read so far. Dialling: what came after the routed bytes (normally nothing). */
  private bytes: Buffer | null = null;
  /** The client's end of stream came while dialling. */
  private ended = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly acceptedAt = performance.now();
  private readonly addresses: ProxyAddresses;
  private state: "peeking" | "handshaking" | "dialling" | "closed" | "gone" = "peeking";
  /** Handshaking: the route's tunnel, started once the handshake is done. */
  private afterHandshake: AfterHandshake | null = null;

  constructor(
    /** The accepted socket; the TLS socket on it once TLS is terminated here. */
    private socket: NativeSocket,
    private readonly env: ConnectionEnv,
    private readonly retrack: Retrack,
  ) {
    // Read once: Bun's getters answer nothing after the close, and the access line needs them.
    this.addresses = {
      src: { ip: socket.remoteAddress, port: socket.remotePort },
      dst: { ip: socket.localAddress, port: socket.localPort },
    };
  }

  /** Starts on an accepted socket; called once `socket.data` is this. */
  start(): void {
    const { entryPoint, snapshot } = this.env;
    // The PROXY header comes first and may change the client address the rules see: the stream path reads it.
    if (entryPoint.proxyProtocol) {
      this.toStream(false);
      return;
    }
    this.socket.setNoDelay(true);
    if (snapshot.context.tables.get(entryPoint.name)?.fastPath) {
      // Server-first protocols: route without reading a byte.
      if (!this.tryTunnel(this.baseFacts(), Buffer.alloc(0))) this.toStream(false);
      return;
    }
    if (entryPoint.readTimeoutMs > 0) {
      // The stream path reports the timeout, with the deadline counted from the accept.
      this.timer = setTimeout(() => this.toStream(false), entryPoint.readTimeoutMs);
    }
  }

  onHandshake(socket: NativeSocket, success: boolean, error: Error | undefined): void {
    const next = this.afterHandshake;
    if (this.state !== "handshaking" || !next) return;
    this.afterHandshake = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!success) {
      this.endHandshake("failed", error ?? null, next.finish);
      return;
    }
    next.record.tlsVersion = socket.getTLSVersion?.() ?? null;
    this.startTunnel(next.candidates, NO_BYTES, next.record, next.finish);
  }

  /** The readTimeout also bounds the handshake, counted from the accept as on the stream path. */
  private handshakeDeadline(finish: AfterHandshake["finish"]): void {
    const readTimeout = this.env.entryPoint.readTimeoutMs;
    const bound = readTimeout > 0 ? Math.min(readTimeout, HANDSHAKE_BACKSTOP_MS) : HANDSHAKE_BACKSTOP_MS;
    const left = Math.max(1, bound - (performance.now() - this.acceptedAt));
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.state === "handshaking") this.endHandshake("timeout", null, finish);
    }, left);
  }

  /** A handshake that will not complete: the connection ends, its access line says why. */
  private endHandshake(
    reason: "timeout" | "closed" | "failed",
    error: Error | null,
    finish: AfterHandshake["finish"],
  ): void {
    this.state = "gone";
    this.afterHandshake = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    // No certificate to check on this path (tryTunnel): a refusal is the TLS layer's own.
    finishRefusedHandshake(finish, nativeHandshakeFailure(reason, error, false));
    if (reason !== "closed") this.socket.end();
  }

  onData(_socket: NativeSocket, chunk: Buffer): void {
    const bytes = this.bytes === null ? chunk : Buffer.concat([this.bytes, chunk]);
    this.bytes = bytes;
    // While dialling the socket is paused; a read already under way is kept for the tunnel.
    if (this.state !== "peeking") return;
    const kind = classify(bytes, true);
    if (kind === null) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (kind.kind === "tls") {
      const facts: ConnectionFacts = { ...this.baseFacts(), tls: true, sni: kind.sni, alpn: kind.alpn };
      if (this.tryTunnel(facts, bytes)) return;
    } else if (kind.kind === "plain" && this.tryTunnel(this.baseFacts(), bytes)) return;
    this.toStream(false);
  }

  onEnd(): void {
    if (this.state === "peeking") this.toStream(true);
    else this.ended = true;
  }

  onDrain(): void {}

  onClose(_socket: NativeSocket, error: Error | undefined): void {
    if (this.state === "handshaking") {
      const next = this.afterHandshake;
      if (next) this.endHandshake("closed", error ?? null, next.finish);
      return;
    }
    if (this.state === "peeking") {
      // Closed before saying anything useful: the stream path logs it as it does for node:net.
      const stream = this.toStream(true);
      stream?.onClose(this.socket, error);
      return;
    }
    if (this.state === "dialling") this.state = "closed";
  }

  // ----- TunnelClient ----------------------------------------------------------------------------
  take(): Detached | null {
    if (this.state !== "dialling") return null;
    this.state = "gone";
    const unread = this.bytes;
    this.bytes = null;
    return { socket: this.socket, unread, ended: this.ended };
  }

  drop(): void {
    if (this.state === "dialling") this.socket.end();
    this.state = "gone";
  }

  // ----- the two ways on -------------------------------------------------------------------------
  private baseFacts(): ConnectionFacts {
    const { src, dst } = this.addresses;
    return factsBeforeBytes(this.env.entryPoint.name, src?.ip ?? "", dst?.ip ?? "");
  }

  /**
   * Relays on Bun's sockets when the route allows, terminating TLS with Bun's own TLS first when it
   * says so; false leaves the connection to the stream path.
   */
  private tryTunnel(facts: ConnectionFacts, bytes: Buffer): boolean {
    const { snapshot, entryPoint, log } = this.env;
    const decision = decide(snapshot.context, facts);
    if (!decision.matched || decision.refusal || decision.acmeChallenge || !decision.route) return false;
    if (inFlightLimits(snapshot, decision.route.middlewares).length > 0) return false;
    const plainServers = snapshot.services.onlyPlainServers(decision.service!);
    const cancelKey = learnsCancelKey(decision.mode, facts, false);
    let tls: NativeTlsConfig | null = null;
    if (decision.mode === "terminate") {
      tls = this.nativeTls(decision);
      // Not here: the stream path's handshake (Bun's TLS too) judges a client certificate, and says
      // what went wrong when the certificate or the options cannot be loaded.
      if (tls === null) return false;
    }
    if (!fitsBunTunnel(decision, facts, plainServers, cancelKey, tls !== null)) return false;
    // Picked only now, once: the stream path picks for itself.
    const candidates = snapshot.services.candidates(decision.service!);
    // None available: the stream path says so in its own words.
    if (candidates.length === 0) return false;
    const src = this.addresses.src;
    const record = newAccessRecord(entryPoint.name, src?.ip ?? "", src?.port ?? 0);
    if (facts.tls) {
      record.sni = facts.sni;
      record.alpn = [...facts.alpn];
    }
    record.router = decision.router;
    record.service = decision.service;
    record.mode = decision.mode;
    const finish = accessLineWriter(record, this.acceptedAt, log);
    this.bytes = null;
    if (tls === null) {
      this.startTunnel(candidates, bytes, record, finish);
      return true;
    }
    // TLS on this socket, fed the ClientHello already read; the tunnel starts once the handshake is done.
    this.state = "handshaking";
    this.afterHandshake = { candidates, record, finish };
    this.handshakeDeadline(finish);
    const upgraded = upgradeNative(this.socket, tls, bytes, this);
    if (upgraded) {
      this.retrack(this.socket, upgraded.raw);
      this.socket = upgraded.tls;
    } else this.endHandshake("failed", new Error("this Bun could not start TLS on the socket"), finish);
    return true;
  }

  /** Bun's TLS configuration for a terminating decision, when the fast path can use it. */
  private nativeTls(decision: ReturnType<typeof decide>): NativeTlsConfig | null {
    if (typeof this.socket.upgradeTLS !== "function") return null;
    const { snapshot } = this.env;
    try {
      const certificate = servingCertificate(snapshot, decision.certificate);
      const terminator = snapshot.terminators.get(
        decision.tlsOptions ?? "default",
        certificate,
        decision.alpn,
      );
      return terminator.checksClientCertificates ? null : terminator.nativeConfig();
    } catch {
      // Thrown inside Bun's data handler it would leave the socket open: the stream path reports it.
      return null;
    }
  }

  /** Dials the route's servers and relays; `firstBytes` go to the backend first. */
  private startTunnel(
    candidates: readonly ServerTarget[],
    firstBytes: Uint8Array,
    record: AccessRecord,
    finish: AfterHandshake["finish"],
  ): void {
    const { log } = this.env;
    this.state = "dialling";
    // Nothing more is read until the tunnel takes the socket: a close still comes through.
    this.socket.pause();
    tunnelOnBun(this, candidates, firstBytes, this.addresses, record, finish, log).catch((err: unknown) => {
      this.drop();
      logUnexpected(log, err);
    });
  }

  /** Hands the connection to the stream pipeline with what was read; null when it was already handed on. */
  private toStream(ended: boolean): BunSocketStream | null {
    if (this.state !== "peeking") return null;
    this.state = "gone";
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const stream = new BunSocketStream(this.socket, this.addresses, this.retrack);
    this.socket.data = stream;
    if (this.bytes) stream.push(this.bytes);
    this.bytes = null;
    if (ended) stream.onEnd();
    serveConnection(stream, { ...this.env, acceptedAt: this.acceptedAt });
    return stream;
  }
}
