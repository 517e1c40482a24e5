/**
 * Strict JSON (RFC 8259) to a located tree. JSON.parse gives no positions and accepts duplicate
 * keys silently, so this is a small recursive-descent parser that records where every key and value
 * starts and refuses what a configuration file should not contain.
 */
import { describeChar, LineIndex } from "./line-index.ts";
import { ConfigSyntaxError, type LNode, type MapEntry, type MapNode, type SourcePos } from "./located.ts";

/** Deeper than this is certainly not a configuration file, and recursion must stop somewhere. */
const MAX_DEPTH = 1000;

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};

/** Parses a JSON configuration document; the top level must be an object. BOM already removed. */
export function parseJson(text: string, file: string): MapNode {
  return new JsonParser(text, file).document();
}

class JsonParser {
  private i = 0;
  private readonly lines: LineIndex;

  constructor(
    private readonly s: string,
    file: string,
  ) {
    this.lines = new LineIndex(s, file);
  }

  document(): MapNode {
    this.skipWhitespace();
    if (this.i >= this.s.length) {
      throw this.error(
        "the file is empty; a JSON configuration must be an object",
        this.i,
        "write at least {}",
      );
    }
    const start = this.i;
    const root = this.value(0);
    if (root.kind !== "map") {
      throw this.error(
        `the top level of a configuration file must be an object, found ${root.kind === "seq" ? "an array" : "a single value"}`,
        start,
      );
    }
    this.skipWhitespace();
    if (this.i < this.s.length) {
      throw this.error(`unexpected ${this.describeHere()} after the top-level object`, this.i);
    }
    return root;
  }

  private value(depth: number): LNode {
    if (depth > MAX_DEPTH) throw this.error(`nested more than ${MAX_DEPTH} levels deep`, this.i);
    const start = this.i;
    const ch = this.s[this.i];
    switch (ch) {
      case "{":
        return this.object(depth);
      case "[":
        return this.array(depth);
      case '"':
        return { kind: "scalar", value: this.string(), pos: this.pos(start) };
      case "t":
        return this.literal("true", true);
      case "f":
        return this.literal("false", false);
      case "n":
        return this.literal("null", null);
      default:
        if (ch === "-" || (ch !== undefined && ch >= "0" && ch <= "9")) return this.number();
        throw this.unexpected("a value");
    }
  }

  private object(depth: number): MapNode {
    const start = this.i;
    this.i++; // {
    const entries = new Map<string, MapEntry>();
    this.skipWhitespace();
    if (this.s[this.i] === "}") {
      this.i++;
      return { kind: "map", entries, pos: this.pos(start) };
    }
    for (;;) {
      this.skipWhitespace();
      if (this.s[this.i] !== '"') {
        if (this.s[this.i] === "}") throw this.error("a trailing comma is not allowed in JSON", this.i);
        throw this.unexpected("a property name in double quotes");
      }
      const keyStart = this.i;
      const key = this.string();
      const keyPos = this.pos(keyStart);
      const first = entries.get(key);
      if (first) {
        throw new ConfigSyntaxError(
          `duplicate key ${JSON.stringify(key)}`,
          keyPos,
          `first defined at line ${first.keyPos.line}, column ${first.keyPos.column}`,
        );
      }
      this.skipWhitespace();
      if (this.s[this.i] !== ":") throw this.unexpected("':' after a property name");
      this.i++;
      this.skipWhitespace();
      entries.set(key, { keyPos, value: this.value(depth + 1) });
      this.skipWhitespace();
      const next = this.s[this.i];
      if (next === ",") {
        this.i++;
        continue;
      }
      if (next === "}") {
        this.i++;
        return { kind: "map", entries, pos: this.pos(start) };
      }
      throw this.unexpected("',' or '}' after a property value");
    }
  }

  private array(depth: number): LNode {
    const start = this.i;
    this.i++; // [
    const items: LNode[] = [];
    this.skipWhitespace();
    if (this.s[this.i] === "]") {
      this.i++;
      return { kind: "seq", items, pos: this.pos(start) };
    }
    for (;;) {
      this.skipWhitespace();
      if (this.s[this.i] === "]") throw this.error("a trailing comma is not allowed in JSON", this.i);
      items.push(this.value(depth + 1));
      this.skipWhitespace();
      const next = this.s[this.i];
      if (next === ",") {
        this.i++;
        continue;
      }
      if (next === "]") {
        this.i++;
        return { kind: "seq", items, pos: this.pos(start) };
      }
      throw this.unexpected("',' or ']' after an array element");
    }
  }

