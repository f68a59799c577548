//! The presence workload against Redis, the reference articles' design:
//! one `SET p:<id> 1 EX <ttl>` per heartbeat, pipelined in batches of
//! [`PIPELINE`], and `MGET` of a watcher's friends as the query. Speaks RESP
//! over a plain TcpStream: nothing here needs more than `+OK`, errors and
//! flat arrays of bulk strings.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::procstat::sample_of as sample;
use crate::report::{histogram, Op, Report, Server};

/// SETs per pipeline.
pub(crate) const PIPELINE: usize = 1_000;

pub(crate) struct Params {
    /// HOST:PORT.
    pub addr: String,
    pub clients: u64,
    pub interval: Duration,
    pub duration: Duration,
    pub conns: usize,
    pub queries_per_s: f64,
    pub friends: usize,
    pub server_pid: Option<u32>,
    pub seed: u64,
}

/// One RESP connection (shared with the feed scenario's Redis target).
pub(crate) struct Conn {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    line: String,
}

fn arg(buf: &mut Vec<u8>, a: &[u8]) {
    buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
    buf.extend_from_slice(a);
    buf.extend_from_slice(b"\r\n");
}

/// Appends one command in RESP.
pub(crate) fn command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    args.iter().for_each(|a| arg(buf, a));
}

impl Conn {
    pub(crate) async fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to redis at {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Self { read: BufReader::with_capacity(1 << 16, read), write, line: String::new() })
    }

    async fn line(&mut self) -> Result<&str> {
        self.line.clear();
        if self.read.read_line(&mut self.line).await? == 0 {
            bail!("redis closed the connection");
        }
        Ok(self.line.trim_end())
    }

    /// Sends encoded commands (see [`command`]).
    pub(crate) async fn send(&mut self, commands: &[u8]) -> Result<()> {
        Ok(self.write.write_all(commands).await?)
    }

    /// Reads `n` simple replies; returns how many were errors.
    pub(crate) async fn simple_replies(&mut self, n: usize) -> Result<u64> {
        let mut errors = 0;
        for _ in 0..n {
            let line = self.line().await?;
            match line.as_bytes().first() {
                Some(b'+') | Some(b':') => {}
                Some(b'-') => {
                    if errors == 0 {
                        eprintln!("redis: {line}");
                    }
                    errors += 1;
                }
                _ => bail!("unexpected redis reply {line:?}"),
            }
        }
        Ok(errors)
    }

    /// Reads an array of bulk strings; returns how many were present.
    pub(crate) async fn array_reply(&mut self) -> Result<usize> {
        Ok(self.array_values().await?.iter().flatten().count())
    }

    /// Reads an array of bulk strings (`None` for a nil).
    pub(crate) async fn array_values(&mut self) -> Result<Vec<Option<Vec<u8>>>> {
        let line = self.line().await?.to_owned();
        let Some(n) = line.strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) else {
            bail!("expected an array, got {line:?}");
        };
        let mut values = Vec::with_capacity(n.min(PIPELINE));
        for _ in 0..n {
            let line = self.line().await?.to_owned();
            let len: i64 = line.strip_prefix('$').and_then(|l| l.parse().ok()).context("expected a bulk string")?;
            values.push(if len >= 0 {
                let mut value = vec![0; len as usize + 2];
                self.read.read_exact(&mut value).await?;
                value.truncate(len as usize);
                Some(value)
            } else {
                None
            });
        }
        Ok(values)
    }
}

fn slice(p: &Params, c: usize) -> Range<u64> {
    let (c, cs) = (c as u64, p.conns as u64);
    1 + p.clients * c / cs..1 + p.clients * (c + 1) / cs
}

/// Pre-encoded pipelines of SETs for a slice of clients.
fn pipelines(users: Range<u64>, ttl_s: u64) -> Vec<(Vec<u8>, usize)> {
    let ttl = ttl_s.to_string();
    let ids: Vec<u64> = users.collect();
    ids.chunks(PIPELINE)
        .map(|chunk| {
            let mut buf = Vec::with_capacity(chunk.len() * 48);
            for id in chunk {
                command(&mut buf, &[b"SET", format!("p:{id}").as_bytes(), b"1", b"EX", ttl.as_bytes()]);
            }
            (buf, chunk.len())
        })
        .collect()
}

#[derive(Default)]
struct Counters {
    heartbeats: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// Sends the pipelines, spread over the interval, until `end` (or once, as
/// fast as possible, when `end` is None). Returns pipeline round trips.
async fn heartbeats(
    mut conn: Conn,
    frames: Arc<Vec<(Vec<u8>, usize)>>,
    interval: Duration,
    start: Instant,
    end: Option<Instant>,
    counters: Arc<Counters>,
) -> Result<(Conn, Histogram<u64>)> {
    let mut rtt = histogram();
    let step = interval / frames.len().max(1) as u32;
    for k in 0.. {
        if frames.is_empty() {
            break;
        }
        let frame = &frames[k % frames.len()];
        match end {
            None if k == frames.len() => break,
            None => {}
            Some(end) => {
                let at = start + step * k as u32;
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at).await;
            }
        }
        let sent = Instant::now();
        conn.write.write_all(&frame.0).await?;
        let errors = conn.simple_replies(frame.1).await?;
        rtt.saturating_record(sent.elapsed().as_micros() as u64);
        counters.errors.fetch_add(errors, Relaxed);
        counters.heartbeats.fetch_add(frame.1 as u64, Relaxed);
        counters.bytes.fetch_add(frame.0.len() as u64, Relaxed);
    }
    Ok((conn, rtt))
}

