/**
 * The self-signed certificate `serve` presents when no store certificate matches the SNI and no
 * `defaultCertificate` is configured (Traefik: reference §1.8, §3.9). Traefik makes one per store with
 * CN `TRAEFIK DEFAULT CERT` and a random DNS SAN `<32 hex>.<32 hex>.traefik.default`; we keep that shape
 * under our own name, so a client that sees it knows at once that it reached tlsroute's fallback.
 *
 * Node (like Bun and Deno) can make keys and sign, but cannot build an X.509 certificate, so the
 * certificate itself is assembled by `@peculiar/x509`, which runs on WebCrypto (`globalThis.crypto`).
 */
import { X509Certificate } from "node:crypto";

export const GENERATED_CERT_CN = "TLSROUTE DEFAULT CERT";
/** The DNS SAN ends with this label: `<32 hex>.<32 hex>.tlsroute.default`. */
export const GENERATED_CERT_DOMAIN = "tlsroute.default";

const VALIDITY_MS = 365 * 86_400_000;
/** notBefore lies this far in the past, so a client whose clock runs a little behind still accepts it. */
const CLOCK_SKEW_MS = 60_000;

export interface GeneratedCertificate {
  certPem: string;
  /** PKCS#8 (`-----BEGIN PRIVATE KEY-----`), what `tls.createSecureContext({ key })` reads everywhere. */
  keyPem: string;
  /** `CN=TLSROUTE DEFAULT CERT`. */
  subject: string;
  /** The single random DNS SAN. */
  dnsNames: string[];
  notAfter: Date;
}

type X509Module = typeof import("@peculiar/x509");

let x509Module: Promise<X509Module> | undefined;

/**
 * `@peculiar/x509` keeps its algorithm registry in tsyringe, which needs the Reflect metadata API;
 * the library documents `reflect-metadata` as the polyfill to load first. Both are loaded lazily:
 * runs that never need a generated certificate (validate, explain) never load them.
 */
function loadX509(): Promise<X509Module> {
  if (x509Module === undefined) {
    x509Module = import("reflect-metadata").then(() => import("@peculiar/x509"));
  }
  return x509Module;
}

function randomHex(bytes: number): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("hex");
}

/** `<32 hex>.<32 hex>.tlsroute.default`: unguessable, so it can never match a real SNI by accident. */
function randomDnsName(): string {
  return `${randomHex(16)}.${randomHex(16)}.${GENERATED_CERT_DOMAIN}`;
}

/**
 * 128 random bits as a positive DER INTEGER (RFC 5280 §4.1.2.2: positive, at most 20 octets). Clearing
 * the top bit keeps it positive; setting the next one keeps the first octet non-zero, so the encoding
 * is always exactly 16 octets and never needs a leading zero.
 */
function randomSerialHex(): string {
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  return Buffer.from(serial).toString("hex");
}

function pemBlock(label: string, der: ArrayBuffer): string {
  const base64 = Buffer.from(der).toString("base64");
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/**
 * A fresh key and certificate. Each call gives a new key, serial and SAN (Traefik also regenerates on
 * every configuration update). `now` sets the validity window, for tests.
 */
export async function generateDefaultCertificate(options?: { now?: Date }): Promise<GeneratedCertificate> {
  const x509 = await loadX509();
  const webcrypto = globalThis.crypto;
  const now = options?.now ?? new Date();
  const notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  const notAfter = new Date(now.getTime() + VALIDITY_MS);
  const dnsName = randomDnsName();

  // ECDSA P-256 rather than Traefik's RSA-2048: this key signs on every handshake that falls back to the
  // default certificate, and a P-256 signature costs a small fraction of an RSA-2048 one (key generation
  // too: well under a millisecond against tens to hundreds). Every TLS 1.2/1.3 client supports it.
  const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerialHex(),
      name: `CN=${GENERATED_CERT_CN}`,
      notBefore,
      notAfter,
      keys,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: "dns", value: dnsName }]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);

  return {
    certPem: pemBlock("CERTIFICATE", certificate.rawData),
    keyPem: pemBlock("PRIVATE KEY", pkcs8),
    subject: `CN=${GENERATED_CERT_CN}`,
    dnsNames: [dnsName],
    notAfter,
  };
}

/** One line for `serve`'s startup log: which name to expect, until when, and the fingerprint to pin. */
export function describeGenerated(cert: GeneratedCertificate): string {
  const fingerprint = new X509Certificate(cert.certPem).fingerprint256;
  return (
    `generated self-signed default certificate ${cert.subject}, DNS:${cert.dnsNames.join(", DNS:")}, ` +
    `ECDSA P-256, valid until ${cert.notAfter.toISOString()}, SHA-256 ${fingerprint}`
  );
}
