/**
 * The listeners and the lifecycle of serve: bind one listener per entry point, hand each accepted
 * socket to the connection pipeline with the snapshot current at accept time, swap snapshots on
 * reload (open connections keep theirs), and drain on shutdown.
 */
import { createServer, type Socket } from "node:net";
import { ChallengeStore } from "../acme/challenges.ts";
import type { ResolverCertificate } from "../acme/stored.ts";
import { deniedListen } from "../cli/deno-permissions.ts";
import type { EntryPoint } from "../config/model.ts";
import type { GeneratedCertificate } from "../tls/generated.ts";
import { currentRuntime } from "../tls/runtime-support.ts";
import { type Workspace, withResolverCertificates } from "../workspace.ts";
import { BunConnection } from "./bun-connection.ts";
import { CLOSED_OWNER, isClosed, listenNative, type NativeSocket, nativeSockets } from "./bun-socket.ts";
import { type ConnectionEnv, serveConnection } from "./connection.ts";
import { joinHostPort } from "./dial.ts";
import { HealthChecker } from "./healthcheck.ts";
import type { Logger } from "./log.ts";
import { buildSnapshot, type Snapshot } from "./snapshot.ts";
import { terminatesNatively } from "./terminate.ts";

interface Listener {
  entryPoint: EntryPoint;
  /** Stops accepting at once; open connections are left alone. */
  close(): void;
  /** Once the listener is closed and (node:net) its last connection too. */
  closed(): Promise<void>;
  /** "host:port" as configured, and the socket layer: a reload that changes either binds again. */
  configured: string;
}

export class ProxyServer {
  private snapshot: Snapshot;
  private health: HealthChecker;
  private readonly listeners = new Map<string, Listener>();
  private readonly active = new Set<Socket>();
  /**
   * On Bun's own sockets: each open connection by its accepted socket, with the socket whose end()
   * closes it (the accepted one, or the one Bun carries it on once TLS started: `retrackNative`).
   */
  private readonly activeNative = new Map<NativeSocket, NativeSocket>();
  /** The accepted socket of a connection Bun carries on another socket since TLS started on it. */
  private readonly acceptedAs = new WeakMap<NativeSocket, NativeSocket>();
  /** Listeners closed by stopAccepting() whose close (after their last connection) is still due. */
  private readonly closingListeners = new Set<Listener>();
  private closing = false;
  /** TLS-ALPN-01 challenge certificates, shared by every snapshot (an order outlives a reload). */
  readonly challenges = new ChallengeStore();
  /** Certificates the resolvers hold now; null until the ACME manager first reports. */
  private resolverCertificates: readonly ResolverCertificate[] | null = null;

  /** The 'close' listener of every accepted socket (`this` is the socket): one function, not one per connection. */
  private readonly forgetSocket: (this: Socket) => void;

  constructor(
    workspace: Workspace,
    private readonly generated: GeneratedCertificate,
    private readonly log: Logger,
    private readonly options: ProxyServerOptions = {},
  ) {
    const active = this.active;
    this.forgetSocket = function (this: Socket) {
      active.delete(this);
    };
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
    for (const ep of this.snapshot.workspace.model.entryPoints.values()) {
      // A shutdown that began during start (a signal) must not be followed by more listeners.
      if (this.closing) return;
      await this.listen(ep);
    }
  }

  /**
   * Bun's own sockets for every entry point, when Bun's own TLS can terminate on them (terminate.ts):
   * node:tls over a stream that is not Bun's `net.Socket` (bun-stream.ts) closes on the client's
   * close_notify, which would break the half-close a terminated connection must carry. Under
   * --workers, a port-0 entry point stays on `node:net`: every worker would bind a port of its own,
   * where node:cluster gives them all the same one.
   */
  private socketLayer(entryPoint: EntryPoint): "bun" | "node:net" {
    if (!nativeSockets() || !terminatesNatively()) return "node:net";
    return this.options.sharedPorts && entryPoint.port === 0 ? "node:net" : "bun";
  }

