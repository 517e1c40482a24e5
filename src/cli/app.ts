/**
 * The tlsroute command line. Subcommands are thin: they turn flags into calls of the core and
 * render the results. Errors are messages with hints and an exit code; a stack trace only with --debug.
 */
import { type ArgsDef, type CommandDef, defineCommand, renderUsage, runCommand } from "citty";
import { LoadFailure } from "../config/load.ts";
import { EXIT_USAGE, paint, UsageError } from "./common.ts";
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

export async function run(argv: string[]): Promise<number> {
  const debug = argv.includes("--debug");
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
    const { result } = await runCommand(cmd, { rawArgs: rest });
    return typeof result === "number" ? result : 0;
  } catch (err) {
    return reportFailure(err, debug);
  }
}

/** Everything about a failure goes to stderr: stdout carries only results (and JSON stays parseable). */
function printProblem(message: string, hint?: string): void {
  process.stderr.write(`${paint.error("error:")} ${message}\n`);
  if (hint) process.stderr.write(`  ${paint.accent("hint:")} ${hint}\n`);
}

function reportFailure(err: unknown, debug: boolean): number {
  if (err instanceof UsageError || err instanceof LoadFailure) {
    printProblem(err.message, err.hint);
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
