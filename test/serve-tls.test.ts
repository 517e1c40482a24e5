/**
 * End-to-end tests of serve's TLS behaviour: `tlsroute serve` runs as a subprocess on 127.0.0.1 (port 0),
 * real clients (`openssl s_client`, node:tls, raw sockets carrying real ClientHellos) talk to it, and real
 * backends (a TLS server with its own certificate, plain TCP echo and capture servers) sit behind it.
 *
 * Two serve processes:
 * - "main": passthrough next to termination, per-router TLS options, mTLS in all five modes, ALPN,
 *   sniStrict, certificate choice with a configured default certificate, session tickets;
 * - "bare": no default certificate (the generated one is served), readTimeout 500ms, a passthrough
 *   catch-all, for the byte-level cases (split ClientHello, malformed hello, silent and stalled clients).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import {
  captureFirstBytes,
  clientHelloMessage,
  frame,
  handshakeBytes,
  modernExtensions,
  record,
  recordVersion,
  sniExt,
} from "./helpers/hello.ts";
import { type IssuedCert, makePki, type TestCa } from "./helpers/pki.ts";
import { type LogLine, type ServeProcess, startServe } from "./helpers/serve.ts";

const HOST = "127.0.0.1";
const READ_TIMEOUT_MS = 500;

// ----- clients ---------------------------------------------------------------------------------------------

/** Runs `openssl s_client` against the proxy; resolves with stdout + stderr once it exits. */
function sClient(port: number, args: string[], input = ""): Promise<string> {
  return new Promise((resolve, reject) => {
    // -ign_eof: keep reading after stdin ends, so the output shows what the server sent before closing.
    const child = spawn("openssl", ["s_client", "-connect", `${HOST}:${port}`, "-ign_eof", ...args]);
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (s: string) => {
      out += s;
    });
    child.stderr.on("data", (s: string) => {
      out += s;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`openssl s_client ${args.join(" ")} did not finish:\n${out}`));
    }, 10_000);
    child.on("error", reject);
    child.on("close", () => {
      clearTimeout(timer);
      resolve(out);
    });
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}

interface Probe {
  /** The handshake completed on the client side. */
  secure: boolean;
  error: string | null;
  cert: tls.PeerCertificate | null;
  alpn: string | false | null;
  protocol: string | null;
  /** Everything the server sent, decrypted. */
  data: string;
  reused: boolean;
  session: Buffer | null;
  /** The client's local port: the `client` field of the access line ends with it. */
  localPort: number;
}

interface ProbeOptions {
  servername: string;
  alpn?: string[];
  minVersion?: tls.SecureVersion;
  maxVersion?: tls.SecureVersion;
  cert?: IssuedCert;
  session?: Buffer;
  send?: string;
}

/** A node:tls client that records what happened until the connection closes. */
function probe(port: number, options: ProbeOptions): Promise<Probe> {
  return new Promise((resolve) => {
    const result: Probe = {
      secure: false,
      error: null,
      cert: null,
      alpn: null,
      protocol: null,
      data: "",
      reused: false,
      session: null,
      localPort: 0,
    };
    const socket = tls.connect({
      host: HOST,
      port,
      servername: options.servername,
      rejectUnauthorized: false,
      ...(options.alpn ? { ALPNProtocols: options.alpn } : {}),
      ...(options.minVersion ? { minVersion: options.minVersion } : {}),
      ...(options.maxVersion ? { maxVersion: options.maxVersion } : {}),
      ...(options.cert ? { cert: options.cert.certPem, key: options.cert.keyPem } : {}),
      ...(options.session ? { session: options.session } : {}),
    });
    socket.once("connect", () => {
      result.localPort = socket.localPort ?? 0;
    });
    socket.once("secureConnect", () => {
      result.secure = true;
      result.cert = socket.getPeerCertificate();
      result.alpn = socket.alpnProtocol ?? null;
      result.protocol = socket.getProtocol();
      result.reused = socket.isSessionReused();
      if (options.send !== undefined) socket.write(options.send);
    });
    socket.on("session", (session: Buffer) => {
      result.session = session;
    });
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      result.data += chunk;
    });
    socket.on("end", () => socket.end());
    socket.on("error", (err: Error & { code?: string }) => {
      result.error ??= `${err.code ?? ""} ${err.message}`;
    });
    const timer = setTimeout(() => {
      result.error ??= "probe timed out";
      socket.destroy();
    }, 10_000);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(result);
    });
  });
}

/** The whoami@internal line a probe received, parsed. */
function whoami(p: Probe): Record<string, unknown> {
  assert.ok(
    p.data.endsWith("\n"),
    `expected one whoami line, got ${JSON.stringify(p.data)} (error ${p.error})`,
  );
  return JSON.parse(p.data) as Record<string, unknown>;
}

