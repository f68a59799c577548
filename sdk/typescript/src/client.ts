/**
 * The application-facing heartline client: {@link connect} and {@link HeartlineClient}.
 *
 * Owns the outstanding requests (matched to replies by `req`, SPEC.md §4.3), the watch set
 * and its version table (§6.4), the status and LIVE flag to restore after a reconnection,
 * and reconnection itself: jittered exponential back-off, resumption inside the grace
 * window (§6.7), GOAWAY's delay (§4.9). The socket, handshake and heartbeats belong to
 * `client/connection.ts`.
 *
 * Ids are `bigint`s (user ids, session ids, post ids, versions, times): u64 values above
 * 2^53 stay exact. Calls that take ids also accept safe-integer `number`s.
 */
import { DEVICES, Device, isSettableStatus, SettableStatus } from "./codec/enums.js";
import { MAX_IDS, MAX_PAGE, MAX_PAYLOAD, MAX_STATUS_TEXT, U64_MAX } from "./codec/limits.js";
import type {
  Cursor,
  GoawayReason,
  Item,
  Message,
  MessageOf,
  MessageType,
  PresenceEntry,
  ServerStats,
  TimelineSource,
  Welcome,
} from "./codec/index.js";
import { BackoffOptions, DEFAULT_BACKOFF, goawayDelay, reconnectDelay } from "./client/backoff.js";
import { Connection } from "./client/connection.js";
import { TypedEmitter } from "./client/emitter.js";
import {
  ClosedError,
  DisconnectedError,
  HeartlineError,
  InvalidArgumentError,
  ProtocolViolationError,
  RedirectError,
  ServerError,
  TimeoutError,
  worthRetrying,
} from "./client/errors.js";
import { defaultWebSocket, WebSocketConstructor } from "./client/socket.js";
import { tokenBytes } from "./client/token.js";
import { VersionTable } from "./client/versions.js";

export interface ConnectOptions {
  /**
   * `ws://host:7402/v1/ws` (or `wss://` behind a TLS proxy), or several: the servers of a
   * cluster, tried in order on the first connection and on every reconnection (SPEC.md §14).
   */
  url: string | readonly string[];
  /** REDIRECTs followed in a row before an attempt counts as failed. Default 3. */
  maxRedirects?: number;
  /** The token: raw bytes, or the hexadecimal `heartline token` prints. */
  token: string | Uint8Array;
  /** The WebSocket class; default the global one (browsers). In Node pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /** The session's device kind (informational). Default "unknown". */
  device?: Device;
  /** A session to resume on the first connection (an app restarting within the grace window). */
  resume?: bigint;
  /** Reconnection back-off; `false` turns reconnection off. */
  reconnect?: false | Partial<BackoffOptions>;
  /** For opening the socket plus the handshake. Default 10 s. */
  connectTimeoutMs?: number;
  /** For the reply to each request. Default 10 s. */
  requestTimeoutMs?: number;
}

export type ClientState = "connected" | "reconnecting" | "closed";

/** The events of {@link HeartlineClient}, with their arguments. */
export interface ClientEvents {
  /** A watched user's presence: snapshot entries and changes, stale versions dropped. */
  presence: [entry: PresenceEntry];
  /** A new home-timeline item while LIVE is on. Ids are not guaranteed ascending. */
  item: [item: Item];
  /** A post was deleted: remove it from the view. */
  deleted: [post: bigint];
  /** LIVE was restored on a new connection: items may have been missed (catch up with `minId`). */
  gap: [];
  /** A connection was established; `resumed` says whether the session survived (§6.7). */
  connected: [info: { welcome: Welcome; resumed: boolean }];
  /** The connection was lost; attempt `attempt` follows after `delayMs`. */
  reconnecting: [info: { attempt: number; delayMs: number; error: HeartlineError }];
  /** The server is going away; the client reconnects after `delayMs`. */
  goaway: [info: { reason: GoawayReason; delayMs: number }];
  /** An error tied to no request of the caller (a fatal ERROR, RATE_LIMITED on a heartbeat, a restore that failed). */
  error: [error: HeartlineError];
  /** For good: `error` is null after close(), else why the client gave up. */
  closed: [error: HeartlineError | null];
}

export type TimelineCursor = Partial<Cursor>;

