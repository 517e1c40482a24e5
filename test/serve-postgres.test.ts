/**
 * PostgreSQL through `tlsroute serve`, with the real thing on both sides: `psql` (libpq), the `pg`
 * npm package and raw-protocol clients in front, two throwaway PostgreSQL clusters behind, all on
 * 127.0.0.1. Run `npm run build` first when running this file on its own.
 *
 * - "beta": ssl=on with its own certificate (backend CA), for passthrough and a terminated route;
 * - "alpha": ssl=off, a second server to route to by SNI, and the backend that refuses SSL.
 *
 * Entry points: `pg` (TLS routers: termination and passthrough), `fasttls` and `fastplain` (only a
 * plain catch-all each: the fast path hands the connection over unread, SSLRequest included), and
 * `closed` (one plain router no loopback client matches: tlsroute itself answers the SSLRequest).
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import pg from "pg";
import { encodeCancelRequest, GSSENC_REQUEST, PROTOCOL_3_0, SSL_REQUEST } from "../src/wire/postgres.ts";
import { type IssuedCert, makePki, type TestCa } from "./helpers/pki.ts";
import {
  type PostgresServer,
  type PsqlRun,
  postgresMajor,
  postgresSkip,
  psqlAvailable,
  runPsql,
  startPostgres,
} from "./helpers/postgres.ts";
import { type LogLine, type ServeProcess, startServe } from "./helpers/serve.ts";

const HOST = "127.0.0.1";
const TERM_NAME = "db.test.localhost";
const ALPHA_NAME = "alpha.test.localhost";
const PASS_NAME = "pass.test.localhost";
const NOSSL_NAME = "nossl.test.localhost";

interface World {
  dir: string;
  proxyCa: TestCa;
  backendCa: TestCa;
  proxyCert: IssuedCert;
  backendCert: IssuedCert;
  alpha: PostgresServer;
  beta: PostgresServer;
  serve: ServeProcess;
  port: (entryPoint: string) => number;
}

const w = {} as World;

function config(): unknown {
  const server = (pgServer: PostgresServer) => ({
    loadBalancer: { servers: [{ address: `${HOST}:${pgServer.port}` }] },
  });
  const entryPoint = { address: `${HOST}:0`, transport: { respondingTimeouts: { readTimeout: "10s" } } };
  return {
    entryPoints: { pg: entryPoint, fasttls: entryPoint, fastplain: entryPoint, closed: entryPoint },
    tcp: {
      routers: {
        term: { entryPoints: ["pg"], rule: `HostSNI(\`${TERM_NAME}\`)`, service: "beta", tls: {} },
        alpha: { entryPoints: ["pg"], rule: `HostSNI(\`${ALPHA_NAME}\`)`, service: "alpha", tls: {} },
        pass: {
          entryPoints: ["pg"],
          rule: `HostSNI(\`${PASS_NAME}\`)`,
          service: "beta",
          tls: { passthrough: true },
        },
        nossl: {
          entryPoints: ["pg"],
          rule: `HostSNI(\`${NOSSL_NAME}\`)`,
          service: "alpha",
          tls: { passthrough: true },
        },
        "fast-tls": { entryPoints: ["fasttls"], rule: "HostSNI(`*`)", service: "beta" },
        "fast-plain": { entryPoints: ["fastplain"], rule: "HostSNI(`*`)", service: "alpha" },
        elsewhere: { entryPoints: ["closed"], rule: "ClientIP(`192.0.2.0/24`)", service: "alpha" },
      },
      services: { alpha: server(w.alpha), beta: server(w.beta) },
    },
    tls: { certificates: [{ certFile: w.proxyCert.chainFile, keyFile: w.proxyCert.keyFile }] },
  };
}

// ----- clients ---------------------------------------------------------------------------------------------

/** A libpq connection string to the proxy for `name` (SNI) with extra keywords. */
function conninfo(entryPoint: string, name: string, extra: string): string {
  return `host=${name} hostaddr=${HOST} port=${w.port(entryPoint)} user=postgres dbname=postgres connect_timeout=10 ${extra}`;
}

