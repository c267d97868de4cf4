//! gRPC over raw HTTP/2: the attacker's own client ([`Conn`], on `h2`), which can do what a
//! well-behaved client cannot, with the status codes, framing and tallies the attacks report in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use prost::Message;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// gRPC status codes, by number.
pub mod code {
    pub const OK: i32 = 0;
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;

    /// The code's name, as gRPC spells it.
    pub fn name(code: i32) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        usize::try_from(code).ok().and_then(|c| NAMES.get(c)).copied().unwrap_or("?")
    }
}

/// A gRPC status as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: i32,
    /// `grpc-message`, percent-decoded.
    pub message: String,
}

/// Why a call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The server answered with an error status.
    #[error("{} ({}): {}", code::name(.0.code), .0.code, .0.message)]
    Status(Status),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection or stream failed (refused, reset, closed).
    #[error("transport: {0}")]
    Transport(String),
    /// The answer is not a gRPC answer.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

impl CallError {
    /// The status code, if the server sent one.
    pub fn code(&self) -> Option<i32> {
        match self {
            CallError::Status(s) => Some(s.code),
            _ => None,
        }
    }

    /// A short label for tallies: the code's name, "timeout", "transport" or "bad answer".
    pub fn label(&self) -> String {
        match self {
            CallError::Status(s) => code::name(s.code).to_string(),
            CallError::Timeout(_) => "timeout".into(),
            CallError::Transport(_) => "transport error".into(),
            CallError::BadAnswer(_) => "bad answer".into(),
        }
    }
}

pub(super) fn transport(e: impl std::fmt::Display) -> CallError {
    CallError::Transport(e.to_string())
}

/// How many calls ended how: "OK", a status code's name, "timeout", "transport error".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(pub BTreeMap<String, u64>);

impl Tally {
    pub fn add<T>(&mut self, result: &Result<T, CallError>) {
        let label = match result {
            Ok(_) => "OK".to_string(),
            Err(e) => e.label(),
        };
        *self.0.entry(label).or_default() += 1;
    }

