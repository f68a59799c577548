//! The presence scenario in gateway mode: N simulated clients carried by a
//! few gateway connections (raw frames over TCP). Each gateway OPENs its
//! slice of the clients in chunks of `limits::MAX_BATCH`, then sends
//! BATCH_HEARTBEAT frames of its sorted sessions on absolute deadlines spread
//! evenly over the interval, so the server sees N / interval heartbeats per
//! second. Watcher connections (gateway tokens, no sessions of their own)
//! watch `friends` users each; the gateways change those users' statuses
//! with one-entry batches, and the watchers time send → PRESENCE_PUSH.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use heartline::auth::{Claims, Keyring, Subject};
use heartline::protocol::*;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};

use crate::procstat;
use crate::report::{histogram, Op, Report, Server};

/// How often a gateway sends a heartbeat batch (at most; batches are never
/// smaller than one session).
const TICK: Duration = Duration::from_millis(10);
/// At most this many watcher connections, whatever `--watchers` asks.
pub const MAX_WATCHER_CONNS: usize = 256;
/// How long watchers keep reading after the senders stop.
const DRAIN: Duration = Duration::from_secs(1);

/// What a gateway-mode run needs.
pub struct Params {
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
    pub seed: u64,
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
pub fn token(keyring: &Keyring, subject: Subject) -> Bytes {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Bytes::from(keyring.issue(&Claims { subject, expires_at: now + 24 * 3_600 }))
}

/// One raw protocol connection, past WELCOME.
struct Conn {
    read: FramedRead<OwnedReadHalf, MessageCodec>,
    write: OwnedWriteHalf,
    buf: BytesMut,
    next_req: u64,
}

impl Conn {
    async fn hello(addr: SocketAddr, role: Role, token: Bytes) -> Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut conn =
            Self { read: FramedRead::new(read, MessageCodec::default()), write, buf: BytesMut::new(), next_req: 0 };
        let hello = Hello { version: VERSION, role, device: Device::Desktop, want_udp: false, resume: 0, token };
        conn.send(&Message::Hello(hello)).await?;
        match conn.recv().await? {
            Message::Welcome(_) => Ok(conn),
            other => bail!("expected WELCOME, got {other:?}"),
        }
    }

    /// Sends one frame; returns its size on the wire.
    async fn send(&mut self, msg: &Message) -> Result<usize> {
        self.buf.clear();
        MessageCodec::default().encode(msg, &mut self.buf)?;
        self.write.write_all(&self.buf).await?;
        Ok(self.buf.len())
    }

    async fn recv(&mut self) -> Result<Message> {
        match self.read.next().await {
            Some(Ok(msg)) => Ok(msg),
            Some(Err(e)) => bail!("bad frame: {e}"),
            None => bail!("connection closed by the server"),
        }
    }

    /// Sends a request and returns its reply, skipping pushes.
    async fn request(&mut self, build: impl FnOnce(u64) -> Message) -> Result<Message> {
        self.next_req += 1;
        self.send(&build(self.next_req)).await?;
        loop {
            match self.recv().await? {
                Message::PresencePush { .. } => continue,
                Message::Error { code, message, .. } => bail!("error {code}: {message:?}"),
                reply => return Ok(reply),
            }
        }
    }
}

/// The slice of users gateway `g` of `gateways` owns.
fn slice(p: &Params, g: usize) -> Range<u64> {
    let n = p.clients;
    let (g, gs) = (g as u64, p.gateways as u64);
    p.user_base + n * g / gs..p.user_base + n * (g + 1) / gs
}

struct Opened {
    sessions: Vec<u64>,
    open_latency: Histogram<u64>,
}

/// Opens the slice's sessions, chunk after chunk.
async fn open(conn: &mut Conn, users: Range<u64>, ramp: &AtomicU64) -> Result<Opened> {
    let mut sessions = Vec::with_capacity((users.end - users.start) as usize);
    let mut open_latency = histogram();
    let mut next = users.start;
    while next < users.end {
        let end = (next + limits::MAX_BATCH as u64).min(users.end);
        let entries: Vec<OpenEntry> =
            (next..end).map(|user| OpenEntry { user, device: Device::Mobile, status: Status::Online }).collect();
        let sent = Instant::now();
        match conn.request(|req| Message::Open { req, entries }).await? {
            Message::Opened { sessions: got, .. } if got.len() as u64 == end - next => sessions.extend(got),
            other => bail!("expected OPENED with {} sessions, got {other:?}", end - next),
        }
        open_latency.saturating_record(sent.elapsed().as_micros() as u64);
        ramp.fetch_add(end - next, Relaxed);
        next = end;
    }
    Ok(Opened { sessions, open_latency })
}

