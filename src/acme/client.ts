/**
 * One certificate order against an ACME CA (RFC 8555), answered with TLS-ALPN-01 (RFC 8737). The
 * protocol (JWS signing, nonces, polling, CSR encoding, the challenge certificate's acmeIdentifier
 * extension) is the acme-client library's job; this module decides the steps and says in plain words
 * where an order failed.
 */
import { Agent, get as httpsGet } from "node:https";
import { rootCertificates } from "node:tls";
import type AcmeLibrary from "acme-client";
import type { ChallengeCertificate } from "./challenges.ts";
import { type AcmeKeyType, accountKeyPem, newCertificateKey } from "./keys.ts";

export interface AccountState {
  /** RSA account key, PKCS#1 DER. */
  keyDer: Buffer;
  /** Account URL from an earlier registration; "" = register now. */
  uri: string;
  body: unknown;
}

export interface OrderRequest {
  directoryUrl: string;
  email: string | null;
  account: AccountState;
  /** Every name of the certificate, the first one becomes its subject. */
  names: string[];
  keyType: AcmeKeyType;
  /**
   * Called for each name before the CA is told to validate it (awaited: with workers, every worker
   * must hold the certificate before the CA connects), and after validation ends.
   */
  publish(name: string, certificate: ChallengeCertificate): void | Promise<void>;
  withdraw(name: string, id: string): void;
  progress(step: string, fields?: Record<string, unknown>): void;
  /** Called once a new account is registered, before the order: it is stored even if the order fails. */
  registered(account: AccountState): void;
}

export interface OrderResult {
  certPem: string;
  keyPem: string;
  /** The account as it is now (registered during this order when it was not yet). */
  account: AccountState;
}

/** Where an order failed, for the log: the step and the CA's own words. */
export class OrderError extends Error {
  constructor(
    readonly step: string,
    message: string,
  ) {
    super(`${step}: ${message}`);
    this.name = "OrderError";
  }
}

let challengeSerial = 0;
let caAgent: Agent | undefined;
let library: Promise<typeof AcmeLibrary> | null = null;

/**
 * acme-client (with axios and node-forge) costs a quarter second to load: it is loaded on the first
 * order, so validate, explain and a serve without resolvers never pay for it.
 */
function acmeLibrary(): Promise<typeof AcmeLibrary> {
  library ??= import("acme-client").then((module) => {
    const acme = module.default;
    // Our own retry loop (with its log lines) handles an unreachable CA; the library's own five slow
    // retries per request would only hide it. Rate limits and 5xx still get one quick retry.
    const settings = (
      acme.axios.defaults as { acmeSettings?: { retryMaxAttempts: number; retryDefaultDelay: number } }
    ).acmeSettings;
    if (settings) {
      settings.retryMaxAttempts = 2;
      settings.retryDefaultDelay = 1;
    }
    if (caAgent) acme.axios.defaults.httpsAgent = caAgent;
    return acme;
  });
  return library;
}

/**
 * Trust for the CA's HTTPS API: the system roots plus every resolver's caCertificates. acme-client
 * sends all requests through one shared HTTP client, so the extra roots are trusted for every
 * resolver; they only add trust anchors, never remove the system ones.
 */
export function trustCaCertificates(extraPems: readonly string[]): void {
  caAgent =
    extraPems.length === 0
      ? undefined
      : new Agent({ ca: [...rootCertificates, ...extraPems], keepAlive: true });
  if (library)
    void library.then((acme) => {
      acme.axios.defaults.httpsAgent = caAgent;
    });
}

