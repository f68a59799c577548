//! The admin listener's dashboard against the real daemon: the page and its
//! files (types, Content-Security-Policy, caching), the `/v1/stats` snapshot
//! the page polls, moving as clients connect, heartbeat and post, and the
//! admin token guarding the data but not the page.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use heartline_proto::*;
use serde_json::Value;

/// Every file the page loads, with its content type.
const FILES: [(&str, &str); 4] = [
    ("/", "text/html; charset=utf-8"),
    ("/dashboard.js", "text/javascript; charset=utf-8"),
    ("/dashboard.css", "text/css; charset=utf-8"),
    ("/favicon.svg", "image/svg+xml"),
];

async fn stats(daemon: &Daemon) -> Value {
    let response = http(daemon.running.admin, "GET", "/v1/stats", None, "").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_str(&response.body).unwrap()
}

fn transport<'a>(stats: &'a Value, name: &str) -> &'a Value {
    let transports = stats["transports"].as_array().unwrap_or_else(|| panic!("no transports: {stats}"));
    transports.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no {name} transport: {stats}"))
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("counts are JSON numbers, not {value}"))
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let daemon = Daemon::start().await;
    let admin = daemon.running.admin;
    for (path, content_type) in FILES {
        let response = http(admin, "GET", path, None, "").await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.header("content-type"), Some(content_type), "{path}");
        let csp = response.header("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert_eq!(response.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert!(!response.body.is_empty(), "{path}");

        // A copy still current is not sent again.
        let etag = response.header("etag").unwrap_or_else(|| panic!("{path}: no ETag")).to_owned();
        let revalidated = http_with(admin, "GET", path, &[("If-None-Match", &etag)], "").await;
        assert_eq!(revalidated.status, 304, "{path}");
        assert!(revalidated.body.is_empty(), "{path}");
    }
    let page = http(admin, "GET", "/", None, "").await.body;
    for id in
        ["sessions-online", "users-online", "heartbeats-per-second", "store-state", "transports", "presence-input"]
    {
        assert!(page.contains(&format!("data-testid=\"{id}\"")), "the page has {id}");
    }
    assert_eq!(http(admin, "POST", "/", None, "").await.status, 405);
    assert_eq!(http(admin, "GET", "/dashboard.map", None, "").await.status, 404);
}

#[tokio::test]
async fn stats_move_as_clients_connect_heartbeat_and_post() {
    let daemon = Daemon::start().await;
    let before = stats(&daemon).await;
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(count(&before["sessions"]), 0);
    assert_eq!(count(&before["connections"]), 0);
    assert_eq!(before["store"]["up"], true);
    assert_eq!(transport(&before, "udp")["connections"], Value::Null, "UDP has no connections");

    let mut user = daemon.user(42).await;
    let _gateway = daemon.gateway("edge", false).await;
    user.heartbeat_for(Duration::from_millis(500)).await;
    let posted = user.request(|req| Message::Publish { req, kind: 1, payload: Bytes::from_static(b"hi") }).await;
    assert!(matches!(posted, Message::Published { .. }), "{posted:?}");

    let after = stats(&daemon).await;
    assert_eq!(count(&after["sessions"]), 1, "{after}");
    assert_eq!(count(&after["online_users"]), 1);
    assert_eq!(count(&after["connections"]), 2);
    assert!(count(&after["connections_open"]) >= 2);
    assert!(count(&after["connections_accepted"]) >= 2);
    // Both are on plain TCP; one of them is a gateway.
    assert_eq!(count(&transport(&after, "tcp")["connections"]), 2, "{after}");
    assert_eq!(count(&transport(&after, "ws")["connections"]), 0, "{after}");
    assert_eq!(count(&transport(&after, "gateway")["connections"]), 1, "{after}");
    let tcp_heartbeats = count(&transport(&after, "tcp")["heartbeats"]);
    assert!(tcp_heartbeats >= 2, "{after}");
    assert!(count(&after["heartbeats"]) >= tcp_heartbeats);
    assert_eq!(count(&after["posts"]), count(&before["posts"]) + 1);
    assert!(count(&after["now_ms"]) >= count(&before["now_ms"]));
    assert!(count(&after["fanout"]["queue_capacity"]) > 0);
    assert!(count(&after["store"]["commit"]["count"]) >= count(&before["store"]["commit"]["count"]));
    let lag = &after["fanout"]["lag"];
    assert_eq!(lag["buckets"].as_array().unwrap().len(), lag["bounds_us"].as_array().unwrap().len() + 1);

    // The user the page looks up: ids as strings, read exactly whatever their size.
    let entry: Value =
        serde_json::from_str(&http(daemon.running.admin, "GET", "/v1/presence/42", None, "").await.body).unwrap();
    assert_eq!((&entry["user"], &entry["status"]), (&Value::from("42"), &Value::from("online")), "{entry}");
    assert!(entry["version"].is_string(), "{entry}");
    let big = http(daemon.running.admin, "GET", "/v1/presence/18446744073709551615", None, "").await.body;
    assert!(big.contains(r#""user":"18446744073709551615""#), "{big}");

    drop(user);
    let until = tokio::time::Instant::now() + PATIENCE;
    while count(&stats(&daemon).await["connections"]) != 1 {
        assert!(tokio::time::Instant::now() < until, "the closed connection is still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&transport(&stats(&daemon).await, "tcp")["connections"]), 1, "the gateway is left");
}

#[tokio::test]
async fn the_admin_token_guards_the_data_but_not_the_page() {
    let daemon = Daemon::start_with(|c| c.admin.token = Some("s3cret".into())).await;
    let admin = daemon.running.admin;
    for (path, _) in FILES {
        assert_eq!(http(admin, "GET", path, None, "").await.status, 200, "{path} loads without the token");
    }
    for path in ["/v1/stats", "/v1/presence/42", "/v1/graph/42", "/metrics"] {
        let refused = http(admin, "GET", path, None, "").await;
        assert_eq!(refused.status, 401, "{path}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
        assert_eq!(http(admin, "GET", path, Some("wrong"), "").await.status, 401, "{path}");
        assert_eq!(http(admin, "GET", path, Some("s3cret"), "").await.status, 200, "{path}");
    }
    assert_eq!(http(admin, "POST", "/v1/presence/query", None, r#"["42"]"#).await.status, 401);
    assert_eq!(http(admin, "POST", "/v1/presence/query", Some("s3cret"), r#"["42"]"#).await.status, 200);
}
