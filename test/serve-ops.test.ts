/**
 * `tlsroute serve` operated end to end: the built CLI runs as a subprocess with JSON logs, clients and
 * backends are real sockets on 127.0.0.1, configurations live in temp directories and every entry
 * point is bound on port 0 through `--entrypoint NAME=127.0.0.1:0`.
 *
 * Covered: plain TCP next to TLS routers and the server-first fast path, ipAllowList and inFlightConn,
 * weighted / round-robin balancing with dial failover, PROXY v1/v2 headers, backend TLS, half-close
 * with terminationDelay, health checks, reload (SIGHUP, broken file, --watch), graceful shutdown
 * (SIGTERM/SIGINT), startup errors and robustness (resets, bad bytes, 200 concurrent connections).
 *
 * Each `it` owns its serve process and backends, so the cases run concurrently. Run `npm run build`
 * first: the tests run dist/ through bin/tlsroute.mjs.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { renameSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import tls from "node:tls";
import YAML from "yaml";
import { decodeProxyHeader } from "../src/wire/proxy-protocol.ts";
import { BIN } from "./helpers/cli.ts";
import { type IssuedCert, makePki, type TestCa } from "./helpers/pki.ts";
import { scratchDirs, sleep, waitUntil } from "./helpers/scratch.ts";
import { expectRefused, type LogLine, type ServeProcess, startServe } from "./helpers/serve.ts";

const HOST = "127.0.0.1";
/** A second loopback address (Linux answers the whole 127/8): a client that is "not 127.0.0.1". */
const OTHER_HOST = "127.0.0.2";
const WAIT_MS = 15_000;
/** Each case ends well within this; a hang fails the case instead of the whole run. */
const CASE = { timeout: 60_000 };

const scratch = scratchDirs("tlsroute-serve-ops");
const tempDir = scratch.dir;

// ---------------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------------

interface Backend {
  port: number;
  /** "127.0.0.1:PORT", as a configuration names it and as access lines report it. */
  address: string;
  /** Stops listening and destroys its connections. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  restart(): Promise<void>;
}

type Handler = (socket: net.Socket) => void;

function startBackend(t: TestContext, handler: Handler, tlsOptions?: tls.TlsOptions): Promise<Backend> {
  const sockets = new Set<net.Socket>();
  const onSocket = (socket: net.Socket) => {
    socket.on("error", () => socket.destroy());
    handler(socket);
  };
  const server = tlsOptions
    ? tls.createServer({ ...tlsOptions, allowHalfOpen: true }, onSocket)
    : net.createServer({ allowHalfOpen: true }, onSocket);
  // The TCP sockets, TLS handshakes that never completed included: stop() must end them all.
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  // A failed TLS handshake (tlsroute refusing our certificate) must not crash the test process.
  server.on("tlsClientError", () => {});
  let listening = false;
  const listenOn = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, HOST, () => {
        server.removeListener("error", reject);
        listening = true;
        resolve((server.address() as net.AddressInfo).port);
      });
    });
  const stop = async () => {
    for (const socket of sockets) socket.destroy();
    if (!listening) return;
    listening = false;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.after(stop);
  return listenOn(0).then((port) => ({
    port,
    address: `${HOST}:${port}`,
    stop,
    restart: async () => {
      await listenOn(port);
    },
  }));
}

/** Answers every chunk with `NAME:chunk`; ends when the client ends. */
function echo(name: string): Handler {
  return (socket) => {
    socket.on("data", (chunk: Buffer) => socket.write(`${name}:${chunk.toString()}`));
    socket.on("end", () => socket.end());
  };
}

/** Says its name first (a server-first protocol), then closes its side. */
function greeter(name: string): Handler {
  return (socket) => {
    socket.end(`${name}\n`);
    socket.resume();
  };
}

/** Answers the first chunk with its name and closes (the client speaks first). */
function namer(name: string): Handler {
  return (socket) => {
    socket.once("data", () => socket.end(`${name}\n`));
    socket.on("end", () => socket.end());
  };
}

/** A port nothing listens on: bound once, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  const port = await new Promise<number>((resolve) =>
    server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port)),
  );
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ---------------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------------

/**
 * Where each serve process's log stood just before a connection was opened: its access line comes
 * after that point. Client ports are reused, so the client address alone can match an older line.
 */
type LogMarks = Map<ServeProcess, number>;

function logMarks(): LogMarks {
  return new Map([...running].map((proc) => [proc, proc.lines.length]));
}

/** What identifies one connection in the access log. */
interface Connection {
  id: string;
  since: LogMarks;
  /** The entry point's port: a client port can be reused at once towards another entry point. */
  serverPort: number;
}

interface Client extends Connection {
  socket: net.Socket;
  localPort: number;
  /** `127.0.0.1:PORT`: what the access line names as client. */
  id: string;
  /** Everything received so far that `line()` has not taken. */
  pending(): string;
  /** The next line received (without its newline); rejects when the connection closes first. */
  line(timeoutMs?: number): Promise<string>;
  /** Writes `text\n`, resolves with the next line. */
  ask(text: string): Promise<string>;
  /** Resolves when the connection is closed, with the error it closed on, if any. */
  closed: Promise<Error | null>;
  isClosed(): boolean;
}

function connect(port: number, options: { localAddress?: string } = {}): Promise<Client> {
  return new Promise((resolve, reject) => {
    const since = logMarks();
    const socket = net.connect({ host: HOST, port, ...options });
    let buffer = "";
    let closedFlag = false;
    let lastError: Error | null = null;
    const listeners = new Set<() => void>();
    const notify = () => {
      for (const l of [...listeners]) l();
    };
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      notify();
    });
    const closed = new Promise<Error | null>((resolveClosed) => {
      socket.once("close", () => {
        closedFlag = true;
        notify();
        resolveClosed(lastError);
      });
    });
    socket.once("error", (error) => {
      lastError = error;
      reject(error);
    });
    socket.once("connect", () => {
      const localPort = socket.localPort ?? 0;
      const client: Client = {
        socket,
        localPort,
        id: `${socket.localAddress}:${localPort}`,
        since,
        serverPort: port,
        pending: () => buffer,
        line: (timeoutMs = WAIT_MS) =>
          new Promise<string>((resolveLine, rejectLine) => {
            const check = () => {
              const nl = buffer.indexOf("\n");
              if (nl !== -1) {
                const text = buffer.slice(0, nl);
                buffer = buffer.slice(nl + 1);
                done();
                resolveLine(text);
              } else if (closedFlag) {
                done();
                rejectLine(new Error(`connection closed before a line; received ${JSON.stringify(buffer)}`));
              }
            };
            const timer = setTimeout(() => {
              done();
              rejectLine(new Error(`no line within ${timeoutMs}ms; received ${JSON.stringify(buffer)}`));
            }, timeoutMs);
            const done = () => {
              clearTimeout(timer);
              listeners.delete(check);
            };
            listeners.add(check);
            check();
          }),
        ask: (text) => {
          socket.write(`${text}\n`);
          return client.line();
        },
        closed,
        isClosed: () => closedFlag,
      };
      resolve(client);
    });
  });
}

