//! The feed shell: the feed on a connection, and what a fanout job does.
//!
//! Each client connection that uses the feed gets one task that handles its
//! feed requests in order, so a FOLLOW is durable and visible before the
//! TIMELINE sent after it. Store calls go through `spawn_blocking`; posts go
//! through the group committer and are acknowledged once durable. New posts
//! and deletions reach followers' inboxes and live connections through a
//! fixed pool of fanout threads fed by a bounded queue.
//! The fanout's admission rule and its pool are [`super::fanout`]'s.
//!
//! In a cluster a write is committed to the feed stream instead of the
//! store (the seam is [`FeedShell::log`]): every node, this one included,
//! stores and applies it when it comes back from the stream
//! (`crate::cluster::feed`), through [`post_stored`], [`delete_stored`] and
//! [`edge_writes`], as this node does after its own commit.
//!
//! Owns the store calls, the group-commit acknowledgement, the LIVE
//! registrations and the delivery of pushes; it must not decide what a
//! timeline holds (that is `heartline_core::feed`'s) nor block a runtime
//! thread.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use heartline_core::conn::error;
use heartline_core::feed::log::{GraphEffect, Write};
use heartline_core::feed::page::Bounds;
use heartline_core::feed::{ColdQuery, Fanout, Feed, Post, Strategy};
use heartline_proto::{limits, ErrorCode, GraphOp, Item, Message, Source};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fanout::{Admission, FanoutQueue, Job, Push};
use super::now_ms;
use super::outbox::Outbox;
use super::registry::Registry;
use super::reload::Limits;
use crate::metrics::{Counter, Metrics};
use crate::store::{Committer, Edge, Order, Store, StoredPost};

/// Feed requests one connection may have queued.
const REQUESTS_IN_FLIGHT: usize = 256;

/// What the feed's requests and fanout jobs work with, built once in `start`.
pub(crate) struct FeedShell {
    pub(crate) feed: Arc<Feed>,
    pub(crate) store: Store,
    /// Group commit of posts.
    pub(crate) committer: Committer,
    pub(super) fanout: FanoutQueue,
    /// Users with LIVE on, and their connections.
    pub(super) live: DashMap<u64, Vec<u32>>,
    /// For pushes to live connections.
    pub(super) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: Arc<Limits>,
    /// The server's own payload limit (`feed.max_payload`).
    pub(crate) max_payload: usize,
    pub(crate) stop: CancellationToken,
    /// In a cluster, the feed stream writes are committed to; `None` alone.
    pub(crate) log: Option<Arc<crate::cluster::feed::FeedLog>>,
}

impl FeedShell {
    /// Starts `workers` fanout threads that run this shell's jobs.
    pub(crate) fn start_fanout(self: &Arc<Self>, workers: usize) {
        let shell = self.clone();
        self.fanout.start(workers, self.stop.clone(), Arc::new(move |job| run(&shell, job)));
    }

    /// Reads the social graph and the hot posts from the store into memory.
    pub(crate) fn restore(&self) -> Result<(usize, usize), crate::store::StoreError> {
        restore_into(self)
    }
}

/// Admits the fanout of a PUBLISH or DELETE by `user`, before it is committed.
fn admit(shell: &FeedShell, user: u64, req: u64, refused: &Counter) -> Result<Admission, Message> {
    // The author's own live connections get the push too.
    let readers = shell.feed.graph.follower_count(user).saturating_add(1);
    shell.fanout.admit(readers, shell.limits.fanout_queue()).ok_or_else(|| {
        refused.inc();
        tracing::debug!(user, depth = shell.fanout.depth(), "fanout queue full: request refused");
        error(req, ErrorCode::Unavailable, "fanout queue full, retry")
    })
}

/// The feed side of one client connection.
pub(super) struct FeedSession {
    requests: mpsc::Sender<Message>,
}

impl FeedSession {
    pub(super) fn start(shell: Arc<FeedShell>, user: u64, conn: u32, outbox: Arc<Outbox>) -> Self {
        let (requests, mut incoming) = mpsc::channel(REQUESTS_IN_FLIGHT);
        tokio::spawn(async move {
            while let Some(msg) = incoming.recv().await {
                handle(&shell, user, conn, &outbox, msg).await;
            }
            unregister_live(&shell, user, conn);
        });
        Self { requests }
    }

    /// Queues a feed request; `Err` with the reply when too many are queued.
    pub(super) fn submit(&self, msg: Message) -> Result<(), ErrorCode> {
        match self.requests.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(ErrorCode::RateLimited),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ErrorCode::Internal),
        }
    }
}

