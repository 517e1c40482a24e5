/**
 * Traefik TLS options → the settings node:tls understands (Node, Bun and Deno share this API).
 * Pure: CA files are passed in already read. Unknown names were reported by validate, so here they
 * are skipped rather than thrown, and a configuration that validates always yields usable settings.
 */
import type { TlsOptions } from "../config/model.ts";
import {
  CIPHER_SUITES,
  CLIENT_AUTH_TYPES,
  type ClientAuthType,
  curve,
  DEFAULT_ALPN_PROTOCOLS,
  DEFAULT_CIPHER_SUITES,
  effectiveClientAuthType,
  isTlsVersionName,
  TLS_VERSIONS,
} from "./names.ts";

type NodeTlsVersion = "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3";

export interface NodeTlsSettings {
  minVersion: NodeTlsVersion;
  maxVersion: NodeTlsVersion;
  /** OpenSSL cipher string (TLS 1.2 and 1.3 suites), as `ciphers` takes it. */
  ciphers: string;
  /** Colon-separated groups for `ecdhCurve`; undefined = the library's defaults. */
  ecdhCurve: string | undefined;
  /** Session tickets off (`SSL_OP_NO_TICKET`) when the options say so. */
  disableSessionTickets: boolean;
  alpnProtocols: string[];
  clientAuth: ClientAuthType;
  requestCert: boolean;
  /** Refuse the handshake when a required or given certificate does not verify. */
  rejectUnauthorized: boolean;
  sniStrict: boolean;
}

const TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

function version(value: string | undefined, fallback: NodeTlsVersion): NodeTlsVersion {
  return value && isTlsVersionName(value) ? (TLS_VERSIONS[value].node as NodeTlsVersion) : fallback;
}

/** `options` null = Traefik's built-in `default` options. */
export function nodeTlsSettings(options: TlsOptions | null): NodeTlsSettings {
  const minVersion = version(options?.minVersion?.value, "TLSv1.2");
  const maxVersion = version(options?.maxVersion?.value, "TLSv1.3");
  const names = options?.cipherSuites?.map((c) => c.value) ?? [...DEFAULT_CIPHER_SUITES];
  const tls12 = names
    .map((n) => (Object.hasOwn(CIPHER_SUITES, n) ? CIPHER_SUITES[n] : undefined))
    .filter((s) => s !== undefined && !s.tls13 && s.openssl !== null)
    .map((s) => s!.openssl!);
  // Go always enables all TLS 1.3 suites and ignores them in cipherSuites; OpenSSL needs them listed, or
  // it silently caps the connection at TLS 1.2.
  const suites = [...new Set([...TLS13_SUITES, ...tls12])];
  // TLS 1.0/1.1 only work with OpenSSL 3's security level lowered.
  const legacy = minVersion === "TLSv1" || minVersion === "TLSv1.1";
  const ciphers = `${suites.join(":")}${legacy ? ":@SECLEVEL=0" : ""}`;
  const groups = (options?.curvePreferences ?? [])
    .map((c) => curve(c.value)?.openssl)
    .filter((g): g is string => g !== undefined);
  const auth = options?.clientAuth;
  const clientAuth =
    effectiveClientAuthType(auth?.clientAuthType?.value, (auth?.caFiles.length ?? 0) > 0) ?? "NoClientCert";
  const semantics = CLIENT_AUTH_TYPES[clientAuth];
  return {
    minVersion,
    maxVersion,
    ciphers,
    ecdhCurve: groups.length > 0 ? groups.join(":") : undefined,
    disableSessionTickets: options?.disableSessionTickets ?? false,
    alpnProtocols: options?.alpnProtocols
      ? options.alpnProtocols.map((p) => p.value)
      : [...DEFAULT_ALPN_PROTOCOLS],
    clientAuth,
    requestCert: semantics.requestCert,
    rejectUnauthorized: semantics.verify && semantics.requireCert,
    sniStrict: options?.sniStrict ?? false,
  };
}
