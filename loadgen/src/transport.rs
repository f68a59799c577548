//! The client transports of the one-connection-per-client modes: plain TCP
//! (`tcp`, heartline-client's [`Connection`]), TCP+TLS (`tls`), WebSocket
//! (`ws`) and WebSocket over TLS (`wss`). The client loop of [`tcp`] is
//! generic over [`ClientTransport`], so every mode runs the same code and
//! only the bytes under the frames differ.
//!
//! What `connect_auth` times in each mode, from the first SYN to WELCOME:
//! `tcp`: TCP connect, HELLO → WELCOME. `tls`: TCP connect, a full TLS
//! handshake (certificate checked against `--ca` and `--tls-name`), HELLO →
//! WELCOME. `ws`: TCP connect, the HTTP upgrade on `/v1/ws`, HELLO →
//! WELCOME, each frame one binary WebSocket message. `wss`: all of these.
//! Session resumption is off unless `--tls-resumption`: every handshake is
//! a full one (an ECDHE key exchange and the server's signature), which is
//! what a fleet of clients reconnecting after a restart costs the daemon.
//! The daemon still issues its session tickets, and that is measured.
//! `wire_bytes_per_heartbeat` counts the protocol frame alone (3 bytes in
//! every mode); under it a client's WebSocket message adds 6 bytes (header
//! and mask) and a TLS 1.3 record 22 (header, content type, AEAD tag).
//!
//! Kept cheap, since the load generator shares the cores it measures: one
//! task per connection, no reader/writer split, WebSocket read buffers of
//! [`READ_CHUNK`] (the daemon sends nothing unasked once a client is
//! welcomed), and frames encoded once and written as they are.
//!
//! [`tcp`]: crate::tcp

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use heartline_client::wire::{Connection, Reader, WireError};
use heartline_proto::{encode_frame, Device, FrameError, Hello, Message, MessageCodec, Role, Welcome, VERSION};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// Room made in a TLS connection's read buffer before each read, and the
/// WebSocket read buffer (the daemon's replies here are a few dozen bytes).
const READ_CHUNK: usize = 1024;
/// The daemon's WebSocket endpoint.
const WS_PATH: &str = "/v1/ws";

/// One client connection of a per-connection mode, speaking protocol frames.
pub(crate) trait ClientTransport: Sized + Send + 'static {
    /// The mode's name, as the report gives it.
    const MODE: &'static str;

    /// Connects to `addr` (from a loopback source address chosen by
    /// `source`, see [`tcp_stream`]) and does the transport's own
    /// handshakes, TLS with `tls`, and the WebSocket upgrade; sends no frame.
    fn open(addr: SocketAddr, tls: Option<&TlsDial>, source: u64) -> impl Future<Output = Result<Self>> + Send;

    /// Writes one whole encoded frame (as on TCP, length prefix included).
    /// Not cancel safe.
    fn send_frame(&mut self, frame: &Bytes) -> impl Future<Output = Result<(), WireError>> + Send;

    /// The next message from the daemon. Cancel safe: the client loop races
    /// it against its heartbeat timer.
    fn recv_frame(&mut self) -> impl Future<Output = Result<Message, WireError>> + Send;
}

/// A frame encoded once, to be sent as it is.
pub(crate) fn frame(msg: &Message) -> Result<Bytes, WireError> {
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf)?;
    Ok(buf.freeze())
}

/// Sends a client's HELLO (protocol [`VERSION`], [`Device::Desktop`], no
/// resumption; as heartline-client's `Connection::hello`) and waits for WELCOME.
pub(crate) async fn hello<T: ClientTransport>(
    conn: &mut T,
    token: Bytes,
    want_udp: bool,
) -> Result<Welcome, WireError> {
    let hello = Hello { version: VERSION, role: Role::Client, device: Device::Desktop, want_udp, resume: 0, token };
    conn.send_frame(&frame(&Message::Hello(hello))?).await?;
    match conn.recv_frame().await? {
        Message::Welcome(welcome) => Ok(welcome),
        Message::Error { req, code, message } => Err(WireError::Server { req, code, message }),
        other => Err(WireError::Unexpected(Box::new(other))),
    }
}

/// A TCP connection to `addr` with Nagle's algorithm off. On loopback the
/// source address is 127.0.0.1–127.0.0.254 by `source`: a million
/// connections run out of neither ephemeral ports nor the daemon's per-IP cap.
pub(crate) async fn tcp_stream(addr: SocketAddr, source: u64) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if addr.ip().is_loopback() {
        socket.bind(SocketAddr::new(Ipv4Addr::new(127, 0, 0, 1 + (source % 254) as u8).into(), 0))?;
    }
    let stream = socket.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How the `tls` and `wss` modes check the daemon's certificate.
#[derive(Clone)]
pub(crate) struct TlsDial {
    connector: TlsConnector,
    /// Checked against the certificate and sent as SNI.
    name: ServerName<'static>,
}

