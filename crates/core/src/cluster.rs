//! Cluster membership and ownership, sans-IO: which nodes are members,
//! which partition a user belongs to, and which member owns each partition.
//!
//! Owns the hash functions (stable across platforms and releases: a user's
//! partition and a partition's owner are the same on every node), the
//! rendezvous (highest-random-weight) assignment of partitions to members,
//! the versioned [`ClusterMap`], and the [`Membership`] state machine that
//! turns the events of the membership bucket into maps. It must not talk to
//! NATS, read a clock or decide anything by itself that the bucket has not
//! said: the daemon's shell feeds it the bucket's entries and the time, and
//! carries out what it returns (deleting members that stopped refreshing).
//! JetStream's key-value bucket is the source of truth; nothing here is a
//! consensus of its own.
//!
//! # Versions
//!
//! Every member's key holds a [`Member`] whose `joined` is the bucket
//! revision of the first put of that incarnation. The map's version is the
//! highest of: the `joined` revision of every incarnation seen, and the
//! revision of every delete seen. A node that starts late reads each key's
//! last entry: a member's latest put, or the marker its delete left, which
//! the bucket keeps for good (it has no maximum age) — and that is enough:
//! an incarnation's join is older than its delete, a delete older than the
//! next join of the key. So every node that has read the bucket to the same
//! revision holds the same members at the same version, however late it
//! started; the version only grows, and never names two member sets.
//!
//! A member that stops refreshing is not dropped on a node's own clock:
//! [`Membership::stale`] names it, the shell deletes its key (with the
//! revision expected, so only one delete lands), and every node drops it
//! when that delete arrives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Partitions of a cluster unless configured: fixed for a cluster's life.
pub const DEFAULT_PARTITIONS: u32 = 1_024;
/// Most partitions a cluster may have.
pub const MAX_PARTITIONS: u32 = route::MAX_PARTITIONS;
/// Longest member name, in bytes (a key of the bucket: `[A-Za-z0-9_-]`).
pub const MAX_NAME: usize = route::MAX_NODE;
/// Longest member value accepted from the bucket, in bytes.
pub const MAX_VALUE: usize = 1_024;

// The hashes are the protocol's (SPEC.md §14.2): gateways compute them too.
pub use heartline_proto::route::partition_of;
use heartline_proto::route::{self, name_hash, weight};

/// Whether `name` may name a member: 1 to [`MAX_NAME`] bytes of
/// `[A-Za-z0-9_-]` (a key of the bucket, one subject token).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One member, as its key in the bucket holds it (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name, also its key.
    pub node: String,
    /// Where clients are sent for the partitions it owns (`host:port`).
    pub advertise: String,
    /// The WebSocket URL clients are sent to (`ws://…` or `wss://…`); empty
    /// when it has none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ws: String,
    /// Where TLS clients are sent (`host:port` of its TCP+TLS listener);
    /// empty when it has none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls: String,
    /// The bucket revision of this incarnation's first put; absent in that
    /// first put itself (its own revision is meant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<u64>,
}

/// Why a member's value was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemberError {
    #[error("the member's value is {0} bytes, over {MAX_VALUE}")]
    TooLong(usize),
    #[error("the member's value is not the JSON expected")]
    Json,
    #[error("the member's name does not match its key, or its address is empty or over 255 bytes")]
    Name,
}

impl Member {
    /// The value to put in the bucket.
    pub fn to_value(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the value of `key`, checking its size before parsing.
    pub fn from_value(key: &str, value: &[u8]) -> Result<Self, MemberError> {
        if value.len() > MAX_VALUE {
            return Err(MemberError::TooLong(value.len()));
        }
        let member: Member = serde_json::from_slice(value).map_err(|_| MemberError::Json)?;
        let addr = |a: &str| a.len() <= route::MAX_ADDR;
        if member.node != key
            || !valid_name(key)
            || member.advertise.is_empty()
            || !addr(&member.advertise)
            || !addr(&member.ws)
            || !addr(&member.tls)
        {
            return Err(MemberError::Name);
        }
        Ok(member)
    }
}

/// A member in a map: its name, address and the revision it joined at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapMember {
    pub node: String,
    pub advertise: String,
    pub ws: String,
    pub tls: String,
    pub joined: u64,
}

