//! The client SDK against the real daemon on 127.0.0.1:0: typed connect
//! errors, heartbeats over TCP and UDP, watch streams, reconnection with
//! resumption (after a dropped connection, after GOAWAY, across a restart),
//! and the feed calls.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use heartline::auth::Subject;
use heartline_client::{Backoff, Client, ClientConfig, ClientError, LiveEvent, State, WatchStream};
use heartline_proto::{Cursor, ErrorCode, GoawayReason, Message, PresenceEntry, Status};

fn config(daemon: &Daemon, user: u64) -> ClientConfig {
    ClientConfig {
        reconnect: Some(Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(500) }),
        ..ClientConfig::new(daemon.running.tcp.to_string(), daemon.user_token(user))
    }
}

async fn connect(daemon: &Daemon, user: u64) -> Client {
    Client::connect(config(daemon, user)).await.unwrap()
}

/// The next entry of a watch stream, or a panic after [`PATIENCE`].
async fn next(stream: &mut WatchStream) -> PresenceEntry {
    tokio::time::timeout(PATIENCE, stream.next()).await.expect("no entry in time").expect("stream ended")
}

async fn nothing_within(stream: &mut WatchStream, wait: Duration) {
    if let Ok(entry) = tokio::time::timeout(wait, stream.next()).await {
        panic!("unexpected {entry:?}");
    }
}

/// Waits until the client is connected again after a loss; returns whether
/// the session was resumed.
async fn reconnected(client: &Client) -> bool {
    let mut state = client.state();
    let lost = tokio::time::timeout(PATIENCE, state.wait_for(|s| matches!(s, State::Reconnecting { .. })));
    lost.await.expect("connection not lost").unwrap();
    let back = tokio::time::timeout(PATIENCE * 2, state.wait_for(|s| matches!(s, State::Connected { .. })));
    let back = back.await.expect("not reconnected").unwrap();
    matches!(*back, State::Connected { resumed: true, .. })
}

/// A client of `user` whose connections go through `proxy`, which can cut
/// them as a network failure (or, with GOAWAY, a draining server) would.
async fn connect_through(proxy: &Proxy, daemon: &Daemon, user: u64) -> Client {
    Client::connect(ClientConfig { addr: proxy.addr.to_string(), ..config(daemon, user) }).await.unwrap()
}

#[tokio::test]
async fn connect_errors_are_typed() {
    let daemon = Daemon::start().await;
    let addr = daemon.running.tcp.to_string();
    let refused = |token| Client::connect(ClientConfig::new(addr.clone(), token));
    let code = |r: Result<Client, ClientError>| r.err().and_then(|e| e.code());

    assert_eq!(code(refused(b"not a token".to_vec().into()).await), Some(ErrorCode::BadToken));
    assert_eq!(code(refused(daemon.token(Subject::User(1), -10)).await), Some(ErrorCode::TokenExpired));
    let gateway_as_client = daemon.token(Subject::Gateway("edge".into()), 60);
    assert_eq!(code(refused(gateway_as_client).await), Some(ErrorCode::BadToken));

    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let unreachable = Client::connect(ClientConfig::new(nobody.to_string(), daemon.user_token(1))).await;
    assert!(matches!(unreachable, Err(ClientError::Io(_))), "{:?}", unreachable.err());
}

#[tokio::test]
async fn heartbeats_keep_a_session_alive_past_the_ttl() {
    let daemon = Daemon::start().await;
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[1]).await;
    let client = connect(&daemon, 1).await;
    let session = client.session();
    assert_eq!(watcher.push_for(1).await.status, Status::Online);

    let ttl = daemon.config.presence.ttl;
    watcher.no_push_for(1, ttl * 2).await;
    assert_eq!(client.session(), session, "never reconnected");
    let beats = daemon.metric("heartline_heartbeats_total{path=\"tcp\"}").await;
    let due = (ttl * 2).as_millis() / daemon.config.presence.heartbeat_interval.as_millis();
    assert!(beats + 1 >= due as u64, "{beats} heartbeats, {due} due");
}

