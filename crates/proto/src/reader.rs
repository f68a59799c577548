//! A bounds-checked cursor over one frame body or datagram.
//!
//! Every read checks what is left before touching it, so hostile input ends in
//! a [`DecodeError`], never a panic. Byte fields are split off the input
//! `Bytes` without copying.

use bytes::{Buf, Bytes};

use super::error::{DecodeError, ErrorCode};
use super::varint::{self, VarintError};

pub(crate) struct Reader {
    buf: Bytes,
    /// The request id once read, so later errors can name the request.
    req: u64,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, req: 0 }
    }

    pub(crate) fn error(&self, code: ErrorCode, detail: &'static str) -> DecodeError {
        DecodeError { code, req: self.req, detail }
    }

    pub(crate) fn malformed(&self, detail: &'static str) -> DecodeError {
        self.error(ErrorCode::Malformed, detail)
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(self.malformed(what))
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        self.need(N, what)?;
        let mut out = [0; N];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match varint::get(&self.buf) {
            Ok((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            Err(VarintError::Truncated | VarintError::NonCanonical) => Err(self.malformed(what)),
        }
    }

    pub(crate) fn varint32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let value = self.varint(what)?;
        u32::try_from(value).map_err(|_| self.malformed(what))
    }

    /// Reads the request id that starts every request and reply.
    pub(crate) fn req(&mut self) -> Result<u64, DecodeError> {
        let req = self.varint("req")?;
        self.req = req;
        Ok(req)
    }

    /// Reads a count, checked against `max` (error `over`) and against the
    /// bytes left given that each entry takes at least `min_entry` bytes, so
    /// the caller may reserve `count` entries without trusting the peer.
    pub(crate) fn count(
        &mut self,
        max: usize,
        over: ErrorCode,
        min_entry: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = self.varint(what)?;
        if count > max as u64 {
            return Err(self.error(over, what));
        }
        let count = count as usize;
        if count * min_entry > self.buf.len() {
            return Err(self.malformed(what));
        }
        Ok(count)
    }

    /// A length-prefixed byte string of at most `max` bytes (error `over`).
    pub(crate) fn bytes(&mut self, max: usize, over: ErrorCode, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.varint(what)?;
        if len > max as u64 {
            return Err(self.error(over, what));
        }
        self.need(len as usize, what)?;
        Ok(self.buf.split_to(len as usize))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fails unless the input was consumed exactly.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes"))
        }
    }
}
