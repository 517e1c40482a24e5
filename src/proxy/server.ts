/**
 * The listeners and the lifecycle of serve: bind one listener per entry point, hand each accepted
 * socket to the connection pipeline with the snapshot current at accept time, swap snapshots on
 * reload (open connections keep theirs), and drain on shutdown.
 */
import { createServer, type Server, type Socket } from "node:net";
import type { EntryPoint } from "../config/model.ts";
import type { GeneratedCertificate } from "../tls/generated.ts";
import type { Workspace } from "../workspace.ts";
import { handleConnection } from "./connection.ts";
import { HealthChecker } from "./healthcheck.ts";
import type { Logger } from "./log.ts";
import { buildSnapshot, type Snapshot } from "./snapshot.ts";

interface Listener {
  entryPoint: EntryPoint;
  server: Server;
  /** "host:port" as configured, to tell whether a reload changed it. */
  configured: string;
}

export class ProxyServer {
  private snapshot: Snapshot;
  private health: HealthChecker;
  private readonly listeners = new Map<string, Listener>();
  private readonly active = new Set<Socket>();
  private closing = false;

  constructor(
    workspace: Workspace,
    private readonly generated: GeneratedCertificate,
    private readonly log: Logger,
  ) {
    this.snapshot = buildSnapshot(workspace, generated);
    this.health = this.startHealthChecks(this.snapshot);
  }

  private startHealthChecks(snapshot: Snapshot): HealthChecker {
    for (const problem of snapshot.services.problems) this.log.warn(problem);
    const checker = new HealthChecker(snapshot.services, (event) =>
      this.log[event.up ? "info" : "warn"](event.up ? "server is up" : "server is down", { ...event }),
    );
    checker.start();
    return checker;
  }

  /** Binds every entry point; resolves with the addresses actually bound. */
  async start(): Promise<void> {
    for (const ep of this.snapshot.workspace.model.entryPoints.values()) await this.listen(ep);
  }

  private listen(entryPoint: EntryPoint): Promise<void> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) =>
      this.accept(socket, entryPoint.name),
    );
    const listener: Listener = { entryPoint, server, configured: `${entryPoint.host}:${entryPoint.port}` };
    return new Promise((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) => {
        reject(
          new Error(
            `entry point "${entryPoint.name}" cannot listen on ${entryPoint.address.value}: ${err.code ?? err.message}`,
          ),
        );
      });
      server.listen({ host: entryPoint.host || undefined, port: entryPoint.port }, () => {
        server.removeAllListeners("error");
        server.on("error", (err) =>
          this.log.error("listener error", { entryPoint: entryPoint.name, error: err.message }),
        );
        this.listeners.set(entryPoint.name, listener);
        const address = server.address();
        const bound =
          address && typeof address === "object"
            ? `${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`
            : String(address);
        this.log.info("listening", { entryPoint: entryPoint.name, address: bound });
        resolve();
      });
    });
  }

  private accept(socket: Socket, entryPointName: string): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    // The snapshot current now is the one this connection keeps until it ends.
    const snapshot = this.snapshot;
    const entryPoint = snapshot.workspace.model.entryPoints.get(entryPointName);
    if (!entryPoint) {
      socket.destroy();
      return;
    }
    this.active.add(socket);
    socket.once("close", () => this.active.delete(socket));
    handleConnection(socket, { snapshot, entryPoint, log: this.log }).catch((err: unknown) => {
      socket.destroy();
      this.log.error("connection failed unexpectedly", {
        error: err instanceof Error ? err.message : String(err),
      });
    });
  }

  /** Applies a new, already validated configuration to new connections. */
  async reload(workspace: Workspace): Promise<void> {
    const next = buildSnapshot(workspace, this.generated);
    const entryPoints = workspace.model.entryPoints;
    // Bind new or moved entry points first, so a failure leaves the running configuration untouched.
    const toBind = [...entryPoints.values()].filter((ep) => {
      const current = this.listeners.get(ep.name);
      return !current || current.configured !== `${ep.host}:${ep.port}`;
    });
    const replaced = toBind
      .map((ep) => this.listeners.get(ep.name))
      .filter((l): l is Listener => l !== undefined);
    for (const l of replaced) {
      await new Promise<void>((resolve) => l.server.close(() => resolve()));
      this.listeners.delete(l.entryPoint.name);
    }
    for (const ep of toBind) {
      if (this.listeners.has(ep.name)) continue;
      await this.listen(ep);
    }
    for (const [name, l] of this.listeners) {
      if (!entryPoints.has(name)) {
        l.server.close();
        this.listeners.delete(name);
        this.log.info("entry point removed", { entryPoint: name });
      }
    }
    this.health.stop();
    this.snapshot = next;
    this.health = this.startHealthChecks(next);
  }

  /** Stops accepting, lets open connections finish for up to `graceMs`, then closes the rest. */
  async shutdown(graceMs: number): Promise<{ forced: number }> {
    this.closing = true;
    this.health.stop();
    await Promise.all(
      [...this.listeners.values()].map(
        (l) => new Promise<void>((resolve) => l.server.close(() => resolve())),
      ),
    );
    const deadline = Date.now() + graceMs;
    while (this.active.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    const forced = this.active.size;
    for (const socket of this.active) socket.destroy();
    return { forced };
  }

  get openConnections(): number {
    return this.active.size;
  }
}
