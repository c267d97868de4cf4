//! A tower layer that counts every gRPC request (`synclab_grpc_requests_total{method,code}`) and times
//! it until its response ends (`synclab_grpc_request_duration_seconds{method}`).
//!
//! The method label takes only the methods this server serves (read from the descriptors of its
//! services); any other path, whatever a client sends, counts as `unknown`, so a client cannot grow
//! the label set. The code is the response's `grpc-status` (in its headers or trailers); a response
//! that ends without one (the client went away, the server stopped) counts as `CANCELLED`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use prost::Message as _;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

/// The label of every path that is not one of the server's methods.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The methods (`/package.Service/Method`) of the named services, from the encoded descriptor sets.
pub fn methods(names: &[&str], descriptor_sets: &[&[u8]]) -> HashSet<String> {
    let mut methods = HashSet::new();
    for set in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else { continue };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let full = if package.is_empty() { service.name().to_string() } else { format!("{package}.{}", service.name()) };
                if names.contains(&full.as_str()) {
                    methods.extend(service.method.iter().map(|m| format!("/{full}/{}", m.name())));
                }
            }
        }
    }
    methods
}

/// The layer: the server's methods.
#[derive(Debug, Clone)]
pub struct Observe {
    methods: Arc<HashSet<String>>,
}

impl Observe {
    /// Counts the calls to `methods`, and all others as `unknown`; exports each method's `OK` count at 0
    /// from now (the other codes appear with their first response).
    pub fn new(methods: HashSet<String>) -> Self {
        for method in &methods {
            metrics::counter!("synclab_grpc_requests_total", "method" => method.clone(), "code" => "OK").increment(0);
        }
        Self { methods: Arc::new(methods) }
    }
}

impl<S> Layer<S> for Observe {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner, methods: self.methods.clone() }
    }
}

/// A service whose calls are counted.
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    methods: Arc<HashSet<String>>,
}

impl<S> Service<http::Request<Body>> for Observed<S>
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
        if !crate::observe::installed() {
            return Box::pin(self.inner.call(request));
        }
        let path = request.uri().path();
        let method = if self.methods.contains(path) { path.to_string() } else { UNKNOWN_METHOD.to_string() };
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let code = response.headers().get("grpc-status").map(|v| code_name(v.as_bytes()));
            Ok(response.map(|body| Body::new(Timed { inner: body, method, started, code, recorded: false })))
        })
    }
}

/// The name of a `grpc-status` value, as the label (`OK`, `NOT_FOUND`...).
fn code_name(value: &[u8]) -> &'static str {
    let code = std::str::from_utf8(value).ok().and_then(|s| s.parse::<i32>().ok()).map_or(tonic::Code::Unknown, tonic::Code::from_i32);
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A response body that records its call once, when it ends or is dropped.
struct Timed {
    inner: Body,
    method: String,
    started: Instant,
    code: Option<&'static str>,
    recorded: bool,
}

impl Timed {
    fn record(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let code = self.code.unwrap_or("CANCELLED");
        metrics::counter!("synclab_grpc_requests_total", "method" => self.method.clone(), "code" => code).increment(1);
        metrics::histogram!("synclab_grpc_request_duration_seconds", "method" => self.method.clone())
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        self.record();
    }
}

impl HttpBody for Timed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    self.code = Some(code_name(status.as_bytes()));
                    self.record();
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => self.record(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
