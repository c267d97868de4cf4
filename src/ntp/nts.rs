//! NTS (RFC 8915) over the network: the NTS-KE listener of the time server (TLS 1.3 on TCP, ALPN
//! `ntske/1`, port 4460 by default) and the client's NTS-KE session. The records, cookies and extension
//! fields are `synclab_core::ntp::nts`; this is TCP, TLS, the key export and the limits.
//!
//! Limits of the listener: a session (handshake, request, response) has [`KeLimits::timeout`] in all;
//! at most [`KeLimits::max_pending`] sessions run at once, and one more evicts the oldest (as the gRPC
//! listeners' handshakes do, `crate::tls::accept`), so clients that stall cost their own connections and
//! never a real client's, whose session takes milliseconds; a request over
//! `synclab_core::ntp::nts::ke::MAX_REQUEST_LEN` bytes is refused. Every session that does not end with
//! cookies handed out is counted by kind in [`NtsKeStats`]'s `refused`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls_pki_types::ServerName;
use synclab_core::ntp::nts::ke::{self, Established, KeClientError, KeParseError, KeRefusal, Negotiated};
use synclab_core::ntp::nts::{KEY_LEN, Keys, MasterKeys};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::server::Stop;
use crate::telemetry::Refusals;
use crate::tls::accept::Pending;

/// How the NTS-KE listener bounds its sessions: the gRPC listeners' handshake limits (2 s, 256 at once),
/// here over the whole session.
pub use crate::tls::accept::HandshakeLimits as KeLimits;

/// How often the master key of the cookies is replaced, and how many are kept: a cookie stays good
/// for two periods after the key that sealed it was replaced.
pub const MASTER_KEY_PERIOD: Duration = Duration::from_secs(3600);

/// What the NTS-KE listener has done.
#[derive(Debug)]
pub struct NtsKeStats {
    /// Sessions that handed out cookies.
    pub established: AtomicU64,
    /// Sessions that did not, by kind (`timeout`, `evicted`, `handshake`, `oversized`, `malformed`,
    /// `unknown_critical`, `bad_request`, `not_agreed`, `closed`, `io`).
    pub refused: Refusals,
}

impl Default for NtsKeStats {
    fn default() -> Self {
        Self { established: AtomicU64::new(0), refused: Refusals::new("NTS-KE session") }
    }
}

impl NtsKeStats {
    /// Sessions refused of kind `kind`.
    pub fn refused(&self, kind: &str) -> u64 {
        self.refused.totals().iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
    }
}

/// Why a session handed out no cookie (server side) or got none (client side).
#[derive(Debug, thiserror::Error)]
pub enum KeSessionError {
    /// The TLS handshake failed (a certificate not trusted, a name that does not match, no common
    /// protocol version or ALPN).
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer.
        peer: String,
        /// rustls's reason.
        source: io::Error,
    },
    /// The peer closed the connection before a whole message.
    #[error("{peer} closed the connection before a whole NTS-KE message")]
    Closed {
        /// The peer.
        peer: String,
    },
    /// A server refused the request (and told the client so).
    #[error("NTS-KE request refused: {0}")]
    Refused(#[from] KeRefusal),
    /// The client could not use the server's response.
    #[error("NTS-KE with {peer}: {source}")]
    Response {
        /// The server.
        peer: String,
        /// What is wrong.
        source: KeClientError,
    },
    /// The client offered no protocol or algorithm the server speaks.
    #[error("the client offered neither NTPv4 nor AEAD_AES_SIV_CMAC_256")]
    NotAgreed,
    /// The session did not finish in time.
    #[error("NTS-KE with {peer} did not finish within {timeout:?}")]
    Timeout {
        /// The peer.
        peer: String,
        /// The limit.
        timeout: Duration,
    },
    /// The connection failed.
    #[error("NTS-KE with {peer}: {source}")]
    Io {
        /// The peer.
        peer: String,
        /// The error.
        source: io::Error,
    },
    /// The keys could not be exported from the TLS session.
    #[error("cannot export the NTS keys: {0}")]
    Export(rustls::Error),
}

