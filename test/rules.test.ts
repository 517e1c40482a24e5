import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  type CompiledRule,
  type ConnectionFacts,
  canonicalSni,
  compileRule,
  defaultPriority,
  type RuleError,
  type RuleExpr,
  type RuleSyntax,
  sniIndexKeys,
  type TraceNode,
  traceRule,
} from "../src/rules/index.ts";

function ok(text: string, syntax?: RuleSyntax): CompiledRule {
  const result = compileRule(text, syntax);
  if (!result.ok)
    assert.fail(`expected ${JSON.stringify(text)} to compile, got ${JSON.stringify(result.error)}`);
  return result.rule;
}

function refused(text: string, syntax?: RuleSyntax): RuleError {
  const result = compileRule(text, syntax);
  if (result.ok) assert.fail(`expected ${JSON.stringify(text)} to be refused`);
  return result.error;
}

function facts(sni = "", alpn: string[] = [], clientIp = ""): ConnectionFacts {
  return { sni, alpn, clientIp };
}

function matches(text: string, f: ConnectionFacts, syntax?: RuleSyntax): boolean {
  return ok(text, syntax).match(f);
}

/** The tree as a compact string: and(x,y), or(x,y), not(x), Name[args]. */
function shape(e: RuleExpr): string {
  switch (e.type) {
    case "matcher":
      return `${e.name}[${e.args.join(",")}]`;
    case "not":
      return `not(${shape(e.operand)})`;
    default:
      return `${e.type}(${shape(e.left)},${shape(e.right)})`;
  }
}

describe("rule syntax: operators, precedence, grouping", () => {
  it("gives ! precedence over && and && over ||, left-associative", () => {
    assert.equal(
      shape(ok("HostSNI(`a`) || HostSNI(`b`) && HostSNI(`c`)").expr),
      "or(HostSNI[a],and(HostSNI[b],HostSNI[c]))",
    );
    assert.equal(
      shape(ok("HostSNI(`a`) && HostSNI(`b`) || HostSNI(`c`)").expr),
      "or(and(HostSNI[a],HostSNI[b]),HostSNI[c])",
    );
    assert.equal(shape(ok("!HostSNI(`a`) && HostSNI(`b`)").expr), "and(not(HostSNI[a]),HostSNI[b])");
    assert.equal(
      shape(ok("HostSNI(`a`) || HostSNI(`b`) || HostSNI(`c`)").expr),
      "or(or(HostSNI[a],HostSNI[b]),HostSNI[c])",
    );
    assert.equal(shape(ok("!!HostSNI(`a`)").expr), "not(not(HostSNI[a]))");
  });

  it("honours parentheses", () => {
    assert.equal(
      shape(ok("(HostSNI(`a`) || HostSNI(`b`)) && HostSNI(`c`)").expr),
      "and(or(HostSNI[a],HostSNI[b]),HostSNI[c])",
    );
    assert.equal(shape(ok("!(HostSNI(`a`) || ALPN(`h2`))").expr), "not(or(HostSNI[a],ALPN[h2]))");
    assert.equal(shape(ok("((HostSNI(`a`)))").expr), "HostSNI[a]");
  });

  it("evaluates precedence correctly", () => {
    // a || (b && c) with a true: true even though c is false.
    assert.equal(matches("HostSNI(`a`) || HostSNI(`b`) && ALPN(`x`)", facts("a")), true);
    // (a || b) && c: false when c is false.
    assert.equal(matches("(HostSNI(`a`) || HostSNI(`b`)) && ALPN(`x`)", facts("a")), false);
    assert.equal(matches("!HostSNI(`a`) && HostSNI(`b`)", facts("b")), true);
    assert.equal(matches("!(HostSNI(`a`) || HostSNI(`b`))", facts("b")), false);
    assert.equal(matches("!(HostSNI(`a`) || HostSNI(`b`))", facts("c")), true);
  });

  it("records source spans without the grouping parentheses", () => {
    const text = "(HostSNI(`a`) || ALPN(`h2`)) && !ClientIP(`::1`)";
    const e = ok(text).expr;
    assert.equal(e.type, "and");
    if (e.type !== "and") return;
    assert.equal(text.slice(e.start, e.end), text);
    assert.equal(text.slice(e.left.start, e.left.end), "HostSNI(`a`) || ALPN(`h2`)");
    assert.equal(text.slice(e.right.start, e.right.end), "!ClientIP(`::1`)");
    const leaf = e.right.type === "not" ? e.right.operand : e.right;
    assert.equal(leaf.type, "matcher");
    if (leaf.type === "matcher") {
      assert.equal(text.slice(leaf.argSpans[0]!.start, leaf.argSpans[0]!.end), "`::1`");
    }
  });

  it("accepts whitespace between tokens and line breaks where Go allows them", () => {
    ok("   HostSNI ( `*` )       ");
    ok("\tHostSNI(`a`)\t&&\tALPN(`h2`)\t");
    ok("HostSNI(`a`) ||\n  HostSNI(`b`)");
    ok("HostSNI(\n`a`,\n)", "v3");
    ok("(\nHostSNI(`a`) ||\nHostSNI(`b`))");
    ok("HostSNI(`a`)\n");
    ok("HostSNI(`a`)\r\n");
    ok("!\nHostSNI(`a`)");
  });

  it("refuses a line break that Go turns into the end of the expression", () => {
    const e = refused("HostSNI(`a`)\n|| HostSNI(`b`)");
    assert.equal(e.code, "rule-syntax");
    assert.equal(e.column, 14);
    assert.match(e.hint ?? "", /move \|\| to the end of the previous line/);
    assert.equal(refused("HostSNI(`a`)\r\n&& ALPN(`h2`)").code, "rule-syntax");
    assert.match(refused("HostSNI(\n`a`\n)").message, /line break inside the argument list/);
    assert.equal(refused("HostSNI\n(`a`)").code, "rule-syntax");
    assert.equal(refused("(HostSNI(`a`)\n)").code, "rule-syntax");
  });

  it("skips comments; a block comment spanning a line counts as a line break", () => {
    assert.deepEqual(ok("HostSNI(`a`) /* either */ || HostSNI(`b`) // end").hostSNIValues, ["a", "b"]);
    ok("/* lead */ HostSNI(`a`)");
    assert.equal(refused("HostSNI(`a`) /* x\n */ || HostSNI(`b`)").code, "rule-syntax");
    assert.equal(refused("HostSNI(`a`) /* never closed").code, "rule-syntax");
  });

  it("accepts a trailing comma and ignores a trailing ... like Go and Traefik", () => {
    assert.deepEqual(ok("HostSNI(`a`,)").hostSNIValues, ["a"]);
    const rule = ok("HostSNI(`a`...)");
    assert.deepEqual(rule.hostSNIValues, ["a"]);
    assert.equal(rule.warnings[0]?.code, "ellipsis-ignored");
    assert.equal(refused("HostSNI(`a`..., `b`)").code, "rule-syntax");
  });

  it("skips a leading byte order mark but refuses NUL anywhere", () => {
    ok("\ufeffHostSNI(`a`)");
    const e = refused("HostSNI(`a\u0000`)");
    assert.equal(e.code, "rule-syntax");
    assert.equal(e.column, 11);
    assert.equal(refused("HostSNI(`a`)\ufeff").code, "rule-syntax");
  });
});

