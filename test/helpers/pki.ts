/**
 * Test certificates made on the fly with the `openssl` CLI, so no certificate or key is ever committed.
 *
 * Every certificate (CA, leaf, self-signed) goes through `openssl ca` with an explicit `-startdate` and
 * `-enddate`. That is how expired certificates are produced: OpenSSL 3.0 refuses a negative `-days` in
 * `req -x509` and `x509 -req` (and has no `-not_before`/`-not_after` before 3.4), but `openssl ca` accepts
 * any validity window, including one that ended in the past. No faketime, no clock tricks.
 *
 * Keys are EC P-256 unless asked otherwise, which keeps a certificate at two short openssl runs.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export type TestKeyType = "ec" | "rsa" | "ed25519";

export interface PemFiles {
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
}

export interface TestCa extends PemFiles {
  name: string;
}

export interface IssuedCert extends PemFiles {
  /** Leaf followed by its issuing CA (equal to certPem for self-signed certificates). */
  chainPem: string;
  chainFile: string;
}

export interface CertRequest {
  /** Common name; omitted = a subject with only `O=tlsroute test`. */
  cn?: string;
  dns?: string[];
  ips?: string[];
  /** Validity from now; negative = expired that many days ago. Default 365. */
  days?: number;
  /** Make notBefore this many days in the past (a certificate well into its lifetime). */
  issuedDaysAgo?: number;
  keyType?: TestKeyType;
  /** Extra subject attributes placed before CN, e.g. `{ O: "Acme" }`. */
  subject?: Record<string, string>;
}

export interface LeafRequest extends CertRequest {
  ca: TestCa;
}

export interface Pki {
  dir: string;
  ca(name: string, options?: { keyType?: TestKeyType; days?: number }): TestCa;
  leaf(request: LeafRequest): IssuedCert;
  selfSigned(request: CertRequest): IssuedCert;
}

const DAY_MS = 86_400_000;

const CA_CONFIG = `[ ca ]
default_ca = tlsroute_test

[ tlsroute_test ]
database = db/index.txt
new_certs_dir = db
default_md = default
policy = any_subject
unique_subject = no
rand_serial = yes
copy_extensions = none
preserve = yes

[ any_subject ]
countryName = optional
stateOrProvinceName = optional
localityName = optional
organizationName = optional
organizationalUnitName = optional
commonName = optional
emailAddress = optional

[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
O = unused
`;

const CA_EXTENSIONS = `basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
`;

function newKeyArgs(keyType: TestKeyType): string[] {
  switch (keyType) {
    case "ec":
      return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    case "rsa":
      return ["-newkey", "rsa:2048"];
    case "ed25519":
      return ["-newkey", "ed25519"];
  }
}

