//! NTPv4 (RFC 5905) without I/O: the packet, the server's decision for each datagram, the per-client
//! state a server keeps (interleaved timestamps, RFC 9769, and a rate limit), and the client's checks of a
//! reply and the exchange it yields.
//!
//! Bytes come in with the times they were stamped at (on the serving or syncing clock, in nanoseconds
//! since the Unix epoch); typed packets, decisions and [`crate::cristian::Exchange`]s come out. The
//! `synclab` crate's `ntp` module moves them over UDP and takes the kernel's timestamps.
//!
//! Interleaved mode as chrony uses it: a client asking for it sets the request's origin timestamp to the
//! receive timestamp of the server's previous reply and its receive timestamp to when that reply arrived.
//! A server that remembers the reply whose receive timestamp that was answers with origin = the request's
//! receive timestamp and transmit = the precise (kernel) transmit time of that previous reply, known only
//! after it left. Server receive timestamps carry a set lowest bit and transmit timestamps a clear one,
//! so the two are never equal and a client tells which it was sent.

use std::net::IpAddr;

/// Length of an NTP header without extension fields or MAC.
pub const HEADER_LEN: usize = 48;
/// Largest datagram a server takes as a request: a header with room for a MAC or small extension
/// fields. Anything longer is dropped as oversized.
pub const MAX_REQUEST_LEN: usize = 512;
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
    Reserved,
    SymmetricActive,
    SymmetricPassive,
    Client,
    Server,
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
    pub mode: Mode,
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
    pub reference: NtpTimestamp,
    pub origin: NtpTimestamp,
    pub receive: NtpTimestamp,
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
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    (u32_at(b, at) as u64) << 32 | u32_at(b, at + 4) as u64
}

impl Packet {
    /// Parses a datagram: the header checked for size and version, nothing beyond it read.
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

// ---------------------------------------------------------------------------------------------------
// Server

/// How the server describes its clock in replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Reference ID (stratum 1: four ASCII characters naming the reference).
    pub reference_id: [u8; 4],
    /// Root dispersion announced, ns.
    pub root_dispersion_nanos: u64,
    /// Sustained requests per second answered per client address; 0 turns the limit off.
    pub rate_per_sec: u32,
    /// Requests a client may send at once above the sustained rate.
    pub burst: u32,
    /// Client slots kept (interleaved timestamps and rate limits); the memory bound.
    pub clients: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { reference_id: *b"SLAB", root_dispersion_nanos: 0, rate_per_sec: 256, burst: 512, clients: 4096 }
    }
}

/// Why the server sent nothing back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// Not a client request (mode 6 and 7 included: no control or private answers here).
    #[error("mode {0:?} is not answered")]
    NotClient(Mode),
    /// A request without a transmit timestamp cannot be matched by its sender.
    #[error("zero transmit timestamp")]
    ZeroTransmit,
    /// Over the rate limit, and a kiss-o'-death went to this client very recently.
    #[error("over the rate limit")]
    RateLimited,
}

impl Dropped {
    /// A short fixed name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Dropped::Malformed(ParseError::Truncated(_)) => "truncated",
            Dropped::Malformed(ParseError::Oversized(_)) => "oversized",
            Dropped::Malformed(ParseError::Unaligned(_)) => "unaligned",
            Dropped::Malformed(ParseError::BadVersion(_)) => "bad_version",
            Dropped::NotClient(_) => "not_client_mode",
            Dropped::ZeroTransmit => "zero_transmit",
            Dropped::RateLimited => "rate_limited",
        }
    }
}

/// What kind of reply the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Transmit timestamp taken now, just before sending (the I/O layer stamps it).
    Basic,
    /// Transmit timestamp of the client's previous reply, already in the packet.
    Interleaved,
    /// A RATE kiss-o'-death.
    RateKiss,
}

/// A reply to send. For [`ReplyKind::Basic`] and [`ReplyKind::RateKiss`] the I/O layer writes the
/// transmit timestamp with [`Reply::stamp_transmit`] right before sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub packet: Packet,
    pub kind: ReplyKind,
    /// The request asked for interleaved mode (its origin is one of our receive timestamps), whether or
    /// not this reply could give it: the client will ask again, so this reply's precise transmit time
    /// is worth taking. A basic client's replies need none.
    pub interleave_asked: bool,
}

