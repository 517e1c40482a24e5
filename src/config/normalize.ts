/**
 * One parsed file → the typed model, with Traefik's defaults applied and every shape problem reported
 * as a diagnostic at its position. Cross-references (does the service exist?) are checked later by
 * the linter, once all files are merged.
 */
import { dirname } from "node:path";
import type { LNode, SourcePos } from "./located.ts";
import {
  type AcmeResolver,
  type CertificateFiles,
  DEFAULT_DIAL_KEEPALIVE_MS,
  DEFAULT_DIAL_TIMEOUT_MS,
  DEFAULT_GRACE_TIMEOUT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_READ_TIMEOUT_MS,
  DEFAULT_TERMINATION_DELAY_MS,
  type EntryPoint,
  emptyModel,
  type HealthCheck,
  type LoadBalancer,
  type Located,
  type Middleware,
  type Model,
  type Router,
  type RouterTls,
  type ServersTransport,
  type Service,
  type StoreCertificateConfig,
  type TlsOptions,
  type TlsStore,
  type TransportTls,
  type WeightedService,
} from "./model.ts";
import { type Diagnostics, MapReader, mapItems } from "./reader.ts";

/** Where a static file tells us to find dynamic configuration (`providers.file`). */
export interface ProviderFileRef {
  kind: "filename" | "directory";
  value: Located<string>;
  baseDir: string;
}

export interface FileModel {
  model: Model;
  providerFiles: ProviderFileRef[];
}

const TOP_LEVEL_KEYS = [
  "entryPoints",
  "certificatesResolvers",
  "tcp",
  "tls",
  "providers",
  "core",
  "tcpServersTransport",
];

/** Sections Traefik knows that tlsroute does not serve: noted once, never an error. */
const IGNORED_TOP_LEVEL: Record<string, string> = {
  http: "tlsroute routes TCP and TLS only; HTTP routers are not served",
  udp: "tlsroute routes TCP and TLS only; UDP is not served",
  api: "static section with no meaning for tlsroute",
  log: "tlsroute has its own --log-level and --log-format flags",
  accesslog: "tlsroute always writes one access line per connection",
  global: "static section with no meaning for tlsroute",
  metrics: "static section with no meaning for tlsroute",
  ping: "static section with no meaning for tlsroute",
  tracing: "static section with no meaning for tlsroute",
  serverstransport: "HTTP servers transport; TCP uses tcpServersTransport",
  experimental: "static section with no meaning for tlsroute",
  hub: "static section with no meaning for tlsroute",
  spiffe: "SPIFFE is not supported by tlsroute",
  ocsp: "OCSP stapling is not supported by tlsroute",
  pilot: "static section with no meaning for tlsroute",
  hostresolver: "static section with no meaning for tlsroute",
  otlp: "static section with no meaning for tlsroute",
};

export function normalizeFile(root: LNode, file: string, diags: Diagnostics): FileModel {
  const model = emptyModel();
  model.files.push(file);
  const providerFiles: ProviderFileRef[] = [];
  const baseDir = dirname(file);
  if (root.kind !== "map") {
    diags.error("wrong-type", "the configuration must be a mapping at the top level", root.pos);
    return { model, providerFiles };
  }
  const top = new MapReader(root, "", diags);
  const knownHere = [...TOP_LEVEL_KEYS];
  for (const [key, entry] of root.entries) {
    const why = IGNORED_TOP_LEVEL[key.toLowerCase()];
    if (why) {
      top.entry(key);
      model.ignored.push({ path: key, pos: entry.keyPos, why });
    }
  }

  const core = top.map("core");
  if (core) {
    const syntax = core.string("defaultRuleSyntax");
    if (syntax) model.defaultRuleSyntax = syntax.value === "v2" ? "v2" : "v3";
    core.finish(["defaultRuleSyntax"]);
  }

  for (const { name, reader, keyPos } of top.namedMaps("entryPoints")) {
    const ep = readEntryPoint(name, reader, keyPos, diags);
    if (ep) model.entryPoints.set(name, ep);
  }

  for (const { name, reader, keyPos } of top.namedMaps("certificatesResolvers")) {
    model.resolvers.set(name, readResolver(name, reader, keyPos, baseDir, diags));
  }

  const transport = top.map("tcpServersTransport");
  if (transport)
    model.defaultTransport = readTransport("tcpServersTransport", transport, transport.pos, baseDir, diags);

  const providers = top.map("providers");
  if (providers) readProviders(providers, baseDir, providerFiles, model, diags);

  const tcp = top.map("tcp");
  if (tcp) readTcp(tcp, baseDir, model, diags);

  const tls = top.map("tls");
  if (tls) readTls(tls, baseDir, model, diags);

  top.finish(knownHere);
  return { model, providerFiles };
}