  private configuredKey(entryPoint: EntryPoint, layer: "bun" | "node:net"): string {
    return `${entryPoint.host}:${entryPoint.port} ${layer}`;
  }

  private async listen(entryPoint: EntryPoint): Promise<void> {
    // Deno throws a listen() its --allow-net does not cover out of the event loop, past every handler:
    // ask first, so that a start fails cleanly and a reload adding such an entry point is refused.
    const denied = await deniedListen(entryPoint.host, entryPoint.port);
    if (denied) {
      throw new ListenError(
        `entry point "${entryPoint.name}" cannot listen on ${entryPoint.address.value}: ${denied.message}`,
        denied.hint,
      );
    }
    const layer = this.socketLayer(entryPoint);
    const configured = this.configuredKey(entryPoint, layer);
    const bun = layer === "bun" ? nativeSockets() : null;
    // Said on Bun only, where the layer can differ (TLSROUTE_SOCKETS=node, port 0 under --workers).
    const sockets = currentRuntime() === "bun" ? layer : undefined;
    if (bun) {
      let native: ReturnType<typeof listenNative>;
      try {
        native = listenNative(bun, entryPoint.host, entryPoint.port, this.options.sharedPorts === true, {
          accept: (socket) => this.acceptNative(socket, entryPoint.name),
          // An upgraded connection closes on the raw socket Bun carries it on (retrackNative), which
          // stands for the accepted one here.
          closed: (socket) => this.activeNative.delete(this.acceptedAs.get(socket) ?? socket),
        });
      } catch (err) {
        throw listenError(entryPoint, err as NodeJS.ErrnoException);
      }
      this.listening(
        {
          entryPoint,
          configured,
          close: () => native.stop(false),
          closed: () => Promise.resolve(),
        },
        joinHostPort(native.hostname, native.port),
        sockets,
      );
      return;
    }
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) =>
      this.accept(socket, entryPoint.name),
    );
    const listener: Listener = {
      entryPoint,
      configured,
      close: () => server.close(),
      closed: () => new Promise((resolve) => server.once("close", () => resolve())),
    };
    return new Promise((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) => reject(listenError(entryPoint, err)));
      // A deep accept queue absorbs connection bursts; Node's default (511) drops SYNs and costs clients a 1 s retry.
      server.listen({ host: entryPoint.host || undefined, port: entryPoint.port, backlog: 4096 }, () => {
        server.removeAllListeners("error");
        server.on("error", (err) =>
          this.log.error("listener error", { entryPoint: entryPoint.name, error: err.message }),
        );
        const address = server.address();
        const bound =
          address && typeof address === "object"
            ? joinHostPort(address.address, address.port)
            : String(address);
        this.listening(listener, bound, sockets);
        resolve();
      });
    });
  }

  /** A listener is bound: keep it, unless a shutdown began meanwhile. */
  private listening(listener: Listener, bound: string, sockets?: "bun" | "node:net"): void {
    if (this.closing) {
      listener.close();
      return;
    }
    this.listeners.set(listener.entryPoint.name, listener);
    this.announce({
      kind: "listening",
      entryPoint: listener.entryPoint.name,
      address: bound,
      ...(sockets ? { sockets } : {}),
    });
  }

  /** A connection whose accepted socket gave way to another (TLS started on it): track that one. */
  private readonly retrackNative = (before: NativeSocket, after: NativeSocket): void => {
    if (!this.activeNative.has(before)) return;
    // A handshake that fails on the bytes handed over closes the connection inside the upgrade, on
    // the new socket, before this is called: nothing is left to track.
    if (isClosed(after)) {
      this.activeNative.delete(before);
      return;
    }
    this.activeNative.set(before, after);
    this.acceptedAs.set(after, before);
  };

  /** A connection on Bun's own sockets: BunConnection reads its first bytes on the socket's handlers. */
  private acceptNative(socket: NativeSocket, entryPointName: string): void {
    this.activeNative.set(socket, socket);
    const env = this.connectionEnv(entryPointName);
    if (!env) {
      socket.data = CLOSED_OWNER;
      socket.end();
      return;
    }
    const connection = new BunConnection(socket, env, this.retrackNative);
    socket.data = connection;
    connection.start();
  }

  private accept(socket: Socket, entryPointName: string): void {
    const env = this.connectionEnv(entryPointName);
    if (!env) {
      socket.destroy();
      return;
    }
    this.active.add(socket);
    socket.on("close", this.forgetSocket);
    serveConnection(socket, env);
  }

  /** What a connection accepted now keeps until it ends (the current snapshot); null while shutting down. */
  private connectionEnv(entryPointName: string): ConnectionEnv | null {
    if (this.closing) return null;
    const snapshot = this.snapshot;
    const entryPoint = snapshot.workspace.model.entryPoints.get(entryPointName);
    if (!entryPoint) return null;
    return { snapshot, entryPoint, log: this.log, challenges: this.challenges };
  }

  /**
   * Serves another set of resolver certificates (obtained or renewed) to new connections, keeping
   * the rest of the running configuration.
   */
  setResolverCertificates(certificates: readonly ResolverCertificate[]): void {
    this.resolverCertificates = certificates;
    if (this.closing) return;
    const workspace = withResolverCertificates(this.snapshot.workspace, certificates);
    const next = buildSnapshot(workspace, this.generated);
    // Services and inFlightConn counters are unchanged: keep the running health view and counts.
    this.snapshot = { ...next, services: this.snapshot.services, inFlight: this.snapshot.inFlight };
  }

  private announce(event: ListenerEvent): void {
    if (this.options.onListener) this.options.onListener(event);
    else if (event.kind === "listening") {
      const { kind: _, ...fields } = event;
      this.log.info("listening", fields);
    } else this.log.info("entry point removed", { entryPoint: event.entryPoint });
  }

  /** Applies a new, already validated configuration to new connections. */
  async reload(loaded: Workspace): Promise<void> {
    if (this.closing) throw new Error("shutting down");
    const certificates = this.resolverCertificates;
    const workspace = certificates ? withResolverCertificates(loaded, certificates) : loaded;
    let next = buildSnapshot(workspace, this.generated);
    const entryPoints = workspace.model.entryPoints;
    // Bind new or moved entry points first, so a failure leaves the running configuration untouched.
    const toBind = [...entryPoints.values()].filter((ep) => {
      const current = this.listeners.get(ep.name);
      return !current || current.configured !== this.configuredKey(ep, this.socketLayer(ep));
    });
    const replaced = toBind
      .map((ep) => this.listeners.get(ep.name))
      .filter((l): l is Listener => l !== undefined);
    // close() releases the address at once; its callback would wait for the listener's open
    // connections, which keep running on the old configuration, so it is not awaited.
    for (const l of replaced) {
      l.close();
      this.listeners.delete(l.entryPoint.name);
    }
    const bound: Listener[] = [];
    try {
      for (const ep of toBind) {
        await this.listen(ep);
        const listener = this.listeners.get(ep.name);
        if (listener) bound.push(listener);
      }
    } catch (err) {
      // Back to the running configuration: drop what this reload bound, reopen what it closed.
      for (const l of bound) {
        l.close();
        this.listeners.delete(l.entryPoint.name);
      }
      for (const l of replaced) {
        await this.listen(l.entryPoint).catch((again: unknown) =>
          this.log.error("cannot listen again on the previous address", {
            entryPoint: l.entryPoint.name,
            error: again instanceof Error ? again.message : String(again),
          }),
        );
      }
      throw err;
    }
    for (const [name, l] of this.listeners) {
      if (!entryPoints.has(name)) {
        l.close();
        this.listeners.delete(name);
        this.announce({ kind: "removed", entryPoint: name });
      }
    }
    // A certificate obtained while the entry points were being bound must not be dropped.
    if (this.resolverCertificates !== certificates && this.resolverCertificates) {
      next = buildSnapshot(withResolverCertificates(loaded, this.resolverCertificates), this.generated);
    }
    this.health.stop();
    this.snapshot = next;
    this.health = this.startHealthChecks(next);
  }

  /** Stops accepting, lets open connections finish for up to `graceMs`, then closes the rest. */
  async shutdown(graceMs: number): Promise<{ forced: number }> {
    this.stopAccepting();
    // The close callbacks come only after each listener's last connection has closed, so they are
    // awaited after the grace period, not before (that would ignore the bound).
    const closed = [...this.closingListeners].map((listener) => listener.closed());
    const deadline = Date.now() + graceMs;
    while (this.openConnections > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    const forced = this.openConnections;
    for (const socket of this.active) socket.destroy();
    for (const socket of this.activeNative.values()) socket.end();
    await Promise.race([Promise.all(closed), new Promise((r) => setTimeout(r, 1_000).unref())]);
    return { forced };
  }

  /**
   * Closes every listener: from the moment this returns, new connections are refused (the
   * listening sockets are closed synchronously). Open connections are not touched. Idempotent.
   */
  stopAccepting(): void {
    this.closing = true;
    this.health.stop();
    for (const l of this.listeners.values()) {
      const closed = l.closed();
      l.close();
      this.closingListeners.add(l);
      void closed.then(() => this.closingListeners.delete(l));
    }
    this.listeners.clear();
  }

  /** The longest `lifeCycle.graceTimeOut` of the running configuration's entry points. */
  get graceMs(): number {
    const entryPoints = [...this.snapshot.workspace.model.entryPoints.values()];
    return Math.max(0, ...entryPoints.map((ep) => ep.graceTimeoutMs));
  }

  get openConnections(): number {
    return this.active.size + this.activeNative.size;
  }
}

