//! The feed's writes as entries of a replicated log (a cluster's feed
//! stream, docs/cluster.md "The feed"): their encoding, the post-id tag a
//! node puts in its ids, and what a graph change does to a given graph.
//!
//! Sans-IO: it must not publish, consume or store anything. The cluster
//! shell publishes [`Write::encode`]d entries and hands every node's applier
//! [`Write::decode`]d ones, in log order; the same rules
//! ([`Feed::graph_effect`]) decide on every node, so nodes that applied the
//! same entries hold the same graph.
//!
//! # Encoding (version 1)
//!
//! `1 u8 ‖ actor varint ‖ message`, where the message is the wire protocol's
//! own encoding (SPEC.md, a frame without its length prefix): ITEM_PUSH for a
//! post (its item: id, author, kind, payload; the actor is its author), DELETE
//! for a delete (req 0, the post id), GRAPH for a graph change (req 0, the
//! operation and the other user). Any other message, a wrong version, or a
//! post whose author is not the actor is refused as [`LogError`].

use bytes::{BufMut, Bytes, BytesMut};
use heartline_proto::{varint, DecodeError, GraphOp, Item, Message};

use super::{Feed, GraphError};

/// The first byte of every entry.
pub const LOG_V1: u8 = 1;

/// One write to the feed, as the log carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// A new post; its id is final (assigned by the node that took it).
    Post(Item),
    /// `author` deletes their post `post`.
    Delete { author: u64, post: u64 },
    /// `user` follows, unfollows, blocks or unblocks `other`.
    Graph { user: u64, op: GraphOp, other: u64 },
}

/// Why an entry of the log is not a write.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LogError {
    #[error("an empty log entry")]
    Empty,
    #[error("log entry version {0} is not known")]
    Version(u8),
    #[error("a log entry's actor is malformed")]
    Actor,
    #[error("a log entry's message is malformed: {0}")]
    Message(#[from] DecodeError),
    #[error("a log entry holds a message of type {0}, not a feed write")]
    NotAWrite(u8),
    #[error("a logged post's author is not its actor")]
    Author,
}

impl Write {
    /// Who made the write.
    pub fn actor(&self) -> u64 {
        match self {
            Write::Post(item) => item.author,
            Write::Delete { author, .. } => *author,
            Write::Graph { user, .. } => *user,
        }
    }

    /// The entry's bytes.
    pub fn encode(&self) -> Bytes {
        let message = match self {
            Write::Post(item) => Message::ItemPush(item.clone()),
            Write::Delete { post, .. } => Message::Delete { req: 0, post: *post },
            Write::Graph { op, other, .. } => Message::Graph { req: 0, op: *op, user: *other },
        };
        let payload = if let Write::Post(item) = self { item.payload.len() } else { 0 };
        let mut out = BytesMut::with_capacity(32 + payload);
        out.put_u8(LOG_V1);
        varint::put(&mut out, self.actor());
        message.encode(&mut out);
        out.freeze()
    }

    /// The write an entry holds.
    pub fn decode(entry: Bytes) -> Result<Write, LogError> {
        match entry.first() {
            None => return Err(LogError::Empty),
            Some(&LOG_V1) => {}
            Some(&other) => return Err(LogError::Version(other)),
        }
        let (actor, used) = varint::get(&entry[1..]).map_err(|_| LogError::Actor)?;
        let message = Message::decode(entry.slice(1 + used..))?;
        match message {
            Message::ItemPush(item) if item.author == actor => Ok(Write::Post(item)),
            Message::ItemPush(_) => Err(LogError::Author),
            Message::Delete { post, .. } => Ok(Write::Delete { author: actor, post }),
            Message::Graph { op, user, .. } => Ok(Write::Graph { user: actor, op, other: user }),
            other => Err(LogError::NotAWrite(other.type_code())),
        }
    }
}

/// What a graph change does to a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphEffect {
    /// Write it and apply it.
    Apply,
    /// Accepted with no effect (a self-follow, a follow across a block:
    /// SPEC.md §10.4): nothing is written.
    Nothing,
    /// Refused: following too many users.
    TooMany,
}