describe("rule syntax: refusals with column and hint", () => {
  const cases: { rule: string; code: string; column: number; hint?: RegExp; syntax?: RuleSyntax }[] = [
    { rule: "", code: "empty-rule", column: 1 },
    { rule: "   \n  ", code: "empty-rule", column: 1 },
    { rule: "// only a comment", code: "empty-rule", column: 1 },
    {
      rule: "Host(`a.com`)",
      code: "unknown-matcher",
      column: 1,
      hint: /TCP routers match on HostSNI: HostSNI\(`a\.com`\)/,
    },
    { rule: "HostRegexp(`a`)", code: "unknown-matcher", column: 1, hint: /HostSNIRegexp/ },
    {
      rule: "PathPrefix(`/api`)",
      code: "unknown-matcher",
      column: 1,
      hint: /HostSNI, HostSNIRegexp, ClientIP and ALPN/,
    },
    {
      rule: "ALPN(`h2`) && hostSni(`a`)",
      code: "unknown-matcher",
      column: 15,
      hint: /accepted spellings are HostSNI, hostsni, HOSTSNI, Hostsni; write ALPN\(`h2`\) && HostSNI\(`a`\)/,
    },
    {
      rule: "ClientIp(`::1`)",
      code: "unknown-matcher",
      column: 1,
      hint: /ClientIP, clientip, CLIENTIP, Clientip/,
    },
    { rule: "aLPN(`h2`)", code: "unknown-matcher", column: 1, hint: /ALPN, alpn, Alpn/ },
    { rule: "HostSNIRegex(`a`)", code: "unknown-matcher", column: 1, hint: /did you mean HostSNIRegexp\?/ },
    {
      rule: "Frobnicate(`a`)",
      code: "unknown-matcher",
      column: 1,
      hint: /HostSNI, HostSNIRegexp, ClientIP and ALPN/,
    },
    { rule: "tcp.HostSNI(`a`)", code: "unknown-matcher", column: 1, hint: /call HostSNI/ },
    { rule: "HostSNI('a')", code: "single-quoted-string", column: 9, hint: /HostSNI\(`a`\)/ },
    { rule: "HostSNI('a.com')", code: "single-quoted-string", column: 9, hint: /backticks/ },
    { rule: "'a'", code: "single-quoted-string", column: 1, hint: /backticks/ },
    { rule: "HostSNI(“a.com”)", code: "rule-syntax", column: 9, hint: /backticks/ },
    { rule: "HostSNI(`a`) == HostSNI(`b`)", code: "unsupported-operator", column: 14 },
    { rule: "HostSNI(`a`) != HostSNI(`b`)", code: "unsupported-operator", column: 14, hint: /!HostSNI/ },
    { rule: "HostSNI(`a`) < HostSNI(`b`)", code: "unsupported-operator", column: 14 },
    { rule: "HostSNI(`a`) & ALPN(`h2`)", code: "unsupported-operator", column: 14, hint: /&&/ },
    { rule: "HostSNI(`a`) | ALPN(`h2`)", code: "unsupported-operator", column: 14, hint: /\|\|/ },
    { rule: "HostSNI(`a` + `b`)", code: "invalid-argument", column: 9 },
    { rule: "-HostSNI(`a`)", code: "unsupported-operator", column: 1 },
    { rule: "HostSNI(`a`) and HostSNI(`b`)", code: "rule-syntax", column: 14, hint: /&&/ },
    { rule: "HostSNI(`a`) OR HostSNI(`b`)", code: "rule-syntax", column: 14, hint: /\|\|/ },
    { rule: "not HostSNI(`a`)", code: "rule-syntax", column: 5, hint: /!/ },
    { rule: "HostSNI(`a`) HostSNI(`b`)", code: "rule-syntax", column: 14, hint: /&&/ },
    { rule: "HostSNI(`a`);", code: "rule-syntax", column: 13 },
    { rule: "HostSNI(`a`) &&", code: "rule-syntax", column: 16 },
    { rule: "&& HostSNI(`a`)", code: "rule-syntax", column: 1 },
    { rule: "(HostSNI(`a`)", code: "rule-syntax", column: 14, hint: /\)/ },
    { rule: "HostSNI(`a`", code: "rule-syntax", column: 12 },
    { rule: "HostSNI(`a`))", code: "rule-syntax", column: 13 },
    { rule: "()", code: "rule-syntax", column: 2 },
    { rule: "HostSNI(`a` `b`)", code: "rule-syntax", column: 13, hint: /comma/ },
    { rule: "HostSNI(`a`), HostSNI(`b`)", code: "rule-syntax", column: 13, hint: /\|\|/ },
    { rule: "HostSNI(`a)", code: "rule-syntax", column: 9, hint: /backtick/ },
    { rule: 'HostSNI("a)', code: "rule-syntax", column: 9 },
    { rule: "HostSNI", code: "invalid-operand", column: 1, hint: /HostSNI\(`example\.com`\)/ },
    { rule: "true", code: "invalid-operand", column: 1, hint: /HostSNI\(`\*`\)/ },
    { rule: "example", code: "invalid-operand", column: 1 },
    { rule: "`a.com`", code: "invalid-operand", column: 1, hint: /HostSNI\(`a\.com`\)/ },
    { rule: '"a.com"', code: "invalid-operand", column: 1 },
    { rule: "HostSNI(`a`) && `b`", code: "invalid-operand", column: 17 },
    { rule: "!`a`", code: "invalid-operand", column: 2 },
    { rule: "42", code: "invalid-operand", column: 1 },
    { rule: "HostSNI(42)", code: "invalid-argument", column: 9, hint: /HostSNI\(`42`\)/ },
    { rule: "HostSNI(1.5)", code: "invalid-argument", column: 9 },
    { rule: "HostSNI(example.com)", code: "invalid-argument", column: 9, hint: /HostSNI\(`example\.com`\)/ },
    { rule: "HostSNI(x)", code: "invalid-argument", column: 9 },
    { rule: "HostSNI(ALPN(`h2`))", code: "invalid-argument", column: 9 },
    { rule: "HostSNI((`a`))", code: "invalid-argument", column: 9 },
    { rule: "HostSNI(`a`)[0]", code: "rule-syntax", column: 13 },
    { rule: "if", code: "rule-syntax", column: 1 },
    { rule: "HostSNI(`a`) # comment", code: "rule-syntax", column: 14 },
    { rule: "HostSNI(`a`) = HostSNI(`b`)", code: "rule-syntax", column: 14, hint: /comparison/ },
    { rule: "HostSNI(\\`a`)", code: "rule-syntax", column: 9, hint: /need no escaping/ },
    { rule: "HostSNI(`a`)\u00a0&& ALPN(`h2`)", code: "rule-syntax", column: 13, hint: /plain space/ },
    { rule: "HostSNI()", code: "matcher-arity", column: 1, hint: /HostSNI\(`example\.com`\)/ },
    { rule: "ALPN()", code: "matcher-arity", column: 1, syntax: "v2" },
    { rule: "HostSNI(``)", code: "empty-argument", column: 9, hint: /HostSNI\(`\*`\)/ },
    { rule: 'ClientIP("")', code: "empty-argument", column: 10 },
    { rule: "HostSNI(`a`, ``)", code: "empty-argument", column: 14, syntax: "v2" },
    { rule: "HostSNI(`a`, ``)", code: "empty-argument", column: 14 },
  ];
  for (const c of cases) {
    it(`${JSON.stringify(c.rule)}${c.syntax ? ` (${c.syntax})` : ""} → ${c.code} at column ${c.column}`, () => {
      const e = refused(c.rule, c.syntax);
      assert.equal(e.code, c.code, JSON.stringify(e));
      assert.equal(e.column, c.column, JSON.stringify(e));
      assert.equal(e.offset, c.column - 1);
      assert.ok(e.message.length > 10);
      if (c.hint) assert.match(e.hint ?? "", c.hint, JSON.stringify(e));
    });
  }

  it("treats an unknown syntax name as v3, like Traefik", () => {
    assert.equal(refused("HostSNI(`a`, `b`)", "v1" as RuleSyntax).code, "matcher-arity");
  });

  it("reports a syntax error anywhere before a semantic error", () => {
    // Go parses the whole expression before Traefik looks at names.
    assert.equal(refused("Host(`a`) && (").code, "rule-syntax");
    // Names and argument types are checked before values.
    assert.equal(refused("HostSNI(`a`, `b`) && Host(`c`)").code, "unknown-matcher");
    // Matchers are checked left to right.
    assert.equal(refused("ClientIP(`nope`) && HostSNI(`a b`)").code, "invalid-client-ip");
  });

  it("nests deeply without crashing and refuses absurd depth", () => {
    ok(`${"(".repeat(100)}HostSNI(\`a\`)${")".repeat(100)}`);
    ok(`${"!".repeat(100)}HostSNI(\`a\`)`);
    assert.equal(refused(`${"(".repeat(5000)}HostSNI(\`a\`)${")".repeat(5000)}`).code, "rule-too-deep");
    assert.equal(refused(`${"!".repeat(5000)}HostSNI(\`a\`)`).code, "rule-too-deep");
    // Long flat chains are fine.
    const long = Array.from({ length: 5000 }, (_, i) => `HostSNI(\`h${i}.example.com\`)`).join(" || ");
    const rule = ok(long);
    assert.equal(rule.match(facts("h4999.example.com")), true);
    assert.equal(rule.match(facts("nope")), false);
    assert.equal(traceRule(rule, facts("h2.example.com")).children?.length, 5000);
    assert.equal(sniIndexKeys(rule)?.exact.length, 5000);
  });
});

