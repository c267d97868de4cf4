//! The NTS extension fields of NTP packets (RFC 8915 §5): Unique Identifier, NTS Cookie, NTS Cookie
//! Placeholder and NTS Authenticator and Encrypted Extension Fields, read from the strict RFC 7822 walk
//! of [`crate::ntp::extensions`] and written in the same layout.
//!
//! A request: header, unique identifier, one cookie, placeholders for more, then the authenticator,
//! whose ciphertext authenticates everything before it (under the client-to-server key the cookie
//! holds). A reply: header, the request's unique identifier, then the authenticator, whose ciphertext
//! holds the new cookies (one for the cookie spent, one per placeholder) under the server-to-client key.
//! A server that cannot open the cookie or check the authenticator answers with an NTS NAK (a
//! kiss-o'-death "NTSN" carrying the unique identifier alone), which a client takes as a hint to run
//! NTS-KE again, never as time.

use super::{Key, Keys, MasterKeys, NONCE_LEN, TAG_LEN, open, seal};
use crate::ntp::packet::{ExtensionProblem, HEADER_LEN, MIN_EXTENSION_LEN, ParseError, extensions};

/// Field types.
pub mod field_types {
    /// Unique Identifier.
    pub const UNIQUE_IDENTIFIER: u16 = 0x0104;
    /// NTS Cookie.
    pub const COOKIE: u16 = 0x0204;
    /// NTS Cookie Placeholder.
    pub const COOKIE_PLACEHOLDER: u16 = 0x0304;
    /// NTS Authenticator and Encrypted Extension Fields.
    pub const AUTHENTICATOR: u16 = 0x0404;
}
use field_types::*;

/// The least length of a unique identifier (RFC 8915 §5.3), and the length synclab sends.
pub const UID_LEN: usize = 32;
/// The kiss code of an NTS NAK.
pub const NTS_NAK: [u8; 4] = *b"NTSN";

/// Why a server refuses an NTS request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NtsRefusal {
    /// The NTS fields are not laid out as RFC 8915 says.
    #[error("malformed NTS request: {0}")]
    Malformed(&'static str),
    /// The cookie does not open.
    #[error(transparent)]
    Cookie(#[from] super::CookieError),
    /// The authenticator does not check under the cookie's key.
    #[error("the authenticator does not check")]
    Authenticator,
    /// A request without NTS to a server that requires it.
    #[error("NTS is required")]
    Required,
}

impl NtsRefusal {
    /// A short fixed name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            NtsRefusal::Malformed(_) => "nts_malformed",
            NtsRefusal::Cookie(super::CookieError::BadLength(_)) => "nts_bad_cookie",
            NtsRefusal::Cookie(super::CookieError::UnknownKey(_)) => "nts_unknown_key",
            NtsRefusal::Cookie(super::CookieError::Forged) => "nts_bad_cookie",
            NtsRefusal::Authenticator => "nts_bad_authenticator",
            NtsRefusal::Required => "nts_required",
        }
    }
}

/// A checked NTS request: what the reply needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtsRequest {
    /// The unique identifier to echo.
    pub uid: Vec<u8>,
    /// The keys from the cookie.
    pub keys: Keys,
    /// Placeholders sent (as many cookies more are wanted), each the cookie's size.
    pub placeholders: usize,
}

/// A refused NTS request, with its unique identifier where it had one (a NAK carries it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub why: NtsRefusal,
    /// The request's unique identifier, if it had exactly one.
    pub uid: Option<Vec<u8>>,
}

/// One field with its offset in the datagram.
struct Located<'a> {
    at: usize,
    field_type: u16,
    value: &'a [u8],
}

/// The fields after the header, each with its offset, and whether a MAC ends them; an error if they are
/// not a strict RFC 7822 layout.
fn located(datagram: &[u8]) -> Result<(Vec<Located<'_>>, bool), ParseError> {
    let tail = datagram.get(HEADER_LEN..).unwrap_or(&[]);
    let ext = extensions(tail)?;
    let mut at = HEADER_LEN;
    let mut out = Vec::with_capacity(ext.fields.len());
    for f in ext.fields {
        out.push(Located { at, field_type: f.field_type, value: f.value });
        at += 4 + f.value.len();
    }
    Ok((out, ext.mac.is_some()))
}

