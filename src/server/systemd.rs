//! The systemd service protocol, spoken without libsystemd: state
//! notifications (READY, RELOADING, STOPPING, STATUS) and watchdog pings to
//! `$NOTIFY_SOCKET` (sd_notify(3)), and
//! listening sockets handed over by socket activation (`LISTEN_FDS`,
//! sd_listen_fds(3)).
//!
//! Owns those environment variables and the inherited descriptors. It must
//! not decide when the server is ready or stopping: the server says so.
//! Outside systemd (no variables set) every function here does nothing.

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio_util::sync::CancellationToken;

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service
/// manager. `Ok(false)` when there is none.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    send(&path, state)?;
    Ok(true)
}

/// One datagram to a notification socket: a path, or `@name` in the
/// abstract namespace.
pub(crate) fn send(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    // A manager that stops reading must not stall a runtime thread: drop the message instead.
    socket.set_nonblocking(true)?;
    match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// [`notify`], with a failure logged rather than returned: the service
/// manager's bookkeeping never stops the server.
pub fn tell(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

/// The notification that opens a reload: `RELOADING=1` with `MONOTONIC_USEC=`,
/// the CLOCK_MONOTONIC time (µs) of the message. The reload ends with
/// `READY=1`. systemd ≥ 253 (`Type=notify-reload`) needs the timestamp to tell
/// this reload from an earlier one; older versions ignore the field and
/// show the service as reloading until READY=1.
pub fn reloading() -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec())
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd reads for MONOTONIC_USEC=.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) writes one timespec through a pointer to a
    // local that lives across the call; CLOCK_MONOTONIC is always supported.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    let (secs, nanos) = (u64::try_from(now.tv_sec).unwrap_or(0), u64::try_from(now.tv_nsec).unwrap_or(0));
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// advises; `None` when no watchdog is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if !pid_matches("WATCHDOG_PID") || usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

/// Pings the watchdog from the runtime until `stop`: a runtime that no
/// longer runs tasks stops pinging, and systemd restarts the service.
pub async fn watchdog(every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => tell("WATCHDOG=1"),
        }
    }
}

/// A variable naming a process is for us when it is unset (set by hand,
/// not by systemd) or holds our pid.
fn pid_matches(var: &str) -> bool {
    std::env::var(var).map_or(true, |pid| pid.parse() == Ok(std::process::id()))
}

/// Sockets handed over by socket activation.
#[derive(Debug, Default)]
pub struct Inherited {
    pub tcp: Option<TcpListener>,
    pub udp: Vec<UdpSocket>,
}

/// Guards the inherited descriptors: wrapped (and so owned) once per process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The TCP listener and UDP sockets in `LISTEN_FDS`, told apart by their
/// socket type, set non-blocking and close-on-exec. Empty outside socket
/// activation and on every call after the first.
pub fn inherited() -> io::Result<Inherited> {
    let mut inherited = Inherited::default();
    let Some(count) = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<RawFd>().ok()) else {
        return Ok(inherited);
    };
    if !pid_matches("LISTEN_PID") || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(inherited);
    }
    for fd in FIRST_FD..FIRST_FD.saturating_add(count) {
        // SAFETY: systemd passed these descriptors to this process for it to
        // own, nothing else in the process wraps them (TAKEN makes this run
        // once), and one that is not a socket is given back unclosed below.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        let (kind, domain) = match (socket.r#type(), socket.local_addr().map(|a| a.domain())) {
            (Ok(kind), Ok(domain)) => (kind, domain),
            _ => {
                let _ = socket.into_raw_fd();
                tracing::warn!(fd, "LISTEN_FDS names a descriptor that is not a socket; ignored");
                continue;
            }
        };
        if domain != Domain::IPV4 && domain != Domain::IPV6 {
            tracing::warn!(fd, "inherited socket is not an IP socket; closed");
            continue;
        }
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        match kind {
            Type::STREAM if inherited.tcp.is_none() => inherited.tcp = Some(socket.into()),
            Type::DGRAM => inherited.udp.push(socket.into()),
            _ => tracing::warn!(fd, "inherited socket of an unexpected type or a second TCP listener; closed"),
        }
    }
    Ok(inherited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(receiver: &UnixDatagram) -> String {
        let mut buf = [0; 64];
        let n = receiver.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(received(&receiver), "READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("heartline-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(received(&receiver), "STOPPING=1");
    }

    #[test]
    fn reloading_carries_the_monotonic_time() {
        let before = monotonic_usec();
        let message = reloading();
        let after = monotonic_usec();
        let mut lines = message.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines.next().and_then(|l| l.strip_prefix("MONOTONIC_USEC=")).unwrap().parse().unwrap();
        assert!((before..=after).contains(&usec), "{before} <= {usec} <= {after}");
        assert_eq!(lines.next(), None);
    }
}
