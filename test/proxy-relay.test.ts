/**
 * The backend side of serve, with real sockets on 127.0.0.1: the relay (byte-exact copy, half-close,
 * terminationDelay, resets) and the dialer (refused, timeouts, PROXY header, backend TLS and mTLS).
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { dialServer, type ProxyAddresses, type ResolvedTransport } from "../src/proxy/dial.ts";
import {
  lostEndGuardFor,
  type RelayOptions,
  type RelayResult,
  relay,
  relayNote,
} from "../src/proxy/relay.ts";
import { decodeProxyHeader } from "../src/wire/proxy-protocol.ts";
import { makePki } from "./helpers/pki.ts";

const HOST = "127.0.0.1";
const NO_PROXY: ProxyAddresses = { src: null, dst: null };

function transport(overrides: Partial<ResolvedTransport> = {}): ResolvedTransport {
  return {
    name: "test",
    dialTimeoutMs: 2_000,
    dialKeepAliveMs: 15_000,
    terminationDelayMs: 100,
    proxyProtocolVersion: null,
    tls: null,
    ...overrides,
  };
}

/** Closes a server and destroys its connections: a half-open test peer would otherwise keep it open. */
function close(server: net.Server): Promise<void> {
  for (const socket of connections.get(server) ?? []) socket.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}

const connections = new WeakMap<net.Server, Set<net.Socket>>();

function listen(server: net.Server): Promise<number> {
  const open = new Set<net.Socket>();
  connections.set(server, open);
  server.on("connection", (socket: net.Socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
  });
  return new Promise((resolve) => {
    server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port));
  });
}

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Everything a socket sends until it closes, with whether it ended cleanly. */
function collect(socket: net.Socket): Promise<{ data: Buffer; error: Error | null }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: Error | null = null;
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", (e) => {
      error = e;
    });
    socket.on("close", () => resolve({ data: Buffer.concat(chunks), error }));
  });
}

interface Tunnel {
  port: number;
  results: Promise<RelayResult>[];
  close(): Promise<void>;
}

/**
 * A minimal proxy in front of `backendPort`: accept, dial with dialServer, relay. `beforeRelay` can
 * consume client bytes first (as the connection pipeline does when it peeks).
 */
async function tunnel(
  backendPort: number,
  options: RelayOptions,
  beforeRelay?: (client: net.Socket, backend: net.Socket | tls.TLSSocket) => Promise<void>,
): Promise<Tunnel> {
  const results: Promise<RelayResult>[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    results.push(
      (async () => {
        const dialed = await dialServer(`${HOST}:${backendPort}`, false, transport(), NO_PROXY);
        assert.ok(dialed.ok, "the tunnel could not dial its backend");
        await beforeRelay?.(client, dialed.socket);
        return relay(client, dialed.socket, options);
      })(),
    );
  });
  const port = await listen(server);
  return { port, results, close: () => close(server) };
}

/** A client; half-open by default so that tests control when it ends its own side. */
function connect(port: number, allowHalfOpen = true): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, allowHalfOpen }, () => resolve(socket));
    socket.once("error", reject);
  });
}