describe("matcher spellings", () => {
  const accepted: [string, string][] = [
    ["HostSNI", "HostSNI"],
    ["hostsni", "HostSNI"],
    ["HOSTSNI", "HostSNI"],
    ["Hostsni", "HostSNI"],
    ["HostSNIRegexp", "HostSNIRegexp"],
    ["hostsniregexp", "HostSNIRegexp"],
    ["HOSTSNIREGEXP", "HostSNIRegexp"],
    ["Hostsniregexp", "HostSNIRegexp"],
    ["ClientIP", "ClientIP"],
    ["clientip", "ClientIP"],
    ["CLIENTIP", "ClientIP"],
    ["Clientip", "ClientIP"],
    ["ALPN", "ALPN"],
    ["alpn", "ALPN"],
    ["Alpn", "ALPN"],
  ];
  const argFor: Record<string, string> = {
    HostSNI: "a.com",
    HostSNIRegexp: "^a$",
    ClientIP: "10.0.0.1",
    ALPN: "h2",
  };
  for (const [spelling, canonical] of accepted) {
    it(`accepts ${spelling} as ${canonical}`, () => {
      const rule = ok(`${spelling}(\`${argFor[canonical]}\`)`);
      assert.equal(rule.expr.type, "matcher");
      if (rule.expr.type === "matcher") {
        assert.equal(rule.expr.name, canonical);
        assert.equal(rule.expr.spelledAs, spelling);
      }
    });
  }
  for (const spelling of [
    "hostSni",
    "HostSni",
    "HostSNIregexp",
    "hostSNI",
    "clientIP",
    "ClientIp",
    "aLPN",
    "ALpn",
    "HOSTsni",
  ]) {
    it(`refuses ${spelling}`, () => {
      const e = refused(`${spelling}(\`x\`)`);
      assert.equal(e.code, "unknown-matcher");
      assert.match(e.hint ?? "", /accepted spellings are/);
    });
  }
});