/// MGETs of random friend lists at `per_s`, timed.
async fn queries(mut conn: Conn, p: Arc<Params>, start: Instant, end: Instant) -> Result<Histogram<u64>> {
    let mut latency = histogram();
    if p.queries_per_s <= 0.0 {
        return Ok(latency);
    }
    let step = Duration::from_secs_f64(1.0 / p.queries_per_s);
    let mut rng = fastrand::Rng::with_seed(p.seed);
    let mut buf = Vec::new();
    for k in 0u32.. {
        let at = start + step * k;
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let keys: Vec<String> = (0..p.friends).map(|_| format!("p:{}", 1 + rng.u64(..p.clients))).collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        buf.clear();
        command(&mut buf, &args);
        let sent = Instant::now();
        conn.write.write_all(&buf).await?;
        conn.array_reply().await?;
        latency.saturating_record(sent.elapsed().as_micros() as u64);
    }
    Ok(latency)
}

pub(crate) async fn run(p: Params) -> Result<Report> {
    let p = Arc::new(p);
    // Keys live three intervals, as heartline's default TTL is three heartbeat intervals.
    let ttl_s = (p.interval.as_secs() * 3).max(1);
    let mut conns = Vec::new();
    for c in 0..p.conns {
        conns.push((Conn::connect(&p.addr).await?, Arc::new(pipelines(slice(&p, c), ttl_s))));
    }
    let before = sample(p.server_pid)?;

    // Ramp-up: every key written once, as fast as possible.
    eprintln!("writing {} keys over {} redis connections", p.clients, p.conns);
    let ramp_counters = Arc::new(Counters::default());
    let ramp_started = Instant::now();
    let mut tasks = Vec::new();
    for (conn, frames) in conns {
        let (counters, interval) = (ramp_counters.clone(), p.interval);
        tasks.push(tokio::spawn(async move {
            let (conn, _) = heartbeats(conn, frames.clone(), interval, Instant::now(), None, counters).await?;
            Ok::<_, anyhow::Error>((conn, frames))
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await??);
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    let after_ramp = sample(p.server_pid)?;
    eprintln!("wrote {} keys in {ramp_s:.1} s ({:.0}/s)", p.clients, p.clients as f64 / ramp_s);

    let counters = Arc::new(Counters::default());
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + p.duration;
    let query_task = tokio::spawn(queries(Conn::connect(&p.addr).await?, p.clone(), start, end));
    let mut tasks = Vec::new();
    for (conn, frames) in conns {
        tasks.push(tokio::spawn(heartbeats(conn, frames, p.interval, start, Some(end), counters.clone())));
    }
    let mut rtt = histogram();
    for t in tasks {
        let (_, h) = t.await??;
        rtt.add(&h)?;
    }
    let elapsed = start.elapsed().as_secs_f64().min(p.duration.as_secs_f64());
    let end_sample = sample(p.server_pid)?;
    let query = query_task.await??;

    let heartbeats = counters.heartbeats.load(Relaxed);
    let mut ops = BTreeMap::new();
    ops.insert("heartbeat", Op::counted(heartbeats));
    ops.insert("set_pipeline", Op::timed(rtt));
    ops.insert("query", Op::timed(query));
    let mut extra = BTreeMap::new();
    extra.insert("ramp_s", ramp_s);
    extra.insert("ramp_sessions_per_s", p.clients as f64 / ramp_s);
    extra.insert("heartbeats_target_per_s", p.clients as f64 / p.interval.as_secs_f64());
    extra.insert("redis_conns", p.conns as f64);
    let server = Server::from_samples(before, after_ramp, end_sample, heartbeats, p.clients, &mut extra);
    let bytes = counters.bytes.load(Relaxed);
    Ok(Report {
        scenario: "presence",
        target: format!("redis://{}", p.addr),
        mode: "pipelined SET EX".into(),
        clients: p.clients,
        duration_s: elapsed,
        ops,
        wire_bytes_per_heartbeat: if heartbeats > 0 { bytes as f64 / heartbeats as f64 } else { 0.0 },
        server,
        errors: counters.errors.load(Relaxed) + ramp_counters.errors.load(Relaxed),
        extra,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn resp_encoding() {
        let mut buf = Vec::new();
        super::command(&mut buf, &[b"SET", b"p:1", b"1"]);
        assert_eq!(buf, b"*3\r\n$3\r\nSET\r\n$3\r\np:1\r\n$1\r\n1\r\n");
    }
}
