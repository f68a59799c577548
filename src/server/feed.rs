//! The feed on a connection, and the fanout workers.
//!
//! Each client connection that uses the feed gets one task that handles its
//! feed requests in order, so a FOLLOW is durable and visible before the
//! TIMELINE sent after it. Store calls go through `spawn_blocking`; posts go
//! through the group committer and are acknowledged once durable. New posts
//! reach followers' inboxes and live connections through a fixed pool of
//! fanout threads fed by a bounded queue.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::outbox::{error, Outbox};
use super::{now_ms, Shared};
use crate::store::{Edge, Order, Store, StoredPost};
use heartline_core::feed::page::Bounds;
use heartline_core::feed::{ColdQuery, Fanout, Post, Strategy};
use heartline_proto::{limits, ErrorCode, GraphOp, Item, Message, Source};

/// Feed requests one connection may have queued.
const REQUESTS_IN_FLIGHT: usize = 256;
/// Followers per fanout job: big posts are spread over the pool.
const FANOUT_CHUNK: usize = 4_096;
/// Fanout jobs waiting at most; a full queue makes publishers wait.
const FANOUT_QUEUE: usize = 1_024;

/// What goes to followers.
enum Push {
    Item(Arc<Post>),
    Deleted(u64),
}

struct Job {
    push: Push,
    followers: Vec<u64>,
    into_inboxes: bool,
    /// Set on a post's last job: when it finishes, the fanout is complete.
    published_at: Option<Instant>,
}

/// The bounded queue in front of the fanout threads.
pub struct FanoutQueue {
    jobs: SyncSender<Job>,
    waiting: Mutex<Option<Receiver<Job>>>,
}

impl FanoutQueue {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let (jobs, waiting) = std::sync::mpsc::sync_channel(FANOUT_QUEUE);
        Self { jobs, waiting: Mutex::new(Some(waiting)) }
    }
}

/// Starts `workers` fanout threads; they stop with the server.
pub fn start_fanout(shared: &Arc<Shared>, workers: usize) {
    let Some(receiver) = shared.fanout.waiting.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
    let receiver = Arc::new(Mutex::new(receiver));
    for n in 0..workers.max(1) {
        let (shared, receiver) = (shared.clone(), receiver.clone());
        let spawned = std::thread::Builder::new().name(format!("heartline-fanout-{n}")).spawn(move || loop {
            let next = receiver.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(Duration::from_millis(100));
            match next {
                Ok(job) => run(&shared, job),
                Err(RecvTimeoutError::Timeout) if !shared.stop.is_cancelled() => {}
                Err(_) => return,
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a fanout thread");
        }
    }
}

fn run(shared: &Shared, job: Job) {
    let now = now_ms();
    if let (true, Push::Item(post)) = (job.into_inboxes, &job.push) {
        let inserted = shared.feed.fanout(post, &job.followers, now);
        shared.metrics.fanout_inserts.add(inserted as u64);
    }
    for follower in &job.followers {
        let Some(conns) = shared.live.get(follower) else { continue };
        for conn in conns.iter() {
            if let Some(entry) = shared.conns.get(conn) {
                entry.outbox.send(match &job.push {
                    Push::Item(post) => Message::ItemPush(post.item()),
                    Push::Deleted(post) => Message::DeletedPush { post: *post },
                });
            }
        }
    }
    if let Some(at) = job.published_at {
        shared.metrics.fanout_lag.observe(at.elapsed());
    }
}

/// Queues a push to `readers` (blocking while the queue is full).
fn enqueue(shared: &Shared, push: impl Fn() -> Push, readers: Vec<u64>, into_inboxes: bool, published_at: Instant) {
    let chunks: Vec<Vec<u64>> = readers.chunks(FANOUT_CHUNK).map(<[u64]>::to_vec).collect();
    let last = chunks.len().saturating_sub(1);
    for (i, followers) in chunks.into_iter().enumerate() {
        let job = Job { push: push(), followers, into_inboxes, published_at: (i == last).then_some(published_at) };
        if shared.fanout.jobs.send(job).is_err() {
            return;
        }
    }
}

/// The feed side of one client connection.
pub struct FeedSession {
    requests: mpsc::Sender<Message>,
}

impl FeedSession {
    pub fn start(shared: Arc<Shared>, user: u64, conn: u32, outbox: Arc<Outbox>) -> Self {
        let (requests, mut incoming) = mpsc::channel(REQUESTS_IN_FLIGHT);
        tokio::spawn(async move {
            while let Some(msg) = incoming.recv().await {
                handle(&shared, user, conn, &outbox, msg).await;
            }
            unregister_live(&shared, user, conn);
        });
        Self { requests }
    }

    /// Queues a feed request; `Err` with the reply when too many are queued.
    pub fn submit(&self, msg: Message) -> Result<(), ErrorCode> {
        match self.requests.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(ErrorCode::RateLimited),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ErrorCode::Internal),
        }
    }
}

