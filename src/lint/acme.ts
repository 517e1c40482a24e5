/**
 * Checks of certificate resolvers: the resolver itself (challenge, key type, CA, email, storage),
 * the routers that use it (names a TLS-ALPN-01 order can certify), and how the challenge meets the
 * routers of each entry point (interception hides passthrough backends; allowACMEByPass hides us).
 */
import { ACME_KEY_TYPES } from "../acme/keys.ts";
import type { AcmePlan, CertificateRequest } from "../acme/plan.ts";
import type { Model } from "../config/model.ts";
import type { Diagnostics } from "../config/reader.ts";
import { resolveRef } from "../config/refs.ts";
import type { CompiledConfig } from "../routing/compile.ts";
import { type ConnectionFacts, findRoute } from "../routing/decide.ts";
import { closestName } from "../text/suggest.ts";
import type { TlsRuntime } from "../tls/runtime-support.ts";
import { lintCaFile } from "./tls.ts";

export function lintResolvers(
  model: Model,
  compiled: CompiledConfig,
  plan: AcmePlan,
  diags: Diagnostics,
  runtime: TlsRuntime,
): void {
  for (const resolver of model.resolvers.values()) {
    // A resolver without an acme section is reported as such; everything below would be noise.
    if (!resolver.acmePos) continue;
    const at = (key: string) => `${resolver.path}.acme.${key}`;
    if (runtime === "deno" && resolver.challenge?.value === "tlsChallenge") {
      // Measured: Deno's TLS server refuses a certificate carrying an unknown critical extension, and
      // RFC 8737 requires the challenge certificate's acmeIdentifier extension to be critical.
      diags.warning(
        "runtime-acme-challenge-unsupported",
        `resolver "${resolver.name}" cannot validate names when tlsroute runs on Deno: Deno's TLS refuses the TLS-ALPN-01 challenge certificate (its critical acmeIdentifier extension), so every order fails`,
        resolver.challenge.pos,
        at("tlsChallenge"),
        "Run serve on Node or Bun; certificates already stored in acme.json are still served on Deno.",
      );
    }
    if (!resolver.challenge) {
      diags.error(
        "acme-no-challenge",
        `resolver "${resolver.name}" names no challenge type`,
        resolver.acmePos,
        `${resolver.path}.acme`,
        "Add tlsChallenge: {} (tlsroute answers TLS-ALPN-01 on its TLS entry points).",
      );
    } else if (resolver.challenge.value !== "tlsChallenge") {
      diags.error(
        "unsupported-challenge",
        `resolver "${resolver.name}" uses ${resolver.challenge.value}; tlsroute answers only the TLS-ALPN-01 challenge`,
        resolver.challenge.pos,
        at(resolver.challenge.value),
        "Use tlsChallenge: {}.",
      );
    }
    if (resolver.keyType && !Object.hasOwn(ACME_KEY_TYPES, resolver.keyType.value)) {
      const near = closestName(resolver.keyType.value, Object.keys(ACME_KEY_TYPES));
      diags.error(
        "acme-unknown-key-type",
        `resolver "${resolver.name}" asks for key type "${resolver.keyType.value}", which tlsroute does not know`,
        resolver.keyType.pos,
        at("keyType"),
        near ? `Did you mean "${near}"?` : `Use one of ${Object.keys(ACME_KEY_TYPES).join(", ")}.`,
      );
    }
    if (resolver.caServer && !isHttpsUrl(resolver.caServer.value)) {
      diags.error(
        "acme-invalid-ca-server",
        `resolver "${resolver.name}": caServer "${resolver.caServer.value}" is not an https:// URL`,
        resolver.caServer.pos,
        at("caServer"),
        "Give the CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory.",
      );
    }
    resolver.caCertificates.forEach((file, i) => {
      lintCaFile(file, resolver.baseDir, `${at("caCertificates")}[${i}]`, "ACME CA certificate", diags);
    });
    if (!resolver.email) {
      diags.warning(
        "acme-no-email",
        `resolver "${resolver.name}" has no email`,
        resolver.pos,
        at("email"),
        "Set acme.email to receive expiry notices from the CA.",
      );
    }
    // storage: "" stores nothing either (there is no path to write), so it gets the same warning.
    if (!resolver.storage?.value.trim()) {
      diags.warning(
        "acme-no-storage",
        `resolver "${resolver.name}" has no storage file: certificates are requested again at every start`,
        resolver.pos,
        at("storage"),
        "Set acme.storage: acme.json.",
      );
    }
  }
  for (const status of compiled.routers.values()) {
    const ref = status.router.tls?.certResolver;
    if (!ref) continue;
    const name = resolveRef(ref.value);
    if (!name.ok || !model.resolvers.has(name.name)) {
      const near = name.ok ? closestName(name.name, model.resolvers.keys()) : undefined;
      diags.error(
        "unknown-cert-resolver",
        `router "${status.name}" uses certificate resolver "${ref.value}", which does not exist`,
        ref.pos,
        `${status.router.path}.tls.certResolver`,
        near ? `Did you mean "${near}"?` : "Declare it under certificatesResolvers.",
      );
    }
  }
  for (const problem of plan.problems) {
    diags.warning(problem.code, problem.message, problem.pos, problem.path, problem.hint);
  }
  lintChallengeRouting(model, compiled, plan, diags);
}

