/**
 * Public types of the rule language: the tree a rule parses to, the facts a connection offers,
 * the compiled rule, errors and traces.
 */

/** `v3` is Traefik's default; `v2` is selected per router with `ruleSyntax: v2`. */
export type RuleSyntax = "v3" | "v2";

export type MatcherName = "HostSNI" | "HostSNIRegexp" | "ClientIP" | "ALPN";

/** A half-open range of offsets into the rule text (JavaScript string indices). */
export interface Span {
  start: number;
  end: number;
}

/**
 * The rule as written, after parsing. `start`/`end` are 0-based offsets into the rule text
 * (end exclusive), so callers can show the source slice of any node. A node's span never includes
 * the parentheses that group it. Chains such as `a || b || c` are left-deep, as Go parses them.
 */
export type RuleExpr =
  | { type: "and" | "or"; left: RuleExpr; right: RuleExpr; start: number; end: number }
  | { type: "not"; operand: RuleExpr; start: number; end: number }
  | {
      type: "matcher";
      /** Canonical matcher name, whatever spelling was used. */
      name: MatcherName;
      /** The function name exactly as written (`hostsni`, `HOSTSNI`, ...). */
      spelledAs: string;
      /** Decoded string arguments (quotes removed, escapes applied). */
      args: string[];
      /** Where each argument literal (quotes included) sits in the rule text. */
      argSpans: Span[];
      start: number;
      end: number;
    };

export type MatcherExpr = Extract<RuleExpr, { type: "matcher" }>;

/** What a connection offers to the rules. */
export interface ConnectionFacts {
  /** Already canonical (see canonicalSni); "" when none / not TLS. */
  sni: string;
  /** Offered ALPN list; [] when none / not TLS. */
  alpn: readonly string[];
  /** Peer IP text, "" if unknown; may be "::ffff:1.2.3.4" or carry a zone. */
  clientIp: string;
}

/** Something legal but probably not what the author meant (the rule still compiles). */
export interface RuleWarning {
  code: string;
  message: string;
  /** 1-based, counted like RuleError.column. */
  column: number;
  hint?: string;
}

export interface CompiledRule {
  text: string;
  syntax: RuleSyntax;
  expr: RuleExpr;
  /**
   * Traefik's catch-all flag: after `!` is pushed to the leaves, the rule is exactly one HostSNI
   * leaf with the single value `*`. Like Traefik, `!HostSNI(`*`)` is flagged too (it never matches,
   * so the flag is harmless for routing).
   */
  catchAll: boolean;
  /**
   * Every HostSNI value anywhere in the tree, lowercased, in source order (Traefik's
   * `ParseHostSNI`). The "HostSNI without tls" check compares only the first one to `*`.
   */
  hostSNIValues: string[];
  /** Legal constructs that are likely mistakes (never affect matching). */
  warnings: RuleWarning[];
  match(facts: ConnectionFacts): boolean;
}

export interface RuleError {
  /** kebab-case identifier, stable for tooling. */
  code: string;
  /** What is wrong, precisely. */
  message: string;
  /**
   * 1-based column where the problem starts, counting the rule text as one line (a newline counts
   * as one character), i.e. `offset + 1`.
   */
  column: number;
  /** 0-based offset of the problem in the rule text (JavaScript string index). */
  offset: number;
  /** How to fix it, often the corrected rule. */
  hint?: string;
}

export type CompileResult = { ok: true; rule: CompiledRule } | { ok: false; error: RuleError };

export interface TraceNode {
  kind: "and" | "or" | "not" | "matcher";
  /** The source slice of this node. */
  text: string;
  /** null = not evaluated because of short-circuit. */
  result: boolean | null;
  /** Matchers only: why the matcher gave its result. */
  reason?: string;
  /** Operands in evaluation order; chains of the same operator are flattened. */
  children?: TraceNode[];
}

/** Thrown inside the rules module only; compileRule turns it into `{ ok: false }`. */
export class RuleFailure extends Error {
  constructor(readonly info: RuleError) {
    super(info.message);
  }
}

export function ruleError(code: string, offset: number, message: string, hint?: string): RuleFailure {
  const info: RuleError = { code, message, column: offset + 1, offset };
  if (hint !== undefined) info.hint = hint;
  return new RuleFailure(info);
}
