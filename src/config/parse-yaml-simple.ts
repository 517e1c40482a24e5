/**
 * A fast path for the YAML most configuration files are written in: block mappings and sequences
 * of one-line scalars, with comments. The `yaml` package parses about 3 MiB/s (lexer, CST, then
 * document), which made YAML the slowest format to validate; this line-oriented reader does the
 * same files an order of magnitude faster.
 *
 * It builds exactly the tree `parseYaml` would (values, key order, every position), or returns
 * null, and then the `yaml` package decides. Null is the answer for everything outside the
 * subset: anchors, aliases, tags, merge keys, block scalars, multi-line scalars, unknown escapes in
 * double quotes, flow collections other than one-line lists of scalars (and {}), tabs, directives, several documents, duplicate keys, and any
 * line it cannot place. So every error message still comes from the one full parser.
 *
 * Plain scalars are typed by the YAML 1.2 core schema, as `yaml` does by default: null, booleans,
 * decimal/octal/hex integers, floats (with .inf and .nan); everything else is a string.
 */
import type { LNode, MapEntry, MapNode, Scalar, SourcePos } from "./located.ts";

/** Deeper than any real configuration; deeper files take the full parser and its own limit. */
const MAX_DEPTH = 100;
/** `yaml` refuses implicit keys longer than 1024 characters; leave those to it. */
const MAX_KEY_LENGTH = 1000;

/** Signals "outside the subset": caught once, at the top. */
class NotSimple extends Error {}
const notSimple = new NotSimple("not simple YAML");

/**
 * Characters that cannot start a plain scalar in block context (YAML 1.2 c-indicator), except that
 * "-", "?" and ":" followed by a non-space can; "?" is left to the full parser.
 */
const INDICATOR = new Set([
  "-",
  "?",
  ":",
  ",",
  "[",
  "]",
  "{",
  "}",
  "#",
  "&",
  "*",
  "!",
  "|",
  ">",
  "'",
  '"',
  "%",
  "@",
  "`",
]);

/** Whether `text` has what the subset never reads: tabs, lone CRs, other control characters, NEL, LS/PS, BOM. */
function hasCharactersOutsideSubset(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x20 && c < 0x7f) continue;
    if (c === 10) continue;
    if (c === 13) {
      if (text.charCodeAt(i + 1) === 10) continue;
      return true;
    }
    if (c < 0x20 || c === 0x7f || c === 0x85 || c === 0x2028 || c === 0x2029 || c === 0xfeff) return true;
  }
  return false;
}

const NULL = /^(?:~|[Nn]ull|NULL)$/;
const BOOL = /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/;
const INT_OCT = /^0o[0-7]+$/;
const INT = /^[-+]?[0-9]+$/;
const INT_HEX = /^0x[0-9a-fA-F]+$/;
const FLOAT_NAN = /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/;
const FLOAT_EXP = /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/;
const FLOAT = /^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/;
/** First character of every plain scalar that is not a string under the core schema. */
const MAYBE_TYPED = /^[-+.0-9~nNtTfF]/;

/** A plain scalar's value under the YAML 1.2 core schema, in the order `yaml` tries the tags. */
export function coreSchemaValue(text: string): Scalar {
  if (!MAYBE_TYPED.test(text)) return text;
  if (NULL.test(text)) return null;
  if (BOOL.test(text)) return text[0] === "t" || text[0] === "T";
  if (INT_OCT.test(text)) return Number.parseInt(text.slice(2), 8);
  if (INT.test(text)) return Number.parseInt(text, 10);
  if (INT_HEX.test(text)) return Number.parseInt(text.slice(2), 16);
  if (FLOAT_NAN.test(text)) {
    if (text.endsWith("nan") || text.endsWith("NaN") || text.endsWith("NAN")) return Number.NaN;
    return text[0] === "-" ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY;
  }
  if (FLOAT_EXP.test(text) || FLOAT.test(text)) return Number.parseFloat(text);
  return text;
}

/** Where a one-line scalar ends and what it is. */
interface InlineScalar {
  value: Scalar;
  /** Column (0-based) just past the scalar's text. */
  end: number;
}

class SimpleYamlReader {
  private readonly lines: string[];
  /** Leading spaces of each line; -1 for blank and comment-only lines. */
  private readonly indents: Int32Array;

  constructor(
    text: string,
    private readonly file: string,
  ) {
    this.lines = text.split("\n");
    this.indents = new Int32Array(this.lines.length);
    for (let i = 0; i < this.lines.length; i++) {
      let line = this.lines[i] ?? "";
      if (line.endsWith("\r")) {
        line = line.slice(0, -1);
        this.lines[i] = line;
      }
      let n = 0;
      while (line.charCodeAt(n) === 32) n++;
      this.indents[i] = n === line.length || line.charCodeAt(n) === 35 /* # */ ? -1 : n;
    }
  }

