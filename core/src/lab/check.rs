//! The checkers: each reads a whole history and says valid, invalid (with every violation) or unknown
//! (nothing to judge by), with its figures.
//!
//! - **election-safety**: never two coordinators in one term — unless a partition had them in groups
//!   that could not reach each other when they claimed it (a split brain Bully and Ring both allow:
//!   neither needs a majority); those are counted as `split_brain_terms`.
//! - **election-liveness**: after every fault operation (and after the start), the live nodes of each
//!   group that can reach each other all follow one coordinator within the run's `settle_bound`. A
//!   window shorter than the bound that ends before the group settled is `interrupted`, not a
//!   violation; while a link is lossy or slow nothing is required, and the elections it caused are
//!   counted (`elections_while_degraded`). Each settle time is named by the fault it follows:
//!   `failover_settle_*` after a kill, stop, pause, partition or bad link, `return_settle_*` after a
//!   start, unpause or heal (a returning higher node's takeover), so one never passes for the other.
//!   Each is timed from the moment the fault's operation began (the engine's own latency included, as
//!   the election benchmark times its trials), and judged in the world after the fault.
//! - **highest-id**: once a group has settled, its coordinator is its highest live id (Bully and Ring
//!   alike; a node cut off alone coordinates itself).
//! - **cristian**: every sync's true error lies inside its reported bound, and after every fault each
//!   device has a sync inside its bound within one interval (plus a second of slack).
//! - **berkeley**: after every fault the group's spread is back under its bound within `spread_rounds`
//!   rounds, and a clock bumped by more than the bound is left out of the next round's average.
//!
//! Groups are worked out from the faults: killed, stopped and paused nodes are down until started or
//! unpaused; a partition puts nodes into groups until a heal. In a bridge (overlapping groups) who
//! should lead is not defined, so liveness and the highest-id rule are not required there.
//!
//! (Over 700 lines with its tests, about a third of it: the checkers share one reading of the
//! history, who could reach whom and when, and one file keeps that reading beside every checker that
//! uses it.)

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::history::{ElectionObservation, Event, Fault, Op, Role, RunInfo};
use crate::election::NodeId;
use crate::election::safety::{Claims, Violation};

/// A checker's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validity {
    /// Judged, and no rule was broken.
    Valid,
    /// At least one violation.
    Invalid,
    /// Nothing to judge by (e.g. the cluster could not be observed).
    Unknown,
}

impl Validity {
    /// The run's exit code for it: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Validity::Valid => 0,
            Validity::Invalid => 1,
            Validity::Unknown => 2,
        }
    }

    /// Invalid beats unknown beats valid.
    fn and(self, other: Validity) -> Validity {
        use Validity::*;
        match (self, other) {
            (Invalid, _) | (_, Invalid) => Invalid,
            (Unknown, _) | (_, Unknown) => Unknown,
            _ => Valid,
        }
    }
}

/// One checker's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The verdict.
    pub valid: Validity,
    /// What went wrong, one line each (at most [`MAX_VIOLATIONS`] kept; `violation_count` has them all).
    pub violations: Vec<String>,
    /// How many violations there were, including those not kept in `violations`.
    pub violation_count: usize,
    /// The checker's figures, by name.
    pub figures: BTreeMap<String, serde_json::Value>,
}

/// The violations a result keeps in full.
pub const MAX_VIOLATIONS: usize = 50;

impl CheckResult {
    fn new() -> Self {
        Self { valid: Validity::Valid, violations: Vec::new(), violation_count: 0, figures: BTreeMap::new() }
    }

    fn unknown(why: &str) -> Self {
        let mut r = Self::new();
        r.valid = Validity::Unknown;
        r.figures.insert("why".into(), why.into());
        r
    }

    fn violation(&mut self, what: String) {
        self.valid = Validity::Invalid;
        self.violation_count += 1;
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(what);
        }
    }

    fn figure(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.figures.insert(name.into(), value.into());
    }
}

/// Every checker's result over one history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The verdict over all checkers: invalid if any is, else unknown if any is, else valid (unknown
    /// when nothing could be checked).
    pub valid: Validity,
    /// Each checker's result by its name (`election-safety`, `election-liveness`, `highest-id`,
    /// `cristian`, `berkeley`; `history` when there was nothing to check).
    pub checkers: BTreeMap<String, CheckResult>,
}

/// Runs every checker that applies to `events` (those with nothing to check are left out).
pub fn check(events: &[Event]) -> Results {
    let run = events.iter().find_map(|e| if let Event::Run(r) = e { Some(r.clone()) } else { None });
    let Some(run) = run else {
        let mut checkers = BTreeMap::new();
        checkers.insert("history".into(), CheckResult::unknown("the history has no run line"));
        return Results { valid: Validity::Unknown, checkers };
    };
    let faults: Vec<Fault> = events.iter().filter_map(|e| if let Event::Fault(f) = e { Some(f.clone()) } else { None }).collect();
    let end = events.iter().map(event_time).fold(0.0, f64::max);
    let mut checkers = BTreeMap::new();
    if !run.nodes.is_empty() {
        let mut observations: Vec<ElectionObservation> =
            events.iter().filter_map(|e| if let Event::Election(o) = e { Some(o.clone()) } else { None }).collect();
        observations.sort_by(|a, b| a.time.total_cmp(&b.time));
        let world = Worlds::new(&run, &faults);
        checkers.insert("election-safety".into(), election_safety(&observations, &world));
        let (liveness, highest) = election_liveness(&run, &observations, &world, &faults, end);
        checkers.insert("election-liveness".into(), liveness);
        checkers.insert("highest-id".into(), highest);
    }
    if events.iter().any(|e| matches!(e, Event::Sync(_))) {
        checkers.insert("cristian".into(), cristian(&run, events, &faults, end));
    }
    if events.iter().any(|e| matches!(e, Event::Round(_))) {
        checkers.insert("berkeley".into(), berkeley(&run, events, &faults));
    }
    let valid = if checkers.is_empty() {
        checkers.insert("history".into(), CheckResult::unknown("nothing was observed"));
        Validity::Unknown
    } else {
        checkers.values().fold(Validity::Valid, |v, c| v.and(c.valid))
    };
    Results { valid, checkers }
}

