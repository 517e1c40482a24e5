/**
 * One accepted connection, from the first byte to the access line. The steps: classify the first
 * bytes (TLS ClientHello, PostgreSQL negotiation, plain), turn them into facts, ask decide() what to
 * do, then execute it: refuse with a reason, terminate TLS, or relay to a backend. Nothing here
 * decides routing; everything here is I/O.
 */
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { ChallengeStore } from "../acme/challenges.ts";
import type { EntryPoint } from "../config/model.ts";
import { ACME_TLS_ALPN, type ConnectionFacts, type Decision, decide } from "../routing/decide.ts";
import { canonicalSni, IpMatcher } from "../rules/index.ts";
import { parseClientHello } from "../wire/clienthello.ts";
import {
  classifyPostgresStart,
  encodeErrorResponse,
  NEGOTIATION_ACCEPT,
  NEGOTIATION_REFUSE,
  SSL_REQUEST,
} from "../wire/postgres.ts";
import { decodeProxyHeader } from "../wire/proxy-protocol.ts";
import { ALERT_NO_APPLICATION_PROTOCOL, ALERT_UNRECOGNIZED_NAME, fatalAlert } from "./alerts.ts";
import { dialFirst, relayEnded } from "./backend.ts";
import { BunSocketStream, BunTlsStream } from "./bun-stream.ts";
import { fitsBunTunnel, tunnelOnBun } from "./bun-tunnel.ts";
import { dialServer, joinHostPort, type ProxyAddresses } from "./dial.ts";
import {
  type AccessReason,
  type AccessRecord,
  accessLineWriter,
  errorText,
  type Logger,
  logUnexpected,
  newAccessRecord,
} from "./log.ts";
import { cancelRegistry, learnsCancelKey, sendCancel } from "./postgres-cancel.ts";
import { lostEndGuardFor, type RelayOptions, relay } from "./relay.ts";
import type { ServerTarget } from "./services.ts";
import type { Snapshot } from "./snapshot.ts";
import { inFlightLimits, servingCertificate } from "./snapshot.ts";
import {
  challengeTerminator,
  type HandshakeFailure,
  type HandshakeOutcome,
  type TerminatedSocket,
} from "./terminate.ts";
import { WHOAMI_ADDRESS, whoamiLine } from "./whoami.ts";

/** An accepted client connection: a `net.Socket`, or on Bun a stream over Bun's own socket. */
export type AcceptedSocket = Socket | BunSocketStream;

/** A ClientHello (or PostgreSQL start) bigger than this is refused: Go's limits allow ~64 KiB of hello. */
const MAX_PEEK_BYTES = 256 * 1024;

export interface ConnectionEnv {
  snapshot: Snapshot;
  entryPoint: EntryPoint;
  log: Logger;
  /** TLS-ALPN-01 challenge certificates of orders in progress (process-wide, not per snapshot). */
  challenges: ChallengeStore;
  /** `performance.now()` at accept, when the connection was accepted before this pipeline took it. */
  acceptedAt?: number;
}

/** One connection's environment plus who it is from: the socket peer, or a trusted PROXY header's source. */
interface ConnectionState extends ConnectionEnv {
  peer: ProxyAddresses;
}

export type Classified =
  | { kind: "tls"; sni: string; alpn: string[] }
  | { kind: "plain" }
  | { kind: "pg-ssl" }
  | { kind: "pg-gssenc" }
  | { kind: "pg-startup" }
  | { kind: "pg-cancel" }
  | { kind: "bad"; reason: string };

type PeekOutcome =
  | { kind: "ok"; result: Classified; bytes: Buffer }
  | { kind: "closed"; bytes: Buffer }
  | { kind: "timeout"; bytes: Buffer };

