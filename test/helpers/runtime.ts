/**
 * Runs the CLI under the runtime chosen by `TLSROUTE_RUNTIME=node|bun|deno` (default node), exactly as a
 * user starts it: `node bin/tlsroute.mjs` (the bundle), `bun bin/tlsroute.mjs` or `deno run <flags>
 * bin/tlsroute.mjs` (the TypeScript source). Bun and Deno are the dev dependencies' binaries in
 * node_modules/.bin. Deno gets only the permissions the README documents for each command, so the
 * documentation is tested too.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import path from "node:path";
import type { TlsRuntime } from "../../src/tls/runtime-support.ts";
import { BIN, ROOT } from "./cli.ts";

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
  /** With --ca (no default trust store, so no --allow-sys). */
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
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...QUIET_ENV, FORCE_COLOR: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 30_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
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

export interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

export interface ServeOn {
  child: ChildProcessWithoutNullStreams;
  /** entry point name → bound port */
  ports: Map<string, number>;
  lines: LogLine[];
  /** stderr and non-JSON stdout */
  other: string[];
  waitFor(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `serve --log-format json` under `runtime` and waits for one `listening` line per entry point. */
export async function serveOn(
  runtime: Runtime,
  args: string[],
  options: { entryPoints?: number; denoFlags?: readonly string[] } = {},
): Promise<ServeOn> {
  const { command, args: argv } = invocation(runtime, ["serve", "--log-format", "json", ...args], options);
  const child = spawn(command, argv, { cwd: ROOT, env: { ...process.env, ...QUIET_ENV } });
  const lines: LogLine[] = [];
  const other: string[] = [];
  const waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let exit: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      exit = code;
      resolve(code);
    }),
  );
  let pending = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    pending += chunk;
    for (let nl = pending.indexOf("\n"); nl !== -1; nl = pending.indexOf("\n")) {
      const text = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        other.push(text);
        continue;
      }
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.match(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => other.push(chunk));
  const describe = () =>
    `${lines.map((l) => JSON.stringify(l)).join("\n")}\n${other.join("")}\n(exit ${String(exit)})`;
  const waitFor = (match: (l: LogLine) => boolean, timeoutMs = 10_000) =>
    new Promise<LogLine>((resolve, reject) => {
      const seen = lines.find(match);
      if (seen) return resolve(seen);
      const timer = setTimeout(() => reject(new Error(`no such log line; got:\n${describe()}`)), timeoutMs);
      waiters.push({
        match,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`serve exited before the log line:\n${describe()}`));
      });
    });
  const ports = new Map<string, number>();
  while (ports.size < (options.entryPoints ?? 1)) {
    const line = await waitFor((l) => l.msg === "listening" && !ports.has(String(l.entryPoint)), 20_000);
    const address = String(line.address);
    ports.set(String(line.entryPoint), Number(address.slice(address.lastIndexOf(":") + 1)));
  }
  return {
    child,
    ports,
    lines,
    other,
    waitFor,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (exit !== undefined) return exit;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
