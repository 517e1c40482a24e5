/**
 * YAML to a located tree, on top of the `yaml` package's document AST (which keeps source ranges).
 * We walk the AST ourselves rather than calling toJS() so that every key and value keeps its
 * position, and so that duplicate keys, merge keys and aliases behave the way tlsroute documents.
 */
import {
  type Alias,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  visit,
  type YAMLError,
  type YAMLMap,
  type YAMLSeq,
  type Node as YamlNode,
  type Scalar as YamlScalar,
} from "yaml";
import {
  ConfigSyntaxError,
  type LNode,
  type MapEntry,
  type MapNode,
  type Scalar,
  type SourcePos,
} from "./located.ts";
import { parseSimpleYaml } from "./parse-yaml-simple.ts";

const MAX_DEPTH = 1000;

/**
 * Aliases can blow a small file up exponentially ("billion laughs"). Every node created while
 * expanding an alias counts against this budget; real configurations stay far below it.
 */
const MIN_ALIAS_BUDGET = 100_000;

const HINTS: Partial<Record<YAMLError["code"], string>> = {
  TAB_AS_INDENT: "YAML indentation must use spaces, not tabs",
  BAD_INDENT: "check the indentation: a nested key must be indented further than its parent, using spaces",
  MULTILINE_IMPLICIT_KEY: "a key must fit on one line; did a previous value miss a closing quote or bracket?",
  BAD_DQ_ESCAPE:
    'in double quotes a backslash starts an escape; write "\\\\" for a backslash or use single quotes',
  BAD_ALIAS: "an alias (*name) must refer to an anchor (&name) defined earlier in the file",
};

/** Parses one YAML document whose top level is a mapping. BOM already removed. */
export function parseYaml(text: string, file: string): MapNode {
  // Most configuration files are plain block YAML, which the fast reader turns into the very same
  // tree; anything else (and every error) goes through the \`yaml\` package below.
  const simple = parseSimpleYaml(text, file);
  if (simple) return simple;
  return parseYamlDocument(text, file);
}

/** The full YAML parser: every feature, every error message. Exported for tests that compare the two paths. */
export function parseYamlDocument(text: string, file: string): MapNode {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter,
    merge: true,
    prettyErrors: false,
    // Duplicate keys are checked on the string form of keys below, with a better message.
    uniqueKeys: false,
  });
  const lines = new Positions(lineCounter, file);
  const first = doc.errors[0];
  if (first) throw fromYamlError(first, lines, doc);

  const contents = doc.contents;
  if (contents === null || (isScalar(contents) && contents.value === null && contents.source === "")) {
    return { kind: "map", entries: new Map(), pos: lines.pos(0) };
  }
  const builder = new TreeBuilder(doc, lines, Math.max(MIN_ALIAS_BUDGET, text.length * 20));
  const root = builder.build(contents, 0);
  if (root.kind !== "map") {
    throw new ConfigSyntaxError(
      `the top level of a configuration file must be a mapping (key: value lines), found ${root.kind === "seq" ? "a list" : "a single value"}`,
      root.pos,
    );
  }
  return root;
}

function fromYamlError(error: YAMLError, lines: Positions, doc: Document): ConfigSyntaxError {
  const pos = lines.pos(error.pos[0]);
  if (error.code === "MULTIPLE_DOCS") {
    return new ConfigSyntaxError(
      "the file contains more than one YAML document; a configuration file must hold exactly one",
      pos,
      "remove the extra '---' line, or split the documents into separate files",
    );
  }
  // Messages from `yaml` are single sentences when prettyErrors is off; keep only the first line to be safe.
  const message = error.message.split("\n")[0] ?? error.message;
  if (error.code === "MISSING_CHAR" && /quote/.test(message)) {
    // `yaml` reports an unclosed quote where the text ends; the opening quote is what the user must find.
    const opening = unclosedQuoteStart(doc, error.pos[0]);
    if (opening !== undefined) {
      return new ConfigSyntaxError(`${message}: this string is never closed`, lines.pos(opening));
    }
  }
  let hint = HINTS[error.code];
  if (error.code === "BAD_INDENT" && /^Flow/.test(message)) hint = "is a closing ] or } missing above?";
  return new ConfigSyntaxError(message, pos, hint);
}

/** Start of the last quoted scalar that begins before `offset` (where an unclosed quote was noticed). */
function unclosedQuoteStart(doc: Document, offset: number): number | undefined {
  let best: number | undefined;
  visit(doc, {
    Scalar(_key, node) {
      const start = node.range?.[0];
      const quoted = node.type === "QUOTE_DOUBLE" || node.type === "QUOTE_SINGLE";
      if (quoted && start !== undefined && start < offset && (best === undefined || start > best))
        best = start;
    },
  });
  return best;
}

type Document = ReturnType<typeof parseDocument>;

/** Offsets to positions through the parser's own LineCounter, so we count lines exactly as `yaml` does. */
class Positions {
  constructor(
    private readonly lineCounter: LineCounter,
    private readonly file: string,
  ) {}

  pos(offset: number): SourcePos {
    const { line, col } = this.lineCounter.linePos(offset);
    return { file: this.file, line: Math.max(1, line), column: col };
  }
}

class TreeBuilder {
  /** Collections being built right now: an alias to one of them would be infinite. */
  private readonly inProgress = new Set<YamlNode>();
  private aliasDepth = 0;
  private aliasNodes = 0;

  constructor(
    private readonly doc: Document,
    private readonly lines: Positions,
    private readonly aliasBudget: number,
  ) {}

