//! An election scenario as a pure plan: the steps the lab's runner plays, drawn from (scenario, seed,
//! members, duration) with no I/O and no clock, so a seed fixes every fault of a run, how many there are
//! and what they are, on any machine and under any load.
//!
//! What a scenario learns only while it runs is written symbolically and resolved when the step plays:
//! [`Member::Coordinator`] is the member the latest [`Step::FindCoordinator`] saw ruling, and a random
//! choice among the others is drawn here as a rank, [`Member::NotCoordinator`] (the k-th, by id, of the
//! members other than that coordinator). [`Action::resolve`] turns a step's action into the history's
//! [`Op`] once the coordinator is known. Waits are the plan's (virtual or real seconds, as the backend
//! keeps time); settles wait for the group, at most their limit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Rng;
use super::history::Op;
use super::scenario::Scenario;
use crate::election::NodeId;

/// What the runner plays, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The election scenario it plays.
    pub scenario: Scenario,
    /// The seed its random choices were drawn from.
    pub seed: u64,
    /// The election members, by id (sorted, no repeats).
    pub members: Vec<NodeId>,
    /// The steps, in the order they are played.
    pub steps: Vec<Step>,
}

/// One step of a plan. Seconds are plain decimals (from whole milliseconds), so the JSON is the same
/// bytes on every call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Waits until the group agrees (at most `limit` seconds); the run fails unless a coordinator is
    /// then seen. Every election plan begins with it.
    AwaitCoordinator {
        /// Seconds.
        limit: f64,
    },
    /// Reads which member rules now: [`Member::Coordinator`] in the steps after it is that member (if
    /// none is seen, the one found before; before any, the highest member).
    FindCoordinator,
    /// A fault operation, recorded in the history as one fault.
    Fault(Action),
    /// Waits until the running, connected members agree on one coordinator, at most `limit` seconds.
    Settle {
        /// Seconds.
        limit: f64,
    },
    /// Waits `seconds`, whatever the group does.
    Wait {
        /// Seconds.
        seconds: f64,
    },
}

/// A member of the group, as a plan names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Member {
    /// This member.
    Node(NodeId),
    /// The coordinator the latest [`Step::FindCoordinator`] saw.
    Coordinator,
    /// The k-th (from 0, by id) of the members other than [`Member::Coordinator`].
    NotCoordinator(usize),
}

/// One side of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// These members.
    Nodes(Vec<NodeId>),
    /// Every member but these.
    AllBut(Vec<Member>),
}

/// How a partition is shaped (the history's `shape`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One side cut off from the rest.
    Isolate,
    /// Two halves.
    Halves,
    /// Two halves and one member that sees both.
    Bridge,
    /// Each member reaches only its two neighbours in a ring.
    MajoritiesRing,
}

impl Shape {
    /// The name the history's `shape` gives it (kebab-case, as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Isolate => "isolate",
            Shape::Halves => "halves",
            Shape::Bridge => "bridge",
            Shape::MajoritiesRing => "majorities-ring",
        }
    }
}

/// A fault operation with symbolic targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Action {
    /// SIGKILL (in one process: a crash).
    Kill {
        /// The member killed.
        target: Member,
    },
    /// SIGTERM (a coordinator says goodbye).
    Stop {
        /// The member stopped.
        target: Member,
    },
    /// Started again after a kill or a stop.
    Start {
        /// The member started.
        target: Member,
    },
    /// Frozen: alive, silent.
    Pause {
        /// The member paused.
        target: Member,
    },
    /// Thawed after a pause.
    Unpause {
        /// The member unpaused.
        target: Member,
    },
    /// No message crosses between groups; a member in no group is alone.
    Partition {
        /// How the cut is shaped.
        shape: Shape,
        /// The groups the members are cut into.
        groups: Vec<Group>,
    },
    /// Every partition and link fault removed.
    Heal,
    /// The network of the host `target` runs on cut (every member there gone without a FIN).
    HostDown {
        /// A member on the host.
        target: Member,
    },
    /// That host's network back.
    HostUp {
        /// A member on the host.
        target: Member,
    },
    /// Every container on the host `target` runs on paused.
    HostFreeze {
        /// A member on the host.
        target: Member,
    },
    /// That host's containers unpaused.
    HostThaw {
        /// A member on the host.
        target: Member,
    },
    /// The (stopped) member's state file deleted: it starts again from term 0.
    Wipe {
        /// The member whose state file goes.
        target: Member,
    },
    /// Every member killed at once.
    KillAll,
    /// Every member's state file deleted.
    WipeAll,
    /// Every member started at once (a cold start).
    StartAll,
    /// A one-way partition: `from`'s requests to every other member are lost; theirs to it pass and are
    /// answered. Undone by [`Action::Heal`].
    Block {
        /// The member nobody hears.
        from: Member,
    },
    /// The member slowed (not dead): it handles each request and runs its timers `delay_ms` late; 0:
    /// back to normal.
    Slow {
        /// The member slowed.
        target: Member,
        /// How late, ms.
        delay_ms: f64,
    },
    /// Delay, jitter and loss on every link of `node` (both ways); no `node`: on every link.
    Link {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        /// The member whose links it hits; `None`: every link of the group.
        node: Option<Member>,
        /// Delay added to each message, ms.
        delay_ms: f64,
        /// Up to this much more delay, at random, ms.
        jitter_ms: f64,
        /// The probability that a message is lost, 0 to 1.
        loss: f64,
    },
}

