//! What may change while the daemon runs, and SIGHUP, which changes it: the
//! token secrets, the `[jwt]` keys, the log filter, the limits (connection caps, rates,
//! per-connection bounds) and the TLS certificate (read again by
//! [`super::tls::Certs`]: new handshakes use it).
//!
//! Owns the swappable keyring, the limits read at run time and the diff
//! between the applied settings and a reloaded file. It must not touch
//! sockets, sessions or the store: everything else in a reloaded file waits
//! for a restart, and is logged as such.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::signal::unix::Signal;

use heartline_core::conn::rate::Rate;
use tokio_util::sync::CancellationToken;

use super::now_ms;
use crate::auth::{AuthError, Claims, Keyring, Secret};
use crate::config::{Config, ConfigError};

/// The token keyring, swapped whole on rotation.
///
/// A std `RwLock` rather than an atomic pointer: it is read once per HELLO,
/// next to an HMAC that costs far more than the uncontended lock.
pub struct Keys {
    ring: RwLock<Ring>,
}

struct Ring {
    keyring: Keyring,
    /// Unix seconds from which `keyring.previous` no longer counts.
    previous_until_s: u64,
}

impl Keys {
    pub fn new(current: Secret) -> Self {
        Self { ring: RwLock::new(Ring { keyring: Keyring { current, previous: None }, previous_until_s: 0 }) }
    }

    fn read(&self) -> RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// As [`Keyring::verify`], with the previous secret honoured only
    /// inside its rotation window.
    pub fn verify(&self, token: &[u8], now_unix_s: u64) -> Result<Claims, AuthError> {
        {
            let ring = self.read();
            if ring.keyring.previous.is_none() || now_unix_s < ring.previous_until_s {
                return ring.keyring.verify(token, now_unix_s);
            }
        }
        let mut ring = self.write();
        if ring.keyring.previous.is_some() && now_unix_s >= ring.previous_until_s {
            ring.keyring.previous = None;
            tracing::info!("rotation window over: tokens of the previous secret are no longer accepted");
        }
        ring.keyring.verify(token, now_unix_s)
    }

    /// A token for `claims`, signed with the current secret.
    pub fn issue(&self, claims: &Claims) -> Vec<u8> {
        self.read().keyring.issue(claims)
    }

    /// Makes `next` the current secret; the current one stays valid as the
    /// previous for `window`. Returns the old and new fingerprints, or `None`
    /// when `next` is the current secret already.
    pub fn rotate(&self, next: Secret, window: Duration, now_unix_s: u64) -> Option<(String, String)> {
        let mut ring = self.write();
        let (old, new) = (ring.keyring.current.fingerprint(), next.fingerprint());
        if old == new {
            return None;
        }
        ring.keyring.previous = Some(std::mem::replace(&mut ring.keyring.current, next));
        ring.previous_until_s = now_unix_s.saturating_add(window.as_secs());
        Some((old, new))
    }
}

/// The limits connections read when they need them, so a reload reaches
/// new connections (queue bound, handshake), every accept (connection caps),
/// every WATCH (watch cap) and every rate-limited request (rates). The one
/// place the server reads `[limits]` from: the few that a reload cannot
/// change (frame size, drain timeout) are here too, fixed at start.
#[derive(Debug)]
pub struct Limits {
    max_frame: usize,
    drain_timeout: Duration,
    max_watch: AtomicUsize,
    outbound_queue: AtomicUsize,
    handshake_timeout_ms: AtomicU64,
    max_connections: AtomicUsize,
    max_connections_per_ip: AtomicUsize,
    status: AtomicRate,
    post: AtomicRate,
    fanout_queue: AtomicUsize,
    /// The most connections the descriptor limit leaves room for; fixed at start.
    ceiling: Option<usize>,
}

#[derive(Debug, Default)]
struct AtomicRate {
    interval_us: AtomicU64,
    burst: AtomicU32,
}

impl AtomicRate {
    fn set(&self, rate: Rate) {
        self.interval_us.store(rate.interval_us, Ordering::Relaxed);
        self.burst.store(rate.burst, Ordering::Relaxed);
    }

    fn get(&self) -> Rate {
        Rate { interval_us: self.interval_us.load(Ordering::Relaxed), burst: self.burst.load(Ordering::Relaxed) }
    }
}

