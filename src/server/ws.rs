//! The WebSocket shell (RFC 6455, SPEC.md §13): the HTTP upgrade on
//! `/v1/ws` (hyper), the origin allow-list, and the mapping between
//! WebSocket messages and protocol frames, under the generic
//! [`stream`](super::stream) shell and the same [`Driver`] as TCP.
//!
//! Owns the upgrade (other paths: 404; a refused origin: 403, before any
//! upgrade), the message rules — one binary message carries exactly one
//! whole frame, byte-identical to the TCP frame; anything else is the
//! framing error TCP would give — and the close codes. It decides nothing
//! about the protocol itself: the machine does, as for any transport. Ping
//! and pong are tungstenite's (a ping is answered on the next read).

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use heartline_proto::{encode_frame, ErrorCode, FrameCodec, Message};
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CONNECTION, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::driver::Driver;
use super::stream::{admit, frame_error, serve, Inbound, Wire, LINGER};
use super::tcp::Handles;
use crate::metrics::{CloseReason, Transport};

/// The one path that upgrades.
pub(crate) const PATH: &str = "/v1/ws";
/// tungstenite's read buffer, allocated per connection at the upgrade and
/// kept for the connection's life (its default, 128 KiB, would make every
/// idle browser cost that much). Small: a heartbeat message is 9 bytes,
/// and a larger frame makes the buffer reserve its whole length anyway.
const READ_BUFFER: usize = 256;
/// Room for the length prefix of a frame of `max_frame` bytes.
const MAX_LENGTH_PREFIX: usize = 3;

/// What every WebSocket connection of one listener shares.
pub(crate) struct Listener {
    pub(crate) handles: Handles,
    pub(crate) origins: Origins,
    /// `Some`: `wss://`.
    pub(crate) tls: Option<TlsAcceptor>,
}

/// An accepted connection: admitted (a refused one is closed at once,
/// before any TLS or HTTP), then TLS if `wss`, the upgrade, and the shell.
/// The TLS handshake and the upgrade together must fit in the handshake
/// timeout; the machine's own HELLO deadline starts after them.
pub(crate) fn accept(stream: TcpStream, peer: SocketAddr, listener: &Arc<Listener>) {
    let transport = if listener.tls.is_some() { Transport::Wss } else { Transport::Ws };
    let Ok(slot) = admit(peer, &listener.handles, transport) else { return };
    let listener = listener.clone();
    tokio::spawn(async move {
        let timeout = listener.handles.node.limits.handshake_timeout();
        // The handshakes boxed: inline, HTTP's and TLS's state would size
        // this task for the connection's whole life.
        let upgraded = match &listener.tls {
            Some(acceptor) => {
                let handshake = async {
                    let tls = acceptor.accept(stream).await.ok()?;
                    upgrade(tls, &listener).await
                };
                Box::pin(tokio::time::timeout(timeout, handshake)).await.ok().flatten()
            }
            None => Box::pin(tokio::time::timeout(timeout, upgrade(stream, &listener))).await.ok().flatten(),
        };
        if let Some(on_upgrade) = upgraded {
            if let Ok(upgraded) = on_upgrade.await {
                let handles = &listener.handles;
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config(handles.node.limits.max_frame())),
                )
                .await;
                let mut wire = Ws { ws, codec: FrameCodec::new(handles.node.limits.max_frame()) };
                serve(&mut wire, Driver::new(handles.node.clone(), handles.feed.clone(), transport)).await;
            }
        }
        drop(slot);
    });
}

/// Limits on what tungstenite reads: a message may hold one frame of
/// `max_frame` bytes and its prefix, so anything larger is refused before
/// it is buffered whole.
fn config(max_frame: usize) -> WebSocketConfig {
    let max_message = max_frame + MAX_LENGTH_PREFIX;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Serves HTTP/1.1 on `io` until a request upgrades (its upgrade is
/// returned) or is refused (`None`, and the connection closes).
async fn upgrade<S>(io: S, listener: &Listener) -> Option<OnUpgrade>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgrading = Mutex::new(None);
    let service = service_fn(|mut req: Request<hyper::body::Incoming>| {
        let response = match check(&req, &listener.origins) {
            Ok(accept) => {
                *upgrading.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(hyper::upgrade::on(&mut req));
                switching(accept)
            }
            Err((status, why)) => refusal(status, why),
        };
        async move { Ok::<_, Infallible>(response) }
    });
    // One request per connection: it upgrades, or it is refused with
    // `Connection: close` (not `keep_alive(false)`, which would also
    // overwrite the 101's `Connection: Upgrade`).
    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service).with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "websocket upgrade failed");
    }
    upgrading.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `req` may upgrade; `Ok` holds the `Sec-WebSocket-Accept` value.
