/**
 * Durations as Traefik reads them: a bare number (or a string of digits) is a number of seconds;
 * anything else uses Go's time.ParseDuration syntax ("100ms", "1m30s", "-1s", "1.5h").
 * Results are milliseconds (fractions kept, so "1500us" is 1.5).
 */

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

export type DurationResult = { ok: true; ms: number } | { ok: false; message: string };

export function parseDuration(input: string | number): DurationResult {
  if (typeof input === "number") {
    if (!Number.isFinite(input)) return { ok: false, message: `${input} is not a finite number of seconds` };
    return { ok: true, ms: input * 1000 };
  }
  const text = input.trim();
  if (/^[+-]?\d+$/.test(text)) return { ok: true, ms: Number(text) * 1000 };
  if (text === "0") return { ok: true, ms: 0 };
  const match = /^([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/.exec(text);
  if (!match) {
    return {
      ok: false,
      message: `"${input}" is not a duration`,
    };
  }
  const sign = match[1] === "-" ? -1 : 1;
  let total = 0;
  for (const part of text
    .slice(match[1]?.length ?? 0)
    .matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(part[1]) * (UNIT_MS[part[2] ?? ""] ?? 0);
  }
  return { ok: true, ms: sign * total };
}
