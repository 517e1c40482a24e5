import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import {
  BackendMessageScanner,
  CANCEL_REQUEST_CODE,
  classifyPostgresStart,
  encodeCancelRequest,
  encodeErrorResponse,
  GSSENC_REQUEST,
  GSSENC_REQUEST_CODE,
  MAX_STARTUP_LENGTH,
  type PostgresStart,
  PROTOCOL_3_0,
  PROTOCOL_3_2,
  parseBackendKeyData,
  SSL_REQUEST,
  SSL_REQUEST_CODE,
} from "../src/wire/postgres.ts";
import {
  type PostgresServer,
  postgresSkip,
  psqlAvailable,
  runPsql,
  startPostgres,
} from "./helpers/postgres.ts";

// ---------------------------------------------------------------------------------------------
// Byte builders written from the protocol documentation, independent of the module under test.

function hex(text: string): Uint8Array {
  const digits = text.replace(/\s+/g, "");
  return Uint8Array.from(digits.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

function int32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value >>> 0);
  return out;
}

function cstring(text: string): Uint8Array {
  return concat(new TextEncoder().encode(text), Uint8Array.of(0));
}

function startupMessage(params: [string, string][], version = PROTOCOL_3_0): Uint8Array {
  const body = concat(
    int32(version),
    ...params.flatMap(([k, v]) => [cstring(k), cstring(v)]),
    Uint8Array.of(0),
  );
  return concat(int32(body.length + 4), body);
}

/** A backend message: type byte, int32 length counting itself, body. */
function message(type: string, body: Uint8Array = new Uint8Array()): Uint8Array {
  return concat(Uint8Array.of(type.charCodeAt(0)), int32(body.length + 4), body);
}

function keyDataMessage(pid: number, key: Uint8Array): Uint8Array {
  return message("K", concat(int32(pid), key));
}

const AUTH_OK = message("R", int32(0));
const READY_IDLE = message("Z", Uint8Array.of(0x49));

function parameterStatus(name: string, value: string): Uint8Array {
  return message("S", concat(cstring(name), cstring(value)));
}

function assertEveryPrefixNeedsMore(bytes: Uint8Array): void {
  for (let n = 0; n < bytes.length; n++) {
    assert.deepEqual(
      classifyPostgresStart(bytes.subarray(0, n)),
      { kind: "need-more" },
      `prefix of ${n} bytes`,
    );
  }
}

// ---------------------------------------------------------------------------------------------

describe("Postgres constants and encoders", () => {
  it("has the documented codes and the SSLRequest/GSSENCRequest bytes", () => {
    assert.equal(SSL_REQUEST_CODE, 1234 * 65536 + 5679);
    assert.equal(GSSENC_REQUEST_CODE, 1234 * 65536 + 5680);
    assert.equal(CANCEL_REQUEST_CODE, 1234 * 65536 + 5678);
    assert.equal(PROTOCOL_3_0, 3 * 65536);
    assert.equal(PROTOCOL_3_2, 3 * 65536 + 2);
    assert.deepEqual(SSL_REQUEST, hex("00000008 04d2162f"));
    assert.deepEqual(GSSENC_REQUEST, hex("00000008 04d21630"));
  });

  it("encodes a CancelRequest with a 4-byte (3.0) or longer (3.2) key", () => {
    assert.deepEqual(encodeCancelRequest(4242, hex("deadbeef")), hex("00000010 04d2162e 00001092 deadbeef"));
    const longKey = Uint8Array.from({ length: 32 }, (_, i) => i);
    const encoded = encodeCancelRequest(0x7fffffff, longKey);
    assert.deepEqual(encoded, concat(hex("0000002c 04d2162e 7fffffff"), longKey));
  });

  it("encodes an ErrorResponse with S, V, C, M and optional H fields", () => {
    const bytes = encodeErrorResponse({ severity: "FATAL", code: "08P01", message: "no", hint: "hi" });
    const body = concat(
      cstring("SFATAL"),
      cstring("VFATAL"),
      cstring("C08P01"),
      cstring("Mno"),
      cstring("Hhi"),
      Uint8Array.of(0),
    );
    assert.deepEqual(bytes, message("E", body));
    const noHint = encodeErrorResponse({ severity: "ERROR", code: "57014", message: "é" });
    assert.deepEqual(
      noHint,
      message(
        "E",
        concat(cstring("SERROR"), cstring("VERROR"), cstring("C57014"), cstring("Mé"), Uint8Array.of(0)),
      ),
    );
  });

  it("removes NUL characters, which would cut a field short", () => {
    const bytes = encodeErrorResponse({ severity: "ERROR", code: "XX000", message: "a\0b" });
    assert.deepEqual(
      bytes,
      message(
        "E",
        concat(cstring("SERROR"), cstring("VERROR"), cstring("CXX000"), cstring("Mab"), Uint8Array.of(0)),
      ),
    );
  });
});

