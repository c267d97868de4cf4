//! NTS Key Establishment records (RFC 8915 §4): each a critical bit and 15-bit type, a 16-bit body
//! length and the body; a message is records up to an End of Message record. The parser is strict
//! (every body's size checked against its type, nothing after End of Message, a cap on the message) and
//! never panics; the server's answer and the client's reading of an answer follow §4.1.

/// The most bytes a server reads as one request: a real one is about 16 bytes; anything past this is
/// refused as oversized.
pub const MAX_REQUEST_LEN: usize = 1024;
/// The most bytes a client reads as one response: eight cookies of a few hundred bytes each fit.
pub const MAX_RESPONSE_LEN: usize = 16 * 1024;
/// Cookies a server hands out in one response, and a client keeps at most.
pub const COOKIES_PER_RESPONSE: usize = 8;
/// The NTPv4 protocol's number in NTS Next Protocol Negotiation.
pub const PROTOCOL_NTPV4: u16 = 0;
/// The ALPN protocol id of NTS-KE.
pub const ALPN: &[u8] = b"ntske/1";
/// The TLS exporter label of RFC 8915 §5.1.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-network-time-security";
/// The NTS-KE TCP port.
pub const DEFAULT_KE_PORT: u16 = 4460;

/// Record types.
mod types {
    pub const END_OF_MESSAGE: u16 = 0;
    pub const NEXT_PROTOCOL: u16 = 1;
    pub const ERROR: u16 = 2;
    pub const WARNING: u16 = 3;
    pub const AEAD: u16 = 4;
    pub const NEW_COOKIE: u16 = 5;
    pub const SERVER: u16 = 6;
    pub const PORT: u16 = 7;
}

/// Error codes of an Error record.
pub mod error_codes {
    /// The server met a critical record it does not know.
    pub const UNRECOGNIZED_CRITICAL: u16 = 0;
    /// The request is not a valid one.
    pub const BAD_REQUEST: u16 = 1;
    /// The server failed.
    pub const INTERNAL: u16 = 2;
}

/// The TLS exporter context for one direction's key (RFC 8915 §5.1): the protocol (NTPv4), the AEAD
/// algorithm, then 0 for client-to-server or 1 for server-to-client.
pub fn exporter_context(aead: u16, server_to_client: bool) -> [u8; 5] {
    let [p0, p1] = PROTOCOL_NTPV4.to_be_bytes();
    let [a0, a1] = aead.to_be_bytes();
    [p0, p1, a0, a1, u8::from(server_to_client)]
}

/// One NTS-KE record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// End of Message: the last record.
    EndOfMessage,
    /// NTS Next Protocol Negotiation: protocol ids.
    NextProtocol(Vec<u16>),
    /// Error, with its code.
    Error(u16),
    /// Warning, with its code.
    Warning(u16),
    /// AEAD Algorithm Negotiation: algorithm ids.
    Aead(Vec<u16>),
    /// New Cookie for NTPv4.
    NewCookie(Vec<u8>),
    /// NTPv4 Server Negotiation: a host name or address.
    Server(String),
    /// NTPv4 Port Negotiation.
    Port(u16),
    /// A type this code does not know; `critical` as the sender marked it.
    Unknown {
        /// The record type (critical bit cleared).
        record_type: u16,
        /// Whether the critical bit was set.
        critical: bool,
    },
}

/// Why bytes are not an NTS-KE message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeParseError {
    /// More bytes than the cap before an End of Message record.
    #[error("the message is over {limit} bytes")]
    Oversized {
        /// The cap.
        limit: usize,
    },
    /// A record's body does not fit its type.
    #[error("record type {record_type} has a body of {len} bytes, which that type cannot have")]
    BadBody {
        /// The record's type.
        record_type: u16,
        /// Its body length.
        len: usize,
    },
    /// A Server record whose body is not an ASCII name.
    #[error("the server record is not an ASCII name")]
    BadServerName,
    /// Bytes after the End of Message record.
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
    /// The stream ended inside a message.
    #[error("the message ends early ({0} bytes, no end-of-message record)")]
    Truncated(usize),
    /// No End of Message record's critical bit, or another record before it got it wrong.
    #[error("the end-of-message record is not marked critical")]
    EndNotCritical,
}

