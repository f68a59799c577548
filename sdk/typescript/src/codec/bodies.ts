/**
 * The body grammar of every TCP message (SPEC.md §4.6–§4.33): one decoder and one encoder
 * per type, and the type table of §4.2 (type byte, name, direction).
 *
 * Decoders check fields left to right with the limits of §3 and leave the trailing-bytes
 * check to the framing (§2.6). Decoders of server-to-client types also report what a client
 * must treat as a violation (WELCOME version 0 or `max_frame` over 1 MiB, a PAGE not newest
 * first) as MALFORMED.
 */
import { decodeBatch, encodeBatch } from "./batch.js";
import {
  DEVICES,
  GOAWAY_REASONS,
  GRAPH_OPS,
  ROLES,
  STATUSES,
  SettableStatus,
  Status,
  wireValue,
} from "./enums.js";
import { EncodeError, fail } from "./errors.js";
import {
  HEARTBEAT_WORD_LIMIT,
  HELLO_MAGIC,
  MAX_ADDR,
  MAX_BATCH,
  MAX_ERROR_TEXT,
  MAX_FRAME,
  MAX_IDS,
  MAX_MEMBERS,
  MAX_NODE,
  MAX_PAGE,
  MAX_PARTITIONS,
  MAX_PAYLOAD,
  MAX_STATUS_TEXT,
  MAX_TOKEN,
} from "./limits.js";
import type {
  Cursor,
  Item,
  MapMember,
  Message,
  MessageOf,
  MessageType,
  OpenEntry,
  PresenceEntry,
  TimelineSource,
} from "./messages.js";
import type { BodyReader } from "./reader.js";
import type { BodyWriter } from "./writer.js";
import { checkInteger } from "./writer.js";

/** Decodes the body of one message type (the fields after the type byte). */
type BodyDecoder<T extends MessageType> = (r: BodyReader) => MessageOf<T>;
type BodyEncoder<T extends MessageType> = (w: BodyWriter, m: MessageOf<T>) => void;

export interface MessageCodec<T extends MessageType> {
  type: T;
  code: number;
  /** Sent only by the server (a client receiving it expects it; a server answers UNEXPECTED). */
  serverToClient: boolean;
  decode: BodyDecoder<T>;
  encode: BodyEncoder<T>;
}

// ------------------------------------------------------------------- shared field codecs

const PRESENCE_ENTRY_MIN_SIZE = 5;
const PAGE_ITEM_MIN_SIZE = 11;
const OPEN_ENTRY_MIN_SIZE = 3;
const ID_MIN_SIZE = 1;

function readSettableStatus(r: BodyReader): SettableStatus {
  return r.enumeration(STATUSES, "status", 1) as SettableStatus;
}

function writeStatus(w: BodyWriter, status: Status, lowest: number): void {
  const value = wireValue(STATUSES, status);
  if (value < lowest) throw new EncodeError(`status ${String(status)} cannot be sent here`);
  w.u8(value);
}

function writeEnum<T>(w: BodyWriter, table: readonly (T | null)[], name: T, what: string): void {
  const value = wireValue(table, name);
  if (value < 0 || name === null) throw new EncodeError(`${what} ${String(name)} undefined`);
  w.u8(value);
}

function readIds(r: BodyReader, limit: number): bigint[] {
  const n = r.count(limit, "LIMIT_EXCEEDED", ID_MIN_SIZE);
  const ids: bigint[] = [];
  for (let i = 0; i < n; i++) ids.push(r.varint());
  return ids;
}

function writeList<T>(w: BodyWriter, values: readonly T[], limit: number, what: string, writeOne: (v: T) => void, minimum = 0): void {
  if (values.length > limit || values.length < minimum) {
    throw new EncodeError(`${what}: ${values.length} entries, allowed ${minimum}..=${limit}`);
  }
  w.varint(values.length);
  for (const value of values) writeOne(value);
}

function readPresenceEntry(r: BodyReader): PresenceEntry {
  return {
    user: r.varint(),
    status: r.enumeration(STATUSES, "status"),
    version: r.varint(),
    lastSeenMs: r.varint(),
    text: r.text(MAX_STATUS_TEXT, "LIMIT_EXCEEDED"),
  };
}

