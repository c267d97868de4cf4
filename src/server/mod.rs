//! What every synclab server shares, built in one place ([`Services`] → [`Server`]):
//!
//! - a listener whose connections stamp requests and answers at the socket ([`crate::net`]);
//! - the limits of [`Limits`]: request size (RESOURCE_EXHAUSTED past it, before decoding), streams per
//!   connection, flow-control windows, a per-request timeout, HTTP/2 keepalive, closing connections
//!   that stay silent or grow old, a cap on connections (which sheds readers, never a member's
//!   connection: [`members`]) and on watch streams; TLS handshakes bounded ([`crate::tls::accept`]);
//! - gRPC reflection (v1 and v1alpha) listing exactly the services this process serves, and
//!   `grpc.health.v1`, SERVING while it runs;
//! - a shutdown that never hangs: on [`Stop`] health turns NOT_SERVING, watch streams end with
//!   UNAVAILABLE, calls in flight get [`Limits::shutdown_grace`], and then every connection is closed.

pub mod guard;
pub mod limits;
pub mod members;
pub mod watch;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use limits::Limits;
pub use watch::{WatchStream, Watched, Watchers};
// Where they were before they moved down a layer (the stop signal, the text helper), for their callers.
pub use crate::stop::{Stop, StopHandle, shutdown_signal};
pub use crate::text::excerpt;

use crate::net::ServerStream;
use crate::net::connections::Registry;
use crate::observe::grpc as observed;

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

