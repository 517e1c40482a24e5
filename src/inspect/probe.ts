/**
 * The outbound probe behind `inspect`: TCP connect, optional PostgreSQL SSLRequest, TLS handshake,
 * and everything the runtime tells about it. Only `node:net` and `node:tls` (the subset that behaves
 * the same on Node, Bun and Deno). Nothing here throws for a network outcome: refused, timed out,
 * refused SSL, alerts and verification errors all come back as data for report.ts to judge.
 *
 * Verification is never enforced here (`rejectUnauthorized: false`, no identity check): the handshake
 * runs to the end so the chain can be reported, and the runtime's verdict (`authorizationError`) is
 * returned for the caller to enforce or, with --insecure, only report.
 */
import { X509Certificate } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { mayReadTrustStore } from "../cli/deno-permissions.ts";
import { NEGOTIATION_ACCEPT, NEGOTIATION_REFUSE, SSL_REQUEST } from "../wire/postgres.ts";

export type StartTls = "postgres" | "postgres-direct";

export interface ProbeOptions {
  host: string;
  port: number;
  /** SNI to send; null = none. */
  servername: string | null;
  alpn: readonly string[];
  startTls: StartTls | null;
  /** PEM bundle to trust instead of the runtime's default store. */
  ca: string | null;
  clientCertificate: { cert: string; key: string } | null;
  /** Bound on the whole probe: DNS, connect, SSLRequest and handshake. */
  timeoutMs: number;
  /** The name the certificate must cover: the SNI, else the host (an IP is checked against IP SANs). */
  identity: string;
}

export type ProbeStage = "connect" | "starttls" | "handshake";

export interface ProbeFailure {
  stage: ProbeStage;
  /**
   * The runtime's `err.code` (`ECONNREFUSED`, `ERR_SSL_TLSV1_ALERT_UNKNOWN_CA`, …) or one of ours:
   * `timeout`, `closed`, `postgres_ssl_refused`, `postgres_unexpected_answer`.
   */
  code: string;
  /** The runtime's message (wording differs between runtimes: show it, never match on it). */
  message: string;
  /** The server refused us after our side of the handshake had finished (TLS 1.3 client certificates). */
  afterHandshake: boolean;
}

export interface NegotiatedTls {
  /** `getProtocol()`: `TLSv1.3`, `TLSv1.2`, … */
  protocol: string | null;
  /** IANA name (`TLS_AES_256_GCM_SHA384`); OpenSSL's name when the runtime gives no standard name. */
  cipher: string | null;
  /** OpenSSL's name (`ECDHE-RSA-AES128-GCM-SHA256`). */
  cipherOpenssl: string | null;
  alpn: string | null;
  /** `getEphemeralKeyInfo()`; null when the runtime does not say (Deno, a TLS 1.2 RSA exchange). */
  ephemeral: { type: string | null; name: string | null; size: number | null } | null;
}

export interface ProbeResult {
  remote: { address: string; port: number } | null;
  local: { address: string; port: number } | null;
  /** The one-byte answer to the SSLRequest (`S`, `N`, or another byte as `0x45`); null when none was sent or read. */
  postgresAnswer: string | null;
  /** Set once the handshake finished on our side. */
  tls: NegotiatedTls | null;
  /** Peer certificates, leaf first, in issuing order, as the runtime reports them; may be partial after a failure. */
  peerChain: X509Certificate[];
  /** The runtime's verification verdict against the trust store (not the name): null = trusted. */
  authorizationError: string | null;
  /** `tls.checkServerIdentity(identity, cert)`, the check tls.connect makes: null = the name matches. */
  identityError: { code: string; message: string } | null;
  failure: ProbeFailure | null;
  timings: { connectMs: number | null; startTlsMs: number | null; handshakeMs: number | null };
}

/** How long to wait after our Finished for a TLS 1.3 server to refuse us (it then sends an alert). */
const MIN_SETTLE_MS = 250;
/** After end(), how long to wait for the server's close before destroying the socket. */
const CLOSE_GRACE_MS = 250;

function elapsed(since: number): number {
  return Math.round((performance.now() - since) * 10) / 10;
}

function errorCode(err: unknown): string {
  if (err && typeof err === "object" && "code" in err && typeof err.code === "string") return err.code;
  return "error";
}

function errorMessage(err: unknown): string {
  // Happy eyeballs (several addresses, all failed) gives an AggregateError with an empty message.
  if (err instanceof AggregateError && err.message.trim() === "") {
    return err.errors.map((e) => errorMessage(e)).join("; ");
  }
  return err instanceof Error ? err.message.trim() : String(err);
}

