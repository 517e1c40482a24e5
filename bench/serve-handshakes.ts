/**
 * `tlsroute serve` TLS termination: new connections per second and proxy CPU per 1,000 full
 * handshakes (peers.md §6.2 (b), runtimes.md §4).
 *
 * The proxy terminates with an ECDSA P-256 certificate (made with openssl in a temp dir, signed by a
 * throwaway CA), TLS options with session tickets off, and forwards the decrypted bytes to a plain
 * echo backend. Two clients, each with no session resumption:
 *   - node: N concurrent loops (default 8) of tls.connect (SNI a.bench.test, chain verified) → send 1
 *     byte → read the echo → destroy, for 10 s: the full path, backend connect included;
 *   - s_time: `openssl s_time -connect 127.0.0.1:P -new -time 10` (sequential, no SNI, so the
 *     catch-all router and the default certificate, the same key).
 * Proxy CPU is utime+stime from /proc/<pid>/stat around each run. Median of 3 rounds after a 3 s
 * warm-up. For orientation the same Node client also runs against a bare node:tls echo server in the
 * proxy's place (same certificate, CPU 1): the floor for any terminator built on node:tls.
 *
 * Run: npm run build && npm run bench:serve-handshakes [-- --rounds N] [-- --seconds S]
 *      [-- --concurrency N] [-- --no-baseline] [-- --profile]
 * Writes bench/results/serve-handshakes.json. `--profile` (or a pathological rate under 200/s)
 * adds a Node-client run under `node --cpu-prof` and prints where the proxy's time goes.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  cpuTimes,
  findProfile,
  flag,
  handshakeLoad,
  machine,
  makeEcdsaCertificate,
  median,
  PINNING,
  type ProfileSummary,
  type ProxyProcess,
  pinSelf,
  printProfile,
  printTable,
  requireBuild,
  round,
  sleep,
  sockstat,
  startPeer,
  startProxy,
  summariseCpuProfile,
  terminationConfig,
  writeResult,
} from "./serve-common.ts";

const SNI = "a.bench.test";
const PATHOLOGICAL_RATE = 200;

const ROUNDS = flag("rounds", 3);
const SECONDS = flag("seconds", 10);
const CONCURRENCY = flag("concurrency", 8);
const WARMUP_SECONDS = 3;
const SOURCES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 1}`);

interface Measure {
  client: "node" | "s_time";
  target: "tlsroute" | "node-tls-echo";
  handshakes: number;
  errors: number;
  firstError: string | null;
  wallS: number;
  perSecond: number;
  /** Proxy (or baseline server) CPU per 1,000 handshakes, seconds (= ms per handshake). */
  cpuPer1000: number;
  userPer1000: number;
  systemPer1000: number;
  /** CPU time over wall time of the process under test: near 1 means it was the bottleneck. */
  busy: number;
  /** s_time's own summary line, when it is the client. */
  sTimeLine?: string;
}

function measured(
  client: Measure["client"],
  target: Measure["target"],
  pid: number,
  before: { user: number; system: number },
  result: {
    handshakes: number;
    errors: number;
    firstError: string | null;
    wallS: number;
    sTimeLine?: string;
  },
): Measure {
  const after = cpuTimes(pid);
  const user = after.user - before.user;
  const system = after.system - before.system;
  const n = Math.max(1, result.handshakes);
  return {
    client,
    target,
    handshakes: result.handshakes,
    errors: result.errors,
    firstError: result.firstError,
    wallS: round(result.wallS, 2),
    perSecond: round(result.handshakes / result.wallS),
    cpuPer1000: round(((user + system) / n) * 1000, 3),
    userPer1000: round((user / n) * 1000, 3),
    systemPer1000: round((system / n) * 1000, 3),
    busy: round((user + system) / result.wallS, 2),
    ...(result.sTimeLine ? { sTimeLine: result.sTimeLine } : {}),
  };
}

