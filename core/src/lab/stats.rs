//! A run's figures beyond the checkers' verdicts, read from its history: availability (the fraction of
//! the run during which every group of live nodes that can reach each other follows exactly one live
//! coordinator of its own), leader changes, elections, and the messages they cost. `synclab lab sweep`
//! tabulates them per run.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::check::{Worlds, agreed, event_time};
use super::history::{ElectionObservation, Event, Fault, Role};
use crate::election::NodeId;

/// One run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// The fraction of the run (from its first observation to its last event) with one agreed,
    /// live coordinator in every group that can reach each other (0 to 1).
    pub availability: f64,
    /// Terms a coordinator ruled, minus the first: each is a new reign.
    pub leader_changes: u64,
    /// Terms a coordinator ruled.
    pub elections: u64,
    /// Election messages sent (`Election`, `Coordinator`, `RingElection`, `RingCoordinator`; the Bully
    /// OK answers are replies and not counted).
    pub election_messages: u64,
    /// Every message sent, heartbeats included.
    pub messages: u64,
    /// Fault operations played.
    pub faults: u64,
}

/// The message kinds that elect (heartbeats do not).
pub const ELECTION_KINDS: [&str; 4] = ["Election", "Coordinator", "RingElection", "RingCoordinator"];

/// Reads a history's figures.
pub fn stats(events: &[Event]) -> RunStats {
    let Some(run) = events.iter().find_map(|e| if let Event::Run(r) = e { Some(r) } else { None }) else {
        return RunStats::default();
    };
    let faults: Vec<Fault> = events.iter().filter_map(|e| if let Event::Fault(f) = e { Some(f.clone()) } else { None }).collect();
    let mut observations: Vec<&ElectionObservation> =
        events.iter().filter_map(|e| if let Event::Election(o) = e { Some(o) } else { None }).collect();
    observations.sort_by(|a, b| a.time.total_cmp(&b.time));
    let mut stats = RunStats { faults: faults.len() as u64, ..RunStats::default() };
    for e in events {
        if let Event::Message(m) = e
            && m.direction == "sent"
        {
            stats.messages += 1;
            if ELECTION_KINDS.contains(&m.kind.as_str()) {
                stats.election_messages += 1;
            }
        }
    }
    let terms: BTreeSet<u64> = observations.iter().filter(|o| o.role == Role::Coordinator).map(|o| o.term).collect();
    stats.elections = terms.len() as u64;
    stats.leader_changes = stats.elections.saturating_sub(1);
    stats.availability = availability(&run.nodes, &Worlds::new(run, &faults), &observations, events);
    stats
}

/// The fraction of time from the first observation to the last event with every group agreed on one
/// live coordinator of its own (a bridge, where who should lead is not defined, counts as not).
fn availability(nodes: &[NodeId], worlds: &Worlds, observations: &[&ElectionObservation], events: &[Event]) -> f64 {
    let Some(first) = observations.first().map(|o| o.time) else { return 0.0 };
    let end = events.iter().map(event_time).fold(first, f64::max);
    if end <= first {
        return 0.0;
    }
    // The moments anything changes: an observation, or a fault taking effect.
    let mut moments: Vec<f64> = observations.iter().map(|o| o.time).collect();
    moments.extend(events.iter().filter_map(|e| if let Event::Fault(f) = e { Some(f.end) } else { None }));
    moments.retain(|t| *t >= first && *t <= end);
    moments.sort_by(f64::total_cmp);
    moments.dedup();
    let mut latest: BTreeMap<NodeId, &ElectionObservation> = BTreeMap::new();
    let mut next = 0;
    let mut up = 0.0;
    for (i, &t) in moments.iter().enumerate() {
        while next < observations.len() && observations[next].time <= t {
            let o = observations[next];
            if o.role != Role::Unreachable {
                latest.insert(o.node, o);
            }
            next += 1;
        }
        let until = moments.get(i + 1).copied().unwrap_or(end);
        let world = worlds.at(t);
        // The groups hold live nodes only: a node down is in none.
        let ok = world.components(nodes).is_some_and(|c| !c.iter().all(Vec::is_empty) && agreed(&c, &latest).is_some());
        if ok {
            up += until - t;
        }
    }
    (up / (end - first)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::history::{MessageObservation, Op, RunInfo};

    fn run() -> Event {
        Event::Run(RunInfo {
            scenario: "test".into(),
            seed: 1,
            algorithm: "bully".into(),
            backend: "sim".into(),
            nodes: vec![1, 2, 3],
            settle_bound: 5.0,
            sync_interval: 0.0,
            spread_bound_nanos: 0,
            spread_rounds: 3,
            detector: String::new(),
            heartbeat: 0.0,
        })
    }

    fn obs(time: f64, node: NodeId, role: Role, term: u64, coordinator: Option<NodeId>) -> Event {
        Event::Election(ElectionObservation { time, node, role, term, coordinator })
    }

    fn sent(time: f64, kind: &str) -> Event {
        Event::Message(MessageObservation { time, node: 1, peer: 2, direction: "sent".into(), kind: kind.into(), term: 1 })
    }

    /// Pins the figures on a run whose answer is known: agreed from 0 to 4 (node 3, term 3), node 3
    /// killed at 4 and node 2 ruling at 5 (term 5) to the end at 10: available 9 s of 10; two reigns,
    /// one change; three election messages of four sent.
    #[test]
    fn availability_and_changes_of_a_known_run() {
        let follow = |t: f64, c: NodeId, term: u64, nodes: &[NodeId]| -> Vec<Event> {
            nodes.iter().map(|&n| obs(t, n, if n == c { Role::Coordinator } else { Role::Follower }, term, Some(c))).collect()
        };
        let mut h = vec![run()];
        h.extend(follow(0.0, 3, 3, &[1, 2, 3]));
        h.push(sent(0.0, "Coordinator"));
        h.push(Event::Fault(Fault { start: 4.0, end: 4.0, op: Op::Kill { targets: vec!["node-3".into()] }, error: None }));
        h.push(obs(4.0, 3, Role::Unreachable, 3, None));
        h.push(obs(4.5, 2, Role::Candidate, 3, None));
        h.push(sent(4.5, "Election"));
        h.extend(follow(5.0, 2, 5, &[1, 2]));
        h.push(sent(5.0, "Coordinator"));
        h.push(sent(9.0, "Alive"));
        h.push(obs(10.0, 1, Role::Follower, 5, Some(2)));
        let s = stats(&h);
        assert!((s.availability - 0.9).abs() < 1e-9, "{s:?}");
        assert_eq!((s.elections, s.leader_changes, s.election_messages, s.messages, s.faults), (2, 1, 3, 4, 1));
        // Never agreed again after the kill: 4 s of 10.
        let cut: Vec<Event> = h.iter().filter(|e| !matches!(e, Event::Election(o) if o.time >= 5.0 && o.time < 10.0)).cloned().collect();
        assert!((stats(&cut).availability - 0.4).abs() < 1e-9, "{:?}", stats(&cut));
    }
}
