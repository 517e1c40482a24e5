/**
 * A loaded configuration with everything derived from it: the model, the compiled route tables,
 * the certificate catalog, the routing context and every diagnostic. validate, explain, inspect and
 * serve all start here, so they agree on what the configuration means.
 */

import { type AcmePlan, planCertificates } from "./acme/plan.ts";
import { loadStoredCertificates, type ResolverCertificate } from "./acme/stored.ts";
import { defaultConfigPaths, type LoadResult, loadConfig } from "./config/load.ts";
import type { Model } from "./config/model.ts";
import { Diagnostics } from "./config/reader.ts";
import type { Diagnostic } from "./diagnostics.ts";
import { lintResolvers } from "./lint/acme.ts";
import { lintRouting } from "./lint/routing.ts";
import { lintServices } from "./lint/services.ts";
import { lintCoverage, lintPostgresAlpn, lintTlsOptions, lintTransportsTls } from "./lint/tls.ts";
import { type CompiledConfig, compile } from "./routing/compile.ts";
import { buildRoutingContext } from "./routing/context.ts";
import type { RoutingContext } from "./routing/decide.ts";
import { type CertificateCatalog, type LoadedCertificate, loadCatalog } from "./tls/catalog.ts";
import { currentRuntime, type TlsRuntime } from "./tls/runtime-support.ts";
import { CertificateIndex } from "./tls/select.ts";

export interface Workspace {
  files: string[];
  model: Model;
  compiled: CompiledConfig;
  catalog: CertificateCatalog;
  context: RoutingContext;
  /** The certificates routers ask resolvers for (validate checks them, serve orders them). */
  acme: AcmePlan;
  /** Load, compile and lint findings, ordered by file and position. */
  diagnostics: Diagnostic[];
}

export interface WorkspaceOptions {
  now?: Date;
  runtime?: TlsRuntime;
  cwd?: string;
}

export function openWorkspace(paths: readonly string[], options: WorkspaceOptions = {}): Workspace {
  const now = options.now ?? new Date();
  const load: LoadResult = loadConfig(
    paths.length > 0 ? paths : defaultConfigPaths(options.cwd ?? process.cwd()),
  );
  const { model } = load;
  const compiled = compile(model);
  const lint = new Diagnostics();
  const configured = loadCatalog(model, { now, warnDays: 30 }, lint);
  const stored = loadStoredCertificates(model, lint);
  const catalog = stored.length > 0 ? withCertificates(configured, stored) : configured;
  lintServices(model, lint);
  lintTlsOptions(model, lint, { now, ...(options.runtime ? { runtime: options.runtime } : {}) });
  lintTransportsTls(model, lint, now);
  const acme = planCertificates(model, compiled);
  lintResolvers(model, compiled, acme, lint, options.runtime ?? currentRuntime());
  lintRouting(model, compiled, lint);
  lintCoverage(model, compiled, catalog, lint);
  lintPostgresAlpn(model, compiled, lint);
  const diagnostics = sortDiagnostics([...load.diagnostics, ...compiled.diagnostics, ...lint.list]);
  return {
    files: load.files,
    model,
    compiled,
    catalog,
    context: buildRoutingContext(model, compiled, catalog),
    acme,
    diagnostics,
  };
}

/** The catalog with resolver certificates added after the configured ones (which win a tie, as in Traefik's store). */
function withCertificates(
  catalog: CertificateCatalog,
  resolved: readonly ResolverCertificate[],
): CertificateCatalog {
  const certificates: LoadedCertificate[] = [...catalog.certificates, ...resolved];
  return { ...catalog, certificates, index: new CertificateIndex(certificates) };
}

/**
 * The same configuration serving another set of resolver certificates (a certificate was obtained or
 * renewed while serve runs). Configured certificates and everything else stay as they are.
 */
export function withResolverCertificates(
  workspace: Workspace,
  resolved: readonly ResolverCertificate[],
): Workspace {
  const configured = workspace.catalog.certificates.filter((c) => !("resolver" in c));
  const catalog = withCertificates({ ...workspace.catalog, certificates: configured }, resolved);
  return {
    ...workspace,
    catalog,
    context: buildRoutingContext(workspace.model, workspace.compiled, catalog),
  };
}

function sortDiagnostics(list: Diagnostic[]): Diagnostic[] {
  return list
    .map((d, i) => ({ d, i }))
    .sort((a, b) => {
      const pa = a.d.pos;
      const pb = b.d.pos;
      if (!pa || !pb) return pa ? -1 : pb ? 1 : a.i - b.i;
      if (pa.file !== pb.file) return pa.file < pb.file ? -1 : 1;
      return pa.line - pb.line || pa.column - pb.column || a.i - b.i;
    })
    .map((x) => x.d);
}
