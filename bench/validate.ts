/**
 * `tlsroute validate` end to end on a large configuration: 10,000 routers and 1,000 certificates.
 *
 * The certificates (EC P-256, signed by one CA, 10 DNS names each, the first 200 with a wildcard
 * too) are made once with the openssl CLI and cached in the temp directory between runs
 * ($TMPDIR/tlsroute-bench-certs-v1). The configuration is written as YAML, JSON and TOML (the same
 * content) and `node bin/tlsroute.mjs validate <dir> --format json` is timed as a subprocess, wall
 * clock, median of 3 runs after one warm-up run. The built CLI is what users run: `npm run build`
 * first.
 *
 * Run: npm run bench:validate            (node --import tsx bench/validate.ts)
 *      npm run bench:validate -- --profile   also records a CPU profile of one JSON run and prints
 *                                            where the time goes (self and inclusive, by function)
 *      npm run bench:validate -- --keep      keeps the generated configurations (path printed on stderr)
 * Writes bench/results/validate.json and prints a table.
 */
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { stringify as toToml } from "smol-toml";
import { stringify as toYaml } from "yaml";
import { host } from "./machine.ts";
import { findProfile, type ProfileSummary, summariseCpuProfile } from "./serve-common.ts";

const ROUTERS = 10_000;
const CERTS = 1_000;
const NAMES_PER_CERT = 10;
const WILDCARD_CERTS = 200;
const RUNS = 3;
const CERT_CACHE = path.join(tmpdir(), "tlsroute-bench-certs-v1");

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.dirname(here);
const bin = path.join(root, "bin", "tlsroute.mjs");
const run = promisify(execFile);

const exactName = (i: number) => `svc-${i}.bench.example`;
const zone = (k: number) => `zone-${k}.bench.example`;

// -------------------------------------------------------------------------------- certificates

interface CertPaths {
  cert: string;
  key: string;
}

const certPaths = (k: number): CertPaths => ({
  cert: path.join(CERT_CACHE, `leaf-${k}.crt`),
  key: path.join(CERT_CACHE, `leaf-${k}.key`),
});

