/**
 * Storage files in Traefik's acme.json layout, written the way Traefik writes them (base64 of the PEM
 * text for certificates and keys), so tests feed tlsroute what a user migrating from Traefik has.
 */
import { writeFileSync } from "node:fs";

export interface TraefikCertificateEntry {
  domain: { main: string; sans?: string[] };
  certificate: string;
  key: string;
  Store: string;
}

export interface TraefikResolverSection {
  Account: unknown;
  Certificates: TraefikCertificateEntry[] | null;
}

/** One stored certificate: PEM chain and key as Traefik keeps them. */
export function certificateEntry(
  main: string,
  certPem: string,
  keyPem: string,
  options: { sans?: string[]; store?: string } = {},
): TraefikCertificateEntry {
  return {
    domain: { main, ...(options.sans ? { sans: options.sans } : {}) },
    certificate: Buffer.from(certPem, "utf8").toString("base64"),
    key: Buffer.from(keyPem, "utf8").toString("base64"),
    Store: options.store ?? "default",
  };
}

/** Writes `{ "<resolver>": { Account, Certificates } }` with mode 0600, as Traefik does. */
export function writeTraefikAcmeJson(file: string, sections: Record<string, TraefikResolverSection>): void {
  writeFileSync(file, `${JSON.stringify(sections, null, 2)}\n`, { mode: 0o600 });
}
