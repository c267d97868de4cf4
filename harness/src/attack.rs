//! Attacks on synclab's servers, and the probes that tell what they cost: for the attack tests
//! (`tests/attack.rs`) and the attack benchmark (`benches/attack.rs`).
//!
//! The attacker speaks HTTP/2 itself ([`Conn`], on `h2`), so it can do what a well-behaved client
//! cannot: stop a request body half-way, send 4 MiB where 16 KiB is allowed, open streams and never read
//! them, forge any field of any message. Messages are encoded with the project's own protobuf types, so
//! a field an older server does not know is simply ignored by it.
//!
//! Every attack is bounded: a count of connections, streams or messages given by the caller, and a
//! deadline on every step. Targets are loopback addresses of servers the caller started.
//!
//! - Connections: [`idle_tcp`], [`idle_h2`], [`garbage`].
//! - Requests: [`rapid_reset`], [`unfinished_bodies`], [`oversized`] + [`send_at_rate`], [`flood`], [`election_forgeries`].
//! - Streams: [`never_read_streams`].
//! - Servers that misbehave: [`Stalled`] (accepts, never answers).
//! - Berkeley: [`FakeMaster`] (a master that records the claim a slave registers with, so its adjustments
//!   can be forged and replayed as someone who reads the traffic could), [`register_request`].
//! - Probes: [`Prober`] (a legitimate call's latency during an attack), [`memory`] and [`MemWatch`] (RSS),
//!   [`open_fds`], [`Process`] (a spawned binary: stderr lines, health, exit time after SIGTERM).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use synclab::proto::berkeley as berkeley_pb;
use synclab::proto::election as election_pb;

// ---------------------------------------------------------------------------------------------------
// gRPC over raw HTTP/2
// ---------------------------------------------------------------------------------------------------

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