impl Member {
    /// The member this names among `members` (sorted) when `coordinator` rules; `None` if it names no
    /// member.
    pub fn resolve(self, members: &[NodeId], coordinator: NodeId) -> Option<NodeId> {
        match self {
            Member::Node(id) => members.contains(&id).then_some(id),
            Member::Coordinator => members.contains(&coordinator).then_some(coordinator),
            Member::NotCoordinator(k) => members.iter().copied().filter(|&m| m != coordinator).nth(k),
        }
    }
}

impl Group {
    /// The members of this group, by id order of the plan's members for [`Group::AllBut`].
    pub fn resolve(&self, members: &[NodeId], coordinator: NodeId) -> Vec<NodeId> {
        match self {
            Group::Nodes(ids) => ids.iter().copied().filter(|id| members.contains(id)).collect(),
            Group::AllBut(out) => {
                let out: Vec<NodeId> = out.iter().filter_map(|m| m.resolve(members, coordinator)).collect();
                members.iter().copied().filter(|m| !out.contains(m)).collect()
            }
        }
    }
}

impl Action {
    /// The history's operation for this action when `coordinator` rules; `None` when a target names no
    /// member.
    pub fn resolve(&self, members: &[NodeId], coordinator: NodeId) -> Option<Op> {
        let targets = |m: &Member| m.resolve(members, coordinator).map(|id| vec![format!("node-{id}")]);
        let everyone = || members.iter().map(|id| format!("node-{id}")).collect::<Vec<_>>();
        Some(match self {
            Action::Kill { target } => Op::Kill { targets: targets(target)? },
            Action::Stop { target } => Op::Stop { targets: targets(target)? },
            Action::Start { target } => Op::Start { targets: targets(target)? },
            Action::Pause { target } => Op::Pause { targets: targets(target)? },
            Action::Unpause { target } => Op::Unpause { targets: targets(target)? },
            Action::Partition { shape, groups } => {
                Op::Partition { shape: shape.as_str().into(), groups: groups.iter().map(|g| g.resolve(members, coordinator)).collect() }
            }
            Action::Heal => Op::Heal,
            Action::HostDown { target } => Op::HostDown { targets: targets(target)? },
            Action::HostUp { target } => Op::HostUp { targets: targets(target)? },
            Action::HostFreeze { target } => Op::HostFreeze { targets: targets(target)? },
            Action::HostThaw { target } => Op::HostThaw { targets: targets(target)? },
            Action::Wipe { target } => Op::Wipe { targets: targets(target)? },
            Action::KillAll => Op::Kill { targets: everyone() },
            Action::WipeAll => Op::Wipe { targets: everyone() },
            Action::StartAll => Op::Start { targets: everyone() },
            Action::Block { from } => {
                let from = from.resolve(members, coordinator)?;
                Op::Block { from: vec![from], to: members.iter().copied().filter(|&m| m != from).collect() }
            }
            Action::Slow { target, delay_ms } => Op::Slow { targets: targets(target)?, delay_ms: *delay_ms },
            Action::Link { node, delay_ms, jitter_ms, loss } => {
                let node = match node {
                    Some(m) => m.resolve(members, coordinator)?,
                    None => 0,
                };
                Op::Link { node, delay_ms: *delay_ms, jitter_ms: *jitter_ms, loss: *loss }
            }
        })
    }
}

