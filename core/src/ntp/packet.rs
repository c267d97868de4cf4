//! The NTPv4 wire format (RFC 5905): 64-bit timestamps and their eras, the 48-byte header, its parsing
//! (size and version checked) and its encoding, and what follows the header: extension fields (RFC 7822)
//! and a MAC, walked strictly by [`extensions`] (NTS's fields are read from that walk by
//! [`super::nts`]).

/// Length of an NTP header without extension fields or MAC.
pub const HEADER_LEN: usize = 48;
/// Largest datagram a server takes as a request: a header with room for a MAC or extension fields, up
/// to an NTS request with a cookie and seven placeholders (956 bytes with 100-byte cookies). Anything
/// longer is dropped as oversized.
pub const MAX_REQUEST_LEN: usize = 1008;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET_SECS: i64 = 2_208_988_800;
/// The precision synclab's server announces: 2^-25 s (30 ns), about what a clock read takes.
pub const SERVER_PRECISION: i8 = -25;
/// A root distance at or above this (16 s, NTP's MAXDISP) makes a reply unusable.
pub const MAX_DISPERSION_NANOS: f64 = 16e9;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A 64-bit NTP timestamp: seconds since 1900 (mod 2^32, the era) in the high half, the fraction in the
/// low half. Zero means "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// The unset timestamp.
    pub const ZERO: Self = Self(0);

    /// The timestamp of `unix_nanos` (ns since the Unix epoch), rounded to the nearest 2^-32 s.
    pub fn from_unix_nanos(unix_nanos: i64) -> Self {
        let secs = unix_nanos.div_euclid(1_000_000_000) + NTP_UNIX_OFFSET_SECS;
        let nanos = unix_nanos.rem_euclid(1_000_000_000) as u128;
        let frac = ((nanos << 32) + NANOS_PER_SEC as u128 / 2) / NANOS_PER_SEC as u128;
        // A fraction rounded up to a whole second carries into the seconds.
        let raw = ((secs as u64 & 0xFFFF_FFFF) << 32).wrapping_add(frac as u64);
        Self(raw)
    }

    /// The Unix time (ns) this timestamp stands for in the era closest to `near` (ns since the Unix
    /// epoch), so 2036's era rollover reads right.
    pub fn to_unix_nanos(self, near: i64) -> i64 {
        let era_len: i128 = 1 << 32;
        let secs = (self.0 >> 32) as i128;
        let frac = (self.0 & 0xFFFF_FFFF) as i128;
        let nanos = (frac * NANOS_PER_SEC + (1 << 31)) >> 32;
        let near_ntp_secs = near.div_euclid(1_000_000_000) as i128 + NTP_UNIX_OFFSET_SECS as i128;
        let era = (near_ntp_secs - secs + era_len / 2).div_euclid(era_len);
        let ntp_secs = secs + era * era_len;
        let unix = (ntp_secs - NTP_UNIX_OFFSET_SECS as i128) * NANOS_PER_SEC + nanos;
        unix.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Whether it is unset.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The same timestamp with its lowest bit set (how a server marks its receive timestamps).
    pub fn with_low_bit(self, set: bool) -> Self {
        if set { Self(self.0 | 1) } else { Self(self.0 & !1) }
    }
}

/// Converts nanoseconds to NTP's 32-bit short format (16.16 seconds), saturating.
pub fn nanos_to_short(nanos: u64) -> u32 {
    let v = ((nanos as u128) << 16) / NANOS_PER_SEC as u128;
    v.min(u32::MAX as u128) as u32
}

/// Converts NTP's 32-bit short format (16.16 seconds) to nanoseconds.
pub fn short_to_nanos(short: u32) -> f64 {
    short as f64 / 65536.0 * 1e9
}

/// The association mode of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Mode 0, reserved.
    Reserved,
    /// Mode 1, symmetric active.
    SymmetricActive,
    /// Mode 2, symmetric passive.
    SymmetricPassive,
    /// Mode 3, a client's request.
    Client,
    /// Mode 4, a server's reply.
    Server,
    /// Mode 5, broadcast.
    Broadcast,
    /// NTP control messages (ntpq); never answered.
    Control,
    /// Private (ntpdc's monlist); never answered.
    Private,
}