export interface TimelineRequest extends TimelineCursor {
  source?: TimelineSource;
  /** 1..=100, default 20. */
  limit?: number;
}

/** The reply type each request expects. */
type ReplyOf<T extends MessageType> = T extends "SET_STATUS" | "UNWATCH" | "DELETE" | "GRAPH" | "LIVE"
  ? "OK"
  : T extends "WATCH" | "QUERY"
    ? "PRESENCE"
    : T extends "STATS"
      ? "STATS_REPLY"
      : T extends "PUBLISH"
        ? "PUBLISHED"
        : T extends "TIMELINE"
          ? "PAGE"
          : never;

type RequestType = "SET_STATUS" | "WATCH" | "UNWATCH" | "QUERY" | "STATS" | "PUBLISH" | "DELETE" | "GRAPH" | "TIMELINE" | "LIVE";
type Request = MessageOf<RequestType>;

interface Pending {
  request: Request;
  expects: MessageType;
  /** The connection it went out on; null while it waits for one. */
  sentOn: Connection | null;
  resolve(reply: Message): void;
  reject(error: HeartlineError): void;
}

const REPLY_TYPES: ReadonlySet<MessageType> = new Set(["OK", "PRESENCE", "STATS_REPLY", "OPENED", "PUBLISHED", "PAGE"]);
const EXPECTED_REPLY: Record<RequestType, MessageType> = {
  SET_STATUS: "OK", UNWATCH: "OK", DELETE: "OK", GRAPH: "OK", LIVE: "OK",
  WATCH: "PRESENCE", QUERY: "PRESENCE", STATS: "STATS_REPLY", PUBLISH: "PUBLISHED", TIMELINE: "PAGE",
};
const UTF8 = new TextEncoder();

/** Connects and authenticates; a refused token or an unreachable server rejects at once. */
export async function connect(options: ConnectOptions): Promise<HeartlineClient> {
  const client = new HeartlineClient(options);
  await client.start();
  return client;
}

export class HeartlineClient extends TypedEmitter<ClientEvents> {
  private readonly urls: readonly string[];
  private readonly maxRedirects: number;
  /** The owner a REDIRECT named (its `ws`), tried first until connecting to it fails. */
  private target: string | null = null;
  private currentUrl = "";
  private readonly token: Uint8Array;
  private readonly WebSocketClass: WebSocketConstructor;
  private readonly device: Device;
  private readonly backoff: BackoffOptions | null;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;

  private connection: Connection | null = null;
  private currentState: ClientState = "reconnecting";
  private nextReq = 1n;
  private readonly pending = new Map<bigint, Pending>();
  /** Requests waiting for a connection, in order. */
  private backlog: bigint[] = [];
  private readonly watched = new Set<bigint>();
  private readonly versions = new VersionTable();
  private lastStatus: { status: SettableStatus; text: string } | null = null;
  private liveOn = false;
  private resume: bigint;
  /** Set by GOAWAY: no more sending on this connection (§4.9). */
  private draining = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private wakeReconnect: (() => void) | undefined;

  /** Use {@link connect}. */
  constructor(options: ConnectOptions) {
    super();
    this.urls = typeof options.url === "string" ? [options.url] : [...options.url];
    if (this.urls.length === 0) throw new InvalidArgumentError("at least one URL");
    this.maxRedirects = options.maxRedirects ?? 3;
    this.token = tokenBytes(options.token);
    this.WebSocketClass = options.WebSocket ?? defaultWebSocket();
    this.device = options.device ?? "unknown";
    if (!DEVICES.includes(this.device)) throw new InvalidArgumentError(`device ${String(this.device)} undefined`);
    this.backoff = options.reconnect === false ? null : { ...DEFAULT_BACKOFF, ...options.reconnect };
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.resume = options.resume ?? 0n;
  }

  /** @internal The first connection, made by {@link connect}. */
  async start(): Promise<void> {
    this.established(await this.open());
  }

  get state(): ClientState {
    return this.currentState;
  }

  /** The URL of the current (or last) connection: a seed, or the owner it redirected to. */
  get url(): string {
    return this.currentUrl;
  }

  /** The session id while connected. */
  get session(): bigint | null {
    return this.currentState === "connected" && this.connection ? this.connection.welcome.session : null;
  }

