//! Timestamps taken at the socket, where they mean most.
//!
//! A timestamp taken in a gRPC handler or around a client call carries the time the HTTP/2 and gRPC layers
//! spend on each side, and that time is not the same both ways. So synclab's connections watch the bytes
//! they carry: a [`FrameScanner`] finds the HTTP/2 frames that end a stream (the END_STREAM flag: the
//! last frame of a request or of an answer), and the connection stamps the read that brought one in or
//! the write that sent one out. The end of a message, not its start, because a tonic client writes a
//! request's HEADERS and its DATA in two writes while an answer goes out in one: stamping the last write
//! of each makes the two directions alike.
//!
//! * Server side ([`ServerStamps`]): T2 is the read that completed the request; the real transmit time
//!   of an answer is the write that sent its end, known only after it left, so it is handed to the client
//!   in the *next* answer on the connection, as NTP's interleaved mode does.
//! * Client side ([`ClientStamps`]): T1 is the write that completed the request, T4 the read that
//!   completed the answer.
//!
//! A write is stamped just *before* the system call that makes it, a read just *after* the call that
//! returns it, so a departure is never stamped late nor an arrival early: T1 ≤ the request left ≤ it
//! arrived ≤ T2, and T3 ≤ the answer left ≤ it arrived ≤ T4, whatever the scheduler does in between.
//! With one request at a time on a connection the four timestamps stay inside the round trip and the
//! error bound stays true. With several requests in flight on one connection the stamps may belong to a
//! neighbour, which a load does not mind and a syncing client never does.
//!
//! Reads also carry the kernel's own receive timestamp (SO_TIMESTAMPNS, Linux): when the data reached
//! the socket, before any process woke up to read it. On loopback that is inside the sender's write, so
//! it takes the time each side needs to wake up and read out of both directions, and the estimate gets
//! much closer. But the kernel gives one timestamp per read, that of a segment it merged the others
//! into, which can be an earlier segment than the one that ended the message; so it serves the estimate
//! only, checked against the bound that the user-space stamps keep ([`crate::cristian`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

use crate::live_clock::host_now;

/// The client connection preface every HTTP/2 connection starts with.
const PREFACE_LEN: usize = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len();
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const END_STREAM: u8 = 0x1;

/// Finds the HTTP/2 frames that end a stream (DATA or HEADERS with END_STREAM) in one direction of a
/// connection, across read or write boundaries.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    preface_left: usize,
    header: [u8; 9],
    header_len: usize,
    payload_left: usize,
}

impl FrameScanner {
    /// For the bytes a client sends: the connection preface, then frames.
    pub fn client_to_server() -> Self {
        Self { preface_left: PREFACE_LEN, header: [0; 9], header_len: 0, payload_left: 0 }
    }

    /// For the bytes a server sends: frames from the first byte.
    pub fn server_to_client() -> Self {
        Self { preface_left: 0, ..Self::client_to_server() }
    }

    /// Consumes the next bytes; true if the header of a frame that ends a stream completes in them.
    pub fn scan(&mut self, mut bytes: &[u8]) -> bool {
        let mut ends = false;
        while !bytes.is_empty() {
            let skip = if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                n
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                n
            } else {
                self.header[self.header_len] = bytes[0];
                self.header_len += 1;
                if self.header_len == 5 && matches!(self.header[3], DATA | HEADERS) && self.header[4] & END_STREAM != 0 {
                    ends = true;
                }
                if self.header_len == 9 {
                    let [a, b, c, ..] = self.header;
                    self.payload_left = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                    self.header_len = 0;
                }
                1
            };
            bytes = &bytes[skip..];
        }
        ends
    }
}

/// What one side of a connection does when a stream's last frame passes.
pub trait Stamper: Send + Sync + 'static {
    /// The clock this side stamps with.
    type Stamp: Copy;
    /// Reads that clock.
    fn now() -> Self::Stamp;
    /// The stamp for a kernel receive timestamp (host real time, ns since the epoch).
    fn from_kernel(host_nanos: i64) -> Self::Stamp;
    /// Scanners for (bytes read, bytes written).
    fn scanners() -> (FrameScanner, FrameScanner);
    /// A read that returned at `at` completed a message; `kernel` is the kernel's receive timestamp of it.
    fn read_end(&self, at: Self::Stamp, kernel: Option<Self::Stamp>);
    /// A write begun at `at` completed a message.
    fn wrote_end(&self, at: Self::Stamp);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state whole, so a poisoned lock's data is still good.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An answer's real transmit time, and which request it answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SentAnswer {
    /// The `client_send_time` of the request the answer was for.
    pub origin: prost_types::Timestamp,
    /// Host time (ns since the epoch) right before the write that sent the answer's last frame.
    pub transmit_host_nanos: i64,
}

