//! Berkeley round planning (`synclab_core::berkeley`) with arbitrary readings and tolerances, and the
//! frequency estimator with arbitrary adjustments and host times.
//!
//! Checked: planning never panics; bad input (a tolerance that is negative or not finite, a reading that
//! is not finite, a member read twice) is refused with its typed error; otherwise the plan holds what the
//! module documents: the agreeing set is the largest within the tolerance (brute force on small rounds),
//! a reading is excluded exactly when it lies outside that set (and by the distance reported), the
//! average is the mean of the set and lies within it, every adjustment brings its clock to the average,
//! and every figure is finite. The estimator's correction stays finite and within its ±max.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use synclab_core::berkeley::{BerkeleyError, Exclusion, FrequencyEstimator, Reading, largest_agreeing_set, plan_round};

#[derive(Debug, Arbitrary)]
enum Value {
    /// Any bit pattern: NaN, infinities, subnormals, ±1e308.
    Bits(u64),
    /// Nanoseconds as a clock offset is likely to be.
    Nanos(i64),
    /// Small values, so that sets agree often.
    Small(i8),
}

impl Value {
    fn get(&self) -> f64 {
        match *self {
            Value::Bits(b) => f64::from_bits(b),
            Value::Nanos(n) => n as f64,
            Value::Small(s) => f64::from(s),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Observation {
    host: i64,
    by: Value,
    stepped: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    tolerance: Value,
    /// (member name index, offset): names come from a small set, so duplicates happen.
    readings: Vec<(u8, Value)>,
    gain: Value,
    max_ppm: Value,
    min_interval: i64,
    observations: Vec<Observation>,
}

/// Relative closeness, for sums of floats taken in different orders.
fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-9 * scale.max(1.0)
}

fn check_plan(readings: &[Reading], tolerance: f64) {
    let result = plan_round(readings, tolerance);
    let plan = match result {
        Err(BerkeleyError::BadTolerance(t)) => {
            assert!(!(t >= 0.0 && t.is_finite()), "a good tolerance {t} refused");
            return;
        }
        Err(BerkeleyError::BadReading { offset, .. }) => {
            assert!(!offset.is_finite(), "a finite reading {offset} refused");
            return;
        }
        Err(BerkeleyError::DuplicateMember(name)) => {
            assert!(readings.iter().filter(|r| r.member == name).count() > 1, "{name} refused as a duplicate");
            return;
        }
        Ok(plan) => plan,
    };
    assert!(tolerance >= 0.0 && tolerance.is_finite());
    assert!(readings.iter().all(|r| r.offset_nanos.is_finite()));
    assert_eq!(plan.adjustments.len(), readings.len());
    assert!(plan.average_nanos.is_finite(), "average {} of {readings:?}", plan.average_nanos);
    assert_eq!(plan.master_adjustment_nanos, plan.average_nanos);

    // The set, recomputed: every clock (the master's at 0 too), sorted.
    let mut all: Vec<f64> = readings.iter().map(|r| r.offset_nanos).chain([0.0]).collect();
    all.sort_by(f64::total_cmp);
    let set = largest_agreeing_set(&all, tolerance, 0.0);
    assert!(!set.is_empty() && set.end <= all.len());
    let (low, high) = (all[set.start], all[set.end - 1]);
    assert!(high - low <= tolerance, "set {low}..={high} wider than {tolerance}");
    if all.len() <= 12 {
        // No larger set agrees.
        for i in 0..all.len() {
            let len = all[i..].iter().take_while(|&&v| v - all[i] <= tolerance).count();
            assert!(len <= set.len(), "{:?} agrees within {tolerance} and is larger than {set:?}", &all[i..i + len]);
        }
    }
    assert_eq!(plan.master_included, low <= 0.0 && 0.0 <= high);
    assert!(low <= plan.average_nanos && plan.average_nanos <= high, "average {} outside {low}..={high}", plan.average_nanos);
    let members: usize = readings.iter().filter(|r| low <= r.offset_nanos && r.offset_nanos <= high).count();
    assert_eq!(members + usize::from(plan.master_included), set.len(), "members in the set");

    // The mean of the set, as (offset − low) / n summed (no overflow on the way).
    let mut sum = 0.0;
    for (r, a) in readings.iter().zip(&plan.adjustments) {
        assert_eq!(r.member, a.member, "adjustments in the order of the readings");
        assert!(a.by_nanos.is_finite(), "{}: adjustment {}", a.member, a.by_nanos);
        let inside = low <= r.offset_nanos && r.offset_nanos <= high;
        match &a.excluded {
            None => {
                assert!(inside, "{} at {} is outside {low}..={high} but not excluded", r.member, r.offset_nanos);
                sum += (r.offset_nanos - low) / set.len() as f64;
            }
            Some(Exclusion::OutsideTolerance { distance_nanos }) => {
                assert!(!inside, "{} at {} is inside {low}..={high} but excluded", r.member, r.offset_nanos);
                let distance = if r.offset_nanos < low { low - r.offset_nanos } else { r.offset_nanos - high };
                assert_eq!(*distance_nanos, distance);
                assert!(*distance_nanos > 0.0);
            }
            Some(Exclusion::Joining) => panic!("{}: left out as joining by plan_round, which is given no joining member", r.member),
        }
        // Every clock, excluded or not, ends at the average.
        let scale = r.offset_nanos.abs().max(plan.average_nanos.abs());
        assert!(close(r.offset_nanos + a.by_nanos, plan.average_nanos, scale), "{} ends at {}", a.member, r.offset_nanos + a.by_nanos);
    }
    if plan.master_included {
        sum += (0.0 - low) / set.len() as f64;
    }
    let scale = low.abs().max(high.abs());
    assert!(close(low + sum, plan.average_nanos, scale), "average {} is not the mean {} of the set", plan.average_nanos, low + sum);
}

fuzz_target!(|input: Input| {
    const NAMES: [&str; 6] = ["KMC", "MIT", "TAPMI", "SOLS", "kmc", "A"];
    let readings: Vec<Reading> = input
        .readings
        .iter()
        .take(64)
        .enumerate()
        .map(|(i, (name, offset))| {
            let member = if name % 2 == 0 { NAMES[usize::from(name / 2) % NAMES.len()].to_string() } else { format!("m{i}") };
            Reading { member, offset_nanos: offset.get() }
        })
        .collect();
    check_plan(&readings, input.tolerance.get());

    let max_ppm = input.max_ppm.get();
    let mut estimator = FrequencyEstimator::new(input.gain.get(), max_ppm, input.min_interval);
    for o in input.observations.iter().take(64) {
        let ppm = estimator.observe(o.host, o.by.get(), o.stepped);
        assert!(!ppm.is_nan(), "a NaN correction");
        assert_eq!(ppm, estimator.correction_ppm());
        if max_ppm.is_finite() {
            assert!(ppm.is_finite(), "correction {ppm}");
        }
        if !max_ppm.is_nan() {
            assert!(ppm.abs() <= max_ppm.abs(), "correction {ppm} beyond ±{max_ppm}");
        }
    }
});
