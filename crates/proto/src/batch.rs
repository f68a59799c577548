//! Gateway batch heartbeats: sorted session ids, delta-encoded and bit-packed
//! with one bit width per frame, plus sparse status bits (SPEC.md §Batch).
//!
//! Owns the batch body layout for both TCP (BATCH_HEARTBEAT) and UDP (type
//! 0x02). Parsing validates the whole body up front without allocating;
//! iteration then reads the bits in place. It must not know what a session
//! id means to the server.

use bitvec::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::error::{DecodeError, ErrorCode};
use super::message::Status;
use super::{limits, varint};

const FLAG_STATUSES: u8 = 0b1;
const STATUS_BITS: usize = 3;

/// One heartbeat of a batch: a session, and a status change riding on it.
pub type BatchEntry = (u64, Option<Status>);

/// Why entries cannot form a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("more than {} entries in one batch", limits::MAX_BATCH)]
    TooMany,
    #[error("session ids must be strictly ascending")]
    NotAscending,
    #[error("offline cannot be set by a heartbeat")]
    OfflineStatus,
}

/// The fixed part of a batch, read before the bitstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Header {
    count: usize,
    first: u64,
    width: usize,
    /// Bits of the stream before the status flags (the gaps).
    gap_bits: usize,
    statuses: bool,
    /// Offset of the bitstream in the body.
    bits_at: usize,
}

/// A validated batch body that borrows its bytes (the UDP path parses these
/// straight out of the receive buffer).
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    header: Header,
    bits: &'a BitSlice<u8, Msb0>,
}

impl<'a> BatchView<'a> {
    /// Validates a batch body; on success every entry can be read without
    /// further checks.
    pub fn parse(body: &'a [u8]) -> Result<Self, DecodeError> {
        let malformed = DecodeError::malformed;
        let mut at = 0;
        let next_varint = |at: &mut usize, what| -> Result<u64, DecodeError> {
            let (value, len) = varint::get(&body[*at..]).map_err(|_| malformed(what))?;
            *at += len;
            Ok(value)
        };
        let count = next_varint(&mut at, "batch count")?;
        if count > limits::MAX_BATCH as u64 {
            return Err(DecodeError::new(ErrorCode::LimitExceeded, "batch count over limit"));
        }
        let count = count as usize;
        if count == 0 {
            return if at == body.len() {
                Ok(Self { header: Header { bits_at: at, ..Header::default() }, bits: BitSlice::empty() })
            } else {
                Err(malformed("trailing bytes after empty batch"))
            };
        }
        let flags = *body.get(at).ok_or(malformed("batch flags"))?;
        at += 1;
        if flags & !FLAG_STATUSES != 0 {
            return Err(malformed("reserved batch flag"));
        }
        let first = next_varint(&mut at, "batch first id")?;
        let width = usize::from(*body.get(at).ok_or(malformed("batch width"))?);
        at += 1;
        if width > 64 {
            return Err(malformed("batch width over 64"));
        }
        let bits = body[at..].view_bits::<Msb0>();
        let gap_bits = (count - 1) * width;
        let statuses = flags & FLAG_STATUSES != 0;
        let mut used = gap_bits;
        if statuses {
            let flag_bits = bits.get(gap_bits..gap_bits + count).ok_or(malformed("batch truncated"))?;
            let flagged = flag_bits.count_ones();
            if flagged == 0 {
                return Err(malformed("status flag set but no status"));
            }
            used += count + STATUS_BITS * flagged;
        }
        if bits.len() != used.div_ceil(8) * 8 {
            return Err(malformed("batch length does not match its header"));
        }
        if bits[used..].any() {
            return Err(malformed("nonzero batch padding"));
        }
        let view = Self { header: Header { count, first, width, gap_bits, statuses, bits_at: at }, bits };
        if statuses {
            let status_bits = &bits[gap_bits + count..used];
            let all_valid = status_bits.chunks_exact(STATUS_BITS).all(|chunk| matches!(chunk.load_be::<u8>(), 1..=4));
            if !all_valid {
                return Err(malformed("bad status in batch"));
            }
        }
        view.check_no_overflow()?;
        Ok(view)
    }

    /// Ids never pass u64::MAX. Each step adds at most 2^width, so most
    /// batches are cleared by a bound without reading the gaps.
    fn check_no_overflow(&self) -> Result<(), DecodeError> {
        let h = &self.header;
        let bound = u128::from(h.first) + (h.count as u128 - 1) * (1u128 << h.width);
        if bound <= u128::from(u64::MAX) {
            return Ok(());
        }
        // With no gap bits every step is exactly 1: the bound was the last id.
        if h.width == 0 {
            return Err(DecodeError::malformed("batch id overflows"));
        }
        let mut id = h.first;
        for gap in self.bits[..h.gap_bits].chunks_exact(h.width.max(1)).take(h.count - 1) {
            let step = if h.width == 0 { 0 } else { gap.load_be::<u64>() };
            id = id
                .checked_add(step)
                .and_then(|id| id.checked_add(1))
                .ok_or(DecodeError::malformed("batch id overflows"))?;
        }
        Ok(())
    }

