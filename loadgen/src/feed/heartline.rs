//! The feed scenario against heartline, over the wire as real clients:
//! every connection is one user's, authenticated with a token signed by the
//! daemon's secret.
//!
//! - Setup: one connection per user sends all its FOLLOWs pipelined in one
//!   write, waits for the OKs and says BYE; [`SETUP_CONNS`] users at once.
//! - Posts: one short connection per post (so no session ever posts twice
//!   and a per-session post rate limit does not apply), opened just before
//!   the post's deadline; `post_ack` is PUBLISH sent → PUBLISHED.
//! - Fanout: observers (followers of the posting authors) hold LIVE
//!   connections; a post's fanout is PUBLISH sent → the ITEM_PUSH of its last
//!   watching observer. The daemon sends a chunk's live pushes after that
//!   chunk's inbox inserts and puts online followers in the first chunks, so
//!   this is what online followers see; the time to the last of all inboxes
//!   is the daemon's `heartline_fanout_lag_seconds`, read from `--admin`'s
//!   /metrics into `extra` (bucket bounds, from commit).
//! - Reads: reader connections read their home timeline (first page, or the
//!   page before their previous one) on absolute deadlines; `timeline_read`
//!   is TIMELINE sent → PAGE.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use heartline::auth::Keyring;
use heartline_client::wire::WireError;
use heartline_proto::*;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::{cursor, payload, post_number, report, user_id, Graph, Measured, Params, Tracker, Workload, PAGE};
use crate::procstat::sample_of as sample;
use crate::report::{histogram, Report, Server};
use crate::scrape;
use crate::tcp::{self, ClientConn as Conn};

/// Users whose follows are being loaded at once (connections open at once).
pub(crate) const SETUP_CONNS: usize = 512;
/// Post connections open at once at most (they live for one post each).
const POST_CONNS: usize = 2_000;
/// How long before its deadline a post's connection is opened.
const POST_LEAD: Duration = Duration::from_millis(200);
/// Handshakes in flight while the readers and observers connect.
const CONNECTING: usize = 64;

/// What a heartline run needs besides [`Params`].
pub(crate) struct Target {
    pub addr: SocketAddr,
    pub keyring: Keyring,
    /// The admin listener, for the daemon's fanout figures.
    pub admin: scrape::Admin,
    pub skip_setup: bool,
    /// Stop after loading the graph.
    pub setup_only: bool,
}

#[derive(Default)]
struct Errors(AtomicU64);

impl Errors {
    fn add(&self, what: impl std::fmt::Display) {
        if self.0.fetch_add(1, Relaxed) < 10 {
            eprintln!("error: {what}");
        }
    }
}

impl Target {
    /// One connection of `user`, past WELCOME, from a source address chosen
    /// by `i` ([`tcp::connect`]).
    async fn connect(&self, user: u64, i: u64) -> Result<Conn> {
        Ok(tcp::connect::<Conn>(self.addr, None, &self.keyring, user, i, false).await?.0)
    }
}

/// Waits for the reply to `req`, skipping pushes (handed to `push`).
async fn reply(conn: &mut Conn, req: u64, mut push: impl FnMut(&Item)) -> Result<Message> {
    loop {
        match conn.recv().await {
            Ok(Message::ItemPush(item)) => push(&item),
            Ok(Message::Error { req: r, code, message }) if r == req || r == 0 => {
                bail!(tcp::server_error(code, &message))
            }
            Ok(msg @ (Message::Ok { .. } | Message::Published { .. } | Message::Page { .. })) => return Ok(msg),
            Ok(_) => {}
            Err(WireError::Closed) => bail!("connection closed by the server"),
            Err(e) => bail!("bad frame: {e}"),
        }
    }
}

async fn bye(mut conn: Conn) {
    let _ = conn.send(&Message::Bye).await;
}

/// One user's follows: pipelined, then every OK. Returns the follows made.
async fn follow_all(t: &Target, graph: &Graph, u: usize) -> Result<u64> {
    let following = graph.following(u);
    let mut conn = t.connect(user_id(u), u as u64).await?;
    for (req, &f) in following.iter().enumerate() {
        conn.feed(&Message::Graph { req: req as u64 + 1, op: GraphOp::Follow, user: user_id(f as usize) })?;
    }
    conn.flush().await?;
    for _ in following {
        match conn.recv().await {
            Ok(Message::Ok { .. }) => {}
            other => bail!("user {}: expected OK to FOLLOW, got {other:?}", user_id(u)),
        }
    }
    bye(conn).await;
    Ok(following.len() as u64)
}