async function nodeClient(
  port: number,
  caFile: string,
  seconds: number,
): Promise<{ handshakes: number; errors: number; firstError: string | null; wallS: number }> {
  const r = await handshakeLoad({
    port,
    servername: SNI,
    ca: caFile,
    concurrency: CONCURRENCY,
    seconds,
    sources: SOURCES,
  });
  return { handshakes: r.count, errors: r.errors, firstError: r.firstError, wallS: r.elapsedMs / 1000 };
}

/** `openssl s_time -new` on CPU 0; the rate uses our own wall clock (s_time rounds to whole seconds). */
async function sTime(port: number, seconds: number) {
  const argv = [
    ...(PINNING.pinned ? ["taskset", "-c", "0"] : []),
    "openssl",
    "s_time",
    "-connect",
    `127.0.0.1:${port}`,
    "-new",
    "-time",
    String(seconds),
  ];
  const started = performance.now();
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    out += chunk;
  });
  child.stderr.resume();
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  const wallS = (performance.now() - started) / 1000;
  const line = /^(\d+) connections in [\d.]+s;.*$/m.exec(out);
  if (code !== 0 || !line) throw new Error(`openssl s_time failed (exit ${code}):\n${out.slice(-2000)}`);
  return { handshakes: Number(line[1]), errors: 0, firstError: null, wallS, sTimeLine: line[0] };
}

async function proxyRun(
  proxy: ProxyProcess,
  client: Measure["client"],
  caFile: string,
  seconds: number,
): Promise<Measure> {
  const port = proxy.ports.get("bench")!;
  const accessBefore = proxy.accessCount();
  const closedBefore = proxy.reasons.closed ?? 0;
  const before = cpuTimes(proxy.pid);
  const result = client === "node" ? await nodeClient(port, caFile, seconds) : await sTime(port, seconds);
  // Every finished connection writes its access line; wait for them so their cost is counted too.
  await proxy.waitForAccess(accessBefore + result.handshakes, 15_000).catch(() => {});
  await sleep(200);
  const m = measured(client, "tlsroute", proxy.pid, before, result);
  const closed = (proxy.reasons.closed ?? 0) - closedBefore;
  if (closed < result.handshakes * 0.99)
    throw new Error(
      `only ${closed} of ${result.handshakes} connections ended "closed": ${JSON.stringify(proxy.reasons)}\n${proxy.recentAccess
        .slice(-3)
        .map((l) => JSON.stringify(l))
        .join("\n")}`,
    );
  return m;
}

type HandshakeProfile = ProfileSummary & { handshakes: number; usPerHandshake: Record<string, number> };

async function profileRun(config: string, caFile: string, work: string): Promise<HandshakeProfile> {
  const dir = path.join(work, "profile");
  mkdirSync(dir, { recursive: true });
  const proxy = await startProxy({
    config,
    entryPoints: ["bench"],
    nodeFlags: ["--cpu-prof", `--cpu-prof-dir=${dir}`, "--cpu-prof-interval=250"],
  });
  let handshakes = 0;
  try {
    handshakes += (await proxyRun(proxy, "node", caFile, WARMUP_SECONDS)).handshakes;
    handshakes += (await proxyRun(proxy, "node", caFile, SECONDS)).handshakes;
  } finally {
    await proxy.stop();
  }
  const summary = summariseCpuProfile(findProfile(dir, ".cpuprofile"));
  // Main-thread time per handshake for the biggest inclusive entries (startup is in the profile too).
  const usPerHandshake: Record<string, number> = {};
  for (const row of summary.inclusive.slice(0, 30))
    usPerHandshake[row.fn] = round((row.ms * 1000) / handshakes);
  return { ...summary, handshakes, usPerHandshake };
}

