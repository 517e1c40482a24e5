import assert from "node:assert/strict";
import { describe, it } from "node:test";
import tls from "node:tls";
import fc from "fast-check";
import { HELLO_LIMITS, type HelloResult, parseClientHello } from "../src/wire/clienthello.ts";
import { BIG_ALPN } from "./helpers/capture-hellos.ts";
import {
  alpnExt,
  ascii,
  captureFirstBytes,
  clientHelloMessage,
  concat,
  type Extension,
  ext,
  frame,
  groupsExt,
  type HelloSpec,
  handshakeBytes,
  hello,
  keyShareExt,
  loadFixture,
  modernExtensions,
  record,
  recordVersion,
  sniExt,
  supportedVersionsExt,
  u8,
  u16,
  u24,
  vec8,
  vec16,
} from "./helpers/hello.ts";

type Hello = Extract<HelloResult, { kind: "hello" }>;

function expectHello(result: HelloResult): Hello {
  assert.equal(result.kind, "hello", `expected a hello, got ${JSON.stringify(result)}`);
  return result as Hello;
}

function expectInvalid(bytes: Uint8Array, reason: string | RegExp): void {
  const result = parseClientHello(bytes);
  assert.equal(result.kind, "invalid", `expected invalid, got ${JSON.stringify(result).slice(0, 200)}`);
  const actual = (result as { reason: string }).reason;
  if (typeof reason === "string") assert.equal(actual, reason);
  else assert.match(actual, reason);
}

function expectNeedMore(bytes: Uint8Array): number {
  const result = parseClientHello(bytes);
  assert.equal(result.kind, "need-more", `expected need-more, got ${JSON.stringify(result).slice(0, 200)}`);
  return (result as { atLeast: number }).atLeast;
}

/** What a hello offers, without the framing facts (records, consumed). */
function offer(h: Hello) {
  const { kind: _kind, records: _records, consumed: _consumed, ...rest } = h;
  return rest;
}

/** Every proper prefix must ask for more, with a lower bound that never overshoots the real length. */
function assertPrefixesNeedMore(bytes: Uint8Array, step = 1): void {
  for (let length = 0; length < bytes.length; length += step) {
    const result = parseClientHello(bytes.subarray(0, length));
    if (result.kind !== "need-more") {
      assert.fail(`prefix of ${length}/${bytes.length} bytes gave ${JSON.stringify(result).slice(0, 200)}`);
    }
    assert.ok(result.atLeast > length, `atLeast ${result.atLeast} <= ${length}`);
    assert.ok(result.atLeast <= bytes.length, `atLeast ${result.atLeast} > hello length ${bytes.length}`);
  }
}

/** Re-frames a captured hello's handshake bytes into records of the given sizes, keeping its record version. */
function reframe(captured: Uint8Array, sizes: number | number[]): Uint8Array {
  return frame(handshakeBytes(captured), sizes, recordVersion(captured));
}

/** Invariants every result must satisfy, whatever the input. */
function checkInvariants(input: Uint8Array, result: HelloResult): void {
  switch (result.kind) {
    case "need-more":
      assert.ok(result.atLeast > input.length);
      assert.equal(input[0] === undefined || input[0] === 0x16, true);
      break;
    case "hello":
      assert.equal(input[0], 0x16);
      assert.ok(result.consumed <= input.length && result.consumed >= 47);
      assert.ok(result.records >= 1);
      break;
    case "invalid":
      assert.equal(input[0], 0x16);
      assert.ok(result.reason.length > 0);
      assert.ok(!result.reason.startsWith("internal"), result.reason);
      break;
    case "sslv2":
      assert.equal(input[0], 0x80);
      break;
    case "not-tls":
      assert.ok(input[0] !== undefined && input[0] !== 0x16 && input[0] !== 0x80);
      break;
    default:
      assert.fail(`unknown result ${JSON.stringify(result)}`);
  }
}

const TLS13 = 0x0304;
const TLS12 = 0x0303;
const TLS11 = 0x0302;
const TLS10 = 0x0301;

