/**
 * Syntax of a rule: a Go expression. This parser accepts the Go expression forms a rule can
 * plausibly contain (every binary and unary operator, calls, selectors, literals, parentheses)
 * so that a text Go parses but Traefik then refuses (`a == b`, `HostSNI(1)`) gets a precise
 * semantic error later, while real Go syntax errors are reported here, at the earliest position,
 * as Go reports them.
 */
import { Lexer, type Token } from "./lexer.ts";
import { type RuleFailure, ruleError } from "./types.ts";

export type RawNode =
  | { k: "binary"; op: string; opStart: number; x: RawNode; y: RawNode; start: number; end: number }
  | { k: "unary"; op: string; x: RawNode; start: number; end: number }
  | { k: "paren"; x: RawNode; start: number; end: number }
  | {
      k: "call";
      fun: RawNode;
      args: RawNode[];
      /** Offset of a `...` after the last argument, which Go allows and Traefik ignores. */
      ellipsis: number | null;
      lparen: number;
      start: number;
      end: number;
    }
  | { k: "ident"; name: string; start: number; end: number }
  | { k: "selector"; x: RawNode; name: string; start: number; end: number }
  | { k: "string"; value: string; start: number; end: number }
  | { k: "number"; start: number; end: number }
  | { k: "char"; start: number; end: number };

/**
 * Deepest nesting of parentheses, calls and unary operators we accept. Go's own limit is far higher;
 * this one keeps recursion well inside JavaScript's stack and is far beyond any real rule.
 */
export const MAX_NESTING = 400;

const binaryPrecedence: Record<string, number> = {
  "||": 1,
  "&&": 2,
  "==": 3,
  "!=": 3,
  "<": 3,
  "<=": 3,
  ">": 3,
  ">=": 3,
  "+": 4,
  "-": 4,
  "|": 4,
  "^": 4,
  "*": 5,
  "/": 5,
  "%": 5,
  "<<": 5,
  ">>": 5,
  "&": 5,
  "&^": 5,
};

const unaryOperators = new Set(["!", "+", "-", "^", "*", "&", "<-", "~"]);

const goKeywords = new Set([
  "break",
  "case",
  "chan",
  "const",
  "continue",
  "default",
  "defer",
  "else",
  "fallthrough",
  "for",
  "func",
  "go",
  "goto",
  "if",
  "import",
  "interface",
  "map",
  "package",
  "range",
  "return",
  "select",
  "struct",
  "switch",
  "type",
  "var",
]);

const wordOperators: Record<string, string> = { and: "&&", or: "||", not: "!" };

function describe(tok: Token): string {
  switch (tok.kind) {
    case "eof":
      return "the end of the rule";
    case "newline":
      return "a line break";
    case "ident":
      return `identifier ${tok.text}`;
    case "string":
      return `string ${tok.text}`;
    case "number":
      return `number ${tok.text}`;
    case "char":
      return `single-quoted ${tok.text}`;
    default:
      return `"${tok.text}"`;
  }
}

function isOp(tok: Token, text: string): boolean {
  return tok.kind === "op" && tok.text === text;
}

class Parser {
  private readonly lexer: Lexer;
  private tok: Token;
  private prev: Token | null = null;
  private depth = 0;

  constructor(private readonly text: string) {
    this.lexer = new Lexer(text);
    this.tok = this.lexer.next();
  }

  parseRule(): RawNode {
    if (this.tok.kind === "eof") {
      throw ruleError(
        "empty-rule",
        0,
        "the rule is empty",
        "write a matcher, e.g. HostSNI(`example.com`), or HostSNI(`*`) to match every connection",
      );
    }
    const root = this.parseExpr();
    let afterLineBreak = false;
    if (this.tok.kind === "newline") {
      afterLineBreak = true;
      this.advance();
    }
    // Read through a method: TypeScript would keep the `eof` narrowing from the check above.
    if (this.current().kind !== "eof") throw this.trailingTokenError(root, afterLineBreak);
    return root;
  }

