/**
 * TOML to a located tree. smol-toml does the real parsing (values, validation, errors) but keeps no
 * positions, so a small scanner walks the same text a second time and records where each key path
 * and each value starts. The tree is then built from smol-toml's value, with positions looked up by
 * path. The scanner only ever sees text smol-toml accepted, so it can afford to be simple; if it
 * misses something, the affected nodes fall back to the position of their parent.
 */
import { parse, TomlDate, TomlError } from "smol-toml";
import { LineIndex } from "./line-index.ts";
import { ConfigSyntaxError, type LNode, type MapEntry, type MapNode, type SourcePos } from "./located.ts";

const MAX_DEPTH = 1000;

/** Parses a TOML configuration document. BOM already removed. */
export function parseToml(text: string, file: string): MapNode {
  const lines = new LineIndex(text, file);
  let value: unknown;
  try {
    value = parse(text, { integersAsBigInt: "asNeeded" });
  } catch (error) {
    throw fromTomlError(error, file);
  }
  let located: LocNode | undefined;
  try {
    located = new Locator(text).run();
  } catch {
    // A scanner bug must not refuse a file smol-toml accepted; positions degrade to the root instead.
    located = undefined;
  }
  const rootPos = lines.pos(0);
  const root = new TreeBuilder(lines).build(value, located, rootPos, 0);
  if (root.kind !== "map")
    throw new ConfigSyntaxError("the top level of a TOML file must be a table", rootPos);
  return root;
}

