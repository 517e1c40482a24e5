import { statSync, watch } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { defineCommand } from "citty";
import { startResolvers } from "../acme/attach.ts";
import { parseListenAddress } from "../config/normalize.ts";
import { formatFromPath } from "../config/parse.ts";
import type { Diagnostic } from "../diagnostics.ts";
import { createLogger, type LogFormat, type Logger, type LogLevel } from "../proxy/log.ts";
import { ListenError, ProxyServer } from "../proxy/server.ts";
import { generateDefaultCertificate } from "../tls/generated.ts";
import { openWorkspace, type Workspace } from "../workspace.ts";
import { displayPos, EXIT_FINDINGS, EXIT_USAGE, lastString, listFlag, UsageError } from "./common.ts";
import { runPrimary } from "./serve-primary.ts";
import { runWorker } from "./serve-worker.ts";
import { isServeWorker, parseWorkerCount, type ServeContext } from "./serve-workers.ts";

export const serveCommand = defineCommand({
  meta: { name: "serve", description: "Run the router: listen on the entry points and route connections" },
  args: {
    config: { type: "string", alias: "c", description: "Configuration file or directory (repeatable)" },
    entrypoint: {
      type: "string",
      description: "Override an entry point address: NAME=ADDRESS (repeatable; port 0 allowed)",
    },
    "log-level": { type: "string", description: "debug, info, warn or error", default: "info" },
    "log-format": {
      type: "string",
      description: "pretty (for people) or json (one object per line)",
      default: "pretty",
    },
    watch: { type: "boolean", description: "Reload when a configuration file changes", default: false },
    workers: {
      type: "string",
      description: "Processes accepting on the entry points: a number, or auto for one per CPU (default 1)",
    },
    debug: { type: "boolean", description: "Print stack traces of internal errors", default: false },
  },
  async run({ args }) {
    const level = lastString(args["log-level"]) ?? "info";
    if (!["debug", "info", "warn", "error"].includes(level))
      throw new UsageError(`--log-level must be debug, info, warn or error, got "${level}"`);
    const format = lastString(args["log-format"]) ?? "pretty";
    if (format !== "pretty" && format !== "json")
      throw new UsageError(`--log-format must be pretty or json, got "${format}"`);
    const overrides = parseOverrides(listFlag(args.entrypoint));
    const paths = listFlag(args.config);
    const workers = parseWorkerCount(lastString(args.workers));
    const open = (): Workspace => {
      const opened = openWorkspace(paths);
      applyOverrides(opened, overrides);
      return opened;
    };
    const context: ServeContext = {
      level: level as LogLevel,
      format: format as LogFormat,
      open,
      reloadCandidate: (log) => reloadCandidate(open, log),
      watch: args.watch ? (files, reload, log) => watchFiles(paths, files, reload, log) : null,
    };
    // Under --workers, the primary started this process as one of its workers (serve-worker.ts).
    if (isServeWorker()) return runWorker(context);
    const log = createLogger({ level: level as LogLevel, format: format as LogFormat });

    const workspace = open();
    if (!reportDiagnostics(workspace.diagnostics, log)) {
      log.error("the configuration has errors; not starting (run tlsroute validate for details)");
      return EXIT_FINDINGS;
    }
    if (workers.count > 1) return runPrimary(context, workers, workspace);
    const generated = await generateDefaultCertificate();
    const server = new ProxyServer(workspace, generated, log);

    // Signal handlers go in before the first listener: a signal sent as soon as the "listening" line
    // appears must not meet the default disposition, which kills the process (SIGHUP included).
    let started = false;
    let stopping = false;
    let reloadWhenStarted: string | null = null;
    let reloading = Promise.resolve();
    /** The files of the running configuration, for --watch. */
    let watched: readonly string[] = workspace.files;
    const reload = (why: string) => {
      if (stopping) {
        log.warn("shutting down; reload ignored", { trigger: why });
        return;
      }
      if (!started) {
        reloadWhenStarted = why;
        return;
      }
      reloading = reloading.then(async () => {
        if (stopping) return;
        log.info("reloading configuration", { trigger: why });
        const next = reloadCandidate(open, log);
        if (!next) return;
        try {
          await server.reload(next);
          resolvers.update(next);
          watched = next.files;
          log.info("configuration reloaded", { routers: next.model.routers.size });
        } catch (err) {
          log.error("reload failed; keeping the running configuration", {
            error: err instanceof Error ? err.message : String(err),
          });
        }
      });
    };
    process.on("SIGHUP", () => reload("SIGHUP"));

    const stopped = new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        if (stopping) {
          log.warn("second signal: exiting now", { signal });
          process.exit(1);
        }
        stopping = true;
        // Refuse new connections before saying so: whoever reads the line may test it at once.
        server.stopAccepting();
        // The grace period of the configuration running now, which a reload may have changed.
        const graceMs = server.graceMs;
        log.info("shutting down", { signal, openConnections: server.openConnections, graceMs });
        server.shutdown(graceMs).then(({ forced }) => {
          log.info("stopped", { forcedConnections: forced });
          resolve();
        });
      };
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
    });

    try {
      await server.start();
    } catch (err) {
      // Entry points bound before the failure must not keep the process alive.
      await server.shutdown(0);
      if (!(err instanceof ListenError)) throw err;
      log.error(err.message, { hint: err.hint });
      return EXIT_USAGE;
    }
    // Resolvers start once the entry points listen: the CA validates their orders through them.
    const resolvers = startResolvers(workspace, server, log);
    started = true;
    if (reloadWhenStarted !== null && !stopping) reload(reloadWhenStarted);
    if (args.watch) watchFiles(paths, () => watched, reload, log);

    await stopped;
    resolvers.stop();
    return 0;
  },
});

