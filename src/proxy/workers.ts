/**
 * `serve --workers N`: which process this is, and the channel the primary uses to tell every worker
 * the same thing.
 *
 * With N > 1, serve runs one primary process that never accepts a connection and N worker processes
 * (node:cluster, on Node, Bun and Deno alike) that each run a full ProxyServer on the same entry
 * points. Work that must happen once per machine rather than once per process (ACME orders,
 * configuration checks, the log lines about listeners) happens in the primary, which pushes its
 * results to the workers over this channel. Without --workers the one process plays both parts and
 * the channel delivers in-process, so code that broadcasts never needs to know which mode it is in.
 *
 * The channel:
 *
 *   // in the primary (or the single process)
 *   broadcast("acme.challenge.set", { name, certificate });
 *   broadcast("acme.certificates", { certificates }, { retainAs: "acme.certificates" });
 *
 *   // in each worker (or the single process), before it starts listening
 *   const off = onPrimaryMessage("acme.challenge.set", ({ name, certificate }) => ...);
 *
 * - Topics and their payload types are declared in `BroadcastTopics` below: add one there. Payloads
 *   cross a process boundary as JSON, so they must be plain data (no Date, Map, Buffer or class).
 * - Messages reach each worker in the order they were broadcast, after the worker's start message.
 * - `retainAs` keeps the latest message under that key and replays it to workers started later (a
 *   worker restarted after a crash), so state that accumulates (the certificates obtained so far)
 *   reaches them; `forgetRetained(key)` drops it (a challenge that is over). Messages without
 *   `retainAs` go to the workers alive at the time only.
 * - A handler registered after a message arrived does not get it: workers register theirs before
 *   they start listening, which is before any broadcast can concern them.
 * - `broadcast()` does not wait. Where something must be in every worker before the primary goes
 *   on (a challenge certificate before the CA is told to validate), the primary asks every worker
 *   to confirm it has handled all messages so far (`sync` in src/cli/serve-primary.ts).
 */
import type { ChallengeCertificate } from "../acme/challenges.ts";

/** A certificate a resolver holds, as plain data: the worker parses it again (src/acme/stored.ts). */
export interface BroadcastCertificate {
  resolver: string;
  /** The catalog label (`source`) the primary gave it; its id is derived from it and the leaf. */
  source: string;
  certPem: string;
  keyPem: string;
}

/** What the primary can tell the workers, by topic. */
export interface BroadcastTopics {
  /** A TLS-ALPN-01 challenge certificate to present for `name` while the CA validates it. */
  "acme.challenge.set": { name: string; certificate: ChallengeCertificate };
  /** The challenge for `name` is over (only if it is still the one with this id, when given). */
  "acme.challenge.delete": { name: string; id?: string };
  /** Every certificate the resolvers hold now (replaces the previous set). */
  "acme.certificates": { certificates: BroadcastCertificate[] };
  /** For tests of the channel itself. */
  "test.echo": { text: string };
}

export type BroadcastTopic = keyof BroadcastTopics;

export interface BroadcastOptions {
  /** Keep the latest message under this key and replay it to workers started later. */
  retainAs?: string;
}

/** A broadcast as it travels to a worker process. */
export interface BroadcastEnvelope {
  tlsroute: "broadcast";
  topic: BroadcastTopic;
  payload: unknown;
}

type Handler = (payload: unknown) => void;

/** How this process takes part: the only process, the primary of workers, or one of the workers. */
export type ProcessRole = { kind: "single" } | { kind: "primary" } | { kind: "worker"; slot: number };

/** The environment variable that tells a process forked by the primary which worker it is (1..N). */
export const WORKER_SLOT_ENV = "TLSROUTE_WORKER";

let role: ProcessRole = { kind: "single" };
/** Delivers an envelope to every worker process alive; set by the primary. */
let sendToWorkers: ((envelope: BroadcastEnvelope) => void) | null = null;
const handlers = new Map<BroadcastTopic, Set<Handler>>();
const retained = new Map<string, BroadcastEnvelope>();

export function processRole(): ProcessRole {
  return role;
}

/** The worker number (1..N) of this process under --workers, or null. */
export function workerSlot(): number | null {
  return role.kind === "worker" ? role.slot : null;
}

/** Called once by serve when it knows which part this process plays. */
export function setProcessRole(next: ProcessRole, send?: (envelope: BroadcastEnvelope) => void): void {
  role = next;
  sendToWorkers = next.kind === "primary" ? (send ?? null) : null;
}

/** Sends `payload` to every worker (or, in a single process, to this process's handlers). */
export function broadcast<T extends BroadcastTopic>(
  topic: T,
  payload: BroadcastTopics[T],
  options: BroadcastOptions = {},
): void {
  const envelope: BroadcastEnvelope = { tlsroute: "broadcast", topic, payload };
  if (options.retainAs !== undefined) retained.set(options.retainAs, envelope);
  if (role.kind === "primary") sendToWorkers?.(envelope);
  else deliver(envelope);
}

/** Stops replaying the message retained under `key` to workers started from now on. */
export function forgetRetained(key: string): void {
  retained.delete(key);
}

/** The retained messages, in the order they were first retained: what a new worker is sent first. */
export function retainedEnvelopes(): BroadcastEnvelope[] {
  return [...retained.values()];
}

/** Registers a handler for one topic; returns the function that removes it. */
export function onPrimaryMessage<T extends BroadcastTopic>(
  topic: T,
  handler: (payload: BroadcastTopics[T]) => void,
): () => void {
  let set = handlers.get(topic);
  if (!set) {
    set = new Set();
    handlers.set(topic, set);
  }
  const wrapped = handler as Handler;
  set.add(wrapped);
  return () => {
    set.delete(wrapped);
  };
}

/** Hands a broadcast that arrived (in a worker: from the primary) to this process's handlers. */
export function deliver(envelope: BroadcastEnvelope): void {
  for (const handler of handlers.get(envelope.topic) ?? []) handler(envelope.payload);
}

export function isBroadcastEnvelope(message: unknown): message is BroadcastEnvelope {
  return (
    typeof message === "object" &&
    message !== null &&
    (message as { tlsroute?: unknown }).tlsroute === "broadcast" &&
    typeof (message as { topic?: unknown }).topic === "string"
  );
}
