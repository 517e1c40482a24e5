/**
 * TLS termination. The routing decision (router, TLS options, certificate, ALPN) is made before the
 * handshake from the ClientHello we parsed, so each handshake only has to execute it: one tls.Server
 * per (options, certificate, ALPN outcome), created once per configuration and reused. The raw socket
 * is handed over with `emit('connection')`, the variant that works the same on Node, Bun and Deno
 * and reports client-certificate verification correctly (reference/runtimes.md §5).
 */
import { constants } from "node:crypto";
import { Socket } from "node:net";
import { createServer, type Server, type TLSSocket } from "node:tls";
import type { TlsOptions } from "../config/model.ts";
import { CLIENT_AUTH_TYPES } from "../tls/names.ts";
import { nodeTlsSettings } from "../tls/node-options.ts";
import { portableCipherString, portableEcdhCurve } from "../tls/runtime-support.ts";
import { BunSocketStream, type BunTlsStream, type NativeHandshake } from "./bun-stream.ts";
import type { AcceptedSocket } from "./connection.ts";

export interface ServingCertificate {
  id: string;
  certPem: string;
  keyPem: string;
}

/** A connection once TLS is terminated: node:tls's socket, or on Bun's own sockets, Bun's TLS. */
export type TerminatedSocket = TLSSocket | BunTlsStream;

export type HandshakeOutcome =
  | { ok: true; socket: TerminatedSocket }
  | { ok: false; reason: "client_cert_required" | "timeout" | "handshake_failed"; message: string };

interface Pending {
  finish: (outcome: HandshakeOutcome) => void;
}

/**
 * The raw socket a server-side TLSSocket wraps. Node (and runtimes that reuse its tls code) keep it as
 * `_parent`; it is the one link that survives the socket's closing, when remoteAddress reads undefined.
 * Bun keeps a stream that is not a `net.Socket` (bun-stream.ts) under a symbol described "kupgraded",
 * and has no address for it.
 */
function rawSocketOf(tls: TLSSocket): unknown {
  const parent = (tls as TLSSocket & { _parent?: unknown })._parent;
  if (parent !== undefined && parent !== null) return parent;
  const fields = tls as unknown as Record<symbol, unknown>;
  const upgraded = Object.getOwnPropertySymbols(tls).find((symbol) => symbol.description === "kupgraded");
  return upgraded ? fields[upgraded] : undefined;
}

/**
 * Bun's node:tls turns a `tls.Server`'s options into the configuration of its own TLS layer through a
 * method under this symbol (it returns that configuration and the socket class); the configuration
 * carries the server's compiled context, so reusing it costs nothing per handshake.
 */
const BUN_TLS_CONFIG = Symbol.for("::buntls::");

/** What the access line says of a handshake the client did not finish (every TLS layer). */
export const HANDSHAKE_TIMED_OUT = "the client did not finish the TLS handshake in time";
export const HANDSHAKE_ABANDONED = "the client closed the connection during the handshake";

/** The longest a handshake may take when the entry point sets no readTimeout (0). */
export const HANDSHAKE_BACKSTOP_MS = 120_000;

export type HandshakeFailure = Extract<HandshakeOutcome, { ok: false }>;

/**
 * A handshake Bun's own TLS did not complete (out of time, closed, or refused by the TLS layer), in
 * the node:tls path's terms; both Bun paths (bun-connection.ts, BunTlsStream) report through it.
 */
export function nativeHandshakeFailure(
  reason: "timeout" | "closed" | "failed",
  error: (Error & { code?: string }) | null,
  checksClientCertificates: boolean,
): HandshakeFailure {
  if (reason === "timeout") return { ok: false, reason: "timeout", message: HANDSHAKE_TIMED_OUT };
  if (error === null && reason === "failed") {
    return { ok: false, reason: "handshake_failed", message: "the TLS handshake failed" };
  }
  const certificateError =
    checksClientCertificates &&
    error !== null &&
    /CERT|certificate/i.test(`${error.code ?? ""} ${error.message}`);
  return {
    ok: false,
    reason: certificateError ? "client_cert_required" : "handshake_failed",
    message: handshakeFailureText(error),
  };
}

