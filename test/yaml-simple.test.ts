/**
 * The fast YAML reader (src/config/parse-yaml-simple.ts) against the full `yaml`-based parser: when
 * the fast reader answers, its tree (values, key order, every position) must be the full parser's,
 * and the full parser must not have rejected the text. Generated documents in many layouts, then
 * the same documents with random edits that break them in ways real files break.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { LNode } from "../src/config/located.ts";
import { parseConfigText } from "../src/config/parse.ts";
import { parseYamlDocument } from "../src/config/parse-yaml.ts";
import { coreSchemaValue, parseSimpleYaml } from "../src/config/parse-yaml-simple.ts";

const FILE = "/cfg/tlsroute.yml";

/** The full parser's answer: a tree, or the error it raised. */
function full(text: string): { tree: LNode } | { error: string } {
  try {
    return { tree: parseYamlDocument(text, FILE) };
  } catch (error) {
    return { error: error instanceof Error ? error.message : String(error) };
  }
}

/** The property: a fast answer is exactly the full parser's answer. Returns whether the fast path answered. */
function agrees(text: string): boolean {
  const fast = parseSimpleYaml(text, FILE);
  if (fast === null) return false;
  const reference = full(text);
  assert.ok(
    "tree" in reference,
    `fast path accepted text the full parser rejects (${JSON.stringify(reference)}):\n${text}`,
  );
  assert.deepStrictEqual(fast, reference.tree, `trees differ for:\n${text}`);
  return true;
}

// ------------------------------------------------------------------------------------------------
// Generated documents

type Tree = { map: [string, Tree][] } | { seq: Tree[] } | { scalar: string };

/** Scalar texts chosen to hit every core-schema type and the characters that end or start plain scalars. */
const SCALAR_TEXTS = [
  "websecure",
  "svc-1",
  "HostSNI(`db.example.com`)",
  "HostSNI(`a`) || HostSNI(`b`)",
  ":8443",
  "10.0.0.1:5432",
  "-1",
  "+12",
  "0",
  "-0",
  "007",
  "0o17",
  "0o8",
  "0x1F",
  "0xg",
  "1.5",
  "1.",
  ".5",
  "1e3",
  "1.2E-4",
  ".inf",
  "-.Inf",
  ".nan",
  ".NaN",
  "1_000",
  "12345678901234567890123",
  "true",
  "True",
  "TRUE",
  "tRue",
  "false",
  "yes",
  "no",
  "on",
  "null",
  "Null",
  "NULL",
  "~",
  "nil",
  "a b",
  "a  b",
  "x:y",
  "x :y",
  "a,b",
  "[x]",
  "x]",
  "{y}",
  "a#b",
  "a #b",
  "it's",
  'say "hi"',
  "back\\slash",
  "-x",
  "--",
  "- x",
  "?x",
  "? x",
  "&a",
  "*a",
  "!t",
  "|",
  ">",
  "%x",
  "@x",
  "`x`",
  "<<",
  "a: b",
  "a:",
  "ünï",
  "😀",
  "  lead",
  "trail  ",
  "",
  "\u00a0x",
  "a\u00a0#b",
  'a"b',
  "a'b",
  "'",
  '"',
  "#",
  "1 # x",
  "a\\",
  "x}",
];

const KEY_TEXTS = [
  "a",
  "b",
  "key",
  "http",
  "1",
  "1.10",
  "true",
  "~",
  "null",
  "a b",
  "x:y",
  "-k",
  ":k",
  "k#",
  "<<",
  "é",
  "'q'",
  'a"b',
  "-",
  "?",
  "k k",
  " ",
  "#k",
];

const scalarArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...SCALAR_TEXTS) },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
);
const keyArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...KEY_TEXTS) },
  { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 6 }) },
);

function treeOf(scalars: fc.Arbitrary<string>, keys: fc.Arbitrary<string>): fc.Arbitrary<Tree> {
  return fc.letrec<{ tree: Tree; map: Tree }>((tie) => ({
    tree: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      { weight: 3, arbitrary: scalars.map((scalar) => ({ scalar })) },
      { weight: 2, arbitrary: tie("map") },
      { weight: 1, arbitrary: fc.array(tie("tree"), { maxLength: 4 }).map((seq) => ({ seq })) },
    ),
    map: fc.array(fc.tuple(keys, tie("tree")), { maxLength: 4 }).map((map) => ({ map })),
  })).map;
}

