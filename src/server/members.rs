//! A tower layer that tells the connection cap which connections are the group's own: a call that only
//! members make (the election's protocol messages and its `Follow` line, a Berkeley slave's `Register`,
//! the master's `Adjust`), once it succeeds, marks its connection as a member's
//! ([`crate::net::MemberMark`]), and the cap then sheds readers before it. A call refused (a stranger, a
//! forged sender, under TLS an identity that may not make it) marks nothing.
//!
//! In plaintext nothing proves who a caller is, so a forger whose message is accepted marks its
//! connection too: the cap then treats it as a member, as it treats the forgery (SECURITY.md). Under
//! TLS only the identities allowed to make the call can succeed at it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};

use crate::net::ConnectionInfo;

/// The calls only members make.
pub const MEMBER_METHODS: [&str; 8] = [
    "/synclab.election.v1.ElectionService/Election",
    "/synclab.election.v1.ElectionService/Coordinator",
    "/synclab.election.v1.ElectionService/Alive",
    "/synclab.election.v1.ElectionService/RingElection",
    "/synclab.election.v1.ElectionService/RingCoordinator",
    "/synclab.election.v1.ElectionService/Follow",
    "/synclab.berkeley.v1.BerkeleyMaster/Register",
    "/synclab.berkeley.v1.BerkeleySlave/Adjust",
];

/// Whether a response's headers say the call failed (a trailers-only response carries its status in
/// its headers; a call that answers has none there).
fn refused(response: &http::Response<Body>) -> bool {
    response.headers().get("grpc-status").is_some_and(|s| s.as_bytes() != b"0") || !response.status().is_success()
}

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Members;

impl<S> Layer<S> for Members {
    type Service = MarkMembers<S>;

    fn layer(&self, inner: S) -> MarkMembers<S> {
        MarkMembers { inner }
    }
}

/// A service behind the layer.
#[derive(Debug, Clone)]
pub struct MarkMembers<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for MarkMembers<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let mark = MEMBER_METHODS
            .contains(&request.uri().path())
            .then(|| request.extensions().get::<ConnectionInfo>().and_then(|c| c.member.clone()))
            .flatten();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if let Some(mark) = mark
                && !refused(&response)
            {
                mark.mark();
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_told_from_an_answer() {
        let answer = http::Response::new(Body::empty());
        assert!(!refused(&answer));
        let mut ok = http::Response::new(Body::empty());
        ok.headers_mut().insert("grpc-status", http::HeaderValue::from_static("0"));
        assert!(!refused(&ok));
        let mut denied = http::Response::new(Body::empty());
        denied.headers_mut().insert("grpc-status", http::HeaderValue::from_static("7"));
        assert!(refused(&denied));
    }
}