/**
 * What the access line says of a handshake Bun's TLS ended: a close or reset before the handshake is
 * worded as node:tls's path words it; anything else is the TLS layer's own reason.
 */
export function handshakeFailureText(error: (Error & { code?: string }) | null | undefined): string {
  if (!error || error.code === "ECONNRESET") return HANDSHAKE_ABANDONED;
  return readableTlsError(error);
}

let nativeTermination: boolean | undefined;

/** Whether this runtime's node:tls gives Bun's own TLS configuration for a server (Bun, measured on 1.4.5). */
export function terminatesNatively(): boolean {
  nativeTermination ??=
    typeof (createServer() as unknown as Record<symbol, unknown>)[BUN_TLS_CONFIG] === "function";
  return nativeTermination;
}

/** What Bun's `upgradeTLS` takes as `tls`: opaque here, built by Bun from a `tls.Server`'s options. */
export type NativeTlsConfig = Readonly<Record<string, unknown>>;

/** One tls.Server: fixed options, certificate and ALPN answer. */
export class Terminator {
  private readonly server: Server;
  /** Bun's configuration for this server (undefined: not asked yet; null: not available). */
  private native: NativeTlsConfig | null | undefined;
  /** Whether the handshake has to check a client certificate (then the tunnel is not taken at once). */
  readonly checksClientCertificates: boolean;
  private readonly clientAuth: keyof typeof CLIENT_AUTH_TYPES;
  /** Handshakes in progress, by raw socket and, for runtimes without `_parent`, by "address|port". */
  private readonly pendingBySocket = new Map<unknown, Pending>();
  private readonly pendingByAddress = new Map<string, Pending>();

  constructor(
    options: TlsOptions | null,
    certificate: ServingCertificate,
    alpn: string | null,
    clientCaPems: string[],
  ) {
    const settings = nodeTlsSettings(options);
    const semantics = CLIENT_AUTH_TYPES[settings.clientAuth];
    this.checksClientCertificates = settings.requestCert;
    this.clientAuth = settings.clientAuth;
    const ecdhCurve = portableEcdhCurve(settings.ecdhCurve);
    this.server = createServer({
      key: certificate.keyPem,
      cert: certificate.certPem,
      minVersion: settings.minVersion,
      maxVersion: settings.maxVersion,
      // Bun's BoringSSL throws on OpenSSL's @SECLEVEL directive (and needs none for TLS 1.0/1.1).
      ciphers: portableCipherString(settings.ciphers),
      // Groups this TLS library lacks (ML-KEM hybrids before OpenSSL 3.5) are dropped, as validate warns.
      ...(ecdhCurve ? { ecdhCurve } : {}),
      // The ALPN answer was settled by decide(); offering exactly it makes the handshake agree.
      ...(alpn ? { ALPNProtocols: [alpn] } : {}),
      requestCert: settings.requestCert,
      rejectUnauthorized: settings.rejectUnauthorized,
      ...(semantics.verify && clientCaPems.length > 0 ? { ca: clientCaPems } : {}),
      ...(settings.disableSessionTickets ? { secureOptions: constants.SSL_OP_NO_TICKET } : {}),
      // Our own deadline (the entry point's readTimeout) bounds the handshake; this is a backstop.
      handshakeTimeout: HANDSHAKE_BACKSTOP_MS,
    });
    this.server.on("secureConnection", (tls: TLSSocket) => {
      // Half-open again now that the handshake is done (see handshake()).
      tls.allowHalfOpen = true;
      const pending = this.find(tls);
      if (!pending) {
        tls.destroy();
        return;
      }
      const problem = clientCertificateProblem(tls, settings.clientAuth);
      if (problem) {
        tls.destroy();
        pending.finish({ ok: false, reason: "client_cert_required", message: problem });
        return;
      }
      pending.finish({ ok: true, socket: tls });
    });
    this.server.on("tlsClientError", (err: Error & { code?: string }, tls: TLSSocket) => {
      const pending = this.find(tls);
      tls.destroy();
      if (!pending) return;
      // A certificate that does not verify passes OpenSSL (Node checks it afterwards), so Node closes the
      // socket itself and reports only a hang-up: authorizationError is what says why.
      const authorizationError = tls.authorizationError ? String(tls.authorizationError) : null;
      const certificateError =
        authorizationError !== null || /CERT|certificate/i.test(`${err.code ?? ""} ${err.message}`);
      pending.finish({
        ok: false,
        reason: certificateError && settings.requestCert ? "client_cert_required" : "handshake_failed",
        message: authorizationError
          ? `the client certificate does not verify: ${authorizationError}`
          : readableTlsError(err),
      });
    });
  }

