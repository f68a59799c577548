//! The presence scenario in gateway mode: N simulated clients carried by a
//! few gateway connections (raw frames over TCP, `heartline_client::wire`).
//! Each gateway OPENs its slice of the clients in chunks of
//! `limits::MAX_BATCH`, then sends
//! BATCH_HEARTBEAT frames of its sorted sessions on absolute deadlines spread
//! evenly over the interval, so the server sees N / interval heartbeats per
//! second; with `--udp-batches` the same batches go as authenticated UDP
//! BATCH datagrams under the gateway's key (SPEC.md §8.2), split to fit
//! [`udp::MAX_DATAGRAM`]. Watcher connections (gateway tokens, no sessions of
//! their own) watch `friends` users each; the gateways change those users'
//! statuses with one-entry batches over TCP, and the watchers time send →
//! PRESENCE_PUSH. With `--churn-per-s R` the gateways CLOSE R random
//! sessions a second (never a watched user's) and re-OPEN them (a user
//! reconnecting): after each heartbeat batch, one CLOSE and one OPEN carry
//! every session due since the last, so `churn_close`/`churn_open` count
//! sessions and their latencies are those of the requests (to OK, OPENED).
//!
//! With `--cluster` the gateways read the cluster's map (CLUSTER_MAP) from
//! `--addr`, open `--gateways` connections to every member, OPEN each user
//! on its owner ([`ClusterMap::owner_of`], split by [`split`]) and send each
//! node the batches of its own users only: heartbeats never leave their
//! owner. Watchers stay on `--addr`, so the pushes of users owned elsewhere
//! cross nodes. The loadgen does not re-open sessions after a MOVED or a
//! lost connection: a node's death ends its gateways' runs with an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use heartline::auth::{Claims, Keyring, Subject};
use heartline_client::route::ClusterMap;
use heartline_client::wire::{self, Connection, Reader, WireError, Writer};
use heartline_proto::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::procstat::{self, Sample};
use crate::progress;
use crate::report::{histogram, Op, Report, Server, Timeline};
use crate::scrape::UdpWatch;
use crate::udp::{self, Datagrams};

/// How often a gateway sends a heartbeat batch (at most; batches are never
/// smaller than one session).
const TICK: Duration = Duration::from_millis(10);
/// At most this many watcher connections, whatever `--watchers` asks.
pub(crate) const MAX_WATCHER_CONNS: usize = 256;
/// How long watchers keep reading after the senders stop.
const DRAIN: Duration = Duration::from_secs(1);

/// What a gateway-mode run needs.
pub(crate) struct Params {
    pub addr: SocketAddr,
    pub clients: u64,
    pub interval: Duration,
    pub duration: Duration,
    pub gateways: usize,
    pub watchers: f64,
    pub friends: usize,
    pub status_changes_per_s: f64,
    pub keyring: Keyring,
    /// The first simulated user id.
    pub user_base: u64,
    pub server_pid: Option<u32>,
    /// The cluster's heartline pids (with `cluster`): CPU and RSS summed.
    pub node_pids: Vec<u32>,
    /// Read the cluster's map from `addr` and open each user on its owner.
    pub cluster: bool,
    pub seed: u64,
    /// CLOSEs + re-OPENs per second, all gateways together.
    pub churn_per_s: f64,
    /// Heartbeat batches as UDP datagrams instead of TCP frames.
    pub udp_batches: bool,
    /// The daemon's admin listener, for its UDP drop counters.
    pub admin: crate::scrape::Admin,
    pub timeline: Arc<Timeline>,
}

/// Counters shared by every task.
#[derive(Default)]
struct Shared {
    heartbeats: AtomicU64,
    heartbeat_bytes: AtomicU64,
    status_changes: AtomicU64,
    errors: AtomicU64,
    /// user → (sent at, status sent): the latest change of each watched user.
    pending: Mutex<HashMap<u64, (Instant, Status)>>,
}

impl Shared {
    fn error(&self, what: impl std::fmt::Display) {
        if self.errors.fetch_add(1, Relaxed) < 10 {
            eprintln!("error: {what}");
        }
    }
}

