/**
 * Just enough DER to read what `X509Certificate` does not expose the same way on every runtime: the
 * signature algorithm (absent from Node 20's API) and the exact validity instants (Node 20 only gives
 * `validFrom`/`validTo` as display strings); and, for a certificate the runtime refused, why, in words
 * that are the same on every runtime (each runtime's X.509 parser words its refusals its own way).
 */
import {
  children,
  childrenChecked,
  type DerProblem,
  firstProblemWithin,
  isDerProblem,
  oidText,
  readTlv,
  readTlvChecked,
  type Tlv,
} from "./der-reader.ts";

/** The children of a constructed value, or none when it does not split cleanly (caller then gives up). */
function parts(der: Uint8Array, parent: Tlv): Tlv[] {
  return children(der, parent) ?? [];
}

const INTEGER = 0x02;
const BIT_STRING = 0x03;
const SEQUENCE = 0x30;
const OID = 0x06;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;
const VERSION_TAG = 0xa0;
const ISSUER_UNIQUE_ID = 0x81;
const SUBJECT_UNIQUE_ID = 0x82;
const EXTENSIONS_TAG = 0xa3;

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

// ---------------------------------------------------------------------------------------------------------------
// Why a certificate cannot be read

const TAG_NAMES: Readonly<Record<number, string>> = {
  [INTEGER]: "an INTEGER",
  [BIT_STRING]: "a BIT STRING",
  4: "an OCTET STRING",
  5: "a NULL",
  [OID]: "an OBJECT IDENTIFIER",
  [UTC_TIME]: "a UTCTime",
  [GENERALIZED_TIME]: "a GeneralizedTime",
  [SEQUENCE]: "a SEQUENCE",
  49: "a SET",
  [VERSION_TAG]: "a [0] version",
  [ISSUER_UNIQUE_ID]: "a [1] issuerUniqueID",
  [SUBJECT_UNIQUE_ID]: "a [2] subjectUniqueID",
  [EXTENSIONS_TAG]: "a [3] extensions block",
};

function describeTag(tag: number): string {
  return TAG_NAMES[tag] ?? `tag 0x${tag.toString(16).padStart(2, "0")}`;
}

function located(problem: DerProblem, where: string): string {
  return `${problem.problem}, in ${where} (byte ${problem.at})`;
}

function expectTag(tlv: Tlv | undefined, tag: number, where: string): string | null {
  if (!tlv) return `${where} is missing`;
  if (tlv.tag !== tag)
    return `${where} should be ${describeTag(tag)}, found ${describeTag(tlv.tag)} (byte ${tlv.offset})`;
  return null;
}

/** A BIT STRING's content starts with its count of unused bits (0–7). */
function bitStringProblem(der: Uint8Array, tlv: Tlv, where: string): string | null {
  if (tlv.end === tlv.start) return `${where} is an empty BIT STRING`;
  return (der[tlv.start] ?? 0) > 7 ? `${where} is not a valid BIT STRING (byte ${tlv.offset})` : null;
}

/** The outermost element, which must be a SEQUENCE whose length fits the data; or why it is not. */
function readOuter(der: Uint8Array, what: string): Tlv | string {
  if (der.length === 0) return "no data between the BEGIN and END lines";
  if (der[0] !== SEQUENCE) {
    return `not DER-encoded ${what}: it should start with a SEQUENCE, found ${describeTag(der[0] ?? 0)}`;
  }
  const outer = readTlvChecked(der, 0, der.length);
  if (!isDerProblem(outer)) return outer;
  const declared = /declares (\d+) bytes of content but only (\d+) follow/.exec(outer.problem);
  return declared
    ? `truncated: it declares ${declared[1]} bytes of content but only ${declared[2]} follow`
    : `not DER: ${outer.problem}`;
}

/**
 * Why DER data is not an X.509 certificate, judged by its structure (RFC 5280 §4.1.1–4.1.2), or null
 * when the structure reads as one: then only a value inside it (a key, a name, an extension) can be
 * wrong, and the caller says that much. Called only after the runtime refused the certificate, so it
 * never decides what is accepted, only how a refusal is worded.
 */