impl Reply {
    /// Sets the transmit timestamp (clock ns) for a basic reply; an interleaved one keeps its own.
    /// Returns the bytes to send.
    pub fn stamp_transmit(&mut self, clock_nanos: i64) -> [u8; HEADER_LEN] {
        if self.kind != ReplyKind::Interleaved {
            self.packet.transmit = NtpTimestamp::from_unix_nanos(clock_nanos).with_low_bit(false);
        }
        self.packet.to_bytes()
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    client: IpAddr,
    /// Rate-limit tokens, and when they were last refilled (clock ns).
    tokens: f64,
    refilled: i64,
    last_kiss: Option<i64>,
    /// Receive timestamp of the last reply sent to the client, and that reply's transmit time.
    last_receive: NtpTimestamp,
    last_transmit: NtpTimestamp,
}

/// The per-client state of an NTP server, in a fixed table: a client maps to one slot by a keyed hash,
/// and a newcomer takes the slot over (as chrony's client log does), so memory stays bounded whatever
/// the number of addresses seen.
#[derive(Debug, Clone)]
pub struct ClientTable {
    slots: Vec<Option<Slot>>,
    key: (u64, u64),
}

impl ClientTable {
    /// A table of `capacity` slots (at least 1), hashed with the secret `key`.
    pub fn new(capacity: usize, key: (u64, u64)) -> Self {
        Self { slots: vec![None; capacity.max(1)], key }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn index(&self, client: IpAddr) -> usize {
        // A keyed FNV-style mix: cheap, and unpredictable without the key.
        let bytes: [u8; 16] = match client {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let mut h = self.key.0 ^ 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        h ^= self.key.1;
        h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        (h % self.slots.len() as u64) as usize
    }

    fn slot(&mut self, client: IpAddr, now: i64, burst: f64) -> &mut Slot {
        let i = self.index(client);
        let fresh = Slot {
            client,
            tokens: burst,
            refilled: now,
            last_kiss: None,
            last_receive: NtpTimestamp::ZERO,
            last_transmit: NtpTimestamp::ZERO,
        };
        let entry = &mut self.slots[i];
        if entry.is_none_or(|s| s.client != client) {
            *entry = Some(fresh);
        }
        entry.as_mut().expect("slot filled above")
    }

    /// The saved transmit timestamp of the reply to `client` whose receive timestamp was `receive`.
    pub fn interleaved_transmit(&self, client: IpAddr, receive: NtpTimestamp) -> Option<NtpTimestamp> {
        let s = self.slots[self.index(client)]?;
        (s.client == client && !receive.is_zero() && s.last_receive == receive && !s.last_transmit.is_zero()).then_some(s.last_transmit)
    }

    /// Records a reply sent to `client`: its receive timestamp and its transmit time (the time read
    /// before sending, refined later by [`Self::refine_transmit`]).
    pub fn record(&mut self, client: IpAddr, receive: NtpTimestamp, transmit: NtpTimestamp) {
        let i = self.index(client);
        if let Some(s) = self.slots[i].as_mut().filter(|s| s.client == client) {
            s.last_receive = receive;
            s.last_transmit = transmit;
        }
    }

    /// Replaces the transmit time of the reply to `client` with receive timestamp `receive` by the
    /// kernel's, if that is still the last reply recorded for it. Returns whether it did.
    pub fn refine_transmit(&mut self, client: IpAddr, receive: NtpTimestamp, transmit: NtpTimestamp) -> bool {
        let i = self.index(client);
        match self.slots[i].as_mut() {
            Some(s) if s.client == client && s.last_receive == receive => {
                s.last_transmit = transmit;
                true
            }
            _ => false,
        }
    }
}

/// An NTP server's logic: decides, for each datagram, what to send back.
#[derive(Debug, Clone)]
pub struct Server {
    config: ServerConfig,
    clients: ClientTable,
}

/// Kiss-o'-death packets to one client: at most one per this long.
const KISS_INTERVAL_NANOS: i64 = 100_000_000;

impl Server {
    /// A server with `config`; `key` keys the client table's hash (pass random bits).
    pub fn new(config: ServerConfig, key: (u64, u64)) -> Self {
        Self { clients: ClientTable::new(config.clients, key), config }
    }

    /// The per-client table.
    pub fn clients(&self) -> &ClientTable {
        &self.clients
    }

    /// The reply to `datagram` from `client`, received at `receive_nanos` on the serving clock (the
    /// kernel's stamp where there is one), or why there is none.
    pub fn respond(&mut self, datagram: &[u8], client: IpAddr, receive_nanos: i64) -> Result<Reply, Dropped> {
        let request = Packet::parse(datagram)?;
        if request.mode != Mode::Client {
            return Err(Dropped::NotClient(request.mode));
        }
        if request.transmit.is_zero() {
            return Err(Dropped::ZeroTransmit);
        }
        let receive = NtpTimestamp::from_unix_nanos(receive_nanos).with_low_bit(true);
        let mut kind = ReplyKind::Basic;
        if self.config.rate_per_sec > 0 {
            let (rate, burst) = (self.config.rate_per_sec as f64, self.config.burst.max(1) as f64);
            let slot = self.clients.slot(client, receive_nanos, burst);
            let elapsed = receive_nanos.saturating_sub(slot.refilled).max(0) as f64 / 1e9;
            slot.tokens = (slot.tokens + elapsed * rate).min(burst);
            slot.refilled = receive_nanos.max(slot.refilled);
            if slot.tokens >= 1.0 {
                slot.tokens -= 1.0;
            } else if slot.last_kiss.is_none_or(|k| receive_nanos.saturating_sub(k) >= KISS_INTERVAL_NANOS) {
                slot.last_kiss = Some(receive_nanos);
                kind = ReplyKind::RateKiss;
            } else {
                return Err(Dropped::RateLimited);
            }
        } else {
            self.clients.slot(client, receive_nanos, 0.0);
        }
        // Interleaved: a version 4 request whose origin is a receive timestamp of ours (lowest bit set)
        // of the last reply to this client, whose transmit time we kept.
        let mut transmit = NtpTimestamp::ZERO;
        let mut origin = request.transmit;
        let interleave_asked = request.version == 4 && request.origin.0 & 1 == 1 && request.receive != request.transmit;
        if kind == ReplyKind::Basic
            && interleave_asked
            && let Some(t) = self.clients.interleaved_transmit(client, request.origin)
        {
            kind = ReplyKind::Interleaved;
            transmit = t;
            origin = request.receive;
        }
        let (leap, stratum, reference_id) = match kind {
            ReplyKind::RateKiss => (LEAP_UNSYNCHRONIZED, 0, *b"RATE"),
            _ => (0, 1, self.config.reference_id),
        };
        // The reference time: the start of the second the request arrived in (the clock is its own
        // reference, always current).
        let reference = NtpTimestamp::from_unix_nanos(receive_nanos - receive_nanos.rem_euclid(1_000_000_000));
        let packet = Packet {
            leap,
            version: request.version,
            mode: Mode::Server,
            stratum,
            poll: request.poll.clamp(-7, 17),
            precision: SERVER_PRECISION,
            root_delay: 0,
            root_dispersion: nanos_to_short(self.config.root_dispersion_nanos),
            reference_id,
            reference,
            origin,
            receive,
            transmit,
        };
        Ok(Reply { packet, kind, interleave_asked })
    }

    /// Records that the reply `reply` to `client` was sent at `transmit_nanos` on the serving clock (the
    /// time read just before sending; for a basic reply the one in the packet, for an interleaved one
    /// not: its packet carries the previous reply's), so the client's next interleaved request gets it
    /// unless [`Self::transmitted`] refines it.
    pub fn sent(&mut self, client: IpAddr, reply: &Reply, transmit_nanos: i64) {
        if reply.kind != ReplyKind::RateKiss {
            let transmit = NtpTimestamp::from_unix_nanos(transmit_nanos).with_low_bit(false);
            self.clients.record(client, reply.packet.receive, transmit);
        }
    }

    /// The kernel's transmit time of the reply to `client` with receive timestamp `receive`, on the
    /// serving clock (ns).
    pub fn transmitted(&mut self, client: IpAddr, receive: NtpTimestamp, clock_nanos: i64) -> bool {
        let t = NtpTimestamp::from_unix_nanos(clock_nanos).with_low_bit(false);
        self.clients.refine_transmit(client, receive, t)
    }
}

// ---------------------------------------------------------------------------------------------------
// Client

/// Why a reply is not used.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ReplyError {
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// Not a server reply.
    #[error("mode {0:?} is not a server reply")]
    NotServer(Mode),
    /// The origin timestamp is neither the request's transmit nor its receive timestamp.
    #[error("the reply does not answer our request (origin timestamp not ours)")]
    BogusOrigin,
    /// A timestamp the reply must carry is zero.
    #[error("the reply leaves a timestamp unset")]
    ZeroTimestamp,
    /// A kiss-o'-death.
    #[error("kiss-o'-death {}", String::from_utf8_lossy(.0))]
    Kiss([u8; 4]),
    /// Leap indicator 3, or a stratum of 16 or more.
    #[error("the server is not synchronized (leap {leap}, stratum {stratum})")]
    Unsynchronized { leap: u8, stratum: u8 },
    /// Root delay/2 + root dispersion at 16 s or more.
    #[error("root distance of {0:.3} s is too large")]
    RootDistance(f64),
}

/// What a checked reply was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// It answers the request in basic mode: its transmit timestamp is its own.
    Basic,
    /// It answers in interleaved mode: its transmit timestamp is that of the previous reply.
    Interleaved,
}

/// Checks a reply to `request` as RFC 5905 and chrony do (tests 2, 3, 6, 7 and kiss-o'-death; test 1,
/// the duplicate, is the caller's, which drops whatever comes after the first valid reply).
pub fn check_reply(request: &Packet, datagram: &[u8]) -> Result<(Packet, Answered), ReplyError> {
    let reply = Packet::parse(datagram)?;
    if reply.mode != Mode::Server {
        return Err(ReplyError::NotServer(reply.mode));
    }
    let answered = if reply.origin == request.transmit {
        Answered::Basic
    } else if !request.receive.is_zero() && reply.origin == request.receive {
        Answered::Interleaved
    } else {
        return Err(ReplyError::BogusOrigin);
    };
    if let Some(code) = reply.kiss_code() {
        return Err(ReplyError::Kiss(code));
    }
    if reply.origin.is_zero() || reply.receive.is_zero() || reply.transmit.is_zero() {
        return Err(ReplyError::ZeroTimestamp);
    }
    if reply.leap == LEAP_UNSYNCHRONIZED || reply.stratum >= 16 {
        return Err(ReplyError::Unsynchronized { leap: reply.leap, stratum: reply.stratum });
    }
    let distance = root_distance_nanos(&reply);
    if distance >= MAX_DISPERSION_NANOS {
        return Err(ReplyError::RootDistance(distance / 1e9));
    }
    Ok((reply, answered))
}

/// A reply's root distance: root delay / 2 + root dispersion, ns. What the client adds to its bound.
pub fn root_distance_nanos(reply: &Packet) -> f64 {
    short_to_nanos(reply.root_delay) / 2.0 + short_to_nanos(reply.root_dispersion)
}

/// The client's record of one request it sent and the reply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientExchange {
    /// The request's transmit time T1 on the client's clock, ns.
    pub t1: i64,
    /// The server's receive timestamp T2 of the request (raw, for the next interleaved request).
    pub server_receive: NtpTimestamp,
    /// The server's transmit timestamp T3 as the reply carried it (basic mode).
    pub server_transmit: NtpTimestamp,
    /// The reply's arrival T4 on the client's clock, ns.
    pub t4: i64,
}

