//! The client SDK: an async (tokio) client of the heartline protocol.
//!
//! Owns the application-facing API — connecting, presence, the feed — over
//! one background task per [`Client`] that owns the socket, heartbeats on
//! absolute deadlines (over UDP when granted), matches replies to requests
//! by `req` (they may come out of order, SPEC.md §4.3), routes pushes to
//! streams, and reconnects with jittered exponential back-off, resuming the
//! session inside its grace window and restoring the status, the watch set
//! and LIVE. It must not know anything about the server's internals: it
//! speaks only what `protocol-spec/SPEC.md` specifies.
//!
//! # Layout
//!
//! - [`Client`] (this file) — the application-facing handle and its calls.
//! - `task` — the background task: socket, heartbeats, reconnects, routing.
//! - `mailbox` — the watch and live streams handed to the application.
//! - `error` — [`ClientError`].
//! - [`tls`] — TLS: which certificates to trust ([`Tls`]), `tls://host:port`.
//! - [`wire`] — the low-level connection: protocol frames over TCP, for tests,
//!   load generators and gateways that shape every frame themselves.
//! - [`route`] — the cluster map a gateway reads ([`route::ClusterMap`]).
//!
//! # Clusters
//!
//! Against a cluster of servers (SPEC.md §14) give the client several
//! addresses ([`ClientConfig::with_seeds`]): it tries them in order, on the
//! first connection and on every reconnection. A server that does not own
//! the user answers REDIRECT; the client follows it to the owner's `addr`,
//! or over TLS to its `tls` address (at most [`ClientConfig::max_redirects`]
//! in a row) and remembers the
//! owner for its reconnections until connecting to it fails — then it goes
//! back to the seeds, one of which redirects it to the new owner. A gateway
//! is never redirected: it reads the map with [`Client::cluster_map`] (or
//! [`wire::Connection::cluster_map`]) and sends each server its own users,
//! found with [`route::ClusterMap::owner_of`].
//!
//! The protocol's types are re-exported as [`proto`] (`heartline-proto`), so
//! an application needs only this crate. This crate must not depend on the
//! daemon or its store, HTTP or CLI crates.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use heartline_client::proto::Status;
//! use heartline_client::{Client, ClientConfig};
//!
//! # async fn run() -> Result<(), heartline_client::ClientError> {
//! let token = heartline_client::proto::auth::from_text("…hex from `heartline token --user 42`…").unwrap_or_default();
//! let client = Client::connect(ClientConfig::new("127.0.0.1:7400", token)).await?;
//! client.set_status(Status::Busy, "in a meeting").await?;
//! let mut friends = client.watch(&[7, 8, 9]).await?;
//! while let Some(entry) = friends.next().await {
//!     println!("user {} is {:?} (v{})", entry.user, entry.status, entry.version);
//! }
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]

mod error;
mod mailbox;
pub mod route;
mod task;
pub mod tls;
pub mod wire;

pub use heartline_proto as proto;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

pub use error::ClientError;
pub use mailbox::{LiveEvent, LiveStream, WatchStream};
pub use tls::Tls;

use heartline_proto::{
    limits, Cursor, Device, GraphOp, Item, Message, PresenceEntry, Role, Source, Stats, Status, Welcome,
};
use mailbox::{LiveQueue, Mailbox, WatchQueue};
use task::{Command, Subscriber, Task};

/// How long to wait between reconnection attempts.
///
/// The first attempt comes after a random delay in `[0, initial]`, well within
/// the server's grace window so that the session is resumed (SPEC.md §5.6);
/// attempt `n` after one in `[c/2, c]` with `c = min(max, initial × 2^n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(200), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The delay before attempt `failed + 1`, after `failed` failed attempts.
    pub fn delay(&self, failed: u32) -> Duration {
        let cap = self.initial.saturating_mul(1 << failed.min(20)).min(self.max);
        let low = if failed == 0 { Duration::ZERO } else { cap / 2 };
        let spread = (cap - low).as_millis() as u64;
        low + Duration::from_millis(fastrand::u64(0..=spread))
    }
}

