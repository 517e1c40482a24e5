/**
 * A fast proof that an unencrypted EC private key (PEM) belongs to a certificate, without OpenSSL's
 * key decoder: `createPrivateKey` on a PKCS#8 PEM costs ≈ 350 µs under OpenSSL 3.0 (its decoder
 * framework tries format after format), which is most of `validate`'s time on 1,000 certificates.
 *
 * The check is Go's (`tls.X509KeyPair`): the public point is *derived* from the private scalar (here
 * by ECDH, one scalar multiplication) and compared with the point in the certificate. It never
 * trusts the public key a key file may carry; when there is one, it must be that same point too, so
 * that OpenSSL (which compares the embedded point) would agree.
 *
 * Only a yes is final. `false` means "not proven here": an RSA or Ed25519 key, an unusual encoding,
 * a curve ECDH does not know, or a real mismatch. The caller then runs the full OpenSSL check, which
 * also words the diagnostic, so every failure is reported exactly as before.
 */
import { Buffer } from "node:buffer";
import { createECDH, type ECDH } from "node:crypto";
import { children, oidText, readTlv, type Tlv } from "./der-reader.ts";

/** Named-curve OIDs (dotted) → the curve name `createECDH` takes. */
const CURVES: Readonly<Record<string, string>> = {
  "1.2.840.10045.3.1.7": "prime256v1",
  "1.3.132.0.34": "secp384r1",
  "1.3.132.0.35": "secp521r1",
};

const EC_PUBLIC_KEY = "1.2.840.10045.2.1";

const INTEGER = 0x02;
const BIT_STRING = 0x03;
const OCTET_STRING = 0x04;
const OID = 0x06;
const SEQUENCE = 0x30;
const CONTEXT_0 = 0xa0;
const CONTEXT_1 = 0xa1;