impl Plan {
    /// How many faults it plays (each becomes one fault line of the history).
    pub fn faults(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Fault(_))).count()
    }

    /// The plan as one line of JSON: the same bytes for the same plan.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why there is no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The clock scenarios follow fixed scripts of their own.
    #[error("{0} is a clock scenario: it has no election plan")]
    NotElection(Scenario),
    /// Fewer than two distinct members (how many there were).
    #[error("an election plan needs at least two members, not {0}")]
    TooFewMembers(usize),
}

/// Seconds to wait for a group to agree after a fault.
const SETTLE: f64 = 5.0;
/// Seconds the group has to elect its first coordinator.
const FIRST_ELECTION: f64 = 10.0;
/// The nemesis draws faults while this much of its duration is left (the shortest hold and rest), ms.
const NEMESIS_MIN_MS: u64 = 1500;

/// The plan of `scenario` on `members` from `seed`; `duration` is how long its main part lasts (each
/// scenario has its own default, as `synclab lab run` documents).
pub fn plan(scenario: Scenario, seed: u64, members: &[NodeId], duration: Option<Duration>) -> Result<Plan, PlanError> {
    // A clock scenario is named as such before its (empty) member list is judged.
    if !scenario.is_election() {
        return Err(PlanError::NotElection(scenario));
    }
    let mut members = members.to_vec();
    members.sort_unstable();
    members.dedup();
    if members.len() < 2 {
        return Err(PlanError::TooFewMembers(members.len()));
    }
    let mut p = Planner { rng: Rng::new(seed), members: members.clone(), steps: vec![Step::AwaitCoordinator { limit: FIRST_ELECTION }] };
    let secs = |d: Duration| d.as_secs_f64();
    let hold = |parts: u32, default: f64| duration.map_or(default, |d| secs(d / parts));
    match scenario {
        Scenario::InitialElection => p.wait(duration.map_or(3.0, secs)),
        Scenario::ReElection => p.re_election(hold(5, 3.0)),
        Scenario::ManyElections => p.many_elections(duration.map_or(9, |d| (secs(d) / 2.0).clamp(1.0, 9.0) as usize)),
        Scenario::PartitionHeal => p.partition_heal(hold(2, 3.0)),
        Scenario::FlakyLink => p.flaky_link(hold(4, 6.0)),
        Scenario::KillCoordinator => p.coordinator_down(Kind::Kill, hold(2, 3.0)),
        Scenario::StopCoordinator => p.coordinator_down(Kind::Stop, hold(2, 3.0)),
        Scenario::PauseCoordinator => p.coordinator_down(Kind::Pause, hold(2, 3.0)),
        Scenario::Steady => p.wait(duration.map_or(60.0, secs)),
        Scenario::SteadyLoss => {
            p.fault(Action::Link { node: None, delay_ms: 0.0, jitter_ms: 0.0, loss: 0.01 });
            p.wait(duration.map_or(60.0, secs));
            p.fault(Action::Heal);
            p.settle();
        }
        Scenario::Nemesis => p.nemesis(duration.unwrap_or(Duration::from_secs(30))),
        Scenario::HostDown => p.coordinator_down(Kind::HostDown, hold(2, 5.0)),
        Scenario::HostFreeze => p.coordinator_down(Kind::HostFreeze, hold(2, 5.0)),
        Scenario::OneWayPartition => p.one_way(hold(4, 3.0)),
        Scenario::CrashLoseState => p.crash_lose_state(hold(2, 3.0)),
        Scenario::ColdStart => p.cold_start(hold(1, 3.0)),
        Scenario::SlowNode => p.slow_node(hold(3, 3.0)),
        Scenario::BerkeleyFaultyClock | Scenario::CristianServerRestart | Scenario::CristianClockBump => {
            return Err(PlanError::NotElection(scenario));
        }
    }
    Ok(Plan { scenario, seed, members, steps: p.steps })
}

enum Kind {
    Kill,
    Stop,
    Pause,
    HostDown,
    HostFreeze,
}

