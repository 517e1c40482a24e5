import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { stringify as tomlStringify } from "smol-toml";
import { ConfigSyntaxError, type LNode, type MapEntry, toPlain } from "../src/config/located.ts";
import { type ConfigFormat, formatFromPath, parseConfigText } from "../src/config/parse.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

type Step = string | number;

/** Follows a path of keys and indexes; returns the node and, for a map entry, its entry. */
function at(root: LNode, path: Step[]): { node: LNode; entry?: MapEntry } {
  let node = root;
  let entry: MapEntry | undefined;
  for (const step of path) {
    if (typeof step === "number") {
      assert.equal(node.kind, "seq", `expected a list at ${String(step)}`);
      const item = node.kind === "seq" ? node.items[step] : undefined;
      assert.ok(item, `no item ${step}`);
      node = item;
      entry = undefined;
    } else {
      assert.equal(node.kind, "map", `expected a map at ${step}`);
      const found = node.kind === "map" ? node.entries.get(step) : undefined;
      assert.ok(found, `no key ${step}`);
      entry = found;
      node = found.value;
    }
  }
  return entry ? { node, entry } : { node };
}

/** 1-based line/column of the n-th occurrence (0-based) of `needle` in `text`, plus `shift` characters. */
function where(text: string, needle: string, nth = 0, shift = 0): { line: number; column: number } {
  let offset = -1;
  for (let k = 0; k <= nth; k++) {
    offset = text.indexOf(needle, offset + 1);
    assert.notEqual(offset, -1, `fixture lacks occurrence ${nth} of ${needle}`);
  }
  offset += shift;
  const before = text.slice(0, offset);
  const line = before.split("\n").length;
  return { line, column: offset - (before.lastIndexOf("\n") + 1) + 1 };
}

function lineCol(pos: { line: number; column: number }): { line: number; column: number } {
  return { line: pos.line, column: pos.column };
}

/** String offset of a 1-based line/column. */
function offsetOf(text: string, pos: { line: number; column: number }): number {
  let offset = 0;
  for (let line = 1; line < pos.line; line++) offset = text.indexOf("\n", offset) + 1;
  return offset + pos.column - 1;
}