/// Loads the graph into the daemon; prints and returns the follow rate.
pub(crate) async fn setup(t: &Arc<Target>, w: &Arc<Workload>, extra: &mut BTreeMap<&'static str, f64>) -> Result<()> {
    let (graph, users) = (&w.graph, w.graph.users());
    eprintln!("setup: {} follows of {users} users, {SETUP_CONNS} connections at once", graph.edges());
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..SETUP_CONNS.min(users) {
        let (t, w, next, done) = (t.clone(), w.clone(), next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let u = next.fetch_add(1, Relaxed) as usize;
                if u >= w.graph.users() {
                    return Ok::<_, anyhow::Error>(());
                }
                done.fetch_add(follow_all(&t, &w.graph, u).await?, Relaxed);
            }
        }));
    }
    let progress = {
        let (next, done) = (next.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let s = started.elapsed().as_secs_f64();
                let (u, f) = (next.load(Relaxed).min(users as u64), done.load(Relaxed));
                eprintln!("setup: {u} users, {f} follows in {s:.0} s ({:.0} follows/s)", f as f64 / s);
            }
        })
    };
    for w in workers {
        w.await??;
    }
    progress.abort();
    let s = started.elapsed().as_secs_f64();
    let follows = done.load(Relaxed) as f64;
    eprintln!("setup: {follows} follows in {s:.1} s: {:.0} follows/s, {:.0} users/s", follows / s, users as f64 / s);
    extra.insert("setup_s", s);
    extra.insert("setup_follows_per_s", follows / s);
    Ok(())
}

/// An observer: LIVE on, then every ITEM_PUSH of ours goes to the tracker.
async fn observe(mut conn: Conn, tracker: Arc<Tracker>, mut stop: watch::Receiver<bool>, errors: Arc<Errors>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = conn.recv() => match msg {
                Ok(Message::ItemPush(item)) => {
                    if let Some(k) = post_number(&item.payload) {
                        tracker.seen(k);
                    }
                }
                Ok(Message::Error { code, message, .. }) => {
                    errors.add(format!("observer: {}", tcp::server_error(code, &message)))
                }
                Ok(_) => {}
                Err(WireError::Closed) => return errors.add("observer: closed by the server"),
                Err(e) => return errors.add(format!("observer: {e}")),
            },
        }
    }
    bye(conn).await;
}

/// A reader: home timeline reads on deadlines until `end`.
async fn read(mut conn: Conn, first: Instant, interval: Duration, end: Instant, seed: u64) -> Result<Histogram<u64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut latency = histogram();
    let mut oldest = None;
    for k in 0u32.. {
        let at = first + interval * k;
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let req = u64::from(k) + 1;
        let cursor = Cursor { max_id: cursor(&mut rng, oldest), ..Cursor::default() };
        let sent = Instant::now();
        conn.send(&Message::Timeline { req, source: Source::Home, cursor, limit: PAGE as u8 }).await?;
        let Message::Page { items, .. } = reply(&mut conn, req, |_| {}).await? else { bail!("expected PAGE") };
        latency.saturating_record(sent.elapsed().as_micros() as u64);
        // Page back from a full page; otherwise start from the top again.
        oldest = (items.len() == PAGE).then(|| items.last().map(|i| i.post)).flatten();
    }
    bye(conn).await;
    Ok(latency)
}

/// Post `k`: connect just before its deadline, PUBLISH, wait for PUBLISHED.
async fn post(t: Arc<Target>, w: Arc<Workload>, k: usize, start: Instant, tracker: Arc<Tracker>) -> Result<u64> {
    let planned = w.posts[k];
    let mut conn = t.connect(user_id(planned.author), k as u64).await?;
    tokio::time::sleep_until(start + planned.at).await;
    let sent = Instant::now();
    tracker.sent(k, sent);
    conn.send(&Message::Publish { req: 1, kind: 1, payload: Bytes::from(payload(k)) }).await?;
    reply(&mut conn, 1, |_| {}).await?;
    let took = sent.elapsed().as_micros() as u64;
    bye(conn).await;
    Ok(took)
}

/// The daemon's fanout figures from /metrics: bucket counts of
/// `heartline_fanout_lag_seconds` (upper bound in µs, cumulative count),
/// and the inserts counter.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct DaemonFanout {
    pub lag_buckets: Vec<(f64, u64)>,
    pub lag_sum_s: f64,
    pub inserts: u64,
}

