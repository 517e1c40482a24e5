/**
 * Typed, position-aware access to one mapping of a located tree. Every getter reports a wrong type
 * as a diagnostic at the value's position and returns undefined, so normalisation goes on and the
 * user sees every problem of a file in one run. Keys are matched case-insensitively, as Traefik's
 * file provider does; keys nobody asked for are reported by `finish()` with the closest known key.
 */
import type { Diagnostic } from "../diagnostics.ts";
import { closestName } from "../text/suggest.ts";
import { parseDuration } from "./duration.ts";
import type { LNode, MapEntry, MapNode, SeqNode, SourcePos } from "./located.ts";
import type { Located } from "./model.ts";

export class Diagnostics {
  readonly list: Diagnostic[] = [];
  error(code: string, message: string, pos: SourcePos | undefined, path?: string, hint?: string): void {
    this.list.push(clean({ severity: "error", code, message, pos, path, hint }));
  }
  warning(code: string, message: string, pos: SourcePos | undefined, path?: string, hint?: string): void {
    this.list.push(clean({ severity: "warning", code, message, pos, path, hint }));
  }
}

function clean(d: Diagnostic): Diagnostic {
  const out: Diagnostic = { severity: d.severity, code: d.code, message: d.message };
  if (d.pos) out.pos = d.pos;
  if (d.path) out.path = d.path;
  if (d.hint) out.hint = d.hint;
  return out;
}

export function describeNode(node: LNode): string {
  if (node.kind === "map") return "a mapping";
  if (node.kind === "seq") return "a list";
  if (node.value === null) return "null";
  return `${typeof node.value} ${JSON.stringify(node.value)}`;
}

export class MapReader {
  private readonly byLower = new Map<string, [string, MapEntry]>();
  private readonly used = new Set<string>();

  constructor(
    readonly node: MapNode,
    readonly path: string,
    readonly diags: Diagnostics,
  ) {
    for (const [key, entry] of node.entries) {
      const lower = key.toLowerCase();
      const earlier = this.byLower.get(lower);
      if (earlier) {
        diags.error(
          "duplicate-key",
          `"${key}" is set twice (keys are case-insensitive)`,
          entry.keyPos,
          this.sub(key),
          `The first spelling, "${earlier[0]}", is at line ${earlier[1].keyPos.line}; keep one of them.`,
        );
        // The later spelling wins; the earlier one is reported here, not again as an unknown key.
        this.used.add(earlier[0]);
      }
      this.byLower.set(lower, [key, entry]);
    }
  }

  get pos(): SourcePos {
    return this.node.pos;
  }