/// A plan being drawn. The order of the draws from `rng` is the order of the scenarios' random
/// choices, so a seed draws the same choices as the runner drew them before plans existed.
struct Planner {
    rng: Rng,
    members: Vec<NodeId>,
    steps: Vec<Step>,
}

impl Planner {
    fn fault(&mut self, action: Action) {
        self.steps.push(Step::Fault(action));
    }

    fn settle(&mut self) {
        self.steps.push(Step::Settle { limit: SETTLE });
    }

    fn wait(&mut self, seconds: f64) {
        self.steps.push(Step::Wait { seconds });
    }

    /// A fault, time to settle, then `hold` seconds.
    fn fault_held(&mut self, action: Action, hold: f64) {
        self.fault(action);
        self.settle();
        self.wait(hold);
    }

    fn isolate(groups: Vec<Group>) -> Action {
        Action::Partition { shape: Shape::Isolate, groups }
    }

    /// Cut the coordinator off, reconnect it; cut it and one more off, reconnect them one by one.
    fn re_election(&mut self, hold: f64) {
        self.steps.push(Step::FindCoordinator);
        self.fault_held(Self::isolate(vec![Group::AllBut(vec![Member::Coordinator])]), hold);
        self.fault_held(Action::Heal, hold);
        self.steps.push(Step::FindCoordinator);
        let one = Member::NotCoordinator(self.rng.below(self.members.len() as u64 - 1) as usize);
        self.fault_held(Self::isolate(vec![Group::AllBut(vec![Member::Coordinator, one])]), hold);
        self.fault_held(Self::isolate(vec![Group::AllBut(vec![Member::Coordinator])]), hold);
        self.fault_held(Action::Heal, hold);
    }

    /// Rounds of cutting off three (of seven or more) or two random members and reconnecting them.
    fn many_elections(&mut self, rounds: usize) {
        let k = if self.members.len() >= 7 { 3 } else { 2 };
        for _ in 0..rounds {
            let cut = self.rng.choose(&self.members, k);
            let rest = self.members.iter().copied().filter(|n| !cut.contains(n)).collect();
            self.fault_held(Self::isolate(vec![Group::Nodes(rest)]), 0.5);
            self.fault_held(Action::Heal, 0.5);
        }
    }

    /// Two random halves, then the heal.
    fn partition_heal(&mut self, hold: f64) {
        let n = self.members.len();
        let mut shuffled = self.rng.choose(&self.members, n);
        let half = shuffled.split_off(n / 2);
        self.fault_held(Action::Partition { shape: Shape::Halves, groups: vec![Group::Nodes(shuffled), Group::Nodes(half)] }, hold);
        self.fault_held(Action::Heal, hold);
    }

    /// 20±10 ms and rising loss on the coordinator's links, each rate held for `hold`.
    fn flaky_link(&mut self, hold: f64) {
        self.steps.push(Step::FindCoordinator);
        for loss in [0.0, 0.1, 0.3, 0.5] {
            self.fault(Action::Link { node: Some(Member::Coordinator), delay_ms: 20.0, jitter_ms: 10.0, loss });
            self.wait(hold);
        }
        self.fault(Action::Heal);
        self.settle();
        self.wait(1.0);
    }

    /// The coordinator killed, stopped or paused, then brought back.
    fn coordinator_down(&mut self, kind: Kind, hold: f64) {
        self.steps.push(Step::FindCoordinator);
        let target = Member::Coordinator;
        let (down, up) = match kind {
            Kind::Kill => (Action::Kill { target }, Action::Start { target }),
            Kind::Stop => (Action::Stop { target }, Action::Start { target }),
            Kind::Pause => (Action::Pause { target }, Action::Unpause { target }),
            Kind::HostDown => (Action::HostDown { target }, Action::HostUp { target }),
            Kind::HostFreeze => (Action::HostFreeze { target }, Action::HostThaw { target }),
        };
        self.fault_held(down, hold);
        self.fault_held(up, hold);
    }