/** What each captured client was told to send (see test/helpers/capture-hellos.ts). */
const CAPTURED: Record<string, Partial<Omit<Hello, "kind">> & { sni: string; alpn: string[] }> = {
  // openssl s_client -servername foo.example -alpn h2,http/1.1 -groups X25519:P-256
  "openssl-tls13": {
    sni: "foo.example",
    alpn: ["h2", "http/1.1"],
    legacyVersion: TLS12,
    supportedVersions: [TLS13, TLS12, TLS11, TLS10],
    groups: [29, 23],
    keyShareGroups: [29],
  },
  // openssl s_client -tls1_2 -servername tls12.example -alpn http/1.1: no TLS 1.3 extensions at all
  "openssl-tls12": {
    sni: "tls12.example",
    alpn: ["http/1.1"],
    legacyVersion: TLS12,
    supportedVersions: [],
    keyShareGroups: [],
  },
  // openssl s_client -noservername
  "openssl-nosni": { sni: "", alpn: [], supportedVersions: [TLS13, TLS12, TLS11, TLS10] },
  // curl -sk --http2 --resolve curl.example:PORT:127.0.0.1 https://curl.example:PORT/
  curl: { sni: "curl.example", alpn: ["h2", "http/1.1"], supportedVersions: [TLS13, TLS12, TLS11, TLS10] },
  // tls.connect({ servername: "node.example", ALPNProtocols: ["h2", "http/1.1"] }), Node's default minVersion 1.2
  node: {
    sni: "node.example",
    alpn: ["h2", "http/1.1"],
    supportedVersions: [TLS13, TLS12],
    keyShareGroups: [29],
  },
  // tls.connect({ servername: "big.example", ALPNProtocols: BIG_ALPN })
  "node-big": { sni: "big.example", alpn: BIG_ALPN, supportedVersions: [TLS13, TLS12] },
};

const fixtures = Object.fromEntries(Object.keys(CAPTURED).map((name) => [name, loadFixture(name)]));

describe("captured ClientHellos", () => {
  for (const [name, expected] of Object.entries(CAPTURED)) {
    const bytes = fixtures[name]!;

    it(`${name}: parses to what the client was told to send`, () => {
      const h = expectHello(parseClientHello(bytes));
      for (const [key, value] of Object.entries(expected)) {
        assert.deepEqual(h[key as keyof Hello], value, key);
      }
      assert.equal(h.consumed, bytes.length);
      assert.equal(h.records, 1);
      assert.ok(h.cipherSuites.length > 0);
    });

    it(`${name}: every prefix needs more`, () => assertPrefixesNeedMore(bytes));

    it(`${name}: re-framed into 2, 3 and 1-byte records gives the same offer`, () => {
      const original = expectHello(parseClientHello(bytes));
      const message = handshakeBytes(bytes);
      const half = Math.ceil(message.length / 2);
      const third = Math.ceil(message.length / 3);
      for (const [sizes, records] of [
        [half, 2],
        [third, 3],
        [1, message.length],
      ] as const) {
        const reframed = reframe(bytes, sizes);
        const h = expectHello(parseClientHello(reframed));
        assert.deepEqual(offer(h), offer(original));
        assert.equal(h.records, records);
        assert.equal(h.consumed, reframed.length);
      }
    });
  }

  it("openssl -tls1_2 offers no TLS 1.3 cipher suite, the TLS 1.3 clients do", () => {
    const tls12 = expectHello(parseClientHello(fixtures["openssl-tls12"]!));
    assert.ok(!tls12.cipherSuites.some((s) => s >> 8 === 0x13));
    const tls13 = expectHello(parseClientHello(fixtures["openssl-tls13"]!));
    assert.ok(tls13.cipherSuites.includes(0x1301));
  });

  it("prefixes of the 3-record and 1-byte-record re-framings need more", () => {
    for (const name of ["openssl-tls13", "node"]) {
      const bytes = fixtures[name]!;
      assertPrefixesNeedMore(reframe(bytes, Math.ceil(handshakeBytes(bytes).length / 3)));
      assertPrefixesNeedMore(reframe(bytes, 1));
    }
  });

  describe("a large hello (Node, 120 ALPN names) beyond one 1500-byte segment", () => {
    const big = fixtures["node-big"]!;

    it("is bigger than 1.5 KB and is one record as sent", () => {
      assert.ok(big.length > 1500, `${big.length} bytes`);
      assert.equal(expectHello(parseClientHello(big)).records, 1);
    });

    it("parses the same when split across two TLS records, the split inside the ALPN list", () => {
      const message = handshakeBytes(big);
      const alpnAt = Buffer.from(message).indexOf("x-proto-060");
      assert.ok(alpnAt > 0);
      const twoRecords = reframe(big, [alpnAt + 3, message.length]);
      const h = expectHello(parseClientHello(twoRecords));
      assert.equal(h.records, 2);
      assert.equal(h.consumed, big.length + 5);
      assert.deepEqual(offer(h), offer(expectHello(parseClientHello(big))));
      assertPrefixesNeedMore(twoRecords);
    });

    it("arriving in TCP-sized pieces: need-more until the last piece", () => {
      const pieces = [536, 1000, 1448];
      for (const piece of pieces) {
        for (let end = piece; end < big.length; end += piece) expectNeedMore(big.subarray(0, end));
      }
      expectHello(parseClientHello(big));
    });
  });
});

