/**
 * Deno runs tlsroute only with the permissions it is given, and a missing one shows up badly: `node:fs`
 * calls fail with NotCapable, which the configuration loader can only read as "does not exist", and
 * Deno throws a refused `listen()` out of the event loop instead of emitting 'error'. This module knows
 * which flags each command needs, checks the files a command is about to read, and turns a refusal
 * into a message that names the flag to add.
 */
import { resolve } from "node:path";
import { DEFAULT_CONFIG_NAMES } from "../config/load.ts";

export type CommandName = "validate" | "explain" | "inspect" | "serve";

export interface DenoPermission {
  flag: "--allow-read" | "--allow-env" | "--allow-net" | "--allow-sys" | "--allow-write";
  /** When the command needs it and for what. */
  why: string;
}

const ENV: DenoPermission = {
  flag: "--allow-env",
  why: "always: the terminal libraries (citty, consola) read TERM, CI and NO_COLOR",
};

/** Least privilege per command, as tested in test/runtimes.test.ts. */
export const DENO_PERMISSIONS: Readonly<Record<CommandName, readonly DenoPermission[]>> = {
  validate: [{ flag: "--allow-read", why: "always: configuration, certificate and CA files" }, ENV],
  explain: [
    { flag: "--allow-read", why: "the configuration and its certificates (not needed for --rule alone)" },
    ENV,
  ],
  inspect: [
    { flag: "--allow-net", why: "always: the host it dials" },
    ENV,
    { flag: "--allow-sys", why: "without --ca: the default trust store (tls.rootCertificates)" },
    { flag: "--allow-read", why: "--ca, --cert, --key and -c files" },
  ],
  serve: [
    { flag: "--allow-net", why: "always: entry points and backends" },
    { flag: "--allow-read", why: "always: configuration, certificate and CA files" },
    ENV,
    { flag: "--allow-write", why: "with ACME resolvers: their storage files (acme.json)" },
  ],
};

export function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(DENO_PERMISSIONS, name);
}

/** `deno run --allow-… npm:tlsroute <command>` with the flags the command always needs. */
export function denoCommandLine(command: CommandName): string {
  const always = DENO_PERMISSIONS[command].filter((p) => p.why.startsWith("always"));
  const flags = [...new Set(always.map((p) => p.flag))];
  return `deno run ${flags.join(" ")} npm:tlsroute ${command}`;
}

/** Deno's refusal of an operation it was not allowed (NotCapable; PermissionDenied before Deno 2). */
export function isDenoPermissionError(err: unknown): err is Error {
  return err instanceof Error && (err.name === "NotCapable" || err.name === "PermissionDenied");
}

/** The flag Deno's refusal message asks for ("run again with the --allow-net flag"). */
export function flagInDenoMessage(message: string): string | undefined {
  return /--allow-[a-z-]+/.exec(message)?.[0];
}

interface DenoPermissionsApi {
  permissions: { querySync(descriptor: { name: "read"; path: string }): { state: string } };
}

function denoApi(): DenoPermissionsApi | undefined {
  return (globalThis as { Deno?: DenoPermissionsApi }).Deno;
}

/** Whether Deno lets us read `path` (always true elsewhere). */
export function mayRead(path: string): boolean {
  const deno = denoApi();
  if (!deno) return true;
  try {
    return deno.permissions.querySync({ name: "read", path: resolve(path) }).state === "granted";
  } catch {
    return true;
  }
}

/**
 * What a command is about to read that Deno will not let it read: the first such path, or, with no
 * configuration path given, the default names in the working directory (one readable one is enough).
 */
export function unreadablePath(
  paths: readonly string[],
  cwd: string,
): { path: string; defaults: boolean } | undefined {
  if (paths.length > 0) {
    const path = paths.find((p) => !mayRead(p));
    return path === undefined ? undefined : { path, defaults: false };
  }
  const defaults = DEFAULT_CONFIG_NAMES.map((name) => resolve(cwd, name));
  return defaults.some(mayRead) ? undefined : { path: cwd, defaults: true };
}