pub(super) fn event_time(e: &Event) -> f64 {
    match e {
        Event::Run(_) | Event::Plan(_) => 0.0,
        Event::Fault(f) => f.end,
        Event::Election(o) => o.time,
        Event::Message(m) => m.time,
        Event::Clock(c) => c.time,
        Event::Sync(s) => s.time,
        Event::Round(r) => r.time,
    }
}

/// The id of an election node's target name: `node-3` (or `3`).
pub fn node_id(target: &str) -> Option<NodeId> {
    target.strip_prefix("node-").unwrap_or(target).parse().ok()
}

/// Who is up and who can reach whom, from one fault to the next.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct World {
    down: BTreeSet<NodeId>,
    /// `None`: everyone reaches everyone.
    groups: Option<Vec<Vec<NodeId>>>,
    /// Some link is slow or lossy.
    degraded: bool,
}

impl World {
    fn can_reach(&self, a: NodeId, b: NodeId) -> bool {
        match &self.groups {
            None => true,
            Some(groups) => a == b || groups.iter().any(|g| g.contains(&a) && g.contains(&b)),
        }
    }

    /// The live nodes in groups that settle on their own, or `None` for a bridge (overlapping groups).
    pub(super) fn components(&self, nodes: &[NodeId]) -> Option<Vec<Vec<NodeId>>> {
        let live: Vec<NodeId> = nodes.iter().copied().filter(|n| !self.down.contains(n)).collect();
        let Some(groups) = &self.groups else { return Some(vec![live]) };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for group in groups {
            let members: Vec<NodeId> = group.iter().copied().filter(|n| live.contains(n)).collect();
            if members.iter().any(|n| !seen.insert(*n)) {
                return None;
            }
            if !members.is_empty() {
                out.push(members);
            }
        }
        // Nodes in no group are each on their own.
        out.extend(live.iter().filter(|n| !seen.contains(n)).map(|n| vec![*n]));
        Some(out)
    }
}

/// The world after each fault, in order, with the time it took effect.
pub(super) struct Worlds {
    /// (from, world): the world from `from` on.
    steps: Vec<(f64, World)>,
}

impl Worlds {
    pub(super) fn new(run: &RunInfo, faults: &[Fault]) -> Self {
        let mut world = World { down: BTreeSet::new(), groups: None, degraded: false };
        let mut steps = vec![(0.0, world.clone())];
        let mut links: BTreeSet<NodeId> = BTreeSet::new();
        // One-way partitions and slow nodes degrade the group as lossy links do: nothing is required
        // while they last, and the elections they cause are counted.
        let mut blocked = false;
        let mut slow: BTreeSet<NodeId> = BTreeSet::new();
        // A fault whose operation failed (e.g. a host fault on the swarm's manager, which the lab cannot
        // cut off) changed nothing: the group is judged as it really was.
        for fault in faults.iter().filter(|f| f.error.is_none()) {
            let ids = |targets: &[String]| -> Vec<NodeId> {
                targets.iter().filter_map(|t| node_id(t)).filter(|n| run.nodes.contains(n)).collect()
            };
            match &fault.op {
                Op::Kill { targets } | Op::Stop { targets } | Op::Pause { targets } | Op::HostFreeze { targets } => {
                    world.down.extend(ids(targets))
                }
                // The host's nodes and the others are two sides of a partition.
                Op::HostDown { targets } => {
                    let cut = ids(targets);
                    let rest = run.nodes.iter().copied().filter(|n| !cut.contains(n)).collect();
                    world.groups = Some(vec![cut, rest]);
                }
                Op::HostUp { .. } => world.groups = None,
                Op::Start { targets } | Op::Unpause { targets } | Op::HostThaw { targets } => {
                    for n in ids(targets) {
                        world.down.remove(&n);
                    }
                }
                Op::Partition { groups, .. } => world.groups = Some(groups.clone()),
                Op::Heal => {
                    world.groups = None;
                    links.clear();
                    blocked = false;
                }
                Op::Block { .. } => blocked = true,
                Op::Slow { targets, delay_ms } => {
                    for n in ids(targets) {
                        if *delay_ms > 0.0 {
                            slow.insert(n);
                        } else {
                            slow.remove(&n);
                        }
                    }
                }
                Op::Wipe { .. } => {}
                Op::Link { node, delay_ms, jitter_ms, loss } => {
                    if *delay_ms > 0.0 || *jitter_ms > 0.0 || *loss > 0.0 {
                        links.insert(*node);
                    } else {
                        links.remove(node);
                    }
                }
                Op::Bump { .. } | Op::Strobe { .. } | Op::Drift { .. } => {}
            }
            world.degraded = !links.is_empty() || blocked || !slow.is_empty();
            // A fault takes effect somewhere between its start and its end; observations in between are
            // not held against either world.
            steps.push((fault.end, world.clone()));
        }
        Self { steps }
    }

