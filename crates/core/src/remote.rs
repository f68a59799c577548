//! Presence of users other nodes own, as this node follows them
//! (docs/cluster.md, "Cross-node presence"), sans-IO.
//!
//! Owns which users have watchers on this node, by partition; the latest
//! view known of each of them, taken from their owner's snapshots and diffs
//! in version order; and which partitions this node must follow given a
//! [`ClusterMap`]. It must not talk to NATS, read a clock or deliver
//! anything: the daemon's shell feeds it what arrives and the time, and
//! carries out what it returns (subscriptions, deliveries to watchers).
//!
//! # Ordering
//!
//! An owner stamps each change of a user with a version that only grows
//! ([`crate::presence`], "Versions"). Diffs and snapshots are applied with
//! [`RemotePresence::apply`]: an older or equal version is dropped, a gap is
//! fine. When a partition changes owner the new owner's snapshot is
//! authoritative ([`RemotePresence::resync`]): the old owner may have died
//! with its users online at a version the new owner cannot know.

use std::collections::{HashMap, HashSet};

use heartline_proto::Status;

use crate::cluster::{partition_of, ClusterMap};
use crate::presence::View;

/// The users watched on this node, by partition, and what is known of them.
#[derive(Debug, Default)]
pub struct RemotePresence {
    partitions: u32,
    watched: HashMap<u32, HashSet<u64>>,
    views: HashMap<u64, View>,
}

impl RemotePresence {
    /// Users spread over `partitions` (the cluster's, fixed).
    pub fn new(partitions: u32) -> Self {
        Self { partitions: partitions.max(1), ..Self::default() }
    }

    /// The partition of `user`.
    pub fn partition(&self, user: u64) -> u32 {
        partition_of(user, self.partitions)
    }

    /// `user` got its first watcher on this node: the partition, when it is
    /// the first watched user of its partition (to follow it).
    pub fn watch(&mut self, user: u64) -> Option<u32> {
        let partition = self.partition(user);
        let users = self.watched.entry(partition).or_default();
        let first = users.is_empty();
        users.insert(user);
        first.then_some(partition)
    }

    /// `user` lost its last watcher on this node: its view is forgotten;
    /// the partition, when no watched user is left in it (to stop following).
    pub fn unwatch(&mut self, user: u64) -> Option<u32> {
        let partition = self.partition(user);
        self.views.remove(&user);
        let users = self.watched.get_mut(&partition)?;
        if !users.remove(&user) || !users.is_empty() {
            return None;
        }
        self.watched.remove(&partition);
        Some(partition)
    }

    pub fn is_watched(&self, user: u64) -> bool {
        self.watched.get(&self.partition(user)).is_some_and(|users| users.contains(&user))
    }

    /// The watched users of `partition`.
    pub fn watched_in(&self, partition: u32) -> Vec<u64> {
        self.watched.get(&partition).map(|users| users.iter().copied().collect()).unwrap_or_default()
    }

    /// Partitions with at least one watched user.
    pub fn watched_partitions(&self) -> Vec<u32> {
        self.watched.keys().copied().collect()
    }

    /// The latest view known of a watched user.
    pub fn view(&self, user: u64) -> Option<&View> {
        self.views.get(&user)
    }

    /// The version known here for `user`, if any: what [`Self::resync`]
    /// compares with when the answer comes.
    pub fn version_of(&self, user: u64) -> Option<u64> {
        self.views.get(&user).map(|v| v.version)
    }

    /// A diff or a snapshot from the owner: kept, and returned for delivery,
    /// when `user` is watched here and `view` is newer than what is known.
    pub fn apply(&mut self, user: u64, view: View) -> Option<View> {
        if !self.is_watched(user) {
            return None;
        }
        if self.views.get(&user).is_some_and(|known| known.version >= view.version) {
            return None;
        }
        self.views.insert(user, view.clone());
        Some(view)
    }

