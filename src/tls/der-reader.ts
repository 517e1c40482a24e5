/**
 * A small, strict DER reader (definite, minimal lengths only), shared by the certificate field reader
 * and the EC key check. Anything a strict DER reader would refuse is null, never a guess.
 */

export interface Tlv {
  tag: number;
  start: number;
  end: number;
}

/**
 * One DER element, strictly: definite, minimal lengths only. Anything a strict DER reader would
 * refuse is null, so an odd encoding goes to OpenSSL instead of being guessed at here.
 */
export function readTlv(der: Uint8Array, offset: number, limit: number): Tlv | null {
  if (offset + 2 > limit) return null;
  const tag = der[offset] ?? 0;
  const first = der[offset + 1] ?? 0;
  let cursor = offset + 2;
  let length = first;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 3 || cursor + count > limit) return null;
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (der[cursor + i] ?? 0);
    // Minimal: no leading zero byte, and the long form only for lengths ≥ 128.
    if (der[cursor] === 0 || length < 0x80) return null;
    cursor += count;
  }
  const end = cursor + length;
  return end > limit ? null : { tag, start: cursor, end };
}

/** The children of a constructed element; null unless they fill it exactly. */
export function children(der: Uint8Array, parent: Tlv): Tlv[] | null {
  const out: Tlv[] = [];
  let offset = parent.start;
  while (offset < parent.end) {
    const child = readTlv(der, offset, parent.end);
    if (!child) return null;
    out.push(child);
    offset = child.end;
  }
  return out;
}

export function oidText(der: Uint8Array, tlv: Tlv): string {
  const arcs: number[] = [];
  let value = 0;
  for (let i = tlv.start; i < tlv.end; i++) {
    const byte = der[i] ?? 0;
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      if (arcs.length === 0) {
        const head = value < 80 ? Math.floor(value / 40) : 2;
        arcs.push(head, value - head * 40);
      } else {
        arcs.push(value);
      }
      value = 0;
    }
  }
  return arcs.join(".");
}
