import { defineCommand } from "citty";
import type { Diagnostic } from "../diagnostics.ts";
import { currentRuntime, isTlsRuntime, TLS_RUNTIMES, type TlsRuntime } from "../tls/runtime-support.ts";
import { openWorkspace } from "../workspace.ts";
import {
  displayPath,
  displayPos,
  EXIT_FINDINGS,
  EXIT_OK,
  formatFlag,
  lastString,
  paint,
  UsageError,
  writeJson,
} from "./common.ts";

export const validateCommand = defineCommand({
  meta: {
    name: "validate",
    description: "Check configuration files (YAML, TOML, JSON), their TLS options and certificates",
  },
  args: {
    paths: {
      type: "positional",
      required: false,
      description: "Files or directories (default: tlsroute.{yml,yaml,toml,json} in the current directory)",
    },
    format: { type: "string", description: "text, json or github (workflow annotations)", default: "text" },
    strict: { type: "boolean", description: "Fail on warnings too", default: false },
    runtime: {
      type: "string",
      description:
        "Check TLS settings for the runtime serve will run on: node, bun or deno (default: this one)",
    },
    debug: { type: "boolean", description: "Print stack traces of internal errors", default: false },
  },
  run({ args }) {
    const format = formatFlag(args.format, ["text", "json", "github"]);
    const runtime = runtimeFlag(args.runtime);
    const workspace = openWorkspace(args._, { runtime });
    const diagnostics = workspace.diagnostics;
    const errors = diagnostics.filter((d) => d.severity === "error").length;
    const warnings = diagnostics.length - errors;
    const ok = errors === 0 && (!args.strict || warnings === 0);
    if (format === "json") {
      writeJson({
        ok,
        errors,
        warnings,
        files: workspace.files.map(displayPath),
        diagnostics: diagnostics.map(toJson),
        ignored: workspace.model.ignored.map((i) => ({ path: i.path, why: i.why, ...posJson(i.pos) })),
      });
    } else if (format === "github") {
      for (const d of diagnostics) process.stdout.write(`${githubAnnotation(d)}\n`);
      process.stdout.write(`${summary(errors, warnings, workspace.files.length)}\n`);
    } else {
      writeText(diagnostics, workspace, errors, warnings);
    }
    return ok ? EXIT_OK : EXIT_FINDINGS;
  },
});

/** `--runtime`: which runtime's TLS library the runtime-dependent findings are about. */
export function runtimeFlag(value: unknown): TlsRuntime {
  const runtime = lastString(value);
  if (runtime === undefined) return currentRuntime();
  if (!isTlsRuntime(runtime)) {
    throw new UsageError(`--runtime must be one of ${TLS_RUNTIMES.join(", ")}, got "${runtime}"`);
  }
  return runtime;
}

function posJson(pos: Diagnostic["pos"]) {
  return pos
    ? { file: displayPath(pos.file), line: pos.line, column: pos.column }
    : { file: null, line: null, column: null };
}

function toJson(d: Diagnostic) {
  return {
    severity: d.severity,
    code: d.code,
    message: d.message,
    ...posJson(d.pos),
    path: d.path ?? null,
    hint: d.hint ?? null,
  };
}

function summary(errors: number, warnings: number, files: number): string {
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  return `${plural(errors, "error")}, ${plural(warnings, "warning")} in ${plural(files, "file")}`;
}

function writeText(
  diagnostics: Diagnostic[],
  workspace: ReturnType<typeof openWorkspace>,
  errors: number,
  warnings: number,
): void {
  const out: string[] = [];
  for (const ignored of workspace.model.ignored) {
    out.push(`${paint.dim(`${displayPos(ignored.pos)}: note: ${ignored.path} is ignored (${ignored.why})`)}`);
  }
  for (const d of diagnostics) {
    const label = d.severity === "error" ? paint.error("error") : paint.warning("warning");
    const where = d.pos ? `${paint.bold(displayPos(d.pos))}: ` : "";
    out.push(`${where}${label} ${paint.dim(`[${d.code}]`)} ${d.message}`);
    if (d.hint) out.push(`  ${paint.accent("hint:")} ${d.hint}`);
  }
  const line = summary(errors, warnings, workspace.files.length);
  out.push(
    errors > 0 ? paint.error(`✖ ${line}`) : warnings > 0 ? paint.warning(`⚠ ${line}`) : paint.ok(`✔ ${line}`),
  );
  process.stdout.write(`${out.join("\n")}\n`);
}

/** GitHub workflow command; data and property values escaped as the runner expects. */
export function githubAnnotation(d: Diagnostic): string {
  const escapeData = (s: string) => s.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
  const escapeProp = (s: string) => escapeData(s).replace(/:/g, "%3A").replace(/,/g, "%2C");
  const props: string[] = [];
  if (d.pos)
    props.push(`file=${escapeProp(displayPath(d.pos.file))}`, `line=${d.pos.line}`, `col=${d.pos.column}`);
  props.push(`title=${escapeProp(d.code)}`);
  const message = d.hint ? `${d.message} (hint: ${d.hint})` : d.message;
  return `::${d.severity} ${props.join(",")}::${escapeData(message)}`;
}
