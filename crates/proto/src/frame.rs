//! TCP stream framing: `length: varint | type: u8 | body` (SPEC.md §TCP).
//!
//! [`FrameCodec`] cuts frames out of the read buffer as `Bytes` (zero-copy)
//! and never reserves more than one frame's worth: a length over the limit
//! is an error before a single body byte is buffered. [`MessageCodec`] adds
//! message decoding on top, for peers that treat any error as fatal (the
//! client SDK); the server decodes frames itself to answer non-fatal errors.

use bytes::{Buf, Bytes, BytesMut};
#[cfg(feature = "codec")]
use tokio_util::codec::{Decoder, Encoder};

use super::error::{DecodeError, ErrorCode};
use super::limits;
use super::message::Message;
use super::varint::{self, VarintError};

/// Bytes a legal length prefix takes at most (2^21 > MAX_FRAME).
const MAX_LENGTH_PREFIX: usize = 3;

/// A stream-level failure: the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("frame over the limit")]
    TooLarge,
    #[error("malformed frame length")]
    Malformed,
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl FrameError {
    /// The ERROR code to send before closing, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FrameError::Io(_) => None,
            FrameError::TooLarge => Some(ErrorCode::FrameTooLarge),
            FrameError::Malformed => Some(ErrorCode::Malformed),
            FrameError::Decode(e) => Some(e.code),
        }
    }
}

/// Appends `msg` as one frame. Fails, leaving `dst` as it was, if the frame
/// would be over the protocol's frame limit.
pub fn encode_frame(msg: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
    let start = dst.len();
    // Write the frame behind a maximal length prefix, then close the gap:
    // one pass over the message, and a short move only for small frames.
    dst.extend_from_slice(&[0; MAX_LENGTH_PREFIX]);
    msg.encode(dst);
    let len = dst.len() - start - MAX_LENGTH_PREFIX;
    if len > limits::MAX_FRAME {
        dst.truncate(start);
        return Err(FrameError::TooLarge);
    }
    let mut prefix = [0u8; MAX_LENGTH_PREFIX];
    let mut cursor = &mut prefix[..];
    varint::put(&mut cursor, len as u64);
    let prefix_len = varint::len(len as u64);
    let body_at = start + MAX_LENGTH_PREFIX;
    let gap = MAX_LENGTH_PREFIX - prefix_len;
    dst[start + gap..body_at].copy_from_slice(&prefix[..prefix_len]);
    if gap > 0 {
        dst.copy_within(start + gap.., start);
        dst.truncate(dst.len() - gap);
    }
    Ok(())
}

/// Cuts length-prefixed frames out of a byte stream.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec accepting frames up to `max_frame` bytes (capped at the
    /// protocol's limit).
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame: max_frame.min(limits::MAX_FRAME) }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(limits::MAX_FRAME)
    }
}

impl FrameCodec {
    /// The next whole frame (type byte and body) split off the front of
    /// `src`, or `None` until more bytes arrive. An error is fatal for the
    /// stream: nothing after it can be framed.
    pub fn next_frame(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let prefix = &src[..src.len().min(MAX_LENGTH_PREFIX)];
        let (len, prefix_len) = match varint::get(prefix) {
            Ok((len, prefix_len)) => (len as usize, prefix_len),
            Err(VarintError::Truncated) if prefix.len() < MAX_LENGTH_PREFIX => return Ok(None),
            Err(VarintError::Truncated) => return Err(FrameError::TooLarge),
            Err(VarintError::NonCanonical) => return Err(FrameError::Malformed),
        };
        if len == 0 {
            return Err(FrameError::Malformed);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge);
        }
        let total = prefix_len + len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(prefix_len);
        Ok(Some(src.split_to(len).freeze()))
    }
}

#[cfg(feature = "codec")]
impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        self.next_frame(src)
    }
}

#[cfg(feature = "codec")]
impl Encoder<&Message> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(msg, dst)
    }
}

/// Frames and messages together; every error is fatal.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageCodec {
    frames: FrameCodec,
}

impl MessageCodec {
    pub fn new(max_frame: usize) -> Self {
        Self { frames: FrameCodec::new(max_frame) }
    }

    /// The next whole message, or `None` until more bytes arrive.
    pub fn next_message(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match self.frames.next_frame(src)? {
            Some(frame) => Ok(Some(Message::decode(frame)?)),
            None => Ok(None),
        }
    }
}

#[cfg(feature = "codec")]
impl Decoder for MessageCodec {
    type Item = Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        self.next_message(src)
    }
}

#[cfg(feature = "codec")]
impl Encoder<&Message> for MessageCodec {
    type Error = FrameError;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(msg, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Heartbeat;

    #[test]
    fn steady_state_heartbeat_is_three_bytes() {
        let mut buf = BytesMut::new();
        let hb = Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None });
        encode_frame(&hb, &mut buf).unwrap();
        assert_eq!(&buf[..], [0x02, 0x10, 0x00]);
    }

    #[test]
    fn splits_frames_and_waits_for_more() {
        let mut buf = BytesMut::from(&[0x02, 0x10, 0x00, 0x02, 0x10][..]);
        let mut codec = FrameCodec::default();
        assert_eq!(codec.next_frame(&mut buf).unwrap().unwrap(), Bytes::from_static(&[0x10, 0x00]));
        assert_eq!(codec.next_frame(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[0x00]);
        assert!(codec.next_frame(&mut buf).unwrap().is_some());
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_oversized_lengths_without_buffering() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0x81, 0x08][..]); // 1025
        assert!(matches!(codec.next_frame(&mut buf), Err(FrameError::TooLarge)));
        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x0f][..]); // 4 GiB
        assert!(matches!(codec.next_frame(&mut huge), Err(FrameError::TooLarge)));
        assert!(huge.capacity() < 64);
    }

    #[test]
    fn zero_and_overlong_lengths_are_malformed() {
        let mut codec = FrameCodec::default();
        assert!(matches!(codec.next_frame(&mut BytesMut::from(&[0x00][..])), Err(FrameError::Malformed)));
        assert!(matches!(codec.next_frame(&mut BytesMut::from(&[0x82, 0x00][..])), Err(FrameError::Malformed)));
    }
}
