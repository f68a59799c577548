//! The feed on a connection, and the fanout workers.
//!
//! Each client connection that uses the feed gets one task that handles its
//! feed requests in order, so a FOLLOW is durable and visible before the
//! TIMELINE sent after it. Store calls go through `spawn_blocking`; posts go
//! through the group committer and are acknowledged once durable. New posts
//! and deletions reach followers' inboxes and live connections through a
//! fixed pool of fanout threads fed by a bounded queue.
//!
//! # Fanout back-pressure
//!
//! The fanout of a PUBLISH or DELETE goes to its readers: the author's
//! followers, and the author's own live connections. It is cut into jobs of
//! at most [`FANOUT_CHUNK`] readers, spread over the fanout threads. The queue
//! is a budget of [`FANOUT_QUEUE`] readers (as many as 1,024 full jobs),
//! counted from admission until a fanout thread has finished the job holding
//! them: reserved while the request is being committed, queued, or running.
//! A request costs its readers, at least [`MIN_REQUEST_COST`] (a job's own
//! weight, so tiny posts cannot pile up jobs). The rule:
//!
//! - A PUBLISH or DELETE is **admitted while less than [`FANOUT_QUEUE`] is
//!   outstanding**, checked before anything is written (after the payload
//!   limit). It then reserves its whole cost at once, counted from the
//!   author's follower count plus one. So any post, a celebrity's million
//!   followers included, is admitted whenever the queue is not full, and the
//!   outstanding count exceeds the budget by less than one request (plus
//!   followers gained while a request was being committed: a committed post
//!   goes to all of them).
//! - Otherwise the request is **refused before it is committed** with ERROR
//!   UNAVAILABLE "fanout queue full, retry" (non-fatal; nothing is stored or
//!   deleted) and counted in `heartline_fanout_refused_total`. The client
//!   retries later, as after any UNAVAILABLE.
//! - Admitted jobs go onto an unbounded channel, so queueing never blocks:
//!   the bound is enforced at admission, never by waiting. No thread waits
//!   for queue space, so the blocking pool, which the store writes and the
//!   last-seen flushes share, only ever runs the listing of followers (CPU
//!   work), never a wait behind fanout.
//! - What a request reserved and does not use goes back when it ends: a
//!   refused commit, NOT_FOUND, fewer followers than counted, a panic.
//!
//! The outstanding count is the gauge `heartline_fanout_queue_depth`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::metrics::Counter;
use super::outbox::{error, Outbox};
use super::{now_ms, Shared};
use crate::store::{Edge, Order, Store, StoredPost};
use heartline_core::feed::page::Bounds;
use heartline_core::feed::{ColdQuery, Fanout, Post, Strategy};
use heartline_proto::{limits, ErrorCode, GraphOp, Item, Message, Source};

/// Feed requests one connection may have queued.
const REQUESTS_IN_FLIGHT: usize = 256;
/// Readers per fanout job: big posts are spread over the pool.
pub const FANOUT_CHUNK: usize = 4_096;
/// The fanout budget in readers: 32 MiB of follower ids, under a second of
/// the fanout threads' work (BENCHMARKS.md). PUBLISH and DELETE are refused
/// while this much is outstanding.
pub const FANOUT_QUEUE: usize = 1_024 * FANOUT_CHUNK;
/// What a request costs at least, in readers: a job's allocation and
/// hand-off weigh about as much as this many readers.
pub const MIN_REQUEST_COST: usize = 64;

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
    /// Given back when the job is dropped: finished, or never run.
    _slot: Slot,
}

/// What is outstanding, and up to where requests are admitted.
#[derive(Debug)]
struct Budget {
    capacity: usize,
    outstanding: AtomicUsize,
}

impl Budget {
    fn release(&self, readers: usize) {
        if readers > 0 {
            self.outstanding.fetch_sub(readers, Ordering::AcqRel);
        }
    }
}

/// One queued job's share of the budget.
struct Slot {
    budget: Arc<Budget>,
    readers: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budget.release(self.readers);
    }
}

/// The budget admitted for one request and not queued yet. Dropping it gives
/// back what was not queued.
#[must_use = "dropping an admission gives its budget back at once"]
#[derive(Debug)]
pub struct Admission {
    budget: Arc<Budget>,
    readers: usize,
}

