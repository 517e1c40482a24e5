/**
 * tlsroute side by side with HAProxy, nginx's stream module and sniproxy (issue 7; method after
 * reference/peers.md §5–§6). One command, a few minutes, one table:
 *
 *   1. passthrough bulk transfer by SNI: MB/s and the proxy's CPU seconds per GiB;
 *   2. TLS termination (ECDSA P-256, TLS 1.3, no resumption, a new connection each time):
 *      connections/s and the proxy's CPU per 1,000 handshakes (sniproxy cannot terminate);
 *   3. latency a new connection adds, p50 and p99, against a direct connection;
 *   4. memory per idle connection, passthrough and terminated (fresh process, PSS and RSS delta);
 *   5. configuration check time for 10,000 routers (`haproxy -c`, `nginx -t`, `tlsroute validate`);
 *   6. a ClientHello split across two TLS records: which proxies still route it.
 *
 * Every proxy is started by this script from its own binary with a configuration in a temp
 * directory (bench/peers-configs.ts), pinned to CPU 1 (`taskset -c 1`) with the load generators and
 * backends on CPU 0, and stopped at the end, also on Ctrl-C or failure (each proxy runs in a process
 * group of its own). The system services are never started: a missing package is installed with
 * apt-get under a policy-rc.d that forbids starting services. tlsroute runs on Node (the bundle),
 * Bun and Deno (the TypeScript source), and, when `serve --help` offers `--workers`, on Node with 2
 * workers (then on both CPUs, sharing CPU 0 with the load: see the notes it prints).
 *
 * Three reference rows, which route nothing (`--no-floor` leaves them out): the naive Node proxy
 * (`node-pipe`: accept, dial, pipe()), the same on Bun reading the first bytes before it dials or
 * hands the socket to its tls.Server (`bun-peek`, what a router on node:net/node:tls must do at
 * least), and Bun's own socket API (`bun-native`: Bun.listen/Bun.connect, handshakes and memory
 * only). They show how much of tlsroute's cost is the runtime's socket layer.
 *
 * CPU is utime+stime of the proxy's process tree from /proc/<pid>/stat around each run. Runs of all
 * proxies are interleaved round by round so that background load on this shared machine spreads
 * over all of them; medians and min–max over rounds are reported, and ratios to HAProxy are the
 * headline figures.
 *
 * Run:  npm run build && npm run bench:peers [-- --quick] [-- --profile] [-- --rounds N]
 *       [-- --memory-runs N] [-- --only haproxy,tlsroute-node,...]
 * Writes bench/results/peers-<date>.json and bench/results/peers-<date>.md (the tables as Markdown);
 * `--quick` and `--only` runs add `-quick` / `-partial` to the name.
 * `--profile` adds a passthrough run and a termination run of the Node proxy under `node --cpu-prof`
 * and summarises the top frames.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import {
  type Backends,
  type CertFiles,
  CHECK_ROUTERS,
  haproxyConfig,
  type Listen,
  nginxConfig,
  SNI_SINK,
  SNI_TLS_ECHO,
  SNI_UNKNOWN,
  sniproxyConfig,
  tlsrouteConfig,
  writeCheckConfigs,
} from "./peers-configs.ts";
import {
  BENCH_DIR,
  BIN,
  fdLimits,
  findProfile,
  flag,
  GiB,
  handshakeLoad,
  killGroup,
  type Memory,
  machine,
  makeEcdsaCertificate,
  median,
  type Peer,
  PINNING,
  type ProfileSummary,
  pinSelf,
  printProfile,
  processTree,
  ROOT,
  type Runtime,
  requireBuild,
  round,
  runtimeBinary,
  sleep,
  spawnGroup,
  startPeer,
  startProxy,
  streamRun,
  summariseCpuProfile,
  treeCpuTimes,
  treeMemory,
} from "./serve-common.ts";

// ------------------------------------------------------------------------------------ settings

const QUICK = process.argv.includes("--quick");
const PROFILE = process.argv.includes("--profile");
const ROUNDS = flag("rounds", 3);
const BULK_BYTES = QUICK ? 256 * 2 ** 20 : GiB;
const CHUNK = 256 * 1024;
const HANDSHAKE_SECONDS = QUICK ? 2 : 5;
const HANDSHAKE_CONCURRENCY = 8;
const LATENCY_COUNT = QUICK ? 100 : 300;
const MEMORY_RUNS = flag("memory-runs", 1);
const WANTED_IDLE = flag("connections", QUICK ? 1000 : 5000);
// Two descriptors per connection in the proxy, and room for its own.
const IDLE_CONNECTIONS = Math.min(WANTED_IDLE, Math.floor((fdLimits().hard - 512) / 2));
const PROXY_FDS = Math.min(fdLimits().hard, 2 * IDLE_CONNECTIONS + 1024);
const CHECK_RUNS = QUICK ? 3 : 5;
const SOURCES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 1}`);
const SPLIT_AT = 40;

const ONLY = (() => {
  const i = process.argv.indexOf("--only");
  return i === -1 ? null : new Set((process.argv[i + 1] ?? "").split(","));
})();

// ------------------------------------------------------------------------------ installation

const has = (command: string) =>
  spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
const NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so";

/**
 * Installs the peers that are missing with apt-get (Debian 12 has all of them). A policy-rc.d that
 * forbids starting services is put in place for the install when none exists, so that no system
 * nginx or haproxy starts on port 80: the benchmark runs the binaries itself.
 */
function ensurePackages(): void {
  const missing: string[] = [];
  if (!has("haproxy")) missing.push("haproxy");
  if (!has("nginx")) missing.push("nginx");
  if (!existsSync(NGINX_STREAM)) missing.push("libnginx-mod-stream");
  if (!has("sniproxy")) missing.push("sniproxy");
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0)
    throw new Error(
      `missing: ${missing.join(", ")}; install them (apt-get install ${missing.join(" ")}) or run as root`,
    );
  console.error(`installing ${missing.join(", ")} with apt-get (services are not started)…`);
  const policy = "/usr/sbin/policy-rc.d";
  const ownPolicy = !existsSync(policy);
  if (ownPolicy)
    writeFileSync(policy, "#!/bin/sh\n# written by tlsroute bench/peers.ts for one install\nexit 101\n", {
      mode: 0o755,
    });
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
    execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], {
      stdio: "inherit",
      env,
    });
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
  }
}

// --------------------------------------------------------------------------------- the proxies

