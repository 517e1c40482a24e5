/**
 * PROXY protocol, versions 1 (text) and 2 (binary), as specified by HAProxy: the header a proxy
 * writes in front of a forwarded TCP stream so the next hop learns the real client's address.
 *
 * Pure functions over bytes. `encodeProxyHeader` serves the backend side (transport
 * `proxyProtocol.version`); `decodeProxyHeader` serves entry points that accept the header from
 * trusted peers. The decoder is incremental in the simplest way: call it again with more bytes
 * while it answers `need-more`. It never throws, whatever the input.
 */
import { formatAddr, parseAddr } from "../rules/ip.ts";

export type ProxyVersion = 1 | 2;

export interface ProxyEndpoint {
  ip: string;
  port: number;
}

export type ProxyHeaderDecode =
  | { kind: "need-more" }
  /** The bytes do not start with a PROXY signature: the connection carries no header. */
  | { kind: "none" }
  | {
      kind: "header";
      version: ProxyVersion;
      /** "local": the sender speaks for itself (v2 LOCAL, v1 UNKNOWN); use the socket's addresses. */
      command: "proxy" | "local";
      /** Present only for TCP over IPv4/IPv6; otherwise the socket's own addresses apply. */
      src?: ProxyEndpoint;
      dst?: ProxyEndpoint;
      /** Header length: the application's bytes start at this offset. */
      consumed: number;
    }
  | { kind: "invalid"; reason: string };

/** `\r\n\r\n\0\r\nQUIT\n`: chosen by the spec so that it cannot start any text protocol. */
export const PROXY_V2_SIGNATURE: Uint8Array = Uint8Array.of(
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
);

/** Longest v1 line the spec allows, CRLF included (`PROXY UNKNOWN` with two full IPv6 addresses). */
export const PROXY_V1_MAX_LENGTH = 107;

const V1_PREFIX = asciiBytes("PROXY ");
const V2_FIXED_LENGTH = 16;
const V2_VERSION = 0x2;
const V2_COMMAND_LOCAL = 0x0;
const V2_COMMAND_PROXY = 0x1;
const V2_AF_UNSPEC = 0x0;
const V2_AF_INET = 0x1;
const V2_AF_INET6 = 0x2;
const V2_AF_UNIX = 0x3;
const V2_TRANSPORT_STREAM = 0x1;
const V2_TRANSPORT_DGRAM = 0x2;
/** Size of the address block for each address family under the PROXY command. */
const V2_ADDRESS_BLOCK: Record<number, number> = {
  [V2_AF_UNSPEC]: 0,
  [V2_AF_INET]: 12,
  [V2_AF_INET6]: 36,
  [V2_AF_UNIX]: 216,
};

const IPV4_MAPPED_PREFIX = 0xffffn << 32n;

const NEED_MORE: ProxyHeaderDecode = { kind: "need-more" };
const NONE: ProxyHeaderDecode = { kind: "none" };

function invalid(reason: string): ProxyHeaderDecode {
  return { kind: "invalid", reason };
}

function asciiBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0x7f;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Encoding

interface ResolvedPair {
  family: 4 | 6;
  src: bigint;
  dst: bigint;
  srcPort: number;
  dstPort: number;
}

function isPort(port: number): boolean {
  return Number.isInteger(port) && port >= 0 && port <= 0xffff;
}

/** An endpoint as (family, value), or null when it cannot be written into a header. */
function resolveEndpoint(endpoint: ProxyEndpoint | null): { family: 4 | 6; value: bigint } | null {
  if (endpoint === null || !isPort(endpoint.port)) return null;
  const parsed = parseAddr(endpoint.ip);
  if (!parsed.ok) return null;
  // A zone (fe80::1%eth0) has no place in the header and means nothing to the next hop: dropped.
  return { family: parsed.addr.family, value: parsed.addr.value };
}

