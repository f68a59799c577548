//! The daemon's settings: embedded defaults, then a TOML file, then
//! `HEARTLINE_*` environment variables, then command-line flags, each layer
//! overriding the one before.
//!
//! Owns names, defaults and validation of every setting. It must not act on
//! them (no sockets, no files beyond reading the config file).
//!
//! Environment variables name a setting by its path, upper-cased, with `__`
//! between sections: `HEARTLINE_LISTEN`, `HEARTLINE_PRESENCE__GRACE=10s`.
//! Only variables whose first part names a top-level setting or section are
//! read: `HEARTLINE_TOKEN` (for `heartline ctl`) or `HEARTLINE_PORT`
//! (Kubernetes service links) are left alone, while a typo inside a section
//! (`HEARTLINE_LIMITS__MAX_FRAMEE`) is refused like one in the file.
//! Durations are written as `30s`, `5m`, `250ms`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use heartline_core::presence::PresenceConfig;
use heartline_proto::limits;

/// Everything `heartline serve` can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP address for sessions, watches and the feed.
    pub listen: SocketAddr,
    /// UDP address for heartbeats.
    pub udp: SocketAddr,
    /// Where the secret and the durable store live; created if missing.
    pub data_dir: PathBuf,
    /// Log filter (`info`, `heartline=debug`, …); `RUST_LOG` overrides it.
    /// The storage engine's crates stay at warn unless it names them.
    pub log: String,
    /// `text` (for people) or `json` (one object per line).
    pub log_format: crate::logging::LogFormat,
    pub presence: Presence,
    pub limits: Limits,
    pub store: Store,
    pub admin: Admin,
    pub auth: Auth,
    pub jwt: Jwt,
    pub feed: Feed,
    pub websocket: WebSocket,
    pub tls: Tls,
    /// Membership in a cluster of nodes over NATS JetStream (docs/cluster.md);
    /// absent: this node runs alone and opens no NATS connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// A cluster of heartline nodes over NATS JetStream (docs/cluster.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// NATS server URLs to connect to (a seed list: one reachable is enough).
    pub nats: Vec<String>,
    /// This node's name in the cluster (`[A-Za-z0-9_-]`, at most 64 bytes,
    /// unique); unset: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Partitions users are spread over; fixed for the cluster's life.
    pub partitions: u32,
    /// The address clients are sent to for the users this node owns
    /// (`host:port`); unset: `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The WebSocket URL clients are sent to for the users this node owns
    /// (`ws://host:port/path` or `wss://…`); unset: the `[websocket]`
    /// listener's when it is enabled, else none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_ws: Option<String>,
    /// The address TLS clients are sent to for the users this node owns
    /// (`host:port`); unset: the `[tls]` listener's when it is enabled,
    /// else none (a TLS client redirected here tries its other addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_tls: Option<String>,
    /// The JetStream key-value bucket of the members.
    pub bucket: String,
    /// Copies of the bucket JetStream keeps; unset: as many as `nats` has
    /// URLs, at most 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    /// A member not refreshed for this long is removed.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often this node refreshes its key.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            nats: vec!["nats://127.0.0.1:4222".into()],
            node: None,
            partitions: heartline_core::cluster::DEFAULT_PARTITIONS,
            advertise: None,
            advertise_ws: None,
            advertise_tls: None,
            bucket: "heartline-members".into(),
            replicas: None,
            ttl: Duration::from_secs(5),
            refresh: Duration::from_secs(1),
        }
    }
}