    /// How many heartbeats the batch carries.
    pub fn len(&self) -> usize {
        self.header.count
    }

    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    /// The entries in ascending session order.
    pub fn iter(&self) -> BatchIter<'a> {
        let h = self.header;
        BatchIter {
            bits: self.bits,
            width: h.width,
            gap_at: 0,
            flag_at: h.gap_bits,
            status_at: h.gap_bits + h.count,
            statuses: h.statuses,
            next_id: h.first,
            remaining: h.count,
        }
    }
}

/// Reads a batch's entries in place.
pub struct BatchIter<'a> {
    bits: &'a BitSlice<u8, Msb0>,
    width: usize,
    gap_at: usize,
    flag_at: usize,
    status_at: usize,
    statuses: bool,
    next_id: u64,
    remaining: usize,
}

impl Iterator for BatchIter<'_> {
    type Item = BatchEntry;

    #[inline]
    fn next(&mut self) -> Option<BatchEntry> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let id = self.next_id;
        if self.remaining > 0 {
            let gap = match self.width {
                0 => 0,
                w => self.bits[self.gap_at..self.gap_at + w].load_be::<u64>(),
            };
            self.gap_at += self.width;
            // Overflow was ruled out by `parse`.
            self.next_id = id.wrapping_add(gap).wrapping_add(1);
        }
        let status = if self.statuses && self.bits[self.flag_at] {
            let raw = self.bits[self.status_at..self.status_at + STATUS_BITS].load_be::<u8>();
            self.status_at += STATUS_BITS;
            Status::try_from(raw).ok()
        } else {
            None
        };
        self.flag_at += 1;
        Some((id, status))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for BatchIter<'_> {}

/// Appends a batch body for `entries`, which must be in strictly ascending
/// session order. Writes straight into `dst`: no temporary buffer.
pub fn write(dst: &mut BytesMut, entries: &[BatchEntry]) -> Result<(), BatchError> {
    if entries.len() > limits::MAX_BATCH {
        return Err(BatchError::TooMany);
    }
    if entries.iter().any(|(_, status)| *status == Some(Status::Offline)) {
        return Err(BatchError::OfflineStatus);
    }
    let mut max_step = 0;
    for pair in entries.windows(2) {
        let step = pair[1].0.checked_sub(pair[0].0).filter(|&gap| gap > 0).ok_or(BatchError::NotAscending)? - 1;
        max_step = max_step.max(step);
    }
    varint::put(dst, entries.len() as u64);
    let Some(&(first, _)) = entries.first() else {
        return Ok(());
    };
    let width = (64 - max_step.leading_zeros()) as usize;
    let flagged = entries.iter().filter(|(_, status)| status.is_some()).count();
    dst.put_u8(if flagged > 0 { FLAG_STATUSES } else { 0 });
    varint::put(dst, first);
    dst.put_u8(width as u8);

    let gap_bits = (entries.len() - 1) * width;
    let status_bits = if flagged > 0 { entries.len() + STATUS_BITS * flagged } else { 0 };
    let start = dst.len();
    dst.resize(start + (gap_bits + status_bits).div_ceil(8), 0);
    // Plain range stores: bitvec's splitting iterators (`chunks_exact_mut`,
    // `split_at_mut`) would alias the bytes and make every store atomic.
    let bits = dst[start..].view_bits_mut::<Msb0>();
    if width > 0 {
        for (i, pair) in entries.windows(2).enumerate() {
            bits[i * width..(i + 1) * width].store_be(pair[1].0 - pair[0].0 - 1);
        }
    }
    if flagged > 0 {
        let mut at = gap_bits + entries.len();
        for (i, (_, status)) in entries.iter().enumerate() {
            if let Some(status) = status {
                bits.set(gap_bits + i, true);
                bits[at..at + STATUS_BITS].store_be(*status as u8);
                at += STATUS_BITS;
            }
        }
    }
    Ok(())
}

/// A validated batch body that owns (shares) its bytes, as carried by a
/// BATCH_HEARTBEAT frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    body: Bytes,
    header: Header,
}

impl Batch {
    /// Validates a body split from a frame; no copy.
    pub fn parse(body: Bytes) -> Result<Self, DecodeError> {
        let header = BatchView::parse(&body)?.header;
        Ok(Self { body, header })
    }

    /// Encodes entries (strictly ascending session ids).
    pub fn encode(entries: &[BatchEntry]) -> Result<Self, BatchError> {
        let mut body = BytesMut::new();
        write(&mut body, entries)?;
        Ok(Self::parse(body.freeze()).expect("an encoded batch parses"))
    }

