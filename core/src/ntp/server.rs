//! The NTP server's logic: for each datagram, the reply to send or why none (interleaved mode, RFC 9769,
//! and a rate limit with kiss-o'-death), and the fixed table of per-client state behind it.

use std::net::IpAddr;
use std::sync::Arc;

use super::nts::{MasterKeys, NtsRefusal, NtsReply, fields as nts_fields};
use super::packet::{LEAP_UNSYNCHRONIZED, Mode, NtpTimestamp, Packet, ParseError, SERVER_PRECISION, nanos_to_short};

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
    /// Of the requests over the rate limit, one in 2^`leak` (chosen at random) is answered anyway, as
    /// chrony's `ratelimit leak`: a flood sent from a victim's spoofed address then costs the victim
    /// most of its answers, not all of them. 0 answers none (a client over the limit gets its
    /// kiss-o'-death, then silence). At most 16.
    pub leak: u8,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { reference_id: *b"SLAB", root_dispersion_nanos: 0, rate_per_sec: 256, burst: 512, clients: 4096, leak: 2 }
    }
}

/// Why the server sent nothing back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Not an NTP packet synclab takes.
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
    /// An NTS request that is not valid and cannot even be NAKed (no unique identifier, fields out of
    /// place), or a plain request to a server that requires NTS.
    #[error(transparent)]
    Nts(#[from] NtsRefusal),
}

impl Dropped {
    /// A short fixed name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Dropped::Malformed(ParseError::Truncated(_)) => "truncated",
            Dropped::Malformed(ParseError::Oversized(_)) => "oversized",
            Dropped::Malformed(ParseError::Unaligned(_)) => "unaligned",
            Dropped::Malformed(ParseError::BadVersion(_)) => "bad_version",
            Dropped::Malformed(ParseError::BadExtension { .. }) => "bad_extension",
            Dropped::NotClient(_) => "not_client_mode",
            Dropped::ZeroTransmit => "zero_transmit",
            Dropped::RateLimited => "rate_limited",
            Dropped::Nts(why) => why.kind(),
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
    /// An NTS NAK: a kiss-o'-death "NTSN" to an NTS request whose cookie or authenticator did not check.
    NtsNak,
}

/// What NTS adds to a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NtsPart {
    /// Nothing: a plain request, or a server without NTS.
    Plain,
    /// The unique identifier and an authenticator holding new cookies, sealed once the header is final.
    Sealed(NtsReply),
    /// A NAK's unique identifier, and why the request was refused.
    Nak {
        /// The request's unique identifier.
        uid: Vec<u8>,
        /// Why.
        why: NtsRefusal,
    },
}

/// A reply to send. For [`ReplyKind::Basic`] and [`ReplyKind::RateKiss`] the I/O layer writes the
/// transmit timestamp with [`Reply::stamp_transmit`] right before sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply's header.
    pub packet: Packet,
    /// What kind of reply it is.
    pub kind: ReplyKind,
    /// The request asked for interleaved mode (its origin is one of our receive timestamps), whether or
    /// not this reply could give it: the client will ask again, so this reply's precise transmit time
    /// is worth taking. A basic client's replies need none.
    pub interleave_asked: bool,
    /// What NTS adds.
    pub nts: NtsPart,
}

impl Reply {
    /// Sets the transmit timestamp (clock ns) for a basic reply; an interleaved one keeps its own.
    /// Returns the bytes to send (with NTS: sealed after the header is final).
    pub fn stamp_transmit(&mut self, clock_nanos: i64) -> Vec<u8> {
        if self.kind != ReplyKind::Interleaved {
            self.packet.transmit = NtpTimestamp::from_unix_nanos(clock_nanos).with_low_bit(false);
        }
        let header = self.packet.to_bytes();
        match &self.nts {
            NtsPart::Plain => header.to_vec(),
            NtsPart::Sealed(sealer) => sealer.seal(&header),
            NtsPart::Nak { uid, .. } => nts_fields::nak(&header, uid),
        }
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
    /// The state of the draws that pick which limited requests leak through (secret, from the key).
    leak_draws: u64,
    /// The master keys of NTS cookies, when NTS is served.
    nts: Option<Arc<MasterKeys>>,
    /// Plain (unauthenticated) requests get no answer.
    require_nts: bool,
}

/// Whether the next limited request leaks through: true one time in 2^`leak`, from a SplitMix64
/// sequence whose state is secret (an attacker cannot tell which of its requests will be answered).
fn leaks(state: &mut u64, leak: u8) -> bool {
    if leak == 0 {
        return false;
    }
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mask = (1u64 << leak.min(16)) - 1;
    z & mask == 0
}

/// Kiss-o'-death packets to one client: at most one per this long.
const KISS_INTERVAL_NANOS: i64 = 100_000_000;

impl Server {
    /// A server with `config`; `key` keys the client table's hash (pass random bits).
    pub fn new(config: ServerConfig, key: (u64, u64)) -> Self {
        Self {
            clients: ClientTable::new(config.clients, key),
            config,
            leak_draws: key.0.rotate_left(29) ^ key.1,
            nts: None,
            require_nts: false,
        }
    }

