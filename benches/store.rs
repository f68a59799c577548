//! Durable posts per second through the store's group committer
//! (`heartline::store::Committer`), and how long each post waits for its ack.
//!
//! For each case a fresh store in the system temp dir, then N tokio tasks
//! (N = 1, 64, 1,024) on a 2-worker runtime, each in a loop: submit one post
//! (200-byte random payload, copied into its own buffer as the server does
//! from a network buffer; author one of 100,000), await the ack, repeat.
//! After a warm-up, posts acked within the measured window are counted;
//! latency is submit → ack as the task sees it (p50 / p99 / p99.9 / max).
//! Fsync durability is the target; one "os" case is there for comparison.
//!
//! Then the restart bound: 2,000,000 posts of 20,000 authors in a store, and
//! how long the read the server makes at start takes (the newest 201 posts
//! of every author, `Store::for_each_recent_post`).
//!
//! `cargo bench --bench store`; HEARTLINE_BENCH_SECS sets the measured
//! window per case (default 10 s; the warm-up is 2 s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use heartline::store::{Committer, Durability, Store, StoredPost};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD: usize = 200;
const AUTHORS: u64 = 100_000;
const WARM_UP: Duration = Duration::from_secs(2);

struct Case {
    durability: Durability,
    submitters: usize,
}

struct Figures {
    posts_per_second: f64,
    /// Ack latencies of the measured window, sorted, in ns.
    latencies: Vec<u64>,
}

fn main() {
    let window = Duration::from_secs(
        std::env::var("HEARTLINE_BENCH_SECS").ok().and_then(|secs| secs.parse().ok()).unwrap_or(10),
    );
    let cases = [
        Case { durability: Durability::Fsync, submitters: 1 },
        Case { durability: Durability::Fsync, submitters: 64 },
        Case { durability: Durability::Fsync, submitters: 1_024 },
        Case { durability: Durability::Os, submitters: 1_024 },
    ];
    println!("store group commit: {PAYLOAD}-byte payloads, {window:?} measured after {WARM_UP:?} warm-up per case");
    println!("| durability | submitters | posts/s | ack p50 | p99 | p99.9 | max | posts acked |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for case in cases {
        let figures = run(&case, window);
        let at = |q: f64| {
            let latencies = &figures.latencies;
            latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied()
        };
        let ms = |ns: Option<u64>| ns.map_or("-".to_owned(), |ns| format!("{:.2} ms", ns as f64 / 1e6));
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            if case.durability == Durability::Fsync { "fsync" } else { "os" },
            case.submitters,
            figures.posts_per_second,
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(0.999)),
            ms(figures.latencies.last().copied()),
            figures.latencies.len(),
        );
    }
    restore();
}

/// Times the start-up read of the feed's hot posts over a large store.
fn restore() {
    const AUTHORS: u64 = 20_000;
    const PER_AUTHOR: u64 = 100;
    let dir = std::env::temp_dir().join(format!("heartline-bench-restore-{}", std::process::id()));
    let store = Store::open(&dir, Durability::Os).expect("open");
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let mut id = 1;
    for round in 0..PER_AUTHOR {
        let batch: Vec<StoredPost> = (0..AUTHORS)
            .map(|author| {
                id += 1;
                StoredPost { id: id + round, author, kind: 0, payload: payload.clone() }
            })
            .collect();
        store.put_posts(&batch).expect("write");
    }
    store.flush().expect("flush");
    drop(store);
    let store = Store::open(&dir, Durability::Os).expect("reopen");
    let started = Instant::now();
    let mut read = 0u64;
    store.for_each_recent_post(201, |_| read += 1).expect("read");
    let took = started.elapsed();
    println!(
        "restore: {read} posts of {AUTHORS} authors read at start in {took:.2?} ({:.0} posts/s), from a reopened store",
        read as f64 / took.as_secs_f64()
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn run(case: &Case, window: Duration) -> Figures {
    let dir = tempfile::Builder::new().prefix("heartline-store-bench-").tempdir().expect("temp dir");
    let store = Store::open(dir.path(), case.durability).expect("open store");
    let committer = Arc::new(Committer::start(store));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    // Random bytes, so that nothing on the way compresses them; each post
    // copies its payload out of here at a different offset.
    let mut noise = vec![0u8; 1 << 16];
    StdRng::seed_from_u64(1).fill(&mut noise[..]);
    let noise = Arc::new(noise);
    let next_id = Arc::new(AtomicU64::new(1));
    let start = Instant::now();
    let (measure_from, measure_until) = (start + WARM_UP, start + WARM_UP + window);

    let latencies = runtime.block_on(async {
        let tasks: Vec<_> = (0..case.submitters)
            .map(|_| {
                let (committer, noise, next_id) = (committer.clone(), noise.clone(), next_id.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let offset = (id as usize * 7919) % (noise.len() - PAYLOAD);
                        let post = StoredPost {
                            id,
                            author: id.wrapping_mul(0x9e37_79b9_7f4a_7c15) % AUTHORS,
                            kind: 1,
                            payload: Bytes::copy_from_slice(&noise[offset..offset + PAYLOAD]),
                        };
                        let submitted = Instant::now();
                        committer.submit(post).await.expect("commit thread alive").expect("durable write");
                        let acked = Instant::now();
                        if acked >= measure_until {
                            return latencies;
                        }
                        if submitted >= measure_from {
                            latencies.push((acked - submitted).as_nanos() as u64);
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("submitter task"));
        }
        all
    });
    drop(runtime);
    // Drains nothing (every task awaited its last post) and joins the thread.
    drop(Arc::into_inner(committer));

    let mut latencies = latencies;
    latencies.sort_unstable();
    Figures { posts_per_second: latencies.len() as f64 / window.as_secs_f64(), latencies }
}
