/**
 * IP addresses and CIDR ranges, with Go's parsing rules (net/netip): IPv4 in strict dotted-decimal
 * form (a leading zero in an octet is refused), IPv6 with `::`, embedded IPv4 and an optional zone.
 * Used by the ClientIP matcher and the ipAllowList middleware. Pure: no node:net.
 */

export type IpFamily = 4 | 6;

export interface ParsedAddr {
  family: IpFamily;
  /** 32-bit (IPv4) or 128-bit (IPv6) value. */
  value: bigint;
  /** IPv6 zone after `%`, "" when none. */
  zone: string;
}

export type AddrParse = { ok: true; addr: ParsedAddr } | { ok: false; reason: string };

function fail(reason: string): AddrParse {
  return { ok: false, reason };
}

function parseIPv4(s: string): { ok: true; value: bigint } | { ok: false; reason: string } {
  let value = 0;
  let field = 0;
  let digits = 0;
  let fields = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (digits === 1 && field === 0) return { ok: false, reason: "an IPv4 octet has a leading zero" };
      field = field * 10 + (c - 0x30);
      digits++;
      if (field > 255) return { ok: false, reason: "an IPv4 octet is larger than 255" };
    } else if (c === 0x2e) {
      if (digits === 0) return { ok: false, reason: "an IPv4 octet is empty" };
      if (fields === 3) return { ok: false, reason: "an IPv4 address has only four octets" };
      value = value * 256 + field;
      fields++;
      field = 0;
      digits = 0;
    } else {
      return { ok: false, reason: `unexpected character ${JSON.stringify(s[i])} in an IPv4 address` };
    }
  }
  if (digits === 0) return { ok: false, reason: "an IPv4 octet is empty" };
  if (fields < 3) return { ok: false, reason: "an IPv4 address needs four octets" };
  value = value * 256 + field;
  return { ok: true, value: BigInt(value) };
}

function parseIPv6(input: string): AddrParse {
  let s = input;
  let zone = "";
  const pct = s.indexOf("%");
  if (pct >= 0) {
    zone = s.slice(pct + 1);
    s = s.slice(0, pct);
    if (zone === "") return fail("the zone after % is empty");
  }
  const groups: number[] = []; // 16-bit groups, with the IPv4 tail split into two
  let ellipsis = -1;
  if (s.startsWith("::")) {
    ellipsis = 0;
    s = s.slice(2);
    if (s === "") return { ok: true, addr: { family: 6, value: 0n, zone } };
  }
  while (groups.length < 8) {
    let off = 0;
    let acc = 0;
    for (; off < s.length; off++) {
      const d = Number.parseInt(s[off]!, 16);
      if (Number.isNaN(d) || !/[0-9a-fA-F]/.test(s[off]!)) break;
      if (off > 3) return fail("an IPv6 group has more than four hex digits");
      acc = acc * 16 + d;
    }
    if (off === 0) return fail("an IPv6 group is empty");
    if (off < s.length && s[off] === ".") {
      if (ellipsis < 0 && groups.length !== 6)
        return fail("an embedded IPv4 address must take the last 32 bits");
      if (groups.length + 2 > 8) return fail("there is no room left for an embedded IPv4 address");
      const v4 = parseIPv4(s);
      if (!v4.ok) return fail(v4.reason);
      groups.push(Number(v4.value >> 16n), Number(v4.value & 0xffffn));
      s = "";
      break;
    }
    groups.push(acc);
    s = s.slice(off);
    if (s === "") break;
    if (s[0] !== ":") return fail(`unexpected character ${JSON.stringify(s[0])} in an IPv6 address`);
    if (s.length === 1) return fail("an IPv6 address cannot end with a single colon");
    s = s.slice(1);
    if (s[0] === ":") {
      if (ellipsis >= 0) return fail('an IPv6 address can contain "::" only once');
      ellipsis = groups.length;
      s = s.slice(1);
      if (s === "") break;
    }
  }
  if (s !== "") return fail("unexpected characters after the IPv6 address");
  if (groups.length < 8) {
    if (ellipsis < 0) return fail("an IPv6 address needs eight groups or a ::");
    groups.splice(ellipsis, 0, ...new Array<number>(8 - groups.length).fill(0));
  } else if (ellipsis >= 0) {
    return fail('"::" must stand for at least one group of zeros');
  }
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  return { ok: true, addr: { family: 6, value, zone } };
}

/** Parse an address exactly as Go's netip.ParseAddr does (zones allowed on IPv6). */
export function parseAddr(s: string): AddrParse {
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === ".") {
      const v4 = parseIPv4(s);
      return v4.ok ? { ok: true, addr: { family: 4, value: v4.value, zone: "" } } : fail(v4.reason);
    }
    if (c === ":") return parseIPv6(s);
    if (c === "%") return fail("a zone (%) needs an IPv6 address before it");
  }
  return fail("not an IP address");
}

const MAPPED_PREFIX = 0xffffn;

/** IPv4-mapped IPv6 (`::ffff:a.b.c.d`) to plain IPv4, so both spellings compare equal. */
function unmap(family: IpFamily, value: bigint): { family: IpFamily; value: bigint } {
  if (family === 6 && value >> 32n === MAPPED_PREFIX) return { family: 4, value: value & 0xffffffffn };
  return { family, value };
}

function width(family: IpFamily): number {
  return family === 4 ? 32 : 128;
}

export function formatAddr(family: IpFamily, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((shift) => ((value >> shift) & 0xffn).toString()).join(".");
  }
  if (value >> 32n === MAPPED_PREFIX) return `::ffff:${formatAddr(4, value & 0xffffffffn)}`;
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (at least two) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

