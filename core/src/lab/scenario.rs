//! The lab's built-in scenarios by name: the catalogue `synclab lab list` prints, and the group size each
//! election scenario runs on.

use serde::{Deserialize, Serialize};

/// A built-in experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// `initial-election`: five nodes start; one coordinator, terms agree.
    InitialElection,
    /// `re-election`: the coordinator cut off and reconnected, then it and one more, reconnected one by one.
    ReElection,
    /// `many-elections`: rounds of cutting off random nodes and reconnecting them (seven nodes in one
    /// process).
    ManyElections,
    /// `partition-heal`: split brain on purpose: two halves each elect, then heal to one.
    PartitionHeal,
    /// `flaky-link`: delay and rising loss on the coordinator's links.
    FlakyLink,
    /// `kill-coordinator`: the coordinator killed (no goodbye), then started again.
    KillCoordinator,
    /// `stop-coordinator`: the coordinator stopped (SIGTERM: it says goodbye), then started.
    StopCoordinator,
    /// `pause-coordinator`: the coordinator paused (alive, silent), then unpaused.
    PauseCoordinator,
    /// `steady`: no faults at all: any election is a false one.
    Steady,
    /// `steady-loss`: 1% loss on every link.
    SteadyLoss,
    /// `berkeley-faulty-clock` (clock scenario): a production line's clock bumped by five minutes mid-run.
    BerkeleyFaultyClock,
    /// `cristian-server-restart` (clock scenario): the time server stopped while devices sync, then
    /// started again.
    CristianServerRestart,
    /// `cristian-clock-bump` (clock scenario): the laptop's clock jumps five minutes between two syncs.
    CristianClockBump,
    /// `nemesis`: random kills, stops, pauses, partitions and link faults.
    Nemesis,
    /// `host-down` (several hosts: `--swarm`): the network of the coordinator's host cut (every member
    /// there gone without a FIN), then back.
    HostDown,
    /// `host-freeze` (several hosts: `--swarm`): every container on the coordinator's host paused, then
    /// unpaused.
    HostFreeze,
    /// `one-way-partition`: the coordinator's requests lost one way (it hears everyone, and its answers
    /// still pass), then another member's.
    OneWayPartition,
    /// `crash-lose-state`: the coordinator killed and its state file lost, then started from term 0.
    CrashLoseState,
    /// `cold-start`: every node killed, its state lost, and every node started at the same moment.
    ColdStart,
    /// `slow-node`: the coordinator slowed (its timers and answers late, not dead), then back to normal.
    SlowNode,
}

impl crate::Named for Scenario {
    /// In the order `synclab lab list` prints them.
    const ALL: &'static [Self] = &[
        Scenario::InitialElection,
        Scenario::ReElection,
        Scenario::ManyElections,
        Scenario::PartitionHeal,
        Scenario::FlakyLink,
        Scenario::KillCoordinator,
        Scenario::StopCoordinator,
        Scenario::PauseCoordinator,
        Scenario::Steady,
        Scenario::SteadyLoss,
        Scenario::BerkeleyFaultyClock,
        Scenario::CristianServerRestart,
        Scenario::CristianClockBump,
        Scenario::Nemesis,
        Scenario::HostDown,
        Scenario::HostFreeze,
        Scenario::OneWayPartition,
        Scenario::CrashLoseState,
        Scenario::ColdStart,
        Scenario::SlowNode,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Scenario::InitialElection => "initial-election",
            Scenario::ReElection => "re-election",
            Scenario::ManyElections => "many-elections",
            Scenario::PartitionHeal => "partition-heal",
            Scenario::FlakyLink => "flaky-link",
            Scenario::KillCoordinator => "kill-coordinator",
            Scenario::StopCoordinator => "stop-coordinator",
            Scenario::PauseCoordinator => "pause-coordinator",
            Scenario::Steady => "steady",
            Scenario::SteadyLoss => "steady-loss",
            Scenario::BerkeleyFaultyClock => "berkeley-faulty-clock",
            Scenario::CristianServerRestart => "cristian-server-restart",
            Scenario::CristianClockBump => "cristian-clock-bump",
            Scenario::Nemesis => "nemesis",
            Scenario::HostDown => "host-down",
            Scenario::HostFreeze => "host-freeze",
            Scenario::OneWayPartition => "one-way-partition",
            Scenario::CrashLoseState => "crash-lose-state",
            Scenario::ColdStart => "cold-start",
            Scenario::SlowNode => "slow-node",
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::Named::as_str(*self))
    }
}

