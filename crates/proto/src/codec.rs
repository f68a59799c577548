//! Message bodies to bytes and back (SPEC.md §Bodies).
//!
//! Owns the byte layout of every frame type. Decoding is zero-copy (byte
//! fields are slices of the frame) and checks every count and length against
//! its limit before reserving memory. It must not do I/O or keep state
//! between frames: heartbeat deltas are resolved by `heartbeat`, framing on a
//! stream by `frame`.

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::Batch;
use super::error::{DecodeError, ErrorCode};
use super::message::*;
use super::reader::Reader;
use super::{limits, route, varint};

/// Frame type codes (SPEC.md §Types).
pub mod types {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const BYE: u8 = 0x03;
    pub const GOAWAY: u8 = 0x04;
    pub const ERROR: u8 = 0x05;
    pub const OK: u8 = 0x06;
    pub const REDIRECT: u8 = 0x07;
    pub const HEARTBEAT: u8 = 0x10;
    pub const SET_STATUS: u8 = 0x11;
    pub const WATCH: u8 = 0x12;
    pub const UNWATCH: u8 = 0x13;
    pub const QUERY: u8 = 0x14;
    pub const PRESENCE: u8 = 0x15;
    pub const PRESENCE_PUSH: u8 = 0x16;
    pub const STATS: u8 = 0x17;
    pub const STATS_REPLY: u8 = 0x18;
    pub const CLUSTER_MAP: u8 = 0x19;
    pub const CLUSTER_MAP_REPLY: u8 = 0x1a;
    pub const OPEN: u8 = 0x20;
    pub const OPENED: u8 = 0x21;
    pub const CLOSE: u8 = 0x22;
    pub const BATCH_HEARTBEAT: u8 = 0x23;
    pub const PUBLISH: u8 = 0x30;
    pub const PUBLISHED: u8 = 0x31;
    pub const DELETE: u8 = 0x32;
    pub const GRAPH: u8 = 0x33;
    pub const TIMELINE: u8 = 0x34;
    pub const PAGE: u8 = 0x35;
    pub const LIVE: u8 = 0x36;
    pub const ITEM_PUSH: u8 = 0x37;
    pub const DELETED_PUSH: u8 = 0x38;
}

/// The `"HL"` that opens every HELLO body.
pub const MAGIC: [u8; 2] = *b"HL";

// HEARTBEAT word flags.
const HB_STATUS: u64 = 0b01;
const HB_SEQ: u64 = 0b10;
/// |jitter| < 2^32, so zigzag(jitter) < 2^33 and the word < 2^35.
const HB_WORD_LIMIT: u64 = 1 << 35;

const SET_STATUS_SESSION: u8 = 0b1;
const HELLO_WANT_UDP: u8 = 0b1;
const CURSOR_MAX: u8 = 0b001;
const CURSOR_SINCE: u8 = 0b010;
const CURSOR_MIN: u8 = 0b100;

// Smallest encodings of list entries, to bound counts by the bytes present.
const MIN_ID: usize = 1;
const MIN_OPEN_ENTRY: usize = 3;
const MIN_PRESENCE_ENTRY: usize = 5;
const MIN_ITEM: usize = 11;
const MIN_MAP_MEMBER: usize = 4;