async function main(): Promise<void> {
  requireBuild();
  pinSelf();
  const work = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-handshakes-"));
  const cert = makeEcdsaCertificate(work, [SNI]);
  const echo = startPeer("echo", {});
  let proxy: ProxyProcess | null = null;
  const measures: Measure[] = [];
  let profile: HandshakeProfile | null = null;
  const timeWait: number[] = [];
  try {
    const { port: echoPort } = (await echo.wait((m) => m.ready === true)) as { port: number };
    const config = terminationConfig(work, cert, echoPort, SNI);
    proxy = await startProxy({ config, entryPoints: ["bench"] });
    console.error(
      `proxy pid ${proxy.pid} on 127.0.0.1:${proxy.ports.get("bench")}, echo on 127.0.0.1:${echoPort}`,
    );

    // Correctness gate and warm-up: chain verified for SNI, TLS 1.3, echo through, both routers used.
    await proxyRun(proxy, "node", cert.caCert, WARMUP_SECONDS);
    const line = proxy.recentAccess[proxy.recentAccess.length - 1]!;
    if (line.router !== "exact" || line.tlsVersion !== "TLSv1.3" || line.mode !== "terminate")
      throw new Error(`unexpected access line after warm-up: ${JSON.stringify(line)}`);
    await proxyRun(proxy, "s_time", cert.caCert, 1);
    const fallback = proxy.recentAccess[proxy.recentAccess.length - 1]!;
    if (fallback.router !== "fallback")
      throw new Error(`s_time did not reach the catch-all: ${JSON.stringify(fallback)}`);
    const tlsVersions = { node: line.tlsVersion, sTime: fallback.tlsVersion };

    for (let round_ = 1; round_ <= ROUNDS; round_++) {
      for (const client of ["node", "s_time"] as const) {
        const m = await proxyRun(proxy, client, cert.caCert, SECONDS);
        measures.push(m);
        timeWait.push(sockstat().timeWait);
        console.error(
          `  round ${round_}/${ROUNDS} ${client}: ${m.perSecond}/s, ${m.cpuPer1000} s CPU per 1,000 (busy ${m.busy})`,
        );
      }
    }
    const reasons = { ...proxy.reasons };
    await proxy.stop();
    proxy = null;

    // The floor: the same Node client against a bare node:tls echo server where the proxy was.
    if (!process.argv.includes("--no-baseline")) {
      const baseline = startPeer("tls-echo", { cert: cert.cert, key: cert.key }, { cpu: 1 });
      try {
        const { port } = (await baseline.wait((m) => m.ready === true)) as { port: number };
        await nodeClient(port, cert.caCert, WARMUP_SECONDS);
        for (let round_ = 1; round_ <= ROUNDS; round_++) {
          const before = cpuTimes(baseline.pid);
          const result = await nodeClient(port, cert.caCert, SECONDS);
          await sleep(200);
          const m = measured("node", "node-tls-echo", baseline.pid, before, result);
          measures.push(m);
          console.error(
            `  baseline round ${round_}/${ROUNDS}: ${m.perSecond}/s, ${m.cpuPer1000} s CPU per 1,000`,
          );
        }
      } finally {
        await baseline.kill();
      }
    }

    const medianRate = median(
      measures.filter((m) => m.target === "tlsroute" && m.client === "node").map((m) => m.perSecond),
    );
    if (process.argv.includes("--profile") || medianRate < PATHOLOGICAL_RATE)
      profile = await profileRun(config, cert.caCert, work);

    report(measures, reasons, tlsVersions, timeWait, profile);
  } finally {
    await proxy?.stop();
    await echo.kill();
    rmSync(work, { recursive: true, force: true });
  }
}

