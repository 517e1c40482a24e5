/**
 * Turns a probe result into inspect's report: the JSON document of the command contract, the
 * warnings a user wants, and the overall verdict. Pure: the clock and the trust store come in as data.
 */
import type { X509Certificate } from "node:crypto";
import { joinHostPort } from "../proxy/dial.ts";
import { type CertificateInfo, certificateInfo, expiryStatus } from "../tls/certificate.ts";
import { describeFailure, type TlsAlert, verificationMeaning } from "./failures.ts";
import type { NegotiatedTls, ProbeResult, StartTls } from "./probe.ts";
import type { RouteJson } from "./route.ts";
import type { Target } from "./target.ts";

export const EXPIRY_WARNING_DAYS = 30;

export interface ReportInput {
  target: Target;
  sni: string | null;
  alpnOffered: readonly string[];
  startTls: StartTls | null;
  insecure: boolean;
  /** The --ca file, or null for the runtime's default store. */
  caFile: string | null;
  clientCertificate: boolean;
  timeoutMs: number;
  /** The name checked against the certificate (SNI, else host). */
  identity: string;
  probe: ProbeResult;
  /**
   * Fingerprints of the trusted roots (marks a root the runtime may have added from its store); null
   * when the store could not be read (Deno without --allow-sys): the verdict then decides.
   */
  trusted: ReadonlySet<string> | null;
  route: RouteJson | null;
  now: Date;
}

export interface CertificateJson {
  subject: string;
  issuer: string;
  sans: string[];
  notBefore: string;
  notAfter: string;
  daysLeft: number;
  fingerprint256: string;
  serialNumber: string;
  keyType: string;
  keySize: number | null;
  curve: string | null;
  signatureAlgorithm: string | null;
  selfSigned: boolean;
  isCA: boolean;
  inTrustStore: boolean;
}

export interface Warning {
  code:
    | "expired"
    | "not-yet-valid"
    | "expiring"
    | "name-mismatch"
    | "self-signed"
    | "old-tls"
    | "missing-intermediate"
    | "weak-key"
    | "route-refuses"
    | "route-certificate-differs"
    | "route-alpn-differs";
  message: string;
}

export interface InspectReport {
  /** Handshake done, verification passed (or skipped with --insecure), and the route (with -c) serves it. */
  ok: boolean;
  target: string;
  /** The address actually reached, and ours. */
  address: string | null;
  localAddress: string | null;
  sni: string | null;
  alpnOffered: string[];
  postgres: { mode: "starttls" | "direct"; answer: string | null } | null;
  tls: { version: string | null; cipher: string | null; alpn: string | null; group: string | null } | null;
  certificate: CertificateJson | null;
  chain: CertificateJson[];
  verification: {
    ok: boolean;
    error: string | null;
    message: string | null;
    hostnameMatch: boolean;
    name: string;
    trust: string;
    enforced: boolean;
    clientCertificate: boolean;
  } | null;
  timings: { connectMs: number | null; startTlsMs: number | null; handshakeMs: number | null };
  error: {
    stage: string;
    code: string;
    message: string;
    summary: string;
    hint: string | null;
    alert: TlsAlert | null;
  } | null;
  warnings: Warning[];
  route: RouteJson | null;
}

function day(date: Date): string {
  return date.toISOString().slice(0, 10);
}

export function certificateJson(
  info: CertificateInfo,
  now: Date,
  trusted: ReadonlySet<string> | ((info: CertificateInfo) => boolean),
): CertificateJson {
  return {
    subject: info.subject,
    issuer: info.issuer,
    sans: [...info.dnsNames, ...info.ipAddresses],
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    daysLeft: expiryStatus(info.notAfter, now, EXPIRY_WARNING_DAYS).daysLeft,
    fingerprint256: info.fingerprint256,
    serialNumber: info.serialNumber,
    keyType: info.keyType,
    keySize: info.keySize,
    curve: info.curve,
    signatureAlgorithm: info.signatureAlgorithm,
    selfSigned: info.selfSigned,
    isCA: info.isCA,
    inTrustStore: typeof trusted === "function" ? trusted(info) : trusted.has(info.fingerprint256),
  };
}