impl Message {
    /// The frame type code of this message.
    pub fn type_code(&self) -> u8 {
        use types::*;
        match self {
            Message::Hello(_) => HELLO,
            Message::Welcome(_) => WELCOME,
            Message::Bye => BYE,
            Message::Goaway { .. } => GOAWAY,
            Message::Error { .. } => ERROR,
            Message::Ok { .. } => OK,
            Message::Heartbeat(_) => HEARTBEAT,
            Message::SetStatus { .. } => SET_STATUS,
            Message::Watch { .. } => WATCH,
            Message::Unwatch { .. } => UNWATCH,
            Message::Query { .. } => QUERY,
            Message::Presence { .. } => PRESENCE,
            Message::PresencePush { .. } => PRESENCE_PUSH,
            Message::Stats { .. } => STATS,
            Message::StatsReply { .. } => STATS_REPLY,
            Message::Open { .. } => OPEN,
            Message::Opened { .. } => OPENED,
            Message::Close { .. } => CLOSE,
            Message::BatchHeartbeat(_) => BATCH_HEARTBEAT,
            Message::Publish { .. } => PUBLISH,
            Message::Published { .. } => PUBLISHED,
            Message::Delete { .. } => DELETE,
            Message::Graph { .. } => GRAPH,
            Message::Timeline { .. } => TIMELINE,
            Message::Page { .. } => PAGE,
            Message::Live { .. } => LIVE,
            Message::ItemPush(_) => ITEM_PUSH,
            Message::DeletedPush { .. } => DELETED_PUSH,
            Message::Redirect { .. } => REDIRECT,
            Message::ClusterMap { .. } => CLUSTER_MAP,
            Message::ClusterMapReply { .. } => CLUSTER_MAP_REPLY,
        }
    }