/// The next request of a client: interleaved (origin = the server's receive timestamp of the previous
/// reply, receive = that reply's arrival) when `interleave` and there is a previous exchange, else basic.
/// `transmit` is the client's time now (its T1, also the cookie the reply must echo).
pub fn next_request(previous: Option<&ClientExchange>, interleave: bool, transmit_nanos: i64, poll: i8) -> Packet {
    let mut transmit = NtpTimestamp::from_unix_nanos(transmit_nanos);
    match previous.filter(|_| interleave) {
        Some(p) => {
            let receive = NtpTimestamp::from_unix_nanos(p.t4);
            if transmit == receive {
                transmit = NtpTimestamp(transmit.0.wrapping_add(1));
            }
            Packet::request(p.server_receive, receive, transmit, poll)
        }
        None => Packet::request(NtpTimestamp::ZERO, NtpTimestamp::ZERO, transmit, poll),
    }
}

/// The four timestamps of a basic exchange: T1 and T4 as taken, T2 and T3 from the reply, read in the era
/// near T1.
pub fn basic_exchange(t1: i64, reply: &Packet, t4: i64) -> Result<crate::cristian::Exchange, crate::cristian::CristianError> {
    crate::cristian::Exchange::new(t1, reply.receive.to_unix_nanos(t1), reply.transmit.to_unix_nanos(t1), t4)
}

