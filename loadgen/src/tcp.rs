//! The presence scenario in tcp mode: one real client connection per
//! simulated client, HELLO with a user token each, source addresses spread
//! over 127.0.0.1–127.0.0.254, then one steady-state HEARTBEAT per client per
//! interval. Measures the connect + authenticate rate and latency, and (with
//! `--server-pid`) the daemon's memory per connection. Bounded by the process
//! fd limit (20,000 here): at most [`MAX_CLIENTS`].

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use futures_util::StreamExt;
use heartline::auth::{Keyring, Subject};
use heartline::protocol::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::{Encoder, Framed};

use crate::gateway::token;
use crate::procstat;
use crate::report::{histogram, Op, Report, Server};

/// Connections this mode opens at most (the fd limit is 20,000 for both processes).
pub const MAX_CLIENTS: u64 = 19_000;
/// Handshakes in flight at once.
const CONCURRENCY: usize = 64;

pub struct Params {
    pub addr: SocketAddr,
    pub clients: u64,
    pub interval: Duration,
    pub duration: Duration,
    pub keyring: Keyring,
    pub user_base: u64,
    pub server_pid: Option<u32>,
}

#[derive(Default)]
struct Counters {
    heartbeats: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

async fn connect(p: &Params, i: u64) -> Result<Framed<TcpStream, MessageCodec>> {
    let socket = TcpSocket::new_v4()?;
    if p.addr.ip().is_loopback() {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % 254) as u8);
        socket.bind(SocketAddr::new(source.into(), 0))?;
    }
    let stream = socket.connect(p.addr).await.with_context(|| format!("connecting to {}", p.addr))?;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, MessageCodec::default());
    let token = token(&p.keyring, Subject::User(p.user_base + i));
    let hello =
        Hello { version: VERSION, role: Role::Client, device: Device::Desktop, want_udp: false, resume: 0, token };
    futures_util::SinkExt::send(&mut framed, &Message::Hello(hello)).await?;
    match framed.next().await {
        Some(Ok(Message::Welcome(_))) => Ok(framed),
        other => bail!("expected WELCOME, got {other:?}"),
    }
}

/// Heartbeats on absolute deadlines (offset `phase`) until `end`, reading whatever arrives.
async fn client(
    framed: Framed<TcpStream, MessageCodec>,
    phase: Duration,
    interval: Duration,
    start: Instant,
    end: Instant,
    counters: Arc<Counters>,
) {
    let mut frame = BytesMut::new();
    let hb = Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None });
    if MessageCodec::default().encode(&hb, &mut frame).is_err() {
        counters.errors.fetch_add(1, Relaxed);
        return;
    }
    let parts = framed.into_parts();
    let (mut read, mut write) = parts.io.into_split();
    let mut incoming = tokio_util::codec::FramedRead::new(&mut read, MessageCodec::default());
    let mut k = 0u32;
    loop {
        let at = start + phase + interval * k;
        if at >= end {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {
                if write.write_all(&frame).await.is_err() {
                    counters.errors.fetch_add(1, Relaxed);
                    return;
                }
                counters.heartbeats.fetch_add(1, Relaxed);
                counters.bytes.fetch_add(frame.len() as u64, Relaxed);
                k += 1;
            }
            msg = incoming.next() => match msg {
                Some(Ok(Message::Error { .. } | Message::Goaway { .. })) | Some(Err(_)) | None => {
                    counters.errors.fetch_add(1, Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = write
        .write_all(&{
            let mut bye = BytesMut::new();
            let _ = MessageCodec::default().encode(&Message::Bye, &mut bye);
            bye
        })
        .await;
}

fn sample(pid: Option<u32>) -> Result<Option<procstat::Sample>> {
    pid.map(|pid| procstat::sample(pid).with_context(|| format!("reading /proc/{pid}"))).transpose()
}

pub async fn run(p: Params) -> Result<Report> {
    if p.clients > MAX_CLIENTS {
        bail!("--mode tcp opens one connection per client: at most {MAX_CLIENTS} (the fd limit is 20,000)");
    }
    let p = Arc::new(p);
    let before = sample(p.server_pid)?;
    eprintln!("connecting {} clients, {CONCURRENCY} handshakes in flight", p.clients);
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let ramp_started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..p.clients {
        let (p, gate) = (p.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let sent = Instant::now();
            let framed = connect(&p, i).await?;
            Ok::<_, anyhow::Error>((framed, sent.elapsed()))
        }));
    }
    let mut conns = Vec::new();
    let mut handshake = histogram();
    for t in tasks {
        let (framed, took) = t.await??;
        handshake.saturating_record(took.as_micros() as u64);
        conns.push(framed);
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    let after_ramp = sample(p.server_pid)?;
    eprintln!("connected {} clients in {ramp_s:.1} s ({:.0}/s)", p.clients, p.clients as f64 / ramp_s);

    let counters = Arc::new(Counters::default());
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + p.duration;
    let n = conns.len() as u32;
    let mut tasks = Vec::new();
    for (i, framed) in conns.into_iter().enumerate() {
        let phase = p.interval * i as u32 / n.max(1);
        tasks.push(tokio::spawn(client(framed, phase, p.interval, start, end, counters.clone())));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64().min(p.duration.as_secs_f64());
    let end_sample = sample(p.server_pid)?;

    let heartbeats = counters.heartbeats.load(Relaxed);
    let mut ops = BTreeMap::new();
    ops.insert("heartbeat", Op::counted(heartbeats));
    ops.insert("connect_auth", Op::timed(handshake));
    let mut extra = BTreeMap::new();
    extra.insert("ramp_s", ramp_s);
    extra.insert("connect_auth_per_s", p.clients as f64 / ramp_s);
    extra.insert("heartbeats_target_per_s", p.clients as f64 / p.interval.as_secs_f64());
    let server = Server::from_samples(before, after_ramp, end_sample, heartbeats, p.clients, &mut extra);
    let bytes = counters.bytes.load(Relaxed);
    Ok(Report {
        scenario: "presence",
        target: "heartline".into(),
        mode: "tcp".into(),
        clients: p.clients,
        duration_s: elapsed,
        ops,
        wire_bytes_per_heartbeat: if heartbeats > 0 { bytes as f64 / heartbeats as f64 } else { 0.0 },
        server,
        errors: counters.errors.load(Relaxed),
        extra,
    })
}
