/**
 * Wires the ACME manager to a running proxy in one process: challenge certificates go to the
 * server's challenge store, obtained certificates to the certificates it serves.
 */
import type { Logger } from "../proxy/log.ts";
import type { ProxyServer } from "../proxy/server.ts";
import type { Workspace } from "../workspace.ts";
import { AcmeManager } from "./manager.ts";

/** Starts the resolvers' work once the entry points listen (the CA validates through them). */
export function startResolvers(workspace: Workspace, server: ProxyServer, log: Logger): AcmeManager {
  const manager = new AcmeManager(
    log,
    {
      publish: (name, certificate) => server.challenges.set(name, certificate),
      withdraw: (name, id) => server.challenges.delete(name, id),
    },
    (certificates) => server.setResolverCertificates(certificates),
  );
  manager.update(workspace);
  return manager;
}
