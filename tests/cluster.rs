//! A real cluster on loopback: three `nats-server` processes with JetStream
//! and three heartline nodes (two in process, one the built binary so that
//! it can be killed with SIGKILL). The nodes agree on one map; a killed node
//! is dropped within the key TTL and its partitions taken; it rejoins.
//!
//! Skipped with a message when `nats-server` is missing, failed under CI.
//! Prints how long convergence and failure detection took (docs/cluster.md).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::nats::{free_port, Killed, Nats};
use common::*;
use heartline::admin::api::ClusterInfo;
use heartline::config::Cluster;

/// The member key TTL the nodes use here, and how often they refresh.
const TTL: Duration = Duration::from_secs(3);
const REFRESH: Duration = Duration::from_millis(500);
/// Bounds for each phase.
const CONVERGE: Duration = Duration::from_secs(20);
const PARTITIONS: u32 = 1_024;

fn cluster_settings(node: &str, nats: &[String]) -> Cluster {
    Cluster {
        nats: nats.to_vec(),
        node: Some(node.into()),
        partitions: PARTITIONS,
        ttl: TTL,
        refresh: REFRESH,
        ..Cluster::default()
    }
}

/// The killable node: the built binary, with its admin port chosen here.
struct Child3 {
    dir: tempfile::TempDir,
    admin: SocketAddr,
}

impl Child3 {
    fn new(nats: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let urls: Vec<String> = nats.iter().map(|u| format!("\"{u}\"")).collect();
        let config = format!(
            "listen = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n[admin]\nlisten = \"{admin}\"\n\
             [websocket]\nenabled = false\n[cluster]\nnats = [{}]\nnode = \"c\"\npartitions = {PARTITIONS}\n\
             ttl = \"{}\"\nrefresh = \"{}\"\n",
            urls.join(", "),
            humantime::format_duration(TTL),
            humantime::format_duration(REFRESH),
        );
        std::fs::write(dir.path().join("heartline.toml"), config).unwrap();
        Self { dir, admin }
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("log")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_heartline"))
            .args(["serve", "--config"])
            .arg(self.dir.path().join("heartline.toml"))
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }
}

/// `/v1/cluster` of the node at `admin`; `None` while it does not answer.
async fn view(admin: SocketAddr) -> Option<ClusterInfo> {
    let get = async {
        // `http` insists on an answer: first see that someone listens (a starting child may not yet).
        tokio::net::TcpStream::connect(admin).await.ok()?;
        let response = http(admin, "GET", "/v1/cluster", None, "").await;
        (response.status == 200).then(|| serde_json::from_str(&response.body).unwrap())
    };
    tokio::time::timeout(Duration::from_secs(2), get).await.ok().flatten()
}

/// Polls every node until all show exactly `members` (by name), at one
/// version, with every partition owned once; their common view.
async fn converge(admins: &[SocketAddr], members: &[&str]) -> (ClusterInfo, Duration) {
    let started = Instant::now();
    loop {
        let mut views = Vec::new();
        for &admin in admins {
            views.push(view(admin).await);
        }
        let agreed = views.iter().all(|v| {
            v.as_ref().is_some_and(|v| {
                let names: Vec<&str> = v.members.iter().map(|m| m.node.as_str()).collect();
                v.joined
                    && names == members
                    && v.version == views[0].as_ref().unwrap().version
                    && v.members.iter().map(|m| m.partitions_owned).sum::<u32>() == PARTITIONS
            })
        });
        if agreed {
            return (views.swap_remove(0).unwrap(), started.elapsed());
        }
        assert!(started.elapsed() < CONVERGE, "no agreement on {members:?} within {CONVERGE:?}: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn owned(view: &ClusterInfo, node: &str) -> u32 {
    view.members.iter().find(|m| m.node == node).map_or(0, |m| m.partitions_owned)
}

#[tokio::test]
async fn a_node_alone_says_so_and_has_no_cluster_metrics() {
    let alone = Daemon::start().await;
    let response = http(alone.running.admin, "GET", "/v1/cluster", None, "").await;
    assert_eq!(response.status, 200);
    let info: ClusterInfo = serde_json::from_str(&response.body).unwrap();
    assert!(!info.enabled && info.members.is_empty() && info.version.is_none());
    assert!(!scrape(alone.running.admin).await.contains("heartline_cluster_"));
    assert_eq!(http(alone.running.admin, "POST", "/v1/cluster", None, "").await.status, 405);
    alone.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_drop_a_killed_one_and_take_it_back() {
    if !available("nats-server", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let urls = nats.urls.clone();
    let started = Instant::now();
    nats.wait_for_jetstream().await;
    eprintln!("JetStream ready after {:?}", started.elapsed());

    let a = Daemon::start_with(|c| c.cluster = Some(cluster_settings("a", &urls))).await;
    let b = Daemon::start_with(|c| c.cluster = Some(cluster_settings("b", &urls))).await;
    let c = Child3::new(&urls);
    let mut child = Killed(vec![c.spawn()]);
    let admins = [a.running.admin, b.running.admin, c.admin];
    let (three, took) = converge(&admins, &["a", "b", "c"]).await;
    eprintln!("3 nodes converged {took:?} after the last start: map version {:?}", three.version);
    let metrics = scrape(a.running.admin).await;
    assert_eq!(sample(&metrics, "heartline_cluster_members"), 3);
    assert_eq!(sample(&metrics, "heartline_cluster_map_version"), version(&three));
    assert_eq!(sample(&metrics, "heartline_cluster_partitions_owned"), u64::from(owned(&three, "a")));

    // SIGKILL: no goodbye; the survivors notice the missing refreshes.
    let killed = Instant::now();
    child.0[0].kill().unwrap();
    child.0[0].wait().unwrap();
    let (two, _) = converge(&admins[..2], &["a", "b"]).await;
    let detected = killed.elapsed();
    eprintln!("a SIGKILLed node dropped after {detected:?} (TTL {TTL:?}, refresh {REFRESH:?})");
    assert!(detected <= TTL + Duration::from_secs(5), "{detected:?}");
    assert!(version(&two) > version(&three));
    for node in ["a", "b"] {
        assert!(owned(&two, node) >= owned(&three, node), "{node} kept its partitions and took some of c's");
    }

    // The same node again: a new incarnation, a newer map, c's share back.
    let restarted = Instant::now();
    child.0[0] = c.spawn();
    let (again, took) = converge(&admins, &["a", "b", "c"]).await;
    eprintln!("the restarted node rejoined after {:?} ({took:?} of polling)", restarted.elapsed());
    assert!(version(&again) > version(&two));
    assert_eq!(again.members.iter().map(|m| m.partitions_owned).collect::<Vec<_>>(), owned_list(&three));

    a.running.shutdown().await;
    // A graceful leave deletes the key: b drops a without waiting for the TTL.
    let left = Instant::now();
    converge(&admins[1..], &["b", "c"]).await;
    eprintln!("a node that shut down left after {:?}", left.elapsed());
    assert!(left.elapsed() < TTL);
    b.running.shutdown().await;
}

fn version(view: &ClusterInfo) -> u64 {
    view.version.expect("a node in a cluster has a map version").0
}

fn owned_list(view: &ClusterInfo) -> Vec<u32> {
    view.members.iter().map(|m| m.partitions_owned).collect()
}
