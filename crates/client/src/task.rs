//! The background task behind a [`Client`](super::Client): the only owner of
//! the connection.
//!
//! Owns the TCP socket (reads and writes), the UDP socket, the heartbeat
//! ticker, the table of outstanding requests, the watch set and LIVE state,
//! and reconnection with resumption. It must never wait for the application:
//! replies go to oneshot channels and pushes to mailboxes that do not block
//! (see `mailbox`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::codec::FramedRead;

use super::error::ClientError;
use super::mailbox::{LiveBox, LiveEvent, WatchBox};
use super::{ClientConfig, State};
use heartline_proto::{
    encode_frame, limits, udp, varint, HeartbeatState, Hello, MapMember, Message, MessageCodec, Role, Status, Text,
    Welcome, VERSION,
};

/// A heartbeat interval below this (a server may announce any, even 0) is
/// raised to it, so that a misconfigured server cannot make the client spin.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// What a reply channel carries.
pub(super) type Reply = oneshot::Sender<Result<Message, ClientError>>;

/// Something a push goes to.
pub(super) enum Subscriber {
    Watch(Arc<WatchBox>),
    Live(Arc<LiveBox>),
}

/// What the handles ask of the task.
pub(super) enum Command {
    /// Send `msg` (which carries `req`) and answer `reply` with its reply.
    Request { req: u64, msg: Message, reply: Reply },
    /// Route pushes to a new stream (sent before the WATCH or LIVE that feeds it).
    Subscribe(Subscriber),
    /// A stream was dropped.
    Forget(Subscriber),
    /// BYE, collect owed replies, stop.
    Close(oneshot::Sender<()>),
}

/// A request the task is waiting on a reply for.
struct Pending {
    /// `None` for requests the task makes itself (watching again after a
    /// reconnection, unwatching for a dropped stream).
    reply: Option<Reply>,
    /// A WATCH: its snapshot goes to the watch streams.
    watch: bool,
}

/// How a connection ended.
enum Flow {
    /// Lost: reconnect, not before `not_before` if set (GOAWAY).
    Lost { not_before: Option<Instant>, why: ClientError },
    /// The client stops for good.
    Exit(Exit),
}

enum Exit {
    /// Closed by the application (`Some`: it waits to hear it is done), or
    /// every handle is gone.
    Closed(Option<oneshot::Sender<()>>),
    /// Reconnecting is off, or pointless (a refused token).
    Failed(ClientError),
}

/// One established connection.
pub(super) struct Conn {
    reader: FramedRead<ReadHalf, MessageCodec>,
    writer: WriteHalf,
    out: BytesMut,
    pub(super) welcome: Welcome,
    pub(super) resumed: bool,
    role: Role,
    welcomed_at: Instant,
    period: Duration,
    beats: HeartbeatState,
    udp: Option<UdpBeats>,
    /// The last fatal ERROR not tied to a request: why the server closes.
    fatal: Option<ClientError>,
}

/// The stream's halves, TCP or TLS alike.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// UDP heartbeats granted in WELCOME (SPEC.md §8).
struct UdpBeats {
    socket: UdpSocket,
    key: udp::Key,
    /// The last sequence number sent; the first datagram carries 1 (§8.3).
    seq: u32,
    buf: BytesMut,
}

/// Where the client connects (SPEC.md §14.3): the owner it was redirected
/// to, while connecting to it works, else the seeds in order.
#[derive(Default)]
pub(super) struct Route {
    /// The owner a REDIRECT named, tried first until it fails.
    target: Option<String>,
    /// The address of the current connection, shown by `Client::addr`.
    pub(super) current: Arc<std::sync::Mutex<String>>,
}

impl Route {
    fn connected(&mut self, addr: &str, redirected: bool) {
        if redirected {
            self.target = Some(addr.to_owned());
        }
        match self.current.lock() {
            Ok(mut current) => addr.clone_into(&mut current),
            Err(e) => addr.clone_into(&mut e.into_inner()),
        }
    }
}

