/**
 * Checks on TLS options, CA files, certificate resolvers and certificate coverage of routed names.
 * Traefik ignores unknown TLS version names silently; we report them, with the closest valid name.
 */
import { dirname } from "node:path";
import type { SourcePos } from "../config/located.ts";
import type { Located, Model, TlsOptions } from "../config/model.ts";
import type { Diagnostics } from "../config/reader.ts";
import type { CompiledConfig } from "../routing/compile.ts";
import { closestName } from "../text/suggest.ts";
import { type CertificateCatalog, loadCertificate, readPemValue } from "../tls/catalog.ts";
import { parseCaBundle } from "../tls/certificate.ts";
import {
  CIPHER_SUITE_NAMES,
  CIPHER_SUITES,
  CLIENT_AUTH_TYPE_NAMES,
  CLIENT_AUTH_TYPES,
  CURVE_NAMES,
  curve,
  DEFAULT_ALPN_PROTOCOLS,
  isClientAuthType,
  isTlsVersionName,
  looseCurve,
  looseTlsVersion,
  TLS_VERSION_NAMES,
  TLS_VERSIONS,
} from "../tls/names.ts";
import {
  currentRuntime,
  type IgnorableSetting,
  ignoredTlsSettings,
  isEcdhGroupSupportedOn,
  missingCipherSuitesOn,
  runtimesHonouring,
  type TlsRuntime,
} from "../tls/runtime-support.ts";
import { pureHostSet } from "./routing.ts";

export interface TlsLintOptions {
  now: Date;
  /** The runtime `serve` will run on (default: this one); runtime-dependent findings are for it. */
  runtime?: TlsRuntime;
}

export function lintTlsOptions(model: Model, diags: Diagnostics, options: TlsLintOptions): void {
  const runtime = options.runtime ?? currentRuntime();
  for (const option of model.tlsOptions.values()) {
    lintVersions(option, diags);
    lintCiphers(option, diags, runtime);
    lintCurves(option, diags, runtime);
    lintClientAuth(option, diags);
    if (option.preferServerCipherSuites) {
      diags.warning(
        "deprecated-option",
        `preferServerCipherSuites in TLS options "${option.name}" is deprecated and has no effect`,
        option.preferServerCipherSuites.pos,
        `${option.path}.preferServerCipherSuites`,
        "Remove it.",
      );
    }
    lintIgnoredSettings(option, runtime, diags);
    option.alpnProtocols?.forEach((p, i) => {
      if (p.value.trim() === "") {
        diags.error(
          "empty-alpn",
          `alpnProtocols[${i}] of TLS options "${option.name}" is empty`,
          p.pos,
          `${option.path}.alpnProtocols[${i}]`,
        );
      }
    });
  }
}

/** Settings the target runtime accepts but does not apply: the user is told, never silently misled. */
function lintIgnoredSettings(option: TlsOptions, runtime: TlsRuntime, diags: Diagnostics): void {
  const positions: Record<IgnorableSetting, SourcePos | undefined> = {
    cipherSuites: option.cipherSuites?.[0]?.pos,
    curvePreferences: option.curvePreferences?.[0]?.pos,
    minVersion: option.minVersion?.pos,
    maxVersion: option.maxVersion?.pos,
    disableSessionTickets: undefined,
  };
  const values = {
    cipherSuites: option.cipherSuites?.map((c) => c.value),
    curvePreferences: option.curvePreferences?.map((c) => c.value),
    minVersion: option.minVersion?.value ?? null,
    maxVersion: option.maxVersion?.value ?? null,
    disableSessionTickets: option.disableSessionTickets,
  };
  for (const ignored of ignoredTlsSettings(runtime, values)) {
    const elsewhere = runtimesHonouring(ignored.setting);
    diags.warning(
      "runtime-ignores-setting",
      `TLS options "${option.name}": ${ignored.message}`,
      positions[ignored.setting] ?? option.pos,
      `${option.path}.${ignored.setting}`,
      elsewhere.length > 0 ? `Run tlsroute on ${elsewhere.join(" or ")} if this setting matters.` : undefined,
    );
  }
}