// A broken relay hangs rather than fails: bound every suite.
describe("relay", { timeout: 30_000 }, () => {
  it("copies 1 MiB each way byte-exact and counts the bytes", async () => {
    const fromClient = randomBytes(1 << 20);
    const fromBackend = randomBytes(1 << 20);
    const backendGots: Promise<{ data: Buffer }>[] = [];
    const backend = net.createServer({ allowHalfOpen: true }, (socket) => {
      backendGots.push(collect(socket));
      socket.end(fromBackend);
    });
    const backendPort = await listen(backend);
    const t = await tunnel(backendPort, { terminationDelayMs: 2_000 });
    const client = await connect(t.port);
    const clientGot = collect(client);
    client.end(fromClient);
    const got = await clientGot;
    const result = await t.results[0]!;
    assert.equal(backendGots.length, 1);
    const atBackend = await backendGots[0]!;
    assert.equal(sha256(got.data), sha256(fromBackend));
    assert.equal(sha256(atBackend.data), sha256(fromClient));
    assert.equal(result.bytesFromClient, fromClient.length);
    assert.equal(result.bytesFromBackend, fromBackend.length);
    assert.equal(result.error, null);
    assert.equal(result.cutBy, null);
    await t.close();
    await close(backend);
  });

  /** A backend that answers `reply` after `delayMs` once it has read the client's EOF; `end` = FIN too. */
  async function lateAnswerBackend(delayMs: number, reply: string, end: boolean): Promise<net.Server> {
    const backend = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      socket.resume();
      socket.on("end", () => {
        setTimeout(() => {
          if (socket.destroyed) return;
          if (end) socket.end(reply);
          else socket.write(reply);
        }, delayMs);
      });
    });
    await listen(backend);
    return backend;
  }

  async function requestThenShutdown(backend: net.Server, options: RelayOptions) {
    const t = await tunnel((backend.address() as net.AddressInfo).port, options);
    const client = await connect(t.port);
    const got = collect(client);
    const started = Date.now();
    client.end("request");
    const answer = await got;
    const elapsed = Date.now() - started;
    const result = await t.results[0]!;
    await t.close();
    await close(backend);
    return { answer: answer.data.toString(), elapsed, result };
  }

  it("half-close: a reply sent after the client's FIN reaches the client within terminationDelay", async () => {
    const backend = await lateAnswerBackend(20, "response", true);
    const { answer, result } = await requestThenShutdown(backend, { terminationDelayMs: 100 });
    assert.equal(answer, "response");
    assert.equal(result.firstClose, "client");
    assert.equal(result.cutBy, null);
    assert.equal(result.error, null);
    assert.equal(result.bytesFromClient, "request".length);
    assert.equal(result.bytesFromBackend, "response".length);
  });

  it("cuts a backend that never closes once terminationDelay has passed", async () => {
    const backend = await lateAnswerBackend(10, "partial", false);
    const { answer, elapsed, result } = await requestThenShutdown(backend, { terminationDelayMs: 100 });
    assert.equal(answer, "partial");
    assert.ok(elapsed >= 90, `cut after ${elapsed}ms, expected about 100ms`);
    assert.ok(elapsed < 2_000, `cut after ${elapsed}ms, expected about 100ms`);
    assert.equal(result.cutBy, "terminationDelay");
    assert.equal(result.firstClose, "client");
  });

  it("a reply later than terminationDelay is lost; a negative delay waits for it", async () => {
    const cut = await requestThenShutdown(await lateAnswerBackend(300, "late", true), {
      terminationDelayMs: 100,
    });
    assert.equal(cut.answer, "");
    assert.equal(cut.result.cutBy, "terminationDelay");
    const waited = await requestThenShutdown(await lateAnswerBackend(300, "late", true), {
      terminationDelayMs: -1,
    });
    assert.equal(waited.answer, "late");
    assert.equal(waited.result.cutBy, null);
    assert.equal(waited.result.error, null);
  });

  it("backend half-close first: the client still sends and the backend's FIN reaches it", async () => {
    const backend = net.createServer({ allowHalfOpen: true }, (socket) => {
      const got = collect(socket);
      socket.end("banner\n");
      void got.then(() => {});
    });
    const backendPort = await listen(backend);
    const t = await tunnel(backendPort, { terminationDelayMs: 1_000 });
    const client = await connect(t.port);
    const got = collect(client);
    let sawEnd = false;
    client.once("end", () => {
      sawEnd = true;
      client.end("bye");
    });
    const answer = await got;
    const result = await t.results[0]!;
    assert.equal(answer.data.toString(), "banner\n");
    assert.ok(sawEnd);
    assert.equal(result.firstClose, "backend");
    assert.equal(result.bytesFromClient, 3);
    assert.equal(result.cutBy, null);
    await t.close();
    await close(backend);
  });

  it("an EOF read before the relay started is still propagated", async () => {
    const backend = await lateAnswerBackend(0, "pong", true);
    const backendPort = (backend.address() as net.AddressInfo).port;
    // Like a pipeline that read the whole request (and the FIN) before dialing.
    const t = await tunnel(backendPort, { terminationDelayMs: 500 }, async (client, upstream) => {
      const request = await new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        client.on("data", (c: Buffer) => chunks.push(c));
        client.once("end", () => resolve(Buffer.concat(chunks)));
      });
      client.removeAllListeners("data");
      upstream.write(request);
    });
    const client = await connect(t.port);
    const got = collect(client);
    client.end("ping");
    const answer = await got;
    const result = await t.results[0]!;
    assert.equal(answer.data.toString(), "pong");
    assert.equal(result.firstClose, "client");
    assert.equal(result.error, null);
    await t.close();
    await close(backend);
  });

  it("a backend reset tears down both sides and resolves with the error", async () => {
    const backend = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.once("data", () => socket.resetAndDestroy());
    });
    const backendPort = await listen(backend);
    const t = await tunnel(backendPort, { terminationDelayMs: -1 });
    const client = await connect(t.port, false);
    const got = collect(client);
    client.write("hello");
    const result = await t.results[0]!;
    await got;
    assert.equal(result.firstClose, "error");
    assert.equal(result.errorSide, "backend");
    assert.equal((result.error as NodeJS.ErrnoException | null)?.code, "ECONNRESET");
    assert.ok(client.destroyed);
    await t.close();
    await close(backend);
  });

  it("a client reset tears down the backend connection", async () => {
    let backendClosed: Promise<unknown> | null = null;
    const backend = net.createServer((socket) => {
      backendClosed = collect(socket);
    });
    const backendPort = await listen(backend);
    const t = await tunnel(backendPort, { terminationDelayMs: -1 });
    const client = await connect(t.port);
    client.write("hello");
    await new Promise((r) => setTimeout(r, 50));
    client.resetAndDestroy();
    const result = await t.results[0]!;
    assert.equal(result.firstClose, "error");
    assert.equal(result.errorSide, "client");
    assert.ok(backendClosed);
    await backendClosed;
    await t.close();
    await close(backend);
  });

  it("an idle bound cuts a silent tunnel", async () => {
    const backend = net.createServer({ allowHalfOpen: true }, (socket) => socket.resume());
    const backendPort = await listen(backend);
    const t = await tunnel(backendPort, { terminationDelayMs: -1, idleTimeoutMs: 100 });
    const client = await connect(t.port, false);
    const got = collect(client);
    client.write("x");
    await got;
    const result = await t.results[0]!;
    assert.equal(result.cutBy, "idleTimeout");
    assert.notEqual(result.error, null);
    await t.close();
    await close(backend);
  });

  it("a backend already gone when the relay starts closes the client at once", async () => {
    const backend = net.createServer((socket) => socket.resume());
    const backendPort = await listen(backend);
    const t = await tunnel(backendPort, { terminationDelayMs: -1 }, async (_client, upstream) => {
      upstream.destroy();
      await new Promise((r) => setTimeout(r, 20));
    });
    const client = await connect(t.port, false);
    await collect(client);
    const result = await t.results[0]!;
    assert.equal(result.firstClose, "error");
    await t.close();
    await close(backend);
  });
});