impl MapMember {
    /// The member as REDIRECT and CLUSTER_MAP_REPLY carry it (SPEC.md §14.3).
    pub fn wire(&self) -> heartline_proto::MapMember {
        heartline_proto::MapMember {
            node: self.node.as_str().into(),
            addr: self.advertise.as_str().into(),
            ws: self.ws.as_str().into(),
            tls: self.tls.as_str().into(),
        }
    }
}

/// Who owns each partition, at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterMap {
    /// Greater means newer; equal on every node that saw the same members.
    pub version: u64,
    /// Sorted by name.
    pub members: Vec<MapMember>,
    /// Per partition, the index in `members` of its owner; empty when
    /// there are no members.
    owners: Vec<u16>,
    partitions: u32,
}

impl ClusterMap {
    /// Assigns `partitions` (1..=[`MAX_PARTITIONS`]) among `members` by
    /// rendezvous hashing: each partition to the member of highest weight,
    /// ties to the smaller name.
    pub fn new(version: u64, mut members: Vec<MapMember>, partitions: u32) -> Self {
        let partitions = partitions.clamp(1, MAX_PARTITIONS);
        members.sort_by(|a, b| a.node.cmp(&b.node));
        members.dedup_by(|a, b| a.node == b.node);
        // Indices are u16: past 65,536 members the rest own nothing.
        members.truncate(usize::from(u16::MAX) + 1);
        let hashes: Vec<u64> = members.iter().map(|m| name_hash(&m.node)).collect();
        let owners = if members.is_empty() {
            Vec::new()
        } else {
            (0..partitions)
                .map(|p| {
                    let mut best = 0;
                    for (i, h) in hashes.iter().enumerate().skip(1) {
                        // Strictly greater: on a tie the earlier (smaller) name stays.
                        if weight(*h, p) > weight(hashes[best], p) {
                            best = i;
                        }
                    }
                    best as u16
                })
                .collect()
        };
        Self { version, members, owners, partitions }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The member owning `partition`; `None` without members.
    pub fn owner(&self, partition: u32) -> Option<&MapMember> {
        let index = *self.owners.get(usize::try_from(partition).ok()?)?;
        self.members.get(usize::from(index))
    }

    /// The member owning `user`'s partition.
    pub fn owner_of_user(&self, user: u64) -> Option<&MapMember> {
        self.owner(partition_of(user, self.partitions))
    }

    /// How many partitions each member owns, in the order of `members`.
    pub fn owned_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.members.len()];
        for &i in &self.owners {
            counts[usize::from(i)] += 1;
        }
        counts
    }

    /// How many partitions `node` owns (0 when not a member).
    pub fn owned_by(&self, node: &str) -> u32 {
        match self.members.iter().position(|m| m.node == node) {
            Some(i) => self.owners.iter().filter(|&&o| usize::from(o) == i).count() as u32,
            None => 0,
        }
    }
}

/// One event of the membership bucket, as the shell reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A put of `key` at `revision`.
    Put { key: &'a str, revision: u64, value: &'a [u8] },
    /// A delete (or purge) of `key` at `revision`.
    Delete { key: &'a str, revision: u64 },
}

/// A member as the state machine tracks it.
#[derive(Clone, Debug)]
struct Tracked {
    /// Its latest value, `joined` filled in.
    member: Member,
    joined: u64,
    /// The revision of its latest put.
    revision: u64,
    /// When that put was seen here (ms; the caller's clock).
    seen_ms: u64,
}

/// The members the bucket holds, and the map they make.
#[derive(Clone, Debug)]
pub struct Membership {
    members: BTreeMap<String, Tracked>,
    version: u64,
    partitions: u32,
    ttl_ms: u64,
}

