/**
 * The tunnel between a client and a backend once both are connected: two pipes with half-close
 * propagation and Traefik's `terminationDelay`.
 *
 * When one peer half-closes (its FIN, or TLS close_notify, reaches us as 'end'), the other peer's
 * write half is ended so it sees the same EOF; that peer then has `terminationDelayMs` to finish
 * sending before both sockets are destroyed (negative: no limit, a true half-open tunnel). When both
 * peers have half-closed, the sockets close once the buffered bytes are flushed. Any error destroys
 * both. The promise never rejects: a relay ends with a result, whatever the peers do.
 *
 * Both streams must be created with `allowHalfOpen: true`, otherwise Node ends a socket's write half
 * by itself the moment its read half ends and the propagation here has nothing left to do.
 *
 * Deno's TLS sockets can lose their peer's end of stream: one paused by backpressure when the peer's
 * close_notify and FIN arrive never emits 'end' or 'close', and then resumes looking healthy
 * (README: Runtimes). `lostEndGuard` is the workaround: once such a socket has been paused, a quiet
 * connection is taken to mean that its end was lost.
 */

import type { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import { currentRuntime, type TlsRuntime } from "../tls/runtime-support.ts";
import { forward } from "./pump.ts";

export interface RelayOptions {
  /** Time the other peer gets to finish sending after the first half-close; negative = unlimited. */
  terminationDelayMs: number;
  /**
   * Destroy both sockets after this long without any byte in either socket (0/undefined = none).
   * Replaces any inactivity timeout already set on the sockets (`socket.setTimeout`).
   * Worth setting: on Deno a TLS socket paused by backpressure can miss its peer's EOF, and only an
   * idle bound then releases it.
   */
  idleTimeoutMs?: number;
  /**
   * For streams that can lose their peer's end of stream while paused (see the top of this file):
   * once one of `sides` has been paused by backpressure, `quietMs` without a byte in either direction
   * is taken as that side's end. Its peer is half-closed as if the end had arrived, and the relay goes
   * on as after a real end (the answer still flows back, terminationDelay applies). A byte from that
   * side afterwards proves the guess wrong and cuts the connection. Nothing happens for a side never
   * paused, nor for one whose end was read.
   */
  lostEndGuard?: { sides: readonly RelaySide[]; quietMs: number };
}

export interface RelayResult {
  bytesFromClient: number;
  bytesFromBackend: number;
  /** The first error either side reported (the idle timeout counts as one); null for a clean end. */
  error: Error | null;
  /** Which side closed first: the peer that half-closed first, or "error" when an error came first. */
  firstClose: "client" | "backend" | "error";
  /** Whether the relay cut the connection itself, and why. */
  cutBy: "terminationDelay" | "idleTimeout" | null;
  /** Which side the first error came from, when there was one. */
  errorSide: "client" | "backend" | null;
  /** The side whose end the lost-end guard assumed after a quiet period; null when every end was read. */
  assumedEnd: RelaySide | null;
}

export type RelaySide = "client" | "backend";
type Side = RelaySide;

/**
 * Runtimes whose TLS sockets lose the peer's end of stream while paused by backpressure: Deno 2.x
 * (measured on 2.9.6, reference/runtimes.md §5). Node and Bun deliver it.
 */
export function losesPausedTlsEnd(runtime: TlsRuntime = currentRuntime()): boolean {
  return runtime === "deno";
}

/**
 * The relay options serve adds for a connection: on a runtime that loses a paused TLS socket's end,
 * guard the TLS sides of the tunnel with the entry point's idle bound (0 = no guard). Nothing on
 * other runtimes, where an idle connection is left alone as Traefik leaves it.
 */
export function lostEndGuardFor(
  client: Duplex,
  backend: Duplex,
  quietMs: number,
  runtime: TlsRuntime = currentRuntime(),
): Pick<RelayOptions, "lostEndGuard"> {
  if (!losesPausedTlsEnd(runtime) || quietMs <= 0) return {};
  const sides: Side[] = [];
  if (client instanceof TLSSocket) sides.push("client");
  if (backend instanceof TLSSocket) sides.push("backend");
  return sides.length > 0 ? { lostEndGuard: { sides, quietMs } } : {};
}

/** What the access log says about a relay that ended without an error, when there is something to say. */
export function relayNote(result: RelayResult, options: RelayOptions): string | undefined {
  if (result.assumedEnd === null) return undefined;
  const quiet = options.lostEndGuard?.quietMs ?? 0;
  return (
    `the ${result.assumedEnd}'s end of stream was assumed after ${quiet}ms without traffic ` +
    "(the runtime can lose it after backpressure; README: Runtimes)"
  );
}

/** The few socket methods the relay uses when the stream is a real socket. */
interface MaybeSocket {
  setTimeout?: (ms: number, callback?: () => void) => unknown;
  closed?: boolean;
}

/** A relay's result before anything happened (and of one that never started). */
export function emptyRelayResult(): RelayResult {
  return {
    bytesFromClient: 0,
    bytesFromBackend: 0,
    error: null,
    firstClose: "error",
    cutBy: null,
    errorSide: null,
    assumedEnd: null,
  };
}

export function relay(client: Duplex, backend: Duplex, options: RelayOptions): Promise<RelayResult> {
  return new Promise<RelayResult>((resolve) => {
    const result = emptyRelayResult();
    const streams: Record<Side, Duplex> = { client, backend };
    const ended: Record<Side, boolean> = { client: false, backend: false };
    const closed: Record<Side, boolean> = { client: false, backend: false };
    let firstDecided = false;
    let terminationTimer: ReturnType<typeof setTimeout> | null = null;
    let done = false;
    // The lost-end guard's state (see RelayOptions.lostEndGuard).
    const guard = options.lostEndGuard && options.lostEndGuard.quietMs > 0 ? options.lostEndGuard : null;
    const pausedOnce: Record<Side, boolean> = { client: false, backend: false };
    const assumed: Record<Side, boolean> = { client: false, backend: false };
    let lastByteAt = Date.now();
    let guardTimer: ReturnType<typeof setTimeout> | null = null;
    const stopGuard = (): void => {
      if (guardTimer) clearTimeout(guardTimer);
      guardTimer = null;
    };

    const other = (side: Side): Side => (side === "client" ? "backend" : "client");

    const destroyBoth = (): void => {
      if (terminationTimer) clearTimeout(terminationTimer);
      terminationTimer = null;
      stopGuard();
      client.destroy();
      backend.destroy();
    };

    const finish = (): void => {
      if (done || !closed.client || !closed.backend) return;
      done = true;
      if (terminationTimer) clearTimeout(terminationTimer);
      stopGuard();
      resolve(result);
    };

    const onError = (side: Side, error: Error): void => {
      if (!result.error) {
        result.error = error;
        result.errorSide = side;
      }
      if (!firstDecided) {
        firstDecided = true;
        result.firstClose = "error";
      }
      destroyBoth();
    };

    const onEnd = (side: Side): void => {
      if (ended[side]) return;
      ended[side] = true;
      if (!firstDecided) {
        firstDecided = true;
        result.firstClose = side;
      }
      const peer = other(side);
      // Propagate the EOF: the peer reads EOF and may still answer through its own write half.
      streams[peer].end();
      if (ended[peer]) {
        // Both directions are finished: what is left is flushing, then the sockets close by themselves.
        if (terminationTimer) clearTimeout(terminationTimer);
        terminationTimer = null;
        closeWhenFlushed();
        return;
      }
      if (options.terminationDelayMs >= 0) {
        terminationTimer = setTimeout(() => {
          terminationTimer = null;
          if (ended[peer]) return;
          result.cutBy ??= "terminationDelay";
          destroyBoth();
        }, options.terminationDelayMs);
        terminationTimer.unref?.();
      }
    };

    /**
     * Node closes a socket once its read half ended and its write half finished; streams that do not
     * destroy themselves (autoDestroy off) are destroyed here, after their last byte was handed over.
     */
    const closeWhenFlushed = (): void => {
      for (const side of ["client", "backend"] as const) {
        const stream = streams[side];
        if (stream.writableFinished) stream.destroy();
        else stream.once("finish", () => stream.destroy());
      }
    };

    for (const side of ["client", "backend"] as const) {
      const stream = streams[side];
      stream.on("error", (error: Error) => onError(side, error));
      const onClose = (): void => {
        if (closed[side]) return;
        closed[side] = true;
        // Closed without reading EOF or without flushing what it had to send: reset, error or
        // destroyed from outside. The tunnel goes with it.
        if (!ended[side] || !stream.writableFinished) {
          if (!firstDecided) {
            firstDecided = true;
            result.firstClose = "error";
          }
          destroyBoth();
        }
        finish();
      };
      // A stream that already closed before the relay started will not say so again.
      if ((stream as Duplex & MaybeSocket).closed === true) queueMicrotask(onClose);
      else stream.once("close", onClose);
    }

    const count = (side: Side) => (bytes: number) => {
      if (side === "client") result.bytesFromClient += bytes;
      else result.bytesFromBackend += bytes;
      if (guard) lastByteAt = Date.now();
      // A byte from a side whose end was assumed: the guess was wrong (see assumeEnd).
      if (assumed[side]) wrongGuess(side);
    };

    // ----- the lost-end guard ---------------------------------------------------------------------
    /** Sides that were paused and whose end has not been read: the ones whose end may have been lost. */
    const suspects = (): Side[] => (guard?.sides ?? []).filter((side) => pausedOnce[side] && !ended[side]);

    const assumeEnd = (side: Side): void => {
      result.assumedEnd ??= side;
      assumed[side] = true;
      onEnd(side);
      // The peer's write half is ended now: nothing more may be copied there. A byte that still comes
      // (count() sees every one) means the end was not lost after all: the connection cannot go on.
      const stream = streams[side];
      stream.unpipe(streams[other(side)]);
      stream.resume();
    };

    const wrongGuess = (side: Side): void => {
      if (!result.error) {
        result.error = new Error(`the ${side} sent more after its end was assumed`);
        result.errorSide = side;
      }
      destroyBoth();
    };

    const checkQuiet = (): void => {
      guardTimer = null;
      if (done || !guard) return;
      const quiet = Date.now() - lastByteAt;
      if (quiet < guard.quietMs) {
        guardTimer = setTimeout(checkQuiet, guard.quietMs - quiet);
        guardTimer.unref?.();
        return;
      }
      for (const side of suspects()) assumeEnd(side);
    };

    if (guard) {
      for (const side of guard.sides) {
        // pipe() pauses the source when the destination's buffer is full: that is the dangerous moment.
        streams[side].on("pause", () => {
          pausedOnce[side] = true;
          if (guardTimer || done || ended[side]) return;
          guardTimer = setTimeout(checkQuiet, guard.quietMs);
          guardTimer.unref?.();
        });
      }
    }

    // pipe() both ways, moving bulk directions to a reused read buffer where the runtime allows
    // (pump.ts); a guarded side stays on pipe(), whose 'pause' events and unpipe() the guard uses.
    forward(client, backend, count("client"), { pipeOnly: guard?.sides.includes("client") });
    forward(backend, client, count("backend"), { pipeOnly: guard?.sides.includes("backend") });
    client.on("end", () => onEnd("client"));
    backend.on("end", () => onEnd("backend"));

    const idle = options.idleTimeoutMs ?? 0;
    const onIdle = (): void => {
      if (!result.error) {
        result.error = new Error(`no traffic for ${idle}ms`);
        result.errorSide = null;
      }
      result.cutBy ??= "idleTimeout";
      if (!firstDecided) {
        firstDecided = true;
        result.firstClose = "error";
      }
      destroyBoth();
    };
    // The relay owns the sockets' inactivity timers from here on: a bound left over from an earlier
    // phase (the entry point's read timeout) is replaced, or cleared when there is no idle bound.
    // Per socket: a stream in one direction keeps both sockets busy (one reads, the other writes).
    for (const stream of [client, backend] as const) {
      const socket = stream as Duplex & MaybeSocket;
      if (typeof socket.setTimeout !== "function") continue;
      if (idle > 0) socket.setTimeout(idle, onIdle);
      else socket.setTimeout(0);
    }

    for (const side of ["client", "backend"] as const) {
      const stream = streams[side];
      if (stream.destroyed) {
        // Handed over dead (the client left while the backend was being dialled): nothing to relay.
        queueMicrotask(destroyBoth);
      } else if (stream.readableEnded) {
        // Its EOF was read before the relay started (a client that sent its request and shut down).
        queueMicrotask(() => onEnd(side));
      }
    }
  });
}
