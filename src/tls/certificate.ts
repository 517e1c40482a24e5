/**
 * Reading certificates and keys the way Traefik sees them, with `node:crypto`'s X509Certificate only
 * (it exists on Node, Bun and Deno). Failures are values with a stable code and a message meant for the
 * person editing the configuration; nothing here throws on bad input.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { certificateStructureProblem, privateKeyStructureProblem, readCertificateFields } from "./der.ts";
import { ecKeyMatchesCertificate } from "./ec-key-check.ts";
import { fail, ok, type Result } from "./result.ts";

export type KeyType = "EC" | "RSA" | "RSA-PSS" | "Ed25519" | "Ed448" | "DSA" | (string & {});

export interface CertificateInfo {
  /** Distinguished name in certificate order, RFC 2253 escapes kept: `O=Acme\, Inc., CN=db.example.com`. */
  subject: string;
  /** The last CN attribute, unescaped (Go uses the last one too); null when there is none. */
  subjectCN: string | null;
  issuer: string;
  /** DNS SANs as written in the certificate (case kept). */
  dnsNames: string[];
  /** IP SANs in Go's notation (`2001:db8::1`, IPv4-mapped IPv6 shown as IPv4). */
  ipAddresses: string[];
  /** Lowercased CN, DNS SANs, IP SANs, without duplicates: the names Traefik's store keys and matches. */
  names: string[];
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 fingerprint as `openssl x509 -fingerprint -sha256` prints it (`AB:CD:…`). */
  fingerprint256: string;
  /** Upper-case hex. */
  serialNumber: string;
  keyType: KeyType;
  /** Key size in bits (RSA modulus, EC field size); null when unknown. */
  keySize: number | null;
  /** Named curve for EC keys (`prime256v1`, `secp384r1`); null otherwise. */
  curve: string | null;
  /** As OpenSSL names it (`ecdsa-with-SHA256`); null if it could not be read. */
  signatureAlgorithm: string | null;
  /** Issued by itself: issuer and subject are the same name and the signature verifies with its own key. */
  selfSigned: boolean;
  isCA: boolean;
  raw: X509Certificate;
}

export type CertificateError = "not-pem" | "no-certificate" | "invalid-certificate";
export type KeyError = "no-key" | "key-encrypted" | "key-invalid" | "key-mismatch";

// ---------------------------------------------------------------------------------------------------------------
// PEM blocks

export interface PemBlock {
  /** The word(s) after BEGIN: `CERTIFICATE`, `PRIVATE KEY`, `EC PRIVATE KEY`, … */
  type: string;
  /** The whole block including its BEGIN/END lines. */
  text: string;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/** Complete PEM blocks in order; text between blocks (comments, openssl `-text` dumps) is skipped. */
export function splitPemBlocks(text: string): PemBlock[] {
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ type: m[1] ?? "", text: m[0] }));
}

function describeBlockTypes(blocks: PemBlock[]): string {
  return [...new Set(blocks.map((b) => b.type))].join(", ");
}

/**
 * The DER inside a PEM block, decoded by us (strict base64), or why it cannot be: the wording of a
 * refusal must not depend on the runtime's PEM reader.
 */
function pemBlockDer(block: string): Uint8Array | { problem: string } {
  const body = block.replace(/-----(BEGIN|END) [A-Z0-9 ]+-----/g, "").replace(/\s+/g, "");
  if (body === "") return { problem: "no data between the BEGIN and END lines" };
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 === 1) {
    return { problem: "the text between the BEGIN and END lines is not valid base64" };
  }
  return new Uint8Array(Buffer.from(body, "base64"));
}

/** A refusal our structural reading cannot explain: the runtime's parser found a bad value inside. */
const UNREADABLE_VALUE = "a value inside it is invalid, although its DER structure reads correctly";

// ---------------------------------------------------------------------------------------------------------------
// Certificates

