/**
 * Positions inside a string value. Diagnostics about part of a value (a rule error at column 12 of
 * the rule) must point into the file, which needs to know whether the value was quoted there.
 */
import { readFileSync } from "node:fs";
import type { SourcePos } from "./located.ts";

const linesCache = new Map<string, string[] | null>();

function sourceLine(file: string, line: number): string | undefined {
  let lines = linesCache.get(file);
  if (lines === undefined) {
    try {
      lines = readFileSync(file, "utf8")
        .replace(/^\uFEFF/, "")
        .split(/\r?\n/);
    } catch {
      lines = null;
    }
    linesCache.set(file, lines);
  }
  return lines?.[line - 1];
}

/** The position of the character at `offset` (0-based) inside the string value that starts at `pos`. */
export function positionInValue(pos: SourcePos, offset: number): SourcePos {
  const line = sourceLine(pos.file, pos.line);
  const first = line?.[pos.column - 1];
  const quoted = first === '"' || first === "'";
  return { file: pos.file, line: pos.line, column: pos.column + offset + (quoted ? 1 : 0) };
}
