import type { StoredCertificate } from "../acme/storage.ts";
import { toCatalogCertificate } from "../acme/stored.ts";
import { createLogger } from "../proxy/log.ts";
import { ListenError, type ListenerEvent, ProxyServer } from "../proxy/server.ts";
import {
  deliver,
  isBroadcastEnvelope,
  onPrimaryMessage,
  setProcessRole,
  WORKER_SLOT_ENV,
} from "../proxy/workers.ts";
import type { Workspace } from "../workspace.ts";
import { EXIT_FINDINGS, EXIT_USAGE } from "./common.ts";
import {
  errorText,
  type FromWorker,
  isFromPrimary,
  type SerializedCertificate,
  type ServeContext,
} from "./serve-workers.ts";
/** Runs one worker until the primary stops it (or goes away); resolves with the exit code. */
export async function runWorker(ctx: ServeContext): Promise<number> {
  const slot = Number(process.env[WORKER_SLOT_ENV]);
  setProcessRole({ kind: "worker", slot });
  const log = createLogger({ level: ctx.level, format: ctx.format, base: { worker: slot } });
  /** Resolves once the message is handed to the channel: the last one must be, before disconnecting. */
  const reply = (message: FromWorker): Promise<void> =>
    new Promise((resolve) => {
      if (!process.connected || !process.send) return resolve();
      process.send(message, undefined, {}, () => resolve());
    });
  // The primary decides about reloads and shutdown. A signal to the whole process group (Ctrl-C in a
  // terminal, a service manager) reaches the workers too: they wait for the primary's command.
  for (const signal of ["SIGHUP", "SIGINT", "SIGTERM"] as const) process.on(signal, () => {});

  let server: ProxyServer | null = null;
  let stopping: Promise<void> | null = null;
  /** What the server bound or removed since last taken: reported to the primary, which logs it. */
  let listenerEvents: ListenerEvent[] = [];
  const takeListenerEvents = (): ListenerEvent[] => {
    const taken = listenerEvents;
    listenerEvents = [];
    return taken;
  };
  let reloading = Promise.resolve();
  const finished = new Promise<void>((resolve) => {
    process.on("message", (message: unknown) => {
      if (isBroadcastEnvelope(message)) {
        deliver(message);
        return;
      }
      if (!isFromPrimary(message)) return;
      switch (message.tlsroute) {
        case "init":
          void start(message.generated);
          return;
        case "reload":
          reloading = reloading.then(() => reloadNow(message.id));
          return;
        case "sync":
          reply({ tlsroute: "synced", id: message.id });
          return;
        case "stop":
          // A second stop (the primary shutting down while this worker drains after a failed reload)
          // gets the same first answer again, so that whoever asks is never left waiting for it.
          if (stopping) reply(acceptingStopped());
          stopping ??= stop().then(resolve);
          return;
      }
    });
    // Only now may the primary send: a message sent before this listener existed would be lost.
    reply({ tlsroute: "hello" });
    // The primary went away without a word (killed): stop at once rather than run unsupervised.
    process.on("disconnect", () => {
      server?.stopAccepting();
      void server?.shutdown(0).then(() => resolve());
      if (!server) resolve();
    });
  });

  const start = async (generated: SerializedCertificate) => {
    let workspace: Workspace;
    try {
      workspace = ctx.open();
    } catch (err) {
      reply({ tlsroute: "start-failed", message: errorText(err), exitCode: EXIT_USAGE });
      return;
    }
    // The primary checked these files and logged the findings; they changed since if they fail now.
    if (workspace.diagnostics.some((d) => d.severity === "error")) {
      reply({
        tlsroute: "start-failed",
        message: "the configuration has errors; not starting (it changed while the workers started)",
        exitCode: EXIT_FINDINGS,
      });
      return;
    }
    server = new ProxyServer(workspace, { ...generated, notAfter: new Date(generated.notAfter) }, log, {
      onListener: (event) => listenerEvents.push(event),
      sharedPorts: true,
    });
    const running = server;
    // Before listening, so that nothing the primary sends once connections arrive can be missed.
    subscribeToResolvers(running);
    try {
      await running.start();
    } catch (err) {
      await running.shutdown(0);
      reply({
        tlsroute: "start-failed",
        message: errorText(err),
        ...(err instanceof ListenError ? { hint: err.hint } : {}),
        exitCode: err instanceof ListenError ? EXIT_USAGE : EXIT_FINDINGS,
      });
      return;
    }
    reply({ tlsroute: "ready", listeners: takeListenerEvents() });
  };

  const reloadNow = async (id: number) => {
    if (!server || stopping) {
      reply({ tlsroute: "reloaded", id, ok: false, error: "the worker is not running" });
      return;
    }
    takeListenerEvents();
    try {
      const next = ctx.open();
      const error = next.diagnostics.find((d) => d.severity === "error");
      if (error)
        throw new Error(`the configuration has errors (it changed during the reload): ${error.message}`);
      await server.reload(next);
      reply({ tlsroute: "reloaded", id, ok: true, listeners: takeListenerEvents() });
    } catch (err) {
      // A failed reload rebinds what it closed: nothing changed that the primary must announce.
      takeListenerEvents();
      reply({ tlsroute: "reloaded", id, ok: false, error: errorText(err) });
    }
  };

  const acceptingStopped = () =>
    ({
      tlsroute: "accepting-stopped",
      openConnections: server?.openConnections ?? 0,
      graceMs: server?.graceMs ?? 0,
    }) as const;

  const stop = async () => {
    if (!server) {
      reply(acceptingStopped());
      await reply({ tlsroute: "stopped", forcedConnections: 0 });
      return;
    }
    server.stopAccepting();
    reply(acceptingStopped());
    const { forced } = await server.shutdown(server.graceMs);
    await reply({ tlsroute: "stopped", forcedConnections: forced });
  };

  await finished;
  // The primary disconnects this worker once it has read the last reply: a worker that leaves first
  // can make the primary see its exit before that reply (seen on Deno), which then counts as lost.
  if (process.connected) {
    await new Promise<void>((resolve) => {
      process.once("disconnect", () => resolve());
      setTimeout(resolve, 2_000).unref();
    });
  }
  if (process.connected) process.disconnect();
  setTimeout(() => process.exit(0), 2_000).unref();
  return 0;
}

/** What the primary's resolvers produce, applied to this worker's server. */
function subscribeToResolvers(server: ProxyServer): void {
  onPrimaryMessage("acme.challenge.set", ({ name, certificate }) => server.challenges.set(name, certificate));
  onPrimaryMessage("acme.challenge.delete", ({ name, id }) => server.challenges.delete(name, id));
  onPrimaryMessage("acme.certificates", ({ certificates }) => {
    const parsed = certificates.flatMap((c) => {
      const stored: StoredCertificate = {
        certPem: c.certPem,
        keyPem: c.keyPem,
        domain: { main: "", sans: [] },
        store: "default",
      };
      const entry = toCatalogCertificate(stored, c.resolver, c.source);
      return entry.ok ? [entry.cert] : [];
    });
    server.setResolverCertificates(parsed);
  });
}
