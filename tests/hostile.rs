//! Hostile clients against the real daemon: each attack gets exactly what
//! SPEC.md says (the ERROR code, then a close; or the frame skipped), while a
//! set of well-behaved clients (a watcher of users who change status, and a
//! follower with LIVE on) keeps working and loses no event, and the daemon's
//! connections and memory come back to where they were.
//!
//! Attacks come from their own 127.0.0.x addresses, so the per-address cap
//! only ever refuses the flood meant for it.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use common::*;
use heartline::auth::{Claims, Keyring, Subject};
use heartline_proto::udp;
use heartline_proto::*;

const MAX_CONNECTIONS: usize = 40;
const PER_IP: usize = 6;
const MAX_WATCH: usize = 50;
const BURST: u32 = 5;
/// Users the well-behaved actors are.
const ACTORS: [u64; 3] = [11, 12, 13];
const AUTHOR: u64 = 20;
const FOLLOWER: u64 = 21;

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Waits until `done` holds, checking every 10 ms, for at most [`PATIENCE`].
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let until = tokio::time::Instant::now() + PATIENCE;
    while !done().await {
        assert!(tokio::time::Instant::now() < until, "not within {PATIENCE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The daemon's refusals at accept so far, by cap: `[total, per_ip]`.
async fn refusals(daemon: &Daemon) -> [u64; 2] {
    let metrics = daemon.metrics().await;
    ["total", "per_ip"].map(|cap| sample(&metrics, &format!("heartline_connections_refused_total{{cap=\"{cap}\"}}")))
}

/// The process's resident memory (the daemon runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn gateway_from(daemon: &Daemon, source: Ipv4Addr, name: &str) -> Client {
    let mut client = daemon.connect_from(source).await;
    let token = daemon.token(Subject::Gateway(name.into()), 3_600);
    client.handshake(hello(Role::Gateway, token, false, 0)).await;
    client
}

async fn user_from(daemon: &Daemon, source: Ipv4Addr, user: u64, want_udp: bool) -> Client {
    let mut client = daemon.connect_from(source).await;
    client.handshake(hello(Role::Client, daemon.user_token(user), want_udp, 0)).await;
    client
}

/// A HELLO as bytes on the wire.
fn hello_bytes(token: Bytes) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(&hello(Role::Client, token, false, 0), &mut buf).unwrap();
    buf
}

async fn write_raw(client: &mut Client, bytes: &[u8]) {
    // The server may already have closed: what it said is read afterwards.
    let _ = client.send_raw(bytes).await;
}

// ---------------------------------------------------------------------------
// The well-behaved clients.

/// A watcher of the actors and a follower of the author with LIVE on, in
/// lockstep: every status change must reach the watcher and every post the
/// follower, each before the next, with exactly the value sent.
struct Workload {
    watcher: Client,
    actors: Vec<Client>,
    author: Client,
    follower: Client,
}

impl Workload {
    async fn start(daemon: &Daemon) -> Self {
        let source = addr(2);
        let mut actors = Vec::new();
        for user in ACTORS {
            actors.push(user_from(daemon, source, user, false).await);
        }
        let mut watcher = gateway_from(daemon, source, "watcher").await;
        assert!(watcher.watch(&ACTORS).await.iter().all(|e| e.status == Status::Online));
        let author = user_from(daemon, source, AUTHOR, false).await;
        let mut follower = user_from(daemon, source, FOLLOWER, false).await;
        let followed = follower.request(|req| Message::Graph { req, op: GraphOp::Follow, user: AUTHOR }).await;
        assert!(matches!(followed, Message::Ok { .. }), "{followed:?}");
        let live = follower.request(|req| Message::Live { req, on: true }).await;
        assert!(matches!(live, Message::Ok { .. }), "{live:?}");
        Self { watcher, actors, author, follower }
    }