describe("classifyPostgresStart", () => {
  it("recognises SSLRequest and GSSENCRequest only with all 8 bytes", () => {
    assert.deepEqual(classifyPostgresStart(SSL_REQUEST), { kind: "ssl-request" });
    assert.deepEqual(classifyPostgresStart(GSSENC_REQUEST), { kind: "gssenc-request" });
    assertEveryPrefixNeedsMore(SSL_REQUEST);
    assertEveryPrefixNeedsMore(GSSENC_REQUEST);
    // A ClientHello pipelined behind the SSLRequest does not change the answer.
    assert.deepEqual(classifyPostgresStart(concat(SSL_REQUEST, hex("16030100"))), { kind: "ssl-request" });
  });

  it("rules Postgres out after one byte when the first byte is not 0x00", () => {
    for (const first of [0x16, 0x01, 0x47, 0x80, 0xff]) {
      assert.deepEqual(classifyPostgresStart(Uint8Array.of(first)), { kind: "not-postgres" });
    }
    assert.deepEqual(classifyPostgresStart(new TextEncoder().encode("GET / HTTP/1.1\r\n")), {
      kind: "not-postgres",
    });
  });

  it("rules Postgres out as soon as the length cannot be in 8..10000", () => {
    assert.deepEqual(classifyPostgresStart(hex("00 01")), { kind: "not-postgres" });
    assert.deepEqual(classifyPostgresStart(hex("00 00 28")), { kind: "not-postgres" }); // ≥ 10240
    assert.deepEqual(classifyPostgresStart(hex("00 00 27")), { kind: "need-more" }); // 9984..10239
    assert.deepEqual(classifyPostgresStart(hex("00 00 27 11")), { kind: "not-postgres" }); // 10001
    assert.deepEqual(classifyPostgresStart(hex("00 00 27 10")), { kind: "need-more" }); // 10000
    assert.deepEqual(classifyPostgresStart(hex("00 00 00 07")), { kind: "not-postgres" });
    assert.deepEqual(classifyPostgresStart(hex("00 00 00")), { kind: "need-more" });
  });

  it("rules Postgres out when the code is no known request or protocol major", () => {
    assert.deepEqual(classifyPostgresStart(hex("00000008 05")), { kind: "not-postgres" });
    assert.deepEqual(classifyPostgresStart(hex("00000008 04d3")), { kind: "not-postgres" });
    assert.deepEqual(classifyPostgresStart(hex("00000008 0004")), { kind: "not-postgres" });
    assert.deepEqual(classifyPostgresStart(hex("00000008 04")), { kind: "need-more" });
    assert.deepEqual(classifyPostgresStart(hex("00000008 0003")), { kind: "need-more" });
  });

  it("refuses malformed requests", () => {
    const cases: [string, RegExp][] = [
      ["00000010 04d2162f 00000000 00000000", /SSLRequest with length 16/],
      ["00000009 04d21630 00", /GSSENCRequest with length 9/],
      ["0000000f 04d2162e 00000001 000000", /key must be 4 to 256 bytes/],
      ["00000008 04d21631", /unknown request code 80877105/],
      ["00000008 00030000", /at least 9/],
      ["00000009 00020000 00", /protocol 2.0/],
    ];
    for (const [bytes, pattern] of cases) {
      const result = classifyPostgresStart(hex(bytes));
      assert.equal(result.kind, "invalid", `${bytes}: ${JSON.stringify(result)}`);
      if (result.kind === "invalid") assert.match(result.reason, pattern);
    }
    const tooLongKey = concat(hex("00000115 04d2162e 00000001"), new Uint8Array(257));
    assert.equal(classifyPostgresStart(tooLongKey).kind, "invalid");
  });

  it("decodes CancelRequests of protocol 3.0 and 3.2", () => {
    const short = hex("00000010 04d2162e 00001092 deadbeef");
    assert.deepEqual(classifyPostgresStart(concat(short, hex("ff"))), {
      kind: "cancel-request",
      processId: 4242,
      secretKey: hex("deadbeef"),
      consumed: 16,
    });
    assertEveryPrefixNeedsMore(short);
    const key = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
    const long = concat(int32(12 + 256), int32(CANCEL_REQUEST_CODE), int32(0xfffffffe), key);
    assert.deepEqual(classifyPostgresStart(long), {
      kind: "cancel-request",
      processId: 0xfffffffe,
      secretKey: key,
      consumed: 268,
    });
  });

  it("decodes a StartupMessage's version and parameters", () => {
    const bytes = startupMessage([
      ["user", "alice"],
      ["database", "shop"],
      ["application_name", ""],
      ["options", "-c search_path=été"],
    ]);
    const result = classifyPostgresStart(concat(bytes, hex("51")));
    assert.deepEqual(result, {
      kind: "startup",
      protocolVersion: PROTOCOL_3_0,
      params: { user: "alice", database: "shop", application_name: "", options: "-c search_path=été" },
      consumed: bytes.length,
    });
    assertEveryPrefixNeedsMore(bytes);
    const v32 = classifyPostgresStart(startupMessage([["user", "bob"]], PROTOCOL_3_2));
    assert.equal(v32.kind === "startup" && v32.protocolVersion, PROTOCOL_3_2);
    // Only the list terminator: legal framing (the server then complains about the missing user).
    assert.deepEqual(classifyPostgresStart(startupMessage([])), {
      kind: "startup",
      protocolVersion: PROTOCOL_3_0,
      params: {},
      consumed: 9,
    });
  });

  it("keeps the last of duplicate parameters and treats __proto__ as a plain name", () => {
    const result = classifyPostgresStart(
      startupMessage([
        ["user", "a"],
        ["__proto__", "x"],
        ["user", "b"],
      ]),
    );
    assert.equal(result.kind, "startup");
    if (result.kind !== "startup") return;
    assert.equal(result.params.user, "b");
    assert.ok(Object.hasOwn(result.params, "__proto__"));
    assert.equal(Object.getPrototypeOf(result.params), Object.prototype);
  });

  it("refuses StartupMessages whose parameter list is broken", () => {
    const frame = (body: Uint8Array) => concat(int32(body.length + 8), int32(PROTOCOL_3_0), body);
    const cases: [Uint8Array, RegExp][] = [
      // The zero after "a" is taken as the list terminator, so the value has none of its own.
      [frame(concat(cstring("user"), cstring("a"))), /value is not terminated/],
      [frame(concat(cstring("user"), Uint8Array.of(0x61))), /does not end with a zero byte/],
      [frame(cstring("user")), /no value/],
      [frame(concat(cstring("user"), cstring("a"), cstring("database"))), /no value/],
      [
        frame(concat(Uint8Array.of(0), cstring("user"), cstring("a"), Uint8Array.of(0))),
        /empty parameter name/,
      ],
      [frame(concat(cstring("user"), cstring(""))), /value is not terminated/],
    ];
    for (const [bytes, pattern] of cases) {
      const result = classifyPostgresStart(bytes);
      assert.equal(result.kind, "invalid", JSON.stringify(result));
      if (result.kind === "invalid") assert.match(result.reason, pattern);
    }
  });

  it("accepts a StartupMessage of exactly 10000 bytes", () => {
    // length + version + "user\0" + value + "\0" + terminator
    const padding = "x".repeat(MAX_STARTUP_LENGTH - 4 - 4 - 5 - 1 - 1);
    const bytes = startupMessage([["user", padding]]);
    assert.equal(bytes.length, MAX_STARTUP_LENGTH);
    const result = classifyPostgresStart(bytes);
    assert.equal(result.kind === "startup" && result.params.user, padding);
  });
});