/// The services one process serves, before it serves them.
pub struct Services {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    limits: Limits,
    tls: Option<crate::tls::Tls>,
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl Services {
    /// No services yet, with the [`Limits`] (their one home: `Limits::default()`, which the services
    /// that stream read too, for their cap on watchers).
    pub fn new() -> Self {
        Self { routes: RoutesBuilder::default(), names: Vec::new(), limits: Limits::default(), tls: None }
    }

    /// Serves over mutual TLS (a client certificate from the CA required) when `tls` is given.
    pub fn tls(mut self, tls: Option<&crate::tls::Tls>) -> Self {
        self.tls = tls.cloned();
        self
    }

    /// Adds a service. Reflection lists it, and health reports it SERVING.
    pub fn service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Adds reflection (of the added services and health) and health; every added service, and the
    /// server as a whole, starts SERVING.
    pub async fn build(mut self) -> Result<Server, ServerError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let health_name = <tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService> as NamedService>::NAME;
        let configure = || {
            let builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(health_name);
            self.names.iter().fold(builder, |b, name| b.with_service_name(*name))
        };
        let v1 = configure().build_v1()?;
        let v1alpha = configure().build_v1alpha()?;
        self.routes.add_service(health_service).add_service(v1).add_service(v1alpha);
        for name in &self.names {
            health.set_service_status(*name, ServingStatus::Serving).await;
        }
        let methods = observed::methods(
            &[self.names.as_slice(), &[health_name, "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]]
                .concat(),
            &[
                crate::proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
        );
        Ok(Server {
            routes: self.routes.routes(),
            health,
            names: self.names,
            limits: self.limits,
            registry: Registry::new(),
            tls: self.tls,
            methods,
        })
    }
}

/// A process's services, ready to serve.
pub struct Server {
    routes: Routes,
    health: HealthReporter,
    names: Vec<&'static str>,
    limits: Limits,
    registry: Registry,
    tls: Option<crate::tls::Tls>,
    /// The methods served, for the request metrics' labels.
    methods: std::collections::HashSet<String>,
}

/// Closes every connection of a server at once, as a crash of its process would: a test hook of the
/// lab's in-process cluster (`lab::cluster`), so it is built only with the lab's runner or in tests.
#[cfg(any(test, feature = "lab-runner"))]
#[derive(Debug, Clone)]
pub struct Connections(Registry);

#[cfg(any(test, feature = "lab-runner"))]
impl Connections {
    /// Closes every connection the server holds now; returns how many.
    pub fn close_all(&self) -> usize {
        self.0.close_all()
    }
}

impl Server {
    /// The server's connections, to close them all at once (a test hook: see [`Connections`]).
    #[cfg(any(test, feature = "lab-runner"))]
    pub fn connections(&self) -> Connections {
        Connections(self.registry.clone())
    }

    /// The health reporter (e.g. to report NOT_SERVING until a first sync).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves on `listener` until `stop`: then health turns NOT_SERVING, no connection is accepted,
    /// calls in flight have the shutdown grace to finish, and every connection still open is closed.
    pub async fn serve(self, listener: TcpListener, stop: Stop) -> Result<(), ServerError> {
        let Server { routes, health, names, limits, registry, tls, methods } = self;
        let reaper = tokio::spawn({
            let (registry, limits) = (registry.clone(), limits.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let closed = registry.reap(limits.first_bytes_timeout, limits.idle_timeout);
                    if closed > 0 {
                        tracing::debug!(closed, "closed silent connections");
                    }
                }
            }
        });
        let graceful = {
            let stop = stop.clone();
            async move {
                stop.wait().await;
                health.set_service_status("", ServingStatus::NotServing).await;
                for name in names {
                    health.set_service_status(name, ServingStatus::NotServing).await;
                }
            }
        };
        let server = tonic::transport::Server::builder()
            .timeout(limits.request_timeout)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_stream_window_size(limits.stream_window)
            .initial_connection_window_size(limits.connection_window)
            .http2_adaptive_window(Some(false))
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .http2_max_header_list_size(limits.max_header_bytes)
            .http2_max_pending_accept_reset_streams(Some(32))
            .max_connection_age(limits.max_connection_age)
            .max_connection_age_grace(limits.request_timeout)
            .layer(observed::Observe::new(methods))
            .layer(guard::Guard::new(limits.max_request_bytes, limits.max_buffered_request_bytes))
            .layer(members::Members)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                match tls {
                    None => incoming(listener, registry.clone(), limits.max_connections).boxed(),
                    Some(tls) => incoming_tls(listener, registry.clone(), limits.max_connections, tls, limits.handshakes).boxed(),
                },
                graceful,
            );
        let deadline = async {
            stop.wait().await;
            tokio::time::sleep(limits.shutdown_grace).await;
            let closed = registry.close_all();
            if closed > 0 {
                tracing::info!(closed, "closed the connections still open after the shutdown grace");
            }
            // The connections' tasks see their sockets closed at once; give them a moment to end.
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let result = tokio::select! {
            result = server => result.map_err(ServerError::from),
            () = deadline => Ok(()),
        };
        reaper.abort();
        result
    }
}

/// Accepts connections from a listener as [`ServerStream`]s, registered with `registry` (which closes
/// the least recently used one at `max_connections`). A failed accept (e.g. out of file descriptors)
/// is logged and retried rather than ending the server.
fn incoming(listener: TcpListener, registry: Registry, max_connections: usize) -> impl Stream<Item = io::Result<ServerStream>> {
    futures::stream::unfold((listener, registry), move |(listener, registry)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    let tracked = registry.admit(&stream, max_connections);
                    return Some((Ok(ServerStream::plain(stream, tracked)), (listener, registry)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

/// As [`incoming`], with a TLS handshake (client certificate required) before a connection is handed
/// on: the accept path every TLS listener shares ([`crate::tls::accept`]), so a slow or silent client
/// delays nobody else, and what it drops is counted and summarized in the log. Each connection takes
/// the configuration current when it is accepted (certificates rotate: [`crate::tls::reload`]).
fn incoming_tls(
    listener: TcpListener,
    registry: Registry,
    max_connections: usize,
    tls: crate::tls::Tls,
    limits: crate::tls::accept::HandshakeLimits,
) -> impl Stream<Item = io::Result<ServerStream>> {
    crate::tls::accept::handshakes(
        listener,
        move || tls.server_config(),
        limits,
        move |stream| {
            let tracked = registry.admit(&stream, max_connections);
            Some(crate::net::TimedTcp::tracked(stream, tracked))
        },
        |tls| {
            let identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(crate::tls::common_name);
            Ok(ServerStream::tls(tls, identity.map(Arc::from)))
        },
    )
}
