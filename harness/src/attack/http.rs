//! The dashboard's HTTP side, as a browser and as an attacker use it: one page load, the first update of
//! an event stream, and event-stream clients that never read.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A whole HTTP answer: its status, its body, and how long it took from the connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub body: String,
    pub took: Duration,
}

/// `GET path` on a connection of its own (`Connection: close`): the status and the whole body, or why
/// not within `within`.
pub async fn http_get(addr: &str, path: &str, within: Duration) -> Result<Page, String> {
    let started = Instant::now();
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no response head in {} bytes", raw.len()))?;
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {head:?}"))?;
        Ok(Page { status, body: body.to_string(), took: started.elapsed() })
    };
    tokio::time::timeout(within, fetch).await.map_err(|_| format!("no whole answer within {within:?}"))?
}

/// Opens `GET /events` and waits for its first update (`event: update`): how long that took.
pub async fn first_event(addr: &str, within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let read = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("event: update") {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("closed after {} bytes", seen.len()));
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(started.elapsed())
    };
    tokio::time::timeout(within, read).await.map_err(|_| format!("no update within {within:?}"))?
}

/// `n` event-stream clients that ask for `/events` and never read a byte (each connect has `within`):
/// the ones that connected, held until dropped.
pub async fn silent_stream_clients(addr: &str, n: usize, within: Duration) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(Ok(mut s)) = tokio::time::timeout(within, TcpStream::connect(addr)).await
            && s.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.is_ok()
        {
            held.push(s);
        }
    }
    held
}