fn u16s(body: &[u8]) -> Vec<u16> {
    body.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
}

/// Where the first complete message in `buf` ends: `Ok(Some(len))` once its End of Message record is
/// in, `Ok(None)` while more bytes are needed (and `buf` is under `limit`), an error when it cannot be a
/// message within `limit` bytes. Reads only record heads.
pub fn message_len(buf: &[u8], limit: usize) -> Result<Option<usize>, KeParseError> {
    let mut at = 0usize;
    while let Some(head) = buf.get(at..at + 4) {
        let record_type = u16::from_be_bytes([head[0], head[1]]) & 0x7FFF;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let end = at + 4 + len;
        if end > limit {
            return Err(KeParseError::Oversized { limit });
        }
        if end > buf.len() {
            return Ok(None);
        }
        at = end;
        if record_type == types::END_OF_MESSAGE {
            return Ok(Some(at));
        }
    }
    if buf.len() >= limit {
        return Err(KeParseError::Oversized { limit });
    }
    Ok(None)
}

/// Parses one whole message: records up to and including End of Message, nothing after it, at most
/// `limit` bytes. Never panics.
pub fn parse_message(bytes: &[u8], limit: usize) -> Result<Vec<Record>, KeParseError> {
    let len = match message_len(bytes, limit)? {
        Some(len) => len,
        None => return Err(KeParseError::Truncated(bytes.len())),
    };
    if len < bytes.len() {
        return Err(KeParseError::Trailing(bytes.len() - len));
    }
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < len {
        let head = &bytes[at..at + 4];
        let raw_type = u16::from_be_bytes([head[0], head[1]]);
        let (critical, record_type) = (raw_type & 0x8000 != 0, raw_type & 0x7FFF);
        let body_len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let body = &bytes[at + 4..at + 4 + body_len];
        at += 4 + body_len;
        let bad = || KeParseError::BadBody { record_type, len: body_len };
        let record = match record_type {
            types::END_OF_MESSAGE if body_len == 0 => {
                if !critical {
                    return Err(KeParseError::EndNotCritical);
                }
                Record::EndOfMessage
            }
            types::NEXT_PROTOCOL if body_len % 2 == 0 => Record::NextProtocol(u16s(body)),
            types::AEAD if body_len % 2 == 0 => Record::Aead(u16s(body)),
            types::ERROR if body_len == 2 => Record::Error(u16::from_be_bytes([body[0], body[1]])),
            types::WARNING if body_len == 2 => Record::Warning(u16::from_be_bytes([body[0], body[1]])),
            types::PORT if body_len == 2 => Record::Port(u16::from_be_bytes([body[0], body[1]])),
            types::NEW_COOKIE if body_len > 0 => Record::NewCookie(body.to_vec()),
            types::SERVER if body_len > 0 => {
                if !body.iter().all(|b| b.is_ascii_graphic()) {
                    return Err(KeParseError::BadServerName);
                }
                Record::Server(String::from_utf8_lossy(body).into_owned())
            }
            types::END_OF_MESSAGE
            | types::NEXT_PROTOCOL
            | types::AEAD
            | types::ERROR
            | types::WARNING
            | types::PORT
            | types::NEW_COOKIE
            | types::SERVER => return Err(bad()),
            _ => Record::Unknown { record_type, critical },
        };
        records.push(record);
    }
    Ok(records)
}

fn push(out: &mut Vec<u8>, record_type: u16, critical: bool, body: &[u8]) {
    let raw = record_type | if critical { 0x8000 } else { 0 };
    out.extend_from_slice(&raw.to_be_bytes());
    // Bodies are built here from short lists and cookies; one over 64 KiB is cut (never happens).
    let len = body.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&body[..len]);
}

