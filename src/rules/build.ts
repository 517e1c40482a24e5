/**
 * From the Go-like syntax tree to the rule tree, applying what Traefik's predicate parser accepts:
 * calls of the known matcher names (four spellings each) with string-literal arguments, joined by
 * `&&`, `||` and `!`, with parentheses. Errors are raised in the order Traefik's parser meets
 * them: operands left to right, an operator after both of its operands.
 */
import type { RawNode } from "./parser.ts";
import type { MatcherExpr, MatcherName, RuleExpr, RuleWarning } from "./types.ts";
import { type RuleFailure, ruleError } from "./types.ts";

export const MATCHER_NAMES: readonly MatcherName[] = ["HostSNI", "HostSNIRegexp", "ClientIP", "ALPN"];

/** Traefik registers each matcher under its name, lowercase, UPPERCASE and Titlecase-of-lowercase. */
export function spellingsOf(name: MatcherName): string[] {
  const lower = name.toLowerCase();
  const title = lower[0]!.toUpperCase() + lower.slice(1);
  return [...new Set([name, lower, name.toUpperCase(), title])];
}

const spellingTable = new Map<string, MatcherName>();
for (const name of MATCHER_NAMES) for (const s of spellingsOf(name)) spellingTable.set(s, name);

export function lookupMatcher(spelledAs: string): MatcherName | undefined {
  return spellingTable.get(spelledAs);
}

/** A leaf as found in the source, with what a rewrite of it needs to know. */
export interface LeafSite {
  leaf: MatcherExpr;
  /** The leaf is a direct operand of && or ! (an || put in its place needs parentheses). */
  tight: boolean;
}

export interface BuildResult {
  expr: RuleExpr;
  /** Leaves in source order. */
  leaves: LeafSite[];
  warnings: RuleWarning[];
}

type Converted = RuleExpr | { type: "value"; node: RawNode };

const httpMatchers: Record<string, string> = {
  host: "HostSNI",
  hostregexp: "HostSNIRegexp",
  hostheader: "HostSNI",
  path: "",
  pathprefix: "",
  pathregexp: "",
  method: "",
  header: "",
  headers: "",
  headerregexp: "",
  headersregexp: "",
  query: "",
  queryregexp: "",
};

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

const allMatchersHint = "TCP rules can use HostSNI, HostSNIRegexp, ClientIP and ALPN";

class Builder {
  readonly leaves: LeafSite[] = [];
  readonly warnings: RuleWarning[] = [];

  constructor(private readonly text: string) {}

  private src(node: { start: number; end: number }): string {
    return this.text.slice(node.start, node.end);
  }

  convert(node: RawNode, tight: boolean): Converted {
    switch (node.k) {
      case "binary":
        return this.convertChain(node);
      case "paren":
        return this.convert(node.x, false);
      case "unary":
        return this.convertUnary(node);
      case "call":
        return this.convertCall(node, tight);
      case "ident":
        throw this.undefinedName(node);
      case "selector":
        throw ruleError(
          "invalid-operand",
          node.start,
          `${this.src(node)} is not defined; a rule is made of matcher calls`,
          /^[\w.-]+$/.test(this.src(node))
            ? `to match a host name write HostSNI(\`${this.src(node)}\`)`
            : undefined,
        );
      case "string":
      case "number":
      case "char":
        return { type: "value", node };
    }
  }

  /** A left-deep chain of binary operators, walked without recursion along its left side. */
  private convertChain(top: Extract<RawNode, { k: "binary" }>): Converted {
    const spine: Extract<RawNode, { k: "binary" }>[] = [];
    let node: RawNode = top;
    while (node.k === "binary") {
      spine.push(node);
      node = node.x;
    }
    let acc = this.convert(node, spine[spine.length - 1]!.op === "&&");
    for (let i = spine.length - 1; i >= 0; i--) {
      const bin = spine[i]!;
      const right = this.convert(bin.y, bin.op === "&&");
      acc = this.join(bin, acc, right);
    }
    return acc;
  }

  private join(bin: Extract<RawNode, { k: "binary" }>, left: Converted, right: Converted): RuleExpr {
    if (bin.op !== "&&" && bin.op !== "||") throw this.unsupportedOperator(bin.op, bin.opStart);
    const l = this.requireExpr(left, bin.op);
    const r = this.requireExpr(right, bin.op);
    return { type: bin.op === "&&" ? "and" : "or", left: l, right: r, start: bin.start, end: bin.end };
  }