#[derive(Debug, Default)]
struct AnswerLog {
    /// The origin of the answer being prepared, until its last frame is written.
    pending: Option<prost_types::Timestamp>,
    /// The latest answer sent.
    sent: Option<SentAnswer>,
}

/// A server connection's stamps.
#[derive(Debug, Default)]
pub struct ServerStamps {
    arrival_host_nanos: AtomicI64,
    kernel_arrival_host_nanos: AtomicI64,
    answers: Mutex<AnswerLog>,
}

impl ServerStamps {
    /// Host time (ns since the epoch) of the latest request's arrival; 0 before any.
    pub fn arrival_host_nanos(&self) -> i64 {
        self.arrival_host_nanos.load(Ordering::Relaxed)
    }

    /// The kernel's receive timestamp of the latest request (host ns since the epoch); 0 if none.
    pub fn kernel_arrival_host_nanos(&self) -> i64 {
        self.kernel_arrival_host_nanos.load(Ordering::Relaxed)
    }

    /// Called by a handler about to answer the request sent at `origin`: remembers it, so the answer's
    /// write is stamped for it, and returns the previous answer sent on this connection, if any.
    pub fn answering(&self, origin: Option<prost_types::Timestamp>) -> Option<SentAnswer> {
        let mut log = lock(&self.answers);
        log.pending = origin;
        log.sent.take()
    }
}

impl Stamper for ServerStamps {
    type Stamp = i64;

    fn now() -> i64 {
        host_now()
    }

    fn from_kernel(host_nanos: i64) -> i64 {
        host_nanos
    }

    fn scanners() -> (FrameScanner, FrameScanner) {
        (FrameScanner::client_to_server(), FrameScanner::server_to_client())
    }

    fn read_end(&self, at: i64, kernel: Option<i64>) {
        self.arrival_host_nanos.store(at, Ordering::Relaxed);
        self.kernel_arrival_host_nanos.store(kernel.unwrap_or(0), Ordering::Relaxed);
    }

    fn wrote_end(&self, at: i64) {
        let mut log = lock(&self.answers);
        if let Some(origin) = log.pending.take() {
            log.sent = Some(SentAnswer { origin, transmit_host_nanos: at });
        }
    }
}

#[derive(Debug, Default)]
struct ClientLog {
    awaiting_answer: bool,
    sent: Option<Instant>,
    received: Option<Instant>,
    received_kernel: Option<Instant>,
}

/// A client connection's stamps, on the monotonic clock.
#[derive(Debug, Default)]
pub struct ClientStamps {
    log: Mutex<ClientLog>,
}

impl ClientStamps {
    /// Forgets earlier stamps, before a new request.
    pub fn clear(&self) {
        *lock(&self.log) = ClientLog::default();
    }

    /// When the request's last frame was written and the answer's read, since the last [`Self::clear`].
    pub fn sent_and_received(&self) -> (Option<Instant>, Option<Instant>) {
        let log = lock(&self.log);
        (log.sent, log.received)
    }

    /// The kernel's receive timestamp of the answer, if it gave one.
    pub fn received_by_kernel(&self) -> Option<Instant> {
        lock(&self.log).received_kernel
    }
}

impl Stamper for ClientStamps {
    type Stamp = Instant;

    fn now() -> Instant {
        Instant::now()
    }

    /// The kernel stamps on the real-time clock; the client measures on the monotonic one. The stamp is
    /// microseconds old, so how old it is on the real-time clock is how old it is on the monotonic one.
    fn from_kernel(host_nanos: i64) -> Instant {
        let now = Instant::now();
        let age = host_now().saturating_sub(host_nanos).max(0);
        now.checked_sub(std::time::Duration::from_nanos(age as u64)).unwrap_or(now)
    }