impl Feed {
    /// What `user` doing `op` on `other` does to this feed's graph now. The
    /// node taking the request and every node applying the log entry ask
    /// this; in log order they all answer the same.
    pub fn graph_effect(&self, user: u64, op: GraphOp, other: u64) -> GraphEffect {
        if user == other {
            return GraphEffect::Nothing;
        }
        if op == GraphOp::Follow && !self.graph.follows(user, other) {
            if self.graph.following_count(user) >= self.config.max_following {
                return GraphEffect::TooMany;
            }
            if self.graph.blocked_either(user, other) {
                return GraphEffect::Nothing;
            }
        }
        GraphEffect::Apply
    }

    /// Applies a graph change to memory (after [`Feed::graph_effect`] said
    /// [`GraphEffect::Apply`] and it was stored).
    pub fn apply_graph(&self, user: u64, op: GraphOp, other: u64) -> Result<(), GraphError> {
        match op {
            GraphOp::Follow => return self.follow(user, other).map(drop),
            GraphOp::Unfollow => self.unfollow(user, other),
            GraphOp::Block => self.block(user, other),
            GraphOp::Unblock => self.unblock(user, other),
        };
        Ok(())
    }

    /// Whether the post `id` of `author` is already in memory, or below what
    /// memory holds of them: applying it again changes nothing but would
    /// push it to live readers twice.
    pub fn has_post(&self, author: u64, id: u64) -> bool {
        self.outboxes.get(&author).is_some_and(|outbox| {
            id <= outbox.complete_above || outbox.items.binary_search_by_key(&id, |p| p.id).is_ok()
        })
    }
}

