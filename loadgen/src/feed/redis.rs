//! The feed workload against Redis, done the way the reference design does
//! it: the follow graph lives in the app server (here, in memory), a post is
//! `SET post:{id}` then, for every follower, `ZADD timeline:{f} id id` and
//! `ZREMRANGEBYRANK timeline:{f} 0 -(cap + 1)` (pipelined by
//! [`PIPELINE`](crate::redis::PIPELINE) followers), and a read is
//! `ZREVRANGE timeline:{u} 0 49` (or `ZREVRANGEBYSCORE` below a cursor)
//! then `MGET` of those posts.
//!
//! `post_ack` is the post's deadline → SET stored (on [`POST_CONNS`]
//! connections), `fanout` the deadline → every follower's ZADD done (a pool
//! of [`FANOUT_CONNS`] connections, as an app server's fanout workers; a
//! post waiting for one counts, as a post waits in heartline's fanout
//! queue), `timeline_read` both round trips. Speaks RESP through
//! [`crate::redis::Conn`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{cursor, payload, report, user_id, Measured, Params, Tracker, Workload, PAGE};
use crate::procstat::sample_of as sample;
use crate::redis::{command, Conn, PIPELINE};
use crate::report::{histogram, Report, Server};

/// Connections the posts are stored on.
pub(crate) const POST_CONNS: usize = 4;
/// Connections the fanouts take turns on.
pub(crate) const FANOUT_CONNS: usize = 16;
/// Connections the reads are spread over.
pub(crate) const READ_CONNS: usize = 32;
/// Items kept per timeline: heartline's default `[feed] inbox_cap`.
pub(crate) const INBOX_CAP: usize = 800;
/// Post numbers must fit under the run's id prefix.
const MAX_POSTS: usize = 1 << 20;

/// The id of post `k`: the run's start second, then `k`; exact as a ZSET
/// score (under 2^53) and larger than any id of an earlier run.
fn post_id(run_s: u64, k: usize) -> u64 {
    (run_s << 20) + k as u64
}

/// Connections tasks take turns on.
struct Pool {
    give: mpsc::Sender<Conn>,
    take: tokio::sync::Mutex<mpsc::Receiver<Conn>>,
}

impl Pool {
    async fn connect(addr: &str, n: usize) -> Result<Self> {
        let (give, take) = mpsc::channel(n);
        for _ in 0..n {
            give.send(Conn::connect(addr).await?).await?;
        }
        Ok(Self { give, take: tokio::sync::Mutex::new(take) })
    }

    /// Runs `f` on a connection of the pool, waiting for one if all are busy.
    async fn with<T>(&self, f: impl AsyncFnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let Some(mut conn) = self.take.lock().await.recv().await else { bail!("the redis pool is gone") };
        let result = f(&mut conn).await;
        // Sent back whatever happened: the pool holds exactly its connections.
        let _ = self.give.send(conn).await;
        result
    }
}

/// Stores post `k`; returns how many commands Redis refused.
async fn store(conn: &mut Conn, k: usize, id: u64) -> Result<u64> {
    let mut buf = Vec::new();
    command(&mut buf, &[b"SET", format!("post:{id}").as_bytes(), &payload(k)]);
    conn.send(&buf).await?;
    conn.simple_replies(1).await
}

/// Post `k` into every follower's timeline; returns how many commands Redis refused.
async fn fan_out(conn: &mut Conn, w: &Workload, k: usize, id: u64) -> Result<u64> {
    let (mut buf, mut errors) = (Vec::new(), 0);
    let (score, trim) = (id.to_string(), format!("-{}", INBOX_CAP + 1));
    for chunk in w.graph.followers(w.posts[k].author).chunks(PIPELINE) {
        buf.clear();
        for &f in chunk {
            let key = format!("timeline:{}", user_id(f as usize));
            command(&mut buf, &[b"ZADD", key.as_bytes(), score.as_bytes(), score.as_bytes()]);
            command(&mut buf, &[b"ZREMRANGEBYRANK", key.as_bytes(), b"0", trim.as_bytes()]);
        }
        conn.send(&buf).await?;
        errors += conn.simple_replies(chunk.len() * 2).await?;
    }
    Ok(errors)
}

fn ids(values: Vec<Option<Vec<u8>>>) -> Result<Vec<u64>> {
    values
        .into_iter()
        .flatten()
        .map(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| anyhow::anyhow!("a timeline member that is not a post id"))
}