const treeArb = treeOf(scalarArb, keyArb);

/** Scalars and keys the fast path must read itself, in any of the layouts below. */
const SAFE_SCALARS = [
  "websecure",
  "HostSNI(`db.example.com`) || ClientIP(`10.0.0.0/8`)",
  ":8443",
  "-1",
  "0o17",
  "0x1F",
  "1.5",
  ".inf",
  "true",
  "no",
  "~",
  "null",
  "a b",
  "x:y",
  "a,b",
  "a#b",
  "it's",
  'a"b',
  'say "hi"',
  "C:\\certs\\a.pem",
  "ünï",
  "😀",
  "-x",
  "x]",
];
const SAFE_KEYS = ["a", "key", "1.10", "true", "~", "a b", "x:y", "-k", "é"];
/** Keys unique within a mapping (duplicates are errors, worded by the full parser). */
const safeTreeArb = treeOf(fc.constantFrom(...SAFE_SCALARS), fc.constantFrom(...SAFE_KEYS)).map(
  function dedupe(t: Tree): Tree {
    if ("map" in t) {
      const seen = new Set<string>();
      return { map: t.map.filter(([k]) => !seen.has(k) && seen.add(k)).map(([k, v]) => [k, dedupe(v)]) };
    }
    if ("seq" in t) return { seq: t.seq.map(dedupe) };
    return t;
  },
);

interface Style {
  indent: number;
  /** Lists under a key at the key's own indentation ("key:\n- a"). */
  flushSequences: boolean;
  /** How scalars are written: as they are (plain), or quoted. */
  quoting: "plain" | "single" | "double" | "mixed";
  comments: boolean;
  blankLines: boolean;
  trailingSpaces: boolean;
  crlf: boolean;
  docStart: boolean;
  rootIndent: number;
  spaceBeforeColon: boolean;
  extraSpaceAfterDash: boolean;
  /** Lists of scalars written on one line: `[a, "b", 1]`. */
  flowLists: boolean;
  /** Flow list items as they are (awkward ones included) or only in forms a flow list can hold. */
  flowItemsAsIs: boolean;
}

const styleArb: fc.Arbitrary<Style> = fc.record({
  indent: fc.integer({ min: 1, max: 4 }),
  flushSequences: fc.boolean(),
  quoting: fc.constantFrom("plain", "plain", "single", "double", "mixed"),
  comments: fc.boolean(),
  blankLines: fc.boolean(),
  trailingSpaces: fc.boolean(),
  crlf: fc.boolean(),
  docStart: fc.boolean(),
  rootIndent: fc.constantFrom(0, 0, 0, 2),
  spaceBeforeColon: fc.boolean(),
  extraSpaceAfterDash: fc.boolean(),
  flowLists: fc.boolean(),
  flowItemsAsIs: fc.boolean(),
});

