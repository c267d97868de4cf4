//! Availability and churn as one node sees them, for its metrics and its `GetState`: the fraction of a
//! recent window during which the node had one coordinator (it followed a coordinator it knew, or it
//! was the coordinator), and how many times the coordinator it knew changed.
//!
//! Both are read from the node's own state alone: a follower of a coordinator that has just died
//! counts as served until it notices (its suspicion timeout, or the broken line), and a node cut off
//! with the coordinator it knows still counts as served. The group's availability in the lab's sense
//! (every group of nodes that can reach each other follows exactly one live coordinator,
//! `synclab_core::lab::stats`) needs every node's view; a node's figure is its share of it.

use std::collections::VecDeque;
use std::time::Duration;

use super::{NodeId, Role, Term};

/// The window [`Availability::fraction`] looks back over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Spans kept at most: past it the oldest are forgotten (a node flapping thousands of times a minute
/// then reads as less available than it was).
const MAX_SPANS: usize = 4096;

/// A node's record of when it had one coordinator.
#[derive(Debug, Clone)]
pub struct Availability {
    /// When the record began (the node's start).
    start: Duration,
    /// Closed spans with a coordinator, oldest first, ending within the window.
    spans: VecDeque<(Duration, Duration)>,
    /// The open span: since when it has had a coordinator, if it has one now.
    since: Option<Duration>,
    /// The (coordinator, term) it follows or rules now, or last did.
    reign: Option<(NodeId, Term)>,
    changes: u64,
}

impl Availability {
    /// A record that begins at `now` with no coordinator.
    pub fn new(now: Duration) -> Self {
        Self { start: now, spans: VecDeque::new(), since: None, reign: None, changes: 0 }
    }

    /// The node's state at `now` (call it whenever role, term or coordinator may have changed).
    pub fn observe(&mut self, now: Duration, role: Role, term: Term, coordinator: Option<NodeId>) {
        let reign = match role {
            Role::Follower | Role::Coordinator => coordinator.map(|c| (c, term)),
            Role::Candidate | Role::Waiting => None,
        };
        match (reign, self.since) {
            (Some(_), None) => self.since = Some(now),
            (None, Some(since)) => {
                self.since = None;
                self.spans.push_back((since, now));
                if self.spans.len() > MAX_SPANS {
                    self.spans.pop_front();
                }
            }
            _ => {}
        }
        if let Some(reign) = reign {
            if self.reign.is_some_and(|r| r != reign) {
                self.changes += 1;
            }
            self.reign = Some(reign);
        }
        let from = now.saturating_sub(WINDOW);
        while self.spans.front().is_some_and(|&(_, end)| end <= from) {
            self.spans.pop_front();
        }
    }

    /// The fraction of the last [`WINDOW`] (of the time since the start, when shorter) during which
    /// the node had a coordinator, 0 to 1 (0 before any time has passed).
    pub fn fraction(&self, now: Duration) -> f64 {
        let from = now.saturating_sub(WINDOW).max(self.start);
        let span = now.saturating_sub(from);
        if span.is_zero() {
            return 0.0;
        }
        let open = self.since.map(|s| (s, now));
        let served: Duration = self.spans.iter().copied().chain(open).map(|(a, b)| b.min(now).saturating_sub(a.max(from))).sum();
        (served.as_secs_f64() / span.as_secs_f64()).clamp(0.0, 1.0)
    }

    /// How many times the coordinator the node knew changed: each (coordinator, term) it followed or
    /// ruled after the first, counted when it took it up (losing a coordinator and finding the same
    /// one in the same term again is no change).
    pub fn leader_changes(&self) -> u64 {
        self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    /// Pins the fraction over the window: 10 s without a coordinator at the start, then 50 s with one,
    /// reads 50/60; a minute later the gap has left the window.
    #[test]
    fn the_fraction_counts_the_time_with_a_coordinator_in_the_last_minute() {
        let mut a = Availability::new(s(0.0));
        a.observe(s(0.0), Role::Candidate, 1, None);
        assert_eq!(a.fraction(s(0.0)), 0.0);
        a.observe(s(10.0), Role::Follower, 1, Some(5));
        assert!((a.fraction(s(60.0)) - 50.0 / 60.0).abs() < 1e-9, "{}", a.fraction(s(60.0)));
        assert!((a.fraction(s(20.0)) - 0.5).abs() < 1e-9);
        a.observe(s(70.0), Role::Candidate, 1, None);
        a.observe(s(76.0), Role::Coordinator, 2, Some(4));
        // Window 30..90: 40 s + 14 s served.
        assert!((a.fraction(s(90.0)) - 54.0 / 60.0).abs() < 1e-9, "{}", a.fraction(s(90.0)));
        assert_eq!(a.fraction(s(200.0)), 1.0);
    }

    /// Pins what a leader change is: a new (coordinator, term), not the first one, and not the same one
    /// found again after a gap.
    #[test]
    fn a_leader_change_is_a_new_coordinator_or_term_after_the_first() {
        let mut a = Availability::new(s(0.0));
        a.observe(s(0.1), Role::Follower, 1, Some(5));
        assert_eq!(a.leader_changes(), 0);
        a.observe(s(1.0), Role::Candidate, 1, None);
        a.observe(s(1.1), Role::Follower, 1, Some(5));
        assert_eq!(a.leader_changes(), 0, "the same reign found again");
        a.observe(s(2.0), Role::Follower, 2, Some(5));
        a.observe(s(3.0), Role::Coordinator, 3, Some(4));
        assert_eq!(a.leader_changes(), 2);
    }
}
