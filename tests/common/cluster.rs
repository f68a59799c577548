//! A real cluster on loopback for the integration tests, over the three
//! `nats-server`s of [`crate::common::nats`]: heartline nodes in process or
//! as the built binary (to SIGKILL), tokens signed with a node's secret, and
//! the members' views as `/v1/cluster` shows them. Every child process is
//! killed when its handle drops, panics included.
//!
//! Included by `#[path = "common/cluster.rs"] mod nodes;` next to
//! `mod common;` (it uses its daemon and client helpers).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use heartline::admin::api::ClusterInfo;
use heartline::auth::{Claims, Keyring, Subject};
use heartline::config::Cluster;
use heartline_core::cluster::{ClusterMap, MapMember};

use crate::common::nats::free_port;
#[allow(unused_imports)] // not every test that includes this file uses both
pub(crate) use crate::common::nats::{Killed, Nats};
use crate::common::{hello, http, Client, Daemon};

/// The member key TTL the nodes use here, and how often they refresh.
pub(crate) const TTL: Duration = Duration::from_secs(3);
pub(crate) const REFRESH: Duration = Duration::from_millis(500);
/// How long the nodes may take to agree.
pub(crate) const CONVERGE: Duration = Duration::from_secs(20);
pub(crate) const PARTITIONS: u32 = 1_024;

pub(crate) fn cluster_settings(node: &str, nats: &[String]) -> Cluster {
    Cluster {
        nats: nats.to_vec(),
        node: Some(node.into()),
        partitions: PARTITIONS,
        ttl: TTL,
        refresh: REFRESH,
        ..Cluster::default()
    }
}

/// An in-process node of the cluster, signing tokens with `secret` (a
/// file) when given: the nodes of a cluster share their token secret.
pub(crate) async fn node(name: &str, nats: &[String], secret: Option<&Path>) -> Daemon {
    Daemon::start_with(|c| {
        if let Some(secret) = secret {
            std::fs::copy(secret, c.data_dir.join("secret")).unwrap();
        }
        c.cluster = Some(cluster_settings(name, nats));
    })
    .await
}

/// A node run as the built binary (so that it can be killed), with its
/// ports chosen here.
pub(crate) struct BinaryNode {
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub tcp: SocketAddr,
}

impl BinaryNode {
    /// Node `name` of the cluster on `nats`, with the token secret `secret`
    /// if given; `extra` is appended to its configuration file (sections of
    /// its own, after `[cluster]`).
    pub(crate) fn new(name: &str, nats: &[String], secret: Option<&Path>, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let urls: Vec<String> = nats.iter().map(|u| format!("\"{u}\"")).collect();
        let config = format!(
            "listen = \"{tcp}\"\nudp = \"127.0.0.1:0\"\n[admin]\nlisten = \"{admin}\"\n\
             [websocket]\nenabled = false\n[cluster]\nnats = [{}]\nnode = \"{name}\"\npartitions = {PARTITIONS}\n\
             ttl = \"{}\"\nrefresh = \"{}\"\n{extra}",
            urls.join(", "),
            humantime::format_duration(TTL),
            humantime::format_duration(REFRESH),
        );
        std::fs::write(dir.path().join("heartline.toml"), config).unwrap();
        let node = Self { dir, admin, tcp };
        if let Some(secret) = secret {
            std::fs::create_dir_all(node.data_dir()).unwrap();
            std::fs::copy(secret, node.data_dir().join("secret")).unwrap();
        }
        node
    }

    pub(crate) fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("log")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_heartline"))
            .args(["serve", "--config"])
            .arg(self.dir.path().join("heartline.toml"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// A token for `subject` signed with the secret in `data_dir` (a node's).
pub(crate) fn token_from(data_dir: &Path, subject: Subject) -> Bytes {
    let secret = heartline::auth::load_secret(&data_dir.join("secret")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    Bytes::from(Keyring { current: secret, previous: None }.issue(&Claims { subject, expires_at: now + 3_600 }))
}

/// A connection past WELCOME to the node at `tcp`, whose data dir is `data_dir`.
pub(crate) async fn connect_as(
    tcp: SocketAddr,
    data_dir: &Path,
    role: heartline_proto::Role,
    subject: Subject,
) -> Client {
    let mut client = Client::from(heartline_client::wire::Connection::connect(tcp).await.unwrap());
    client.handshake(hello(role, token_from(data_dir, subject), false, 0)).await;
    client
}

/// `/v1/cluster` of the node at `admin`; `None` while it does not answer.
pub(crate) async fn view(admin: SocketAddr) -> Option<ClusterInfo> {
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
pub(crate) async fn converge(admins: &[SocketAddr], members: &[&str]) -> (ClusterInfo, Duration) {
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

pub(crate) fn owned(view: &ClusterInfo, node: &str) -> u32 {
    view.members.iter().find(|m| m.node == node).map_or(0, |m| m.partitions_owned)
}

/// The map a node's `/v1/cluster` describes, to find a user's owner.
pub(crate) fn map_of(view: &ClusterInfo) -> ClusterMap {
    let members = view
        .members
        .iter()
        .map(|m| MapMember {
            node: m.node.clone(),
            advertise: m.advertise.clone(),
            ws: String::new(),
            tls: String::new(),
            joined: 0,
        })
        .collect();
    ClusterMap::new(0, members, view.partitions)
}

pub(crate) fn version(view: &ClusterInfo) -> u64 {
    view.version.expect("a node in a cluster has a map version").0
}

/// A cluster on loopback: three `nats-server`s and three nodes sharing a's
/// token secret — a and b in process, c the built binary (to SIGKILL) with
/// `c_extra` appended to its configuration — once they agree on the map.
pub(crate) struct Three {
    pub a: Daemon,
    pub b: Daemon,
    pub c: BinaryNode,
    /// c's process.
    pub child: Killed,
    /// The map they agreed on.
    pub view: ClusterInfo,
    /// The NATS servers: bind them (`nats: _nats`) to keep them for the
    /// test, since a pattern's `..` drops what it leaves out.
    pub nats: Nats,
}

/// [`Three`], or `None` when `nats-server` is missing (a failure under CI).
pub(crate) async fn three(c_extra: &str) -> Option<Three> {
    let nats = Nats::ready().await?;
    let a = node("a", &nats.urls, None).await;
    let secret = a.config.data_dir.join("secret");
    let b = node("b", &nats.urls, Some(&secret)).await;
    let c = BinaryNode::new("c", &nats.urls, Some(&secret), c_extra);
    let child = Killed(vec![c.spawn()]);
    let (view, _) = converge(&[a.running.admin, b.running.admin, c.admin], &["a", "b", "c"]).await;
    Some(Three { a, b, c, child, view, nats })
}
