//! The Berkeley algorithm as Gusella and Zatti's TEMPO ran it, sans-I/O: the round's arithmetic, with no
//! sockets and no clocks of their own.
//!
//! Each round the master measures every member's offset from its own clock, compensating the round trip
//! (the NTP exchange of [`crate::cristian`]), and counts itself in with offset 0. It then finds the
//! largest set of clocks that agree within a tolerance ([`largest_agreeing_set`]), averages that set, and
//! sends every member, the faulty ones too, the *relative* adjustment `average − its offset`
//! ([`plan_round`]). It is not the classroom shortcut, where slaves push absolute times that the master
//! averages, wild clocks included, and sends back as absolute times that are stale on arrival.
//!
//! A slave that only ever steps to the average is right just after a round and drifts off until the
//! next. [`FrequencyEstimator`] (whose home is [`crate::discipline`], shared with the time clients)
//! learns its frequency error from the adjustments it receives, so its clock stays close between rounds
//! too.
//!
//! Who is in the group is [`Roster`]'s business: a (re)joining member is corrected with the others but
//! counts in the average only from its second round, once it has been brought to the group (a restarted
//! line comes back with its starting offset, which would otherwise move every clock); a member that
//! missed its last round gives up its place to a newcomer before a newcomer is refused; names can be
//! reserved for the configured lines, which always find a place; and one source holds at most so many
//! of the open places.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

pub use crate::discipline::FrequencyEstimator;

/// One member's measured offset from the master's clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// The member's name (e.g. `KMC`).
    pub member: String,
    /// Member's clock minus master's clock, in nanoseconds.
    pub offset_nanos: f64,
}

/// Why a clock was left out of the average.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Exclusion {
    /// Its offset is outside the largest set of clocks that agree within the tolerance.
    OutsideTolerance {
        /// How far it is from the nearest clock of that set, in nanoseconds.
        distance_nanos: f64,
    },
    /// It has just (re)joined: it is brought to the group this round and counts from the next.
    Joining,
}

/// One member's adjustment for the round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Adjustment {
    /// The member's name.
    pub member: String,
    /// What to add to the member's clock, in nanoseconds.
    pub by_nanos: f64,
    /// Why the member's clock was left out of the average, if it was. It is adjusted all the same.
    pub excluded: Option<Exclusion>,
}

/// What a round decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundPlan {
    /// The fault-tolerant average, as an offset from the master's clock, in nanoseconds.
    pub average_nanos: f64,
    /// What the master adds to its own clock (the average itself).
    pub master_adjustment_nanos: f64,
    /// Whether the master's own clock was inside the agreeing set.
    pub master_included: bool,
    /// Every member's adjustment, in the order of the readings.
    pub adjustments: Vec<Adjustment>,
}

/// Why a round could not be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BerkeleyError {
    /// A tolerance that is negative or not a number.
    #[error("tolerance of {0} ns must be a number of nanoseconds, zero or more")]
    BadTolerance(f64),
    /// A reading that is not a finite number.
    #[error("{member}'s reading of {offset} ns is not a finite number")]
    BadReading {
        /// The member's name.
        member: String,
        /// Its reading (member's clock minus master's clock), ns.
        offset: f64,
    },
    /// Two readings for one member.
    #[error("{0} was read twice in one round")]
    DuplicateMember(String),
}

/// The largest set of values whose spread (max − min) is within `tolerance`, as the half-open range
/// `start..end` of `sorted`. Of equal-sized sets it prefers the one holding `preferred` (the master's own
/// offset, 0, keeps the time continuous), then the tightest, then the lowest. Empty input gives `0..0`.
pub fn largest_agreeing_set(sorted: &[f64], tolerance: f64, preferred: f64) -> std::ops::Range<usize> {
    let mut best = 0..0;
    let mut end = 0;
    for start in 0..sorted.len() {
        end = end.max(start);
        while end < sorted.len() && sorted[end] - sorted[start] <= tolerance {
            end += 1;
        }
        let better = {
            let (len, best_len) = (end - start, best.end - best.start);
            let holds = |r: &std::ops::Range<usize>| !r.is_empty() && sorted[r.start] <= preferred && preferred <= sorted[r.end - 1];
            let spread = |r: &std::ops::Range<usize>| if r.is_empty() { f64::INFINITY } else { sorted[r.end - 1] - sorted[r.start] };
            let candidate = start..end;
            len > best_len
                || (len == best_len && holds(&candidate) && !holds(&best))
                || (len == best_len && holds(&candidate) == holds(&best) && spread(&candidate) < spread(&best))
        };
        if better {
            best = start..end;
        }
    }
    best
}

