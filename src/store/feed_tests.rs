use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::tests::TempDir;
use super::super::Durability;
use super::*;

fn post(author: u64, id: u64) -> StoredPost {
    let payload = Bytes::from(format!("post {id} by {author}"));
    StoredPost { id, author, kind: (id % 7) as u8, payload }
}

fn ids(posts: &[StoredPost]) -> Vec<u64> {
    posts.iter().map(|post| post.id).collect()
}

fn edges(store: &Store) -> BTreeSet<(u8, u64, u64)> {
    let mut edges = BTreeSet::new();
    let kind = |edge| match edge {
        Edge::Follow => 0,
        Edge::Block => 1,
    };
    store.for_each_edge(|edge, from, to| assert!(edges.insert((kind(edge), from, to)))).unwrap();
    edges
}

/// Every `(to, from)` of an edge kind's reverse key space.
fn reverse_edges(store: &Store, edge: Edge) -> BTreeSet<(u64, u64)> {
    store
        .with(|engine| {
            let (_, reverse) = engine.feed.edge(edge);
            let snapshot = engine.db.snapshot();
            Ok(snapshot.iter(reverse).map(|entry| split_pair_key(&entry.key().unwrap()).unwrap()).collect())
        })
        .unwrap()
}

/// Whether `post_author` has an entry for `id`.
fn indexed(store: &Store, id: u64) -> bool {
    store
        .with(|engine| Ok(engine.db.snapshot().contains_key(&engine.feed.post_author, id.to_be_bytes()).unwrap()))
        .unwrap()
}

fn recent_posts(store: &Store, per_author: usize) -> Vec<StoredPost> {
    let mut posts = Vec::new();
    store.for_each_recent_post(per_author, |post| posts.push(post)).unwrap();
    posts
}

#[test]
fn posts_round_trip_by_id() {
    let dir = TempDir::new("posts");
    let store = Store::open(dir.path(), Durability::Fsync).unwrap();
    let big = StoredPost { id: 5, author: 2, kind: 255, payload: Bytes::from(vec![0xab; 4096]) };
    let empty = StoredPost { id: u64::MAX, author: u64::MAX, kind: 0, payload: Bytes::new() };
    let posts = [post(1, 3), post(1, 4), big.clone(), empty.clone(), post(0, 0)];
    store.put_posts(&posts).unwrap();
    for expected in &posts {
        assert_eq!(store.post(expected.id).unwrap().as_ref(), Some(expected));
    }
    assert_eq!(store.post(6).unwrap(), None);
    assert_eq!(store.post(2).unwrap(), None);
    store.put_posts(&[]).unwrap();
}

#[test]
fn author_posts_page_newest_first_with_exclusive_bounds() {
    let dir = TempDir::new("paging");
    let store = Store::open(dir.path(), Durability::Os).unwrap();
    let mine: Vec<StoredPost> = (1..=10).map(|i| post(7, i * 10)).collect();
    store.put_posts(&mine).unwrap();
    // Neighbouring authors, with ids inside and at the edges of the range.
    store.put_posts(&[post(6, 55), post(6, u64::MAX), post(8, 0), post(8, 45), post(8, 200)]).unwrap();

    assert_eq!(
        ids(&store.author_posts(7, None, None, Order::NewestFirst, 100).unwrap()),
        [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
    );
    assert_eq!(
        store.author_posts(7, None, None, Order::NewestFirst, 1).unwrap(),
        [mine[9].clone()],
        "whole posts come back"
    );

    // Paging with the last id as the next `before`: no gap, no duplicate.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = ids(&store.author_posts(7, None, before, Order::NewestFirst, 3).unwrap());
        let Some(&last) = page.last() else { break };
        before = Some(last);
        pages.push(page);
    }
    assert_eq!(pages, [vec![100, 90, 80], vec![70, 60, 50], vec![40, 30, 20], vec![10]]);

    assert_eq!(ids(&store.author_posts(7, Some(20), Some(50), Order::NewestFirst, 100).unwrap()), [40, 30]);
    assert_eq!(ids(&store.author_posts(7, Some(19), Some(51), Order::NewestFirst, 100).unwrap()), [50, 40, 30, 20]);
    assert_eq!(ids(&store.author_posts(7, Some(80), None, Order::NewestFirst, 100).unwrap()), [100, 90]);
    assert_eq!(ids(&store.author_posts(7, Some(20), Some(40), Order::NewestFirst, 100).unwrap()), [30]);
    for (before, after) in [(Some(30), Some(20)), (Some(10), None), (None, Some(100)), (Some(0), None)] {
        assert!(
            store.author_posts(7, after, before, Order::NewestFirst, 100).unwrap().is_empty(),
            "{before:?} {after:?}"
        );
    }
    assert!(store.author_posts(7, Some(u64::MAX), None, Order::NewestFirst, 100).unwrap().is_empty());
    assert!(store.author_posts(7, Some(80), Some(20), Order::NewestFirst, 100).unwrap().is_empty(), "crossed bounds");
    assert!(store.author_posts(7, None, None, Order::NewestFirst, 0).unwrap().is_empty());
    assert!(store.author_posts(9, None, None, Order::NewestFirst, 100).unwrap().is_empty(), "an author without posts");
    assert_eq!(ids(&store.author_posts(6, None, None, Order::NewestFirst, 100).unwrap()), [u64::MAX, 55]);
    assert_eq!(ids(&store.author_posts(8, Some(0), None, Order::NewestFirst, 100).unwrap()), [200, 45]);
}

