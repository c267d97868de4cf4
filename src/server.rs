//! What every synclab server shares: a listener that stamps request arrival times, gRPC reflection (v1 and
//! v1alpha), `grpc.health.v1`, and a clean shutdown on SIGTERM or SIGINT.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::Connected;
use tonic_health::server::HealthReporter;

use crate::live_clock::host_now;

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed while serving.
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `addr` (e.g. `0.0.0.0:50051`, or port 0 for any free port).
pub async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.to_string(), source })
}

/// When the latest request on a connection arrived, stamped at the socket.
///
/// The listener scans the HTTP/2 frames a connection reads and stamps the host time of each read that
/// starts a HEADERS frame: a new request. A handler reading the stamp gets a time no earlier than its own
/// request's arrival (a later request's, if several are in flight on one connection) and no later than
/// itself, so a T2 taken from it is always inside the client's round trip and the error bound stays true.
#[derive(Debug, Default)]
pub struct ArrivalStamp {
    host_nanos: AtomicI64,
}

impl ArrivalStamp {
    /// Host time (ns since the epoch) of the latest request's arrival; 0 before any.
    pub fn arrival_host_nanos(&self) -> i64 {
        self.host_nanos.load(Ordering::Relaxed)
    }
}

/// Finds where HTTP/2 HEADERS frames start in the bytes a server reads, across read boundaries.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    preface_left: usize,
    header: [u8; 9],
    header_len: usize,
    payload_left: usize,
}

/// The client connection preface every HTTP/2 connection starts with.
const PREFACE_LEN: usize = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len();
const HEADERS: u8 = 0x1;

impl Default for FrameScanner {
    fn default() -> Self {
        Self { preface_left: PREFACE_LEN, header: [0; 9], header_len: 0, payload_left: 0 }
    }
}

impl FrameScanner {
    /// Consumes the next bytes read; true if a HEADERS frame starts in them.
    pub fn scan(&mut self, mut bytes: &[u8]) -> bool {
        let mut headers = false;
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
                if self.header_len == 4 && self.header[3] == HEADERS {
                    headers = true;
                }
                if self.header_len == 9 {
                    self.payload_left = usize::from(self.header[0]) << 16 | usize::from(self.header[1]) << 8 | usize::from(self.header[2]);
                    self.header_len = 0;
                }
                1
            };
            bytes = &bytes[skip..];
        }
        headers
    }
}

/// What a handler can learn about the connection a request came in on (a request extension).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// When the latest request on this connection arrived.
    pub arrival: Arc<ArrivalStamp>,
}

/// A TCP connection that stamps when requests arrive.
#[derive(Debug)]
pub struct StampedStream {
    inner: TcpStream,
    scanner: FrameScanner,
    arrival: Arc<ArrivalStamp>,
}

impl Connected for StampedStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo { remote_addr: self.inner.peer_addr().ok(), arrival: self.arrival.clone() }
    }
}

impl AsyncRead for StampedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = host_now();
            let this = &mut *self;
            if this.scanner.scan(&buf.filled()[before..]) {
                this.arrival.host_nanos.store(now, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// Accepts connections from a listener as [`StampedStream`]s. A failed accept (e.g. out of file
/// descriptors) is logged and skipped rather than ending the server.
pub fn stamped_incoming(listener: TcpListener) -> impl Stream<Item = io::Result<StampedStream>> {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    let stream = StampedStream { inner: stream, scanner: FrameScanner::default(), arrival: Arc::default() };
                    return Some((Ok(stream), listener));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    })
}

/// Starts the routes every synclab server has: reflection (v1 and v1alpha, describing synclab's protos and
/// the health service) and `grpc.health.v1.Health`. Returns the builder to add services to and the
/// health reporter to set their status with.
pub fn base_routes() -> Result<(RoutesBuilder, HealthReporter), ServerError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut routes = RoutesBuilder::default();
    routes
        .add_service(health)
        .add_service(configure().build_v1()?)
        .add_service(configure().build_v1alpha()?);
    Ok((routes, reporter))
}

/// Serves `routes` on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(stamped_incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// Completes on SIGTERM (what `docker stop` sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT will stop the server"),
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!("SIGINT: shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, 0, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn finds_headers_frames_whatever_the_read_boundaries() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(0x4, &[0; 12])); // SETTINGS
        wire.extend(frame(0x8, &[0; 4])); // WINDOW_UPDATE
        let headers_at = wire.len();
        // A HEADERS payload full of the byte 0x01, so a scanner that lost its place would see false starts.
        wire.extend(frame(HEADERS, &[1; 300]));
        wire.extend(frame(0x0, &[1; 70_000])); // DATA longer than 16 bits of length
        let second_headers_at = wire.len();
        wire.extend(frame(HEADERS, &[]));

        for chunk in [1, 2, 3, 7, 9, 10, 100, 4096, wire.len()] {
            let mut scanner = FrameScanner::default();
            let mut found = Vec::new();
            for (i, piece) in wire.chunks(chunk).enumerate() {
                if scanner.scan(piece) {
                    found.push(i * chunk);
                }
            }
            // Each HEADERS frame is reported once, in the read that holds its type byte.
            let expect: Vec<usize> = [headers_at, second_headers_at].iter().map(|at| (at + 3) / chunk * chunk).collect();
            let mut expect = expect;
            expect.dedup();
            assert_eq!(found, expect, "chunk {chunk}");
        }
    }

    #[test]
    fn other_frames_are_not_requests() {
        let mut scanner = FrameScanner::default();
        assert!(!scanner.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        for kind in [0x0, 0x3, 0x4, 0x6, 0x8, 0x9] {
            assert!(!scanner.scan(&frame(kind, &[1, 1, 1])), "type {kind}");
        }
        assert!(scanner.scan(&frame(HEADERS, &[])));
    }
}