function isSmallInteger(der: Uint8Array, tlv: Tlv | undefined, value: number): boolean {
  return tlv?.tag === INTEGER && tlv.end - tlv.start === 1 && der[tlv.start] === value;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The bytes of a BIT STRING without unused bits (how EC points are stored). */
function bitStringBytes(der: Uint8Array, tlv: Tlv | undefined): Uint8Array | null {
  if (tlv?.tag !== BIT_STRING || tlv.end - tlv.start < 2 || der[tlv.start] !== 0) return null;
  return der.subarray(tlv.start + 1, tlv.end);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64_LINE = /^[A-Za-z0-9+/=]+$/;

/**
 * The DER inside one PEM block, or null for anything but plain base64 lines (headers such as
 * Proc-Type, blank lines, stray characters): OpenSSL decides about those.
 */
function pemBody(block: string): { type: string; der: Uint8Array } | null {
  const lines = block.split("\n").map((line) => (line.endsWith("\r") ? line.slice(0, -1) : line));
  if (lines[lines.length - 1] === "") lines.pop(); // the line break after END
  const begin = /^-----BEGIN ([A-Z ]+)-----$/.exec(lines[0] ?? "");
  const type = begin?.[1];
  if (!type || lines[lines.length - 1] !== `-----END ${type}-----`) return null;
  const body = lines.slice(1, -1);
  if (body.length === 0 || !body.every((line) => BASE64_LINE.test(line))) return null;
  const base64 = body.join("");
  if (base64.length % 4 !== 0 || !BASE64.test(base64)) return null;
  const bytes = Buffer.from(base64, "base64");
  return { type, der: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length) };
}

interface EcPrivateKey {
  curveOid: string;
  scalar: Uint8Array;
  /** The public point the file carries, if any (never trusted, only compared). */
  embeddedPoint: Uint8Array | null;
}

/**
 * SEC 1 ECPrivateKey: SEQUENCE { INTEGER 1, OCTET STRING d, [0] curve OID OPTIONAL, [1] BIT STRING
 * point OPTIONAL }. `outerCurve` is the curve named by a PKCS#8 wrapper, if any.
 */
function readSec1(der: Uint8Array, tlv: Tlv, outerCurve: string | null): EcPrivateKey | null {
  if (tlv.tag !== SEQUENCE) return null;
  const fields = children(der, tlv);
  if (!fields || fields.length < 2 || fields.length > 4) return null;
  const [version, scalar, ...rest] = fields;
  if (!isSmallInteger(der, version, 1) || scalar?.tag !== OCTET_STRING || scalar.end === scalar.start)
    return null;
  let curveOid = outerCurve;
  let embeddedPoint: Uint8Array | null = null;
  let expect = CONTEXT_0;
  for (const field of rest) {
    if (field.tag < expect) return null; // out of order or repeated
    const inner = children(der, field);
    if (inner?.length !== 1) return null;
    if (field.tag === CONTEXT_0) {
      const oid = inner[0];
      if (oid?.tag !== OID) return null;
      const named = oidText(der, oid);
      if (curveOid !== null && named !== curveOid) return null;
      curveOid = named;
      expect = CONTEXT_1;
    } else if (field.tag === CONTEXT_1) {
      embeddedPoint = bitStringBytes(der, inner[0]);
      if (!embeddedPoint) return null;
      expect = CONTEXT_1 + 1;
    } else {
      return null;
    }
  }
  if (curveOid === null) return null;
  return { curveOid, scalar: der.subarray(scalar.start, scalar.end), embeddedPoint };
}

/** PKCS#8 v1 PrivateKeyInfo for an EC key, without attributes: SEQUENCE { 0, { ecPublicKey, curve }, OCTET STRING }. */
function readPkcs8(der: Uint8Array): EcPrivateKey | null {
  const outer = readTlv(der, 0, der.length);
  if (outer?.tag !== SEQUENCE || outer.end !== der.length) return null;
  const fields = children(der, outer);
  if (fields?.length !== 3) return null;
  const [version, algorithm, wrapped] = fields;
  if (!isSmallInteger(der, version, 0) || algorithm?.tag !== SEQUENCE || wrapped?.tag !== OCTET_STRING)
    return null;
  const ids = children(der, algorithm);
  if (ids?.length !== 2 || ids[0]?.tag !== OID || ids[1]?.tag !== OID) return null;
  if (oidText(der, ids[0]) !== EC_PUBLIC_KEY) return null;
  const inner = readTlv(der, wrapped.start, wrapped.end);
  if (!inner || inner.end !== wrapped.end) return null;
  return readSec1(der, inner, oidText(der, ids[1]));
}

function readEcPrivateKey(keyPem: string): EcPrivateKey | null {
  const pem = pemBody(keyPem);
  if (!pem) return null;
  if (pem.type === "PRIVATE KEY") return readPkcs8(pem.der);
  if (pem.type === "EC PRIVATE KEY") {
    const outer = readTlv(pem.der, 0, pem.der.length);
    if (!outer || outer.end !== pem.der.length) return null;
    return readSec1(pem.der, outer, null);
  }
  return null;
}

/** Curve OID and public point of a certificate's subjectPublicKeyInfo, when it is an EC key. */
function certificateEcPoint(certDer: Uint8Array): { curveOid: string; point: Uint8Array } | null {
  const certificate = readTlv(certDer, 0, certDer.length);
  if (certificate?.tag !== SEQUENCE) return null;
  const tbs = readTlv(certDer, certificate.start, certificate.end);
  if (tbs?.tag !== SEQUENCE) return null;
  const fields = children(certDer, tbs);
  if (!fields) return null;
  // version [0] is optional; then serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
  const spki = fields[fields[0]?.tag === CONTEXT_0 ? 6 : 5];
  if (spki?.tag !== SEQUENCE) return null;
  const parts = children(certDer, spki);
  if (parts?.length !== 2 || parts[0]?.tag !== SEQUENCE) return null;
  const ids = children(certDer, parts[0]);
  if (ids?.length !== 2 || ids[0]?.tag !== OID || ids[1]?.tag !== OID) return null;
  if (oidText(certDer, ids[0]) !== EC_PUBLIC_KEY) return null;
  const point = bitStringBytes(certDer, parts[1]);
  return point ? { curveOid: oidText(certDer, ids[1]), point } : null;
}

/** One ECDH object per curve, reused: creating one costs as much as the scalar multiplication. */
const ecdhByCurve = new Map<string, ECDH>();

function ecdhFor(curve: string): ECDH {
  let ecdh = ecdhByCurve.get(curve);
  if (!ecdh) {
    ecdh = createECDH(curve);
    ecdhByCurve.set(curve, ecdh);
  }
  return ecdh;
}

/**
 * True when `keyPem` (one PEM block) is an EC private key whose scalar yields exactly the public
 * point of the certificate `certDer`. False when that could not be shown here (see the module note).
 */
export function ecKeyMatchesCertificate(keyPem: string, certDer: Uint8Array): boolean {
  const cert = certificateEcPoint(certDer);
  if (!cert) return false;
  const key = readEcPrivateKey(keyPem);
  if (!key || key.curveOid !== cert.curveOid) return false;
  const curve = CURVES[key.curveOid];
  // Go refuses scalars longer than the group order; OpenSSL is laxer. Leave those to OpenSSL.
  if (!curve || key.scalar.length > Math.ceil((cert.point.length - 1) / 2)) return false;
  let derived: Uint8Array;
  try {
    const ecdh = ecdhFor(curve);
    // Refuses 0 and scalars ≥ the group order; sets the key pair anew each time.
    ecdh.setPrivateKey(key.scalar);
    derived = ecdh.getPublicKey();
  } catch {
    return false;
  }
  if (key.embeddedPoint && !sameBytes(key.embeddedPoint, derived)) return false;
  return sameBytes(derived, cert.point);
}
