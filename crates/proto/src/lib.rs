//! The heartline wire protocol, version 1: typed messages, their byte
//! layout, TCP framing, heartbeat delta compression, gateway batches and UDP
//! datagrams. `protocol-spec/SPEC.md` is the normative text; this module is
//! its reference implementation.
//!
//! Sans-IO: nothing here touches a socket or reads a clock. Time and keys
//! are passed in, so every function can be unit-tested, property-tested and
//! fuzzed. Decoding never panics on any input and checks every count and
//! length against [`limits`] before reserving memory; byte payloads are
//! `Bytes` slices of the received frame, never copies.
//!
//! # Layout
//!
//! - [`message`], [`codec`] — every message type and its byte layout.
//! - [`frame`] — TCP framing (`encode_frame`; with the `codec` feature, the
//!   tokio-util `FrameCodec` and `MessageCodec`).
//! - [`heartbeat`], [`varint`] — heartbeat delta compression.
//! - [`batch`] — bit-packed gateway batches.
//! - [`udp`] — UDP datagrams, their tags and the replay window.
//! - [`auth`] — the token format, its signing and checks, and UDP key
//!   derivation (the secret's file lives in the daemon).
//! - [`error`] — decode errors and the protocol's error codes.
//! - [`route`] — a user's partition and a partition's owner in a cluster.
//!
//! Nothing here depends on tokio's I/O, a store or a server.

#![deny(unsafe_code)]

pub mod auth;
pub mod batch;
pub mod codec;
pub mod error;
pub mod frame;
pub mod heartbeat;
pub mod message;
mod reader;
pub mod route;
pub mod udp;
pub mod varint;

pub use batch::{Batch, BatchEntry, BatchError, BatchView};
pub use error::{DecodeError, ErrorCode};
pub use frame::{encode_frame, FrameCodec, FrameError, MessageCodec};
pub use heartbeat::HeartbeatState;
pub use message::*;

/// The protocol version this implementation speaks.
pub const VERSION: u8 = 1;

/// Hard limits of protocol v1 (SPEC.md §Limits). A server may configure
/// lower ones; it never accepts more.
pub mod limits {
    /// Type byte plus body of one TCP frame.
    pub const MAX_FRAME: usize = 1 << 20;
    /// User ids per WATCH, UNWATCH or QUERY, and entries per PRESENCE list.
    pub const MAX_IDS: usize = 1_000;
    /// Entries per OPEN, OPENED, CLOSE and batch heartbeat.
    pub const MAX_BATCH: usize = 65_536;
    pub const MAX_TOKEN: usize = 1_024;
    pub const MAX_STATUS_TEXT: usize = 128;
    pub const MAX_ERROR_TEXT: usize = 256;
    /// Post payload; servers default to 4 KiB.
    pub const MAX_PAYLOAD: usize = 65_536;
    /// Items per timeline page.
    pub const MAX_PAGE: usize = 100;
    /// Largest UDP datagram accepted.
    pub const MAX_DATAGRAM: usize = 65_507;
}