function versionOrder(
  value: Located<string> | null,
  option: TlsOptions,
  field: string,
  diags: Diagnostics,
): number | null {
  if (!value) return null;
  if (isTlsVersionName(value.value)) return TLS_VERSIONS[value.value].order;
  const near = looseTlsVersion(value.value) ?? closestName(value.value, TLS_VERSION_NAMES);
  diags.error(
    "unknown-tls-version",
    `${field} "${value.value}" in TLS options "${option.name}" is not a TLS version name (Traefik would silently ignore it)`,
    value.pos,
    `${option.path}.${field}`,
    near
      ? `Did you mean "${near}"? Valid: ${TLS_VERSION_NAMES.join(", ")}.`
      : `Valid: ${TLS_VERSION_NAMES.join(", ")}.`,
  );
  return null;
}

function lintVersions(option: TlsOptions, diags: Diagnostics): void {
  const min = versionOrder(option.minVersion, option, "minVersion", diags);
  const max = versionOrder(option.maxVersion, option, "maxVersion", diags);
  if (min !== null && max !== null && min > max) {
    diags.error(
      "min-above-max",
      `TLS options "${option.name}": minVersion ${option.minVersion!.value} is above maxVersion ${option.maxVersion!.value}, so no version is left`,
      option.minVersion!.pos,
      `${option.path}.minVersion`,
      "Lower minVersion or raise maxVersion.",
    );
  }
  if (min !== null && min < TLS_VERSIONS.VersionTLS12.order) {
    diags.warning(
      "legacy-tls-version",
      `TLS options "${option.name}" allow ${option.minVersion!.value}, which is deprecated (RFC 8996) and refused by current clients`,
      option.minVersion!.pos,
      `${option.path}.minVersion`,
      "Use VersionTLS12 or later.",
    );
  }
}

function lintCiphers(option: TlsOptions, diags: Diagnostics, runtime: TlsRuntime): void {
  if (!option.cipherSuites) return;
  const known: string[] = [];
  option.cipherSuites.forEach((suite, i) => {
    const path = `${option.path}.cipherSuites[${i}]`;
    const info = Object.hasOwn(CIPHER_SUITES, suite.value) ? CIPHER_SUITES[suite.value] : undefined;
    if (!info) {
      const near = closestName(suite.value, CIPHER_SUITE_NAMES);
      diags.error(
        "unknown-cipher-suite",
        `"${suite.value}" in TLS options "${option.name}" is not a cipher suite name Traefik accepts`,
        suite.pos,
        path,
        near
          ? `Did you mean "${near}"? Names are Go's (TLS_ECDHE_..._WITH_...), not OpenSSL's.`
          : "Names are Go's, e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.",
      );
      return;
    }
    known.push(suite.value);
    if (info.insecure && (info.openssl?.includes("RC4") || info.openssl?.includes("DES"))) {
      diags.warning(
        "insecure-cipher-suite",
        `"${suite.value}" in TLS options "${option.name}" is insecure`,
        suite.pos,
        path,
        "Remove it.",
      );
    }
  });
  const positions = new Map(option.cipherSuites.map((s) => [s.value, s.pos] as const));
  for (const missing of missingCipherSuitesOn(runtime, known)) {
    diags.error(
      "cipher-suite-unavailable",
      `cipher suite "${missing.name}" in TLS options "${option.name}" is not available in ${runtime}'s TLS library (${missing.openssl})`,
      positions.get(missing.name) ?? option.pos,
      `${option.path}.cipherSuites`,
      "Remove it: the TLS library was built without it.",
    );
  }
}

