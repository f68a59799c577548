//! Routing in a real cluster (SPEC.md §14): three `nats-server` processes
//! and three heartline nodes on loopback (two in process, one the built
//! binary, killed with SIGKILL). A client given a seed that does not own its
//! user ends up on the owner; the REDIRECT is exactly the frame SPEC.md
//! describes; a gateway reads the map, opens each user on its owner and
//! gets MOVED elsewhere; when the owner dies, the client goes back through
//! its seeds and lands on the new owner within TTL + 5 s; a TLS client is
//! sent to the owner's TLS listener.
//!
//! Skipped with a message when `nats-server` is missing, failed under CI.

mod common;
#[path = "common/cluster.rs"]
mod nodes;
#[path = "common/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use heartline::auth::Subject;
use heartline_client::route::ClusterMap;
use heartline_client::wire::Connection;
use heartline_client::{Backoff, ClientConfig, State};
use heartline_proto::*;
use nodes::*;
use tokio::io::AsyncReadExt;

fn entry(user: u64) -> OpenEntry {
    OpenEntry { user, device: Device::Web, status: Status::Online }
}

/// The first user (from 1) owned by `node`.
fn user_of(map: &ClusterMap, node: &str) -> u64 {
    (1..).find(|&u| map.owner_of(u).unwrap().node.as_str() == node).unwrap()
}

/// A gateway connection to the node at `addr`, past WELCOME.
async fn gateway_at(addr: SocketAddr, signer: &Daemon) -> Client {
    let mut gw = Client::from(Connection::connect(addr).await.unwrap());
    gw.handshake(hello(Role::Gateway, signer.token(Subject::Gateway("edge".into()), 3_600), false, 0)).await;
    gw
}

async fn read_map(gw: &mut Client) -> ClusterMap {
    ClusterMap::from_reply(gw.request(|req| Message::ClusterMap { req }).await).unwrap()
}

