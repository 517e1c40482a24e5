/**
 * Entry points on Bun's own sockets (src/proxy/bun-socket.ts, bun-connection.ts, bun-tunnel.ts) and,
 * for terminated connections, Bun's own TLS (terminate.ts, bun-stream.ts), instead of node:net and
 * node:tls: every entry point on Bun. This suite checks, on whichever runtime `TLSROUTE_RUNTIME` names,
 * what a user of such an entry point relies on. Passthrough and plain TCP: the backend's own
 * certificate, half-close both ways after a large upload into a backend that reads late
 * (backpressure), server-first protocols, failover and an unreachable service, the PROXY header to the
 * backend, terminationDelay, the drain on SIGTERM, a reload that adds a terminating router.
 * Terminated: the configured certificate, both half-closes, TLS options (versions, ALPN), the
 * handshake bounded by readTimeout, an unreachable backend, whoami's view of the session, a required
 * client certificate, the drain on SIGTERM.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { captureFirstBytes, hello, modernExtensions } from "./helpers/hello.ts";
import { type IssuedCert, makePki } from "./helpers/pki.ts";
import { runOn, runtimeUnderTest } from "./helpers/runtime.ts";
import { sleep, waitUntil } from "./helpers/scratch.ts";
import { plainExchange, type ServeProcess, startServe } from "./helpers/serve.ts";

const RUNTIME = runtimeUnderTest();
const HOST = "127.0.0.1";
const UPLOAD = 8 * 1024 * 1024;

interface Backends {
  tlsPort: number;
  greeterPort: number;
  greeterBPort: number;
  headerPort: number;
  silentPort: number;
  closedPort: number;
  servers: net.Server[];
  /** Sockets the silent backend holds (it never closes them itself). */
  silentSockets: net.Socket[];
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port)),
  );
}

/**
 * A backend connection that reads nothing for 300 ms (the proxy must hold the sender back), then
 * counts every byte and answers "done:N" after the client's end, still able to write (half-close).
 */
function countAfterEnd(socket: net.Socket): void {
  let received = 0;
  socket.pause();
  setTimeout(() => socket.resume(), 300);
  socket.on("data", (chunk: Buffer) => {
    received += chunk.length;
  });
  socket.on("end", () => socket.end(`done:${received}\n`));
  socket.on("error", () => socket.destroy());
}

async function startBackends(cert: IssuedCert): Promise<Backends> {
  // TLS backend reading late (countAfterEnd); its services give it more than those 300 ms to answer
  // after the client's end (terminationDelay).
  const tlsServer = tls.createServer(
    { cert: cert.certPem, key: cert.keyPem, allowHalfOpen: true },
    countAfterEnd,
  );
  // A server-first protocol, two servers of one service: each speaks before the client does, then echoes.
  const greeter = (name: string) =>
    net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.write(`hello from greeter ${name}\n`);
      socket.pipe(socket);
      socket.on("error", () => socket.destroy());
    });
  // After the client's end, answers with the first line it got (the PROXY header the proxy sent) and
  // the number of bytes after it.
  const header = net.createServer({ allowHalfOpen: true }, (socket) => {
    let text = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      text += chunk;
    });
    socket.on("end", () => {
      const end = text.indexOf("\r\n");
      socket.end(`${text.slice(0, end)}\n${text.length - end - 2}\n`);
    });
    socket.on("error", () => socket.destroy());
  });
  // Reads and never answers nor closes: only terminationDelay ends such a tunnel.
  const silentSockets: net.Socket[] = [];
  const silent = net.createServer({ allowHalfOpen: true }, (socket) => {
    silentSockets.push(socket);
    socket.resume();
    socket.on("error", () => socket.destroy());
  });
  const closed = net.createServer();
  const closedPort = await listen(closed);
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const servers = [tlsServer, greeter("A"), greeter("B"), header, silent];
  const [tlsPort, greeterPort, greeterBPort, headerPort, silentPort] = await Promise.all(servers.map(listen));
  return {
    tlsPort: tlsPort!,
    greeterPort: greeterPort!,
    greeterBPort: greeterBPort!,
    headerPort: headerPort!,
    silentPort: silentPort!,
    closedPort,
    servers,
    silentSockets,
  };
}

