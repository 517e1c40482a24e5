/**
 * The four TCP matchers, in both rule syntaxes: build-time validation (with Traefik's refusals)
 * and the runtime test, plus a readable explanation of each result for traces.
 */
import { RE2JS } from "re2js";
import { hostSniV2Pattern, hostSniV3Pattern, invalidHostHint, isAscii, toALabel } from "./hostname.ts";
import { IpMatcher, parseAddr } from "./ip.ts";
import { templateToPattern } from "./template.ts";
import type { ConnectionFacts, MatcherExpr, RuleSyntax, RuleWarning } from "./types.ts";
import { ruleError } from "./types.ts";

/** SNI names outside which a leaf can never be true (see sniIndexKeys). */
export interface SniKeys {
  exact: string[];
  wildcardParents: string[];
}

export interface LeafMatcher {
  test(facts: ConnectionFacts): boolean;
  /** Why `test` gave `result` for these facts. */
  explain(facts: ConnectionFacts, result: boolean): string;
  /** null when the leaf does not restrict the SNI to a finite set. */
  sniKeys: SniKeys | null;
}

export interface LeafContext {
  leaf: MatcherExpr;
  /** The whole rule text. */
  text: string;
  syntax: RuleSyntax;
  /** The whole rule text, with this leaf replaced by `replacement` (parenthesised if needed). */
  rewrite(replacement: string, isDisjunction: boolean): string;
  warn(warning: RuleWarning): void;
}

const NO_SNI = "no SNI (not a TLS connection or client sent none)";
const ACME_TLS = "acme-tls/1";

function sni(s: string): string {
  return `SNI ${JSON.stringify(s)}`;
}

/** A value quoted the way a person would write it in a rule. */
export function quoteValue(value: string): string {
  return value.includes("`") || value.includes("\r") ? JSON.stringify(value) : `\`${value}\``;
}

function argOffset(ctx: LeafContext, index: number): number {
  return ctx.leaf.argSpans[index]?.start ?? ctx.leaf.start;
}

/** Checks common to every matcher (Traefik's CheckRule), then the per-syntax argument count. */
function checkArguments(ctx: LeafContext): void {
  const { leaf } = ctx;
  if (leaf.args.length === 0) {
    throw ruleError(
      "matcher-arity",
      leaf.start,
      `${leaf.spelledAs}() has no value`,
      `give it one, e.g. ${leaf.spelledAs}(${quoteValue(exampleValue(leaf.name))})`,
    );
  }
  const empty = leaf.args.indexOf("");
  if (empty >= 0) {
    throw ruleError(
      "empty-argument",
      argOffset(ctx, empty),
      `${leaf.spelledAs} has an empty value`,
      leaf.name === "HostSNI" ? "to match every connection write HostSNI(`*`)" : undefined,
    );
  }
  if (ctx.syntax !== "v2" && leaf.args.length > 1) {
    const separate = leaf.argSpans.map((_, i) => `${leaf.spelledAs}(${argSource(ctx, i)})`).join(" || ");
    throw ruleError(
      "matcher-arity",
      argOffset(ctx, 1),
      `${leaf.spelledAs} takes exactly one value in rule syntax v3, got ${leaf.args.length}`,
      `write one matcher per value: ${ctx.rewrite(separate, true)} (or set ruleSyntax: v2)`,
    );
  }
}

/** The argument literal as the user wrote it (quotes included). */
function argSource(ctx: LeafContext, index: number): string {
  const span = ctx.leaf.argSpans[index];
  return span === undefined ? quoteValue(ctx.leaf.args[index] ?? "") : ctx.text.slice(span.start, span.end);
}

function exampleValue(name: MatcherExpr["name"]): string {
  switch (name) {
    case "HostSNI":
      return "example.com";
    case "HostSNIRegexp":
      return "^[a-z]+\\.example\\.com$";
    case "ClientIP":
      return "10.0.0.0/8";
    case "ALPN":
      return "h2";
  }
}

