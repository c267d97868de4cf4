//! NTS cookies: a server's way to keep no state per client (RFC 8915 §6). A cookie is the id of the
//! master key that sealed it (4 bytes), a nonce (16), then the two session keys sealed under that master
//! key with the id as associated data (64 + a 16-byte tag): 100 bytes, as chrony's. The server rotates
//! its master key (the I/O layer brings the new random key, e.g. every hour) and keeps the last few, so
//! cookies made a little before a rotation still open.

use std::sync::RwLock;

use super::{KEY_LEN, Key, Keys, NONCE_LEN, Nonces, TAG_LEN, open, seal};

/// A cookie's length.
pub const COOKIE_LEN: usize = 4 + NONCE_LEN + 2 * KEY_LEN + TAG_LEN;
/// Master keys kept by default: the current one and two before it.
pub const KEPT_KEYS: usize = 3;

/// Why a cookie does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not [`COOKIE_LEN`] bytes.
    #[error("a cookie of {0} bytes, not {COOKIE_LEN}")]
    BadLength(usize),
    /// Sealed under a key this server does not have (rotated out, or never its own).
    #[error("a cookie under unknown master key {0}")]
    UnknownKey(u32),
    /// The tag does not check: forged or damaged.
    #[error("a cookie that does not authenticate")]
    Forged,
}

/// The master keys a server seals cookies under: the newest seals, any kept one opens. Shared between
/// the NTS-KE listener (which hands cookies out) and the NTP server (which opens them and hands out
/// more); `&self` everywhere.
#[derive(Debug)]
pub struct MasterKeys {
    /// (id, key), newest first.
    keys: RwLock<Vec<(u32, Key)>>,
    keep: usize,
    nonces: Nonces,
}

impl MasterKeys {
    /// Starts with `key` under id `id`; keeps `keep` keys (at least 1); nonces from `nonce_seed`.
    pub fn new(id: u32, key: Key, keep: usize, nonce_seed: u128) -> Self {
        Self { keys: RwLock::new(vec![(id, key)]), keep: keep.max(1), nonces: Nonces::new(nonce_seed) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<(u32, Key)>> {
        // A poisoned lock only means a writer panicked between two plain assignments: the data are whole.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `key` the newest (its id the next after the current one's) and forgets the oldest past the
    /// number kept. Returns the new id.
    pub fn rotate(&self, key: Key) -> u32 {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let id = keys.first().map_or(0, |(id, _)| id.wrapping_add(1));
        keys.insert(0, (id, key));
        keys.truncate(self.keep);
        id
    }

    /// The id of the key that seals now.
    pub fn current_id(&self) -> u32 {
        self.read().first().map_or(0, |(id, _)| *id)
    }

    /// A nonce for any sealing (cookies and replies share the sequence).
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        self.nonces.next()
    }

    /// A new cookie holding `keys`, under the newest master key.
    pub fn cookie(&self, keys: &Keys) -> Vec<u8> {
        let (id, master) = self.read()[0];
        let id = id.to_be_bytes();
        let nonce = self.nonce();
        let mut plain = [0u8; 2 * KEY_LEN];
        plain[..KEY_LEN].copy_from_slice(&keys.c2s);
        plain[KEY_LEN..].copy_from_slice(&keys.s2c);
        let mut out = Vec::with_capacity(COOKIE_LEN);
        out.extend_from_slice(&id);
        out.extend_from_slice(&nonce);
        out.extend(seal(&master, &id, &nonce, &plain));
        out
    }

    /// The keys in `cookie`, if one of the kept master keys sealed it.
    pub fn open(&self, cookie: &[u8]) -> Result<Keys, CookieError> {
        if cookie.len() != COOKIE_LEN {
            return Err(CookieError::BadLength(cookie.len()));
        }
        let (id, rest) = cookie.split_at(4);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let master = self.read().iter().find(|(i, _)| *i == key_id).map(|(_, k)| *k).ok_or(CookieError::UnknownKey(key_id))?;
        let plain = open(&master, id, nonce, sealed).ok_or(CookieError::Forged)?;
        let mut keys = Keys { c2s: [0; KEY_LEN], s2c: [0; KEY_LEN] };
        if plain.len() != 2 * KEY_LEN {
            return Err(CookieError::Forged);
        }
        keys.c2s.copy_from_slice(&plain[..KEY_LEN]);
        keys.s2c.copy_from_slice(&plain[KEY_LEN..]);
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys { c2s: [1; 32], s2c: [2; 32] }
    }

    #[test]
    fn cookies_open_under_kept_keys_only() {
        let master = MasterKeys::new(7, [9; 32], 2, 42);
        let first = master.cookie(&keys());
        assert_eq!(first.len(), COOKIE_LEN);
        assert_eq!(first.len(), 100, "chrony's size");
        assert_eq!(master.open(&first), Ok(keys()));
        // Two cookies of the same keys differ (their nonces do).
        assert_ne!(master.cookie(&keys()), first);
        assert_eq!(master.rotate([10; 32]), 8);
        assert_eq!(master.current_id(), 8);
        assert_eq!(master.open(&first), Ok(keys()), "the previous key still opens");
        let second = master.cookie(&keys());
        assert_eq!(&second[..4], &8u32.to_be_bytes());
        master.rotate([11; 32]);
        assert_eq!(master.open(&first), Err(CookieError::UnknownKey(7)), "rotated out");
        assert_eq!(master.open(&second), Ok(keys()));
    }

    #[test]
    fn foreign_truncated_and_tampered_cookies_do_not_open() {
        let master = MasterKeys::new(1, [9; 32], 3, 1);
        let other = MasterKeys::new(1, [8; 32], 3, 1);
        let cookie = master.cookie(&keys());
        assert_eq!(other.open(&cookie), Err(CookieError::Forged), "another server's key of the same id");
        assert_eq!(master.open(&cookie[..99]), Err(CookieError::BadLength(99)));
        assert_eq!(master.open(&[]), Err(CookieError::BadLength(0)));
        for i in 0..COOKIE_LEN {
            let mut bad = cookie.clone();
            bad[i] ^= 0x40;
            assert!(master.open(&bad).is_err(), "byte {i} flipped");
        }
    }
}
