/**
 * The tlsroute command line. Subcommands are thin: they turn flags into calls of the core and
 * render the results. Errors are messages with hints and an exit code; a stack trace only with --debug.
 */
import { type ArgsDef, type CommandDef, defineCommand, parseArgs, renderUsage, runCommand } from "citty";
import { DEFAULT_CONFIG_NAMES, LoadFailure } from "../config/load.ts";
import { currentRuntime } from "../tls/runtime-support.ts";
import { displayPath, EXIT_USAGE, lastString, listFlag, paint, UsageError } from "./common.ts";
import {
  type CommandName,
  denoCommandLine,
  flagInDenoMessage,
  isCommandName,
  isDenoPermissionError,
  unreadablePath,
} from "./deno-permissions.ts";
import { explainCommand } from "./explain.ts";
import { inspectCommand } from "./inspect.ts";
import { serveCommand } from "./serve.ts";
import { validateCommand } from "./validate.ts";

export const VERSION = "0.1.0";

const subCommands: Record<string, CommandDef<ArgsDef>> = {
  validate: validateCommand as CommandDef<ArgsDef>,
  explain: explainCommand as CommandDef<ArgsDef>,
  inspect: inspectCommand as CommandDef<ArgsDef>,
  serve: serveCommand as CommandDef<ArgsDef>,
};

const main = defineCommand({
  meta: {
    name: "tlsroute",
    version: VERSION,
    description: "A TCP/TLS router that speaks Traefik's TCP configuration",
  },
  subCommands,
});

/** Flags every command accepts besides its own. */
const GLOBAL_FLAGS = new Set(["--debug", "--help", "-h"]);

async function knownFlags(cmd: CommandDef<ArgsDef>): Promise<Set<string>> {
  const args = (typeof cmd.args === "function" ? await cmd.args() : await cmd.args) ?? {};
  const out = new Set(GLOBAL_FLAGS);
  for (const [name, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    out.add(`--${name}`);
    if (def.type === "boolean") out.add(`--no-${name}`);
    const aliases = "alias" in def && def.alias ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : [];
    for (const alias of aliases) out.add(alias.length === 1 ? `-${alias}` : `--${alias}`);
  }
  return out;
}

/** citty ignores unknown flags; a typo in a CI script must fail instead of being silently dropped. */
async function rejectUnknownFlags(cmd: CommandDef<ArgsDef>, argv: string[]): Promise<void> {
  const known = await knownFlags(cmd);
  for (const arg of argv) {
    if (arg === "--") break;
    if (!arg.startsWith("-") || arg === "-") continue;
    const flag = arg.split("=")[0]!;
    if (!known.has(flag)) {
      throw new UsageError(
        `unknown flag ${flag}`,
        `Run "tlsroute ${cmd === main ? "" : "<command> "}--help" to see the flags.`,
      );
    }
  }
}

/**
 * citty keeps only the last value of a flag given twice, so `-c a.yml -c b.yml` would silently drop
 * a.yml. The flags whose description says "repeatable" are merged here into one comma-separated value,
 * which the commands split again (listFlag, csvFlag).
 */
async function mergeRepeatedFlags(cmd: CommandDef<ArgsDef>, argv: string[]): Promise<string[]> {
  const defs = (typeof cmd.args === "function" ? await cmd.args() : await cmd.args) ?? {};
  const spellings = new Map<string, string>();
  for (const [name, def] of Object.entries(defs)) {
    if (def.type !== "string" || !/repeatable/.test(def.description ?? "")) continue;
    spellings.set(`--${name}`, name);
    const aliases = Array.isArray(def.alias) ? def.alias : def.alias ? [def.alias] : [];
    for (const alias of aliases) spellings.set(alias.length === 1 ? `-${alias}` : `--${alias}`, name);
  }
  if (spellings.size === 0) return argv;
  const values = new Map<string, string[]>();
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    const eq = arg.indexOf("=");
    const name = spellings.get(eq > 0 ? arg.slice(0, eq) : arg);
    if (!name) {
      rest.push(arg);
      continue;
    }
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else if (i + 1 < argv.length) value = argv[++i];
    if (value === undefined) {
      rest.push(arg);
      continue;
    }
    values.set(name, [...(values.get(name) ?? []), value]);
  }
  const merged = [...values].map(([name, list]) => `--${name}=${list.join(",")}`);
  return [...merged, ...rest];
}

