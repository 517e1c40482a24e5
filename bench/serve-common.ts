/**
 * What the three `serve` benchmarks share: the machine description, CPU pinning, reading a process's
 * CPU time and memory from /proc, starting `tlsroute serve` (optionally pinned and profiled) and the
 * load-side peers (bench/serve-peers.ts) as subprocesses, certificates, and CPU-profile summaries.
 *
 * Linux only: the figures come from /proc/<pid>/stat, /proc/<pid>/status and smaps_rollup.
 */
import { type ChildProcessWithoutNullStreams, execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Host, host, loadAverage1m, tryExec } from "./machine.ts";

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.dirname(BENCH_DIR);
export const BIN = path.join(ROOT, "bin", "tlsroute.mjs");
const PEERS = path.join(BENCH_DIR, "serve-peers.ts");

export const GiB = 2 ** 30;

/**
 * The runtime the proxy under test runs on: `TLSROUTE_RUNTIME=node|bun|deno` (default node). Bun and
 * Deno are the dev dependencies' binaries and run the TypeScript source; load generators and backends
 * stay on Node, so only the proxy changes. Node-only flags (profilers) are dropped on the others.
 */
export const PROXY_RUNTIME: "node" | "bun" | "deno" = (() => {
  const value = process.env.TLSROUTE_RUNTIME ?? "node";
  if (value !== "node" && value !== "bun" && value !== "deno")
    throw new Error(`TLSROUTE_RUNTIME must be node, bun or deno, got "${value}"`);
  return value;
})();

export type Runtime = "node" | "bun" | "deno";

/** The binary of a runtime: this Node, or the dev dependencies' Bun and Deno. */
export function runtimeBinary(runtime: Runtime): string {
  if (runtime === "node") return process.execPath;
  return path.join(ROOT, "node_modules", ".bin", runtime);
}

function proxyCommand(nodeFlags: string[], runtime: Runtime = PROXY_RUNTIME, bin = BIN): string[] {
  // Bun takes Node's profiling flags under the same names (--cpu-prof, --cpu-prof-dir, --cpu-prof-interval).
  if (runtime === "bun") return [runtimeBinary("bun"), ...nodeFlags, bin];
  if (runtime === "deno") return [runtimeBinary("deno"), "run", "-A", bin];
  return [process.execPath, ...nodeFlags, bin];
}

// ------------------------------------------------------------------------------------- machine

/** The machine's load when the benchmark started (the figures in `machine()` are taken at the end). */
const LOAD_AT_START = loadAverage1m();

/** Read at load time, before `pinSelf` narrows this process to one CPU (nproc counts usable CPUs). */
const NPROC = Number(tryExec("nproc", [])) || cpus().length;

/** Clock ticks per second for /proc/<pid>/stat (USER_HZ), 100 on every common Linux build. */
const CLK_TCK = Number(tryExec("getconf", ["CLK_TCK"])) || 100;

/**
 * Pinning as the method in peers.md §6 wants it: the proxy alone on CPU 1, everything else on CPU 0.
 * Only when `taskset` exists, there are at least two CPUs and the kernel lets us use CPU 1.
 */
export const PINNING: { pinned: boolean; why: string } = (() => {
  if (cpus().length < 2) return { pinned: false, why: "fewer than 2 CPUs" };
  if (!tryExec("sh", ["-c", "command -v taskset"])) return { pinned: false, why: "taskset not found" };
  const probe = spawnSync("taskset", ["-c", "1", "true"]);
  if (probe.status !== 0) return { pinned: false, why: "taskset -c 1 refused (cpuset)" };
  return { pinned: true, why: "proxy on CPU 1 (taskset -c 1), load generator and backend on CPU 0" };
})();

/** Pins this orchestrating process (all its threads) to CPU 0, so its log reading stays off the proxy's CPU. */
export function pinSelf(): void {
  if (PINNING.pinned) spawnSync("taskset", ["-a", "-p", "-c", "0", String(process.pid)], { stdio: "ignore" });
}