/** Runs statements through the proxy, unaligned and tuples only. */
function psqlVia(
  entryPoint: string,
  name: string,
  extra: string,
  sql: string,
  onSpawn?: (child: ChildProcess) => void,
): Promise<PsqlRun> {
  return runPsql(
    conninfo(entryPoint, name, extra),
    ["-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
    onSpawn,
  );
}

const SSL_OF_THIS_BACKEND = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

function assertOk(run: PsqlRun): string {
  assert.equal(run.code, 0, `psql failed (${run.code}):\n${run.stderr}`);
  return run.stdout.trim();
}

/** Local ports of raw sockets, kept because a destroyed socket forgets its own. */
const localPorts = new WeakMap<net.Socket, number>();

/** Connects a raw TCP socket to an entry point. */
function rawConnect(entryPoint: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port: w.port(entryPoint) }, () => {
      localPorts.set(socket, socket.localPort ?? 0);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** Reads exactly `n` bytes (or fails on close/timeout). */
function readBytes(socket: net.Socket | tls.TLSSocket, n: number, timeoutMs = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const done = (err: Error | null) => {
      clearTimeout(timer);
      socket.removeListener("data", onData);
      socket.removeListener("close", onClose);
      socket.pause();
      if (err) reject(err);
      else {
        if (got.length > n) socket.unshift(got.subarray(n));
        resolve(got.subarray(0, n));
      }
    };
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= n) done(null);
    };
    const onClose = () => done(new Error(`closed after ${got.length} of ${n} bytes: ${got.toString("hex")}`));
    const timer = setTimeout(() => done(new Error(`timed out after ${got.length} of ${n} bytes`)), timeoutMs);
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.resume();
  });
}

function startupMessage(params: Record<string, string>): Buffer {
  const body = Buffer.concat([
    Buffer.from([0, 3, 0, 0]),
    ...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)),
    Buffer.from([0]),
  ]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length + 4);
  assert.equal(body.readUInt32BE(0), PROTOCOL_3_0);
  return Buffer.concat([length, body]);
}

/** The first backend message after a StartupMessage: type byte and, for 'R', the authentication code. */
async function firstReply(
  socket: net.Socket | tls.TLSSocket,
): Promise<{ type: string; auth: number | null }> {
  const header = await readBytes(socket, 5);
  const type = String.fromCharCode(header[0]!);
  const body = await readBytes(socket, header.readUInt32BE(1) - 4);
  return { type, auth: type === "R" ? body.readUInt32BE(0) : null };
}

/** TLS over an already negotiated socket (after 'S'), or straight to the entry point (direct TLS). */
function tlsConnect(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(options);
    socket.once("secureConnect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/**
 * A keytab (MIT format 0x0502) with one random AES-256 key for tlsroute@TEST.LOCALHOST; returns its
 * path. Written by hand because no Kerberos tools are installed.
 */
function writeClientKeytab(file: string): string {
  const counted = (text: string) => {
    const bytes = Buffer.from(text);
    return Buffer.concat([u16(bytes.length), bytes]);
  };
  const key = randomBytes(32);
  const entry = Buffer.concat([
    u16(1), // components, not counting the realm
    counted("TEST.LOCALHOST"),
    counted("tlsroute"),
    u32(1), // KRB5_NT_PRINCIPAL
    u32(Math.floor(Date.now() / 1000)),
    Buffer.of(1), // key version
    u16(18), // aes256-cts-hmac-sha1-96
    u16(key.length),
    key,
  ]);
  writeFileSync(file, Buffer.concat([Buffer.of(0x05, 0x02), u32(entry.length), entry]));
  return file;
}

function u16(value: number): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(value);
  return out;
}

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}

