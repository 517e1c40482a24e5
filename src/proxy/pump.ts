/**
 * One direction of a relay: the bytes one socket reads, written to the other, counted.
 *
 * It starts as `pipe()` (with a counting 'data' listener), which works on every runtime and stream.
 * On Node, once a plain TCP socket has carried `BULK_THRESHOLD` bytes, its reads switch to one buffer
 * of its own that every read reuses (the mechanism behind `net.connect({ onread })`). Why: for every
 * read, Node otherwise allocates a fresh 64 KiB ArrayBuffer, and at bulk rates that is what costs the
 * most after the copies themselves: the kernel copies into memory that is cold and often not yet
 * mapped (page faults), and the stream of external allocations drives V8 into full garbage
 * collections (bench/README.md, "What was tried"). A reused buffer stays in the cache.
 *
 * The contract that makes reuse safe: a read fills the buffer only after the previous write of its
 * bytes is done with it. Node writes to a socket synchronously when the kernel takes everything; a
 * write the kernel cannot take whole stays queued *and points into our buffer*, so after such a
 * write no further read is started until the write's callback has run. A direction whose reads keep
 * filling the buffer moves to a larger one (fewer calls per byte), through the hook Node offers for
 * choosing the next read's buffer.
 *
 * Accepted sockets have no public `onread` option, so the switch sets the same two internal fields
 * `net.connect({ onread })` sets (found by their symbol descriptions) and calls the handle's
 * `useUserBuffer`. Everything is feature-detected: where any piece is missing (Bun, a TLS socket, a
 * future Node that renames them), the direction simply stays on `pipe()`. Short connections (most
 * requests, database sessions) never reach the threshold, so idle connections carry no buffer.
 */
import { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { TLSSocket } from "node:tls";
import { currentRuntime } from "../tls/runtime-support.ts";

/** Bytes a direction carries through `pipe()` before it moves to a reused read buffer. */
export const BULK_THRESHOLD = 256 * 1024;
/** The reused read buffer: each read syscall takes up to this much. */
export const READ_BUFFER_BYTES = 64 * 1024;
/**
 * A direction whose reads keep filling the whole buffer (a sender faster than we forward) moves to a
 * buffer this large: a quarter of the read and write calls per byte, which is most of what is left
 * of the cost per GiB (bench/README.md, "What was tried").
 */
export const LARGE_READ_BUFFER_BYTES = 256 * 1024;
/** Consecutive full reads that make a direction move to the large buffer. */
const FULL_READS_TO_GROW = 4;

/** The internals a reused read buffer needs, when the socket has all of them. */
interface UserBufferHooks {
  handle: { useUserBuffer(buffer: Uint8Array): void };
  kBuffer: symbol;
  kBufferCb: symbol;
  /** Where Node looks, after each read, for a function giving the next buffer; absent = no growth. */
  kBufferGen: symbol | undefined;
}

/** The cheap part of the check, done for every connection: a plain TCP socket on Node with a handle. */
function mayReuseBuffer(stream: Duplex): boolean {
  // Node only: Bun has none of it; Deno's emulation has the names, but is not what was measured.
  if (currentRuntime() !== "node") return false;
  if (!(stream instanceof Socket) || stream instanceof TLSSocket) return false;
  const handle = (stream as Socket & { _handle?: { useUserBuffer?: unknown } })._handle;
  return typeof handle?.useUserBuffer === "function";
}

/** Everything the switch needs, looked up when a direction turns out to be bulk. */
function userBufferHooks(stream: Duplex): UserBufferHooks | null {
  if (!mayReuseBuffer(stream)) return null;
  const handle = (stream as Socket & { _handle: UserBufferHooks["handle"] })._handle;
  let kBuffer: symbol | undefined;
  let kBufferCb: symbol | undefined;
  let kBufferGen: symbol | undefined;
  for (const symbol of Object.getOwnPropertySymbols(stream)) {
    if (symbol.description === "kBuffer") kBuffer = symbol;
    else if (symbol.description === "kBufferCb") kBufferCb = symbol;
    else if (symbol.description === "kBufferGen") kBufferGen = symbol;
  }
  if (!kBuffer || !kBufferCb) return null;
  // The generator slot must hold null when unused (Node calls anything else).
  const gen = kBufferGen ? (stream as unknown as Record<symbol, unknown>)[kBufferGen] : undefined;
  return {
    handle,
    kBuffer,
    kBufferCb,
    kBufferGen: gen === null ? kBufferGen : undefined,
  };
}

/**
 * Copies what `src` reads to `dst` (never ending `dst`: the relay propagates ends itself), calling
 * `onBytes` with the size of every chunk. Backpressure pauses `src` while `dst` is full.
 *
 * A 'data' listener and a 'drain' wait do what pipe() does here with two listeners and one closure
 * instead of pipe()'s dozen (per idle connection, that is memory: bench/README.md). The relay
 * handles errors, ends and closes itself, which is the rest of what pipe() would do. `pipeOnly`
 * uses pipe() for good, for callers that need its 'pause' events or `unpipe()` later.
 */
export function forward(
  src: Duplex,
  dst: Duplex,
  onBytes: (bytes: number) => void,
  options: { pipeOnly?: boolean } = {},
): void {
  if (options.pipeOnly) {
    src.pipe(dst, { end: false });
    src.on("data", (chunk: Buffer | string) => onBytes(chunk.length));
    return;
  }
  const bulk = mayReuseBuffer(src);
  let carried = 0;
  let waitingForDrain = false;
  const onDrain = (): void => {
    waitingForDrain = false;
    src.resume();
  };
  const onData = (chunk: Buffer): void => {
    onBytes(chunk.length);
    if (!dst.write(chunk) && !waitingForDrain) {
      waitingForDrain = true;
      src.pause();
      dst.once("drain", onDrain);
    }
    if (!bulk) return;
    carried += chunk.length;
    if (carried < BULK_THRESHOLD) return;
    // Chunks still buffered in the stream would be skipped by the switch: wait for a chunk that
    // leaves none (the stream buffers while paused for the drain).
    if (src.readableLength > 0 || src.destroyed || readEnded(src)) return;
    const hooks = userBufferHooks(src);
    if (hooks === null) return;
    src.removeListener("data", onData);
    // A drain still awaited resumes the socket when it comes, which is what the switch wants too.
    readIntoReusedBuffer(src as Socket, dst, hooks, onBytes, !waitingForDrain);
  };
  src.on("data", onData);
  // A socket paused before (pauseOnConnect, the peek) stays paused until resumed.
  if (dst.writableNeedDrain) {
    waitingForDrain = true;
    dst.once("drain", onDrain);
  } else src.resume();
}

function readIntoReusedBuffer(
  src: Socket,
  dst: Duplex,
  hooks: UserBufferHooks,
  onBytes: (bytes: number) => void,
  resume: boolean,
): void {
  const buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  const fields = src as unknown as Record<symbol, unknown>;
  let writePending = false;
  let fullReads = 0;
  const grow = (): Buffer => {
    // Node calls this right after a read: the old buffer may still back a queued write; the new one is free.
    if (hooks.kBufferGen) fields[hooks.kBufferGen] = null;
    return Buffer.allocUnsafeSlow(LARGE_READ_BUFFER_BYTES);
  };
  const afterWrite = (): void => {
    if (!writePending) return;
    writePending = false;
    if (!src.destroyed) src.resume();
  };
  const onRead = (bytes: number, filled: Buffer): boolean => {
    onBytes(bytes);
    if (bytes < filled.length) fullReads = 0;
    else if (
      ++fullReads === FULL_READS_TO_GROW &&
      hooks.kBufferGen &&
      filled.length < LARGE_READ_BUFFER_BYTES
    )
      fields[hooks.kBufferGen] = grow;
    dst.write(filled.subarray(0, bytes), afterWrite);
    if (dst.writableLength === 0) return true;
    // Queued: the write still points into `buffer`. Returning false stops reading until it is done.
    writePending = true;
    return false;
  };
  fields[hooks.kBuffer] = buffer;
  fields[hooks.kBufferCb] = onRead;
  hooks.handle.useUserBuffer(buffer);
  // Writes queued before the switch use buffers of their own; the first read's write queues behind
  // them. From now on every read lands in onRead, and pause()/resume() stop and start the handle.
  if (resume) src.resume();
}

/** Whether the stream has read its end (even if 'end' is not emitted yet). */
function readEnded(stream: Duplex): boolean {
  const state = (stream as Duplex & { _readableState?: { ended?: boolean } })._readableState;
  return stream.readableEnded || state?.ended === true;
}
