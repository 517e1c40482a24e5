/**
 * A/B of TLS termination cost: `tlsroute serve` from one or more source trees (this one, a worktree of
 * another commit, a tree with an experiment in it) and reference proxies, each on CPU 1, measured in
 * interleaved rounds with the same load, so that a change of a few percent shows through the noise of
 * a shared machine. This is how the per-connection costs in docs/benchmarks.md ("Reference rows") were
 * taken apart: switch one thing off in a copy, compare it with the original and the floor.
 *
 * Targets (positional): `node:DIR`, `bun:DIR`, `deno:DIR` = serve from DIR (`.` for this tree; Node runs
 * DIR's dist/, so build it there first); `floor:node`, `floor:bun` = the naive proxy that peeks like a
 * router (bench/serve-peers.ts pipe-proxy), `+parse`, `+chain` and `+terminator` add tlsroute's
 * ClientHello parsing, its await-handshake-then-dial order and its own terminator (src/proxy/terminate.ts)
 * to it (`floor:bun+parse+terminator`); `native:bun` = Bun's own sockets and TLS (bun-native), and
 * `native:bun+upgrade` the same listening plain, peeking, then starting TLS on the socket (`upgradeTLS`
 * as the server), as tlsroute does on Bun.
 * Load: 8 Node clients on CPU 0 looping tls.connect (SNI, verified) → 1 byte → echo → close.
 * Reported: proxy CPU per handshake (utime+stime from /proc), median and every round, and the share of
 * it spent on the main thread (the rest: GC, JIT and allocator threads).
 *
 * Run: npm run bench:ab -- [--rounds 4] [--seconds 4] bun:. bun:/tmp/other floor:bun
 *      (e.g. `git worktree add /tmp/other HEAD~1 && ln -s $PWD/node_modules /tmp/other/`)
 * Writes bench/results/ab-handshakes.json.
 */
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  cpuTimes,
  flag,
  handshakeLoad,
  machine,
  makeEcdsaCertificate,
  median,
  type Peer,
  pinSelf,
  type Runtime,
  round,
  sleep,
  startPeer,
  startProxy,
  statCpuTimes,
  terminationConfig,
  writeResult,
} from "./serve-common.ts";

const ROUNDS = flag("rounds", 4);
const SECONDS = flag("seconds", 4);
const SNI = "a.bench.test";
const TARGETS = process.argv
  .slice(2)
  .filter((arg, i, all) => !arg.startsWith("--") && !all[i - 1]?.startsWith("--"));

interface Running {
  target: string;
  pid: number;
  port: number;
  stop(): Promise<unknown>;
}

/** CPU seconds per thread name (numbers stripped, so a pool of threads counts as one). */
function threadCpu(pid: number): Map<string, number> {
  const seconds = new Map<string, number>();
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")).replace(/[0-9]+$/, "");
      const { user, system } = statCpuTimes(stat);
      seconds.set(name, (seconds.get(name) ?? 0) + user + system);
    } catch {
      // The thread ended meanwhile.
    }
  }
  return seconds;
}

async function main(): Promise<void> {
  if (TARGETS.length === 0) throw new Error("name at least one target, e.g. bun:. floor:bun");
  pinSelf();
  const work = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-ab-"));
  const cert = makeEcdsaCertificate(work, [SNI]);
  const echo = startPeer("echo", {});
  const echoPort = Number((await echo.wait((m) => m.ready === true)).port);
  const config = terminationConfig(work, cert, echoPort, SNI);

  const start = async (target: string): Promise<Running> => {
    const [kind = "", where = "."] = target.split(":");
    if (kind === "floor" || kind === "native") {
      // floor:bun+parse+chain: the floor with some of tlsroute's steps added (serve-peers.ts pipe-proxy).
      const [runtime, ...added] = where.split("+");
      const steps = {
        parse: added.includes("parse"),
        chain: added.includes("chain") || added.includes("terminator"),
        terminator: added.includes("terminator"),
        upgrade: added.includes("upgrade"),
      };
      const peer: Peer = startPeer(
        kind === "native" ? "bun-native" : "pipe-proxy",
        { mode: "terminate", backendPort: echoPort, cert: cert.cert, key: cert.key, peek: true, ...steps },
        { cpu: 1, runtime: kind === "native" ? "bun" : (runtime as "node" | "bun") },
      );
      const port = Number((await peer.wait((m) => m.ready === true)).port);
      return { target, pid: peer.pid, port, stop: () => peer.kill() };
    }
    if (kind !== "node" && kind !== "bun" && kind !== "deno") throw new Error(`unknown target "${target}"`);
    const proxy = await startProxy({
      config,
      entryPoints: ["bench"],
      runtime: kind as Runtime,
      bin: path.resolve(where, "bin", "tlsroute.mjs"),
    });
    return { target, pid: proxy.pid, port: proxy.ports.get("bench")!, stop: () => proxy.stop() };
  };

  const load = async (port: number, seconds: number) => {
    const result = await handshakeLoad({
      port,
      servername: SNI,
      ca: cert.caCert,
      concurrency: 8,
      seconds,
      sources: Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 1}`),
    });
    if (result.errors > 0) throw new Error(`${result.errors} handshakes failed on port ${port}`);
    return result.count;
  };

  const running: Running[] = [];
  try {
    for (const target of TARGETS) running.push(await start(target));
    for (const r of running) await load(r.port, 2);
    const ms = new Map<string, number[]>(TARGETS.map((t) => [t, []]));
    const mainShare = new Map<string, number[]>(TARGETS.map((t) => [t, []]));
    for (let i = 0; i < ROUNDS; i++) {
      for (const r of running) {
        const before = cpuTimes(r.pid);
        const threadsBefore = threadCpu(r.pid);
        const count = await load(r.port, SECONDS);
        await sleep(300);
        const after = cpuTimes(r.pid);
        const threadsAfter = threadCpu(r.pid);
        const total = after.user + after.system - before.user - before.system;
        ms.get(r.target)!.push(round((total * 1000) / count, 3));
        // The main thread is the one named like the process (the largest, in practice).
        const deltas = [...threadsAfter].map(([name, t]) => t - (threadsBefore.get(name) ?? 0));
        const all = deltas.reduce((a, b) => a + b, 0);
        if (all > 0) mainShare.get(r.target)!.push(round(Math.max(...deltas) / all, 2));
      }
      console.error(
        `round ${i + 1}: ${running.map((r) => `${r.target} ${ms.get(r.target)!.at(-1)} ms`).join(" | ")}`,
      );
    }
    const rows = TARGETS.map((t) => ({
      target: t,
      msPerHandshake: round(median(ms.get(t)!), 3),
      rounds: ms.get(t)!,
      mainThreadShare: median(mainShare.get(t)!),
    }));
    for (const row of rows)
      console.log(
        `${row.target.padEnd(28)} ${String(row.msPerHandshake).padStart(6)} ms per handshake  [${row.rounds.join(", ")}]  main thread ${Math.round(row.mainThreadShare * 100)} %`,
      );
    const file = writeResult("ab-handshakes", {
      benchmark: "ab-handshakes",
      date: new Date().toISOString(),
      machine: machine(),
      command: `node --import tsx bench/ab-handshakes.ts ${process.argv.slice(2).join(" ")}`,
      rounds: ROUNDS,
      seconds: SECONDS,
      rows,
    });
    console.error(`written: ${file}`);
  } finally {
    for (const r of running) await r.stop();
    await echo.kill();
  }
}

await main();
process.exit(0);
