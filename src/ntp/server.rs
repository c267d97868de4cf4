//! The time server's NTPv4 endpoint: one thread reading a UDP socket, answering from the server's virtual
//! clock, until the process's [`Stop`].
//!
//! A blocking thread that waits in `poll`, as chronyd waits in `select`, not a task on the runtime's
//! epoll: on Linux a socket an epoll instance watches runs epoll's wake-up callbacks between the kernel's
//! transmit stamp of a reply and its arrival on loopback, a few hundred nanoseconds that the client
//! counts as the reply's flight and that bias its offset (−0.12 µs against a client that waits the same
//! way, measured). A thread in `poll` has no such watcher while it sends.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::net::UdpSocket;
use synclab_core::ntp::{MAX_REQUEST_LEN, NtpTimestamp, NtsPart, ParseError, ReplyKind, Server, ServerConfig};

use crate::clock::{LiveClock, host_now};
use crate::net::linux;
use crate::server::Stop;
use crate::telemetry::Refusals;

/// What the server has done so far.
#[derive(Debug)]
pub struct NtpStats {
    /// Datagrams read.
    pub received: AtomicU64,
    /// Replies sent (kiss-o'-death included).
    pub answered: AtomicU64,
    /// Of the replies, those in interleaved mode.
    pub interleaved: AtomicU64,
    /// Of the replies, RATE kiss-o'-death packets.
    pub kisses: AtomicU64,
    /// Transmit times the kernel stamped.
    pub kernel_tx_stamps: AtomicU64,
    /// Of the replies, those authenticated with NTS.
    pub nts_answered: AtomicU64,
    /// Of the replies, NTS NAKs (kiss-o'-death "NTSN"; each also counted in `dropped` by why).
    pub nts_naks: AtomicU64,
    /// Datagrams dropped, by kind (`synclab_core::ntp::Dropped::kind`).
    pub dropped: Refusals,
}

impl Default for NtpStats {
    fn default() -> Self {
        Self {
            received: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            interleaved: AtomicU64::new(0),
            kisses: AtomicU64::new(0),
            kernel_tx_stamps: AtomicU64::new(0),
            nts_answered: AtomicU64::new(0),
            nts_naks: AtomicU64::new(0),
            dropped: Refusals::new("NTP datagram"),
        }
    }
}

impl NtpStats {
    /// Datagrams dropped of kind `kind`.
    pub fn dropped(&self, kind: &str) -> u64 {
        self.dropped.totals().iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
    }
}

/// How long the serving thread waits for a datagram before it looks whether to stop.
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Replies whose kernel transmit stamp is awaited, by datagram sequence number.
const PENDING: usize = 256;

/// An NTP server bound to its socket.
#[derive(Debug)]
pub struct NtpServer {
    socket: UdpSocket,
    clock: LiveClock,
    logic: Server,
    stats: Arc<NtpStats>,
    tx_stamps: bool,
    /// Stamped replies sent so far (the next one's sequence number).
    stamped: u32,
    /// A stamped reply was sent since the error queue was last read empty: until then it is not read.
    awaited: bool,
    pending: Box<[Option<(u32, IpAddr, NtpTimestamp)>; PENDING]>,
}

