//! A Cristian device's metrics: each sync's offset, error bound and round trip, or why it failed
//! (recorded through [`crate::observe`], which names and describes them).

use super::{SyncError, SyncReport};

/// Every outcome a sync is counted by.
const OUTCOMES: [&str; 4] = ["ok", "unreachable", "clock_refused", "bad_answer"];

/// Exports `device`'s sync counts at 0 for every outcome (at its start).
pub fn start(device: &str) {
    crate::observe::sync_outcomes(device, &OUTCOMES);
}

/// Records one sync of `device`: its offset, bound and round trip, or its failure.
pub fn record_sync(device: &str, result: Result<&SyncReport, &SyncError>) {
    match result {
        Ok(r) => crate::observe::sync_done(device, r.offset_us, r.error_bound_us, r.rtt_us),
        Err(SyncError::Rpc(_)) => crate::observe::sync_outcome(device, OUTCOMES[1]),
        Err(SyncError::Clock(_)) => crate::observe::sync_outcome(device, OUTCOMES[2]),
        Err(_) => crate::observe::sync_outcome(device, OUTCOMES[3]),
    }
}
