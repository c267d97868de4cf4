//! A Cristian device's metrics: each sync's offset, error bound and round trip, or why it failed
//! (recorded through [`crate::observe`], which names and describes them).

use super::{SyncError, SyncReport};

/// Records one sync of `device`: its offset, bound and round trip, or its failure.
pub fn record_sync(device: &str, result: Result<&SyncReport, &SyncError>) {
    match result {
        Ok(r) => crate::observe::sync_done(device, r.offset_us, r.error_bound_us, r.rtt_us),
        Err(SyncError::Rpc(_)) => crate::observe::sync_outcome(device, "unreachable"),
        Err(SyncError::Clock(_)) => crate::observe::sync_outcome(device, "clock_refused"),
        Err(_) => crate::observe::sync_outcome(device, "bad_answer"),
    }
}