/**
 * A backend that reads nothing for `startAfterMs` (so a large upload fills the buffers and the relay
 * pauses the client), counts what arrives, and answers `done:<bytes>` once the client's end reaches it.
 */
function slowCountingBackend(startAfterMs: number, answer = true): net.Server {
  return net.createServer({ allowHalfOpen: true }, (socket) => {
    let bytes = 0;
    socket.pause();
    setTimeout(() => socket.resume(), startAfterMs);
    socket.on("data", (d: Buffer) => {
      bytes += d.length;
    });
    socket.on("end", () => {
      if (answer) socket.end(`done:${bytes}`);
    });
    socket.on("error", () => socket.destroy());
  });
}

const EIGHT_MIB = 8 << 20;

// Node delivers every end, so a client that never sends its FIN stands in for one whose FIN was lost.
describe("relay: the lost-end guard", { timeout: 30_000 }, () => {
  it("takes the end of a paused, then quiet client as read: the backend ends and the answer comes back", async () => {
    const backend = slowCountingBackend(200);
    const backendPort = await listen(backend);
    const options: RelayOptions = {
      terminationDelayMs: 2_000,
      lostEndGuard: { sides: ["client"], quietMs: 300 },
    };
    const t = await tunnel(backendPort, options);
    const client = await connect(t.port, false);
    const got = collect(client);
    client.write(Buffer.alloc(EIGHT_MIB, 0x61)); // and no end(): as if it had been lost
    const reply = await got;
    assert.equal(reply.data.toString(), `done:${EIGHT_MIB}`);
    const result = await t.results[0]!;
    assert.equal(result.assumedEnd, "client");
    assert.equal(result.firstClose, "client");
    assert.equal(result.error, null);
    assert.equal(result.bytesFromClient, EIGHT_MIB);
    assert.match(relayNote(result, options) ?? "", /client's end of stream was assumed after 300ms/);
    await t.close();
    await close(backend);
  });

  it("leaves a quiet client alone when it was never paused", async () => {
    const backendGot: Promise<{ data: Buffer }>[] = [];
    const backend = net.createServer({ allowHalfOpen: true }, (socket) => {
      backendGot.push(collect(socket));
      socket.on("end", () => socket.end());
    });
    const backendPort = await listen(backend);
    const t = await tunnel(backendPort, {
      terminationDelayMs: 2_000,
      lostEndGuard: { sides: ["client"], quietMs: 100 },
    });
    const client = await connect(t.port);
    const got = collect(client);
    client.write("first");
    await new Promise((r) => setTimeout(r, 400));
    client.end("second");
    await got;
    const result = await t.results[0]!;
    assert.equal(result.assumedEnd, null);
    assert.equal(result.error, null);
    assert.equal((await backendGot[0]!).data.toString(), "firstsecond");
    await t.close();
    await close(backend);
  });

  it("cuts the connection when the client speaks after its end was assumed", async () => {
    let backendEnded!: () => void;
    const sawEnd = new Promise<void>((resolve) => {
      backendEnded = resolve;
    });
    const backend = slowCountingBackend(200, false);
    backend.on("connection", (socket: net.Socket) => socket.on("end", () => backendEnded()));
    const backendPort = await listen(backend);
    const t = await tunnel(backendPort, {
      terminationDelayMs: -1,
      lostEndGuard: { sides: ["client"], quietMs: 300 },
    });
    const client = await connect(t.port, false);
    const got = collect(client);
    client.write(Buffer.alloc(EIGHT_MIB, 0x61));
    await sawEnd;
    client.write("more");
    await got;
    const result = await t.results[0]!;
    assert.equal(result.assumedEnd, "client");
    assert.equal(result.errorSide, "client");
    assert.match(result.error?.message ?? "", /sent more after its end was assumed/);
    await t.close();
    await close(backend);
  });

  it("lostEndGuardFor: only on Deno, only for TLS sides, only with a bound", () => {
    const plain = new net.Socket();
    const secure = new tls.TLSSocket(new net.Socket());
    try {
      assert.deepEqual(lostEndGuardFor(secure, plain, 1000, "node"), {});
      assert.deepEqual(lostEndGuardFor(secure, plain, 1000, "bun"), {});
      assert.deepEqual(lostEndGuardFor(secure, plain, 0, "deno"), {});
      assert.deepEqual(lostEndGuardFor(plain, plain, 1000, "deno"), {});
      assert.deepEqual(lostEndGuardFor(secure, plain, 1000, "deno"), {
        lostEndGuard: { sides: ["client"], quietMs: 1000 },
      });
      assert.deepEqual(lostEndGuardFor(secure, secure, 5, "deno").lostEndGuard?.sides, ["client", "backend"]);
    } finally {
      plain.destroy();
      secure.destroy();
    }
  });
});

describe("dialServer", { timeout: 30_000 }, () => {
  it("answers refused quickly when nothing listens", async () => {
    const server = net.createServer();
    const port = await listen(server);
    await close(server);
    const started = Date.now();
    const dialed = await dialServer(`${HOST}:${port}`, false, transport(), NO_PROXY);
    assert.equal(dialed.ok, false);
    assert.equal(!dialed.ok && dialed.code, "refused");
    assert.ok(Date.now() - started < 1_000);
  });

  it("refuses an address that is not host:port without dialing", async () => {
    const dialed = await dialServer("no-port", false, transport(), NO_PROXY);
    assert.equal(!dialed.ok && dialed.code, "other");
  });

  describe("a TCP connect that never completes", () => {
    // A listener whose process is stopped: the kernel queues `backlog + 1` connections, then drops SYNs.
    let child: ChildProcess;
    let port = 0;
    const fillers: net.Socket[] = [];
    before(async () => {
      child = spawn(
        process.execPath,
        [
          "-e",
          `const s = require("node:net").createServer(); s.listen({ port: 0, host: "${HOST}", backlog: 1 }, () => console.log(s.address().port));`,
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      port = await new Promise<number>((resolve) =>
        child.stdout?.once("data", (d: Buffer) => resolve(Number(d.toString().trim()))),
      );
      child.kill("SIGSTOP");
      for (let i = 0; i < 4; i++) {
        const filler = net.connect(port, HOST);
        filler.on("error", () => {});
        fillers.push(filler);
      }
      await new Promise((r) => setTimeout(r, 200));
    });
    after(() => {
      for (const filler of fillers) filler.destroy();
      child.kill("SIGKILL");
    });

    it("times out after dialTimeout", async () => {
      const started = Date.now();
      const dialed = await dialServer(`${HOST}:${port}`, false, transport({ dialTimeoutMs: 200 }), NO_PROXY);
      const elapsed = Date.now() - started;
      assert.equal(!dialed.ok && dialed.code, "timeout");
      assert.ok(elapsed >= 190 && elapsed < 2_000, `timed out after ${elapsed}ms`);
    });

    it("stops when its signal is aborted", async () => {
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 50);
      const started = Date.now();
      const dialed = await dialServer(
        `${HOST}:${port}`,
        false,
        transport({ dialTimeoutMs: 5_000 }),
        NO_PROXY,
        {
          signal: controller.signal,
        },
      );
      assert.equal(dialed.ok, false);
      assert.ok(Date.now() - started < 1_000);
    });
  });

  it("bounds the backend TLS handshake with the dial timeout", async () => {
    // Accepts and never answers the ClientHello.
    const silent = net.createServer((socket) => socket.resume());
    const port = await listen(silent);
    const started = Date.now();
    const dialed = await dialServer(
      `${HOST}:${port}`,
      true,
      transport({
        dialTimeoutMs: 200,
        tls: { serverName: "backend.test", insecureSkipVerify: false, ca: [], peerCertSANs: [] },
      }),
      NO_PROXY,
    );
    assert.equal(!dialed.ok && dialed.code, "timeout");
    assert.match(!dialed.ok ? dialed.message : "", /TLS handshake/);
    assert.ok(Date.now() - started < 2_000);
    await close(silent);
  });

  for (const version of [1, 2] as const) {
    it(`writes a PROXY v${version} header first, then the application bytes`, async () => {
      const received = new Promise<Buffer>((resolve) => {
        const server = net.createServer((socket) => {
          const got = collect(socket);
          void got.then(({ data }) => {
            resolve(data);
            server.close();
          });
        });
        void listen(server).then(async (port) => {
          const dialed = await dialServer(
            `${HOST}:${port}`,
            false,
            transport({ proxyProtocolVersion: version }),
            { src: { ip: "192.0.2.7", port: 40_000 }, dst: { ip: "198.51.100.1", port: 443 } },
          );
          assert.ok(dialed.ok);
          dialed.socket.end("hello");
        });
      });
      const data = await received;
      const header = decodeProxyHeader(data);
      assert.equal(header.kind, "header");
      if (header.kind !== "header") return;
      assert.equal(header.version, version);
      assert.deepEqual(header.src, { ip: "192.0.2.7", port: 40_000 });
      assert.deepEqual(header.dst, { ip: "198.51.100.1", port: 443 });
      assert.equal(data.subarray(header.consumed).toString(), "hello");
    });
  }

  describe("backend TLS", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-dial-"));
    const pki = makePki(dir);
    const ca = pki.ca("Backend CA");
    const otherCa = pki.ca("Other CA");
    const leaf = pki.leaf({ ca, cn: "backend.test", dns: ["backend.test", "*.svc.test"] });
    const clientCa = pki.ca("Client CA");
    const clientCert = pki.leaf({ ca: clientCa, cn: "tlsroute-client" });
    const uriLeaf = issueWithUri(ca, "spiffe://example.org/ns/db");

    let server: tls.Server;
    let port = 0;
    /** Per connection: the client certificate subject CN (null when none was verified). */
    const seen: { clientCn: string | null }[] = [];

    function issueWithUri(issuer: { certFile: string; keyFile: string }, uri: string) {
      const base = path.join(dir, "uri-leaf");
      writeFileSync(`${base}.ext`, `subjectAltName = URI:${uri}\nextendedKeyUsage = serverAuth\n`);
      const openssl = (args: string[]) =>
        execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });
      openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${base}.key`]);
      execFileSync("openssl", [
        "req",
        "-new",
        "-key",
        `${base}.key`,
        "-subj",
        "/CN=uri-only",
        "-out",
        `${base}.csr`,
      ]);
      openssl([
        "x509",
        "-req",
        "-in",
        `${base}.csr`,
        "-CA",
        issuer.certFile,
        "-CAkey",
        issuer.keyFile,
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        `${base}.ext`,
        "-out",
        `${base}.crt`,
      ]);
      return { certPem: readFileSync(`${base}.crt`, "utf8"), keyPem: readFileSync(`${base}.key`, "utf8") };
    }

    before(async () => {
      server = tls.createServer({
        key: leaf.keyPem,
        cert: leaf.certPem,
        ca: [clientCa.certPem],
        requestCert: true,
        rejectUnauthorized: false,
        SNICallback: (name, cb) => {
          const uriOnly = name === "uri.test";
          cb(
            null,
            tls.createSecureContext({
              ...(uriOnly
                ? { key: uriLeaf.keyPem, cert: uriLeaf.certPem }
                : { key: leaf.keyPem, cert: leaf.certPem }),
              // The context chosen by SNI replaces the server's: it needs the client CA too.
              ca: [clientCa.certPem],
            }),
          );
        },
      });
      server.on("secureConnection", (socket) => {
        const cert = socket.getPeerCertificate();
        const cn = socket.authorized && cert?.subject ? String(cert.subject.CN) : null;
        seen.push({ clientCn: cn });
        socket.on("error", () => {});
        socket.on("data", (d: Buffer) => socket.write(d));
        socket.on("end", () => socket.end());
      });
      server.on("tlsClientError", () => {});
      port = await listen(server);
    });
    after(() => close(server));

    async function echo(socket: net.Socket | tls.TLSSocket): Promise<string> {
      const got = collect(socket as net.Socket);
      socket.end("ping");
      return (await got).data.toString();
    }

    function withTls(tlsConfig: Partial<NonNullable<ResolvedTransport["tls"]>>): ResolvedTransport {
      return transport({
        tls: { serverName: "", insecureSkipVerify: false, ca: [], peerCertSANs: [], ...tlsConfig },
      });
    }

    it("verifies the backend against rootCAs and serverName, and relays through TLS", async () => {
      const dialed = await dialServer(
        `${HOST}:${port}`,
        true,
        withTls({ serverName: "backend.test", ca: [ca.certPem] }),
        NO_PROXY,
      );
      assert.ok(dialed.ok, dialed.ok ? "" : dialed.message);
      assert.ok(dialed.socket instanceof tls.TLSSocket);
      assert.equal(await echo(dialed.socket), "ping");
    });

    it("fails on a serverName the certificate does not cover", async () => {
      const dialed = await dialServer(
        `${HOST}:${port}`,
        true,
        withTls({ serverName: "wrong.test", ca: [ca.certPem] }),
        NO_PROXY,
      );
      assert.equal(!dialed.ok && dialed.code, "tls");
    });

    it("fails against an untrusted CA", async () => {
      const dialed = await dialServer(
        `${HOST}:${port}`,
        true,
        withTls({ serverName: "backend.test", ca: [otherCa.certPem] }),
        NO_PROXY,
      );
      assert.equal(!dialed.ok && dialed.code, "tls");
    });

    it("needs serverName or insecureSkipVerify, as Traefik does", async () => {
      const dialed = await dialServer(`${HOST}:${port}`, true, withTls({ ca: [ca.certPem] }), NO_PROXY);
      assert.equal(!dialed.ok && dialed.code, "tls");
      const none = await dialServer(`${HOST}:${port}`, true, transport(), NO_PROXY);
      assert.equal(!none.ok && none.code, "tls");
    });

    it("insecureSkipVerify accepts any certificate", async () => {
      const dialed = await dialServer(
        `${HOST}:${port}`,
        true,
        withTls({ insecureSkipVerify: true }),
        NO_PROXY,
      );
      assert.ok(dialed.ok, dialed.ok ? "" : dialed.message);
      assert.equal(await echo(dialed.socket), "ping");
    });

    it("presents the transport's client certificate (mTLS)", async () => {
      const before = seen.length;
      const dialed = await dialServer(
        `${HOST}:${port}`,
        true,
        withTls({
          serverName: "backend.test",
          ca: [ca.certPem],
          cert: clientCert.certPem,
          key: clientCert.keyPem,
        }),
        NO_PROXY,
      );
      assert.ok(dialed.ok, dialed.ok ? "" : dialed.message);
      assert.equal(await echo(dialed.socket), "ping");
      assert.equal(seen[before]?.clientCn, "tlsroute-client");
      const anonymous = await dialServer(
        `${HOST}:${port}`,
        true,
        withTls({ serverName: "backend.test", ca: [ca.certPem] }),
        NO_PROXY,
      );
      assert.ok(anonymous.ok);
      assert.equal(await echo(anonymous.socket), "ping");
      assert.equal(seen[before + 1]?.clientCn, null);
    });

    it("peerCertSANs: a DNSName (wildcards too) or URI must match, on a verified chain", async () => {
      const dial = (t: Partial<NonNullable<ResolvedTransport["tls"]>>, serverName = "backend.test") =>
        dialServer(`${HOST}:${port}`, true, withTls({ serverName, ...t }), NO_PROXY);
      const wildcard = await dial({
        ca: [ca.certPem],
        peerCertSANs: [{ type: "DNSName", value: "a.svc.test" }],
      });
      assert.ok(wildcard.ok, wildcard.ok ? "" : wildcard.message);
      wildcard.socket.destroy();
      const mismatch = await dial({
        ca: [ca.certPem],
        peerCertSANs: [{ type: "DNSName", value: "nope.test" }],
      });
      assert.equal(!mismatch.ok && mismatch.code, "tls");
      // With insecureSkipVerify the SAN check is the only one, but it still needs a trusted chain.
      const insecure = await dial({
        insecureSkipVerify: true,
        ca: [ca.certPem],
        peerCertSANs: [{ type: "DNSName", value: "backend.test" }],
      });
      assert.ok(insecure.ok, insecure.ok ? "" : insecure.message);
      insecure.socket.destroy();
      const untrusted = await dial({
        insecureSkipVerify: true,
        ca: [otherCa.certPem],
        peerCertSANs: [{ type: "DNSName", value: "backend.test" }],
      });
      assert.equal(!untrusted.ok && untrusted.code, "tls");
      const uri = await dial(
        {
          insecureSkipVerify: true,
          ca: [ca.certPem],
          peerCertSANs: [{ type: "URI", value: "SPIFFE://example.org/ns/db" }],
        },
        "uri.test",
      );
      assert.ok(uri.ok, uri.ok ? "" : uri.message);
      uri.socket.destroy();
      const wrongUri = await dial(
        {
          insecureSkipVerify: true,
          ca: [ca.certPem],
          peerCertSANs: [{ type: "URI", value: "spiffe://example.org/ns/web" }],
        },
        "uri.test",
      );
      assert.equal(!wrongUri.ok && wrongUri.code, "tls");
    });

    it("relays a half-close through a TLS backend (close_notify both ways)", async () => {
      const backend = tls.createServer(
        { key: leaf.keyPem, cert: leaf.certPem, allowHalfOpen: true },
        (socket) => {
          socket.resume();
          socket.on("end", () => setTimeout(() => socket.end("response"), 20));
        },
      );
      const backendPort = await listen(backend);
      const results: Promise<RelayResult>[] = [];
      const front = net.createServer({ allowHalfOpen: true }, (client) => {
        results.push(
          (async () => {
            const dialed = await dialServer(
              `${HOST}:${backendPort}`,
              true,
              withTls({ serverName: "backend.test", ca: [ca.certPem] }),
              NO_PROXY,
            );
            assert.ok(dialed.ok, dialed.ok ? "" : dialed.message);
            return relay(client, dialed.socket, { terminationDelayMs: 500 });
          })(),
        );
      });
      const client = await connect(await listen(front));
      const got = collect(client);
      client.end("request");
      assert.equal((await got).data.toString(), "response");
      const result = await results[0]!;
      assert.deepEqual([result.bytesFromClient, result.bytesFromBackend, result.error], [7, 8, null]);
      assert.equal(result.firstClose, "client");
      await close(front);
      await close(backend);
    });

    it("sends the PROXY header before the ClientHello", async () => {
      // A plain TCP listener that records the raw bytes: header, then a TLS record (0x16).
      const raw = await new Promise<Buffer>((resolve) => {
        const sniffer = net.createServer((socket) => {
          let got = Buffer.alloc(0);
          socket.on("data", (d: Buffer) => {
            got = Buffer.concat([got, d]);
            const header = decodeProxyHeader(got);
            if (header.kind === "header" && got.length > header.consumed) {
              resolve(got);
              socket.destroy();
              sniffer.close();
            }
          });
        });
        void listen(sniffer).then((snifferPort) =>
          dialServer(
            `${HOST}:${snifferPort}`,
            true,
            transport({
              dialTimeoutMs: 500,
              proxyProtocolVersion: 2,
              tls: {
                serverName: "backend.test",
                insecureSkipVerify: false,
                ca: [ca.certPem],
                peerCertSANs: [],
              },
            }),
            { src: { ip: "10.1.2.3", port: 5_555 }, dst: { ip: "10.1.2.4", port: 443 } },
          ),
        );
      });
      const header = decodeProxyHeader(raw);
      assert.equal(header.kind, "header");
      if (header.kind !== "header") return;
      assert.equal(raw[header.consumed], 0x16, "a TLS handshake record follows the header");
      assert.deepEqual(header.src, { ip: "10.1.2.3", port: 5_555 });
    });
  });
});