    /// The snapshot of a partition's new owner, received at `now_ms`: it
    /// replaces what is known whatever its version, and is returned for
    /// delivery when it differs (status, text or last seen). Watchers must
    /// see versions grow, so the version delivered is above the one known.
    /// A user the new owner does not have, though known online here (its
    /// owner died with the session), reads as last seen at `now_ms`; one
    /// known offline keeps the latest last seen of the two.
    ///
    /// `asked` is the version known here when the snapshot was asked for
    /// (`None`: nothing was known). A diff applied since then came from the
    /// new owner after the snapshot was taken, so it is newer than the
    /// snapshot and the snapshot is dropped: diffs and answers travel
    /// separately, and the answer may be read after a diff sent later.
    pub fn resync(&mut self, user: u64, mut view: View, now_ms: u64, asked: Option<u64>) -> Option<View> {
        if !self.is_watched(user) {
            return None;
        }
        let Some(known) = self.views.get(&user) else {
            if asked.is_some() {
                return None;
            }
            self.views.insert(user, view.clone());
            return Some(view);
        };
        if Some(known.version) != asked {
            return None;
        }
        if view.status == Status::Offline {
            // Gone with its owner: seen until now. Already offline: no earlier than known.
            let floor = if known.status == Status::Offline { known.last_seen_ms } else { now_ms };
            view.last_seen_ms = view.last_seen_ms.max(floor);
        }
        let same = known.status == view.status
            && known.own == view.own
            && known.text == view.text
            && known.last_seen_ms == view.last_seen_ms;
        view.version = view.version.max(known.version.saturating_add(u64::from(!same)));
        self.views.insert(user, view.clone());
        (!same).then_some(view)
    }

    /// Seeds the view of a watched user with what this node knew as its
    /// owner, before its partition moves to another node.
    pub fn seed(&mut self, user: u64, view: View) {
        if self.is_watched(user) {
            self.views.insert(user, view);
        }
    }
}

/// Whether this node (`me`) follows `partition` over the cluster: it has an
/// owner, and that is another node.
pub fn follows(map: &ClusterMap, me: &str, partition: u32) -> bool {
    map.owner(partition).is_some_and(|owner| owner.node != me)
}

