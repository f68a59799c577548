//! The JSON API for web backends and the dashboard: one user's presence,
//! many users' presence, a user's follower and following counts — what
//! QUERY and GRAPH give protocol clients — a snapshot of the server's
//! counters and gauges, and a summary of the daemon for `heartline ctl info`.
//!
//! Owns request parsing and the JSON shapes. It must not apply privacy
//! itself: entries come from [`Backend::presence`] as an unrelated viewer
//! sees them, through the one policy point.
//!
//! Ids and versions (u64) are written as decimal strings ([`Id`]), so that
//! JavaScript, whose numbers are exact only up to 2^53, and jq read them
//! exactly; where a request names ids it may give strings or numbers.
//! Counts, gauges, counters and millisecond timestamps stay JSON numbers.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::write::refuse;
use super::{json, process, Backend, Body, Transport};
use crate::metrics::{Histogram, BUCKETS_US};
use heartline_proto::{ErrorCode, PresenceEntry, Stats, Status};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Most ids one query may name, as one QUERY frame (SPEC.md limits).
pub const MAX_QUERY: usize = 1_000;
/// Largest query body: 1,000 twenty-digit quoted ids with separators and spaces.
const MAX_BODY: usize = 64 * 1024;

/// A u64 id in JSON: written as a decimal string (`"42"`), read from a
/// decimal string or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Id(pub u64);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdVisitor)
    }
}

/// In the OpenAPI document: a string of 1 to 20 digits (requests may give a number too).
impl PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]{1,20}$"))
            .description(Some("An unsigned 64-bit id, in decimal"))
            .into()
    }
}

impl ToSchema for Id {}

struct IdVisitor;

impl serde::de::Visitor<'_> for IdVisitor {
    type Value = Id;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an unsigned 64-bit id, as a decimal string or a number")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
        Ok(Id(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
        parse_id(v).map(Id).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
    }
}

/// A decimal u64: digits only (no sign, no spaces), at most 20 of them.
pub fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// 404 for any path the admin listener does not serve, as JSON like the
/// API's other errors.
pub fn not_found() -> Response<Body> {
    refuse(ErrorCode::NotFound, "no such route")
}

pub const BAD_ID: &str = "the user id must be an unsigned 64-bit integer";

/// One presence entry as JSON (here and in `heartline ctl --json`).
#[derive(Serialize, ToSchema)]
#[schema(as = PresenceEntry)]
pub struct Entry<'a> {
    user: Id,
    /// As an unrelated viewer sees it: `invisible` shows as `offline`.
    #[schema(schema_with = status_schema)]
    status: Status,
    /// Per-user version: greater means newer.
    version: Id,
    /// Unix ms of the last activity known (0: never seen); exact as a JSON
    /// number until the year 287,396.
    last_seen_ms: u64,
    text: &'a str,
}

impl<'a> From<&'a PresenceEntry> for Entry<'a> {
    fn from(e: &'a PresenceEntry) -> Self {
        Entry {
            user: Id(e.user),
            status: e.status,
            version: Id(e.version),
            last_seen_ms: e.last_seen_ms,
            text: e.text.as_str(),
        }
    }
}

/// The statuses of SPEC.md §2.8, by name.
fn status_schema() -> ObjectBuilder {
    let names = ["offline", "online", "away", "busy", "invisible"];
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names))
}

/// One user's presence, as an unrelated viewer sees it.
#[utoipa::path(get, path = "/v1/presence/{user}", tag = "presence",
    params(("user" = String, Path, description = "The user id, decimal")),
    responses((status = 200, description = "The entry (offline users: their last seen)", body = Entry),
              (status = 400, description = "MALFORMED", body = super::write::ApiError)))]
pub async fn presence(backend: Arc<dyn Backend>, user: &str) -> Response<Body> {
    let Some(user) = parse_id(user) else {
        return refuse(ErrorCode::Malformed, BAD_ID);
    };
    match lookup(backend, vec![user]).await.as_deref() {
        Some([entry]) => json(StatusCode::OK, &Entry::from(entry)),
        _ => refuse(ErrorCode::Internal, "lookup failed"),
    }
}

/// Many users' presence: a JSON array of up to 1,000 ids (strings or
/// numbers) in, their entries out in the same order.
#[utoipa::path(post, path = "/v1/presence/query", tag = "presence",
    request_body(content = Vec<Id>, description = "User ids"),
    responses((status = 200, description = "One entry per id, in order", body = Vec<Entry>),
              (status = 400, description = "MALFORMED", body = super::write::ApiError),
              (status = 422, description = "LIMIT_EXCEEDED: over 1,000 ids", body = super::write::ApiError)))]
