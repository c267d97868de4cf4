//! The small HTTP/1.1 server behind `/metrics` and the dashboard: an axum router served by hyper with
//! limits, so a client cannot hold the process's memory or sockets.
//!
//! - request heads of at most 8 KiB (hyper answers 431 past them), read within
//!   [`HttpLimits::header_timeout`] (a slowloris client is closed);
//! - no request bodies: one that declares or sends any is refused with 413 before the handler runs;
//! - at most [`HttpLimits::max_connections`] connections, each closed after
//!   [`HttpLimits::max_lifetime`] (when set); a connection beyond the cap is closed at once;
//! - on [`Stop`] the listener closes and every connection ends within a second (responses in progress
//!   get half of it).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::stop::Stop;

/// Largest request head (hyper's smallest read buffer).
pub const MAX_HEAD_BYTES: usize = 8192;

/// What one HTTP listener allows.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time to send a request's whole head, from the connection's start or the end of the last answer.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// A connection is closed this long after it opened (None: when the client closes it).
    pub max_lifetime: Option<Duration>,
}

impl HttpLimits {
    /// For `/metrics`: Prometheus scrapes every few seconds over one connection or a few.
    pub fn metrics() -> Self {
        Self { header_timeout: Duration::from_secs(2), max_connections: 16, max_lifetime: Some(Duration::from_secs(60)) }
    }

    /// For the dashboard: its pages hold an event stream open.
    pub fn dashboard() -> Self {
        Self { header_timeout: Duration::from_secs(5), max_connections: 64, max_lifetime: Some(Duration::from_secs(3600)) }
    }
}

/// How long responses in progress have to finish once the stop is asked for.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` until `stop`, within `limits`.
pub async fn serve(listener: TcpListener, router: Router, limits: HttpLimits, stop: Stop) {
    let router = router.layer(axum::middleware::from_fn(refuse_bodies));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("HTTP connection refused: {} open", limits.max_connections);
                    continue;
                };
                let (router, limits, stop) = (router.clone(), limits.clone(), stop.clone());
                connections.spawn(async move {
                    let _slot = slot;
                    connection(stream, router, &limits, stop).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stop.wait() => break,
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE + Duration::from_millis(100), drained).await.is_err() {
        connections.shutdown().await;
    }
}

async fn connection(stream: tokio::net::TcpStream, router: Router, limits: &HttpLimits, stop: Stop) {
    let _ = stream.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let lifetime = async {
        match limits.max_lifetime {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        () = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(STOP_GRACE, conn).await;
        }
        () = lifetime => {}
    }
}

/// Refuses any request that carries a body (every route here is a GET).
async fn refuse_bodies(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request.headers().get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    let chunked = request.headers().contains_key(http::header::TRANSFER_ENCODING);
    if declared || chunked || request.body().size_hint().lower() > 0 {
        return (http::StatusCode::PAYLOAD_TOO_LARGE, "this server takes no request bodies\n").into_response();
    }
    let mut response = next.run(request).await;
    if response.status() == http::StatusCode::NOT_FOUND && response.headers().is_empty() {
        *response.body_mut() = Body::from("not found\n");
    }
    response
}