impl NtpServer {
    /// Binds `addr` (UDP) and prepares to answer from `clock`.
    pub async fn bind(addr: &str, clock: LiveClock, config: ServerConfig) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        let fd = socket.as_raw_fd();
        linux::enable(fd)?;
        let tx_stamps = match linux::enable_tx_stamps(fd) {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(error = %e, "no kernel transmit timestamps; interleaved replies carry the time read before sending");
                false
            }
        };
        let key = (crate::random::nonce(), crate::random::nonce());
        Ok(Self {
            socket,
            clock,
            logic: Server::new(config, key),
            stats: Arc::new(NtpStats::default()),
            tx_stamps,
            stamped: 0,
            awaited: false,
            pending: Box::new([None; PENDING]),
        })
    }

    /// Serves NTS too, with cookies under `master` (the NTS-KE listener's); `require` leaves plain
    /// requests unanswered.
    pub fn with_nts(mut self, master: Arc<synclab_core::ntp::nts::MasterKeys>, require: bool) -> Self {
        self.logic = self.logic.with_nts(master, require);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The counters, shared with the running task.
    pub fn stats(&self) -> Arc<NtpStats> {
        self.stats.clone()
    }

    /// Answers requests until `stop` (on a thread of the blocking pool, which it holds until then).
    pub async fn serve(mut self, stop: Stop) -> io::Result<()> {
        match tokio::task::spawn_blocking(move || self.serve_blocking(&stop)).await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(format!("the NTP thread failed: {e}"))),
        }
    }

    fn serve_blocking(&mut self, stop: &Stop) -> io::Result<()> {
        let mut buf = vec![0u8; 2048];
        let fd = self.socket.as_raw_fd();
        while !stop.should_stop() {
            // A stop is noticed within this wait.
            if linux::poll(fd, libc::POLLIN, STOP_CHECK)? == 0 {
                continue;
            }
            // Transmit stamps in the error queue make poll report an error: they are read here.
            self.drain_tx_stamps();
            loop {
                match linux::recv_from(fd, &mut buf) {
                    Ok((n, from, kernel)) => self.handle(&buf, n, from, kernel),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "NTP socket read failed");
                        break;
                    }
                }
                self.drain_tx_stamps();
            }
        }
        Ok(())
    }

    fn handle(&mut self, buf: &[u8], len: usize, from: SocketAddr, kernel: Option<i64>) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if len > buf.len() {
            self.stats.dropped.refused("oversized", &ParseError::Oversized(len.min(MAX_REQUEST_LEN * 1000)));
            return;
        }
        let receive = self.clock.at(kernel.unwrap_or_else(host_now));
        let client = from.ip();
        let mut reply = match self.logic.respond(&buf[..len], client, receive) {
            Ok(r) => r,
            Err(why) => {
                self.stats.dropped.refused(why.kind(), &format_args!("{from}: {why}"));
                return;
            }
        };
        // The kernel's transmit time only for clients that use it (interleaved mode); a stamp costs a
        // read of the error queue.
        let stamp = self.tx_stamps && matches!(reply.kind, ReplyKind::Basic | ReplyKind::Interleaved) && reply.interleave_asked;
        let transmit = self.clock.now();
        let bytes = reply.stamp_transmit(transmit);
        let fd = self.socket.as_raw_fd();
        if let Err(e) = linux::send_to(fd, &bytes, Some(from), stamp) {
            self.stats.dropped.refused("send_failed", &format_args!("{from}: {e}"));
            return;
        }
        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        match reply.kind {
            ReplyKind::Interleaved => self.stats.interleaved.fetch_add(1, Ordering::Relaxed),
            ReplyKind::RateKiss => self.stats.kisses.fetch_add(1, Ordering::Relaxed),
            ReplyKind::NtsNak => self.stats.nts_naks.fetch_add(1, Ordering::Relaxed),
            ReplyKind::Basic => 0,
        };
        match &reply.nts {
            NtsPart::Sealed(_) => {
                self.stats.nts_answered.fetch_add(1, Ordering::Relaxed);
            }
            NtsPart::Nak { why, .. } => self.stats.dropped.refused(why.kind(), &format_args!("{from}: {why} (NTS NAK sent)")),
            NtsPart::Plain => {}
        }
        self.logic.sent(client, &reply, transmit);
        if stamp {
            // The kernel numbers the stamped datagrams alone, from 0.
            let id = self.stamped;
            self.stamped = self.stamped.wrapping_add(1);
            self.pending[id as usize % PENDING] = Some((id, client, reply.packet.receive));
            self.awaited = true;
        }
    }

    /// Reads the kernel's transmit stamps and hands them to the replies they belong to.
    fn drain_tx_stamps(&mut self) {
        if !self.awaited {
            return;
        }
        let fd = self.socket.as_raw_fd();
        for _ in 0..PENDING {
            match linux::recv_tx_stamp(fd) {
                Ok(Some((id, host))) => {
                    if let Some((_, client, receive)) = self.pending[id as usize % PENDING].take_if(|p| p.0 == id)
                        && self.logic.transmitted(client, receive, self.clock.at(host))
                    {
                        self.stats.kernel_tx_stamps.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(None) => {}
                // The queue is empty (the stamp of a datagram sent on loopback is there when the send
                // returns; a later one is read with the next stamped reply's) or cannot be read.
                Err(_) => {
                    self.awaited = false;
                    break;
                }
            }
        }
    }
}
