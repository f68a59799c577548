//! Unsigned LEB128 varints and zigzag, as SPEC.md §Conventions defines them.
//!
//! Decoding is strict: overlong (non-minimal) and overflowing encodings are
//! rejected, so every value has exactly one encoding and the conformance
//! vectors can be checked in both directions.

use bytes::BufMut;

/// Most bytes a u64 varint takes.
pub const MAX_LEN: usize = 10;

/// How many bytes `value` takes as a varint.
pub const fn len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as a varint.
pub fn put(dst: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        dst.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// Why a varint could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// Longer than needed, or more than 64 bits.
    NonCanonical,
}

/// Reads a varint from the front of `src`; returns the value and its length.
pub fn get(src: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for (i, &byte) in src.iter().enumerate().take(MAX_LEN) {
        let low = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && byte > 1 {
            return Err(VarintError::NonCanonical);
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            // A trailing zero group means a shorter encoding existed.
            if byte == 0 && i > 0 {
                return Err(VarintError::NonCanonical);
            }
            return Ok((value, i + 1));
        }
    }
    if src.len() >= MAX_LEN {
        Err(VarintError::NonCanonical)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Maps a signed integer onto an unsigned one, small magnitudes first.
pub const fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub const fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, v);
        out
    }

    #[test]
    fn known_encodings() {
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(encode(u64::MAX), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn rejects_overlong_overflow_and_truncation() {
        assert_eq!(get(&[0x80, 0x00]), Err(VarintError::NonCanonical));
        assert_eq!(get(&[0xff; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>()), Err(VarintError::NonCanonical));
        assert_eq!(get(&[0xff; 11]), Err(VarintError::NonCanonical));
        assert_eq!(get(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(get(&[]), Err(VarintError::Truncated));
    }

    #[test]
    fn zigzag_table() {
        let table = [(0i64, 0u64), (-1, 1), (1, 2), (-2, 3), (2, 4), (i64::MAX, u64::MAX - 1), (i64::MIN, u64::MAX)];
        for (n, z) in table {
            assert_eq!(zigzag(n), z);
            assert_eq!(unzigzag(z), n);
        }
    }

    proptest! {
        #[test]
        fn round_trip(v: u64) {
            let bytes = encode(v);
            prop_assert_eq!(bytes.len(), len(v));
            prop_assert_eq!(get(&bytes), Ok((v, bytes.len())));
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = get(&bytes);
        }
    }
}
