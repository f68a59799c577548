//! Operations against the real daemon: systemd readiness, watchdog, socket
//! activation, graceful SIGTERM, SIGHUP reload, JSON logs and what a failed
//! start prints (run as the built binary, the way systemd runs it), the HTTP
//! admin API (in process), the example config in systemd/, and the man pages
//! and completions the Debian package ships.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use heartline::auth::{Claims, Keyring, Subject};
use heartline::config::{Config, ConfigError, Overrides};
use heartline_proto::*;
use tokio::net::{TcpStream, UnixDatagram};

/// A spawned binary needs longer than an in-process daemon: it starts a runtime and opens a store.
const STARTUP: Duration = Duration::from_secs(20);

/// `heartline serve` as a child process, with a NOTIFY_SOCKET of our own.
struct Process {
    child: tokio::process::Child,
    notify: UnixDatagram,
    dir: tempfile::TempDir,
    tcp: SocketAddr,
    admin: SocketAddr,
    /// The STATUS line of READY=1, which names every listener.
    status: String,
}

/// How the child is started beyond the defaults.
#[derive(Default)]
struct Launch {
    env: Vec<(&'static str, String)>,
    /// Variables the child must not have (`RUST_LOG`: the `log` setting then applies).
    unset: Vec<&'static str>,
    /// Descriptors to hand over as fds 3, 4, … (socket activation).
    listen_fds: Vec<std::os::fd::RawFd>,
}

fn config_text(max_watch: usize) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n[limits]\ndrain_timeout = \"500ms\"\nmax_watch = {max_watch}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[websocket]\nlisten = \"127.0.0.1:0\"\n"
    )
}

