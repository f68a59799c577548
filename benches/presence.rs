//! Presence at scale: 10,000,000 sessions resident (one per user, all held by
//! one gateway, as the load generator runs them), then
//! - heartbeat apply, ns per heartbeat, on random sessions (cache misses included);
//! - a 1,000-session gateway batch applied through `apply`-like calls;
//! - bytes per session: RSS growth while opening them, and the tables' own count;
//! - memory per watch: 1,000,000 watches (100 connections × 10,000 users),
//!   the registry in presence plus each connection's own set, as the server
//!   keeps them (printed);
//! - expiry lag: 1,000,000 sessions that stop heartbeating at random times,
//!   ticked every 100 ms as the server does; how long after its TTL ended
//!   each one was reported offline (printed as p50/p99/max).
//!
//! `cargo bench --bench presence`; HEARTLINE_BENCH_SESSIONS overrides the count.

use std::hint::black_box;
use std::sync::OnceLock;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use heartline_core::presence::{Presence, PresenceConfig, SessionId};
use heartline_proto::Status;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = 1_800_000_000_000;
const GATEWAY: u32 = 1;

struct World {
    presence: Presence,
    sessions: Vec<SessionId>,
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let count: u64 =
            std::env::var("HEARTLINE_BENCH_SESSIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000_000);
        let before = rss_bytes();
        let presence = Presence::new(PresenceConfig::default(), T0);
        let mut sessions = Vec::with_capacity(count as usize);
        for user in 0..count {
            let (session, _) = presence.open(user * 7 + 1, Status::Online, GATEWAY, false, T0, 0).expect("open");
            sessions.push(session);
        }
        let per_session = |rss: usize| (rss - before - sessions.capacity() * 8) as f64 / count as f64;
        let at_once = per_session(rss_bytes());
        // Buffers freed while the hash tables grew go back to the OS a little later.
        std::thread::sleep(std::time::Duration::from_secs(2));
        eprintln!(
            "presence: {count} sessions; RSS growth {:.1} bytes/session once settled ({at_once:.1} right after \
             opening; the bench's own id list excluded); tables {:.1} bytes/session",
            per_session(rss_bytes()),
            presence.heap_bytes() as f64 / count as f64
        );
        sessions.shuffle(&mut StdRng::seed_from_u64(7));
        World { presence, sessions }
    })
}

fn heartbeat(c: &mut Criterion) {
    let world = world();
    let mut group = c.benchmark_group("presence");
    group.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    let mut now = T0;
    group.bench_function("heartbeat_apply_10M", |b| {
        b.iter(|| {
            next = (next + 1) % world.sessions.len();
            now += 1;
            black_box(world.presence.heartbeat(world.sessions[next], GATEWAY, now)).expect("live");
        })
    });

    let mut batches = world.sessions.chunks(1_000).cycle().map(|c| {
        let mut ids = c.to_vec();
        ids.sort_unstable();
        ids
    });
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("batch_1000_apply_10M", |b| {
        b.iter_batched(
            || batches.next().expect("enough batches"),
            |ids| {
                for id in ids {
                    black_box(world.presence.heartbeat(id, GATEWAY, T0 + 1)).expect("live");
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Ticks a presence of sessions that die at random times and reports, per
/// session, reported-at minus TTL-end.
fn expiry_lag(_: &mut Criterion) {
    use rand::Rng;
    let count = 1_000_000u64;
    let config = PresenceConfig::default();
    let presence = Presence::new(config, T0);
    let mut rng = StdRng::seed_from_u64(11);
    let mut last_beat = std::collections::HashMap::new();
    for user in 0..count {
        let (session, _) = presence.open(user, Status::Online, GATEWAY, false, T0, 0).expect("open");
        // The last heartbeat falls anywhere in the first 60 s.
        let at = T0 + rng.gen_range(0..60_000);
        presence.heartbeat(session, GATEWAY, at).expect("live");
        last_beat.insert(user, at);
    }
    let mut lags = Vec::with_capacity(count as usize);
    let mut now = T0;
    while lags.len() < count as usize {
        now += heartline_core::presence::TICK_MS;
        for change in presence.tick(now).changes {
            let ttl_end = last_beat[&change.user] + u64::from(config.ttl_ms);
            lags.push(now as i64 - ttl_end as i64);
        }
        assert!(now < T0 + 300_000, "every session expires");
    }
    lags.sort_unstable();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    eprintln!(
        "expiry lag after TTL end, {count} sessions, 100 ms ticks: min {} ms, p50 {} ms, p99 {} ms, max {} ms",
        lags[0],
        at(0.5),
        at(0.99),
        lags[lags.len() - 1]
    );
}

/// RSS growth per watch: presence's registry (user → connections) and the
/// connection's set of watched users, as the handler keeps it. `shared`:
/// every connection watches the same users (a popular list); otherwise each
/// watch is of a different user (the costly case).
/// Returns the cost and what holds the memory, to be dropped by the caller
/// only after every measurement (freed memory would flatter the next one).
fn watch_cost(shared: bool) -> (f64, impl Sized) {
    const CONNS: u64 = 100;
    const USERS: u64 = 10_000;
    let presence = Presence::new(PresenceConfig::default(), T0);
    let before = rss_bytes();
    let mut sets = Vec::new();
    for conn in 0..CONNS {
        let mut watched = std::collections::HashSet::new();
        for user in 0..USERS {
            let user = if shared { user } else { conn * USERS + user };
            presence.watch(user, conn as u32);
            watched.insert(user);
        }
        sets.push(watched);
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let per = rss_bytes().saturating_sub(before) as f64 / (CONNS * USERS) as f64;
    (per, (presence, sets))
}

fn watch_memory(_: &mut Criterion) {
    let (distinct, held) = watch_cost(false);
    let (shared, also_held) = watch_cost(true);
    black_box((held, also_held));
    eprintln!(
        "memory per watch, 1,000,000 watches of 100 connections: {distinct:.1} bytes RSS when every watch is of a \
         different user, {shared:.1} bytes when all 100 watch the same 10,000"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    // The 10M-session world first (it measures its own memory and is never
    // freed), so no measurement reuses memory another one freed.
    targets = heartbeat, watch_memory, expiry_lag
}
criterion_main!(benches);