/// Whether `field_type` is one of NTS's.
fn is_nts(field_type: u16) -> bool {
    matches!(field_type, UNIQUE_IDENTIFIER | COOKIE | COOKIE_PLACEHOLDER | AUTHENTICATOR)
}

/// An authenticator's nonce and ciphertext, bounds checked; `None` if its lengths do not fit.
fn authenticator(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let nonce_len = usize::from(u16::from_be_bytes([*value.first()?, *value.get(1)?]));
    let sealed_len = usize::from(u16::from_be_bytes([*value.get(2)?, *value.get(3)?]));
    let pad = |n: usize| n.div_ceil(4) * 4;
    let nonce = value.get(4..4 + nonce_len)?;
    let sealed_at = 4 + pad(nonce_len);
    let sealed = value.get(sealed_at..sealed_at + sealed_len)?;
    // The padding and any additional padding are inside the field; nothing may claim beyond it.
    if sealed_at + pad(sealed_len) > value.len() || nonce_len < NONCE_LEN || sealed_len < TAG_LEN {
        return None;
    }
    Some((nonce, sealed))
}

/// Appends an extension field of `field_type` holding `value`, zero-padded to whole words and to the
/// least field length.
pub fn push_field(out: &mut Vec<u8>, field_type: u16, value: &[u8]) {
    let len = (4 + value.len()).div_ceil(4).max(MIN_EXTENSION_LEN / 4) * 4;
    out.extend_from_slice(&field_type.to_be_bytes());
    out.extend_from_slice(&(len.min(0xFFFC) as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + len - 4 - value.len(), 0);
}

/// Appends an authenticator sealing `plaintext` (whole extension fields, or nothing) with everything in
/// `out` so far as associated data.
fn push_authenticator(out: &mut Vec<u8>, key: &Key, nonce: &[u8; NONCE_LEN], plaintext: &[u8]) {
    let sealed = seal(key, out, nonce, plaintext);
    let mut value = Vec::with_capacity(4 + NONCE_LEN + sealed.len() + 3);
    value.extend_from_slice(&(NONCE_LEN as u16).to_be_bytes());
    value.extend_from_slice(&(sealed.len() as u16).to_be_bytes());
    value.extend_from_slice(nonce);
    value.extend_from_slice(&sealed);
    value.resize(value.len().div_ceil(4) * 4, 0);
    push_field(out, AUTHENTICATOR, &value);
}

/// The server's check of a request: `Ok(None)` if it carries no NTS field (plain NTP), the unique
/// identifier, keys and placeholder count if it is a valid NTS request, else why not. The datagram has
/// passed [`crate::ntp::Packet::parse`]; this reads nothing outside it and never panics.
pub fn check_request(datagram: &[u8], master: &MasterKeys) -> Result<Option<NtsRequest>, Refused> {
    let malformed = |what, uid: Option<&[u8]>| Refused { why: NtsRefusal::Malformed(what), uid: uid.map(<[u8]>::to_vec) };
    let (fields, mac) = located(datagram).map_err(|_| malformed("not an extension field layout", None))?;
    if !fields.iter().any(|f| is_nts(f.field_type)) {
        return Ok(None);
    }
    let mut uid = None;
    let mut uids = 0;
    for f in fields.iter().filter(|f| f.field_type == UNIQUE_IDENTIFIER) {
        uid = Some(f.value);
        uids += 1;
    }
    let uid = match (uid, uids) {
        (Some(u), 1) if u.len() >= UID_LEN => u,
        _ => return Err(malformed("not exactly one unique identifier of 32 bytes or more", None)),
    };
    let uid_only = Some(uid);
    if mac {
        return Err(malformed("a MAC with NTS fields", uid_only));
    }
    let cookies: Vec<&Located> = fields.iter().filter(|f| f.field_type == COOKIE).collect();
    let [cookie] = cookies.as_slice() else {
        return Err(malformed("not exactly one cookie", uid_only));
    };
    let auths: Vec<usize> = fields.iter().enumerate().filter(|(_, f)| f.field_type == AUTHENTICATOR).map(|(i, _)| i).collect();
    let auth = match auths.as_slice() {
        [i] if *i + 1 == fields.len() => &fields[*i],
        [_] => return Err(malformed("fields after the authenticator", uid_only)),
        _ => return Err(malformed("not exactly one authenticator", uid_only)),
    };
    let placeholders = fields.iter().filter(|f| f.field_type == COOKIE_PLACEHOLDER).collect::<Vec<_>>();
    if placeholders.iter().any(|p| p.value.len() != cookie.value.len()) {
        return Err(malformed("a placeholder not the cookie's size", uid_only));
    }
    // The cookie field is padded to whole words; synclab's cookies are whole words already.
    let keys = master.open(cookie.value).map_err(|e| Refused { why: e.into(), uid: uid_only.map(<[u8]>::to_vec) })?;
    let (nonce, sealed) = authenticator(auth.value).ok_or_else(|| malformed("an authenticator whose lengths do not fit", uid_only))?;
    let plaintext = open(&keys.c2s, &datagram[..auth.at], nonce, sealed)
        .ok_or_else(|| Refused { why: NtsRefusal::Authenticator, uid: uid_only.map(<[u8]>::to_vec) })?;
    // Encrypted fields from a client (none is defined) must still be a field layout.
    if extensions(&plaintext).is_ok_and(|e| e.mac.is_none()) {
        Ok(Some(NtsRequest { uid: uid.to_vec(), keys, placeholders: placeholders.len() }))
    } else {
        Err(malformed("encrypted fields that are not fields", uid_only))
    }
}

/// How a server seals its reply to an NTS request, once the header is final.
#[derive(Clone, PartialEq, Eq)]
pub struct NtsReply {
    uid: Vec<u8>,
    s2c: Key,
    cookies: Vec<Vec<u8>>,
    nonce: [u8; NONCE_LEN],
}

impl std::fmt::Debug for NtsReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtsReply").field("cookies", &self.cookies.len()).finish_non_exhaustive()
    }
}