#[tokio::test]
async fn udp_heartbeats_are_used_when_granted() {
    let daemon = Daemon::start().await;
    let client = Client::connect(ClientConfig { want_udp: true, ..config(&daemon, 2) }).await.unwrap();
    let State::Connected { welcome, .. } = client.state().borrow().clone() else { panic!("not connected") };
    assert_ne!(welcome.udp_port, 0);
    let mut watcher = daemon.watcher().await;
    watcher.watch(&[2]).await;
    watcher.no_push_for(2, daemon.config.presence.ttl * 2).await;
    let metrics = daemon.metrics().await;
    let udp = sample(&metrics, "heartline_heartbeats_total{path=\"udp\"}");
    assert!(udp >= 4, "{udp} UDP heartbeats");
    assert_eq!(sample(&metrics, "heartline_heartbeats_total{path=\"tcp\"}"), 0);
    assert_eq!(watcher.query(&[2]).await[0].status, Status::Online);
}

#[tokio::test]
async fn a_watch_gives_a_snapshot_then_pushes() {
    let daemon = Daemon::start().await;
    let client = connect(&daemon, 10).await;
    let mut watch = client.watch(&[11, 12]).await.unwrap();
    let snapshot = [next(&mut watch).await, next(&mut watch).await];
    assert_eq!(snapshot.map(|e| (e.user, e.status)), [(11, Status::Offline), (12, Status::Offline)]);

    let friend = connect(&daemon, 11).await;
    let online = next(&mut watch).await;
    assert_eq!((online.user, online.status), (11, Status::Online));
    friend.set_status(Status::Busy, "on call").await.unwrap();
    let busy = next(&mut watch).await;
    assert_eq!((busy.status, busy.text.as_str()), (Status::Busy, "on call"));
    assert!(busy.version > online.version);

    client.unwatch(&[11]).await.unwrap();
    friend.set_status(Status::Away, "").await.unwrap();
    nothing_within(&mut watch, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_dropped_connection_is_resumed_and_watched_again() {
    let daemon = Daemon::start().await;
    let mut observer = daemon.watcher().await;
    observer.watch(&[20]).await;
    let proxy = Proxy::start(daemon.running.tcp).await;
    let client = connect_through(&proxy, &daemon, 20).await;
    observer.push_for(20).await;
    client.set_status(Status::Busy, "focus").await.unwrap();
    observer.push_for(20).await;
    let mut watch = client.watch(&[21]).await.unwrap();
    assert_eq!(next(&mut watch).await.status, Status::Offline);

    let session = client.session().unwrap();
    proxy.cut(None);
    assert!(reconnected(&client).await, "not resumed");
    assert_eq!(client.session(), Some(session));
    // One session: the old one moved, rather than a new one beside it in grace.
    assert_eq!(client.stats().await.unwrap().sessions, 1);
    // Inside the grace window: watchers saw nothing, the status stayed.
    observer.no_push_for(20, Duration::from_millis(200)).await;
    let seen = observer.query(&[20]).await.remove(0);
    assert_eq!((seen.status, seen.text.as_str()), (Status::Busy, "focus"));

    // The same version again in the new snapshot is dropped; a change is not.
    nothing_within(&mut watch, Duration::from_millis(200)).await;
    let _friend = connect(&daemon, 21).await;
    assert_eq!(next(&mut watch).await.status, Status::Online);
}

#[tokio::test]
async fn the_state_changes_only_when_the_connection_does() {
    let daemon = Daemon::start().await;
    let proxy = Proxy::start(daemon.running.tcp).await;
    let client = connect_through(&proxy, &daemon, 25).await;
    let state = client.state();
    // A round trip: by its reply the task has set up the first connection.
    client.stats().await.unwrap();
    assert!(!state.has_changed().unwrap(), "the first connection announced again: {:?}", *state.borrow());
    proxy.cut(None);
    assert!(reconnected(&client).await, "not resumed");
    assert!(state.has_changed().unwrap(), "a reconnection is announced");
}

#[tokio::test]
async fn goaway_reconnects_after_the_requested_delay() {
    let daemon = Daemon::start().await;
    let proxy = Proxy::start(daemon.running.tcp).await;
    let client = connect_through(&proxy, &daemon, 30).await;
    let session = client.session().unwrap();
    let goaway = Message::Goaway { reason: GoawayReason::Restart, reconnect_after_ms: 300 };
    let sent = tokio::time::Instant::now();
    proxy.cut(Some(goaway));
    assert!(reconnected(&client).await, "not resumed");
    assert_eq!(client.session(), Some(session));
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(300), "reconnected after {took:?}");
    assert_eq!(client.stats().await.unwrap().sessions, 1);
}

#[tokio::test]
async fn after_a_restart_the_status_and_watches_come_back() {
    let mut daemon = Daemon::start().await;
    let client = connect(&daemon, 40).await;
    client.set_status(Status::Away, "lunch").await.unwrap();
    let mut watch = client.watch(&[41]).await.unwrap();
    next(&mut watch).await;

    // Same ports, so the client finds the new daemon where the old one was.
    daemon.config.listen = daemon.running.tcp;
    daemon.config.udp = daemon.running.udp;
    let daemon = daemon.restart().await;
    reconnected(&client).await;

    let mut observer = daemon.watcher().await;
    let seen = observer.query(&[40]).await.remove(0);
    assert_eq!((seen.status, seen.text.as_str()), (Status::Away, "lunch"));
    let _friend = connect(&daemon, 41).await;
    assert_eq!(next(&mut watch).await.status, Status::Online);
}

#[tokio::test]
async fn requests_fail_typed_and_the_client_closes_with_bye() {
    let daemon = Daemon::start().await;
    let client = connect(&daemon, 50).await;
    let invalid = client.set_status(Status::Offline, "").await;
    assert!(matches!(invalid, Err(ClientError::InvalidArgument(_))), "{invalid:?}");
    let too_long = client.set_status(Status::Online, &"x".repeat(129)).await;
    assert_eq!(too_long.err().and_then(|e| e.code()), Some(ErrorCode::LimitExceeded));

    let mut observer = daemon.watcher().await;
    observer.watch(&[50]).await;
    let other = client.clone();
    client.close().await.unwrap();
    assert_eq!(observer.push_for(50).await.status, Status::Offline, "BYE ends the session at once");
    assert!(matches!(other.stats().await, Err(ClientError::Closed)));
    assert!(matches!(*other.state().borrow(), State::Closed(None)));
}

/// Until the server enables the feed it answers every feed request with
/// UNAVAILABLE (SPEC.md §10); the SDK surfaces that. Once enabled, the same
/// calls round-trip.
#[tokio::test]
async fn feed_calls_round_trip_or_surface_the_servers_error() {
    let daemon = Daemon::start().await;
    let author = connect(&daemon, 60).await;
    let reader = connect(&daemon, 61).await;
    let unavailable = |e: ClientError| assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
    match author.post(1, "hello").await {
        Ok(post) => {
            reader.follow(60).await.unwrap();
            let page = reader.home_timeline(Cursor::default(), 10).await.unwrap();
            assert_eq!(page.iter().map(|i| (i.post, i.author)).collect::<Vec<_>>(), [(post, 60)]);
            assert_eq!(author.author_timeline(60, Cursor::default(), 10).await.unwrap().len(), 1);

            let mut live = reader.live().await.unwrap();
            let second = author.post(2, "again").await.unwrap();
            let pushed = tokio::time::timeout(PATIENCE, live.next()).await.unwrap().unwrap();
            assert!(matches!(pushed, LiveEvent::Item(ref i) if (i.post, i.kind) == (second, 2)), "{pushed:?}");
            author.delete(post).await.unwrap();
            let deleted = tokio::time::timeout(PATIENCE, live.next()).await.unwrap().unwrap();
            assert_eq!(deleted, LiveEvent::Deleted { post });
            let page = reader.home_timeline(Cursor::default(), 10).await.unwrap();
            assert_eq!(page.iter().map(|i| i.post).collect::<Vec<_>>(), [second]);
        }
        Err(e) => {
            unavailable(e);
            unavailable(reader.follow(60).await.unwrap_err());
            unavailable(reader.block(62).await.unwrap_err());
            unavailable(reader.home_timeline(Cursor::default(), 10).await.unwrap_err());
            unavailable(author.delete(1).await.unwrap_err());
            unavailable(reader.live().await.err().unwrap());
        }
    }
    let bad_cursor = Cursor { since_id: Some(1), min_id: Some(2), ..Cursor::default() };
    assert!(matches!(reader.home_timeline(bad_cursor, 10).await, Err(ClientError::InvalidArgument(_))));
    assert!(matches!(reader.home_timeline(Cursor::default(), 0).await, Err(ClientError::InvalidArgument(_))));
}
