/**
 * The load side of the `serve` benchmarks, one role per subprocess so the orchestrating script can
 * pin it to CPU 0, away from the proxy:
 *
 *   sink        backend that counts bytes and answers `done:<n>\n` after the client's FIN (or once
 *               the length a `stream` client announced has arrived); holds idle
 *               connections open; `stats` on stdin prints open/accepted/bytes
 *   echo        backend that echoes every byte back (and ends when the client ends)
 *   tls-echo    a bare node:tls server that echoes (tickets off): the baseline for termination
 *   pipe-proxy  the naive Node proxy (accept, dial, pipe; behind tls.Server for terminate): the
 *               baseline for memory per connection
 *   stream      connects, sends a real TLS ClientHello with SNI, then BYTES in CHUNK-sized writes,
 *               then FIN, and waits for the sink's answer; prints the elapsed time (with `announce`:
 *               the length goes first and the answer is awaited without a FIN)
 *   handshakes  N concurrent loops of tls.connect → 1 byte → read the echo → destroy, for SECONDS
 *   idle        opens COUNT connections (passthrough: ClientHello then silence; terminate: full TLS
 *               handshake then silence) and holds them until `close` on stdin
 *   latency     COUNT sequential new TLS connections per target, round-robin over the TARGETS (SNI,
 *               chain verified) → 1 byte → its echo → destroy; prints each connection's time from
 *               connect() to the echo, in ms, by target
 *
 * Usage (from the bench scripts): node --import tsx bench/serve-peers.ts ROLE 'JSON-ARGS'
 * Every role prints JSON lines on stdout and exits when its stdin closes (the parent went away).
 */
import { constants } from "node:crypto";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { TerminatorCache } from "../src/proxy/terminate.ts";
import { parseClientHello } from "../src/wire/clienthello.ts";

type Args = Record<string, unknown>;