  /**
   * The same handshake for Bun's own sockets (`upgradeTLS`): Bun's configuration for this server, or
   * null where there is none (another runtime, a Bun without the method).
   */
  nativeConfig(): NativeTlsConfig | null {
    if (this.native !== undefined) return this.native;
    this.native = null;
    const build = (this.server as unknown as Record<symbol, unknown>)[BUN_TLS_CONFIG];
    if (typeof build !== "function") return null;
    const built: unknown = build.call(this.server, 0, undefined, false);
    const config: unknown = Array.isArray(built) ? built[0] : null;
    if (config !== null && typeof config === "object") this.native = config as NativeTlsConfig;
    return this.native;
  }

  /** The handshake a TLS socket belongs to (its entry is removed when the handshake finishes). */
  private find(tls: TLSSocket): Pending | undefined {
    const raw = rawSocketOf(tls);
    return (
      (raw !== undefined ? this.pendingBySocket.get(raw) : undefined) ??
      this.pendingByAddress.get(`${tls.remoteAddress}|${tls.remotePort}`)
    );
  }

  /**
   * Runs the handshake on an accepted connection whose ClientHello was `peeked`. On Bun's own sockets
   * Bun's TLS does it (a half-close survives there, where node:tls over a stream that is not Bun's
   * `net.Socket` loses it); elsewhere the cached tls.Server.
   */
  handshake(socket: AcceptedSocket, peeked: Uint8Array, timeoutMs: number): Promise<HandshakeOutcome> {
    const native = socket instanceof BunSocketStream && socket.canStartTls() ? this.nativeConfig() : null;
    if (native && socket instanceof BunSocketStream) {
      const bound = Math.min(timeoutMs, HANDSHAKE_BACKSTOP_MS);
      return socket.startTls(native, peeked, bound).then((outcome) => this.nativeOutcome(outcome));
    }
    // remoteAddress/remotePort are read now: they read undefined once a socket is closed.
    const key = `${socket.remoteAddress}|${socket.remotePort}`;
    return new Promise((resolve) => {
      let done = false;
      const finish = (outcome: HandshakeOutcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.removeListener("close", onClose);
        this.pendingBySocket.delete(socket);
        this.pendingByAddress.delete(key);
        resolve(outcome);
      };
      const timer = setTimeout(
        () => {
          socket.destroy();
          finish({
            ok: false,
            reason: "timeout",
            message: HANDSHAKE_TIMED_OUT,
          });
        },
        Math.max(1, timeoutMs),
      );
      // The raw socket reports its close before the TLS server says why it closed it (a refused client
      // certificate, say): wait one turn so that the reason wins over a plain "closed".
      const onClose = () =>
        setImmediate(() =>
          finish({
            ok: false,
            reason: "handshake_failed",
            message: HANDSHAKE_ABANDONED,
          }),
        );
      socket.once("close", onClose);
      const pending: Pending = { finish };
      this.pendingBySocket.set(socket, pending);
      this.pendingByAddress.set(key, pending);
      if (peeked.length > 0) socket.unshift(Buffer.from(peeked.buffer, peeked.byteOffset, peeked.byteLength));
      // The TLS socket takes its allowHalfOpen from the raw one. Half-open during the handshake, node:tls
      // ignores a client's FIN and waits for the readTimeout; not half-open, it fails the handshake at
      // once, as Bun's TLS and Traefik do. The TLS socket is made half-open once secure.
      if (socket instanceof Socket) socket.allowHalfOpen = false;
      // The TLS server reads from the socket itself; resuming the raw socket here would steal its bytes.
      this.server.emit("connection", socket);
    });
  }

