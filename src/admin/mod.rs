//! The HTTP admin listener (hyper, HTTP/1.1): `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for probes, a JSON API for application backends
//! that don't speak the binary protocol — reads ([`api`]) and writes on a
//! user's behalf ([`write`]), described by `/v1/openapi.json` ([`openapi`])
//! — and a live dashboard at `/`.
//!
//! Owns the admin socket, routing, the bearer-token check and idempotency
//! keys ([`idempotency`]). It must not reach into the server: every route
//! goes through a [`Backend`] the server hands it — a snapshot of gauges,
//! the metrics, lookups, and the few writes the API offers — never the
//! server's internals (this module does not import `crate::server`).
//! Series are defined in `crate::metrics`, rendered in [`prometheus`]; the
//! dashboard's embedded files are in [`dashboard`]; the process's own
//! figures (`/proc/self`) in [`process`]. The dashboard's files and the
//! OpenAPI document load without the token (they hold no data); everything
//! else needs it.

pub mod api;
pub mod dashboard;
pub mod idempotency;
pub mod openapi;
pub mod process;
pub mod prometheus;
pub mod write;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use heartline_proto::auth::Claims;
use heartline_proto::{ErrorCode, Message, PresenceEntry, Stats, Status, Text};

use idempotency::{Answer, Begin, Replays};

use crate::metrics::Metrics;

/// A slow or idle client gets this long to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub type Body = Full<Bytes>;

/// What the admin listener may read of the running server.
pub trait Backend: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    /// The gauges, read now: cheap enough to poll every second.
    fn gauges(&self) -> Gauges;
    /// The outbound queues, read now: this visits every connection, so it is
    /// for scrapes (every 10 s or slower), not for polling.
    fn queues(&self) -> Queues;
    /// Each transport's connections and heartbeats, read now (cheap).
    fn transports(&self) -> Vec<Transport>;
    /// Users' presence as an unrelated viewer sees it. May read the store:
    /// call it off the runtime.
    fn presence(&self, users: &[u64]) -> Vec<PresenceEntry>;
    /// How many follow the user, and how many they follow.
    fn graph_counts(&self, user: u64) -> (usize, usize);

    /// Sets the user's server-side session (opening or renewing it): its
    /// id, or the spec's code and why not.
    fn set_presence(&self, user: u64, status: Status, text: Text) -> Result<u64, (ErrorCode, &'static str)>;
    /// Ends the user's server-side session; `false` when there was none.
    fn clear_presence(&self, user: u64) -> bool;
    /// Ends every session of the user and closes their client connections.
    fn disconnect(&self, user: u64) -> write::Disconnected;
    /// Answers a PUBLISH, DELETE, GRAPH or TIMELINE of the user as the
    /// protocol does (once durable, for writes).
    fn feed(&self, user: u64, request: Message) -> Pin<Box<dyn Future<Output = Message> + Send>>;
    /// A token for `claims`, signed with the current secret.
    fn issue(&self, claims: &Claims) -> Vec<u8>;
    /// The session TTL, in milliseconds.
    fn ttl_ms(&self) -> u32;
    /// This node's view of its cluster; `None` for a node alone (no
    /// `[cluster]` section). Cheap: the latest map, shared.
    fn cluster(&self) -> Option<crate::cluster::Status>;
    /// In a cluster, the feed stream's positions as this node knows them;
    /// `None` for a node alone.
    fn feed_stream(&self) -> Option<crate::cluster::feed::Positions> {
        None
    }
}

/// Gauges of the running server, read at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// The totals STATS reports.
    pub stats: Stats,
    /// Stream connections open (every transport), HELLO done or not.
    pub connections_open: u64,
    pub store_up: bool,
    pub fanout_depth: u64,
    pub fanout_capacity: u64,
}

/// The outbound queues of every connection, read at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Queues {
    /// Frames and entries waiting to be written, in all and on the deepest connection.
    pub outbound_depth: u64,
    pub outbound_depth_max: u64,
    /// Connections past HELLO whose outbox is closed and still being written.
    pub connections_closing: u64,
}

/// One way peers reach the server, as the dashboard lists it. The set is
/// the server's to define (a new transport is one more entry); readers
/// must not assume a fixed list.
#[derive(Clone, Debug, Serialize)]
pub struct Transport {
    /// A short, stable name: `tcp`, `udp`, `gateway`, …
    pub name: &'static str,
    /// Connections past HELLO on it; `None` for a connectionless transport.
    pub connections: Option<u64>,
    /// Heartbeats applied through it, since start.
    pub heartbeats: u64,
}

/// What every request handler sees.
struct State {
    backend: Arc<dyn Backend>,
    /// Cancelled when the server starts draining: `/readyz` turns 503.
    draining: CancellationToken,
    /// `Authorization` header value every route but the probes needs.
    bearer: Option<Vec<u8>>,
    replays: Arc<Replays>,
}