async function makeCertificates(): Promise<number> {
  const done = path.join(CERT_CACHE, "COMPLETE");
  if (existsSync(done)) return 0;
  rmSync(CERT_CACHE, { recursive: true, force: true });
  mkdirSync(CERT_CACHE, { recursive: true });
  const started = Date.now();
  const ca = { cert: path.join(CERT_CACHE, "ca.crt"), key: path.join(CERT_CACHE, "ca.key") };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      ca.key,
      "-out",
      ca.cert,
      "-days",
      "3650",
      "-subj",
      "/CN=tlsroute bench CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const issue = async (k: number) => {
    const names = Array.from({ length: NAMES_PER_CERT }, (_, j) => exactName(k * NAMES_PER_CERT + j));
    if (k < WILDCARD_CERTS) names.push(`*.${zone(k)}`);
    const { cert, key } = certPaths(k);
    // `req -x509 -CA` (OpenSSL 3.0+) signs with the CA in one process.
    await run("openssl", [
      "req",
      "-x509",
      ...ec,
      "-CA",
      ca.cert,
      "-CAkey",
      ca.key,
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "825",
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
  };
  let next = 0;
  const worker = async () => {
    while (next < CERTS) await issue(next++);
  };
  await Promise.all(Array.from({ length: Math.max(2, cpus().length * 2) }, worker));
  writeFileSync(done, `${CERTS}\n`);
  return Date.now() - started;
}

// ------------------------------------------------------------------------------- configuration

function buildConfig(): Record<string, unknown> {
  const wildcardRouters = WILDCARD_CERTS - 1;
  const exactRouters = ROUTERS - wildcardRouters - 1;
  const routers: Record<string, unknown> = {};
  const options = ["default", "modern", "intermediate"];
  for (let i = 0; i < exactRouters; i++) {
    const router: Record<string, unknown> = {
      entryPoints: ["websecure"],
      rule: `HostSNI(\`${exactName(i)}\`)`,
      service: `svc-${i % 500}`,
      tls: i % 10 === 9 ? { passthrough: true } : { options: options[i % options.length] },
    };
    if (i % 50 === 0) router.middlewares = ["internal"];
    routers[`tenant-${i}`] = router;
  }
  for (let k = 0; k < wildcardRouters; k++) {
    routers[`zone-${k}`] = {
      entryPoints: ["websecure"],
      rule: `HostSNI(\`*.${zone(k)}\`)`,
      service: `svc-${k % 500}`,
      tls: {},
    };
  }
  routers.fallback = { entryPoints: ["websecure"], rule: "HostSNI(`*`)", service: "svc-0", tls: {} };
  const services: Record<string, unknown> = {};
  for (let s = 0; s < 500; s++) {
    services[`svc-${s}`] = {
      loadBalancer: {
        servers: [
          { address: `10.1.${s >> 8}.${s & 255}:5432` },
          { address: `10.2.${s >> 8}.${s & 255}:5432` },
        ],
      },
    };
  }
  return {
    entryPoints: {
      websecure: { address: ":8443", transport: { respondingTimeouts: { readTimeout: "10s" } } },
    },
    tcp: {
      routers,
      services,
      middlewares: { internal: { ipAllowList: { sourceRange: ["10.0.0.0/8", "192.168.0.0/16"] } } },
    },
    tls: {
      certificates: Array.from({ length: CERTS }, (_, k) => ({
        certFile: certPaths(k).cert,
        keyFile: certPaths(k).key,
      })),
      options: {
        modern: { minVersion: "VersionTLS13" },
        intermediate: {
          minVersion: "VersionTLS12",
          cipherSuites: [
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
          ],
        },
      },
    },
  };
}

// ----------------------------------------------------------------------------------- measuring

interface ValidateJson {
  ok: boolean;
  errors: number;
  warnings: number;
  diagnostics: { code: string; severity: string }[];
}

interface FormatResult {
  format: string;
  bytes: number;
  runsMs: number[];
  medianMs: number;
  exitCode: number;
  errors: number;
  warnings: number;
  warningCodes: Record<string, number>;
}

function timeValidate(dir: string, extraNodeArgs: string[] = []): { ms: number; code: number; out: string } {
  const start = process.hrtime.bigint();
  const child = spawnSync(process.execPath, [...extraNodeArgs, bin, "validate", dir, "--format", "json"], {
    encoding: "utf8",
    maxBuffer: 256 * 2 ** 20,
    env: { ...process.env, NO_COLOR: "1" },
  });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (child.error) throw child.error;
  if (child.status === 2) throw new Error(`validate could not run:\n${child.stderr}`);
  return { ms, code: child.status ?? -1, out: child.stdout };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function countBy(list: { code: string }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const d of list) out[d.code] = (out[d.code] ?? 0) + 1;
  return out;
}

// --------------------------------------------------------------------------------- CPU profile

function profileOnce(dir: string, work: string) {
  const profDir = path.join(work, "profile");
  mkdirSync(profDir, { recursive: true });
  timeValidate(dir, ["--cpu-prof", `--cpu-prof-dir=${profDir}`, "--cpu-prof-interval=200"]);
  return summariseCpuProfile(findProfile(profDir, ".cpuprofile"));
}

// --------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const wantProfile = process.argv.includes("--profile");
  const keep = process.argv.includes("--keep");
  if (!existsSync(path.join(root, "dist", "cli.mjs"))) throw new Error("run `npm run build` first");
  const genMs = await makeCertificates();
  console.error(
    genMs > 0
      ? `generated ${CERTS} certificates in ${(genMs / 1000).toFixed(1)} s (cached in ${CERT_CACHE})`
      : `using cached certificates in ${CERT_CACHE}`,
  );

  const config = buildConfig();
  const texts: Record<string, { file: string; text: string }> = {
    yaml: { file: "tlsroute.yml", text: toYaml(config, { lineWidth: 0 }) },
    json: { file: "tlsroute.json", text: JSON.stringify(config, null, 2) },
    toml: { file: "tlsroute.toml", text: toToml(config) },
  };
  const work = mkdtempSync(path.join(tmpdir(), "tlsroute-bench-validate-"));
  const results: FormatResult[] = [];
  let profile: ProfileSummary | null = null;
  try {
    for (const [format, { file, text }] of Object.entries(texts)) {
      const dir = path.join(work, format);
      mkdirSync(dir);
      writeFileSync(path.join(dir, file), text);
      timeValidate(dir); // warm-up: file cache, compiled code cache
      const runs = Array.from({ length: RUNS }, () => timeValidate(dir));
      const last = runs[runs.length - 1]!;
      const report = JSON.parse(last.out) as ValidateJson;
      results.push({
        format,
        bytes: Buffer.byteLength(text),
        runsMs: runs.map((r) => Math.round(r.ms)),
        medianMs: Math.round(median(runs.map((r) => r.ms))),
        exitCode: last.code,
        errors: report.errors,
        warnings: report.warnings,
        warningCodes: countBy(report.diagnostics),
      });
      console.error(`  ${format}: done`);
    }
    if (wantProfile) profile = profileOnce(path.join(work, "json"), work);
  } finally {
    if (keep) console.error(`configurations kept in ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }

  const m = host();
  console.log(
    `tlsroute validate, ${ROUTERS.toLocaleString("en-US")} routers + ${CERTS.toLocaleString("en-US")} certificates, median of ${RUNS} (${m.cpu}, ${m.nproc} CPUs, node ${m.node})`,
  );
  const header = ["format", "size", "median", "runs", "exit", "errors", "warnings"];
  const rows = results.map((r) => [
    r.format,
    `${(r.bytes / 2 ** 20).toFixed(2)} MiB`,
    `${r.medianMs} ms`,
    r.runsMs.join(" / "),
    String(r.exitCode),
    String(r.errors),
    String(r.warnings),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(line(header));
  for (const row of rows) console.log(line(row));
  for (const r of results) {
    if (r.errors > 0 || r.warnings > 0)
      console.log(`  ${r.format} diagnostics: ${JSON.stringify(r.warningCodes)}`);
  }
  if (profile) {
    console.log(`\nCPU profile of one JSON run (${profile.sampledMs} ms sampled)`);
    console.log("self time by file:");
    for (const row of profile.perFile)
      console.log(`  ${row.ms.toFixed(0).padStart(6)} ms ${row.percent.toFixed(1).padStart(5)}%  ${row.fn}`);
    console.log("self time by function:");
    for (const row of profile.self)
      console.log(`  ${row.ms.toFixed(0).padStart(6)} ms ${row.percent.toFixed(1).padStart(5)}%  ${row.fn}`);
    console.log("inclusive time by function:");
    for (const row of profile.inclusive)
      console.log(`  ${row.ms.toFixed(0).padStart(6)} ms ${row.percent.toFixed(1).padStart(5)}%  ${row.fn}`);
  }

  const out = {
    benchmark: "validate",
    date: new Date().toISOString(),
    machine: m,
    command: `npm run bench:validate${wantProfile ? " -- --profile" : ""}`,
    routers: ROUTERS,
    certificates: CERTS,
    runs: RUNS,
    results,
    ...(profile ? { profile } : {}),
  };
  mkdirSync(path.join(here, "results"), { recursive: true });
  writeFileSync(path.join(here, "results", "validate.json"), `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwritten: ${path.relative(process.cwd(), path.join(here, "results", "validate.json"))}`);
}

await main();
