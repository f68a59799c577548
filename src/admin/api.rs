//! The JSON API for web backends: one user's presence, many users'
//! presence, and the server's totals — what QUERY and STATS give protocol
//! clients — and a user's follower and following counts.
//!
//! Owns request parsing and the JSON shapes. It must not apply privacy
//! itself: entries come from `Shared::entry` as an unrelated viewer
//! ([`Viewer::Anyone`]) sees them, through the one policy point.
//!
//! User ids are JSON numbers (u64): JavaScript clients must parse them as
//! BigInt above 2^53.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::{json, text, Body};
use crate::server::{now_ms, Shared};
use heartline_core::presence::Viewer;
use heartline_proto::{PresenceEntry, Stats};

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
pub async fn presence(shared: Arc<Shared>, user: &str) -> Response<Body> {
    let Ok(user) = user.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "the user id must be an unsigned 64-bit integer");
    };
    match lookup(shared, vec![user]).await {
        Some(mut entries) => json(StatusCode::OK, &entries.remove(0)),
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "lookup failed\n"),
    }
}

/// `POST /v1/presence/query` with a JSON array of up to [`MAX_QUERY`] ids:
/// an array of entries in the same order.
pub async fn query(shared: Arc<Shared>, body: Incoming) -> Response<Body> {
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
    match lookup(shared, users).await {
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
pub fn graph(shared: &Shared, user: &str) -> Response<Body> {
    let Ok(user) = user.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "the user id must be an unsigned 64-bit integer");
    };
    let graph = &shared.feed.graph;
    json(
        StatusCode::OK,
        &GraphCounts { user, followers: graph.follower_count(user), following: graph.following_count(user) },
    )
}

/// `GET /v1/stats`: the same totals as STATS_REPLY.
pub fn stats(shared: &Shared) -> Response<Body> {
    let totals = shared.presence.totals();
    json(
        StatusCode::OK,
        &Stats {
            online_users: totals.online_users,
            sessions: totals.sessions,
            watches: totals.watches,
            connections: shared.conns.len() as u64,
        },
    )
}

/// Entries for `users`; offline users are read from the store, so off the runtime.
async fn lookup(shared: Arc<Shared>, users: Vec<u64>) -> Option<Vec<PresenceEntry>> {
    tokio::task::spawn_blocking(move || {
        let now = now_ms();
        users.into_iter().map(|user| shared.entry(Viewer::Anyone, user, now)).collect()
    })
    .await
    .ok()
}