fn unregister_live(shell: &FeedShell, user: u64, conn: u32) {
    if let Some(mut conns) = shell.live.get_mut(&user) {
        conns.retain(|&c| c != conn);
    }
    shell.live.remove_if(&user, |_, conns| conns.is_empty());
}

fn unavailable(req: u64) -> Message {
    error(req, ErrorCode::Unavailable, "the store cannot take writes now")
}

pub(crate) async fn blocking<T: Send + 'static>(
    shell: &Arc<FeedShell>,
    f: impl FnOnce(&Store) -> T + Send + 'static,
) -> Option<T> {
    let shell = shell.clone();
    tokio::task::spawn_blocking(move || f(&shell.store)).await.ok()
}

async fn handle(shell: &Arc<FeedShell>, user: u64, conn: u32, outbox: &Outbox, msg: Message) {
    let reply = match msg {
        Message::Live { req, on } => {
            unregister_live(shell, user, conn);
            if on {
                shell.live.entry(user).or_default().push(conn);
                shell.feed.touch(user, now_ms());
            }
            Message::Ok { req }
        }
        request => match answer(shell, user, request).await {
            Some(reply) => reply,
            None => return,
        },
    };
    outbox.send(reply);
}

/// The reply to a feed request of `user` that needs no connection —
/// PUBLISH, DELETE, GRAPH, TIMELINE — as a protocol connection or the
/// admin API sends it; `None` for any other message.
pub(crate) async fn answer(shell: &Arc<FeedShell>, user: u64, request: Message) -> Option<Message> {
    Some(match request {
        Message::Publish { req, kind, payload } => publish(shell, user, req, kind, payload).await,
        Message::Delete { req, post } => delete(shell, user, req, post).await,
        Message::Graph { req, op, user: other } => graph(shell, user, req, op, other).await,
        Message::Timeline { req, source, cursor, limit } => {
            timeline(shell, user, req, source, &cursor, usize::from(limit)).await
        }
        _ => return None,
    })
}

async fn publish(shell: &Arc<FeedShell>, user: u64, req: u64, kind: u8, payload: Bytes) -> Message {
    if payload.len() > shell.max_payload {
        return error(req, ErrorCode::PayloadTooLarge, "payload over the server's limit");
    }
    // Admitted before it is stored: a refused post is nowhere.
    let admission = match admit(shell, user, req, &shell.metrics.fanout_refused_publish) {
        Ok(admission) => admission,
        Err(refused) => return refused,
    };
    // Copied out of the read buffer: the post outlives the frame.
    let post = shell.feed.new_post(user, kind, Bytes::copy_from_slice(&payload), now_ms());
    if let Some(log) = &shell.log {
        // Every node's applier admits its own fanout, this one's included.
        drop(admission);
        return log.publish(shell, req, post).await;
    }
    let stored = StoredPost { id: post.id, author: user, kind, payload: post.payload.clone() };
    match shell.committer.submit(stored).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            // The store logs the outage once; every refused post is only a debug line.
            tracing::debug!(error = %e, "post not stored");
            return unavailable(req);
        }
        Err(_) => return error(req, ErrorCode::Internal, "store committer stopped"),
    }
    shell.metrics.posts.inc();
    fan_out_post(shell, post.clone(), admission).await;
    Message::Published { req, post: post.id }
}

/// The fanout of a committed write, admitted whatever the queue holds: it
/// is durable, so it must reach its readers.
fn admit_committed(shell: &FeedShell, author: u64) -> Option<Admission> {
    shell.fanout.admit(shell.feed.graph.follower_count(author).saturating_add(1), usize::MAX)
}

/// A post committed to a cluster's feed stream and now in this node's
/// store: visible, and fanned out to this node's inboxes and live readers.
pub(crate) async fn post_stored(shell: &Arc<FeedShell>, post: Arc<Post>) {
    if let Some(admission) = admit_committed(shell, post.author) {
        fan_out_post(shell, post, admission).await;
    }
}