/// Plans a round from the members' readings: the master's own clock (offset 0) counts as one more
/// clock, the largest set agreeing within `tolerance_nanos` is averaged, and every member is sent
/// `average − its offset`. No readings (no members answered) is a round of the master alone.
pub fn plan_round(readings: &[Reading], tolerance_nanos: f64) -> Result<RoundPlan, BerkeleyError> {
    plan_round_joining(readings, &BTreeSet::new(), tolerance_nanos)
}

/// [`plan_round`] with members that are `joining`: they are sent `average − their offset` like every
/// member but left out of the average ([`Exclusion::Joining`]), unless no other member answered (a group
/// forming, or a master restarted: then every clock counts, as in [`plan_round`]).
pub fn plan_round_joining(readings: &[Reading], joining: &BTreeSet<String>, tolerance_nanos: f64) -> Result<RoundPlan, BerkeleyError> {
    if readings.iter().all(|r| joining.contains(&r.member)) {
        return plan_settled(readings, tolerance_nanos);
    }
    if !tolerance_nanos.is_finite() || tolerance_nanos < 0.0 {
        return Err(BerkeleyError::BadTolerance(tolerance_nanos));
    }
    let (settled, newcomers): (Vec<Reading>, Vec<Reading>) = readings.iter().cloned().partition(|r| !joining.contains(&r.member));
    let mut plan = plan_settled(&settled, tolerance_nanos)?;
    for r in &newcomers {
        if !r.offset_nanos.is_finite() {
            return Err(BerkeleyError::BadReading { member: r.member.clone(), offset: r.offset_nanos });
        }
        if settled.iter().any(|s| s.member == r.member) || newcomers.iter().filter(|n| n.member == r.member).count() > 1 {
            return Err(BerkeleyError::DuplicateMember(r.member.clone()));
        }
    }
    // Back in the readings' order.
    let mut by_member: BTreeMap<String, Adjustment> = plan.adjustments.drain(..).map(|a| (a.member.clone(), a)).collect();
    plan.adjustments = readings
        .iter()
        .map(|r| {
            by_member.remove(&r.member).unwrap_or_else(|| Adjustment {
                member: r.member.clone(),
                by_nanos: plan.average_nanos - r.offset_nanos,
                excluded: Some(Exclusion::Joining),
            })
        })
        .collect();
    Ok(plan)
}

fn plan_settled(readings: &[Reading], tolerance_nanos: f64) -> Result<RoundPlan, BerkeleyError> {
    if !tolerance_nanos.is_finite() || tolerance_nanos < 0.0 {
        return Err(BerkeleyError::BadTolerance(tolerance_nanos));
    }
    let mut seen = std::collections::HashSet::new();
    for r in readings {
        if !r.offset_nanos.is_finite() {
            return Err(BerkeleyError::BadReading { member: r.member.clone(), offset: r.offset_nanos });
        }
        if !seen.insert(r.member.as_str()) {
            return Err(BerkeleyError::DuplicateMember(r.member.clone()));
        }
    }
    let mut offsets: Vec<f64> = readings.iter().map(|r| r.offset_nanos).chain([0.0]).collect();
    offsets.sort_by(f64::total_cmp);
    let set = largest_agreeing_set(&offsets, tolerance_nanos, 0.0);
    let agreeing = &offsets[set.clone()];
    let (low, high) = (offsets[set.start], offsets[set.end - 1]);
    // The mean as `low` plus the mean distance from it: no sum of large offsets overflows, and rounding
    // cannot put the average outside the set (a plain sum of equal offsets can miss them by an ulp).
    let n = agreeing.len() as f64;
    let average = (low + agreeing.iter().map(|&o| (o - low) / n).sum::<f64>()).clamp(low, high);
    let adjustments = readings
        .iter()
        .map(|r| {
            let distance = if r.offset_nanos < low {
                low - r.offset_nanos
            } else if r.offset_nanos > high {
                r.offset_nanos - high
            } else {
                0.0
            };
            Adjustment {
                member: r.member.clone(),
                by_nanos: average - r.offset_nanos,
                excluded: (distance > 0.0).then_some(Exclusion::OutsideTolerance { distance_nanos: distance }),
            }
        })
        .collect();
    Ok(RoundPlan { average_nanos: average, master_adjustment_nanos: average, master_included: low <= 0.0 && 0.0 <= high, adjustments })
}