    /// Rounds until `stop`, counting them in `rounds`.
    async fn run(mut self, stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>) -> Self {
        let statuses = [Status::Away, Status::Busy, Status::Online];
        while !stop.load(Ordering::Relaxed) {
            let round = rounds.load(Ordering::Relaxed) + 1;
            for (actor, user) in self.actors.iter_mut().zip(ACTORS) {
                let text = format!("round {round}");
                let status = statuses[round as usize % statuses.len()];
                actor.set_status(status, &text).await;
                let seen = self.watcher.push_for(user).await;
                assert_eq!((seen.status, seen.text.as_str()), (status, text.as_str()), "watcher missed a change");
            }
            let payload = Bytes::from(format!("post {round}"));
            let reply = self.author.request(|req| Message::Publish { req, kind: 1, payload: payload.clone() }).await;
            let Message::Published { post, .. } = reply else { panic!("publish: {reply:?}") };
            match self.follower.recv().await {
                Message::ItemPush(item) => assert_eq!((item.post, &item.payload), (post, &payload), "follower"),
                other => panic!("follower expected ITEM_PUSH, got {other:?}"),
            }
            // The follower only reads; this keeps its session alive.
            self.follower.send(Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None })).await;
            rounds.store(round, Ordering::Relaxed);
            // Paced well under the rates (20 per second) every session is allowed.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self
    }
}

// ---------------------------------------------------------------------------
// The attacks. Each asserts what SPEC.md says it gets.

/// Random bytes: whatever they spell, a fatal ERROR and a close (§4.1, §4.4).
async fn random_bytes(daemon: &Daemon) {
    let mut rng = fastrand::Rng::with_seed(7);
    // One address each: a closed connection's place may be freed a moment after the client sees the close.
    for i in 0..8 {
        let mut client = daemon.connect_from(addr(30 + i)).await;
        let bytes: Vec<u8> = (0..rng.usize(1..256)).map(|_| rng.u8(..)).collect();
        write_raw(&mut client, &bytes).await;
        let code = client.closing_error().await.expect("an ERROR before the close");
        assert!(code.closes(), "{code:?} for {bytes:02x?}");
    }
}

/// Half a HELLO, then the client closes: the server closes too, silently.
async fn truncated_frame(daemon: &Daemon) {
    let mut client = daemon.connect_from(addr(11)).await;
    let frame = hello_bytes(daemon.user_token(900));
    write_raw(&mut client, &frame[..frame.len() / 2]).await;
    client.conn.shutdown().await.unwrap();
    assert_eq!(client.closing_error().await, None);
}

/// A length prefix of 4 GiB: FRAME_TOO_LARGE from the length alone (a 4th
/// length byte), without waiting for a body.
async fn four_gib_length(daemon: &Daemon) {
    let mut client = daemon.connect_from(addr(12)).await;
    write_raw(&mut client, &[0x80, 0x80, 0x80, 0x80, 0x10]).await;
    assert_eq!(client.closing_error().await, Some(ErrorCode::FrameTooLarge));
    // Within the length limit but over max_frame, also from the length alone.
    let mut client = daemon.connect_from(addr(12)).await;
    write_raw(&mut client, &[0xff, 0xff, 0x7f]).await;
    assert_eq!(client.closing_error().await, Some(ErrorCode::FrameTooLarge));
}

/// A HELLO dribbled one byte per 50 ms: cut at the handshake timeout.
async fn slowloris(daemon: &Daemon) {
    let mut client = daemon.connect_from(addr(13)).await;
    let frame = hello_bytes(daemon.user_token(901));
    for byte in frame.iter() {
        write_raw(&mut client, &[*byte]).await;
        match tokio::time::timeout(Duration::from_millis(50), client.conn.recv()).await {
            Err(_) => continue,
            Ok(Ok(Message::Error { code, .. })) => {
                assert_eq!(ErrorCode::from_u16(code), Some(ErrorCode::HandshakeTimeout));
                assert_eq!(client.closing_error().await, None, "closed after the ERROR");
                return;
            }
            Ok(other) => panic!("slowloris got {other:?}"),
        }
    }
    panic!("a HELLO of {} bytes at 20 bytes per second was let through", frame.len());
}