  pos(line: number, column: number): SourcePos {
    return { file: this.file, line: line + 1, column: column + 1 };
  }

  /** The first line at or after `from` with content, or the line count. */
  next(from: number): number {
    let i = from;
    while (i < this.lines.length && this.indents[i] === -1) i++;
    return i;
  }

  indentOf(line: number): number {
    return line < this.lines.length ? (this.indents[line] ?? -1) : -1;
  }

  document(): MapNode {
    let first = this.next(0);
    for (let i = first; i < this.lines.length; i++) {
      const line = this.lines[i] ?? "";
      // Document markers anywhere but a leading "---", and directives, go to the full parser.
      if (line.startsWith("---") || line.startsWith("...")) {
        if (i !== first || line !== "---") throw notSimple;
      }
    }
    if (first < this.lines.length && this.lines[first] === "---") first = this.next(first + 1);
    // Nothing but comments and blank lines: an empty mapping, placed where the full parser puts it.
    if (first >= this.lines.length) return { kind: "map", entries: new Map(), pos: this.pos(0, 0) };
    const indent = this.indentOf(first);
    if (this.isSeqItem(first, indent)) throw notSimple; // a list at the top: an error, worded by the full parser
    const [root, after] = this.map(first, indent, indent, 0);
    if (after < this.lines.length) throw notSimple;
    return root;
  }

  private isSeqItem(line: number, column: number): boolean {
    const text = this.lines[line] ?? "";
    return (
      text.charCodeAt(column) === 45 /* - */ &&
      (column + 1 === text.length || text.charCodeAt(column + 1) === 32)
    );
  }

  /** A block node starting on content line `line` at its indentation. Returns the node and the next line. */
  private block(line: number, depth: number): [LNode, number] {
    if (depth > MAX_DEPTH) throw notSimple;
    const indent = this.indentOf(line);
    if (this.isSeqItem(line, indent)) return this.seq(line, indent, depth);
    return this.map(line, indent, indent, depth);
  }

  /**
   * A block mapping whose keys sit at column `indent`; the first key is on `line` at `column`
   * (equal to `indent`, or further right inside a sequence item: `- key: value`).
   */
  private map(line: number, column: number, indent: number, depth: number): [MapNode, number] {
    const entries = new Map<string, MapEntry>();
    const node: MapNode = { kind: "map", entries, pos: this.pos(line, column) };
    let at = line;
    let col = column;
    for (;;) {
      const text = this.lines[at] ?? "";
      const key = this.key(text, col);
      if (!key || entries.has(key.name)) throw notSimple;
      const keyPos = this.pos(at, col);
      let valueCol = key.colon + 1;
      while (text.charCodeAt(valueCol) === 32) valueCol++;
      let value: LNode;
      let next: number;
      if (valueCol === text.length || text.charCodeAt(valueCol) === 35 /* # */) {
        // No value on this line: a nested block, a list at the same indentation, or null.
        next = this.next(at + 1);
        const childIndent = this.indentOf(next);
        if (childIndent > indent) {
          [value, next] = this.block(next, depth + 1);
        } else if (childIndent === indent && this.isSeqItem(next, indent)) {
          [value, next] = this.seq(next, indent, depth + 1);
        } else {
          value = { kind: "scalar", value: null, pos: this.pos(at, valueCol) };
        }
      } else {
        value = this.inline(at, valueCol);
        next = this.next(at + 1);
      }
      entries.set(key.name, { keyPos, value });
      const nextIndent = this.indentOf(next);
      if (nextIndent < indent) return [node, next]; // dedent or end of text (-1)
      if (nextIndent > indent || this.isSeqItem(next, indent)) throw notSimple;
      at = next;
      col = indent;
    }
  }

