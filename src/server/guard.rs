//! A tower layer in front of every synclab service: it refuses a request body as soon as its bytes pass
//! the limit (RESOURCE_EXHAUSTED, what gRPC clients expect for an oversized message, before any
//! decoding), and it keeps error messages short, so no status ever echoes more than a prefix of what a
//! client sent (the services cut what they quote with [`crate::text::excerpt`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

/// Longest `grpc-message` a response carries, in bytes (percent-encoded).
pub const MAX_STATUS_MESSAGE: usize = 512;

/// What of a request is not counted against the budget for unfinished requests: small messages (all
/// that synclab's clients send) always pass.
pub const FREE_BYTES: usize = 2048;

/// The layer.
#[derive(Debug, Clone)]
pub struct Guard {
    pub max_request_bytes: usize,
    /// Bytes all unfinished requests together may hold (what came, or what their prefix declared).
    pub max_buffered_bytes: usize,
    /// What unfinished requests hold now.
    pub buffered: Arc<AtomicUsize>,
}

impl Guard {
    /// A guard with these limits and nothing held yet.
    pub fn new(max_request_bytes: usize, max_buffered_bytes: usize) -> Self {
        Self { max_request_bytes, max_buffered_bytes, buffered: Arc::default() }
    }
}

impl<S> Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { inner, guard: self.clone() }
    }
}

/// A service behind the guard.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let guard = self.guard.clone();
        let request = request.map(|body| {
            Body::new(Limited { inner: body, seen: 0, limit: guard.max_request_bytes, prefix: Vec::with_capacity(5), held: 0, guard })
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            shorten_message(response.headers_mut());
            Ok(response)
        })
    }
}

/// A request body that fails once more than `limit` bytes have come, or as soon as its gRPC prefix
/// declares a message that would not fit (tonic would otherwise check the length against its own,
/// larger limit first, and answer OUT_OF_RANGE). Until it ends it holds a share of the server's budget
/// for unfinished requests: what came or what its prefix declared (the decoder reserves that much),
/// whichever is more; past the budget it fails too, so many unfinished requests cost bounded memory.
struct Limited {
    inner: Body,
    seen: usize,
    limit: usize,
    /// The first message's 5-byte prefix, as far as it has come.
    prefix: Vec<u8>,
    /// The bytes of the budget this body holds.
    held: usize,
    guard: Guard,
}

impl Limited {
    /// Holds `bytes` of the budget in all (more than before only); false if the budget is spent.
    fn hold(&mut self, bytes: usize) -> bool {
        if bytes <= self.held {
            return true;
        }
        let more = bytes - self.held;
        let before = self.guard.buffered.fetch_add(more, Ordering::Relaxed);
        self.held = bytes;
        before.saturating_add(more) <= self.guard.max_buffered_bytes
    }

    /// Gives its share of the budget back (the body ended or failed).
    fn release(&mut self) {
        if self.held > 0 {
            self.guard.buffered.fetch_sub(self.held, Ordering::Relaxed);
            self.held = 0;
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        self.release();
    }
}

impl Limited {
    /// The length the first message declares, once its prefix is complete.
    fn declared(&mut self, data: &[u8]) -> Option<usize> {
        if self.prefix.len() >= 5 {
            return None;
        }
        let take = (5 - self.prefix.len()).min(data.len());
        self.prefix.extend_from_slice(&data[..take]);
        let p = &self.prefix;
        (p.len() == 5).then(|| u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize)
    }
}

impl HttpBody for Limited {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.seen > self.limit {
            return Poll::Ready(None);
        }
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let declared = self.declared(data).map(|len| len.saturating_add(5));
            self.seen = self.seen.saturating_add(data.len());
            if self.seen > self.limit || declared.is_some_and(|len| len > self.limit) {
                let limit = self.limit;
                self.seen = limit.saturating_add(1);
                self.release();
                return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "request larger than {limit} bytes refused (synclab's messages are small)"
                )))));
            }
            // Small requests (every legitimate one) hold nothing of the budget, so a flood of large
            // unfinished ones cannot lock them out; the streams' own cap bounds what small ones take.
            let holding = self.seen.max(declared.unwrap_or(0)).saturating_sub(FREE_BYTES);
            if !self.hold(holding) {
                self.seen = self.limit.saturating_add(1);
                self.release();
                return Poll::Ready(Some(Err(Status::resource_exhausted(
                    "the server holds too many unfinished requests; try again shortly",
                ))));
            }
        }
        if frame.is_none() || self.inner.is_end_stream() {
            self.release();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.seen > self.limit || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Cuts a `grpc-message` header (trailers-only responses, which is how every refused call ends) to
/// [`MAX_STATUS_MESSAGE`] bytes, at a boundary that keeps the percent-encoding whole.
fn shorten_message(headers: &mut http::HeaderMap) {
    let Some(value) = headers.get("grpc-message") else { return };
    let bytes = value.as_bytes();
    if bytes.len() <= MAX_STATUS_MESSAGE {
        return;
    }
    let mut cut = MAX_STATUS_MESSAGE - 3;
    // Do not split a %XX escape.
    if let Some(p) = bytes[cut.saturating_sub(2)..cut].iter().rposition(|&b| b == b'%') {
        cut = cut - 2 + p;
    }
    let mut short = bytes[..cut].to_vec();
    short.extend_from_slice(b"...");
    if let Ok(value) = http::HeaderValue::from_bytes(&short) {
        headers.insert("grpc-message", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_without_breaking_an_escape() {
        let mut headers = http::HeaderMap::new();
        let long = "%41".repeat(400);
        headers.insert("grpc-message", http::HeaderValue::from_str(&long).unwrap());
        shorten_message(&mut headers);
        let cut = headers["grpc-message"].to_str().unwrap();
        assert!(cut.len() <= MAX_STATUS_MESSAGE, "{}", cut.len());
        assert!(cut.ends_with("%41..."), "{cut}");
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-message", http::HeaderValue::from_static("short"));
        shorten_message(&mut headers);
        assert_eq!(headers["grpc-message"], "short");
    }
}
