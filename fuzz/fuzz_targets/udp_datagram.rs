//! Arbitrary datagrams through the UDP parser and the whole check chain
//! (sequence expansion, replay window, tag, body) with a fixed key. Must
//! never panic, and a datagram that opens once must not open twice.
#![no_main]

use heartline_proto::udp::{self, Body, ReplayWindow};
use libfuzzer_sys::fuzz_target;

/// The key of protocol-spec/vectors/udp.json, so seeds from it verify.
const KEY: udp::Key = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fuzz_target!(|data: &[u8]| {
    let Ok(datagram) = udp::parse(data) else { return };
    let mut window = ReplayWindow::default();
    if let Ok((_, body)) = datagram.open(&KEY, &mut window) {
        if let Body::Batch(view) = body {
            assert_eq!(view.iter().count(), view.len());
        }
        assert!(datagram.open(&KEY, &mut window).is_err(), "a replay opened");
    }
});
