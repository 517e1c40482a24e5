/**
 * Reaching a backend once a connection is routed, whatever the socket layer: the first candidate
 * that answers, and the access line when the relay to it ends.
 */
import type { DialFailure } from "./dial.ts";
import { type AccessReason, type AccessRecord, type Logger, logUnexpected } from "./log.ts";
import { type RelayOptions, type RelayResult, relayNote } from "./relay.ts";
import type { ServerTarget } from "./services.ts";
import { WHOAMI_ADDRESS } from "./whoami.ts";

/**
 * Dials the candidates in order until one answers; the access record names the server that did.
 * `whoami@internal` among real servers is skipped (it answers only as a service's sole server).
 */
export async function dialFirst<Dialed extends { ok: true }>(
  candidates: readonly ServerTarget[],
  record: AccessRecord,
  dial: (target: ServerTarget) => Promise<Dialed | DialFailure>,
): Promise<(Dialed & { target: ServerTarget }) | DialFailure> {
  const failures: string[] = [];
  for (const target of candidates) {
    if (target.address === WHOAMI_ADDRESS) continue;
    const dialed = await dial(target);
    if (dialed.ok) {
      record.server = target.address;
      return { ...dialed, target };
    }
    failures.push(`${target.address}: ${dialed.message}`);
  }
  return { ok: false, code: "other", message: failures.join("; ") };
}

/**
 * What writes the access line when the relay ends. The relay is not awaited: the chain of suspended
 * calls (handleConnection, execute, serveRoute) would stay in memory as long as the connection, with
 * what their frames hold (the peeked ClientHello among it): about 4 KB per open connection
 * (bench/README.md). Made here, not in serveRoute, so that it keeps only its arguments.
 */
export function relayEnded(
  firstBytes: number,
  options: RelayOptions,
  record: AccessRecord,
  finish: (reason: AccessReason, detail?: string) => void,
  log: Logger,
): (result: RelayResult) => void {
  return (result) => {
    try {
      record.bytesIn = result.bytesFromClient + firstBytes;
      record.bytesOut = result.bytesFromBackend;
      finish("closed", result.error ? result.error.message : relayNote(result, options));
    } catch (err) {
      // Called from a socket event or a promise nobody awaits: an error here must not escape.
      logUnexpected(log, err);
    }
  };
}