impl Limits {
    /// `ceiling`: connections the process can hold without running out of
    /// descriptors (`None`: no limit known); `max_connections` never exceeds it.
    pub fn new(config: &crate::config::Limits, ceiling: Option<usize>) -> Self {
        let limits = Self {
            max_frame: config.max_frame,
            drain_timeout: config.drain_timeout,
            max_watch: AtomicUsize::new(0),
            outbound_queue: AtomicUsize::new(0),
            handshake_timeout_ms: AtomicU64::new(0),
            max_connections: AtomicUsize::new(0),
            max_connections_per_ip: AtomicUsize::new(0),
            status: AtomicRate::default(),
            post: AtomicRate::default(),
            fanout_queue: AtomicUsize::new(0),
            ceiling,
        };
        limits.set(config);
        limits
    }

    fn set(&self, config: &crate::config::Limits) {
        self.max_watch.store(config.max_watch, Ordering::Relaxed);
        self.outbound_queue.store(config.outbound_queue, Ordering::Relaxed);
        let ms = u64::try_from(config.handshake_timeout.as_millis()).unwrap_or(u64::MAX);
        self.handshake_timeout_ms.store(ms, Ordering::Relaxed);
        let max_connections = match self.ceiling {
            Some(ceiling) if config.max_connections > ceiling => {
                tracing::warn!(
                    configured = config.max_connections,
                    applied = ceiling,
                    "limits.max_connections lowered to fit the open-file limit (raise LimitNOFILE for more)"
                );
                ceiling
            }
            _ => config.max_connections,
        };
        self.max_connections.store(max_connections, Ordering::Relaxed);
        self.max_connections_per_ip.store(config.max_connections_per_ip, Ordering::Relaxed);
        self.status.set(Rate::per_second(config.status_rate, config.status_burst));
        self.post.set(Rate::per_second(config.post_rate, config.post_burst));
        self.fanout_queue.store(config.fanout_queue, Ordering::Relaxed);
    }

    /// Largest frame accepted and announced in WELCOME; fixed at start.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// How long a shutdown waits for connections to leave; fixed at start.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    pub fn max_watch(&self) -> usize {
        self.max_watch.load(Ordering::Relaxed)
    }

    pub fn outbound_queue(&self) -> usize {
        self.outbound_queue.load(Ordering::Relaxed)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms.load(Ordering::Relaxed))
    }

    /// Connections open at once, after the descriptor clamp.
    pub fn max_connections(&self) -> usize {
        self.max_connections.load(Ordering::Relaxed)
    }

    /// Connections open at once from one address; 0 is no cap.
    pub fn max_connections_per_ip(&self) -> usize {
        self.max_connections_per_ip.load(Ordering::Relaxed)
    }

    /// Status changes of one client session.
    pub fn status_rate(&self) -> Rate {
        self.status.get()
    }

    /// Posts of one client session.
    pub fn post_rate(&self) -> Rate {
        self.post.get()
    }

    /// Fan-out outstanding, in readers, at which PUBLISH and DELETE are refused.
    pub fn fanout_queue(&self) -> usize {
        self.fanout_queue.load(Ordering::Relaxed)
    }
}

/// Settings a reload applies; every other difference needs a restart.
const RELOADABLE: [&str; 18] = [
    "log",
    "limits.max_watch",
    "limits.outbound_queue",
    "limits.handshake_timeout",
    "limits.max_connections",
    "limits.max_connections_per_ip",
    "limits.status_rate",
    "limits.status_burst",
    "limits.post_rate",
    "limits.post_burst",
    "limits.fanout_queue",
    "auth.rotation_window",
    "tls.cert",
    "tls.key",
    "jwt.hs256_secret_file",
    "jwt.public_keys",
    "jwt.audience",
    "jwt.issuer",
];
/// Settings whose values are never logged.
const SECRET_SETTINGS: [&str; 1] = ["admin.token"];

/// What a reload changes, and where the secret lives.
pub struct Reloadable {
    pub(crate) keys: Arc<Keys>,
    pub(crate) jwt: Arc<super::jwt::JwtSlot>,
    pub(crate) limits: Arc<Limits>,
    /// The certificate of the TLS listeners, if any.
    pub(crate) certs: Option<Arc<super::tls::Certs>>,
    pub(crate) secret_path: PathBuf,
    /// The settings in force.
    pub(crate) applied: Config,
    /// The STATUS of READY=1 at start (the listeners), sent again after each reload.
    pub(crate) status: String,
    pub(crate) stop: CancellationToken,
}