function fromTomlError(error: unknown, file: string): ConfigSyntaxError {
  if (error instanceof TomlError) {
    // smol-toml's message is "Invalid TOML document: <reason>\n\n<code excerpt>"; keep the reason.
    const firstLine = error.message.split("\n")[0] ?? error.message;
    const reason = firstLine.replace(/^Invalid TOML document:\s*/, "");
    const hint = /redefine/.test(reason)
      ? "in TOML every key and every [table] may be defined only once"
      : /^invalid value/i.test(reason)
        ? 'TOML strings must be quoted, e.g. service = "db"'
        : undefined;
    return new ConfigSyntaxError(reason, { file, line: error.line, column: error.column }, hint);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new ConfigSyntaxError(`invalid TOML: ${message}`, { file, line: 1, column: 1 });
}

// ---------------------------------------------------------------------------------------------
// Locations form a tree that mirrors the document: children by key (tables) or index (arrays).

class LocNode {
  /** Offset of the key (for array items: of the item itself). */
  key = 0;
  /** Offset of the value: its first character, or the header / key that created a table. */
  value = 0;
  /** Created only as a side effect of a longer header or dotted key; an explicit header replaces it. */
  implicit = true;
  /** Number of elements so far if this is an array of tables. */
  aotCount: number | undefined;
  readonly children = new Map<string | number, LocNode>();
  /** Child keys in source order (smol-toml's objects put integer-like keys first). */
  readonly order: string[] = [];
}

// ---------------------------------------------------------------------------------------------
// The locator: a scanner over valid TOML that records positions by path.

interface KeyPart {
  name: string;
  offset: number;
}

const BARE_KEY_STOP = new Set([" ", "\t", "\r", "\n", ".", "=", "[", "]", "{", "}", ",", "#", '"', "'"]);
const VALUE_STOP = new Set([",", "]", "}", "#", "\n", "\r"]);

class Locator {
  private i = 0;
  private readonly root = new LocNode();

  constructor(private readonly s: string) {}

  run(): LocNode {
    let table = this.root;
    while (this.i < this.s.length) {
      const before = this.i;
      this.skipBlank(true);
      if (this.i >= this.s.length) break;
      const ch = this.s[this.i];
      if (ch === "[") table = this.header();
      else this.keyValue(table, 0);
      // Anything a line still holds (normally a comment) is skipped with the blanks above;
      // make sure we always move forward even on text we did not expect.
      if (this.i === before) this.i++;
    }
    return this.root;
  }

  /** `[a.b]` or `[[a.b]]`; returns the table that the following key/value lines fill. */
  private header(): LocNode {
    const start = this.i;
    const isArray = this.s[this.i + 1] === "[";
    this.i += isArray ? 2 : 1;
    this.skipBlank(false);
    const parts = this.dottedKey();
    this.skipBlank(false);
    this.i += isArray ? 2 : 1; // ] or ]]
    let node = this.root;
    parts.forEach((part, index) => {
      const last = index === parts.length - 1;
      node = this.record(node, part.name, part.offset, start, !last);
      if (last && isArray) {
        const count = node.aotCount ?? 0;
        node.aotCount = count + 1;
        node = this.item(node, count, start);
      } else if (node.aotCount !== undefined) {
        // A key naming an array of tables continues in its latest element.
        node = this.item(node, node.aotCount - 1, start);
      }
    });
    return node;
  }

  /** `a.b.c = value`, at top level or inside an inline table. */
  private keyValue(table: LocNode, depth: number): void {
    const parts = this.dottedKey();
    this.skipBlank(false);
    if (this.s[this.i] === "=") this.i++;
    this.skipBlank(false);
    let node = table;
    parts.forEach((part, index) => {
      const last = index === parts.length - 1;
      node = this.record(node, part.name, part.offset, last ? this.i : part.offset, !last);
    });
    this.value(node, depth);
  }

  /** Skips over a value whose start is already recorded in `node`, recording everything inside it. */
  private value(node: LocNode, depth: number): void {
    if (depth > MAX_DEPTH) throw new Error("too deep");
    const ch = this.s[this.i];
    if (ch === "{") {
      this.i++;
      for (;;) {
        this.skipBlank(true);
        const c = this.s[this.i];
        if (c === undefined) return;
        if (c === "}") {
          this.i++;
          return;
        }
        if (c === ",") {
          this.i++;
          continue;
        }
        const before = this.i;
        this.keyValue(node, depth + 1);
        if (this.i === before) this.i++;
      }
    }
    if (ch === "[") {
      this.i++;
      let index = 0;
      for (;;) {
        this.skipBlank(true);
        const c = this.s[this.i];
        if (c === undefined) return;
        if (c === "]") {
          this.i++;
          return;
        }
        if (c === ",") {
          this.i++;
          continue;
        }
        const item = this.item(node, index++, this.i);
        const before = this.i;
        this.value(item, depth + 1);
        if (this.i === before) this.i++;
      }
    }
    if (ch === '"' || ch === "'") {
      this.string();
      return;
    }
    while (this.i < this.s.length && !VALUE_STOP.has(this.s[this.i]!)) this.i++;
  }

  private dottedKey(): KeyPart[] {
    const parts: KeyPart[] = [];
    for (;;) {
      this.skipBlank(false);
      const offset = this.i;
      const ch = this.s[this.i];
      let name: string;
      if (ch === '"' || ch === "'") {
        name = this.string();
      } else {
        while (this.i < this.s.length && !BARE_KEY_STOP.has(this.s[this.i]!)) this.i++;
        name = this.s.slice(offset, this.i);
      }
      parts.push({ name, offset });
      this.skipBlank(false);
      if (this.s[this.i] !== "." || this.i === offset) return parts;
      this.i++;
    }
  }

  /** Skips a string of any of the four kinds starting at the quote; returns its decoded text. */
  private string(): string {
    const q = this.s[this.i]!;
    const multi = this.s.startsWith(q.repeat(3), this.i);
    this.i += multi ? 3 : 1;
    const start = this.i;
    let end = this.s.length;
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c === "\\" && q === '"') {
        this.i += 2;
        continue;
      }
      if (c === q) {
        if (!multi) {
          end = this.i;
          this.i++;
          break;
        }
        if (this.s.startsWith(q.repeat(3), this.i)) {
          // Up to two more quotes just before the closing three belong to the content.
          let run = 3;
          while (run < 5 && this.s[this.i + run] === q) run++;
          end = this.i + run - 3;
          this.i += run;
          break;
        }
      }
      if (!multi && (c === "\n" || c === "\r")) {
        end = this.i;
        break;
      }
      this.i++;
    }
    const raw = this.s.slice(start, end);
    return q === '"' ? unescapeBasic(raw) : raw;
  }

  /** Skips spaces and tabs, comments, and (when allowed) line breaks. */
  private skipBlank(newlines: boolean): void {
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c === " " || c === "\t") this.i++;
      else if (c === "#") {
        while (this.i < this.s.length && this.s[this.i] !== "\n") this.i++;
      } else if (newlines && (c === "\n" || c === "\r")) this.i++;
      else return;
    }
  }

  /**
   * The child `name` of a table, recording where it is the first time it appears (or when an
   * explicit header replaces the position an implicit creation gave it).
   */
  private record(parent: LocNode, name: string, key: number, value: number, implicit: boolean): LocNode {
    let node = parent.children.get(name);
    if (node === undefined) {
      node = new LocNode();
      parent.children.set(name, node);
      parent.order.push(name);
    } else if (!node.implicit || implicit) {
      return node;
    }
    node.key = key;
    node.value = value;
    node.implicit = implicit;
    return node;
  }

  /** Element `index` of an array, positioned at `offset` the first time it is seen. */
  private item(parent: LocNode, index: number, offset: number): LocNode {
    let node = parent.children.get(index);
    if (node === undefined) {
      node = new LocNode();
      node.key = offset;
      node.value = offset;
      node.implicit = false;
      parent.children.set(index, node);
    }
    return node;
  }
}