function syntaxError(text: string, format: ConfigFormat): ConfigSyntaxError {
  try {
    parseConfigText(text, `test.${format}`, format);
  } catch (error) {
    assert.ok(error instanceof ConfigSyntaxError, `expected ConfigSyntaxError, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected a syntax error for ${JSON.stringify(text)}`);
}

function parse(text: string, format: ConfigFormat): LNode {
  return parseConfigText(text, `test.${format}`, format);
}

/** Visits every map entry and every scalar in a tree. */
function walk(
  node: LNode,
  onEntry: (key: string, entry: MapEntry) => void,
  onScalar: (node: LNode) => void,
): void {
  if (node.kind === "scalar") onScalar(node);
  else if (node.kind === "seq") for (const item of node.items) walk(item, onEntry, onScalar);
  else
    for (const [key, entry] of node.entries) {
      onEntry(key, entry);
      walk(entry.value, onEntry, onScalar);
    }
}

// ---------------------------------------------------------------------------------------------
// One configuration, three formats

const YAML_FIXTURE = `# tlsroute test configuration
entryPoints:
  websecure:
    address: ":8443"
    transport:
      respondingTimeouts:
        readTimeout: 60
tcp:
  routers:
    db:
      entryPoints: [websecure]
      rule: "HostSNI(\`db.example.com\`) || HostSNI(\`pg.example.com\`)"
      priority: 42
      service: pg
      tls:
        passthrough: false
        options: modern
  services:
    pg:
      loadBalancer:
        servers:
          - address: "127.0.0.1:5432"
          - address: "127.0.0.1:5433"
        terminationDelay: 100
    split:
      weighted:
        services:
          - { name: pg, weight: 3 }
          - { name: other, weight: 1.5 }
tls:
  options:
    modern:
      minVersion: VersionTLS12
      sniStrict: true
      cipherSuites:
        - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        - TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
  certificates:
    - certFile: certs/db.crt
      keyFile: certs/db.key
    - certFile: 'C:\\certs\\win.crt'
      keyFile: "tab\\there \\"quoted\\" \\u00e9"
      stores: [default]
`;

const TOML_FIXTURE = `# tlsroute test configuration
[entryPoints.websecure]
address = ":8443"
transport = { respondingTimeouts = { readTimeout = 60 } }

[tcp.routers.db]
entryPoints = ["websecure"]
rule = "HostSNI(\`db.example.com\`) || HostSNI(\`pg.example.com\`)"
priority = 42
service = "pg"
tls.passthrough = false
tls.options = "modern"

[[tcp.services.pg.loadBalancer.servers]]
address = "127.0.0.1:5432"

[[tcp.services.pg.loadBalancer.servers]]
address = '127.0.0.1:5433'  # literal string

[tcp.services.pg.loadBalancer]
terminationDelay = 100

[tcp.services.split.weighted]
services = [
  { name = "pg", weight = 3 },
  { name = "other", weight = 1.5 },  # trailing comma is fine in TOML
]

[tls.options.modern]
minVersion = "VersionTLS12"
sniStrict = true
cipherSuites = [
  "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
]

[[tls.certificates]]
certFile = "certs/db.crt"
keyFile = "certs/db.key"

[[tls.certificates]]
certFile = 'C:\\certs\\win.crt'
keyFile = "tab\\there \\"quoted\\" \\u00e9"
stores = ["default"]
`;

const JSON_FIXTURE = `{
  "entryPoints": {
    "websecure": {
      "address": ":8443",
      "transport": { "respondingTimeouts": { "readTimeout": 60 } }
    }
  },
  "tcp": {
    "routers": {
      "db": {
        "entryPoints": ["websecure"],
        "rule": "HostSNI(\`db.example.com\`) || HostSNI(\`pg.example.com\`)",
        "priority": 42,
        "service": "pg",
        "tls": { "passthrough": false, "options": "modern" }
      }
    },
    "services": {
      "pg": {
        "loadBalancer": {
          "servers": [{ "address": "127.0.0.1:5432" }, { "address": "127.0.0.1:5433" }],
          "terminationDelay": 100
        }
      },
      "split": {
        "weighted": {
          "services": [
            { "name": "pg", "weight": 3 },
            { "name": "other", "weight": 1.5e0 }
          ]
        }
      }
    }
  },
  "tls": {
    "options": {
      "modern": {
        "minVersion": "VersionTLS12",
        "sniStrict": true,
        "cipherSuites": [
          "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
          "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        ]
      }
    },
    "certificates": [
      { "certFile": "certs/db.crt", "keyFile": "certs/db.key" },
      {
        "certFile": "C:\\\\certs\\\\win.crt",
        "keyFile": "tab\\there \\"quoted\\" \\u00e9",
        "stores": ["default"]
      }
    ]
  }
}
`;

const EXPECTED = {
  entryPoints: { websecure: { address: ":8443", transport: { respondingTimeouts: { readTimeout: 60 } } } },
  tcp: {
    routers: {
      db: {
        entryPoints: ["websecure"],
        rule: "HostSNI(`db.example.com`) || HostSNI(`pg.example.com`)",
        priority: 42,
        service: "pg",
        tls: { passthrough: false, options: "modern" },
      },
    },
    services: {
      pg: {
        loadBalancer: {
          servers: [{ address: "127.0.0.1:5432" }, { address: "127.0.0.1:5433" }],
          terminationDelay: 100,
        },
      },
      split: {
        weighted: {
          services: [
            { name: "pg", weight: 3 },
            { name: "other", weight: 1.5 },
          ],
        },
      },
    },
  },
  tls: {
    options: {
      modern: {
        minVersion: "VersionTLS12",
        sniStrict: true,
        cipherSuites: [
          "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
          "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ],
      },
    },
    certificates: [
      { certFile: "certs/db.crt", keyFile: "certs/db.key" },
      { certFile: "C:\\certs\\win.crt", keyFile: 'tab\there "quoted" é', stores: ["default"] },
    ],
  },
};

const FIXTURES: Record<ConfigFormat, string> = { yaml: YAML_FIXTURE, toml: TOML_FIXTURE, json: JSON_FIXTURE };

describe("parseConfigText: one configuration in three formats", () => {
  for (const format of ["yaml", "toml", "json"] as const) {
    it(`${format} gives the expected plain value`, () => {
      assert.deepStrictEqual(toPlain(parse(FIXTURES[format], format)), EXPECTED);
    });
  }

  it("all three give identical plain values", () => {
    const [yaml, toml, json] = (["yaml", "toml", "json"] as const).map((f) => toPlain(parse(FIXTURES[f], f)));
    assert.deepStrictEqual(yaml, json);
    assert.deepStrictEqual(toml, json);
  });

  it("every key position points at the key text and every scalar position at its value", () => {
    for (const format of ["yaml", "toml", "json"] as const) {
      const text = FIXTURES[format];
      let keys = 0;
      walk(
        parse(text, format),
        (key, entry) => {
          keys++;
          const rest = text.slice(offsetOf(text, entry.keyPos));
          assert.ok(
            rest.startsWith(key) || rest.startsWith(`"${key}"`),
            `${format}: key ${key} at ${entry.keyPos.line}:${entry.keyPos.column} reads ${JSON.stringify(rest.slice(0, 20))}`,
          );
        },
        (node) => {
          if (node.kind !== "scalar") return;
          const rest = text.slice(offsetOf(text, node.pos));
          const plain = String(node.value);
          const ok =
            rest.startsWith(plain) ||
            rest.startsWith(`"${plain.slice(0, 3)}`) ||
            rest.startsWith(`'${plain.slice(0, 3)}`) ||
            (plain === "1.5" && rest.startsWith("1.5e0"));
          assert.ok(
            ok,
            `${format}: value ${plain} at ${node.pos.line}:${node.pos.column} reads ${rest.slice(0, 20)}`,
          );
        },
      );
      assert.ok(keys > 40, `${format}: walked ${keys} keys`);
    }
  });
});

describe("parseConfigText: exact positions", () => {
  it("YAML: deep keys and values in block and flow collections", () => {
    const text = YAML_FIXTURE;
    const root = parse(text, "yaml");
    const weight = at(root, ["tcp", "services", "split", "weighted", "services", 1, "weight"]);
    assert.deepStrictEqual(lineCol(weight.entry!.keyPos), where(text, "weight: 1.5"));
    assert.deepStrictEqual(lineCol(weight.node.pos), where(text, "1.5"));

    const keyFile = at(root, ["tls", "certificates", 1, "keyFile"]);
    assert.deepStrictEqual(lineCol(keyFile.entry!.keyPos), where(text, "keyFile", 1));
    assert.deepStrictEqual(lineCol(keyFile.node.pos), where(text, '"tab'));

    // A block mapping starts at its first key; a list item mapping at its first key after "- ".
    const server1 = at(root, ["tcp", "services", "pg", "loadBalancer", "servers", 1]);
    assert.deepStrictEqual(lineCol(server1.node.pos), where(text, 'address: "127.0.0.1:5433"'));
    const servers = at(root, ["tcp", "services", "pg", "loadBalancer", "servers"]);
    assert.deepStrictEqual(lineCol(servers.node.pos), where(text, '- address: "127.0.0.1:5432"'));
    const suite = at(root, ["tls", "options", "modern", "cipherSuites", 1]);
    assert.deepStrictEqual(lineCol(suite.node.pos), where(text, "TLS_ECDHE_RSA"));
    const flowMap = at(root, ["tcp", "services", "split", "weighted", "services", 0]);
    assert.deepStrictEqual(lineCol(flowMap.node.pos), where(text, "{ name: pg"));
  });

  it("TOML: keys and values in tables, dotted keys, inline tables and multi-line arrays", () => {
    const text = TOML_FIXTURE;
    const root = parse(text, "toml");
    const weight = at(root, ["tcp", "services", "split", "weighted", "services", 1, "weight"]);
    assert.deepStrictEqual(lineCol(weight.entry!.keyPos), where(text, "weight = 1.5"));
    assert.deepStrictEqual(lineCol(weight.node.pos), where(text, "1.5"));
    const inline = at(root, ["tcp", "services", "split", "weighted", "services", 1]);
    assert.deepStrictEqual(lineCol(inline.node.pos), where(text, '{ name = "other"'));

    const readTimeout = at(root, [
      "entryPoints",
      "websecure",
      "transport",
      "respondingTimeouts",
      "readTimeout",
    ]);
    assert.deepStrictEqual(lineCol(readTimeout.entry!.keyPos), where(text, "readTimeout"));
    assert.deepStrictEqual(lineCol(readTimeout.node.pos), where(text, "60"));

    // Dotted keys: "tls" is created by the first dotted key that names it.
    const tls = at(root, ["tcp", "routers", "db", "tls"]);
    assert.deepStrictEqual(lineCol(tls.entry!.keyPos), where(text, "tls.passthrough"));
    assert.deepStrictEqual(lineCol(tls.node.pos), where(text, "tls.passthrough"));
    const options = at(root, ["tcp", "routers", "db", "tls", "options"]);
    assert.deepStrictEqual(lineCol(options.entry!.keyPos), where(text, "options = "));
    assert.deepStrictEqual(lineCol(options.node.pos), where(text, '"modern"'));

    // A table header: the table starts at "[", its key at the key inside the header; implicit
    // parents get the header that first created them.
    const db = at(root, ["tcp", "routers", "db"]);
    assert.deepStrictEqual(lineCol(db.node.pos), where(text, "[tcp.routers.db]"));
    assert.deepStrictEqual(lineCol(db.entry!.keyPos), where(text, "db]"));
    const routers = at(root, ["tcp", "routers"]);
    assert.deepStrictEqual(lineCol(routers.node.pos), where(text, "[tcp.routers.db]"));
    assert.deepStrictEqual(lineCol(routers.entry!.keyPos), where(text, "routers"));

    const suite = at(root, ["tls", "options", "modern", "cipherSuites", 1]);
    assert.deepStrictEqual(lineCol(suite.node.pos), where(text, '"TLS_ECDHE_RSA'));
    const keyFile = at(root, ["tls", "certificates", 1, "keyFile"]);
    assert.deepStrictEqual(lineCol(keyFile.entry!.keyPos), where(text, "keyFile", 1));
    assert.deepStrictEqual(lineCol(keyFile.node.pos), where(text, '"tab'));
    const terminationDelay = at(root, ["tcp", "services", "pg", "loadBalancer", "terminationDelay"]);
    assert.deepStrictEqual(lineCol(terminationDelay.node.pos), where(text, "100"));
  });

  it("TOML: each [[array.of.tables]] entry has its own position", () => {
    const text = TOML_FIXTURE;
    const root = parse(text, "toml");
    const servers = at(root, ["tcp", "services", "pg", "loadBalancer", "servers"]);
    assert.equal(servers.node.kind, "seq");
    assert.deepStrictEqual(
      lineCol(servers.node.pos),
      where(text, "[[tcp.services.pg.loadBalancer.servers]]"),
    );
    assert.deepStrictEqual(lineCol(servers.entry!.keyPos), where(text, "servers]]"));
    for (const n of [0, 1]) {
      const item = at(root, ["tcp", "services", "pg", "loadBalancer", "servers", n]);
      assert.deepStrictEqual(
        lineCol(item.node.pos),
        where(text, "[[tcp.services.pg.loadBalancer.servers]]", n),
      );
      const address = at(root, ["tcp", "services", "pg", "loadBalancer", "servers", n, "address"]);
      assert.deepStrictEqual(lineCol(address.entry!.keyPos), where(text, "address = ", n + 1));
      assert.deepStrictEqual(
        lineCol(address.node.pos),
        where(text, n === 0 ? '"127.0.0.1:5432"' : "'127.0.0.1:5433'"),
      );
    }
    // The explicit [tcp.services.pg.loadBalancer] header after the arrays defines that table.
    const lb = at(root, ["tcp", "services", "pg", "loadBalancer"]);
    assert.deepStrictEqual(lineCol(lb.node.pos), where(text, "[tcp.services.pg.loadBalancer]"));
    const cert1 = at(root, ["tls", "certificates", 1]);
    assert.deepStrictEqual(lineCol(cert1.node.pos), where(text, "[[tls.certificates]]", 1));
  });

  it("TOML: arrays of tables nested in arrays of tables count per parent element", () => {
    const text = `[[a]]\nname = "one"\n[[a.b]]\nx = 1\n[[a.b]]\nx = 2\n[[a]]\nname = "two"\n[[a.b]]\nx = 3\n[a.b.c]\ny = 4\n`;
    const root = parse(text, "toml");
    assert.deepStrictEqual(toPlain(root), {
      a: [
        { name: "one", b: [{ x: 1 }, { x: 2 }] },
        { name: "two", b: [{ x: 3, c: { y: 4 } }] },
      ],
    });
    assert.deepStrictEqual(lineCol(at(root, ["a", 0, "b", 1]).node.pos), where(text, "[[a.b]]", 1));
    assert.deepStrictEqual(lineCol(at(root, ["a", 0, "b", 1, "x"]).node.pos), where(text, "2"));
    assert.deepStrictEqual(lineCol(at(root, ["a", 1, "b", 0]).node.pos), where(text, "[[a.b]]", 2));
    assert.deepStrictEqual(lineCol(at(root, ["a", 1, "b", 0, "x"]).entry!.keyPos), where(text, "x = 3"));
    assert.deepStrictEqual(lineCol(at(root, ["a", 1, "b", 0, "c", "y"]).node.pos), where(text, "4"));
    assert.deepStrictEqual(lineCol(at(root, ["a", 1, "b", 0, "c"]).node.pos), where(text, "[a.b.c]"));
  });

  it("TOML: quoted keys, multi-line strings and comments do not confuse the locator", () => {
    const text = [
      `"quoted.key" = "a # not a comment"`,
      `'lit' = '''`,
      `multi "line" = not a key`,
      `'''`,
      `basic = """`,
      `one \\"""`,
      `x = "two" """ # comment with "quotes" and = signs`,
      `after = { "k.1" = [ 1, { deep = "v" } ] , k2.k3 = true }`,
      `[ "a b" . c ]  # spaces around the dot`,
      `d = 1979-05-27 07:32:00Z`,
      `e = 0x1F`,
      `f = 9223372036854775807`,
    ].join("\n");
    const root = parse(text, "toml");
    assert.deepStrictEqual(toPlain(root), {
      "quoted.key": "a # not a comment",
      lit: 'multi "line" = not a key\n',
      basic: 'one """\nx = "two" ',
      after: { "k.1": [1, { deep: "v" }], k2: { k3: true } },
      "a b": { c: { d: "1979-05-27T07:32:00.000Z", e: 31, f: "9223372036854775807" } },
    });
    assert.deepStrictEqual(lineCol(at(root, ["after"]).entry!.keyPos), where(text, "after"));
    assert.deepStrictEqual(lineCol(at(root, ["after", "k.1", 1, "deep"]).entry!.keyPos), where(text, "deep"));
    assert.deepStrictEqual(lineCol(at(root, ["after", "k.1", 1, "deep"]).node.pos), where(text, '"v"'));
    assert.deepStrictEqual(lineCol(at(root, ["after", "k2", "k3"]).node.pos), where(text, "true"));
    assert.deepStrictEqual(lineCol(at(root, ["after", "k2"]).entry!.keyPos), where(text, "k2"));
    assert.deepStrictEqual(lineCol(at(root, ["a b", "c"]).entry!.keyPos), where(text, "c ]"));
    assert.deepStrictEqual(lineCol(at(root, ["a b", "c", "d"]).node.pos), where(text, "1979"));
    assert.deepStrictEqual(lineCol(at(root, ["a b", "c", "f"]).node.pos), where(text, "9223"));
  });

  it("TOML: keys keep source order even when they look like integers", () => {
    const root = parse(`b = 1\n10 = 2\n2 = 3\n`, "toml");
    assert.equal(root.kind, "map");
    assert.deepStrictEqual([...(root.kind === "map" ? root.entries.keys() : [])], ["b", "10", "2"]);
  });

  it("JSON: deep key and value", () => {
    const text = JSON_FIXTURE;
    const root = parse(text, "json");
    const weight = at(root, ["tcp", "services", "split", "weighted", "services", 1, "weight"]);
    assert.deepStrictEqual(lineCol(weight.entry!.keyPos), where(text, '"weight": 1.5'));
    assert.deepStrictEqual(lineCol(weight.node.pos), where(text, "1.5e0"));
    const server = at(root, ["tcp", "services", "pg", "loadBalancer", "servers", 1]);
    assert.deepStrictEqual(lineCol(server.node.pos), where(text, '{ "address": "127.0.0.1:5433"'));
    const keyFile = at(root, ["tls", "certificates", 1, "keyFile"]);
    assert.deepStrictEqual(lineCol(keyFile.entry!.keyPos), where(text, '"keyFile"', 1));
    assert.deepStrictEqual(lineCol(keyFile.node.pos), where(text, '"tab'));
    assert.deepStrictEqual(lineCol(root.pos), { line: 1, column: 1 });
  });

  it("a byte order mark is dropped and does not shift columns; CRLF counts as one line break", () => {
    for (const format of ["yaml", "toml", "json"] as const) {
      const text = FIXTURES[format];
      const plain = parse(text, format);
      const withBom = parse(`\uFEFF${text.replaceAll("\n", "\r\n")}`, format);
      assert.deepStrictEqual(toPlain(withBom), EXPECTED, format);
      const path = ["tls", "certificates", 1, "keyFile"];
      assert.deepStrictEqual(
        lineCol(at(withBom, path).entry!.keyPos),
        lineCol(at(plain, path).entry!.keyPos),
      );
      assert.deepStrictEqual(lineCol(at(withBom, path).node.pos), lineCol(at(plain, path).node.pos));
    }
    const root = parse('\uFEFF{"a": 1}', "json");
    assert.deepStrictEqual(lineCol(at(root, ["a"]).entry!.keyPos), { line: 1, column: 2 });
  });

  it("file name is carried in every position", () => {
    const root = parseConfigText("a:\n  b: [1]\n", "conf/dyn.yml", "yaml");
    assert.equal(at(root, ["a", "b", 0]).node.pos.file, "conf/dyn.yml");
  });
});

describe("parseConfigText: syntax errors", () => {
  const cases: {
    name: string;
    format: ConfigFormat;
    text: string;
    line: number;
    column: number;
    match: RegExp;
  }[] = [
    {
      name: "JSON missing comma",
      format: "json",
      text: '{\n  "a": 1\n  "b": 2\n}',
      line: 3,
      column: 3,
      match: /','/,
    },
    {
      name: "JSON trailing comma",
      format: "json",
      text: '{\n  "a": 1,\n}\n',
      line: 3,
      column: 1,
      match: /trailing comma/,
    },
    {
      name: "JSON bad literal",
      format: "json",
      text: '{"a": tru}',
      line: 1,
      column: 7,
      match: /expected a value/,
    },
    {
      name: "JSON bare key",
      format: "json",
      text: "{\n  a: 1\n}",
      line: 2,
      column: 3,
      match: /property name/,
    },
    { name: "JSON bad escape", format: "json", text: '{"a": "x\\q"}', line: 1, column: 9, match: /escape/ },
    {
      name: "JSON raw newline in string",
      format: "json",
      text: '{"a": "x\ny"}',
      line: 1,
      column: 9,
      match: /control/,
    },
    {
      name: "JSON unterminated string",
      format: "json",
      text: '{"a": "xy',
      line: 1,
      column: 7,
      match: /unterminated/,
    },
    { name: "JSON leading zero", format: "json", text: '{"a": 01}', line: 1, column: 7, match: /number/ },
    {
      name: "JSON comment",
      format: "json",
      text: '{\n  // hi\n  "a": 1}',
      line: 2,
      column: 3,
      match: /property name/,
    },
    {
      name: "JSON unclosed object",
      format: "json",
      text: '{"a": 1',
      line: 1,
      column: 8,
      match: /end of file/,
    },
    {
      name: "JSON trailing content",
      format: "json",
      text: '{"a": 1} x',
      line: 1,
      column: 10,
      match: /after/,
    },
    {
      name: "JSON top-level array",
      format: "json",
      text: "\n [1, 2]",
      line: 2,
      column: 2,
      match: /must be an object/,
    },
    { name: "JSON empty", format: "json", text: "  \n", line: 2, column: 1, match: /empty/ },
    {
      name: "TOML missing value",
      format: "toml",
      text: "a = 1\nb = \n",
      line: 2,
      column: 5,
      match: /invalid/,
    },
    {
      name: "TOML unclosed header",
      format: "toml",
      text: "a = 1\n\n[tcp.routers\nx = 1\n",
      line: 3,
      column: 13,
      match: /./,
    },
    {
      name: "TOML unterminated string",
      format: "toml",
      text: 'a = 1\nb = "abc\n',
      line: 2,
      column: 9,
      match: /string/,
    },
    { name: "YAML tab indentation", format: "yaml", text: "a:\n\tb: 1\n", line: 2, column: 1, match: /tab/i },
    {
      name: "YAML unclosed quote",
      format: "yaml",
      text: 'a: 1\nb: "abc\nc: 2\n',
      line: 2,
      column: 4,
      match: /quote/i,
    },
    {
      name: "YAML top-level list",
      format: "yaml",
      text: "# x\n- a\n- b\n",
      line: 2,
      column: 1,
      match: /mapping/,
    },
    { name: "YAML top-level scalar", format: "yaml", text: "hello\n", line: 1, column: 1, match: /mapping/ },
    { name: "YAML key is a map", format: "yaml", text: "? {a: 1}\n: x\n", line: 1, column: 3, match: /key/ },
  ];
  for (const c of cases) {
    it(`${c.name} → ${c.line}:${c.column}`, () => {
      const error = syntaxError(c.text, c.format);
      assert.deepStrictEqual(
        { line: error.pos.line, column: error.pos.column },
        { line: c.line, column: c.column },
      );
      assert.equal(error.pos.file, `test.${c.format}`);
      assert.match(error.message, c.match);
      assert.doesNotMatch(error.message, /\n/, "one-line message, no code excerpt or stack");
    });
  }

  it("YAML with more than one document is refused, and says so", () => {
    const error = syntaxError("a: 1\n---\nb: 2\n", "yaml");
    assert.match(error.message, /more than one YAML document/);
    assert.equal(error.pos.line, 2);
    assert.ok(error.hint);
  });
});

describe("parseConfigText: duplicate keys are refused", () => {
  const cases: { format: ConfigFormat; text: string; needle: string; nth: number }[] = [
    {
      format: "json",
      text: '{\n  "tcp": {\n    "a": 1,\n    "b": 2,\n    "a": 3\n  }\n}',
      needle: '"a"',
      nth: 1,
    },
    { format: "yaml", text: "tcp:\n  a: 1\n  b: 2\n  a: 3\n", needle: "a:", nth: 1 },
    { format: "yaml", text: "x: { a: 1, 'a': 2 }\n", needle: "'a'", nth: 0 },
    { format: "yaml", text: "1: one\n'1': also one\n", needle: "'1'", nth: 0 },
    { format: "toml", text: "[tcp]\na = 1\nb = 2\na = 3\n", needle: "a = 3", nth: 0 },
    { format: "toml", text: "[tcp]\na = 1\n\n[tcp]\nb = 2\n", needle: "tcp", nth: 1 },
  ];
  for (const c of cases) {
    it(`${c.format}: ${JSON.stringify(c.text)}`, () => {
      const error = syntaxError(c.text, c.format);
      assert.deepStrictEqual(lineCol(error.pos), where(c.text, c.needle, c.nth));
      assert.match(error.message, /duplicate|redefine/);
    });
  }

  it("the hint points at the first definition (JSON, YAML)", () => {
    assert.equal(syntaxError('{"a": 1,\n "a": 2}', "json").hint, "first defined at line 1, column 2");
    assert.equal(syntaxError("b: 0\na: 1\na: 2\n", "yaml").hint, "first defined at line 2, column 1");
  });
});

describe("parseConfigText: YAML specifics", () => {
  it("an empty file or one with only comments is an empty map", () => {
    for (const text of ["", "\n\n", "# nothing here\n  # still nothing\n", "---\n"]) {
      const root = parse(text, "yaml");
      assert.equal(root.kind, "map");
      assert.deepStrictEqual(toPlain(root), {});
    }
    assert.deepStrictEqual(toPlain(parse("", "toml")), {});
    assert.deepStrictEqual(toPlain(parse("# just a comment\n", "toml")), {});
  });

  it("anchors, aliases and << merge keys (explicit keys win, earlier merge sources win)", () => {
    const text = `x-defaults: &lb
  terminationDelay: 100
  proxyProtocol: { version: 2 }
x-more: &more
  terminationDelay: 5
  serversTransport: backend
addr: &addr "127.0.0.1:5432"
tcp:
  services:
    a:
      loadBalancer:
        <<: *lb
        servers: [{ address: *addr }]
    b:
      loadBalancer:
        terminationDelay: 200
        <<: [*more, *lb]
`;
    const root = parse(text, "yaml");
    assert.deepStrictEqual(toPlain(at(root, ["tcp", "services"]).node), {
      a: {
        loadBalancer: {
          terminationDelay: 100,
          proxyProtocol: { version: 2 },
          servers: [{ address: "127.0.0.1:5432" }],
        },
      },
      b: {
        loadBalancer: { terminationDelay: 200, serversTransport: "backend", proxyProtocol: { version: 2 } },
      },
    });
    // Merged and aliased content keeps the position of the text that defines it.
    const merged = at(root, ["tcp", "services", "a", "loadBalancer", "terminationDelay"]);
    assert.deepStrictEqual(lineCol(merged.entry!.keyPos), where(text, "terminationDelay"));
    assert.deepStrictEqual(lineCol(merged.node.pos), where(text, "100"));
    const own = at(root, ["tcp", "services", "b", "loadBalancer", "terminationDelay"]);
    assert.deepStrictEqual(lineCol(own.node.pos), where(text, "200"));
  });

  it("a quoted '<<' is an ordinary key", () => {
    assert.deepStrictEqual(toPlain(parse(`a: &a {x: 1}\nb:\n  "<<": *a\n`, "yaml")), {
      a: { x: 1 },
      b: { "<<": { x: 1 } },
    });
  });

  it("a merge key needs a mapping", () => {
    const text = "a: &a [1]\nb:\n  <<: *a\n";
    const error = syntaxError(text, "yaml");
    assert.match(error.message, /merge key/);
    assert.deepStrictEqual(lineCol(error.pos), where(text, "*a"));
  });

  it("self-referencing aliases and alias bombs are refused", () => {
    assert.match(syntaxError("a: &a [1, *a]\n", "yaml").message, /contains it/);
    const levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let k = 1; k < 9; k++) {
      const prev = String.fromCharCode(96 + k);
      const name = String.fromCharCode(97 + k);
      levels.push(`${name}: &${name} [${Array(10).fill(`*${prev}`).join(", ")}]`);
    }
    assert.match(syntaxError(`${levels.join("\n")}\n`, "yaml").message, /alias/);
  });

  it("scalars keep their YAML type; timestamps stay strings; non-string keys become their text", () => {
    const text =
      "s: text\nn: 12\nf: 1.5\nb: true\nz: null\nt: 2001-12-14\nq: '12'\n1.10: decimal key\n~: tilde key\n";
    assert.deepStrictEqual(toPlain(parse(text, "yaml")), {
      s: "text",
      n: 12,
      f: 1.5,
      b: true,
      z: null,
      t: "2001-12-14",
      q: "12",
      "1.10": "decimal key",
      "~": "tilde key",
    });
    const v11 = parse("%YAML 1.1\n---\nt: 2001-12-14t21:59:43.10-05:00\nd: 2002-12-14\n", "yaml");
    assert.deepStrictEqual(toPlain(v11), { t: "2001-12-14t21:59:43.10-05:00", d: "2002-12-14" });
  });

  it("an empty value is null, positioned after its key", () => {
    const root = parse("a:\nb: 1\n", "yaml");
    assert.deepStrictEqual(toPlain(root), { a: null, b: 1 });
    assert.equal(at(root, ["a"]).node.pos.line, 1);
  });
});

describe("parseConfigText: TOML specifics", () => {
  it("dates and times become ISO strings; big integers become strings, safe ones numbers", () => {
    const text =
      "odt = 1979-05-27T07:32:00-07:00\nld = 1979-05-27\nlt = 07:32:00\nbig = 9007199254740993\nsafe = 9007199254740991\nflt = 6.5e-1\n";
    assert.deepStrictEqual(toPlain(parse(text, "toml")), {
      odt: "1979-05-27T07:32:00.000-07:00",
      ld: "1979-05-27",
      lt: "07:32:00.000",
      big: "9007199254740993",
      safe: 9007199254740991,
      flt: 0.65,
    });
  });
});

describe("formatFromPath", () => {
  it("maps extensions case-insensitively", () => {
    assert.equal(formatFromPath("conf/dynamic.yml"), "yaml");
    assert.equal(formatFromPath("/etc/tlsroute/Traefik.YAML"), "yaml");
    assert.equal(formatFromPath("a.b/c.Toml"), "toml");
    assert.equal(formatFromPath("x.JSON"), "json");
    assert.equal(formatFromPath("x.json5"), null);
    assert.equal(formatFromPath("yaml"), null);
    assert.equal(formatFromPath("dir.yaml/file"), null);
    assert.equal(formatFromPath(".toml"), "toml");
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

/** JSON-compatible values. "__proto__" keys are left out: toPlain builds plain objects with `=`. */
const key = fc.string({ maxLength: 12 }).filter((k) => k !== "__proto__");
const { object: jsonObject } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.string({ maxLength: 20, unit: "binary" }),
    fc.string({ maxLength: 20 }),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 5 }),
    tie("object"),
  ),
  object: fc.dictionary(key, tie("value"), { maxKeys: 6 }),
}));

