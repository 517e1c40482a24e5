/**
 * Loading: paths (files or directories) → parsed trees → one merged model. This is the only config
 * module that touches the file system. A name defined in two files is an error that points at both.
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import type { Diagnostic } from "../diagnostics.ts";
import { ConfigSyntaxError } from "./located.ts";
import { emptyModel, type Model } from "./model.ts";
import { normalizeFile } from "./normalize.ts";
import { formatFromPath, parseConfigText } from "./parse.ts";
import { Diagnostics } from "./reader.ts";

/** The command cannot run at all (missing path, unreadable file): exit code 2. */
export class LoadFailure extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = "LoadFailure";
  }
}

export interface LoadResult {
  model: Model;
  diagnostics: Diagnostic[];
  /** Every file read, in load order. */
  files: string[];
}

export const DEFAULT_CONFIG_NAMES = ["tlsroute.yml", "tlsroute.yaml", "tlsroute.toml", "tlsroute.json"];

/** The configuration paths to use when the user gave none: tlsroute.{yml,yaml,toml,json} in cwd. */
export function defaultConfigPaths(cwd: string): string[] {
  for (const name of DEFAULT_CONFIG_NAMES) {
    const candidate = join(cwd, name);
    if (isFile(candidate)) return [candidate];
  }
  throw new LoadFailure(
    `no configuration given and none of ${DEFAULT_CONFIG_NAMES.join(", ")} exists in ${cwd}`,
    "Name a configuration file or directory on the command line, or create tlsroute.yml here; see the README for an example.",
  );
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** Files of a directory that tlsroute can read, recursively, in a stable order. */
function configFilesIn(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
    a.name.localeCompare(b.name),
  )) {
    if (entry.name.startsWith(".")) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...configFilesIn(path));
    else if (formatFromPath(entry.name) && !isAcmeStorage(path)) out.push(path);
  }
  return out;
}

/**
 * ACME storage (Traefik's acme.json layout: resolver name, then Account or Certificates) often sits
 * next to the configuration; in a configuration directory it is skipped, not read as configuration.
 */
function isAcmeStorage(path: string): boolean {
  if (!path.endsWith(".json")) return false;
  let head = "";
  try {
    const fd = openSync(path, "r");
    try {
      const buffer = Buffer.alloc(512);
      head = buffer.subarray(0, readSync(fd, buffer, 0, 512, 0)).toString("utf8");
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
  return /^\s*\{\s*"(?:[^"\\]|\\.)*"\s*:\s*\{\s*"(?:Account|Certificates)"\s*:/.test(head);
}

function expandPath(
  path: string,
  origin: string,
  relativeTo = "relative paths start from the current directory",
): string[] {
  let stat: ReturnType<typeof statSync>;
  try {
    stat = statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new LoadFailure(`${origin} "${path}" does not exist`, `Check the path; ${relativeTo}.`);
    }
    throw new LoadFailure(
      `${origin} "${path}" cannot be read (${code ?? String(err)})`,
      "Check its permissions.",
    );
  }
  if (stat.isDirectory()) {
    const files = configFilesIn(path);
    if (files.length === 0) {
      throw new LoadFailure(
        `${origin} "${path}" is a directory with no .yml, .yaml, .toml or .json file`,
        "Put configuration files in it or point at a file.",
      );
    }
    return files;
  }
  return [path];
}

export function loadConfig(paths: readonly string[]): LoadResult {
  const diags = new Diagnostics();
  const model = emptyModel();
  const queue = paths.flatMap((p) => expandPath(resolve(p), "configuration path"));
  const seen = new Set<string>();
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const format = formatFromPath(file);
    if (!format) {
      throw new LoadFailure(
        `cannot tell the format of "${file}"`,
        "Name configuration files .yml, .yaml, .toml or .json.",
      );
    }
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new LoadFailure(`cannot read "${file}": ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    let root: ReturnType<typeof parseConfigText>;
    try {
      root = parseConfigText(text, file, format);
    } catch (err) {
      if (!(err instanceof ConfigSyntaxError)) throw err;
      diags.error("syntax", err.message, err.pos, undefined, err.hint);
      model.files.push(file);
      continue;
    }
    const { model: part, providerFiles } = normalizeFile(root, file, diags);
    mergeInto(model, part, diags);
    for (const ref of providerFiles) {
      const target = resolve(ref.baseDir, ref.value.value);
      try {
        const files = expandPath(
          target,
          `providers.file.${ref.kind}`,
          "relative paths start from the directory of the file that names them",
        );
        queue.push(...files);
      } catch (err) {
        if (!(err instanceof LoadFailure)) throw err;
        diags.error(
          "provider-file-missing",
          err.message,
          ref.value.pos,
          `providers.file.${ref.kind}`,
          err.hint,
        );
      }
    }
  }
  return { model, diagnostics: diags.list, files: model.files };
}

type NamedMapKey =
  | "entryPoints"
  | "routers"
  | "services"
  | "middlewares"
  | "serversTransports"
  | "tlsOptions"
  | "tlsStores"
  | "resolvers";

const WHAT: Record<NamedMapKey, string> = {
  entryPoints: "entry point",
  routers: "router",
  services: "service",
  middlewares: "middleware",
  serversTransports: "servers transport",
  tlsOptions: "TLS options",
  tlsStores: "TLS store",
  resolvers: "certificate resolver",
};

function mergeInto(target: Model, part: Model, diags: Diagnostics): void {
  target.files.push(...part.files);
  for (const key of Object.keys(WHAT) as NamedMapKey[]) {
    const into = target[key] as Map<
      string,
      { pos: { file: string; line: number; column: number }; path: string }
    >;
    const from = part[key] as typeof into;
    for (const [name, value] of from) {
      const existing = into.get(name);
      if (existing) {
        const where = `${relative(process.cwd(), existing.pos.file) || existing.pos.file}:${existing.pos.line}:${existing.pos.column}`;
        diags.error(
          "duplicate-name",
          `${WHAT[key]} "${name}" is defined twice; the first definition is at ${where}`,
          value.pos,
          value.path,
          "Rename one of them or remove the duplicate.",
        );
        continue;
      }
      into.set(name, value);
    }
  }
  target.certificates.push(...part.certificates);
  target.ignored.push(...part.ignored);
  if (part.defaultTransport) {
    if (target.defaultTransport) {
      diags.error(
        "duplicate-name",
        "tcpServersTransport is defined in more than one file",
        part.defaultTransport.pos,
        "tcpServersTransport",
      );
    } else target.defaultTransport = part.defaultTransport;
  }
  if (part.defaultRuleSyntax === "v2") target.defaultRuleSyntax = "v2";
}
