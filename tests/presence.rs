//! Presence against the real daemon on 127.0.0.1:0: authentication,
//! aggregation, expiry, grace, versions, watches, privacy, UDP, back-pressure
//! and last seen across a restart.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use heartline::auth::Subject;
use heartline_proto::*;

#[tokio::test]
async fn missing_forged_expired_and_misused_tokens_are_refused() {
    let daemon = Daemon::start().await;
    assert_eq!(refused(&daemon, Bytes::new(), Role::Client).await, Some(ErrorCode::BadToken));
    let mut forged = daemon.user_token(1).to_vec();
    forged[5] ^= 1;
    assert_eq!(refused(&daemon, forged.into(), Role::Client).await, Some(ErrorCode::BadToken));
    let expired = daemon.token(Subject::User(1), -10);
    assert_eq!(refused(&daemon, expired, Role::Client).await, Some(ErrorCode::TokenExpired));
    let user_as_gateway = daemon.user_token(1);
    assert_eq!(refused(&daemon, user_as_gateway, Role::Gateway).await, Some(ErrorCode::BadToken));
}

#[tokio::test]
async fn nothing_but_hello_before_welcome_and_a_deadline_for_it() {
    let daemon = Daemon::start_with(|c| c.limits.handshake_timeout = Duration::from_millis(300)).await;
    let mut early = daemon.connect().await;
    early.send(Message::Stats { req: 1 }).await;
    assert_eq!(early.closing_error().await, Some(ErrorCode::Unauthenticated));
    let mut silent = daemon.connect().await;
    assert_eq!(silent.closing_error().await, Some(ErrorCode::HandshakeTimeout));
}

#[tokio::test]
async fn devices_aggregate_and_invisible_reads_offline() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    assert_eq!(watcher.watch(&[1]).await[0].status, Status::Offline);

    let mut desktop = daemon.user(1).await;
    assert_eq!(watcher.push_for(1).await.status, Status::Online);
    let mut phone = daemon.user(1).await;
    phone.set_status(Status::Away, "").await;
    watcher.no_push_for(1, Duration::from_millis(200)).await;

    desktop.set_status(Status::Busy, "deep work").await;
    let busy = watcher.push_for(1).await;
    assert_eq!((busy.status, busy.text.as_str()), (Status::Busy, "deep work"));

    desktop.set_status(Status::Invisible, "").await;
    assert_eq!(watcher.push_for(1).await.status, Status::Away, "the phone still shows");
    phone.set_status(Status::Invisible, "").await;
    let hidden = watcher.push_for(1).await;
    assert_eq!((hidden.status, hidden.text.as_str()), (Status::Offline, ""));
    assert_eq!(desktop.query(&[1]).await[0].status, Status::Invisible, "the user sees themself");
}

#[tokio::test]
async fn a_dead_client_expires_soon_after_its_ttl() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[2]).await;
    let mut quiet = daemon.user(2).await;
    let online = watcher.push_for(2).await;
    let started = tokio::time::Instant::now();
    let offline = watcher.push_for(2).await;
    let took = started.elapsed();
    assert_eq!(offline.status, Status::Offline);
    assert!(offline.version > online.version);
    // Reported after the TTL (counted from HELLO, a little before `started`),
    // and at most 1 s after it ends.
    let ttl = daemon.config.presence.ttl;
    eprintln!("dead client reported {took:?} after its last frame (TTL {ttl:?})");
    assert!(took + Duration::from_millis(200) >= ttl, "offline early, after {took:?}");
    assert!(took <= ttl + Duration::from_secs(1), "offline after {took:?}");
    assert_eq!(quiet.closing_error().await, Some(ErrorCode::SessionExpired));
}

#[tokio::test]
async fn heartbeats_keep_a_session_online() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[3]).await;
    let mut alive = daemon.user(3).await;
    watcher.push_for(3).await;
    alive.heartbeat_for(daemon.config.presence.ttl * 2).await;
    watcher.no_push_for(3, Duration::from_millis(100)).await;
    assert_eq!(watcher.query(&[3]).await[0].status, Status::Online);
}

#[tokio::test]
async fn a_reconnect_inside_the_grace_window_makes_no_events() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[4]).await;
    let first = daemon.user(4).await;
    watcher.push_for(4).await;
    drop(first);
    let mut second = daemon.user(4).await;
    second.heartbeat_for(daemon.config.presence.grace * 2).await;
    watcher.no_push_for(4, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn resume_keeps_the_session_id() {
    let daemon = Daemon::start().await;
    let first = daemon.user(4).await;
    let session = first.session();
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resumed = daemon.hello(Role::Client, daemon.user_token(4), false, session).await;
    assert_eq!(resumed.session(), session);
}

#[tokio::test]
async fn without_a_reconnect_the_grace_window_ends_offline_at_the_moment_of_loss() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[5]).await;
    let gone = daemon.user(5).await;
    watcher.push_for(5).await;
    let lost_at = heartline::server::now_ms();
    drop(gone);
    let offline = watcher.push_for(5).await;
    assert_eq!(offline.status, Status::Offline);
    assert!(offline.last_seen_ms.abs_diff(lost_at) <= 200, "{} vs {lost_at}", offline.last_seen_ms);
}

