/**
 * Test helpers for ClientHello bytes: a small builder for crafted hellos, re-framing of real hellos into
 * other record splits, fixture loading and a loopback capture server.
 */
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";

export const FIXTURE_DIR = path.join(import.meta.dirname, "..", "..", "fixtures", "clienthello");

// ----- byte assembly -------------------------------------------------------------------------------------

export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function u8(value: number): Uint8Array {
  return Uint8Array.of(value & 0xff);
}

export function u16(value: number): Uint8Array {
  return Uint8Array.of((value >> 8) & 0xff, value & 0xff);
}

export function u24(value: number): Uint8Array {
  return Uint8Array.of((value >> 16) & 0xff, (value >> 8) & 0xff, value & 0xff);
}

/** A vector with a one-byte length prefix. */
export function vec8(...parts: readonly Uint8Array[]): Uint8Array {
  const body = concat(...parts);
  return concat(u8(body.length), body);
}

/** A vector with a two-byte length prefix. */
export function vec16(...parts: readonly Uint8Array[]): Uint8Array {
  const body = concat(...parts);
  return concat(u16(body.length), body);
}

export function ascii(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

export function u16List(values: readonly number[]): Uint8Array {
  return concat(...values.map(u16));
}

export function hexToBytes(hex: string): Uint8Array {
  const clean = hex.replace(/\s+/g, "");
  if (clean.length % 2 !== 0 || /[^0-9a-f]/i.test(clean)) throw new Error("not a hex string");
  return Uint8Array.from(Buffer.from(clean, "hex"));
}

/** Hex text, 64 characters a line, as stored in fixtures. */
export function bytesToHex(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes).toString("hex");
  return `${hex.match(/.{1,64}/g)?.join("\n") ?? ""}\n`;
}

export function loadFixture(name: string): Uint8Array {
  return hexToBytes(readFileSync(path.join(FIXTURE_DIR, `${name}.hex`), "utf8"));
}

// ----- crafted hellos ------------------------------------------------------------------------------------

export interface Extension {
  type: number;
  data: Uint8Array;
}

export interface HelloSpec {
  legacyVersion?: number;
  sessionId?: Uint8Array;
  cipherSuites?: readonly number[];
  compressionMethods?: readonly number[];
  /** null: no extensions block at all (SSL 3.0 / TLS 1.0 style). */
  extensions?: readonly Extension[] | null;
  /** Raw bytes appended to the ClientHello body after the extensions block. */
  trailing?: Uint8Array;
}

export function ext(type: number, data: Uint8Array = new Uint8Array()): Extension {
  return { type, data };
}

/** server_name with host_name entries (strings) or raw (type, bytes) entries. */
export function sniExt(
  ...names: ReadonlyArray<string | Uint8Array | { type: number; name: Uint8Array }>
): Extension {
  const entries = names.map((n) => {
    if (typeof n === "string") return concat(u8(0), vec16(ascii(n)));
    if (n instanceof Uint8Array) return concat(u8(0), vec16(n));
    return concat(u8(n.type), vec16(n.name));
  });
  return ext(0, vec16(...entries));
}

export function alpnExt(...protocols: ReadonlyArray<string | Uint8Array>): Extension {
  return ext(16, vec16(...protocols.map((p) => vec8(typeof p === "string" ? ascii(p) : p))));
}

export function supportedVersionsExt(...versions: number[]): Extension {
  return ext(43, vec8(u16List(versions)));
}

export function groupsExt(...groups: number[]): Extension {
  return ext(10, vec16(u16List(groups)));
}

export function keyShareExt(...shares: ReadonlyArray<{ group: number; keyLength: number }>): Extension {
  return ext(
    51,
    vec16(...shares.map((s) => concat(u16(s.group), vec16(new Uint8Array(s.keyLength).fill(0x42))))),
  );
}

/** A typical modern extension set, for tests that only vary one thing. */
export function modernExtensions(
  sni = "example.com",
  alpn: readonly string[] = ["h2", "http/1.1"],
): Extension[] {
  return [
    sniExt(sni),
    alpnExt(...alpn),
    groupsExt(29, 23),
    ext(13, vec16(u16List([0x0403, 0x0804]))),
    supportedVersionsExt(0x0304, 0x0303),
    keyShareExt({ group: 29, keyLength: 32 }),
  ];
}