function render(tree: Tree, style: Style, seed: number): string {
  let n = seed;
  const coin = () => {
    n = (n * 1103515245 + 12345) & 0x7fffffff;
    return (n & 0xff) < 64;
  };
  const scalar = (text: string): string => {
    const mode =
      style.quoting === "mixed" ? (coin() ? "single" : coin() ? "double" : "plain") : style.quoting;
    if (mode === "single") return `'${text.replaceAll("'", "''")}'`;
    if (mode === "double") return JSON.stringify(text);
    return text;
  };
  const lines: string[] = [];
  const tail = () =>
    (style.comments && coin() ? "  # note: x" : "") + (style.trailingSpaces && coin() ? "  " : "");
  const extras = (pad: string) => {
    if (style.blankLines && coin()) lines.push("");
    if (style.comments && coin()) lines.push(`${pad}# comment`);
  };
  const colon = () => (style.spaceBeforeColon && coin() ? " :" : ":");
  const dash = () => (style.extraSpaceAfterDash && coin() ? "-   " : "- ");
  const emptyFlow = (t: Tree) => ("map" in t ? "{}" : "[]");
  const flowItem = (text: string) =>
    style.flowItemsAsIs && coin()
      ? scalar(text)
      : /^[A-Za-z0-9][^,[\]{}:#]*$/.test(text) && !text.endsWith(" ") && coin()
        ? text
        : JSON.stringify(text);
  /** A list of scalars on one line, or null when the list holds collections (or flow style is off). */
  const flowList = (t: Tree): string | null => {
    if (!style.flowLists || !("seq" in t) || !t.seq.every((i) => "scalar" in i) || !coin()) return null;
    const items = t.seq.map((i) => flowItem("scalar" in i ? i.scalar : ""));
    return `[${coin() ? " " : ""}${items.join(coin() ? ", " : ",")}${coin() ? "," : ""}${coin() ? " " : ""}]`;
  };
  // `first` is the text that opens the first line (a "- " prefix for a compact mapping in a list).
  const block = (t: Tree, indent: number, first: string | null): void => {
    const pad = " ".repeat(indent);
    if ("map" in t) {
      t.map.forEach(([key, value], index) => {
        const lead = index === 0 && first !== null ? first : pad;
        const flow = flowList(value);
        const k = coin() && coin() ? scalar(key) : key;
        if ("scalar" in value) lines.push(`${lead}${k}${colon()} ${scalar(value.scalar)}${tail()}`);
        else if (("map" in value ? value.map : value.seq).length === 0)
          lines.push(`${lead}${k}${colon()} ${emptyFlow(value)}${tail()}`);
        else if (flow !== null) lines.push(`${lead}${k}${colon()} ${flow}${tail()}`);
        else {
          lines.push(`${lead}${k}${colon()}${tail()}`);
          extras(pad);
          const childIndent = "seq" in value && style.flushSequences ? indent : indent + style.indent;
          block(value, childIndent, null);
        }
        extras(pad);
      });
    } else if ("seq" in t) {
      for (const item of t.seq) {
        if ("scalar" in item) lines.push(`${pad}${dash()}${scalar(item.scalar)}${tail()}`);
        else if (("map" in item ? item.map : item.seq).length === 0)
          lines.push(`${pad}${dash()}${emptyFlow(item)}${tail()}`);
        else if ("map" in item && coin()) {
          const d = dash();
          block(item, indent + d.length, `${pad}${d}`);
        } else {
          lines.push(`${pad}-${tail()}`);
          block(item, indent + style.indent, null);
        }
        extras(pad);
      }
    } else {
      lines.push(`${pad}${scalar(t.scalar)}`);
    }
  };
  if (style.docStart) lines.push("---");
  block(tree, style.rootIndent, null);
  return lines.join(style.crlf ? "\r\n" : "\n") + (coin() ? "" : style.crlf ? "\r\n" : "\n");
}

const EDIT_TEXTS = [
  ":",
  ": ",
  "#",
  " #",
  "-",
  "- ",
  " ",
  "  ",
  "\n",
  "\n  ",
  "'",
  '"',
  "[",
  "]",
  "{",
  "}",
  "&a ",
  "*a",
  "!!str ",
  "|",
  ">",
  "\\",
  "?",
  ",",
  "\t",
  "\r",
  "---\n",
  "...",
  "<<: ",
  "x",
  "\u2028",
  "%",
  "\u00a0",
  "\ufeff",
  "\r\n",
  "- -",
  "? ",
  "!",
  "@",
  "`",
  "0x",
  "~",
  "0o",
  "\u0085",
  "\u0001",
  "\u007f",
];

type Edit = { at: number; remove: number; insert: string };
const editArb: fc.Arbitrary<Edit> = fc.record({
  at: fc.nat(),
  remove: fc.integer({ min: 0, max: 3 }),
  insert: fc.oneof(fc.constantFrom(...EDIT_TEXTS), fc.constant("")),
});

function applyEdits(text: string, edits: Edit[]): string {
  let out = text;
  for (const edit of edits) {
    const at = out.length === 0 ? 0 : edit.at % (out.length + 1);
    out = out.slice(0, at) + edit.insert + out.slice(at + edit.remove);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------

describe("fast YAML reader", () => {
  it("types plain scalars like the YAML 1.2 core schema", () => {
    const cases: [string, unknown][] = [
      ["~", null],
      ["null", null],
      ["Null", null],
      ["NULL", null],
      ["nULL", "nULL"],
      ["true", true],
      ["True", true],
      ["FALSE", false],
      ["yes", "yes"],
      ["0o17", 15],
      ["0o8", "0o8"],
      ["-12", -12],
      ["+12", 12],
      ["-0", -0],
      ["007", 7],
      ["0x1F", 31],
      ["0X1F", "0X1F"],
      ["1.5", 1.5],
      ["1.", 1],
      [".5", 0.5],
      ["1e3", 1000],
      ["-.inf", Number.NEGATIVE_INFINITY],
      [".Inf", Number.POSITIVE_INFINITY],
      [".NaN", Number.NaN],
      ["1_000", "1_000"],
      ["v1.2", "v1.2"],
    ];
    for (const [text, expected] of cases) assert.deepStrictEqual(coreSchemaValue(text), expected, text);
  });

  it("reads the common layouts, and agrees with the full parser on them", () => {
    const texts = [
      "a: 1\nb:\n  c: x # note\n  d: [ ]\n",
      "tcp:\n  routers:\n    r:\n      entryPoints:\n      - websecure\n      rule: HostSNI(`a.example`)\n      tls: {}\n",
      "list:\n  - a: 1\n    b: 'it''s'\n  -   c: \"two words\"\n  -\n    d: 2\n  - plain\n  -\n",
      "---\n# comment\n  root: indented\n  other: :8443\r\n",
      "key with spaces  : v\n\"quoted key\": 1\n'single': ~\n",
      "",
      "# only a comment\n\n",
      "---\n",
      'path: "C:\\\\certs\\\\db.pem"\nesc: "\\t\\x41\\u00e9\\U0001F600\\"\\/\\ \\_"\n',
      'entryPoints: [websecure, "web secure", 1,]\nsourceRange: [ "10.0.0.0/8", "::1" ]  # note\n',
    ];
    for (const text of texts) assert.ok(agrees(text), `fast path declined:\n${text}`);
    const tree = parseSimpleYaml(texts[0] ?? "", FILE);
    assert.deepStrictEqual(tree?.entries.get("b")?.value.pos, { file: FILE, line: 3, column: 3 });
  });

  it("declines what it does not read, leaving the full parser to decide or to word the error", () => {
    const declined = [
      "a: &x 1\nb: *x\n",
      "a: !!str 1\n",
      "<<: {a: 1}\n",
      "a: |\n  text\n",
      "a: b\n  c\n",
      'a: "x\\qy"\n',
      'a: "\\x4"\n',
      "a: [1, [2]]\n",
      "a: [x: 1]\n",
      "a: [b, , c]\n",
      "a: {b: 1}\n",
      "a:\tb\n",
      "a: 1\n---\nb: 2\n",
      "%YAML 1.2\n---\na: 1\n",
      "- a\n- b\n",
      "a: 1\na: 2\n",
      "a: b: c\n",
      "a:\n  b: 1\n c: 2\n",
      "a: 'open\n",
      "? a\n: b\n",
      "a: - b\n",
      "a:\n- - x\n",
      "plain\n",
    ];
    for (const text of declined) assert.equal(parseSimpleYaml(text, FILE), null, text);
    // …and parseConfigText still answers them as before, through the full parser.
    assert.throws(() => parseConfigText("a: 1\na: 2\n", FILE, "yaml"), /duplicate key "a"/);
    assert.throws(() => parseConfigText("a: b: c\n", FILE, "yaml"), /Nested mappings/);
  });

  it("reads every generated document of the subset itself, and agrees with the full parser", () => {
    fc.assert(
      fc.property(safeTreeArb, styleArb, fc.nat(), (tree, style, seed) => {
        const text = render(
          { map: "map" in tree ? tree.map : [["root", tree]] },
          { ...style, flowItemsAsIs: false },
          seed,
        );
        assert.ok(agrees(text), `fast path declined:\n${text}`);
      }),
      { numRuns: 500 },
    );
  });

  it("agrees with the full parser on generated documents with awkward scalars and keys", () => {
    fc.assert(
      fc.property(treeArb, styleArb, fc.nat(), (tree, style, seed) => {
        agrees(render({ map: "map" in tree ? tree.map : [["root", tree]] }, style, seed));
      }),
      { numRuns: 600 },
    );
  });

  it("never answers differently from the full parser on damaged documents", () => {
    fc.assert(
      fc.property(
        treeArb,
        styleArb,
        fc.nat(),
        fc.array(editArb, { minLength: 1, maxLength: 3 }),
        (tree, style, seed, edits) => {
          agrees(
            applyEdits(render({ map: "map" in tree ? tree.map : [["root", tree]] }, style, seed), edits),
          );
        },
      ),
      { numRuns: 1500 },
    );
  });
});
