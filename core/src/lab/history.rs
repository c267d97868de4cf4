//! What a lab run records: every fault operation with its start and end, and every observation, in time
//! order. A history is written as JSON lines (`history.jsonl`), one [`Event`] per line, so it can be
//! read, edited and checked again.
//!
//! Times are seconds since the run started (`time`, `start`, `end`).

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use crate::election::NodeId;

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// What the run was: written first.
    Run(RunInfo),
    /// The plan an election run played (written after the run line; histories from before plans have
    /// none, and the clock scenarios have none).
    Plan(Plan),
    /// A fault operation, from when it was begun to when it was done.
    Fault(Fault),
    /// What one election node reported of itself.
    Election(ElectionObservation),
    /// A message an election node sent or received.
    Message(MessageObservation),
    /// A clock's true offset (ground truth), read from the process keeping it.
    Clock(ClockObservation),
    /// A Cristian sync of a device, with its reported bound and true error.
    Sync(SyncObservation),
    /// A Berkeley round, as the master reports it.
    Round(RoundObservation),
}

/// The run's settings, which the checkers read their bounds from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The scenario's name, as `synclab lab list` spells it.
    pub scenario: String,
    /// The seed the run's random choices were drawn from.
    pub seed: u64,
    /// `bully` or `ring` (empty when no election ran).
    #[serde(default)]
    pub algorithm: String,
    /// `local` or `compose`.
    pub backend: String,
    /// The election nodes, by id.
    #[serde(default)]
    pub nodes: Vec<NodeId>,
    /// Seconds after a fault within which a group must settle.
    #[serde(default = "default_settle_bound")]
    pub settle_bound: f64,
    /// Seconds between a Cristian device's syncs.
    #[serde(default)]
    pub sync_interval: f64,
    /// Nanoseconds within which the Berkeley group's spread must come back.
    #[serde(default)]
    pub spread_bound_nanos: u64,
    /// Rounds within which it must come back.
    #[serde(default = "default_rounds")]
    pub spread_rounds: u64,
    /// The failure detector of a group the lab made itself (`fixed` or `adaptive`; `--local`, `--sim`);
    /// empty where the deployment's settings decide (compose, swarm).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detector: String,
    /// Seconds between the coordinator's heartbeats in a group the lab made itself; 0 where the
    /// deployment's settings decide.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub heartbeat: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn default_settle_bound() -> f64 {
    5.0
}

fn default_rounds() -> u64 {
    3
}

