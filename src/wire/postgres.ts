/**
 * The few PostgreSQL wire messages a router has to understand before (or instead of) handing a
 * connection over: the client's first message (SSLRequest, GSSENCRequest, CancelRequest or
 * StartupMessage), the ErrorResponse it may answer with, and the BackendKeyData a backend sends
 * during startup (the cancel key of the session, needed to route later CancelRequests).
 *
 * Pure functions over bytes. Parsers never throw and never trust a length field: every read is
 * bounds checked and every length is held to the limits PostgreSQL itself applies.
 */

/** Request codes sit where a StartupMessage has its protocol version (major 1234 is reserved). */
export const CANCEL_REQUEST_CODE = 80877102;
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
/** Protocol 3.0 (every server since 7.4) and 3.2 (PostgreSQL 18: longer cancel keys). */
export const PROTOCOL_3_0 = 196608;
export const PROTOCOL_3_2 = 196610;

/** The server refuses longer startup packets (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_LENGTH = 10000;
/** Cancel keys: 4 bytes in protocol 3.0; 4 to 256 bytes from protocol 3.2 on. */
export const MIN_CANCEL_KEY_LENGTH = 4;
export const MAX_CANCEL_KEY_LENGTH = 256;

/** int32 length 8, int32 80877103. */
export const SSL_REQUEST: Uint8Array = Uint8Array.of(0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f);
/** int32 length 8, int32 80877104. */
export const GSSENC_REQUEST: Uint8Array = Uint8Array.of(0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x30);
/** One-byte answers to SSLRequest / GSSENCRequest. */
export const NEGOTIATION_ACCEPT = 0x53; // 'S'
export const NEGOTIATION_REFUSE = 0x4e; // 'N'

export type PostgresStart =
  | { kind: "need-more" }
  | { kind: "not-postgres" }
  | { kind: "ssl-request" }
  | { kind: "gssenc-request" }
  | { kind: "cancel-request"; processId: number; secretKey: Uint8Array; consumed: number }
  | { kind: "startup"; protocolVersion: number; params: Record<string, string>; consumed: number }
  | { kind: "invalid"; reason: string };

export interface BackendKeyData {
  processId: number;
  secretKey: Uint8Array;
}

const NEED_MORE: PostgresStart = { kind: "need-more" };
const NOT_POSTGRES: PostgresStart = { kind: "not-postgres" };
const REQUEST_MAJOR = 1234;
const SSL_MINOR = 5679;
const GSSENC_MINOR = 5680;
const CANCEL_MINOR = 5678;
/** Majors that can open a Postgres connection: requests, protocol 3, and the obsolete protocol 2. */
const KNOWN_MAJORS = [REQUEST_MAJOR, 3, 2];
/** Smallest first message: the 8-byte SSLRequest/GSSENCRequest. */
const MIN_FIRST_MESSAGE = 8;
/** length + code + pid */
const CANCEL_FIXED_LENGTH = 12;

function invalid(reason: string): PostgresStart {
  return { kind: "invalid", reason };
}

function readUint32(bytes: Uint8Array, offset: number): number {
  return (
    ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>>
    0
  );
}

function writeUint32(out: Uint8Array, offset: number, value: number): void {
  const v = value >>> 0;
  out[offset] = v >>> 24;
  out[offset + 1] = (v >>> 16) & 0xff;
  out[offset + 2] = (v >>> 8) & 0xff;
  out[offset + 3] = v & 0xff;
}

/**
 * Classify the first client message, deciding as early as the bytes allow: a first byte other
 * than 0x00 already rules Postgres out (no plausible length starts with it), while a genuine
 * SSLRequest is only recognised once all 8 bytes are there. Call again with more bytes while the
 * answer is `need-more`; `consumed` tells where the message ends (anything after it is the
 * client's next bytes, e.g. a pipelined ClientHello).
 */
export function classifyPostgresStart(bytes: Uint8Array): PostgresStart {
  if (bytes.length === 0) return NEED_MORE;
  // Length field, one byte at a time: rule out as soon as no completion can be in 8..10000.
  const seen = Math.min(bytes.length, 4);
  let prefix = 0;
  for (let i = 0; i < seen; i++) prefix = prefix * 256 + bytes[i]!;
  const scale = 256 ** (4 - seen);
  if (prefix * scale > MAX_STARTUP_LENGTH || prefix * scale + scale - 1 < MIN_FIRST_MESSAGE)
    return NOT_POSTGRES;
  if (bytes.length < 4) return NEED_MORE;
  const length = prefix;
  // Major version, same idea: its two bytes must begin one of the known majors.
  const majorSeen = Math.min(bytes.length, 6) - 4;
  if (majorSeen > 0) {
    const plausible = KNOWN_MAJORS.some(
      (major) => major >> 8 === bytes[4] && (majorSeen < 2 || (major & 0xff) === bytes[5]),
    );
    if (!plausible) return NOT_POSTGRES;
  }
  if (bytes.length < 8) return NEED_MORE;
  const major = (bytes[4]! << 8) | bytes[5]!;
  const minor = (bytes[6]! << 8) | bytes[7]!;
  if (major === REQUEST_MAJOR) return classifyRequest(bytes, length, minor);
  if (major === 2) return invalid("protocol 2.0 is not supported (PostgreSQL 14 removed it)");
  return classifyStartup(bytes, length, readUint32(bytes, 4));
}