function writePresenceEntry(w: BodyWriter, e: PresenceEntry): void {
  w.varint(e.user);
  writeStatus(w, e.status, 0);
  w.varint(e.version);
  w.varint(e.lastSeenMs);
  w.text(e.text, MAX_STATUS_TEXT, "presence text");
}

function readPresenceEntries(r: BodyReader, minimum: number): PresenceEntry[] {
  const n = r.count(MAX_IDS, "LIMIT_EXCEEDED", PRESENCE_ENTRY_MIN_SIZE, minimum);
  const entries: PresenceEntry[] = [];
  for (let i = 0; i < n; i++) entries.push(readPresenceEntry(r));
  return entries;
}

function readItem(r: BodyReader): Item {
  return { post: r.u64(), author: r.varint(), kind: r.u8(), payload: r.blob(MAX_PAYLOAD, "PAYLOAD_TOO_LARGE") };
}

function writeItem(w: BodyWriter, item: Item): void {
  w.u64(item.post);
  w.varint(item.author);
  w.u8(item.kind);
  w.blob(item.payload, MAX_PAYLOAD, "item payload");
}

/** A body codec whose encoder needs only the fields in `F` (checked where the table instantiates it). */
interface BodyCodec<T extends MessageType, F> {
  decode: BodyDecoder<T>;
  encode: (w: BodyWriter, m: F) => void;
}

const MAP_MEMBER_MIN_SIZE = 4;

/** `node text(64)`, `addr text(255)`, `ws text(255)`, `tls text(255)`; node and addr not empty (§14.3). */
function readMember(r: BodyReader): MapMember {
  const node = r.text(MAX_NODE, "MALFORMED");
  const addr = r.text(MAX_ADDR, "MALFORMED");
  const ws = r.text(MAX_ADDR, "MALFORMED");
  const tls = r.text(MAX_ADDR, "MALFORMED");
  if (node === "" || addr === "") fail("empty node or addr");
  return { node, addr, ws, tls };
}

function writeMember(w: BodyWriter, m: MapMember): void {
  if (m.node === "" || m.addr === "") throw new EncodeError("a member needs a node and an addr");
  w.text(m.node, MAX_NODE, "node");
  w.text(m.addr, MAX_ADDR, "addr");
  w.text(m.ws, MAX_ADDR, "ws");
  w.text(m.tls, MAX_ADDR, "tls");
}

function reqOnly<T extends "OK" | "STATS" | "CLUSTER_MAP">(type: T): BodyCodec<T, { req: bigint }> {
  return {
    decode: (r) => ({ type, req: r.varint() }) as MessageOf<T>,
    encode: (w, m) => w.varint(m.req),
  };
}

function userList<T extends "WATCH" | "UNWATCH" | "QUERY">(type: T): BodyCodec<T, { req: bigint; users: bigint[] }> {
  return {
    decode: (r) => ({ type, req: r.varint(), users: readIds(r, MAX_IDS) }) as MessageOf<T>,
    encode: (w, m) => {
      w.varint(m.req);
      writeList(w, m.users, MAX_IDS, type, (u) => w.varint(u));
    },
  };
}

function sessionList<T extends "OPENED" | "CLOSE">(type: T): BodyCodec<T, { req: bigint; sessions: bigint[] }> {
  return {
    decode: (r) => ({ type, req: r.varint(), sessions: readIds(r, MAX_BATCH) }) as MessageOf<T>,
    encode: (w, m) => {
      w.varint(m.req);
      writeList(w, m.sessions, MAX_BATCH, type, (s) => w.varint(s));
    },
  };
}

function postRef<T extends "PUBLISHED" | "DELETE">(type: T): BodyCodec<T, { req: bigint; post: bigint }> {
  return {
    decode: (r) => ({ type, req: r.varint(), post: r.u64() }) as MessageOf<T>,
    encode: (w, m) => {
      w.varint(m.req);
      w.u64(m.post);
    },
  };
}

// ------------------------------------------------------------------- messages with their own layout

function decodeHello(r: BodyReader): MessageOf<"HELLO"> {
  const magic = r.take(HELLO_MAGIC.length);
  if (magic[0] !== HELLO_MAGIC[0] || magic[1] !== HELLO_MAGIC[1]) fail("HELLO magic is not HL");
  const version = r.u8();
  if (version === 0) fail("HELLO version 0", "UNSUPPORTED_VERSION");
  return {
    type: "HELLO",
    version,
    role: r.enumeration(ROLES, "role"),
    device: r.enumeration(DEVICES, "device"),
    wantUdp: (r.flags(0x01) & 1) === 1,
    resume: r.varint(),
    token: r.blob(MAX_TOKEN, "MALFORMED"),
  };
}

