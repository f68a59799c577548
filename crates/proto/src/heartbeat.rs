//! Delta state of single-session heartbeats (SPEC.md §Heartbeat compression).
//!
//! Both ends keep one [`HeartbeatState`] per session: the sender turns
//! absolute (seq, ts, status) into a [`Heartbeat`] delta, the receiver
//! applies the delta back. Time is passed in by the caller; nothing here reads
//! a clock.

use super::error::DecodeError;
use super::message::{Heartbeat, Status};

/// What both ends know about a session's last heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatState {
    /// Sequence number of the last heartbeat (0 before the first).
    pub seq: u32,
    /// Client clock of the last heartbeat, in ms since WELCOME, mod 2^32.
    pub ts: u32,
    pub status: Status,
    interval_ms: u32,
}

impl HeartbeatState {
    /// The state right after WELCOME.
    pub fn new(interval_ms: u32) -> Self {
        Self { seq: 0, ts: 0, status: Status::Online, interval_ms }
    }

    /// Sender side: the delta that carries (seq, ts, status), and advance.
    pub fn encode(&mut self, seq: u32, ts: u32, status: Status) -> Heartbeat {
        let dts = ts.wrapping_sub(self.ts);
        let hb = Heartbeat {
            jitter_ms: i64::from(dts) - i64::from(self.interval_ms),
            dseq: seq.wrapping_sub(self.seq),
            status: (status != self.status).then_some(status),
        };
        *self = Self { seq, ts, status, ..*self };
        hb
    }

    /// Receiver side: apply a decoded delta. A jitter that puts the time step
    /// outside 0..2^32 is malformed; the state is left unchanged then.
    pub fn apply(&mut self, hb: &Heartbeat) -> Result<(), DecodeError> {
        let dts = u32::try_from(i64::from(self.interval_ms) + hb.jitter_ms)
            .map_err(|_| DecodeError::malformed("heartbeat time step out of range"))?;
        self.seq = self.seq.wrapping_add(hb.dseq);
        self.ts = self.ts.wrapping_add(dts);
        if let Some(status) = hb.status {
            self.status = status;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn steady_state_is_all_defaults() {
        let mut state = HeartbeatState::new(30_000);
        let hb = state.encode(1, 30_000, Status::Online);
        assert_eq!(hb, Heartbeat { jitter_ms: 0, dseq: 1, status: None });
    }

    #[test]
    fn wraps_around_seq_and_ts() {
        let mut sender = HeartbeatState { seq: u32::MAX, ts: u32::MAX - 10, status: Status::Away, interval_ms: 30_000 };
        let mut receiver = sender;
        let hb = sender.encode(0, 29_989, Status::Away);
        assert_eq!(hb, Heartbeat { jitter_ms: 0, dseq: 1, status: None });
        receiver.apply(&hb).unwrap();
        assert_eq!(receiver, sender);
    }

    #[test]
    fn rejects_a_negative_time_step() {
        let mut state = HeartbeatState::new(100);
        let before = state;
        assert!(state.apply(&Heartbeat { jitter_ms: -101, dseq: 1, status: None }).is_err());
        assert_eq!(state, before);
    }

    proptest! {
        #[test]
        fn receiver_tracks_sender(interval in 1u32.., steps in prop::collection::vec((any::<u32>(), any::<u32>(), 1u8..=4), 1..50)) {
            let mut sender = HeartbeatState::new(interval);
            let mut receiver = sender;
            for (seq, ts, status) in steps {
                let status = Status::try_from(status).unwrap();
                let hb = sender.encode(seq, ts, status);
                receiver.apply(&hb).unwrap();
                prop_assert_eq!(receiver, sender);
            }
        }
    }
}