function asIPv4(addr: { family: 4 | 6; value: bigint }): bigint | null {
  if (addr.family === 4) return addr.value;
  if (addr.value >> 32n === 0xffffn) return addr.value & 0xffffffffn;
  return null;
}

function asIPv6(addr: { family: 4 | 6; value: bigint }): bigint {
  return addr.family === 6 ? addr.value : IPV4_MAPPED_PREFIX | addr.value;
}

/**
 * Both ends must share one family in a header: IPv4 when both are IPv4 (IPv4-mapped IPv6 counts,
 * as dual-stack sockets report IPv4 clients that way), IPv6 with mapped addresses otherwise.
 */
function resolvePair(src: ProxyEndpoint | null, dst: ProxyEndpoint | null): ResolvedPair | null {
  const s = resolveEndpoint(src);
  const d = resolveEndpoint(dst);
  if (s === null || d === null || src === null || dst === null) return null;
  const s4 = asIPv4(s);
  const d4 = asIPv4(d);
  if (s4 !== null && d4 !== null) {
    return { family: 4, src: s4, dst: d4, srcPort: src.port, dstPort: dst.port };
  }
  return { family: 6, src: asIPv6(s), dst: asIPv6(d), srcPort: src.port, dstPort: dst.port };
}

function writeAddress(out: Uint8Array, offset: number, value: bigint, byteLength: number): void {
  for (let i = 0; i < byteLength; i++) {
    out[offset + i] = Number((value >> BigInt(8 * (byteLength - 1 - i))) & 0xffn);
  }
}

function encodeV1(pair: ResolvedPair | null): Uint8Array {
  if (pair === null) return asciiBytes("PROXY UNKNOWN\r\n");
  const proto = pair.family === 4 ? "TCP4" : "TCP6";
  const line = `PROXY ${proto} ${formatAddr(pair.family, pair.src)} ${formatAddr(pair.family, pair.dst)} ${pair.srcPort} ${pair.dstPort}\r\n`;
  return asciiBytes(line);
}

function encodeV2(pair: ResolvedPair | null): Uint8Array {
  const addressBytes = pair === null ? 0 : pair.family === 4 ? 4 : 16;
  const blockLength = pair === null ? 0 : 2 * addressBytes + 4;
  const out = new Uint8Array(V2_FIXED_LENGTH + blockLength);
  out.set(PROXY_V2_SIGNATURE, 0);
  if (pair === null) {
    // LOCAL with AF_UNSPEC and no address block: "use the connection's own addresses".
    out[12] = (V2_VERSION << 4) | V2_COMMAND_LOCAL;
    out[13] = 0x00;
    return out;
  }
  const family = pair.family === 4 ? V2_AF_INET : V2_AF_INET6;
  out[12] = (V2_VERSION << 4) | V2_COMMAND_PROXY;
  out[13] = (family << 4) | V2_TRANSPORT_STREAM;
  out[14] = blockLength >> 8;
  out[15] = blockLength & 0xff;
  let offset = V2_FIXED_LENGTH;
  writeAddress(out, offset, pair.src, addressBytes);
  offset += addressBytes;
  writeAddress(out, offset, pair.dst, addressBytes);
  offset += addressBytes;
  out[offset] = pair.srcPort >> 8;
  out[offset + 1] = pair.srcPort & 0xff;
  out[offset + 2] = pair.dstPort >> 8;
  out[offset + 3] = pair.dstPort & 0xff;
  return out;
}

/**
 * The header to write right after connecting to a backend. Missing or unusable addresses (not an
 * IP literal, port outside 0..65535) produce `PROXY UNKNOWN` (v1) or a LOCAL header (v2), which
 * tell the receiver to use the connection's own addresses.
 */
