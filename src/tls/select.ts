/**
 * Which certificate answers a TLS client: the one pure function `serve`, `explain` and `inspect` share.
 *
 * Traefik's rule (reference §3.8): the name is the SNI, or the local IP of the socket when the client sent
 * none. A certificate matches when one of its names equals the name, or equals the name with its first
 * label replaced by `*` (a certificate name's trailing dots are ignored for that wildcard comparison
 * only). Among matching certificates the one whose key — its sorted names joined with "," — is the
 * greatest wins; of two certificates with the same key only the first was ever added to the store.
 *
 * Traefik scans every certificate on a cache miss. Here two hash maps are built once, name → best
 * certificate and wildcard → best certificate, so a lookup is two map reads whatever the store size.
 * That gives the same answer: the best of all matching certificates is the better of the best exact
 * match and the best wildcard match.
 */

export interface StoreCertificate {
  id: string;
  /** CN + DNS SANs + IP SANs; lowercased (lowercased again here, to be safe). */
  names: string[];
  [k: string]: unknown;
}

export type CertificateMatch = "exact" | "wildcard";

export type CertificateChoice<C> =
  | { kind: "store"; cert: C; match: CertificateMatch; name: string }
  /** No store certificate fits: serve the configured default certificate, else the generated one. */
  | { kind: "default"; reason: "no-sni" | "no-match"; name: string }
  | { kind: "refused"; reason: "sni-strict"; name: string };

/**
 * Compares strings by Unicode code point, i.e. the byte order of their UTF-8 forms, which is how Go's
 * `sort.Strings` orders Traefik's keys. (JavaScript's `<` compares UTF-16 units, which differs for
 * characters beyond U+FFFF.)
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

// Surrogates (U+D800–DFFF, which encode code points ≥ U+10000) must sort after U+E000–FFFF.
function codePointRank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

/** Traefik's store key for a certificate: its lowercased names, deduplicated, sorted, joined with ",". */
export function certificateKey(names: readonly string[]): string {
  return [...new Set(names.map((n) => n.toLowerCase()))].sort(compareCodePoints).join(",");
}

/** `name` with its first label replaced by `*`: `a.b.example` → `*.b.example`, `localhost` → `*`. */
export function wildcardOf(name: string): string {
  const dot = name.indexOf(".");
  return dot < 0 ? "*" : `*${name.slice(dot)}`;
}

function stripTrailingDots(name: string): string {
  let end = name.length;
  while (end > 0 && name.charCodeAt(end - 1) === 0x2e) end--;
  return name.slice(0, end);
}

/** How one certificate name matches `name` (both lowercased), following Traefik's comparison. */
export function matchCertificateName(certName: string, name: string): CertificateMatch | null {
  if (certName === name) return "exact";
  return stripTrailingDots(certName) === wildcardOf(name) ? "wildcard" : null;
}

interface Entry<C> {
  cert: C;
  key: string;
}

// Keys are unique in the index (a repeated key is shadowed at construction), so no tie-break is needed.
function better<C>(a: Entry<C> | undefined, b: Entry<C> | undefined): Entry<C> | undefined {
  if (!a) return b;
  if (!b) return a;
  return compareCodePoints(a.key, b.key) >= 0 ? a : b;
}

export class CertificateIndex<C extends StoreCertificate> {
  /** Certificates never selectable because an earlier one has the same key (Traefik skips them too). */
  readonly shadowed: ReadonlyArray<{ cert: C; by: C }>;
  readonly size: number;
  private readonly exact = new Map<string, Entry<C>>();
  private readonly wildcard = new Map<string, Entry<C>>();
  private readonly keys = new Map<C, string>();

  constructor(certs: readonly C[]) {
    const byKey = new Map<string, Entry<C>>();
    const shadowed: Array<{ cert: C; by: C }> = [];
    for (const cert of certs) {
      const key = certificateKey(cert.names);
      const first = byKey.get(key);
      if (first) {
        shadowed.push({ cert, by: first.cert });
        continue;
      }
      const entry: Entry<C> = { cert, key };
      byKey.set(key, entry);
      this.keys.set(cert, key);
      // Traefik matches against the parts of the key, so a name containing "," counts as several names
      // and a certificate without names has the single name "".
      for (const raw of key.split(",")) {
        this.exact.set(raw, better(this.exact.get(raw), entry) ?? entry);
        // Only a name starting with "*" can equal a wildcardOf() result.
        const pattern = stripTrailingDots(raw);
        if (pattern.startsWith("*"))
          this.wildcard.set(pattern, better(this.wildcard.get(pattern), entry) ?? entry);
      }
    }
    this.shadowed = shadowed;
    this.size = byKey.size;
  }

  /** The certificate Traefik would pick for `name` (lowercased, trimmed), or null. */
  lookup(name: string): { cert: C; match: CertificateMatch } | null {
    const exact = this.exact.get(name);
    const wild = this.wildcard.get(wildcardOf(name));
    const best = better(exact, wild);
    if (!best) return null;
    return { cert: best.cert, match: best === exact ? "exact" : "wildcard" };
  }

  /** The store key of an indexed certificate (undefined for shadowed or foreign ones). */
  keyOf(cert: C): string | undefined {
    return this.keys.get(cert);
  }
}

/**
 * A local address as Go reports it: a dual-stack socket shows IPv4 clients as `::ffff:a.b.c.d`, which
 * Go (and so Traefik) sees as plain `a.b.c.d`; IPv6 hex is lower case.
 */
export function canonicalLocalIp(ip: string): string {
  const trimmed = ip.trim().toLowerCase();
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/.exec(trimmed);
  return mapped?.[1] ?? trimmed;
}

export function chooseCertificate<C extends StoreCertificate>(
  index: CertificateIndex<C>,
  input: { sni: string; localIp: string; sniStrict: boolean },
): CertificateChoice<C> {
  const sni = input.sni.trim().toLowerCase();
  const name = sni !== "" ? sni : canonicalLocalIp(input.localIp);
  const found = index.lookup(name);
  if (found) return { kind: "store", cert: found.cert, match: found.match, name };
  if (input.sniStrict) return { kind: "refused", reason: "sni-strict", name };
  return { kind: "default", reason: sni === "" ? "no-sni" : "no-match", name };
}