/// Makes a durable post visible and queues its fanout.
async fn fan_out_post(shell: &Arc<FeedShell>, post: Arc<Post>, admission: Admission) {
    let user = post.author;
    let published_at = Instant::now();
    // Off the runtime: a celebrity's follower list is a million entries. The
    // jobs were admitted already, so queueing them never waits.
    let (publisher, published) = (shell.clone(), post.clone());
    let listed = tokio::task::spawn_blocking(move || {
        let Fanout { mut followers, into_inboxes } =
            publisher.feed.publish(published.clone(), now_ms(), |reader| publisher.live.contains_key(&reader));
        // The author's other live connections see it too; their own inbox never needs it.
        followers.push(user);
        let push = || Push::Item(published.clone());
        publisher.fanout.push(admission, push, &followers, into_inboxes, published_at);
    });
    if listed.await.is_err() {
        // Stored all the same, so PUBLISHED: an ERROR would say it was not.
        tracing::error!(post = post.id, "listing the followers panicked: the post reaches no inbox");
    }
}

async fn delete(shell: &Arc<FeedShell>, user: u64, req: u64, id: u64) -> Message {
    // Admitted before anything is written.
    let admission = match admit(shell, user, req, &shell.metrics.fanout_refused_delete) {
        Ok(admission) => admission,
        Err(refused) => return refused,
    };
    if let Some(log) = &shell.log {
        drop(admission);
        return log.delete(shell, user, req, id).await;
    }
    // Durable first, then gone from memory: a refused delete changes nothing.
    let stored = blocking(shell, move |store| store.delete_post(user, id)).await;
    match stored {
        Some(Ok(existed)) if fan_out_delete(shell, user, id, existed, admission).await => Message::Ok { req },
        Some(Ok(_)) => error(req, ErrorCode::NotFound, "no such post of yours"),
        _ => unavailable(req),
    }
}

/// A delete committed to a cluster's feed stream and applied to this
/// node's store (`existed`: the store had the post): gone from memory, and
/// DELETED_PUSH to live readers.
pub(crate) async fn delete_stored(shell: &Arc<FeedShell>, author: u64, id: u64, existed: bool) {
    if let Some(admission) = admit_committed(shell, author) {
        fan_out_delete(shell, author, id, existed, admission).await;
    }
}

/// Removes a post deleted from the store from memory and queues the
/// DELETED_PUSH; false if it was neither stored nor hot.
async fn fan_out_delete(shell: &Arc<FeedShell>, user: u64, id: u64, existed: bool, admission: Admission) -> bool {
    let hot = shell.feed.delete(user, id).is_some();
    if !(existed || hot) {
        return false;
    }
    // Off the runtime, like a post's: never waits for the queue.
    let fanout = shell.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let mut readers = fanout.feed.graph.followers(user);
        readers.push(user);
        fanout.fanout.push(admission, || Push::Deleted(id), &readers, false, Instant::now());
    });
    if listed.await.is_err() {
        tracing::error!(post = id, "listing the followers panicked: no DELETED_PUSH");
    }
    true
}

async fn graph(shell: &Arc<FeedShell>, user: u64, req: u64, op: GraphOp, other: u64) -> Message {
    let feed = &shell.feed;
    match feed.graph_effect(user, op, other) {
        GraphEffect::Apply => {}
        // A self-follow, or a follow across a block: accepted and without effect (SPEC.md §10.4).
        GraphEffect::Nothing => return Message::Ok { req },
        GraphEffect::TooMany => return error(req, ErrorCode::LimitExceeded, "following too many users"),
    }
    if let Some(log) = &shell.log {
        return log.commit_reply(req, Write::Graph { user, op, other }).await;
    }
    // Durable first, then visible.
    let writes = edge_writes(op, user, other);
    let written = blocking(shell, move |store| store.set_edges(&writes)).await;
    if !matches!(written, Some(Ok(()))) {
        return unavailable(req);
    }
    if feed.apply_graph(user, op, other).is_err() {
        return error(req, ErrorCode::LimitExceeded, "following too many users");
    }
    Message::Ok { req }
}

/// The edges a graph change writes: a block also ends follows both ways.
pub(crate) fn edge_writes(op: GraphOp, user: u64, other: u64) -> Vec<(Edge, u64, u64, bool)> {
    match op {
        GraphOp::Follow => vec![(Edge::Follow, user, other, true)],
        GraphOp::Unfollow => vec![(Edge::Follow, user, other, false)],
        GraphOp::Block => vec![
            (Edge::Follow, user, other, false),
            (Edge::Follow, other, user, false),
            (Edge::Block, user, other, true),
        ],
        GraphOp::Unblock => vec![(Edge::Block, user, other, false)],
    }
}

