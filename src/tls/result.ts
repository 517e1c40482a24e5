/**
 * The outcome of a TLS building block that can fail on user input (a bad PEM file, a key that does not
 * fit its certificate). Failures carry a stable `code` so that `validate` can turn them into diagnostics
 * without parsing messages, and a `message` written for the person who has to fix the file.
 */
export type Result<T, C extends string = string> =
  | { ok: true; value: T }
  | { ok: false; code: C; message: string };

export function ok<T>(value: T): { ok: true; value: T } {
  return { ok: true, value };
}

export function fail<C extends string>(code: C, message: string): { ok: false; code: C; message: string } {
  return { ok: false, code, message };
}
