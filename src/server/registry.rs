//! Who is connected: every live connection's outbox, as what viewer it sees
//! presence, the session it owns and, for a gateway on UDP, its replay
//! window.
//!
//! Owns the connection map and connection ids, and carries out the effects
//! that reach other connections: presence deliveries to watchers, the
//! expiry of a session's connection, GOAWAY to everyone. It must not decide
//! anything about the protocol (that is `heartline_core::conn`'s) and never
//! holds a map guard across an `.await` (there is none here).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use heartline_core::presence::{blocked, entry_for, BlockList, Change, SessionId, Viewer};
use heartline_proto::udp::ReplayWindow;

use super::outbox::{Interrupt, Outbox};
use crate::metrics::{Metrics, Transport};

/// What the registry knows of one connection.
pub(crate) struct ConnEntry {
    pub(crate) outbox: Arc<Outbox>,
    /// `None` until HELLO: such a connection receives no presence.
    viewer: Option<Viewer>,
    /// A client connection's session.
    session: Option<SessionId>,
    /// A gateway that takes UDP batches: its replay window.
    pub(crate) udp_gateway: Option<Mutex<ReplayWindow>>,
    transport: Transport,
}

#[derive(Default)]
pub(crate) struct Registry {
    conns: DashMap<u32, ConnEntry>,
    next_id: AtomicU32,
    /// Connections past HELLO (the admin's `heartline_connections`).
    authenticated: AtomicUsize,
    /// The same, by [`Transport`].
    authenticated_on: [AtomicUsize; 4],
    /// Of those, gateways (they see presence as [`Viewer::Anyone`]).
    gateways: AtomicUsize,
}

impl Registry {
    /// A new connection: registered at once (so GOAWAY reaches it), with a
    /// fresh id that is never 0 and never reused while the daemon runs,
    /// short of 2^32 connections.
    pub(crate) fn add(&self, outbox: Arc<Outbox>, transport: Transport) -> u32 {
        let id = self.fresh_id();
        self.conns.insert(id, ConnEntry { outbox, viewer: None, session: None, udp_gateway: None, transport });
        id
    }

    /// An owner id no connection has or will have: for the admin API's
    /// server-side sessions, which have no connection.
    pub(crate) fn fresh_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 {
                return id;
            }
        }
    }

    /// The connection passed HELLO.
    pub(crate) fn authenticated(&self, id: u32, viewer: Viewer, session: Option<SessionId>, udp_gateway: bool) {
        if let Some(mut entry) = self.conns.get_mut(&id) {
            if entry.viewer.is_none() {
                self.authenticated.fetch_add(1, Ordering::Relaxed);
                self.authenticated_on[entry.transport as usize].fetch_add(1, Ordering::Relaxed);
            }
            match (entry.viewer == Some(Viewer::Anyone), viewer == Viewer::Anyone) {
                (false, true) => _ = self.gateways.fetch_add(1, Ordering::Relaxed),
                (true, false) => _ = self.gateways.fetch_sub(1, Ordering::Relaxed),
                _ => {}
            }
            entry.viewer = Some(viewer);
            entry.session = session;
            entry.udp_gateway = udp_gateway.then(|| Mutex::new(ReplayWindow::default()));
        }
    }

    pub(crate) fn remove(&self, id: u32) {
        if let Some((_, entry)) = self.conns.remove(&id) {
            if entry.viewer.is_some() {
                self.authenticated.fetch_sub(1, Ordering::Relaxed);
                self.authenticated_on[entry.transport as usize].fetch_sub(1, Ordering::Relaxed);
            }
            if entry.viewer == Some(Viewer::Anyone) {
                self.gateways.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Connections past HELLO.
    pub(crate) fn len(&self) -> usize {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Connections past HELLO on `transport` (gateways included).
    pub(crate) fn len_on(&self, transport: Transport) -> usize {
        self.authenticated_on[transport as usize].load(Ordering::Relaxed)
    }

    /// Gateway connections past HELLO (included in [`Self::len`]).
    pub(crate) fn gateways(&self) -> usize {
        self.gateways.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub(crate) fn get(&self, id: u32) -> Option<dashmap::mapref::one::Ref<'_, u32, ConnEntry>> {
        self.conns.get(&id)
    }

    /// Pushes a change to every connection watching the user, as each may see it.
    pub(crate) fn deliver(&self, change: Change, blocks: &dyn BlockList, metrics: &Metrics) {
        let view = change.view();
        for conn in &change.watchers {
            let Some(entry) = self.conns.get(conn) else { continue };
            let Some(viewer) = entry.viewer else { continue };
            if blocked(viewer, change.user, blocks) {
                continue;
            }
            metrics.watch_events.inc();
            if entry.outbox.presence(entry_for(viewer, change.user, &view, blocks)) {
                metrics.watch_events_coalesced.inc();
            }
        }
    }

    /// Whether `owner` is the live client connection holding `session`.
    pub(crate) fn owns(&self, owner: u32, session: SessionId) -> bool {
        self.conns.get(&owner).is_some_and(|e| e.session == Some(session))
    }

    /// `session` ended outside its connection (the presence wheel: `Expired`;
    /// the admin API: `Disconnected`): if `owner` is the client connection
    /// that held it, its machine closes it.
    pub(crate) fn session_ended(&self, session: SessionId, owner: u32, why: Interrupt) {
        if let Some(entry) = self.conns.get(&owner).filter(|e| e.session == Some(session)) {
            entry.outbox.interrupt(why);
        }
    }

    /// Every connection drains (GOAWAY) or, before HELLO, closes.
    pub(crate) fn drain(&self) {
        for entry in self.conns.iter() {
            entry.outbox.interrupt(Interrupt::Drain);
        }
    }

    /// Frames and entries waiting to be written, in all and in the deepest
    /// queue, and the connections past HELLO whose outbox is closing.
    pub(crate) fn queue_depths(&self) -> (u64, u64, u64) {
        self.conns.iter().fold((0, 0, 0), |(sum, max, closing), entry| {
            let depth = entry.outbox.depth().0 as u64;
            let ending = u64::from(entry.viewer.is_some() && entry.outbox.is_closing());
            (sum + depth, max.max(depth), closing + ending)
        })
    }
}