function classifyRequest(bytes: Uint8Array, length: number, minor: number): PostgresStart {
  if (minor === SSL_MINOR || minor === GSSENC_MINOR) {
    const name = minor === SSL_MINOR ? "SSLRequest" : "GSSENCRequest";
    if (length !== 8) return invalid(`${name} with length ${length} (must be 8)`);
    return minor === SSL_MINOR ? { kind: "ssl-request" } : { kind: "gssenc-request" };
  }
  if (minor === CANCEL_MINOR) {
    const keyLength = length - CANCEL_FIXED_LENGTH;
    if (keyLength < MIN_CANCEL_KEY_LENGTH || keyLength > MAX_CANCEL_KEY_LENGTH) {
      return invalid(
        `CancelRequest with length ${length} (the key must be ${MIN_CANCEL_KEY_LENGTH} to ${MAX_CANCEL_KEY_LENGTH} bytes)`,
      );
    }
    if (bytes.length < length) return NEED_MORE;
    return {
      kind: "cancel-request",
      processId: readUint32(bytes, 8),
      secretKey: bytes.slice(CANCEL_FIXED_LENGTH, length),
      consumed: length,
    };
  }
  return invalid(`unknown request code ${REQUEST_MAJOR * 65536 + minor}`);
}

function classifyStartup(bytes: Uint8Array, length: number, protocolVersion: number): PostgresStart {
  // Version, then at least the list terminator.
  if (length < 9) return invalid(`StartupMessage with length ${length} (must be at least 9)`);
  if (bytes.length < length) return NEED_MORE;
  const terminator = length - 1;
  if (bytes[terminator] !== 0) return invalid("the StartupMessage does not end with a zero byte");
  const decoder = new TextDecoder("utf-8");
  const params = new Map<string, string>();
  let offset = 8;
  // Pairs of zero-terminated strings; the zero at `terminator` closes the list, never a string.
  while (offset < terminator) {
    const nameEnd = bytes.indexOf(0, offset);
    if (nameEnd === offset) return invalid("the StartupMessage has an empty parameter name");
    if (nameEnd >= terminator) return invalid("a StartupMessage parameter has a name but no value");
    const valueEnd = bytes.indexOf(0, nameEnd + 1);
    if (valueEnd >= terminator) return invalid("a StartupMessage parameter value is not terminated");
    // Later duplicates win, as they do in the server.
    params.set(
      decoder.decode(bytes.subarray(offset, nameEnd)),
      decoder.decode(bytes.subarray(nameEnd + 1, valueEnd)),
    );
    offset = valueEnd + 1;
  }
  // fromEntries defines own properties, so a parameter named "__proto__" is just a parameter.
  return { kind: "startup", protocolVersion, params: Object.fromEntries(params), consumed: length };
}

/** CancelRequest: length, 80877102, process id, secret key (4 bytes in 3.0, up to 256 in 3.2). */
export function encodeCancelRequest(processId: number, secretKey: Uint8Array): Uint8Array {
  const out = new Uint8Array(CANCEL_FIXED_LENGTH + secretKey.length);
  writeUint32(out, 0, out.length);
  writeUint32(out, 4, CANCEL_REQUEST_CODE);
  writeUint32(out, 8, processId);
  out.set(secretKey, CANCEL_FIXED_LENGTH);
  return out;
}

export type ErrorSeverity = "ERROR" | "FATAL" | "PANIC";

export interface ErrorResponseFields {
  severity: ErrorSeverity;
  /** SQLSTATE, five characters, e.g. "08P01" (protocol_violation). */
  code: string;
  message: string;
  hint?: string;
}

/**
 * ErrorResponse ('E'): severity (localised S and non-localised V), SQLSTATE, message and optional
 * hint, each a zero-terminated string, the list closed by a zero byte. NUL characters inside the
 * texts would cut a field short, so they are removed.
 */