/** The ClientHello handshake message (type, uint24 length, body). */
export function clientHelloMessage(spec: HelloSpec = {}): Uint8Array {
  const parts: Uint8Array[] = [
    u16(spec.legacyVersion ?? 0x0303),
    new Uint8Array(32).fill(0x11),
    vec8(spec.sessionId ?? new Uint8Array(32).fill(0x22)),
    vec16(u16List(spec.cipherSuites ?? [0x1301, 0x1302, 0xc02f])),
    vec8(Uint8Array.from(spec.compressionMethods ?? [0])),
  ];
  const extensions = spec.extensions === undefined ? modernExtensions() : spec.extensions;
  if (extensions !== null) {
    parts.push(vec16(...extensions.map((e) => concat(u16(e.type), vec16(e.data)))));
  }
  if (spec.trailing) parts.push(spec.trailing);
  const body = concat(...parts);
  return concat(u8(1), u24(body.length), body);
}

/** One TLS record: type, version, length, payload (length may be overridden to lie). */
export function record(
  payload: Uint8Array,
  options: { type?: number; version?: number; length?: number } = {},
) {
  return concat(
    u8(options.type ?? 22),
    u16(options.version ?? 0x0301),
    u16(options.length ?? payload.length),
    payload,
  );
}

/**
 * Splits `message` into handshake records. `sizes` is a fixed fragment size or a list of fragment sizes
 * (the last one repeats).
 */
export function frame(
  message: Uint8Array,
  sizes: number | readonly number[] = 16384,
  version = 0x0301,
): Uint8Array {
  const list = typeof sizes === "number" ? [sizes] : sizes;
  const records: Uint8Array[] = [];
  let at = 0;
  let i = 0;
  while (at < message.length) {
    const size = Math.max(1, list[Math.min(i, list.length - 1)] ?? 16384);
    records.push(record(message.subarray(at, at + size), { version }));
    at += size;
    i += 1;
  }
  return concat(...records);
}

/** A complete single-record hello from a spec. */
export function hello(spec: HelloSpec = {}): Uint8Array {
  return frame(clientHelloMessage(spec));
}

/** The handshake bytes carried by a run of well-formed handshake records (for re-framing captures). */
export function handshakeBytes(records: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let at = 0;
  while (at + 5 <= records.length) {
    const length = (records[at + 3]! << 8) | records[at + 4]!;
    parts.push(records.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return concat(...parts);
}

/** Record version of the first record, so re-framed hellos keep what the client sent. */
export function recordVersion(records: Uint8Array): number {
  return (records[1]! << 8) | records[2]!;
}

// ----- capture -------------------------------------------------------------------------------------------

/**
 * Listens on 127.0.0.1 (port 0), lets `client(port)` connect, and records what the first connection sends
 * until it has been quiet for `idleMs` (the client then waits for a ServerHello that never comes). The
 * connection is then closed. Independent of the parser under test on purpose.
 */
export async function captureFirstBytes(
  client: (port: number) => { stop(): void } | undefined,
  idleMs = 300,
  timeoutMs = 10_000,
): Promise<Uint8Array> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  let handle: { stop(): void } | undefined;
  try {
    return await new Promise<Uint8Array>((resolve, reject) => {
      const overall = setTimeout(() => reject(new Error("capture timed out")), timeoutMs);
      server.once("connection", (socket) => {
        const chunks: Buffer[] = [];
        let idle: NodeJS.Timeout | undefined;
        const finish = () => {
          clearTimeout(overall);
          socket.destroy();
          resolve(Uint8Array.from(Buffer.concat(chunks)));
        };
        socket.on("data", (chunk: Buffer) => {
          chunks.push(chunk);
          clearTimeout(idle);
          idle = setTimeout(finish, idleMs);
        });
        socket.on("error", () => {});
        socket.on("end", () => {
          clearTimeout(idle);
          finish();
        });
      });
      handle = client(address.port);
    });
  } finally {
    handle?.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