function configText(b: Backends, terminatingRouter: boolean): string {
  return `entryPoints:
  pass:
    address: "127.0.0.1:0"
    transport:
      lifeCycle:
        graceTimeOut: 1s
      respondingTimeouts:
        readTimeout: 1s
  lb:
    address: "127.0.0.1:0"
    transport:
      lifeCycle:
        graceTimeOut: 1s
    proxyProtocol:
      trustedIPs: ["127.0.0.1/32"]
  tcp:
    address: "127.0.0.1:0"
    transport:
      lifeCycle:
        graceTimeOut: 1s
tcp:
  routers:
    a:
      entryPoints: [pass]
      rule: "HostSNI(\`a.test\`)"
      service: a
      tls: { passthrough: true }
    failover:
      entryPoints: [pass]
      rule: "HostSNI(\`b.test\`)"
      service: failover
      tls: { passthrough: true }
    down:
      entryPoints: [pass]
      rule: "HostSNI(\`down.test\`)"
      service: down
      tls: { passthrough: true }
    held:
      entryPoints: [pass]
      rule: "HostSNI(\`held.test\`)"
      service: held
      tls: { passthrough: true }
    header:
      entryPoints: [pass]
      rule: "HostSNI(\`*\`)"
      service: header
    greeter:
      entryPoints: [tcp]
      rule: "HostSNI(\`*\`)"
      service: greeter
    behind-lb:
      entryPoints: [lb]
      rule: "HostSNI(\`*\`)"
      service: header
${
  terminatingRouter
    ? `    whoami:
      entryPoints: [pass]
      rule: "HostSNI(\`who.test\`)"
      service: whoami
      tls: {}
`
    : ""
}  services:
    a:
      loadBalancer:
        terminationDelay: 5000
        servers: [{ address: "127.0.0.1:${b.tlsPort}" }]
    failover:
      loadBalancer:
        terminationDelay: 5000
        servers: [{ address: "127.0.0.1:${b.closedPort}" }, { address: "127.0.0.1:${b.tlsPort}" }]
    down:
      loadBalancer:
        servers: [{ address: "127.0.0.1:${b.closedPort}" }]
    held:
      loadBalancer:
        terminationDelay: 300
        servers: [{ address: "127.0.0.1:${b.silentPort}" }]
    header:
      loadBalancer:
        proxyProtocol: { version: 1 }
        servers: [{ address: "127.0.0.1:${b.headerPort}" }]
    greeter:
      loadBalancer:
        servers: [{ address: "127.0.0.1:${b.greeterPort}" }, { address: "127.0.0.1:${b.greeterBPort}" }]
    whoami:
      loadBalancer:
        servers: [{ address: whoami@internal }]
`;
}

/** SIGTERM with `socket` the one open connection: serve waits for it up to graceTimeOut, closes it, exits 0. */
async function stopsAfterGrace(serve: ServeProcess, socket: net.Socket): Promise<void> {
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", () => undefined);
  const code = serve.stop("SIGTERM", 10_000);
  const shutting = await serve.waitFor((l) => l.msg === "shutting down", 5000);
  assert.equal(shutting.openConnections, 1);
  await closed;
  assert.equal(await code, 0);
  assert.equal(serve.lines.find((l) => l.msg === "stopped")?.forcedConnections, 1);
}

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** TLS through the proxy: `bytes` zeros, then end; resolves with the answer and the certificate seen. */
function uploadThenEnd(port: number, servername: string, ca: string, bytes: number) {
  return new Promise<{ reply: string; certificate: string }>((resolve, reject) => {
    const socket = tls.connect({ host: HOST, port, servername, ca });
    let reply = "";
    let certificate = "";
    socket.on("secureConnect", () => {
      certificate = socket.getPeerX509Certificate()?.fingerprint256 ?? "";
      socket.end(Buffer.alloc(bytes));
    });
    socket.setEncoding("utf8");
    socket.on("data", (text: string) => {
      reply += text;
    });
    socket.on("close", () => resolve({ reply, certificate }));
    socket.on("error", reject);
    setTimeout(
      () => reject(new Error(`no answer within 20 s (${reply.length} bytes so far)`)),
      20_000,
    ).unref();
  });
}

