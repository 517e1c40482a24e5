/**
 * Go string literals, as Go's scanner and strconv.Unquote read them: raw strings between backticks
 * (no escapes, carriage returns dropped) and interpreted strings between double quotes (Go escapes).
 */

export interface ScannedString {
  /** Offset just past the closing quote (or the end of the text when unterminated). */
  end: number;
  /** The decoded value; meaningful only when `error` is absent. */
  value: string;
  error?: { offset: number; message: string; hint?: string };
}

const utf8 = new TextDecoder("utf-8");
const encoder = new TextEncoder();

/** Scan a raw string starting at the opening backtick `text[start]`. */
export function scanRawString(text: string, start: number): ScannedString {
  const close = text.indexOf("`", start + 1);
  if (close < 0) {
    return {
      end: text.length,
      value: "",
      error: {
        offset: start,
        message: "the backtick string starting here is never closed",
        hint: "add the closing backtick",
      },
    };
  }
  // Go removes every carriage return from raw strings so that CRLF sources read the same.
  return { end: close + 1, value: text.slice(start + 1, close).replaceAll("\r", "") };
}

const simpleEscapes: Record<string, number> = {
  a: 0x07,
  b: 0x08,
  f: 0x0c,
  n: 0x0a,
  r: 0x0d,
  t: 0x09,
  v: 0x0b,
  "\\": 0x5c,
  '"': 0x22,
};

function digitValue(ch: string): number {
  const c = ch.charCodeAt(0);
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return 16;
}

/**
 * Scan an interpreted string starting at the opening double quote `text[start]`. Escapes that
 * produce single bytes (`\xNN`, octal) are assembled as UTF-8 bytes, exactly as Go builds the
 * string, then decoded (invalid UTF-8 becomes U+FFFD).
 */
export function scanInterpretedString(text: string, start: number): ScannedString {
  const bytes: number[] = [];
  let i = start + 1;
  let firstError: ScannedString["error"];
  const fail = (offset: number, message: string, hint?: string) => {
    if (firstError === undefined)
      firstError = hint === undefined ? { offset, message } : { offset, message, hint };
  };
  for (;;) {
    if (i >= text.length || text[i] === "\n") {
      // Reported at the opening quote, so it comes before any bad escape inside.
      return {
        end: i,
        value: "",
        error: {
          offset: start,
          message: "the double-quoted string starting here is never closed (it cannot span lines)",
          hint: 'close it with `"` on the same line, or use a backtick string',
        },
      };
    }
    const ch = text[i]!;
    if (ch === '"') {
      i++;
      break;
    }
    if (ch !== "\\") {
      const cp = text.codePointAt(i)!;
      const piece = String.fromCodePoint(cp);
      for (const b of encoder.encode(piece)) bytes.push(b);
      i += piece.length;
      continue;
    }
    // An escape sequence.
    const escStart = i;
    const kind = text[i + 1];
    if (kind === undefined || kind === "\n") {
      fail(escStart, "the escape sequence is not finished");
      i++;
      continue;
    }
    const simple = simpleEscapes[kind];
    if (simple !== undefined) {
      bytes.push(simple);
      i += 2;
      continue;
    }
    let digits = 0;
    let base = 0;
    let max = 0;
    if (kind >= "0" && kind <= "7") {
      digits = 3;
      base = 8;
      max = 255;
    } else if (kind === "x") {
      digits = 2;
      base = 16;
      max = 255;
    } else if (kind === "u") {
      digits = 4;
      base = 16;
      max = 0x10ffff;
    } else if (kind === "U") {
      digits = 8;
      base = 16;
      max = 0x10ffff;
    } else {
      fail(
        escStart,
        `unknown escape sequence \\${kind}`,
        kind === "'"
          ? "a single quote needs no escape inside a double-quoted string"
          : 'valid escapes are \\\\ \\" \\a \\b \\f \\n \\r \\t \\v \\xNN \\NNN \\uNNNN \\UNNNNNNNN; or use a backtick string, which has no escapes',
      );
      i += 2;
      continue;
    }
    // Octal escapes have no letter: their first digit is part of the number.
    let j = base === 8 ? i + 1 : i + 2;
    let value = 0;
    let bad = false;
    for (let n = 0; n < digits; n++, j++) {
      const d = text[j];
      if (d === undefined || d === '"' || d === "\n" || digitValue(d) >= base) {
        fail(
          escStart,
          `escape sequence ${text.slice(escStart, j)} needs ${digits} ${base === 8 ? "octal" : "hexadecimal"} digits`,
        );
        bad = true;
        break;
      }
      value = value * base + digitValue(d);
    }
    if (bad) {
      i = j;
      continue;
    }
    i = j;
    if (value > max || (value >= 0xd800 && value < 0xe000)) {
      fail(
        escStart,
        base === 8 || kind === "x"
          ? `escape sequence ${text.slice(escStart, j)} is larger than 255`
          : `escape sequence ${text.slice(escStart, j)} is not a valid Unicode code point`,
      );
      continue;
    }
    if (kind === "u" || kind === "U") {
      for (const b of encoder.encode(String.fromCodePoint(value))) bytes.push(b);
    } else {
      bytes.push(value);
    }
  }
  const value = utf8.decode(new Uint8Array(bytes));
  return firstError === undefined ? { end: i, value } : { end: i, value, error: firstError };
}
