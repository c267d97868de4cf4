//! The limits every synclab server applies, in one place. synclab's messages are tiny and its clients
//! few, so the limits are small: a flood of connections, large or unfinished requests, or watch streams
//! nobody reads costs a bounded amount of memory and never the legitimate callers' latency.

use std::time::Duration;

/// What one server accepts, and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes (one message with its 5-byte gRPC prefix). Larger requests are
    /// refused with RESOURCE_EXHAUSTED as soon as their bytes pass the limit, before decoding.
    pub max_request_bytes: usize,
    /// Bytes that all unfinished requests of the process may hold together (each holds what has come,
    /// or what its message's prefix declared if that is more); past it, more is refused with
    /// RESOURCE_EXHAUSTED.
    pub max_buffered_request_bytes: usize,
    /// Concurrent streams (calls) on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control windows: how much a peer may send before the server reads it.
    pub stream_window: u32,
    pub connection_window: u32,
    /// Largest block of request headers.
    pub max_header_bytes: u32,
    /// A request (unary calls: until the answer) that takes longer is ended with an error.
    pub request_timeout: Duration,
    /// HTTP/2 PINGs on quiet connections, and how long the answer may take before the connection is
    /// considered dead and closed.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A connection that sends nothing for this long after it was accepted is closed (a client sends
    /// its preface at once).
    pub first_bytes_timeout: Duration,
    /// A connection that sends nothing for this long is closed. Live clients answer the keepalive
    /// PINGs, so only dead or hostile ones reach it.
    pub idle_timeout: Duration,
    /// Connections are asked to go away (GOAWAY; clients reconnect) after this age.
    pub max_connection_age: Duration,
    /// Open connections at most; at the limit, the one that sent a request least recently is closed
    /// to make room.
    pub max_connections: usize,
    /// Open watch streams (`WatchLeader`, `WatchRounds`) at most, per service.
    pub max_watchers: usize,
    /// TLS handshakes: each one's deadline, and how many may be pending before the oldest is dropped.
    pub handshakes: crate::tls::accept::HandshakeLimits,
    /// On shutdown, how long calls in flight may still finish before every connection is closed.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 * 1024,
            max_buffered_request_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 16,
            stream_window: 64 * 1024,
            connection_window: 128 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            first_bytes_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            max_connection_age: Duration::from_secs(30 * 60),
            max_connections: 256,
            max_watchers: 64,
            handshakes: crate::tls::accept::HandshakeLimits::default(),
            shutdown_grace: Duration::from_millis(300),
        }
    }
}