impl Process {
    async fn spawn(launch: Launch) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("heartline.toml"), config_text(10_000)).unwrap();
        let notify_path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let bin = env!("CARGO_BIN_EXE_heartline");
        let config = dir.path().join("heartline.toml");
        let data = dir.path().join("data");
        let serve =
            ["serve".as_ref(), "--config".as_ref(), config.as_os_str(), "--data-dir".as_ref(), data.as_os_str()];
        let mut command = if launch.listen_fds.is_empty() {
            let mut command = tokio::process::Command::new(bin);
            command.args(serve);
            command
        } else {
            // LISTEN_PID must be the daemon's pid: a shell learns its own and execs the daemon in its place.
            let mut command = tokio::process::Command::new("/bin/sh");
            command.arg("-c").arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"").arg(bin).args(serve);
            command.env("LISTEN_FDS", launch.listen_fds.len().to_string());
            let fds = launch.listen_fds.clone();
            // SAFETY: between fork and exec only dup2 runs, which is async-signal-safe; it
            // allocates nothing and touches no lock. The sources are ≥ 100 (see `high_fd`),
            // so placing one at 3 or 4 never overwrites another before it is copied.
            unsafe {
                command.pre_exec(move || {
                    for (i, &fd) in fds.iter().enumerate() {
                        if libc::dup2(fd, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            command
        };
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        // Only what this test sets: never a socket-activation, watchdog or journal setting the test runner inherited.
        for var in ["LISTEN_PID", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"] {
            command.env_remove(var);
        }
        if launch.listen_fds.is_empty() {
            command.env_remove("LISTEN_FDS");
        }
        command.env("NOTIFY_SOCKET", &notify_path).env("RUST_LOG", "info").envs(launch.env);
        for var in launch.unset {
            command.env_remove(var);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).kill_on_drop(true);
        let child = command.spawn().unwrap();
        let unset = ([0, 0, 0, 0], 0).into();
        let mut process = Self { child, notify, dir, tcp: unset, admin: unset, status: String::new() };
        let ready = process.expect("READY=1").await;
        let status = ready.lines().find_map(|l| l.strip_prefix("STATUS=")).expect("READY=1 comes with STATUS");
        let addr = |name: &str| -> SocketAddr {
            let after = status.split(&format!("{name} ")).nth(1).expect(name);
            after.split(',').next().unwrap().parse().unwrap()
        };
        process.tcp = addr("tcp");
        process.admin = addr("admin");
        process.status = status.to_owned();
        process
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The next notification that has the line `line`, skipping others.
    async fn expect(&self, line: &str) -> String {
        let mut buf = vec![0; 4096];
        let until = tokio::time::Instant::now() + STARTUP;
        loop {
            match tokio::time::timeout_at(until, self.notify.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if message.lines().any(|l| l == line) {
                        return message;
                    }
                }
                Ok(Err(e)) => panic!("notify socket: {e}"),
                Err(_) => panic!("no {line} within {STARTUP:?}; daemon log:\n{}", self.log()),
            }
        }
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("still running") as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn secret_path(&self) -> PathBuf {
        self.dir.path().join("data/secret")
    }

    /// A token for `user`, signed with the secret file as it is now.
    fn token(&self, user: u64) -> Bytes {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let keyring = Keyring { current: heartline::auth::load_secret(&self.secret_path()).unwrap(), previous: None };
        Bytes::from(keyring.issue(&Claims { subject: Subject::User(user), expires_at: now + 3_600 }))
    }

    async fn hello(&self, token: Bytes) -> Result<Client, Option<ErrorCode>> {
        let stream = TcpStream::connect(self.tcp).await.unwrap();
        let mut client = Client::new(stream);
        client.send(hello(Role::Client, token, false, 0)).await;
        match client.recv().await {
            Message::Welcome(w) => {
                client.welcome = Some(w);
                Ok(client)
            }
            Message::Error { code, .. } => Err(ErrorCode::from_u16(code)),
            other => panic!("expected WELCOME or ERROR, got {other:?}"),
        }
    }
}

/// A private (mode 0600) secret file of 64 hex digits, replaced atomically.
fn write_secret(path: &Path, byte: u8) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("new");
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).unwrap();
    writeln!(file, "{}", format!("{byte:02x}").repeat(32)).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// A copy of `fd` at 100 or above, closed on exec: the child's dup2 onto 3 and 4 cannot clobber it.
fn high_fd(fd: std::os::fd::RawFd) -> std::os::fd::RawFd {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own returns a new one or -1.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
    assert!(high >= 100, "{}", std::io::Error::last_os_error());
    high
}

#[tokio::test]
async fn ready_then_watchdog_pings_on_the_notify_socket() {
    // Pings come every WATCHDOG_USEC / 2 = 100 ms.
    let launch = Launch { env: vec![("WATCHDOG_USEC", "200000".into())], ..Launch::default() };
    let process = Process::spawn(launch).await;
    process.expect("WATCHDOG=1").await;
    process.expect("WATCHDOG=1").await;
    let mut client = process.hello(process.token(7)).await.unwrap();
    match client.request(|req| Message::Stats { req }).await {
        Message::StatsReply { stats, .. } => assert_eq!(stats.sessions, 1),
        other => panic!("expected STATS_REPLY, got {other:?}"),
    }
}

/// `heartline` run to completion with `env` added to the test's environment.
fn run(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_heartline"));
    command.args(args).envs(env.iter().copied());
    command.output().unwrap()
}

#[tokio::test]
async fn variables_that_name_no_setting_are_left_alone() {
    // `HEARTLINE_TOKEN` is ctl's; Kubernetes sets the others in pods for a service named `heartline`.
    let foreign = [
        ("HEARTLINE_TOKEN", "00ff"),
        ("HEARTLINE_PORT", "tcp://10.0.0.1:7400"),
        ("HEARTLINE_SERVICE_HOST", "10.0.0.1"),
        ("HEARTLINE_PORT_7400_TCP_ADDR", "10.0.0.1"),
    ];
    let launch = Launch { env: foreign.iter().map(|(k, v)| (*k, v.to_string())).collect(), ..Launch::default() };
    let process = Process::spawn(launch).await;
    assert!(process.hello(process.token(5)).await.unwrap().welcome.is_some());

    // `token` reads the daemon's secret with the same variables set.
    let data = process.dir.path().join("data");
    let token =
        run(&["token".as_ref(), "--data-dir".as_ref(), data.as_os_str(), "--user".as_ref(), "5".as_ref()], &foreign);
    assert!(token.status.success(), "{token:?}");

    let file = example();
    let mut env = foreign.to_vec();
    env.push(("HEARTLINE_LIMITS__MAX_WATCH", "7"));
    let checked = run(&["check-config".as_ref(), file.as_os_str()], &env);
    assert!(checked.status.success(), "{checked:?}");
    assert!(String::from_utf8(checked.stdout).unwrap().contains("max_watch = 7"), "settings are still read");

    // A misspelt key inside a known section is still refused.
    let typo = run(&["check-config".as_ref(), file.as_os_str()], &[("HEARTLINE_LIMITS__MAX_FRAMEE", "8192")]);
    assert!(!typo.status.success());
    assert!(String::from_utf8(typo.stderr).unwrap().contains("max_framee"));
}

/// The daemon's log as JSON records, each line's `<N>` journal priority (if
/// any) beside it; a line that is not one JSON object fails the test.
fn json_records(log: &str) -> Vec<(Option<u8>, serde_json::Value)> {
    log.lines()
        .map(|line| {
            let (priority, json) = match line.strip_prefix('<').and_then(|rest| rest.split_once('>')) {
                Some((n, json)) => (Some(n.parse().unwrap()), json),
                None => (None, line),
            };
            let record: serde_json::Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nlog:\n{log}"));
            assert!(record.is_object(), "{line}");
            (priority, record)
        })
        .collect()
}

/// Whether a record comes from the storage engine's crates.
fn from_storage(record: &serde_json::Value) -> bool {
    let target = record["target"].as_str().unwrap_or_default();
    ["fjall", "lsm_tree"].iter().any(|krate| target == *krate || target.starts_with(&format!("{krate}::")))
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_the_storage_engine_stays_quiet() {
    // RUST_LOG=info (as every spawned daemon here): the storage engine's routine
    // info lines (it creates the store on this first start) stay out.
    let launch = Launch { env: vec![("HEARTLINE_LOG_FORMAT", "json".into())], ..Launch::default() };
    let process = Process::spawn(launch).await;
    let records = json_records(&process.log());
    let listening = records
        .iter()
        .map(|(_, r)| r)
        .find(|r| r["message"] == "heartline listening")
        .unwrap_or_else(|| panic!("no listening record: {records:?}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["tcp"], process.tcp.to_string(), "fields are keys of the record: {listening}");
    assert!(listening["timestamp"].is_string() && listening["target"].is_string(), "{listening}");
    assert!(records.iter().all(|(priority, r)| priority.is_none() && !from_storage(r)), "{records:?}");
    drop(process);

    // The `log` setting without RUST_LOG, naming fjall: its lines are back; under
    // the journal each JSON line carries its priority.
    let launch = Launch {
        env: vec![
            ("HEARTLINE_LOG_FORMAT", "json".into()),
            ("HEARTLINE_LOG", "info,fjall=info".into()),
            ("JOURNAL_STREAM", "8:1234".into()),
        ],
        unset: vec!["RUST_LOG"],
        ..Launch::default()
    };
    let process = Process::spawn(launch).await;
    let records = json_records(&process.log());
    assert!(records.iter().any(|(_, r)| from_storage(r)), "fjall named, its info lines show: {records:?}");
    for (priority, record) in &records {
        let expected = match record["level"].as_str() {
            Some("WARN") => 4,
            Some("INFO") => 6,
            other => panic!("{other:?} in {record}"),
        };
        assert_eq!(*priority, Some(expected), "{record}");
    }
}

#[test]
fn a_failed_start_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // With RUST_BACKTRACE set, as in many developers' shells: still no backtrace.
    let stderr = |args: &[&std::ffi::OsStr]| {
        let output = run(args, &[("RUST_BACKTRACE", "1"), ("RUST_LOG", "info")]);
        assert!(!output.status.success());
        String::from_utf8(output.stderr).unwrap()
    };
    let serve = |config: &Path| stderr(&["serve".as_ref(), "--config".as_ref(), config.as_os_str()]);

    let missing = dir.path().join("missing.toml");
    let message = serve(&missing);
    assert_eq!(
        message,
        format!("error: invalid configuration: {}: No such file or directory (os error 2)\n", missing.display())
    );
    let (_dir, port) = write_config("listen = \"127.0.0.1:99999\"\n");
    assert_eq!(
        serve(&port),
        format!("error: invalid configuration: {}: listen: invalid socket address syntax\n", port.display())
    );
    let message = stderr(&["check-config".as_ref(), missing.as_os_str()]);
    assert_eq!(message.lines().count(), 1, "{message}");

    // After the logger is installed, the failure is its last line, once.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let data = file.join("data");
    let message = stderr(&["serve".as_ref(), "--data-dir".as_ref(), data.as_os_str()]);
    assert_eq!(message.matches("Not a directory").count(), 1, "{message}");
    let last = message.lines().last().unwrap();
    assert!(last.contains(&format!("ERROR cannot use data dir {}: Not a directory", data.display())), "{message}");
    assert!(!message.contains("Caused by") && !message.contains("backtrace"), "{message}");
}

#[test]
fn token_needs_init_to_create_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = |init: bool| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["token".as_ref(), "--data-dir".as_ref(), data.as_os_str(), "--user".as_ref(), "1".as_ref()];
        if init {
            args.push("--init".as_ref());
        }
        args
    };
    let refused = run(&args(false), &[]);
    assert!(!refused.status.success());
    let message = String::from_utf8(refused.stderr).unwrap();
    assert!(message.contains("no secret at") && message.contains("--init"), "{message}");
    assert!(!data.exists(), "nothing is created without --init");

    let created = run(&args(true), &[]);
    assert!(created.status.success(), "{created:?}");
    let secret = std::fs::read_to_string(data.join("secret")).unwrap();
    // Once the secret exists, --init is not needed and changes nothing.
    for init in [false, true] {
        let again = run(&args(init), &[]);
        assert!(again.status.success(), "{again:?}");
        assert_eq!(std::fs::read_to_string(data.join("secret")).unwrap(), secret);
    }
}

#[tokio::test]
async fn serves_on_sockets_handed_over_through_listen_fds() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    use std::os::fd::AsRawFd;
    let fds = vec![high_fd(tcp.as_raw_fd()), high_fd(udp.as_raw_fd())];
    let process = Process::spawn(Launch { listen_fds: fds.clone(), ..Launch::default() }).await;
    for fd in fds {
        // SAFETY: our own copies from `high_fd`, closed once; the child has its own.
        unsafe { libc::close(fd) };
    }
    assert_eq!(process.tcp, tcp.local_addr().unwrap(), "the daemon listens on the socket it was given");
    let client = process.hello(process.token(9)).await.unwrap();
    assert!(client.welcome.is_some());
    // A datagram on the handed-over UDP socket reaches the daemon: it is counted as dropped (too short).
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"x", udp.local_addr().unwrap()).unwrap();
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = get(process.admin, "/metrics", None).await.1;
        if metrics.contains("heartline_udp_dropped_total{reason=\"bad_length\"} 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "datagram not seen:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(process.log().contains(&format!("tcp={}", tcp.local_addr().unwrap())), "{}", process.log());
}

#[tokio::test]
async fn sigterm_sends_goaway_notifies_stopping_and_exits_zero() {
    let mut process = Process::spawn(Launch::default()).await;
    let mut client = process.hello(process.token(3)).await.unwrap();
    process.signal(libc::SIGTERM);
    match client.recv().await {
        Message::Goaway { reason: GoawayReason::Shutdown, .. } => {}
        other => panic!("expected GOAWAY, got {other:?}"),
    }
    process.expect("STOPPING=1").await;
    drop(client);
    let status = tokio::time::timeout(STARTUP, process.child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status:?}; log:\n{}", process.log());
    assert!(process.log().contains("heartline stopped"));
}

#[tokio::test]
async fn sighup_rotates_the_secret_keeping_the_old_one_and_reloads_limits() {
    let process = Process::spawn(Launch::default()).await;
    let old = process.token(1);
    write_secret(&process.secret_path(), 0xab);
    let new = process.token(2);
    assert_eq!(process.hello(new.clone()).await.err(), Some(Some(ErrorCode::BadToken)), "not before the reload");
    std::fs::write(process.dir.path().join("heartline.toml"), config_text(1)).unwrap();
    process.signal(libc::SIGHUP);
    // systemd sees the reload: RELOADING=1 with the monotonic time, then READY=1 once it is applied.
    let reloading = process.expect("RELOADING=1").await;
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading}");
    let ready = process.expect("READY=1").await;
    assert!(ready.contains(&format!("STATUS={}", process.status)), "the start's STATUS again: {ready}");
    let until = tokio::time::Instant::now() + PATIENCE;
    let mut client = loop {
        match process.hello(new.clone()).await {
            Ok(client) => break client,
            Err(_) if tokio::time::Instant::now() < until => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(code) => panic!("new secret refused after SIGHUP: {code:?}; log:\n{}", process.log()),
        }
    };
    assert!(process.hello(old).await.is_ok(), "the previous secret stays valid in its window");
    let reply = client.request(|req| Message::Watch { req, users: vec![10, 11] }).await;
    assert!(
        matches!(reply, Message::Error { code, .. } if code == ErrorCode::LimitExceeded as u16),
        "max_watch = 1 applies after the reload: {reply:?}"
    );
    let log = process.log();
    assert!(log.contains("token secret rotated"), "{log}");
    assert!(log.contains("setting=limits.max_watch"), "{log}");
}

