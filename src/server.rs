//! What every synclab server shares: a listener that stamps request arrival times, gRPC reflection (v1 and
//! v1alpha), `grpc.health.v1`, and a clean shutdown on SIGTERM or SIGINT.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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

/// When the bytes of the request now being served started to arrive on a connection.
///
/// The first read that brings bytes after the server last wrote marks the arrival of a new request. For
/// one request at a time on a connection (how a syncing client uses it) this is that request's arrival,
/// taken at the socket rather than when the handler got to run. With several requests in flight on one
/// connection it is only approximate, which a load does not care about.
#[derive(Debug, Default)]
pub struct ArrivalStamp {
    arrival_host_nanos: AtomicI64,
    idle: AtomicBool,
}

impl ArrivalStamp {
    fn new() -> Self {
        Self { arrival_host_nanos: AtomicI64::new(0), idle: AtomicBool::new(true) }
    }

    /// Host time (ns since the epoch) when the current request's first bytes were read.
    pub fn arrival_host_nanos(&self) -> i64 {
        self.arrival_host_nanos.load(Ordering::Relaxed)
    }

    fn on_read(&self) {
        if self.idle.swap(false, Ordering::Relaxed) {
            self.arrival_host_nanos.store(host_now(), Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        self.idle.store(true, Ordering::Relaxed);
    }
}

/// What a handler can learn about the connection a request came in on (a request extension).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// When the current request's bytes arrived.
    pub arrival: Arc<ArrivalStamp>,
}

/// A TCP connection that stamps when each request's bytes arrive.
#[derive(Debug)]
pub struct StampedStream {
    inner: TcpStream,
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
            self.arrival.on_read();
        }
        polled
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.arrival.on_write();
        }
        polled
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.arrival.on_write();
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
                    let stream = StampedStream { inner: stream, arrival: Arc::new(ArrivalStamp::new()) };
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