export function encodeProxyHeader(
  version: ProxyVersion,
  src: ProxyEndpoint | null,
  dst: ProxyEndpoint | null,
): Uint8Array {
  const pair = resolvePair(src, dst);
  return version === 1 ? encodeV1(pair) : encodeV2(pair);
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** How `bytes` relates to `signature`: fully present, a (possibly empty) prefix of it, or not it. */
function matchSignature(bytes: Uint8Array, signature: Uint8Array): "match" | "partial" | "mismatch" {
  const n = Math.min(bytes.length, signature.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== signature[i]) return "mismatch";
  return n === signature.length ? "match" : "partial";
}

/**
 * Recognise a PROXY header at the start of `bytes`. Answers `need-more` while the bytes are a
 * prefix of a possibly valid header, `none` as soon as they cannot start one, and `invalid` as
 * soon as they start one that breaks the spec.
 */
export function decodeProxyHeader(bytes: Uint8Array): ProxyHeaderDecode {
  if (bytes.length === 0) return NEED_MORE;
  if (bytes[0] === PROXY_V2_SIGNATURE[0]) return decodeV2(bytes);
  if (bytes[0] === V1_PREFIX[0]) return decodeV1(bytes);
  return NONE;
}

function decodeV1(bytes: Uint8Array): ProxyHeaderDecode {
  const signature = matchSignature(bytes, V1_PREFIX);
  if (signature === "mismatch") return NONE;
  if (signature === "partial") return NEED_MORE;
  // The CR may sit at most at index 105 so that CRLF ends within 107 bytes.
  const lastCr = PROXY_V1_MAX_LENGTH - 2;
  let cr = -1;
  const scanEnd = Math.min(bytes.length, lastCr + 1);
  for (let i = V1_PREFIX.length; i < scanEnd; i++) {
    const b = bytes[i]!;
    if (b === 0x0d) {
      cr = i;
      break;
    }
    if (b < 0x20 || b > 0x7e) return invalid("the v1 header contains a byte that is not printable ASCII");
  }
  if (cr < 0) {
    return bytes.length > lastCr
      ? invalid(`the v1 header has no CRLF within ${PROXY_V1_MAX_LENGTH} bytes`)
      : NEED_MORE;
  }
  if (cr + 1 >= bytes.length) return NEED_MORE;
  if (bytes[cr + 1] !== 0x0a) return invalid("the v1 header has a CR that is not followed by LF");
  const consumed = cr + 2;
  let line = "";
  for (let i = 0; i < cr; i++) line += String.fromCharCode(bytes[i]!);
  const fields = line.split(" ");
  const proto = fields[1];
  // UNKNOWN: whatever follows is to be ignored, and the socket's own addresses apply.
  if (proto === "UNKNOWN") return { kind: "header", version: 1, command: "local", consumed };
  if (proto !== "TCP4" && proto !== "TCP6") {
    return invalid(`unknown v1 protocol ${JSON.stringify(proto ?? "")} (expected TCP4, TCP6 or UNKNOWN)`);
  }
  if (fields.length !== 6) {
    return invalid(`a v1 ${proto} header needs 4 fields after the protocol, separated by single spaces`);
  }
  const family = proto === "TCP4" ? 4 : 6;
  const src = parseV1Endpoint(fields[2]!, fields[4]!, family, "source");
  if (typeof src === "string") return invalid(src);
  const dst = parseV1Endpoint(fields[3]!, fields[5]!, family, "destination");
  if (typeof dst === "string") return invalid(dst);
  return { kind: "header", version: 1, command: "proxy", src, dst, consumed };
}

/** The endpoint, or a reason why the text is not one. */
function parseV1Endpoint(
  ipText: string,
  portText: string,
  family: 4 | 6,
  role: string,
): ProxyEndpoint | string {
  const parsed = parseAddr(ipText);
  if (!parsed.ok) return `the v1 ${role} address ${JSON.stringify(ipText)} is invalid: ${parsed.reason}`;
  if (parsed.addr.family !== family || parsed.addr.zone !== "") {
    return `the v1 ${role} address ${JSON.stringify(ipText)} is not a plain IPv${family} address`;
  }
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 0xffff) {
    return `the v1 ${role} port ${JSON.stringify(portText)} is not a number in 0..65535`;
  }
  return { ip: formatAddr(family, parsed.addr.value), port: Number(portText) };
}

