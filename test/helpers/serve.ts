/**
 * Starts `tlsroute serve` as a subprocess, exactly as a user runs it, with JSON logs, and reads the
 * bound addresses from its `listening` lines. Every entry point should be given port 0 through
 * `--entrypoint NAME=127.0.0.1:0` (or in the config) so tests never collide.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import net from "node:net";
import { ROOT } from "./cli.ts";
import { invocation, type Runtime, runtimeUnderTest } from "./runtime.ts";

export interface LogLine {
  time: string;
  level: string;
  msg: string;
  [key: string]: unknown;
}

export interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  /** entry point name → port actually bound */
  ports: Map<string, number>;
  /** Every JSON log line so far. */
  lines: LogLine[];
  /** Non-JSON output (stderr, or stdout lines that are not JSON). */
  other: string[];
  /** Resolves with the first log line (already seen or future) that matches. */
  waitFor(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Access lines (msg "connection"). */
  accessLines(): LogLine[];
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

export async function startServe(
  args: string[],
  options: {
    cwd?: string;
    env?: NodeJS.ProcessEnv;
    startTimeoutMs?: number;
    expectEntryPoints?: number;
    /** The runtime serve runs on (default: TLSROUTE_RUNTIME, else node); for Deno, permissions instead of the documented ones. */
    runtime?: Runtime;
    denoFlags?: readonly string[];
  } = {},
): Promise<ServeProcess> {
  const command = invocation(
    options.runtime ?? runtimeUnderTest(),
    ["serve", "--log-format", "json", ...args],
    options,
  );
  const child = spawn(command.command, command.args, {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...options.env },
  });
  const lines: LogLine[] = [];
  const other: string[] = [];
  const waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      exitCode = code;
      resolve(code);
    }),
  );
  const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
  let pending = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    pending += chunk;
    let nl = pending.indexOf("\n");
    while (nl !== -1) {
      const text = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      nl = pending.indexOf("\n");
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
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => other.push(chunk));

  const waitFor = (match: (l: LogLine) => boolean, timeoutMs = 10_000) =>
    new Promise<LogLine>((resolve, reject) => {
      const seen = lines.find(match);
      if (seen) return resolve(seen);
      const timer = setTimeout(() => {
        reject(
          new Error(
            `timed out waiting for a log line; got:\n${lines.map((l) => JSON.stringify(l)).join("\n")}\n${other.join("")}`,
          ),
        );
      }, timeoutMs);
      waiters.push({
        match,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      // Once its output is closed no line can come: fail now instead of at the timeout.
      void closed.then(() => {
        clearTimeout(timer);
        reject(
          new Error(
            `serve exited (${String(exitCode)}) before the log line; got:\n${lines.map((l) => JSON.stringify(l)).join("\n")}\n${other.join("")}`,
          ),
        );
      });
    });

  const ports = new Map<string, number>();
  const expected = options.expectEntryPoints ?? 1;
  const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
  while (ports.size < expected) {
    if (exitCode !== undefined) {
      throw new Error(
        `tlsroute serve exited with ${exitCode} before listening:\n${other.join("")}\n${lines.map((l) => JSON.stringify(l)).join("\n")}`,
      );
    }
    const line = await waitFor(
      (l) => l.msg === "listening" && !ports.has(String(l.entryPoint)),
      Math.max(1, deadline - Date.now()),
    );
    const address = String(line.address);
    ports.set(String(line.entryPoint), Number(address.slice(address.lastIndexOf(":") + 1)));
  }

  return {
    child,
    ports,
    lines,
    other,
    waitFor,
    accessLines: () => lines.filter((l) => l.msg === "connection"),
    async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000) {
      if (exitCode !== undefined) return exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Resolves when connecting to the port on 127.0.0.1 is refused. */
export function expectRefused(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      reject(new Error(`port ${port} still accepts connections`));
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED") resolve();
      else reject(error);
    });
  });
}

/**
 * A plain TCP exchange: sends `first` (if any; `endAfter` half-closes after it) and reads until the
 * proxy closes, or until `until` matches. The client ends its side when the proxy ends its own.
 */
export function plainExchange(
  port: number,
  first: string | Uint8Array | null,
  options: { until?: RegExp; endAfter?: boolean } = {},
) {
  return new Promise<{ text: string; closed: boolean }>((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true }, () => {
      if (first !== null && options.endAfter) socket.end(first);
      else if (first !== null) socket.write(first);
    });
    let text = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      text += chunk;
      if (options.until?.test(text)) {
        socket.destroy();
        resolve({ text, closed: false });
      }
    });
    socket.on("end", () => socket.end());
    socket.on("close", () => resolve({ text, closed: true }));
    socket.on("error", reject);
  });
}
