//! What the loadgen's integration tests share: a daemon started in the test's
//! process, running the loadgen binary and reading its JSON report.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

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
