/**
 * Words for what went wrong: TLS alerts recognised from the runtime's error, verification codes, and
 * a sentence plus a hint for every probe failure. Pure lookups; runtime codes are matched, message
 * text only where it carries the alert number (the code is the portable part, see runtimes.md §5).
 */
import type { ProbeFailure } from "./probe.ts";

/** TLS alert descriptions (RFC 8446 §6 and the older ones OpenSSL still names). */
const ALERTS: Readonly<Record<string, number>> = {
  close_notify: 0,
  unexpected_message: 10,
  bad_record_mac: 20,
  decryption_failed: 21,
  record_overflow: 22,
  decompression_failure: 30,
  handshake_failure: 40,
  no_certificate: 41,
  bad_certificate: 42,
  unsupported_certificate: 43,
  certificate_revoked: 44,
  certificate_expired: 45,
  certificate_unknown: 46,
  illegal_parameter: 47,
  unknown_ca: 48,
  access_denied: 49,
  decode_error: 50,
  decrypt_error: 51,
  export_restriction: 60,
  protocol_version: 70,
  insufficient_security: 71,
  internal_error: 80,
  inappropriate_fallback: 86,
  user_canceled: 90,
  no_renegotiation: 100,
  missing_extension: 109,
  unsupported_extension: 110,
  certificate_unobtainable: 111,
  unrecognized_name: 112,
  bad_certificate_status_response: 113,
  bad_certificate_hash_value: 114,
  unknown_psk_identity: 115,
  certificate_required: 116,
  no_application_protocol: 120,
};

const ALERT_BY_NUMBER = new Map(Object.entries(ALERTS).map(([name, n]) => [n, name]));

export interface TlsAlert {
  name: string;
  code: number;
}

/**
 * The alert the server sent, if the error is one: OpenSSL-based runtimes name it in the code
 * (`ERR_SSL_TLSV1_ALERT_UNKNOWN_CA`, `ERR_SSL_TLSV1_UNRECOGNIZED_NAME`, Bun's `…TLSV1_ALERT_CERTIFICATE_REQUIRED`)
 * and give its number in the message (`SSL alert number 48`).
 */
export function alertFromError(code: string, message: string): TlsAlert | null {
  const named = /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_(?:ALERT_)?([A-Z_]+)$/.exec(code);
  if (named) {
    const name = named[1]!.toLowerCase();
    const number = ALERTS[name];
    if (number !== undefined) return { name, code: number };
  }
  const numbered = /SSL alert number (\d+)/.exec(message);
  if (numbered) {
    const number = Number(numbered[1]);
    return { name: ALERT_BY_NUMBER.get(number) ?? `alert_${number}`, code: number };
  }
  return null;
}

const ALERT_MEANING: Readonly<Record<string, string>> = {
  handshake_failure: "the server found no protocol version, cipher or key exchange it shares with us",
  protocol_version: "the server does not speak any TLS version we offered",
  unrecognized_name:
    "the server has no site for this server name (a router refuses an SNI it has no route for)",
  no_application_protocol: "none of the offered ALPN protocols is one the server speaks",
  certificate_required: "the server requires a client certificate (give one with --cert and --key)",
  unknown_ca: "the server does not trust the issuer of our client certificate",
  bad_certificate: "the server refused our client certificate",
  certificate_expired: "the server says our client certificate has expired",
  certificate_unknown: "the server refused our client certificate",
  decrypt_error: "a signature or key check failed during the handshake",
  access_denied: "the server refuses access",
  insufficient_security: "the server wants stronger parameters than we offered",
  internal_error: "the server failed internally during the handshake",
  illegal_parameter: "the server rejected a field of our handshake",
  inappropriate_fallback: "the server detected a protocol downgrade",
};

/** Verification codes as OpenSSL-based runtimes report them, in our words. */
const VERIFY_MEANING: Readonly<Record<string, string>> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: "the certificate is self-signed and not in the trust store",
  SELF_SIGNED_CERT_IN_CHAIN: "the chain ends in a self-signed root that is not in the trust store",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "the issuer of the chain is not in the trust store",
  UNABLE_TO_GET_ISSUER_CERT: "the issuer of a certificate in the chain was not found",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    "the certificate's issuer is neither in the chain the server sent nor in the trust store",
  CERT_HAS_EXPIRED: "a certificate in the chain has expired",
  CERT_NOT_YET_VALID: "a certificate in the chain is not valid yet",
  CERT_SIGNATURE_FAILURE: "a signature in the chain does not verify",
  CERT_REVOKED: "a certificate in the chain is revoked",
  INVALID_CA: "an issuer in the chain is not a CA certificate",
  CERT_UNTRUSTED: "the chain is not trusted",
  CERT_REJECTED: "the chain is rejected for this purpose",
  INVALID_PURPOSE: "a certificate in the chain may not be used for TLS servers",
  PATH_LENGTH_EXCEEDED: "the chain is longer than an issuer allows",
  EE_KEY_TOO_SMALL: "the certificate's key is too small",
  CA_KEY_TOO_SMALL: "an issuer's key is too small",
  CA_MD_TOO_WEAK: "a signature in the chain uses a weak digest",
  ERR_TLS_CERT_ALTNAME_INVALID: "the certificate does not name the host",
};

