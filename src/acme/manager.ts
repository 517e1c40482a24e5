/**
 * Keeps every certificate the routers ask resolvers for: reads what is stored, orders what is
 * missing or due for renewal, retries failures with back-off, saves results, and hands the current
 * set to whoever serves them. Nothing here blocks serving: until a certificate arrives, the store's
 * default (or generated) certificate is served, and a failed renewal keeps the old certificate.
 */
import type { AcmeResolver } from "../config/model.ts";
import type { Logger } from "../proxy/log.ts";
import { describePemSource, readPem, resolvePemSource } from "../tls/pem.ts";
import { currentRuntime } from "../tls/runtime-support.ts";
import type { Workspace } from "../workspace.ts";
import type { ChallengeCertificate } from "./challenges.ts";
import { type AccountState, OrderError, orderCertificate, trustCaCertificates } from "./client.ts";
import { keyTypeOf, newAccountKey } from "./keys.ts";
import { type CertificateRequest, covers } from "./plan.ts";
import { MAX_SLEEP_MS, renewalTime, retryDelayMs } from "./renewal.ts";
import {
  type ResolverStorage,
  readResolverStorage,
  type StoredCertificate,
  writeResolverStorage,
} from "./storage.ts";
import { type ResolverCertificate, storageLabel, storagePath, toCatalogCertificate } from "./stored.ts";

export const LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory";

/** Where challenge certificates go: the process's ChallengeStore, or every worker. */
export interface ChallengeSink {
  /** May return a promise: the order waits for it before the CA is told to validate. */
  publish(name: string, certificate: ChallengeCertificate): void | Promise<void>;
  withdraw(name: string, id: string): void;
}

interface ResolverState {
  resolver: AcmeResolver;
  /** Storage file, or null to keep everything in memory only. */
  path: string | null;
  storage: ResolverStorage;
  /** Orders of one resolver run one at a time: they share the account, which may not be registered yet. */
  queue: Promise<void>;
}

interface RequestState {
  request: CertificateRequest;
  failures: number;
  timer: ReturnType<typeof setTimeout> | null;
  running: boolean;
}

const keyOf = (r: CertificateRequest) => `${r.resolver}\u0000${[r.main, ...r.sans].sort().join(",")}`;

export class AcmeManager {
  private resolvers = new Map<string, ResolverState>();
  private requests = new Map<string, RequestState>();
  private stopped = false;
  private readonly parsed = new WeakMap<
    StoredCertificate,
    { label: string; cert: ResolverCertificate | null }
  >();
  private denoWarned = false;

  constructor(
    private readonly log: Logger,
    private readonly challenges: ChallengeSink,
    /**
     * Receives the whole set of resolver certificates whenever it changes (and once per update). A
     * promise says when they are served everywhere (every worker under --workers).
     */
    private readonly onCertificates: (certificates: ResolverCertificate[]) => Promise<void> | void,
  ) {}

  /** Adopts a (new) configuration: reads storage again and orders whatever is missing or due. */
  update(workspace: Workspace): void {
    if (this.stopped) return;
    const { model } = workspace;
    const plan = workspace.acme;
    // Not on Deno, which orders nothing (below) and would want --allow-sys for the system roots.
    if (currentRuntime() !== "deno") trustCaCertificates(this.caPems(model.resolvers.values()));

    const resolvers = new Map<string, ResolverState>();
    for (const resolver of model.resolvers.values()) {
      if (resolver.challenge?.value !== "tlsChallenge") continue;
      const path = storagePath(resolver);
      const previous = this.resolvers.get(resolver.name);
      let storage: ResolverStorage = previous?.path === path && !path ? previous.storage : emptyStorage();
      if (path) {
        const read = readResolverStorage(path, resolver.name);
        // validate reports an unreadable file; serve keeps what it had rather than start from nothing.
        storage = read.ok ? read.storage : (previous?.storage ?? emptyStorage());
      }
      resolvers.set(resolver.name, { resolver, path, storage, queue: previous?.queue ?? Promise.resolve() });
    }
    this.resolvers = resolvers;

    const requests = new Map<string, RequestState>();
    for (const request of plan.requests) {
      if (!resolvers.has(request.resolver)) continue;
      const key = keyOf(request);
      const known = this.requests.get(key);
      // The same object is kept: a pending retry timer or a running order holds on to it.
      if (known) known.request = request;
      requests.set(key, known ?? { request, failures: 0, timer: null, running: false });
    }
    for (const [key, state] of this.requests) {
      if (!requests.has(key) && state.timer) clearTimeout(state.timer);
    }
    this.requests = requests;
    // Not awaited: stored certificates are served as soon as each process gets them.
    void this.publishCertificates();
    if (requests.size > 0 && currentRuntime() === "deno") {
      // Orders could only fail there (see runtime-acme-challenge-unsupported), and failed validations
      // count against the CA's rate limits: say so once and serve what is stored.
      if (!this.denoWarned)
        this.log.error(
          "ACME orders are off on Deno: its TLS cannot serve the TLS-ALPN-01 challenge certificate",
          {
            hint: "Run serve on Node or Bun to obtain certificates; stored ones are served.",
          },
        );
      this.denoWarned = true;
      return;
    }
    for (const state of requests.values()) {
      if (state.running) continue;
      // A reload is often the fix for a failing order (caServer, DNS, a port): try again now rather
      // than at the end of the back-off.
      if (state.failures > 0 && state.timer) clearTimeout(state.timer);
      this.check(state);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const state of this.requests.values()) if (state.timer) clearTimeout(state.timer);
  }

