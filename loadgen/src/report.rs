//! The run's report: per-operation counts and latency percentiles
//! (hdrhistogram, µs), server figures, a human table and the stable JSON
//! shape of issue 5.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::procstat::Sample;

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One operation: how many, and (when timed) how long each took.
#[derive(Clone, Debug)]
pub struct Op {
    pub count: u64,
    /// Latencies in µs; empty when the operation has no reply to time.
    pub latency: Histogram<u64>,
}

impl Op {
    pub fn counted(count: u64) -> Self {
        Self { count, latency: histogram() }
    }

    pub fn timed(latency: Histogram<u64>) -> Self {
        Self { count: latency.len(), latency }
    }
}

/// Server figures from `--server-pid`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Server {
    pub cpu_s: f64,
    pub rss_bytes: u64,
    pub cpu_us_per_op: f64,
    pub rss_bytes_per_session: f64,
}

impl Server {
    /// The server's figures from /proc samples taken before the ramp, after
    /// it and at the end: CPU over the measured run per operation, memory
    /// growth over the ramp per session. The ramp's own CPU goes to `extra`.
    pub fn from_samples(
        before: Option<Sample>,
        after_ramp: Option<Sample>,
        end: Option<Sample>,
        ops: u64,
        sessions: u64,
        extra: &mut BTreeMap<&'static str, f64>,
    ) -> Option<Self> {
        let (b, r, e) = (before?, after_ramp?, end?);
        extra.insert("ramp_server_cpu_s", r.cpu_s - b.cpu_s);
        let cpu_s = e.cpu_s - r.cpu_s;
        Some(Self {
            cpu_s,
            rss_bytes: e.rss_bytes,
            cpu_us_per_op: if ops > 0 { cpu_s * 1e6 / ops as f64 } else { 0.0 },
            rss_bytes_per_session: r.rss_bytes.saturating_sub(b.rss_bytes) as f64 / sessions.max(1) as f64,
        })
    }
}

#[derive(Debug)]
pub struct Report {
    pub scenario: &'static str,
    pub target: String,
    pub mode: String,
    pub clients: u64,
    pub duration_s: f64,
    pub ops: BTreeMap<&'static str, Op>,
    pub wire_bytes_per_heartbeat: f64,
    pub server: Option<Server>,
    pub errors: u64,
    /// Extra figures (ramp-up rate and the like), printed and kept in JSON under `extra`.
    pub extra: BTreeMap<&'static str, f64>,
}

fn pct(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

impl Report {
    pub fn per_s(&self, op: &Op) -> f64 {
        if self.duration_s > 0.0 {
            op.count as f64 / self.duration_s
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let mut ops = Map::new();
        for (name, op) in &self.ops {
            let h = &op.latency;
            ops.insert(
                (*name).to_owned(),
                json!({
                    "count": op.count,
                    "per_s": self.per_s(op),
                    "p50_us": pct(h, 0.5),
                    "p90_us": pct(h, 0.9),
                    "p99_us": pct(h, 0.99),
                    "p999_us": pct(h, 0.999),
                    "max_us": if h.is_empty() { 0 } else { h.max() },
                }),
            );
        }
        let server = self.server.map(|s| {
            json!({
                "cpu_s": s.cpu_s,
                "rss_bytes": s.rss_bytes,
                "cpu_us_per_op": s.cpu_us_per_op,
                "rss_bytes_per_session": s.rss_bytes_per_session,
            })
        });
        json!({
            "scenario": self.scenario,
            "target": self.target,
            "mode": self.mode,
            "clients": self.clients,
            "duration_s": self.duration_s,
            "ops": ops,
            "wire_bytes_per_heartbeat": self.wire_bytes_per_heartbeat,
            "server": server,
            "errors": self.errors,
            "extra": self.extra,
        })
    }

    /// The human table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} against {} ({}), {} clients, {:.1} s\n",
            self.scenario, self.target, self.mode, self.clients, self.duration_s
        );
        out += &format!(
            "{:<14} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "op", "count", "per_s", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"
        );
        for (name, op) in &self.ops {
            let h = &op.latency;
            out += &format!(
                "{:<14} {:>12} {:>12.0} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                name,
                op.count,
                self.per_s(op),
                pct(h, 0.5),
                pct(h, 0.9),
                pct(h, 0.99),
                pct(h, 0.999),
                if h.is_empty() { 0 } else { h.max() }
            );
        }
        if self.wire_bytes_per_heartbeat > 0.0 {
            out += &format!("wire bytes per heartbeat: {:.3}\n", self.wire_bytes_per_heartbeat);
        }
        for (k, v) in &self.extra {
            out += &format!("{k}: {v:.1}\n");
        }
        if let Some(s) = self.server {
            out += &format!(
                "server: cpu {:.2} s ({:.3} µs/op), rss {} MiB ({:.1} B/session)\n",
                s.cpu_s,
                s.cpu_us_per_op,
                s.rss_bytes >> 20,
                s.rss_bytes_per_session
            );
        }
        out += &format!("errors: {}\n", self.errors);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_stable_keys() {
        let mut h = histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let report = Report {
            scenario: "presence",
            target: "heartline".into(),
            mode: "gateway".into(),
            clients: 10,
            duration_s: 2.0,
            ops: BTreeMap::from([("heartbeat", Op::counted(40)), ("notify", Op::timed(h))]),
            wire_bytes_per_heartbeat: 2.2,
            server: Some(Server::default()),
            errors: 0,
            extra: BTreeMap::new(),
        };
        let v = report.to_json();
        assert_eq!(v["ops"]["heartbeat"]["per_s"], 20.0);
        assert_eq!(v["ops"]["notify"]["count"], 1000);
        let p99 = v["ops"]["notify"]["p99_us"].as_u64().unwrap();
        assert!((985..=995).contains(&p99), "{p99}");
        for key in ["scenario", "target", "clients", "duration_s", "wire_bytes_per_heartbeat", "errors"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        for key in ["cpu_s", "rss_bytes", "cpu_us_per_op", "rss_bytes_per_session"] {
            assert!(v["server"].get(key).is_some(), "{key}");
        }
        assert!(report.table().contains("heartbeat"));
    }
}