#[test]
fn author_posts_ascending_pages_oldest_first() {
    let dir = TempDir::new("ascending");
    let store = Store::open(dir.path(), Durability::Os).unwrap();
    store.put_posts(&(1..=10).map(|i| post(7, i * 10)).collect::<Vec<_>>()).unwrap();
    store.put_posts(&[post(6, u64::MAX), post(8, 0)]).unwrap();

    assert_eq!(ids(&store.author_posts(7, None, None, Order::OldestFirst, 3).unwrap()), [10, 20, 30]);
    // min_id paging: the last id is the next `after`.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = ids(&store.author_posts(7, after, None, Order::OldestFirst, 4).unwrap());
        let Some(&last) = page.last() else { break };
        after = Some(last);
        pages.push(page);
    }
    assert_eq!(pages, [vec![10, 20, 30, 40], vec![50, 60, 70, 80], vec![90, 100]]);
    assert_eq!(ids(&store.author_posts(7, Some(20), Some(60), Order::OldestFirst, 100).unwrap()), [30, 40, 50]);
    assert_eq!(ids(&store.author_posts(7, Some(20), Some(60), Order::OldestFirst, 2).unwrap()), [30, 40]);
    assert!(store.author_posts(7, Some(100), None, Order::OldestFirst, 100).unwrap().is_empty());
    assert!(store.author_posts(7, Some(50), Some(60), Order::OldestFirst, 100).unwrap().is_empty());
    assert!(store.author_posts(7, None, Some(10), Order::OldestFirst, 100).unwrap().is_empty());
}

#[test]
fn delete_removes_a_post_and_its_index_once() {
    let dir = TempDir::new("delete");
    let store = Store::open(dir.path(), Durability::Fsync).unwrap();
    store.put_posts(&[post(1, 10), post(1, 20), post(1, 30), post(2, 25)]).unwrap();
    assert!(!store.delete_post(2, 20).unwrap(), "not that author's post");
    assert!(store.post(20).unwrap().is_some());
    assert!(store.delete_post(1, 20).unwrap());
    assert!(!store.delete_post(1, 20).unwrap(), "already deleted");
    assert!(!store.delete_post(1, 99).unwrap(), "never written");
    assert_eq!(store.post(20).unwrap(), None);
    assert_eq!(ids(&store.author_posts(1, None, None, Order::NewestFirst, 10).unwrap()), [30, 10]);
    assert_eq!(ids(&store.author_posts(1, None, None, Order::OldestFirst, 10).unwrap()), [10, 30]);
    assert!(!indexed(&store, 20), "the index entry goes with the post");
    drop(store);
    let store = Store::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(store.post(20).unwrap(), None, "the delete is durable");
    assert_eq!(ids(&recent_posts(&store, 10)), [25, 30, 10]);
}

