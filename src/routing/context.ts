/**
 * Builds the RoutingContext that `decide` reads: the route tables plus what the decision needs from
 * TLS options, middlewares and the certificate catalog, each resolved once.
 */
import type { Model } from "../config/model.ts";
import { IpMatcher } from "../rules/index.ts";
import type { CertificateCatalog } from "../tls/catalog.ts";
import { DEFAULT_ALPN_PROTOCOLS, effectiveClientAuthType } from "../tls/names.ts";
import type { CompiledConfig } from "./compile.ts";
import type { EffectiveTlsOptions, RoutingContext } from "./decide.ts";

export function effectiveTlsOptions(model: Model): Map<string, EffectiveTlsOptions> {
  const out = new Map<string, EffectiveTlsOptions>();
  out.set("default", {
    name: "default",
    sniStrict: false,
    alpnProtocols: DEFAULT_ALPN_PROTOCOLS,
    clientAuthType: "NoClientCert",
  });
  for (const option of model.tlsOptions.values()) {
    const auth = option.clientAuth;
    out.set(option.name, {
      name: option.name,
      sniStrict: option.sniStrict,
      alpnProtocols: option.alpnProtocols ? option.alpnProtocols.map((p) => p.value) : DEFAULT_ALPN_PROTOCOLS,
      clientAuthType:
        effectiveClientAuthType(auth?.clientAuthType?.value, (auth?.caFiles.length ?? 0) > 0) ??
        "NoClientCert",
    });
  }
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
  };
}
