/**
 * What the TLS stack under us honours. Node, Bun (BoringSSL) and Deno (rustls behind `node:tls`) all
 * accept the same options, but some silently ignore them; `validate` and `serve` use this to say so
 * instead of pretending (measurements: reference/runtimes.md §3 and §5).
 */
import { createSecureContext, getCiphers } from "node:tls";
import { CIPHER_SUITES, type CipherSuiteInfo, curve } from "./names.ts";

export type TlsRuntime = "node" | "bun" | "deno";

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
    notes: [
      "Deno's node:tls is rustls: cipherSuites and curvePreferences are ignored (rustls defaults apply: " +
        "TLS 1.2 ECDHE+AEAD, TLS 1.3, X25519/P-256/P-384)",
      "Deno closes the socket without alert 120 when ALPN negotiation fails",
      "Deno can lose a TLS end-of-stream while the socket is paused; idle timeouts clean such sockets up",
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

export interface IgnoredSetting {
  setting: "cipherSuites" | "curvePreferences";
  /** The configured names that will have no effect. */
  names: string[];
  message: string;
}

/**
 * The parts of one TLS option that `runtime` will not apply. Only names Traefik accepts are considered;
 * unknown names are a separate (error) diagnostic. TLS 1.3 suite names are left out everywhere: Go
 * ignores them too, so listing them changes nothing in Traefik either.
 */
export function ignoredTlsSettings(
  runtime: TlsRuntime,
  option: { cipherSuites?: readonly string[]; curvePreferences?: readonly string[] },
): IgnoredSetting[] {
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
  return ignored;
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