export function classify(bytes: Buffer, postgresAllowed: boolean): Classified | null {
  if (bytes.length === 0) return null;
  const first = bytes[0];
  if (first === 0x16) {
    const hello = parseClientHello(bytes);
    switch (hello.kind) {
      case "need-more":
        return bytes.length > MAX_PEEK_BYTES ? { kind: "bad", reason: "ClientHello too large" } : null;
      case "hello":
        return { kind: "tls", sni: canonicalSni(hello.sni), alpn: hello.alpn };
      case "invalid":
        return { kind: "bad", reason: hello.reason };
      default:
        return { kind: "plain" };
    }
  }
  // An SSLv2-style hello: TLS with no SNI, as Traefik treats it.
  if (first === 0x80) return { kind: "tls", sni: "", alpn: [] };
  if (first === 0x00 && postgresAllowed) {
    const start = classifyPostgresStart(bytes);
    switch (start.kind) {
      case "need-more":
        return null;
      case "ssl-request":
        return { kind: "pg-ssl" };
      case "gssenc-request":
        return { kind: "pg-gssenc" };
      case "startup":
        return { kind: "pg-startup" };
      case "cancel-request":
        return { kind: "pg-cancel" };
      default:
        return { kind: "plain" };
    }
  }
  return { kind: "plain" };
}

/** Reads until the first bytes say what the connection is, without consuming them for whoever comes next. */
async function peek(
  socket: AcceptedSocket,
  initial: Buffer,
  deadline: number,
  postgresAllowed: boolean,
): Promise<PeekOutcome> {
  const immediate = classify(initial, postgresAllowed);
  if (immediate) return { kind: "ok", result: immediate, bytes: initial };
  let result: Classified | null = null;
  const read = await readUntil(socket, deadline, (more) => {
    result = classify(initial.length === 0 ? more : Buffer.concat([initial, more]), postgresAllowed);
    return result !== null;
  });
  const bytes = initial.length === 0 ? read.bytes : Buffer.concat([initial, read.bytes]);
  if (read.kind !== "ok" || result === null)
    return { kind: read.kind === "ok" ? "closed" : read.kind, bytes };
  return { kind: "ok", result, bytes };
}

/**
 * The 'error' listener of every socket here: an error ends that connection only. One function for
 * all sockets (`this` is the socket) rather than a closure per socket, which an idle connection
 * would keep, with the scope it closes over.
 */
function destroyOnError(this: AcceptedSocket | TLSSocket): void {
  this.destroy();
}

/** What is known of a connection before its first byte says more: who, and where it connected. */
export function factsBeforeBytes(entryPoint: string, clientIp: string, localIp: string): ConnectionFacts {
  return { entryPoint, sni: "", alpn: [], clientIp, localIp, tls: false, postgres: false };
}

/** Runs a connection; whatever escapes its steps ends that connection only (never the process). */
export function serveConnection(socket: AcceptedSocket, env: ConnectionEnv): void {
  handleConnection(socket, env).catch((err: unknown) => {
    socket.destroy();
    logUnexpected(env.log, err);
  });
}