interface IpRange {
  /** Family used for matching (IPv4-mapped ranges are stored as IPv4). */
  family: IpFamily;
  network: bigint;
  bits: number;
  /** Canonical text of the range as written (host bits cleared). */
  display: string;
}

function rangeHint(text: string, reason: string): string | undefined {
  if (text.trim() !== text || /[\s,;]/.test(text.trim())) {
    return "give one address or CIDR range per value, without spaces or commas";
  }
  if (/^\[.*\]/.test(text)) return "write IPv6 addresses without brackets";
  if (/^[\d.]+-[\d.]+$/.test(text))
    return "address ranges are not supported; use CIDR notation such as 10.0.0.0/24";
  if (reason.includes("leading zero")) return "write IPv4 octets without leading zeros (Go refuses them)";
  if (text.includes("%")) return "remove the zone (%...): ranges cannot carry one";
  if (reason.includes("prefix length"))
    return "an IPv4 prefix is at most /32 and an IPv6 prefix at most /128";
  if (/^[A-Za-z][A-Za-z0-9.-]*$/.test(text) && !text.includes(":")) {
    return "give an IP address, not a host name: names are not resolved";
  }
  return undefined;
}

function parseRange(text: string): { ok: true; range: IpRange } | { ok: false; reason: string } {
  const single = parseAddr(text);
  if (single.ok) {
    if (single.addr.zone !== "") return { ok: false, reason: "a zone (%...) is not allowed here" };
    return {
      ok: true,
      range: makeRange(single.addr.family, single.addr.value, width(single.addr.family), false),
    };
  }
  const slash = text.indexOf("/");
  if (slash < 0) return { ok: false, reason: single.reason };
  const addrText = text.slice(0, slash);
  const bitsText = text.slice(slash + 1);
  const addr = parseAddr(addrText);
  if (!addr.ok) return { ok: false, reason: addr.reason };
  if (addr.addr.zone !== "") return { ok: false, reason: "a zone (%...) is not allowed in a CIDR range" };
  // Like Go's net.ParseCIDR: decimal digits only (leading zeros tolerated), within the family's width.
  if (!/^\d+$/.test(bitsText))
    return { ok: false, reason: `the prefix length ${JSON.stringify(bitsText)} is not a number` };
  const bits = Number.parseInt(bitsText, 10);
  const max = width(addr.addr.family);
  if (bits > max) return { ok: false, reason: `the prefix length /${bitsText} is longer than ${max} bits` };
  return { ok: true, range: makeRange(addr.addr.family, addr.addr.value, bits, true) };
}

function maskOf(family: IpFamily, bits: number): bigint {
  const w = BigInt(width(family));
  const all = (1n << w) - 1n;
  return all ^ ((1n << (w - BigInt(bits))) - 1n);
}

function makeRange(family: IpFamily, value: bigint, bits: number, cidr: boolean): IpRange {
  const network = value & maskOf(family, bits);
  const display = cidr ? `${formatAddr(family, network)}/${bits}` : formatAddr(family, network);
  // A range inside ::ffff:0:0/96 is an IPv4 range written in IPv6 form; a shorter IPv6 prefix
  // never contains IPv4 clients (as in Go, where IPv4 and IPv6 lengths must agree).
  if (family === 6 && bits >= 96 && network >> 32n === MAPPED_PREFIX) {
    return { family: 4, network: network & 0xffffffffn, bits: bits - 96, display };
  }
  return { family, network, bits, display };
}

export type IpMatcherParse =
  | { ok: true; matcher: IpMatcher }
  | { ok: false; bad: string; message: string; hint?: string; index: number };

export class IpMatcher {
  private constructor(private readonly ranges: readonly IpRange[]) {}

  /** A matcher that contains no address: what an allow-list or trusted list that does not parse means. */
  static nobody(): IpMatcher {
    return new IpMatcher([]);
  }

  /** Accepts IPs and CIDR ranges (host bits allowed: 1.2.3.4/24 is 1.2.3.0/24). */
  static parse(ranges: readonly string[]): IpMatcherParse {
    if (ranges.length === 0) {
      return { ok: false, bad: "", message: "no IP address or range given", index: -1 };
    }
    const parsed: IpRange[] = [];
    for (let index = 0; index < ranges.length; index++) {
      const text = ranges[index]!;
      const r = parseRange(text);
      if (!r.ok) {
        const result: IpMatcherParse = {
          ok: false,
          bad: text,
          index,
          message: `${JSON.stringify(text)} is neither an IP address nor a CIDR range: ${r.reason}`,
        };
        const hint = rangeHint(text, r.reason);
        if (hint !== undefined) result.hint = hint;
        return result;
      }
      parsed.push(r.range);
    }
    return { ok: true, matcher: new IpMatcher(parsed) };
  }

  /**
   * Whether the peer address is inside one of the ranges. Unparsable text (including IPv4 with a
   * leading-zero octet, or "") never matches; an IPv6 zone is ignored; IPv4-mapped IPv6 and IPv4
   * are the same address.
   */
  contains(ip: string): boolean {
    const parsed = parseAddr(ip);
    if (!parsed.ok) return false;
    const { family, value } = unmap(parsed.addr.family, parsed.addr.value);
    for (const r of this.ranges) {
      if (r.family !== family) continue;
      if ((value & maskOf(family, r.bits)) === r.network) return true;
    }
    return false;
  }

  /** The ranges in canonical form, e.g. `10.0.0.0/8, ::1`. */
  describe(): string {
    return this.ranges.length > 0
      ? this.ranges.map((r) => r.display).join(", ")
      : "(no valid address or range)";
  }
}
