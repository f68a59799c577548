/**
 * The 31 TCP messages of protocol v1 (SPEC.md §4.2) as one discriminated union,
 * {@link Message}, keyed by `type`.
 *
 * Number types: every field that is a u64 on the wire (user, session, request and post
 * ids, versions, times in unix ms, `resume`, the STATS counters) is a `bigint`, so ids
 * above 2^53 stay exact. Fields bounded by 32 bits or less (durations, `max_frame`, ports,
 * kinds, limits, error codes, heartbeat deltas) are `number`s. Absent optional fields are
 * `null`. Byte strings are `Uint8Array`s; texts are strings (UTF-8 on the wire).
 */
import type { Device, GoawayReason, GraphOp, Role, SettableStatus, Status } from "./enums.js";

export interface Hello {
  type: "HELLO";
  /** The highest version the client speaks, 1..=255. */
  version: number;
  role: Role;
  device: Device;
  wantUdp: boolean;
  /** 0n: a new session; otherwise the session to resume (§6.7). */
  resume: bigint;
  /** The token's raw bytes, at most 1,024. */
  token: Uint8Array;
}

export interface Welcome {
  type: "WELCOME";
  version: number;
  session: bigint;
  heartbeatIntervalMs: number;
  ttlMs: number;
  serverTimeMs: bigint;
  maxFrame: number;
  udpPort: number;
  /** 16 bytes; all zero when `udpPort` is 0. */
  udpKey: Uint8Array;
}

export interface Bye {
  type: "BYE";
}

export interface Goaway {
  type: "GOAWAY";
  reason: GoawayReason;
  reconnectAfterMs: number;
}

export interface ErrorMessage {
  type: "ERROR";
  /** The request this error answers; 0n when it is tied to none. */
  req: bigint;
  /** The numeric code, 0..=65,535 (§9; undefined codes read as INTERNAL). */
  code: number;
  message: string;
}

export interface Ok {
  type: "OK";
  req: bigint;
}

export interface Heartbeat {
  type: "HEARTBEAT";
  /** Signed: `dts − interval` in ms, −2^32 ..= 2^32 − 1 (§7.2). */
  jitterMs: number;
  /** Sequence delta; 1 when absent on the wire. */
  dseq: number;
  /** The new status, or null when unchanged. */
  status: SettableStatus | null;
}

export interface SetStatus {
  type: "SET_STATUS";
  req: bigint;
  /** The gateway sub-session to change; null for a client's own session. */
  session: bigint | null;
  status: SettableStatus;
  /** The user's status text, at most 128 UTF-8 bytes; empty clears it. */
  text: string;
}

export interface UserList<T extends "WATCH" | "UNWATCH" | "QUERY"> {
  type: T;
  req: bigint;
  users: bigint[];
}
export type Watch = UserList<"WATCH">;
export type Unwatch = UserList<"UNWATCH">;
export type Query = UserList<"QUERY">;

/** One user's presence as the connection may see it (§4.17). */
export interface PresenceEntry {
  user: bigint;
  status: Status;
  /** The user's presence version (§6.4); 0n when nothing is known or hidden by a block. */
  version: bigint;
  /** When the status others see last changed, unix ms; 0n = never seen. */
  lastSeenMs: bigint;
  text: string;
}

export interface Presence {
  type: "PRESENCE";
  req: bigint;
  entries: PresenceEntry[];
}

export interface PresencePush {
  type: "PRESENCE_PUSH";
  entries: PresenceEntry[];
}

export interface Stats {
  type: "STATS";
  req: bigint;
}

export interface ServerStats {
  onlineUsers: bigint;
  sessions: bigint;
  watches: bigint;
  connections: bigint;
}

export interface StatsReply {
  type: "STATS_REPLY";
  req: bigint;
  stats: ServerStats;
}

export interface OpenEntry {
  user: bigint;
  device: Device;
  status: SettableStatus;
}

export interface Open {
  type: "OPEN";
  req: bigint;
  entries: OpenEntry[];
}

export interface SessionList<T extends "OPENED" | "CLOSE"> {
  type: T;
  req: bigint;
  sessions: bigint[];
}
export type Opened = SessionList<"OPENED">;
export type Close = SessionList<"CLOSE">;

export interface BatchHeartbeat {
  type: "BATCH_HEARTBEAT";
  /** Session ids, strictly ascending. */
  sessions: bigint[];
  /** `[index into sessions, status]` for the entries that carry a status, in entry order. */
  statuses: [number, SettableStatus][];
}

export interface Publish {
  type: "PUBLISH";
  req: bigint;
  /** Application-defined, 0..=255. */
  kind: number;
  payload: Uint8Array;
}

export interface PostRef<T extends "PUBLISHED" | "DELETE"> {
  type: T;
  req: bigint;
  post: bigint;
}
export type Published = PostRef<"PUBLISHED">;
export type Delete = PostRef<"DELETE">;

export interface Graph {
  type: "GRAPH";
  req: bigint;
  op: GraphOp;
  user: bigint;
}

export type TimelineSource = "home" | { author: bigint };

/** Mastodon-style cursors (§10.3); all bounds exclusive. sinceId and minId exclude each other. */
export interface Cursor {
  maxId: bigint | null;
  sinceId: bigint | null;
  minId: bigint | null;
}

export interface Timeline {
  type: "TIMELINE";
  req: bigint;
  source: TimelineSource;
  cursor: Cursor;
  /** 1..=100. */
  limit: number;
}

/** A timeline item (§4.30). */
export interface Item {
  post: bigint;
  author: bigint;
  kind: number;
  payload: Uint8Array;
}

export interface Page {
  type: "PAGE";
  req: bigint;
  /** Newest first (strictly decreasing post id). */
  items: Item[];
}

export interface Live {
  type: "LIVE";
  req: bigint;
  on: boolean;
}

export interface ItemPush extends Item {
  type: "ITEM_PUSH";
}

export interface DeletedPush {
  type: "DELETED_PUSH";
  post: bigint;
}

/** A member of the cluster (§14.3, §14.4). */
export interface MapMember {
  node: string;
  /** TCP `host:port`. */
  addr: string;
  /** WebSocket URL; empty when the member has none. */
  ws: string;
  /** TCP+TLS `host:port`; empty when the member has none. */
  tls: string;
}

/** Sent instead of WELCOME: another server owns the user (§14.3). */
export interface Redirect extends MapMember {
  type: "REDIRECT";
  version: bigint;
}

export interface ClusterMap {
  type: "CLUSTER_MAP";
  req: bigint;
}

export interface ClusterMapReply {
  type: "CLUSTER_MAP_REPLY";
  req: bigint;
  version: bigint;
  /** 1..=65,536. */
  partitions: number;
  members: MapMember[];
}

export type Message =
  | Hello
  | Welcome
  | Bye
  | Goaway
  | ErrorMessage
  | Ok
  | Heartbeat
  | SetStatus
  | Watch
  | Unwatch
  | Query
  | Presence
  | PresencePush
  | Stats
  | StatsReply
  | Open
  | Opened
  | Close
  | BatchHeartbeat
  | Publish
  | Published
  | Delete
  | Graph
  | Timeline
  | Page
  | Live
  | ItemPush
  | DeletedPush
  | Redirect
  | ClusterMap
  | ClusterMapReply;

export type MessageType = Message["type"];
/** The message of type `T`. */
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;
