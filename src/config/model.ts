/**
 * The typed configuration model: what every command works from after loading and normalising the
 * files. Each value that came from a file keeps its source position, so a later check (a lint, a
 * failed certificate load, a rule error found while compiling routes) can still point at it.
 * Defaults are applied here, once, following Traefik's rules for file-provider objects.
 */
import type { SourcePos } from "./located.ts";

export interface Located<T> {
  value: T;
  pos: SourcePos;
}

/** Something the user declared under a name: the position of its key, its config path. */
export interface Named {
  name: string;
  pos: SourcePos;
  path: string;
}

export interface EntryPoint extends Named {
  address: Located<string>;
  /** Host part of the address; "" = every interface. */
  host: string;
  port: number;
  /** Bound on everything before routing: first bytes, ClientHello, Postgres negotiation, client TLS handshake. */
  readTimeoutMs: number;
  /** Where readTimeout was written, when it was (diagnostics point there). */
  readTimeoutPos?: SourcePos;
  writeTimeoutMs: number;
  /**
   * `respondingTimeouts.idleTimeout` (default 180s as in Traefik, 0 = none). Traefik uses it for HTTP
   * only, and so do Node and Bun here; on Deno it is the quiet period after which a relay whose TLS
   * socket met backpressure takes the lost end of stream as read (proxy/relay.ts, README: Runtimes).
   */
  idleTimeoutMs: number;
  graceTimeoutMs: number;
  asDefault: boolean;
  allowACMEByPass: boolean;
  proxyProtocol: { trustedIPs: Located<string>[]; insecure: boolean; insecurePos?: SourcePos } | null;
}

export interface RouterTls {
  pos: SourcePos;
  passthrough: boolean;
  options: Located<string> | null;
  certResolver: Located<string> | null;
  domains: { main: Located<string> | null; sans: Located<string>[]; pos: SourcePos }[];
}

export type RuleSyntaxName = "v3" | "v2";

export interface Router extends Named {
  /** null = not given: the router listens on the default entry points. */
  entryPoints: Located<string>[] | null;
  rule: Located<string> | null;
  /** null = not set: `core.defaultRuleSyntax` applies (see ruleSyntaxOf). */
  ruleSyntax: RuleSyntaxName | null;
  /** null when absent or 0: the priority is computed from the rule. */
  priority: Located<number> | null;
  service: Located<string> | null;
  middlewares: Located<string>[];
  /** null = a plain TCP router. */
  tls: RouterTls | null;
}

export interface ServerSpec {
  address: Located<string>;
  /** Dial the backend with TLS, using the transport's `tls` section. */
  tls: boolean;
  pos: SourcePos;
}

export interface HealthCheck {
  pos: SourcePos;
  port: number | null;
  portPos?: SourcePos;
  send: string;
  expect: string;
  intervalMs: number;
  unhealthyIntervalMs: number;
  timeoutMs: number;
}

export interface LoadBalancer {
  pos: SourcePos;
  servers: ServerSpec[];
  serversTransport: Located<string> | null;
  /** Deprecated per-service PROXY protocol (used only without serversTransport). */
  proxyProtocolVersion: Located<number> | null;
  /** Deprecated per-service delay in milliseconds (used only without serversTransport). */
  terminationDelayMs: number | null;
  terminationDelayPos?: SourcePos;
  healthCheck: HealthCheck | null;
}

export interface WeightedService {
  pos: SourcePos;
  services: { name: Located<string>; weight: number; pos: SourcePos }[];
  healthCheck: boolean;
}

export interface Service extends Named {
  loadBalancer: LoadBalancer | null;
  weighted: WeightedService | null;
}

export type Middleware = Named &
  (
    | {
        type: "ipAllowList";
        sourceRange: Located<string>[];
        /** Where sourceRange was written, when it was. */
        sourceRangePos?: SourcePos;
        deprecatedName: boolean;
      }
    | { type: "inFlightConn"; amount: number; amountPos?: SourcePos }
    | { type: "none" }
  );

export interface TransportTls {
  pos: SourcePos;
  serverName: string;
  insecureSkipVerify: boolean;
  rootCAs: Located<string>[];
  certificates: CertificateFiles[];
  peerCertSANs: { type: "DNSName" | "URI"; value: string }[];
}