  /** The WELCOME of the current connection. */
  get welcome(): Welcome | null {
    return this.connection?.welcome ?? null;
  }

  // ------------------------------------------------------------------ presence

  /**
   * Sets this session's status and the user's status text (empty clears it). Restored after
   * every reconnection, so that a session the server could not resume gets them back.
   */
  async setStatus(status: SettableStatus, text = ""): Promise<void> {
    if (!isSettableStatus(status)) throw new InvalidArgumentError("offline is reported, never set; close the client instead");
    if (UTF8.encode(text).length > MAX_STATUS_TEXT) throw new InvalidArgumentError(`a status text has at most ${MAX_STATUS_TEXT} bytes`);
    this.lastStatus = { status, text };
    await this.request({ type: "SET_STATUS", req: 0n, session: null, status, text });
  }

  /**
   * Watches users: resolves with the snapshot (one entry per user, in order), then emits
   * `presence` for every change. Watched again after every reconnection.
   */
  async watch(users: Iterable<bigint | number>): Promise<PresenceEntry[]> {
    const ids = userIds(users);
    for (const id of ids) this.watched.add(id);
    const snapshot: PresenceEntry[] = [];
    for (const chunk of chunks(ids, MAX_IDS)) {
      const reply = await this.request({ type: "WATCH", req: 0n, users: chunk });
      snapshot.push(...reply.entries);
    }
    return snapshot;
  }

  async unwatch(users: Iterable<bigint | number>): Promise<void> {
    const ids = userIds(users);
    for (const id of ids) {
      this.watched.delete(id);
      this.versions.forget(id);
    }
    for (const chunk of chunks(ids, MAX_IDS)) await this.request({ type: "UNWATCH", req: 0n, users: chunk });
  }

  /** The presence of users, one entry per user in order, without watching them. */
  async query(users: Iterable<bigint | number>): Promise<PresenceEntry[]> {
    const entries: PresenceEntry[] = [];
    for (const chunk of chunks(userIds(users), MAX_IDS)) {
      entries.push(...(await this.request({ type: "QUERY", req: 0n, users: chunk })).entries);
    }
    return entries;
  }

  /** Server-wide counters. */
  async stats(): Promise<ServerStats> {
    return (await this.request({ type: "STATS", req: 0n })).stats;
  }

  // ------------------------------------------------------------------ feed

  /**
   * Publishes a post; resolves with its id once it is durable. A string payload is sent as
   * UTF-8. If the connection is lost first the outcome is unknown ({@link DisconnectedError}):
   * PUBLISH is not idempotent (§10.2).
   */
  async publish(kind: number, payload: Uint8Array | string): Promise<bigint> {
    const bytes = typeof payload === "string" ? UTF8.encode(payload) : payload;
    if (!Number.isInteger(kind) || kind < 0 || kind > 255) throw new InvalidArgumentError("kind is 0..=255");
    if (bytes.length > MAX_PAYLOAD) throw new InvalidArgumentError(`a payload has at most ${MAX_PAYLOAD} bytes`);
    return (await this.request({ type: "PUBLISH", req: 0n, kind, payload: bytes })).post;
  }

  /** Deletes one of this user's posts (NOT_FOUND for anybody else's). */
  async deletePost(post: bigint): Promise<void> {
    await this.request({ type: "DELETE", req: 0n, post: u64(post, "post") });
  }

  follow(user: bigint | number): Promise<void> {
    return this.graph("follow", user);
  }

  unfollow(user: bigint | number): Promise<void> {
    return this.graph("unfollow", user);
  }

  block(user: bigint | number): Promise<void> {
    return this.graph("block", user);
  }

  unblock(user: bigint | number): Promise<void> {
    return this.graph("unblock", user);
  }

  private async graph(op: "follow" | "unfollow" | "block" | "unblock", user: bigint | number): Promise<void> {
    await this.request({ type: "GRAPH", req: 0n, op, user: u64(user, "user") });
  }