#[test]
fn concurrent_deletes_of_one_post_report_it_once() {
    let dir = TempDir::new("delete-race");
    let store = Store::open(dir.path(), Durability::Os).unwrap();
    let posts: Vec<StoredPost> = (0..200).map(|id| post(1, id)).collect();
    store.put_posts(&posts).unwrap();
    let deleted: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| (0..200).filter(|&id| store.delete_post(1, id).unwrap()).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().unwrap()).collect()
    });
    assert_eq!(deleted.iter().copied().collect::<BTreeSet<_>>().len(), 200);
    assert_eq!(deleted.len(), 200, "each post deleted exactly once");
}

#[test]
fn edges_are_indexed_both_ways_and_removed_both_ways() {
    let dir = TempDir::new("edges");
    let store = Store::open(dir.path(), Durability::Fsync).unwrap();
    store.set_edge(Edge::Follow, 1, 2, true).unwrap();
    store.set_edge(Edge::Follow, 1, 3, true).unwrap();
    store.set_edge(Edge::Follow, 4, 2, true).unwrap();
    store.set_edge(Edge::Block, 2, 5, true).unwrap();
    store.set_edge(Edge::Block, 5, 2, true).unwrap();
    store.set_edge(Edge::Follow, 1, 2, true).unwrap();
    assert_eq!(edges(&store), BTreeSet::from([(0, 1, 2), (0, 1, 3), (0, 4, 2), (1, 2, 5), (1, 5, 2)]));
    assert_eq!(reverse_edges(&store, Edge::Follow), BTreeSet::from([(2, 1), (3, 1), (2, 4)]));
    assert_eq!(reverse_edges(&store, Edge::Block), BTreeSet::from([(5, 2), (2, 5)]));

    store.set_edge(Edge::Follow, 1, 2, false).unwrap();
    store.set_edge(Edge::Block, 2, 5, false).unwrap();
    store.set_edge(Edge::Block, 2, 5, false).unwrap();
    store.set_edge(Edge::Follow, 9, 9, false).unwrap();
    assert_eq!(edges(&store), BTreeSet::from([(0, 1, 3), (0, 4, 2), (1, 5, 2)]));
    assert_eq!(reverse_edges(&store, Edge::Follow), BTreeSet::from([(3, 1), (2, 4)]));
    assert_eq!(reverse_edges(&store, Edge::Block), BTreeSet::from([(2, 5)]));
}

#[test]
fn a_repeated_follow_keeps_its_first_time() {
    let dir = TempDir::new("since");
    let store = Store::open(dir.path(), Durability::Os).unwrap();
    store.set_edge(Edge::Follow, 1, 2, true).unwrap();
    // `since` of the follow 1 → 2 in `follows` (`reverse`: in `followers`).
    let since = |reverse: bool| {
        store
            .with(|engine| {
                let (follows, followers) = engine.feed.edge(Edge::Follow);
                let (keyspace, key) = if reverse { (followers, pair_key(2, 1)) } else { (follows, pair_key(1, 2)) };
                Ok(engine.db.snapshot().get(keyspace, key).unwrap().unwrap())
            })
            .unwrap()
    };
    let first = since(false);
    assert_eq!(first, since(true));
    std::thread::sleep(std::time::Duration::from_millis(5));
    store.set_edge(Edge::Follow, 1, 2, true).unwrap();
    assert_eq!(since(false), first);
}

