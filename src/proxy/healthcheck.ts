/**
 * TCP health checks (`loadBalancer.healthCheck`), Traefik's semantics: every server starts up; a
 * server that is up is probed every `interval`, one that is down every `unhealthyInterval`. A probe
 * dials the server like a connection would (same transport, same backend TLS, but never a PROXY
 * header, and the port replaced by `port` when set), bounded by `timeout`; writes `send` if set;
 * reads `expect.length` bytes and compares them if `expect` is set. A failed probe takes the server
 * out of its load balancer, a passing one puts it back.
 *
 * One deliberate difference: Traefik compares the result of a single read, so a reply that arrives
 * in two TCP segments fails. Here the first `expect.length` bytes are compared, however they arrive.
 */
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { HealthCheck } from "../config/model.ts";
import { dialServer, joinHostPort, splitHostPort } from "./dial.ts";
import type { HealthTarget, ServiceDirectory } from "./services.ts";

export interface HealthEvent {
  service: string;
  address: string;
  up: boolean;
  /** Why: "check passed" or what failed (dial error, timeout, unexpected reply). */
  reason: string;
}

/** Traefik drops `send`/`expect` payloads longer than this (falls back to connect-only checks). */
const MAX_PAYLOAD = 65_535;

type ProbeResult = { ok: true } | { ok: false; reason: string };

/** The address a probe dials: the server's, with the port replaced when the check names one. */
export function probeAddress(address: string, check: HealthCheck): string {
  if (check.port === null) return address;
  const parts = splitHostPort(address);
  return parts ? joinHostPort(parts.host, check.port) : address;
}

/** Runs one probe; resolves with the verdict, never rejects. Aborting `signal` ends it at once. */
export async function probe(target: HealthTarget, signal?: AbortSignal): Promise<ProbeResult> {
  const { server, check } = target;
  const address = probeAddress(server.address, check);
  const transport = { ...server.transport, proxyProtocolVersion: null, dialTimeoutMs: check.timeoutMs };
  const dialed = await dialServer(
    address,
    server.tls,
    transport,
    { src: null, dst: null },
    signal ? { signal } : {},
  );
  if (!dialed.ok) return { ok: false, reason: `dial ${address}: ${dialed.message}` };
  const socket = dialed.socket;
  const abort = (): void => {
    socket.destroy();
  };
  signal?.addEventListener("abort", abort, { once: true });
  const payload = (text: string): Buffer => {
    const bytes = Buffer.from(text, "utf8");
    return bytes.length <= MAX_PAYLOAD ? bytes : Buffer.alloc(0);
  };
  try {
    return await exchange(socket, payload(check.send), payload(check.expect), check.timeoutMs);
  } finally {
    signal?.removeEventListener("abort", abort);
    socket.destroy();
  }
}

/** Writes `send`, then reads until `expect.length` bytes are in, within `timeoutMs`. */
function exchange(
  socket: Socket | TLSSocket,
  send: Buffer,
  expect: Buffer,
  timeoutMs: number,
): Promise<ProbeResult> {
  return new Promise<ProbeResult>((resolve) => {
    let settled = false;
    let received = Buffer.alloc(0);
    const settle = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener("data", onData);
      resolve(result);
    };
    const timer = setTimeout(
      () => settle({ ok: false, reason: `no answer within ${timeoutMs}ms` }),
      timeoutMs,
    );
    timer.unref?.();
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      if (received.length < expect.length) return;
      const got = received.subarray(0, expect.length);
      settle(
        got.equals(expect)
          ? { ok: true }
          : {
              ok: false,
              reason: `expected ${JSON.stringify(expect.toString("utf8"))}, got ${JSON.stringify(got.toString("utf8"))}`,
            },
      );
    };
    socket.on("error", (error) => settle({ ok: false, reason: error.message }));
    // Destroyed from here (the checker stopped) or closed without a clean end.
    socket.once("close", () => settle({ ok: false, reason: "connection closed" }));
    socket.once("end", () =>
      settle({
        ok: false,
        reason: `connection closed after ${received.length} of ${expect.length} expected bytes`,
      }),
    );
    const afterSend = (): void => {
      if (expect.length === 0) settle({ ok: true });
      else {
        socket.on("data", onData);
        socket.resume();
      }
    };
    if (send.length > 0) {
      socket.write(send, (error) => {
        if (error) settle({ ok: false, reason: error.message });
        else afterSend();
      });
    } else {
      afterSend();
    }
  });
}

export class HealthChecker {
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  /** One per start(): stop() aborts it, so probes of an old run neither linger nor report. */
  private run: AbortController | null = null;

  constructor(
    private readonly directory: ServiceDirectory,
    private readonly log: (event: HealthEvent) => void,
  ) {}

  start(): void {
    if (this.run) return;
    const run = new AbortController();
    this.run = run;
    for (const target of this.directory.healthTargets()) {
      // Every server starts up; the first probe comes one interval later, as in Traefik.
      this.schedule(target, true, run.signal);
    }
  }

  /** Stops every timer and aborts the probes in flight; their results are dropped. */
  stop(): void {
    this.run?.abort();
    this.run = null;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  private schedule(target: HealthTarget, up: boolean, signal: AbortSignal): void {
    if (signal.aborted) return;
    const delay = up ? target.check.intervalMs : target.check.unhealthyIntervalMs;
    const timer = setTimeout(
      () => {
        this.timers.delete(timer);
        void this.check(target, signal);
      },
      delay > 0 ? delay : target.check.intervalMs,
    );
    timer.unref?.();
    this.timers.add(timer);
  }

  private async check(target: HealthTarget, signal: AbortSignal): Promise<void> {
    const result = await probe(target, signal);
    if (signal.aborted) return;
    const { service } = target;
    const { address } = target.server;
    const wasUp = this.directory.isUp(service, address);
    const up = result.ok;
    this.directory.setServerStatus(service, address, up);
    if (wasUp !== up) {
      this.log({ service, address, up, reason: result.ok ? "check passed" : result.reason });
    }
    this.schedule(target, up, signal);
  }
}