const say = (message: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(message)}\n`);

function onCommand(handlers: Record<string, () => void>): void {
  let pending = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk: string) => {
    pending += chunk;
    let nl = pending.indexOf("\n");
    while (nl !== -1) {
      const command = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      nl = pending.indexOf("\n");
      handlers[command]?.();
    }
  });
  // The parent is gone (or done with us): nothing else will ask.
  process.stdin.on("end", () => process.exit(0));
}

async function listen(server: net.Server): Promise<number> {
  server.listen({ host: "127.0.0.1", port: 0, backlog: 8192 });
  await once(server, "listening");
  const address = server.address();
  if (!address || typeof address !== "object") throw new Error("no address");
  return address.port;
}

/**
 * A real ClientHello, as Node's TLS client sends it for `servername`: recorded by a loopback server
 * that reads one complete TLS record and hangs up.
 */
async function captureClientHello(servername: string): Promise<Buffer> {
  const server = net.createServer();
  const port = await listen(server);
  const hello = new Promise<Buffer>((resolve, reject) => {
    server.once("connection", (socket) => {
      let bytes = Buffer.alloc(0);
      socket.on("data", (chunk: Buffer) => {
        bytes = Buffer.concat([bytes, chunk]);
        if (bytes.length >= 5 && bytes.length >= 5 + bytes.readUInt16BE(3)) {
          socket.destroy();
          resolve(bytes.subarray(0, 5 + bytes.readUInt16BE(3)));
        }
      });
      socket.on("error", reject);
    });
  });
  const client = tls.connect({ host: "127.0.0.1", port, servername, rejectUnauthorized: false });
  client.on("error", () => {});
  const bytes = await hello;
  client.destroy();
  server.close();
  if (bytes[0] !== 0x16) throw new Error("the captured bytes are not a TLS handshake record");
  return bytes;
}

// ---------------------------------------------------------------------------------------- sink

/** The tag a `stream` client with `announce` sends right after its ClientHello: "LEN:" and 16 hex digits. */
const ANNOUNCE_BYTES = 20;

async function sink(): Promise<void> {
  let open = 0;
  let accepted = 0;
  let bytes = 0;
  // allowHalfOpen: the answer goes out after the client's FIN has arrived, or, when the client
  // announced its length after the ClientHello, as soon as all of it has arrived (so proxies that
  // do not carry a half-close, like sniproxy, can be measured too).
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    open++;
    accepted++;
    let n = 0;
    let head: Buffer | null = Buffer.alloc(0);
    let expected = -1;
    let answered = false;
    socket.on("data", (chunk: Buffer) => {
      n += chunk.length;
      bytes += chunk.length;
      if (head) {
        head = Buffer.concat([head, chunk.subarray(0, 4096)]);
        const helloEnd = head.length >= 5 ? 5 + head.readUInt16BE(3) : Number.POSITIVE_INFINITY;
        if (head.length >= helloEnd + ANNOUNCE_BYTES) {
          const tag = head.subarray(helloEnd, helloEnd + ANNOUNCE_BYTES).toString("latin1");
          if (tag.startsWith("LEN:"))
            expected = helloEnd + ANNOUNCE_BYTES + Number.parseInt(tag.slice(4), 16);
          head = null;
        } else if (head.length >= 4096) head = null;
      }
      if (expected > 0 && !answered && n >= expected) {
        answered = true;
        socket.write(`done:${n}\n`);
      }
    });
    socket.on("end", () => (answered ? socket.end() : socket.end(`done:${n}\n`)));
    socket.on("error", () => socket.destroy());
    socket.on("close", () => open--);
  });
  const port = await listen(server);
  onCommand({ stats: () => say({ stats: { open, accepted, bytes } }) });
  say({ ready: true, port });
}

// ---------------------------------------------------------------------------------------- echo

async function echo(): Promise<void> {
  let open = 0;
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    open++;
    accepted++;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => socket.write(chunk));
    socket.on("end", () => socket.end());
    socket.on("error", () => socket.destroy());
    socket.on("close", () => open--);
  });
  const port = await listen(server);
  onCommand({ stats: () => say({ stats: { open, accepted } }) });
  say({ ready: true, port });
}

// ------------------------------------------------------------------------------------ tls-echo

/**
 * A bare Node TLS server that echoes: the floor for any terminator written on node:tls (same
 * certificate, tickets off), measured where the proxy would run.
 */
async function tlsEcho(args: Args): Promise<void> {
  const server = tls.createServer(
    {
      key: readFileSync(String(args.key)),
      cert: readFileSync(String(args.cert)),
      secureOptions: constants.SSL_OP_NO_TICKET,
      allowHalfOpen: true,
    },
    (socket) => {
      socket.on("data", (chunk: Buffer) => socket.write(chunk));
      socket.on("end", () => socket.end());
      socket.on("error", () => socket.destroy());
    },
  );
  server.on("tlsClientError", () => {});
  const port = await listen(server);
  onCommand({});
  say({ ready: true, port });
}

// ---------------------------------------------------------------------------------- pipe-proxy

/**
 * The naive Node proxy, as a floor: passthrough = accept, dial the backend, pipe both ways;
 * terminate = the same behind a plain tls.Server (same certificate, tickets off). No routing, no
 * ClientHello parsing, no logging.
 *
 * With `peek: true` it first reads the client's first bytes off the plain socket, as a router that
 * looks at the ClientHello must: passthrough writes them to the backend before piping; terminate
 * puts them back (`unshift`) and hands the socket to the tls.Server with `emit('connection')`, the
 * way tlsroute does. The difference between the two variants is the price of peeking on a runtime.
 * Two more steps towards what tlsroute does, to find which of its steps cost (bench/ab-handshakes.ts):
 * `parse: true` parses the ClientHello with tlsroute's own parser; `chain: true` (terminate) awaits the
 * handshake, then the backend's connect, before it relays, as tlsroute's async chain does; with
 * `terminator: true` the handshake is done by tlsroute's own terminator (src/proxy/terminate.ts).
 */
async function pipeProxy(args: Args): Promise<void> {
  const backendPort = Number(args.backendPort);
  const peek = args.peek === true;
  // Half-open both ways, so the sink's answer after the client's FIN still gets back.
  const dial = () => net.connect({ host: "127.0.0.1", port: backendPort, allowHalfOpen: true });
  const relay = (client: net.Socket, first?: Buffer, backend = dial()) => {
    if (first) backend.write(first);
    client.pipe(backend);
    backend.pipe(client);
    client.on("error", () => backend.destroy());
    backend.on("error", () => client.destroy());
    client.on("close", () => backend.destroy());
    backend.on("close", () => client.destroy());
  };
  const tlsServer =
    args.mode === "terminate"
      ? tls.createServer(
          {
            key: readFileSync(String(args.key)),
            cert: readFileSync(String(args.cert)),
            secureOptions: constants.SSL_OP_NO_TICKET,
            allowHalfOpen: true,
          },
          (socket) => {
            const parent = (socket as tls.TLSSocket & { _parent?: net.Socket })._parent;
            const waiting = parent ? pendingChain.get(parent) : undefined;
            if (waiting && parent) {
              pendingChain.delete(parent);
              waiting(socket);
              return;
            }
            relay(socket);
          },
        )
      : null;
  const pendingChain = new Map<net.Socket, (s: tls.TLSSocket) => void>();
  // `terminator: true` (with chain): tlsroute's own terminator does the handshake (src/proxy/terminate.ts).
  const terminator =
    args.terminator === true
      ? new TerminatorCache(new Map(), new Map()).get(
          "default",
          {
            id: "bench",
            certPem: readFileSync(String(args.cert), "utf8"),
            keyPem: readFileSync(String(args.key), "utf8"),
          },
          null,
        )
      : null;
  tlsServer?.on("tlsClientError", () => {});
  const firstBytes = (client: net.Socket, then: (first: Buffer) => void) => {
    client.once("data", (first: Buffer) => {
      client.pause();
      then(first);
    });
    client.on("error", () => client.destroy());
  };
  const server = !peek
    ? (tlsServer ?? net.createServer({ allowHalfOpen: true }, (socket) => relay(socket)))
    : net.createServer({ allowHalfOpen: true }, (client) =>
        firstBytes(client, (first) => {
          if (!tlsServer) {
            relay(client, first);
            client.resume();
            return;
          }
          if (args.parse === true) parseClientHello(first);
          if (args.chain === true) {
            void (async () => {
              const tlsSocket = terminator
                ? await terminator.handshake(client, first, 10_000).then((outcome) => {
                    if (!outcome.ok) throw new Error(outcome.message);
                    // A net.Socket is terminated by node:tls: a TLSSocket.
                    return outcome.socket as tls.TLSSocket;
                  })
                : // Handed back by the tls.Server's connection listener, found by the raw socket.
                  await new Promise<tls.TLSSocket>((resolve) => {
                    pendingChain.set(client, resolve);
                    client.unshift(first);
                    tlsServer.emit("connection", client);
                  });
              const backend = dial();
              await once(backend, "connect");
              relay(tlsSocket, undefined, backend);
            })();
            return;
          }
          client.unshift(first);
          tlsServer.emit("connection", client);
        }),
      );
  const port = await listen(server);
  onCommand({});
  say({ ready: true, port });
}

/** The part of Bun's own socket API (Bun.listen / Bun.connect) the native reference proxy uses. */
interface BunSocket {
  data: { peer: BunSocket | null; early: Uint8Array[] };
  write(bytes: Uint8Array): number;
  end(): void;
}
interface BunHandlers {
  open?(socket: BunSocket): void;
  data(socket: BunSocket, chunk: Uint8Array): void;
  close(socket: BunSocket): void;
  error(socket: BunSocket, error: Error): void;
  connectError?(socket: BunSocket, error: Error): void;
  handshake?(socket: BunSocket): void;
}
interface BunApi {
  listen(options: {
    hostname: string;
    port: number;
    tls?: { key: string; cert: string };
    socket: BunHandlers;
  }): { port: number };
  connect(options: {
    hostname: string;
    port: number;
    data: BunSocket["data"];
    socket: BunHandlers;
  }): Promise<BunSocket>;
}

/**
 * A reference, not a floor of node:net: the same accept → dial → copy on Bun's own socket API
 * (Bun.listen / Bun.connect; terminate = Bun.listen's own TLS), with no ClientHello peek and no
 * stream objects. It copies without backpressure and closes both sides on either close, so it runs
 * the handshake and idle-memory workloads only (bulk transfer needs both; see NATIVE_WORKLOADS).
 * What it shows: how much of a runtime's per-connection cost is its node:net/node:tls layer.
 */
async function bunNativeProxy(args: Args): Promise<void> {
  const bun = (globalThis as { Bun?: BunApi }).Bun;
  if (!bun) throw new Error("bun-native runs on Bun only");
  const backendPort = Number(args.backendPort);
  const backend: BunHandlers = {
    open(socket) {
      const client = socket.data.peer;
      if (!client) return;
      client.data.peer = socket;
      for (const chunk of client.data.early) socket.write(chunk);
      client.data.early = [];
    },
    data: (socket, chunk) => socket.data.peer?.write(chunk),
    close: (socket) => socket.data.peer?.end(),
    error: (socket) => socket.data.peer?.end(),
    connectError: (socket) => socket.data.peer?.end(),
  };
  const client: BunHandlers = {
    open(socket) {
      socket.data = { peer: null, early: [] };
      // A refused dial also rejects the promise: end the client rather than leave a rejection unhandled.
      bun
        .connect({
          hostname: "127.0.0.1",
          port: backendPort,
          data: { peer: socket, early: [] },
          socket: backend,
        })
        .catch(() => socket.end());
    },
    data(socket, chunk) {
      // Bytes before the backend answered are kept, copied: the chunk is only lent for this call.
      if (socket.data.peer) socket.data.peer.write(chunk);
      else socket.data.early.push(new Uint8Array(chunk));
    },
    close: (socket) => socket.data.peer?.end(),
    error: (socket) => socket.data.peer?.end(),
  };
  // `upgrade: true` (terminate): listen plain, read the ClientHello, then start TLS on the same socket
  // with it (`upgradeTLS` server side, as a router that peeks must); the backend is dialled once the
  // handshake is done, as tlsroute does.
  const upgradeTls =
    args.upgrade === true
      ? {
          key: readFileSync(String(args.key), "utf8"),
          cert: readFileSync(String(args.cert), "utf8"),
          secureOptions: constants.SSL_OP_NO_TICKET,
        }
      : null;
  const upgraded: BunHandlers = {
    ...client,
    open() {},
    handshake: (socket) => client.open?.(socket),
  };
  const peeking: BunHandlers = {
    open() {},
    data(socket, chunk) {
      socket.data = { peer: null, early: [] };
      // The raw socket keeps seeing the encrypted bytes after the upgrade: only the first chunk counts.
      if ((socket as BunSocket & { upgraded?: boolean }).upgraded) return;
      (socket as BunSocket & { upgraded?: boolean }).upgraded = true;
      (socket as unknown as { upgradeTLS(options: object): unknown }).upgradeTLS({
        isServer: true,
        initialData: chunk,
        data: { peer: null, early: [] },
        tls: upgradeTls,
        socket: upgraded,
      });
    },
    close() {},
    error() {},
  };
  const server = bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    ...(args.upgrade === true ? { socket: peeking } : {}),
    ...(args.mode === "terminate" && args.upgrade !== true
      ? {
          tls: { key: readFileSync(String(args.key), "utf8"), cert: readFileSync(String(args.cert), "utf8") },
        }
      : {}),
    socket: args.upgrade === true ? peeking : client,
  });
  onCommand({});
  say({ ready: true, port: server.port });
}

// -------------------------------------------------------------------------------------- stream

async function stream(args: Args): Promise<void> {
  const port = Number(args.port);
  const total = Number(args.bytes);
  const chunkSize = Number(args.chunk);
  // announce: tell the sink the length after the hello and wait for its answer before closing,
  // instead of relying on the proxy to carry our FIN and the answer after it (half-close).
  const announce = args.announce === true;
  const hello = await captureClientHello(String(args.servername));
  const chunk = Buffer.alloc(chunkSize, 0x5a);
  const started = performance.now();
  const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
  socket.on("error", (err) => {
    say({ error: err.message });
    process.exit(1);
  });
  await once(socket, "connect");
  let answer = "";
  let answered: () => void = () => {};
  const gotAnswer = new Promise<void>((resolve) => {
    answered = resolve;
  });
  socket.setEncoding("utf8");
  socket.on("data", (text: string) => {
    answer += text;
    if (answer.includes("\n")) answered();
  });
  const ended = once(socket, "end");
  socket.write(hello);
  let extra = 0;
  if (announce) {
    const tag = `LEN:${total.toString(16).padStart(16, "0")}`;
    socket.write(tag);
    extra = tag.length;
  }
  let sent = 0;
  while (sent < total) {
    const size = Math.min(chunkSize, total - sent);
    const ok = socket.write(size === chunkSize ? chunk : chunk.subarray(0, size));
    sent += size;
    if (!ok) await once(socket, "drain");
  }
  if (announce) {
    await Promise.race([gotAnswer, ended]);
  } else {
    socket.end();
    await ended;
  }
  const elapsedMs = performance.now() - started;
  socket.destroy();
  say({
    result: { elapsedMs, answer: answer.trim(), helloBytes: hello.length, sent: hello.length + extra + sent },
  });
  process.exit(0);
}

// ---------------------------------------------------------------------------------- handshakes

const ONE_BYTE = Buffer.of(0x2a);

/**
 * One new TLS connection (no resumption): handshake, one byte there, its echo back, close. Resolves
 * once the echo came, rejects on an error or a close before it. `noDelay` as the latency role has
 * always set it; the handshake loops keep Node's default.
 */
function echoOnce(
  options: tls.ConnectionOptions & { localAddress?: string },
  noDelay = false,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket = tls.connect(options);
    if (noDelay) socket.setNoDelay(true);
    let settled = false;
    const settle = (err: Error | null) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    socket.once("secureConnect", () => socket.write(ONE_BYTE));
    socket.once("data", () => settle(null));
    socket.once("error", (err) => settle(err));
    socket.once("close", () => settle(new Error("closed before the echo came back")));
  });
}

async function handshakes(args: Args): Promise<void> {
  const port = Number(args.port);
  const servername = String(args.servername);
  const ca = readFileSync(String(args.ca), "utf8");
  const concurrency = Number(args.concurrency);
  const seconds = Number(args.seconds);
  // Spreading client source addresses over 127.0.0.x keeps TIME_WAIT from exhausting one port range.
  const sources = (args.sources as string[] | undefined) ?? ["127.0.0.1"];
  let count = 0;
  let errors = 0;
  let firstError: string | null = null;
  let next = 0;

  // node:tls passes localAddress on to net.connect; its typings leave it out.
  const connectOnce = () =>
    echoOnce({
      host: "127.0.0.1",
      port,
      servername,
      ca,
      localAddress: sources[next++ % sources.length] ?? "127.0.0.1",
    });

  const started = performance.now();
  const deadline = started + seconds * 1000;
  const loop = async () => {
    while (performance.now() < deadline) {
      try {
        await connectOnce();
        count++;
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const elapsedMs = performance.now() - started;
  say({ result: { count, errors, firstError, elapsedMs } });
  process.exit(0);
}

// ---------------------------------------------------------------------------------------- idle

async function idle(args: Args): Promise<void> {
  const port = Number(args.port);
  const mode = String(args.mode);
  const count = Number(args.count);
  const concurrency = Number(args.concurrency ?? 64);
  const servername = String(args.servername);
  const ca = args.ca ? readFileSync(String(args.ca), "utf8") : undefined;
  const hello = mode === "passthrough" ? await captureClientHello(servername) : null;
  const sockets: net.Socket[] = [];
  let failed = 0;
  let firstError: string | null = null;
  let closedEarly = 0;

  const openOne = () =>
    new Promise<void>((resolve, reject) => {
      const socket =
        mode === "passthrough"
          ? net.connect({ host: "127.0.0.1", port })
          : tls.connect({ host: "127.0.0.1", port, servername, ca });
      socket.once("error", reject);
      socket.once(mode === "passthrough" ? "connect" : "secureConnect", () => {
        socket.removeListener("error", reject);
        socket.on("error", () => {});
        socket.once("close", () => closedEarly++);
        if (hello) socket.write(hello);
        sockets.push(socket);
        resolve();
      });
    });

  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      try {
        await openOne();
      } catch (err) {
        failed++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
      if ((sockets.length + failed) % 1000 === 0) say({ progress: sockets.length + failed });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  onCommand({
    status: () => say({ status: { open: sockets.length - closedEarly, closedEarly } }),
    close: () => {
      for (const s of sockets) s.destroy();
      say({ closed: sockets.length });
      process.exit(0);
    },
  });
  say({ opened: sockets.length, failed, firstError, elapsedMs: performance.now() - started });
}

// ------------------------------------------------------------------------------------- latency

/**
 * One connection at a time, so the time measured is a new connection's own: TCP connect, the full
 * TLS handshake (no resumption), one byte there and back. Run against a proxy and against the
 * backend directly, the difference is what the proxy adds (peek, route, backend connect, relay).
 * With several targets the connections go round-robin over them (direct, proxy A, proxy B, …,
 * direct, …), so a burst of load elsewhere on the machine hits every path alike.
 */
async function latency(args: Args): Promise<void> {
  const targets = (args.targets as { name: string; port: number; servername: string }[] | undefined) ?? [
    { name: "target", port: Number(args.port), servername: String(args.servername) },
  ];
  const ca = readFileSync(String(args.ca), "utf8");
  const count = Number(args.count);
  const samples: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
  const errors: Record<string, number> = {};
  let firstError: string | null = null;
  const connectOnce = (port: number, servername: string) =>
    echoOnce({ host: "127.0.0.1", port, servername, ca }, true);
  for (let i = 0; i < count; i++) {
    for (const target of targets) {
      const started = performance.now();
      try {
        await connectOnce(target.port, target.servername);
        const elapsed = performance.now() - started;
        samples[target.name]?.push(elapsed);
      } catch (err) {
        errors[target.name] = (errors[target.name] ?? 0) + 1;
        firstError ??= `${target.name}: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
  }
  say({ result: { samples, errors, firstError } });
  process.exit(0);
}

// ---------------------------------------------------------------------------------------- main

const roles: Record<string, (args: Args) => Promise<void>> = {
  sink,
  echo,
  "tls-echo": tlsEcho,
  "pipe-proxy": pipeProxy,
  "bun-native": bunNativeProxy,
  stream,
  handshakes,
  idle,
  latency,
};
const [role, raw] = process.argv.slice(2);
const run = role ? roles[role] : undefined;
if (!run) {
  console.error(`usage: serve-peers.ts ${Object.keys(roles).join("|")} 'JSON-ARGS'`);
  process.exit(2);
}
await run(JSON.parse(raw ?? "{}") as Args);
