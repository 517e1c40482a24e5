/**
 * ClientHello reader for routing decisions.
 *
 * Traefik decides TLS routing by running Go's crypto/tls server state machine over the first bytes of a
 * connection until the ClientHello is parsed. This module answers the same question over a byte prefix:
 * "is there a complete, acceptable ClientHello here, and what does it offer?". The acceptance rules are Go's
 * (record layer in conn.go `readRecordOrCCS` / `readHandshake`, message checks in handshake_messages.go
 * `clientHelloMsg.unmarshal`, the ECH extension check in `processECHClientHello`), so a hello that Traefik
 * would refuse is refused here, and one it accepts is accepted. Deliberate differences are marked "Unlike
 * Go" below.
 *
 * The function is pure and incremental in the simplest way: call it again with the longer prefix after
 * each read. It never throws and never reads outside the given buffer.
 */

export type HelloResult =
  | {
      kind: "need-more";
      /** At least this many bytes in total are needed before trying again (best knowledge, never more than
       *  the complete hello would need). */
      atLeast: number;
    }
  | {
      kind: "hello";
      /** server_name host_name as sent ("" when none), decoded as UTF-8; canonicalise later. */
      sni: string;
      /** ALPN protocol names in the client's order, decoded as UTF-8. */
      alpn: string[];
      /** Total bytes of the TLS records that carried the hello: the peeked prefix to replay. */
      consumed: number;
      /** ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3 clients). */
      legacyVersion: number;
      /** supported_versions (43) in the client's order; [] when the extension is absent. */
      supportedVersions: number[];
      /** Number of TLS records the hello was spread over. */
      records: number;
      cipherSuites: number[];
      /** supported_groups (10); [] when absent. */
      groups: number[];
      /** Groups of the key_share (51) entries; [] when absent. */
      keyShareGroups: number[];
      /** Extension types in the order sent (GREASE values included). */
      extensions: number[];
    }
  | { kind: "sslv2" }
  | { kind: "not-tls" }
  | { kind: "invalid"; reason: string };

export const HELLO_LIMITS = Object.freeze({
  /** Go refuses a record whose header announces more than this, before reading its body (maxCiphertext). */
  maxRecordLength: 18432,
  /** Go then refuses any plaintext record body over this (maxPlaintext); we refuse it at the header too. */
  maxPlaintextLength: 16384,
  /** Go refuses a handshake message longer than this (maxHandshake). */
  maxHandshakeLength: 65536,
});

const RECORD_HEADER_LENGTH = 5;
const HANDSHAKE_HEADER_LENGTH = 4;
const RECORD_TYPE_HANDSHAKE = 22;
const RECORD_TYPE_SSLV2 = 0x80;
const HANDSHAKE_TYPE_CLIENT_HELLO = 1;
/** legacy_version (2) + random (32) + the three length prefixes (1 + 2 + 1) with empty contents. */
const MIN_CLIENT_HELLO_BODY = 38;

const RECORD_TYPE_NAMES: Readonly<Record<number, string>> = {
  20: "change_cipher_spec",
  21: "alert",
  22: "handshake",
  23: "application_data",
  24: "heartbeat",
};

const HANDSHAKE_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "hello_request",
  1: "client_hello",
  2: "server_hello",
  4: "new_session_ticket",
  8: "encrypted_extensions",
  11: "certificate",
  12: "server_key_exchange",
  13: "certificate_request",
  14: "server_hello_done",
  15: "certificate_verify",
  16: "client_key_exchange",
  20: "finished",
};

const EXTENSION_NAMES: Readonly<Record<number, string>> = {
  0: "server_name",
  5: "status_request",
  10: "supported_groups",
  11: "ec_point_formats",
  13: "signature_algorithms",
  16: "alpn",
  18: "signed_certificate_timestamp",
  23: "extended_master_secret",
  35: "session_ticket",
  41: "pre_shared_key",
  42: "early_data",
  43: "supported_versions",
  44: "cookie",
  45: "psk_key_exchange_modes",
  50: "signature_algorithms_cert",
  51: "key_share",
  57: "quic_transport_parameters",
  65037: "encrypted_client_hello",
  65281: "renegotiation_info",
};

