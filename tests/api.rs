//! The write API on the admin listener (docs/api.md) against a real daemon:
//! a Python backend using only third-party libraries drives it end to end
//! while a protocol watcher sees the effects, and every answer is checked
//! against `/v1/openapi.json` (tests/python/write_api.py); the Rust SDK
//! treats DISCONNECTED as final; the routes' edges answer with the spec's
//! codes.

mod common;

use heartline_client::{Client, ClientConfig, ClientError, State};
use heartline_proto::{ErrorCode, Status};
use serde_json::Value;

use common::{http, http_with, Daemon, PATIENCE};

const TOKEN: &str = "admin-token-for-tests";

async fn daemon() -> Daemon {
    Daemon::start_with(|c| c.admin.token = Some(TOKEN.into())).await
}

async fn call(daemon: &Daemon, method: &str, path: &str, body: &str) -> (u16, Value) {
    let response = http(daemon.running.admin, method, path, Some(TOKEN), body).await;
    let json = serde_json::from_str(&response.body).unwrap_or_else(|_| panic!("not JSON: {}", response.body));
    (response.status, json)
}

#[tokio::test]
async fn a_python_backend_drives_the_write_api_and_a_watcher_sees_it() {
    if !common::available("python3", &["-c", "import jwt, requests, jsonschema"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs256");
    std::fs::write(&secret, "an HS256 secret the backend and the daemon share\n").unwrap();
    let daemon = Daemon::start_with(|c| {
        c.admin.token = Some(TOKEN.into());
        c.jwt.hs256_secret_file = Some(secret.clone());
    })
    .await;
    let (admin, tcp) = (daemon.running.admin, daemon.running.tcp);
    let args = [format!("http://{admin}"), TOKEN.into(), tcp.ip().to_string(), tcp.port().to_string()];
    let text = common::python("write_api.py", args.iter().map(String::as_str).chain([secret.to_str().unwrap()])).await;
    assert!(text.contains("write API end to end: OK"), "{text}");
}

#[tokio::test]
async fn a_disconnected_sdk_client_stops_instead_of_reconnecting() {
    let daemon = daemon().await;
    let config = ClientConfig::new(daemon.running.tcp.to_string(), daemon.user_token(5));
    let client = Client::connect(config).await.unwrap();
    client.set_status(Status::Busy, "").await.unwrap();
    let (status, gone) = call(&daemon, "POST", "/v1/users/5/disconnect", "").await;
    assert_eq!((status, &gone["sessions"], &gone["connections"]), (200, &Value::from(1), &Value::from(1)), "{gone}");
    let mut state = client.state();
    let end = tokio::time::timeout(PATIENCE, state.wait_for(|s| matches!(s, State::Closed(_)))).await;
    let end = end.expect("still not closed").unwrap().clone();
    match end {
        State::Closed(Some(error)) => {
            assert!(matches!(*error, ClientError::Server { code: ErrorCode::Disconnected, .. }), "{error:?}")
        }
        other => panic!("{other:?}"),
    }
    let (_, entry) = call(&daemon, "GET", "/v1/presence/5", "").await;
    assert_eq!(entry["status"], "offline", "no grace window: {entry}");
}

#[tokio::test]
async fn a_server_side_session_expires_unless_renewed() {
    let daemon = daemon().await;
    let ttl = daemon.config.presence.ttl;
    let set = r#"{"status":"away","text":"on a call"}"#;
    let (status, first) = call(&daemon, "PUT", "/v1/users/9/presence", set).await;
    assert_eq!(status, 200, "{first}");
    tokio::time::sleep(ttl / 2).await;
    let (_, renewed) = call(&daemon, "PUT", "/v1/users/9/presence", set).await;
    assert_eq!(renewed["session"], first["session"], "the same session, renewed");
    tokio::time::sleep(ttl * 3 / 4).await;
    let (_, entry) = call(&daemon, "GET", "/v1/presence/9", "").await;
    assert_eq!((entry["status"].as_str(), entry["text"].as_str()), (Some("away"), Some("on a call")));
    tokio::time::sleep(ttl).await;
    let (_, entry) = call(&daemon, "GET", "/v1/presence/9", "").await;
    assert_eq!(entry["status"], "offline", "expired without a renewal: {entry}");
    let (_, cleared) = call(&daemon, "DELETE", "/v1/users/9/presence", "").await;
    assert_eq!(cleared["cleared"], false, "nothing left to clear");
}

#[tokio::test]
async fn bad_requests_get_the_spec_codes() {
    let daemon = daemon().await;
    for (method, path, body, status, code) in [
        ("PUT", "/v1/users/x/presence", r#"{"status":"busy"}"#, 400, "MALFORMED"),
        ("PUT", "/v1/users/1/presence", r#"{"status":"busy","text":"#, 400, "MALFORMED"),
        (
            "PUT",
            "/v1/users/1/presence",
            &format!(r#"{{"status":"busy","text":"{}"}}"#, "x".repeat(129)),
            422,
            "LIMIT_EXCEEDED",
        ),
        ("POST", "/v1/users/1/posts", r#"{"payload":"a","payload_hex":"61"}"#, 400, "MALFORMED"),
        ("POST", "/v1/users/1/posts", &format!(r#"{{"payload":"{}"}}"#, "x".repeat(4_097)), 413, "PAYLOAD_TOO_LARGE"),
        ("DELETE", "/v1/users/1/posts/12345", "", 404, "NOT_FOUND"),
        ("GET", "/v1/users/1/timeline?limit=101", "", 422, "LIMIT_EXCEEDED"),
        ("GET", "/v1/users/1/timeline?since_id=1&min_id=2", "", 400, "MALFORMED"),
        ("POST", "/v1/tokens", r#"{"user":"1","gateway":"g"}"#, 400, "MALFORMED"),
        ("POST", "/v1/tokens", r#"{"user":"1","ttl_s":0}"#, 400, "MALFORMED"),
        ("GET", "/v1/users/1/presence", "", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/users/1/nothing", "", 404, "NOT_FOUND"),
    ] {
        let (got, error) = call(&daemon, method, path, body).await;
        assert_eq!((got, error["code"].as_str()), (status, Some(code)), "{method} {path}: {error}");
        assert!(error["message"].is_string(), "{error}");
    }
    let unauthenticated = http(daemon.running.admin, "GET", "/v1/users/1/timeline", None, "").await;
    assert_eq!(unauthenticated.status, 401);
    let openapi = http(daemon.running.admin, "GET", "/v1/openapi.json", None, "").await;
    assert_eq!(openapi.status, 200, "the document needs no token");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let daemon = daemon().await;
    let auth = format!("Bearer {TOKEN}");
    let post = |key: &'static str, body: &'static str| {
        let headers = [("Authorization", auth.as_str()), ("Idempotency-Key", key)];
        let admin = daemon.running.admin;
        async move { http_with(admin, "POST", "/v1/users/3/posts", &headers, body).await }
    };
    let first = post("k-1", r#"{"payload":"once"}"#).await;
    let again = post("k-1", r#"{"payload":"once"}"#).await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(first.body, again.body, "the same post");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(post("k-1", r#"{"payload":"twice"}"#).await.status, 422);
    assert_eq!(post("k-2", r#"{"payload":"once"}"#).await.status, 201, "another key, another post");
    assert_eq!(post("bad key", r#"{"payload":"once"}"#).await.status, 400);
    let (_, page) = call(&daemon, "GET", "/v1/users/3/timeline?author=3", "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
}
