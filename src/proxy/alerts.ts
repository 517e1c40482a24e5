/**
 * TLS alerts we send ourselves, before any handshake: a refused client learns why instead of seeing a
 * bare close. A plaintext alert record is valid before the handshake (RFC 8446 §6).
 */
export const ALERT_UNRECOGNIZED_NAME = 112;
export const ALERT_NO_APPLICATION_PROTOCOL = 120;

/** A fatal alert record: content type 21, legacy version TLS 1.2, length 2, level 2 (fatal), description. */
export function fatalAlert(description: number): Uint8Array {
  return Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description);
}