impl Cluster {
    /// The bucket's replicas: as configured, else min(3, seed URLs).
    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or(self.nats.len().clamp(1, 3))
    }

    fn validate(&self) -> Result<(), String> {
        use heartline_core::cluster::{valid_name, MAX_PARTITIONS};
        use heartline_proto::route::MAX_ADDR;
        if self.nats.is_empty() {
            return Err("cluster.nats must name at least one NATS server".into());
        }
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(format!("cluster.partitions must be between 1 and {MAX_PARTITIONS}"));
        }
        if self.node.as_deref().is_some_and(|n| !valid_name(n)) {
            return Err("cluster.node must be 1 to 64 of A-Z, a-z, 0-9, _ and -".into());
        }
        let long = |a: &Option<String>| a.as_ref().is_some_and(|a| a.is_empty() || a.len() > MAX_ADDR);
        if long(&self.advertise) || long(&self.advertise_ws) || long(&self.advertise_tls) {
            return Err(format!(
                "cluster.advertise, cluster.advertise_ws and cluster.advertise_tls must be 1 to {MAX_ADDR} bytes"
            ));
        }
        if self.bucket.is_empty() || !self.bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err("cluster.bucket must be letters, digits, _ and -".into());
        }
        if !(1..=5).contains(&self.replicas()) {
            return Err("cluster.replicas must be between 1 and 5".into());
        }
        if self.refresh.is_zero() || self.ttl < self.refresh * 2 || self.ttl > Duration::from_secs(600) {
            return Err("cluster.ttl must be at least twice cluster.refresh and at most 10 min".into());
        }
        Ok(())
    }
}

/// Sections that are absent by default, so the serialized defaults do not
/// name them: the environment reader must know them all the same.
const OPTIONAL_SECTIONS: [&str; 1] = ["cluster"];

/// The WebSocket listener (RFC 6455, path `/v1/ws`; SPEC.md §13).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocket {
    /// Whether the WebSocket listener runs at all.
    pub enabled: bool,
    /// Address of the WebSocket listener.
    pub listen: SocketAddr,
    /// Serve `wss://` (TLS, with `tls.cert` and `tls.key`) instead of `ws://`.
    pub tls: bool,
    /// Browser origins allowed to connect (`scheme://host[:port]`, compared
    /// without regard to case). Empty: only loopback origins
    /// (`http://localhost:8080`, `https://127.0.0.1`, `http://[::1]`). `"*"`
    /// allows every origin. A request without an `Origin` header is not a
    /// browser's and is always allowed.
    pub allowed_origins: Vec<String>,
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7402)),
            tls: false,
            allowed_origins: Vec::new(),
        }
    }
}

/// TLS (rustls): the certificate, and the TCP listener that uses it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// Address of a TCP listener that speaks TLS (the protocol inside is
    /// the same as on `listen`); unset: no such listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// PEM file with the certificate chain, leaf first. Read again on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Read again on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl Tls {
    /// Whether any listener needs the certificate.
    pub fn needed(config: &Config) -> bool {
        config.tls.listen.is_some() || (config.websocket.enabled && config.websocket.tls)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Presence {
    /// How often clients heartbeat (announced in WELCOME).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long a session lives without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long a session whose connection was lost still counts.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Live sessions one user may hold.
    pub max_sessions_per_user: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Time a new connection has to send HELLO.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Largest frame accepted (type and body), at most 1 MiB.
    pub max_frame: usize,
    /// Users one connection may watch.
    pub max_watch: usize,
    /// Frames and presence entries waiting to be written to one connection
    /// before it counts as a slow consumer. Pending presence entries coalesce
    /// per user, so they never outnumber the watch set: keep this above
    /// `max_watch`, and only a peer that stops reading its replies overflows.
    pub outbound_queue: usize,
    /// How long a shutdown waits for connections to drain after GOAWAY.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// TCP connections open at once, HELLO done or not. At start it is
    /// lowered to fit the descriptor limit (RLIMIT_NOFILE) less a reserve.
    pub max_connections: usize,
    /// TCP connections open at once from one IPv4 address or one IPv6 /64;
    /// 0 turns the per-address cap off (behind a proxy every client shares
    /// its address).
    pub max_connections_per_ip: usize,
    /// Status changes (SET_STATUS, HEARTBEAT with a status) one client
    /// session may make per second, sustained; 0 turns the limit off.
    pub status_rate: f64,
    /// Status changes a client session may make at once before the rate applies.
    pub status_burst: u32,
    /// Posts (PUBLISH) one client session may make per second, sustained; 0
    /// turns the limit off.
    pub post_rate: f64,
    /// Posts a client session may make at once before the rate applies.
    pub post_burst: u32,
    /// Fan-out not yet done, in readers (followers to reach), past which
    /// PUBLISH and DELETE are refused with UNAVAILABLE before anything is
    /// written; 0 refuses every one.
    pub fanout_queue: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// `fsync`: a write is acknowledged once it is on disk; `os`: once the
    /// kernel has it (survives the process dying, not the machine).
    pub durability: crate::store::Durability,
}

/// The HTTP admin listener: metrics, health and the JSON API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Address of the HTTP admin listener.
    pub listen: SocketAddr,
    /// Bearer token the admin API requires (`Authorization: Bearer …`);
    /// mandatory when `listen` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// How long tokens signed with the secret replaced by a rotation
    /// (SIGHUP) are still accepted.
    #[serde(with = "humantime_serde")]
    pub rotation_window: Duration,
}

