//! The HTTP/2 frame-head parser and scanner of `synclab::net::frame`, on arbitrary bytes cut at arbitrary
//! boundaries.
//!
//! Checked: parsing a head never panics and keeps the field widths (24-bit length, 31-bit stream id);
//! `ends_stream` is exactly "DATA or HEADERS with END_STREAM"; and the scanner, however the bytes are
//! chunked, reports a stream's end in exactly the chunks where a reference walk over the whole buffer
//! completes the head of a frame that ends a stream (what its docs promise: "across read or write
//! boundaries").

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use synclab::net::frame::{FrameScanner, HEAD_LEN, Head, Kind, PREFACE_LEN};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Client to server (a preface first) or server to client.
    from_client: bool,
    /// Chunk lengths, used in turn (0 counts as 1); empty: one chunk.
    cuts: Vec<u16>,
    /// Whole frames or not, and any preface.
    wire: Vec<u8>,
}

/// Offsets of the last byte of every head of a frame that ends a stream, walking `wire` whole.
fn reference_ends(wire: &[u8], from_client: bool) -> Vec<usize> {
    let mut at = if from_client { PREFACE_LEN } else { 0 };
    let mut ends = Vec::new();
    while at + HEAD_LEN <= wire.len() {
        let h = &wire[at..at + HEAD_LEN];
        let length = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        if h[3] <= 1 && h[4] & 1 != 0 {
            ends.push(at + HEAD_LEN - 1);
        }
        at += HEAD_LEN + length;
    }
    ends
}

fuzz_target!(|input: Input| {
    // Every 9-byte window parses into a head within the field widths.
    for window in input.wire.windows(HEAD_LEN).take(64) {
        let bytes: &[u8; HEAD_LEN] = window.try_into().unwrap();
        let head = Head::parse(bytes);
        assert!(head.length < 1 << 24);
        assert!(head.stream_id < 1 << 31);
        assert_eq!(head.flags, bytes[4]);
        assert_eq!(head.kind, Kind::from(bytes[3]));
        assert_eq!(head.ends_stream(), bytes[3] <= 1 && bytes[4] & 1 != 0, "{head:?}");
        match head.kind {
            Kind::Unknown(b) => assert!(b > 9),
            _ => assert!(bytes[3] <= 9),
        }
    }

    let ends = reference_ends(&input.wire, input.from_client);
    let new = || if input.from_client { FrameScanner::client_to_server() } else { FrameScanner::server_to_client() };
    let mut chunkings: Vec<Vec<usize>> = vec![vec![input.wire.len().max(1)], vec![1]];
    if !input.cuts.is_empty() {
        chunkings.push(input.cuts.iter().map(|&c| usize::from(c).max(1)).collect());
    }
    for cuts in chunkings {
        let mut scanner = new();
        let (mut at, mut i) = (0, 0);
        while at < input.wire.len() {
            let n = cuts[i % cuts.len()].min(input.wire.len() - at);
            i += 1;
            let piece = at..at + n;
            let expected = ends.iter().any(|e| piece.contains(e));
            assert_eq!(scanner.scan(&input.wire[piece.clone()]), expected, "chunk {piece:?} with cuts {cuts:?}");
            // An empty read changes nothing and ends nothing.
            assert!(!scanner.scan(&[]));
            at += n;
        }
    }
});