#[tokio::test]
async fn bye_goes_offline_at_once() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[6]).await;
    let mut leaving = daemon.user(6).await;
    watcher.push_for(6).await;
    let sent = tokio::time::Instant::now();
    leaving.send(Message::Bye).await;
    assert_eq!(watcher.push_for(6).await.status, Status::Offline);
    assert!(sent.elapsed() < Duration::from_millis(300), "no grace window after BYE");
}

#[tokio::test]
async fn pushed_versions_only_grow_and_match_queries() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    let mut user = daemon.user(7).await;
    let snapshot = watcher.watch(&[7]).await[0].clone();
    let mut last = snapshot.version;
    for status in [Status::Away, Status::Busy, Status::Online, Status::Away, Status::Busy] {
        user.set_status(status, "").await;
        let pushed = watcher.push_for(7).await;
        assert_eq!(pushed.status, status);
        assert!(pushed.version > last);
        last = pushed.version;
    }
    assert_eq!(watcher.query(&[7]).await[0].version, last);
}

#[tokio::test]
async fn watch_gives_a_snapshot_then_pushes_until_unwatched() {
    let daemon = Daemon::start_with(|c| c.limits.max_watch = 3).await;
    let mut online = daemon.user(8).await;
    online.set_status(Status::Busy, "on call").await;
    let mut watcher = daemon.user(100).await;
    let snapshot = watcher.watch(&[8, 9]).await;
    assert_eq!((snapshot[0].user, snapshot[0].status, snapshot[0].text.as_str()), (8, Status::Busy, "on call"));
    assert_eq!((snapshot[1].user, snapshot[1].status, snapshot[1].last_seen_ms), (9, Status::Offline, 0));
    let over = watcher.request(|req| Message::Watch { req, users: vec![10, 11] }).await;
    assert!(matches!(over, Message::Error { code, .. } if code == ErrorCode::LimitExceeded as u16));

    online.set_status(Status::Away, "").await;
    assert_eq!(watcher.push_for(8).await.status, Status::Away);
    let ok = watcher.request(|req| Message::Unwatch { req, users: vec![8] }).await;
    assert!(matches!(ok, Message::Ok { .. }));
    online.set_status(Status::Online, "").await;
    watcher.no_push_for(8, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn blocked_viewers_and_invisible_users_see_offline_through_the_policy_point() {
    let daemon = Daemon::start().await;
    let mut blocker = daemon.user(11).await;
    let ok = blocker.request(|req| Message::Graph { req, op: GraphOp::Block, user: 12 }).await;
    assert!(matches!(ok, Message::Ok { .. }), "{ok:?}");
    let mut blocked = daemon.user(12).await;
    let mut stranger = daemon.user(13).await;
    let seen = blocked.watch(&[11]).await[0].clone();
    assert_eq!((seen.status, seen.version, seen.last_seen_ms), (Status::Offline, 0, 0));
    assert_eq!(blocker.query(&[12]).await[0].status, Status::Offline, "blocks work both ways");
    assert_eq!(stranger.watch(&[11]).await[0].status, Status::Online);
    blocker.set_status(Status::Busy, "").await;
    assert_eq!(stranger.push_for(11).await.status, Status::Busy);
    blocked.no_push_for(11, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn stats_count_users_sessions_watches_and_connections() {
    let daemon = Daemon::start().await;
    let mut a = daemon.user(21).await;
    let _b = daemon.user(21).await;
    a.watch(&[1, 2]).await;
    let Message::StatsReply { stats, .. } = a.request(|req| Message::Stats { req }).await else { panic!() };
    assert_eq!(stats, Stats { online_users: 1, sessions: 2, watches: 2, connections: 2 });
}

#[tokio::test]
async fn udp_heartbeats_are_authenticated_and_replays_dropped() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[30]).await;
    let client = daemon.hello(Role::Client, daemon.user_token(30), true, 0).await;
    watcher.push_for(30).await;
    let welcome = client.welcome.clone().unwrap();
    assert_eq!(welcome.udp_port, daemon.running.udp.port());
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = |bytes: BytesMut| {
        let socket = &socket;
        let to = daemon.running.udp;
        async move { socket.send_to(&bytes, to).await.unwrap() }
    };

    let mut away = BytesMut::new();
    udp::write_heartbeat(&mut away, &welcome.udp_key, welcome.session, 1, Some(Status::Away));
    send(away.clone()).await;
    assert_eq!(watcher.push_for(30).await.status, Status::Away);

    send(away).await;
    let mut forged = BytesMut::new();
    udp::write_heartbeat(&mut forged, &[7; 16], welcome.session, 2, Some(Status::Busy));
    send(forged).await;
    let mut unknown = BytesMut::new();
    udp::write_heartbeat(&mut unknown, &welcome.udp_key, welcome.session + 64, 3, Some(Status::Busy));
    send(unknown).await;
    watcher.no_push_for(30, Duration::from_millis(300)).await;
    let metrics = daemon.metrics().await;
    for reason in ["replayed", "bad_tag", "unknown_id"] {
        assert_eq!(sample(&metrics, &format!("heartline_udp_dropped_total{{reason=\"{reason}\"}}")), 1, "{reason}");
    }
    assert_eq!(sample(&metrics, "heartline_heartbeats_total{path=\"udp\"}"), 1);
}

#[tokio::test]
async fn gateway_sessions_over_tcp_and_udp_batches() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[40, 41]).await;
    let mut gateway = daemon.gateway("edge-1", true).await;
    let entries = [40, 41].map(|user| OpenEntry { user, device: Device::Mobile, status: Status::Online }).to_vec();
    let Message::Opened { sessions, .. } = gateway.request(|req| Message::Open { req, entries }).await else {
        panic!("expected OPENED")
    };
    watcher.push_for(40).await;
    let mut sorted = sessions.clone();
    sorted.sort_unstable();

    let batch = Batch::encode(&[(sorted[0], None), (sorted[1], Some(Status::Busy))]).unwrap();
    gateway.send(Message::BatchHeartbeat(batch)).await;
    let busy_user = if sorted[1] == sessions[0] { 40 } else { 41 };
    assert_eq!(watcher.push_for(busy_user).await.status, Status::Busy);

    let welcome = gateway.welcome.clone().unwrap();
    let mut datagram = BytesMut::new();
    udp::write_batch(&mut datagram, &welcome.udp_key, welcome.session, 1, &[(sorted[1], Some(Status::Away))]).unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&datagram, daemon.running.udp).await.unwrap();
    assert_eq!(watcher.push_for(busy_user).await.status, Status::Away);

    let stranger = Batch::encode(&[(sorted[1] + 6400, None)]).unwrap();
    gateway.send(Message::BatchHeartbeat(stranger)).await;
    assert!(matches!(gateway.reply().await, Message::Error { code, .. } if code == ErrorCode::NotFound as u16));
}

