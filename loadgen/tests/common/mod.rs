//! What the loadgen's integration tests share: a daemon started in the test's
//! process, reading its admin API, running the loadgen binary and reading
//! its JSON report.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use heartline::config::Config;
use heartline::server::Running;

/// A daemon's config with every listener on a free loopback port and its
/// data under `dir`.
pub(crate) fn config(dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        ..Config::default()
    };
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.websocket.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// Starts a daemon with `config` in this process; returns it with the
/// loadgen's `--addr` and `--data-dir` for it.
pub(crate) async fn daemon(config: Config) -> (Running, String, String) {
    let data_dir = config.data_dir.to_str().unwrap().to_owned();
    let running = heartline::server::start(config).await.unwrap();
    let addr = running.tcp.to_string();
    (running, addr, data_dir)
}

/// `GET path` from the daemon's admin listener (HTTP/1.1, one request on a
/// plain connection): the status code and the body.
#[allow(dead_code)] // not every test binary reads the admin API
pub(crate) async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), get).await.expect("no answer from the admin listener");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line: {head}"));
    (status, body.to_owned())
}

/// Runs the loadgen with `args` plus `--json`, fails the test if it fails,
/// and returns the report.
pub(crate) fn loadgen(args: &[impl AsRef<OsStr>], json: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_heartline-loadgen"))
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .expect("runs the loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "loadgen failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("{stderr}\n{stdout}");
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// [`loadgen`] off the async runtime, so a daemon in this process keeps serving.
pub(crate) async fn loadgen_async(args: Vec<String>, json: PathBuf) -> serde_json::Value {
    tokio::task::spawn_blocking(move || loadgen(&args, &json)).await.unwrap()
}

/// A Redis on a free loopback port, stopped when dropped.
pub(crate) struct Redis(pub std::process::Child, pub u16);

impl Redis {
    pub(crate) fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install -y redis-server)");
        // Dropped (killed and reaped) if it never listens.
        let redis = Self(child, port);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {port}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
