/**
 * The services of one configuration, ready for `serve`: for a service name, which servers to try and
 * in which order; for the health checker, which servers to probe and how; and the status of every
 * server, propagated to weighted parents the way Traefik does.
 *
 * Built once per configuration (reload builds a new directory; connections keep the one they started
 * with). Key material named by servers transports (rootCAs, client certificates) is read here, once.
 */
import path from "node:path";
import type { HealthCheck, LoadBalancer, Located, Model, ServersTransport } from "../config/model.ts";
import {
  DEFAULT_DIAL_KEEPALIVE_MS,
  DEFAULT_DIAL_TIMEOUT_MS,
  DEFAULT_TERMINATION_DELAY_MS,
} from "../config/model.ts";
import { resolveRef } from "../config/refs.ts";
import { WHOAMI_INTERNAL } from "../lint/services.ts";
import { checkKeyMatches, parseCaBundle } from "../tls/certificate.ts";
import { readPem, resolvePemSource } from "../tls/pem.ts";
import { WeightedRoundRobin } from "./balancer.ts";
import { type ResolvedTls, type ResolvedTransport, splitHostPort } from "./dial.ts";

export interface ServerTarget {
  /** `host:port`, or `whoami@internal` (answered by the connection pipeline, never dialled). */
  address: string;
  tls: boolean;
  transport: ResolvedTransport;
  /** The load balancer (leaf service) the server belongs to. */
  service: string;
}

/** Reads a FileOrContent value (path relative to `baseDir`, or inline PEM); null when unreadable. */
export type ReadPem = (value: string, baseDir: string) => string | null;

/** `ReadPem` against the real file system. */
export function readPemFromDisk(value: string, baseDir: string): string | null {
  const text = readPem(resolvePemSource(value, baseDir));
  return text.ok ? text.value : null;
}

export interface DirectoryOptions {
  /**
   * Shuffle each load balancer's servers once, as Traefik does, so that instances do not all start
   * their round robin on the same server. Default true; tests turn it off for a known order.
   */
  shuffle?: boolean;
  random?: () => number;
}

export interface HealthTarget {
  service: string;
  server: ServerTarget;
  check: HealthCheck;
}

interface LoadBalancerNode {
  kind: "loadBalancer";
  name: string;
  servers: ServerTarget[];
  balancer: WeightedRoundRobin<ServerTarget>;
  check: HealthCheck | null;
  /** Weighted services (with health check) to tell when this one flips between up and down. */
  parents: Set<string>;
}

interface WeightedNode {
  kind: "weighted";
  name: string;
  /** The children that exist, in configuration order. */
  children: string[];
  balancer: WeightedRoundRobin<string>;
  healthCheck: boolean;
  parents: Set<string>;
}

type ServiceNode = LoadBalancerNode | WeightedNode;

/** The transport of services that name none, when the static configuration declares none either. */
const BUILT_IN_TRANSPORT: ResolvedTransport = {
  name: "default@internal",
  dialTimeoutMs: DEFAULT_DIAL_TIMEOUT_MS,
  dialKeepAliveMs: DEFAULT_DIAL_KEEPALIVE_MS,
  terminationDelayMs: DEFAULT_TERMINATION_DELAY_MS,
  proxyProtocolVersion: null,
  tls: null,
};

/** Weighted services nest; a loop is a validation error, this bound keeps serve safe regardless. */
const MAX_DEPTH = 32;

function proxyVersion(version: Located<number> | null): 1 | 2 | null {
  return version?.value === 1 || version?.value === 2 ? version.value : null;
}

