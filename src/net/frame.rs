//! HTTP/2 frame heads (RFC 9113 §4.1), parsed into types, and a scanner that follows one direction of a
//! connection frame by frame to report the frames that end a stream.

/// Length of the client connection preface every HTTP/2 connection starts with.
pub const PREFACE_LEN: usize = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".len();
/// Length of a frame head.
pub const HEAD_LEN: usize = 9;

/// The END_STREAM flag of DATA and HEADERS frames.
const END_STREAM: u8 = 0x1;

/// A frame's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    /// A type this scanner does not know (extensions); its payload is skipped like any other.
    Unknown(u8),
}

impl From<u8> for Kind {
    fn from(byte: u8) -> Self {
        match byte {
            0x0 => Kind::Data,
            0x1 => Kind::Headers,
            0x2 => Kind::Priority,
            0x3 => Kind::RstStream,
            0x4 => Kind::Settings,
            0x5 => Kind::PushPromise,
            0x6 => Kind::Ping,
            0x7 => Kind::GoAway,
            0x8 => Kind::WindowUpdate,
            0x9 => Kind::Continuation,
            other => Kind::Unknown(other),
        }
    }
}

/// A frame head: the payload's length, the frame's type and flags, and its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload length (24 bits).
    pub length: u32,
    pub kind: Kind,
    pub flags: u8,
    /// Stream identifier (31 bits; the reserved bit is dropped).
    pub stream_id: u32,
}

impl Head {
    /// Parses the nine bytes of a frame head.
    pub fn parse(bytes: &[u8; HEAD_LEN]) -> Self {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *bytes;
        Self {
            length: u32::from_be_bytes([0, l0, l1, l2]),
            kind: Kind::from(kind),
            flags,
            stream_id: u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]),
        }
    }

    /// Whether this frame is the last of a stream in its direction (DATA or HEADERS with END_STREAM):
    /// the end of a request or of an answer.
    pub fn ends_stream(&self) -> bool {
        matches!(self.kind, Kind::Data | Kind::Headers) && self.flags & END_STREAM != 0
    }
}

/// Follows one direction of a connection frame by frame, across read or write boundaries, and reports
/// where a frame that ends a stream passes.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    /// Preface bytes still to skip (client to server only).
    preface_left: usize,
    head: [u8; HEAD_LEN],
    head_len: usize,
    payload_left: usize,
}

impl FrameScanner {
    /// For the bytes a client sends: the connection preface, then frames.
    pub fn client_to_server() -> Self {
        Self { preface_left: PREFACE_LEN, head: [0; HEAD_LEN], head_len: 0, payload_left: 0 }
    }

    /// For the bytes a server sends: frames from the first byte.
    pub fn server_to_client() -> Self {
        Self { preface_left: 0, ..Self::client_to_server() }
    }

    /// Consumes the next bytes; true if the head of a frame that ends a stream completes in them.
    pub fn scan(&mut self, mut bytes: &[u8]) -> bool {
        let mut ends = false;
        while !bytes.is_empty() {
            let skip = if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                n
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                n
            } else {
                let n = (HEAD_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                if self.head_len == HEAD_LEN {
                    let head = Head::parse(&self.head);
                    ends |= head.ends_stream();
                    self.payload_left = head.length as usize;
                    self.head_len = 0;
                }
                n
            };
            bytes = &bytes[skip..];
        }
        ends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn heads_parse_into_types() {
        let head = Head::parse(&[0x01, 0x11, 0x70, 0x0, 0x1, 0x80, 0, 0, 3]);
        assert_eq!(head, Head { length: 70_000, kind: Kind::Data, flags: 1, stream_id: 3 });
        assert!(head.ends_stream());
        assert_eq!(Head::parse(&[0, 0, 0, 0x6, 0x1, 0, 0, 0, 0]).kind, Kind::Ping);
        assert!(!Head::parse(&[0, 0, 0, 0x6, 0x1, 0, 0, 0, 0]).ends_stream(), "a PING ack's flag 0x1 is not END_STREAM");
        assert_eq!(Head::parse(&[0, 0, 0, 0xfa, 0, 0, 0, 0, 0]).kind, Kind::Unknown(0xfa));
    }

    #[test]
    fn finds_the_ends_of_messages_whatever_the_boundaries() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(0x4, 0, &[0; 12])); // SETTINGS
        wire.extend(frame(0x8, 0, &[0; 4])); // WINDOW_UPDATE
        // A request: HEADERS (END_HEADERS only) full of bytes that look like flags, then DATA that ends it.
        wire.extend(frame(0x1, 0x4, &[1; 300]));
        let first = wire.len();
        wire.extend(frame(0x0, END_STREAM, &[1; 70_000])); // longer than 16 bits of length
        wire.extend(frame(0x6, 0x1, &[0; 8])); // a PING ack has flag 0x1 too, and ends nothing
        // A request without body: HEADERS with END_STREAM.
        let second = wire.len();
        wire.extend(frame(0x1, 0x5, &[]));

        for chunk in [1, 2, 3, 5, 7, 9, 10, 100, 4096, wire.len()] {
            let mut scanner = FrameScanner::client_to_server();
            let found: Vec<usize> =
                wire.chunks(chunk).enumerate().filter(|(_, piece)| scanner.scan(piece)).map(|(i, _)| i * chunk).collect();
            // Each end is reported once, in the piece that completes its head.
            let mut expect: Vec<usize> = [first, second].iter().map(|at| (at + HEAD_LEN - 1) / chunk * chunk).collect();
            expect.dedup();
            assert_eq!(found, expect, "chunk {chunk}");
        }
    }

    #[test]
    fn frames_that_do_not_end_a_stream_are_ignored() {
        let mut scanner = FrameScanner::client_to_server();
        assert!(!scanner.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        for (kind, flags) in [(0x0, 0), (0x1, 0x4), (0x3, 0x1), (0x4, 0x1), (0x6, 0x1), (0x8, 0), (0x9, 0x5)] {
            assert!(!scanner.scan(&frame(kind, flags, &[1, 1, 1])), "type {kind} flags {flags}");
        }
        assert!(scanner.scan(&frame(0x0, END_STREAM, &[])));
        let mut from_server = FrameScanner::server_to_client();
        assert!(from_server.scan(&frame(0x1, 0x5, &[])), "a server sends no preface");
    }
}
