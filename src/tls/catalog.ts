/**
 * The certificate catalog: every certificate the configuration names, read from disk (or inline
 * PEM), checked (parses, key matches, dates) and indexed for selection by name. Validate reports
 * what it finds; explain and serve use the same index, so they choose the same certificate.
 */
import type { CertificateFiles, Model } from "../config/model.ts";
import { DEFAULT_TLS_STORE } from "../config/model.ts";
import type { Diagnostics } from "../config/reader.ts";
import type { ServedCertificate } from "../routing/decide.ts";
import { type CertificateInfo, checkLeafKey, expiryStatus, parseCertificateChain } from "./certificate.ts";
import { describePemSource, readPem, resolvePemSource } from "./pem.ts";
import { CertificateIndex } from "./select.ts";

export interface LoadedCertificate extends ServedCertificate {
  certPem: string;
  keyPem: string;
  /** Leaf first, then the intermediates as the file lists them. */
  chain: CertificateInfo[];
}

export interface CertificateCatalog {
  certificates: LoadedCertificate[];
  index: CertificateIndex<LoadedCertificate>;
  defaultCertificate: LoadedCertificate | null;
}

export interface CatalogOptions {
  now: Date;
  /** Days before expiry that make a warning. */
  warnDays: number;
}

/** Reads one PEM value (path or inline), reporting a missing or unreadable file at its position. */
export function readPemValue(
  value: { value: string; pos: import("../config/located.ts").SourcePos },
  baseDir: string,
  path: string,
  what: string,
  diags: Diagnostics,
): { text: string; label: string } | null {
  const source = resolvePemSource(value.value, baseDir);
  const text = readPem(source);
  if (!text.ok) {
    diags.error(
      text.code === "file-not-found" ? "file-not-found" : "file-unreadable",
      `${what}: ${text.message}`,
      value.pos,
      path,
      text.code === "file-not-found"
        ? "Paths are relative to the file that names them; inline PEM must start with -----BEGIN."
        : undefined,
    );
    return null;
  }
  return { text: text.value, label: source.kind === "file" ? source.path : describePemSource(source) };
}

export function loadCertificate(
  files: CertificateFiles,
  what: string,
  options: CatalogOptions,
  diags: Diagnostics,
): LoadedCertificate | null {
  if (!files.certFile || !files.keyFile) {
    diags.error(
      "certificate-incomplete",
      `${what} needs both certFile and keyFile`,
      files.pos,
      files.path,
      `Add ${files.certFile ? "keyFile" : "certFile"} (a path or inline PEM).`,
    );
    return null;
  }
  const cert = readPemValue(
    files.certFile,
    files.baseDir,
    `${files.path}.certFile`,
    `${what} certFile`,
    diags,
  );
  const key = readPemValue(files.keyFile, files.baseDir, `${files.path}.keyFile`, `${what} keyFile`, diags);
  if (!cert || !key) return null;
  const chain = parseCertificateChain(cert.text);
  if (!chain.ok) {
    diags.error(
      "invalid-certificate",
      `${what} ${cert.label}: ${chain.message}`,
      files.certFile.pos,
      `${files.path}.certFile`,
    );
    return null;
  }
  const leaf = chain.value[0]!;
  // The leaf parsed above, not the PEM again: parsing each certificate once is a third of validate's time.
  const match = checkLeafKey(leaf, key.text);
  if (!match.ok) {
    diags.error(
      match.code === "key-mismatch" ? "key-mismatch" : "invalid-key",
      `${what} ${key.label}: ${match.message}`,
      files.keyFile.pos,
      `${files.path}.keyFile`,
    );
    return null;
  }
  checkDates(leaf, what, cert.label, files, options, diags);
  if (leaf.keyType === "RSA" && leaf.keySize !== null && leaf.keySize < 2048) {
    diags.warning(
      "weak-key",
      `${what} ${cert.label} has a ${leaf.keySize}-bit RSA key; clients refuse keys under 2048 bits`,
      files.certFile.pos,
      `${files.path}.certFile`,
      "Issue a new certificate with an RSA 2048+ or ECDSA P-256 key.",
    );
  }
  return catalogEntry(chain.value, cert.label, cert.text, key.text);
}

