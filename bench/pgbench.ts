/**
 * pgbench through `tlsroute serve` (PostgreSQL STARTTLS, TLS terminated by tlsroute, plaintext to the
 * server) next to pgbench straight to the server, plaintext and TLS. Not a test: prints a table and
 * writes bench/results/pgbench.json. Run `npm run build` first.
 *
 *   node --import tsx bench/pgbench.ts [--seconds 20] [--clients 8] [--scale 10]
 *
 * One throwaway cluster (ssl=on, fsync=off) from test/helpers/postgres.ts, initialised with
 * `pgbench -i`; every run is select-only (`-S`), so each transaction is one round trip and the
 * figures show what the path in between costs. `-C` opens a new connection per transaction: for the
 * proxy that is one SSLRequest, one TLS handshake and one backend dial each.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { makePki } from "../test/helpers/pki.ts";
import { cleanEnv, postgresCommand, postgresSkip, startPostgres } from "../test/helpers/postgres.ts";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const BIN = path.join(ROOT, "bin", "tlsroute.mjs");
const NAME = "db.bench.localhost";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "20" },
    clients: { type: "string", default: "8" },
    scale: { type: "string", default: "10" },
  },
});
const SECONDS = Number(values.seconds);
const CLIENTS = Number(values.clients);
const SCALE = Number(values.scale);
/** Other jobs on the machine skew the figures: the load is recorded at the start and at the end. */
const LOAD_AT_START = Math.round((loadavg()[0] ?? 0) * 100) / 100;

interface Run {
  path: "direct, plaintext" | "direct, TLS" | "tlsroute, TLS terminated";
  newConnectionPerTransaction: boolean;
  command: string;
  tps: number;
  latencyMs: number;
  transactions: number;
  failed: number;
}

interface Serve {
  child: ChildProcess;
  port: number;
  /** Access lines so far, and how many ended with a reason other than `closed`. */
  counts: { connections: number; failures: number; failureLines: string[] };
}

/** Starts serve and counts its access lines (a substring test per line, no JSON parsing). */
function startServe(config: string): Promise<Serve> {
  const child = spawn(
    process.execPath,
    [BIN, "serve", "-c", config, "--log-format", "json", "--entrypoint", "pg=127.0.0.1:0"],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const counts = { connections: 0, failures: 0, failureLines: [] as string[] };
  let pending = "";
  child.stdout?.setEncoding("utf8");
  return new Promise((resolve, reject) => {
    child.stdout?.on("data", (chunk: string) => {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        if (line.includes('"msg":"connection"')) {
          counts.connections++;
          if (!line.includes('"reason":"closed"')) {
            counts.failures++;
            if (counts.failureLines.length < 5) counts.failureLines.push(line);
          }
        } else {
          const listening = /"msg":"listening".*?"address":"127\.0\.0\.1:(\d+)"/.exec(line);
          if (listening) resolve({ child, port: Number(listening[1]), counts });
        }
      }
    });
    child.once("exit", (code) => reject(new Error(`serve exited with ${code}`)));
    setTimeout(() => reject(new Error("serve did not start within 15 s")), 15_000).unref();
  });
}

/**
 * Runs pgbench without blocking this process: serve's log pipe must keep draining (a full pipe
 * would stall serve's synchronous stdout writes and with them the proxy).
 */
function pgbench(
  args: string[],
  conninfo: string,
): Promise<{ stdout: string; stderr: string; status: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(postgresCommand("pgbench"), [...args, conninfo], { env: cleanEnv() });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (s: string) => {
      stdout += s;
    });
    child.stderr.on("data", (s: string) => {
      stderr += s;
    });
    child.once("error", reject);
    child.once("close", (status) => resolve({ stdout, stderr, status }));
  });
}

async function measure(pathName: Run["path"], conninfo: string, newConnections: boolean): Promise<Run> {
  const args = ["-n", "-S", "-c", String(CLIENTS), "-j", "2", "-T", String(SECONDS)];
  if (newConnections) args.push("-C");
  const out = await pgbench(args, conninfo);
  const text = out.stdout + out.stderr;
  if (out.status !== 0) throw new Error(`pgbench ${args.join(" ")} failed (${out.status}):\n${text}`);
  const tps = Number(/tps = ([\d.]+)/.exec(text)?.[1]);
  const latencyMs = Number(/latency average = ([\d.]+) ms/.exec(text)?.[1]);
  const transactions = Number(/number of transactions actually processed: (\d+)/.exec(text)?.[1]);
  const failed = Number(/number of failed transactions: (\d+)/.exec(text)?.[1] ?? 0);
  if (failed !== 0 || /error/i.test(out.stderr)) throw new Error(`pgbench reported errors:\n${text}`);
  const run: Run = {
    path: pathName,
    newConnectionPerTransaction: newConnections,
    command: `pgbench ${args.join(" ")} "${conninfo}"`,
    tps,
    latencyMs,
    transactions,
    failed,
  };
  process.stderr.write(
    `${pathName.padEnd(26)} ${newConnections ? "-C" : "  "}  ${tps.toFixed(0).padStart(7)} tps  ${latencyMs.toFixed(3)} ms\n`,
  );
  return run;
}