impl Membership {
    /// `partitions` for the cluster's maps; a member not refreshed for
    /// `ttl_ms` is [`stale`](Self::stale).
    pub fn new(partitions: u32, ttl_ms: u64) -> Self {
        Self { members: BTreeMap::new(), version: 0, partitions: partitions.clamp(1, MAX_PARTITIONS), ttl_ms }
    }

    /// Applies one event seen at `now_ms`: whether the members changed. A
    /// put whose value is not a member's is ignored (and reported).
    pub fn apply(&mut self, event: Event<'_>, now_ms: u64) -> Result<bool, MemberError> {
        match event {
            Event::Put { key, revision, value } => {
                let mut member = Member::from_value(key, value)?;
                let joined = *member.joined.get_or_insert(revision);
                let changed = match self.members.get_mut(key) {
                    Some(t) if t.joined == joined => {
                        t.revision = t.revision.max(revision);
                        t.seen_ms = now_ms;
                        // A refresh changes nothing, unless its addresses changed.
                        t.member != member && {
                            t.member = member;
                            true
                        }
                    }
                    _ => {
                        self.members.insert(key.to_owned(), Tracked { member, joined, revision, seen_ms: now_ms });
                        true
                    }
                };
                self.version = self.version.max(joined);
                Ok(changed)
            }
            Event::Delete { key, revision } => {
                self.version = self.version.max(revision);
                Ok(self.members.remove(key).is_some())
            }
        }
    }

    /// Members other than `me` not refreshed within the TTL, with the
    /// revision their delete must expect.
    pub fn stale(&self, me: &str, now_ms: u64) -> Vec<(String, u64)> {
        self.members
            .iter()
            .filter(|(name, t)| name.as_str() != me && now_ms.saturating_sub(t.seen_ms) > self.ttl_ms)
            .map(|(name, t)| (name.clone(), t.revision))
            .collect()
    }

