/**
 * The JSON form of an explanation, shared by `explain --format json` and the `route` of `inspect`
 * so both print the same shape for the same decision.
 */
import type { Explanation } from "./explain.ts";

/** SHA-256 fingerprint of a configured certificate, when the catalog loaded one (`chain[0]`). */
function configuredFingerprint(certificate: unknown): string | null {
  if (typeof certificate !== "object" || certificate === null || !("chain" in certificate)) return null;
  const chain = (certificate as { chain: unknown }).chain;
  if (!Array.isArray(chain)) return null;
  const leaf: unknown = chain[0];
  if (typeof leaf !== "object" || leaf === null || !("fingerprint256" in leaf)) return null;
  const fp = (leaf as { fingerprint256: unknown }).fingerprint256;
  return typeof fp === "string" ? fp : null;
}

export function explanationJson(result: Explanation, configErrors: number) {
  const d = result.decision;
  const cert = d.certificate;
  return {
    matched: d.matched && d.refusal === null,
    router: d.router,
    service: d.service,
    mode: d.mode,
    tlsOptions: d.tlsOptions,
    certificate: cert
      ? {
          source: cert.source,
          match: cert.match,
          subject: cert.certificate?.subject ?? null,
          sans: cert.certificate?.sans ?? [],
          notAfter: cert.certificate?.notAfter?.toISOString() ?? null,
          file: cert.certificate ? cert.certificate.source : null,
          fingerprint256: configuredFingerprint(cert.certificate),
          ...(cert.resolver ? { resolver: cert.resolver } : {}),
          why: cert.why,
        }
      : null,
    alpn: d.alpn,
    acmeChallenge: d.acmeChallenge,
    reason: d.reason,
    refusal: d.refusal,
    facts: result.facts,
    postgres: result.postgresSteps,
    fastPath: result.fastPath,
    candidates: result.candidates.map((c) => ({
      router: c.router,
      entryPoints: c.entryPoints,
      priority: c.priority,
      rule: c.rule,
      matched: c.matched,
      chosen: c.chosen,
      trace: c.trace,
      ...(c.disabled ? { disabled: c.disabled } : {}),
    })),
    configErrors,
  };
}