interface RunningProxy {
  pid: number;
  listen: Listen;
  /** The proxy's processes (nginx's master and worker, tlsroute's workers) for CPU and memory. */
  pids(): number[];
  stop(): Promise<void>;
  /** What it wrote on stderr (and stdout when that is not an access log), for error messages. */
  describe(): string;
}

interface ProxySpec {
  id: string;
  label: string;
  terminates: boolean;
  /** Pinned to CPU 1 (false: the 2-worker run, which needs both CPUs). */
  pinned: boolean;
  /** A reference floor, not a router: measured in workloads 1, 2 and 4 only, no routing checks. */
  floor?: boolean;
  /** The workloads it can run, when not all of them. */
  workloads?: readonly number[];
  start(work: Work, fds?: number, nodeFlags?: string[]): Promise<RunningProxy>;
}

interface Work {
  dir: string;
  cert: CertFiles;
  caFile: string;
  backends: Backends;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (!address || typeof address !== "object") throw new Error("no port");
  return address.port;
}

async function freeListen(): Promise<Listen> {
  return { pass: await freePort(), term: await freePort() };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** HAProxy, nginx or sniproxy from its Debian binary, in a process group of its own on CPU 1. */
async function startNative(name: string, argv: string[], listen: Listen, ports: number[], fds?: number) {
  const child = spawnGroup(argv, { cpu: 1, fds });
  const output: string[] = [];
  let kept = 0;
  const keep = (chunk: string) => {
    // The access log (HAProxy's stdout) is read and dropped; keep the start of anything else.
    if (kept < 20_000) {
      output.push(chunk);
      kept += chunk.length;
    }
  };
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    if (!chunk.includes("sni=") && !chunk.includes("fe_")) keep(chunk);
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", keep);
  let exited: number | null | undefined;
  const done = new Promise<void>((resolve) =>
    child.once("exit", (code) => {
      exited = code;
      resolve();
    }),
  );
  const describe = () => `${name}: ${output.join("").slice(-3000)}`;
  const deadline = Date.now() + 15_000;
  for (const port of ports) {
    while (!(await canConnect(port))) {
      if (exited !== undefined)
        throw new Error(`${name} exited with ${exited} before listening\n${describe()}`);
      if (Date.now() > deadline) throw new Error(`${name} did not listen on ${port} in 15 s\n${describe()}`);
      await sleep(50);
    }
  }
  const pid = child.pid ?? -1;
  return {
    pid,
    listen,
    pids: () => processTree(pid),
    describe,
    async stop() {
      if (exited !== undefined) return;
      // nginx and HAProxy: SIGTERM is a fast shutdown of the whole group (workers too).
      child.kill("SIGTERM");
      const timer = setTimeout(() => killGroup(pid, "SIGKILL"), 5000);
      await done;
      clearTimeout(timer);
    },
  } satisfies RunningProxy;
}

const haproxy: ProxySpec = {
  id: "haproxy",
  label: "HAProxy",
  terminates: true,
  pinned: true,
  async start(work, fds) {
    const listen = await freeListen();
    const file = path.join(work.dir, `haproxy-${listen.pass}.cfg`);
    writeFileSync(file, haproxyConfig(listen, work.backends, work.cert));
    // -db: foreground, no daemon (one process, nbthread 1).
    return startNative("haproxy", ["haproxy", "-db", "-f", file], listen, [listen.pass, listen.term], fds);
  },
};

const nginx: ProxySpec = {
  id: "nginx",
  label: "nginx stream",
  terminates: true,
  pinned: true,
  async start(work, fds) {
    const listen = await freeListen();
    const dir = path.join(work.dir, `nginx-${listen.pass}`);
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, "nginx.conf");
    writeFileSync(file, nginxConfig(listen, work.backends, work.cert, dir));
    // -e: nginx opens its compiled-in error log before reading the configuration; keep it here.
    return startNative(
      "nginx",
      ["nginx", "-c", file, "-p", dir, "-e", path.join(dir, "nginx-error.log")],
      listen,
      [listen.pass, listen.term],
      fds,
    );
  },
};

const sniproxy: ProxySpec = {
  id: "sniproxy",
  label: "sniproxy",
  terminates: false,
  pinned: true,
  async start(work, fds) {
    const listen = await freeListen();
    const dir = path.join(work.dir, `sniproxy-${listen.pass}`);
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, "sniproxy.conf");
    writeFileSync(file, sniproxyConfig(listen.pass, work.backends, dir));
    return startNative(
      "sniproxy",
      ["sniproxy", "-f", "-c", file, "-n", String(fds ?? 4096)],
      listen,
      [listen.pass],
      fds,
    );
  },
};

function tlsrouteSpec(runtime: Runtime, workers = 1): ProxySpec {
  const names: Record<Runtime, string> = { node: "Node", bun: "Bun", deno: "Deno" };
  return {
    id: `tlsroute-${runtime}${workers > 1 ? `-${workers}w` : ""}`,
    label: `tlsroute (${names[runtime]}${workers > 1 ? `, ${workers} workers` : ""})`,
    terminates: true,
    pinned: workers === 1,
    async start(work, fds, nodeFlags) {
      const listen = await freeListen();
      const file = path.join(work.dir, "tlsroute.json");
      if (!existsSync(file))
        writeFileSync(file, JSON.stringify(tlsrouteConfig(work.backends, work.cert), null, 2));
      const proxy = await startProxy({
        config: file,
        entryPoints: ["pass", "term"],
        ports: { pass: listen.pass, term: listen.term },
        runtime,
        fds,
        nodeFlags,
        pin: workers === 1,
        args: workers > 1 ? ["--workers", String(workers)] : [],
      });
      // Workers may log "listening" before every one of them accepts: wait until the ports answer.
      for (const port of [listen.pass, listen.term]) while (!(await canConnect(port))) await sleep(50);
      return {
        pid: proxy.pid,
        listen,
        pids: () => processTree(proxy.pid),
        describe: () => proxy.problems.map((p) => JSON.stringify(p)).join("\n"),
        async stop() {
          await proxy.stop();
          killGroup(proxy.pid, "SIGKILL");
        },
      };
    },
  };
}

/**
 * A reference row: one bench/serve-peers.ts role per listener (two processes on CPU 1), routing
 * nothing, with no log: what a proxy on that runtime's socket layer costs at least.
 */
