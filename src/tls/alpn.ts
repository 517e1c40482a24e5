/**
 * ALPN negotiation as Go's crypto/tls does it, which is what Traefik users get: the server's list
 * is walked in order and the first protocol the client offered wins. When nothing overlaps the
 * handshake fails (no_application_protocol), except when the server speaks h2 and the client offered
 * http/1.1: then the connection goes on with no ALPN.
 */
export type AlpnOutcome = { ok: true; protocol: string | null } | { ok: false };

export function negotiateAlpn(serverProtocols: readonly string[], offered: readonly string[]): AlpnOutcome {
  if (serverProtocols.length === 0 || offered.length === 0) return { ok: true, protocol: null };
  let http11Fallback = false;
  for (const server of serverProtocols) {
    for (const client of offered) {
      if (server === client) return { ok: true, protocol: server };
      if (server === "h2" && client === "http/1.1") http11Fallback = true;
    }
  }
  return http11Fallback ? { ok: true, protocol: null } : { ok: false };
}
