/**
 * `tlsroute serve` memory per idle connection, passthrough and terminated (peers.md §6.2 (d)).
 *
 * For each mode and run, a fresh proxy: RSS right after start ("cold"), then after 50 connections
 * opened and closed and a 2 s pause ("idle": code paths loaded, TLS context built), then with 5,000
 * idle connections open through it to a sink backend that holds them ("loaded", sampled after a 3 s
 * pause), and once more after they are all closed. Passthrough clients send a real ClientHello with
 * SNI and then nothing; terminated clients finish a full TLS 1.3 handshake (ECDSA P-256) and then
 * send nothing. KB per connection = (loaded − idle) / 5,000, for RSS, anonymous RSS and PSS, from
 * /proc/<pid>/status and smaps_rollup. Kernel socket buffers are not in RSS; /proc/net/sockstat's
 * TCP page count is recorded beside it. Median of 3 runs per mode. The same measurement runs once per
 * mode on the naive Node proxy (accept → dial → pipe, behind a bare tls.Server for terminate), the
 * floor for a proxy written on node:net/node:tls, so the figures can be read on one scale.
 *
 * The proxy holds two descriptors per connection: the script raises the soft `ulimit -n` of the
 * processes it starts (up to the hard limit) and scales the count down if the hard limit is too low.
 *
 * Run: npm run build && npm run bench:serve-memory [-- --runs N] [-- --connections N]
 *      [-- --no-baseline] [-- --profile]
 * Writes bench/results/serve-idle-memory.json. `--profile` (or a pathological figure above 50 KB per
 * connection) adds one run per mode and proxy with V8 heap snapshots (`--heapsnapshot-signal`) taken
 * idle and loaded: the live heap per connection by object kind.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  type BenchCertificate,
  fdLimits,
  flag,
  type Memory,
  machine,
  makeEcdsaCertificate,
  median,
  memory,
  type Peer,
  type ProxyProcess,
  pinSelf,
  printTable,
  requireBuild,
  round,
  sleep,
  sockstat,
  startPeer,
  startProxy,
  writeResult,
} from "./serve-common.ts";

const SNI = "a.bench.test";
const WARM_CONNECTIONS = 50;
const PATHOLOGICAL_KB = 50;
type Mode = "passthrough" | "terminate";

const RUNS = flag("runs", 3);
const WANTED = flag("connections", 5000);
// Two descriptors per connection in the proxy, plus room for the runtime's own.
const CONNECTIONS = Math.min(WANTED, Math.floor((fdLimits().hard - 256) / 2));
const FDS = 2 * CONNECTIONS + 256;

type TargetKind = "tlsroute" | "node-pipe";

interface Run {
  target: TargetKind;
  mode: Mode;
  connections: number;
  openMs: number;
  cold: Memory;
  idle: Memory;
  loaded: Memory;
  afterClose: Memory;
  kbPerConnection: { rss: number; rssAnon: number; pss: number };
  /** Kernel TCP memory (all sockets on the machine), pages, idle vs loaded. */
  sockstatMemPages: { idle: number; loaded: number };
  /** With --profile: live V8 heap per connection from heap snapshots (RSS figures of such a run are
   * inflated by the first snapshot's own buffers and are not used). */
  heap?: {
    idleHeapKb: number;
    loadedHeapKb: number;
    heapKbPerConnection: number;
    top: { kind: string; perConnection: number; bytesPerConnection: number }[];
  };
}

function writeConfig(dir: string, cert: BenchCertificate, sinkPort: number): string {
  const files = { certFile: cert.cert, keyFile: cert.key };
  const ep = { address: "127.0.0.1:0", transport: { respondingTimeouts: { readTimeout: "60s" } } };
  const config = {
    entryPoints: { pass: ep, term: ep },
    tcp: {
      routers: {
        pass: {
          entryPoints: ["pass"],
          rule: `HostSNI(\`${SNI}\`)`,
          service: "sink",
          tls: { passthrough: true },
        },
        term: { entryPoints: ["term"], rule: `HostSNI(\`${SNI}\`)`, service: "sink", tls: {} },
      },
      services: { sink: { loadBalancer: { servers: [{ address: `127.0.0.1:${sinkPort}` }] } } },
    },
    tls: {
      certificates: [files],
      options: { default: { minVersion: "VersionTLS12", disableSessionTickets: true } },
    },
  };
  const file = path.join(dir, "tlsroute.json");
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

async function sinkStats(sink: Peer): Promise<{ open: number; accepted: number; bytes: number }> {
  sink.send("stats");
  const m = await sink.wait((x) => "stats" in x, 10_000);
  return m.stats as { open: number; accepted: number; bytes: number };
}

/**
 * Polls until the number of connections the sink holds passes `test` (they crossed the proxy, or
 * the proxy closed them all) or the time is up.
 */
async function waitForSink(sink: Peer, test: (open: number) => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stats = await sinkStats(sink);
    if (test(stats.open)) return;
    if (Date.now() > deadline) throw new Error(`timed out: the sink holds ${stats.open} connections`);
    await sleep(100);
  }
}