interface Override {
  name: string;
  host: string;
  port: number;
  address: string;
}

function parseOverrides(values: string[]): Override[] {
  return values.map((value) => {
    const eq = value.indexOf("=");
    if (eq <= 0)
      throw new UsageError(
        `--entrypoint "${value}" must be NAME=ADDRESS`,
        "For example --entrypoint websecure=127.0.0.1:0",
      );
    const name = value.slice(0, eq);
    const address = value.slice(eq + 1);
    const parsed = parseListenAddress(address);
    if (!parsed.ok) throw new UsageError(`--entrypoint ${name}: ${parsed.message}`, parsed.hint);
    return { name, host: parsed.host, port: parsed.port, address };
  });
}

function applyOverrides(workspace: Workspace, overrides: Override[]): void {
  for (const o of overrides) {
    const ep = workspace.model.entryPoints.get(o.name);
    if (!ep) {
      throw new UsageError(
        `--entrypoint names "${o.name}", which the configuration does not declare`,
        `Entry points: ${[...workspace.model.entryPoints.keys()].join(", ") || "(none)"}.`,
      );
    }
    ep.host = o.host;
    ep.port = o.port;
    ep.address = { value: o.address, pos: ep.address.pos };
  }
}

/** The configuration read again for a reload, its findings logged; null (after saying why) when unusable. */
function reloadCandidate(open: () => Workspace, log: Logger): Workspace | null {
  let next: Workspace;
  try {
    next = open();
  } catch (err) {
    log.error("reload failed; keeping the running configuration", {
      error: err instanceof Error ? err.message : String(err),
    });
    return null;
  }
  if (!reportDiagnostics(next.diagnostics, log)) {
    log.error("the new configuration has errors; keeping the running configuration");
    return null;
  }
  return next;
}

/** Logs every finding; false when there are errors. */
function reportDiagnostics(diagnostics: Diagnostic[], log: Logger): boolean {
  let ok = true;
  for (const d of diagnostics) {
    const fields = { code: d.code, at: d.pos ? displayPos(d.pos) : undefined, hint: d.hint };
    if (d.severity === "error") {
      ok = false;
      log.error(d.message, fields);
    } else log.warn(d.message, fields);
  }
  return ok;
}

/**
 * Reloads when a configuration file changes. Directories are watched rather than files, because
 * editors save by writing a new file and renaming it over the old one; a short pause merges the
 * bursts of events one save makes. A file added to a directory named on the command line counts
 * too (a directory loads every configuration file in it).
 */
function watchFiles(
  paths: readonly string[],
  files: () => readonly string[],
  reload: (why: string) => void,
  log: Logger,
): void {
  let timer: NodeJS.Timeout | null = null;
  const configuredDirs = new Set(paths.map((p) => resolve(p)).filter(isDirectory));
  const directories = new Set([...files().map((f) => dirname(f)), ...configuredDirs]);
  for (const dir of directories) {
    try {
      watch(dir, { persistent: false }, (_event, name) => {
        if (name) {
          const changed = join(dir, name);
          const known = files().includes(changed);
          const added = configuredDirs.has(dir) && !name.startsWith(".") && formatFromPath(name) !== null;
          if (!known && !added) return;
        }
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => reload(`file change${name ? `: ${name}` : ""}`), 200);
      });
    } catch (err) {
      log.warn("cannot watch configuration directory", {
        dir,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
