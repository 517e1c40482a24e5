/**
 * What the TLS stack under us honours. Node, Bun (BoringSSL) and Deno (rustls behind `node:tls`) all
 * accept the same options, but some silently ignore them; `validate` and `serve` use this to say so
 * instead of pretending (measurements: reference/runtimes.md §3 and §5).
 */
import { createSecureContext, getCiphers } from "node:tls";
import { CIPHER_SUITES, type CipherSuiteInfo, curve, isTlsVersionName, TLS_VERSIONS } from "./names.ts";

export type TlsRuntime = "node" | "bun" | "deno";

export const TLS_RUNTIMES: readonly TlsRuntime[] = ["node", "bun", "deno"];

export function isTlsRuntime(value: string): value is TlsRuntime {
  return (TLS_RUNTIMES as readonly string[]).includes(value);
}

export interface RuntimeTlsSupport {
  runtime: TlsRuntime;
  /** `minVersion`/`maxVersion` are enforced (true everywhere). */
  versions: boolean;
  /** TLS 1.0–1.2 cipher suite selection (`ciphers`) is enforced. */
  tls12CipherSuites: boolean;
  /** TLS 1.3 suites in `ciphers` are enforced. */
  tls13CipherSuites: boolean;
  /** `ecdhCurve` (Traefik `curvePreferences`) is enforced. */
  curvePreferences: boolean;
  /** Invalid ciphers/curves/key-cert mismatches throw at context creation (Deno accepts anything). */
  rejectsInvalidSettings: boolean;
  /** A refused ALPN negotiation sends alert 120 (Deno just closes the socket). */
  alpnRefusalAlert: boolean;
  /** TLS EOF is delivered while the socket is paused by backpressure (lost on Deno: set idle timeouts). */
  tlsEofUnderBackpressure: boolean;
  /** `getEphemeralKeyInfo()` reports the negotiated group (always `{}` on Deno). */
  ephemeralKeyInfo: boolean;
  /** `dhparam: "auto"` is accepted (Bun throws). */
  dhparamAuto: boolean;
  /** TLS 1.0 and 1.1 can be enabled (rustls has neither: Deno refuses such clients whatever minVersion says). */
  legacyVersions: boolean;
  /** `disableSessionTickets` (`SSL_OP_NO_TICKET`) is applied (Deno ignores `secureOptions`). */
  sessionTicketsOption: boolean;
  /** OpenSSL's `@SECLEVEL=n` directive is accepted in cipher strings (BoringSSL throws INVALID_COMMAND). */
  securityLevels: boolean;
  /**
   * What the reference build lacks, measured with `tls.getCiphers()` and `createSecureContext({ ecdhCurve })`
   * (reference/runtimes.md versions). Used when validating for a runtime other than the one running,
   * which cannot be probed; the running runtime is always probed instead.
   */
  reference: {
    build: string;
    /** Traefik names of TLS 1.0–1.2 suites the library does not offer. */
    missingCipherSuites: readonly string[];
    /** `ecdhCurve` group names the library refuses. */
    unsupportedGroups: readonly string[];
  };
  /** Facts worth a line in `serve`'s startup log or a `validate` note. */
  notes: readonly string[];
}

const SUPPORT: Readonly<Record<TlsRuntime, RuntimeTlsSupport>> = {
  node: {
    runtime: "node",
    versions: true,
    tls12CipherSuites: true,
    tls13CipherSuites: true,
    curvePreferences: true,
    rejectsInvalidSettings: true,
    alpnRefusalAlert: true,
    tlsEofUnderBackpressure: true,
    ephemeralKeyInfo: true,
    dhparamAuto: true,
    legacyVersions: true,
    sessionTicketsOption: true,
    securityLevels: true,
    reference: {
      build: "Node 20, OpenSSL 3.0",
      missingCipherSuites: [
        "TLS_RSA_WITH_RC4_128_SHA",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
      ],
      unsupportedGroups: ["X25519MLKEM768", "SecP256r1MLKEM768", "SecP384r1MLKEM1024"],
    },
    notes: [],
  },
  bun: {
    runtime: "bun",
    versions: true,
    tls12CipherSuites: true,
    tls13CipherSuites: false,
    curvePreferences: true,
    rejectsInvalidSettings: true,
    alpnRefusalAlert: true,
    tlsEofUnderBackpressure: true,
    ephemeralKeyInfo: true,
    dhparamAuto: false,
    legacyVersions: true,
    sessionTicketsOption: true,
    securityLevels: false,
    reference: {
      build: "Bun 1.4, BoringSSL",
      missingCipherSuites: [
        "TLS_RSA_WITH_RC4_128_SHA",
        "TLS_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
      ],
      unsupportedGroups: ["SecP256r1MLKEM768", "SecP384r1MLKEM1024"],
    },
    notes: [
      "Bun uses BoringSSL: TLS 1.3 cipher suites cannot be configured",
      "Bun's own TLS client offers X25519MLKEM768, so its ClientHello spans several TCP segments",
    ],
  },
  deno: {
    runtime: "deno",
    versions: true,
    tls12CipherSuites: false,
    tls13CipherSuites: false,
    curvePreferences: false,
    rejectsInvalidSettings: false,
    alpnRefusalAlert: false,
    tlsEofUnderBackpressure: false,
    ephemeralKeyInfo: false,
    dhparamAuto: true,
    legacyVersions: false,
    sessionTicketsOption: false,
    securityLevels: true,
    // Cipher suites and groups are ignored altogether, so what the library lacks never matters.
    reference: { build: "Deno 2.9, rustls", missingCipherSuites: [], unsupportedGroups: [] },
    notes: [
      "Deno's node:tls is rustls: cipherSuites and curvePreferences are ignored (rustls defaults apply: " +
        "TLS 1.2 ECDHE+AEAD, TLS 1.3, X25519/P-256/P-384)",
      "Deno closes the socket without alert 120 when ALPN negotiation fails",
      "Deno can lose a TLS end-of-stream while the socket is paused; idle timeouts clean such sockets up",
      "Deno's rustls speaks TLS 1.2 and 1.3 only, and ignores disableSessionTickets",
    ],
  },
};

