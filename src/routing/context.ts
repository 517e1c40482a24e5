/**
 * Builds the RoutingContext that `decide` reads: the route tables plus what the decision needs from
 * TLS options, middlewares and the certificate catalog, each resolved once.
 */
import type { Model, TlsOptions } from "../config/model.ts";
import { IpMatcher } from "../rules/index.ts";
import type { CertificateCatalog } from "../tls/catalog.ts";
import { nodeTlsSettings } from "../tls/node-options.ts";
import type { CompiledConfig } from "./compile.ts";
import type { EffectiveTlsOptions, RoutingContext } from "./decide.ts";

/** What decide() needs of each TLS options, from the same mapping the TLS handshake uses. */
export function effectiveTlsOptions(model: Model): Map<string, EffectiveTlsOptions> {
  const out = new Map<string, EffectiveTlsOptions>();
  const add = (name: string, option: TlsOptions | null) => {
    const settings = nodeTlsSettings(option);
    out.set(name, {
      name,
      sniStrict: settings.sniStrict,
      alpnProtocols: settings.alpnProtocols,
      clientAuthType: settings.clientAuth,
    });
  };
  add("default", null);
  for (const option of model.tlsOptions.values()) add(option.name, option);
  return out;
}

export function buildRoutingContext(
  model: Model,
  compiled: CompiledConfig,
  catalog: CertificateCatalog,
): RoutingContext {
  const ipAllowLists = new Map<string, IpMatcher>();
  for (const mw of model.middlewares.values()) {
    if (mw.type !== "ipAllowList") continue;
    const parsed = IpMatcher.parse(mw.sourceRange.map((r) => r.value));
    // An allow-list that does not parse admits nobody: failing closed is the safe reading of a typo.
    ipAllowLists.set(mw.name, parsed.ok ? parsed.matcher : IpMatcher.nobody());
  }
  return {
    tables: compiled.tables,
    tlsOptions: effectiveTlsOptions(model),
    ipAllowLists,
    certificates: catalog.index,
    defaultCertificate: catalog.defaultCertificate,
    acmeChallengeEntryPoints: acmeChallengeEntryPoints(model),
  };
}

/** Traefik's rule: once any resolver uses tlsChallenge, every entry point answers challenges unless it opts out. */
function acmeChallengeEntryPoints(model: Model): Set<string> {
  const out = new Set<string>();
  const challenging = [...model.resolvers.values()].some((r) => r.challenge?.value === "tlsChallenge");
  if (!challenging) return out;
  for (const ep of model.entryPoints.values()) if (!ep.allowACMEByPass) out.add(ep.name);
  return out;
}
