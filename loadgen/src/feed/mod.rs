//! The feed scenario: a synthetic follow graph ([`graph`]), then posts by
//! authors chosen by the popularity law and home-timeline reads of a pool of
//! readers, on absolute deadlines, for a duration. Measures `post_ack`,
//! `fanout` and `timeline_read` against heartline ([`heartline`]) or the same
//! workload done the reference way against Redis ([`redis`]).
//!
//! This module owns what both targets share: the schedule (who posts when,
//! who reads, who watches), post payloads that name their post, the fanout
//! tracker and the report. It must not talk to a server itself.

mod graph;
pub(crate) mod heartline;
pub(crate) mod redis;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use tokio::time::Instant;

pub(crate) use graph::Graph;

use crate::report::{histogram, Op, Report, Server};

/// `heartline-loadgen feed`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The daemon's TCP address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    addr: SocketAddr,
    /// Users in the follow graph (a few celebrities have ≥ 1M followers from ~1.09M).
    #[arg(long, default_value_t = 1_100_000)]
    users: usize,
    /// The daemon's `[feed] strategy` (HEARTLINE_FEED__STRATEGY): only labels the report.
    #[arg(long, default_value = "hybrid", value_parser = ["pull", "push", "hybrid"])]
    strategy: String,
    /// Posts per second, authors by the popularity law.
    #[arg(long, default_value_t = 100.0)]
    posts_per_s: f64,
    /// Home-timeline reads per second, spread over the readers.
    #[arg(long, default_value_t = 1_000.0)]
    reads_per_s: f64,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[command(flatten)]
    common: crate::Common,
    /// The graph is already in the daemon's data dir (same --users and --seed).
    #[arg(long, conflicts_with = "setup_only")]
    skip_setup: bool,
    /// Load the graph, report the setup rate and stop.
    #[arg(long)]
    setup_only: bool,
    /// Reader connections (users reading their home timeline).
    #[arg(long, default_value_t = 1_000)]
    readers: usize,
    /// LIVE connections of followers that time the fanout, at most.
    #[arg(long, default_value_t = 2_000)]
    observers: usize,
    /// The daemon's `[feed] max_following`: no user follows more.
    #[arg(long, default_value_t = 5_000)]
    max_following: usize,
    /// Seed of the graph and the schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl Args {
    pub(crate) fn common(&self) -> &crate::Common {
        &self.common
    }
}

/// Runs the scenario: generates the graph, plans, and drives the target.
pub(crate) fn main(a: &Args) -> Result<Report> {
    if a.users < 2 || a.posts_per_s <= 0.0 || a.reads_per_s <= 0.0 || a.readers == 0 {
        bail!("--users must be at least 2; --posts-per-s, --reads-per-s and --readers positive");
    }
    // Reader and observer connections stay open for the whole run; the fd limit is 20,000.
    if a.readers + a.observers > 10_000 {
        bail!("--readers + --observers must stay under 10,000 connections");
    }
    let p = Params {
        users: a.users,
        strategy: a.strategy.clone(),
        posts_per_s: a.posts_per_s,
        reads_per_s: a.reads_per_s,
        duration: a.duration,
        readers: a.readers,
        observers: a.observers,
        max_following: a.max_following,
        seed: a.seed,
        server_pid: a.common.server_pid,
    };
    let started = std::time::Instant::now();
    let graph = Graph::generate(p.users, p.seed, p.max_following);
    let workload = Workload::plan(&p, graph);
    eprintln!("generated in {:.1} s", started.elapsed().as_secs_f64());
    workload.describe();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(url) = a.common.redis()? {
        runtime.block_on(redis::run(p, url, workload))
    } else {
        let target = heartline::Target {
            addr: a.addr,
            keyring: a.common.keyring()?,
            admin: a.common.admin(),
            skip_setup: a.skip_setup,
            setup_only: a.setup_only,
        };
        runtime.block_on(heartline::run(p, target, workload))
    }
}

/// Items per page read, as the reference's `ZREVRANGE … 0 49`.
pub(crate) const PAGE: usize = 50;
/// Share of reads that page further back from the reader's previous page.
const CURSOR_SHARE: f64 = 0.2;
/// Bytes of every post: the post's number, then filler.
const PAYLOAD_BYTES: usize = 100;
/// How long to wait for fanouts still under way after the last post.
pub(crate) const DRAIN: Duration = Duration::from_secs(30);

/// What a feed run needs, whatever the target.
pub(crate) struct Params {
    pub users: usize,
    /// The daemon's `[feed] strategy` (a label: the daemon decides).
    pub strategy: String,
    pub posts_per_s: f64,
    pub reads_per_s: f64,
    pub duration: Duration,
    /// Reader connections; reads are spread evenly over them.
    pub readers: usize,
    /// LIVE connections of followers that time the fanout, at most.
    pub observers: usize,
    /// The daemon's `[feed] max_following` (the graph respects it).
    pub max_following: usize,
    pub seed: u64,
    pub server_pid: Option<u32>,
}