    /// The encoded body.
    pub fn as_bytes(&self) -> &Bytes {
        &self.body
    }

    pub fn view(&self) -> BatchView<'_> {
        BatchView { header: self.header, bits: self.body[self.header.bits_at..].view_bits() }
    }

    pub fn len(&self) -> usize {
        self.header.count
    }

    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    pub fn iter(&self) -> BatchIter<'_> {
        self.view().iter()
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// JSON shape of a batch in the vectors: the sessions, and the status
/// changes as sparse `[index, status]` pairs.
#[derive(Serialize, Deserialize)]
struct BatchJson {
    sessions: Vec<u64>,
    statuses: Vec<(usize, Status)>,
}

impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let json = BatchJson {
            sessions: self.iter().map(|(id, _)| id).collect(),
            statuses: self.iter().enumerate().filter_map(|(i, (_, st))| st.map(|st| (i, st))).collect(),
        };
        json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = BatchJson::deserialize(d)?;
        let mut entries: Vec<BatchEntry> = json.sessions.iter().map(|&id| (id, None)).collect();
        for (i, status) in json.statuses {
            let entry = entries.get_mut(i).ok_or_else(|| serde::de::Error::custom("status index out of range"))?;
            entry.1 = Some(status);
        }
        Batch::encode(&entries).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries_strategy() -> impl Strategy<Value = Vec<BatchEntry>> {
        let status = prop_oneof![
            8 => Just(None),
            1 => (1u8..=4).prop_map(|s| Status::try_from(s).ok()),
        ];
        (any::<u64>(), prop::collection::vec((0u64..1 << 20, status), 0..300)).prop_map(|(start, steps)| {
            let mut id = start >> 8;
            let mut out = Vec::with_capacity(steps.len());
            for (step, status) in steps {
                out.push((id, status));
                match id.checked_add(step + 1) {
                    Some(next) => id = next,
                    None => break,
                }
            }
            out
        })
    }

    #[test]
    fn worked_example_from_the_spec() {
        let entries = [(1000, None), (1001, Some(Status::Away)), (1005, None)];
        let batch = Batch::encode(&entries).unwrap();
        // count 3, flags 1, first 1000 (e8 07), width 2, bits 00 11 | 010 | 010 | padding = 34 80.
        assert_eq!(hex::encode(batch.as_bytes()), "0301e807023480");
        assert_eq!(batch.iter().collect::<Vec<_>>(), entries);
    }

    #[test]
    fn consecutive_ids_cost_no_gap_bits() {
        let entries: Vec<_> = (7..7 + 1000).map(|id| (id, None)).collect();
        let batch = Batch::encode(&entries).unwrap();
        assert_eq!(hex::encode(batch.as_bytes()), "e807000700");
    }

    #[test]
    fn rejects_unsorted_duplicate_offline_and_oversized_input() {
        assert_eq!(Batch::encode(&[(2, None), (1, None)]), Err(BatchError::NotAscending));
        assert_eq!(Batch::encode(&[(2, None), (2, None)]), Err(BatchError::NotAscending));
        assert_eq!(Batch::encode(&[(2, Some(Status::Offline))]), Err(BatchError::OfflineStatus));
        let many: Vec<_> = (0..=limits::MAX_BATCH as u64).map(|id| (id, None)).collect();
        assert_eq!(Batch::encode(&many), Err(BatchError::TooMany));
    }

    #[test]
    fn overflowing_ids_are_malformed() {
        // first = u64::MAX - 1, width 1, two gaps of 1 (step 2 each): overflows.
        let mut body = BytesMut::new();
        varint::put(&mut body, 3);
        body.put_u8(0);
        varint::put(&mut body, u64::MAX - 1);
        body.put_u8(1);
        body.put_u8(0b1100_0000);
        let err = Batch::parse(body.freeze()).unwrap_err();
        assert_eq!(err.detail, "batch id overflows");
    }

    /// Found by the `batch_unpacker` fuzz target: consecutive ids (width 0)
    /// from u64::MAX used to wrap around to 0.
    #[test]
    fn consecutive_ids_past_the_top_are_malformed() {
        let body = hex::decode("1200ffffffffffffffffff0100").unwrap();
        assert_eq!(BatchView::parse(&body).unwrap_err().detail, "batch id overflows");
    }

    proptest! {
        #[test]
        fn round_trip(entries in entries_strategy()) {
            let batch = Batch::encode(&entries).unwrap();
            prop_assert_eq!(batch.iter().collect::<Vec<_>>(), entries.clone());
            let reparsed = Batch::parse(batch.as_bytes().clone()).unwrap();
            prop_assert_eq!(reparsed.len(), entries.len());
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(view) = BatchView::parse(&body) {
                prop_assert_eq!(view.iter().count(), view.len());
            }
        }
    }
}