    /// Whether `node` is a member, and the revision it joined at.
    pub fn joined(&self, node: &str) -> Option<u64> {
        self.members.get(node).map(|t| t.joined)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The map of the current members.
    pub fn map(&self) -> ClusterMap {
        let members = self
            .members
            .iter()
            .map(|(node, t)| MapMember {
                node: node.clone(),
                advertise: t.member.advertise.clone(),
                ws: t.member.ws.clone(),
                tls: t.member.tls.clone(),
                joined: t.joined,
            })
            .collect();
        ClusterMap::new(self.version, members, self.partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartline_proto::route::mix;
    use proptest::prelude::*;

    fn member(node: &str) -> MapMember {
        MapMember {
            node: node.into(),
            advertise: format!("{node}:7400"),
            ws: String::new(),
            tls: String::new(),
            joined: 1,
        }
    }

    fn map(names: &[String], partitions: u32) -> ClusterMap {
        ClusterMap::new(1, names.iter().map(|n| member(n)).collect(), partitions)
    }

    fn put<'a>(key: &'a str, revision: u64, value: &'a [u8]) -> Event<'a> {
        Event::Put { key, revision, value }
    }

    #[test]
    fn hashes_are_pinned() {
        // Other implementations (SDKs, gateways) must compute the same.
        let firsts: Vec<u32> = (0..8).map(|u| partition_of(u, 1024)).collect();
        assert_eq!(firsts, [431, 32, 718, 193, 570, 610, 33, 477]);
        let abc = ClusterMap::new(0, ["a", "b", "c"].map(member).to_vec(), 1024);
        let owners: String = (0..12).map(|p| abc.owner(p).unwrap().node.as_str()).collect();
        assert_eq!(owners, "cccbbabbbbba");
        assert_eq!(name_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(name_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(mix(0), 0);
        assert_eq!(partition_of(42, 1), 0);
        assert_eq!(partition_of(42, 0), 0, "no partitions reads as one");
    }

    #[test]
    fn no_members_no_owner() {
        let map = ClusterMap::new(0, Vec::new(), 16);
        assert_eq!(map.owner(0), None);
        assert_eq!(map.owned_counts(), Vec::<u32>::new());
        assert_eq!(map.owner(16), None);
    }

    #[test]
    fn names_and_values_are_checked() {
        assert!(valid_name("node-1_a"));
        assert!(!valid_name("") && !valid_name("a.b") && !valid_name(&"a".repeat(65)));
        let value = Member {
            node: "a".into(),
            advertise: "h:1".into(),
            ws: String::new(),
            tls: String::new(),
            joined: Some(3),
        }
        .to_value();
        assert_eq!(Member::from_value("a", &value).unwrap().joined, Some(3));
        assert_eq!(Member::from_value("b", &value), Err(MemberError::Name));
        assert_eq!(Member::from_value("a", b"{"), Err(MemberError::Json));
        assert_eq!(Member::from_value("a", &[b' '; 2_000]), Err(MemberError::TooLong(2_000)));
    }

    #[test]
    fn joins_refreshes_deletes_and_versions() {
        let mut m = Membership::new(64, 5_000);
        let a =
            Member { node: "a".into(), advertise: "a:1".into(), ws: String::new(), tls: String::new(), joined: None }
                .to_value();
        assert_eq!(m.apply(put("a", 3, &a), 0), Ok(true));
        assert_eq!((m.version(), m.joined("a")), (3, Some(3)));
        let refresh = Member {
            node: "a".into(),
            advertise: "a:1".into(),
            ws: String::new(),
            tls: String::new(),
            joined: Some(3),
        }
        .to_value();
        assert_eq!(m.apply(put("a", 5, &refresh), 1_000), Ok(false), "a refresh changes nothing");
        assert_eq!(m.version(), 3);
        let b =
            Member { node: "b".into(), advertise: "b:1".into(), ws: String::new(), tls: String::new(), joined: None }
                .to_value();
        assert_eq!(m.apply(put("b", 6, &b), 1_000), Ok(true));
        assert_eq!(m.version(), 6);
        assert!(m.stale("a", 6_000).is_empty());
        assert_eq!(m.stale("a", 6_001), vec![("b".into(), 6)]);
        assert_eq!(m.stale("b", 6_001), vec![("a".into(), 5)]);
        assert_eq!(m.apply(Event::Delete { key: "b", revision: 9 }, 7_000), Ok(true));
        assert_eq!((m.version(), m.map().members.len()), (9, 1));
        // A restart is a new incarnation: a new version.
        assert_eq!(m.apply(put("a", 10, &a), 7_000), Ok(true));
        assert_eq!((m.version(), m.joined("a")), (10, Some(10)));
        assert!(m.apply(put("a", 11, b"junk"), 7_000).is_err());
        assert_eq!(m.map().owned_by("a"), 64);
    }

    fn names() -> impl Strategy<Value = Vec<String>> {
        prop::collection::btree_set("[a-z0-9-]{1,12}", 1..12).prop_map(|s| s.into_iter().collect())
    }

    /// What happens to one of four member keys: a new incarnation joins, the
    /// current one refreshes, or the key is deleted.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Join(usize),
        Refresh(usize),
        Delete(usize),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            (0..4usize).prop_map(Step::Join),
            (0..4usize).prop_map(Step::Refresh),
            (0..4usize).prop_map(Step::Delete),
        ];
        prop::collection::vec(step, 1..40)
    }

    /// The bucket's history for `steps`: every event, in revision order.
    fn history(steps: &[Step]) -> Vec<(String, u64, Option<Vec<u8>>)> {
        let mut joined: [Option<u64>; 4] = [None; 4];
        let mut out = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let revision = i as u64 + 1;
            let (key, value) = match *step {
                Step::Join(k) => {
                    joined[k] = Some(revision);
                    (k, Some(None))
                }
                Step::Refresh(k) => match joined[k] {
                    Some(at) => (k, Some(Some(at))),
                    None => continue,
                },
                Step::Delete(k) => {
                    joined[k] = None;
                    (k, None)
                }
            };
            let node = format!("n{key}");
            let value = value.map(|joined| {
                Member {
                    node: node.clone(),
                    advertise: format!("{node}:1"),
                    ws: String::new(),
                    tls: String::new(),
                    joined,
                }
                .to_value()
            });
            out.push((node, revision, value));
        }
        out
    }

    fn watch<'a>(events: impl IntoIterator<Item = &'a (String, u64, Option<Vec<u8>>)>) -> Membership {
        let mut m = Membership::new(64, 5_000);
        for (key, revision, value) in events {
            let event = match value {
                Some(value) => put(key, *revision, value),
                None => Event::Delete { key, revision: *revision },
            };
            m.apply(event, 0).unwrap();
        }
        m
    }

    proptest! {
        /// A node that starts late reads only each key's last entry (a
        /// member's latest put, or the marker of its delete, which the
        /// bucket keeps): it computes the very map of a node that saw every
        /// event, version included. And along the history, a version never
        /// names two different member sets.
        #[test]
        fn a_late_watcher_computes_the_same_map_and_versions_name_one_set(steps in steps()) {
            let events = history(&steps);
            let mut seen: std::collections::HashMap<u64, ClusterMap> = std::collections::HashMap::new();
            for end in 0..=events.len() {
                let all = watch(&events[..end]);
                let mut last: BTreeMap<&str, &(String, u64, Option<Vec<u8>>)> = BTreeMap::new();
                for event in &events[..end] {
                    last.insert(&event.0, event);
                }
                let mut latest: Vec<_> = last.into_values().collect();
                latest.sort_by_key(|e| e.1);
                prop_assert_eq!(all.map(), watch(latest).map());
                let map = all.map();
                if let Some(before) = seen.insert(map.version, map.clone()) {
                    prop_assert_eq!(before, map);
                }
            }
        }

        #[test]
        fn every_partition_has_one_owner_among_the_members(names in names(), partitions in 1u32..2_048) {
            let map = map(&names, partitions);
            let counts = map.owned_counts();
            prop_assert_eq!(counts.iter().sum::<u32>(), partitions);
            for p in 0..partitions {
                let owner = map.owner(p).unwrap();
                prop_assert!(names.contains(&owner.node));
            }
            prop_assert_eq!(map.owner(partitions), None);
        }

        #[test]
        fn order_of_members_does_not_matter(mut names in names()) {
            let before = map(&names, 256);
            names.reverse();
            prop_assert_eq!(before, map(&names, 256));
        }

        #[test]
        fn removing_a_member_moves_only_its_partitions(names in names(), pick in any::<prop::sample::Index>()) {
            prop_assume!(names.len() >= 2);
            let gone = pick.index(names.len());
            let before = map(&names, 1_024);
            let rest: Vec<String> = names.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, n)| n.clone()).collect();
            let after = map(&rest, 1_024);
            for p in 0..1_024 {
                let (was, is) = (&before.owner(p).unwrap().node, &after.owner(p).unwrap().node);
                if *was != names[gone] {
                    prop_assert_eq!(was, is);
                } else {
                    prop_assert_ne!(is, &names[gone]);
                }
            }
        }

        #[test]
        fn adding_a_member_moves_about_one_nth(names in names(), new in "[A-Z]{1,8}") {
            let before = map(&names, 1_024);
            let mut more = names.clone();
            more.push(new.clone());
            let after = map(&more, 1_024);
            let mut moved = 0u32;
            for p in 0..1_024 {
                let (was, is) = (&before.owner(p).unwrap().node, &after.owner(p).unwrap().node);
                if was != is {
                    prop_assert_eq!(is, &new, "a partition moved, but not to the new member");
                    moved += 1;
                }
            }
            // Expected 1024/n with n = members after; within ±50% (≥ 4.6σ at n = 12).
            let expected = 1_024.0 / more.len() as f64;
            prop_assert!((moved as f64) > expected * 0.5 && (moved as f64) < expected * 1.5,
                "{} moved, expected about {}", moved, expected);
        }
    }
}