export interface ServersTransport extends Named {
  dialTimeoutMs: number;
  dialTimeoutPos?: SourcePos;
  dialKeepAliveMs: number;
  terminationDelayMs: number;
  proxyProtocolVersion: Located<number> | null;
  tls: TransportTls | null;
}

/** A certificate + key pair as written in the configuration (path or inline PEM each). */
export interface CertificateFiles {
  pos: SourcePos;
  path: string;
  certFile: Located<string> | null;
  keyFile: Located<string> | null;
  /** Directory that relative paths resolve against (the file that named them). */
  baseDir: string;
}

export interface StoreCertificateConfig extends CertificateFiles {
  stores: Located<string>[];
}

export type ClientAuthTypeName =
  | "NoClientCert"
  | "RequestClientCert"
  | "RequireAnyClientCert"
  | "VerifyClientCertIfGiven"
  | "RequireAndVerifyClientCert";

export interface TlsOptions extends Named {
  /** Declared in a file, or the built-in `default`. */
  builtIn: boolean;
  minVersion: Located<string> | null;
  maxVersion: Located<string> | null;
  cipherSuites: Located<string>[] | null;
  curvePreferences: Located<string>[] | null;
  clientAuth: {
    pos: SourcePos;
    caFiles: Located<string>[];
    clientAuthType: Located<string> | null;
    baseDir: string;
  } | null;
  sniStrict: boolean;
  alpnProtocols: Located<string>[] | null;
  disableSessionTickets: boolean;
  preferServerCipherSuites: Located<boolean> | null;
}

export interface TlsStore extends Named {
  defaultCertificate: CertificateFiles | null;
  defaultGeneratedCert: { resolver: string; main: string; sans: string[]; pos: SourcePos } | null;
}

export interface AcmeResolver extends Named {
  /** Where the acme section is; absent when the resolver has none (an error of its own). */
  acmePos?: SourcePos;
  email: Located<string> | null;
  storage: Located<string> | null;
  caServer: Located<string> | null;
  keyType: Located<string> | null;
  /** `certificatesDuration` in hours; 0 when unset: renewal then follows the certificate's own lifetime. */
  certificatesDurationHours: number;
  challenge: Located<"tlsChallenge" | "httpChallenge" | "dnsChallenge"> | null;
  caCertificates: Located<string>[];
  baseDir: string;
}

export interface IgnoredSection {
  /** Dotted path of the section, e.g. `http` or `api`. */
  path: string;
  pos: SourcePos;
  why: string;
}

export interface Model {
  files: string[];
  entryPoints: Map<string, EntryPoint>;
  routers: Map<string, Router>;
  services: Map<string, Service>;
  middlewares: Map<string, Middleware>;
  serversTransports: Map<string, ServersTransport>;
  /** Static `tcpServersTransport`: the transport of services that name none. */
  defaultTransport: ServersTransport | null;
  certificates: StoreCertificateConfig[];
  tlsOptions: Map<string, TlsOptions>;
  tlsStores: Map<string, TlsStore>;
  resolvers: Map<string, AcmeResolver>;
  defaultRuleSyntax: RuleSyntaxName;
  ignored: IgnoredSection[];
}

export const DEFAULT_READ_TIMEOUT_MS = 60_000;
export const DEFAULT_GRACE_TIMEOUT_MS = 10_000;
/** Traefik's default `respondingTimeouts.idleTimeout`. */
export const DEFAULT_IDLE_TIMEOUT_MS = 180_000;
export const DEFAULT_DIAL_TIMEOUT_MS = 30_000;
export const DEFAULT_DIAL_KEEPALIVE_MS = 15_000;
/** We default terminationDelay to 100ms everywhere (Traefik: 0 on its built-in transport). */
export const DEFAULT_TERMINATION_DELAY_MS = 100;
export const DEFAULT_TLS_OPTIONS = "default";
export const DEFAULT_TLS_STORE = "default";

export function emptyModel(): Model {
  return {
    files: [],
    entryPoints: new Map(),
    routers: new Map(),
    services: new Map(),
    middlewares: new Map(),
    serversTransports: new Map(),
    defaultTransport: null,
    certificates: [],
    tlsOptions: new Map(),
    tlsStores: new Map(),
    resolvers: new Map(),
    defaultRuleSyntax: "v3",
    ignored: [],
  };
}

export function ruleSyntaxOf(router: Router, model: Model): RuleSyntaxName {
  return router.ruleSyntax ?? model.defaultRuleSyntax;
}