describe("live capture from Node's TLS client", () => {
  for (const [servername, alpn] of [
    ["live.example", ["h2", "http/1.1"]],
    ["xn--bcher-kva.example", ["postgresql"]],
    ["a.b.c.d.e.f.g.example", ["acme-tls/1"]],
  ] as const) {
    it(`sends ${servername} with ALPN ${alpn.join(",")}`, async () => {
      const bytes = await captureFirstBytes((port) => {
        const socket = tls.connect({
          host: "127.0.0.1",
          port,
          servername,
          ALPNProtocols: [...alpn],
          rejectUnauthorized: false,
        });
        socket.on("error", () => {});
        return { stop: () => socket.destroy() };
      }, 150);
      const h = expectHello(parseClientHello(bytes));
      assert.equal(h.sni, servername);
      assert.deepEqual(h.alpn, alpn);
      assert.equal(h.consumed, bytes.length);
    });
  }
});

describe("record layer", () => {
  it("first byte decides: 0x80 is SSLv2, anything but 0x16 is not TLS", () => {
    assert.deepEqual(parseClientHello(Uint8Array.of(0x80, 0x2e, 0x01, 0x00, 0x02)), { kind: "sslv2" });
    assert.deepEqual(parseClientHello(Uint8Array.of(0x80)), { kind: "sslv2" });
    assert.deepEqual(parseClientHello(ascii("GET / HTTP/1.1\r\n")), { kind: "not-tls" });
    // Postgres SSLRequest, an alert record, and SSH banner: all plain TCP for routing.
    assert.deepEqual(parseClientHello(Uint8Array.of(0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f)), { kind: "not-tls" });
    assert.deepEqual(parseClientHello(Uint8Array.of(0x15, 3, 3, 0, 2, 2, 40)), { kind: "not-tls" });
    assert.deepEqual(parseClientHello(ascii("SSH-2.0-OpenSSH_9.6\r\n")), { kind: "not-tls" });
  });

  it("empty input and a lone 0x16 need more, with the smallest possible hello as the bound", () => {
    assert.equal(expectNeedMore(new Uint8Array()), 1);
    // 5-byte record header + 4-byte handshake header + 38-byte minimal ClientHello body
    assert.equal(expectNeedMore(Uint8Array.of(0x16)), 47);
  });

  it("knows the exact total once the record and handshake lengths are in", () => {
    const bytes = hello();
    assert.equal(expectNeedMore(bytes.subarray(0, 5)), bytes.length);
    assert.equal(expectNeedMore(bytes.subarray(0, 9)), bytes.length);
    // split into two records: once the handshake length is known, the second record's header is counted too
    const two = frame(clientHelloMessage(), [20, 100_000]);
    assert.equal(expectNeedMore(two.subarray(0, 9)), two.length);
  });

  it("refuses a record over 18432 bytes from its header alone", () => {
    expectInvalid(Uint8Array.of(0x16, 0x03, 0x01, 0x4e, 0x20), "record too large (20000 > 18432)");
    expectInvalid(Uint8Array.of(0x16, 0x03, 0x01, 0xff, 0xff), "record too large (65535 > 18432)");
  });

  it("refuses a record between 16384 and 18432 from its header (Go fails it after reading the body)", () => {
    expectInvalid(Uint8Array.of(0x16, 0x03, 0x01, 0x48, 0x00), "record plaintext too large (18432 > 16384)");
    expectInvalid(Uint8Array.of(0x16, 0x03, 0x01, 0x40, 0x01), "record plaintext too large (16385 > 16384)");
    assert.equal(HELLO_LIMITS.maxRecordLength, 18432);
    // 16384 is fine: wait for the body
    assert.equal(expectNeedMore(Uint8Array.of(0x16, 0x03, 0x01, 0x40, 0x00)), 5 + 16384);
  });

  it("applies Go's record version rule (< 0x1000) to every record, as soon as the byte is there", () => {
    expectInvalid(Uint8Array.of(0x16, 0x10), "record version 0x10?? is not TLS (must be < 0x1000)");
    expectInvalid(Uint8Array.of(0x16, 0x47, 0x45), "record version 0x4745 is not TLS (must be < 0x1000)");
    // Go accepts any version below 0x1000, so do we: 0x0000, SSL 3.0, 0x0fff
    for (const version of [0x0000, 0x0300, 0x0303, 0x0fff]) {
      expectHello(parseClientHello(frame(clientHelloMessage(), 16384, version)));
    }
    // a later record of the hello is held to the same rule
    const message = clientHelloMessage();
    const bad = concat(record(message.subarray(0, 10)), record(message.subarray(10), { version: 0x1603 }));
    expectInvalid(bad, "record version 0x1603 is not TLS (must be < 0x1000)");
  });

  it("refuses empty handshake records (Go: unexpected message)", () => {
    expectInvalid(record(new Uint8Array()), "empty handshake record (record 1)");
    const message = clientHelloMessage();
    const withEmpty = concat(
      record(message.subarray(0, 10)),
      record(new Uint8Array()),
      record(message.subarray(10)),
    );
    expectInvalid(withEmpty, "empty handshake record (record 2)");
  });

  it("refuses a non-handshake record inside the hello, as soon as its type byte arrives", () => {
    const message = clientHelloMessage();
    const first = record(message.subarray(0, 50));
    const rest = record(message.subarray(50));
    const cases: Array<[Uint8Array, RegExp]> = [
      [
        record(u8(1), { type: 20 }),
        /^unexpected change_cipher_spec \(type 20\) record inside the ClientHello/,
      ],
      [record(Uint8Array.of(1, 0), { type: 21, version: 0x0303 }), /^unexpected alert \(type 21\) record/],
      [record(Uint8Array.of(2, 40), { type: 21 }), /^unexpected alert \(type 21\) record/],
      [record(ascii("data"), { type: 23 }), /^unexpected application_data \(type 23\) record/],
      [record(ascii("x"), { type: 99 }), /^unexpected type 99 record/],
    ];
    for (const [intruder, reason] of cases) {
      expectInvalid(concat(first, intruder, rest), reason);
      expectInvalid(concat(first, intruder.subarray(0, 1)), reason);
    }
  });

  it("refuses a first handshake message that is not a ClientHello, from its type byte", () => {
    expectInvalid(
      record(Uint8Array.of(2, 0, 0, 70)),
      "first handshake message is server_hello (type 2), not client_hello",
    );
    expectInvalid(
      frame(Uint8Array.of(0, 0, 0, 0), 1),
      /^first handshake message is hello_request \(type 0\)/,
    );
    expectInvalid(concat(Uint8Array.of(0x16, 3, 1, 0, 80), u8(99)), /^first handshake message is type 99/);
  });

  it("refuses a handshake message over 65536 bytes from its header, accepts exactly 65536", () => {
    expectInvalid(record(concat(u8(1), u24(65537))), "handshake message too large (65537 > 65536)");
    expectInvalid(frame(concat(u8(1), u24(0xffffff)), 1), "handshake message too large (16777215 > 65536)");
    expectNeedMore(record(concat(u8(1), u24(65536))));

    // A real 65536-byte ClientHello (padded with an unknown extension), in five records.
    const base = clientHelloMessage({ extensions: [sniExt("max.example"), ext(0x7a7a, new Uint8Array())] });
    const padding = 65536 - (base.length - 4);
    const message = clientHelloMessage({
      extensions: [sniExt("max.example"), ext(0x7a7a, new Uint8Array(padding))],
    });
    assert.equal(message.length - 4, 65536);
    const bytes = frame(message, HELLO_LIMITS.maxPlaintextLength);
    const h = expectHello(parseClientHello(bytes));
    assert.equal(h.sni, "max.example");
    assert.equal(h.records, 5);
    assert.equal(h.consumed, bytes.length);
    assertPrefixesNeedMore(bytes, 997);
  });

  it("refuses a handshake length too short for any ClientHello, from its header", () => {
    expectInvalid(record(concat(u8(1), u24(10))), "ClientHello too short (10 < 38 bytes)");
  });

  it("ignores bytes after the hello's last record and reports where the hello ends", () => {
    const bytes = hello({ extensions: modernExtensions("after.example") });
    const extras = [
      ascii("early application bytes"),
      record(u8(1), { type: 20 }), // a middlebox-compatibility change_cipher_spec
      Uint8Array.of(0x16, 0xff, 0xff), // garbage that would be refused inside the hello
    ];
    for (const extra of extras) {
      const h = expectHello(parseClientHello(concat(bytes, extra)));
      assert.equal(h.sni, "after.example");
      assert.equal(h.consumed, bytes.length);
    }
  });

  it("a hello ending inside a record waits for that record's end, and consumes all of it", () => {
    const message = clientHelloMessage({ extensions: modernExtensions("inner.example") });
    const tail = Uint8Array.of(20, 0, 0, 12, ...new Uint8Array(12)); // a following handshake message
    const bytes = record(concat(message, tail));
    assertPrefixesNeedMore(bytes);
    const h = expectHello(parseClientHello(bytes));
    assert.equal(h.consumed, bytes.length);
    assert.equal(h.sni, "inner.example");
  });
});

