//! The HTTP admin listener (hyper, HTTP/1.1): `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for probes, a small JSON API for web backends
//! that don't speak the binary protocol, and a live dashboard at `/`.
//!
//! Owns the admin socket, routing and the bearer-token check. It must not
//! change presence state: every route reads, through a [`Backend`] the
//! server hands it — a snapshot of gauges, the metrics and lookups — never
//! the server's internals (this module does not import `crate::server`).
//! Series are defined in `crate::metrics`, rendered in [`prometheus`]; JSON
//! routes are in [`api`]; the dashboard's embedded files in [`dashboard`];
//! the process's own figures (`/proc/self`) in [`process`].
//! The dashboard's files load without the token (they hold no data); what
//! they fetch does not.

pub mod api;
pub mod dashboard;
pub mod process;
pub mod prometheus;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use heartline_proto::{PresenceEntry, Stats};

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
    let state = Arc::new(State { backend, draining, bearer });
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
        _ if !authorized(state, &req) => {
            let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
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
        (&Method::POST, "/v1/presence/query") => api::query(state.backend.clone(), req.into_body()).await,
        (&Method::GET, p) if p.starts_with("/v1/presence/") && p != "/v1/presence/query" => {
            api::presence(state.backend.clone(), &p["/v1/presence/".len()..]).await
        }
        (&Method::GET, p) if p.starts_with("/v1/graph/") => api::graph(&*state.backend, &p["/v1/graph/".len()..]),
        (_, "/v1/presence/query") => method_not_allowed("POST"),
        (_, "/metrics" | "/v1/stats" | "/v1/info") => method_not_allowed("GET"),
        (_, p) if p.starts_with("/v1/presence/") || p.starts_with("/v1/graph/") => method_not_allowed("GET"),
        _ => api::not_found(),
    }
}

/// 405, with the methods the route does take in `Allow` (RFC 9110 §15.5.6).
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
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
    let mut response = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
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