describe("string literals", () => {
  const value = (text: string): string => {
    const e = ok(text, "v2").expr;
    assert.equal(e.type, "matcher");
    return e.type === "matcher" ? e.args[0]! : "";
  };

  it("reads backtick strings raw, dropping carriage returns", () => {
    assert.equal(value("ALPN(`a\\nb`)"), "a\\nb");
    assert.equal(value("ALPN(`a\r\nb`)"), "a\nb");
    assert.equal(value('ALPN(`say "hi"`)'), 'say "hi"');
  });

  it("applies Go escapes in double-quoted strings", () => {
    assert.equal(value('ALPN("a\\\\b")'), "a\\b");
    assert.equal(value('ALPN("a\\"b")'), 'a"b');
    assert.equal(value('ALPN("\\a\\b\\f\\n\\r\\t\\v")'), "\x07\b\f\n\r\t\v");
    assert.equal(value('ALPN("\\x41\\101\\u00e9\\U0001F600")'), "AA\u00e9\u{1F600}");
    // \x and octal escapes produce bytes; together they can spell UTF-8.
    assert.equal(value('ALPN("\\xc3\\xa9")'), "\u00e9");
    assert.equal(value('ALPN("it\'s")'), "it's");
  });

  const badEscapes: [string, number][] = [
    ['ALPN("\\q")', 7],
    ['ALPN("\\\'")', 7],
    ['ALPN("ab\\x4")', 9],
    ['ALPN("\\xZZ")', 7],
    ['ALPN("\\400")', 7],
    ['ALPN("\\12")', 7],
    ['ALPN("\\uD800")', 7],
    ['ALPN("\\U00110000")', 7],
    ['ALPN("\\u12")', 7],
  ];
  for (const [text, column] of badEscapes) {
    it(`refuses the escape in ${text} at column ${column}`, () => {
      const e = refused(text);
      assert.equal(e.code, "rule-syntax");
      assert.equal(e.column, column);
    });
  }

  it("refuses a double-quoted string across a line break", () => {
    const e = refused('HostSNI("a\nb")');
    assert.equal(e.code, "rule-syntax");
    assert.equal(e.column, 9);
  });

  it("allows backtick strings across lines (the value then fails host-name validation)", () => {
    assert.equal(refused("HostSNI(`a\nb`)").code, "invalid-hostsni");
    assert.equal(value("ALPN(`a\nb`)"), "a\nb");
  });
});