function cn(p: Probe): string | undefined {
  const value = p.cert?.subject?.CN;
  return Array.isArray(value) ? value.join(",") : value;
}

/** Connects a raw TCP socket; resolves once connected. */
function rawConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port }, () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Resolves when the socket closes, with what it received and how long it stayed open. */
function untilClosed(socket: net.Socket, since: number): Promise<{ received: Buffer; afterMs: number }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", () => {});
    socket.on("end", () => socket.end());
    socket.once("close", () =>
      resolve({ received: Buffer.concat(chunks), afterMs: performance.now() - since }),
    );
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ----- backends --------------------------------------------------------------------------------------------

interface Backend {
  port: number;
  close(): Promise<void>;
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      if (address === null || typeof address === "string") reject(new Error("no TCP address"));
      else resolve(address.port);
    });
  });
}

async function backend(server: net.Server, sockets: Set<net.Socket>): Promise<Backend> {
  const port = await listen(server);
  return {
    port,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A TLS server with its own certificate: answers the first bytes with `A:<bytes>|sni=<name>` and closes. */
async function tlsBackend(cert: IssuedCert): Promise<Backend> {
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, (socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.once("data", (chunk: Buffer) => {
      const sni = (socket as tls.TLSSocket & { servername?: string | false }).servername;
      socket.end(`A:${chunk.toString("utf8").trim()}|sni=${String(sni)}\n`);
    });
  });
  server.on("tlsClientError", () => {});
  return backend(server, sockets);
}

/** Plain TCP: answers the first bytes with `echo:<bytes>` and closes. */
async function echoBackend(): Promise<Backend> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.once("data", (chunk: Buffer) => socket.end(`echo:${chunk.toString("utf8").trim()}\n`));
  });
  return backend(server, sockets);
}

/** Plain TCP: records everything a connection sends until it half-closes. */
async function captureBackend(): Promise<Backend & { received: Buffer[]; next(): Promise<Buffer> }> {
  const sockets = new Set<net.Socket>();
  const received: Buffer[] = [];
  const waiting: ((b: Buffer) => void)[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    const chunks: Buffer[] = [];
    socket.on("error", () => {});
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", () => {
      const all = Buffer.concat(chunks);
      received.push(all);
      waiting.shift()?.(all);
      socket.end();
    });
  });
  const b = await backend(server, sockets);
  return {
    ...b,
    received,
    next: () => new Promise<Buffer>((resolve) => waiting.push(resolve)),
  };
}

// ----- access lines ----------------------------------------------------------------------------------------

const REASONS = new Set([
  "no_clienthello",
  "bad_clienthello",
  "no_route",
  "sni_strict",
  "alpn_mismatch",
  "client_cert_required",
  "ip_denied",
  "too_many_connections",
  "backend_unreachable",
  "backend_refused_ssl",
  "timeout",
  "tls_handshake_failed",
  "closed",
]);

function accessFor(serve: ServeProcess, match: (l: LogLine) => boolean): Promise<LogLine> {
  return serve.waitFor((l) => l.msg === "connection" && match(l), 10_000);
}

const bySni = (sni: string) => (l: LogLine) => l.sni === sni;
const byPort = (port: number) => (l: LogLine) => l.client === `${HOST}:${port}`;

function assertAccessShape(line: LogLine): void {
  const where = JSON.stringify(line);
  const nullableString = (v: unknown) => v === null || typeof v === "string";
  assert.equal(typeof line.entryPoint, "string", where);
  assert.match(String(line.client), /^127\.0\.0\.1:\d+$/, where);
  assert.ok(nullableString(line.sni), `sni: ${where}`);
  assert.ok(Array.isArray(line.alpn) && line.alpn.every((a) => typeof a === "string"), `alpn: ${where}`);
  for (const key of ["router", "service", "server", "tlsVersion"]) {
    assert.ok(key in line && nullableString(line[key]), `${key}: ${where}`);
  }
  assert.ok(["terminate", "passthrough", "tcp", null].includes(line.mode as string | null), `mode: ${where}`);
  for (const key of ["bytesIn", "bytesOut", "durationMs"]) {
    assert.ok(typeof line[key] === "number" && (line[key] as number) >= 0, `${key}: ${where}`);
  }
  assert.ok(REASONS.has(String(line.reason)), `reason: ${where}`);
}

// ----- fixtures --------------------------------------------------------------------------------------------