impl Admission {
    /// What is still reserved, in readers.
    pub fn reserved(&self) -> usize {
        self.readers
    }

    /// Makes the reservation exactly `readers`: gives back a surplus, or
    /// takes more whatever is outstanding (the request is committed by then).
    fn resize(&mut self, readers: usize) {
        if readers < self.readers {
            self.budget.release(self.readers - readers);
        } else {
            self.budget.outstanding.fetch_add(readers - self.readers, Ordering::AcqRel);
        }
        self.readers = readers;
    }

    fn slot(&mut self, readers: usize) -> Slot {
        debug_assert!(readers <= self.readers);
        self.readers -= readers;
        Slot { budget: self.budget.clone(), readers }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.budget.release(self.readers);
    }
}

/// What a fanout to `readers` readers costs.
fn cost(readers: usize) -> usize {
    readers.max(MIN_REQUEST_COST)
}

/// The bounded queue in front of the fanout threads (see the module doc).
pub struct FanoutQueue {
    budget: Arc<Budget>,
    /// Unbounded: the budget bounds it, so a send never waits.
    jobs: Sender<Job>,
    waiting: Mutex<Option<Receiver<Job>>>,
}

impl FanoutQueue {
    /// A queue with a budget of [`FANOUT_QUEUE`] readers.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self::with_capacity(FANOUT_QUEUE)
    }

    /// A queue that admits requests while less than `capacity` readers are outstanding.
    pub fn with_capacity(capacity: usize) -> Self {
        let (jobs, waiting) = std::sync::mpsc::channel();
        let budget = Arc::new(Budget { capacity, outstanding: AtomicUsize::new(0) });
        Self { budget, jobs, waiting: Mutex::new(Some(waiting)) }
    }

    /// The budget, in readers.
    pub fn capacity(&self) -> usize {
        self.budget.capacity
    }

    /// Readers outstanding: reserved by requests being committed, queued, or
    /// being fanned out.
    pub fn depth(&self) -> usize {
        self.budget.outstanding.load(Ordering::Acquire)
    }

    /// Admits the fanout of a request that will reach about `readers`
    /// readers, or `None` when the queue is full. Never blocks.
    pub fn admit(&self, readers: usize) -> Option<Admission> {
        let (readers, capacity) = (cost(readers), self.budget.capacity);
        let admitted = self
            .budget
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < capacity).then_some(n + readers));
        admitted.ok().map(|_| Admission { budget: self.budget.clone(), readers })
    }

    /// Queues a push to `readers` under `admission`; returns the jobs
    /// queued. Never blocks.
    fn push(
        &self,
        mut admission: Admission,
        push: impl Fn() -> Push,
        readers: &[u64],
        into_inboxes: bool,
        published_at: Instant,
    ) -> usize {
        admission.resize(cost(readers.len()));
        let last = readers.len().div_ceil(FANOUT_CHUNK).saturating_sub(1);
        let mut queued = 0;
        for (i, followers) in readers.chunks(FANOUT_CHUNK).enumerate() {
            // The last job also carries what the minimum cost adds.
            let _slot = admission.slot(if i == last { admission.readers } else { followers.len() });
            let job = Job {
                push: push(),
                followers: followers.to_vec(),
                into_inboxes,
                published_at: (i == last).then_some(published_at),
                _slot,
            };
            // Fails only once the fanout threads have stopped; the job's slot goes back.
            if self.jobs.send(job).is_err() {
                break;
            }
            queued += 1;
        }
        queued
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

/// Runs one job; dropping it at the end gives its slot back.
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

/// Admits the fanout of a PUBLISH or DELETE by `user`, before it is committed.
fn admit(shared: &Shared, user: u64, req: u64, refused: &Counter) -> Result<Admission, Message> {
    // The author's own live connections get the push too.
    let readers = shared.feed.graph.follower_count(user).saturating_add(1);
    shared.fanout.admit(readers).ok_or_else(|| {
        refused.inc();
        tracing::debug!(user, depth = shared.fanout.depth(), "fanout queue full: request refused");
        error(req, ErrorCode::Unavailable, "fanout queue full, retry")
    })
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
    // Admitted before it is stored: a refused post is nowhere.
    let admission = match admit(shared, user, req, &shared.metrics.fanout_refused_publish) {
        Ok(admission) => admission,
        Err(refused) => return refused,
    };
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
    // Off the runtime: a celebrity's follower list is a million entries. The
    // jobs were admitted already, so queueing them never waits.
    let (publisher, published) = (shared.clone(), post.clone());
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
    Message::Published { req, post: post.id }
}

async fn delete(shared: &Arc<Shared>, user: u64, req: u64, id: u64) -> Message {
    // Admitted before anything is written.
    let admission = match admit(shared, user, req, &shared.metrics.fanout_refused_delete) {
        Ok(admission) => admission,
        Err(refused) => return refused,
    };
    // Durable first, then gone from memory: a refused delete changes nothing.
    let stored = blocking(shared, move |store| store.delete_post(user, id)).await;
    let hot = matches!(stored, Some(Ok(_))) && shared.feed.delete(user, id).is_some();
    match stored {
        Some(Ok(existed)) if existed || hot => {
            // Off the runtime, like a post's: never waits for the queue.
            let fanout = shared.clone();
            let listed = tokio::task::spawn_blocking(move || {
                let mut readers = fanout.feed.graph.followers(user);
                readers.push(user);
                fanout.fanout.push(admission, || Push::Deleted(id), &readers, false, Instant::now());
            });
            if listed.await.is_err() {
                tracing::error!(post = id, "listing the followers panicked: no DELETED_PUSH");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn post() -> Push {
        Push::Deleted(7)
    }

    fn readers(n: usize) -> Vec<u64> {
        (1..=n as u64).collect()
    }

    /// Runs `f` on another thread and fails if it has not returned within a
    /// second: what "never blocks" means here.
    fn within_a_second<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(f()));
        result.recv_timeout(Duration::from_secs(1)).expect("blocked")
    }

    fn receiver(queue: &FanoutQueue) -> Receiver<Job> {
        queue.waiting.lock().unwrap().take().unwrap()
    }

    #[test]
    fn a_full_queue_refuses_and_a_drained_one_admits_again() {
        let queue = FanoutQueue::with_capacity(3 * MIN_REQUEST_COST);
        let jobs = receiver(&queue);
        let mut held: Vec<Admission> = (0..3).map(|_| queue.admit(1).expect("room")).collect();
        assert_eq!(queue.depth(), 3 * MIN_REQUEST_COST, "a small request costs the minimum");
        assert!(queue.admit(1).is_none(), "full: refused");
        assert_eq!(queue.depth(), 3 * MIN_REQUEST_COST, "a refusal reserves nothing");

        // Queued is still outstanding, until a fanout thread finishes the job.
        assert_eq!(queue.push(held.pop().unwrap(), post, &readers(10), false, Instant::now()), 1);
        assert_eq!(queue.depth(), 3 * MIN_REQUEST_COST);
        assert!(queue.admit(1).is_none());
        let job = jobs.try_recv().expect("queued");
        assert!(queue.admit(1).is_none(), "running is still outstanding");
        drop(job);
        assert_eq!(queue.depth(), 2 * MIN_REQUEST_COST, "finished: drained");
        let again = queue.admit(1).expect("admitted again");
        assert!(queue.admit(1).is_none());

        // A request that ends without queueing (refused commit, NOT_FOUND) gives its share back.
        drop(again);
        drop(held);
        assert_eq!(queue.depth(), 0);
        assert!(queue.admit(1).is_some());
    }

    #[test]
    fn a_celebrity_post_is_admitted_whenever_the_queue_is_not_full() {
        let queue = FanoutQueue::with_capacity(FANOUT_QUEUE);
        let celebrity = 1_000_000 + 1;
        let alone = queue.admit(celebrity).expect("an empty queue takes a million readers");
        assert_eq!((alone.reserved(), queue.depth()), (celebrity, celebrity));
        drop(alone);

        let nearly = queue.admit(FANOUT_QUEUE - 1).unwrap();
        let last_in = queue.admit(celebrity).expect("one reader short of full still admits a celebrity");
        assert_eq!(queue.depth(), FANOUT_QUEUE - 1 + celebrity, "over the budget by less than one request");
        assert!(queue.admit(1).is_none() && queue.admit(celebrity).is_none());
        drop((nearly, last_in));

        // Even a request bigger than the whole budget goes, when the queue is not full.
        assert!(queue.admit(10 * FANOUT_QUEUE).is_some());
    }

    #[test]
    fn queueing_never_blocks_and_follows_the_real_reader_count() {
        let queue = Arc::new(FanoutQueue::with_capacity(FANOUT_CHUNK));
        // Nobody reads the queue: a bounded channel would block here.
        let jobs = receiver(&queue);
        let pushing = queue.clone();
        let queued = within_a_second(move || {
            let mut queued = Vec::new();
            while let Some(admission) = pushing.admit(FANOUT_CHUNK) {
                // Followers gained during the commit: a committed post goes to all of them.
                queued.push(pushing.push(admission, post, &readers(40 * FANOUT_CHUNK), true, Instant::now()));
            }
            queued
        });
        assert_eq!(queued, [40], "the first request fills the queue, the next is refused");
        assert_eq!(queue.depth(), 40 * FANOUT_CHUNK);
        let sizes: Vec<usize> = jobs.try_iter().map(|job| job.followers.len()).collect();
        assert_eq!(sizes, [FANOUT_CHUNK; 40]);
        assert_eq!(queue.depth(), 0, "every finished job gave its share back");

        // Fewer readers than counted: the surplus goes back at once.
        let admission = queue.admit(FANOUT_CHUNK).unwrap();
        assert_eq!(queue.push(admission, post, &readers(3), false, Instant::now()), 1);
        assert_eq!(queue.depth(), MIN_REQUEST_COST);
        drop(jobs.try_recv().unwrap());
        assert_eq!(queue.depth(), 0);
    }

    #[test]
    fn only_the_last_job_of_a_post_marks_it_complete() {
        let queue = FanoutQueue::with_capacity(FANOUT_QUEUE);
        let jobs = receiver(&queue);
        let admission = queue.admit(2 * FANOUT_CHUNK + 1).unwrap();
        assert_eq!(queue.push(admission, post, &readers(2 * FANOUT_CHUNK + 1), true, Instant::now()), 3);
        let jobs: Vec<Job> = jobs.try_iter().collect();
        let sizes: Vec<(usize, bool)> = jobs.iter().map(|j| (j.followers.len(), j.published_at.is_some())).collect();
        assert_eq!(sizes, [(FANOUT_CHUNK, false), (FANOUT_CHUNK, false), (1, true)]);
        let everyone: Vec<u64> = jobs.iter().flat_map(|j| j.followers.iter().copied()).collect();
        assert_eq!(everyone, readers(2 * FANOUT_CHUNK + 1));
        // Each job gives back its readers; the minimum cost is per request, not per job.
        let shares: Vec<usize> = jobs.iter().map(|j| j._slot.readers).collect();
        assert_eq!(shares, [FANOUT_CHUNK, FANOUT_CHUNK, 1]);
    }

    #[test]
    fn a_stopped_pool_gives_the_budget_back() {
        let queue = FanoutQueue::with_capacity(FANOUT_QUEUE);
        drop(receiver(&queue));
        let admission = queue.admit(3 * FANOUT_CHUNK).unwrap();
        assert_eq!(queue.push(admission, post, &readers(3 * FANOUT_CHUNK), false, Instant::now()), 0);
        assert_eq!(queue.depth(), 0);
    }

    #[test]
    fn racing_publishers_overshoot_by_less_than_one_request() {
        let queue = Arc::new(FanoutQueue::with_capacity(FANOUT_QUEUE));
        let biggest = 2_000_000;
        let threads: Vec<_> = (0..8u64)
            .map(|seed| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut readers = seed as usize * 7_919 + 1;
                    while let Some(admission) = queue.admit(readers) {
                        held.push(admission);
                        readers = (readers * 31 + 17) % biggest;
                    }
                    held
                })
            })
            .collect();
        let held: Vec<Admission> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let reserved: usize = held.iter().map(Admission::reserved).sum();
        assert_eq!(queue.depth(), reserved);
        assert!((FANOUT_QUEUE..FANOUT_QUEUE + biggest).contains(&reserved), "{reserved}");
        drop(held);
        assert_eq!(queue.depth(), 0);
    }
}
