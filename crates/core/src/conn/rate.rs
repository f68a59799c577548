//! Per-session rate limits (SPEC.md §4.4 step 8): a token bucket of `burst`
//! requests refilled at `per_s` requests per second.
//!
//! Sans-IO: the caller passes the time in and decides what a refusal means
//! (RATE_LIMITED, frame skipped). It must not read a clock or know about
//! messages. The bucket is kept as GCRA (the "virtual scheduling" form): one
//! theoretical arrival time instead of a level and a last-refill time, so a
//! check is a comparison and an add, and a rate changed by a reload applies
//! to the next request without converting any state.

/// How fast requests may come: `burst` at once, then one per `interval_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Microseconds between two requests at the sustained rate; 0 turns the limit off.
    pub interval_us: u64,
    /// Requests accepted back to back from a full bucket (at least 1).
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate { interval_us: 0, burst: 1 };

    /// `per_s` requests per second sustained (0 or less, or not a number:
    /// unlimited) and bursts of `burst`.
    pub fn per_second(per_s: f64, burst: u32) -> Rate {
        if per_s.is_nan() || per_s <= 0.0 {
            return Rate::UNLIMITED;
        }
        // At least 1 µs: a rate above a million per second is as good as none.
        let interval_us = (1e6 / per_s).round().clamp(1.0, u64::MAX as f64) as u64;
        Rate { interval_us, burst: burst.max(1) }
    }
}

/// One session's bucket for one kind of request; starts full.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    /// When the bucket would be full again, in µs of the caller's clock.
    full_at_us: u64,
}

impl Bucket {
    /// Takes one token if there is one: `true` means the request may go on.
    /// A clock that steps backwards only delays the refill.
    pub fn take(&mut self, rate: Rate, now_ms: u64) -> bool {
        if rate.interval_us == 0 {
            return true;
        }
        let now = now_ms.saturating_mul(1_000);
        let full_at = self.full_at_us.max(now);
        let tolerance = rate.interval_us.saturating_mul(u64::from(rate.burst.saturating_sub(1)));
        if full_at - now > tolerance {
            return false;
        }
        self.full_at_us = full_at.saturating_add(rate.interval_us);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(bucket: &mut Bucket, rate: Rate, now_ms: u64, tries: usize) -> usize {
        (0..tries).filter(|_| bucket.take(rate, now_ms)).count()
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refills_at_the_rate() {
        let rate = Rate::per_second(2.0, 5);
        let mut bucket = Bucket::default();
        assert_eq!(taken(&mut bucket, rate, 1_000, 10), 5, "the burst");
        assert_eq!(taken(&mut bucket, rate, 1_499, 10), 0, "not yet one interval");
        assert_eq!(taken(&mut bucket, rate, 1_500, 10), 1, "one per 500 ms");
        assert_eq!(taken(&mut bucket, rate, 2_500, 10), 2);
        assert_eq!(taken(&mut bucket, rate, 60_000, 10), 5, "refilled, but never past the burst");
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let rate = Rate::per_second(10.0, 1);
        let mut bucket = Bucket::default();
        assert!((0..1_000).all(|i| bucket.take(rate, 5_000 + i * 100)));
        assert!(!bucket.take(rate, 5_000 + 999 * 100 + 50), "twice within one interval");
    }

    #[test]
    fn zero_means_unlimited_and_the_clock_may_step_back() {
        let mut bucket = Bucket::default();
        assert_eq!(taken(&mut bucket, Rate::per_second(0.0, 1), 0, 1_000), 1_000);
        assert_eq!(taken(&mut bucket, Rate::per_second(f64::NAN, 1), 0, 10), 10);
        let rate = Rate::per_second(1.0, 2);
        let mut bucket = Bucket::default();
        assert_eq!(taken(&mut bucket, rate, 10_000, 5), 2);
        assert_eq!(taken(&mut bucket, rate, 5_000, 5), 0, "an earlier time refills nothing");
        assert_eq!(taken(&mut bucket, rate, 11_000, 5), 1);
        assert!(Bucket::default().take(Rate::per_second(1.0, 0), u64::MAX), "burst 0 counts as 1, no overflow");
    }
}
