/**
 * When to renew and when to retry. Pure arithmetic on dates, so the rules are tested without a CA.
 *
 * A certificate is renewed once a third of its lifetime is left: 30 days for Let's Encrypt's 90-day
 * certificates, 2 days for 6-day ones. The lifetime is the certificate's own (notAfter - notBefore),
 * capped by the resolver's `certificatesDuration` when that is shorter, so a user can ask for earlier
 * renewals but a CA issuing short certificates is never renewed too late.
 */

const HOUR_MS = 3_600_000;

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** The moment from which the certificate should be renewed. */
export function renewalTime(validity: Validity, certificatesDurationHours: number): Date {
  const start = validity.notBefore.getTime();
  const lifetime = validity.notAfter.getTime() - start;
  const configured = certificatesDurationHours > 0 ? certificatesDurationHours * HOUR_MS : lifetime;
  const basis = Math.max(0, Math.min(lifetime, configured));
  // Two thirds into the (possibly shortened) lifetime, counted from notBefore: a shorter configured
  // duration moves renewal earlier. Counting back from notAfter instead would move it later.
  return new Date(start + (basis * 2) / 3);
}

/** Retry delays after consecutive failures: 5 s, 10 s, 20 s, … capped at one hour. */
export function retryDelayMs(failures: number): number {
  const exponent = Math.max(0, Math.min(failures - 1, 20));
  return Math.min(5_000 * 2 ** exponent, HOUR_MS);
}

/** Longest single timer: Node's timers overflow beyond 2^31-1 ms, and a day is soon enough to look again. */
export const MAX_SLEEP_MS = 24 * HOUR_MS;
