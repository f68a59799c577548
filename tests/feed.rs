//! The feed against the real daemon, in each strategy: publish and read your
//! writes, cursor pages across the hot/cold boundary, delete, unfollow,
//! follow and block on existing items, regeneration after inactivity, and
//! live pushes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use heartline_core::feed::Strategy;
use heartline_proto::*;

const STRATEGIES: [Strategy; 3] = [Strategy::Pull, Strategy::Push, Strategy::Hybrid];

/// Small windows so a handful of posts crosses into the store.
async fn daemon(strategy: Strategy) -> Daemon {
    Daemon::start_with(|c| {
        c.feed.strategy = strategy;
        c.feed.hot_items = 3;
        c.feed.inbox_cap = 4;
        c.feed.hot_window = Duration::ZERO;
        c.feed.archive_interval = Duration::from_millis(100);
        c.feed.celebrity_followers = 2;
        c.presence.ttl = Duration::from_secs(60);
    })
    .await
}

impl Client {
    async fn post(&mut self, text: &str) -> u64 {
        let payload = Bytes::copy_from_slice(text.as_bytes());
        match self.request(|req| Message::Publish { req, kind: 1, payload }).await {
            Message::Published { post, .. } => post,
            other => panic!("expected PUBLISHED, got {other:?}"),
        }
    }

    async fn graph(&mut self, op: GraphOp, user: u64) {
        let reply = self.request(|req| Message::Graph { req, op, user }).await;
        assert!(matches!(reply, Message::Ok { .. }), "{op:?} {user}: {reply:?}");
    }

    async fn page(&mut self, source: Source, cursor: Cursor, limit: u8) -> Vec<u64> {
        match self.request(|req| Message::Timeline { req, source, cursor, limit }).await {
            Message::Page { items, .. } => items.iter().map(|i| i.post).collect(),
            other => panic!("expected PAGE, got {other:?}"),
        }
    }

    async fn home(&mut self, limit: u8) -> Vec<u64> {
        self.page(Source::Home, Cursor::default(), limit).await
    }

    /// Every page of a timeline, following max_id.
    async fn all(&mut self, source: Source, limit: u8) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cursor = Cursor::default();
        loop {
            let page = self.page(source, cursor, limit).await;
            let Some(&last) = page.last() else { return out };
            out.extend(page);
            cursor.max_id = Some(last);
        }
    }
}