describe("HostSNI (v3)", () => {
  it("matches exactly, case-insensitively, and never on an empty SNI", () => {
    assert.equal(matches("HostSNI(`db.example.com`)", facts("db.example.com")), true);
    assert.equal(matches("HostSNI(`DB.Example.COM`)", facts("db.example.com")), true);
    assert.equal(matches("HostSNI(`db.example.com`)", facts("db.example.co")), false);
    assert.equal(matches("HostSNI(`db.example.com`)", facts("")), false);
  });

  it("strips one trailing dot from the value", () => {
    assert.equal(matches("HostSNI(`db.example.com.`)", facts("db.example.com")), true);
    assert.equal(matches("HostSNI(`db.example.com..`)", facts("db.example.com")), false);
  });

  it("`*` matches everything, even without SNI", () => {
    const rule = ok("HostSNI(`*`)");
    assert.equal(rule.catchAll, true);
    assert.equal(rule.match(facts("")), true);
    assert.equal(rule.match(facts("x.y")), true);
  });

  it("`*.x` replaces exactly one label: not zero, not two", () => {
    const rule = ok("HostSNI(`*.example.com`)");
    assert.equal(rule.match(facts("foo.example.com")), true);
    assert.equal(rule.match(facts("example.com")), false);
    assert.equal(rule.match(facts("a.b.example.com")), false);
    assert.equal(rule.match(facts("fooexample.com")), false);
    assert.equal(rule.match(facts("foo.example.org")), false);
    assert.equal(rule.match(facts("")), false);
    assert.equal(matches("HostSNI(`*.Example.COM.`)", facts("x.example.com")), true);
  });

  it("allows IP literals and word characters", () => {
    assert.equal(matches("HostSNI(`10::10`)", facts("10::10")), true);
    assert.equal(matches("HostSNI(`127.0.0.1`)", facts("127.0.0.1")), true);
    assert.equal(matches("HostSNI(`my_host-1.example.com`)", facts("my_host-1.example.com")), true);
    assert.equal(ok("HostSNI(`127.0.0.1`)").warnings[0]?.code, "hostsni-ip-literal");
    assert.equal(ok("HostSNI(`a.com:443`)").warnings[0]?.code, "hostsni-port");
  });

  const invalid: [string, RegExp][] = [
    ["*.*.example.com", /whole first label/],
    ["*example.com", /wildcard/],
    ["a.*.com", /wildcard/],
    ["**", /wildcard/],
    ["[::1]", /without brackets/],
    ["a.com b.com", /HostSNI\(`a\.com`\) \|\| HostSNI\(`b\.com`\)/],
    ["a.com,b.com", /HostSNI\(`a\.com`\) \|\| HostSNI\(`b\.com`\)/],
    ["https://a.com", /not a URL/],
    [" a.com", /one host name/],
    ["a!b", /letters, digits/],
  ];
  for (const [value, hint] of invalid) {
    it(`refuses ${JSON.stringify(value)}`, () => {
      const e = refused(`HostSNI(\`${value}\`)`);
      assert.equal(e.code, "invalid-hostsni");
      assert.equal(e.column, 9);
      assert.match(e.hint ?? "", hint);
    });
  }

  it("refuses non-ASCII values with a punycode hint", () => {
    const e = refused("HostSNI(`bücher.example`)");
    assert.equal(e.code, "non-ascii");
    assert.equal(e.hint, "write HostSNI(`xn--bcher-kva.example`)");
    assert.equal(refused("HostSNI(`*.bücher.example`)").hint, "write HostSNI(`*.xn--bcher-kva.example`)");
    assert.equal(refused("HostSNI(`bücher.example`)", "v2").code, "non-ascii");
  });

  it("takes exactly one value, with the rewritten rule as hint", () => {
    const e = refused("HostSNI(`a`, `b`)");
    assert.equal(e.code, "matcher-arity");
    assert.equal(e.column, 14);
    assert.equal(e.hint, "write one matcher per value: HostSNI(`a`) || HostSNI(`b`) (or set ruleSyntax: v2)");
    const nested = refused('ALPN(`h2`) && hostsni("a", `b`)');
    assert.equal(
      nested.hint,
      'write one matcher per value: ALPN(`h2`) && (hostsni("a") || hostsni(`b`)) (or set ruleSyntax: v2)',
    );
    assert.match(refused("!ClientIP(`::1`, `10.0.0.0/8`)").hint ?? "", /!\(ClientIP\(`::1`\) \|\| ClientIP/);
  });
});

describe("HostSNI (v2)", () => {
  it("is variadic with OR semantics", () => {
    const rule = ok("HostSNI(`a.com`, `B.com`)", "v2");
    assert.equal(rule.match(facts("a.com")), true);
    assert.equal(rule.match(facts("b.com")), true);
    assert.equal(rule.match(facts("c.com")), false);
    assert.equal(rule.match(facts("")), false);
  });

  it("treats a first `*` as always true and a later `*` as any non-empty SNI", () => {
    assert.equal(matches("HostSNI(`*`, `a.com`)", facts(""), "v2"), true);
    assert.equal(matches("HostSNI(`a.com`, `*`)", facts(""), "v2"), false);
    assert.equal(matches("HostSNI(`a.com`, `*`)", facts("zzz"), "v2"), true);
    assert.equal(ok("HostSNI(`*`)", "v2").catchAll, true);
    assert.equal(ok("HostSNI(`*`, `a.com`)", "v2").catchAll, false);
  });

  it("matches the value or the value minus one trailing dot", () => {
    assert.equal(matches("HostSNI(`a.com.`)", facts("a.com"), "v2"), true);
    assert.equal(matches("HostSNI(`a.com.`)", facts("a.com."), "v2"), true);
  });

  it("refuses the `*.` wildcard with a hint", () => {
    const e = refused("HostSNI(`a.com`, `*.b.com`)", "v2");
    assert.equal(e.code, "invalid-hostsni");
    assert.equal(e.column, 18);
    assert.match(e.hint ?? "", /ruleSyntax v3/);
  });
});

describe("HostSNIRegexp", () => {
  it("v3: RE2, unanchored, case-sensitive against the lowercased SNI", () => {
    assert.equal(matches("HostSNIRegexp(`^db\\.`)", facts("db.example.com")), true);
    assert.equal(matches("HostSNIRegexp(`example`)", facts("db.example.com")), true);
    assert.equal(matches("HostSNIRegexp(`^example`)", facts("db.example.com")), false);
    assert.equal(matches("HostSNIRegexp(`^DB`)", facts("db.example.com")), false);
    assert.equal(matches("HostSNIRegexp(`(?i)^DB`)", facts("db.example.com")), true);
    assert.equal(matches("HostSNIRegexp(`^$`)", facts("")), true);
    assert.equal(matches('HostSNIRegexp("^[a-z]+\\\\.example\\\\.com$")', facts("db.example.com")), true);
  });

  it("v3: does not interpret v2 templates, and warns", () => {
    const rule = ok("HostSNIRegexp(`{sub}.example.com`)");
    assert.equal(rule.match(facts("a.example.com")), false);
    assert.ok(rule.warnings.some((w) => w.code === "regexp-v2-template"));
    assert.ok(ok("HostSNIRegexp(`^DB$`)").warnings.some((w) => w.code === "regexp-uppercase"));
    assert.ok(!ok("HostSNIRegexp(`^\\Ddb$`)").warnings.some((w) => w.code === "regexp-uppercase"));
    assert.ok(ok("HostSNIRegexp(`db`)").warnings.some((w) => w.code === "regexp-unanchored"));
  });

  it("v3: refuses RE2 errors with the RE2 message, and non-ASCII", () => {
    const e = refused("HostSNIRegexp(`(a`)");
    assert.equal(e.code, "invalid-regexp");
    assert.equal(e.column, 15);
    assert.match(e.message, /missing closing \)/);
    assert.match(refused("HostSNIRegexp(`(?<=a)b`)").message, /error parsing regexp/);
    assert.match(refused("HostSNIRegexp(`a\\1`)").message, /invalid escape/);
    assert.equal(refused("HostSNIRegexp(`^ü$`)").code, "non-ascii");
  });

  it("v2: templates, anchored and case-insensitive", () => {
    const rule = ok("HostSNIRegexp(`{sub}.example.com`, `{x:[0-9]+}.db.com`)", "v2");
    assert.equal(rule.match(facts("a.example.com")), true);
    assert.equal(rule.match(facts("a.b.example.com")), false);
    assert.equal(rule.match(facts("aexample.com")), false);
    assert.equal(rule.match(facts("x.example.com.evil")), false);
    assert.equal(rule.match(facts("42.db.com")), true);
    assert.equal(rule.match(facts("4x.db.com")), false);
    assert.equal(matches("HostSNIRegexp(`EXAMPLE.com`)", facts("example.com"), "v2"), true);
    assert.equal(matches("HostSNIRegexp(`a.com`)", facts("abcom"), "v2"), false);
  });

  it("v2: reports brace and template errors", () => {
    const unbalanced = refused("HostSNIRegexp(`{sub.example.com`)", "v2");
    assert.equal(unbalanced.code, "invalid-regexp");
    assert.match(unbalanced.message, /unbalanced braces/);
    assert.match(refused("HostSNIRegexp(`sub}.example.com`)", "v2").message, /unbalanced braces/);
    assert.match(
      refused("HostSNIRegexp(`{:x}.example.com`)", "v2").message,
      /missing name or pattern in "\{:x\}"/,
    );
    assert.match(refused("HostSNIRegexp(`{x:}.example.com`)", "v2").message, /missing name or pattern/);
    assert.match(refused("HostSNIRegexp(`{x:(}.com`)", "v2").message, /error parsing regexp/);
    const second = refused("HostSNIRegexp(`a.com`, `{b`)", "v2");
    assert.equal(second.column, 24);
  });
});

