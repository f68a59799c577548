//! Where pushes wait for the application: the queues behind
//! [`WatchStream`] and [`LiveStream`].
//!
//! The connection task hands pushes over without ever waiting for the
//! application, so a slow reader cannot stall heartbeats or replies. Each
//! queue is therefore bounded by construction: presence keeps only the
//! newest entry per watched user (as the server's outbox does, SPEC.md
//! §6.5), and the live feed replaces an overflowing backlog with one
//! [`LiveEvent::Gap`]. This module must not touch the socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::Stream;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::task::{Command, Subscriber};
use heartline_proto::{Item, PresenceEntry};

/// A queue a [`Mailbox`] holds.
pub(super) trait Queue {
    type Item;
    fn pop(&mut self) -> Option<Self::Item>;
}

/// A queue shared between the connection task (writer) and one stream
/// (reader). A plain mutex: nobody holds it across an `.await`.
pub(super) struct Mailbox<Q> {
    slot: Mutex<Slot<Q>>,
}

struct Slot<Q> {
    queue: Q,
    /// The client is closed for good: the stream ends once drained.
    closed: bool,
    waker: Option<Waker>,
}

impl<Q: Queue> Mailbox<Q> {
    pub(super) fn new(queue: Q) -> Arc<Self> {
        Arc::new(Self { slot: Mutex::new(Slot { queue, closed: false, waker: None }) })
    }

    fn lock(&self) -> MutexGuard<'_, Slot<Q>> {
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the queue and wakes the reader if `change` says something
    /// arrived.
    pub(super) fn update(&self, change: impl FnOnce(&mut Q) -> bool) {
        let mut slot = self.lock();
        if change(&mut slot.queue) {
            Self::wake(slot);
        }
    }

