/**
 * Certificates resolvers already hold in their storage files, as catalog entries. Every command
 * loads them, so explain and inspect choose the certificate serve would serve, and validate sees
 * a storage file it could not read before serve tries to write to it.
 */
import { accessSync, constants, statSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { mayWrite } from "../cli/deno-permissions.ts";
import type { AcmeResolver, Model } from "../config/model.ts";
import type { Diagnostics } from "../config/reader.ts";
import { catalogEntry, type LoadedCertificate } from "../tls/catalog.ts";
import { checkLeafKey, parseCertificateChain } from "../tls/certificate.ts";
import { currentRuntime } from "../tls/runtime-support.ts";
import { readResolverStorage, type StoredCertificate } from "./storage.ts";

/** A catalog certificate that came from a resolver's storage. */
export interface ResolverCertificate extends LoadedCertificate {
  resolver: string;
}

export function storagePath(resolver: AcmeResolver): string | null {
  const value = resolver.storage?.value;
  if (!value) return null;
  return isAbsolute(value) ? value : resolve(resolver.baseDir, value);
}

/** A stored certificate as a catalog entry, or why it cannot be one. */
export function toCatalogCertificate(
  stored: StoredCertificate,
  resolver: string,
  label: string,
): { ok: true; cert: ResolverCertificate } | { ok: false; message: string } {
  const chain = parseCertificateChain(stored.certPem);
  if (!chain.ok) return { ok: false, message: chain.message };
  const leaf = chain.value[0]!;
  const key = checkLeafKey(leaf, stored.keyPem);
  if (!key.ok) return { ok: false, message: key.message };
  return { ok: true, cert: { ...catalogEntry(chain.value, label, stored.certPem, stored.keyPem), resolver } };
}

export function storageLabel(path: string, resolver: string): string {
  return `${path} (resolver "${resolver}")`;
}

/** Every usable stored certificate of every resolver; problems become diagnostics. */
export function loadStoredCertificates(model: Model, diags: Diagnostics): ResolverCertificate[] {
  const out: ResolverCertificate[] = [];
  for (const resolver of model.resolvers.values()) {
    const path = storagePath(resolver);
    if (!path || !resolver.storage) continue;
    const where = `${resolver.path}.acme.storage`;
    checkWritable(path, resolver, diags);
    const read = readResolverStorage(path, resolver.name);
    if (!read.ok) {
      diags.error(
        "acme-storage-unreadable",
        `resolver "${resolver.name}": ${read.message}`,
        resolver.storage.pos,
        where,
        "Fix or move the file; tlsroute will not overwrite a storage file it cannot read.",
      );
      continue;
    }
    const label = storageLabel(path, resolver.name);
    for (const stored of read.storage.certificates) {
      if (stored.store !== "default") continue;
      const loaded = toCatalogCertificate(stored, resolver.name, label);
      if (loaded.ok) out.push(loaded.cert);
      else {
        diags.warning(
          "acme-stored-certificate-invalid",
          `resolver "${resolver.name}": the stored certificate for "${stored.domain.main}" cannot be used (${loaded.message}); a new one is requested`,
          resolver.storage.pos,
          where,
        );
      }
    }
  }
  return out;
}

/** The storage file must be creatable (directory writable) or, when it exists, writable itself. */
function checkWritable(path: string, resolver: AcmeResolver, diags: Diagnostics): void {
  const pos = resolver.storage!.pos;
  const where = `${resolver.path}.acme.storage`;
  let exists = false;
  try {
    exists = statSync(path).isFile();
  } catch {
    exists = false;
  }
  const target = exists ? path : dirname(path);
  try {
    statSync(target);
  } catch {
    diags.error(
      "acme-storage-not-writable",
      `resolver "${resolver.name}": the directory of storage file ${path} does not exist`,
      pos,
      where,
      `Create ${dirname(path)}, or point acme.storage somewhere that exists.`,
    );
    return;
  }
  // A new file is written next to the old one and renamed over it, so the directory must be writable too.
  const targets = exists ? [target, dirname(path)] : [target];
  if (currentRuntime() === "deno") {
    // Deno's access() asks for --allow-sys (it reads the uid); its own permission answer stands in.
    // This process's flags say nothing certain about serve's (validate needs no --allow-write), so
    // a warning: serve without the flag still serves what it obtains, from memory.
    if (!targets.every(mayWrite)) {
      diags.warning(
        "deno-storage-not-allowed",
        `resolver "${resolver.name}": this Deno process may not write storage file ${path}; serve needs that permission to keep obtained certificates`,
        pos,
        where,
        `Run serve with --allow-write=${dirname(path)} (the file is written next to itself and renamed over the old one).`,
      );
    }
    return;
  }
  try {
    for (const p of targets) accessSync(p, constants.W_OK);
  } catch {
    diags.error(
      "acme-storage-not-writable",
      `resolver "${resolver.name}": storage file ${path} cannot be written (${exists ? "its directory or the file" : "its directory"} is not writable)`,
      pos,
      where,
      "Give the user running tlsroute write access, or point acme.storage to a writable directory.",
    );
  }
}
