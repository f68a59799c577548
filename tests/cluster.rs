//! A real cluster on loopback: three `nats-server` processes with JetStream
//! and three heartline nodes (two in process, one the built binary so that
//! it can be killed with SIGKILL). The nodes agree on one map; a killed node
//! is dropped within the key TTL and its partitions taken; it rejoins.
//!
//! Skipped with a message when `nats-server` is missing, failed under CI.
//! Prints how long convergence and failure detection took (docs/cluster.md).

mod common;
#[path = "common/cluster.rs"]
mod nodes;

use std::time::{Duration, Instant};

use common::*;
use heartline::admin::api::ClusterInfo;
use nodes::*;

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
    let started = Instant::now();
    let Some(nats) = Nats::ready().await else { return };
    let urls = nats.urls.clone();
    eprintln!("JetStream ready after {:?}", started.elapsed());

    let a = Daemon::start_with(|c| c.cluster = Some(cluster_settings("a", &urls))).await;
    let b = Daemon::start_with(|c| c.cluster = Some(cluster_settings("b", &urls))).await;
    let c = BinaryNode::new("c", &urls, None, "");
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

fn owned_list(view: &ClusterInfo) -> Vec<u32> {
    view.members.iter().map(|m| m.partitions_owned).collect()
}