  private trailingTokenError(root: RawNode, afterLineBreak: boolean): RuleFailure {
    const tok = this.tok;
    if (afterLineBreak) {
      const what = tok.kind === "op" ? tok.text : describe(tok);
      return this.failAt(
        tok,
        `the rule already ended at the line break before ${what}: Go ends an expression at a line break that follows ")", a name or a value`,
        tok.kind === "op" && (tok.text === "&&" || tok.text === "||")
          ? `move ${tok.text} to the end of the previous line`
          : "join the lines, or break lines only after && , || , ( or ,",
      );
    }
    const word = tok.kind === "ident" ? wordOperators[tok.text.toLowerCase()] : undefined;
    if (word !== undefined) {
      return this.failAt(
        tok,
        `unexpected ${describe(tok)} after a complete expression`,
        `write ${word} instead of ${tok.text}`,
      );
    }
    if (root.k === "ident" && wordOperators[root.name.toLowerCase()] === "!") {
      return this.failAt(
        tok,
        `unexpected ${describe(tok)} after identifier ${root.name}`,
        `write ! instead of ${root.name}`,
      );
    }
    if (isOp(tok, ")")) {
      return this.failAt(tok, 'this ")" has no matching "("', "remove it, or add the missing (");
    }
    if (isOp(tok, "=") || isOp(tok, ":=")) {
      return this.failAt(
        tok,
        `unexpected "${tok.text}": rules do not assign or compare values`,
        "a matcher call such as HostSNI(`example.com`) is the comparison; join matchers with && or ||",
      );
    }
    if (isOp(tok, ",")) {
      return this.failAt(
        tok,
        "a comma can only separate the values inside a matcher's parentheses",
        "join matchers with || or &&",
      );
    }
    return this.failAt(
      tok,
      `unexpected ${describe(tok)} after a complete expression`,
      "join matchers with && (both must match) or || (either may match)",
    );
  }

  private current(): Token {
    return this.tok;
  }

  private advance(): void {
    const err = this.tok.error;
    if (err !== undefined) throw ruleError(err.code ?? "rule-syntax", err.offset, err.message, err.hint);
    this.prev = this.tok;
    this.tok = this.lexer.next();
  }

  /** A syntax error at `tok`; a problem inside the token itself wins when it starts there too. */
  private failAt(tok: Token, message: string, hint?: string): RuleFailure {
    const err = tok.error;
    if (err !== undefined && err.offset <= tok.start) {
      return ruleError(err.code ?? "rule-syntax", err.offset, err.message, err.hint);
    }
    return ruleError("rule-syntax", tok.start, message, hint);
  }

  private enter(at: Token): void {
    if (++this.depth > MAX_NESTING) {
      throw ruleError(
        "rule-too-deep",
        at.start,
        `the rule nests parentheses or ! more than ${MAX_NESTING} levels deep`,
      );
    }
  }

  private parseExpr(): RawNode {
    return this.parseBinary(1);
  }

  private parseBinary(minPrecedence: number): RawNode {
    let x = this.parseUnary();
    for (;;) {
      const op = this.tok;
      const precedence = op.kind === "op" ? binaryPrecedence[op.text] : undefined;
      if (precedence === undefined || precedence < minPrecedence) return x;
      this.advance();
      const y = this.parseBinary(precedence + 1);
      x = { k: "binary", op: op.text, opStart: op.start, x, y, start: x.start, end: y.end };
    }
  }

  private parseUnary(): RawNode {
    const tok = this.tok;
    if (tok.kind === "op" && unaryOperators.has(tok.text)) {
      this.enter(tok);
      this.advance();
      const x = this.parseUnary();
      this.depth--;
      return { k: "unary", op: tok.text, x, start: tok.start, end: x.end };
    }
    return this.parsePrimary();
  }

  private parsePrimary(): RawNode {
    let x = this.parseOperand();
    for (;;) {
      const tok = this.tok;
      if (isOp(tok, ".")) {
        this.advance();
        const name = this.tok;
        if (name.kind !== "ident")
          throw this.failAt(name, `expected a name after ".", found ${describe(name)}`);
        this.advance();
        x = { k: "selector", x, name: name.text, start: x.start, end: name.end };
      } else if (isOp(tok, "(")) {
        x = this.parseCall(x);
      } else if (isOp(tok, "[") || isOp(tok, "{")) {
        throw this.failAt(
          tok,
          `"${tok.text}" has no meaning in a rule`,
          "a rule is made of matcher calls joined by &&, || and !",
        );
      } else {
        return x;
      }
    }
  }

  private parseOperand(): RawNode {
    const tok = this.tok;
    switch (tok.kind) {
      case "ident": {
        if (goKeywords.has(tok.text)) {
          throw this.failAt(tok, `unexpected Go keyword ${tok.text}; a rule is made of matcher calls`);
        }
        this.advance();
        return { k: "ident", name: tok.text, start: tok.start, end: tok.end };
      }
      case "string":
        this.advance();
        return { k: "string", value: tok.value ?? "", start: tok.start, end: tok.end };
      case "number":
        this.advance();
        return { k: "number", start: tok.start, end: tok.end };
      case "char":
        this.advance();
        return { k: "char", start: tok.start, end: tok.end };
      case "op":
        if (tok.text === "(") {
          this.enter(tok);
          this.advance();
          if (isOp(this.tok, ")"))
            throw this.failAt(this.tok, "empty parentheses: expected a matcher inside");
          const x = this.parseExpr();
          if (!isOp(this.tok, ")")) throw this.missingClose(tok, "the parenthesis");
          const end = this.tok.end;
          this.advance();
          this.depth--;
          return { k: "paren", x, start: tok.start, end };
        }
        break;
      default:
        break;
    }
    throw this.expectedOperand(tok);
  }

