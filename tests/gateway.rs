//! A gateway's OPEN against the real daemon on 127.0.0.1:0: all or nothing
//! (SPEC.md §4.21). A refused OPEN leaves no trace in what anyone can see:
//! no version or last seen moves (§6.4, §6.6), no session is left open, no
//! watcher hears of it.

mod common;

use std::time::Duration;

use common::*;
use heartline_proto::*;

/// Users at most this many sessions each, in this test's daemon.
const CAP: u8 = 2;

async fn open(gateway: &mut Client, users: &[u64]) -> Message {
    let entries =
        users.iter().map(|&user| OpenEntry { user, device: Device::Mobile, status: Status::Online }).collect();
    gateway.request(|req| Message::Open { req, entries }).await
}

async fn stats(client: &mut Client) -> Stats {
    match client.request(|req| Message::Stats { req }).await {
        Message::StatsReply { stats, .. } => stats,
        other => panic!("expected STATS_REPLY, got {other:?}"),
    }
}

/// Waits until the daemon has written `user`'s last seen to its store and
/// answers for them from there (version `last_seen_ms << 16`, §6.4), so that
/// nothing but an OPEN can move what a query shows of them.
async fn settled_offline(asker: &mut Client, user: u64) -> PresenceEntry {
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        let entry = asker.query(&[user]).await.remove(0);
        assert_eq!(entry.status, Status::Offline);
        if entry.last_seen_ms > 0 && entry.version == entry.last_seen_ms << 16 {
            return entry;
        }
        assert!(tokio::time::Instant::now() < until, "last seen of {user} never reached the store: {entry:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_refused_open_changes_nothing_anyone_can_see() {
    let daemon = Daemon::start_with(|c| {
        c.presence.max_sessions_per_user = CAP;
        // Nothing may expire while the test looks.
        c.presence.ttl = Duration::from_secs(60);
    })
    .await;
    // u holds the cap; away is online, on one device; gone went offline
    // (known from the store only); never was never seen.
    let (u, away, gone, never) = (10, 11, 12, 13);
    let _u_desktop = daemon.user(u).await;
    let _u_phone = daemon.user(u).await;
    let mut away_client = daemon.user(away).await;
    away_client.set_status(Status::Away, "out").await;
    let mut leaving = daemon.user(gone).await;
    leaving.send(Message::Bye).await;
    let _ = leaving.closing_error().await;
    let mut watcher = daemon.watcher().await;
    settled_offline(&mut watcher, gone).await;
    // Let what others see settle into 100 ms ticks that a new change would move.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let users = [u, away, gone, never];
    let before = watcher.watch(&users).await;
    assert_eq!(
        before.iter().map(|e| e.status).collect::<Vec<_>>(),
        [Status::Online, Status::Away, Status::Offline, Status::Offline]
    );
    assert_eq!((before[3].version, before[3].last_seen_ms), (0, 0), "never seen");
    let stats_before = stats(&mut watcher).await;

    let mut gateway = daemon.gateway("edge-1", false).await;
    // u is at the cap, wherever it comes in the OPEN; away has room for one
    // more session but not for two.
    let refused: [&[u64]; 4] = [&[gone, u], &[away, gone, never, u], &[u, never], &[never, away, away]];
    for users in refused {
        match open(&mut gateway, users).await {
            Message::Error { code, .. } => {
                assert_eq!(ErrorCode::from_u16(code), Some(ErrorCode::LimitExceeded), "OPEN {users:?}")
            }
            other => panic!("OPEN {users:?}: expected LIMIT_EXCEEDED, got {other:?}"),
        }
    }

    // No watcher heard of it; nothing moved for anyone; no session was left open.
    if let Some(frame) = watcher.try_recv(Duration::from_millis(500)).await {
        panic!("the watcher got {frame:?}");
    }
    assert_eq!(watcher.query(&users).await, before);
    assert_eq!(gateway.query(&users).await, before);
    assert_eq!(stats(&mut gateway).await.sessions, stats_before.sessions);
    assert_eq!(
        Stats { connections: stats_before.connections, ..stats(&mut watcher).await },
        stats_before,
        "the same sessions, online users and watches (the gateway's connection aside)"
    );

    // What fits is opened as before, with the pushes it brings.
    let Message::Opened { sessions, .. } = open(&mut gateway, &[gone, never, away]).await else {
        panic!("expected OPENED")
    };
    assert_eq!(sessions.len(), 3);
    let came = watcher.push_for(never).await;
    assert_eq!(came.status, Status::Online);
    assert!(came.version > 0 && came.last_seen_ms > 0);
    assert!(watcher.query(&[gone]).await[0].version > before[2].version);
    assert_eq!(stats(&mut gateway).await.sessions, stats_before.sessions + 3);
}
