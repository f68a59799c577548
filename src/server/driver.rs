//! Drives one connection's machine for a transport shell: hands it frames,
//! timeouts and interrupts, and carries out the effects it returns.
//!
//! Owns the connection's outbox, its feed session (started on the first
//! feed request) and the registry entry. It is the same for every transport
//! (TCP, WebSocket); it must not touch a socket — the shell reads and writes
//! bytes — and must not block: the store read a lookup needs runs on the
//! blocking pool and answers through the outbox.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use heartline_core::conn::{error, presence_entries, Connection, Effect, Flow};
use heartline_core::presence::{entry_for, Viewer};
use heartline_proto::{ErrorCode, Message};

use super::feed::{FeedSession, FeedShell};
use super::node::Node;
use super::now_ms;
use super::outbox::{Interrupt, Outbox};
use crate::metrics::{CloseReason, Transport};

/// What GOAWAY asks clients to wait before reconnecting (they add jitter).
const RECONNECT_AFTER_MS: u32 = 1_000;

thread_local! {
    /// Each runtime thread's effect list, so an idle connection keeps none.
    static EFFECTS: RefCell<Vec<Effect>> = const { RefCell::new(Vec::new()) };
}

pub(crate) struct Driver {
    machine: Connection,
    node: Arc<Node>,
    feed: Arc<FeedShell>,
    outbox: Arc<Outbox>,
    /// Started on the first feed request.
    feed_session: Option<FeedSession>,
    transport: Transport,
}

impl Driver {
    /// A connection accepted now: registered, owing a HELLO.
    pub(crate) fn new(node: Arc<Node>, feed: Arc<FeedShell>, transport: Transport) -> Self {
        let outbox = Arc::new(Outbox::new(node.limits.outbound_queue()));
        let id = node.registry.add(outbox.clone(), transport);
        let handshake_ms = u64::try_from(node.limits.handshake_timeout().as_millis()).unwrap_or(u64::MAX);
        let machine = Connection::new(id, now_ms(), handshake_ms);
        Self { machine, node, feed, outbox, feed_session: None, transport }
    }

    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Whether the connection still reads: nothing more is read once an
    /// input has ended it (SPEC.md §4.4).
    pub(crate) fn reading(&self) -> bool {
        !self.machine.is_closing()
    }

    /// The machine's next deadline, in unix milliseconds.
    pub(crate) fn deadline_ms(&self) -> Option<u64> {
        self.machine.deadline()
    }

    pub(crate) fn on_frame(&mut self, frame: Bytes) -> Flow {
        self.drive(|machine, node, effects| machine.on_frame(node, frame, now_ms(), effects))
    }

    pub(crate) fn on_timeout(&mut self) {
        self.drive(|machine, _, effects| machine.on_timeout(now_ms(), effects));
    }

    /// The transport failed in a way the spec names (framing).
    pub(crate) fn abort(&mut self, code: ErrorCode, message: &'static str) {
        self.drive(|machine, _, effects| machine.abort(code, message, effects));
    }

    pub(crate) fn on_interrupt(&mut self, interrupt: Interrupt) {
        self.drive(|machine, _, effects| match interrupt {
            Interrupt::Expired => machine.expired(effects),
            Interrupt::Disconnected => machine.disconnected(effects),
            Interrupt::Drain => machine.drain(RECONNECT_AFTER_MS, effects),
        });
    }

    /// Hands the machine one input and carries out what it returns.
    fn drive(&mut self, input: impl FnOnce(&mut Connection, &Node, &mut Vec<Effect>) -> Flow) -> Flow {
        // Taken, not borrowed: carrying out may drive another connection on this thread.
        let mut effects = EFFECTS.with(|e| std::mem::take(&mut *e.borrow_mut()));
        let flow = input(&mut self.machine, &self.node, &mut effects);
        self.carry_out(&mut effects);
        EFFECTS.with(|e| *e.borrow_mut() = effects);
        flow
    }

    fn carry_out(&mut self, effects: &mut Vec<Effect>) {
        let node = &*self.node;
        for effect in effects.drain(..) {
            match effect {
                Effect::Send(msg) => self.outbox.send(msg),
                Effect::Close(last) => self.outbox.close(last),
                Effect::Deliver(change) => node.deliver(change),
                Effect::Authenticated { viewer, session, udp_gateway } => {
                    node.registry.authenticated(self.machine.id(), viewer, session, udp_gateway)
                }
                Effect::Lookup { req, viewer, users } => {
                    lookup(self.node.clone(), self.outbox.clone(), req, viewer, users)
                }
                Effect::Feed { user, request } => {
                    let req = request.req();
                    let (feed, id, outbox) = (&self.feed, self.machine.id(), &self.outbox);
                    let session = self
                        .feed_session
                        .get_or_insert_with(|| FeedSession::start(feed.clone(), user, id, outbox.clone()));
                    if let Err(code) = session.submit(request) {
                        self.outbox.send(error(req, code, "too many feed requests in flight"));
                    }
                }
                Effect::Stats { req } => self.outbox.send(Message::StatsReply { req, stats: node.stats() }),
                Effect::Heartbeats { batch: false, count } => node.metrics.heartbeats_on(self.transport).add(count),
                Effect::Heartbeats { batch: true, count } => node.metrics.heartbeats_batch.add(count),
            }
        }
    }

    /// Counts a frame the shell is about to write and says whether it ends
    /// the connection, and why (a fatal ERROR, GOAWAY).
    pub(crate) fn sent(&self, msg: &Message) -> Option<CloseReason> {
        match msg {
            Message::Error { code, .. } => {
                if let Some(counter) = self.node.metrics.errors_sent(*code) {
                    counter.inc();
                }
                ErrorCode::from_u16(*code).filter(|c| c.closes()).map(CloseReason::Error)
            }
            Message::Goaway { .. } => Some(CloseReason::Goaway),
            _ => None,
        }
    }

    /// The transport is gone: sessions to their grace window, watches end,
    /// the registry forgets the connection. Says why it ended, for the metrics.
    pub(crate) fn finish(mut self, reason: CloseReason) -> CloseReason {
        self.machine.on_close(&*self.node, now_ms());
        self.outbox.close(None);
        self.node.registry.remove(self.machine.id());
        self.node.metrics.closed(reason).inc();
        reason
    }
}

/// Answers a PRESENCE that needs the store (or, in a cluster, other
/// nodes), off the runtime.
fn lookup(node: Arc<Node>, outbox: Arc<Outbox>, req: u64, viewer: Viewer, users: Vec<u64>) {
    if let Some(remote) = node.remote.get() {
        let views = remote.views(users.clone());
        tokio::spawn(async move {
            // Stopping: whatever is not known reads as offline, never seen.
            let views = views.await.unwrap_or_default();
            let blocks = &*node.feed;
            let entries = users
                .iter()
                .enumerate()
                .map(|(i, &user)| entry_for(viewer, user, &views.get(i).cloned().unwrap_or_default(), blocks))
                .collect();
            outbox.send(Message::Presence { req, entries });
        });
        return;
    }
    tokio::task::spawn_blocking(move || {
        let store = &node.last_seen;
        let entries =
            presence_entries(viewer, &users, &node.presence, &*node.feed, |user| store.last_seen(user).ok().flatten());
        outbox.send(Message::Presence { req, entries });
    });
}
