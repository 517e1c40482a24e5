/**
 * Connecting to one backend server: TCP connect, the PROXY protocol header if the transport asks for
 * one, then the backend TLS handshake if the server has `tls: true`.
 *
 * One bound covers the whole dial, TLS handshake included (Traefik bounds only the TCP connect and
 * lets a backend that accepts and never answers the handshake hold the client forever). Failures come
 * back as values with a coarse code the access log and the failover logic can use; nothing throws.
 */
import net from "node:net";
import tls from "node:tls";
import { encodeProxyHeader } from "../wire/proxy-protocol.ts";

export interface PeerCertSan {
  type: "DNSName" | "URI";
  value: string;
}

export interface ResolvedTls {
  /** SNI and the name verified on the backend certificate; "" = no SNI. */
  serverName: string;
  insecureSkipVerify: boolean;
  /** PEM CA certificates to trust; empty = the system roots. */
  ca: string[];
  /** Client certificate chain and key for backend mTLS. */
  cert?: string;
  key?: string;
  /** Extra check: at least one must match the backend certificate (see `matchesPeerSans`). */
  peerCertSANs: PeerCertSan[];
}

export interface ResolvedTransport {
  /** The transport's name (`default@internal` for the built-in one). */
  name: string;
  /** Bound on TCP connect + PROXY header + backend TLS handshake; 0 = none. */
  dialTimeoutMs: number;
  /** Keep-alive probe delay; 0 = 15s, negative = keep-alive off. */
  dialKeepAliveMs: number;
  terminationDelayMs: number;
  proxyProtocolVersion: 1 | 2 | null;
  tls: ResolvedTls | null;
}

export interface ProxyAddresses {
  src: { ip: string; port: number } | null;
  dst: { ip: string; port: number } | null;
}

export type DialFailureCode = "timeout" | "refused" | "unreachable" | "tls" | "dns" | "other";

export type DialFailure = { ok: false; code: DialFailureCode; message: string };

export type DialResult = { ok: true; socket: net.Socket | tls.TLSSocket } | DialFailure;

export interface DialOptions {
  /** Aborts the dial (health checks being stopped): the answer is an "other" failure. */
  signal?: AbortSignal;
}

const DEFAULT_KEEPALIVE_MS = 15_000;

/** The keep-alive probe delay a transport asks for (`dialKeepAlive`: 0 = 15s), or null for none. */
export function keepAliveDelayMs(transport: ResolvedTransport): number | null {
  if (transport.dialKeepAliveMs < 0) return null;
  return transport.dialKeepAliveMs === 0 ? DEFAULT_KEEPALIVE_MS : transport.dialKeepAliveMs;
}

/** `host:port` or `[v6]:port` split into its parts; null when it is not one. */
export function splitHostPort(address: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(address);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  return { host: m[1] ?? m[2] ?? "", port };
}

/** The inverse of `splitHostPort`: IPv6 literals get their brackets back. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

const REFUSED = new Set(["ECONNREFUSED"]);
const UNREACHABLE = new Set(["ENETUNREACH", "EHOSTUNREACH", "EHOSTDOWN", "ENETDOWN", "EADDRNOTAVAIL"]);
const DNS = new Set(["ENOTFOUND", "EAI_AGAIN", "EAI_FAIL", "EAI_NONAME", "EAI_NODATA"]);
const TIMEOUT = new Set(["ETIMEDOUT"]);

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "";
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Classifies an error of the TCP phase (connect, PROXY header write). */
export function tcpFailure(error: unknown): DialFailure {
  const code = codeOf(error);
  const kind: DialFailureCode = REFUSED.has(code)
    ? "refused"
    : UNREACHABLE.has(code)
      ? "unreachable"
      : DNS.has(code)
        ? "dns"
        : TIMEOUT.has(code)
          ? "timeout"
          : "other";
  return { ok: false, code: kind, message: messageOf(error) };
}

/** The URI entries of a certificate's subjectAltName as Node prints it (`DNS:a, URI:spiffe://x`). */
function uriSans(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(/,\s*/)
    .filter((entry) => entry.startsWith("URI:"))
    .map((entry) => entry.slice(4));
}

/**
 * Traefik's `peerCertSANs` check: a URI entry matches a URI SAN case-insensitively; a DNSName entry
 * matches when the certificate is valid for that host name (wildcards included). Any match suffices.
 */
export function matchesPeerSans(cert: tls.PeerCertificate, sans: PeerCertSan[]): boolean {
  const uris = uriSans(cert.subjectaltname).map((u) => u.toLowerCase());
  return sans.some((san) =>
    san.type === "URI"
      ? uris.includes(san.value.toLowerCase())
      : tls.checkServerIdentity(san.value, cert) === undefined,
  );
}

/**
 * Options for `tls.connect` over an already connected socket. Chain verification is OpenSSL's; the
 * name checks (serverName, then peerCertSANs) run in `checkServerIdentity`, which Node calls only
 * once the chain verified.
 */
function tlsOptions(config: ResolvedTls, socket: net.Socket): tls.ConnectionOptions {
  const { serverName, insecureSkipVerify, peerCertSANs } = config;
  const options: tls.ConnectionOptions = {
    socket,
    rejectUnauthorized: !insecureSkipVerify,
    checkServerIdentity: (_host, cert) => {
      if (!insecureSkipVerify) {
        const error = tls.checkServerIdentity(serverName, cert);
        if (error) return error;
      }
      if (peerCertSANs.length > 0 && !matchesPeerSans(cert, peerCertSANs)) {
        return Object.assign(new Error("no matching SAN in peer certificate"), {
          code: "ERR_TLS_PEER_SAN_MISMATCH",
        });
      }
      return undefined;
    },
  };
  // RFC 6066 forbids IP addresses as SNI; the name is still what gets verified (host below).
  if (serverName !== "" && net.isIP(serverName) === 0) options.servername = serverName;
  if (serverName !== "") options.host = serverName;
  if (config.ca.length > 0) options.ca = config.ca;
  if (config.cert !== undefined && config.key !== undefined) {
    options.cert = config.cert;
    options.key = config.key;
  }
  return Object.assign(options, { allowHalfOpen: true });
}