/// Serves the admin API on `listener` until `stop`; `/readyz` fails once
/// `draining` is cancelled; every route but the probes needs `token` when set.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    token: Option<String>,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    let bearer = token.map(|t| format!("Bearer {t}").into_bytes());
    let state = Arc::new(State { backend, draining, bearer, replays: Arc::default() });
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = conn => if let Err(e) = served { tracing::debug!(error = %e, "admin connection failed") },
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(asset) = dashboard::asset_at(path) {
        return dashboard::serve(asset, &req);
    }
    // HEAD answers as GET does, and hyper leaves the body out.
    let probe = req.method() == Method::GET || req.method() == Method::HEAD;
    match (req.method(), path) {
        (_, "/healthz") if probe => text(StatusCode::OK, "ok\n"),
        (_, "/readyz") if probe && state.draining.is_cancelled() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        (_, "/readyz") if probe => text(StatusCode::OK, "ready\n"),
        (_, "/healthz" | "/readyz") => method_not_allowed("GET, HEAD"),
        (&Method::GET, "/v1/openapi.json") => openapi::serve(),
        (_, "/v1/openapi.json") => method_not_allowed("GET"),
        _ if !authorized(state, &req) => {
            let mut response = write::refuse(ErrorCode::Unauthenticated, "a bearer token is required");
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Body::from(prometheus::render(&*state.backend)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(prometheus::CONTENT_TYPE));
            response
        }
        (&Method::GET, "/v1/stats") => api::stats(&*state.backend),
        (&Method::GET, "/v1/info") => api::info(&*state.backend),
        (&Method::GET, "/v1/cluster") => api::cluster(&*state.backend),
        (&Method::POST, "/v1/presence/query") => api::query(state.backend.clone(), req.into_body()).await,
        (&Method::GET, p) if p.starts_with("/v1/presence/") && p != "/v1/presence/query" => {
            api::presence(state.backend.clone(), &p["/v1/presence/".len()..]).await
        }
        (&Method::GET, p) if p.starts_with("/v1/graph/") => api::graph(&*state.backend, &p["/v1/graph/".len()..]),
        (_, "/v1/presence/query") => method_not_allowed("POST"),
        (_, "/metrics" | "/v1/stats" | "/v1/info" | "/v1/cluster") => method_not_allowed("GET"),
        (_, p) if p.starts_with("/v1/presence/") || p.starts_with("/v1/graph/") => method_not_allowed("GET"),
        (_, p) if p.starts_with("/v1/users/") || p == "/v1/tokens" => writes(state, req).await,
        _ => api::not_found(),
    }
}

/// The write API's routes (and its timeline read), behind idempotency keys.
async fn writes(state: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, write::MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return write::refuse(ErrorCode::PayloadTooLarge, "the body is over 256 KiB"),
    };
    let (method, path, query) = (&parts.method, parts.uri.path(), parts.uri.query());
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let run = write::route(&*state.backend, method, path, query, &body, now_s);
    let key = parts.headers.get(IDEMPOTENCY_KEY).map(HeaderValue::as_bytes);
    let Some(key) = key.filter(|_| method != Method::GET && method != Method::HEAD) else {
        return run.await.unwrap_or_else(api::not_found);
    };
    if !idempotency::valid_key(key) {
        return write::refuse(ErrorCode::Malformed, "Idempotency-Key must be 1 to 255 visible ASCII characters");
    }
    let fingerprint = idempotency::fingerprint(method.as_str(), path, query, &body);
    let pending = match state.replays.begin(key, fingerprint, Instant::now()) {
        Begin::Run(pending) => pending,
        Begin::Replay(answer) => {
            let mut response = json_bytes(answer.status, answer.body);
            response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            return response;
        }
        Begin::Mismatch => {
            let message = "this Idempotency-Key was used for another request";
            return write::http_error(StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED", message);
        }
        Begin::InFlight => {
            let message = "the first request with this Idempotency-Key is still running";
            return write::http_error(StatusCode::CONFLICT, "IDEMPOTENCY_KEY_IN_FLIGHT", message);
        }
    };
    let response = run.await.unwrap_or_else(api::not_found);
    let (head, body) = response.into_parts();
    let Ok(collected) = body.collect().await;
    let answer = Answer { status: head.status, body: collected.to_bytes() };
    pending.finish(&answer);
    Response::from_parts(head, Body::from(answer.body))
}

/// The header naming a write's idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on an answer given again for a repeated key.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// 405, with the methods the route does take in `Allow` (RFC 9110 §15.5.6).
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let message = format!("this route takes {allow}");
    let mut response = write::http_error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", message);
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// Whether the request may see more than the probes: always without a
/// configured token (config refuses that beyond loopback), else with it.
fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(expected) = &state.bearer else { return true };
    let given = req.headers().get(AUTHORIZATION).map_or(&b""[..], HeaderValue::as_bytes);
    constant_time_eq(given, expected)
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed token was right (the length may show).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    // Serializing plain structs of numbers and strings cannot fail.
    json_bytes(status, serde_json::to_vec(value).unwrap_or_default().into())
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
