//! The UDP shell: batched receives (recvmmsg, and GRO where the kernel has
//! it, both through quinn-udp) into buffers allocated once per socket.
//!
//! Datagrams are never answered, whatever they hold; bad ones are counted.

use std::io::IoSliceMut;
use std::sync::Arc;

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::{now_ms, Shared};
use crate::auth::UdpPeer;
use heartline_proto::udp::{self, Body, DropReason};

/// Datagrams taken per system call.
const BATCH: usize = 32;
/// Bytes per receive buffer: one datagram of the largest size.
const BUFFER: usize = 64 * 1024;

pub async fn receive(socket: UdpSocket, shared: Arc<Shared>) {
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
    let stop = shared.stop.clone();
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
                if let Err(reason) = on_datagram(&shared, datagram, now) {
                    shared.metrics.udp_dropped(reason).inc();
                }
            }
        }
    }
}

/// Verifies one datagram and applies what it carries.
pub fn on_datagram(shared: &Shared, datagram: &[u8], now_ms: u64) -> Result<(), DropReason> {
    let dg = udp::parse(datagram)?;
    if dg.ty == udp::types::HEARTBEAT {
        let change = shared.presence.udp_heartbeat(
            dg.id,
            now_ms,
            |owner, window| {
                let key = shared.udp_keys.derive(UdpPeer::Session, dg.id, owner);
                match dg.open(&key, window)? {
                    (_, Body::Heartbeat(status)) => Ok(status),
                    (_, Body::Batch(_)) => Err(DropReason::Malformed),
                }
            },
            DropReason::UnknownId,
        )?;
        shared.metrics.heartbeats_udp.inc();
        shared.deliver(change);
        return Ok(());
    }
    let gateway = u32::try_from(dg.id).map_err(|_| DropReason::UnknownId)?;
    let entry = shared.conns.get(&gateway).ok_or(DropReason::UnknownId)?;
    let window = entry.udp_gateway.as_ref().ok_or(DropReason::UnknownId)?;
    let key = shared.udp_keys.derive(UdpPeer::Gateway, dg.id, gateway);
    let mut window = window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (_, body) = dg.open(&key, &mut window)?;
    drop(window);
    drop(entry);
    let Body::Batch(view) = body else { return Err(DropReason::Malformed) };
    // Unknown sessions in an authentic batch are the gateway's business; UDP never answers.
    shared.apply_batch(gateway, view.iter(), now_ms);
    shared.metrics.heartbeats_udp.add(view.len() as u64);
    Ok(())
}