/** SSLRequest, TLS with `name`, StartupMessage, then messages up to ReadyForQuery; keeps the cancel key. */
async function openSession(
  name: string,
): Promise<{ raw: net.Socket; secure: tls.TLSSocket; processId: number; secretKey: Buffer }> {
  const raw = await rawConnect("pg");
  raw.write(SSL_REQUEST);
  assert.equal((await readBytes(raw, 1)).toString(), "S");
  const secure = await tlsConnect({ socket: raw, servername: name, ca: w.proxyCa.certPem });
  secure.write(startupMessage({ user: "postgres", database: "postgres" }));
  let key: { processId: number; secretKey: Buffer } | undefined;
  for (;;) {
    const header = await readBytes(secure, 5);
    const body = await readBytes(secure, header.readUInt32BE(1) - 4);
    const type = String.fromCharCode(header[0]!);
    if (type === "K") key = { processId: body.readUInt32BE(0), secretKey: body.subarray(4) };
    if (type === "E") assert.fail(`the server refused the session: ${body.toString()}`);
    if (type === "Z") break;
  }
  assert.ok(key, "no BackendKeyData before ReadyForQuery");
  return { raw, secure, ...key };
}

/** Sends a CancelRequest to the pg entry point and returns its access line. */
async function sendCancel(processId: number, secretKey: Uint8Array): Promise<LogLine> {
  const socket = await rawConnect("pg");
  socket.on("error", () => {});
  socket.resume();
  socket.write(encodeCancelRequest(processId, secretKey));
  const line = await accessOf(socket);
  socket.destroy();
  return line;
}

// ----- access lines ----------------------------------------------------------------------------------------

/** The next access line after `mark` (an index into the log) that matches. */
function accessAfter(mark: number, match: (l: LogLine) => boolean): Promise<LogLine> {
  return w.serve.waitFor(
    (l) => l.msg === "connection" && w.serve.lines.indexOf(l) >= mark && match(l),
    10_000,
  );
}

const mark = () => w.serve.lines.length;

/** The access line of the connection this socket (from rawConnect) made, found by its local port. */
function accessOf(socket: net.Socket): Promise<LogLine> {
  const client = `${HOST}:${localPorts.get(socket)}`;
  return w.serve.waitFor((l) => l.msg === "connection" && l.client === client, 10_000);
}

// ----- setup -----------------------------------------------------------------------------------------------