describe("ClientIP", () => {
  it("matches IPs and CIDR ranges, IPv4-mapped both ways", () => {
    assert.equal(matches("ClientIP(`10.0.0.0/8`)", facts("", [], "10.1.2.3")), true);
    assert.equal(matches("ClientIP(`10.0.0.0/8`)", facts("", [], "::ffff:10.1.2.3")), true);
    assert.equal(matches("ClientIP(`::ffff:10.1.2.3`)", facts("", [], "10.1.2.3")), true);
    assert.equal(matches("ClientIP(`10.0.0.0/8`)", facts("", [], "11.1.2.3")), false);
    assert.equal(matches("ClientIP(`1.2.3.4/24`)", facts("", [], "1.2.3.200")), true);
    assert.equal(matches("ClientIP(`fe80::/10`)", facts("", [], "fe80::1%eth0")), true);
    assert.equal(matches("ClientIP(`10.0.0.0/8`)", facts("", [], "010.1.2.3")), false);
    assert.equal(matches("ClientIP(`10.0.0.0/8`)", facts("", [], "")), false);
    assert.equal(matches("ClientIP(`10.0.0.0/8`, `::1`)", facts("", [], "::1"), "v2"), true);
  });

  it("refuses what is not an IP or CIDR", () => {
    for (const bad of [
      "localhost",
      "10.0.0.0/33",
      "10.0.0.1-10.0.0.9",
      "1.2.3.04",
      "fe80::1%eth0",
      "::1/129",
      "1.2.3",
    ]) {
      const e = refused(`ClientIP(\`${bad}\`)`);
      assert.equal(e.code, "invalid-client-ip", bad);
      assert.equal(e.column, 10);
      assert.ok(e.message.includes(JSON.stringify(bad)), e.message);
    }
    assert.equal(refused("ClientIP(`::1`, `nope`)", "v2").column, 17);
  });
});

describe("ALPN", () => {
  it("matches exact membership in the offered list", () => {
    assert.equal(matches("ALPN(`h2`)", facts("x", ["http/1.1", "h2"])), true);
    assert.equal(matches("ALPN(`h2`)", facts("x", ["H2"])), false);
    assert.equal(matches("ALPN(`h2`)", facts("x", [])), false);
    assert.equal(matches("ALPN(`h2`, `postgresql`)", facts("", ["postgresql"]), "v2"), true);
    assert.equal(matches("ALPN(`h2`, `postgresql`)", facts("", ["imap"]), "v2"), false);
  });

  it("refuses acme-tls/1", () => {
    const e = refused("ALPN(`acme-tls/1`)");
    assert.equal(e.code, "alpn-acme-forbidden");
    assert.equal(e.column, 6);
    assert.equal(refused("ALPN(`h2`, `acme-tls/1`)", "v2").column, 12);
  });
});

describe("catch-all, HostSNI values, default priority", () => {
  it("flags exactly the one-leaf HostSNI(`*`) rule as catch-all", () => {
    assert.equal(ok('hostsni("*")').catchAll, true);
    assert.equal(ok("(HostSNI(`*`))").catchAll, true);
    assert.equal(ok("HostSNI(`*`) && ALPN(`h2`)").catchAll, false);
    assert.equal(ok("HostSNI(`*`) || HostSNI(`*`)").catchAll, false);
    assert.equal(ok("HostSNI(`a`)").catchAll, false);
    // Traefik pushes ! to the leaves first, so the negated form carries the flag too (it never matches).
    const negated = ok("!HostSNI(`*`)");
    assert.equal(negated.catchAll, true);
    assert.equal(negated.match(facts("")), false);
    assert.equal(negated.warnings[0]?.code, "never-matches");
  });

  it("lists HostSNI values in source order, lowercased", () => {
    assert.deepEqual(ok("ALPN(`h2`) && (HostSNI(`B.com`) || !HOSTSNI(`*`))").hostSNIValues, ["b.com", "*"]);
    assert.deepEqual(ok("HostSNI(`A`, `*`)", "v2").hostSNIValues, ["a", "*"]);
    assert.deepEqual(ok("ClientIP(`::1`)").hostSNIValues, []);
  });

  it("computes the default priority like Traefik", () => {
    assert.equal(defaultPriority("HostSNI(`example.org`)"), 22);
    assert.equal(defaultPriority("HostSNI(`*`)"), -1);
    assert.equal(defaultPriority(' HostSNI ( "*" ) '), -1);
    assert.equal(defaultPriority("hostsni(`*`)"), -1);
    assert.equal(defaultPriority("(HostSNI(`*`))"), -1);
    assert.equal(defaultPriority("!HostSNI(`*`)"), -1);
    assert.equal(defaultPriority('HostSNI("\\x2a")'), -1);
    assert.equal(defaultPriority("HostSNI(`*`) && ALPN(`h2`)"), "HostSNI(`*`) && ALPN(`h2`)".length);
    assert.equal(defaultPriority("HostSNI(`*`, `*`)"), 17);
    assert.equal(defaultPriority("HostSNI(`*`"), 11);
    assert.equal(defaultPriority("HostSNI(`bücher.de`)"), 21); // bytes, not characters
    assert.equal(defaultPriority(""), 0);
    assert.equal(defaultPriority("HostSNI(`*`)", "v2"), -1);
  });
});

describe("traceRule", () => {
  it("explains each matcher", () => {
    const reason = (rule: string, f: ConnectionFacts, syntax?: RuleSyntax) =>
      traceRule(ok(rule, syntax), f).reason;
    assert.equal(
      reason("HostSNI(`db.example.com`)", facts("db.example.com")),
      'SNI "db.example.com" equals "db.example.com"',
    );
    assert.equal(
      reason("HostSNI(`*.example.com`)", facts("a.b.example.com")),
      'SNI "a.b.example.com" has more than one label before "example.com"',
    );
    assert.equal(
      reason("HostSNI(`*.example.com`)", facts("example.com")),
      'SNI "example.com" has no label before "example.com"',
    );
    assert.equal(reason("HostSNI(`a`)", facts("")), "no SNI (not a TLS connection or client sent none)");
    assert.equal(
      reason("ClientIP(`127.0.0.0/8`)", facts("", [], "10.1.2.3")),
      "client IP 10.1.2.3 is not in 127.0.0.0/8",
    );
    assert.equal(
      reason("ClientIP(`1.2.3.4/24`)", facts("", [], "1.2.3.9")),
      "client IP 1.2.3.9 is in 1.2.3.0/24",
    );
    assert.equal(
      reason("ALPN(`postgresql`)", facts("", ["h2", "http/1.1"])),
      'ALPN offered [h2, http/1.1] does not include "postgresql"',
    );
    assert.match(reason("HostSNIRegexp(`^a`)", facts("ab")) ?? "", /matches the regexp \^a/);
  });

  it("marks operands skipped by short-circuit with null", () => {
    const rule = ok("HostSNI(`a`) || (ALPN(`h2`) && !ClientIP(`::1`))");
    const t = traceRule(rule, facts("a"));
    assert.equal(t.result, true);
    assert.equal(t.children?.[0]?.result, true);
    const skipped = t.children?.[1];
    assert.equal(skipped?.result, null);
    assert.equal(skipped?.text, "ALPN(`h2`) && !ClientIP(`::1`)");
    assert.deepEqual(
      skipped?.children?.map((c) => c.result),
      [null, null],
    );
    assert.equal(skipped?.children?.[1]?.children?.[0]?.result, null);
  });

  it("flattens chains of one operator", () => {
    const t = traceRule(ok("HostSNI(`a`) && ALPN(`x`) && ClientIP(`::1`)"), facts("a", ["x"], "::2"));
    assert.equal(t.kind, "and");
    assert.deepEqual(
      t.children?.map((c) => [c.text, c.result]),
      [
        ["HostSNI(`a`)", true],
        ["ALPN(`x`)", true],
        ["ClientIP(`::1`)", false],
      ],
    );
  });
});