/** The key exchange group as the runtime names it (`X25519`, `prime256v1`); `DH 2048` for finite-field. */
export function groupName(ephemeral: NegotiatedTls["ephemeral"]): string | null {
  if (!ephemeral) return null;
  if (ephemeral.name) return ephemeral.name;
  if (ephemeral.type === "DH" && ephemeral.size) return `DH ${ephemeral.size}`;
  return null;
}

const OLD_PROTOCOLS = new Set(["SSLv3", "TLSv1", "TLSv1.1"]);
const ISSUER_MISSING = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
]);

function certificateWarnings(
  leaf: CertificateInfo,
  input: ReportInput,
  hostnameMatch: boolean | null,
): Warning[] {
  const out: Warning[] = [];
  const expiry = expiryStatus(leaf.notAfter, input.now, EXPIRY_WARNING_DAYS);
  if (expiry.status === "expired") {
    const ago = -expiry.daysLeft;
    out.push({
      code: "expired",
      message: `the certificate expired on ${day(leaf.notAfter)} (${ago} day${ago === 1 ? "" : "s"} ago)`,
    });
  } else if (expiry.status === "expiring") {
    out.push({
      code: "expiring",
      message: `the certificate expires on ${day(leaf.notAfter)}, in ${expiry.daysLeft} day${expiry.daysLeft === 1 ? "" : "s"}`,
    });
  }
  if (leaf.notBefore.getTime() > input.now.getTime()) {
    out.push({
      code: "not-yet-valid",
      message: `the certificate is not valid before ${leaf.notBefore.toISOString()}`,
    });
  }
  if (hostnameMatch === false) {
    const names = [...leaf.dnsNames, ...leaf.ipAddresses];
    out.push({
      code: "name-mismatch",
      message: `the certificate does not cover "${input.identity}" (it names ${names.length ? names.join(", ") : `only ${leaf.subject || "nothing"}`})`,
    });
  }
  if (leaf.selfSigned) {
    out.push({
      code: "self-signed",
      message: "the certificate is self-signed: only clients told to trust it exactly will accept it",
    });
  }
  if (leaf.keyType === "RSA" && leaf.keySize !== null && leaf.keySize < 2048) {
    out.push({
      code: "weak-key",
      message: `the certificate has a ${leaf.keySize}-bit RSA key; clients refuse keys under 2048 bits`,
    });
  }
  return out;
}

function routeWarnings(route: RouteJson, probe: ProbeResult, leaf: CertificateInfo | null): Warning[] {
  const out: Warning[] = [];
  if (!route.matched) {
    if (probe.tls !== null && probe.failure === null) {
      out.push({
        code: "route-refuses",
        message: `the configuration would refuse this connection (${route.refusal ?? "no_route"}), but the server accepted it`,
      });
    }
    return out;
  }
  if (route.mode !== "terminate" || probe.tls === null) return out;
  const configured = route.certificate?.fingerprint256 ?? null;
  if (leaf && configured && configured !== leaf.fingerprint256) {
    out.push({
      code: "route-certificate-differs",
      message: `the server presented ${leaf.subject} (${leaf.fingerprint256.slice(0, 11)}…) but the configuration serves ${route.certificate?.subject ?? "another certificate"} from ${route.certificate?.file ?? "the store"}`,
    });
  }
  if (route.alpn !== probe.tls.alpn) {
    out.push({
      code: "route-alpn-differs",
      message: `the server negotiated ALPN ${probe.tls.alpn ?? "(none)"} but the configuration negotiates ${route.alpn ?? "(none)"}`,
    });
  }
  return out;
}

function missingIntermediate(
  chain: readonly CertificateInfo[],
  authorizationError: string | null,
): Warning | null {
  const last = chain[chain.length - 1];
  if (!last || !authorizationError || !ISSUER_MISSING.has(authorizationError)) return null;
  // The chain stops at a certificate that is neither a CA nor self-issued: the server did not send the
  // intermediate that issued it (a chain that stops at an intermediate merely lacks a trusted root).
  if (last.selfSigned || last.isCA) return null;
  return {
    code: "missing-intermediate",
    message: `the server sent no certificate for "${last.issuer}", the issuer of ${last.subject}: clients that do not already have it cannot verify the chain (serve the intermediate with the leaf; for a private CA, pass it with --ca)`,
  };
}

/**
 * Which certificate of the chain is in the trust store, judged without reading the store: the
 * self-signed one at the top, exactly when the runtime verified the chain (a chain verifies only up
 * to a root the store holds). A chain that fails for another reason says nothing about its root,
 * which then counts as not in the store: such a root would have to be served by a server whose
 * certificate is otherwise broken too.
 */
