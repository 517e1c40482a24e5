/**
 * What every command shares: flag helpers, exit codes, path display and colour.
 */
import { relative } from "node:path";
import { colors } from "consola/utils";
import type { SourcePos } from "../config/located.ts";

export const EXIT_OK = 0;
/** The thing checked is wrong: invalid config, no route, failed handshake. */
export const EXIT_FINDINGS = 1;
/** The command could not run: bad flags, unreadable path, invalid --rule. */
export const EXIT_USAGE = 2;

/** A problem with how the command was called: printed with its hint, exit code 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

/** citty gives a string for one occurrence and an array for several; we always want a list. */
export function listFlag(value: unknown): string[] {
  if (value === undefined || value === null || value === false) return [];
  const items = Array.isArray(value) ? value : [value];
  return items.filter((v): v is string => typeof v === "string").flatMap((v) => v.split(","));
}

/** A comma-separated flag such as --alpn h2,http/1.1, given once or several times. */
export function csvFlag(value: unknown): string[] {
  return listFlag(value)
    .map((v) => v.trim())
    .filter((v) => v !== "");
}

export function lastString(value: unknown): string | undefined {
  if (Array.isArray(value)) return lastString(value[value.length - 1]);
  return typeof value === "string" ? value : undefined;
}

export type Format = "text" | "json";

export function formatFlag(value: unknown, allowed: readonly string[] = ["text", "json"]): string {
  const format = lastString(value) ?? "text";
  if (!allowed.includes(format)) {
    throw new UsageError(`--format must be one of ${allowed.join(", ")}, got "${format}"`);
  }
  return format;
}

export function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith("..") ? rel : file;
}

export function displayPos(pos: SourcePos | undefined): string {
  if (!pos) return "";
  return `${displayPath(pos.file)}:${pos.line}:${pos.column}`;
}

export const paint = {
  error: (s: string) => colors.red(s),
  warning: (s: string) => colors.yellow(s),
  ok: (s: string) => colors.green(s),
  dim: (s: string) => colors.dim(s),
  bold: (s: string) => colors.bold(s),
  accent: (s: string) => colors.cyan(s),
};

export function writeJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
