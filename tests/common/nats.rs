//! Three `nats-server` processes with JetStream on loopback, routed to each
//! other, for the cluster tests; any one of them killed (SIGKILL) and
//! started again on its own store. Every child is killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long JetStream may take to elect a meta leader.
pub(crate) const NATS_READY: Duration = Duration::from_secs(30);

/// A port free right now on loopback.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Child processes killed (SIGKILL) and reaped when dropped, panics included.
pub(crate) struct Killed(pub Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three routed `nats-server`s with JetStream, each with its store in `dir`.
pub(crate) struct Nats {
    dir: PathBuf,
    client: Vec<u16>,
    cluster: Vec<u16>,
    servers: Vec<Option<Child>>,
    /// The client URLs, `nats://127.0.0.1:port`.
    pub urls: Vec<String>,
    /// The stores' temporary dir, when [`Nats::ready`] made it: removed after the servers stop.
    temp: Option<tempfile::TempDir>,
}

impl Nats {
    /// Three servers with their stores in a temporary dir of their own,
    /// JetStream ready; `None` when `nats-server` is missing (a failure under CI).
    pub(crate) async fn ready() -> Option<Self> {
        if !super::available("nats-server", &["--version"]) {
            return None;
        }
        let temp = tempfile::tempdir().unwrap();
        let mut nats = Self::start(temp.path());
        nats.temp = Some(temp);
        nats.wait_for_jetstream().await;
        Some(nats)
    }

    pub(crate) fn start(dir: &Path) -> Self {
        let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let urls = client.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let mut nats = Nats { dir: dir.to_owned(), client, cluster, servers: Vec::new(), urls, temp: None };
        for i in 0..3 {
            let child = nats.spawn(i);
            nats.servers.push(Some(child));
        }
        nats
    }

    /// The JetStream server name of server `i`.
    pub(crate) fn name(i: usize) -> String {
        format!("n{i}")
    }

    fn spawn(&self, i: usize) -> Child {
        let routes: Vec<String> =
            (0..3).filter(|&j| j != i).map(|j| format!("nats://127.0.0.1:{}", self.cluster[j])).collect();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("nats{i}.log"))).unwrap();
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.client[i].to_string(), "-n", &Self::name(i), "-js"])
            .args(["--store_dir", &self.dir.join(format!("js{i}")).to_string_lossy()])
            .args(["--cluster_name", "heartline-test", "--cluster", &format!("nats://127.0.0.1:{}", self.cluster[i])])
            .args(["--routes", &routes.join(",")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts")
    }

    /// SIGKILL to server `i`: no goodbye to its routes or clients.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts server `i` again on the same ports and store.
    pub(crate) fn restart(&mut self, i: usize) {
        self.kill(i);
        self.servers[i] = Some(self.spawn(i));
    }

    /// Waits until JetStream answers on every running server (a meta leader is elected).
    pub(crate) async fn wait_for_jetstream(&self) {
        let until = Instant::now() + NATS_READY;
        for (url, _) in self.urls.iter().zip(&self.servers).filter(|(_, s)| s.is_some()) {
            loop {
                // The raw API: the client's typed account info wants fields 2.9 does not send.
                let ready = async {
                    let client = async_nats::connect(url.as_str()).await.map_err(|e| e.to_string())?;
                    let reply = client.request("$JS.API.INFO", "".into()).await.map_err(|e| e.to_string())?;
                    let reply = String::from_utf8_lossy(&reply.payload).into_owned();
                    if reply.contains("\"error\"") {
                        Err(reply)
                    } else {
                        Ok(())
                    }
                };
                let error = match tokio::time::timeout(Duration::from_secs(2), ready).await {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => e,
                    Err(_) => "timed out".into(),
                };
                assert!(Instant::now() < until, "JetStream not ready within {NATS_READY:?}: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            if let Some(mut child) = self.servers[i].take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
