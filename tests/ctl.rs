//! `heartline ctl`, the real binary, against a daemon started by the test:
//! stats, presence set/get/watch, posts, the graph and timelines (live too)
//! in plain and JSON output, `info` from the admin listener, and the error
//! messages people see.

mod common;

use std::io::{BufRead, BufReader, Read};
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

/// Ctrl-C for a background ctl that should have said nothing on stderr
/// (no "reconnected" for a connection never lost): it exits cleanly.
async fn interrupt_quiet(mut child: Child) {
    let mut stderr = child.stderr.take().unwrap();
    assert!(interrupt(child).await);
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    assert_eq!(said, "", "nothing on stderr");
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
    let plain = stdout(&ctl(&daemon, &gateway, &["presence", "get", "--gateway", "7", "8"]).await);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines.len(), 2, "{plain}");
    assert!(lines[0].starts_with("user 7  online  \"in a meeting\"  last seen 20"), "{}", lines[0]);
    assert!(lines[0].contains("Z  v"), "{}", lines[0]);
    assert_eq!(lines[1], "user 8  offline  never seen  v0");

    let json = stdout(&ctl(&daemon, &gateway, &["--json", "presence", "get", "7", "--gateway"]).await);
    let entries: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(entries[0]["user"], "7", "ids are strings, as in the admin API");
    assert_eq!(entries[0]["status"], "online");
    assert_eq!(entries[0]["text"], "in a meeting");
    let version: u64 = entries[0]["version"].as_str().expect("a string").parse().unwrap();
    assert!(version > 0);
    assert!(lines[0].ends_with(&format!("  v{version}")), "the same version, in decimal: {}", lines[0]);
    assert!(entries[0]["last_seen_ms"].is_u64(), "timestamps stay numbers");
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
    let mut watch = spawn(&daemon, &gateway_token(&daemon), &["--json", "presence", "watch", "--gateway", "9"]);
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let snapshot: serde_json::Value = serde_json::from_str(&next_line(&mut out).await).unwrap();
    assert_eq!((snapshot["user"].as_str(), snapshot["status"].as_str()), (Some("9"), Some("offline")));
    let user = Client::connect(ClientConfig::new(daemon.running.tcp.to_string(), daemon.user_token(9))).await.unwrap();
    user.set_status(Status::Busy, "").await.unwrap();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("busy") {
        let entry: serde_json::Value = serde_json::from_str(&next_line(&mut out).await).unwrap();
        seen.push(entry["status"].as_str().unwrap().to_owned());
    }
    assert!(seen.iter().all(|s| s == "online" || s == "busy"), "{seen:?}");
    interrupt_quiet(watch).await;
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

    // The page size is checked before anything is sent, and the help says it.
    for limit in ["0", "101"] {
        let refused = ctl(&daemon, &daemon.user_token(1), &["timeline", "--limit", limit]).await;
        assert_eq!(refused.status.code(), Some(2), "a usage error");
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(message.contains(&format!("invalid value '{limit}' for '--limit <LIMIT>': ")), "{message}");
        assert!(message.contains(" is not in 1..=100"), "{message}");
    }
    let help = stdout(&ctl(&daemon, &[], &["timeline", "--help"]).await);
    assert!(help.contains("Items per page: 1 to 100"), "{help}");

    // --gateway belongs to the commands that only read.
    let gateway = ctl(&daemon, &gateway_token(&daemon), &["post", "--gateway", "hello"]).await;
    assert!(String::from_utf8_lossy(&gateway.stderr).contains("unexpected argument '--gateway'"), "{gateway:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_as_a_gateway_has_no_session() {
    let daemon = Daemon::start().await;
    let plain = stdout(&ctl(&daemon, &gateway_token(&daemon), &["stats", "--gateway"]).await);
    assert_eq!(plain, "online users 0\nsessions 0\nwatches 0\nconnections 1\n", "looking made nobody online");
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
    let post: u64 = stdout(&posted).trim().strip_prefix("posted ").expect("posted ID").parse().expect("decimal");
    assert_eq!(stdout(&ctl(&daemon, &reader, &["follow", "1"]).await), "following user 1\n");
    let home = stdout(&ctl(&daemon, &reader, &["timeline"]).await);
    assert_eq!(home, format!("{post}  user 1  kind 3  \"hello\"\n"));
    let json = stdout(&ctl(&daemon, &reader, &["--json", "timeline", "--author", "1"]).await);
    let items: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        items,
        serde_json::json!([{ "post": post.to_string(), "author": "1", "kind": 3, "payload": hex::encode("hello") }])
    );
    // Post ids are read in decimal or hex.
    let older = ["--json", "timeline", "--author", "1", "--max-id"];
    assert_eq!(stdout(&ctl(&daemon, &reader, &[&older[..], &[&post.to_string()]].concat()).await).trim(), "[]");
    assert_eq!(stdout(&ctl(&daemon, &reader, &[&older[..], &[&format!("{post:#x}")]].concat()).await).trim(), "[]");

    let json = stdout(&ctl(&daemon, &author, &["--json", "post", "again"]).await);
    let again: serde_json::Value = serde_json::from_str(&json).unwrap();
    let again = again["post"].as_str().expect("the id as a string").to_owned();
    assert_eq!(stdout(&ctl(&daemon, &author, &["delete", &again]).await), format!("deleted post {again}\n"));
    let gone = ctl(&daemon, &author, &["delete", &again]).await;
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NOT_FOUND: "), "{gone:?}");

    assert_eq!(stdout(&ctl(&daemon, &reader, &["block", "3"]).await), "blocked user 3\n");
    assert_eq!(stdout(&ctl(&daemon, &reader, &["unblock", "3"]).await), "unblocked user 3\n");
    assert_eq!(stdout(&ctl(&daemon, &reader, &["--json", "unblock", "3"]).await), "{\"ok\":true}\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeline_live_prints_the_page_then_what_is_pushed() {
    let daemon = Daemon::start().await;
    let author =
        Client::connect(ClientConfig::new(daemon.running.tcp.to_string(), daemon.user_token(1))).await.unwrap();
    let Ok(first) = author.post(0, "first").await else {
        return; // Until the server enables the feed, as above.
    };
    let reader = daemon.user_token(2);
    stdout(&ctl(&daemon, &reader, &["follow", "1"]).await);
    let mut live = spawn(&daemon, &reader, &["timeline", "--live"]);
    let mut out = BufReader::new(live.stdout.take().unwrap());
    assert_eq!(next_line(&mut out).await, format!("{first}  user 1  kind 0  \"first\""));
    // The page is printed once LIVE is on: what comes next is pushed.
    let second = author.post(0, "second").await.unwrap();
    assert_eq!(next_line(&mut out).await, format!("{second}  user 1  kind 0  \"second\""));
    author.delete(first).await.unwrap();
    assert_eq!(next_line(&mut out).await, format!("deleted post {first}"));
    interrupt_quiet(live).await;

    let mut live = spawn(&daemon, &reader, &["--json", "timeline", "--live", "--limit", "1"]);
    let mut out = BufReader::new(live.stdout.take().unwrap());
    let page: serde_json::Value = serde_json::from_str(&next_line(&mut out).await).unwrap();
    assert_eq!(page[0]["post"], second.to_string());
    author.delete(second).await.unwrap();
    let deleted: serde_json::Value = serde_json::from_str(&next_line(&mut out).await).unwrap();
    assert_eq!(deleted, serde_json::json!({ "event": "deleted", "post": second.to_string() }));
    interrupt_quiet(live).await;
    author.close().await.unwrap();
}

