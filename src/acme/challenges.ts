/**
 * TLS-ALPN-01 challenge certificates in flight (RFC 8737): while the CA validates a name, a
 * connection offering ALPN `acme-tls/1` with that SNI must get this self-signed certificate, whose
 * acmeIdentifier extension carries the digest of the key authorization. Process-wide, because the
 * CA's connection may arrive on any entry point, under any configuration snapshot.
 */

export interface ChallengeCertificate {
  /** Unique per challenge, so a terminator made for it is never reused for another. */
  id: string;
  certPem: string;
  keyPem: string;
}

export class ChallengeStore {
  private readonly byName = new Map<string, ChallengeCertificate>();

  set(name: string, certificate: ChallengeCertificate): void {
    this.byName.set(name.toLowerCase(), certificate);
  }

  delete(name: string, id?: string): void {
    const key = name.toLowerCase();
    // A newer challenge for the same name may have replaced this one meanwhile; keep it.
    if (id && this.byName.get(key)?.id !== id) return;
    this.byName.delete(key);
  }

  get(name: string): ChallengeCertificate | undefined {
    return this.byName.get(name);
  }

  get size(): number {
    return this.byName.size;
  }
}