fn be(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// The bytes of `records`, critical bits as RFC 8915 says (set on End of Message, Next Protocol, Error
/// and Warning; AEAD and Port too, as chrony does; never on New Cookie).
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        match r {
            Record::EndOfMessage => push(&mut out, types::END_OF_MESSAGE, true, &[]),
            Record::NextProtocol(ids) => push(&mut out, types::NEXT_PROTOCOL, true, &be(ids)),
            Record::Error(code) => push(&mut out, types::ERROR, true, &code.to_be_bytes()),
            Record::Warning(code) => push(&mut out, types::WARNING, true, &code.to_be_bytes()),
            Record::Aead(ids) => push(&mut out, types::AEAD, true, &be(ids)),
            Record::NewCookie(c) => push(&mut out, types::NEW_COOKIE, false, c),
            Record::Server(name) => push(&mut out, types::SERVER, true, name.as_bytes()),
            Record::Port(port) => push(&mut out, types::PORT, true, &port.to_be_bytes()),
            Record::Unknown { record_type, critical } => push(&mut out, *record_type, *critical, &[]),
        }
    }
    out
}

/// Why a server refuses an NTS-KE request (it answers with an Error record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeRefusal {
    /// Not a message.
    #[error(transparent)]
    Malformed(#[from] KeParseError),
    /// A critical record of a type the server does not know.
    #[error("unrecognized critical record type {0}")]
    UnknownCritical(u16),
    /// A record the request must have is missing or repeated, or one it must not have is there.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl KeRefusal {
    /// A short fixed name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            KeRefusal::Malformed(KeParseError::Oversized { .. }) => "oversized",
            KeRefusal::Malformed(_) => "malformed",
            KeRefusal::UnknownCritical(_) => "unknown_critical",
            KeRefusal::BadRequest(_) => "bad_request",
        }
    }

    /// The Error record's code.
    pub fn code(&self) -> u16 {
        match self {
            KeRefusal::UnknownCritical(_) => error_codes::UNRECOGNIZED_CRITICAL,
            _ => error_codes::BAD_REQUEST,
        }
    }

    /// The response that tells the client: an Error record, then End of Message.
    pub fn response(&self) -> Vec<u8> {
        encode(&[Record::Error(self.code()), Record::EndOfMessage])
    }
}

/// What a server and client agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// NTPv4 with this AEAD algorithm: keys are exported and cookies made.
    Ntpv4 {
        /// The AEAD algorithm.
        aead: u16,
    },
    /// The client offered no protocol or algorithm the server speaks: the response says so (empty
    /// lists) and carries no cookie.
    Nothing,
}

/// The server's reading of a request's records (RFC 8915 §4.1): exactly one Next Protocol record, an
/// AEAD record when NTPv4 is offered, no Error, Warning or New Cookie record, no unknown critical one.
pub fn negotiate(records: &[Record]) -> Result<Negotiated, KeRefusal> {
    let mut protocols = None;
    let mut aeads = None;
    for r in records {
        match r {
            Record::Unknown { record_type, critical: true } => return Err(KeRefusal::UnknownCritical(*record_type)),
            Record::NextProtocol(ids) if protocols.is_none() => protocols = Some(ids),
            Record::NextProtocol(_) => return Err(KeRefusal::BadRequest("two next-protocol records")),
            Record::Aead(ids) if aeads.is_none() => aeads = Some(ids),
            Record::Aead(_) => return Err(KeRefusal::BadRequest("two AEAD records")),
            Record::Error(_) | Record::Warning(_) => return Err(KeRefusal::BadRequest("a client sent an error or warning record")),
            Record::NewCookie(_) => return Err(KeRefusal::BadRequest("a client sent a cookie")),
            Record::EndOfMessage | Record::Server(_) | Record::Port(_) | Record::Unknown { .. } => {}
        }
    }
    let protocols = protocols.ok_or(KeRefusal::BadRequest("no next-protocol record"))?;
    if !protocols.contains(&PROTOCOL_NTPV4) {
        return Ok(Negotiated::Nothing);
    }
    let aeads = aeads.ok_or(KeRefusal::BadRequest("no AEAD record"))?;
    Ok(if aeads.contains(&super::AEAD_AES_SIV_CMAC_256) {
        Negotiated::Ntpv4 { aead: super::AEAD_AES_SIV_CMAC_256 }
    } else {
        Negotiated::Nothing
    })
}