/// Connects to the remembered owner, else to each seed in order, following
/// REDIRECTs (at most `max_redirects` in a row from each start). `status`
/// is the session's status as last set, which a resumed session keeps. The
/// error is the last attempt's; a refusal not worth retrying (a bad token)
/// ends the search at once.
pub(super) async fn connect(
    config: &ClientConfig,
    route: &mut Route,
    resume: u64,
    status: Status,
) -> Result<Conn, ClientError> {
    if config.token.len() > limits::MAX_TOKEN {
        return Err(ClientError::InvalidArgument("a token has at most 1,024 bytes"));
    }
    let starts: Vec<String> =
        route.target.iter().chain(std::iter::once(&config.addr)).chain(&config.seeds).cloned().collect();
    let mut last = ClientError::Disconnected;
    for start in starts {
        let mut addr = start;
        let mut hops = 0;
        loop {
            let attempt = handshake(config, &addr, resume, status);
            match tokio::time::timeout(config.connect_timeout, attempt).await.unwrap_or(Err(ClientError::Timeout)) {
                Ok(conn) => {
                    route.connected(&addr, hops > 0);
                    return Ok(conn);
                }
                Err(ClientError::Redirected { node, addr: to, .. }) if hops < config.max_redirects => {
                    tracing::debug!(from = %addr, to = %to, node = %node, "redirected");
                    addr = to;
                    hops += 1;
                }
                Err(e) if !e.worth_retrying() => return Err(e),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "cannot connect");
                    if route.target.as_deref() == Some(addr.as_str()) {
                        // The owner is gone or moved: back to the seeds.
                        route.target = None;
                    }
                    last = e;
                    break;
                }
            }
        }
    }
    Err(last)
}

/// Where a REDIRECT sends this client (SPEC.md §14.3): the owner's TCP
/// address, or over TLS its TLS listener (`tls://host:port`, with this
/// client's TLS settings). An owner without a TLS listener is, to a TLS
/// client, a connection loss: it tries its other addresses.
fn redirected(owner: &MapMember, over_tls: bool) -> ClientError {
    let addr = match (over_tls, owner.tls.as_str()) {
        (false, _) => owner.addr.as_str().to_owned(),
        (true, "") => return ClientError::Disconnected,
        (true, tls) => format!("{}{tls}", crate::tls::SCHEME),
    };
    ClientError::Redirected { node: owner.node.as_str().into(), addr }
}

async fn handshake(config: &ClientConfig, addr: &str, resume: u64, status: Status) -> Result<Conn, ClientError> {
    let (hostport, host, tls_scheme) = crate::tls::endpoint(addr);
    let stream = TcpStream::connect(hostport).await?;
    // Heartbeats are 3 bytes: Nagle's algorithm would hold them back.
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let tls = match (&config.tls, tls_scheme) {
        (Some(tls), _) => Some(tls.clone()),
        (None, true) => Some(crate::tls::Tls::system_roots()?),
        (None, false) => None,
    };
    let over_tls = tls.is_some();
    let (reader, mut writer): (ReadHalf, WriteHalf) = match tls {
        Some(tls) => {
            let (reader, writer) = tokio::io::split(tls.connect(host, stream).await?);
            (Box::new(reader), Box::new(writer))
        }
        None => {
            let (reader, writer) = stream.into_split();
            (Box::new(reader), Box::new(writer))
        }
    };
    let hello = Message::Hello(Hello {
        version: VERSION,
        role: config.role,
        device: config.device,
        want_udp: config.want_udp,
        resume,
        token: config.token.clone(),
    });
    let mut out = BytesMut::new();
    encode_frame(&hello, &mut out)?;
    writer.write_all(&out).await?;
    // TLS may hold records back until flushed (a no-op for plain TCP).
    writer.flush().await?;
    out.clear();
    let mut reader = FramedRead::new(reader, MessageCodec::default());
    let welcome = match reader.next().await {
        Some(Ok(Message::Welcome(welcome))) => welcome,
        Some(Ok(Message::Error { code, message, .. })) => return Err(ClientError::server(code, &message)),
        Some(Ok(Message::Redirect { owner, .. })) => return Err(redirected(&owner, over_tls)),
        Some(Ok(other)) => return Err(unexpected(&other)),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ClientError::Disconnected),
    };
    let welcomed_at = Instant::now();
    if welcome.version == 0 || welcome.version > VERSION {
        return Err(ClientError::Protocol(format!("WELCOME version {}", welcome.version)));
    }
    if welcome.max_frame as usize > limits::MAX_FRAME {
        return Err(ClientError::Protocol(format!("WELCOME max_frame {}", welcome.max_frame)));
    }
    *reader.decoder_mut() = MessageCodec::new(welcome.max_frame as usize);
    let udp = match (config.want_udp, welcome.udp_port) {
        (true, port) if port != 0 => udp_socket(peer, port).await.map(|socket| UdpBeats {
            socket,
            key: welcome.udp_key,
            seq: 0,
            buf: BytesMut::new(),
        }),
        _ => None,
    };
    let mut beats = HeartbeatState::new(welcome.heartbeat_interval_ms);
    // A resumed session keeps its status; the heartbeat state starts from it (§7.1).
    let resumed = resume != 0 && welcome.session == resume;
    if resumed {
        beats.status = status;
    }
    Ok(Conn {
        reader,
        writer,
        out,
        period: Duration::from_millis(welcome.heartbeat_interval_ms.into()).max(MIN_HEARTBEAT_INTERVAL),
        welcome,
        resumed,
        role: config.role,
        welcomed_at,
        beats,
        udp,
        fatal: None,
    })
}