  private convertUnary(node: Extract<RawNode, { k: "unary" }>): Converted {
    if (node.op !== "!") throw this.unsupportedOperator(node.op, node.start);
    const operand = this.requireExpr(this.convert(node.x, true), "!");
    return { type: "not", operand, start: node.start, end: node.end };
  }

  private unsupportedOperator(op: string, offset: number): RuleFailure {
    const hints: Record<string, string> = {
      "&": "did you mean && (both must match)?",
      "|": "did you mean || (either may match)?",
      "+": "values cannot be concatenated; write the whole value in one string",
      "-": "only !, && and || combine matchers",
      "==": "rules do not compare values: a matcher call such as HostSNI(`example.com`) is the comparison",
      "!=": "rules do not compare values: write !HostSNI(`example.com`) to exclude a name",
    };
    const hint =
      hints[op] ??
      (["<", "<=", ">", ">="].includes(op)
        ? "rules do not compare values; to match an address range use ClientIP(`10.0.0.0/8`)"
        : "only !, && and || combine matchers");
    return ruleError("unsupported-operator", offset, `operator ${op} is not supported in rules`, hint);
  }

  /** Operands of &&, || and ! must be matchers, not bare values. */
  private requireExpr(c: Converted, op: string): RuleExpr {
    if (c.type !== "value") return c;
    throw this.bareValue(c.node, `an operand of ${op}`);
  }

  bareValue(node: RawNode, where: string): RuleFailure {
    const text = this.src(node);
    if (node.k === "char") {
      return ruleError(
        "single-quoted-string",
        node.start,
        "single quotes do not make a string in rules (Go reads them as a one-character rune)",
        "quote values with backticks inside a matcher, e.g. HostSNI(`example.com`)",
      );
    }
    if (node.k === "string") {
      const value = node.value;
      return ruleError(
        "invalid-operand",
        node.start,
        `a string on its own cannot be ${where}; it must be the value of a matcher`,
        `wrap it in a matcher, e.g. HostSNI(${text})${/^[\w.*-]+$/.test(value) ? "" : " or HostSNIRegexp(...)"}`,
      );
    }
    return ruleError(
      "invalid-operand",
      node.start,
      `the number ${text} cannot be ${where}; a rule is made of matcher calls`,
      `to match an address write ClientIP(\`${text}\`)`,
    );
  }

  private undefinedName(node: Extract<RawNode, { k: "ident" }>): RuleFailure {
    const name = node.name;
    const matcher = lookupMatcher(name);
    if (matcher !== undefined) {
      return ruleError(
        "invalid-operand",
        node.start,
        `${name} is a matcher but is not called with a value`,
        `write ${name}(\`...\`), e.g. ${name}(\`${matcher === "ClientIP" ? "10.0.0.0/8" : matcher === "ALPN" ? "h2" : "example.com"}\`)`,
      );
    }
    const lower = name.toLowerCase();
    let hint: string | undefined;
    if (lower === "and") hint = "write && instead of and";
    else if (lower === "or") hint = "write || instead of or";
    else if (lower === "not") hint = "write ! instead of not";
    else if (lower === "true" || lower === "false") {
      hint = "rules have no boolean constants; HostSNI(`*`) matches every connection";
    } else if (/^[\w-]+$/.test(name)) hint = `to match a host name write HostSNI(\`${name}\`)`;
    return ruleError(
      "invalid-operand",
      node.start,
      `${name} is not defined; a rule is made of matcher calls`,
      hint,
    );
  }