  build(node: unknown, depth: number, fallback?: SourcePos): LNode {
    if (depth > MAX_DEPTH) {
      throw new ConfigSyntaxError(`nested more than ${MAX_DEPTH} levels deep`, this.posOf(node, fallback));
    }
    if (this.aliasDepth > 0 && ++this.aliasNodes > this.aliasBudget) {
      throw new ConfigSyntaxError(
        "aliases expand to too many nodes",
        this.posOf(node, fallback),
        "is this an alias bomb?",
      );
    }
    if (isAlias(node))
      return this.withAlias(node, depth, (target) => this.build(target, depth, this.posOf(node)));
    if (isMap(node)) return this.map(node, depth);
    if (isSeq(node)) return this.seq(node, depth);
    if (isScalar(node)) return { kind: "scalar", value: scalarValue(node), pos: this.posOf(node, fallback) };
    // A missing value, as in the flow mapping "{ key }".
    return { kind: "scalar", value: null, pos: this.posOf(node, fallback) };
  }

  private withAlias<T>(alias: Alias, depth: number, use: (target: YamlNode) => T): T {
    const target = alias.resolve(this.doc);
    const at = this.posOf(alias);
    if (target === undefined) {
      throw new ConfigSyntaxError(`unknown alias *${alias.source}`, at, HINTS.BAD_ALIAS);
    }
    if (this.inProgress.has(target)) {
      throw new ConfigSyntaxError(`alias *${alias.source} refers to a collection that contains it`, at);
    }
    if (depth > MAX_DEPTH) throw new ConfigSyntaxError(`nested more than ${MAX_DEPTH} levels deep`, at);
    this.aliasDepth++;
    try {
      return use(target);
    } finally {
      this.aliasDepth--;
    }
  }

  private seq(node: YAMLSeq, depth: number): LNode {
    const pos = this.posOf(node);
    this.inProgress.add(node);
    const items = node.items.map((item) => this.build(item, depth + 1, pos));
    this.inProgress.delete(node);
    return { kind: "seq", items, pos };
  }

  private map(node: YAMLMap, depth: number): MapNode {
    const pos = this.posOf(node);
    this.inProgress.add(node);
    // Keys written in this mapping win over merged ones wherever they appear (YAML merge-key rule),
    // so collect them before expanding any "<<".
    const keys = node.items.map((pair) =>
      isMergeKey(pair.key) ? null : this.keyString(pair.key, depth, pos),
    );
    const own = new Set(keys.filter((k): k is string => k !== null));
    const entries = new Map<string, MapEntry>();
    const ownPositions = new Map<string, SourcePos>();
    node.items.forEach((pair, index) => {
      const key = keys[index];
      if (key === null || key === undefined) {
        for (const source of this.mergeSources(pair.value, depth, pos)) {
          for (const [k, entry] of source.entries) {
            if (!own.has(k) && !entries.has(k)) entries.set(k, entry);
          }
        }
        return;
      }
      const keyPos = this.posOf(pair.key, pos);
      const earlier = ownPositions.get(key);
      if (earlier) {
        throw new ConfigSyntaxError(
          `duplicate key ${JSON.stringify(key)}`,
          keyPos,
          `first defined at line ${earlier.line}, column ${earlier.column}`,
        );
      }
      ownPositions.set(key, keyPos);
      entries.set(key, { keyPos, value: this.build(pair.value, depth + 1, keyPos) });
    });
    this.inProgress.delete(node);
    return { kind: "map", entries, pos };
  }

  /** The mappings named by the value of a "<<" key: a mapping, an alias to one, or a list of those. */
  private mergeSources(value: unknown, depth: number, fallback: SourcePos): MapNode[] {
    const at = this.posOf(value, fallback);
    const wrong = () =>
      new ConfigSyntaxError(
        "the merge key '<<' takes a mapping, an alias to a mapping (<<: *name), or a list of them",
        at,
      );
    const one = (node: unknown): MapNode => {
      const built = this.build(node, depth + 1, at);
      if (built.kind !== "map") throw wrong();
      return built;
    };
    const target = isAlias(value) ? value.resolve(this.doc) : value;
    if (isSeq(target) && isAlias(value)) return this.withAlias(value, depth, () => target.items.map(one));
    if (isSeq(target)) return target.items.map(one);
    if (isMap(target) || isAlias(value)) return [one(value)];
    throw wrong();
  }

  /** Map keys become strings. Non-string scalars keep the text the user wrote ("1.10", "~", "true"). */
  private keyString(key: unknown, depth: number, fallback: SourcePos): string {
    if (key === null || key === undefined) return "";
    if (isAlias(key)) return this.withAlias(key, depth, (target) => this.keyString(target, depth, fallback));
    if (isScalar(key)) {
      if (typeof key.value === "string") return key.value;
      if (typeof key.source === "string") return key.source;
      return String(key.value);
    }
    throw new ConfigSyntaxError(
      `a key must be a plain value, not a ${isSeq(key) ? "list" : "mapping"}`,
      this.posOf(key, fallback),
    );
  }

  private posOf(node: unknown, fallback?: SourcePos): SourcePos {
    const range = (node as { range?: unknown } | null | undefined)?.range;
    if (Array.isArray(range) && typeof range[0] === "number") return this.lines.pos(range[0]);
    return fallback ?? this.lines.pos(0);
  }
}

function isMergeKey(key: unknown): boolean {
  // With merge enabled, `yaml` resolves a plain "<<" key to a Symbol; a quoted "<<" stays a string.
  return isScalar(key) && typeof key.value === "symbol";
}

/** Scalars keep their YAML type; anything beyond string/number/boolean/null keeps its source text. */
function scalarValue(node: YamlScalar): Scalar {
  const v = node.value;
  if (v === null || typeof v === "string" || typeof v === "number" || typeof v === "boolean") return v;
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  // YAML 1.1 timestamps (Date), !!binary (Uint8Array) and the like: the text as written.
  if (typeof node.source === "string") return node.source;
  return String(v);
}
