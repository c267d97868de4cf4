//! What every synclab server shares: a listener whose connections stamp requests and answers at the
//! socket ([`crate::net`]), gRPC reflection (v1 and v1alpha), `grpc.health.v1`, and a clean shutdown on
//! SIGTERM or SIGINT.

use std::future::Future;
use std::io;

use futures::Stream;
use tokio::net::TcpListener;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::server::HealthReporter;

use crate::net::StampedStream;

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
                    let stream = StampedStream::new(stream);
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

/// A stop flag that turns true on SIGTERM or SIGINT, for a process's server and loops to share.
pub fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Completes when `stop` turns true (or nothing can turn it true any more).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
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