/** TOML has no null, and writes -0 as 0. */
const { object: tomlObject } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.string({ maxLength: 20 }),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e15, max: 1e15 }).map((d) => (d === 0 ? 0 : d)),
    fc.boolean(),
    fc.array(tie("value"), { maxLength: 4 }),
    tie("object"),
  ),
  object: fc.dictionary(key, tie("value"), { maxKeys: 5 }),
}));

function assertOnlySyntaxErrors(text: string): void {
  for (const format of ["yaml", "toml", "json"] as const) {
    try {
      parseConfigText(text, "fuzz", format);
    } catch (error) {
      if (!(error instanceof ConfigSyntaxError)) {
        assert.fail(`${format} threw ${String(error)} for ${JSON.stringify(text)}`);
      }
      assert.ok(error.pos.line >= 1 && error.pos.column >= 1);
    }
  }
}

describe("parseConfigText: properties", () => {
  it("JSON.stringify(x, null, 2) parses to the same value as JSON, as YAML, with keys located", () => {
    fc.assert(
      fc.property(jsonObject, (x) => {
        const text = JSON.stringify(x, null, 2);
        const expected = JSON.parse(text) as unknown;
        for (const format of ["json", "yaml"] as const) {
          const root = parse(text, format);
          assert.deepStrictEqual(toPlain(root), expected, format);
          walk(
            root,
            (k, entry) =>
              assert.ok(
                text.startsWith(JSON.stringify(k), offsetOf(text, entry.keyPos)),
                `${format} key ${k}`,
              ),
            (node) => {
              if (node.kind === "scalar" && typeof node.value === "string") {
                assert.ok(text.startsWith(JSON.stringify(node.value), offsetOf(text, node.pos)), format);
              }
            },
          );
        }
      }),
      { numRuns: 300 },
    );
  });

  it("TOML written by smol-toml parses back with keys located at their text", () => {
    fc.assert(
      fc.property(tomlObject, (x) => {
        const text = tomlStringify(x);
        const root = parse(text, "toml");
        assert.deepStrictEqual(toPlain(root), JSON.parse(JSON.stringify(x)));
        walk(
          root,
          (k, entry) => {
            const rest = text.slice(offsetOf(text, entry.keyPos));
            assert.ok(
              rest.startsWith(k) || rest.startsWith('"'),
              `key ${JSON.stringify(k)} reads ${rest.slice(0, 10)}`,
            );
          },
          (node) => {
            if (node.kind !== "scalar") return;
            const first = text[offsetOf(text, node.pos)];
            const expected =
              typeof node.value === "string" ? '"' : typeof node.value === "boolean" ? "tf" : "-+0123456789";
            assert.ok(
              first !== undefined && expected.includes(first),
              `value ${String(node.value)} reads ${first}`,
            );
          },
        );
      }),
      { numRuns: 300 },
    );
  });

  it("random text never throws anything but ConfigSyntaxError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        assertOnlySyntaxErrors(new TextDecoder().decode(bytes));
        assertOnlySyntaxErrors(Buffer.from(bytes).toString("latin1"));
      }),
      { numRuns: 400 },
    );
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom(..."{}[]()\"'\\:,=.#-*&!|>< \n\t\r0aZ"), maxLength: 80 }),
        assertOnlySyntaxErrors,
      ),
      { numRuns: 400 },
    );
  });

  it("damaged configuration files never throw anything but ConfigSyntaxError", () => {
    const texts = Object.values(FIXTURES);
    fc.assert(
      fc.property(
        fc.constantFrom(...texts),
        fc.nat(),
        fc.nat({ max: 20 }),
        fc.string({ maxLength: 4 }),
        (text, at, cut, insert) => {
          const i = at % (text.length + 1);
          assertOnlySyntaxErrors(text.slice(0, i) + insert + text.slice(i + cut));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("absurd nesting is a ConfigSyntaxError, not a stack overflow", () => {
    for (const format of ["yaml", "json", "toml"] as const) {
      const deep = format === "toml" ? `a = ${"[".repeat(5000)}` : `{"a": ${"[".repeat(20000)}`;
      assert.throws(() => parse(deep, format), ConfigSyntaxError);
    }
    const header = `[${Array(3000).fill("a").join(".")}]\nx = 1\n`;
    assert.throws(() => parse(header, "toml"), ConfigSyntaxError);
  });
});
