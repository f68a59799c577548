//! UDP datagrams: single-session and gateway batch heartbeats, authenticated
//! with a truncated HMAC-SHA256 and guarded against replay by a sequence
//! window (SPEC.md §UDP).
//!
//! Parses straight out of a receive buffer (`&[u8]`, no copy, no
//! allocation). It must never produce an answer to a datagram: a bad one is
//! a [`DropReason`] reason for the caller to count, nothing more.

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::batch::{self, BatchEntry, BatchError, BatchView};
use super::message::Status;
use super::{limits, varint};

/// Datagram types.
pub mod types {
    pub const HEARTBEAT: u8 = 0x01;
    pub const BATCH: u8 = 0x02;
}

pub const TAG_LEN: usize = 8;
/// How far below the largest accepted sequence number a datagram may arrive.
pub const REPLAY_WINDOW: u32 = 32;
/// type + 1-byte id + seq16 + tag.
const MIN_LEN: usize = 1 + 1 + 2 + TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// A per-session (or per-gateway) UDP key, from WELCOME.
pub type Key = [u8; 16];

/// Why a datagram was dropped. The server counts these; it never answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DropReason {
    /// Shorter than the smallest datagram, or longer than the limit.
    BadLength,
    UnknownType,
    /// The header or body does not follow the grammar.
    Malformed,
    /// No such session (decided by the caller).
    UnknownId,
    /// The tag does not verify.
    BadTag,
    /// Already seen, too old, or past the sequence space.
    Replayed,
}

/// The authenticated-but-not-yet-verified parts of a datagram.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub ty: u8,
    /// Session id (type 0x01) or gateway id (type 0x02).
    pub id: u64,
    seq16: u16,
    /// Everything before the tag: what the tag covers, after the sequence number.
    covered: &'a [u8],
    body: &'a [u8],
    tag: &'a [u8],
}

/// What an authentic datagram carries.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// A heartbeat, maybe with a status change.
    Heartbeat(Option<Status>),
    Batch(BatchView<'a>),
}

/// Splits a datagram into header, body and tag. Cheap: the caller looks up
/// the key for `id` next and calls [`Datagram::open`].
pub fn parse(buf: &[u8]) -> Result<Datagram<'_>, DropReason> {
    if buf.len() < MIN_LEN || buf.len() > limits::MAX_DATAGRAM {
        return Err(DropReason::BadLength);
    }
    let ty = buf[0];
    if ty != types::HEARTBEAT && ty != types::BATCH {
        return Err(DropReason::UnknownType);
    }
    let (covered, tag) = buf.split_at(buf.len() - TAG_LEN);
    let (id, id_len) = varint::get(&covered[1..]).map_err(|_| DropReason::Malformed)?;
    let seq_at = 1 + id_len;
    let seq_bytes = covered.get(seq_at..seq_at + 2).ok_or(DropReason::Malformed)?;
    Ok(Datagram {
        ty,
        id,
        seq16: u16::from_be_bytes([seq_bytes[0], seq_bytes[1]]),
        covered,
        body: &covered[seq_at + 2..],
        tag,
    })
}

impl<'a> Datagram<'a> {
    /// Verifies the datagram with `key` against `window`, parses its body and
    /// only then records its sequence number. Returns the full sequence
    /// number and the body.
    pub fn open(&self, key: &Key, window: &mut ReplayWindow) -> Result<(u32, Body<'a>), DropReason> {
        let seq = expand_seq(window.largest, self.seq16).ok_or(DropReason::Replayed)?;
        if !window.fresh(seq) {
            return Err(DropReason::Replayed);
        }
        if mac(key, seq, self.covered).verify_truncated_left(self.tag).is_err() {
            return Err(DropReason::BadTag);
        }
        let body = match self.ty {
            types::HEARTBEAT => match self.body {
                [0] => Body::Heartbeat(None),
                [status] => Body::Heartbeat(Some(
                    Status::try_from(*status).ok().filter(|s| s.is_settable()).ok_or(DropReason::Malformed)?,
                )),
                _ => return Err(DropReason::Malformed),
            },
            _ => Body::Batch(BatchView::parse(self.body).map_err(|_| DropReason::Malformed)?),
        };
        window.accept(seq);
        Ok((seq, body))
    }
}

fn mac(key: &Key, seq: u32, covered: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&seq.to_be_bytes());
    mac.update(covered);
    mac
}

fn seal(dst: &mut BytesMut, start: usize, key: &Key, seq: u32) {
    let tag = mac(key, seq, &dst[start..]).finalize().into_bytes();
    dst.put_slice(&tag[..TAG_LEN]);
}

fn put_header(dst: &mut BytesMut, ty: u8, id: u64, seq: u32) {
    dst.put_u8(ty);
    varint::put(dst, id);
    dst.put_u16(seq as u16);
}

/// Appends a single-session heartbeat datagram.
pub fn write_heartbeat(dst: &mut BytesMut, key: &Key, session: u64, seq: u32, status: Option<Status>) {
    let start = dst.len();
    put_header(dst, types::HEARTBEAT, session, seq);
    dst.put_u8(status.map_or(0, |s| s as u8));
    seal(dst, start, key, seq);
}

/// Appends a gateway batch datagram (entries in ascending session order).
pub fn write_batch(
    dst: &mut BytesMut,
    key: &Key,
    gateway: u64,
    seq: u32,
    entries: &[BatchEntry],
) -> Result<(), BatchError> {
    let start = dst.len();
    put_header(dst, types::BATCH, gateway, seq);
    if let Err(e) = batch::write(dst, entries) {
        dst.truncate(start);
        return Err(e);
    }
    seal(dst, start, key, seq);
    Ok(())
}

