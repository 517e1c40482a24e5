/**
 * Tokenizer for rule text, following Go's scanner closely enough that the same texts are accepted
 * and refused: Go identifiers, string/rune/number literals, every Go operator, comments, and Go's
 * automatic semicolon insertion (a line break after `)`, an identifier or a literal ends the
 * expression, which is why `HostSNI(`a`)\n|| HostSNI(`b`)` is refused by Traefik).
 */
import { scanInterpretedString, scanRawString } from "./go-string.ts";

export type TokenKind =
  | "ident"
  | "string"
  | "char"
  | "number"
  | "op"
  /** A semicolon Go inserts at a line break (or at the end of the text). */
  | "newline"
  | "illegal"
  | "eof";

export interface LexError {
  offset: number;
  message: string;
  code?: string;
  hint?: string;
}

export interface Token {
  kind: TokenKind;
  /** Source slice of the token ("" for newline/eof). */
  text: string;
  start: number;
  end: number;
  /** Decoded value of a string literal. */
  value?: string;
  /** A problem inside the token; reported only if the parser accepts the token. */
  error?: LexError;
}

/** Longest-first so that `&&` wins over `&`, `...` over `.`, `&^=` over `&^`. */
const operators = [
  "...",
  "<<=",
  ">>=",
  "&^=",
  "&&",
  "||",
  "<-",
  "++",
  "--",
  "==",
  "!=",
  "<=",
  ">=",
  ":=",
  "<<",
  ">>",
  "&^",
  "+=",
  "-=",
  "*=",
  "/=",
  "%=",
  "&=",
  "|=",
  "^=",
  "+",
  "-",
  "*",
  "/",
  "%",
  "&",
  "|",
  "^",
  "<",
  ">",
  "=",
  "!",
  "~",
  "(",
  ")",
  "[",
  "]",
  "{",
  "}",
  ",",
  ";",
  ".",
  ":",
];

/** Tokens after which Go inserts a semicolon at a line break. */
const semiAfterOps = new Set([")", "]", "}", "++", "--"]);

const letterRe = /[\p{L}_]/u;
const letterOrDigitRe = /[\p{L}\p{Nd}_]/u;

function isLetter(ch: string): boolean {
  return letterRe.test(ch);
}

function isDecimal(ch: string | undefined): boolean {
  return ch !== undefined && ch >= "0" && ch <= "9";
}

/** Typographic quotes pasted from documents or chat; worth a precise hint. */
const typographicQuotes = new Set([
  "\u2018",
  "\u2019",
  "\u201a",
  "\u201b",
  "\u201c",
  "\u201d",
  "\u201e",
  "\u00b4",
]);

export class Lexer {
  private pos = 0;
  private insertSemi = false;

  constructor(private readonly text: string) {
    // Go skips a byte order mark only at the very beginning of the source.
    if (text.startsWith("\ufeff")) this.pos = 1;
  }

