//! Names of clocks, devices and Berkeley members: one rule, used by every flag and every RPC that takes one.

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

#[cfg(test)]
mod tests {
    use super::*;

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
