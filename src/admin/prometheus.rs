//! The Prometheus text exposition format (version 0.0.4) of the server's
//! metrics: the counters and histograms of `crate::metrics`, the gauges a
//! [`Backend`] reads from the live state at scrape time, and the process's
//! own figures under the standard `process_*` names ([`super::process`]).
//!
//! Owns series names, labels and help texts. It must not keep state: every
//! scrape renders afresh. Reading the queue gauges locks each connection's
//! outbox once, briefly (and once more for the closing gauge); at a million
//! connections a scrape costs tens of milliseconds of one thread, so scrape
//! every 10 s or slower.

use std::fmt::{Display, Write};

use super::{process, Backend};
use crate::metrics::{CloseReason, Counter, Histogram, Refused, Transport, BUCKETS_US};
use heartline_proto::udp::DropReason;
use heartline_proto::ErrorCode;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const DROP_REASONS: [(DropReason, &str); 6] = [
    (DropReason::BadLength, "bad_length"),
    (DropReason::UnknownType, "unknown_type"),
    (DropReason::Malformed, "malformed"),
    (DropReason::UnknownId, "unknown_id"),
    (DropReason::BadTag, "bad_tag"),
    (DropReason::Replayed, "replayed"),
];

/// Every error code this protocol version defines.
fn error_codes() -> impl Iterator<Item = ErrorCode> {
    (0..=u16::from(u8::MAX)).filter_map(ErrorCode::from_u16)
}

struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        let _ = match labels {
            "" => writeln!(self.0, "{name} {value}"),
            labels => writeln!(self.0, "{name}{{{labels}}} {value}"),
        };
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, "", value);
    }

    fn counter(&mut self, name: &str, help: &str, counter: &Counter) {
        self.family(name, "counter", help);
        self.sample(name, "", counter.get());
    }

    /// A counter family with one label.
    fn labelled<'a>(&mut self, name: &str, help: &str, label: &str, series: impl IntoIterator<Item = (&'a str, u64)>) {
        self.family(name, "counter", help);
        for (value, count) in series {
            self.sample(name, &format!("{label}=\"{value}\""), count);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, "histogram", help);
        let (buckets, sum_us) = histogram.snapshot();
        let mut cumulative = 0;
        for (bound, count) in BUCKETS_US.iter().zip(&buckets) {
            cumulative += count;
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        cumulative += buckets[BUCKETS_US.len()];
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(self.0, "{name}_sum {}", sum_us as f64 / 1e6);
        let _ = writeln!(self.0, "{name}_count {cumulative}");
    }
}