/** The command prefix that places a process on a CPU, or nothing when not pinning. */
function pinPrefix(cpu: number | null): string[] {
  return PINNING.pinned && cpu !== null ? ["taskset", "-c", String(cpu)] : [];
}

/** Soft and hard limit on open files, read from /proc/self/limits. */
export function fdLimits(): { soft: number; hard: number } {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  const m = line ? /(\d+|unlimited)\s+(\d+|unlimited)/.exec(line) : null;
  const num = (s: string | undefined) => (s === undefined || s === "unlimited" ? 1 << 30 : Number(s));
  return { soft: num(m?.[1]), hard: num(m?.[2]) };
}

/**
 * A command that runs with the soft open-files limit raised to `need` (bounded by the hard limit):
 * `sh -c 'ulimit -n N; exec "$@"'`. Unchanged when the limit is already high enough.
 */
function withFdLimit(argv: string[], need: number | undefined): string[] {
  if (!need) return argv;
  const { soft, hard } = fdLimits();
  if (soft >= need) return argv;
  const target = Math.min(need, hard);
  return ["sh", "-c", `ulimit -n ${target} && exec "$@"`, "sh", ...argv];
}

export interface Machine extends Host {
  pinned: boolean;
  pinning: string;
  fdLimit: { soft: number; hard: number };
  loadAverage1mAtStart: number;
  /** What was measured: the commit, whether src/ had uncommitted changes, and the bundle's hash. */
  build: { gitHead: string | null; srcDirty: boolean | null; distSha256: string | null };
}

export function machine(): Machine {
  return {
    ...host(),
    // Read at load time, before `pinSelf` narrows this process to one CPU.
    nproc: NPROC,
    pinned: PINNING.pinned,
    pinning: PINNING.why,
    fdLimit: fdLimits(),
    loadAverage1mAtStart: LOAD_AT_START,
    build: BUILD,
  };
}

/** Read at load time: the bundle can be rebuilt by other work while a benchmark runs. */
const BUILD: Machine["build"] = (() => {
  const git = (args: string[]) => {
    try {
      return execFileSync("git", args, {
        cwd: ROOT,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      }).trim();
    } catch {
      return null;
    }
  };
  const status = git(["status", "--porcelain", "--", "src"]);
  let distSha256: string | null = null;
  try {
    distSha256 = createHash("sha256")
      .update(readFileSync(path.join(ROOT, "dist", "cli.mjs")))
      .digest("hex")
      .slice(0, 16);
  } catch {
    // No build yet: requireBuild() says so.
  }
  return {
    gitHead: git(["rev-parse", "--short", "HEAD"]),
    srcDirty: status === null ? null : status !== "",
    distSha256,
  };
})();

// ---------------------------------------------------------------------------------------- /proc

/** utime and stime of a process (all its threads), in seconds. */
export function cpuTimes(pid: number): { user: number; system: number } {
  return statCpuTimes(readFileSync(`/proc/${pid}/stat`, "utf8"));
}

/** utime and stime, in seconds, from the text of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file. */
export function statCpuTimes(stat: string): { user: number; system: number } {
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After the name: state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
  return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK };
}

