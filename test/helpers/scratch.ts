/**
 * Small things serve tests share: numbered scratch directories removed after the file's tests, a
 * sleep, and a poll that fails with what it was waiting for.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after } from "node:test";

/**
 * A root directory for one test file (removed after its tests) and a function that makes a fresh,
 * numbered subdirectory of it per case, named after the case so a kept failure is easy to find.
 */
export function scratchDirs(prefix: string): { root: string; dir(label: string): string } {
  const root = mkdtempSync(path.join(tmpdir(), `${prefix}-`));
  after(() => rmSync(root, { recursive: true, force: true }));
  let counter = 0;
  return {
    root,
    dir(label: string): string {
      counter += 1;
      const dir = path.join(root, `${String(counter).padStart(2, "0")}-${label}`);
      mkdirSync(dir, { recursive: true });
      return dir;
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 20 ms; rejects naming `what` after `timeoutMs`. */
export async function waitUntil(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(20);
  }
}