  private convertCall(node: Extract<RawNode, { k: "call" }>, tight: boolean): RuleExpr {
    const fun = node.fun;
    if (fun.k !== "ident") {
      if (fun.k === "selector") {
        const known = lookupMatcher(fun.name);
        throw ruleError(
          "unknown-matcher",
          fun.start,
          `method-style call ${this.src(fun)}(...) is not supported`,
          known !== undefined ? `call ${fun.name}(...) directly` : allMatchersHint,
        );
      }
      throw ruleError("unknown-matcher", fun.start, "only a matcher name can be called", allMatchersHint);
    }
    const name = lookupMatcher(fun.name);
    if (name === undefined) throw this.unknownMatcher(fun.name, node);

    const args: string[] = [];
    const argSpans: { start: number; end: number }[] = [];
    for (const arg of node.args) {
      if (arg.k !== "string") throw this.badArgument(fun.name, arg);
      args.push(arg.value);
      argSpans.push({ start: arg.start, end: arg.end });
    }
    if (node.ellipsis !== null) {
      this.warnings.push({
        code: "ellipsis-ignored",
        column: node.ellipsis + 1,
        message: `"..." after the last value of ${fun.name} has no effect`,
        hint: "remove it",
      });
    }
    const leaf: MatcherExpr = {
      type: "matcher",
      name,
      spelledAs: fun.name,
      args,
      argSpans,
      start: node.start,
      end: node.end,
    };
    this.leaves.push({ leaf, tight });
    return leaf;
  }

  private unknownMatcher(name: string, call: Extract<RawNode, { k: "call" }>): RuleFailure {
    const lower = name.toLowerCase();
    const argsText = this.text.slice(call.lparen, call.end);
    const rewrite = (to: string) =>
      this.text.slice(0, call.start) + to + argsText + this.text.slice(call.end);
    for (const canonical of MATCHER_NAMES) {
      if (canonical.toLowerCase() === lower) {
        return ruleError(
          "unknown-matcher",
          call.start,
          `${name} is not an accepted spelling of ${canonical}`,
          `accepted spellings are ${spellingsOf(canonical).join(", ")}; write ${rewrite(canonical)}`,
        );
      }
    }
    const httpTarget = httpMatchers[lower];
    if (httpTarget !== undefined) {
      return ruleError(
        "unknown-matcher",
        call.start,
        `${name} is an HTTP router matcher; TCP routers match on the TLS connection, not on HTTP requests`,
        httpTarget !== ""
          ? `TCP routers match on ${httpTarget}: ${rewrite(httpTarget)}`
          : `paths, methods, headers and queries travel inside the encrypted stream; ${allMatchersHint}`,
      );
    }
    let best: { name: string; distance: number } | undefined;
    for (const canonical of MATCHER_NAMES) {
      const distance = editDistance(lower, canonical.toLowerCase());
      if (distance <= 3 && (best === undefined || distance < best.distance))
        best = { name: canonical, distance };
    }
    return ruleError(
      "unknown-matcher",
      call.start,
      `unknown matcher ${name}`,
      best !== undefined ? `did you mean ${best.name}? ${rewrite(best.name)}` : allMatchersHint,
    );
  }

  private badArgument(fun: string, arg: RawNode): RuleFailure {
    const text = this.src(arg);
    switch (arg.k) {
      case "char":
        return ruleError(
          "single-quoted-string",
          arg.start,
          "single quotes do not make a string in rules (Go reads them as a one-character rune)",
          `quote values with backticks: ${fun}(\`${text.slice(1, -1)}\`)`,
        );
      case "number":
      case "ident":
      case "selector":
        return ruleError(
          "invalid-argument",
          arg.start,
          `${fun} value ${text} is not quoted; values must be string literals`,
          `quote it with backticks: ${fun}(\`${text}\`)`,
        );
      case "call":
        return ruleError(
          "invalid-argument",
          arg.start,
          `a matcher call cannot be the value of ${fun}; values must be string literals`,
          "combine matchers with &&, || and ! instead of nesting them",
        );
      case "paren":
        return ruleError(
          "invalid-argument",
          arg.start,
          `a value of ${fun} cannot be wrapped in parentheses`,
          "remove the parentheses around the value",
        );
      default:
        return ruleError(
          "invalid-argument",
          arg.start,
          `values of ${fun} must be plain string literals, not expressions`,
          `to accept several values write one matcher per value joined with ||, e.g. ${fun}(\`a\`) || ${fun}(\`b\`)`,
        );
    }
  }
}

/** Turn the syntax tree into a rule tree, or throw a RuleFailure. */
export function buildExpr(text: string, raw: RawNode): BuildResult {
  const builder = new Builder(text);
  const converted = builder.convert(raw, false);
  if (converted.type === "value") throw builder.bareValue(converted.node, "a whole rule");
  return { expr: converted, leaves: builder.leaves, warnings: builder.warnings };
}