/** The certificates `getPeerCertificate(true)` links through `issuerCertificate`, leaf first, each once. */
export function peerChainOf(socket: tls.TLSSocket): X509Certificate[] {
  const out: X509Certificate[] = [];
  const seen = new Set<string>();
  let cert: tls.DetailedPeerCertificate | undefined;
  try {
    cert = socket.getPeerCertificate(true);
  } catch {
    return out;
  }
  while (cert?.raw && cert.raw.length > 0 && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256);
    try {
      out.push(new X509Certificate(cert.raw));
    } catch {
      break;
    }
    cert = cert.issuerCertificate;
  }
  return out;
}

function identityCheck(socket: tls.TLSSocket, identity: string): ProbeResult["identityError"] {
  try {
    const err = tls.checkServerIdentity(identity, socket.getPeerCertificate());
    return err ? { code: errorCode(err), message: errorMessage(err) } : null;
  } catch (err) {
    return { code: errorCode(err), message: errorMessage(err) };
  }
}

/**
 * SHA-256 fingerprints of the certificates trusted: the --ca bundle, else the runtime's bundled roots;
 * null when the runtime's roots cannot be read without a permission it was not given. Deno guards
 * `tls.rootCertificates` behind --allow-sys (its own handshakes use the roots without it), and inspect
 * must not need that flag for one detail of its report: the report then judges from the verdict.
 */
export function trustStoreFingerprints(caPem: string | null): Set<string> | null {
  if (caPem === null && !mayReadTrustStore()) return null;
  const out = new Set<string>();
  const pems =
    caPem !== null
      ? (caPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [])
      : tls.rootCertificates;
  for (const pem of pems) {
    try {
      out.add(new X509Certificate(pem).fingerprint256);
    } catch {
      // A root the runtime ships but cannot parse cannot match a peer certificate either.
    }
  }
  return out;
}

function negotiated(socket: tls.TLSSocket): NegotiatedTls {
  const cipher = socket.getCipher() as (tls.CipherNameAndProtocol & { standardName?: string }) | undefined;
  let ephemeral: NegotiatedTls["ephemeral"] = null;
  try {
    const info = socket.getEphemeralKeyInfo() as { type?: unknown; name?: unknown; size?: unknown } | null;
    if (info && (typeof info.type === "string" || typeof info.name === "string")) {
      ephemeral = {
        type: typeof info.type === "string" ? info.type : null,
        name: typeof info.name === "string" ? info.name : null,
        size: typeof info.size === "number" ? info.size : null,
      };
    }
  } catch {
    ephemeral = null;
  }
  return {
    protocol: socket.getProtocol() ?? null,
    cipher: cipher?.standardName || cipher?.name || null,
    cipherOpenssl: cipher?.name || null,
    alpn: typeof socket.alpnProtocol === "string" && socket.alpnProtocol !== "" ? socket.alpnProtocol : null,
    ephemeral,
  };
}