function referenceSpec(
  spec: Pick<ProxySpec, "id" | "label" | "workloads">,
  role: string,
  runtime: "node" | "bun",
  extra: Record<string, unknown> = {},
): ProxySpec {
  return {
    ...spec,
    terminates: true,
    pinned: true,
    floor: true,
    async start(work, fds) {
      const start = async (mode: "passthrough" | "terminate", backendPort: number) => {
        const peer = startPeer(
          role,
          { mode, backendPort, cert: work.cert.cert, key: work.cert.key, ...extra },
          { cpu: 1, fds, runtime },
        );
        return { peer, port: Number((await peer.wait((m) => m.ready === true)).port) };
      };
      const pass = await start("passthrough", work.backends.sink);
      const term = await start("terminate", work.backends.echo);
      return {
        pid: pass.peer.pid,
        listen: { pass: pass.port, term: term.port },
        pids: () => [pass.peer.pid, term.peer.pid],
        describe: () => spec.label,
        async stop() {
          await Promise.all([pass.peer.kill(), term.peer.kill()]);
        },
      };
    },
  };
}

/**
 * The naive proxy (accept → connect → pipe() both ways; behind a bare tls.Server with tickets off for
 * termination), no SNI routing: what any proxy written on node:net/node:tls costs at least on that
 * runtime. `peek`: it reads the first bytes before dialling or handing the socket to TLS, as a router must.
 */
const floorSpec = (runtime: "node" | "bun", peek = false): ProxySpec =>
  referenceSpec(
    {
      id: `${runtime}-${peek ? "peek" : "pipe"}`,
      label: `naive ${runtime === "node" ? "Node" : "Bun"} pipe${peek ? ", peeking" : ""} (floor)`,
    },
    "pipe-proxy",
    runtime,
    { peek },
  );

/**
 * Bun's own socket API (Bun.listen / Bun.connect, bench/serve-peers.ts `bun-native`): no peek, no
 * node:net objects; terminate = Bun.listen's own TLS. A reference for what Bun itself costs per
 * connection; it has no backpressure, so no bulk transfer.
 */
const bunNative = referenceSpec(
  { id: "bun-native", label: "Bun's own sockets (reference)", workloads: [2, 4] },
  "bun-native",
  "bun",
);

/** Whether a proxy takes part in a workload. */
const runs = (spec: ProxySpec, workload: number) => spec.workloads?.includes(workload) ?? true;

function workersAvailable(): boolean {
  const out = spawnSync(process.execPath, [BIN, "serve", "--help"], { encoding: "utf8", cwd: ROOT });
  return `${out.stdout}${out.stderr}`.includes("--workers");
}

// ---------------------------------------------------------------------------------- measuring

const cpuOf = (proxy: RunningProxy | null) => {
  if (!proxy) return null;
  const pids = proxy.pids();
  return { pids, times: treeCpuTimes(pids) };
};

function cpuSince(proxy: RunningProxy, before: { pids: number[]; times: { user: number; system: number } }) {
  // Processes that appeared meanwhile count from zero; the start set is re-read at the end.
  const pids = [...new Set([...before.pids, ...proxy.pids()])];
  const after = treeCpuTimes(pids);
  return { user: after.user - before.times.user, system: after.system - before.times.system };
}

interface Spread {
  median: number;
  min: number;
  max: number;
  values: number[];
}

function spread(values: number[]): Spread | null {
  if (values.length === 0) return null;
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), values };
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

// ---- 1. bulk passthrough

interface BulkRun {
  mbPerS: number;
  cpuPerGiB: number | null;
  userPerGiB: number | null;
  systemPerGiB: number | null;
  busy: number | null;
}

async function bulkOnce(port: number, proxy: RunningProxy | null, bytes: number): Promise<BulkRun> {
  const before = cpuOf(proxy);
  const result = await streamRun({ port, bytes, chunk: CHUNK, servername: SNI_SINK, announce: true });
  // Let the proxy finish closing both sides (and write its access line) before reading its CPU.
  await sleep(150);
  const gib = bytes / GiB;
  const mbPerS = round(bytes / (result.elapsedMs / 1000) / 1e6);
  if (!proxy || !before) return { mbPerS, cpuPerGiB: null, userPerGiB: null, systemPerGiB: null, busy: null };
  const cpu = cpuSince(proxy, before);
  return {
    mbPerS,
    cpuPerGiB: round((cpu.user + cpu.system) / gib, 3),
    userPerGiB: round(cpu.user / gib, 3),
    systemPerGiB: round(cpu.system / gib, 3),
    busy: round((cpu.user + cpu.system) / (result.elapsedMs / 1000), 2),
  };
}

// ---- 2. handshakes

interface HandshakeRun {
  count: number;
  perSecond: number;
  cpuPer1000: number;
  /** The user-space and kernel parts of cpuPer1000. */
  userPer1000: number;
  systemPer1000: number;
  busy: number;
  errors: number;
  firstError: string | null;
}

async function handshakesOnce(proxy: RunningProxy, caFile: string, seconds: number): Promise<HandshakeRun> {
  const before = cpuOf(proxy)!;
  const r = await handshakeLoad({
    port: proxy.listen.term,
    servername: SNI_SINK,
    ca: caFile,
    concurrency: HANDSHAKE_CONCURRENCY,
    seconds,
    sources: SOURCES,
  });
  await sleep(200);
  const cpu = cpuSince(proxy, before);
  const wall = r.elapsedMs / 1000;
  return {
    count: r.count,
    perSecond: round(r.count / wall),
    cpuPer1000: round(((cpu.user + cpu.system) / Math.max(1, r.count)) * 1000, 3),
    userPer1000: round((cpu.user / Math.max(1, r.count)) * 1000, 3),
    systemPer1000: round((cpu.system / Math.max(1, r.count)) * 1000, 3),
    busy: round((cpu.user + cpu.system) / wall, 2),
    errors: r.errors,
    firstError: r.firstError,
  };
}

// ---- 3. latency

interface LatencyTarget {
  name: string;
  port: number;
  servername: string;
}

/** One client, connections round-robin over every path: samples in ms by path name. */
async function latencyRound(targets: LatencyTarget[], caFile: string, count: number) {
  const client = startPeer("latency", { targets, ca: caFile, count });
  const message = await client.wait((m) => "result" in m, 600_000);
  await client.exited;
  return message.result as {
    samples: Record<string, number[]>;
    errors: Record<string, number>;
    firstError: string | null;
  };
}

// ---- 4. idle memory

async function backendOpen(peer: Peer): Promise<number> {
  peer.send("stats");
  const m = await peer.wait((x) => "stats" in x, 10_000);
  return (m.stats as { open: number }).open;
}

async function waitForOpen(peer: Peer, test: (open: number) => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await backendOpen(peer);
    if (test(open)) return;
    if (Date.now() > deadline) throw new Error(`timed out: the backend holds ${open} connections`);
    await sleep(100);
  }
}

