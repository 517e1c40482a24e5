/** The rule language of tlsroute: Traefik's TCP router rules, v3 and v2 syntax. */
export { compileRule } from "./compile.ts";
export { canonicalSni } from "./hostname.ts";
export { IpMatcher, type IpMatcherParse, parseAddr } from "./ip.ts";
export type { SniKeys } from "./matchers.ts";
export { defaultPriority } from "./priority.ts";
export { sniIndexKeys } from "./sni-index.ts";
export { traceRule } from "./trace.ts";
export type {
  CompiledRule,
  CompileResult,
  ConnectionFacts,
  MatcherExpr,
  MatcherName,
  RuleError,
  RuleExpr,
  RuleSyntax,
  RuleWarning,
  Span,
  TraceNode,
} from "./types.ts";