interface World {
  dir: string;
  backendCa: TestCa;
  proxyCa: TestCa;
  clientCa: TestCa;
  otherCa: TestCa;
  clientCert: IssuedCert;
  intruderCert: IssuedCert;
  backendA: Backend;
  echo: Backend;
  pass: Awaited<ReturnType<typeof captureBackend>>;
  catchAll: Awaited<ReturnType<typeof captureBackend>>;
  main: ServeProcess;
  bare: ServeProcess;
  mainPort: number;
  barePort: number;
}

const w = {} as World;

function mainConfig(certs: Record<string, IssuedCert>, defaultCert: IssuedCert): unknown {
  const whoamiTls = (rule: string, options?: string) => ({
    rule,
    service: "whoami",
    tls: options ? { options } : {},
  });
  const auth = (clientAuthType: string, withCa: boolean) => ({
    clientAuth: { clientAuthType, ...(withCa ? { caFiles: [w.clientCa.certFile] } : {}) },
  });
  return {
    entryPoints: {
      web: { address: "127.0.0.1:0", transport: { respondingTimeouts: { readTimeout: "10s" } } },
    },
    tcp: {
      routers: {
        "pass-a": { rule: "HostSNI(`a.test`)", service: "backend-a", tls: { passthrough: true } },
        "term-c": { rule: "HostSNI(`c.test`)", service: "echo", tls: {} },
        tls13: whoamiTls("HostSNI(`*.tls13.test`)", "tls13"),
        // Traefik's scenario 10: a wildcard router and an exact one under it, each with its own options.
        "snitest-wild": whoamiTls("HostSNI(`*.snitest.test`)", "tls12only"),
        "snitest-bar": whoamiTls("HostSNI(`bar.snitest.test`)", "tls13"),
        deep: whoamiTls("HostSNI(`deep.foo.snitest.test`)"),
        "mtls-require": whoamiTls("HostSNI(`*.require.test`)", "require"),
        "mtls-ifgiven": whoamiTls("HostSNI(`*.ifgiven.test`)", "ifgiven"),
        "mtls-any": whoamiTls("HostSNI(`*.anycert.test`)", "anycert"),
        "mtls-request": whoamiTls("HostSNI(`*.request.test`)", "request"),
        "mtls-none": whoamiTls("HostSNI(`*.nocert.test`)", "nocert"),
        "alpn-h2": whoamiTls("HostSNI(`*.alpn.test`) && ALPN(`h2`)"),
        "alpn-other": whoamiTls("HostSNI(`*.alpn.test`)"),
        "h2-only": whoamiTls("HostSNI(`*.h2only.test`)", "h2only"),
        strict: whoamiTls("HostSNI(`strict.test`) || HostSNI(`*.strict.test`)", "strict"),
        tickets: whoamiTls("HostSNI(`*.tickets.test`)"),
        notickets: whoamiTls("HostSNI(`*.notickets.test`)", "notickets"),
      },
      services: {
        "backend-a": { loadBalancer: { servers: [{ address: `${HOST}:${w.backendA.port}` }] } },
        echo: { loadBalancer: { servers: [{ address: `${HOST}:${w.echo.port}` }] } },
        whoami: { loadBalancer: { servers: [{ address: "whoami@internal" }] } },
      },
    },
    tls: {
      certificates: Object.values(certs).map((c) => ({ certFile: c.chainFile, keyFile: c.keyFile })),
      options: {
        tls13: { minVersion: "VersionTLS13" },
        tls12only: { minVersion: "VersionTLS12", maxVersion: "VersionTLS12" },
        require: auth("RequireAndVerifyClientCert", true),
        ifgiven: auth("VerifyClientCertIfGiven", true),
        anycert: auth("RequireAnyClientCert", false),
        request: auth("RequestClientCert", false),
        nocert: auth("NoClientCert", false),
        strict: { sniStrict: true },
        notickets: { disableSessionTickets: true },
        h2only: { alpnProtocols: ["h2"] },
      },
      stores: {
        default: { defaultCertificate: { certFile: defaultCert.chainFile, keyFile: defaultCert.keyFile } },
      },
    },
  };
}

function bareConfig(): unknown {
  return {
    entryPoints: {
      edge: {
        address: "127.0.0.1:0",
        transport: { respondingTimeouts: { readTimeout: `${READ_TIMEOUT_MS}ms` } },
      },
    },
    tcp: {
      routers: {
        gen: { rule: "HostSNI(`*.gen.test`)", service: "whoami", tls: {} },
        pass: { rule: "HostSNI(`*.pass.test`)", service: "pass", tls: { passthrough: true } },
        // A hello whose SNI got lost would land here instead of on "pass".
        "catch-all": { rule: "HostSNI(`*`)", service: "catch-all", tls: { passthrough: true } },
      },
      services: {
        whoami: { loadBalancer: { servers: [{ address: "whoami@internal" }] } },
        pass: { loadBalancer: { servers: [{ address: `${HOST}:${w.pass.port}` }] } },
        "catch-all": { loadBalancer: { servers: [{ address: `${HOST}:${w.catchAll.port}` }] } },
      },
    },
  };
}

