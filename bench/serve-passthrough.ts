/**
 * `tlsroute serve` passthrough throughput and proxy CPU per GiB (peers.md §6.2 (a), runtimes.md §4).
 *
 * A load generator sends a real TLS ClientHello with SNI `a.bench.test`, then 1 GiB in 256 KiB
 * writes, then FIN, through a passthrough router to a sink backend that counts the bytes and answers
 * `done:<n>` after the FIN (which also checks that half-close crosses the proxy). Throughput is the
 * payload over the wall time from connect to the answer; the proxy's CPU is utime+stime from
 * /proc/<pid>/stat before and after each run. Median of 5 runs, after one unmeasured warm-up run,
 * interleaved with direct runs (load generator straight to the sink: the ceiling of the load side).
 * With taskset: proxy on CPU 1, load generator and sink on CPU 0.
 *
 * Run: npm run build && npm run bench:serve-passthrough [-- --runs N] [-- --gib N] [-- --profile]
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
  startPeer,
  startProxy,
  summariseCpuProfile,
  writeResult,
} from "./serve-common.ts";

const SNI = "a.bench.test";
const CHUNK = 256 * 1024;
const PATHOLOGICAL_CPU_PER_GIB = 2;

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const value = i === -1 ? Number.NaN : Number(process.argv[i + 1]);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

const RUNS = flag("runs", 5);
const BYTES = Math.round(flag("gib", 1) * GiB);

interface Run {
  target: "proxy" | "direct";
  elapsedMs: number;
  mbPerS: number;
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

async function streamOnce(
  target: "proxy" | "direct",
  port: number,
  sink: Peer,
  proxy: ProxyProcess,
): Promise<Run> {
  const accessBefore = proxy.accessCount();
  const proxyBefore = cpuTimes(proxy.pid);
  const sinkBefore = cpuSeconds(sink.pid);
  const gen = startPeer("stream", { port, bytes: BYTES, chunk: CHUNK, servername: SNI });
  const message = await gen.wait((m) => "result" in m || "error" in m, 300_000);
  await gen.exited;
  if ("error" in message) throw new Error(`load generator failed: ${String(message.error)}`);
  const result = message.result as { elapsedMs: number; answer: string; sent: number };
  if (result.answer !== `done:${result.sent}`)
    throw new Error(`the sink answered "${result.answer}", expected "done:${result.sent}"`);
  if (target === "proxy") {
    // The access line is written once both sides closed: its bytes must be exactly what was sent.
    await proxy.waitForAccess(accessBefore + 1);
    const line = proxy.recentAccess[proxy.recentAccess.length - 1]!;
    if (line.reason !== "closed" || line.mode !== "passthrough" || line.bytesIn !== result.sent)
      throw new Error(`unexpected access line: ${JSON.stringify(line)}`);
  }
  const proxyAfter = cpuTimes(proxy.pid);
  const proxyUserS = proxyAfter.user - proxyBefore.user;
  const proxySystemS = proxyAfter.system - proxyBefore.system;
  const proxyCpuS = proxyUserS + proxySystemS;
  const sinkCpuS = cpuSeconds(sink.pid) - sinkBefore;
  const elapsedMs = result.elapsedMs;
  const isProxy = target === "proxy";
  return {
    target,
    elapsedMs: round(elapsedMs, 1),
    mbPerS: round(BYTES / (elapsedMs / 1000) / 1e6),
    proxyCpuS: isProxy ? round(proxyCpuS, 2) : null,
    proxyUserS: isProxy ? round(proxyUserS, 2) : null,
    proxySystemS: isProxy ? round(proxySystemS, 2) : null,
    proxyCpuPerGiB: isProxy ? round(proxyCpuS / (BYTES / GiB), 3) : null,
    proxyBusy: isProxy ? round(proxyCpuS / (elapsedMs / 1000), 2) : null,
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
    await streamOnce("proxy", proxy.ports.get("bench")!, sink, proxy);
  } finally {
    await proxy.stop();
  }
  return summariseCpuProfile(findProfile(dir, ".cpuprofile"));
}

async function main(): Promise<void> {
  requireBuild();
  pinSelf();
  const work = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-passthrough-"));
  const sink = startPeer("sink", {});
  let proxy: ProxyProcess | null = null;
  const runs: Run[] = [];
  let profile: ProfileSummary | null = null;
  try {
    const { port: sinkPort } = (await sink.wait((m) => m.ready === true)) as { port: number };
    const config = writeConfig(work, sinkPort);
    proxy = await startProxy({ config, entryPoints: ["bench"] });
    const proxyPort = proxy.ports.get("bench")!;
    console.error(`proxy pid ${proxy.pid} on 127.0.0.1:${proxyPort}, sink on 127.0.0.1:${sinkPort}`);

    // Warm-up (JIT, socket buffers), not recorded.
    await streamOnce("direct", sinkPort, sink, proxy);
    await streamOnce("proxy", proxyPort, sink, proxy);
    for (let i = 0; i < RUNS; i++) {
      // Interleaved, so drift in the machine's load touches both series alike.
      runs.push(await streamOnce("proxy", proxyPort, sink, proxy));
      runs.push(await streamOnce("direct", sinkPort, sink, proxy));
      const last = runs[runs.length - 2]!;
      console.error(`  run ${i + 1}/${RUNS}: proxy ${last.mbPerS} MB/s, ${last.proxyCpuPerGiB} s CPU/GiB`);
    }
    await proxy.stop();
    proxy = null;

    const proxyRuns = runs.filter((r) => r.target === "proxy");
    const cpuPerGiB = median(proxyRuns.map((r) => r.proxyCpuPerGiB!));
    if (process.argv.includes("--profile") || cpuPerGiB > PATHOLOGICAL_CPU_PER_GIB) {
      profile = await profileRun(config, sink, work);
    }
  } finally {
    await proxy?.stop();
    await sink.kill();
    rmSync(work, { recursive: true, force: true });
  }

  const m = machine();
  const series = (target: "proxy" | "direct") => runs.filter((r) => r.target === target);
  const summary = (target: "proxy" | "direct") => {
    const rs = series(target);
    const cpu = rs.map((r) => r.proxyCpuPerGiB).filter((v): v is number => v !== null);
    return {
      medianMBps: median(rs.map((r) => r.mbPerS)),
      minMBps: Math.min(...rs.map((r) => r.mbPerS)),
      maxMBps: Math.max(...rs.map((r) => r.mbPerS)),
      medianProxyCpuPerGiB: cpu.length ? round(median(cpu), 3) : null,
      minProxyCpuPerGiB: cpu.length ? Math.min(...cpu) : null,
      maxProxyCpuPerGiB: cpu.length ? Math.max(...cpu) : null,
      // Split of the median CPU: a proxy that copies bytes spends most of it in the kernel.
      medianProxyUserPerGiB: cpu.length
        ? round(median(rs.map((r) => r.proxyUserS! / (BYTES / GiB))), 3)
        : null,
      medianProxySystemPerGiB: cpu.length
        ? round(median(rs.map((r) => r.proxySystemS! / (BYTES / GiB))), 3)
        : null,
    };
  };
  const proxySummary = summary("proxy");
  const directSummary = summary("direct");

  console.log(
    `\ntlsroute serve passthrough, ${BYTES / GiB} GiB in ${CHUNK / 1024} KiB writes, median of ${RUNS} (${m.cpu}, ${m.nproc} CPUs, node ${m.node}; ${m.pinned ? "pinned" : `not pinned: ${m.pinning}`})`,
  );
  printTable(
    ["", "median", "runs (MB/s)", "proxy CPU/GiB (median)", "runs (s/GiB)", "proxy busy"],
    (["proxy", "direct"] as const).map((t) => {
      const s = t === "proxy" ? proxySummary : directSummary;
      return [
        t === "proxy" ? "through tlsroute" : "direct (ceiling)",
        `${s.medianMBps} MB/s`,
        series(t)
          .map((r) => r.mbPerS)
          .join(" / "),
        s.medianProxyCpuPerGiB === null ? "—" : `${s.medianProxyCpuPerGiB} s`,
        t === "proxy"
          ? series(t)
              .map((r) => r.proxyCpuPerGiB)
              .join(" / ")
          : "—",
        t === "proxy"
          ? series(t)
              .map((r) => r.proxyBusy)
              .join(" / ")
          : "—",
      ];
    }),
  );
  console.log("reference (peers.md §5c, same box): HAProxy 0.38 s/GiB, nginx 0.41, naive Node pipe 0.64");
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
      warmup: "one direct and one proxied run, not recorded",
      throughput: "payload bytes / wall time from connect to the sink's done:<n> answer, MB = 10^6 bytes",
      cpu: "proxy utime+stime from /proc/<pid>/stat, before the load generator starts and after the access line",
    },
    proxy: proxySummary,
    direct: directSummary,
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
