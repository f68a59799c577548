//! The feed in a cluster: writes committed to a replicated JetStream
//! stream, and this node's materialisation of it (docs/cluster.md, "The
//! feed").
//!
//! Owns the feed's NATS connection, the stream (created if missing: file
//! storage, `min(3, servers)` replicas), the publish of each write and the
//! wait for JetStream's acknowledgement (stored on a quorum), and one
//! ordered consumer that hands every entry, in stream order, to the same
//! apply path the single-node feed shell runs after its own commit
//! ([`crate::server::feed`]): this node's store first, then memory, inboxes
//! and live pushes. A node's own writes reach its memory only that way
//! (one path); the node that took a write answers once it has applied it
//! (or after [`APPLY_WAIT`], as it is durable anyway). A consumer silent for
//! [`STALLED`] while entries are pending (its server died) is replaced, and
//! the entries meanwhile are read by direct get, which any replica answers.
//! How far this node has applied is kept next to its store, so a restart
//! resumes there.
//!
//! The encoding and the rules (what a graph change does, whether a post is
//! already applied, the post-id tag) are `heartline_core::feed::log`'s. This
//! must not decide what a timeline holds nor refuse a write the stream took.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use heartline_core::conn::error;
use heartline_core::feed::log::{GraphEffect, Write};
use heartline_core::feed::Post;
use heartline_proto::{ErrorCode, Message};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Backoff;
use crate::config;
use crate::server::feed::{blocking, delete_stored, edge_writes, post_stored, FeedShell};
use crate::server::now_ms;
use crate::store::{Store, StoreError, StoredPost};

/// The stream of the feed's writes, and its one subject.
pub const STREAM: &str = "heartline-feed";
pub const SUBJECT: &str = "heartline.feed";
/// How long a write waits for JetStream's acknowledgement before the client
/// is told UNAVAILABLE (a leader election takes a few seconds).
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the node that took a write waits to have applied it itself.
pub const APPLY_WAIT: Duration = Duration::from_secs(2);
/// Entries applied together (one store batch for consecutive posts).
const BATCH: usize = 512;
/// A consumer silent this long is checked: if this node has writes acked
/// past what it applied, or a replica has the next entry, the entries are
/// read by direct get and the consumer is recreated (its server may be gone).
const STALLED: Duration = Duration::from_secs(1);
/// How often the applied position is saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The stream's duplicate window: a post id is refused twice within it.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// New ids tried when a post's id is already in the stream.
const DUPLICATE_RETRIES: usize = 3;
/// Longest pause between attempts to reach NATS or the store again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The file, in the data dir, holding the last stream sequence applied.
const APPLIED_FILE: &str = "feed-stream.applied";

/// Why a session with NATS ended (it is tried again).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Connect(#[from] super::ConnectError),
    #[error("cannot create the feed stream: {0}")]
    Stream(#[from] jetstream::context::CreateStreamError),
}

/// Why a write was not committed.
enum Refused {
    /// No acknowledgement (no quorum, no connection, a timeout).
    Unavailable,
    /// The post id is in the stream already (another node drew it).
    Duplicate,
}

/// How far this node has gone in the feed stream (`/metrics`).
#[derive(Clone, Copy, Debug)]
pub struct Positions {
    /// The last sequence applied here.
    pub applied: u64,
    /// The highest sequence acknowledged for a write this node took.
    pub acked: u64,
}

/// UNAVAILABLE for a write the stream did not acknowledge (SPEC.md: retry
/// later, with back-off).
fn unavailable(req: u64) -> Message {
    error(req, ErrorCode::Unavailable, "the feed stream did not acknowledge the write; retry")
}

/// The feed stream, as the feed shell sees it.
pub(crate) struct FeedLog {
    /// Set while a session with NATS is up; cloned out, never held across an await.
    js: RwLock<Option<jetstream::Context>>,
    /// The last stream sequence this node has applied.
    applied: watch::Sender<u64>,
    /// The highest sequence JetStream acknowledged to this node.
    acked: AtomicU64,
    path: PathBuf,
}

impl FeedLog {
    /// The log of a node whose data dir is `data_dir`, resuming where it
    /// last applied; nothing is connected before [`FeedLog::start`].
    pub(crate) fn new(data_dir: &Path) -> Arc<Self> {
        let path = data_dir.join(APPLIED_FILE);
        let applied = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        Arc::new(Self { js: RwLock::new(None), applied: watch::Sender::new(applied), acked: 0.into(), path })
    }

