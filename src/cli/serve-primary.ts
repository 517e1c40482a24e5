/**
 * The primary of `serve --workers N`: starts the workers, announces what they listen on, relays
 * reloads and shutdown to them, restarts a worker that dies, and runs the ACME resolvers for all of
 * them (see serve-workers.ts for the whole design).
 */
import cluster, { type Worker } from "node:cluster";
import type { Readable, Writable } from "node:stream";
import { AcmeManager } from "../acme/manager.ts";
import { createLogger, type Logger, writeLineNow } from "../proxy/log.ts";
import type { ListenerEvent } from "../proxy/server.ts";
import {
  type BroadcastEnvelope,
  broadcast,
  forgetRetained,
  retainedEnvelopes,
  setProcessRole,
  WORKER_SLOT_ENV,
} from "../proxy/workers.ts";
import type { GeneratedCertificate } from "../tls/generated.ts";
import { generateDefaultCertificate } from "../tls/generated.ts";
import type { Workspace } from "../workspace.ts";
import { EXIT_FINDINGS, EXIT_USAGE, UsageError } from "./common.ts";
import { isDenoPermissionError } from "./deno-permissions.ts";
import {
  errorText,
  type FromWorker,
  isFromWorker,
  type ServeContext,
  type ToWorker,
  type WorkerCount,
} from "./serve-workers.ts";

/**
 * Node's cluster either has the primary accept every connection and pass it to a worker in turn
 * (SCHED_RR, its default on Linux) or shares the listening socket so that the workers accept
 * themselves (SCHED_NONE). Round robin spreads connections evenly but costs the primary an accept and
 * a descriptor passed over IPC per connection, on a core the workers need; shared accept costs
 * nothing extra and the kernel wakes whichever worker is idle. NODE_CLUSTER_SCHED_POLICY=rr|none
 * overrides (Node reads it itself). Measured in bench/README.md ("serve --workers").
 */
const SCHEDULING: "rr" | "none" = "none";

/** A worker that keeps dying is started again after this pause, doubled per recent death, up to the maximum. */
const RESTART_DELAY_MS = 100;
const RESTART_DELAY_MAX_MS = 30_000;
/** Deaths further apart than this do not lengthen the pause. */
const RESTART_WINDOW_MS = 60_000;
/**
 * A worker started again that does not listen within this time is killed and started again: a start
 * that hangs would otherwise leave its slot empty for good, unnoticed. Deno 2.9 does hang now and
 * then: the listening socket the primary passes arrives without its descriptor, and listen() never
 * calls back (a NODE_HANDLE that Deno's IPC reader delivers without the fd; denoland/deno#35968
 * names the same symptom). A start normally takes well under a second.
 */
const START_AGAIN_TIMEOUT_MS = 10_000;

interface Slot {
  /** 1..N, stable across restarts: the `worker` field of its log lines. */
  number: number;
  worker: Worker | null;
  /** The worker listens to messages: a message sent before would be dropped. */
  greeted: boolean;
  ready: boolean;
  /** What it reported listening on when it became ready. */
  listeners: ListenerEvent[];
  /** Recent deaths, for the restart pause. */
  deaths: number[];
  restartTimer: ReturnType<typeof setTimeout> | null;
  /** Runs while a worker started again has not reported ready (START_AGAIN_TIMEOUT_MS). */
  startTimer: ReturnType<typeof setTimeout> | null;
  /** The primary stopped the current worker after it failed a reload; its exit starts the replacement. */
  replacing: boolean;
  /** Resolves once the current worker's stdout and stderr have ended, every line copied. */
  output: Promise<void>;
  /** Replies awaited from the current worker, by kind. */
  waiters: { match: (m: FromWorker) => boolean; resolve: (m: FromWorker | null) => void }[];
}

/** Runs the primary until it has stopped; resolves with the exit code. */
export async function runPrimary(
  ctx: ServeContext,
  workers: WorkerCount,
  workspace: Workspace,
): Promise<number> {
  // Unbatched: its lines and the workers' lines it copies must keep their order.
  const log = createLogger({ level: ctx.level, format: ctx.format, write: writeLineNow });
  if (typeof cluster.fork !== "function" || cluster.isPrimary === false) {
    throw new UsageError(
      `--workers ${workers.given}: this runtime has no node:cluster to start worker processes with`,
      "Run serve without --workers, or on Node, Bun or Deno.",
    );
  }
  if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined)
    cluster.schedulingPolicy = SCHEDULING === "rr" ? cluster.SCHED_RR : cluster.SCHED_NONE;
  // Workers get pipes for stdout and stderr, copied here line by line.
  cluster.setupPrimary({ silent: true });
  const primary = new Primary(ctx, workers.count, log, workspace, await generateDefaultCertificate());
  return primary.run();
}

