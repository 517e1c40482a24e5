import type { SourcePos } from "./config/located.ts";

export type Severity = "error" | "warning";

/** One finding about a configuration, as `validate` reports it. */
export interface Diagnostic {
  severity: Severity;
  /** Stable kebab-case identifier, e.g. `unknown-service`. */
  code: string;
  message: string;
  /** Where the problem is; absent only when no file position exists (e.g. a missing file). */
  pos?: SourcePos;
  /** Dotted path in the configuration, e.g. `tcp.routers.db.rule`. */
  path?: string;
  /** How to fix it. */
  hint?: string;
}
