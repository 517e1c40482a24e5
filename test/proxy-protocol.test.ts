import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { parseAddr } from "../src/rules/ip.ts";
import {
  decodeProxyHeader,
  encodeProxyHeader,
  PROXY_V1_MAX_LENGTH,
  PROXY_V2_SIGNATURE,
  type ProxyEndpoint,
  type ProxyHeaderDecode,
} from "../src/wire/proxy-protocol.ts";

/** "0d 0a 21" → bytes; whitespace between bytes is free. */
function hex(text: string): Uint8Array {
  const digits = text.replace(/\s+/g, "");
  assert.equal(digits.length % 2, 0, `odd hex string ${text}`);
  return Uint8Array.from(digits.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16));
}

function ascii(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
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

// Written from the spec's field list, not produced by the encoder.
const SIG = "0d0a0d0a000d0a515549540a";
const V2_IPV4 = hex(`${SIG} 21 11 000c 7f000001 7f000002 1388 01bb`); // 127.0.0.1:5000 → 127.0.0.2:443
const V2_IPV6 = hex(
  `${SIG} 21 21 0024 20010db8000000000000000000000001 20010db8000000000000000000000002 0001 ffff`,
);
const V2_LOCAL = hex(`${SIG} 20 00 0000`);

const ALL_KINDS = new Set(["need-more", "none", "header", "invalid"]);

function assertHeader(
  result: ProxyHeaderDecode,
  expected: Omit<Extract<ProxyHeaderDecode, { kind: "header" }>, "kind">,
): void {
  assert.deepEqual(result, { kind: "header", ...expected });
}

function assertInvalid(bytes: Uint8Array, pattern?: RegExp): void {
  const result = decodeProxyHeader(bytes);
  assert.equal(result.kind, "invalid", `expected invalid, got ${JSON.stringify(result)}`);
  if (pattern && result.kind === "invalid") assert.match(result.reason, pattern);
}

function assertEveryPrefixNeedsMore(bytes: Uint8Array): void {
  for (let n = 0; n < bytes.length; n++) {
    assert.deepEqual(decodeProxyHeader(bytes.subarray(0, n)), { kind: "need-more" }, `prefix of ${n} bytes`);
  }
}

describe("encodeProxyHeader v2", () => {
  it("writes TCP/IPv4 exactly as the spec lays it out", () => {
    const bytes = encodeProxyHeader(2, { ip: "127.0.0.1", port: 5000 }, { ip: "127.0.0.2", port: 443 });
    assert.deepEqual(bytes, V2_IPV4);
  });

  it("writes TCP/IPv6 with 36 address bytes", () => {
    const bytes = encodeProxyHeader(
      2,
      { ip: "2001:db8::1", port: 1 },
      { ip: "2001:DB8:0:0:0:0:0:2", port: 65535 },
    );
    assert.deepEqual(bytes, V2_IPV6);
  });

  it("writes LOCAL with no address block when an address is missing or unusable", () => {
    const good = { ip: "127.0.0.1", port: 80 };
    const unusable: [ProxyEndpoint | null, ProxyEndpoint | null][] = [
      [null, null],
      [null, good],
      [good, null],
      [{ ip: "localhost", port: 80 }, good],
      [good, { ip: "127.0.0.1", port: 65536 }],
      [good, { ip: "127.0.0.1", port: -1 }],
      [good, { ip: "127.0.0.1", port: 80.5 }],
      [{ ip: "[::1]", port: 80 }, good],
      [{ ip: "", port: 80 }, good],
    ];
    for (const [src, dst] of unusable) {
      assert.deepEqual(encodeProxyHeader(2, src, dst), V2_LOCAL, JSON.stringify([src, dst]));
    }
  });

  it("uses IPv4 when both ends are IPv4, counting IPv4-mapped IPv6 as IPv4", () => {
    const bytes = encodeProxyHeader(
      2,
      { ip: "::ffff:127.0.0.1", port: 5000 },
      { ip: "127.0.0.2", port: 443 },
    );
    assert.deepEqual(bytes, V2_IPV4);
  });

  it("uses IPv6 with an IPv4-mapped address when the families differ", () => {
    const bytes = encodeProxyHeader(2, { ip: "2001:db8::1", port: 1 }, { ip: "192.0.2.9", port: 443 });
    assert.deepEqual(
      bytes,
      hex(`${SIG} 21 21 0024 20010db8000000000000000000000001 00000000000000000000ffffc0000209 0001 01bb`),
    );
  });

  it("drops an IPv6 zone, which the header cannot carry", () => {
    const bytes = encodeProxyHeader(2, { ip: "fe80::1%eth0", port: 10 }, { ip: "fe80::2", port: 20 });
    assert.deepEqual(
      bytes,
      hex(`${SIG} 21 21 0024 fe800000000000000000000000000001 fe800000000000000000000000000002 000a 0014`),
    );
  });
});

describe("encodeProxyHeader v1", () => {
  it("writes TCP4, TCP6 and UNKNOWN lines", () => {
    const text = (bytes: Uint8Array) => String.fromCharCode(...bytes);
    assert.equal(
      text(encodeProxyHeader(1, { ip: "192.0.2.1", port: 56324 }, { ip: "198.51.100.2", port: 443 })),
      "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
    );
    assert.equal(
      text(encodeProxyHeader(1, { ip: "2001:0db8::0001", port: 0 }, { ip: "::1", port: 65535 })),
      "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n",
    );
    assert.equal(
      text(encodeProxyHeader(1, { ip: "::ffff:10.0.0.1", port: 1 }, { ip: "10.0.0.2", port: 2 })),
      "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n",
    );
    assert.equal(
      text(encodeProxyHeader(1, { ip: "10.0.0.1", port: 1 }, { ip: "2001:db8::2", port: 2 })),
      "PROXY TCP6 ::ffff:10.0.0.1 2001:db8::2 1 2\r\n",
    );
    assert.equal(text(encodeProxyHeader(1, null, { ip: "10.0.0.2", port: 2 })), "PROXY UNKNOWN\r\n");
    assert.equal(
      text(encodeProxyHeader(1, { ip: "example.com", port: 1 }, { ip: "10.0.0.2", port: 2 })),
      "PROXY UNKNOWN\r\n",
    );
  });
});

describe("decodeProxyHeader on spec vectors", () => {
  it("decodes v2 IPv4, IPv6 and LOCAL and reports where the payload starts", () => {
    const payload = ascii("\x16\x03\x01hello");
    assertHeader(decodeProxyHeader(concat(V2_IPV4, payload)), {
      version: 2,
      command: "proxy",
      src: { ip: "127.0.0.1", port: 5000 },
      dst: { ip: "127.0.0.2", port: 443 },
      consumed: 28,
    });
    assertHeader(decodeProxyHeader(V2_IPV6), {
      version: 2,
      command: "proxy",
      src: { ip: "2001:db8::1", port: 1 },
      dst: { ip: "2001:db8::2", port: 65535 },
      consumed: 52,
    });
    assertHeader(decodeProxyHeader(concat(V2_LOCAL, payload)), {
      version: 2,
      command: "local",
      consumed: 16,
    });
  });

  it("skips v2 TLVs and counts them in the header length", () => {
    // ALPN "h2" (type 0x01) then a 2-byte NOOP (type 0x04) after the IPv4 block.
    const withTlvs = hex(`${SIG} 21 11 0016 7f000001 7f000002 1388 01bb 01 0002 6832 04 0002 0000`);
    assertHeader(decodeProxyHeader(withTlvs), {
      version: 2,
      command: "proxy",
      src: { ip: "127.0.0.1", port: 5000 },
      dst: { ip: "127.0.0.2", port: 443 },
      consumed: 38,
    });
    assertEveryPrefixNeedsMore(withTlvs);
  });

  it("refuses TLVs that do not tile the block", () => {
    assertInvalid(hex(`${SIG} 21 11 000e 7f000001 7f000002 1388 01bb 0100`), /inside a TLV header/);
    assertInvalid(hex(`${SIG} 21 11 0010 7f000001 7f000002 1388 01bb 01 0002 68`), /past the end/);
  });

  it("gives no addresses for LOCAL, UNSPEC, UDP and UNIX headers", () => {
    // LOCAL: the block is discarded unread, whatever it holds.
    assertHeader(decodeProxyHeader(hex(`${SIG} 20 11 0003 ffffff`)), {
      version: 2,
      command: "local",
      consumed: 19,
    });
    assertHeader(decodeProxyHeader(hex(`${SIG} 21 00 0002 abcd`)), {
      version: 2,
      command: "proxy",
      consumed: 18,
    });
    assertHeader(decodeProxyHeader(hex(`${SIG} 21 12 000c 7f000001 7f000002 1388 01bb`)), {
      version: 2,
      command: "proxy",
      consumed: 28,
    });
    const unix = concat(hex(`${SIG} 21 31 00d8`), new Uint8Array(216));
    assertHeader(decodeProxyHeader(unix), { version: 2, command: "proxy", consumed: 232 });
  });

  it("refuses bad v2 fields as soon as they arrive", () => {
    assertInvalid(hex(`${SIG} 11`), /version/);
    assertInvalid(hex(`${SIG} 22`), /command/);
    assertInvalid(hex(`${SIG} 21 41`), /family/);
    assertInvalid(hex(`${SIG} 21 13`), /family/);
    // An IPv4 block needs 12 bytes: refused from the length alone, without waiting for the body.
    assertInvalid(hex(`${SIG} 21 11 000b`), /needs 12/);
    assertInvalid(hex(`${SIG} 21 21 000c`), /needs 36/);
  });

  it("decodes v1 lines", () => {
    assertHeader(decodeProxyHeader(ascii("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /")), {
      version: 1,
      command: "proxy",
      src: { ip: "192.0.2.1", port: 56324 },
      dst: { ip: "198.51.100.2", port: 443 },
      consumed: 45,
    });
    assertHeader(decodeProxyHeader(ascii("PROXY TCP6 2001:DB8:0::1 ::ffff:10.0.0.2 0 65535\r\n")), {
      version: 1,
      command: "proxy",
      src: { ip: "2001:db8::1", port: 0 },
      dst: { ip: "::ffff:10.0.0.2", port: 65535 },
      consumed: 50,
    });
    assertHeader(decodeProxyHeader(ascii("PROXY UNKNOWN\r\n")), {
      version: 1,
      command: "local",
      consumed: 15,
    });
  });

  it("accepts the longest v1 line (107 bytes) and refuses one byte more", () => {
    const full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const longest = ascii(`PROXY UNKNOWN ${full} ${full} 65535 65535\r\n`);
    assert.equal(longest.length, PROXY_V1_MAX_LENGTH);
    assertHeader(decodeProxyHeader(longest), { version: 1, command: "local", consumed: 107 });
    assertEveryPrefixNeedsMore(longest);
    const tooLong = ascii(`PROXY UNKNOWN ${full} ${full} 65535 655350\r\n`);
    assertInvalid(tooLong, /no CRLF within 107/);
    // Decided at 106 bytes: the CR could no longer fit.
    assertInvalid(tooLong.subarray(0, 106), /no CRLF within 107/);
    assert.deepEqual(decodeProxyHeader(tooLong.subarray(0, 105)), { kind: "need-more" });
  });

  it("refuses malformed v1 lines", () => {
    const bad: [string, RegExp][] = [
      ["PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", /unknown v1 protocol/],
      ["PROXY \r\n", /unknown v1 protocol/],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", /4 fields/],
      ["PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", /4 fields/],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", /4 fields/],
      ["PROXY TCP4 ::1 5.6.7.8 1 2\r\n", /not a plain IPv4/],
      ["PROXY TCP6 1.2.3.4 ::1 1 2\r\n", /not a plain IPv6/],
      ["PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", /not a plain IPv6/],
      ["PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", /leading zero/],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /port "65536"/],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", /port "-2"/],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", /4 fields/],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", /not printable/],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", /not followed by LF/],
      ["PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", /not printable/],
    ];
    for (const [line, pattern] of bad) assertInvalid(ascii(line), pattern);
  });

  it("answers none for anything that does not start with a signature", () => {
    const none = [
      hex("16 03 01 02 00"),
      hex("00 00 00 08 04 d2 16 2f"),
      ascii("GET / HTTP/1.1\r\n"),
      ascii("PROXX"),
      ascii("PROXY\r\n"),
      ascii("proxy TCP4"),
      hex("0d 0a 0d 0a 01"),
      ascii("\rQUIT"),
    ];
    for (const bytes of none)
      assert.deepEqual(decodeProxyHeader(bytes), { kind: "none" }, JSON.stringify([...bytes]));
    // One byte is enough to rule out anything that starts with neither 'P' nor CR.
    assert.deepEqual(decodeProxyHeader(hex("16")), { kind: "none" });
  });

  it("needs more for every truncation of the spec vectors", () => {
    for (const bytes of [
      V2_IPV4,
      V2_IPV6,
      V2_LOCAL,
      ascii("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"),
    ]) {
      assertEveryPrefixNeedsMore(bytes);
      assert.equal(decodeProxyHeader(bytes).kind, "header");
    }
    assertEveryPrefixNeedsMore(PROXY_V2_SIGNATURE);
  });
});

