/**
 * Checks on services, middlewares, transports and entry points: what Traefik refuses when it builds
 * them, plus the mistakes it accepts silently (a weighted loop, an allow-list that admits everyone).
 */
import type { Model, Service } from "../config/model.ts";
import type { Diagnostics } from "../config/reader.ts";
import { resolveRef } from "../config/refs.ts";
import { IpMatcher } from "../rules/index.ts";
import { closestName } from "../text/suggest.ts";

/** The built-in target that answers with a JSON line describing the connection. */
export const WHOAMI_INTERNAL = "whoami@internal";

export function lintServices(model: Model, diags: Diagnostics): void {
  for (const service of model.services.values()) lintService(service, model, diags);
  detectWeightedCycles(model, diags);
  lintMiddlewares(model, diags);
  lintTransports(model, diags);
  lintEntryPoints(model, diags);
  lintUnused(model, diags);
}

function lintService(service: Service, model: Model, diags: Diagnostics): void {
  const { loadBalancer: lb, weighted } = service;
  if (lb && weighted) {
    diags.error(
      "service-multi-type",
      `service "${service.name}" declares both loadBalancer and weighted; a service has exactly one type`,
      service.pos,
      service.path,
      "Declare two services and point a weighted service at the load balancer.",
    );
  } else if (!lb && !weighted) {
    diags.error(
      "service-no-type",
      `service "${service.name}" has no type: declare loadBalancer or weighted`,
      service.pos,
      service.path,
      'e.g. loadBalancer: { servers: [{ address: "127.0.0.1:5432" }] }',
    );
  }
  if (lb) {
    if (lb.servers.length === 0) {
      diags.warning(
        "service-no-servers",
        `service "${service.name}" has no servers: every connection routed to it is closed`,
        lb.pos,
        `${service.path}.loadBalancer.servers`,
      );
    }
    lb.servers.forEach((server, i) => {
      const address = server.address.value;
      if (address === WHOAMI_INTERNAL) return;
      if (!isHostPort(address)) {
        diags.error(
          "invalid-server-address",
          `server address "${address}" of service "${service.name}" is not host:port`,
          server.address.pos,
          `${service.path}.loadBalancer.servers[${i}].address`,
          `Write "10.0.0.5:5432", "db.internal:5432", "[::1]:5432", or "${WHOAMI_INTERNAL}" for the built-in echo target.`,
        );
      }
    });
    if (lb.serversTransport) {
      const ref = resolveRef(lb.serversTransport.value);
      if (!ref.ok) {
        diags.error(
          "unknown-provider",
          ref.message,
          lb.serversTransport.pos,
          `${service.path}.loadBalancer.serversTransport`,
          ref.hint,
        );
      } else if (!model.serversTransports.has(ref.name)) {
        const near = closestName(ref.name, model.serversTransports.keys());
        diags.error(
          "unknown-servers-transport",
          `service "${service.name}" uses servers transport "${ref.name}", which does not exist`,
          lb.serversTransport.pos,
          `${service.path}.loadBalancer.serversTransport`,
          near ? `Did you mean "${near}"?` : "Declare it under tcp.serversTransports.",
        );
      } else {
        const transport = model.serversTransports.get(ref.name)!;
        if (
          lb.servers.some((s) => s.tls) &&
          transport.tls &&
          !transport.tls.serverName &&
          !transport.tls.insecureSkipVerify
        ) {
          diags.error(
            "backend-tls-no-server-name",
            `service "${service.name}" dials servers with TLS, but transport "${ref.name}" sets neither serverName nor insecureSkipVerify, so the name to verify is unknown`,
            transport.tls.pos,
            `${transport.path}.tls`,
            "Set tls.serverName to the name on the backend certificate.",
          );
        }
      }
      for (const [field, present, at] of [
        ["proxyProtocol", lb.proxyProtocolVersion !== null, lb.proxyProtocolVersion?.pos],
        ["terminationDelay", lb.terminationDelayMs !== null, lb.terminationDelayPos],
      ] as const) {
        if (present) {
          diags.warning(
            "deprecated-ignored",
            `loadBalancer.${field} of service "${service.name}" is ignored because it names a serversTransport`,
            at ?? lb.pos,
            `${service.path}.loadBalancer.${field}`,
            `Set ${field} on the servers transport instead.`,
          );
        }
      }
    } else {
      if (lb.servers.some((s) => s.tls) && !model.defaultTransport?.tls) {
        diags.error(
          "backend-tls-no-transport",
          `service "${service.name}" dials a server with tls: true but names no serversTransport with a tls section`,
          lb.pos,
          `${service.path}.loadBalancer.serversTransport`,
          "Declare a servers transport with tls.serverName (and rootCAs) and reference it.",
        );
      }
      if (lb.proxyProtocolVersion || lb.terminationDelayMs !== null) {
        const field = lb.proxyProtocolVersion ? "proxyProtocol" : "terminationDelay";
        diags.warning(
          "deprecated-field",
          `service "${service.name}" uses loadBalancer.${field}, which Traefik deprecates`,
          (lb.proxyProtocolVersion ? lb.proxyProtocolVersion.pos : lb.terminationDelayPos) ?? lb.pos,
          `${service.path}.loadBalancer.${field}`,
          "Move it to a servers transport (tcp.serversTransports) and reference that.",
        );
      }
    }
    checkProxyVersion(lb.proxyProtocolVersion, `${service.path}.loadBalancer.proxyProtocol.version`, diags);
    if (lb.healthCheck?.port !== null && lb.healthCheck?.port !== undefined) {
      const port = lb.healthCheck.port;
      if (port < 1 || port > 65535) {
        diags.error(
          "invalid-port",
          `health check port ${port} is not 1-65535`,
          lb.healthCheck.portPos ?? lb.healthCheck.pos,
          `${service.path}.loadBalancer.healthCheck.port`,
        );
      }
    }
  }
  if (weighted) {
    if (weighted.services.length === 0) {
      diags.warning(
        "service-no-servers",
        `weighted service "${service.name}" lists no services: every connection routed to it is closed`,
        weighted.pos,
        `${service.path}.weighted.services`,
      );
    } else if (weighted.services.every((s) => s.weight === 0)) {
      diags.warning(
        "all-weights-zero",
        `every child of weighted service "${service.name}" has weight 0: every connection routed to it is closed`,
        weighted.pos,
        `${service.path}.weighted.services`,
      );
    }
    weighted.services.forEach((child, i) => {
      const ref = resolveRef(child.name.value);
      const path = `${service.path}.weighted.services[${i}].name`;
      if (!ref.ok) {
        diags.error("unknown-provider", ref.message, child.name.pos, path, ref.hint);
        return;
      }
      const target = model.services.get(ref.name);
      if (!target) {
        const near = closestName(ref.name, model.services.keys());
        diags.error(
          "unknown-service",
          `weighted service "${service.name}" uses service "${ref.name}", which does not exist`,
          child.name.pos,
          path,
          near ? `Did you mean "${near}"?` : "Declare it under tcp.services.",
        );
        return;
      }
      const childChecks = target.loadBalancer?.healthCheck ?? (target.weighted?.healthCheck ? true : null);
      if (weighted.healthCheck && !childChecks) {
        diags.error(
          "healthcheck-child",
          `weighted service "${service.name}" enables healthCheck, but its child "${ref.name}" has no health check`,
          child.name.pos,
          path,
          `Add a healthCheck to "${ref.name}", or remove healthCheck from "${service.name}".`,
        );
      }
    });
  }
}