/// Connected, silent: HANDSHAKE_TIMEOUT.
async fn never_hello(daemon: &Daemon) {
    let mut client = daemon.connect_from(addr(14)).await;
    assert_eq!(client.closing_error().await, Some(ErrorCode::HandshakeTimeout));
}

/// Forged, expired and wrong-secret tokens (§12.1).
async fn bad_tokens(daemon: &Daemon, dir: &std::path::Path) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let other =
        Keyring { current: heartline::auth::load_or_create_secret(&dir.join("other-secret")).unwrap(), previous: None };
    let wrong_secret = Bytes::from(other.issue(&Claims { subject: Subject::User(902), expires_at: now + 3_600 }));
    let mut tampered = daemon.user_token(902).to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let cases = [
        (Bytes::from_static(b"not a token at all"), ErrorCode::BadToken),
        (Bytes::from(tampered), ErrorCode::BadToken),
        (wrong_secret, ErrorCode::BadToken),
        (daemon.token(Subject::User(902), -10), ErrorCode::TokenExpired),
        (daemon.token(Subject::Gateway("gw".into()), 3_600), ErrorCode::BadToken),
    ];
    for ((token, expected), i) in cases.into_iter().zip(0..) {
        let mut client = daemon.connect_from(addr(40 + i)).await;
        client.send(hello(Role::Client, token, false, 0)).await;
        assert_eq!(client.closing_error().await, Some(expected));
    }
}

/// Someone else's session: a gateway's SET_STATUS and batch, a client's
/// SET_STATUS with a session field. Non-fatal errors, nothing changes (the
/// workload's watcher would see any change).
async fn other_users_session(daemon: &Daemon, victim: u64) {
    let mut gateway = gateway_from(daemon, addr(16), "intruder").await;
    let reply = gateway
        .request(|req| Message::SetStatus { req, session: Some(victim), status: Status::Busy, text: "owned".into() })
        .await;
    assert!(matches!(reply, Message::Error { code, .. } if code == ErrorCode::Forbidden as u16), "{reply:?}");
    gateway.send(Message::BatchHeartbeat(Batch::encode(&[(victim, Some(Status::Away))]).unwrap())).await;
    let reply = gateway.reply().await;
    assert!(matches!(reply, Message::Error { req: 0, code, .. } if code == ErrorCode::NotFound as u16), "{reply:?}");
    let mut client = user_from(daemon, addr(16), 903, false).await;
    let reply = client
        .request(|req| Message::SetStatus { req, session: Some(victim), status: Status::Busy, text: "owned".into() })
        .await;
    assert!(matches!(reply, Message::Error { code, .. } if code == ErrorCode::Forbidden as u16), "{reply:?}");
    // Heartbeats only ever renew the connection's own session: a HEARTBEAT has no session field.
    assert!(matches!(gateway.request(|req| Message::Stats { req }).await, Message::StatsReply { .. }));
}