    /// Appends the type byte and body (a frame without its length prefix).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.type_code());
        match self {
            Message::Hello(h) => {
                dst.put_slice(&MAGIC);
                dst.put_u8(h.version);
                dst.put_u8(h.role as u8);
                dst.put_u8(h.device as u8);
                dst.put_u8(if h.want_udp { HELLO_WANT_UDP } else { 0 });
                varint::put(dst, h.resume);
                put_bytes(dst, &h.token);
            }
            Message::Welcome(w) => {
                dst.put_u8(w.version);
                varint::put(dst, w.session);
                varint::put(dst, w.heartbeat_interval_ms.into());
                varint::put(dst, w.ttl_ms.into());
                varint::put(dst, w.server_time_ms);
                varint::put(dst, w.max_frame.into());
                dst.put_u16(w.udp_port);
                dst.put_slice(&w.udp_key);
            }
            Message::Bye => {}
            Message::Goaway { reason, reconnect_after_ms } => {
                dst.put_u8(*reason as u8);
                varint::put(dst, (*reconnect_after_ms).into());
            }
            Message::Error { req, code, message } => {
                varint::put(dst, *req);
                varint::put(dst, (*code).into());
                put_bytes(dst, message.as_bytes());
            }
            Message::Ok { req } | Message::Stats { req } | Message::ClusterMap { req } => varint::put(dst, *req),
            Message::Heartbeat(hb) => encode_heartbeat(dst, hb),
            Message::SetStatus { req, session, status, text } => {
                varint::put(dst, *req);
                dst.put_u8(if session.is_some() { SET_STATUS_SESSION } else { 0 });
                if let Some(session) = session {
                    varint::put(dst, *session);
                }
                dst.put_u8(*status as u8);
                put_bytes(dst, text.as_bytes());
            }
            Message::Watch { req, users } | Message::Unwatch { req, users } | Message::Query { req, users } => {
                varint::put(dst, *req);
                put_ids(dst, users);
            }
            Message::Opened { req, sessions } | Message::Close { req, sessions } => {
                varint::put(dst, *req);
                put_ids(dst, sessions);
            }
            Message::Presence { req, entries } => {
                varint::put(dst, *req);
                put_presence_entries(dst, entries);
            }
            Message::PresencePush { entries } => put_presence_entries(dst, entries),
            Message::StatsReply { req, stats } => {
                varint::put(dst, *req);
                for counter in [stats.online_users, stats.sessions, stats.watches, stats.connections] {
                    varint::put(dst, counter);
                }
            }
            Message::Open { req, entries } => {
                varint::put(dst, *req);
                varint::put(dst, entries.len() as u64);
                for e in entries {
                    varint::put(dst, e.user);
                    dst.put_u8(e.device as u8);
                    dst.put_u8(e.status as u8);
                }
            }
            Message::BatchHeartbeat(batch) => dst.put_slice(batch.as_bytes()),
            Message::Publish { req, kind, payload } => {
                varint::put(dst, *req);
                dst.put_u8(*kind);
                put_bytes(dst, payload);
            }
            Message::Published { req, post } | Message::Delete { req, post } => {
                varint::put(dst, *req);
                dst.put_u64(*post);
            }
            Message::Graph { req, op, user } => {
                varint::put(dst, *req);
                dst.put_u8(*op as u8);
                varint::put(dst, *user);
            }
            Message::Timeline { req, source, cursor, limit } => {
                varint::put(dst, *req);
                match source {
                    Source::Home => dst.put_u8(0),
                    Source::Author(author) => {
                        dst.put_u8(1);
                        varint::put(dst, *author);
                    }
                }
                let ids = [(cursor.max_id, CURSOR_MAX), (cursor.since_id, CURSOR_SINCE), (cursor.min_id, CURSOR_MIN)];
                dst.put_u8(ids.iter().filter(|(id, _)| id.is_some()).map(|(_, bit)| bit).sum());
                for id in ids.iter().filter_map(|(id, _)| *id) {
                    dst.put_u64(id);
                }
                dst.put_u8(*limit);
            }
            Message::Page { req, items } => {
                varint::put(dst, *req);
                varint::put(dst, items.len() as u64);
                items.iter().for_each(|item| put_item(dst, item));
            }
            Message::Live { req, on } => {
                varint::put(dst, *req);
                dst.put_u8(u8::from(*on));
            }
            Message::ItemPush(item) => put_item(dst, item),
            Message::DeletedPush { post } => dst.put_u64(*post),
            Message::Redirect { version, owner } => {
                varint::put(dst, *version);
                put_member(dst, owner);
            }
            Message::ClusterMapReply { req, version, partitions, members } => {
                varint::put(dst, *req);
                varint::put(dst, *version);
                varint::put(dst, (*partitions).into());
                varint::put(dst, members.len() as u64);
                members.iter().for_each(|m| put_member(dst, m));
            }
        }
    }

    /// Decodes one frame (type byte and body, no length prefix).
    pub fn decode(frame: Bytes) -> Result<Message, DecodeError> {
        use types::*;
        let mut r = Reader::new(frame);
        let ty = r.u8("type")?;
        let msg = match ty {
            HELLO => Message::Hello(decode_hello(&mut r)?),
            WELCOME => Message::Welcome(Welcome {
                version: r.u8("version")?,
                session: r.varint("session")?,
                heartbeat_interval_ms: r.varint32("heartbeat_interval_ms")?,
                ttl_ms: r.varint32("ttl_ms")?,
                server_time_ms: r.varint("server_time_ms")?,
                max_frame: r.varint32("max_frame")?,
                udp_port: r.u16("udp_port")?,
                udp_key: r.array("udp_key")?,
            }),
            BYE => Message::Bye,
            GOAWAY => Message::Goaway {
                reason: enumerated(&mut r, "goaway reason")?,
                reconnect_after_ms: r.varint32("reconnect_after_ms")?,
            },
            ERROR => Message::Error {
                req: r.req()?,
                code: u16::try_from(r.varint("error code")?).map_err(|_| r.malformed("error code"))?,
                message: text(&mut r, limits::MAX_ERROR_TEXT, ErrorCode::Malformed, "error message")?,
            },
            OK => Message::Ok { req: r.req()? },
            HEARTBEAT => Message::Heartbeat(decode_heartbeat(&mut r)?),
            SET_STATUS => decode_set_status(&mut r)?,
            WATCH => Message::Watch { req: r.req()?, users: ids(&mut r, limits::MAX_IDS, "users")? },
            UNWATCH => Message::Unwatch { req: r.req()?, users: ids(&mut r, limits::MAX_IDS, "users")? },
            QUERY => Message::Query { req: r.req()?, users: ids(&mut r, limits::MAX_IDS, "users")? },
            PRESENCE => Message::Presence { req: r.req()?, entries: presence_entries(&mut r, 0)? },
            PRESENCE_PUSH => Message::PresencePush { entries: presence_entries(&mut r, 1)? },
            STATS => Message::Stats { req: r.req()? },
            STATS_REPLY => Message::StatsReply {
                req: r.req()?,
                stats: Stats {
                    online_users: r.varint("online_users")?,
                    sessions: r.varint("sessions")?,
                    watches: r.varint("watches")?,
                    connections: r.varint("connections")?,
                },
            },
            OPEN => decode_open(&mut r)?,
            OPENED => Message::Opened { req: r.req()?, sessions: ids(&mut r, limits::MAX_BATCH, "sessions")? },
            CLOSE => Message::Close { req: r.req()?, sessions: ids(&mut r, limits::MAX_BATCH, "sessions")? },
            BATCH_HEARTBEAT => Message::BatchHeartbeat(Batch::parse(r.rest())?),
            PUBLISH => Message::Publish {
                req: r.req()?,
                kind: r.u8("kind")?,
                payload: r.bytes(limits::MAX_PAYLOAD, ErrorCode::PayloadTooLarge, "payload")?,
            },
            PUBLISHED => Message::Published { req: r.req()?, post: r.u64("post")? },
            DELETE => Message::Delete { req: r.req()?, post: r.u64("post")? },
            GRAPH => Message::Graph { req: r.req()?, op: enumerated(&mut r, "graph op")?, user: r.varint("user")? },
            TIMELINE => decode_timeline(&mut r)?,
            PAGE => {
                let req = r.req()?;
                let count = r.count(limits::MAX_PAGE, ErrorCode::LimitExceeded, MIN_ITEM, "items")?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(decode_item(&mut r)?);
                }
                Message::Page { req, items }
            }
            LIVE => Message::Live {
                req: r.req()?,
                on: match r.u8("live")? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.malformed("live")),
                },
            },
            ITEM_PUSH => Message::ItemPush(decode_item(&mut r)?),
            DELETED_PUSH => Message::DeletedPush { post: r.u64("post")? },
            REDIRECT => {
                let version = r.varint("version")?;
                Message::Redirect { version, owner: Box::new(decode_member(&mut r)?) }
            }
            CLUSTER_MAP => Message::ClusterMap { req: r.req()? },
            CLUSTER_MAP_REPLY => {
                let req = r.req()?;
                let version = r.varint("version")?;
                let partitions = r.varint32("partitions")?;
                if partitions == 0 || partitions > route::MAX_PARTITIONS {
                    return Err(r.malformed("partitions"));
                }
                let count = r.count(route::MAX_MEMBERS, ErrorCode::Malformed, MIN_MAP_MEMBER, "members")?;
                let mut members = Vec::with_capacity(count);
                for _ in 0..count {
                    members.push(decode_member(&mut r)?);
                }
                Message::ClusterMapReply { req, version, partitions, members }
            }
            _ => return Err(r.error(ErrorCode::UnknownType, "unknown frame type")),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn put_bytes(dst: &mut BytesMut, bytes: &[u8]) {
    varint::put(dst, bytes.len() as u64);
    dst.put_slice(bytes);
}