/// How to connect. `ClientConfig::new(addr, token)` fills in the rest.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's TCP address, `host:port`, or `tls://host:port` for its
    /// TLS listener (the system's certificate store is trusted unless
    /// [`tls`](Self::tls) says otherwise).
    pub addr: String,
    /// TLS, with these trust settings (whatever the address's form).
    pub tls: Option<Tls>,
    /// Further addresses, tried in order after `addr` when it cannot be
    /// reached (on the first connection and on reconnections): the other
    /// servers of a cluster.
    pub seeds: Vec<String>,
    /// REDIRECTs followed in a row before the attempt counts as failed
    /// (SPEC.md §14.3).
    pub max_redirects: u32,
    /// The token, passed through unchanged (SPEC.md §12.1).
    pub token: Bytes,
    /// [`Role::Client`] holds one session of the token's user and heartbeats
    /// it; [`Role::Gateway`] has no session of its own (it reads presence as
    /// an unrelated user would, §6.3).
    pub role: Role,
    pub device: Device,
    /// Heartbeat over UDP when the server grants it.
    pub want_udp: bool,
    /// A session to resume on the first connection (0: a new session), for
    /// an application that restarts within the grace window.
    pub resume: u64,
    /// `None`: no reconnection; a lost connection closes the client.
    pub reconnect: Option<Backoff>,
    /// For TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// For the reply to each request.
    pub request_timeout: Duration,
    /// Live events a [`LiveStream`] holds before it turns them into a
    /// [`LiveEvent::Gap`].
    pub live_backlog: usize,
}

impl ClientConfig {
    pub fn new(addr: impl Into<String>, token: impl Into<Bytes>) -> Self {
        Self {
            addr: addr.into(),
            seeds: Vec::new(),
            max_redirects: 3,
            tls: None,
            token: token.into(),
            role: Role::Client,
            device: Device::Unknown,
            want_udp: false,
            resume: 0,
            reconnect: Some(Backoff::default()),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            live_backlog: 4_096,
        }
    }

    /// A client of a cluster: `addrs` (at least one) are tried in order.
    ///
    /// ```
    /// use heartline_client::ClientConfig;
    /// let config = ClientConfig::with_seeds(["10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400"], b"token".to_vec());
    /// assert_eq!(config.addr, "10.0.0.1:7400");
    /// assert_eq!(config.seeds, ["10.0.0.2:7400", "10.0.0.3:7400"]);
    /// ```
    pub fn with_seeds<S: Into<String>>(addrs: impl IntoIterator<Item = S>, token: impl Into<Bytes>) -> Self {
        let mut addrs = addrs.into_iter().map(Into::into);
        let mut config = Self::new(addrs.next().unwrap_or_default(), token);
        config.seeds = addrs.collect();
        config
    }
}

impl std::fmt::Debug for ClientConfig {
    /// Leaves the token out: debug output ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("addr", &self.addr)
            .field("seeds", &self.seeds)
            .field("tls", &self.tls)
            .field("role", &self.role)
            .field("device", &self.device)
            .field("want_udp", &self.want_udp)
            .field("resume", &self.resume)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

/// Where the connection stands.
#[derive(Clone, Debug)]
pub enum State {
    /// Established. `welcome.session` is the session id (a gateway's id for a
    /// gateway); `resumed` says whether WELCOME named the session asked for in
    /// `resume`, which is how SPEC.md §6.7 signals a resumption.
    Connected { welcome: Welcome, resumed: bool },
    /// The connection was lost; attempt number `attempt` is under way or waiting.
    Reconnecting { attempt: u32 },
    /// For good: `None` after [`Client::close`] or once every handle is gone,
    /// else the error that made it give up.
    Closed(Option<Arc<ClientError>>),
}

/// A connection to a heartline server. Cheap to clone; the connection ends
/// when [`close`](Self::close) is called, or when every clone and every
/// stream is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    /// Numbered from 1: `req` 0 could not be told from an ERROR tied to no
    /// request (§4.3).
    next_req: Arc<AtomicU64>,
    state: watch::Receiver<State>,
    request_timeout: Duration,
    live_backlog: usize,
    /// The address of the current (or last) connection, the task's to set.
    addr: Arc<std::sync::Mutex<String>>,
}

