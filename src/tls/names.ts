/**
 * The names Traefik accepts in `tls.options`, and what each one means for Node's TLS stack.
 *
 * Facts come from Traefik's `pkg/tls` (see reference §1.7) and Go's `crypto/tls`; the mapping to OpenSSL
 * names is what `node:tls` understands. Pure data plus small lookups: nothing here touches the runtime
 * (what the running OpenSSL actually supports is in `runtime-support.ts`).
 */
import type { SecureVersion } from "node:tls";

// ---------------------------------------------------------------------------------------------------------------
// TLS versions

export type TlsVersionName = "VersionTLS10" | "VersionTLS11" | "VersionTLS12" | "VersionTLS13";

export interface TlsVersionInfo {
  name: TlsVersionName;
  /** The spelling `minVersion`/`maxVersion` take in `node:tls`. */
  node: SecureVersion;
  /** 10..13, for comparing versions (min must not exceed max). */
  order: 10 | 11 | 12 | 13;
  /** Protocol version on the wire, e.g. 0x0303 for TLS 1.2. */
  wire: number;
}

/** Exact, case-sensitive keys, as Traefik matches them; anything else is silently ignored by Traefik. */
export const TLS_VERSIONS: Readonly<Record<TlsVersionName, TlsVersionInfo>> = {
  VersionTLS10: { name: "VersionTLS10", node: "TLSv1", order: 10, wire: 0x0301 },
  VersionTLS11: { name: "VersionTLS11", node: "TLSv1.1", order: 11, wire: 0x0302 },
  VersionTLS12: { name: "VersionTLS12", node: "TLSv1.2", order: 12, wire: 0x0303 },
  VersionTLS13: { name: "VersionTLS13", node: "TLSv1.3", order: 13, wire: 0x0304 },
};

export const TLS_VERSION_NAMES: readonly TlsVersionName[] = Object.keys(TLS_VERSIONS) as TlsVersionName[];

export function isTlsVersionName(value: string): value is TlsVersionName {
  return Object.hasOwn(TLS_VERSIONS, value);
}

/** The Traefik name for what `TLSSocket.getProtocol()` reports (`"TLSv1.3"` → `VersionTLS13`). */
export function tlsVersionFromNode(protocol: string): TlsVersionName | undefined {
  return TLS_VERSION_NAMES.find((name) => TLS_VERSIONS[name].node === protocol);
}

/**
 * Recognises the spellings people carry over from other tools (`TLSv1.2`, `tls1_2`, `1.3`,
 * `versiontls12`) so that `validate` can say which Traefik name was meant. Returns undefined for
 * anything that does not name TLS 1.0–1.3 unambiguously.
 */
export function looseTlsVersion(value: string): TlsVersionName | undefined {
  const compact = value
    .toLowerCase()
    .replace(/^version/, "")
    .replace(/^(tls|ssl)v?/, "")
    .replace(/[\s._-]/g, "");
  const byDigits: Record<string, TlsVersionName> = {
    "1": "VersionTLS10",
    "10": "VersionTLS10",
    "11": "VersionTLS11",
    "12": "VersionTLS12",
    "13": "VersionTLS13",
  };
  return byDigits[compact];
}

// ---------------------------------------------------------------------------------------------------------------
// Cipher suites

export type KeyExchange = "RSA" | "ECDHE" | "TLS13" | "none";

export interface CipherSuiteInfo {
  /** Go/Traefik name, the key users write in `cipherSuites`. */
  name: string;
  /** IANA code point. */
  id: number;
  /** Name in OpenSSL/`node:tls` `ciphers` syntax; null when OpenSSL has no such cipher (TLS_FALLBACK_SCSV). */
  openssl: string | null;
  /**
   * A TLS 1.3 suite. Go (so Traefik) accepts these names but ignores them: TLS 1.3 always offers all three
   * suites. Beware when building a Node `ciphers` string: if it lists no TLS 1.3 suite, Node silently caps
   * the context at TLS 1.2, so to keep Traefik's behaviour the three TLS 1.3 suites must always be added.
   */
  tls13: boolean;
  /**
   * Listed by Go's `tls.InsecureCipherSuites()` (current Go, as Traefik is built): RC4, 3DES, CBC with
   * SHA-256 MACs (no Lucky13 countermeasures) and every suite with RSA key exchange (no forward secrecy).
   */
  insecure: boolean;
  /** Part of the list Traefik uses when `cipherSuites` is not set. */
  inGoDefault: boolean;
  keyExchange: KeyExchange;
  /** For the pre-Go-1.16 CHACHA20 spellings: the current name they stand for. */
  aliasOf?: string;
}

type SuiteRow = [name: string, id: number, openssl: string | null, keyExchange: KeyExchange];

