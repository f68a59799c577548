//! The social feed in memory: hot posts per author (outboxes), home
//! timelines per reader (inboxes), the social graph, and the three ways to
//! build a home timeline — pull, push (fanout on write) and hybrid.
//!
//! Sans-IO: time is passed in, the durable store is the caller's business.
//! A read that cannot be answered exactly from memory says so with a
//! [`ColdQuery`]: the caller fetches those posts from the store and hands
//! them to [`Read::page`], which merges them in. So paging past the hot
//! window continues from the store with no gap and no duplicate.
//!
//! # Invariants
//!
//! - An outbox holds its author's newest posts, ascending by id, and every
//!   post of that author with an id above `complete_above` (0: all of them).
//! - An inbox holds, ascending, home items of its reader, and every such item
//!   above its `complete_above` — except posts of authors read by pull
//!   (celebrities in hybrid), which are merged from their outboxes.
//! - Unfollow, block and delete apply to what is already there: reads filter
//!   by the current graph and deleted flags, and inboxes are cleaned eagerly.
//!
//! # Strategies
//!
//! - **pull**: a home page is a merge of the followees' outboxes.
//! - **push**: a post is inserted into every follower's inbox (capped,
//!   default 800 items); a page is read from the inbox.
//! - **hybrid**: authors with fewer followers than the threshold (default
//!   10,000) are pushed, only to followers active in the last 7 days; larger
//!   ones are pulled. A reader without an inbox (new, or dropped while
//!   inactive) is served by pull while the inbox is rebuilt, so no page is
//!   ever empty or partial because of a rebuild.

mod graph;
mod ids;
pub mod log;
pub mod page;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

pub use graph::{Graph, GraphError};
pub use ids::{IdGenerator, MAX_NODE};
use page::Bounds;

use crate::presence::BlockList;
use heartline_proto::{Cursor, Item};

/// How home timelines are built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Pull,
    Push,
    #[default]
    Hybrid,
}

#[derive(Clone, Copy, Debug)]
pub struct FeedConfig {
    pub strategy: Strategy,
    /// Items per inbox.
    pub inbox_cap: usize,
    /// Authors with at least this many followers are pulled (hybrid).
    pub celebrity_followers: usize,
    /// Followers active within this window get pushes (hybrid).
    pub active_window_ms: u64,
    /// Posts per author kept in memory…
    pub hot_items: usize,
    /// …and for how long, at least.
    pub hot_window_ms: u64,
    pub max_following: usize,
    /// Posts merged into an inbox on follow.
    pub merge_on_follow: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        const DAY_MS: u64 = 24 * 3_600 * 1_000;
        Self {
            strategy: Strategy::Hybrid,
            inbox_cap: 800,
            celebrity_followers: 10_000,
            active_window_ms: 7 * DAY_MS,
            hot_items: 200,
            hot_window_ms: 7 * DAY_MS,
            max_following: 5_000,
            merge_on_follow: 200,
        }
    }
}

/// A post in memory. Shared by its author's outbox and every inbox it is in.
#[derive(Debug)]
pub struct Post {
    pub id: u64,
    pub author: u64,
    pub kind: u8,
    pub payload: Bytes,
    deleted: AtomicBool,
}

impl Post {
    pub fn new(id: u64, author: u64, kind: u8, payload: Bytes) -> Self {
        Self { id, author, kind, payload, deleted: AtomicBool::new(false) }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }

    pub fn delete(&self) {
        self.deleted.store(true, Ordering::Relaxed);
    }

    pub fn item(&self) -> Item {
        Item { post: self.id, author: self.author, kind: self.kind, payload: self.payload.clone() }
    }
}

/// Posts ascending by id, complete above `complete_above`.
#[derive(Default)]
struct Timeline {
    items: VecDeque<Arc<Post>>,
    complete_above: u64,
}

impl Timeline {
    /// Inserts in id order (usually at the back); keeps at most `cap`, the
    /// oldest going out and raising the horizon.
    fn insert(&mut self, post: Arc<Post>, cap: usize) {
        if post.id <= self.complete_above {
            return;
        }
        match self.items.back() {
            Some(last) if last.id >= post.id => {
                if let Err(at) = self.items.binary_search_by_key(&post.id, |p| p.id) {
                    self.items.insert(at, post);
                }
            }
            _ => self.items.push_back(post),
        }
        while self.items.len() > cap {
            if let Some(old) = self.items.pop_front() {
                self.complete_above = self.complete_above.max(old.id);
            }
        }
    }

