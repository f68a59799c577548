//! `heartline serve`: thin tokio shells around the sans-IO core.
//!
//! Owns sockets, tasks, the clock and the order of startup and shutdown.
//! It decides nothing about presence or the protocol itself: every
//! connection's frames go to its `heartline_core::conn` machine through the
//! transport-agnostic [`driver`]; state is `heartline_core`'s; bytes are
//! `heartline_proto`'s.
//!
//! [`start`] is the composition root: it builds each handle once and hands
//! every task only the ones it needs — the [`node`] (what a connection's
//! machine works against), the [`feed`] shell (store, group commit,
//! fanout), the admission counter, the store — and the admin listener a
//! read-only [`crate::admin::Backend`].
//!
//! Tasks: one accept loop per stream listener (plain TCP, TCP+TLS,
//! WebSocket); one task per connection — plain TCP in [`tcp`], TLS and
//! WebSocket in the generic [`stream`] shell ([`ws`] maps messages to
//! frames, [`tls`] holds the certificate) — every one driving the same
//! connection machine; one UDP
//! receive loop per worker ([`udp`]); one ticker that expires sessions every
//! 100 ms, writes last-seen times to the store every second (first reopening
//! the store if a write failed, docs/store.md, "Outages") and archives cold
//! posts every minute; per connection using the feed, a feed task, and a
//! pool of fanout threads ([`feed`]); the HTTP admin listener and, under
//! systemd, a watchdog pinger ([`systemd`]). The listening sockets come from
//! systemd when it passes them.
//!
//! Feed state is rebuilt eagerly at start: the social graph and the newest
//! `feed.hot_items` posts of every author are read from the store before the
//! listeners accept anyone (measured in BENCHMARKS.md).

mod admin_view;
mod api_sessions;
mod driver;
mod fanout;
pub(crate) mod feed;
pub mod jwt;
pub mod net;
mod node;
mod outbox;
mod registry;
pub mod reload;
mod stream;
pub mod systemd;
mod tcp;
pub mod tls;
mod udp;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heartline_core::conn::WelcomeSettings;
use heartline_core::feed::log::node_tag;
use heartline_core::feed::Feed;
use heartline_core::presence::{Presence, TICK_MS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::UdpKeys;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Committer, Store, StoreError};
use feed::FeedShell;
use node::Node;
use outbox::Interrupt;
use registry::Registry;
use reload::{Keys, Limits, Reloadable};

/// The wall clock, in unix milliseconds: the only clock the core ever sees.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How long a shutdown waits for tasks to drop their handles.
const TASKS_GONE: Duration = Duration::from_secs(2);
/// Threads that fan posts out to inboxes and live connections.
const FANOUT_WORKERS: usize = 2;
/// How often presence changes waiting for the store are written.
const LAST_SEEN_FLUSH: Duration = Duration::from_secs(1);
/// Last-seen times per store batch. A shutdown with 10M users online writes
/// all of theirs: as one batch it held ~2 GB at once and took a minute.
const LAST_SEEN_BATCH: usize = 100_000;

/// Why the server could not start.
///
/// Its message carries its cause, as the store's and the TLS and JWT
/// errors do (they are logged by their message alone), so the cause is not
/// also its `source()`: printed with its chain, each cause shows once.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data dir {path}: {cause}")]
    DataDir { path: PathBuf, cause: std::io::Error },
    #[error("cannot read or create the secret: {0}")]
    Secret(std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(StoreError),
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: std::io::Error },
    #[error("cannot use the sockets passed by systemd (LISTEN_FDS): {0}")]
    Inherited(std::io::Error),
    #[error("cannot use the TLS certificate: {0}")]
    Tls(tls::TlsError),
    #[error("cannot use the [jwt] keys: {0}")]
    Jwt(jwt::JwtKeyError),
    #[error("cannot join the cluster: {0}")]
    Cluster(crate::cluster::ClusterError),
}

/// A started server.
pub struct Running {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    /// The HTTP admin listener (`crate::admin`).
    pub admin: SocketAddr,
    /// The WebSocket listener (`ws://`, or `wss://` with `websocket.tls`), if enabled.
    pub ws: Option<SocketAddr>,
    /// The TCP+TLS listener (`tls.listen`), if any.
    pub tls: Option<SocketAddr>,
    reloadable: Option<Reloadable>,
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

    /// What SIGHUP changes ([`reload::on_sighup`]); there is one.
    pub fn take_reloadable(&mut self) -> Option<Reloadable> {
        self.reloadable.take()
    }