// Every name Traefik's `CipherSuites` map accepts, with its IANA id.
const SUITE_ROWS: readonly SuiteRow[] = [
  ["TLS_RSA_WITH_RC4_128_SHA", 0x0005, "RC4-SHA", "RSA"],
  ["TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000a, "DES-CBC3-SHA", "RSA"],
  ["TLS_RSA_WITH_AES_128_CBC_SHA", 0x002f, "AES128-SHA", "RSA"],
  ["TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035, "AES256-SHA", "RSA"],
  ["TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003c, "AES128-SHA256", "RSA"],
  ["TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009c, "AES128-GCM-SHA256", "RSA"],
  ["TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009d, "AES256-GCM-SHA384", "RSA"],
  ["TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xc007, "ECDHE-ECDSA-RC4-SHA", "ECDHE"],
  ["TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xc009, "ECDHE-ECDSA-AES128-SHA", "ECDHE"],
  ["TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xc00a, "ECDHE-ECDSA-AES256-SHA", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xc011, "ECDHE-RSA-RC4-SHA", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", 0xc012, "ECDHE-RSA-DES-CBC3-SHA", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xc013, "ECDHE-RSA-AES128-SHA", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xc014, "ECDHE-RSA-AES256-SHA", "ECDHE"],
  ["TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xc023, "ECDHE-ECDSA-AES128-SHA256", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xc027, "ECDHE-RSA-AES128-SHA256", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f, "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE"],
  ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xc02b, "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xc030, "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE"],
  ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c, "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", 0xcca8, "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE"],
  ["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca8, "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE"],
  ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", 0xcca9, "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE"],
  ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca9, "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE"],
  ["TLS_AES_128_GCM_SHA256", 0x1301, "TLS_AES_128_GCM_SHA256", "TLS13"],
  ["TLS_AES_256_GCM_SHA384", 0x1302, "TLS_AES_256_GCM_SHA384", "TLS13"],
  ["TLS_CHACHA20_POLY1305_SHA256", 0x1303, "TLS_CHACHA20_POLY1305_SHA256", "TLS13"],
  ["TLS_FALLBACK_SCSV", 0x5600, null, "none"],
];

/** The suites Traefik uses when `cipherSuites` is not set, in Go's order (`TestManager_Get_DefaultValues`). */
export const DEFAULT_CIPHER_SUITES: readonly string[] = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
  "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
  "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
  "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
  "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
];

function isInsecureSuite(name: string, keyExchange: KeyExchange): boolean {
  return keyExchange === "RSA" || /_RC4_|_3DES_|_CBC_SHA256$/.test(name);
}

const LEGACY_CHACHA_SUFFIX = "_CHACHA20_POLY1305";

export const CIPHER_SUITES: Readonly<Record<string, CipherSuiteInfo>> = Object.fromEntries(
  SUITE_ROWS.map(([name, id, openssl, keyExchange]): [string, CipherSuiteInfo] => {
    const info: CipherSuiteInfo = {
      name,
      id,
      openssl,
      tls13: keyExchange === "TLS13",
      insecure: isInsecureSuite(name, keyExchange),
      inGoDefault: DEFAULT_CIPHER_SUITES.includes(name),
      keyExchange,
    };
    if (name.endsWith(LEGACY_CHACHA_SUFFIX)) info.aliasOf = `${name}_SHA256`;
    return [name, info];
  }),
);

export const CIPHER_SUITE_NAMES: readonly string[] = SUITE_ROWS.map((row) => row[0]);

export function cipherSuite(name: string): CipherSuiteInfo | undefined {
  return Object.hasOwn(CIPHER_SUITES, name) ? CIPHER_SUITES[name] : undefined;
}

/**
 * The suite an OpenSSL-style name stands for (`ECDHE-RSA-AES128-GCM-SHA256`, any case), so `validate` can
 * say "write TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" to someone coming from nginx or HAProxy. Legacy
 * aliases are skipped: the current Go name is the one to suggest.
 */
export function cipherSuiteByOpenSslName(opensslName: string): CipherSuiteInfo | undefined {
  const wanted = opensslName.toUpperCase();
  return Object.values(CIPHER_SUITES).find((s) => s.openssl === wanted && s.aliasOf === undefined);
}

// ---------------------------------------------------------------------------------------------------------------
// Curves (key exchange groups)

export interface CurveInfo {
  /** Go's constant name, used when reporting. */
  goName: string;
  /** Both spellings Traefik accepts, lower-case first. */
  spellings: readonly [string, string];
  /** Go `CurveID` = TLS NamedGroup code point. */
  id: number;
  /** Group name for `node:tls` `ecdhCurve`. */
  openssl: string;
  /** Hybrid post-quantum group (needs OpenSSL ≥ 3.5; BoringSSL and rustls have X25519MLKEM768). */
  postQuantum: boolean;
}

const CURVE_LIST: readonly CurveInfo[] = [
  {
    goName: "CurveP256",
    spellings: ["secp256r1", "CurveP256"],
    id: 23,
    openssl: "P-256",
    postQuantum: false,
  },
  {
    goName: "CurveP384",
    spellings: ["secp384r1", "CurveP384"],
    id: 24,
    openssl: "P-384",
    postQuantum: false,
  },
  {
    goName: "CurveP521",
    spellings: ["secp521r1", "CurveP521"],
    id: 25,
    openssl: "P-521",
    postQuantum: false,
  },
  { goName: "X25519", spellings: ["x25519", "X25519"], id: 29, openssl: "X25519", postQuantum: false },
  {
    goName: "X25519MLKEM768",
    spellings: ["x25519mlkem768", "X25519MLKEM768"],
    id: 4588,
    openssl: "X25519MLKEM768",
    postQuantum: true,
  },
  {
    goName: "SecP256r1MLKEM768",
    spellings: ["secp256r1mlkem768", "SecP256r1MLKEM768"],
    id: 4587,
    openssl: "SecP256r1MLKEM768",
    postQuantum: true,
  },
  {
    goName: "SecP384r1MLKEM1024",
    spellings: ["secp384r1mlkem1024", "SecP384r1MLKEM1024"],
    id: 4589,
    openssl: "SecP384r1MLKEM1024",
    postQuantum: true,
  },
];

/** Every accepted spelling (exact, case-sensitive) → its group. */
export const CURVES: Readonly<Record<string, CurveInfo>> = Object.fromEntries(
  CURVE_LIST.flatMap((curve) => curve.spellings.map((spelling): [string, CurveInfo] => [spelling, curve])),
);

export const CURVE_NAMES: readonly string[] = Object.keys(CURVES);

export function curve(name: string): CurveInfo | undefined {
  return Object.hasOwn(CURVES, name) ? CURVES[name] : undefined;
}

/**
 * The accepted name for spellings Traefik rejects but people write (`P-256`, `prime256v1`, `x448` has no
 * answer). Used for hints only.
 */
export function looseCurve(value: string): CurveInfo | undefined {
  const compact = value.toLowerCase().replace(/[\s_-]/g, "");
  const aliases: Record<string, string> = {
    p256: "secp256r1",
    prime256v1: "secp256r1",
    curvep256: "secp256r1",
    p384: "secp384r1",
    curvep384: "secp384r1",
    p521: "secp521r1",
    curvep521: "secp521r1",
  };
  const spelling = aliases[compact] ?? compact;
  return CURVE_LIST.find((c) => c.spellings[0] === spelling);
}

// ---------------------------------------------------------------------------------------------------------------
// Client authentication

export type ClientAuthType =
  | "NoClientCert"
  | "RequestClientCert"
  | "RequireAnyClientCert"
  | "VerifyClientCertIfGiven"
  | "RequireAndVerifyClientCert";

export interface ClientAuthSemantics {
  /** Ask the client for a certificate (`requestCert` in node:tls). */
  requestCert: boolean;
  /** Fail the handshake when none is sent. */
  requireCert: boolean;
  /** Check a sent certificate against `clientAuth.caFiles`. */
  verify: boolean;
  /** Traefik refuses the option without `caFiles` (`invalid clientAuthType: X, CAFiles is required`). */
  needsCaFiles: boolean;
}

export const CLIENT_AUTH_TYPES: Readonly<Record<ClientAuthType, ClientAuthSemantics>> = {
  NoClientCert: { requestCert: false, requireCert: false, verify: false, needsCaFiles: false },
  RequestClientCert: { requestCert: true, requireCert: false, verify: false, needsCaFiles: false },
  RequireAnyClientCert: { requestCert: true, requireCert: true, verify: false, needsCaFiles: false },
  VerifyClientCertIfGiven: { requestCert: true, requireCert: false, verify: true, needsCaFiles: true },
  RequireAndVerifyClientCert: { requestCert: true, requireCert: true, verify: true, needsCaFiles: true },
};

export const CLIENT_AUTH_TYPE_NAMES: readonly ClientAuthType[] = Object.keys(
  CLIENT_AUTH_TYPES,
) as ClientAuthType[];

export function isClientAuthType(value: string): value is ClientAuthType {
  return Object.hasOwn(CLIENT_AUTH_TYPES, value);
}

/**
 * What Traefik does when `clientAuthType` is empty: no client certificate, unless `caFiles` is set, in
 * which case it silently requires and verifies one. Unknown names return undefined (a config error).
 */
export function effectiveClientAuthType(
  clientAuthType: string | undefined,
  hasCaFiles: boolean,
): ClientAuthType | undefined {
  if (clientAuthType === undefined || clientAuthType === "") {
    return hasCaFiles ? "RequireAndVerifyClientCert" : "NoClientCert";
  }
  return isClientAuthType(clientAuthType) ? clientAuthType : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// ALPN

/** Traefik's `alpnProtocols` default. */
export const TRAEFIK_DEFAULT_ALPN_PROTOCOLS: readonly string[] = ["h2", "http/1.1", "acme-tls/1"];

/**
 * tlsroute's default: Traefik's plus `postgresql`, so that PostgreSQL 17 direct-TLS clients (which offer
 * only `postgresql`) are not refused with no_application_protocol (a deliberate difference, see DESIGN).
 */
export const DEFAULT_ALPN_PROTOCOLS: readonly string[] = [...TRAEFIK_DEFAULT_ALPN_PROTOCOLS, "postgresql"];
