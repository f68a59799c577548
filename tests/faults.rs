//! A data dir that runs out of space or turns read-only: writes are refused
//! with ERROR UNAVAILABLE, in-memory reads keep working, nothing refused is
//! stored, and the daemon takes writes again once the disk does, without a
//! restart (docs/store.md, "Outages").
//!
//! The data dir is a small tmpfs mounted for the test; without the right to
//! mount (not root, or in a container without CAP_SYS_ADMIN) the test skips
//! with a message. A read-only data dir is not tested here: the kernel
//! refuses to remount a file system read-only (plain or bind) while a file
//! on it is open for writing, as the journal is. The daemon sees EROFS the
//! way it sees ENOSPC (the same outage path, `Outage::ReadOnly`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use heartline_proto::*;

/// A tmpfs mounted on a fresh directory, unmounted (and the directory
/// removed) when dropped, panics included.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when mounting is not permitted here.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                eprintln!("skipped: cannot mount a tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon thread still closing its files must not keep the
        // mount alive, nor make this panic during a panic.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Fills the file system with one file at `path`, to the last byte.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    // What is left is smaller than a chunk.
    while file.write_all(&[0xa5]).is_ok() {}
}

async fn start_on(tmpfs: &Tmpfs) -> Daemon {
    Daemon::start_with(|config| {
        config.data_dir = tmpfs.path().to_owned();
        // The test posts faster than a person would.
        config.limits.post_rate = 0.0;
    })
    .await
}

/// A post whose payload names it, so that a refused one can be looked for.
fn publish(req: u64, tag: &str) -> Message {
    Message::Publish { req, kind: 0, payload: Bytes::from(format!("{tag} {}", "x".repeat(900))) }
}

/// Every payload of `author`'s timeline, paging to the end.
async fn payloads(client: &mut Client, author: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let reply =
            client.request(|req| Message::Timeline { req, source: Source::Author(author), cursor, limit: 100 }).await;
        let Message::Page { items, .. } = reply else { panic!("{reply:?}") };
        let Some(last) = items.last() else { return out };
        cursor.max_id = Some(last.post);
        out.extend(items.into_iter().map(|i| i.payload));
    }
}

/// The payload [`publish`] sent with `tag`.
fn tagged(tag: &str) -> Bytes {
    let Message::Publish { payload, .. } = publish(0, tag) else { unreachable!() };
    payload
}

/// Posts `tag` until the store refuses (UNAVAILABLE); returns the tags acked
/// on the way and the refused one.
async fn post_until_refused(client: &mut Client, prefix: &str, acked: &mut Vec<String>) -> String {
    for n in 0..10_000 {
        let tag = format!("{prefix}-{n}");
        match client.request(|req| publish(req, &tag)).await {
            Message::Published { .. } => acked.push(tag),
            Message::Error { code, .. } if code == ErrorCode::Unavailable as u16 => return tag,
            other => panic!("{other:?}"),
        }
    }
    panic!("the store never refused a post");
}

/// Posts `tag` until it is acked, up to a few recovery periods (the daemon
/// retries its disk every second).
async fn post_until_acked(client: &mut Client, tag: &str, refused: &mut Vec<String>) {
    for attempt in 0..50 {
        let tag = format!("{tag}-retry-{attempt}");
        match client.request(|req| publish(req, &tag)).await {
            Message::Published { .. } => return,
            Message::Error { code, .. } if code == ErrorCode::Unavailable as u16 => refused.push(tag),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the daemon did not take writes again within 10 s");
}

/// What a client sees while the store is down, and that it came back.
async fn outage_then_recovery(daemon: Daemon, start_outage: impl FnOnce(), end_outage: impl FnOnce()) -> Daemon {
    let mut author = daemon.user(7).await;
    let mut friend = daemon.user(8).await;
    let mut watcher = daemon.watcher().await;
    assert_eq!(watcher.watch(&[8]).await[0].status, Status::Online);
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for n in 0..20 {
        let tag = format!("before-{n}");
        let reply = author.request(|req| publish(req, &tag)).await;
        assert!(matches!(reply, Message::Published { .. }), "{tag}: {reply:?}");
        acked.push(tag);
    }

    // Down: posts and graph changes are refused, the connection stays.
    start_outage();
    refused.push(post_until_refused(&mut author, "filling", &mut acked).await);
    for n in 0..5 {
        let tag = format!("down-{n}");
        let reply = author.request(|req| publish(req, &tag)).await;
        assert!(matches!(reply, Message::Error { code, .. } if code == ErrorCode::Unavailable as u16), "{reply:?}");
        refused.push(tag);
    }
    let follow = friend.request(|req| Message::Graph { req, op: GraphOp::Follow, user: 7 }).await;
    assert!(matches!(follow, Message::Error { code, .. } if code == ErrorCode::Unavailable as u16), "{follow:?}");
    let store_up = async || daemon.metric("heartline_store_up").await;
    assert_eq!(store_up().await, 0, "the store_up gauge reads 0 while down");
    // In-memory state is still served: presence, pushes, hot timelines.
    friend.set_status(Status::Away, "disk full").await;
    assert_eq!(watcher.push_for(8).await.status, Status::Away);
    assert_eq!(watcher.query(&[8]).await[0].status, Status::Away);
    let hot = payloads(&mut friend, 7).await;
    assert!(acked.iter().all(|tag| hot.contains(&tagged(tag))), "acked posts readable while down");

    end_outage();
    post_until_acked(&mut author, "after", &mut refused).await;
    assert_eq!(store_up().await, 1, "and 1 once the store is back");
    let follow = friend.request(|req| Message::Graph { req, op: GraphOp::Follow, user: 7 }).await;
    assert!(matches!(follow, Message::Ok { .. }), "{follow:?}");
    for n in 0..20 {
        let tag = format!("after-{n}");
        let reply = author.request(|req| publish(req, &tag)).await;
        assert!(matches!(reply, Message::Published { .. }), "{tag}: {reply:?}");
        acked.push(tag);
    }
    check(&mut friend, &acked, &refused).await;
    drop((author, friend, watcher));

    let daemon = daemon.restart().await;
    let mut reader = daemon.user(9).await;
    check(&mut reader, &acked, &refused).await;
    daemon
}

/// Every acked post of user 7 is readable, no refused one is.
async fn check(client: &mut Client, acked: &[String], refused: &[String]) {
    let stored = payloads(client, 7).await;
    for tag in acked {
        assert!(stored.contains(&tagged(tag)), "acked post {tag} is missing");
    }
    for tag in refused {
        assert!(!stored.contains(&tagged(tag)), "refused post {tag} was stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_recovers_when_space_returns() {
    let Some(tmpfs) = Tmpfs::mount("32m") else { return };
    let daemon = start_on(&tmpfs).await;
    let filler = tmpfs.path().join("filler");
    let daemon = outage_then_recovery(daemon, || fill(&filler), || std::fs::remove_file(&filler).unwrap()).await;
    daemon.running.shutdown().await;
}
