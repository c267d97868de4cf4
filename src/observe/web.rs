//! The small HTTP/1.1 server behind `/metrics` and the dashboard: an axum router served by hyper with
//! limits, so a client cannot hold the process's memory or sockets.
//!
//! - request heads of at most 8 KiB (hyper answers 431 past them), read within
//!   [`HttpLimits::header_timeout`] (a slowloris client is closed);
//! - no request bodies: one that declares or sends any is refused with 413 before the handler runs;
//! - at most [`HttpLimits::max_connections`] connections, each closed after
//!   [`HttpLimits::max_lifetime`] (when set); a connection beyond the cap is closed at once;
//! - event streams ([`HttpLimits::stream_paths`], the dashboard's `/events`) have a cap of their own,
//!   [`HttpLimits::max_streams`]: a connection that asks for one gives its place among the pages' back,
//!   so stream clients never starve page loads; at the streams' cap the oldest stream is dropped for the
//!   newcomer, so silent clients never starve new readers; and a write that waits longer than
//!   [`HttpLimits::write_timeout`] for a client to read ends its connection, so nobody is waited for.
//!   What a stream holds is bounded by its source (the dashboard's: the latest parts only). Dropped
//!   streams are counted (`synclab_http_streams_dropped_total{reason=evicted|write_timeout}`) and
//!   summarized in the log at most every 10 s per reason;
//! - on [`Stop`] the listener closes and every connection ends within a second (responses in progress
//!   get half of it);
//! - over TLS ([`serve_with`], [`HttpTls`]) each connection's handshake runs in its place among the
//!   connections, within the head's deadline, with the certificates current when it was accepted (they
//!   rotate); `/metrics` requires a client certificate and answers only the identities allowed to
//!   scrape (403 to others), the dashboard asks browsers for none.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::lock::lock;
use crate::stop::Stop;
use crate::telemetry::Refusals;

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
    /// The paths whose answers are event streams (held open; capped apart from the pages).
    pub stream_paths: &'static [&'static str],
    /// Event streams open at once; at the cap the oldest is dropped for the newcomer.
    pub max_streams: usize,
    /// A write (of any answer) that cannot go out for this long ends its connection.
    pub write_timeout: Duration,
}

impl HttpLimits {
    /// For `/metrics`: Prometheus scrapes every few seconds over one connection or a few.
    pub fn metrics() -> Self {
        Self {
            header_timeout: Duration::from_secs(2),
            max_connections: 16,
            max_lifetime: Some(Duration::from_secs(60)),
            stream_paths: &[],
            max_streams: 0,
            write_timeout: Duration::from_secs(10),
        }
    }

    /// For the dashboard: its pages hold an event stream (`/events`) open.
    pub fn dashboard() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            max_connections: 64,
            max_lifetime: Some(Duration::from_secs(3600)),
            stream_paths: &["/events"],
            max_streams: 128,
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// How long responses in progress have to finish once the stop is asked for.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// The event streams open on one listener, oldest first.
#[derive(Debug, Default)]
struct Streams {
    next: AtomicU64,
    open: Mutex<VecDeque<(u64, Arc<tokio::sync::Notify>)>>,
}

/// What the serving layer knows of one connection: its place among the pages (given back when it turns
/// into an event stream), and how to end it from outside (when its stream is dropped).
struct Place {
    page: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    stream: Mutex<Option<u64>>,
    evicted: Arc<tokio::sync::Notify>,
    streams: Arc<Streams>,
    max_streams: usize,
    refusals: Arc<Refusals>,
}

impl Place {
    /// The connection asked for an event stream: it leaves the pages' cap for the streams', dropping the
    /// oldest stream if they are full.
    fn become_stream(&self) {
        let mut stream = lock(&self.stream);
        if stream.is_some() {
            return;
        }
        lock(&self.page).take();
        let id = self.streams.next.fetch_add(1, Ordering::Relaxed);
        let mut open = lock(&self.streams.open);
        while open.len() >= self.max_streams.max(1) {
            let Some((_, oldest)) = open.pop_front() else { break };
            oldest.notify_one();
            metrics::counter!("synclab_http_streams_dropped_total", "reason" => "evicted").increment(1);
            let detail = format_args!("{} streams open; the oldest was dropped for a new one", self.max_streams);
            self.refusals.refused("evicted", &detail);
        }
        open.push_back((id, self.evicted.clone()));
        *stream = Some(id);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(id) = lock(&self.stream).take() {
            lock(&self.streams.open).retain(|(i, _)| *i != id);
        }
    }
}

/// The router behind one connection: notes which requests turn the connection into an event stream,
/// and gives each request the connection's [`Caller`].
#[derive(Clone)]
struct Routed {
    router: Router,
    place: Arc<Place>,
    stream_paths: &'static [&'static str],
    caller: Caller,
}