/// A fault operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// When the operation was begun (seconds).
    pub start: f64,
    /// When it was done (seconds).
    pub end: f64,
    /// What it did (its fields are written in the fault's own line, with `op` naming it).
    #[serde(flatten)]
    pub op: Op,
    /// Why it failed, if it did (the run goes on; the checkers see what really happened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a fault operation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// SIGKILL: the processes die at once (in one process: the nodes stop without a goodbye).
    Kill {
        /// The processes it acted on, by name (`node-3`, `time-server`).
        targets: Vec<String>,
    },
    /// SIGTERM: the processes stop as they would in a rolling restart.
    Stop {
        /// The processes it acted on, by name (`node-3`, `time-server`).
        targets: Vec<String>,
    },
    /// Started again after a kill or a stop.
    Start {
        /// The processes it acted on, by name (`node-3`, `time-server`).
        targets: Vec<String>,
    },
    /// Frozen (`docker pause`): alive, but answers nothing and does nothing.
    Pause {
        /// The processes it acted on, by name (`node-3`, `time-server`).
        targets: Vec<String>,
    },
    /// Thawed after a pause.
    Unpause {
        /// The processes it acted on, by name (`node-3`, `time-server`).
        targets: Vec<String>,
    },
    /// The election nodes are cut into these groups: no message crosses between groups. A node in no
    /// group is in a group of its own. `shape` names it (isolate, halves, bridge, majorities-ring).
    /// In a bridge, one node sees both halves: the groups overlap.
    Partition {
        /// The partition's shape, by name.
        shape: String,
        /// The groups, each a list of node ids.
        groups: Vec<Vec<NodeId>>,
    },
    /// Every partition and link fault removed.
    Heal,
    /// The network of a host cut: the election nodes on it (`targets`) are cut off from the others,
    /// without a FIN.
    HostDown {
        /// The election nodes on the host, by name (`node-3`); the first is the one the plan named.
        targets: Vec<String>,
    },
    /// The host's network back.
    HostUp {
        /// The election nodes on the host, by name.
        targets: Vec<String>,
    },
    /// Every container on a host paused.
    HostFreeze {
        /// The election nodes on the host, by name.
        targets: Vec<String>,
    },
    /// The host's containers unpaused.
    HostThaw {
        /// The election nodes on the host, by name.
        targets: Vec<String>,
    },
    /// The state files of these (stopped) processes deleted: they start again from term 0.
    Wipe {
        /// The processes whose state it deleted, by name (`node-3`).
        targets: Vec<String>,
    },
    /// A one-way partition: requests from each of `from` to each of `to` are lost; the other way they
    /// pass and are answered (`to` does not hear `from`, `from` hears `to`). Undone by a heal.
    Block {
        /// The nodes whose requests are lost.
        from: Vec<NodeId>,
        /// The nodes that do not hear them.
        to: Vec<NodeId>,
    },
    /// Slow processes (not dead): each request they receive and each run of their timers waits
    /// `delay_ms` first; 0: back to normal.
    Slow {
        /// The processes slowed, by name (`node-3`).
        targets: Vec<String>,
        /// How late they handle everything, ms.
        delay_ms: f64,
    },
    /// Delay, jitter and loss on every link of `node` (both ways); node 0: on every link of the group.
    Link {
        /// The node whose links it hits; 0: every node's.
        node: NodeId,
        /// Delay added to each message, ms.
        delay_ms: f64,
        /// Up to this much more delay, at random, ms.
        jitter_ms: f64,
        /// The probability that a message is lost, 0 to 1.
        loss: f64,
    },
    /// A clock stepped by `by_nanos` at once.
    Bump {
        /// The clock's name (`laptop`).
        target: String,
        /// The step, ns (positive: forward).
        by_nanos: i64,
    },
    /// A clock stepped back and forth by `amplitude_nanos`.
    Strobe {
        /// The clock's name.
        target: String,
        /// The size of each step, ns.
        amplitude_nanos: i64,
        /// A step forward and back takes this long, ms.
        period_ms: f64,
        /// How long the strobing lasts, ms.
        duration_ms: f64,
    },
    /// A clock's drift changed.
    Drift {
        /// The clock's name.
        target: String,
        /// Its new drift (frequency error), ppm.
        drift_ppm: f64,
    },
}

impl Op {
    /// The operation's name, as the history spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Kill { .. } => "kill",
            Op::Stop { .. } => "stop",
            Op::Start { .. } => "start",
            Op::Pause { .. } => "pause",
            Op::Unpause { .. } => "unpause",
            Op::Partition { .. } => "partition",
            Op::Heal => "heal",
            Op::HostDown { .. } => "host-down",
            Op::HostUp { .. } => "host-up",
            Op::HostFreeze { .. } => "host-freeze",
            Op::HostThaw { .. } => "host-thaw",
            Op::Wipe { .. } => "wipe",
            Op::Block { .. } => "block",
            Op::Slow { .. } => "slow",
            Op::Link { .. } => "link",
            Op::Bump { .. } => "bump",
            Op::Strobe { .. } => "strobe",
            Op::Drift { .. } => "drift",
        }
    }

    /// A short description, for summaries and reports.
    pub fn describe(&self) -> String {
        match self {
            Op::Kill { targets }
            | Op::Stop { targets }
            | Op::Start { targets }
            | Op::Pause { targets }
            | Op::Unpause { targets }
            | Op::Wipe { targets } => format!("{} {}", self.name(), targets.join(",")),
            Op::Block { from, to } => {
                let ids = |v: &[NodeId]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                format!("block {} -> {} (one way)", ids(from), ids(to))
            }
            Op::Slow { targets, delay_ms } => format!("slow {} by {delay_ms} ms", targets.join(",")),
            Op::Partition { shape, groups } => {
                let groups: Vec<String> = groups.iter().map(|g| g.iter().map(u64::to_string).collect::<Vec<_>>().join(",")).collect();
                format!("partition ({shape}) {}", groups.join(" | "))
            }
            Op::Heal => "heal".into(),
            Op::HostDown { targets } | Op::HostUp { targets } | Op::HostFreeze { targets } | Op::HostThaw { targets } => {
                format!("{} (the host of {})", self.name(), targets.join(","))
            }
            Op::Link { node, delay_ms, jitter_ms, loss } => {
                let which = if *node == 0 { "every link".to_string() } else { format!("link node-{node}") };
                format!("{which}: {delay_ms}±{jitter_ms} ms, {:.0}% loss", loss * 100.0)
            }
            Op::Bump { target, by_nanos } => format!("bump {target} by {}", crate::duration::format_nanos(*by_nanos as f64)),
            Op::Strobe { target, amplitude_nanos, .. } => {
                format!("strobe {target} ±{}", crate::duration::format_nanos(*amplitude_nanos as f64))
            }
            Op::Drift { target, drift_ppm } => format!("drift {target} {drift_ppm:+} ppm"),
        }
    }
}