  private caPems(resolvers: Iterable<AcmeResolver>): string[] {
    const pems: string[] = [];
    for (const resolver of resolvers) {
      for (const file of resolver.caCertificates) {
        // A path or inline PEM, read the way every other certificate value of the configuration is.
        const source = resolvePemSource(file.value, resolver.baseDir);
        const text = readPem(source);
        if (text.ok) pems.push(text.value);
        else {
          this.log.error("cannot read ACME CA certificate", {
            resolver: resolver.name,
            file: describePemSource(source),
            error: text.message,
          });
        }
      }
    }
    return pems;
  }

  /** All usable stored certificates, as the catalog takes them. */
  private certificates(): ResolverCertificate[] {
    const out: ResolverCertificate[] = [];
    for (const state of this.resolvers.values()) {
      const label = storageLabel(state.path ?? "memory", state.resolver.name);
      for (const stored of state.storage.certificates) {
        const entry = this.catalogEntry(stored, state.resolver.name, label);
        if (entry) out.push(entry);
      }
    }
    return out;
  }

  /**
   * Each stored certificate is parsed once: every check and every publication looks at all of them,
   * which with a thousand certificates would otherwise mean a million parses per pass.
   */
  private catalogEntry(
    stored: StoredCertificate,
    resolver: string,
    label: string,
  ): ResolverCertificate | null {
    const cached = this.parsed.get(stored);
    if (cached && cached.label === label) return cached.cert;
    const loaded = toCatalogCertificate(stored, resolver, label);
    const cert = loaded.ok ? loaded.cert : null;
    this.parsed.set(stored, { label, cert });
    return cert;
  }

  private publishCertificates(): Promise<void> | void {
    return this.onCertificates(this.certificates());
  }

  /** Orders now when nothing valid is stored or renewal is due; otherwise sleeps until it is. */
  private check(state: RequestState): void {
    if (this.stopped) return;
    const { request } = state;
    const resolverState = this.resolvers.get(request.resolver);
    if (!resolverState) return;
    const names = [request.main, ...request.sans];
    const stored = this.certificates().find(
      (c) => c.resolver === request.resolver && covers(c.names, request),
    );
    const now = Date.now();
    if (stored) {
      const leaf = stored.chain[0]!;
      const due = renewalTime(leaf, resolverState.resolver.certificatesDurationHours);
      if (due.getTime() > now) {
        this.log.info("stored certificate is valid", {
          resolver: request.resolver,
          names,
          notAfter: leaf.notAfter.toISOString(),
          renewAfter: due.toISOString(),
        });
        this.schedule(state, due.getTime() - now);
        return;
      }
      this.order(state, `renewal due since ${due.toISOString()} (expires ${leaf.notAfter.toISOString()})`);
      return;
    }
    this.order(state, "no stored certificate");
  }

  private schedule(state: RequestState, delayMs: number): void {
    if (state.timer) clearTimeout(state.timer);
    state.timer = setTimeout(
      () => {
        state.timer = null;
        if (state.failures > 0) this.order(state, `retry after ${state.failures} failed attempt(s)`);
        else this.check(state);
      },
      Math.min(Math.max(delayMs, 0), MAX_SLEEP_MS),
    );
    // A pending renewal must not keep a stopping process alive.
    state.timer.unref?.();
  }

  private order(state: RequestState, why: string): void {
    const resolverState = this.resolvers.get(state.request.resolver);
    if (!resolverState || state.running || this.stopped) return;
    state.running = true;
    resolverState.queue = resolverState.queue.then(() => this.runOrder(state, resolverState, why));
  }

