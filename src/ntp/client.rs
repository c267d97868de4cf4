//! The NTP client: syncs one device's clock from any NTPv4 server (synclab's, chronyd, ntpd-rs...), in
//! interleaved mode where the server speaks it and basic mode otherwise, with the same sampler
//! (`synclab_core::sampler`: pairing and choice), estimate, bound and report as the gRPC client
//! (`crate::cristian`).
//!
//! Each exchange runs on a blocking thread with a plain socket that no epoll instance watches: on Linux a
//! socket registered with epoll runs epoll's wake-up callbacks between the kernel's transmit stamp of a
//! datagram and its arrival on loopback, which lengthens the request's leg by a few hundred nanoseconds
//! against a server whose socket has no such watcher (chronyd waits in `select`): a +0.12 µs offset on
//! loopback, measured. A blocking thread waits in `poll` only once the request has left.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::UdpSocket;
use synclab_core::cristian::Estimator;
use synclab_core::ntp::nts::{COOKIES_PER_RESPONSE, Key, Keys, NONCE_LEN, NtsReplyError, fields as nts_fields};
use synclab_core::ntp::{Answered, ClientExchange, Packet, ReplyError, check_reply, completed, next_request, root_distance_nanos};
use synclab_core::sampler::Sampler;

use crate::clock::{LiveClock, host_now};
use crate::cristian::{SyncError, SyncReport, apply_estimate};
use crate::net::linux;
use crate::ntp::nts::{KeTarget, NtsError, establish};

/// Whether the client asks for interleaved replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NtpMode {
    /// Ask for interleaved mode (RFC 9769) and fall back to basic replies where the server does not
    /// interleave.
    #[default]
    Interleaved,
    /// Basic client/server mode only.
    Basic,
}

impl synclab_core::Named for NtpMode {
    const ALL: &'static [Self] = &[NtpMode::Interleaved, NtpMode::Basic];

    fn as_str(self) -> &'static str {
        match self {
            NtpMode::Interleaved => "interleaved",
            NtpMode::Basic => "basic",
        }
    }
}

/// An NTP client of one server, for one device's clock.
#[derive(Debug)]
pub struct NtpClient {
    server: String,
    timeout: Duration,
    mode: NtpMode,
    socket: Option<Arc<UdpSocket>>,
    /// Whether the kernel stamps what the socket sends, and how many datagrams it sent.
    tx_stamps: bool,
    sent: u32,
    /// With NTS: where to run NTS-KE, and what it gave.
    nts: Option<NtsState>,
}

/// An NTS client's association: its keys, its cookies (each used once), where NTP goes.
#[derive(Debug)]
struct NtsState {
    target: KeTarget,
    keys: Option<Keys>,
    cookies: std::collections::VecDeque<Vec<u8>>,
    ntp_addr: Option<String>,
}

/// How a request is authenticated: its unique identifier and the server-to-client key.
type NtsCheck = ([u8; nts_fields::UID_LEN], Key);

/// Why an exchange gave no reply.
enum ExchangeError {
    Reply(ReplyError),
    Nts(NtsReplyError),
}

/// One reply as received: the checked packet, how it answered, and when it arrived on the device's clock.
struct Received {
    reply: Packet,
    answered: Answered,
    t4: i64,
    kernel: bool,
    /// The kernel's transmit time of the request, on the device's clock.
    t1_kernel: Option<i64>,
    /// With NTS: the new cookies the reply carried.
    cookies: Vec<Vec<u8>>,
}

impl NtpClient {
    /// A client of the NTP server at `server` (`host:port`); `timeout` bounds each request.
    pub fn new(server: &str, timeout: Duration, mode: NtpMode) -> Self {
        Self { server: server.to_string(), timeout, mode, socket: None, tx_stamps: false, sent: 0, nts: None }
    }

    /// Authenticates every exchange with NTS (RFC 8915): keys and cookies from NTS-KE with `target`,
    /// NTP then to the server and port NTS-KE names. Replies that do not authenticate are ignored.
    pub fn with_nts(mut self, target: KeTarget) -> Self {
        self.nts = Some(NtsState { target, keys: None, cookies: Default::default(), ntp_addr: None });
        self
    }

