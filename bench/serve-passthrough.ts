/**
 * `tlsroute serve` passthrough throughput and proxy CPU per GiB (peers.md §6.2 (a), runtimes.md §4).
 *
 * A load generator sends a real TLS ClientHello with SNI `a.bench.test`, then 1 GiB in 256 KiB
 * writes, then FIN, through a passthrough router to a sink backend that counts the bytes and answers
 * `done:<n>` after the FIN (which also checks that half-close crosses the proxy). Throughput is the
 * payload over the wall time from connect to the answer; the proxy's CPU is utime+stime from
 * /proc/<pid>/stat before and after each run. Median of 5 runs, after one unmeasured warm-up run,
 * interleaved with direct runs (load generator straight to the sink: the ceiling of the load side)
 * and runs through the naive Node proxy (accept → dial → pipe both ways, bench/serve-peers.ts
 * pipe-proxy, in the proxy's place): the floor for a proxy built on node:net, measured under the
 * same conditions. With taskset: the proxy under test on CPU 1, load generator and sink on CPU 0.
 *
 * Run: npm run build && npm run bench:serve-passthrough [-- --runs N] [-- --gib N] [-- --no-baseline]
 *      [-- --profile]
 * Writes bench/results/serve-passthrough.json. `--profile` (or a pathological CPU/GiB above 2 s)
 * adds one run under `node --cpu-prof` and prints where the proxy's time goes.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  cpuSeconds,
  cpuTimes,
  findProfile,
  flag,
  GiB,
  machine,
  median,
  type Peer,
  type ProfileSummary,
  type ProxyProcess,
  pinSelf,
  printProfile,
  printTable,
  requireBuild,
  round,
  sleep,
  startPeer,
  startProxy,
  streamRun,
  summariseCpuProfile,
  writeResult,
} from "./serve-common.ts";

const SNI = "a.bench.test";
const CHUNK = 256 * 1024;
const PATHOLOGICAL_CPU_PER_GIB = 2;

const RUNS = flag("runs", 5);
const BYTES = Math.round(flag("gib", 1) * GiB);

type Target = "tlsroute" | "node-pipe" | "direct";
const TARGETS: readonly Target[] = ["tlsroute", "node-pipe", "direct"];
const LABELS: Record<Target, string> = {
  tlsroute: "through tlsroute",
  "node-pipe": "through a naive node pipe",
  direct: "direct (ceiling)",
};

interface Run {
  target: Target;
  elapsedMs: number;
  mbPerS: number;
  /** CPU of the proxy process (tlsroute or the naive pipe); null for direct runs. */
  proxyCpuS: number | null;
  /** The user-space and kernel parts of proxyCpuS. */
  proxyUserS: number | null;
  proxySystemS: number | null;
  proxyCpuPerGiB: number | null;
  /** Proxy CPU time over wall time: near 1 means the proxy's one thread was the bottleneck. */
  proxyBusy: number | null;
  sinkCpuS: number;
}