function checkName(name: string, keyPos: SourcePos, path: string, diags: Diagnostics): boolean {
  if (name.includes("@")) {
    diags.error(
      "invalid-name",
      `"${name}" contains "@", which is reserved for provider qualifiers`,
      keyPos,
      path,
      `Rename it to "${name.split("@")[0]}".`,
    );
    return false;
  }
  return true;
}

function readEntryPoint(
  name: string,
  r: MapReader,
  keyPos: SourcePos,
  diags: Diagnostics,
): EntryPoint | null {
  const address = r.string("address");
  const asDefault = r.bool("asDefault")?.value ?? false;
  r.bool("reusePort");
  const allowACMEByPass = r.bool("allowACMEByPass")?.value ?? false;
  let readTimeoutMs = DEFAULT_READ_TIMEOUT_MS;
  let readTimeoutPos: SourcePos | undefined;
  let writeTimeoutMs = 0;
  let idleTimeoutMs = DEFAULT_IDLE_TIMEOUT_MS;
  let graceTimeoutMs = DEFAULT_GRACE_TIMEOUT_MS;
  const transport = r.map("transport");
  if (transport) {
    const responding = transport.map("respondingTimeouts");
    if (responding) {
      const readTimeout = responding.duration("readTimeout");
      if (readTimeout) {
        readTimeoutMs = readTimeout.value;
        readTimeoutPos = readTimeout.pos;
      }
      writeTimeoutMs = responding.duration("writeTimeout")?.value ?? 0;
      idleTimeoutMs = responding.duration("idleTimeout")?.value ?? idleTimeoutMs;
      responding.finish(["readTimeout", "writeTimeout", "idleTimeout"]);
    }
    const life = transport.map("lifeCycle");
    if (life) {
      life.duration("requestAcceptGraceTimeout");
      graceTimeoutMs = life.duration("graceTimeOut")?.value ?? graceTimeoutMs;
      life.finish(["requestAcceptGraceTimeout", "graceTimeOut"]);
    }
    transport.bool("keepAliveMaxRequests");
    transport.duration("keepAliveMaxTime");
    transport.finish(["respondingTimeouts", "lifeCycle", "keepAliveMaxRequests", "keepAliveMaxTime"]);
  }
  let proxyProtocol: EntryPoint["proxyProtocol"] = null;
  const pp = r.map("proxyProtocol");
  if (pp) {
    const insecure = pp.bool("insecure");
    proxyProtocol = {
      trustedIPs: pp.strings("trustedIPs") ?? [],
      insecure: insecure?.value ?? false,
      ...(insecure ? { insecurePos: insecure.pos } : {}),
    };
    pp.finish(["trustedIPs", "insecure"]);
  }
  for (const key of ENTRYPOINT_HTTP_KEYS) r.entry(key);
  r.finish([
    "address",
    "asDefault",
    "reusePort",
    "allowACMEByPass",
    "transport",
    "proxyProtocol",
    ...ENTRYPOINT_HTTP_KEYS,
  ]);
  if (!checkName(name, keyPos, r.path, diags)) return null;
  if (!address) {
    diags.error(
      "missing-address",
      `entry point "${name}" has no address`,
      keyPos,
      r.path,
      'Add an address such as address: ":8443".',
    );
    return null;
  }
  const parsed = parseListenAddress(address.value);
  if (!parsed.ok) {
    diags.error(
      "invalid-address",
      `entry point "${name}": ${parsed.message}`,
      address.pos,
      r.sub("address"),
      parsed.hint,
    );
    return null;
  }
  if (parsed.protocol === "udp") {
    diags.warning(
      "udp-entrypoint-ignored",
      `entry point "${name}" is a UDP entry point; tlsroute serves TCP only and ignores it`,
      address.pos,
      r.sub("address"),
    );
    return null;
  }
  return {
    name,
    pos: keyPos,
    path: r.path,
    address,
    host: parsed.host,
    port: parsed.port,
    readTimeoutMs,
    ...(readTimeoutPos ? { readTimeoutPos } : {}),
    writeTimeoutMs,
    idleTimeoutMs,
    graceTimeoutMs,
    asDefault,
    allowACMEByPass,
    proxyProtocol,
  };
}