function noop(): void {}

/**
 * Dials `address` (host:port) with the transport's settings. The socket that comes back is
 * connected (and, with `useTls`, handshaken and verified), has keep-alive and no Nagle delay, and
 * allows half-open. It carries a do-nothing 'error' listener so that an error between this answer
 * and the caller attaching its own cannot crash the process; the caller sees such errors as 'close'.
 */
export function dialServer(
  address: string,
  useTls: boolean,
  transport: ResolvedTransport,
  proxy: ProxyAddresses,
  options: DialOptions = {},
): Promise<DialResult> {
  const target = splitHostPort(address);
  if (!target) {
    return Promise.resolve({ ok: false, code: "other", message: `"${address}" is not host:port` });
  }
  const tlsConfig = transport.tls;
  if (useTls && (!tlsConfig || (tlsConfig.serverName === "" && !tlsConfig.insecureSkipVerify))) {
    return Promise.resolve({
      ok: false,
      code: "tls",
      message: tlsConfig
        ? `servers transport "${transport.name}" sets neither serverName nor insecureSkipVerify, so the backend certificate cannot be verified`
        : `servers transport "${transport.name}" has no tls section for a server with tls: true`,
    });
  }

  if (options.signal?.aborted) {
    return Promise.resolve({ ok: false, code: "other", message: "dial aborted" });
  }

  return new Promise<DialResult>((resolve) => {
    let settled = false;
    let phase: "connect" | "tls" = "connect";
    let secure: tls.TLSSocket | null = null;
    const raw = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    raw.on("error", noop);
    /** The dial's own listeners, removed once it succeeds: they hold this whole closure. */
    const owned: [net.Socket, string, (error: Error) => void][] = [];
    const listen = (socket: net.Socket, event: string, listener: (error: Error) => void): void => {
      socket.once(event, listener);
      owned.push([socket, event, listener]);
    };

    const fail = (failure: DialFailure): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      secure?.destroy();
      raw.destroy();
      resolve(failure);
    };
    const succeed = (socket: net.Socket | tls.TLSSocket): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      // An idle connection would otherwise keep this dial's state alive as long as it lasts.
      for (const [emitter, event, listener] of owned) emitter.removeListener(event, listener);
      resolve({ ok: true, socket });
    };
    const onAbort = (): void => fail({ ok: false, code: "other", message: "dial aborted" });
    options.signal?.addEventListener("abort", onAbort, { once: true });

    const timer =
      transport.dialTimeoutMs > 0
        ? setTimeout(() => {
            fail({
              ok: false,
              code: "timeout",
              message:
                phase === "connect"
                  ? `no connection to ${address} within ${transport.dialTimeoutMs}ms`
                  : `no TLS handshake with ${address} within ${transport.dialTimeoutMs}ms`,
            });
          }, transport.dialTimeoutMs)
        : null;
    timer?.unref?.();

    listen(raw, "error", (error: Error) => {
      fail(phase === "connect" ? tcpFailure(error) : tlsFailure(error));
    });
    listen(raw, "close", () => {
      fail({
        ok: false,
        code: phase === "connect" ? "other" : "tls",
        message: `${address} closed the connection`,
      });
    });

    raw.once("connect", () => {
      raw.setNoDelay(true);
      const keepAlive = keepAliveDelayMs(transport);
      if (keepAlive !== null) raw.setKeepAlive(true, keepAlive);
      const startTls = (): void => {
        if (settled) return;
        if (!useTls || !tlsConfig) {
          succeed(raw);
          return;
        }
        phase = "tls";
        try {
          secure = tls.connect(tlsOptions(tlsConfig, raw));
        } catch (error) {
          // Bad key material (a CA or client certificate OpenSSL refuses) surfaces here.
          fail(tlsFailure(error));
          return;
        }
        const socket = secure;
        socket.on("error", noop);
        listen(socket, "error", (error: Error) => fail(tlsFailure(error)));
        listen(socket, "close", () =>
          fail({
            ok: false,
            code: "tls",
            message: `${address} closed the connection during the TLS handshake`,
          }),
        );
        socket.once("secureConnect", () => {
          // With insecureSkipVerify, peerCertSANs are the only check, and they need a verified chain.
          if (tlsConfig.insecureSkipVerify && tlsConfig.peerCertSANs.length > 0 && !socket.authorized) {
            fail({
              ok: false,
              code: "tls",
              message: `backend certificate refused: ${String(socket.authorizationError ?? "not verified")}`,
            });
            return;
          }
          succeed(socket);
        });
      };
      // The header goes first on the wire, before any TLS byte: start TLS once it is handed to the kernel.
      if (transport.proxyProtocolVersion !== null) {
        const header = encodeProxyHeader(transport.proxyProtocolVersion, proxy.src, proxy.dst);
        raw.write(header, (error) => {
          if (error) fail(tcpFailure(error));
          else startTls();
        });
      } else {
        startTls();
      }
    });
  });
}

function tlsFailure(error: unknown): DialFailure {
  const code = codeOf(error);
  return { ok: false, code: "tls", message: code ? `${messageOf(error)} (${code})` : messageOf(error) };
}
