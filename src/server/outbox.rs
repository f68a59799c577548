//! One connection's outbound queue: replies in order, presence pushes
//! coalesced per user, bounded.
//!
//! When the queue is full, a new presence entry for a user already queued
//! replaces the old one (newest wins) and costs nothing; anything else that
//! would pass the bound closes the connection with SLOW_CONSUMER (a peer
//! that reads nothing at all is dropped by the writer's timeout). The queue
//! is a plain mutex: nobody holds it across an `.await`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use indexmap::IndexMap;

use heartline_proto::{limits, ErrorCode, Message, PresenceEntry, Text};

#[derive(Default)]
struct Queue {
    /// Something outside the connection that its machine must handle first.
    interrupt: Option<Interrupt>,
    frames: VecDeque<Message>,
    presence: IndexMap<u64, PresenceEntry>,
    /// Set once: the last frame to write before closing (boxed: every
    /// connection carries the field, few ever fill it).
    closing: Option<Option<Box<Message>>>,
    coalesced: u64,
}

impl Queue {
    fn len(&self) -> usize {
        self.frames.len() + self.presence.len()
    }
}

pub(super) struct Outbox {
    queue: Mutex<Queue>,
    /// The one task that takes from this outbox: its connection's.
    wake: AtomicWaker,
    limit: usize,
}

/// What the writer got from [`Outbox::take`].
pub(crate) enum Batch {
    /// Write these and come back.
    More,
    /// Write these, then close the connection.
    Last,
    /// Nothing taken: hand this to the connection's machine first.
    Interrupted(Interrupt),
}

/// News for a connection from elsewhere in the server, which its machine
/// turns into effects (`heartline_core::conn::Connection::expired`,
/// `disconnected`, `drain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// The presence wheel ended the connection's session.
    Expired,
    /// The admin API ended the connection's session (a user's disconnect).
    Disconnected,
    /// The server is stopping.
    Drain,
}

impl Outbox {
    pub(super) fn new(limit: usize) -> Self {
        Self { queue: Mutex::new(Queue::default()), wake: AtomicWaker::new(), limit }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame; over the bound, the connection is closed instead.
    pub(super) fn send(&self, msg: Message) {
        let mut q = self.lock();
        if q.closing.is_some() {
            return;
        }
        if q.len() >= self.limit {
            Self::overflow(&mut q);
        } else {
            q.frames.push_back(msg);
        }
        drop(q);
        self.wake.wake();
    }

    /// Queues a presence entry, replacing a queued one for the same user;
    /// true when it replaced one (for the server's coalescing counter).
    pub(super) fn presence(&self, entry: PresenceEntry) -> bool {
        let mut q = self.lock();
        if q.closing.is_some() {
            return false;
        }
        let coalesced = if let Some(queued) = q.presence.get_mut(&entry.user) {
            *queued = entry;
            q.coalesced += 1;
            true
        } else {
            if q.len() >= self.limit {
                Self::overflow(&mut q);
            } else {
                q.presence.insert(entry.user, entry);
            }
            false
        };
        drop(q);
        self.wake.wake();
        coalesced
    }

    /// The queue freezes (nothing more is taken, so memory stays bounded);
    /// the writer finishes what it is writing, sends the ERROR and closes.
    fn overflow(q: &mut Queue) {
        q.frames.clear();
        q.presence.clear();
        q.closing = Some(Some(Box::new(slow_consumer())));
    }

    /// Writes what is queued, then `last` (if any), then closes.
    pub(super) fn close(&self, last: Option<Message>) {
        let mut q = self.lock();
        if q.closing.is_none() {
            q.closing = Some(last.map(Box::new));
        }
        drop(q);
        self.wake.wake();
    }

    /// Tells the connection's task something it must act on; the first
    /// interrupt wins, and a closing connection needs none.
    pub(crate) fn interrupt(&self, kind: Interrupt) {
        let mut q = self.lock();
        if q.closing.is_some() || q.interrupt.is_some() {
            return;
        }
        q.interrupt = Some(kind);
        drop(q);
        self.wake.wake();
    }

    pub(super) fn is_closing(&self) -> bool {
        self.lock().closing.is_some()
    }

    /// Frames and entries waiting, and entries coalesced so far.
    pub(super) fn depth(&self) -> (usize, u64) {
        let q = self.lock();
        (q.len(), q.coalesced)
    }

    /// Waits for something to write and moves it to `out` (see [`poll_take`](Self::poll_take)).
    pub(super) async fn take(&self, out: &mut Vec<Message>) -> Batch {
        std::future::poll_fn(|cx| self.poll_take(cx, out)).await
    }

    /// Moves what there is to write to `out`, presence entries grouped into
    /// PRESENCE_PUSH frames; `Pending` (and a wake later) when there is
    /// nothing. Only one task may take from an outbox: the last one to poll
    /// is the one woken.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>, out: &mut Vec<Message>) -> Poll<Batch> {
        // Registered before looking, so that news arriving in between wakes it.
        self.wake.register(cx.waker());
        let mut q = self.lock();
        if let Some(interrupt) = q.interrupt.take() {
            return Poll::Ready(Batch::Interrupted(interrupt));
        }
        if q.len() == 0 && q.closing.is_none() {
            return Poll::Pending;
        }
        out.extend(q.frames.drain(..));
        let entries: Vec<PresenceEntry> = q.presence.drain(..).map(|(_, e)| e).collect();
        for chunk in entries.chunks(limits::MAX_IDS) {
            out.push(Message::PresencePush { entries: chunk.to_vec() });
        }
        Poll::Ready(match q.closing.as_mut() {
            Some(last) => {
                out.extend(last.take().map(|last| *last));
                Batch::Last
            }
            None => Batch::More,
        })
    }
}

