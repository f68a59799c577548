//! The HTTP admin listener (hyper, HTTP/1.1): `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for probes, and a small JSON API for web
//! backends that don't speak the binary protocol.
//!
//! Owns the admin socket, routing and the bearer-token check. It must not
//! change presence state: every route reads. Series are defined in
//! `crate::server::metrics`, rendered in [`prometheus`]; JSON routes are in
//! [`api`].

pub mod api;
pub mod prometheus;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;

/// A slow or idle client gets this long to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub type Body = Full<Bytes>;

/// What every request handler sees.
struct State {
    shared: Arc<Shared>,
    /// Cancelled when the server starts draining: `/readyz` turns 503.
    draining: CancellationToken,
    /// `Authorization` header value every route but the probes needs.
    bearer: Option<Vec<u8>>,
}

/// Serves the admin API on `listener` until `shared.stop`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, draining: CancellationToken) {
    let bearer = shared.config.admin.token.as_ref().map(|t| format!("Bearer {t}").into_bytes());
    let stop = shared.stop.clone();
    let state = Arc::new(State { shared, draining, bearer });
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
    match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if state.draining.is_cancelled() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n"),
        _ if !authorized(state, &req) => {
            let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Body::from(prometheus::render(&state.shared)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(prometheus::CONTENT_TYPE));
            response
        }
        (&Method::GET, "/v1/stats") => api::stats(&state.shared),
        (&Method::POST, "/v1/presence/query") => api::query(state.shared.clone(), req.into_body()).await,
        (&Method::GET, p) if p.starts_with("/v1/presence/") => {
            api::presence(state.shared.clone(), &p["/v1/presence/".len()..]).await
        }
        (&Method::GET, p) if p.starts_with("/v1/graph/") => api::graph(&state.shared, &p["/v1/graph/".len()..]),
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/stats" | "/v1/presence/query") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
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