/** Like Traefik, any syntax other than "v2" means v3. */
export function buildLeaf(ctx: LeafContext): LeafMatcher {
  checkArguments(ctx);
  const { leaf, syntax } = ctx;
  switch (leaf.name) {
    case "HostSNI":
      return syntax === "v2" ? hostSniV2(ctx) : hostSniV3(ctx);
    case "HostSNIRegexp":
      return syntax === "v2" ? hostSniRegexpV2(ctx) : hostSniRegexpV3(ctx);
    case "ClientIP":
      return clientIp(ctx);
    case "ALPN":
      return alpn(ctx);
  }
}

// ---------------------------------------------------------------------------------------- HostSNI

function refuseNonAscii(ctx: LeafContext, index: number, value: string): never {
  const aLabel = toALabel(value);
  throw ruleError(
    "non-ascii",
    argOffset(ctx, index),
    `${ctx.leaf.spelledAs} value ${JSON.stringify(value)} contains non-ASCII characters; TLS clients send names in their ASCII (punycode) form`,
    aLabel !== null
      ? `write ${ctx.leaf.spelledAs}(${quoteValue(aLabel)})`
      : "write the name in its punycode (xn--) form",
  );
}

function refuseHost(ctx: LeafContext, index: number, value: string): never {
  const parts = value.split(/[\s,;|]+/).filter((p) => p !== "");
  const pattern = ctx.syntax === "v2" ? hostSniV2Pattern : hostSniV3Pattern;
  let hint = invalidHostHint(value, ctx.syntax);
  if (parts.length > 1 && parts.every((p) => p === "*" || pattern.test(p))) {
    const separate = parts.map((p) => `${ctx.leaf.spelledAs}(${quoteValue(p)})`).join(" || ");
    hint = `give one host name per HostSNI: ${ctx.rewrite(separate, true)}`;
  }
  throw ruleError(
    "invalid-hostsni",
    argOffset(ctx, index),
    `HostSNI value ${JSON.stringify(value)} is not a valid host name`,
    hint,
  );
}

function warnHostValue(ctx: LeafContext, index: number, host: string): void {
  const column = argOffset(ctx, index) + 1;
  const bare = host.startsWith("*.") ? host.slice(2) : host;
  if (parseAddr(bare).ok) {
    ctx.warn({
      code: "hostsni-ip-literal",
      column,
      message: `HostSNI(${quoteValue(host)}) names an IP address; TLS clients do not send IP addresses as SNI (RFC 6066), so it rarely matches`,
      hint: "to match by address use ClientIP, or HostSNI(`*`) for clients that send no SNI",
    });
  } else if (/:\d+$/.test(bare)) {
    ctx.warn({
      code: "hostsni-port",
      column,
      message: `HostSNI(${quoteValue(host)}) includes a port; SNI never carries one, so it never matches`,
      hint: `write HostSNI(${quoteValue(host.replace(/:\d+$/, ""))}); the port belongs to the entry point`,
    });
  }
}

function hostSniV3(ctx: LeafContext): LeafMatcher {
  const value = ctx.leaf.args[0]!;
  if (value === "*") {
    return {
      test: () => true,
      explain: () => "HostSNI(`*`) matches every connection, with or without SNI",
      sniKeys: null,
    };
  }
  if (!isAscii(value)) refuseNonAscii(ctx, 0, value);
  if (!hostSniV3Pattern.test(value)) refuseHost(ctx, 0, value);
  warnHostValue(ctx, 0, value);
  let host = value.toLowerCase();
  if (host.endsWith(".")) host = host.slice(0, -1);

  if (host.startsWith("*.")) {
    const parent = host.slice(2);
    return {
      // The first label of the SNI stands for `*`: exactly one label, never zero or two.
      test: (f) => {
        if (f.sni === "") return false;
        const dot = f.sni.indexOf(".");
        return dot >= 0 && f.sni.slice(dot + 1) === parent;
      },
      explain: (f, result) => {
        if (f.sni === "") return NO_SNI;
        if (result) return `${sni(f.sni)} is one label under ${JSON.stringify(parent)}`;
        if (f.sni === parent) return `${sni(f.sni)} has no label before ${JSON.stringify(parent)}`;
        if (f.sni.endsWith(`.${parent}`))
          return `${sni(f.sni)} has more than one label before ${JSON.stringify(parent)}`;
        return `${sni(f.sni)} is not under ${JSON.stringify(parent)}`;
      },
      sniKeys: { exact: [], wildcardParents: [parent] },
    };
  }
  return {
    test: (f) => f.sni !== "" && f.sni === host,
    explain: (f, result) => {
      if (f.sni === "") return NO_SNI;
      return result
        ? `${sni(f.sni)} equals ${JSON.stringify(host)}`
        : `${sni(f.sni)} is not ${JSON.stringify(host)}`;
    },
    sniKeys: { exact: [host], wildcardParents: [] },
  };
}

