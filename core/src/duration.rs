//! Signed durations as users type them: `+2.5s`, `-300ms`, `250us`, `1m`, `0`.
//!
//! Clock offsets are signed, so `std::time::Duration` (and the crates built on it) cannot hold them;
//! everything here is in whole nanoseconds as `i64`.

use std::time::Duration;

/// Why a duration could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text was empty.
    #[error("empty duration; expected e.g. +2.5s, -300ms, 250us")]
    Empty,
    /// The number part was not a decimal number.
    #[error("'{0}' is not a number; expected e.g. +2.5s, -300ms, 250us")]
    BadNumber(String),
    /// The unit was not one of the known ones.
    #[error("unknown unit '{0}'; use ns, us, ms, s, m or h")]
    BadUnit(String),
    /// A number without a unit (other than zero).
    #[error("'{0}' has no unit; use ns, us, ms, s, m or h (e.g. {0}s)")]
    MissingUnit(String),
    /// The value does not fit in ±292 years of nanoseconds.
    #[error("'{0}' is too large")]
    TooLarge(String),
    /// A negative value where only positive ones make sense (intervals, timeouts).
    #[error("'{0}' must be positive")]
    NotPositive(String),
}

const UNITS: &[(&str, f64)] = &[("ns", 1.0), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)];

/// Parses a signed duration into nanoseconds.
///
/// ```
/// use synclab_core::duration::parse_signed_nanos;
/// assert_eq!(parse_signed_nanos("+2.5s"), Ok(2_500_000_000));
/// assert_eq!(parse_signed_nanos("-300ms"), Ok(-300_000_000));
/// assert_eq!(parse_signed_nanos("0"), Ok(0));
/// ```
pub fn parse_signed_nanos(text: &str) -> Result<i64, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '+' || c == '-') && i == 0)))
        .map_or(s.len(), |(i, _)| i);
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| DurationError::BadNumber(s.to_string()))?;
    let scale = if unit.is_empty() {
        if value == 0.0 {
            return Ok(0);
        }
        return Err(DurationError::MissingUnit(s.to_string()));
    } else {
        UNITS.iter().find(|(name, _)| *name == unit).map(|&(_, scale)| scale).ok_or_else(|| DurationError::BadUnit(unit.to_string()))?
    };
    let nanos = (value * scale).round();
    if nanos.abs() >= i64::MAX as f64 {
        return Err(DurationError::TooLarge(s.to_string()));
    }
    Ok(nanos as i64)
}

/// Parses a strictly positive duration (an interval or a timeout).
pub fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    let nanos = parse_signed_nanos(text)?;
    if nanos <= 0 {
        return Err(DurationError::NotPositive(text.trim().to_string()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats nanoseconds for people, with a sign and a unit that keeps 3–4 significant digits:
/// `+2.500012s`, `-310.4ms`, `+3.1µs`, `0ns`.
pub fn format_nanos(nanos: f64) -> String {
    let sign = if nanos > 0.0 {
        "+"
    } else if nanos < 0.0 {
        "-"
    } else {
        return "0ns".to_string();
    };
    let a = nanos.abs();
    if a >= 1e9 {
        format!("{sign}{:.6}s", a / 1e9)
    } else if a >= 1e6 {
        format!("{sign}{:.3}ms", a / 1e6)
    } else if a >= 1e3 {
        format!("{sign}{:.1}µs", a / 1e3)
    } else {
        format!("{sign}{a:.0}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_type() {
        let cases: &[(&str, i64)] = &[
            ("+2.5s", 2_500_000_000),
            ("2.5s", 2_500_000_000),
            ("-300ms", -300_000_000),
            ("250us", 250_000),
            ("250µs", 250_000),
            ("-42ns", -42),
            ("1m", 60_000_000_000),
            ("-1.5h", -5_400_000_000_000),
            ("0", 0),
            ("-0", 0),
            ("+0s", 0),
            (" 7ms ", 7_000_000),
            (".5s", 500_000_000),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_signed_nanos(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert_eq!(parse_signed_nanos(""), Err(DurationError::Empty));
        assert_eq!(
            parse_signed_nanos("abc"),
            Err(DurationError::BadNumber("abc".into())),
            "what was given is quoted, not the empty number before it"
        );
        assert_eq!(parse_signed_nanos("5"), Err(DurationError::MissingUnit("5".into())));
        assert_eq!(parse_signed_nanos("5 parsecs"), Err(DurationError::BadUnit(" parsecs".into())));
        assert_eq!(parse_signed_nanos("5d"), Err(DurationError::BadUnit("d".into())));
        assert_eq!(parse_signed_nanos("1.2.3s"), Err(DurationError::BadNumber("1.2.3s".into())));
        assert_eq!(parse_signed_nanos("+-5s"), Err(DurationError::BadNumber("+-5s".into())));
        assert_eq!(parse_signed_nanos("1e400h"), Err(DurationError::BadUnit("e400h".into())));
        assert_eq!(parse_signed_nanos("999999999h"), Err(DurationError::TooLarge("999999999h".into())));
    }

    #[test]
    fn positive_durations_refuse_zero_and_negatives() {
        assert_eq!(parse_positive("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_positive("0"), Err(DurationError::NotPositive("0".into())));
        assert_eq!(parse_positive("-1s"), Err(DurationError::NotPositive("-1s".into())));
    }

    #[test]
    fn formats_with_a_readable_unit() {
        assert_eq!(format_nanos(2_500_012_000.0), "+2.500012s");
        assert_eq!(format_nanos(-310_400_000.0), "-310.400ms");
        assert_eq!(format_nanos(3_140.0), "+3.1µs");
        assert_eq!(format_nanos(-12.0), "-12ns");
        assert_eq!(format_nanos(0.0), "0ns");
    }
}
