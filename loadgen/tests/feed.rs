//! The feed scenario with a small graph against a real daemon started in
//! this process, once per strategy (and, when asked, against a Redis this
//! test starts).

mod common;

use common::{admin_get, config, daemon, loadgen, loadgen_async, Redis};
use heartline::store::Durability;
use heartline_core::feed::Strategy;

const USERS: usize = 2_000;

fn args(extra: &[&str]) -> Vec<String> {
    let users = USERS.to_string();
    let mut args = vec!["feed", "--users", &users, "--posts-per-s", "20", "--reads-per-s", "100", "--duration", "2s"];
    args.extend_from_slice(&["--readers", "20", "--observers", "50"]);
    args.extend_from_slice(extra);
    args.into_iter().map(str::to_owned).collect()
}

/// The ops every run reports, with as many posts and reads as scheduled.
fn check_ops(report: &serde_json::Value) {
    assert_eq!(report["scenario"], "feed");
    assert_eq!(report["clients"], USERS as u64);
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["ops"]["post_ack"]["count"], 40, "{report:#}");
    let reads = report["ops"]["timeline_read"]["count"].as_u64().unwrap();
    assert!((180..=200).contains(&reads), "{report:#}");
    let fanout = &report["ops"]["fanout"];
    assert!(fanout["count"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(report["extra"]["fanout_missing_after_drain"], 0.0, "{report:#}");
    for op in ["post_ack", "fanout", "timeline_read"] {
        let o = &report["ops"][op];
        assert!(o["p50_us"].as_u64().unwrap() > 0, "{op}: {report:#}");
        assert!(o["p99_us"].as_u64().unwrap() <= o["max_us"].as_u64().unwrap(), "{op}");
    }
}

async fn run_against_daemon(strategy: Strategy, label: &str) -> (serde_json::Value, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.feed.strategy = strategy;
    // Tens of thousands of follows, each its own write: fsync would make this test slow.
    config.store.durability = Durability::Os;
    let (running, addr, data_dir) = daemon(config).await;
    let admin = running.admin.to_string();
    let pid = std::process::id().to_string();
    let extra =
        ["--addr", &addr, "--admin", &admin, "--data-dir", &data_dir, "--strategy", label, "--server-pid", &pid];
    let report = loadgen_async(args(&extra), dir.path().join("report.json")).await;
    // The first celebrity (user 1) is followed by about 95% of the users.
    let (status, graph) = admin_get(running.admin, "/v1/graph/1").await;
    assert_eq!(status, 200, "{graph}");
    let graph: serde_json::Value = serde_json::from_str(&graph).unwrap();
    assert_eq!(graph["user"], "1", "{graph}");
    let celebrity = graph["followers"].as_u64().unwrap_or_else(|| panic!("no followers: {graph}")) as usize;
    // The report names the daemon's version as its admin API does.
    let (_, stats) = admin_get(running.admin, "/v1/stats").await;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(report["daemon_version"], stats["version"], "{report:#}");
    running.shutdown().await;
    (report, celebrity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_loads_the_graph_and_fans_out_into_inboxes() {
    let (report, celebrity) = run_against_daemon(Strategy::Push, "push").await;
    check_ops(&report);
    assert_eq!(report["mode"], "push");
    assert!((USERS * 90 / 100..USERS).contains(&celebrity), "{celebrity}");
    assert!(report["extra"]["setup_follows_per_s"].as_f64().unwrap() > 0.0, "{report:#}");
    assert!(report["extra"]["daemon_fanout_inserts"].as_f64().unwrap() > 0.0, "{report:#}");
    assert!(report["extra"]["daemon_fanout_count"].as_f64().unwrap() >= 40.0, "{report:#}");
    for key in ["cpu_s", "rss_bytes", "cpu_us_per_op"] {
        assert!(report["server"][key].as_f64().is_some(), "{key}: {report:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_writes_no_inboxes_but_followers_see_posts_live() {
    let (report, _) = run_against_daemon(Strategy::Pull, "pull").await;
    check_ops(&report);
    assert_eq!(report["extra"]["daemon_fanout_inserts"], 0.0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_runs_the_same_workload() {
    let (report, _) = run_against_daemon(Strategy::Hybrid, "hybrid").await;
    check_ops(&report);
    assert_eq!(report["mode"], "hybrid");
}

/// Starts its own redis-server: needs it on PATH (`apt-get install -y redis-server`).
#[test]
#[ignore]
fn redis_target_runs_the_same_workload() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let target = format!("redis://127.0.0.1:{}", redis.1);
    let pid = redis.0.id().to_string();
    let report = loadgen(&args(&["--target", &target, "--server-pid", &pid]), &dir.path().join("report.json"));
    check_ops(&report);
    assert_eq!(report["target"], target);
    assert!(report["server"]["rss_bytes"].as_f64().unwrap() > 0.0, "{report:#}");
}