  /** Reads a string starting at the opening quote; returns its decoded value. */
  private string(): string {
    const open = this.i;
    this.i++;
    let out = "";
    let chunkStart = this.i;
    for (;;) {
      if (this.i >= this.s.length) throw this.error("unterminated string", open, 'add the closing "');
      const code = this.s.charCodeAt(this.i);
      if (code === 0x22) {
        out += this.s.slice(chunkStart, this.i);
        this.i++;
        return out;
      }
      if (code < 0x20) {
        const hint =
          code === 0x0a
            ? 'a string cannot span lines; write \\n for a line break or add the closing "'
            : undefined;
        throw this.error(
          `control character ${describeChar(this.s[this.i]!)} in a string must be escaped`,
          this.i,
          hint,
        );
      }
      if (code !== 0x5c) {
        this.i++;
        continue;
      }
      out += this.s.slice(chunkStart, this.i);
      const escapeStart = this.i;
      const e = this.s[this.i + 1];
      if (e === "u") {
        const hex = this.s.slice(this.i + 2, this.i + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) {
          throw this.error("invalid \\u escape: expected four hexadecimal digits", escapeStart);
        }
        out += String.fromCharCode(Number.parseInt(hex, 16));
        this.i += 6;
      } else {
        const simple = e === undefined ? undefined : SIMPLE_ESCAPES[e];
        if (simple === undefined) {
          throw this.error(
            e === undefined ? "unterminated string" : `invalid escape '\\${e}' in a string`,
            escapeStart,
            'JSON allows \\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX',
          );
        }
        out += simple;
        this.i += 2;
      }
      chunkStart = this.i;
    }
  }

  private number(): LNode {
    const start = this.i;
    NUMBER.lastIndex = start;
    const match = NUMBER.exec(this.s);
    // A valid number must not run straight into more number-like characters ("01", "1.", "1e").
    const end = match ? start + match[0].length : start;
    if (!match || /[0-9.eE+-]/.test(this.s[end] ?? "")) {
      throw this.error(
        "invalid number",
        start,
        "JSON numbers look like 12, -3, 0.5 or 1e6 (no leading zeros)",
      );
    }
    this.i = end;
    return { kind: "scalar", value: Number(match[0]), pos: this.pos(start) };
  }

  private literal(word: string, value: boolean | null): LNode {
    const start = this.i;
    if (!this.s.startsWith(word, this.i) || /[A-Za-z0-9_]/.test(this.s[this.i + word.length] ?? "")) {
      throw this.unexpected("a value", "strings must be in double quotes");
    }
    this.i += word.length;
    return { kind: "scalar", value, pos: this.pos(start) };
  }

  private skipWhitespace(): void {
    for (;;) {
      const ch = this.s[this.i];
      if (ch === " " || ch === "\t" || ch === "\n" || ch === "\r") this.i++;
      else return;
    }
  }

  private describeHere(): string {
    if (this.i >= this.s.length) return "end of file";
    return `character ${describeChar(String.fromCodePoint(this.s.codePointAt(this.i)!))}`;
  }

  private unexpected(expected: string, hint?: string): ConfigSyntaxError {
    const ch = this.s[this.i];
    let why = hint;
    if (ch === "/" && (this.s[this.i + 1] === "/" || this.s[this.i + 1] === "*")) {
      why = "JSON has no comments; use YAML or TOML for a commented configuration";
    } else if (ch === "'") {
      why = "JSON strings and property names use double quotes";
    }
    return this.error(`expected ${expected}, found ${this.describeHere()}`, this.i, why);
  }

  private error(message: string, offset: number, hint?: string): ConfigSyntaxError {
    return new ConfigSyntaxError(message, this.pos(offset), hint);
  }

  private pos(offset: number): SourcePos {
    return this.lines.pos(offset);
  }
}