#[test]
fn edges_and_recent_posts_come_back_after_reopening() {
    let dir = TempDir::new("rebuild");
    {
        let store = Store::open(dir.path(), Durability::Fsync).unwrap();
        store.set_edge(Edge::Follow, 10, 20, true).unwrap();
        store.set_edge(Edge::Follow, u64::MAX, 0, true).unwrap();
        store.set_edge(Edge::Follow, 10, 30, true).unwrap();
        store.set_edge(Edge::Follow, 10, 30, false).unwrap();
        store.set_edge(Edge::Block, 20, 10, true).unwrap();
        let mut posts: Vec<StoredPost> = (1..=300).map(|id| post(3, id)).collect();
        posts.extend([post(1, 1000), post(1, 1001), post(2, 500), post(0, 7), post(u64::MAX, 2), post(u64::MAX, 4)]);
        store.put_posts(&posts).unwrap();
        store.put_posts(&[post(1, 1002), post(1, 1003), post(1, 1004)]).unwrap();
        store.delete_post(1, 1003).unwrap();
    }
    let store = Store::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(edges(&store), BTreeSet::from([(0, 10, 20), (0, u64::MAX, 0), (1, 20, 10)]));
    let recent: Vec<(u64, u64)> = recent_posts(&store, 3).iter().map(|post| (post.author, post.id)).collect();
    assert_eq!(
        recent,
        [(u64::MAX, 4), (u64::MAX, 2), (3, 300), (3, 299), (3, 298), (2, 500), (1, 1004), (1, 1002), (1, 1001), (0, 7)]
    );
    assert_eq!(recent_posts(&store, 1).len(), 5);
    assert!(recent_posts(&store, 0).is_empty());
    assert_eq!(recent_posts(&store, 1000).len(), 300 + 4 + 1 + 1 + 2);
    assert_eq!(recent_posts(&store, 1)[0], post(u64::MAX, 4), "whole posts come back");
}

/// Random posts and deletes against an in-memory model: pages in both
/// directions and the recent posts agree with it.
#[test]
fn scans_agree_with_a_model() {
    let dir = TempDir::new("model");
    let store = Store::open(dir.path(), Durability::Os).unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    let mut model: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut next_id = 1u64;
    for _ in 0..50 {
        let batch: Vec<StoredPost> = (0..rng.gen_range(1..200))
            .map(|_| {
                next_id += rng.gen_range(1..5);
                post(rng.gen_range(0..20), next_id)
            })
            .collect();
        store.put_posts(&batch).unwrap();
        for post in &batch {
            model.entry(post.author).or_default().insert(post.id);
        }
        for _ in 0..10 {
            let author = rng.gen_range(0..20);
            let id = rng.gen_range(0..next_id + 2);
            let removed = model.get_mut(&author).is_some_and(|ids| ids.remove(&id));
            assert_eq!(store.delete_post(author, id).unwrap(), removed);
        }
    }
    for _ in 0..500 {
        let author = rng.gen_range(0..21);
        let bound = |rng: &mut StdRng| rng.gen_bool(0.7).then(|| rng.gen_range(0..next_id + 2));
        let (before, after, limit) = (bound(&mut rng), bound(&mut rng), rng.gen_range(0..60));
        let ids_in_range = model
            .get(&author)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&id| before.is_none_or(|before| id < before) && after.is_none_or(|after| id > after));
        let ascending: Vec<u64> = ids_in_range.clone().take(limit).collect();
        let descending: Vec<u64> = ids_in_range.rev().take(limit).collect();
        assert_eq!(ids(&store.author_posts(author, after, before, Order::NewestFirst, limit).unwrap()), descending);
        assert_eq!(ids(&store.author_posts(author, after, before, Order::OldestFirst, limit).unwrap()), ascending);
    }
    for per_author in [1, 5, 40, 1000] {
        let expected: Vec<u64> =
            model.values().rev().flat_map(|ids| ids.iter().rev().take(per_author).copied()).collect();
        assert_eq!(ids(&recent_posts(&store, per_author)), expected, "{per_author}");
    }
}

#[test]
fn a_block_and_its_unfollows_are_one_batch() {
    let dir = TempDir::new("edge-batch");
    let store = Store::open(dir.path(), Durability::Fsync).unwrap();
    store.set_edge(Edge::Follow, 1, 2, true).unwrap();
    store.set_edge(Edge::Follow, 2, 1, true).unwrap();
    let block = [(Edge::Follow, 1, 2, false), (Edge::Follow, 2, 1, false), (Edge::Block, 1, 2, true)];
    store.set_edges(&block).unwrap();
    assert_eq!(edges(&store), BTreeSet::from([(1, 1, 2)]));
    assert_eq!(reverse_edges(&store, Edge::Follow), BTreeSet::new());
    store.set_edges(&block).unwrap();
    assert_eq!(edges(&store), BTreeSet::from([(1, 1, 2)]), "repeating it changes nothing");
    drop(store);
    let store = Store::open(dir.path(), Durability::Fsync).unwrap();
    assert_eq!(edges(&store), BTreeSet::from([(1, 1, 2)]), "durable");
}
