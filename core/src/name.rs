//! Names of clocks, devices and Berkeley members, and the addresses members give: one rule each, used by
//! every flag and every RPC that takes one.

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No characters at all.
    #[error("a name cannot be empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("a name is at most {MAX_NAME_LEN} characters; this one has {0}")]
    TooLong(usize),
    /// A character outside letters, digits, '-', '_' and '.'.
    #[error("names use letters, digits, '-', '_' or '.'; {0:?} is none of these")]
    BadCharacter(char),
}

/// Checks a name: 1 to 64 ASCII letters, digits, '-', '_' or '.'.
///
/// ```
/// use synclab_core::name::{check_name, NameError};
/// assert_eq!(check_name("KMC"), Ok(()));
/// assert_eq!(check_name("a b"), Err(NameError::BadCharacter(' ')));
/// ```
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c))) {
        Some(c) => Err(NameError::BadCharacter(c)),
        None => Ok(()),
    }
}

/// The longest address accepted, in bytes (a DNS name is at most 253).
pub const MAX_ADDRESS_LEN: usize = 260;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Longer than [`MAX_ADDRESS_LEN`].
    #[error("an address is at most {MAX_ADDRESS_LEN} characters; this one has {0}")]
    TooLong(usize),
    /// Not `HOST:PORT`.
    #[error("an address is HOST:PORT (e.g. kmc:50053 or [::1]:50053)")]
    NotHostPort,
    /// The host part is not a host name or an IP address.
    #[error("the host must be a name of letters, digits, '-' and '.', or an IP address")]
    BadHost,
    /// The port is not 1 to 65535.
    #[error("the port must be a number from 1 to 65535")]
    BadPort,
}

/// Checks an address a member gives for others to dial: `HOST:PORT`, the host a DNS name or an IP
/// address (IPv6 in brackets), the port 1 to 65535, at most [`MAX_ADDRESS_LEN`] characters.
///
/// ```
/// use synclab_core::name::check_address;
/// assert!(check_address("kmc:50053").is_ok());
/// assert!(check_address("[::1]:50053").is_ok());
/// assert!(check_address("kmc").is_err());
/// ```
pub fn check_address(address: &str) -> Result<(), AddressError> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong(address.len()));
    }
    let (host, port) = address.rsplit_once(':').ok_or(AddressError::NotHostPort)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err(AddressError::BadPort),
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if host_ok { Ok(()) } else { Err(AddressError::BadHost) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        for good in ["kmc:50053", "127.0.0.1:1", "[::1]:50053", "node-1.lab.example:65535"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        let cases = [
            ("kmc", AddressError::NotHostPort),
            ("kmc:0", AddressError::BadPort),
            ("kmc:65536", AddressError::BadPort),
            ("kmc:+5", AddressError::BadPort),
            (":50053", AddressError::BadHost),
            ("a b:1", AddressError::BadHost),
            ("-kmc:1", AddressError::BadHost),
            ("[zz]:1", AddressError::BadHost),
            ("::1:5", AddressError::BadHost),
        ];
        for (bad, want) in cases {
            assert_eq!(check_address(bad), Err(want), "{bad}");
        }
        assert_eq!(check_address(&format!("{}:1", "a".repeat(300))), Err(AddressError::TooLong(302)));
    }

    #[test]
    fn names_follow_one_rule() {
        for good in ["KMC", "node-1", "a_b.c", &"x".repeat(64)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(&"x".repeat(65)), Err(NameError::TooLong(65)));
        assert_eq!(check_name("KMC\n"), Err(NameError::BadCharacter('\n')));
        assert_eq!(check_name("é"), Err(NameError::BadCharacter('é')));
    }
}