/** Entry point keys that only configure Traefik's HTTP server: accepted, without effect on TCP routing. */
const ENTRYPOINT_HTTP_KEYS = ["http", "http2", "http3", "udp", "forwardedHeaders", "observability"];

export type ListenAddress =
  | { ok: true; host: string; port: number; protocol: "tcp" | "udp" }
  | { ok: false; message: string; hint: string };

/** `[host]:port[/tcp|/udp]`, as Traefik accepts for entry point addresses. */
export function parseListenAddress(text: string): ListenAddress {
  let rest = text.trim();
  let protocol: "tcp" | "udp" = "tcp";
  const slash = rest.lastIndexOf("/");
  if (slash !== -1) {
    const proto = rest.slice(slash + 1).toLowerCase();
    if (proto !== "tcp" && proto !== "udp") {
      return {
        ok: false,
        message: `invalid protocol "${proto}" in address "${text}"`,
        hint: "Use /tcp or nothing.",
      };
    }
    protocol = proto;
    rest = rest.slice(0, slash);
  }
  const hint = 'Write it as ":8443", "127.0.0.1:8443" or "[::1]:8443".';
  const colon = rest.lastIndexOf(":");
  if (colon === -1) return { ok: false, message: `address "${text}" has no port`, hint };
  let host = rest.slice(0, colon);
  const portText = rest.slice(colon + 1);
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  else if (host.includes(":")) return { ok: false, message: `IPv6 host in "${text}" needs brackets`, hint };
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
    return { ok: false, message: `"${portText}" in "${text}" is not a port number (0-65535)`, hint };
  }
  return { ok: true, host, port: Number(portText), protocol };
}

function readProviders(
  r: MapReader,
  baseDir: string,
  out: ProviderFileRef[],
  model: Model,
  diags: Diagnostics,
): void {
  const known = ["file", "providersThrottleDuration", "precedence"];
  r.duration("providersThrottleDuration");
  r.entry("precedence");
  const file = r.map("file");
  if (file) {
    const filename = file.string("filename");
    const directory = file.string("directory");
    file.bool("watch");
    file.bool("debugLogGeneratedTemplate");
    file.finish(["filename", "directory", "watch", "debugLogGeneratedTemplate"]);
    if (filename && directory) {
      diags.error(
        "provider-file-both",
        "providers.file sets both filename and directory; Traefik accepts only one",
        directory.pos,
        file.sub("directory"),
        "Keep one of them.",
      );
    }
    if (filename) out.push({ kind: "filename", value: filename, baseDir });
    else if (directory) out.push({ kind: "directory", value: directory, baseDir });
  }
  for (const [key, entry] of r.node.entries) {
    if (known.some((k) => k.toLowerCase() === key.toLowerCase())) continue;
    r.entry(key);
    model.ignored.push({
      path: `providers.${key}`,
      pos: entry.keyPos,
      why: "tlsroute reads configuration from files only",
    });
  }
  r.finish(known);
}

function readTcp(r: MapReader, baseDir: string, model: Model, diags: Diagnostics): void {
  for (const { name, reader, keyPos } of r.namedMaps("routers")) {
    const router = readRouter(name, reader, keyPos, diags);
    if (router) model.routers.set(name, router);
  }
  for (const { name, reader, keyPos } of r.namedMaps("services")) {
    const service = readService(name, reader, keyPos, diags);
    if (service) model.services.set(name, service);
  }
  for (const { name, reader, keyPos } of r.namedMaps("middlewares")) {
    const mw = readMiddleware(name, reader, keyPos, diags);
    if (mw) model.middlewares.set(name, mw);
  }
  for (const { name, reader, keyPos } of r.namedMaps("serversTransports")) {
    if (!checkName(name, keyPos, reader.path, diags)) continue;
    model.serversTransports.set(name, readTransport(name, reader, keyPos, baseDir, diags));
  }
  r.finish(["routers", "services", "middlewares", "serversTransports"]);
}

