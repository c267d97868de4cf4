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
}