function shuffled<T>(items: T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export class ServiceDirectory {
  private readonly nodes = new Map<string, ServiceNode>();
  /** Things that could not be honoured while building (unknown transport, unreadable CA, ...). */
  readonly problems: string[] = [];

  private constructor() {}

  static build(
    model: Model,
    readPem: ReadPem = readPemFromDisk,
    options: DirectoryOptions = {},
  ): ServiceDirectory {
    const directory = new ServiceDirectory();
    const transports = new TransportResolver(model, readPem, directory.problems);
    const shuffle = options.shuffle ?? true;
    const random = options.random ?? Math.random;
    for (const service of model.services.values()) {
      if (service.loadBalancer) {
        directory.nodes.set(
          service.name,
          directory.buildLoadBalancer(service.name, service.loadBalancer, transports, shuffle, random),
        );
      } else if (service.weighted) {
        const entries: { name: string; weight: number; item: string }[] = [];
        for (const child of service.weighted.services) {
          const ref = resolveRef(child.name.value);
          if (!ref.ok || !model.services.has(ref.name)) {
            directory.problems.push(
              `weighted service "${service.name}": child "${child.name.value}" does not exist and is left out`,
            );
            continue;
          }
          entries.push({ name: ref.name, weight: child.weight, item: ref.name });
        }
        directory.nodes.set(service.name, {
          kind: "weighted",
          name: service.name,
          children: entries.map((entry) => entry.name),
          balancer: new WeightedRoundRobin(entries),
          healthCheck: service.weighted.healthCheck,
          parents: new Set(),
        });
      }
    }
    // Parents learn about their children only when they enable healthCheck (Traefik's rule).
    for (const node of directory.nodes.values()) {
      if (node.kind !== "weighted" || !node.healthCheck) continue;
      for (const child of node.balancer.list()) directory.nodes.get(child.name)?.parents.add(node.name);
    }
    return directory;
  }

  private buildLoadBalancer(
    name: string,
    lb: LoadBalancer,
    transports: TransportResolver,
    shuffle: boolean,
    random: () => number,
  ): LoadBalancerNode {
    const transport = transports.forLoadBalancer(name, lb);
    const servers: ServerTarget[] = [];
    for (const spec of lb.servers) {
      const address = spec.address.value;
      if (address !== WHOAMI_INTERNAL && !splitHostPort(address)) {
        this.problems.push(`service "${name}": server address "${address}" is not host:port and is skipped`);
        continue;
      }
      servers.push({ address, tls: spec.tls, transport, service: name });
    }
    const ordered = shuffle ? shuffled(servers, random) : servers;
    return {
      kind: "loadBalancer",
      name,
      servers: ordered,
      // Named by address: servers with equal addresses share one health status.
      balancer: new WeightedRoundRobin(ordered.map((s) => ({ name: s.address, weight: 1, item: s }))),
      check: lb.healthCheck,
      parents: new Set(),
    };
  }

  /**
   * Servers to try for one connection: the balancer's pick first, then the other up servers of the
   * same load balancer in round-robin order (each address once), for failover when a dial fails.
   * [] when nothing is available (unknown service, no servers, all down, all weights 0).
   */
  candidates(service: string): ServerTarget[] {
    const ref = resolveRef(service);
    return ref.ok ? this.candidatesOf(ref.name, 0) : [];
  }

  /**
   * Whether every server the service can pick is dialled as plain TCP (no TLS to the backend, not
   * whoami@internal). Known without picking, which would move the round-robin.
   */
  onlyPlainServers(service: string): boolean {
    const ref = resolveRef(service);
    return ref.ok && this.plainOf(ref.name, 0);
  }

  private plainOf(name: string, depth: number): boolean {
    const node = this.nodes.get(name);
    if (!node || depth > MAX_DEPTH) return false;
    if (node.kind === "weighted") return node.children.every((child) => this.plainOf(child, depth + 1));
    return node.servers.every((server) => !server.tls && server.address !== WHOAMI_INTERNAL);
  }

  private candidatesOf(name: string, depth: number): ServerTarget[] {
    const node = this.nodes.get(name);
    if (!node || depth > MAX_DEPTH) return [];
    if (node.kind === "weighted") {
      // One pick, as Traefik: a child with nothing available closes the connection, unless the
      // parent's health check took that child out of the rotation.
      const child = node.balancer.pick();
      return child === null ? [] : this.candidatesOf(child, depth + 1);
    }
    const first = node.balancer.pick();
    if (first === null) return [];
    const start = node.servers.indexOf(first);
    const out = [first];
    const seen = new Set([first.address]);
    for (let i = 1; i < node.servers.length; i++) {
      const server = node.servers[(start + i) % node.servers.length]!;
      if (seen.has(server.address) || !node.balancer.isUp(server.address)) continue;
      seen.add(server.address);
      out.push(server);
    }
    return out;
  }

  /** Every server of every load balancer with a health check, each address once per service. */
  healthTargets(): HealthTarget[] {
    const out: HealthTarget[] = [];
    for (const node of this.nodes.values()) {
      if (node.kind !== "loadBalancer" || !node.check) continue;
      const seen = new Set<string>();
      for (const server of node.servers) {
        // The built-in target has nothing to probe and is always up.
        if (server.address === WHOAMI_INTERNAL || seen.has(server.address)) continue;
        seen.add(server.address);
        out.push({ service: node.name, server, check: node.check });
      }
    }
    return out;
  }

  /**
   * Marks a server up or down in its load balancer. When that flips the load balancer between "some
   * server up" and "none", weighted parents with a health check are told, and so on upwards.
   */
  setServerStatus(service: string, address: string, up: boolean): void {
    const node = this.node(service);
    if (node?.kind !== "loadBalancer") return;
    this.updateStatus(node, address, up, 0);
  }

  private updateStatus(node: ServiceNode, member: string, up: boolean, depth: number): void {
    const wasUp = node.balancer.upCount > 0;
    node.balancer.setStatus(member, up);
    const isUp = node.balancer.upCount > 0;
    if (wasUp === isUp || depth > MAX_DEPTH) return;
    for (const parentName of node.parents) {
      const parent = this.nodes.get(parentName);
      if (parent) this.updateStatus(parent, node.name, isUp, depth + 1);
    }
  }

  /** Whether a server (load balancer member) or a child (weighted member) is currently up. */
  isUp(service: string, member: string): boolean {
    return this.node(service)?.balancer.isUp(member) ?? false;
  }

  /** Whether a service has anything to offer right now (some member up). */
  isServiceUp(service: string): boolean {
    const node = this.node(service);
    return node !== undefined && node.balancer.upCount > 0;
  }

  private node(service: string): ServiceNode | undefined {
    const ref = resolveRef(service);
    return ref.ok ? this.nodes.get(ref.name) : undefined;
  }
}

/** Turns model transports into dial settings, reading each transport's key material once. */
class TransportResolver {
  private readonly cache = new Map<string, ResolvedTransport>();

  constructor(
    private readonly model: Model,
    private readonly readPem: ReadPem,
    private readonly problems: string[],
  ) {}

  forLoadBalancer(service: string, lb: LoadBalancer): ResolvedTransport {
    if (lb.serversTransport) {
      const ref = resolveRef(lb.serversTransport.value);
      const declared = ref.ok ? this.model.serversTransports.get(ref.name) : undefined;
      if (ref.ok && declared) return this.resolve(declared.name, declared);
      this.problems.push(
        `service "${service}": servers transport "${lb.serversTransport.value}" does not exist; the default transport is used`,
      );
    }
    const base = this.model.defaultTransport
      ? this.resolve("default@internal", this.model.defaultTransport)
      : BUILT_IN_TRANSPORT;
    // The deprecated per-service fields apply only to services without a named transport.
    const version = proxyVersion(lb.proxyProtocolVersion);
    if (version === null && lb.terminationDelayMs === null) return base;
    return {
      ...base,
      ...(version !== null ? { proxyProtocolVersion: version } : {}),
      ...(lb.terminationDelayMs !== null ? { terminationDelayMs: lb.terminationDelayMs } : {}),
    };
  }

  private resolve(name: string, transport: ServersTransport): ResolvedTransport {
    const cached = this.cache.get(name);
    if (cached) return cached;
    const resolved: ResolvedTransport = {
      name,
      dialTimeoutMs: transport.dialTimeoutMs,
      dialKeepAliveMs: transport.dialKeepAliveMs,
      terminationDelayMs: transport.terminationDelayMs,
      proxyProtocolVersion: proxyVersion(transport.proxyProtocolVersion),
      tls: this.resolveTls(name, transport),
    };
    this.cache.set(name, resolved);
    return resolved;
  }

  private resolveTls(name: string, transport: ServersTransport): ResolvedTls | null {
    const config = transport.tls;
    if (!config) return null;
    const ca: string[] = [];
    for (const value of config.rootCAs) {
      // rootCAs carry no base directory of their own: they are relative to the file that names them.
      const text = this.readPem(value.value, path.dirname(value.pos.file));
      const parsed = text === null ? null : parseCaBundle(text);
      if (text === null || !parsed?.ok) {
        this.problems.push(
          `servers transport "${name}": root CA "${value.value.slice(0, 80)}" is unusable and is skipped`,
        );
        continue;
      }
      ca.push(text);
    }
    const resolved: ResolvedTls = {
      serverName: config.serverName,
      insecureSkipVerify: config.insecureSkipVerify,
      ca,
      peerCertSANs: config.peerCertSANs.map((san) => ({ ...san })),
    };
    // Go offers the first certificate when the server's CA list does not narrow the choice; so do we.
    for (const files of config.certificates) {
      const cert = files.certFile ? this.readPem(files.certFile.value, files.baseDir) : null;
      const key = files.keyFile ? this.readPem(files.keyFile.value, files.baseDir) : null;
      if (cert !== null && key !== null && checkKeyMatches(cert, key).ok) {
        resolved.cert = cert;
        resolved.key = key;
        break;
      }
      this.problems.push(
        `servers transport "${name}": client certificate ${files.path} is unusable and is skipped`,
      );
    }
    return resolved;
  }
}