/** Opens `count` idle connections through the proxy; resolves with the peer holding them. */
async function openIdle(port: number, mode: Mode, count: number, caFile: string) {
  const started = performance.now();
  const clients = startPeer(
    "idle",
    { port, mode, count, servername: SNI, ca: caFile, concurrency: 64 },
    { fds: count + 256 },
  );
  const opened = await clients.wait((m) => "opened" in m, 300_000);
  if (Number(opened.failed) > 0)
    throw new Error(`${String(opened.failed)} connections failed to open: ${String(opened.firstError)}`);
  return { clients, openMs: performance.now() - started };
}

async function closeIdle(clients: Peer): Promise<void> {
  clients.send("close");
  await clients.wait((m) => "closed" in m, 30_000).catch(() => {});
  await clients.kill();
}

interface Target {
  pid: number;
  port: number;
  stop(): Promise<unknown>;
}

/** A fresh process of the proxy under test, listening for `mode`. */
async function startTarget(
  kind: TargetKind,
  mode: Mode,
  config: string,
  cert: BenchCertificate,
  sinkPort: number,
  nodeFlags: string[],
): Promise<Target> {
  if (kind === "tlsroute") {
    const proxy: ProxyProcess = await startProxy({
      config,
      entryPoints: ["pass", "term"],
      fds: FDS,
      nodeFlags,
    });
    return {
      pid: proxy.pid,
      port: proxy.ports.get(mode === "passthrough" ? "pass" : "term")!,
      stop: proxy.stop,
    };
  }
  const peer = startPeer(
    "pipe-proxy",
    { mode, backendPort: sinkPort, cert: cert.cert, key: cert.key },
    { cpu: 1, fds: FDS, nodeFlags },
  );
  const { port } = (await peer.wait((m) => m.ready === true)) as { port: number };
  return { pid: peer.pid, port, stop: peer.kill };
}