async function handleConnection(socket: AcceptedSocket, env: ConnectionEnv): Promise<void> {
  const started = env.acceptedAt ?? performance.now();
  const { snapshot, entryPoint, log } = env;
  let clientIp = socket.remoteAddress ?? "";
  const record = newAccessRecord(entryPoint.name, clientIp, socket.remotePort ?? 0);
  const finish = accessLineWriter(record, started, log);
  // A failing client must never take the process down: every error ends this connection only.
  socket.on("error", destroyOnError);
  socket.setNoDelay(true);

  // Measured from the accept: on Bun the first bytes may have been read before this (bun-connection.ts).
  const deadline =
    entryPoint.readTimeoutMs > 0
      ? Date.now() - (performance.now() - started) + entryPoint.readTimeoutMs
      : Number.POSITIVE_INFINITY;
  let bytes: Buffer = Buffer.alloc(0);
  const state: ConnectionState = { ...env, peer: proxyAddresses(socket) };
  if (entryPoint.proxyProtocol) {
    const inbound = await readInboundProxyHeader(socket, deadline, entryPoint.proxyProtocol, state);
    if (!inbound.ok) {
      socket.destroy();
      finish(inbound.reason, inbound.detail);
      return;
    }
    bytes = inbound.rest;
    clientIp = state.peer.src?.ip ?? clientIp;
    const src = state.peer.src;
    if (src) record.client = joinHostPort(src.ip, src.port);
  }

  const table = snapshot.context.tables.get(entryPoint.name);
  const baseFacts = factsBeforeBytes(
    entryPoint.name,
    clientIp,
    state.peer.dst?.ip ?? socket.localAddress ?? "",
  );

  // Server-first protocols: with only plain TCP routers, route without reading a byte.
  if (table?.fastPath && !entryPoint.proxyProtocol) {
    const decision = decide(snapshot.context, baseFacts);
    // A matched router whose middleware refuses (ip_denied) is refused here too, not after reading bytes.
    if (decision.matched) {
      await execute(socket, decision, Buffer.alloc(0), baseFacts, state, record, finish, 0);
      return;
    }
  }

  const hasTlsRoutes = (table?.tls.length ?? 0) > 0;
  const postgresPath: string[] = [];
  for (;;) {
    const outcome = await peek(socket, bytes, deadline, true);
    if (outcome.kind !== "ok") {
      socket.destroy();
      // A PostgreSQL client that gives up after our "N" (sslmode=require) still says how far it got.
      if (postgresPath.length > 0) record.postgres = postgresPath.join("+");
      finish(
        outcome.kind === "timeout" ? "timeout" : "no_clienthello",
        outcome.bytes.length > 0 ? `${outcome.bytes.length} bytes received` : undefined,
      );
      return;
    }
    bytes = outcome.bytes;
    const result = outcome.result;
    if (result.kind === "pg-gssenc") {
      // No GSSAPI encryption here: say "N" and keep listening; the client follows with SSLRequest or a startup.
      postgresPath.push("gssenc");
      socket.write(Uint8Array.of(NEGOTIATION_REFUSE));
      bytes = bytes.subarray(8);
      continue;
    }
    if (result.kind === "pg-ssl") {
      postgresPath.push("sslrequest");
      bytes = bytes.subarray(8);
      if (!hasTlsRoutes) {
        // No TLS router: "N" lets a sslmode=prefer client go on in plaintext.
        socket.write(Uint8Array.of(NEGOTIATION_REFUSE));
        postgresPath.push("refused");
        continue;
      }
      socket.write(Uint8Array.of(NEGOTIATION_ACCEPT));
      const tlsOutcome = await peek(socket, bytes, deadline, false);
      if (tlsOutcome.kind !== "ok" || tlsOutcome.result.kind !== "tls") {
        socket.destroy();
        record.postgres = postgresPath.join("+");
        if (tlsOutcome.kind === "ok")
          finish(
            "bad_clienthello",
            tlsOutcome.result.kind === "bad" ? tlsOutcome.result.reason : "no TLS after SSLRequest",
          );
        else finish(tlsOutcome.kind === "timeout" ? "timeout" : "no_clienthello");
        return;
      }
      bytes = tlsOutcome.bytes;
      const hello = tlsOutcome.result;
      record.postgres = postgresPath.join("+");
      const facts = { ...baseFacts, tls: true, postgres: true, sni: hello.sni, alpn: hello.alpn };
      record.sni = hello.sni;
      record.alpn = hello.alpn;
      await execute(socket, decide(snapshot.context, facts), bytes, facts, state, record, finish, deadline);
      return;
    }
    if (result.kind === "bad") {
      socket.destroy();
      finish("bad_clienthello", result.reason);
      return;
    }
    if (result.kind === "tls") {
      record.sni = result.sni;
      record.alpn = result.alpn;
      if (postgresPath.length > 0) record.postgres = postgresPath.join("+");
      const facts = { ...baseFacts, tls: true, sni: result.sni, alpn: result.alpn };
      await execute(socket, decide(snapshot.context, facts), bytes, facts, state, record, finish, deadline);
      return;
    }
    // Plain bytes (including a PostgreSQL StartupMessage or CancelRequest).
    if (result.kind === "pg-startup") postgresPath.push("plaintext");
    if (result.kind === "pg-cancel") postgresPath.push("cancel");
    if (postgresPath.length > 0) record.postgres = postgresPath.join("+");
    const decision = decide(snapshot.context, baseFacts);
    if (
      result.kind === "pg-cancel" &&
      (await forwardCancel(socket, bytes, decision.matched, state.peer, record, finish))
    )
      return;
    if (!decision.matched && result.kind === "pg-startup") {
      // Advise TLS only where a TLS router could take it: without one, sslmode=require just gets our "N".
      socket.end(
        encodeErrorResponse(
          hasTlsRoutes
            ? {
                severity: "FATAL",
                code: "08004",
                message:
                  "tlsroute routes PostgreSQL connections by TLS server name (SNI); this connection did not use TLS",
                hint: "Connect with sslmode=require (or verify-full) and a host name, not an IP address, so the client sends SNI.",
              }
            : {
                severity: "FATAL",
                code: "08004",
                message: `no tlsroute router on entry point "${entryPoint.name}" accepts this connection`,
              },
        ),
      );
      finish("no_route", "plaintext PostgreSQL startup and no plain TCP router matches");
      return;
    }
    await execute(socket, decision, bytes, baseFacts, state, record, finish, deadline);
    return;
  }
}