impl Mode {
    fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Mode::Reserved,
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            _ => Mode::Private,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Mode::Reserved => 0,
            Mode::SymmetricActive => 1,
            Mode::SymmetricPassive => 2,
            Mode::Client => 3,
            Mode::Server => 4,
            Mode::Broadcast => 5,
            Mode::Control => 6,
            Mode::Private => 7,
        }
    }
}

/// Leap indicator 3: the clock is not synchronized (also set in kiss-o'-death packets).
pub const LEAP_UNSYNCHRONIZED: u8 = 3;

/// The 48-byte NTP header. Extension fields and MACs after it are not interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Leap indicator (0..=3).
    pub leap: u8,
    /// Version (1..=4 accepted).
    pub version: u8,
    /// Association mode.
    pub mode: Mode,
    /// Stratum: 0 for a kiss-o'-death, 1 for a primary server, 16 or more: unsynchronized.
    pub stratum: u8,
    /// log2 of the poll interval, seconds.
    pub poll: i8,
    /// log2 of the clock's precision, seconds.
    pub precision: i8,
    /// Round trip to the reference, NTP short format.
    pub root_delay: u32,
    /// Dispersion to the reference, NTP short format.
    pub root_dispersion: u32,
    /// The reference ID (four ASCII characters at stratum 1, a kiss code at stratum 0).
    pub reference_id: [u8; 4],
    /// Reference timestamp: when the clock was last set or corrected (RFC 5905). synclab's server, whose
    /// clock is always in sync, reports the start of the second its request arrived in.
    pub reference: NtpTimestamp,
    /// Origin timestamp: in a reply, the request's transmit timestamp it answers (interleaved: the
    /// request's receive timestamp); in an interleaved request, the server's receive timestamp of the
    /// previous request.
    pub origin: NtpTimestamp,
    /// Receive timestamp: in a reply, when the server received the request; in an interleaved request,
    /// when the previous reply arrived.
    pub receive: NtpTimestamp,
    /// Transmit timestamp: when the packet left (in an interleaved reply: when the previous reply left).
    pub transmit: NtpTimestamp,
}

/// Why a datagram is not an NTP packet synclab takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the 48-byte header.
    #[error("truncated: {0} bytes, an NTP header is {HEADER_LEN}")]
    Truncated(usize),
    /// Longer than [`MAX_REQUEST_LEN`].
    #[error("oversized: {0} bytes, at most {MAX_REQUEST_LEN} taken")]
    Oversized(usize),
    /// Extension fields and MACs come in 4-byte words.
    #[error("{0} bytes is not a whole number of 4-byte words")]
    Unaligned(usize),
    /// A version other than 1..=4.
    #[error("NTP version {0} is not spoken here")]
    BadVersion(u8),
    /// What follows the header is not extension fields and a MAC (RFC 7822); `at` is the offset in
    /// the datagram of the first bytes that are not.
    #[error("bad extension field at byte {at}: {problem}")]
    BadExtension {
        /// Offset in the datagram.
        at: usize,
        /// What is wrong there.
        problem: ExtensionProblem,
    },
}

/// What is wrong with the bytes after an NTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionProblem {
    /// A field's length is under the 16 bytes RFC 7822 sets as the least.
    #[error("a field's length {0} is under 16 bytes")]
    TooShort(u16),
    /// A field's length is not a whole number of 4-byte words.
    #[error("a field's length {0} is not a multiple of 4")]
    Unaligned(u16),
    /// A field claims more bytes than the datagram has left.
    #[error("a field claims {claimed} bytes, {left} are left")]
    Overruns {
        /// The field's Length.
        claimed: u16,
        /// Bytes left in the datagram from the field's start.
        left: usize,
    },
    /// Bytes left over that are neither a field nor a MAC (4, 20 or 24 bytes).
    #[error("{0} bytes left over are neither an extension field nor a MAC")]
    Trailing(usize),
}