impl Scenario {
    /// One line on what it does.
    pub fn about(self) -> &'static str {
        match self {
            Scenario::InitialElection => "five nodes start; one coordinator, terms agree",
            Scenario::ReElection => "cut the coordinator off, reconnect it; cut it and one more off, reconnect them one by one",
            Scenario::ManyElections => "seven nodes (five in Docker); rounds of cutting off three (two) random nodes and reconnecting them",
            Scenario::PartitionHeal => "split brain on purpose: two halves each elect, then heal to one",
            Scenario::FlakyLink => "delay and rising loss on the coordinator's links: false elections per loss rate",
            Scenario::KillCoordinator => "kill the coordinator (no goodbye), then start it again",
            Scenario::StopCoordinator => "stop the coordinator (SIGTERM: it says goodbye), then start it",
            Scenario::PauseCoordinator => "pause the coordinator (alive, silent), then unpause it",
            Scenario::Steady => "no faults at all: any election is a false one (default 60 s)",
            Scenario::SteadyLoss => "1% loss on every link: the false elections it causes (default 60 s)",
            Scenario::BerkeleyFaultyClock => "bump a production line's clock by five minutes mid-run",
            Scenario::CristianServerRestart => "stop the time server while the phone and the laptop sync, start it again",
            Scenario::CristianClockBump => "the laptop's clock jumps five minutes between two syncs",
            Scenario::Nemesis => "random kills, stops, pauses, partitions (isolate, halves, bridge, majorities-ring) and link faults",
            Scenario::HostDown => "--swarm: cut the network of the coordinator's host (no FIN), then restore it",
            Scenario::HostFreeze => "--swarm: pause every container on the coordinator's host, then unpause them",
            Scenario::OneWayPartition => {
                "the coordinator's requests lost one way (it hears everyone; its answers pass), then another node's"
            }
            Scenario::CrashLoseState => "kill the coordinator and delete its state file, then start it from term 0",
            Scenario::ColdStart => "kill every node, delete every state file, start every node at the same moment",
            Scenario::SlowNode => "slow the coordinator by 60 ms, then 300 ms (its timers and answers late, not dead), then not",
        }
    }

    /// The election nodes it runs on in one process (in Docker: the compose file's five); 0 for the
    /// clock scenarios, which have no election group.
    pub fn local_nodes(self) -> u64 {
        match self {
            Scenario::ManyElections => 7,
            Scenario::BerkeleyFaultyClock | Scenario::CristianServerRestart | Scenario::CristianClockBump => 0,
            _ => 5,
        }
    }

    /// Whether it breaks an election group (and so has a [`plan`](super::plan::plan)).
    pub fn is_election(self) -> bool {
        self.local_nodes() > 0
    }

    /// One line per scenario, for `synclab lab list`.
    pub fn list() -> String {
        use crate::Named;
        let width = Self::ALL.iter().map(|s| s.as_str().len()).max().unwrap_or(0);
        Self::ALL.iter().map(|s| format!("{:<width$}  {}\n", s.as_str(), s.about())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Scenario;
    use crate::Named;

    /// Pins that every scenario's name parses back to it and that its serde name is the same one, so the
    /// CLI, `lab list` and a history's plan agree on spelling.
    #[test]
    fn names_round_trip_through_the_cli_and_json() {
        for &s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert_eq!(Scenario::from_name("no-such-scenario"), None);
        assert_eq!(Scenario::list().lines().count(), Scenario::ALL.len());
    }
}