/// What the group's membership obeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterRules {
    /// Places open to any name; a new name beyond them takes the place of a member that missed its last
    /// round, or is refused.
    pub max_members: usize,
    /// Names with a place of their own, outside `max_members`: the configured lines.
    pub reserved: BTreeSet<String>,
    /// Only reserved names may join.
    pub reserved_only: bool,
    /// Open places one source (a caller's address or identity) may hold at once (default: no limit).
    pub max_per_source: usize,
}

impl Default for RosterRules {
    fn default() -> Self {
        Self { max_members: 64, reserved: BTreeSet::new(), reserved_only: false, max_per_source: usize::MAX }
    }
}

/// One member's place.
#[derive(Debug, Clone)]
pub struct Seat<T> {
    /// The address the master reads and adjusts it at.
    pub address: String,
    /// Where its registration came from (the caller's address or identity).
    pub source: String,
    /// The secret it registered with.
    pub claim: Vec<u8>,
    /// Rounds in a row it missed.
    pub missed: u32,
    /// Rounds it has completed since it (re)joined.
    pub answered: u64,
    /// What the shell keeps with it (its clients).
    pub link: T,
}

impl<T> Seat<T> {
    /// It completed the last round, and every round since it joined counts.
    pub fn in_good_standing(&self) -> bool {
        self.missed == 0 && self.answered > 0
    }

    /// It has not completed a round since it (re)joined: its clock has not yet been brought to the group.
    pub fn joining(&self) -> bool {
        self.answered == 0
    }
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// The same member again, same address: nothing changed.
    Known,
    /// A member took up its name again (new address, or restarted in place): it rejoins.
    Rejoined,
    /// A new member; `evicted` names the member that missed its last round and gave up its place.
    Joined {
        /// The member whose place it took, if any.
        evicted: Option<String>,
    },
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Every open place is held by a member in good standing.
    #[error("the group is full ({0} members); a member that misses a round gives its place to the next newcomer")]
    Full(usize),
    /// Only the reserved names may join.
    #[error("'{0}' is not one of this group's lines (only the reserved names may join)")]
    NotReserved(String),
    /// The source holds as many open places as it may.
    #[error("{from} already holds {limit} places, as many as one source may")]
    SourceFull {
        /// The source.
        from: String,
        /// The limit.
        limit: usize,
    },
    /// Another member holds the name.
    #[error(
        "'{name}' belongs to the slave at {holder}; another slave can take the name once that one has been dropped, or, at the same address, once it misses a round"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// The holder's address.
        holder: String,
    },
}

/// The group's members and the rules of who may join, sans-I/O: the master's shell keeps one and asks
/// it on every registration and after every round.
#[derive(Debug, Clone)]
pub struct Roster<T> {
    rules: RosterRules,
    members: BTreeMap<String, Seat<T>>,
}

impl<T> Roster<T> {
    /// An empty group under `rules`.
    pub fn new(rules: RosterRules) -> Self {
        Self { rules, members: BTreeMap::new() }
    }

    /// The rules.
    pub fn rules(&self) -> &RosterRules {
        &self.rules
    }

    /// The members, by name.
    pub fn members(&self) -> &BTreeMap<String, Seat<T>> {
        &self.members
    }

    /// The names of the members that are (re)joining this round.
    pub fn joining(&self) -> BTreeSet<String> {
        self.members.iter().filter(|(_, s)| s.joining()).map(|(n, _)| n.clone()).collect()
    }

