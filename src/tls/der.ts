/**
 * Just enough DER to read what `X509Certificate` does not expose the same way on every runtime: the
 * signature algorithm (absent from Node 20's API) and the exact validity instants (Node 20 only gives
 * `validFrom`/`validTo` as display strings). Certificates reaching this code were already parsed by
 * OpenSSL, so malformed input only has to fail safely (null), not diagnostically.
 */
import { children, oidText, readTlv, type Tlv } from "./der-reader.ts";

/** The children of a constructed value, or none when it does not split cleanly (caller then gives up). */
function parts(der: Uint8Array, parent: Tlv): Tlv[] {
  return children(der, parent) ?? [];
}

const SEQUENCE = 0x30;
const OID = 0x06;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;
const VERSION_TAG = 0xa0;

function decodeTime(der: Uint8Array, tlv: Tlv): Date | null {
  const text = new TextDecoder().decode(der.subarray(tlv.start, tlv.end));
  const match =
    tlv.tag === UTC_TIME
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text)
      : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?Z$/.exec(text);
  if (!match) return null;
  const [, y, mo, d, h, mi, s] = match.map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  // RFC 5280 §4.1.2.5.1: two-digit years 50–99 are 19xx, 00–49 are 20xx.
  const year = tlv.tag === UTC_TIME ? (y >= 50 ? 1900 + y : 2000 + y) : y;
  return new Date(Date.UTC(year, mo - 1, d, h, mi, s));
}

// Names as `openssl x509 -text` prints them.
const SIGNATURE_ALGORITHMS: Readonly<Record<string, string>> = {
  "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
  "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
  "1.2.840.113549.1.1.10": "rsassaPss",
  "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
  "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
  "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
  "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
  "1.2.840.10045.4.1": "ecdsa-with-SHA1",
  "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
  "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
  "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
  "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
  "1.3.101.112": "ED25519",
  "1.3.101.113": "ED448",
  "1.2.840.10040.4.3": "dsa_with_SHA1",
  "2.16.840.1.101.3.4.3.2": "dsa_with_SHA256",
};

export interface DerCertificateFields {
  /** OpenSSL's name for the signature algorithm, or the dotted OID when unknown. */
  signatureAlgorithm: string;
  notBefore: Date;
  notAfter: Date;
}

/** Signature algorithm and validity of a DER certificate, or null if the structure is not as expected. */
export function readCertificateFields(der: Uint8Array): DerCertificateFields | null {
  const certificate = readTlv(der, 0, der.length);
  if (certificate?.tag !== SEQUENCE) return null;
  const [tbs, algorithm] = parts(der, certificate);
  if (tbs?.tag !== SEQUENCE || algorithm?.tag !== SEQUENCE) return null;
  const oid = parts(der, algorithm)[0];
  if (oid?.tag !== OID) return null;

  const tbsFields = parts(der, tbs);
  // version [0] is optional; then serialNumber, signature, issuer, validity.
  const validityIndex = tbsFields[0]?.tag === VERSION_TAG ? 4 : 3;
  const validity = tbsFields[validityIndex];
  if (validity?.tag !== SEQUENCE) return null;
  const [from, to] = parts(der, validity);
  const isTime = (t: Tlv | undefined): t is Tlv => t?.tag === UTC_TIME || t?.tag === GENERALIZED_TIME;
  if (!isTime(from) || !isTime(to)) return null;
  const notBefore = decodeTime(der, from);
  const notAfter = decodeTime(der, to);
  if (!notBefore || !notAfter) return null;

  const dotted = oidText(der, oid);
  return { signatureAlgorithm: SIGNATURE_ALGORITHMS[dotted] ?? dotted, notBefore, notAfter };
}