    /// Connects and applies the stream in the background until `stop`.
    pub(crate) fn start(
        self: &Arc<Self>,
        settings: &config::Cluster,
        node: &str,
        shell: Arc<FeedShell>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let session = Session {
            log: self.clone(),
            shell,
            nats: settings.nats.clone(),
            replicas: settings.replicas(),
            name: format!("heartline {node} feed"),
        };
        tokio::spawn(session.run(stop))
    }

    fn context(&self) -> Option<jetstream::Context> {
        self.js.read().map_or_else(|e| e.into_inner().clone(), |js| js.clone())
    }

    fn set_context(&self, js: Option<jetstream::Context>) {
        match self.js.write() {
            Ok(mut slot) => *slot = js,
            Err(e) => *e.into_inner() = js,
        }
    }

    /// Publishes `write` and waits for JetStream's acknowledgement, then
    /// (boundedly) for this node to have applied it; its stream sequence.
    async fn commit(&self, write: &Write) -> Result<u64, Refused> {
        let js = self.context().ok_or(Refused::Unavailable)?;
        let mut message = jetstream::message::PublishMessage::build().payload(write.encode());
        if let Write::Post(item) = write {
            message = message.message_id(item.post.to_string());
        }
        let publish = async { js.send_publish(SUBJECT, message).await.ok()?.await.ok() };
        let ack = match tokio::time::timeout(ACK_TIMEOUT, publish).await {
            Ok(Some(ack)) => ack,
            _ => return Err(Refused::Unavailable),
        };
        if ack.duplicate {
            return Err(Refused::Duplicate);
        }
        self.acked.fetch_max(ack.sequence, Ordering::AcqRel);
        // Read your writes: the author's next request sees it here.
        let mut applied = self.applied.subscribe();
        if tokio::time::timeout(APPLY_WAIT, applied.wait_for(|&a| a >= ack.sequence)).await.is_err() {
            tracing::debug!(sequence = ack.sequence, "acknowledged by the stream, not yet applied here");
        }
        Ok(ack.sequence)
    }

    /// OK once `write` is committed, UNAVAILABLE if it is not.
    pub(crate) async fn commit_reply(&self, req: u64, write: Write) -> Message {
        match self.commit(&write).await {
            Ok(_) => Message::Ok { req },
            Err(_) => unavailable(req),
        }
    }

    /// PUBLISH: the post under a new id if another node drew this one.
    pub(crate) async fn publish(&self, shell: &FeedShell, req: u64, post: Arc<Post>) -> Message {
        let mut item = post.item();
        for _ in 0..DUPLICATE_RETRIES {
            match self.commit(&Write::Post(item.clone())).await {
                Ok(_) => {
                    shell.metrics.posts.inc();
                    return Message::Published { req, post: item.post };
                }
                Err(Refused::Duplicate) => {
                    tracing::debug!(post = item.post, "post id taken in the stream; drawing another");
                    item.post = shell.feed.next_post_id(now_ms());
                }
                Err(Refused::Unavailable) => return unavailable(req),
            }
        }
        unavailable(req)
    }

    /// DELETE: refused here if this node has no such post of `user`.
    pub(crate) async fn delete(&self, shell: &Arc<FeedShell>, user: u64, req: u64, id: u64) -> Message {
        match blocking(shell, move |store| store.post(id)).await {
            Some(Ok(Some(post))) if post.author == user => {}
            Some(Ok(_)) => return error(req, ErrorCode::NotFound, "no such post of yours"),
            _ => return error(req, ErrorCode::Unavailable, "the store cannot be read now"),
        }
        self.commit_reply(req, Write::Delete { author: user, post: id }).await
    }

    pub(crate) fn positions(&self) -> Positions {
        Positions { applied: self.applied(), acked: self.acked.load(Ordering::Acquire) }
    }

    fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Saves the applied position once the store has what it covers.
    async fn save(&self, store: &Store) {
        let (store, path, applied) = (store.clone(), self.path.clone(), self.applied());
        let saved = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            store.flush().map_err(std::io::Error::other)?;
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, format!("{applied}\n"))?;
            std::fs::rename(&temporary, &path)
        })
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!(applied, "cannot save how far the feed stream is applied; a restart applies more again");
        }
    }
}