  /** A handshake by Bun's own TLS, judged as the node:tls path judges its own. */
  private nativeOutcome(outcome: NativeHandshake): HandshakeOutcome {
    if (!outcome.ok)
      return nativeHandshakeFailure(outcome.reason, outcome.error, this.checksClientCertificates);
    const problem = clientCertificateProblem(outcome.stream, this.clientAuth);
    if (problem) {
      outcome.stream.destroy();
      return { ok: false, reason: "client_cert_required", message: problem };
    }
    return { ok: true, socket: outcome.stream };
  }
}

/**
 * OpenSSL's error text ("801C…:error:0A000102:SSL routines:tls_early_post_process_client_hello:unsupported
 * protocol:../ssl/statem/statem_srvr.c:1664:") shortened to its reason, with Node's code for searching.
 */
export function readableTlsError(err: Error & { code?: string }): string {
  const reason =
    /(?:^|:)error:[0-9A-Fa-f]+:[^:]*:[^:]*:([^:]+)/.exec(err.message)?.[1]?.trim() ?? err.message.trim();
  return err.code ? `${reason} (${err.code})` : reason;
}

/** What the client-certificate check reads of a terminated connection. */
interface PeerCertificateView {
  getPeerCertificate(): unknown;
  readonly authorized: boolean;
  readonly authorizationError?: unknown;
}

function clientCertificateProblem(
  tls: PeerCertificateView,
  clientAuth: keyof typeof CLIENT_AUTH_TYPES,
): string | null {
  const semantics = CLIENT_AUTH_TYPES[clientAuth];
  if (!semantics.requestCert) return null;
  const peer = tls.getPeerCertificate();
  const presented = peer !== null && typeof peer === "object" && Object.keys(peer).length > 0;
  if (semantics.requireCert && !presented) return "the client presented no certificate";
  if (semantics.verify && presented && !tls.authorized) {
    return `the client certificate does not verify: ${String(tls.authorizationError ?? "unknown error")}`;
  }
  return null;
}

const challengeTerminators = new WeakMap<ServingCertificate, Terminator>();

/**
 * The terminator answering TLS-ALPN-01 validations with one challenge certificate: tlsroute's own
 * TLS defaults (never a configured option: a clientAuth requirement there would fail the CA's
 * handshake) and ALPN `acme-tls/1`. Kept as long as the challenge is, since a CA validates a name
 * from several vantage points.
 */
export function challengeTerminator(certificate: ServingCertificate, alpn: string): Terminator {
  let terminator = challengeTerminators.get(certificate);
  if (!terminator) {
    terminator = new Terminator(null, certificate, alpn, []);
    challengeTerminators.set(certificate, terminator);
  }
  return terminator;
}

/** Terminators for one configuration; dropped as a whole on reload. */
export class TerminatorCache {
  private readonly terminators = new Map<string, Terminator>();

  constructor(
    private readonly optionsByName: ReadonlyMap<string, TlsOptions>,
    private readonly clientCas: ReadonlyMap<string, string[]>,
  ) {}

  get(optionsName: string, certificate: ServingCertificate, alpn: string | null): Terminator {
    const key = `${optionsName}\u0000${certificate.id}\u0000${alpn ?? ""}`;
    let terminator = this.terminators.get(key);
    if (!terminator) {
      terminator = new Terminator(
        this.optionsByName.get(optionsName) ?? null,
        certificate,
        alpn,
        this.clientCas.get(optionsName) ?? [],
      );
      this.terminators.set(key, terminator);
    }
    return terminator;
  }
}