  /** A block sequence whose "-" sit at column `indent`, starting on `line`. */
  private seq(line: number, indent: number, depth: number): [LNode, number] {
    if (depth > MAX_DEPTH) throw notSimple;
    const items: LNode[] = [];
    const node: LNode = { kind: "seq", items, pos: this.pos(line, indent) };
    let at = line;
    for (;;) {
      const text = this.lines[at] ?? "";
      let col = indent + 1;
      while (text.charCodeAt(col) === 32) col++;
      let next: number;
      if (col >= text.length || text.charCodeAt(col) === 35 /* # */) {
        next = this.next(at + 1);
        if (this.indentOf(next) > indent) {
          let item: LNode;
          [item, next] = this.block(next, depth + 1);
          items.push(item);
        } else {
          items.push({ kind: "scalar", value: null, pos: this.pos(at, col) });
        }
      } else if (this.isSeqItem(at, col)) {
        throw notSimple; // "- - x"
      } else if (this.key(text, col)) {
        let item: MapNode;
        [item, next] = this.map(at, col, col, depth + 1);
        items.push(item);
      } else {
        items.push(this.inline(at, col));
        next = this.next(at + 1);
      }
      const nextIndent = this.indentOf(next);
      if (nextIndent < indent) return [node, next];
      if (nextIndent > indent) throw notSimple;
      if (!this.isSeqItem(next, indent)) return [node, next]; // the enclosing mapping goes on
      at = next;
    }
  }

  /**
   * The key of a `key: value` line starting at `col`: its name and the column of its ":", or null
   * when the text there is not a simple key (then it may be a scalar, or outside the subset).
   */
  private key(text: string, col: number): { name: string; colon: number } | null {
    const first = text[col];
    if (first === '"' || first === "'") {
      const quoted = quotedScalar(text, col);
      if (!quoted) return null;
      let colon = quoted.end;
      while (text.charCodeAt(colon) === 32) colon++;
      if (text.charCodeAt(colon) !== 58 /* : */ || !separatesValue(text, colon)) return null;
      if (colon - col > MAX_KEY_LENGTH) throw notSimple;
      return { name: quoted.value, colon };
    }
    if (!canStartPlain(text, col)) return null;
    let colon = text.indexOf(":", col);
    while (colon >= 0 && !separatesValue(text, colon)) colon = text.indexOf(":", colon + 1);
    if (colon < 0) return null;
    const hash = text.indexOf(" #", col);
    if (hash >= 0 && hash < colon) return null;
    if (colon - col > MAX_KEY_LENGTH) throw notSimple;
    // Only spaces end a key: trimEnd() would also drop no-break and other Unicode spaces.
    let end = colon;
    while (end > col && text.charCodeAt(end - 1) === 32) end--;
    const name = text.slice(col, end);
    // The merge key "<<" resolves to a merge, not a string.
    if (name === "<<") throw notSimple;
    return { name, colon };
  }

  /**
   * A one-line flow sequence of scalars, `[a, "b c", 1]` (a trailing comma allowed, as in YAML).
   * Plain items with ":" or "#" in them, nested collections and empty items go to the full parser.
   */
  private flowSequence(line: number, col: number): LNode {
    const text = this.lines[line] ?? "";
    const items: LNode[] = [];
    let i = col + 1;
    for (;;) {
      while (text.charCodeAt(i) === 32) i++;
      if (text[i] === "]") break; // "[]", "[ ]", or after a trailing comma
      const start = i;
      const first = text[start];
      let value: Scalar;
      if (first === '"' || first === "'") {
        const quoted = quotedScalar(text, start);
        if (!quoted) throw notSimple;
        value = quoted.value;
        i = quoted.end;
      } else {
        if (first === undefined || INDICATOR.has(first)) throw notSimple;
        i = flowItemEnd(text, start);
        let end = i;
        while (end > start && text.charCodeAt(end - 1) === 32) end--;
        const raw = text.slice(start, end);
        if (raw === "<<") throw notSimple;
        value = coreSchemaValue(raw);
      }
      items.push({ kind: "scalar", value, pos: this.pos(line, start) });
      while (text.charCodeAt(i) === 32) i++;
      if (text[i] === "]") break;
      if (text[i] !== ",") throw notSimple;
      i++;
    }
    if (!onlyCommentAfter(text, i + 1)) throw notSimple;
    return { kind: "seq", items, pos: this.pos(line, col) };
  }

  /** A one-line scalar or empty flow collection at `col`, followed by nothing but a comment. */
  private inline(line: number, col: number): LNode {
    const text = this.lines[line] ?? "";
    const pos = this.pos(line, col);
    const first = text[col];
    let scalar: InlineScalar | null;
    if (first === '"' || first === "'") {
      scalar = quotedScalar(text, col);
    } else if (first === "[") {
      return this.flowSequence(line, col);
    } else if (first === "{") {
      let end = col + 1;
      while (text.charCodeAt(end) === 32) end++;
      if (text[end] !== "}" || !onlyCommentAfter(text, end + 1)) throw notSimple;
      return { kind: "map", entries: new Map(), pos };
    } else {
      scalar = plainScalar(text, col);
    }
    if (!scalar || !onlyCommentAfter(text, scalar.end)) throw notSimple;
    return { kind: "scalar", value: scalar.value, pos };
  }
}