class Primary {
  private readonly slots: Slot[] = [];
  private phase: "starting" | "running" | "stopping" = "starting";
  private startup: {
    resolve: (failure: { message: string; hint?: string; exitCode: number } | null) => void;
  } | null = null;
  /** entry point → address, as last logged. */
  private readonly announced = new Map<string, string>();
  private reloading = Promise.resolve();
  private reloadWhenStarted: string | null = null;
  private nextRequestId = 1;
  private watched: readonly string[];
  private resolvers: AcmeManager | null = null;
  /** Current challenge id per name, to drop a retained challenge only when it is the one withdrawn. */
  private readonly challengeIds = new Map<string, string>();
  private stopped: () => void = () => {};
  private readonly forceColor: boolean;

  constructor(
    private readonly ctx: ServeContext,
    count: number,
    private readonly log: Logger,
    private workspace: Workspace,
    private readonly generated: GeneratedCertificate,
  ) {
    this.watched = workspace.files;
    this.forceColor =
      ctx.format === "pretty" && process.stdout.isTTY === true && !("NO_COLOR" in process.env);
    for (let n = 1; n <= count; n++)
      this.slots.push({
        number: n,
        worker: null,
        greeted: false,
        ready: false,
        listeners: [],
        deaths: [],
        restartTimer: null,
        startTimer: null,
        replacing: false,
        output: Promise.resolve(),
        waiters: [],
      });
    setProcessRole({ kind: "primary" }, (envelope) => {
      // A worker not greeted yet gets the retained messages with its start message.
      for (const slot of this.slots) if (slot.worker && slot.greeted) this.send(slot, envelope);
    });
  }

  async run(): Promise<number> {
    // Signals first: one sent as soon as a `listening` line shows must not meet the default disposition.
    process.on("SIGHUP", () => this.reload("SIGHUP"));
    const done = new Promise<void>((resolve) => {
      this.stopped = resolve;
    });
    process.on("SIGTERM", () => this.stop("SIGTERM"));
    process.on("SIGINT", () => this.stop("SIGINT"));
    // Watching starts now too: a change made while the workers start is applied once they run.
    this.ctx.watch?.(
      () => this.watched,
      (why) => this.reload(why),
      this.log,
    );

    const failure = await new Promise<{ message: string; hint?: string; exitCode: number } | null>(
      (resolve) => {
        this.startup = { resolve };
        for (const slot of this.slots) this.spawn(slot);
      },
    );
    this.startup = null;
    if (failure) {
      this.log.error(failure.message, failure.hint ? { hint: failure.hint } : undefined);
      await this.stopWorkers();
      return failure.exitCode;
    }
    if (this.phase === "stopping") {
      await done;
      return 0;
    }
    this.phase = "running";
    this.log.info("workers started", {
      workers: this.slots.length,
      pids: this.slots.map((s) => s.worker?.process.pid ?? null),
    });
    this.resolvers = this.startResolvers();
    if (this.reloadWhenStarted !== null) this.reload(this.reloadWhenStarted);
    await done;
    this.resolvers?.stop();
    return 0;
  }