function readAddress(bytes: Uint8Array, offset: number, byteLength: number): bigint {
  let value = 0n;
  for (let i = 0; i < byteLength; i++) value = (value << 8n) | BigInt(bytes[offset + i]!);
  return value;
}

function readUint16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! << 8) | bytes[offset + 1]!;
}

function decodeV2(bytes: Uint8Array): ProxyHeaderDecode {
  const signature = matchSignature(bytes, PROXY_V2_SIGNATURE);
  if (signature === "mismatch") return NONE;
  if (signature === "partial") return NEED_MORE;
  // Each field is checked as soon as it arrives, so garbage is refused without waiting for more.
  if (bytes.length < 13) return NEED_MORE;
  const versionCommand = bytes[12]!;
  if (versionCommand >> 4 !== V2_VERSION)
    return invalid(`unsupported v2 version nibble ${versionCommand >> 4}`);
  const command = versionCommand & 0x0f;
  if (command !== V2_COMMAND_LOCAL && command !== V2_COMMAND_PROXY) {
    return invalid(`unknown v2 command ${command}`);
  }
  if (bytes.length < 14) return NEED_MORE;
  const familyTransport = bytes[13]!;
  const family = familyTransport >> 4;
  const transport = familyTransport & 0x0f;
  if (family > V2_AF_UNIX || transport > V2_TRANSPORT_DGRAM) {
    return invalid(`unknown v2 address family/transport 0x${familyTransport.toString(16).padStart(2, "0")}`);
  }
  if (bytes.length < V2_FIXED_LENGTH) return NEED_MORE;
  const blockLength = readUint16(bytes, 14);
  const addressLength = V2_ADDRESS_BLOCK[family] ?? 0;
  if (command === V2_COMMAND_PROXY && blockLength < addressLength) {
    return invalid(`the v2 address block is ${blockLength} bytes, family ${family} needs ${addressLength}`);
  }
  const consumed = V2_FIXED_LENGTH + blockLength;
  if (bytes.length < consumed) return NEED_MORE;
  // LOCAL: the block is to be discarded unread. UNSPEC: no addresses, the block is opaque.
  if (command === V2_COMMAND_LOCAL) return { kind: "header", version: 2, command: "local", consumed };
  if (family === V2_AF_UNSPEC) return { kind: "header", version: 2, command: "proxy", consumed };
  const tlvProblem = checkTlvs(bytes, V2_FIXED_LENGTH + addressLength, consumed);
  if (tlvProblem !== null) return invalid(tlvProblem);
  // Only TCP addresses describe the client of a TCP stream; for UNIX or UDP the socket's own apply.
  if (transport !== V2_TRANSPORT_STREAM || (family !== V2_AF_INET && family !== V2_AF_INET6)) {
    return { kind: "header", version: 2, command: "proxy", consumed };
  }
  const width = family === V2_AF_INET ? 4 : 16;
  const ipFamily = family === V2_AF_INET ? 4 : 6;
  const base = V2_FIXED_LENGTH;
  const src = {
    ip: formatAddr(ipFamily, readAddress(bytes, base, width)),
    port: readUint16(bytes, base + 2 * width),
  };
  const dst = {
    ip: formatAddr(ipFamily, readAddress(bytes, base + width, width)),
    port: readUint16(bytes, base + 2 * width + 2),
  };
  return { kind: "header", version: 2, command: "proxy", src, dst, consumed };
}

/** TLVs (type, 16-bit length, value) must tile the rest of the block exactly; null when they do. */
function checkTlvs(bytes: Uint8Array, start: number, end: number): string | null {
  let offset = start;
  while (offset < end) {
    if (end - offset < 3) return "the v2 header ends inside a TLV header";
    const length = readUint16(bytes, offset + 1);
    offset += 3 + length;
    if (offset > end) return "a v2 TLV runs past the end of the header";
  }
  return null;
}
