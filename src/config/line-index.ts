import type { SourcePos } from "./located.ts";

/**
 * Turns string offsets into 1-based line/column positions.
 *
 * Lines end at "\n" (so "\r\n" counts as one line end, the "\r" being the last character of its
 * line). Columns count UTF-16 code units, which is what JavaScript string offsets are and what most
 * editors show for text outside the astral planes. The YAML parser (LineCounter) and smol-toml use
 * the same conventions, so positions agree across formats.
 */
export class LineIndex {
  private readonly lineStarts: number[] = [0];

  constructor(
    text: string,
    private readonly file: string,
  ) {
    for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) this.lineStarts.push(i + 1);
  }

  /** Line (0-based) of the previous lookup: parsers mostly ask in source order, so try it first. */
  private lastLine = 0;

  pos(offset: number): SourcePos {
    const line = this.lineOf(offset);
    this.lastLine = line;
    return { file: this.file, line: line + 1, column: offset - this.lineStarts[line]! + 1 };
  }

  private lineOf(offset: number): number {
    const starts = this.lineStarts;
    for (let line = this.lastLine; line <= this.lastLine + 1 && line < starts.length; line++) {
      if (starts[line]! <= offset && (line + 1 === starts.length || offset < starts[line + 1]!)) return line;
    }
    // Binary search for the last line start <= offset.
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

/** Drops one leading UTF-8 byte order mark (decoded as U+FEFF), which editors on Windows like to add. */
export function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Shows a character in an error message so that look-alikes (no-break space, BOM, controls) are told apart. */
export function describeChar(ch: string): string {
  const code = ch.codePointAt(0) ?? 0;
  if (code > 0x20 && code < 0x7f) return `'${ch}'`;
  if (code === 0x20) return "' ' (space)";
  const hex = `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
  const invisible = code < 0xa0 || /\s/u.test(ch) || (code >= 0xd800 && code <= 0xdfff) || code === 0xfeff;
  return invisible ? hex : `'${ch}' (${hex})`;
}