fn unregister_live(shared: &Shared, user: u64, conn: u32) {
    if let Some(mut conns) = shared.live.get_mut(&user) {
        conns.retain(|&c| c != conn);
    }
    shared.live.remove_if(&user, |_, conns| conns.is_empty());
}

fn unavailable(req: u64) -> Message {
    error(req, ErrorCode::Unavailable, "the store cannot take writes now")
}

async fn blocking<T: Send + 'static>(shared: &Arc<Shared>, f: impl FnOnce(&Store) -> T + Send + 'static) -> Option<T> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || f(&shared.store)).await.ok()
}

async fn handle(shared: &Arc<Shared>, user: u64, conn: u32, outbox: &Outbox, msg: Message) {
    let reply = match msg {
        Message::Publish { req, kind, payload } => publish(shared, user, req, kind, payload).await,
        Message::Delete { req, post } => delete(shared, user, req, post).await,
        Message::Graph { req, op, user: other } => graph(shared, user, req, op, other).await,
        Message::Timeline { req, source, cursor, limit } => {
            timeline(shared, user, req, source, &cursor, usize::from(limit)).await
        }
        Message::Live { req, on } => {
            unregister_live(shared, user, conn);
            if on {
                shared.live.entry(user).or_default().push(conn);
                shared.feed.touch(user, now_ms());
            }
            Message::Ok { req }
        }
        _ => return,
    };
    outbox.send(reply);
}

async fn publish(shared: &Arc<Shared>, user: u64, req: u64, kind: u8, payload: Bytes) -> Message {
    if payload.len() > shared.config.feed.max_payload {
        return error(req, ErrorCode::PayloadTooLarge, "payload over the server's limit");
    }
    // Copied out of the read buffer: the post outlives the frame.
    let post = shared.feed.new_post(user, kind, Bytes::copy_from_slice(&payload), now_ms());
    let stored = StoredPost { id: post.id, author: user, kind, payload: post.payload.clone() };
    match shared.committer.submit(stored).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            // The store logs the outage once; every refused post is only a debug line.
            tracing::debug!(error = %e, "post not stored");
            return unavailable(req);
        }
        Err(_) => return error(req, ErrorCode::Internal, "store committer stopped"),
    }
    shared.metrics.posts.inc();
    let published_at = Instant::now();
    // Off the runtime: a celebrity's follower list is a million entries.
    let (publisher, published) = (shared.clone(), post.clone());
    let listed = tokio::task::spawn_blocking(move || {
        publisher.feed.publish(published, now_ms(), |reader| publisher.live.contains_key(&reader))
    });
    let Ok(Fanout { mut followers, into_inboxes }) = listed.await else {
        // Stored all the same, so PUBLISHED: an ERROR would say it was not.
        tracing::error!(post = post.id, "listing the followers panicked: the post reaches no inbox");
        return Message::Published { req, post: post.id };
    };
    // The author's other live connections see it too; their own inbox never needs it.
    followers.push(user);
    let (fanout, id) = (shared.clone(), post.id);
    tokio::task::spawn_blocking(move || {
        enqueue(&fanout, || Push::Item(post.clone()), followers, into_inboxes, published_at)
    });
    Message::Published { req, post: id }
}

