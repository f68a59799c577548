//! The social graph in memory: who follows whom, who blocks whom.
//!
//! Owns the adjacency sets and their limits; the durable copy is the
//! store's, and this is rebuilt from it at start. Blocks are symmetric in
//! effect: a block removes follows both ways and hides each user from the
//! other, in the feed and in presence (it is presence's [`BlockList`]).

use std::collections::HashSet;

use dashmap::DashMap;

use crate::presence::BlockList;

#[derive(Default)]
pub struct Graph {
    following: DashMap<u64, HashSet<u64>>,
    followers: DashMap<u64, HashSet<u64>>,
    blocks: DashMap<u64, HashSet<u64>>,
}

/// Why a graph change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("following too many users")]
    TooManyFollowing,
}

fn add(map: &DashMap<u64, HashSet<u64>>, key: u64, value: u64) -> bool {
    map.entry(key).or_default().insert(value)
}

fn remove(map: &DashMap<u64, HashSet<u64>>, key: u64, value: u64) -> bool {
    let removed = map.get_mut(&key).is_some_and(|mut set| set.remove(&value));
    map.remove_if(&key, |_, set| set.is_empty());
    removed
}

impl Graph {
    /// `user` follows `author`. Refused past `max_following`; a follow across
    /// a block is accepted and does nothing (SPEC.md §10.4). Returns whether
    /// an edge was added.
    pub fn follow(&self, user: u64, author: u64, max_following: usize) -> Result<bool, GraphError> {
        if user == author || self.blocked_either(user, author) {
            return Ok(false);
        }
        if self.following_count(user) >= max_following {
            return Err(GraphError::TooManyFollowing);
        }
        let added = add(&self.following, user, author);
        add(&self.followers, author, user);
        Ok(added)
    }

    pub fn unfollow(&self, user: u64, author: u64) -> bool {
        remove(&self.followers, author, user);
        remove(&self.following, user, author)
    }

    /// Blocks, and drops the follows both ways. Returns whether an edge was added.
    pub fn block(&self, user: u64, other: u64) -> bool {
        if user == other {
            return false;
        }
        self.unfollow(user, other);
        self.unfollow(other, user);
        add(&self.blocks, user, other)
    }

    pub fn unblock(&self, user: u64, other: u64) -> bool {
        remove(&self.blocks, user, other)
    }

    pub fn blocked_either(&self, a: u64, b: u64) -> bool {
        self.blocks(a, b) || self.blocks(b, a)
    }

    pub fn follows(&self, user: u64, author: u64) -> bool {
        self.following.get(&user).is_some_and(|set| set.contains(&author))
    }

    pub fn following(&self, user: u64) -> Vec<u64> {
        self.following.get(&user).map(|set| set.iter().copied().collect()).unwrap_or_default()
    }

    pub fn followers(&self, author: u64) -> Vec<u64> {
        self.followers.get(&author).map(|set| set.iter().copied().collect()).unwrap_or_default()
    }

    pub fn following_count(&self, user: u64) -> usize {
        self.following.get(&user).map_or(0, |set| set.len())
    }

    pub fn follower_count(&self, author: u64) -> usize {
        self.followers.get(&author).map_or(0, |set| set.len())
    }
}

impl BlockList for Graph {
    fn blocks(&self, blocker: u64, blocked: u64) -> bool {
        self.blocks.get(&blocker).is_some_and(|set| set.contains(&blocked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_counts_and_limits() {
        let g = Graph::default();
        assert_eq!(g.follow(1, 2, 2), Ok(true));
        assert_eq!(g.follow(1, 2, 2), Ok(false));
        assert_eq!(g.follow(1, 3, 2), Ok(true));
        assert_eq!(g.follow(1, 4, 2), Err(GraphError::TooManyFollowing));
        assert_eq!(g.follow(1, 1, 2), Ok(false), "not yourself");
        assert_eq!((g.following_count(1), g.follower_count(2)), (2, 1));
        assert!(g.unfollow(1, 2));
        assert_eq!((g.following_count(1), g.follower_count(2)), (1, 0));
    }

    #[test]
    fn a_block_drops_follows_both_ways_and_stops_new_ones() {
        let g = Graph::default();
        g.follow(1, 2, 10).unwrap();
        g.follow(2, 1, 10).unwrap();
        assert!(g.block(1, 2));
        assert!(!g.follows(1, 2) && !g.follows(2, 1));
        assert_eq!(g.follow(2, 1, 10), Ok(false));
        assert!(g.blocked_either(2, 1));
        assert!(g.unblock(1, 2));
        assert!(!g.blocked_either(1, 2));
    }
}
