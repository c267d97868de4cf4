//! Connection floods: TCP connections that say nothing, HTTP/2 connections that idle after the
//! handshake, and seeded garbage on the port.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use synclab_core::lab::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::grpc::Conn;

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

/// `conns` payloads of `bytes_each` pseudo-random bytes, drawn with the lab's generator: the same seed
/// gives the same garbage on every machine.
fn garbage_payloads(seed: u64, conns: usize, bytes_each: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut payloads = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut data = Vec::with_capacity(bytes_each);
        while data.len() < bytes_each {
            data.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        data.truncate(bytes_each);
        payloads.push(data);
    }
    payloads
}

/// Sends `bytes_each` pseudo-random bytes (from `seed`) on each of `conns` connections, at most
/// `parallel` at a time, then waits up to `within` per connection for the server to close it.
pub async fn garbage(addr: &str, conns: usize, bytes_each: usize, seed: u64, parallel: usize, within: Duration) -> GarbageReport {
    let payloads = garbage_payloads(seed, conns, bytes_each);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins that garbage is fixed by its seed (a run can be repeated) and differs between seeds and
    /// between the connections of one run.
    #[test]
    fn the_same_seed_sends_the_same_garbage() {
        let a = garbage_payloads(7, 3, 21);
        assert_eq!(a, garbage_payloads(7, 3, 21));
        assert_ne!(a, garbage_payloads(8, 3, 21));
        assert!(a.iter().all(|p| p.len() == 21));
        assert_ne!(a[0], a[1]);
        assert!(garbage_payloads(0, 1, 64)[0].iter().any(|&b| b != 0), "seed 0 draws garbage too");
    }
}

/// The first 11 bytes of a TLS 1.2/1.3 ClientHello (record header, handshake type and the start of its
/// length): a handshake begun and never finished.
pub const CLIENT_HELLO_START: [u8; 11] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// Opens `n` TCP connections to `addr` at once and sends each the start of a TLS ClientHello
/// ([`CLIENT_HELLO_START`]), then nothing: handshakes a server waits on. Each connection has `within`.
pub async fn stalled_handshakes(addr: &str, n: usize, within: Duration) -> IdleTcp {
    let opening = (0..n).map(|_| {
        tokio::time::timeout(within, async {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(&CLIENT_HELLO_START).await?;
            Ok::<_, io::Error>(s)
        })
    });
    let mut streams = Vec::with_capacity(n);
    let mut failed = 0;
    for opened in futures::future::join_all(opening).await {
        match opened {
            Ok(Ok(s)) => streams.push(s),
            _ => failed += 1,
        }
    }
    IdleTcp { streams, failed }
}

/// What a crowd of readers did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readers {
    /// Calls answered.
    pub answered: u64,
    /// Calls that failed (the connection closed under them, a refusal, a deadline).
    pub failed: u64,
    /// Connections opened again after the server closed one.
    pub reconnects: u64,
}

/// `n` HTTP/2 connections to `addr`, opened over the first `every`, each calling `path` (with an empty
/// message) every `every` for `lasting`, and connecting again when the server closes it: read-only
/// traffic from a crowd. Each step has `within`.
pub async fn readers(addr: &str, path: &'static str, n: usize, every: Duration, lasting: Duration, within: Duration) -> Readers {
    let until = tokio::time::Instant::now() + lasting;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let addr = addr.to_string();
        let ramp = every.mul_f64(i as f64 / n.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(ramp).await;
            let mut seen = Readers::default();
            let mut conn = Conn::connect(&addr, within).await.ok();
            while tokio::time::Instant::now() < until {
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    seen.reconnects += 1;
                    conn = Conn::connect(&addr, within).await.ok();
                }
                if let Some(c) = &conn {
                    match c.call_raw(path, super::grpc::encode(&super::services::Empty {}), within).await {
                        Ok(_) => seen.answered += 1,
                        Err(_) => seen.failed += 1,
                    }
                }
                tokio::time::sleep(every).await;
            }
            seen
        }));
    }
    let mut total = Readers::default();
    for task in tasks {
        if let Ok(seen) = task.await {
            total.answered += seen.answered;
            total.failed += seen.failed;
            total.reconnects += seen.reconnects;
        }
    }
    total
}