/// The exchange an interleaved reply completes: the previous request and reply, with the previous reply's
/// precise transmit time that this reply carries.
pub fn interleaved_exchange(
    previous: &ClientExchange,
    reply: &Packet,
) -> Result<crate::cristian::Exchange, crate::cristian::CristianError> {
    let t1 = previous.t1;
    crate::cristian::Exchange::new(t1, previous.server_receive.to_unix_nanos(t1), reply.transmit.to_unix_nanos(t1), previous.t4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const T: i64 = 1_764_000_000_000_000_000;
    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn request_bytes(version: u8, mode: u8, transmit: u64) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b[0] = version << 3 | mode;
        b[40..48].copy_from_slice(&transmit.to_be_bytes());
        b
    }

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

    fn server() -> Server {
        Server::new(ServerConfig::default(), (1, 2))
    }

    #[test]
    fn a_basic_reply_passes_every_client_test() {
        let mut s = server();
        let t1 = T;
        let req = next_request(None, false, t1, 3);
        let mut reply = s.respond(&req.to_bytes(), A, T + 10_000).unwrap();
        assert_eq!(reply.kind, ReplyKind::Basic);
        let bytes = reply.stamp_transmit(T + 12_000);
        assert_eq!(bytes.len(), 48);
        let (p, answered) = check_reply(&req, &bytes).unwrap();
        assert_eq!(answered, Answered::Basic);
        assert_eq!((p.leap, p.version, p.mode, p.stratum, p.poll), (0, 4, Mode::Server, 1, 3));
        assert_eq!(p.reference_id, *b"SLAB");
        assert!(p.reference <= p.receive && p.receive < p.transmit);
        assert_eq!(p.origin, req.transmit);
        let e = basic_exchange(t1, &p, T + 20_000).unwrap();
        assert!((e.ntp_offset() - 1_000.0).abs() <= 2.0, "{}", e.ntp_offset());
        // Version echoed.
        let mut v3 = request_bytes(3, 3, 77);
        v3[2] = 6;
        let mut r = s.respond(&v3, B, T).unwrap();
        let p = Packet::parse(&r.stamp_transmit(T + 1)).unwrap();
        assert_eq!((p.version, p.poll), (3, 6));
    }

    #[test]
    fn datagrams_that_are_not_client_requests_get_nothing() {
        let mut s = server();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "truncated"),
            (vec![0x23; 47], "truncated"),
            (vec![0x23; 1024], "oversized"),
            (request_bytes(4, 6, 1), "not_client_mode"),
            (request_bytes(2, 7, 1), "not_client_mode"),
            (request_bytes(4, 4, 1), "not_client_mode"),
            (request_bytes(4, 1, 1), "not_client_mode"),
            (request_bytes(6, 3, 1), "bad_version"),
            (request_bytes(4, 3, 0), "zero_transmit"),
        ];
        for (bytes, kind) in cases {
            assert_eq!(s.respond(&bytes, A, T).unwrap_err().kind(), kind, "{bytes:?}");
        }
    }

    #[test]
    fn interleaved_requests_get_the_previous_reply_s_transmit_time() {
        let mut s = server();
        // First exchange: basic.
        let req1 = next_request(None, true, T, 0);
        let mut r1 = s.respond(&req1.to_bytes(), A, T + 10_000).unwrap();
        let b1 = r1.stamp_transmit(T + 12_000);
        s.sent(A, &r1, T + 12_000);
        assert!(s.transmitted(A, r1.packet.receive, T + 12_500), "the kernel's stamp replaces the early one");
        let (p1, kind) = check_reply(&req1, &b1).unwrap();
        assert_eq!(kind, Answered::Basic);
        let prev = ClientExchange { t1: T, server_receive: p1.receive, server_transmit: p1.transmit, t4: T + 20_000 };
        // Second: interleaved, carrying the first reply's precise transmit time.
        let req2 = next_request(Some(&prev), true, T + 1_000_000, 0);
        let mut r2 = s.respond(&req2.to_bytes(), A, T + 1_010_000).unwrap();
        assert_eq!(r2.kind, ReplyKind::Interleaved);
        let b2 = r2.stamp_transmit(T + 1_012_000);
        let (p2, kind) = check_reply(&req2, &b2).unwrap();
        assert_eq!(kind, Answered::Interleaved);
        let e = interleaved_exchange(&prev, &p2).unwrap();
        assert!((e.server_time() - (T + 12_500)).abs() <= 1);
        assert!((e.ntp_offset() - 1_250.0).abs() <= 2.0, "{}", e.ntp_offset());
        // The interleaved reply's own send time (not the earlier one it carried) serves the next request.
        s.sent(A, &r2, T + 1_012_000);
        let prev2 = ClientExchange { t1: T + 1_000_000, server_receive: p2.receive, server_transmit: p2.transmit, t4: T + 1_020_000 };
        let req3 = next_request(Some(&prev2), true, T + 2_000_000, 0);
        let mut r3 = s.respond(&req3.to_bytes(), A, T + 2_010_000).unwrap();
        let (p3, _) = check_reply(&req3, &r3.stamp_transmit(T + 2_012_000)).unwrap();
        let e3 = interleaved_exchange(&prev2, &p3).unwrap();
        assert!((e3.server_time() - (T + 1_012_000)).abs() <= 1, "{}", e3.server_time() - T);
        // Another client, or a stale origin, gets basic.
        let r = s.respond(&req2.to_bytes(), B, T + 1_020_000).unwrap();
        assert_eq!(r.kind, ReplyKind::Basic);
        let spoofed = Packet::request(NtpTimestamp(p1.receive.0 ^ 0x100), req2.receive, req2.transmit, 0);
        assert_eq!(s.respond(&spoofed.to_bytes(), A, T + 1_030_000).unwrap().kind, ReplyKind::Basic);
        // A basic-only client that reads an interleaved reply would see a bogus origin.
        assert_eq!(check_reply(&next_request(None, false, T, 0), &b2).unwrap_err(), ReplyError::BogusOrigin);
    }

    #[test]
    fn a_flooding_client_gets_a_rate_kiss_then_silence_and_others_are_unaffected() {
        let config = ServerConfig { rate_per_sec: 10, burst: 5, ..ServerConfig::default() };
        let mut s = Server::new(config, (3, 4));
        let mut answered = 0;
        let mut kisses = 0;
        let mut dropped = 0;
        for i in 0..100 {
            let req = request_bytes(4, 3, 1000 + i);
            match s.respond(&req, A, T + i as i64 * 1_000_000) {
                Ok(r) if r.kind == ReplyKind::RateKiss => {
                    kisses += 1;
                    let mut r = r;
                    let req_p = Packet::parse(&req).unwrap();
                    assert_eq!(check_reply(&req_p, &r.stamp_transmit(T)).unwrap_err(), ReplyError::Kiss(*b"RATE"));
                }
                Ok(_) => answered += 1,
                Err(Dropped::RateLimited) => dropped += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // 100 requests in 100 ms: the burst of 5 plus 1 refill, a kiss per 100 ms.
        assert!((5..=7).contains(&answered), "{answered}");
        assert_eq!(kisses, 1);
        assert_eq!(answered + kisses + dropped, 100);
        assert_eq!(s.respond(&request_bytes(4, 3, 1), B, T + 100_000_000).unwrap().kind, ReplyKind::Basic);
    }

    #[test]
    fn the_client_table_stays_bounded() {
        let mut s = Server::new(ServerConfig { clients: 64, ..ServerConfig::default() }, (5, 6));
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            let mut r = s.respond(&request_bytes(4, 3, 9), ip, T + i as i64).unwrap();
            r.stamp_transmit(T + i as i64 + 1);
            s.sent(ip, &r, T + i as i64 + 1);
        }
        assert_eq!(s.clients().capacity(), 64);
    }

    #[test]
    fn replies_failing_the_client_tests_are_refused() {
        let req = next_request(None, false, T, 0);
        let good = {
            let mut s = server();
            let mut r = s.respond(&req.to_bytes(), A, T + 1).unwrap();
            Packet::parse(&r.stamp_transmit(T + 2)).unwrap()
        };
        let bad = |f: &dyn Fn(&mut Packet)| {
            let mut p = good;
            f(&mut p);
            check_reply(&req, &p.to_bytes()).unwrap_err()
        };
        assert_eq!(bad(&|p| p.origin = NtpTimestamp(5)), ReplyError::BogusOrigin);
        assert_eq!(bad(&|p| p.mode = Mode::Client), ReplyError::NotServer(Mode::Client));
        assert_eq!(bad(&|p| p.receive = NtpTimestamp::ZERO), ReplyError::ZeroTimestamp);
        assert_eq!(bad(&|p| p.leap = 3), ReplyError::Unsynchronized { leap: 3, stratum: 1 });
        assert_eq!(bad(&|p| p.stratum = 16), ReplyError::Unsynchronized { leap: 0, stratum: 16 });
        assert_eq!(bad(&|p| p.stratum = 0), ReplyError::Kiss(*b"SLAB"));
        assert!(matches!(bad(&|p| p.root_dispersion = 17 << 16), ReplyError::RootDistance(_)));
        assert!(matches!(check_reply(&req, &[0; 47]), Err(ReplyError::Malformed(ParseError::Truncated(47)))));
    }
}