describe("canonicalSni", () => {
  it("lowercases and trims like Go", () => {
    assert.equal(canonicalSni("  DB.Example.COM\t"), "db.example.com");
    assert.equal(canonicalSni("\u00a0a.com\u3000"), "a.com");
    assert.equal(canonicalSni("\ufeffa.com"), "\ufeffa.com"); // Go does not treat BOM as space
    assert.equal(canonicalSni("\u0130"), "i"); // one code point, as Go maps it
    assert.equal(canonicalSni("ΣΑ"), "σα");
  });
});

describe("sniIndexKeys", () => {
  const keys = (rule: string, syntax?: RuleSyntax) => sniIndexKeys(ok(rule, syntax));
  it("collects exact names and wildcard parents", () => {
    assert.deepEqual(keys("HostSNI(`A.com`)"), { exact: ["a.com"], wildcardParents: [] });
    assert.deepEqual(keys("HostSNI(`a.com`) || HostSNI(`*.b.com`)"), {
      exact: ["a.com"],
      wildcardParents: ["b.com"],
    });
    assert.deepEqual(keys("HostSNI(`a.com`) && ALPN(`h2`)"), { exact: ["a.com"], wildcardParents: [] });
    assert.deepEqual(keys("(HostSNI(`a`) || HostSNI(`b`)) && HostSNI(`c`)"), {
      exact: ["c"],
      wildcardParents: [],
    });
    assert.deepEqual(keys("HostSNI(`a.com.`, `b.com`)", "v2"), {
      exact: ["a.com.", "a.com", "b.com"],
      wildcardParents: [],
    });
  });
  it("returns null when no finite set exists", () => {
    for (const rule of [
      "HostSNI(`*`)",
      "HostSNIRegexp(`^a$`)",
      "!HostSNI(`a`)",
      "ALPN(`h2`)",
      "ClientIP(`::1`)",
      "HostSNI(`a`) || ALPN(`h2`)",
    ]) {
      assert.equal(keys(rule), null, rule);
    }
    assert.equal(keys("HostSNI(`a`, `*`)", "v2"), null);
  });
});

// ------------------------------------------------------------------------------------ properties

type Model =
  | { k: "leaf"; name: "HostSNI" | "HostSNIRegexp" | "ClientIP" | "ALPN"; value: string }
  | { k: "and" | "or"; l: Model; r: Model }
  | { k: "not"; x: Model };

const leafValues = {
  HostSNI: ["*", "a.example.com", "*.example.com", "example.com", "B.example.com", "a.example.com."],
  HostSNIRegexp: ["^a\\.", "example", "^$", "(?i)^B"],
  ClientIP: ["10.0.0.0/8", "::1", "127.0.0.1", "::ffff:10.0.0.0/104"],
  ALPN: ["h2", "postgresql"],
} as const;

const spellings = {
  HostSNI: ["HostSNI", "hostsni", "HOSTSNI", "Hostsni"],
  HostSNIRegexp: ["HostSNIRegexp", "hostsniregexp", "HOSTSNIREGEXP", "Hostsniregexp"],
  ClientIP: ["ClientIP", "clientip", "CLIENTIP", "Clientip"],
  ALPN: ["ALPN", "alpn", "Alpn"],
} as const;

const leafArb: fc.Arbitrary<Model> = fc
  .constantFrom("HostSNI", "HostSNIRegexp", "ClientIP", "ALPN" as const)
  .chain((name) => fc.constantFrom(...leafValues[name]).map((value): Model => ({ k: "leaf", name, value })));

const modelArb: fc.Arbitrary<Model> = fc.letrec<{ node: Model }>((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    leafArb,
    fc.record({ k: fc.constantFrom("and" as const, "or" as const), l: tie("node"), r: tie("node") }),
    fc.record({ k: fc.constant("not" as const), x: tie("node") }),
  ),
})).node;

/** Print with the fewest parentheses Go precedence needs, plus optional noise (spelling, quoting, spacing, parens). */
function print(model: Model, noise: number[]): string {
  let i = 0;
  const pick = () => (noise.length === 0 ? 0 : noise[i++ % noise.length]!);
  const go = (m: Model, parent: number): string => {
    const n = pick();
    let text: string;
    let precedence: number;
    switch (m.k) {
      case "leaf": {
        const names = spellings[m.name];
        const name = names[n % names.length]!;
        const quoted = n % 2 === 0 ? `\`${m.value}\`` : JSON.stringify(m.value);
        text = n % 7 === 6 ? `${name} (\n ${quoted},\n )` : `${name}(${quoted})`;
        precedence = 4;
        break;
      }
      case "not":
        text = `!${go(m.x, 3)}`;
        precedence = 3;
        break;
      default: {
        precedence = m.k === "and" ? 2 : 1;
        const op = m.k === "and" ? "&&" : "||";
        // A right operand of equal precedence needs parentheses to keep the tree's shape.
        const left = go(m.l, precedence);
        const right = go(m.r, precedence + 0.5);
        text = `${left} ${op}${n % 3 === 2 ? "\n  " : " "}${right}`;
      }
    }
    const needParens = precedence < parent || (n % 5 === 4 && m.k !== "leaf");
    return needParens ? `(${text})` : text;
  };
  return go(model, 0);
}