export function probe(options: ProbeOptions): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const result: ProbeResult = {
      remote: null,
      local: null,
      postgresAnswer: null,
      tls: null,
      peerChain: [],
      authorizationError: null,
      identityError: null,
      failure: null,
      timings: { connectMs: null, startTlsMs: null, handshakeMs: null },
    };
    let stage: ProbeStage = "connect";
    let secure: tls.TLSSocket | null = null;
    let done = false;
    let settleTimer: NodeJS.Timeout | undefined;
    const started = performance.now();

    const raw = net.connect({ host: options.host, port: options.port });

    const deadline = setTimeout(() => {
      // Our side of the handshake is done and only the wait for a late refusal is left: that is a success.
      if (result.tls !== null) return finish();
      fail({
        stage,
        code: "timeout",
        message: `no answer within ${options.timeoutMs} ms`,
        afterHandshake: false,
      });
    }, options.timeoutMs);

    /** Ends the probe: a failure destroys at once, a success closes politely (close_notify, FIN). */
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearTimeout(settleTimer);
      const polite = result.failure === null && secure !== null;
      const closing = secure ?? raw;
      if (!polite || closing.destroyed) {
        secure?.destroy();
        raw.destroy();
        resolve(result);
        return;
      }
      const grace = setTimeout(() => {
        closing.destroy();
        raw.destroy();
      }, CLOSE_GRACE_MS);
      closing.once("close", () => {
        clearTimeout(grace);
        raw.destroy();
        resolve(result);
      });
      closing.on("error", () => {});
      closing.resume(); // drain whatever the server says (whoami, a banner) so its FIN is read
      closing.end();
    };

    const fail = (failure: ProbeFailure) => {
      if (done) return;
      if (result.failure === null) result.failure = failure;
      finish();
    };

    raw.on("error", (err) => {
      if (stage === "connect" || stage === "starttls") {
        fail({ stage, code: errorCode(err), message: errorMessage(err), afterHandshake: false });
      }
    });

    raw.once("connect", () => {
      result.timings.connectMs = elapsed(started);
      result.remote = { address: raw.remoteAddress ?? options.host, port: raw.remotePort ?? options.port };
      result.local = { address: raw.localAddress ?? "", port: raw.localPort ?? 0 };
      if (options.startTls === "postgres") askForSsl();
      else startHandshake();
    });

    const askForSsl = () => {
      stage = "starttls";
      const sent = performance.now();
      const onData = (chunk: Buffer) => {
        raw.removeListener("data", onData);
        raw.removeListener("end", onEnd);
        raw.pause();
        result.timings.startTlsMs = elapsed(sent);
        const answer = chunk[0]!;
        result.postgresAnswer =
          answer === NEGOTIATION_ACCEPT || answer === NEGOTIATION_REFUSE
            ? String.fromCharCode(answer)
            : `0x${answer.toString(16).padStart(2, "0")}`;
        if (answer === NEGOTIATION_REFUSE) {
          fail({
            stage,
            code: "postgres_ssl_refused",
            message: "the server answered N to the SSLRequest",
            afterHandshake: false,
          });
        } else if (answer !== NEGOTIATION_ACCEPT) {
          fail({
            stage,
            code: "postgres_unexpected_answer",
            message: `the server answered ${result.postgresAnswer} to the SSLRequest (expected S or N)`,
            afterHandshake: false,
          });
        } else if (chunk.length > 1) {
          // A PostgreSQL server says nothing after S until the ClientHello; bytes here were injected
          // before encryption (CVE-2021-23222), so they must not be read as part of the session.
          fail({
            stage,
            code: "postgres_unexpected_answer",
            message: `the server sent ${chunk.length - 1} more bytes after S, before the TLS handshake`,
            afterHandshake: false,
          });
        } else {
          startHandshake();
        }
      };
      const onEnd = () =>
        fail({
          stage,
          code: "closed",
          message: "the server closed the connection without answering the SSLRequest",
          afterHandshake: false,
        });
      raw.on("data", onData);
      raw.once("end", onEnd);
      raw.write(SSL_REQUEST);
    };

    const startHandshake = () => {
      stage = "handshake";
      const begun = performance.now();
      const socket = tls.connect({
        socket: raw,
        ...(options.servername !== null ? { servername: options.servername } : {}),
        ...(options.alpn.length > 0 ? { ALPNProtocols: [...options.alpn] } : {}),
        ...(options.ca !== null ? { ca: options.ca } : {}),
        ...(options.clientCertificate
          ? { cert: options.clientCertificate.cert, key: options.clientCertificate.key }
          : {}),
        // Report old protocols and weak keys instead of refusing to talk to them.
        minVersion: "TLSv1",
        // OpenSSL needs its security level lowered to talk to old servers; BoringSSL (Bun) has no such
        // directive and refuses the whole cipher string when it is present.
        ciphers:
          typeof (globalThis as { Bun?: unknown }).Bun === "undefined"
            ? `${tls.DEFAULT_CIPHERS}:@SECLEVEL=0`
            : tls.DEFAULT_CIPHERS,
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
      });
      secure = socket;
      let settled = false;
      const settle = () => {
        if (settled) return;
        settled = true;
        finish();
      };
      socket.once("secureConnect", () => {
        result.timings.handshakeMs = elapsed(begun);
        result.tls = negotiated(socket);
        result.peerChain = peerChainOf(socket);
        const verdict = socket.authorizationError as unknown;
        result.authorizationError =
          socket.authorized || verdict === undefined || verdict === null
            ? null
            : verdict instanceof Error
              ? errorCode(verdict)
              : String(verdict);
        result.identityError = identityCheck(socket, options.identity);
        if (result.tls.protocol !== "TLSv1.3") {
          settle();
          return;
        }
        // TLS 1.3: our side is done before the server has read our Finished (and our certificate). A
        // server that refuses us says so now with an alert; one that accepts usually sends a ticket.
        const wait = Math.max(MIN_SETTLE_MS, 3 * (result.timings.connectMs ?? 0));
        settleTimer = setTimeout(settle, wait);
        socket.once("session", settle);
        socket.once("data", settle);
        socket.once("end", settle);
      });
      socket.on("error", (err) => {
        if (result.peerChain.length === 0) result.peerChain = peerChainOf(socket);
        fail({
          stage: "handshake",
          code: errorCode(err),
          message: errorMessage(err),
          afterHandshake: result.tls !== null,
        });
      });
      socket.once("close", () => {
        if (result.tls === null) {
          fail({
            stage: "handshake",
            code: "closed",
            message: "the server closed the connection during the TLS handshake",
            afterHandshake: false,
          });
        } else settle();
      });
    };
  });
}