function lintCurves(option: TlsOptions, diags: Diagnostics, runtime: TlsRuntime): void {
  option.curvePreferences?.forEach((value, i) => {
    const path = `${option.path}.curvePreferences[${i}]`;
    const info = curve(value.value);
    if (!info) {
      const near = looseCurve(value.value)?.spellings[0] ?? closestName(value.value, CURVE_NAMES);
      diags.error(
        "unknown-curve",
        `"${value.value}" in TLS options "${option.name}" is not a curve name Traefik accepts`,
        value.pos,
        path,
        near ? `Did you mean "${near}"?` : `Valid: ${CURVE_NAMES.join(", ")}.`,
      );
    } else if (info.openssl && !isEcdhGroupSupportedOn(runtime, info.openssl)) {
      diags.warning(
        "curve-unavailable",
        `curve "${value.value}" in TLS options "${option.name}" is not supported by ${runtime}'s TLS library; it will not be offered`,
        value.pos,
        path,
      );
    }
  });
}

function lintClientAuth(option: TlsOptions, diags: Diagnostics): void {
  const auth = option.clientAuth;
  if (!auth) return;
  const type = auth.clientAuthType;
  if (type && !isClientAuthType(type.value)) {
    diags.error(
      "unknown-client-auth-type",
      `clientAuthType "${type.value}" in TLS options "${option.name}" is unknown`,
      type.pos,
      `${option.path}.clientAuth.clientAuthType`,
      `Use one of ${CLIENT_AUTH_TYPE_NAMES.join(", ")}.`,
    );
  } else if (
    type &&
    CLIENT_AUTH_TYPES[type.value as keyof typeof CLIENT_AUTH_TYPES].needsCaFiles &&
    auth.caFiles.length === 0
  ) {
    diags.error(
      "client-auth-needs-ca",
      `clientAuthType ${type.value} in TLS options "${option.name}" verifies client certificates but caFiles is empty`,
      type.pos,
      `${option.path}.clientAuth.caFiles`,
      "List the CA certificates that sign your client certificates in clientAuth.caFiles.",
    );
  }
  if (!type && auth.caFiles.length > 0) {
    diags.warning(
      "implicit-client-auth",
      `TLS options "${option.name}" list caFiles without clientAuthType: every client must then present a certificate signed by them (RequireAndVerifyClientCert)`,
      auth.pos,
      `${option.path}.clientAuth.clientAuthType`,
      "Say it explicitly: clientAuthType: RequireAndVerifyClientCert (or VerifyClientCertIfGiven).",
    );
  }
  auth.caFiles.forEach((file, i) => {
    lintCaFile(file, auth.baseDir, `${option.path}.clientAuth.caFiles[${i}]`, "client CA", diags);
  });
}

export function lintCaFile(
  file: Located<string>,
  baseDir: string,
  path: string,
  what: string,
  diags: Diagnostics,
): void {
  const pem = readPemValue(file, baseDir, path, what, diags);
  if (!pem) return;
  const bundle = parseCaBundle(pem.text);
  if (!bundle.ok) diags.error("invalid-ca", `${what} ${pem.label}: ${bundle.message}`, file.pos, path);
}

export function lintTransportsTls(model: Model, diags: Diagnostics, now: Date): void {
  const transports = [...model.serversTransports.values()];
  if (model.defaultTransport) transports.push(model.defaultTransport);
  for (const t of transports) {
    if (!t.tls) continue;
    t.tls.rootCAs.forEach((ca, i) => {
      lintCaFile(ca, dirname(t.pos.file), `${t.path}.tls.rootCAs[${i}]`, "root CA", diags);
    });
    t.tls.certificates.forEach((files, i) => {
      loadCertificate(files, `client certificate #${i + 1} of "${t.name}"`, { now, warnDays: 30 }, diags);
    });
  }
}