pub async fn query(backend: Arc<dyn Backend>, body: Incoming) -> Response<Body> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return refuse(ErrorCode::PayloadTooLarge, "the body is over 64 KiB"),
    };
    let Ok(users) = serde_json::from_slice::<Vec<Id>>(&bytes) else {
        return refuse(ErrorCode::Malformed, "the body must be a JSON array of user ids");
    };
    if users.len() > MAX_QUERY {
        return refuse(ErrorCode::LimitExceeded, "at most 1000 ids per query");
    }
    match lookup(backend, users.into_iter().map(|Id(u)| u).collect()).await {
        Some(entries) => json(StatusCode::OK, &entries.iter().map(Entry::from).collect::<Vec<_>>()),
        None => refuse(ErrorCode::Internal, "lookup failed"),
    }
}

/// How many follow a user, and how many the user follows.
#[derive(Serialize, ToSchema)]
pub struct GraphCounts {
    pub user: Id,
    pub followers: usize,
    pub following: usize,
}

/// How many follow the user, and how many they follow.
#[utoipa::path(get, path = "/v1/graph/{user}", tag = "graph",
    params(("user" = String, Path, description = "The user id, decimal")),
    responses((status = 200, description = "The counts", body = GraphCounts),
              (status = 400, description = "MALFORMED", body = super::write::ApiError)))]
pub fn graph(backend: &dyn Backend, user: &str) -> Response<Body> {
    let Some(user) = parse_id(user) else {
        return refuse(ErrorCode::Malformed, BAD_ID);
    };
    let (followers, following) = backend.graph_counts(user);
    json(StatusCode::OK, &GraphCounts { user: Id(user), followers, following })
}

/// A latency histogram as JSON: per-bucket counts (not cumulative; the
/// last is +Inf) under the upper bounds in `bounds_us`, so a reader takes
/// the difference of two snapshots for any window's mean or quantiles.
#[derive(Serialize)]
struct Latency {
    count: u64,
    sum_us: u64,
    bounds_us: &'static [u64],
    buckets: Vec<u64>,
}

impl From<&Histogram> for Latency {
    fn from(h: &Histogram) -> Self {
        let (buckets, sum_us) = h.snapshot();
        Latency { count: buckets.iter().sum(), sum_us, bounds_us: &BUCKETS_US, buckets: buckets.to_vec() }
    }
}

#[derive(Serialize)]
struct Fanout {
    /// Home-timeline entries inserted, since start.
    inserts: u64,
    queue_depth: u64,
    queue_capacity: u64,
    /// PUBLISHes and DELETEs refused because the queue was full, since start.
    refused: u64,
    lag: Latency,
}

#[derive(Serialize)]
struct Store {
    up: bool,
    commit: Latency,
}

/// `GET /v1/stats`: STATS_REPLY's totals, then what the dashboard shows.
/// Counters count since start; rates are the reader's to compute from two
/// snapshots and their `now_ms`.
#[derive(Serialize)]
struct Snapshot {
    /// The daemon's version.
    version: &'static str,
    /// The daemon's clock when the snapshot was taken, Unix ms.
    now_ms: u64,
    #[serde(flatten)]
    stats: Stats,
    /// TCP connections open, HELLO done or not.
    connections_open: u64,
    connections_accepted: u64,
    /// Every transport, in the server's order; new ones may appear.
    transports: Vec<Transport>,
    /// Heartbeats applied over all transports, since start.
    heartbeats: u64,
    watch_events: u64,
    posts: u64,
    fanout: Fanout,
    store: Store,
}

/// `GET /v1/stats`: a snapshot cheap enough to poll every second (it does
/// not walk the connections, unlike `/metrics`).
pub fn stats(backend: &dyn Backend) -> Response<Body> {
    let (m, gauges, transports) = (backend.metrics(), backend.gauges(), backend.transports());
    let now_ms = unix_ms();
    let snapshot = Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        now_ms,
        stats: gauges.stats,
        connections_open: gauges.connections_open,
        connections_accepted: m.connections_accepted.get(),
        heartbeats: transports.iter().map(|t| t.heartbeats).sum(),
        transports,
        watch_events: m.watch_events.get(),
        posts: m.posts.get(),
        fanout: Fanout {
            inserts: m.fanout_inserts.get(),
            queue_depth: gauges.fanout_depth,
            queue_capacity: gauges.fanout_capacity,
            refused: m.fanout_refused_publish.get() + m.fanout_refused_delete.get(),
            lag: (&m.fanout_lag).into(),
        },
        store: Store { up: gauges.store_up, commit: (&m.store_commit).into() },
    };
    json(StatusCode::OK, &snapshot)
}

