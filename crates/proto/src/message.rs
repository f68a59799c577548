//! Typed protocol messages: one variant per frame type of SPEC.md §Types.
//!
//! Owns the in-memory shape of every message and the small enumerations the
//! wire uses. It must not know how bytes are laid out (see `codec`) nor what
//! a server does with a message.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::batch::Batch;

/// Declares a `u8`-valued wire enumeration with a checked conversion.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl TryFrom<u8> for $name {
            type Error = ();
            fn try_from(value: u8) -> Result<Self, ()> {
                match value {
                    $($value => Ok(Self::$variant),)*
                    _ => Err(()),
                }
            }
        }
    };
}

wire_enum! {
    /// A presence status. Clients may set `Online` ..= `Invisible`; `Offline`
    /// is only ever reported.
    #[derive(Default)]
    Status { #[default] Offline = 0, Online = 1, Away = 2, Busy = 3, Invisible = 4, }
}

impl Status {
    /// Whether a client may set this status (everything but offline).
    pub fn is_settable(self) -> bool {
        self != Status::Offline
    }
}

wire_enum! {
    /// The kind of device a session runs on.
    #[derive(Default)]
    Device { #[default] Unknown = 0, Desktop = 1, Mobile = 2, Web = 3, Bot = 4, }
}

wire_enum! {
    /// Who is on the other end of a connection.
    Role { Client = 0, Gateway = 1, }
}

wire_enum! {
    /// A change to the social graph.
    GraphOp { Follow = 1, Unfollow = 2, Block = 3, Unblock = 4, }
}

wire_enum! {
    /// Why the server is closing the connection.
    GoawayReason { Shutdown = 0, Restart = 1, Overload = 2, }
}

/// Validated UTF-8 text, shared with the buffer it was read from.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Text(Bytes);

impl Text {
    /// Wraps bytes that must be UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Checked at construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

/// Byte strings appear as lowercase hex in JSON (vectors, `--json` output).
pub(crate) mod hex_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, T: AsRef<[u8]>>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<Vec<u8>>>(d: D) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        let raw = hex::decode(text).map_err(serde::de::Error::custom)?;
        T::try_from(raw).map_err(|_| serde::de::Error::custom("wrong length"))
    }

    /// `Bytes` has no `TryFrom<Vec<u8>>`, only `From`.
    pub(crate) mod shared {
        pub(crate) use super::serialize;
        use super::*;

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
            super::deserialize::<D, Vec<u8>>(d).map(Bytes::from)
        }
    }
}

/// First frame of a connection: who the client is and what it speaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Highest protocol version the client speaks.
    pub version: u8,
    pub role: Role,
    pub device: Device,
    /// Ask for a UDP heartbeat key in WELCOME.
    pub want_udp: bool,
    /// A session of the same user inside its grace window to take over (0: none).
    pub resume: u64,
    #[serde(with = "hex_bytes::shared")]
    pub token: Bytes,
}

/// The server's answer to a good HELLO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u8,
    /// The session id (for a gateway: its own id, used in UDP datagrams).
    pub session: u64,
    pub heartbeat_interval_ms: u32,
    pub ttl_ms: u32,
    pub server_time_ms: u64,
    pub max_frame: u32,
    /// 0 when UDP is not offered.
    pub udp_port: u16,
    #[serde(with = "hex_bytes")]
    pub udp_key: [u8; 16],
}

/// A single-session heartbeat, delta-encoded (see `heartbeat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Milliseconds since the previous heartbeat, minus the heartbeat interval.
    pub jitter_ms: i64,
    /// Sequence delta; 1 in steady state.
    pub dseq: u32,
    /// A status change riding on the heartbeat.
    pub status: Option<Status>,
}

/// One user's presence as a given reader may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub user: u64,
    pub status: Status,
    /// Per-user version: greater means newer.
    pub version: u64,
    /// Unix ms of the last activity known (0: never seen).
    pub last_seen_ms: u64,
    pub text: Text,
}

/// Counters from STATS_REPLY.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub online_users: u64,
    pub sessions: u64,
    pub watches: u64,
    pub connections: u64,
}

/// A gateway's request to open one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenEntry {
    pub user: u64,
    pub device: Device,
    pub status: Status,
}

/// Which timeline a TIMELINE request reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Home,
    Author(u64),
}

/// Where a page starts (SPEC.md §Feed, Mastodon-style).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Only items older than this id.
    pub max_id: Option<u64>,
    /// Only items newer than this id, newest first.
    pub since_id: Option<u64>,
    /// Only items newer than this id, the page right after it.
    pub min_id: Option<u64>,
}