/** A real ClientHello, as node:tls sends it for `servername`. */
function captureNodeHello(servername: string): Promise<Uint8Array> {
  return captureFirstBytes((port) => {
    const socket = tls.connect({ host: HOST, port, servername, rejectUnauthorized: false });
    socket.on("error", () => {});
    return { stop: () => socket.destroy() };
  });
}

// ----- tests -----------------------------------------------------------------------------------------------

describe("serve: TLS end to end", () => {
  before(async () => {
    w.dir = mkdtempSync(path.join(tmpdir(), "tlsroute-serve-tls-"));
    const pki = makePki(path.join(w.dir, "pki"));
    w.backendCa = pki.ca("backend-ca");
    w.proxyCa = pki.ca("proxy-ca");
    w.clientCa = pki.ca("client-ca");
    w.otherCa = pki.ca("other-ca");
    const leaf = (cn: string, ca = w.proxyCa) => pki.leaf({ ca, cn, dns: [cn] });
    const backendACert = leaf("a.test", w.backendCa);
    const certs = {
      c: leaf("c.test"),
      wildcard: leaf("*.snitest.test"),
      bar: leaf("bar.snitest.test"),
      strict: leaf("strict.test"),
    };
    const defaultCert = leaf("default.test");
    w.clientCert = pki.leaf({ ca: w.clientCa, cn: "client-1" });
    w.intruderCert = pki.leaf({ ca: w.otherCa, cn: "intruder" });

    [w.backendA, w.echo, w.pass, w.catchAll] = await Promise.all([
      tlsBackend(backendACert),
      echoBackend(),
      captureBackend(),
      captureBackend(),
    ]);

    const mainFile = path.join(w.dir, "main.json");
    writeFileSync(mainFile, JSON.stringify(mainConfig(certs, defaultCert), null, 2));
    const bareFile = path.join(w.dir, "bare.json");
    writeFileSync(bareFile, JSON.stringify(bareConfig(), null, 2));
    [w.main, w.bare] = await Promise.all([
      startServe(["-c", mainFile, "--entrypoint", "web=127.0.0.1:0"]),
      startServe(["-c", bareFile, "--entrypoint", "edge=127.0.0.1:0"]),
    ]);
    w.mainPort = w.main.ports.get("web")!;
    w.barePort = w.bare.ports.get("edge")!;
  });

  after(async () => {
    await Promise.all([w.main?.stop(), w.bare?.stop()]);
    await Promise.all([w.backendA?.close(), w.echo?.close(), w.pass?.close(), w.catchAll?.close()]);
    if (w.dir) rmSync(w.dir, { recursive: true, force: true });
  });

  describe("cases", { concurrency: true }, () => {
    // ----- passthrough next to termination -----

    it("passthrough: -servername a.test reaches backend A and sees A's own certificate", async () => {
      const out = await sClient(w.mainPort, ["-servername", "a.test"], "hello-a\n");
      assert.match(out, /subject=CN ?= ?a\.test/, out);
      assert.match(out, /issuer=CN ?= ?backend-ca/, out);
      // Exactly one certificate came (A's leaf, no chain of ours) and A answered with the SNI it saw.
      assert.match(out, /A:hello-a\|sni=a\.test/, out);
      const line = await accessFor(w.main, bySni("a.test"));
      assert.equal(line.router, "pass-a");
      assert.equal(line.mode, "passthrough");
      assert.equal(line.server, `${HOST}:${w.backendA.port}`);
      assert.equal(line.tlsVersion, null, "a passthrough connection is not terminated here");
      assert.equal(line.reason, "closed");
      assert.ok((line.bytesIn as number) > 100 && (line.bytesOut as number) > 100, JSON.stringify(line));
    });

    it("termination: -servername c.test sees our certificate and a plain backend gets the decrypted bytes", async () => {
      const out = await sClient(w.mainPort, ["-servername", "c.test"], "hello-c\n");
      assert.match(out, /subject=CN ?= ?c\.test/, out);
      assert.match(out, /issuer=CN ?= ?proxy-ca/, out);
      assert.match(out, /echo:hello-c\n/, out);
      const line = await accessFor(w.main, bySni("c.test"));
      assert.equal(line.router, "term-c");
      assert.equal(line.service, "echo");
      assert.equal(line.mode, "terminate");
      assert.equal(line.server, `${HOST}:${w.echo.port}`);
      assert.equal(line.tlsVersion, "TLSv1.3");
      // Decrypted bytes each way: "hello-c\n" in, "echo:hello-c\n" out.
      assert.equal(line.bytesIn, 8);
      assert.equal(line.bytesOut, 13);
      assert.equal(line.reason, "closed");
    });

    // ----- per-router TLS options -----

    it("a TLS 1.3-only router refuses a TLS 1.2-only client with alert protocol version", async () => {
      const out = await sClient(w.mainPort, ["-servername", "old.tls13.test", "-tls1_2"]);
      assert.match(out, /alert protocol version/, out);
      assert.match(out, /alert number 70/, out);
      const line = await accessFor(w.main, bySni("old.tls13.test"));
      assert.equal(line.router, "tls13");
      assert.equal(line.tlsVersion, null);
      assert.equal(line.server, null, "nothing was dialed for a failed handshake");
      assert.equal(line.reason, "tls_handshake_failed");
      assert.match(String(line.detail), /TLS handshake/);
    });

    it("a TLS 1.3-only router accepts TLS 1.3", async () => {
      const out = await sClient(w.mainPort, ["-servername", "new.tls13.test", "-tls1_3"]);
      assert.match(out, /Protocol *: TLSv1\.3/, out);
      assert.match(out, /"router":"tls13"/, out);
      const line = await accessFor(w.main, bySni("new.tls13.test"));
      assert.equal(line.tlsVersion, "TLSv1.3");
      assert.equal(line.server, "whoami@internal");
    });

    it("wildcard and exact routers each apply their own TLS options (Traefik scenario 10)", async () => {
      const [wild12, wild13, bar13, bar12] = await Promise.all([
        probe(w.mainPort, { servername: "foo.snitest.test", maxVersion: "TLSv1.2" }),
        probe(w.mainPort, { servername: "foo.snitest.test", minVersion: "TLSv1.3" }),
        probe(w.mainPort, { servername: "bar.snitest.test", minVersion: "TLSv1.3" }),
        probe(w.mainPort, { servername: "bar.snitest.test", maxVersion: "TLSv1.2" }),
      ]);
      assert.equal(wild12.protocol, "TLSv1.2", JSON.stringify(wild12));
      assert.equal(whoami(wild12).router, "snitest-wild");
      assert.equal(wild13.secure, false, "TLS 1.2-only options must refuse a TLS 1.3-only client");
      assert.match(String(wild13.error), /protocol version|PROTOCOL_VERSION/i);
      assert.equal(bar13.protocol, "TLSv1.3", JSON.stringify(bar13));
      assert.equal(whoami(bar13).router, "snitest-bar");
      assert.equal(bar12.secure, false, "TLS 1.3-only options must refuse a TLS 1.2-only client");
      assert.match(String(bar12.error), /protocol version|PROTOCOL_VERSION/i);
    });

    // ----- client certificates -----

    it("RequireAndVerifyClientCert refuses a client without a certificate (client_cert_required)", async () => {
      const p = await probe(w.mainPort, { servername: "none.require.test" });
      assert.equal(p.data, "", "no byte of the service may reach a refused client");
      assert.ok(p.error, "the client sees the refusal");
      const line = await accessFor(w.main, bySni("none.require.test"));
      assert.equal(line.reason, "client_cert_required", JSON.stringify(line));
      assert.equal(line.router, "mtls-require");
      assert.equal(line.server, null);
    });

    it("RequireAndVerifyClientCert accepts a certificate from the configured CA", async () => {
      const p = await probe(w.mainPort, { servername: "good.require.test", cert: w.clientCert });
      const body = whoami(p);
      assert.equal(body.router, "mtls-require");
      assert.match(String(body.clientCertificate), /CN=client-1/);
      assert.equal((await accessFor(w.main, bySni("good.require.test"))).reason, "closed");
    });

    it("RequireAndVerifyClientCert refuses a certificate from another CA", async () => {
      const p = await probe(w.mainPort, { servername: "bad.require.test", cert: w.intruderCert });
      assert.equal(p.data, "");
      const line = await accessFor(w.main, bySni("bad.require.test"));
      assert.equal(line.reason, "client_cert_required", JSON.stringify(line));
    });

    it("VerifyClientCertIfGiven accepts no certificate and a good one, refuses one from another CA", async () => {
      const [none, good, bad] = await Promise.all([
        probe(w.mainPort, { servername: "none.ifgiven.test" }),
        probe(w.mainPort, { servername: "good.ifgiven.test", cert: w.clientCert }),
        probe(w.mainPort, { servername: "bad.ifgiven.test", cert: w.intruderCert }),
      ]);
      assert.equal(whoami(none).clientCertificate, null);
      assert.match(String(whoami(good).clientCertificate), /CN=client-1/);
      assert.equal(bad.data, "", "a certificate that does not verify is refused");
      const line = await accessFor(w.main, bySni("bad.ifgiven.test"));
      assert.equal(line.reason, "client_cert_required", JSON.stringify(line));
      assert.equal((await accessFor(w.main, bySni("none.ifgiven.test"))).reason, "closed");
    });

    it("RequireAnyClientCert accepts any certificate but refuses none", async () => {
      const [none, other] = await Promise.all([
        probe(w.mainPort, { servername: "none.anycert.test" }),
        probe(w.mainPort, { servername: "other.anycert.test", cert: w.intruderCert }),
      ]);
      assert.equal(none.data, "");
      const line = await accessFor(w.main, bySni("none.anycert.test"));
      assert.equal(line.reason, "client_cert_required", JSON.stringify(line));
      assert.match(String(whoami(other).clientCertificate), /CN=intruder/);
    });

    it("RequestClientCert and NoClientCert accept a client without a certificate", async () => {
      const [request, requestWithCert, nocert] = await Promise.all([
        probe(w.mainPort, { servername: "none.request.test" }),
        probe(w.mainPort, { servername: "cert.request.test", cert: w.intruderCert }),
        probe(w.mainPort, { servername: "none.nocert.test" }),
      ]);
      assert.equal(whoami(request).router, "mtls-request");
      assert.equal(whoami(request).clientCertificate, null);
      // RequestClientCert asks for a certificate but does not verify it.
      assert.match(String(whoami(requestWithCert).clientCertificate), /CN=intruder/);
      assert.equal(whoami(nocert).router, "mtls-none");
    });

    it("NoClientCert does not ask for a certificate: one the client has is not sent", async () => {
      const p = await probe(w.mainPort, { servername: "cert.nocert.test", cert: w.clientCert });
      assert.equal(whoami(p).clientCertificate, null);
    });

    // ----- ALPN -----

    it("ALPN routing: an ALPN(`h2`) router takes h2 clients, the other router the rest", async () => {
      const [h2, http1] = await Promise.all([
        sClient(w.mainPort, ["-servername", "h2.alpn.test", "-alpn", "h2,http/1.1"]),
        sClient(w.mainPort, ["-servername", "http1.alpn.test", "-alpn", "http/1.1"]),
      ]);
      assert.match(h2, /ALPN protocol: h2\n/, h2);
      assert.match(h2, /"router":"alpn-h2"/, h2);
      assert.match(h2, /"alpnNegotiated":"h2"/, h2);
      assert.match(http1, /ALPN protocol: http\/1\.1\n/, http1);
      assert.match(http1, /"router":"alpn-other"/, http1);
      const line = await accessFor(w.main, bySni("h2.alpn.test"));
      assert.deepEqual(line.alpn, ["h2", "http/1.1"]);
      assert.equal(line.router, "alpn-h2");
    });

    it("ALPN negotiation follows the server's preference, as Go does", async () => {
      // The default options list h2 before http/1.1, so h2 wins even when the client prefers http/1.1.
      const p = await probe(w.mainPort, { servername: "pref.alpn.test", alpn: ["http/1.1", "h2"] });
      assert.equal(p.alpn, "h2");
      assert.equal(whoami(p).alpnNegotiated, "h2");
    });

    it("an ALPN mismatch gives the client no_application_protocol (alpn_mismatch)", async () => {
      const out = await sClient(w.mainPort, ["-servername", "x.alpn.test", "-alpn", "imap"]);
      assert.match(out, /no application protocol/, out);
      assert.match(out, /alert number 120/, out);
      const line = await accessFor(w.main, bySni("x.alpn.test"));
      assert.equal(line.reason, "alpn_mismatch");
      assert.deepEqual(line.alpn, ["imap"]);
      assert.equal(line.server, null);
    });

    it("ALPN: an h2-only server lets an http/1.1 client in without ALPN, as Go does", async () => {
      const [http1, imap] = await Promise.all([
        probe(w.mainPort, { servername: "web.h2only.test", alpn: ["http/1.1"] }),
        probe(w.mainPort, { servername: "mail.h2only.test", alpn: ["imap"] }),
      ]);
      assert.equal(http1.alpn, false, "no protocol negotiated");
      assert.equal(whoami(http1).router, "h2-only");
      assert.equal(imap.secure, false);
      assert.match(String(imap.error), /no application protocol|NO_APPLICATION_PROTOCOL/i);
      assert.equal((await accessFor(w.main, bySni("mail.h2only.test"))).reason, "alpn_mismatch");
    });

    // ----- refusals with unrecognized_name -----

    it("sniStrict without a matching certificate: unrecognized_name alert (sni_strict)", async () => {
      const out = await sClient(w.mainPort, ["-servername", "uncovered.strict.test"]);
      assert.match(out, /unrecognized name/, out);
      assert.match(out, /alert number 112/, out);
      const line = await accessFor(w.main, bySni("uncovered.strict.test"));
      assert.equal(line.reason, "sni_strict");
      assert.equal(line.router, "strict");
    });

    it("sniStrict with a matching certificate completes the handshake", async () => {
      const p = await probe(w.mainPort, { servername: "strict.test" });
      assert.equal(cn(p), "strict.test");
      assert.equal(whoami(p).router, "strict");
    });

    it("no router for the SNI: unrecognized_name alert (no_route)", async () => {
      const out = await sClient(w.mainPort, ["-servername", "nobody.test"]);
      assert.match(out, /unrecognized name/, out);
      assert.match(out, /alert number 112/, out);
      const line = await accessFor(w.main, bySni("nobody.test"));
      assert.equal(line.reason, "no_route");
      assert.equal(line.router, null);
      assert.equal(line.mode, null);
    });

    // ----- certificate choice -----

    it("certificate choice: exact, one-label wildcard, exact over wildcard, configured default", async () => {
      const [exact, wildcard, exactOverWildcard, deep] = await Promise.all([
        probe(w.mainPort, { servername: "c.test", send: "x\n" }),
        probe(w.mainPort, { servername: "foo.snitest.test" }),
        probe(w.mainPort, { servername: "bar.snitest.test" }),
        // `*.snitest.test` covers one label only: deep.foo.snitest.test gets the default certificate.
        probe(w.mainPort, { servername: "deep.foo.snitest.test" }),
      ]);
      assert.equal(cn(exact), "c.test");
      assert.equal(cn(wildcard), "*.snitest.test");
      assert.equal(cn(exactOverWildcard), "bar.snitest.test");
      assert.equal(cn(deep), "default.test");
      assert.equal(whoami(deep).router, "deep");
    });

    it("certificate choice: the generated default certificate when none is configured", async () => {
      const out = await sClient(w.barePort, ["-servername", "x.gen.test"]);
      assert.match(out, /subject=CN ?= ?TLSROUTE DEFAULT CERT/, out);
      assert.match(out, /"router":"gen"/, out);
    });

    // ----- session tickets -----

    it("session resumption works by default and disableSessionTickets turns it off", async () => {
      const firstOn = await probe(w.mainPort, { servername: "one.tickets.test" });
      assert.ok(firstOn.session, "a resumable session was offered");
      const againOn = await probe(w.mainPort, { servername: "one.tickets.test", session: firstOn.session! });
      assert.equal(againOn.reused, true, "resumption works when tickets are on");

      for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
        const first = await probe(w.mainPort, {
          servername: "one.notickets.test",
          minVersion: version,
          maxVersion: version,
        });
        assert.equal(whoami(first).router, "notickets");
        const again = await probe(w.mainPort, {
          servername: "one.notickets.test",
          minVersion: version,
          maxVersion: version,
          ...(first.session ? { session: first.session } : {}),
        });
        assert.equal(again.secure, true);
        assert.equal(again.reused, false, `${version}: disableSessionTickets must prevent resumption`);
      }
      // TLS 1.2 with tickets off: the server sends no ticket at all.
      const out = await sClient(w.mainPort, ["-servername", "two.notickets.test", "-tls1_2"]);
      assert.match(out, /Protocol *: TLSv1\.2/, out);
      assert.doesNotMatch(out, /TLS session ticket:/, out);
      const on = await sClient(w.mainPort, ["-servername", "two.tickets.test", "-tls1_2"]);
      assert.match(on, /TLS session ticket:/, on);
    });

    // ----- bytes on the wire -----

    it("a ClientHello split over two TLS records and two TCP writes is passed through intact", async () => {
      const captured = await captureNodeHello("split.pass.test");
      const message = handshakeBytes(captured);
      // First record: 40 bytes of the handshake message, so the SNI sits in the second record.
      const bytes = Buffer.from(frame(message, [40, 16384], recordVersion(captured)));
      assert.equal(bytes[45], 0x16, "two records");
      const cut = 45 + 20;
      const arrived = w.pass.next();
      const socket = await rawConnect(w.barePort);
      const closed = untilClosed(socket, performance.now());
      socket.write(bytes.subarray(0, cut));
      await sleep(150);
      socket.write(bytes.subarray(cut));
      socket.end();
      const got = await arrived;
      assert.ok(got.equals(bytes), `backend received ${got.length} bytes, expected the ${bytes.length} sent`);
      await closed;
      const line = await accessFor(w.bare, bySni("split.pass.test"));
      assert.equal(line.router, "pass");
      assert.equal(line.mode, "passthrough");
      assert.equal(line.bytesIn, bytes.length);
      assert.equal(line.reason, "closed");
      assert.equal(w.catchAll.received.length, 0, "nothing reached the catch-all");
    });

    it("a malformed ClientHello is closed (bad_clienthello) and the next client is served", async () => {
      // Two server_name extensions: Go (and so Traefik) refuses the hello.
      const bad = record(
        clientHelloMessage({
          extensions: [sniExt("dup.gen.test"), sniExt("dup.gen.test"), ...modernExtensions().slice(1)],
        }),
      );
      const socket = await rawConnect(w.barePort);
      const port = socket.localPort!;
      const closed = untilClosed(socket, performance.now());
      socket.write(bad);
      const { received, afterMs } = await closed;
      assert.equal(received.length, 0, "no byte is answered to a malformed hello");
      assert.ok(afterMs < READ_TIMEOUT_MS, `closed at once, not at the read timeout (${afterMs}ms)`);
      const line = await accessFor(w.bare, byPort(port));
      assert.equal(line.reason, "bad_clienthello");
      assert.equal(typeof line.detail, "string");

      const next = await probe(w.barePort, { servername: "after-bad.gen.test" });
      assert.equal(whoami(next).router, "gen");
      assert.equal(w.bare.child.exitCode, null, "serve is still running");
    });

    it("a client that sends nothing is closed after readTimeout (timeout)", async () => {
      const started = performance.now();
      const socket = await rawConnect(w.barePort);
      const port = socket.localPort!;
      const { received, afterMs } = await untilClosed(socket, started);
      assert.equal(received.length, 0);
      assert.ok(afterMs >= READ_TIMEOUT_MS - 50, `closed after ${afterMs}ms, before readTimeout`);
      assert.ok(afterMs < READ_TIMEOUT_MS + 2000, `closed after ${afterMs}ms, long after readTimeout`);
      const line = await accessFor(w.bare, byPort(port));
      assert.equal(line.reason, "timeout");
      assert.equal(line.sni, null);
    });

    it("a client that stalls after its ClientHello is cut at readTimeout (timeout)", async () => {
      const helloBytes = await captureNodeHello("stall.gen.test");
      const started = performance.now();
      const socket = await rawConnect(w.barePort);
      const port = socket.localPort!;
      const closed = untilClosed(socket, started);
      socket.write(helloBytes);
      const { received, afterMs } = await closed;
      // The server answered (ServerHello and the rest of its flight), then waited for the client in vain.
      assert.ok(received.length > 0 && received[0] === 0x16, "the server's handshake flight arrived");
      assert.ok(afterMs >= READ_TIMEOUT_MS - 50, `closed after ${afterMs}ms, before readTimeout`);
      assert.ok(afterMs < READ_TIMEOUT_MS + 2000, `closed after ${afterMs}ms, long after readTimeout`);
      const line = await accessFor(w.bare, byPort(port));
      assert.equal(line.reason, "timeout", JSON.stringify(line));
      assert.equal(line.sni, "stall.gen.test");
      assert.equal(line.router, "gen");
    });

    it("a client that stalls in the middle of its ClientHello is cut at readTimeout (timeout)", async () => {
      const helloBytes = await captureNodeHello("half.gen.test");
      const started = performance.now();
      const socket = await rawConnect(w.barePort);
      const port = socket.localPort!;
      const closed = untilClosed(socket, started);
      socket.write(helloBytes.subarray(0, 30));
      const { received, afterMs } = await closed;
      assert.equal(received.length, 0);
      assert.ok(afterMs >= READ_TIMEOUT_MS - 50, `closed after ${afterMs}ms, before readTimeout`);
      const line = await accessFor(w.bare, byPort(port));
      assert.equal(line.reason, "timeout");
      assert.match(String(line.detail), /30 bytes/);
    });
  });

  it("every access line has the fields DESIGN.md lists", async () => {
    const lines = [...w.main.accessLines(), ...w.bare.accessLines()];
    assert.ok(lines.length >= 30, `expected the cases above to have logged, got ${lines.length} lines`);
    for (const line of lines) assertAccessShape(line);
    const reasons = new Set(lines.map((l) => l.reason));
    for (const reason of [
      "closed",
      "no_route",
      "sni_strict",
      "alpn_mismatch",
      "client_cert_required",
      "bad_clienthello",
      "timeout",
    ]) {
      assert.ok(reasons.has(reason), `some case logged reason ${reason}`);
    }
  });
});