export function certificateStructureProblem(der: Uint8Array): string | null {
  const outer = readOuter(der, "X.509");
  if (typeof outer === "string") return outer;
  const parts = childrenChecked(der, outer);
  if (isDerProblem(parts)) return located(parts, "the certificate");
  if (parts.length !== 3) {
    return `a certificate has 3 parts (tbsCertificate, signatureAlgorithm, signatureValue), this one has ${parts.length}`;
  }
  const [tbs, signatureAlgorithm, signatureValue] = parts;
  const partProblem =
    expectTag(tbs, SEQUENCE, "tbsCertificate") ??
    expectTag(signatureAlgorithm, SEQUENCE, "signatureAlgorithm") ??
    expectTag(signatureValue, BIT_STRING, "signatureValue");
  if (partProblem) return partProblem;
  const tbsProblem = tbsCertificateProblem(der, tbs!);
  if (tbsProblem) return tbsProblem;
  const algorithm = childrenChecked(der, signatureAlgorithm!);
  if (isDerProblem(algorithm)) return located(algorithm, "signatureAlgorithm");
  const algorithmProblem = expectTag(algorithm[0], OID, "signatureAlgorithm.algorithm");
  if (algorithmProblem) return algorithmProblem;
  const signatureProblem = bitStringProblem(der, signatureValue!, "signatureValue");
  if (signatureProblem) return signatureProblem;
  if (outer.end < der.length) return `${der.length - outer.end} bytes of other data follow the certificate`;
  return null;
}

const TBS_FIELDS = [
  ["serialNumber", INTEGER],
  ["signature", SEQUENCE],
  ["issuer", SEQUENCE],
  ["validity", SEQUENCE],
  ["subject", SEQUENCE],
  ["subjectPublicKeyInfo", SEQUENCE],
] as const;

function tbsCertificateProblem(der: Uint8Array, tbs: Tlv): string | null {
  const fields = childrenChecked(der, tbs);
  if (isDerProblem(fields)) return located(fields, "tbsCertificate");
  let index = 0;
  const named: [string, Tlv][] = [];
  if (fields[0]?.tag === VERSION_TAG) {
    const version = childrenChecked(der, fields[0]);
    if (isDerProblem(version)) return located(version, "tbsCertificate.version");
    if (version.length !== 1 || version[0]?.tag !== INTEGER) {
      return `tbsCertificate.version should hold one INTEGER (byte ${fields[0].offset})`;
    }
    index = 1;
  }
  for (const [name, tag] of TBS_FIELDS) {
    const field = fields[index++];
    const problem = expectTag(field, tag, `tbsCertificate.${name}`);
    if (problem) return problem;
    named.push([name, field!]);
  }
  // Then only the optional unique IDs and extensions, each at most once and in this order.
  let lastOptional = 0;
  for (const extra of fields.slice(index)) {
    const rank = [ISSUER_UNIQUE_ID, SUBJECT_UNIQUE_ID, EXTENSIONS_TAG].indexOf(extra.tag) + 1;
    if (rank <= lastOptional) {
      return `tbsCertificate has ${describeTag(extra.tag)} after subjectPublicKeyInfo where none belongs (byte ${extra.offset})`;
    }
    lastOptional = rank;
    if (extra.tag === EXTENSIONS_TAG) named.push(["extensions", extra]);
  }
  for (const [name, field] of named) {
    const problem = firstProblemWithin(der, field);
    if (problem) return located(problem, `tbsCertificate.${name}`);
  }
  const byName = new Map(named);
  const validity = children(der, byName.get("validity")!) ?? [];
  for (const [i, when] of ["notBefore", "notAfter"].entries()) {
    const time = validity[i];
    const where = `tbsCertificate.validity.${when}`;
    if (!time) return `${where} is missing`;
    if (time.tag !== UTC_TIME && time.tag !== GENERALIZED_TIME) {
      return `${where} should be a UTCTime or GeneralizedTime, found ${describeTag(time.tag)} (byte ${time.offset})`;
    }
    const text = new TextDecoder().decode(der.subarray(time.start, time.end));
    if (!isTimeText(time.tag, text)) return `${where} is not a valid time (${JSON.stringify(text)})`;
  }
  if (validity.length > 2) return "tbsCertificate.validity holds more than notBefore and notAfter";
  const spki = children(der, byName.get("subjectPublicKeyInfo")!) ?? [];
  const spkiProblem =
    expectTag(spki[0], SEQUENCE, "tbsCertificate.subjectPublicKeyInfo.algorithm") ??
    expectTag(spki[1], BIT_STRING, "tbsCertificate.subjectPublicKeyInfo.subjectPublicKey");
  if (spkiProblem) return spkiProblem;
  return publicKeyProblem(der, spki[0]!, spki[1]!);
}

/**
 * A time as Go's parser reads one (Traefik's): UTCTime `YYMMDDHHMM[SS]` and GeneralizedTime
 * `YYYYMMDDHHMMSS`, each with `Z` or a `±hhmm` offset, and every field in range. Only a refused
 * time matters here; readCertificateFields decodes the usual `Z` forms.
 */