impl NtsReply {
    /// The reply to `request`: a fresh cookie for the one spent and one per placeholder (at most 8 in
    /// all), sealed under `master`'s newest key.
    pub fn new(request: &NtsRequest, master: &MasterKeys) -> Self {
        let count = (1 + request.placeholders).min(super::COOKIES_PER_RESPONSE);
        let cookies = (0..count).map(|_| master.cookie(&request.keys)).collect();
        Self { uid: request.uid.clone(), s2c: request.keys.s2c, cookies, nonce: master.nonce() }
    }

    /// The datagram: `header`, the unique identifier, and the authenticator holding the cookies.
    pub fn seal(&self, header: &[u8]) -> Vec<u8> {
        let mut plaintext = Vec::with_capacity(self.cookies.iter().map(|c| c.len() + 4).sum());
        for c in &self.cookies {
            push_field(&mut plaintext, COOKIE, c);
        }
        let mut out = Vec::with_capacity(header.len() + 4 + self.uid.len() + 40 + plaintext.len());
        out.extend_from_slice(header);
        push_field(&mut out, UNIQUE_IDENTIFIER, &self.uid);
        push_authenticator(&mut out, &self.s2c, &self.nonce, &plaintext);
        out
    }
}

/// An NTS NAK: `header` (a kiss-o'-death "NTSN") and the unique identifier, nothing authenticated.
pub fn nak(header: &[u8], uid: &[u8]) -> Vec<u8> {
    let mut out = header.to_vec();
    push_field(&mut out, UNIQUE_IDENTIFIER, uid);
    out
}