  /**
   * One page of a timeline, newest first. Only an empty page ends a walk (§10.3): walk
   * back with `maxId` = the last item's post, forward with `minId` = the first item's.
   */
  async timeline(request: TimelineRequest = {}): Promise<Item[]> {
    const limit = request.limit ?? 20;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw new InvalidArgumentError(`a page holds 1 to ${MAX_PAGE} items`);
    const cursor: Cursor = {
      maxId: optionalU64(request.maxId, "maxId"),
      sinceId: optionalU64(request.sinceId, "sinceId"),
      minId: optionalU64(request.minId, "minId"),
    };
    if (cursor.sinceId !== null && cursor.minId !== null) throw new InvalidArgumentError("sinceId and minId exclude each other");
    const source: TimelineSource = request.source === undefined || request.source === "home" ? "home" : { author: u64(request.source.author, "author") };
    return (await this.request({ type: "TIMELINE", req: 0n, source, cursor, limit })).items;
  }

  /** The user's home timeline: followed authors and their own posts. */
  homeTimeline(cursor: TimelineCursor = {}, limit?: number): Promise<Item[]> {
    return this.timeline({ ...cursor, source: "home", ...(limit === undefined ? {} : { limit }) });
  }

  /** One author's posts. */
  authorTimeline(author: bigint | number, cursor: TimelineCursor = {}, limit?: number): Promise<Item[]> {
    return this.timeline({ ...cursor, source: { author: u64(author, "author") }, ...(limit === undefined ? {} : { limit }) });
  }

  /** Walks a timeline backwards, page by page, until the empty page that ends it. */
  async *pages(request: TimelineRequest = {}): AsyncGenerator<Item[], void, undefined> {
    let maxId = request.maxId ?? null;
    for (;;) {
      const page = await this.timeline({ ...request, maxId });
      if (page.length === 0) return;
      yield page;
      maxId = page[page.length - 1]!.post;
    }
  }

  /** LIVE on: new home-timeline items as `item` events, deletions as `deleted`. Kept across reconnections. */
  async setLive(on: boolean): Promise<void> {
    this.liveOn = on;
    await this.request({ type: "LIVE", req: 0n, on });
  }

  // ------------------------------------------------------------------ lifetime

