/**
 * Deno runs tlsroute only with the permissions it is given, and a missing one shows up badly: `node:fs`
 * calls fail with NotCapable, which the configuration loader can only read as "does not exist", and
 * Deno throws a refused `listen()` out of the event loop instead of emitting 'error'. This module knows
 * which flags each command needs, checks the files a command is about to read, and turns a refusal
 * into a message that names the flag to add.
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { resolve } from "node:path";
import { DEFAULT_CONFIG_NAMES } from "../config/load.ts";

export type CommandName = "validate" | "explain" | "inspect" | "serve";

export interface DenoPermission {
  flag: "--allow-read" | "--allow-env" | "--allow-net" | "--allow-sys" | "--allow-write" | "--allow-run";
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
    { flag: "--allow-read", why: "--ca, --cert, --key and -c files" },
  ],
  serve: [
    { flag: "--allow-net", why: "always: entry points and backends" },
    { flag: "--allow-read", why: "always: configuration, certificate and CA files" },
    ENV,
    { flag: "--allow-write", why: "with ACME resolvers: their storage files (acme.json)" },
    { flag: "--allow-run", why: "with --workers: starting the worker processes" },
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

type PermissionDescriptor =
  | { name: "read"; path: string }
  | { name: "write"; path: string }
  | { name: "net"; host: string }
  | { name: "sys"; kind: string };

interface DenoPermissionsApi {
  permissions: { querySync(descriptor: PermissionDescriptor): { state: string } };
}

function denoApi(): DenoPermissionsApi | undefined {
  return (globalThis as { Deno?: DenoPermissionsApi }).Deno;
}

/** Whether Deno lets us read `path` (always true elsewhere). */
export function mayRead(path: string): boolean {
  return granted({ name: "read", path: resolve(path) });
}

/** Whether Deno lets us write `path` (always true elsewhere). */
export function mayWrite(path: string): boolean {
  return granted({ name: "write", path: resolve(path) });
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

/** Whether Deno grants a permission without asking (true off Deno, and when it cannot be asked). */
function granted(descriptor: PermissionDescriptor): boolean {
  const deno = denoApi();
  if (!deno) return true;
  try {
    return deno.permissions.querySync(descriptor).state === "granted";
  } catch {
    return true;
  }
}

/**
 * Whether the runtime's bundled trust store (`tls.rootCertificates`) can be read without asking:
 * Deno wants --allow-sys for it (sys "ca"), and would prompt for it on a terminal.
 */
export function mayReadTrustStore(): boolean {
  return granted({ name: "sys", kind: "ca" });
}

/** `host:port` as Deno's net permission names it: IPv6 in brackets, `[::]` for every interface. */
function netTarget(host: string, port: number): string {
  if (host === "") return `[::]:${port}`;
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Why Deno would refuse `listen()` on `host:port` (host "" = every interface), or undefined when it
 * allows it or this is not Deno. Deno throws a refused listen() out of the event loop, where no
 * handler can catch it and the process dies; asked first, serve can refuse an entry point cleanly and
 * a reload that adds one keeps the running configuration. A host name needs the name (to resolve it)
 * and then its address.
 */
export async function deniedListen(
  host: string,
  port: number,
): Promise<{ message: string; hint: string } | undefined> {
  if (!denoApi()) return undefined;
  const refusal = (target: string) => ({
    message: `Deno's --allow-net does not cover ${target}`,
    hint:
      `Add --allow-net=${target}, or widen the --allow-net list deno was given; serve needs at ` +
      `least: ${denoCommandLine("serve")} … (README: Runtimes).`,
  });
  const named = netTarget(host, port);
  if (!granted({ name: "net", host: named })) return refusal(named);
  if (host === "" || isIP(host) !== 0) return undefined;
  let address: string;
  try {
    address = (await lookup(host)).address;
  } catch {
    // listen() will fail to resolve it too, and say so as an ordinary error.
    return undefined;
  }
  const resolved = netTarget(address, port);
  return granted({ name: "net", host: resolved }) ? undefined : refusal(resolved);
}