/// Replayed and forged UDP heartbeats: dropped silently and counted; the
/// legitimate session stays online and its next datagram is accepted.
async fn udp_replay_and_forgery(daemon: &Daemon, victim: u64) {
    let mut client = user_from(daemon, addr(17), 904, true).await;
    let welcome = client.welcome.clone().unwrap();
    assert_ne!(welcome.udp_port, 0);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = |datagram: BytesMut| {
        let socket = &socket;
        async move { socket.send_to(&datagram, daemon.running.udp).await.unwrap() }
    };
    let datagram = |key: &udp::Key, session: u64, seq: u32| {
        let mut buf = BytesMut::new();
        udp::write_heartbeat(&mut buf, key, session, seq, None);
        buf
    };
    let reasons = ["replayed", "bad_tag", "unknown_id", "bad_length"];
    let dropped = async || {
        let metrics = daemon.metrics().await;
        reasons.map(|reason| sample(&metrics, &format!("heartline_udp_dropped_total{{reason=\"{reason}\"}}")))
    };
    let applied = async || daemon.metric("heartline_heartbeats_total{path=\"udp\"}").await;
    let before = dropped().await;
    let accepted = applied().await;

    let first = datagram(&welcome.udp_key, welcome.session, 1);
    send(first.clone()).await;
    eventually("the first datagram accepted", async || applied().await == accepted + 1).await;
    send(first).await;
    let mut forged = datagram(&welcome.udp_key, welcome.session, 2);
    let last = forged.len() - 1;
    forged[last] ^= 0x55;
    send(forged).await;
    send(datagram(&[9; 16], welcome.session, 3)).await;
    // Another user's session under this session's key: that session has no UDP at all.
    send(datagram(&welcome.udp_key, victim, 1)).await;
    send(BytesMut::from(&b"short"[..])).await;
    let expected = [before[0] + 1, before[1] + 2, before[2] + 1, before[3] + 1];
    eventually("every bad datagram counted", async || dropped().await == expected).await;
    // The forgeries moved no replay window: seq 2 is still good.
    send(datagram(&welcome.udp_key, welcome.session, 2)).await;
    eventually("the next datagram accepted", async || applied().await == accepted + 2).await;
    assert_eq!(applied().await, accepted + 2, "no forged datagram was applied");
    let entries = client.query(&[904]).await;
    assert_eq!(entries[0].status, Status::Online);
    // UDP is never answered, on UDP or on the connection.
    assert!(client.try_recv(Duration::from_millis(50)).await.is_none());
}

/// A WATCH over the cap, and one over the protocol's 1,000 ids: both
/// LIMIT_EXCEEDED, the watch set unchanged, the connection open.
async fn watch_too_many(daemon: &Daemon) {
    let mut client = user_from(daemon, addr(18), 905, false).await;
    let over_cap: Vec<u64> = (1_000..=1_000 + MAX_WATCH as u64).collect();
    let reply = client.request(|req| Message::Watch { req, users: over_cap }).await;
    assert!(matches!(reply, Message::Error { code, .. } if code == ErrorCode::LimitExceeded as u16), "{reply:?}");
    let over_protocol: Vec<u64> = (1..=1_001).collect();
    let reply = client.request(|req| Message::Watch { req, users: over_protocol }).await;
    assert!(matches!(reply, Message::Error { code, .. } if code == ErrorCode::LimitExceeded as u16), "{reply:?}");
    assert_eq!(client.watch(&(1_000..1_000 + MAX_WATCH as u64).collect::<Vec<_>>()).await.len(), MAX_WATCH);
}

