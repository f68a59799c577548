//! The JSON API for web backends: one user's presence, many users'
//! presence, and the server's totals — what QUERY and STATS give protocol
//! clients — and a user's follower and following counts.
//!
//! Owns request parsing and the JSON shapes. It must not apply privacy
//! itself: entries come from [`Backend::presence`] as an unrelated viewer
//! sees them, through the one policy point.
//!
//! User ids are JSON numbers (u64): JavaScript clients must parse them as
//! BigInt above 2^53.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::{json, text, Backend, Body};
use heartline_proto::PresenceEntry;

/// Most ids one query may name, as one QUERY frame (SPEC.md limits).
pub const MAX_QUERY: usize = 1_000;
/// Largest query body: 1,000 twenty-digit ids with separators and spaces.
const MAX_BODY: usize = 64 * 1024;

#[derive(Serialize)]
struct Error {
    error: &'static str,
}

fn error(status: StatusCode, message: &'static str) -> Response<Body> {
    json(status, &Error { error: message })
}

/// `GET /v1/presence/{user}`: one entry.
pub async fn presence(backend: Arc<dyn Backend>, user: &str) -> Response<Body> {
    let Ok(user) = user.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "the user id must be an unsigned 64-bit integer");
    };
    match lookup(backend, vec![user]).await {
        Some(mut entries) => json(StatusCode::OK, &entries.remove(0)),
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "lookup failed\n"),
    }
}

/// `POST /v1/presence/query` with a JSON array of up to [`MAX_QUERY`] ids:
/// an array of entries in the same order.
pub async fn query(backend: Arc<dyn Backend>, body: Incoming) -> Response<Body> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 64 KiB"),
    };
    let Ok(users) = serde_json::from_slice::<Vec<u64>>(&bytes) else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON array of user ids");
    };
    if users.len() > MAX_QUERY {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "at most 1000 ids per query");
    }
    match lookup(backend, users).await {
        Some(entries) => json(StatusCode::OK, &entries),
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "lookup failed\n"),
    }
}

#[derive(Serialize)]
struct GraphCounts {
    user: u64,
    followers: usize,
    following: usize,
}

/// `GET /v1/graph/{user}`: how many follow the user, and how many they follow.
pub fn graph(backend: &dyn Backend, user: &str) -> Response<Body> {
    let Ok(user) = user.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "the user id must be an unsigned 64-bit integer");
    };
    let (followers, following) = backend.graph_counts(user);
    json(StatusCode::OK, &GraphCounts { user, followers, following })
}

/// `GET /v1/stats`: the same totals as STATS_REPLY.
pub fn stats(backend: &dyn Backend) -> Response<Body> {
    json(StatusCode::OK, &backend.gauges().stats)
}

/// Entries for `users`; offline users are read from the store, so off the runtime.
async fn lookup(backend: Arc<dyn Backend>, users: Vec<u64>) -> Option<Vec<PresenceEntry>> {
    tokio::task::spawn_blocking(move || backend.presence(&users)).await.ok()
}