export function verificationMeaning(code: string): string {
  return VERIFY_MEANING[code] ?? code.toLowerCase().replace(/_/g, " ");
}

export interface FailureText {
  summary: string;
  hint: string | null;
  alert: TlsAlert | null;
}

const NETWORK: Readonly<Record<string, [string, string | null]>> = {
  ECONNREFUSED: [
    "connection refused",
    "Nothing listens on that port (or a firewall rejects the connection).",
  ],
  ECONNRESET: ["the server reset the connection", null],
  ENOTFOUND: ["the host name does not resolve", "Check the spelling, or give an IP address."],
  EAI_AGAIN: ["the host name could not be resolved (DNS did not answer)", null],
  EHOSTUNREACH: ["no route to the host", null],
  ENETUNREACH: ["the network is unreachable", null],
  ETIMEDOUT: ["the connection attempt timed out", null],
  EADDRNOTAVAIL: ["the address is not available", null],
};

/** One sentence and a hint for a failed probe. */
export function describeFailure(
  failure: ProbeFailure,
  context: { timeoutMs: number; startTls: string | null },
): FailureText {
  if (failure.code === "timeout") {
    const what =
      failure.stage === "connect"
        ? "the TCP connection was not established"
        : failure.stage === "starttls"
          ? "the server did not answer the PostgreSQL SSLRequest"
          : "the server did not complete the TLS handshake";
    return {
      summary: `timed out after ${context.timeoutMs} ms: ${what}`,
      hint:
        failure.stage === "handshake" && context.startTls === null
          ? "A server that waits silently may speak another protocol first (PostgreSQL: --starttls postgres), or drop traffic it does not route."
          : failure.stage === "connect"
            ? "A firewall that drops packets looks like this; --timeout sets the limit."
            : null,
      alert: null,
    };
  }
  if (failure.code === "postgres_ssl_refused") {
    return {
      summary: 'the server answered "N" to the SSLRequest: it does not accept TLS connections',
      hint: "PostgreSQL with ssl=off answers N (a client with sslmode=require gives up); a router answers N on an entry point without TLS routers.",
      alert: null,
    };
  }
  if (failure.code === "postgres_unexpected_answer") {
    return {
      summary: failure.message,
      hint: "Is this a PostgreSQL server (or a router in front of one)?",
      alert: null,
    };
  }
  if (failure.code === "closed") return { summary: failure.message, hint: null, alert: null };
  const network = NETWORK[failure.code];
  if (network && failure.stage !== "handshake") {
    return { summary: `${network[0]} (${failure.message})`, hint: network[1], alert: null };
  }
  const alert = alertFromError(failure.code, failure.message);
  if (alert) {
    const meaning = ALERT_MEANING[alert.name];
    const when = failure.afterHandshake ? " after the handshake" : "";
    return {
      summary: `the server sent the TLS alert ${alert.name} (${alert.code})${when}${meaning ? `: ${meaning}` : ""}`,
      hint: null,
      alert,
    };
  }
  if (failure.code === "ERR_SSL_WRONG_VERSION_NUMBER" || failure.code === "ERR_SSL_PACKET_LENGTH_TOO_LONG") {
    return {
      summary: `the server did not answer with TLS (${failure.code})`,
      hint:
        context.startTls === null
          ? "Is this a plaintext port, or one that needs STARTTLS first (PostgreSQL: --starttls postgres)?"
          : null,
      alert: null,
    };
  }
  if (failure.code === "ECONNRESET" || failure.code === "EPIPE") {
    return {
      summary: "the server closed the connection during the TLS handshake, without an alert",
      hint:
        context.startTls === "postgres-direct"
          ? "PostgreSQL before 17 does not accept direct TLS; try --starttls postgres."
          : "Some servers drop a handshake they refuse (unknown SNI, no shared ALPN) instead of sending an alert.",
      alert: null,
    };
  }
  return { summary: `${failure.code}: ${failure.message}`, hint: null, alert: null };
}
