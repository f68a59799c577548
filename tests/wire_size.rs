//! The wire-size promises of protocol v1: a steady-state heartbeat fits in
//! 4 bytes on the TCP wire and a gateway batch of 1,000 random sessions out
//! of 10,000,000 averages at most 2.5 bytes per heartbeat, framing included.

use bytes::BytesMut;
use heartline_proto::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

fn frame_len(msg: &Message) -> usize {
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf).unwrap();
    buf.len()
}

proptest! {
    /// A client ticking on absolute deadlines sends each heartbeat a few ms
    /// off its deadline; anything within ±1 s of it still fits.
    #[test]
    fn steady_heartbeat_fits_in_four_bytes(interval in 5_000u32..=600_000, offsets in prop::collection::vec(-1_023i64..=1_023, 1..100)) {
        let mut sender = HeartbeatState::new(interval);
        for (n, offset) in offsets.into_iter().enumerate() {
            let deadline = (n as i64 + 1) * i64::from(interval);
            let ts = (deadline + offset).rem_euclid(1 << 32) as u32;
            let hb = sender.encode(n as u32 + 1, ts, Status::Online);
            prop_assert!(frame_len(&Message::Heartbeat(hb)) <= 4);
        }
    }
}

#[test]
fn exact_steady_state_heartbeat_is_three_bytes() {
    let mut sender = HeartbeatState::new(30_000);
    let hb = sender.encode(1, 30_000, Status::Online);
    assert_eq!(frame_len(&Message::Heartbeat(hb)), 3);
}

/// Bytes per heartbeat of a BATCH_HEARTBEAT frame for `n` random ids out of
/// `space`, with a share of entries carrying a status change.
fn batch_bytes_per_heartbeat(rng: &mut StdRng, n: usize, space: usize, status_share: f64) -> f64 {
    let mut ids: Vec<u64> = sample(rng, space, n).into_iter().map(|i| i as u64).collect();
    ids.sort_unstable();
    let entries: Vec<BatchEntry> =
        ids.into_iter().map(|id| (id, rng.gen_bool(status_share).then_some(Status::Away))).collect();
    let msg = Message::BatchHeartbeat(Batch::encode(&entries).unwrap());
    frame_len(&msg) as f64 / n as f64
}

#[test]
fn batch_of_1000_random_sessions_out_of_10_million_is_at_most_2_5_bytes_each() {
    let mut rng = StdRng::seed_from_u64(0x4845_4152_544c_494e);
    for _ in 0..200 {
        let steady = batch_bytes_per_heartbeat(&mut rng, 1_000, 10_000_000, 0.0);
        assert!(steady <= 2.5, "{steady} bytes per heartbeat");
        let with_changes = batch_bytes_per_heartbeat(&mut rng, 1_000, 10_000_000, 0.01);
        assert!(with_changes <= 2.5, "{with_changes} bytes per heartbeat with 1% status changes");
    }
}
