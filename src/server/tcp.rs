//! The TCP shell: admission past the connection caps, then one task per
//! connection that moves bytes between the socket and its [`Driver`].
//!
//! Owns the socket, the read and write buffers and the write timeout. It
//! decides nothing about the protocol: frames go to the driver, replies
//! come from the outbox.
//!
//! A million mostly idle connections must be cheap, so an idle connection
//! holds no buffer and no timer: reads land in a per-thread scratch buffer
//! whose complete frames are handed on as `Bytes` slices of it (zero-copy);
//! only a frame cut by a read is kept, in a buffer of the connection's own
//! that is released once it empties. The write buffer likewise exists only
//! while something is being written, and the only timers are the machine's
//! handshake deadline and the write timeout of a write in progress. One
//! task does both directions, waking on the socket's readiness or the
//! outbox, never on a schedule.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use heartline_core::conn::error;
use heartline_proto::{encode_frame, ErrorCode, FrameCodec, Message};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::driver::Driver;
use super::feed::FeedShell;
use super::net::{Admission, Slot};
use super::node::Node;
use super::now_ms;
use super::outbox::Batch;
use super::stream::{admit, frame_error, LINGER, WRITE_TIMEOUT};
use crate::metrics::{CloseReason, Refused, Transport};

/// Room asked of the scratch buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// A scratch or write buffer that grew past this (a large frame) is given back.
const KEEP_BUFFER: usize = 256 * 1024;
/// Why reading stopped for good.
enum ReadEnd {
    Eof,
    Failed,
}

/// Bytes read and thrown away from a refused connection before closing it.
const REFUSED_DRAIN: usize = 4 * 1024;

