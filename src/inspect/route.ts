/**
 * What our configuration says about the connection inspect just made: the entry point it arrived on
 * (by port, or named), the facts serve would have read from it, and explain's decision for them.
 * Pure: the workspace is already loaded, the facts come from the probe.
 */
import type { EntryPoint } from "../config/model.ts";
import { type Explanation, explain } from "../routing/explain.ts";
import { explanationJson } from "../routing/explain-json.ts";
import { canonicalSni } from "../rules/index.ts";
import type { Workspace } from "../workspace.ts";

export type EntryPointChoice =
  | { ok: true; name: string; by: "flag" | "port" | "only" }
  | { ok: false; message: string; hint: string };

/**
 * `--entrypoint` when given; else the one entry point listening on the target's port; else the only
 * entry point there is (serve may have been started with a port override). Anything else is ambiguous.
 */
export function chooseEntryPoint(
  entryPoints: ReadonlyMap<string, Pick<EntryPoint, "name" | "port">>,
  port: number,
  requested: string | undefined,
): EntryPointChoice {
  const names = [...entryPoints.keys()];
  const list = names.length ? `Entry points: ${names.join(", ")}.` : "";
  if (requested !== undefined) {
    if (entryPoints.has(requested)) return { ok: true, name: requested, by: "flag" };
    return {
      ok: false,
      message: `entry point "${requested}" does not exist`,
      hint: list || "The configuration declares no entry point.",
    };
  }
  const byPort = names.filter((n) => entryPoints.get(n)?.port === port);
  if (byPort.length === 1) return { ok: true, name: byPort[0]!, by: "port" };
  if (byPort.length > 1) {
    return {
      ok: false,
      message: `entry points ${byPort.join(", ")} all listen on port ${port}; say which one with --entrypoint`,
      hint: list,
    };
  }
  if (names.length === 1) return { ok: true, name: names[0]!, by: "only" };
  return {
    ok: false,
    message:
      names.length === 0
        ? "the configuration declares no entry point"
        : `no entry point listens on port ${port} and there are ${names.length}; say which one with --entrypoint`,
    hint: list || 'Declare one, e.g. entryPoints: { websecure: { address: ":8443" } }.',
  };
}

export interface RouteInput {
  entryPoint: string;
  /** SNI actually sent; null = none. */
  sni: string | null;
  alpnOffered: readonly string[];
  /** Our side of the connection: the client address the server saw (without NAT). */
  clientIp: string;
  /** The server's address we reached: the local address on serve's side. */
  serverIp: string;
  /** The TLS came after a PostgreSQL SSLRequest. */
  postgresStartTls: boolean;
}

export function routeFor(workspace: Workspace, input: RouteInput): Explanation {
  return explain(workspace.context, workspace.compiled.routers, {
    entryPoint: input.entryPoint,
    sni: canonicalSni(input.sni ?? ""),
    alpn: [...input.alpnOffered],
    clientIp: input.clientIp,
    localIp: input.serverIp,
    tls: true,
    postgres: input.postgresStartTls,
  });
}

/** explain's JSON for the same facts (the shape `tlsroute explain --format json` prints), plus how the entry point was chosen. */
export function routeJson(
  result: Explanation,
  configErrors: number,
  entryPointChosenBy: "flag" | "port" | "only",
) {
  const { configErrors: errors, ...rest } = explanationJson(result, configErrors);
  return { ...rest, entryPointChosenBy, configErrors: errors };
}

export type RouteJson = ReturnType<typeof routeJson>;
