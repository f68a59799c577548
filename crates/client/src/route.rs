//! The cluster map as a gateway reads it (SPEC.md §14): the members, and
//! which of them owns a user.
//!
//! Owns [`ClusterMap`], built from a CLUSTER_MAP_REPLY, and the owner
//! lookup by the protocol's functions (`heartline_proto::route`). It must
//! not fetch the map itself nor decide when to: [`Client::cluster_map`] and
//! [`wire::Connection::cluster_map`] ask, the gateway decides (after a
//! MOVED, SPEC.md §14.5).
//!
//! [`Client::cluster_map`]: crate::Client::cluster_map
//! [`wire::Connection::cluster_map`]: crate::wire::Connection::cluster_map

use heartline_proto::route;
use heartline_proto::{MapMember, Message};

/// Who owns which users, at one version of the cluster's map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterMap {
    /// Greater is newer; 0 from a server alone.
    pub version: u64,
    pub partitions: u32,
    /// By name; one (the server itself) from a server alone.
    pub members: Vec<MapMember>,
}

impl ClusterMap {
    /// The map a CLUSTER_MAP_REPLY carries; any other message is given back.
    pub fn from_reply(msg: Message) -> Result<Self, Message> {
        match msg {
            Message::ClusterMapReply { version, partitions, members, .. } => Ok(Self { version, partitions, members }),
            other => Err(other),
        }
    }

    /// The member owning `user`; `None` when the map has no members.
    ///
    /// ```
    /// use heartline_client::route::ClusterMap;
    /// use heartline_client::proto::MapMember;
    /// let member =
    ///     |n: &str| MapMember { node: n.into(), addr: format!("{n}:7400").into(), ws: "".into(), tls: "".into() };
    /// let map = ClusterMap { version: 3, partitions: 1024, members: vec![member("hl-1"), member("hl-2"), member("hl-3")] };
    /// // SPEC.md §14.2's worked example: user 1 is hl-3's, user 3 hl-2's, user 4 hl-1's.
    /// assert_eq!(map.owner_of(1).unwrap().node.as_str(), "hl-3");
    /// assert_eq!(map.owner_of(3).unwrap().node.as_str(), "hl-2");
    /// assert_eq!(map.owner_of(4).unwrap().addr.as_str(), "hl-1:7400");
    /// ```
    pub fn owner_of(&self, user: u64) -> Option<&MapMember> {
        let names = self.members.iter().map(|m| m.node.as_str());
        route::owner_of(names, user, self.partitions).and_then(|i| self.members.get(i))
    }

    /// The partition of `user` in this map.
    pub fn partition_of(&self, user: u64) -> u32 {
        route::partition_of(user, self.partitions)
    }
}