/** A change of what the server listens on. */
export type ListenerEvent =
  | {
      kind: "listening";
      entryPoint: string;
      address: string;
      /** On Bun: which socket layer the entry point runs on (see socketLayer); absent elsewhere. */
      sockets?: "bun" | "node:net";
    }
  | { kind: "removed"; entryPoint: string };

export interface ProxyServerOptions {
  /**
   * Told instead of the log when an entry point starts listening or is removed. Workers report these
   * to the primary, which logs each once for all of them (src/cli/serve-primary.ts).
   */
  onListener?: (event: ListenerEvent) => void;
  /** Workers: every process binds the same ports (SO_REUSEPORT where the runtime's own sockets need it). */
  sharedPorts?: boolean;
}

/** A listener that could not bind: the process cannot run as configured (exit 2), not an internal error. */
export class ListenError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = "ListenError";
  }
}

function listenError(entryPoint: EntryPoint, err: NodeJS.ErrnoException): ListenError {
  const where = `entry point "${entryPoint.name}" cannot listen on ${entryPoint.address.value}`;
  const change = `Free the address or give the entry point another one (--entrypoint ${entryPoint.name}=ADDRESS).`;
  switch (err.code) {
    case "EADDRINUSE":
      return new ListenError(
        `${where}: the address is already in use`,
        `Another process (or another entry point) listens there. ${change}`,
      );
    case "EACCES":
      return new ListenError(
        `${where}: permission denied`,
        `Ports below 1024 need privileges (root or CAP_NET_BIND_SERVICE). ${change}`,
      );
    case "EADDRNOTAVAIL":
      return new ListenError(
        `${where}: the address does not belong to this machine`,
        `Use an address of one of this machine's interfaces, or ":PORT" for all of them. ${change}`,
      );
    default:
      return new ListenError(`${where}: ${err.code ?? err.message}`, change);
  }
}