/// More connections from one address than the cap: the one past it gets
/// TOO_MANY_CONNECTIONS without sending anything; another address is not
/// affected; a place freed is a place to take again. Returns how many
/// attempts to take it were refused first (the daemon frees the place a
/// moment after it closes the connection), each a per-address refusal.
async fn per_ip_flood(daemon: &Daemon) -> u64 {
    let source = addr(19);
    let mut held = Vec::new();
    for i in 0..PER_IP {
        held.push(gateway_from(daemon, source, &format!("flood-{i}")).await);
    }
    let mut refused = daemon.connect_from(source).await;
    assert_eq!(refused.closing_error().await, Some(ErrorCode::TooManyConnections));
    gateway_from(daemon, addr(20), "neighbour").await;
    let mut leaving = held.pop().unwrap();
    leaving.send(Message::Bye).await;
    assert_eq!(leaving.closing_error().await, None, "the daemon closes after BYE");
    let mut early = 0;
    loop {
        let mut again = daemon.connect_from(source).await;
        let token = daemon.token(Subject::Gateway("again".into()), 3_600);
        // A refused connection may be closed before the HELLO is written.
        let _ = again.conn.send(&hello(Role::Gateway, token, false, 0)).await;
        match again.recv().await {
            Message::Welcome(_) => break,
            Message::Error { code, .. } if code == ErrorCode::TooManyConnections as u16 => {
                early += 1;
                assert!(early < 100, "the closed connection's place never freed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("expected WELCOME or TOO_MANY_CONNECTIONS, got {other:?}"),
        }
    }
    early
}

/// Status changes and posts past their bursts: RATE_LIMITED with the
/// request's id, frame skipped, the connection open; the first `BURST` pass.
async fn rate_limits(daemon: &Daemon) {
    let mut client = user_from(daemon, addr(21), 906, false).await;
    const SENT: u64 = 40;
    for req in 1..=SENT {
        client
            .send(Message::SetStatus { req, session: None, status: Status::Away, text: format!("{req}").into() })
            .await;
    }
    let mut limited = Vec::new();
    for expected in 1..=SENT {
        match client.reply().await {
            Message::Ok { req } => assert_eq!(req, expected),
            Message::Error { req, code, .. } if code == ErrorCode::RateLimited as u16 => {
                assert_eq!(req, expected);
                limited.push(req);
            }
            other => panic!("SET_STATUS {expected}: {other:?}"),
        }
    }
    assert!(limited.first().is_some_and(|&first| first > BURST as u64), "the burst passes: {limited:?}");
    // HEARTBEATs carrying a status count too, and are skipped whole (req 0).
    // Pipelined, they come far faster than the bucket refills.
    for status in [Status::Busy, Status::Away].repeat(10) {
        client.send(Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: Some(status) })).await;
    }
    let stats = client.req();
    client.send(Message::Stats { req: stats }).await;
    let mut heartbeats_limited = 0;
    loop {
        match client.reply().await {
            Message::Error { req: 0, code, .. } if code == ErrorCode::RateLimited as u16 => heartbeats_limited += 1,
            Message::StatsReply { req, .. } if req == stats => break,
            other => panic!("after HEARTBEATs: {other:?}"),
        }
    }
    assert!(heartbeats_limited > 0, "20 status changes by HEARTBEAT, none limited");

    for req in 100..100 + SENT {
        client.send(Message::Publish { req, kind: 0, payload: Bytes::from_static(b"spam") }).await;
    }
    let (mut published, mut limited) = (0, 0);
    for _ in 0..SENT {
        match client.reply().await {
            Message::Published { .. } => published += 1,
            Message::Error { req, code, .. } if code == ErrorCode::RateLimited as u16 => {
                assert!((100..100 + SENT).contains(&req));
                limited += 1;
            }
            other => panic!("PUBLISH: {other:?}"),
        }
    }
    assert!(published >= BURST && limited > 0, "{published} published, {limited} limited");
    // Skipped, not stored.
    let page = client
        .request(|req| Message::Timeline { req, source: Source::Author(906), cursor: Cursor::default(), limit: 100 })
        .await;
    let Message::Page { items, .. } = page else { panic!("{page:?}") };
    assert_eq!(items.len() as u32, published);
    assert!(matches!(client.request(|req| Message::Stats { req }).await, Message::StatsReply { .. }));
}

/// A client that asks and never reads: once the socket buffers and its
/// queue are full it is cut with SLOW_CONSUMER, which it finds after all it
/// did not read; the others keep getting their events meanwhile.
async fn never_reads(daemon: &Daemon) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((addr(22), 0).into()).unwrap();
    // A small receive buffer: the server's send side fills after a few replies.
    socket.set_recv_buffer_size(4_096).unwrap();
    let mut client = Client::new(socket.connect(daemon.running.tcp).await.unwrap());
    client.handshake(hello(Role::Client, daemon.user_token(907), false, 0)).await;
    // No other connection past HELLO closes while still registered (each
    // leaves or is refused first), so a closing one is this one, its queue
    // overflowed. Checked every 16 queries: a scrape costs a round trip.
    let closing = async || daemon.metric("heartline_connections_closing").await > 0;
    // Big replies: a PRESENCE of 1,000 online users each.
    let users: Vec<u64> = ACTORS.iter().copied().cycle().take(1_000).collect();
    let mut sent = 0;
    while sent % 16 != 0 || !closing().await {
        assert!(sent < 10_000, "{sent} queries unread and still not a slow consumer");
        let req = client.req();
        // The daemon may cut us off between the check and this send.
        if client.conn.send(&Message::Query { req, users: users.clone() }).await.is_err() {
            break;
        }
        sent += 1;
    }
    assert_eq!(client.closing_error().await, Some(ErrorCode::SlowConsumer));
}

