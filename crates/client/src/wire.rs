//! The low-level wire connection: protocol v1 frames over one TCP
//! connection, for peers that must see and shape every frame themselves —
//! the integration tests, the load generator, a gateway — where [`Client`]
//! would hide them.
//!
//! Owns the framing (heartline-proto's [`MessageCodec`] to read,
//! [`encode_frame`] to write), one reused write buffer per connection
//! ([`feed`](Writer::feed) several frames, [`flush`](Writer::flush) them in
//! one write), the HELLO → WELCOME handshake, matching a reply to its
//! request id, and a gateway's OPEN, CLOSE and BATCH_HEARTBEAT (batches are
//! bit-packed by `heartline_proto::batch` straight into the write buffer).
//! A [`Connection`] splits into a [`Reader`] and a [`Writer`] for a reader
//! task beside a writer task.
//!
//! It must not do anything on its own: no heartbeats, timers, reconnection,
//! resumption, retries or session state — that is [`Client`]'s job — and it
//! never reorders, drops or rewrites what it is given (only
//! [`Reader::reply`] skips pushes, and says so). Raw bytes
//! ([`send_raw`](Writer::send_raw)) go out as they are, which is how tests
//! send malformed input. Every error is fatal for the connection. Like the
//! rest of this crate it knows only `protocol-spec/SPEC.md`, nothing of the
//! server's internals.
//!
//! ```no_run
//! use heartline_client::proto::{Message, Role};
//! use heartline_client::wire::{Connection, WireError};
//!
//! # async fn run(token: bytes::Bytes) -> Result<(), WireError> {
//! let mut conn = Connection::connect("127.0.0.1:7400").await?;
//! let welcome = conn.hello(token, Role::Client, false, 0).await?;
//! println!("session {}", welcome.session);
//! // Pipelined: three frames, one write.
//! for user in [7, 8, 9] {
//!     let req = conn.next_req();
//!     conn.feed(&Message::Query { req, users: vec![user] })?;
//! }
//! conn.flush().await?;
//! for _ in 0..3 {
//!     println!("{:?}", conn.recv().await?);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Client`]: crate::Client

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use heartline_proto::codec::types;
use heartline_proto::{
    batch, encode_frame, limits, varint, BatchEntry, BatchError, Device, ErrorCode, FrameError, Hello, Message,
    MessageCodec, OpenEntry, Role, Text, Welcome, VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 4 * 1024;
/// Bytes a legal length prefix takes at most (2^21 > `limits::MAX_FRAME`).
const MAX_LENGTH_PREFIX: usize = 3;

/// Why a wire operation failed. Every one of them leaves the connection
/// unusable, except [`WireError::Server`] for a non-fatal code and
/// [`WireError::Batch`] (nothing was buffered).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection between two frames.
    #[error("connection closed by the peer")]
    Closed,
    /// The socket failed ([`FrameError::Io`], an end of stream inside a frame
    /// included), or what arrived is not a frame or not a message of
    /// protocol v1, or a message to send is over the frame limit.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Entries that cannot form a batch.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The peer answered with ERROR (`req` 0: about no request).
    #[error("error {code}: {message:?}")]
    Server { req: u64, code: u16, message: Text },
    /// The peer answered with something else than the reply expected.
    #[error("unexpected {0:?}")]
    Unexpected(Box<Message>),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Frame(FrameError::Io(e))
    }
}

impl WireError {
    /// The code of an ERROR from the peer, if this is one this version defines.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            WireError::Server { code, .. } => ErrorCode::from_u16(*code),
            _ => None,
        }
    }
}

