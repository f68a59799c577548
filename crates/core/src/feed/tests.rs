use super::*;

const NOW: u64 = 1_800_000_000_000;

fn feed(strategy: Strategy) -> Feed {
    let config = FeedConfig { strategy, inbox_cap: 5, hot_items: 3, celebrity_followers: 3, ..FeedConfig::default() };
    Feed::new(config, 1)
}

/// The durable store, as far as these tests need one: every post ever made.
#[derive(Default)]
struct Store(Vec<Arc<Post>>);

impl Store {
    fn answer(&self, query: &ColdQuery) -> Vec<Arc<Post>> {
        let mut out = Vec::new();
        for &author in &query.authors {
            let mut mine: Vec<_> =
                self.0.iter().filter(|p| p.author == author && query.bounds.contains(p.id)).cloned().collect();
            mine.sort_by_key(|p| p.id);
            let keep = if query.bounds.oldest_first {
                mine.into_iter().take(query.limit).collect::<Vec<_>>()
            } else {
                mine.into_iter().rev().take(query.limit).collect()
            };
            out.extend(keep);
        }
        out
    }

    fn finish(&self, read: Read) -> Vec<Arc<Post>> {
        let cold = read.cold.as_ref().map(|q| self.answer(q)).unwrap_or_default();
        read.page(cold)
    }
}

struct World {
    feed: Feed,
    store: Store,
    now: u64,
}

impl World {
    fn new(strategy: Strategy) -> Self {
        Self { feed: feed(strategy), store: Store::default(), now: NOW }
    }

    fn post(&mut self, author: u64) -> u64 {
        self.now += 1;
        let post = self.feed.new_post(author, 1, Bytes::from_static(b"x"), self.now);
        let id = post.id;
        self.store.0.push(post.clone());
        let fanout = self.feed.publish(post.clone(), self.now, |_| true);
        if fanout.into_inboxes {
            self.feed.fanout(&post, &fanout.followers, self.now);
        }
        id
    }

    fn delete(&mut self, author: u64, id: u64) {
        self.feed.delete(author, id);
        self.store.0.retain(|p| p.id != id);
    }

    fn page(&self, user: u64, cursor: Cursor, limit: usize) -> Vec<u64> {
        let read = self.feed.home(user, &cursor, limit, self.now);
        self.store.finish(read).iter().map(|p| p.id).collect()
    }

    /// Every page of `user`'s home timeline, following max_id, until empty.
    fn all_pages(&self, user: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cursor = Cursor::default();
        loop {
            let page = self.page(user, cursor, limit);
            let Some(&last) = page.last() else { return out };
            out.extend(page);
            cursor.max_id = Some(last);
        }
    }

    /// What `user`'s home should hold: their own posts and their followees', newest first.
    fn expected(&self, user: u64) -> Vec<u64> {
        let following = self.feed.graph.following(user);
        let mut ids: Vec<u64> =
            self.store.0.iter().filter(|p| p.author == user || following.contains(&p.author)).map(|p| p.id).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }
}

const ALL: [Strategy; 3] = [Strategy::Pull, Strategy::Push, Strategy::Hybrid];

#[test]
fn paging_yields_every_item_once_across_the_hot_and_cold_boundary() {
    for strategy in ALL {
        let mut w = World::new(strategy);
        for author in [2, 3, 4] {
            w.feed.follow(1, author).unwrap();
        }
        w.feed.touch(1, w.now);
        w.feed.rebuild_inbox(1);
        for round in 0..6 {
            for author in [2, 3, 4, 1, 5] {
                if (round + author) % 2 == 0 {
                    w.post(author);
                }
            }
        }
        w.now += 30 * 24 * 3_600 * 1_000;
        w.feed.archive(w.now);
        for limit in [1, 2, 3, 7, 100] {
            assert_eq!(w.all_pages(1, limit), w.expected(1), "{strategy:?}, pages of {limit}");
        }
    }
}

#[test]
fn edges_of_pagination() {
    for strategy in ALL {
        let mut w = World::new(strategy);
        assert_eq!(w.page(1, Cursor::default(), 20), Vec::<u64>::new(), "{strategy:?}: empty timeline");
        let a = w.post(1);
        let b = w.post(1);
        assert_eq!(w.page(1, Cursor::default(), 2), [b, a], "{strategy:?}: exactly one page");
        let past = Cursor { max_id: Some(a), ..Cursor::default() };
        assert_eq!(w.page(1, past, 2), Vec::<u64>::new(), "{strategy:?}: a cursor past the end");
        let newer = Cursor { min_id: Some(a), ..Cursor::default() };
        assert_eq!(w.page(1, newer, 5), [b], "{strategy:?}: min_id");
        let since = Cursor { since_id: Some(a), ..Cursor::default() };
        assert_eq!(w.page(1, since, 5), [b], "{strategy:?}: since_id");
    }
}