    /// Wakes the reader outside the lock.
    fn wake(mut slot: MutexGuard<'_, Slot<Q>>) {
        let waker = slot.waker.take();
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Reads the queue's state.
    pub(super) fn read<R>(&self, look: impl FnOnce(&Q) -> R) -> R {
        look(&self.lock().queue)
    }

    pub(super) fn close(&self) {
        let mut slot = self.lock();
        slot.closed = true;
        Self::wake(slot);
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Q::Item>> {
        let mut slot = self.lock();
        if let Some(item) = slot.queue.pop() {
            return Poll::Ready(Some(item));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The presence of a watch stream's users: the version rule of SPEC.md §6.4
/// and, per user, only the newest entry not yet read.
#[derive(Default)]
pub(super) struct WatchQueue {
    users: HashSet<u64>,
    /// The last version accepted per user. Kept across reconnections: versions
    /// are derived from the server clock and keep growing across restarts
    /// (§6.4), so a re-sent snapshot of an unchanged user is dropped instead
    /// of being reported again.
    versions: HashMap<u64, u64>,
    order: VecDeque<u64>,
    pending: HashMap<u64, PresenceEntry>,
}

impl WatchQueue {
    pub(super) fn new(users: &[u64]) -> Self {
        Self { users: users.iter().copied().collect(), ..Self::default() }
    }

    pub(super) fn users(&self) -> &HashSet<u64> {
        &self.users
    }

    /// Takes an entry if it is about a watched user and newer than what was
    /// accepted for that user; returns whether it was taken.
    pub(super) fn offer(&mut self, entry: &PresenceEntry) -> bool {
        if !self.users.contains(&entry.user) {
            return false;
        }
        if self.versions.get(&entry.user).is_some_and(|&seen| seen >= entry.version) {
            return false;
        }
        self.versions.insert(entry.user, entry.version);
        if self.pending.insert(entry.user, entry.clone()).is_none() {
            self.order.push_back(entry.user);
        }
        true
    }

    /// Stops following `user`; what was queued for them is dropped.
    pub(super) fn remove(&mut self, user: u64) {
        if self.users.remove(&user) {
            self.versions.remove(&user);
            if self.pending.remove(&user).is_some() {
                self.order.retain(|&u| u != user);
            }
        }
    }
}

impl Queue for WatchQueue {
    type Item = PresenceEntry;

    fn pop(&mut self) -> Option<PresenceEntry> {
        let user = self.order.pop_front()?;
        self.pending.remove(&user)
    }
}

/// An event of the live home timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A new item of the home timeline (ITEM_PUSH). Items arrive roughly in
    /// time order, not strictly by id: insert them by id (SPEC.md §10.5).
    Item(Item),
    /// A post to remove from view (DELETED_PUSH).
    Deleted { post: u64 },
    /// Items may have been missed: the connection was lost, or this stream
    /// fell too far behind. Catch up with a forward walk from the newest id
    /// held (`Cursor { min_id: Some(newest), .. }`, SPEC.md §10.3).
    Gap,
}

/// Live events in order, at most `bound` of them.
pub(super) struct LiveQueue {
    events: VecDeque<LiveEvent>,
    bound: usize,
}

impl LiveQueue {
    pub(super) fn new(bound: usize) -> Self {
        Self { events: VecDeque::new(), bound: bound.max(1) }
    }

    /// Queues an event. Past the bound the backlog is replaced by a single
    /// [`LiveEvent::Gap`]: a forward walk recovers what it dropped.
    pub(super) fn push(&mut self, event: LiveEvent) {
        if self.events.len() >= self.bound {
            self.events.clear();
            self.events.push_back(LiveEvent::Gap);
        } else if !(event == LiveEvent::Gap && self.events.back() == Some(&LiveEvent::Gap)) {
            self.events.push_back(event);
        }
    }
}

impl Queue for LiveQueue {
    type Item = LiveEvent;

    fn pop(&mut self) -> Option<LiveEvent> {
        self.events.pop_front()
    }
}

pub(super) type WatchBox = Mailbox<WatchQueue>;
pub(super) type LiveBox = Mailbox<LiveQueue>;

/// The presence of watched users: the snapshot, then every change, with
/// stale and repeated versions dropped (SPEC.md §6.4). Only the newest
/// unread entry per user is kept, so a slow reader skips intermediate states
/// but always gets the latest one.
///
/// Survives reconnections (the client watches again). Ends when the client
/// is closed for good. Dropping it unwatches the users no other stream
/// watches.
pub struct WatchStream {
    mailbox: Arc<WatchBox>,
    commands: UnboundedSender<Command>,
}

impl WatchStream {
    pub(super) fn new(mailbox: Arc<WatchBox>, commands: UnboundedSender<Command>) -> Self {
        Self { mailbox, commands }
    }
}

impl Stream for WatchStream {
    type Item = PresenceEntry;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PresenceEntry>> {
        self.mailbox.poll_pop(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        // The task is gone if this fails, and with it the watch set.
        let _ = self.commands.send(Command::Forget(Subscriber::Watch(self.mailbox.clone())));
    }
}

/// New items and deletions of the home timeline, while LIVE is on
/// (SPEC.md §10.5). LIVE stays on, across reconnections, until the last live
/// stream is dropped. Ends when the client is closed for good.
pub struct LiveStream {
    mailbox: Arc<LiveBox>,
    commands: UnboundedSender<Command>,
}

impl LiveStream {
    pub(super) fn new(mailbox: Arc<LiveBox>, commands: UnboundedSender<Command>) -> Self {
        Self { mailbox, commands }
    }
}

impl Stream for LiveStream {
    type Item = LiveEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LiveEvent>> {
        self.mailbox.poll_pop(cx)
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Forget(Subscriber::Live(self.mailbox.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: u64, version: u64) -> PresenceEntry {
        PresenceEntry { user, status: Default::default(), version, last_seen_ms: 0, text: Default::default() }
    }

    #[test]
    fn stale_and_repeated_versions_are_dropped_and_unread_ones_coalesce() {
        let mut q = WatchQueue::new(&[1, 2]);
        assert!(q.offer(&entry(1, 0)), "the first entry is always applied");
        assert!(q.offer(&entry(1, 10)));
        assert!(!q.offer(&entry(1, 10)));
        assert!(!q.offer(&entry(1, 9)));
        assert!(!q.offer(&entry(3, 50)), "not watched");
        assert!(q.offer(&entry(2, 5)));
        assert_eq!(q.pop().map(|e| (e.user, e.version)), Some((1, 10)));
        assert_eq!(q.pop().map(|e| (e.user, e.version)), Some((2, 5)));
        assert_eq!(q.pop(), None);
        q.remove(2);
        assert!(!q.offer(&entry(2, 6)));
    }

    #[test]
    fn an_overflowing_live_queue_becomes_one_gap() {
        let mut q = LiveQueue::new(2);
        q.push(LiveEvent::Deleted { post: 1 });
        q.push(LiveEvent::Deleted { post: 2 });
        q.push(LiveEvent::Deleted { post: 3 });
        q.push(LiveEvent::Gap);
        assert_eq!(q.pop(), Some(LiveEvent::Gap));
        assert_eq!(q.pop(), None);
    }
}