/** Connects, sends `send` (if any), half-closes if asked, and collects everything until the close. */
async function request(
  port: number,
  options: { send?: string; end?: boolean; localAddress?: string; timeoutMs?: number } = {},
): Promise<Connection & { data: string; error: Error | null }> {
  const client = await connect(port, options.localAddress ? { localAddress: options.localAddress } : {});
  if (options.send !== undefined) client.socket.write(options.send);
  if (options.end) client.socket.end();
  const timeoutMs = options.timeoutMs ?? WAIT_MS;
  const timer = setTimeout(
    () => client.socket.destroy(new Error(`still open after ${timeoutMs}ms`)),
    timeoutMs,
  );
  const error = await client.closed;
  clearTimeout(timer);
  if (error?.message.startsWith("still open")) throw error;
  return { data: client.pending(), id: client.id, since: client.since, serverPort: client.serverPort, error };
}

/**
 * One question on a fresh connection: connect, send `text\n`, read the answer line, close. The
 * client closes only after the answer: a client that half-closes first gives the backend just
 * terminationDelay (100ms) to answer, which a loaded machine can miss.
 */
async function askOnce(port: number, text: string): Promise<Connection & { answer: string }> {
  const client = await connect(port);
  try {
    const answer = await client.ask(text);
    return { id: client.id, since: client.since, serverPort: client.serverPort, answer };
  } finally {
    client.socket.end();
  }
}

// ---------------------------------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------------------------------

interface Running {
  serve: ServeProcess;
  file: string;
  dir: string;
  port(entryPoint: string): number;
  /** The access line of one connection. */
  access(connection: Connection): Promise<LogLine>;
  /** Index into serve.lines, to wait for lines that come after it. */
  mark(): number;
  waitAfter(mark: number, match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
}

type Config = Record<string, unknown>;

/** Every serve process started here: killed at the end whatever happened to its case. */
const running = new Set<ServeProcess>();
after(async () => {
  await Promise.all([...running].map((proc) => proc.stop("SIGKILL", 5_000)));
});
process.on("exit", () => {
  for (const proc of running) if (proc.child.exitCode === null) proc.child.kill("SIGKILL");
});

function writeConfig(file: string, config: Config): void {
  writeFileSync(file, YAML.stringify(config));
}

/** Entry points bound on port 0 by the config and by --entrypoint, with a plain 30s readTimeout. */
function entryPoints(names: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return Object.fromEntries(
    names.map((name) => [
      name,
      { address: `${HOST}:0`, transport: { respondingTimeouts: { readTimeout: "30s" } }, ...extra },
    ]),
  );
}

function lb(...addresses: string[]): Config {
  return { loadBalancer: { servers: addresses.map((address) => ({ address })) } };
}

async function serve(
  t: TestContext,
  label: string,
  config: Config,
  options: { args?: string[]; configDirectory?: boolean } = {},
): Promise<Running> {
  const dir = tempDir(label);
  const file = path.join(dir, "tlsroute.yml");
  writeConfig(file, config);
  const names = Object.keys((config.entryPoints as Record<string, unknown> | undefined) ?? {});
  const args = [
    "-c",
    options.configDirectory ? dir : file,
    ...names.flatMap((n) => ["--entrypoint", `${n}=${HOST}:0`]),
    ...(options.args ?? []),
  ];
  const proc = await startServe(args, { expectEntryPoints: names.length, startTimeoutMs: 30_000 });
  running.add(proc);
  t.after(async () => {
    await proc.stop("SIGKILL", 5_000);
  });
  const waitAfter = (mark: number, match: (line: LogLine) => boolean, timeoutMs = WAIT_MS) =>
    proc.waitFor((line) => proc.lines.indexOf(line) >= mark && match(line), timeoutMs);
  return {
    serve: proc,
    file,
    dir,
    port(entryPoint) {
      const port = proc.ports.get(entryPoint);
      assert.ok(port, `entry point ${entryPoint} is listening`);
      return port;
    },
    access: ({ id, since, serverPort }) => {
      const from = since.get(proc) ?? 0;
      const entryPoint = [...proc.ports].find(([, p]) => p === serverPort)?.[0];
      return waitAfter(
        from,
        (l) =>
          l.msg === "connection" &&
          l.client === id &&
          (entryPoint === undefined || l.entryPoint === entryPoint),
      );
    },
    mark: () => proc.lines.length,
    waitAfter,
  };
}

/** Runs `tlsroute serve ARGS` to its exit (without blocking the event loop the other cases share). */
function serveToExit(
  args: string[],
  options: { cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, "serve", ...args], {
      cwd: options.cwd ?? process.cwd(),
      env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      stderr += c;
    });
    const timeoutMs = options.timeoutMs ?? 15_000;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(
          `tlsroute serve did not exit within ${timeoutMs}ms\nstdout:\n${stdout}\nstderr:\n${stderr}`,
        ),
      );
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      // Let the pipes drain.
      setImmediate(() => resolve({ code, stdout, stderr }));
    });
  });
}

function jsonLines(stdout: string): LogLine[] {
  return stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as LogLine);
}

function tally(items: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of items) out[item] = (out[item] ?? 0) + 1;
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Shared PKI for backend TLS (openssl runs before the concurrent cases start)
// ---------------------------------------------------------------------------------------------------

let backendCa: TestCa;
let backendCert: IssuedCert;
let canUseOtherHost = false;

before(async () => {
  const pki = makePki(path.join(scratch.root, "pki"));
  backendCa = pki.ca("backend-ca");
  backendCert = pki.leaf({ ca: backendCa, cn: "backend.internal", dns: ["backend.internal"] });
  canUseOtherHost = await new Promise<boolean>((resolve) => {
    const server = net
      .createServer((s) => s.destroy())
      .listen(0, HOST, () => {
        const socket = net.connect({
          host: HOST,
          port: (server.address() as net.AddressInfo).port,
          localAddress: OTHER_HOST,
        });
        const done = (ok: boolean) => {
          socket.destroy();
          server.close();
          resolve(ok);
        };
        socket.once("connect", () => done(true));
        socket.once("error", () => done(false));
      });
  });
});