  private expectedOperand(tok: Token): RuleFailure {
    const after = this.prev?.kind === "op" ? ` after "${this.prev.text}"` : "";
    if (tok.kind === "eof" || tok.kind === "newline") {
      return this.failAt(
        tok,
        `the rule ends${after} where a matcher is expected`,
        tok.kind === "newline"
          ? "continue the expression on the same line, or break lines only after && , || , ( or ,"
          : "add a matcher such as HostSNI(`example.com`)",
      );
    }
    if (tok.kind === "op" && (tok.text === "&&" || tok.text === "||")) {
      return this.failAt(tok, `${tok.text} needs a matcher on its left`);
    }
    return this.failAt(
      tok,
      `expected a matcher such as HostSNI(\`example.com\`)${after}, found ${describe(tok)}`,
    );
  }

  private missingClose(open: Token, what: string): RuleFailure {
    const tok = this.tok;
    const column = open.start + 1;
    if (tok.kind === "eof") {
      return this.failAt(tok, `${what} opened at column ${column} is never closed`, 'add the missing ")"');
    }
    if (tok.kind === "newline") {
      return this.failAt(
        tok,
        `a line break ends the expression before ${what} opened at column ${column} is closed`,
        'put ")" on the same line, or break lines only after && , || , ( or ,',
      );
    }
    return this.failAt(
      tok,
      `expected ")" to close ${what} opened at column ${column}, found ${describe(tok)}`,
    );
  }

  private parseCall(fun: RawNode): RawNode {
    const open = this.tok;
    this.enter(open);
    this.advance();
    const args: RawNode[] = [];
    let ellipsis: number | null = null;
    while (!isOp(this.tok, ")") && this.tok.kind !== "eof" && ellipsis === null) {
      args.push(this.parseExpr());
      if (isOp(this.tok, "...")) {
        ellipsis = this.tok.start;
        this.advance();
      }
      if (isOp(this.tok, ",")) {
        this.advance();
        continue;
      }
      if (isOp(this.tok, ")")) break;
      throw this.missingComma();
    }
    if (!isOp(this.tok, ")")) throw this.missingClose(open, "the argument list");
    const end = this.tok.end;
    this.advance();
    this.depth--;
    return { k: "call", fun, args, ellipsis, lparen: open.start, start: fun.start, end };
  }

  private missingComma(): RuleFailure {
    const tok = this.tok;
    if (tok.kind === "newline") {
      return this.failAt(
        tok,
        "a line break inside the argument list ends the expression here",
        'keep ")" on the same line as the last value, or end the line with ","',
      );
    }
    if (tok.kind === "eof") return this.missingCloseAtEnd();
    return this.failAt(
      tok,
      `expected "," or ")" after the value, found ${describe(tok)}`,
      tok.kind === "string" || tok.kind === "ident" || tok.kind === "number"
        ? "separate values with a comma, and quote each value with backticks"
        : undefined,
    );
  }

  private missingCloseAtEnd(): RuleFailure {
    return this.failAt(this.tok, "the argument list is never closed", 'add the missing ")"');
  }
}

/** Parse rule text into the raw Go-like tree, or throw a RuleFailure for a syntax error. */
export function parseRaw(text: string): RawNode {
  const parser = new Parser(text);
  let root: RawNode;
  try {
    root = parser.parseRule();
  } catch (e) {
    throw earliest(text, e);
  }
  const control = findForbiddenCharacter(text);
  if (control !== null) throw control;
  return root;
}

/**
 * Go reports every error and sorts them by position; a NUL (or a stray byte order mark) is an error
 * even inside a literal or comment, so it wins over any later syntax error.
 */
function earliest(text: string, e: unknown): unknown {
  const control = findForbiddenCharacter(text);
  if (control !== null && e instanceof Error && "info" in e) {
    const offset = (e as RuleFailure).info.offset;
    if (control.info.offset < offset) return control;
  }
  return e;
}

function findForbiddenCharacter(text: string): RuleFailure | null {
  const nul = text.indexOf("\u0000");
  const bom = text.indexOf("\ufeff", 1);
  const candidates = [nul, bom].filter((i) => i >= 0);
  if (candidates.length === 0) return null;
  const at = Math.min(...candidates);
  return ruleError(
    "rule-syntax",
    at,
    at === nul
      ? "the rule contains a NUL character"
      : "the rule contains a byte order mark (U+FEFF) after its start",
    "remove the invisible character",
  );
}
