//! The feed engine on a synthetic power-law graph.
//!
//! - `fanout_1M`: one post into 1,000,000 followers' inboxes (push); also
//!   gives fanout inserts per second.
//! - `first_page/{pull,push,hybrid}`: a first home page of 50 items for a
//!   random reader, all three strategies on the same graph and posts.
//! - memory per hot item (printed): RSS growth per post held in outboxes.
//!
//! Graph: USERS readers; each follows FOLLOWS authors drawn from a Zipf law
//! over AUTHORS, and every reader follows the CELEBRITIES (so each of those
//! has over a million followers). `cargo bench --bench feed`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use heartline_core::feed::{Feed, FeedConfig, Strategy};
use heartline_proto::Cursor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: u64 = 1_800_000_000_000;
const USERS: u64 = 1_100_000;
const AUTHORS: u64 = 100_000;
const FOLLOWS: usize = 10;
const CELEBRITIES: [u64; 3] = [1, 2, 3];
const POSTS_PER_AUTHOR: usize = 5;
const POSTS_PER_CELEBRITY: usize = 20;
/// Readers are ids above the authors.
const FIRST_READER: u64 = AUTHORS + 1;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
}

/// A Zipf-ish author in 1..=AUTHORS: small ids are far more popular.
fn zipf(rng: &mut StdRng) -> u64 {
    let u: f64 = rng.gen_range(0.0..1.0);
    ((AUTHORS as f64).powf(u) as u64).clamp(1, AUTHORS)
}

fn build(strategy: Strategy) -> Feed {
    let started = Instant::now();
    let feed = Feed::new(FeedConfig { strategy, max_following: 1_000, ..FeedConfig::default() }, 1);
    let mut rng = StdRng::seed_from_u64(42);
    for reader in FIRST_READER..FIRST_READER + USERS {
        for _ in 0..FOLLOWS {
            feed.follow(reader, zipf(&mut rng)).expect("under the limit");
        }
        for celebrity in CELEBRITIES {
            feed.follow(reader, celebrity).expect("under the limit");
        }
        feed.touch(reader, NOW);
        // Readers who have read their timeline before have an inbox.
        feed.rebuild_inbox(reader);
    }
    let mut now = NOW;
    for round in 0..POSTS_PER_CELEBRITY {
        for author in 1..=AUTHORS {
            let is_celebrity = CELEBRITIES.contains(&author);
            if round >= POSTS_PER_AUTHOR && !is_celebrity {
                continue;
            }
            now += 1;
            let post = feed.new_post(author, 1, Bytes::from_static(&[0; 100]), now);
            let fanout = feed.publish(post.clone(), now, |_| false);
            if fanout.into_inboxes {
                feed.fanout(&post, &fanout.followers, now);
            }
        }
    }
    let (posts, entries) = feed.hot_counts();
    eprintln!(
        "feed {strategy:?}: {USERS} readers, {} celebrities with {} followers, {posts} hot posts, {entries} inbox entries, built in {:.1?}",
        CELEBRITIES.len(),
        feed.graph.follower_count(1),
        started.elapsed()
    );
    feed
}

fn first_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("first_page");
    for strategy in [Strategy::Pull, Strategy::Push, Strategy::Hybrid] {
        let feed = build(strategy);
        let mut rng = StdRng::seed_from_u64(7);
        group.bench_function(format!("{strategy:?}").to_lowercase(), |b| {
            b.iter_batched(
                || FIRST_READER + rng.gen_range(0..USERS),
                |reader| {
                    let read = feed.home(reader, &Cursor::default(), 50, NOW + 10_000_000);
                    assert!(read.cold.is_none(), "a first page is hot");
                    black_box(read.page(Vec::new()))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let feed = Feed::new(FeedConfig { strategy: Strategy::Push, ..FeedConfig::default() }, 1);
    let author = 7;
    let followers: Vec<u64> = (1_000..1_001_000).collect();
    for &f in &followers {
        feed.follow(f, author).expect("under the limit");
    }
    // Every follower has an inbox already, as after a while of push.
    let warm = feed.new_post(author, 0, Bytes::new(), NOW);
    feed.fanout(&warm, &followers, NOW);
    let mut group = c.benchmark_group("fanout");
    group.sample_size(10);
    group.throughput(Throughput::Elements(followers.len() as u64));
    let mut now = NOW;
    group.bench_function("fanout_1M", |b| {
        b.iter(|| {
            now += 1;
            let post = feed.new_post(author, 0, Bytes::new(), now);
            black_box(feed.fanout(&post, &followers, now))
        })
    });
    // As the server runs it: the fanout pool's two threads, 4,096 followers a job.
    group.bench_function("fanout_1M_2_workers", |b| {
        b.iter(|| {
            now += 1;
            let post = feed.new_post(author, 0, Bytes::new(), now);
            let jobs = std::sync::Mutex::new(followers.chunks(4_096));
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| loop {
                        let Some(job) = jobs.lock().unwrap().next() else { return };
                        black_box(feed.fanout(&post, job, now));
                    });
                }
            });
        })
    });
    group.finish();
}

fn memory_per_hot_item(_: &mut Criterion) {
    const POSTS: u64 = 1_000_000;
    let feed = Feed::new(FeedConfig { strategy: Strategy::Pull, ..FeedConfig::default() }, 1);
    let before = rss_bytes();
    let mut now = NOW;
    for i in 0..POSTS {
        now += 1;
        // Payloads are copied out of the network buffer before they are kept.
        let post = feed.new_post(i % 10_000, 1, Bytes::from(vec![0u8; 100]), now);
        feed.publish(Arc::clone(&post), now, |_| false);
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let per = rss_bytes().saturating_sub(before) as f64 / POSTS as f64;
    eprintln!(
        "memory per hot item: {per:.1} bytes RSS with a 100-byte payload ({:.1} bytes besides the payload)",
        per - 100.0
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    // Memory first, while nothing has been allocated and freed yet.
    targets = memory_per_hot_item, fanout, first_page
}
criterion_main!(benches);