async function openIdle(port: number, mode: "passthrough" | "terminate", count: number, caFile: string) {
  const clients = startPeer(
    "idle",
    { port, mode, count, servername: SNI_SINK, ca: caFile, concurrency: 64 },
    { fds: count + 256 },
  );
  const opened = await clients.wait((m) => "opened" in m, 300_000);
  if (Number(opened.failed) > 0)
    throw new Error(`${String(opened.failed)} connections failed to open: ${String(opened.firstError)}`);
  return clients;
}

async function closeIdle(clients: Peer): Promise<void> {
  clients.send("close");
  await clients.wait((m) => "closed" in m, 30_000).catch(() => {});
  await clients.kill();
}

interface MemoryRun {
  idle: Memory;
  loaded: Memory;
  pssKbPerConn: number;
  rssKbPerConn: number;
}

async function memoryOnce(
  spec: ProxySpec,
  mode: "passthrough" | "terminate",
  work: Work,
  backend: Peer,
): Promise<MemoryRun> {
  const proxy = await spec.start(work, PROXY_FDS);
  try {
    const port = mode === "passthrough" ? proxy.listen.pass : proxy.listen.term;
    const base = await backendOpen(backend);
    // Warm up: code paths loaded, TLS context built, then back to no connection.
    const warm = await openIdle(port, mode, 50, work.caFile);
    await waitForOpen(backend, (open) => open >= base + 50, 30_000);
    await closeIdle(warm);
    await waitForOpen(backend, (open) => open <= base, 30_000);
    await sleep(1500);
    const idle = treeMemory(proxy.pids());
    const clients = await openIdle(port, mode, IDLE_CONNECTIONS, work.caFile);
    await waitForOpen(backend, (open) => open >= base + IDLE_CONNECTIONS, 60_000);
    await sleep(2500);
    const loaded = treeMemory(proxy.pids());
    clients.send("status");
    const status = (await clients.wait((m) => "status" in m, 10_000)).status as { closedEarly: number };
    if (status.closedEarly > 0)
      throw new Error(`${status.closedEarly} idle connections were closed by ${spec.id}`);
    await closeIdle(clients);
    await waitForOpen(backend, (open) => open <= base, 60_000);
    return {
      idle,
      loaded,
      pssKbPerConn: round((loaded.pssKb - idle.pssKb) / IDLE_CONNECTIONS, 2),
      rssKbPerConn: round((loaded.rssKb - idle.rssKb) / IDLE_CONNECTIONS, 2),
    };
  } finally {
    await proxy.stop();
  }
}

// ---- 5. configuration check

interface CheckResult {
  tool: string;
  command: string;
  ms: Spread;
  exitCode: number;
}