/// Signs a token with the daemon's secret.
pub(crate) fn token(keyring: &Keyring, subject: Subject) -> Bytes {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Bytes::from(keyring.issue(&Claims { subject, expires_at: now + 24 * 3_600 }))
}

/// One raw protocol connection past WELCOME (no resumption: a new session
/// or gateway each time), with its WELCOME.
async fn hello(addr: SocketAddr, role: Role, want_udp: bool, token: Bytes) -> Result<(Connection, Welcome)> {
    let mut conn = Connection::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let welcome = conn.hello(token, role, want_udp, 0).await.context("expected WELCOME")?;
    Ok((conn, welcome))
}

/// A node the gateways connect to, with the users its gateways carry
/// (one sorted list per gateway connection).
struct Node {
    name: String,
    addr: SocketAddr,
    gateways: Vec<Vec<u64>>,
}

/// `users` (sorted) in `gateways` contiguous slices, as even as can be.
fn slices(users: &[u64], gateways: usize) -> Vec<Vec<u64>> {
    let (n, gs) = (users.len(), gateways.max(1));
    (0..gs).map(|g| users[n * g / gs..n * (g + 1) / gs].to_vec()).collect()
}

/// Users `users` split by owner in `map`: per member (in the map's order),
/// its users in `gateways` slices. Users of no member (an empty map) are left out.
fn split(map: &ClusterMap, users: std::ops::Range<u64>, gateways: usize) -> Vec<Vec<Vec<u64>>> {
    let mut owned = vec![Vec::new(); map.members.len()];
    let names: Vec<&str> = map.members.iter().map(|m| m.node.as_str()).collect();
    for user in users {
        if let Some(i) = heartline_proto::route::owner_of(names.iter().copied(), user, map.partitions) {
            owned[i].push(user);
        }
    }
    owned.iter().map(|u| slices(u, gateways)).collect()
}

/// The nodes to load: `addr` alone, or with `cluster` every member of the
/// map read from `addr`, each with the users it owns.
async fn nodes(p: &Params) -> Result<Vec<Node>> {
    let users = p.user_base..p.user_base + p.clients;
    if !p.cluster {
        let all: Vec<u64> = users.collect();
        return Ok(vec![Node { name: p.addr.to_string(), addr: p.addr, gateways: slices(&all, p.gateways) }]);
    }
    let token = token(&p.keyring, Subject::Gateway("loadgen-map".into()));
    let (mut conn, _) = hello(p.addr, Role::Gateway, false, token).await?;
    let map = conn.cluster_map().await.context("expected CLUSTER_MAP_REPLY")?;
    if map.members.is_empty() {
        bail!("the cluster map from {} has no members", p.addr);
    }
    let mut nodes = Vec::new();
    for (member, gateways) in map.members.iter().zip(split(&map, users, p.gateways)) {
        let addr =
            tokio::net::lookup_host(member.addr.as_str()).await.ok().and_then(|mut a| a.next()).with_context(|| {
                format!("member {} advertises {:?}, not an address", member.node.as_str(), member.addr.as_str())
            })?;
        nodes.push(Node { name: member.node.as_str().to_owned(), addr, gateways });
    }
    eprintln!("cluster map version {}: {} members", map.version, nodes.len());
    Ok(nodes)
}

/// The server's CPU and RSS: `--server-pid`, or the cluster's pids summed.
fn sample(p: &Params) -> Result<Option<Sample>> {
    if p.node_pids.is_empty() {
        return procstat::sample_of(p.server_pid);
    }
    let mut sum = Sample::default();
    for &pid in &p.node_pids {
        let s = procstat::sample_of(Some(pid))?.unwrap_or_default();
        sum.cpu_s += s.cpu_s;
        sum.rss_bytes += s.rss_bytes;
    }
    Ok(Some(sum))
}

/// Each of the cluster's pids' RSS now.
fn rss_each(p: &Params) -> Result<Vec<u64>> {
    p.node_pids.iter().map(|&pid| Ok(procstat::sample_of(Some(pid))?.unwrap_or_default().rss_bytes)).collect()
}