/// One read connection: its share of the readers, round robin, on deadlines.
async fn read(
    mut conn: Conn,
    readers: Vec<usize>,
    first: Instant,
    interval: Duration,
    end: Instant,
    seed: u64,
) -> Result<Histogram<u64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut latency = histogram();
    let mut oldest: Vec<Option<u64>> = vec![None; readers.len()];
    let mut buf = Vec::new();
    for k in 0u32.. {
        let at = first + interval * k;
        if at >= end || readers.is_empty() {
            break;
        }
        tokio::time::sleep_until(at).await;
        let r = k as usize % readers.len();
        let key = format!("timeline:{}", user_id(readers[r]));
        buf.clear();
        match cursor(&mut rng, oldest[r]) {
            Some(max) => {
                let below = format!("({max}");
                let args: [&[u8]; 7] =
                    [b"ZREVRANGEBYSCORE", key.as_bytes(), below.as_bytes(), b"-inf", b"LIMIT", b"0", b"50"];
                command(&mut buf, &args);
            }
            None => command(&mut buf, &[b"ZREVRANGE", key.as_bytes(), b"0", b"49"]),
        }
        let sent = Instant::now();
        conn.send(&buf).await?;
        let page = ids(conn.array_values().await?)?;
        if !page.is_empty() {
            let keys: Vec<String> = page.iter().map(|id| format!("post:{id}")).collect();
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(keys.iter().map(|k| k.as_bytes()));
            buf.clear();
            command(&mut buf, &args);
            conn.send(&buf).await?;
            conn.array_reply().await?;
        }
        latency.saturating_record(sent.elapsed().as_micros() as u64);
        oldest[r] = (page.len() == PAGE).then(|| page.last().copied()).flatten();
    }
    Ok(latency)
}

pub(crate) async fn run(p: Params, addr: String, w: Workload) -> Result<Report> {
    if w.posts.len() > MAX_POSTS {
        bail!("at most {MAX_POSTS} posts per run against Redis");
    }
    let (p, w) = (Arc::new(p), Arc::new(w));
    let run_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // The fanout here is complete when the post's last ZADD is acknowledged.
    let watched = w.posts.iter().map(|post| u32::from(!w.graph.followers(post.author).is_empty())).collect();
    let tracker = Arc::new(Tracker::new(watched));
    let posts = Arc::new(Pool::connect(&addr, POST_CONNS).await?);
    let fanouts = Arc::new(Pool::connect(&addr, FANOUT_CONNS).await?);
    let mut readers = Vec::new();
    for _ in 0..READ_CONNS.min(w.readers.len()) {
        readers.push(Conn::connect(&addr).await?);
    }
    let before = sample(p.server_pid)?;
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + p.duration;
    eprintln!(
        "running for {:?}: {} posts/s, {} reads/s against redis://{addr}",
        p.duration, p.posts_per_s, p.reads_per_s
    );
    let n = readers.len();
    let reading: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(c, conn)| {
            let mine = w.readers.iter().skip(c).step_by(n).copied().collect();
            let interval = Duration::from_secs_f64(n as f64 / p.reads_per_s.max(1e-9));
            let first = start + interval.mul_f64(c as f64 / n as f64);
            tokio::spawn(read(conn, mine, first, interval, end, p.seed ^ c as u64))
        })
        .collect();
    let post_ack = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let mut posting = Vec::with_capacity(w.posts.len());
    for k in 0..w.posts.len() {
        let deadline = start + w.posts[k].at;
        tokio::time::sleep_until(deadline).await;
        let (w, tracker, post_ack, errors, posts, fanouts) =
            (w.clone(), tracker.clone(), post_ack.clone(), errors.clone(), posts.clone(), fanouts.clone());
        posting.push(tokio::spawn(async move {
            tracker.sent(k, deadline);
            let id = post_id(run_s, k);
            errors.fetch_add(posts.with(async |conn| store(conn, k, id).await).await?, Relaxed);
            post_ack.lock().unwrap_or_else(|e| e.into_inner()).saturating_record(deadline.elapsed().as_micros() as u64);
            errors.fetch_add(fanouts.with(async |conn| fan_out(conn, &w, k, id).await).await?, Relaxed);
            tracker.seen(k);
            Ok::<_, anyhow::Error>(())
        }));
    }
    let mut timeline_read = histogram();
    for task in reading {
        timeline_read.add(&task.await??)?;
    }
    for task in posting {
        if let Err(e) = task.await? {
            errors.fetch_add(1, Relaxed);
            eprintln!("error: post: {e:#}");
        }
    }
    let elapsed = start.elapsed().as_secs_f64().min(p.duration.as_secs_f64());
    let end_sample = sample(p.server_pid)?;
    let post_ack = std::mem::replace(&mut *post_ack.lock().unwrap_or_else(|e| e.into_inner()), histogram());
    let mut extra = BTreeMap::new();
    extra.insert("redis_post_conns", POST_CONNS as f64);
    extra.insert("redis_fanout_conns", FANOUT_CONNS as f64);
    let ops = post_ack.len() + timeline_read.len();
    let server = Server::from_samples(before, before, end_sample, ops, 1, &mut extra);
    let measured = Measured {
        target: format!("redis://{addr}"),
        mode: "fanout on write (ZADD)".into(),
        post_ack,
        timeline_read,
        elapsed_s: elapsed,
        server,
        errors: errors.load(Relaxed),
        extra,
    };
    Ok(report(&p, &tracker, measured))
}

#[cfg(test)]
mod tests {
    #[test]
    fn post_ids_are_exact_scores_and_ordered() {
        let id = super::post_id(1_800_000_000, (1 << 20) - 1);
        assert!(id < 1 << 53);
        assert!(super::post_id(1_800_000_001, 0) > id);
    }
}