/// One post of the schedule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planned {
    /// Offset from the start of the run.
    pub at: Duration,
    /// Author's user index.
    pub author: usize,
}

/// The run, decided in advance from the seed.
pub(crate) struct Workload {
    pub graph: Graph,
    pub posts: Vec<Planned>,
    /// User indices of the reader connections.
    pub readers: Vec<usize>,
    /// User indices of the LIVE observers.
    pub observers: Vec<usize>,
    /// Per post, how many observers follow its author (pushes to wait for).
    pub watched: Vec<u32>,
}

/// User id of a user index.
pub(crate) fn user_id(index: usize) -> u64 {
    index as u64 + 1
}

impl Workload {
    pub(crate) fn plan(p: &Params, graph: Graph) -> Self {
        let mut rng = fastrand::Rng::with_seed(p.seed);
        let count = (p.posts_per_s * p.duration.as_secs_f64()) as usize;
        let step = Duration::from_secs_f64(1.0 / p.posts_per_s.max(f64::MIN_POSITIVE));
        let posts: Vec<Planned> =
            (0..count).map(|k| Planned { at: step * k as u32, author: graph.author(&mut rng) }).collect();
        // An observer that posts would also get its own post pushed: keep them apart.
        let authors: std::collections::HashSet<usize> = posts.iter().map(|p| p.author).collect();
        let mut observers = Vec::new();
        let mut chosen = std::collections::HashSet::new();
        // One random follower per post (while there is room) makes each post
        // likely to be watched, celebrities' by many observers.
        for post in &posts {
            if observers.len() >= p.observers {
                break;
            }
            let followers = graph.followers(post.author);
            if followers.is_empty() {
                continue;
            }
            let f = followers[rng.usize(..followers.len())] as usize;
            if !authors.contains(&f) && chosen.insert(f) {
                observers.push(f);
            }
        }
        let mut watchers: HashMap<usize, u32> = HashMap::new();
        for &o in &observers {
            for &a in graph.following(o) {
                *watchers.entry(a as usize).or_default() += 1;
            }
        }
        let watched = posts.iter().map(|p| watchers.get(&p.author).copied().unwrap_or(0)).collect();
        let readers = (0..p.readers.min(graph.users())).map(|_| rng.usize(..graph.users())).collect();
        Self { graph, posts, readers, observers, watched }
    }

    /// When reader `i` reads: its first deadline and the interval.
    pub(crate) fn read_plan(&self, p: &Params, i: usize) -> (Duration, Duration) {
        let per_reader = p.reads_per_s / self.readers.len().max(1) as f64;
        let interval = Duration::from_secs_f64(1.0 / per_reader.max(1e-9));
        (interval.mul_f64(i as f64 / self.readers.len().max(1) as f64), interval)
    }

    /// Prints what the graph and the schedule look like.
    pub(crate) fn describe(&self) {
        let g = &self.graph;
        let celebs: Vec<usize> = (0..graph::celebrities(g.users())).map(|c| g.followers(c).len()).collect();
        let fanout: usize = self.posts.iter().map(|p| g.followers(p.author).len()).sum();
        let celeb_posts = self.posts.iter().filter(|p| p.author < celebs.len()).count();
        eprintln!(
            "graph: {} users, {} follows ({:.1} per user), celebrities' followers {celebs:?}",
            g.users(),
            g.edges(),
            g.edges() as f64 / g.users() as f64
        );
        eprintln!(
            "schedule: {} posts ({celeb_posts} by celebrities, {fanout} follower deliveries), {} readers, {} observers \
             watching {} posts",
            self.posts.len(),
            self.readers.len(),
            self.observers.len(),
            self.watched.iter().filter(|&&w| w > 0).count()
        );
    }
}

/// A post's payload: its number in the schedule, then filler.
pub(crate) fn payload(k: usize) -> Vec<u8> {
    let mut p = vec![b'.'; PAYLOAD_BYTES];
    p[..8].copy_from_slice(&(k as u64).to_be_bytes());
    p
}

/// The schedule number a payload names, if it is one of ours.
pub(crate) fn post_number(payload: &[u8]) -> Option<usize> {
    (payload.len() == PAYLOAD_BYTES).then(|| u64::from_be_bytes(payload[..8].try_into().unwrap_or_default()) as usize)
}

/// Whether a read pages back from `previous` (the oldest id of the reader's last page).
pub(crate) fn cursor(rng: &mut fastrand::Rng, previous: Option<u64>) -> Option<u64> {
    previous.filter(|_| rng.f64() < CURSOR_SHARE)
}

/// Per post: when it was sent and when its observers saw it (µs since the
/// tracker's start, 0 = not yet), shared by every task.
pub(crate) struct Tracker {
    start: Instant,
    sent: Vec<AtomicU64>,
    last_seen: Vec<AtomicU64>,
    seen: Vec<AtomicU32>,
    expected: Vec<u32>,
}