export function encodeErrorResponse(fields: ErrorResponseFields): Uint8Array {
  const encoder = new TextEncoder();
  const entries: [string, string][] = [
    ["S", fields.severity],
    ["V", fields.severity],
    ["C", fields.code],
    ["M", fields.message],
  ];
  if (fields.hint !== undefined) entries.push(["H", fields.hint]);
  const parts = entries.map(([tag, text]) => ({
    tag: tag.charCodeAt(0),
    text: encoder.encode(text.replaceAll("\0", "")),
  }));
  const bodyLength = parts.reduce((sum, part) => sum + 1 + part.text.length + 1, 0) + 1;
  const out = new Uint8Array(1 + 4 + bodyLength);
  out[0] = 0x45; // 'E'
  writeUint32(out, 1, 4 + bodyLength);
  let offset = 5;
  for (const part of parts) {
    out[offset++] = part.tag;
    out.set(part.text, offset);
    offset += part.text.length;
    out[offset++] = 0;
  }
  out[offset] = 0;
  return out;
}

const TYPE_BACKEND_KEY_DATA = 0x4b; // 'K'
const TYPE_READY_FOR_QUERY = 0x5a; // 'Z'
const TYPE_ERROR_RESPONSE = 0x45; // 'E'
const HEADER_LENGTH = 5;

export interface BackendScan {
  keyData?: BackendKeyData;
  /** Nothing more to learn from this stream: stop feeding the scanner. */
  done: boolean;
}

/**
 * Watches a backend's plaintext stream (server → client) from its first byte and picks up the
 * BackendKeyData. It walks the message framing (type byte, int32 length including itself) across
 * arbitrary chunk boundaries, skipping bodies without copying them; only a message header, or the
 * body of the 'K' message (at most 264 bytes), is ever held.
 *
 * It is done when the key is found, at ReadyForQuery (startup over without a key), at an
 * ErrorResponse (during startup always fatal), or when the framing is broken.
 */
export class BackendMessageScanner {
  private readonly header = new Uint8Array(HEADER_LENGTH);
  private headerFill = 0;
  private skipRemaining = 0;
  private keyBody: Uint8Array | null = null;
  private keyFill = 0;
  private finished = false;
  private found: BackendKeyData | undefined;

  push(chunk: Uint8Array): BackendScan {
    let i = 0;
    while (!this.finished && i < chunk.length) {
      if (this.skipRemaining > 0) {
        const n = Math.min(this.skipRemaining, chunk.length - i);
        this.skipRemaining -= n;
        i += n;
      } else if (this.keyBody !== null) {
        const n = Math.min(this.keyBody.length - this.keyFill, chunk.length - i);
        this.keyBody.set(chunk.subarray(i, i + n), this.keyFill);
        this.keyFill += n;
        i += n;
        if (this.keyFill === this.keyBody.length) this.finishKey(this.keyBody);
      } else {
        const n = Math.min(HEADER_LENGTH - this.headerFill, chunk.length - i);
        this.header.set(chunk.subarray(i, i + n), this.headerFill);
        this.headerFill += n;
        i += n;
        if (this.headerFill === HEADER_LENGTH) this.startMessage();
      }
    }
    return this.result();
  }

  private result(): BackendScan {
    return this.found === undefined ? { done: this.finished } : { keyData: this.found, done: this.finished };
  }

  private startMessage(): void {
    this.headerFill = 0;
    const type = this.header[0]!;
    const length = readUint32(this.header, 1);
    if (length < 4) {
      this.finished = true; // broken framing: nothing after this can be trusted
      return;
    }
    const bodyLength = length - 4;
    if (type === TYPE_READY_FOR_QUERY || type === TYPE_ERROR_RESPONSE) {
      this.finished = true;
    } else if (type === TYPE_BACKEND_KEY_DATA) {
      const keyLength = bodyLength - 4;
      if (keyLength < MIN_CANCEL_KEY_LENGTH || keyLength > MAX_CANCEL_KEY_LENGTH) {
        this.finished = true;
        return;
      }
      this.keyBody = new Uint8Array(bodyLength);
      this.keyFill = 0;
    } else {
      this.skipRemaining = bodyLength;
    }
  }

  private finishKey(body: Uint8Array): void {
    this.found = { processId: readUint32(body, 0), secretKey: body.slice(4) };
    this.keyBody = null;
    this.finished = true;
  }
}

/** BackendKeyData from one buffer holding the start of a backend stream, if it is in there. */
export function parseBackendKeyData(bytes: Uint8Array): BackendKeyData | undefined {
  return new BackendMessageScanner().push(bytes).keyData;
}
