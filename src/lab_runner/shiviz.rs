//! A run's election messages in ShiViz's log format (`shiviz.log`, beside `report.html`): one line per
//! message event with the node's vector clock, for ShiViz's space-time diagrams
//! (<https://bestchai.bitbucket.io/shiviz/>), which read any log a regular expression with the named
//! groups `host`, `clock` and `event` parses.
//!
//! The file is ShiViz's upload format: the first line is the regular expression ([`REGEX`]), the second
//! the delimiter of several executions (empty: one execution), then the log. Each line is
//! `node-3 {"node-3":5,"node-5":2} 1.234567 sent Election term 4 to node-5`: the host, its vector clock
//! as JSON, then the event (the run's time in seconds, what happened, the kind and term, the peer).
//!
//! The vector clocks are derived from the history, which names no message: a `received` is matched to
//! the earliest unmatched `sent` from its peer of the same kind and term at or before it (the sender's
//! clock is merged in), an `answered` to the earliest unmatched `received` of it at the peer (the
//! answer carries the receiver's clock); a receipt whose sending was not recorded, and a `failed`, are
//! local events. Each node's own entry counts its events from 1, so every clock respects the order the
//! run recorded: an event's clock is above the clock of every event that happened before it along
//! messages the history shows.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use synclab_core::election::NodeId;
use synclab_core::lab::history::{Event, MessageObservation};
use synclab_core::lab::stats::ELECTION_KINDS;

/// The regular expression to give ShiViz (its `(?<name>...)` groups), also the file's first line.
pub const REGEX: &str = r#"(?<host>\S+) (?<clock>\{[^}]*\}) (?<event>.*)"#;

/// The most message events a log holds (a browser draws no more usefully); the rest of a run is left
/// out and the log says so in [`Log::left_out`].
pub const MAX_EVENTS: usize = 20_000;

/// A run's ShiViz log.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// The file's text: the regular expression, an empty delimiter line, the log.
    pub text: String,
    /// Message events written.
    pub events: usize,
    /// Election message events beyond [`MAX_EVENTS`], not written.
    pub left_out: usize,
}

type Clock = BTreeMap<NodeId, u64>;

/// The run's election messages (`Election`, `Coordinator`, `RingElection`, `RingCoordinator`; the
/// heartbeats are left out, as in the report's diagrams), in time order, with vector clocks.
pub fn log(events: &[Event]) -> Log {
    let mut messages: Vec<&MessageObservation> = events
        .iter()
        .filter_map(|e| if let Event::Message(m) = e { Some(m) } else { None })
        .filter(|m| ELECTION_KINDS.contains(&m.kind.as_str()))
        .collect();
    messages.sort_by(|a, b| a.time.total_cmp(&b.time));
    let left_out = messages.len().saturating_sub(MAX_EVENTS);
    messages.truncate(MAX_EVENTS);

    let mut text = format!("{REGEX}\n\n");
    let mut clocks: BTreeMap<NodeId, Clock> = BTreeMap::new();
    // Sends not yet received, by (from, to, kind, term): the sender's clock at each.
    let mut in_flight: BTreeMap<(NodeId, NodeId, &str, u64), VecDeque<Clock>> = BTreeMap::new();
    // Requests received and not yet answered, by (sender, receiver, kind, term): the receiver's clock.
    let mut answers: BTreeMap<(NodeId, NodeId, &str, u64), VecDeque<Clock>> = BTreeMap::new();
    for m in &messages {
        let kind = m.kind.as_str();
        let (what, preposition, from) = match m.direction.as_str() {
            "sent" => ("sent", "to", None),
            "received" => ("received", "from", in_flight.get_mut(&(m.peer, m.node, kind, m.term)).and_then(VecDeque::pop_front)),
            "answered" => ("answer to", "from", answers.get_mut(&(m.node, m.peer, kind, m.term)).and_then(VecDeque::pop_front)),
            "failed" => ("failed", "to", None),
            _ => continue,
        };
        let clock = clocks.entry(m.node).or_default();
        if let Some(other) = from {
            for (node, count) in other {
                let mine = clock.entry(node).or_default();
                *mine = (*mine).max(count);
            }
        }
        *clock.entry(m.node).or_default() += 1;
        match m.direction.as_str() {
            "sent" => in_flight.entry((m.node, m.peer, kind, m.term)).or_default().push_back(clock.clone()),
            "received" => answers.entry((m.peer, m.node, kind, m.term)).or_default().push_back(clock.clone()),
            _ => {}
        }
        let json: Vec<String> = clock.iter().map(|(node, count)| format!("\"node-{node}\":{count}")).collect();
        let _ = writeln!(
            text,
            "node-{} {{{}}} {:.6} {what} {kind} term {} {preposition} node-{}",
            m.node,
            json.join(","),
            m.time,
            m.term,
            m.peer
        );
    }
    Log { text, events: messages.len(), left_out }
}

#[cfg(test)]
mod tests {
    use synclab_core::lab::history::MessageObservation;

    use super::*;

    fn message(time: f64, node: NodeId, peer: NodeId, direction: &str, kind: &str, term: u64) -> Event {
        Event::Message(MessageObservation { time, node, peer, direction: direction.into(), kind: kind.into(), term })
    }

    /// The clock of each log line, by line.
    fn clocks(log: &Log) -> Vec<(String, BTreeMap<String, u64>)> {
        let re = regex::Regex::new(REGEX).unwrap();
        log.text
            .lines()
            .skip(2)
            .map(|line| {
                let c = re.captures(line).unwrap_or_else(|| panic!("unparsed: {line}"));
                (c["host"].to_string(), serde_json::from_str(&c["clock"]).unwrap())
            })
            .collect()
    }

    /// Pins the causal merge: node 2's receipt of node 1's `Election` knows node 1's send, node 1's
    /// answer knows node 2's receipt, and heartbeats stay out.
    #[test]
    fn a_receipt_and_an_answer_carry_their_senders_clock() {
        let events = vec![
            message(0.1, 1, 2, "sent", "Election", 3),
            message(0.2, 1, 2, "sent", "Alive", 3),
            message(0.3, 2, 1, "received", "Election", 3),
            message(0.4, 1, 2, "answered", "Election", 3),
            message(0.5, 2, 3, "failed", "Coordinator", 4),
        ];
        let log = log(&events);
        assert_eq!(log.events, 4);
        let lines = clocks(&log);
        let want = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>();
        assert_eq!(lines[0], ("node-1".into(), want(&[("node-1", 1)])));
        assert_eq!(lines[1], ("node-2".into(), want(&[("node-1", 1), ("node-2", 1)])));
        assert_eq!(lines[2], ("node-1".into(), want(&[("node-1", 2), ("node-2", 1)])));
        assert_eq!(lines[3], ("node-2".into(), want(&[("node-1", 1), ("node-2", 2)])));
    }

    /// Pins that a receipt whose sending was not recorded is a local event (its clock invents no
    /// knowledge), and that the log is cut at [`MAX_EVENTS`] and says how much it left out.
    #[test]
    fn an_unmatched_receipt_is_local_and_the_log_is_bounded() {
        let log = log(&[message(0.3, 2, 1, "received", "Coordinator", 3)]);
        assert_eq!(clocks(&log)[0].1, BTreeMap::from([("node-2".to_string(), 1)]));
        let many: Vec<Event> = (0..MAX_EVENTS + 5).map(|i| message(i as f64, 1, 2, "sent", "Coordinator", 1)).collect();
        let log = super::log(&many);
        assert_eq!((log.events, log.left_out), (MAX_EVENTS, 5));
    }
}