async function main(): Promise<void> {
  if (postgresSkip !== false) throw new Error(`cannot run PostgreSQL: ${postgresSkip}`);
  if (!existsSync(path.join(ROOT, "dist", "cli.mjs"))) throw new Error("run npm run build first");
  const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-pgbench-"));
  const pki = makePki(path.join(dir, "pki"));
  const ca = pki.ca("bench-ca");
  const cert = pki.leaf({ ca, cn: NAME, dns: [NAME] });
  const server = await startPostgres({ ssl: { certFile: cert.chainFile, keyFile: cert.keyFile } });
  let serve: ChildProcess | undefined;
  try {
    const init = await pgbench(
      ["-i", "-q", "-s", String(SCALE)],
      `host=127.0.0.1 port=${server.port} user=postgres`,
    );
    if (init.status !== 0) throw new Error(`pgbench -i failed:\n${init.stderr}`);

    const config = path.join(dir, "tlsroute.json");
    writeFileSync(
      config,
      JSON.stringify({
        entryPoints: { pg: { address: "127.0.0.1:0" } },
        tcp: {
          routers: { db: { rule: `HostSNI(\`${NAME}\`)`, service: "db", tls: {} } },
          services: { db: { loadBalancer: { servers: [{ address: `127.0.0.1:${server.port}` }] } } },
        },
        tls: { certificates: [{ certFile: cert.chainFile, keyFile: cert.keyFile }] },
      }),
    );
    const started = await startServe(config);
    serve = started.child;

    const direct = `host=127.0.0.1 port=${server.port} user=postgres dbname=postgres`;
    const proxied = `host=${NAME} hostaddr=127.0.0.1 port=${started.port} user=postgres dbname=postgres`;
    const runs: Run[] = [];
    for (const newConnections of [false, true]) {
      runs.push(
        await measure("direct, plaintext", `${direct} sslmode=disable gssencmode=disable`, newConnections),
      );
      runs.push(await measure("direct, TLS", `${direct} sslmode=require gssencmode=disable`, newConnections));
      runs.push(
        await measure(
          "tlsroute, TLS terminated",
          `${proxied} sslmode=require gssencmode=disable`,
          newConnections,
        ),
      );
    }

    const version = spawnSync(postgresCommand("postgres"), ["--version"], { encoding: "utf8" }).stdout.trim();
    const result = {
      date: new Date().toISOString(),
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? null,
        memoryGiB: Math.round(totalmem() / 2 ** 30),
        kernel: release(),
        node: process.version,
        postgres: version,
        loadAverage1mAtStart: LOAD_AT_START,
        loadAverage1mAtEnd: Math.round((loadavg()[0] ?? 0) * 100) / 100,
      },
      settings: { seconds: SECONDS, clients: CLIENTS, threads: 2, scale: SCALE, script: "select-only (-S)" },
      runs,
      proxyAccessLines: started.counts.connections,
      proxyFailures: started.counts.failures,
    };
    const outDir = path.join(ROOT, "bench", "results");
    mkdirSync(outDir, { recursive: true });
    writeFileSync(path.join(outDir, "pgbench.json"), `${JSON.stringify(result, null, 2)}\n`);

    console.log("| path | connections | tps | latency avg |");
    console.log("|---|---|---:|---:|");
    for (const run of runs) {
      console.log(
        `| ${run.path} | ${run.newConnectionPerTransaction ? "new per transaction (-C)" : "kept"} | ${run.tps.toFixed(0)} | ${run.latencyMs.toFixed(3)} ms |`,
      );
    }
    const { connections, failures, failureLines } = started.counts;
    console.log(`\ntlsroute access lines: ${connections}, not "closed": ${failures}`);
    if (failures > 0) throw new Error(`tlsroute refused or failed connections:\n${failureLines.join("\n")}`);
  } finally {
    serve?.kill("SIGTERM");
    server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
