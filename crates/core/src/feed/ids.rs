//! Post ids: 64-bit, k-sortable, unique per node.
//!
//! `ms since 2026-01-01 (41 bits) | node (10 bits) | sequence (12 bits)`,
//! top bit clear. A larger id is a newer post. The generator never goes
//! back: if the wall clock steps back it keeps counting from the last
//! millisecond it used, borrowing the next one when 4,096 ids in one
//! millisecond run out.

use std::sync::Mutex;

/// 2026-01-01T00:00:00Z in unix ms.
const EPOCH_MS: u64 = 1_767_225_600_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;

pub struct IdGenerator {
    node: u64,
    /// (millisecond, next sequence) last used.
    last: Mutex<(u64, u64)>,
}

impl IdGenerator {
    pub fn new(node: u16) -> Self {
        Self { node: u64::from(node.min(MAX_NODE)), last: Mutex::new((0, 0)) }
    }

    /// The next id at `now_ms` (unix ms).
    pub fn next(&self, now_ms: u64) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ms = now_ms.saturating_sub(EPOCH_MS);
        let (mut at, mut seq) = *last;
        if ms > at {
            (at, seq) = (ms, 0);
        } else if seq == 1 << SEQ_BITS {
            (at, seq) = (at + 1, 0);
        }
        *last = (at, seq + 1);
        at << (NODE_BITS + SEQ_BITS) | self.node << SEQ_BITS | seq
    }

    /// The smallest id any node could give at `now_ms`: ids below it are older.
    pub fn floor_at(now_ms: u64) -> u64 {
        now_ms.saturating_sub(EPOCH_MS) << (NODE_BITS + SEQ_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = EPOCH_MS + 1_000_000;

    #[test]
    fn ids_grow_with_time_and_carry_the_node() {
        let ids = IdGenerator::new(5);
        let a = ids.next(NOW);
        let b = ids.next(NOW);
        let c = ids.next(NOW + 1);
        assert!(a < b && b < c);
        assert_eq!((a >> SEQ_BITS) & u64::from(MAX_NODE), 5);
        assert!(IdGenerator::floor_at(NOW) <= a && a < IdGenerator::floor_at(NOW + 1));
    }

    #[test]
    fn a_clock_stepping_back_never_repeats_or_lowers_ids() {
        let ids = IdGenerator::new(1);
        let before = ids.next(NOW);
        let after = ids.next(NOW - 5_000);
        assert!(after > before);
    }

    #[test]
    fn a_full_millisecond_borrows_the_next() {
        let ids = IdGenerator::new(1);
        let all: Vec<u64> = (0..5_000).map(|_| ids.next(NOW)).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.next(NOW + 1) > *all.last().unwrap());
    }
}