    fn scanners() -> (FrameScanner, FrameScanner) {
        (FrameScanner::server_to_client(), FrameScanner::client_to_server())
    }

    fn read_end(&self, at: Instant, kernel: Option<Instant>) {
        let mut log = lock(&self.log);
        if log.awaiting_answer {
            log.received = Some(at);
            log.received_kernel = kernel;
            log.awaiting_answer = false;
        }
    }

    fn wrote_end(&self, at: Instant) {
        let mut log = lock(&self.log);
        if log.sent.is_none() {
            log.sent = Some(at);
        }
        log.awaiting_answer = true;
    }
}

/// A TCP connection that stamps the ends of messages as they pass.
#[derive(Debug)]
pub struct StampedStream<S = ServerStamps> {
    inner: TcpStream,
    read_scanner: FrameScanner,
    write_scanner: FrameScanner,
    stamps: Arc<S>,
}

impl<S: Stamper + Default> StampedStream<S> {
    /// Wraps a connection with fresh stamps.
    pub fn new(inner: TcpStream) -> Self {
        Self::with_stamps(inner, Arc::default())
    }
}

impl<S: Stamper> StampedStream<S> {
    /// Wraps a connection, stamping into `stamps`. On Linux it asks the kernel to timestamp what the
    /// connection receives; where it cannot, reads are stamped as they return.
    pub fn with_stamps(inner: TcpStream, stamps: Arc<S>) -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if let Err(e) = rx_timestamps::enable(inner.as_raw_fd()) {
                tracing::debug!(error = %e, "no kernel receive timestamps; stamping reads in user space");
            }
        }
        let (read_scanner, write_scanner) = S::scanners();
        Self { inner, read_scanner, write_scanner, stamps }
    }

    /// Advances past the `n` bytes of `bufs` written; stamps with `before` (taken before the write's
    /// system call) if a message ended in them.
    fn wrote(&mut self, mut bufs: &[io::IoSlice<'_>], mut n: usize, before: S::Stamp) {
        let mut ends = false;
        while n > 0 && !bufs.is_empty() {
            let take = n.min(bufs[0].len());
            ends |= self.write_scanner.scan(&bufs[0][..take]);
            n -= take;
            bufs = &bufs[1..];
        }
        if ends {
            self.stamps.wrote_end(before);
        }
    }
}

/// What a handler can learn about the connection a request came in on (a request extension).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The connection's stamps.
    pub stamps: Arc<ServerStamps>,
}

impl Connected for StampedStream<ServerStamps> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo { remote_addr: self.inner.peer_addr().ok(), stamps: self.stamps.clone() }
    }
}

