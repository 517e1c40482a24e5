/**
 * compileRule: parse, check every matcher, and build the evaluator. The evaluator works on a tree
 * where chains of the same operator are flattened (`a || b || c` is one node with three operands),
 * which keeps evaluation shallow even for very long rules; short-circuit order is unchanged.
 */
import { buildExpr, type LeafSite } from "./build.ts";
import { buildLeaf, type LeafMatcher } from "./matchers.ts";
import { parseRaw } from "./parser.ts";
import type {
  CompiledRule,
  CompileResult,
  ConnectionFacts,
  MatcherExpr,
  RuleExpr,
  RuleSyntax,
  RuleWarning,
} from "./types.ts";
import { RuleFailure } from "./types.ts";

export type EvalNode =
  | { kind: "and" | "or"; expr: RuleExpr; children: EvalNode[] }
  | { kind: "not"; expr: RuleExpr; child: EvalNode }
  | { kind: "matcher"; expr: MatcherExpr; leaf: LeafMatcher };

interface Internals {
  root: EvalNode;
}

const internals = new WeakMap<CompiledRule, Internals>();

/** The evaluator behind a compiled rule (recompiled when the object did not come from compileRule). */
export function evaluatorOf(rule: CompiledRule): EvalNode | null {
  const known = internals.get(rule);
  if (known !== undefined) return known.root;
  const again = compileRule(rule.text, rule.syntax);
  return again.ok ? (internals.get(again.rule)?.root ?? null) : null;
}

/** Operands of a chain of `type`, left to right, without recursion. */
function chainOperands(expr: RuleExpr, type: "and" | "or"): RuleExpr[] {
  const out: RuleExpr[] = [];
  const stack: RuleExpr[] = [expr];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (node.type === type) stack.push(node.right, node.left);
    else out.push(node);
  }
  return out;
}

function buildEval(expr: RuleExpr, leaves: Map<MatcherExpr, LeafMatcher>): EvalNode {
  switch (expr.type) {
    case "matcher":
      return { kind: "matcher", expr, leaf: leaves.get(expr)! };
    case "not":
      return { kind: "not", expr, child: buildEval(expr.operand, leaves) };
    case "and":
    case "or":
      return {
        kind: expr.type,
        expr,
        children: chainOperands(expr, expr.type).map((operand) => buildEval(operand, leaves)),
      };
  }
}

export function evaluate(node: EvalNode, facts: ConnectionFacts): boolean {
  switch (node.kind) {
    case "matcher":
      return node.leaf.test(facts);
    case "not":
      return !evaluate(node.child, facts);
    case "and":
      for (const child of node.children) if (!evaluate(child, facts)) return false;
      return true;
    case "or":
      for (const child of node.children) if (evaluate(child, facts)) return true;
      return false;
  }
}

/** The leaf under any number of `!`, or null. */
export function stripNots(expr: RuleExpr): { leaf: MatcherExpr | null; negations: number } {
  let node = expr;
  let negations = 0;
  while (node.type === "not") {
    node = node.operand;
    negations++;
  }
  return { leaf: node.type === "matcher" ? node : null, negations };
}

/** Traefik's catch-all shape: one HostSNI leaf (negations ignored) whose only value is `*`. */
export function isCatchAllShape(expr: RuleExpr): boolean {
  const { leaf } = stripNots(expr);
  return leaf !== null && leaf.name === "HostSNI" && leaf.args.length === 1 && leaf.args[0] === "*";
}

function rewriter(text: string, site: LeafSite) {
  return (replacement: string, isDisjunction: boolean): string => {
    const piece = isDisjunction && site.tight ? `(${replacement})` : replacement;
    return text.slice(0, site.leaf.start) + piece + text.slice(site.leaf.end);
  };
}

function compileOrThrow(text: string, syntax: RuleSyntax): CompiledRule {
  const raw = parseRaw(text);
  const built = buildExpr(text, raw);
  const warnings: RuleWarning[] = [...built.warnings];
  const leaves = new Map<MatcherExpr, LeafMatcher>();
  for (const site of built.leaves) {
    const leaf = buildLeaf({
      leaf: site.leaf,
      text,
      syntax,
      rewrite: rewriter(text, site),
      warn: (w) => warnings.push(w),
    });
    leaves.set(site.leaf, leaf);
  }
  const expr = built.expr;
  const catchAll = isCatchAllShape(expr);
  if (catchAll && stripNots(expr).negations % 2 === 1) {
    warnings.push({
      code: "never-matches",
      column: expr.start + 1,
      message: "this rule negates HostSNI(`*`), so it never matches",
      hint: "remove the !, or use HostSNI(`*`) to match every connection",
    });
  }
  const hostSNIValues = built.leaves
    .filter((site) => site.leaf.name === "HostSNI")
    .flatMap((site) => site.leaf.args.map((a) => a.toLowerCase()));
  warnings.sort((a, b) => a.column - b.column);

  const root = buildEval(expr, leaves);
  const match =
    root.kind === "matcher"
      ? (facts: ConnectionFacts) => root.leaf.test(facts)
      : (facts: ConnectionFacts) => evaluate(root, facts);
  const rule: CompiledRule = { text, syntax, expr, catchAll, hostSNIValues, warnings, match };
  internals.set(rule, { root });
  return rule;
}

/**
 * Compile a rule. Never throws: any problem comes back as `{ ok: false, error }` with a code,
 * a message, the column where the problem starts and, where possible, a hint.
 */
export function compileRule(text: string, syntax: RuleSyntax = "v3"): CompileResult {
  try {
    return { ok: true, rule: compileOrThrow(text, syntax) };
  } catch (e) {
    if (e instanceof RuleFailure) return { ok: false, error: e.info };
    if (e instanceof RangeError) {
      // Defensive: a pathological rule exhausting the stack is reported, not thrown.
      return {
        ok: false,
        error: {
          code: "rule-too-deep",
          message: "the rule is too deeply nested to process",
          column: 1,
          offset: 0,
        },
      };
    }
    throw e;
  }
}
