//! A budget of log lines, so that no flood can fill a disk: each place in the code that logs at INFO or
//! below (a callsite) may write [`LINES`] lines per [`PERIOD`]; past that one line says its lines are
//! left out for the rest of the period, they are counted, not written, and its next line after the
//! period is preceded by one summary of how many were left out. So a flood of anything the services
//! accept (e.g. plausible forged heartbeats in plaintext, each an election) costs each callsite at most
//! `LINES + 2` lines per period, whatever its rate. Warnings and
//! errors are not budgeted here (refusals summarize themselves: `telemetry::Refusals`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::lock::lock;

/// Lines each callsite may write per period.
pub const LINES: u32 = 5;
/// The period.
pub const PERIOD: Duration = Duration::from_secs(10);

/// The target of the summaries (never budgeted).
const TARGET: &str = "synclab::log_budget";

#[derive(Debug)]
struct Spent {
    since: Instant,
    written: u32,
    left_out: u64,
}

/// What one callsite may still write.
#[derive(Debug, Default)]
pub struct Budget {
    spent: Mutex<HashMap<Identifier, Spent>>,
}

/// Whether a line may be written, and how many of its callsite's lines were left out before it (to
/// summarize first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `left_out` lines of this callsite were not written since its last period began.
    Write { left_out: u64 },
    /// Leave it out; `first` if it is the first left out this period (to say so).
    LeaveOut { first: bool },
}

impl Budget {
    /// Accounts for one line of `callsite` at `now`.
    pub fn spend(&self, callsite: Identifier, now: Instant) -> Verdict {
        let mut spent = lock(&self.spent);
        let entry = spent.entry(callsite).or_insert(Spent { since: now, written: 0, left_out: 0 });
        if now.saturating_duration_since(entry.since) >= PERIOD {
            let left_out = entry.left_out;
            *entry = Spent { since: now, written: 1, left_out: 0 };
            return Verdict::Write { left_out };
        }
        if entry.written < LINES {
            entry.written += 1;
            Verdict::Write { left_out: 0 }
        } else {
            entry.left_out += 1;
            Verdict::LeaveOut { first: entry.left_out == 1 }
        }
    }
}

/// The layer: put it under the writing layer, so it decides which events reach it.
#[derive(Debug, Default)]
pub struct BudgetLayer {
    budget: Budget,
}

impl<S: Subscriber> Layer<S> for BudgetLayer {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() <= Level::WARN || meta.target() == TARGET {
            return true;
        }
        match self.budget.spend(meta.callsite(), Instant::now()) {
            Verdict::LeaveOut { first: false } => false,
            Verdict::LeaveOut { first: true } => {
                let (target, message) = (meta.target(), meta.name());
                tracing::info!(target: TARGET, of = target, at = message, period = ?PERIOD, "log lines left out from here to the end of the period (over the budget of {LINES} per period)");
                false
            }
            Verdict::Write { left_out: 0 } => true,
            Verdict::Write { left_out } => {
                let (target, message) = (meta.target(), meta.name());
                tracing::info!(target: TARGET, left_out, of = target, at = message, period = ?PERIOD, "log lines left out (over the budget of {LINES} per period)");
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callsite_writes_its_budget_then_one_summary_per_period() {
        struct A;
        impl tracing::callsite::Callsite for A {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unimplemented!()
            }
        }
        static SITE: A = A;
        let budget = Budget::default();
        let t0 = Instant::now();
        let id = || Identifier(&SITE);
        let verdicts: Vec<Verdict> = (0..1000).map(|i| budget.spend(id(), t0 + Duration::from_millis(i))).collect();
        assert_eq!(verdicts.iter().filter(|v| matches!(v, Verdict::Write { .. })).count(), LINES as usize);
        assert_eq!(verdicts.iter().filter(|v| matches!(v, Verdict::LeaveOut { first: true })).count(), 1);
        // The next period: written, with the 995 left out to summarize first.
        assert_eq!(budget.spend(id(), t0 + PERIOD), Verdict::Write { left_out: 1000 - u64::from(LINES) });
        assert_eq!(budget.spend(id(), t0 + PERIOD), Verdict::Write { left_out: 0 });
    }
}
