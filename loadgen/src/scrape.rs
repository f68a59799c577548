//! What the daemon and the kernel say happened to the datagrams a run sent:
//! the daemon's `/metrics` (admin port, one HTTP/1.0 GET, with the admin
//! token as `Authorization: Bearer` when given) counts UDP heartbeats
//! applied and datagrams dropped by reason; /proc/net/snmp counts those the
//! kernel dropped before the daemon read them. Sampled before and after the
//! run; the differences go into the report's `extra`. It only reads: a
//! daemon whose admin port does not answer just leaves them out.
//! [`Admin::metrics`] is also how the feed scenario reads the daemon's
//! fanout lag, and [`Admin::version`] how the report learns the daemon's
//! version (`heartline_build_info`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procstat::{self, UdpCounters};

/// The daemon's drop reasons (SPEC.md §8.6, as its /metrics names them),
/// and the report's key for each.
const REASONS: [(&str, &str); 6] = [
    ("bad_length", "udp_dropped_bad_length"),
    ("unknown_type", "udp_dropped_unknown_type"),
    ("malformed", "udp_dropped_malformed"),
    ("unknown_id", "udp_dropped_unknown_id"),
    ("bad_tag", "udp_dropped_bad_tag"),
    ("replayed", "udp_dropped_replayed"),
];
/// A scrape larger than this is not the daemon's.
const MAX_RESPONSE: u64 = 4 << 20;
/// A daemon just past a ramp of 10M sessions took over 5 s to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's UDP counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Daemon {
    /// Heartbeats applied from datagrams (each entry of a batch counts).
    applied: u64,
    dropped: [u64; REASONS.len()],
}

/// Reads the UDP series out of a Prometheus text exposition.
fn parse(text: &str) -> Daemon {
    let mut d = Daemon::default();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<u64>() else { continue };
        if series == "heartline_heartbeats_total{path=\"udp\"}" {
            d.applied = value;
        } else if let Some(reason) =
            series.strip_prefix("heartline_udp_dropped_total{reason=\"").and_then(|r| r.strip_suffix("\"}"))
        {
            if let Some(i) = REASONS.iter().position(|(name, _)| *name == reason) {
                d.dropped[i] = value;
            }
        }
    }
    d
}

/// The daemon's admin listener (`--admin`) and the token it wants, if any
/// (`--admin-token`: the daemon's `admin.token`).
#[derive(Clone)]
pub(crate) struct Admin {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Admin {
    /// The body of the daemon's `/metrics`.
    pub(crate) async fn metrics(&self) -> Result<String> {
        let request = match &self.token {
            Some(token) => format!("GET /metrics HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"),
            None => "GET /metrics HTTP/1.0\r\n\r\n".to_owned(),
        };
        let get = async {
            let mut stream = TcpStream::connect(self.addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(TIMEOUT, get).await.context("timed out")??;
        let text = String::from_utf8_lossy(&response);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("no HTTP response") };
        let status = head.lines().next().unwrap_or_default();
        match status.split(' ').nth(1) {
            Some("200") => Ok(body.to_owned()),
            Some("401") if self.token.is_none() => {
                bail!("/metrics answered {status}: pass the daemon's admin.token with --admin-token or HEARTLINE_ADMIN_TOKEN")
            }
            Some("401") => bail!("/metrics answered {status}: the daemon refused --admin-token"),
            _ => bail!("/metrics answered {status}"),
        }
    }

    /// The daemon's version, from its `heartline_build_info` series.
    pub(crate) async fn version(&self) -> Result<String> {
        build_version(&self.metrics().await?).context("no heartline_build_info in /metrics")
    }

    async fn udp(&self) -> Result<Daemon> {
        Ok(parse(&self.metrics().await?))
    }
}

/// The `version` label of `heartline_build_info{version="…"} 1`.
fn build_version(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let labels = line.strip_prefix("heartline_build_info{")?.split_once('}')?.0;
        labels.split(',').find_map(|label| Some(label.strip_prefix("version=\"")?.strip_suffix('"')?.to_owned()))
    })
}

/// Counters taken before the run, to subtract at the end.
pub(crate) struct UdpWatch {
    admin: Admin,
    daemon: Option<Daemon>,
    kernel: Option<UdpCounters>,
}

