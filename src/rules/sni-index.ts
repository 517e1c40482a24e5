/**
 * sniIndexKeys: a finite set of server names outside which a rule can never match, so that a
 * router table can find candidate routes by hash lookup instead of scanning every rule.
 */
import { type EvalNode, evaluatorOf } from "./compile.ts";
import type { SniKeys } from "./matchers.ts";
import type { CompiledRule } from "./types.ts";

function keysOf(node: EvalNode): SniKeys | null {
  switch (node.kind) {
    case "matcher":
      return node.leaf.sniKeys;
    case "not":
      // The complement of a finite set is not finite.
      return null;
    case "and": {
      // Every operand must hold, so any one operand's keys bound the rule: take the smallest.
      let best: SniKeys | null = null;
      for (const child of node.children) {
        const keys = keysOf(child);
        if (keys === null) continue;
        if (best === null || size(keys) < size(best)) best = keys;
      }
      return best;
    }
    case "or": {
      // Any operand may hold, so every operand must be bounded.
      const exact = new Set<string>();
      const parents = new Set<string>();
      for (const child of node.children) {
        const keys = keysOf(child);
        if (keys === null) return null;
        for (const e of keys.exact) exact.add(e);
        for (const p of keys.wildcardParents) parents.add(p);
      }
      return { exact: [...exact], wildcardParents: [...parents] };
    }
  }
}

function size(keys: SniKeys): number {
  return keys.exact.length + keys.wildcardParents.length;
}

/**
 * Names such that the rule can only match when the canonical SNI is one of `exact`, or is a label
 * followed by "." and one of `wildcardParents` (the text after the SNI's first dot equals the
 * parent). null when no finite set exists (catch-all, HostSNIRegexp, negations, ClientIP/ALPN-only
 * rules, an || operand without HostSNI, ...).
 */
export function sniIndexKeys(rule: CompiledRule): SniKeys | null {
  const cached = computed.get(rule);
  if (cached !== undefined) return cached;
  const keys = computeKeys(rule);
  computed.set(rule, keys);
  return keys;
}

/**
 * One answer per compiled rule: the route table and several lints ask for the same rule's keys, and
 * at 10k routers recomputing them (sets, arrays) was measurable. The arrays are shared, so frozen.
 */
const computed = new WeakMap<CompiledRule, SniKeys | null>();

function computeKeys(rule: CompiledRule): SniKeys | null {
  const root = evaluatorOf(rule);
  if (root === null) return null;
  const keys = keysOf(root);
  if (keys === null) return null;
  return {
    exact: Object.freeze([...new Set(keys.exact)]) as string[],
    wildcardParents: Object.freeze([...new Set(keys.wildcardParents)]) as string[],
  };
}