impl DaemonFanout {
    pub(crate) fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let value: f64 = value.parse().unwrap_or(0.0);
            if let Some(le) = name.strip_prefix("heartline_fanout_lag_seconds_bucket{le=\"") {
                let le = le.trim_end_matches("\"}");
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse::<f64>().unwrap_or(0.0) * 1e6 };
                out.lag_buckets.push((bound, value as u64));
            } else if name == "heartline_fanout_lag_seconds_sum" {
                out.lag_sum_s = value;
            } else if name == "heartline_fanout_inserts_total" {
                out.inserts = value as u64;
            }
        }
        out
    }

    /// Figures of what happened between `self` (before) and `after`: the
    /// bucket bound under which quantile `q` lies, the mean, the inserts.
    pub(crate) fn since(&self, after: &Self, extra: &mut BTreeMap<&'static str, f64>) {
        let count_at = |i: usize| after.lag_buckets[i].1 - self.lag_buckets.get(i).map_or(0, |b| b.1);
        let total = if after.lag_buckets.is_empty() { 0 } else { count_at(after.lag_buckets.len() - 1) };
        extra.insert("daemon_fanout_count", total as f64);
        extra.insert("daemon_fanout_inserts", after.inserts.saturating_sub(self.inserts) as f64);
        if total == 0 {
            return;
        }
        extra.insert("daemon_fanout_lag_mean_us", (after.lag_sum_s - self.lag_sum_s) * 1e6 / total as f64);
        for (key, q) in [("daemon_fanout_lag_p50_le_us", 0.5), ("daemon_fanout_lag_p99_le_us", 0.99)] {
            let wanted = (total as f64 * q).ceil() as u64;
            let at = (0..after.lag_buckets.len()).find(|&i| count_at(i) >= wanted);
            if let Some(i) = at {
                extra.insert(key, after.lag_buckets[i].0);
            }
        }
    }
}

/// GET /metrics from the admin listener; `None` (with a note) if it fails.
async fn scrape(admin: &scrape::Admin) -> Option<DaemonFanout> {
    match admin.metrics().await {
        Ok(body) => Some(DaemonFanout::parse(&body)),
        Err(e) => {
            eprintln!("note: no /metrics from {} ({e:#}): the daemon's fanout lag is not reported", admin.addr);
            None
        }
    }
}

