//! A real daemon on 127.0.0.1:0 in a temporary data dir, a raw protocol
//! client for the integration tests (over `heartline_client::wire`), the
//! daemon's figures as its admin listener's /metrics shows them, and a proxy
//! that cuts connections.
#![allow(dead_code)]

pub(crate) mod nats;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use heartline::auth::{Claims, Keyring, Subject};
use heartline::config::Config;
use heartline::server::{self, Running};
use heartline_client::wire::{Connection, WireError};
use heartline_proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    config.websocket.listen = "127.0.0.1:0".parse().unwrap();
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

    /// The body of the daemon's /metrics.
    pub(crate) async fn metrics(&self) -> String {
        scrape(self.running.admin).await
    }

    /// One series of the daemon's /metrics, as [`sample`] reads it.
    pub(crate) async fn metric(&self, series: &str) -> u64 {
        sample(&self.metrics().await, series)
    }

    /// Graceful shutdown, then a new daemon on the same data dir.
    pub(crate) async fn restart(self) -> Self {
        self.stop().await.start().await
    }

    /// Graceful shutdown, keeping the data dir for [`Stopped::start`].
    pub(crate) async fn stop(mut self) -> Stopped {
        let dir = self._dir.take();
        self.running.shutdown().await;
        Stopped { config: self.config, dir }
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
        Client::from(Connection::connect(self.running.tcp).await.unwrap())
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

/// A daemon shut down gracefully, its data dir kept.
pub(crate) struct Stopped {
    config: Config,
    dir: Option<tempfile::TempDir>,
}

impl Stopped {
    /// A new daemon on the same data dir.
    pub(crate) async fn start(self) -> Daemon {
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
        Daemon { running, config: self.config, _dir: self.dir }
    }
}

/// A raw protocol connection with the test's expectations built in: a
/// frame that does not come within [`PATIENCE`] fails the test.
pub(crate) struct Client {
    pub conn: Connection,
    pub next_req: u64,
    pub welcome: Option<Welcome>,
}

impl From<Connection> for Client {
    fn from(conn: Connection) -> Self {
        Client { conn, next_req: 1, welcome: None }
    }
}

impl Client {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Client::from(Connection::from_stream(stream))
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
        self.conn.send(&msg).await.unwrap();
    }

    /// Writes `bytes` as they are; the server may already have closed (what
    /// it said is read afterwards).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.conn.send_raw(bytes).await
    }

    /// The next frame, or a panic after [`PATIENCE`].
    pub(crate) async fn recv(&mut self) -> Message {
        match tokio::time::timeout(PATIENCE, self.conn.recv()).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => panic!("connection ended: {e:?}"),
            Err(_) => panic!("nothing received within {PATIENCE:?}"),
        }
    }

    /// The next frame within `wait`, if any.
    pub(crate) async fn try_recv(&mut self, wait: Duration) -> Option<Message> {
        match tokio::time::timeout(wait, self.conn.recv()).await {
            Ok(Ok(msg)) => Some(msg),
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
            match tokio::time::timeout_at(until, self.conn.recv()).await {
                Err(_) => return,
                Ok(Ok(Message::PresencePush { entries })) => {
                    assert!(entries.iter().all(|e| e.user != user), "unexpected push {entries:?}")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("connection ended: {e:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the ERROR it sent last, if any.
    pub(crate) async fn closing_error(&mut self) -> Option<ErrorCode> {
        let mut last = None;
        loop {
            match tokio::time::timeout(PATIENCE, self.conn.recv()).await {
                Ok(Ok(Message::Error { code, .. })) => last = ErrorCode::from_u16(code),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return last,
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

/// One response from the admin listener.
pub(crate) struct HttpResponse {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body, de-chunked.
    pub body: String,
}

impl HttpResponse {
    /// The value of the header `name` (any case), if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// One HTTP/1.1 request to the admin listener at `admin` on a plain
/// connection, closed after the response; `token` goes in as a bearer token.
pub(crate) async fn http(admin: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_with(admin, method, path, &headers, body).await
}

/// [`http`] with any extra request headers.
pub(crate) async fn http_with(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(PATIENCE, exchange).await.unwrap_or_else(|_| panic!("no answer to {path}"));
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line: {head}"));
    let chunked = head.lines().any(|h| h.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    HttpResponse { status, head: head.to_owned(), body }
}

/// The body of `GET /metrics` from the daemon's admin listener at `admin`.
pub(crate) async fn scrape(admin: SocketAddr) -> String {
    let response = http(admin, "GET", "/metrics", None, "").await;
    assert_eq!(response.status, 200, "/metrics answered {}", response.head);
    response.body
}

/// A chunked HTTP/1.1 body, put back together.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").expect("CRLF after a chunk");
    }
}

/// The value of one series in a Prometheus text exposition, `series` written
/// as exposed: the name, and its labels if it has any
/// (`heartline_heartbeats_total{path="udp"}`). A series that is missing, or
/// not a whole number, fails the test.
pub(crate) fn sample(metrics: &str, series: &str) -> u64 {
    let line = metrics.lines().find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
    let value = line.unwrap_or_else(|| panic!("no {series} in:\n{metrics}")).rsplit(' ').next().unwrap();
    value.parse().unwrap_or_else(|_| panic!("{series} is {value:?}, not a whole number"))
}

/// A TCP proxy in front of the daemon, for clients that must lose their
/// connection: [`Proxy::cut`] ends the connections through it as a network
/// failure would, or after a last frame of its own (GOAWAY) as a draining
/// server would. The daemon sees its peer go away.
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    cuts: watch::Sender<Option<Message>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cuts, _) = watch::channel(None);
        let subscribe = cuts.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Subscribed at accept: only later cuts end this connection.
                tokio::spawn(Self::forward(client, upstream, subscribe.subscribe()));
            }
        });
        Self { addr, cuts, accepting }
    }

    /// Ends every connection open through the proxy now, after sending
    /// `last` (if any) to its client behind the frames already forwarded.
    pub(crate) fn cut(&self, last: Option<Message>) {
        self.cuts.send_replace(last);
    }

    /// Client bytes go up as they are; the daemon's frames come down one by
    /// one, so that a cut falls between two of them.
    async fn forward(client: TcpStream, upstream: SocketAddr, mut cuts: watch::Receiver<Option<Message>>) {
        let Ok(upstream) = TcpStream::connect(upstream).await else { return };
        let (mut client_read, client_write) = client.into_split();
        let (upstream_read, mut upstream_write) = upstream.into_split();
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
            let _ = upstream_write.shutdown().await;
        });
        let mut from_daemon = heartline_client::wire::Reader::new(upstream_read);
        let mut to_client = heartline_client::wire::Writer::new(client_write);
        loop {
            tokio::select! {
                _ = cuts.changed() => {
                    let last = cuts.borrow_and_update().clone();
                    if let Some(last) = last {
                        let _ = to_client.send(&last).await;
                    }
                    break;
                }
                msg = from_daemon.recv() => match msg {
                    Ok(msg) => if to_client.send(&msg).await.is_err() { break },
                    Err(_) => break,
                },
            }
        }
        // Both connections close: the halves are dropped here and in `up`.
        up.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Whether a tool is there; under CI a missing one fails the test rather
/// than skipping it.
pub(crate) fn available(program: &str, args: &[&str]) -> bool {
    let ok = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{program} {args:?} must work under CI");
        eprintln!("skipped: {program} {args:?} does not work here");
    }
    ok
}

/// Runs `tests/python/<script>` with `args`; fails the test unless it exits
/// 0 within a minute. Its output, stdout then stderr.
pub(crate) async fn python<S: AsRef<std::ffi::OsStr>>(script: &str, args: impl IntoIterator<Item = S>) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let run = tokio::process::Command::new("python3").arg(path).args(args).output();
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("python3 ran over a minute").unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}: {text}");
    text
}

/// The error that closes a connection whose HELLO carries `token` in `role`, if any.
pub(crate) async fn refused(daemon: &Daemon, token: Bytes, role: Role) -> Option<ErrorCode> {
    let mut client = daemon.connect().await;
    client.send(hello(role, token, false, 0)).await;
    client.closing_error().await
}