function timeCommand(argv: string[], env?: NodeJS.ProcessEnv): { ms: number; code: number; out: string } {
  const started = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", cwd: ROOT, env: env ?? process.env });
  const ms = performance.now() - started;
  return { ms, code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

function checkTimes(work: Work, proxies: ProxySpec[]): CheckResult[] {
  const dir = path.join(work.dir, "check-10k");
  mkdirSync(dir, { recursive: true });
  const configs = writeCheckConfigs(dir, work.cert);
  const wanted = new Set(proxies.map((p) => p.id));
  const denoEnv = { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
  const cases: { tool: string; argv: string[]; env?: NodeJS.ProcessEnv; show: string }[] = [];
  if (wanted.has("haproxy"))
    cases.push(
      {
        tool: "haproxy -c (one ACL per route)",
        argv: ["haproxy", "-q", "-c", "-f", configs.haproxyInline],
        show: "haproxy -q -c -f haproxy-10k-inline.cfg",
      },
      {
        tool: "haproxy -c (map file)",
        argv: ["haproxy", "-q", "-c", "-f", configs.haproxyMap],
        show: "haproxy -q -c -f haproxy-10k-map.cfg",
      },
    );
  if (wanted.has("nginx"))
    cases.push({
      tool: "nginx -t (map hostnames)",
      argv: [
        "nginx",
        "-q",
        "-t",
        "-c",
        configs.nginx,
        "-p",
        dir,
        "-e",
        path.join(dir, "nginx-10k-error.log"),
      ],
      show: "nginx -q -t -c nginx-10k.conf",
    });
  const validate = (runtime: Runtime) => {
    if (runtime === "node") return [process.execPath, BIN, "validate", configs.tlsrouteDir];
    if (runtime === "bun") return [runtimeBinary("bun"), BIN, "validate", configs.tlsrouteDir];
    return [
      runtimeBinary("deno"),
      "run",
      "--allow-read",
      "--allow-env",
      BIN,
      "validate",
      configs.tlsrouteDir,
    ];
  };
  for (const runtime of ["node", "bun", "deno"] as const)
    if (wanted.has(`tlsroute-${runtime}`))
      cases.push({
        tool: `tlsroute validate (${runtime})`,
        argv: validate(runtime),
        env: denoEnv,
        show: `${runtime === "deno" ? "deno run --allow-read --allow-env" : runtime} bin/tlsroute.mjs validate tlsroute-10k/`,
      });
  const results: CheckResult[] = [];
  for (const c of cases) timeCommand(c.argv, c.env); // warm the page cache and the runtimes' caches
  const samples = new Map<string, number[]>();
  let exitCodes = new Map<string, number>();
  // Interleaved, like the other workloads.
  for (let run = 0; run < CHECK_RUNS; run++)
    for (const c of cases) {
      const r = timeCommand(c.argv, c.env);
      if (r.code !== 0) throw new Error(`${c.show} exited with ${r.code}:\n${r.out.slice(-2000)}`);
      samples.set(c.tool, [...(samples.get(c.tool) ?? []), r.ms]);
      exitCodes = exitCodes.set(c.tool, r.code);
    }
  for (const c of cases) {
    const ms = samples.get(c.tool)!.map((v) => round(v, 1));
    results.push({ tool: c.tool, command: c.show, ms: spread(ms)!, exitCode: exitCodes.get(c.tool) ?? -1 });
  }
  return results;
}

// ---- 6. split ClientHello

/**
 * A relay in front of a proxy that re-frames the client's first TLS record (its ClientHello) as two
 * records, the first carrying only SPLIT_AT bytes of the handshake message (its header, version and
 * part of the random: the SNI is entirely in the second record), sent 30 ms apart so they also
 * arrive in two reads. Everything after that is relayed unchanged both ways.
 */
async function startSplitter(targetPort: number): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: "127.0.0.1", port: targetPort });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
      s.on("close", () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    let head: Buffer | null = Buffer.alloc(0);
    let queue: Buffer[] | null = null;
    client.on("data", (chunk: Buffer) => {
      if (queue) return void queue.push(chunk);
      if (!head) return void upstream.write(chunk);
      head = Buffer.concat([head, chunk]);
      if (head.length < 5 || head.length < 5 + head.readUInt16BE(3)) return;
      const length = head.readUInt16BE(3);
      const body = head.subarray(5, 5 + length);
      const rest = head.subarray(5 + length);
      const record = (part: Buffer) => {
        const header = Buffer.from(head!.subarray(0, 5));
        header.writeUInt16BE(part.length, 3);
        return Buffer.concat([header, part]);
      };
      const first = record(body.subarray(0, SPLIT_AT));
      queue = [record(body.subarray(SPLIT_AT)), rest];
      head = null;
      upstream.write(first);
      setTimeout(() => {
        const pending = queue ?? [];
        queue = null;
        for (const b of pending) if (b.length) upstream.write(b);
      }, 30);
    });
    upstream.on("data", (chunk: Buffer) => client.write(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address !== "object") throw new Error("no address");
  return {
    port: address.port,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** One TLS connection (chain verified), one message, its echo: "ok" or why not, within 8 s. */
function tryEcho(port: number, servername: string, caFile: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername, ca: readFileSync(caFile) });
    const timer = setTimeout(() => finish("no answer in 8 s"), 8000);
    let done = false;
    const finish = (outcome: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    socket.once("secureConnect", () => socket.write("ping"));
    socket.once("data", (d: Buffer) =>
      finish(d.toString() === "ping" ? "ok" : `unexpected answer ${JSON.stringify(d.toString())}`),
    );
    socket.once("error", (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
    socket.once("close", () => finish("closed"));
  });
}

interface Correctness {
  passRouted: string;
  passUnknownRefused: string;
  termRouted: string | null;
  splitPass: string;
  splitTerm: string | null;
}

async function correctness(proxy: RunningProxy, spec: ProxySpec, caFile: string): Promise<Correctness> {
  const split = async (port: number, servername: string) => {
    const splitter = await startSplitter(port);
    try {
      return await tryEcho(splitter.port, servername, caFile);
    } finally {
      splitter.close();
    }
  };
  const unknown = await tryEcho(proxy.listen.pass, SNI_UNKNOWN, caFile);
  return {
    passRouted: await tryEcho(proxy.listen.pass, SNI_TLS_ECHO, caFile),
    passUnknownRefused: unknown === "ok" ? "routed (wrong)" : `refused (${unknown})`,
    termRouted: spec.terminates ? await tryEcho(proxy.listen.term, SNI_SINK, caFile) : null,
    splitPass: await split(proxy.listen.pass, SNI_TLS_ECHO),
    splitTerm: spec.terminates ? await split(proxy.listen.term, SNI_SINK) : null,
  };
}

// ---------------------------------------------------------------------------------- versions

function firstLine(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`.trim().split("\n")[0] ?? "unknown";
}

function versions(): Record<string, string> {
  const haproxyVv = spawnSync("haproxy", ["-vv"], { encoding: "utf8" }).stdout ?? "";
  const nginxV = spawnSync("nginx", ["-V"], { encoding: "utf8" }).stderr ?? "";
  const bunSsl = spawnSync(runtimeBinary("bun"), ["-e", "console.log(process.versions.boringssl ?? '')"], {
    encoding: "utf8",
  }).stdout.trim();
  return {
    haproxy: firstLine(["haproxy", "-v"]),
    haproxyTls: /Running on OpenSSL version : (.*)/.exec(haproxyVv)?.[1] ?? "unknown",
    nginx: firstLine(["nginx", "-v"]),
    nginxTls: /built with (.*)/.exec(nginxV)?.[1] ?? "unknown",
    sniproxy: firstLine(["sniproxy", "-V"]),
    node: `${process.version} (OpenSSL ${process.versions.openssl})`,
    bun: `${firstLine([runtimeBinary("bun"), "--version"])}${bunSsl ? ` (BoringSSL ${bunSsl})` : ""}`,
    deno: firstLine([runtimeBinary("deno"), "--version"]),
  };
}

function cpuModel(): string {
  const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
  return m?.[1] ?? "unknown";
}

// ---------------------------------------------------------------------------------- profiling

interface NodeProfile {
  /** 4 bulk runs: bytes forwarded and the proxy's CPU, to read the profile per GiB. */
  passthrough: ProfileSummary & { gib: number; cpuPerGiB: number | null };
  /** One 10 s handshake run: handshakes done, to read the profile per handshake. */
  termination: ProfileSummary & { handshakes: number; cpuPer1000: number };
}

/** tlsroute on Node under `--cpu-prof` (start-up included in the samples: ≈ 0.3 s of module loading). */
async function profileNode(work: Work): Promise<NodeProfile> {
  const spec = tlsrouteSpec("node");
  const run = async <T>(name: string, body: (proxy: RunningProxy) => Promise<T>) => {
    const dir = path.join(work.dir, `profile-${name}`);
    mkdirSync(dir, { recursive: true });
    const flags = ["--cpu-prof", `--cpu-prof-dir=${dir}`, "--cpu-prof-interval=250"];
    const proxy = await spec.start(work, undefined, flags);
    let result: T;
    try {
      result = await body(proxy);
    } finally {
      await proxy.stop();
    }
    return { summary: summariseCpuProfile(findProfile(dir, ".cpuprofile")), result };
  };
  const runs = 4;
  const pass = await run("passthrough", async (proxy) => {
    const rs: BulkRun[] = [];
    for (let i = 0; i < runs; i++) rs.push(await bulkOnce(proxy.listen.pass, proxy, BULK_BYTES));
    return rs;
  });
  const term = await run("termination", (proxy) => handshakesOnce(proxy, work.caFile, 10));
  return {
    passthrough: {
      ...pass.summary,
      gib: (runs * BULK_BYTES) / GiB,
      cpuPerGiB: median(pass.result.map((r) => r.cpuPerGiB ?? 0)),
    },
    termination: {
      ...term.summary,
      handshakes: term.result.count,
      cpuPer1000: term.result.cpuPer1000,
    },
  };
}

// -------------------------------------------------------------------------------------- main

interface ProxyResult {
  id: string;
  label: string;
  correctness?: Correctness;
  error?: string;
  bulk?: { mbPerS: Spread; cpuPerGiB: Spread; userPerGiB: Spread; systemPerGiB: Spread; busy: Spread };
  handshakes?: {
    perSecond: Spread;
    cpuPer1000: Spread;
    userPer1000: Spread;
    systemPer1000: Spread;
    capacityPerCore: number;
    busy: Spread;
    errors: number;
  };
  latency?: {
    passthrough: { p50: number; p99: number; addedP50: number; addedP99: number; p50PerRound: Spread };
    terminate:
      | { p50: number; p99: number; addedP50: number; addedP99: number; p50PerRound: Spread }
      | undefined;
  };
  memory?: {
    passthrough?: { pssKbPerConn: Spread; rssKbPerConn: Spread };
    terminate?: { pssKbPerConn: Spread; rssKbPerConn: Spread };
  };
}

function must<T>(value: T | null): T {
  if (value === null) throw new Error("no value");
  return value;
}

async function main(): Promise<void> {
  requireBuild();
  ensurePackages();
  pinSelf();
  const startedAt = new Date();
  const work0 = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-peers-"));
  // Ctrl-C ends the process without running `finally`: the temp directory goes on exit too.
  process.on("exit", () => rmSync(work0, { recursive: true, force: true }));
  const certDir = path.join(work0, "cert");
  mkdirSync(certDir);
  // Valid long enough that no configuration check warns about expiry; the wildcard covers the names
  // of the 10,000-router configurations, so `validate` reports no uncovered name either.
  const made = makeEcdsaCertificate(certDir, [SNI_SINK, SNI_TLS_ECHO, "*.bench.test", "*.bench.example"], 90);
  const pem = path.join(certDir, "leaf.pem");
  writeFileSync(pem, `${readFileSync(made.cert, "utf8")}${readFileSync(made.key, "utf8")}`);
  const cert: CertFiles = { cert: made.cert, key: made.key, pem };

  const all: ProxySpec[] = [
    haproxy,
    nginx,
    sniproxy,
    tlsrouteSpec("node"),
    tlsrouteSpec("bun"),
    tlsrouteSpec("deno"),
  ];
  const workers = workersAvailable();
  if (workers) all.push(tlsrouteSpec("node", 2));
  if (!process.argv.includes("--no-floor")) all.push(floorSpec("node"), floorSpec("bun", true), bunNative);
  const specs = all.filter((s) => !ONLY || ONLY.has(s.id));
  const log = (text: string) =>
    console.error(`[${((Date.now() - startedAt.getTime()) / 1000).toFixed(0).padStart(4)} s] ${text}`);
  log(
    `proxies: ${specs.map((s) => s.id).join(", ")}${workers ? "" : " (serve has no --workers yet: no 2-worker row)"}`,
  );
  log(`pinning: ${PINNING.why}`);

  // Backends on CPU 0, shared by every proxy.
  const sink = startPeer("sink", {}, { fds: IDLE_CONNECTIONS + 512 });
  const echo = startPeer("echo", {}, { fds: IDLE_CONNECTIONS + 512 });
  const tlsEcho = startPeer("tls-echo", { cert: cert.cert, key: cert.key });
  const port = async (p: Peer) => Number((await p.wait((m) => m.ready === true)).port);
  const backends: Backends = { sink: await port(sink), echo: await port(echo), tlsEcho: await port(tlsEcho) };
  const work: Work = { dir: work0, cert, caFile: made.caCert, backends };

  const results = new Map<string, ProxyResult>(specs.map((s) => [s.id, { id: s.id, label: s.label }]));
  const running = new Map<string, RunningProxy>();
  const notes: string[] = [];
  /** One workload on one proxy: a failure is noted and leaves that cell empty, the rest goes on. */
  const attempt = async <T>(id: string, what: string, body: () => Promise<T>): Promise<T | null> => {
    try {
      return await body();
    } catch (err) {
      const message = err instanceof Error ? err.message.split("\n")[0] : String(err);
      log(`   ${id} ${what} failed: ${message}`);
      notes.push(`${id}: ${what} failed: ${message}`);
      return null;
    }
  };
  let profile: NodeProfile | undefined;
  let checks: CheckResult[] = [];
  try {
    // Start everyone and gate on correctness before timing anything.
    for (const spec of specs) {
      try {
        const proxy = await spec.start(work);
        running.set(spec.id, proxy);
        if (spec.floor) continue;
        const c = await correctness(proxy, spec, work.caFile);
        results.get(spec.id)!.correctness = c;
        log(
          `${spec.id}: routed ${c.passRouted}/${c.termRouted ?? "-"}, unknown ${c.passUnknownRefused}, split hello ${c.splitPass}/${c.splitTerm ?? "-"}`,
        );
        if (c.passRouted !== "ok" || (spec.terminates && c.termRouted !== "ok"))
          throw new Error(
            `does not route a plain ClientHello (passthrough: ${c.passRouted}, terminated: ${c.termRouted})`,
          );
      } catch (err) {
        results.get(spec.id)!.error = err instanceof Error ? err.message : String(err);
        log(`${spec.id}: left out: ${results.get(spec.id)!.error}`);
        await running.get(spec.id)?.stop();
        running.delete(spec.id);
      }
    }
    const live = specs.filter((s) => running.has(s.id));
    const terminating = live.filter((s) => s.terminates && runs(s, 2));
    const bulkRun = live.filter((s) => runs(s, 1));
    /** The routers: everything but the floor. */
    const routers = live.filter((s) => !s.floor);

    // 1. bulk passthrough, interleaved rounds after one smaller warm-up run each.
    log(`1. passthrough bulk: ${ROUNDS} rounds of ${BULK_BYTES / 2 ** 20} MiB`);
    const bulk = new Map<string, BulkRun[]>();
    for (const spec of bulkRun) {
      const proxy = running.get(spec.id)!;
      await attempt(spec.id, "bulk warm-up", () => bulkOnce(proxy.listen.pass, proxy, 64 * 2 ** 20));
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const id of ["direct", ...bulkRun.map((s) => s.id)]) {
        const proxy = running.get(id) ?? null;
        const port = proxy ? proxy.listen.pass : backends.sink;
        const run = await attempt(id, "bulk", () => bulkOnce(port, proxy, BULK_BYTES));
        if (run) bulk.set(id, [...(bulk.get(id) ?? []), run]);
      }
      const last = [...bulk].map(([id, rs]) => `${id} ${rs.at(-1)!.cpuPerGiB ?? "-"} s/GiB`);
      log(`   round ${r + 1}: ${last.join(", ")}`);
    }
    for (const spec of bulkRun) {
      const rs = bulk.get(spec.id);
      if (!rs?.length) continue;
      const pick = (f: (r: BulkRun) => number | null) =>
        must(spread(rs.map(f).filter((v): v is number => v !== null)));
      results.get(spec.id)!.bulk = {
        mbPerS: pick((r) => r.mbPerS),
        cpuPerGiB: pick((r) => r.cpuPerGiB),
        userPerGiB: pick((r) => r.userPerGiB),
        systemPerGiB: pick((r) => r.systemPerGiB),
        busy: pick((r) => r.busy),
      };
    }
    const directBulk = must(spread((bulk.get("direct") ?? []).map((r) => r.mbPerS)));

    // 2. handshakes
    log(`2. termination: ${ROUNDS} rounds of ${HANDSHAKE_SECONDS} s, ${HANDSHAKE_CONCURRENCY} clients`);
    const hs = new Map<string, HandshakeRun[]>();
    const handshakeRun = (id: string, seconds: number) =>
      attempt(id, "handshakes", () => handshakesOnce(running.get(id)!, work.caFile, seconds));
    for (const spec of terminating) await handshakeRun(spec.id, 1);
    for (let r = 0; r < ROUNDS; r++) {
      for (const spec of terminating) {
        const run = await handshakeRun(spec.id, HANDSHAKE_SECONDS);
        if (run) hs.set(spec.id, [...(hs.get(spec.id) ?? []), run]);
      }
      const last = [...hs].map(([id, rs]) => `${id} ${rs.at(-1)!.perSecond}/s ${rs.at(-1)!.cpuPer1000} s/1k`);
      log(`   round ${r + 1}: ${last.join(", ")}`);
    }
    for (const spec of terminating) {
      const rs = hs.get(spec.id);
      if (!rs?.length) continue;
      const cpu = must(spread(rs.map((r) => r.cpuPer1000)));
      results.get(spec.id)!.handshakes = {
        perSecond: must(spread(rs.map((r) => r.perSecond))),
        cpuPer1000: cpu,
        userPer1000: must(spread(rs.map((r) => r.userPer1000))),
        systemPer1000: must(spread(rs.map((r) => r.systemPer1000))),
        // What one saturated core would do at this cost per handshake (the client is the limit here).
        capacityPerCore: round(1000 / cpu.median),
        busy: must(spread(rs.map((r) => r.busy))),
        errors: rs.reduce((n, r) => n + r.errors, 0),
      };
    }

    // 3. latency: sequential new connections, round-robin over the direct path and every proxy's.
    log(`3. latency: ${ROUNDS} rounds of ${LATENCY_COUNT} sequential connections per path, interleaved`);
    const lat = new Map<string, number[][]>();
    const targets: LatencyTarget[] = [{ name: "direct", port: backends.tlsEcho, servername: SNI_TLS_ECHO }];
    for (const spec of routers) {
      const proxy = running.get(spec.id)!;
      targets.push({ name: `${spec.id}/pass`, port: proxy.listen.pass, servername: SNI_TLS_ECHO });
      if (spec.terminates)
        targets.push({ name: `${spec.id}/term`, port: proxy.listen.term, servername: SNI_SINK });
    }
    for (let r = 0; r < ROUNDS; r++) {
      const result = await attempt("latency", `round ${r + 1}`, () =>
        latencyRound(targets, work.caFile, LATENCY_COUNT),
      );
      if (!result) continue;
      for (const [name, failures] of Object.entries(result.errors))
        notes.push(`latency ${name}: ${failures} connections failed (${result.firstError})`);
      for (const [name, samples] of Object.entries(result.samples))
        lat.set(name, [...(lat.get(name) ?? []), samples]);
    }
    const sortedCopy = (values: number[]) => [...values].sort((x, y) => x - y);
    const latStats = (key: string) => {
      const rounds = lat.get(key) ?? [];
      const all = sortedCopy(rounds.flat());
      return {
        p50: round(quantile(all, 0.5), 3),
        p99: round(quantile(all, 0.99), 3),
        p50PerRound: must(spread(rounds.map((one) => round(quantile(sortedCopy(one), 0.5), 3)))),
      };
    };
    const direct = latStats("direct");
    const added = (key: string) => {
      if (!lat.has(key)) return undefined;
      const s = latStats(key);
      return { ...s, addedP50: round(s.p50 - direct.p50, 3), addedP99: round(s.p99 - direct.p99, 3) };
    };
    for (const spec of routers) {
      const passthrough = added(`${spec.id}/pass`);
      if (passthrough) results.get(spec.id)!.latency = { passthrough, terminate: added(`${spec.id}/term`) };
    }

    // Stop the long-running proxies: memory runs use fresh ones.
    for (const proxy of running.values()) await proxy.stop();
    running.clear();

    // 4. idle memory
    log(
      `4. idle memory: ${IDLE_CONNECTIONS} connections, ${MEMORY_RUNS} run(s) per proxy and mode, fresh processes`,
    );
    const mem = new Map<string, MemoryRun[]>();
    for (let r = 0; r < MEMORY_RUNS; r++)
      for (const spec of live.filter((s) => runs(s, 4)))
        for (const mode of spec.terminates
          ? (["passthrough", "terminate"] as const)
          : (["passthrough"] as const)) {
          const key = `${spec.id}/${mode}`;
          try {
            const run = await memoryOnce(spec, mode, work, mode === "passthrough" ? sink : echo);
            mem.set(key, [...(mem.get(key) ?? []), run]);
            log(`   ${key}: ${run.pssKbPerConn} KB/conn PSS, ${run.rssKbPerConn} KB RSS`);
          } catch (err) {
            log(`   ${key}: failed: ${err instanceof Error ? err.message : String(err)}`);
            notes.push(
              `${key} idle memory failed: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`,
            );
          }
        }
    for (const spec of live) {
      const m = (mode: string) => {
        const rs = mem.get(`${spec.id}/${mode}`);
        if (!rs?.length) return undefined;
        return {
          pssKbPerConn: must(spread(rs.map((x) => x.pssKbPerConn))),
          rssKbPerConn: must(spread(rs.map((x) => x.rssKbPerConn))),
        };
      };
      results.get(spec.id)!.memory = { passthrough: m("passthrough"), terminate: m("terminate") };
    }

    // 5. configuration check
    log(`5. configuration check: ${CHECK_ROUTERS} routers, ${CHECK_RUNS} runs each`);
    checks = checkTimes(work, routers);

    if (PROFILE && routers.some((s) => s.id === "tlsroute-node")) {
      log("profiling tlsroute on Node (--cpu-prof): passthrough, then termination");
      profile = await profileNode(work);
    }

    const env = {
      machine: { ...machine(), cpuModel: cpuModel() },
      versions: versions(),
      settings: {
        quick: QUICK,
        rounds: ROUNDS,
        bulkBytes: BULK_BYTES,
        chunk: CHUNK,
        handshakeSeconds: HANDSHAKE_SECONDS,
        handshakeConcurrency: HANDSHAKE_CONCURRENCY,
        latencyCount: LATENCY_COUNT,
        idleConnections: IDLE_CONNECTIONS,
        memoryRuns: MEMORY_RUNS,
        checkRuns: CHECK_RUNS,
        splitAt: SPLIT_AT,
      },
      startedAt: startedAt.toISOString(),
      durationS: Math.round((Date.now() - startedAt.getTime()) / 1000),
    };
    const report = {
      ...env,
      direct: { bulkMBps: directBulk, latency: direct },
      proxies: [...results.values()],
      checks,
      notes,
      ...(profile ? { profile } : {}),
    };
    const tables = render(report.proxies, checks, directBulk, direct);
    console.log(tables.text);
    if (profile) {
      console.log("\n--- passthrough");
      printProfile(profile.passthrough);
      console.log("\n--- termination");
      printProfile(profile.termination);
    }
    const dir = path.join(BENCH_DIR, "results");
    mkdirSync(dir, { recursive: true });
    // A quick or partial run never replaces the day's full table.
    const stamp = `${startedAt.toISOString().slice(0, 10)}${QUICK ? "-quick" : ""}${ONLY ? "-partial" : ""}`;
    writeFileSync(path.join(dir, `peers-${stamp}.json`), `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(path.join(dir, `peers-${stamp}.md`), tables.markdown);
    log(`wrote bench/results/peers-${stamp}.json and .md (${env.durationS} s)`);
  } finally {
    for (const proxy of running.values()) await proxy.stop().catch(() => {});
    await Promise.all([sink.kill(), echo.kill(), tlsEcho.kill()]);
    rmSync(work0, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------------ report

function render(
  proxies: ProxyResult[],
  checks: CheckResult[],
  directBulk: Spread,
  direct: { p50: number; p99: number },
): { text: string; markdown: string } {
  const base = proxies.find((p) => p.id === "haproxy");
  const fmt = (v: number | undefined, digits = 2) =>
    v === undefined || Number.isNaN(v) ? "n/a" : v.toFixed(digits);
  const withSpread = (s: Spread | undefined, digits = 2) =>
    s ? `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})` : "n/a";
  const ratio = (v: number | undefined, b: number | undefined) =>
    v === undefined || b === undefined || b === 0 ? "" : ` ×${(v / b).toFixed(2)}`;
  const rows = proxies.map((p) => {
    const b = base;
    const hsCap = p.handshakes?.capacityPerCore;
    return [
      p.label + (p.error ? " (failed)" : ""),
      p.bulk ? withSpread(p.bulk.mbPerS, 0) : "n/a",
      p.bulk
        ? `${withSpread(p.bulk.cpuPerGiB)}${ratio(p.bulk.cpuPerGiB.median, b?.bulk?.cpuPerGiB.median)}`
        : "n/a",
      p.handshakes ? withSpread(p.handshakes.perSecond, 0) : "n/a",
      p.handshakes
        ? `${withSpread(p.handshakes.cpuPer1000, 3)}${ratio(p.handshakes.cpuPer1000.median, b?.handshakes?.cpuPer1000.median)}`
        : "n/a",
      hsCap !== undefined ? `${hsCap}${ratio(hsCap, b?.handshakes?.capacityPerCore)}` : "n/a",
      p.latency ? `${fmt(p.latency.passthrough.addedP50)} / ${fmt(p.latency.passthrough.addedP99)}` : "n/a",
      p.latency?.terminate
        ? `${fmt(p.latency.terminate.addedP50)} / ${fmt(p.latency.terminate.addedP99)}`
        : "n/a",
      p.memory?.passthrough
        ? `${fmt(p.memory.passthrough.pssKbPerConn.median, 1)}${ratio(p.memory.passthrough.pssKbPerConn.median, b?.memory?.passthrough?.pssKbPerConn.median)}`
        : "n/a",
      p.memory?.terminate
        ? `${fmt(p.memory.terminate.pssKbPerConn.median, 1)}${ratio(p.memory.terminate.pssKbPerConn.median, b?.memory?.terminate?.pssKbPerConn.median)}`
        : "n/a",
      p.correctness
        ? `${p.correctness.splitPass === "ok" ? "yes" : "no"} / ${p.correctness.splitTerm === null ? "n/a" : p.correctness.splitTerm === "ok" ? "yes" : "no"}`
        : "n/a",
    ];
  });
  const header = [
    "proxy",
    "1. pass MB/s",
    "1. pass CPU s/GiB",
    "2. term conn/s",
    "2. term CPU s/1k hs",
    "2. hs/s per core (from CPU)",
    "3. +ms pass p50/p99",
    "3. +ms term p50/p99",
    "4. idle KB/conn pass",
    "4. idle KB/conn term",
    "6. split hello pass/term",
  ];
  const checkHeader = ["5. check, 10,000 routers", "ms median (min–max)", "vs haproxy -c inline"];
  const haproxyCheck = checks.find((c) => c.tool.startsWith("haproxy -c (one ACL"))?.ms.median;
  const checkRows = checks.map((c) => [
    c.tool,
    withSpread(c.ms, 0),
    haproxyCheck ? `×${(c.ms.median / haproxyCheck).toFixed(2)}` : "",
  ]);

  const lines: string[] = [];
  const capture = (h: string[], r: string[][]) => {
    const widths = h.map((x, i) => Math.max(x.length, ...r.map((row) => (row[i] ?? "").length)));
    const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
    lines.push(line(h), ...r.map(line));
  };
  capture(header, rows);
  lines.push(
    "",
    `direct (no proxy): ${withSpread(directBulk, 0)} MB/s; new TLS connection p50 ${fmt(direct.p50)} ms, p99 ${fmt(direct.p99)} ms`,
    "ratios (×) are to HAProxy; medians over rounds, (min–max); KB/conn is PSS delta per connection",
    "",
  );
  capture(checkHeader, checkRows);
  const md = (h: string[], r: string[][]) =>
    [
      `| ${h.join(" | ")} |`,
      `|${h.map(() => "---").join("|")}|`,
      ...r.map((row) => `| ${row.join(" | ")} |`),
    ].join("\n");
  return {
    text: lines.join("\n"),
    markdown: `${md(header, rows)}\n\n${md(checkHeader, checkRows)}\n`,
  };
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