impl KeSessionError {
    /// A short fixed name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            KeSessionError::Handshake { .. } => "handshake",
            KeSessionError::Closed { .. } => "closed",
            KeSessionError::Refused(r) => r.kind(),
            KeSessionError::NotAgreed => "not_agreed",
            KeSessionError::Response { .. } => "bad_response",
            KeSessionError::Timeout { .. } => "timeout",
            KeSessionError::Io { .. } | KeSessionError::Export(_) => "io",
        }
    }
}

/// Reads one NTS-KE message of at most `limit` bytes: `Ok(bytes)` once whole, a parse error (oversized
/// among them) as soon as it cannot be one.
async fn read_message<S: AsyncRead + Unpin>(stream: &mut S, limit: usize, peer: &str) -> Result<Vec<u8>, KeSessionError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        match ke::message_len(&buf, limit).map_err(KeRefusal::from)? {
            Some(len) if len == buf.len() => return Ok(buf),
            Some(len) => return Err(KeRefusal::from(KeParseError::Trailing(buf.len() - len)).into()),
            None => {}
        }
        let n = stream.read(&mut chunk).await.map_err(|source| KeSessionError::Io { peer: peer.to_string(), source })?;
        if n == 0 {
            return Err(KeSessionError::Closed { peer: peer.to_string() });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Both keys of an NTS association, exported from the TLS session (RFC 8915 §5.1).
fn export(conn: &rustls::ConnectionCommon<impl Sized>, aead: u16) -> Result<Keys, KeSessionError> {
    let mut keys = Keys { c2s: [0; KEY_LEN], s2c: [0; KEY_LEN] };
    conn.export_keying_material(&mut keys.c2s, ke::EXPORTER_LABEL, Some(&ke::exporter_context(aead, false)))
        .map_err(KeSessionError::Export)?;
    conn.export_keying_material(&mut keys.s2c, ke::EXPORTER_LABEL, Some(&ke::exporter_context(aead, true)))
        .map_err(KeSessionError::Export)?;
    Ok(keys)
}

/// The NTS-KE listener of a time server.
pub struct NtsKeServer {
    listener: TcpListener,
    /// The TLS configuration for a session accepted now (it may rotate: see `crate::tls::Tls`).
    configs: Box<dyn crate::tls::accept::ServerConfigs>,
    master: Arc<MasterKeys>,
    ntp_port: u16,
    limits: KeLimits,
    stats: Arc<NtsKeStats>,
}

impl std::fmt::Debug for NtsKeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtsKeServer").field("listener", &self.listener).field("ntp_port", &self.ntp_port).finish_non_exhaustive()
    }
}

/// A new master key from the operating system's randomness.
pub fn master_key() -> io::Result<[u8; KEY_LEN]> {
    crate::random::secret().map_err(|e| io::Error::other(format!("no randomness for the NTS master key: {e}")))
}

/// Master keys for a server: a random first key, and random nonces.
pub fn new_master_keys() -> io::Result<Arc<MasterKeys>> {
    let seed = (u128::from(crate::random::nonce()) << 64) | u128::from(crate::random::nonce());
    Ok(Arc::new(MasterKeys::new(crate::random::nonce() as u32, master_key()?, synclab_core::ntp::nts::KEPT_KEYS, seed)))
}