export function runtimeTlsSupport(runtime: TlsRuntime): RuntimeTlsSupport {
  return SUPPORT[runtime];
}

/** The runtime executing this code. */
export function currentRuntime(): TlsRuntime {
  if ("Bun" in globalThis) return "bun";
  if ("Deno" in globalThis) return "deno";
  return "node";
}

export type IgnorableSetting =
  | "cipherSuites"
  | "curvePreferences"
  | "minVersion"
  | "maxVersion"
  | "disableSessionTickets";

export interface IgnoredSetting {
  setting: IgnorableSetting;
  /** The configured values that will have no effect. */
  names: string[];
  /** Names the runtime and the setting, and says what happens instead. */
  message: string;
}

/** What `ignoredTlsSettings` looks at: a TLS option's values, without positions. */
export interface TlsSettingValues {
  cipherSuites?: readonly string[];
  curvePreferences?: readonly string[];
  minVersion?: string | null;
  maxVersion?: string | null;
  disableSessionTickets?: boolean;
}

/**
 * The parts of one TLS option that `runtime` will not apply. Only names Traefik accepts are considered;
 * unknown names are a separate (error) diagnostic. TLS 1.3 suite names are left out everywhere: Go
 * ignores them too, so listing them changes nothing in Traefik either.
 */
export function ignoredTlsSettings(runtime: TlsRuntime, option: TlsSettingValues): IgnoredSetting[] {
  const support = runtimeTlsSupport(runtime);
  const ignored: IgnoredSetting[] = [];
  const suites = (option.cipherSuites ?? []).filter((n) => {
    const suite = Object.hasOwn(CIPHER_SUITES, n) ? CIPHER_SUITES[n] : undefined;
    return suite !== undefined && !suite.tls13 && suite.openssl !== null;
  });
  if (suites.length > 0 && !support.tls12CipherSuites) {
    ignored.push({
      setting: "cipherSuites",
      names: suites,
      message: `cipherSuites has no effect on ${runtime}: its TLS library chooses cipher suites itself`,
    });
  }
  const curves = (option.curvePreferences ?? []).filter((n) => curve(n) !== undefined);
  if (curves.length > 0 && !support.curvePreferences) {
    ignored.push({
      setting: "curvePreferences",
      names: curves,
      message: `curvePreferences has no effect on ${runtime}: its TLS library chooses key exchange groups itself`,
    });
  }
  if (!support.legacyVersions) {
    const legacy = (value: string | null | undefined): value is string =>
      !!value && isTlsVersionName(value) && TLS_VERSIONS[value].order < TLS_VERSIONS.VersionTLS12.order;
    if (legacy(option.minVersion)) {
      ignored.push({
        setting: "minVersion",
        names: [option.minVersion],
        message: `minVersion ${option.minVersion} has no effect on ${runtime}: its TLS library speaks TLS 1.2 and 1.3 only, so older clients are refused`,
      });
    }
    if (legacy(option.maxVersion)) {
      ignored.push({
        setting: "maxVersion",
        names: [option.maxVersion],
        message: `maxVersion ${option.maxVersion} cannot be honoured on ${runtime}: its TLS library speaks TLS 1.2 and 1.3 only, so every handshake fails`,
      });
    }
  }
  if (option.disableSessionTickets && !support.sessionTicketsOption) {
    ignored.push({
      setting: "disableSessionTickets",
      names: ["true"],
      message: `disableSessionTickets has no effect on ${runtime}: its TLS library issues session tickets regardless`,
    });
  }
  return ignored;
}