    pub fn count(&self, label: &str) -> u64 {
        self.0.get(label).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn merge(&mut self, other: &Tally) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// A message with its 5-byte gRPC prefix (uncompressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// `message` encoded.
pub fn encode(message: &impl Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_from(headers: &http::HeaderMap) -> Option<Status> {
    let code = headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).map(percent_decode).unwrap_or_default();
    Some(Status { code, message })
}

/// One HTTP/2 connection of the attacker (or of a legitimate prober).
pub struct Conn {
    send: SendRequest<Bytes>,
    authority: String,
    closed: Arc<AtomicBool>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The largest answer a call reads.
const MAX_ANSWER: usize = 8 << 20;

impl Conn {
    /// Connects to `addr` (`host:port`) and completes the HTTP/2 handshake: the preface and settings
    /// both ways, confirmed by a PING's answer.
    pub async fn connect(addr: &str, within: Duration) -> Result<Conn, CallError> {
        Self::connect_with(addr, within, 65_535).await
    }

    /// As [`Conn::connect`], with the stream window this client grants the server (how much of an
    /// answer the server may send before this side reads it).
    pub async fn connect_with(addr: &str, within: Duration, window: u32) -> Result<Conn, CallError> {
        let connecting = async {
            let tcp = TcpStream::connect(addr).await.map_err(transport)?;
            let _ = tcp.set_nodelay(true);
            let (send, mut connection) =
                h2::client::Builder::new().initial_window_size(window).handshake::<_, Bytes>(tcp).await.map_err(transport)?;
            let ping = connection.ping_pong();
            let closed = Arc::new(AtomicBool::new(false));
            let driver = tokio::spawn({
                let closed = closed.clone();
                async move {
                    let _ = connection.await;
                    closed.store(true, Ordering::Relaxed);
                }
            });
            let conn = Conn { send, authority: addr.to_string(), closed, driver };
            if let Some(mut ping) = ping {
                ping.ping(h2::Ping::opaque()).await.map_err(transport)?;
            }
            Ok(conn)
        };
        tokio::time::timeout(within, connecting).await.map_err(|_| CallError::Timeout(within))?
    }

    /// Whether the connection has ended (closed by the server, or failed).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.driver.is_finished()
    }

    fn request(&self, path: &str) -> Result<http::Request<()>, CallError> {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| CallError::BadAnswer(e.to_string()))
    }

    /// Opens a stream for `path` and sends `body` (already framed, or not: the caller decides), ending
    /// the request if `end`. Waits for room under the server's stream limit at most `within`.
    pub async fn open(
        &self,
        path: &str,
        body: Bytes,
        end: bool,
        within: Duration,
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), CallError> {
        let request = self.request(path)?;
        let mut send =
            tokio::time::timeout(within, self.send.clone().ready()).await.map_err(|_| CallError::Timeout(within))?.map_err(transport)?;
        let (response, mut stream) = send.send_request(request, false).map_err(transport)?;
        stream.send_data(body, end).map_err(transport)?;
        Ok((response, stream))
    }

    /// A unary call with an encoded message: the answer's message bytes, or the status.
    pub async fn call_raw(&self, path: &str, message: Bytes, within: Duration) -> Result<Bytes, CallError> {
        let call = async {
            let (response, _stream) = self.open(path, frame(&message), true, within).await?;
            let response = response.await.map_err(transport)?;
            read_unary(response).await
        };
        tokio::time::timeout(within, call).await.map_err(|_| CallError::Timeout(within))?
    }

    /// A unary call.
    pub async fn call<A: Message + Default>(&self, path: &str, message: &impl Message, within: Duration) -> Result<A, CallError> {
        let bytes = self.call_raw(path, encode(message), within).await?;
        A::decode(bytes).map_err(|e| CallError::BadAnswer(e.to_string()))
    }

    /// Starts a server-streaming call and waits for the answer's headers: the stream to read, or the
    /// status of a refusal.
    pub async fn open_stream(&self, path: &str, message: &impl Message, within: Duration) -> Result<Streaming, CallError> {
        let opening = async {
            let (response, stream) = self.open(path, frame(&encode(message)), true, within).await?;
            let response = response.await.map_err(transport)?;
            let (parts, body) = response.into_parts();
            if let Some(status) = status_from(&parts.headers)
                && status.code != code::OK
            {
                return Err(CallError::Status(status));
            }
            Ok(Streaming { body, buf: BytesMut::new(), _stream: stream })
        };
        tokio::time::timeout(within, opening).await.map_err(|_| CallError::Timeout(within))?
    }
}

/// Reads a unary answer: a trailers-only refusal, or one message and the trailers.
pub(super) async fn read_unary(response: http::Response<h2::RecvStream>) -> Result<Bytes, CallError> {
    let (parts, mut body) = response.into_parts();
    if let Some(status) = status_from(&parts.headers) {
        return Err(if status.code == code::OK { CallError::BadAnswer("OK without a message".into()) } else { CallError::Status(status) });
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(transport)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if buf.len() + chunk.len() > MAX_ANSWER {
            return Err(CallError::BadAnswer("answer too large".into()));
        }
        buf.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(transport)?.unwrap_or_default();
    let status = status_from(&trailers).ok_or_else(|| CallError::BadAnswer("no grpc-status".into()))?;
    if status.code != code::OK {
        return Err(CallError::Status(status));
    }
    take_message(&mut buf)?.ok_or_else(|| CallError::BadAnswer("no message".into()))
}

/// The next whole message in `buf`, if there is one.
pub(super) fn take_message(buf: &mut BytesMut) -> Result<Option<Bytes>, CallError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(CallError::BadAnswer("compressed message".into()));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The answers of a server-streaming call.
pub struct Streaming {
    body: h2::RecvStream,
    buf: BytesMut,
    _stream: h2::SendStream<Bytes>,
}

impl Streaming {
    /// The next message; `Ok(None)` when the stream ended with OK, the status when it ended with an error.
    pub async fn next_raw(&mut self, within: Duration) -> Result<Option<Bytes>, CallError> {
        let reading = async {
            loop {
                if let Some(message) = take_message(&mut self.buf)? {
                    return Ok(Some(message));
                }
                match self.body.data().await {
                    Some(chunk) => {
                        let chunk = chunk.map_err(transport)?;
                        let _ = self.body.flow_control().release_capacity(chunk.len());
                        if self.buf.len() + chunk.len() > MAX_ANSWER {
                            return Err(CallError::BadAnswer("message too large".into()));
                        }
                        self.buf.extend_from_slice(&chunk);
                    }
                    None => {
                        let trailers = self.body.trailers().await.map_err(transport)?.unwrap_or_default();
                        return match status_from(&trailers) {
                            Some(s) if s.code == code::OK => Ok(None),
                            Some(s) => Err(CallError::Status(s)),
                            None => Err(CallError::Transport("stream ended without a status".into())),
                        };
                    }
                }
            }
        };
        tokio::time::timeout(within, reading).await.map_err(|_| CallError::Timeout(within))?
    }

    /// The next message, decoded.
    pub async fn next<A: Message + Default>(&mut self, within: Duration) -> Result<Option<A>, CallError> {
        match self.next_raw(within).await? {
            None => Ok(None),
            Some(bytes) => A::decode(bytes).map(Some).map_err(|e| CallError::BadAnswer(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the framing both ways: whole messages come back in order, an incomplete one waits.
    #[test]
    fn messages_are_framed_and_taken_back() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(b"abc"));
        buf.extend_from_slice(&frame(b""));
        buf.extend_from_slice(&frame(b"xy")[..4]);
        assert_eq!(take_message(&mut buf).unwrap().unwrap(), Bytes::from_static(b"abc"));
        assert_eq!(take_message(&mut buf).unwrap().unwrap(), Bytes::new());
        assert_eq!(take_message(&mut buf).unwrap(), None, "an incomplete message waits");
    }

    /// Pins how a status reads: `grpc-message` percent-decoded (a stray `%` kept), codes by name.
    #[test]
    fn status_messages_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%25"), "a b%");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(code::name(code::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
        assert_eq!(code::name(99), "?");
    }
}