async function step<T>(name: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof OrderError) throw err;
    throw new OrderError(name, describe(err));
  }
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as Error & { code?: string }).code;
  if (code === "ECONNREFUSED") return "connection refused (is the CA running and caServer right?)";
  if (code === "ENOTFOUND") return "the CA's host name does not resolve";
  if (code === "ETIMEDOUT" || code === "ECONNABORTED") return "the CA did not answer in time";
  if (
    code === "DEPTH_ZERO_SELF_SIGNED_CERT" ||
    code === "SELF_SIGNED_CERT_IN_CHAIN" ||
    code === "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
  )
    return `the CA's HTTPS certificate is not trusted (${code}); add its root to acme.caCertificates`;
  return err.message || code || "unknown error";
}

/**
 * Fetches the directory once before the library does: the library loses the cause of a network
 * failure (a refused connection reaches us as a TypeError), and the cause is what the log must say.
 */
function probeDirectory(url: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const req = httpsGet(url, { agent: caAgent, timeout: 15_000 }, (res) => {
      res.resume();
      if (res.statusCode === 200) resolvePromise();
      else reject(new Error(`the CA answered HTTP ${res.statusCode} for the directory ${url}`));
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })));
    req.on("error", reject);
  });
}

export async function orderCertificate(request: OrderRequest): Promise<OrderResult> {
  const { names } = request;
  await step("reach the CA", () => probeDirectory(request.directoryUrl));
  const acme = await acmeLibrary();
  const accountKey = accountKeyPem(request.account.keyDer);
  let account = request.account;
  const client = new acme.Client({
    directoryUrl: request.directoryUrl,
    accountKey,
    ...(account.uri ? { accountUrl: account.uri } : {}),
    // Poll order and challenge status quickly at first; a real CA answers within seconds.
    backoffAttempts: 12,
    backoffMin: 500,
    backoffMax: 10_000,
  });

  if (!account.uri) {
    request.progress("registering ACME account", request.email ? { email: request.email } : undefined);
    const body = await step("register account", () =>
      client.createAccount({
        termsOfServiceAgreed: true,
        ...(request.email ? { contact: [`mailto:${request.email}`] } : {}),
      }),
    );
    account = { ...account, uri: client.getAccountUrl(), body };
    request.registered(account);
  }

  const order = await step("create order", () =>
    client.createOrder({ identifiers: names.map((value) => ({ type: "dns", value })) }),
  );
  const authorizations = await step("fetch authorizations", () => client.getAuthorizations(order));

  await Promise.all(
    authorizations.map(async (authz) => {
      const name = authz.identifier.value;
      if (authz.status === "valid") return;
      // The library's types list only http-01 and dns-01, but the CA's list is whatever it offers.
      const challenge = authz.challenges.find((c) => (c.type as string) === "tls-alpn-01");
      if (!challenge) {
        throw new OrderError(
          `validate ${name}`,
          `the CA offers no tls-alpn-01 challenge (offered: ${authz.challenges.map((c) => c.type).join(", ") || "none"})`,
        );
      }
      const keyAuthorization = await step(`validate ${name}`, () =>
        client.getChallengeKeyAuthorization(challenge),
      );
      const [keyPem, certPem] = await step(`validate ${name}`, () =>
        acme.crypto.createAlpnCertificate(authz, keyAuthorization),
      );
      challengeSerial += 1;
      const id = `acme-challenge-${challengeSerial}`;
      await request.publish(name, { id, certPem: certPem.toString(), keyPem: keyPem.toString() });
      try {
        request.progress("CA is validating", { name, challenge: "tls-alpn-01" });
        await step(`validate ${name}`, async () => {
          await client.completeChallenge(challenge);
          await client.waitForValidStatus(challenge);
        });
      } finally {
        request.withdraw(name, id);
      }
    }),
  );

  const keyPem = await newCertificateKey(request.keyType);
  const [, csr] = await step("create CSR", () =>
    acme.crypto.createCsr({ commonName: names[0]!, altNames: names }, keyPem),
  );
  const finalized = await step("finalize order", () => client.finalizeOrder(order, csr));
  const certPem = await step("download certificate", () => client.getCertificate(finalized));
  return { certPem, keyPem, account };
}