/** `YYYYMMDDHHMMSSZ`, the GeneralizedTime form `openssl ca -startdate/-enddate` accepts. */
function opensslTime(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace(/[-:T]/g, "")}Z`;
}

/** `/O=x/CN=y` with `/` and `\` escaped the way `openssl req -subj` wants. */
function subjectArg(request: CertRequest): string {
  const parts = Object.entries(request.subject ?? {});
  if (request.cn !== undefined) parts.push(["CN", request.cn]);
  if (parts.length === 0) parts.push(["O", "tlsroute test"]);
  return parts.map(([k, v]) => `/${k}=${v.replace(/[\\/]/g, (c) => `\\${c}`)}`).join("");
}

function leafExtensions(request: CertRequest): string {
  const alt = [
    ...(request.dns ?? []).map((d, i) => `DNS.${i + 1} = ${d}`),
    ...(request.ips ?? []).map((ip, i) => `IP.${i + 1} = ${ip}`),
  ];
  const usage = request.keyType === "rsa" ? "digitalSignature, keyEncipherment" : "digitalSignature";
  const lines = [
    "basicConstraints = CA:FALSE",
    `keyUsage = critical, ${usage}`,
    "extendedKeyUsage = serverAuth, clientAuth",
    "subjectKeyIdentifier = hash",
  ];
  if (alt.length > 0) lines.push("subjectAltName = @alt_names", "", "[ alt_names ]", ...alt);
  return `${lines.join("\n")}\n`;
}

/** Creates `dir` (if needed) and returns certificate factories writing into it. */
export function makePki(dir: string): Pki {
  mkdirSync(path.join(dir, "db"), { recursive: true });
  writeFileSync(path.join(dir, "db", "index.txt"), "");
  const configFile = path.join(dir, "openssl-ca.cnf");
  writeFileSync(configFile, CA_CONFIG);
  let counter = 0;

  const openssl = (args: string[]): void => {
    // cwd = dir because the config names its database relative to it.
    execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  };

  const fileBase = (label: string): string => {
    counter += 1;
    const slug = label.replace(/[^A-Za-z0-9.-]+/g, "_").slice(0, 40) || "cert";
    return path.join(dir, `${String(counter).padStart(3, "0")}-${slug}`);
  };

  const validity = (days: number, issuedDaysAgo = 0): string[] => {
    const now = Date.now();
    const notAfter = new Date(now + days * DAY_MS);
    // An expired certificate still needs notBefore < notAfter; a valid one starts an hour ago so that a
    // second of clock skew cannot make it "not yet valid".
    const notBefore = new Date(
      Math.min(now - 3_600_000 - issuedDaysAgo * DAY_MS, notAfter.getTime() - DAY_MS),
    );
    return ["-startdate", opensslTime(notBefore), "-enddate", opensslTime(notAfter)];
  };

  /** Key + CSR, then `openssl ca` signs it (with its own key when `signer` is undefined). */
  const issue = (
    label: string,
    request: CertRequest,
    extensions: string,
    signer: TestCa | undefined,
  ): PemFiles => {
    const base = fileBase(label);
    const keyFile = `${base}.key`;
    const csrFile = `${base}.csr`;
    const certFile = `${base}.crt`;
    const extFile = `${base}.ext`;
    writeFileSync(extFile, extensions);
    openssl([
      "req",
      "-new",
      "-config",
      configFile,
      ...newKeyArgs(request.keyType ?? "ec"),
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      csrFile,
      "-subj",
      subjectArg(request),
      "-utf8",
    ]);
    const signing = signer
      ? ["-cert", signer.certFile, "-keyfile", signer.keyFile]
      : ["-selfsign", "-keyfile", keyFile];
    openssl([
      "ca",
      "-batch",
      "-config",
      configFile,
      "-notext",
      "-utf8",
      ...signing,
      ...validity(request.days ?? 365, request.issuedDaysAgo),
      "-extfile",
      extFile,
      "-in",
      csrFile,
      "-out",
      certFile,
    ]);
    return {
      certFile,
      keyFile,
      certPem: readFileSync(certFile, "utf8"),
      keyPem: readFileSync(keyFile, "utf8"),
    };
  };

  const withChain = (files: PemFiles, ca: TestCa | undefined): IssuedCert => {
    const chainPem = ca ? files.certPem + ca.certPem : files.certPem;
    const chainFile = `${files.certFile.replace(/\.crt$/, "")}.chain.pem`;
    writeFileSync(chainFile, chainPem);
    return { ...files, chainPem, chainFile };
  };

  return {
    dir,
    ca(name, options = {}) {
      const files = issue(
        `ca-${name}`,
        { cn: name, keyType: options.keyType ?? "ec", days: options.days ?? 3650 },
        CA_EXTENSIONS,
        undefined,
      );
      return { ...files, name };
    },
    leaf(request) {
      const files = issue(request.cn ?? "leaf", request, leafExtensions(request), request.ca);
      return withChain(files, request.ca);
    },
    selfSigned(request) {
      const files = issue(request.cn ?? "self", request, leafExtensions(request), undefined);
      return withChain(files, undefined);
    },
  };
}
