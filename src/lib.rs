//! heartline: who is online right now, and what they posted.
//!
//! # Layout
//!
//! - `protocol` — the wire protocol v1 (sans-IO): messages, codec, TCP
//!   framing, heartbeat delta compression, gateway batches, UDP datagrams.
//!   `protocol-spec/SPEC.md` is its normative description.
//!
//! The binary `heartline` (src/main.rs) is a thin shell over this library.

pub mod protocol;
