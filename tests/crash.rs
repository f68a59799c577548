//! Durability across `kill -9`: every acknowledged post and graph change is
//! there after a restart of the real binary on the same data dir, and
//! nothing else but whole posts that were sent.
//!
//! Each trial runs a storm (several connections pipelining posts with
//! seeded random payloads, one connection following users one by one),
//! kills the daemon at a seeded random moment, restarts it and reads every
//! timeline to its end. `HEARTLINE_CRASH_SEED` replays a run: the seed is
//! printed (`--nocapture`).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use heartline::auth::{Claims, Keyring, Subject};
use heartline_proto::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

struct Process {
    child: Child,
    tcp: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn spawn(dir: &std::path::Path) -> Process {
    let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_heartline"))
        .args(["serve", "--listen", &tcp.to_string(), "--udp", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("HEARTLINE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("HEARTLINE_WEBSOCKET__LISTEN", "127.0.0.1:0")
        // The storm posts as fast as the daemon acks: no per-session post rate.
        .env("HEARTLINE_LIMITS__POST_RATE", "0")
        // Posts are pipelined far past the production burst.
        .env("HEARTLINE_LIMITS__POST_RATE", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(tcp).await.is_err() {
        assert!(Instant::now() < deadline, "daemon did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Process { child, tcp }
}

async fn user(process: &Process, dir: &std::path::Path, user: u64) -> Client {
    let keyring = Keyring { current: heartline::auth::load_secret(&dir.join("secret")).unwrap(), previous: None };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let token = Bytes::from(keyring.issue(&Claims { subject: Subject::User(user), expires_at: now + 3_600 }));
    let mut client = Client::new(TcpStream::connect(process.tcp).await.unwrap());
    client.handshake(hello(Role::Client, token, false, 0)).await;
    client
}

/// Posting connections per storm, users `FIRST_AUTHOR..`.
const AUTHORS: u64 = 4;
const FIRST_AUTHOR: u64 = 100;
/// Posts one connection has in flight at most (the server queues 256).
const WINDOW: usize = 64;
/// Users `FIRST_FOLLOWEE..` with one post each, followed one by one during
/// the storm by `FOLLOWER`.
const FOLLOWEES: u64 = 24;
const FIRST_FOLLOWEE: u64 = 200;
const FOLLOWER: u64 = 1;
/// The kill lands this long after the storm starts, at random.
const KILL_AFTER_MS: std::ops::Range<u64> = 20..250;

/// Post `seq` of `author`: `"{author}:{seq}:"`, then 0–512 bytes drawn from
/// the seed, so that any post read back can be checked byte for byte.
fn payload(seed: u64, author: u64, seq: u64) -> Bytes {
    let mut rng = StdRng::seed_from_u64(seed ^ author.rotate_left(32) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut bytes = format!("{author}:{seq}:").into_bytes();
    let len = rng.gen_range(0..=512);
    bytes.extend((0..len).map(|_| rng.gen::<u8>()));
    Bytes::from(bytes)
}

/// The `(author, seq)` a payload names, if it has the shape of [`payload`].
fn named(payload: &[u8]) -> Option<(u64, u64)> {
    let mut fields = payload.splitn(3, |&b| b == b':');
    let mut number = || std::str::from_utf8(fields.next()?).ok()?.parse().ok();
    Some((number()?, number()?))
}

/// What the clients of one storm sent and heard.
#[derive(Default)]
struct Log {
    /// Per author, the highest seq handed to the socket (all below it too).
    sent: HashMap<u64, u64>,
    /// PUBLISHED: post id → (author, seq).
    acked: HashMap<u64, (u64, u64)>,
    /// (author, seq) answered with an ERROR: must not be stored.
    refused: HashSet<(u64, u64)>,
    /// Followees whose FOLLOW was sent, and those acknowledged with OK.
    follows_sent: HashSet<u64>,
    follows_acked: HashSet<u64>,
}

/// Every item of `source` for `client`, newest first, paging to the end.
async fn read_all(client: &mut Client, source: Source) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let reply = client.request(|req| Message::Timeline { req, source, cursor, limit: 100 }).await;
        let Message::Page { items, .. } = reply else { panic!("{reply:?}") };
        let Some(last) = items.last() else { return out };
        assert!(out.last().is_none_or(|prev| prev.post > items[0].post), "pages go back in time");
        cursor.max_id = Some(last.post);
        out.extend(items);
    }
}

/// Posts from `author` as fast as the window allows until the connection
/// dies, logging what was sent and answered.
async fn storm_author(client: Client, seed: u64, author: u64, log: Arc<Mutex<Log>>) {
    let (mut replies, mut frames) = client.conn.into_split();
    let window = Arc::new(Semaphore::new(WINDOW));
    let writer = {
        let (window, log) = (window.clone(), log.clone());
        tokio::spawn(async move {
            for seq in 1.. {
                let Ok(permit) = window.acquire().await else { return };
                permit.forget();
                // Logged before it reaches the socket: a post may be stored
                // once any of its bytes left.
                log.lock().unwrap().sent.insert(author, seq);
                let msg = Message::Publish { req: seq, kind: 0, payload: payload(seed, author, seq) };
                if frames.send(&msg).await.is_err() {
                    return;
                }
            }
        })
    };
    while let Ok(reply) = replies.recv().await {
        match reply {
            Message::Published { req, post } => log.lock().unwrap().acked.insert(post, (author, req)),
            // A refusal the storm should not see; logged, so that the check
            // below also proves it stored nothing.
            Message::Error { req, code, .. } => {
                eprintln!("post {req} of {author} refused: {:?}", ErrorCode::from_u16(code));
                log.lock().unwrap().refused.insert((author, req));
                None
            }
            other => panic!("unexpected reply {other:?}"),
        };
        window.add_permits(1);
    }
    window.close();
    let _ = writer.await;
}

/// Follows the followees one by one until the connection dies.
async fn storm_follower(mut client: Client, log: Arc<Mutex<Log>>) {
    for followee in FIRST_FOLLOWEE..FIRST_FOLLOWEE + FOLLOWEES {
        log.lock().unwrap().follows_sent.insert(followee);
        let req = client.req();
        let sent = Message::Graph { req, op: GraphOp::Follow, user: followee };
        if client.conn.send(&sent).await.is_err() {
            return;
        }
        match client.conn.recv().await {
            Ok(Message::Ok { .. }) => log.lock().unwrap().follows_acked.insert(followee),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(_) => return,
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One storm on a fresh data dir: post, follow, `kill -9`, restart, check.
async fn storm_trial(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = spawn(dir.path()).await;
    for followee in FIRST_FOLLOWEE..FIRST_FOLLOWEE + FOLLOWEES {
        let mut client = user(&process, dir.path(), followee).await;
        let reply = client.request(|req| Message::Publish { req, kind: 0, payload: payload(seed, followee, 1) }).await;
        assert!(matches!(reply, Message::Published { .. }), "{reply:?}");
    }

    let log = Arc::new(Mutex::new(Log::default()));
    let mut tasks = Vec::new();
    for author in FIRST_AUTHOR..FIRST_AUTHOR + AUTHORS {
        let client = user(&process, dir.path(), author).await;
        tasks.push(tokio::spawn(storm_author(client, seed, author, log.clone())));
    }
    let follower = user(&process, dir.path(), FOLLOWER).await;
    tasks.push(tokio::spawn(storm_follower(follower, log.clone())));
    tokio::time::sleep(Duration::from_millis(rng.gen_range(KILL_AFTER_MS))).await;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    for task in tasks {
        task.await.unwrap();
    }

    let mut process = spawn(dir.path()).await;
    let mut reader = user(&process, dir.path(), FOLLOWER).await;
    let log = std::mem::take(&mut *log.lock().unwrap());
    let mut found = 0;
    for author in FIRST_AUTHOR..FIRST_AUTHOR + AUTHORS {
        let sent = log.sent.get(&author).copied().unwrap_or(0);
        let mut seqs = HashSet::new();
        for item in read_all(&mut reader, Source::Author(author)).await {
            let (named_author, seq) = named(&item.payload).unwrap_or_else(|| panic!("seed {seed}: foreign {item:?}"));
            assert_eq!((item.author, named_author), (author, author), "seed {seed}: post {} author", item.post);
            assert!(seq >= 1 && seq <= sent, "seed {seed}: post {seq} of {author} was never sent");
            assert_eq!(item.payload, payload(seed, author, seq), "seed {seed}: post {seq} of {author} damaged");
            assert!(seqs.insert(seq), "seed {seed}: post {seq} of {author} stored twice");
            assert!(!log.refused.contains(&(author, seq)), "seed {seed}: refused post {seq} of {author} stored");
            if let Some(&acked) = log.acked.get(&item.post) {
                assert_eq!(acked, (author, seq), "seed {seed}: post id {} names another post", item.post);
            }
            found += 1;
        }
        for (&id, &(acked_author, seq)) in &log.acked {
            if acked_author == author {
                assert!(seqs.contains(&seq), "seed {seed}: acked post {seq} of {author} (id {id}) lost");
            }
        }
    }
    let mut followed = HashSet::new();
    for item in read_all(&mut reader, Source::Home).await {
        assert_eq!(item.payload, payload(seed, item.author, 1), "seed {seed}: home item {item:?}");
        followed.insert(item.author);
    }
    assert!(log.follows_acked.is_subset(&followed), "seed {seed}: an acked follow was lost");
    assert!(followed.is_subset(&log.follows_sent), "seed {seed}: a follow that was never sent");
    eprintln!(
        "seed {seed}: {} posts acked, {found} stored, {} refused; {} follows acked, {} stored, {} sent",
        log.acked.len(),
        log.refused.len(),
        log.follows_acked.len(),
        followed.len(),
        log.follows_sent.len()
    );
    assert!(!log.acked.is_empty(), "seed {seed}: the kill came before any ack; the trial checked nothing");
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

/// Runs `trials` storms with consecutive seeds from `HEARTLINE_CRASH_SEED`
/// or the clock.
async fn storms(trials: u64) {
    let seed = std::env::var("HEARTLINE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("crash storms: {trials} trials, HEARTLINE_CRASH_SEED={seed}");
    for trial in 0..trials {
        storm_trial(seed.wrapping_add(trial)).await;
    }
}

/// 20 trials, about 11 s in a debug build (BENCHMARKS.md, "Crash trials").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_posts_and_follows_survive_kill_9_mid_storm() {
    storms(20).await;
}