/** The access line of a connection whose TLS handshake did not complete. */
export function finishRefusedHandshake(
  finish: (reason: AccessReason, detail?: string) => void,
  failure: HandshakeFailure,
): void {
  finish(
    failure.reason === "handshake_failed" ? "tls_handshake_failed" : failure.reason,
    `TLS handshake: ${failure.message.trim()}`,
  );
}

/** Gives back one inFlightConn slot of a client IP. */
function slotRelease(counts: Map<string, number>, clientIp: string): () => void {
  return () => {
    const n = (counts.get(clientIp) ?? 1) - 1;
    if (n <= 0) counts.delete(clientIp);
    else counts.set(clientIp, n);
  };
}

/** `finish` that first gives back the connection's inFlightConn slots. */
function releasingFirst(
  releases: (() => void)[],
  finish: (reason: AccessReason, detail?: string) => void,
): (reason: AccessReason, detail?: string) => void {
  return (reason, detail) => {
    for (const release of releases.splice(0)) release();
    finish(reason, detail);
  };
}

async function execute(
  socket: AcceptedSocket,
  decision: Decision,
  peeked: Buffer,
  facts: ConnectionFacts,
  env: ConnectionState,
  record: AccessRecord,
  finish: (reason: AccessReason, detail?: string) => void,
  deadline: number,
): Promise<void> {
  const { snapshot, log } = env;
  record.router = decision.router;
  record.service = decision.service;
  record.mode = decision.mode;
  if (decision.acmeChallenge) {
    await answerAcmeChallenge(socket, peeked, facts, env, finish, deadline);
    return;
  }
  if (!decision.matched || decision.refusal) {
    const reason = decision.refusal ?? "no_route";
    if (facts.tls && (reason === "no_route" || reason === "sni_strict"))
      socket.end(fatalAlert(ALERT_UNRECOGNIZED_NAME));
    else if (facts.tls && reason === "alpn_mismatch") socket.end(fatalAlert(ALERT_NO_APPLICATION_PROTOCOL));
    else socket.destroy();
    finish(reason, decision.reason);
    return;
  }
  const route = decision.route!;

  // inFlightConn: counted per client IP, per (middleware, router, entry point), released when the connection ends.
  const releases: (() => void)[] = [];
  for (const limit of inFlightLimits(snapshot, route.middlewares)) {
    const key = `${limit.name}\u0000${route.name}\u0000${facts.entryPoint}`;
    let counts = snapshot.inFlight.get(key);
    if (!counts) {
      counts = new Map();
      snapshot.inFlight.set(key, counts);
    }
    const current = counts.get(facts.clientIp) ?? 0;
    if (current >= limit.amount) {
      for (const release of releases) release();
      socket.destroy();
      finish("too_many_connections", `middleware "${limit.name}" allows ${limit.amount} per client IP`);
      return;
    }
    counts.set(facts.clientIp, current + 1);
    releases.push(slotRelease(counts, facts.clientIp));
  }
  // Released when the connection ends, which is when its access line is written: serveRoute returns
  // as soon as the relay runs, before the end.
  const finishAndRelease = releases.length === 0 ? finish : releasingFirst(releases, finish);
  try {
    await serveRoute(socket, decision, peeked, facts, env, record, finishAndRelease, deadline);
  } catch (err) {
    socket.destroy();
    logUnexpected(log, err);
    finishAndRelease("closed", `internal error: ${errorText(err)}`);
  }
}