/// `heartline ctl info --admin ADDR` with only the admin token, if any
/// (`HEARTLINE_ADMIN_TOKEN` when `env_token` is given): no protocol token.
async fn info(daemon: &Daemon, env_token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heartline"));
    command
        .args(["ctl", "info", "--admin", &daemon.running.admin.to_string()])
        .args(args)
        .env_remove("HEARTLINE_TOKEN")
        .env_remove("HEARTLINE_ADMIN_TOKEN");
    if let Some(token) = env_token {
        command.env("HEARTLINE_ADMIN_TOKEN", token);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn info_reads_the_admin_listener_with_the_admin_token_only() {
    let daemon = Daemon::start_with(|c| c.admin.token = Some("s3cret".into())).await;
    let _user = Client::connect(ClientConfig::new(daemon.running.tcp.to_string(), daemon.user_token(3))).await.unwrap();

    let text = stdout(&info(&daemon, Some("s3cret"), &[]).await);
    let head = format!("version {}\npid {}\nuptime ", env!("CARGO_PKG_VERSION"), std::process::id());
    assert!(text.starts_with(&head), "{text}");
    assert!(text.contains(" (since 20") && text.contains("Z)\nresident memory "), "{text}");
    assert!(text.contains(" MiB\nconnections 1 past HELLO, 1 open\nsessions 1\nonline users 1\nwatches 0\n"), "{text}");
    assert!(text.ends_with("\nposts 0 since start\nstore up\n"), "{text}");

    let json = stdout(&info(&daemon, None, &["--json", "--admin-token", "s3cret"]).await);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (&json["version"], &json["sessions"], &json["store_up"]),
        (&env!("CARGO_PKG_VERSION").into(), &1.into(), &true.into())
    );
    assert!(json["uptime_s"].is_u64() && json["rss_bytes"].as_u64().unwrap() > 0, "{json}");

    let refused = info(&daemon, None, &[]).await;
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    let expected =
        format!("error: cannot read http://{}/v1/info: 401: the admin API needs its token", daemon.running.admin);
    assert!(message.starts_with(&expected), "one line, each cause once: {message}");
}
