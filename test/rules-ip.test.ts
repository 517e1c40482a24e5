import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { IpMatcher, parseAddr } from "../src/rules/index.ts";

function matcher(...ranges: string[]): IpMatcher {
  const parsed = IpMatcher.parse(ranges);
  if (!parsed.ok) assert.fail(`expected ${JSON.stringify(ranges)} to parse: ${parsed.message}`);
  return parsed.matcher;
}

describe("IpMatcher.parse", () => {
  it("accepts IPv4/IPv6 addresses and CIDR ranges, clearing host bits", () => {
    assert.equal(matcher("1.2.3.4/24").describe(), "1.2.3.0/24");
    assert.equal(matcher("10.0.0.1").describe(), "10.0.0.1");
    assert.equal(matcher("2001:DB8:0:0:1::1").describe(), "2001:db8::1:0:0:1");
    assert.equal(matcher("2001:db8::1/32").describe(), "2001:db8::/32");
    assert.equal(matcher("::1.2.3.4").describe(), "::102:304");
    assert.equal(matcher("::ffff:10.1.2.3/104").describe(), "::ffff:10.0.0.0/104");
    assert.equal(matcher("0:0:0:0:0:0:0:0").describe(), "::");
    assert.equal(matcher("1:0:0:2:0:0:0:3").describe(), "1:0:0:2::3");
    assert.equal(matcher("2001:db8:0:1:1:1:1:1").describe(), "2001:db8:0:1:1:1:1:1");
    assert.equal(matcher("10.0.0.0/8", "::1").describe(), "10.0.0.0/8, ::1");
    // Go's ParseCIDR reads the prefix length as plain decimal.
    assert.equal(matcher("10.0.0.0/08").describe(), "10.0.0.0/8");
  });

  const bad: [string, RegExp?][] = [
    [""],
    ["localhost", /not a host name|names are not resolved/],
    ["1.2.3"],
    ["1.2.3.4.5"],
    ["256.1.1.1"],
    ["01.2.3.4", /leading zeros/],
    ["1.2.3.4/33", /at most \/32/],
    ["::1/129", /at most \/128/],
    ["1.2.3.4/"],
    ["1.2.3.4/-1"],
    ["1.2.3.4/ 8"],
    ["10.0.0.1-10.0.0.9", /CIDR notation/],
    ["1::2::3"],
    ["1:2:3:4:5:6:7:8:9"],
    ["1:2:3:4:5:6:7:8::"],
    ["12345::"],
    [":::"],
    ["1:2:3:4:5:6:7"],
    ["fe80::1%eth0", /zone/],
    ["fe80::/10%eth0"],
    ["[::1]", /without brackets/],
    ["1.2.3.4%eth0"],
    ["::ffff:1.2.3"],
    ["1:2:3:4:5:6:7:1.2.3.4"],
    ["10.0.0.0/8, 10.1.0.0/16", /one address/],
  ];
  for (const [text, hint] of bad) {
    it(`refuses ${JSON.stringify(text)}`, () => {
      const parsed = IpMatcher.parse(["127.0.0.1", text]);
      assert.equal(parsed.ok, false);
      if (parsed.ok) return;
      assert.equal(parsed.bad, text);
      assert.equal(parsed.index, 1);
      assert.ok(parsed.message.startsWith(JSON.stringify(text)), parsed.message);
      if (hint) assert.match(parsed.hint ?? "", hint);
    });
  }

  it("refuses an empty list", () => {
    assert.equal(IpMatcher.parse([]).ok, false);
  });
});