function readRouter(name: string, r: MapReader, keyPos: SourcePos, diags: Diagnostics): Router | null {
  const entryPoints = r.strings("entryPoints") ?? null;
  const rule = r.string("rule") ?? null;
  const syntax = r.string("ruleSyntax");
  const priority = r.int("priority");
  const service = r.string("service") ?? null;
  const middlewares = r.strings("middlewares") ?? [];
  let tls: RouterTls | null = null;
  const t = r.map("tls");
  if (t) {
    const domains: RouterTls["domains"] = [];
    const list = t.seq("domains");
    if (list) {
      for (const d of mapItems(list, diags)) {
        domains.push({ main: d.string("main") ?? null, sans: d.strings("sans") ?? [], pos: d.pos });
        d.finish(["main", "sans"]);
      }
    }
    tls = {
      pos: t.pos,
      passthrough: t.bool("passthrough")?.value ?? false,
      options: t.string("options") ?? null,
      certResolver: t.string("certResolver") ?? null,
      domains,
    };
    t.finish(["passthrough", "options", "certResolver", "domains"]);
  }
  r.finish(["entryPoints", "rule", "ruleSyntax", "priority", "service", "middlewares", "tls"]);
  if (!checkName(name, keyPos, r.path, diags)) return null;
  if (syntax && syntax.value !== "v2" && syntax.value !== "v3") {
    diags.warning(
      "unknown-rule-syntax",
      `ruleSyntax "${syntax.value}" is neither "v2" nor "v3"; Traefik treats it as v3`,
      syntax.pos,
      r.sub("ruleSyntax"),
      'Remove ruleSyntax or set it to "v3".',
    );
  }
  const ruleSyntax = syntax ? (syntax.value === "v2" ? "v2" : "v3") : null;
  return {
    name,
    pos: keyPos,
    path: r.path,
    entryPoints,
    rule,
    ruleSyntax,
    priority: priority && priority.value !== 0 ? priority : null,
    service,
    middlewares,
    tls,
  };
}

function readHealthCheck(r: MapReader, diags: Diagnostics): HealthCheck {
  const interval = r.duration("interval")?.value ?? 30_000;
  const timeout = r.duration("timeout");
  const port = r.int("port");
  const hc: HealthCheck = {
    pos: r.pos,
    port: port?.value ?? null,
    ...(port ? { portPos: port.pos } : {}),
    send: r.string("send")?.value ?? "",
    expect: r.string("expect")?.value ?? "",
    intervalMs: interval > 0 ? interval : 30_000,
    unhealthyIntervalMs: r.duration("unhealthyInterval")?.value ?? interval,
    timeoutMs: timeout && timeout.value > 0 ? timeout.value : 5_000,
  };
  if (timeout && timeout.value <= 0) {
    diags.warning(
      "healthcheck-timeout",
      `${r.sub("timeout")} must be positive; Traefik would fail every check with it, tlsroute uses 5s`,
      timeout.pos,
      r.sub("timeout"),
    );
  }
  r.finish(["port", "send", "expect", "interval", "unhealthyInterval", "timeout"]);
  return hc;
}

function readService(name: string, r: MapReader, keyPos: SourcePos, diags: Diagnostics): Service | null {
  let loadBalancer: LoadBalancer | null = null;
  let weighted: WeightedService | null = null;
  const lb = r.map("loadBalancer");
  if (lb) {
    const servers: LoadBalancer["servers"] = [];
    const list = lb.seq("servers");
    if (list) {
      for (const s of mapItems(list, diags)) {
        const address = s.string("address");
        const tls = s.bool("tls")?.value ?? false;
        s.finish(["address", "tls"]);
        if (!address) {
          diags.error(
            "missing-address",
            `${s.path} has no address`,
            s.pos,
            s.path,
            'Add address: "host:port".',
          );
          continue;
        }
        servers.push({ address, tls, pos: s.pos });
      }
    }
    const pp = lb.map("proxyProtocol");
    let proxyProtocolVersion: Located<number> | null = null;
    if (pp) {
      proxyProtocolVersion = pp.int("version") ?? { value: 2, pos: pp.pos };
      pp.finish(["version"]);
    }
    const delay = lb.int("terminationDelay");
    const hc = lb.map("healthCheck");
    loadBalancer = {
      pos: lb.pos,
      servers,
      serversTransport: lb.string("serversTransport") ?? null,
      proxyProtocolVersion,
      // Traefik documents milliseconds (and mistakenly applies nanoseconds); we apply what it documents.
      terminationDelayMs: delay ? delay.value : null,
      ...(delay ? { terminationDelayPos: delay.pos } : {}),
      healthCheck: hc ? readHealthCheck(hc, diags) : null,
    };
    lb.finish(["servers", "serversTransport", "proxyProtocol", "terminationDelay", "healthCheck"]);
  }
  const w = r.map("weighted");
  if (w) {
    const services: WeightedService["services"] = [];
    const list = w.seq("services");
    if (list) {
      for (const s of mapItems(list, diags)) {
        const childName = s.string("name");
        const weight = s.int("weight");
        s.finish(["name", "weight"]);
        if (!childName) {
          diags.error("missing-service", `${s.path} has no name`, s.pos, s.path, "Add name: <service>.");
          continue;
        }
        if (weight && weight.value < 0) {
          diags.error("negative-weight", `${s.sub("weight")} is negative`, weight.pos, s.sub("weight"));
        }
        services.push({ name: childName, weight: weight?.value ?? 1, pos: s.pos });
      }
    }
    const hc = w.map("healthCheck");
    hc?.finish([]);
    weighted = { pos: w.pos, services, healthCheck: hc !== undefined };
    w.finish(["services", "healthCheck"]);
  }
  r.finish(["loadBalancer", "weighted"]);
  if (!checkName(name, keyPos, r.path, diags)) return null;
  return { name, pos: keyPos, path: r.path, loadBalancer, weighted };
}