/** Every certificate in `pemText`, leaf first as written. At least one, or an error. */
export function parseCertificateChain(pemText: string): Result<CertificateInfo[], CertificateError> {
  if (!pemText.includes("-----BEGIN")) {
    return fail("not-pem", "no PEM data found (expected a -----BEGIN CERTIFICATE----- block)");
  }
  const blocks = splitPemBlocks(pemText);
  const certBlocks = blocks.filter((b) => b.type === "CERTIFICATE");
  if (certBlocks.length === 0) {
    if (/-----BEGIN CERTIFICATE-----/.test(pemText)) {
      return fail(
        "invalid-certificate",
        "a CERTIFICATE block has no matching -----END CERTIFICATE----- line",
      );
    }
    if (blocks.length === 0) return fail("not-pem", "no complete PEM block found (missing -----END line?)");
    const keyHint = blocks.some((b) => b.type.endsWith("PRIVATE KEY"))
      ? " — this looks like a private key; are certFile and keyFile swapped?"
      : "";
    return fail("no-certificate", `no certificate found, only ${describeBlockTypes(blocks)}${keyHint}`);
  }
  const infos: CertificateInfo[] = [];
  for (const [index, block] of certBlocks.entries()) {
    const which = certBlocks.length === 1 ? "the certificate" : `certificate #${index + 1}`;
    const invalid = (reason: string) =>
      fail("invalid-certificate", `${which} is not a valid X.509 certificate (${reason})`);
    // Our own DER reading decides what is structurally broken and words it: the runtimes' X.509
    // parsers (OpenSSL on Node, BoringSSL on Bun, rustls' on Deno) each word a refusal their own way,
    // and they do not even agree on what to refuse (Deno takes trailing bytes, Node an impossible
    // date). Go's parser, which Traefik uses, is strict DER, as this reading is.
    const der = pemBlockDer(block.text);
    let x509: X509Certificate;
    try {
      x509 = new X509Certificate(block.text);
    } catch {
      if (!(der instanceof Uint8Array)) return invalid(der.problem);
      return invalid(certificateStructureProblem(der) ?? UNREADABLE_VALUE);
    }
    const problem = certificateStructureProblem(der instanceof Uint8Array ? der : new Uint8Array(x509.raw));
    if (problem) return invalid(problem);
    let info: CertificateInfo;
    try {
      info = certificateInfo(x509);
    } catch {
      // The runtime parsed the certificate lazily and fails on a part only read on demand.
      return invalid("its public key cannot be read");
    }
    infos.push(info);
  }
  return ok(infos);
}

/** CA certificates for `clientAuth.caFiles` / `rootCAs`: same rules, named for the context. */
export function parseCaBundle(pemText: string): Result<CertificateInfo[], CertificateError> {
  const parsed = parseCertificateChain(pemText);
  if (parsed.ok) return parsed;
  return fail(parsed.code, `not a usable CA bundle: ${parsed.message}`);
}

/** Describes an already parsed certificate (also used for peer certificates in `inspect`). */
export function certificateInfo(x509: X509Certificate): CertificateInfo {
  const subjectAttributes = parseDistinguishedName(x509.subject);
  const cns = subjectAttributes.filter(([key]) => key === "CN").map(([, value]) => value);
  const subjectCN = cns.length > 0 ? (cns[cns.length - 1] ?? null) : null;
  const { dnsNames, ipAddresses } = parseSubjectAltName(x509.subjectAltName);
  const names = [
    ...new Set(
      [...(subjectCN ? [subjectCN] : []), ...dnsNames, ...ipAddresses].map((name) => name.toLowerCase()),
    ),
  ];
  const fields = readCertificateFields(new Uint8Array(x509.raw));
  const key = describePublicKey(x509.publicKey);
  return {
    subject: displayName(x509.subject),
    subjectCN,
    issuer: displayName(x509.issuer),
    dnsNames,
    ipAddresses,
    names,
    notBefore: fields?.notBefore ?? new Date(x509.validFrom),
    notAfter: fields?.notAfter ?? new Date(x509.validTo),
    fingerprint256: x509.fingerprint256,
    serialNumber: serialHex(x509.serialNumber),
    keyType: key.keyType,
    keySize: key.keySize,
    curve: key.curve,
    signatureAlgorithm: fields?.signatureAlgorithm ?? null,
    selfSigned: isSelfSigned(x509),
    isCA: x509.ca,
    raw: x509,
  };
}

function isSelfSigned(x509: X509Certificate): boolean {
  try {
    // Not checkIssued(): OpenSSL also demands keyCertSign there, which self-signed leaves rarely have.
    return x509.subject === x509.issuer && x509.verify(x509.publicKey);
  } catch {
    return false;
  }
}

// X509Certificate prints names one RDN per line (`C=DE\nO=Acme\, Inc.\nCN=x`), with " + " inside
// multi-valued RDNs and RFC 2253 backslash escapes.
function displayName(multiline: string): string {
  return multiline.split("\n").join(", ");
}