/// A client's NTS request: `header`, the unique identifier `uid`, `cookie`, `placeholders` placeholders
/// of its size, and the authenticator under `c2s` with `nonce`.
pub fn client_request(header: &[u8], uid: &[u8], cookie: &[u8], placeholders: usize, c2s: &Key, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = header.to_vec();
    push_field(&mut out, UNIQUE_IDENTIFIER, uid);
    push_field(&mut out, COOKIE, cookie);
    let blank = vec![0u8; cookie.len()];
    for _ in 0..placeholders {
        push_field(&mut out, COOKIE_PLACEHOLDER, &blank);
    }
    push_authenticator(&mut out, c2s, nonce, &[]);
    out
}

/// Why a client does not take a reply as an NTS reply to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NtsReplyError {
    /// Not a strict extension-field layout, or NTS fields out of place.
    #[error("malformed NTS reply: {0}")]
    Malformed(&'static str),
    /// No unique identifier, or not the request's: not an answer to it (a replay, or another's).
    #[error("the reply's unique identifier is not the request's")]
    UnknownUid,
    /// The authenticator does not check: forged or damaged.
    #[error("the reply's authenticator does not check")]
    Authenticator,
    /// An NTS NAK: the server could not use the cookie. Run NTS-KE again.
    #[error("NTS NAK: the server refused the cookie (run NTS-KE again)")]
    Nak,
}