    /// Where NTP requests go: the NTS-KE server's choice with NTS, else `--server`.
    fn ntp_addr(&self) -> &str {
        self.nts.as_ref().and_then(|n| n.ntp_addr.as_deref()).unwrap_or(&self.server)
    }

    /// Runs NTS-KE if the association has no keys or no cookie left.
    async fn ensure_nts(&mut self) -> Result<(), SyncError> {
        let Some(nts) = self.nts.as_mut() else { return Ok(()) };
        if nts.keys.is_some() && !nts.cookies.is_empty() {
            return Ok(());
        }
        let outcome = establish(&nts.target)
            .await
            .map_err(|e| SyncError::Nts { server: nts.target.addr.clone(), source: Box::new(NtsError::from(e)) })?;
        tracing::debug!(ntp = %outcome.ntp_addr, cookies = outcome.cookies.len(), "NTS-KE done");
        if nts.ntp_addr.as_deref() != Some(outcome.ntp_addr.as_str()) {
            self.socket = None;
        }
        nts.keys = Some(outcome.keys);
        nts.cookies = outcome.cookies.into();
        nts.ntp_addr = Some(outcome.ntp_addr);
        Ok(())
    }

    /// The bytes of `request`: the header alone, or with NTS its fields (a cookie spent, placeholders
    /// for the cookies missing, the authenticator) and what checks the reply.
    async fn request_bytes(&mut self, request: &Packet) -> Result<(Vec<u8>, Option<NtsCheck>), SyncError> {
        let header = request.to_bytes();
        if self.nts.is_none() {
            return Ok((header.to_vec(), None));
        }
        self.ensure_nts().await?;
        let nts = self.nts.as_mut().expect("NTS checked above");
        let (Some(keys), Some(cookie)) = (nts.keys.as_ref(), nts.cookies.pop_front()) else {
            return Err(SyncError::Nts { server: self.server.clone(), source: Box::new(NtsError::Reply(NtsReplyError::Nak)) });
        };
        let placeholders = COOKIES_PER_RESPONSE.saturating_sub(1 + nts.cookies.len());
        let mut uid = [0u8; nts_fields::UID_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut uid)
            .and_then(|()| getrandom::fill(&mut nonce))
            .map_err(|e| SyncError::Io { server: self.server.clone(), source: io::Error::other(format!("no randomness for NTS: {e}")) })?;
        let bytes = nts_fields::client_request(&header, &uid, &cookie, placeholders, &keys.c2s, &nonce);
        Ok((bytes, Some((uid, keys.s2c))))
    }

    fn io(&self, source: io::Error) -> SyncError {
        SyncError::Io { server: self.server.clone(), source }
    }

    async fn socket(&mut self) -> Result<Arc<UdpSocket>, SyncError> {
        if self.socket.is_none() {
            let addr: SocketAddr = tokio::net::lookup_host(self.ntp_addr().to_string())
                .await
                .map_err(|e| self.io(e))?
                .next()
                .ok_or_else(|| self.io(io::Error::new(io::ErrorKind::NotFound, "the name has no address")))?;
            let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
            let socket = UdpSocket::bind(local).map_err(|e| self.io(e))?;
            socket.connect(addr).map_err(|e| self.io(e))?;
            linux::enable(socket.as_raw_fd()).map_err(|e| self.io(e))?;
            self.tx_stamps = linux::enable_tx_stamps(socket.as_raw_fd()).is_ok();
            self.sent = 0;
            self.socket = Some(Arc::new(socket));
        }
        Ok(self.socket.clone().expect("socket set above"))
    }

