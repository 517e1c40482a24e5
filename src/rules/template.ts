/**
 * v2 HostSNIRegexp templates (gorilla/mux host style): `{name}` stands for one label (`[^.]+`),
 * `{name:re}` for a custom regexp, everything else is literal text. The result is anchored and
 * case-insensitive.
 */

export type TemplateResult = { ok: true; pattern: string } | { ok: false; message: string };

/** Go's regexp.QuoteMeta: backslash every byte in `\.+*?()|[]{}^$`. */
export function quoteMeta(s: string): string {
  return s.replace(/[\\.+*?()|[\]{}^$]/g, (c) => `\\${c}`);
}

/** First-level brace pairs as [open, closeExclusive] offsets, or an error for unbalanced braces. */
function braceIndices(s: string): number[] | null {
  let level = 0;
  let open = 0;
  const indices: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "{") {
      level++;
      if (level === 1) open = i;
    } else if (s[i] === "}") {
      level--;
      if (level === 0) indices.push(open, i + 1);
      else if (level < 0) return null;
    }
  }
  return level === 0 ? indices : null;
}

export function templateToPattern(template: string): TemplateResult {
  const indices = braceIndices(template);
  if (indices === null) return { ok: false, message: `unbalanced braces in ${JSON.stringify(template)}` };
  let pattern = "(?i)^";
  let end = 0;
  for (let i = 0; i < indices.length; i += 2) {
    const open = indices[i]!;
    const raw = template.slice(end, open);
    end = indices[i + 1]!;
    const inner = template.slice(open + 1, end - 1);
    const colon = inner.indexOf(":");
    const name = colon < 0 ? inner : inner.slice(0, colon);
    const custom = colon < 0 ? "[^.]+" : inner.slice(colon + 1);
    if (name === "" || custom === "") {
      return {
        ok: false,
        message: `missing name or pattern in ${JSON.stringify(template.slice(open, end))}`,
      };
    }
    pattern += `${quoteMeta(raw)}(?P<v${i / 2}>${custom})`;
  }
  pattern += `${quoteMeta(template.slice(end))}$`;
  return { ok: true, pattern };
}
