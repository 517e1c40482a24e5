/**
 * The parts of certificate resolvers that need no CA: the storage file in Traefik's acme.json layout
 * (round trip, other resolvers' sections kept, atomic writes that survive SIGKILL), the renewal and
 * retry arithmetic, key type names, and the plan of which certificates routers ask for.
 *
 * The storage tests use real files and a real child process killed with SIGKILL; the plan tests load
 * configuration files through the same path every command uses (openWorkspace).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ACME_KEY_TYPES, accountKeyPem, DEFAULT_KEY_TYPE, keyTypeOf } from "../src/acme/keys.ts";
import { type AcmePlan, covers, planCertificates } from "../src/acme/plan.ts";
import { MAX_SLEEP_MS, renewalTime, retryDelayMs } from "../src/acme/renewal.ts";
import {
  type ResolverStorage,
  readResolverStorage,
  type StoredCertificate,
  writeResolverStorage,
} from "../src/acme/storage.ts";
import { toCatalogCertificate } from "../src/acme/stored.ts";
import { openWorkspace } from "../src/workspace.ts";
import { certificateEntry, writeTraefikAcmeJson } from "./helpers/acme-json.ts";
import { ROOT } from "./helpers/cli.ts";
import { type IssuedCert, makePki } from "./helpers/pki.ts";

const tempRoot = mkdtempSync(path.join(tmpdir(), "tlsroute-acme-unit-"));
after(() => rmSync(tempRoot, { recursive: true, force: true }));

let counter = 0;
function freshDir(): string {
  counter += 1;
  return mkdtempSync(path.join(tempRoot, `d${counter}-`));
}

function modeOf(file: string): number {
  return statSync(file).mode & 0o777;
}

// ---------------------------------------------------------------------------------------------------------
// Storage

describe("storage: Traefik's acme.json layout", () => {
  let app: IssuedCert;
  let accountDer: Buffer;

  before(() => {
    const pki = makePki(path.join(tempRoot, "pki"));
    const ca = pki.ca("storage test CA");
    app = pki.leaf({ ca, cn: "app.example.com", dns: ["app.example.com", "www.example.com"], days: 90 });
    // Traefik's account key: RSA, PKCS#1 DER. 2048 bits keeps the test quick; the layout is the same.
    accountDer = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({
      type: "pkcs1",
      format: "der",
    });
  });

  function sample(): ResolverStorage {
    return {
      account: {
        email: "ops@example.com",
        uri: "https://ca.example/acme/acct/42",
        body: { status: "valid", contact: ["mailto:ops@example.com"] },
        privateKeyDer: accountDer,
        keyType: "P256",
      },
      certificates: [
        {
          domain: { main: "app.example.com", sans: ["www.example.com"] },
          certPem: app.chainPem,
          keyPem: app.keyPem,
          store: "default",
        },
        {
          domain: { main: "solo.example.com", sans: [] },
          certPem: "PEM A\n",
          keyPem: "PEM B\n",
          store: "default",
        },
      ],
    };
  }

  it("a save writes Traefik's layout: base64 PEM, PKCS#1 account key, sans only when present", () => {
    const file = path.join(freshDir(), "acme.json");
    writeResolverStorage(file, "le", sample());
    const raw = JSON.parse(readFileSync(file, "utf8"));
    assert.deepEqual(Object.keys(raw), ["le"]);
    assert.deepEqual(raw.le.Account, {
      Email: "ops@example.com",
      Registration: {
        body: { status: "valid", contact: ["mailto:ops@example.com"] },
        uri: "https://ca.example/acme/acct/42",
      },
      PrivateKey: accountDer.toString("base64"),
      KeyType: "P256",
    });
    assert.deepEqual(raw.le.Certificates, [
      {
        domain: { main: "app.example.com", sans: ["www.example.com"] },
        certificate: Buffer.from(app.chainPem).toString("base64"),
        key: Buffer.from(app.keyPem).toString("base64"),
        Store: "default",
      },
      {
        domain: { main: "solo.example.com" },
        certificate: Buffer.from("PEM A\n").toString("base64"),
        key: Buffer.from("PEM B\n").toString("base64"),
        Store: "default",
      },
    ]);
    // The stored account key is one the ACME client can use again.
    const pem = accountKeyPem(Buffer.from(raw.le.Account.PrivateKey, "base64"));
    assert.equal(createPrivateKey(pem).asymmetricKeyType, "rsa");
  });

  it("round trip: what is saved is what is read, and the file has mode 0600", () => {
    const file = path.join(freshDir(), "acme.json");
    writeResolverStorage(file, "le", sample());
    assert.equal(modeOf(file), 0o600);
    const read = readResolverStorage(file, "le");
    assert.ok(read.ok);
    assert.equal(read.exists, true);
    assert.deepEqual(read.storage, sample());
  });

  it("a save removes temporary files a killed save left more than a minute ago, and no newer ones", () => {
    const dir = freshDir();
    const file = path.join(dir, "acme.json");
    const stale = path.join(dir, ".4242.1700000000000.tmp-acme.json");
    const fresh = path.join(dir, ".4343.1700000000001.tmp-acme.json");
    writeFileSync(stale, "{ half a sav");
    writeFileSync(fresh, "{ another process writing");
    const twoMinutesAgo = new Date(Date.now() - 120_000);
    utimesSync(stale, twoMinutesAgo, twoMinutesAgo);
    writeResolverStorage(file, "le", sample());
    assert.deepEqual(readdirSync(dir).sort(), [fresh, file].map((f) => path.basename(f)).sort());
  });

  it("a save keeps other resolvers' sections and fields tlsroute does not know", () => {
    const file = path.join(freshDir(), "acme.json");
    const other = {
      Account: {
        Email: "other@example.com",
        Registration: { body: { status: "valid" }, uri: "https://ca.example/acme/acct/7" },
        PrivateKey: "AAAA",
        KeyType: "4096",
      },
      Certificates: [certificateEntry("other.example.com", app.chainPem, app.keyPem)],
      SomethingNewer: { kept: true },
    };
    writeFileSync(
      file,
      JSON.stringify({ other, "future-top-level": [1, 2, 3], le: { Account: null, Certificates: null } }),
      { mode: 0o644 },
    );
    writeResolverStorage(file, "le", sample());
    const raw = JSON.parse(readFileSync(file, "utf8"));
    assert.deepEqual(raw.other, other);
    assert.deepEqual(raw["future-top-level"], [1, 2, 3]);
    assert.equal(raw.le.Certificates.length, 2);
    // A file that was 0644 is replaced by one that is 0600: it holds private keys.
    assert.equal(modeOf(file), 0o600);

    // Saving again with fewer certificates changes only this resolver's section.
    writeResolverStorage(file, "le", { ...sample(), certificates: [] });
    const again = JSON.parse(readFileSync(file, "utf8"));
    assert.deepEqual(again.other, other);
    assert.deepEqual(again.le.Certificates, []);
    const otherRead = readResolverStorage(file, "other");
    assert.ok(otherRead.ok);
    assert.equal(otherRead.storage.account?.email, "other@example.com");
    assert.equal(otherRead.storage.account?.uri, "https://ca.example/acme/acct/7");
    assert.equal(otherRead.storage.certificates[0]?.domain.main, "other.example.com");
    assert.equal(otherRead.storage.certificates[0]?.certPem, app.chainPem);
  });

  it("nothing stored: a missing file, an empty file, a blank file, a missing section, null Certificates", () => {
    const dir = freshDir();
    const empty = { account: null, certificates: [] };
    const missing = readResolverStorage(path.join(dir, "missing.json"), "le");
    assert.deepEqual(missing, { ok: true, storage: empty, exists: false });
    for (const [name, text] of [
      ["empty.json", ""],
      ["blank.json", "\n  \n"],
      ["other-only.json", JSON.stringify({ other: { Account: null, Certificates: [] } })],
    ] as const) {
      writeFileSync(path.join(dir, name), text);
      assert.deepEqual(
        readResolverStorage(path.join(dir, name), "le"),
        { ok: true, storage: empty, exists: false },
        name,
      );
    }
    // Traefik writes "Certificates": null for a resolver that has none yet.
    writeFileSync(path.join(dir, "null.json"), JSON.stringify({ le: { Account: null, Certificates: null } }));
    assert.deepEqual(readResolverStorage(path.join(dir, "null.json"), "le"), {
      ok: true,
      storage: empty,
      exists: true,
    });
    // An empty file is written to like a missing one.
    const file = path.join(dir, "empty.json");
    writeResolverStorage(file, "le", sample());
    assert.equal(JSON.parse(readFileSync(file, "utf8")).le.Certificates.length, 2);
  });

  it("a file that is not a JSON object is reported, and never overwritten", () => {
    const dir = freshDir();
    for (const [name, text, why] of [
      ["cut.json", '{ "le": { "Account": ', /is not valid JSON/],
      ["array.json", "[]", /is not a JSON object/],
    ] as const) {
      const file = path.join(dir, name);
      writeFileSync(file, text);
      const read = readResolverStorage(file, "le");
      assert.ok(!read.ok, name);
      assert.match(read.message, why);
      assert.ok(read.message.includes(file), "the message names the file");
      assert.throws(() => writeResolverStorage(file, "le", sample()), why);
      assert.equal(readFileSync(file, "utf8"), text, "the unreadable file is left as it was");
    }
    assert.deepEqual(readdirSync(dir).sort(), ["array.json", "cut.json"], "no temporary file left behind");
  });

  it("entries without a certificate or key are skipped; Store defaults to default", () => {
    const file = path.join(freshDir(), "acme.json");
    const good = certificateEntry("app.example.com", app.chainPem, app.keyPem);
    writeTraefikAcmeJson(file, {
      le: {
        Account: null,
        Certificates: [
          { ...good, certificate: "" },
          { ...good, key: "" },
          { ...good, Store: "" },
        ],
      },
    });
    const read = readResolverStorage(file, "le");
    assert.ok(read.ok);
    assert.equal(read.storage.certificates.length, 1);
    assert.equal(read.storage.certificates[0]?.store, "default");
  });

  it("a stored certificate becomes a catalog entry labelled with its storage and resolver", () => {
    const stored: StoredCertificate = {
      domain: { main: "app.example.com", sans: ["www.example.com"] },
      certPem: app.chainPem,
      keyPem: app.keyPem,
      store: "default",
    };
    const loaded = toCatalogCertificate(stored, "le", '/x/acme.json (resolver "le")');
    assert.ok(loaded.ok);
    assert.deepEqual([...loaded.cert.names].sort(), ["app.example.com", "www.example.com"]);
    assert.equal(loaded.cert.resolver, "le");
    assert.equal(loaded.cert.source, '/x/acme.json (resolver "le")');
    assert.equal(loaded.cert.chain.length, 2, "leaf and issuer");

    const garbage = toCatalogCertificate({ ...stored, certPem: "not a certificate" }, "le", "x");
    assert.equal(garbage.ok, false);
    const otherKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({
      type: "pkcs8",
      format: "pem",
    });
    const mismatch = toCatalogCertificate({ ...stored, keyPem: String(otherKey) }, "le", "x");
    assert.equal(mismatch.ok, false);
  });
});

describe("storage: a save interrupted by SIGKILL never leaves a broken file", () => {
  const WRITER = path.join(ROOT, "test", "helpers", "storage-writer.ts");
  const RUNS = 24;
  const COUNT = 150;

  /** Starts the writer, waits until it has saved at least once, lets it run a random while, kills it. */
  function writeAndKill(file: string): Promise<{ saves: number; signal: NodeJS.Signals | null }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", WRITER, file, "le", String(COUNT)], {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      let timer: NodeJS.Timeout | undefined;
      child.stdout.setEncoding("utf8").on("data", (s: string) => {
        out += s;
        if (!timer && out.includes("saved ")) {
          // A random moment within the next few saves: reading, encoding, writing, syncing or renaming.
          timer = setTimeout(() => child.kill("SIGKILL"), Math.random() * 150);
        }
      });
      child.stderr.setEncoding("utf8").on("data", (s: string) => {
        err += s;
      });
      child.on("error", reject);
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        if (signal !== "SIGKILL") reject(new Error(`writer exited on its own (${code}):\n${err}`));
        else resolve({ saves: out.split("\n").filter((l) => l.startsWith("saved ")).length, signal });
      });
    });
  }

  it(`${RUNS} kills at random moments: the file is always one whole save, valid JSON, mode 0600`, async (t) => {
    const dir = freshDir();
    const file = path.join(dir, "acme.json");
    // Another resolver's section, which every save must carry over.
    const other = { Account: null, Certificates: [certificateEntry("keep.example.com", "C\n", "K\n")] };
    writeTraefikAcmeJson(file, { other });
    for (let run = 1; run <= RUNS; run++) {
      const { saves } = await writeAndKill(file);
      assert.ok(saves >= 1);
      assert.equal(modeOf(file), 0o600, `run ${run}: mode`);
      const text = readFileSync(file, "utf8");
      let data: {
        other: unknown;
        le: { Account: { Email: string }; Certificates: { domain: { main: string } }[] };
      };
      try {
        data = JSON.parse(text);
      } catch (e) {
        assert.fail(`run ${run}: the storage file is not valid JSON (${(e as Error).message})`);
      }
      assert.deepEqual(data.other, other, `run ${run}: the other resolver's section is intact`);
      // One whole generation: the account and every certificate come from the same save.
      const generation = Number(/^gen-(\d+)@/.exec(data.le.Account.Email)?.[1]);
      assert.ok(generation >= 1, `run ${run}: ${data.le.Account.Email}`);
      assert.equal(data.le.Certificates.length, COUNT, `run ${run}: certificate count`);
      data.le.Certificates.forEach((c, i) => {
        assert.equal(c.domain.main, `cert-${i}.gen-${generation}.example.com`, `run ${run}: entry ${i}`);
      });
      const read = readResolverStorage(file, "le");
      assert.ok(read.ok, `run ${run}: tlsroute reads it back`);
      assert.equal(read.storage.certificates.length, COUNT);
    }
    // Temporary files of interrupted saves may stay behind; they are never the storage file itself.
    const leftovers = readdirSync(dir).filter((f) => f !== "acme.json");
    for (const name of leftovers) {
      assert.match(name, /^\..*\.tmp-acme\.json$/, `unexpected file ${name}`);
      assert.equal(modeOf(path.join(dir, name)), 0o600, `${name} holds keys too`);
    }
    // How many kills landed while a temporary file was being written (varies from run to run).
    t.diagnostic(`${leftovers.length} of ${RUNS} kills interrupted a save mid-write`);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Renewal and retry arithmetic

describe("renewal: a third of the lifetime before expiry", () => {
  const DAY = 86_400_000;
  const HOUR = 3_600_000;
  const notBefore = new Date("2026-01-01T00:00:00Z");
  const days = (n: number) => new Date(notBefore.getTime() + n * DAY);

  it("a 90-day certificate with certificatesDuration 2160 h (Traefik's default) renews 30 days before expiry", () => {
    const due = renewalTime({ notBefore, notAfter: days(90) }, 2160);
    assert.equal(due.toISOString(), days(60).toISOString());
  });

  it("without certificatesDuration (0) the certificate's own lifetime counts: a 1-year certificate renews after 8 months", () => {
    const due = renewalTime({ notBefore, notAfter: days(360) }, 0);
    assert.equal(due.toISOString(), days(240).toISOString());
  });

  it("a 6-day certificate renews 2 days before expiry, whatever the configured duration", () => {
    assert.equal(renewalTime({ notBefore, notAfter: days(6) }, 2160).toISOString(), days(4).toISOString());
    assert.equal(renewalTime({ notBefore, notAfter: days(6) }, 0).toISOString(), days(4).toISOString());
  });

  it("a certificatesDuration shorter than the lifetime moves renewal earlier", () => {
    // 30 days configured for a 90-day certificate: two thirds of 30 days after issue.
    const due = renewalTime({ notBefore, notAfter: days(90) }, 30 * 24);
    assert.equal(due.toISOString(), days(20).toISOString());
    assert.ok(due < renewalTime({ notBefore, notAfter: days(90) }, 2160));
    // One hour configured: renew 40 minutes after issue.
    assert.equal(
      renewalTime({ notBefore, notAfter: days(90) }, 1).getTime(),
      notBefore.getTime() + (2 * HOUR) / 3,
    );
  });

  it("a certificatesDuration longer than the lifetime never delays renewal past a third before expiry", () => {
    const due = renewalTime({ notBefore, notAfter: days(90) }, 365 * 24);
    assert.equal(due.toISOString(), days(60).toISOString());
  });

  it("an expired certificate is already due; a backwards one no later than its notBefore", () => {
    const past = new Date("2020-01-01T00:00:00Z");
    assert.ok(
      renewalTime({ notBefore: past, notAfter: new Date("2020-03-31T00:00:00Z") }, 2160) < new Date(),
    );
    const backwards = renewalTime({ notBefore: days(10), notAfter: days(5) }, 2160);
    assert.ok(backwards.getTime() <= days(10).getTime());
  });

  it("retries wait 5 s, then twice as long each time, never more than an hour", () => {
    const delays = Array.from({ length: 14 }, (_, i) => retryDelayMs(i + 1));
    assert.deepEqual(
      delays,
      [
        5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 1_280_000, 2_560_000, 3_600_000,
        3_600_000, 3_600_000, 3_600_000,
      ],
    );
    assert.equal(retryDelayMs(0), 5_000);
    assert.equal(retryDelayMs(10_000), 3_600_000);
    assert.equal(MAX_SLEEP_MS, 24 * HOUR);
    assert.ok(MAX_SLEEP_MS < 2 ** 31 - 1, "fits in a Node timer");
  });
});

describe("key types", () => {
  it("Traefik's names map to key kinds and the names lego writes to acme.json", () => {
    assert.deepEqual(Object.fromEntries(Object.entries(ACME_KEY_TYPES).map(([k, v]) => [k, v.storedName])), {
      EC256: "P256",
      EC384: "P384",
      RSA2048: "2048",
      RSA4096: "4096",
      RSA8192: "8192",
    });
    assert.equal(DEFAULT_KEY_TYPE, "EC256");
  });

  it("an unknown name, even one an object inherits, falls back to the default", () => {
    for (const name of [undefined, null, "EC999", "constructor", "toString", "__proto__"]) {
      assert.equal(keyTypeOf(name), ACME_KEY_TYPES.EC256, String(name));
    }
    assert.equal(keyTypeOf("RSA4096"), ACME_KEY_TYPES.RSA4096);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Plan: which certificates routers ask for

describe("plan: certificate requests from routers", () => {
  const HEAD = `entryPoints:
  websecure:
    address: ":9443"
  other:
    address: ":9444"
certificatesResolvers:
  le:
    acme:
      email: ops@example.com
      storage: acme.json
      tlsChallenge: {}
  zerossl:
    acme:
      email: ops@example.com
      storage: acme.json
      tlsChallenge: {}
tcp:
  services:
    s:
      loadBalancer:
        servers:
          - address: "127.0.0.1:9001"
  routers:
`;

  function plan(routers: string): AcmePlan {
    const file = path.join(freshDir(), "tlsroute.yml");
    writeFileSync(file, HEAD + routers);
    const ws = openWorkspace([file]);
    return planCertificates(ws.model, ws.compiled);
  }

  /** Requests without positions, sorted by main name, for comparison. */
  function requests(p: AcmePlan) {
    return p.requests
      .map((r) => ({ resolver: r.resolver, names: [r.main, ...r.sans], routers: r.routers }))
      .sort((a, b) => (a.names[0]! < b.names[0]! ? -1 : 1));
  }

  function problems(p: AcmePlan) {
    return p.problems.map((x) => ({ code: x.code, router: x.router, path: x.path }));
  }

  it("one request per router with every HostSNI name of its rule, first name first", () => {
    const p = plan(`    app:
      rule: "HostSNI(\`App.Example.com\`) || (HostSNI(\`www.example.com\`) && ALPN(\`h2\`)) || HostSNI(\`app.example.com\`)"
      service: s
      tls:
        certResolver: le
    plain-tls:
      rule: "HostSNI(\`nocert.example.com\`)"
      service: s
      tls: {}
`);
    assert.deepEqual(requests(p), [
      { resolver: "le", names: ["app.example.com", "www.example.com"], routers: ["app"] },
    ]);
    assert.deepEqual(p.problems, []);
  });

  it("tls.domains replaces the rule's names: each entry (main + sans) is one request", () => {
    const p = plan(`    app:
      rule: "HostSNI(\`app.example.com\`)"
      service: s
      tls:
        certResolver: le
        domains:
          - main: example.com
            sans: [app.example.com, www.example.com]
          - main: Static.Example.com.
`);
    assert.deepEqual(requests(p), [
      { resolver: "le", names: ["example.com", "app.example.com", "www.example.com"], routers: ["app"] },
      { resolver: "le", names: ["static.example.com"], routers: ["app"] },
    ]);
    assert.deepEqual(p.problems, []);
  });

  it("routers asking one resolver for the same set of names share one request; another resolver orders its own", () => {
    const p = plan(`    a:
      entryPoints: [websecure]
      rule: "HostSNI(\`one.example.com\`) || HostSNI(\`two.example.com\`)"
      service: s
      tls:
        certResolver: le
    b:
      entryPoints: [other]
      rule: "HostSNI(\`two.example.com\`) || HostSNI(\`one.example.com\`)"
      service: s
      tls:
        certResolver: le
    c:
      entryPoints: [other]
      rule: "HostSNI(\`x.example.com\`)"
      service: s
      tls:
        certResolver: le
        domains:
          - main: two.example.com
            sans: [one.example.com]
    d:
      entryPoints: [other]
      rule: "HostSNI(\`one.example.com\`) || HostSNI(\`two.example.com\`) || HostSNI(\`x.example.com\`)"
      service: s
      tls:
        certResolver: zerossl
`);
    const got = requests(p);
    const le = got.filter((r) => r.resolver === "le");
    assert.equal(le.length, 1, JSON.stringify(got));
    assert.deepEqual([...le[0]!.names].sort(), ["one.example.com", "two.example.com"]);
    assert.deepEqual([...le[0]!.routers].sort(), ["a", "b", "c"]);
    assert.deepEqual(
      got.filter((r) => r.resolver === "zerossl"),
      [
        {
          resolver: "zerossl",
          names: ["one.example.com", "two.example.com", "x.example.com"],
          routers: ["d"],
        },
      ],
    );
  });

  it("negated names are not requested: !HostSNI names a host the router refuses", () => {
    const p = plan(`    app:
      rule: "(HostSNI(\`app.example.com\`) || HostSNI(\`www.example.com\`)) && !HostSNI(\`admin.example.com\`)"
      service: s
      tls:
        certResolver: le
    b:
      rule: "HostSNI(\`b.example.com\`) && !HostSNIRegexp(\`^internal\\\\.\`)"
      service: s
      tls:
        certResolver: le
`);
    assert.deepEqual(requests(p), [
      { resolver: "le", names: ["app.example.com", "www.example.com"], routers: ["app"] },
      { resolver: "le", names: ["b.example.com"], routers: ["b"] },
    ]);
    assert.deepEqual(p.problems, [], "a negated HostSNIRegexp takes nothing away from the names to certify");
  });

  it("names a TLS-ALPN-01 order cannot certify are problems; the router's other names are still requested", () => {
    const p = plan(`    wild:
      rule: "HostSNI(\`*.example.com\`) || HostSNI(\`exact.example.com\`)"
      service: s
      tls:
        certResolver: le
    catch-all:
      rule: "HostSNI(\`*\`)"
      service: s
      tls:
        certResolver: le
    regexp:
      rule: "HostSNIRegexp(\`^[a-z]+\\\\.example\\\\.com$\`)"
      service: s
      tls:
        certResolver: le
    ip:
      rule: "HostSNI(\`192.0.2.10\`)"
      service: s
      tls:
        certResolver: le
    no-name:
      rule: "ClientIP(\`10.0.0.0/8\`)"
      service: s
      tls:
        certResolver: le
    domains:
      rule: "HostSNI(\`d.example.com\`)"
      service: s
      tls:
        certResolver: le
        domains:
          - main: d.example.com
          - main: example.com
            sans: ["*.example.com"]
          - sans: [nomain.example.com]
    passthrough:
      rule: "HostSNI(\`pt.example.com\`)"
      service: s
      tls:
        passthrough: true
        certResolver: le
    unknown:
      rule: "HostSNI(\`u.example.com\`)"
      service: s
      tls:
        certResolver: nosuch
`);
    assert.deepEqual(requests(p), [
      { resolver: "le", names: ["d.example.com"], routers: ["domains"] },
      { resolver: "le", names: ["exact.example.com"], routers: ["wild"] },
    ]);
    assert.deepEqual(
      problems(p).sort((a, b) => (a.path < b.path ? -1 : 1)),
      [
        { code: "acme-name-not-certifiable", router: "catch-all", path: "tcp.routers.catch-all.rule" },
        { code: "acme-name-not-certifiable", router: "domains", path: "tcp.routers.domains.tls.domains[1]" },
        { code: "acme-name-not-certifiable", router: "domains", path: "tcp.routers.domains.tls.domains[2]" },
        { code: "acme-name-not-certifiable", router: "ip", path: "tcp.routers.ip.rule" },
        { code: "acme-name-not-certifiable", router: "no-name", path: "tcp.routers.no-name.rule" },
        {
          code: "acme-resolver-on-passthrough",
          router: "passthrough",
          path: "tcp.routers.passthrough.tls.certResolver",
        },
        { code: "acme-name-not-certifiable", router: "regexp", path: "tcp.routers.regexp.rule" },
        { code: "acme-name-not-certifiable", router: "wild", path: "tcp.routers.wild.rule" },
      ],
    );
    const message = (router: string) => p.problems.filter((x) => x.router === router).map((x) => x.message);
    assert.match(message("wild").join(), /"\*\.example\.com" is a wildcard/);
    assert.match(message("catch-all").join(), /catch-all/);
    assert.match(message("ip").join(), /IP address/);
    assert.match(message("regexp").join(), /HostSNIRegexp/);
    assert.match(message("no-name").join(), /no HostSNI name/);
    assert.match(message("domains").join(" | "), /wildcard.* \| .*an empty name/);
  });

  it("a stored certificate covers a request when it has every name, in any case", () => {
    const request = { resolver: "le", main: "a.example.com", sans: ["b.example.com"], routers: ["r"] };
    assert.equal(covers(["B.example.com", "a.example.com", "c.example.com"], request), true);
    assert.equal(covers(["a.example.com."], { ...request, sans: [] }), true);
    assert.equal(covers(["a.example.com"], request), false);
  });
});
