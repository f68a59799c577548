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
//! - `feed` — posts, the social graph, home timelines by pull, push and
//!   hybrid, cursor pages over hot and cold items (sans-IO).
//! - `auth` — the server secret, signed tokens and UDP key derivation.
//! - `store` — the durable store in the data dir (fjall): last-seen times,
//!   posts, the social graph, group commit, outage detection and reopening.
//! - `server` — the tokio shells: listeners with connection caps, per-session
//!   rate limits, connections, UDP receive loops, the fanout pool, the expiry
//!   ticker, startup and graceful shutdown, systemd notification and socket
//!   activation, SIGHUP reload.
//! - `admin` — the HTTP admin listener: Prometheus metrics, health probes,
//!   the JSON presence API.
//! - `logging` — the log subscriber (journald-friendly under systemd) and
//!   its reloadable filter.
//! - `client` — the async client SDK: connection, heartbeats, reconnection,
//!   presence and feed requests, watch and live streams.
//! - `ctl` — `heartline ctl`, the command line for a person at a running
//!   daemon (over `client`).
//!
//! The binary `heartline` (src/main.rs) is a thin shell over this library.

pub mod admin;
pub mod auth;
pub mod client;
pub mod config;
pub mod ctl;
pub mod feed;
pub mod logging;
pub mod presence;
pub mod protocol;
pub mod server;
pub mod store;