fn route_addr(addr: &std::sync::Mutex<String>) -> String {
    addr.lock().map_or_else(|e| e.into_inner().clone(), |a| a.clone())
}

impl Client {
    /// Connects and authenticates. The first connection is made here, so a
    /// refused token or an unreachable server is reported at once:
    ///
    /// ```no_run
    /// use heartline_client::{Client, ClientConfig, ClientError};
    /// use heartline_proto::ErrorCode;
    ///
    /// # async fn run() {
    /// match Client::connect(ClientConfig::new("127.0.0.1:7400", vec![0u8; 34])).await {
    ///     Err(ClientError::Server { code: ErrorCode::BadToken, message }) => eprintln!("refused: {message}"),
    ///     Err(e) => eprintln!("cannot connect: {e}"),
    ///     Ok(client) => println!("session {:?}", client.session()),
    /// }
    /// # }
    /// ```
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let mut route = task::Route::default();
        let conn = task::connect(&config, &mut route, config.resume, Status::Online).await?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let (state_tx, state) =
            watch::channel(State::Connected { welcome: conn.welcome.clone(), resumed: conn.resumed });
        let next_req = Arc::new(AtomicU64::new(1));
        let inner = Inner {
            commands,
            next_req: next_req.clone(),
            state,
            request_timeout: config.request_timeout,
            live_backlog: config.live_backlog,
            addr: route.current.clone(),
        };
        tokio::spawn(Task::new(config, route, receiver, state_tx, next_req).run(conn));
        Ok(Client { inner: Arc::new(inner) })
    }

    /// Follows the connection's state (for example to show "reconnecting").
    /// The receiver starts with the first connection's [`State::Connected`]
    /// already seen: it changes only when that connection is lost, so every
    /// later `Connected` it yields is a reconnection.
    pub fn state(&self) -> watch::Receiver<State> {
        self.inner.state.clone()
    }

    /// The current session id (a gateway's id for a gateway), if connected.
    pub fn session(&self) -> Option<u64> {
        match &*self.inner.state.borrow() {
            State::Connected { welcome, .. } => Some(welcome.session),
            _ => None,
        }
    }

    /// Sends a request and waits for its reply (or the ERROR replacing it).
    async fn request(&self, build: impl FnOnce(u64) -> Message) -> Result<Message, ClientError> {
        let req = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
        let (reply, replied) = oneshot::channel();
        self.inner.commands.send(Command::Request { req, msg: build(req), reply }).map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(self.inner.request_timeout, replied).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// A request answered by OK.
    async fn request_ok(&self, build: impl FnOnce(u64) -> Message) -> Result<(), ClientError> {
        match self.request(build).await? {
            Message::Ok { .. } => Ok(()),
            other => Err(task::unexpected(&other)),
        }
    }

    /// Sets this session's status and the user's status text (empty clears
    /// it). Both are set again after every reconnection, so that a session
    /// the server could not resume gets them back.
    ///
    /// ```no_run
    /// # async fn run(client: heartline_client::Client) -> Result<(), heartline_client::ClientError> {
    /// use heartline_proto::Status;
    /// client.set_status(Status::Away, "back at 3").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_status(&self, status: Status, text: &str) -> Result<(), ClientError> {
        if !status.is_settable() {
            return Err(ClientError::InvalidArgument("offline is reported, never set; close the client instead"));
        }
        self.request_ok(|req| Message::SetStatus { req, session: None, status, text: text.into() }).await
    }

    /// Watches users: the stream yields a snapshot entry per user, then every
    /// change, stale versions dropped. Any number of users (sent in WATCHes
    /// of at most 1,000). The server caps the watch set (LIMIT_EXCEEDED).
    ///
    /// ```no_run
    /// # async fn run(client: heartline_client::Client) -> Result<(), heartline_client::ClientError> {
    /// use futures_util::StreamExt;
    /// let mut watch = client.watch(&[42, 43]).await?;
    /// while let Some(entry) = watch.next().await {
    ///     println!("{} is now {:?} {:?}", entry.user, entry.status, entry.text);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn watch(&self, users: &[u64]) -> Result<WatchStream, ClientError> {
        let mailbox = Mailbox::new(WatchQueue::new(users));
        let commands = &self.inner.commands;
        // Subscribed before the WATCH is sent, so no push is missed.
        commands.send(Command::Subscribe(Subscriber::Watch(mailbox.clone()))).map_err(|_| ClientError::Closed)?;
        let stream = WatchStream::new(mailbox, commands.clone());
        for chunk in users.chunks(limits::MAX_IDS) {
            match self.request(|req| Message::Watch { req, users: chunk.to_vec() }).await? {
                Message::Presence { .. } => {}
                other => return Err(task::unexpected(&other)),
            }
        }
        Ok(stream)
    }

    /// Stops watching users, in every stream of this client.
    pub async fn unwatch(&self, users: &[u64]) -> Result<(), ClientError> {
        for chunk in users.chunks(limits::MAX_IDS) {
            self.request_ok(|req| Message::Unwatch { req, users: chunk.to_vec() }).await?;
        }
        Ok(())
    }

    /// The presence of users, one entry per user in request order, without
    /// watching them. Any number of users.
    pub async fn query(&self, users: &[u64]) -> Result<Vec<PresenceEntry>, ClientError> {
        let mut all = Vec::with_capacity(users.len());
        for chunk in users.chunks(limits::MAX_IDS) {
            match self.request(|req| Message::Query { req, users: chunk.to_vec() }).await? {
                Message::Presence { entries, .. } => all.extend(entries),
                other => return Err(task::unexpected(&other)),
            }
        }
        Ok(all)
    }

    /// The cluster's map, for a gateway (a client gets FORBIDDEN): the
    /// members and, through [`route::ClusterMap::owner_of`], who owns each
    /// user. A server alone answers with itself.
    pub async fn cluster_map(&self) -> Result<route::ClusterMap, ClientError> {
        let reply = self.request(|req| Message::ClusterMap { req }).await?;
        route::ClusterMap::from_reply(reply).map_err(|other| task::unexpected(&other))
    }

    /// The address this client connects to: the owner it was redirected
    /// to, or the first seed that answered.
    pub fn addr(&self) -> String {
        route_addr(&self.inner.addr)
    }

    /// Server-wide counters.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        match self.request(|req| Message::Stats { req }).await? {
            Message::StatsReply { stats, .. } => Ok(stats),
            other => Err(task::unexpected(&other)),
        }
    }

    /// Publishes a post; returns its id once it is durable. `kind` is yours
    /// to define. If the connection is lost first the outcome is unknown
    /// ([`ClientError::Disconnected`]): PUBLISH is not idempotent (§10.2).
    ///
    /// ```no_run
    /// # async fn run(client: heartline_client::Client) -> Result<(), heartline_client::ClientError> {
    /// let post = client.post(1, "hello").await?;
    /// client.delete(post).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn post(&self, kind: u8, payload: impl Into<Bytes>) -> Result<u64, ClientError> {
        let payload = payload.into();
        match self.request(|req| Message::Publish { req, kind, payload }).await? {
            Message::Published { post, .. } => Ok(post),
            other => Err(task::unexpected(&other)),
        }
    }

    /// Deletes one of this user's posts (NOT_FOUND for anybody else's).
    pub async fn delete(&self, post: u64) -> Result<(), ClientError> {
        self.request_ok(|req| Message::Delete { req, post }).await
    }

    /// Changes the social graph from this user to `user` (§10.4).
    pub async fn graph(&self, op: GraphOp, user: u64) -> Result<(), ClientError> {
        self.request_ok(|req| Message::Graph { req, op, user }).await
    }

    pub async fn follow(&self, user: u64) -> Result<(), ClientError> {
        self.graph(GraphOp::Follow, user).await
    }

    pub async fn unfollow(&self, user: u64) -> Result<(), ClientError> {
        self.graph(GraphOp::Unfollow, user).await
    }

    pub async fn block(&self, user: u64) -> Result<(), ClientError> {
        self.graph(GraphOp::Block, user).await
    }

    pub async fn unblock(&self, user: u64) -> Result<(), ClientError> {
        self.graph(GraphOp::Unblock, user).await
    }

    /// One page of a timeline, newest first. Only an empty page ends a walk
    /// (§10.3): walk back with `max_id` = the last item's id.
    ///
    /// ```no_run
    /// # async fn run(client: heartline_client::Client) -> Result<(), heartline_client::ClientError> {
    /// use heartline_proto::Cursor;
    /// let mut cursor = Cursor::default();
    /// loop {
    ///     let page = client.home_timeline(cursor, 50).await?;
    ///     let Some(oldest) = page.last() else { break };
    ///     cursor.max_id = Some(oldest.post);
    ///     for item in &page {
    ///         println!("{} by {}: {} bytes", item.post, item.author, item.payload.len());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn timeline(&self, source: Source, cursor: Cursor, limit: u8) -> Result<Vec<Item>, ClientError> {
        if !(1..=limits::MAX_PAGE).contains(&usize::from(limit)) {
            return Err(ClientError::InvalidArgument("a page holds 1 to 100 items"));
        }
        if cursor.since_id.is_some() && cursor.min_id.is_some() {
            return Err(ClientError::InvalidArgument("since_id and min_id exclude each other"));
        }
        match self.request(|req| Message::Timeline { req, source, cursor, limit }).await? {
            Message::Page { items, .. } => Ok(items),
            other => Err(task::unexpected(&other)),
        }
    }

    /// The user's home timeline: followed authors and their own posts.
    pub async fn home_timeline(&self, cursor: Cursor, limit: u8) -> Result<Vec<Item>, ClientError> {
        self.timeline(Source::Home, cursor, limit).await
    }

    /// One author's posts.
    pub async fn author_timeline(&self, author: u64, cursor: Cursor, limit: u8) -> Result<Vec<Item>, ClientError> {
        self.timeline(Source::Author(author), cursor, limit).await
    }

    /// Turns LIVE on: new home-timeline items and deletions as a stream.
    /// LIVE stays on, across reconnections, while any live stream exists;
    /// after a reconnection the stream yields [`LiveEvent::Gap`].
    pub async fn live(&self) -> Result<LiveStream, ClientError> {
        let mailbox = Mailbox::new(LiveQueue::new(self.inner.live_backlog));
        let commands = &self.inner.commands;
        commands.send(Command::Subscribe(Subscriber::Live(mailbox.clone()))).map_err(|_| ClientError::Closed)?;
        let stream = LiveStream::new(mailbox, commands.clone());
        self.request_ok(|req| Message::Live { req, on: true }).await?;
        Ok(stream)
    }

    /// Says BYE — the session ends at once, without a grace window — waits
    /// for the replies still owed, and closes. Streams end.
    pub async fn close(self) -> Result<(), ClientError> {
        let (done, closed) = oneshot::channel();
        self.inner.commands.send(Command::Close(done)).map_err(|_| ClientError::Closed)?;
        // The task also answers when it stopped on its own.
        let _ = closed.await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_small_then_grows_to_its_cap() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        for _ in 0..100 {
            assert!(backoff.delay(0) <= Duration::from_millis(100));
            let third = backoff.delay(3);
            assert!((Duration::from_millis(400)..=Duration::from_millis(800)).contains(&third), "{third:?}");
            let late = backoff.delay(40);
            assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&late), "{late:?}");
        }
    }
}