/** Names served by terminating routers that no certificate covers, and sniStrict routes that would refuse them. */
export function lintCoverage(
  model: Model,
  compiled: CompiledConfig,
  catalog: CertificateCatalog,
  diags: Diagnostics,
): void {
  const hasAnyCertificate = catalog.certificates.length > 0 || catalog.defaultCertificate !== null;
  let uncoveredWithoutCertificates = 0;
  for (const status of compiled.routers.values()) {
    const route = status.route;
    if (route?.mode !== "terminate" || status.router.tls?.certResolver) continue;
    const names = pureHostSet(route.rule.expr) ?? {
      exact: route.rule.hostSNIValues.filter((v) => v !== "*" && !v.startsWith("*.")),
      wildcardParents: [],
    };
    const uncovered = [
      ...names.exact.filter((n) => !catalog.index.lookup(n)),
      ...names.wildcardParents
        .map((p) => `*.${p}`)
        .filter((w) => !catalog.index.lookup(`x-tlsroute-probe.${w.slice(2)}`)),
    ];
    if (uncovered.length === 0) continue;
    const options = model.tlsOptions.get(route.tlsOptions ?? "default");
    const rulePos = status.router.rule?.pos ?? status.router.pos;
    if (options?.sniStrict) {
      diags.warning(
        "sni-strict-no-certificate",
        `router "${status.name}" uses TLS options "${options.name}" with sniStrict, but no certificate covers ${uncovered.map((n) => `"${n}"`).join(", ")}: every handshake for ${uncovered.length === 1 ? "it" : "them"} fails`,
        rulePos,
        `${status.router.path}.rule`,
        "Add a certificate for these names to tls.certificates, or turn sniStrict off.",
      );
    } else if (hasAnyCertificate) {
      diags.warning(
        "name-not-covered",
        `no certificate covers ${uncovered.map((n) => `"${n}"`).join(", ")} of router "${status.name}": clients get the ${catalog.defaultCertificate ? "default" : "generated self-signed"} certificate and fail verification`,
        rulePos,
        `${status.router.path}.rule`,
        "Add a certificate for these names to tls.certificates, or set tls.certResolver.",
      );
    } else uncoveredWithoutCertificates++;
  }
  if (uncoveredWithoutCertificates > 0) {
    diags.warning(
      "no-certificates",
      `${uncoveredWithoutCertificates} terminating router${uncoveredWithoutCertificates === 1 ? "" : "s"} serve${uncoveredWithoutCertificates === 1 ? "s" : ""} names, but the configuration has no certificate: clients get a self-signed certificate generated at start`,
      undefined,
      "tls.certificates",
      "Fine for trying tlsroute out; for real clients add tls.certificates or a certResolver.",
    );
  }
}

/** PostgreSQL 17 clients offer ALPN `postgresql`; a terminating route whose options do not list it refuses their direct TLS. */
export function lintPostgresAlpn(model: Model, compiled: CompiledConfig, diags: Diagnostics): void {
  for (const status of compiled.routers.values()) {
    const route = status.route;
    if (route?.mode !== "terminate" || !looksLikePostgres(model, route.service, status.name, route.rule.text))
      continue;
    const options = model.tlsOptions.get(route.tlsOptions ?? "default");
    const protocols = options?.alpnProtocols?.map((p) => p.value) ?? [...DEFAULT_ALPN_PROTOCOLS];
    if (protocols.includes("postgresql")) continue;
    diags.warning(
      "postgres-alpn",
      `router "${status.name}" looks like a PostgreSQL route, but TLS options "${options?.name ?? "default"}" set alpnProtocols without "postgresql": PostgreSQL 17 clients using direct TLS (sslnegotiation=direct) are refused with no_application_protocol`,
      options?.alpnProtocols?.[0]?.pos ?? status.router.pos,
      `${options?.path ?? "tls.options.default"}.alpnProtocols`,
      'Add "postgresql" to alpnProtocols.',
    );
  }
}

function looksLikePostgres(model: Model, serviceName: string, routerName: string, rule: string): boolean {
  if (/ALPN\(\s*[`"]postgresql[`"]\s*\)/i.test(rule)) return true;
  if (/postgres|(^|[-_.])pg($|[-_.])/i.test(routerName) || /postgres|(^|[-_.])pg($|[-_.])/i.test(serviceName))
    return true;
  const servers = model.services.get(serviceName)?.loadBalancer?.servers ?? [];
  return servers.some((s) => /:5432$/.test(s.address.value));
}
