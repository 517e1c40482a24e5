/**
 * Host-name helpers shared by the HostSNI matchers and by `serve`, which must canonicalise a real
 * ClientHello's server name exactly as the rules expect it.
 */
import { domainToASCII } from "node:url";

/** Characters Go's unicode.IsSpace accepts (strings.TrimSpace trims these, and only these). */
const goSpaces = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005,
  0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

function goTrimSpace(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && goSpaces.has(s.charCodeAt(start))) start++;
  while (end > start && goSpaces.has(s.charCodeAt(end - 1))) end--;
  return s.slice(start, end);
}

/** Go's strings.ToLower: a one-to-one mapping per code point (JavaScript's may lengthen text). */
function goToLower(s: string): string {
  if (isAscii(s)) return s.toLowerCase();
  let out = "";
  for (const ch of s) {
    const lower = ch.toLowerCase();
    if ([...lower].length === 1) out += lower;
    else if (ch === "\u0130") out += "i";
    else out += ch;
  }
  return out;
}

/** Lowercase and trim the SNI, as Traefik does with the server name of a ClientHello. */
export function canonicalSni(raw: string): string {
  return goToLower(goTrimSpace(raw));
}

export function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** v3 HostSNI values: an optional leading `*.` label, then word characters, dots, dashes, colons. */
export const hostSniV3Pattern = /^(\*\.)?[A-Za-z0-9_.\-:]+$/;
/** v2 HostSNI values: no wildcard form at all (`*` alone is handled before). */
export const hostSniV2Pattern = /^[A-Za-z0-9_.\-:]+$/;

/** The A-label (punycode) form of an internationalised name, or null when there is none. */
export function toALabel(name: string): string | null {
  const wildcard = name.startsWith("*.");
  const ascii = domainToASCII(wildcard ? name.slice(2) : name);
  if (ascii === "") return null;
  return wildcard ? `*.${ascii}` : ascii;
}

/** A hint for a HostSNI value that the host-name pattern refused. */
export function invalidHostHint(value: string, syntax: "v2" | "v3"): string | undefined {
  if (syntax === "v2" && value.startsWith("*.")) {
    return "ruleSyntax v2 has no `*.` wildcard: use ruleSyntax v3, or HostSNIRegexp(`{sub:[^.]+}.example.com`)";
  }
  if (value.includes("*")) {
    return "a wildcard must be the whole first label, as in `*.example.com` (one label only); for anything else use HostSNIRegexp";
  }
  if (/^\[.*\]$/.test(value)) return "write an IPv6 address without brackets, e.g. HostSNI(`::1`)";
  if (value.includes("://") || value.includes("/")) return "HostSNI takes a host name, not a URL or a path";
  if (/[\s,;|]/.test(value)) return "give one host name per HostSNI and join them with ||";
  if (value.trim() === "") return undefined;
  return "a host name may contain only letters, digits, '.', '-', '_' and ':'";
}