/// Past `limits.max_connections` (every address): TOO_MANY_CONNECTIONS.
async fn total_flood(daemon: &Daemon) -> Vec<Client> {
    let open = daemon.metric("heartline_connections_open").await as usize;
    let mut held = Vec::new();
    for i in open..MAX_CONNECTIONS {
        held.push(gateway_from(daemon, addr(100 + (i / PER_IP) as u8), &format!("total-{i}")).await);
    }
    let mut refused = daemon.connect_from(addr(200)).await;
    assert_eq!(refused.closing_error().await, Some(ErrorCode::TooManyConnections));
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_what_the_spec_says_and_others_keep_working() {
    let daemon = Daemon::start_with(|c| {
        c.limits.handshake_timeout = Duration::from_secs(1);
        // No session here may expire, however slow a loaded machine makes a round.
        c.presence.ttl = Duration::from_secs(30);
        c.limits.max_connections = MAX_CONNECTIONS;
        c.limits.max_connections_per_ip = PER_IP;
        c.limits.max_watch = MAX_WATCH;
        c.limits.outbound_queue = 64;
        (c.limits.status_rate, c.limits.status_burst) = (20.0, BURST);
        (c.limits.post_rate, c.limits.post_burst) = (20.0, BURST);
    })
    .await;
    let open = async || daemon.metric("heartline_connections_open").await as usize;
    let workload = Workload::start(&daemon).await;
    let victim = workload.actors[0].session();
    let baseline = open().await;
    assert_eq!(baseline, ACTORS.len() + 3);
    let refused_before = refusals(&daemon).await;
    let rss_before = rss_kib();

    let (stop, rounds) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let running = tokio::spawn(workload.run(stop.clone(), rounds.clone()));
    let dir = tempfile::tempdir().unwrap();
    let ((), (), (), (), (), (), (), (), (), per_ip_early, (), ()) = tokio::join!(
        random_bytes(&daemon),
        truncated_frame(&daemon),
        four_gib_length(&daemon),
        slowloris(&daemon),
        never_hello(&daemon),
        bad_tokens(&daemon, dir.path()),
        other_users_session(&daemon, victim),
        udp_replay_and_forgery(&daemon, victim),
        watch_too_many(&daemon),
        per_ip_flood(&daemon),
        rate_limits(&daemon),
        never_reads(&daemon),
    );
    eventually("every attacker's connection closed", async || open().await == baseline).await;
    // With the daemon full, the well-behaved connections still work.
    let flood = total_flood(&daemon).await;
    assert_eq!(open().await, MAX_CONNECTIONS);
    let full_from = rounds.load(Ordering::Relaxed);
    let full_rounds = async || rounds.load(Ordering::Relaxed) >= full_from + 2;
    eventually("well-behaved rounds with the daemon full", full_rounds).await;
    drop(flood);
    eventually("the flood's connections closed", async || open().await == baseline).await;

    stop.store(true, Ordering::Relaxed);
    let mut workload = running.await.unwrap();
    let rounds = rounds.load(Ordering::Relaxed);
    assert!(rounds >= 3, "only {rounds} rounds of well-behaved traffic");
    // And nothing is left pending for the well-behaved: no stray push.
    workload.watcher.no_push_for(ACTORS[0], Duration::from_millis(100)).await;

    let refused = refusals(&daemon).await;
    let floods = [refused[0] - refused_before[0], refused[1] - refused_before[1]];
    assert_eq!(floods, [1, 1 + per_ip_early], "exactly the two floods (and early retries of a freed place)");
    assert_eq!(
        daemon.metric("heartline_connections").await as usize,
        baseline,
        "connections past HELLO back to the well-behaved"
    );
    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "resident memory grew by {grown_mib} MiB");
}