/** The address as the decoder should report it once the encoder has chosen the header's family. */
function expectedPair(src: ProxyEndpoint, dst: ProxyEndpoint): { family: 4 | 6; src: bigint; dst: bigint } {
  const value = (ip: string) => {
    const parsed = parseAddr(ip);
    assert.ok(parsed.ok, ip);
    return parsed.addr;
  };
  const s = value(src.ip);
  const d = value(dst.ip);
  const v4 = (a: { family: 4 | 6; value: bigint }) =>
    a.family === 4 ? a.value : a.value >> 32n === 0xffffn ? a.value & 0xffffffffn : null;
  const s4 = v4(s);
  const d4 = v4(d);
  if (s4 !== null && d4 !== null) return { family: 4, src: s4, dst: d4 };
  const v6 = (a: { family: 4 | 6; value: bigint }) => (a.family === 6 ? a.value : (0xffffn << 32n) | a.value);
  return { family: 6, src: v6(s), dst: v6(d) };
}

const arbIp = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  fc.ipV4().map((ip) => `::ffff:${ip}`),
);
const arbEndpoint = fc.record({ ip: arbIp, port: fc.integer({ min: 0, max: 65535 }) });

describe("decodeProxyHeader properties", () => {
  it("decodes what encodeProxyHeader writes, for both versions and any addresses", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1 as const, 2 as const),
        arbEndpoint,
        arbEndpoint,
        fc.uint8Array({ maxLength: 20 }),
        (version, src, dst, payload) => {
          const header = encodeProxyHeader(version, src, dst);
          if (version === 1) assert.ok(header.length <= PROXY_V1_MAX_LENGTH);
          const result = decodeProxyHeader(concat(header, payload));
          assert.equal(result.kind, "header", JSON.stringify(result));
          if (result.kind !== "header") return;
          assert.equal(result.version, version);
          assert.equal(result.command, "proxy");
          assert.equal(result.consumed, header.length);
          const expected = expectedPair(src, dst);
          for (const [got, want, port] of [
            [result.src, expected.src, src.port],
            [result.dst, expected.dst, dst.port],
          ] as const) {
            assert.ok(got);
            const parsed = parseAddr(got.ip);
            assert.ok(parsed.ok);
            assert.equal(parsed.addr.family, expected.family, got.ip);
            assert.equal(parsed.addr.value, want, got.ip);
            assert.equal(got.port, port);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it("needs more for every truncation of an encoded header", () => {
    fc.assert(
      fc.property(fc.constantFrom(1 as const, 2 as const), arbEndpoint, arbEndpoint, (version, src, dst) => {
        assertEveryPrefixNeedsMore(encodeProxyHeader(version, src, dst));
      }),
      { numRuns: 200 },
    );
  });

  // Random bytes, often behind a real signature so the fuzzing reaches the field checks.
  const arbInput = fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.uint8Array({ maxLength: 80 }).map((tail) => concat(PROXY_V2_SIGNATURE, tail)),
    fc
      .tuple(fc.constantFrom(0x20, 0x21), fc.integer({ min: 0, max: 0x3f }), fc.uint8Array({ maxLength: 80 }))
      .map(([vc, fam, tail]) => concat(PROXY_V2_SIGNATURE, Uint8Array.of(vc, fam, 0, tail.length), tail)),
    fc.string({ maxLength: 120 }).map((s) => ascii(`PROXY ${s}`)),
    fc
      .array(fc.constantFrom("TCP4", "TCP6", "UNKNOWN", "1.2.3.4", "::1", "80", " ", "\r\n", "\r", "x"), {
        maxLength: 12,
      })
      .map((tokens) => ascii(`PROXY ${tokens.join(" ")}`)),
  );

  it("never throws, and a decision never changes when more bytes arrive", () => {
    fc.assert(
      fc.property(arbInput, fc.uint8Array({ minLength: 1, maxLength: 40 }), (bytes, more) => {
        const result = decodeProxyHeader(bytes);
        assert.ok(ALL_KINDS.has(result.kind));
        if (result.kind === "header") {
          assert.ok(result.consumed > 0 && result.consumed <= bytes.length);
          // The header alone decodes the same way as the header plus what followed it.
          assert.deepEqual(decodeProxyHeader(bytes.subarray(0, result.consumed)), result);
        }
        if (result.kind !== "need-more") assert.deepEqual(decodeProxyHeader(concat(bytes, more)), result);
      }),
      { numRuns: 3000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// A real peer: HAProxy both sends PROXY headers (send-proxy / send-proxy-v2 towards a server) and
// parses them (accept-proxy on a bind), so it checks the decoder and the encoder independently.

const haproxyAvailable = spawnSync("haproxy", ["-v"], { stdio: "ignore" }).status === 0;

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const MARKER = "tlsroute-proxy-test\n";

/** Loopback server that hands out, one connection at a time, everything received until the marker. */
class CaptureServer {
  readonly server = net.createServer((socket) => this.onConnection(socket));
  private readonly waiting: ((bytes: Uint8Array) => void)[] = [];
  private readonly ready: Uint8Array[] = [];

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as net.AddressInfo).port;
  }

  next(): Promise<Uint8Array> {
    const bytes = this.ready.shift();
    if (bytes) return Promise.resolve(bytes);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private onConnection(socket: net.Socket): void {
    const chunks: Buffer[] = [];
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      const all = Buffer.concat(chunks);
      if (!all.toString("latin1").endsWith(MARKER)) return;
      socket.end();
      const bytes = new Uint8Array(all);
      const waiter = this.waiting.shift();
      if (waiter) waiter(bytes);
      else this.ready.push(bytes);
    });
  }
}

/** Connect to a HAProxy frontend, send `prefix` and the marker, and return what the backend got. */
async function through(
  capture: CaptureServer,
  port: number,
  prefix: Uint8Array,
): Promise<{ received: Uint8Array; clientPort: number }> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const clientPort = socket.localPort ?? -1;
  socket.on("error", () => {});
  socket.write(concat(prefix, ascii(MARKER)));
  const received = await capture.next();
  socket.destroy();
  return { received, clientPort };
}

function payloadAfter(received: Uint8Array, result: ProxyHeaderDecode): string {
  assert.equal(result.kind, "header", JSON.stringify(result));
  if (result.kind !== "header") return "";
  return String.fromCharCode(...received.subarray(result.consumed));
}

describe("against HAProxy", () => {
  before(() => assert.ok(haproxyAvailable, "haproxy is not installed: .ci/run installs it"));
  const capture = new CaptureServer();
  let haproxy: ChildProcess | undefined;
  let dir = "";
  const ports = { sendV1: 0, sendV2: 0, acceptToV1: 0, acceptToV2: 0 };

  before(async () => {
    const capturePort = await capture.listen();
    ports.sendV1 = await freePort();
    ports.sendV2 = await freePort();
    ports.acceptToV1 = await freePort();
    ports.acceptToV2 = await freePort();
    dir = mkdtempSync(path.join(tmpdir(), "tlsroute-haproxy-"));
    const config = [
      "global",
      "  maxconn 64",
      "defaults",
      "  mode tcp",
      "  timeout connect 2s",
      "  timeout client 5s",
      "  timeout server 5s",
      "backend capture_v1",
      `  server s 127.0.0.1:${capturePort} send-proxy`,
      "backend capture_v2",
      `  server s 127.0.0.1:${capturePort} send-proxy-v2`,
      "frontend send_v1",
      `  bind 127.0.0.1:${ports.sendV1}`,
      "  default_backend capture_v1",
      "frontend send_v2",
      `  bind 127.0.0.1:${ports.sendV2}`,
      "  default_backend capture_v2",
      "frontend accept_to_v1",
      `  bind 127.0.0.1:${ports.acceptToV1} accept-proxy`,
      "  default_backend capture_v1",
      "frontend accept_to_v2",
      `  bind 127.0.0.1:${ports.acceptToV2} accept-proxy`,
      "  default_backend capture_v2",
      "",
    ].join("\n");
    const configFile = path.join(dir, "haproxy.cfg");
    writeFileSync(configFile, config);
    const check = spawnSync("haproxy", ["-c", "-q", "-f", configFile], { encoding: "utf8" });
    assert.equal(check.status, 0, check.stderr);
    haproxy = spawn("haproxy", ["-db", "-f", configFile], { stdio: "ignore" });
    // Ready when every frontend accepts connections.
    for (const port of Object.values(ports)) {
      for (let attempt = 0; ; attempt++) {
        const ok = await new Promise<boolean>((resolve) => {
          const s = net.connect(port, "127.0.0.1", () => {
            s.destroy();
            resolve(true);
          });
          s.on("error", () => resolve(false));
        });
        if (ok) break;
        assert.ok(attempt < 100, `haproxy did not open port ${port}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    // The readiness probes reach the backend too; they carry no marker and are never handed out.
  });

  after(() => {
    haproxy?.kill();
    capture.server.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("decodes HAProxy's v1 header (send-proxy)", async () => {
    const { received, clientPort } = await through(capture, ports.sendV1, new Uint8Array());
    const result = decodeProxyHeader(received);
    assertHeader(result, {
      version: 1,
      command: "proxy",
      src: { ip: "127.0.0.1", port: clientPort },
      dst: { ip: "127.0.0.1", port: ports.sendV1 },
      consumed: result.kind === "header" ? result.consumed : -1,
    });
    assert.equal(payloadAfter(received, result), MARKER);
  });

  it("decodes HAProxy's v2 header (send-proxy-v2)", async () => {
    const { received, clientPort } = await through(capture, ports.sendV2, new Uint8Array());
    const result = decodeProxyHeader(received);
    assertHeader(result, {
      version: 2,
      command: "proxy",
      src: { ip: "127.0.0.1", port: clientPort },
      dst: { ip: "127.0.0.1", port: ports.sendV2 },
      consumed: result.kind === "header" ? result.consumed : -1,
    });
    assert.equal(payloadAfter(received, result), MARKER);
  });

  // Only data: these documentation addresses are written into headers, never connected to.
  const cases: {
    name: string;
    src: ProxyEndpoint;
    dst: ProxyEndpoint;
    want: [ProxyEndpoint, ProxyEndpoint];
  }[] = [
    {
      name: "IPv4",
      src: { ip: "192.0.2.10", port: 40000 },
      dst: { ip: "198.51.100.20", port: 5432 },
      want: [
        { ip: "192.0.2.10", port: 40000 },
        { ip: "198.51.100.20", port: 5432 },
      ],
    },
    {
      name: "IPv6",
      src: { ip: "2001:db8::10", port: 1 },
      dst: { ip: "2001:db8:1::20", port: 65535 },
      want: [
        { ip: "2001:db8::10", port: 1 },
        { ip: "2001:db8:1::20", port: 65535 },
      ],
    },
    {
      name: "mixed families (IPv4-mapped destination)",
      src: { ip: "2001:db8::10", port: 443 },
      dst: { ip: "192.0.2.9", port: 8443 },
      want: [
        { ip: "2001:db8::10", port: 443 },
        { ip: "::ffff:192.0.2.9", port: 8443 },
      ],
    },
  ];

  for (const version of [1, 2] as const) {
    for (const c of cases) {
      it(`HAProxy accepts our v${version} ${c.name} header and passes its addresses on`, async () => {
        for (const [port, outVersion] of [
          [ports.acceptToV1, 1],
          [ports.acceptToV2, 2],
        ] as const) {
          const header = encodeProxyHeader(version, c.src, c.dst);
          const { received } = await through(capture, port, header);
          const result = decodeProxyHeader(received);
          assertHeader(result, {
            version: outVersion,
            command: "proxy",
            src: c.want[0],
            dst: c.want[1],
            consumed: result.kind === "header" ? result.consumed : -1,
          });
          assert.equal(payloadAfter(received, result), MARKER);
        }
      });
    }

    it(`HAProxy treats our v${version} header without addresses as "use the connection's own"`, async () => {
      const header = encodeProxyHeader(version, null, null);
      const { received, clientPort } = await through(capture, ports.acceptToV2, header);
      const result = decodeProxyHeader(received);
      assertHeader(result, {
        version: 2,
        command: "proxy",
        src: { ip: "127.0.0.1", port: clientPort },
        dst: { ip: "127.0.0.1", port: ports.acceptToV2 },
        consumed: result.kind === "header" ? result.consumed : -1,
      });
      assert.equal(payloadAfter(received, result), MARKER);
    });
  }
});
