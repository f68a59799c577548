//! Posts, the post → author index and the social graph (follows and blocks),
//! as methods of [`Store`].
//!
//! Owns the key layout and record encoding of the feed's key spaces
//! (docs/store.md, "Key layout") and keeps each record and its index in one
//! atomic batch. It must not decide what a timeline shows, assign post ids or
//! enforce limits (payload size, following count): the feed core does; this
//! only stores and scans.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, Readable, UserValue};

use super::error::from_engine;
use super::{Engine, Store, StoreError};

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;

/// author u64 ‖ post id u64 → post record ([`POST_RECORD_V1`] ‖ kind u8 ‖
/// payload). Keyed by author first so that one author's posts are one range,
/// and a reverse scan gives them newest first (post ids grow with time).
const POSTS: &str = "posts";
/// post id u64 → author u64, to find a post's key from its id alone.
const POST_AUTHOR: &str = "post_author";
/// follower u64 ‖ followee u64 → since, Unix ms, u64.
const FOLLOWS: &str = "follows";
/// followee u64 ‖ follower u64 → since, Unix ms, u64 (the reverse of `follows`).
const FOLLOWERS: &str = "followers";
/// blocker u64 ‖ blocked u64 → since, Unix ms, u64.
const BLOCKS: &str = "blocks";
/// blocked u64 ‖ blocker u64 → since, Unix ms, u64 (the reverse of `blocks`).
const BLOCKED_BY: &str = "blocked_by";

/// First byte of a post record: its encoding, so that a later format can be
/// told apart from this one without a migration.
const POST_RECORD_V1: u8 = 1;

/// A post as stored. `payload` is owned (copied out of network buffers), so
/// that a queued post does not pin a connection's read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPost {
    /// Unique and time-ordered: a larger id is a newer post.
    pub id: u64,
    pub author: u64,
    pub kind: u8,
    pub payload: Bytes,
}

/// A directed edge of the social graph, `from` → `to`.
/// Which end of an id range a page of posts starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// `from` follows `to`.
    Follow,
    /// `from` blocks `to`. Stored one way; making a block hide both users
    /// from each other is the feed's rule, not the store's.
    Block,
}

/// The feed's key spaces, opened with the store.
#[derive(Clone)]
pub(super) struct Keyspaces {
    posts: Keyspace,
    post_author: Keyspace,
    follows: Keyspace,
    followers: Keyspace,
    blocks: Keyspace,
    blocked_by: Keyspace,
    /// Held by the writes that read before they write ([`Store::delete_post`],
    /// [`Store::set_edge`]), so that of two concurrent deletes of one post
    /// only one returns `true`, and a repeated follow keeps its first
    /// `since`. They wait on the journal lock in turn anyway.
    read_then_write: Arc<Mutex<()>>,
}

impl Keyspaces {
    pub(super) fn open(db: &Database) -> Result<Keyspaces, StoreError> {
        let open = |name| db.keyspace(name, KeyspaceCreateOptions::default).map_err(from_engine);
        Ok(Keyspaces {
            posts: open(POSTS)?,
            post_author: open(POST_AUTHOR)?,
            follows: open(FOLLOWS)?,
            followers: open(FOLLOWERS)?,
            blocks: open(BLOCKS)?,
            blocked_by: open(BLOCKED_BY)?,
            read_then_write: Arc::new(Mutex::new(())),
        })
    }

    /// The key space keyed by `from` first, then the one keyed by `to` first.
    fn edge(&self, edge: Edge) -> (&Keyspace, &Keyspace) {
        match edge {
            Edge::Follow => (&self.follows, &self.followers),
            Edge::Block => (&self.blocks, &self.blocked_by),
        }
    }
}

impl Store {
    /// Writes `posts` (records and post → author index) in one atomic batch:
    /// after a crash either all of them are there or none. Returns once the
    /// batch is as durable as the store's [`super::Durability`] says, and
    /// readable. Post ids must be unique: a second post with an id already
    /// stored leaves the first one's record unreachable by id.
    pub fn put_posts(&self, posts: &[StoredPost]) -> Result<(), StoreError> {
        self.with(|engine| {
            let mut write = self.batch(engine);
            for post in posts {
                write.insert(&engine.feed.posts, pair_key(post.author, post.id), encode_post(post));
                write.insert(&engine.feed.post_author, post.id.to_be_bytes(), post.author.to_be_bytes());
            }
            self.commit(write, || {
                let keys: Vec<(u64, u64)> = posts.iter().map(|p| (p.author, p.id)).collect();
                Some(Box::new(move |engine: &Engine, undo: &mut OwnedWriteBatch| {
                    for &(author, id) in &keys {
                        undo.remove(&engine.feed.posts, pair_key(author, id));
                        undo.remove(&engine.feed.post_author, id.to_be_bytes());
                    }
                }))
            })
        })
    }