/// The role an election node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Follows a coordinator (or, briefly, knows none and is about to run an election).
    Follower,
    /// Runs an election.
    Candidate,
    /// Bully: a higher node answered OK; waits for its announcement.
    Waiting,
    /// Is the coordinator.
    Coordinator,
    /// Did not answer (down, paused or cut off from the lab).
    Unreachable,
}

/// One election node's state, as it reported it (or that it did not answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionObservation {
    /// When it was seen (seconds).
    pub time: f64,
    /// The node's id.
    pub node: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term (when it did not answer: the last one seen, or 0).
    pub term: u64,
    /// The coordinator it follows (itself when it is the coordinator); `None` while unknown.
    pub coordinator: Option<NodeId>,
}

/// One message, as the node that sent or received it reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageObservation {
    /// When the node saw it (seconds).
    pub time: f64,
    /// The node that reported it.
    pub node: NodeId,
    /// The node at the other end.
    pub peer: NodeId,
    /// `sent`, `received`, `answered` or `failed`.
    pub direction: String,
    /// The message type (`Election`, `Coordinator`, `Alive`, `RingElection`, `RingCoordinator`).
    pub kind: String,
    /// The term the message carries.
    pub term: u64,
}

/// A clock's true offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockObservation {
    /// When it was read (seconds).
    pub time: f64,
    /// The clock's name.
    pub clock: String,
    /// The clock's true offset, ns.
    pub true_offset_nanos: i64,
}

/// One Cristian sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncObservation {
    /// When the sync was done (seconds).
    pub time: f64,
    /// The synced device's clock, by name.
    pub device: String,
    /// The error bound the sync reported, ns.
    pub error_bound_nanos: u64,
    /// The clock's true error after the sync (once any slew completes), ns (ground truth).
    pub true_error_nanos: i64,
}

/// One Berkeley round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundObservation {
    /// When its clocks were read, just after the round's corrections (seconds).
    pub time: f64,
    /// The round's number, as the master counts them.
    pub round: u64,
    /// The members left out of the average.
    pub excluded: Vec<String>,
    /// The spread (largest minus smallest true offset) of the clocks no fault touched, just after the
    /// round's corrections, ns.
    pub spread_nanos: u64,
}

/// A history could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct HistoryError {
    /// The line that could not be read (from 1).
    pub line: usize,
    /// Why it could not be read.
    pub reason: String,
}

/// Reads a history from JSON lines (blank lines are skipped).
pub fn parse(text: &str) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(line).map_err(|e| HistoryError { line: i + 1, reason: e.to_string() })?;
        events.push(event);
    }
    Ok(events)
}

/// Writes one event as a line of JSON.
pub fn line(event: &Event) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{Scenario, plan};

    /// Pins that a history written before plans existed (no plan line) still reads, and that a plan
    /// line reads back as the plan that was written.
    #[test]
    fn old_and_new_histories_read_back() {
        let old = r#"{"type":"run","scenario":"kill-coordinator","seed":1,"backend":"local","nodes":[1,2,3]}
{"type":"election","time":0.5,"node":3,"role":"coordinator","term":1,"coordinator":3}
"#;
        let events = parse(old).unwrap();
        assert_eq!(events.len(), 2);
        assert!(!events.iter().any(|e| matches!(e, Event::Plan(_))));

        let p = plan(Scenario::Nemesis, 3, &[1, 2, 3, 4, 5], Some(std::time::Duration::from_secs(10))).unwrap();
        let text = [&events[0], &Event::Plan(p.clone()), &events[1]].iter().map(|e| line(e) + "\n").collect::<String>();
        let back = parse(&text).unwrap();
        assert_eq!(back[1], Event::Plan(p));
        assert_eq!(back.iter().map(line).collect::<Vec<_>>(), text.lines().collect::<Vec<_>>(), "the same bytes again");
    }
}