impl Tracker {
    pub(crate) fn new(expected: Vec<u32>) -> Self {
        let n = expected.len();
        Self {
            start: Instant::now(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            last_seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..n).map(|_| AtomicU32::new(0)).collect(),
            expected,
        }
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64 + 1
    }

    /// Post `k` was sent (or was due) at `at`.
    pub(crate) fn sent(&self, k: usize, at: Instant) {
        self.sent[k].store(at.saturating_duration_since(self.start).as_micros() as u64 + 1, Relaxed);
    }

    /// One follower has the post (a push arrived, or its inbox write is done).
    pub(crate) fn seen(&self, k: usize) {
        if k < self.expected.len() {
            self.last_seen[k].fetch_max(self.now_us(), Relaxed);
            self.seen[k].fetch_add(1, Relaxed);
        }
    }

    /// Whether every watched post reached all its followers.
    pub(crate) fn complete(&self) -> bool {
        (0..self.expected.len()).all(|k| self.seen[k].load(Relaxed) >= self.expected[k])
    }

    /// Post sent → the last watching follower has it, per watched post; and
    /// how many watched posts did not get there (before the drain ended).
    pub(crate) fn fanout(&self) -> (Histogram<u64>, u64) {
        let mut h = histogram();
        let mut missing = 0;
        for k in 0..self.expected.len() {
            let (sent, seen) = (self.sent[k].load(Relaxed), self.seen[k].load(Relaxed));
            if self.expected[k] == 0 || sent == 0 {
                continue;
            }
            if seen < self.expected[k] {
                missing += 1;
            } else {
                h.saturating_record(self.last_seen[k].load(Relaxed).saturating_sub(sent));
            }
        }
        (h, missing)
    }
}

/// What one run measured, for [`report`].
pub(crate) struct Measured {
    pub target: String,
    /// heartline: the daemon's strategy; Redis: how it fans out.
    pub mode: String,
    pub post_ack: Histogram<u64>,
    pub timeline_read: Histogram<u64>,
    pub elapsed_s: f64,
    pub server: Option<Server>,
    pub errors: u64,
    pub extra: BTreeMap<&'static str, f64>,
}

/// The report of a feed run: `clients` is the number of users.
pub(crate) fn report(p: &Params, tracker: &Tracker, mut m: Measured) -> Report {
    let (fanout, missing) = tracker.fanout();
    m.extra.insert("fanout_watched_posts", tracker.expected.iter().filter(|&&e| e > 0).count() as f64);
    m.extra.insert("fanout_missing_after_drain", missing as f64);
    let ops = BTreeMap::from([
        ("post_ack", Op::timed(m.post_ack)),
        ("fanout", Op::timed(fanout)),
        ("timeline_read", Op::timed(m.timeline_read)),
    ]);
    Report {
        scenario: "feed",
        target: m.target,
        mode: m.mode,
        clients: p.users as u64,
        duration_s: m.elapsed_s,
        ops,
        wire_bytes_per_heartbeat: 0.0,
        server: m.server,
        errors: m.errors,
        extra: m.extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            users: 2_000,
            strategy: "push".into(),
            posts_per_s: 50.0,
            reads_per_s: 100.0,
            duration: Duration::from_secs(2),
            readers: 10,
            observers: 20,
            max_following: 5_000,
            seed: 1,
            server_pid: None,
        }
    }

    #[test]
    fn the_plan_watches_posts_without_observers_posting() {
        let p = params();
        let w = Workload::plan(&p, Graph::generate(p.users, p.seed, p.max_following));
        assert_eq!(w.posts.len(), 100);
        assert!(w.observers.len() <= 20 && !w.observers.is_empty());
        assert!(w.observers.iter().all(|o| w.posts.iter().all(|p| p.author != *o)));
        assert!(w.watched.iter().any(|&n| n > 0));
        for (post, &n) in w.posts.iter().zip(&w.watched) {
            let followers = w.graph.followers(post.author);
            let expected = w.observers.iter().filter(|&&o| followers.contains(&(o as u32))).count();
            assert_eq!(n as usize, expected);
        }
        let (first, interval) = w.read_plan(&p, 5);
        assert_eq!(interval, Duration::from_millis(100));
        assert_eq!(first, Duration::from_millis(50));
    }

    #[test]
    fn payloads_name_their_post() {
        assert_eq!(post_number(&payload(1234)), Some(1234));
        assert_eq!(post_number(b"someone else's"), None);
    }

    #[test]
    fn the_tracker_times_the_last_follower_and_counts_missing_ones() {
        let t = Tracker::new(vec![2, 0, 1]);
        t.sent(0, Instant::now());
        t.sent(2, Instant::now());
        t.seen(0);
        assert!(!t.complete());
        t.seen(0);
        t.seen(9);
        let (h, missing) = t.fanout();
        assert_eq!((h.len(), missing), (1, 1));
    }
}