/// Who is on a connection: the Common Name of the client certificate it presented over TLS (`None`:
/// plaintext, or TLS without a client certificate). Each request carries it as an extension.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Arc<str>>);

/// How a listener speaks TLS: where it takes each connection's configuration, and which client
/// identities it answers (`None`: any, or none at all when the configuration asks for no certificate).
pub struct HttpTls {
    pub configs: Box<dyn crate::tls::accept::ServerConfigs + Sync>,
    pub allowed: Option<&'static [&'static str]>,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTls").field("allowed", &self.allowed).finish_non_exhaustive()
    }
}

impl HttpTls {
    /// For `/metrics`: client certificates required (the configuration current at each connection),
    /// and only [`crate::tls::authz::METRICS_READERS`] answered.
    pub fn metrics(tls: &crate::tls::Tls) -> Self {
        let tls = tls.clone();
        Self { configs: Box::new(move || tls.metrics_server_config()), allowed: Some(crate::tls::authz::METRICS_READERS) }
    }

    /// For pages people open in a browser: no client certificate asked for.
    pub fn web(tls: &crate::tls::Tls) -> Self {
        let tls = tls.clone();
        Self { configs: Box::new(move || tls.web_server_config()), allowed: None }
    }
}

impl tower::Service<http::Request<hyper::body::Incoming>> for Routed {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = <Router as tower::Service<http::Request<hyper::body::Incoming>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<hyper::body::Incoming>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let mut request = request;
        if self.stream_paths.contains(&request.uri().path()) {
            self.place.become_stream();
        }
        request.extensions_mut().insert(self.caller.clone());
        self.router.call(request)
    }
}

/// A socket whose writes have a deadline: a write that cannot go out for `timeout` (the client does not
/// read) fails with `TimedOut`, which ends the connection.
struct WriteDeadline {
    inner: tokio::net::TcpStream,
    timeout: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    refusals: Arc<Refusals>,
}

impl WriteDeadline {
    /// A write or flush returned `polled`: starts the deadline when it waits, clears it when it does not,
    /// and fails it when the deadline has passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.waiting = None;
            return polled;
        }
        let timeout = self.timeout;
        let waiting = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if waiting.as_mut().poll(cx).is_ready() {
            self.waiting = None;
            metrics::counter!("synclab_http_streams_dropped_total", "reason" => "write_timeout").increment(1);
            self.refusals.refused("write_timeout", &format_args!("a client read nothing for {timeout:?}"));
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client does not read")));
        }
        Poll::Pending
    }
}

impl tokio::io::AsyncRead for WriteDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WriteDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `stop`, within `limits`, in plaintext.
pub async fn serve(listener: TcpListener, router: Router, limits: HttpLimits, stop: Stop) {
    serve_with(listener, router, limits, None, stop).await
}