describe(`serve on ${RUNTIME}: entry points without TLS termination`, () => {
  const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-sockets-"));
  const configFile = path.join(dir, "tlsroute.yml");
  let backends: Backends;
  let cert: IssuedCert;
  let serve: ServeProcess;

  before(async () => {
    const pki = makePki(path.join(dir, "pki"));
    cert = pki.selfSigned({ cn: "a.test", dns: ["a.test", "b.test", "down.test"] });
    backends = await startBackends(cert);
    writeFileSync(configFile, configText(backends, false));
    serve = await startServe(["-c", configFile], { expectEntryPoints: 3 });
  });

  after(async () => {
    await serve?.stop("SIGKILL").catch(() => undefined);
    for (const socket of backends?.silentSockets ?? []) socket.destroy();
    for (const server of backends?.servers ?? []) server.close();
  });

  it("says which socket layer each entry point runs on (Bun's own sockets on Bun)", () => {
    for (const name of ["pass", "tcp", "lb"]) {
      const line = serve.lines.find((l) => l.msg === "listening" && l.entryPoint === name);
      assert.ok(line, `no listening line for ${name}`);
      assert.equal(line.sockets, RUNTIME === "bun" ? "bun" : undefined, JSON.stringify(line));
    }
  });

  it("passthrough: the backend's certificate, 8 MiB into a backend that reads late, half-close both ways", async () => {
    const result = await uploadThenEnd(serve.ports.get("pass")!, "a.test", cert.certPem, UPLOAD);
    assert.equal(result.reply, `done:${UPLOAD}\n`);
    assert.equal(result.certificate, fingerprint(cert.certPem));
    const access = await serve.waitFor((l) => l.msg === "connection" && l.router === "a", 5000);
    assert.equal(access.reason, "closed");
    assert.equal(access.mode, "passthrough");
    assert.equal(access.server, `127.0.0.1:${backends.tlsPort}`);
    // The encrypted upload and the TLS overhead around it.
    assert.ok(Number(access.bytesIn) > UPLOAD, `bytesIn ${String(access.bytesIn)}`);
    assert.ok(Number(access.bytesOut) > 0);
  });

  it("a server-first protocol gets its backend's greeting before sending a byte, then an echo", async () => {
    const greeting = await plainExchange(serve.ports.get("tcp")!, null, { until: /greeter [AB]\n/ });
    assert.match(greeting.text, /^hello from greeter [AB]\n$/);
    const echoed = await plainExchange(serve.ports.get("tcp")!, "ping\n", { until: /ping\n/ });
    assert.match(echoed.text, /^hello from greeter [AB]\nping\n$/);
    const access = await serve.waitFor((l) => l.msg === "connection" && l.router === "greeter", 5000);
    assert.equal(access.mode, "tcp");
  });

  it("round robin: connections alternate between a service's two servers", async () => {
    const names: string[] = [];
    for (let i = 0; i < 6; i++) {
      const { text } = await plainExchange(serve.ports.get("tcp")!, null, { until: /greeter [AB]\n/ });
      names.push(text.trim().slice(-1));
    }
    assert.deepEqual(
      names.map((n, i) => n === names[i % 2]),
      [true, true, true, true, true, true],
      names.join(""),
    );
    assert.notEqual(names[0], names[1], names.join(""));
  });

  it("a refused server is skipped for the next one; a service with none left is backend_unreachable", async () => {
    for (let i = 0; i < 3; i++) {
      const result = await uploadThenEnd(serve.ports.get("pass")!, "b.test", cert.certPem, 1000);
      assert.equal(result.reply, "done:1000\n");
    }
    await waitUntil(
      "three access lines",
      () => serve.accessLines().filter((l) => l.router === "failover").length >= 3,
    );
    const routed = serve.accessLines().filter((l) => l.router === "failover");
    assert.equal(routed.length, 3);
    for (const line of routed) assert.equal(line.server, `127.0.0.1:${backends.tlsPort}`);

    await assert.rejects(uploadThenEnd(serve.ports.get("pass")!, "down.test", cert.certPem, 10));
    const down = await serve.waitFor((l) => l.msg === "connection" && l.router === "down", 5000);
    assert.equal(down.reason, "backend_unreachable");
    assert.match(String(down.detail), new RegExp(`127\\.0\\.0\\.1:${backends.closedPort}: .*ECONNREFUSED`));
  });

  it("sends the PROXY header first: the backend sees the client's address and the entry point's", async () => {
    const port = serve.ports.get("pass")!;
    const result = await plainExchange(port, "ping\r\n", { endAfter: true });
    const match = /^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 (\d+) (\d+)\n6\n$/.exec(result.text);
    assert.ok(match, JSON.stringify(result.text));
    assert.equal(Number(match[2]), port);
    const access = await serve.waitFor((l) => l.msg === "connection" && l.router === "header", 5000);
    assert.equal(access.client, `127.0.0.1:${match[1]}`);
  });

  it("an inbound PROXY header sets the client that the outgoing header carries", async () => {
    // 2 MiB sent at once behind the header: what arrives while the backend is dialled waits in the
    // stream and is handed to the tunnel with the socket (on Bun).
    const inbound = "PROXY TCP4 10.1.2.3 127.0.0.1 5555 443\r\n";
    const body = "x".repeat(2 * 1024 * 1024);
    const result = await plainExchange(serve.ports.get("lb")!, `${inbound}${body}`, { endAfter: true });
    assert.equal(result.text, `PROXY TCP4 10.1.2.3 127.0.0.1 5555 443\n${body.length}\n`);
    const access = await serve.waitFor((l) => l.msg === "connection" && l.router === "behind-lb", 5000);
    assert.equal(access.client, "10.1.2.3:5555");
    assert.equal(access.bytesIn, body.length);
  });

  it("refusals keep their answers: an unknown name gets unrecognized_name; silence, readTimeout; a close, no_clienthello", async () => {
    const port = serve.ports.get("pass")!;
    const refused = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: HOST, port, servername: "nope.test", rejectUnauthorized: false });
      socket.on("error", (err: NodeJS.ErrnoException) => resolve(String(err.code)));
      socket.on("secureConnect", () => resolve("connected"));
    });
    assert.equal(refused, "ERR_SSL_TLSV1_UNRECOGNIZED_NAME");
    const noRoute = await serve.waitFor((l) => l.msg === "connection" && l.sni === "nope.test", 5000);
    assert.equal(noRoute.reason, "no_route");

    const silent = await plainExchange(port, null);
    assert.equal(silent.closed, true);
    const timeout = await serve.waitFor((l) => l.msg === "connection" && l.reason === "timeout", 5000);
    assert.ok(Number(timeout.durationMs) >= 900, `closed after ${String(timeout.durationMs)} ms`);

    let clientPort = 0;
    const socket = net.connect({ host: HOST, port }, () => {
      clientPort = socket.localPort ?? 0;
      socket.end();
    });
    await new Promise<void>((resolve) => socket.on("close", () => resolve()));
    const gone = await serve.waitFor((l) => l.msg === "connection" && l.reason === "no_clienthello", 5000);
    assert.equal(gone.client, `127.0.0.1:${clientPort}`);
  });

  it("terminationDelay: after the client's end, a backend that never ends is cut", async () => {
    const bytes = hello({ extensions: modernExtensions("held.test") });
    const started = Date.now();
    const result = await plainExchange(serve.ports.get("pass")!, bytes, { endAfter: true });
    assert.equal(result.closed, true);
    const access = await serve.waitFor((l) => l.msg === "connection" && l.router === "held", 5000);
    assert.equal(access.bytesIn, bytes.length);
    assert.ok(Date.now() - started < 10_000);
    assert.ok(backends.silentSockets.length >= 1, "the silent backend got the connection");
  });

  it("a busy address stops the start with exit 2 and says which entry point and why", async () => {
    const busy = net.createServer();
    const busyPort = await listen(busy);
    try {
      const result = await runOn(
        RUNTIME,
        ["serve", "-c", configFile, "--entrypoint", `tcp=${HOST}:${busyPort}`],
        {
          timeoutMs: 20_000,
        },
      );
      assert.equal(result.code, 2, result.stdout + result.stderr);
      assert.match(
        result.stdout + result.stderr,
        new RegExp(`entry point "tcp" cannot listen on ${HOST}:${busyPort}: the address is already in use`),
      );
    } finally {
      busy.close();
    }
  });

  it("a reload adding a terminating router serves it at once, on the same listener", async () => {
    writeFileSync(configFile, configText(backends, true));
    serve.child.kill("SIGHUP");
    await serve.waitFor((l) => l.msg === "configuration reloaded", 10_000);
    const pass = serve.lines.filter((l) => l.msg === "listening" && l.entryPoint === "pass");
    // Nothing to rebind: the address and the socket layer are unchanged (Bun's TLS terminates there).
    assert.equal(pass.length, 1);
    const port = Number(String(pass.at(-1)!.address).split(":").at(-1));
    const line = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect(
        { host: HOST, port, servername: "who.test", rejectUnauthorized: false },
        () => socket.end(),
      );
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        text += chunk;
      });
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
    });
    assert.equal((JSON.parse(line) as { router: string }).router, "whoami");
    // Passthrough still works on the new listener.
    const result = await uploadThenEnd(port, "a.test", cert.certPem, 100_000);
    assert.equal(result.reply, "done:100000\n");
  });

  it("SIGTERM waits for an open tunnel up to graceTimeOut, then closes it and stops", async () => {
    const port = Number(
      String(serve.lines.filter((l) => l.msg === "listening" && l.entryPoint === "pass").at(-1)!.address)
        .split(":")
        .at(-1),
    );
    const socket = tls.connect({ host: HOST, port, servername: "a.test", ca: cert.certPem });
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", reject);
    });
    await sleep(100);
    await stopsAfterGrace(serve, socket);
  });
});

