//! Fanout back-pressure against the real daemon: while the fanout queue is
//! full, PUBLISH and DELETE are refused with UNAVAILABLE before anything is
//! written, other feed requests and store writes go on, and once the queue
//! drains the same requests are accepted and fanned out again.
//!
//! The queue is made full deterministically with its budget,
//! `limits.fanout_queue`: 0 refuses every request, and a reload (what SIGHUP
//! does) opens it again.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use heartline_client::{Backoff, Client, ClientConfig, ClientError, LiveEvent};
use heartline_proto::{Cursor, ErrorCode};

async fn connect(daemon: &Daemon, user: u64) -> Client {
    let config = ClientConfig {
        reconnect: Some(Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(500) }),
        ..ClientConfig::new(daemon.running.tcp.to_string(), daemon.user_token(user))
    };
    Client::connect(config).await.unwrap()
}

fn refused(result: Result<impl std::fmt::Debug, ClientError>) {
    match result {
        Err(ClientError::Server { code: ErrorCode::Unavailable, message }) => {
            assert!(message.contains("fanout queue full"), "{message}")
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}

async fn next(live: &mut heartline_client::LiveStream) -> LiveEvent {
    tokio::time::timeout(PATIENCE, live.next()).await.expect("no live event in time").expect("stream ended")
}

/// Waits until every fanout job admitted so far has finished.
async fn drained(daemon: &Daemon) {
    let until = tokio::time::Instant::now() + PATIENCE;
    while daemon.metric("heartline_fanout_queue_depth").await > 0 {
        assert!(tokio::time::Instant::now() < until, "the fanout queue did not drain");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_full_fanout_queue_refuses_publish_and_delete_until_it_drains() {
    let mut daemon = Daemon::start_with(|c| c.presence.ttl = Duration::from_secs(60)).await;
    let (author, reader, other) = (connect(&daemon, 1).await, connect(&daemon, 2).await, connect(&daemon, 3).await);
    reader.follow(1).await.unwrap();
    let mut live = reader.live().await.unwrap();
    let kept = author.post(1, "before").await.unwrap();
    assert!(matches!(next(&mut live).await, LiveEvent::Item(ref i) if i.post == kept));
    drained(&daemon).await;

    // No budget left: the queue counts as full.
    let mut reloadable = daemon.running.take_reloadable().expect("reloadable");
    let mut full = daemon.config.clone();
    full.limits.fanout_queue = 0;
    reloadable.reload(full);
    assert_eq!(daemon.metric("heartline_fanout_queue_capacity").await, 0);

    refused(author.post(1, "refused").await);
    refused(author.delete(kept).await);
    assert_eq!(daemon.metric("heartline_fanout_refused_total{op=\"publish\"}").await, 1);
    assert_eq!(daemon.metric("heartline_fanout_refused_total{op=\"delete\"}").await, 1);
    // Requests without fanout, store writes among them, do not wait behind it.
    other.follow(1).await.unwrap();
    // Nothing was written: the refused post is nowhere, the refused delete left the post.
    let posts = |items: Vec<heartline_proto::Item>| items.into_iter().map(|i| i.post).collect::<Vec<_>>();
    assert_eq!(posts(author.author_timeline(1, Cursor::default(), 10).await.unwrap()), [kept]);
    assert_eq!(posts(reader.home_timeline(Cursor::default(), 10).await.unwrap()), [kept]);
    assert_eq!(posts(other.home_timeline(Cursor::default(), 10).await.unwrap()), [kept]);

    // Room again: accepted, and fanned out (the next live event is the new
    // post: the refused one was never pushed).
    reloadable.reload(daemon.config.clone());
    let again = author.post(2, "after").await.unwrap();
    assert!(matches!(next(&mut live).await, LiveEvent::Item(ref i) if i.post == again && i.kind == 2));
    author.delete(kept).await.unwrap();
    assert_eq!(next(&mut live).await, LiveEvent::Deleted { post: kept });
    assert_eq!(posts(reader.home_timeline(Cursor::default(), 10).await.unwrap()), [again]);
    drained(&daemon).await;
    assert_eq!(daemon.metric("heartline_fanout_refused_total{op=\"publish\"}").await, 1);
}