  private spawn(slot: Slot): void {
    slot.restartTimer = null;
    let worker: Worker;
    try {
      worker = cluster.fork({
        [WORKER_SLOT_ENV]: String(slot.number),
        ...(this.forceColor ? { FORCE_COLOR: "1" } : {}),
      });
    } catch (err) {
      this.spawnFailed(slot, err);
      return;
    }
    slot.worker = worker;
    slot.greeted = false;
    slot.ready = false;
    slot.replacing = false;
    slot.output = Promise.all([
      copyLines(worker.process.stdout, process.stdout),
      copyLines(worker.process.stderr, process.stderr),
    ]).then(() => {});
    if (this.phase === "running") {
      slot.startTimer = setTimeout(() => {
        slot.startTimer = null;
        if (slot.worker !== worker || slot.ready || this.phase !== "running") return;
        this.log.error("a worker started again did not listen in time; starting another", {
          worker: slot.number,
          pid: worker.process.pid,
          waitedMs: START_AGAIN_TIMEOUT_MS,
        });
        // Its exit is logged and schedules the next start, as for any worker that dies.
        worker.process.kill("SIGKILL");
      }, START_AGAIN_TIMEOUT_MS);
      slot.startTimer.unref();
    }
    worker.on("message", (message: unknown) => {
      if (slot.worker !== worker || !isFromWorker(message)) return;
      this.onMessage(slot, message);
    });
    worker.on("exit", (code, signal) => this.onExit(slot, worker, code, signal));
    // Deno reports a process it may not start here, asynchronously, and never an 'exit'.
    worker.on("error", (err: Error) => {
      if (slot.worker === worker && !slot.greeted) this.spawnFailed(slot, err);
    });
  }

  /** The worker process could not be started at all. */
  private spawnFailed(slot: Slot, err: unknown): void {
    slot.worker = null;
    const denied = isDenoPermissionError(err);
    const failure = {
      message: denied
        ? `--workers needs Deno's permission to start processes: ${errorText(err)}`
        : `cannot start a worker process: ${errorText(err)}`,
      ...(denied ? { hint: "Add --allow-run (Deno starts each worker as a new deno process)." } : {}),
      exitCode: EXIT_USAGE,
    };
    if (this.phase === "starting") {
      this.startFailed(failure);
      return;
    }
    if (this.phase === "stopping") return;
    this.log.error("a worker could not be started again; trying later", {
      worker: slot.number,
      error: failure.message,
    });
    this.scheduleRestart(slot);
  }

  private send(slot: Slot, message: ToWorker | BroadcastEnvelope): void {
    const worker = slot.worker;
    if (!worker?.isConnected()) return;
    try {
      worker.send(message);
    } catch {
      // Its channel closed: the worker is going away, and its 'exit' will say so.
    }
  }

