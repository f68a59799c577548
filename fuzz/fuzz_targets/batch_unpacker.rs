//! Arbitrary bytes as a batch body: validation must never panic, and a body
//! it accepts must iterate exactly its count of strictly ascending ids, and
//! re-encode to the same entries in no more bytes (the wire may use a wider
//! bit width than needed, SPEC.md §7.4; the encoder never does).
#![no_main]

use bytes::BytesMut;
use heartline_proto::{batch, BatchView};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(view) = BatchView::parse(data) else { return };
    let entries: Vec<_> = view.iter().collect();
    assert_eq!(entries.len(), view.len());
    assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0));
    let mut again = BytesMut::new();
    batch::write(&mut again, &entries).expect("a parsed batch re-encodes");
    assert!(again.len() <= data.len());
    let reparsed = BatchView::parse(&again).expect("an encoded batch parses");
    assert!(reparsed.iter().eq(entries.iter().copied()));
});