    /// Waits until the server has stopped.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

fn create_dir(path: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(path).map_err(|cause| StartError::DataDir { path: path.to_owned(), cause })
}

/// Opens the data dir, binds the sockets, builds every handle and starts
/// every task.
pub async fn start(config: Config) -> Result<Running, StartError> {
    create_dir(&config.data_dir)?;
    let secret_path = config.data_dir.join("secret");
    let secret = crate::auth::load_or_create_secret(&secret_path).map_err(StartError::Secret)?;
    let jwt = Arc::new(jwt::JwtSlot::new(jwt::JwtKeys::load(&config.jwt).map_err(StartError::Jwt)?));
    let store = Store::open(&config.data_dir.join("store"), config.store.durability).map_err(StartError::Store)?;
    let udp_keys = UdpKeys::generate().map_err(StartError::Secret)?;
    // Under socket activation systemd holds the sockets across restarts; `config.listen` and `config.udp` are unused then.
    let inherited = systemd::inherited().map_err(StartError::Inherited)?;
    let bind_error = |addr| move |cause| StartError::Bind { addr, cause };
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
    // A bad certificate stops the start, before anyone is accepted.
    let certs = if crate::config::Tls::needed(&config) {
        Some(tls::Certs::load(&config.tls).map_err(StartError::Tls)?)
    } else {
        None
    };
    let tls_listener = match config.tls.listen {
        Some(addr) => Some(net::tcp_listener(addr).map_err(bind_error(addr))?),
        None => None,
    };
    let ws_addr = config.websocket.listen;
    let ws_listener =
        if config.websocket.enabled { Some(net::tcp_listener(ws_addr).map_err(bind_error(ws_addr))?) } else { None };
    let local = |l: &Option<tokio::net::TcpListener>, addr| match l {
        Some(l) => l.local_addr().map(Some).map_err(bind_error(addr)),
        None => Ok(None),
    };
    let tls_addr = local(&tls_listener, config.tls.listen.unwrap_or(config.listen))?;
    let ws_addr = local(&ws_listener, ws_addr)?;
    let (ws_scheme, shown) =
        (if config.websocket.tls { "wss" } else { "ws" }, |a: Option<SocketAddr>| a.map(|a| a.to_string()));
    let websocket = shown(ws_addr).map(|a| format!("{ws_scheme}://{a}{}", ws::PATH));
    let udp = udp_sockets[0].local_addr().map_err(bind_error(config.udp))?;

    // The composition root: every handle is built here, once.
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let limits = Arc::new(Limits::new(&config.limits, net::connection_ceiling()));
    let keys = Arc::new(Keys::new(secret));
    let registry = Arc::new(Registry::default());
    // In a cluster, post ids carry a tag of this node and writes go through the feed stream.
    let clustered = match &config.cluster {
        Some(settings) => Some((settings, crate::cluster::node_name(settings).map_err(StartError::Cluster)?)),
        None => None,
    };
    let id_node = clustered.as_ref().map_or(config.feed.node, |(_, name)| node_tag(config.feed.node, name));
    let feed_log = clustered.as_ref().map(|_| crate::cluster::feed::FeedLog::new(&config.data_dir));
    let feed = Arc::new(Feed::new(config.feed(), id_node));
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let presence_config = config.presence();
    let node = Arc::new(Node {
        presence: Presence::new(presence_config, now_ms()),
        feed: feed.clone(),
        keys: keys.clone(),
        jwt: jwt.clone(),
        udp_keys,
        udp_port: udp.port(),
        welcome: WelcomeSettings {
            heartbeat_interval_ms: ms(config.presence.heartbeat_interval),
            ttl_ms: presence_config.ttl_ms,
            max_frame: u32::try_from(limits.max_frame()).unwrap_or(u32::MAX),
        },
        limits: limits.clone(),
        registry: registry.clone(),
        api_sessions: Default::default(),
        metrics: metrics.clone(),
        last_seen: store.clone(),
        cluster: Default::default(),
        alone: heartline_proto::MapMember {
            node: config.cluster.as_ref().and_then(|c| c.node.as_deref()).unwrap_or("local").into(),
            addr: tcp.to_string().into(),
            ws: websocket.clone().unwrap_or_default().into(),
            tls: tls_addr.map(|a| a.to_string()).unwrap_or_default().into(),
        },
        remote: Default::default(),
    });
    let feed_shell = Arc::new(FeedShell {
        feed: feed.clone(),
        store: store.clone(),
        committer: Committer::start(store.clone()),
        fanout: fanout::FanoutQueue::new(),
        live: Default::default(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        limits: limits.clone(),
        max_payload: config.feed.max_payload,
        stop: stop.clone(),
        log: feed_log.clone(),
    });
    let admission = Arc::new(net::Admission::default());

    let restoring = Instant::now();
    let restorer = feed_shell.clone();
    let restored = tokio::task::spawn_blocking(move || restorer.restore()).await;
    let (edges, posts) =
        restored.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())).map_err(StartError::Store)?;
    tracing::info!(edges, posts, took = ?restoring.elapsed(), "feed restored from the store");
    feed_shell.start_fanout(FANOUT_WORKERS);
    if let (Some(log), Some((settings, name))) = (&feed_log, &clustered) {
        log.start(settings, name, feed_shell.clone(), stop.clone());
    }
    for socket in udp_sockets {
        tokio::spawn(udp::receive(socket, node.clone(), stop.clone()));
    }
    let ticker = Ticker { node: node.clone(), store: store.clone(), archive_every: config.feed.archive_interval };
    let ticker = tokio::spawn(ticker.run(stop.clone()));
    let shutdown = CancellationToken::new();
    // Joins in the background; leaves when the drain starts, so the others
    // take this node's partitions at once.
    let (cluster, cluster_task) = match &config.cluster {
        Some(settings) => {
            let mut settings = settings.clone();
            settings.advertise_ws = settings.advertise_ws.or_else(|| websocket.clone());
            settings.advertise_tls = settings.advertise_tls.or_else(|| tls_addr.map(|a| a.to_string()));
            let (cluster, task) =
                crate::cluster::start(&settings, tcp, shutdown.clone()).map_err(StartError::Cluster)?;
            let _ = node.cluster.set(cluster.clone());
            let local: Arc<dyn crate::cluster::presence::Local> = node.clone();
            let (remote, _) = crate::cluster::presence::start(&settings, cluster.clone(), local, stop.clone());
            let _ = node.remote.set(remote);
            (Some(cluster), Some(task))
        }
        None => (None, None),
    };
    let backend = admin_view::AdminView {
        cluster,
        node: node.clone(),
        fanout: feed_shell.clone(),
        store: store.clone(),
        admission: admission.clone(),
    };
    let admin_token = config.admin.token.clone();
    tokio::spawn(crate::admin::serve(admin_listener, Arc::new(backend), admin_token, shutdown.clone(), stop.clone()));
    if let Some(every) = systemd::watchdog_interval() {
        tokio::spawn(systemd::watchdog(every, stop.clone()));
    }
    let handles = tcp::Handles { node, feed: feed_shell, admission };
    let acceptor = certs.as_ref().map(tls::Certs::acceptor);
    if let (Some(listener), Some(acceptor)) = (tls_listener, acceptor.clone()) {
        let handles = handles.clone();
        let serve = move |stream, peer| stream::accept_tls(stream, peer, &handles, &acceptor);
        tokio::spawn(stream::accept_loop(listener, shutdown.clone(), serve));
    }
    if let Some(listener) = ws_listener {
        let ws = Arc::new(ws::Listener {
            handles: handles.clone(),
            origins: ws::Origins::new(&config.websocket.allowed_origins),
            tls: acceptor.filter(|_| config.websocket.tls),
        });
        let serve = move |stream, peer| ws::accept(stream, peer, &ws);
        tokio::spawn(stream::accept_loop(listener, shutdown.clone(), serve));
    }
    let accepting = Accepting { handles, store, stop: stop.clone(), cluster: cluster_task };
    let task = tokio::spawn(accepting.run(listener, ticker, shutdown.clone()));
    tracing::info!(%tcp, %udp, %admin, websocket, tls = shown(tls_addr), data_dir = %config.data_dir.display(), "heartline listening");
    // Listeners bound and store open: systemd may start what depends on us. STATUS also tells tests the ports.
    let mut listening = format!("tcp {tcp}, udp {udp}, admin {admin}");
    for (name, addr) in [("ws", ws_addr), ("tls", tls_addr)] {
        if let Some(addr) = addr {
            listening.push_str(&format!(", {name} {addr}"));
        }
    }
    let status = format!("listening on {listening}");
    systemd::tell(&format!("READY=1\nSTATUS={status}"));
    let reloadable = Reloadable { keys, jwt, limits, certs, secret_path, applied: config, status, stop };
    Ok(Running { tcp, udp, admin, ws: ws_addr, tls: tls_addr, reloadable: Some(reloadable), shutdown, task })
}