/// Which of `partitions` have a different owner in `new` than in `old`.
pub fn moved(old: &ClusterMap, new: &ClusterMap, partitions: &[u32]) -> Vec<u32> {
    fn owner(map: &ClusterMap, partition: u32) -> Option<&str> {
        map.owner(partition).map(|m| m.node.as_str())
    }
    partitions.iter().copied().filter(|&p| owner(old, p) != owner(new, p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MapMember;
    use heartline_proto::Text;
    use proptest::prelude::*;

    fn view(status: Status, version: u64) -> View {
        View { status, own: status, version, last_seen_ms: version >> 16, text: Text::default() }
    }

    fn map(names: &[&str]) -> ClusterMap {
        let members = names
            .iter()
            .map(|n| MapMember {
                node: (*n).into(),
                advertise: format!("{n}:1"),
                ws: String::new(),
                tls: String::new(),
                joined: 1,
            })
            .collect();
        ClusterMap::new(1, members, 64)
    }

    #[test]
    fn partitions_are_followed_from_the_first_watch_to_the_last() {
        let mut remote = RemotePresence::new(64);
        let users: Vec<u64> = (0..1_000).filter(|&u| partition_of(u, 64) == 5).take(2).collect();
        assert_eq!(remote.watch(users[0]), Some(5));
        assert_eq!(remote.watch(users[1]), None);
        assert_eq!(remote.watch(users[1]), None, "a second watch is no news");
        assert_eq!(remote.unwatch(users[0]), None);
        assert_eq!(remote.unwatch(users[0]), None, "not watched any more");
        assert_eq!(remote.watched_in(5), vec![users[1]]);
        assert_eq!(remote.unwatch(users[1]), Some(5));
        assert!(remote.watched_partitions().is_empty());
        assert_eq!(remote.unwatch(users[1]), None);
    }

    #[test]
    fn older_and_equal_versions_are_dropped() {
        let mut remote = RemotePresence::new(64);
        assert_eq!(remote.apply(7, view(Status::Online, 10)), None, "nobody watches 7");
        remote.watch(7);
        assert_eq!(remote.apply(7, view(Status::Online, 10)), Some(view(Status::Online, 10)));
        assert_eq!(remote.apply(7, view(Status::Away, 10)), None);
        assert_eq!(remote.apply(7, view(Status::Away, 9)), None);
        assert_eq!(remote.apply(7, view(Status::Busy, 30)), Some(view(Status::Busy, 30)), "a gap is fine");
        assert_eq!(remote.view(7), Some(&view(Status::Busy, 30)));
        remote.unwatch(7);
        assert_eq!(remote.view(7), None, "forgotten with its last watcher");
    }

    #[test]
    fn a_new_owners_snapshot_wins_and_versions_still_grow() {
        let mut remote = RemotePresence::new(64);
        remote.watch(7);
        remote.apply(7, view(Status::Online, 100 << 16));
        // The owner died with 7 online; the new one never saw 7.
        let gone = View { version: 0, last_seen_ms: 0, ..View::default() };
        let asked = remote.version_of(7);
        let pushed = remote.resync(7, gone.clone(), 5_000, asked).unwrap();
        assert_eq!((pushed.status, pushed.last_seen_ms, pushed.version), (Status::Offline, 5_000, (100 << 16) + 1));
        let asked = remote.version_of(7);
        assert_eq!(remote.resync(7, gone, 5_000, asked), None, "the same again is no news");
        // 7 reconnects to the new owner: a newer version, applied as a diff.
        assert!(remote.apply(7, view(Status::Online, 6_000 << 16)).is_some());
        assert_eq!(remote.resync(8, view(Status::Online, 1), 0, None), None, "nobody watches 8");
        remote.watch(8);
        assert_eq!(remote.resync(8, view(Status::Online, 1), 0, None), Some(view(Status::Online, 1)));
    }

    #[test]
    fn a_snapshot_read_after_a_newer_diff_is_dropped() {
        let mut remote = RemotePresence::new(64);
        remote.watch(7);
        remote.apply(7, view(Status::Online, 100 << 16));
        // The new owner is asked while 7 is not on it yet...
        let asked = remote.version_of(7);
        // ...7 connects to it and its diff is read first...
        assert!(remote.apply(7, view(Status::Online, 6_000 << 16)).is_some());
        // ...then the answer, taken before: stale, dropped.
        let gone = View { version: 0, last_seen_ms: 0, ..View::default() };
        assert_eq!(remote.resync(7, gone, 5_000, asked), None);
        assert_eq!(remote.view(7).map(|v| v.status), Some(Status::Online));
    }

    #[test]
    fn following_and_moves() {
        let (abc, ab) = (map(&["a", "b", "c"]), map(&["a", "b"]));
        let all: Vec<u32> = (0..64).collect();
        let moved = moved(&abc, &ab, &all);
        assert!(!moved.is_empty());
        for p in all {
            let was_c = abc.owner(p).unwrap().node == "c";
            assert_eq!(moved.contains(&p), was_c, "only c's partitions move");
            assert_eq!(follows(&abc, "a", p), abc.owner(p).unwrap().node != "a");
        }
        assert!(!follows(&ClusterMap::new(0, Vec::new(), 64), "a", 0), "no map: everything is local");
    }

    proptest! {
        /// Whatever order diffs arrive in, what is delivered has growing
        /// versions and the last view known is the newest one.
        #[test]
        fn any_order_delivers_growing_versions(versions in prop::collection::vec(1u64..50, 1..40)) {
            let mut remote = RemotePresence::new(16);
            remote.watch(1);
            let mut delivered = Vec::new();
            for &v in &versions {
                delivered.extend(remote.apply(1, view(Status::Online, v)).map(|v| v.version));
            }
            prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(remote.view(1).map(|v| v.version), versions.iter().max().copied());
        }

        /// A partition is followed exactly while one of its users is watched.
        #[test]
        fn followed_while_watched(ops in prop::collection::vec((any::<bool>(), 0u64..40), 0..200)) {
            let mut remote = RemotePresence::new(8);
            let mut followed = HashSet::new();
            let mut watched = HashSet::new();
            for (on, user) in ops {
                let event = if on { remote.watch(user) } else { remote.unwatch(user) };
                if on { watched.insert(user); } else { watched.remove(&user); }
                match event {
                    Some(p) if on => prop_assert!(followed.insert(p)),
                    Some(p) => prop_assert!(followed.remove(&p)),
                    None => {}
                }
                let expected: HashSet<u32> = watched.iter().map(|&u| partition_of(u, 8)).collect();
                prop_assert_eq!(&followed, &expected);
            }
        }

        /// After any diffs, a resync leaves the new owner's content and a
        /// version above every one delivered before.
        #[test]
        fn resync_versions_stay_above(versions in prop::collection::vec(1u64..1_000, 1..20), offline in any::<bool>()) {
            let mut remote = RemotePresence::new(16);
            remote.watch(1);
            let mut last = 0;
            for &v in &versions {
                if let Some(d) = remote.apply(1, view(Status::Online, v)) { last = d.version; }
            }
            let status = if offline { Status::Offline } else { Status::Away };
            let asked = remote.version_of(1);
            if let Some(d) = remote.resync(1, view(status, 0), 7, asked) {
                prop_assert!(d.version > last);
                prop_assert_eq!(d.status, status);
            }
            prop_assert_eq!(remote.view(1).map(|v| v.status), Some(status));
        }
    }
}