/// The server's response: the protocol and algorithm chosen, where to send NTP (`port`, and `server`
/// when not the NTS-KE server's own address), the cookies, End of Message. For [`Negotiated::Nothing`]
/// empty lists and no cookie.
pub fn response(negotiated: Negotiated, cookies: &[Vec<u8>], server: Option<&str>, port: Option<u16>) -> Vec<u8> {
    let mut records = Vec::new();
    match negotiated {
        Negotiated::Ntpv4 { aead } => {
            records.push(Record::NextProtocol(vec![PROTOCOL_NTPV4]));
            records.push(Record::Aead(vec![aead]));
            if let Some(server) = server {
                records.push(Record::Server(server.to_string()));
            }
            if let Some(port) = port {
                records.push(Record::Port(port));
            }
            records.extend(cookies.iter().map(|c| Record::NewCookie(c.clone())));
        }
        Negotiated::Nothing => {
            records.push(Record::NextProtocol(vec![]));
            records.push(Record::Aead(vec![]));
        }
    }
    records.push(Record::EndOfMessage);
    encode(&records)
}

/// A client's request: NTPv4 with AEAD_AES_SIV_CMAC_256.
pub fn client_request() -> Vec<u8> {
    encode(&[Record::NextProtocol(vec![PROTOCOL_NTPV4]), Record::Aead(vec![super::AEAD_AES_SIV_CMAC_256]), Record::EndOfMessage])
}

/// What a client takes from a server's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    /// The AEAD algorithm (for the key export).
    pub aead: u16,
    /// The cookies, at most [`COOKIES_PER_RESPONSE`].
    pub cookies: Vec<Vec<u8>>,
    /// The NTP server to use, if not the NTS-KE server's address.
    pub server: Option<String>,
    /// The NTP port to use, if not 123.
    pub port: Option<u16>,
}

/// Why a client cannot use a server's response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeClientError {
    /// Not a message.
    #[error(transparent)]
    Malformed(#[from] KeParseError),
    /// The server sent an Error record.
    #[error("the NTS-KE server answered with error {0} ({meaning})", meaning = error_meaning(*.0))]
    ServerError(u16),
    /// The server sent a Warning record, which a client does not know.
    #[error("the NTS-KE server answered with warning {0}")]
    Warning(u16),
    /// A critical record of a type the client does not know.
    #[error("unrecognized critical record type {0}")]
    UnknownCritical(u16),
    /// The server did not choose NTPv4 with AEAD_AES_SIV_CMAC_256.
    #[error("the NTS-KE server does not offer NTPv4 with AEAD_AES_SIV_CMAC_256")]
    NotAgreed,
    /// No cookie came.
    #[error("the NTS-KE server sent no cookie")]
    NoCookie,
}

fn error_meaning(code: u16) -> &'static str {
    match code {
        error_codes::UNRECOGNIZED_CRITICAL => "unrecognized critical record",
        error_codes::BAD_REQUEST => "bad request",
        error_codes::INTERNAL => "internal server error",
        _ => "unknown",
    }
}