/// Sends heartbeats and status changes until `end`.
async fn run_gateway(
    conn: Conn,
    sessions: Vec<u64>,
    targets: Vec<(u64, u64)>,
    p: Arc<Params>,
    shared: Arc<Shared>,
    start: Instant,
    end: Instant,
) -> Result<()> {
    let mut sorted = sessions;
    sorted.sort_unstable();
    // Pre-encoded frames: the ids never change, so neither do the batches.
    let ticks = (p.interval.as_secs_f64() / TICK.as_secs_f64()).max(1.0);
    let per_batch = ((sorted.len() as f64 / ticks).ceil() as usize).clamp(1, limits::MAX_BATCH);
    let mut frames: Vec<(Bytes, u64)> = Vec::new();
    for chunk in sorted.chunks(per_batch) {
        let entries: Vec<BatchEntry> = chunk.iter().map(|&id| (id, None)).collect();
        let mut buf = BytesMut::new();
        MessageCodec::default().encode(&Message::BatchHeartbeat(Batch::encode(&entries)?), &mut buf)?;
        frames.push((buf.freeze(), chunk.len() as u64));
    }
    let Conn { read, mut write, .. } = conn;
    let reader = tokio::spawn(drain_errors(read, shared.clone(), end + DRAIN));

    let step = if frames.is_empty() { p.interval } else { p.interval / frames.len() as u32 };
    let change_step = if p.status_changes_per_s > 0.0 && !targets.is_empty() {
        Some(Duration::from_secs_f64(p.gateways as f64 / p.status_changes_per_s))
    } else {
        None
    };
    let mut statuses: HashMap<u64, Status> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(p.seed ^ sorted.first().copied().unwrap_or(0));
    let (mut k, mut next_change) = (0u32, start + change_step.unwrap_or_default() / 2);
    let mut buf = BytesMut::new();
    loop {
        let next_batch = start + step * k;
        let change_due = change_step.is_some() && next_change < next_batch;
        let at = if change_due { next_change } else { next_batch };
        if at >= end || frames.is_empty() && !change_due {
            break;
        }
        tokio::time::sleep_until(at).await;
        if change_due {
            let (user, session) = targets[rng.usize(..targets.len())];
            let status = match statuses.get(&session) {
                Some(Status::Away) => Status::Busy,
                _ => Status::Away,
            };
            statuses.insert(session, status);
            buf.clear();
            MessageCodec::default()
                .encode(&Message::BatchHeartbeat(Batch::encode(&[(session, Some(status))])?), &mut buf)?;
            shared.pending.lock().expect("pending lock").insert(user, (Instant::now(), status));
            write.write_all(&buf).await?;
            shared.status_changes.fetch_add(1, Relaxed);
            next_change += change_step.unwrap_or_default();
        } else {
            let (frame, count) = &frames[k as usize % frames.len()];
            write.write_all(frame).await?;
            shared.heartbeats.fetch_add(*count, Relaxed);
            shared.heartbeat_bytes.fetch_add(frame.len() as u64, Relaxed);
            k += 1;
        }
    }
    write.flush().await?;
    reader.await??;
    // Dropping the connection ends its sessions (after the grace window).
    drop(write);
    Ok(())
}

/// Reads a gateway's incoming frames until `until`, counting ERRORs.
async fn drain_errors(
    mut read: FramedRead<OwnedReadHalf, MessageCodec>,
    shared: Arc<Shared>,
    until: Instant,
) -> Result<()> {
    loop {
        match tokio::time::timeout_at(until, read.next()).await {
            Err(_) => return Ok(()),
            Ok(Some(Ok(Message::Error { code, message, .. }))) => {
                shared.error(format!("server error {code}: {message:?}"))
            }
            Ok(Some(Ok(Message::Goaway { .. }))) => shared.error("GOAWAY"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                shared.error(format!("bad frame: {e}"));
                return Ok(());
            }
            Ok(None) => {
                shared.error("gateway connection closed by the server");
                return Ok(());
            }
        }
    }
}

/// A watcher: watches `friends`, then times every push that carries the
/// latest status sent for a user.
async fn watcher(mut conn: Conn, friends: Vec<u64>, shared: Arc<Shared>, until: Instant) -> Result<Histogram<u64>> {
    for chunk in friends.chunks(limits::MAX_IDS) {
        let users = chunk.to_vec();
        match conn.request(|req| Message::Watch { req, users }).await? {
            Message::Presence { .. } => {}
            other => bail!("expected PRESENCE, got {other:?}"),
        }
    }
    let mut latency = histogram();
    loop {
        match tokio::time::timeout_at(until, conn.read.next()).await {
            Err(_) => return Ok(latency),
            Ok(Some(Ok(Message::PresencePush { entries }))) => {
                let now = Instant::now();
                let pending = shared.pending.lock().expect("pending lock");
                for e in entries {
                    if let Some(&(sent, status)) = pending.get(&e.user) {
                        if status == e.status {
                            latency.saturating_record(now.duration_since(sent).as_micros() as u64);
                        }
                    }
                }
            }
            Ok(Some(Ok(Message::Error { code, message, .. }))) => shared.error(format!("watcher: {code} {message:?}")),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => bail!("watcher: bad frame: {e}"),
            Ok(None) => bail!("watcher: connection closed by the server"),
        }
    }
}

fn sample(pid: Option<u32>) -> Result<Option<procstat::Sample>> {
    pid.map(|pid| procstat::sample(pid).with_context(|| format!("reading /proc/{pid}"))).transpose()
}

