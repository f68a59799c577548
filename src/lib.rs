//! heartline: who is online right now, and what they posted.
//!
//! # Layout
//!
//! - `protocol` — the wire protocol v1 (sans-IO): messages, codec, TCP
//!   framing, heartbeat delta compression, gateway batches, UDP datagrams.
//!   `protocol-spec/SPEC.md` is its normative description.
//! - `presence` — sessions, aggregated status, expiry, grace windows,
//!   watches and the privacy policy point (sans-IO: time is passed in).
//! - `config` — settings: defaults, TOML file, `HEARTLINE_*` environment,
//!   flags.
//! - `auth` — the server secret, signed tokens and UDP key derivation.
//! - `store` — the durable store in the data dir: last-seen times now, posts and the social graph later.
//!
//! - `server` — the tokio shells: listeners, connections, UDP receive
//!   loops, the expiry ticker, startup and graceful shutdown.
//!
//! The binary `heartline` (src/main.rs) is a thin shell over this library.

pub mod auth;
pub mod config;
pub mod presence;
pub mod protocol;
pub mod server;
pub mod store;