function readMiddleware(
  name: string,
  r: MapReader,
  keyPos: SourcePos,
  diags: Diagnostics,
): Middleware | null {
  const allow = r.map("ipAllowList");
  const white = r.map("ipWhiteList");
  const inflight = r.map("inFlightConn");
  const base = { name, pos: keyPos, path: r.path };
  let result: Middleware = { ...base, type: "none" };
  const declared = [allow, white, inflight].filter((x) => x !== undefined);
  if (declared.length > 1) {
    diags.error(
      "middleware-multi-type",
      `middleware "${name}" declares ${declared.length} types; Traefik silently keeps only one`,
      keyPos,
      r.path,
      "Declare one middleware per type and list them both on the router.",
    );
  }
  if (inflight) {
    const amount = inflight.int("amount");
    result = {
      ...base,
      type: "inFlightConn",
      amount: amount?.value ?? 0,
      ...(amount ? { amountPos: amount.pos } : {}),
    };
    inflight.finish(["amount"]);
  }
  if (white) {
    result = {
      ...base,
      type: "ipAllowList",
      sourceRange: white.strings("sourceRange") ?? [],
      ...sourceRangeAt(white),
      deprecatedName: true,
    };
    white.finish(["sourceRange", "ipStrategy"]);
  }
  if (allow) {
    result = {
      ...base,
      type: "ipAllowList",
      sourceRange: allow.strings("sourceRange") ?? [],
      ...sourceRangeAt(allow),
      deprecatedName: false,
    };
    allow.finish(["sourceRange"]);
  }
  r.finish(["ipAllowList", "ipWhiteList", "inFlightConn"]);
  if (!checkName(name, keyPos, r.path, diags)) return null;
  return result;
}

/** Position of a sourceRange value, so an empty list is reported where it is written. */
function sourceRangeAt(r: MapReader): { sourceRangePos?: SourcePos } {
  const entry = r.entry("sourceRange");
  return entry ? { sourceRangePos: entry.value.pos } : {};
}

function readCertificateFiles(r: MapReader, baseDir: string): CertificateFiles {
  return {
    pos: r.pos,
    path: r.path,
    certFile: r.string("certFile") ?? null,
    keyFile: r.string("keyFile") ?? null,
    baseDir,
  };
}

