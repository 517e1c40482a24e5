/**
 * What every benchmark records about the machine it ran on, so a figure can be read next to the CPU,
 * the runtime and the load that shaped it.
 */
import { execFileSync } from "node:child_process";
import { cpus, loadavg, release } from "node:os";

export interface Host {
  cpu: string;
  /** Usable CPUs (nproc honours the CPU set this process may run on). */
  nproc: number;
  node: string;
  nodeOpenssl: string;
  openssl: string;
  kernel: string;
  platform: string;
  /** Other work on the machine skews the figures; the 1-minute load average when asked says how much. */
  loadAverage1m: number;
}

/** A command's trimmed output, or null when it is missing or fails. */
export function tryExec(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

export function loadAverage1m(): number {
  return Math.round((loadavg()[0] ?? 0) * 100) / 100;
}

export function host(): Host {
  return {
    cpu: cpus()[0]?.model ?? "unknown",
    nproc: Number(tryExec("nproc", [])) || cpus().length,
    node: process.version,
    nodeOpenssl: process.versions.openssl ?? "unknown",
    openssl: tryExec("openssl", ["version"]) ?? "not found",
    kernel: release(),
    platform: `${process.platform} ${process.arch}`,
    loadAverage1m: loadAverage1m(),
  };
}