describe("ClientHello body", () => {
  const withExtensions = (...extensions: Extension[]) => hello({ extensions });

  it("accepts a hello without an extensions block (SSL 3.0 / TLS 1.0 style)", () => {
    const h = expectHello(
      parseClientHello(hello({ legacyVersion: 0x0301, cipherSuites: [0x002f, 0x0035], extensions: null })),
    );
    assert.equal(h.sni, "");
    assert.deepEqual(h.alpn, []);
    assert.equal(h.legacyVersion, 0x0301);
    assert.deepEqual(h.cipherSuites, [0x002f, 0x0035]);
    assert.deepEqual(h.extensions, []);
    assert.deepEqual(h.supportedVersions, []);
  });

  it("reports the offer of a crafted modern hello", () => {
    const h = expectHello(parseClientHello(withExtensions(...modernExtensions("Mixed.Case.Example"))));
    assert.equal(h.sni, "Mixed.Case.Example"); // as sent; canonicalisation is the caller's job
    assert.deepEqual(h.alpn, ["h2", "http/1.1"]);
    assert.deepEqual(h.groups, [29, 23]);
    assert.deepEqual(h.keyShareGroups, [29]);
    assert.deepEqual(h.supportedVersions, [TLS13, TLS12]);
    assert.deepEqual(h.extensions, [0, 16, 10, 13, 43, 51]);
  });

  it("refuses malformed fixed fields", () => {
    const oddSuites = concat(
      u16(0x0303),
      new Uint8Array(32),
      vec8(),
      vec16(Uint8Array.of(0x13, 0x01, 0x13)),
      vec8(u8(0)),
    );
    expectInvalid(frame(concat(u8(1), u24(oddSuites.length), oddSuites)), "cipher_suites length 3 is odd");
    const overrunSession = concat(u16(0x0303), new Uint8Array(32), u8(200), new Uint8Array(10));
    expectInvalid(
      frame(concat(u8(1), u24(overrunSession.length), overrunSession)),
      "legacy_session_id length 200 overruns its container (10 bytes left)",
    );
    const overrunSuites = concat(u16(0x0303), new Uint8Array(32), vec8(), u16(100), new Uint8Array(4));
    expectInvalid(
      frame(concat(u8(1), u24(overrunSuites.length), overrunSuites)),
      /^cipher_suites length 100 overruns/,
    );
  });

  it("refuses trailing bytes after the extensions, and a lone byte where the extensions length would be", () => {
    expectInvalid(hello({ trailing: Uint8Array.of(0, 0, 0) }), "3 trailing bytes after the extensions");
    expectInvalid(
      hello({ extensions: null, trailing: u8(0) }),
      "truncated extensions length (needs 2 bytes, 1 left)",
    );
  });

  it("refuses an extension whose length overruns the extensions block", () => {
    const block = concat(u16(0x0000), u16(50), new Uint8Array(10));
    const body = concat(
      u16(0x0303),
      new Uint8Array(32),
      vec8(),
      vec16(u16(0x1301)),
      vec8(u8(0)),
      vec16(block),
    );
    expectInvalid(
      frame(concat(u8(1), u24(body.length), body)),
      /^extension 0 \(server_name\) length 50 overruns/,
    );
    const body2 = concat(
      u16(0x0303),
      new Uint8Array(32),
      vec8(),
      vec16(u16(0x1301)),
      vec8(u8(0)),
      u16(500),
      block,
    );
    expectInvalid(frame(concat(u8(1), u24(body2.length), body2)), /^extensions length 500 overruns/);
  });

  it("refuses duplicate extensions, known or not", () => {
    expectInvalid(
      withExtensions(sniExt("a.example"), sniExt("b.example")),
      "duplicate extension 0 (server_name)",
    );
    expectInvalid(withExtensions(ext(0x7777), alpnExt("h2"), ext(0x7777)), "duplicate extension 30583");
  });

  describe("server_name", () => {
    it("refuses what Go refuses: trailing dot, empty name, several host_names, empty list", () => {
      expectInvalid(withExtensions(sniExt("example.com.")), "SNI ends with a dot");
      expectInvalid(withExtensions(sniExt(".")), "SNI ends with a dot");
      expectInvalid(withExtensions(sniExt("")), "empty SNI host_name");
      expectInvalid(withExtensions(sniExt("a.example", "b.example")), "multiple SNI host_name entries");
      expectInvalid(withExtensions(ext(0, vec16())), "empty server_name list");
      expectInvalid(
        withExtensions(ext(0, new Uint8Array())),
        "truncated server_name list length (needs 2 bytes, 0 left)",
      );
    });

    it("refuses control bytes (unlike Go), naming the byte", () => {
      expectInvalid(
        withExtensions(sniExt(Uint8Array.of(0x61, 0, 0x62))),
        "SNI contains control byte 0x00 at offset 1",
      );
      expectInvalid(withExtensions(sniExt("tab\there")), "SNI contains control byte 0x09 at offset 3");
      expectInvalid(withExtensions(sniExt("del\x7f")), "SNI contains control byte 0x7f at offset 3");
      expectInvalid(withExtensions(sniExt("nl\n.example")), /^SNI contains control byte 0x0a/);
    });

    it("skips other name types like Go, but still requires them non-empty", () => {
      const other = { type: 1, name: ascii("opaque") };
      assert.equal(expectHello(parseClientHello(withExtensions(sniExt(other)))).sni, "");
      assert.equal(
        expectHello(parseClientHello(withExtensions(sniExt(other, "x.example")))).sni,
        "x.example",
      );
      expectInvalid(withExtensions(sniExt({ type: 7, name: new Uint8Array() })), "empty server_name entry");
    });

    it("refuses overruns and leftovers", () => {
      expectInvalid(
        withExtensions(ext(0, concat(u16(30), u8(0), vec16(ascii("a"))))),
        /^server_name list length 30 overruns/,
      );
      expectInvalid(
        withExtensions(ext(0, vec16(u8(0), u16(9), ascii("abc")))),
        /^server_name entry length 9 overruns/,
      );
      expectInvalid(
        withExtensions(ext(0, concat(sniExt("a.example").data, u8(0)))),
        "1 trailing bytes in extension 0 (server_name)",
      );
    });

    it("keeps non-ASCII names as UTF-8 text, and keeps case", () => {
      const h = expectHello(parseClientHello(withExtensions(sniExt(ascii("Bücher.Example")))));
      assert.equal(h.sni, "Bücher.Example");
    });
  });

  describe("ALPN", () => {
    it("refuses an empty list and empty protocol names", () => {
      expectInvalid(withExtensions(ext(16, vec16())), "empty ALPN list");
      expectInvalid(withExtensions(alpnExt("h2", "")), "empty ALPN protocol");
      expectInvalid(withExtensions(alpnExt("")), "empty ALPN protocol");
    });

    it("refuses overruns and leftovers", () => {
      expectInvalid(withExtensions(ext(16, vec16(u8(5), ascii("h2")))), /^ALPN protocol length 5 overruns/);
      expectInvalid(
        withExtensions(ext(16, concat(alpnExt("h2").data, u8(0)))),
        "1 trailing bytes in extension 16 (alpn)",
      );
    });

    it("keeps order and duplicates as sent", () => {
      const h = expectHello(parseClientHello(withExtensions(alpnExt("http/1.1", "h2", "h2"))));
      assert.deepEqual(h.alpn, ["http/1.1", "h2", "h2"]);
    });
  });

  describe("version and group lists", () => {
    it("supported_versions: non-empty, even", () => {
      expectInvalid(withExtensions(ext(43, vec8())), "empty supported_versions list");
      expectInvalid(
        withExtensions(ext(43, vec8(Uint8Array.of(3, 4, 3)))),
        "supported_versions list length 3 is odd",
      );
      expectInvalid(
        withExtensions(ext(43, Uint8Array.of(9, 3, 4))),
        /^supported_versions list length 9 overruns/,
      );
      const h = expectHello(parseClientHello(withExtensions(supportedVersionsExt(0x7a7a, TLS13))));
      assert.deepEqual(h.supportedVersions, [0x7a7a, TLS13]);
    });

    it("supported_groups: non-empty, even", () => {
      expectInvalid(withExtensions(ext(10, vec16())), "empty supported_groups list");
      expectInvalid(
        withExtensions(ext(10, vec16(Uint8Array.of(0, 29, 0)))),
        "supported_groups list length 3 is odd",
      );
      assert.deepEqual(
        expectHello(parseClientHello(withExtensions(groupsExt(0x11ec, 29)))).groups,
        [0x11ec, 29],
      );
    });

    it("key_share: entries need a non-empty key; an empty list is fine", () => {
      expectInvalid(
        withExtensions(keyShareExt({ group: 29, keyLength: 0 })),
        "empty key_share key_exchange for group 29",
      );
      expectInvalid(
        withExtensions(ext(51, vec16(u16(29), u16(32), new Uint8Array(8)))),
        /^key_share key_exchange length 32 overruns/,
      );
      expectInvalid(withExtensions(ext(51, vec16(u8(0)))), /^truncated key_share group/);
      const empty = expectHello(parseClientHello(withExtensions(ext(51, vec16()))));
      assert.deepEqual(empty.keyShareGroups, []);
      const two = expectHello(
        parseClientHello(
          withExtensions(keyShareExt({ group: 0x11ec, keyLength: 1216 }, { group: 29, keyLength: 32 })),
        ),
      );
      assert.deepEqual(two.keyShareGroups, [0x11ec, 29]);
    });

    it("signature_algorithms and ec_point_formats: non-empty", () => {
      expectInvalid(withExtensions(ext(13, vec16())), "empty signature_algorithms list");
      expectInvalid(withExtensions(ext(50, vec16())), "empty signature_algorithms_cert list");
      expectInvalid(withExtensions(ext(11, vec8())), "empty ec_point_formats list");
    });
  });

  describe("other extensions Go checks", () => {
    it("flag extensions must be empty", () => {
      expectInvalid(
        withExtensions(ext(23, u8(0))),
        "1 trailing bytes in extension 23 (extended_master_secret)",
      );
      expectInvalid(withExtensions(ext(42, u8(0))), "1 trailing bytes in extension 42 (early_data)");
      expectHello(parseClientHello(withExtensions(ext(23), ext(42), ext(18))));
    });

    it("opaque ones accept anything", () => {
      expectHello(
        parseClientHello(withExtensions(ext(35, new Uint8Array(200)), ext(57, Uint8Array.of(1, 2, 3)))),
      );
    });

    it("status_request, renegotiation_info, cookie, psk_key_exchange_modes", () => {
      expectHello(parseClientHello(withExtensions(ext(5, concat(u8(1), vec16(), vec16())))));
      expectInvalid(withExtensions(ext(5, u8(1))), /^truncated status_request responder_id_list length/);
      expectHello(parseClientHello(withExtensions(ext(0xff01, vec8()))));
      expectInvalid(withExtensions(ext(0xff01, new Uint8Array())), /^truncated renegotiation_info length/);
      expectInvalid(withExtensions(ext(44, vec16())), "empty cookie");
      expectHello(parseClientHello(withExtensions(ext(45, vec8(u8(1))))));
      expectInvalid(
        withExtensions(ext(45, Uint8Array.of(3, 1))),
        /^psk_key_exchange_modes list length 3 overruns/,
      );
    });

    it("pre_shared_key must be last and well formed", () => {
      const psk = ext(
        41,
        concat(vec16(vec16(ascii("ticket")), Uint8Array.of(0, 0, 0, 1)), vec16(vec8(new Uint8Array(32)))),
      );
      expectHello(parseClientHello(withExtensions(sniExt("psk.example"), psk)));
      expectInvalid(withExtensions(psk, sniExt("psk.example")), "pre_shared_key is not the last extension");
      const emptyBinder = ext(41, concat(vec16(vec16(ascii("t")), new Uint8Array(4)), vec16(vec8())));
      expectInvalid(withExtensions(emptyBinder), "empty pre_shared_key binder");
      const emptyIdentity = ext(41, concat(vec16(vec16(), new Uint8Array(4)), vec16(vec8(u8(1)))));
      expectInvalid(withExtensions(emptyIdentity), "empty pre_shared_key identity");
      expectInvalid(
        withExtensions(ext(41, concat(vec16(), vec16(vec8(u8(1)))))),
        "empty pre_shared_key identities",
      );
    });

    it("encrypted_client_hello is parsed like Go does before Traefik's hook", () => {
      const outer = concat(
        u8(0),
        u16(1),
        u16(1),
        u8(7),
        vec16(new Uint8Array(32)),
        vec16(new Uint8Array(100)),
      );
      expectHello(parseClientHello(withExtensions(sniExt("public.example"), ext(0xfe0d, outer))));
      expectHello(parseClientHello(withExtensions(ext(0xfe0d, u8(1))))); // inner marker
      expectHello(parseClientHello(withExtensions(ext(0xfe0d)))); // empty: Go does not look at it
      expectInvalid(withExtensions(ext(0xfe0d, u8(2))), "invalid encrypted_client_hello type 2");
      expectInvalid(withExtensions(ext(0xfe0d, Uint8Array.of(1, 0))), /^malformed encrypted_client_hello/);
      expectInvalid(
        withExtensions(ext(0xfe0d, outer.subarray(0, 20))),
        /^encrypted_client_hello enc length 32 overruns/,
      );
    });

    it("unknown extensions (GREASE included) are skipped whatever they hold", () => {
      const h = expectHello(
        parseClientHello(withExtensions(ext(0x0a0a, u8(0)), sniExt("g.example"), ext(0xfafa))),
      );
      assert.equal(h.sni, "g.example");
      assert.deepEqual(h.extensions, [0x0a0a, 0, 0xfafa]);
    });
  });
});