/// The accept loop, then the shutdown sequence.
struct Accepting {
    handles: tcp::Handles,
    store: Store,
    /// Cancelled when the server stops for good: every loop ends.
    stop: CancellationToken,
    /// The cluster shell, leaving once the drain starts.
    cluster: Option<JoinHandle<()>>,
}

impl Accepting {
    async fn run(mut self, listener: tokio::net::TcpListener, ticker: JoinHandle<()>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => tcp::accept(stream, peer, &self.handles),
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
        let node = self.handles.node.clone();
        drain(&node).await;
        if let Some(cluster) = self.cluster.take() {
            // It gives up on NATS within its own bound; this one is a backstop.
            let _ = tokio::time::timeout(TASKS_GONE, cluster).await;
        }
        self.stop.cancel();
        let _ = ticker.await;
        let mut last_seen = node.presence.pending_last_seen();
        last_seen.extend(node.presence.online_last_seen(now_ms()));
        // A store still down after an outage gets one last chance to take them.
        recover_store(&self.store).await;
        write_last_seen(&node, &self.store, last_seen).await;
        // With `os` durability, writes are only in the kernel until this.
        let store = self.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush()).await {
            tracing::error!(error = %e, "cannot flush the store");
        }
        // Every task lets go of its handles shortly after `stop`. Waiting for
        // that (boundedly) means the store is closed once this returns, so a
        // restart in the same process finds it unlocked.
        let feed = self.handles.feed.clone();
        drop(self);
        let deadline = Instant::now() + TASKS_GONE;
        while (Arc::strong_count(&node) > 1 || Arc::strong_count(&feed) > 1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("heartline stopped");
    }
}

