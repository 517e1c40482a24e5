/**
 * Entry points whose routers never terminate TLS: passthrough and plain TCP. On Bun they run on Bun's
 * own sockets (src/proxy/bun-socket.ts, bun-tunnel.ts) instead of node:net; this suite checks, on
 * whichever runtime `TLSROUTE_RUNTIME` names, what a user of such an entry point relies on: the
 * backend's own certificate, half-close both ways after a large upload into a backend that reads
 * late (backpressure), server-first protocols, failover and an unreachable service, the PROXY header
 * to the backend, terminationDelay, the drain on SIGTERM, and a reload that adds a terminating router
 * to such an entry point (on Bun it moves to node:net, whose TLS carries a half-close).
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { hello, modernExtensions } from "./helpers/hello.ts";
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

async function startBackends(cert: IssuedCert): Promise<Backends> {
  // TLS backend: reads nothing for 300 ms (the proxy must hold the sender back), then counts every
  // byte and answers "done:N" after the client's end, still able to write (half-close). Its services
  // give it more than that 300 ms to answer after the client's end (terminationDelay).
  const tlsServer = tls.createServer(
    { cert: cert.certPem, key: cert.keyPem, allowHalfOpen: true },
    (socket) => {
      let received = 0;
      socket.pause();
      setTimeout(() => socket.resume(), 300);
      socket.on("data", (chunk: Buffer) => {
        received += chunk.length;
      });
      socket.on("end", () => socket.end(`done:${received}\n`));
      socket.on("error", () => socket.destroy());
    },
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

  it("a reload adding a terminating router serves it at once (on Bun: the entry point moves to node:net)", async () => {
    writeFileSync(configFile, configText(backends, true));
    serve.child.kill("SIGHUP");
    await serve.waitFor((l) => l.msg === "configuration reloaded", 10_000);
    const pass = serve.lines.filter((l) => l.msg === "listening" && l.entryPoint === "pass");
    if (RUNTIME === "bun") assert.equal(pass.at(-1)?.sockets, "node:net");
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
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.on("error", () => undefined);
    await sleep(100);
    const code = serve.stop("SIGTERM", 10_000);
    const shutting = await serve.waitFor((l) => l.msg === "shutting down", 5000);
    assert.equal(shutting.openConnections, 1);
    await closed;
    assert.equal(await code, 0);
    const stopped = serve.lines.find((l) => l.msg === "stopped");
    assert.equal(stopped?.forcedConnections, 1);
  });
});
