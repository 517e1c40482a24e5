import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type ConnectionFacts, decide } from "../src/routing/decide.ts";
import type { Route, RouteTable } from "../src/routing/table.ts";
import { openWorkspace } from "../src/workspace.ts";
import { host } from "./machine.ts";

const SIZES = [10, 10_000, 100_000];
const RUNS = 7;
/** Distinct facts per case; cycled through so that no single name stays hot in a cache. */
const FACTS_PER_CASE = 4096;
/** Wall time to aim for per run, to size the number of operations. */
const TARGET_RUN_NS = 150_000_000;

const here = path.dirname(fileURLToPath(import.meta.url));

/** A seeded generator, so every run benchmarks the same tables and facts. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Shape {
  exact: string[];
  wildcardParents: string[];
}

/** 1 catch-all, ~5% wildcards (at least one), the rest exact names; 1 plain TCP router. */
function buildConfig(size: number): { config: unknown; shape: Shape } {
  const wildcards = Math.max(1, Math.floor(size * 0.05));
  const exactCount = size - wildcards - 1;
  const routers: Record<string, unknown> = {};
  const shape: Shape = { exact: [], wildcardParents: [] };
  for (let i = 0; i < exactCount; i++) {
    const name = `t${i}.customers.example.net`;
    shape.exact.push(name);
    routers[`tenant-${i}`] = {
      rule: `HostSNI(\`${name}\`)`,
      service: `svc-${i % 100}`,
      tls: i % 3 === 0 ? { passthrough: true } : {},
    };
  }
  for (let i = 0; i < wildcards; i++) {
    const parent = `zone${i}.wild.example.net`;
    shape.wildcardParents.push(parent);
    routers[`zone-${i}`] = { rule: `HostSNI(\`*.${parent}\`)`, service: `svc-${i % 100}`, tls: {} };
  }
  routers.fallback = { rule: "HostSNI(`*`)", service: "svc-0", tls: {} };
  routers.plain = { rule: "HostSNI(`*`)", service: "svc-1" };
  const services: Record<string, unknown> = {};
  for (let i = 0; i < Math.min(100, size); i++) {
    services[`svc-${i}`] = { loadBalancer: { servers: [{ address: `127.0.0.1:${10_000 + i}` }] } };
  }
  return {
    config: {
      entryPoints: { websecure: { address: "127.0.0.1:8443" } },
      tcp: { routers, services },
    },
    shape,
  };
}

function pick<T>(list: readonly T[], random: () => number): T {
  return list[Math.floor(random() * list.length)]!;
}

function baseFacts(sni: string, tls = true): ConnectionFacts {
  return {
    entryPoint: "websecure",
    sni,
    alpn: ["h2", "http/1.1"],
    clientIp: "192.0.2.10",
    localIp: "127.0.0.1",
    tls,
    postgres: false,
  };
}

interface Case {
  name: string;
  facts: ConnectionFacts[];
  expect: (router: string | null) => boolean;
}

function casesFor(shape: Shape, random: () => number): Case[] {
  const many = (make: () => ConnectionFacts) => Array.from({ length: FACTS_PER_CASE }, make);
  return [
    {
      name: "exact hit",
      facts: many(() => baseFacts(pick(shape.exact, random))),
      expect: (r) => r?.startsWith("tenant-") === true,
    },
    {
      // The same lookups with only 16 distinct names: what is left when the routes touched stay in the
      // CPU caches. The gap to "exact hit" is memory latency, not work that grows with the table.
      name: "exact hit (16 hot)",
      facts: Array.from({ length: 16 }, () => baseFacts(pick(shape.exact, random))),
      expect: (r) => r?.startsWith("tenant-") === true,
    },
    {
      name: "wildcard hit",
      facts: many(() => baseFacts(`h${Math.floor(random() * 1e6)}.${pick(shape.wildcardParents, random)}`)),
      expect: (r) => r?.startsWith("zone-") === true,
    },
    {
      name: "miss → catch-all",
      facts: many(() => baseFacts(`nobody${Math.floor(random() * 1e9)}.elsewhere.example.org`)),
      expect: (r) => r === "fallback",
    },
    {
      name: "plain TCP",
      facts: many(() => baseFacts("", false)),
      expect: (r) => r === "plain",
    },
  ];
}