/// GOAWAY to everyone, then wait for them to leave, up to the drain timeout.
async fn drain(node: &Node) {
    node.registry.drain();
    let deadline = tokio::time::Instant::now() + node.limits.drain_timeout();
    while !node.registry.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Presence expiry, the last-seen writer and the archiver, on one timer.
struct Ticker {
    node: Arc<Node>,
    store: Store,
    archive_every: Duration,
}

impl Ticker {
    async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(Duration::from_millis(TICK_MS));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut flushed = tokio::time::Instant::now();
        let mut archived = tokio::time::Instant::now();
        let node = &self.node;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let expiry = node.presence.tick(now_ms());
            for change in expiry.changes {
                node.deliver(change);
            }
            for (session, owner) in expiry.expired {
                node.session_ended(session, owner, Interrupt::Expired);
            }
            if flushed.elapsed() >= LAST_SEEN_FLUSH {
                flushed = tokio::time::Instant::now();
                recover_store(&self.store).await;
                write_last_seen(node, &self.store, node.presence.pending_last_seen()).await;
            }
            if archived.elapsed() >= self.archive_every {
                archived = tokio::time::Instant::now();
                let released = node.feed.archive(now_ms());
                tracing::debug!(released, "posts moved out of memory");
            }
        }
    }
}

/// After a failed write: reopens the store once its disk takes writes again
/// (docs/store.md, "Outages"). Tried every [`LAST_SEEN_FLUSH`].
async fn recover_store(store: &Store) {
    if !store.is_down() {
        return;
    }
    let store = store.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.recover()).await {
        tracing::debug!(error = %e, "store still down");
    }
}

/// Writes last-seen times in batches of [`LAST_SEEN_BATCH`]; what fails
/// stays pending and is tried again (not even tried while the store is
/// down: it would refuse them).
async fn write_last_seen(node: &Node, store: &Store, entries: Vec<(u64, u64)>) {
    if entries.is_empty() || store.is_down() {
        return;
    }
    let (store, metrics) = (store.clone(), node.metrics.clone());
    let written = tokio::task::spawn_blocking(move || {
        let mut done = 0;
        for batch in entries.chunks(LAST_SEEN_BATCH) {
            let started = std::time::Instant::now();
            let result = store.put_last_seen(batch);
            metrics.store_commit.observe(started.elapsed());
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
            node.presence.forget_last_seen(&entries[..done]);
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot write last seen; will retry");
            }
        }
        Err(e) => tracing::error!(error = %e, "last seen writer panicked"),
    }
}