/// JSON Web Tokens (RFC 7519) accepted in HELLO besides the binary tokens
/// (SPEC.md §12.1). Heartline only verifies: the backend that mints them
/// holds the HS256 secret or the private keys. No key: JWTs get BAD_TOKEN.
/// Read at start only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Jwt {
    /// File holding the HS256 secret (at least 32 bytes; surrounding
    /// whitespace ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public keys (SPKI, `BEGIN PUBLIC KEY`), each Ed25519 (EdDSA) or
    /// P-256 (ES256).
    pub public_keys: Vec<PathBuf>,
    /// When set, the JWT's `aud` must contain it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// When set, the JWT's `iss` must equal it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 7401)), token: None }
    }
}

impl Default for Auth {
    fn default() -> Self {
        // As long as the default `heartline token --ttl`.
        Self { rotation_window: Duration::from_secs(24 * 3_600) }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Feed {
    /// How home timelines are built: `pull`, `push` (fanout on write) or
    /// `hybrid` (push for ordinary authors, pull for celebrities).
    pub strategy: heartline_core::feed::Strategy,
    /// Largest post payload accepted, in bytes (the protocol allows 65,536).
    pub max_payload: usize,
    /// Items kept per home inbox.
    pub inbox_cap: usize,
    /// Followers from which an author is pulled rather than pushed (hybrid).
    pub celebrity_followers: usize,
    /// Followers active within this window get pushes (hybrid).
    #[serde(with = "humantime_serde")]
    pub active_window: Duration,
    /// Newest posts per author always kept in memory…
    pub hot_items: usize,
    /// …and every post younger than this.
    #[serde(with = "humantime_serde")]
    pub hot_window: Duration,
    /// Users one user may follow.
    pub max_following: usize,
    /// This server's node id in post ids (0..=1023).
    pub node: u16,
    /// How often posts past the hot window and inboxes of inactive readers
    /// leave memory.
    #[serde(with = "humantime_serde")]
    pub archive_interval: Duration,
}

impl Default for Feed {
    fn default() -> Self {
        let feed = heartline_core::feed::FeedConfig::default();
        Self {
            strategy: feed.strategy,
            max_payload: 4_096,
            inbox_cap: feed.inbox_cap,
            celebrity_followers: feed.celebrity_followers,
            active_window: Duration::from_millis(feed.active_window_ms),
            hot_items: feed.hot_items,
            hot_window: Duration::from_millis(feed.hot_window_ms),
            max_following: feed.max_following,
            node: 0,
            archive_interval: Duration::from_secs(60),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], 7400));
        Self {
            listen: local,
            udp: local,
            data_dir: PathBuf::from("heartline-data"),
            log: "info".into(),
            log_format: crate::logging::LogFormat::Text,
            presence: Presence::default(),
            limits: Limits::default(),
            store: Store::default(),
            admin: Admin::default(),
            auth: Auth::default(),
            jwt: Jwt::default(),
            feed: Feed::default(),
            websocket: WebSocket::default(),
            tls: Tls::default(),
            cluster: None,
        }
    }
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            ttl: Duration::from_secs(90),
            grace: Duration::from_secs(5),
            max_sessions_per_user: 32,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            max_frame: limits::MAX_FRAME,
            max_watch: 10_000,
            outbound_queue: 16_384,
            drain_timeout: Duration::from_secs(5),
            // Within the unit's LimitNOFILE (1,048,576) less the descriptor
            // reserve, so the shipped setup starts without the clamp warning.
            max_connections: 1_000_000,
            // Above a busy NAT, below a single host's flood.
            max_connections_per_ip: 1_000,
            status_rate: 1.0,
            status_burst: 10,
            post_rate: 1.0,
            post_burst: 20,
            fanout_queue: 4_194_304,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable that cannot be read: TOML syntax, an unknown key,
    /// a value of the wrong type. The message names the file and the
    /// setting's path, or the variable ([`describe`]).
    #[error("{0}")]
    Parse(String),
    /// Values that read well but cannot work together or are out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Settings given on the command line; `None` leaves the lower layers alone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Layers the defaults, `file` (if any), the environment and `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let figment = figment.merge(env()).merge(Serialized::defaults(overrides));
        let config: Config = figment.extract().map_err(|e| ConfigError::Parse(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The names of the top-level settings and sections (`listen`, `limits`,
    /// …), as serde spells them: taken from the serialized defaults, so a new
    /// field is known without another list to keep in step.
    pub fn top_level_keys() -> Vec<String> {
        let mut keys = match toml::Table::try_from(Config::default()) {
            Ok(table) => table.keys().cloned().collect(),
            // Cannot happen (the defaults always serialize); read nothing then.
            Err(_) => Vec::new(),
        };
        keys.extend(OPTIONAL_SECTIONS.map(String::from));
        keys
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        let p = &self.presence;
        if p.heartbeat_interval.is_zero() || p.heartbeat_interval > Duration::from_secs(3_600) {
            return invalid("presence.heartbeat_interval must be between 1 ms and 1 h");
        }
        if p.ttl < p.heartbeat_interval || p.ttl > Duration::from_secs(4 * 3_600) {
            return invalid("presence.ttl must be at least one heartbeat interval and at most 4 h");
        }
        if p.grace > Duration::from_secs(600) {
            return invalid("presence.grace must be at most 10 min");
        }
        if p.max_sessions_per_user == 0 {
            return invalid("presence.max_sessions_per_user must be at least 1");
        }
        if self.limits.max_frame < 4_096 || self.limits.max_frame > limits::MAX_FRAME {
            return invalid("limits.max_frame must be between 4096 and 1048576");
        }
        if self.feed.max_payload > limits::MAX_PAYLOAD {
            return invalid("feed.max_payload must be at most 65536");
        }
        if self.feed.node > heartline_core::feed::MAX_NODE {
            return invalid("feed.node must be at most 1023");
        }
        if self.feed.inbox_cap == 0 || self.feed.hot_items == 0 {
            return invalid("feed.inbox_cap and feed.hot_items must be at least 1");
        }
        if self.limits.outbound_queue == 0 {
            return invalid("limits.outbound_queue must be at least 1");
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections must be at least 1");
        }
        let l = &self.limits;
        if ![l.status_rate, l.post_rate].iter().all(|r| r.is_finite() && *r >= 0.0) {
            return invalid("limits.status_rate and limits.post_rate must be 0 (off) or a positive number");
        }
        if l.status_burst == 0 || l.post_burst == 0 {
            return invalid("limits.status_burst and limits.post_burst must be at least 1");
        }
        if !self.admin.listen.ip().is_loopback() && self.admin.token.as_deref().is_none_or(str::is_empty) {
            return invalid("admin.token is required when admin.listen is not a loopback address");
        }
        if Tls::needed(self) && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return invalid("tls.cert and tls.key are required when tls.listen is set or websocket.tls is true");
        }
        if self.websocket.allowed_origins.iter().any(|o| o != "*" && !o.contains("://")) {
            return invalid("websocket.allowed_origins holds origins (scheme://host[:port]) or \"*\"");
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate().map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// The presence engine's view of these settings.
    pub fn presence(&self) -> PresenceConfig {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        PresenceConfig {
            ttl_ms: ms(self.presence.ttl),
            grace_ms: ms(self.presence.grace),
            max_sessions_per_user: self.presence.max_sessions_per_user,
        }
    }

    /// The feed engine's view of these settings.
    pub fn feed(&self) -> heartline_core::feed::FeedConfig {
        let f = &self.feed;
        heartline_core::feed::FeedConfig {
            strategy: f.strategy,
            inbox_cap: f.inbox_cap,
            celebrity_followers: f.celebrity_followers,
            active_window_ms: f.active_window.as_millis() as u64,
            hot_items: f.hot_items,
            hot_window_ms: f.hot_window.as_millis() as u64,
            max_following: f.max_following,
            ..heartline_core::feed::FeedConfig::default()
        }
    }

    /// The effective settings as TOML, for `check-config` and the logs.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The `HEARTLINE_*` variables that name a setting: those whose first part
/// (before any `__`) is a top-level setting or section. Others, such as
/// `HEARTLINE_CONFIG`, `HEARTLINE_TOKEN` or Kubernetes' `HEARTLINE_PORT`,
/// belong to someone else. Within a known section every key is read, so a
/// misspelt one is still refused.
fn env() -> Env {
    let known = Config::top_level_keys();
    Env::prefixed("HEARTLINE_").split("__").filter(move |key| {
        let first = key.as_str().split('.').next().unwrap_or_default();
        known.iter().any(|k| k.eq_ignore_ascii_case(first))
    })
}

/// figment's errors in the operator's words, one line each (a TOML syntax
/// error keeps its excerpt): where (the file and the setting's path, or the
/// variable and the setting), then what. None of figment's own vocabulary
/// (profiles such as `default.`, provider names) gets through.
fn describe(error: figment::Error) -> String {
    error.into_iter().map(|e| describe_one(&e)).collect::<Vec<_>>().join("\n")
}

fn describe_one(e: &figment::Error) -> String {
    use figment::error::Kind;
    let what = match &e.kind {
        Kind::UnknownField(_, expected) => format!("unknown setting; expected one of {}", expected.join(", ")),
        Kind::UnknownVariant(found, expected) => {
            format!("unknown value `{found}`; expected one of {}", expected.join(", "))
        }
        Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
            format!("expected {}, found {found}", plain(expected))
        }
        kind => kind.to_string().trim_end().to_owned(),
    };
    let key = e.path.join(".");
    let metadata = e.metadata.as_ref();
    let from_env = metadata.is_some_and(|m| m.source.is_none() && m.name.contains("environment variable"));
    match metadata.and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(file)) if key.is_empty() => format!("{}: {what}", file.display()),
        Some(figment::Source::File(file)) => format!("{}: {key}: {what}", file.display()),
        _ if from_env => format!("HEARTLINE_{} ({key}): {what}", e.path.join("__").to_ascii_uppercase()),
        _ if key.is_empty() => what,
        _ => format!("{key}: {what}"),
    }
}

/// Serde's names for numbers, as a reader of the config file says them.
fn plain(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("heartline-config-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7400".parse().unwrap());
        assert_eq!(config.presence().ttl_ms, 90_000);
    }

    #[test]
    fn file_then_flags() {
        let path = write("layers", "data_dir = \"/tmp/x\"\n[presence]\ngrace = \"10s\"\n[limits]\npost_rate = 5\n");
        let overrides = Overrides { data_dir: Some("/tmp/y".into()), ..Overrides::default() };
        let config = Config::load(Some(&path), &overrides).unwrap();
        assert_eq!(config.presence.grace, Duration::from_secs(10));
        assert_eq!(config.limits.post_rate, 5.0, "a whole number is a rate too");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/y"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        let typo = write("typo", "[presence]\ngrase = \"10s\"\n");
        assert!(Config::load(Some(&typo), &Overrides::default()).is_err());
        let bad = write("bad", "[presence]\nheartbeat_interval = \"30s\"\nttl = \"10s\"\n");
        assert!(matches!(Config::load(Some(&bad), &Overrides::default()), Err(ConfigError::Invalid(_))));
        let rate = write("rate", "[limits]\npost_rate = -1\n");
        assert!(matches!(Config::load(Some(&rate), &Overrides::default()), Err(ConfigError::Invalid(_))));
        for path in [typo, bad, rate] {
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn parse_errors_name_the_file_and_the_setting_in_plain_words() {
        let message = |name: &str, text: &str| {
            let path = write(name, text);
            let error = Config::load(Some(&path), &Overrides::default()).unwrap_err();
            std::fs::remove_file(&path).unwrap();
            let message = error.to_string();
            let file = path.display().to_string();
            assert!(message.starts_with(&format!("{file}: ")), "{message}");
            assert!(!message.contains("default.") && !message.contains("TOML file"), "figment's words: {message}");
            message[file.len() + 2..].to_owned()
        };
        assert_eq!(
            message("unknown", "[feed]\nnode = 1\nstrategi = \"push\"\n"),
            "feed.strategi: unknown setting; expected one of strategy, max_payload, inbox_cap, celebrity_followers, \
             active_window, hot_items, hot_window, max_following, node, archive_interval"
        );
        assert_eq!(message("port", "listen = \"127.0.0.1:99999\"\n"), "listen: invalid socket address syntax");
        assert_eq!(
            message("duration", "[presence]\ngrace = \"5 parsecs\"\n"),
            "presence.grace: expected a duration, found string \"5 parsecs\""
        );
        assert_eq!(
            message("number", "[limits]\nmax_watch = \"many\"\n"),
            "limits.max_watch: expected a whole number, found string \"many\""
        );
        assert_eq!(
            message("variant", "[feed]\nstrategy = \"fast\"\n"),
            "feed.strategy: unknown value `fast`; expected one of pull, push, hybrid"
        );
        assert!(message("syntax", "listen = \"127.0.0.1:7400\n").contains("line 1, column"));
    }

    #[test]
    fn tls_needs_a_certificate_and_origins_are_checked() {
        let tls = write("tls", "[tls]\nlisten = \"127.0.0.1:7403\"\n");
        assert!(matches!(Config::load(Some(&tls), &Overrides::default()), Err(ConfigError::Invalid(_))));
        let wss = write("wss", "[websocket]\ntls = true\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
        let config = Config::load(Some(&wss), &Overrides::default()).unwrap();
        assert!(Tls::needed(&config) && config.tls.listen.is_none());
        let origin = write("origin", "[websocket]\nallowed_origins = [\"example.com\"]\n");
        assert!(matches!(Config::load(Some(&origin), &Overrides::default()), Err(ConfigError::Invalid(_))));
        for path in [tls, wss, origin] {
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn the_environment_reader_knows_every_top_level_setting() {
        // Derived from the serialized defaults: a top-level field that skips
        // serializing (an `Option` left `None`) would be missing here and its
        // variable ignored. Add a new field to this list too.
        let mut keys = Config::top_level_keys();
        keys.sort();
        let expected = [
            "admin",
            "auth",
            "cluster",
            "data_dir",
            "feed",
            "jwt",
            "limits",
            "listen",
            "log",
            "log_format",
            "presence",
            "store",
            "tls",
            "udp",
            "websocket",
        ];
        assert_eq!(keys, expected);
        assert!(!keys.iter().any(|k| k == "config" || k == "token" || k == "port"));
    }

    #[test]
    fn a_cluster_section_is_optional_and_checked() {
        assert_eq!(Config::default().cluster, None, "a single node unless told");
        assert!(!Config::default().to_toml().contains("cluster"));
        let path = write("cluster", "[cluster]\nnats = [\"nats://a:4222\", \"nats://b:4222\"]\nnode = \"n1\"\n");
        let config = Config::load(Some(&path), &Overrides::default()).unwrap();
        let cluster = config.cluster.clone().unwrap();
        assert_eq!((cluster.partitions, cluster.replicas(), cluster.node.as_deref()), (1_024, 2, Some("n1")));
        let again = write("cluster-again", &config.to_toml());
        assert_eq!(Config::load(Some(&again), &Overrides::default()).unwrap(), config);
        let bad = write("cluster-bad", "[cluster]\nttl = \"1s\"\nrefresh = \"1s\"\n");
        assert!(matches!(Config::load(Some(&bad), &Overrides::default()), Err(ConfigError::Invalid(_))));
        let name = write("cluster-name", "[cluster]\nnode = \"a.b\"\n");
        assert!(matches!(Config::load(Some(&name), &Overrides::default()), Err(ConfigError::Invalid(_))));
        let long = write("cluster-ws", &format!("[cluster]\nadvertise_ws = \"ws://{}\"\n", "h".repeat(251)));
        let refused = Config::load(Some(&long), &Overrides::default());
        assert!(matches!(refused, Err(ConfigError::Invalid(_))), "{refused:?}");
        for path in [path, again, bad, name, long] {
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let config = Config::default();
        let path = write("roundtrip", &config.to_toml());
        assert_eq!(Config::load(Some(&path), &Overrides::default()).unwrap(), config);
        std::fs::remove_file(path).unwrap();
    }
}