/** utime + stime of a process (all its threads), in seconds. */
export function cpuSeconds(pid: number): number {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

export interface Memory {
  /** Resident set size, KiB. */
  rssKb: number;
  /** Anonymous resident memory (heap, stacks, malloc), KiB. */
  rssAnonKb: number;
  /** Proportional set size (shared pages split between sharers), KiB. */
  pssKb: number;
}

export function memory(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (text: string, name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? 0);
  let pssKb = 0;
  try {
    pssKb = field(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"), "Pss");
  } catch {
    // smaps_rollup needs Linux 4.14; PSS stays 0 without it.
  }
  return { rssKb: field(status, "VmRSS"), rssAnonKb: field(status, "RssAnon"), pssKb };
}

/** Kernel TCP state from /proc/net/sockstat: sockets in use, TIME_WAIT, and socket buffer pages. */
export function sockstat(): { inuse: number; timeWait: number; memPages: number } {
  const text = readFileSync("/proc/net/sockstat", "utf8");
  const tcp = /^TCP: (.*)$/m.exec(text)?.[1] ?? "";
  const get = (k: string) => Number(new RegExp(`${k} (\\d+)`).exec(tcp)?.[1] ?? 0);
  return { inuse: get("inuse"), timeWait: get("tw"), memPages: get("mem") };
}

// ------------------------------------------------------------------------------------ numbers

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export const round = (value: number, digits = 0): number => {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Prints an aligned table on stdout. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(line(header));
  for (const row of rows) console.log(line(row));
}

export function writeResult(name: string, data: unknown): string {
  const dir = path.join(BENCH_DIR, "results");
  mkdirSync(dir, { recursive: true });
  // Figures for another runtime go beside Node's, never over them.
  const file = path.join(dir, `${name}${PROXY_RUNTIME === "node" ? "" : `-${PROXY_RUNTIME}`}.json`);
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  return path.relative(process.cwd(), file);
}

export function requireBuild(): void {
  if (!existsSync(path.join(ROOT, "dist", "cli.mjs"))) throw new Error("run `npm run build` first");
}

// ------------------------------------------------------------------------------------ children

/**
 * Every process a benchmark starts, so none outlives it: on exit (normal, error, Ctrl-C) the ones
 * still running get SIGKILL. Peers also exit by themselves when their stdin closes.
 */
const children = new Set<ChildProcessWithoutNullStreams>();
/**
 * Processes started in a process group of their own (proxies that fork workers: nginx, `serve
 * --workers`): on exit the whole group is killed, so no worker outlives the benchmark.
 */
const groups = new Set<number>();
process.on("exit", () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const pgid of groups) killGroup(pgid, "SIGKILL");
});
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

function track(child: ChildProcessWithoutNullStreams): void {
  children.add(child);
  child.once("exit", () => children.delete(child));
}

/** Signals every process of a group this benchmark started (by its id, never by name). */
export function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // The group is already gone.
  }
}

/**
 * Starts a process in a group of its own and remembers the group, so that it and anything it forks
 * is killed when the benchmark exits for any reason. The caller still stops it politely first.
 */
export function spawnGroup(
  argv: string[],
  options: { fds?: number; cpu?: number | null; env?: NodeJS.ProcessEnv },
) {
  const full = withFdLimit([...pinPrefix(options.cpu ?? null), ...argv], options.fds);
  const child = spawn(full[0]!, full.slice(1), {
    cwd: ROOT,
    env: options.env ?? { ...process.env, NO_COLOR: "1" },
    detached: true,
  });
  track(child);
  if (child.pid !== undefined) {
    const pgid = child.pid;
    groups.add(pgid);
    child.once("exit", () => {
      // Workers may outlive their parent for a moment: finish the group off.
      killGroup(pgid, "SIGKILL");
      groups.delete(pgid);
    });
  }
  return child;
}

/** A process and all its descendants (from /proc/<pid>/stat's parent field). */
export function processTree(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parentOf.set(Number(name), ppid);
    } catch {
      // Exited while we looked.
    }
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++)
    for (const [pid, ppid] of parentOf) if (ppid === tree[i]) tree.push(pid);
  return tree;
}

/** utime and stime summed over a process tree, in seconds; a process that exited counts 0. */
export function treeCpuTimes(pids: number[]): { user: number; system: number } {
  let user = 0;
  let system = 0;
  for (const pid of pids) {
    try {
      const t = cpuTimes(pid);
      user += t.user;
      system += t.system;
    } catch {
      // Gone.
    }
  }
  return { user, system };
}

/** RSS, anonymous RSS and PSS summed over a process tree (PSS splits shared pages fairly). */
export function treeMemory(pids: number[]): Memory {
  const sum: Memory = { rssKb: 0, rssAnonKb: 0, pssKb: 0 };
  for (const pid of pids) {
    try {
      const m = memory(pid);
      sum.rssKb += m.rssKb;
      sum.rssAnonKb += m.rssAnonKb;
      sum.pssKb += m.pssKb;
    } catch {
      // Gone.
    }
  }
  return sum;
}

