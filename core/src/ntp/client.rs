//! The NTP client's side, without I/O: the next request (interleaved or basic), the checks of a reply,
//! and the exchange a checked reply completes, as the [`crate::sampler`] takes it.

use super::packet::{LEAP_UNSYNCHRONIZED, MAX_DISPERSION_NANOS, Mode, NtpTimestamp, Packet, ParseError, short_to_nanos};
use crate::sampler::{Completed, Earlier, Transmit};

/// Why a reply is not used.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ReplyError {
    /// Not an NTP packet synclab takes.
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
    Unsynchronized {
        /// The reply's leap indicator.
        leap: u8,
        /// The reply's stratum.
        stratum: u8,
    },
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

impl ClientExchange {
    /// The name an exchange goes by in the next request and in an interleaved reply to it: its reply's
    /// arrival T4 (`t4`, ns) as an NTP timestamp, which the next request carries as its receive timestamp
    /// and an interleaved reply echoes as its origin.
    pub fn key_of(t4: i64) -> NtpTimestamp {
        NtpTimestamp::from_unix_nanos(t4)
    }
}

/// The next request of a client: interleaved (origin = the server's receive timestamp of the previous
/// reply, receive = that reply's arrival) when `interleave` and there is a previous exchange, else basic.
/// `transmit` is the client's time now (its T1, also the cookie the reply must echo).
pub fn next_request(previous: Option<&ClientExchange>, interleave: bool, transmit_nanos: i64, poll: i8) -> Packet {
    let mut transmit = NtpTimestamp::from_unix_nanos(transmit_nanos);
    match previous.filter(|_| interleave) {
        Some(p) => {
            let receive = ClientExchange::key_of(p.t4);
            if transmit == receive {
                transmit = NtpTimestamp(transmit.0.wrapping_add(1));
            }
            Packet::request(p.server_receive, receive, transmit, poll)
        }
        None => Packet::request(NtpTimestamp::ZERO, NtpTimestamp::ZERO, transmit, poll),
    }
}

/// The exchange a checked reply completes, as the [`Sampler`](crate::sampler::Sampler) takes it: T1
/// (the request's transmit time) and T4 (the reply's arrival) on the client's clock, `kernel` if both are
/// the kernel's stamps; T2 from the reply. A basic reply's transmit timestamp is its own
/// ([`Transmit::Sent`]); an interleaved reply's is that of the reply to `previous`, whose request this
/// one named, so it completes that exchange ([`Earlier`]) and has none of its own ([`Transmit::Later`]).
/// Timestamps are read in the era near the T1 of their own exchange.
pub fn completed(
    previous: Option<&ClientExchange>,
    t1: i64,
    reply: &Packet,
    answered: Answered,
    t4: i64,
    kernel: bool,
) -> Completed<NtpTimestamp> {
    let (transmit, earlier) = match (answered, previous) {
        (Answered::Interleaved, Some(p)) => (Transmit::Later, Some(Earlier { key: reply.origin, t3: reply.transmit.to_unix_nanos(p.t1) })),
        _ => (Transmit::Sent(reply.transmit.to_unix_nanos(t1)), None),
    };
    Completed {
        key: ClientExchange::key_of(t4),
        t1,
        t2: reply.receive.to_unix_nanos(t1),
        transmit,
        t4,
        kernel_t2: None,
        kernel_t4: None,
        kernel_t1_t4: kernel,
        earlier,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::server::{Server, ServerConfig};
    use crate::ntp::testing::{A, T};

    #[test]
    fn replies_failing_the_client_tests_are_refused() {
        let req = next_request(None, false, T, 0);
        let good = {
            let mut s = Server::new(ServerConfig::default(), (1, 2));
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