    /// The coordinator's requests lost one way (it still hears everyone and answers), healed; then a
    /// random other member's, healed.
    fn one_way(&mut self, hold: f64) {
        self.steps.push(Step::FindCoordinator);
        self.fault_held(Action::Block { from: Member::Coordinator }, hold);
        self.fault_held(Action::Heal, hold);
        self.steps.push(Step::FindCoordinator);
        let other = Member::NotCoordinator(self.rng.below(self.members.len() as u64 - 1) as usize);
        self.fault_held(Action::Block { from: other }, hold);
        self.fault_held(Action::Heal, hold);
    }

    /// The coordinator killed and its state file lost, then started from term 0.
    fn crash_lose_state(&mut self, hold: f64) {
        self.steps.push(Step::FindCoordinator);
        let target = Member::Coordinator;
        self.fault(Action::Kill { target });
        self.fault_held(Action::Wipe { target }, hold);
        self.fault_held(Action::Start { target }, hold);
    }

    /// Every member killed, every state file lost, every member started at the same moment.
    fn cold_start(&mut self, hold: f64) {
        self.fault(Action::KillAll);
        self.wait(1.0);
        self.fault(Action::WipeAll);
        self.fault_held(Action::StartAll, hold);
    }

    /// The coordinator slowed a little (60 ms: under the suspicion timeout's slack), then a lot (300 ms:
    /// over it), then back to normal.
    fn slow_node(&mut self, hold: f64) {
        self.steps.push(Step::FindCoordinator);
        let target = Member::Coordinator;
        self.fault(Action::Slow { target, delay_ms: 60.0 });
        self.wait(hold);
        self.fault(Action::Slow { target, delay_ms: 300.0 });
        self.wait(hold);
        self.fault_held(Action::Slow { target, delay_ms: 0.0 }, hold);
    }

    /// Random faults, each held for 1-3 s, undone, settled and rested 0.5-1.5 s, drawn until the holds
    /// and rests fill `length` (the last rest takes what is left); then time to settle.
    fn nemesis(&mut self, length: Duration) {
        let nodes = self.members.clone();
        let n = nodes.len();
        let mut left = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        while left >= NEMESIS_MIN_MS {
            let pick = self.rng.below(8);
            let victim = self.rng.choose(&nodes, 1)[0];
            let target = Member::Node(victim);
            let (fault, undo) = match pick {
                0 => (Action::Kill { target }, Action::Start { target }),
                1 => (Action::Stop { target }, Action::Start { target }),
                2 => (Action::Pause { target }, Action::Unpause { target }),
                3 => {
                    let rest = nodes.iter().copied().filter(|&m| m != victim).collect();
                    (Self::isolate(vec![Group::Nodes(rest)]), Action::Heal)
                }
                4 => {
                    let mut order = self.rng.choose(&nodes, n);
                    let half = order.split_off(n / 2);
                    (Action::Partition { shape: Shape::Halves, groups: vec![Group::Nodes(order), Group::Nodes(half)] }, Action::Heal)
                }
                5 => {
                    // A bridge: two halves, and one member that sees both.
                    let mut order = self.rng.choose(&nodes, n);
                    let bridge = order.pop().unwrap_or(victim);
                    let mut half = order.split_off(order.len() / 2);
                    order.push(bridge);
                    half.push(bridge);
                    (Action::Partition { shape: Shape::Bridge, groups: vec![Group::Nodes(order), Group::Nodes(half)] }, Action::Heal)
                }
                6 => {
                    // Majorities in a ring: each member reaches only its two neighbours (with itself, a
                    // majority of five), and no two members see the same majority.
                    let order = self.rng.choose(&nodes, n);
                    let pairs = (0..n).map(|i| Group::Nodes(vec![order[i], order[(i + 1) % n]])).collect();
                    (Action::Partition { shape: Shape::MajoritiesRing, groups: pairs }, Action::Heal)
                }
                _ => {
                    let loss = [0.05, 0.2, 0.4][self.rng.below(3) as usize];
                    let delay_ms = 10.0 + self.rng.below(30) as f64;
                    (Action::Link { node: Some(target), delay_ms, jitter_ms: 10.0, loss }, Action::Heal)
                }
            };
            let hold = (1000 + self.rng.below(2000)).min(left - 500);
            left -= hold;
            let mut rest = (500 + self.rng.below(1000)).min(left);
            left -= rest;
            if left < NEMESIS_MIN_MS {
                rest += left;
                left = 0;
            }
            self.fault(fault);
            self.wait(millis(hold));
            self.fault(undo);
            self.settle();
            self.wait(millis(rest));
        }
        if left > 0 {
            // Too short for one fault: the nemesis only watches.
            self.wait(millis(left));
        }
        self.settle();
        self.wait(1.0);
    }
}