    /// Whether `name` may register (name, address and claim already checked): what it would do, and
    /// the place it would take. `check` then [`Roster::seat`] is how a registration goes, so that the
    /// shell dials only for a registration that will be admitted.
    pub fn check(&self, name: &str, address: &str, claim: &[u8], source: &str) -> Result<Admitted, AdmitError> {
        match self.members.get(name) {
            Some(seat) if seat.claim == claim && seat.address == address => return Ok(Admitted::Known),
            Some(seat) if seat.claim == claim => return Ok(Admitted::Rejoined),
            Some(seat) if !seat.in_good_standing() && seat.address == address => return Ok(Admitted::Rejoined),
            Some(seat) => return Err(AdmitError::NameTaken { name: name.to_string(), holder: seat.address.clone() }),
            None => {}
        }
        if self.rules.reserved.contains(name) {
            return Ok(Admitted::Joined { evicted: None });
        }
        if self.rules.reserved_only {
            return Err(AdmitError::NotReserved(name.to_string()));
        }
        let open: Vec<(&String, &Seat<T>)> = self.members.iter().filter(|(n, _)| !self.rules.reserved.contains(*n)).collect();
        let from_source = open.iter().filter(|(_, s)| s.source == source).count();
        if from_source >= self.rules.max_per_source {
            return Err(AdmitError::SourceFull { from: source.to_string(), limit: self.rules.max_per_source });
        }
        if open.len() < self.rules.max_members {
            return Ok(Admitted::Joined { evicted: None });
        }
        // The member that missed the most rounds in a row (then completed the fewest, then the first
        // name) gives up its place.
        let evicted = open.iter().filter(|(_, s)| s.missed > 0).max_by(|a, b| {
            (a.1.missed, std::cmp::Reverse(a.1.answered), std::cmp::Reverse(a.0)).cmp(&(
                b.1.missed,
                std::cmp::Reverse(b.1.answered),
                std::cmp::Reverse(b.0),
            ))
        });
        match evicted {
            Some((name, _)) => Ok(Admitted::Joined { evicted: Some((*name).clone()) }),
            None => Err(AdmitError::Full(self.rules.max_members)),
        }
    }

    /// Seats `name` as [`Roster::check`] admitted it (`Known` changes nothing): a member that
    /// (re)joins starts with no completed round, so it counts in the average from its second round.
    pub fn seat(&mut self, name: &str, admitted: &Admitted, address: &str, claim: &[u8], source: &str, link: T) {
        match admitted {
            Admitted::Known => return,
            Admitted::Joined { evicted: Some(evicted) } => {
                self.members.remove(evicted);
            }
            Admitted::Joined { evicted: None } | Admitted::Rejoined => {}
        }
        let seat = Seat { address: address.to_string(), source: source.to_string(), claim: claim.to_vec(), missed: 0, answered: 0, link };
        self.members.insert(name.to_string(), seat);
    }