function checkProxyVersion(
  version: { value: number; pos: import("../config/located.ts").SourcePos } | null,
  path: string,
  diags: Diagnostics,
): void {
  if (version && version.value !== 1 && version.value !== 2) {
    diags.error(
      "invalid-proxy-protocol-version",
      `unknown PROXY protocol version ${version.value}`,
      version.pos,
      path,
      "Use version 1 (text) or 2 (binary).",
    );
  }
}

export function isHostPort(address: string): boolean {
  const m = /^(\[[0-9a-fA-F:.%\w]+\]|[^:[\]\s]+):(\d{1,5})$/.exec(address);
  return m !== null && Number(m[2]) <= 65535;
}

function detectWeightedCycles(model: Model, diags: Diagnostics): void {
  const state = new Map<string, "visiting" | "done">();
  const children = (name: string): string[] =>
    (model.services.get(name)?.weighted?.services ?? [])
      .map((s) => resolveRef(s.name.value))
      .filter((r): r is { ok: true; name: string } => r.ok && model.services.has(r.name))
      .map((r) => r.name);
  const visit = (name: string, path: string[]): void => {
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting") {
      const cycle = [...path.slice(path.indexOf(name)), name];
      const service = model.services.get(name)!;
      diags.error(
        "service-cycle",
        `weighted services form a loop: ${cycle.join(" → ")}`,
        service.weighted?.pos ?? service.pos,
        `${service.path}.weighted`,
        "A weighted service must end in load balancers; break the loop.",
      );
      return;
    }
    state.set(name, "visiting");
    for (const child of children(name)) visit(child, [...path, name]);
    state.set(name, "done");
  };
  for (const name of model.services.keys()) visit(name, []);
}

