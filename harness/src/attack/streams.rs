//! Streams nobody reads: server-streaming calls opened and left unread, to see what the server holds
//! for them.

use std::time::Duration;

use super::grpc::{Conn, Streaming, Tally};
use super::services::Empty;

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