/**
 * Plain backends for terminated connections. `late`: countAfterEnd (half-close, backpressure). `leaver`: says "bye" and ends its side
 * at once, then counts what the client still sends (the other half-close). `echo`: echoes.
 */
async function startPlainBackends() {
  const leaverCounts: number[] = [];
  const late = net.createServer({ allowHalfOpen: true }, countAfterEnd);
  const leaver = net.createServer({ allowHalfOpen: true }, (socket) => {
    let received = 0;
    socket.end("bye\n");
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length;
    });
    socket.on("end", () => leaverCounts.push(received));
    socket.on("error", () => socket.destroy());
  });
  const echo = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.pipe(socket);
    socket.on("error", () => socket.destroy());
  });
  const closed = net.createServer();
  const closedPort = await listen(closed);
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const servers = [late, leaver, echo];
  const [latePort, leaverPort, echoPort] = await Promise.all(servers.map(listen));
  return {
    latePort: latePort!,
    leaverPort: leaverPort!,
    echoPort: echoPort!,
    closedPort,
    servers,
    leaverCounts,
  };
}

function terminatingConfig(
  b: Awaited<ReturnType<typeof startPlainBackends>>,
  cert: IssuedCert,
  clientCa: IssuedCert,
): string {
  return `entryPoints:
  term:
    address: "127.0.0.1:0"
    transport:
      lifeCycle:
        graceTimeOut: 1s
      # Deno can lose a terminated connection's end after backpressure: idleTimeout bounds the wait (README).
      respondingTimeouts:
        readTimeout: 1s
        idleTimeout: 2s
  other:
    address: "127.0.0.1:0"
    transport:
      lifeCycle:
        graceTimeOut: 1s
      respondingTimeouts:
        readTimeout: 2s
tls:
  certificates:
    - certFile: ${cert.certFile}
      keyFile: ${cert.keyFile}
  options:
    modern:
      minVersion: VersionTLS13
    h2only:
      alpnProtocols: [h2]
    mtls:
      clientAuth:
        caFiles: [${clientCa.certFile}]
        clientAuthType: RequireAndVerifyClientCert
tcp:
  routers:
    late:
      entryPoints: [term]
      rule: "HostSNI(\`late.test\`)"
      service: late
      tls: {}
    leaver:
      entryPoints: [term]
      rule: "HostSNI(\`leaver.test\`)"
      service: leaver
      tls: {}
    modern:
      entryPoints: [term]
      rule: "HostSNI(\`modern.test\`)"
      service: echo
      tls: { options: modern }
    h2:
      entryPoints: [term]
      rule: "HostSNI(\`h2.test\`)"
      service: echo
      tls: { options: h2only }
    down:
      entryPoints: [term]
      rule: "HostSNI(\`down.test\`)"
      service: down
      tls: {}
    who:
      entryPoints: [other]
      rule: "HostSNI(\`who.test\`)"
      service: whoami
      tls: {}
    mtls:
      entryPoints: [other]
      rule: "HostSNI(\`mtls.test\`)"
      service: echo
      tls: { options: mtls }
  services:
    late:
      loadBalancer:
        terminationDelay: 5000
        servers: [{ address: "127.0.0.1:${b.latePort}" }]
    leaver:
      loadBalancer:
        terminationDelay: 5000
        servers: [{ address: "127.0.0.1:${b.leaverPort}" }]
    echo:
      loadBalancer:
        servers: [{ address: "127.0.0.1:${b.echoPort}" }]
    down:
      loadBalancer:
        servers: [{ address: "127.0.0.1:${b.closedPort}" }]
    whoami:
      loadBalancer:
        servers: [{ address: whoami@internal }]
`;
}

