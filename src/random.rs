//! Random values from the operating system, for secrets and nonces.

/// A random 64-bit value (e.g. a master's epoch). Falls back to the clock and process id, mixed, if
/// the operating system has no randomness to give (it always has on the platforms synclab runs on).
pub fn nonce() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let mixed = crate::clock::host_now() as u64 ^ (u64::from(std::process::id()) << 32);
        mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    })
}

/// A random secret of 32 bytes (e.g. a Berkeley slave's claim).
pub fn secret() -> Result<[u8; 32], getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