    /// Sends `request` and waits for the first reply that passes the checks; others (late replies to
    /// earlier requests, forgeries) are ignored. A kiss-o'-death fails.
    async fn exchange(&mut self, request: &Packet, clock: &LiveClock) -> Result<Received, SyncError> {
        let server = self.server.clone();
        let timeout = self.timeout;
        let (bytes, nts) = self.request_bytes(request).await?;
        let socket = self.socket().await?;
        let (tx_stamps, id) = (self.tx_stamps, self.sent);
        self.sent = self.sent.wrapping_add(1);
        let (request, clock, name) = (*request, clock.clone(), server.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            blocking_exchange(&socket, &request, &bytes, nts.as_ref(), &clock, tx_stamps, id, timeout, &name)
        })
        .await;
        match outcome {
            Ok(Ok(Ok(received))) => {
                if let Some(nts) = self.nts.as_mut() {
                    nts.cookies.extend(received.cookies.iter().cloned());
                    nts.cookies.truncate(COOKIES_PER_RESPONSE);
                }
                Ok(received)
            }
            Ok(Ok(Err(ExchangeError::Reply(source)))) => Err(SyncError::Ntp { server, source }),
            Ok(Ok(Err(ExchangeError::Nts(source)))) => {
                // The server no longer takes our cookies: the next exchange runs NTS-KE again.
                if let Some(nts) = self.nts.as_mut() {
                    nts.keys = None;
                    nts.cookies.clear();
                }
                Err(SyncError::Nts { server, source: Box::new(NtsError::from(source)) })
            }
            Ok(Err(source)) => Err(SyncError::Io { server, source }),
            Err(e) => Err(SyncError::Io { server, source: io::Error::other(format!("the exchange's thread failed: {e}")) }),
        }
    }

    /// Takes `samples` exchanges (one request more in interleaved mode, for the last one's precise
    /// transmit time), estimates the offset from the minimum-delay one, and corrects `clock` by it. Any
    /// failed request fails the sync, and nothing is applied.
    pub async fn sync(&mut self, clock: &LiveClock, samples: usize, estimator: Estimator) -> Result<SyncReport, SyncError> {
        let samples = samples.max(1);
        // Key establishment before the first request's time is read.
        self.ensure_nts().await?;
        let interleave = self.mode == NtpMode::Interleaved;
        let requests = samples + usize::from(interleave);
        let bad = |server: &str, source| SyncError::BadExchange { server: server.to_string(), source };
        let mut sampler = Sampler::new();
        let mut previous: Option<ClientExchange> = None;
        let mut last_reply = None;
        for _ in 0..requests {
            let t1 = clock.at(host_now());
            let request = next_request(previous.as_ref(), interleave, t1, 0);
            let got = self.exchange(&request, clock).await?;
            // The kernel's transmit time where it is consistent: no earlier than the time read before
            // sending, no later than the reply's arrival.
            let t1_kernel = got.t1_kernel.filter(|&k| k >= t1 && k <= got.t4);
            let t1 = t1_kernel.unwrap_or(t1);
            // Both of the client's stamps from the kernel: its request's departure and the reply's arrival.
            let kernel = got.kernel && t1_kernel.is_some();
            let completed = completed(previous.as_ref(), t1, &got.reply, got.answered, got.t4, kernel);
            sampler.take(completed).map_err(|e| bad(&self.server, e))?;
            previous = Some(ClientExchange { t1, server_receive: got.reply.receive, server_transmit: got.reply.transmit, t4: got.t4 });
            last_reply = Some(got.reply);
        }
        let last = last_reply.expect("at least one request was made");
        let choice = sampler.choose(estimator, root_distance_nanos(&last).round() as u64).map_err(|e| bad(&self.server, e))?;
        Ok(apply_estimate(clock, self.ntp_addr(), server_name(&last), &choice)?)
    }
}