/// `GET /v1/info`: the daemon at a glance, as `heartline ctl info` shows
/// it. Cheap: a few small files of `/proc/self` and the gauges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// The daemon's version.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// When the process started, Unix ms (`None`, as for every figure of
    /// the process, where `/proc` cannot be read).
    pub started_at_ms: Option<u64>,
    /// Whole seconds since then.
    pub uptime_s: Option<u64>,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// The daemon's clock, Unix ms.
    pub now_ms: u64,
    /// STATS_REPLY's totals: online users, sessions, watches, connections
    /// past HELLO.
    #[serde(flatten)]
    pub stats: Stats,
    /// Stream connections open, HELLO done or not.
    pub connections_open: u64,
    /// Posts accepted since start.
    pub posts: u64,
    /// Whether the durable store takes writes.
    pub store_up: bool,
}

/// `GET /v1/info`.
pub fn info(backend: &dyn Backend) -> Response<Body> {
    let now_ms = unix_ms();
    let stat = process::stat();
    let started_at_ms = stat.map(|s| (s.start_time_s * 1e3) as u64);
    let gauges = backend.gauges();
    let info = Info {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        started_at_ms,
        uptime_s: started_at_ms.map(|at| now_ms.saturating_sub(at) / 1_000),
        rss_bytes: stat.map(|s| s.resident_bytes),
        now_ms,
        stats: gauges.stats,
        connections_open: gauges.connections_open,
        posts: backend.metrics().posts.get(),
        store_up: gauges.store_up,
    };
    json(StatusCode::OK, &info)
}

/// `GET /v1/cluster`: this node's view of its cluster, as `heartline ctl
/// cluster` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// `false` for a node alone (no `[cluster]` section): nothing else is set.
    pub enabled: bool,
    /// This node's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether this node's key is in the members' bucket.
    #[serde(default)]
    pub joined: bool,
    /// The map's version: equal on every node that saw the same members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Id>,
    /// Partitions of the cluster (fixed).
    #[serde(default)]
    pub partitions: u32,
    /// The members, by name.
    #[serde(default)]
    pub members: Vec<ClusterMember>,
}

/// One member in [`ClusterInfo`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterMember {
    pub node: String,
    /// Where its users' clients are sent.
    pub advertise: String,
    /// The members' bucket revision it joined at.
    pub joined: Id,
    /// Partitions it owns in this map.
    pub partitions_owned: u32,
}

impl ClusterInfo {
    /// What `status` shows; `None`: a node alone.
    pub fn new(status: Option<&crate::cluster::Status>) -> Self {
        let Some(status) = status else {
            return Self {
                enabled: false,
                node: None,
                joined: false,
                version: None,
                partitions: 0,
                members: Vec::new(),
            };
        };
        let map = &status.map;
        let members = map
            .members
            .iter()
            .zip(map.owned_counts())
            .map(|(m, owned)| ClusterMember {
                node: m.node.clone(),
                advertise: m.advertise.clone(),
                joined: Id(m.joined),
                partitions_owned: owned,
            })
            .collect();
        Self {
            enabled: true,
            node: Some(status.node.clone()),
            joined: status.joined,
            version: Some(Id(map.version)),
            partitions: map.partitions(),
            members,
        }
    }
}

/// `GET /v1/cluster`.
pub fn cluster(backend: &dyn Backend) -> Response<Body> {
    json(StatusCode::OK, &ClusterInfo::new(backend.cluster().as_ref()))
}

/// The daemon's clock, Unix ms.
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Entries for `users`; offline users are read from the store, so off the runtime.
async fn lookup(backend: Arc<dyn Backend>, users: Vec<u64>) -> Option<Vec<PresenceEntry>> {
    tokio::task::spawn_blocking(move || backend.presence(&users)).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_strings() {
        assert_eq!(serde_json::to_string(&Id(u64::MAX)).unwrap(), "\"18446744073709551615\"");
        assert_eq!(serde_json::to_string(&Id(0)).unwrap(), "\"0\"");
    }

    #[test]
    fn ids_are_read_from_strings_or_numbers() {
        let ids: Vec<Id> = serde_json::from_str(r#"[42, "7", "18446744073709551615"]"#).unwrap();
        assert_eq!(ids, [Id(42), Id(7), Id(u64::MAX)]);
        for bad in [r#"[-1]"#, r#"[1.5]"#, r#"["+1"]"#, r#"[" 1"]"#, r#"[""]"#, r#"["18446744073709551616"]"#, "[null]"]
        {
            assert!(serde_json::from_str::<Vec<Id>>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_names_ids_as_strings() {
        let entry = PresenceEntry {
            user: u64::MAX,
            status: Status::Busy,
            version: 9_007_199_254_740_993,
            last_seen_ms: 1_795_262_400_000,
            text: "in a meeting".into(),
        };
        assert_eq!(
            serde_json::to_string(&Entry::from(&entry)).unwrap(),
            r#"{"user":"18446744073709551615","status":"busy","version":"9007199254740993","last_seen_ms":1795262400000,"text":"in a meeting"}"#
        );
    }
}
