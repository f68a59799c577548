//! Arbitrary bytes through the TCP frame decoder and the message decoder, fed
//! in uneven reads as a socket would deliver them. Must never panic, and the
//! read buffer must never grow past what one frame may need.
#![no_main]

use bytes::BytesMut;
use heartline_proto::{FrameCodec, Message};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX_FRAME: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, the rest is the stream.
    let Some((&chunk, stream)) = data.split_first() else { return };
    let mut codec = FrameCodec::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(usize::from(chunk).max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Ok(msg) = Message::decode(frame) {
                        if let Message::BatchHeartbeat(batch) = &msg {
                            assert_eq!(batch.iter().count(), batch.len());
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= 2 * (MAX_FRAME + 3 + stream.len()));
    }
});