fn put_ids(dst: &mut BytesMut, ids: &[u64]) {
    varint::put(dst, ids.len() as u64);
    ids.iter().for_each(|&id| varint::put(dst, id));
}

fn put_presence_entries(dst: &mut BytesMut, entries: &[PresenceEntry]) {
    varint::put(dst, entries.len() as u64);
    for e in entries {
        varint::put(dst, e.user);
        dst.put_u8(e.status as u8);
        varint::put(dst, e.version);
        varint::put(dst, e.last_seen_ms);
        put_bytes(dst, e.text.as_bytes());
    }
}

fn put_item(dst: &mut BytesMut, item: &Item) {
    dst.put_u64(item.post);
    varint::put(dst, item.author);
    dst.put_u8(item.kind);
    put_bytes(dst, &item.payload);
}

fn encode_heartbeat(dst: &mut BytesMut, hb: &Heartbeat) {
    let seq_present = hb.dseq != 1;
    let word = varint::zigzag(hb.jitter_ms) << 2
        | if seq_present { HB_SEQ } else { 0 }
        | if hb.status.is_some() { HB_STATUS } else { 0 };
    varint::put(dst, word);
    if seq_present {
        varint::put(dst, hb.dseq.into());
    }
    if let Some(status) = hb.status {
        dst.put_u8(status as u8);
    }
}