/// Reloads on every SIGHUP until the server stops. `hup` is registered by
/// the caller before the server starts, so a SIGHUP that arrives early is
/// not the default action (which ends the process).
pub async fn on_sighup(
    mut target: Reloadable,
    mut hup: Signal,
    load: impl Fn() -> Result<Config, ConfigError> + Send + 'static,
) {
    loop {
        tokio::select! {
            _ = target.stop.cancelled() => return,
            received = hup.recv() => if received.is_none() { return },
        }
        tracing::info!("SIGHUP: reloading the configuration and the token secret");
        target.reload_notifying(&load, super::systemd::tell);
    }
}

impl Reloadable {
    /// One SIGHUP: loads the file and applies it, between `RELOADING=1` (before the
    /// file is read) and `READY=1` (once it is applied, or refused) to the service
    /// manager through `tell`. READY=1 restores the STATUS line of the start, and
    /// says when the last reload was refused, as `systemctl status` shows it.
    pub(crate) fn reload_notifying(&mut self, load: impl FnOnce() -> Result<Config, ConfigError>, tell: impl Fn(&str)) {
        tell(&super::systemd::reloading());
        let status = match load() {
            Ok(next) => {
                self.reload(next);
                self.status.clone()
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the configuration is invalid; nothing changed");
                format!("{}; last reload refused: invalid configuration", self.status)
            }
        };
        tell(&format!("READY=1\nSTATUS={status}"));
    }

    /// Applies the reloadable part of `next` (compared with the settings in
    /// force) and the secret file, and logs each change and each setting
    /// that needs a restart.
    pub fn reload(&mut self, next: Config) {
        // Limits before the secret: a client that gets in with a token of the new
        // secret must find the new limits too (the reload is one event to it).
        self.limits.set(&next.limits);
        let now_s = now_ms() / 1000;
        match crate::auth::load_secret(&self.secret_path) {
            Ok(secret) => match self.keys.rotate(secret, next.auth.rotation_window, now_s) {
                Some((old, new)) => tracing::info!(
                    previous = %old,
                    current = %new,
                    window = %humantime::format_duration(next.auth.rotation_window),
                    "token secret rotated; tokens of the previous secret stay valid for the window"
                ),
                None => tracing::info!("token secret unchanged"),
            },
            Err(e) => tracing::error!(error = %e, "cannot read the secret file; keeping the current secret"),
        }
        // Read every time, as the secret file is: a key file may change under the same path.
        match self.jwt.reload(&next.jwt) {
            Ok(true) => tracing::info!("[jwt] keys read again"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "[jwt] keys refused; keeping the current ones"),
        }
        if let Some(certs) = &self.certs {
            match certs.reload(&next.tls) {
                Ok(()) => tracing::info!("TLS certificate read again; new handshakes use it"),
                Err(e) => tracing::error!(error = %e, "TLS certificate refused; keeping the current one"),
            }
        }
        let applied = &self.applied;
        for (key, (old, new)) in diff(applied, &next) {
            let (old, new) =
                if SECRET_SETTINGS.contains(&key.as_str()) { ("…", "…") } else { (&old[..], &new[..]) };
            if RELOADABLE.contains(&key.as_str()) {
                tracing::info!(setting = %key, from = %old, to = %new, "setting changed");
            } else {
                tracing::warn!(setting = %key, from = %old, to = %new, "setting changed in the file; takes effect at the next restart");
            }
        }
        if next.log != applied.log {
            match crate::logging::set_filter(&next.log) {
                Ok(true) => {}
                Ok(false) => tracing::info!("RUST_LOG is set and overrides the log setting"),
                Err(e) => tracing::error!(error = %e, "cannot apply the new log filter"),
            }
        }
        self.applied = next;
    }
}

/// Settings that differ, by dotted path, with their old and new values as TOML.
fn diff(old: &Config, new: &Config) -> BTreeMap<String, (String, String)> {
    let (old, new) = (flatten(old), flatten(new));
    let mut changed = BTreeMap::new();
    for key in old.keys().chain(new.keys()) {
        let (a, b) = (old.get(key), new.get(key));
        if a != b {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            changed.insert(key.clone(), (show(a), show(b)));
        }
    }
    changed
}