/** `[attribute, unescaped value]` pairs of a name as X509Certificate prints it. */
export function parseDistinguishedName(multiline: string): Array<[string, string]> {
  const attributes: Array<[string, string]> = [];
  let key = "";
  let value = "";
  let inValue = false;
  const flush = () => {
    if (key !== "" || value !== "") attributes.push([key, value]);
    key = "";
    value = "";
    inValue = false;
  };
  for (let i = 0; i < multiline.length; i++) {
    const ch = multiline[i] ?? "";
    if (ch === "\\" && i + 1 < multiline.length) {
      const hex = multiline.slice(i + 1, i + 3);
      let literal: string;
      if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
        literal = String.fromCharCode(Number.parseInt(hex, 16));
        i += 2;
      } else {
        literal = multiline[i + 1] ?? "";
        i += 1;
      }
      if (inValue) value += literal;
      else key += literal;
    } else if (ch === "\n") {
      flush();
    } else if (ch === " " && multiline.startsWith(" + ", i)) {
      flush();
      i += 2;
    } else if (ch === "=" && !inValue) {
      inValue = true;
    } else if (inValue) {
      value += ch;
    } else {
      key += ch;
    }
  }
  flush();
  return attributes;
}

/**
 * DNS and IP entries of X509Certificate's `subjectAltName` string: `DNS:a, IP Address:1.2.3.4, …`.
 * Values with special characters come JSON-quoted (`DNS:"a\u002cb"`), which is decoded here.
 */
export function parseSubjectAltName(text: string | undefined): { dnsNames: string[]; ipAddresses: string[] } {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  if (!text) return { dnsNames, ipAddresses };
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(":", i);
    if (colon < 0) break;
    const type = text.slice(i, colon);
    let value: string;
    let next: number;
    if (text[colon + 1] === '"') {
      let end = colon + 2;
      while (end < text.length && text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      try {
        value = JSON.parse(text.slice(colon + 1, end + 1)) as string;
      } catch {
        value = text.slice(colon + 2, end);
      }
      next = end + 1;
    } else {
      const comma = text.indexOf(", ", colon);
      next = comma < 0 ? text.length : comma;
      value = text.slice(colon + 1, next);
    }
    if (type === "DNS") dnsNames.push(value);
    else if (type === "IP Address") ipAddresses.push(goIpString(value));
    i = text.startsWith(", ", next) ? next + 2 : next + 1;
  }
  return { dnsNames, ipAddresses };
}

/**
 * An IP address as Go's `net.IP.String()` writes it, which is what Traefik puts in its certificate keys:
 * IPv6 lower-case with the longest run (≥ 2) of zero groups compressed, IPv4-mapped IPv6 as dotted IPv4.
 * OpenSSL prints IPv6 SANs uncompressed and upper-case (`2001:DB8:0:0:0:0:0:1`).
 */
export function goIpString(text: string): string {
  if (!text.includes(":")) return text;
  const groups = expandIpv6(text);
  if (!groups) return text.toLowerCase();
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const [a = 0, b = 0] = groups.slice(6);
    return `${a >> 8}.${a & 0xff}.${b >> 8}.${b & 0xff}`;
  }
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8; ) {
    if (groups[start] !== 0) {
      start++;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === 0) end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

function expandIpv6(text: string): number[] | null {
  let head = text;
  let tail = "";
  const gap = text.indexOf("::");
  if (gap >= 0) {
    head = text.slice(0, gap);
    tail = text.slice(gap + 2);
  }
  const parse = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    for (const piece of part.split(":")) {
      if (piece.includes(".")) {
        const octets = piece.split(".").map(Number);
        if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) return null;
        const [a = 0, b = 0, c = 0, d = 0] = octets;
        out.push((a << 8) | b, (c << 8) | d);
      } else {
        if (!/^[0-9A-Fa-f]{1,4}$/.test(piece)) return null;
        out.push(Number.parseInt(piece, 16));
      }
    }
    return out;
  };
  const left = parse(head);
  const right = parse(tail);
  if (!left || !right) return null;
  if (gap < 0) return left.length === 8 ? left : null;
  const missing = 8 - left.length - right.length;
  return missing < 1 ? null : [...left, ...new Array<number>(missing).fill(0), ...right];
}

const CURVE_BITS: Readonly<Record<string, number>> = {
  prime256v1: 256,
  secp256k1: 256,
  secp384r1: 384,
  secp521r1: 521,
  secp224r1: 224,
  prime192v1: 192,
  brainpoolP256r1: 256,
  brainpoolP384r1: 384,
  brainpoolP512r1: 512,
};

const KEY_TYPES: Readonly<Record<string, KeyType>> = {
  rsa: "RSA",
  "rsa-pss": "RSA-PSS",
  ec: "EC",
  ed25519: "Ed25519",
  ed448: "Ed448",
  dsa: "DSA",
};

function describePublicKey(key: KeyObject): {
  keyType: KeyType;
  keySize: number | null;
  curve: string | null;
} {
  const type = key.asymmetricKeyType ?? "unknown";
  const details = key.asymmetricKeyDetails ?? {};
  const keyType = KEY_TYPES[type] ?? type.toUpperCase();
  if (details.namedCurve) {
    return { keyType, keySize: CURVE_BITS[details.namedCurve] ?? null, curve: details.namedCurve };
  }
  if (details.modulusLength) return { keyType, keySize: details.modulusLength, curve: null };
  if (type === "ed25519") return { keyType, keySize: 256, curve: null };
  if (type === "ed448") return { keyType, keySize: 456, curve: null };
  return { keyType, keySize: null, curve: null };
}