    /// Records a round: each `(name, completed)` of the members polled. A member that completed it is in
    /// good standing; one that did not has missed one more, and is dropped past `max_missed`. Returns the
    /// names dropped.
    pub fn finish_round<'a>(&mut self, outcomes: impl IntoIterator<Item = (&'a str, bool)>, max_missed: u32) -> Vec<String> {
        let mut dropped = Vec::new();
        for (name, completed) in outcomes {
            let Some(seat) = self.members.get_mut(name) else { continue };
            if completed {
                seat.missed = 0;
                seat.answered = seat.answered.saturating_add(1);
            } else {
                seat.missed = seat.missed.saturating_add(1);
                if seat.missed > max_missed {
                    self.members.remove(name);
                    dropped.push(name.to_string());
                }
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;
    const SEC: f64 = 1e9;

    fn readings(offsets: &[(&str, f64)]) -> Vec<Reading> {
        offsets.iter().map(|&(m, o)| Reading { member: m.to_string(), offset_nanos: o }).collect()
    }

    fn by(plan: &RoundPlan, member: &str) -> f64 {
        plan.adjustments.iter().find(|a| a.member == member).unwrap().by_nanos
    }

    fn excluded(plan: &RoundPlan) -> Vec<&str> {
        plan.adjustments.iter().filter(|a| a.excluded.is_some()).map(|a| a.member.as_str()).collect()
    }

    /// After the round every clock (the master's too) sits at master + average.
    fn assert_all_meet(plan: &RoundPlan, rs: &[Reading]) {
        for r in rs {
            let after = r.offset_nanos + by(plan, &r.member);
            assert!((after - plan.average_nanos).abs() < 1e-6, "{} ends at {after}, not {}", r.member, plan.average_nanos);
        }
        assert_eq!(plan.master_adjustment_nanos, plan.average_nanos);
    }

    #[test]
    fn rounds_as_the_scenarios_need() {
        /// (scenario, readings, tolerance, expected average, expected excluded, master included)
        type Case<'a> = (&'a str, &'a [(&'a str, f64)], f64, f64, &'a [&'a str], bool);
        let cases: &[Case] = &[
            ("equal clocks", &[("KMC", 0.0), ("MIT", 0.0), ("TAPMI", 0.0), ("SOLS", 0.0)], SEC, 0.0, &[], true),
            (
                "spread within tolerance",
                &[("KMC", 10.0 * MS), ("MIT", -20.0 * MS), ("TAPMI", 5.0 * MS), ("SOLS", 30.0 * MS)],
                SEC,
                5.0 * MS,
                &[],
                true,
            ),
            (
                "one wild clock",
                &[("KMC", 1.0 * MS), ("MIT", -2.0 * MS), ("TAPMI", 300.0 * SEC), ("SOLS", 3.0 * MS)],
                SEC,
                0.5 * MS,
                &["TAPMI"],
                true,
            ),
            (
                "a wild clock behind",
                &[("KMC", 1.0 * MS), ("MIT", -300.0 * SEC), ("TAPMI", 2.0 * MS), ("SOLS", 3.0 * MS)],
                SEC,
                1.5 * MS,
                &["MIT"],
                true,
            ),
            // Three clocks near +10 s against the master and one slave near 0: the three win, and the
            // master moves to them with the rest.
            (
                "two groups, majority away from the master",
                &[("KMC", 10.0 * SEC), ("MIT", 10.0 * SEC + 2.0 * MS), ("TAPMI", 10.0 * SEC - 2.0 * MS), ("SOLS", 1.0 * MS)],
                SEC,
                10.0 * SEC,
                &["SOLS"],
                false,
            ),
            // Two against two plus the master: the master's group is larger.
            (
                "two groups, master's side larger",
                &[("KMC", 10.0 * SEC), ("MIT", 10.0 * SEC), ("TAPMI", -MS), ("SOLS", 1.0 * MS)],
                SEC,
                0.0,
                &["KMC", "MIT"],
                true,
            ),
            ("a single slave", &[("KMC", 400.0 * MS)], SEC, 200.0 * MS, &[], true),
            ("no slaves", &[], SEC, 0.0, &[], true),
            ("zero tolerance, equal clocks", &[("KMC", 0.0), ("MIT", 0.0)], 0.0, 0.0, &[], true),
        ];
        for &(name, offsets, tolerance, average, excl, master_in) in cases {
            let rs = readings(offsets);
            let plan = plan_round(&rs, tolerance).unwrap();
            assert!((plan.average_nanos - average).abs() < 1e-3, "{name}: average {} not {average}", plan.average_nanos);
            assert_eq!(excluded(&plan), excl, "{name}");
            assert_eq!(plan.master_included, master_in, "{name}");
            assert_all_meet(&plan, &rs);
        }
    }

    #[test]
    fn a_wild_clock_does_not_move_the_others_but_is_corrected() {
        let rs = readings(&[("KMC", 0.0), ("MIT", 0.0), ("TAPMI", 300.0 * SEC), ("SOLS", 0.0)]);
        let plan = plan_round(&rs, SEC).unwrap();
        assert_eq!(plan.average_nanos, 0.0);
        assert_eq!(by(&plan, "TAPMI"), -300.0 * SEC);
        let tapmi = plan.adjustments.iter().find(|a| a.member == "TAPMI").unwrap();
        assert_eq!(tapmi.excluded, Some(Exclusion::OutsideTolerance { distance_nanos: 300.0 * SEC }));
    }

    #[test]
    fn a_slave_lost_mid_round_is_simply_not_in_it() {
        // MIT did not answer in time: the round goes on with the others, and MIT gets nothing.
        let rs = readings(&[("KMC", 4.0 * MS), ("TAPMI", -2.0 * MS), ("SOLS", 2.0 * MS)]);
        let plan = plan_round(&rs, SEC).unwrap();
        assert_eq!(plan.adjustments.len(), 3);
        assert!(plan.adjustments.iter().all(|a| a.member != "MIT"));
        assert!((plan.average_nanos - 1.0 * MS).abs() < 1e-6);
    }

    #[test]
    fn refuses_bad_input_without_a_plan() {
        assert_eq!(plan_round(&[], -1.0), Err(BerkeleyError::BadTolerance(-1.0)));
        assert!(matches!(plan_round(&[], f64::NAN), Err(BerkeleyError::BadTolerance(_))));
        assert!(matches!(plan_round(&readings(&[("KMC", f64::INFINITY)]), SEC), Err(BerkeleyError::BadReading { .. })));
        assert_eq!(plan_round(&readings(&[("KMC", 1.0), ("KMC", 2.0)]), SEC), Err(BerkeleyError::DuplicateMember("KMC".into())));
    }

    #[test]
    fn the_largest_set_prefers_the_master_then_the_tightest() {
        assert_eq!(largest_agreeing_set(&[], 1.0, 0.0), 0..0);
        assert_eq!(largest_agreeing_set(&[5.0], 1.0, 0.0), 0..1);
        // Two pairs of equal size: the one holding 0 wins even though it is looser.
        assert_eq!(largest_agreeing_set(&[-0.9, 0.0, 5.0, 5.1], 1.0, 0.0), 0..2);
        // Neither holds 0: the tighter one wins.
        assert_eq!(largest_agreeing_set(&[3.0, 3.9, 5.0, 5.1], 1.0, 0.0), 2..4);
        // The biggest wins whatever the master.
        assert_eq!(largest_agreeing_set(&[0.0, 5.0, 5.1, 5.2], 1.0, 0.0), 1..4);
        // The window is closed: a spread of exactly the tolerance agrees.
        assert_eq!(largest_agreeing_set(&[0.0, 1.0, 2.0], 1.0, 0.0), 0..2);
    }

    #[test]
    fn the_average_stays_within_the_set_whatever_the_offsets() {
        // Found by fuzz/fuzz_targets/berkeley.rs: the sum of equal offsets rounded the average outside
        // them; offsets near f64::MAX summed to infinity.
        let x = 9_042_521_604_759_584_000.0;
        let plan = plan_round(&readings(&[("KMC", x), ("MIT", x), ("TAPMI", x)]), 1.0).unwrap();
        assert_eq!(plan.average_nanos, x);
        let big = f64::MAX / 2.0;
        let plan = plan_round(&readings(&[("KMC", big), ("MIT", big), ("TAPMI", big)]), 1.0).unwrap();
        assert_eq!(plan.average_nanos, big);
    }

    #[test]
    fn a_joining_member_is_corrected_but_moves_nobody() {
        // The group sits at +62.5 ms; MIT comes back with its starting −300 ms.
        let rs = readings(&[("KMC", 0.0), ("MIT", -362.5 * MS), ("TAPMI", 0.1 * MS), ("SOLS", -0.1 * MS)]);
        let joining: BTreeSet<String> = ["MIT".to_string()].into();
        let plan = plan_round_joining(&rs, &joining, SEC).unwrap();
        assert!(plan.average_nanos.abs() < 1.0, "the average moved: {}", plan.average_nanos);
        assert_eq!(plan.adjustments.iter().map(|a| a.member.as_str()).collect::<Vec<_>>(), ["KMC", "MIT", "TAPMI", "SOLS"]);
        let mit = &plan.adjustments[1];
        assert_eq!(mit.excluded, Some(Exclusion::Joining));
        assert!((mit.by_nanos - 362.5 * MS).abs() < 1.0, "MIT is brought to the group: {}", mit.by_nanos);
        assert_all_meet(&plan, &rs);
        // Counted in, as plan_round does, it would have moved every clock by a fifth of its error.
        assert!((plan_round(&rs, SEC).unwrap().average_nanos + 72.5 * MS).abs() < 0.1 * MS);
        // A group that is all newcomers (forming, or its master restarted) averages them all.
        let all: BTreeSet<String> = ["KMC", "MIT", "TAPMI", "SOLS"].iter().map(|n| n.to_string()).collect();
        assert_eq!(plan_round_joining(&rs, &all, SEC).unwrap(), plan_round(&rs, SEC).unwrap());
        // Bad input is refused as plan_round refuses it.
        let dup = readings(&[("KMC", 0.0), ("MIT", 1.0), ("MIT", 2.0)]);
        assert_eq!(plan_round_joining(&dup, &joining, SEC), Err(BerkeleyError::DuplicateMember("MIT".into())));
        let bad = readings(&[("KMC", 0.0), ("MIT", f64::NAN)]);
        assert!(matches!(plan_round_joining(&bad, &joining, SEC), Err(BerkeleyError::BadReading { .. })));
    }

    fn rules(max_members: usize, reserved: &[&str], max_per_source: usize) -> RosterRules {
        RosterRules { max_members, reserved: reserved.iter().map(|n| n.to_string()).collect(), reserved_only: false, max_per_source }
    }

    fn join(roster: &mut Roster<()>, name: &str, address: &str, source: &str) -> Result<Admitted, AdmitError> {
        let claim = name.as_bytes();
        let admitted = roster.check(name, address, claim, source)?;
        roster.seat(name, &admitted, address, claim, source, ());
        Ok(admitted)
    }

    #[test]
    fn a_silent_member_gives_its_place_to_a_newcomer_and_reserved_lines_always_join() {
        let mut roster = Roster::new(rules(2, &["TAPMI"], 16));
        join(&mut roster, "FAKE1", "10.0.0.1:1", "10.0.0.1").unwrap();
        join(&mut roster, "FAKE2", "10.0.0.2:1", "10.0.0.2").unwrap();
        // Full, and nobody has missed a round yet: refused.
        assert_eq!(join(&mut roster, "NEW", "10.0.0.3:1", "10.0.0.3"), Err(AdmitError::Full(2)));
        // A reserved line always has a place.
        assert_eq!(join(&mut roster, "TAPMI", "10.0.0.9:1", "10.0.0.9"), Ok(Admitted::Joined { evicted: None }));
        // FAKE1 misses a round, FAKE2 completes it: FAKE1's place goes to the newcomer.
        assert!(roster.finish_round([("FAKE1", false), ("FAKE2", true), ("TAPMI", true)], 3).is_empty());
        assert_eq!(roster.joining(), ["FAKE1".to_string()].into(), "FAKE1 has not completed a round yet");
        assert_eq!(join(&mut roster, "NEW", "10.0.0.3:1", "10.0.0.3"), Ok(Admitted::Joined { evicted: Some("FAKE1".into()) }));
        assert_eq!(roster.joining(), ["NEW".to_string()].into());
        assert_eq!(roster.members().keys().map(String::as_str).collect::<Vec<_>>(), ["FAKE2", "NEW", "TAPMI"]);
        // A member in good standing keeps its name; restarted in place after a missed round, it rejoins.
        assert!(matches!(roster.check("FAKE2", "10.0.0.7:1", b"other", "10.0.0.7"), Err(AdmitError::NameTaken { .. })));
        roster.finish_round([("FAKE2", false)], 3);
        assert_eq!(roster.check("FAKE2", "10.0.0.2:1", b"other", "10.0.0.2"), Ok(Admitted::Rejoined));
        // Dropped past max_missed.
        assert_eq!(roster.finish_round([("NEW", false), ("NEW", false)], 1), ["NEW"]);
    }

    #[test]
    fn one_source_holds_a_bounded_share_and_reserved_only_groups_refuse_strangers() {
        let mut roster = Roster::new(rules(10, &["KMC"], 2));
        join(&mut roster, "A", "10.0.0.1:1", "10.0.0.1").unwrap();
        join(&mut roster, "B", "10.0.0.1:2", "10.0.0.1").unwrap();
        assert_eq!(join(&mut roster, "C", "10.0.0.1:3", "10.0.0.1"), Err(AdmitError::SourceFull { from: "10.0.0.1".into(), limit: 2 }));
        // A reserved line is not counted against its source.
        assert!(join(&mut roster, "KMC", "10.0.0.1:4", "10.0.0.1").is_ok());
        assert!(join(&mut roster, "D", "10.0.0.2:1", "10.0.0.2").is_ok());
        let mut strict = Roster::new(RosterRules { reserved_only: true, ..rules(10, &["KMC"], 2) });
        assert_eq!(join(&mut strict, "X", "10.0.0.1:1", "10.0.0.1"), Err(AdmitError::NotReserved("X".into())));
        assert!(join(&mut strict, "KMC", "10.0.0.1:1", "10.0.0.1").is_ok());
    }
}