/// Expands a 16-bit truncated sequence number to the 32-bit one closest to
/// `largest + 1` (RFC 9000 §A.3). `None` past the end of the sequence space.
pub fn expand_seq(largest: u32, truncated: u16) -> Option<u32> {
    const WIN: u64 = 1 << 16;
    const HALF: u64 = WIN / 2;
    let expected = u64::from(largest) + 1;
    let candidate = (expected & !(WIN - 1)) | u64::from(truncated);
    let seq = if candidate + HALF <= expected && candidate + WIN < 1 << 32 {
        candidate + WIN
    } else if candidate > expected + HALF && candidate >= WIN {
        candidate - WIN
    } else {
        candidate
    };
    u32::try_from(seq).ok()
}

/// The receiver's record of sequence numbers, per id: the largest accepted,
/// and which of the [`REPLAY_WINDOW`] below it were seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    largest: u32,
    /// Bit k set: `largest - k` was accepted.
    seen: u32,
}

impl ReplayWindow {
    /// Largest sequence number accepted so far (0: none).
    pub fn largest(&self) -> u32 {
        self.largest
    }

    /// Whether `seq` may still be accepted.
    pub fn fresh(&self, seq: u32) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.largest {
            return true;
        }
        let age = self.largest - seq;
        age < REPLAY_WINDOW && self.seen & (1 << age) == 0
    }

    /// Records `seq`; call only after [`fresh`](Self::fresh) and the tag check.
    pub fn accept(&mut self, seq: u32) {
        if seq > self.largest {
            let shift = seq - self.largest;
            self.seen = if shift >= REPLAY_WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.largest = seq;
        } else {
            self.seen |= 1 << (self.largest - seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: Key = *b"0123456789abcdef";

    fn heartbeat(seq: u32, status: Option<Status>) -> BytesMut {
        let mut buf = BytesMut::new();
        write_heartbeat(&mut buf, &KEY, 42, seq, status);
        buf
    }

    #[test]
    fn authentic_heartbeat_opens_once() {
        let dg = heartbeat(1, Some(Status::Busy));
        let mut window = ReplayWindow::default();
        let parsed = parse(&dg).unwrap();
        assert_eq!(parsed.id, 42);
        let (seq, body) = parsed.open(&KEY, &mut window).unwrap();
        assert_eq!(seq, 1);
        assert!(matches!(body, Body::Heartbeat(Some(Status::Busy))));
        assert_eq!(parsed.open(&KEY, &mut window).unwrap_err(), DropReason::Replayed);
    }

    #[test]
    fn forged_and_tampered_datagrams_fail_the_tag() {
        let mut window = ReplayWindow::default();
        let dg = heartbeat(1, None);
        assert_eq!(parse(&dg).unwrap().open(b"fedcba9876543210", &mut window).unwrap_err(), DropReason::BadTag);
        let mut tampered = dg.clone();
        tampered[4] = 2; // status byte
        assert_eq!(parse(&tampered).unwrap().open(&KEY, &mut window).unwrap_err(), DropReason::BadTag);
        assert_eq!(window, ReplayWindow::default(), "failed datagrams leave the window alone");
    }

    #[test]
    fn reordering_inside_the_window_is_accepted_replays_and_old_ones_are_not() {
        let mut window = ReplayWindow::default();
        for seq in [5, 3, 4, 40, 9] {
            let dg = heartbeat(seq, None);
            assert!(parse(&dg).unwrap().open(&KEY, &mut window).is_ok(), "seq {seq}");
        }
        for seq in [3, 4, 5, 40, 8] {
            let dg = heartbeat(seq, None);
            assert_eq!(parse(&dg).unwrap().open(&KEY, &mut window).unwrap_err(), DropReason::Replayed, "seq {seq}");
        }
    }

    #[test]
    fn bad_lengths_and_types_are_dropped() {
        assert_eq!(parse(&[1; 5]).unwrap_err(), DropReason::BadLength);
        assert_eq!(parse(&vec![1; limits::MAX_DATAGRAM + 1]).unwrap_err(), DropReason::BadLength);
        assert_eq!(parse(&[9; 20]).unwrap_err(), DropReason::UnknownType);
    }

    #[test]
    fn expand_seq_follows_rfc9000() {
        assert_eq!(expand_seq(0, 1), Some(1));
        assert_eq!(expand_seq(0xa82f30ea, 0x9b32), Some(0xa82f9b32));
        assert_eq!(expand_seq(0xffff, 0x0000), Some(0x10000));
        assert_eq!(expand_seq(0x10005, 0xfffe), Some(0xfffe));
        assert_eq!(expand_seq(u32::MAX, 0), None);
    }

    #[test]
    fn batch_datagram_round_trip() {
        let entries = [(10, None), (12, Some(Status::Away)), (1_000_000, None)];
        let mut buf = BytesMut::new();
        write_batch(&mut buf, &KEY, 7, 300, &entries).unwrap();
        let mut window = ReplayWindow::default();
        let (seq, body) = parse(&buf).unwrap().open(&KEY, &mut window).unwrap();
        assert_eq!(seq, 300);
        let Body::Batch(view) = body else { panic!("batch expected") };
        assert_eq!(view.iter().collect::<Vec<_>>(), entries);
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut window = ReplayWindow::default();
            if let Ok(dg) = parse(&bytes) {
                let _ = dg.open(&KEY, &mut window);
            }
        }

        #[test]
        fn expansion_recovers_nearby_seqs(largest in 0u32..u32::MAX - 40_000, ahead in 1u32..30_000) {
            let seq = largest + ahead;
            prop_assert_eq!(expand_seq(largest, seq as u16), Some(seq));
        }
    }
}
