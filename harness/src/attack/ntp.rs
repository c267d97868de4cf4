//! The NTP side, as a client speaks it: a request and the answer to it.

use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

/// A client request (version 4, mode 3) with transmit timestamp `transmit`, and `extra` bytes after it.
pub fn ntp_request(transmit: u64, extra: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    b[0] = 0x23;
    b[40..48].copy_from_slice(&transmit.to_be_bytes());
    b.extend_from_slice(extra);
    b
}

/// Sends `request` (at least 48 bytes) from `socket` and waits `within` for the answer to it (matched by
/// its origin timestamp): the answer's stratum (0 for a kiss-o'-death) and how long it took, or `None`.
pub async fn ntp_ask(socket: &UdpSocket, server: &str, request: &[u8], within: Duration) -> Option<(u8, Duration)> {
    let sent = request.get(40..48)?;
    let started = Instant::now();
    socket.send_to(request, server).await.ok()?;
    let mut buf = [0u8; 1024];
    let until = tokio::time::Instant::now() + within;
    loop {
        let (n, _) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await.ok()?.ok()?;
        if n >= 48 && &buf[24..32] == sent {
            return Some((buf[1], started.elapsed()));
        }
    }
}