const HONOURED_BY: Readonly<Record<IgnorableSetting, (support: RuntimeTlsSupport) => boolean>> = {
  cipherSuites: (support) => support.tls12CipherSuites,
  curvePreferences: (support) => support.curvePreferences,
  minVersion: (support) => support.legacyVersions,
  maxVersion: (support) => support.legacyVersions,
  disableSessionTickets: (support) => support.sessionTicketsOption,
};

/** The runtimes that do apply `setting`, for hints ("run on node or bun if it matters"). */
export function runtimesHonouring(setting: IgnorableSetting): TlsRuntime[] {
  return TLS_RUNTIMES.filter((runtime) => HONOURED_BY[setting](runtimeTlsSupport(runtime)));
}

/**
 * A cipher string `runtime`'s TLS library accepts. `@SECLEVEL=0` (which OpenSSL 3 needs to allow TLS 1.0
 * and 1.1 at all) makes BoringSSL throw INVALID_COMMAND, and BoringSSL has no security levels to lower,
 * so on Bun the directive is dropped and legacy versions work without it.
 */
export function portableCipherString(ciphers: string, runtime: TlsRuntime = currentRuntime()): string {
  if (runtimeTlsSupport(runtime).securityLevels) return ciphers;
  return ciphers
    .split(":")
    .filter((part) => !part.startsWith("@SECLEVEL="))
    .join(":");
}

/** OpenSSL cipher names this build offers, upper-cased (`tls.getCiphers()` reports lower case). */
export function availableOpenSslCiphers(): ReadonlySet<string> {
  return new Set(getCiphers().map((c) => c.toUpperCase()));
}

/**
 * Suites Traefik would accept but this OpenSSL build cannot offer (RC4 and 3DES are compiled out of
 * OpenSSL 3 defaults). TLS_FALLBACK_SCSV is not a cipher and never reported.
 */
export function missingCipherSuites(
  names: readonly string[],
  available: ReadonlySet<string> = availableOpenSslCiphers(),
): CipherSuiteInfo[] {
  const missing: CipherSuiteInfo[] = [];
  for (const name of names) {
    const suite = Object.hasOwn(CIPHER_SUITES, name) ? CIPHER_SUITES[name] : undefined;
    if (suite?.openssl && !available.has(suite.openssl)) missing.push(suite);
  }
  return missing;
}

/**
 * Suites `runtime` cannot offer: probed when it is the running runtime, else its reference build's list.
 * Empty on a runtime that ignores cipher suites altogether (nothing configured is applied there).
 */
export function missingCipherSuitesOn(runtime: TlsRuntime, names: readonly string[]): CipherSuiteInfo[] {
  const support = runtimeTlsSupport(runtime);
  if (!support.tls12CipherSuites) return [];
  if (runtime === currentRuntime()) return missingCipherSuites(names);
  const missing = new Set(support.reference.missingCipherSuites);
  return names.filter((n) => missing.has(n)).map((n) => CIPHER_SUITES[n]!);
}

/** Whether `runtime` accepts `group` as `ecdhCurve`; true on a runtime that ignores curve preferences. */
export function isEcdhGroupSupportedOn(runtime: TlsRuntime, group: string): boolean {
  const support = runtimeTlsSupport(runtime);
  if (!support.curvePreferences) return true;
  if (runtime === currentRuntime()) return isEcdhGroupSupported(group);
  return !support.reference.unsupportedGroups.includes(group);
}

const groupSupport = new Map<string, boolean>();

/**
 * The part of an `ecdhCurve` list (`"X25519MLKEM768:P-256"`) this build accepts; undefined when nothing
 * is left (the library's defaults then apply). One unknown group makes `createSecureContext` throw
 * ("Failed to set ECDH curve") on OpenSSL 3.0, so a group `validate` reported as unavailable
 * (curve-unavailable: "it will not be offered") must be left out rather than break every handshake.
 */
export function portableEcdhCurve(ecdhCurve: string | undefined): string | undefined {
  if (ecdhCurve === undefined) return undefined;
  const groups = ecdhCurve.split(":").filter((group) => {
    let supported = groupSupport.get(group);
    if (supported === undefined) {
      supported = isEcdhGroupSupported(group);
      groupSupport.set(group, supported);
    }
    return supported;
  });
  return groups.length > 0 ? groups.join(":") : undefined;
}

/**
 * Whether this build accepts `group` as `ecdhCurve` (the ML-KEM hybrids need OpenSSL ≥ 3.5). Probed by
 * creating a throw-away secure context; on Deno every value is accepted (and ignored).
 */
export function isEcdhGroupSupported(group: string): boolean {
  try {
    createSecureContext({ ecdhCurve: group });
    return true;
  } catch {
    return false;
  }
}