    /// Removes post `id` of `author` and its index entry, durably; `Ok(false)`
    /// if `author` has no such post (never written, already deleted, or
    /// written by someone else).
    pub fn delete_post(&self, author: u64, id: u64) -> Result<bool, StoreError> {
        self.with(|engine| {
            let _guard = engine.feed.read_then_write.lock().unwrap_or_else(PoisonError::into_inner);
            let key = pair_key(author, id);
            let Some(record) = engine.db.snapshot().get(&engine.feed.posts, key).map_err(from_engine)? else {
                return Ok(false);
            };
            let mut write = self.batch(engine);
            write.remove(&engine.feed.posts, key);
            write.remove(&engine.feed.post_author, id.to_be_bytes());
            self.commit(write, || {
                Some(Box::new(move |engine: &Engine, undo: &mut OwnedWriteBatch| {
                    undo.insert(&engine.feed.posts, key, record.clone());
                    undo.insert(&engine.feed.post_author, id.to_be_bytes(), author.to_be_bytes());
                }))
            })?;
            Ok(true)
        })
    }

    /// The post with this id, `None` if there is none.
    pub fn post(&self, id: u64) -> Result<Option<StoredPost>, StoreError> {
        self.with(|engine| {
            // Both reads through one snapshot: a post and its index entry are
            // written and removed together, so it sees both or neither.
            let snapshot = engine.db.snapshot();
            let Some(value) = snapshot.get(&engine.feed.post_author, id.to_be_bytes()).map_err(from_engine)? else {
                return Ok(None);
            };
            let author = decode_u64(&value).ok_or_else(|| corrupt("author of a post", &value))?;
            let key = pair_key(author, id);
            match snapshot.get(&engine.feed.posts, key).map_err(from_engine)? {
                Some(record) => decode_post(&key, &record).map(Some),
                None => Err(StoreError::Corrupt(format!("post {id} is indexed under author {author} but not stored"))),
            }
        })
    }

    /// Posts of `author` with `after < id < before` (`None`: unbounded), at
    /// most `limit` of them from the end `order` names, in that order. With
    /// `NewestFirst` a page's last id is the next page's `before`; with
    /// `OldestFirst` (for `min_id` paging), its `after`.
    pub fn author_posts(
        &self,
        author: u64,
        after: Option<u64>,
        before: Option<u64>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<StoredPost>, StoreError> {
        let Some((low, high)) = id_range(after, before) else {
            return Ok(Vec::new());
        };
        self.with(|engine| {
            let snapshot = engine.db.snapshot();
            let range = snapshot.range(&engine.feed.posts, pair_key(author, low)..=pair_key(author, high));
            match order {
                Order::NewestFirst => range.rev().take(limit).map(read_post).collect(),
                Order::OldestFirst => range.take(limit).map(read_post).collect(),
            }
        })
    }

    /// Adds (`present`) or removes the edge `from` → `to`, with its reverse
    /// index, in one atomic batch, durable before returning. Adding an edge
    /// that exists or removing one that does not writes nothing (what is
    /// readable is already durable), so an edge keeps the time it was first
    /// added.
    pub fn set_edge(&self, edge: Edge, from: u64, to: u64, present: bool) -> Result<(), StoreError> {
        self.set_edges(&[(edge, from, to, present)])
    }

    /// Several edge changes in one atomic, durable batch (a block and the two
    /// unfollows it implies): after a crash, all of them or none.
    pub fn set_edges(&self, changes: &[(Edge, u64, u64, bool)]) -> Result<(), StoreError> {
        self.with(|engine| {
            let _guard = engine.feed.read_then_write.lock().unwrap_or_else(PoisonError::into_inner);
            let snapshot = engine.db.snapshot();
            let mut write = self.batch(engine);
            let since = unix_ms().to_be_bytes();
            // What each changed edge was before: its `since` if it existed.
            let mut before: Vec<(Edge, u64, u64, Option<UserValue>)> = Vec::new();
            for &(edge, from, to, present) in changes {
                let (forward, reverse) = engine.feed.edge(edge);
                let old = snapshot.get(forward, pair_key(from, to)).map_err(from_engine)?;
                if old.is_some() == present {
                    continue;
                }
                before.push((edge, from, to, old));
                if present {
                    write.insert(forward, pair_key(from, to), since);
                    write.insert(reverse, pair_key(to, from), since);
                } else {
                    write.remove(forward, pair_key(from, to));
                    write.remove(reverse, pair_key(to, from));
                }
            }
            if before.is_empty() {
                return Ok(());
            }
            self.commit(write, || {
                Some(Box::new(move |engine: &Engine, undo: &mut OwnedWriteBatch| {
                    for (edge, from, to, old) in &before {
                        let (forward, reverse) = engine.feed.edge(*edge);
                        match old {
                            Some(since) => {
                                undo.insert(forward, pair_key(*from, *to), since.clone());
                                undo.insert(reverse, pair_key(*to, *from), since.clone());
                            }
                            None => {
                                undo.remove(forward, pair_key(*from, *to));
                                undo.remove(reverse, pair_key(*to, *from));
                            }
                        }
                    }
                }))
            })
        })
    }

    /// Calls `f(edge, from, to)` for every edge, follows first, each kind in
    /// order of `from` then `to`, as of one moment (edges set while it runs
    /// are not seen). For rebuilding the in-memory graph at start.
    pub fn for_each_edge(&self, mut f: impl FnMut(Edge, u64, u64)) -> Result<(), StoreError> {
        self.with(|engine| {
            let snapshot = engine.db.snapshot();
            for (edge, keyspace) in [(Edge::Follow, &engine.feed.follows), (Edge::Block, &engine.feed.blocks)] {
                for entry in snapshot.iter(keyspace) {
                    // Only the key: the value (since) is not needed to rebuild.
                    let key = entry.key().map_err(from_engine)?;
                    let (from, to) = split_pair_key(&key).ok_or_else(|| corrupt("edge key", &key))?;
                    f(edge, from, to);
                }
            }
            Ok(())
        })
    }

    /// Calls `f` with the newest `per_author` posts of every author, as of
    /// one moment: authors in descending id order, each author's posts
    /// newest first. For rebuilding hot outboxes at start; one author's alone
    /// is [`Store::author_posts`] with no bounds.
    pub fn for_each_recent_post(&self, per_author: usize, mut f: impl FnMut(StoredPost)) -> Result<(), StoreError> {
        if per_author == 0 {
            return Ok(());
        }
        self.with(|engine| {
            let snapshot = engine.db.snapshot();
            // One reverse scan, restarted below an author once their newest
            // posts are taken, so that prolific authors' old posts are skipped
            // rather than read.
            let mut below: Option<[u8; 16]> = None;
            loop {
                let scan = match below {
                    None => snapshot.iter(&engine.feed.posts),
                    Some(key) => snapshot.range(&engine.feed.posts, ..key),
                };
                let mut author = None;
                let mut taken = 0;
                below = None;
                for entry in scan.rev() {
                    let (key, record) = entry.into_inner().map_err(from_engine)?;
                    let (post_author, _) = split_pair_key(&key).ok_or_else(|| corrupt("post key", &key))?;
                    if author != Some(post_author) {
                        author = Some(post_author);
                        taken = 0;
                    }
                    if taken == per_author {
                        below = Some(pair_key(post_author, 0));
                        break;
                    }
                    taken += 1;
                    f(decode_post(&key, &record)?);
                }
                if below.is_none() {
                    return Ok(());
                }
            }
        })
    }
}

/// `a ‖ b`, both big-endian, so that byte order is (a, b) order.
fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&a.to_be_bytes());
    key[8..].copy_from_slice(&b.to_be_bytes());
    key
}