fn check<B>(req: &Request<B>, origins: &Origins) -> Result<String, (StatusCode, &'static str)> {
    if req.uri().path() != PATH {
        return Err((StatusCode::NOT_FOUND, "not found; the WebSocket endpoint is /v1/ws\n"));
    }
    if let Some(origin) = req.headers().get(ORIGIN) {
        if !origins.allows(origin) {
            return Err((StatusCode::FORBIDDEN, "origin not allowed (websocket.allowed_origins)\n"));
        }
    }
    let headers = req.headers();
    let has = |name, token: &str| {
        headers.get_all(name).iter().any(|v: &HeaderValue| {
            v.to_str().is_ok_and(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
        })
    };
    if req.method() != Method::GET || !has(UPGRADE, "websocket") || !has(CONNECTION, "upgrade") {
        return Err((StatusCode::UPGRADE_REQUIRED, "a WebSocket upgrade is required\n"));
    }
    if headers.get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13\n"));
    }
    match headers.get(SEC_WEBSOCKET_KEY) {
        Some(key) => Ok(derive_accept_key(key.as_bytes())),
        None => Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n")),
    }
}

fn switching(accept: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn refusal(status: StatusCode, why: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(why.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(UPGRADE, HeaderValue::from_static("websocket"));
    }
    response
}

/// `websocket.allowed_origins`, parsed once.
pub(crate) enum Origins {
    /// `"*"`: every origin.
    Any,
    /// The default: origins whose host is `localhost` or a loopback address.
    Loopback,
    /// Exactly these (lower-cased `scheme://host[:port]`).
    Listed(Vec<String>),
}

impl Origins {
    pub(crate) fn new(allowed: &[String]) -> Self {
        if allowed.iter().any(|o| o == "*") {
            Origins::Any
        } else if allowed.is_empty() {
            Origins::Loopback
        } else {
            Origins::Listed(allowed.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect())
        }
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else { return false };
        match self {
            Origins::Any => true,
            Origins::Loopback => is_loopback(origin),
            Origins::Listed(list) => list.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        }
    }
}

/// Whether an origin (`scheme://host[:port]`) names this machine. `null`
/// (a sandboxed page, a file) and anything unparsable do not.
fn is_loopback(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return false;
    }
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(host, _)| host),
        None => rest.rsplit_once(':').map_or(rest, |(host, port)| if port.is_empty() { rest } else { host }),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The close code and reason a connection ends with (SPEC.md §13.3).
fn close_frame(reason: CloseReason) -> CloseFrame {
    let (code, text) = match reason {
        CloseReason::Peer => (CloseCode::Normal, ""),
        CloseReason::Goaway => (CloseCode::Away, "GOAWAY"),
        CloseReason::WriteFailed => (CloseCode::Error, ""),
        CloseReason::Error(code) => (close_code(code), code.name()),
    };
    CloseFrame { code, reason: text.into() }
}

fn close_code(code: ErrorCode) -> CloseCode {
    match code {
        ErrorCode::FrameTooLarge => CloseCode::Size,
        ErrorCode::Malformed | ErrorCode::UnsupportedVersion | ErrorCode::Unexpected => CloseCode::Protocol,
        ErrorCode::TooManyConnections => CloseCode::Again,
        ErrorCode::Unauthenticated
        | ErrorCode::BadToken
        | ErrorCode::TokenExpired
        | ErrorCode::HandshakeTimeout
        | ErrorCode::SlowConsumer
        | ErrorCode::SessionExpired => CloseCode::Policy,
        _ => CloseCode::Error,
    }
}