async function serveRoute(
  socket: AcceptedSocket,
  decision: Decision,
  peeked: Buffer,
  facts: ConnectionFacts,
  env: ConnectionState,
  record: AccessRecord,
  finish: (reason: AccessReason, detail?: string) => void,
  deadline: number,
): Promise<void> {
  const { snapshot } = env;
  let client: AcceptedSocket | TerminatedSocket = socket;
  let toBackendFirst: Buffer = peeked;
  if (decision.mode === "terminate") {
    const certificate = servingCertificate(snapshot, decision.certificate);
    const terminator = snapshot.terminators.get(decision.tlsOptions ?? "default", certificate, decision.alpn);
    const remaining = Number.isFinite(deadline) ? deadline - Date.now() : 24 * 3600_000;
    const outcome = await terminator.handshake(socket, peeked, remaining);
    if (!outcome.ok) {
      socket.destroy();
      finishRefusedHandshake(finish, outcome);
      return;
    }
    client = outcome.socket;
    client.on("error", destroyOnError);
    record.tlsVersion = outcome.socket.getProtocol() ?? null;
    toBackendFirst = Buffer.alloc(0);
  }

  // From here an unexpected error must close the connection it has (execute() closes the accepted
  // socket, which on Bun's own TLS is no longer the one carrying it).
  try {
    const candidates: ServerTarget[] = snapshot.services.candidates(decision.service!);
    if (candidates.length === 0) {
      client.destroy();
      finish("backend_unreachable", `service "${decision.service}" has no available server`);
      return;
    }
    if (candidates[0]!.address === WHOAMI_ADDRESS) {
      record.server = WHOAMI_ADDRESS;
      const line = whoamiLine(decision, facts, client, record);
      // Bytes as the target saw them: decrypted ones when TLS was terminated here.
      record.bytesIn = decision.mode === "terminate" ? 0 : peeked.length;
      record.bytesOut = Buffer.byteLength(line);
      client.end(line);
      // Read (and drop) what the client still sends, so its close is seen and the socket ends promptly.
      client.resume();
      await new Promise<void>((resolve) => {
        client.once("close", () => resolve());
        setTimeout(resolve, 1000).unref();
      });
      finish("closed");
      return;
    }

    // Learn the session's cancel key where the backend's stream is readable: TLS terminated here, or plaintext.
    const watchCancelKeys = learnsCancelKey(decision.mode, facts, record.postgres === "plaintext");

    // On Bun's own sockets, bytes relayed as they come to a plain backend leave the stream layer
    // (bun-connection.ts): the tunnel holds a few KB per connection where two streams hold far more.
    if (
      client instanceof BunSocketStream &&
      fitsBunTunnel(
        decision,
        facts,
        snapshot.services.onlyPlainServers(decision.service!),
        watchCancelKeys,
        client instanceof BunTlsStream,
      )
    ) {
      const stream = client;
      const tunnelClient = { take: () => stream.detach(), drop: () => stream.destroy() };
      await tunnelOnBun(tunnelClient, candidates, toBackendFirst, env.peer, record, finish, env.log);
      return;
    }

    const dialed = await dialFirst(candidates, record, (target) =>
      dialServer(target.address, target.tls, target.transport, env.peer),
    );
    if (!dialed.ok) {
      client.destroy();
      finish("backend_unreachable", dialed.message);
      return;
    }
    const backend = dialed.socket;
    backend.on("error", destroyOnError);
    if (watchCancelKeys) cancelRegistry.watch(backend, dialed.target);

    if (facts.postgres && decision.mode === "passthrough") {
      // The client already got our "S"; the backend must agree to TLS before it sees the client's hello.
      const answer = await askBackendForTls(backend);
      if (answer !== "S") {
        backend.destroy();
        client.destroy();
        finish(
          "backend_refused_ssl",
          answer === null
            ? "the backend closed without answering the SSLRequest"
            : `the backend answered "${answer}" to the SSLRequest`,
        );
        return;
      }
    }

    const relayOptions: RelayOptions = {
      terminationDelayMs: dialed.target.transport.terminationDelayMs,
      // Deno can lose a paused TLS socket's end of stream: the entry point's idleTimeout bounds the wait.
      ...lostEndGuardFor(client, backend, env.entryPoint.idleTimeoutMs),
    };
    if (toBackendFirst.length > 0) backend.write(toBackendFirst);
    const onDone = relayEnded(toBackendFirst.length, relayOptions, record, finish, env.log);
    relay(client, backend, relayOptions).then(onDone);
  } catch (err) {
    client.destroy();
    throw err;
  }
}