/// Appends a BATCH_HEARTBEAT frame of `entries` (strictly ascending session
/// ids) to `dst`, bit-packed by `heartline_proto::batch` in place: no
/// temporary buffer. Returns the frame's length; on error `dst` is as it was.
///
/// For frames made once and sent many times with [`Writer::send_raw`];
/// [`Writer::feed_batch`] writes into the connection's own buffer.
pub fn encode_batch(entries: &[BatchEntry], dst: &mut BytesMut) -> Result<usize, WireError> {
    let start = dst.len();
    // Written behind a maximal length prefix, then the gap is closed, as
    // `encode_frame` does.
    dst.put_bytes(0, MAX_LENGTH_PREFIX);
    dst.put_u8(types::BATCH_HEARTBEAT);
    if let Err(e) = batch::write(dst, entries) {
        dst.truncate(start);
        return Err(e.into());
    }
    let len = dst.len() - start - MAX_LENGTH_PREFIX;
    if len > limits::MAX_FRAME {
        dst.truncate(start);
        return Err(FrameError::TooLarge.into());
    }
    let gap = MAX_LENGTH_PREFIX - varint::len(len as u64);
    let mut prefix = &mut dst[start + gap..start + MAX_LENGTH_PREFIX];
    varint::put(&mut prefix, len as u64);
    if gap > 0 {
        dst.copy_within(start + gap.., start);
        dst.truncate(dst.len() - gap);
    }
    Ok(dst.len() - start)
}

/// The receiving half: frames in, decoded. Over TCP it reads the
/// connection's read half; any other byte stream works the same (the load
/// generator reads TLS this way, writing through [`get_mut`](Self::get_mut)).
pub struct Reader<R = OwnedReadHalf> {
    read: R,
    buf: BytesMut,
    codec: MessageCodec,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads frames of up to the protocol's limit from `read`.
    pub fn new(read: R) -> Self {
        Self { read, buf: BytesMut::new(), codec: MessageCodec::default() }
    }

    /// The stream under the reader: write to it, never read from it.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.read
    }

    /// The next message. [`WireError::Closed`] when the peer closed the
    /// connection between frames; a bad frame is a [`WireError::Frame`].
    ///
    /// Cancel safe: in a `select!` or under a timeout that fires first,
    /// nothing is lost; bytes already read stay buffered for the next call.
    pub async fn recv(&mut self) -> Result<Message, WireError> {
        loop {
            if let Some(msg) = self.codec.next_message(&mut self.buf)? {
                return Ok(msg);
            }
            self.buf.reserve(READ_CHUNK);
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return Err(if self.buf.is_empty() {
                    WireError::Closed
                } else {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection inside a frame").into()
                });
            }
        }
    }

    /// The reply to request `req`, skipping the pushes that come before it
    /// (PRESENCE_PUSH, ITEM_PUSH, DELETED_PUSH). An ERROR for `req`, or for
    /// no request (`req` 0), is a [`WireError::Server`]; anything else, a
    /// reply to another request included, is [`WireError::Unexpected`].
    pub async fn reply(&mut self, req: u64) -> Result<Message, WireError> {
        loop {
            match self.recv().await? {
                Message::PresencePush { .. } | Message::ItemPush(_) | Message::DeletedPush { .. } => {}
                Message::Error { req: about, code, message } if about == req || about == 0 => {
                    return Err(WireError::Server { req: about, code, message })
                }
                // 0 is no request's id: nothing answers it.
                msg if req != 0 && msg.req() == req => return Ok(msg),
                other => return Err(WireError::Unexpected(Box::new(other))),
            }
        }
    }
}

/// The sending half: frames are encoded into one buffer, reused for the
/// life of the connection, and written by [`flush`](Self::flush).
pub struct Writer {
    write: OwnedWriteHalf,
    buf: BytesMut,
    next_req: u64,
}

impl Writer {
    pub fn new(write: OwnedWriteHalf) -> Self {
        Self { write, buf: BytesMut::new(), next_req: 0 }
    }

    /// A fresh request id: 1, 2, 3… (never 0, which an ERROR about no
    /// request carries, SPEC.md §4.3). Ids the caller picks itself are not
    /// checked against these.
    pub fn next_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// Encodes `msg` into the buffer, to go out with the next flush. Only a
    /// frame over the protocol's limit fails, leaving the buffer as it was.
    pub fn feed(&mut self, msg: &Message) -> Result<(), WireError> {
        Ok(encode_frame(msg, &mut self.buf)?)
    }

    /// Encodes a BATCH_HEARTBEAT of `entries` (strictly ascending session
    /// ids) into the buffer, bit-packed in place ([`encode_batch`]).
    pub fn feed_batch(&mut self, entries: &[BatchEntry]) -> Result<(), WireError> {
        encode_batch(entries, &mut self.buf).map(drop)
    }