    pub(super) fn at(&self, time: f64) -> &World {
        let i = self.steps.partition_point(|(from, _)| *from <= time);
        &self.steps[i.saturating_sub(1)].1
    }
}

/// One coordinator per term among nodes that can reach each other: the rule of
/// [`crate::election::safety::Claims`], with a pair excused when a partition had them apart when either
/// claimed the term.
fn election_safety(observations: &[ElectionObservation], worlds: &Worlds) -> CheckResult {
    let mut result = CheckResult::new();
    let mut claims: Claims<f64> = Claims::new();
    let apart = |a: NodeId, ta: &f64, b: NodeId, tb: &f64| !worlds.at(*ta).can_reach(a, b) || !worlds.at(*tb).can_reach(a, b);
    for o in observations.iter().filter(|o| o.role == Role::Coordinator) {
        for violation in claims.claim(o.term, o.node, o.time, apart) {
            if let Violation::TwoCoordinators { term, first, second } = violation {
                let ta = claims.claimed_at(term, first).copied().unwrap_or(f64::NAN);
                result.violation(format!(
                    "term {term}: node {first} (at {ta:.3} s) and node {second} (at {:.3} s) both coordinated, able to reach each other",
                    o.time
                ));
            }
        }
    }
    result.figure("terms", claims.terms() as u64);
    result.figure("split_brain_terms", claims.excused_terms() as u64);
    if observations.is_empty() {
        return CheckResult::unknown("no election node was observed");
    }
    result
}

/// The settle times, and the highest-id rule at each settle.
fn election_liveness(
    run: &RunInfo,
    observations: &[ElectionObservation],
    worlds: &Worlds,
    faults: &[Fault],
    end: f64,
) -> (CheckResult, CheckResult) {
    let mut live = CheckResult::new();
    let mut highest = CheckResult::new();
    if observations.iter().all(|o| o.role == Role::Unreachable) {
        return (CheckResult::unknown("no election node answered"), CheckResult::unknown("no election node answered"));
    }
    // Windows: from the start, and from the start of every fault, to the start of the next one, each
    // judged in the world after its fault. A settle is timed from the moment the fault's operation
    // began: a fault takes effect somewhere before its operation returns (a `docker kill` can return
    // after the survivors have already agreed), so timing from its end would miss such failovers.
    // Each window is named by the fault it follows: a failover (something taken away) or a return.
    let mut windows: Vec<(f64, f64, f64, String, Option<SettleKind>)> = Vec::new();
    let mut from = (0.0, 0.0, "the start".to_string(), None);
    for fault in faults {
        windows.push((from.0, from.1, fault.start, from.2.clone(), from.3));
        from = (fault.start, fault.end, fault.op.describe(), SettleKind::after(&fault.op));
    }
    windows.push((from.0, from.1, f64::INFINITY, from.2, from.3));
    let mut settle_times = Vec::new();
    let mut by_kind: BTreeMap<SettleKind, Vec<f64>> = BTreeMap::new();
    let mut degraded = Vec::new();
    let (mut interrupted, mut not_required, mut degraded_elections, mut undisturbed) = (0u64, 0u64, 0u64, 0u64);
    for (start, world_at, stop, after, kind) in windows {
        let world = worlds.at(world_at);
        let in_window: Vec<&ElectionObservation> = observations.iter().filter(|o| o.time >= start && o.time < stop).collect();
        let before: Vec<&ElectionObservation> = observations.iter().filter(|o| o.time < start).collect();
        let Some(components) = world.components(&run.nodes) else {
            not_required += 1;
            continue;
        };
        if world.degraded {
            not_required += 1;
            let elections = elections_in(&in_window);
            degraded_elections += elections;
            degraded.push(serde_json::json!({ "after": after, "seconds": stop.min(end) - start, "elections": elections }));
            continue;
        }
        match settle(&components, &before, &in_window, start) {
            Some((at, coordinators)) => {
                if at > start {
                    settle_times.push(at - start);
                    if let Some(kind) = kind {
                        by_kind.entry(kind).or_default().push(at - start);
                    }
                } else {
                    undisturbed += 1;
                }
                if at - start > run.settle_bound {
                    live.violation(format!("settled {:.3} s after {after}, later than the bound of {} s", at - start, run.settle_bound));
                }
                for (group, coordinator) in components.iter().zip(coordinators) {
                    let max = group.iter().copied().max().unwrap_or(0);
                    if coordinator != max {
                        highest.violation(format!(
                            "after {after}: group {group:?} settled on node {coordinator}, not on its highest live id {max}"
                        ));
                    }
                }
            }
            None if stop.min(end) - start < run.settle_bound => interrupted += 1,
            None => live.violation(format!(
                "the group {components:?} did not settle within {} s after {after} (observed until {:.3} s)",
                run.settle_bound,
                stop.min(end)
            )),
        }
    }
    settle_times.sort_by(f64::total_cmp);
    live.figure("settled", settle_times.len() as u64);
    live.figure("interrupted", interrupted);
    live.figure("undisturbed", undisturbed);
    live.figure("not_required", not_required);
    live.figure("elections_while_degraded", degraded_elections);
    live.figure("degraded_windows", degraded);
    live.figure("settle_seconds", settle_times.clone());
    // Named by the fault each settle follows: a failover's time is not a return's takeover.
    for (kind, mut times) in by_kind {
        times.sort_by(f64::total_cmp);
        let name = kind.name();
        live.figure(&format!("{name}_settle_median_seconds"), quantile(&times, 0.5));
        live.figure(&format!("{name}_settle_p99_seconds"), quantile(&times, 0.99));
        live.figure(&format!("{name}_settle_max_seconds"), times[times.len() - 1]);
        live.figure(&format!("{name}_settle_seconds"), times);
    }
    highest.figure("checked", settle_times.len() as u64);
    (live, highest)
}

