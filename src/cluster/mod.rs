//! The cluster shell: this node's membership in the members' bucket, a
//! NATS JetStream key-value bucket (docs/cluster.md).
//!
//! Owns the NATS connection, the bucket (created if missing), this node's
//! key (put at join, refreshed every `cluster.refresh`, deleted on a
//! graceful shutdown), the watch of every key, the deletes of members that
//! stopped refreshing, and the latest map for readers ([`Cluster::status`]).
//! Every decision — who is a member, the map and its version, who is stale —
//! is `heartline_core::cluster`'s; this only carries bytes between it and
//! NATS and passes it the clock. It must not hold a consensus of its own
//! (JetStream's bucket is the truth: a node that finds its key deleted or
//! replaced joins again) nor touch presence, the feed or connections.
//!
//! NATS failures never stop the daemon: the shell logs them, keeps the last
//! map, and connects and joins again with a growing pause.

mod route;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use heartline_core::cluster::{valid_name, ClusterMap, Event, Member, Membership};

use crate::config;

pub mod feed;
pub mod presence;

/// Longest pause between attempts to reach NATS again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First pause between attempts to reach NATS again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long a graceful leave may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to NATS may take, per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the cluster shell cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.node is unset and the host name ({0:?}) is not a valid node name: set cluster.node")]
    Hostname(String),
}

/// The pause between attempts at something that failed: it doubles from
/// `first` up to `max`, and starts over after a success ([`reset`](Self::reset)).
pub(crate) struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self { first, next: first, max }
    }

    /// Waits the pause, doubling the next one; false when `stop` came first.
    pub(crate) async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Why connecting to NATS failed (the caller tries again).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot connect to NATS: {0}")]
    Refused(#[from] async_nats::ConnectError),
    #[error("connecting to NATS timed out")]
    TimedOut,
}

/// A NATS connection named `name` to the first of `urls` that answers,
/// within [`CONNECT_TIMEOUT`] per attempt and twice that in all.
pub(crate) async fn connect(name: String, urls: &[String]) -> Result<async_nats::Client, ConnectError> {
    let connect = async_nats::ConnectOptions::new().name(name).connection_timeout(CONNECT_TIMEOUT).connect(urls);
    Ok(tokio::time::timeout(CONNECT_TIMEOUT * 2, connect).await.map_err(|_| ConnectError::TimedOut)??)
}

/// Why one session with NATS ended (it is tried again).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the members bucket: {0}")]
    Bucket(#[from] BucketError),
    #[error("cannot watch the members bucket: {0}")]
    Watch(#[from] kv::WatchError),
    #[error("the watch of the members bucket failed: {0}")]
    Watcher(#[from] kv::WatcherError),
    #[error("the watch of the members bucket ended")]
    WatchEnded,
    #[error("cannot put this node's key: {0}")]
    Put(#[from] kv::PutError),
    #[error("cannot refresh this node's key: {0}")]
    Update(#[from] kv::UpdateError),
}

/// What `/v1/cluster` and the metrics show.
#[derive(Clone, Debug)]
pub struct Status {
    /// This node's name.
    pub node: String,
    /// Whether this node's key is in the bucket as far as it knows.
    pub joined: bool,
    /// The latest map (version 0 and no members before the first join).
    pub map: Arc<ClusterMap>,
}

struct Shared {
    node: String,
    joined: AtomicBool,
    map: RwLock<Arc<ClusterMap>>,
}

/// A handle on the running cluster shell.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl Cluster {
    /// The node's name, whether it has joined, and the latest map.
    pub fn status(&self) -> Status {
        Status { node: self.shared.node.clone(), joined: self.shared.joined.load(Relaxed), map: self.map() }
    }

    /// The latest map.
    fn map(&self) -> Arc<ClusterMap> {
        self.shared.map.read().map_or_else(|e| e.into_inner().clone(), |m| m.clone())
    }

    fn publish(&self, membership: &Membership) {
        let map = Arc::new(membership.map());
        let joined = membership.joined(&self.shared.node).is_some();
        self.shared.joined.store(joined, Relaxed);
        tracing::info!(
            version = map.version,
            members = map.members.len(),
            owned = map.owned_by(&self.shared.node),
            "cluster map"
        );
        match self.shared.map.write() {
            Ok(mut m) => *m = map,
            Err(e) => *e.into_inner() = map,
        }
    }
}

/// This node's settings, resolved.
struct Settings {
    nats: Vec<String>,
    bucket: String,
    replicas: usize,
    partitions: u32,
    ttl: Duration,
    refresh: Duration,
    advertise: String,
    advertise_ws: String,
    advertise_tls: String,
}

/// Starts the shell: joins the cluster in the background and leaves it
/// when `leave` is cancelled. The handle is usable at once (an empty map
/// until the first join); the task ends after leaving.
pub fn start(
    config: &config::Cluster,
    listen: std::net::SocketAddr,
    leave: CancellationToken,
) -> Result<(Cluster, JoinHandle<()>), ClusterError> {
    let node = node_name(config)?;
    let settings = Settings {
        nats: config.nats.clone(),
        bucket: config.bucket.clone(),
        replicas: config.replicas(),
        partitions: config.partitions,
        ttl: config.ttl,
        refresh: config.refresh,
        advertise: config.advertise.clone().unwrap_or_else(|| listen.to_string()),
        advertise_ws: config.advertise_ws.clone().unwrap_or_default(),
        advertise_tls: config.advertise_tls.clone().unwrap_or_default(),
    };
    let empty = Arc::new(ClusterMap::new(0, Vec::new(), config.partitions));
    let shared = Arc::new(Shared { node, joined: false.into(), map: RwLock::new(empty) });
    let cluster = Cluster { shared };
    let task = tokio::spawn(run(cluster.clone(), settings, leave));
    Ok((cluster, task))
}

/// This node's name: `cluster.node`, else the host name.
pub fn node_name(config: &config::Cluster) -> Result<String, ClusterError> {
    match &config.node {
        Some(node) => Ok(node.clone()),
        None => hostname(),
    }
}

/// The host name's first label, as the default node name.
fn hostname() -> Result<String, ClusterError> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).split('.').next().unwrap_or_default().to_owned();
    if rc != 0 || !valid_name(&name) {
        return Err(ClusterError::Hostname(name));
    }
    Ok(name)
}

/// Sessions with NATS, one after another, until `leave`.
async fn run(cluster: Cluster, settings: Settings, leave: CancellationToken) {
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        match session(&cluster, &settings, &leave).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "cluster membership interrupted; joining again"),
        }
        cluster.shared.joined.store(false, Relaxed);
        if !backoff.wait(&leave).await {
            return;
        }
    }
}