function isTimeText(tag: number, text: string): boolean {
  const match =
    tag === UTC_TIME
      ? /^\d{2}(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:Z|[+-]\d{4})$/.exec(text)
      : /^\d{4}(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:Z|[+-]\d{4})$/.exec(text);
  if (!match) return false;
  const [month, day, hour, minute, second = "00"] = match.slice(1).map((v) => v ?? "00");
  return (
    Number(month) >= 1 &&
    Number(month) <= 12 &&
    Number(day) >= 1 &&
    Number(day) <= 31 &&
    Number(hour) <= 23 &&
    Number(minute) <= 59 &&
    Number(second) <= 59
  );
}

const RSA_ENCRYPTION = "1.2.840.113549.1.1.1";
const EC_PUBLIC_KEY = "1.2.840.10045.2.1";

/**
 * The subjectPublicKey BIT STRING: its unused-bits byte and, for the two key types certificates
 * carry, the shape of the key inside (an RSA key is a SEQUENCE of modulus and exponent, an EC key a
 * point, uncompressed `04‖X‖Y` or compressed `02|03‖X`).
 */
function publicKeyProblem(der: Uint8Array, algorithm: Tlv, key: Tlv): string | null {
  const where = "tbsCertificate.subjectPublicKeyInfo.subjectPublicKey";
  const bitProblem = bitStringProblem(der, key, where);
  if (bitProblem) return bitProblem;
  const oid = children(der, algorithm)?.[0];
  const kind = oid?.tag === OID ? oidText(der, oid) : null;
  const content = der.subarray(key.start + 1, key.end);
  if (kind === RSA_ENCRYPTION) {
    const rsa = readTlv(content, 0, content.length);
    const fields = rsa?.tag === SEQUENCE && rsa.end === content.length ? children(content, rsa) : null;
    const sound = fields?.length === 2 && fields.every((f) => f.tag === INTEGER && f.end > f.start);
    return sound ? null : `${where}: the RSA key is not a SEQUENCE of modulus and exponent`;
  }
  if (kind === EC_PUBLIC_KEY) {
    const prefix = content[0];
    const ok =
      (prefix === 0x04 && content.length % 2 === 1 && content.length >= 3) ||
      ((prefix === 0x02 || prefix === 0x03) && content.length >= 2);
    return ok ? null : `${where}: the EC key is not an encoded curve point`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------------
// Why a private key cannot be read

const OCTET_STRING = 0x04;

/** A DER element's problem, or the element when it is a SEQUENCE filling the data exactly. */
function outerSequence(der: Uint8Array, what: string): Tlv | string {
  const outer = readOuter(der, what);
  if (typeof outer === "string") return outer;
  const problem = firstProblemWithin(der, outer);
  if (problem) return located(problem, `the ${what}`);
  if (outer.end < der.length) return `${der.length - outer.end} bytes of other data follow the ${what}`;
  return outer;
}

function isSmallInteger(der: Uint8Array, tlv: Tlv | undefined, value: number): boolean {
  return tlv?.tag === INTEGER && tlv.end - tlv.start === 1 && der[tlv.start] === value;
}

/**
 * Why the DER of a private key block is not the key its label promises (`PRIVATE KEY`: PKCS#8;
 * `EC PRIVATE KEY`: SEC1; `RSA PRIVATE KEY`: PKCS#1), judged by structure, or null when it reads as
 * one. Like certificateStructureProblem, only the wording of a refusal the runtime made comes from here.
 */
export function privateKeyStructureProblem(label: string, der: Uint8Array): string | null {
  const outer = outerSequence(der, "key");
  if (typeof outer === "string") return outer;
  const fields = children(der, outer) ?? [];
  const pkcs8 =
    (isSmallInteger(der, fields[0], 0) || isSmallInteger(der, fields[0], 1)) &&
    fields[1]?.tag === SEQUENCE &&
    fields[2]?.tag === OCTET_STRING;
  const sec1 = isSmallInteger(der, fields[0], 1) && fields[1]?.tag === OCTET_STRING;
  const pkcs1 = fields.length >= 9 && fields.slice(0, 9).every((f) => f.tag === INTEGER);
  const found = pkcs8
    ? "a PKCS#8 key (label PRIVATE KEY)"
    : sec1
      ? "an EC key (label EC PRIVATE KEY)"
      : pkcs1
        ? "an RSA key (label RSA PRIVATE KEY)"
        : null;
  const expected: Readonly<Record<string, boolean>> = {
    "PRIVATE KEY": pkcs8,
    "EC PRIVATE KEY": sec1,
    "RSA PRIVATE KEY": pkcs1,
  };
  if (expected[label] === undefined) return null;
  if (expected[label]) return null;
  return found
    ? `the block says ${label} but holds ${found}`
    : `the DER inside is not the structure a ${label} block holds`;
}