// ---------------------------------------------------------------------------------------------------------------
// Keys

/**
 * Whether `keyPem` is the private key of the first certificate in `certPem`. Like Traefik (Go's
 * `tls.X509KeyPair`), encrypted keys are refused: there is nowhere to put a passphrase.
 */
export function checkKeyMatches(
  certPem: string,
  keyPem: string,
): Result<{ keyType: KeyType }, CertificateError | KeyError> {
  const chain = parseCertificateChain(certPem);
  if (!chain.ok) return chain;
  const leaf = chain.value[0];
  if (!leaf) return fail("no-certificate", "no certificate found");
  return checkLeafKey(leaf, keyPem);
}

/** `checkKeyMatches` for a certificate already parsed (the catalog has it; parsing twice is costly). */
export function checkLeafKey(leaf: CertificateInfo, keyPem: string): Result<{ keyType: KeyType }, KeyError> {
  const blocks = splitPemBlocks(keyPem);
  const keyBlock = blocks.find((b) => b.type.endsWith("PRIVATE KEY"));
  if (!keyBlock) {
    if (blocks.some((b) => b.type === "CERTIFICATE")) {
      return fail(
        "no-key",
        "found a certificate where the private key was expected — are certFile and keyFile swapped?",
      );
    }
    return fail(
      "no-key",
      blocks.length > 0
        ? `no private key found, only ${describeBlockTypes(blocks)}`
        : "no private key found (expected a -----BEGIN PRIVATE KEY----- block)",
    );
  }
  if (keyBlock.type === "ENCRYPTED PRIVATE KEY" || /Proc-Type:\s*4,ENCRYPTED/.test(keyBlock.text)) {
    return fail(
      "key-encrypted",
      "the private key is encrypted with a passphrase; Traefik and tlsroute need an unencrypted key " +
        "(decrypt it with `openssl pkey -in key.pem -out key-plain.pem`)",
    );
  }
  // The common case (an EC key that matches) is proven without OpenSSL's slow key decoder; anything
  // else, including every mismatch, takes the full path below, which also words the diagnostics.
  if (ecKeyMatchesCertificate(keyBlock.text, leaf.raw.raw)) return ok({ keyType: "EC" });
  let key: KeyObject;
  try {
    key = createPrivateKey(keyBlock.text);
  } catch {
    // Worded from our own reading, like a refused certificate: each runtime's decoder says it its way.
    const der = pemBlockDer(keyBlock.text);
    const reason =
      der instanceof Uint8Array
        ? (privateKeyStructureProblem(keyBlock.type, der) ?? UNREADABLE_VALUE)
        : der.problem;
    return fail("key-invalid", `the private key cannot be read (${reason})`);
  }
  const keyType = describePublicKey(key).keyType;
  let matches: boolean;
  try {
    matches = leaf.raw.checkPrivateKey(key);
  } catch {
    matches = false;
  }
  if (!matches) {
    const certKey = leaf.keyType === keyType ? `a different ${keyType} key` : leaf.keyType;
    return fail(
      "key-mismatch",
      `the private key (${keyType}) does not belong to the certificate ${leaf.subject || "(empty subject)"} ` +
        `(its public key is ${certKey})`,
    );
  }
  return ok({ keyType });
}

// ---------------------------------------------------------------------------------------------------------------
// Expiry

export type ExpiryState = "expired" | "expiring" | "ok";

const DAY_MS = 86_400_000;

/**
 * Expired once `now` is after notAfter (Go's rule); expiring when fewer than `warnDays` days remain.
 * `daysLeft` is rounded down, so it is negative for an expired certificate.
 */
export function expiryStatus(
  notAfter: Date,
  now: Date,
  warnDays = 30,
): { status: ExpiryState; daysLeft: number } {
  const remaining = notAfter.getTime() - now.getTime();
  const daysLeft = Math.floor(remaining / DAY_MS);
  if (remaining < 0) return { status: "expired", daysLeft };
  return { status: remaining < warnDays * DAY_MS ? "expiring" : "ok", daysLeft };
}

/**
 * The serial as whole bytes of upper-case hex, as `openssl x509 -serial` prints it. Deno drops a leading
 * zero nibble (`B56…` for `0B56…`); Node keeps it. Padding to whole bytes makes every runtime agree.
 */
export function serialHex(serial: string): string {
  const hex = serial.toUpperCase();
  return hex.length % 2 === 1 ? `0${hex}` : hex;
}
