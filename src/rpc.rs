//! What every client of a synclab server shares: channels that connect lazily, and a deadline on
//! every call, so a dead or stalled server costs a timeout, never a hang. Also the two probes every
//! server answers: health and `Clock/Read`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::net::{ClientIo, ClientStamps, MaybeTls, StampedStream, TimedTcp};
use crate::proto::clock::clock_client::ClockClient;
use crate::proto::clock::{ReadRequest, ReadResponse};
use crate::tls::Tls;

/// Why a call to a synclab server failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The address does not parse as `host:port` or a URL.
    #[error("'{addr}' is not a server address (expected host:port or http://host:port): {reason}")]
    BadAddress { addr: String, reason: String },
    /// No answer within the deadline.
    #[error("{server} did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    /// The server could not be reached.
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    /// The server answered with an error.
    #[error("{server} answered {code:?}: {message}")]
    Rpc { server: String, code: Code, message: String },
    /// The connection broke in a way that says one side speaks TLS and the other does not.
    #[error("{server}: {message}: {hint}")]
    TlsMismatch { server: String, message: String, hint: &'static str },
}

/// What a plaintext client that broke off against a server says: a TLS server reads an HTTP/2 preface
/// as a bad record and closes, which the client sees as a reset, a broken pipe or an HTTP/2 protocol error.
pub const PLAINTEXT_TO_TLS_HINT: &str = "the connection broke off at once, as it does when the server runs with mutual TLS and \
     this client does not: pass --tls-ca, --tls-cert and --tls-key (or set SYNCLAB_TLS_CA, SYNCLAB_TLS_CERT and SYNCLAB_TLS_KEY)";

/// What a TLS client says when the server answers something that is not TLS.
pub const TLS_TO_PLAINTEXT_HINT: &str = "the server did not answer TLS, as when it runs in plaintext: leave out --tls-ca, \
     --tls-cert and --tls-key (and unset SYNCLAB_TLS_CA, SYNCLAB_TLS_CERT and SYNCLAB_TLS_KEY)";

/// A status's message with every error in its source chain, where a transport error keeps its cause.
fn status_text(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = e.source();
    }
    text
}

/// Whether a failure's text is how a connection between a TLS side and a plaintext side ends: for a
/// plaintext client (`tls` false), the server hung up or spoke no HTTP/2; for a TLS client, the server's
/// bytes were no TLS record or it closed mid-handshake.
fn looks_like_tls_mismatch(tls: bool, text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    let signs: &[&str] = if tls {
        &["corrupt message", "invalidcontenttype", "invalid content type", "handshake eof", "peer closed connection without sending tls"]
    } else {
        &["h2 protocol error", "connection reset", "broken pipe", "frame with invalid size", "connection closed before message completed"]
    };
    signs.iter().any(|sign| text.contains(sign))
}

impl RpcError {
    fn from_status(server: &str, timeout: Duration, status: Status) -> Self {
        let server = server.to_string();
        match status.code() {
            Code::DeadlineExceeded => RpcError::Timeout { server, timeout },
            // tonic reports its own client-side deadline as Cancelled("Timeout expired").
            Code::Cancelled if status.message().contains("Timeout") => RpcError::Timeout { server, timeout },
            Code::Unavailable => RpcError::Unreachable { server, message: status.message().to_string() },
            code => RpcError::Rpc { server, code, message: status.message().to_string() },
        }
    }
}

/// How often a client's connection is PINGed, and how long the answer may take before the connection
/// is dropped (the next call dials again).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Turns `host:port` or a URL into a URL tonic can dial.
pub fn server_url(addr: &str) -> String {
    if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") }
}

/// A plaintext channel to `addr` (see [`Dialer::channel`]).
pub fn channel(addr: &str, timeout: Duration) -> Result<Channel, RpcError> {
    Dialer::plaintext().channel(addr, timeout)
}

/// How a process dials: plaintext, or mutual TLS presenting its own certificate.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    tls: Option<Tls>,
}

impl Dialer {
    /// Dials in plaintext.
    pub fn plaintext() -> Self {
        Self { tls: None }
    }

    /// Dials over TLS when `tls` is given, else in plaintext.
    pub fn new(tls: Option<Tls>) -> Self {
        Self { tls }
    }

