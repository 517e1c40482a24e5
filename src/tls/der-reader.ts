/**
 * A small, strict DER reader (definite, minimal lengths only), shared by the certificate field reader,
 * the EC key check and the description of unreadable certificates. Anything a strict DER reader would
 * refuse is null (or, from the `…Checked` forms, a sentence saying why), never a guess.
 */

export interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  offset: number;
  start: number;
  end: number;
}

/** Why an element cannot be read, and the offset of the element (in the whole input). */
export interface DerProblem {
  problem: string;
  at: number;
}

/** Whether a value from the `…Checked` readers is a problem rather than what was asked for. */
export function isDerProblem(value: Tlv | Tlv[] | DerProblem): value is DerProblem {
  return !Array.isArray(value) && "problem" in value;
}

/**
 * One DER element, strictly: definite, minimal lengths only; or why not, in words that name the rule
 * broken (the same words on every runtime, unlike the X.509 parsers' own messages).
 */
export function readTlvChecked(der: Uint8Array, offset: number, limit: number): Tlv | DerProblem {
  const at = offset;
  if (offset >= limit) return { problem: "an element is missing: the data ends before it", at };
  if (offset + 2 > limit) return { problem: "the data ends inside an element's header", at };
  const tag = der[offset] ?? 0;
  if ((tag & 0x1f) === 0x1f) return { problem: "a multi-byte tag, which X.509 never uses", at };
  const first = der[offset + 1] ?? 0;
  let cursor = offset + 2;
  let length = first;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0) return { problem: "an indefinite length (BER, not DER)", at };
    if (count > 3) return { problem: `a length of ${count} bytes (no certificate is that large)`, at };
    if (cursor + count > limit) return { problem: "the data ends inside an element's length", at };
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (der[cursor + i] ?? 0);
    // Minimal: no leading zero byte, and the long form only for lengths ≥ 128.
    if (der[cursor] === 0 || length < 0x80) {
      return { problem: "a length not written in its shortest form (BER, not DER)", at };
    }
    cursor += count;
  }
  const end = cursor + length;
  if (end > limit) {
    return {
      problem: `an element declares ${length} bytes of content but only ${Math.max(0, limit - cursor)} follow`,
      at,
    };
  }
  return { tag, offset, start: cursor, end };
}

/**
 * One DER element, strictly: definite, minimal lengths only. Anything a strict DER reader would
 * refuse is null, so an odd encoding goes to OpenSSL instead of being guessed at here.
 */
export function readTlv(der: Uint8Array, offset: number, limit: number): Tlv | null {
  const tlv = readTlvChecked(der, offset, limit);
  return isDerProblem(tlv) ? null : tlv;
}

/** The children of a constructed element, or why they do not fill it exactly. */
export function childrenChecked(der: Uint8Array, parent: Tlv): Tlv[] | DerProblem {
  const out: Tlv[] = [];
  let offset = parent.start;
  while (offset < parent.end) {
    const child = readTlvChecked(der, offset, parent.end);
    if (isDerProblem(child)) return child;
    out.push(child);
    offset = child.end;
  }
  return out;
}

/** The children of a constructed element; null unless they fill it exactly. */
export function children(der: Uint8Array, parent: Tlv): Tlv[] | null {
  const out = childrenChecked(der, parent);
  return isDerProblem(out) ? null : out;
}

/** Constructed elements (SEQUENCE, SET, explicit tags): the ones whose content is more elements. */
export function isConstructed(tag: number): boolean {
  return (tag & 0x20) !== 0;
}

/** The first DER problem anywhere inside `tlv` (its constructed descendants included), or null. */
export function firstProblemWithin(der: Uint8Array, tlv: Tlv): DerProblem | null {
  if (!isConstructed(tlv.tag)) return null;
  const parts = childrenChecked(der, tlv);
  if (isDerProblem(parts)) return parts;
  for (const part of parts) {
    const problem = firstProblemWithin(der, part);
    if (problem) return problem;
  }
  return null;
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