/** A certificate whose chain parsed and whose key matched, as the catalog (and decide) sees it. */
export function catalogEntry(
  chain: CertificateInfo[],
  label: string,
  certPem: string,
  keyPem: string,
): LoadedCertificate {
  const leaf = chain[0]!;
  return {
    id: `${label}#${leaf.fingerprint256}`,
    names: leaf.names,
    subject: leaf.subject,
    sans: [...leaf.dnsNames, ...leaf.ipAddresses],
    notAfter: leaf.notAfter,
    source: label,
    certPem,
    keyPem,
    chain,
  };
}

function checkDates(
  leaf: CertificateInfo,
  what: string,
  label: string,
  files: CertificateFiles,
  options: CatalogOptions,
  diags: Diagnostics,
): void {
  const pos = files.certFile?.pos ?? files.pos;
  const path = `${files.path}.certFile`;
  const expiry = expiryStatus(leaf.notAfter, options.now, options.warnDays);
  const day = leaf.notAfter.toISOString().slice(0, 10);
  if (expiry.status === "expired") {
    diags.error(
      "certificate-expired",
      `${what} ${label} (${leaf.subject}) expired on ${day}`,
      pos,
      path,
      "Renew it.",
    );
  } else if (expiry.status === "expiring") {
    diags.warning(
      "certificate-expiring",
      `${what} ${label} (${leaf.subject}) expires in ${expiry.daysLeft} day${expiry.daysLeft === 1 ? "" : "s"}, on ${day}`,
      pos,
      path,
      "Renew it soon.",
    );
  }
  if (leaf.notBefore.getTime() > options.now.getTime()) {
    diags.warning(
      "certificate-not-yet-valid",
      `${what} ${label} is not valid before ${leaf.notBefore.toISOString()}`,
      pos,
      path,
    );
  }
}

export function loadCatalog(model: Model, options: CatalogOptions, diags: Diagnostics): CertificateCatalog {
  const certificates: LoadedCertificate[] = [];
  model.certificates.forEach((files, i) => {
    for (const store of files.stores) {
      if (store.value !== DEFAULT_TLS_STORE) {
        diags.warning(
          "store-ignored",
          `tls.certificates[${i}] names store "${store.value}"; only the "default" store is used to serve certificates`,
          store.pos,
          `${files.path}.stores`,
          "Remove stores, or use default.",
        );
      }
    }
    const loaded = loadCertificate(files, `certificate #${i + 1}`, options, diags);
    if (loaded) certificates.push(loaded);
  });
  let defaultCertificate: LoadedCertificate | null = null;
  for (const store of model.tlsStores.values()) {
    if (store.name !== DEFAULT_TLS_STORE) {
      diags.warning(
        "store-ignored",
        `TLS store "${store.name}" is never used: only the "default" store serves certificates`,
        store.pos,
        store.path,
        "Move its default certificate to tls.stores.default.",
      );
      continue;
    }
    if (store.defaultCertificate) {
      defaultCertificate = loadCertificate(store.defaultCertificate, "default certificate", options, diags);
    }
    if (store.defaultGeneratedCert && !store.defaultCertificate) {
      diags.warning(
        "default-generated-cert-unsupported",
        "tls.stores.default.defaultGeneratedCert is not supported yet; a self-signed certificate is generated instead",
        store.defaultGeneratedCert.pos,
        `${store.path}.defaultGeneratedCert`,
        "Set defaultCertificate to a certificate file instead.",
      );
    }
  }
  return { certificates, index: new CertificateIndex(certificates), defaultCertificate };
}