/// A UDP socket towards the server's UDP port, or `None` (TCP heartbeats then
/// do the job) if the machine will not give us one.
async fn udp_socket(peer: std::net::SocketAddr, port: u16) -> Option<UdpSocket> {
    let local = if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.connect((peer.ip(), port)).await.ok()?;
    Some(socket)
}

impl Conn {
    /// Appends a frame to the output; refuses one over the server's `max_frame`
    /// (which the server would answer with a fatal FRAME_TOO_LARGE).
    fn queue(&mut self, msg: &Message) -> Result<(), ClientError> {
        let too_large = ClientError::InvalidArgument("the request is larger than the server's max_frame");
        let start = self.out.len();
        encode_frame(msg, &mut self.out).map_err(|_| ClientError::InvalidArgument("the request is over 1 MiB"))?;
        match varint::get(&self.out[start..]) {
            Ok((len, _)) if len <= u64::from(self.welcome.max_frame) => Ok(()),
            _ => {
                self.out.truncate(start);
                Err(too_large)
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.writer.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn send(&mut self, msg: &Message) -> Result<(), ClientError> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Ticks on absolute deadlines from WELCOME: the k-th heartbeat is due k
    /// intervals after it (SPEC.md §5.4). Missed ticks are skipped, not
    /// bunched: the next heartbeat carries the current tick number. A gateway
    /// has no session and sends no heartbeat.
    fn ticker(&self) -> Option<Interval> {
        (self.role == Role::Client).then(|| {
            let mut ticker = tokio::time::interval_at(self.welcomed_at + self.period, self.period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            ticker
        })
    }

    /// The heartbeat of the current tick: a UDP datagram when UDP was
    /// granted, else a TCP HEARTBEAT delta (§7).
    async fn heartbeat(&mut self) -> Result<(), ClientError> {
        let elapsed = self.welcomed_at.elapsed();
        if let Some(udp) = &mut self.udp {
            // When the sequence space is used up, a sender must not wrap (§8.3).
            if let Some(seq) = udp.seq.checked_add(1) {
                udp.buf.clear();
                udp::write_heartbeat(&mut udp.buf, &udp.key, self.welcome.session, seq, None);
                udp.seq = seq;
                if udp.socket.send(&udp.buf).await.is_ok() {
                    return Ok(());
                }
            }
            tracing::debug!("UDP heartbeats unusable; falling back to TCP");
            self.udp = None;
        }
        // Both wrap modulo 2^32, as the state does (§7.1).
        let seq = (elapsed.as_millis() / self.period.as_millis()) as u32;
        let ts = elapsed.as_millis() as u32;
        let hb = self.beats.encode(seq, ts, self.beats.status);
        self.send(&Message::Heartbeat(hb)).await
    }
}

/// Waits for the next tick, or forever without a ticker.
async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A frame the server must not send here (client-close, §4.4).
pub(super) fn unexpected(msg: &Message) -> ClientError {
    ClientError::Protocol(format!("unexpected frame of type 0x{:02x}", msg.type_code()))
}

/// The `req` of a reply frame; `None` for anything that is not a reply.
fn reply_req(msg: &Message) -> Option<u64> {
    match msg {
        Message::Ok { req }
        | Message::Presence { req, .. }
        | Message::StatsReply { req, .. }
        | Message::ClusterMapReply { req, .. }
        | Message::Opened { req, .. }
        | Message::Published { req, .. }
        | Message::Page { req, .. } => Some(*req),
        _ => None,
    }
}

pub(super) struct Task {
    config: ClientConfig,
    route: Route,
    commands: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<State>,
    /// Shared with the handles, so that the task's own requests never reuse
    /// a `req` that is outstanding (§4.3).
    next_req: Arc<AtomicU64>,
    pending: HashMap<u64, Pending>,
    /// Commands that came while there was no connection to send them on.
    backlog: VecDeque<Command>,
    watches: Vec<Arc<WatchBox>>,
    lives: Vec<Arc<LiveBox>>,
    /// The status and text last set, applied again after a reconnection: a
    /// new session starts online, without text.
    status: Option<(Status, Text)>,
    /// The session to resume on the next connection.
    resume: u64,
}

impl Task {
    pub(super) fn new(
        config: ClientConfig,
        route: Route,
        commands: mpsc::UnboundedReceiver<Command>,
        state: watch::Sender<State>,
        next_req: Arc<AtomicU64>,
    ) -> Self {
        Self {
            config,
            route,
            commands,
            state,
            next_req,
            pending: HashMap::new(),
            backlog: VecDeque::new(),
            watches: Vec::new(),
            lives: Vec::new(),
            status: None,
            resume: 0,
        }
    }

    pub(super) async fn run(mut self, mut conn: Conn) {
        loop {
            let flow = match self.established(&mut conn).await {
                Ok(()) => self.serve(&mut conn).await,
                Err(flow) => flow,
            };
            drop(conn);
            self.fail_pending();
            let exit = match flow {
                Flow::Exit(exit) => exit,
                Flow::Lost { not_before, why } => {
                    tracing::debug!(error = %why, "connection lost");
                    match self.reconnect(not_before, why).await {
                        Ok(next) => {
                            conn = next;
                            // Announced here and only here: the first
                            // connection is the state `Client::connect` starts
                            // with, and announcing it again would read as a
                            // reconnection to whoever follows the state.
                            let connected = State::Connected { welcome: conn.welcome.clone(), resumed: conn.resumed };
                            self.state.send_replace(connected);
                            continue;
                        }
                        Err(exit) => exit,
                    }
                }
            };
            return self.finish(exit);
        }
    }

    /// Restores on a new connection (announced by `run`) what the previous
    /// one had: the status, the watch set, LIVE; then sends what waited.
    async fn established(&mut self, conn: &mut Conn) -> Result<(), Flow> {
        let lost = |why| Flow::Lost { not_before: None, why };
        self.resume = if conn.role == Role::Client { conn.welcome.session } else { 0 };
        // Also when "resumed": the reference server numbers sessions by slot,
        // so a new session (after a restart, or once the grace window ended)
        // can get the very id asked for. Setting the same status and text
        // again changes nothing others see (§6.4).
        if let Some((status, text)) = self.status.clone() {
            let msg = self.internal(|req| Message::SetStatus { req, session: None, status, text }, false);
            conn.queue(&msg).map_err(lost)?;
        }
        let mut users: Vec<u64> = self.watches.iter().flat_map(|w| w.read(|q| q.users().clone())).collect();
        users.sort_unstable();
        users.dedup();
        for chunk in users.chunks(limits::MAX_IDS) {
            let msg = self.internal(|req| Message::Watch { req, users: chunk.to_vec() }, true);
            conn.queue(&msg).map_err(lost)?;
        }
        if !self.lives.is_empty() {
            let msg = self.internal(|req| Message::Live { req, on: true }, false);
            conn.queue(&msg).map_err(lost)?;
            for live in &self.lives {
                live.update(|q| {
                    q.push(LiveEvent::Gap);
                    true
                });
            }
        }
        conn.flush().await.map_err(lost)?;
        while let Some(cmd) = self.backlog.pop_front() {
            self.on_command(conn, cmd).await?;
        }
        Ok(())
    }

    /// A request of the task's own: registered, not yet sent.
    fn internal(&mut self, build: impl FnOnce(u64) -> Message, watch: bool) -> Message {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        self.pending.insert(req, Pending { reply: None, watch });
        build(req)
    }

    async fn serve(&mut self, conn: &mut Conn) -> Flow {
        let mut ticker = conn.ticker();
        // Set by GOAWAY: stop sending, reconnect at this instant (§4.9).
        let mut draining: Option<Instant> = None;
        loop {
            let step = tokio::select! {
                frame = conn.reader.next() => match frame {
                    Some(Ok(msg)) => self.on_message(conn, msg, &mut draining),
                    Some(Err(e)) => Err(e.into()),
                    None => Err(conn.fatal.take().unwrap_or(ClientError::Disconnected)),
                }
                .map_err(|why| Flow::Lost { not_before: draining, why }),
                cmd = self.commands.recv() => match (cmd, draining) {
                    // Every handle is gone.
                    (None, _) => {
                        self.bye(conn).await;
                        Err(Flow::Exit(Exit::Closed(None)))
                    }
                    (Some(cmd), Some(_)) => self.hold(Some(cmd)).map_err(Flow::Exit),
                    (Some(cmd), None) => self.on_command(conn, cmd).await,
                },
                _ = tick(&mut ticker), if draining.is_none() => {
                    conn.heartbeat().await.map_err(|why| Flow::Lost { not_before: None, why })
                }
                // The delay GOAWAY asked for is over: reconnect now, even if
                // the old connection has not closed yet (§4.9 allows it).
                _ = tokio::time::sleep_until(draining.unwrap_or_else(Instant::now)), if draining.is_some() => {
                    Err(Flow::Lost { not_before: Some(Instant::now()), why: ClientError::Disconnected })
                }
            };
            if let Err(flow) = step {
                return flow;
            }
        }
    }

    /// Keeps a command for the next connection. Closing cannot wait.
    fn hold(&mut self, cmd: Option<Command>) -> Result<(), Exit> {
        match cmd {
            None => Err(Exit::Closed(None)),
            Some(Command::Close(done)) => Err(Exit::Closed(Some(done))),
            Some(cmd) => {
                self.backlog.push_back(cmd);
                Ok(())
            }
        }
    }

    async fn on_command(&mut self, conn: &mut Conn, cmd: Command) -> Result<(), Flow> {
        let lost = |why| Flow::Lost { not_before: None, why };
        match cmd {
            Command::Request { req, msg, reply } => {
                if reply.is_closed() {
                    // The caller gave up (timed out) while it waited in the backlog.
                    return Ok(());
                }
                if let Err(e) = conn.queue(&msg) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                self.note(conn, &msg);
                self.pending.insert(req, Pending { reply: Some(reply), watch: matches!(msg, Message::Watch { .. }) });
                conn.flush().await.map_err(lost)
            }
            Command::Subscribe(Subscriber::Watch(w)) => {
                self.watches.push(w);
                Ok(())
            }
            Command::Subscribe(Subscriber::Live(l)) => {
                self.lives.push(l);
                Ok(())
            }
            Command::Forget(sub) => {
                if let Some(msg) = self.forget(sub) {
                    conn.send(&msg).await.map_err(lost)?;
                }
                Ok(())
            }
            Command::Close(done) => {
                self.bye(conn).await;
                Err(Flow::Exit(Exit::Closed(Some(done))))
            }
        }
    }

    /// Keeps what the next connection has to restore.
    fn note(&mut self, conn: &mut Conn, msg: &Message) {
        match msg {
            Message::SetStatus { status, text, .. } => {
                conn.beats.status = *status;
                self.status = Some((*status, text.clone()));
            }
            Message::Unwatch { users, .. } => {
                for w in &self.watches {
                    w.update(|q| {
                        users.iter().for_each(|&u| q.remove(u));
                        false
                    });
                }
            }
            _ => {}
        }
    }

    /// Drops a stream; returns the UNWATCH or LIVE off it leaves to send.
    fn forget(&mut self, sub: Subscriber) -> Option<Message> {
        match sub {
            Subscriber::Watch(gone) => {
                self.watches.retain(|w| !Arc::ptr_eq(w, &gone));
                let others: HashSet<u64> = self.watches.iter().flat_map(|w| w.read(|q| q.users().clone())).collect();
                let users: Vec<u64> = gone.read(|q| q.users().difference(&others).copied().collect());
                // One stream rarely watches more than MAX_IDS; the rest stays
                // watched until the connection ends, which costs only pushes
                // that no stream takes.
                let users = users.into_iter().take(limits::MAX_IDS).collect::<Vec<_>>();
                (!users.is_empty()).then(|| self.internal(|req| Message::Unwatch { req, users }, false))
            }
            Subscriber::Live(gone) => {
                self.lives.retain(|l| !Arc::ptr_eq(l, &gone));
                self.lives.is_empty().then(|| self.internal(|req| Message::Live { req, on: false }, false))
            }
        }
    }

    fn on_message(&mut self, conn: &mut Conn, msg: Message, draining: &mut Option<Instant>) -> Result<(), ClientError> {
        if let Some(req) = reply_req(&msg) {
            // A reply to no outstanding request is ignored (§4.4).
            if let Some(pending) = self.pending.remove(&req) {
                if let (true, Message::Presence { entries, .. }) = (pending.watch, &msg) {
                    self.offer(entries);
                }
                if let Some(reply) = pending.reply {
                    let _ = reply.send(Ok(msg));
                }
            }
            return Ok(());
        }
        match msg {
            Message::Error { req, code, message } => {
                let error = ClientError::server(code, &message);
                match self.pending.remove(&req) {
                    Some(Pending { reply: Some(reply), .. }) if req != 0 => {
                        let _ = reply.send(Err(error));
                    }
                    _ => {
                        tracing::debug!(%error, "error from the server");
                        if error.code().is_some_and(|c| c.closes()) {
                            conn.fatal = Some(error);
                        }
                    }
                }
            }
            Message::PresencePush { entries } => self.offer(&entries),
            Message::ItemPush(item) => self.live(LiveEvent::Item(item)),
            Message::DeletedPush { post } => self.live(LiveEvent::Deleted { post }),
            Message::Goaway { reconnect_after_ms, .. } if draining.is_none() => {
                // Uniform in [r, 2r] from receipt (§4.9).
                let r = u64::from(reconnect_after_ms);
                let delay = Duration::from_millis(r + fastrand::u64(0..=r));
                *draining = Some(Instant::now() + delay);
                tracing::debug!(?delay, "GOAWAY: reconnecting");
            }
            other => return Err(unexpected(&other)),
        }
        Ok(())
    }

    fn offer(&self, entries: &[heartline_proto::PresenceEntry]) {
        for w in &self.watches {
            w.update(|q| entries.iter().fold(false, |taken, e| q.offer(e) | taken));
        }
    }

    fn live(&self, event: LiveEvent) {
        for l in &self.lives {
            l.update(|q| {
                q.push(event.clone());
                true
            });
        }
    }

    /// BYE, then the replies still owed until the server closes (§4.8).
    async fn bye(&mut self, conn: &mut Conn) {
        if conn.send(&Message::Bye).await.is_err() {
            return;
        }
        let mut draining = None;
        let _ = tokio::time::timeout(self.config.connect_timeout, async {
            while let Some(Ok(msg)) = conn.reader.next().await {
                if self.on_message(conn, msg, &mut draining).is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// The outcome of requests still outstanding on a lost connection is unknown.
    fn fail_pending(&mut self) {
        for (_, pending) in self.pending.drain() {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(ClientError::Disconnected));
            }
        }
    }

    /// Connects again, after `not_before` or a short random delay, then with
    /// jittered exponential back-off. Commands wait meanwhile.
    async fn reconnect(&mut self, not_before: Option<Instant>, why: ClientError) -> Result<Conn, Exit> {
        let Some(backoff) = self.config.reconnect.filter(|_| why.worth_retrying()) else {
            return Err(Exit::Failed(why));
        };
        let mut at = not_before.unwrap_or_else(|| Instant::now() + backoff.delay(0));
        for attempt in 1.. {
            self.state.send_replace(State::Reconnecting { attempt });
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => break,
                    cmd = self.commands.recv() => self.hold(cmd)?,
                }
            }
            let status = self.status.as_ref().map_or(Status::Online, |(s, _)| *s);
            match connect(&self.config, &mut self.route, self.resume, status).await {
                Ok(conn) => return Ok(conn),
                Err(e) if !e.worth_retrying() => return Err(Exit::Failed(e)),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "reconnect failed");
                    at = Instant::now() + backoff.delay(attempt);
                }
            }
        }
        unreachable!("the attempts never run out")
    }

    /// The client is done: everything waiting learns it, streams end.
    fn finish(mut self, exit: Exit) {
        self.fail_pending();
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            self.backlog.push_back(cmd);
        }
        let mut done = Vec::new();
        for cmd in self.backlog.drain(..) {
            match cmd {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                Command::Close(tx) => done.push(tx),
                Command::Subscribe(_) | Command::Forget(_) => {}
            }
        }
        self.watches.iter().for_each(|w| w.close());
        self.lives.iter().for_each(|l| l.close());
        let reason = match exit {
            Exit::Closed(tx) => {
                done.extend(tx);
                None
            }
            Exit::Failed(e) => Some(Arc::new(e)),
        };
        self.state.send_replace(State::Closed(reason));
        for tx in done {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use heartline_proto::FrameCodec;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A fake server: answers each connection's HELLO with `answer`.
    async fn server(answer: impl Fn() -> Message + Send + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut peer, _)) = listener.accept().await {
                let mut buf = BytesMut::new();
                // Read the HELLO whole, then answer and keep the socket open a while.
                while FrameCodec::default().decode(&mut buf.clone()).ok().flatten().is_none() {
                    if peer.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        break;
                    }
                }
                let mut out = BytesMut::new();
                encode_frame(&answer(), &mut out).unwrap();
                let _ = peer.write_all(&out).await;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    drop(peer);
                });
            }
        });
        addr
    }

    fn welcome() -> Message {
        Message::Welcome(crate::wire::tests::welcome())
    }

    fn owner(addr: &str, tls: &str) -> MapMember {
        MapMember { node: "owner".into(), addr: addr.into(), ws: "".into(), tls: tls.into() }
    }

    fn redirect(to: &str) -> Message {
        Message::Redirect { version: 5, owner: Box::new(owner(to, "")) }
    }

    #[test]
    fn a_redirect_is_followed_over_the_client_s_transport() {
        let to = |owner: &MapMember, over_tls| match redirected(owner, over_tls) {
            ClientError::Redirected { addr, .. } => Some(addr),
            ClientError::Disconnected => None,
            other => panic!("{other:?}"),
        };
        let both = owner("h:7400", "h:7443");
        assert_eq!(to(&both, false).as_deref(), Some("h:7400"));
        assert_eq!(to(&both, true).as_deref(), Some("tls://h:7443"));
        assert_eq!(to(&owner("h:7400", ""), true), None, "no TLS listener: a loss, the other addresses are tried");
    }

    /// An address nothing listens on.
    async fn dead() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn config(addrs: &[&str]) -> ClientConfig {
        let mut config = ClientConfig::with_seeds(addrs.iter().copied(), b"t".to_vec());
        config.connect_timeout = Duration::from_secs(5);
        config
    }

    use tokio_util::codec::Decoder;

    #[tokio::test]
    async fn seeds_are_tried_in_order_and_redirects_followed_and_remembered() {
        let owner = server(welcome).await;
        let to = owner.clone();
        let other = server(move || redirect(&to)).await;
        let gone = dead().await;
        let mut route = Route::default();
        let conn = connect(&config(&[&gone, &other]), &mut route, 0, Status::Online).await.unwrap();
        assert_eq!(conn.welcome.session, 42);
        assert_eq!(*route.current.lock().unwrap(), owner);
        assert_eq!(route.target.as_deref(), Some(owner.as_str()), "the owner is tried first next time");
        // The owner remembered is dropped once it cannot be reached.
        route.target = Some(gone.clone());
        connect(&config(&[&other]), &mut route, 0, Status::Online).await.unwrap();
        assert_eq!(route.target.as_deref(), Some(owner.as_str()));
    }

    #[tokio::test]
    async fn redirects_in_a_loop_stop_at_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let looping = listener.local_addr().unwrap().to_string();
        drop(listener);
        // A server that redirects to itself: bind it on the same address.
        let me = looping.clone();
        let listener = TcpListener::bind(&looping).await.unwrap();
        let hellos = Arc::new(AtomicU64::new(0));
        let counted = hellos.clone();
        tokio::spawn(async move {
            while let Ok((mut peer, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let mut out = BytesMut::new();
                encode_frame(&redirect(&me), &mut out).unwrap();
                let _ = peer.write_all(&out).await;
            }
        });
        let mut route = Route::default();
        let e = connect(&config(&[&looping]), &mut route, 0, Status::Online).await.err().unwrap();
        assert!(matches!(e, ClientError::Redirected { ref addr, .. } if *addr == looping), "{e:?}");
        assert_eq!(hellos.load(Ordering::Relaxed), 4, "the first HELLO and 3 redirects");
        assert!(e.worth_retrying());
    }
}