/// Every series, as one scrape's body.
pub fn render(backend: &dyn Backend) -> String {
    let m = backend.metrics();
    let gauges = backend.gauges();
    let mut out = Exposition(String::with_capacity(16 * 1024));
    out.family("heartline_build_info", "gauge", "The running version.");
    out.sample("heartline_build_info", concat!("version=\"", env!("CARGO_PKG_VERSION"), "\""), 1);

    let heartbeats =
        [("tcp", m.heartbeats_stream()), ("udp", m.heartbeats_udp.get()), ("batch", m.heartbeats_batch.get())];
    out.labelled(
        "heartline_heartbeats_total",
        "Heartbeats applied, by path: tcp (HEARTBEAT, over TCP, TLS or WebSocket), udp (datagrams, gateway batches over UDP included), batch (gateway batches over TCP).",
        "path",
        heartbeats,
    );

    let totals = gauges.stats;
    out.gauge("heartline_sessions", "Live sessions, grace windows included.", totals.sessions);
    out.gauge("heartline_users_online", "Users with at least one visible session.", totals.online_users);
    out.gauge("heartline_watches", "Watch subscriptions (watcher, user pairs).", totals.watches);
    out.gauge("heartline_connections", "Connections past HELLO.", totals.connections);
    out.gauge(
        "heartline_store_up",
        "1 while the durable store takes writes, 0 while it is down (full or failing disk; writes get UNAVAILABLE).",
        u64::from(gauges.store_up),
    );
    out.counter(
        "heartline_connections_accepted_total",
        "Stream connections accepted (TCP, TLS, WebSocket).",
        &m.connections_accepted,
    );
    out.labelled(
        "heartline_connections_accepted_by_transport_total",
        "Stream connections accepted, by transport: tcp, tls, ws or wss.",
        "transport",
        Transport::ALL.map(|t| (t.name(), m.accepted_by(t).get())),
    );
    out.gauge(
        "heartline_connections_open",
        "Stream connections open (every transport), HELLO done or not.",
        gauges.connections_open,
    );
    out.labelled(
        "heartline_connections_refused_total",
        "Connections closed at accept with TOO_MANY_CONNECTIONS, by cap: total (limits.max_connections) or per_ip.",
        "cap",
        [("total", Refused::Total), ("per_ip", Refused::PerIp)].map(|(cap, r)| (cap, m.connections_refused(r).get())),
    );

    let mut closes = vec![
        ("peer".to_owned(), m.closed(CloseReason::Peer).get()),
        ("goaway".to_owned(), m.closed(CloseReason::Goaway).get()),
        ("write_failed".to_owned(), m.closed(CloseReason::WriteFailed).get()),
    ];
    closes.extend(
        error_codes()
            .filter(|code| code.closes())
            .map(|code| (code.name().to_ascii_lowercase(), m.closed(CloseReason::Error(code)).get())),
    );
    out.labelled(
        "heartline_connections_closed_total",
        "Stream connections ended, by reason: peer (BYE or the client left), goaway, write_failed, or the closing error code.",
        "reason",
        closes.iter().map(|(reason, count)| (reason.as_str(), *count)),
    );

    let errors: Vec<(String, u64)> = error_codes()
        .map(|code| (code.name().to_ascii_lowercase(), m.errors_sent(code as u16).map_or(0, Counter::get)))
        .collect();
    out.labelled(
        "heartline_errors_sent_total",
        "ERROR frames sent, by code.",
        "code",
        errors.iter().map(|(code, count)| (code.as_str(), *count)),
    );

    out.counter("heartline_watch_events_total", "Presence entries queued to watchers.", &m.watch_events);
    out.counter(
        "heartline_watch_events_coalesced_total",
        "Queued presence entries replaced by a newer one for the same user before being written.",
        &m.watch_events_coalesced,
    );
    let queues = backend.queues();
    let (depth, deepest, closing) = (queues.outbound_depth, queues.outbound_depth_max, queues.connections_closing);
    out.gauge("heartline_outbound_queue_depth", "Frames and entries waiting to be written, all connections.", depth);
    out.gauge("heartline_outbound_queue_depth_max", "The deepest single connection's outbound queue.", deepest);
    out.gauge(
        "heartline_connections_closing",
        "Connections past HELLO whose outbound queue is closed and still being written: a slow consumer (SLOW_CONSUMER) stays here until it reads or the write timeout ends it.",
        closing,
    );

    out.labelled(
        "heartline_udp_dropped_total",
        "UDP datagrams dropped, by reason.",
        "reason",
        DROP_REASONS.map(|(reason, name)| (name, m.udp_dropped(reason).get())),
    );

    out.histogram("heartline_store_commit_seconds", "Time of one durable store write.", &m.store_commit);

    out.counter("heartline_posts_total", "Posts accepted.", &m.posts);
    out.counter("heartline_fanout_inserts_total", "Home-timeline entries inserted by fan-out.", &m.fanout_inserts);
    out.histogram(
        "heartline_fanout_lag_seconds",
        "Time from a post's commit to its last fan-out insert.",
        &m.fanout_lag,
    );
    out.gauge(
        "heartline_fanout_queue_depth",
        "Fan-out jobs admitted and not finished (reserved by a PUBLISH or DELETE being committed, queued, or running).",
        gauges.fanout_depth,
    );
    out.gauge(
        "heartline_fanout_queue_capacity",
        "Fan-out jobs outstanding at which PUBLISH and DELETE are refused with UNAVAILABLE.",
        gauges.fanout_capacity,
    );
    // Only in a cluster: a node alone renders what it always did.
    if let Some(cluster) = backend.cluster() {
        let map = &cluster.map;
        out.gauge("heartline_cluster_members", "Members in this node's cluster map.", map.members.len());
        out.gauge("heartline_cluster_map_version", "Version of this node's cluster map.", map.version);
        out.gauge(
            "heartline_cluster_partitions_owned",
            "Partitions this node owns in its cluster map.",
            map.owned_by(&cluster.node),
        );
        out.gauge(
            "heartline_cluster_joined",
            "1 when this node's key is in the members' bucket.",
            u8::from(cluster.joined),
        );
    }
    if let Some(stream) = backend.feed_stream() {
        out.gauge(
            "heartline_feed_stream_applied",
            "Last feed stream sequence this node applied (a cluster's feed).",
            stream.applied,
        );
        out.gauge(
            "heartline_feed_stream_acked",
            "Highest feed stream sequence acknowledged for a write taken by this node.",
            stream.acked,
        );
    }
    let refused = [("publish", &m.fanout_refused_publish), ("delete", &m.fanout_refused_delete)];
    out.labelled(
        "heartline_fanout_refused_total",
        "Requests refused with UNAVAILABLE before being committed because the fan-out queue was full, by op.",
        "op",
        refused.map(|(op, c)| (op, c.get())),
    );
    let reads = [("hot", &m.timeline_reads_hot), ("cold", &m.timeline_reads_cold), ("pull", &m.timeline_reads_pull)];
    out.labelled(
        "heartline_timeline_reads_total",
        "Timeline reads, by path: hot (in memory), cold (rebuilt from the store), pull (merged at read time).",
        "path",
        reads.map(|(path, c)| (path, c.get())),
    );
    render_process(&mut out);
    out.0
}

/// The series of Prometheus' process collector, with its help texts; each
/// one the platform cannot read is left out.
fn render_process(out: &mut Exposition) {
    if let Some(stat) = process::stat() {
        out.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        out.sample("process_cpu_seconds_total", "", stat.cpu_seconds);
        out.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", stat.resident_bytes);
        out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", stat.virtual_bytes);
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            stat.start_time_s,
        );
    }
    if let Some(open) = process::open_fds() {
        out.gauge("process_open_fds", "Number of open file descriptors.", open);
    }
    if let Some(max) = process::max_fds() {
        out.gauge("process_max_fds", "Maximum number of open file descriptors.", max);
    }
}