    /// Serves NTS with cookies under `master` (shared with the NTS-KE server that hands them out);
    /// `require` leaves plain requests unanswered.
    pub fn with_nts(mut self, master: Arc<MasterKeys>, require: bool) -> Self {
        self.nts = Some(master);
        self.require_nts = require;
        self
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
            } else if leaks(&mut self.leak_draws, self.config.leak) {
                // Answered anyway: a flood from a spoofed address must not deny its owner all time.
            } else if slot.last_kiss.is_none_or(|k| receive_nanos.saturating_sub(k) >= KISS_INTERVAL_NANOS) {
                slot.last_kiss = Some(receive_nanos);
                kind = ReplyKind::RateKiss;
            } else {
                return Err(Dropped::RateLimited);
            }
        } else {
            self.clients.slot(client, receive_nanos, 0.0);
        }
        // NTS after the rate limit, so a flood costs no cryptography past it.
        let mut nts = NtsPart::Plain;
        if kind == ReplyKind::Basic {
            let checked = match &self.nts {
                Some(master) => nts_fields::check_request(datagram, master).map(|r| r.map(|r| NtsReply::new(&r, master))),
                None => Ok(None),
            };
            nts = match checked {
                Ok(Some(sealer)) => NtsPart::Sealed(sealer),
                Ok(None) if self.require_nts => return Err(Dropped::Nts(NtsRefusal::Required)),
                Ok(None) => NtsPart::Plain,
                Err(refused) => match (refused.why, refused.uid) {
                    (why @ (NtsRefusal::Cookie(_) | NtsRefusal::Authenticator), Some(uid)) => {
                        kind = ReplyKind::NtsNak;
                        NtsPart::Nak { uid, why }
                    }
                    (why, _) => return Err(Dropped::Nts(why)),
                },
            };
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
            ReplyKind::NtsNak => (LEAP_UNSYNCHRONIZED, 0, nts_fields::NTS_NAK),
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
        Ok(Reply { packet, kind, interleave_asked, nts })
    }

