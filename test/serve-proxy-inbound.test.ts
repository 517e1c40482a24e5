/**
 * Inbound PROXY protocol on an entry point: a trusted load balancer's header sets the client address
 * that rules, middlewares, logs and whoami see; an untrusted peer's header is removed and ignored.
 */
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { encodeProxyHeader } from "../src/wire/proxy-protocol.ts";
import { plainExchange, type ServeProcess, startServe } from "./helpers/serve.ts";

const dir = mkdtempSync(path.join(tmpdir(), "tlsroute-proxy-in-"));

function config(trusted: string | null): string {
  const file = path.join(dir, `trusted-${(trusted ?? "none").replace(/[^0-9a-z]/g, "_")}.yml`);
  writeFileSync(
    file,
    `entryPoints:
  lb:
    address: "127.0.0.1:0"
    proxyProtocol:
      trustedIPs: [${trusted === null ? "" : `"${trusted}"`}]
tcp:
  routers:
    from-office:
      rule: "ClientIP(\`10.0.0.0/8\`) && HostSNI(\`*\`)"
      priority: 10
      service: whoami
    tls-from-office:
      rule: "ClientIP(\`10.0.0.0/8\`)"
      service: whoami
      tls: {}
    others:
      rule: "HostSNI(\`*\`)"
      service: whoami
  services:
    whoami:
      loadBalancer:
        servers:
          - address: whoami@internal
`,
  );
  return file;
}

/** Sends the bytes, reads everything the proxy answers until it closes. */
async function exchange(port: number, bytes: Uint8Array): Promise<string> {
  return (await plainExchange(port, bytes)).text;
}

describe("inbound PROXY protocol", () => {
  const running: ServeProcess[] = [];
  after(async () => {
    for (const s of running) await s.stop();
  });

  it("a trusted v1 header sets the client address for rules, whoami and the access line", async () => {
    const serve = await startServe(["-c", config("127.0.0.1/32")]);
    running.push(serve);
    const port = serve.ports.get("lb")!;
    const header = encodeProxyHeader(1, { ip: "10.1.2.3", port: 5555 }, { ip: "127.0.0.1", port });
    const answer = JSON.parse(await exchange(port, Buffer.concat([header, Buffer.from("hello")])));
    assert.equal(answer.router, "from-office");
    assert.equal(answer.client, "10.1.2.3:5555");
    const line = await serve.waitFor((l) => l.msg === "connection" && l.client === "10.1.2.3:5555");
    assert.equal(line.router, "from-office");
  });

  it("a trusted v2 header before a TLS ClientHello routes the TLS connection by the header's address", async () => {
    const serve = await startServe(["-c", config("127.0.0.0/8")]);
    running.push(serve);
    const port = serve.ports.get("lb")!;
    const header = encodeProxyHeader(2, { ip: "10.9.8.7", port: 4242 }, { ip: "127.0.0.1", port });
    const answer = await new Promise<string>((resolve, reject) => {
      const raw = netConnect({ host: "127.0.0.1", port }, () => {
        raw.write(header);
        const tls = tlsConnect({ socket: raw, servername: "app.example.test", rejectUnauthorized: false });
        let out = "";
        tls.setEncoding("utf8");
        tls.on("data", (d: string) => {
          out += d;
        });
        tls.on("close", () => resolve(out));
        tls.on("error", reject);
      });
    });
    const body = JSON.parse(answer);
    assert.equal(body.router, "tls-from-office");
    assert.equal(body.client, "10.9.8.7:4242");
    assert.equal(body.tlsVersion, "TLSv1.3");
  });

  it("an untrusted peer's header is removed and its address ignored", async () => {
    const serve = await startServe(["-c", config("10.200.0.1/32")]);
    running.push(serve);
    const port = serve.ports.get("lb")!;
    const header = encodeProxyHeader(1, { ip: "10.1.2.3", port: 5555 }, { ip: "127.0.0.1", port });
    const answer = JSON.parse(await exchange(port, Buffer.concat([header, Buffer.from("hello")])));
    assert.equal(answer.router, "others", "the forged 10.x address must not reach the ClientIP rule");
    assert.match(answer.client, /^127\.0\.0\.1:\d+$/);
  });

  it("an empty trustedIPs list trusts nobody: the header is removed, the connection still served", async () => {
    const serve = await startServe(["-c", config(null)]);
    running.push(serve);
    const port = serve.ports.get("lb")!;
    const header = encodeProxyHeader(2, { ip: "10.1.2.3", port: 5555 }, { ip: "127.0.0.1", port });
    const answer = JSON.parse(await exchange(port, Buffer.concat([header, Buffer.from("hello")])));
    assert.equal(answer.router, "others");
    assert.match(answer.client, /^127\.0\.0\.1:\d+$/);
  });

  it("a connection without a header still works (the header is optional)", async () => {
    const serve = await startServe(["-c", config("127.0.0.1/32")]);
    running.push(serve);
    const answer = JSON.parse(await exchange(serve.ports.get("lb")!, Buffer.from("hello")));
    assert.equal(answer.router, "others");
  });

  it("a malformed header closes the connection with bad_clienthello", async () => {
    const serve = await startServe(["-c", config("127.0.0.1/32")]);
    running.push(serve);
    const out = await exchange(serve.ports.get("lb")!, Buffer.from("PROXY TCP4 not-an-ip 1.2.3.4 1 2\r\n"));
    assert.equal(out, "");
    const line = await serve.waitFor((l) => l.msg === "connection");
    assert.equal(line.reason, "bad_clienthello");
    assert.match(String(line.detail), /PROXY protocol header/);
  });
});