  next(): Token {
    const text = this.text;
    // Skip whitespace and comments; a line break (or a block comment spanning one) may end the
    // expression when the previous token allows it.
    for (;;) {
      const ch = text[this.pos];
      if (ch === " " || ch === "\t" || ch === "\r") {
        this.pos++;
        continue;
      }
      if (ch === "\n") {
        if (this.insertSemi) {
          this.insertSemi = false;
          return { kind: "newline", text: "", start: this.pos, end: this.pos };
        }
        this.pos++;
        continue;
      }
      if (ch === "/" && text[this.pos + 1] === "/") {
        const nl = text.indexOf("\n", this.pos);
        this.pos = nl < 0 ? text.length : nl;
        continue;
      }
      if (ch === "/" && text[this.pos + 1] === "*") {
        const close = text.indexOf("*/", this.pos + 2);
        if (close < 0) {
          const start = this.pos;
          this.pos = text.length;
          return {
            kind: "illegal",
            text: text.slice(start),
            start,
            end: text.length,
            error: { offset: start, message: "the comment starting here is never closed with */" },
          };
        }
        const spansLine = text.slice(this.pos, close).includes("\n");
        const start = this.pos;
        this.pos = close + 2;
        if (spansLine && this.insertSemi) {
          this.insertSemi = false;
          return { kind: "newline", text: "", start, end: start };
        }
        continue;
      }
      break;
    }

    const start = this.pos;
    if (start >= text.length) {
      // Go inserts a semicolon here too, and then accepts it as the end of the expression; the
      // end of the text is reported as such rather than as a line break.
      return { kind: "eof", text: "", start, end: start };
    }

    const ch = text[start]!;
    const cp = text.codePointAt(start)!;
    const chFull = String.fromCodePoint(cp);

    if (isLetter(chFull)) {
      let end = start + chFull.length;
      while (end < text.length) {
        const c = String.fromCodePoint(text.codePointAt(end)!);
        if (!letterOrDigitRe.test(c)) break;
        end += c.length;
      }
      this.pos = end;
      this.insertSemi = true;
      return { kind: "ident", text: text.slice(start, end), start, end };
    }

    if (isDecimal(ch) || (ch === "." && isDecimal(text[start + 1]))) {
      // Numbers are never valid rule arguments, so a loose scan is enough: it only has to find
      // where the literal ends to report it as a whole.
      let end = start + 1;
      while (end < text.length) {
        const c = text[end]!;
        if (/[0-9A-Za-z_.]/.test(c)) {
          end++;
          continue;
        }
        if ((c === "+" || c === "-") && /[eEpP]/.test(text[end - 1]!)) {
          end++;
          continue;
        }
        break;
      }
      this.pos = end;
      this.insertSemi = true;
      return { kind: "number", text: text.slice(start, end), start, end };
    }

    if (ch === "`" || ch === '"') {
      const scanned = ch === "`" ? scanRawString(text, start) : scanInterpretedString(text, start);
      this.pos = scanned.end;
      this.insertSemi = true;
      const tok: Token = {
        kind: "string",
        text: text.slice(start, scanned.end),
        start,
        end: scanned.end,
        value: scanned.value,
      };
      if (scanned.error) tok.error = scanned.error;
      return tok;
    }

    if (ch === "'") return this.scanRune(start);

    for (const op of operators) {
      if (text.startsWith(op, start)) {
        this.pos = start + op.length;
        this.insertSemi = semiAfterOps.has(op);
        return { kind: "op", text: op, start, end: this.pos };
      }
    }

    // Anything else is a character Go does not allow outside literals.
    this.pos = start + chFull.length;
    this.insertSemi = false;
    return { kind: "illegal", text: chFull, start, end: this.pos, error: illegalCharacter(chFull, start) };
  }

  private scanRune(start: number): Token {
    const text = this.text;
    let i = start + 1;
    let chars = 0;
    let terminated = false;
    while (i < text.length && text[i] !== "\n") {
      const c = text[i]!;
      if (c === "'") {
        terminated = true;
        i++;
        break;
      }
      if (c === "\\") i++;
      i += String.fromCodePoint(text.codePointAt(i) ?? 0).length;
      chars++;
    }
    this.pos = i;
    this.insertSemi = true;
    const tok: Token = { kind: "char", text: text.slice(start, i), start, end: i };
    if (!terminated || chars !== 1) {
      tok.error = {
        offset: start,
        code: "single-quoted-string",
        message: "single quotes do not make a string in rules (Go reads them as a one-character rune)",
        hint: "quote values with backticks, e.g. HostSNI(`example.com`)",
      };
    }
    return tok;
  }
}

function illegalCharacter(ch: string, offset: number): LexError {
  const cp = ch.codePointAt(0)!;
  const name = `U+${cp.toString(16).toUpperCase().padStart(4, "0")}`;
  if (cp === 0) return { offset, message: "the rule contains a NUL character" };
  if (cp === 0xfeff)
    return { offset, message: "the rule contains a byte order mark (U+FEFF) after its start" };
  if (typographicQuotes.has(ch)) {
    return {
      offset,
      message: `typographic quote ${ch} (${name}) is not a string quote`,
      hint: "quote values with backticks, e.g. HostSNI(`example.com`); typographic quotes often come from copy-pasting",
    };
  }
  if (/\s/u.test(ch) || cp === 0x85) {
    return {
      offset,
      message: `the Unicode space ${name} is not allowed here`,
      hint: "replace it with a plain space",
    };
  }
  if (ch === "\\") {
    return {
      offset,
      message: "a backslash is only meaningful inside a double-quoted string",
      hint: "backtick strings need no escaping: HostSNI(`example.com`)",
    };
  }
  const shown = cp < 0x20 || cp === 0x7f ? name : `'${ch}' (${name})`;
  return { offset, message: `character ${shown} is not allowed here` };
}