/// What a settle follows: a failover (a fault took something away: kill, stop, pause, partition, a
/// slow or lossy link) or a return (it gave it back: start, unpause, heal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SettleKind {
    Failover,
    Return,
}

impl SettleKind {
    fn after(op: &Op) -> Option<SettleKind> {
        match op {
            Op::Kill { .. }
            | Op::Stop { .. }
            | Op::Pause { .. }
            | Op::Partition { .. }
            | Op::Link { .. }
            | Op::Block { .. }
            | Op::HostDown { .. }
            | Op::HostFreeze { .. } => Some(SettleKind::Failover),
            Op::Start { .. } | Op::Unpause { .. } | Op::Heal | Op::HostUp { .. } | Op::HostThaw { .. } => Some(SettleKind::Return),
            Op::Slow { delay_ms, .. } => Some(if *delay_ms > 0.0 { SettleKind::Failover } else { SettleKind::Return }),
            // A deleted state file changes nothing until its node starts again.
            Op::Wipe { .. } | Op::Bump { .. } | Op::Strobe { .. } | Op::Drift { .. } => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SettleKind::Failover => "failover",
            SettleKind::Return => "return",
        }
    }
}

/// When, from `start` on, every group's nodes came to follow one coordinator of their group in one term
/// and kept doing so for the rest of the window; with each group's coordinator. (A moment of agreement
/// that breaks again — a returning higher node that first follows, then takes over — is not settling.)
/// A node's state is its latest answered observation (the lab records each change), so a node that was
/// not disturbed needs no new one.
fn settle(
    components: &[Vec<NodeId>],
    before: &[&ElectionObservation],
    observations: &[&ElectionObservation],
    start: f64,
) -> Option<(f64, Vec<NodeId>)> {
    // A node that misses one of the lab's reads keeps its last reported state: the groups are worked out
    // from the faults, and a read that timed out on a busy machine says nothing about the election.
    let answered = |o: &&&ElectionObservation| o.role != Role::Unreachable;
    let mut latest: BTreeMap<NodeId, &ElectionObservation> = before.iter().filter(answered).map(|o| (o.node, *o)).collect();
    let moments = std::iter::once((start, None)).chain(observations.iter().filter(answered).map(|o| (o.time, Some(*o))));
    let mut since: Option<(f64, Vec<NodeId>)> = None;
    for (time, o) in moments {
        if let Some(o) = o {
            latest.insert(o.node, o);
        }
        match (agreed(components, &latest), &since) {
            (Some(coordinators), Some((_, held))) if *held == coordinators => {}
            (Some(coordinators), _) => since = Some((time, coordinators)),
            (None, _) => since = None,
        }
    }
    since
}

/// Each group's coordinator, if every group's nodes follow one of their own in one term.
pub(super) fn agreed(components: &[Vec<NodeId>], latest: &BTreeMap<NodeId, &ElectionObservation>) -> Option<Vec<NodeId>> {
    let mut coordinators = Vec::new();
    for group in components {
        let states: Vec<&&ElectionObservation> = group.iter().map(|n| latest.get(n)).collect::<Option<_>>()?;
        // A group with no live node (every node down) has nothing to agree on.
        let Some(first) = states.first() else { continue };
        let c = first.coordinator?;
        let term = first.term;
        let agreed = group.contains(&c)
            && states.iter().all(|s| {
                let role = if s.node == c { Role::Coordinator } else { Role::Follower };
                s.coordinator == Some(c) && s.term == term && s.role == role
            });
        if !agreed {
            return None;
        }
        coordinators.push(c);
    }
    Some(coordinators)
}

/// How many elections the observations show: terms that rose.
fn elections_in(observations: &[&ElectionObservation]) -> u64 {
    let terms: BTreeSet<u64> = observations.iter().filter(|o| o.role != Role::Unreachable).map(|o| o.term).collect();
    terms.len().saturating_sub(1) as u64
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn cristian(run: &RunInfo, events: &[Event], faults: &[Fault], end: f64) -> CheckResult {
    let mut result = CheckResult::new();
    let syncs: Vec<_> = events.iter().filter_map(|e| if let Event::Sync(s) = e { Some(s) } else { None }).collect();
    let mut worst_ratio: f64 = 0.0;
    for s in &syncs {
        let ratio = s.true_error_nanos.unsigned_abs() as f64 / s.error_bound_nanos.max(1) as f64;
        worst_ratio = worst_ratio.max(ratio);
        if s.true_error_nanos.unsigned_abs() > s.error_bound_nanos {
            result.violation(format!(
                "{} at {:.3} s: true error {} ns outside its bound ±{} ns",
                s.device, s.time, s.true_error_nanos, s.error_bound_nanos
            ));
        }
    }
    let devices: BTreeSet<&str> = syncs.iter().map(|s| s.device.as_str()).collect();
    let within = run.sync_interval + 1.0;
    let mut recoveries = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        // Recovery is due after a fault is over: not while a server is down, nor when the next fault
        // comes first.
        let next = faults.get(i + 1).map_or(f64::INFINITY, |f| f.start);
        if takes_down(&fault.op) || fault.end + within > end.min(next) {
            continue;
        }
        for device in &devices {
            let back = syncs
                .iter()
                .find(|s| s.device == *device && s.time > fault.end && s.true_error_nanos.unsigned_abs() <= s.error_bound_nanos);
            match back {
                Some(s) if s.time - fault.end <= within => recoveries.push(s.time - fault.end),
                _ => result.violation(format!("{device} was not back inside its bound within {within:.1} s after {}", fault.op.describe())),
            }
        }
    }
    result.figure("syncs", syncs.len() as u64);
    result.figure("worst_error_to_bound", worst_ratio);
    result.figure("recovery_seconds", recoveries);
    result
}