async fn timeline(
    shell: &Arc<FeedShell>,
    user: u64,
    req: u64,
    source: Source,
    cursor: &heartline_proto::Cursor,
    limit: usize,
) -> Message {
    let feed = &shell.feed;
    let now = now_ms();
    let (read, pulled) = match source {
        Source::Home => {
            let pulled = feed.config().strategy == Strategy::Pull || feed.needs_inbox(user);
            (feed.home(user, cursor, limit, now), pulled)
        }
        Source::Author(author) => (feed.author(user, author, cursor, limit), false),
    };
    let cold = match read.cold.clone() {
        Some(query) => {
            shell.metrics.timeline_reads_cold.inc();
            match blocking(shell, move |store| fetch_cold(store, &query)).await {
                Some(Ok(posts)) => posts,
                _ => return error(req, ErrorCode::Unavailable, "older items cannot be read now"),
            }
        }
        None if pulled => {
            shell.metrics.timeline_reads_pull.inc();
            Vec::new()
        }
        None => {
            shell.metrics.timeline_reads_hot.inc();
            Vec::new()
        }
    };
    let page = read.page(cold);
    if source == Source::Home && feed.needs_inbox(user) {
        let rebuild = shell.clone();
        tokio::task::spawn_blocking(move || rebuild.feed.rebuild_inbox(user));
    }
    let max_frame = shell.limits.max_frame();
    // A page that does not fit loses items at the end away from its cursor.
    let items = if cursor.min_id.is_some() {
        let mut items = fit(page.iter().rev().map(|p| p.item()), max_frame);
        items.reverse();
        items
    } else {
        fit(page.iter().map(|p| p.item()), max_frame)
    };
    Message::Page { req, items }
}

/// The leading items that fit in one frame.
fn fit(items: impl Iterator<Item = Item>, max_frame: usize) -> Vec<Item> {
    // Per item: id, author, kind and length prefix take at most 8 + 10 + 1 + 3 bytes.
    let mut room = max_frame.saturating_sub(32);
    items
        .take_while(|item| {
            let size = item.payload.len() + 22;
            let fits = size <= room;
            room = room.saturating_sub(size);
            fits
        })
        .take(limits::MAX_PAGE)
        .collect()
}

/// The posts a read needs from the store.
fn fetch_cold(store: &Store, query: &ColdQuery) -> Result<Vec<Arc<Post>>, crate::store::StoreError> {
    let Bounds { after, before, oldest_first } = query.bounds;
    let (after, before) = ((after > 0).then_some(after), (before < u64::MAX).then_some(before));
    let mut out = Vec::new();
    let order = if oldest_first { Order::OldestFirst } else { Order::NewestFirst };
    for &author in &query.authors {
        let posts = store.author_posts(author, after, before, order, query.limit)?;
        out.extend(posts.into_iter().map(|p| Arc::new(Post::new(p.id, p.author, p.kind, p.payload))));
    }
    Ok(out)
}

/// Loads the graph and the newest posts of every author from the store.
fn restore_into(shell: &FeedShell) -> Result<(usize, usize), crate::store::StoreError> {
    let feed = &shell.feed;
    let mut edges = 0;
    shell.store.for_each_edge(|edge, from, to| {
        edges += 1;
        match edge {
            Edge::Follow => {
                let _ = feed.graph.follow(from, to, usize::MAX);
            }
            Edge::Block => {
                feed.graph.block(from, to);
            }
        }
    })?;
    let mut posts = 0;
    // One more than is kept: if it exists, dropping it marks the horizon.
    shell.store.for_each_recent_post(feed.config().hot_items + 1, |p| {
        posts += 1;
        feed.restore(Arc::new(Post::new(p.id, p.author, p.kind, p.payload)));
    })?;
    Ok((edges, posts))
}

/// Runs one job; dropping it at the end gives its slot back.
fn run(shell: &FeedShell, job: Job) {
    let now = now_ms();
    if let (true, Push::Item(post)) = (job.into_inboxes, &job.push) {
        let inserted = shell.feed.fanout(post, &job.followers, now);
        shell.metrics.fanout_inserts.add(inserted as u64);
    }
    for follower in &job.followers {
        let Some(conns) = shell.live.get(follower) else { continue };
        for conn in conns.iter() {
            if let Some(entry) = shell.registry.get(*conn) {
                entry.outbox.send(match &job.push {
                    Push::Item(post) => Message::ItemPush(post.item()),
                    Push::Deleted(post) => Message::DeletedPush { post: *post },
                });
            }
        }
    }
    if let Some(at) = job.published_at {
        shell.metrics.fanout_lag.observe(at.elapsed());
    }
}