function hostSniV2(ctx: LeafContext): LeafMatcher {
  const hosts: string[] = [];
  ctx.leaf.args.forEach((value, index) => {
    if (value === "*") {
      hosts.push(value);
      return;
    }
    if (!isAscii(value)) refuseNonAscii(ctx, index, value);
    if (!hostSniV2Pattern.test(value)) refuseHost(ctx, index, value);
    warnHostValue(ctx, index, value);
    hosts.push(value.toLowerCase());
  });
  const first = hosts[0];
  const anyNonEmpty = hosts.includes("*");
  // Each value matches itself and itself minus one trailing dot.
  const names = new Set<string>();
  for (const h of hosts) {
    if (h === "*") continue;
    names.add(h);
    if (h.endsWith(".")) names.add(h.slice(0, -1));
  }
  const list = hosts.map((h) => JSON.stringify(h)).join(", ");
  return {
    test: (f) => {
      if (first === "*") return true;
      if (f.sni === "") return false;
      return anyNonEmpty || names.has(f.sni);
    },
    explain: (f, result) => {
      if (first === "*") return 'the first value is "*", which matches every connection, with or without SNI';
      if (f.sni === "") return NO_SNI;
      if (result)
        return names.has(f.sni)
          ? `${sni(f.sni)} is one of ${list}`
          : `"*" matches any non-empty ${sni(f.sni)}`;
      return `${sni(f.sni)} is none of ${list}`;
    },
    sniKeys: anyNonEmpty ? null : { exact: [...names], wildcardParents: [] },
  };
}

// ---------------------------------------------------------------------------------- HostSNIRegexp

function compileRegexp(ctx: LeafContext, index: number, pattern: string, shown: string): RE2JS {
  try {
    return RE2JS.compile(pattern);
  } catch (e) {
    const detail = e instanceof Error ? e.message : String(e);
    throw ruleError(
      "invalid-regexp",
      argOffset(ctx, index),
      `HostSNIRegexp value ${JSON.stringify(shown)} does not compile as an RE2 regular expression: ${detail}`,
      "RE2 (Go's regexp syntax) has no lookarounds or backreferences; backslashes in a double-quoted rule string must be doubled, backtick strings need none",
    );
  }
}

/** Strip escapes, class names and group names so that only literal letters remain. */
function literalLetters(pattern: string): string {
  return pattern
    .replace(/\\[pP]\{[^}]*\}/g, "")
    .replace(/\\./g, "")
    .replace(/\[\[:\^?[a-z]+:\]\]/g, "")
    .replace(/\(\?P?<[^>]*>/g, "")
    .replace(/\(\?[a-zA-Z]*[:)]/g, "");
}

function warnRegexpV3(ctx: LeafContext, pattern: string): void {
  const column = argOffset(ctx, 0) + 1;
  if (/\{[A-Za-z_][A-Za-z0-9_]*(:[^}]*)?\}/.test(pattern)) {
    ctx.warn({
      code: "regexp-v2-template",
      column,
      message: `HostSNIRegexp(${quoteValue(pattern)}) looks like a v2 template, but rule syntax v3 reads it as a plain regular expression`,
      hint: "write a regular expression such as ^[^.]+\\.example\\.com$, or set ruleSyntax: v2",
    });
  }
  if (!/\(\?[a-zA-Z]*i/.test(pattern) && /[A-Z]/.test(literalLetters(pattern))) {
    ctx.warn({
      code: "regexp-uppercase",
      column,
      message: `HostSNIRegexp(${quoteValue(pattern)}) contains uppercase letters, but the SNI is lowercased before matching`,
      hint: "use lowercase letters, or start the pattern with (?i)",
    });
  }
  if (!pattern.startsWith("^") || !pattern.endsWith("$")) {
    ctx.warn({
      code: "regexp-unanchored",
      column,
      message: `HostSNIRegexp(${quoteValue(pattern)}) is not anchored at both ends, so it also matches names that merely contain a match`,
      hint: "start the pattern with ^ and end it with $ unless a partial match is intended",
    });
  }
}