// ---------------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------------

// Six cases at a time: enough to keep the file short, few enough that a 2-core CI machine does not
// starve the timing-sensitive ones (terminationDelay, health intervals, grace periods).
describe("serve operations", { concurrency: 6 }, () => {
  it(
    "routes a plain client that writes first to a non-TLS catch-all next to TLS routers, and greets server-first clients at once",
    CASE,
    async (t) => {
      const plain = await startBackend(t, echo("plain"));
      const smtp = await startBackend(t, (socket) => {
        socket.write("220 mail.test ESMTP ready\r\n");
        socket.on("data", (chunk: Buffer) => {
          if (chunk.toString().startsWith("QUIT")) socket.end("221 bye\r\n");
        });
        socket.on("end", () => socket.end());
      });
      const run = await serve(t, "plain", {
        entryPoints: entryPoints(["mixed", "mail"]),
        tcp: {
          routers: {
            site: { entryPoints: ["mixed"], rule: "HostSNI(`site.test`)", service: "whoami", tls: {} },
            plain: { entryPoints: ["mixed"], rule: "HostSNI(`*`)", service: "plain" },
            smtp: { entryPoints: ["mail"], rule: "HostSNI(`*`)", service: "smtp" },
          },
          services: { whoami: lb("whoami@internal"), plain: lb(plain.address), smtp: lb(smtp.address) },
        },
      });

      // Plain bytes on an entry point with TLS routers: read, classified as not TLS, routed to the catch-all.
      const client = await connect(run.port("mixed"));
      assert.equal(await client.ask("hello"), "plain:hello");
      assert.equal(await client.ask("again"), "plain:again");
      client.socket.end();
      await client.closed;
      const plainLine = await run.access(client);
      assert.equal(plainLine.router, "plain");
      assert.equal(plainLine.mode, "tcp");
      assert.equal(plainLine.server, plain.address);
      assert.equal(plainLine.reason, "closed");
      assert.equal(plainLine.bytesIn, "hello\nagain\n".length);
      assert.equal(plainLine.bytesOut, "plain:hello\nplain:again\n".length);

      // The TLS router on the same port still takes TLS clients.
      const tlsAnswer = await new Promise<string>((resolve, reject) => {
        let text = "";
        const socket = tls.connect({
          host: HOST,
          port: run.port("mixed"),
          servername: "site.test",
          rejectUnauthorized: false,
        });
        socket.setEncoding("utf8");
        socket.on("data", (c: string) => {
          text += c;
        });
        socket.on("error", reject);
        socket.on("close", () => resolve(text));
      });
      assert.equal((JSON.parse(tlsAnswer.trim()) as { router: string }).router, "site");

      // Server-first: the entry point has only a plain router, so nothing is read before routing and
      // the backend's banner reaches a client that only listens.
      const started = Date.now();
      const mail = await connect(run.port("mail"));
      // Well under the entry point's 30s readTimeout, which a read-first pipeline would wait out.
      assert.equal(await mail.line(10_000), "220 mail.test ESMTP ready\r");
      assert.ok(Date.now() - started < 10_000, `banner after ${Date.now() - started}ms`);
      assert.equal(await mail.ask("QUIT\r"), "221 bye\r");
      await mail.closed;
      const mailLine = await run.access(mail);
      assert.equal(mailLine.router, "smtp");
      assert.equal(mailLine.mode, "tcp");
      assert.equal(mailLine.reason, "closed");
      assert.equal(mailLine.bytesIn, "QUIT\r\n".length);
      assert.equal(mailLine.bytesOut, "220 mail.test ESMTP ready\r\n221 bye\r\n".length);
    },
  );

  it(
    "ipAllowList refuses a client outside the source range and lets an allowed one through",
    CASE,
    async (t) => {
      if (!canUseOtherHost) return t.skip(`cannot connect from ${OTHER_HOST} on this machine`);
      const backend = await startBackend(t, echo("guarded"));
      const run = await serve(t, "allowlist", {
        entryPoints: entryPoints(["guarded", "mixed"]),
        tcp: {
          routers: {
            guarded: {
              entryPoints: ["guarded", "mixed"],
              rule: "HostSNI(`*`)",
              service: "b",
              middlewares: ["local-only"],
            },
            tls: { entryPoints: ["mixed"], rule: "HostSNI(`x.test`)", service: "b", tls: {} },
          },
          services: { b: lb(backend.address) },
          middlewares: { "local-only": { ipAllowList: { sourceRange: ["127.0.0.1/32", "::1/128"] } } },
        },
      });
      for (const ep of ["guarded", "mixed"]) {
        const allowed = await connect(run.port(ep));
        assert.equal(await allowed.ask("hi"), "guarded:hi");
        allowed.socket.end();

        const denied = await request(run.port(ep), { send: "hi\n", localAddress: OTHER_HOST });
        assert.equal(denied.data, "", "a denied client gets no byte");
        const line = await run.access(denied);
        assert.equal(line.reason, "ip_denied");
        assert.equal(line.router, "guarded");
        assert.equal(line.server, null);
        assert.match(String(line.detail), /local-only/);
        assert.equal((await run.access(allowed)).reason, "closed");
      }
    },
  );

  it("ipAllowList closes a denied client at once on a server-first entry point, without waiting for a byte", {
    ...CASE,
  }, async (t) => {
    if (!canUseOtherHost) return t.skip(`cannot connect from ${OTHER_HOST} on this machine`);
    const backend = await startBackend(t, greeter("banner"));
    const run = await serve(t, "allowlist-fast", {
      entryPoints: entryPoints(["guarded"]),
      tcp: {
        routers: { guarded: { rule: "HostSNI(`*`)", service: "b", middlewares: ["local-only"] } },
        services: { b: lb(backend.address) },
        middlewares: { "local-only": { ipAllowList: { sourceRange: ["127.0.0.1/32"] } } },
      },
    });
    assert.equal((await request(run.port("guarded"))).data, "banner\n");
    // Traefik runs the middleware chain on the fast path before reading anything: the refused client
    // is closed right away, not after the entry point's 30s readTimeout.
    const denied = await request(run.port("guarded"), { localAddress: OTHER_HOST, timeoutMs: 10_000 });
    assert.equal(denied.data, "");
    assert.equal((await run.access(denied)).reason, "ip_denied");
  });

  it(
    "inFlightConn refuses a third simultaneous connection from one IP and accepts again after one closes",
    CASE,
    async (t) => {
      const backend = await startBackend(t, echo("capped"));
      const run = await serve(t, "inflight", {
        entryPoints: entryPoints(["capped"]),
        tcp: {
          routers: { capped: { rule: "HostSNI(`*`)", service: "b", middlewares: ["two"] } },
          services: { b: lb(backend.address) },
          middlewares: { two: { inFlightConn: { amount: 2 } } },
        },
      });
      const port = run.port("capped");
      const first = await connect(port);
      const second = await connect(port);
      assert.equal(await first.ask("1"), "capped:1");
      assert.equal(await second.ask("2"), "capped:2");

      const third = await request(port, { send: "3\n" });
      assert.equal(third.data, "");
      const refused = await run.access(third);
      assert.equal(refused.reason, "too_many_connections");
      assert.equal(refused.router, "capped");
      assert.match(String(refused.detail), /two/);

      if (canUseOtherHost) {
        // The count is per client IP: another address is not affected.
        const other = await connect(port, { localAddress: OTHER_HOST });
        assert.equal(await other.ask("other"), "capped:other");
        other.socket.end();
      }

      // The two open connections still work; closing one frees a slot.
      assert.equal(await first.ask("1b"), "capped:1b");
      first.socket.end();
      await first.closed;
      await run.access(first);
      const fourth = await connect(port);
      assert.equal(await fourth.ask("4"), "capped:4");
      assert.equal(await second.ask("2b"), "capped:2b");
      fourth.socket.end();
      second.socket.end();
      await Promise.all([fourth.closed, second.closed]);
      assert.equal((await run.access(fourth)).reason, "closed");
    },
  );

  it(
    "balances: weighted 3:1 gives exactly 30/10 over 40 connections, round robin alternates, a refused dial fails over, all down is backend_unreachable",
    CASE,
    async (t) => {
      const a = await startBackend(t, greeter("A"));
      const b = await startBackend(t, greeter("B"));
      const c = await startBackend(t, greeter("C"));
      const d = await startBackend(t, greeter("D"));
      const dead1 = `${HOST}:${await closedPort()}`;
      const dead2 = `${HOST}:${await closedPort()}`;
      const run = await serve(t, "balance", {
        entryPoints: entryPoints(["weighted", "rr", "failover", "down"]),
        tcp: {
          routers: {
            weighted: { entryPoints: ["weighted"], rule: "HostSNI(`*`)", service: "split" },
            rr: { entryPoints: ["rr"], rule: "HostSNI(`*`)", service: "pair" },
            failover: { entryPoints: ["failover"], rule: "HostSNI(`*`)", service: "half-dead" },
            down: { entryPoints: ["down"], rule: "HostSNI(`*`)", service: "all-dead" },
          },
          services: {
            split: {
              weighted: {
                services: [
                  { name: "only-a", weight: 3 },
                  { name: "only-b", weight: 1 },
                ],
              },
            },
            "only-a": lb(a.address),
            "only-b": lb(b.address),
            pair: lb(c.address, d.address),
            "half-dead": lb(dead1, c.address),
            "all-dead": lb(dead1, dead2),
          },
        },
      });

      // Weighted: picks happen at accept time, so batches of concurrent connections keep the count exact.
      const picks: string[] = [];
      for (let batch = 0; batch < 4; batch++) {
        const results = await Promise.all(Array.from({ length: 10 }, () => request(run.port("weighted"))));
        picks.push(...results.map((r) => r.data.trim()));
      }
      assert.deepEqual(tally(picks), { A: 30, B: 10 });
      await waitUntil(
        "40 weighted access lines",
        () => run.serve.accessLines().filter((l) => l.entryPoint === "weighted").length >= 40,
      );
      const servers = run.serve
        .accessLines()
        .filter((l) => l.entryPoint === "weighted")
        .map((l) => String(l.server));
      assert.deepEqual(tally(servers), { [a.address]: 30, [b.address]: 10 });

      // Round robin over two servers: strictly alternating.
      const sequence: string[] = [];
      for (let i = 0; i < 8; i++) sequence.push((await request(run.port("rr"))).data.trim());
      assert.deepEqual(tally(sequence), { C: 4, D: 4 });
      for (let i = 1; i < sequence.length; i++)
        assert.notEqual(sequence[i], sequence[i - 1], sequence.join(","));

      // Failover: round robin picks the dead server first every other time; each connection still lands on C.
      for (let i = 0; i < 4; i++) {
        const result = await request(run.port("failover"));
        assert.equal(result.data, "C\n");
        const line = await run.access(result);
        assert.equal(line.server, c.address);
        assert.equal(line.reason, "closed");
      }

      // Every server refuses: the client is closed and the access line says why.
      const down = await request(run.port("down"), { send: "hello\n" });
      assert.equal(down.data, "");
      const downLine = await run.access(down);
      assert.equal(downLine.reason, "backend_unreachable");
      assert.equal(downLine.service, "all-dead");
      assert.equal(downLine.server, null);
      assert.ok(
        String(downLine.detail).includes(dead1) && String(downLine.detail).includes(dead2),
        String(downLine.detail),
      );
    },
  );

  it(
    "sends PROXY v1 and v2 headers naming the client as source and the entry point as destination",
    CASE,
    async (t) => {
      // A backend that parses the header, reports it as one JSON line, then echoes the stream after it.
      const proxyAware: Handler = (socket) => {
        let buffer = Buffer.alloc(0);
        let parsed = false;
        socket.on("data", (chunk: Buffer) => {
          if (parsed) {
            socket.write(`echo:${chunk.toString()}`);
            return;
          }
          buffer = Buffer.concat([buffer, chunk]);
          const header = decodeProxyHeader(buffer);
          if (header.kind === "need-more") return;
          parsed = true;
          if (header.kind !== "header") {
            socket.end(`${JSON.stringify({ kind: header.kind })}\n`);
            return;
          }
          const { version, command, src, dst } = header;
          socket.write(`${JSON.stringify({ version, command, src, dst })}\n`);
          const rest = buffer.subarray(header.consumed);
          if (rest.length > 0) socket.write(`echo:${rest.toString()}`);
        });
        socket.on("end", () => socket.end());
      };
      const backend = await startBackend(t, proxyAware);
      const run = await serve(t, "proxy-protocol", {
        entryPoints: entryPoints(["v1", "v2", "v2mixed"]),
        tcp: {
          routers: {
            v1: { entryPoints: ["v1"], rule: "HostSNI(`*`)", service: "pp1" },
            v2: { entryPoints: ["v2", "v2mixed"], rule: "HostSNI(`*`)", service: "pp2" },
            tls: { entryPoints: ["v2mixed"], rule: "HostSNI(`x.test`)", service: "pp2", tls: {} },
          },
          services: {
            pp1: { loadBalancer: { servers: [{ address: backend.address }], serversTransport: "proxy-v1" } },
            pp2: { loadBalancer: { servers: [{ address: backend.address }], serversTransport: "proxy-v2" } },
          },
          serversTransports: {
            "proxy-v1": { proxyProtocol: { version: 1 } },
            "proxy-v2": { proxyProtocol: { version: 2 } },
          },
        },
      });
      for (const [ep, version] of [
        ["v1", 1],
        ["v2", 2],
        ["v2mixed", 2],
      ] as const) {
        const client = await connect(run.port(ep));
        // On the fast path the header arrives before the client sends anything; on the mixed entry
        // point the client speaks first and the header must still come before its bytes.
        if (ep === "v2mixed") client.socket.write("payload\n");
        const header = JSON.parse(await client.line()) as Record<string, unknown>;
        assert.deepEqual(header, {
          version,
          command: "proxy",
          src: { ip: HOST, port: client.localPort },
          dst: { ip: HOST, port: run.port(ep) },
        });
        if (ep === "v2mixed") assert.equal(await client.line(), "echo:payload");
        else assert.equal(await client.ask("payload"), "echo:payload");
        client.socket.end();
        await client.closed;
        assert.equal((await run.access(client)).reason, "closed");
      }
    },
  );

  it("dials backends over TLS, verifying the transport's serverName against its rootCAs", CASE, async (t) => {
    const backend = await startBackend(
      t,
      (socket) => {
        const servername = (socket as tls.TLSSocket).servername;
        socket.on("data", (chunk: Buffer) => socket.write(`tls(${String(servername)}):${chunk.toString()}`));
        socket.on("end", () => socket.end());
      },
      { cert: backendCert.certPem, key: backendCert.keyPem },
    );
    const tlsServer = (transport: string) => ({
      loadBalancer: { servers: [{ address: backend.address, tls: true }], serversTransport: transport },
    });
    const run = await serve(t, "backend-tls", {
      entryPoints: entryPoints(["right", "wrong", "untrusted"]),
      tcp: {
        routers: {
          right: { entryPoints: ["right"], rule: "HostSNI(`*`)", service: "right" },
          wrong: { entryPoints: ["wrong"], rule: "HostSNI(`*`)", service: "wrong" },
          untrusted: { entryPoints: ["untrusted"], rule: "HostSNI(`*`)", service: "untrusted" },
        },
        services: { right: tlsServer("right"), wrong: tlsServer("wrong"), untrusted: tlsServer("untrusted") },
        serversTransports: {
          right: { tls: { serverName: "backend.internal", rootCAs: [backendCa.certFile] } },
          wrong: { tls: { serverName: "other.internal", rootCAs: [backendCa.certFile] } },
          untrusted: { tls: { serverName: "backend.internal" } },
        },
      },
    });

    const good = await connect(run.port("right"));
    assert.equal(await good.ask("hi"), "tls(backend.internal):hi");
    good.socket.end();
    await good.closed;
    const goodLine = await run.access(good);
    assert.equal(goodLine.server, backend.address);
    assert.equal(goodLine.reason, "closed");

    const wrong = await request(run.port("wrong"), { send: "hi\n" });
    assert.equal(wrong.data, "");
    const wrongLine = await run.access(wrong);
    assert.equal(wrongLine.reason, "backend_unreachable");
    assert.match(String(wrongLine.detail), /other\.internal/);

    const untrusted = await request(run.port("untrusted"), { send: "hi\n" });
    assert.equal(untrusted.data, "");
    const untrustedLine = await run.access(untrusted);
    assert.equal(untrustedLine.reason, "backend_unreachable");
    assert.match(String(untrustedLine.detail), /certificate/i);
  });

  it(
    "propagates a client's half-close: the backend answers after EOF within terminationDelay; past the default 100ms it is cut",
    CASE,
    async (t) => {
      const afterEof =
        (delayMs: number): Handler =>
        (socket) => {
          let received = "";
          socket.setEncoding("utf8");
          socket.on("data", (chunk: string) => {
            received += chunk;
          });
          socket.on("end", () => {
            setTimeout(() => {
              if (!socket.destroyed) socket.end(`got ${received.length} bytes: ${received}\n`);
            }, delayMs);
          });
        };
      // The backend answers 300ms after the client's EOF: within a 5s terminationDelay, and
      // past the default 100ms (so the default case below is the same backend timing, cut).
      const patient = await startBackend(t, afterEof(300));
      const slow = await startBackend(t, afterEof(4_000));
      const run = await serve(t, "half-close", {
        entryPoints: entryPoints(["patient", "default"]),
        tcp: {
          routers: {
            patient: { entryPoints: ["patient"], rule: "HostSNI(`*`)", service: "patient" },
            default: { entryPoints: ["default"], rule: "HostSNI(`*`)", service: "slow" },
          },
          services: {
            patient: {
              loadBalancer: { servers: [{ address: patient.address }], serversTransport: "patient" },
            },
            slow: lb(slow.address),
          },
          serversTransports: { patient: { terminationDelay: "5s" } },
        },
      });

      const answered = await request(run.port("patient"), { send: "request", end: true });
      const line = await run.access(answered);
      assert.equal(answered.data, "got 7 bytes: request\n", JSON.stringify(line));
      assert.equal(line.reason, "closed");
      assert.equal(line.bytesIn, 7);
      assert.equal(line.bytesOut, answered.data.length);

      // Default terminationDelay (100ms): the backend that answers 4s after EOF is cut off, no
      // earlier than 100ms after the client's half-close.
      const started = Date.now();
      const cut = await request(run.port("default"), { send: "request", end: true });
      const elapsed = Date.now() - started;
      assert.equal(cut.data, "");
      assert.ok(elapsed >= 90 && elapsed < 3_000, `the connection was cut after ${elapsed}ms`);
      const cutLine = await run.access(cut);
      assert.equal(cutLine.bytesIn, 7);
      assert.equal(cutLine.bytesOut, 0);
    },
  );

  it(
    "health checks take a failing server out of rotation and put it back when it recovers",
    CASE,
    async (t) => {
      // Health probes send PING and expect PONG; client traffic gets the server's name.
      const health: Record<string, boolean> = { A: true, B: true };
      const checked =
        (name: string): Handler =>
        (socket) => {
          socket.once("data", (chunk: Buffer) => {
            if (chunk.toString().startsWith("PING")) socket.end(health[name] ? "PONG\n" : "NOPE\n");
            else socket.end(`${name}\n`);
          });
          socket.on("end", () => socket.end());
        };
      const a = await startBackend(t, checked("A"));
      const b = await startBackend(t, checked("B"));
      const c = await startBackend(t, namer("C"));
      const d = await startBackend(t, namer("D"));
      const run = await serve(t, "health", {
        entryPoints: entryPoints(["expect", "connect"]),
        tcp: {
          routers: {
            expect: { entryPoints: ["expect"], rule: "HostSNI(`*`)", service: "expect" },
            connect: { entryPoints: ["connect"], rule: "HostSNI(`*`)", service: "connect" },
          },
          services: {
            expect: {
              loadBalancer: {
                servers: [{ address: a.address }, { address: b.address }],
                healthCheck: { interval: "200ms", timeout: "5s", send: "PING\n", expect: "PONG" },
              },
            },
            connect: {
              loadBalancer: {
                servers: [{ address: c.address }, { address: d.address }],
                healthCheck: { interval: "200ms", timeout: "5s" },
              },
            },
          },
        },
      });
      const names = async (ep: string, n: number) => {
        const out: string[] = [];
        for (let i = 0; i < n; i++) {
          const result = await request(run.port(ep), { send: "hi\n" });
          if (result.data === "") {
            const line = await run.access(result);
            const events = run.serve.lines.filter((l) => /^server is/.test(l.msg));
            assert.fail(`no answer: ${JSON.stringify(line)}\nhealth events: ${JSON.stringify(events)}`);
          }
          out.push(result.data.trim());
        }
        return out;
      };
      const serverEvent = (msg: string, address: string) => (l: LogLine) =>
        l.msg === msg && l.address === address;

      assert.deepEqual(tally(await names("expect", 4)), { A: 2, B: 2 });
      // send/expect mismatch: A still accepts connections, so only the health check can keep traffic off it.
      let mark = run.mark();
      health.A = false;
      const down = await run.waitAfter(mark, serverEvent("server is down", a.address));
      assert.match(String(down.reason), /expected "PONG", got "NOPE"/);
      assert.deepEqual(tally(await names("expect", 6)), { B: 6 });
      mark = run.mark();
      health.A = true;
      await run.waitAfter(mark, serverEvent("server is up", a.address));
      assert.deepEqual(tally(await names("expect", 4)), { A: 2, B: 2 });

      // A stopped server: down, then up again once it listens on its port again.
      assert.deepEqual(tally(await names("connect", 2)), { C: 1, D: 1 });
      mark = run.mark();
      await c.stop();
      await run.waitAfter(mark, serverEvent("server is down", c.address));
      const whileDown = run.mark();
      assert.deepEqual(tally(await names("connect", 4)), { D: 4 });
      // Out of rotation means not even tried: no dial to C, so no failover was needed either.
      await waitUntil(
        "4 access lines",
        () => run.serve.lines.slice(whileDown).filter((l) => l.msg === "connection").length >= 4,
      );
      for (const line of run.serve.lines.slice(whileDown).filter((l) => l.msg === "connection")) {
        assert.equal(line.server, d.address);
      }
      mark = run.mark();
      await c.restart();
      await run.waitAfter(mark, serverEvent("server is up", c.address));
      assert.deepEqual(tally(await names("connect", 4)), { C: 2, D: 2 });
    },
  );

  it(
    "reloads on SIGHUP: new connections follow the new route, an open one keeps its backend; a broken file keeps the old routes",
    CASE,
    async (t) => {
      const oldBackend = await startBackend(t, echo("old"));
      const newBackend = await startBackend(t, echo("new"));
      const config = (service: string, rule = "HostSNI(`*`)") => ({
        entryPoints: entryPoints(["app"]),
        tcp: {
          routers: { app: { rule, service } },
          services: { old: lb(oldBackend.address), new: lb(newBackend.address) },
        },
      });
      const run = await serve(t, "reload", config("old"));
      const port = run.port("app");
      const open = await connect(port);
      assert.equal(await open.ask("1"), "old:1");

      let mark = run.mark();
      writeConfig(run.file, config("new"));
      run.serve.child.kill("SIGHUP");
      await run.waitAfter(mark, (l) => l.msg === "configuration reloaded");
      const fresh = await connect(port);
      assert.equal(await fresh.ask("a"), "new:a");
      // The connection opened before the reload keeps flowing to the old backend, in both directions.
      assert.equal(await open.ask("2"), "old:2");
      assert.equal(await open.ask("3"), "old:3");

      // A broken file: the diagnostic is logged as an error, the running routes stay.
      mark = run.mark();
      writeConfig(run.file, config("old", "HostSNI(`broken.test`"));
      run.serve.child.kill("SIGHUP");
      await run.waitAfter(
        mark,
        (l) => l.level === "error" && /keeping the running configuration/.test(l.msg),
      );
      const diagnostics = run.serve.lines
        .slice(mark)
        .filter((l) => l.level === "error" && typeof l.code === "string");
      assert.ok(diagnostics.length > 0, "the diagnostic is logged with its code");
      assert.ok(
        diagnostics.some((l) => String(l.at).includes("tlsroute.yml:")),
        `the diagnostic names the file: ${JSON.stringify(diagnostics)}`,
      );
      assert.equal(
        run.serve.lines.slice(mark).some((l) => l.msg === "configuration reloaded"),
        false,
      );
      assert.equal(await fresh.ask("b"), "new:b");
      assert.equal((await askOnce(port, "c")).answer, "new:c");
      assert.equal(await open.ask("4"), "old:4");

      open.socket.end();
      fresh.socket.end();
      await Promise.all([open.closed, fresh.closed]);
      const openLine = await run.access(open);
      assert.equal(openLine.service, "old");
      assert.equal(openLine.server, oldBackend.address);
      assert.equal(openLine.bytesIn, "1\n2\n3\n4\n".length);
      assert.equal((await run.access(fresh)).service, "new");
      assert.equal(run.serve.child.exitCode, null, "still running");
    },
  );

  it(
    "reloads with --watch when a file is rewritten in place, replaced by rename, or added to the directory",
    CASE,
    async (t) => {
      const first = await startBackend(t, echo("first"));
      const second = await startBackend(t, echo("second"));
      const config = (service: string) => ({
        entryPoints: entryPoints(["app"]),
        tcp: {
          routers: { app: { rule: "HostSNI(`*`)", service } },
          services: { first: lb(first.address), second: lb(second.address) },
        },
      });
      const run = await serve(t, "watch", config("first"), { args: ["--watch"], configDirectory: true });
      const port = run.port("app");
      assert.equal((await askOnce(port, "x")).answer, "first:x");

      let mark = run.mark();
      writeConfig(run.file, config("second"));
      await run.waitAfter(mark, (l) => l.msg === "configuration reloaded");
      assert.ok(
        run.serve.lines
          .slice(mark)
          .some((l) => l.msg === "reloading configuration" && /file change/.test(String(l.trigger))),
      );
      assert.equal((await askOnce(port, "y")).answer, "second:y");

      // Editors save by writing a temporary file and renaming it over the original.
      mark = run.mark();
      const temp = path.join(run.dir, ".tlsroute.yml.swp");
      writeConfig(temp, config("first"));
      renameSync(temp, run.file);
      await run.waitAfter(mark, (l) => l.msg === "configuration reloaded");
      assert.equal((await askOnce(port, "z")).answer, "first:z");

      // A new file in the configuration directory: its router outranks the catch-all.
      mark = run.mark();
      writeConfig(path.join(run.dir, "extra.yml"), {
        tcp: { routers: { preferred: { rule: "HostSNI(`*`)", priority: 100, service: "second" } } },
      });
      await run.waitAfter(mark, (l) => l.msg === "configuration reloaded");
      const extra = await askOnce(port, "w");
      assert.equal(extra.answer, "second:w");
      assert.equal((await run.access(extra)).router, "preferred");
    },
  );

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`${signal}: stops accepting, lets an open connection finish, then exits 0`, CASE, async (t) => {
      const backend = await startBackend(t, echo("drain"));
      const run = await serve(t, `drain-${signal}`, {
        entryPoints: entryPoints(["app"], { transport: { lifeCycle: { graceTimeOut: "10s" } } }),
        tcp: {
          routers: { app: { rule: "HostSNI(`*`)", service: "b" } },
          services: { b: lb(backend.address) },
        },
      });
      const port = run.port("app");
      const open = await connect(port);
      assert.equal(await open.ask("before"), "drain:before");

      const exited = new Promise<number | null>((resolve) =>
        run.serve.child.once("exit", (code) => resolve(code)),
      );
      run.serve.child.kill(signal);
      const shutting = await run.serve.waitFor((l) => l.msg === "shutting down");
      assert.equal(shutting.signal, signal);
      await expectRefused(port);
      // The open connection keeps working during the grace period.
      assert.equal(await open.ask("during"), "drain:during");
      await sleep(300);
      assert.equal(await open.ask("still"), "drain:still");
      assert.equal(run.serve.child.exitCode, null, "waits for the open connection");

      const closing = Date.now();
      open.socket.end();
      const code = await exited;
      const lingered = Date.now() - closing;
      assert.equal(code, 0);
      assert.ok(lingered < 5_000, `exited ${lingered}ms after the last connection closed (grace is 10s)`);
      const line = run.serve.accessLines().find((l) => l.client === open.id);
      assert.equal(line?.reason, "closed");
      assert.equal(line?.bytesIn, "before\nduring\nstill\n".length);
      const stopped = run.serve.lines.find((l) => l.msg === "stopped");
      assert.equal(stopped?.forcedConnections, 0);
    });

    it(
      `${signal}: closes a connection still open after lifeCycle.graceTimeOut and exits 0`,
      CASE,
      async (t) => {
        const backend = await startBackend(t, echo("stuck"));
        const run = await serve(t, `grace-${signal}`, {
          entryPoints: entryPoints(["app"], { transport: { lifeCycle: { graceTimeOut: "1s" } } }),
          tcp: {
            routers: { app: { rule: "HostSNI(`*`)", service: "b" } },
            services: { b: lb(backend.address) },
          },
        });
        const open = await connect(run.port("app"));
        assert.equal(await open.ask("hi"), "stuck:hi");
        const exited = new Promise<number | null>((resolve) =>
          run.serve.child.once("exit", (code) => resolve(code)),
        );
        const signalled = Date.now();
        run.serve.child.kill(signal);
        await open.closed;
        const heldFor = Date.now() - signalled;
        assert.ok(heldFor >= 800 && heldFor < 5_000, `closed ${heldFor}ms after ${signal} (grace 1s)`);
        assert.equal(await exited, 0);
        const stopped = run.serve.lines.find((l) => l.msg === "stopped");
        assert.equal(stopped?.forcedConnections, 1);
        assert.ok(
          run.serve.accessLines().some((l) => l.client === open.id),
          "the forced connection still gets its access line",
        );
      },
    );
  }

  it("uses the grace period of the configuration running at shutdown, after a reload", CASE, async (t) => {
    const backend = await startBackend(t, echo("reloaded"));
    const config = (grace: string) => ({
      entryPoints: entryPoints(["app"], { transport: { lifeCycle: { graceTimeOut: grace } } }),
      tcp: { routers: { app: { rule: "HostSNI(`*`)", service: "b" } }, services: { b: lb(backend.address) } },
    });
    const run = await serve(t, "grace-reload", config("60s"));
    const mark = run.mark();
    writeConfig(run.file, config("500ms"));
    run.serve.child.kill("SIGHUP");
    await run.waitAfter(mark, (l) => l.msg === "configuration reloaded");
    const open = await connect(run.port("app"));
    assert.equal(await open.ask("hi"), "reloaded:hi");
    const signalled = Date.now();
    const exited = new Promise<number | null>((resolve) =>
      run.serve.child.once("exit", (code) => resolve(code)),
    );
    run.serve.child.kill("SIGTERM");
    await open.closed;
    assert.ok(
      Date.now() - signalled < 5_000,
      `closed after ${Date.now() - signalled}ms; the new grace is 500ms`,
    );
    assert.equal(await exited, 0);
  });

  it(
    "startup errors: invalid configuration exits 1, unknown --entrypoint 2, address in use 2, no configuration 2",
    CASE,
    async (t) => {
      const dir = tempDir("startup");
      const good = {
        entryPoints: entryPoints(["app", "second"]),
        tcp: {
          routers: { app: { rule: "HostSNI(`*`)", service: "w" } },
          services: { w: lb("whoami@internal") },
        },
      };
      const goodFile = path.join(dir, "good.yml");
      writeConfig(goodFile, good);
      const badFile = path.join(dir, "bad.yml");
      writeConfig(badFile, {
        ...good,
        tcp: { ...good.tcp, routers: { app: { rule: "HostSNI(`a.test`) &&", service: "w" } } },
      });
      const busy = net.createServer();
      const busyPort = await new Promise<number>((resolve) =>
        busy.listen(0, HOST, () => resolve((busy.address() as net.AddressInfo).port)),
      );
      t.after(() => busy.close());
      const emptyDir = tempDir("no-config");

      const [invalid, unknown, inUse, noConfig] = await Promise.all([
        serveToExit(["--log-format", "json", "-c", badFile]),
        serveToExit(["--log-format", "json", "-c", goodFile, "--entrypoint", "unknown=127.0.0.1:0"]),
        // The first entry point binds, the second cannot: the process must still exit.
        serveToExit([
          "--log-format",
          "json",
          "-c",
          goodFile,
          "--entrypoint",
          `app=${HOST}:0`,
          "--entrypoint",
          `second=${HOST}:${busyPort}`,
        ]),
        serveToExit(["--log-format", "json"], { cwd: emptyDir }),
      ]);

      assert.equal(invalid.code, 1, invalid.stderr);
      const invalidLines = jsonLines(invalid.stdout);
      assert.ok(!invalidLines.some((l) => l.msg === "listening"), "nothing listens");
      const diagnostic = invalidLines.find((l) => l.level === "error" && typeof l.code === "string");
      assert.ok(diagnostic, invalid.stdout);
      assert.match(String(diagnostic.at), /bad\.yml:\d+:\d+/);
      assert.doesNotMatch(invalid.stderr + invalid.stdout, /\n\s+at /);

      assert.equal(unknown.code, 2, unknown.stderr);
      assert.match(unknown.stderr, /unknown/);
      assert.match(unknown.stderr, /app, second/);
      assert.ok(!unknown.stdout.includes('"listening"'));

      assert.equal(inUse.code, 2, `${inUse.stdout}\n${inUse.stderr}`);
      const inUseText = inUse.stdout + inUse.stderr;
      assert.match(inUseText, /second/);
      assert.match(inUseText, new RegExp(`${busyPort}`));
      assert.match(inUseText, /already in use/);
      assert.doesNotMatch(inUseText, /internal error|\n\s+at /);

      assert.equal(noConfig.code, 2, noConfig.stderr);
      assert.match(noConfig.stderr, /tlsroute\.yml/);
      assert.match(noConfig.stderr, /hint:/);
    },
  );

  it(
    "survives resets, bad bytes and 200 concurrent connections, with one access line per connection",
    CASE,
    async (t) => {
      const backend = await startBackend(t, echo("ok"));
      const resetter = await startBackend(t, (socket) => {
        socket.once("data", () => socket.resetAndDestroy());
      });
      const run = await serve(t, "robust", {
        entryPoints: entryPoints(["app", "reset"]),
        tcp: {
          routers: {
            plain: { entryPoints: ["app"], rule: "HostSNI(`*`)", service: "ok" },
            site: { entryPoints: ["app"], rule: "HostSNI(`site.test`)", service: "ok", tls: {} },
            reset: { entryPoints: ["reset"], rule: "HostSNI(`*`)", service: "resetter" },
          },
          services: { ok: lb(backend.address), resetter: lb(resetter.address) },
        },
      });
      const port = run.port("app");

      // A client that resets in the middle of the stream.
      const rude = await connect(port);
      assert.equal(await rude.ask("x"), "ok:x");
      rude.socket.resetAndDestroy();
      const rudeLine = await run.access(rude);
      assert.equal(rudeLine.server, backend.address);

      // A backend that resets.
      const reset = await request(run.port("reset"), { send: "boom\n" });
      assert.equal(reset.data, "");
      const resetLine = await run.access(reset);
      assert.equal(resetLine.server, resetter.address);

      // Bytes that start like TLS and are not.
      const garbage = await request(port, { send: "\x16\x03\x01\x00\x05\x00\x00\x00\x00\x00" });
      assert.equal(garbage.data, "");
      assert.equal((await run.access(garbage)).reason, "bad_clienthello");

      // 200 at once: all open together, so their client addresses are distinct.
      const mark = run.mark();
      const results = await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const client = await connect(port);
          const answer = await client.ask(`n${i}`);
          client.socket.end();
          await client.closed;
          return { id: client.id, answer, i };
        }),
      );
      for (const r of results) assert.equal(r.answer, `ok:n${r.i}`);
      const batchLines = () => run.serve.lines.slice(mark).filter((l) => l.msg === "connection");
      await waitUntil("200 access lines", () => batchLines().length >= 200);
      await sleep(300);
      const lines = batchLines();
      assert.equal(lines.length, 200, "one access line per connection, no more");
      assert.deepEqual(new Set(lines.map((l) => l.client)), new Set(results.map((r) => r.id)));
      assert.ok(lines.every((l) => l.reason === "closed" && l.bytesIn === Number(l.bytesOut) - "ok:".length));

      // Still up and routing.
      assert.equal(run.serve.child.exitCode, null);
      assert.equal((await askOnce(port, "after")).answer, "ok:after");
      assert.ok(!run.serve.lines.some((l) => l.msg === "connection failed unexpectedly"));
    },
  );
});