#[test]
fn an_author_reads_their_own_post_at_once() {
    for strategy in ALL {
        let mut w = World::new(strategy);
        let id = w.post(9);
        assert_eq!(w.page(9, Cursor::default(), 10), [id], "{strategy:?}");
    }
}

#[test]
fn delete_removes_a_post_from_every_timeline() {
    for strategy in ALL {
        let mut w = World::new(strategy);
        w.feed.follow(1, 2).unwrap();
        w.feed.follow(3, 2).unwrap();
        w.feed.touch(1, w.now);
        w.feed.rebuild_inbox(1);
        let keep = w.post(2);
        let gone = w.post(2);
        w.delete(2, gone);
        for user in [1, 2, 3] {
            assert_eq!(w.all_pages(user, 10), [keep], "{strategy:?}, user {user}");
        }
    }
}

#[test]
fn unfollow_removes_and_follow_merges_existing_items() {
    for strategy in ALL {
        let mut w = World::new(strategy);
        w.feed.follow(1, 2).unwrap();
        w.feed.touch(1, w.now);
        w.feed.rebuild_inbox(1);
        let p2 = w.post(2);
        let p3 = w.post(3);
        assert_eq!(w.all_pages(1, 10), [p2], "{strategy:?}");
        w.feed.unfollow(1, 2);
        assert_eq!(w.all_pages(1, 10), Vec::<u64>::new(), "{strategy:?}: unfollowed posts go");
        w.feed.follow(1, 3).unwrap();
        assert_eq!(w.all_pages(1, 10), [p3], "{strategy:?}: follow merges what is there");
    }
}

#[test]
fn block_is_symmetric_and_hides_posts_both_ways() {
    for strategy in ALL {
        let mut w = World::new(strategy);
        w.feed.follow(1, 2).unwrap();
        w.feed.follow(2, 1).unwrap();
        w.feed.touch(1, w.now);
        w.feed.rebuild_inbox(1);
        w.post(1);
        w.post(2);
        w.feed.block(2, 1);
        assert_eq!(w.all_pages(1, 10), w.expected(1), "{strategy:?}");
        assert_eq!(w.expected(1).len(), 1, "only their own post");
        assert!(w.feed.author(1, 2, &Cursor::default(), 10).page(vec![]).is_empty());
        assert_eq!(w.feed.follow(1, 2), Ok(false), "no following across a block");
    }
}

#[test]
fn hybrid_pulls_celebrities_and_pushes_only_to_active_followers() {
    let w = World::new(Strategy::Hybrid);
    for fan in 10..13 {
        w.feed.follow(fan, 2).unwrap();
    }
    let celebrity = w.feed.publish(w.feed.new_post(2, 0, Bytes::new(), w.now + 1), w.now + 1, |_| true);
    assert_eq!((celebrity.followers.len(), celebrity.into_inboxes), (3, false));

    w.feed.follow(1, 3).unwrap();
    w.feed.follow(20, 3).unwrap();
    w.feed.touch(1, w.now);
    w.feed.rebuild_inbox(1);
    w.feed.rebuild_inbox(20);
    let post = w.feed.new_post(3, 0, Bytes::new(), w.now + 2);
    let fanout = w.feed.publish(post.clone(), w.now + 2, |_| true);
    assert!(fanout.into_inboxes);
    assert_eq!(w.feed.fanout(&post, &fanout.followers, w.now + 2), 1, "follower 20 was never active");
}

#[test]
fn a_reader_without_an_inbox_gets_full_pages_by_pull_meanwhile() {
    for strategy in [Strategy::Push, Strategy::Hybrid] {
        let mut w = World::new(strategy);
        w.feed.follow(1, 2).unwrap();
        let ids: Vec<u64> = (0..4).map(|_| w.post(2)).collect();
        w.feed.inboxes.remove(&1);
        assert!(w.feed.needs_inbox(1));
        let before = w.page(1, Cursor::default(), 10);
        assert_eq!(before, ids.iter().rev().copied().collect::<Vec<_>>(), "{strategy:?}");
        w.feed.rebuild_inbox(1);
        assert!(!w.feed.needs_inbox(1));
        assert_eq!(w.page(1, Cursor::default(), 10), before, "{strategy:?}: same page from the inbox");
    }
}

#[test]
fn online_followers_come_first_in_a_fanout() {
    let w = World::new(Strategy::Push);
    for fan in 10..20 {
        w.feed.follow(fan, 2).unwrap();
    }
    let fanout = w.feed.publish(w.feed.new_post(2, 0, Bytes::new(), NOW), NOW, |f| f % 3 == 0);
    let online = fanout.followers.iter().take_while(|f| *f % 3 == 0).count();
    assert_eq!(online, 3);
    assert_eq!(fanout.followers.len(), 10);
}