/**
 * A TLS-ALPN-01 validation: the handshake with the challenge certificate of the order in progress for
 * the SNI is the whole answer (RFC 8737 §3), so the connection closes right after it. With no order
 * for the name, the handshake is refused as an unknown name, as Traefik does.
 */
async function answerAcmeChallenge(
  socket: AcceptedSocket,
  peeked: Buffer,
  facts: ConnectionFacts,
  env: ConnectionState,
  finish: (reason: AccessReason, detail?: string) => void,
  deadline: number,
): Promise<void> {
  const challenge = facts.sni ? env.challenges.get(facts.sni) : undefined;
  if (!challenge) {
    socket.end(fatalAlert(ALERT_UNRECOGNIZED_NAME));
    finish(
      "no_route",
      `ALPN ${ACME_TLS_ALPN}: no ACME challenge is pending for "${facts.sni || "(no SNI)"}"`,
    );
    return;
  }
  const remaining = Number.isFinite(deadline) ? deadline - Date.now() : 10_000;
  let outcome: HandshakeOutcome;
  try {
    outcome = await challengeTerminator(challenge, ACME_TLS_ALPN).handshake(socket, peeked, remaining);
  } catch (err) {
    // A challenge certificate Node refuses to load: this validation fails, the access line says why.
    socket.destroy();
    finish("tls_handshake_failed", `ACME challenge: ${errorText(err)}`);
    return;
  }
  if (!outcome.ok) {
    socket.destroy();
    finish("tls_handshake_failed", `ACME challenge handshake: ${outcome.message.trim()}`);
    return;
  }
  const tls = outcome.socket;
  tls.on("error", () => tls.destroy());
  tls.end();
  // The handshake was the whole answer: a validator that never closes its side is not waited for.
  setTimeout(() => tls.destroy(), 10_000).unref();
  finish("acme_challenge", "TLS-ALPN-01 challenge certificate served");
}

/** Sends an SSLRequest and reads the one-byte answer (null when the backend closes first). */
function askBackendForTls(backend: Socket | TLSSocket): Promise<string | null> {
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      cleanup();
      // Exactly one byte is expected; anything more is not a PostgreSQL server speaking the protocol.
      resolve(
        chunk.length === 1
          ? String.fromCharCode(chunk[0]!)
          : `${String.fromCharCode(chunk[0]!)}+${chunk.length - 1} bytes`,
      );
    };
    const onClose = () => {
      cleanup();
      resolve(null);
    };
    const cleanup = () => {
      backend.removeListener("data", onData);
      backend.removeListener("close", onClose);
      backend.pause();
    };
    backend.on("data", onData);
    backend.once("close", onClose);
    backend.write(SSL_REQUEST);
  });
}

/**
 * A PostgreSQL CancelRequest: plaintext, no SNI, only a process id and secret key. When we know which
 * server owns that session, the cancel goes there; true when it was handled here. An unknown key goes
 * to a plain TCP router if one takes the connection, else it is dropped and logged.
 */
async function forwardCancel(
  socket: AcceptedSocket,
  bytes: Buffer,
  plainRouteExists: boolean,
  peer: ProxyAddresses,
  record: AccessRecord,
  finish: (reason: AccessReason, detail?: string) => void,
): Promise<boolean> {
  const request = classifyPostgresStart(bytes);
  if (request.kind !== "cancel-request") return false;
  const data = { processId: request.processId, secretKey: request.secretKey };
  const owner = cancelRegistry.owner(data);
  if (!owner) {
    if (plainRouteExists) return false;
    socket.destroy();
    finish(
      "no_route",
      `cancel request for process ${request.processId}: no session with that key went through this proxy`,
    );
    return true;
  }
  record.server = owner.address;
  record.service = owner.service;
  const error = await sendCancel(owner, data, peer);
  record.bytesIn = request.consumed;
  socket.destroy();
  if (error) finish("backend_unreachable", `cancel request for process ${request.processId}: ${error}`);
  else finish("closed", `cancel request for process ${request.processId} forwarded`);
  return true;
}

