/**
 * Seed lists and REDIRECT (SPEC.md §14.3) against fake WebSocket servers: a client given a
 * dead URL and a server that does not own its user ends up on the owner's `ws`, and a
 * redirect loop stops at `maxRedirects`.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import WebSocket, { WebSocketServer } from "ws";
import { connect, RedirectError } from "../src/index.js";
import { encodeFrame } from "../src/codec/index.js";
import type { Message } from "../src/codec/index.js";
import { freePort } from "./support/daemon.js";

/** A server answering every HELLO with `answer(url)`; returns its URL. */
async function fakeServer(servers: WebSocketServer[], answer: (self: string) => Message, hellos = { count: 0 }): Promise<string> {
  const port = await freePort();
  const url = `ws://127.0.0.1:${port}/v1/ws`;
  await new Promise<void>((resolve) => {
    const server = new WebSocketServer({ host: "127.0.0.1", port, path: "/v1/ws" }, resolve);
    servers.push(server);
    server.on("connection", (ws) => {
      let greeted = false;
      ws.on("message", () => {
        // After HELLO the only frame the tests send is BYE: the server closes.
        if (greeted) return ws.close();
        greeted = true;
        hellos.count++;
        const reply = answer(url);
        ws.send(encodeFrame(reply));
        if (reply.type === "REDIRECT") ws.close();
      });
    });
  });
  return url;
}

const WELCOME: Message = {
  type: "WELCOME",
  version: 1,
  session: 9n,
  heartbeatIntervalMs: 30_000,
  ttlMs: 90_000,
  serverTimeMs: 1n,
  maxFrame: 65_536,
  udpPort: 0,
  udpKey: new Uint8Array(16),
};

const redirect = (ws: string): Message => ({ type: "REDIRECT", version: 4n, node: "owner", addr: "127.0.0.1:1", ws, tls: "" });

describe("seed lists and REDIRECT", () => {
  const servers: WebSocketServer[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  });

  it("tries the URLs in order and follows a REDIRECT to the owner's ws", async () => {
    const owner = await fakeServer(servers, () => WELCOME);
    const other = await fakeServer(servers, () => redirect(owner));
    const dead = `ws://127.0.0.1:${await freePort()}/v1/ws`;
    const client = await connect({ url: [dead, other], token: new Uint8Array([1]), WebSocket, reconnect: false });
    assert.equal(client.url, owner);
    assert.equal(client.session, 9n);
    await client.close();
  });

  it("stops a redirect loop after maxRedirects", async () => {
    const hellos = { count: 0 };
    const looping = await fakeServer(servers, (self) => redirect(self), hellos);
    await assert.rejects(
      connect({ url: looping, token: new Uint8Array([1]), WebSocket, reconnect: false, maxRedirects: 2 }),
      (e: unknown) => e instanceof RedirectError && e.ws === looping,
    );
    assert.equal(hellos.count, 3, "the first HELLO and 2 redirects");
  });

  it("a REDIRECT without a WebSocket URL counts as a failed attempt", async () => {
    const noWs = await fakeServer(servers, () => redirect(""));
    const owner = await fakeServer(servers, () => WELCOME);
    const client = await connect({ url: [noWs, owner], token: new Uint8Array([1]), WebSocket, reconnect: false });
    assert.equal(client.url, owner);
    await client.close();
  });
});
