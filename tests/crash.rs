//! Durability across `kill -9`: every acknowledged post and graph change is
//! there after a restart of the real binary on the same data dir.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use heartline::auth::{Claims, Keyring, Secret, Subject};
use heartline::protocol::*;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

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
    let keyring = Keyring { current: Secret::load(&dir.join("secret")).unwrap(), previous: None };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let token = Bytes::from(keyring.issue(&Claims { subject: Subject::User(user), expires_at: now + 3_600 }));
    let stream = TcpStream::connect(process.tcp).await.unwrap();
    let mut client = Client { framed: Framed::new(stream, MessageCodec::default()), next_req: 1, welcome: None };
    client.framed.send(&hello(Role::Client, token, false, 0)).await.unwrap();
    assert!(matches!(client.framed.next().await, Some(Ok(Message::Welcome(_)))));
    client
}

async fn author_posts(client: &mut Client, author: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let reply =
            client.request(|req| Message::Timeline { req, source: Source::Author(author), cursor, limit: 100 }).await;
        let Message::Page { items, .. } = reply else { panic!("{reply:?}") };
        let Some(last) = items.last() else { return out };
        cursor.max_id = Some(last.post);
        out.extend(items.iter().map(|i| i.post));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_posts_and_follows_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = spawn(dir.path()).await;
    let mut author = user(&process, dir.path(), 7).await;
    let mut reader = user(&process, dir.path(), 8).await;
    let follow = reader.request(|req| Message::Graph { req, op: GraphOp::Follow, user: 7 }).await;
    assert!(matches!(follow, Message::Ok { .. }));

    // Pipelined: many posts in flight, acknowledged in groups.
    const POSTS: u64 = 200;
    for req in 1..=POSTS {
        let msg = Message::Publish { req, kind: 0, payload: Bytes::from(format!("post {req}")) };
        author.framed.feed(&msg).await.unwrap();
    }
    author.framed.flush().await.unwrap();
    let mut acked = Vec::new();
    while (acked.len() as u64) < POSTS {
        match author.recv().await {
            Message::Published { post, .. } => acked.push(post),
            other => panic!("{other:?}"),
        }
    }
    process.child.kill().unwrap();
    process.child.wait().unwrap();

    let mut process = spawn(dir.path()).await;
    let mut reader = user(&process, dir.path(), 8).await;
    acked.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(author_posts(&mut reader, 7).await, acked, "every acked post, nothing else");
    let Message::Page { items, .. } = reader
        .request(|req| Message::Timeline { req, source: Source::Home, cursor: Cursor::default(), limit: 5 })
        .await
    else {
        panic!()
    };
    assert_eq!(items.len(), 5, "the follow survived");
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}
