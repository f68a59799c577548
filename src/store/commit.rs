//! Group commit of posts: one thread writes every post waiting as one batch,
//! so that one fsync makes many posts durable.
//!
//! Owns the queue of posts waiting to be written and the answer each waiter
//! gets. It must not answer a post before the batch holding it is durable
//! and readable, nor leave a waiter without an answer: every receiver
//! resolves, with the batch's result or, if the thread is gone, with a
//! closed channel.

use std::mem;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{Store, StoreError, StoredPost};

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;

/// At most this many posts per batch, so that one batch's acks are not held
/// back for long behind a huge backlog.
const MAX_BATCH_POSTS: usize = 4_096;
/// At most this many bytes per batch (by [`post_bytes`]); a single larger post
/// still goes, alone.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Where the committer answers one post.
type Ack = oneshot::Sender<Result<(), StoreError>>;

/// A group committer for posts: [`Committer::submit`] queues a post, a
/// dedicated thread writes everything queued (up to 4,096 posts or 4 MiB) as
/// one [`Store::put_posts`] batch with the store's durability, then answers
/// every post of the batch with its result. While one batch is written, the
/// next one gathers, so the batch size follows the load. With nothing queued
/// the thread sleeps on a condition variable.
///
/// Dropping the committer writes and answers everything already queued, then
/// joins the thread; it blocks for that long, so async code drops it inside
/// `spawn_blocking`.
pub struct Committer {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when `pending` goes from empty to not, and on close.
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    posts: Vec<StoredPost>,
    /// `acks[i]` answers `posts[i]`.
    acks: Vec<Ack>,
    /// Sum of [`post_bytes`] over `posts`.
    bytes: usize,
    /// Set by the committer's drop: write what is queued, then stop.
    closing: bool,
    /// Set when the thread is gone (it panicked): submits are answered at
    /// once with a closed channel instead of waiting forever.
    stopped: bool,
}

impl Committer {
    /// Starts the committer's thread, writing to `store`.
    pub fn start(store: Store) -> Committer {
        Committer::with_writer(move |posts| store.put_posts(posts))
    }

    /// A committer whose batches go to `write`, which returns once they are
    /// durable. Tests put a failing writer here.
    pub(super) fn with_writer(
        write: impl FnMut(&[StoredPost]) -> Result<(), StoreError> + Send + 'static,
    ) -> Committer {
        let queue = Arc::new(Queue { pending: Mutex::new(Pending::default()), wake: Condvar::new() });
        let thread = {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("store-commit".into())
                .spawn(move || run(&queue, write))
                .expect("cannot start the store's commit thread")
        };
        Committer { queue, thread: Some(thread) }
    }

    /// Queues `post`. The receiver resolves once the batch holding it is
    /// durable and readable (`Ok`), or with that batch's error, which every
    /// post of the batch gets (a clone of one [`StoreError`]; after an I/O
    /// failure the store is down and later batches fail with
    /// [`StoreError::Poisoned`] until [`Store::recover`]). A closed channel
    /// (`RecvError`) means the commit thread died: the post may or may not be
    /// stored, as with a failed write. Does not block beyond a short lock.
    pub fn submit(&self, post: StoredPost) -> oneshot::Receiver<Result<(), StoreError>> {
        let (ack, answer) = oneshot::channel();
        let mut pending = self.queue.lock();
        if pending.stopped {
            // Dropping `ack` closes the channel: the caller sees the failure.
            return answer;
        }
        let was_empty = pending.posts.is_empty();
        pending.bytes += post_bytes(&post);
        pending.posts.push(post);
        pending.acks.push(ack);
        drop(pending);
        // Only the transition needs a wake-up: with posts queued the thread
        // is writing and takes them when it comes back, without waiting.
        if was_empty {
            self.queue.wake.notify_one();
        }
        answer
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.lock().closing = true;
        self.queue.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic on the thread was already reported on stderr, and its
            // waiters saw their channels close; nothing more to tell here.
            let _ = thread.join();
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding the lock, and `Pending` is
        // consistent at every unlock anyway.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The commit thread: take a batch, write it, answer it, until closed and
/// drained.
fn run(queue: &Queue, mut write: impl FnMut(&[StoredPost]) -> Result<(), StoreError>) {
    let _stopped = MarkStopped(queue);
    // Swapped with the queue's vectors, so both keep their capacity.
    let mut posts = Vec::new();
    let mut acks = Vec::new();
    loop {
        {
            let mut pending = queue.lock();
            while pending.posts.is_empty() && !pending.closing {
                pending = queue.wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
            }
            if pending.posts.is_empty() {
                return;
            }
            take_batch(&mut pending, &mut posts, &mut acks);
        }
        let result = write(&posts);
        posts.clear();
        for ack in acks.drain(..) {
            // A dropped receiver only means the submitter stopped waiting.
            let _ = ack.send(result.clone());
        }
    }
}

/// Moves the oldest queued posts, up to the batch limits, into the empty
/// `posts` and `acks`.
fn take_batch(pending: &mut Pending, posts: &mut Vec<StoredPost>, acks: &mut Vec<Ack>) {
    if pending.posts.len() <= MAX_BATCH_POSTS && pending.bytes <= MAX_BATCH_BYTES {
        mem::swap(&mut pending.posts, posts);
        mem::swap(&mut pending.acks, acks);
        pending.bytes = 0;
        return;
    }
    let mut count = 0;
    let mut bytes = 0;
    for post in pending.posts.iter().take(MAX_BATCH_POSTS) {
        let size = post_bytes(post);
        if count > 0 && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        count += 1;
        bytes += size;
    }
    posts.extend(pending.posts.drain(..count));
    acks.extend(pending.acks.drain(..count));
    pending.bytes -= bytes;
}

/// About what a post adds to a batch: its payload, two keys, the index value
/// and the record header.
fn post_bytes(post: &StoredPost) -> usize {
    post.payload.len() + 16 + 8 + 8 + 2
}

/// Marks the queue stopped when the commit thread ends, including by a
/// panic, and closes every channel still waiting.
struct MarkStopped<'a>(&'a Queue);

impl Drop for MarkStopped<'_> {
    fn drop(&mut self) {
        let mut pending = self.0.lock();
        pending.stopped = true;
        pending.posts.clear();
        pending.acks.clear();
        pending.bytes = 0;
    }
}
