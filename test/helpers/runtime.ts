/**
 * Runs the CLI under the runtime chosen by `TLSROUTE_RUNTIME=node|bun|deno` (default node), exactly as a
 * user starts it: `node bin/tlsroute.mjs` (the bundle), `bun bin/tlsroute.mjs` or `deno run <flags>
 * bin/tlsroute.mjs` (the TypeScript source). Bun and Deno are the dev dependencies' binaries in
 * node_modules/.bin. Deno gets only the permissions the README documents for each command, so the
 * documentation is tested too.
 */
import path from "node:path";
import type { TlsRuntime } from "../../src/tls/runtime-support.ts";
import { BIN, ROOT, spawnCollect } from "./cli.ts";
import { type ServeProcess, startServe } from "./serve.ts";

export type Runtime = TlsRuntime;

export function runtimeUnderTest(): Runtime {
  const value = process.env.TLSROUTE_RUNTIME ?? "node";
  if (value !== "node" && value !== "bun" && value !== "deno") {
    throw new Error(`TLSROUTE_RUNTIME must be node, bun or deno, got "${value}"`);
  }
  return value;
}

/** Deno permission flags per command: the least privilege the README documents. */
export const DENO_FLAGS = {
  validate: ["--allow-read", "--allow-env"],
  explain: ["--allow-read", "--allow-env"],
  serve: ["--allow-net", "--allow-read", "--allow-env"],
  /** --allow-read for --ca, --cert, --key and -c files; never --allow-sys. */
  inspect: ["--allow-net", "--allow-env", "--allow-read"],
} as const;

export type CommandName = keyof typeof DENO_FLAGS;

/** No colour, and no "a new release of Deno is available" on stderr (nor its network lookup). */
const QUIET_ENV = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };

export interface Invocation {
  command: string;
  args: string[];
}

/**
 * The command line that runs `bin` (default: this checkout's launcher) with `args` under `runtime`.
 * `denoFlags` replaces the command's documented permissions (to test what happens without one).
 */
export function invocation(
  runtime: Runtime,
  args: string[],
  options: { denoFlags?: readonly string[]; bin?: string } = {},
): Invocation {
  const bin = options.bin ?? BIN;
  switch (runtime) {
    case "node":
      return { command: process.execPath, args: [bin, ...args] };
    case "bun":
      return { command: path.join(ROOT, "node_modules", ".bin", "bun"), args: [bin, ...args] };
    case "deno": {
      const name = args[0] as CommandName;
      const flags = options.denoFlags ?? DENO_FLAGS[name] ?? ["--allow-read", "--allow-env"];
      return {
        command: path.join(ROOT, "node_modules", ".bin", "deno"),
        args: ["run", "--quiet", ...flags, bin, ...args],
      };
    }
  }
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one CLI command to completion (asynchronously, so several can run at once). */
export function runOn(
  runtime: Runtime,
  args: string[],
  options: { denoFlags?: readonly string[]; bin?: string; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const { command, args: argv } = invocation(runtime, args, options);
  return spawnCollect(command, argv, { ...options, env: QUIET_ENV });
}

/** Runs commands with at most `limit` at a time, results in input order. */
export async function runAll<T>(jobs: (() => Promise<T>)[], limit = 4): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
  return results;
}

export type ServeOn = ServeProcess;

/** Starts `serve --log-format json` under `runtime` and waits for one `listening` line per entry point. */
export function serveOn(
  runtime: Runtime,
  args: string[],
  options: { entryPoints?: number; denoFlags?: readonly string[] } = {},
): Promise<ServeOn> {
  return startServe(args, {
    runtime,
    expectEntryPoints: options.entryPoints ?? 1,
    startTimeoutMs: 20_000,
    ...(options.denoFlags ? { denoFlags: options.denoFlags } : {}),
  });
}