impl NtsKeServer {
    /// Binds `addr` (TCP) to hand out cookies under `master` for the NTP server on `ntp_port`, with the
    /// TLS configuration `configs` gives for each session (a fixed one, see
    /// `crate::tls::nts_ke_server_config`, or the current one of a `crate::tls::Tls` that rotates).
    pub async fn bind(
        addr: &str,
        configs: impl crate::tls::accept::ServerConfigs,
        master: Arc<MasterKeys>,
        ntp_port: u16,
        limits: KeLimits,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, configs: Box::new(configs), master, ntp_port, limits, stats: Arc::new(NtsKeStats::default()) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The counters, shared with the running task.
    pub fn stats(&self) -> Arc<NtsKeStats> {
        self.stats.clone()
    }

    /// Serves sessions until `stop`; sessions in progress are dropped then. The master key is replaced
    /// every [`MASTER_KEY_PERIOD`].
    pub async fn serve(self, stop: Stop) -> io::Result<()> {
        let mut pending = Pending::default();
        let mut rotate = tokio::time::interval_at(tokio::time::Instant::now() + MASTER_KEY_PERIOD, MASTER_KEY_PERIOD);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = rotate.tick() => {
                    match master_key() {
                        Ok(key) => tracing::info!(id = self.master.rotate(key), "NTS master key replaced"),
                        Err(e) => tracing::warn!(error = %e, "NTS master key kept"),
                    }
                    continue;
                }
                () = stop.wait() => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "NTS-KE accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            for _ in 0..pending.make_room(self.limits.max_pending) {
                let detail = format_args!("{} sessions pending; the oldest was dropped", self.limits.max_pending);
                self.stats.refused.refused("evicted", &detail);
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(self.configs.current());
            let (master, stats, limits, ntp_port) = (self.master.clone(), self.stats.clone(), self.limits, self.ntp_port);
            let task = tokio::spawn(async move {
                let peer = peer.to_string();
                let outcome = tokio::time::timeout(limits.timeout, session(&acceptor, stream, &master, ntp_port, &peer)).await;
                match outcome {
                    Ok(Ok(())) => {
                        stats.established.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => stats.refused.refused(e.kind(), &e),
                    Err(_) => stats.refused.refused("timeout", &KeSessionError::Timeout { peer, timeout: limits.timeout }),
                }
            });
            pending.push(task.abort_handle());
        }
        pending.make_room(0);
        Ok(())
    }
}

/// One server session: handshake, request, response (cookies, or an Error record), close.
async fn session(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    master: &MasterKeys,
    ntp_port: u16,
    peer: &str,
) -> Result<(), KeSessionError> {
    let _ = stream.set_nodelay(true);
    let mut tls = acceptor.accept(stream).await.map_err(|source| KeSessionError::Handshake { peer: peer.to_string(), source })?;
    let asked = match read_message(&mut tls, ke::MAX_REQUEST_LEN, peer).await {
        Ok(bytes) => ke::parse_message(&bytes, ke::MAX_REQUEST_LEN).map_err(KeRefusal::from).and_then(|records| ke::negotiate(&records)),
        Err(KeSessionError::Refused(r)) => Err(r),
        Err(e) => return Err(e),
    };
    let (bytes, result) = match asked {
        Ok(Negotiated::Ntpv4 { aead }) => {
            let keys = export(tls.get_ref().1, aead)?;
            let cookies: Vec<Vec<u8>> = (0..ke::COOKIES_PER_RESPONSE).map(|_| master.cookie(&keys)).collect();
            (ke::response(Negotiated::Ntpv4 { aead }, &cookies, None, Some(ntp_port)), Ok(()))
        }
        // No protocol or algorithm in common: the response says so with empty lists.
        Ok(Negotiated::Nothing) => (ke::response(Negotiated::Nothing, &[], None, None), Err(KeSessionError::NotAgreed)),
        Err(refusal) => (refusal.response(), Err(KeSessionError::Refused(refusal))),
    };
    let io = |source| KeSessionError::Io { peer: peer.to_string(), source };
    tls.write_all(&bytes).await.map_err(io)?;
    tls.shutdown().await.map_err(io)?;
    result
}

/// Why an NTS client got no time.
#[derive(Debug, thiserror::Error)]
pub enum NtsError {
    /// Key establishment failed.
    #[error(transparent)]
    Ke(#[from] KeSessionError),
    /// The NTP server refused the cookie (an NTS NAK), or answered without NTS.
    #[error(transparent)]
    Reply(#[from] synclab_core::ntp::nts::NtsReplyError),
}

/// Where and how a client runs NTS-KE.
#[derive(Clone)]
pub struct KeTarget {
    /// The NTS-KE server, host:port.
    pub addr: String,
    /// The TLS configuration (see `crate::tls::nts_ke_client_config`).
    pub config: Arc<rustls::ClientConfig>,
    /// Deadline of the whole session.
    pub timeout: Duration,
}

impl std::fmt::Debug for KeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeTarget").field("addr", &self.addr).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// The host part of host:port ([v6]:port too).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// What a client's NTS-KE session gives: the keys, the cookies, and where to send NTP (host:port).
#[derive(Debug, Clone)]
pub struct KeOutcome {
    /// The association's keys.
    pub keys: Keys,
    /// The cookies.
    pub cookies: Vec<Vec<u8>>,
    /// The NTP server, host:port (the NTS-KE server's host and port 123 unless the response said else).
    pub ntp_addr: String,
}

/// Runs NTS-KE with `target` (the certificate checked against its CA and for the host's name).
pub async fn establish(target: &KeTarget) -> Result<KeOutcome, KeSessionError> {
    let peer = target.addr.clone();
    match tokio::time::timeout(target.timeout, establish_now(target)).await {
        Ok(result) => result,
        Err(_) => Err(KeSessionError::Timeout { peer, timeout: target.timeout }),
    }
}

async fn establish_now(target: &KeTarget) -> Result<KeOutcome, KeSessionError> {
    let peer = target.addr.as_str();
    let io = |source| KeSessionError::Io { peer: peer.to_string(), source };
    let host = host_of(peer).to_string();
    let name = ServerName::try_from(host.clone())
        .map_err(|e| io(io::Error::new(io::ErrorKind::InvalidInput, format!("'{host}' is not a server name: {e}"))))?;
    let stream = TcpStream::connect(peer).await.map_err(io)?;
    let _ = stream.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(target.config.clone());
    let mut tls = connector.connect(name, stream).await.map_err(|source| KeSessionError::Handshake { peer: peer.to_string(), source })?;
    tls.write_all(&ke::client_request()).await.map_err(io)?;
    tls.flush().await.map_err(io)?;
    let bytes = read_message(&mut tls, ke::MAX_RESPONSE_LEN, peer).await.map_err(|e| match e {
        KeSessionError::Refused(KeRefusal::Malformed(source)) => {
            KeSessionError::Response { peer: peer.to_string(), source: KeClientError::Malformed(source) }
        }
        e => e,
    })?;
    let records = ke::parse_message(&bytes, ke::MAX_RESPONSE_LEN)
        .map_err(|e| KeSessionError::Response { peer: peer.to_string(), source: e.into() })?;
    let Established { aead, cookies, server, port } =
        ke::established(&records).map_err(|source| KeSessionError::Response { peer: peer.to_string(), source })?;
    let keys = export(tls.get_ref().1, aead)?;
    let _ = tls.shutdown().await;
    let ntp_host = server.unwrap_or(host);
    let ntp_addr = if ntp_host.contains(':') {
        format!("[{ntp_host}]:{}", port.unwrap_or(123))
    } else {
        format!("{ntp_host}:{}", port.unwrap_or(123))
    };
    Ok(KeOutcome { keys, cookies, ntp_addr })
}

/// Writes raw bytes to an NTS-KE server over TLS and returns what it answers (up to `limit` bytes or
/// the close): for tests that speak the protocol wrong on purpose.
pub async fn raw_exchange<S: AsyncRead + AsyncWrite + Unpin>(tls: &mut S, bytes: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    tls.write_all(bytes).await?;
    tls.flush().await?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    while out.len() < limit {
        match tls.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(out)
}
