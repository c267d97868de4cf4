//! The frequency discipline of a clock that is corrected again and again: learning its frequency error
//! from successive corrections, and running it faster or slower by that much between them. No I/O.
//!
//! A clock corrected only in offset is right just after each correction and drifts off until the next.
//! But the correction it then receives, over the time since the last one, measures how fast it drifts:
//! [`FrequencyEstimator`] learns that rate, like a frequency-locked loop, and the clock is set to run
//! against it ([`crate::clock::VirtualClock::set_frequency_correction`]), so it stays close between
//! corrections too. One rule for every clock that is corrected repeatedly: the Berkeley slaves and
//! master (through [`crate::berkeley`]), and the time clients ([`Discipline`]: the `synclab cristian`
//! devices and the lab's clocks), each with its own settings.
//!
//! Time comes in as host time (ns), the clock as a value: the caller reads the host's clock and holds
//! the lock.

use crate::clock::{AdjustmentKind, ClockError, VirtualClock};

/// Learns a clock's frequency error from the adjustments it is sent, like a frequency-locked loop.
///
/// After each round the clock is right; by the next it is off by its residual frequency error times the
/// interval, and the adjustment it then receives is minus that. So `−adjustment / interval` measures the
/// residual error, and a share (`gain`) of it is added to the correction each round. Steps (first
/// contact, a restart, a clock set wildly wrong) say nothing about frequency and reset the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct FrequencyEstimator {
    gain: f64,
    max_ppm: f64,
    min_interval_nanos: i64,
    correction_ppm: f64,
    last_adjustment_host: Option<i64>,
}

impl FrequencyEstimator {
    /// An estimator that moves its correction by `gain` (0 < gain ≤ 1) of each measured error, never
    /// past ±`max_ppm`, and learns only from adjustments at least `min_interval_nanos` apart (over a
    /// shorter interval the measurement's noise, not the frequency, makes the adjustment).
    pub fn new(gain: f64, max_ppm: f64, min_interval_nanos: i64) -> Self {
        // NaN would poison the correction for good (and a NaN bound makes `clamp` panic): a NaN gain
        // learns as little as possible, a NaN bound allows no correction.
        Self {
            gain: if gain.is_nan() { f64::MIN_POSITIVE } else { gain.clamp(f64::MIN_POSITIVE, 1.0) },
            max_ppm: if max_ppm.is_nan() { 0.0 } else { max_ppm.abs() },
            min_interval_nanos: min_interval_nanos.max(1),
            correction_ppm: 0.0,
            last_adjustment_host: None,
        }
    }

    /// The frequency correction to apply, in ppm.
    pub fn correction_ppm(&self) -> f64 {
        self.correction_ppm
    }

    /// Takes an adjustment of `by_nanos` received at host time `host` (ns); `stepped` if the clock was
    /// stepped rather than slewed. Returns the new correction in ppm.
    pub fn observe(&mut self, host: i64, by_nanos: f64, stepped: bool) -> f64 {
        let last = self.last_adjustment_host.replace(host);
        if stepped {
            return self.correction_ppm;
        }
        if let Some(last) = last {
            // In floating point: host times far apart (or a clock that went back) cannot overflow.
            let interval = host as f64 - last as f64;
            if interval >= self.min_interval_nanos as f64 && by_nanos.is_finite() {
                let residual_ppm = -by_nanos / interval * 1e6;
                self.correction_ppm = (self.correction_ppm - self.gain * residual_ppm).clamp(-self.max_ppm, self.max_ppm);
            }
        }
        self.correction_ppm
    }
}

/// The discipline of a time client's clock, synced every interval: a [`FrequencyEstimator`] with the
/// client's settings, fed each sync's correction, whose estimate the clock then runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Discipline {
    estimator: FrequencyEstimator,
}

impl Default for Discipline {
    fn default() -> Self {
        Self::new()
    }
}

impl Discipline {
    /// The share of each measured frequency error a sync adds to the correction.
    pub const GAIN: f64 = 0.5;
    /// The largest frequency correction applied, ppm.
    pub const MAX_PPM: f64 = 500.0;
    /// Syncs closer together than this teach nothing (the measurement's noise, not the frequency).
    pub const MIN_LEARNING_INTERVAL_NANOS: i64 = 200_000_000;

    /// A discipline that has learnt nothing yet (a correction of 0 ppm).
    pub fn new() -> Self {
        Self { estimator: FrequencyEstimator::new(Self::GAIN, Self::MAX_PPM, Self::MIN_LEARNING_INTERVAL_NANOS) }
    }

    /// The frequency correction learnt so far, ppm.
    pub fn correction_ppm(&self) -> f64 {
        self.estimator.correction_ppm()
    }