thread_local! {
    /// Each runtime thread's read buffer: every connection on the thread
    /// reads into it in turn, within one poll.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    /// Each runtime thread's write buffer, likewise.
    static OUT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// What a connection task needs besides its socket.
#[derive(Clone)]
pub(crate) struct Handles {
    pub(crate) node: Arc<Node>,
    pub(crate) feed: Arc<FeedShell>,
    pub(crate) admission: Arc<Admission>,
}

/// An accepted connection: served if the caps leave room, else refused.
/// Never waits, so a flood cannot slow the accept loop down.
pub(crate) fn accept(stream: TcpStream, peer: SocketAddr, handles: &Handles) {
    match admit(peer, handles, Transport::Tcp) {
        Ok(slot) => {
            tokio::spawn(serve(stream, slot, handles.clone()));
        }
        Err(cap) => refuse(stream, cap, &handles.node),
    }
}

/// ERROR TOO_MANY_CONNECTIONS, then close, without a task and without
/// waiting: the frame is far smaller than a new socket's send buffer, so one
/// non-blocking write sends all of it (or, if the peer is already gone,
/// nothing, which is as good). What the peer already sent (an early HELLO) is
/// read first, so that closing sends FIN after the ERROR rather than a reset.
fn refuse(stream: TcpStream, cap: Refused, node: &Node) {
    let code = ErrorCode::TooManyConnections;
    let message = match cap {
        Refused::Total => "the server is at its connection cap",
        Refused::PerIp => "too many connections from this address",
    };
    let mut frame = BytesMut::new();
    // Only a frame over 1 MiB fails to encode.
    let _ = encode_frame(&error(0, code, message), &mut frame);
    if stream.try_write(&frame).is_ok_and(|n| n == frame.len()) {
        if let Some(counter) = node.metrics.errors_sent(code as u16) {
            counter.inc();
        }
    }
    let mut sink = [0u8; 512];
    let mut drained = 0;
    while drained < REFUSED_DRAIN {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}

async fn serve(mut stream: TcpStream, slot: Slot, handles: Handles) {
    let _ = stream.set_nodelay(true);
    let max_frame = handles.node.limits.max_frame();
    let mut conn = Tcp {
        driver: Driver::new(handles.node, handles.feed, Transport::Tcp),
        codec: FrameCodec::new(max_frame),
        partial: BytesMut::new(),
        unwritten: BytesMut::new(),
        writing_since: None,
        timer: None,
        last: false,
        eof: false,
        reason: CloseReason::Peer,
    };
    let reason = conn.run(&stream).await;
    let reason = conn.driver.finish(reason);
    if let CloseReason::Error(_) = reason {
        // Boxed: inline, its buffer and timer would weigh on every connection's future.
        Box::pin(linger(&mut stream)).await;
    }
    // The socket closes here, and its place is free.
    drop(stream);
    drop(slot);
}

struct Tcp {
    driver: Driver,
    codec: FrameCodec,
    /// A frame cut by a read: the bytes so far. Empty (and unallocated) between frames.
    partial: BytesMut,
    /// Encoded frames the socket did not take at once. Empty (and
    /// unallocated) unless a write is in progress.
    unwritten: BytesMut,
    /// When the oldest unwritten byte was queued.
    writing_since: Option<Instant>,
    /// Armed only while a deadline is due (before HELLO, or while a write
    /// is stuck), and boxed: an idle connection carries no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// The outbox gave its last frames: once they are written, the connection ends.
    last: bool,
    /// The peer has shut its side.
    eof: bool,
    /// Whatever the server says last before closing is the reason; silence means the peer left.
    reason: CloseReason,
}

impl Tcp {
    async fn run(&mut self, stream: &TcpStream) -> CloseReason {
        std::future::poll_fn(|cx| self.poll_run(cx, stream)).await
    }

    /// One task serves both directions, polled by hand rather than through
    /// `select!`: waiting costs the socket's own reader and writer waker
    /// slots and the outbox's, no waiter nodes to link and unlink on every
    /// wake, and the connection's future is little more than [`Tcp`].
    /// A due timer first (before anything re-arms it), then the outbox
    /// (replies before new requests), then the socket; it returns `Pending`
    /// once none of them has news.
    fn poll_run(&mut self, cx: &mut Context<'_>, stream: &TcpStream) -> Poll<CloseReason> {
        loop {
            let mut news = false;
            // Before anything re-arms it: a timer set again is no longer due.
            if self.timer.as_mut().is_some_and(|timer| timer.as_mut().poll(cx).is_ready()) {
                news = true;
                // Set afresh from the time now, if still needed.
                self.timer = None;
                if self.writing_since.is_some_and(|since| since.elapsed() >= WRITE_TIMEOUT) {
                    return Poll::Ready(CloseReason::WriteFailed);
                }
                self.driver.on_timeout();
            }
            if self.unwritten.is_empty() && !self.last {
                // Filled only when there is something to write, and dropped after.
                let mut frames = Vec::new();
                if let Poll::Ready(batch) = self.driver.outbox().poll_take(cx, &mut frames) {
                    news = true;
                    match batch {
                        Batch::Interrupted(interrupt) => self.driver.on_interrupt(interrupt),
                        Batch::More => self.write(stream, frames),
                        Batch::Last => {
                            self.write(stream, frames);
                            self.last = true;
                        }
                    }
                }
            }
            if self.reading() {
                if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                    news = true;
                    if ready.is_err() {
                        return Poll::Ready(self.reason);
                    }
                    match self.read(stream) {
                        Ok(()) => {}
                        // The peer sent all it will: answer what it asked, then close.
                        Err(ReadEnd::Eof) => {
                            self.eof = true;
                            self.driver.outbox().close(None);
                        }
                        Err(ReadEnd::Failed) => return Poll::Ready(self.reason),
                    }
                }
            }
            if !self.unwritten.is_empty() {
                // Writable, or an error or hang-up, which the flush below reports.
                news |= stream.poll_write_ready(cx).is_ready();
            }
            if self.flush(stream).is_err() {
                return Poll::Ready(CloseReason::WriteFailed);
            }
            if self.last && self.unwritten.is_empty() {
                // FIN after the last frame (as tokio's `shutdown` does, without needing `&mut`).
                let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
                return Poll::Ready(self.reason);
            }
            self.arm();
            // Polled to be woken when due; if already due, handled next round.
            news |= self.timer.as_mut().is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
            if !news {
                return Poll::Pending;
            }
        }
    }

    /// Sets the timer to the next deadline, or drops it when none is due.
    fn arm(&mut self) {
        match (self.deadline(), &mut self.timer) {
            (None, timer) => *timer = None,
            (Some(at), Some(timer)) => {
                // The machine's deadline is in unix milliseconds: converted
                // again, the same deadline lands within a millisecond.
                let (a, b) = (timer.deadline(), at);
                if a.max(b) - a.min(b) > Duration::from_millis(1) {
                    timer.as_mut().reset(at);
                }
            }
            (Some(at), timer) => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// The earliest of the machine's deadline and the write timeout.
    fn deadline(&self) -> Option<Instant> {
        let machine = self.driver.deadline_ms().map(|at| {
            let now = now_ms();
            Instant::now() + Duration::from_millis(at.saturating_sub(now))
        });
        let write = self.writing_since.map(|since| since + WRITE_TIMEOUT);
        match (machine, write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Encodes what the outbox gave and writes what the socket takes now;
    /// the rest is kept for when it is writable again.
    fn write(&mut self, stream: &TcpStream, frames: Vec<Message>) {
        OUT.with(|out| {
            let out = &mut *out.borrow_mut();
            out.clear();
            if out.capacity() > KEEP_BUFFER {
                *out = BytesMut::new();
            }
            for msg in frames {
                if let Some(reason) = self.driver.sent(&msg) {
                    self.reason = reason;
                }
                // Only a frame over 1 MiB fails, and the server builds none.
                let _ = encode_frame(&msg, out);
            }
            match write_some(stream, out) {
                Ok(()) if out.is_empty() => {}
                Ok(()) => {
                    self.unwritten.extend_from_slice(out);
                    self.writing_since = Some(Instant::now());
                }
                // Reported by the next flush, as any write error.
                Err(_) => self.unwritten.extend_from_slice(out),
            }
        });
    }

    /// Writes what was left over, as far as the socket takes it.
    fn flush(&mut self, stream: &TcpStream) -> io::Result<()> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        write_some(stream, &mut self.unwritten)?;
        if self.unwritten.is_empty() {
            // Given back: an idle connection holds no buffer.
            self.unwritten = BytesMut::new();
            self.writing_since = None;
        }
        Ok(())
    }

    /// Whether frames are still read: not once the machine has ended the
    /// connection, the outbox has closed (an overflow freezes it) or the
    /// peer has shut its side (SPEC.md §4.4: closing, the server reads nothing).
    fn reading(&self) -> bool {
        self.driver.reading() && !self.eof && !self.last && !self.driver.outbox().is_closing()
    }

    /// Reads until the socket has nothing more (or the machine ended the
    /// connection) and hands every whole frame to the driver.
    fn read(&mut self, stream: &TcpStream) -> Result<(), ReadEnd> {
        while self.reading() {
            let read = if self.partial.is_empty() {
                SCRATCH.with(|scratch| self.read_scratch(stream, &mut scratch.borrow_mut()))
            } else {
                read_into(stream, &mut self.partial).inspect(|&n| {
                    if n > 0 {
                        self.frames_in_partial();
                    }
                })
            };
            match read {
                Ok(0) => return Err(ReadEnd::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(ReadEnd::Failed),
            }
        }
        Ok(())
    }

    /// One read into the thread's scratch buffer; whole frames go to the
    /// driver, a cut one is moved to `partial`.
    fn read_scratch(&mut self, stream: &TcpStream, scratch: &mut BytesMut) -> io::Result<usize> {
        if scratch.capacity() > KEEP_BUFFER {
            *scratch = BytesMut::new();
        }
        let n = read_into(stream, scratch)?;
        self.frames_in(scratch);
        if self.driver.reading() && !scratch.is_empty() {
            self.partial.extend_from_slice(scratch);
        }
        scratch.clear();
        Ok(n)
    }

    fn frames_in_partial(&mut self) {
        let mut partial = std::mem::take(&mut self.partial);
        self.frames_in(&mut partial);
        // Emptied, it is dropped: an idle connection holds no buffer.
        if !partial.is_empty() {
            self.partial = partial;
        }
    }

    /// Hands every whole frame in `buf` to the driver, until the machine
    /// ends the connection.
    fn frames_in(&mut self, buf: &mut BytesMut) {
        while self.driver.reading() {
            match self.codec.next_frame(buf) {
                Ok(Some(frame)) => {
                    self.driver.on_frame(frame);
                }
                Ok(None) => return,
                Err(e) => {
                    let (code, message) = frame_error(&e);
                    self.driver.abort(code, message);
                }
            }
        }
    }
}

/// Writes from the front of `buf` until it is empty or the socket is full.
fn write_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One non-blocking read, making room first. A read that leaves room took
/// all the socket had, so the socket's readiness is cleared then and there:
/// the next read waits for news instead of asking the kernel once more only
/// to hear "nothing" (one system call per heartbeat instead of two).
fn read_into(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    let mut drained = None;
    let read = stream.try_io(Interest::READABLE, || {
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        let n = socket2::SockRef::from(stream).recv(spare)?;
        // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        if n > 0 && n < room {
            // `WouldBlock` is how `try_io` is told to clear the readiness.
            drained = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    drained.map_or(read, Ok)
}

/// Closing a socket with unread bytes makes the kernel send a reset, which
/// throws away what is still in the send buffer, the ERROR included: a peer
/// that pipelined past a fatal error would never learn why. So the write side
/// is already shut (FIN after the ERROR); read until the peer closes too, for
/// at most [`LINGER`], as web servers' lingering close does.
async fn linger(stream: &mut TcpStream) {
    let mut sink = vec![0u8; 1024];
    let drained = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drained).await;
}
