/**
 * The built-in `whoami@internal` target: answers every connection with one JSON line saying how it
 * was routed, then closes. It makes routing visible without any backend.
 */
import type { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import type { ConnectionFacts, Decision } from "../routing/decide.ts";
import { BunTlsStream } from "./bun-stream.ts";
import type { AccessRecord } from "./log.ts";
import { workerSlot } from "./workers.ts";

export const WHOAMI_ADDRESS = "whoami@internal";

export function whoamiLine(
  decision: Decision,
  facts: ConnectionFacts,
  client: Duplex,
  record: AccessRecord,
): string {
  const tls = client instanceof TLSSocket || client instanceof BunTlsStream ? client : null;
  const peer = tls?.getPeerCertificate();
  const subject = peer && typeof peer === "object" && "subject" in peer && peer.subject ? peer.subject : null;
  const body = {
    router: decision.router,
    service: decision.service,
    entryPoint: facts.entryPoint,
    mode: decision.mode,
    client: record.client,
    sni: facts.tls ? facts.sni || null : null,
    alpnOffered: facts.alpn,
    alpnNegotiated: tls ? tls.alpnProtocol || null : null,
    tlsVersion: tls?.getProtocol() ?? null,
    cipher: tls?.getCipher()?.name ?? null,
    clientCertificate: subject
      ? Object.entries(subject)
          .map(([k, v]) => `${k}=${String(v)}`)
          .join(", ")
      : null,
    postgres: record.postgres,
    // Which process answered: under --workers, the worker's number (1..N); null without workers.
    worker: workerSlot(),
    pid: process.pid,
  };
  return `${JSON.stringify(body)}\n`;
}
