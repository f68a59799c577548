//! `heartline serve`: thin tokio shells around the sans-IO core.
//!
//! Owns sockets, tasks, the clock and the order of startup and shutdown.
//! It decides nothing about presence or the protocol itself: frames go to
//! [`handler`], state to [`heartline_core::presence`], bytes to [`heartline_proto`].
//!
//! Tasks: one accept loop; per connection a read loop ([`conn`]) and a
//! write task; one UDP receive loop per worker ([`udp`]); one ticker that
//! expires sessions every 100 ms, writes last-seen times to the store every
//! second (first reopening the store if a write failed, docs/store.md,
//! "Outages") and archives cold posts every minute; per connection using the
//! feed, a feed task, and a pool of fanout threads ([`feed`]); the HTTP
//! admin listener ([`crate::admin`]) and, under systemd, a watchdog pinger
//! ([`systemd`]). The listening sockets come from systemd when it passes them.
//!
//! Feed state is rebuilt eagerly at start: the social graph and the newest
//! `feed.hot_items` posts of every author are read from the store before the
//! listeners accept anyone (measured in BENCHMARKS.md).

pub mod conn;
pub mod feed;
pub mod handler;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod reload;
pub mod systemd;
pub mod udp;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{UdpKeys, UdpPeer};
use crate::config::Config;
use crate::store::{Store, StoreError};
use heartline_core::presence::{
    entry_for, Change, Presence, PresenceConfig, SessionError, SessionId, View, Viewer, TICK_MS,
};
use heartline_proto::udp::ReplayWindow;
use heartline_proto::{BatchEntry, ErrorCode, GoawayReason, Message, PresenceEntry, Stats, Status};
use metrics::Metrics;
use outbox::{error, Outbox};

/// The wall clock, in unix milliseconds: the only clock the core ever sees.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How long a shutdown waits for tasks to drop their share of the state.
const TASKS_GONE: Duration = Duration::from_secs(2);
/// Threads that fan posts out to inboxes and live connections.
const FANOUT_WORKERS: usize = 2;
/// How often presence changes waiting for the store are written.
const LAST_SEEN_FLUSH: Duration = Duration::from_secs(1);
/// Last-seen times per store batch. A shutdown with 10M users online writes
/// all of theirs: as one batch it held ~2 GB at once and took a minute.
const LAST_SEEN_BATCH: usize = 100_000;
/// What GOAWAY asks clients to wait before reconnecting (they add jitter).
const RECONNECT_AFTER_MS: u32 = 1_000;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read or create the secret: {0}")]
    Secret(std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot use the sockets passed by systemd (LISTEN_FDS): {0}")]
    Inherited(std::io::Error),
}

/// What the server knows about one live connection.
pub struct ConnEntry {
    pub outbox: Arc<Outbox>,
    pub viewer: Viewer,
    /// A client connection's session.
    pub session: Option<SessionId>,
    /// A gateway that takes UDP batches: its replay window.
    pub udp_gateway: Option<Mutex<ReplayWindow>>,
}

/// State every task shares.
pub struct Shared {
    pub config: Config,
    pub presence_config: PresenceConfig,
    pub presence: Presence,
    /// Token secrets; rotated on SIGHUP.
    pub keyring: reload::Keys,
    /// The limits a SIGHUP may change; read these, not `config.limits`.
    pub limits: reload::Limits,
    pub udp_keys: UdpKeys,
    /// Posts, the social graph (also presence's block list) and timelines.
    pub feed: heartline_core::feed::Feed,
    /// Group commit of posts.
    pub committer: crate::store::Committer,
    /// Users with LIVE on, and their connections.
    pub live: DashMap<u64, Vec<u32>>,
    pub fanout: feed::FanoutQueue,
    pub store: Store,
    pub conns: DashMap<u32, ConnEntry>,
    /// Connections open now, accepted and not yet closed (HELLO or not), in all and per address.
    pub admission: Arc<net::Admission>,
    next_conn: AtomicU32,
    pub metrics: Metrics,
    /// 0 when UDP is off.
    pub udp_port: u16,
    /// Cancelled when the server stops for good: every loop ends.
    pub stop: CancellationToken,
}