pub(crate) async fn run(p: Params, t: Target, workload: Workload) -> Result<Report> {
    let (p, t, w) = (Arc::new(p), Arc::new(t), Arc::new(workload));
    let errors = Arc::new(Errors::default());
    let mut extra = BTreeMap::new();
    if !t.skip_setup {
        let before = sample(p.server_pid)?;
        setup(&t, &w, &mut extra).await?;
        if let (Some(b), Some(a)) = (before, sample(p.server_pid)?) {
            extra.insert("setup_server_cpu_s", a.cpu_s - b.cpu_s);
        }
    }
    if t.setup_only {
        let (post_ack, timeline_read) = (histogram(), histogram());
        let (target, mode, errors) = ("heartline".into(), p.strategy.clone(), errors.0.load(Relaxed));
        let measured = Measured { target, mode, post_ack, timeline_read, elapsed_s: 0.0, server: None, errors, extra };
        return Ok(report(&p, &Tracker::new(Vec::new()), measured));
    }

    let before = sample(p.server_pid)?;
    let ramp_started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let connecting = |users: Vec<usize>, live: bool| {
        let tasks: Vec<_> = users
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let (t, gate) = (t.clone(), gate.clone());
                tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await?;
                    let mut conn = t.connect(user_id(u), i as u64).await?;
                    if live {
                        conn.send(&Message::Live { req: 1, on: true }).await?;
                        reply(&mut conn, 1, |_| {}).await?;
                    }
                    Ok::<_, anyhow::Error>(conn)
                })
            })
            .collect();
        async move {
            let mut conns = Vec::new();
            for task in tasks {
                conns.push(task.await??);
            }
            Ok::<_, anyhow::Error>(conns)
        }
    };
    eprintln!("connecting {} observers (LIVE) and {} readers", w.observers.len(), w.readers.len());
    let observers = connecting(w.observers.clone(), true).await.context("connecting observers")?;
    let readers = connecting(w.readers.clone(), false).await.context("connecting readers")?;
    let after_ramp = sample(p.server_pid)?;
    extra.insert("ramp_s", ramp_started.elapsed().as_secs_f64());
    let metrics_before = scrape(&t.admin).await;

    let tracker = Arc::new(Tracker::new(w.watched.clone()));
    let (stop, stopped) = watch::channel(false);
    let observing: Vec<_> = observers
        .into_iter()
        .map(|c| tokio::spawn(observe(c, tracker.clone(), stopped.clone(), errors.clone())))
        .collect();
    let start = Instant::now() + POST_LEAD + Duration::from_millis(100);
    let end = start + p.duration;
    eprintln!("running for {:?}: {} posts/s, {} reads/s", p.duration, p.posts_per_s, p.reads_per_s);
    let reading: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (first, interval) = w.read_plan(&p, i);
            tokio::spawn(read(c, start + first, interval, end, p.seed ^ i as u64))
        })
        .collect();
    let post_ack = Arc::new(Mutex::new(histogram()));
    let posting = {
        let (t, w, tracker, post_ack, errors) =
            (t.clone(), w.clone(), tracker.clone(), post_ack.clone(), errors.clone());
        tokio::spawn(async move {
            let gate = Arc::new(Semaphore::new(POST_CONNS));
            let mut tasks = Vec::with_capacity(w.posts.len());
            for k in 0..w.posts.len() {
                tokio::time::sleep_until((start + w.posts[k].at).checked_sub(POST_LEAD).unwrap_or(start)).await;
                let Ok(permit) = gate.clone().acquire_owned().await else { break };
                let (t, w, tracker, post_ack, errors) =
                    (t.clone(), w.clone(), tracker.clone(), post_ack.clone(), errors.clone());
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    match post(t, w, k, start, tracker).await {
                        Ok(us) => post_ack.lock().unwrap_or_else(|e| e.into_inner()).saturating_record(us),
                        Err(e) => errors.add(format!("post {k}: {e:#}")),
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    };
    let mut timeline_read = histogram();
    for task in reading {
        match task.await? {
            Ok(h) => timeline_read.add(&h)?,
            Err(e) => errors.add(format!("reader: {e:#}")),
        }
    }
    posting.await?;
    let elapsed = start.elapsed().as_secs_f64().min(p.duration.as_secs_f64());
    let drain_until = Instant::now() + super::DRAIN;
    while !tracker.complete() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    for task in observing {
        task.await?;
    }
    let end_sample = sample(p.server_pid)?;
    if let (Some(b), Some(a)) = (metrics_before, scrape(&t.admin).await) {
        b.since(&a, &mut extra);
    }
    let post_ack = std::mem::replace(&mut *post_ack.lock().unwrap_or_else(|e| e.into_inner()), histogram());
    let ops = post_ack.len() + timeline_read.len();
    let connections = (w.observers.len() + w.readers.len()) as u64;
    let server = Server::from_samples(before, after_ramp, end_sample, ops, connections, &mut extra);
    let measured = Measured {
        target: "heartline".into(),
        mode: p.strategy.clone(),
        post_ack,
        timeline_read,
        elapsed_s: elapsed,
        server,
        errors: errors.0.load(Relaxed),
        extra,
    };
    Ok(report(&p, &tracker, measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_fanout_lag_from_metrics() {
        let at = |counts: [u64; 3], sum: f64, inserts: u64| {
            format!(
                "# TYPE heartline_fanout_lag_seconds histogram\n\
                 heartline_fanout_lag_seconds_bucket{{le=\"0.001\"}} {}\n\
                 heartline_fanout_lag_seconds_bucket{{le=\"0.01\"}} {}\n\
                 heartline_fanout_lag_seconds_bucket{{le=\"+Inf\"}} {}\n\
                 heartline_fanout_lag_seconds_sum {sum}\n\
                 heartline_fanout_inserts_total {inserts}\n",
                counts[0], counts[1], counts[2]
            )
        };
        let before = DaemonFanout::parse(&at([5, 5, 5], 0.001, 10));
        assert_eq!(before.lag_buckets, vec![(1_000.0, 5), (10_000.0, 5), (f64::INFINITY, 5)]);
        let after = DaemonFanout::parse(&at([55, 104, 105], 0.201, 1_010));
        let mut extra = BTreeMap::new();
        before.since(&after, &mut extra);
        assert_eq!(extra["daemon_fanout_count"], 100.0);
        assert_eq!(extra["daemon_fanout_inserts"], 1_000.0);
        assert_eq!(extra["daemon_fanout_lag_p50_le_us"], 1_000.0);
        assert_eq!(extra["daemon_fanout_lag_p99_le_us"], 10_000.0);
        assert!((extra["daemon_fanout_lag_mean_us"] - 2_000.0).abs() < 1e-6);
    }
}
