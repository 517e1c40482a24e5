/**
 * Traefik's default router priority: the rule's length in bytes, except -1 for a rule that is
 * nothing but HostSNI(`*`) (any spelling, quoting, parentheses, whitespace; like Traefik, negations
 * are ignored by this check), so that the catch-all is tried last.
 */
import { buildExpr } from "./build.ts";
import { isCatchAllShape } from "./compile.ts";
import { parseRaw } from "./parser.ts";
import type { RuleSyntax } from "./types.ts";

const encoder = new TextEncoder();

export function utf8Length(text: string): number {
  return encoder.encode(text).length;
}

/**
 * `syntax` is accepted for symmetry with compileRule; Traefik computes the priority with a parser
 * that ignores the rule syntax, and so does this function.
 */
export function defaultPriority(text: string, _syntax: RuleSyntax = "v3"): number {
  try {
    const built = buildExpr(text, parseRaw(text));
    if (isCatchAllShape(built.expr)) return -1;
  } catch {
    // A rule that does not parse keeps its length; compileRule reports the problem.
  }
  return utf8Length(text);
}