  private async runOrder(state: RequestState, queued: ResolverState, why: string): Promise<void> {
    // A reload while this order waited in the queue may have changed the resolver (caServer, email).
    const resolverState = this.current(queued);
    const { request } = state;
    const { resolver } = resolverState;
    const names = [request.main, ...request.sans];
    const attempt = state.failures + 1;
    try {
      if (this.stopped || this.requests.get(keyOf(request)) !== state) return;
      this.log.info("requesting certificate", { resolver: resolver.name, names, attempt, reason: why });
      const account = await this.account(resolverState);
      const result = await orderCertificate({
        directoryUrl: resolver.caServer?.value ?? LETS_ENCRYPT_DIRECTORY,
        email: resolver.email?.value ?? null,
        account,
        names,
        keyType: keyTypeOf(resolver.keyType?.value),
        publish: (name, cert) => this.challenges.publish(name, cert),
        withdraw: (name, id) => this.challenges.withdraw(name, id),
        progress: (step, fields) => this.log.debug(step, { resolver: resolver.name, ...fields }),
        registered: (registered) => this.saveAccount(resolverState, registered),
      });
      this.saveCertificate(resolverState, request, result.certPem, result.keyPem);
      state.failures = 0;
      const stored = this.certificates().find(
        (c) => c.resolver === resolver.name && covers(c.names, request),
      );
      const leaf = stored?.chain[0];
      // Logged once it is served, so that the line can be trusted by whoever waits for it.
      await this.publishCertificates();
      this.log.info("certificate obtained", {
        resolver: resolver.name,
        names,
        notAfter: leaf?.notAfter.toISOString(),
      });
      if (leaf)
        this.schedule(state, renewalTime(leaf, resolver.certificatesDurationHours).getTime() - Date.now());
    } catch (err) {
      state.failures += 1;
      const retryMs = retryDelayMs(state.failures);
      this.log.warn("certificate request failed", {
        resolver: resolver.name,
        names,
        attempt,
        error: err instanceof OrderError || err instanceof Error ? err.message : String(err),
        retryInSeconds: Math.round(retryMs / 1000),
      });
      this.schedule(state, retryMs);
    } finally {
      state.running = false;
    }
  }

  /** The resolver's account, a new key made (and stored) when there is none yet. */
  private async account(state: ResolverState): Promise<AccountState> {
    const stored = state.storage.account;
    if (stored) return { keyDer: stored.privateKeyDer, uri: stored.uri, body: stored.body };
    const keyDer = await newAccountKey();
    const account: AccountState = { keyDer, uri: "", body: null };
    this.saveAccount(state, account);
    return account;
  }

  /**
   * The resolver's state now: a reload during an order replaces it, and what the order brings must
   * land in the new one (else it would be neither served nor seen by the next check).
   */
  private current(state: ResolverState): ResolverState {
    return this.resolvers.get(state.resolver.name) ?? state;
  }

  private saveAccount(order: ResolverState, account: AccountState): void {
    const state = this.current(order);
    state.storage = {
      ...state.storage,
      account: {
        email: state.resolver.email?.value ?? "",
        uri: account.uri,
        body: account.body,
        privateKeyDer: account.keyDer,
        keyType: keyTypeOf(state.resolver.keyType?.value).storedName,
      },
    };
    this.persist(state);
  }

  private saveCertificate(
    order: ResolverState,
    request: CertificateRequest,
    certPem: string,
    keyPem: string,
  ): void {
    const state = this.current(order);
    const wanted = new Set([request.main, ...request.sans]);
    const sameDomain = (main: string, sans: string[]) => {
      const names = new Set([main, ...sans]);
      return names.size === wanted.size && [...names].every((n) => wanted.has(n));
    };
    state.storage = {
      ...state.storage,
      certificates: [
        ...state.storage.certificates.filter((c) => !sameDomain(c.domain.main, c.domain.sans)),
        { domain: { main: request.main, sans: request.sans }, certPem, keyPem, store: "default" },
      ],
    };
    this.persist(state);
  }

  private persist(state: ResolverState): void {
    if (!state.path) return;
    this.log.debug("storing ACME data", { resolver: state.resolver.name, file: state.path });
    try {
      writeResolverStorage(state.path, state.resolver.name, state.storage);
    } catch (err) {
      // The certificate is still served from memory; the next start orders it again.
      this.log.error("cannot write ACME storage", {
        resolver: state.resolver.name,
        file: state.path,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }
}

function emptyStorage(): ResolverStorage {
  return { account: null, certificates: [] };
}
