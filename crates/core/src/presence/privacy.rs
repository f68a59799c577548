//! The one place that decides what a viewer may see of a user's presence.
//!
//! Invisible users read as offline to everyone but themselves, and two users
//! where one blocks the other read as offline to each other, with no last
//! seen, text or version that could leak activity. Owns no state of its own:
//! blocks come from a [`BlockList`] (the feed's social graph).

#[cfg(test)]
use std::collections::HashSet;

#[cfg(test)]
use dashmap::DashMap;

use heartline_proto::{PresenceEntry, Status, Text};

/// Who is looking. Gateways watch and query for many users at once, so they
/// see what an unrelated user would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewer {
    User(u64),
    Anyone,
}

/// Which users block which.
pub trait BlockList: Send + Sync {
    fn blocks(&self, blocker: u64, blocked: u64) -> bool;
}

/// An in-memory block list, for tests of the policy point without a graph.
#[cfg(test)]
#[derive(Default)]
pub(super) struct MemoryBlocks(DashMap<u64, HashSet<u64>>);

#[cfg(test)]
impl MemoryBlocks {
    pub(super) fn block(&self, blocker: u64, blocked: u64) {
        self.0.entry(blocker).or_default().insert(blocked);
    }

    pub(super) fn unblock(&self, blocker: u64, blocked: u64) {
        if let Some(mut set) = self.0.get_mut(&blocker) {
            set.remove(&blocked);
        }
    }
}

#[cfg(test)]
impl BlockList for MemoryBlocks {
    fn blocks(&self, blocker: u64, blocked: u64) -> bool {
        self.0.get(&blocker).is_some_and(|set| set.contains(&blocked))
    }
}

/// A user's presence before privacy is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// What others see.
    pub status: Status,
    /// What the user sees of themself (may be invisible).
    pub own: Status,
    pub version: u64,
    pub last_seen_ms: u64,
    pub text: Text,
}

impl View {
    /// A user with no record in memory, last seen at `last_seen_ms` (0:
    /// never), at the version that moment gives.
    pub fn offline(last_seen_ms: u64) -> Self {
        Self {
            status: Status::Offline,
            own: Status::Offline,
            version: last_seen_ms << 16,
            last_seen_ms,
            ..Self::default()
        }
    }

    /// The view a [`PresenceEntry`] carries between nodes (as others see
    /// the user: its own status is the same).
    pub fn from_entry(entry: &PresenceEntry) -> Self {
        Self {
            status: entry.status,
            own: entry.status,
            version: entry.version,
            last_seen_ms: entry.last_seen_ms,
            text: entry.text.clone(),
        }
    }
}

/// Whether `viewer` may see anything of `user` at all.
pub fn blocked(viewer: Viewer, user: u64, blocks: &dyn BlockList) -> bool {
    match viewer {
        Viewer::User(v) => v != user && (blocks.blocks(user, v) || blocks.blocks(v, user)),
        Viewer::Anyone => false,
    }
}

/// The entry `viewer` gets for `user`.
pub fn entry_for(viewer: Viewer, user: u64, view: &View, blocks: &dyn BlockList) -> PresenceEntry {
    if blocked(viewer, user, blocks) {
        return PresenceEntry { user, status: Status::Offline, version: 0, last_seen_ms: 0, text: Text::default() };
    }
    let status = if viewer == Viewer::User(user) { view.own } else { view.status };
    let text = if status == Status::Offline { Text::default() } else { view.text.clone() };
    PresenceEntry { user, status, version: view.version, last_seen_ms: view.last_seen_ms, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: Status, own: Status) -> View {
        View { status, own, version: 9, last_seen_ms: 1000, text: Text::from("hi") }
    }

    #[test]
    fn invisible_reads_offline_to_others_only() {
        let blocks = MemoryBlocks::default();
        let v = view(Status::Offline, Status::Invisible);
        let other = entry_for(Viewer::User(2), 1, &v, &blocks);
        assert_eq!((other.status, other.text.as_str()), (Status::Offline, ""));
        assert_eq!(entry_for(Viewer::User(1), 1, &v, &blocks).status, Status::Invisible);
        assert_eq!(entry_for(Viewer::Anyone, 1, &v, &blocks).status, Status::Offline);
    }

    #[test]
    fn blocks_hide_everything_both_ways() {
        let blocks = MemoryBlocks::default();
        blocks.block(1, 2);
        let v = view(Status::Online, Status::Online);
        for (viewer, user) in [(2, 1), (1, 2)] {
            let e = entry_for(Viewer::User(viewer), user, &v, &blocks);
            assert_eq!((e.status, e.version, e.last_seen_ms), (Status::Offline, 0, 0));
        }
        assert_eq!(entry_for(Viewer::User(3), 1, &v, &blocks).status, Status::Online);
        blocks.unblock(1, 2);
        assert_eq!(entry_for(Viewer::User(2), 1, &v, &blocks).status, Status::Online);
    }
}