const noNul = (s: string) => !s.includes("\0");
const arbParams = fc.uniqueArray(
  fc.tuple(
    fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 }).filter(noNul),
    fc.string({ unit: "grapheme", maxLength: 20 }).filter(noNul),
  ),
  { selector: ([name]) => name, maxLength: 6 },
);
const arbKey = fc.uint8Array({ minLength: 4, maxLength: 256 });
const arbValidStart = fc.oneof(
  fc.constant(SSL_REQUEST),
  fc.constant(GSSENC_REQUEST),
  fc.tuple(fc.nat({ max: 0xffffffff }), arbKey).map(([pid, key]) => encodeCancelRequest(pid, key)),
  fc
    .tuple(arbParams, fc.constantFrom(PROTOCOL_3_0, PROTOCOL_3_2))
    .map(([params, v]) => startupMessage(params, v)),
);
const arbAnyStart = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  arbValidStart,
  // Plausible framing with a random body, so the fuzzing reaches the message parsers.
  fc
    .tuple(
      fc.integer({ min: 0, max: 300 }),
      fc.constantFrom(
        SSL_REQUEST_CODE,
        GSSENC_REQUEST_CODE,
        CANCEL_REQUEST_CODE,
        PROTOCOL_3_0,
        PROTOCOL_3_2,
        0x20000,
      ),
      fc.uint8Array({ maxLength: 300 }),
    )
    .map(([length, code, body]) => concat(int32(length), int32(code), body)),
);