/** Where a plain item of a flow sequence ends: at a flow indicator, or at ":" or "#" (left to the full parser). */
function flowItemEnd(text: string, from: number): number {
  let i = from;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    // , [ ] { } : #
    if (c === 44 || c === 91 || c === 93 || c === 123 || c === 125 || c === 58 || c === 35) break;
    i++;
  }
  return i;
}

/** A ":" that ends a key: followed by a space or the end of the line. */
function separatesValue(text: string, colon: number): boolean {
  return colon + 1 === text.length || text.charCodeAt(colon + 1) === 32;
}

function canStartPlain(text: string, col: number): boolean {
  const first = text[col];
  if (first === undefined || first === " ") return false;
  if (!INDICATOR.has(first)) return true;
  if (first !== "-" && first !== ":") return false;
  const second = text[col + 1];
  return second !== undefined && second !== " ";
}

/** Spaces, then the end of the line or a comment ("#" after at least one space). */
function onlyCommentAfter(text: string, from: number): boolean {
  let i = from;
  while (text.charCodeAt(i) === 32) i++;
  return i === text.length || (i > from && text.charCodeAt(i) === 35);
}

/** A plain scalar from `col` to the end of the line or a comment; null if it contains a mapping. */
function plainScalar(text: string, col: number): InlineScalar | null {
  if (!canStartPlain(text, col)) return null;
  const hash = text.indexOf(" #", col);
  let end = hash < 0 ? text.length : hash;
  while (end > col && text.charCodeAt(end - 1) === 32) end--;
  const raw = text.slice(col, end);
  // "a: b: c" and "a: b:" are errors for `yaml`; a plain "<<" would be a merge.
  if (raw.includes(": ") || raw.endsWith(":") || raw === "<<") return null;
  return { value: coreSchemaValue(raw), end };
}

/** YAML's one-character escapes in double quotes (YAML 1.2 §5.7). */
const ESCAPES: Readonly<Record<string, string>> = {
  "0": "\0",
  a: "\x07",
  b: "\b",
  t: "\t",
  n: "\n",
  v: "\v",
  f: "\f",
  r: "\r",
  e: "\x1b",
  " ": " ",
  '"': '"',
  "/": "/",
  "\\": "\\",
  N: "\u0085",
  _: "\u00a0",
  L: "\u2028",
  P: "\u2029",
};
const HEX_ESCAPE_DIGITS: Readonly<Record<string, number>> = { x: 2, u: 4, U: 8 };
const HEX = /^[0-9a-fA-F]+$/;

/**
 * A quoted scalar closed on the same line. Single quotes: '' is a quote. Double quotes: the YAML
 * escapes; an unknown escape is left to the full parser (which reports it).
 */
function quotedScalar(text: string, col: number): (InlineScalar & { value: string }) | null {
  const quote = text[col];
  let value = "";
  let from = col + 1;
  if (quote === '"') {
    for (;;) {
      const close = text.indexOf('"', from);
      if (close < 0) return null;
      const slash = text.indexOf("\\", from);
      if (slash < 0 || slash > close) return { value: value + text.slice(from, close), end: close + 1 };
      value += text.slice(from, slash);
      const kind = text[slash + 1] ?? "";
      const simple = ESCAPES[kind];
      if (simple !== undefined) {
        value += simple;
        from = slash + 2;
        continue;
      }
      const digits = HEX_ESCAPE_DIGITS[kind];
      const hex = digits === undefined ? "" : text.slice(slash + 2, slash + 2 + digits);
      if (digits === undefined || hex.length !== digits || !HEX.test(hex)) return null;
      const code = Number.parseInt(hex, 16);
      if (code > 0x10ffff) return null;
      value += String.fromCodePoint(code);
      from = slash + 2 + digits;
    }
  }
  for (;;) {
    const close = text.indexOf("'", from);
    if (close < 0) return null;
    value += text.slice(from, close);
    if (text[close + 1] !== "'") return { value, end: close + 1 };
    value += "'";
    from = close + 2;
  }
}

/**
 * The located tree of `text` if it is simple block YAML (see the module note), else null. `text`
 * has no byte order mark.
 */
export function parseSimpleYaml(text: string, file: string): MapNode | null {
  if (hasCharactersOutsideSubset(text)) return null;
  try {
    return new SimpleYamlReader(text, file).document();
  } catch (error) {
    if (error instanceof NotSimple) return null;
    throw error;
  }
}
