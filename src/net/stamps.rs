//! What a connection records when a message ends: the server's arrival and transmit times, the
//! client's send and receive times. The stamps are taken by [`super::StampedStream`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use super::frame::FrameScanner;
use crate::clock::host_now;
use crate::lock::lock;

/// What one side of a connection does when a stream's last frame passes.
pub trait Stamper: Send + Sync + 'static {
    /// The clock this side stamps with.
    type Stamp: Copy + Send + Sync + Unpin + 'static;
    /// Reads that clock.
    fn now() -> Self::Stamp;
    /// The stamp for a kernel receive timestamp (host real time, ns since the epoch).
    fn from_kernel(host_nanos: i64) -> Self::Stamp;
    /// Scanners for (bytes read, bytes written).
    fn scanners() -> (FrameScanner, FrameScanner);
    /// A read that returned at `at` completed a message; `kernel` is the kernel's receive timestamp of it.
    fn read_end(&self, at: Self::Stamp, kernel: Option<Self::Stamp>);
    /// A write begun at `at` completed a message.
    fn wrote_end(&self, at: Self::Stamp);
}

/// An answer's real transmit time, and which request it answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SentAnswer {
    /// The `client_send_time` of the request the answer was for.
    pub origin: prost_types::Timestamp,
    /// Host time (ns since the epoch) right before the write that sent the answer's last frame.
    pub transmit_host_nanos: i64,
}

#[derive(Debug, Default)]
struct AnswerLog {
    /// The origin of the answer being prepared, until its last frame is written.
    pending: Option<prost_types::Timestamp>,
    /// The latest answer sent.
    sent: Option<SentAnswer>,
}

/// A server connection's stamps.
#[derive(Debug, Default)]
pub struct ServerStamps {
    arrival_host_nanos: AtomicI64,
    kernel_arrival_host_nanos: AtomicI64,
    answers: Mutex<AnswerLog>,
}

impl ServerStamps {
    /// Host time (ns since the epoch) of the latest request's arrival; 0 before any.
    pub fn arrival_host_nanos(&self) -> i64 {
        self.arrival_host_nanos.load(Ordering::Relaxed)
    }

    /// The kernel's receive timestamp of the latest request (host ns since the epoch); 0 if none.
    pub fn kernel_arrival_host_nanos(&self) -> i64 {
        self.kernel_arrival_host_nanos.load(Ordering::Relaxed)
    }

    /// Called by a handler about to answer the request sent at `origin`: remembers it, so the answer's
    /// write is stamped for it, and returns the previous answer sent on this connection, if any.
    pub fn answering(&self, origin: Option<prost_types::Timestamp>) -> Option<SentAnswer> {
        let mut log = lock(&self.answers);
        log.pending = origin;
        log.sent.take()
    }
}

impl Stamper for ServerStamps {
    type Stamp = i64;

    fn now() -> i64 {
        host_now()
    }

    fn from_kernel(host_nanos: i64) -> i64 {
        host_nanos
    }

    fn scanners() -> (FrameScanner, FrameScanner) {
        (FrameScanner::client_to_server(), FrameScanner::server_to_client())
    }

    fn read_end(&self, at: i64, kernel: Option<i64>) {
        self.arrival_host_nanos.store(at, Ordering::Relaxed);
        self.kernel_arrival_host_nanos.store(kernel.unwrap_or(0), Ordering::Relaxed);
    }

    fn wrote_end(&self, at: i64) {
        let mut log = lock(&self.answers);
        if let Some(origin) = log.pending.take() {
            log.sent = Some(SentAnswer { origin, transmit_host_nanos: at });
        }
    }
}

#[derive(Debug, Default)]
struct ClientLog {
    awaiting_answer: bool,
    sent: Option<Instant>,
    received: Option<Instant>,
    received_kernel: Option<Instant>,
}

/// A client connection's stamps, on the monotonic clock.
#[derive(Debug, Default)]
pub struct ClientStamps {
    log: Mutex<ClientLog>,
}

impl ClientStamps {
    /// Forgets earlier stamps, before a new request.
    pub fn clear(&self) {
        *lock(&self.log) = ClientLog::default();
    }

    /// When the request's last frame was written and the answer's read, since the last [`Self::clear`].
    pub fn sent_and_received(&self) -> (Option<Instant>, Option<Instant>) {
        let log = lock(&self.log);
        (log.sent, log.received)
    }

    /// The kernel's receive timestamp of the answer, if it gave one.
    pub fn received_by_kernel(&self) -> Option<Instant> {
        lock(&self.log).received_kernel
    }
}

impl Stamper for ClientStamps {
    type Stamp = Instant;

    fn now() -> Instant {
        Instant::now()
    }

    /// The kernel stamps on the real-time clock; the client measures on the monotonic one. The stamp is
    /// microseconds old, so how old it is on the real-time clock is how old it is on the monotonic one.
    fn from_kernel(host_nanos: i64) -> Instant {
        let now = Instant::now();
        let age = host_now().saturating_sub(host_nanos).max(0);
        now.checked_sub(std::time::Duration::from_nanos(age as u64)).unwrap_or(now)
    }

    fn scanners() -> (FrameScanner, FrameScanner) {
        (FrameScanner::server_to_client(), FrameScanner::client_to_server())
    }

    fn read_end(&self, at: Instant, kernel: Option<Instant>) {
        let mut log = lock(&self.log);
        if log.awaiting_answer {
            log.received = Some(at);
            log.received_kernel = kernel;
            log.awaiting_answer = false;
        }
    }

    fn wrote_end(&self, at: Instant) {
        let mut log = lock(&self.log);
        if log.sent.is_none() {
            log.sent = Some(at);
        }
        log.awaiting_answer = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_s_write_is_stamped_for_the_request_it_answers() {
        let stamps = ServerStamps::default();
        let origin = prost_types::Timestamp { seconds: 7, nanos: 9 };
        assert_eq!(stamps.answering(Some(origin)), None);
        stamps.wrote_end(11);
        stamps.wrote_end(12); // another stream's end: this answer is stamped already
        let sent = stamps.answering(None).unwrap();
        assert_eq!(sent, SentAnswer { origin, transmit_host_nanos: 11 });
        stamps.wrote_end(13); // an answer to a request without origin is not remembered
        assert_eq!(stamps.answering(None), None);
    }

    #[test]
    fn a_client_stamps_its_request_and_the_answer_that_follows() {
        let stamps = ClientStamps::default();
        let t = Instant::now();
        let at = |us| t + std::time::Duration::from_micros(us);
        stamps.read_end(at(1), None); // nothing asked yet
        assert_eq!(stamps.sent_and_received(), (None, None));
        stamps.wrote_end(at(2));
        stamps.read_end(at(3), Some(at(2)));
        stamps.read_end(at(4), None);
        assert_eq!(stamps.sent_and_received(), (Some(at(2)), Some(at(3))));
        assert_eq!(stamps.received_by_kernel(), Some(at(2)));
        stamps.clear();
        assert_eq!(stamps.sent_and_received(), (None, None));
    }
}
