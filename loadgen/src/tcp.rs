//! The presence scenario in tcp, tls, ws and wss modes: one real client
//! connection per simulated client, HELLO with a user token each, source
//! addresses spread over 127.0.0.1–127.0.0.254, then one steady-state
//! HEARTBEAT per client per interval. Measures the connect + authenticate
//! rate and latency, and (with `--server-pid`) the daemon's CPU during the
//! ramp-up, its memory per connection and its CPU per heartbeat. With
//! `--churn-per-s R` clients leave (BYE, close) and reconnect (connect,
//! HELLO) at R per second overall. Bounded by the process fd limit (20,000
//! here): at most [`MAX_CLIENTS`]. The modes differ only in the
//! [`ClientTransport`] the code here is generic over ([`transport`]). Also
//! owns the handshake waves that udp mode uses to get each client's UDP
//! credentials ([`connect_all`]).
//!
//! [`transport`]: crate::transport

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use heartline::auth::{Keyring, Subject};
use heartline_client::wire::{Connection, WireError};
use heartline_proto::*;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::gateway::token;
use crate::procstat::{sample_of as sample, Sample};
use crate::progress;
use crate::report::{Op, Report, Server, Timeline};
use crate::transport::{self, ClientTransport, TlsDial};

/// Connections this mode opens at most (the fd limit is 20,000 for both processes).
pub(crate) const MAX_CLIENTS: u64 = 19_000;

pub(crate) struct Params {
    /// The daemon's listener for the mode: TCP, TLS or WebSocket.
    pub addr: SocketAddr,
    /// How to check the daemon's certificate (tls and wss modes).
    pub tls: Option<TlsDial>,
    pub clients: u64,
    pub interval: Duration,
    pub duration: Duration,
    pub keyring: Keyring,
    pub user_base: u64,
    pub server_pid: Option<u32>,
    /// Leaves + reconnects per second, all clients together.
    pub churn_per_s: f64,
    /// Handshakes in flight at once during the ramp-up; 0: every client at
    /// once, the thundering herd of a restart.
    pub handshakes: usize,
    pub timeline: Arc<Timeline>,
}

/// What the clients of a tcp- or udp-mode run count as they go.
#[derive(Default)]
pub(crate) struct Counters {
    pub heartbeats: AtomicU64,
    /// Wire bytes of those heartbeats.
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    /// Counts an error, printing the first ten.
    pub(crate) fn error(&self, what: impl std::fmt::Display) {
        if self.errors.fetch_add(1, Relaxed) < 10 {
            eprintln!("error: {what}");
        }
    }
}

/// A plain-TCP client connection past WELCOME (udp mode, the feed scenario).
pub(crate) type ClientConn = Connection;

/// Connects as client `user` to `addr` over the transport `T` (HELLO with
/// its token, asking for UDP credentials if `want_udp`) and waits for its
/// WELCOME. The source address is chosen by `source` ([`transport::tcp_stream`]).
pub(crate) async fn connect<T: ClientTransport>(
    addr: SocketAddr,
    tls: Option<&TlsDial>,
    keyring: &Keyring,
    user: u64,
    source: u64,
    want_udp: bool,
) -> Result<(T, Welcome)> {
    let mut conn = T::open(addr, tls, source).await.with_context(|| format!("user {user}: {} connection", T::MODE))?;
    let token = token(keyring, Subject::User(user));
    let welcome =
        transport::hello(&mut conn, token, want_udp).await.with_context(|| format!("user {user}: expected WELCOME"))?;
    Ok((conn, welcome))
}