#[tokio::test]
async fn a_slow_consumer_is_coalesced_then_closed() {
    let daemon = Daemon::start_with(|c| c.limits.outbound_queue = 64).await;
    let users: Vec<u64> = (1_000..3_000).collect();
    let mut gateway = daemon.gateway("flood", false).await;
    let entries: Vec<_> =
        users.iter().map(|&user| OpenEntry { user, device: Device::Web, status: Status::Online }).collect();
    let Message::Opened { sessions, .. } = gateway.request(|req| Message::Open { req, entries }).await else {
        panic!()
    };
    let sorted = |ids: &[u64]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids
    };
    let (few, all) = (sorted(&sessions[..32]), sorted(&sessions));
    let flip = |round: usize, ids: &[u64]| {
        let status = if round.is_multiple_of(2) { Status::Away } else { Status::Busy };
        Message::BatchHeartbeat(Batch::encode(&ids.iter().map(|&id| (id, Some(status))).collect::<Vec<_>>()).unwrap())
    };
    // Only the watcher's queue can coalesce: the gateway watches nothing.
    let coalesced = async || daemon.metric("heartline_watch_events_coalesced_total").await;

    // From here on the watcher reads nothing. Changes of the 32 users it
    // watches (under the bound of 64) fill its socket, then coalesce.
    let mut watcher = daemon.watcher().await;
    watcher.watch(&users[..32]).await;
    let mut round = 0;
    while round % 64 != 0 || coalesced().await == 0 {
        gateway.send(flip(round, &few)).await;
        round += 1;
        assert!(round < 1_000_000, "the watcher's queue never coalesced");
    }
    assert_eq!(daemon.metric("heartline_connections").await, 2, "coalescing closes nothing");

    // Watching everyone, a change of all 2,000 users passes the bound.
    for (req, chunk) in users[32..].chunks(limits::MAX_IDS).enumerate() {
        watcher.send(Message::Watch { req: req as u64, users: chunk.to_vec() }).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.send(flip(round, &all)).await;
    assert_eq!(watcher.closing_error().await, Some(ErrorCode::SlowConsumer));
}

#[tokio::test]
async fn last_seen_survives_a_restart() {
    let daemon = Daemon::start().await;
    let mut user = daemon.user(50).await;
    user.send(Message::Bye).await;
    let _ = user.closing_error().await;
    let mut asker = daemon.user(100).await;
    let before = asker.query(&[50]).await[0].clone();
    assert_eq!(before.status, Status::Offline);
    assert!(before.last_seen_ms > 0);
    drop(asker);

    let daemon = daemon.restart().await;
    let mut asker = daemon.user(100).await;
    let after = asker.query(&[50]).await[0].clone();
    assert_eq!((after.status, after.last_seen_ms), (Status::Offline, before.last_seen_ms));
}
