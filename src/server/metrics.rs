//! Counters the server keeps about itself. Relaxed atomics: they are read
//! for reports, never to make decisions.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::udp::DropReason;

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

#[derive(Default, Debug)]
pub struct Metrics {
    pub heartbeats_tcp: Counter,
    pub heartbeats_udp: Counter,
    pub heartbeats_batch: Counter,
    pub connections_accepted: Counter,
    udp_dropped: [Counter; 6],
}

impl Metrics {
    pub fn udp_dropped(&self, reason: DropReason) -> &Counter {
        &self.udp_dropped[reason as usize]
    }
}
