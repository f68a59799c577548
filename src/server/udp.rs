//! The UDP shell: batched receives (recvmmsg, and GRO where the kernel has
//! it, both through quinn-udp) into buffers allocated once per socket.
//!
//! Datagrams are never answered, whatever they hold; bad ones are counted.
//! The check chain is `heartline_proto::udp`'s; what a datagram does is
//! presence's (a session heartbeat) or `heartline_core::conn::apply_batch`'s
//! (a gateway batch, the same as on TCP). This shell owns only the sockets,
//! the buffers and the loop.

use std::io::IoSliceMut;
use std::sync::Arc;

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use heartline_core::conn::{apply_batch, Effect};
use heartline_proto::auth::UdpPeer;
use heartline_proto::udp::{self, Body, DropReason};
use tokio_util::sync::CancellationToken;

use super::node::Node;
use super::now_ms;

/// Datagrams taken per system call.
const BATCH: usize = 32;
/// Bytes per receive buffer: one datagram of the largest size.
const BUFFER: usize = 64 * 1024;

pub(crate) async fn receive(socket: UdpSocket, node: Arc<Node>, stop: CancellationToken) {
    let state = match UdpSocketState::new((&socket).into()) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "UDP socket setup failed; UDP heartbeats are off on this socket");
            return;
        }
    };
    // With GRO one buffer may carry several datagrams of `stride` bytes.
    let per_buffer = BUFFER * state.gro_segments();
    let mut storage = vec![0u8; per_buffer * BATCH];
    let mut buffers: Vec<IoSliceMut> = storage.chunks_mut(per_buffer).map(IoSliceMut::new).collect();
    let mut meta = [RecvMeta::default(); BATCH];
    let mut effects = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            ready = socket.readable() => if ready.is_err() { return },
        }
        let received = socket.try_io(Interest::READABLE, || state.recv((&socket).into(), &mut buffers, &mut meta));
        let count = match received {
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        let now = now_ms();
        for (buffer, meta) in buffers.iter().zip(&meta).take(count) {
            for datagram in buffer[..meta.len].chunks(meta.stride.max(1)) {
                if let Err(reason) = on_datagram(&node, datagram, now, &mut effects) {
                    node.metrics.udp_dropped(reason).inc();
                }
            }
        }
    }
}

/// Verifies one datagram and applies what it carries.
pub(crate) fn on_datagram(
    node: &Node,
    datagram: &[u8],
    now_ms: u64,
    effects: &mut Vec<Effect>,
) -> Result<(), DropReason> {
    let dg = udp::parse(datagram)?;
    if dg.ty == udp::types::HEARTBEAT {
        let change = node.presence.udp_heartbeat(
            dg.id,
            now_ms,
            |owner, window| {
                let key = node.udp_keys.derive(UdpPeer::Session, dg.id, owner);
                match dg.open(&key, window)? {
                    (_, Body::Heartbeat(status)) => Ok(status),
                    (_, Body::Batch(_)) => Err(DropReason::Malformed),
                }
            },
            DropReason::UnknownId,
        )?;
        node.metrics.heartbeats_udp.inc();
        if let Some(change) = change {
            node.deliver(change);
        }
        return Ok(());
    }
    let gateway = u32::try_from(dg.id).map_err(|_| DropReason::UnknownId)?;
    let entry = node.registry.get(gateway).ok_or(DropReason::UnknownId)?;
    let window = entry.udp_gateway.as_ref().ok_or(DropReason::UnknownId)?;
    let key = node.udp_keys.derive(UdpPeer::Gateway, dg.id, gateway);
    let mut window = window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (_, body) = dg.open(&key, &mut window)?;
    drop(window);
    drop(entry);
    let Body::Batch(view) = body else { return Err(DropReason::Malformed) };
    // Unknown sessions in an authentic batch are the gateway's business; UDP never answers.
    apply_batch(&node.presence, gateway, view.iter(), now_ms, effects);
    node.metrics.heartbeats_udp.add(view.len() as u64);
    for effect in effects.drain(..) {
        if let Effect::Deliver(change) = effect {
            node.deliver(change);
        }
    }
    Ok(())
}