impl TlsDial {
    /// Trusts only the CA certificates in the PEM file `ca`, checks the
    /// certificate against `name`; resumes sessions only if `resumption`
    /// (then every connection after the first few may skip the full handshake).
    pub(crate) fn new(ca: &Path, name: &str, resumption: bool) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?;
        for cert in certs {
            roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
        }
        if roots.is_empty() {
            bail!("no certificate in {}", ca.display());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        if !resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let name = ServerName::try_from(name.to_owned()).with_context(|| format!("--tls-name {name:?}"))?;
        Ok(Self { connector: TlsConnector::from(Arc::new(config)), name })
    }

    async fn connect(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), stream).await.context("TLS handshake")
    }
}

fn tls_of<'a>(tls: Option<&'a TlsDial>, mode: &str) -> Result<&'a TlsDial> {
    tls.with_context(|| format!("{mode} mode needs the CA to trust (--ca)"))
}

fn ws_error(e: impl std::error::Error + Send + Sync + 'static) -> WireError {
    io::Error::other(e).into()
}

/// Plain TCP: the wire connection the integration tests and gateways use.
impl ClientTransport for Connection {
    const MODE: &'static str = "tcp";

    async fn open(addr: SocketAddr, _tls: Option<&TlsDial>, source: u64) -> Result<Self> {
        Ok(Connection::from_stream(tcp_stream(addr, source).await?))
    }

    async fn send_frame(&mut self, frame: &Bytes) -> Result<(), WireError> {
        self.send_raw(frame).await
    }

    async fn recv_frame(&mut self) -> Result<Message, WireError> {
        self.recv().await
    }
}

/// TCP+TLS: the same frames as on TCP, inside TLS records, read by the
/// SDK's wire reader.
pub(crate) type Tls = Reader<TlsStream<TcpStream>>;

impl ClientTransport for Tls {
    const MODE: &'static str = "tls";

    async fn open(addr: SocketAddr, tls: Option<&TlsDial>, source: u64) -> Result<Self> {
        let tls = tls_of(tls, Self::MODE)?;
        Ok(Reader::new(tls.connect(tcp_stream(addr, source).await?).await?))
    }

    async fn send_frame(&mut self, frame: &Bytes) -> Result<(), WireError> {
        let io = self.get_mut();
        io.write_all(frame).await?;
        Ok(io.flush().await?)
    }

    async fn recv_frame(&mut self) -> Result<Message, WireError> {
        self.recv().await
    }
}

/// A WebSocket connection: one frame per binary message, each way.
pub(crate) struct WsConn<S> {
    ws: WebSocketStream<S>,
    codec: MessageCodec,
}

/// WebSocket on plain TCP (`ws://ADDR/v1/ws`).
pub(crate) type Ws = WsConn<TcpStream>;
/// WebSocket over TLS (`wss://`, the daemon's `websocket.tls`).
pub(crate) type Wss = WsConn<TlsStream<TcpStream>>;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WsConn<S> {
    /// The upgrade on `/v1/ws` (no `Origin`: not a browser), with a small
    /// read buffer (tungstenite's default, 128 KiB, is allocated per connection).
    async fn upgrade(stream: S, url: String) -> Result<Self> {
        let request = url.into_client_request()?;
        let config = WebSocketConfig::default().read_buffer_size(READ_CHUNK).write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .context("WebSocket upgrade")?;
        Ok(Self { ws, codec: MessageCodec::default() })
    }

    async fn send(&mut self, frame: &Bytes) -> Result<(), WireError> {
        self.ws.send(WsMessage::Binary(frame.clone())).await.map_err(ws_error)
    }

    /// Each message from the daemon is exactly one frame; pings are answered
    /// by tungstenite as it reads.
    async fn recv(&mut self) -> Result<Message, WireError> {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Binary(data))) => {
                    let mut buf = BytesMut::from(data);
                    let msg = self.codec.next_message(&mut buf)?.ok_or(FrameError::Malformed)?;
                    if !buf.is_empty() {
                        return Err(FrameError::Malformed.into());
                    }
                    return Ok(msg);
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => return Err(WireError::Closed),
                Some(Ok(WsMessage::Text(_))) => return Err(FrameError::Malformed.into()),
                Some(Err(e)) => return Err(ws_error(e)),
            }
        }
    }
}

impl ClientTransport for Ws {
    const MODE: &'static str = "ws";

    async fn open(addr: SocketAddr, _tls: Option<&TlsDial>, source: u64) -> Result<Self> {
        Self::upgrade(tcp_stream(addr, source).await?, format!("ws://{addr}{WS_PATH}")).await
    }

    async fn send_frame(&mut self, frame: &Bytes) -> Result<(), WireError> {
        self.send(frame).await
    }

    async fn recv_frame(&mut self) -> Result<Message, WireError> {
        self.recv().await
    }
}

impl ClientTransport for Wss {
    const MODE: &'static str = "wss";

    async fn open(addr: SocketAddr, tls: Option<&TlsDial>, source: u64) -> Result<Self> {
        let tls = tls_of(tls, Self::MODE)?;
        let stream = tls.connect(tcp_stream(addr, source).await?).await?;
        let url = format!("wss://{}:{}{WS_PATH}", tls.name.to_str(), addr.port());
        Self::upgrade(stream, url).await
    }

    async fn send_frame(&mut self, frame: &Bytes) -> Result<(), WireError> {
        self.send(frame).await
    }

    async fn recv_frame(&mut self) -> Result<Message, WireError> {
        self.recv().await
    }
}
