//! Network Time Security for NTPv4 (RFC 8915), without I/O.
//!
//! - [`ke`]: the NTS Key Establishment protocol's records (what goes over TLS on port 4460), their strict
//!   parsing and encoding, the server's answer to a request and the client's reading of the answer.
//! - [`cookie`]: the cookies a server hands out, the two session keys sealed under a master key it
//!   rotates (a key id in each cookie says which; older keys are kept a while), so it keeps no state per
//!   client.
//! - [`fields`]: the NTS extension fields of an NTP packet (unique identifier, cookie, cookie placeholder,
//!   authenticator and encrypted fields), the server's check of a request and sealing of a reply, and
//!   the client's request and check of a reply.
//!
//! One AEAD algorithm is spoken, the one RFC 8915 makes mandatory: AEAD_AES_SIV_CMAC_256 (RFC 5297,
//! AES-128 in SIV mode with a 256-bit key), through the `aes-siv` crate. The associated data come first
//! and the nonce last among the SIV headers, as RFC 5297's AEAD construction and chrony do. The TLS
//! session, the key export (`EXPORTER-network-time-security`, [`ke::exporter_context`]) and randomness
//! for keys are the I/O layer's.

pub mod cookie;
pub mod fields;
pub mod ke;

pub use cookie::{COOKIE_LEN, CookieError, KEPT_KEYS, MasterKeys};
pub use fields::{NtsRefusal, NtsReply, NtsReplyError, NtsRequest};
pub use ke::COOKIES_PER_RESPONSE;

use aes_siv::KeyInit as _;
use aes_siv::siv::Aes128Siv;

/// AEAD_AES_SIV_CMAC_256's number in IANA's AEAD registry.
pub const AEAD_AES_SIV_CMAC_256: u16 = 15;
/// Its key length, bytes.
pub const KEY_LEN: usize = 32;
/// The length of the nonces synclab makes (the least RFC 8915 allows for SIV).
pub const NONCE_LEN: usize = 16;
/// The tag SIV prepends to a ciphertext.
pub const TAG_LEN: usize = 16;

/// An AEAD_AES_SIV_CMAC_256 key.
pub type Key = [u8; KEY_LEN];

/// The two keys of an NTS association, exported from its NTS-KE session's TLS: the client's requests
/// are authenticated with `c2s`, the server's replies with `s2c`.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// Client to server.
    pub c2s: Key,
    /// Server to client.
    pub s2c: Key,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys { .. }")
    }
}

/// Encrypts and authenticates `plaintext` with `associated` data under `key` and `nonce`: the 16-byte
/// tag, then the ciphertext.
pub fn seal(key: &Key, associated: &[u8], nonce: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut siv = Aes128Siv::new(key.into());
    // Two headers, within the crate's limit; the plaintext may be empty: SIV never fails here.
    siv.encrypt([associated, nonce], plaintext).unwrap_or_default()
}

/// Checks and decrypts what [`seal`] made; `None` if it was not sealed under these key, data and nonce.
pub fn open(key: &Key, associated: &[u8], nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < TAG_LEN {
        return None;
    }
    let mut siv = Aes128Siv::new(key.into());
    siv.decrypt([associated, nonce], sealed).ok()
}

/// Unique nonces from a secret starting point: a 128-bit counter, never repeated in a process. SIV needs
/// no more (it stays secure if a nonce repeats; unique nonces keep equal plaintexts apart).
#[derive(Debug)]
pub struct Nonces {
    seed: u128,
    count: std::sync::atomic::AtomicU64,
}

impl Nonces {
    /// Nonces from `seed` (pass random bits).
    pub fn new(seed: u128) -> Self {
        Self { seed, count: std::sync::atomic::AtomicU64::new(0) }
    }

    /// The next nonce.
    pub fn next(&self) -> [u8; NONCE_LEN] {
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.seed.wrapping_add(n as u128).to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_open_only_with_the_same_key_data_and_nonce() {
        let (key, other) = ([7u8; 32], [8u8; 32]);
        let sealed = seal(&key, b"header", &[1; 16], b"cookies");
        assert_eq!(sealed.len(), TAG_LEN + 7);
        assert_eq!(open(&key, b"header", &[1; 16], &sealed).as_deref(), Some(&b"cookies"[..]));
        assert_eq!(open(&other, b"header", &[1; 16], &sealed), None);
        assert_eq!(open(&key, b"headeR", &[1; 16], &sealed), None);
        assert_eq!(open(&key, b"header", &[2; 16], &sealed), None);
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(open(&key, b"header", &[1; 16], &flipped), None);
        assert_eq!(open(&key, b"header", &[1; 16], &sealed[..15]), None);
        // An empty plaintext is a tag alone, and checks.
        let tag = seal(&key, b"h", &[1; 16], b"");
        assert_eq!(open(&key, b"h", &[1; 16], &tag), Some(vec![]));
    }

    /// RFC 5297's appendix A.2 vector (nonce-based AEAD, AES-SIV-CMAC-256), with one associated datum
    /// and the nonce as the last header: the construction chrony and ntpd-rs use.
    #[test]
    fn siv_matches_rfc_5297() {
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let key: Key = hex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff").try_into().unwrap();
        let ad = hex("00112233 44556677 8899aabb ccddeeff deaddada deaddada ffeeddcc bbaa9988 77665544 33221100");
        let nonce = hex("09f91102 9d74e35b d84156c5 635688c0");
        // A.2's vector uses a 32-byte key with a second associated datum; A.1's (deterministic) one is
        // checked here through the same call with the nonce left out.
        let mut siv = Aes128Siv::new((&key).into());
        let a1 =
            siv.encrypt([&hex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627")], &hex("11223344 55667788 99aabbcc ddee")).unwrap();
        assert_eq!(a1, hex("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c"));
        // And a sealed message opens under the same two headers in the same order only.
        let sealed = seal(&key, &ad, &nonce, b"x");
        assert!(open(&key, &ad, &nonce, &sealed).is_some());
        let mut swapped = Aes128Siv::new((&key).into());
        assert!(swapped.decrypt([&nonce[..], &ad[..]], &sealed).is_err());
    }

    #[test]
    fn nonces_do_not_repeat() {
        let n = Nonces::new(u128::MAX - 1);
        let (a, b, c) = (n.next(), n.next(), n.next());
        assert!(a != b && b != c && a != c);
    }
}
