//! The TCP shell of one connection: admission past the connection caps, a
//! read loop that cuts frames out of a reused buffer and hands them to the
//! [`Handler`], and a write task that drains the [`Outbox`] into one buffer
//! per wake-up (one write for many frames).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::handler::{Flow, Handler};
use super::metrics::CloseReason;
use super::net::{Refused, Slot};
use super::outbox::{error, Batch, Outbox};
use super::{now_ms, Shared};
use heartline_proto::{encode_frame, ErrorCode, FrameCodec, FrameError, Message};

/// A read buffer starts this small, and is shrunk back once a large frame is done.
const READ_BUFFER: usize = 512;
/// Above this a drained buffer is given back rather than kept.
const KEEP_BUFFER: usize = 64 * 1024;
/// A peer that accepts no bytes for this long is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read and thrown away from a refused connection before closing it.
const REFUSED_DRAIN: usize = 4 * 1024;
/// How long a connection closed with a fatal ERROR keeps reading (and
/// dropping) what the peer still sends, so that the ERROR gets through.
const LINGER: Duration = Duration::from_secs(1);

/// An accepted connection: served if the caps leave room, else refused.
/// Never waits, so a flood cannot slow the accept loop down.
pub fn accept(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    shared.metrics.connections_accepted.inc();
    let limits = &shared.limits;
    match shared.admission.admit(peer.ip(), limits.max_connections(), limits.max_connections_per_ip()) {
        Ok(slot) => {
            tokio::spawn(serve(stream, slot, shared.clone()));
        }
        Err(cap) => refuse(stream, cap, shared),
    }
}

/// ERROR TOO_MANY_CONNECTIONS, then close, without a task and without
/// waiting: the frame is far smaller than a new socket's send buffer, so one
/// non-blocking write sends all of it (or, if the peer is already gone,
/// nothing, which is as good). What the peer already sent (an early HELLO) is
/// read first, so that closing sends FIN after the ERROR rather than a reset.
fn refuse(stream: TcpStream, cap: Refused, shared: &Shared) {
    shared.metrics.connections_refused(cap).inc();
    let code = ErrorCode::TooManyConnections;
    let message = match cap {
        Refused::Total => "the server is at its connection cap",
        Refused::PerIp => "too many connections from this address",
    };
    let mut frame = BytesMut::new();
    // Only a frame over 1 MiB fails to encode.
    let _ = encode_frame(&error(0, code, message), &mut frame);
    if stream.try_write(&frame).is_ok_and(|n| n == frame.len()) {
        if let Some(counter) = shared.metrics.errors_sent(code as u16) {
            counter.inc();
        }
    }
    shared.metrics.closed(CloseReason::Error(code)).inc();
    let mut sink = [0u8; 512];
    let mut drained = 0;
    while drained < REFUSED_DRAIN {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}

pub async fn serve(stream: TcpStream, slot: Slot, shared: Arc<Shared>) {
    let id = shared.next_conn_id();
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let outbox = Arc::new(Outbox::new(shared.limits.outbound_queue()));
    let written = CancellationToken::new();
    let write_task = tokio::spawn(write_loop(writer, outbox.clone(), written.clone(), shared.clone()));
    let mut handler = Handler::new(shared.clone(), id, outbox.clone());
    read_loop(&mut reader, &mut handler, &shared, &written).await;
    handler.on_close(now_ms());
    outbox.close(None);
    // A writer that panicked says nothing about the peer: count it as a failed write.
    let reason = write_task.await.unwrap_or(CloseReason::WriteFailed);
    shared.metrics.closed(reason).inc();
    if let CloseReason::Error(_) = reason {
        linger(&mut reader).await;
    }
    // The socket is closed (both halves dropped): its place is free.
    drop(slot);
}

/// Closing a socket with unread bytes makes the kernel send a reset, which
/// throws away what is still in the send buffer, the ERROR included: a peer
/// that pipelined past a fatal error would never learn why. So the write side
/// is already shut (FIN after the ERROR); read until the peer closes too, for
/// at most [`LINGER`], as web servers' lingering close does.
async fn linger(reader: &mut OwnedReadHalf) {
    let mut sink = [0u8; 1024];
    let drained = async { while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drained).await;
}

async fn read_loop(reader: &mut OwnedReadHalf, handler: &mut Handler, shared: &Shared, written: &CancellationToken) {
    let mut codec = FrameCodec::new(shared.config.limits.max_frame);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let hello_by = tokio::time::Instant::now() + shared.limits.handshake_timeout();
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if handler.on_frame(frame, now_ms()) == Flow::Close {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if let Some(code) = e.code() {
                        handler.abort(code, frame_error(&e));
                    }
                    return;
                }
            }
        }
        if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
            buf = BytesMut::with_capacity(READ_BUFFER);
        }
        if buf.capacity() - buf.len() < READ_BUFFER / 2 {
            buf.reserve(READ_BUFFER);
        }
        // In this order: an ending connection reads nothing more, however
        // fast its peer sends; and a HELLO that arrived before the deadline
        // is served even when this task runs late.
        tokio::select! {
            biased;
            _ = written.cancelled() => return,
            _ = shared.stop.cancelled() => return,
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(hello_by), if handler.awaiting_hello() => {
                handler.abort(ErrorCode::HandshakeTimeout, "no HELLO in time");
                return;
            }
        }
    }
}

fn frame_error(e: &FrameError) -> &'static str {
    match e {
        FrameError::TooLarge => "frame over the limit",
        _ => "malformed frame",
    }
}

/// Writes until the outbox closes; says why the connection ended.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    outbox: Arc<Outbox>,
    written: CancellationToken,
    shared: Arc<Shared>,
) -> CloseReason {
    let mut frames = Vec::new();
    let mut buf = BytesMut::new();
    // Whatever the server says last before closing is the reason; silence means the peer left.
    let mut reason = CloseReason::Peer;
    loop {
        let batch = outbox.take(&mut frames).await;
        for msg in frames.drain(..) {
            match &msg {
                Message::Error { code, .. } => {
                    if let Some(counter) = shared.metrics.errors_sent(*code) {
                        counter.inc();
                    }
                    if let Some(code) = ErrorCode::from_u16(*code).filter(|c| c.closes()) {
                        reason = CloseReason::Error(code);
                    }
                }
                Message::Goaway { .. } => reason = CloseReason::Goaway,
                _ => {}
            }
            // Only a frame over 1 MiB fails, and the server builds none.
            let _ = encode_frame(&msg, &mut buf);
        }
        let sent = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&buf)).await;
        if !matches!(sent, Ok(Ok(()))) {
            reason = CloseReason::WriteFailed;
            break;
        }
        buf.clear();
        if buf.capacity() > KEEP_BUFFER {
            buf = BytesMut::new();
        }
        if let Batch::Last = batch {
            let _ = writer.shutdown().await;
            break;
        }
    }
    written.cancel();
    reason
}