/// A client's check of `datagram` as the reply to its request with unique identifier `uid`: the new
/// cookies it carries if it authenticates under `s2c`. A NAK (the header a kiss-o'-death "NTSN", the
/// unique identifier ours, no authenticator) is [`NtsReplyError::Nak`]. Never panics.
pub fn check_reply(datagram: &[u8], uid: &[u8], s2c: &Key) -> Result<Vec<Vec<u8>>, NtsReplyError> {
    let (fields, mac) = located(datagram).map_err(|e| {
        NtsReplyError::Malformed(match e {
            ParseError::BadExtension { problem: ExtensionProblem::Overruns { .. }, .. } => "a field overruns the datagram",
            _ => "not an extension field layout",
        })
    })?;
    let mut uids = fields.iter().filter(|f| f.field_type == UNIQUE_IDENTIFIER);
    match (uids.next(), uids.next()) {
        (Some(f), None) if f.value == uid => {}
        _ => return Err(NtsReplyError::UnknownUid),
    }
    let kiss = datagram.get(1) == Some(&0) && datagram.get(12..16) == Some(&NTS_NAK[..]);
    let auths: Vec<&Located> = fields.iter().filter(|f| f.field_type == AUTHENTICATOR).collect();
    if kiss && auths.is_empty() {
        return Err(NtsReplyError::Nak);
    }
    if mac {
        return Err(NtsReplyError::Malformed("a MAC with NTS fields"));
    }
    let [auth] = auths.as_slice() else {
        return Err(NtsReplyError::Malformed("not exactly one authenticator"));
    };
    if fields.last().map(|f| f.at) != Some(auth.at) {
        return Err(NtsReplyError::Malformed("fields after the authenticator"));
    }
    let (nonce, sealed) = authenticator(auth.value).ok_or(NtsReplyError::Malformed("an authenticator whose lengths do not fit"))?;
    let plaintext = open(s2c, &datagram[..auth.at], nonce, sealed).ok_or(NtsReplyError::Authenticator)?;
    let inner = extensions(&plaintext).map_err(|_| NtsReplyError::Malformed("encrypted fields that are not fields"))?;
    if inner.mac.is_some() {
        return Err(NtsReplyError::Malformed("encrypted fields that are not fields"));
    }
    Ok(inner.fields.iter().filter(|f| f.field_type == COOKIE).map(|f| f.value.to_vec()).take(super::COOKIES_PER_RESPONSE).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::Packet;
    use crate::ntp::packet::NtpTimestamp;

    fn master() -> MasterKeys {
        MasterKeys::new(1, [5; 32], 3, 99)
    }

    fn keys() -> Keys {
        Keys { c2s: [1; 32], s2c: [2; 32] }
    }

    fn header() -> [u8; 48] {
        Packet::request(NtpTimestamp::ZERO, NtpTimestamp::ZERO, NtpTimestamp(77), 0).to_bytes()
    }

    fn request(master: &MasterKeys, placeholders: usize) -> Vec<u8> {
        let cookie = master.cookie(&keys());
        client_request(&header(), &[3; 32], &cookie, placeholders, &keys().c2s, &[4; 16])
    }

    #[test]
    fn a_request_checks_and_its_reply_carries_new_cookies() {
        let m = master();
        let req = request(&m, 2);
        assert_eq!(req.len(), 48 + 36 + 104 + 2 * 104 + 40, "chrony's sizes");
        assert!(Packet::parse(&req).is_ok());
        let got = check_request(&req, &m).unwrap().unwrap();
        assert_eq!(got, NtsRequest { uid: vec![3; 32], keys: keys(), placeholders: 2 });
        let reply = NtsReply::new(&got, &m).seal(&header());
        assert!(reply.len() <= req.len(), "a reply is no larger than its request ({} > {})", reply.len(), req.len());
        assert!(Packet::parse(&reply).is_ok());
        let cookies = check_reply(&reply, &[3; 32], &keys().s2c).unwrap();
        assert_eq!(cookies.len(), 3);
        for c in &cookies {
            assert_eq!(m.open(c), Ok(keys()));
        }
        // Plain NTP is not NTS.
        assert_eq!(check_request(&header(), &m), Ok(None));
    }

    #[test]
    fn any_flipped_byte_of_a_request_is_refused() {
        let m = master();
        let req = request(&m, 1);
        for i in 0..req.len() {
            for bit in [0x01, 0x80] {
                let mut bad = req.clone();
                bad[i] ^= bit;
                assert!(!matches!(check_request(&bad, &m), Ok(Some(_))), "byte {i} ^ {bit:#x} passed");
            }
        }
    }

    #[test]
    fn a_tampered_or_foreign_reply_is_refused_by_the_client() {
        let m = master();
        let req = request(&m, 0);
        let got = check_request(&req, &m).unwrap().unwrap();
        let reply = NtsReply::new(&got, &m).seal(&header());
        assert_eq!(check_reply(&reply, &[9; 32], &keys().s2c), Err(NtsReplyError::UnknownUid), "another request's");
        assert_eq!(check_reply(&reply, &[3; 32], &[0; 32]), Err(NtsReplyError::Authenticator));
        for i in 0..reply.len() {
            let mut bad = reply.clone();
            bad[i] ^= 0x10;
            assert!(check_reply(&bad, &[3; 32], &keys().s2c).is_err(), "byte {i} flipped passed");
        }
        assert_eq!(check_reply(&header(), &[3; 32], &keys().s2c), Err(NtsReplyError::UnknownUid), "plain NTP");
        let mut kiss = header();
        kiss[1] = 0;
        kiss[12..16].copy_from_slice(b"NTSN");
        assert_eq!(check_reply(&nak(&kiss, &[3; 32]), &[3; 32], &keys().s2c), Err(NtsReplyError::Nak));
        assert_eq!(check_reply(&nak(&kiss, &[8; 32]), &[3; 32], &keys().s2c), Err(NtsReplyError::UnknownUid), "a NAK for another");
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let m = master();
        let why = |bytes: &[u8]| check_request(bytes, &m).unwrap_err().why;
        // A foreign cookie (another server's key), a truncated one, and one under a rotated-out key.
        let foreign = MasterKeys::new(1, [6; 32], 3, 1).cookie(&keys());
        let mk = |cookie: &[u8]| client_request(&header(), &[3; 32], cookie, 0, &keys().c2s, &[4; 16]);
        assert_eq!(why(&mk(&foreign)), NtsRefusal::Cookie(super::super::CookieError::Forged));
        assert_eq!(why(&mk(&foreign[..96])), NtsRefusal::Cookie(super::super::CookieError::BadLength(96)));
        let old = m.cookie(&keys());
        for k in 0..3 {
            m.rotate([k; 32]);
        }
        assert_eq!(why(&mk(&old)), NtsRefusal::Cookie(super::super::CookieError::UnknownKey(1)));
        let refused = check_request(&mk(&old), &m).unwrap_err();
        assert_eq!(refused.uid, Some(vec![3; 32]), "a NAK can echo it");
        // The authenticator under another key.
        let cookie = m.cookie(&keys());
        let wrong = client_request(&header(), &[3; 32], &cookie, 0, &[0; 32], &[4; 16]);
        assert_eq!(why(&wrong), NtsRefusal::Authenticator);
        // Layout: no unique identifier, two cookies, nothing authenticating.
        let mut no_uid = header().to_vec();
        push_field(&mut no_uid, COOKIE, &cookie);
        push_authenticator(&mut no_uid, &keys().c2s, &[4; 16], &[]);
        assert!(matches!(why(&no_uid), NtsRefusal::Malformed(_)));
        let mut two = header().to_vec();
        push_field(&mut two, UNIQUE_IDENTIFIER, &[3; 32]);
        push_field(&mut two, COOKIE, &cookie);
        push_field(&mut two, COOKIE, &cookie);
        push_authenticator(&mut two, &keys().c2s, &[4; 16], &[]);
        assert_eq!(why(&two), NtsRefusal::Malformed("not exactly one cookie"));
        let mut bare = header().to_vec();
        push_field(&mut bare, UNIQUE_IDENTIFIER, &[3; 32]);
        push_field(&mut bare, COOKIE, &cookie);
        assert_eq!(why(&bare), NtsRefusal::Malformed("not exactly one authenticator"));
        // An authenticator whose nonce length claims more than the field holds.
        let mut liar = request(&m, 0);
        let at = liar.len() - 36;
        liar[at..at + 2].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(why(&liar), NtsRefusal::Malformed("an authenticator whose lengths do not fit"));
        assert_eq!(NtsRefusal::Authenticator.kind(), "nts_bad_authenticator");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any tail after a header: refused or taken, never a panic, on both sides.
        #[test]
        fn any_datagram_is_checked_without_panic(tail in proptest::collection::vec(any::<u8>(), 0..400), heads in proptest::collection::vec((0u16..5, 0u16..40), 0..6)) {
            let master = MasterKeys::new(1, [5; 32], 3, 99);
            let mut d = vec![0x23u8; 48];
            d.extend_from_slice(&tail);
            // Plausible NTS heads at word boundaries, so the walk reaches the NTS checks.
            let mut at = 48;
            for (t, words) in heads {
                if at + 4 > d.len() { break; }
                let len = 16 + 4 * words;
                d[at..at + 2].copy_from_slice(&(t << 8 | 4).to_be_bytes());
                d[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
                at += usize::from(len);
            }
            let _ = check_request(&d, &master);
            let _ = check_reply(&d, &[0; 32], &[0; 32]);
        }

        /// Requests with any identifier, cookie count and nonce check and round-trip.
        #[test]
        fn valid_requests_check(uid in proptest::collection::vec(any::<u8>(), 32..64), placeholders in 0usize..7, nonce in any::<[u8; 16]>()) {
            let master = MasterKeys::new(1, [5; 32], 3, 99);
            let keys = Keys { c2s: [1; 32], s2c: [2; 32] };
            let req = client_request(&[0x23; 48], &uid, &master.cookie(&keys), placeholders, &keys.c2s, &nonce);
            let got = check_request(&req, &master).unwrap().unwrap();
            prop_assert_eq!(got.placeholders, placeholders);
            let reply = NtsReply::new(&got, &master).seal(&[0x24; 48]);
            prop_assert!(reply.len() <= req.len(), "a reply of {} bytes to a request of {}", reply.len(), req.len());
            let padded = {
                let mut p = uid.clone();
                p.resize(uid.len().div_ceil(4) * 4, 0);
                p
            };
            prop_assert_eq!(check_reply(&reply, &padded, &keys.s2c).map(|c| c.len()), Ok(placeholders + 1));
        }
    }
}