    /// Takes a sync that corrected `clock` by `offset_nanos` (applied as `adjustment`) at host time
    /// `host`, and sets the clock's frequency correction to what has been learnt (a step teaches nothing
    /// and leaves it as it was). Returns the correction, ppm.
    pub fn synced(
        &mut self,
        clock: &mut VirtualClock,
        host: i64,
        offset_nanos: f64,
        adjustment: AdjustmentKind,
    ) -> Result<f64, ClockError> {
        let ppm = self.estimator.observe(host, offset_nanos, adjustment == AdjustmentKind::Step);
        clock.set_frequency_correction(host, ppm)?;
        Ok(ppm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockConfig;

    const SEC: f64 = 1e9;

    #[test]
    fn the_frequency_estimator_learns_a_drift_and_holds_over() {
        // A clock 80 ppm fast, a round every 5 s, each round bringing it back to true time.
        let (drift_ppm, interval) = (80.0, 5 * 1_000_000_000i64);
        let mut est = FrequencyEstimator::new(0.7, 500.0, 1_000_000_000);
        let mut host = 0i64;
        est.observe(host, -5.0 * SEC, true); // first contact: a step, no frequency information
        let mut last_error = f64::INFINITY;
        for _ in 0..20 {
            host += interval;
            let accumulated = (drift_ppm + est.correction_ppm()) * 1e-6 * interval as f64;
            est.observe(host, -accumulated, false);
            last_error = accumulated.abs();
        }
        assert!((est.correction_ppm() + drift_ppm).abs() < 0.01, "correction {}", est.correction_ppm());
        assert!(last_error < 100.0, "still {last_error} ns off after a round");
    }

    #[test]
    fn steps_and_nonsense_do_not_move_the_frequency() {
        let mut est = FrequencyEstimator::new(1.0, 100.0, 500_000_000);
        assert_eq!(est.observe(0, 1e9, true), 0.0);
        // Set 50 µs ahead after 1 s: the clock runs 50 ppm slow, so it is to run 50 ppm faster.
        assert_eq!(est.observe(1_000_000_000, 50_000.0, false), 50.0);
        assert_eq!(est.observe(2_000_000_000, 1e9, true), 50.0, "a step leaves the correction alone");
        assert_eq!(est.observe(2_000_000_000, 1.0, false), 50.0, "no time passed: nothing to learn");
        assert_eq!(est.observe(2_100_000_000, 1e6, false), 50.0, "too soon after the last: noise, not frequency");
        assert_eq!(est.observe(3_000_000_000, f64::NAN, false), 50.0);
        assert_eq!(est.observe(4_000_000_000, 1e9, false), 100.0, "clamped to the maximum");
    }

    #[test]
    fn nan_settings_do_not_poison_the_correction() {
        // Found by fuzz/fuzz_targets/berkeley.rs: a NaN gain made every correction NaN.
        let mut est = FrequencyEstimator::new(f64::NAN, 100.0, 1);
        est.observe(0, 0.0, false);
        assert!(est.observe(1_000_000_000, 1e6, false).is_finite());
        let mut est = FrequencyEstimator::new(1.0, f64::NAN, 1);
        est.observe(0, 0.0, false);
        assert_eq!(est.observe(1_000_000_000, 1e6, false), 0.0, "a NaN bound allows no correction");
    }

    #[test]
    fn host_times_at_the_ends_of_i64_do_not_overflow() {
        // Found by fuzz/fuzz_targets/berkeley.rs: `host - last` overflowed.
        let mut est = FrequencyEstimator::new(1.0, 100.0, 500_000_000);
        est.observe(i64::MIN, 0.0, false);
        assert_eq!(est.observe(i64::MAX, 1e9, false), 1e9 / (i64::MAX as f64 - i64::MIN as f64) * 1e6);
        assert_eq!(est.observe(i64::MIN, 1e9, false), est.correction_ppm(), "time going back teaches nothing");
    }

    #[test]
    fn a_synced_clock_learns_its_drift_and_holds_over() {
        // Pins the client's discipline end to end on a virtual clock 40 ppm fast, synced every second
        // with the exact correction: ten syncs on it drifts a few hundredths of what it did at first.
        let host0 = 1_764_000_000_000_000_000i64;
        let config = ClockConfig { offset_nanos: 3_000_000_000, drift_ppm: 40.0, ..ClockConfig::default() };
        let mut clock = VirtualClock::new(config, host0).unwrap();
        let mut discipline = Discipline::new();
        let mut drifted = Vec::new();
        for i in 0..12i64 {
            let host = host0 + i * 1_000_000_000;
            let offset = -clock.offset_at(host);
            drifted.push(offset.abs());
            // The correction applied at once, the first one a step: this pins the learning, not the slewing.
            let kind = if i == 0 { AdjustmentKind::Step } else { AdjustmentKind::Slew };
            clock.step(host, offset.round() as i64).unwrap();
            let ppm = discipline.synced(&mut clock, host, offset, kind).unwrap();
            assert_eq!(ppm, clock.frequency_correction_ppm());
            assert_eq!(ppm, discipline.correction_ppm());
            if i == 0 {
                assert_eq!(kind, AdjustmentKind::Step);
                assert_eq!(ppm, 0.0, "the first contact steps and teaches nothing");
            }
        }
        // The first interval drifts 40 µs; each later one half the one before (the gain), 39 ns by the last.
        assert!((drifted[1] - 40_000.0).abs() < 1.0, "{drifted:?}");
        assert!(drifted[11] < 100.0, "{drifted:?}");
        assert!((discipline.correction_ppm() + 40.0).abs() < 0.05, "{}", discipline.correction_ppm());
    }

    #[test]
    fn the_client_settings_hold() {
        // Pins the client's settings: syncs 100 ms apart teach nothing, and no correction passes 500 ppm.
        let mut clock = VirtualClock::new(ClockConfig::default(), 0).unwrap();
        let mut d = Discipline::new();
        d.synced(&mut clock, 0, 0.0, AdjustmentKind::Slew).unwrap();
        assert_eq!(d.synced(&mut clock, 100_000_000, 1e6, AdjustmentKind::Slew).unwrap(), 0.0);
        assert_eq!(d.synced(&mut clock, 1_100_000_000, -1e9, AdjustmentKind::Slew).unwrap(), -Discipline::MAX_PPM);
        assert_eq!(clock.frequency_correction_ppm(), -500.0);
        // Over 1 s, 100 µs ahead: the clock ran 100 ppm slow; half of that is learnt.
        assert_eq!(d.synced(&mut clock, 2_100_000_000, 100_000.0, AdjustmentKind::Slew).unwrap(), -450.0);
    }
}