impl<S: Stamper> AsyncRead for StampedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        #[cfg(target_os = "linux")]
        let kernel_stamp = {
            use std::os::fd::AsRawFd;
            let fd = this.inner.as_raw_fd();
            loop {
                std::task::ready!(this.inner.poll_read_ready(cx))?;
                // SAFETY: `recv` writes only initialized bytes, and says how many.
                let unfilled = unsafe { buf.unfilled_mut() };
                match this.inner.try_io(tokio::io::Interest::READABLE, || rx_timestamps::recv(fd, unfilled)) {
                    Ok((n, stamp)) => {
                        // SAFETY: the kernel initialized the first `n` bytes of the unfilled part.
                        unsafe { buf.assume_init(n) };
                        buf.advance(n);
                        break stamp;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        };
        #[cfg(not(target_os = "linux"))]
        let kernel_stamp: Option<i64> = {
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            None
        };
        if buf.filled().len() > before {
            let at = S::now();
            if this.read_scanner.scan(&buf.filled()[before..]) {
                this.stamps.read_end(at, kernel_stamp.map(S::from_kernel));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The kernel's receive timestamps (SO_TIMESTAMPNS): when the data reached the socket, before any
/// process woke up to read it. On loopback that is inside the sender's write, so with it the time each
/// side takes to wake up and read drops out of both directions.
#[cfg(target_os = "linux")]
mod rx_timestamps {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::RawFd;

    /// Asks the kernel to stamp the data `fd` receives.
    pub(super) fn enable(fd: RawFd) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: `fd` is an open socket and the option value outlives the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Reads into `buf` without blocking; returns the bytes read and the kernel's receive time of the
    /// last segment among them (ns since the epoch), if the kernel gave one.
    pub(super) fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<i64>)> {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = [0u64; 16]; // room for a cmsghdr and a timespec, aligned
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the recvmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` describes writable memory of the stated sizes.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut stamp = None;
        // SAFETY: the cmsg macros walk the control buffer the kernel filled in, within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    let nanos = (ts.tv_sec as i64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as i64);
                    stamp = (nanos > 0).then_some(nanos);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok((n as usize, stamp))
    }
}

impl<S: Stamper> AsyncWrite for StampedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let at = S::now();
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(&[io::IoSlice::new(buf)], n, at);
        }
        polled
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let at = S::now();
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(bufs, n, at);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn finds_the_ends_of_messages_whatever_the_boundaries() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(0x4, 0, &[0; 12])); // SETTINGS
        wire.extend(frame(0x8, 0, &[0; 4])); // WINDOW_UPDATE
        // A request: HEADERS (END_HEADERS only) full of bytes that look like flags, then DATA that ends it.
        wire.extend(frame(HEADERS, 0x4, &[1; 300]));
        let first = wire.len();
        wire.extend(frame(DATA, END_STREAM, &[1; 70_000])); // longer than 16 bits of length
        wire.extend(frame(0x6, 0x1, &[0; 8])); // a PING ack has flag 0x1 too, and ends nothing
        // A request without body: HEADERS with END_STREAM.
        let second = wire.len();
        wire.extend(frame(HEADERS, 0x5, &[]));

        for chunk in [1, 2, 3, 5, 7, 9, 10, 100, 4096, wire.len()] {
            let mut scanner = FrameScanner::client_to_server();
            let found: Vec<usize> = wire.chunks(chunk).enumerate().filter(|(_, piece)| scanner.scan(piece)).map(|(i, _)| i * chunk).collect();
            // Each end is reported once, in the piece that holds its flags byte.
            let mut expect: Vec<usize> = [first, second].iter().map(|at| (at + 4) / chunk * chunk).collect();
            expect.dedup();
            assert_eq!(found, expect, "chunk {chunk}");
        }
    }

    #[test]
    fn frames_that_do_not_end_a_stream_are_ignored() {
        let mut scanner = FrameScanner::client_to_server();
        assert!(!scanner.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        for (kind, flags) in [(DATA, 0), (HEADERS, 0x4), (0x3, 0x1), (0x4, 0x1), (0x6, 0x1), (0x8, 0), (0x9, 0x5)] {
            assert!(!scanner.scan(&frame(kind, flags, &[1, 1, 1])), "type {kind} flags {flags}");
        }
        assert!(scanner.scan(&frame(DATA, END_STREAM, &[])));
        let mut from_server = FrameScanner::server_to_client();
        assert!(from_server.scan(&frame(HEADERS, 0x5, &[])), "a server sends no preface");
    }

    #[test]
    fn an_answer_s_write_is_stamped_for_the_request_it_answers() {
        let stamps = ServerStamps::default();
        let origin = prost_types::Timestamp { seconds: 7, nanos: 9 };
        assert_eq!(stamps.answering(Some(origin)), None);
        stamps.wrote_end(11);
        stamps.wrote_end(12); // another stream's end: this answer is stamped already
        let sent = stamps.answering(None).unwrap();
        assert_eq!(sent, SentAnswer { origin, transmit_host_nanos: 11 });
        stamps.wrote_end(13); // an answer to a request without origin is not remembered
        assert_eq!(stamps.answering(None), None);
    }

    #[test]
    fn a_client_stamps_its_request_and_the_answer_that_follows() {
        let stamps = ClientStamps::default();
        let t = Instant::now();
        let at = |us| t + std::time::Duration::from_micros(us);
        stamps.read_end(at(1), None); // nothing asked yet
        assert_eq!(stamps.sent_and_received(), (None, None));
        stamps.wrote_end(at(2));
        stamps.read_end(at(3), Some(at(2)));
        stamps.read_end(at(4), None);
        assert_eq!(stamps.sent_and_received(), (Some(at(2)), Some(at(3))));
        assert_eq!(stamps.received_by_kernel(), Some(at(2)));
        stamps.clear();
        assert_eq!(stamps.sent_and_received(), (None, None));
    }
}