interface LineSink {
  onLine(text: string): void;
}

/** Splits a stream of text into lines without keeping more than one partial line. */
function readLines(stream: NodeJS.ReadableStream, sink: LineSink): void {
  let pending = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    pending += chunk;
    let nl = pending.indexOf("\n");
    while (nl !== -1) {
      sink.onLine(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
      nl = pending.indexOf("\n");
    }
  });
}

type Json = Record<string, unknown>;

interface Waiter {
  match: (message: Json) => boolean;
  resolve: (message: Json) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** Messages (JSON lines) from a child, awaited by predicate; fails fast if the child exits first. */
class Mailbox {
  private readonly seen: Json[] = [];
  private readonly waiters: Waiter[] = [];
  private exit: string | null = null;

  constructor(private readonly describe: () => string) {}

  push(message: Json): void {
    const waiter = this.waiters.find((w) => w.match(message));
    if (waiter) {
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      clearTimeout(waiter.timer);
      waiter.resolve(message);
    } else this.seen.push(message);
  }

  exited(how: string): void {
    this.exit = how;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error(`${how} while waiting for a message\n${this.describe()}`));
    }
  }

  /** The first message (already received or future) that matches; consumed. */
  wait(match: (message: Json) => boolean, timeoutMs: number): Promise<Json> {
    const index = this.seen.findIndex(match);
    if (index !== -1) return Promise.resolve(this.seen.splice(index, 1)[0]!);
    if (this.exit) return Promise.reject(new Error(`${this.exit}\n${this.describe()}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for a message\n${this.describe()}`));
      }, timeoutMs);
      const waiter: Waiter = { match, resolve, reject, timer };
      this.waiters.push(waiter);
    });
  }
}

export interface Peer {
  child: ChildProcessWithoutNullStreams;
  pid: number;
  /** The next JSON message from the peer that matches (by default: any). */
  wait(match?: (message: Json) => boolean, timeoutMs?: number): Promise<Json>;
  /** Sends one line on the peer's stdin. */
  send(line: string): void;
  /** Resolves with the exit code once the peer has exited. */
  exited: Promise<number | null>;
  kill(): Promise<void>;
}

/**
 * Starts one role of bench/serve-peers.ts (sink, echo, stream, handshakes, idle, tls-echo) on CPU 0
 * (or `cpu`, for a baseline server that stands where the proxy would).
 * Roles talk JSON lines on stdout and read commands on stdin.
 */
