//! heartline's sans-IO core: what the daemon decides, with no socket, no
//! clock and no disk. Every call takes the time (`now_ms`, unix
//! milliseconds) and returns what it caused; the daemon's tokio shells
//! carry it out.
//!
//! # Layout
//!
//! - [`presence`] — sessions per device, each user's aggregated status,
//!   expiry, grace windows, watches and the privacy policy point.
//! - [`conn`] — one connection's protocol state machine (SPEC.md §5), the
//!   same for every transport: frames in, effects out.
//! - [`cluster`] — cluster membership from the members' bucket, users to
//!   partitions, partitions to members by rendezvous hashing, the versioned
//!   map.
//! - [`remote`] — presence of users other nodes own, as this node follows
//!   them: watched users by partition, their views in version order.
//! - [`feed`] — posts, the social graph, home timelines by pull, push and
//!   hybrid, cursor pages over hot and cold items.
//!
//! Depends only on `heartline-proto`; nothing here may depend on tokio,
//! the store or the server.

#![deny(unsafe_code)]

pub mod cluster;
pub mod conn;
pub mod feed;
pub mod presence;
pub mod remote;