/// A consumed message as `(stream sequence, entry)`; sequence 0 (skipped)
/// if its metadata cannot be read.
fn entry(message: jetstream::Message) -> (u64, Bytes) {
    let sequence = message.info().map_or(0, |info| info.stream_sequence);
    (sequence, message.message.payload)
}

/// The connection to NATS and the consumer, again after every failure.
struct Session {
    log: Arc<FeedLog>,
    shell: Arc<FeedShell>,
    nats: Vec<String>,
    replicas: usize,
    name: String,
}

impl Session {
    async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(super::FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            // Connecting may take a while; a shutdown does not wait for it.
            let ended = tokio::select! {
                _ = stop.cancelled() => break,
                ended = self.session(&stop) => ended,
            };
            match ended {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, "feed stream unreachable; trying again"),
            }
            self.log.set_context(None);
            if !backoff.wait(&stop).await {
                break;
            }
        }
        self.log.set_context(None);
        self.log.save(&self.shell.store).await;
    }

    async fn session(&self, stop: &CancellationToken) -> Result<(), SessionError> {
        let client = super::connect(self.name.clone(), &self.nats).await?;
        let js = jetstream::new(client.clone());
        let config = stream::Config {
            name: STREAM.into(),
            description: Some("heartline feed writes: posts, deletes, graph changes".into()),
            subjects: vec![SUBJECT.into()],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            // Any replica answers a direct get: the catch-up needs no leader.
            allow_direct: true,
            ..Default::default()
        };
        let mut stream = js.get_or_create_stream(config).await?;
        let last = stream.cached_info().state.last_sequence;
        if self.log.applied() > last {
            tracing::warn!(
                applied = self.log.applied(),
                last,
                "the feed stream is behind this node: applying it from the start"
            );
            self.log.applied.send_replace(0);
        }
        tracing::info!(stream = STREAM, last, applied = self.log.applied(), "feed stream open");
        self.log.set_context(Some(js));
        self.consume(&client, &mut stream, stop).await;
        Ok(())
    }

    /// Ordered consumers from the last applied entry on, one after another, until `stop`.
    async fn consume(&self, client: &async_nats::Client, stream: &mut stream::Stream, stop: &CancellationToken) {
        let mut backoff = Backoff::new(super::FIRST_BACKOFF, STALLED);
        let mut saved = Instant::now();
        let mut dirty = false;
        loop {
            let start_sequence = self.log.applied() + 1;
            let config = consumer::push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence },
                ..Default::default()
            };
            // Bounded below the client's own 5 s: without a meta leader (its
            // server was killed) creation fails, and direct gets keep this node
            // applying meanwhile.
            let messages = match tokio::time::timeout(STALLED, stream.create_consumer(config)).await {
                Ok(Ok(consumer)) => consumer.messages().await.map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".into()),
            };
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, start_sequence, "cannot consume the feed stream; trying again");
                    if self.catch_up(stream, stop).await.is_none() || !backoff.wait(stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            let (mut heard, mut probed) = (Instant::now(), Instant::now());
            let mut tick = tokio::time::interval(STALLED / 4);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    next = messages.next() => {
                        let mut batch = match next {
                            Some(Ok(message)) => vec![entry(message)],
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "the feed stream's consumer failed; recreating it");
                                break;
                            }
                            None => break,
                        };
                        while batch.len() < BATCH {
                            match messages.next().now_or_never() {
                                Some(Some(Ok(message))) => batch.push(entry(message)),
                                _ => break,
                            }
                        }
                        if !self.apply(batch, stop).await {
                            return;
                        }
                        heard = Instant::now();
                        dirty = true;
                    }
                    _ = tick.tick() => {
                        // Silent for a while: behind if this node had writes acked past
                        // what it applied, or if a replica has the next entry.
                        if heard.elapsed() > STALLED && probed.elapsed() > STALLED {
                            probed = Instant::now();
                            let pending = self.log.acked.load(Ordering::Acquire) > self.log.applied();
                            let Some(caught) = self.catch_up(stream, stop).await else { return };
                            if pending || caught > 0 {
                                tracing::info!(caught, applied = self.log.applied(), "the feed stream's consumer stalled; recreating it");
                                break;
                            }
                        }
                        if dirty && saved.elapsed() >= SAVE_EVERY {
                            self.log.save(&self.shell.store).await;
                            (saved, dirty) = (Instant::now(), false);
                        }
                    }
                }
            }
        }
    }

    /// Reads the entries after the last applied one by direct gets, which
    /// any replica answers, and applies them: while the consumer is gone
    /// (its server died) and no new one can be made (no meta leader yet),
    /// this node still applies the stream. Ends at the first entry no
    /// replica returns; how many it applied, `None` if `stop` came.
    async fn catch_up(&self, stream: &stream::Stream, stop: &CancellationToken) -> Option<usize> {
        let mut caught = 0;
        loop {
            let mut batch = Vec::new();
            let from = self.log.applied() + 1;
            for sequence in from..from + BATCH as u64 {
                match tokio::time::timeout(STALLED, stream.direct_get(sequence)).await {
                    Ok(Ok(message)) => batch.push((message.sequence, message.payload)),
                    _ => break,
                }
            }
            let full = batch.len() == BATCH;
            if !batch.is_empty() {
                tracing::info!(from, entries = batch.len(), "feed stream entries read by direct get");
            }
            caught += batch.len();
            if !self.apply(batch, stop).await {
                return None;
            }
            if !full {
                return Some(caught);
            }
        }
    }

    /// Applies a batch of entries `(stream sequence, entry)` in order, as
    /// the single-node shell does after its own commit; false if `stop`
    /// came while the store was down.
    async fn apply(&self, batch: Vec<(u64, Bytes)>, stop: &CancellationToken) -> bool {
        let shell = &self.shell;
        let mut last = self.log.applied();
        let mut writes = Vec::with_capacity(batch.len());
        for (sequence, entry) in batch {
            if sequence == 0 || sequence <= last {
                continue;
            }
            last = sequence;
            match Write::decode(entry) {
                Ok(write) => writes.push(write),
                Err(e) => tracing::warn!(sequence, error = %e, "skipping a feed stream entry"),
            }
        }
        let mut writes = writes.into_iter().peekable();
        while let Some(write) = writes.next() {
            match write {
                Write::Post(item) => {
                    // Consecutive posts: one store batch.
                    let mut posts = vec![item];
                    while let Some(Write::Post(_)) = writes.peek() {
                        if let Some(Write::Post(item)) = writes.next() {
                            posts.push(item);
                        }
                    }
                    posts.retain(|item| !shell.feed.has_post(item.author, item.post));
                    let stored: Vec<StoredPost> = posts
                        .iter()
                        .map(|i| StoredPost { id: i.post, author: i.author, kind: i.kind, payload: i.payload.clone() })
                        .collect();
                    if !posts.is_empty() && self.store(stop, move |store| store.put_posts(&stored)).await.is_none() {
                        return false;
                    }
                    for item in posts {
                        post_stored(shell, Arc::new(Post::new(item.post, item.author, item.kind, item.payload))).await;
                    }
                }
                Write::Delete { author, post } => {
                    let Some(existed) = self.store(stop, move |store| store.delete_post(author, post)).await else {
                        return false;
                    };
                    delete_stored(shell, author, post, existed).await;
                }
                Write::Graph { user, op, other } => {
                    if shell.feed.graph_effect(user, op, other) != GraphEffect::Apply {
                        continue;
                    }
                    let edges = edge_writes(op, user, other);
                    if self.store(stop, move |store| store.set_edges(&edges)).await.is_none() {
                        return false;
                    }
                    if let Err(e) = shell.feed.apply_graph(user, op, other) {
                        tracing::debug!(user, other, error = %e, "graph change without effect");
                    }
                }
            }
        }
        self.log.applied.send_replace(last);
        true
    }

    /// Runs a store write off the runtime until it succeeds (the store
    /// recovers from an outage on its own); `None` if `stop` came first.
    async fn store<T: Send + 'static>(
        &self,
        stop: &CancellationToken,
        write: impl Fn(&Store) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Option<T> {
        let write = Arc::new(write);
        let mut backoff = Backoff::new(Duration::from_millis(50), MAX_BACKOFF);
        loop {
            let attempt = write.clone();
            match blocking(&self.shell, move |store| attempt(store)).await {
                Some(Ok(value)) => return Some(value),
                Some(Err(e)) => tracing::debug!(error = %e, "cannot apply the feed stream to the store; waiting"),
                None => tracing::error!("a store write panicked while applying the feed stream; trying again"),
            }
            if !backoff.wait(stop).await {
                return None;
            }
        }
    }
}