/** Decodes the escapes of a TOML basic string (only needed for quoted keys). */
function unescapeBasic(raw: string): string {
  return raw.replace(
    /\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|x([0-9a-fA-F]{2})|(.))/gs,
    (whole, u, U, x, c) => {
      const hex = (u ?? U ?? x) as string | undefined;
      if (hex !== undefined) {
        const code = Number.parseInt(hex, 16);
        return code <= 0x10ffff ? String.fromCodePoint(code) : whole;
      }
      switch (c) {
        case "b":
          return "\b";
        case "t":
          return "\t";
        case "n":
          return "\n";
        case "f":
          return "\f";
        case "r":
          return "\r";
        case "e":
          return "\u001b";
        case '"':
          return '"';
        case "\\":
          return "\\";
        default:
          return whole;
      }
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Building the tree from smol-toml's value.

class TreeBuilder {
  constructor(private readonly lines: LineIndex) {}

  /** `located` is the matching node of the location tree, if the scanner found one. */
  build(value: unknown, located: LocNode | undefined, fallback: SourcePos, depth: number): LNode {
    const pos = located ? this.lines.pos(located.value) : fallback;
    if (depth > MAX_DEPTH) throw new ConfigSyntaxError(`nested more than ${MAX_DEPTH} levels deep`, pos);
    if (Array.isArray(value)) {
      const items = value.map((item, index) =>
        this.build(item, located?.children.get(index), pos, depth + 1),
      );
      return { kind: "seq", items, pos };
    }
    if (value instanceof TomlDate) return { kind: "scalar", value: value.toISOString(), pos };
    if (value instanceof Date) return { kind: "scalar", value: value.toISOString(), pos };
    if (typeof value === "bigint") {
      const asNumber = Number(value);
      return { kind: "scalar", value: Number.isSafeInteger(asNumber) ? asNumber : value.toString(), pos };
    }
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") {
      return { kind: "scalar", value, pos };
    }
    if (typeof value === "object" && value !== null) {
      const table = value as Record<string, unknown>;
      const entries = new Map<string, MapEntry>();
      const present = Object.keys(table);
      const presentSet = new Set(present);
      const ordered = (located?.order ?? []).filter((k) => presentSet.has(k));
      const orderedSet = new Set(ordered);
      for (const key of [...ordered, ...present.filter((k) => !orderedSet.has(k))]) {
        const child = located?.children.get(key);
        const keyPos = child ? this.lines.pos(child.key) : pos;
        entries.set(key, { keyPos, value: this.build(table[key], child, keyPos, depth + 1) });
      }
      return { kind: "map", entries, pos };
    }
    // smol-toml produces nothing else; keep the tree well-formed if it ever does.
    return { kind: "scalar", value: String(value), pos };
  }
}
