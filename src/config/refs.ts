/**
 * Object references as Traefik writes them: `name` or `name@provider`. tlsroute has a single
 * provider, the files, so `@file` is accepted and dropped; other providers cannot be reached.
 */
export type RefResult = { ok: true; name: string } | { ok: false; message: string; hint: string };

export function resolveRef(ref: string): RefResult {
  const at = ref.lastIndexOf("@");
  if (at === -1) return { ok: true, name: ref };
  const name = ref.slice(0, at);
  const provider = ref.slice(at + 1);
  if (provider === "file") return { ok: true, name };
  return {
    ok: false,
    message: `"${ref}" refers to provider "${provider}", which tlsroute does not read`,
    hint: `tlsroute reads files only; define "${name}" in a file and refer to it as "${name}".`,
  };
}
