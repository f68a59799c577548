//! The generic stream shell: one task per connection that moves frames
//! between any [`Wire`] — TLS over TCP here, WebSocket in [`super::ws`] —
//! and its [`Driver`]. The plain-TCP shell ([`super::tcp`]) is separate
//! because it works on raw readiness with per-thread buffers, which a
//! TLS or WebSocket stream (`AsyncRead`/`AsyncWrite`) cannot offer.
//!
//! Owns admission for every listener ([`admit`]), the accept loop the TLS
//! and WebSocket listeners share ([`accept_loop`]), the write timeout and
//! the order of closing. It decides nothing about the protocol: frames go
//! to the driver, replies come from the outbox, and a transport only says
//! how frames are cut out of its bytes and how it closes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use heartline_proto::{encode_frame, ErrorCode, FrameCodec, FrameError, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::driver::Driver;
use super::net::Slot;
use super::now_ms;
use super::outbox::Batch;
use super::tcp::Handles;
use crate::metrics::{CloseReason, Refused, Transport};

/// A write to the peer not complete after this long ends the connection.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection closed with a fatal ERROR keeps reading (and
/// dropping) what the peer still sends, so that the ERROR gets through.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
/// Room made in a connection's read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// What a transport read from its peer.
pub(crate) enum Inbound {
    /// One whole frame, for the driver.
    Frame(Bytes),
    /// Bytes that break the transport's framing: the connection ends with
    /// this error, as on TCP (SPEC.md §4.1).
    Bad(ErrorCode, &'static str),
    /// The peer closed its side cleanly.
    Eof,
    /// The transport failed (reset, TLS or WebSocket protocol error).
    Failed,
}

/// One connection's transport under the generic shell. Futures must be
/// cancel safe where the shell races them: [`recv`](Wire::recv) loses
/// nothing when dropped before it completes.
pub(crate) trait Wire: Send {
    /// The next frame, or why there is none.
    fn recv(&mut self) -> impl Future<Output = Inbound> + Send;
    /// Writes `frames` (encoded as on TCP) and flushes them.
    fn send(&mut self, frames: Vec<Message>) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends the connection after the last frame, saying why where the
    /// transport can; after a fatal ERROR, lingers (reads and drops) for at
    /// most [`LINGER`] so that the ERROR is not lost to a reset.
    fn close(&mut self, reason: CloseReason) -> impl Future<Output = ()> + Send;
}

/// Takes a place for a connection from `peer` through `transport`, counting
/// it; a refusal is counted too, and the caller says what it can to the peer.
pub(crate) fn admit(peer: SocketAddr, handles: &Handles, transport: Transport) -> Result<Slot, Refused> {
    let node = &handles.node;
    node.metrics.connections_accepted.inc();
    node.metrics.accepted_by(transport).inc();
    let limits = &node.limits;
    let admitted = handles.admission.admit(peer.ip(), limits.max_connections(), limits.max_connections_per_ip());
    if let Err(cap) = admitted {
        node.metrics.connections_refused(cap).inc();
        node.metrics.closed(CloseReason::Error(ErrorCode::TooManyConnections)).inc();
    }
    admitted
}

/// Accepts on `listener` until `shutdown`, handing each connection to
/// `serve` (which must not wait: it spawns).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shutdown: CancellationToken,
    mut serve: impl FnMut(TcpStream, SocketAddr) + Send,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    serve(stream, peer);
                }
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// A connection on the TCP+TLS listener: admitted (a refused one is closed
/// before any TLS, so a flood costs no handshakes), the TLS handshake within
/// the handshake timeout, then the shell.
pub(crate) fn accept_tls(stream: TcpStream, peer: SocketAddr, handles: &Handles, acceptor: &TlsAcceptor) {
    let Ok(slot) = admit(peer, handles, Transport::Tls) else { return };
    let (handles, acceptor) = (handles.clone(), acceptor.clone());
    tokio::spawn(async move {
        let timeout = handles.node.limits.handshake_timeout();
        // Boxed: inline, the handshake's state would size this task for the connection's life.
        let Ok(Ok(tls)) = Box::pin(tokio::time::timeout(timeout, acceptor.accept(stream))).await else { return };
        let mut wire = ByteStream::new(tls, handles.node.limits.max_frame());
        let driver = Driver::new(handles.node, handles.feed, Transport::Tls);
        serve(&mut wire, driver).await;
        drop(slot);
    });
}