async function measureOnce(
  kind: TargetKind,
  mode: Mode,
  config: string,
  cert: BenchCertificate,
  sink: Peer,
  sinkPort: number,
  /** When set: heap snapshots (idle and loaded) are written here and compared. */
  snapshotDir?: string,
): Promise<Run> {
  const flags = snapshotDir ? ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${snapshotDir}`] : [];
  const target = await startTarget(kind, mode, config, cert, sinkPort, flags);
  try {
    await sleep(1500);
    const cold = memory(target.pid);

    const baseOpen = (await sinkStats(sink)).open;
    const warm = await openIdle(target.port, mode, WARM_CONNECTIONS, cert.caCert);
    await waitForSink(sink, (open) => open >= baseOpen + WARM_CONNECTIONS, 30_000);
    await closeIdle(warm.clients);
    await waitForSink(sink, (open) => open <= baseOpen, 30_000);
    await sleep(2000);
    const idle = memory(target.pid);
    const idleSock = sockstat();
    const idleSnapshot = snapshotDir ? await heapSnapshot(target.pid, snapshotDir) : null;

    const { clients, openMs } = await openIdle(target.port, mode, CONNECTIONS, cert.caCert);
    await waitForSink(sink, (open) => open >= baseOpen + CONNECTIONS, 60_000);
    await sleep(3000);
    const loaded = memory(target.pid);
    const loadedSock = sockstat();
    const heap =
      snapshotDir && idleSnapshot
        ? heapPerConnection(idleSnapshot, await heapSnapshot(target.pid, snapshotDir), CONNECTIONS)
        : undefined;
    clients.send("status");
    const status = (await clients.wait((m) => "status" in m, 10_000)).status as { closedEarly: number };
    if (status.closedEarly > 0)
      throw new Error(`${status.closedEarly} idle connections were closed by the proxy`);

    await closeIdle(clients);
    await waitForSink(sink, (open) => open <= baseOpen, 60_000);
    await sleep(2000);
    const afterClose = memory(target.pid);
    const per = (k: keyof Memory) => round((loaded[k] - idle[k]) / CONNECTIONS, 2);
    return {
      target: kind,
      mode,
      connections: CONNECTIONS,
      openMs: Math.round(openMs),
      cold,
      idle,
      loaded,
      afterClose,
      kbPerConnection: { rss: per("rssKb"), rssAnon: per("rssAnonKb"), pss: per("pssKb") },
      sockstatMemPages: { idle: idleSock.memPages, loaded: loadedSock.memPages },
      ...(heap ? { heap } : {}),
    };
  } finally {
    await target.stop();
  }
}

interface HeapGroup {
  /** What the nodes are, e.g. "object:TLSSocket", "Object {entryPoint,client,…}", "scope {…}", "(string)". */
  kind: string;
  count: number;
  bytes: number;
}

/**
 * Live V8 heap (the snapshot runs a full GC first), grouped so that a group says whose memory it is:
 * plain objects by their first property names (an access record, a decision, a facts object each
 * have their own), scopes (Contexts) and anonymous closures by the variable names of the scope,
 * other objects by constructor, internal arrays by their role.
 */
function heapGroups(file: string): { totalBytes: number; groups: Map<string, HeapGroup> } {
  interface Snapshot {
    snapshot: {
      meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] };
    };
    nodes: number[];
    edges: number[];
    strings: string[];
  }
  const snap = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
  const meta = snap.snapshot.meta;
  const width = meta.node_fields.length;
  const typeAt = meta.node_fields.indexOf("type");
  const nameAt = meta.node_fields.indexOf("name");
  const sizeAt = meta.node_fields.indexOf("self_size");
  const edgeCountAt = meta.node_fields.indexOf("edge_count");
  const edgeWidth = meta.edge_fields.length;
  const edgeTypeAt = meta.edge_fields.indexOf("type");
  const edgeNameAt = meta.edge_fields.indexOf("name_or_index");
  const edgeToAt = meta.edge_fields.indexOf("to_node");
  const nodeTypes = meta.node_types[0];
  const edgeTypes = meta.edge_types[0];
  const { nodes, edges, strings } = snap;

  // Where each node's edges start in the edge array.
  const firstEdge = new Uint32Array(nodes.length / width + 1);
  for (let n = 0, e = 0; n < nodes.length / width; n++) {
    firstEdge[n] = e;
    e += nodes[n * width + edgeCountAt]! * edgeWidth;
  }
  const edgeNames = (node: number, type: string, limit: number): string[] => {
    const out: string[] = [];
    const end = firstEdge[node]! + nodes[node * width + edgeCountAt]! * edgeWidth;
    for (let e = firstEdge[node]!; e < end && out.length < limit; e += edgeWidth) {
      if (edgeTypes[edges[e + edgeTypeAt]!] === type) out.push(strings[edges[e + edgeNameAt]!] ?? "?");
    }
    return out;
  };
  const edgeTo = (node: number, type: string, name: string): number | null => {
    const end = firstEdge[node]! + nodes[node * width + edgeCountAt]! * edgeWidth;
    for (let e = firstEdge[node]!; e < end; e += edgeWidth) {
      if (edgeTypes[edges[e + edgeTypeAt]!] === type && strings[edges[e + edgeNameAt]!] === name)
        return edges[e + edgeToAt]! / width;
    }
    return null;
  };
  const scopeOf = (context: number) => `{${edgeNames(context, "context", 8).join(",")}}`;

  const groups = new Map<string, HeapGroup>();
  let totalBytes = 0;
  for (let n = 0; n < nodes.length / width; n++) {
    const type = nodeTypes[nodes[n * width + typeAt]!] ?? "?";
    const name = strings[nodes[n * width + nameAt]!] ?? "?";
    const size = nodes[n * width + sizeAt]!;
    totalBytes += size;
    let kind: string;
    if (type === "object" && name === "Object") kind = `Object {${edgeNames(n, "property", 8).join(",")}}`;
    else if (type === "object" && name === "system / Context") kind = `scope ${scopeOf(n)}`;
    else if (type === "closure") {
      const context = edgeTo(n, "internal", "context");
      kind = `closure ${name || "(anonymous)"}${!name && context !== null ? ` in ${scopeOf(context)}` : ""}`;
    } else if (type === "object" || type === "native" || type === "array" || type === "hidden")
      kind = `${type}:${name}`;
    // Strings and code: their names are their contents.
    else kind = `(${type})`;
    const g = groups.get(kind) ?? { kind, count: 0, bytes: 0 };
    g.count++;
    g.bytes += size;
    groups.set(kind, g);
  }
  return { totalBytes, groups };
}

/** Per-connection live heap: the loaded snapshot minus the idle one, divided by the connection count. */
function heapPerConnection(idleFile: string, loadedFile: string, connections: number) {
  const idle = heapGroups(idleFile);
  const loaded = heapGroups(loadedFile);
  const rows = [...loaded.groups.values()]
    .map((g) => {
      const before = idle.groups.get(g.kind);
      return {
        kind: g.kind,
        perConnection: round((g.count - (before?.count ?? 0)) / connections, 2),
        bytesPerConnection: round((g.bytes - (before?.bytes ?? 0)) / connections),
      };
    })
    .filter((r) => r.bytesPerConnection > 0)
    .sort((a, b) => b.bytesPerConnection - a.bytesPerConnection);
  return {
    idleHeapKb: round(idle.totalBytes / 1024),
    loadedHeapKb: round(loaded.totalBytes / 1024),
    heapKbPerConnection: round((loaded.totalBytes - idle.totalBytes) / 1024 / connections, 2),
    top: rows.slice(0, 40),
  };
}

/** Asks the proxy for a heap snapshot (SIGUSR2) and waits until the file is complete. */
async function heapSnapshot(pid: number, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, "SIGUSR2");
  const deadline = Date.now() + 120_000;
  let lastSize = -1;
  let stableSince = 0;
  while (Date.now() < deadline) {
    await sleep(250);
    const name = readdirSync(dir).find((f) => f.endsWith(".heapsnapshot") && !before.has(f));
    if (!name) continue;
    const file = path.join(dir, name);
    const size = statSync(file).size;
    if (size !== lastSize) {
      lastSize = size;
      stableSince = Date.now();
      continue;
    }
    // Written by the proxy's main thread in one go: a size that holds still for a second is the end.
    if (size > 0 && Date.now() - stableSince > 1000) return file;
  }
  throw new Error("the proxy wrote no heap snapshot within 120 s");
}

const MODES = ["passthrough", "terminate"] as const;

function summarise(runs: Run[], kind: TargetKind, mode: Mode) {
  const rs = runs.filter((r) => r.target === kind && r.mode === mode);
  if (rs.length === 0) return null;
  const med = (pick: (r: Run) => number) => round(median(rs.map(pick)), 2);
  return {
    target: kind,
    mode,
    connections: CONNECTIONS,
    runs: rs.length,
    medianKbPerConnection: {
      rss: med((r) => r.kbPerConnection.rss),
      rssAnon: med((r) => r.kbPerConnection.rssAnon),
      pss: med((r) => r.kbPerConnection.pss),
    },
    kbPerConnectionRuns: rs.map((r) => r.kbPerConnection.rss),
    medianColdRssKb: med((r) => r.cold.rssKb),
    medianIdleRssKb: med((r) => r.idle.rssKb),
    medianLoadedRssKb: med((r) => r.loaded.rssKb),
    medianAfterCloseRssKb: med((r) => r.afterClose.rssKb),
    medianOpenMs: med((r) => r.openMs),
    kernelKbPerConnection: med(
      (r) => ((r.sockstatMemPages.loaded - r.sockstatMemPages.idle) * 4) / CONNECTIONS,
    ),
  };
}

async function main(): Promise<void> {
  requireBuild();
  pinSelf();
  if (CONNECTIONS < WANTED)
    console.error(
      `hard open-files limit ${fdLimits().hard}: ${CONNECTIONS} connections instead of ${WANTED}`,
    );
  const baseline = !process.argv.includes("--no-baseline");
  const work = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-memory-"));
  const cert = makeEcdsaCertificate(work, [SNI]);
  const sink = startPeer("sink", {}, { fds: CONNECTIONS + 256 });
  const runs: Run[] = [];
  const profiled: Run[] = [];
  try {
    const { port: sinkPort } = (await sink.wait((m) => m.ready === true)) as { port: number };
    const config = writeConfig(work, cert, sinkPort);
    const once = async (kind: TargetKind, mode: Mode, label: string) => {
      const run = await measureOnce(kind, mode, config, cert, sink, sinkPort);
      runs.push(run);
      console.error(
        `  ${label} ${kind} ${mode}: idle ${run.idle.rssKb} KB, loaded ${run.loaded.rssKb} KB → ${run.kbPerConnection.rss} KB/conn RSS`,
      );
    };
    for (let i = 1; i <= RUNS; i++)
      for (const mode of MODES) await once("tlsroute", mode, `run ${i}/${RUNS}`);
    // One run each: the floor moves little, and it is there for scale, not as a result.
    if (baseline) for (const mode of MODES) await once("node-pipe", mode, "baseline");

    const worst = Math.max(...runs.filter((r) => r.target === "tlsroute").map((r) => r.kbPerConnection.rss));
    if (process.argv.includes("--profile") || worst > PATHOLOGICAL_KB) {
      for (const kind of baseline ? (["tlsroute", "node-pipe"] as const) : (["tlsroute"] as const)) {
        for (const mode of MODES) {
          const dir = path.join(work, `heap-${kind}-${mode}`);
          mkdirSync(dir);
          profiled.push(await measureOnce(kind, mode, config, cert, sink, sinkPort, dir));
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }
  } finally {
    await sink.kill();
    rmSync(work, { recursive: true, force: true });
  }

  const m = machine();
  const summary = (["tlsroute", "node-pipe"] as const)
    .flatMap((kind) => MODES.map((mode) => summarise(runs, kind, mode)))
    .filter((x) => x !== null);

  console.log(
    `\nserve, memory per idle connection, ${CONNECTIONS} connections, fresh process per run; tlsroute median of ${RUNS} (${m.cpu}, ${m.nproc} CPUs, node ${m.node}; load ${m.loadAverage1mAtStart} → ${m.loadAverage1m})`,
  );
  printTable(
    [
      "proxy",
      "mode",
      "KB/conn RSS",
      "anon",
      "PSS",
      "runs (RSS)",
      "RSS cold / idle / loaded / closed (MB)",
      "kernel KB/conn",
    ],
    summary.map((s) => [
      s.target === "tlsroute" ? "tlsroute" : "naive node pipe",
      s.mode,
      String(s.medianKbPerConnection.rss),
      String(s.medianKbPerConnection.rssAnon),
      String(s.medianKbPerConnection.pss),
      s.kbPerConnectionRuns.join(" / "),
      [s.medianColdRssKb, s.medianIdleRssKb, s.medianLoadedRssKb, s.medianAfterCloseRssKb]
        .map((kb) => (kb / 1024).toFixed(1))
        .join(" / "),
      String(round(s.kernelKbPerConnection, 1)),
    ]),
  );
  console.log(
    "reference (peers.md §5c, same box, 2k conns): passthrough HAProxy ~3.7 KB, nginx ~16, sniproxy ~9, naive Node ~2.2; terminated HAProxy ~18 KB, nginx ~40, naive Node ~16",
  );
  for (const run of profiled) {
    const h = run.heap!;
    console.log(
      `\nheap snapshots, ${run.target} ${run.mode}: live V8 heap ${h.idleHeapKb} → ${h.loadedHeapKb} KB = ${h.heapKbPerConnection} KB/conn. Per connection:`,
    );
    printTable(
      ["bytes", "objects", "kind"],
      h.top
        .slice(0, 30)
        .map((r) => [String(r.bytesPerConnection), String(r.perConnection), r.kind.slice(0, 150)]),
    );
  }

  const file = writeResult("serve-idle-memory", {
    benchmark: "serve-idle-memory",
    date: new Date().toISOString(),
    machine: m,
    command: `npm run bench:serve-memory${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    method: {
      connections: CONNECTIONS,
      runs: RUNS,
      warmup: `${WARM_CONNECTIONS} connections opened and closed, then 2 s, before the idle sample`,
      passthrough: "net.connect, write a real ClientHello (SNI a.bench.test), then nothing",
      terminate:
        "tls.connect (SNI a.bench.test), full TLS 1.3 handshake, ECDSA P-256, tickets off, then nothing",
      sample:
        "3 s after the sink holds every connection; RSS/RssAnon from /proc/<pid>/status, Pss from smaps_rollup",
      kbPerConnection: "(loaded − idle) / connections, KB = 1024 bytes",
      kernel:
        "/proc/net/sockstat TCP mem pages × 4 KB, loaded − idle, all sockets (client, proxy and sink) / connections",
      baseline:
        "node-pipe: bench/serve-peers.ts pipe-proxy on CPU 1 (net.createServer or tls.createServer → net.connect → pipe both ways), one run per mode",
    },
    summary,
    runs,
    reference: {
      source: "peers.md §5c (2k connections, fresh process)",
      passthroughKbPerConnection: { haproxy: 3.7, nginx: 16, sniproxy: 9, naiveNode: 2.2 },
      terminatedKbPerConnection: { haproxy: 18, nginx: 40, naiveNode: 16 },
    },
    ...(profiled.length > 0 ? { heapSnapshots: profiled } : {}),
  });
  console.log(`\nwritten: ${file}`);
}

await main();
