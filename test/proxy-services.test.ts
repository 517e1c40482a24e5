/**
 * Load balancing and health: Traefik's weighted round robin (with the vectors from its tests), the
 * service directory built from a real configuration file (transports, failover order, status
 * propagation through weighted services), and health checks against real backends on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { loadConfig } from "../src/config/load.ts";
import { WeightedRoundRobin } from "../src/proxy/balancer.ts";
import { HealthChecker, type HealthEvent, probeAddress } from "../src/proxy/healthcheck.ts";
import { ServiceDirectory } from "../src/proxy/services.ts";
import { makePki } from "./helpers/pki.ts";

const HOST = "127.0.0.1";
const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-services-"));
let fileCounter = 0;

function directoryFrom(yaml: string): ServiceDirectory {
  fileCounter += 1;
  const file = path.join(dir, `config-${fileCounter}.yml`);
  writeFileSync(file, yaml);
  const { model, diagnostics } = loadConfig([file]);
  const errors = diagnostics.filter((d) => d.severity === "error");
  assert.deepEqual(errors, []);
  return ServiceDirectory.build(model, undefined, { shuffle: false });
}

function counts<T>(picks: (T | null)[]): Map<T | null, number> {
  const out = new Map<T | null, number>();
  for (const p of picks) out.set(p, (out.get(p) ?? 0) + 1);
  return out;
}

function pickN<T>(wrr: WeightedRoundRobin<T>, n: number): (T | null)[] {
  return Array.from({ length: n }, () => wrr.pick());
}

function wrr(weights: Record<string, number>): WeightedRoundRobin<string> {
  return new WeightedRoundRobin(
    Object.entries(weights).map(([name, weight]) => ({ name, weight, item: name })),
  );
}

describe("WeightedRoundRobin (Traefik's vectors)", () => {
  it("1:1 over 4 picks → 2/2", () => {
    assert.deepEqual(
      counts(pickN(wrr({ h1: 1, h2: 1 }), 4)),
      new Map([
        ["h1", 2],
        ["h2", 2],
      ]),
    );
  });

  it("3:1 interleaves as A, A, A, B; 16 picks → 12/4", () => {
    const balancer = wrr({ h1: 3, h2: 1 });
    assert.deepEqual(pickN(balancer, 4), ["h1", "h1", "h1", "h2"]);
    assert.deepEqual(
      counts(pickN(wrr({ h1: 3, h2: 1 }), 16)),
      new Map([
        ["h1", 12],
        ["h2", 4],
      ]),
    );
  });

  it("a zero weight is never picked; all zero → nothing", () => {
    assert.deepEqual(counts(pickN(wrr({ h1: 3, h2: 0 }), 16)), new Map([["h1", 16]]));
    assert.deepEqual(pickN(wrr({ h1: 0, h2: 0, h3: 0 }), 10), Array(10).fill(null));
  });

  it("down servers are skipped, and come back", () => {
    const balancer = wrr({ h1: 1, h2: 1 });
    balancer.setStatus("h2", false);
    assert.deepEqual(pickN(balancer, 3), ["h1", "h1", "h1"]);
    assert.equal(balancer.upCount, 1);
    balancer.setStatus("h2", true);
    assert.deepEqual(
      counts(pickN(balancer, 2)),
      new Map([
        ["h1", 1],
        ["h2", 1],
      ]),
    );
    balancer.setStatus("h1", false);
    balancer.setStatus("h2", false);
    assert.equal(balancer.pick(), null);
    assert.equal(balancer.upCount, 0);
  });

  it("answers null where Traefik would spin: only zero-weight entries are up", () => {
    const balancer = wrr({ h1: 0, h2: 2 });
    balancer.setStatus("h2", false);
    assert.equal(balancer.pick(), null);
    assert.equal(balancer.available, false);
  });

  it("no entries → nothing", () => {
    assert.equal(new WeightedRoundRobin<string>([]).pick(), null);
  });
});

describe("ServiceDirectory", () => {
  it("candidates: the pick first, then the other up servers in round-robin order, each address once", () => {
    const directory = directoryFrom(`
tcp:
  services:
    app:
      loadBalancer:
        servers:
          - address: "127.0.0.1:1001"
          - address: "127.0.0.1:1002"
          - address: "127.0.0.1:1003"
          - address: "127.0.0.1:1001"
`);
    const order = () => directory.candidates("app").map((t) => t.address.slice(-4));
    assert.deepEqual(order(), ["1001", "1002", "1003"]);
    assert.deepEqual(order(), ["1002", "1003", "1001"]);
    assert.deepEqual(order(), ["1003", "1001", "1002"]);
    directory.setServerStatus("app", "127.0.0.1:1002", false);
    const picks = [order(), order(), order()];
    for (const list of picks) assert.ok(!list.includes("1002"));
    assert.deepEqual(
      picks.map((l) => l.length),
      [2, 2, 2],
    );
    // The @file suffix names the same service.
    assert.equal(directory.candidates("app@file").length, 2);
    assert.deepEqual(directory.candidates("nope"), []);
    assert.deepEqual(directory.candidates("app@docker"), []);
  });

  it("nothing available → no candidates", () => {
    const directory = directoryFrom(`
tcp:
  services:
    empty: { loadBalancer: { servers: [] } }
    zero: { weighted: { services: [{ name: empty, weight: 0 }] } }
    one: { loadBalancer: { servers: [{ address: "127.0.0.1:1" }] } }
`);
    assert.deepEqual(directory.candidates("empty"), []);
    assert.deepEqual(directory.candidates("zero"), []);
    directory.setServerStatus("one", "127.0.0.1:1", false);
    assert.deepEqual(directory.candidates("one"), []);
  });

  it("keeps whoami@internal as a target", () => {
    const directory = directoryFrom(`
tcp:
  services:
    debug: { loadBalancer: { servers: [{ address: "whoami@internal" }] } }
`);
    assert.deepEqual(
      directory.candidates("debug").map((t) => [t.address, t.service]),
      [["whoami@internal", "debug"]],
    );
  });

  it("weighted services follow their weights down to the servers", () => {
    const directory = directoryFrom(`
tcp:
  services:
    split:
      weighted:
        services: [{ name: a, weight: 3 }, { name: b@file, weight: 1 }]
    a: { loadBalancer: { servers: [{ address: "127.0.0.1:2001" }] } }
    b: { loadBalancer: { servers: [{ address: "127.0.0.1:2002" }] } }
`);
    const picks = Array.from({ length: 8 }, () => directory.candidates("split")[0]?.service ?? null);
    assert.deepEqual(picks, ["a", "a", "a", "b", "a", "a", "a", "b"]);
  });

  describe("status propagation through nested weighted services (Traefik's vector)", () => {
    const config = (parentCheck: boolean) => `
tcp:
  services:
    root:
      weighted:
        services: [{ name: c1, weight: 1 }, { name: c2, weight: 1 }]
        ${parentCheck ? "healthCheck: {}" : ""}
    c1:
      loadBalancer:
        servers: [{ address: "127.0.0.1:3001" }, { address: "127.0.0.1:3002" }]
        healthCheck: {}
    c2:
      loadBalancer:
        servers: [{ address: "127.0.0.1:3003" }, { address: "127.0.0.1:3004" }]
        healthCheck: {}
`;
    const eight = (directory: ServiceDirectory) => {
      const picks = Array.from(
        { length: 8 },
        () => directory.candidates("root")[0]?.address.slice(-4) ?? null,
      );
      const c = counts(picks);
      return ["3001", "3002", "3003", "3004", null].map((k) => c.get(k) ?? 0);
    };

    it("2/2/2/2, then one leaf down → 2/2/4/0, then its sibling too → 4/4/0/0, and back", () => {
      const directory = directoryFrom(config(true));
      assert.deepEqual(eight(directory), [2, 2, 2, 2, 0]);
      directory.setServerStatus("c2", "127.0.0.1:3004", false);
      assert.deepEqual(eight(directory), [2, 2, 4, 0, 0]);
      directory.setServerStatus("c2", "127.0.0.1:3003", false);
      assert.equal(directory.isServiceUp("c2"), false);
      assert.equal(directory.isUp("root", "c2"), false);
      assert.deepEqual(eight(directory), [4, 4, 0, 0, 0]);
      directory.setServerStatus("c2", "127.0.0.1:3003", true);
      assert.equal(directory.isUp("root", "c2"), true);
      assert.deepEqual(eight(directory), [2, 2, 4, 0, 0]);
    });

    it("without healthCheck on the parent, a down child still gets picked (and has nothing)", () => {
      const directory = directoryFrom(config(false));
      directory.setServerStatus("c2", "127.0.0.1:3003", false);
      directory.setServerStatus("c2", "127.0.0.1:3004", false);
      assert.deepEqual(eight(directory), [2, 2, 0, 0, 4]);
    });
  });

  describe("transports", () => {
    const pki = makePki(path.join(dir, "pki"));
    const ca = pki.ca("Transport CA");
    const client = pki.leaf({ ca, cn: "client" });

    it("resolves named transports, the static default and the deprecated per-service fields", () => {
      writeFileSync(path.join(dir, "ca.pem"), ca.certPem);
      const directory = directoryFrom(`
tcpServersTransport:
  dialTimeout: 7s
  terminationDelay: 250ms
tcp:
  serversTransports:
    secure:
      dialTimeout: 3s
      dialKeepAlive: 0s
      terminationDelay: -1s
      proxyProtocol: { version: 1 }
      tls:
        serverName: db.internal
        rootCAs: [ca.pem, "not-there.pem"]
        certificates: [{ certFile: ${JSON.stringify(client.certFile)}, keyFile: ${JSON.stringify(client.keyFile)} }]
        peerCertSANs: [{ type: URI, value: "spiffe://x/db" }]
  services:
    named:
      loadBalancer:
        serversTransport: secure
        servers: [{ address: "127.0.0.1:4001", tls: true }]
    plain:
      loadBalancer:
        servers: [{ address: "127.0.0.1:4002" }]
    deprecated:
      loadBalancer:
        proxyProtocol: {}
        terminationDelay: 50
        servers: [{ address: "127.0.0.1:4003" }]
`);
      const named = directory.candidates("named")[0]!;
      assert.equal(named.tls, true);
      assert.equal(named.transport.name, "secure");
      assert.equal(named.transport.dialTimeoutMs, 3_000);
      assert.equal(named.transport.dialKeepAliveMs, 0);
      assert.equal(named.transport.terminationDelayMs, -1_000);
      assert.equal(named.transport.proxyProtocolVersion, 1);
      assert.equal(named.transport.tls?.serverName, "db.internal");
      assert.deepEqual(named.transport.tls?.ca, [ca.certPem]);
      assert.equal(named.transport.tls?.cert, client.certPem);
      assert.equal(named.transport.tls?.key, client.keyPem);
      assert.deepEqual(named.transport.tls?.peerCertSANs, [{ type: "URI", value: "spiffe://x/db" }]);
      assert.equal(directory.problems.length, 1, directory.problems.join("\n"));
      assert.match(directory.problems[0]!, /not-there\.pem/);

      const plain = directory.candidates("plain")[0]!;
      assert.equal(plain.transport.name, "default@internal");
      assert.equal(plain.transport.dialTimeoutMs, 7_000);
      assert.equal(plain.transport.terminationDelayMs, 250);
      assert.equal(plain.transport.proxyProtocolVersion, null);

      const deprecated = directory.candidates("deprecated")[0]!;
      assert.equal(deprecated.transport.proxyProtocolVersion, 2);
      assert.equal(deprecated.transport.terminationDelayMs, 50);
      assert.equal(deprecated.transport.dialTimeoutMs, 7_000);
    });

    it("without a static transport, services get 30s dial and 100ms terminationDelay", () => {
      const directory = directoryFrom(`
tcp:
  services:
    plain: { loadBalancer: { servers: [{ address: "127.0.0.1:4002" }] } }
`);
      const t = directory.candidates("plain")[0]!.transport;
      assert.deepEqual(
        [t.dialTimeoutMs, t.dialKeepAliveMs, t.terminationDelayMs, t.proxyProtocolVersion, t.tls],
        [30_000, 15_000, 100, null, null],
      );
    });
  });

  it("health targets: servers of load balancers with a check, each address once, whoami left out", () => {
    const directory = directoryFrom(`
tcp:
  services:
    checked:
      loadBalancer:
        servers:
          - address: "127.0.0.1:5001"
          - address: "127.0.0.1:5001"
          - address: "whoami@internal"
          - address: "[::1]:5002"
        healthCheck: { port: 9000, interval: 2s }
    unchecked: { loadBalancer: { servers: [{ address: "127.0.0.1:5003" }] } }
`);
    const targets = directory.healthTargets();
    assert.deepEqual(
      targets.map((t) => [t.service, t.server.address]),
      [
        ["checked", "127.0.0.1:5001"],
        ["checked", "[::1]:5002"],
      ],
    );
    assert.equal(targets[0]!.check.intervalMs, 2_000);
    assert.equal(probeAddress(targets[1]!.server.address, targets[1]!.check), "[::1]:9000");
  });
});

describe("HealthChecker", { timeout: 30_000 }, () => {
  /** A backend that answers `answer` to whatever it reads; restartable on the same port. */
  class Backend {
    server: net.Server | null = null;
    port = 0;
    probes = 0;
    readonly sockets = new Set<net.Socket>();
    constructor(public answer: string) {}
    async start(): Promise<void> {
      const server = net.createServer((socket) => {
        this.probes += 1;
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => {});
        socket.on("data", () => socket.write(this.answer));
      });
      await new Promise<void>((resolve) => server.listen(this.port, HOST, () => resolve()));
      this.port = (server.address() as net.AddressInfo).port;
      this.server = server;
    }
    async stop(): Promise<void> {
      const server = this.server;
      this.server = null;
      for (const s of this.sockets) s.destroy();
      if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  const a = new Backend("Received: PING");
  const b = new Backend("Received: PING");
  before(async () => {
    await a.start();
    await b.start();
  });
  after(async () => {
    await a.stop();
    await b.stop();
  });

  function directoryFor(expect: string, servers: Backend[]) {
    return directoryFrom(`
tcp:
  services:
    app:
      loadBalancer:
        servers:
${servers.map((s) => `          - address: "${HOST}:${s.port}"`).join("\n")}
        healthCheck: { interval: 100ms, timeout: 500ms, send: PING, expect: "${expect}" }
`);
  }

  async function until(condition: () => boolean, timeoutMs = 3_000): Promise<void> {
    const started = Date.now();
    while (!condition()) {
      if (Date.now() - started > timeoutMs) throw new Error("condition not met in time");
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const addresses = (directory: ServiceDirectory): string[] =>
    directory
      .candidates("app")
      .map((t) => t.address)
      .sort();

  it("takes a stopped backend out of the candidates and puts it back when it returns", async () => {
    const directory = directoryFor("Received: PING", [a, b]);
    const events: HealthEvent[] = [];
    const checker = new HealthChecker(directory, (e) => events.push(e));
    checker.start();
    try {
      const both = [`${HOST}:${a.port}`, `${HOST}:${b.port}`].sort();
      assert.deepEqual(addresses(directory), both);
      await b.stop();
      await until(() => addresses(directory).length === 1);
      assert.deepEqual(addresses(directory), [`${HOST}:${a.port}`]);
      assert.equal(events.length, 1);
      assert.deepEqual(
        { ...events[0], reason: undefined },
        { service: "app", address: `${HOST}:${b.port}`, up: false, reason: undefined },
      );
      assert.match(events[0]!.reason, /dial/);
      await b.start();
      await until(() => addresses(directory).length === 2);
      assert.deepEqual(events.at(-1), {
        service: "app",
        address: `${HOST}:${b.port}`,
        up: true,
        reason: "check passed",
      });
    } finally {
      checker.stop();
    }
  });

  it("marks a server down when its reply differs from expect", async () => {
    const directory = directoryFor("Received: PONG", [a]);
    const events: HealthEvent[] = [];
    const checker = new HealthChecker(directory, (e) => events.push(e));
    checker.start();
    try {
      await until(() => events.length > 0);
      assert.equal(events[0]!.up, false);
      assert.match(events[0]!.reason, /expected "Received: PONG", got "Received: PING"/);
      assert.deepEqual(directory.candidates("app"), []);
    } finally {
      checker.stop();
    }
  });

  it("stop() ends the probing", async () => {
    const directory = directoryFor("Received: PING", [a]);
    const checker = new HealthChecker(directory, () => {});
    checker.start();
    await until(() => a.probes >= 2);
    checker.stop();
    await new Promise((r) => setTimeout(r, 50));
    const seen = a.probes;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(a.probes, seen);
  });
});