  sub(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  has(key: string): boolean {
    return this.byLower.has(key.toLowerCase());
  }

  /** Returns the raw entry and marks the key as known. */
  entry(key: string): MapEntry | undefined {
    const hit = this.byLower.get(key.toLowerCase());
    if (!hit) return undefined;
    this.used.add(hit[0]);
    return hit[1];
  }

  private typeError(key: string, entry: MapEntry, expected: string): undefined {
    this.diags.error(
      "wrong-type",
      `${this.sub(key)} must be ${expected}, got ${describeNode(entry.value)}`,
      entry.value.pos,
      this.sub(key),
    );
    return undefined;
  }

  map(key: string): MapReader | undefined {
    const entry = this.entry(key);
    if (!entry) return undefined;
    // An empty value (`tls:` in YAML) is an empty mapping, as in Traefik ("allowEmpty").
    if (entry.value.kind === "scalar" && (entry.value.value === null || entry.value.value === "")) {
      return new MapReader(
        { kind: "map", entries: new Map(), pos: entry.value.pos },
        this.sub(key),
        this.diags,
      );
    }
    if (entry.value.kind !== "map") return this.typeError(key, entry, "a mapping");
    return new MapReader(entry.value, this.sub(key), this.diags);
  }

  string(key: string): Located<string> | undefined {
    const entry = this.entry(key);
    if (!entry) return undefined;
    const v = entry.value;
    if (v.kind !== "scalar" || v.value === null || typeof v.value === "boolean") {
      return this.typeError(key, entry, "a string");
    }
    return { value: String(v.value), pos: v.pos };
  }

  int(key: string): Located<number> | undefined {
    const entry = this.entry(key);
    if (!entry) return undefined;
    const v = entry.value;
    const n = v.kind === "scalar" ? scalarToInt(v.value) : undefined;
    if (n === undefined) return this.typeError(key, entry, "a whole number");
    return { value: n, pos: v.pos };
  }

  bool(key: string): Located<boolean> | undefined {
    const entry = this.entry(key);
    if (!entry) return undefined;
    const v = entry.value;
    if (v.kind === "scalar") {
      if (typeof v.value === "boolean") return { value: v.value, pos: v.pos };
      if (v.value === "true" || v.value === "false") return { value: v.value === "true", pos: v.pos };
    }
    return this.typeError(key, entry, "true or false");
  }

  /** A duration in milliseconds: Go syntax or a bare number of seconds. */
  duration(key: string): Located<number> | undefined {
    const entry = this.entry(key);
    if (!entry) return undefined;
    const v = entry.value;
    if (v.kind !== "scalar" || (typeof v.value !== "string" && typeof v.value !== "number")) {
      return this.typeError(key, entry, 'a duration such as "100ms", "30s" or a number of seconds');
    }
    const parsed = parseDuration(v.value);
    if (!parsed.ok) {
      this.diags.error(
        "invalid-duration",
        `${this.sub(key)}: ${parsed.message}`,
        v.pos,
        this.sub(key),
        'Use Go duration syntax ("100ms", "1m30s") or a bare number of seconds.',
      );
      return undefined;
    }
    return { value: parsed.ms, pos: v.pos };
  }

  seq(key: string): { node: SeqNode; path: string } | undefined {
    const entry = this.entry(key);
    if (!entry) return undefined;
    if (entry.value.kind !== "seq") return this.typeError(key, entry, "a list");
    return { node: entry.value, path: this.sub(key) };
  }

  /** A list of strings; a single string is accepted as a one-item list, as Traefik's parser does. */
  strings(key: string): Located<string>[] | undefined {
    const entry = this.entry(key);
    if (!entry) return undefined;
    const v = entry.value;
    if (v.kind === "scalar" && typeof v.value === "string") {
      // Traefik's labels and flags use comma-separated lists; a file string is one element.
      return [{ value: v.value, pos: v.pos }];
    }
    if (v.kind !== "seq") return this.typeError(key, entry, "a list of strings");
    const out: Located<string>[] = [];
    v.items.forEach((item, i) => {
      if (item.kind !== "scalar" || item.value === null || typeof item.value === "boolean") {
        this.diags.error(
          "wrong-type",
          `${this.sub(key)}[${i}] must be a string, got ${describeNode(item)}`,
          item.pos,
          `${this.sub(key)}[${i}]`,
        );
        return;
      }
      out.push({ value: String(item.value), pos: item.pos });
    });
    return out;
  }

  /** Each named child mapping (routers, services, ...), in source order. */
  namedMaps(key: string): { name: string; reader: MapReader; keyPos: SourcePos }[] {
    const section = this.map(key);
    if (!section) return [];
    const out: { name: string; reader: MapReader; keyPos: SourcePos }[] = [];
    for (const [name, entry] of section.node.entries) {
      section.used.add(name);
      const child = section.map(name);
      if (child) out.push({ name, reader: child, keyPos: entry.keyPos });
    }
    return out;
  }

  /** Reports keys that no getter asked for. */
  finish(known: readonly string[]): void {
    for (const [key, entry] of this.node.entries) {
      if (this.used.has(key)) continue;
      const suggestion = closestName(key, known);
      this.diags.error(
        "unknown-key",
        `unknown key "${key}" in ${this.path || "the top level"}`,
        entry.keyPos,
        this.sub(key),
        suggestion ? `Did you mean "${suggestion}"?` : `Known keys here: ${known.join(", ")}.`,
      );
    }
  }
}

export function scalarToInt(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isInteger(value)) return value;
  if (typeof value === "string" && /^[+-]?\d+$/.test(value.trim())) return Number(value.trim());
  return undefined;
}

/** Readers for each mapping item of a list; non-mapping items are reported. */
export function mapItems(list: { node: SeqNode; path: string }, diags: Diagnostics): MapReader[] {
  const out: MapReader[] = [];
  list.node.items.forEach((item, i) => {
    const path = `${list.path}[${i}]`;
    if (item.kind !== "map") {
      diags.error("wrong-type", `${path} must be a mapping, got ${describeNode(item)}`, item.pos, path);
      return;
    }
    out.push(new MapReader(item, path, diags));
  });
  return out;
}