describe("classifyPostgresStart properties", () => {
  it("decodes what the builders write and needs more for every truncation", () => {
    fc.assert(
      fc.property(arbValidStart, (bytes) => {
        const result = classifyPostgresStart(bytes);
        assert.ok(["ssl-request", "gssenc-request", "cancel-request", "startup"].includes(result.kind));
        if ("consumed" in result) assert.equal(result.consumed, bytes.length);
        assertEveryPrefixNeedsMore(bytes);
      }),
      { numRuns: 300 },
    );
  });

  it("round-trips StartupMessage parameters and cancel keys", () => {
    fc.assert(
      fc.property(arbParams, (params) => {
        const result = classifyPostgresStart(startupMessage(params));
        assert.equal(result.kind, "startup");
        if (result.kind === "startup") assert.deepEqual(result.params, Object.fromEntries(params));
      }),
    );
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), arbKey, (pid, key) => {
        assert.deepEqual(classifyPostgresStart(encodeCancelRequest(pid, key)), {
          kind: "cancel-request",
          processId: pid,
          secretKey: key,
          consumed: 12 + key.length,
        });
      }),
    );
  });

  it("never throws, and a decision never changes when more bytes arrive", () => {
    fc.assert(
      fc.property(arbAnyStart, fc.uint8Array({ minLength: 1, maxLength: 30 }), (bytes, more) => {
        const result: PostgresStart = classifyPostgresStart(bytes);
        if ("consumed" in result) assert.ok(result.consumed <= bytes.length);
        if (result.kind !== "need-more") assert.deepEqual(classifyPostgresStart(concat(bytes, more)), result);
      }),
      { numRuns: 3000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------

const STARTUP_STREAM_KEY = hex("0badf00d");
const STARTUP_STREAM = concat(
  AUTH_OK,
  parameterStatus("server_version", "17.2"),
  parameterStatus("client_encoding", "UTF8"),
  keyDataMessage(31337, STARTUP_STREAM_KEY),
  parameterStatus("TimeZone", "UTC"),
  READY_IDLE,
);
/** Offset just past the K message in STARTUP_STREAM. */
const KEY_END = STARTUP_STREAM.length - parameterStatus("TimeZone", "UTC").length - READY_IDLE.length;

/** Feed `chunks`; return the scan result and the index of the chunk after which it was done. */
function scanChunks(chunks: Uint8Array[]): { keyData?: unknown; doneAt: number } {
  const scanner = new BackendMessageScanner();
  for (let i = 0; i < chunks.length; i++) {
    const result = scanner.push(chunks[i]!);
    if (result.done) return { ...result, doneAt: i };
  }
  return { doneAt: -1 };
}

describe("BackendMessageScanner", () => {
  it("finds BackendKeyData in one chunk", () => {
    assert.deepEqual(new BackendMessageScanner().push(STARTUP_STREAM), {
      keyData: { processId: 31337, secretKey: STARTUP_STREAM_KEY },
      done: true,
    });
    assert.deepEqual(parseBackendKeyData(STARTUP_STREAM), {
      processId: 31337,
      secretKey: STARTUP_STREAM_KEY,
    });
  });

  it("is done exactly when the last byte of the K message arrives, byte by byte", () => {
    const scanner = new BackendMessageScanner();
    for (let i = 0; i < KEY_END - 1; i++) {
      assert.deepEqual(scanner.push(STARTUP_STREAM.subarray(i, i + 1)), { done: false }, `byte ${i}`);
    }
    assert.deepEqual(scanner.push(STARTUP_STREAM.subarray(KEY_END - 1, KEY_END)), {
      keyData: { processId: 31337, secretKey: STARTUP_STREAM_KEY },
      done: true,
    });
    // Done is final: more input changes nothing.
    assert.deepEqual(scanner.push(hex("5a00000005 49")).keyData?.processId, 31337);
  });

  it("gets the same answer for any chunking of the stream", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: STARTUP_STREAM.length - 1 }), { maxLength: 12 }),
        (cuts) => {
          const points = [0, ...cuts.sort((a, b) => a - b), STARTUP_STREAM.length];
          const chunks = points.slice(1).map((end, i) => STARTUP_STREAM.subarray(points[i], end));
          const result = scanChunks(chunks);
          assert.deepEqual(result.keyData, { processId: 31337, secretKey: STARTUP_STREAM_KEY });
          // Done in the chunk that holds the K message's last byte, not before.
          const expectedChunk = points.findIndex((p) => p >= KEY_END) - 1;
          assert.equal(result.doneAt, expectedChunk);
        },
      ),
    );
  });

  it("skips large messages without holding them and still finds the key behind them", () => {
    const big = message("N", new Uint8Array(1 << 20).fill(0x41));
    const stream = concat(AUTH_OK, big, keyDataMessage(7, hex("01020304")), READY_IDLE);
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < stream.length; i += 4093) chunks.push(stream.subarray(i, i + 4093));
    assert.deepEqual(scanChunks(chunks).keyData, { processId: 7, secretKey: hex("01020304") });
  });

  it("reads protocol 3.2 keys of any length from 4 to 256 bytes", () => {
    for (const length of [4, 32, 256]) {
      const key = Uint8Array.from({ length }, (_, i) => i * 7);
      assert.deepEqual(parseBackendKeyData(concat(AUTH_OK, keyDataMessage(99, key), READY_IDLE)), {
        processId: 99,
        secretKey: key,
      });
    }
  });

  it("stops without a key at ReadyForQuery, ErrorResponse or broken framing", () => {
    const stops: Uint8Array[] = [
      concat(AUTH_OK, READY_IDLE, keyDataMessage(1, hex("01020304"))),
      concat(
        encodeErrorResponse({ severity: "FATAL", code: "28P01", message: "auth" }),
        keyDataMessage(1, hex("01020304")),
      ),
      concat(hex("5200000003"), keyDataMessage(1, hex("01020304"))),
      concat(keyDataMessage(1, hex("010203")), READY_IDLE),
      concat(keyDataMessage(1, new Uint8Array(257)), READY_IDLE),
    ];
    for (const stream of stops) assert.deepEqual(new BackendMessageScanner().push(stream), { done: true });
    // Not done while the startup is still going.
    assert.deepEqual(new BackendMessageScanner().push(concat(AUTH_OK, parameterStatus("a", "b"))), {
      done: false,
    });
    assert.equal(parseBackendKeyData(AUTH_OK), undefined);
  });

  it("never throws on arbitrary chunks", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 10 }), (chunks) => {
        const scanner = new BackendMessageScanner();
        let wasDone = false;
        for (const chunk of chunks) {
          const result = scanner.push(chunk);
          if (wasDone) assert.ok(result.done);
          wasDone = result.done;
          if (result.keyData)
            assert.ok(result.keyData.secretKey.length >= 4 && result.keyData.secretKey.length <= 256);
        }
      }),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Real peers: psql (libpq) as the client against a loopback stand-in server, and a real