/// The least length of an extension field, its 4-byte head included (RFC 7822).
pub const MIN_EXTENSION_LEN: usize = 16;
/// The lengths a MAC after the extension fields may have: a crypto-NAK (the key ID alone), and a key
/// ID with a 16-byte (MD5) or 20-byte (SHA-1) digest.
pub const MAC_LENS: [usize; 3] = [4, 20, 24];

/// One extension field: its type and its value (the bytes after its 4-byte head, padding included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionField<'a> {
    /// The Field Type.
    pub field_type: u16,
    /// The value, `Length - 4` bytes.
    pub value: &'a [u8],
}

/// What follows an NTP header, checked whole: its extension fields in order, and the MAC if one ends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extensions<'a> {
    /// The extension fields.
    pub fields: Vec<ExtensionField<'a>>,
    /// The MAC (key ID and digest), if there is one.
    pub mac: Option<&'a [u8]>,
}

/// Walks `tail`, the bytes of a datagram after its 48-byte header, as RFC 7822 lays them out: extension
/// fields, each a 2-byte type, a 2-byte length that covers the whole field (at least 16, a multiple of 4,
/// within what is left), then optionally a MAC of one of [`MAC_LENS`]. Where the bytes left could be read
/// either way, a field whose head is consistent is taken as a field. Anything else is refused, with the
/// offset (in the datagram) of the first byte that does not fit. Never panics, on any input; reads
/// nothing outside `tail`.
pub fn extensions(tail: &[u8]) -> Result<Extensions<'_>, ParseError> {
    let mut out = Extensions::default();
    let mut at = 0usize;
    while at < tail.len() {
        let left = tail.len() - at;
        let field = match tail.get(at..at + 4) {
            Some(head) => {
                let field_type = u16::from_be_bytes([head[0], head[1]]);
                let length = u16::from_be_bytes([head[2], head[3]]);
                let len = usize::from(length);
                if len < MIN_EXTENSION_LEN {
                    Err(ExtensionProblem::TooShort(length))
                } else if !len.is_multiple_of(4) {
                    Err(ExtensionProblem::Unaligned(length))
                } else if len > left {
                    Err(ExtensionProblem::Overruns { claimed: length, left })
                } else {
                    Ok((field_type, len))
                }
            }
            None => Err(ExtensionProblem::Trailing(left)),
        };
        match field {
            Ok((field_type, len)) => {
                out.fields.push(ExtensionField { field_type, value: &tail[at + 4..at + len] });
                at += len;
            }
            Err(_) if MAC_LENS.contains(&left) => {
                out.mac = Some(&tail[at..]);
                at = tail.len();
            }
            Err(problem) => return Err(ParseError::BadExtension { at: HEADER_LEN + at, problem }),
        }
    }
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    (u32_at(b, at) as u64) << 32 | u32_at(b, at + 4) as u64
}

