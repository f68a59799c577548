//! A real daemon on 127.0.0.1:0 in a temporary data dir, and a raw protocol
//! client for the integration tests.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use heartline::auth::{Claims, Keyring, Subject};
use heartline::config::Config;
use heartline::server::{self, Running};
use heartline_proto::*;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long a test waits for something the server should do promptly.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);

pub(crate) struct Daemon {
    pub running: Running,
    pub config: Config,
    _dir: Option<tempfile::TempDir>,
}

/// Settings for tests: ephemeral ports, a fresh data dir, short timers.
pub(crate) fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        ..Config::default()
    };
    config.presence.heartbeat_interval = Duration::from_millis(500);
    config.presence.ttl = Duration::from_millis(2_000);
    config.presence.grace = Duration::from_millis(600);
    config.limits.drain_timeout = Duration::from_millis(500);
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config
}

impl Daemon {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let running = server::start(config.clone()).await.unwrap();
        Self { running, config, _dir: Some(dir) }
    }

    /// Graceful shutdown, then a new daemon on the same data dir.
    pub(crate) async fn restart(mut self) -> Self {
        let dir = self._dir.take();
        self.running.shutdown().await;
        // The old daemon's connection tasks may still hold its store for a
        // moment after shutdown returns (a client that stays connected while
        // draining), so the store may be locked at first.
        let until = tokio::time::Instant::now() + PATIENCE;
        let running = loop {
            match server::start(self.config.clone()).await {
                Ok(running) => break running,
                Err(e) if tokio::time::Instant::now() < until => {
                    eprintln!("restart: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot restart: {e}"),
            }
        };
        Self { running, config: self.config, _dir: dir }
    }

    fn keyring(&self) -> Keyring {
        Keyring { current: heartline::auth::load_secret(&self.config.data_dir.join("secret")).unwrap(), previous: None }
    }

    pub(crate) fn token(&self, subject: Subject, ttl_s: i64) -> Bytes {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        Bytes::from(self.keyring().issue(&Claims { subject, expires_at: (now + ttl_s) as u64 }))
    }

    pub(crate) fn user_token(&self, user: u64) -> Bytes {
        self.token(Subject::User(user), 3_600)
    }

    pub(crate) async fn connect(&self) -> Client {
        Client::new(TcpStream::connect(self.running.tcp).await.unwrap())
    }

    /// A connection from `source` (any 127.x.y.z works on loopback), for
    /// tests that tell peers apart by address.
    pub(crate) async fn connect_from(&self, source: std::net::Ipv4Addr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        Client::new(socket.connect(self.running.tcp).await.unwrap())
    }

    /// A client session of `user`, past WELCOME.
    pub(crate) async fn user(&self, user: u64) -> Client {
        self.hello(Role::Client, self.user_token(user), false, 0).await
    }

    /// A connection that watches without a session of its own, so it never
    /// expires however long a test keeps it idle (a gateway: it sees what an
    /// unrelated user sees).
    pub(crate) async fn watcher(&self) -> Client {
        self.gateway("watcher", false).await
    }

    pub(crate) async fn gateway(&self, name: &str, udp: bool) -> Client {
        self.hello(Role::Gateway, self.token(Subject::Gateway(name.into()), 3_600), udp, 0).await
    }

    pub(crate) async fn hello(&self, role: Role, token: Bytes, want_udp: bool, resume: u64) -> Client {
        let mut client = self.connect().await;
        client.handshake(hello(role, token, want_udp, resume)).await;
        client
    }
}

pub(crate) fn hello(role: Role, token: Bytes, want_udp: bool, resume: u64) -> Message {
    Message::Hello(Hello { version: VERSION, role, device: Device::Desktop, want_udp, resume, token })
}

pub(crate) struct Client {
    pub framed: Framed<TcpStream, MessageCodec>,
    pub next_req: u64,
    pub welcome: Option<Welcome>,
}