export function startPeer(
  role: string,
  args: Json,
  options: { fds?: number; cpu?: number; nodeFlags?: string[]; runtime?: "node" | "bun" } = {},
): Peer {
  // Bun runs the TypeScript itself (the naive proxy's floor on Bun); every other peer runs on Node.
  const interpreter =
    options.runtime === "bun"
      ? [runtimeBinary("bun"), ...(options.nodeFlags ?? [])]
      : [process.execPath, ...(options.nodeFlags ?? []), "--import", "tsx"];
  const argv = withFdLimit(
    [...pinPrefix(options.cpu ?? 0), ...interpreter, PEERS, role, JSON.stringify(args)],
    options.fds,
  );
  const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env: { ...process.env, NO_COLOR: "1" } });
  track(child);
  const stderr: string[] = [];
  const mailbox = new Mailbox(() => `peer ${role} stderr:\n${stderr.join("").slice(-4000)}`);
  readLines(child.stdout, {
    onLine(text) {
      try {
        mailbox.push(JSON.parse(text) as Json);
      } catch {
        stderr.push(`${text}\n`);
      }
    },
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => stderr.push(chunk));
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code, signal) => {
      mailbox.exited(`peer ${role} exited (${signal ?? code})`);
      resolve(code);
    }),
  );
  return {
    child,
    pid: child.pid ?? -1,
    wait: (match = () => true, timeoutMs = 120_000) => mailbox.wait(match, timeoutMs),
    send: (line) => child.stdin.write(`${line}\n`),
    exited,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * The termination benchmarks' configuration: one entry point `bench`, the router `exact`
 * (HostSNI(`sni`)) and a catch-all `fallback` (clients without SNI, such as `openssl s_time`, with the
 * default certificate: the same key) to a plain echo server, TLS 1.2+ and no session tickets, so that
 * every connection is a full handshake. Written as DIR/tlsroute.json.
 */
export function terminationConfig(
  dir: string,
  cert: BenchCertificate,
  echoPort: number,
  sni: string,
): string {
  const files = { certFile: cert.cert, keyFile: cert.key };
  const config = {
    entryPoints: {
      bench: { address: "127.0.0.1:0", transport: { respondingTimeouts: { readTimeout: "10s" } } },
    },
    tcp: {
      routers: {
        exact: { entryPoints: ["bench"], rule: `HostSNI(\`${sni}\`)`, service: "echo", tls: {} },
        // s_time sends no SNI: the catch-all takes it, with the default certificate (the same key).
        fallback: { entryPoints: ["bench"], rule: "HostSNI(`*`)", service: "echo", tls: {} },
      },
      services: { echo: { loadBalancer: { servers: [{ address: `127.0.0.1:${echoPort}` }] } } },
    },
    tls: {
      certificates: [files],
      // No resumption: every connection is a full handshake (peers.md §6.1).
      options: { default: { minVersion: "VersionTLS12", disableSessionTickets: true } },
      stores: { default: { defaultCertificate: files } },
    },
  };
  const file = path.join(dir, "tlsroute.json");
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/** What the `handshakes` peer reports. */
export interface HandshakeLoad {
  count: number;
  errors: number;
  firstError: string | null;
  elapsedMs: number;
}

/**
 * The `handshakes` peer on CPU 0: `concurrency` loops of tls.connect (SNI, chain verified against
 * `ca`) → 1 byte → its echo → close, for `seconds`, from source addresses spread over `sources`.
 */
export async function handshakeLoad(options: {
  port: number;
  servername: string;
  ca: string;
  concurrency: number;
  seconds: number;
  sources: string[];
}): Promise<HandshakeLoad> {
  const client = startPeer("handshakes", { ...options });
  const message = await client.wait((m) => "result" in m, (options.seconds + 60) * 1000);
  await client.exited;
  return message.result as HandshakeLoad;
}

/**
 * The `stream` peer: a real ClientHello for `servername`, then `bytes` in `chunk`-sized writes; checks
 * that the sink answered for every byte sent, and returns how long it took.
 */
export async function streamRun(options: {
  port: number;
  bytes: number;
  chunk: number;
  servername: string;
  announce?: boolean;
}): Promise<{ elapsedMs: number; sent: number }> {
  const gen = startPeer("stream", { ...options });
  const message = await gen.wait((m) => "result" in m || "error" in m, 300_000);
  await gen.exited;
  if ("error" in message) throw new Error(`load generator failed: ${String(message.error)}`);
  const result = message.result as { elapsedMs: number; answer: string; sent: number };
  if (result.answer !== `done:${result.sent}`)
    throw new Error(`the sink answered "${result.answer}", expected "done:${result.sent}"`);
  return result;
}

// -------------------------------------------------------------------------------------- proxy

export interface ProxyProcess {
  pid: number;
  /** entry point name → bound port */
  ports: Map<string, number>;
  /** Access lines seen so far, by reason. */
  reasons: Record<string, number>;
  /** The last access lines (a few), for checks and error messages. */
  recentAccess: Json[];
  /** warn and error lines. */
  problems: Json[];
  /** Waits until `count` access lines in total have been logged. */
  waitForAccess(count: number, timeoutMs?: number): Promise<void>;
  accessCount(): number;
  stop(): Promise<number | null>;
}

/**
 * Starts `node bin/tlsroute.mjs serve -c CONFIG --entrypoint NAME=127.0.0.1:0 --log-format json`,
 * pinned to CPU 1 when pinning, with extra node flags (profilers) in front. Access lines are counted,
 * not kept: at thousands of connections per second the log is read cheaply so the reader does not
 * compete with the load.
 */
export async function startProxy(options: {
  config: string;
  entryPoints: string[];
  nodeFlags?: string[];
  fds?: number;
  /** Whether to pin to CPU 1 (default: yes when pinning is available). */
  pin?: boolean;
  /** The runtime (default: TLSROUTE_RUNTIME, else node). */
  runtime?: Runtime;
  /** Fixed ports per entry point (default: 0, the kernel picks). */
  ports?: Record<string, number>;
  /** More `serve` arguments, e.g. `--workers 2`. */
  args?: string[];
  /** Another tree's bin/tlsroute.mjs (to compare two builds); default: this one. */
  bin?: string;
}): Promise<ProxyProcess> {
  const child = spawnGroup(
    [
      ...proxyCommand(options.nodeFlags ?? [], options.runtime, options.bin),
      "serve",
      "-c",
      options.config,
      // One flag with a comma-separated list: given twice, `--entrypoint` keeps only the last one.
      "--entrypoint",
      options.entryPoints.map((name) => `${name}=127.0.0.1:${options.ports?.[name] ?? 0}`).join(","),
      "--log-format",
      "json",
      ...(options.args ?? []),
    ],
    {
      fds: options.fds,
      cpu: options.pin === false ? null : 1,
      env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    },
  );
  const other: string[] = [];
  const ports = new Map<string, number>();
  const reasons: Record<string, number> = {};
  const recentAccess: Json[] = [];
  const problems: Json[] = [];
  let access = 0;
  let accessWaiter: { count: number; resolve: () => void } | null = null;
  let listeningWaiter: (() => void) | null = null;
  readLines(child.stdout, {
    onLine(text) {
      let line: Json;
      try {
        line = JSON.parse(text) as Json;
      } catch {
        other.push(`${text}\n`);
        return;
      }
      if (line.msg === "connection") {
        access++;
        const reason = String(line.reason);
        reasons[reason] = (reasons[reason] ?? 0) + 1;
        recentAccess.push(line);
        if (recentAccess.length > 20) recentAccess.shift();
        if (accessWaiter && access >= accessWaiter.count) {
          accessWaiter.resolve();
          accessWaiter = null;
        }
        return;
      }
      if (line.msg === "listening") {
        const address = String(line.address);
        ports.set(String(line.entryPoint), Number(address.slice(address.lastIndexOf(":") + 1)));
        if (ports.size === options.entryPoints.length) listeningWaiter?.();
      }
      if (line.level === "warn" || line.level === "error") {
        if (problems.length < 50) problems.push(line);
      }
    },
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => other.push(chunk));
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      exitCode = code;
      resolve(code);
    }),
  );
  const describe = () =>
    `${problems.map((p) => JSON.stringify(p)).join("\n")}\n${other.join("").slice(-4000)}`;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`tlsroute serve did not listen in 20 s\n${describe()}`)),
      20_000,
    );
    listeningWaiter = () => {
      clearTimeout(timer);
      resolve();
    };
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`tlsroute serve exited with ${code} before listening\n${describe()}`));
    });
  });
  return {
    pid: child.pid ?? -1,
    ports,
    reasons,
    recentAccess,
    problems,
    accessCount: () => access,
    waitForAccess(count, timeoutMs = 30_000) {
      if (access >= count) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`expected ${count} access lines, got ${access}\n${describe()}`)),
          timeoutMs,
        );
        accessWaiter = {
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
      });
    },
    async stop() {
      if (exitCode !== undefined) return exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

// -------------------------------------------------------------------------------- certificates

export interface BenchCertificate {
  caCert: string;
  cert: string;
  key: string;
}

/** One ECDSA P-256 CA and a leaf for `names`, made with the openssl CLI in `dir` (peers.md §6.1). */
export function makeEcdsaCertificate(dir: string, names: string[], days = 30): BenchCertificate {
  const out: BenchCertificate = {
    caCert: path.join(dir, "ca.crt"),
    cert: path.join(dir, "leaf.crt"),
    key: path.join(dir, "leaf.key"),
  };
  const caKey = path.join(dir, "ca.key");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });
  openssl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    caKey,
    "-out",
    out.caCert,
    "-days",
    String(days),
    "-subj",
    "/CN=tlsroute bench CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  openssl([
    "req",
    "-x509",
    ...ec,
    "-CA",
    out.caCert,
    "-CAkey",
    caKey,
    "-keyout",
    out.key,
    "-out",
    out.cert,
    "-days",
    String(days),
    "-subj",
    `/CN=${names[0]}`,
    "-addext",
    "basicConstraints=critical,CA:FALSE",
    "-addext",
    "keyUsage=critical,digitalSignature",
    "-addext",
    "extendedKeyUsage=serverAuth",
    "-addext",
    `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}`,
  ]);
  return out;
}