export async function run(argv: string[]): Promise<number> {
  const debug = argv.includes("--debug");
  const command = argv[0] !== undefined && isCommandName(argv[0]) ? argv[0] : undefined;
  try {
    const [first, ...rest] = argv;
    if (first === undefined || first === "--help" || first === "-h" || first === "help") {
      process.stdout.write(`${await renderUsage(main)}\n`);
      return first === undefined ? EXIT_USAGE : 0;
    }
    if (first === "--version" || first === "-v") {
      process.stdout.write(`${VERSION}\n`);
      return 0;
    }
    const cmd = subCommands[first];
    if (!cmd) {
      throw new UsageError(
        `unknown command "${first}"`,
        `Commands: ${Object.keys(subCommands).join(", ")}. Run "tlsroute --help".`,
      );
    }
    if (rest.includes("--help") || rest.includes("-h")) {
      process.stdout.write(`${await renderUsage(cmd, main)}\n`);
      return 0;
    }
    await rejectUnknownFlags(cmd, rest);
    const args = await mergeRepeatedFlags(cmd, rest);
    if (command && currentRuntime() === "deno") await denoPreflight(command, cmd, args);
    const { result } = await runCommand(cmd, { rawArgs: args });
    return typeof result === "number" ? result : 0;
  } catch (err) {
    return reportFailure(err, debug, command);
  }
}

/** The files a command reads first (configuration, --ca, --cert, --key), as its flags name them. */
async function pathsRead(command: CommandName, cmd: CommandDef<ArgsDef>, argv: string[]) {
  const defs = (typeof cmd.args === "function" ? await cmd.args() : await cmd.args) ?? {};
  const args = parseArgs(argv, defs);
  const config = listFlag(args.config);
  switch (command) {
    case "validate":
      return { paths: args._.filter((p): p is string => typeof p === "string"), defaults: true };
    case "explain":
      return { paths: config, defaults: lastString(args.rule) === undefined };
    case "serve":
      return { paths: config, defaults: true };
    case "inspect": {
      const files = [args.ca, args.cert, args.key].map(lastString).filter((f) => f !== undefined);
      return { paths: [...config, ...files], defaults: false };
    }
  }
}

/**
 * On Deno, refuse early and say which flag is missing rather than let a refused read look like a
 * missing file, and report a refused listen() (thrown out of the event loop there) the same way.
 */
async function denoPreflight(command: CommandName, cmd: CommandDef<ArgsDef>, argv: string[]): Promise<void> {
  const { paths, defaults } = await pathsRead(command, cmd, argv);
  if (paths.length > 0 || defaults) {
    const denied = unreadablePath(paths, process.cwd());
    if (denied !== undefined) {
      throw new UsageError(
        denied.defaults
          ? `Deno does not allow tlsroute to look for ${DEFAULT_CONFIG_NAMES.join(", ")} in ${denied.path}`
          : `Deno does not allow tlsroute to read ${displayPath(denied.path)}`,
        `Add --allow-read (or --allow-read=DIR for the directories involved): ${denoCommandLine(command)} …`,
      );
    }
  }
  if (command === "serve") {
    // Installing the handler takes over every uncaught exception: others end the process as before.
    process.on("uncaughtException", (err: Error) => {
      if (isDenoPermissionError(err)) process.exitCode = reportFailure(err, false, command);
      else {
        process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
        process.exitCode = 1;
      }
      process.exit();
    });
  }
}

/** Everything about a failure goes to stderr: stdout carries only results (and JSON stays parseable). */
function printProblem(message: string, hint?: string): void {
  process.stderr.write(`${paint.error("error:")} ${message}\n`);
  if (hint) process.stderr.write(`  ${paint.accent("hint:")} ${hint}\n`);
}

function reportFailure(err: unknown, debug: boolean, command?: CommandName): number {
  if (err instanceof UsageError || err instanceof LoadFailure) {
    printProblem(err.message, err.hint);
    return EXIT_USAGE;
  }
  if (isDenoPermissionError(err)) {
    const flag = flagInDenoMessage(err.message) ?? "the permission";
    printProblem(
      `Deno refused: ${err.message}`,
      `Add ${flag}${command ? `; ${command} needs at least: ${denoCommandLine(command)} …` : ""} (README: Runtimes).`,
    );
    return EXIT_USAGE;
  }
  // citty's own argument errors (missing required positional, bad enum value).
  if (err instanceof Error && "code" in err && typeof err.code === "string" && err.code.startsWith("E_")) {
    printProblem(err.message, "Run the command with --help to see its flags.");
    return EXIT_USAGE;
  }
  const message = err instanceof Error ? err.message : String(err);
  printProblem(
    `internal error: ${message}`,
    debug ? undefined : "Run again with --debug for the stack trace, and report it as a bug.",
  );
  if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  return EXIT_USAGE;
}