fn millis(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Named;

    fn members(n: u64) -> Vec<NodeId> {
        (1..=n).collect()
    }

    fn elections() -> impl Iterator<Item = Scenario> {
        Scenario::ALL.iter().copied().filter(|s| s.is_election())
    }

    /// Pins determinism: the same inputs give the same bytes, every scenario, several seeds; and the
    /// JSON reads back as the same plan (the history stores it).
    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        for s in elections() {
            for seed in [0, 1, 7, u64::MAX] {
                let n = s.local_nodes();
                let a = plan(s, seed, &members(n), Some(Duration::from_secs(20))).unwrap().to_json();
                let b = plan(s, seed, &members(n), Some(Duration::from_secs(20))).unwrap().to_json();
                assert_eq!(a, b, "{s} seed {seed}");
                let back: Plan = serde_json::from_str(&a).unwrap();
                assert_eq!(back.to_json(), a, "{s}: the JSON reads back as the same plan");
            }
        }
    }

    /// Pins that the nemesis depends on its seed (and on nothing else than its inputs).
    #[test]
    fn different_seeds_give_different_nemesis_plans() {
        let of = |seed| plan(Scenario::Nemesis, seed, &members(5), Some(Duration::from_secs(30))).unwrap().steps;
        let plans: Vec<_> = (1..=8).map(of).collect();
        for i in 0..plans.len() {
            for j in i + 1..plans.len() {
                assert_ne!(plans[i], plans[j], "seeds {} and {} drew the same nemesis", i + 1, j + 1);
            }
        }
    }

    /// Pins the nemesis's budget: its holds and rests add up to exactly the duration (whole ms), so a
    /// seed fixes the count of faults, which is then the same for every run.
    #[test]
    fn a_nemesis_plan_fills_its_duration() {
        for seed in 0..50 {
            for secs in [1.0, 1.5, 2.0, 4.0, 10.0, 30.0, 61.25] {
                let p = plan(Scenario::Nemesis, seed, &members(5), Some(Duration::from_secs_f64(secs))).unwrap();
                let waited: u64 = p
                    .steps
                    .iter()
                    .filter_map(|s| if let Step::Wait { seconds } = s { Some(seconds) } else { None })
                    .map(|s| (s * 1000.0).round() as u64)
                    .sum();
                // Every wait but the last second (after the final settle) is a hold or a rest.
                assert_eq!(waited - 1000, (secs * 1000.0) as u64, "seed {seed}, {secs} s");
                if secs >= 1.5 {
                    assert!(p.faults() >= 2, "seed {seed}, {secs} s: at least one fault and its undoing");
                } else {
                    assert_eq!(p.faults(), 0, "seed {seed}, {secs} s: too short for a fault");
                }
                assert_eq!(p.faults() % 2, 0, "every fault is undone");
            }
        }
        let long = plan(Scenario::Nemesis, 3, &members(5), Some(Duration::from_secs(600))).unwrap();
        assert!(long.faults() > 2 * 600 / 5, "a long nemesis draws many faults: {}", long.faults());
    }

    /// Pins that whatever member rules when a step plays, no step names a member outside the group,
    /// for every scenario, seed and size.
    #[test]
    fn a_plan_never_targets_a_non_member() {
        for s in elections() {
            for seed in 0..30 {
                for group in [vec![1, 2], vec![1, 2, 3], members(5), members(7), vec![2, 4, 9, 11, 20]] {
                    let p = plan(s, seed, &group, Some(Duration::from_secs(12))).unwrap();
                    assert_eq!(p.members, group);
                    for step in &p.steps {
                        let Step::Fault(action) = step else { continue };
                        if let Action::Partition { groups, .. } = action {
                            for g in groups {
                                if let Group::Nodes(ids) = g {
                                    assert!(ids.iter().all(|id| group.contains(id)), "{s} seed {seed}: {g:?}");
                                }
                            }
                        }
                        for &c in &group {
                            let op = action.resolve(&group, c).unwrap_or_else(|| panic!("{s} seed {seed}: {action:?} names no member"));
                            let ids: Vec<NodeId> = match &op {
                                Op::Kill { targets }
                                | Op::Stop { targets }
                                | Op::Start { targets }
                                | Op::Pause { targets }
                                | Op::Unpause { targets } => {
                                    targets.iter().map(|t| t.strip_prefix("node-").unwrap().parse().unwrap()).collect()
                                }
                                Op::Partition { groups, .. } => groups.concat(),
                                Op::Link { node, .. } => {
                                    if *node == 0 {
                                        vec![]
                                    } else {
                                        vec![*node]
                                    }
                                }
                                _ => vec![],
                            };
                            assert!(ids.iter().all(|id| group.contains(id)), "{s} seed {seed} coordinator {c}: {op:?}");
                        }
                    }
                }
            }
        }
    }

    /// Pins how symbols resolve: the coordinator found, and ranks among the others by id.
    #[test]
    fn symbols_resolve_against_the_coordinator_found() {
        let group = [2, 4, 9];
        assert_eq!(Member::Coordinator.resolve(&group, 9), Some(9));
        assert_eq!(Member::NotCoordinator(0).resolve(&group, 2), Some(4));
        assert_eq!(Member::NotCoordinator(1).resolve(&group, 4), Some(9));
        assert_eq!(Member::NotCoordinator(2).resolve(&group, 4), None);
        assert_eq!(Member::Node(5).resolve(&group, 4), None);
        let g = Group::AllBut(vec![Member::Coordinator, Member::NotCoordinator(0)]);
        assert_eq!(g.resolve(&group, 9), vec![4], "all but the coordinator and the first other");
    }

    /// Pins the scenarios' shapes as they were before plans: the defaults and the faults each plays.
    #[test]
    fn scenarios_keep_their_faults_and_defaults() {
        let ops = |s: Scenario, d: Option<Duration>| -> Vec<&'static str> {
            let p = plan(s, 1, &members(s.local_nodes()), d).unwrap();
            p.steps
                .iter()
                .filter_map(|st| if let Step::Fault(a) = st { a.resolve(&p.members, 5).map(|o| o.name()) } else { None })
                .collect()
        };
        assert_eq!(ops(Scenario::KillCoordinator, None), ["kill", "start"]);
        assert_eq!(ops(Scenario::StopCoordinator, None), ["stop", "start"]);
        assert_eq!(ops(Scenario::PauseCoordinator, None), ["pause", "unpause"]);
        assert_eq!(ops(Scenario::PartitionHeal, None), ["partition", "heal"]);
        assert_eq!(ops(Scenario::ReElection, None), ["partition", "heal", "partition", "partition", "heal"]);
        assert_eq!(ops(Scenario::FlakyLink, None), ["link", "link", "link", "link", "heal"]);
        assert_eq!(ops(Scenario::SteadyLoss, None), ["link", "heal"]);
        assert!(ops(Scenario::Steady, None).is_empty() && ops(Scenario::InitialElection, None).is_empty());
        assert_eq!(ops(Scenario::ManyElections, None).len(), 18, "nine rounds by default");
        assert_eq!(ops(Scenario::ManyElections, Some(Duration::from_secs(4))).len(), 4, "a round per 2 s");
        let wait = |s: Scenario| {
            plan(s, 1, &members(5), None)
                .unwrap()
                .steps
                .iter()
                .filter_map(|st| if let Step::Wait { seconds } = st { Some(*seconds) } else { None })
                .sum::<f64>()
        };
        assert_eq!(wait(Scenario::Steady), 60.0);
        assert_eq!(wait(Scenario::InitialElection), 3.0);
        assert_eq!(wait(Scenario::KillCoordinator), 6.0);
        assert_eq!(plan(Scenario::CristianClockBump, 1, &members(5), None), Err(PlanError::NotElection(Scenario::CristianClockBump)));
        // As `synclab lab plan` asks for a clock scenario: with its member count, none.
        assert_eq!(plan(Scenario::CristianClockBump, 1, &[], None), Err(PlanError::NotElection(Scenario::CristianClockBump)));
        assert_eq!(plan(Scenario::Steady, 1, &[3, 3], None), Err(PlanError::TooFewMembers(1)));
    }
}
