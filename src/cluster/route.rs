//! Routing by the latest cluster map: who owns a user when it is not this
//! node (for REDIRECT and MOVED), and the map a gateway asks for
//! (CLUSTER_MAP), SPEC.md §14.
//!
//! Owns only the translation of the shell's latest [`ClusterMap`](cluster::ClusterMap) into the
//! connection machine's terms; the decision to redirect or refuse is the
//! machine's (`heartline_core::conn`). It must not talk to NATS nor block:
//! it reads one `Arc` of the map under a read lock held for no `.await`.

use heartline_core::cluster;
use heartline_core::conn::{Owner, RouteMap};

use super::Cluster;

impl Cluster {
    /// The member owning `user` when it is another node; `None` when this
    /// node owns it or before the first map (a node serves its clients
    /// rather than send them nowhere).
    pub fn owner_of(&self, user: u64) -> Option<Owner> {
        let map = self.map();
        let owner = map.owner_of_user(user).filter(|m| m.node != self.shared.node)?;
        Some(Owner { version: map.version, member: owner.wire() })
    }

    /// The latest map for CLUSTER_MAP_REPLY.
    pub fn route_map(&self) -> RouteMap {
        let map = self.map();
        RouteMap {
            version: map.version,
            partitions: map.partitions(),
            members: map.members.iter().map(cluster::MapMember::wire).collect(),
        }
    }
}
