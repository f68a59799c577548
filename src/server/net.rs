//! Listening sockets, set up with socket2 before tokio takes them over.

use std::io;
use std::net::SocketAddr;

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
