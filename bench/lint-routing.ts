/**
 * lintRouting() on route tables of 10,000 and 100,000 routers, in-process.
 *
 * The tables have the shape of the decide benchmark (bench/decide.ts): ~95 % exact HostSNI names,
 * ~5 % one-label wildcards, one catch-all, one plain TCP router. Default priorities are rule
 * lengths, so thousands of routers share a priority and the equal-priority check works on large
 * groups with many wildcards in them: the case that used to be quadratic. Each configuration goes
 * through the real loader and compiler (a JSON file in a temp directory); only lintRouting is timed,
 * median of 5 runs after a warm-up.
 *
 * Run: node --import tsx bench/lint-routing.ts
 * Writes bench/results/lint-routing.json and prints a table.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../src/config/load.ts";
import { Diagnostics } from "../src/config/reader.ts";
import { lintRouting } from "../src/lint/routing.ts";
import { compile } from "../src/routing/compile.ts";

const SIZES = [10_000, 100_000];
const RUNS = 5;
const here = path.dirname(fileURLToPath(import.meta.url));

function buildConfig(size: number): unknown {
  const wildcards = Math.max(1, Math.floor(size * 0.05));
  const exactCount = size - wildcards - 1;
  const routers: Record<string, unknown> = {};
  for (let i = 0; i < exactCount; i++) {
    routers[`tenant-${i}`] = {
      rule: `HostSNI(\`t${i}.customers.example.net\`)`,
      service: `svc-${i % 100}`,
      tls: i % 3 === 0 ? { passthrough: true } : {},
    };
  }
  for (let i = 0; i < wildcards; i++) {
    routers[`zone-${i}`] = {
      rule: `HostSNI(\`*.zone${i}.wild.example.net\`)`,
      service: `svc-${i % 100}`,
      tls: {},
    };
  }
  routers.fallback = { rule: "HostSNI(`*`)", service: "svc-0", tls: {} };
  routers.plain = { rule: "HostSNI(`*`)", service: "svc-1" };
  const services: Record<string, unknown> = {};
  for (let i = 0; i < 100; i++) {
    services[`svc-${i}`] = { loadBalancer: { servers: [{ address: `127.0.0.1:${10_000 + i}` }] } };
  }
  return { entryPoints: { websecure: { address: "127.0.0.1:8443" } }, tcp: { routers, services } };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

interface SizeResult {
  routers: number;
  runsMs: number[];
  medianMs: number;
  warnings: number;
}

const results: SizeResult[] = [];
const work = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-lint-"));
try {
  for (const size of SIZES) {
    const dir = path.join(work, String(size));
    mkdirSync(dir);
    writeFileSync(path.join(dir, "tlsroute.json"), JSON.stringify(buildConfig(size)));
    const { model } = loadConfig([dir]);
    const compiled = compile(model);
    let warnings = 0;
    const time = () => {
      const diags = new Diagnostics();
      const start = process.hrtime.bigint();
      lintRouting(model, compiled, diags);
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      warnings = diags.list.length;
      return ms;
    };
    time(); // warm-up
    const runs = Array.from({ length: RUNS }, time);
    results.push({
      routers: size,
      runsMs: runs.map((ms) => Math.round(ms)),
      medianMs: Math.round(median(runs)),
      warnings,
    });
    console.error(`  ${size} routers: done`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

console.log(`lintRouting, median of ${RUNS} (${cpus()[0]?.model ?? "unknown"}, node ${process.version})`);
for (const r of results) {
  console.log(
    `${r.routers.toLocaleString("en-US").padStart(8)} routers  ${String(r.medianMs).padStart(6)} ms   runs ${r.runsMs.join(" / ")}   warnings ${r.warnings}`,
  );
}
const out = {
  benchmark: "lint-routing",
  date: new Date().toISOString(),
  machine: {
    cpu: cpus()[0]?.model ?? "unknown",
    nproc: cpus().length,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    loadAverage1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
  },
  command: "node --import tsx bench/lint-routing.ts",
  runs: RUNS,
  results,
};
mkdirSync(path.join(here, "results"), { recursive: true });
writeFileSync(path.join(here, "results", "lint-routing.json"), `${JSON.stringify(out, null, 2)}\n`);
console.log(`\nwritten: ${path.relative(process.cwd(), path.join(here, "results", "lint-routing.json"))}`);
