//! Listening sockets, set up with socket2 before tokio takes them over,
//! admission: how many connections the process may hold, in all and per
//! address, and the process-wide settings that go with holding many (open
//! files, huge pages).
//!
//! Admission only counts and says yes or no; what a refused connection is
//! told belongs to `conn`, and the caps themselves to `reload::Limits`.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use crate::metrics::Refused;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

/// Connections the kernel may queue before `accept`; reconnect storms need a deep one.
const BACKLOG: i32 = 4_096;
/// Receive buffer asked for each UDP socket; the kernel may grant less.
const UDP_RECV_BUFFER: usize = 8 << 20;

pub fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// `count` UDP sockets sharing one address through SO_REUSEPORT, so each
/// worker has its own and the kernel spreads datagrams across them. Port 0
/// picks one port for all of them.
pub fn udp_sockets(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut bound = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        // A smaller buffer than asked for is not worth failing over.
        let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
        socket.bind(&bound.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        bound = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Descriptors kept for everything but connections: the store's cached files
/// (fjall keeps up to 900 open), the listeners, UDP sockets and admin
/// requests. A quarter of the limit when that is less, so that a small limit
/// still leaves room for connections.
const FD_RESERVE: u64 = 1_000;

/// How many connections the process can hold without `accept` failing for
/// want of descriptors: the open-file limit, raised first from its soft to
/// its hard value (as systemd's `LimitNOFILE` sets both, this matters when run
/// by hand), less [`FD_RESERVE`]. `None` when the limit is unknown or
/// infinite.
pub fn connection_ceiling() -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` through a pointer valid for it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one `rlimit` through a pointer valid for it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let reserve = FD_RESERVE.min(limit.rlim_cur / 4);
    Some(usize::try_from(limit.rlim_cur - reserve).unwrap_or(usize::MAX))
}

/// The connections open now, in all and per address.
#[derive(Debug, Default)]
pub struct Admission {
    open: AtomicUsize,
    per_address: DashMap<IpAddr, usize>,
}

/// One admitted connection's place; dropping it gives the place back, so
/// every way a connection can end (a return, an error, a panic) counts.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Admission {
    /// Takes a place for a connection from `peer`, unless it would make more
    /// than `max` connections in all or more than `max_per_ip` (0: no cap)
    /// from `peer`'s address.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, max: usize, max_per_ip: usize) -> Result<Slot, Refused> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let address = address_key(peer);
        let mut count = self.per_address.entry(address).or_insert(0);
        // A new entry (0) is below any cap, so a refusal never leaves one behind.
        if max_per_ip != 0 && *count >= max_per_ip {
            drop(count);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::PerIp);
        }
        *count += 1;
        Ok(Slot { admission: self.clone(), address })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections open now from `peer`'s address (its /64 for IPv6).
    pub fn open_from(&self, peer: IpAddr) -> usize {
        self.per_address.get(&address_key(peer)).map_or(0, |count| *count)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut count) = self.admission.per_address.entry(self.address) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the per-address cap counts by: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
fn address_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        v4 => v4,
    }
}

/// Turns transparent huge pages off for this process, as Redis does. With
/// them the allocator's arenas are faulted in 2 MiB at a time: measured here,
/// a herd of 19,000 connections cost the daemon twice the CPU (~42 vs ~21 µs
/// each), and 10M sessions 8 % more RSS, for no gain in heartbeat cost
/// (BENCHMARKS.md, "Reconnect storms"). For binaries, first thing: memory
/// mapped before keeps its huge pages.
pub fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot turn transparent huge pages off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_in_all_and_per_address_and_places_come_back() {
        let admission = Arc::new(Admission::default());
        let a = (0..2).map(|_| admission.admit(ip("10.0.0.1"), 3, 2).unwrap()).collect::<Vec<_>>();
        assert_eq!(admission.admit(ip("10.0.0.1"), 3, 2).unwrap_err(), Refused::PerIp);
        let b = admission.admit(ip("10.0.0.2"), 3, 2).unwrap();
        assert_eq!(admission.admit(ip("10.0.0.3"), 3, 2).unwrap_err(), Refused::Total);
        assert_eq!((admission.open(), admission.open_from(ip("10.0.0.1"))), (3, 2));
        drop(a);
        assert_eq!((admission.open(), admission.open_from(ip("10.0.0.1"))), (1, 0));
        assert!(admission.per_address.get(&ip("10.0.0.1")).is_none(), "no entry left for a gone address");
        drop(b);
        assert_eq!(admission.open(), 0);
        assert!(admission.per_address.is_empty());
        let unlimited: Vec<_> = (0..5).map(|_| admission.admit(ip("10.0.0.1"), 10, 0).unwrap()).collect();
        assert_eq!(admission.open_from(ip("10.0.0.1")), 5, "0 is no per-address cap");
        drop(unlimited);
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), address_key(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(address_key(ip("2001:db8:1:2::1")), address_key(ip("2001:db8:1:3::1")));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn the_ceiling_leaves_a_reserve() {
        let ceiling = connection_ceiling().expect("a finite open-file limit");
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in `connection_ceiling`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert!((ceiling as u64) < limit.rlim_cur && ceiling as u64 >= limit.rlim_cur - FD_RESERVE);
    }
}