fn decode_heartbeat(r: &mut Reader) -> Result<Heartbeat, DecodeError> {
    let word = r.varint("heartbeat word")?;
    if word >= HB_WORD_LIMIT {
        return Err(r.malformed("heartbeat jitter out of range"));
    }
    let dseq = if word & HB_SEQ != 0 {
        match r.varint32("dseq")? {
            1 => return Err(r.malformed("dseq 1 must be implicit")),
            dseq => dseq,
        }
    } else {
        1
    };
    let status = if word & HB_STATUS != 0 { Some(settable_status(r)?) } else { None };
    Ok(Heartbeat { jitter_ms: varint::unzigzag(word >> 2), dseq, status })
}

fn decode_hello(r: &mut Reader) -> Result<Hello, DecodeError> {
    if r.array::<2>("magic")? != MAGIC {
        return Err(r.malformed("bad magic"));
    }
    let version = r.u8("version")?;
    if version == 0 {
        return Err(r.error(ErrorCode::UnsupportedVersion, "version 0"));
    }
    let role = enumerated(r, "role")?;
    let device = enumerated(r, "device")?;
    let flags = r.u8("hello flags")?;
    if flags & !HELLO_WANT_UDP != 0 {
        return Err(r.malformed("reserved hello flag"));
    }
    Ok(Hello {
        version,
        role,
        device,
        want_udp: flags & HELLO_WANT_UDP != 0,
        resume: r.varint("resume")?,
        token: r.bytes(limits::MAX_TOKEN, ErrorCode::Malformed, "token")?,
    })
}

fn decode_set_status(r: &mut Reader) -> Result<Message, DecodeError> {
    let req = r.req()?;
    let flags = r.u8("set_status flags")?;
    if flags & !SET_STATUS_SESSION != 0 {
        return Err(r.malformed("reserved set_status flag"));
    }
    let session = if flags & SET_STATUS_SESSION != 0 { Some(r.varint("session")?) } else { None };
    Ok(Message::SetStatus {
        req,
        session,
        status: settable_status(r)?,
        text: text(r, limits::MAX_STATUS_TEXT, ErrorCode::LimitExceeded, "status text")?,
    })
}

