/**
 * traceRule: evaluate a compiled rule and record every node's result and, for matchers, why.
 * It walks the same evaluator as `match()` in the same order, so the two always agree.
 */
import { type EvalNode, evaluatorOf } from "./compile.ts";
import type { CompiledRule, ConnectionFacts, TraceNode } from "./types.ts";

function skipped(node: EvalNode, text: string): TraceNode {
  const out: TraceNode = { kind: node.kind, text: text.slice(node.expr.start, node.expr.end), result: null };
  if (node.kind === "not") out.children = [skipped(node.child, text)];
  else if (node.kind !== "matcher") out.children = node.children.map((c) => skipped(c, text));
  return out;
}

function trace(node: EvalNode, facts: ConnectionFacts, text: string): TraceNode {
  const slice = text.slice(node.expr.start, node.expr.end);
  switch (node.kind) {
    case "matcher": {
      const result = node.leaf.test(facts);
      return { kind: "matcher", text: slice, result, reason: node.leaf.explain(facts, result) };
    }
    case "not": {
      const child = trace(node.child, facts, text);
      return {
        kind: "not",
        text: slice,
        result: child.result === null ? null : !child.result,
        children: [child],
      };
    }
    case "and":
    case "or": {
      // && stops at the first false operand, || at the first true one.
      const decisive = node.kind === "or";
      const children: TraceNode[] = [];
      let result = !decisive;
      for (const child of node.children) {
        if (result === decisive) {
          children.push(skipped(child, text));
          continue;
        }
        const traced = trace(child, facts, text);
        children.push(traced);
        if (traced.result === decisive) result = decisive;
      }
      return { kind: node.kind, text: slice, result, children };
    }
  }
}

export function traceRule(rule: CompiledRule, facts: ConnectionFacts): TraceNode {
  const root = evaluatorOf(rule);
  if (root === null) {
    // Only reachable with a hand-made CompiledRule whose text does not compile.
    return {
      kind: "matcher",
      text: rule.text,
      result: rule.match(facts),
      reason: "rule could not be traced",
    };
  }
  return trace(root, facts, rule.text);
}