    /// Bytes fed and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything fed, in one write; returns how many bytes that was.
    /// Not cancel safe: cancelled, part of the buffer may have been written.
    pub async fn flush(&mut self) -> Result<usize, WireError> {
        let n = self.buf.len();
        let written = self.write.write_all(&self.buf).await;
        // Cleared either way: after an error the connection is done.
        self.buf.clear();
        written?;
        Ok(n)
    }

    /// Feeds `msg` and flushes; returns the bytes written (anything fed
    /// before included).
    pub async fn send(&mut self, msg: &Message) -> Result<usize, WireError> {
        self.feed(msg)?;
        self.flush().await
    }

    /// Sends a BATCH_HEARTBEAT of `entries`; returns the bytes written.
    /// The server answers a good batch with nothing.
    pub async fn batch(&mut self, entries: &[BatchEntry]) -> Result<usize, WireError> {
        self.feed_batch(entries)?;
        self.flush().await
    }

    /// Writes `bytes` as they are, after anything fed: frames encoded once
    /// and sent many times, or malformed input on purpose.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if !self.buf.is_empty() {
            self.flush().await?;
        }
        Ok(self.write.write_all(bytes).await?)
    }

    /// Flushes, then closes the sending direction (FIN); the peer's frames
    /// can still be read.
    pub async fn shutdown(&mut self) -> Result<(), WireError> {
        self.flush().await?;
        Ok(self.write.shutdown().await?)
    }
}

/// One TCP connection speaking protocol v1 frames.
pub struct Connection {
    reader: Reader,
    writer: Writer,
}

impl Connection {
    /// Connects, with Nagle's algorithm off (frames are small and latency
    /// is what a peer measures). Sends nothing: see [`hello`](Self::hello).
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, WireError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps a stream connected by the caller (from a chosen source
    /// address, with chosen buffer sizes…), options untouched.
    pub fn from_stream(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        Self { reader: Reader::new(read), writer: Writer::new(write) }
    }

    /// The two halves, for a reader task and a writer task.
    pub fn into_split(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }

    pub fn reader(&mut self) -> &mut Reader {
        &mut self.reader
    }

    pub fn writer(&mut self) -> &mut Writer {
        &mut self.writer
    }

    /// Sends HELLO (protocol [`VERSION`], device [`Device::Desktop`]) and
    /// waits for WELCOME. A refusal is the server's ERROR
    /// ([`WireError::Server`]), after which the server closes.
    pub async fn hello(&mut self, token: Bytes, role: Role, want_udp: bool, resume: u64) -> Result<Welcome, WireError> {
        self.handshake(Hello { version: VERSION, role, device: Device::Desktop, want_udp, resume, token }).await
    }

    /// Sends `hello` as it is and waits for WELCOME.
    pub async fn handshake(&mut self, hello: Hello) -> Result<Welcome, WireError> {
        self.writer.send(&Message::Hello(hello)).await?;
        match self.reader.recv().await? {
            Message::Welcome(welcome) => Ok(welcome),
            Message::Error { req, code, message } => Err(WireError::Server { req, code, message }),
            other => Err(WireError::Unexpected(Box::new(other))),
        }
    }

    /// Sends the request `build` makes around a fresh id
    /// ([`next_req`](Writer::next_req)) and returns its reply, as
    /// [`Reader::reply`] finds it.
    pub async fn request(&mut self, build: impl FnOnce(u64) -> Message) -> Result<Message, WireError> {
        let req = self.writer.next_req();
        self.writer.send(&build(req)).await?;
        self.reader.reply(req).await
    }

    /// A gateway's OPEN of `entries` (at most `limits::MAX_BATCH`): the new
    /// sessions, one per entry in the same order.
    pub async fn open(&mut self, req: u64, entries: Vec<OpenEntry>) -> Result<Vec<u64>, WireError> {
        let count = entries.len();
        self.writer.send(&Message::Open { req, entries }).await?;
        match self.reader.reply(req).await? {
            Message::Opened { sessions, .. } if sessions.len() == count => Ok(sessions),
            other => Err(WireError::Unexpected(Box::new(other))),
        }
    }

    /// The cluster's map (a gateway's request, SPEC.md §14.4).
    pub async fn cluster_map(&mut self) -> Result<crate::route::ClusterMap, WireError> {
        let reply = self.request(|req| Message::ClusterMap { req }).await?;
        crate::route::ClusterMap::from_reply(reply).map_err(|other| WireError::Unexpected(Box::new(other)))
    }

    /// A gateway's CLOSE of its `sessions`, answered by OK.
    pub async fn close(&mut self, req: u64, sessions: Vec<u64>) -> Result<(), WireError> {
        self.writer.send(&Message::Close { req, sessions }).await?;
        match self.reader.reply(req).await? {
            Message::Ok { .. } => Ok(()),
            other => Err(WireError::Unexpected(Box::new(other))),
        }
    }

    /// See [`Reader::recv`].
    pub async fn recv(&mut self) -> Result<Message, WireError> {
        self.reader.recv().await
    }

    /// See [`Writer::next_req`].
    pub fn next_req(&mut self) -> u64 {
        self.writer.next_req()
    }

    /// See [`Writer::feed`].
    pub fn feed(&mut self, msg: &Message) -> Result<(), WireError> {
        self.writer.feed(msg)
    }

    /// See [`Writer::flush`].
    pub async fn flush(&mut self) -> Result<usize, WireError> {
        self.writer.flush().await
    }

    /// See [`Writer::send`].
    pub async fn send(&mut self, msg: &Message) -> Result<usize, WireError> {
        self.writer.send(msg).await
    }

    /// See [`Writer::batch`].
    pub async fn batch(&mut self, entries: &[BatchEntry]) -> Result<usize, WireError> {
        self.writer.batch(entries).await
    }

    /// See [`Writer::send_raw`].
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.writer.send_raw(bytes).await
    }