impl UdpWatch {
    pub(crate) async fn start(admin: Admin) -> Self {
        let addr = admin.addr;
        let daemon =
            admin.udp().await.inspect_err(|e| eprintln!("warning: no UDP figures from {addr}/metrics: {e:#}")).ok();
        Self { admin, daemon, kernel: procstat::udp_counters().ok() }
    }

    /// Adds what changed since [`UdpWatch::start`] to `extra`:
    /// `udp_applied`, `udp_dropped` and `udp_dropped_<reason>` from the
    /// daemon, `udp_kernel_rcvbuf_errors` and `udp_kernel_in_errors`.
    pub(crate) async fn finish(self, extra: &mut BTreeMap<&'static str, f64>) {
        if let Some(before) = self.daemon {
            let addr = self.admin.addr;
            match self.admin.udp().await {
                Ok(after) => {
                    extra.insert("udp_applied", after.applied.saturating_sub(before.applied) as f64);
                    let mut total = 0;
                    for (i, (_, key)) in REASONS.iter().enumerate() {
                        let n = after.dropped[i].saturating_sub(before.dropped[i]);
                        total += n;
                        extra.insert(key, n as f64);
                    }
                    extra.insert("udp_dropped", total as f64);
                }
                Err(e) => eprintln!("warning: no UDP figures from {addr}/metrics: {e:#}"),
            }
        }
        if let (Some(before), Ok(after)) = (self.kernel, procstat::udp_counters()) {
            extra.insert("udp_kernel_rcvbuf_errors", after.rcvbuf_errors.saturating_sub(before.rcvbuf_errors) as f64);
            extra.insert("udp_kernel_in_errors", after.in_errors.saturating_sub(before.in_errors) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_udp_series() {
        let text = "# HELP heartline_heartbeats_total x\n\
                    heartline_heartbeats_total{path=\"tcp\"} 9\n\
                    heartline_heartbeats_total{path=\"udp\"} 1234\n\
                    heartline_udp_dropped_total{reason=\"bad_tag\"} 3\n\
                    heartline_udp_dropped_total{reason=\"replayed\"} 2\n\
                    heartline_udp_dropped_total{reason=\"from_the_future\"} 7\n\
                    heartline_sessions 5\n";
        let d = parse(text);
        assert_eq!(d.applied, 1234);
        assert_eq!(d.dropped, [0, 0, 0, 0, 3, 2]);
    }

    #[test]
    fn reads_the_build_version() {
        let text =
            "# TYPE heartline_build_info gauge\nheartline_build_info{version=\"0.1.0\"} 1\nheartline_sessions 5\n";
        assert_eq!(build_version(text).as_deref(), Some("0.1.0"));
        assert_eq!(build_version("heartline_sessions 5\n"), None);
    }

    /// An admin listener that answers one request with `status` and `body`,
    /// and hands over the request it read.
    async fn one_answer(status: &'static str, body: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0];
                stream.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let response = format!("HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n\r\n{body}");
            stream.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, served)
    }

    #[tokio::test]
    async fn sends_the_admin_token_as_a_bearer() {
        let (addr, served) = one_answer("200 OK", "heartline_build_info{version=\"9.8.7\"} 1\n").await;
        let admin = Admin { addr, token: Some("s3cret".into()) };
        assert_eq!(admin.version().await.unwrap(), "9.8.7");
        let request = served.await.unwrap();
        assert!(request.starts_with("GET /metrics HTTP/1.0\r\n"), "{request}");
        assert!(request.contains("\r\nAuthorization: Bearer s3cret\r\n"), "{request}");

        let (addr, served) = one_answer("200 OK", "").await;
        Admin { addr, token: None }.metrics().await.unwrap();
        assert!(!served.await.unwrap().contains("Authorization"), "no token, no header");
    }

    #[tokio::test]
    async fn a_refusal_says_what_to_pass() {
        let (addr, _served) = one_answer("401 Unauthorized", "{\"error\":\"unauthorized\"}").await;
        let error = format!("{:#}", Admin { addr, token: None }.metrics().await.unwrap_err());
        assert_eq!(
            error,
            "/metrics answered HTTP/1.1 401 Unauthorized: pass the daemon's admin.token with --admin-token or \
             HEARTLINE_ADMIN_TOKEN"
        );
    }
}