impl Client {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Client { framed: Framed::new(stream, MessageCodec::default()), next_req: 1, welcome: None }
    }

    /// Sends `hello` and waits for WELCOME.
    pub(crate) async fn handshake(&mut self, hello: Message) {
        self.send(hello).await;
        match self.recv().await {
            Message::Welcome(w) => self.welcome = Some(w),
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    pub(crate) fn session(&self) -> u64 {
        self.welcome.as_ref().unwrap().session
    }

    pub(crate) async fn send(&mut self, msg: Message) {
        self.framed.send(&msg).await.unwrap();
    }

    /// The next frame, or a panic after [`PATIENCE`].
    pub(crate) async fn recv(&mut self) -> Message {
        match tokio::time::timeout(PATIENCE, self.framed.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(other) => panic!("connection ended: {other:?}"),
            Err(_) => panic!("nothing received within {PATIENCE:?}"),
        }
    }

    /// The next frame within `wait`, if any.
    pub(crate) async fn try_recv(&mut self, wait: Duration) -> Option<Message> {
        match tokio::time::timeout(wait, self.framed.next()).await {
            Ok(Some(Ok(msg))) => Some(msg),
            _ => None,
        }
    }

    /// The next frame that is not a presence push.
    pub(crate) async fn reply(&mut self) -> Message {
        loop {
            match self.recv().await {
                Message::PresencePush { .. } => continue,
                other => return other,
            }
        }
    }

    pub(crate) fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    /// Sends a request built around a fresh req id and returns the reply.
    pub(crate) async fn request(&mut self, build: impl FnOnce(u64) -> Message) -> Message {
        let req = self.req();
        self.send(build(req)).await;
        self.reply().await
    }

    pub(crate) async fn watch(&mut self, users: &[u64]) -> Vec<PresenceEntry> {
        match self.request(|req| Message::Watch { req, users: users.to_vec() }).await {
            Message::Presence { entries, .. } => entries,
            other => panic!("expected PRESENCE, got {other:?}"),
        }
    }

    pub(crate) async fn query(&mut self, users: &[u64]) -> Vec<PresenceEntry> {
        match self.request(|req| Message::Query { req, users: users.to_vec() }).await {
            Message::Presence { entries, .. } => entries,
            other => panic!("expected PRESENCE, got {other:?}"),
        }
    }

    pub(crate) async fn set_status(&mut self, status: Status, text: &str) {
        let reply = self.request(|req| Message::SetStatus { req, session: None, status, text: text.into() }).await;
        assert!(matches!(reply, Message::Ok { .. }), "{reply:?}");
    }

    /// The next presence entry pushed for `user`, skipping others.
    pub(crate) async fn push_for(&mut self, user: u64) -> PresenceEntry {
        loop {
            if let Message::PresencePush { entries } = self.recv().await {
                if let Some(e) = entries.into_iter().rev().find(|e| e.user == user) {
                    return e;
                }
            }
        }
    }

    /// Asserts that no push for `user` arrives within `wait`, on a
    /// connection that stays open.
    pub(crate) async fn no_push_for(&mut self, user: u64, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(until, self.framed.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::PresencePush { entries }))) => {
                    assert!(entries.iter().all(|e| e.user != user), "unexpected push {entries:?}")
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the ERROR it sent last, if any.
    pub(crate) async fn closing_error(&mut self) -> Option<ErrorCode> {
        let mut last = None;
        loop {
            match tokio::time::timeout(PATIENCE, self.framed.next()).await {
                Ok(Some(Ok(Message::Error { code, .. }))) => last = ErrorCode::from_u16(code),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return last,
                Err(_) => panic!("connection not closed within {PATIENCE:?}"),
            }
        }
    }

    /// Keeps the session alive with steady-state heartbeats for `duration`.
    pub(crate) async fn heartbeat_for(&mut self, duration: Duration) {
        let until = tokio::time::Instant::now() + duration;
        while tokio::time::Instant::now() < until {
            self.send(Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None })).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