describe("serve: PostgreSQL with psql and real servers", () => {
  before(async () => {
    assert.ok(psqlAvailable, "psql is not installed: .ci/run installs postgresql-client");
    assert.equal(postgresSkip, false, `cannot run PostgreSQL: ${postgresSkip}; .ci/run installs postgresql`);
    w.dir = mkdtempSync(path.join(tmpdir(), "tlsroute-serve-pg-"));
    const pki = makePki(path.join(w.dir, "pki"));
    w.proxyCa = pki.ca("proxy-ca");
    w.backendCa = pki.ca("backend-ca");
    w.proxyCert = pki.leaf({ ca: w.proxyCa, cn: TERM_NAME, dns: [TERM_NAME, ALPHA_NAME] });
    // The backend's own certificate: what a passthrough client sees and verifies.
    w.backendCert = pki.leaf({ ca: w.backendCa, cn: PASS_NAME, dns: [PASS_NAME], ips: [HOST] });
    [w.alpha, w.beta] = await Promise.all([
      startPostgres({ settings: { cluster_name: "alpha" } }),
      startPostgres({
        ssl: { certFile: w.backendCert.chainFile, keyFile: w.backendCert.keyFile },
        settings: { cluster_name: "beta" },
      }),
    ]);
    const file = path.join(w.dir, "tlsroute.json");
    writeFileSync(file, JSON.stringify(config(), null, 2));
    w.serve = await startServe(
      [
        "-c",
        file,
        ...["pg", "fasttls", "fastplain", "closed"].flatMap((ep) => ["--entrypoint", `${ep}=${HOST}:0`]),
      ],
      { expectEntryPoints: 4 },
    );
    w.port = (ep) => {
      const port = w.serve.ports.get(ep);
      assert.ok(port, `entry point ${ep} is not listening`);
      return port;
    };
  });

  after(async () => {
    await w.serve?.stop();
    w.alpha?.stop();
    w.beta?.stop();
    if (w.dir) rmSync(w.dir, { recursive: true, force: true });
  });

  // ----- termination and passthrough --------------------------------------------------------------------

  it("termination: psql sslmode=require reaches the server; the backend link is plaintext", async () => {
    const m = mark();
    const out = assertOk(
      await psqlVia(
        "pg",
        TERM_NAME,
        "sslmode=require",
        `${SSL_OF_THIS_BACKEND}; select current_setting('cluster_name')`,
      ),
    );
    // The backend (beta) does speak TLS, but tlsroute terminated it and sent the startup in plaintext.
    assert.equal(out, "f\nbeta");
    const line = await accessAfter(m, (l) => l.sni === TERM_NAME);
    assert.equal(line.router, "term");
    assert.equal(line.mode, "terminate");
    assert.equal(line.postgres, "sslrequest");
    assert.equal(line.server, `${HOST}:${w.beta.port}`);
    assert.equal(line.reason, "closed");
    assert.match(String(line.tlsVersion), /^TLSv1\.[23]$/);
  });

  it("termination: sslmode=verify-full verifies our certificate for the SNI name", async () => {
    const verified = await psqlVia(
      "pg",
      TERM_NAME,
      `sslmode=verify-full sslrootcert=${w.proxyCa.certFile}`,
      `${SSL_OF_THIS_BACKEND}; select current_setting('cluster_name')`,
    );
    assert.equal(assertOk(verified), "f\nbeta");
    // The backend's CA does not vouch for our certificate: libpq refuses, so the check is real.
    const wrongCa = await psqlVia(
      "pg",
      TERM_NAME,
      `sslmode=verify-full sslrootcert=${w.backendCa.certFile}`,
      "select 1",
    );
    assert.notEqual(wrongCa.code, 0);
    assert.match(wrongCa.stderr, /certificate verify failed/);
  });

  it("passthrough: the client verifies the backend's own certificate; the backend link is TLS", async () => {
    const m = mark();
    const out = assertOk(
      await psqlVia(
        "pg",
        PASS_NAME,
        `sslmode=verify-full sslrootcert=${w.backendCa.certFile}`,
        `${SSL_OF_THIS_BACKEND}; select current_setting('cluster_name')`,
      ),
    );
    assert.equal(out, "t\nbeta");
    const line = await accessAfter(m, (l) => l.sni === PASS_NAME);
    assert.equal(line.router, "pass");
    assert.equal(line.mode, "passthrough");
    assert.equal(line.postgres, "sslrequest");
    assert.equal(line.tlsVersion, null);
    assert.equal(line.reason, "closed");
    // Our CA is not the backend's: in passthrough tlsroute's certificate is never shown.
    const ours = await psqlVia(
      "pg",
      PASS_NAME,
      `sslmode=verify-full sslrootcert=${w.proxyCa.certFile}`,
      "select 1",
    );
    assert.notEqual(ours.code, 0);
    assert.match(ours.stderr, /certificate verify failed/);
  });

  it("two routers on one port reach two different servers by SNI; a third name gets an alert, fast", async () => {
    const [beta, alpha] = await Promise.all([
      psqlVia("pg", TERM_NAME, "sslmode=require", "select current_setting('cluster_name')"),
      psqlVia(
        "pg",
        ALPHA_NAME,
        "sslmode=require",
        `select current_setting('cluster_name'); ${SSL_OF_THIS_BACKEND}`,
      ),
    ]);
    assert.equal(assertOk(beta), "beta");
    assert.equal(assertOk(alpha), "alpha\nf");
    const m = mark();
    const nobody = await psqlVia("pg", "nobody.test.localhost", "sslmode=require", "select 1");
    assert.equal(nobody.code, 2, nobody.stderr);
    assert.match(nobody.stderr, /unrecognized name/i);
    assert.ok(nobody.ms < 5000, `psql took ${nobody.ms} ms to fail`);
    const line = await accessAfter(m, (l) => l.sni === "nobody.test.localhost");
    assert.equal(line.reason, "no_route");
    assert.equal(line.postgres, "sslrequest");
    // An IP address as host: libpq sends no SNI, and nothing routes a nameless hello here.
    const noSni = await runPsql(
      `host=${HOST} port=${w.port("pg")} user=postgres dbname=postgres sslmode=require connect_timeout=10`,
      ["-c", "select 1"],
    );
    assert.equal(noSni.code, 2);
    assert.match(noSni.stderr, /unrecognized name/i);
  });

  it("passthrough to a backend with ssl=off: it answers N, psql fails, the log says backend_refused_ssl", async () => {
    const m = mark();
    const run = await psqlVia("pg", NOSSL_NAME, "sslmode=require", "select 1");
    assert.equal(run.code, 2, run.stderr);
    assert.ok(run.ms < 5000, `psql took ${run.ms} ms to fail`);
    const line = await accessAfter(m, (l) => l.sni === NOSSL_NAME);
    assert.equal(line.router, "nossl");
    assert.equal(line.mode, "passthrough");
    assert.equal(line.server, `${HOST}:${w.alpha.port}`);
    assert.equal(line.reason, "backend_refused_ssl");
    assert.match(String(line.detail), /answered "N"/);
  });

  // ----- negotiation details ----------------------------------------------------------------------------

  it("sslmode=disable on a TLS-only entry point: psql shows our ErrorResponse and its sslmode=require hint", async () => {
    const m = mark();
    const run = await psqlVia("pg", TERM_NAME, "sslmode=disable gssencmode=disable", "select 1");
    assert.equal(run.code, 2);
    assert.match(run.stderr, /FATAL: {2}tlsroute routes PostgreSQL connections by TLS server name \(SNI\)/);
    assert.match(run.stderr, /HINT: {2}Connect with sslmode=require/);
    const line = await accessAfter(m, (l) => l.postgres === "plaintext");
    assert.equal(line.reason, "no_route");
    assert.equal(line.entryPoint, "pg");
  });

  it("sslmode=prefer on a TLS entry point gets TLS", async () => {
    const out = assertOk(
      await psqlVia("pg", ALPHA_NAME, "sslmode=prefer", "select current_setting('cluster_name')"),
    );
    assert.equal(out, "alpha");
  });

  it("GSSENCRequest is answered N, then the SSLRequest S, then TLS and an authentication request", async () => {
    const socket = await rawConnect("pg");
    try {
      socket.write(GSSENC_REQUEST);
      assert.equal((await readBytes(socket, 1)).toString(), "N");
      socket.write(SSL_REQUEST);
      assert.equal((await readBytes(socket, 1)).toString(), "S");
      const secure = await tlsConnect({ socket, servername: TERM_NAME, ca: w.proxyCa.certPem });
      secure.write(startupMessage({ user: "postgres", database: "postgres" }));
      assert.deepEqual(await firstReply(secure), { type: "R", auth: 0 });
      secure.destroy();
    } finally {
      socket.destroy();
    }
    const line = await accessOf(socket);
    assert.equal(line.postgres, "gssenc+sslrequest");
    assert.equal(line.router, "term");
  });

  it("psql that believes it has Kerberos credentials asks for GSSAPI encryption first, is told N, goes on with TLS", async () => {
    // libpq (built with GSSAPI on Debian) only sends a GSSENCRequest when it finds credentials; a
    // client keytab is enough for it to find some. No KDC is involved: we answer N before any ticket.
    const kerberos = {
      KRB5CCNAME: `FILE:${path.join(w.dir, "no-ccache")}`,
      KRB5_CLIENT_KTNAME: writeClientKeytab(path.join(w.dir, "client.keytab")),
    };
    const m = mark();
    const run = await runPsql(
      conninfo("pg", TERM_NAME, "sslmode=require gssencmode=prefer"),
      ["-A", "-t", "-c", "select current_setting('cluster_name')"],
      undefined,
      { env: kerberos },
    );
    assert.equal(assertOk(run), "beta");
    const line = await accessAfter(m, (l) => l.sni === TERM_NAME);
    assert.equal(line.postgres, "gssenc+sslrequest");
    assert.equal(line.router, "term");
    // Without those credentials the same psql skips GSSAPI altogether.
    const m2 = mark();
    assertOk(await psqlVia("pg", TERM_NAME, "sslmode=require gssencmode=prefer", "select 1"));
    assert.equal((await accessAfter(m2, (l) => l.sni === TERM_NAME)).postgres, "sslrequest");
  });

  it("the pg npm package verifies our certificate through the proxy", async () => {
    const client = new pg.Client({
      host: HOST,
      port: w.port("pg"),
      user: "postgres",
      database: "postgres",
      ssl: { rejectUnauthorized: true, ca: w.proxyCa.certPem, servername: ALPHA_NAME },
    });
    await client.connect();
    try {
      const result = await client.query<{ cluster: string; ssl: boolean }>(
        "select current_setting('cluster_name') as cluster, (select ssl from pg_stat_ssl where pid = pg_backend_pid()) as ssl",
      );
      assert.deepEqual(result.rows, [{ cluster: "alpha", ssl: false }]);
    } finally {
      await client.end();
    }
    // And refuses a certificate its CA does not vouch for.
    const wrong = new pg.Client({
      host: HOST,
      port: w.port("pg"),
      user: "postgres",
      database: "postgres",
      ssl: { rejectUnauthorized: true, ca: w.backendCa.certPem, servername: ALPHA_NAME },
    });
    await assert.rejects(wrong.connect(), /self[- ]signed|unable to (get|verify)/i);
  });

  // ----- entry points without TLS routers ---------------------------------------------------------------

  it("only plain routers (fast path): the SSLRequest goes to the backend unread, which answers itself", async () => {
    // beta says S: TLS runs end to end with beta's own certificate.
    const m = mark();
    const tlsOut = assertOk(
      await psqlVia(
        "fasttls",
        PASS_NAME,
        `sslmode=verify-full sslrootcert=${w.backendCa.certFile}`,
        `${SSL_OF_THIS_BACKEND}; select current_setting('cluster_name')`,
      ),
    );
    assert.equal(tlsOut, "t\nbeta");
    const line = await accessAfter(m, (l) => l.entryPoint === "fasttls");
    assert.equal(line.mode, "tcp");
    assert.equal(line.router, "fast-tls");
    assert.equal(line.postgres, null, "nothing was read, so tlsroute cannot know it was PostgreSQL");
    // alpha says N: sslmode=prefer falls back to plaintext, sslmode=require gives up.
    const prefer = assertOk(
      await psqlVia(
        "fastplain",
        ALPHA_NAME,
        "sslmode=prefer",
        `${SSL_OF_THIS_BACKEND}; select current_setting('cluster_name')`,
      ),
    );
    assert.equal(prefer, "f\nalpha");
    const require = await psqlVia("fastplain", ALPHA_NAME, "sslmode=require", "select 1");
    assert.equal(require.code, 2);
    assert.match(require.stderr, /server does not support SSL, but SSL was required/);
  });

  it("no router for the client on a TLS-less entry point: tlsroute answers N, then the ErrorResponse", async () => {
    const m = mark();
    const prefer = await psqlVia("closed", ALPHA_NAME, "sslmode=prefer gssencmode=disable", "select 1");
    assert.equal(prefer.code, 2);
    assert.match(
      prefer.stderr,
      /FATAL: {2}no tlsroute router on entry point "closed" accepts this connection/,
    );
    // No sslmode=require advice here: this entry point has no TLS router, so that would only get "N".
    assert.doesNotMatch(prefer.stderr, /HINT/);
    const line = await accessAfter(m, (l) => l.entryPoint === "closed");
    assert.equal(line.postgres, "sslrequest+refused+plaintext");
    assert.equal(line.reason, "no_route");
    const require = await psqlVia("closed", ALPHA_NAME, "sslmode=require gssencmode=disable", "select 1");
    assert.equal(require.code, 2);
    assert.match(require.stderr, /server does not support SSL, but SSL was required/);
    const refused = await accessAfter(m, (l) => l.entryPoint === "closed" && l !== line);
    assert.equal(refused.postgres, "sslrequest+refused");
  });

  // ----- cancel requests --------------------------------------------------------------------------------

  it("cancel (termination): SIGINT to psql cancels pg_sleep(60) within seconds; the cancel is forwarded", async () => {
    const m = mark();
    let psql: ChildProcess | undefined;
    const run = psqlVia(
      "pg",
      TERM_NAME,
      "sslmode=require application_name=cancel-term",
      "select pg_sleep(60)",
      (child) => {
        psql = child;
      },
    );
    // Wait until the query runs on the server, then interrupt as a user pressing Ctrl-C would.
    await waitForActiveQuery(w.beta, "cancel-term");
    const interrupted = performance.now();
    psql?.kill("SIGINT");
    const result = await run;
    const tookMs = performance.now() - interrupted;
    assert.match(result.stderr, /ERROR: {2}canceling statement due to user request/);
    assert.ok(tookMs < 5000, `psql took ${Math.round(tookMs)} ms after SIGINT`);
    const line = await accessAfter(m, (l) => l.postgres === "cancel");
    assert.equal(line.entryPoint, "pg");
    assert.equal(line.reason, "closed");
    assert.equal(line.service, "beta");
    assert.equal(line.server, `${HOST}:${w.beta.port}`);
    assert.match(String(line.detail), /^cancel request for process \d+ forwarded$/);
  });

  it("cancel with a key no session has: dropped and logged; a session's key works until it ends", async () => {
    const unknown = await sendCancel(424242, randomBytes(4));
    assert.equal(unknown.reason, "no_route");
    assert.equal(unknown.postgres, "cancel");
    assert.equal(unknown.server, null);
    assert.match(String(unknown.detail), /process 424242: no session with that key went through this proxy/);

    // A key learned from a terminated session: routed while the session lives, forgotten after.
    const session = await openSession(TERM_NAME);
    const live = await sendCancel(session.processId, session.secretKey);
    assert.equal(live.reason, "closed");
    assert.equal(live.server, `${HOST}:${w.beta.port}`);
    assert.match(String(live.detail), new RegExp(`process ${session.processId} forwarded`));
    session.secure.end();
    await accessOf(session.raw);
    const late = await sendCancel(session.processId, session.secretKey);
    assert.equal(late.reason, "no_route");
    assert.match(String(late.detail), new RegExp(`process ${session.processId}: no session`));
  });

  it("cancel (passthrough): the key travelled encrypted, so the cancel cannot be routed and the query runs on", async () => {
    const m = mark();
    let psql: ChildProcess | undefined;
    const run = psqlVia(
      "pg",
      PASS_NAME,
      `sslmode=verify-full sslrootcert=${w.backendCa.certFile} application_name=cancel-pass`,
      "select pg_sleep(2)",
      (child) => {
        psql = child;
      },
    );
    await waitForActiveQuery(w.beta, "cancel-pass");
    psql?.kill("SIGINT");
    const line = await accessAfter(m, (l) => l.postgres === "cancel");
    assert.equal(line.reason, "no_route");
    const result = await run;
    // psql says it sent the cancel (and exits 1 for the interruption), but the query ran its 2 s.
    assert.match(result.stderr, /Cancel request sent/);
    assert.doesNotMatch(result.stderr, /canceling statement/);
    assert.ok(result.ms >= 1900, `psql ended after ${Math.round(result.ms)} ms: the query was cut short`);
    const session = await accessAfter(m, (l) => l.sni === PASS_NAME);
    assert.equal(session.mode, "passthrough");
  });

  // ----- PostgreSQL 17 direct TLS -----------------------------------------------------------------------

  it("direct TLS (termination): ALPN postgresql only, StartupMessage inside TLS, the server answers R", async () => {
    const raw = await rawConnect("pg");
    const secure = await tlsConnect({
      socket: raw,
      servername: TERM_NAME,
      ca: w.proxyCa.certPem,
      ALPNProtocols: ["postgresql"],
    });
    try {
      assert.equal(secure.alpnProtocol, "postgresql");
      secure.write(startupMessage({ user: "postgres", database: "postgres" }));
      assert.deepEqual(await firstReply(secure), { type: "R", auth: 0 });
    } finally {
      secure.destroy();
    }
    const line = await accessOf(raw);
    assert.equal(line.mode, "terminate");
    assert.equal(line.router, "term");
    assert.equal(line.postgres, null, "no SSLRequest was sent");
    assert.deepEqual(line.alpn, ["postgresql"]);

    // A real client library in direct mode (pg's sslnegotiation=direct), a whole session.
    const client = new pg.Client({
      host: HOST,
      port: w.port("pg"),
      user: "postgres",
      database: "postgres",
      sslnegotiation: "direct",
      ssl: { rejectUnauthorized: true, ca: w.proxyCa.certPem, servername: ALPHA_NAME },
    });
    await client.connect();
    try {
      const result = await client.query<{ cluster: string }>(
        "select current_setting('cluster_name') as cluster",
      );
      assert.deepEqual(result.rows, [{ cluster: "alpha" }]);
    } finally {
      await client.end();
    }
  });

  it("direct TLS (passthrough): the hello goes to the backend unchanged, with no SSLRequest before it", async () => {
    // PostgreSQL 15 cannot take direct TLS (17 can): it reads the hello as a startup packet and gives
    // up. What matters here is that tlsroute forwarded the hello itself, not an SSLRequest.
    const logBefore = w.beta.log().length;
    const raw = await rawConnect("pg");
    const outcome = await tlsConnect({
      socket: raw,
      servername: PASS_NAME,
      ca: w.backendCa.certPem,
      ALPNProtocols: ["postgresql"],
    }).then(
      (s) => {
        s.destroy();
        return "handshake completed";
      },
      (err: Error) => err.message,
    );
    const line = await accessOf(raw);
    assert.equal(line.mode, "passthrough");
    assert.equal(line.postgres, null);
    assert.equal(line.server, `${HOST}:${w.beta.port}`);
    assert.ok(Number(line.bytesIn) > 100, `only ${line.bytesIn} bytes went to the backend`);
    if (major >= 17) {
      assert.equal(outcome, "handshake completed");
    } else {
      assert.notEqual(outcome, "handshake completed");
      await waitFor(
        () => /invalid length of startup packet/.test(w.beta.log().slice(logBefore)),
        "beta's log",
      );
    }
  });
});

const major = postgresMajor();

async function waitFor(test: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!test()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Polls the server until a query of that application is running. */
async function waitForActiveQuery(server: PostgresServer, application: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const n = await server.query(
      `select count(*) from pg_stat_activity where application_name = '${application}' and state = 'active'`,
    );
    if (n === "1") return;
    assert.ok(Date.now() < deadline, `the query of ${application} never ran`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
