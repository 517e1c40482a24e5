/**
 * Runs the built CLI exactly as a user does: `node bin/tlsroute.mjs ...` as a subprocess.
 * `npm test` builds dist/ first; run `npm run build` before running a CLI test file on its own.
 */
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const BIN = fileURLToPath(new URL("../../bin/tlsroute.mjs", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const result = spawnSync(process.execPath, [BIN, ...args], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0", ...options.env },
    encoding: "utf8",
    timeout: 30_000,
  });
  if (result.error) throw result.error;
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** Runs the CLI and parses stdout as the one JSON document the contract promises. */
export function runCliJson<T = unknown>(args: string[], options?: { cwd?: string }): CliResult & { json: T } {
  return parseJsonOutput<T>(runCli(args, options));
}

/**
 * Runs a command to completion without blocking the event loop (for tests whose servers live in this
 * process), collecting its output; rejects when it outlives `timeoutMs`.
 */
export function spawnCollect(
  command: string,
  argv: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      stdout += s;
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      stderr += s;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${argv.join(" ")} did not finish:\n${stdout}\n${stderr}`));
    }, options.timeoutMs ?? 30_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** The built CLI as a subprocess, asynchronously. */
export function runCliAsync(args: string[]): Promise<CliResult> {
  return spawnCollect(process.execPath, [BIN, ...args]);
}

/** Parses stdout as the one JSON document the contract promises. */
export function parseJsonOutput<T>(result: CliResult): CliResult & { json: T } {
  try {
    return { ...result, json: JSON.parse(result.stdout) as T };
  } catch {
    throw new Error(
      `stdout is not one JSON document (exit ${result.code}):\n${result.stdout}\nstderr:\n${result.stderr}`,
    );
  }
}