function readTransport(
  name: string,
  r: MapReader,
  keyPos: SourcePos,
  baseDir: string,
  diags: Diagnostics,
): ServersTransport {
  let tls: TransportTls | null = null;
  const t = r.map("tls");
  if (t) {
    const certificates: CertificateFiles[] = [];
    const certs = t.seq("certificates");
    if (certs) {
      for (const c of mapItems(certs, diags)) {
        certificates.push(readCertificateFiles(c, baseDir));
        c.finish(["certFile", "keyFile"]);
      }
    }
    const peerCertSANs: TransportTls["peerCertSANs"] = [];
    const sans = t.seq("peerCertSANs");
    if (sans) {
      for (const s of mapItems(sans, diags)) {
        const type = s.string("type");
        const value = s.string("value");
        s.finish(["type", "value"]);
        if (type && type.value !== "DNSName" && type.value !== "URI") {
          diags.error(
            "invalid-peer-san-type",
            `${s.sub("type")} must be DNSName or URI, got "${type.value}"`,
            type.pos,
            s.sub("type"),
          );
          continue;
        }
        if (type && value) peerCertSANs.push({ type: type.value as "DNSName" | "URI", value: value.value });
      }
    }
    const uri = t.string("peerCertURI");
    if (uri) peerCertSANs.push({ type: "URI", value: uri.value });
    const spiffe = t.entry("spiffe");
    if (spiffe) {
      diags.error(
        "spiffe-unsupported",
        "SPIFFE backend authentication is not supported by tlsroute",
        spiffe.keyPos,
        t.sub("spiffe"),
        "Use rootCAs and certificates for backend mTLS.",
      );
    }
    tls = {
      pos: t.pos,
      serverName: t.string("serverName")?.value ?? "",
      insecureSkipVerify: t.bool("insecureSkipVerify")?.value ?? false,
      rootCAs: t.strings("rootCAs") ?? [],
      certificates,
      peerCertSANs,
    };
    t.finish([
      "serverName",
      "insecureSkipVerify",
      "rootCAs",
      "certificates",
      "peerCertSANs",
      "peerCertURI",
      "spiffe",
    ]);
  }
  let proxyProtocolVersion: Located<number> | null = null;
  const pp = r.map("proxyProtocol");
  if (pp) {
    proxyProtocolVersion = pp.int("version") ?? { value: 2, pos: pp.pos };
    pp.finish(["version"]);
  }
  const dialTimeout = r.duration("dialTimeout");
  const transport: ServersTransport = {
    name,
    pos: keyPos,
    path: r.path,
    dialTimeoutMs: dialTimeout?.value ?? DEFAULT_DIAL_TIMEOUT_MS,
    ...(dialTimeout ? { dialTimeoutPos: dialTimeout.pos } : {}),
    dialKeepAliveMs: r.duration("dialKeepAlive")?.value ?? DEFAULT_DIAL_KEEPALIVE_MS,
    terminationDelayMs: r.duration("terminationDelay")?.value ?? DEFAULT_TERMINATION_DELAY_MS,
    proxyProtocolVersion,
    tls,
  };
  r.finish(["dialTimeout", "dialKeepAlive", "terminationDelay", "proxyProtocol", "tls"]);
  return transport;
}

function readTls(r: MapReader, baseDir: string, model: Model, diags: Diagnostics): void {
  const certs = r.seq("certificates");
  if (certs) {
    for (const c of mapItems(certs, diags)) {
      const cert: StoreCertificateConfig = {
        ...readCertificateFiles(c, baseDir),
        stores: c.strings("stores") ?? [],
      };
      c.finish(["certFile", "keyFile", "stores"]);
      model.certificates.push(cert);
    }
  }
  for (const { name, reader, keyPos } of r.namedMaps("options")) {
    if (!checkName(name, keyPos, reader.path, diags)) continue;
    model.tlsOptions.set(name, readTlsOptions(name, reader, keyPos, baseDir));
  }
  for (const { name, reader, keyPos } of r.namedMaps("stores")) {
    if (!checkName(name, keyPos, reader.path, diags)) continue;
    model.tlsStores.set(name, readStore(name, reader, keyPos, baseDir, diags));
  }
  r.finish(["certificates", "options", "stores"]);
}

function readTlsOptions(name: string, r: MapReader, keyPos: SourcePos, baseDir: string): TlsOptions {
  let clientAuth: TlsOptions["clientAuth"] = null;
  const ca = r.map("clientAuth");
  if (ca) {
    clientAuth = {
      pos: ca.pos,
      caFiles: ca.strings("caFiles") ?? [],
      clientAuthType: ca.string("clientAuthType") ?? null,
      baseDir,
    };
    ca.finish(["caFiles", "clientAuthType"]);
  }
  const options: TlsOptions = {
    name,
    pos: keyPos,
    path: r.path,
    builtIn: false,
    minVersion: r.string("minVersion") ?? null,
    maxVersion: r.string("maxVersion") ?? null,
    cipherSuites: r.strings("cipherSuites") ?? null,
    curvePreferences: r.strings("curvePreferences") ?? null,
    clientAuth,
    sniStrict: r.bool("sniStrict")?.value ?? false,
    alpnProtocols: r.strings("alpnProtocols") ?? null,
    disableSessionTickets: r.bool("disableSessionTickets")?.value ?? false,
    preferServerCipherSuites: r.bool("preferServerCipherSuites") ?? null,
  };
  r.finish([
    "minVersion",
    "maxVersion",
    "cipherSuites",
    "curvePreferences",
    "clientAuth",
    "sniStrict",
    "alpnProtocols",
    "disableSessionTickets",
    "preferServerCipherSuites",
  ]);
  return options;
}