/** The addresses a PROXY protocol header carries: the client as we see it, and our entry point. */
function proxyAddresses(socket: AcceptedSocket): ProxyAddresses {
  return {
    src: socket.remoteAddress ? { ip: socket.remoteAddress, port: socket.remotePort ?? 0 } : null,
    dst: socket.localAddress ? { ip: socket.localAddress, port: socket.localPort ?? 0 } : null,
  };
}

type InboundOutcome = { ok: true; rest: Buffer } | { ok: false; reason: AccessReason; detail: string };

/**
 * Inbound PROXY protocol (v1 or v2) on an entry point that enables it. The header is optional per
 * connection, as in Traefik. Only peers in trustedIPs (or every peer with insecure) may set the
 * client address; from anyone else a header is removed and ignored.
 */
async function readInboundProxyHeader(
  socket: AcceptedSocket,
  deadline: number,
  settings: NonNullable<EntryPoint["proxyProtocol"]>,
  state: ConnectionState,
): Promise<InboundOutcome> {
  let decoded: ReturnType<typeof decodeProxyHeader> = { kind: "need-more" };
  const outcome = await readUntil(socket, deadline, (bytes) => {
    decoded = decodeProxyHeader(bytes);
    return decoded.kind !== "need-more";
  });
  if (outcome.kind !== "ok") {
    return {
      ok: false,
      reason: outcome.kind === "timeout" ? "timeout" : "no_clienthello",
      detail: "waiting for a PROXY protocol header",
    };
  }
  const header = decoded as ReturnType<typeof decodeProxyHeader>;
  if (header.kind === "invalid")
    return { ok: false, reason: "bad_clienthello", detail: `PROXY protocol header: ${header.reason}` };
  if (header.kind !== "header") return { ok: true, rest: outcome.bytes };
  const peerIp = socket.remoteAddress ?? "";
  const trusted = settings.insecure || trustedProxies(settings).contains(peerIp);
  if (trusted && header.command === "proxy" && header.src) {
    state.peer = { src: header.src, dst: header.dst ?? state.peer.dst };
  }
  return { ok: true, rest: outcome.bytes.subarray(header.consumed) };
}

const trustedCache = new WeakMap<object, IpMatcher>();

function trustedProxies(settings: NonNullable<EntryPoint["proxyProtocol"]>): IpMatcher {
  let matcher = trustedCache.get(settings);
  if (!matcher) {
    const parsed = IpMatcher.parse(settings.trustedIPs.map((t) => t.value));
    // validate reports bad entries; a list that does not parse trusts nobody.
    matcher = parsed.ok ? parsed.matcher : IpMatcher.nobody();
    trustedCache.set(settings, matcher);
  }
  return matcher;
}

/** Reads until `done(bytes)` says enough has arrived; the bytes stay with the caller. */
function readUntil(
  socket: AcceptedSocket,
  deadline: number,
  done: (bytes: Buffer) => boolean,
): Promise<{ kind: "ok" | "closed" | "timeout"; bytes: Buffer }> {
  return new Promise((resolve) => {
    let bytes: Buffer = Buffer.alloc(0);
    const cleanup = () => {
      clearTimeout(timer);
      socket.removeListener("data", onData);
      socket.removeListener("end", onEnd);
      socket.removeListener("close", onEnd);
      socket.pause();
    };
    const onData = (chunk: Buffer) => {
      bytes = bytes.length === 0 ? chunk : Buffer.concat([bytes, chunk]);
      if (!done(bytes)) return;
      cleanup();
      resolve({ kind: "ok", bytes });
    };
    const onEnd = () => {
      cleanup();
      resolve({ kind: "closed", bytes });
    };
    const timer = setTimeout(
      () => {
        cleanup();
        resolve({ kind: "timeout", bytes });
      },
      Math.max(0, deadline - Date.now()),
    );
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
    socket.resume();
  });
}