    /// See [`Writer::shutdown`].
    pub async fn shutdown(&mut self) -> Result<(), WireError> {
        self.writer.shutdown().await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use heartline_proto::{Batch, Heartbeat, PresenceEntry, Status};
    use tokio::net::TcpListener;

    use super::*;

    /// A connection and the raw peer socket at its other end.
    async fn pair() -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conn, accepted) = tokio::join!(Connection::connect(addr), listener.accept());
        (conn.unwrap(), accepted.unwrap().0)
    }

    fn frame(msg: &Message) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_frame(msg, &mut buf).unwrap();
        buf
    }

    /// Reads exactly `n` bytes from the peer.
    async fn read_exactly(peer: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut got)).await.unwrap().unwrap();
        got
    }

    /// A WELCOME as a test server sends it (session 42).
    pub(crate) fn welcome() -> Welcome {
        Welcome {
            version: VERSION,
            session: 42,
            heartbeat_interval_ms: 30_000,
            ttl_ms: 90_000,
            server_time_ms: 1,
            max_frame: 65_536,
            udp_port: 0,
            udp_key: [0; 16],
        }
    }

    fn push() -> Message {
        let entry = PresenceEntry { user: 7, status: Status::Away, version: 3, last_seen_ms: 9, text: "".into() };
        Message::PresencePush { entries: vec![entry] }
    }

    #[tokio::test]
    async fn fed_frames_go_out_together_in_one_flush() {
        let (mut conn, mut peer) = pair().await;
        let msgs = [Message::Stats { req: 1 }, Message::Bye, Message::Live { req: 2, on: true }];
        for msg in &msgs {
            conn.feed(msg).unwrap();
        }
        let expected: Vec<u8> = msgs.iter().flat_map(|m| frame(m).to_vec()).collect();
        assert_eq!(conn.writer().buffered(), expected.len());
        assert_eq!(conn.flush().await.unwrap(), expected.len());
        assert_eq!(conn.writer().buffered(), 0);
        assert_eq!(read_exactly(&mut peer, expected.len()).await, expected);
        // The buffer is reused: a send after a flush carries only its frame.
        let hb = Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None });
        assert_eq!(conn.send(&hb).await.unwrap(), 3);
        assert_eq!(read_exactly(&mut peer, 3).await, [0x02, 0x10, 0x00]);
    }

    #[tokio::test]
    async fn recv_decodes_frames_split_anywhere_and_is_cancel_safe() {
        let (mut conn, mut peer) = pair().await;
        let mut bytes = frame(&Message::Ok { req: 300 });
        bytes.extend_from_slice(&frame(&push()));
        let (first, rest) = bytes.split_at(2);
        peer.write_all(first).await.unwrap();
        // Times out inside the first frame: nothing read may be lost.
        assert!(tokio::time::timeout(Duration::from_millis(50), conn.recv()).await.is_err());
        peer.write_all(rest).await.unwrap();
        assert_eq!(conn.recv().await.unwrap(), Message::Ok { req: 300 });
        assert_eq!(conn.recv().await.unwrap(), push());
    }

    #[tokio::test]
    async fn the_end_of_the_stream_is_closed_between_frames_and_an_error_inside_one() {
        let (mut conn, mut peer) = pair().await;
        peer.write_all(&frame(&Message::Bye)).await.unwrap();
        drop(peer);
        assert_eq!(conn.recv().await.unwrap(), Message::Bye);
        assert!(matches!(conn.recv().await, Err(WireError::Closed)));

        let (mut conn, mut peer) = pair().await;
        peer.write_all(&frame(&Message::Ok { req: 1 })[..2]).await.unwrap();
        drop(peer);
        let err = conn.recv().await.unwrap_err();
        assert!(
            matches!(&err, WireError::Frame(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
    }

    /// What a received byte string must fail with.
    type Expected = fn(&FrameError) -> bool;

    #[tokio::test]
    async fn bad_frames_are_typed() {
        let cases: [(&[u8], Expected); 3] = [
            (&[0x00], |e| matches!(e, FrameError::Malformed)),
            (&[0x80, 0x80, 0x80, 0x01], |e| matches!(e, FrameError::TooLarge)),
            (&[0x01, 0x7f], |e| matches!(e, FrameError::Decode(d) if d.code == ErrorCode::UnknownType)),
        ];
        for (bytes, expected) in cases {
            let (mut conn, mut peer) = pair().await;
            peer.write_all(bytes).await.unwrap();
            match conn.recv().await {
                Err(WireError::Frame(e)) => assert!(expected(&e), "{bytes:02x?}: {e:?}"),
                other => panic!("{bytes:02x?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn hello_returns_the_welcome_or_the_servers_error() {
        let token = Bytes::from_static(b"token");
        let (mut conn, mut peer) = pair().await;
        let hello = Hello {
            version: VERSION,
            role: Role::Gateway,
            device: Device::Desktop,
            want_udp: true,
            resume: 5,
            token: token.clone(),
        };
        let sent = frame(&Message::Hello(hello));
        let server = async {
            assert_eq!(read_exactly(&mut peer, sent.len()).await, sent);
            peer.write_all(&frame(&Message::Welcome(welcome()))).await.unwrap();
        };
        let (got, ()) = tokio::join!(conn.hello(token.clone(), Role::Gateway, true, 5), server);
        assert_eq!(got.unwrap(), welcome());

        let (mut conn, mut peer) = pair().await;
        let refusal = Message::Error { req: 0, code: ErrorCode::BadToken as u16, message: "no".into() };
        peer.write_all(&frame(&refusal)).await.unwrap();
        let err = conn.hello(token, Role::Client, false, 0).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::BadToken), "{err:?}");
    }

    #[tokio::test]
    async fn open_and_close_skip_pushes_and_check_the_reply() {
        let (mut conn, mut peer) = pair().await;
        let entries: Vec<OpenEntry> =
            [10, 11].map(|user| OpenEntry { user, device: Device::Mobile, status: Status::Online }).to_vec();
        let open = frame(&Message::Open { req: 1, entries: entries.clone() });
        let close = frame(&Message::Close { req: 2, sessions: vec![100] });
        let server = async {
            assert_eq!(read_exactly(&mut peer, open.len()).await, open);
            peer.write_all(&frame(&push())).await.unwrap();
            peer.write_all(&frame(&Message::Opened { req: 1, sessions: vec![100, 101] })).await.unwrap();
            assert_eq!(read_exactly(&mut peer, close.len()).await, close);
            peer.write_all(&frame(&Message::Ok { req: 2 })).await.unwrap();
            // One session for two entries is not an answer to the OPEN.
            peer.write_all(&frame(&Message::Opened { req: 3, sessions: vec![102] })).await.unwrap();
            let error = Message::Error { req: 4, code: ErrorCode::NotFound as u16, message: "gone".into() };
            peer.write_all(&frame(&error)).await.unwrap();
            peer
        };
        let client = async {
            assert_eq!(conn.open(1, entries.clone()).await.unwrap(), [100, 101]);
            conn.close(2, vec![100]).await.unwrap();
            let short = conn.open(3, entries).await.unwrap_err();
            assert!(matches!(&short, WireError::Unexpected(m) if matches!(**m, Message::Opened { .. })), "{short:?}");
            conn.close(4, vec![101]).await.unwrap_err()
        };
        let (_peer, err) = tokio::join!(server, client);
        assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err:?}");
    }

    #[tokio::test]
    async fn batches_are_the_frames_the_codec_makes_with_any_prefix_length() {
        let statuses = [None, Some(Status::Away), None, Some(Status::Busy)];
        let sets: Vec<Vec<BatchEntry>> = vec![
            vec![],
            vec![(7, Some(Status::Away))],
            (1..=200).map(|id| (id, None)).collect(),
            // Gaps of 20 bits: a body of 2.5 KiB (a 2-byte length prefix),
            // then one over 16 KiB (3 bytes).
            (0..1_000u64).map(|i| (1 + i * 1_000_003, statuses[i as usize % 4])).collect(),
            (0..10_000u64).map(|i| (1 + i * 1_000_003, statuses[i as usize % 4])).collect(),
        ];
        let mut prefixes = Vec::new();
        for entries in &sets {
            let expected = frame(&Message::BatchHeartbeat(Batch::encode(entries).unwrap()));
            let mut dst = BytesMut::from(&b"kept"[..]);
            assert_eq!(encode_batch(entries, &mut dst).unwrap(), expected.len());
            assert_eq!(&dst[..4], b"kept");
            assert_eq!(dst[4..], expected[..]);
            prefixes.push(varint::get(&expected).unwrap().1);
        }
        assert_eq!(prefixes, [1, 1, 1, 2, 3]);

        let mut dst = BytesMut::from(&b"kept"[..]);
        assert!(matches!(encode_batch(&[(2, None), (1, None)], &mut dst), Err(WireError::Batch(_))));
        assert!(matches!(
            encode_batch(&[(2, Some(Status::Offline))], &mut dst),
            Err(WireError::Batch(BatchError::OfflineStatus))
        ));
        assert_eq!(&dst[..], b"kept", "a refused batch leaves the buffer as it was");

        let (mut conn, mut peer) = pair().await;
        let sent = conn.batch(&sets[4]).await.unwrap();
        let expected = frame(&Message::BatchHeartbeat(Batch::encode(&sets[4]).unwrap()));
        assert_eq!(sent, expected.len());
        assert_eq!(read_exactly(&mut peer, sent).await, expected);
    }

    #[tokio::test]
    async fn raw_bytes_go_out_as_they_are_after_what_was_fed() {
        let (mut conn, mut peer) = pair().await;
        conn.feed(&Message::Bye).unwrap();
        conn.send_raw(&[0xff, 0xff, 0x7f]).await.unwrap();
        assert_eq!(read_exactly(&mut peer, 5).await, [0x01, 0x03, 0xff, 0xff, 0x7f]);
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn the_halves_work_from_two_tasks() {
        let (conn, peer) = pair().await;
        let (mut reader, mut writer) = conn.into_split();
        let (mut peer_read, mut peer_write) = peer.into_split();
        // An echo peer: every byte the writer sends comes back to the reader.
        let echo = tokio::spawn(async move { tokio::io::copy(&mut peer_read, &mut peer_write).await });
        let sending = tokio::spawn(async move {
            for _ in 0..100 {
                let req = writer.next_req();
                writer.send(&Message::Ok { req }).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        for req in 1..=100 {
            assert_eq!(reader.recv().await.unwrap(), Message::Ok { req });
        }
        sending.await.unwrap();
        assert!(matches!(reader.recv().await, Err(WireError::Closed)));
        echo.await.unwrap().unwrap();
    }
}