impl Packet {
    /// Parses a datagram: the header checked for size and version, and what follows it for a valid
    /// layout of extension fields and a MAC ([`extensions`]), which are not interpreted.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let len = bytes.len();
        if len < HEADER_LEN {
            return Err(ParseError::Truncated(len));
        }
        if len > MAX_REQUEST_LEN {
            return Err(ParseError::Oversized(len));
        }
        if !len.is_multiple_of(4) {
            return Err(ParseError::Unaligned(len));
        }
        let version = (bytes[0] >> 3) & 7;
        if !(1..=4).contains(&version) {
            return Err(ParseError::BadVersion(version));
        }
        extensions(&bytes[HEADER_LEN..])?;
        let mut reference_id = [0u8; 4];
        reference_id.copy_from_slice(&bytes[12..16]);
        Ok(Self {
            leap: bytes[0] >> 6,
            version,
            mode: Mode::from_bits(bytes[0]),
            stratum: bytes[1],
            poll: bytes[2] as i8,
            precision: bytes[3] as i8,
            root_delay: u32_at(bytes, 4),
            root_dispersion: u32_at(bytes, 8),
            reference_id,
            reference: NtpTimestamp(u64_at(bytes, 16)),
            origin: NtpTimestamp(u64_at(bytes, 24)),
            receive: NtpTimestamp(u64_at(bytes, 32)),
            transmit: NtpTimestamp(u64_at(bytes, 40)),
        })
    }

    /// The 48 bytes of the header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | self.mode.bits();
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference.0.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin.0.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive.0.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit.0.to_be_bytes());
        b
    }

    /// A client request: version 4, mode 3, nothing revealed but the three timestamps given.
    pub fn request(origin: NtpTimestamp, receive: NtpTimestamp, transmit: NtpTimestamp, poll: i8) -> Self {
        Self {
            leap: 0,
            version: 4,
            mode: Mode::Client,
            stratum: 0,
            poll,
            precision: 0,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: [0; 4],
            reference: NtpTimestamp::ZERO,
            origin,
            receive,
            transmit,
        }
    }

    /// Whether this is a kiss-o'-death packet (stratum 0); its code is the reference ID.
    pub fn kiss_code(&self) -> Option<[u8; 4]> {
        (self.stratum == 0).then_some(self.reference_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::testing::{T, request_bytes};

    #[test]
    fn timestamps_round_trip_within_a_nanosecond_and_across_eras() {
        for t in [T, T + 999_999_999, 0, -1, 2_085_978_496_000_000_000 + 5, 1] {
            let n = NtpTimestamp::from_unix_nanos(t);
            assert!((n.to_unix_nanos(t) - t).abs() <= 1, "{t}: {}", n.to_unix_nanos(t));
            // Read near a time a year off, the same instant comes back.
            let year = 365 * 86_400 * 1_000_000_000i64;
            assert!((n.to_unix_nanos(t + year) - t).abs() <= 1);
        }
        // 2036-02-07T06:28:16Z is the end of era 0: its timestamp's seconds wrap to 0.
        let rollover = (1i64 << 32) - NTP_UNIX_OFFSET_SECS;
        assert_eq!(NtpTimestamp::from_unix_nanos(rollover * 1_000_000_000).0 >> 32, 0);
        assert_eq!(NtpTimestamp::from_unix_nanos(-NTP_UNIX_OFFSET_SECS * 1_000_000_000), NtpTimestamp::ZERO);
        assert_eq!(nanos_to_short(1_500_000_000), 0x0001_8000);
        assert_eq!(short_to_nanos(0x0001_8000), 1.5e9);
        assert_eq!(nanos_to_short(u64::MAX), u32::MAX);
    }

    #[test]
    fn packets_round_trip_and_bad_datagrams_are_typed() {
        let p = Packet::request(NtpTimestamp(1), NtpTimestamp(2), NtpTimestamp(3), -6);
        assert_eq!(Packet::parse(&p.to_bytes()), Ok(p));
        assert_eq!(Packet::parse(&[]), Err(ParseError::Truncated(0)));
        assert_eq!(Packet::parse(&[0x23; 47]), Err(ParseError::Truncated(47)));
        assert_eq!(Packet::parse(&[0x23; 1024]), Err(ParseError::Oversized(1024)));
        assert_eq!(Packet::parse(&[0x23; 50]), Err(ParseError::Unaligned(50)));
        assert_eq!(Packet::parse(&request_bytes(5, 3, 1)), Err(ParseError::BadVersion(5)));
        assert_eq!(Packet::parse(&request_bytes(0, 3, 1)), Err(ParseError::BadVersion(0)));
        // A header with a MAC after it is taken; the MAC is not read.
        let mut long = p.to_bytes().to_vec();
        long.extend_from_slice(&[0xAB; 20]);
        assert_eq!(Packet::parse(&long), Ok(p));
    }

    /// A field head: type, then length.
    fn head(field_type: u16, length: u16) -> Vec<u8> {
        [field_type.to_be_bytes(), length.to_be_bytes()].concat()
    }

    #[test]
    fn extension_fields_are_walked_strictly() {
        // Two fields, then a 24-byte MAC.
        let mut tail = head(0x0104, 16);
        tail.extend_from_slice(&[7; 12]);
        tail.extend(head(0x0204, 20));
        tail.extend_from_slice(&[8; 16]);
        tail.extend_from_slice(&[0xAB; 24]);
        let ext = extensions(&tail).unwrap();
        assert_eq!(ext.fields.len(), 2);
        assert_eq!(ext.fields[0], ExtensionField { field_type: 0x0104, value: &[7; 12] });
        assert_eq!(ext.fields[1].field_type, 0x0204);
        assert_eq!(ext.fields[1].value, &[8; 16]);
        assert_eq!(ext.mac, Some(&[0xAB; 24][..]));
        assert_eq!(extensions(&[]), Ok(Extensions::default()));
        // A crypto-NAK alone.
        assert_eq!(extensions(&[0, 0, 0, 0]).unwrap().mac, Some(&[0u8; 4][..]));
    }

    #[test]
    fn extension_fields_that_lie_about_their_length_are_refused() {
        let bad = |tail: &[u8]| match extensions(tail) {
            Err(ParseError::BadExtension { at, problem }) => Some((at, problem)),
            _ => None,
        };
        // 0xFFFF claimed in 16 bytes: the 64-byte datagram.
        let mut lying = head(0x0104, 0xFFFF);
        lying.extend_from_slice(&[0; 12]);
        assert_eq!(bad(&lying), Some((48, ExtensionProblem::Unaligned(0xFFFF))));
        let mut long = head(0x0104, 0xFFFC);
        long.extend_from_slice(&[0; 12]);
        assert_eq!(bad(&long), Some((48, ExtensionProblem::Overruns { claimed: 0xFFFC, left: 16 })));
        let mut datagram = Packet::request(NtpTimestamp(1), NtpTimestamp(2), NtpTimestamp(3), -6).to_bytes().to_vec();
        datagram.extend_from_slice(&lying);
        assert!(matches!(Packet::parse(&datagram), Err(ParseError::BadExtension { at: 48, .. })));
        // Under 16 bytes, a length that is not whole words, and a length of 0 (which would never advance).
        let mut short = head(1, 8);
        short.extend_from_slice(&[0; 12]);
        assert_eq!(bad(&short), Some((48, ExtensionProblem::TooShort(8))));
        let mut odd = head(1, 18);
        odd.extend_from_slice(&[0; 12]);
        assert_eq!(bad(&odd), Some((48, ExtensionProblem::Unaligned(18))));
        let mut zero = head(1, 0);
        zero.extend_from_slice(&[0; 12]);
        assert_eq!(bad(&zero), Some((48, ExtensionProblem::TooShort(0))));
        // A good field followed by bytes that are neither a field nor a MAC: the offset is theirs.
        let mut trailing = head(1, 16);
        trailing.extend_from_slice(&[0; 12]);
        trailing.extend_from_slice(&[0; 8]);
        assert_eq!(bad(&trailing), Some((64, ExtensionProblem::TooShort(0))));
    }
}

#[cfg(test)]
mod seeded {
    use super::*;

    /// Seeded random tails, many of them near-valid (heads with plausible lengths): none panics, and
    /// what is accepted covers the input exactly, field by field.
    #[test]
    fn any_tail_is_refused_or_covered_exactly() {
        let mut rng = crate::lab::Rng::new(7822);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = (rng.next_u64() % 160) as usize;
            let mut tail: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // Plausible heads at word boundaries, so that walks go deep.
            let mut at = 0;
            while at + 4 <= tail.len() && !rng.next_u64().is_multiple_of(4) {
                let length = 16 + 4 * (rng.next_u64() % 8) as u16;
                tail[at + 2..at + 4].copy_from_slice(&length.to_be_bytes());
                at += usize::from(length);
            }
            if let Ok(ext) = extensions(&tail) {
                accepted += 1;
                let covered: usize = ext.fields.iter().map(|f| f.value.len() + 4).sum::<usize>() + ext.mac.map_or(0, <[u8]>::len);
                assert_eq!(covered, tail.len(), "{tail:?}");
                for f in &ext.fields {
                    assert!(f.value.len() + 4 >= MIN_EXTENSION_LEN && f.value.len().is_multiple_of(4), "{tail:?}");
                }
            }
        }
        assert!(accepted > 1000, "the walk was exercised: {accepted} accepted");
    }
}