/// One feed item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub post: u64,
    pub author: u64,
    pub kind: u8,
    #[serde(with = "hex_bytes::shared")]
    pub payload: Bytes,
}

/// Every frame of protocol v1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Bye,
    Goaway {
        reason: GoawayReason,
        reconnect_after_ms: u32,
    },
    /// `code` stays numeric so codes from later versions survive decoding;
    /// see [`ErrorCode::from_u16`](super::ErrorCode::from_u16).
    Error {
        req: u64,
        code: u16,
        message: Text,
    },
    Ok {
        req: u64,
    },
    Heartbeat(Heartbeat),
    /// `session` is set only by gateways, acting for one of their sessions.
    SetStatus {
        req: u64,
        session: Option<u64>,
        status: Status,
        text: Text,
    },
    Watch {
        req: u64,
        users: Vec<u64>,
    },
    Unwatch {
        req: u64,
        users: Vec<u64>,
    },
    Query {
        req: u64,
        users: Vec<u64>,
    },
    Presence {
        req: u64,
        entries: Vec<PresenceEntry>,
    },
    PresencePush {
        entries: Vec<PresenceEntry>,
    },
    Stats {
        req: u64,
    },
    StatsReply {
        req: u64,
        stats: Stats,
    },
    Open {
        req: u64,
        entries: Vec<OpenEntry>,
    },
    Opened {
        req: u64,
        sessions: Vec<u64>,
    },
    Close {
        req: u64,
        sessions: Vec<u64>,
    },
    BatchHeartbeat(Batch),
    Publish {
        req: u64,
        kind: u8,
        #[serde(with = "hex_bytes::shared")]
        payload: Bytes,
    },
    Published {
        req: u64,
        post: u64,
    },
    Delete {
        req: u64,
        post: u64,
    },
    Graph {
        req: u64,
        op: GraphOp,
        user: u64,
    },
    Timeline {
        req: u64,
        source: Source,
        cursor: Cursor,
        limit: u8,
    },
    Page {
        req: u64,
        items: Vec<Item>,
    },
    Live {
        req: u64,
        on: bool,
    },
    ItemPush(Item),
    DeletedPush {
        post: u64,
    },
    /// Sent instead of WELCOME: the user belongs to another node (SPEC.md §14.3).
    Redirect {
        /// The cluster map's version that named the owner.
        version: u64,
        /// Flat in JSON (the vectors' form): `version`, `node`, `addr`, `ws`,
        /// `tls`. Boxed: four texts inline would make every message larger.
        #[serde(flatten)]
        owner: Box<MapMember>,
    },
    /// A gateway asks for the cluster map (SPEC.md §14.4).
    ClusterMap {
        req: u64,
    },
    ClusterMapReply {
        req: u64,
        version: u64,
        partitions: u32,
        members: Vec<MapMember>,
    },
}

/// A cluster member as the wire names it: the owner in a REDIRECT, each
/// member of a CLUSTER_MAP_REPLY (SPEC.md §14.3, §14.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapMember {
    pub node: Text,
    /// `host:port` of its TCP listener.
    pub addr: Text,
    /// Its WebSocket URL; empty when it has none.
    pub ws: Text,
    /// `host:port` of its TCP+TLS listener; empty when it has none.
    pub tls: Text,
}

impl Message {
    /// The request id the message carries (SPEC.md §4.3); 0 for a message
    /// without one.
    pub fn req(&self) -> u64 {
        match self {
            Message::Error { req, .. }
            | Message::Ok { req }
            | Message::SetStatus { req, .. }
            | Message::Watch { req, .. }
            | Message::Unwatch { req, .. }
            | Message::Query { req, .. }
            | Message::Presence { req, .. }
            | Message::Stats { req }
            | Message::StatsReply { req, .. }
            | Message::Open { req, .. }
            | Message::Opened { req, .. }
            | Message::Close { req, .. }
            | Message::Publish { req, .. }
            | Message::Published { req, .. }
            | Message::Delete { req, .. }
            | Message::Graph { req, .. }
            | Message::Timeline { req, .. }
            | Message::Page { req, .. }
            | Message::Live { req, .. }
            | Message::ClusterMap { req }
            | Message::ClusterMapReply { req, .. } => *req,
            Message::Hello(_)
            | Message::Welcome(_)
            | Message::Bye
            | Message::Goaway { .. }
            | Message::Heartbeat(_)
            | Message::PresencePush { .. }
            | Message::BatchHeartbeat(_)
            | Message::ItemPush(_)
            | Message::DeletedPush { .. }
            | Message::Redirect { .. } => 0,
        }
    }
}