/// Serves `router` on `listener` until `stop`, within `limits`, over TLS when `tls` is given: each
/// connection's handshake runs within [`HttpLimits::header_timeout`] in its place among the
/// connections, with the configuration current when it was accepted (certificates rotate).
pub async fn serve_with(listener: TcpListener, router: Router, limits: HttpLimits, tls: Option<HttpTls>, stop: Stop) {
    let mut router = router.layer(axum::middleware::from_fn(refuse_bodies));
    if let Some(allowed) = tls.as_ref().and_then(|t| t.allowed) {
        router = router.layer(axum::middleware::from_fn(move |r, n| authorize(allowed, r, n)));
    }
    let tls = tls.map(Arc::new);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let streams = Arc::new(Streams::default());
    let refusals = Arc::new(Refusals::new("HTTP event stream"));
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
                let place = Arc::new(Place {
                    page: Mutex::new(Some(slot)),
                    stream: Mutex::new(None),
                    evicted: Arc::new(tokio::sync::Notify::new()),
                    streams: streams.clone(),
                    max_streams: limits.max_streams,
                    refusals: refusals.clone(),
                });
                let mut routed = Routed { router: router.clone(), place, stream_paths: limits.stream_paths, caller: Caller(None) };
                let (limits, stop, refusals) = (limits.clone(), stop.clone(), refusals.clone());
                let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.configs.current()));
                connections.spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let io = WriteDeadline { inner: stream, timeout: limits.write_timeout, waiting: None, refusals };
                    let Some(acceptor) = acceptor else { return connection(io, routed, &limits, stop).await };
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(limits.header_timeout, acceptor.accept(io)) => done,
                        () = stop.wait() => return,
                    };
                    match handshake {
                        Ok(Ok(tls)) => {
                            routed.caller = Caller(
                                tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(crate::tls::common_name).map(Arc::from),
                            );
                            connection(tls, routed, &limits, stop).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("synclab_tls_handshakes_dropped_total", "reason" => "failed").increment(1);
                            tracing::debug!(error = %e, "HTTPS handshake refused");
                        }
                        Err(_) => {
                            metrics::counter!("synclab_tls_handshakes_dropped_total", "reason" => "timeout").increment(1);
                            tracing::debug!("HTTPS handshake not finished within {:?}", limits.header_timeout);
                        }
                    }
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

async fn connection<IO>(stream: IO, routed: Routed, limits: &HttpLimits, stop: Stop)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let evicted = routed.place.evicted.clone();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(routed));
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
        () = evicted.notified() => {}
        () = lifetime => {}
    }
}

/// Fetches `path` from the HTTP server at `addr` (`HOST:PORT`) with one `GET` (HTTP/1.0, so the
/// server closes when done) within `timeout`, and returns its answer, head and body, cut at `max_bytes`.
/// With `tls` it speaks HTTPS: the server's certificate must name HOST and this process's certificate
/// is presented (the configuration current now).
pub async fn get(addr: &str, path: &str, tls: Option<&crate::tls::Tls>, timeout: Duration, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, head: &str, max: u64) -> std::io::Result<Vec<u8>> {
        s.write_all(head.as_bytes()).await?;
        s.flush().await?;
        let mut answer = Vec::new();
        s.take(max).read_to_end(&mut answer).await?;
        Ok(answer)
    }
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let head = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        match tls {
            None => exchange(tcp, &head, max_bytes).await,
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
                let name = rustls_pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = tokio_rustls::TlsConnector::from(tls.http_client_config()).connect(name, tcp).await?;
                exchange(stream, &head, max_bytes).await
            }
        }
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer from {addr} within {timeout:?}")))?
}

/// Answers only the identities in `allowed`: 403 to any other (and to a connection without one).
async fn authorize(allowed: &'static [&'static str], request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let caller = request.extensions().get::<Caller>().and_then(|c| c.0.clone());
    match caller {
        Some(identity) if allowed.contains(&&*identity) => next.run(request).await,
        who => {
            let who = who.map_or("a caller without a certificate".to_string(), |i| format!("'{}'", crate::text::excerpt(&i, 64)));
            let body = format!("{who} may not read {}: it is for {}\n", request.uri().path(), allowed.join(", "));
            (http::StatusCode::FORBIDDEN, body).into_response()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_to_a_client_that_does_not_read_fails_after_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let refusals = Arc::new(Refusals::new("HTTP event stream"));
        let mut io = WriteDeadline { inner: socket, timeout: Duration::from_millis(200), waiting: None, refusals: refusals.clone() };
        let chunk = vec![0u8; 64 * 1024];
        let started = std::time::Instant::now();
        // Fills the socket's buffers (a few MiB on loopback), then waits on a client that never reads.
        let failed = loop {
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), io.write_all(&chunk)).await.expect("the deadline ended the wait")
            {
                break e;
            }
        };
        assert_eq!(failed.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(refusals.totals(), vec![("write_timeout", 1)]);
        drop(silent);
    }
}