function hostSniRegexpV3(ctx: LeafContext): LeafMatcher {
  const pattern = ctx.leaf.args[0]!;
  if (!isAscii(pattern)) {
    throw ruleError(
      "non-ascii",
      argOffset(ctx, 0),
      `HostSNIRegexp value ${JSON.stringify(pattern)} contains non-ASCII characters`,
      "match the punycode (xn--) form of internationalised names",
    );
  }
  const re = compileRegexp(ctx, 0, pattern, pattern);
  warnRegexpV3(ctx, pattern);
  return {
    // Unanchored search, like Go's MatchString; the empty string stands for "no SNI".
    test: (f) => re.test(f.sni),
    explain: (f, result) => {
      const subject = f.sni === "" ? "no SNI (empty name)" : sni(f.sni);
      return `${subject} ${result ? "matches" : "does not match"} the regexp ${pattern}`;
    },
    sniKeys: null,
  };
}

function hostSniRegexpV2(ctx: LeafContext): LeafMatcher {
  const regexps = ctx.leaf.args.map((template, index) => {
    const prepared = templateToPattern(template);
    if (!prepared.ok) {
      throw ruleError(
        "invalid-regexp",
        argOffset(ctx, index),
        `HostSNIRegexp template ${JSON.stringify(template)} is not valid: ${prepared.message}`,
        "templates look like {name} (one label) or {name:regexp}, with balanced braces",
      );
    }
    return compileRegexp(ctx, index, prepared.pattern, template);
  });
  const list = ctx.leaf.args.join(", ");
  return {
    test: (f) => regexps.some((re) => re.test(f.sni)),
    explain: (f, result) => {
      const subject = f.sni === "" ? "no SNI (empty name)" : sni(f.sni);
      return `${subject} ${result ? "matches" : "matches none of"} the template${regexps.length > 1 ? "s" : ""} ${list}`;
    },
    sniKeys: null,
  };
}

// --------------------------------------------------------------------------------------- ClientIP

function clientIp(ctx: LeafContext): LeafMatcher {
  const parsed = IpMatcher.parse(ctx.leaf.args);
  if (!parsed.ok) {
    throw ruleError(
      "invalid-client-ip",
      argOffset(ctx, Math.max(0, parsed.index)),
      `ClientIP value ${parsed.message}`,
      parsed.hint,
    );
  }
  const matcher = parsed.matcher;
  const ranges = matcher.describe();
  return {
    test: (f) => f.clientIp !== "" && matcher.contains(f.clientIp),
    explain: (f, result) => {
      if (f.clientIp === "") return "client IP unknown";
      if (result) return `client IP ${f.clientIp} is in ${ranges}`;
      if (!parseAddr(f.clientIp).ok)
        return `client IP ${JSON.stringify(f.clientIp)} is not a valid IP address`;
      return `client IP ${f.clientIp} is not in ${ranges}`;
    },
    sniKeys: null,
  };
}

// ------------------------------------------------------------------------------------------- ALPN

function alpn(ctx: LeafContext): LeafMatcher {
  const protocols = ctx.leaf.args;
  const acme = protocols.indexOf(ACME_TLS);
  if (acme >= 0) {
    throw ruleError(
      "alpn-acme-forbidden",
      argOffset(ctx, acme),
      `ALPN(${quoteValue(ACME_TLS)}) is not allowed: that protocol is reserved for ACME TLS-ALPN-01 challenges`,
      "remove it; certificate challenges are answered before routing",
    );
  }
  const wanted = new Set(protocols);
  const list = protocols.map((p) => JSON.stringify(p)).join(", ");
  return {
    test: (f) => f.alpn.some((p) => wanted.has(p)),
    explain: (f, result) => {
      if (f.alpn.length === 0) return "no ALPN offered (not a TLS connection or client sent none)";
      const offered = `[${f.alpn.join(", ")}]`;
      return `ALPN offered ${offered} ${result ? "includes" : "does not include"} ${protocols.length > 1 ? `any of ${list}` : list}`;
    },
    sniKeys: null,
  };
}