    /// The items a page could take from this timeline: within `bounds`, and
    /// only the `limit` nearest the end the page starts from (a k-way merge
    /// never needs more from one source).
    fn candidates(&self, bounds: Bounds, limit: usize, out: &mut Vec<Arc<Post>>, keep: impl Fn(&Post) -> bool) {
        let start = self.items.partition_point(|p| p.id <= bounds.after);
        let end = self.items.partition_point(|p| p.id < bounds.before).max(start);
        let wanted = |p: &&Arc<Post>| !p.is_deleted() && keep(p);
        let range = self.items.range(start..end);
        if bounds.oldest_first {
            out.extend(range.filter(wanted).take(limit).cloned());
        } else {
            out.extend(range.rev().filter(wanted).take(limit).cloned());
        }
    }
}

/// Posts the store must supply for a read: those of `authors` within `bounds`,
/// at most `limit` per author from the end the page starts at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdQuery {
    pub authors: Vec<u64>,
    pub bounds: Bounds,
    pub limit: usize,
}

/// A read in progress: the hot candidates, and what the store must add.
pub struct Read {
    candidates: Vec<Arc<Post>>,
    pub cold: Option<ColdQuery>,
    bounds: Bounds,
    limit: usize,
}

impl Read {
    /// The page, with `cold` (the answer to [`Read::cold`], empty if none) merged in.
    pub fn page(mut self, cold: Vec<Arc<Post>>) -> Vec<Arc<Post>> {
        self.candidates.extend(cold);
        page::select(self.candidates, self.bounds, self.limit)
    }
}

/// Whom a new post goes to.
#[derive(Debug, Default)]
pub struct Fanout {
    /// Every follower, online ones first: each may get a live push.
    pub followers: Vec<u64>,
    /// Whether the post also goes into their inboxes ([`Feed::fanout`]).
    pub into_inboxes: bool,
}

pub struct Feed {
    config: FeedConfig,
    ids: IdGenerator,
    pub graph: Graph,
    outboxes: DashMap<u64, Timeline>,
    inboxes: DashMap<u64, Timeline>,
    /// Last read or write per user, for hybrid's active followers.
    active: DashMap<u64, u64>,
}

impl Feed {
    pub fn new(config: FeedConfig, node: u16) -> Self {
        Self {
            config,
            ids: IdGenerator::new(node),
            graph: Graph::default(),
            outboxes: DashMap::new(),
            inboxes: DashMap::new(),
            active: DashMap::new(),
        }
    }

    pub fn config(&self) -> &FeedConfig {
        &self.config
    }

    /// A new post with a fresh id; not visible until [`Feed::publish`].
    pub fn new_post(&self, author: u64, kind: u8, payload: Bytes, now_ms: u64) -> Arc<Post> {
        Arc::new(Post::new(self.next_post_id(now_ms), author, kind, payload))
    }

    /// A new post id, never drawn before by this node.
    pub fn next_post_id(&self, now_ms: u64) -> u64 {
        self.ids.next(now_ms)
    }

    fn pushed(&self, author: u64) -> bool {
        match self.config.strategy {
            Strategy::Pull => false,
            Strategy::Push => true,
            Strategy::Hybrid => self.graph.follower_count(author) < self.config.celebrity_followers,
        }
    }

    fn is_active(&self, user: u64, now_ms: u64) -> bool {
        self.active.get(&user).is_some_and(|at| now_ms.saturating_sub(*at) <= self.config.active_window_ms)
    }

    pub fn touch(&self, user: u64, now_ms: u64) {
        self.active.insert(user, now_ms);
    }

    /// Makes a durable post visible: in its author's outbox at once (the
    /// author reads it on the next request), and says whom it goes to.
    pub fn publish(&self, post: Arc<Post>, now_ms: u64, online: impl Fn(u64) -> bool) -> Fanout {
        let author = post.author;
        self.touch(author, now_ms);
        self.outboxes.entry(author).or_default().insert(post, usize::MAX);
        // Online readers first: they are the ones who would notice a delay.
        // One `online` call per follower (a sort would make n log n of them,
        // seconds for a celebrity's million).
        let (mut followers, offline): (Vec<u64>, Vec<u64>) =
            self.graph.followers(author).into_iter().partition(|&f| online(f));
        followers.extend(offline);
        Fanout { followers, into_inboxes: self.pushed(author) }
    }