/// A report key made at run time (a few per run: leaked, as the report
/// lives until the process ends).
fn key(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

struct Opened {
    sessions: Vec<u64>,
    open_latency: Histogram<u64>,
}

/// Opens the slice's sessions, chunk after chunk.
async fn open(conn: &mut Connection, users: &[u64], ramp: &AtomicU64) -> Result<Opened> {
    let mut sessions = Vec::with_capacity(users.len());
    let mut open_latency = histogram();
    for chunk in users.chunks(limits::MAX_BATCH) {
        let entries: Vec<OpenEntry> =
            chunk.iter().map(|&user| OpenEntry { user, device: Device::Mobile, status: Status::Online }).collect();
        let sent = Instant::now();
        let req = conn.next_req();
        let got =
            conn.open(req, entries).await.with_context(|| format!("expected OPENED with {} sessions", chunk.len()))?;
        sessions.extend(got);
        open_latency.saturating_record(sent.elapsed().as_micros() as u64);
        ramp.fetch_add(chunk.len() as u64, Relaxed);
    }
    Ok(Opened { sessions, open_latency })
}

/// A gateway's sessions, in the batches it sends one after another over the
/// interval (each sorted, as a batch must be), and where each user's is.
struct Batches {
    ids: Vec<Vec<u64>>,
    /// Each batch as a TCP frame, made again after churn changed the batch.
    frames: Vec<Option<Bytes>>,
    /// Per user of the slice: its session (0 while closed for churn) and batch.
    users: Vec<(u64, usize)>,
}

impl Batches {
    /// `sessions[i]` is user `first + i`'s; `per_batch` ids per batch.
    fn new(sessions: &[u64], per_batch: usize) -> Self {
        let mut by_id: Vec<(u64, usize)> = sessions.iter().copied().zip(0..).collect();
        by_id.sort_unstable();
        let mut users = vec![(0, 0); sessions.len()];
        let mut ids = Vec::new();
        for (b, chunk) in by_id.chunks(per_batch.max(1)).enumerate() {
            for &(session, user) in chunk {
                users[user] = (session, b);
            }
            ids.push(chunk.iter().map(|&(session, _)| session).collect());
        }
        Self { frames: vec![None; ids.len()], ids, users }
    }

    /// Takes `user`'s session out of its batch; returns it.
    fn remove(&mut self, user: usize) -> u64 {
        let (session, b) = self.users[user];
        self.users[user].0 = 0;
        if let Ok(at) = self.ids[b].binary_search(&session) {
            self.ids[b].remove(at);
        }
        self.frames[b] = None;
        session
    }

    /// Puts `user`'s new session into the batch its old one was in.
    fn insert(&mut self, user: usize, session: u64) {
        let b = self.users[user].1;
        self.users[user].0 = session;
        let at = self.ids[b].binary_search(&session).unwrap_or_else(|at| at);
        self.ids[b].insert(at, session);
        self.frames[b] = None;
    }

    /// Batch `b` as a BATCH_HEARTBEAT frame.
    fn frame(&mut self, b: usize) -> Result<Bytes> {
        if let Some(frame) = &self.frames[b] {
            return Ok(frame.clone());
        }
        let entries: Vec<BatchEntry> = self.ids[b].iter().map(|&id| (id, None)).collect();
        let mut buf = BytesMut::new();
        wire::encode_batch(&entries, &mut buf)?;
        let frame = buf.freeze();
        self.frames[b] = Some(frame.clone());
        Ok(frame)
    }
}

/// What a gateway's heartbeat batches travel on.
enum Path {
    Tcp,
    Udp(Box<UdpPath>),
}

/// UDP BATCH datagrams under the gateway's id and key (from its WELCOME).
struct UdpPath {
    sender: udp::Sender,
    gateway: u64,
    key: heartline_proto::udp::Key,
    seq: u32,
    out: Datagrams,
}

/// A churn request in flight: when it was sent, and how many sessions it
/// closes, or whose it opens.
enum Pending {
    Close(Instant, u64),
    Open(Instant, Vec<usize>),
}

/// A reply the reader hands to the gateway's writer, with when it arrived.
type Reply = (Message, Instant);

/// The gateway's churn: which requests are in flight and how many users
/// have left and come back so far.
struct Churn {
    per_s: f64,
    done: u64,
    pending: HashMap<u64, Pending>,
    /// Users never churned: the watched ones, whose status changes are timed.
    watched: HashSet<usize>,
}

impl Churn {
    /// CLOSEs the sessions of the users whose turn has come since the last
    /// call (picked at random) and re-OPENs them in a second request; the
    /// replies come back through [`Churn::on_reply`].
    async fn step(
        &mut self,
        w: &mut Writer,
        batches: &mut Batches,
        rng: &mut fastrand::Rng,
        start: Instant,
        slice: &[u64],
    ) -> Result<()> {
        let due = (start.elapsed().as_secs_f64() * self.per_s) as u64;
        let want = due.saturating_sub(self.done).min(limits::MAX_BATCH as u64) as usize;
        if want == 0 {
            return Ok(());
        }
        self.done = due;
        let (mut users, mut sessions) = (Vec::with_capacity(want), Vec::with_capacity(want));
        // A few tries per pick: a user already closed or watched is skipped, not waited for.
        for _ in 0..want * 4 {
            if users.len() == want {
                break;
            }
            let user = rng.usize(..batches.users.len());
            if batches.users[user].0 != 0 && !self.watched.contains(&user) {
                sessions.push(batches.remove(user));
                users.push(user);
            }
        }
        if users.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let n = sessions.len() as u64;
        let req = w.next_req();
        w.send(&Message::Close { req, sessions }).await?;
        self.pending.insert(req, Pending::Close(now, n));
        let entries = users
            .iter()
            .map(|&u| OpenEntry { user: slice[u], device: Device::Mobile, status: Status::Online })
            .collect();
        let req = w.next_req();
        w.send(&Message::Open { req, entries }).await?;
        self.pending.insert(req, Pending::Open(now, users));
        Ok(())
    }

    /// Times a reply to a churn request; an OPENED's sessions rejoin their batches.
    fn on_reply(&mut self, (reply, at): Reply, batches: &mut Batches, shared: &Shared, timeline: &Timeline) {
        let req = match &reply {
            Message::Ok { req } | Message::Opened { req, .. } | Message::Error { req, .. } => *req,
            _ => return,
        };
        let us = |sent: Instant| at.duration_since(sent).as_micros() as u64;
        match (self.pending.remove(&req), reply) {
            (Some(Pending::Close(sent, n)), Message::Ok { .. }) => timeline.latency_of("churn_close", n, us(sent)),
            (Some(Pending::Open(sent, users)), Message::Opened { sessions, .. }) if sessions.len() == users.len() => {
                timeline.latency_of("churn_open", users.len() as u64, us(sent));
                for (user, session) in users.into_iter().zip(sessions) {
                    batches.insert(user, session);
                }
            }
            (_, reply) => {
                shared.error(format!("unexpected reply to a churn request: {}", crate::tcp::describe_message(&reply)))
            }
        }
    }
}

/// One gateway's run: where its sessions are, who it may change, until when.
struct Gateway {
    conn: Connection,
    welcome: Welcome,
    /// The node it is connected to.
    addr: SocketAddr,
    /// All gateway connections of the run, every node's together.
    of: usize,
    sessions: Vec<u64>,
    /// Its users, sorted; `sessions[i]` is `users[i]`'s.
    users: Vec<u64>,
    /// (user, session) of the watched users in this gateway's slice.
    targets: Vec<(u64, u64)>,
}

/// Sends heartbeats, status changes and churn until `end`.
async fn run_gateway(gw: Gateway, p: Arc<Params>, shared: Arc<Shared>, start: Instant, end: Instant) -> Result<()> {
    let Gateway { conn, welcome, addr, of, sessions, users, targets } = gw;
    let ticks = (p.interval.as_secs_f64() / TICK.as_secs_f64()).max(1.0);
    let per_batch = ((sessions.len() as f64 / ticks).ceil() as usize).clamp(1, limits::MAX_BATCH);
    let mut batches = Batches::new(&sessions, per_batch);
    let (read, mut w) = conn.into_split();
    let mut path = if p.udp_batches {
        if welcome.udp_port == 0 {
            bail!("the daemon granted the gateway no UDP (WELCOME udp_port 0)");
        }
        let sender = udp::Sender::bind(SocketAddr::new(addr.ip(), welcome.udp_port)).await?;
        Path::Udp(Box::new(UdpPath {
            sender,
            gateway: welcome.session,
            key: welcome.udp_key,
            seq: 0,
            out: Datagrams::default(),
        }))
    } else {
        Path::Tcp
    };
    let (replies_tx, mut replies) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_replies(read, shared.clone(), replies_tx, end + DRAIN));

    let n_batches = batches.ids.len();
    let step = if n_batches == 0 { p.interval } else { p.interval / n_batches as u32 };
    let change_step = if p.status_changes_per_s > 0.0 && !targets.is_empty() {
        Some(Duration::from_secs_f64(of as f64 / p.status_changes_per_s))
    } else {
        None
    };
    let mut churn = Churn {
        per_s: p.churn_per_s / of as f64,
        done: 0,
        pending: HashMap::new(),
        watched: targets.iter().filter_map(|(user, _)| users.binary_search(user).ok()).collect(),
    };
    let mut statuses: HashMap<u64, Status> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(p.seed ^ users.first().copied().unwrap_or(0));
    let (mut k, mut next_change) = (0u32, start + change_step.unwrap_or_default() / 2);
    loop {
        let next_batch = start + step * k;
        let change_due = change_step.is_some() && next_change < next_batch;
        let at = if change_due { next_change } else { next_batch };
        if at >= end || n_batches == 0 && !change_due {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            Some(reply) = replies.recv() => {
                churn.on_reply(reply, &mut batches, &shared, &p.timeline);
                continue;
            }
        }
        if change_due {
            let (user, session) = targets[rng.usize(..targets.len())];
            let status = match statuses.get(&session) {
                Some(Status::Away) => Status::Busy,
                _ => Status::Away,
            };
            statuses.insert(session, status);
            // Encoded into the connection's buffer before the clock is read, written after.
            w.feed_batch(&[(session, Some(status))])?;
            shared.pending.lock().expect("pending lock").insert(user, (Instant::now(), status));
            w.flush().await?;
            shared.status_changes.fetch_add(1, Relaxed);
            p.timeline.count("status_change", 1);
            next_change += change_step.unwrap_or_default();
            continue;
        }
        let b = k as usize % n_batches;
        k += 1;
        let count = batches.ids[b].len() as u64;
        if count > 0 {
            let bytes = match &mut path {
                Path::Tcp => {
                    let frame = batches.frame(b)?;
                    w.send_raw(&frame).await?;
                    frame.len()
                }
                Path::Udp(u) => {
                    let UdpPath { sender, gateway, key, seq, out } = &mut **u;
                    let entries: Vec<BatchEntry> = batches.ids[b].iter().map(|&id| (id, None)).collect();
                    out.clear();
                    out.batches(key, *gateway, seq, &entries)?;
                    if let (failed @ 1.., error) = sender.send(out).await {
                        let why = error.map(|e| format!(": {e}")).unwrap_or_default();
                        shared.error(format!("{failed} datagrams not sent{why}"));
                        continue;
                    }
                    out.bytes()
                }
            };
            shared.heartbeats.fetch_add(count, Relaxed);
            shared.heartbeat_bytes.fetch_add(bytes as u64, Relaxed);
            p.timeline.count("heartbeat", count);
        }
        if churn.per_s > 0.0 {
            churn.step(&mut w, &mut batches, &mut rng, start, &users).await?;
        }
    }
    w.flush().await?;
    reader.await??;
    // Dropping the connection ends its sessions (after the grace window).
    drop(w);
    Ok(())
}

