//! heartline, the daemon: who is online right now, and what they posted.
//!
//! # Layers
//!
//! The workspace's crates are its layers; each may use only those below it,
//! so a wrong import fails to compile:
//!
//! ```text
//! heartline (this crate: the daemon)      heartline-loadgen
//!        |        \                           |
//!        |     heartline-client (the SDK) -----+
//!        |         |
//! heartline-core   |   presence, feed, the connection machine (sans-IO)
//!        \         |
//!        heartline-proto                 the wire protocol v1 (sans-IO)
//! ```
//!
//! # Layout
//!
//! - `config` — settings: defaults, TOML file, `HEARTLINE_*` environment,
//!   flags.
//! - `auth` — the secret's file; re-exports the token format of
//!   `heartline_proto::auth`.
//! - `store` — the durable store in the data dir (fjall): last-seen times,
//!   posts, the social graph, group commit, outage detection and reopening.
//! - `server` — the tokio shells around `heartline_core`'s connection
//!   machine: the composition root (`start`), one transport-agnostic driver,
//!   the TCP and UDP shells, the registry of connections, the feed shell
//!   and its fanout queue, the expiry ticker, graceful shutdown, systemd
//!   notification and socket activation, SIGHUP reload.
//! - `cluster` — membership in a cluster over NATS JetStream: this node's
//!   key in the members' bucket, the watch, the latest map (the decisions
//!   are `heartline_core::cluster`'s).
//! - `admin` — the HTTP admin listener: Prometheus metrics, health probes,
//!   the JSON presence API; it reads the server through a `Backend`
//!   snapshot and never imports `server`.
//! - `metrics` — the counters and histograms the server records and the
//!   admin listener renders.
//! - `logging` — the log subscriber (journald-friendly under systemd) and
//!   its reloadable filter.
//! - `ctl` — `heartline ctl`, the command line for a person at a running
//!   daemon (over `heartline_client`).
//!
//! The binary `heartline` (src/main.rs) is a thin shell over this library.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod store;
