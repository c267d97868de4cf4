//! What every client of a synclab server shares: channels that connect lazily, and a deadline on
//! every call, so a dead or stalled server costs a timeout, never a hang. Also the two probes every
//! server answers: health and `Clock/Read`.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::proto::clock::clock_client::ClockClient;
use crate::proto::clock::{ReadRequest, ReadResponse};

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

/// A channel to `addr` that connects on first use (and reconnects after failures), with `timeout` as the
/// connect timeout and the deadline of every call made on it.
pub fn channel(addr: &str, timeout: Duration) -> Result<Channel, RpcError> {
    Ok(endpoint(addr, timeout)?.connect_lazy())
}

pub(crate) fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint, RpcError> {
    let endpoint = Endpoint::from_shared(server_url(addr))
        .map_err(|e| RpcError::BadAddress { addr: addr.to_string(), reason: e.to_string() })?;
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
pub async fn check_health(addr: &str, service: &str, timeout: Duration) -> Result<ServingStatus, RpcError> {
    let mut client = HealthClient::new(channel(addr, timeout)?);
    let req = request(HealthCheckRequest { service: service.to_string() }, timeout);
    let answer = with_deadline(addr, timeout, client.check(req)).await?;
    Ok(ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown))
}

/// Reads the clock named `clock` (empty: the only one) at `addr`, with its ground truth.
pub async fn read_clock(addr: &str, clock: &str, timeout: Duration) -> Result<ReadResponse, RpcError> {
    let mut client = ClockClient::new(channel(addr, timeout)?);
    let req = request(ReadRequest { clock: clock.to_string() }, timeout);
    with_deadline(addr, timeout, client.read(req)).await
}