    /// Records that the reply `reply` to `client` was sent at `transmit_nanos` on the serving clock (the
    /// time read just before sending; for a basic reply the one in the packet, for an interleaved one
    /// not: its packet carries the previous reply's), so the client's next interleaved request gets it
    /// unless [`Self::transmitted`] refines it.
    pub fn sent(&mut self, client: IpAddr, reply: &Reply, transmit_nanos: i64) {
        if !matches!(reply.kind, ReplyKind::RateKiss | ReplyKind::NtsNak) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::client::*;
    use crate::ntp::testing::{A, B, T, request_bytes};
    use crate::sampler::Sampler;
    use std::net::Ipv4Addr;

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
        let mut sampler = Sampler::new();
        sampler.take(completed(None, t1, &p, answered, T + 20_000, false)).unwrap();
        let e = sampler.samples()[0].exchange;
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
        // The sampler pairs it with the first exchange (by the name the reply echoes): one candidate, the
        // basic one replaced.
        let mut sampler = Sampler::new();
        sampler.take(completed(None, T, &p1, Answered::Basic, prev.t4, false)).unwrap();
        sampler.take(completed(Some(&prev), T + 1_000_000, &p2, kind, T + 1_020_000, false)).unwrap();
        assert_eq!(sampler.len(), 1);
        assert!(sampler.samples()[0].interleaved);
        let e = sampler.samples()[0].exchange;
        assert!((e.server_time() - (T + 12_500)).abs() <= 1);
        assert!((e.ntp_offset() - 1_250.0).abs() <= 2.0, "{}", e.ntp_offset());
        // The interleaved reply's own send time (not the earlier one it carried) serves the next request.
        s.sent(A, &r2, T + 1_012_000);
        let prev2 = ClientExchange { t1: T + 1_000_000, server_receive: p2.receive, server_transmit: p2.transmit, t4: T + 1_020_000 };
        let req3 = next_request(Some(&prev2), true, T + 2_000_000, 0);
        let mut r3 = s.respond(&req3.to_bytes(), A, T + 2_010_000).unwrap();
        let (p3, kind) = check_reply(&req3, &r3.stamp_transmit(T + 2_012_000)).unwrap();
        sampler.take(completed(Some(&prev2), T + 2_000_000, &p3, kind, T + 2_020_000, false)).unwrap();
        assert_eq!(sampler.len(), 2);
        let e3 = sampler.samples()[1].exchange;
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
        let config = ServerConfig { rate_per_sec: 10, burst: 5, leak: 0, ..ServerConfig::default() };
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
    fn a_fraction_of_limited_requests_leaks_through() {
        // 10,000 requests in 1 s from one address (a flood spoofing a victim's): with leak 2, about one
        // in four of those over the limit is answered anyway; with leak 0, none.
        let count = |leak: u8| {
            let config = ServerConfig { rate_per_sec: 10, burst: 5, leak, ..ServerConfig::default() };
            let mut s = Server::new(config, (3, 4));
            (0..10_000)
                .filter(|&i| s.respond(&request_bytes(4, 3, 1000 + i), A, T + i as i64 * 100_000).is_ok_and(|r| r.kind == ReplyKind::Basic))
                .count()
        };
        let (none, quarter) = (count(0), count(2));
        assert!(none <= 20, "{none}");
        assert!((2_200..=2_800).contains(&quarter), "{quarter} of 10,000 answered with leak 2");
        assert!((500..=750).contains(&count(4)), "leak 4: one in 16");
    }

    fn nts_server(require: bool) -> (Server, Arc<MasterKeys>) {
        let master = Arc::new(MasterKeys::new(1, [5; 32], 3, 7));
        (Server::new(ServerConfig::default(), (1, 2)).with_nts(master.clone(), require), master)
    }

    fn nts_request(master: &MasterKeys, transmit: i64, uid: u8, c2s: [u8; 32]) -> Vec<u8> {
        let keys = crate::ntp::nts::Keys { c2s: [1; 32], s2c: [2; 32] };
        let header = next_request(None, false, transmit, 0).to_bytes();
        nts_fields::client_request(&header, &[uid; 32], &master.cookie(&keys), 1, &c2s, &[4; 16])
    }

    #[test]
    fn nts_requests_get_authenticated_replies_and_bad_ones_a_nak() {
        let (mut s, master) = nts_server(false);
        let req = nts_request(&master, T, 3, [1; 32]);
        let mut reply = s.respond(&req, A, T + 10).unwrap();
        assert!(matches!(reply.nts, NtsPart::Sealed(_)));
        let bytes = reply.stamp_transmit(T + 20);
        let cookies = nts_fields::check_reply(&bytes, &[3; 32], &[2; 32]).unwrap();
        assert_eq!(cookies.len(), 2, "one for the cookie spent, one for the placeholder");
        let (p, answered) = check_reply(&Packet::parse(&req).unwrap(), &bytes).unwrap();
        assert_eq!((answered, p.stratum), (Answered::Basic, 1));
        // A request whose authenticator is under another key: an NTSN kiss-o'-death with its identifier.
        let mut nak = s.respond(&nts_request(&master, T, 4, [9; 32]), B, T + 30).unwrap();
        assert_eq!((nak.kind, &nak.nts), (ReplyKind::NtsNak, &NtsPart::Nak { uid: vec![4; 32], why: NtsRefusal::Authenticator }));
        assert_eq!(nts_fields::check_reply(&nak.stamp_transmit(T + 40), &[4; 32], &[2; 32]), Err(crate::ntp::nts::NtsReplyError::Nak));
        // Plain requests are answered plainly, unless NTS is required.
        assert_eq!(s.respond(&request_bytes(4, 3, 9), A, T + 50).unwrap().nts, NtsPart::Plain);
        let (mut strict, master) = nts_server(true);
        assert_eq!(strict.respond(&request_bytes(4, 3, 9), A, T).unwrap_err().kind(), "nts_required");
        assert!(strict.respond(&nts_request(&master, T, 3, [1; 32]), A, T).is_ok());
        // A truncated NTS request (the authenticator cut off) is malformed: dropped, no NAK.
        let req = nts_request(&master, T, 3, [1; 32]);
        assert_eq!(strict.respond(&req[..req.len() - 40], A, T).unwrap_err().kind(), "nts_malformed");
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
}