/// Whether `op` takes processes down (recovery is due after they come back, not before).
fn takes_down(op: &Op) -> bool {
    matches!(op, Op::Kill { .. } | Op::Stop { .. } | Op::Pause { .. } | Op::HostDown { .. } | Op::HostFreeze { .. })
}

fn berkeley(run: &RunInfo, events: &[Event], faults: &[Fault]) -> CheckResult {
    let mut result = CheckResult::new();
    let rounds: Vec<_> = events.iter().filter_map(|e| if let Event::Round(r) = e { Some(r) } else { None }).collect();
    let bound = run.spread_bound_nanos;
    let n = run.spread_rounds.max(1) as usize;
    for (i, fault) in faults.iter().enumerate() {
        let next = faults.get(i + 1).map_or(f64::INFINITY, |f| f.start);
        if takes_down(&fault.op) {
            continue;
        }
        let after: Vec<_> = rounds.iter().filter(|r| r.time > fault.end && r.time < next).collect();
        if after.len() < n {
            continue;
        }
        if !after[..n].iter().any(|r| r.spread_nanos <= bound) {
            result.violation(format!("the spread was not back under {bound} ns within {n} rounds after {}", fault.op.describe()));
        }
        if let Op::Bump { target, by_nanos } = &fault.op
            && by_nanos.unsigned_abs() > bound
            && !after[0].excluded.iter().any(|m| m.eq_ignore_ascii_case(target))
        {
            result.violation(format!("{target}, bumped by {by_nanos} ns, was averaged in round {} instead of left out", after[0].round));
        }
    }
    let spreads: Vec<f64> = rounds.iter().map(|r| r.spread_nanos as f64).collect();
    result.figure("rounds", rounds.len() as u64);
    if let Some(last) = spreads.last() {
        result.figure("last_spread_nanos", *last);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::history::{RoundObservation, SyncObservation};

    fn run(nodes: &[NodeId]) -> Event {
        Event::Run(RunInfo {
            scenario: "test".into(),
            seed: 1,
            algorithm: "bully".into(),
            backend: "local".into(),
            nodes: nodes.to_vec(),
            settle_bound: 2.0,
            sync_interval: 5.0,
            spread_bound_nanos: 1_000_000,
            spread_rounds: 2,
            detector: String::new(),
            heartbeat: 0.0,
        })
    }

    fn obs(time: f64, node: NodeId, role: Role, term: u64, coordinator: Option<NodeId>) -> Event {
        Event::Election(ElectionObservation { time, node, role, term, coordinator })
    }

    /// Every node of `nodes` following `c` in `term` at `time`.
    fn settled(time: f64, nodes: &[NodeId], c: NodeId, term: u64) -> Vec<Event> {
        nodes.iter().map(|&n| obs(time, n, if n == c { Role::Coordinator } else { Role::Follower }, term, Some(c))).collect()
    }

    fn fault(start: f64, op: Op) -> Event {
        Event::Fault(Fault { start, end: start + 0.01, op, error: None })
    }

    fn kill(n: NodeId) -> Op {
        Op::Kill { targets: vec![format!("node-{n}")] }
    }

    #[test]
    fn a_clean_failover_is_valid_with_its_settle_time() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(fault(1.0, kill(3)));
        h.extend(settled(1.31, &[1, 2], 2, 2));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        let settle = &r.checkers["election-liveness"].figures["settle_seconds"];
        assert_eq!(settle.as_array().unwrap().len(), 2);
        // Timed from the kill's start (1.0), not its end (1.01).
        assert!((settle[1].as_f64().unwrap() - 0.31).abs() < 1e-9);
    }

    /// A fault whose operation failed changed nothing: the group that kept its coordinator is settled,
    /// not a group that "did not settle" in a world the fault never made.
    #[test]
    fn a_fault_that_failed_changes_nothing() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        let cut = Op::HostDown { targets: vec!["node-3".into()] };
        h.push(Event::Fault(Fault { start: 1.0, end: 1.01, op: cut.clone(), error: Some("no host fault on z0".into()) }));
        h.extend(settled(1.5, &[1, 2, 3], 3, 1));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        // The same fault, done: nodes 1 and 2 still following 3 across the cut do not settle.
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(Event::Fault(Fault { start: 1.0, end: 1.01, op: cut, error: None }));
        h.extend(settled(1.5, &[1, 2, 3], 3, 1));
        h.push(obs(9.0, 1, Role::Follower, 1, Some(3)));
        assert_eq!(check(&h).checkers["election-liveness"].valid, Validity::Invalid);
    }

    /// A `docker kill` may return after the survivors have already agreed on a new coordinator: the
    /// failover still counts, timed from the kill's start, and is not taken for an undisturbed window.
    #[test]
    fn a_failover_over_before_its_operation_returned_is_still_timed() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(Event::Fault(Fault { start: 1.0, end: 1.5, op: kill(3), error: None }));
        h.extend(settled(1.05, &[1, 2], 2, 2));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        let figures = &r.checkers["election-liveness"].figures;
        let failovers = figures["failover_settle_seconds"].as_array().unwrap();
        assert_eq!(failovers.len(), 1, "{figures:?}");
        assert!((failovers[0].as_f64().unwrap() - 0.05).abs() < 1e-9, "{figures:?}");
        assert_eq!(figures["undisturbed"], 0);
    }

    /// Pins a cold start: every node killed leaves nothing to agree on (no panic, nothing owed), and
    /// after every node starts again the group owes a settle within the bound: met, valid; never met,
    /// invalid.
    #[test]
    fn a_cold_start_owes_one_settle_after_every_node_starts() {
        let nodes = [1, 2, 3];
        let all: Vec<String> = nodes.iter().map(|n| format!("node-{n}")).collect();
        let mut h = vec![run(&nodes)];
        h.extend(settled(0.2, &nodes, 3, 3));
        h.push(fault(1.0, Op::Kill { targets: all.clone() }));
        h.extend(nodes.iter().map(|&n| obs(1.05, n, Role::Unreachable, 3, None)));
        h.push(fault(1.5, Op::Wipe { targets: all.clone() }));
        h.push(fault(2.0, Op::Start { targets: all }));
        let mut slow = h.clone();
        h.extend(settled(2.4, &nodes, 3, 3));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        // Candidates that never agree: the window after the start is owed and missed.
        slow.extend(nodes.iter().map(|&n| obs(2.1, n, Role::Candidate, 0, None)));
        slow.push(obs(9.0, 1, Role::Candidate, 0, None));
        let r = check(&slow);
        assert_eq!(r.checkers["election-liveness"].valid, Validity::Invalid, "{r:#?}");
    }

    /// Pins that a one-way partition and a slow node are judged like a lossy link: nothing is owed while
    /// they last, the elections they cause are counted, and a settle is owed once they are undone.
    #[test]
    fn one_way_partitions_and_slow_nodes_degrade_and_then_owe_a_settle() {
        for (fault_op, undo) in [
            (Op::Block { from: vec![3], to: vec![1, 2] }, Op::Heal),
            (Op::Slow { targets: vec!["node-3".into()], delay_ms: 300.0 }, Op::Slow { targets: vec!["node-3".into()], delay_ms: 0.0 }),
        ] {
            let mut h = vec![run(&[1, 2, 3])];
            h.extend(settled(0.2, &[1, 2, 3], 3, 3));
            h.push(fault(1.0, fault_op.clone()));
            h.push(obs(1.2, 1, Role::Candidate, 4, None));
            h.push(obs(1.5, 2, Role::Coordinator, 5, Some(2)));
            let mut healed = h.clone();
            healed.push(fault(3.0, undo.clone()));
            healed.extend(settled(3.3, &[1, 2, 3], 3, 6));
            let r = check(&healed);
            assert_eq!(r.valid, Validity::Valid, "{fault_op:?}: {r:#?}");
            assert_eq!(r.checkers["election-liveness"].figures["elections_while_degraded"], 1, "{fault_op:?}");
            // Undone, but the group stays split past the bound: invalid.
            h.push(fault(3.0, undo));
            h.push(obs(9.0, 1, Role::Follower, 5, Some(2)));
            assert_eq!(check(&h).checkers["election-liveness"].valid, Validity::Invalid, "{fault_op:?}");
        }
    }

    #[test]
    fn each_settle_is_named_by_the_fault_it_follows() {
        // kill-coordinator: node 3 dies, node 2 takes over 20 ms after the kill began; node 3 returns
        // and takes over again 0.694 s after its start began.
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(fault(1.0, kill(3)));
        h.extend(settled(1.02, &[1, 2], 2, 2));
        h.push(fault(2.0, Op::Start { targets: vec!["node-3".into()] }));
        h.extend(settled(2.694, &[1, 2, 3], 3, 3));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        let figures = &r.checkers["election-liveness"].figures;
        let median = |name: &str| figures.get(name).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("no {name} in {figures:?}"));
        assert!((median("failover_settle_median_seconds") - 0.02).abs() < 1e-9);
        assert!((median("return_settle_median_seconds") - 0.694).abs() < 1e-9);
        assert!(!figures.contains_key("settle_median_seconds"), "a median of failovers and returns together: {figures:?}");
    }

    #[test]
    fn two_coordinators_in_one_term_that_reach_each_other_are_invalid() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(obs(0.3, 2, Role::Coordinator, 1, Some(2)));
        let r = check(&h);
        assert_eq!(r.checkers["election-safety"].valid, Validity::Invalid);
        assert!(r.checkers["election-safety"].violations[0].contains("term 1"));
        assert_eq!(r.valid, Validity::Invalid);
    }

    #[test]
    fn a_split_brain_across_a_partition_is_allowed_and_counted() {
        let mut h = vec![run(&[1, 2, 3, 4])];
        h.extend(settled(0.2, &[1, 2, 3, 4], 4, 1));
        h.push(fault(1.0, Op::Partition { shape: "halves".into(), groups: vec![vec![1, 2], vec![3, 4]] }));
        h.extend(settled(1.4, &[1, 2], 2, 2));
        h.extend(settled(1.4, &[3, 4], 4, 1));
        h.push(fault(2.0, Op::Heal));
        h.extend(settled(2.5, &[1, 2, 3, 4], 4, 3));
        // the other half also reached term 2 on its own
        h.insert(6, obs(1.5, 4, Role::Coordinator, 2, Some(4)));
        let r = check(&h);
        assert_eq!(r.checkers["election-safety"].valid, Validity::Valid, "{r:#?}");
        assert_eq!(r.checkers["election-safety"].figures["split_brain_terms"], 1);
    }

    /// A host cut off is a partition between its nodes and the others: each side may elect, but two
    /// coordinators of one term on the same side are still a violation; after the host is back, the
    /// group must agree again.
    #[test]
    fn a_host_cut_off_splits_the_group_and_must_heal_to_one() {
        let host_down = || Op::HostDown { targets: vec!["node-4".into(), "node-3".into()] };
        let mut h = vec![run(&[1, 2, 3, 4])];
        h.extend(settled(0.2, &[1, 2, 3, 4], 4, 1));
        h.push(fault(1.0, host_down()));
        h.extend(settled(1.4, &[1, 2], 2, 2));
        h.push(obs(1.5, 4, Role::Coordinator, 2, Some(4)));
        h.push(fault(2.0, Op::HostUp { targets: vec!["node-4".into(), "node-3".into()] }));
        h.extend(settled(2.5, &[1, 2, 3, 4], 4, 3));
        let r = check(&h);
        assert_eq!(r.checkers["election-safety"].valid, Validity::Valid, "{r:#?}");
        assert_eq!(r.checkers["election-safety"].figures["split_brain_terms"], 1);

        // Two coordinators of term 2 on the survivors' side: invalid.
        let mut bad = vec![run(&[1, 2, 3, 4])];
        bad.extend(settled(0.2, &[1, 2, 3, 4], 4, 1));
        bad.push(fault(1.0, host_down()));
        bad.extend(settled(1.4, &[1, 2], 2, 2));
        bad.push(obs(1.5, 1, Role::Coordinator, 2, Some(1)));
        assert_eq!(check(&bad).checkers["election-safety"].valid, Validity::Invalid);
    }

    #[test]
    fn a_group_that_never_settles_is_invalid() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(fault(1.0, kill(3)));
        for i in 0..40 {
            let t = 1.1 + i as f64 * 0.1;
            h.push(obs(t, 1, Role::Candidate, 2 + i, None));
            h.push(obs(t, 2, Role::Waiting, 2 + i, None));
        }
        let r = check(&h);
        assert_eq!(r.checkers["election-liveness"].valid, Validity::Invalid, "{r:#?}");
        assert!(r.checkers["election-liveness"].violations[0].contains("did not settle"));
    }

    #[test]
    fn a_window_shorter_than_the_bound_is_interrupted_not_invalid() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(fault(1.0, kill(3)));
        h.push(fault(1.05, Op::Start { targets: vec!["node-3".into()] }));
        h.extend(settled(1.5, &[1, 2, 3], 3, 3));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        assert_eq!(r.checkers["election-liveness"].figures["interrupted"], 1);
    }

    #[test]
    fn a_moment_of_agreement_that_breaks_again_is_not_settling() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2], 2, 4));
        h.push(obs(0.2, 3, Role::Unreachable, 0, None));
        h.push(fault(1.0, Op::Start { targets: vec!["node-3".into()] }));
        // node 3 returns, follows node 2 for a moment, then takes over
        h.push(obs(1.1, 3, Role::Follower, 4, Some(2)));
        h.extend(settled(1.3, &[1, 2, 3], 3, 5));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        let settle = &r.checkers["election-liveness"].figures["settle_seconds"];
        assert!((settle.as_array().unwrap().last().unwrap().as_f64().unwrap() - 0.30).abs() < 1e-6, "{settle}");
    }

    #[test]
    fn a_read_the_lab_missed_does_not_unsettle_a_group() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(obs(0.5, 2, Role::Unreachable, 1, None));
        h.push(obs(0.7, 2, Role::Follower, 1, Some(3)));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
        let settle = &r.checkers["election-liveness"].figures["settle_seconds"];
        assert_eq!(settle.as_array().unwrap().len(), 1);
        assert!((settle[0].as_f64().unwrap() - 0.2).abs() < 1e-9, "{settle}");
    }

    #[test]
    fn settling_on_a_lower_id_breaks_the_highest_id_rule() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 2, 1));
        let r = check(&h);
        assert_eq!(r.checkers["highest-id"].valid, Validity::Invalid);
        assert_eq!(r.checkers["election-liveness"].valid, Validity::Valid);
    }

    #[test]
    fn an_isolated_node_coordinates_itself_and_the_rest_their_highest() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(fault(1.0, Op::Partition { shape: "isolate".into(), groups: vec![vec![1, 2]] }));
        h.extend(settled(1.5, &[1, 2], 2, 2));
        h.push(obs(1.5, 3, Role::Coordinator, 1, Some(3)));
        let r = check(&h);
        assert_eq!(r.valid, Validity::Valid, "{r:#?}");
    }

    #[test]
    fn a_bridge_requires_nothing_of_liveness() {
        let mut h = vec![run(&[1, 2, 3])];
        h.extend(settled(0.2, &[1, 2, 3], 3, 1));
        h.push(fault(1.0, Op::Partition { shape: "bridge".into(), groups: vec![vec![1, 2], vec![2, 3]] }));
        h.push(obs(1.2, 1, Role::Candidate, 5, None));
        let r = check(&h);
        assert_eq!(r.checkers["election-liveness"].valid, Validity::Valid, "{r:#?}");
        assert_eq!(r.checkers["election-liveness"].figures["not_required"], 1);
    }

    #[test]
    fn nothing_answering_is_unknown() {
        let h = vec![run(&[1, 2]), obs(0.1, 1, Role::Unreachable, 0, None), obs(0.1, 2, Role::Unreachable, 0, None)];
        let r = check(&h);
        assert_eq!(r.valid, Validity::Unknown);
        assert_eq!(r.valid.exit_code(), 2);
        assert_eq!(check(&[]).valid, Validity::Unknown);
    }

    fn sync(time: f64, device: &str, bound: u64, error: i64) -> Event {
        Event::Sync(SyncObservation { time, device: device.into(), error_bound_nanos: bound, true_error_nanos: error })
    }

    #[test]
    fn a_sync_outside_its_bound_is_invalid() {
        let h = vec![run(&[]), sync(1.0, "laptop", 50_000, 2_000), sync(6.0, "laptop", 50_000, -60_000)];
        let r = check(&h);
        assert_eq!(r.checkers["cristian"].valid, Validity::Invalid);
        assert!(r.checkers["cristian"].violations[0].contains("outside its bound"));
    }

    #[test]
    fn a_device_that_does_not_recover_after_a_bump_is_invalid() {
        let bump = fault(2.0, Op::Bump { target: "laptop".into(), by_nanos: 300_000_000_000 });
        let good = vec![
            run(&[]),
            sync(1.0, "laptop", 50_000, 1_000),
            bump.clone(),
            sync(6.0, "laptop", 50_000, 1_000),
            sync(20.0, "laptop", 1, 0),
        ];
        assert_eq!(check(&good).valid, Validity::Valid, "{:#?}", check(&good));
        let late =
            vec![run(&[]), sync(1.0, "laptop", 50_000, 1_000), bump, sync(12.0, "laptop", 50_000, 1_000), sync(20.0, "laptop", 1, 0)];
        let r = check(&late);
        assert_eq!(r.checkers["cristian"].valid, Validity::Invalid, "{r:#?}");
    }

    #[test]
    fn recovery_is_due_after_the_server_is_back_not_while_it_is_down() {
        let stop = fault(2.0, Op::Stop { targets: vec!["time-server".into()] });
        let start = fault(5.0, Op::Start { targets: vec!["time-server".into()] });
        let back = vec![
            run(&[]),
            sync(1.0, "laptop", 50_000, 1_000),
            stop.clone(),
            start.clone(),
            sync(6.0, "laptop", 50_000, 1_000),
            sync(20.0, "laptop", 1, 0),
        ];
        assert_eq!(check(&back).valid, Validity::Valid, "{:#?}", check(&back));
        let never = vec![run(&[]), sync(1.0, "laptop", 50_000, 1_000), stop, start, sync(20.0, "laptop", 1, 0)];
        assert_eq!(check(&never).checkers["cristian"].valid, Validity::Invalid);
    }

    fn round(time: f64, round: u64, excluded: &[&str], spread: u64) -> Event {
        Event::Round(RoundObservation { time, round, excluded: excluded.iter().map(|s| s.to_string()).collect(), spread_nanos: spread })
    }

    #[test]
    fn berkeley_must_exclude_a_bumped_clock_and_pull_it_back() {
        let bump = fault(2.0, Op::Bump { target: "tapmi".into(), by_nanos: 300_000_000_000 });
        let good = vec![run(&[]), round(1.0, 1, &[], 10), bump.clone(), round(3.0, 2, &["TAPMI"], 10), round(4.0, 3, &[], 10)];
        assert_eq!(check(&good).valid, Validity::Valid, "{:#?}", check(&good));
        let averaged = vec![run(&[]), round(1.0, 1, &[], 10), bump.clone(), round(3.0, 2, &[], 10), round(4.0, 3, &[], 10)];
        assert_eq!(check(&averaged).checkers["berkeley"].valid, Validity::Invalid);
        let spread = vec![run(&[]), round(1.0, 1, &[], 10), bump, round(3.0, 2, &["TAPMI"], 5_000_000), round(4.0, 3, &[], 5_000_000)];
        assert_eq!(check(&spread).checkers["berkeley"].valid, Validity::Invalid);
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let h = vec![run(&[1]), fault(1.0, kill(1)), obs(0.5, 1, Role::Coordinator, 1, Some(1))];
        let text: String = h.iter().map(|e| crate::lab::history::line(e) + "\n").collect();
        assert!(text.contains(r#""type":"fault""#) && text.contains(r#""op":"kill""#), "{text}");
        assert_eq!(crate::lab::history::parse(&text).unwrap(), h);
        let bad = crate::lab::history::parse("{\"type\":\"run\"}\n").unwrap_err();
        assert_eq!(bad.line, 1);
    }
}
