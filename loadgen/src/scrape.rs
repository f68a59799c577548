//! What the daemon and the kernel say happened to the datagrams a run sent:
//! the daemon's `/metrics` (admin port, one HTTP/1.0 GET) counts UDP
//! heartbeats applied and datagrams dropped by reason; /proc/net/snmp counts
//! those the kernel dropped before the daemon read them. Sampled before and
//! after the run; the differences go into the report's `extra`. It only
//! reads: a daemon whose admin port does not answer just leaves them out.
//! [`metrics`] is also how the feed scenario reads the daemon's fanout lag.

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

/// The body of the daemon's `/metrics` from its admin listener at `admin`.
pub(crate) async fn metrics(admin: SocketAddr) -> Result<String> {
    let get = async {
        let mut stream = TcpStream::connect(admin).await?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, get).await.context("timed out")??;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("no HTTP response") };
    if !head.lines().next().is_some_and(|status| status.contains(" 200 ")) {
        bail!("/metrics answered {:?}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

async fn fetch(admin: SocketAddr) -> Result<Daemon> {
    Ok(parse(&metrics(admin).await?))
}

/// Counters taken before the run, to subtract at the end.
pub(crate) struct UdpWatch {
    admin: SocketAddr,
    daemon: Option<Daemon>,
    kernel: Option<UdpCounters>,
}

impl UdpWatch {
    pub(crate) async fn start(admin: SocketAddr) -> Self {
        let daemon =
            fetch(admin).await.inspect_err(|e| eprintln!("warning: no UDP figures from {admin}/metrics: {e:#}")).ok();
        Self { admin, daemon, kernel: procstat::udp_counters().ok() }
    }

    /// Adds what changed since [`UdpWatch::start`] to `extra`:
    /// `udp_applied`, `udp_dropped` and `udp_dropped_<reason>` from the
    /// daemon, `udp_kernel_rcvbuf_errors` and `udp_kernel_in_errors`.
    pub(crate) async fn finish(self, extra: &mut BTreeMap<&'static str, f64>) {
        if let Some(before) = self.daemon {
            let addr = self.admin;
            match fetch(addr).await {
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
}
