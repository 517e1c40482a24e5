import { watch } from "node:fs";
import { dirname } from "node:path";
import { defineCommand } from "citty";
import { parseListenAddress } from "../config/normalize.ts";
import type { Diagnostic } from "../diagnostics.ts";
import { createLogger, type LogFormat, type Logger, type LogLevel } from "../proxy/log.ts";
import { ProxyServer } from "../proxy/server.ts";
import { generateDefaultCertificate } from "../tls/generated.ts";
import { openWorkspace, type Workspace } from "../workspace.ts";
import { displayPos, EXIT_FINDINGS, lastString, listFlag, UsageError } from "./common.ts";

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
    const log = createLogger({ level: level as LogLevel, format: format as LogFormat });

    const workspace = openWorkspace(paths);
    applyOverrides(workspace, overrides);
    if (!reportDiagnostics(workspace.diagnostics, log)) {
      log.error("the configuration has errors; not starting (run tlsroute validate for details)");
      return EXIT_FINDINGS;
    }
    const generated = await generateDefaultCertificate();
    const server = new ProxyServer(workspace, generated, log);
    await server.start();

    let reloading = Promise.resolve();
    const reload = (why: string) => {
      reloading = reloading.then(async () => {
        log.info("reloading configuration", { trigger: why });
        let next: Workspace;
        try {
          next = openWorkspace(paths);
          applyOverrides(next, overrides);
        } catch (err) {
          log.error("reload failed; keeping the running configuration", {
            error: err instanceof Error ? err.message : String(err),
          });
          return;
        }
        if (!reportDiagnostics(next.diagnostics, log)) {
          log.error("the new configuration has errors; keeping the running configuration");
          return;
        }
        try {
          await server.reload(next);
          log.info("configuration reloaded", { routers: next.model.routers.size });
        } catch (err) {
          log.error("reload failed; keeping the running configuration", {
            error: err instanceof Error ? err.message : String(err),
          });
        }
      });
    };
    process.on("SIGHUP", () => reload("SIGHUP"));
    if (args.watch) watchFiles(workspace.files, reload, log);

    const graceMs = Math.max(...[...workspace.model.entryPoints.values()].map((ep) => ep.graceTimeoutMs), 0);
    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) {
          log.warn("second signal: exiting now", { signal });
          process.exit(1);
        }
        stopping = true;
        log.info("shutting down", { signal, openConnections: server.openConnections, graceMs });
        server.shutdown(graceMs).then(({ forced }) => {
          log.info("stopped", { forcedConnections: forced });
          resolve();
        });
      };
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
    });
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

function watchFiles(files: string[], reload: (why: string) => void, log: Logger): void {
  let timer: NodeJS.Timeout | null = null;
  // Editors save by rename; watching the directories catches that, and a short pause merges bursts of events.
  const directories = new Set(files.map((f) => dirname(f)));
  for (const dir of directories) {
    try {
      watch(dir, { persistent: false }, (_event, name) => {
        if (name && !files.some((f) => f.endsWith(`/${name}`) || f.endsWith(`\\${name}`))) return;
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