fn transport(e: impl std::fmt::Display) -> CallError {
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
async fn read_unary(response: http::Response<h2::RecvStream>) -> Result<Bytes, CallError> {
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
fn take_message(buf: &mut BytesMut) -> Result<Option<Bytes>, CallError> {
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

// ---------------------------------------------------------------------------------------------------
// The services' paths and a few messages the project's crates do not export
// ---------------------------------------------------------------------------------------------------

/// The RPC paths the attacks use.
pub mod path {
    pub const GET_TIME: &str = "/synclab.time.v1.TimeService/GetTime";
    pub const CLOCK_READ: &str = "/synclab.clock.v1.Clock/Read";
    pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
    pub const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
    pub const ELECTION: &str = "/synclab.election.v1.ElectionService/Election";
    pub const COORDINATOR: &str = "/synclab.election.v1.ElectionService/Coordinator";
    pub const ALIVE: &str = "/synclab.election.v1.ElectionService/Alive";
    pub const RING_ELECTION: &str = "/synclab.election.v1.ElectionService/RingElection";
    pub const RING_COORDINATOR: &str = "/synclab.election.v1.ElectionService/RingCoordinator";
    pub const GET_STATE: &str = "/synclab.election.v1.ElectionService/GetState";
    pub const WATCH_LEADER: &str = "/synclab.election.v1.ElectionService/WatchLeader";
    pub const WATCH_MESSAGES: &str = "/synclab.election.v1.ElectionService/WatchMessages";
    pub const REGISTER: &str = "/synclab.berkeley.v1.BerkeleyMaster/Register";
    pub const STATUS: &str = "/synclab.berkeley.v1.BerkeleyMaster/Status";
    pub const WATCH_ROUNDS: &str = "/synclab.berkeley.v1.BerkeleyMaster/WatchRounds";
    pub const ADJUST: &str = "/synclab.berkeley.v1.BerkeleySlave/Adjust";
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`: 1 SERVING, 2 NOT_SERVING.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

pub const SERVING: i32 = 1;
pub const NOT_SERVING: i32 = 2;

/// An empty message (`GetTimeRequest {}`, `GetStateRequest {}`, `WatchLeaderRequest {}`, ...).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

// ---------------------------------------------------------------------------------------------------
// Connection floods
// ---------------------------------------------------------------------------------------------------

/// TCP connections held open by the attacker.
pub struct IdleTcp {
    streams: Vec<TcpStream>,
    /// Connections that could not be made.
    pub failed: usize,
}

impl IdleTcp {
    /// How many the server has not closed yet (reads what is waiting without blocking; end-of-file or a
    /// reset means closed).
    pub fn still_open(&mut self) -> usize {
        let mut buf = [0u8; 4096];
        self.streams.retain(|s| {
            loop {
                match s.try_read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
        self.streams.len()
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// Opens `n` TCP connections to `addr` and sends nothing on them. Each connect has `within`.
pub async fn idle_tcp(addr: &str, n: usize, within: Duration) -> IdleTcp {
    let mut streams = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        match tokio::time::timeout(within, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => streams.push(s),
            _ => failed += 1,
        }
    }
    IdleTcp { streams, failed }
}

/// HTTP/2 connections that completed the handshake and then say nothing.
pub struct IdleH2 {
    pub conns: Vec<Conn>,
    pub failed: usize,
}

impl IdleH2 {
    /// How many the server has not closed.
    pub fn still_open(&self) -> usize {
        self.conns.iter().filter(|c| !c.is_closed()).count()
    }
}

/// Opens `n` connections that complete the HTTP/2 handshake (confirmed by a PING), then idle.
pub async fn idle_h2(addr: &str, n: usize, within: Duration) -> IdleH2 {
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        match Conn::connect(addr, within).await {
            Ok(c) => conns.push(c),
            Err(_) => failed += 1,
        }
    }
    IdleH2 { conns, failed }
}

/// What garbage on the port did.
#[derive(Debug, Clone, Default)]
pub struct GarbageReport {
    /// Connections the server closed after the garbage.
    pub closed: usize,
    /// Connections still open when the attacker gave up waiting.
    pub still_open: usize,
    /// Connections that could not be made or written.
    pub failed: usize,
    /// Bytes the server sent back in all.
    pub answered_bytes: usize,
}

/// A small deterministic generator for garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Sends `bytes_each` pseudo-random bytes (from `seed`) on each of `conns` connections, at most
/// `parallel` at a time, then waits up to `within` per connection for the server to close it.
pub async fn garbage(addr: &str, conns: usize, bytes_each: usize, seed: u64, parallel: usize, within: Duration) -> GarbageReport {
    let mut rng = XorShift(seed.max(1));
    let mut payloads = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut data = Vec::with_capacity(bytes_each);
        while data.len() < bytes_each {
            data.extend_from_slice(&rng.next().to_le_bytes());
        }
        data.truncate(bytes_each);
        payloads.push(data);
    }
    let addr = addr.to_string();
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let tasks: Vec<_> = payloads
        .into_iter()
        .map(|data| {
            let (addr, limit) = (addr.clone(), limit.clone());
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                let Ok(Ok(mut s)) = tokio::time::timeout(within, TcpStream::connect(&addr)).await else { return (2u8, 0usize) };
                // The server may close before all is written: that is the expected outcome.
                let _ = tokio::time::timeout(within, s.write_all(&data)).await;
                let mut answered = 0;
                let mut buf = [0u8; 4096];
                let deadline = tokio::time::Instant::now() + within;
                loop {
                    match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return (0, answered),
                        Ok(Ok(n)) => answered += n,
                        Err(_) => return (1, answered),
                    }
                }
            })
        })
        .collect();
    let mut report = GarbageReport::default();
    for task in tasks {
        match task.await {
            Ok((0, n)) => {
                report.closed += 1;
                report.answered_bytes += n;
            }
            Ok((1, n)) => {
                report.still_open += 1;
                report.answered_bytes += n;
            }
            _ => report.failed += 1,
        }
    }
    report
}

// ---------------------------------------------------------------------------------------------------
// Request floods
// ---------------------------------------------------------------------------------------------------

/// Requests whose bodies never finish, held open by the attacker.
pub struct Unfinished {
    conns: Vec<Conn>,
    streams: Vec<h2::SendStream<Bytes>>,
    answers: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
    /// Streams opened and partly sent.
    pub opened: usize,
    /// Streams that could not be opened (no room under the server's stream limit in time, or the
    /// connection failed).
    pub not_opened: usize,
}

impl Unfinished {
    /// How the requests the server has answered so far ended (the others are still waiting).
    pub fn answered(&self) -> Tally {
        self.answers.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Connections the server has closed.
    pub fn closed_conns(&self) -> usize {
        self.conns.iter().filter(|c| c.is_closed()).count()
    }

    /// Streams still held.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens `conns` connections with `streams_per_conn` requests each to `path`, each sending the gRPC
/// prefix of a message of `declared` bytes and then `body_bytes` bytes of it, never the rest and never
/// the end of the stream. Each step has `within`.
pub async fn unfinished_bodies(
    addr: &str,
    path: &str,
    conns: usize,
    streams_per_conn: usize,
    body_bytes: usize,
    declared: u32,
    within: Duration,
) -> Unfinished {
    let mut body = BytesMut::with_capacity(body_bytes + 5);
    body.put_u8(0);
    body.put_u32(declared);
    body.put_bytes(0x08, body_bytes);
    let body = body.freeze();
    let answers = Arc::new(Mutex::new(Tally::default()));
    let mut out =
        Unfinished { conns: Vec::new(), streams: Vec::new(), answers: answers.clone(), tasks: Vec::new(), opened: 0, not_opened: 0 };
    for _ in 0..conns {
        let conn = match Conn::connect(addr, within).await {
            Ok(c) => c,
            Err(_) => {
                out.not_opened += streams_per_conn;
                continue;
            }
        };
        for _ in 0..streams_per_conn {
            match conn.open(path, body.clone(), false, within).await {
                Ok((response, stream)) => {
                    out.opened += 1;
                    out.streams.push(stream);
                    let answers = answers.clone();
                    out.tasks.push(tokio::spawn(async move {
                        let result = match response.await {
                            Ok(r) => read_unary(r).await.map(|_| ()),
                            Err(e) => Err(transport(e)),
                        };
                        if let Ok(mut t) = answers.lock() {
                            t.add(&result);
                        }
                    }));
                }
                Err(_) => out.not_opened += 1,
            }
        }
        out.conns.push(conn);
    }
    out
}

/// What a rapid-reset flood did.
#[derive(Debug, Clone, Default)]
pub struct RapidReset {
    /// Requests opened and at once cancelled.
    pub reset: usize,
    /// Connections the server closed (it answers such a flood with GOAWAY).
    pub closed: usize,
    pub conns: usize,
}

/// HTTP/2 rapid reset (CVE-2023-44487): on each of `conns` connections, opens `per_conn` requests to
/// `path` and cancels each at once (RST_STREAM), never waiting for an answer; stops on a connection the
/// server closed. Each step has `within`.
pub async fn rapid_reset(addr: &str, path: &str, conns: usize, per_conn: usize, within: Duration) -> RapidReset {
    let mut out = RapidReset { conns, ..RapidReset::default() };
    let message = frame(&[]);
    for _ in 0..conns {
        let Ok(conn) = Conn::connect(addr, within).await else { continue };
        for _ in 0..per_conn {
            match conn.open(path, message.clone(), true, within).await {
                Ok((_, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    out.reset += 1;
                }
                Err(_) => break,
            }
            if conn.is_closed() {
                break;
            }
        }
        // Give the server a moment to answer the last resets.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if conn.is_closed() {
            out.closed += 1;
        }
    }
    out
}

/// What an oversized message pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversized {
    /// A `RingElection` whose `ids` fill the message (as id 1, one byte each).
    RingElection,
    /// A `Register` whose name fills the message.
    Register,
    /// A `Register` whose address fills the message (name "KMC").
    RegisterAddress,
}

/// The path and encoded bytes of a message of about `bytes` bytes (within a few bytes).
pub fn oversized(kind: Oversized, bytes: usize) -> (&'static str, Bytes) {
    fn put_varint(out: &mut BytesMut, mut v: u64) {
        while v >= 0x80 {
            out.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        out.put_u8(v as u8);
    }
    let mut out = BytesMut::with_capacity(bytes + 32);
    match kind {
        Oversized::RingElection => {
            // from = 1, term = 1, initiator = 1, to = 0, ids = [1, 1, ...] packed.
            out.put_slice(&[0x08, 0x01, 0x10, 0x01, 0x18, 0x01]);
            out.put_u8(0x22);
            put_varint(&mut out, bytes as u64);
            out.put_bytes(0x01, bytes);
            (path::RING_ELECTION, out.freeze())
        }
        Oversized::Register => {
            out.put_u8(0x0a);
            put_varint(&mut out, bytes as u64);
            out.put_bytes(b'x', bytes);
            out.put_slice(&[0x12, 11]);
            out.put_slice(b"127.0.0.1:9");
            (path::REGISTER, out.freeze())
        }
        Oversized::RegisterAddress => {
            out.put_slice(&[0x0a, 3]);
            out.put_slice(b"KMC");
            out.put_u8(0x12);
            put_varint(&mut out, bytes as u64);
            out.put_bytes(b'a', bytes.saturating_sub(2));
            out.put_slice(b":9");
            (path::REGISTER, out.freeze())
        }
    }
}

/// Calls with their outcomes and how long each took.
#[derive(Debug, Clone, Default)]
pub struct Flood {
    pub tally: Tally,
    pub latencies: Vec<Duration>,
    /// Status messages seen (one per distinct message, at most 16), for checking what errors echo.
    pub messages: Vec<String>,
    pub elapsed: Duration,
}

impl Flood {
    fn record(&mut self, result: &Result<Bytes, CallError>, took: Duration) {
        self.tally.add(result);
        self.latencies.push(took);
        if let Err(CallError::Status(s)) = result
            && self.messages.len() < 16
            && !self.messages.contains(&s.message)
        {
            self.messages.push(s.message.clone());
        }
    }

    /// The longest status message seen, in bytes.
    pub fn longest_message(&self) -> usize {
        self.messages.iter().map(String::len).max().unwrap_or(0)
    }
}

/// Sends `count` copies of `message` to `path` at `per_second` (each call started on schedule, at most
/// `parallel` in flight over up to 8 connections). Each call has `within`.
pub async fn send_at_rate(
    addr: &str,
    path: &'static str,
    message: Bytes,
    count: usize,
    per_second: f64,
    parallel: usize,
    within: Duration,
) -> Result<Flood, CallError> {
    let gap = Duration::from_secs_f64(1.0 / per_second.max(0.001));
    calls(addr, path, &[message], count, Some(gap), parallel, parallel.clamp(1, 8), within).await
}

/// Sends `count` requests to `path`, cycling through `messages`, at most `parallel` at a time (32 per
/// connection). Each call has `within`.
pub async fn flood(
    addr: &str,
    path: &'static str,
    messages: &[Bytes],
    count: usize,
    parallel: usize,
    within: Duration,
) -> Result<Flood, CallError> {
    calls(addr, path, messages, count, None, parallel, parallel.div_ceil(32).max(1), within).await
}

#[allow(clippy::too_many_arguments)]
async fn calls(
    addr: &str,
    path: &'static str,
    messages: &[Bytes],
    count: usize,
    gap: Option<Duration>,
    parallel: usize,
    n_conns: usize,
    within: Duration,
) -> Result<Flood, CallError> {
    let mut conns = Vec::with_capacity(n_conns);
    for _ in 0..n_conns {
        conns.push(Arc::new(Conn::connect(addr, within).await?));
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        if let Some(gap) = gap {
            tokio::time::sleep_until(started + gap * i as u32).await;
        }
        let Some(message) = messages.get(i % messages.len().max(1)).cloned() else { break };
        let Ok(permit) = limit.clone().acquire_owned().await else { break };
        let conn = conns[i % n_conns].clone();
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            let result = conn.call_raw(path, message, within).await;
            drop(permit);
            (result, at.elapsed())
        }));
    }
    let mut flood = Flood::default();
    for task in tasks {
        if let Ok((result, took)) = task.await {
            flood.record(&result, took);
        }
    }
    flood.elapsed = started.elapsed();
    Ok(flood)
}

/// One forged election message.
#[derive(Debug, Clone)]
pub struct Forgery {
    /// What it is, for tables and assertions.
    pub label: String,
    pub path: &'static str,
    pub message: Bytes,
    /// What a hardened node answers (a gRPC code): terms beyond 2^53 or 2^20 above the receiver's,
    /// non-ids and strangers are INVALID_ARGUMENT, a message for another node FAILED_PRECONDITION, a
    /// message larger than the request limit RESOURCE_EXHAUSTED.
    pub expected: i32,
}

/// 2^53, the largest term a message may carry.
pub const MAX_TERM: u64 = 1 << 53;

/// Forged messages of every election kind for node `receiver` of a group whose members include
/// `member` (another node, lower than `receiver`, so a Bully `Election` from it is in order) and whose
/// term is about `term`: impossible and wrapping terms, terms too far ahead, non-ids, strangers, a ring
/// message of 1,000,000 ids and messages addressed to another node.
pub fn election_forgeries(receiver: i64, member: i64, term: u64) -> Vec<Forgery> {
    use election_pb::{AliveRequest, CoordinatorRequest, ElectionRequest, RingCoordinatorRequest, RingElectionRequest};
    let bad_terms: [(&str, u64); 4] = [
        ("term 2^64-1", u64::MAX),
        ("term 2^53+1", MAX_TERM + 1),
        ("term 2^53-1", MAX_TERM - 1),
        // 2^21 above the term the caller read: still more than 2^20 above the node's if an election
        // raised it meanwhile.
        ("term +2^21", term + (1 << 21)),
    ];
    let bad_ids: [(&str, i64); 4] = [("id 0", 0), ("id -1", -1), ("id i64::MIN", i64::MIN), ("unknown id 999", 999)];
    let mut out = Vec::new();
    let mut push = |label: String, path: &'static str, message: Bytes, expected: i32| out.push(Forgery { label, path, message, expected });
    for (what, t) in bad_terms {
        push(
            format!("Election, {what}"),
            path::ELECTION,
            encode(&ElectionRequest { from: member, term: t, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("Coordinator, {what}"),
            path::COORDINATOR,
            encode(&CoordinatorRequest { from: member, term: t, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("Alive, {what}"),
            path::ALIVE,
            encode(&AliveRequest { from: member, term: t, coordinator: member, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("RingElection, {what}"),
            path::RING_ELECTION,
            encode(&RingElectionRequest { from: member, term: t, initiator: member, ids: vec![member], to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("RingCoordinator, {what}"),
            path::RING_COORDINATOR,
            encode(&RingCoordinatorRequest { from: member, term: t, coordinator: member, initiator: member, to: receiver }),
            code::INVALID_ARGUMENT,
        );
    }
    for (what, id) in bad_ids {
        push(
            format!("Alive from {what}"),
            path::ALIVE,
            encode(&AliveRequest { from: id, term, coordinator: 0, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        // Coordinator 0 means "none": a valid heartbeat.
        if id != 0 {
            push(
                format!("Alive naming coordinator {what}"),
                path::ALIVE,
                encode(&AliveRequest { from: member, term, coordinator: id, to: receiver }),
                code::INVALID_ARGUMENT,
            );
        }
        push(
            format!("Coordinator from {what}"),
            path::COORDINATOR,
            encode(&CoordinatorRequest { from: id, term, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("RingElection with {what}"),
            path::RING_ELECTION,
            encode(&RingElectionRequest { from: member, term, initiator: member, ids: vec![member, id], to: receiver }),
            code::INVALID_ARGUMENT,
        );
    }
    let ids: Vec<i64> = (0..1_000_000).map(|i| 1 + i % 3).collect();
    push(
        "RingElection with 1,000,000 ids".into(),
        path::RING_ELECTION,
        encode(&RingElectionRequest { from: member, term, initiator: 1, ids, to: receiver }),
        code::RESOURCE_EXHAUSTED,
    );
    let elsewhere = receiver + 1000;
    push(
        "Alive for another node".into(),
        path::ALIVE,
        encode(&AliveRequest { from: member, term, coordinator: 0, to: elsewhere }),
        code::FAILED_PRECONDITION,
    );
    push(
        "Election for another node".into(),
        path::ELECTION,
        encode(&ElectionRequest { from: member, term, to: elsewhere }),
        code::FAILED_PRECONDITION,
    );
    push(
        "Coordinator for another node".into(),
        path::COORDINATOR,
        encode(&CoordinatorRequest { from: member, term, to: elsewhere }),
        code::FAILED_PRECONDITION,
    );
    out
}

/// A forged heartbeat from `from` (a member) with `term`, for node `to`.
pub fn forged_alive(from: i64, term: u64, to: i64) -> Bytes {
    encode(&election_pb::AliveRequest { from, term, coordinator: from, to })
}

/// Five heartbeats node `receiver` refuses, from `member` or posing as others: term 2^64-1, term 2^53-1
/// (too far ahead of a young group), a stranger (999), one for another node, and sender 0. The first
/// three and the last are INVALID_ARGUMENT, the fourth FAILED_PRECONDITION.
pub fn invalid_alives(receiver: i64, member: i64) -> [Bytes; 5] {
    [
        forged_alive(member, u64::MAX, receiver),
        forged_alive(member, MAX_TERM - 1, receiver),
        forged_alive(999, 1, receiver),
        forged_alive(member, 1, receiver + 1000),
        forged_alive(0, 1, receiver),
    ]
}

/// A `Register` message.
pub fn register_request(name: &str, address: &str, claim: &[u8]) -> Bytes {
    encode(&berkeley_pb::RegisterRequest { name: name.into(), address: address.into(), claim: claim.to_vec() })
}

/// An `Adjust` message.
pub fn adjust_request(adjustment_nanos: i64, round: u64, epoch: u64, claim: &[u8]) -> Bytes {
    encode(&berkeley_pb::AdjustRequest { adjustment_nanos, round, epoch, claim: claim.to_vec() })
}

// ---------------------------------------------------------------------------------------------------
// Streams nobody reads
// ---------------------------------------------------------------------------------------------------

/// Server-streaming calls opened and never read.
pub struct NeverRead {
    pub streams: Vec<Streaming>,
    /// How the calls that did not open ended (RESOURCE_EXHAUSTED past the server's cap).
    pub refused: Tally,
    conns: Vec<Conn>,
}

impl NeverRead {
    pub fn opened(&self) -> usize {
        self.streams.len()
    }

    /// Connections the server closed.
    pub fn closed_conns(&self) -> usize {
        self.conns.iter().filter(|c| c.is_closed()).count()
    }
}

/// Opens `n` calls of the server-streaming `path`, `per_conn` on each connection, and reads nothing
/// from them. The client's window is `window` bytes per stream: what the server can send before it has
/// to wait. With 0 nothing but the answer's headers can be sent, as to a client that never reads (with a
/// window, h2's client ends its own connection once too many small frames wait unread). Each step has
/// `within`.
pub async fn never_read_streams(addr: &str, path: &str, n: usize, per_conn: usize, window: u32, within: Duration) -> NeverRead {
    let per_conn = per_conn.max(1);
    let mut out = NeverRead { streams: Vec::new(), refused: Tally::default(), conns: Vec::new() };
    let mut left = n;
    while left > 0 {
        let conn = match Conn::connect_with(addr, within, window).await {
            Ok(c) => c,
            Err(e) => {
                let err: Result<(), _> = Err(e);
                out.refused.add(&err);
                left -= 1;
                continue;
            }
        };
        for _ in 0..per_conn.min(left) {
            match conn.open_stream(path, &Empty {}, within).await {
                Ok(s) => out.streams.push(s),
                Err(e) => {
                    let err: Result<(), _> = Err(e);
                    out.refused.add(&err);
                }
            }
            left -= 1;
        }
        out.conns.push(conn);
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// A master that records claims
// ---------------------------------------------------------------------------------------------------

/// A stand-in Berkeley master: answers `Register` with its epoch and remembers every registration, so a
/// test or benchmark sees the claim a slave sends its master (as anyone who can read the traffic does).
pub struct FakeMaster {
    pub addr: String,
    pub epoch: u64,
    registrations: Arc<Mutex<Vec<berkeley_pb::RegisterRequest>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMaster {
    /// Listens on 127.0.0.1 (any port).
    pub async fn start(epoch: u64) -> io::Result<FakeMaster> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let registrations = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let registrations = registrations.clone();
            async move {
                let mut conns = Vec::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    let registrations = registrations.clone();
                    conns.push(tokio::spawn(async move {
                        let _ = serve_fake_master(tcp, epoch, registrations).await;
                    }));
                    conns.retain(|c: &JoinHandle<()>| !c.is_finished());
                }
            }
        });
        Ok(FakeMaster { addr, epoch, registrations, task })
    }

    /// The last registration received, if any.
    pub fn last(&self) -> Option<berkeley_pb::RegisterRequest> {
        self.registrations.lock().ok()?.last().cloned()
    }

    pub fn registrations(&self) -> usize {
        self.registrations.lock().map(|r| r.len()).unwrap_or(0)
    }
}

async fn serve_fake_master(
    tcp: TcpStream,
    epoch: u64,
    registrations: Arc<Mutex<Vec<berkeley_pb::RegisterRequest>>>,
) -> Result<(), h2::Error> {
    let mut conn = h2::server::handshake(tcp).await?;
    while let Some(request) = conn.accept().await {
        let (request, mut respond) = request?;
        let registrations = registrations.clone();
        tokio::spawn(async move {
            let is_register = request.uri().path() == path::REGISTER;
            let mut body = request.into_body();
            let mut buf = BytesMut::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            let decoded = take_message(&mut buf).ok().flatten().and_then(|m| berkeley_pb::RegisterRequest::decode(m).ok());
            let answer = match (is_register, decoded) {
                (true, Some(req)) => {
                    if let Ok(mut r) = registrations.lock() {
                        r.push(req);
                    }
                    Some(berkeley_pb::RegisterResponse {
                        master: "fake-master".into(),
                        round_interval_nanos: 60_000_000_000,
                        rejoined: false,
                        epoch,
                    })
                }
                _ => None,
            };
            let response = http::Response::builder().header("content-type", "application/grpc").body(()).unwrap_or_default();
            let Ok(mut send) = respond.send_response(response, false) else { return };
            let mut trailers = http::HeaderMap::new();
            match answer {
                Some(answer) => {
                    let _ = send.send_data(frame(&answer.encode_to_vec()), false);
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                }
                None => {
                    trailers.insert("grpc-status", http::HeaderValue::from_static("12"));
                }
            }
            let _ = send.send_trailers(trailers);
        });
    }
    Ok(())
}

/// A server that accepts connections and never says a word (a stalled server, or an attacker posing
/// as one). It holds up to 256 connections; it stops when dropped.
pub struct Stalled {
    pub addr: String,
    task: JoinHandle<()>,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stalled {
    /// Listens on 127.0.0.1 (any port).
    pub async fn start() -> io::Result<Stalled> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                if held.len() < 256 {
                    held.push(s);
                }
            }
        });
        Ok(Stalled { addr, task })
    }
}

// ---------------------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------------------

/// A process's memory, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    /// Resident set size now, in KiB.
    pub rss_kb: u64,
    /// The peak resident set size over the process's life, in KiB.
    pub hwm_kb: u64,
}

/// `pid`'s memory, or `None` if it cannot be read (the process is gone).
pub fn memory(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Mem { rss_kb: field("VmRSS:")?, hwm_kb: field("VmHWM:")? })
}

/// How many file descriptors `pid` has open.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Samples a process's RSS every 10 ms on a thread of its own and keeps the peak.
pub struct MemWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemWatch {
    pub fn start(pid: u32) -> MemWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(m) = memory(pid) {
                        peak.fetch_max(m.rss_kb as usize, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        MemWatch { stop, peak, thread: Some(thread) }
    }

    /// The highest RSS seen so far, in KiB.
    pub fn peak_kb(&self) -> u64 {
        self.peak.load(Ordering::Relaxed) as u64
    }

    /// Stops sampling; the peak, in KiB.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.peak_kb()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MemWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Latencies of legitimate calls, and the calls that failed.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub samples: Vec<Duration>,
    pub failures: Vec<String>,
}

impl Latencies {
    fn quantile(&self, q: f64) -> Option<Duration> {
        let mut s = self.samples.clone();
        if s.is_empty() {
            return None;
        }
        s.sort_unstable();
        let i = ((s.len() as f64 - 1.0) * q).round() as usize;
        s.get(i).copied()
    }

    pub fn median(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    /// The `q` quantile (nearest rank), `q` in [0, 1].
    pub fn quantile_at(&self, q: f64) -> Option<Duration> {
        self.quantile(q.clamp(0.0, 1.0))
    }

    /// The 99th percentile (nearest rank); with fewer than 100 samples, the largest but one or so.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    pub fn max(&self) -> Option<Duration> {
        self.samples.iter().max().copied()
    }

    /// "median 0.41 ms, p99 1.9 ms (n=40)" or with failures.
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64() * 1e3));
        let mut s = format!("{} / {} ms", ms(self.median()), ms(self.p99()));
        if !self.failures.is_empty() {
            s.push_str(&format!(", {} of {} failed", self.failures.len(), self.failures.len() + self.samples.len()));
        }
        s
    }
}

/// A legitimate client calling one unary RPC at a steady pace during an attack, on its own connection
/// (dialled again if the server closes it), recording each call's latency. It runs on a thread and
/// runtime of its own, as a separate client would, so the attacker's tasks in the same process do not
/// delay it.
pub struct Prober {
    stop: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Receiver<Latencies>,
}

impl Prober {
    /// Starts calling `path` with `message` on `addr` every `every`, each call with `within`. The
    /// connection is made (and one call answered) before this returns, as a client that was there
    /// before the attack.
    pub async fn start(addr: &str, path: &'static str, message: Bytes, every: Duration, within: Duration) -> Result<Prober, CallError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), CallError>>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let addr = addr.to_string();
        let flag = stop.clone();
        std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(transport(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let first = match Conn::connect(&addr, within).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // One call to warm the connection up; not counted.
                if let Err(e) = first.call_raw(path, message.clone(), within).await {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                let mut out = Latencies::default();
                let mut conn = Some(first);
                let mut next = tokio::time::Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    next += every;
                    let at = Instant::now();
                    let c = match conn.take().filter(|c| !c.is_closed()) {
                        Some(c) => Ok(c),
                        None => Conn::connect(&addr, within).await,
                    };
                    match c {
                        Ok(c) => {
                            match c.call_raw(path, message.clone(), within).await {
                                Ok(_) => out.samples.push(at.elapsed()),
                                Err(e) => out.failures.push(e.to_string()),
                            }
                            conn = Some(c);
                        }
                        Err(e) => out.failures.push(format!("connect: {e}")),
                    }
                    tokio::time::sleep_until(next.max(tokio::time::Instant::now())).await;
                }
                let _ = done_tx.send(out);
            });
        });
        match ready_rx.await {
            Ok(Ok(())) => Ok(Prober { stop, done }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CallError::Transport("the prober's thread ended".into())),
        }
    }

    /// Stops probing; what was measured.
    pub async fn finish(self) -> Latencies {
        self.stop.store(true, Ordering::Relaxed);
        self.done.await.unwrap_or_default()
    }
}

/// Asks `addr`'s health (the server as a whole).
pub async fn health(addr: &str, within: Duration) -> Result<i32, CallError> {
    let conn = Conn::connect(addr, within).await?;
    let answer: HealthCheckResponse = conn.call(path::HEALTH_CHECK, &HealthCheckRequest { service: String::new() }, within).await?;
    Ok(answer.status)
}

// ---------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------

/// A port on 127.0.0.1 nothing listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A spawned binary serving on `addr`; its stderr is read on a thread (lines counted, the last 20
/// kept). Killed when dropped, if still running.
pub struct Process {
    pub child: Child,
    pub addr: String,
    lines: Arc<AtomicUsize>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// Starts `program` with `args`; it is to serve on `addr`.
    pub fn spawn(program: &str, args: &[String], addr: &str) -> io::Result<Process> {
        let mut child = Command::new(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let lines = Arc::new(AtomicUsize::new(0));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let (lines, tail) = (lines.clone(), tail.clone());
            std::thread::spawn(move || {
                for line in io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    lines.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == 20 {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
        }
        Ok(Process { child, addr: addr.to_string(), lines, tail })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines written to stderr so far.
    pub fn stderr_lines(&self) -> usize {
        self.lines.load(Ordering::Relaxed)
    }

    /// The last lines of stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default()
    }

    /// Waits until the process answers health checks with SERVING (or any answer, if `any`), at most
    /// `within`.
    pub async fn wait_ready(&mut self, any: bool, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {:?}", self.stderr_tail()));
            }
            match health(&self.addr, Duration::from_millis(300)).await {
                Ok(SERVING) => return Ok(()),
                Ok(_) if any => return Ok(()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(format!("not serving within {within:?}: {:?}", self.stderr_tail()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) -> io::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()?;
        if status.success() { Ok(()) } else { Err(io::Error::other(format!("kill -TERM {} failed", self.pid()))) }
    }

    /// Waits for the process to exit, at most `within`; how long it took, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            if started.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends SIGTERM and waits for the exit, at most `within` (then kills it): the time to exit, or
    /// `None` if it had to be killed.
    pub fn terminate(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        if self.sigterm().is_err() {
            return None;
        }
        let exited = self.wait_exit(within).map(|_| started.elapsed());
        if exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        exited
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Five (or `n`) election-node processes on loopback, ids 1..=n.
pub struct ElectionGroup {
    pub nodes: Vec<Process>,
    pub addrs: Vec<String>,
    pub state_dir: std::path::PathBuf,
}

impl ElectionGroup {
    /// Starts `n` nodes of `binary` running `algorithm` ("bully" or "ring") with the default timers
    /// (heartbeat 50 ms, timeout 200 ms), each keeping its term in `state_dir` (emptied first).
    pub async fn start(binary: &str, n: usize, algorithm: &str, state_dir: std::path::PathBuf) -> Result<ElectionGroup, String> {
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir).map_err(|e| e.to_string())?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            addrs.push(format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?));
        }
        let peers = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
        let mut nodes = Vec::with_capacity(n);
        for (i, addr) in addrs.iter().enumerate() {
            let args: Vec<String> = [
                "--id",
                &(i + 1).to_string(),
                "--listen",
                addr,
                "--peers",
                &peers,
                "--algorithm",
                algorithm,
                "--state-dir",
                &state_dir.to_string_lossy(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            nodes.push(Process::spawn(binary, &args, addr).map_err(|e| e.to_string())?);
        }
        for node in &mut nodes {
            node.wait_ready(false, Duration::from_secs(10)).await?;
        }
        Ok(ElectionGroup { nodes, addrs, state_dir })
    }

    /// Every node's state (`None` for a node that did not answer within `within`).
    pub async fn states(&self, within: Duration) -> Vec<Option<election_pb::NodeState>> {
        let calls = self.addrs.iter().map(|addr| async move {
            let conn = Conn::connect(addr, within).await.ok()?;
            conn.call::<election_pb::NodeState>(path::GET_STATE, &Empty {}, within).await.ok()
        });
        futures::future::join_all(calls).await
    }

    /// Waits until every node follows one coordinator that rules, all in one term: that coordinator
    /// and term, or `None` after `within`.
    pub async fn wait_agreement(&self, within: Duration) -> Option<(i64, u64)> {
        let deadline = Instant::now() + within;
        loop {
            let states: Option<Vec<_>> = self.states(Duration::from_millis(300)).await.into_iter().collect();
            if let Some(states) = states
                && let Some((c, t)) = synclab::election::agreement(&states)
            {
                return Some((c as i64, t));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ElectionGroup {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Watches a group's elections during an attack: polls every node's state every 10 ms and counts the
/// elections nodes began (a node's last election changed) and the highest term seen.
pub struct ElectionWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<ElectionCount>,
}

/// What an [`ElectionWatch`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElectionCount {
    /// Elections begun, summed over the nodes (each node's `last_election.started` seen to change).
    pub begun: u64,
    /// The highest term any node reported.
    pub max_term: u64,
    /// Times a node was seen as coordinator in a term that was not the group's term at the start.
    pub new_coordinators: u64,
}

impl ElectionWatch {
    pub fn start(addrs: Vec<String>) -> ElectionWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let within = Duration::from_millis(300);
                let mut conns: Vec<Option<Conn>> = Vec::new();
                for a in &addrs {
                    conns.push(Conn::connect(a, within).await.ok());
                }
                let mut last: Vec<Option<(i64, i32)>> = vec![None; addrs.len()];
                let mut first = true;
                let mut count = ElectionCount::default();
                let mut rulers = std::collections::BTreeSet::new();
                loop {
                    let done = stop.load(Ordering::Relaxed);
                    for (i, conn) in conns.iter_mut().enumerate() {
                        if conn.as_ref().is_none_or(|c| c.is_closed()) {
                            *conn = Conn::connect(&addrs[i], within).await.ok();
                        }
                        let Some(c) = conn else { continue };
                        let Ok(state) = c.call::<election_pb::NodeState>(path::GET_STATE, &Empty {}, within).await else { continue };
                        count.max_term = count.max_term.max(state.term);
                        let started = state.last_election.and_then(|e| e.started).map(|t| (t.seconds, t.nanos));
                        if !first && started.is_some() && started != last[i] {
                            count.begun += 1;
                        }
                        last[i] = started;
                        if state.role == election_pb::Role::Coordinator as i32 && rulers.insert((state.id, state.term)) && !first {
                            count.new_coordinators += 1;
                        }
                    }
                    first = false;
                    if done {
                        return count;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        ElectionWatch { stop, task }
    }

    pub async fn finish(self) -> ElectionCount {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn status_messages_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%25"), "a b%");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(code::name(code::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
        assert_eq!(code::name(99), "?");
    }

    #[test]
    fn oversized_messages_decode_as_what_they_pretend_to_be() {
        let (p, bytes) = oversized(Oversized::RingElection, 1000);
        assert_eq!(p, path::RING_ELECTION);
        let m = election_pb::RingElectionRequest::decode(bytes).unwrap();
        assert_eq!((m.from, m.term, m.initiator, m.ids.len()), (1, 1, 1, 1000));
        let (_, bytes) = oversized(Oversized::Register, 300);
        let m = berkeley_pb::RegisterRequest::decode(bytes).unwrap();
        assert_eq!((m.name.len(), m.address.as_str()), (300, "127.0.0.1:9"));
        let (_, bytes) = oversized(Oversized::RegisterAddress, 300);
        let m = berkeley_pb::RegisterRequest::decode(bytes).unwrap();
        assert_eq!((m.name.as_str(), m.address.len()), ("KMC", 300));
    }

    #[test]
    fn forgeries_cover_every_kind() {
        let f = election_forgeries(3, 1, 10);
        for kind in ["Election", "Coordinator", "Alive", "RingElection", "RingCoordinator"] {
            assert!(f.iter().any(|g| g.label.starts_with(kind)), "{kind}");
        }
        let huge = f.iter().find(|g| g.label.contains("1,000,000")).unwrap();
        assert!(huge.message.len() > 1_000_000);
    }
}