fn split_pair_key(key: &[u8]) -> Option<(u64, u64)> {
    let key = <&[u8; 16]>::try_from(key).ok()?;
    let (a, b) = key.split_at(8);
    Some((decode_u64(a)?, decode_u64(b)?))
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The inclusive id range for `after < id < before`, `None` when empty.
fn id_range(after: Option<u64>, before: Option<u64>) -> Option<(u64, u64)> {
    let low = match after {
        Some(after) => after.checked_add(1)?,
        None => 0,
    };
    let high = match before {
        Some(before) => before.checked_sub(1)?,
        None => u64::MAX,
    };
    (low <= high).then_some((low, high))
}

fn encode_post(post: &StoredPost) -> UserValue {
    let mut record = Vec::with_capacity(2 + post.payload.len());
    record.extend_from_slice(&[POST_RECORD_V1, post.kind]);
    record.extend_from_slice(&post.payload);
    record.into()
}

fn read_post(entry: fjall::Guard) -> Result<StoredPost, StoreError> {
    let (key, record) = entry.into_inner().map_err(from_engine)?;
    decode_post(&key, &record)
}

fn decode_post(key: &[u8], record: &[u8]) -> Result<StoredPost, StoreError> {
    let (author, id) = split_pair_key(key).ok_or_else(|| corrupt("post key", key))?;
    match record {
        [POST_RECORD_V1, kind, payload @ ..] => {
            Ok(StoredPost { id, author, kind: *kind, payload: Bytes::copy_from_slice(payload) })
        }
        _ => Err(StoreError::Corrupt(format!("post {id} of author {author}: unknown record {record:02x?}"))),
    }
}

fn corrupt(what: &str, bytes: &[u8]) -> StoreError {
    StoreError::Corrupt(format!("{what} has {} bytes: {bytes:02x?}", bytes.len()))
}

/// Now, for an edge's `since`: a clock before 1970 reads as 0 rather than
/// failing the write.
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