/// Reads a gateway's incoming frames until `until`: hands replies to
/// requests (churn's) to the writer and counts ERRORs about batches.
async fn read_replies(
    mut read: Reader,
    shared: Arc<Shared>,
    replies: mpsc::UnboundedSender<Reply>,
    until: Instant,
) -> Result<()> {
    loop {
        match tokio::time::timeout_at(until, read.recv()).await {
            Err(_) => return Ok(()),
            Ok(Ok(reply @ (Message::Ok { .. } | Message::Opened { .. }))) => {
                let _ = replies.send((reply, Instant::now()));
            }
            Ok(Ok(reply @ Message::Error { req: 1.., .. })) => {
                let _ = replies.send((reply, Instant::now()));
            }
            Ok(Ok(Message::Error { code, message, .. })) => shared.error(crate::tcp::server_error(code, &message)),
            Ok(Ok(Message::Goaway { .. })) => shared.error("GOAWAY"),
            Ok(Ok(_)) => {}
            Ok(Err(WireError::Closed)) => {
                shared.error("gateway connection closed by the server");
                return Ok(());
            }
            Ok(Err(e)) => {
                shared.error(format!("bad frame: {e}"));
                return Ok(());
            }
        }
    }
}

/// A watcher: watches `friends`, then times every push that carries the
/// latest status sent for a user (`notify`).
async fn watcher(
    mut conn: Connection,
    friends: Vec<u64>,
    shared: Arc<Shared>,
    timeline: Arc<Timeline>,
    until: Instant,
) -> Result<()> {
    for chunk in friends.chunks(limits::MAX_IDS) {
        let users = chunk.to_vec();
        match conn.request(|req| Message::Watch { req, users }).await? {
            Message::Presence { .. } => {}
            other => bail!("expected PRESENCE, got {other:?}"),
        }
    }
    loop {
        match tokio::time::timeout_at(until, conn.recv()).await {
            Err(_) => return Ok(()),
            Ok(Ok(Message::PresencePush { entries })) => {
                let now = Instant::now();
                let pending = shared.pending.lock().expect("pending lock");
                for e in entries {
                    if let Some(&(sent, status)) = pending.get(&e.user) {
                        if status == e.status {
                            timeline.latency("notify", now.duration_since(sent).as_micros() as u64);
                        }
                    }
                }
            }
            Ok(Ok(Message::Error { code, message, .. })) => {
                shared.error(format!("watcher: {}", crate::tcp::server_error(code, &message)))
            }
            Ok(Ok(_)) => {}
            Ok(Err(WireError::Closed)) => bail!("watcher: connection closed by the server"),
            Ok(Err(e)) => bail!("watcher: bad frame: {e}"),
        }
    }
}