/** A TLS client that sends `text` and reads until the proxy closes; rejects with the TLS error code. */
function tlsExchange(port: number, options: tls.ConnectionOptions, text: string) {
  return new Promise<{ reply: string; alpn: string | false | null; version: string | null }>(
    (resolve, reject) => {
      // Read at the handshake: Node 20 crashes (SIGSEGV) on getProtocol() once the socket is closed.
      let version: string | null = null;
      const socket = tls.connect({ host: HOST, port, ...options }, () => {
        version = socket.getProtocol();
        socket.end(text);
      });
      let reply = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        reply += chunk;
      });
      socket.on("close", () => resolve({ reply, alpn: socket.alpnProtocol, version }));
      socket.on("error", (err: NodeJS.ErrnoException) => reject(new Error(String(err.code ?? err.message))));
    },
  );
}

describe(`serve on ${RUNTIME}: entry points terminating TLS to plain backends`, () => {
  const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-sockets-term-"));
  const configFile = path.join(dir, "tlsroute.yml");
  let backends: Awaited<ReturnType<typeof startPlainBackends>>;
  let cert: IssuedCert;
  let serve: ServeProcess;
  const port = () => serve.ports.get("term")!;

  before(async () => {
    const pki = makePki(path.join(dir, "pki"));
    const names = [
      "late.test",
      "leaver.test",
      "modern.test",
      "h2.test",
      "down.test",
      "who.test",
      "mtls.test",
    ];
    cert = pki.selfSigned({ cn: "late.test", dns: names });
    const clientCa = pki.selfSigned({ cn: "client CA" });
    backends = await startPlainBackends();
    writeFileSync(configFile, terminatingConfig(backends, cert, clientCa));
    serve = await startServe(["-c", configFile], { expectEntryPoints: 2 });
  });

  after(async () => {
    await serve?.stop("SIGKILL").catch(() => undefined);
    for (const server of backends?.servers ?? []) server.close();
  });

  it("on Bun, Bun's own sockets for every entry point", () => {
    const layer = (name: string) =>
      serve.lines.find((l) => l.msg === "listening" && l.entryPoint === name)?.sockets;
    assert.equal(layer("term"), RUNTIME === "bun" ? "bun" : undefined);
    assert.equal(layer("other"), RUNTIME === "bun" ? "bun" : undefined);
  });

  it("8 MiB into a backend that reads late, then the client's close_notify and FIN: the answer still comes back", async () => {
    const result = await uploadThenEnd(port(), "late.test", cert.certPem, UPLOAD);
    assert.equal(result.reply, `done:${UPLOAD}\n`);
    assert.equal(result.certificate, fingerprint(cert.certPem));
    const access = await serve.waitFor((l) => l.msg === "connection" && l.router === "late", 5000);
    assert.equal(access.reason, "closed");
    assert.equal(access.mode, "terminate");
    assert.equal(access.tlsVersion, "TLSv1.3");
    assert.equal(access.server, `127.0.0.1:${backends.latePort}`);
    // Decrypted bytes, as the backend saw them.
    assert.equal(access.bytesIn, UPLOAD);
    assert.equal(access.bytesOut, `done:${UPLOAD}\n`.length);
  });

  it("a backend that ends first: the client reads its end, then still sends, and the backend gets it", async () => {
    const got = await new Promise<string>((resolve, reject) => {
      // allowHalfOpen (documented for tls.connect, missing from its types): keep writing after the end.
      const options = {
        host: HOST,
        port: port(),
        servername: "leaver.test",
        ca: cert.certPem,
        allowHalfOpen: true,
      };
      const socket = tls.connect(options);
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        text += chunk;
      });
      socket.on("end", () => socket.end(Buffer.alloc(100_000)));
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
    });
    assert.equal(got, "bye\n");
    await waitUntil("the backend counted the client's bytes", () => backends.leaverCounts.length > 0);
    assert.deepEqual(backends.leaverCounts, [100_000]);
    const access = await serve.waitFor((l) => l.msg === "connection" && l.router === "leaver", 5000);
    assert.equal(access.reason, "closed");
    assert.equal(access.bytesIn, 100_000);
  });

  it("TLS options apply: TLS 1.3 only refuses a TLS 1.2 client (protocol_version); ALPN h2 is negotiated", async () => {
    await assert.rejects(
      tlsExchange(port(), { servername: "modern.test", ca: cert.certPem, maxVersion: "TLSv1.2" }, "x"),
      /ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION/,
    );
    const failed = await serve.waitFor((l) => l.msg === "connection" && l.router === "modern", 5000);
    assert.equal(failed.reason, "tls_handshake_failed");
    assert.match(String(failed.detail), /^TLS handshake: /);

    const h2 = await tlsExchange(
      port(),
      { servername: "h2.test", ca: cert.certPem, ALPNProtocols: ["h2", "http/1.1"] },
      "ping",
    );
    assert.deepEqual(h2, { reply: "ping", alpn: "h2", version: "TLSv1.3" });
  });

  /** A real ClientHello (Node's) for `servername`, to send by hand. */
  const helloFor = (servername: string) =>
    captureFirstBytes((capturePort) => {
      const socket = tls.connect({ host: HOST, port: capturePort, servername, rejectUnauthorized: false });
      socket.on("error", () => undefined);
      return { stop: () => socket.destroy() };
    });

  it("a ClientHello and then silence: the readTimeout ends the handshake", async () => {
    const clientHello = await helloFor("late.test");
    const started = Date.now();
    const result = await plainExchange(port(), clientHello);
    assert.equal(result.closed, true);
    // The server's handshake messages came back before the timeout.
    assert.ok(result.text.length > 0);
    const access = await serve.waitFor(
      (l) => l.msg === "connection" && l.router === "late" && l.reason === "timeout",
      5000,
    );
    assert.match(String(access.detail), /TLS handshake/);
    assert.ok(Date.now() - started >= 900, `closed after ${Date.now() - started} ms`);
  });

  it("clients that break off at each step (reset after the hello, garbage after it, FIN after it, reset after the handshake) leave serve running and nothing open", async () => {
    const clientHello = await helloFor("late.test");
    const before = serve.accessLines().length;
    const raw = (then: (socket: net.Socket) => void) =>
      new Promise<void>((resolve) => {
        const socket = net.connect({ host: HOST, port: port() }, () => {
          socket.write(clientHello);
          then(socket);
        });
        socket.on("error", () => undefined);
        // Read (and drop) the server's answer, or its end would never be seen.
        socket.resume();
        socket.on("close", () => resolve());
      });
    const rounds = 10;
    for (let i = 0; i < rounds; i++) {
      await Promise.all([
        raw((socket) => socket.resetAndDestroy()),
        raw((socket) => socket.end(Buffer.alloc(100, 0x41))),
        raw((socket) => socket.end()),
        new Promise<void>((resolve) => {
          // A TLS socket cannot reset; the TCP socket beneath it can.
          const tcp = net.connect({ host: HOST, port: port() });
          const socket = tls.connect({ socket: tcp, servername: "late.test", ca: cert.certPem });
          socket.on("secureConnect", () => tcp.resetAndDestroy());
          socket.on("error", () => undefined);
          tcp.on("error", () => undefined);
          tcp.on("close", () => resolve());
        }),
      ]);
    }
    // One access line each: every connection was seen to its end.
    await waitUntil("an access line per connection", () => serve.accessLines().length >= before + rounds * 4);
    assert.equal(serve.child.exitCode, null);
    const ok = await tlsExchange(port(), { servername: "h2.test", ca: cert.certPem }, "still here");
    assert.equal(ok.reply, "still here");
    // The SIGTERM case below counts exactly its own connection as open: these left nothing behind.
  });

  it("a server that refuses the connection after the handshake: backend_unreachable", async () => {
    // Closed with nothing said; a reset when the client's byte arrives after the close (node:tls).
    const outcome = await tlsExchange(port(), { servername: "down.test", ca: cert.certPem }, "x").then(
      (result) => `reply "${result.reply}"`,
      (error: Error) => error.message,
    );
    assert.ok(outcome === 'reply ""' || outcome === "ECONNRESET", outcome);
    const down = await serve.waitFor((l) => l.msg === "connection" && l.router === "down", 5000);
    assert.equal(down.reason, "backend_unreachable");
    assert.match(String(down.detail), /ECONNREFUSED/);
  });

  it("whoami reports the TLS session; a client without the certificate the router requires is refused", async () => {
    const other = serve.ports.get("other")!;
    const who = await tlsExchange(other, { servername: "who.test", ca: cert.certPem }, "");
    const seen = JSON.parse(who.reply) as Record<string, unknown>;
    assert.equal(seen.router, "who");
    assert.equal(seen.mode, "terminate");
    assert.equal(seen.tlsVersion, "TLSv1.3");
    assert.match(String(seen.cipher), /^TLS_/);
    await assert.rejects(
      tlsExchange(other, { servername: "mtls.test", ca: cert.certPem }, "x").then((r) => {
        // TLS 1.3: the refusal can come after the client's side of the handshake finished.
        if (r.reply === "") throw new Error("refused after the handshake");
        return r;
      }),
    );
    const refused = await serve.waitFor((l) => l.msg === "connection" && l.router === "mtls", 5000);
    assert.equal(refused.reason, "client_cert_required");

    // A ClientHello and the client's FIN at once, on the path that checks client certificates: the
    // handshake fails at once, as in Traefik, not at the entry point's readTimeout (terminate.ts).
    const gone = await plainExchange(other, await helloFor("mtls.test"), { endAfter: true });
    assert.equal(gone.closed, true);
    const abandoned = await serve.waitFor(
      (l) => l.msg === "connection" && l.router === "mtls" && l !== refused,
      5000,
    );
    assert.equal(abandoned.reason, "tls_handshake_failed", JSON.stringify(abandoned));
  });

  it("TLSROUTE_SOCKETS=node keeps node:net and node:tls (on Bun); a terminated upload still gets its answer", async () => {
    const other = await startServe(["-c", configFile], {
      expectEntryPoints: 2,
      env: { TLSROUTE_SOCKETS: "node" },
    });
    try {
      const line = other.lines.find((l) => l.msg === "listening" && l.entryPoint === "term");
      assert.equal(line?.sockets, RUNTIME === "bun" ? "node:net" : undefined);
      const result = await uploadThenEnd(other.ports.get("term")!, "late.test", cert.certPem, UPLOAD);
      assert.equal(result.reply, `done:${UPLOAD}\n`);
    } finally {
      await other.stop("SIGKILL");
    }
  });

  it("SIGTERM waits for an open terminated connection up to graceTimeOut, then closes it", async () => {
    const socket = tls.connect({ host: HOST, port: port(), servername: "h2.test", ca: cert.certPem });
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", reject);
    });
    socket.write("ping");
    await new Promise<void>((resolve) => socket.once("data", () => resolve()));
    await stopsAfterGrace(serve, socket);
  });
});
