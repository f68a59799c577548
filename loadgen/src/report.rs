//! The run's report: per-operation counts and latency percentiles
//! (hdrhistogram, µs), server figures, a human table and the stable JSON
//! shape of issue 5, stamped with what was run, when and against which
//! daemon ([`Run`]); and the [`Timeline`] of the same operations second by
//! second (JSON `timeline`, `--plot`). It reads no socket and draws nothing.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::procstat::Sample;

/// The JSON report's `schema_version`: raised when a key changes meaning or
/// goes away, not when one is added.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Options whose value is a secret: `arguments` shows them as `<redacted>`.
const SECRET_OPTIONS: [&str; 1] = ["--admin-token"];

/// What the JSON report says about the run itself, beside its figures.
pub(crate) struct Run {
    /// When it started.
    started: SystemTime,
    /// The command line after the program's name, secrets redacted.
    arguments: Vec<String>,
    /// The daemon's version (its `heartline_build_info`), when it was read.
    pub daemon_version: Option<String>,
}

impl Run {
    /// A run starting now with `arguments` (the program's name left out).
    pub(crate) fn new(arguments: impl IntoIterator<Item = String>) -> Self {
        Self { started: SystemTime::now(), arguments: redact(arguments), daemon_version: None }
    }

    /// Adds `schema_version`, `timestamp` (RFC 3339, UTC, the start),
    /// `arguments` and `daemon_version` (`null` when unknown) to a report.
    pub(crate) fn stamp(&self, report: &mut Value) {
        report["schema_version"] = json!(SCHEMA_VERSION);
        report["timestamp"] = json!(humantime::format_rfc3339_seconds(self.started).to_string());
        report["arguments"] = json!(self.arguments);
        report["daemon_version"] = json!(self.daemon_version);
    }
}

/// `arguments` with the value of every [`SECRET_OPTIONS`] option replaced,
/// given as `--option VALUE` or `--option=VALUE`.
fn redact(arguments: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for argument in arguments {
        let secret_next = out.last().is_some_and(|previous| SECRET_OPTIONS.contains(&previous.as_str()));
        let inline = SECRET_OPTIONS.iter().find(|option| argument.starts_with(&format!("{option}=")));
        out.push(match inline {
            Some(option) => format!("{option}=<redacted>"),
            None if secret_next => "<redacted>".to_owned(),
            None => argument,
        });
    }
    out
}

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One operation: how many, and (when timed) how long each took.
#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub count: u64,
    /// Latencies in µs; empty when the operation has no reply to time.
    pub latency: Histogram<u64>,
}

impl Op {
    pub(crate) fn counted(count: u64) -> Self {
        Self { count, latency: histogram() }
    }

    pub(crate) fn timed(latency: Histogram<u64>) -> Self {
        Self { count: latency.len(), latency }
    }
}

/// Server figures from `--server-pid`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Server {
    pub cpu_s: f64,
    pub rss_bytes: u64,
    pub cpu_us_per_op: f64,
    pub rss_bytes_per_session: f64,
}