function readStore(
  name: string,
  r: MapReader,
  keyPos: SourcePos,
  baseDir: string,
  diags: Diagnostics,
): TlsStore {
  let defaultCertificate: CertificateFiles | null = null;
  const dc = r.map("defaultCertificate");
  if (dc) {
    defaultCertificate = readCertificateFiles(dc, baseDir);
    dc.finish(["certFile", "keyFile"]);
  }
  let defaultGeneratedCert: TlsStore["defaultGeneratedCert"] = null;
  const gen = r.map("defaultGeneratedCert");
  if (gen) {
    const domain = gen.map("domain");
    defaultGeneratedCert = {
      resolver: gen.string("resolver")?.value ?? "",
      main: domain?.string("main")?.value ?? "",
      sans: (domain?.strings("sans") ?? []).map((s) => s.value),
      pos: gen.pos,
    };
    domain?.finish(["main", "sans"]);
    gen.finish(["resolver", "domain"]);
  }
  r.finish(["defaultCertificate", "defaultGeneratedCert"]);
  void diags;
  return { name, pos: keyPos, path: r.path, defaultCertificate, defaultGeneratedCert };
}

const CHALLENGES = ["tlsChallenge", "httpChallenge", "dnsChallenge"] as const;

/** Traefik ACME keys that are valid but have no meaning for tlsroute yet: accepted, not reported. */
const ACME_KEYS_NOT_USED = [
  "preferredChain",
  "eab",
  "caSystemCertPool",
  "caServerName",
  "clientTimeout",
  "clientResponseHeaderTimeout",
  "profile",
  "emailAddresses",
  "disableCommonName",
];

function readResolver(
  name: string,
  r: MapReader,
  keyPos: SourcePos,
  baseDir: string,
  diags: Diagnostics,
): AcmeResolver {
  const acme = r.map("acme");
  const resolver: AcmeResolver = {
    name,
    pos: keyPos,
    path: r.path,
    email: null,
    storage: null,
    caServer: null,
    keyType: null,
    certificatesDurationHours: 0,
    challenge: null,
    caCertificates: [],
    baseDir,
  };
  if (r.entry("tailscale")) {
    diags.error(
      "resolver-unsupported",
      `resolver "${name}" uses Tailscale, which tlsroute does not support`,
      keyPos,
      r.path,
      "Use an ACME resolver.",
    );
  }
  r.finish(["acme", "tailscale"]);
  if (!acme) {
    if (!r.has("tailscale")) {
      diags.error(
        "resolver-no-acme",
        `resolver "${name}" has no acme section`,
        keyPos,
        r.path,
        "Add acme: { email: ..., storage: acme.json, tlsChallenge: {} }.",
      );
    }
    return resolver;
  }
  resolver.acmePos = acme.pos;
  resolver.email = acme.string("email") ?? null;
  resolver.storage = acme.string("storage") ?? null;
  resolver.caServer = acme.string("caServer") ?? null;
  resolver.keyType = acme.string("keyType") ?? null;
  resolver.certificatesDurationHours = acme.int("certificatesDuration")?.value ?? 0;
  resolver.caCertificates = acme.strings("caCertificates") ?? [];
  for (const challenge of CHALLENGES) {
    const entry = acme.entry(challenge);
    if (entry && !resolver.challenge) resolver.challenge = { value: challenge, pos: entry.keyPos };
  }
  for (const key of ACME_KEYS_NOT_USED) acme.entry(key);
  acme.finish([
    "email",
    "storage",
    "caServer",
    "keyType",
    "certificatesDuration",
    "caCertificates",
    ...CHALLENGES,
    ...ACME_KEYS_NOT_USED,
  ]);
  return resolver;
}
