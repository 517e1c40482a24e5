/**
 * Everything serve needs from one configuration, built once per (re)load and never changed: a
 * connection keeps the snapshot it was accepted with, so a reload never disturbs open connections.
 */
import type { TlsOptions } from "../config/model.ts";
import { Diagnostics } from "../config/reader.ts";
import { resolveRef } from "../config/refs.ts";
import type { CertificateDecision, RoutingContext } from "../routing/decide.ts";
import { readPemValue } from "../tls/catalog.ts";
import type { GeneratedCertificate } from "../tls/generated.ts";
import { readPem, resolvePemSource } from "../tls/pem.ts";
import type { Workspace } from "../workspace.ts";
import { ServiceDirectory } from "./services.ts";
import { type ServingCertificate, TerminatorCache } from "./terminate.ts";

export interface Snapshot {
  readonly workspace: Workspace;
  readonly context: RoutingContext;
  readonly services: ServiceDirectory;
  readonly terminators: TerminatorCache;
  readonly generated: ServingCertificate & { subject: string };
  /** inFlightConn counters: one map per (middleware, router, entry point), as Traefik builds them. */
  readonly inFlight: Map<string, Map<string, number>>;
}

export function buildSnapshot(workspace: Workspace, generated: GeneratedCertificate): Snapshot {
  const { model } = workspace;
  const clientCas = new Map<string, string[]>();
  const scratch = new Diagnostics();
  for (const option of model.tlsOptions.values()) {
    const auth = option.clientAuth;
    if (!auth) continue;
    const pems = auth.caFiles
      .map((file) => readPemValue(file, auth.baseDir, option.path, "client CA", scratch)?.text)
      .filter((t): t is string => t !== undefined);
    clientCas.set(option.name, pems);
  }
  const options = new Map<string, TlsOptions>(model.tlsOptions);
  const services = ServiceDirectory.build(model, (value, baseDir) => {
    const text = readPem(resolvePemSource(value, baseDir));
    return text.ok ? text.value : null;
  });
  return {
    workspace,
    context: workspace.context,
    services,
    terminators: new TerminatorCache(options, clientCas),
    generated: {
      id: "generated",
      certPem: generated.certPem,
      keyPem: generated.keyPem,
      subject: generated.subject,
    },
    inFlight: new Map(),
  };
}

/** The certificate a decision says to serve, with its PEM. */
export function servingCertificate(
  snapshot: Snapshot,
  decision: CertificateDecision | null,
): ServingCertificate {
  const chosen = decision?.certificate;
  if (chosen && "certPem" in chosen && "keyPem" in chosen) {
    return { id: chosen.id, certPem: String(chosen.certPem), keyPem: String(chosen.keyPem) };
  }
  return snapshot.generated;
}

/** The middleware names of a router that limit connections per client IP, with their limits. */
export function inFlightLimits(
  snapshot: Snapshot,
  middlewares: readonly string[],
): { name: string; amount: number }[] {
  const out: { name: string; amount: number }[] = [];
  for (const ref of middlewares) {
    const name = resolveRef(ref);
    if (!name.ok) continue;
    const mw = snapshot.workspace.model.middlewares.get(name.name);
    if (mw?.type === "inFlightConn") out.push({ name: mw.name, amount: mw.amount });
  }
  return out;
}