function encodeHello(w: BodyWriter, m: MessageOf<"HELLO">): void {
  w.raw(Uint8Array.from(HELLO_MAGIC));
  if (m.version === 0) throw new EncodeError("HELLO version 0");
  w.u8(m.version);
  writeEnum(w, ROLES, m.role, "role");
  writeEnum(w, DEVICES, m.device, "device");
  w.u8(m.wantUdp ? 1 : 0);
  w.varint(m.resume);
  w.blob(m.token, MAX_TOKEN, "token");
}

const UDP_KEY_SIZE = 16;

function decodeWelcome(r: BodyReader): MessageOf<"WELCOME"> {
  const version = r.u8();
  if (version === 0) fail("WELCOME version 0");
  const m: MessageOf<"WELCOME"> = {
    type: "WELCOME",
    version,
    session: r.varint(),
    heartbeatIntervalMs: r.varint32(),
    ttlMs: r.varint32(),
    serverTimeMs: r.varint(),
    maxFrame: r.varint32(),
    udpPort: 0,
    udpKey: new Uint8Array(UDP_KEY_SIZE),
  };
  if (m.maxFrame > MAX_FRAME) fail(`WELCOME max_frame ${m.maxFrame} over ${MAX_FRAME}`);
  m.udpPort = r.u16();
  m.udpKey = r.take(UDP_KEY_SIZE);
  // Accepted, never produced (§11): a key with no UDP port.
  if (m.udpPort === 0 && m.udpKey.some((b) => b !== 0)) r.canonical = false;
  return m;
}

function encodeWelcome(w: BodyWriter, m: MessageOf<"WELCOME">): void {
  if (m.version === 0) throw new EncodeError("WELCOME version 0");
  if (m.maxFrame > MAX_FRAME) throw new EncodeError(`WELCOME max_frame over ${MAX_FRAME}`);
  if (m.udpKey.length !== UDP_KEY_SIZE) throw new EncodeError("WELCOME udp_key is 16 bytes");
  w.u8(m.version);
  w.varint(m.session);
  w.varint32(m.heartbeatIntervalMs);
  w.varint32(m.ttlMs);
  w.varint(m.serverTimeMs);
  w.varint32(m.maxFrame);
  w.u16(m.udpPort);
  w.raw(m.udpPort === 0 ? new Uint8Array(UDP_KEY_SIZE) : m.udpKey);
}

const STATUS_PRESENT = 0b01;
const SEQ_PRESENT = 0b10;

function decodeHeartbeat(r: BodyReader): MessageOf<"HEARTBEAT"> {
  const word = r.varintBelow(HEARTBEAT_WORD_LIMIT, "MALFORMED");
  let dseq = 1;
  if (word & SEQ_PRESENT) {
    dseq = r.varint32();
    if (dseq === 1) fail("HEARTBEAT dseq 1 must be left out");
  }
  const status = word & STATUS_PRESENT ? readSettableStatus(r) : null;
  const zigzagged = Math.floor(word / 4);
  const jitterMs = zigzagged % 2 === 0 ? zigzagged / 2 : -(zigzagged + 1) / 2;
  return { type: "HEARTBEAT", jitterMs, dseq, status };
}

function encodeHeartbeat(w: BodyWriter, m: MessageOf<"HEARTBEAT">): void {
  const { jitterMs, dseq, status } = m;
  if (!Number.isInteger(jitterMs) || jitterMs < -(2 ** 32) || jitterMs >= 2 ** 32) {
    throw new EncodeError(`HEARTBEAT jitter ${jitterMs} outside -2^32..2^32`);
  }
  checkInteger(dseq, 2 ** 32 - 1, "HEARTBEAT dseq");
  const zigzagged = jitterMs >= 0 ? jitterMs * 2 : -jitterMs * 2 - 1;
  const seqPresent = dseq !== 1;
  w.varint(zigzagged * 4 + (seqPresent ? SEQ_PRESENT : 0) + (status !== null ? STATUS_PRESENT : 0));
  if (seqPresent) w.varint32(dseq);
  if (status !== null) writeStatus(w, status, 1);
}