/** Times `op` over the facts; returns ns/op (median of RUNS) after a warm-up sized from a probe. */
function measure(factsList: readonly ConnectionFacts[], op: (f: ConnectionFacts) => unknown): number {
  let sink = 0;
  const runOnce = (count: number): number => {
    const start = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      if (op(factsList[i % factsList.length]!) !== null) sink++;
    }
    return Number(process.hrtime.bigint() - start);
  };
  // Warm-up (lets the JIT settle) and sizing.
  let count = 64;
  for (;;) {
    const ns = runOnce(count);
    if (ns > 20_000_000 || count >= 1 << 24) {
      count = Math.max(16, Math.round((count * TARGET_RUN_NS) / ns));
      break;
    }
    count *= 4;
  }
  const samples: number[] = [];
  for (let r = 0; r < RUNS; r++) samples.push(runOnce(count) / count);
  samples.sort((a, b) => a - b);
  if (sink < 0) console.log(sink); // keeps the results observable
  return samples[Math.floor(samples.length / 2)]!;
}

function linearScan(table: RouteTable, f: ConnectionFacts): Route | null {
  const ruleFacts = { sni: f.sni, alpn: f.alpn, clientIp: f.clientIp };
  for (const route of table.tls) if (route.rule.match(ruleFacts)) return route;
  return null;
}

interface SizeResult {
  routers: number;
  configBytes: number;
  loadMs: number;
  heapMB: number;
  index: { exact: number; wildcard: number; unindexed: number };
  nsPerOp: Record<string, number>;
  linearScanMissNsPerOp: number;
}

function formatNs(ns: number): string {
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e4) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${ns.toFixed(0)} ns`;
}

function main(): void {
  const work = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-decide-"));
  const results: SizeResult[] = [];
  try {
    for (const size of SIZES) {
      const random = rng(size);
      const { config, shape } = buildConfig(size);
      const dir = path.join(work, String(size));
      mkdirSync(dir);
      const text = JSON.stringify(config);
      writeFileSync(path.join(dir, "tlsroute.json"), text);

      const t0 = process.hrtime.bigint();
      const ws = openWorkspace([dir]);
      const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const errors = ws.diagnostics.filter((d) => d.severity === "error");
      if (errors.length > 0) throw new Error(`generated configuration has errors: ${errors[0]?.message}`);
      const table = ws.context.tables.get("websecure");
      if (!table || table.tls.length !== size) throw new Error(`expected ${size} TLS routes`);
      global.gc?.();
      const heapMB = process.memoryUsage().heapUsed / 2 ** 20;

      const nsPerOp: Record<string, number> = {};
      for (const c of casesFor(shape, random)) {
        // Check the answers once before timing them.
        for (const f of c.facts.slice(0, 64)) {
          const d = decide(ws.context, f);
          if (!c.expect(d.router)) throw new Error(`${c.name}: unexpected router ${d.router} for ${f.sni}`);
        }
        nsPerOp[c.name] = measure(c.facts, (f) => decide(ws.context, f).route);
      }
      const miss = casesFor(shape, rng(size + 1)).find((c) => c.name.startsWith("miss"))!.facts;
      const linear = measure(miss, (f) => linearScan(table, f));
      results.push({
        routers: size,
        configBytes: text.length,
        loadMs,
        heapMB,
        index: table.tlsIndex.size,
        nsPerOp,
        linearScanMissNsPerOp: linear,
      });
      console.error(`  ${size} routers done`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }

  const caseNames = Object.keys(results[0]?.nsPerOp ?? {});
  const header = ["routers", ...caseNames, "linear scan (miss)", "load", "heap"];
  const rows = results.map((r) => [
    r.routers.toLocaleString("en-US"),
    ...caseNames.map((c) => formatNs(r.nsPerOp[c] ?? Number.NaN)),
    formatNs(r.linearScanMissNsPerOp),
    `${r.loadMs.toFixed(0)} ms`,
    `${r.heapMB.toFixed(0)} MB`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join("  ");
  console.log(`decide() per connection, median of ${RUNS} runs (${host().cpu}, node ${process.version})`);
  console.log(line(header));
  for (const row of rows) console.log(line(row));

  const out = {
    benchmark: "decide",
    date: new Date().toISOString(),
    machine: host(),
    command: "npm run bench:decide",
    runs: RUNS,
    factsPerCase: FACTS_PER_CASE,
    results,
  };
  mkdirSync(path.join(here, "results"), { recursive: true });
  writeFileSync(path.join(here, "results", "decide.json"), `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwritten: ${path.relative(process.cwd(), path.join(here, "results", "decide.json"))}`);
}

main();