  /**
   * Says BYE (the session ends at once, without a grace window), waits for the replies
   * still owed until the server closes, and closes for good.
   */
  async close(): Promise<void> {
    if (this.currentState === "closed") return;
    const connection = this.connection;
    if (connection && connection.isOpen && !this.draining) {
      const closedByServer = new Promise<void>((resolve) => {
        this.onConnectionClosed = resolve;
      });
      try {
        connection.send({ type: "BYE" });
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([closedByServer, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.connectTimeoutMs)))]);
        clearTimeout(timer);
      } catch {
        // already gone
      }
    }
    this.finish(null);
  }

  private onConnectionClosed: (() => void) | undefined;

  // ------------------------------------------------------------------ requests

  private request<T extends RequestType>(request: MessageOf<T>): Promise<MessageOf<ReplyOf<T>>> {
    if (this.currentState === "closed") return Promise.reject(new ClosedError());
    const req = this.nextReq++;
    const message = { ...request, req } as Request;
    return new Promise<MessageOf<ReplyOf<T>>>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(req)) reject(new TimeoutError(`no reply to ${message.type} within ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      this.pending.set(req, {
        request: message,
        expects: EXPECTED_REPLY[message.type],
        sentOn: null,
        resolve: (reply) => {
          clearTimeout(timer);
          resolve(reply as MessageOf<ReplyOf<T>>);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.dispatch(req);
    });
  }

  /** A request of the client's own (restoring state): its failure is an `error` event. */
  private restore(request: Request): void {
    this.request(request).catch((error: unknown) => {
      if (error instanceof HeartlineError && !(error instanceof DisconnectedError || error instanceof ClosedError)) this.emit("error", error);
    });
  }

  /** Sends a registered request now, or keeps it for the next connection. */
  private dispatch(req: bigint): void {
    const pending = this.pending.get(req);
    if (!pending) return;
    const connection = this.connection;
    if (!connection || !connection.isOpen || this.draining || this.currentState !== "connected") {
      this.backlog.push(req);
      return;
    }
    try {
      connection.send(pending.request);
      pending.sentOn = connection;
      if (pending.request.type === "SET_STATUS") connection.noteStatus(pending.request.status);
    } catch (error) {
      if (error instanceof InvalidArgumentError) {
        this.pending.delete(req);
        pending.reject(error);
      } else {
        this.backlog.push(req);
      }
    }
  }

  // ------------------------------------------------------------------ frames from the server

  private onMessage(connection: Connection, message: Message): void {
    if (connection !== this.connection) return;
    if (REPLY_TYPES.has(message.type)) return this.onReply(connection, message as Message & { req: bigint });
    switch (message.type) {
      case "ERROR": {
        const error = new ServerError(message.code, message.message, message.req);
        const pending = message.req !== 0n ? this.pending.get(message.req) : undefined;
        if (pending && pending.sentOn === connection) {
          this.pending.delete(message.req);
          pending.reject(error);
        } else {
          this.emit("error", error);
        }
        return;
      }
      case "PRESENCE_PUSH":
        return this.offer(message.entries);
      case "ITEM_PUSH": {
        const { post, author, kind, payload } = message;
        return this.emit("item", { post, author, kind, payload });
      }
      case "DELETED_PUSH":
        return this.emit("deleted", message.post);
      case "GOAWAY":
        return this.onGoaway(connection, message.reason, message.reconnectAfterMs);
      default:
        return connection.close(new ProtocolViolationError(`unexpected ${message.type}`));
    }
  }

  private onReply(connection: Connection, reply: Message & { req: bigint }): void {
    const pending = this.pending.get(reply.req);
    // A reply to no outstanding request is ignored (§4.4).
    if (!pending || pending.sentOn !== connection) return;
    const violation = replyViolation(pending.request, reply, pending.expects);
    if (violation) return connection.close(new ProtocolViolationError(violation));
    this.pending.delete(reply.req);
    if (pending.request.type === "WATCH" && reply.type === "PRESENCE") this.offer(reply.entries);
    pending.resolve(reply);
  }

  /** Presence entries of watched users, through the version rule (§6.4). */
  private offer(entries: PresenceEntry[]): void {
    for (const entry of entries) {
      if (this.watched.has(entry.user) && this.versions.accept(entry)) this.emit("presence", entry);
    }
  }

  private onGoaway(connection: Connection, reason: GoawayReason, reconnectAfterMs: number): void {
    this.draining = true;
    const delayMs = goawayDelay(reconnectAfterMs);
    this.emit("goaway", { reason, delayMs });
    // Reconnect at the deadline, even if the old connection is still draining (§4.9).
    this.reconnectTimer = setTimeout(() => {
      if (this.connection === connection && connection.isOpen) connection.close(new DisconnectedError("GOAWAY"));
      this.wakeReconnect?.();
    }, delayMs);
  }

  // ------------------------------------------------------------------ connections

  /**
   * Connects to the remembered owner, else to each URL in order, following REDIRECTs to
   * their `ws` (at most `maxRedirects` in a row). A refusal not worth retrying ends the
   * search; otherwise the last attempt's error is thrown.
   */
  private async open(): Promise<Connection> {
    let last: unknown = new DisconnectedError("no URL to connect to");
    for (const start of [...(this.target ? [this.target] : []), ...this.urls]) {
      let url = start;
      for (let hops = 0; ; hops++) {
        try {
          const connection = await this.openAt(url);
          if (hops > 0) this.target = url;
          this.currentUrl = url;
          return connection;
        } catch (e) {
          if (e instanceof RedirectError && e.ws !== "" && hops < this.maxRedirects) {
            url = e.ws;
            continue;
          }
          if (!worthRetrying(e)) throw e;
          // The owner is gone or moved: back to the seeds.
          if (url === this.target) this.target = null;
          last = e;
          break;
        }
      }
    }
    throw last;
  }

  private openAt(url: string): Promise<Connection> {
    return Connection.open({
      url,
      WebSocket: this.WebSocketClass,
      token: this.token,
      device: this.device,
      resume: this.resume,
      status: this.lastStatus?.status ?? "online",
      timeoutMs: this.connectTimeoutMs,
    });
  }

  /** A new connection: announce it, restore the status, watches and LIVE, send what waited. */
  private established(connection: Connection): void {
    this.connection = connection;
    this.draining = false;
    this.resume = connection.welcome.session;
    this.versions.clear();
    this.currentState = "connected";
    connection.attach({
      message: (message) => this.onMessage(connection, message),
      closed: (error) => this.onClosed(connection, error),
    });
    if (!connection.isOpen) return;
    // Restores go first, then what waited for a connection, in order.
    const waiting = this.backlog;
    this.backlog = [];
    if (this.lastStatus) this.restore({ type: "SET_STATUS", req: 0n, session: null, ...this.lastStatus });
    for (const chunk of chunks([...this.watched], MAX_IDS)) this.restore({ type: "WATCH", req: 0n, users: chunk });
    if (this.liveOn) {
      this.restore({ type: "LIVE", req: 0n, on: true });
      this.emit("gap");
    }
    for (const req of waiting) this.dispatch(req);
    this.emit("connected", { welcome: connection.welcome, resumed: connection.resumed });
  }

  private onClosed(connection: Connection, error: HeartlineError): void {
    if (connection !== this.connection) return;
    // Requests sent on it have an unknown outcome; those not sent yet wait for the next one.
    for (const [req, pending] of this.pending) {
      if (pending.sentOn === connection) {
        this.pending.delete(req);
        pending.reject(new DisconnectedError());
      }
    }
    this.connection = null;
    if (this.onConnectionClosed) {
      this.onConnectionClosed();
      return;
    }
    if (this.currentState === "closed") return;
    if (error instanceof ServerError) this.emit("error", error);
    void this.reconnect(error);
  }

  private async reconnect(why: HeartlineError): Promise<void> {
    if (!this.backoff || !worthRetrying(why)) return this.finish(why);
    this.currentState = "reconnecting";
    const goaway = this.draining;
    for (let attempt = 1; ; attempt++) {
      // After GOAWAY its timer wakes us; otherwise the back-off delay.
      const delayMs = goaway && attempt === 1 ? -1 : reconnectDelay(this.backoff, attempt - 1);
      this.emit("reconnecting", { attempt, delayMs: Math.max(delayMs, 0), error: why });
      await new Promise<void>((resolve) => {
        this.wakeReconnect = resolve;
        if (delayMs >= 0) this.reconnectTimer = setTimeout(resolve, delayMs);
      });
      this.wakeReconnect = undefined;
      if (this.isClosed()) return;
      try {
        const connection = await this.open();
        if (this.isClosed()) {
          connection.close(new ClosedError());
          return;
        }
        return this.established(connection);
      } catch (error) {
        why = error instanceof HeartlineError ? error : new DisconnectedError(String(error));
        if (!worthRetrying(why)) return this.finish(why);
      }
    }
  }

  /** A method, not a property read, so that TypeScript does not narrow it across awaits. */
  private isClosed(): boolean {
    return this.currentState === "closed";
  }

  /** The client is done: everything waiting learns it. */
  private finish(error: HeartlineError | null): void {
    if (this.currentState === "closed") return;
    this.currentState = "closed";
    clearTimeout(this.reconnectTimer);
    this.wakeReconnect?.();
    this.connection?.close(new ClosedError());
    this.connection = null;
    for (const pending of this.pending.values()) pending.reject(error ?? new ClosedError());
    this.pending.clear();
    this.backlog = [];
    this.emit("closed", error);
  }
}

/** Why a reply breaks the protocol for its request (client-close), or null. */
function replyViolation(request: Request, reply: Message, expects: MessageType): string | null {
  if (reply.type !== expects) return `${reply.type} answering ${request.type}`;
  if (reply.type === "PRESENCE" && (request.type === "WATCH" || request.type === "QUERY") && reply.entries.length !== request.users.length) {
    return `PRESENCE with ${reply.entries.length} entries for ${request.users.length} users`;
  }
  if (reply.type === "PAGE" && request.type === "TIMELINE" && reply.items.length > request.limit) {
    return `PAGE of ${reply.items.length} items over the limit ${request.limit}`;
  }
  return null;
}

function u64(value: bigint | number, what: string): bigint {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new InvalidArgumentError(`${what}: ${value} is not a safe integer; pass a bigint`);
    value = BigInt(value);
  }
  if (typeof value !== "bigint" || value < 0n || value > U64_MAX) throw new InvalidArgumentError(`${what}: ${String(value)} is not a u64`);
  return value;
}

function optionalU64(value: bigint | null | undefined, what: string): bigint | null {
  return value === undefined || value === null ? null : u64(value, what);
}

function userIds(users: Iterable<bigint | number>): bigint[] {
  return Array.from(users, (user) => u64(user, "user"));
}

function chunks<T>(values: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < values.length; i += size) out.push(values.slice(i, i + size));
  return out;
}