/// Opens the members' bucket, creating it if missing (several nodes may
/// race: the same configuration is accepted twice by JetStream).
async fn bucket(js: &jetstream::Context, settings: &Settings) -> Result<kv::Store, SessionError> {
    let config = jetstream::stream::Config {
        // No max_age: a delete marker must outlive every node that missed
        // the delete, or a node starting later computes a lower version for
        // the same members (core::cluster, "Versions"). Members of a cluster
        // gone whole are deleted as stale by the first node back, one TTL on.
        max_message_size: heartline_core::cluster::MAX_VALUE as i32,
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: settings.replicas,
        ..kv_stream(&settings.bucket, "heartline cluster members")
    };
    Ok(ensure_bucket(js, &settings.bucket, config).await?)
}

/// The stream of key-value bucket `name` by the key-value conventions
/// (`KV_<name>`, subjects `$KV.<name>.>`, the last value of each key).
/// Buckets are created this way rather than with the client's
/// `create_key_value`: that reads the account's info first, in a form
/// nats-server 2.9 does not send.
pub(crate) fn kv_stream(name: &str, description: &str) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Why a bucket could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BucketError {
    #[error("cannot create the bucket: {0}")]
    Create(jetstream::context::CreateStreamError),
    #[error("cannot open the bucket: {0}")]
    Open(#[from] jetstream::context::KeyValueError),
}

/// Opens the key-value bucket `name`, first creating its stream with
/// `config` ([`kv_stream`]'s, adjusted) when it is missing.
pub(crate) async fn ensure_bucket(
    js: &jetstream::Context,
    name: &str,
    config: jetstream::stream::Config,
) -> Result<kv::Store, BucketError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    match js.create_stream(config).await {
        Ok(_) => Ok(js.get_key_value(name).await?),
        Err(e) => js.get_key_value(name).await.map_err(|_| BucketError::Create(e)),
    }
}

/// One connection: join, then watch and refresh until `leave` (Ok) or a
/// NATS failure (Err).
async fn session(cluster: &Cluster, settings: &Settings, leave: &CancellationToken) -> Result<(), SessionError> {
    let node = cluster.shared.node.as_str();
    let client = connect(format!("heartline {node}"), &settings.nats).await?;
    let js = jetstream::new(client);
    let kv = bucket(&js, settings).await?;
    let mut watch = kv.watch_all().await?;
    let mut me = Member {
        node: node.to_owned(),
        advertise: settings.advertise.clone(),
        ws: settings.advertise_ws.clone(),
        tls: settings.advertise_tls.clone(),
        joined: None,
    };
    let mut revision = kv.put(node, me.to_value().into()).await?;
    me.joined = Some(revision);
    tracing::info!(node, revision, bucket = %settings.bucket, "joined the cluster");
    let ttl_ms = u64::try_from(settings.ttl.as_millis()).unwrap_or(u64::MAX);
    let mut membership = Membership::new(settings.partitions, ttl_ms);
    let mut refresh = tokio::time::interval(settings.refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = leave.cancelled() => {
                // Others take this node's partitions now rather than after the TTL.
                let _ = tokio::time::timeout(LEAVE_TIMEOUT, kv.delete_expect_revision(node, Some(revision))).await;
                tracing::info!(node, "left the cluster");
                return Ok(());
            }
            entry = watch.next() => {
                let entry = entry.ok_or(SessionError::WatchEnded)??;
                let event = match entry.operation {
                    kv::Operation::Put => Event::Put { key: &entry.key, revision: entry.revision, value: &entry.value },
                    kv::Operation::Delete | kv::Operation::Purge => Event::Delete { key: &entry.key, revision: entry.revision },
                };
                match membership.apply(event, crate::server::now_ms()) {
                    Ok(true) => cluster.publish(&membership),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(key = %entry.key, error = %e, "ignoring a member's key"),
                }
            }
            _ = refresh.tick() => {
                match kv.update(node, me.to_value().into(), revision).await {
                    Ok(r) => revision = r,
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        // Deleted as stale, or put by another process of this name.
                        me.joined = None;
                        revision = kv.put(node, me.to_value().into()).await?;
                        me.joined = Some(revision);
                        tracing::warn!(node, revision, "this node's key was deleted or replaced; joined again");
                    }
                    Err(e) => return Err(e.into()),
                }
                for (key, expected) in membership.stale(node, crate::server::now_ms()) {
                    tracing::info!(member = %key, "removing a member that stopped refreshing");
                    if let Err(e) = kv.delete_expect_revision(&key, Some(expected)).await {
                        // Another node removed it first, or it refreshed after all.
                        tracing::debug!(member = %key, error = %e, "not removed");
                    }
                }
            }
        }
    }
}