function lintMiddlewares(model: Model, diags: Diagnostics): void {
  for (const mw of model.middlewares.values()) {
    if (mw.type === "none") {
      diags.error(
        "middleware-no-type",
        `middleware "${mw.name}" has no type`,
        mw.pos,
        mw.path,
        "TCP middlewares are ipAllowList, ipWhiteList (deprecated) and inFlightConn.",
      );
    } else if (mw.type === "ipAllowList") {
      if (mw.deprecatedName) {
        diags.warning(
          "deprecated-ipwhitelist",
          `middleware "${mw.name}" uses ipWhiteList, which Traefik deprecates`,
          mw.pos,
          `${mw.path}.ipWhiteList`,
          "Rename it to ipAllowList; it behaves the same.",
        );
      }
      const key = mw.deprecatedName ? "ipWhiteList" : "ipAllowList";
      if (mw.sourceRange.length === 0) {
        diags.error(
          "empty-source-range",
          `middleware "${mw.name}" has an empty sourceRange`,
          mw.sourceRangePos ?? mw.pos,
          `${mw.path}.${key}.sourceRange`,
          "List the IPs or CIDRs to allow.",
        );
        continue;
      }
      mw.sourceRange.forEach((range, i) => {
        const parsed = IpMatcher.parse([range.value]);
        if (!parsed.ok) {
          diags.error(
            "invalid-cidr",
            `"${range.value}" in middleware "${mw.name}" is not an IP or CIDR: ${parsed.message}`,
            range.pos,
            `${mw.path}.${key}.sourceRange[${i}]`,
            'Write an address ("10.0.0.1", "::1") or a CIDR ("10.0.0.0/8").',
          );
        } else if (/^(0\.0\.0\.0|::)\/0$/.test(range.value.trim())) {
          diags.warning(
            "allow-everyone",
            `"${range.value}" in middleware "${mw.name}" allows every client; the allow-list does nothing`,
            range.pos,
            `${mw.path}.${key}.sourceRange[${i}]`,
          );
        }
      });
    } else if (mw.amount <= 0) {
      diags.warning(
        "inflight-zero",
        `middleware "${mw.name}" allows ${mw.amount} connections per client IP: every connection is refused`,
        mw.amountPos ?? mw.pos,
        `${mw.path}.inFlightConn.amount`,
        "Set amount to the number of simultaneous connections allowed per client IP.",
      );
    }
  }
}

