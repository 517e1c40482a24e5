/**
 * The ACME storage file, in Traefik's `acme.json` layout so stored accounts and certificates move
 * between Traefik and tlsroute in both directions:
 *
 *   { "<resolver>": { "Account": { "Email", "Registration": { "body", "uri" }, "PrivateKey", "KeyType" },
 *                     "Certificates": [ { "domain": { "main", "sans" }, "certificate", "key", "Store" } ] } }
 *
 * `PrivateKey` is the account's RSA key as base64 PKCS#1 DER (what Go's x509 package writes);
 * `certificate` and `key` are base64 of the PEM text. Several resolvers may share one file, so a save
 * rewrites only its own resolver's section and keeps everything else as it was read.
 *
 * Writes are atomic: a temporary file in the same directory (mode 0600) is written, flushed to disk,
 * and renamed over the real one, so a crash leaves either the old file or the new one, never half.
 */
import {
  closeSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";

export interface StoredDomain {
  main: string;
  sans: string[];
}

export interface StoredCertificate {
  domain: StoredDomain;
  /** PEM chain, leaf first. */
  certPem: string;
  keyPem: string;
  store: string;
}

export interface StoredAccount {
  email: string;
  /** The account URL the CA gave at registration ("" before registration). */
  uri: string;
  /** Registration body as the CA returned it; kept verbatim. */
  body: unknown;
  /** RSA account key, PKCS#1 DER. */
  privateKeyDer: Buffer;
  /** lego's key type name for certificates: "P256", "P384", "2048", "4096". */
  keyType: string;
}

export interface ResolverStorage {
  account: StoredAccount | null;
  certificates: StoredCertificate[];
}

export type ReadResult =
  | { ok: true; storage: ResolverStorage; exists: boolean }
  | { ok: false; message: string };

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function readWholeFile(path: string): { ok: true; data: Json | null } | { ok: false; message: string } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { ok: true, data: null };
    return { ok: false, message: `cannot read ${path}: ${(err as Error).message}` };
  }
  // Traefik creates an empty file before its first write; that means "nothing stored yet".
  if (text.trim() === "") return { ok: true, data: null };
  try {
    const data: unknown = JSON.parse(text);
    if (!isObject(data)) return { ok: false, message: `${path} is not a JSON object` };
    return { ok: true, data };
  } catch (err) {
    return { ok: false, message: `${path} is not valid JSON: ${(err as Error).message}` };
  }
}

function decodeBase64Text(value: unknown): string | null {
  if (typeof value !== "string" || value === "") return null;
  return Buffer.from(value, "base64").toString("utf8");
}

function parseAccount(value: unknown): StoredAccount | null {
  if (!isObject(value) || typeof value.PrivateKey !== "string" || value.PrivateKey === "") return null;
  const registration = isObject(value.Registration) ? value.Registration : null;
  return {
    email: typeof value.Email === "string" ? value.Email : "",
    uri: typeof registration?.uri === "string" ? registration.uri : "",
    body: registration?.body ?? null,
    privateKeyDer: Buffer.from(value.PrivateKey, "base64"),
    keyType: typeof value.KeyType === "string" ? value.KeyType : "",
  };
}

function parseCertificate(value: unknown): StoredCertificate | null {
  if (!isObject(value)) return null;
  const domain = isObject(value.domain) ? value.domain : {};
  const certPem = decodeBase64Text(value.certificate);
  const keyPem = decodeBase64Text(value.key);
  if (!certPem || !keyPem) return null;
  return {
    domain: {
      main: typeof domain.main === "string" ? domain.main : "",
      sans: Array.isArray(domain.sans) ? domain.sans.filter((s): s is string => typeof s === "string") : [],
    },
    certPem,
    keyPem,
    store: typeof value.Store === "string" && value.Store !== "" ? value.Store : "default",
  };
}

/** One resolver's section of a storage file; a missing file or section is empty storage. */
export function readResolverStorage(path: string, resolver: string): ReadResult {
  const file = readWholeFile(path);
  if (!file.ok) return file;
  const section = file.data?.[resolver];
  if (!isObject(section)) return { ok: true, storage: { account: null, certificates: [] }, exists: false };
  const certificates = Array.isArray(section.Certificates)
    ? section.Certificates.map(parseCertificate).filter((c): c is StoredCertificate => c !== null)
    : [];
  return { ok: true, storage: { account: parseAccount(section.Account), certificates }, exists: true };
}

function encodeSection(storage: ResolverStorage): Json {
  const account = storage.account;
  return {
    Account: account
      ? {
          Email: account.email,
          Registration: account.uri ? { body: account.body ?? {}, uri: account.uri } : null,
          PrivateKey: account.privateKeyDer.toString("base64"),
          KeyType: account.keyType,
        }
      : null,
    Certificates: storage.certificates.map((c) => ({
      domain: { main: c.domain.main, ...(c.domain.sans.length > 0 ? { sans: c.domain.sans } : {}) },
      certificate: Buffer.from(c.certPem, "utf8").toString("base64"),
      key: Buffer.from(c.keyPem, "utf8").toString("base64"),
      Store: c.store,
    })),
  };
}

/** Writes `text` to `path` atomically with mode 0600 (see the module comment). */
export function writeFileAtomic(path: string, text: string): void {
  const temporary = join(dirname(path), `.${process.pid}.${Date.now()}.tmp-${basenameOf(path)}`);
  const fd = openSync(temporary, "w", 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkQuietly(temporary);
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(temporary, path);
  } catch (err) {
    unlinkQuietly(temporary);
    throw err;
  }
  removeStaleTemporaries(path);
  // The rename itself must reach the disk too, or a power cut could bring the old name back.
  try {
    const dir = openSync(dirname(path), "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch {
    // Some file systems refuse fsync on directories; the rename is still atomic for readers.
  }
}

/**
 * Temporary files a killed process left behind hold keys; they go once a later write succeeds. Only
 * those older than a minute, so another process's write in progress is never touched.
 */
function removeStaleTemporaries(path: string): void {
  const suffix = `.tmp-${basenameOf(path)}`;
  const dir = dirname(path);
  try {
    for (const name of readdirSync(dir)) {
      if (!name.startsWith(".") || !name.endsWith(suffix)) continue;
      const file = join(dir, name);
      if (Date.now() - statSync(file).mtimeMs > 60_000) unlinkQuietly(file);
    }
  } catch {
    // Cleaning up is a courtesy; the write itself succeeded.
  }
}

function basenameOf(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

/**
 * Saves one resolver's section. The file is read again right before writing, so sections of other
 * resolvers (or fields tlsroute does not know) written meanwhile are kept. Synchronous on purpose:
 * two saves in one process can then never interleave their read and write.
 */
export function writeResolverStorage(path: string, resolver: string, storage: ResolverStorage): void {
  const file = readWholeFile(path);
  // A file we cannot read is not overwritten: it may hold another resolver's only copy of its keys.
  if (!file.ok) throw new Error(file.message);
  const data: Json = { ...(file.data ?? {}) };
  data[resolver] = encodeSection(storage);
  writeFileAtomic(path, `${JSON.stringify(data, null, 2)}\n`);
}