    /// The TLS it dials with, if any.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Runs `call` to `server` with a deadline ([`with_deadline`]); a failure that looks like one side
    /// speaking TLS and the other not says so and names the flags that fix it.
    pub async fn call<T>(
        &self,
        server: &str,
        timeout: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, RpcError> {
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(RpcError::Timeout { server: server.to_string(), timeout }),
            Ok(Err(status)) => Err(self.explain(server, timeout, &status)),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// The error for `status` from `server`, as [`RpcError::TlsMismatch`] when that is what it looks like.
    pub fn explain(&self, server: &str, timeout: Duration, status: &Status) -> RpcError {
        let text = status_text(status);
        let tls = self.tls.is_some();
        if !matches!(status.code(), Code::DeadlineExceeded | Code::Ok) && looks_like_tls_mismatch(tls, &text) {
            let hint = if tls { TLS_TO_PLAINTEXT_HINT } else { PLAINTEXT_TO_TLS_HINT };
            return RpcError::TlsMismatch { server: server.to_string(), message: text, hint };
        }
        RpcError::from_status(server, timeout, status.clone())
    }

    /// A channel to `addr` that connects on first use (and reconnects after failures), with `timeout`
    /// as the connect timeout and the deadline of every call made on it.
    pub fn channel(&self, addr: &str, timeout: Duration) -> Result<Channel, RpcError> {
        let endpoint = endpoint(addr, timeout)?;
        Ok(match &self.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => {
                let tls = tls.clone();
                endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
                    // The configuration current now: a rotated certificate reaches every new connection.
                    let config = tls.client_config();
                    async move {
                        let tcp = connect_tcp(&uri, timeout).await?;
                        let tls = tls_handshake(config, &uri, tcp, timeout).await?;
                        Ok::<_, io::Error>(TokioIo::new(tls))
                    }
                }))
            }
        })
    }

    /// Connects to `uri` for a client that stamps its messages at the socket: TCP, then TLS if this
    /// dialer has it, the stamping layer above.
    pub(crate) async fn connect_stamped(
        &self,
        uri: &Uri,
        timeout: Duration,
        stamps: Arc<ClientStamps>,
    ) -> io::Result<StampedStream<ClientStamps, ClientIo>> {
        let tcp = TimedTcp::<ClientStamps>::new(connect_tcp(uri, timeout).await?);
        let io = match &self.tls {
            None => MaybeTls::Plain(tcp),
            Some(tls) => MaybeTls::Tls(Box::new(tls_handshake(tls.client_config(), uri, tcp, timeout).await?)),
        };
        Ok(StampedStream::with_stamps(io, stamps))
    }
}

/// A TCP connection to the host and port of `uri`, within `timeout`, with Nagle off.
async fn connect_tcp(uri: &Uri, timeout: Duration) -> io::Result<TcpStream> {
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The client side of a TLS handshake with the server named in `uri` (its certificate must name that
/// host), within `timeout`.
async fn tls_handshake<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    config: Arc<rustls::ClientConfig>,
    uri: &Uri,
    io: IO,
    timeout: Duration,
) -> io::Result<tokio_rustls::client::TlsStream<IO>> {
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let name = rustls_pki_types::ServerName::try_from(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    tokio::time::timeout(timeout, tokio_rustls::TlsConnector::from(config).connect(name, io))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("TLS handshake timed out after {timeout:?}")))?
}

pub(crate) fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint, RpcError> {
    let endpoint =
        Endpoint::from_shared(server_url(addr)).map_err(|e| RpcError::BadAddress { addr: addr.to_string(), reason: e.to_string() })?;
    if endpoint.uri().host().is_none_or(str::is_empty) || endpoint.uri().port_u16().is_none() {
        return Err(RpcError::BadAddress { addr: addr.to_string(), reason: "a host and a port are needed".into() });
    }
    // HTTP/2 PINGs find a connection whose peer went away without closing it, even between calls.
    Ok(endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// Runs `call` with a deadline: the gRPC timeout header for the server and a local timer for a server
/// that never answers at all.
pub async fn with_deadline<T>(
    server: &str,
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, RpcError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(RpcError::Timeout { server: server.to_string(), timeout }),
        Ok(Err(status)) => Err(RpcError::from_status(server, timeout, status)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

pub fn request<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Asks `addr` for its health (`service` empty for the server as a whole).
pub async fn check_health(dialer: &Dialer, addr: &str, service: &str, timeout: Duration) -> Result<ServingStatus, RpcError> {
    let mut client = HealthClient::new(dialer.channel(addr, timeout)?);
    let req = request(HealthCheckRequest { service: service.to_string() }, timeout);
    let answer = dialer.call(addr, timeout, client.check(req)).await?;
    Ok(ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown))
}

/// Reads the clock named `clock` (empty: the only one) at `addr`, with its ground truth.
pub async fn read_clock(dialer: &Dialer, addr: &str, clock: &str, timeout: Duration) -> Result<ReadResponse, RpcError> {
    let mut client = ClockClient::new(dialer.channel(addr, timeout)?);
    let req = request(ReadRequest { clock: clock.to_string() }, timeout);
    dialer.call(addr, timeout, client.read(req)).await
}