describe("serve flags", () => {
  it("takes every -c and --entrypoint given more than once, not just the last", CASE, async () => {
    const dir = tempDir("repeat");
    // Addresses of TEST-NET-1, which no machine here has: serve starts only if both overrides apply.
    writeFileSync(
      path.join(dir, "entrypoints.yml"),
      'entryPoints:\n  a:\n    address: "192.0.2.1:443"\n  b:\n    address: "192.0.2.1:444"\n',
    );
    writeFileSync(
      path.join(dir, "routers.yml"),
      YAML.stringify({
        tcp: {
          routers: { all: { rule: "HostSNI(`*`)", service: "w" } },
          services: { w: { loadBalancer: { servers: [{ address: "whoami@internal" }] } } },
        },
      }),
    );
    const run = await startServe(
      [
        "-c",
        path.join(dir, "entrypoints.yml"),
        "-c",
        path.join(dir, "routers.yml"),
        "--entrypoint",
        `a=${HOST}:0`,
        "--entrypoint",
        `b=${HOST}:0`,
      ],
      { expectEntryPoints: 2 },
    );
    try {
      for (const ep of ["a", "b"]) {
        const answer = await request(run.ports.get(ep)!, { send: "" });
        assert.equal((JSON.parse(answer.data.trim()) as { entryPoint: string }).entryPoint, ep);
      }
    } finally {
      await run.stop();
    }
  });
});