function writeConfig(dir: string, sinkPort: number): string {
  const config = {
    entryPoints: {
      bench: { address: "127.0.0.1:0", transport: { respondingTimeouts: { readTimeout: "10s" } } },
    },
    tcp: {
      routers: {
        pass: {
          entryPoints: ["bench"],
          rule: `HostSNI(\`${SNI}\`)`,
          service: "sink",
          tls: { passthrough: true },
        },
      },
      services: { sink: { loadBalancer: { servers: [{ address: `127.0.0.1:${sinkPort}` }] } } },
    },
  };
  const file = path.join(dir, "tlsroute.json");
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

interface Endpoint {
  port: number;
  /** The process whose CPU is measured; null for direct runs. */
  pid: number | null;
}

async function streamOnce(
  target: Target,
  endpoint: Endpoint,
  sink: Peer,
  proxy: ProxyProcess | null,
): Promise<Run> {
  const accessBefore = proxy?.accessCount() ?? 0;
  const before = endpoint.pid === null ? null : cpuTimes(endpoint.pid);
  const sinkBefore = cpuSeconds(sink.pid);
  const result = await streamRun({ port: endpoint.port, bytes: BYTES, chunk: CHUNK, servername: SNI });
  if (target === "tlsroute" && proxy) {
    // The access line is written once both sides closed: its bytes must be exactly what was sent.
    await proxy.waitForAccess(accessBefore + 1);
    const line = proxy.recentAccess[proxy.recentAccess.length - 1]!;
    if (line.reason !== "closed" || line.mode !== "passthrough" || line.bytesIn !== result.sent)
      throw new Error(`unexpected access line: ${JSON.stringify(line)}`);
  } else if (endpoint.pid !== null) {
    await sleep(100);
  }
  const sinkCpuS = cpuSeconds(sink.pid) - sinkBefore;
  const elapsedMs = result.elapsedMs;
  let cpu: Pick<Run, "proxyCpuS" | "proxyUserS" | "proxySystemS" | "proxyCpuPerGiB" | "proxyBusy"> = {
    proxyCpuS: null,
    proxyUserS: null,
    proxySystemS: null,
    proxyCpuPerGiB: null,
    proxyBusy: null,
  };
  if (endpoint.pid !== null && before) {
    const after = cpuTimes(endpoint.pid);
    const user = after.user - before.user;
    const system = after.system - before.system;
    cpu = {
      proxyCpuS: round(user + system, 2),
      proxyUserS: round(user, 2),
      proxySystemS: round(system, 2),
      proxyCpuPerGiB: round((user + system) / (BYTES / GiB), 3),
      proxyBusy: round((user + system) / (elapsedMs / 1000), 2),
    };
  }
  return {
    target,
    elapsedMs: round(elapsedMs, 1),
    mbPerS: round(BYTES / (elapsedMs / 1000) / 1e6),
    ...cpu,
    sinkCpuS: round(sinkCpuS, 2),
  };
}

async function profileRun(config: string, sink: Peer, work: string): Promise<ProfileSummary> {
  const dir = path.join(work, "profile");
  mkdirSync(dir, { recursive: true });
  const proxy = await startProxy({
    config,
    entryPoints: ["bench"],
    nodeFlags: ["--cpu-prof", `--cpu-prof-dir=${dir}`, "--cpu-prof-interval=250"],
  });
  try {
    await streamOnce("tlsroute", { port: proxy.ports.get("bench")!, pid: proxy.pid }, sink, proxy);
  } finally {
    await proxy.stop();
  }
  return summariseCpuProfile(findProfile(dir, ".cpuprofile"));
}

function summarise(runs: Run[], target: Target) {
  const rs = runs.filter((r) => r.target === target);
  if (rs.length === 0) return null;
  const cpu = rs.map((r) => r.proxyCpuPerGiB).filter((v): v is number => v !== null);
  const perGiB = (pick: (r: Run) => number | null) =>
    cpu.length ? round(median(rs.map((r) => (pick(r) ?? 0) / (BYTES / GiB))), 3) : null;
  return {
    target,
    runs: rs.length,
    medianMBps: median(rs.map((r) => r.mbPerS)),
    minMBps: Math.min(...rs.map((r) => r.mbPerS)),
    maxMBps: Math.max(...rs.map((r) => r.mbPerS)),
    medianProxyCpuPerGiB: cpu.length ? round(median(cpu), 3) : null,
    minProxyCpuPerGiB: cpu.length ? Math.min(...cpu) : null,
    maxProxyCpuPerGiB: cpu.length ? Math.max(...cpu) : null,
    // Split of the CPU: a proxy that copies bytes spends most of it in the kernel.
    medianProxyUserPerGiB: perGiB((r) => r.proxyUserS),
    medianProxySystemPerGiB: perGiB((r) => r.proxySystemS),
    medianProxyBusy: cpu.length ? median(rs.map((r) => r.proxyBusy ?? 0)) : null,
  };
}

async function main(): Promise<void> {
  requireBuild();
  pinSelf();
  const baseline = !process.argv.includes("--no-baseline");
  const work = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-passthrough-"));
  const sink = startPeer("sink", {});
  let proxy: ProxyProcess | null = null;
  let pipe: Peer | null = null;
  const runs: Run[] = [];
  let profile: ProfileSummary | null = null;
  try {
    const { port: sinkPort } = (await sink.wait((m) => m.ready === true)) as { port: number };
    const config = writeConfig(work, sinkPort);
    proxy = await startProxy({ config, entryPoints: ["bench"] });
    const endpoints = new Map<Target, Endpoint>([
      ["tlsroute", { port: proxy.ports.get("bench")!, pid: proxy.pid }],
      ["direct", { port: sinkPort, pid: null }],
    ]);
    if (baseline) {
      pipe = startPeer("pipe-proxy", { mode: "passthrough", backendPort: sinkPort }, { cpu: 1 });
      const { port } = (await pipe.wait((m) => m.ready === true)) as { port: number };
      endpoints.set("node-pipe", { port, pid: pipe.pid });
    }
    console.error(
      `tlsroute pid ${proxy.pid} on 127.0.0.1:${proxy.ports.get("bench")}, sink on 127.0.0.1:${sinkPort}`,
    );

    const targets = TARGETS.filter((t) => endpoints.has(t));
    // Warm-up (JIT, socket buffers), not recorded.
    for (const t of targets) await streamOnce(t, endpoints.get(t)!, sink, proxy);
    for (let i = 0; i < RUNS; i++) {
      // Interleaved, so drift in the machine's load touches every series alike.
      for (const t of targets) runs.push(await streamOnce(t, endpoints.get(t)!, sink, proxy));
      const last = runs.filter((r) => r.target === "tlsroute").at(-1)!;
      console.error(`  run ${i + 1}/${RUNS}: tlsroute ${last.mbPerS} MB/s, ${last.proxyCpuPerGiB} s CPU/GiB`);
    }
    await proxy.stop();
    proxy = null;
    await pipe?.kill();
    pipe = null;

    const cpuPerGiB = summarise(runs, "tlsroute")?.medianProxyCpuPerGiB ?? 0;
    if (process.argv.includes("--profile") || cpuPerGiB > PATHOLOGICAL_CPU_PER_GIB) {
      profile = await profileRun(config, sink, work);
    }
  } finally {
    await proxy?.stop();
    await pipe?.kill();
    await sink.kill();
    rmSync(work, { recursive: true, force: true });
  }

  const m = machine();
  const summaries = TARGETS.map((t) => summarise(runs, t)).filter((x) => x !== null);
  console.log(
    `\nserve passthrough, ${BYTES / GiB} GiB in ${CHUNK / 1024} KiB writes, median of ${RUNS} (${m.cpu}, ${m.nproc} CPUs, node ${m.node}; ${m.pinned ? "pinned" : `not pinned: ${m.pinning}`}; load ${m.loadAverage1mAtStart} → ${m.loadAverage1m})`,
  );
  printTable(
    ["", "MB/s (median)", "runs", "proxy CPU s/GiB (median)", "user / sys", "runs (s/GiB)", "proxy busy"],
    summaries.map((s) => {
      const rs = runs.filter((r) => r.target === s.target);
      const hasCpu = s.medianProxyCpuPerGiB !== null;
      return [
        LABELS[s.target],
        String(s.medianMBps),
        rs.map((r) => r.mbPerS).join(" / "),
        hasCpu ? String(s.medianProxyCpuPerGiB) : "—",
        hasCpu ? `${s.medianProxyUserPerGiB} / ${s.medianProxySystemPerGiB}` : "—",
        hasCpu ? rs.map((r) => r.proxyCpuPerGiB).join(" / ") : "—",
        hasCpu ? rs.map((r) => r.proxyBusy).join(" / ") : "—",
      ];
    }),
  );
  console.log(
    "reference (peers.md §5c, same box, curl over TLS): HAProxy 0.38 s/GiB, nginx 0.41, naive Node pipe 0.64",
  );
  if (profile) printProfile(profile);

  const file = writeResult("serve-passthrough", {
    benchmark: "serve-passthrough",
    date: new Date().toISOString(),
    machine: m,
    command: `npm run bench:serve-passthrough${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    method: {
      bytes: BYTES,
      chunk: CHUNK,
      runs: RUNS,
      warmup: "one run per target, not recorded",
      throughput: "payload bytes / wall time from connect to the sink's done:<n> answer, MB = 10^6 bytes",
      cpu: "utime+stime of the proxy process from /proc/<pid>/stat, before the load generator starts and after the access line",
      baseline:
        "node-pipe: bench/serve-peers.ts pipe-proxy (net.createServer → net.connect → pipe both ways) on CPU 1",
    },
    summaries,
    runs,
    reference: {
      haproxyCpuPerGiB: 0.38,
      nginxCpuPerGiB: 0.41,
      naiveNodeCpuPerGiB: 0.64,
      source: "peers.md §5c",
    },
    ...(profile ? { profile } : {}),
  });
  console.log(`\nwritten: ${file}`);
}

await main();
