//! The generated gRPC code for `proto/`, and conversions between protobuf timestamps and nanoseconds.

/// `synclab.time.v1`: Cristian's time service and the classroom baseline.
pub mod time {
    tonic::include_proto!("synclab.time.v1");
}

/// `synclab.clock.v1`: the ground-truth clock reading every node serves.
pub mod clock {
    tonic::include_proto!("synclab.clock.v1");
}

/// `synclab.berkeley.v1`: the Berkeley master and slave services.
pub mod berkeley {
    tonic::include_proto!("synclab.berkeley.v1");
}

/// `synclab.election.v1`: the Bully and Ring election service.
pub mod election {
    tonic::include_proto!("synclab.election.v1");
}

/// `synclab.lab.v1`: fault injection, served only with `--lab`.
pub mod lab {
    tonic::include_proto!("synclab.lab.v1");
}

/// The encoded descriptor set of every synclab proto (with comments), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/synclab_descriptor.bin"));

/// A timestamp outside what synclab accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// A required timestamp was not set.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// `nanos` outside [0, 1e9).
    #[error("{field} has nanos = {nanos}, outside [0, 999999999]")]
    BadNanos { field: &'static str, nanos: i32 },
    /// Seconds before 1970 or after 2262 (what fits in i64 nanoseconds).
    #[error("{field} = {seconds} s is outside 1970..2262")]
    OutOfRange { field: &'static str, seconds: i64 },
}

/// Latest second whose nanoseconds still fit in an `i64` (year 2262).
const MAX_SECONDS: i64 = i64::MAX / 1_000_000_000 - 1;

/// A node id from the wire (an election member, a link's peer): positive, or a clear status naming
/// `field`.
pub fn to_id(id: i64, field: &str) -> Result<synclab_core::election::NodeId, tonic::Status> {
    if id <= 0 {
        return Err(tonic::Status::invalid_argument(format!("{field} = {id} is not a node id (ids are positive)")));
    }
    Ok(id as synclab_core::election::NodeId)
}

/// Converts a protobuf timestamp to nanoseconds since the Unix epoch, refusing malformed or absurd ones.
pub fn timestamp_to_nanos(ts: Option<&prost_types::Timestamp>, field: &'static str) -> Result<i64, TimestampError> {
    let ts = ts.ok_or(TimestampError::Missing(field))?;
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(TimestampError::BadNanos { field, nanos: ts.nanos });
    }
    if !(0..=MAX_SECONDS).contains(&ts.seconds) {
        return Err(TimestampError::OutOfRange { field, seconds: ts.seconds });
    }
    Ok(ts.seconds * 1_000_000_000 + i64::from(ts.nanos))
}

/// Converts nanoseconds since the Unix epoch to a protobuf timestamp.
pub fn nanos_to_timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: nanos.div_euclid(1_000_000_000), nanos: nanos.rem_euclid(1_000_000_000) as i32 }
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 with nanoseconds, e.g. `2026-11-26T07:43:30.123456789Z`.
pub fn format_rfc3339(nanos: i64) -> String {
    if nanos < 0 {
        return format!("{nanos}ns before 1970");
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    #[test]
    fn round_trips_through_timestamps() {
        for nanos in [0, 1, 999_999_999, 1_764_143_010_123_456_789, MAX_SECONDS * 1_000_000_000] {
            let ts = nanos_to_timestamp(nanos);
            assert_eq!(timestamp_to_nanos(Some(&ts), "t"), Ok(nanos));
        }
    }

    #[test]
    fn refuses_malformed_timestamps() {
        let cases = [
            (Timestamp { seconds: 1, nanos: 1_000_000_000 }, TimestampError::BadNanos { field: "t", nanos: 1_000_000_000 }),
            (Timestamp { seconds: 1, nanos: -1 }, TimestampError::BadNanos { field: "t", nanos: -1 }),
            (Timestamp { seconds: -1, nanos: 0 }, TimestampError::OutOfRange { field: "t", seconds: -1 }),
            (Timestamp { seconds: i64::MAX, nanos: 0 }, TimestampError::OutOfRange { field: "t", seconds: i64::MAX }),
        ];
        for (ts, want) in cases {
            assert_eq!(timestamp_to_nanos(Some(&ts), "t"), Err(want));
        }
        assert_eq!(timestamp_to_nanos(None, "t"), Err(TimestampError::Missing("t")));
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(format_rfc3339(1_764_143_010_123_456_789), "2025-11-26T07:43:30.123456789Z");
    }
}