/// Runs the scenario and builds the report.
pub(crate) async fn run(p: Params) -> Result<Report> {
    let p = Arc::new(p);
    let shared = Arc::new(Shared::default());
    let mut rng = fastrand::Rng::with_seed(p.seed);

    // Who watches whom, decided up front so each gateway knows its targets.
    let want = p.status_changes_per_s > 0.0 && p.friends > 0 && p.watchers > 0.0;
    let n_watchers =
        if want { ((p.watchers * p.clients as f64).round() as usize).clamp(1, MAX_WATCHER_CONNS) } else { 0 };
    let friend_lists: Vec<Vec<u64>> = (0..n_watchers)
        .map(|_| {
            let mut f: Vec<u64> =
                (0..p.friends.min(p.clients as usize)).map(|_| p.user_base + rng.u64(..p.clients)).collect();
            f.sort_unstable();
            f.dedup();
            f
        })
        .collect();
    let mut watched: Vec<u64> = friend_lists.iter().flatten().copied().collect();
    watched.sort_unstable();
    watched.dedup();

    let mut nodes = nodes(&p).await?;
    let conns = nodes.len() * p.gateways;
    let per_node: Vec<usize> = nodes.iter().map(|n| n.gateways.iter().map(Vec::len).sum()).collect();
    let before = sample(&p)?;
    let rss_before = rss_each(&p)?;
    eprintln!("opening {} sessions over {conns} gateway connections", p.clients);
    let ramp = Arc::new(AtomicU64::new(0));
    let shown = progress::ramp("open", p.clients, ramp.clone());
    let ramp_started = Instant::now();
    let mut opening = Vec::new();
    let mut g = 0;
    for node in &mut nodes {
        for users in std::mem::take(&mut node.gateways) {
            let (p, ramp, addr) = (p.clone(), ramp.clone(), node.addr);
            opening.push(tokio::spawn(async move {
                let token = token(&p.keyring, Subject::Gateway(format!("loadgen-{g}")));
                let (mut conn, welcome) = hello(addr, Role::Gateway, p.udp_batches, token).await?;
                let opened = open(&mut conn, &users, &ramp).await?;
                Ok::<_, anyhow::Error>((conn, welcome, addr, users, opened))
            }));
            g += 1;
        }
    }
    let mut gateways = Vec::new();
    let mut open_latency = histogram();
    for task in opening {
        let (conn, welcome, addr, users, opened) = task.await??;
        open_latency.add(&opened.open_latency)?;
        gateways.push((conn, welcome, addr, users, opened.sessions));
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    drop(shown);
    let after_ramp = sample(&p)?;
    let rss_after_ramp = rss_each(&p)?;
    eprintln!("opened {} sessions in {ramp_s:.1} s ({:.0}/s)", p.clients, p.clients as f64 / ramp_s);

    // Watchers connect after the ramp, so the sessions' own "online" pushes are over.
    let mut watcher_conns = Vec::new();
    for w in 0..n_watchers {
        let token = token(&p.keyring, Subject::Gateway(format!("loadgen-watch-{w}")));
        watcher_conns.push(hello(p.addr, Role::Gateway, false, token).await?.0);
    }
    let watch = if p.udp_batches { Some(UdpWatch::start(p.admin.clone()).await) } else { None };

    let start = Instant::now() + Duration::from_millis(200);
    let end = start + p.duration;
    p.timeline.ends_at(end.into_std());
    let mut watching = Vec::new();
    for (conn, friends) in watcher_conns.into_iter().zip(friend_lists) {
        watching.push(tokio::spawn(watcher(conn, friends, shared.clone(), p.timeline.clone(), end + DRAIN)));
    }
    let mut running = Vec::new();
    for (conn, welcome, addr, users, sessions) in gateways {
        let targets: Vec<(u64, u64)> =
            watched.iter().filter_map(|&u| users.binary_search(&u).ok().map(|i| (u, sessions[i]))).collect();
        let gw = Gateway { conn, welcome, addr, of: conns, sessions, users, targets };
        running.push(tokio::spawn(run_gateway(gw, p.clone(), shared.clone(), start, end)));
    }
    let shown = {
        let (shared, mut rate) = (shared.clone(), progress::Rate::new());
        let expected = p.clients as f64 / p.interval.as_secs_f64();
        progress::run(start, p.duration, move || {
            format!(
                "heartbeats {:.0}/s (target {expected:.0}/s), status changes {}, errors {}",
                rate.per_s(shared.heartbeats.load(Relaxed)),
                shared.status_changes.load(Relaxed),
                shared.errors.load(Relaxed)
            )
        })
    };
    for task in running {
        if let Err(e) = task.await? {
            shared.error(format!("gateway: {e:#}"));
        }
    }
    drop(shown);
    let elapsed = start.elapsed().as_secs_f64().min(p.duration.as_secs_f64());
    let end_sample = sample(&p)?;
    for task in watching {
        if let Err(e) = task.await? {
            shared.error(format!("{e:#}"));
        }
    }

    let heartbeats = shared.heartbeats.load(Relaxed);
    let bytes = shared.heartbeat_bytes.load(Relaxed);
    let mut ops = BTreeMap::new();
    ops.insert("heartbeat", Op::counted(heartbeats));
    ops.insert("status_change", Op::counted(shared.status_changes.load(Relaxed)));
    if n_watchers > 0 {
        ops.insert("notify", p.timeline.op("notify"));
    }
    if p.churn_per_s > 0.0 {
        ops.insert("churn_close", p.timeline.op("churn_close"));
        ops.insert("churn_open", p.timeline.op("churn_open"));
    }
    let mut extra = BTreeMap::new();
    extra.insert("ramp_s", ramp_s);
    extra.insert("ramp_sessions_per_s", p.clients as f64 / ramp_s);
    extra.insert("open_chunk_p50_ms", open_latency.value_at_quantile(0.5) as f64 / 1e3);
    extra.insert("open_chunk_max_ms", open_latency.max() as f64 / 1e3);
    extra.insert("heartbeats_target_per_s", p.clients as f64 / p.interval.as_secs_f64());
    extra.insert("watcher_conns", n_watchers as f64);
    extra.insert("gateway_conns", conns as f64);
    if p.cluster {
        extra.insert("nodes", nodes.len() as f64);
        for (node, &sessions) in nodes.iter().zip(&per_node) {
            eprintln!("node {} ({}): {sessions} sessions", node.name, node.addr);
            extra.insert(key(format!("sessions_on_{}", node.name)), sessions as f64);
        }
    }
    for ((pid, before), after) in p.node_pids.iter().zip(rss_before).zip(rss_after_ramp) {
        extra.insert(key(format!("rss_ramp_growth_bytes_pid_{pid}")), after.saturating_sub(before) as f64);
    }
    if let Some(watch) = watch {
        watch.finish(&mut extra).await;
    }
    let server = Server::from_samples(before, after_ramp, end_sample, heartbeats, p.clients, &mut extra);
    Ok(Report {
        scenario: "presence",
        target: "heartline".into(),
        mode: if p.udp_batches { "gateway-udp" } else { "gateway" }.into(),
        clients: p.clients,
        duration_s: elapsed,
        ops,
        wire_bytes_per_heartbeat: if heartbeats > 0 { bytes as f64 / heartbeats as f64 } else { 0.0 },
        server,
        errors: shared.errors.load(Relaxed),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartline_proto::MapMember;

    fn map(names: &[&str]) -> ClusterMap {
        let members = names
            .iter()
            .map(|n| MapMember { node: (*n).into(), addr: format!("{n}:7400").into(), ws: "".into(), tls: "".into() })
            .collect();
        ClusterMap { version: 7, partitions: 1024, members }
    }

    #[test]
    fn slices_are_contiguous_and_even() {
        let users: Vec<u64> = (1..=10).collect();
        let s = slices(&users, 4);
        assert_eq!(s, vec![vec![1, 2], vec![3, 4, 5], vec![6, 7], vec![8, 9, 10]]);
        // As many slices as gateways, some empty, when users are fewer.
        assert_eq!(slices(&[5, 9], 3), vec![vec![], vec![5], vec![9]]);
    }

    #[test]
    fn every_user_goes_to_its_owner_once() {
        let m = map(&["hl-1", "hl-2", "hl-3"]);
        let by_owner = split(&m, 1..30_001, 4);
        assert_eq!(by_owner.len(), 3);
        let mut all = Vec::new();
        for (i, gateways) in by_owner.iter().enumerate() {
            assert_eq!(gateways.len(), 4);
            let sizes: Vec<usize> = gateways.iter().map(Vec::len).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
            let mine: Vec<u64> = gateways.concat();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "sorted, so batches and lookups work");
            for &user in &mine {
                assert_eq!(m.owner_of(user).unwrap().node, m.members[i].node);
            }
            // About a third each (1,024 partitions over 3 members).
            assert!((8_000..12_000).contains(&mine.len()), "{}", mine.len());
            all.extend(mine);
        }
        all.sort_unstable();
        assert_eq!(all, (1..30_001).collect::<Vec<u64>>());
        // SPEC.md §14.2's worked example.
        let small = split(&m, 1..5, 1);
        assert!(small[2][0].contains(&1));
        assert!(small[1][0].contains(&3));
        assert!(small[0][0].contains(&4));
    }

    #[test]
    fn one_member_gets_what_a_single_node_gets() {
        let users: Vec<u64> = (100..1_100).collect();
        assert_eq!(split(&map(&["local"]), 100..1_100, 4), vec![slices(&users, 4)]);
        assert!(split(&map(&[]), 1..10, 2).is_empty());
    }
}