  /**
   * The next message of `slot`'s current worker that matches; null when it dies or `timeoutMs`
   * passes. Register before sending what it answers, since the answer may come at once.
   */
  private waitFor(slot: Slot, match: (m: FromWorker) => boolean, timeoutMs: number) {
    return new Promise<FromWorker | null>((resolve) => {
      if (!slot.worker) {
        resolve(null);
        return;
      }
      const waiter = {
        match,
        resolve: (m: FromWorker | null) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      const timer = setTimeout(() => {
        const at = slot.waiters.indexOf(waiter);
        if (at !== -1) slot.waiters.splice(at, 1);
        resolve(null);
      }, timeoutMs);
      // The worker's channel keeps this process alive while an answer can still come.
      timer.unref();
      slot.waiters.push(waiter);
    });
  }

  private onMessage(slot: Slot, message: FromWorker): void {
    const waiter = slot.waiters.find((w) => w.match(message));
    if (waiter) {
      slot.waiters.splice(slot.waiters.indexOf(waiter), 1);
      waiter.resolve(message);
      return;
    }
    if (message.tlsroute === "hello") {
      slot.greeted = true;
      if (this.phase === "stopping") {
        // Started but never given work: nothing to drain.
        slot.worker?.process.kill("SIGKILL");
        return;
      }
      this.send(slot, {
        tlsroute: "init",
        generated: { ...this.generated, notAfter: this.generated.notAfter.toISOString() },
      });
      for (const envelope of retainedEnvelopes()) this.send(slot, envelope);
      return;
    }
    if (message.tlsroute === "ready") {
      slot.ready = true;
      if (slot.startTimer) clearTimeout(slot.startTimer);
      slot.startTimer = null;
      slot.listeners = message.listeners;
      slot.deaths = slot.deaths.filter((t) => Date.now() - t < RESTART_WINDOW_MS);
      if (this.phase === "starting") {
        if (this.slots.every((s) => s.ready)) {
          const first = JSON.stringify(this.slots[0]!.listeners);
          if (this.slots.some((s) => JSON.stringify(s.listeners) !== first))
            this.log.warn("the workers did not all bind the same addresses", {
              addresses: this.slots.map((s) => s.listeners),
            });
          this.announce(this.slots[0]!.listeners);
          this.startup?.resolve(null);
        }
        return;
      }
      this.log.info("worker started again", { worker: slot.number, pid: slot.worker?.process.pid });
      // All workers died at once: the sockets were released, and port 0 may have given new ports.
      this.announce(message.listeners);
      return;
    }
    if (message.tlsroute === "stopped" && slot.replacing) {
      // Stopped after a failed reload: it waits for this before leaving (see drain()), and without
      // it would keep its slot, and its replacement, waiting 2 s more.
      if (slot.worker?.isConnected()) slot.worker.disconnect();
      return;
    }
    if (message.tlsroute === "start-failed") {
      if (this.phase === "stopping") return;
      if (this.phase === "starting") {
        this.startFailed(message);
        return;
      }
      this.log.error("a worker started again could not start; trying later", {
        worker: slot.number,
        error: message.message,
      });
      // Workers ignore SIGTERM (the primary decides), which is all Worker.kill() sends; this one
      // serves nothing, so it is ended outright and its exit schedules the next try.
      slot.worker?.process.kill("SIGKILL");
    }
  }

  /** The first failure ends the start; the workers' other reports of the same failure are not repeated. */
  private startFailed(failure: { message: string; hint?: string; exitCode: number }): void {
    if (!this.startup) return;
    this.phase = "stopping";
    this.startup.resolve(failure);
    this.startup = null;
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    slot.worker = null;
    slot.greeted = false;
    slot.ready = false;
    if (slot.startTimer) clearTimeout(slot.startTimer);
    slot.startTimer = null;
    for (const waiter of slot.waiters.splice(0)) waiter.resolve(null);
    if (this.phase === "stopping") return;
    if (this.phase === "starting") {
      this.startFailed({
        message: `worker ${slot.number} exited while starting (${signal ?? `exit code ${code}`})`,
        exitCode: EXIT_FINDINGS,
      });
      return;
    }
    if (slot.replacing) {
      // Expected: the primary stopped it (reloadNow). Not a warning, and not "unexpectedly".
      this.log.info("worker stopped after a failed reload; starting a new one", {
        worker: slot.number,
        pid: worker.process.pid,
        inMs: this.scheduleRestart(slot),
      });
      return;
    }
    this.log.warn("worker exited unexpectedly; starting a new one", {
      worker: slot.number,
      pid: worker.process.pid,
      exitCode: code,
      signal,
      inMs: this.scheduleRestart(slot),
    });
  }

  /** Starts the slot's worker again after a pause that grows while it keeps dying; returns the pause. */
  private scheduleRestart(slot: Slot): number {
    const now = Date.now();
    slot.deaths = [...slot.deaths.filter((t) => now - t < RESTART_WINDOW_MS), now];
    const delayMs = Math.min(RESTART_DELAY_MAX_MS, RESTART_DELAY_MS * 2 ** (slot.deaths.length - 1));
    slot.restartTimer = setTimeout(() => {
      if (this.phase !== "stopping") this.spawn(slot);
    }, delayMs);
    return delayMs;
  }

  /** Logs listener changes once for all workers. */
  private announce(events: readonly ListenerEvent[]): void {
    for (const event of events) {
      if (event.kind === "listening") {
        if (this.announced.get(event.entryPoint) === event.address) continue;
        this.announced.set(event.entryPoint, event.address);
        this.log.info("listening", {
          entryPoint: event.entryPoint,
          address: event.address,
          ...(event.sockets ? { sockets: event.sockets } : {}),
          workers: this.slots.length,
        });
      } else if (this.announced.delete(event.entryPoint)) {
        this.log.info("entry point removed", { entryPoint: event.entryPoint });
      }
    }
  }

  private reload(why: string): void {
    if (this.phase === "stopping") {
      this.log.warn("shutting down; reload ignored", { trigger: why });
      return;
    }
    if (this.phase === "starting") {
      this.reloadWhenStarted = why;
      return;
    }
    this.reloading = this.reloading.then(() => this.reloadNow(why));
  }

  private async reloadNow(why: string): Promise<void> {
    if (this.phase !== "running") return;
    this.log.info("reloading configuration", { trigger: why });
    // Checked here once (and its findings logged once); the workers then read the same files.
    const next = this.ctx.reloadCandidate(this.log);
    if (!next) return;
    const id = this.nextRequestId++;
    // A worker being replaced after a failed reload is left out: its replacement reads the files anew.
    const live = this.slots.filter((s) => s.worker && s.ready && !s.replacing);
    const answers = live.map((slot) =>
      this.waitFor(slot, (m) => m.tlsroute === "reloaded" && m.id === id, 60_000),
    );
    for (const slot of live) this.send(slot, { tlsroute: "reload", id });
    const replies = await Promise.all(answers);
    const failed: { slot: Slot; error: string }[] = [];
    const listeners: ListenerEvent[] = [];
    replies.forEach((reply, i) => {
      const slot = live[i]!;
      if (reply?.tlsroute === "reloaded" && reply.ok) listeners.push(...reply.listeners);
      else
        failed.push({
          slot,
          error: reply?.tlsroute === "reloaded" && !reply.ok ? reply.error : "no answer from the worker",
        });
    });
    if (failed.length === live.length) {
      this.log.error("reload failed; keeping the running configuration", { error: failed[0]?.error });
      return;
    }
    this.announce(listeners);
    this.workspace = next;
    this.watched = next.files;
    this.resolvers?.update(next);
    for (const { slot, error } of failed) {
      // Started again, it reads the files as they are now, like the workers that did reload.
      this.log.error("a worker could not apply the new configuration; restarting it", {
        worker: slot.number,
        error,
      });
      // A graceful stop (its open connections finish); its exit starts a replacement. Worker.kill()
      // would send SIGTERM, which workers ignore.
      slot.replacing = true;
      if (slot.worker) this.send(slot, { tlsroute: "stop" });
    }
    this.log.info("configuration reloaded", { routers: next.model.routers.size, workers: live.length });
  }

  private stop(signal: string): void {
    if (this.phase === "stopping") {
      this.log.warn("second signal: exiting now", { signal });
      for (const slot of this.slots) slot.worker?.process.kill("SIGKILL");
      process.exit(1);
    }
    const wasStarting = this.phase === "starting";
    this.phase = "stopping";
    void (async () => {
      await this.drain(signal);
      if (wasStarting) this.startup?.resolve(null);
      this.stopped();
    })();
  }

  /** Stops accepting everywhere, says so, lets connections finish, and waits for every worker to exit. */
  private async drain(signal: string): Promise<void> {
    for (const slot of this.slots) if (slot.restartTimer) clearTimeout(slot.restartTimer);
    // A worker that has not said hello yet cannot take the command, and has no connections.
    for (const slot of this.slots) if (slot.worker && !slot.greeted) slot.worker.process.kill("SIGKILL");
    const live = this.slots.filter((s) => s.worker && s.greeted);
    const exits = live.map((slot) => exited(slot.worker!));
    const outputs = live.map((slot) => slot.output);
    const closed = live.map((slot) => this.waitFor(slot, (m) => m.tlsroute === "accepting-stopped", 10_000));
    // The final answers are awaited after the grace period, which is only known from the first ones.
    const finals = live.map((slot) =>
      this.waitFor(slot, (m) => m.tlsroute === "stopped", 24 * 3_600_000).then((reply) => {
        // The worker waits for this before leaving, so its last reply is never overtaken by its exit.
        if (reply && slot.worker?.isConnected()) slot.worker.disconnect();
        return reply;
      }),
    );
    for (const slot of live) this.send(slot, { tlsroute: "stop" });
    // Every reply to the stop arrives after that worker closed its listeners.
    const accepting = await Promise.all(closed);
    let openConnections = 0;
    let graceMs = 0;
    for (const reply of accepting) {
      if (reply?.tlsroute !== "accepting-stopped") continue;
      openConnections += reply.openConnections;
      graceMs = Math.max(graceMs, reply.graceMs);
    }
    this.log.info("shutting down", { signal, openConnections, graceMs, workers: live.length });
    // A worker that does not finish in time is killed: its connections count as forced.
    const finished = await Promise.race([
      Promise.all(finals),
      delay(graceMs + 10_000).then(() => finals.map(() => null)),
    ]);
    let forced = 0;
    finished.forEach((reply, i) => {
      if (reply?.tlsroute === "stopped") forced += reply.forcedConnections;
      else if (accepting[i]?.tlsroute === "accepting-stopped") forced += accepting[i].openConnections;
    });
    await Promise.race([Promise.all(exits), delay(5_000)]);
    for (const slot of live) slot.worker?.process.kill("SIGKILL");
    // A worker's 'exit' can come before the end of its output: its last lines (access lines of the
    // connections it drained) are copied before "stopped", which must be the last line. Its pipes
    // close when it exits, so this wait is short; the bound is for a pipe some other process holds.
    await Promise.race([Promise.all(outputs), delay(2_000)]);
    this.log.info("stopped", { forcedConnections: forced });
  }

  /**
   * Resolves once every worker that takes messages has handled everything sent to it before (each
   * handles its messages in order), or after 5 s for a worker that does not answer.
   */
  private async sync(): Promise<void> {
    const id = this.nextRequestId++;
    const live = this.slots.filter((s) => s.worker && s.greeted);
    const answers = live.map((slot) =>
      this.waitFor(slot, (m) => m.tlsroute === "synced" && m.id === id, 5_000),
    );
    for (const slot of live) this.send(slot, { tlsroute: "sync", id });
    await Promise.all(answers);
  }

  /** Stops every worker after a failed start (workers ignore signals: they take commands). */
  private async stopWorkers(): Promise<void> {
    this.phase = "stopping";
    for (const slot of this.slots) if (slot.restartTimer) clearTimeout(slot.restartTimer);
    const live = this.slots.filter((s) => s.worker);
    for (const slot of live) {
      if (slot.greeted) this.send(slot, { tlsroute: "stop" });
      else slot.worker?.process.kill("SIGKILL");
    }
    await Promise.race([Promise.all(live.map((s) => exited(s.worker!))), delay(5_000)]);
    for (const slot of live) slot.worker?.process.kill("SIGKILL");
  }

  /** The ACME resolvers run here only; what they produce goes to every worker. */
  private startResolvers(): AcmeManager {
    const challengeKey = (name: string) => `acme.challenge:${name.toLowerCase()}`;
    const manager = new AcmeManager(
      this.log,
      {
        publish: (name, certificate) => {
          this.challengeIds.set(name.toLowerCase(), certificate.id);
          broadcast("acme.challenge.set", { name, certificate }, { retainAs: challengeKey(name) });
          // The CA may connect to any worker as soon as it is told to validate: wait until all hold it.
          return this.sync();
        },
        withdraw: (name, id) => {
          if (this.challengeIds.get(name.toLowerCase()) === id) {
            this.challengeIds.delete(name.toLowerCase());
            forgetRetained(challengeKey(name));
          }
          broadcast("acme.challenge.delete", { name, id });
        },
      },
      (certificates) => {
        broadcast(
          "acme.certificates",
          {
            certificates: certificates.map((c) => ({
              resolver: c.resolver,
              source: c.source,
              certPem: c.certPem,
              keyPem: c.keyPem,
            })),
          },
          { retainAs: "acme.certificates" },
        );
        return this.sync();
      },
    );
    manager.update(this.workspace);
    return manager;
  }
}

function exited(worker: Worker): Promise<void> {
  if (worker.process.exitCode !== null || worker.process.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => worker.once("exit", () => resolve()));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * Copies a worker's output to ours in whole lines: each write carries complete lines only, so lines
 * of different workers (and of the primary, which writes whole lines too) never mix. Resolves once
 * `from` has ended (everything copied) or failed.
 */
function copyLines(from: Readable | null | undefined, to: Writable): Promise<void> {
  if (!from) return Promise.resolve();
  // A reader that went away must not take the primary down (writeLineNow guards stdout the same way).
  if (to.listenerCount("error") === 0) to.on("error", () => {});
  let partial: Buffer | null = null;
  from.on("data", (chunk: Buffer) => {
    const last = chunk.lastIndexOf(0x0a);
    if (last === -1) {
      partial = partial ? Buffer.concat([partial, chunk]) : chunk;
      return;
    }
    const whole = chunk.subarray(0, last + 1);
    to.write(partial ? Buffer.concat([partial, whole]) : whole);
    partial = last + 1 < chunk.length ? chunk.subarray(last + 1) : null;
  });
  return new Promise((resolve) => {
    from.on("end", () => {
      if (partial) to.write(Buffer.concat([partial, Buffer.from("\n")]));
      partial = null;
      resolve();
    });
    // Destroyed without an 'end' (an error): nothing more will come.
    from.on("close", () => resolve());
    from.on("error", () => {});
  });
}