// PostgreSQL server for BackendKeyData and cancellation.

/** Accumulates a socket's bytes and resolves waits for "at least this much" or "matching". */
class Inbox {
  bytes: Uint8Array = new Uint8Array();
  private readonly waiters: (() => void)[] = [];
  constructor(socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.bytes = concat(this.bytes, new Uint8Array(chunk));
      for (const wake of this.waiters.splice(0)) wake();
    });
    socket.on("close", () => {
      for (const wake of this.waiters.splice(0)) wake();
    });
    socket.on("error", () => {});
  }

  async until<T>(test: (bytes: Uint8Array) => T | undefined, what: string, timeoutMs = 10000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = test(this.bytes);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      assert.ok(left > 0, `timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  take(n: number): Uint8Array {
    const head = this.bytes.slice(0, n);
    this.bytes = this.bytes.slice(n);
    return head;
  }

  /** Wait for a complete first message and take it. */
  async nextStart(): Promise<PostgresStart> {
    const result = await this.until((b) => {
      const r = classifyPostgresStart(b);
      return r.kind === "need-more" ? undefined : r;
    }, "a complete client start message");
    this.take("consumed" in result ? result.consumed : 8);
    return result;
  }
}

/** A loopback server whose connections are handed to the test one by one. */
async function standInServer(): Promise<{
  port: number;
  next: () => Promise<net.Socket>;
  close: () => void;
}> {
  const queue: net.Socket[] = [];
  const waiting: ((s: net.Socket) => void)[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    const waiter = waiting.shift();
    if (waiter) waiter(socket);
    else queue.push(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    next: () => {
      const socket = queue.shift();
      return socket ? Promise.resolve(socket) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe("against psql", () => {
  before(() => assert.ok(psqlAvailable, "psql is not installed: .ci/run installs postgresql-client"));
  it("psql with sslmode=require opens with exactly the SSLRequest bytes", async () => {
    const server = await standInServer();
    try {
      const run = runPsql(`host=127.0.0.1 port=${server.port} sslmode=require connect_timeout=10`, [
        "-c",
        "select 1",
      ]);
      const socket = await server.next();
      const inbox = new Inbox(socket);
      // libpq built with GSSAPI may first try GSSENCRequest (only with Kerberos credentials): refuse it.
      let first = await inbox.nextStart();
      const seen: string[] = [first.kind];
      if (first.kind === "gssenc-request") {
        socket.write(Uint8Array.of(0x4e));
        first = await inbox.nextStart();
        seen.push(first.kind);
      }
      assert.deepEqual(first, { kind: "ssl-request" }, `psql sent ${seen.join(", ")}`);
      socket.write(Uint8Array.of(0x4e)); // 'N': no TLS here
      const result = await run;
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /SSL/);
    } finally {
      server.close();
    }
  });

  it("psql with sslmode=disable sends a StartupMessage we parse, and shows our ErrorResponse", async () => {
    const server = await standInServer();
    try {
      const run = runPsql(
        `host=127.0.0.1 port=${server.port} user=tlsroute_probe dbname=probe_db sslmode=disable gssencmode=disable`,
        ["-c", "select 1"],
      );
      const socket = await server.next();
      const inbox = new Inbox(socket);
      const start = await inbox.nextStart();
      assert.equal(start.kind, "startup", JSON.stringify(start));
      if (start.kind !== "startup") return;
      assert.equal(start.protocolVersion, PROTOCOL_3_0);
      assert.equal(start.params.user, "tlsroute_probe");
      assert.equal(start.params.database, "probe_db");
      assert.equal(start.params.application_name, "psql");
      socket.end(
        encodeErrorResponse({
          severity: "FATAL",
          code: "28000",
          message: "this entry point needs TLS with SNI",
          hint: "connect with sslmode=require",
        }),
      );
      const result = await run;
      assert.equal(result.code, 2);
      assert.match(result.stderr, /FATAL: {2}this entry point needs TLS with SNI/);
      assert.match(result.stderr, /HINT: {2}connect with sslmode=require/);
    } finally {
      server.close();
    }
  });

  it("psql cancels a query with the pid and key our BackendKeyData gave it", async () => {
    const server = await standInServer();
    const key = hex("c0ffee42");
    try {
      let psql: ChildProcess | undefined;
      const run = runPsql(
        `host=127.0.0.1 port=${server.port} user=u dbname=d sslmode=disable gssencmode=disable`,
        ["-c", "select pg_sleep(60)"],
        (child) => {
          psql = child;
        },
      );
      const session = await server.next();
      const inbox = new Inbox(session);
      assert.equal((await inbox.nextStart()).kind, "startup");
      session.write(
        concat(
          AUTH_OK,
          parameterStatus("server_version", "15.0"),
          parameterStatus("client_encoding", "UTF8"),
          parameterStatus("standard_conforming_strings", "on"),
          keyDataMessage(424242, key),
          READY_IDLE,
        ),
      );
      // Wait for the Query message, then interrupt psql as a user pressing Ctrl-C would.
      await inbox.until((b) => (b[0] === 0x51 ? true : undefined), "psql's Query");
      psql?.kill("SIGINT");
      const cancelSocket = await server.next();
      const cancel = await new Inbox(cancelSocket).nextStart();
      assert.deepEqual(cancel, { kind: "cancel-request", processId: 424242, secretKey: key, consumed: 16 });
      cancelSocket.end();
      session.end(
        concat(
          encodeErrorResponse({
            severity: "ERROR",
            code: "57014",
            message: "canceling statement due to user request",
          }),
          READY_IDLE,
        ),
      );
      const result = await run;
      assert.match(result.stderr, /canceling statement due to user request/);
    } finally {
      server.close();
    }
  });
});

/** Complete backend messages at the front of `bytes`, as [type, body]. */
function splitMessages(bytes: Uint8Array): { type: string; body: Uint8Array }[] {
  const out: { type: string; body: Uint8Array }[] = [];
  let offset = 0;
  while (offset + 5 <= bytes.length) {
    const length = new DataView(bytes.buffer, bytes.byteOffset + offset + 1, 4).getUint32(0);
    if (offset + 1 + length > bytes.length) break;
    out.push({
      type: String.fromCharCode(bytes[offset]!),
      body: bytes.subarray(offset + 5, offset + 1 + length),
    });
    offset += 1 + length;
  }
  return out;
}

function errorCode(body: Uint8Array): string | undefined {
  const text = new TextDecoder().decode(body);
  return text
    .split("\0")
    .find((field) => field.startsWith("C"))
    ?.slice(1);
}

function queryMessage(sql: string): Uint8Array {
  return message("Q", cstring(sql));
}

describe("against a PostgreSQL server", () => {
  before(() =>
    assert.equal(postgresSkip, false, `cannot run PostgreSQL: ${postgresSkip}; .ci/run installs postgresql`),
  );
  let server: PostgresServer | undefined;
  let port = 0;

  before(async () => {
    server = await startPostgres();
    port = server.port;
  });

  after(() => server?.stop());

  async function connect(): Promise<{ socket: net.Socket; inbox: Inbox }> {
    const socket = net.connect(port, "127.0.0.1");
    const inbox = new Inbox(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    return { socket, inbox };
  }

  it("answers our SSLRequest with 'N' (no TLS configured) and our GSSENCRequest with one byte", async () => {
    const replies: number[] = [];
    for (const request of [SSL_REQUEST, GSSENC_REQUEST]) {
      const { socket, inbox } = await connect();
      socket.write(request);
      const reply = await inbox.until((b) => (b.length > 0 ? b : undefined), "the negotiation reply");
      assert.equal(reply.length, 1);
      replies.push(reply[0]!);
      socket.destroy();
    }
    assert.equal(replies[0], 0x4e);
    // A server built with GSSAPI says 'G' even without a keytab; 'N' otherwise.
    assert.ok(replies[1] === 0x47 || replies[1] === 0x4e, `GSSENCRequest reply ${replies[1]}`);
  });

  it("sends BackendKeyData that the scanner finds, and honours our CancelRequest with it", async () => {
    const { socket, inbox } = await connect();
    const scanner = new BackendMessageScanner();
    let scanned = 0;
    let keyData: { processId: number; secretKey: Uint8Array } | undefined;
    socket.write(
      startupMessage([
        ["user", "postgres"],
        ["database", "postgres"],
      ]),
    );
    // Feed the scanner the server's stream chunk by chunk until it is done.
    await inbox.until((b) => {
      const result = scanner.push(b.subarray(scanned));
      scanned = b.length;
      keyData = result.keyData;
      return result.done ? true : undefined;
    }, "the scanner to finish");
    assert.ok(keyData, "no BackendKeyData found");
    assert.equal(keyData.secretKey.length, 4); // protocol 3.0
    // The same stream, byte by byte, gives the same key.
    await inbox.until(
      (b) => (splitMessages(b).some((m) => m.type === "Z") ? true : undefined),
      "ReadyForQuery",
    );
    const byteScanner = new BackendMessageScanner();
    let byteResult = byteScanner.push(new Uint8Array());
    for (let i = 0; i < inbox.bytes.length && !byteResult.done; i++)
      byteResult = byteScanner.push(inbox.bytes.subarray(i, i + 1));
    assert.deepEqual(byteResult.keyData, keyData);
    inbox.take(inbox.bytes.length);

    // The process id is the backend's own.
    socket.write(queryMessage("select pg_backend_pid()"));
    const rows = await inbox.until((b) => {
      const messages = splitMessages(b);
      return messages.some((m) => m.type === "Z") ? messages : undefined;
    }, "the pid query");
    const dataRow = rows.find((m) => m.type === "D");
    assert.ok(dataRow);
    const pidText = new TextDecoder().decode(dataRow.body.subarray(2 + 4));
    assert.equal(Number(pidText), keyData.processId);
    inbox.take(inbox.bytes.length);

    // A long query, cancelled from a second connection with the learned key. A cancel that
    // arrives before the query runs is lost, so it is repeated until the query ends.
    socket.write(queryMessage("select pg_sleep(30)"));
    const key = keyData;
    let cancels = 0;
    const canceller = setInterval(() => {
      cancels++;
      const c = net.connect(port, "127.0.0.1", () =>
        c.end(encodeCancelRequest(key.processId, key.secretKey)),
      );
      c.on("error", () => {});
    }, 250);
    let reply: { type: string; body: Uint8Array }[];
    try {
      reply = await inbox.until((b) => {
        const messages = splitMessages(b);
        return messages.some((m) => m.type === "Z") ? messages : undefined;
      }, "the cancelled query's reply");
    } finally {
      clearInterval(canceller);
    }
    assert.ok(cancels > 0);
    const error = reply.find((m) => m.type === "E");
    assert.ok(error, "the query was not cancelled");
    assert.equal(errorCode(error.body), "57014");
    socket.destroy();
  });
});