// ----- properties ----------------------------------------------------------------------------------------

const fixtureNames = Object.keys(CAPTURED);

type Mutation =
  | { op: "set"; at: number; value: number }
  | { op: "delete"; at: number; count: number }
  | { op: "insert"; at: number; bytes: Uint8Array }
  | { op: "truncate"; at: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant("delete" as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
  fc.record({
    op: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
  fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }),
);

function mutate(bytes: Uint8Array, mutation: Mutation): Uint8Array {
  const at = bytes.length === 0 ? 0 : mutation.at % bytes.length;
  switch (mutation.op) {
    case "set": {
      const copy = bytes.slice();
      if (copy.length > 0) copy[at] = mutation.value;
      return copy;
    }
    case "delete":
      return concat(bytes.subarray(0, at), bytes.subarray(at + mutation.count));
    case "insert":
      return concat(bytes.subarray(0, at), mutation.bytes, bytes.subarray(at));
    case "truncate":
      return bytes.subarray(0, at);
  }
}

/** Printable ASCII hostnames-ish: any printable characters, not ending with a dot. */
const sniArb = fc
  .string({
    unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
    minLength: 1,
    maxLength: 253,
  })
  .filter((s) => !s.endsWith("."));
const alpnArb = fc.array(
  fc.string({
    unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
    minLength: 1,
    maxLength: 40,
  }),
  { minLength: 1, maxLength: 12 },
);

describe("properties", () => {
  it("random bytes never throw and give a well-formed result", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), (bytes, forceTls) => {
        const input = forceTls && bytes.length > 0 ? concat(u8(0x16), bytes.subarray(1)) : bytes;
        checkInvariants(input, parseClientHello(input));
      }),
      { numRuns: 2000 },
    );
  });

  it("random record-shaped bytes never throw", () => {
    const recordArb = fc
      .tuple(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 0x0fff }))
      .map(([payload, version]) => record(concat(u8(1), u24(payload.length), payload), { version }));
    fc.assert(
      fc.property(recordArb, (input) => checkInvariants(input, parseClientHello(input))),
      { numRuns: 1000 },
    );
  });

  it("mutations and truncations of captured hellos never throw and keep the invariants", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...fixtureNames),
        fc.array(mutationArb, { minLength: 1, maxLength: 4 }),
        (name, mutations) => {
          const input = mutations.reduce(mutate, fixtures[name]!);
          checkInvariants(input, parseClientHello(input));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("a refusal on a prefix stays a refusal on any longer input (decisions use only bytes already seen)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...fixtureNames),
        mutationArb,
        fc.uint8Array({ maxLength: 64 }),
        (name, mutation, more) => {
          const input = mutate(fixtures[name]!, mutation);
          const first = parseClientHello(input);
          const longer = parseClientHello(concat(input, more));
          if (first.kind === "hello") assert.deepEqual(longer, first);
          if (first.kind === "invalid") assert.equal(longer.kind, "invalid");
          if (first.kind === "need-more" && longer.kind === "need-more") {
            assert.ok(longer.atLeast >= first.atLeast);
          }
        },
      ),
      { numRuns: 1500 },
    );
  });

  it("random re-framings of captured hellos give the same offer", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...fixtureNames),
        fc.array(fc.integer({ min: 1, max: 600 }), { minLength: 1, maxLength: 6 }),
        (name, sizes) => {
          const bytes = fixtures[name]!;
          const reframed = reframe(bytes, sizes);
          const h = expectHello(parseClientHello(reframed));
          assert.deepEqual(offer(h), offer(expectHello(parseClientHello(bytes))));
          assert.equal(h.consumed, reframed.length);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a hello built from random valid SNI and ALPN values round-trips, however it is framed", () => {
    fc.assert(
      fc.property(
        sniArb,
        alpnArb,
        fc.option(fc.integer({ min: 1, max: 400 }), { nil: undefined }),
        fc.uint8Array({ maxLength: 16 }),
        (sni, alpn, fragment, after) => {
          const spec: HelloSpec = { extensions: [...modernExtensions(sni, alpn), ext(0x4a4a, after)] };
          const bytes = frame(clientHelloMessage(spec), fragment ?? 16384);
          const h = expectHello(parseClientHello(concat(bytes, after)));
          assert.equal(h.sni, sni);
          assert.deepEqual(h.alpn, alpn);
          assert.equal(h.consumed, bytes.length);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("any SNI containing a control byte is refused, any other round-trips", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (name) => {
        const bytes = hello({ extensions: [sniExt(name)] });
        const result = parseClientHello(bytes);
        const hasControl = name.some((b) => b < 0x20 || b === 0x7f);
        if (hasControl) {
          assert.equal(result.kind, "invalid");
        } else if (name[name.length - 1] === 0x2e) {
          assert.deepEqual(result, { kind: "invalid", reason: "SNI ends with a dot" });
        } else {
          assert.equal(expectHello(result).sni, new TextDecoder().decode(name));
        }
      }),
      { numRuns: 500 },
    );
  });
});
