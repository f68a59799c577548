//! `heartline ctl`, the real binary, against a daemon started by the test:
//! stats, presence set/get/watch in plain and JSON output, and the error
//! messages people see.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use common::*;
use heartline::auth::{to_text, Subject};
use heartline_client::{Client, ClientConfig};
use heartline_proto::Status;

fn ctl_command(daemon: &Daemon, token: &[u8], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heartline"));
    command
        .args(["ctl", "--addr", &daemon.running.tcp.to_string(), "--token", &to_text(token)])
        .args(args)
        .env_remove("HEARTLINE_TOKEN");
    command
}

/// Runs `heartline ctl` to completion (off the runtime: it blocks).
async fn ctl(daemon: &Daemon, token: &[u8], args: &[&str]) -> Output {
    let mut command = ctl_command(daemon, token, args);
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "ctl failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Starts `heartline ctl` in the background, its output piped.
fn spawn(daemon: &Daemon, token: &[u8], args: &[&str]) -> Child {
    ctl_command(daemon, token, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The next line a background ctl writes to `stream`.
async fn next_line(reader: &mut BufReader<impl std::io::Read + Send + 'static>) -> String {
    let mut line = String::new();
    tokio::task::block_in_place(|| reader.read_line(&mut line)).unwrap();
    line.trim_end().to_owned()
}

/// Ctrl-C, as a person would stop it; returns whether it exited cleanly.
async fn interrupt(mut child: Child) -> bool {
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    tokio::task::spawn_blocking(move || child.wait().unwrap().success()).await.unwrap()
}

fn gateway_token(daemon: &Daemon) -> Vec<u8> {
    daemon.token(Subject::Gateway("ctl".into()), 60).to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_in_plain_and_json() {
    let daemon = Daemon::start().await;
    let token = daemon.user_token(1);
    let plain = stdout(&ctl(&daemon, &token, &["stats"]).await);
    assert_eq!(plain, "online users 1\nsessions 1\nwatches 0\nconnections 1\n", "ctl's own session counts");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&ctl(&daemon, &token, &["stats", "--json"]).await)).unwrap();
    assert_eq!(json, serde_json::json!({ "online_users": 1, "sessions": 1, "watches": 0, "connections": 1 }));
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_set_then_get() {
    let daemon = Daemon::start().await;
    // Another session of user 7 keeps the user present after ctl's ends.
    let phone = Client::connect(ClientConfig::new(daemon.running.tcp.to_string(), daemon.user_token(7))).await.unwrap();
    let set = ctl(&daemon, &daemon.user_token(7), &["presence", "set", "busy", "in a meeting"]).await;
    assert_eq!(stdout(&set), "status set: busy  \"in a meeting\"\n");

    let gateway = gateway_token(&daemon);
    let plain = stdout(&ctl(&daemon, &gateway, &["--gateway", "presence", "get", "7", "8"]).await);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines.len(), 2, "{plain}");
    assert!(lines[0].starts_with("user 7  online  \"in a meeting\"  last seen 20"), "{}", lines[0]);
    assert!(lines[0].contains("Z  v"), "{}", lines[0]);
    assert_eq!(lines[1], "user 8  offline  never seen  v0");

    let json = stdout(&ctl(&daemon, &gateway, &["--gateway", "--json", "presence", "get", "7"]).await);
    let entries: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(entries[0]["user"], 7);
    assert_eq!(entries[0]["status"], "online");
    assert_eq!(entries[0]["text"], "in a meeting");
    assert!(entries[0]["version"].as_u64().unwrap() > 0);
    phone.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_set_hold_keeps_the_status_until_ctrl_c() {
    let daemon = Daemon::start().await;
    let mut holder = spawn(&daemon, &daemon.user_token(5), &["presence", "set", "away", "--hold"]);
    let mut stderr = BufReader::new(holder.stderr.take().unwrap());
    assert_eq!(next_line(&mut stderr).await, "holding the session; Ctrl-C ends it");
    let mut watcher = daemon.watcher().await;
    let held = watcher.watch(&[5]).await.remove(0);
    assert_eq!(held.status, Status::Away);
    // Longer than the TTL: the held session heartbeats.
    watcher.no_push_for(5, daemon.config.presence.ttl + std::time::Duration::from_millis(500)).await;
    assert!(interrupt(holder).await);
    assert_eq!(watcher.push_for(5).await.status, Status::Offline, "BYE on Ctrl-C");
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_watch_streams_changes() {
    let daemon = Daemon::start().await;
    let mut watch = spawn(&daemon, &gateway_token(&daemon), &["--gateway", "--json", "presence", "watch", "9"]);
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let snapshot: serde_json::Value = serde_json::from_str(&next_line(&mut out).await).unwrap();
    assert_eq!((snapshot["user"].as_u64(), snapshot["status"].as_str()), (Some(9), Some("offline")));
    let user = Client::connect(ClientConfig::new(daemon.running.tcp.to_string(), daemon.user_token(9))).await.unwrap();
    user.set_status(Status::Busy, "").await.unwrap();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("busy") {
        let entry: serde_json::Value = serde_json::from_str(&next_line(&mut out).await).unwrap();
        seen.push(entry["status"].as_str().unwrap().to_owned());
    }
    assert!(seen.iter().all(|s| s == "online" || s == "busy"), "{seen:?}");
    assert!(interrupt(watch).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_code_and_say_what_to_do() {
    let daemon = Daemon::start().await;
    let forged = ctl(&daemon, b"\x01\x00not a real token", &["stats"]).await;
    assert!(!forged.status.success());
    let message = String::from_utf8_lossy(&forged.stderr);
    // One line: the failure, then its cause.
    assert!(message.starts_with(&format!("error: cannot connect to {}: BAD_TOKEN: ", daemon.running.tcp)), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");

    let no_token = Command::new(env!("CARGO_BIN_EXE_heartline"))
        .args(["ctl", "--addr", &daemon.running.tcp.to_string(), "stats"])
        .env_remove("HEARTLINE_TOKEN")
        .output()
        .unwrap();
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("no token: pass --token or set HEARTLINE_TOKEN"));

    let limit = ctl(&daemon, &daemon.user_token(1), &["timeline", "--limit", "0"]).await;
    assert!(String::from_utf8_lossy(&limit.stderr).contains("invalid argument: a page holds 1 to 100 items"));
}

#[tokio::test(flavor = "multi_thread")]
async fn post_follow_and_timeline() {
    let daemon = Daemon::start().await;
    let (author, reader) = (daemon.user_token(1), daemon.user_token(2));
    let posted = ctl(&daemon, &author, &["post", "hello", "--kind", "3"]).await;
    if !posted.status.success() {
        // Until the server enables the feed (SPEC.md §10).
        assert!(String::from_utf8_lossy(&posted.stderr).contains("UNAVAILABLE: "), "{posted:?}");
        return;
    }
    let post = stdout(&posted).trim().strip_prefix("posted ").expect("posted 0x…").to_owned();
    assert_eq!(stdout(&ctl(&daemon, &reader, &["follow", "1"]).await), "following user 1\n");
    let home = stdout(&ctl(&daemon, &reader, &["timeline"]).await);
    assert_eq!(home, format!("{post}  user 1  kind 3  \"hello\"\n"));
    let json = stdout(&ctl(&daemon, &reader, &["--json", "timeline", "--author", "1", "--max-id", &post]).await);
    assert_eq!(json.trim(), "[]", "nothing older than the only post");
}