function decodeSetStatus(r: BodyReader): MessageOf<"SET_STATUS"> {
  const req = r.varint();
  const session = r.flags(0x01) & 1 ? r.varint() : null;
  const status = readSettableStatus(r);
  return { type: "SET_STATUS", req, session, status, text: r.text(MAX_STATUS_TEXT, "LIMIT_EXCEEDED") };
}

function encodeSetStatus(w: BodyWriter, m: MessageOf<"SET_STATUS">): void {
  w.varint(m.req);
  w.u8(m.session === null ? 0 : 1);
  if (m.session !== null) w.varint(m.session);
  writeStatus(w, m.status, 1);
  w.text(m.text, MAX_STATUS_TEXT, "status text");
}

function decodeOpen(r: BodyReader): MessageOf<"OPEN"> {
  const req = r.varint();
  const n = r.count(MAX_BATCH, "LIMIT_EXCEEDED", OPEN_ENTRY_MIN_SIZE, 1);
  const entries: OpenEntry[] = [];
  for (let i = 0; i < n; i++) {
    entries.push({ user: r.varint(), device: r.enumeration(DEVICES, "device"), status: readSettableStatus(r) });
  }
  return { type: "OPEN", req, entries };
}

function encodeOpen(w: BodyWriter, m: MessageOf<"OPEN">): void {
  w.varint(m.req);
  writeList(w, m.entries, MAX_BATCH, "OPEN", (e) => {
    w.varint(e.user);
    writeEnum(w, DEVICES, e.device, "device");
    writeStatus(w, e.status, 1);
  }, 1);
}

/** TIMELINE cursor flags in wire order (§4.29). */
const CURSOR_FIELDS: readonly [bit: number, field: keyof Cursor][] = [
  [0x01, "maxId"],
  [0x02, "sinceId"],
  [0x04, "minId"],
];
const SINCE_AND_MIN = 0x06;

function decodeTimeline(r: BodyReader): MessageOf<"TIMELINE"> {
  const req = r.varint();
  const sourceCode = r.u8();
  if (sourceCode > 1) fail(`TIMELINE source ${sourceCode} undefined`);
  const source: TimelineSource = sourceCode === 1 ? { author: r.varint() } : "home";
  const flags = r.flags(0x07);
  if ((flags & SINCE_AND_MIN) === SINCE_AND_MIN) fail("TIMELINE since_id together with min_id");
  const cursor: Cursor = { maxId: null, sinceId: null, minId: null };
  for (const [bit, field] of CURSOR_FIELDS) if (flags & bit) cursor[field] = r.u64();
  const limit = r.u8();
  if (limit === 0) fail("TIMELINE limit 0");
  if (limit > MAX_PAGE) fail(`TIMELINE limit ${limit} over ${MAX_PAGE}`, "LIMIT_EXCEEDED");
  return { type: "TIMELINE", req, source, cursor, limit };
}

function encodeTimeline(w: BodyWriter, m: MessageOf<"TIMELINE">): void {
  if (m.cursor.sinceId !== null && m.cursor.minId !== null) throw new EncodeError("TIMELINE: since_id and min_id exclude each other");
  if (!Number.isInteger(m.limit) || m.limit < 1 || m.limit > MAX_PAGE) throw new EncodeError(`TIMELINE limit ${m.limit} outside 1..=${MAX_PAGE}`);
  w.varint(m.req);
  if (m.source === "home") {
    w.u8(0);
  } else {
    w.u8(1);
    w.varint(m.source.author);
  }
  const present = CURSOR_FIELDS.filter(([, field]) => m.cursor[field] !== null);
  w.u8(present.reduce((flags, [bit]) => flags | bit, 0));
  for (const [, field] of present) w.u64(m.cursor[field]!);
  w.u8(m.limit);
}

function decodePage(r: BodyReader): MessageOf<"PAGE"> {
  const req = r.varint();
  const n = r.count(MAX_PAGE, "LIMIT_EXCEEDED", PAGE_ITEM_MIN_SIZE);
  const items: Item[] = [];
  for (let i = 0; i < n; i++) {
    const item = readItem(r);
    if (i > 0 && item.post >= items[i - 1]!.post) fail("PAGE items not newest first");
    items.push(item);
  }
  return { type: "PAGE", req, items };
}