describe("IpMatcher.contains", () => {
  it("matches IPv4 exactly and by prefix", () => {
    const m = matcher("10.0.0.0/8", "192.168.1.7");
    assert.equal(m.contains("10.255.0.1"), true);
    assert.equal(m.contains("11.0.0.1"), false);
    assert.equal(m.contains("192.168.1.7"), true);
    assert.equal(m.contains("192.168.1.8"), false);
    assert.equal(matcher("0.0.0.0/0").contains("203.0.113.9"), true);
  });

  it("matches IPv6 exactly and by prefix", () => {
    const m = matcher("2001:db8::/32", "::1");
    assert.equal(m.contains("2001:DB8:ffff::1"), true);
    assert.equal(m.contains("2001:db9::1"), false);
    assert.equal(m.contains("0:0:0:0:0:0:0:1"), true);
    assert.equal(m.contains("::2"), false);
  });

  it("treats IPv4-mapped IPv6 and IPv4 as the same address, both ways", () => {
    assert.equal(matcher("10.0.0.0/8").contains("::ffff:10.1.2.3"), true);
    assert.equal(matcher("10.0.0.0/8").contains("::FFFF:a01:203"), true);
    assert.equal(matcher("::ffff:10.0.0.0/104").contains("10.9.9.9"), true);
    assert.equal(matcher("::ffff:10.0.0.0/104").contains("11.9.9.9"), false);
    assert.equal(matcher("::ffff:127.0.0.1").contains("127.0.0.1"), true);
    assert.equal(matcher("::ffff:0:0/96").contains("8.8.8.8"), true);
    // Like Go, an IPv6 prefix shorter than the mapped block never contains IPv4 clients.
    assert.equal(matcher("::/0").contains("8.8.8.8"), false);
    assert.equal(matcher("::/0").contains("::ffff:8.8.8.8"), false);
    assert.equal(matcher("::/0").contains("2001:db8::1"), true);
  });

  it("tolerates a zone on the client address", () => {
    assert.equal(matcher("fe80::/10").contains("fe80::1%eth0"), true);
    assert.equal(matcher("fe80::1").contains("fe80::1%25en0"), true);
    assert.equal(matcher("fe80::1").contains("fe80::1%"), false);
  });

  it("never matches unparsable client text, including leading-zero IPv4", () => {
    const m = matcher("10.0.0.0/8", "0.0.0.0/0");
    for (const ip of [
      "",
      "010.1.2.3",
      "10.01.2.3",
      "junk",
      "[::1]",
      "10.0.0.1:443",
      "1.2.3.4%eth0",
      " 10.0.0.1",
    ]) {
      assert.equal(m.contains(ip), false, ip);
    }
  });
});

describe("parseAddr", () => {
  it("follows Go's netip rules", () => {
    const v = (s: string) => {
      const r = parseAddr(s);
      return r.ok ? `${r.addr.family}:${r.addr.value.toString(16)}:${r.addr.zone}` : "error";
    };
    assert.equal(v("1.2.3.4"), "4:1020304:");
    assert.equal(v("0.0.0.0"), "4:0:");
    assert.equal(v("::"), "6:0:");
    assert.equal(v("::1%lo"), "6:1:lo");
    assert.equal(v("1::"), "6:10000000000000000000000000000:");
    assert.equal(v("::ffff:1.2.3.4"), "6:ffff01020304:");
    assert.equal(v("0001:2:3:4:5:6:7:8"), "6:10002000300040005000600070008:");
    assert.equal(v("1.2.3.04"), "error");
    assert.equal(v("%eth0"), "error");
    assert.equal(v("1"), "error");
  });
});

describe("IpMatcher properties", () => {
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
  const text = (a: number[]) => a.join(".");
  const num = (a: number[]) => a.reduce((acc, b) => acc * 256 + b, 0);

  it("IPv4 prefix membership agrees with arithmetic, in both spellings", () => {
    fc.assert(
      fc.property(v4, fc.integer({ min: 0, max: 32 }), v4, (net, bits, ip) => {
        const m = matcher(`${text(net)}/${bits}`);
        const shift = 32 - bits;
        const expected = bits === 0 || Math.floor(num(net) / 2 ** shift) === Math.floor(num(ip) / 2 ** shift);
        assert.equal(m.contains(text(ip)), expected);
        assert.equal(m.contains(`::ffff:${text(ip)}`), expected);
        assert.equal(matcher(`::ffff:${text(net)}/${bits + 96}`).contains(text(ip)), expected);
      }),
    );
  });

  it("IPv6 prefix membership agrees with arithmetic", () => {
    const group = fc.nat(0xffff);
    const v6 = fc.array(group, { minLength: 8, maxLength: 8 });
    const big = (g: number[]) => g.reduce((acc, x) => (acc << 16n) | BigInt(x), 0n);
    fc.assert(
      fc.property(v6, fc.integer({ min: 0, max: 128 }), v6, (net, bits, ip) => {
        fc.pre(big(ip) >> 32n !== 0xffffn && big(net) >> 32n !== 0xffffn);
        const m = matcher(`${net.map((g) => g.toString(16)).join(":")}/${bits}`);
        const shift = BigInt(128 - bits);
        const expected = big(net) >> shift === big(ip) >> shift;
        assert.equal(m.contains(ip.map((g) => g.toString(16)).join(":")), expected);
      }),
    );
  });
});

describe("IpMatcher.nobody", () => {
  it("contains no address, and says so", () => {
    const nobody = IpMatcher.nobody();
    for (const ip of ["127.0.0.1", "::1", "10.0.0.1", "::ffff:10.0.0.1", ""])
      assert.equal(nobody.contains(ip), false, ip);
    assert.equal(nobody.describe(), "(no valid address or range)");
  });
});
