//! Presence across a real cluster on loopback: three `nats-server`s with
//! JetStream, three heartline nodes (a and b in process, c the built binary
//! so that it can be killed with SIGKILL), every client connected to its
//! user's owner.
//!
//! Watchers on every node see every user (WATCH snapshots and pushes across
//! nodes); the cross-node notification latency is measured; c is killed:
//! the survivors' watchers see its users go offline, then online again once
//! the test has reconnected them to their new owners, within TTL + 5 s of
//! the kill; every watcher ends with the right state, and the last seen of
//! a user who left c before it died is still read.
//!
//! Skipped with a message when `nats-server` is missing, failed under CI.
//! Prints the latency and failover figures (docs/cluster.md).

mod common;
#[path = "common/cluster.rs"]
mod nodes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use heartline::auth::Subject;
use heartline_proto::{Device, Message, OpenEntry, PresenceEntry, Role, Status};
use nodes::*;

/// Presence TTL of the nodes here: long, so that idle test clients stay.
const PRESENCE_TTL: Duration = Duration::from_secs(60);
/// Status changes timed across nodes.
const CHANGES: usize = 2_000;
/// The pause between two of them (a moderate, steady rate).
const PACE: Duration = Duration::from_millis(2);

/// Where a node listens and where its secret is.
#[derive(Clone)]
struct Node {
    name: &'static str,
    tcp: SocketAddr,
    admin: SocketAddr,
    data_dir: PathBuf,
}

impl Node {
    async fn user(&self, user: u64) -> Client {
        connect_as(self.tcp, &self.data_dir, Role::Client, Subject::User(user)).await
    }

    /// A gateway: it watches as anyone would and never expires.
    async fn gateway(&self) -> Client {
        connect_as(self.tcp, &self.data_dir, Role::Gateway, Subject::Gateway(format!("gw-{}", self.name))).await
    }
}

/// The first user from `from` on that `map` gives to `owner`.
fn user_of(map: &heartline_core::cluster::ClusterMap, owner: &str, from: u64) -> u64 {
    (from..).find(|&u| map.owner_of_user(u).is_some_and(|m| m.node == owner)).unwrap()
}

/// Reads pushes until `user`'s entry has `status`; returns it.
async fn until_status(watcher: &mut Client, user: u64, status: Status) -> PresenceEntry {
    loop {
        let entry = watcher.push_for(user).await;
        if entry.status == status {
            return entry;
        }
    }
}

