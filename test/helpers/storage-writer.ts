/**
 * Child process for the interrupted-write test: saves one resolver's section of a storage file again
 * and again with writeResolverStorage, each time a few megabytes, until it is killed. The parent kills
 * it with SIGKILL at random moments and checks the file each time.
 *
 * Usage: node --import tsx test/helpers/storage-writer.ts FILE RESOLVER COUNT
 *
 * Every save is one "generation" n of COUNT certificates: the account email is gen-n@example.com and
 * certificate i is named cert-i.gen-n.example.com, so the parent can tell a complete save from a mix
 * of two. After each save a line "saved n" goes to stdout (synchronous on a pipe), which tells the
 * parent that saving is under way.
 */
import { randomBytes } from "node:crypto";
import { type ResolverStorage, writeResolverStorage } from "../../src/acme/storage.ts";

function generationName(n: number, i: number): string {
  return `cert-${i}.gen-${n}.example.com`;
}

function pemLike(label: string, bytes: number): string {
  const body = randomBytes(bytes).toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

function storageFor(n: number, count: number): ResolverStorage {
  return {
    account: {
      email: `gen-${n}@example.com`,
      uri: `https://ca.example/acct/${n}`,
      body: { status: "valid" },
      privateKeyDer: randomBytes(2048),
      keyType: "P256",
    },
    certificates: Array.from({ length: count }, (_, i) => ({
      domain: { main: generationName(n, i), sans: [`www.${generationName(n, i)}`] },
      // About 10 KiB of PEM text each, so with a hundred or more a save takes long enough for kills
      // to land in the middle of writing.
      certPem: pemLike("CERTIFICATE", 7_000),
      keyPem: pemLike("PRIVATE KEY", 300),
      store: "default",
    })),
  };
}

const [file, resolver, countText] = process.argv.slice(2);
const count = Number(countText);
if (!file || !resolver || !Number.isInteger(count) || count < 1) {
  process.stderr.write("usage: storage-writer.ts FILE RESOLVER COUNT\n");
  process.exit(2);
}
for (let n = 1; ; n++) {
  writeResolverStorage(file, resolver, storageFor(n, count));
  process.stdout.write(`saved ${n}\n`);
}