    /// Inserts `post` into these followers' inboxes; returns how many took it.
    /// Push creates an inbox where none is; hybrid fills only the inboxes of
    /// followers active lately, and leaves the others to be rebuilt on read.
    pub fn fanout(&self, post: &Arc<Post>, followers: &[u64], now_ms: u64) -> usize {
        let mut inserted = 0;
        for &follower in followers {
            let inbox = match self.config.strategy {
                Strategy::Pull => None,
                Strategy::Push => Some(self.inboxes.entry(follower).or_insert_with(|| self.build_inbox(follower))),
                Strategy::Hybrid if self.is_active(follower, now_ms) => self.inboxes.get_mut(&follower),
                Strategy::Hybrid => None,
            };
            if let Some(mut inbox) = inbox {
                inbox.insert(post.clone(), self.config.inbox_cap);
                inserted += 1;
            }
        }
        inserted
    }

    /// An inbox from the outboxes of the pushed authors `user` follows.
    fn build_inbox(&self, user: u64) -> Timeline {
        let mut inbox = Timeline::default();
        let mut items = Vec::new();
        for author in self.graph.following(user) {
            if !self.pushed(author) {
                continue;
            }
            if let Some(outbox) = self.outboxes.get(&author) {
                inbox.complete_above = inbox.complete_above.max(outbox.complete_above);
                items.extend(outbox.items.iter().rev().take(self.config.inbox_cap).cloned());
            }
        }
        items.sort_unstable_by_key(|p| p.id);
        for post in items {
            inbox.insert(post, self.config.inbox_cap);
        }
        inbox
    }

    /// Builds `user`'s inbox if it has none (after a read served by pull).
    pub fn rebuild_inbox(&self, user: u64) {
        if self.config.strategy != Strategy::Pull && !self.inboxes.contains_key(&user) {
            let inbox = self.build_inbox(user);
            self.inboxes.entry(user).or_insert(inbox);
        }
    }

    /// Deletes a post of `author` held in memory; `None` if it is not hot
    /// (the store may still have it).
    pub fn delete(&self, author: u64, id: u64) -> Option<Arc<Post>> {
        let mut outbox = self.outboxes.get_mut(&author)?;
        let at = outbox.items.binary_search_by_key(&id, |p| p.id).ok()?;
        let post = outbox.items.remove(at)?;
        post.delete();
        Some(post)
    }

    /// Follow, merging the author's recent posts into the reader's inbox.
    pub fn follow(&self, user: u64, author: u64) -> Result<bool, GraphError> {
        let added = self.graph.follow(user, author, self.config.max_following)?;
        if added && self.pushed(author) {
            if let (Some(mut inbox), Some(outbox)) = (self.inboxes.get_mut(&user), self.outboxes.get(&author)) {
                for post in outbox.items.iter().rev().take(self.config.merge_on_follow) {
                    inbox.insert(post.clone(), self.config.inbox_cap);
                }
                // Older posts of the author are only in the store: pages below
                // what was merged are read from there.
                let merged_floor = if outbox.items.len() > self.config.merge_on_follow {
                    outbox.items[outbox.items.len() - self.config.merge_on_follow - 1].id
                } else {
                    outbox.complete_above
                };
                inbox.complete_above = inbox.complete_above.max(merged_floor);
            }
        }
        Ok(added)
    }

    pub fn unfollow(&self, user: u64, author: u64) -> bool {
        let removed = self.graph.unfollow(user, author);
        if let Some(mut inbox) = self.inboxes.get_mut(&user) {
            inbox.items.retain(|p| p.author != author);
        }
        removed
    }

    /// Block: no follows either way, and neither sees the other's posts.
    pub fn block(&self, user: u64, other: u64) -> bool {
        let added = self.graph.block(user, other);
        for (reader, author) in [(user, other), (other, user)] {
            if let Some(mut inbox) = self.inboxes.get_mut(&reader) {
                inbox.items.retain(|p| p.author != author);
            }
        }
        added
    }

    pub fn unblock(&self, user: u64, other: u64) -> bool {
        self.graph.unblock(user, other)
    }