/// Reads pushes until each user has had its status; the entries that had it.
async fn until_all(watcher: &mut Client, wanted: &[(u64, Status)]) -> HashMap<u64, PresenceEntry> {
    let mut seen = HashMap::new();
    while seen.len() < wanted.len() {
        let Message::PresencePush { entries } = watcher.recv().await else { continue };
        for entry in entries {
            if wanted.contains(&(entry.user, entry.status)) {
                seen.insert(entry.user, entry);
            }
        }
    }
    seen
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_nodes_and_survives_a_killed_node() {
    let Some(nats) = Nats::ready().await else { return };
    let urls = nats.urls.clone();

    let settings = |name: &str| {
        let cluster = cluster_settings(name, &urls);
        move |c: &mut heartline::config::Config| {
            c.cluster = Some(cluster);
            c.presence.ttl = PRESENCE_TTL;
        }
    };
    let a = Daemon::start_with(settings("a")).await;
    let b = Daemon::start_with(settings("b")).await;
    let c = BinaryNode::new("c", &urls, None, &format!("[presence]\nttl = \"{}s\"\n", PRESENCE_TTL.as_secs()));
    let mut child = Killed(vec![c.spawn()]);
    let nodes = [
        Node { name: "a", tcp: a.running.tcp, admin: a.running.admin, data_dir: a.config.data_dir.clone() },
        Node { name: "b", tcp: b.running.tcp, admin: b.running.admin, data_dir: b.config.data_dir.clone() },
        Node { name: "c", tcp: c.tcp, admin: c.admin, data_dir: c.data_dir() },
    ];
    let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
    let (three, _) = converge(&admins, &["a", "b", "c"]).await;
    let map = map_of(&three);
    let by_name: HashMap<&str, &Node> = nodes.iter().map(|n| (n.name, n)).collect();

    // Users by owner: ua on a, ub on b, uc1 and uc2 on c; each connects to its owner.
    let ua = user_of(&map, "a", 1_000);
    let ub = user_of(&map, "b", 1_000);
    let uc1 = user_of(&map, "c", 1_000);
    let uc2 = user_of(&map, "c", uc1 + 1);
    let users = [ua, ub, uc1, uc2];
    let mut clients = HashMap::new();
    for (user, owner) in [(ua, "a"), (ub, "b"), (uc1, "c"), (uc2, "c")] {
        clients.insert(user, by_name[owner].user(user).await);
    }

    // A watcher on every node sees everyone online, across nodes.
    let mut watchers = Vec::new();
    for node in &nodes {
        let mut watcher = node.gateway().await;
        let snapshot = watcher.watch(&users).await;
        for entry in &snapshot {
            assert_eq!(entry.status, Status::Online, "{}'s snapshot: {snapshot:?}", node.name);
        }
        watchers.push(watcher);
    }

    // A user watches another user on another node (as that user, not as anyone).
    let ub_client = clients.get_mut(&ub).unwrap();
    assert_eq!(ub_client.watch(&[uc1]).await[0].status, Status::Online);

    // Pushes across nodes: a user of c and a user of a change.
    clients.get_mut(&uc1).unwrap().set_status(Status::Busy, "on c").await;
    clients.get_mut(&ua).unwrap().set_status(Status::Away, "").await;
    for watcher in &mut watchers {
        // From two nodes, the two pushes may come in either order.
        let seen = until_all(watcher, &[(uc1, Status::Busy), (ua, Status::Away)]).await;
        assert_eq!(seen[&uc1].text.as_str(), "on c");
    }
    assert_eq!(until_status(clients.get_mut(&ub).unwrap(), uc1, Status::Busy).await.text.as_str(), "on c");

    // Latency: a gateway's session on a changes status, a watcher on b times the push.
    let timed = user_of(&map, "a", uc2 + 1);
    let mut gateway = nodes[0].gateway().await;
    let opened = gateway
        .request(|req| Message::Open {
            req,
            entries: vec![OpenEntry { user: timed, device: Device::Desktop, status: Status::Online }],
        })
        .await;
    let Message::Opened { sessions, .. } = opened else { panic!("expected OPENED, got {opened:?}") };
    let mut timer = nodes[1].gateway().await;
    assert_eq!(timer.watch(&[timed]).await[0].status, Status::Online);
    let mut latencies = Vec::with_capacity(CHANGES);
    let started = Instant::now();
    for i in 0..CHANGES {
        let status = if i % 2 == 0 { Status::Away } else { Status::Online };
        let req = gateway.req();
        let sent = Instant::now();
        gateway.send(Message::SetStatus { req, session: Some(sessions[0]), status, text: "".into() }).await;
        until_status(&mut timer, timed, status).await;
        latencies.push(sent.elapsed());
        assert!(matches!(gateway.reply().await, Message::Ok { .. }));
        tokio::time::sleep(PACE).await;
    }
    let rate = CHANGES as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let (p50, p99, max) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99), latencies[CHANGES - 1]);
    eprintln!(
        "cross-node notification a -> b: {CHANGES} changes at {rate:.0}/s: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");

    // uc2 leaves c before it dies: its last seen must outlive c.
    let mut leaving = clients.remove(&uc2).unwrap();
    leaving.send(Message::Bye).await;
    let left = until_status(&mut watchers[0], uc2, Status::Offline).await;
    assert!(left.last_seen_ms > 0);
    for watcher in &mut watchers[1..] {
        assert_eq!(until_status(watcher, uc2, Status::Offline).await.last_seen_ms, left.last_seen_ms);
    }
    // The owner writes last seen to the bucket each second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // SIGKILL c: its users go offline for the survivors' watchers.
    let killed = Instant::now();
    child.0[0].kill().unwrap();
    child.0[0].wait().unwrap();
    drop(clients.remove(&uc1));
    watchers.truncate(2);
    for watcher in &mut watchers {
        let gone = until_status(watcher, uc1, Status::Offline).await;
        assert!(gone.last_seen_ms > 0);
    }
    let offline_after = killed.elapsed();
    let (two, _) = converge(&admins[..2], &["a", "b"]).await;
    let map = map_of(&two);

    // uc1 reconnects to the node the new map names and re-opens its session.
    let owner = map.owner_of_user(uc1).unwrap().node.clone();
    let mut again = by_name[owner.as_str()].user(uc1).await;
    for watcher in &mut watchers {
        until_status(watcher, uc1, Status::Online).await;
    }
    let online_after = killed.elapsed();
    eprintln!(
        "after SIGKILL of c: its user offline for the watchers after {offline_after:?}, online again on {owner} after {online_after:?} (TTL {TTL:?})"
    );
    assert!(online_after <= TTL + Duration::from_secs(5), "{online_after:?}");

    // Every watcher ends with the right state; uc2's last seen is still read.
    let expected = [(ua, Status::Away), (ub, Status::Online), (uc1, Status::Online), (uc2, Status::Offline)];
    for (i, watcher) in watchers.iter_mut().enumerate() {
        let entries = watcher.query(&users).await;
        for ((user, status), entry) in expected.iter().zip(&entries) {
            assert_eq!((entry.user, entry.status), (*user, *status), "watcher on {}: {entries:?}", nodes[i].name);
        }
        assert_eq!(entries[3].last_seen_ms, left.last_seen_ms, "uc2's last seen on {}", nodes[i].name);
    }
    // Asked afresh of uc2's new owner, which never had it in memory or in its store.
    let uc2_owner = map.owner_of_user(uc2).unwrap().node.clone();
    let mut fresh = by_name[uc2_owner.as_str()].gateway().await;
    let entry = &fresh.query(&[uc2]).await[0];
    assert_eq!((entry.status, entry.last_seen_ms), (Status::Offline, left.last_seen_ms), "asked of {uc2_owner}");

    again.send(Message::Bye).await;
    a.running.shutdown().await;
    b.running.shutdown().await;
}