impl Server {
    /// The server's figures from /proc samples taken before the ramp, after
    /// it and at the end: CPU over the measured run per operation, memory
    /// growth over the ramp per session. The ramp's own CPU goes to `extra`.
    pub(crate) fn from_samples(
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
pub(crate) struct Report {
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
    pub(crate) fn per_s(&self, op: &Op) -> f64 {
        if self.duration_s > 0.0 {
            op.count as f64 / self.duration_s
        } else {
            0.0
        }
    }

    pub(crate) fn to_json(&self) -> Value {
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
    pub(crate) fn table(&self) -> String {
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

/// One second of one operation in the timeline. Its latency histogram is
/// made only when something is timed, at 2 significant digits: a run keeps
/// one per second per timed operation, and a plot needs no more precision.
#[derive(Debug, Default)]
struct Slot {
    count: u64,
    latency: Option<Histogram<u64>>,
}

/// One second of the timeline, as reported.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Stat {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Per-second counts and latency percentiles of each operation, from
/// `origin` (the start of the ramp-up) on: second `t` covers `[t, t + 1)`.
/// Tasks record into it as they go; a mutex is enough at the rates recorded
/// (each gateway batch or datagram burst is one record, not one per client).
/// The whole run is also kept per operation at full precision, for the
/// report's `ops` ([`Timeline::op`]).
#[derive(Debug)]
pub(crate) struct Timeline {
    origin: Instant,
    /// When the measured run ends ([`Timeline::ends_at`]).
    end: OnceLock<Instant>,
    inner: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    seconds: Vec<BTreeMap<&'static str, Slot>>,
    totals: BTreeMap<&'static str, Op>,
}

impl Timeline {
    pub(crate) fn new(origin: Instant) -> Self {
        Self { origin, end: OnceLock::new(), inner: Mutex::default() }
    }

    /// Says when the measured run ends (replies may still be recorded after).
    pub(crate) fn ends_at(&self, end: Instant) {
        let _ = self.end.set(end);
    }

    /// The seconds from the origin that the run fills whole: those before
    /// the one it ends in. Without [`Timeline::ends_at`], all but the last
    /// second recorded.
    pub(crate) fn whole_seconds(&self) -> usize {
        match self.end.get() {
            Some(end) => end.saturating_duration_since(self.origin).as_secs() as usize,
            None => self.inner.lock().expect("timeline lock").seconds.len().saturating_sub(1),
        }
    }

    fn record(&self, op: &'static str, n: u64, us: Option<u64>) {
        let second = self.origin.elapsed().as_secs() as usize;
        let mut inner = self.inner.lock().expect("timeline lock");
        if inner.seconds.len() <= second {
            inner.seconds.resize_with(second + 1, BTreeMap::new);
        }
        let slot = inner.seconds[second].entry(op).or_default();
        slot.count += n;
        if let Some(us) = us {
            slot.latency
                .get_or_insert_with(|| Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"))
                .saturating_record(us);
        }
        let total = inner.totals.entry(op).or_insert_with(|| Op::counted(0));
        total.count += n;
        if let Some(us) = us {
            total.latency.saturating_record(us);
        }
    }

    /// Counts `n` operations that have no reply to time, now.
    pub(crate) fn count(&self, op: &'static str, n: u64) {
        self.record(op, n, None);
    }

    /// Counts one timed operation that has just completed.
    pub(crate) fn latency(&self, op: &'static str, us: u64) {
        self.record(op, 1, Some(us));
    }

    /// Counts `n` operations that one request carried, timed once (the
    /// request's latency).
    pub(crate) fn latency_of(&self, op: &'static str, n: u64, us: u64) {
        self.record(op, n, Some(us));
    }

    /// The whole run of one operation (zero if it never happened).
    pub(crate) fn op(&self, op: &'static str) -> Op {
        let inner = self.inner.lock().expect("timeline lock");
        inner.totals.get(op).cloned().unwrap_or_else(|| Op::counted(0))
    }

    /// Every second from the origin to the last one recorded.
    pub(crate) fn rows(&self) -> Vec<BTreeMap<&'static str, Stat>> {
        let inner = self.inner.lock().expect("timeline lock");
        inner
            .seconds
            .iter()
            .map(|ops| {
                ops.iter()
                    .map(|(&name, slot)| {
                        let h = slot.latency.as_ref();
                        let stat = Stat {
                            count: slot.count,
                            p50_us: h.map_or(0, |h| pct(h, 0.5)),
                            p99_us: h.map_or(0, |h| pct(h, 0.99)),
                            max_us: h.map_or(0, Histogram::max),
                        };
                        (name, stat)
                    })
                    .collect()
            })
            .collect()
    }

    /// `[{t_s, ops: {name: {count, p50_us, p99_us, max_us}}}]`.
    pub(crate) fn to_json(&self) -> Value {
        let rows = self.rows().into_iter().enumerate().map(|(t, ops)| {
            let ops: Map<String, Value> = ops
                .into_iter()
                .map(|(name, s)| {
                    let v = json!({"count": s.count, "p50_us": s.p50_us, "p99_us": s.p99_us, "max_us": s.max_us});
                    (name.to_owned(), v)
                })
                .collect();
            json!({"t_s": t, "ops": ops})
        });
        Value::Array(rows.collect())
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

    #[test]
    fn json_says_what_was_run_when_and_against_which_daemon() {
        let arguments =
            ["presence", "--admin-token", "s3cret", "--clients", "10", "--admin-token=hush", "--json", "r.json"];
        let run = Run { daemon_version: Some("0.1.0".into()), ..Run::new(arguments.map(str::to_owned)) };
        let mut v = json!({"scenario": "presence"});
        run.stamp(&mut v);
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["daemon_version"], "0.1.0");
        assert_eq!(
            v["arguments"],
            json!([
                "presence",
                "--admin-token",
                "<redacted>",
                "--clients",
                "10",
                "--admin-token=<redacted>",
                "--json",
                "r.json"
            ])
        );
        let timestamp = v["timestamp"].as_str().unwrap();
        assert!(timestamp.ends_with('Z') && timestamp.len() == "2026-01-02T03:04:05Z".len(), "{timestamp}");
        let parsed = humantime::parse_rfc3339(timestamp).unwrap();
        assert!(SystemTime::now().duration_since(parsed).unwrap() < std::time::Duration::from_secs(60));

        let mut redis = json!({});
        Run::new(Vec::new()).stamp(&mut redis);
        assert!(redis["daemon_version"].is_null() && redis["arguments"] == json!([]), "{redis}");
    }

    #[test]
    fn timeline_keeps_counts_and_latencies_by_second() {
        let timeline = Timeline::new(Instant::now() - std::time::Duration::from_millis(1_500));
        timeline.count("heartbeat", 40);
        timeline.count("heartbeat", 2);
        for us in 1..=100 {
            timeline.latency("notify", us * 10);
        }
        let rows = timeline.rows();
        assert_eq!(rows.len(), 2, "second 0 is empty, second 1 has the records");
        assert!(rows[0].is_empty());
        assert_eq!(rows[1]["heartbeat"], Stat { count: 42, ..Stat::default() });
        let notify = rows[1]["notify"];
        assert_eq!(notify.count, 100);
        assert!((490..=510).contains(&notify.p50_us), "{notify:?}");
        assert!(notify.p99_us <= notify.max_us && notify.max_us >= 995, "{notify:?}");
        let v = timeline.to_json();
        assert_eq!(v[1]["t_s"], 1);
        assert_eq!(v[1]["ops"]["heartbeat"]["count"], 42);
        assert_eq!(v[1]["ops"]["notify"]["count"], 100);
        assert_eq!(timeline.op("heartbeat").count, 42);
        assert_eq!(timeline.op("notify").latency.max(), 1_000);
        assert_eq!(timeline.op("never").count, 0);
        timeline.latency_of("churn_open", 5, 300);
        let churn = timeline.op("churn_open");
        assert_eq!((churn.count, churn.latency.len()), (5, 1), "five sessions in one timed request");

        assert_eq!(timeline.whole_seconds(), 1, "without an end: the last second recorded is not whole");
        timeline.ends_at(timeline.origin + std::time::Duration::from_millis(3_700));
        assert_eq!(timeline.whole_seconds(), 3, "the run ends 0.7 s into second 3");
    }
}
