//! The TCP shell of one connection: a read loop that cuts frames out of a
//! reused buffer and hands them to the [`Handler`], and a write task that
//! drains the [`Outbox`] into one buffer per wake-up (one write for many
//! frames).

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
use super::outbox::{Batch, Outbox};
use super::{now_ms, Shared};
use crate::protocol::{encode_frame, ErrorCode, FrameCodec, FrameError, Message};

/// A read buffer starts this small, and is shrunk back once a large frame is done.
const READ_BUFFER: usize = 512;
/// Above this a drained buffer is given back rather than kept.
const KEEP_BUFFER: usize = 64 * 1024;
/// A peer that accepts no bytes for this long is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let id = shared.next_conn_id();
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let outbox = Arc::new(Outbox::new(shared.limits.outbound_queue()));
    let written = CancellationToken::new();
    let write_task = tokio::spawn(write_loop(writer, outbox.clone(), written.clone(), shared.clone()));
    let mut handler = Handler::new(shared.clone(), id, outbox.clone());
    read_loop(reader, &mut handler, &shared, &written).await;
    handler.on_close(now_ms());
    outbox.close(None);
    // A writer that panicked says nothing about the peer: count it as a failed write.
    let reason = write_task.await.unwrap_or(CloseReason::WriteFailed);
    shared.metrics.closed(reason).inc();
}

async fn read_loop(mut reader: OwnedReadHalf, handler: &mut Handler, shared: &Shared, written: &CancellationToken) {
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
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(hello_by), if handler.awaiting_hello() => {
                handler.abort(ErrorCode::HandshakeTimeout, "no HELLO in time");
                return;
            }
            _ = written.cancelled() => return,
            _ = shared.stop.cancelled() => return,
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