impl Shared {
    fn next_conn_id(&self) -> u32 {
        loop {
            let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    pub fn heartbeat_interval_ms(&self) -> u32 {
        u32::try_from(self.config.presence.heartbeat_interval.as_millis()).unwrap_or(u32::MAX)
    }

    fn register(
        &self,
        id: u32,
        outbox: Arc<Outbox>,
        viewer: Viewer,
        session: &Option<SessionId>,
        peer: UdpPeer,
        udp: bool,
    ) {
        let udp_gateway = (udp && peer == UdpPeer::Gateway).then(|| Mutex::new(ReplayWindow::default()));
        self.conns.insert(id, ConnEntry { outbox, viewer, session: *session, udp_gateway });
    }

    /// Pushes a change to every connection watching the user, as each may see it.
    pub fn deliver(&self, change: Option<Change>) {
        let Some(change) = change else { return };
        let view = change.view();
        for conn in &change.watchers {
            if let Some(entry) = self.conns.get(conn) {
                if heartline_core::presence::blocked(entry.viewer, change.user, &self.feed) {
                    continue;
                }
                self.metrics.watch_events.inc();
                if entry.outbox.presence(entry_for(entry.viewer, change.user, &view, &self.feed)) {
                    self.metrics.watch_events_coalesced.inc();
                }
            }
        }
    }

    /// A user's presence for `viewer`: from memory while they have a
    /// session, else offline with the last seen the store kept.
    pub fn entry(&self, viewer: Viewer, user: u64, _now_ms: u64) -> PresenceEntry {
        let view = self.presence.lookup(user).unwrap_or_else(|| {
            // A store error reads as "never seen": a query must not fail for it.
            let last_seen_ms = self.store.last_seen(user).ok().flatten().unwrap_or(0);
            View {
                status: Status::Offline,
                own: Status::Offline,
                version: last_seen_ms << 16,
                last_seen_ms,
                ..View::default()
            }
        });
        entry_for(viewer, user, &view, &self.feed)
    }

    /// The totals STATS and the admin API report.
    pub fn stats(&self) -> Stats {
        let totals = self.presence.totals();
        Stats {
            online_users: totals.online_users,
            sessions: totals.sessions,
            watches: totals.watches,
            connections: self.conns.len() as u64,
        }
    }

    /// Applies a gateway's batch; returns how many sessions were not its own
    /// or unknown.
    pub fn apply_batch(&self, owner: u32, entries: impl Iterator<Item = BatchEntry>, now_ms: u64) -> u64 {
        let mut unknown = 0;
        for (session, status) in entries {
            let applied = match status {
                None => self.presence.heartbeat(session, owner, now_ms),
                Some(status) => self.presence.set_status(session, owner, status, None, now_ms).map(|c| self.deliver(c)),
            };
            if let Err(SessionError::NotFound | SessionError::NotOwner) = applied {
                unknown += 1;
            }
        }
        unknown
    }
}

/// A started server.
pub struct Running {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    /// The HTTP admin listener (`crate::admin`).
    pub admin: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, sends GOAWAY, drains, flushes last seen, and returns
    /// when everything has stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// A handle that starts the same graceful shutdown (for signal handlers).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

fn create_dir(path: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(path).map_err(|source| StartError::DataDir { path: path.to_owned(), source })
}

/// Opens the data dir, binds the sockets and starts every task.
pub async fn start(config: Config) -> Result<Running, StartError> {
    create_dir(&config.data_dir)?;
    let secret = crate::auth::load_or_create_secret(&config.data_dir.join("secret")).map_err(StartError::Secret)?;
    let store = Store::open(&config.data_dir.join("store"), config.store.durability)?;
    let udp_keys = UdpKeys::generate().map_err(StartError::Secret)?;
    // Under socket activation systemd holds the sockets across restarts; `config.listen` and `config.udp` are unused then.
    let inherited = systemd::inherited().map_err(StartError::Inherited)?;
    let bind_error = |addr| move |source| StartError::Bind { addr, source };
    let listener = match inherited.tcp {
        Some(listener) => tokio::net::TcpListener::from_std(listener),
        None => net::tcp_listener(config.listen),
    }
    .map_err(bind_error(config.listen))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let udp_sockets = match inherited.udp {
        sockets if sockets.is_empty() => net::udp_sockets(config.udp, workers),
        sockets => sockets.into_iter().map(tokio::net::UdpSocket::from_std).collect(),
    }
    .map_err(bind_error(config.udp))?;
    let admin_listener =
        tokio::net::TcpListener::bind(config.admin.listen).await.map_err(bind_error(config.admin.listen))?;
    let admin = admin_listener.local_addr().map_err(bind_error(config.admin.listen))?;
    let tcp = listener.local_addr().map_err(bind_error(config.listen))?;
    let udp = udp_sockets[0].local_addr().map_err(bind_error(config.udp))?;

    let presence_config = config.presence();
    let shared = Arc::new(Shared {
        presence: Presence::new(presence_config, now_ms()),
        presence_config,
        keyring: reload::Keys::new(secret),
        limits: reload::Limits::new(&config.limits, net::connection_ceiling()),
        udp_keys,
        feed: heartline_core::feed::Feed::new(config.feed(), config.feed.node),
        committer: crate::store::Committer::start(store.clone()),
        live: DashMap::new(),
        fanout: feed::FanoutQueue::new(),
        store,
        conns: DashMap::new(),
        admission: Arc::default(),
        next_conn: AtomicU32::new(1),
        metrics: Metrics::default(),
        udp_port: udp.port(),
        stop: CancellationToken::new(),
        config,
    });
    let restoring = Instant::now();
    let restorer = shared.clone();
    let restored = tokio::task::spawn_blocking(move || feed::restore(&restorer)).await;
    let (edges, posts) = restored.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    tracing::info!(edges, posts, took = ?restoring.elapsed(), "feed restored from the store");
    feed::start_fanout(&shared, FANOUT_WORKERS);
    for socket in udp_sockets {
        tokio::spawn(udp::receive(socket, shared.clone()));
    }
    let ticker = tokio::spawn(tick_loop(shared.clone()));
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::admin::serve(admin_listener, shared.clone(), shutdown.clone()));
    if let Some(every) = systemd::watchdog_interval() {
        tokio::spawn(systemd::watchdog(every, shared.stop.clone()));
    }
    let task = tokio::spawn(run(shared.clone(), listener, ticker, shutdown.clone()));
    tracing::info!(%tcp, %udp, %admin, data_dir = %shared.config.data_dir.display(), "heartline listening");
    // Listeners bound and store open: systemd may start what depends on us. STATUS also tells tests the ports.
    systemd::tell(&format!("READY=1\nSTATUS=listening on tcp {tcp}, udp {udp}, admin {admin}"));
    Ok(Running { tcp, udp, admin, shared, shutdown, task })
}

async fn run(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    ticker: JoinHandle<()>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => conn::accept(stream, peer, &shared),
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    systemd::tell("STOPPING=1\nSTATUS=draining");
    drain(&shared).await;
    shared.stop.cancel();
    let _ = ticker.await;
    let mut last_seen = shared.presence.pending_last_seen();
    last_seen.extend(shared.presence.online_last_seen(now_ms()));
    // A store still down after an outage gets one last chance to take them.
    recover_store(&shared).await;
    write_last_seen(&shared, last_seen).await;
    // With `os` durability, writes are only in the kernel until this.
    let store = shared.store.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush()).await {
        tracing::error!(error = %e, "cannot flush the store");
    }
    // Every task lets go of the shared state shortly after `stop`. Waiting for
    // that (boundedly) means the store is closed once `Running` is dropped, so
    // a restart in the same process finds it unlocked.
    let deadline = Instant::now() + TASKS_GONE;
    while Arc::strong_count(&shared) > 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("heartline stopped");
}

/// GOAWAY to everyone, then wait for them to leave, up to the drain timeout.
async fn drain(shared: &Shared) {
    let goaway = Message::Goaway { reason: GoawayReason::Shutdown, reconnect_after_ms: RECONNECT_AFTER_MS };
    for entry in shared.conns.iter() {
        entry.outbox.close(Some(goaway.clone()));
    }
    let deadline = tokio::time::Instant::now() + shared.config.limits.drain_timeout;
    while !shared.conns.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tick_loop(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(TICK_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flushed = tokio::time::Instant::now();
    let mut archived = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let expiry = shared.presence.tick(now_ms());
        for change in expiry.changes {
            shared.deliver(Some(change));
        }
        for (session, owner) in expiry.expired {
            if let Some(entry) = shared.conns.get(&owner).filter(|e| e.session == Some(session)) {
                entry.outbox.close(Some(error(0, ErrorCode::SessionExpired, "no heartbeat within the TTL")));
            }
        }
        if flushed.elapsed() >= LAST_SEEN_FLUSH {
            flushed = tokio::time::Instant::now();
            recover_store(&shared).await;
            write_last_seen(&shared, shared.presence.pending_last_seen()).await;
        }
        if archived.elapsed() >= shared.config.feed.archive_interval {
            archived = tokio::time::Instant::now();
            let released = shared.feed.archive(now_ms());
            tracing::debug!(released, "posts moved out of memory");
        }
    }
}

/// After a failed write: reopens the store once its disk takes writes again
/// (docs/store.md, "Outages"). Tried every [`LAST_SEEN_FLUSH`].
async fn recover_store(shared: &Arc<Shared>) {
    if !shared.store.is_down() {
        return;
    }
    let store = shared.store.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.recover()).await {
        tracing::debug!(error = %e, "store still down");
    }
}

/// Writes last-seen times in batches of [`LAST_SEEN_BATCH`]; what fails
/// stays pending and is tried again (not even tried while the store is
/// down: it would refuse them).
async fn write_last_seen(shared: &Arc<Shared>, entries: Vec<(u64, u64)>) {
    if entries.is_empty() || shared.store.is_down() {
        return;
    }
    let writer = shared.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut done = 0;
        for batch in entries.chunks(LAST_SEEN_BATCH) {
            let started = std::time::Instant::now();
            let result = writer.store.put_last_seen(batch);
            writer.metrics.store_commit.observe(started.elapsed());
            if let Err(e) = result {
                return (entries, done, Err(e));
            }
            done += batch.len();
        }
        (entries, done, Ok(()))
    })
    .await;
    match written {
        Ok((entries, done, result)) => {
            shared.presence.forget_last_seen(&entries[..done]);
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot write last seen; will retry");
            }
        }
        Err(e) => tracing::error!(error = %e, "last seen writer panicked"),
    }
}