/// The ramp-up: every client connected and welcomed, `handshakes` at a
/// time, each timed as `connect_auth`. Returns the
/// connections in client order and the ramp's length in seconds.
pub(crate) async fn connect_all<T: ClientTransport>(
    p: &Arc<Params>,
    want_udp: bool,
) -> Result<(Vec<(T, Welcome)>, f64)> {
    if p.clients > MAX_CLIENTS {
        bail!("this mode holds one TCP connection per client: at most {MAX_CLIENTS} (the fd limit is 20,000)");
    }
    let in_flight = if p.handshakes == 0 { p.clients as usize } else { p.handshakes };
    eprintln!("connecting {} clients over {}, {in_flight} handshakes in flight", p.clients, T::MODE);
    let gate = Arc::new(Semaphore::new(in_flight));
    let done = Arc::new(AtomicU64::new(0));
    let shown = progress::ramp("connect", p.clients, done.clone());
    let ramp_started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..p.clients {
        let (p, gate, done) = (p.clone(), gate.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let sent = Instant::now();
            let conn = connect::<T>(p.addr, p.tls.as_ref(), &p.keyring, p.user_base + i, i, want_udp).await?;
            p.timeline.latency("connect_auth", sent.elapsed().as_micros() as u64);
            done.fetch_add(1, Relaxed);
            Ok::<_, anyhow::Error>(conn)
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    for t in tasks {
        conns.push(t.await??);
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    drop(shown);
    eprintln!("connected {} clients in {ramp_s:.1} s ({:.0}/s)", p.clients, p.clients as f64 / ramp_s);
    Ok((conns, ramp_s))
}

/// Sends BYE, so the session ends at once rather than after a grace window.
pub(crate) async fn bye<T: ClientTransport>(conn: &mut T) -> Result<(), WireError> {
    conn.send_frame(&transport::frame(&Message::Bye)?).await
}

/// Whether what a client connection read ends it: ERROR, GOAWAY, a bad
/// frame or the end of the stream (the daemon sends nothing else unasked).
pub(crate) fn ends_client(msg: &Result<Message, WireError>) -> bool {
    !matches!(msg, Ok(m) if !matches!(m, Message::Error { .. } | Message::Goaway { .. }))
}

/// What a client connection read, in words for the error lines: the
/// daemon's ERROR or GOAWAY, or why the connection failed.
pub(crate) fn describe(msg: &Result<Message, WireError>) -> String {
    match msg {
        Ok(message) => describe_message(message),
        Err(WireError::Closed) => "connection closed by the server".to_owned(),
        Err(e) => e.to_string(),
    }
}

/// A frame the loadgen did not expect, in words: an ERROR by its code's
/// name, a GOAWAY by its reason, anything else as it decoded.
pub(crate) fn describe_message(message: &Message) -> String {
    match message {
        Message::Error { code, message, .. } => server_error(*code, message),
        Message::Goaway { reason, .. } => format!("GOAWAY ({reason:?})"),
        other => format!("{other:?}"),
    }
}

/// An ERROR frame in words: its code by name (by number if this version
/// does not know it) and its message.
pub(crate) fn server_error(code: u16, message: &Text) -> String {
    let name = ErrorCode::from_u16(code).map_or_else(|| code.to_string(), |code| code.to_string());
    format!("ERROR {name}: {message:?}")
}

/// What every client of a run shares.
struct Plan {
    start: Instant,
    end: Instant,
    /// The probability that a client leaves and reconnects before a heartbeat.
    churn: f64,
    counters: Counters,
}

/// One client: heartbeats on absolute deadlines (offset `phase`) until the
/// end, reading whatever arrives, sometimes leaving and reconnecting first.
async fn client<T: ClientTransport>(p: Arc<Params>, plan: Arc<Plan>, i: u64, mut conn: T, phase: Duration) {
    let Plan { start, end, churn, ref counters } = *plan;
    // Encoded once, written as it is every interval.
    let Ok(frame) = transport::frame(&Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None })) else {
        counters.errors.fetch_add(1, Relaxed);
        return;
    };
    let mut rng = fastrand::Rng::with_seed(i);
    let mut k = 0u32;
    loop {
        // Every client stays until the end, heartbeat due or not: leaving at
        // the last heartbeat before it would close connections all through
        // the last interval, and the run would measure closes, not load.
        let due = start + phase + p.interval * k;
        tokio::select! {
            _ = tokio::time::sleep_until(due.min(end)) => {
                if due >= end {
                    break;
                }
                if churn > 0.0 && rng.f64() < churn {
                    let _ = bye(&mut conn).await;
                    p.timeline.count("churn_close", 1);
                    let sent = Instant::now();
                    match connect::<T>(p.addr, p.tls.as_ref(), &p.keyring, p.user_base + i, i, false).await {
                        Ok((fresh, _)) => conn = fresh,
                        Err(_) => {
                            counters.errors.fetch_add(1, Relaxed);
                            return;
                        }
                    }
                    p.timeline.latency("churn_connect", sent.elapsed().as_micros() as u64);
                }
                if conn.send_frame(&frame).await.is_err() {
                    counters.errors.fetch_add(1, Relaxed);
                    return;
                }
                counters.heartbeats.fetch_add(1, Relaxed);
                counters.bytes.fetch_add(frame.len() as u64, Relaxed);
                p.timeline.count("heartbeat", 1);
                k += 1;
            }
            msg = conn.recv_frame() => if ends_client(&msg) {
                counters.errors.fetch_add(1, Relaxed);
                return;
            },
        }
    }
    let _ = bye(&mut conn).await;
}

/// A run of the mode whose connections are `T`s.
pub(crate) async fn run<T: ClientTransport>(p: Params) -> Result<Report> {
    let p = Arc::new(p);
    let before = sample(p.server_pid)?;
    let (conns, ramp_s) = connect_all::<T>(&p, false).await?;
    let after_ramp = sample(p.server_pid)?;

    let start = Instant::now() + Duration::from_millis(200);
    let n = conns.len() as u32;
    // Each client heartbeats clients / interval times a second in all: this share of them reconnects first.
    let heartbeats_per_s = p.clients as f64 / p.interval.as_secs_f64();
    let churn = p.churn_per_s / heartbeats_per_s;
    if churn > 1.0 {
        bail!("--churn-per-s {} is more than one reconnect per heartbeat ({heartbeats_per_s:.0}/s)", p.churn_per_s);
    }
    let plan = Arc::new(Plan { start, end: start + p.duration, churn, counters: Counters::default() });
    p.timeline.ends_at(plan.end.into_std());
    let shown = {
        let (plan, mut rate) = (plan.clone(), progress::Rate::new());
        progress::run(start, p.duration, move || {
            let c = &plan.counters;
            format!("heartbeats {:.0}/s, errors {}", rate.per_s(c.heartbeats.load(Relaxed)), c.errors.load(Relaxed))
        })
    };
    let mut tasks = Vec::new();
    for (i, (conn, _)) in conns.into_iter().enumerate() {
        let phase = p.interval * i as u32 / n.max(1);
        tasks.push(tokio::spawn(client(p.clone(), plan.clone(), i as u64, conn, phase)));
    }
    for t in tasks {
        t.await?;
    }
    drop(shown);
    let elapsed = start.elapsed().as_secs_f64().min(p.duration.as_secs_f64());
    let samples = [before, after_ramp, sample(p.server_pid)?];
    let mut report = report(&p, T::MODE, &plan.counters, ramp_s, elapsed, samples);
    if p.churn_per_s > 0.0 {
        report.ops.insert("churn_close", p.timeline.op("churn_close"));
        report.ops.insert("churn_connect", p.timeline.op("churn_connect"));
    }
    Ok(report)
}

/// The report of a tcp- or udp-mode run of `elapsed_s` seconds, after a
/// ramp-up of `ramp_s`: `heartbeat` and `connect_auth`, the ramp's rate, and
/// the server's figures (`samples`: before the ramp, after it, at the end)
/// per heartbeat and per client. The mode adds its own ops and `extra`.
pub(crate) fn report(
    p: &Params,
    mode: &str,
    counters: &Counters,
    ramp_s: f64,
    elapsed_s: f64,
    samples: [Option<Sample>; 3],
) -> Report {
    let heartbeats = counters.heartbeats.load(Relaxed);
    let mut ops = BTreeMap::new();
    ops.insert("heartbeat", Op::counted(heartbeats));
    ops.insert("connect_auth", p.timeline.op("connect_auth"));
    let mut extra = BTreeMap::new();
    extra.insert("ramp_s", ramp_s);
    extra.insert("connect_auth_per_s", p.clients as f64 / ramp_s);
    extra.insert("heartbeats_target_per_s", p.clients as f64 / p.interval.as_secs_f64());
    let [before, after_ramp, end] = samples;
    let server = Server::from_samples(before, after_ramp, end, heartbeats, p.clients, &mut extra);
    let bytes = counters.bytes.load(Relaxed);
    Report {
        scenario: "presence",
        target: "heartline".into(),
        mode: mode.into(),
        clients: p.clients,
        duration_s: elapsed_s,
        ops,
        wire_bytes_per_heartbeat: if heartbeats > 0 { bytes as f64 / heartbeats as f64 } else { 0.0 },
        server,
        errors: counters.errors.load(Relaxed),
        extra,
    }
}
