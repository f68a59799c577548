/**
 * The client against the real `heartline` daemon over WebSocket (`ws://…/v1/ws`, one
 * protocol frame per binary message): two users, presence diffs, the feed with paging and
 * live items, and reconnection after the server drops the connection.
 *
 * Runs against the daemon's own WebSocket listener (`websocket.listen`).
 * HEARTLINE_WS_BRIDGE=1 runs the same checks through a test bridge to the daemon's TCP port
 * instead.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import { connect, HeartlineClient, PresenceEntry } from "../src/index.js";
import type { ClientEvents, Item } from "../src/index.js";
import { TcpBridge } from "./support/bridge.js";
import { Daemon, freePort } from "./support/daemon.js";

const VIA_BRIDGE = process.env.HEARTLINE_WS_BRIDGE === "1";
const ALICE = 101;
const BOB = 102;

/** The next event `event` whose arguments satisfy `match`, within `timeoutMs`. */
function nextEvent<K extends keyof ClientEvents>(client: HeartlineClient, event: K, match: (...args: ClientEvents[K]) => boolean = () => true, timeoutMs = 10_000): Promise<ClientEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off(event, listener);
      reject(new Error(`no ${String(event)} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = (...args: ClientEvents[K]): void => {
      if (!match(...args)) return;
      clearTimeout(timer);
      client.off(event, listener);
      resolve(args);
    };
    client.on(event, listener);
  });
}

describe("client against the real daemon", () => {
  let daemon: Daemon;
  let bridge: TcpBridge | undefined;
  let url: string;
  const clients: HeartlineClient[] = [];

  async function client(user: number): Promise<HeartlineClient> {
    const c = await connect({ url, token: daemon.token(user), WebSocket, device: "web", reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 } });
    clients.push(c);
    return c;
  }

  before(async () => {
    daemon = await Daemon.start({
      websocket: !VIA_BRIDGE,
      env: {
        // Heartbeats every 500 ms exercise the client's ticker during the test.
        HEARTLINE_PRESENCE__HEARTBEAT_INTERVAL: "500ms",
        HEARTLINE_PRESENCE__TTL: "3s",
        HEARTLINE_LIMITS__POST_RATE: "0",
        HEARTLINE_LIMITS__DRAIN_TIMEOUT: "1s",
      },
    });
    if (VIA_BRIDGE) bridge = await TcpBridge.start(await freePort(), daemon.tcpPort);
    url = bridge?.url ?? daemon.websocketUrl;
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await bridge?.close();
    await daemon?.dispose();
  });

  it("handshake: WELCOME, session, heartbeats keep the session past its TTL", async () => {
    const alice = await client(ALICE);
    assert.equal(alice.state, "connected");
    assert.ok(alice.session !== null && alice.session > 0n);
    assert.equal(alice.welcome?.heartbeatIntervalMs, 500);
    // 3.5 s > TTL 3 s: only heartbeats keep it alive (no other frame is sent meanwhile).
    await new Promise((r) => setTimeout(r, 3_500));
    assert.equal(alice.state, "connected");
    const stats = await alice.stats();
    assert.ok(stats.sessions >= 1n);
  });

  it("A watches B; B sets its status; A gets the diff with a newer version", async () => {
    const alice = await client(ALICE);
    const bob = await client(BOB);
    const [snapshot] = await alice.watch([BOB]);
    assert.equal(snapshot!.user, BigInt(BOB));
    assert.equal(snapshot!.status, "online");
    const diff = nextEvent(alice, "presence", (e) => e.user === BigInt(BOB) && e.status === "busy");
    await bob.setStatus("busy", "in a meeting");
    const [entry] = await diff;
    assert.equal(entry.text, "in a meeting");
    assert.ok(entry.version > snapshot!.version, "versions grow");
    const [queried] = await alice.query([BOB]);
    assert.equal(queried!.status, "busy");
  });

  it("B publishes; A, following B, sees it live and in its home timeline; pages walk with cursors", async () => {
    const alice = await client(ALICE);
    const bob = await client(BOB);
    await alice.follow(BOB);
    await alice.setLive(true);
    const live = nextEvent(alice, "item", (item) => item.author === BigInt(BOB));
    const first = await bob.publish(1, "hello from bob");
    const [item] = await live;
    assert.equal(item.post, first);
    assert.equal(new TextDecoder().decode(item.payload), "hello from bob");
    const [top] = await alice.homeTimeline({}, 1);
    assert.equal(top?.post, first);

    const posted: bigint[] = [first];
    for (let i = 0; i < 24; i++) posted.push(await bob.publish(2, `post ${i}`));
    const walked: Item[] = [];
    let pageCount = 0;
    for await (const page of alice.pages({ source: { author: BigInt(BOB) }, limit: 7 })) {
      assert.ok(page.length <= 7);
      walked.push(...page);
      pageCount++;
    }
    const newestFirst = [...posted].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
    assert.deepEqual(walked.map((i) => i.post).slice(0, posted.length), newestFirst, "every post once, newest first");
    assert.ok(pageCount >= 4);
    // Forward from the 10th newest with minId: exactly the 9 newer ones, newest first.
    const newer = await alice.homeTimeline({ minId: newestFirst[9]! }, 100);
    assert.deepEqual(newer.map((i) => i.post), newestFirst.slice(0, 9));
    const deleted = nextEvent(alice, "deleted", (post) => post === first);
    await bob.deletePost(first);
    await deleted;
    await assert.rejects(bob.deletePost(first), (e: unknown) => (e as { codeName?: string }).codeName === "NOT_FOUND");
  });

  it("the server drops the connection: the client reconnects, restores watch, status and LIVE", async () => {
    // Users of their own: sessions of the other tests are still connected.
    const [CAROL, DAVE] = [201, 202];
    const alice = await client(CAROL);
    const bob = await client(DAVE);
    const BOB = DAVE;
    await alice.watch([BOB]);
    await bob.setStatus("away", "brb");
    await alice.setLive(true);
    const restored = nextEvent(alice, "presence", (e: PresenceEntry) => e.user === BigInt(DAVE) && e.status === "away", 20_000);
    const reconnected = Promise.all([nextEvent(alice, "connected", () => true, 20_000), nextEvent(bob, "connected", () => true, 20_000)]);
    const goaway = bridge ? null : nextEvent(alice, "goaway");
    if (bridge) bridge.dropAll();
    else await daemon.restart();
    if (goaway) assert.equal((await goaway)[0].reason, "shutdown");
    if (bridge === undefined) {
      // The new process has no session to resume (§6.7): a new one.
      const [[aliceInfo]] = await reconnected;
      assert.equal(aliceInfo.resumed, false);
    } else {
      // Within the grace window the session is resumed.
      const [[aliceInfo], [bobInfo]] = await reconnected;
      assert.equal(aliceInfo.resumed, true);
      assert.equal(bobInfo.resumed, true);
    }
    // Bob's status and text were set again; Alice's restored watch sees them.
    assert.equal((await restored)[0].text, "brb");
    const change = nextEvent(alice, "presence", (e: PresenceEntry) => e.user === BigInt(BOB) && e.status === "online");
    await bob.setStatus("online");
    await change;
    await alice.follow(BOB);
    const live = nextEvent(alice, "item", (i) => i.author === BigInt(BOB));
    const post = await bob.publish(1, "after the reconnection");
    assert.equal((await live)[0].post, post);
  });

  it("a refused token rejects connect with BAD_TOKEN", async () => {
    await assert.rejects(
      connect({ url, token: "00".repeat(34), WebSocket, reconnect: false }),
      (e: unknown) => (e as { codeName?: string }).codeName === "BAD_TOKEN",
    );
  });
});