fn decode_open(r: &mut Reader) -> Result<Message, DecodeError> {
    let req = r.req()?;
    let count = r.count(limits::MAX_BATCH, ErrorCode::LimitExceeded, MIN_OPEN_ENTRY, "open entries")?;
    if count == 0 {
        return Err(r.malformed("empty open"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(OpenEntry {
            user: r.varint("user")?,
            device: enumerated(r, "device")?,
            status: settable_status(r)?,
        });
    }
    Ok(Message::Open { req, entries })
}

fn decode_timeline(r: &mut Reader) -> Result<Message, DecodeError> {
    let req = r.req()?;
    let source = match r.u8("source")? {
        0 => Source::Home,
        1 => Source::Author(r.varint("author")?),
        _ => return Err(r.malformed("source")),
    };
    let flags = r.u8("cursor flags")?;
    if flags & !(CURSOR_MAX | CURSOR_SINCE | CURSOR_MIN) != 0 {
        return Err(r.malformed("reserved cursor flag"));
    }
    if flags & CURSOR_SINCE != 0 && flags & CURSOR_MIN != 0 {
        return Err(r.malformed("since_id with min_id"));
    }
    let cursor_id = |bit: u8, r: &mut Reader| -> Result<Option<u64>, DecodeError> {
        if flags & bit != 0 {
            r.u64("cursor id").map(Some)
        } else {
            Ok(None)
        }
    };
    let cursor = Cursor {
        max_id: cursor_id(CURSOR_MAX, r)?,
        since_id: cursor_id(CURSOR_SINCE, r)?,
        min_id: cursor_id(CURSOR_MIN, r)?,
    };
    let limit = r.u8("limit")?;
    if limit == 0 {
        return Err(r.malformed("limit 0"));
    }
    if usize::from(limit) > limits::MAX_PAGE {
        return Err(r.error(ErrorCode::LimitExceeded, "limit over 100"));
    }
    Ok(Message::Timeline { req, source, cursor, limit })
}

fn decode_item(r: &mut Reader) -> Result<Item, DecodeError> {
    Ok(Item {
        post: r.u64("post")?,
        author: r.varint("author")?,
        kind: r.u8("kind")?,
        payload: r.bytes(limits::MAX_PAYLOAD, ErrorCode::PayloadTooLarge, "payload")?,
    })
}

fn ids(r: &mut Reader, max: usize, what: &'static str) -> Result<Vec<u64>, DecodeError> {
    let count = r.count(max, ErrorCode::LimitExceeded, MIN_ID, what)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(r.varint(what)?);
    }
    Ok(ids)
}

fn presence_entries(r: &mut Reader, min_count: usize) -> Result<Vec<PresenceEntry>, DecodeError> {
    let count = r.count(limits::MAX_IDS, ErrorCode::LimitExceeded, MIN_PRESENCE_ENTRY, "presence entries")?;
    if count < min_count {
        return Err(r.malformed("empty presence push"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(PresenceEntry {
            user: r.varint("user")?,
            status: enumerated(r, "status")?,
            version: r.varint("version")?,
            last_seen_ms: r.varint("last_seen_ms")?,
            text: text(r, limits::MAX_STATUS_TEXT, ErrorCode::Malformed, "status text")?,
        });
    }
    Ok(entries)
}

fn text(r: &mut Reader, max: usize, over: ErrorCode, what: &'static str) -> Result<Text, DecodeError> {
    let bytes = r.bytes(max, over, what)?;
    Text::from_utf8(bytes).map_err(|_| r.malformed(what))
}

fn put_member(dst: &mut BytesMut, MapMember { node, addr, ws, tls }: &MapMember) {
    for field in [node, addr, ws, tls] {
        put_bytes(dst, field.as_bytes());
    }
}

/// `node text(64)`, `addr text(255)`, `ws text(255)`, `tls text(255)`; `node` and `addr` not empty.
fn decode_member(r: &mut Reader) -> Result<MapMember, DecodeError> {
    let node = text(r, route::MAX_NODE, ErrorCode::Malformed, "node")?;
    let addr = text(r, route::MAX_ADDR, ErrorCode::Malformed, "addr")?;
    let ws = text(r, route::MAX_ADDR, ErrorCode::Malformed, "ws")?;
    let tls = text(r, route::MAX_ADDR, ErrorCode::Malformed, "tls")?;
    if node.is_empty() || addr.is_empty() {
        return Err(r.malformed("empty node or addr"));
    }
    Ok(MapMember { node, addr, ws, tls })
}

fn enumerated<T: TryFrom<u8>>(r: &mut Reader, what: &'static str) -> Result<T, DecodeError> {
    let raw = r.u8(what)?;
    T::try_from(raw).map_err(|_| r.malformed(what))
}

fn settable_status(r: &mut Reader) -> Result<Status, DecodeError> {
    match enumerated(r, "status")? {
        Status::Offline => Err(r.malformed("status offline cannot be set")),
        status => Ok(status),
    }
}