/// Runs the scenario and builds the report.
pub async fn run(p: Params) -> Result<Report> {
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

    let before = sample(p.server_pid)?;
    eprintln!("opening {} sessions over {} gateway connections", p.clients, p.gateways);
    let ramp = Arc::new(AtomicU64::new(0));
    let progress = {
        let ramp = ramp.clone();
        let total = p.clients;
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = ramp.load(Relaxed);
                eprintln!("  opened {now}/{total} ({:.0}/s)", (now - last) as f64 / 5.0);
                last = now;
            }
        })
    };
    let ramp_started = Instant::now();
    let mut opening = Vec::new();
    for g in 0..p.gateways {
        let (p, ramp) = (p.clone(), ramp.clone());
        opening.push(tokio::spawn(async move {
            let token = token(&p.keyring, Subject::Gateway(format!("loadgen-{g}")));
            let mut conn = Conn::hello(p.addr, Role::Gateway, token).await?;
            let users = slice(&p, g);
            let opened = open(&mut conn, users, &ramp).await?;
            Ok::<_, anyhow::Error>((conn, opened))
        }));
    }
    let mut gateways = Vec::new();
    let mut open_latency = histogram();
    for task in opening {
        let (conn, opened) = task.await??;
        open_latency.add(&opened.open_latency)?;
        gateways.push((conn, opened.sessions));
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    progress.abort();
    let after_ramp = sample(p.server_pid)?;
    eprintln!("opened {} sessions in {ramp_s:.1} s ({:.0}/s)", p.clients, p.clients as f64 / ramp_s);

    // Watchers connect after the ramp, so the sessions' own "online" pushes are over.
    let mut watcher_conns = Vec::new();
    for w in 0..n_watchers {
        let token = token(&p.keyring, Subject::Gateway(format!("loadgen-watch-{w}")));
        watcher_conns.push(Conn::hello(p.addr, Role::Gateway, token).await?);
    }

    let start = Instant::now() + Duration::from_millis(200);
    let end = start + p.duration;
    let mut watching = Vec::new();
    for (conn, friends) in watcher_conns.into_iter().zip(friend_lists) {
        watching.push(tokio::spawn(watcher(conn, friends, shared.clone(), end + DRAIN)));
    }
    let mut running = Vec::new();
    for (g, (conn, sessions)) in gateways.into_iter().enumerate() {
        let users = slice(&p, g);
        let targets: Vec<(u64, u64)> =
            watched.iter().filter(|u| users.contains(u)).map(|&u| (u, sessions[(u - users.start) as usize])).collect();
        running.push(tokio::spawn(run_gateway(conn, sessions, targets, p.clone(), shared.clone(), start, end)));
    }
    let progress = {
        let shared = shared.clone();
        let expected = p.clients as f64 / p.interval.as_secs_f64();
        tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = shared.heartbeats.load(Relaxed);
                eprintln!(
                    "  heartbeats {now} ({:.0}/s, target {expected:.0}/s), status changes {}, errors {}",
                    (now - last) as f64 / 5.0,
                    shared.status_changes.load(Relaxed),
                    shared.errors.load(Relaxed)
                );
                last = now;
            }
        })
    };
    for task in running {
        if let Err(e) = task.await? {
            shared.error(format!("gateway: {e:#}"));
        }
    }
    let elapsed = start.elapsed().as_secs_f64().min(p.duration.as_secs_f64());
    let end_sample = sample(p.server_pid)?;
    let mut notify = histogram();
    for task in watching {
        match task.await? {
            Ok(h) => notify.add(&h)?,
            Err(e) => shared.error(format!("{e:#}")),
        }
    }
    progress.abort();

    let heartbeats = shared.heartbeats.load(Relaxed);
    let bytes = shared.heartbeat_bytes.load(Relaxed);
    let mut ops = BTreeMap::new();
    ops.insert("heartbeat", Op::counted(heartbeats));
    ops.insert("status_change", Op::counted(shared.status_changes.load(Relaxed)));
    if n_watchers > 0 {
        ops.insert("notify", Op::timed(notify));
    }
    let mut extra = BTreeMap::new();
    extra.insert("ramp_s", ramp_s);
    extra.insert("ramp_sessions_per_s", p.clients as f64 / ramp_s);
    extra.insert("open_chunk_p50_ms", open_latency.value_at_quantile(0.5) as f64 / 1e3);
    extra.insert("open_chunk_max_ms", open_latency.max() as f64 / 1e3);
    extra.insert("heartbeats_target_per_s", p.clients as f64 / p.interval.as_secs_f64());
    extra.insert("watcher_conns", n_watchers as f64);
    extra.insert("gateway_conns", p.gateways as f64);
    let server = Server::from_samples(before, after_ramp, end_sample, heartbeats, p.clients, &mut extra);
    Ok(Report {
        scenario: "presence",
        target: "heartline".into(),
        mode: "gateway".into(),
        clients: p.clients,
        duration_s: elapsed,
        ops,
        wire_bytes_per_heartbeat: if heartbeats > 0 { bytes as f64 / heartbeats as f64 } else { 0.0 },
        server,
        errors: shared.errors.load(Relaxed),
        extra,
    })
}
