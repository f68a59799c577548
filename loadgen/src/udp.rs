//! UDP heartbeats (SPEC.md §8): the [`Sender`] that puts many datagrams on
//! the wire in few system calls (GSO through quinn-udp, the daemon's own UDP
//! crate), gateway BATCH datagrams for gateway mode's `--udp-batches`, and
//! the presence scenario in udp mode.
//!
//! Udp mode: each client connects and sends HELLO with `want_udp` (the
//! handshake waves of [`tcp::connect_all`]); its WELCOME carries its session
//! id, the UDP port and its key. The client keeps that TCP connection: the key
//! is bound to the connection that owns the session, and a closed connection
//! puts the session in its grace window, where datagrams naming it are
//! dropped (§6.7, §8.8). So udp mode holds one TCP connection per client and
//! is bounded like tcp mode ([`tcp::MAX_CLIENTS`]); gateway mode with
//! `--udp-batches` is how UDP reaches millions of sessions. Then
//! [`SOCKETS`] sockets send one HEARTBEAT datagram per client per interval,
//! on absolute deadlines spread over the interval, each socket's due
//! datagrams of a [`TICK`] in one burst. The datagrams are never answered:
//! what the daemon made of them comes from its /metrics ([`crate::scrape`]).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use heartline_proto::udp::{self, Key};
use heartline_proto::BatchEntry;
use quinn_udp::{Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::procstat::sample_of as sample;
use crate::progress;
use crate::report::Report;
use crate::scrape::UdpWatch;
use crate::tcp::{self, ends_client, Counters};

/// Sending sockets in udp mode: several source ports, so the daemon's
/// SO_REUSEPORT sockets (one per worker) all get a share.
pub(crate) const SOCKETS: usize = 4;
/// Datagrams due within one tick go out together.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// The largest datagram sent: SPEC.md §8.7's unfragmented size on a
/// 1,500-byte MTU (a gateway batch is split to fit).
pub(crate) const MAX_DATAGRAM: usize = 1_452;
/// Bytes in one GSO send at most (the kernel's limit is 64 KiB with headers).
const MAX_GSO_BYTES: usize = 60_000;

/// Datagrams laid end to end, to be sent together.
#[derive(Default)]
pub(crate) struct Datagrams {
    buf: BytesMut,
    lens: Vec<usize>,
}

impl Datagrams {
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.lens.clear();
    }

    pub(crate) fn count(&self) -> usize {
        self.lens.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends a single-session HEARTBEAT datagram.
    fn heartbeat(&mut self, key: &Key, session: u64, seq: u32) {
        let start = self.buf.len();
        udp::write_heartbeat(&mut self.buf, key, session, seq, None);
        self.lens.push(self.buf.len() - start);
    }

    /// Appends `entries` (ascending ids) as gateway BATCH datagrams of at
    /// most [`MAX_DATAGRAM`] bytes, halving the entries until each fits;
    /// every datagram takes the next `seq`.
    pub(crate) fn batches(&mut self, key: &Key, gateway: u64, seq: &mut u32, entries: &[BatchEntry]) -> Result<()> {
        let start = self.buf.len();
        // A sender must not wrap its sequence number (§8.3).
        let next = seq.checked_add(1).context("the UDP sequence space is used up")?;
        udp::write_batch(&mut self.buf, key, gateway, next, entries)?;
        let len = self.buf.len() - start;
        if len > MAX_DATAGRAM && entries.len() > 1 {
            self.buf.truncate(start);
            let (a, b) = entries.split_at(entries.len() / 2);
            self.batches(key, gateway, seq, a)?;
            return self.batches(key, gateway, seq, b);
        }
        *seq = next;
        self.lens.push(len);
        Ok(())
    }
}

/// One UDP socket towards the daemon, sending with GSO: a run of
/// equal-sized datagrams (the last may be shorter) is one system call.
pub(crate) struct Sender {
    socket: UdpSocket,
    state: UdpSocketState,
    dest: SocketAddr,
}

impl Sender {
    pub(crate) async fn bind(dest: SocketAddr) -> Result<Self> {
        let local: SocketAddr =
            if dest.ip().is_loopback() { ([127, 0, 0, 1], 0).into() } else { ([0, 0, 0, 0], 0).into() };
        let socket = UdpSocket::bind(local).await.context("binding a UDP socket")?;
        let state = UdpSocketState::new((&socket).into()).context("setting up the UDP socket")?;
        Ok(Self { socket, state, dest })
    }

    /// Sends every datagram of `d`; returns how many could not be sent and
    /// the first error.
    pub(crate) async fn send(&self, d: &Datagrams) -> (usize, Option<io::Error>) {
        let (mut failed, mut first) = (0, None);
        let max_segments = self.state.max_gso_segments().max(1);
        let (mut i, mut offset) = (0, 0);
        while i < d.lens.len() {
            let size = d.lens[i];
            let (mut j, mut bytes) = (i, 0);
            while j < d.lens.len() && j - i < max_segments && bytes + d.lens[j] <= MAX_GSO_BYTES.max(size) {
                let len = d.lens[j];
                if len > size {
                    break;
                }
                bytes += len;
                j += 1;
                if len < size {
                    break; // only the last segment may be shorter
                }
            }
            let transmit = Transmit {
                destination: self.dest,
                ecn: None,
                contents: &d.buf[offset..offset + bytes],
                segment_size: (j - i > 1).then_some(size),
                src_ip: None,
            };
            let sent = self
                .socket
                .async_io(Interest::WRITABLE, || self.state.try_send((&self.socket).into(), &transmit))
                .await;
            if let Err(e) = sent {
                failed += j - i;
                first.get_or_insert(e);
            }
            (i, offset) = (j, offset + bytes);
        }
        (failed, first)
    }
}

/// What udp mode needs: the tcp mode's parameters (the handshakes are the
/// same, with `want_udp`), and where to read the daemon's UDP counters.
pub(crate) struct Params {
    pub tcp: tcp::Params,
    pub admin: crate::scrape::Admin,
}

/// A client as a sending socket sees it.
struct Client {
    session: u64,
    key: Key,
    seq: u32,
    /// When in each interval its heartbeat is due.
    phase: Duration,
}

/// One socket's clients (in phase order), heartbeating until `end`.
async fn send_loop(
    sender: Sender,
    mut clients: Vec<Client>,
    p: Arc<tcp::Params>,
    start: Instant,
    end: Instant,
    counters: Arc<Counters>,
) {
    if clients.is_empty() {
        return;
    }
    let mut out = Datagrams::default();
    let (mut next, mut round, mut tick) = (0usize, 0u32, 0u32);
    let due = |next: usize, round: u32, clients: &[Client]| start + p.interval * round + clients[next].phase;
    while due(next, round, &clients) < end {
        let at = start + TICK * tick;
        tokio::time::sleep_until(at).await;
        out.clear();
        while due(next, round, &clients) <= at && due(next, round, &clients) < end {
            let c = &mut clients[next];
            let Some(seq) = c.seq.checked_add(1) else { break };
            c.seq = seq;
            out.heartbeat(&c.key, c.session, seq);
            next += 1;
            if next == clients.len() {
                (next, round) = (0, round + 1);
            }
        }
        if out.count() > 0 {
            let (failed, error) = sender.send(&out).await;
            if let Some(e) = error {
                counters.error(format!("{failed} datagrams not sent: {e}"));
            }
            let sent = (out.count() - failed) as u64;
            counters.heartbeats.fetch_add(sent, Relaxed);
            counters.bytes.fetch_add(out.bytes() as u64, Relaxed);
            p.timeline.count("heartbeat", sent);
        }
        tick += 1;
    }
}

/// Keeps a client's TCP connection (it owns the session and its key) until
/// `until`, then says BYE; anything the daemon sends unasked is an error.
async fn hold(mut conn: tcp::ClientConn, until: Instant, counters: Arc<Counters>) {
    loop {
        match tokio::time::timeout_at(until, conn.recv()).await {
            Err(_) => break,
            Ok(msg) if ends_client(&msg) => {
                counters.error(format!("a client connection ended: {}", tcp::describe(&msg)));
                return;
            }
            Ok(_) => {}
        }
    }
    let _ = tcp::bye(&mut conn).await;
}

pub(crate) async fn run(p: Params) -> Result<Report> {
    let Params { tcp: tp, admin } = p;
    let p = Arc::new(tp);
    let before = sample(p.server_pid)?;
    let (conns, ramp_s) = tcp::connect_all::<tcp::ClientConn>(&p, true).await?;
    let after_ramp = sample(p.server_pid)?;
    let port = conns.first().map_or(0, |(_, w)| w.udp_port);
    if conns.iter().any(|(_, w)| w.udp_port == 0 || w.udp_port != port) {
        bail!("the daemon granted no UDP (WELCOME udp_port 0, or not the same port for every client)");
    }
    let dest = SocketAddr::new(p.addr.ip(), port);
    let watch = UdpWatch::start(admin).await;

    let counters = Arc::new(Counters::default());
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + p.duration;
    p.timeline.ends_at(end.into_std());
    let n = conns.len() as u32;
    let mut per_socket: Vec<Vec<Client>> = (0..SOCKETS).map(|_| Vec::new()).collect();
    let mut holding = Vec::new();
    for (i, (conn, welcome)) in conns.into_iter().enumerate() {
        let phase = p.interval * i as u32 / n.max(1);
        per_socket[i % SOCKETS].push(Client { session: welcome.session, key: welcome.udp_key, seq: 0, phase });
        // The last datagrams need their sessions until the daemon has read them.
        holding.push(tokio::spawn(hold(conn, end + Duration::from_millis(500), counters.clone())));
    }
    let shown = {
        let (counters, mut rate) = (counters.clone(), progress::Rate::new());
        progress::run(start, p.duration, move || {
            let heartbeats = counters.heartbeats.load(Relaxed);
            format!("datagrams {:.0}/s, errors {}", rate.per_s(heartbeats), counters.errors.load(Relaxed))
        })
    };
    let mut sending = Vec::new();
    for clients in per_socket {
        let sender = Sender::bind(dest).await?;
        sending.push(tokio::spawn(send_loop(sender, clients, p.clone(), start, end, counters.clone())));
    }
    for task in sending {
        task.await?;
    }
    drop(shown);
    let elapsed = start.elapsed().as_secs_f64().min(p.duration.as_secs_f64());
    let samples = [before, after_ramp, sample(p.server_pid)?];
    for task in holding {
        task.await?;
    }

    let mut report = tcp::report(&p, "udp", &counters, ramp_s, elapsed, samples);
    report.extra.insert("udp_sockets", SOCKETS as f64);
    watch.finish(&mut report.extra).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use heartline_proto::udp::{parse, Body, ReplayWindow};

    use super::*;

    #[test]
    fn batches_split_to_fit_and_each_verifies_with_its_own_seq() {
        let key = [7u8; 16];
        // Ids 1,000 apart need wide gaps: 5,000 of them cannot fit in one datagram.
        let entries: Vec<BatchEntry> = (0..5_000u64).map(|i| (1 + i * 1_000, None)).collect();
        let mut d = Datagrams::default();
        let mut seq = 0;
        d.batches(&key, 9, &mut seq, &entries).unwrap();
        assert!(d.count() > 1, "{}", d.count());
        assert_eq!(seq as usize, d.count());
        let (mut offset, mut ids, mut window) = (0, 0, ReplayWindow::default());
        for &len in &d.lens {
            assert!(len <= MAX_DATAGRAM, "{len}");
            let dg = parse(&d.buf[offset..offset + len]).unwrap();
            assert_eq!(dg.id, 9);
            match dg.open(&key, &mut window).unwrap() {
                (_, Body::Batch(view)) => ids += view.len(),
                other => panic!("{other:?}"),
            }
            offset += len;
        }
        assert_eq!(ids, entries.len());
    }

    #[tokio::test]
    async fn sends_runs_of_datagrams_that_arrive_one_by_one() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sender = Sender::bind(receiver.local_addr().unwrap()).await.unwrap();
        let mut d = Datagrams::default();
        // Two sizes (1- and 3-byte ids), so the sends are split where the size changes.
        for (i, session) in [1u64, 2, 3, 100_000, 100_001].into_iter().enumerate() {
            d.heartbeat(&[1; 16], session, i as u32 + 1);
        }
        assert_eq!(sender.send(&d).await.0, 0);
        let mut buf = [0u8; 2_048];
        let mut sizes = Vec::new();
        for _ in 0..d.count() {
            let (len, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(parse(&buf[..len]).unwrap().ty, udp::types::HEARTBEAT);
            sizes.push(len);
        }
        assert_eq!(sizes, d.lens);
    }
}
