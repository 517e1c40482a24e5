/**
 * `serve --workers N` (N > 1): one primary process and N workers accepting on the same entry points.
 *
 * The workers are node:cluster workers, which Node, Bun and Deno all provide: a worker's listen() is
 * coordinated by the primary, so every worker ends up on the same address, port 0 included. On Node
 * the primary holds each listening socket and shares it (see SCHEDULING); Bun and Deno do the same
 * through their own cluster implementations (SO_REUSEPORT on Linux for Bun).
 *
 * The primary accepts nothing. It checks the configuration and logs its findings once, makes the
 * default certificate once (so every worker presents the same one), starts the workers, prints one
 * `listening` line per entry point once all of them listen, runs the ACME resolvers, and turns
 * SIGHUP/--watch and SIGTERM/SIGINT into commands every worker carries out. A worker that dies is
 * started again (with a growing pause when it keeps dying) and that is logged.
 *
 * Logs: a worker's stdout and stderr are pipes to the primary, which copies them to its own only in
 * whole lines. Every worker line carries `worker` (1..N); access lines therefore form one log, and a
 * long line can never be cut by another process's. Lines about the whole server (listening,
 * reloading, shutting down, stopped) come from the primary alone.
 *
 * Primary → worker commands and the replies are JSON messages on the cluster channel, tagged
 * `tlsroute`; broadcasts (src/proxy/workers.ts) travel on the same channel, in order.
 */
import cluster from "node:cluster";
import { availableParallelism } from "node:os";
import type { LogFormat, Logger, LogLevel } from "../proxy/log.ts";
import type { ListenerEvent } from "../proxy/server.ts";
import { WORKER_SLOT_ENV } from "../proxy/workers.ts";
import type { GeneratedCertificate } from "../tls/generated.ts";
import type { Workspace } from "../workspace.ts";
import { UsageError } from "./common.ts";

export interface WorkerCount {
  count: number;
  /** How it was given, for messages. */
  given: string;
}

/** `--workers N` or `--workers auto` (one per CPU); default 1. */
export function parseWorkerCount(value: string | undefined): WorkerCount {
  if (value === undefined) return { count: 1, given: "1" };
  if (value === "auto") return { count: Math.max(1, availableParallelism()), given: value };
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 256)
    throw new UsageError(`--workers must be a number from 1 to 256 or "auto", got "${value}"`);
  return { count: Number(value), given: value };
}

/** Whether this process is a worker started by a serve primary. */
export function isServeWorker(): boolean {
  return cluster.isWorker === true && process.env[WORKER_SLOT_ENV] !== undefined;
}

/** What serve.ts gives the primary and the workers: the command line, digested. */
export interface ServeContext {
  level: LogLevel;
  format: LogFormat;
  /** Opens the configuration with the --entrypoint overrides applied (throws on unusable input). */
  open(): Workspace;
  /** Opens it again for a reload, logging findings; null (after logging why) when it cannot be used. */
  reloadCandidate(log: Logger): Workspace | null;
  /** Starts --watch on the running configuration's files. */
  watch: ((files: () => readonly string[], reload: (why: string) => void, log: Logger) => void) | null;
}

// ---------------------------------------------------------------------------------------- messages

export type ToWorker =
  | { tlsroute: "init"; generated: SerializedCertificate }
  | { tlsroute: "reload"; id: number }
  | { tlsroute: "sync"; id: number }
  | { tlsroute: "stop" };

export type FromWorker =
  | { tlsroute: "hello" }
  | { tlsroute: "ready"; listeners: ListenerEvent[] }
  | { tlsroute: "start-failed"; message: string; hint?: string; exitCode: number }
  | { tlsroute: "reloaded"; id: number; ok: true; listeners: ListenerEvent[] }
  | { tlsroute: "reloaded"; id: number; ok: false; error: string }
  | { tlsroute: "synced"; id: number }
  | { tlsroute: "accepting-stopped"; openConnections: number; graceMs: number }
  | { tlsroute: "stopped"; forcedConnections: number };

export type SerializedCertificate = Omit<GeneratedCertificate, "notAfter"> & { notAfter: string };

export function isFromWorker(message: unknown): message is FromWorker {
  return (
    typeof message === "object" && message !== null && typeof (message as FromWorker).tlsroute === "string"
  );
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function isFromPrimary(message: unknown): message is ToWorker {
  return (
    typeof message === "object" && message !== null && typeof (message as ToWorker).tlsroute === "string"
  );
}