#[tokio::test]
async fn a_node_alone_maps_itself_and_redirects_nobody() {
    let alone = Daemon::start().await;
    let mut gw = alone.gateway("edge", false).await;
    let map = read_map(&mut gw).await;
    assert_eq!((map.version, map.partitions, map.members.len()), (0, 1, 1));
    let me = &map.members[0];
    assert_eq!((me.node.as_str(), me.addr.as_str()), ("local", alone.running.tcp.to_string().as_str()));
    let ws = format!("ws://{}/v1/ws", alone.running.ws.unwrap());
    assert_eq!(me.ws.as_str(), ws);
    let opened = gw.request(|req| Message::Open { req, entries: (1..=100).map(entry).collect() }).await;
    assert!(matches!(opened, Message::Opened { sessions, .. } if sessions.len() == 100));
    // Clients may not read the map.
    let mut client = alone.user(7).await;
    let refused = client.request(|req| Message::ClusterMap { req }).await;
    assert!(matches!(refused, Message::Error { code, .. } if code == ErrorCode::Forbidden as u16));
    alone.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_land_on_their_owner_gateways_route_and_a_dead_owner_is_replaced() {
    // One token secret for the whole cluster: a's.
    let Some(Three { a, b, c: _c, mut child, view: three, nats: _nats }) = three("").await else {
        return;
    };

    // The map as a gateway reads it, on any node.
    let mut gw_a = a.gateway("edge", false).await;
    let map = read_map(&mut gw_a).await;
    assert_eq!(map.version, version(&three));
    assert_eq!(map.partitions, PARTITIONS);
    let names: Vec<&str> = map.members.iter().map(|m| m.node.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(map.members[0].addr.as_str(), a.running.tcp.to_string());
    assert_eq!(map.members[1].ws.as_str(), format!("ws://{}/v1/ws", b.running.ws.unwrap()), "advertise_ws defaults");
    assert_eq!(map.members[2].ws.as_str(), "", "c has no WebSocket listener");
    let c_tcp: SocketAddr = map.members[2].addr.as_str().parse().unwrap();
    for (name, owned) in names.iter().zip(three.members.iter().map(|m| m.partitions_owned)) {
        let mine = (0..PARTITIONS).filter(|&p| names[route::owner_index(names.iter().copied(), p).unwrap()] == *name);
        assert_eq!(mine.count() as u32, owned, "the protocol's owners are the nodes' ({name})");
    }
    let (on_a, on_b, on_c) = (user_of(&map, "a"), user_of(&map, "b"), user_of(&map, "c"));

    // A raw client of b's user at a: exactly the REDIRECT frame, then the close.
    let mut raw = tokio::net::TcpStream::connect(a.running.tcp).await.unwrap();
    let mut hello_frame = BytesMut::new();
    encode_frame(&hello(Role::Client, a.user_token(on_b), false, 0), &mut hello_frame).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, &hello_frame).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, raw.read_to_end(&mut got)).await.unwrap().unwrap();
    let b_member = &map.members[1];
    let redirect = Message::Redirect { version: map.version, owner: Box::new(b_member.clone()) };
    let mut expected = BytesMut::new();
    encode_frame(&redirect, &mut expected).unwrap();
    assert_eq!(hex::encode(&got), hex::encode(&expected), "one REDIRECT, then the server closed");

    // A gateway opens each user on its owner; a wrong node answers MOVED and goes on.
    let mut gw_b = gateway_at(b.running.tcp, &a).await;
    let mut gw_c = gateway_at(c_tcp, &a).await;
    for (gw, user) in [(&mut gw_a, on_a), (&mut gw_b, on_b), (&mut gw_c, on_c)] {
        let opened = gw.request(|req| Message::Open { req, entries: vec![entry(user)] }).await;
        assert!(matches!(opened, Message::Opened { ref sessions, .. } if sessions.len() == 1), "{opened:?}");
    }
    let moved = gw_a.request(|req| Message::Open { req, entries: vec![entry(on_a), entry(on_c)] }).await;
    match moved {
        Message::Error { code, message, .. } => {
            assert_eq!(ErrorCode::from_u16(code), Some(ErrorCode::Moved));
            assert_eq!(message.as_str(), format!("user {on_c} is on c by map version {}", map.version));
        }
        other => panic!("expected MOVED, got {other:?}"),
    }
    assert!(matches!(gw_a.request(|req| Message::Stats { req }).await, Message::StatsReply { .. }), "still open");

    // The Rust SDK, given seeds that do not own its user, lands on the owner.
    let mut config =
        ClientConfig::with_seeds([a.running.tcp.to_string(), b.running.tcp.to_string()], a.user_token(on_c));
    config.reconnect = Some(Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) });
    let client = heartline_client::Client::connect(config).await.unwrap();
    assert_eq!(client.addr(), c_tcp.to_string(), "redirected from a to c");
    let mut state = client.state();

    // SIGKILL of the owner: the client goes back through its seeds to c's successor.
    let killed = Instant::now();
    child.0[0].kill().unwrap();
    child.0[0].wait().unwrap();
    let two = ClusterMap {
        version: 0,
        partitions: PARTITIONS,
        members: map.members.iter().filter(|m| m.node.as_str() != "c").cloned().collect(),
    };
    let successor = two.owner_of(on_c).unwrap().addr.as_str().to_owned();
    let limit = TTL + Duration::from_secs(5);
    let landed = tokio::time::timeout(limit, async {
        loop {
            state.changed().await.unwrap();
            if let State::Connected { .. } = &*state.borrow() {
                return killed.elapsed();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not connected again within {limit:?}"));
    assert_eq!(client.addr(), successor);
    eprintln!("owner SIGKILLed: the client was on its new owner after {landed:?} (TTL {TTL:?})");
    assert!(client.session().is_some());
    client.close().await.unwrap();
    a.running.shutdown().await;
    b.running.shutdown().await;
}

/// A client over TLS is redirected to the owner's TLS listener (REDIRECT's
/// `tls`, which `cluster.advertise_tls` defaults to) and the SDK follows it
/// with its own TLS settings, not to the owner's plain TCP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_is_redirected_to_the_owner_s_tls_listener() {
    let Some(nats) = Nats::ready().await else { return };
    let pki = pki::Pki::new();
    let leaf = pki.leaf("server");
    let start = |name: &'static str, secret: Option<std::path::PathBuf>| {
        Daemon::start_with(|c| {
            if let Some(secret) = secret {
                std::fs::copy(secret, c.data_dir.join("secret")).unwrap();
            }
            c.cluster = Some(cluster_settings(name, &nats.urls));
            c.tls.listen = Some("127.0.0.1:0".parse().unwrap());
            (c.tls.cert, c.tls.key) = (Some(leaf.cert.clone()), Some(leaf.key.clone()));
        })
    };
    let a = start("a", None).await;
    let b = start("b", Some(a.config.data_dir.join("secret"))).await;
    converge(&[a.running.admin, b.running.admin], &["a", "b"]).await;
    let map = read_map(&mut a.gateway("edge", false).await).await;
    let b_tls = b.running.tls.unwrap().to_string();
    assert_eq!(map.members[1].tls.as_str(), b_tls, "advertise_tls defaults to the [tls] listener");

    let mut config = ClientConfig::new(format!("tls://{}", a.running.tls.unwrap()), a.user_token(user_of(&map, "b")));
    config.tls = Some(heartline_client::Tls::with_ca_file(&pki.ca_pem).unwrap());
    let client = heartline_client::Client::connect(config).await.unwrap();
    assert_eq!(client.addr(), format!("tls://{b_tls}"), "followed to b over TLS");
    client.close().await.unwrap();
    a.running.shutdown().await;
    b.running.shutdown().await;
}