function isHttpsUrl(value: string): boolean {
  try {
    return new URL(value).protocol === "https:";
  } catch {
    return false;
  }
}

/** Names of the TLS-ALPN-01 requests whose routers listen on each entry point. */
function requestedNamesByEntryPoint(
  model: Model,
  compiled: CompiledConfig,
  requests: readonly CertificateRequest[],
): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const request of requests) {
    if (model.resolvers.get(request.resolver)?.challenge?.value !== "tlsChallenge") continue;
    for (const router of request.routers) {
      for (const ep of compiled.routers.get(router)?.entryPoints ?? []) {
        let names = out.get(ep);
        if (!names) {
          names = new Set();
          out.set(ep, names);
        }
        for (const n of [request.main, ...request.sans]) names.add(n);
      }
    }
  }
  return out;
}

/**
 * An `acme-tls/1` connection is answered by tlsroute itself (interception, on every entry point once a
 * resolver uses tlsChallenge) unless the entry point sets allowACMEByPass; then it is routed like any
 * other. Where a resolver and a passthrough router want the same name, one side cannot validate.
 */
function lintChallengeRouting(
  model: Model,
  compiled: CompiledConfig,
  plan: AcmePlan,
  diags: Diagnostics,
): void {
  const challengers = [...model.resolvers.values()].filter((r) => r.challenge?.value === "tlsChallenge");
  if (challengers.length === 0) return;
  const requested = requestedNamesByEntryPoint(model, compiled, plan.requests);
  const facts: ConnectionFacts = {
    entryPoint: "",
    sni: "",
    alpn: [],
    clientIp: "",
    localIp: "",
    tls: true,
    postgres: false,
  };
  const certified = new Set<string>();
  const answeredSomewhere = new Set<string>();
  for (const [epName, names] of requested) {
    for (const n of names) certified.add(n);
    if (!model.entryPoints.get(epName)?.allowACMEByPass) for (const n of names) answeredSomewhere.add(n);
  }
  for (const ep of model.entryPoints.values()) {
    if (ep.allowACMEByPass) {
      // Names also served on an entry point that answers challenges can still be validated there.
      const names = [...(requested.get(ep.name) ?? [])].filter((n) => !answeredSomewhere.has(n));
      if (names.length === 0) continue;
      diags.warning(
        "acme-challenge-bypassed",
        `entry point "${ep.name}" sets allowACMEByPass, so tlsroute does not answer the TLS-ALPN-01 challenge there for ${quoteList(names)}, and no other entry point serves ${names.length === 1 ? "it" : "them"}: validation fails`,
        ep.pos,
        `${ep.path}.allowACMEByPass`,
        "Remove allowACMEByPass, or serve these names on an entry point without it.",
      );
      continue;
    }
    // Resolver names validated here: allowACMEByPass would take these challenges away from tlsroute.
    const ownNames = [...(requested.get(ep.name) ?? [])];
    const table = compiled.tables.get(ep.name);
    for (const route of table?.tls ?? []) {
      if (route.mode !== "passthrough" || !table) continue;
      // A passthrough router naming a resolver is reported as acme-resolver-on-passthrough already.
      if (route.router.tls?.certResolver) continue;
      // Names this router really takes on this entry point (a catch-all behind a resolver's router does not).
      const shared = [...certified].filter(
        (sni) => findRoute(table, { ...facts, entryPoint: ep.name, sni }) === route,
      );
      if (shared.length === 0) continue;
      diags.warning(
        "acme-passthrough-conflict",
        `passthrough router "${route.name}" on entry point "${ep.name}" takes ${quoteList(shared)}, which resolver "${challengers[0]!.name}" certifies with TLS-ALPN-01: tlsroute answers acme-tls/1 connections for ${shared.length === 1 ? "that name" : "those names"} itself, so the backend never sees its own validations`,
        route.router.rule?.pos ?? route.router.pos,
        `${route.router.path}.rule`,
        ownNames.length > 0
          ? `Routers on entry point "${ep.name}" need tlsroute to answer the challenge for ${quoteList(ownNames)}, so allowACMEByPass is no way out here: if the backend gets its own certificates, have it use another challenge (HTTP-01 or DNS-01).`
          : `If the backend gets its own certificates, set allowACMEByPass: true on entry point "${ep.name}" (tlsroute's resolvers then validate on other entry points).`,
      );
    }
  }
}

function quoteList(names: readonly string[]): string {
  const shown = names.slice(0, 5).map((n) => `"${n}"`);
  return names.length > 5 ? `${shown.join(", ")} and ${names.length - 5} more` : shown.join(", ");
}
