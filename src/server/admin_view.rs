//! The admin listener's read-only view of the running server
//! ([`crate::admin::Backend`]): a snapshot of gauges and lookups through the
//! same policy point as QUERY.
//!
//! Owns nothing but the list of transports the dashboard shows (a new
//! transport adds its entry in [`AdminView::transports`]); it must not
//! change state or expose the handles it reads.

use std::sync::Arc;

use heartline_core::conn::presence_entries;
use heartline_core::presence::Viewer;
use heartline_proto::PresenceEntry;

use super::feed::FeedShell;
use super::net::Admission;
use super::node::Node;
use crate::admin::{Backend, Gauges, Queues, Transport};
use crate::metrics::{self, Metrics};
use crate::store::Store;

pub(super) struct AdminView {
    pub(super) node: Arc<Node>,
    pub(super) fanout: Arc<FeedShell>,
    pub(super) store: Store,
    pub(super) admission: Arc<Admission>,
}

impl Backend for AdminView {
    fn metrics(&self) -> &Metrics {
        &self.node.metrics
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
}