function encodePage(w: BodyWriter, m: MessageOf<"PAGE">): void {
  w.varint(m.req);
  writeList(w, m.items, MAX_PAGE, "PAGE", (item) => writeItem(w, item));
}

// ------------------------------------------------------------------- the type table (§4.2)

type CodecTable = { [T in MessageType]: MessageCodec<T> };

function codec<T extends MessageType>(type: T, code: number, serverToClient: boolean, body: Pick<MessageCodec<T>, "decode" | "encode">): MessageCodec<T> {
  return { type, code, serverToClient, ...body };
}

export const CODECS: CodecTable = {
  HELLO: codec("HELLO", 0x01, false, { decode: decodeHello, encode: encodeHello }),
  WELCOME: codec("WELCOME", 0x02, true, { decode: decodeWelcome, encode: encodeWelcome }),
  BYE: codec("BYE", 0x03, false, { decode: () => ({ type: "BYE" }), encode: () => undefined }),
  GOAWAY: codec("GOAWAY", 0x04, true, {
    decode: (r) => ({ type: "GOAWAY", reason: r.enumeration(GOAWAY_REASONS, "goaway reason"), reconnectAfterMs: r.varint32() }),
    encode: (w, m) => {
      writeEnum(w, GOAWAY_REASONS, m.reason, "goaway reason");
      w.varint32(m.reconnectAfterMs);
    },
  }),
  ERROR: codec("ERROR", 0x05, true, {
    decode: (r) => ({
      type: "ERROR",
      req: r.varint(),
      code: r.varintBelow(0x1_0000, "MALFORMED"),
      message: r.text(MAX_ERROR_TEXT, "MALFORMED"),
    }),
    encode: (w, m) => {
      w.varint(m.req);
      checkInteger(m.code, 0xffff, "ERROR code");
      w.varint(m.code);
      w.text(m.message, MAX_ERROR_TEXT, "ERROR message");
    },
  }),
  OK: codec("OK", 0x06, true, reqOnly("OK")),
  REDIRECT: codec("REDIRECT", 0x07, true, {
    decode: (r) => {
      const version = r.varint();
      return { type: "REDIRECT", version, ...readMember(r) };
    },
    encode: (w, m) => {
      w.varint(m.version);
      writeMember(w, m);
    },
  }),
  HEARTBEAT: codec("HEARTBEAT", 0x10, false, { decode: decodeHeartbeat, encode: encodeHeartbeat }),
  SET_STATUS: codec("SET_STATUS", 0x11, false, { decode: decodeSetStatus, encode: encodeSetStatus }),
  WATCH: codec("WATCH", 0x12, false, userList("WATCH")),
  UNWATCH: codec("UNWATCH", 0x13, false, userList("UNWATCH")),
  QUERY: codec("QUERY", 0x14, false, userList("QUERY")),
  PRESENCE: codec("PRESENCE", 0x15, true, {
    decode: (r) => ({ type: "PRESENCE", req: r.varint(), entries: readPresenceEntries(r, 0) }),
    encode: (w, m) => {
      w.varint(m.req);
      writeList(w, m.entries, MAX_IDS, "PRESENCE", (e) => writePresenceEntry(w, e));
    },
  }),
  PRESENCE_PUSH: codec("PRESENCE_PUSH", 0x16, true, {
    decode: (r) => ({ type: "PRESENCE_PUSH", entries: readPresenceEntries(r, 1) }),
    encode: (w, m) => writeList(w, m.entries, MAX_IDS, "PRESENCE_PUSH", (e) => writePresenceEntry(w, e), 1),
  }),
  STATS: codec("STATS", 0x17, false, reqOnly("STATS")),
  STATS_REPLY: codec("STATS_REPLY", 0x18, true, {
    decode: (r) => ({
      type: "STATS_REPLY",
      req: r.varint(),
      stats: { onlineUsers: r.varint(), sessions: r.varint(), watches: r.varint(), connections: r.varint() },
    }),
    encode: (w, m) => {
      w.varint(m.req);
      const { onlineUsers, sessions, watches, connections } = m.stats;
      for (const counter of [onlineUsers, sessions, watches, connections]) w.varint(counter);
    },
  }),
  CLUSTER_MAP: codec("CLUSTER_MAP", 0x19, false, reqOnly("CLUSTER_MAP")),
  CLUSTER_MAP_REPLY: codec("CLUSTER_MAP_REPLY", 0x1a, true, {
    decode: (r) => {
      const req = r.varint();
      const version = r.varint();
      const partitions = r.varint32();
      if (partitions < 1 || partitions > MAX_PARTITIONS) fail(`partitions ${partitions} outside 1..=${MAX_PARTITIONS}`);
      const n = r.count(MAX_MEMBERS, "MALFORMED", MAP_MEMBER_MIN_SIZE);
      const members: MapMember[] = [];
      for (let i = 0; i < n; i++) members.push(readMember(r));
      return { type: "CLUSTER_MAP_REPLY", req, version, partitions, members };
    },
    encode: (w, m) => {
      w.varint(m.req);
      w.varint(m.version);
      checkInteger(m.partitions, MAX_PARTITIONS, "partitions");
      if (m.partitions < 1) throw new EncodeError("partitions must be at least 1");
      w.varint32(m.partitions);
      writeList(w, m.members, MAX_MEMBERS, "CLUSTER_MAP_REPLY", (member) => writeMember(w, member));
    },
  }),
  OPEN: codec("OPEN", 0x20, false, { decode: decodeOpen, encode: encodeOpen }),
  OPENED: codec("OPENED", 0x21, true, sessionList("OPENED")),
  CLOSE: codec("CLOSE", 0x22, false, sessionList("CLOSE")),
  BATCH_HEARTBEAT: codec("BATCH_HEARTBEAT", 0x23, false, {
    decode: (r) => ({ type: "BATCH_HEARTBEAT", ...decodeBatch(r) }),
    encode: (w, m) => encodeBatch(w, m),
  }),
  PUBLISH: codec("PUBLISH", 0x30, false, {
    decode: (r) => ({ type: "PUBLISH", req: r.varint(), kind: r.u8(), payload: r.blob(MAX_PAYLOAD, "PAYLOAD_TOO_LARGE") }),
    encode: (w, m) => {
      w.varint(m.req);
      w.u8(m.kind);
      w.blob(m.payload, MAX_PAYLOAD, "payload");
    },
  }),
  PUBLISHED: codec("PUBLISHED", 0x31, true, postRef("PUBLISHED")),
  DELETE: codec("DELETE", 0x32, false, postRef("DELETE")),
  GRAPH: codec("GRAPH", 0x33, false, {
    decode: (r) => ({ type: "GRAPH", req: r.varint(), op: r.enumeration(GRAPH_OPS, "graph op"), user: r.varint() }),
    encode: (w, m) => {
      w.varint(m.req);
      writeEnum(w, GRAPH_OPS, m.op, "graph op");
      w.varint(m.user);
    },
  }),
  TIMELINE: codec("TIMELINE", 0x34, false, { decode: decodeTimeline, encode: encodeTimeline }),
  PAGE: codec("PAGE", 0x35, true, { decode: decodePage, encode: encodePage }),
  LIVE: codec("LIVE", 0x36, false, {
    decode: (r) => ({ type: "LIVE", req: r.varint(), on: r.enumeration([false, true], "LIVE on") }),
    encode: (w, m) => {
      w.varint(m.req);
      w.u8(m.on ? 1 : 0);
    },
  }),
  ITEM_PUSH: codec("ITEM_PUSH", 0x37, true, {
    decode: (r) => ({ type: "ITEM_PUSH", ...readItem(r) }),
    encode: (w, m) => writeItem(w, m),
  }),
  DELETED_PUSH: codec("DELETED_PUSH", 0x38, true, {
    decode: (r) => ({ type: "DELETED_PUSH", post: r.u64() }),
    encode: (w, m) => w.u64(m.post),
  }),
};

const BY_CODE = new Map<number, MessageCodec<MessageType>>(
  Object.values(CODECS).map((c) => [c.code, c as MessageCodec<MessageType>]),
);

/** The codec of a type byte, or undefined for a type v1 does not define. */
export function codecOfTypeByte(code: number): MessageCodec<MessageType> | undefined {
  return BY_CODE.get(code);
}

/** The codec of a message. */
export function codecOf<T extends MessageType>(m: MessageOf<T> | Message): MessageCodec<T> {
  const found = (CODECS as Record<string, MessageCodec<MessageType> | undefined>)[m.type];
  if (!found) throw new EncodeError(`unknown message type ${String(m.type)}`);
  return found as unknown as MessageCodec<T>;
}
