//! Counters and histograms the server keeps about itself, incremented on the
//! hot paths by `crate::server` and rendered by `crate::admin` as Prometheus
//! text (neither of which this module knows).
//!
//! Owns the set of series and their storage: relaxed atomics, so recording
//! costs one uncontended add. It must not make decisions from them, format
//! them, or allocate when recording. Gauges that already live elsewhere
//! (sessions, connections, queue depths) are read at scrape time instead of
//! being mirrored here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use heartline_proto::udp::DropReason;
use heartline_proto::ErrorCode;

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the histogram buckets, in microseconds: 50 µs to 10 s,
/// roughly ×2–2.5 apart, which covers an fsync on a fast disk up to a stalled
/// fan-out without per-series tuning.
pub const BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets ([`BUCKETS_US`]) plus +Inf.
///
/// Counts are per bucket (not cumulative) so recording touches one slot; the
/// exposition makes them cumulative.
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [Counter; BUCKETS_US.len() + 1],
    sum_us: Counter,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[slot].inc();
        self.sum_us.add(us);
    }

    /// Per-bucket counts (the last one is +Inf) and the sum in microseconds.
    pub fn snapshot(&self) -> ([u64; BUCKETS_US.len() + 1], u64) {
        (std::array::from_fn(|i| self.buckets[i].get()), self.sum_us.get())
    }
}

/// Which connection cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections`.
    Total,
    /// `limits.max_connections_per_ip`.
    PerIp,
}

/// Which listener a stream connection came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (`listen`).
    Tcp,
    /// TCP with TLS (`tls.listen`).
    Tls,
    /// WebSocket (`websocket.listen`).
    Ws,
    /// WebSocket over TLS (`websocket.tls`).
    Wss,
}

impl Transport {
    pub const ALL: [Transport; 4] = [Transport::Tcp, Transport::Tls, Transport::Ws, Transport::Wss];

    /// The value of the `transport` label.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// Why a stream connection (any transport) ended, as the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// BYE, or the peer closed or reset the connection.
    Peer,
    /// The server sent GOAWAY (shutdown).
    Goaway,
    /// The peer stopped accepting bytes (write error or timeout).
    WriteFailed,
    /// The server closed with an ERROR of this code.
    Error(ErrorCode),
}

/// Slots for error codes: the wire codes are small (1..=20 in v1).
const ERROR_SLOTS: usize = 32;

#[derive(Default, Debug)]
pub struct Metrics {
    /// HEARTBEAT frames, by the [`Transport`] of their connection.
    heartbeats_stream: [Counter; 4],
    pub heartbeats_udp: Counter,
    pub heartbeats_batch: Counter,
    /// Stream connections accepted, every transport.
    pub connections_accepted: Counter,
    /// The same, by [`Transport`].
    accepted_by_transport: [Counter; 4],
    /// Accepted connections closed at once with TOO_MANY_CONNECTIONS, by cap.
    connections_refused: [Counter; 2],
    /// Presence entries queued to watchers.
    pub watch_events: Counter,
    /// Queued presence entries replaced by a newer one for the same user.
    pub watch_events_coalesced: Counter,
    /// Time of one durable store write (last-seen batches now, feed commits later).
    pub store_commit: Histogram,
    /// Feed: posts accepted.
    pub posts: Counter,
    /// Feed: entries inserted into home timelines by fan-out.
    pub fanout_inserts: Counter,
    /// Feed: time from a post's commit to its last fan-out insert.
    pub fanout_lag: Histogram,
    /// Feed: PUBLISHes refused with UNAVAILABLE because the fan-out queue was full.
    pub fanout_refused_publish: Counter,
    /// Feed: DELETEs refused with UNAVAILABLE because the fan-out queue was full.
    pub fanout_refused_delete: Counter,
    /// Feed: timeline reads served from the in-memory hot timeline.
    pub timeline_reads_hot: Counter,
    /// Feed: timeline reads rebuilt from the store.
    pub timeline_reads_cold: Counter,
    /// Feed: timeline reads merged at read time from followed authors (pull path).
    pub timeline_reads_pull: Counter,
    udp_dropped: [Counter; 6],
    errors_sent: [Counter; ERROR_SLOTS],
    closes_by_error: [Counter; ERROR_SLOTS],
    closes_peer: Counter,
    closes_goaway: Counter,
    closes_write_failed: Counter,
}

impl Metrics {
    pub fn udp_dropped(&self, reason: DropReason) -> &Counter {
        &self.udp_dropped[reason as usize]
    }

    pub fn heartbeats_on(&self, transport: Transport) -> &Counter {
        &self.heartbeats_stream[transport as usize]
    }

    /// HEARTBEAT frames over every stream transport.
    pub fn heartbeats_stream(&self) -> u64 {
        self.heartbeats_stream.iter().map(Counter::get).sum()
    }

    pub fn accepted_by(&self, transport: Transport) -> &Counter {
        &self.accepted_by_transport[transport as usize]
    }

    pub fn connections_refused(&self, cap: Refused) -> &Counter {
        &self.connections_refused[cap as usize]
    }

    /// ERROR frames written to connections, by code.
    pub fn errors_sent(&self, code: u16) -> Option<&Counter> {
        self.errors_sent.get(usize::from(code))
    }

    pub fn closed(&self, reason: CloseReason) -> &Counter {
        match reason {
            CloseReason::Peer => &self.closes_peer,
            CloseReason::Goaway => &self.closes_goaway,
            CloseReason::WriteFailed => &self.closes_write_failed,
            CloseReason::Error(code) => &self.closes_by_error[code as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(60));
        let (buckets, sum) = h.snapshot();
        assert_eq!(buckets[0], 1, "50 µs is in the le=50µs bucket");
        assert_eq!(buckets[1], 1);
        assert_eq!(buckets[BUCKETS_US.len()], 1, "over 10 s goes to +Inf");
        assert_eq!(sum, 50 + 51 + 60_000_000);
    }

    #[test]
    fn every_error_code_has_a_slot() {
        let m = Metrics::default();
        for code in 0..=u16::from(u8::MAX) {
            if let Some(code) = ErrorCode::from_u16(code) {
                m.closed(CloseReason::Error(code)).inc();
                m.errors_sent(code as u16).expect("slot").inc();
            }
        }
    }
}