fn flatten(config: &Config) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(&path, value, out);
                }
            }
            leaf => {
                out.insert(prefix.to_owned(), leaf.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(value) = toml::Value::try_from(config) {
        walk("", &value, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_every_changed_setting_by_path() {
        let old = Config::default();
        let mut new = old.clone();
        new.limits.max_watch = 5;
        new.admin.token = Some("t".into());
        let changed = diff(&old, &new);
        assert_eq!(changed.keys().collect::<Vec<_>>(), ["admin.token", "limits.max_watch"]);
        assert_eq!(changed["limits.max_watch"], ("10000".into(), "5".into()));
    }

    fn secret(dir: &std::path::Path, name: &str) -> Secret {
        crate::auth::load_or_create_secret(&dir.join(name)).unwrap()
    }

    #[test]
    fn the_previous_secret_counts_only_inside_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims { subject: crate::auth::Subject::User(1), expires_at: 10_000 };
        let old_token = Keyring { current: secret(dir.path(), "a"), previous: None }.issue(&claims);
        let new_token = Keyring { current: secret(dir.path(), "b"), previous: None }.issue(&claims);
        let keys = Keys::new(secret(dir.path(), "a"));
        assert!(keys.rotate(secret(dir.path(), "a"), Duration::from_secs(60), 1_000).is_none(), "same secret");
        assert!(keys.verify(&new_token, 1_000).is_err());
        assert!(keys.rotate(secret(dir.path(), "b"), Duration::from_secs(60), 1_000).is_some());
        assert!(keys.verify(&new_token, 1_059).is_ok());
        assert!(keys.verify(&old_token, 1_059).is_ok(), "inside the window");
        assert_eq!(keys.verify(&old_token, 1_060), Err(AuthError::BadSignature), "window over");
        assert!(keys.verify(&new_token, 1_061).is_ok());
    }

    /// A reload as systemd sees it: RELOADING=1 (with the monotonic time)
    /// before the file is read, READY=1 once it is applied, and again when
    /// it is refused, with the refusal in STATUS.
    #[test]
    fn a_reload_notifies_reloading_then_ready() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("secret");
        let config = Config::default();
        let mut target = Reloadable {
            keys: Arc::new(Keys::new(crate::auth::load_or_create_secret(&secret_path).unwrap())),
            jwt: Arc::new(crate::server::jwt::JwtSlot::new(None)),
            limits: Arc::new(Limits::new(&config.limits, None)),
            certs: None,
            secret_path,
            applied: config.clone(),
            status: "listening on tcp 127.0.0.1:7400".into(),
            stop: CancellationToken::new(),
        };
        let socket = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&socket).unwrap();
        receiver.set_nonblocking(true).unwrap();
        let next = || {
            let mut buf = [0; 512];
            let n = receiver.recv(&mut buf).expect("a notification is waiting");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        };
        let tell = |state: &str| crate::server::systemd::send(socket.as_os_str(), state).unwrap();
        let reloading = |message: String| {
            let lines: Vec<&str> = message.lines().collect();
            assert_eq!(lines[0], "RELOADING=1", "{message}");
            let usec = lines[1].strip_prefix("MONOTONIC_USEC=").expect("MONOTONIC_USEC");
            assert!(usec.parse::<u64>().unwrap() > 0, "{message}");
        };

        let mut changed = config.clone();
        changed.limits.max_watch = 3;
        target.reload_notifying(
            || {
                reloading(next()); // sent before the file is read
                Ok(changed)
            },
            tell,
        );
        assert_eq!(next(), "READY=1\nSTATUS=listening on tcp 127.0.0.1:7400");
        assert_eq!(target.limits.max_watch(), 3, "applied before READY=1");

        target.reload_notifying(|| Err(ConfigError::Invalid("bad".into())), tell);
        reloading(next());
        assert_eq!(
            next(),
            "READY=1\nSTATUS=listening on tcp 127.0.0.1:7400; last reload refused: invalid configuration"
        );
        assert_eq!(target.limits.max_watch(), 3, "nothing changed");
        assert!(receiver.recv(&mut [0; 64]).is_err(), "nothing more");
    }

    #[test]
    fn limits_follow_the_config() {
        let mut config = crate::config::Limits::default();
        let limits = Limits::new(&config, Some(5_000));
        assert_eq!(limits.max_connections(), 5_000, "clamped to the descriptor ceiling");
        config.max_watch = 7;
        config.handshake_timeout = Duration::from_millis(250);
        config.max_connections = 40;
        config.post_rate = 4.0;
        config.post_burst = 3;
        limits.set(&config);
        assert_eq!(limits.max_watch(), 7);
        assert_eq!(limits.handshake_timeout(), Duration::from_millis(250));
        assert_eq!(limits.max_connections(), 40);
        assert_eq!(limits.post_rate(), Rate { interval_us: 250_000, burst: 3 });
        assert_eq!(Limits::new(&config, None).max_connections(), 40);
    }
}