/// The node tag (0..=[`super::MAX_NODE`]) in the post ids of a cluster
/// node: `feed.node` when set (non-zero), else from the node's name (FNV-1a,
/// folded). Two nodes may draw the same tag from their names; the feed
/// stream's duplicate window catches the rare equal id that follows, and
/// the node takes a new one (docs/cluster.md, "Post ids").
pub fn node_tag(configured: u16, name: &str) -> u16 {
    if configured != 0 {
        return configured.min(super::MAX_NODE);
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let folded = (hash ^ (hash >> 32) ^ (hash >> 16)) as u16;
    folded & super::MAX_NODE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::FeedConfig;
    use proptest::prelude::*;

    fn post(id: u64, author: u64) -> Write {
        Write::Post(Item { post: id, author, kind: 2, payload: Bytes::from_static(b"hello") })
    }

    #[test]
    fn each_write_round_trips_and_is_compact() {
        let writes = [
            post(1 << 40, 7),
            Write::Delete { author: 7, post: 1 << 40 },
            Write::Graph { user: 1, op: GraphOp::Follow, other: 2 },
            Write::Graph { user: u64::MAX, op: GraphOp::Unblock, other: 0 },
        ];
        for write in writes {
            let entry = write.encode();
            assert_eq!(entry[0], LOG_V1);
            assert_eq!(Write::decode(entry.clone()), Ok(write.clone()), "{entry:?}");
        }
        // version, actor, type, id, author, kind, length, payload
        assert!(post(1 << 40, 7).encode().len() <= 1 + 1 + 1 + 8 + 1 + 1 + 1 + 5);
    }

    #[test]
    fn what_is_not_a_write_is_refused() {
        assert_eq!(Write::decode(Bytes::new()), Err(LogError::Empty));
        assert_eq!(Write::decode(Bytes::from_static(&[2, 1])), Err(LogError::Version(2)));
        assert_eq!(Write::decode(Bytes::from_static(&[1, 0x80])), Err(LogError::Actor));
        let mut ping = BytesMut::from(&[LOG_V1, 5][..]);
        Message::Ok { req: 1 }.encode(&mut ping);
        assert!(matches!(Write::decode(ping.freeze()), Err(LogError::NotAWrite(_))));
        // A post of 7 said to be made by 8.
        let mut entry = BytesMut::from(&post(9, 7).encode()[..]);
        entry[1] = 8;
        assert_eq!(Write::decode(entry.freeze()), Err(LogError::Author));
        let truncated = post(9, 7).encode().slice(..6);
        assert!(matches!(Write::decode(truncated), Err(LogError::Message(_))));
    }

    proptest! {
        #[test]
        fn any_entry_decodes_or_is_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Write::decode(Bytes::from(bytes));
        }

        #[test]
        fn posts_round_trip(id: u64, author: u64, kind: u8, payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let write = Write::Post(Item { post: id, author, kind, payload: Bytes::from(payload) });
            prop_assert_eq!(Write::decode(write.encode()), Ok(write));
        }
    }

    #[test]
    fn graph_effects_follow_the_single_node_rules() {
        let feed = Feed::new(FeedConfig { max_following: 1, ..FeedConfig::default() }, 0);
        assert_eq!(feed.graph_effect(1, GraphOp::Follow, 1), GraphEffect::Nothing);
        assert_eq!(feed.graph_effect(1, GraphOp::Follow, 2), GraphEffect::Apply);
        feed.apply_graph(1, GraphOp::Follow, 2).unwrap();
        assert_eq!(feed.graph_effect(1, GraphOp::Follow, 2), GraphEffect::Apply, "already following: no limit");
        assert_eq!(feed.graph_effect(1, GraphOp::Follow, 3), GraphEffect::TooMany);
        feed.apply_graph(4, GraphOp::Block, 5).unwrap();
        assert_eq!(feed.graph_effect(5, GraphOp::Follow, 4), GraphEffect::Nothing);
        assert_eq!(feed.graph_effect(4, GraphOp::Unblock, 5), GraphEffect::Apply);
    }

    #[test]
    fn two_feeds_applying_one_log_agree() {
        // The same entries in the same order give the same graph, whatever
        // each node decided when it took them.
        let log = [
            Write::Graph { user: 1, op: GraphOp::Follow, other: 2 },
            Write::Graph { user: 2, op: GraphOp::Block, other: 1 },
            Write::Graph { user: 1, op: GraphOp::Follow, other: 2 },
            Write::Graph { user: 2, op: GraphOp::Unblock, other: 1 },
            Write::Graph { user: 3, op: GraphOp::Follow, other: 2 },
        ];
        let apply = |feed: &Feed, entries: &[Write]| {
            for write in entries {
                if let Write::Graph { user, op, other } = *write {
                    if feed.graph_effect(user, op, other) == GraphEffect::Apply {
                        feed.apply_graph(user, op, other).unwrap();
                    }
                }
            }
        };
        let (a, b) = (Feed::new(FeedConfig::default(), 1), Feed::new(FeedConfig::default(), 2));
        apply(&a, &log);
        // b applied a prefix, restarted, and applied the log again from the start.
        apply(&b, &log[..3]);
        apply(&b, &log);
        for feed in [&a, &b] {
            assert!(!feed.graph.follows(1, 2), "the block removed the follow; the follow across it did nothing");
            assert!(feed.graph.follows(3, 2) && !feed.graph.blocked_either(2, 1));
        }
    }

    #[test]
    fn a_post_is_known_once_applied() {
        let feed = Feed::new(FeedConfig::default(), 0);
        assert!(!feed.has_post(7, 10));
        feed.restore(std::sync::Arc::new(crate::feed::Post::new(10, 7, 0, Bytes::new())));
        assert!(feed.has_post(7, 10) && !feed.has_post(7, 11) && !feed.has_post(8, 10));
    }

    #[test]
    fn node_tags_take_the_setting_or_the_name() {
        assert_eq!(node_tag(5, "a"), 5);
        assert_eq!(node_tag(5_000, "a"), crate::feed::MAX_NODE);
        assert_eq!(node_tag(0, "hl-1"), node_tag(0, "hl-1"));
        assert!(node_tag(0, "hl-1") <= crate::feed::MAX_NODE);
        let tags: std::collections::HashSet<u16> =
            ["a", "b", "c", "hl-1", "hl-2", "hl-3"].iter().map(|n| node_tag(0, n)).collect();
        assert_eq!(tags.len(), 6);
    }
}
