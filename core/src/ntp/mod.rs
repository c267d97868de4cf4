//! NTPv4 (RFC 5905) without I/O: the packet, the server's decision for each datagram, the per-client
//! state a server keeps (interleaved timestamps, RFC 9769, and a rate limit), and the client's checks of a
//! reply and the exchange it yields.
//!
//! Bytes come in with the times they were stamped at (on the serving or syncing clock, in nanoseconds
//! since the Unix epoch); typed packets, decisions and [`crate::cristian::Exchange`]s come out. The
//! `synclab` crate's `ntp` module moves them over UDP and takes the kernel's timestamps.
//!
//! Interleaved mode as chrony uses it: a client asking for it sets the request's origin timestamp to the
//! receive timestamp of the server's previous reply and its receive timestamp to when that reply arrived.
//! A server that remembers the reply whose receive timestamp that was answers with origin = the request's
//! receive timestamp and transmit = the precise (kernel) transmit time of that previous reply, known only
//! after it left. Server receive timestamps carry a set lowest bit and transmit timestamps a clear one,
//! so the two are never equal and a client tells which it was sent.
//!
//! - [`packet`]: the wire format: timestamps, the header, its parsing and encoding.
//! - [`server`]: the server's decision for each datagram and the per-client table behind it.
//! - [`client`]: the client's requests, its checks of a reply, and the exchange a reply completes.
//! - [`nts`]: Network Time Security (RFC 8915): NTS-KE records, cookies, and the NTS extension fields.
//!
//! Everything is re-exported here, so `synclab_core::ntp::Packet` and the like name it whichever file
//! it lives in.

pub mod client;
pub mod nts;
pub mod packet;
pub mod server;

pub use client::*;
pub use packet::*;
pub use server::*;

/// What the tests of the three files share: a time, two client addresses, a raw request.
#[cfg(test)]
mod testing {
    use std::net::{IpAddr, Ipv4Addr};

    pub(super) const T: i64 = 1_764_000_000_000_000_000;
    pub(super) const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    pub(super) const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    /// A 48-byte request of `version` and `mode` with transmit timestamp `transmit`, the rest zero.
    pub(super) fn request_bytes(version: u8, mode: u8, transmit: u64) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b[0] = version << 3 | mode;
        b[40..48].copy_from_slice(&transmit.to_be_bytes());
        b
    }
}
