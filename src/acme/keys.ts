/**
 * Key types of ACME certificates and accounts. Certificate keys follow the resolver's `keyType`
 * (Traefik's names); the account key is RSA 4096 stored as PKCS#1 DER, as Traefik stores it, so
 * either tool can pick up the other's account.
 */
import { createPrivateKey, generateKeyPair, type KeyObject } from "node:crypto";
import { promisify } from "node:util";

const generate = promisify(generateKeyPair);

export interface AcmeKeyType {
  kind: "ec" | "rsa";
  /** EC curve name or RSA modulus bits. */
  size: "P-256" | "P-384" | number;
  /** The name Traefik (lego) writes to acme.json's KeyType. */
  storedName: string;
}

export const ACME_KEY_TYPES: Record<string, AcmeKeyType> = {
  EC256: { kind: "ec", size: "P-256", storedName: "P256" },
  EC384: { kind: "ec", size: "P-384", storedName: "P384" },
  RSA2048: { kind: "rsa", size: 2048, storedName: "2048" },
  RSA4096: { kind: "rsa", size: 4096, storedName: "4096" },
  RSA8192: { kind: "rsa", size: 8192, storedName: "8192" },
};

/** tlsroute's default: P-256 keys make the fastest handshakes and every current client accepts them. */
export const DEFAULT_KEY_TYPE = "EC256";

export function keyTypeOf(name: string | undefined | null): AcmeKeyType {
  // hasOwn, not a plain lookup: "constructor" or "toString" must not find Object's prototype.
  const key = name && Object.hasOwn(ACME_KEY_TYPES, name) ? name : DEFAULT_KEY_TYPE;
  return ACME_KEY_TYPES[key]!;
}

/** A new certificate private key, PEM (PKCS#8). */
export async function newCertificateKey(type: AcmeKeyType): Promise<string> {
  const pair =
    type.kind === "ec"
      ? await generate("ec", { namedCurve: String(type.size) })
      : await generate("rsa", { modulusLength: Number(type.size) });
  return pemOf(pair.privateKey);
}

/** A new account key: RSA 4096, returned as PKCS#1 DER for storage. */
export async function newAccountKey(): Promise<Buffer> {
  const pair = await generate("rsa", { modulusLength: 4096 });
  return pair.privateKey.export({ type: "pkcs1", format: "der" });
}

/** The stored account key as PEM for the ACME client; RSA (PKCS#1 DER) or, leniently, PKCS#8/SEC1. */
export function accountKeyPem(der: Buffer): string {
  for (const type of ["pkcs1", "pkcs8", "sec1"] as const) {
    try {
      return pemOf(createPrivateKey({ key: der, format: "der", type }));
    } catch {
      // Try the next encoding.
    }
  }
  throw new Error("the stored account key is not an RSA or EC private key");
}

function pemOf(key: KeyObject): string {
  return String(key.export({ type: "pkcs8", format: "pem" }));
}
