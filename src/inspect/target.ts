/**
 * The `HOST[:PORT]` argument of `inspect`, and the SNI that goes with it. Pure: no DNS, no sockets.
 */
import { isIP } from "node:net";
import { joinHostPort } from "../proxy/dial.ts";

export const DEFAULT_PORT = 443;

export interface Target {
  /** What to dial: a host name or an IP literal, IPv6 without brackets. */
  host: string;
  port: number;
  /** True for an IP literal (no SNI is sent for one unless asked). */
  ip: boolean;
  /** `host:port` for display, IPv6 in brackets: `[::1]:443`. */
  display: string;
}

export type TargetParse = { ok: true; target: Target } | { ok: false; message: string; hint?: string };

const HOST_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/;

function fail(message: string, hint?: string): TargetParse {
  return hint === undefined ? { ok: false, message } : { ok: false, message, hint };
}

function parsePort(text: string, whole: string): number | string {
  if (!/^\d{1,5}$/.test(text)) return `"${whole}": the port must be a number from 1 to 65535`;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : `"${whole}": the port must be a number from 1 to 65535`;
}

/**
 * `example.com`, `example.com:8443`, `127.0.0.1:5432`, `[::1]:8443`, `[::1]`. A bare IPv6 address
 * (`::1`) is taken whole with the default port: a port after an unbracketed IPv6 address cannot be
 * told apart from its last group.
 */
export function parseTarget(text: string): TargetParse {
  const input = text.trim();
  if (input === "")
    return fail("the target is empty", "Give HOST[:PORT], e.g. example.com or 127.0.0.1:8443.");
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(input);
  if (scheme) {
    return fail(
      `"${input}" is a URL; inspect takes HOST[:PORT]`,
      `Drop "${scheme[0]}" and any path${scheme[1]?.toLowerCase().startsWith("postgres") ? "; add --starttls postgres for a PostgreSQL server" : ""}.`,
    );
  }
  let host: string;
  let port = DEFAULT_PORT;
  if (input.startsWith("[")) {
    const close = input.indexOf("]");
    if (close < 0) return fail(`"${input}": missing "]" after the IPv6 address`);
    host = input.slice(1, close);
    const rest = input.slice(close + 1);
    if (isIP(host) !== 6) return fail(`"${input}": "${host}" in brackets is not an IPv6 address`);
    if (rest !== "") {
      if (!rest.startsWith(":")) return fail(`"${input}": expected ":PORT" after "]"`);
      const parsed = parsePort(rest.slice(1), input);
      if (typeof parsed === "string") return fail(parsed);
      port = parsed;
    }
  } else if (isIP(input) === 6) {
    host = input;
  } else {
    const colon = input.lastIndexOf(":");
    if (colon >= 0) {
      if (input.indexOf(":") !== colon) {
        return fail(`"${input}" is not HOST[:PORT]`, "Write an IPv6 address in brackets: [2001:db8::1]:443.");
      }
      const parsed = parsePort(input.slice(colon + 1), input);
      if (typeof parsed === "string") return fail(parsed);
      port = parsed;
      host = input.slice(0, colon);
    } else {
      host = input;
    }
    if (host === "") return fail(`"${input}": the host is empty`);
    if (isIP(host) === 0 && !HOST_NAME.test(host)) {
      return fail(`"${host}" is not a host name or IP address`);
    }
  }
  const ip = isIP(host) !== 0;
  return { ok: true, target: { host, port, ip, display: joinHostPort(host, port) } };
}

/**
 * The server name to send: `--sni` when given ("" = none), else the host name; never an IP literal
 * by default (RFC 6066 allows only host names in SNI).
 */
export function chooseSni(target: Target, flag: string | undefined): string | null {
  if (flag !== undefined) return flag.trim() === "" ? null : flag.trim();
  return target.ip ? null : target.host.replace(/\.$/, "");
}