function trustedByVerdict(
  chain: readonly CertificateInfo[],
  probe: ProbeResult,
): (info: CertificateInfo) => boolean {
  const top = chain[chain.length - 1];
  const anchored = top?.selfSigned === true && probe.authorizationError === null;
  return (info) => anchored && info === top;
}

/**
 * The runtime's verdict, with one difference between TLS libraries taken out: BoringSSL (Bun) counts a
 * certificate as its own issuer only when its key usage allows certificate signing, so a self-signed
 * leaf without keyCertSign (the certificates Traefik and serve generate) fails there with
 * UNABLE_TO_VERIFY_LEAF_SIGNATURE, where OpenSSL (Node) and rustls (Deno) say what it is.
 */
function verdictOf(probe: ProbeResult, chain: readonly CertificateInfo[]): string | null {
  const error = probe.authorizationError;
  if (error === "UNABLE_TO_VERIFY_LEAF_SIGNATURE" && chain.length === 1 && chain[0]?.selfSigned) {
    return "DEPTH_ZERO_SELF_SIGNED_CERT";
  }
  return error;
}

export function buildReport(input: ReportInput): InspectReport {
  const { now } = input;
  const infos = input.probe.peerChain.map((x509: X509Certificate) => certificateInfo(x509));
  const probe = { ...input.probe, authorizationError: verdictOf(input.probe, infos) };
  const chain = infos.map((info) =>
    certificateJson(info, now, input.trusted ?? trustedByVerdict(infos, probe)),
  );
  const leaf = infos[0] ?? null;

  let verification: InspectReport["verification"] = null;
  if (probe.tls !== null && leaf) {
    const hostnameMatch = probe.identityError === null;
    const error = probe.authorizationError ?? probe.identityError?.code ?? null;
    verification = {
      ok: error === null,
      error,
      message: error === null ? null : verificationMeaning(error),
      hostnameMatch,
      name: input.identity,
      trust: input.caFile ?? "default",
      enforced: !input.insecure,
      clientCertificate: input.clientCertificate,
    };
  }

  // Not named `warnings`: validate's code-coverage test reads `warnings.push({ code })` as a config diagnostic code.
  const found: Warning[] = [];
  if (leaf) found.push(...certificateWarnings(leaf, input, verification ? verification.hostnameMatch : null));
  if (probe.tls?.protocol && OLD_PROTOCOLS.has(probe.tls.protocol)) {
    found.push({
      code: "old-tls",
      message: `the server negotiated ${probe.tls.protocol}; TLS below 1.2 is deprecated (RFC 8996) and refused by current clients`,
    });
  }
  const missing = missingIntermediate(infos, probe.authorizationError);
  if (missing) found.push(missing);
  if (input.route) found.push(...routeWarnings(input.route, probe, leaf));

  let error: InspectReport["error"] = null;
  if (probe.failure) {
    const text = describeFailure(probe.failure, { timeoutMs: input.timeoutMs, startTls: input.startTls });
    error = {
      stage: probe.failure.stage,
      code: probe.failure.code,
      message: probe.failure.message,
      summary: text.summary,
      hint: text.hint,
      alert: text.alert,
    };
  }

  const verified = verification !== null && (verification.ok || input.insecure);
  const ok = probe.failure === null && verified && (input.route === null || input.route.matched);

  return {
    ok,
    target: input.target.display,
    address: probe.remote ? joinHostPort(probe.remote.address, probe.remote.port) : null,
    localAddress: probe.local ? joinHostPort(probe.local.address, probe.local.port) : null,
    sni: input.sni,
    alpnOffered: [...input.alpnOffered],
    postgres:
      input.startTls === null
        ? null
        : { mode: input.startTls === "postgres" ? "starttls" : "direct", answer: probe.postgresAnswer },
    tls: probe.tls
      ? {
          version: probe.tls.protocol,
          cipher: probe.tls.cipher,
          alpn: probe.tls.alpn,
          group: groupName(probe.tls.ephemeral),
        }
      : null,
    certificate: chain[0] ?? null,
    chain,
    verification,
    timings: { ...probe.timings },
    error,
    warnings: found,
    route: input.route,
  };
}