/// One exchange on a blocking thread: send `bytes` (`request`'s, with NTS fields if `nts`; with the
/// kernel's transmit stamp of datagram `id` where the socket has them), then wait in `poll` for a valid
/// reply until `timeout`. With NTS a reply must carry the request's unique identifier and authenticate.
#[allow(clippy::too_many_arguments)]
fn blocking_exchange(
    socket: &UdpSocket,
    request: &Packet,
    bytes: &[u8],
    nts: Option<&NtsCheck>,
    clock: &LiveClock,
    tx_stamps: bool,
    id: u32,
    timeout: Duration,
    server: &str,
) -> io::Result<Result<Received, ExchangeError>> {
    let fd = socket.as_raw_fd();
    let deadline = Instant::now() + timeout;
    loop {
        match linux::send_to(fd, bytes, None, tx_stamps) {
            Ok(_) => break,
            // The send buffer is full (only under a flood): wait for room like for a reply.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(fd, libc::POLLOUT, deadline, timeout)?;
            }
            Err(e) => return Err(e),
        }
    }
    let mut buf = [0u8; 2048];
    // The request's transmit stamp, once read off the error queue (poll reports the queue's entries as
    // an error, so they are read as they come, not left to wake the wait again and again).
    let mut t1_host = None;
    loop {
        let revents = wait(fd, libc::POLLIN, deadline, timeout)?;
        if revents & libc::POLLERR != 0 && revents & libc::POLLIN == 0 {
            t1_host = sent_at(fd, id).or(t1_host);
        }
        let (n, _, kernel) = match linux::recv_from(fd, &mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::InvalidData) => continue,
            Err(e) => return Err(e),
        };
        let read_at = host_now();
        let datagram = &buf[..n.min(buf.len())];
        // With NTS nothing in a reply counts (a kiss-o'-death neither) unless it authenticates; a NAK
        // with our identifier is the one exception, and only tells us to run NTS-KE again.
        let cookies = match nts.map(|(uid, s2c)| nts_fields::check_reply(datagram, uid, s2c)) {
            None => Vec::new(),
            Some(Ok(cookies)) => cookies,
            Some(Err(e @ NtsReplyError::Nak)) => return Ok(Err(ExchangeError::Nts(e))),
            Some(Err(e)) => {
                tracing::debug!(server, error = %e, "NTS reply ignored");
                continue;
            }
        };
        match check_reply(request, datagram) {
            Ok((reply, answered)) => {
                let host = kernel.filter(|&k| k <= read_at).unwrap_or(read_at);
                let t1_kernel = if tx_stamps { t1_host.or_else(|| sent_at(fd, id)).map(|h| clock.at(h)) } else { None };
                return Ok(Ok(Received { reply, answered, t4: clock.at(host), kernel: kernel.is_some(), t1_kernel, cookies }));
            }
            Err(e @ ReplyError::Kiss(_)) => return Ok(Err(ExchangeError::Reply(e))),
            Err(e) => tracing::debug!(server, error = %e, "NTP reply ignored"),
        }
    }
}

/// Waits in poll(2) until `fd` is ready for `events` (or has an error) or `deadline` passes (a
/// `TimedOut` error naming `timeout`); returns what poll reported.
fn wait(fd: std::os::fd::RawFd, events: libc::c_short, deadline: Instant, timeout: Duration) -> io::Result<libc::c_short> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no valid reply within {timeout:?}")));
        }
        let revents = linux::poll(fd, events, left)?;
        if revents != 0 {
            return Ok(revents);
        }
    }
}

/// The kernel's transmit time (host ns) of datagram `id`, from the socket's error queue; older stamps
/// left there are dropped.
fn sent_at(fd: std::os::fd::RawFd, id: u32) -> Option<i64> {
    let mut found = None;
    for _ in 0..16 {
        match linux::recv_tx_stamp(fd) {
            Ok(Some((i, host))) if i == id => found = Some(host),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    found
}

/// How a reply names its server: NTP, the stratum and the reference ID (ASCII, or an address).
fn server_name(reply: &Packet) -> String {
    let id = reply.reference_id;
    let ascii = id.iter().all(|&b| b == 0 || b.is_ascii_graphic()) && id[0] != 0;
    let refid =
        if ascii { String::from_utf8_lossy(&id).trim_end_matches('\0').to_string() } else { std::net::Ipv4Addr::from(id).to_string() };
    format!("NTP stratum {} ({refid})", reply.stratum)
}
