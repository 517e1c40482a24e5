/**
 * Bulk transfers through the relay, whose directions move to a reused read buffer after
 * BULK_THRESHOLD bytes on Node (src/proxy/pump.ts): every byte must arrive, in order, whatever the
 * readers' pace, in both directions at once.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { describe, it } from "node:test";
import { BULK_THRESHOLD, READ_BUFFER_BYTES } from "../src/proxy/pump.ts";
import { type RelayResult, relay } from "../src/proxy/relay.ts";

const HOST = "127.0.0.1";

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port)),
  );
}

/**
 * Reads everything a socket sends until its end; with `stallEvery`, stops reading for a while after
 * every that many bytes, so the sender meets backpressure again and again.
 */
function slowCollect(socket: net.Socket, stallEvery: number | null): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let sinceStall = 0;
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      sinceStall += chunk.length;
      if (stallEvery !== null && sinceStall >= stallEvery) {
        sinceStall = 0;
        socket.pause();
        setTimeout(() => socket.resume(), 5);
      }
    });
    socket.on("end", () => resolve(Buffer.concat(chunks)));
    socket.on("error", reject);
  });
}

/** Writes `data` in pieces of `piece` bytes, respecting backpressure, then ends. */
async function send(socket: net.Socket, data: Buffer, piece: number): Promise<void> {
  for (let at = 0; at < data.length; at += piece) {
    if (!socket.write(data.subarray(at, at + piece)))
      await new Promise((resolve) => socket.once("drain", resolve));
  }
  socket.end();
}

/** Client → relay → backend on loopback; both peers send `size` random bytes and read the other's. */
async function bulkBothWays(size: number, stallEvery: number | null) {
  const fromClient = randomBytes(size);
  const fromBackend = randomBytes(size);
  let atBackend: Promise<Buffer> | null = null;
  const backend = net.createServer({ allowHalfOpen: true }, (socket) => {
    atBackend = slowCollect(socket, stallEvery);
    void send(socket, fromBackend, 100_000);
  });
  const backendPort = await listen(backend);
  let result: Promise<RelayResult> | null = null;
  const proxy = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    const upstream = net.connect({ host: HOST, port: backendPort, allowHalfOpen: true });
    upstream.once("connect", () => {
      result = relay(client, upstream, { terminationDelayMs: 5_000 });
      client.resume();
    });
  });
  const proxyPort = await listen(proxy);
  const client = net.connect({ host: HOST, port: proxyPort, allowHalfOpen: true });
  await new Promise((resolve) => client.once("connect", resolve));
  const atClient = slowCollect(client, stallEvery);
  await send(client, fromClient, 70_000);
  const clientGot = await atClient;
  const relayed = await result!;
  const backendGot = await atBackend!;
  client.destroy();
  await new Promise((resolve) => proxy.close(resolve));
  await new Promise((resolve) => backend.close(resolve));
  return { fromClient, fromBackend, clientGot, backendGot, relayed };
}

describe("relay: bulk transfers", { timeout: 120_000 }, () => {
  it("the threshold leaves room for a few reads before the switch", () => {
    assert.ok(BULK_THRESHOLD >= 2 * READ_BUFFER_BYTES);
  });

  for (const [label, stallEvery] of [
    ["readers at full speed", null],
    ["readers that keep stalling", 512 * 1024],
  ] as const) {
    it(`32 MiB each way at once, byte-exact, ${label}`, async () => {
      const run = await bulkBothWays(32 << 20, stallEvery);
      assert.equal(run.clientGot.length, run.fromBackend.length);
      assert.equal(run.backendGot.length, run.fromClient.length);
      assert.equal(sha256(run.clientGot), sha256(run.fromBackend));
      assert.equal(sha256(run.backendGot), sha256(run.fromClient));
      assert.equal(run.relayed.bytesFromClient, run.fromClient.length);
      assert.equal(run.relayed.bytesFromBackend, run.fromBackend.length);
      assert.equal(run.relayed.error, null);
    });
  }

  it("a transfer that ends just past the threshold arrives whole", async () => {
    const run = await bulkBothWays(BULK_THRESHOLD + 1, null);
    assert.equal(sha256(run.clientGot), sha256(run.fromBackend));
    assert.equal(sha256(run.backendGot), sha256(run.fromClient));
  });
});