function modelMatch(m: Model, f: ConnectionFacts): boolean {
  switch (m.k) {
    case "and":
      return modelMatch(m.l, f) && modelMatch(m.r, f);
    case "or":
      return modelMatch(m.l, f) || modelMatch(m.r, f);
    case "not":
      return !modelMatch(m.x, f);
    case "leaf":
      switch (m.name) {
        case "HostSNI": {
          if (m.value === "*") return true;
          if (f.sni === "") return false;
          const v = m.value.toLowerCase().replace(/\.$/, "");
          if (v.startsWith("*.")) {
            const labels = f.sni.split(".");
            return labels.length > 1 && labels.slice(1).join(".") === v.slice(2);
          }
          return f.sni === v;
        }
        case "HostSNIRegexp":
          return new RegExp(m.value.replace("(?i)", ""), m.value.startsWith("(?i)") ? "i" : "").test(f.sni);
        case "ClientIP": {
          const ip = f.clientIp.replace(/^::ffff:/, "").replace(/%.*$/, "");
          if (m.value === "10.0.0.0/8" || m.value === "::ffff:10.0.0.0/104")
            return /^10\.\d+\.\d+\.\d+$/.test(ip);
          if (m.value === "127.0.0.1") return ip === "127.0.0.1";
          return ip === "::1";
        }
        case "ALPN":
          return f.alpn.includes(m.value);
      }
  }
}

const factsArb: fc.Arbitrary<ConnectionFacts> = fc.record({
  sni: fc.oneof(
    fc.constantFrom(
      "",
      "a.example.com",
      "b.example.com",
      "example.com",
      "x.a.example.com",
      "other.org",
      "a.",
    ),
    fc.stringMatching(/^[a-z]{1,3}(\.[a-z]{1,3}){0,2}$/),
  ),
  alpn: fc.subarray(["h2", "http/1.1", "postgresql"]),
  clientIp: fc.constantFrom(
    "",
    "10.1.2.3",
    "::ffff:10.1.2.3",
    "127.0.0.1",
    "::1",
    "fe80::1%eth0",
    "010.1.2.3",
    "junk",
  ),
});

function checkTrace(node: TraceNode): void {
  if (node.result === null) {
    for (const c of node.children ?? []) assert.equal(c.result, null);
    return;
  }
  if (node.kind === "not") assert.equal(node.result, !node.children?.[0]?.result);
  if (node.kind === "and" || node.kind === "or") {
    const evaluated = (node.children ?? []).filter((c) => c.result !== null).map((c) => c.result);
    assert.equal(node.result, node.kind === "and" ? evaluated.every(Boolean) : evaluated.some(Boolean));
    // Short-circuit: only the last evaluated operand may be decisive.
    const decisive = node.kind === "or";
    assert.ok(!evaluated.slice(0, -1).includes(decisive));
  }
  for (const c of node.children ?? []) checkTrace(c);
}

describe("properties", () => {
  it("match() agrees with an independent model, and traceRule agrees with match()", () => {
    fc.assert(
      fc.property(modelArb, fc.array(fc.nat(30), { maxLength: 6 }), factsArb, (model, noise, f) => {
        const text = print(model, noise);
        const rule = ok(text);
        const expected = modelMatch(model, f);
        assert.equal(rule.match(f), expected, text);
        const trace = traceRule(rule, f);
        assert.equal(trace.result, expected, text);
        checkTrace(trace);
      }),
      { numRuns: 800 },
    );
  });

  it("sniIndexKeys is sound: an SNI outside the keys never matches", () => {
    fc.assert(
      fc.property(modelArb, factsArb, (model, f) => {
        const rule = ok(print(model, []));
        const keys = sniIndexKeys(rule);
        if (keys === null) return;
        const dot = f.sni.indexOf(".");
        const parent = dot >= 0 ? f.sni.slice(dot + 1) : null;
        const inside =
          keys.exact.includes(f.sni) || (parent !== null && keys.wildcardParents.includes(parent));
        if (!inside) assert.equal(rule.match(f), false, rule.text);
      }),
      { numRuns: 800 },
    );
  });

  it("defaultPriority is -1 exactly for catch-all rules", () => {
    fc.assert(
      fc.property(modelArb, fc.array(fc.nat(30), { maxLength: 6 }), (model, noise) => {
        const text = print(model, noise);
        const rule = ok(text);
        assert.equal(defaultPriority(text) === -1, rule.catchAll, text);
      }),
    );
  });

  const tokens = [
    "HostSNI",
    "hostSni",
    "ALPN",
    "ClientIP",
    "HostSNIRegexp",
    "(",
    ")",
    "!",
    "&&",
    "||",
    "&",
    "|",
    ",",
    " ",
    "\n",
    "`a.com`",
    "`*`",
    '"x\\',
    '"',
    "`",
    "'",
    "'a'",
    "/*",
    "*/",
    "//",
    "1",
    ".",
    "...",
    "{",
    "==",
    "\\",
    "é",
    "\u0000",
    "\ufeff",
    "`(`",
    "`10.0.0.0/8`",
  ];

  it("compileRule never throws, whatever the text", () => {
    const textArb = fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.array(fc.constantFrom(...tokens), { maxLength: 25 }).map((parts) => parts.join("")),
    );
    fc.assert(
      fc.property(textArb, fc.constantFrom<RuleSyntax>("v2", "v3"), (text, syntax) => {
        const result = compileRule(text, syntax);
        if (!result.ok) {
          assert.ok(
            result.error.column >= 1 && result.error.column <= text.length + 1,
            JSON.stringify(result.error),
          );
          assert.match(result.error.code, /^[a-z]+(-[a-z]+)*$/);
        } else {
          // A compiled rule always evaluates and traces without throwing.
          const f = facts("a.com", ["h2"], "10.0.0.1");
          assert.equal(traceRule(result.rule, f).result, result.rule.match(f));
        }
        const priority = defaultPriority(text, syntax);
        assert.ok(priority === -1 || priority === new TextEncoder().encode(text).length);
      }),
      { numRuns: 3000 },
    );
  });
});
