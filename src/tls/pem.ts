/**
 * Traefik's FileOrContent values (certFile, keyFile, caFiles, rootCAs): one string that is either a path
 * or the PEM text itself. Traefik decides by `os.Stat`: an existing path is a file, anything else is
 * content. We keep that, with two differences: relative paths resolve against the directory of the
 * configuration file that names them (not the working directory), and a value that is neither an
 * existing file nor PEM-looking text is reported as a missing file, because "file not found: certs/db.crt"
 * helps where "bad PEM content" would mislead.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fail, ok, type Result } from "./result.ts";

export type PemSource =
  | { kind: "file"; path: string }
  | { kind: "inline"; text: string }
  | { kind: "missing"; path: string };

export type PemReadError = "file-not-found" | "not-a-file" | "unreadable";

const PEM_MARKER = "-----BEGIN";

export function looksLikePem(value: string): boolean {
  return value.includes(PEM_MARKER);
}

/**
 * The decision, without touching the disk: `pathExists` is asked only for values that are not PEM text.
 * PEM text is checked first so that certificate content is never handed to `stat`.
 */
export function classifyPemValue(
  value: string,
  baseDir: string,
  pathExists: (absolutePath: string) => boolean,
): PemSource {
  if (looksLikePem(value)) return { kind: "inline", text: value };
  if (value.trim() === "") return { kind: "missing", path: value };
  const resolved = path.resolve(baseDir, value);
  return pathExists(resolved) ? { kind: "file", path: resolved } : { kind: "missing", path: resolved };
}

/** `classifyPemValue` against the real file system (an existence check; nothing is read). */
export function resolvePemSource(value: string, baseDir: string): PemSource {
  return classifyPemValue(value, baseDir, existsSync);
}

/** How to name the source in a message: the file path, or "inline PEM". */
export function describePemSource(source: PemSource): string {
  return source.kind === "inline" ? "inline PEM" : source.path;
}

/** The PEM text of a source; the only function here that reads files. */
export function readPem(source: PemSource): Result<string, PemReadError> {
  switch (source.kind) {
    case "inline":
      return ok(source.text);
    case "missing":
      return fail(
        "file-not-found",
        source.path === ""
          ? "empty value: expected a file path or PEM text"
          : `file not found: ${source.path}`,
      );
    case "file":
      try {
        return ok(readFileSync(source.path, "utf8"));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT") return fail("file-not-found", `file not found: ${source.path}`);
        if (code === "EISDIR") return fail("not-a-file", `${source.path} is a directory, not a PEM file`);
        const reason = code === "EACCES" ? "permission denied" : (code ?? String(error));
        return fail("unreadable", `cannot read ${source.path}: ${reason}`);
      }
  }
}