/// Drives `driver` over `wire` until the connection ends, then closes both.
pub(crate) async fn serve(wire: &mut impl Wire, mut driver: Driver) {
    let reason = run(wire, &mut driver).await;
    let reason = driver.finish(reason);
    if reason != CloseReason::WriteFailed {
        wire.close(reason).await;
    }
}

async fn run(wire: &mut impl Wire, driver: &mut Driver) -> CloseReason {
    let mut reason = CloseReason::Peer;
    let mut eof = false;
    loop {
        let outbox = driver.outbox().clone();
        // SPEC.md §4.4: once an input has ended the connection (or the peer
        // its side, or the outbox its queue), nothing more is read.
        let reading = driver.reading() && !eof && !outbox.is_closing();
        let deadline =
            driver.deadline_ms().map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())));
        let mut frames = Vec::new();
        tokio::select! {
            biased;
            taken = outbox.take(&mut frames) => {
                let last = match taken {
                    Batch::Interrupted(interrupt) => {
                        driver.on_interrupt(interrupt);
                        continue;
                    }
                    Batch::More => false,
                    Batch::Last => true,
                };
                for msg in &frames {
                    if let Some(closing) = driver.sent(msg) {
                        reason = closing;
                    }
                }
                match tokio::time::timeout(WRITE_TIMEOUT, wire.send(frames)).await {
                    Ok(Ok(())) if last => return reason,
                    Ok(Ok(())) => {}
                    _ => return CloseReason::WriteFailed,
                }
            },
            inbound = wire.recv(), if reading => match inbound {
                Inbound::Frame(frame) => {
                    driver.on_frame(frame);
                }
                Inbound::Bad(code, message) => driver.abort(code, message),
                // The peer sent all it will: answer what it asked, then close.
                Inbound::Eof => {
                    eof = true;
                    outbox.close(None);
                }
                Inbound::Failed => return reason,
            },
            () = sleep_until(deadline), if deadline.is_some() => driver.on_timeout(),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(at) = deadline {
        tokio::time::sleep_until(at).await;
    }
}

/// Cuts frames out of a byte stream as TCP does: a frame may span reads and
/// a read may hold many (SPEC.md §4.1).
pub(crate) struct ByteStream<S> {
    stream: S,
    codec: FrameCodec,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ByteStream<S> {
    pub(crate) fn new(stream: S, max_frame: usize) -> Self {
        Self { stream, codec: FrameCodec::new(max_frame), buf: BytesMut::new() }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Wire for ByteStream<S> {
    async fn recv(&mut self) -> Inbound {
        loop {
            match self.codec.next_frame(&mut self.buf) {
                Ok(Some(frame)) => {
                    if self.buf.is_empty() {
                        // Given back: an idle connection holds no buffer.
                        self.buf = BytesMut::new();
                    }
                    return Inbound::Frame(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    let (code, message) = frame_error(&e);
                    return Inbound::Bad(code, message);
                }
            }
            self.buf.reserve(READ_CHUNK);
            // `read_buf` is cancel safe: what it read is in `buf`.
            match self.stream.read_buf(&mut self.buf).await {
                // A frame cut short by the end is dropped, as on TCP.
                Ok(0) => return Inbound::Eof,
                Ok(_) => {}
                Err(_) => return Inbound::Failed,
            }
        }
    }

    async fn send(&mut self, frames: Vec<Message>) -> io::Result<()> {
        let mut out = BytesMut::new();
        for msg in &frames {
            // Only a frame over 1 MiB fails, and the server builds none.
            let _ = encode_frame(msg, &mut out);
        }
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    async fn close(&mut self, reason: CloseReason) {
        // TLS close_notify, then FIN.
        let _ = tokio::time::timeout(LINGER, self.stream.shutdown()).await;
        if let CloseReason::Error(_) = reason {
            let mut sink = vec![0u8; 1024];
            let drained = async { while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(LINGER, drained).await;
        }
    }
}

/// The ERROR for bytes that are not a frame, the same on every transport.
pub(crate) fn frame_error(e: &FrameError) -> (ErrorCode, &'static str) {
    match e {
        FrameError::TooLarge => (ErrorCode::FrameTooLarge, "frame over the limit"),
        e => (e.code().unwrap_or(ErrorCode::Malformed), "malformed frame"),
    }
}
