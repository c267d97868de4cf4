//! The accept path of every TLS listener: handshakes run beside the accept loop, each within a deadline,
//! and only so many at once; past that, the oldest pending handshake is dropped to make room for the
//! newest. So clients that begin a handshake and never finish it (a few bytes of a ClientHello, then
//! nothing) cost their own connections and nobody else's wait: a real client's handshake, which takes
//! milliseconds, always finds a place and finishes long before the attacker's stalled ones are evicted.
//!
//! Every handshake that does not finish is counted (`synclab_tls_handshakes_dropped_total`, by
//! reason) and summarized in the log at most every 10 s per reason ([`crate::telemetry::Refusals`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_rustls::server::TlsStream;

/// How a listener bounds its handshakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// A handshake that has not finished this long after its connection was accepted is dropped.
    pub timeout: Duration,
    /// Handshakes in progress at most; a new connection past it drops the oldest pending one.
    pub max_pending: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        // As many as the server's connections (`server::Limits::max_connections`): a burst of stalled
        // handshakes smaller than that can never evict a real client's, which takes milliseconds. (At
        // 64, bursts of 100 arriving with real clients evicted one real handshake of eight in a test run.)
        Self { timeout: Duration::from_secs(2), max_pending: 256 }
    }
}

/// Why a handshake did not finish (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not finished within [`HandshakeLimits::timeout`].
    Timeout,
    /// The oldest pending when [`HandshakeLimits::max_pending`] were pending and another came.
    Evicted,
    /// The peer sent something that is not a handshake the server accepts (no valid client
    /// certificate, a protocol error) or closed the connection.
    Failed,
}

impl Dropped {
    /// The metric label and the log's kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Timeout => "timeout",
            Dropped::Evicted => "evicted",
            Dropped::Failed => "failed",
        }
    }
}

/// The pending handshakes of one listener, oldest first.
#[derive(Debug, Default)]
pub struct Pending {
    handshakes: VecDeque<AbortHandle>,
}

impl Pending {
    /// Forgets finished handshakes, then drops the oldest until fewer than `max` are pending; returns
    /// how many it dropped.
    pub fn make_room(&mut self, max: usize) -> usize {
        self.handshakes.retain(|h| !h.is_finished());
        let mut dropped = 0;
        while self.handshakes.len() >= max.max(1) {
            if let Some(oldest) = self.handshakes.pop_front() {
                oldest.abort();
                dropped += 1;
            }
        }
        dropped
    }

    /// Adds the newest pending handshake.
    pub fn push(&mut self, handshake: AbortHandle) {
        self.handshakes.push_back(handshake);
    }

    /// Handshakes not finished yet.
    pub fn len(&self) -> usize {
        self.handshakes.iter().filter(|h| !h.is_finished()).count()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn dropped(refusals: &crate::telemetry::Refusals, reason: Dropped, detail: &dyn std::fmt::Display) {
    metrics::counter!("synclab_tls_handshakes_dropped_total", "reason" => reason.as_str()).increment(1);
    refusals.refused(reason.as_str(), detail);
}

/// Where a listener takes the server configuration of each connection it accepts: a fixed one, or a
/// function giving the one current then (`move || tls.server_config()`: certificates that rotate reach
/// every new connection, while those in flight keep the one they began with).
pub trait ServerConfigs: Send + 'static {
    /// The configuration for a connection accepted now.
    fn current(&self) -> Arc<rustls::ServerConfig>;
}

impl ServerConfigs for Arc<rustls::ServerConfig> {
    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.clone()
    }
}

impl<F: Fn() -> Arc<rustls::ServerConfig> + Send + 'static> ServerConfigs for F {
    fn current(&self) -> Arc<rustls::ServerConfig> {
        self()
    }
}

/// Accepts connections from `listener` and runs their TLS handshakes within `limits`: each accepted
/// socket is first given to `wrap` (e.g. to register it with the server's connections; `None` refuses
/// it), handshakes with the configuration `configs` gives at that moment, and each finished handshake
/// goes to `done`, whose result the stream yields. A failed accept (e.g.
/// out of file descriptors) is logged and retried. The loop ends when the stream is dropped.
pub fn handshakes<IO, T, W, D>(
    listener: TcpListener,
    configs: impl ServerConfigs,
    limits: HandshakeLimits,
    wrap: W,
    done: D,
) -> impl Stream<Item = T> + Send + 'static
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Send + 'static,
    W: Fn(TcpStream) -> Option<IO> + Send + 'static,
    D: Fn(TlsStream<IO>) -> T + Send + Sync + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<T>(limits.max_pending.max(1));
    let refusals = Arc::new(crate::telemetry::Refusals::new("TLS handshake"));
    let done = Arc::new(done);
    tokio::spawn(async move {
        let mut pending = Pending::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            for _ in 0..pending.make_room(limits.max_pending) {
                let detail = format_args!("{} handshakes pending; the oldest was dropped", limits.max_pending);
                dropped(&refusals, Dropped::Evicted, &detail);
            }
            let Some(io) = wrap(stream) else { continue };
            let acceptor = tokio_rustls::TlsAcceptor::from(configs.current());
            let (tx, refusals, done) = (tx.clone(), refusals.clone(), done.clone());
            let task = tokio::spawn(async move {
                match tokio::time::timeout(limits.timeout, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(done(tls)).await;
                    }
                    Ok(Err(e)) => dropped(&refusals, Dropped::Failed, &e),
                    Err(_) => {
                        let detail = format_args!("no handshake within {:?}", limits.timeout);
                        dropped(&refusals, Dropped::Timeout, &detail);
                    }
                }
            });
            pending.push(task.abort_handle());
        }
        // The listener is done: the handshakes still pending end with it.
        pending.make_room(0);
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_pending_handshake_is_dropped_first() {
        let mut pending = Pending::default();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let task = tokio::spawn(std::future::pending::<()>());
            pending.push(task.abort_handle());
            tasks.push(task);
        }
        assert_eq!(pending.make_room(3), 1);
        tokio::task::yield_now().await;
        assert!(tasks[0].is_finished(), "the oldest was dropped");
        assert!(!tasks[1].is_finished() && !tasks[2].is_finished(), "the newer ones were kept");
        assert_eq!(pending.len(), 2);
        // Finished handshakes hold no place.
        tasks[1].abort();
        tokio::task::yield_now().await;
        assert_eq!(pending.make_room(3), 0);
        assert_eq!(pending.len(), 1);
    }
}