    /// A page of `user`'s home timeline: the people they follow, and themself.
    pub fn home(&self, user: u64, cursor: &Cursor, limit: usize, now_ms: u64) -> Read {
        self.touch(user, now_ms);
        let bounds = Bounds::of(cursor);
        let following: HashSet<u64> = self.graph.following(user).into_iter().collect();
        let visible = |p: &Post| p.author == user || following.contains(&p.author);
        let mut candidates = Vec::new();
        let mut horizon = 0;
        let mut pulled: Vec<u64> = vec![user];
        let inbox = match self.config.strategy {
            Strategy::Pull => None,
            _ => self.inboxes.get(&user),
        };
        match inbox {
            Some(inbox) => {
                inbox.candidates(bounds, limit, &mut candidates, visible);
                horizon = inbox.complete_above;
                pulled.extend(following.iter().copied().filter(|&a| !self.pushed(a)));
            }
            // Pull, or an inbox not built yet: every followee from its outbox.
            None => pulled.extend(following.iter().copied()),
        }
        for &author in &pulled {
            if let Some(outbox) = self.outboxes.get(&author) {
                outbox.candidates(bounds, limit, &mut candidates, |_| true);
                horizon = horizon.max(outbox.complete_above);
            }
        }
        let cold_authors = pulled.iter().copied().chain(following.iter().copied()).collect::<HashSet<_>>();
        self.read(candidates, bounds, limit, horizon, cold_authors.into_iter().collect())
    }

    /// Whether `user` reads home by pull right now although the strategy
    /// pushes: the caller should then [`Feed::rebuild_inbox`] in the background.
    pub fn needs_inbox(&self, user: u64) -> bool {
        self.config.strategy != Strategy::Pull && !self.inboxes.contains_key(&user)
    }

    /// A page of one author's posts as `viewer` may see them.
    pub fn author(&self, viewer: u64, author: u64, cursor: &Cursor, limit: usize) -> Read {
        let bounds = Bounds::of(cursor);
        if self.graph.blocked_either(viewer, author) {
            return Read { candidates: Vec::new(), cold: None, bounds, limit };
        }
        let mut candidates = Vec::new();
        let mut horizon = 0;
        if let Some(outbox) = self.outboxes.get(&author) {
            outbox.candidates(bounds, limit, &mut candidates, |_| true);
            horizon = outbox.complete_above;
        }
        self.read(candidates, bounds, limit, horizon, vec![author])
    }

    fn read(&self, candidates: Vec<Arc<Post>>, bounds: Bounds, limit: usize, horizon: u64, authors: Vec<u64>) -> Read {
        let hot = page::select(candidates.clone(), bounds, limit);
        let cold = (!page::exact(&hot, bounds, limit, horizon)).then(|| ColdQuery {
            authors,
            bounds: bounds.below(horizon),
            limit,
        });
        Read { candidates, cold, bounds, limit }
    }

    /// Loads a post found in the store back as hot (at start), keeping the
    /// newest `hot_items` per author.
    pub fn restore(&self, post: Arc<Post>) {
        let mut outbox = self.outboxes.entry(post.author).or_default();
        outbox.insert(post, self.config.hot_items);
    }

    /// Releases posts past the hot window and inboxes of readers gone
    /// inactive. Readers never see a gap: what leaves memory is below the
    /// new horizon, read from the store from then on.
    pub fn archive(&self, now_ms: u64) -> usize {
        let floor = IdGenerator::floor_at(now_ms.saturating_sub(self.config.hot_window_ms));
        let mut released = 0;
        for mut outbox in self.outboxes.iter_mut() {
            while outbox.items.len() > self.config.hot_items && outbox.items.front().is_some_and(|p| p.id < floor) {
                if let Some(old) = outbox.items.pop_front() {
                    outbox.complete_above = outbox.complete_above.max(old.id);
                    released += 1;
                }
            }
        }
        if self.config.strategy == Strategy::Hybrid {
            self.inboxes.retain(|user, _| self.is_active(*user, now_ms));
        }
        released
    }

    /// Posts held in memory (outboxes), and inbox entries.
    pub fn hot_counts(&self) -> (usize, usize) {
        let posts = self.outboxes.iter().map(|o| o.items.len()).sum();
        let entries = self.inboxes.iter().map(|i| i.items.len()).sum();
        (posts, entries)
    }
}

impl BlockList for Feed {
    fn blocks(&self, blocker: u64, blocked: u64) -> bool {
        self.graph.blocks(blocker, blocked)
    }
}

#[cfg(test)]
mod tests;
