//! `ctl`'s side of the daemon's admin listener: one HTTP GET with the
//! bearer token, its JSON body read into the admin API's own types
//! ([`crate::admin::api`]), so both ends share one definition.
//!
//! Owns the HTTP exchange (hyper's HTTP/1.1 client, one TCP connection per
//! request) and how its failures read. It must not speak the binary
//! protocol, nor shape or show what it reads: that is `ctl`'s.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

/// For the whole exchange: connect, request, the body.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to the admin listener failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("the request cannot be made (is the token plain text?)")]
    Request(#[from] hyper::http::Error),
    #[error("HTTP failed")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("401: the admin API needs its token (admin.token): pass --admin-token or set HEARTLINE_ADMIN_TOKEN")]
    Unauthorized,
    #[error("{status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("the answer is not the JSON expected")]
    Json(#[from] serde_json::Error),
}

/// `GET path` from the admin listener at `addr` (`host:port`), with `token`
/// as a bearer token if given; the JSON body read as `T`.
pub(super) async fn get<T: DeserializeOwned>(addr: &str, path: &str, token: Option<&str>) -> Result<T, AdminError> {
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange(addr, path, token))
        .await
        .map_err(|_| AdminError::Timeout(TIMEOUT))??;
    match status {
        StatusCode::OK => Ok(serde_json::from_slice(&body)?),
        StatusCode::UNAUTHORIZED => Err(AdminError::Unauthorized),
        status => Err(AdminError::Status { status, message: error_message(&body) }),
    }
}

async fn exchange(addr: &str, path: &str, token: Option<&str>) -> Result<(StatusCode, Bytes), AdminError> {
    let stream = TcpStream::connect(addr).await.map_err(AdminError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection is driven beside the request; it ends with `sender`.
    let driver = tokio::spawn(connection);
    let mut request = Request::get(path).header(HOST, addr);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new())?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, body))
}

/// The `error` of the API's JSON errors (`{"error":"…"}`), else the body as
/// text.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ApiError {
        error: String,
    }
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_from_json_or_text() {
        assert_eq!(error_message(br#"{"error":"not found"}"#), "not found");
        assert_eq!(error_message(b"method not allowed\n"), "method not allowed");
    }
}