fn newest_first(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

#[tokio::test]
async fn publish_is_acked_and_read_at_once() {
    for strategy in STRATEGIES {
        let daemon = daemon(strategy).await;
        let mut author = daemon.user(1).await;
        let id = author.post("hello").await;
        assert_eq!(author.home(10).await, [id], "{strategy:?}");
        let Message::Page { items, .. } = author
            .request(|req| Message::Timeline { req, source: Source::Author(1), cursor: Cursor::default(), limit: 1 })
            .await
        else {
            panic!()
        };
        assert_eq!((items[0].kind, &items[0].payload[..]), (1, &b"hello"[..]));
    }
}

#[tokio::test]
async fn pages_cross_from_memory_to_the_store_without_gap_or_duplicate() {
    for strategy in STRATEGIES {
        let daemon = daemon(strategy).await;
        let mut reader = daemon.user(1).await;
        let mut writers = [daemon.user(2).await, daemon.user(3).await];
        reader.graph(GraphOp::Follow, 2).await;
        reader.graph(GraphOp::Follow, 3).await;
        reader.home(1).await;
        let mut posted = Vec::new();
        for round in 0..5 {
            for writer in writers.iter_mut() {
                posted.push(writer.post(&format!("{round}")).await);
            }
        }
        posted.push(reader.post("mine").await);
        // Let the archiver move what is past the hot window out of memory.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let expected = newest_first(posted);
        for limit in [1, 3, 100] {
            assert_eq!(reader.all(Source::Home, limit).await, expected, "{strategy:?}, pages of {limit}");
        }
        let mine = reader.all(Source::Author(2), 2).await;
        assert_eq!(mine.len(), 5, "{strategy:?}: an author's posts page through the store too");
        let past = Cursor { max_id: expected.last().copied(), ..Cursor::default() };
        assert!(reader.page(Source::Home, past, 10).await.is_empty(), "{strategy:?}: a cursor past the end");
        let newer = Cursor { min_id: Some(expected[2]), ..Cursor::default() };
        assert_eq!(reader.page(Source::Home, newer, 10).await, expected[..2], "{strategy:?}: min_id");
    }
}

#[tokio::test]
async fn empty_and_single_page_timelines() {
    for strategy in STRATEGIES {
        let daemon = daemon(strategy).await;
        let mut reader = daemon.user(1).await;
        assert!(reader.home(20).await.is_empty(), "{strategy:?}");
        let id = reader.post("only").await;
        assert_eq!(reader.all(Source::Home, 20).await, [id], "{strategy:?}");
    }
}

#[tokio::test]
async fn delete_unfollow_follow_and_block_apply_to_existing_items() {
    for strategy in STRATEGIES {
        let daemon = daemon(strategy).await;
        let mut reader = daemon.user(1).await;
        let mut a = daemon.user(2).await;
        let mut b = daemon.user(3).await;
        reader.graph(GraphOp::Follow, 2).await;
        reader.home(1).await;
        let kept = a.post("kept").await;
        let gone = a.post("gone").await;
        let by_b = b.post("b").await;
        let ok = a.request(|req| Message::Delete { req, post: gone }).await;
        assert!(matches!(ok, Message::Ok { .. }), "{ok:?}");
        assert_eq!(reader.all(Source::Home, 10).await, [kept], "{strategy:?}: delete");
        let missing = b.request(|req| Message::Delete { req, post: kept }).await;
        assert!(matches!(missing, Message::Error { code, .. } if code == ErrorCode::NotFound as u16), "not b's post");

        reader.graph(GraphOp::Follow, 3).await;
        assert_eq!(reader.all(Source::Home, 10).await, newest_first(vec![kept, by_b]), "{strategy:?}: follow merges");
        reader.graph(GraphOp::Unfollow, 2).await;
        assert_eq!(reader.all(Source::Home, 10).await, [by_b], "{strategy:?}: unfollow removes");
        b.graph(GraphOp::Block, 1).await;
        assert!(reader.all(Source::Home, 10).await.is_empty(), "{strategy:?}: block removes the follow");
        assert!(reader.all(Source::Author(3), 10).await.is_empty(), "{strategy:?}: and hides the author");
        let mine = reader.post("mine").await;
        assert!(b.all(Source::Author(1), 10).await.is_empty(), "{strategy:?}: both ways");
        reader.graph(GraphOp::Follow, 3).await;
        assert_eq!(reader.all(Source::Home, 10).await, [mine], "{strategy:?}: no follow across a block");
    }
}

#[tokio::test]
async fn a_returning_reader_gets_full_pages_while_the_inbox_is_rebuilt() {
    let daemon = Daemon::start_with(|c| {
        c.feed.strategy = Strategy::Hybrid;
        c.feed.active_window = Duration::from_millis(300);
        c.feed.archive_interval = Duration::from_millis(100);
        c.presence.ttl = Duration::from_secs(60);
    })
    .await;
    let mut reader = daemon.user(1).await;
    let mut author = daemon.user(2).await;
    reader.graph(GraphOp::Follow, 2).await;
    reader.home(1).await;
    let first = author.post("while active").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Inactive now: the inbox was dropped and this post is not pushed.
    let second = author.post("while away").await;
    assert_eq!(reader.home(10).await, [second, first], "served by pull, complete");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(reader.home(10).await, [second, first], "then from the rebuilt inbox");
}

#[tokio::test]
async fn live_readers_get_new_and_deleted_items() {
    for strategy in STRATEGIES {
        let daemon = daemon(strategy).await;
        let mut reader = daemon.user(1).await;
        let mut author = daemon.user(2).await;
        reader.graph(GraphOp::Follow, 2).await;
        let ok = reader.request(|req| Message::Live { req, on: true }).await;
        assert!(matches!(ok, Message::Ok { .. }));
        let id = author.post("live").await;
        let pushed = loop {
            if let Message::ItemPush(item) = reader.recv().await {
                break item;
            }
        };
        assert_eq!((pushed.post, pushed.author, &pushed.payload[..]), (id, 2, &b"live"[..]), "{strategy:?}");
        author.request(|req| Message::Delete { req, post: id }).await;
        loop {
            if let Message::DeletedPush { post } = reader.recv().await {
                assert_eq!(post, id, "{strategy:?}");
                break;
            }
        }
    }
}

#[tokio::test]
async fn feed_limits_and_roles() {
    let daemon = Daemon::start_with(|c| {
        c.feed.max_payload = 8;
        c.feed.max_following = 1;
    })
    .await;
    let mut user = daemon.user(1).await;
    let too_big =
        user.request(|req| Message::Publish { req, kind: 0, payload: Bytes::from_static(b"123456789") }).await;
    assert!(matches!(too_big, Message::Error { code, .. } if code == ErrorCode::PayloadTooLarge as u16));
    user.graph(GraphOp::Follow, 2).await;
    let over = user.request(|req| Message::Graph { req, op: GraphOp::Follow, user: 3 }).await;
    assert!(matches!(over, Message::Error { code, .. } if code == ErrorCode::LimitExceeded as u16));
    let mut gateway = daemon.watcher().await;
    let refused = gateway
        .request(|req| Message::Timeline { req, source: Source::Home, cursor: Cursor::default(), limit: 5 })
        .await;
    assert!(matches!(refused, Message::Error { code, .. } if code == ErrorCode::Forbidden as u16));
}