#[tokio::test]
async fn sighup_reloads_the_tls_certificate_for_new_handshakes() {
    let pki = pki::Pki::new();
    let first = pki.leaf("server");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let env = vec![
        ("HEARTLINE_TLS__LISTEN", "127.0.0.1:0".to_owned()),
        ("HEARTLINE_TLS__CERT", path(&first.cert)),
        ("HEARTLINE_TLS__KEY", path(&first.key)),
    ];
    let process = Process::spawn(Launch { env, ..Launch::default() }).await;
    let tls: SocketAddr =
        process.status.split("tls ").nth(1).expect("tls in STATUS").split(',').next().unwrap().parse().unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let leaf = || async {
        let stream = TcpStream::connect(tls).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, stream).await.unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(leaf().await, first.der);
    let second = pki.leaf("server");
    process.signal(libc::SIGHUP);
    let until = tokio::time::Instant::now() + PATIENCE;
    while leaf().await != second.der {
        assert!(tokio::time::Instant::now() < until, "old certificate after SIGHUP; log:\n{}", process.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(process.log().contains("TLS certificate read again"), "{}", process.log());
}

/// One request to the admin listener: its status and body.
async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let response = http(addr, method, path, token, body).await;
    (response.status, response.body)
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    request(addr, "GET", path, token, "").await
}

#[tokio::test]
async fn metrics_probes_and_json_api() {
    let daemon = Daemon::start().await;
    let admin = daemon.running.admin;
    assert_eq!(get(admin, "/healthz", None).await, (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz", None).await, (200, "ready\n".into()));

    let mut watcher = daemon.watcher().await;
    watcher.watch(&[42]).await;
    let mut user = daemon.user(42).await;
    watcher.push_for(42).await;
    user.set_status(Status::Busy, "in a meeting").await;
    watcher.push_for(42).await;
    user.heartbeat_for(Duration::from_millis(500)).await;
    let mut broken = daemon.connect().await;
    broken.send(Message::Stats { req: 1 }).await;
    assert_eq!(broken.closing_error().await, Some(ErrorCode::Unauthenticated));

    let follow = user.request(|req| Message::Graph { req, op: GraphOp::Follow, user: 7 }).await;
    assert!(matches!(follow, Message::Ok { .. }), "{follow:?}");
    assert_eq!(get(admin, "/v1/graph/42", None).await, (200, r#"{"user":"42","followers":0,"following":1}"#.into()));
    assert_eq!(get(admin, "/v1/graph/7", None).await.1, r#"{"user":"7","followers":1,"following":0}"#);

    let (status, metrics) = get(admin, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(sample(&metrics, "heartline_heartbeats_total{path=\"tcp\"}") >= 2, "{metrics}");
    assert_eq!(sample(&metrics, "heartline_sessions"), 1);
    assert_eq!(sample(&metrics, "heartline_users_online"), 1);
    assert_eq!(sample(&metrics, "heartline_watches"), 1);
    assert_eq!(sample(&metrics, "heartline_connections"), 2);
    assert_eq!(sample(&metrics, "heartline_store_up"), 1);
    assert!(sample(&metrics, "heartline_watch_events_total") >= 2);
    assert_eq!(sample(&metrics, "heartline_errors_sent_total{code=\"unauthenticated\"}"), 1);
    assert_eq!(sample(&metrics, "heartline_connections_closed_total{reason=\"unauthenticated\"}"), 1);
    for series in [
        "heartline_heartbeats_total{path=\"udp\"}",
        "heartline_heartbeats_total{path=\"batch\"}",
        "heartline_watch_events_coalesced_total",
        "heartline_outbound_queue_depth",
        "heartline_outbound_queue_depth_max",
        "heartline_udp_dropped_total{reason=\"replayed\"}",
        "heartline_store_commit_seconds_count",
        "heartline_store_commit_seconds_bucket{le=\"+Inf\"}",
        "heartline_posts_total",
        "heartline_fanout_inserts_total",
        "heartline_fanout_lag_seconds_count",
        "heartline_timeline_reads_total{path=\"hot\"}",
        "heartline_timeline_reads_total{path=\"cold\"}",
        "heartline_timeline_reads_total{path=\"pull\"}",
    ] {
        sample(&metrics, series);
    }

    let (status, body) = get(admin, "/v1/presence/42", None).await;
    assert_eq!(status, 200);
    let entry: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(entry["user"], "42", "ids are strings: {entry}");
    assert_eq!(entry["status"], "busy");
    assert_eq!(entry["text"], "in a meeting");
    let version: u64 = entry["version"].as_str().expect("the version is a string").parse().unwrap();
    assert!(version > 0);
    assert!(entry["last_seen_ms"].is_u64(), "timestamps stay numbers: {entry}");
    // Ids in a query may be numbers or strings.
    let (status, body) = request(admin, "POST", "/v1/presence/query", None, r#"[42, "7"]"#).await;
    assert_eq!(status, 200);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        entries.iter().map(|e| (e["user"].as_str().unwrap(), e["status"].as_str().unwrap())).collect::<Vec<_>>(),
        [("42", "busy"), ("7", "offline")]
    );
    let too_many = serde_json::to_string(&(0..1_001).collect::<Vec<u64>>()).unwrap();
    assert_eq!(request(admin, "POST", "/v1/presence/query", None, &too_many).await.0, 422, "LIMIT_EXCEEDED");
    assert_eq!(request(admin, "POST", "/v1/presence/query", None, "{\"users\":1}").await.0, 400);
    assert_eq!(request(admin, "POST", "/v1/presence/query", None, "[\"-1\"]").await.0, 400);
    assert_eq!(get(admin, "/v1/presence/nobody", None).await.0, 400);
    let (status, body) = get(admin, "/v1/stats", None).await;
    assert_eq!(status, 200);
    // The STATS totals are still there, beside what the dashboard reads (tests/dashboard.rs).
    let stats: Stats = serde_json::from_str(&body).unwrap();
    assert_eq!(stats, Stats { online_users: 1, sessions: 1, watches: 1, connections: 2 });
    let missing = http(admin, "GET", "/nothing", None, "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    let missing: serde_json::Value = serde_json::from_str(&missing.body).unwrap();
    assert_eq!(missing["code"], "NOT_FOUND", "like the API's other errors: {missing}");

    // HEAD probes: the status of GET, no body.
    for (path, status) in [("/healthz", 200), ("/readyz", 200)] {
        let head = http(admin, "HEAD", path, None, "").await;
        assert_eq!((head.status, head.body.as_str()), (status, ""), "{path}");
    }
    // A 405 says what the route takes.
    for (method, path, allow) in [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("POST", "/metrics", "GET"),
        ("POST", "/v1/stats", "GET"),
        ("GET", "/v1/presence/query", "POST"),
        ("POST", "/v1/graph/42", "GET"),
        ("POST", "/", "GET, HEAD"),
    ] {
        let refused = http(admin, method, path, None, "").await;
        assert_eq!(refused.status, 405, "{method} {path}");
        assert_eq!(refused.header("allow"), Some(allow), "{method} {path}");
    }

    // While draining (the watcher ignores GOAWAY, so the drain lasts its timeout) /readyz says 503.
    daemon.running.shutdown_token().cancel();
    assert_eq!(get(admin, "/readyz", None).await, (503, "draining\n".into()));
    let head = http(admin, "HEAD", "/readyz", None, "").await;
    assert_eq!((head.status, head.body.as_str()), (503, ""));
    assert_eq!(get(admin, "/healthz", None).await.0, 200);
}

/// The value of a series without labels, fractional or not; `None` if absent.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    let line = metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?;
    Some(line.parse().unwrap_or_else(|_| panic!("{name} is {line:?}")))
}

#[tokio::test]
async fn process_series_and_the_info_summary() {
    let daemon = Daemon::start().await;
    let admin = daemon.running.admin;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let metrics = daemon.metrics().await;
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(metrics.contains(&format!("\n# HELP {name} ")), "no HELP for {name}:\n{metrics}");
        assert!(metrics.contains(&format!("\n# TYPE {name} {kind}\n{name} ")), "no TYPE {kind} for {name}");
    }
    let value = |name| gauge(&metrics, name).unwrap();
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let rss = value("process_resident_memory_bytes");
    assert!(rss > 0.0 && value("process_virtual_memory_bytes") >= rss);
    assert!((3.0..=value("process_max_fds")).contains(&value("process_open_fds")));
    // The daemon runs in the test's process, which started a moment ago.
    let started = value("process_start_time_seconds");
    assert!((now.as_secs_f64() - 600.0..=now.as_secs_f64() + 1.0).contains(&started), "started at {started}");

    let _user = daemon.user(8).await;
    let (status, body) = get(admin, "/v1/info", None).await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["pid"], std::process::id());
    for (count, expected) in [("online_users", 1), ("sessions", 1), ("watches", 0), ("connections", 1), ("posts", 0)] {
        assert_eq!(info[count], expected, "{count} in {info}");
    }
    assert_eq!(info["store_up"], true);
    assert!(info["rss_bytes"].as_u64().unwrap() > 0, "{info}");
    let started_at_ms = info["started_at_ms"].as_u64().unwrap();
    assert!(started_at_ms.abs_diff((started * 1e3) as u64) <= 10, "{started_at_ms} vs {started}");
    let uptime_s = info["uptime_s"].as_u64().unwrap();
    assert_eq!(uptime_s, (info["now_ms"].as_u64().unwrap() - started_at_ms) / 1_000);
    let refused = http(admin, "POST", "/v1/info", None, "").await;
    assert_eq!((refused.status, refused.header("allow")), (405, Some("GET")));
}

#[tokio::test]
async fn a_configured_admin_token_guards_everything_but_the_probes() {
    let daemon = Daemon::start_with(|c| c.admin.token = Some("s3cret".into())).await;
    let admin = daemon.running.admin;
    assert_eq!(get(admin, "/healthz", None).await.0, 200);
    assert_eq!(get(admin, "/readyz", None).await.0, 200);
    assert_eq!(get(admin, "/metrics", None).await.0, 401);
    assert_eq!(get(admin, "/v1/stats", Some("wrong")).await.0, 401);
    assert_eq!(get(admin, "/metrics", Some("s3cret")).await.0, 200);
    assert_eq!(get(admin, "/v1/stats", Some("s3cret")).await.0, 200);
    assert_eq!(get(admin, "/v1/info", None).await.0, 401);
    assert_eq!(get(admin, "/v1/info", Some("s3cret")).await.0, 200);
}

fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heartline.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn an_admin_listener_beyond_loopback_needs_a_token() {
    let (_dir, open) = write_config("[admin]\nlisten = \"0.0.0.0:7401\"\n");
    assert!(matches!(Config::load(Some(&open), &Overrides::default()), Err(ConfigError::Invalid(_))));
    let (_dir, guarded) = write_config("[admin]\nlisten = \"0.0.0.0:7401\"\ntoken = \"t\"\n");
    assert!(Config::load(Some(&guarded), &Overrides::default()).is_ok());
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/heartline.toml")
}

/// Dotted paths of every setting in a TOML document.
fn keys(text: &str) -> Vec<String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                toml::Value::Table(inner) => walk(&path, inner, out),
                _ => out.push(path),
            }
        }
    }
    let mut out = Vec::new();
    walk("", &text.parse().unwrap(), &mut out);
    out.sort();
    out
}

#[test]
fn the_example_config_names_every_setting_at_its_default() {
    let loaded = Config::load(Some(&example()), &Overrides::default()).unwrap();
    let expected = Config { data_dir: "/var/lib/heartline".into(), ..Config::default() };
    assert_eq!(loaded, expected, "the example must hold the defaults (data_dir aside)");
    let text = std::fs::read_to_string(example()).unwrap();
    assert_eq!(keys(&text), keys(&Config::default().to_toml()), "the example must name every setting");
    // The optional token is documented, commented out.
    assert!(text.contains("\n# token = "));
}

/// What packaging/build-deb puts in the package: a man page per visible
/// command, nested ones too, and bash, zsh and fish completions, none of them
/// offering the hidden generate-assets itself.
#[test]
fn generate_assets_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["generate-assets".as_ref(), "--out".as_ref(), dir.path().as_os_str()], &[]);
    assert!(out.status.success(), "{out:?}");
    let read = |path: &str| std::fs::read_to_string(dir.path().join(path)).unwrap();
    for command in ["heartline", "heartline-serve", "heartline-token", "heartline-check-config", "heartline-ctl"] {
        let page = read(&format!("man/{command}.1"));
        assert!(page.contains(&format!(".TH {command} 1")), "{command}.1:\n{page}");
        assert!(!page.contains("generate"), "{command}.1 offers generate-assets");
    }
    assert!(read("man/heartline-serve.1").contains("data\\-dir"), "serve's flags are on its page");
    assert!(read("man/heartline-ctl-presence-set.1").contains("hold"), "nested subcommands have pages");
    for completion in ["completions/heartline.bash", "completions/_heartline", "completions/heartline.fish"] {
        let text = read(completion);
        assert!(text.contains("check-config") && text.contains("data-dir"), "{completion}");
        assert!(!text.contains("generate-assets"), "{completion} offers generate-assets");
    }
    let help = run(&["--help".as_ref()], &[]);
    assert!(!String::from_utf8(help.stdout).unwrap().contains("generate"), "hidden from --help");
}

#[test]
fn check_config_prints_the_effective_settings_and_refuses_bad_files() {
    let bin = env!("CARGO_BIN_EXE_heartline");
    let ok = std::process::Command::new(bin).arg("check-config").arg(example()).output().unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let printed = String::from_utf8(ok.stdout).unwrap();
    assert!(printed.contains("data_dir = \"/var/lib/heartline\""), "{printed}");
    let (_dir, secret) = write_config("[admin]\ntoken = \"hush\"\n");
    let redacted = std::process::Command::new(bin).arg("check-config").arg(&secret).output().unwrap();
    assert!(!String::from_utf8(redacted.stdout).unwrap().contains("hush"), "the token is never printed");
    let (_dir, bad) = write_config("[limits]\nmax_wach = 3\n");
    let refused = std::process::Command::new(bin).arg("check-config").arg(&bad).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8(refused.stderr).unwrap().contains("max_wach"));
}