function lintTransports(model: Model, diags: Diagnostics): void {
  const transports = [...model.serversTransports.values()];
  if (model.defaultTransport) transports.push(model.defaultTransport);
  for (const t of transports) {
    checkProxyVersion(t.proxyProtocolVersion, `${t.path}.proxyProtocol.version`, diags);
    if (t.dialTimeoutMs < 0) {
      diags.error(
        "negative-duration",
        `dialTimeout of "${t.name}" is negative`,
        t.dialTimeoutPos ?? t.pos,
        `${t.path}.dialTimeout`,
      );
    }
  }
}

function lintEntryPoints(model: Model, diags: Diagnostics): void {
  const seen = new Map<string, string>();
  for (const ep of model.entryPoints.values()) {
    if (ep.readTimeoutMs <= 0) {
      diags.warning(
        "no-read-timeout",
        `entry point "${ep.name}" has no readTimeout: a client that connects and sends nothing holds a connection forever`,
        ep.readTimeoutPos ?? ep.pos,
        `${ep.path}.transport.respondingTimeouts.readTimeout`,
        "Keep a bound such as 60s (the default).",
      );
    }
    if (ep.proxyProtocol) {
      if (ep.proxyProtocol.insecure) {
        diags.warning(
          "proxy-protocol-insecure",
          `entry point "${ep.name}" trusts PROXY headers from every peer: any client can claim any address`,
          ep.proxyProtocol.insecurePos ?? ep.pos,
          `${ep.path}.proxyProtocol.insecure`,
          "List the load balancers in trustedIPs instead.",
        );
      }
      ep.proxyProtocol.trustedIPs.forEach((ip, i) => {
        const parsed = IpMatcher.parse([ip.value]);
        if (!parsed.ok) {
          diags.error(
            "invalid-cidr",
            `"${ip.value}" is not an IP or CIDR: ${parsed.message}`,
            ip.pos,
            `${ep.path}.proxyProtocol.trustedIPs[${i}]`,
            'Write an address ("10.0.0.1", "::1") or a CIDR ("10.0.0.0/8").',
          );
        }
      });
    }
    const key = `${ep.host || "*"}:${ep.port}`;
    const other = seen.get(key);
    if (other && ep.port !== 0) {
      diags.error(
        "duplicate-address",
        `entry points "${other}" and "${ep.name}" listen on the same address ${ep.address.value}`,
        ep.address.pos,
        `${ep.path}.address`,
        "Give each entry point its own port.",
      );
    }
    seen.set(key, ep.name);
  }
}

function lintUnused(model: Model, diags: Diagnostics): void {
  const usedServices = new Set<string>();
  const usedMiddlewares = new Set<string>();
  const usedTransports = new Set<string>();
  const usedOptions = new Set<string>(["default"]);
  const name = (ref: string) => {
    const r = resolveRef(ref);
    return r.ok ? r.name : ref;
  };
  for (const router of model.routers.values()) {
    if (router.service) usedServices.add(name(router.service.value));
    for (const m of router.middlewares) usedMiddlewares.add(name(m.value));
    if (router.tls?.options) usedOptions.add(name(router.tls.options.value));
  }
  for (const service of model.services.values()) {
    for (const child of service.weighted?.services ?? []) usedServices.add(name(child.name.value));
    if (service.loadBalancer?.serversTransport)
      usedTransports.add(name(service.loadBalancer.serversTransport.value));
  }
  const report = (
    what: string,
    user: string,
    items: Iterable<{ name: string; pos: import("../config/located.ts").SourcePos; path: string }>,
    used: Set<string>,
  ) => {
    for (const item of items) {
      if (used.has(item.name)) continue;
      diags.warning(
        `unused-${what.replace(/ /g, "-")}`,
        `${what} "${item.name}" is not used by any ${user}`,
        item.pos,
        item.path,
        "Remove it, or reference it.",
      );
    }
  };
  report("service", "router or weighted service", model.services.values(), usedServices);
  report("middleware", "router", model.middlewares.values(), usedMiddlewares);
  report("servers transport", "service", model.serversTransports.values(), usedTransports);
  report("tls options", "router", model.tlsOptions.values(), usedOptions);
}