/// The ERROR that ends a connection whose queue overflowed.
pub(super) fn slow_consumer() -> Message {
    error(0, ErrorCode::SlowConsumer, "outbound queue full")
}

/// An ERROR frame.
pub(super) fn error(req: u64, code: ErrorCode, message: &'static str) -> Message {
    Message::Error { req, code: code as u16, message: Text::from(message) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartline_proto::Status;

    fn entry(user: u64, version: u64) -> PresenceEntry {
        PresenceEntry { user, status: Status::Online, version, last_seen_ms: 0, text: Text::default() }
    }

    fn take_now(outbox: &Outbox) -> (Vec<Message>, bool) {
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let last = matches!(rt.block_on(outbox.take(&mut out)), Batch::Last);
        (out, last)
    }

    #[test]
    fn presence_for_the_same_user_coalesces_newest_wins() {
        let outbox = Outbox::new(2);
        outbox.presence(entry(1, 1));
        outbox.presence(entry(2, 1));
        outbox.presence(entry(1, 2));
        outbox.presence(entry(1, 3));
        let (out, last) = take_now(&outbox);
        assert!(!last);
        assert_eq!(out, [Message::PresencePush { entries: vec![entry(1, 3), entry(2, 1)] }]);
        assert_eq!(outbox.depth(), (0, 2));
    }

    #[test]
    fn overflow_closes_with_slow_consumer() {
        let outbox = Outbox::new(2);
        outbox.presence(entry(1, 1));
        outbox.send(Message::Ok { req: 1 });
        outbox.presence(entry(3, 1));
        let (out, last) = take_now(&outbox);
        assert!(last);
        assert_eq!(out, [slow_consumer()]);
        outbox.send(Message::Ok { req: 2 });
        assert_eq!(outbox.depth().0, 0, "nothing is queued after closing");
    }

    #[test]
    fn close_flushes_what_is_queued_then_the_last_frame() {
        let outbox = Outbox::new(8);
        outbox.send(Message::Ok { req: 1 });
        outbox.close(Some(Message::Bye));
        let (out, last) = take_now(&outbox);
        assert!(last);
        assert_eq!(out, [Message::Ok { req: 1 }, Message::Bye]);
    }
}