async fn delete(shared: &Arc<Shared>, user: u64, req: u64, id: u64) -> Message {
    // Durable first, then gone from memory: a refused delete changes nothing.
    let stored = blocking(shared, move |store| store.delete_post(user, id)).await;
    let hot = matches!(stored, Some(Ok(_))) && shared.feed.delete(user, id).is_some();
    match stored {
        Some(Ok(existed)) if existed || hot => {
            let mut readers = shared.feed.graph.followers(user);
            readers.push(user);
            let fanout = shared.clone();
            tokio::task::spawn_blocking(move || enqueue(&fanout, || Push::Deleted(id), readers, false, Instant::now()));
            Message::Ok { req }
        }
        Some(Ok(_)) => error(req, ErrorCode::NotFound, "no such post of yours"),
        _ => unavailable(req),
    }
}

async fn graph(shared: &Arc<Shared>, user: u64, req: u64, op: GraphOp, other: u64) -> Message {
    let feed = &shared.feed;
    if user == other {
        return Message::Ok { req };
    }
    if op == GraphOp::Follow && !feed.graph.follows(user, other) {
        if feed.graph.following_count(user) >= feed.config().max_following {
            return error(req, ErrorCode::LimitExceeded, "following too many users");
        }
        if feed.graph.blocked_either(user, other) {
            // Accepted and without effect (SPEC.md §10.4).
            return Message::Ok { req };
        }
    }
    // Durable first, then visible.
    let writes: Vec<(Edge, u64, u64, bool)> = match op {
        GraphOp::Follow => vec![(Edge::Follow, user, other, true)],
        GraphOp::Unfollow => vec![(Edge::Follow, user, other, false)],
        GraphOp::Block => vec![
            (Edge::Follow, user, other, false),
            (Edge::Follow, other, user, false),
            (Edge::Block, user, other, true),
        ],
        GraphOp::Unblock => vec![(Edge::Block, user, other, false)],
    };
    let written = blocking(shared, move |store| store.set_edges(&writes)).await;
    if !matches!(written, Some(Ok(()))) {
        return unavailable(req);
    }
    match op {
        GraphOp::Follow => {
            if feed.follow(user, other).is_err() {
                return error(req, ErrorCode::LimitExceeded, "following too many users");
            }
        }
        GraphOp::Unfollow => {
            feed.unfollow(user, other);
        }
        GraphOp::Block => {
            feed.block(user, other);
        }
        GraphOp::Unblock => {
            feed.unblock(user, other);
        }
    }
    Message::Ok { req }
}

async fn timeline(
    shared: &Arc<Shared>,
    user: u64,
    req: u64,
    source: Source,
    cursor: &heartline_proto::Cursor,
    limit: usize,
) -> Message {
    let feed = &shared.feed;
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
            shared.metrics.timeline_reads_cold.inc();
            match blocking(shared, move |store| fetch_cold(store, &query)).await {
                Some(Ok(posts)) => posts,
                _ => return error(req, ErrorCode::Unavailable, "older items cannot be read now"),
            }
        }
        None if pulled => {
            shared.metrics.timeline_reads_pull.inc();
            Vec::new()
        }
        None => {
            shared.metrics.timeline_reads_hot.inc();
            Vec::new()
        }
    };
    let page = read.page(cold);
    if source == Source::Home && feed.needs_inbox(user) {
        let rebuild = shared.clone();
        tokio::task::spawn_blocking(move || rebuild.feed.rebuild_inbox(user));
    }
    let max_frame = shared.config.limits.max_frame;
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
pub fn restore(shared: &Shared) -> Result<(usize, usize), crate::store::StoreError> {
    let feed = &shared.feed;
    let mut edges = 0;
    shared.store.for_each_edge(|edge, from, to| {
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
    shared.store.for_each_recent_post(feed.config().hot_items + 1, |p| {
        posts += 1;
        feed.restore(Arc::new(Post::new(p.id, p.author, p.kind, p.payload)));
    })?;
    Ok((edges, posts))
}