/// One WebSocket connection: binary messages, one frame each.
struct Ws<S> {
    ws: WebSocketStream<S>,
    codec: FrameCodec,
}

impl<S> Ws<S> {
    /// The frame a binary message carries, which must be exactly one whole
    /// frame: a part of one, or more than one, is MALFORMED.
    fn frame(&mut self, data: Bytes) -> Inbound {
        let mut buf = BytesMut::from(data);
        match self.codec.next_frame(&mut buf) {
            Ok(Some(frame)) if buf.is_empty() => Inbound::Frame(frame),
            Ok(Some(_)) => Inbound::Bad(ErrorCode::Malformed, "a WebSocket message holds more than one frame"),
            Ok(None) => Inbound::Bad(ErrorCode::Malformed, "a WebSocket message holds part of a frame"),
            Err(e) => {
                let (code, message) = frame_error(&e);
                Inbound::Bad(code, message)
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Wire for Ws<S> {
    async fn recv(&mut self) -> Inbound {
        loop {
            // `next` is cancel safe: tungstenite keeps a message being read.
            return match self.ws.next().await {
                Some(Ok(WsMessage::Binary(data))) => self.frame(data),
                Some(Ok(WsMessage::Text(_))) => Inbound::Bad(ErrorCode::Malformed, "text WebSocket message"),
                // Answered by tungstenite; nothing for the machine.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                Some(Ok(WsMessage::Close(_))) | None => Inbound::Eof,
                Some(Err(WsError::Capacity(_))) => Inbound::Bad(ErrorCode::FrameTooLarge, "frame over the limit"),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => Inbound::Eof,
                Some(Err(_)) => Inbound::Failed,
            };
        }
    }

    async fn send(&mut self, frames: Vec<Message>) -> io::Result<()> {
        for msg in &frames {
            let mut out = BytesMut::new();
            // Only a frame over 1 MiB fails, and the server builds none.
            let _ = encode_frame(msg, &mut out);
            self.ws.feed(WsMessage::Binary(out.freeze())).await.map_err(io::Error::other)?;
        }
        self.ws.flush().await.map_err(io::Error::other)
    }

    async fn close(&mut self, reason: CloseReason) {
        let closing = async {
            let _ = self.ws.close(Some(close_frame(reason))).await;
            // Wait for the peer's close frame (the closing handshake), dropping
            // what comes before it, so that the ERROR is not lost to a reset.
            while let Some(Ok(msg)) = self.ws.next().await {
                if matches!(msg, WsMessage::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, closing).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_only_by_default() {
        let loopback = Origins::new(&[]);
        for ok in ["http://localhost:8080", "https://127.0.0.1", "http://[::1]:3000", "HTTP://LOCALHOST"] {
            assert!(loopback.allows(&HeaderValue::from_static(ok)), "{ok}");
        }
        for no in ["https://example.com", "null", "http://localhost.example.com", "file://localhost", "http://10.0.0.1"]
        {
            assert!(!loopback.allows(&HeaderValue::from_static(no)), "{no}");
        }
        let listed = Origins::new(&["https://App.example/".into()]);
        assert!(listed.allows(&HeaderValue::from_static("https://app.example")));
        assert!(!listed.allows(&HeaderValue::from_static("http://localhost")));
        assert!(Origins::new(&["*".into()]).allows(&HeaderValue::from_static("null")));
    }

    #[test]
    fn fatal_errors_map_to_close_codes() {
        assert_eq!(close_frame(CloseReason::Goaway).code, CloseCode::Away);
        assert_eq!(close_frame(CloseReason::Error(ErrorCode::FrameTooLarge)).code, CloseCode::Size);
        assert_eq!(close_frame(CloseReason::Error(ErrorCode::Malformed)).code, CloseCode::Protocol);
        assert_eq!(close_frame(CloseReason::Error(ErrorCode::BadToken)).code, CloseCode::Policy);
        assert_eq!(close_frame(CloseReason::Error(ErrorCode::TooManyConnections)).code, CloseCode::Again);
        let frame = close_frame(CloseReason::Error(ErrorCode::SlowConsumer));
        assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Policy, "SLOW_CONSUMER"));
    }
}