// ---------------------------------------------------------------------------------- profiling

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileRow {
  fn: string;
  ms: number;
  percent: number;
}

export interface ProfileSummary {
  file: string;
  sampledMs: number;
  self: ProfileRow[];
  inclusive: ProfileRow[];
  perFile: ProfileRow[];
  /** Self time of tlsroute's own functions (the bundle dist/cli.mjs or src/), by function. */
  ours: ProfileRow[];
}

function shortUrl(url: string): string {
  if (!url.startsWith("file://")) return url;
  const rel = path.relative(ROOT, fileURLToPath(url));
  return rel.startsWith("node_modules") ? rel.replace(/^(node_modules\/(?:@[^/]+\/)?[^/]+).*$/, "$1") : rel;
}

/** Self and inclusive time per function (recursion counted once per sample), and self time per file. */
export function summariseCpuProfile(file: string): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n: ProfileNode): string => {
    const f = n.callFrame;
    const where = f.url ? `${shortUrl(f.url)}:${f.lineNumber + 1}` : "";
    return `${f.functionName || "(anonymous)"} ${where}`.trim();
  };
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const perFile = new Map<string, number>();
  const ours = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    const node = byId.get(id);
    // Idle time is not cost: leave it out of the totals.
    if (!node || node.callFrame.functionName === "(idle)") return;
    total += dt;
    const key = label(node);
    self.set(key, (self.get(key) ?? 0) + dt);
    const f = node.callFrame.url ? shortUrl(node.callFrame.url) : node.callFrame.functionName;
    perFile.set(f, (perFile.get(f) ?? 0) + dt);
    if (/^(dist|src)\//.test(f)) ours.set(key, (ours.get(key) ?? 0) + dt);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur);
      if (!n) break;
      const k = label(n);
      if (seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
    }
  });
  const top = (m: Map<string, number>, count: number): ProfileRow[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, count)
      .map(([fn, ms]) => ({ fn, ms: round(ms, 1), percent: round((ms / total) * 100, 1) }));
  return {
    file,
    sampledMs: Math.round(total),
    self: top(self, 30),
    inclusive: top(inclusive, 40),
    perFile: top(perFile, 15),
    ours: top(ours, 25),
  };
}

export function findProfile(dir: string, ext: string): string {
  const name = readdirSync(dir).find((f) => f.endsWith(ext));
  if (!name) throw new Error(`no ${ext} written in ${dir}`);
  return path.join(dir, name);
}

export function printProfile(summary: ProfileSummary): void {
  const show = (title: string, rows: ProfileRow[], count: number) => {
    console.log(title);
    for (const row of rows.slice(0, count))
      console.log(`  ${row.ms.toFixed(0).padStart(7)} ms ${row.percent.toFixed(1).padStart(5)}%  ${row.fn}`);
  };
  console.log(`\nCPU profile of the proxy (${summary.sampledMs} ms busy, idle excluded): ${summary.file}`);
  show("self time by file:", summary.perFile, 12);
  show("self time by function:", summary.self, 20);
  show("inclusive time by function:", summary.inclusive, 30);
  show("self time of tlsroute's own functions:", summary.ours, 15);
}

/** A positive number given as `--NAME VALUE` on the command line, else `fallback`. */
export function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const value = i === -1 ? Number.NaN : Number(process.argv[i + 1]);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}
