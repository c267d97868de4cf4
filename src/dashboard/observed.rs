//! What the dashboard has seen: each clock's history, the syncs, rounds and nodes, who reigned when,
//! and how a change of agreement becomes a failover with its phases. The follower in `mod.rs` fills it;
//! the page's parts (`view.rs`) are drawn from it.

use std::collections::{BTreeMap, VecDeque};

use crate::proto::berkeley::Round;
use crate::proto::election::{NodeState, Role};

/// How much history the charts keep.
pub(super) const WINDOW_SECS: f64 = 300.0;
/// Rounds, syncs and failovers kept.
pub(super) const KEEP: usize = 30;
/// One clock's history.
#[derive(Debug, Default)]
pub(super) struct ClockTrack {
    pub(super) addr: String,
    /// (seconds since start, true offset in seconds).
    pub(super) offsets: VecDeque<(f64, f64)>,
    /// (seconds since start, error bound in seconds), for Cristian devices.
    pub(super) bounds: VecDeque<(f64, f64)>,
    pub(super) reachable: bool,
    pub(super) adjustments: u64,
}

/// A sync seen on a device: the devices' disagreement just before and after it.
#[derive(Debug, Clone)]
pub(super) struct SeenSync {
    pub(super) at: f64,
    pub(super) device: String,
    pub(super) before: f64,
    pub(super) after: f64,
}

/// One election node as last seen.
#[derive(Debug, Default, Clone)]
pub(super) struct NodeView {
    pub(super) addr: String,
    pub(super) state: Option<NodeState>,
    pub(super) reachable: bool,
    /// Host time (ns) the node last answered.
    pub(super) last_seen: Option<i64>,
}

/// Who was coordinator from when (seconds since start).
#[derive(Debug, Clone)]
pub(super) struct Reign {
    pub(super) from: f64,
    pub(super) coordinator: i64,
    pub(super) term: u64,
}

/// A change of coordinator, split into phases (ms) where the data allows.
#[derive(Debug, Clone)]
pub(super) struct Failover {
    pub(super) term: u64,
    pub(super) coordinator: i64,
    pub(super) reason: String,
    pub(super) detection_ms: Option<f64>,
    pub(super) election_ms: Option<f64>,
    pub(super) announcement_ms: Option<f64>,
    pub(super) messages: u64,
    pub(super) live: usize,
}

/// Everything the page shows.
#[derive(Debug, Default)]
pub(super) struct Observed {
    pub(super) clocks: BTreeMap<String, ClockTrack>,
    pub(super) order: Vec<String>,
    pub(super) devices: Vec<String>,
    pub(super) syncs: VecDeque<SeenSync>,
    pub(super) rounds: VecDeque<Round>,
    /// Each member ever left out of the average: (first round, last round, rounds), 64 names at most.
    pub(super) exclusions: BTreeMap<String, (u64, u64, u64)>,
    pub(super) master_reachable: bool,
    pub(super) nodes: Vec<NodeView>,
    pub(super) algorithm: String,
    pub(super) reigns: VecDeque<Reign>,
    pub(super) failovers: VecDeque<Failover>,
    /// Messages (all but heartbeats) each node had sent at the last agreement, by id.
    pub(super) messages_at_agreement: BTreeMap<i64, u64>,
}

/// The Cristian devices' true disagreement now: max − min of their latest offsets (s).
pub(super) fn disagreement(o: &Observed) -> Option<f64> {
    let offsets: Vec<f64> = o.devices.iter().filter_map(|d| o.clocks.get(d)?.offsets.back().map(|p| p.1)).collect();
    if offsets.len() < 2 {
        return None;
    }
    let max = offsets.iter().copied().fold(f64::MIN, f64::max);
    let min = offsets.iter().copied().fold(f64::MAX, f64::min);
    Some(max - min)
}

/// The messages (heartbeats left out) each reachable node has sent, by id.
pub(super) fn messages_sent(o: &Observed) -> BTreeMap<i64, u64> {
    o.nodes
        .iter()
        .filter(|n| n.reachable)
        .filter_map(|n| n.state.as_ref())
        .map(|s| (s.id, s.messages.iter().filter(|m| !m.kind.contains("Alive")).map(|m| m.sent).sum()))
        .collect()
}

/// The coordinator and term every reachable node agrees on, if they do.
pub(super) fn agreed(o: &Observed) -> Option<(i64, u64)> {
    let states: Vec<&NodeState> = o.nodes.iter().filter(|n| n.reachable).filter_map(|n| n.state.as_ref()).collect();
    let first = states.first()?;
    let (c, t) = (first.coordinator, first.term);
    let agreed = c > 0 && states.iter().all(|s| s.coordinator == c && s.term == t);
    let ruler = states.iter().any(|s| s.id == c && s.role == Role::Coordinator as i32);
    (agreed && ruler).then_some((c, t))
}

fn wall(ts: Option<&prost_types::Timestamp>) -> Option<i64> {
    crate::proto::timestamp_to_nanos(ts, "time").ok()
}

/// Records a new reign (and the failover that led to it) when the agreement changed.
pub(super) fn agreement_changed(o: &mut Observed, since: f64) {
    let Some((coordinator, term)) = agreed(o) else { return };
    if o.reigns.back().is_some_and(|r| r.coordinator == coordinator && r.term == term) {
        return;
    }
    let messages = messages_sent(o);
    if let Some(previous) = o.reigns.back().cloned() {
        let live: Vec<&NodeState> = o.nodes.iter().filter(|n| n.reachable).filter_map(|n| n.state.as_ref()).collect();
        // Detection: from the old coordinator's last answer to the first election's start; election:
        // to the winner's rule; announcement: to the last node's following it.
        let old_last_seen =
            o.nodes.iter().find(|n| n.state.as_ref().is_some_and(|s| s.id == previous.coordinator)).and_then(|n| n.last_seen);
        let started = live.iter().filter_map(|s| s.last_election.as_ref()).filter_map(|e| wall(e.started.as_ref())).min();
        let elected = live.iter().find(|s| s.id == coordinator).and_then(|s| wall(s.coordinator_since.as_ref()));
        let announced = live.iter().filter_map(|s| wall(s.coordinator_since.as_ref())).max();
        let reason = live
            .iter()
            .filter_map(|s| s.last_election.as_ref())
            .min_by_key(|e| wall(e.started.as_ref()).unwrap_or(i64::MAX))
            .map(|e| e.reason.clone())
            .unwrap_or_default();
        let ms = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1e6),
            _ => None,
        };
        o.failovers.push_back(Failover {
            term,
            coordinator,
            reason,
            detection_ms: ms(old_last_seen, started),
            election_ms: ms(started, elected),
            announcement_ms: ms(elected, announced),
            // Sent since the last agreement by the nodes reachable now (a dead node's count is lost).
            messages: messages.iter().map(|(id, n)| n.saturating_sub(o.messages_at_agreement.get(id).copied().unwrap_or(0))).sum(),
            live: live.len(),
        });
        if o.failovers.len() > KEEP {
            o.failovers.pop_front();
        }
    }
    o.messages_at_agreement = messages;
    o.reigns.push_back(Reign { from: since, coordinator, term });
    if o.reigns.len() > KEEP {
        o.reigns.pop_front();
    }
}