function report(
  measures: Measure[],
  reasons: Record<string, number>,
  tlsVersions: Record<string, unknown>,
  timeWait: number[],
  profile: HandshakeProfile | null,
): void {
  const m = machine();
  const groups = [
    { label: "tlsroute, node client", client: "node", target: "tlsroute" },
    { label: "tlsroute, s_time -new", client: "s_time", target: "tlsroute" },
    { label: "bare node:tls echo, node client", client: "node", target: "node-tls-echo" },
  ] as const;
  const summaries = groups
    .map((g) => {
      const rs = measures.filter((x) => x.client === g.client && x.target === g.target);
      if (rs.length === 0) return null;
      return {
        ...g,
        runs: rs,
        medianPerSecond: median(rs.map((r) => r.perSecond)),
        medianCpuPer1000: round(median(rs.map((r) => r.cpuPer1000)), 3),
        medianUserPer1000: round(median(rs.map((r) => r.userPer1000)), 3),
        medianSystemPer1000: round(median(rs.map((r) => r.systemPer1000)), 3),
        medianBusy: median(rs.map((r) => r.busy)),
        errors: rs.reduce((sum, r) => sum + r.errors, 0),
      };
    })
    .filter((s) => s !== null);

  console.log(
    `\ntlsroute serve, TLS termination (ECDSA P-256, no resumption) → echo backend; ${SECONDS} s runs, median of ${ROUNDS}; node client c=${CONCURRENCY} (${m.cpu}, ${m.nproc} CPUs, node ${m.node}, OpenSSL ${m.nodeOpenssl}; ${m.pinned ? "pinned" : `not pinned: ${m.pinning}`}; load ${m.loadAverage1mAtStart} → ${m.loadAverage1m})`,
  );
  printTable(
    ["", "conn/s (median)", "runs", "CPU s per 1,000 (median)", "user / sys", "busy", "errors"],
    summaries.map((s) => [
      s.label,
      String(s.medianPerSecond),
      s.runs.map((r) => r.perSecond).join(" / "),
      `${s.medianCpuPer1000}`,
      `${s.medianUserPer1000} / ${s.medianSystemPer1000}`,
      String(s.medianBusy),
      String(s.errors),
    ]),
  );
  console.log(
    "reference (peers.md §5c, same box, s_time -new sequential): HAProxy ~940 conn/s, nginx ~1,010, naive Node ~710; OpenSSL ECDSA sign 15 µs + X25519 26 µs per handshake",
  );
  if (profile) {
    printProfile(profile);
    console.log(
      `${profile.handshakes} handshakes in the profiled runs: initRead (OpenSSL's server flight, fed the peeked ClientHello) ${round(((profile.self.find((r) => r.fn.startsWith("initRead"))?.ms ?? 0) * 1000) / profile.handshakes)} µs self per handshake; all sampled main-thread time ${round((profile.sampledMs * 1000) / profile.handshakes)} µs per handshake (startup included)`,
    );
  }

  const file = writeResult("serve-handshakes", {
    benchmark: "serve-handshakes",
    date: new Date().toISOString(),
    machine: m,
    command: `npm run bench:serve-handshakes${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    method: {
      certificate: "ECDSA P-256 leaf signed by a throwaway CA (openssl req -x509 -CA)",
      tls: "TLS options default: minVersion VersionTLS12, disableSessionTickets true; clients never resume",
      negotiated: tlsVersions,
      backend: "plain TCP echo on CPU 0",
      nodeClient: `${CONCURRENCY} concurrent loops: tls.connect (SNI ${SNI}, CA verified) → write 1 byte → read echo → destroy; source addresses 127.0.0.1-8`,
      sTime: `openssl s_time -connect 127.0.0.1:P -new -time ${SECONDS} (no SNI: catch-all router, default certificate)`,
      seconds: SECONDS,
      rounds: ROUNDS,
      warmup: `${WARMUP_SECONDS} s node client + 1 s s_time, not recorded`,
      cpu: "utime+stime of the process under test from /proc/<pid>/stat around each run, access lines included",
    },
    summaries: summaries.map(({ runs: _runs, ...s }) => s),
    runs: measures,
    accessReasons: reasons,
    timeWaitAfterRuns: timeWait,
    reference: {
      source: "peers.md §5c/§5b",
      sTimeSequentialConnPerS: { haproxy: 940, nginx: 1010, naiveNode: 710, direct: 970 },
      opensslEcdsaP256SignUs: 15.3,
      opensslX25519DeriveUs: 26,
    },
    ...(profile ? { profile } : {}),
  });
  console.log(`\nwritten: ${file}`);
}

await main();
