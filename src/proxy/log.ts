/**
 * serve's log: one line per event. `json` is one JSON object per line for machines; `pretty` is a
 * short aligned line for people. Access lines (one per finished connection) always carry the same
 * fields, failures included, so a log search can answer "why did my connection not route?".
 */
import { writeSync } from "node:fs";
import { colors } from "consola/utils";
import { joinHostPort } from "./dial.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "pretty" | "json";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** The fixed set of reasons an access line ends with. */
export type AccessReason =
  | "closed"
  | "no_clienthello"
  | "bad_clienthello"
  | "no_route"
  | "sni_strict"
  | "alpn_mismatch"
  | "client_cert_required"
  | "ip_denied"
  | "too_many_connections"
  | "backend_unreachable"
  | "backend_refused_ssl"
  | "timeout"
  /** Added to DESIGN.md's set: the client's TLS handshake failed (version, cipher, certificate errors). */
  | "tls_handshake_failed"
  /** An ACME TLS-ALPN-01 validation handshake answered with a challenge certificate (RFC 8737). */
  | "acme_challenge";

export interface AccessRecord {
  entryPoint: string;
  client: string;
  sni: string | null;
  alpn: string[];
  router: string | null;
  service: string | null;
  server: string | null;
  mode: "terminate" | "passthrough" | "tcp" | null;
  tlsVersion: string | null;
  /** How a PostgreSQL client got here: sslrequest, gssenc+sslrequest, plaintext, cancel; null otherwise. */
  postgres: string | null;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  reason: AccessReason;
  detail?: string;
}

export interface Logger {
  readonly format: LogFormat;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  access(record: AccessRecord): void;
}

export function createLogger(options: {
  level: LogLevel;
  format: LogFormat;
  write?: (line: string) => void;
  /** Fields every line carries (a worker's number under --workers). */
  base?: Record<string, unknown>;
}): Logger {
  const threshold = LEVELS[options.level];
  const write = options.write ?? writeStdout;
  const base = options.base ?? {};
  const emit = (level: LogLevel, msg: string, given: Record<string, unknown> = {}) => {
    if (LEVELS[level] < threshold) return;
    const fields = options.base ? { ...base, ...given } : given;
    if (options.format === "json") {
      // Each line is one write, so lines from several processes sharing the output never mix.
      write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }));
      return;
    }
    const label = {
      debug: colors.dim("DBG"),
      info: colors.cyan("INF"),
      warn: colors.yellow("WRN"),
      error: colors.red("ERR"),
    }[level];
    const rest = Object.entries(fields)
      .filter(([, v]) => v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0))
      .map(([k, v]) => `${colors.dim(`${k}=`)}${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" ");
    write(`${colors.dim(new Date().toISOString().slice(11, 23))} ${label} ${msg}${rest ? ` ${rest}` : ""}`);
  };
  return {
    format: options.format,
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    access(record) {
      if (options.format === "json") {
        emit("info", "connection", { ...record });
        return;
      }
      const ok = record.reason === "closed";
      const route = record.router
        ? `${record.router} → ${record.service}${record.server ? ` (${record.server})` : ""}`
        : "-";
      emit(
        ok ? "info" : "warn",
        `${record.entryPoint} ${record.client} ${ok ? colors.green(record.reason) : colors.yellow(record.reason)} ${route}`,
        {
          sni: record.sni,
          alpn: record.alpn,
          mode: record.mode,
          tls: record.tlsVersion,
          postgres: record.postgres,
          in: record.bytesIn,
          out: record.bytesOut,
          ms: Math.round(record.durationMs),
          detail: record.detail,
        },
      );
    },
  };
}

/**
 * How long a logged line may wait for others to share its write call. A busy proxy logs a line per
 * connection; writing once per event-loop turn still cost a write call (and a wake-up of the reader)
 * per connection at a few hundred connections per second, about 6 % of the CPU of a terminated
 * connection on Bun (bench/README.md, "What was tried"). 20 ms is below what a person or a log
 * shipper notices, and bounds what a crash could lose that the exit handler does not write.
 */
const FLUSH_DELAY_MS = 20;
/** A batch this large is written at once rather than waiting for the delay. */
const FLUSH_BYTES = 64 * 1024;

let stdoutGone = false;
/** Lines logged since the last write, and their length. */
let pending: string[] = [];
let pendingBytes = 0;
let flushTimer: ReturnType<typeof setTimeout> | null = null;

/**
 * Lines go to stdout in batches: every line logged within FLUSH_DELAY_MS of the first unwritten one
 * is written by one write call. Batches hold whole lines only. A reader that goes away (a closed
 * pipe: EPIPE) must not take the proxy down with an unhandled 'error'; lines are dropped from then
 * on. Lines still pending when the process exits are written synchronously, as far as the output
 * takes them.
 */
function writeStdout(line: string): void {
  if (stdoutGone) return;
  guardStdout();
  pending.push(line);
  pendingBytes += line.length + 1;
  if (pendingBytes >= FLUSH_BYTES) {
    flushStdout();
    return;
  }
  if (flushTimer) return;
  flushTimer = setTimeout(flushStdout, FLUSH_DELAY_MS);
}

let guarded = false;

function guardStdout(): void {
  if (guarded) return;
  guarded = true;
  process.stdout.on("error", () => {
    stdoutGone = true;
  });
  process.once("exit", flushAtExit);
}

/**
 * Writes one line to stdout at once, for a process that also copies other processes' lines there
 * (the primary under --workers) and must keep the order in which things happened.
 */
export function writeLineNow(line: string): void {
  guardStdout();
  if (!stdoutGone) process.stdout.write(`${line}\n`);
}

/** Takes the pending lines as one text, or null when there are none. */
function takePending(): string | null {
  if (flushTimer) clearTimeout(flushTimer);
  flushTimer = null;
  if (pending.length === 0 || stdoutGone) return null;
  const text = `${pending.join("\n")}\n`;
  pending = [];
  pendingBytes = 0;
  return text;
}

function flushStdout(): void {
  const text = takePending();
  if (text !== null) process.stdout.write(text);
}

function flushAtExit(): void {
  const text = takePending();
  if (text === null) return;
  try {
    writeSync(1, text);
  } catch {
    // A full or closed pipe: these lines are lost, as the process ends anyway.
  }
}

/** The access record of a new connection, before anything is known of it but its client. */
export function newAccessRecord(entryPoint: string, clientIp: string, clientPort: number): AccessRecord {
  return {
    entryPoint,
    client: joinHostPort(clientIp, clientPort),
    sni: null,
    alpn: [],
    router: null,
    service: null,
    server: null,
    mode: null,
    tlsVersion: null,
    postgres: null,
    bytesIn: 0,
    bytesOut: 0,
    durationMs: 0,
    reason: "closed",
  };
}

/**
 * The function that ends a connection: its access line. Closures that live as long as a connection
 * are made in small functions like this one, never inside the async steps: an async function's
 * closures keep every local of its frame (on Bun, the whole frame: the accepted stream, the peeked
 * ClientHello), which an idle connection would then hold.
 */
export function accessLineWriter(
  record: AccessRecord,
  started: number,
  log: Logger,
): (reason: AccessReason, detail?: string) => void {
  return (reason, detail) => {
    record.reason = reason;
    if (detail) record.detail = detail;
    record.durationMs = performance.now() - started;
    log.access(record);
  };
}

/** An error no step of a connection expected: logged, and the connection alone pays for it. */
export function logUnexpected(log: Logger, err: unknown): void {
  log.error("connection failed unexpectedly", { error: errorText(err) });
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
