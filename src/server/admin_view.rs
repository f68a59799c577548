//! The admin listener's view of the running server
//! ([`crate::admin::Backend`]): a snapshot of gauges and lookups through the
//! same policy point as QUERY, and the writes of the admin API — a user's
//! server-side session, a disconnect, feed requests on a user's behalf
//! (through the same feed handler as a connection's), tokens.
//!
//! Owns nothing but the list of transports the dashboard shows (a new
//! transport adds its entry in [`AdminView::transports`]); it must not
//! expose the handles it reads, nor change presence other than through
//! presence's own operations, delivering each change as connections do.

use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;

use heartline_core::conn::{error, presence_entries};
use heartline_core::presence::{SessionError, Viewer};
use heartline_proto::auth::Claims;
use heartline_proto::{ErrorCode, Message, PresenceEntry, Status, Text};

use super::feed::{answer, FeedShell};
use super::net::Admission;
use super::node::Node;
use super::now_ms;
use super::outbox::Interrupt;
use crate::admin::write::Disconnected;
use crate::admin::{api::Id, Backend, Gauges, Queues, Transport};
use crate::metrics::{self, Metrics};
use crate::store::Store;

pub(super) struct AdminView {
    pub(super) cluster: Option<crate::cluster::Cluster>,
    pub(super) node: Arc<Node>,
    pub(super) fanout: Arc<FeedShell>,
    pub(super) store: Store,
    pub(super) admission: Arc<Admission>,
}

impl Backend for AdminView {
    fn metrics(&self) -> &Metrics {
        &self.node.metrics
    }

    fn cluster(&self) -> Option<crate::cluster::Status> {
        self.cluster.as_ref().map(crate::cluster::Cluster::status)
    }

    fn feed_stream(&self) -> Option<crate::cluster::feed::Positions> {
        self.fanout.log.as_ref().map(|log| log.positions())
    }

    fn gauges(&self) -> Gauges {
        Gauges {
            stats: self.node.stats(),
            connections_open: self.admission.open() as u64,
            store_up: !self.store.is_down(),
            fanout_depth: self.fanout.fanout.depth() as u64,
            fanout_capacity: self.node.limits.fanout_queue() as u64,
        }
    }

    fn queues(&self) -> Queues {
        let (outbound_depth, outbound_depth_max, connections_closing) = self.node.registry.queue_depths();
        Queues { outbound_depth, outbound_depth_max, connections_closing }
    }

    /// `tcp`: client connections and their HEARTBEATs; `gateway`: gateway
    /// connections and the heartbeats of their batches over TCP; `udp`: no
    /// connections, the heartbeats of datagrams (gateway batches over UDP
    /// included), as `heartline_heartbeats_total{path}` counts them.
    fn transports(&self) -> Vec<Transport> {
        let (registry, metrics) = (&self.node.registry, &self.node.metrics);
        let streams = metrics::Transport::ALL.map(|t| Transport {
            name: t.name(),
            connections: Some(registry.len_on(t) as u64),
            heartbeats: metrics.heartbeats_on(t).get(),
        });
        let gateways = registry.gateways() as u64;
        streams
            .into_iter()
            .chain([
                Transport { name: "udp", connections: None, heartbeats: metrics.heartbeats_udp.get() },
                Transport { name: "gateway", connections: Some(gateways), heartbeats: metrics.heartbeats_batch.get() },
            ])
            .collect()
    }

    fn presence(&self, users: &[u64]) -> Vec<PresenceEntry> {
        let store = &self.store;
        let node = &*self.node;
        presence_entries(Viewer::Anyone, users, &node.presence, &*node.feed, |u| store.last_seen(u).ok().flatten())
    }

    fn graph_counts(&self, user: u64) -> (usize, usize) {
        let graph = &self.node.feed.graph;
        (graph.follower_count(user), graph.following_count(user))
    }

    fn set_presence(&self, user: u64, status: Status, text: Text) -> Result<u64, (ErrorCode, &'static str)> {
        let node = &*self.node;
        let new_owner = || node.registry.fresh_id();
        match node.api_sessions.set(&node.presence, user, status, text, now_ms(), new_owner) {
            Ok((session, change)) => {
                if let Some(change) = change {
                    node.deliver(change);
                }
                Ok(session)
            }
            Err(SessionError::TooManySessions) => Err((ErrorCode::LimitExceeded, "the user has too many sessions")),
            Err(_) => Err((ErrorCode::Unavailable, "no room for another session now")),
        }
    }

    fn clear_presence(&self, user: u64) -> bool {
        let node = &*self.node;
        let Some(change) = node.api_sessions.clear(&node.presence, user, now_ms()) else { return false };
        if let Some(change) = change {
            node.deliver(change);
        }
        true
    }

    fn disconnect(&self, user: u64) -> Disconnected {
        let node = &*self.node;
        let (ended, change) = node.presence.end_user(user, now_ms());
        let connections = ended.iter().filter(|&&(session, owner)| node.registry.owns(owner, session)).count();
        for &(session, owner) in &ended {
            node.session_ended(session, owner, Interrupt::Disconnected);
        }
        if let Some(change) = change {
            node.deliver(change);
        }
        Disconnected { user: Id(user), sessions: ended.len(), connections }
    }

    fn feed(&self, user: u64, request: Message) -> Pin<Box<dyn Future<Output = Message> + Send>> {
        let shell = self.fanout.clone();
        Box::pin(async move {
            let req = request.req();
            answer(&shell, user, request).await.unwrap_or_else(|| error(req, ErrorCode::Internal, "not a feed request"))
        })
    }

    fn issue(&self, claims: &Claims) -> Vec<u8> {
        self.node.keys.issue(claims)
    }

    fn ttl_ms(&self) -> u32 {
        self.node.welcome.ttl_ms
    }
}