export function parseClientHello(bytes: Uint8Array): HelloResult {
  if (bytes.length === 0) return { kind: "need-more", atLeast: 1 };
  const first = bytes[0]!;
  // Traefik's own first-byte test, before Go sees anything: 0x80 is taken as an SSLv2-style hello (TLS
  // without SNI), any other byte but 0x16 as plain TCP.
  if (first === RECORD_TYPE_SSLV2) return { kind: "sslv2" };
  if (first !== RECORD_TYPE_HANDSHAKE) return { kind: "not-tls" };
  try {
    const assembled = reassembleHandshake(bytes);
    if (assembled.kind !== "message") return assembled;
    return decodeClientHello(assembled.message, assembled.consumed, assembled.records);
  } catch (error) {
    if (error instanceof Malformed) return { kind: "invalid", reason: error.message };
    // A bug must not take a listener down: report it as a refusal that tests can recognise.
    return { kind: "invalid", reason: `internal parser error: ${String(error)}` };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Record layer: collect the first handshake message from consecutive handshake records.

type Reassembly =
  | { kind: "need-more"; atLeast: number }
  | { kind: "invalid"; reason: string }
  | { kind: "message"; message: Uint8Array; consumed: number; records: number };

/**
 * Walks the records from the start of `bytes`, gathering handshake bytes until the first handshake
 * message is complete. Every check that can be decided on a prefix is decided as soon as its bytes are
 * present (record type and version, record length, handshake type and length), so garbage is refused
 * early and a prefix of an acceptable hello always yields "need-more".
 */
function reassembleHandshake(bytes: Uint8Array): Reassembly {
  const fragments: Uint8Array[] = [];
  let gathered = 0;
  let offset = 0;
  let records = 0;
  for (;;) {
    const available = bytes.length - offset;
    const headerProblem = checkRecordHeader(bytes, offset, records);
    if (headerProblem !== undefined) return { kind: "invalid", reason: headerProblem };
    if (available < RECORD_HEADER_LENGTH) {
      const missing = Math.max(1, handshakeTotal(fragments, gathered) - gathered);
      return { kind: "need-more", atLeast: offset + RECORD_HEADER_LENGTH + missing };
    }

    const length = (bytes[offset + 3]! << 8) | bytes[offset + 4]!;
    const bodyStart = offset + RECORD_HEADER_LENGTH;
    const recordEnd = bodyStart + length;
    const present = Math.min(length, bytes.length - bodyStart);
    const gatheredBefore = gathered;
    fragments.push(bytes.subarray(bodyStart, bodyStart + present));
    gathered += present;

    const messageProblem = checkHandshakeHeader(fragments, gathered);
    if (messageProblem !== undefined) return { kind: "invalid", reason: messageProblem };
    const total = handshakeTotal(fragments, gathered);

    if (present < length) {
      // Go reads a record whole before looking at it, so the rest of this record is needed in any case.
      const stillMissing = total - (gatheredBefore + length);
      return {
        kind: "need-more",
        atLeast: stillMissing > 0 ? recordEnd + RECORD_HEADER_LENGTH + stillMissing : recordEnd,
      };
    }

    records += 1;
    offset = recordEnd;
    if (gathered >= HANDSHAKE_HEADER_LENGTH && gathered >= total) {
      return { kind: "message", message: concatPrefix(fragments, total), consumed: offset, records };
    }
  }
}

/**
 * Checks whatever part of the record header at `offset` is present. Returns a refusal reason or undefined.
 */
function checkRecordHeader(bytes: Uint8Array, offset: number, recordsBefore: number): string | undefined {
  const available = bytes.length - offset;
  if (available < 1) return undefined;
  const type = bytes[offset]!;
  if (type !== RECORD_TYPE_HANDSHAKE) {
    // Unlike Go, which drops up to 16 warning-level alerts while waiting for the hello, any non-handshake
    // record before the hello is complete is refused: Go itself refuses change_cipher_spec, application
    // data and fatal alerts here, and no real client sends a warning alert before its hello.
    return `unexpected ${recordTypeName(type)} record inside the ClientHello (record ${recordsBefore + 1})`;
  }
  if (available < 2) return undefined;
  // Go, until a version is negotiated, treats any record whose version is >= 0x1000 as "not TLS".
  const major = bytes[offset + 1]!;
  if (major >= 0x10) {
    const minor = available >= 3 ? hex2(bytes[offset + 2]!) : "??";
    return `record version 0x${hex2(major)}${minor} is not TLS (must be < 0x1000)`;
  }
  if (available < RECORD_HEADER_LENGTH) return undefined;
  const length = (bytes[offset + 3]! << 8) | bytes[offset + 4]!;
  if (length > HELLO_LIMITS.maxRecordLength) {
    return `record too large (${length} > ${HELLO_LIMITS.maxRecordLength})`;
  }
  // Go reads such a record's body and then fails on it; the outcome cannot change, so refuse now.
  if (length > HELLO_LIMITS.maxPlaintextLength) {
    return `record plaintext too large (${length} > ${HELLO_LIMITS.maxPlaintextLength})`;
  }
  if (length === 0) return `empty handshake record (record ${recordsBefore + 1})`;
  return undefined;
}

/** Checks the handshake message header as far as it has been gathered. */
function checkHandshakeHeader(fragments: readonly Uint8Array[], gathered: number): string | undefined {
  if (gathered < 1) return undefined;
  const type = byteAt(fragments, 0);
  if (type !== HANDSHAKE_TYPE_CLIENT_HELLO) {
    return `first handshake message is ${handshakeTypeName(type)}, not client_hello`;
  }
  if (gathered < HANDSHAKE_HEADER_LENGTH) return undefined;
  const length = messageLength(fragments);
  if (length > HELLO_LIMITS.maxHandshakeLength) {
    return `handshake message too large (${length} > ${HELLO_LIMITS.maxHandshakeLength})`;
  }
  if (length < MIN_CLIENT_HELLO_BODY)
    return `ClientHello too short (${length} < ${MIN_CLIENT_HELLO_BODY} bytes)`;
  return undefined;
}

/** Total handshake bytes of the message: exact once its length is known, else the smallest possible. */
function handshakeTotal(fragments: readonly Uint8Array[], gathered: number): number {
  if (gathered < HANDSHAKE_HEADER_LENGTH) return HANDSHAKE_HEADER_LENGTH + MIN_CLIENT_HELLO_BODY;
  return HANDSHAKE_HEADER_LENGTH + messageLength(fragments);
}

function messageLength(fragments: readonly Uint8Array[]): number {
  return (byteAt(fragments, 1) << 16) | (byteAt(fragments, 2) << 8) | byteAt(fragments, 3);
}

/** Byte `index` of the gathered handshake bytes; callers check `index < gathered` first. */
function byteAt(fragments: readonly Uint8Array[], index: number): number {
  let skip = index;
  for (const fragment of fragments) {
    if (skip < fragment.length) return fragment[skip]!;
    skip -= fragment.length;
  }
  throw new Malformed(`internal: handshake byte ${index} not gathered`);
}

/** The first `length` gathered bytes as one array; no copy when a single record holds them. */
function concatPrefix(fragments: readonly Uint8Array[], length: number): Uint8Array {
  const only = fragments[0];
  if (only !== undefined && only.length >= length) return only.subarray(0, length);
  const out = new Uint8Array(length);
  let filled = 0;
  for (const fragment of fragments) {
    if (filled >= length) break;
    const part = fragment.subarray(0, length - filled);
    out.set(part, filled);
    filled += part.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// ClientHello body (RFC 8446 §4.1.2, with Go's acceptance rules for each extension it understands).

interface Collected {
  sni: string;
  sniSeen: boolean;
  alpn: string[];
  supportedVersions: number[];
  groups: number[];
  keyShareGroups: number[];
  echPayload: Reader | undefined;
}

function decodeClientHello(message: Uint8Array, consumed: number, records: number): HelloResult {
  const body = new Reader(message, HANDSHAKE_HEADER_LENGTH, message.length);
  const legacyVersion = body.u16("legacy_version");
  body.skip(32, "random");
  body.vector8("legacy_session_id");
  const suites = body.vector16("cipher_suites");
  const cipherSuites = readU16List(suites, "cipher_suites");
  body.vector8("legacy_compression_methods");

  const collected: Collected = {
    sni: "",
    sniSeen: false,
    alpn: [],
    supportedVersions: [],
    groups: [],
    keyShareGroups: [],
    echPayload: undefined,
  };
  const extensions: number[] = [];
  // An SSL 3.0 / TLS 1.0 style hello may stop right after the compression methods.
  if (body.remaining > 0) {
    const block = body.vector16("extensions");
    if (body.remaining > 0) throw new Malformed(`${body.remaining} trailing bytes after the extensions`);
    const seen = new Set<number>();
    while (block.remaining > 0) {
      const type = block.u16("extension type");
      const data = block.vector16(`extension ${extensionLabel(type)}`);
      if (seen.has(type)) throw new Malformed(`duplicate extension ${extensionLabel(type)}`);
      seen.add(type);
      extensions.push(type);
      const known = readExtension(type, data, collected, block.remaining === 0);
      if (known && data.remaining > 0) {
        throw new Malformed(`${data.remaining} trailing bytes in extension ${extensionLabel(type)}`);
      }
    }
  }
  if (collected.echPayload !== undefined) checkEncryptedClientHello(collected.echPayload);

  return {
    kind: "hello",
    sni: collected.sni,
    alpn: collected.alpn,
    consumed,
    legacyVersion,
    supportedVersions: collected.supportedVersions,
    records,
    cipherSuites,
    groups: collected.groups,
    keyShareGroups: collected.keyShareGroups,
    extensions,
  };
}

/**
 * Applies Go's checks to one extension. Returns true for the extensions Go parses (whose data must then be
 * used up exactly), false for the ones it ignores.
 */
function readExtension(type: number, data: Reader, into: Collected, isLast: boolean): boolean {
  switch (type) {
    case 0:
      readServerName(data, into);
      return true;
    case 5: // status_request: type, responder_id_list, request_extensions
      data.u8("status_request type");
      data.vector16("status_request responder_id_list");
      data.vector16("status_request request_extensions");
      return true;
    case 10:
      into.groups = readU16List(
        nonEmpty(data.vector16("supported_groups list"), "supported_groups list"),
        "supported_groups list",
      );
      return true;
    case 11:
      nonEmpty(data.vector8("ec_point_formats list"), "ec_point_formats list");
      return true;
    case 13:
    case 50: {
      const label = `${EXTENSION_NAMES[type]} list`;
      readU16List(nonEmpty(data.vector16(label), label), label);
      return true;
    }
    case 16:
      readAlpn(data, into);
      return true;
    case 18: // signed_certificate_timestamp, extended_master_secret, early_data: empty in a ClientHello
    case 23:
    case 42:
      return true;
    case 35: // session_ticket, quic_transport_parameters: opaque
    case 57:
      data.skip(data.remaining, EXTENSION_NAMES[type] ?? "");
      return true;
    case 41:
      if (!isLast) throw new Malformed("pre_shared_key is not the last extension");
      readPreSharedKey(data);
      return true;
    case 43:
      into.supportedVersions = readU16List(
        nonEmpty(data.vector8("supported_versions list"), "supported_versions list"),
        "supported_versions list",
      );
      return true;
    case 44:
      nonEmpty(data.vector16("cookie"), "cookie");
      return true;
    case 45:
      data.vector8("psk_key_exchange_modes list");
      return true;
    case 51:
      readKeyShare(data, into);
      return true;
    case 0xfe0d:
      // Go keeps the raw bytes and, when non-empty, parses them before any config hook runs.
      if (data.remaining > 0) into.echPayload = data.sub(data.remaining, "encrypted_client_hello");
      return true;
    case 0xff01:
      data.vector8("renegotiation_info");
      return true;
    default:
      return false;
  }
}

/** RFC 6066 §3 as Go applies it: at most one host_name, no empty names, no trailing dot. */
function readServerName(data: Reader, into: Collected): void {
  const list = nonEmpty(data.vector16("server_name list"), "server_name list");
  while (list.remaining > 0) {
    const nameType = list.u8("server_name name_type");
    const name = list.vector16("server_name entry");
    if (name.remaining === 0)
      throw new Malformed(nameType === 0 ? "empty SNI host_name" : "empty server_name entry");
    // Go skips names of other types (none are defined) but still requires them to be well formed.
    if (nameType !== 0) continue;
    if (into.sniSeen) throw new Malformed("multiple SNI host_name entries");
    into.sniSeen = true;
    const raw = name.take(name.remaining, "SNI host_name");
    if (raw[raw.length - 1] === 0x2e) throw new Malformed("SNI ends with a dot");
    // Unlike Go, which accepts any bytes here: a control byte cannot be part of a name a rule could match,
    // and letting it reach logs or backends is worse than refusing the connection.
    const control = raw.findIndex((b) => b < 0x20 || b === 0x7f);
    if (control >= 0) {
      throw new Malformed(`SNI contains control byte 0x${hex2(raw[control]!)} at offset ${control}`);
    }
    into.sni = utf8.decode(raw);
  }
}

/** RFC 7301 §3.1: a non-empty list of non-empty protocol names. */
function readAlpn(data: Reader, into: Collected): void {
  const list = data.vector16("ALPN list");
  if (list.remaining === 0) throw new Malformed("empty ALPN list");
  const protocols: string[] = [];
  while (list.remaining > 0) {
    const protocol = list.vector8("ALPN protocol");
    if (protocol.remaining === 0) throw new Malformed("empty ALPN protocol");
    protocols.push(utf8.decode(protocol.take(protocol.remaining, "ALPN protocol")));
  }
  into.alpn = protocols;
}

/** RFC 8446 §4.2.8: entries of (group, non-empty key_exchange); an empty list is allowed (HRR flow). */
function readKeyShare(data: Reader, into: Collected): void {
  const shares = data.vector16("key_share list");
  const groups: number[] = [];
  while (shares.remaining > 0) {
    const group = shares.u16("key_share group");
    const key = shares.vector16("key_share key_exchange");
    if (key.remaining === 0) throw new Malformed(`empty key_share key_exchange for group ${group}`);
    groups.push(group);
  }
  into.keyShareGroups = groups;
}

/** RFC 8446 §4.2.11: non-empty identities (non-empty label + age), non-empty binders (each non-empty). */
function readPreSharedKey(data: Reader): void {
  const identities = nonEmpty(data.vector16("pre_shared_key identities"), "pre_shared_key identities");
  while (identities.remaining > 0) {
    const label = identities.vector16("pre_shared_key identity");
    if (label.remaining === 0) throw new Malformed("empty pre_shared_key identity");
    identities.skip(4, "pre_shared_key obfuscated_ticket_age");
  }
  const binders = nonEmpty(data.vector16("pre_shared_key binders"), "pre_shared_key binders");
  while (binders.remaining > 0) {
    const binder = binders.vector8("pre_shared_key binder");
    if (binder.remaining === 0) throw new Malformed("empty pre_shared_key binder");
  }
}

/**
 * Go (1.24+) parses a non-empty encrypted_client_hello extension before the config hook Traefik uses, even
 * with no ECH keys configured: type 1 (inner) must carry nothing else, type 0 (outer) needs cipher suite,
 * config id, enc and payload (trailing bytes tolerated), any other type is refused.
 */
function checkEncryptedClientHello(ech: Reader): void {
  const type = ech.u8("encrypted_client_hello type");
  if (type === 1) {
    if (ech.remaining > 0) throw new Malformed("malformed encrypted_client_hello (inner type with data)");
    return;
  }
  if (type !== 0) throw new Malformed(`invalid encrypted_client_hello type ${type}`);
  ech.skip(5, "encrypted_client_hello cipher suite and config id");
  ech.vector16("encrypted_client_hello enc");
  ech.vector16("encrypted_client_hello payload");
}

function readU16List(list: Reader, what: string): number[] {
  if (list.remaining % 2 !== 0) throw new Malformed(`${what} length ${list.remaining} is odd`);
  const values: number[] = [];
  while (list.remaining > 0) values.push(list.u16(what));
  return values;
}

function nonEmpty(list: Reader, what: string): Reader {
  if (list.remaining === 0) throw new Malformed(`empty ${what}`);
  return list;
}

// ---------------------------------------------------------------------------------------------------------
// Bounds-checked reading.

/** Refusal raised inside the decoder; its message is the reason reported to the caller. */
class Malformed extends Error {}

/** A cursor over `bytes[start, end)`; every read checks it stays inside. */
class Reader {
  private position: number;

  constructor(
    private readonly bytes: Uint8Array,
    start: number,
    private readonly end: number,
  ) {
    this.position = start;
  }

  get remaining(): number {
    return this.end - this.position;
  }

  u8(what: string): number {
    this.need(1, what);
    const value = this.bytes[this.position]!;
    this.position += 1;
    return value;
  }

  u16(what: string): number {
    this.need(2, what);
    const value = (this.bytes[this.position]! << 8) | this.bytes[this.position + 1]!;
    this.position += 2;
    return value;
  }

  skip(count: number, what: string): void {
    this.need(count, what);
    this.position += count;
  }

  take(count: number, what: string): Uint8Array {
    this.need(count, what);
    const slice = this.bytes.subarray(this.position, this.position + count);
    this.position += count;
    return slice;
  }

  /** The next `count` bytes as a nested reader (consumed from this one). */
  sub(count: number, what: string): Reader {
    this.need(count, what);
    const inner = new Reader(this.bytes, this.position, this.position + count);
    this.position += count;
    return inner;
  }

  /** A vector with a one-byte length prefix. */
  vector8(what: string): Reader {
    const length = this.u8(`${what} length`);
    return this.vectorBody(length, what);
  }

  /** A vector with a two-byte length prefix. */
  vector16(what: string): Reader {
    const length = this.u16(`${what} length`);
    return this.vectorBody(length, what);
  }

  private vectorBody(length: number, what: string): Reader {
    if (length > this.remaining) {
      throw new Malformed(`${what} length ${length} overruns its container (${this.remaining} bytes left)`);
    }
    return this.sub(length, what);
  }

  private need(count: number, what: string): void {
    if (count > this.remaining) {
      throw new Malformed(`truncated ${what} (needs ${count} bytes, ${this.remaining} left)`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Names for messages.

const utf8 = new TextDecoder("utf-8");

function hex2(value: number): string {
  return value.toString(16).padStart(2, "0");
}

function recordTypeName(type: number): string {
  const name = RECORD_TYPE_NAMES[type];
  return name === undefined ? `type ${type}` : `${name} (type ${type})`;
}

function handshakeTypeName(type: number): string {
  const name = HANDSHAKE_TYPE_NAMES[type];
  return name === undefined ? `type ${type}` : `${name} (type ${type})`;
}

function extensionLabel(type: number): string {
  const name = EXTENSION_NAMES[type];
  return name === undefined ? String(type) : `${type} (${name})`;
}