/// A client's reading of a response.
pub fn established(records: &[Record]) -> Result<Established, KeClientError> {
    let (mut protocol, mut aead, mut server, mut port) = (None, None, None, None);
    let mut cookies = Vec::new();
    for r in records {
        match r {
            Record::Error(code) => return Err(KeClientError::ServerError(*code)),
            Record::Warning(code) => return Err(KeClientError::Warning(*code)),
            Record::Unknown { record_type, critical: true } => return Err(KeClientError::UnknownCritical(*record_type)),
            Record::NextProtocol(ids) => protocol = ids.first().copied().filter(|_| ids.len() == 1),
            Record::Aead(ids) => aead = ids.first().copied().filter(|_| ids.len() == 1),
            Record::NewCookie(c) if cookies.len() < COOKIES_PER_RESPONSE => cookies.push(c.clone()),
            Record::Server(s) => server = Some(s.clone()),
            Record::Port(p) => port = Some(*p),
            Record::NewCookie(_) | Record::EndOfMessage | Record::Unknown { .. } => {}
        }
    }
    if protocol != Some(PROTOCOL_NTPV4) || aead != Some(super::AEAD_AES_SIV_CMAC_256) {
        return Err(KeClientError::NotAgreed);
    }
    if cookies.is_empty() {
        return Err(KeClientError::NoCookie);
    }
    Ok(Established { aead: super::AEAD_AES_SIV_CMAC_256, cookies, server, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::nts::AEAD_AES_SIV_CMAC_256;

    #[test]
    fn a_request_round_trips_and_is_negotiated() {
        let bytes = client_request();
        // chrony's request, byte for byte: next protocol 0, AEAD 15, end of message.
        assert_eq!(bytes, [0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 2, 0, 15, 0x80, 0, 0, 0]);
        assert_eq!(message_len(&bytes, MAX_REQUEST_LEN), Ok(Some(16)));
        assert_eq!(message_len(&bytes[..13], MAX_REQUEST_LEN), Ok(None));
        let records = parse_message(&bytes, MAX_REQUEST_LEN).unwrap();
        assert_eq!(negotiate(&records), Ok(Negotiated::Ntpv4 { aead: AEAD_AES_SIV_CMAC_256 }));
        let answer = response(Negotiated::Ntpv4 { aead: 15 }, &[vec![1; 100], vec![2; 100]], None, Some(4123));
        let got = established(&parse_message(&answer, MAX_RESPONSE_LEN).unwrap()).unwrap();
        assert_eq!(got, Established { aead: 15, cookies: vec![vec![1; 100], vec![2; 100]], server: None, port: Some(4123) });
        assert_eq!(exporter_context(15, true), [0, 0, 0, 15, 1]);
    }

    #[test]
    fn requests_the_server_cannot_take_are_refused_with_the_right_code() {
        let msg = |records: &[Record]| parse_message(&encode(records), MAX_REQUEST_LEN).unwrap();
        let eom = Record::EndOfMessage;
        let (np, aead) = (Record::NextProtocol(vec![0]), Record::Aead(vec![15]));
        let unknown = Record::Unknown { record_type: 0x1234, critical: true };
        assert_eq!(negotiate(&msg(&[np.clone(), aead.clone(), unknown, eom.clone()])), Err(KeRefusal::UnknownCritical(0x1234)));
        assert_eq!(KeRefusal::UnknownCritical(1).response(), [0x80, 2, 0, 2, 0, 0, 0x80, 0, 0, 0]);
        // A non-critical unknown record is ignored.
        let quiet = Record::Unknown { record_type: 0x1234, critical: false };
        assert!(matches!(negotiate(&msg(&[np.clone(), aead.clone(), quiet, eom.clone()])), Ok(Negotiated::Ntpv4 { .. })));
        assert!(matches!(negotiate(&msg(&[aead.clone(), eom.clone()])), Err(KeRefusal::BadRequest(_))));
        assert!(matches!(negotiate(&msg(&[np.clone(), eom.clone()])), Err(KeRefusal::BadRequest(_))));
        assert!(matches!(negotiate(&msg(&[np.clone(), np.clone(), aead.clone(), eom.clone()])), Err(KeRefusal::BadRequest(_))));
        assert!(matches!(
            negotiate(&msg(&[np.clone(), aead.clone(), Record::NewCookie(vec![1]), eom.clone()])),
            Err(KeRefusal::BadRequest(_))
        ));
        assert_eq!(negotiate(&msg(&[np.clone(), Record::Aead(vec![1, 2]), eom.clone()])), Ok(Negotiated::Nothing));
        assert_eq!(negotiate(&msg(&[Record::NextProtocol(vec![7]), eom.clone()])), Ok(Negotiated::Nothing));
        let nothing = parse_message(&response(Negotiated::Nothing, &[], None, None), MAX_RESPONSE_LEN).unwrap();
        assert_eq!(established(&nothing), Err(KeClientError::NotAgreed));
        assert_eq!(KeRefusal::UnknownCritical(1).code(), 0);
    }

    #[test]
    fn malformed_messages_are_refused() {
        // Bodies that do not fit their type.
        assert_eq!(parse_message(&[0x80, 1, 0, 1, 0, 0x80, 0, 0, 0], 100), Err(KeParseError::BadBody { record_type: 1, len: 1 }));
        assert_eq!(parse_message(&[0x80, 7, 0, 3, 0, 0, 0, 0x80, 0, 0, 0], 100), Err(KeParseError::BadBody { record_type: 7, len: 3 }));
        assert_eq!(parse_message(&[0x80, 0, 0, 1, 0], 100), Err(KeParseError::BadBody { record_type: 0, len: 1 }));
        assert_eq!(parse_message(&[0, 5, 0, 0, 0x80, 0, 0, 0], 100), Err(KeParseError::BadBody { record_type: 5, len: 0 }));
        assert_eq!(parse_message(&[0, 6, 0, 2, b'a', 0, 0x80, 0, 0, 0], 100), Err(KeParseError::BadServerName));
        assert_eq!(parse_message(&[0, 0, 0, 0], 100), Err(KeParseError::EndNotCritical));
        assert_eq!(parse_message(&[0x80, 0, 0, 0, 1], 100), Err(KeParseError::Trailing(1)));
        assert_eq!(parse_message(&[0x80, 1, 0, 2, 0], 100), Err(KeParseError::Truncated(5)));
        assert_eq!(parse_message(&[], 100), Err(KeParseError::Truncated(0)));
        // Over the cap, whether a record claims it or the bytes just keep coming.
        assert_eq!(message_len(&[0, 9, 0xFF, 0xFF], 1024), Err(KeParseError::Oversized { limit: 1024 }));
        let many: Vec<u8> = std::iter::repeat_n([0u8, 9, 0, 0], 300).flatten().collect();
        assert_eq!(message_len(&many, 1024), Err(KeParseError::Oversized { limit: 1024 }));
        assert_eq!(KeRefusal::from(KeParseError::Oversized { limit: 1 }).kind(), "oversized");
    }

    #[test]
    fn a_client_refuses_errors_warnings_and_answers_without_cookies() {
        let read = |records: &[Record]| established(&parse_message(&encode(records), MAX_RESPONSE_LEN).unwrap());
        let eom = Record::EndOfMessage;
        assert_eq!(read(&[Record::Error(1), eom.clone()]), Err(KeClientError::ServerError(1)));
        assert_eq!(read(&[Record::Warning(9), eom.clone()]), Err(KeClientError::Warning(9)));
        let agreed = [Record::NextProtocol(vec![0]), Record::Aead(vec![15])];
        assert_eq!(read(&[agreed[0].clone(), agreed[1].clone(), eom.clone()]), Err(KeClientError::NoCookie));
        let unknown = Record::Unknown { record_type: 99, critical: true };
        assert_eq!(read(&[agreed[0].clone(), agreed[1].clone(), unknown, eom]), Err(KeClientError::UnknownCritical(99)));
        assert!(KeClientError::ServerError(1).to_string().contains("bad request"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes: parsed or refused, never a panic; what parses re-encodes to a message that parses
        /// to the same records.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(records) = parse_message(&bytes, MAX_REQUEST_LEN) {
                prop_assert_eq!(records.last(), Some(&Record::EndOfMessage));
                let again = parse_message(&encode(&records), MAX_REQUEST_LEN);
                // Unknown records lose their bodies on re-encoding, which may not fit the cap differently.
                prop_assert_eq!(again.as_ref(), Ok(&records));
                let _ = negotiate(&records);
                let _ = established(&records);
            }
        }

        /// Records made from valid parts round-trip.
        #[test]
        fn valid_records_round_trip(cookies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 1..8), port in any::<u16>()) {
            let bytes = response(Negotiated::Ntpv4 { aead: 15 }, &cookies, Some("ntp.example"), Some(port));
            let got = established(&parse_message(&bytes, MAX_RESPONSE_LEN).unwrap()).unwrap();
            prop_assert_eq!(got.cookies, cookies);
            prop_assert_eq!(got.port, Some(port));
            prop_assert_eq!(got.server.as_deref(), Some("ntp.example"));
        }
    }
}
