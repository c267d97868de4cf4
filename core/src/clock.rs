//! The virtual clock: the host's real time plus an injected offset and drift, which the algorithms adjust.
//!
//! Every synclab process shares the one kernel clock of its host, so instead of touching it each node keeps
//! a [`VirtualClock`]. Because the host's real time is the reference, the true error of every virtual clock
//! is always known: that is the ground truth `synclab.clock.v1.Clock/Read` serves.
//!
//! This module does no I/O: every method takes the host's real time (`host`, nanoseconds since the Unix
//! epoch) as an argument, so it is exactly testable. The `synclab` crate's live clock feeds it
//! the real host time.
//!
//! The model is piecewise linear. Between adjustments the clock's offset from true time changes at
//! `drift_ppm + frequency_correction_ppm` (parts per million); a pending *slew* moves it further at up to
//! `max_slew_ppm` until the slew is used up. Adjustments at or above the step threshold *step* the clock
//! instead (a jump, possibly backwards), like chrony's `makestep`. Because the total rate change stays far
//! below 100%, a slewing clock never runs backwards.

/// Largest injected drift or frequency correction accepted, in ppm (±10%).
pub const MAX_DRIFT_PPM: f64 = 100_000.0;
/// Largest slew rate accepted, in ppm (50%). With [`MAX_DRIFT_PPM`] twice over this keeps the clock's
/// rate positive: a slewing clock never goes backwards.
pub const MAX_SLEW_PPM: f64 = 500_000.0;
/// Largest offset a clock may have from true time, in nanoseconds (about ten years).
pub const MAX_OFFSET_NANOS: i64 = 10 * 366 * 86_400 * 1_000_000_000;

/// How a clock is set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockConfig {
    /// The clock's initial offset from true time, in nanoseconds (positive = ahead).
    pub offset_nanos: i64,
    /// The clock's frequency error, in ppm (positive = runs fast).
    pub drift_ppm: f64,
    /// Adjustments whose size is at least this are stepped; smaller ones are slewed.
    pub step_threshold_nanos: i64,
    /// The rate at which slews are applied, in ppm.
    pub max_slew_ppm: f64,
}

impl Default for ClockConfig {
    /// A perfect clock that steps at 128 ms (ntpd's threshold) and slews at 500 ppm (ntpd's and adjtime's rate).
    fn default() -> Self {
        Self { offset_nanos: 0, drift_ppm: 0.0, step_threshold_nanos: 128_000_000, max_slew_ppm: 500.0 }
    }
}

/// Why a clock could not be set up or adjusted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClockError {
    /// A drift or frequency correction outside ±[`MAX_DRIFT_PPM`] (or not a number).
    #[error("drift of {0} ppm is outside ±{MAX_DRIFT_PPM} ppm")]
    DriftOutOfRange(f64),
    /// A slew rate that is not in (0, [`MAX_SLEW_PPM`]].
    #[error("slew rate of {0} ppm is outside (0, {MAX_SLEW_PPM}] ppm")]
    SlewRateOutOfRange(f64),
    /// A negative step threshold.
    #[error("step threshold of {0} ns is negative")]
    NegativeStepThreshold(i64),
    /// An offset (initial, or after an adjustment) beyond ±[`MAX_OFFSET_NANOS`].
    #[error("offset of {0} ns is beyond the ±{MAX_OFFSET_NANOS} ns a clock may have")]
    OffsetOutOfRange(i128),
}

/// What an adjustment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKind {
    /// The clock jumped by the whole amount at once.
    Step,
    /// The amount is being applied gradually at the slew rate.
    Slew,
}

/// A clock that runs off the host's real time with an offset, a drift and the corrections applied to it.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualClock {
    config: ClockConfig,
    /// Host time of the last change of state.
    anchor_host: i64,
    /// Offset from true time at `anchor_host`, in nanoseconds (fractional, so drift accumulates exactly).
    anchor_offset: f64,
    frequency_correction_ppm: f64,
    /// Slew still to apply as of `anchor_host`, in nanoseconds.
    slew_remaining: f64,
    adjustments: u64,
    steps: u64,
}

/// Checks a drift or frequency correction: a number within ±[`MAX_DRIFT_PPM`]. The one rule for every
/// flag and message that sets one.
pub fn check_drift_ppm(ppm: f64) -> Result<f64, ClockError> {
    if ppm.is_finite() && ppm.abs() <= MAX_DRIFT_PPM { Ok(ppm) } else { Err(ClockError::DriftOutOfRange(ppm)) }
}

fn check_offset(offset: f64) -> Result<(), ClockError> {
    if offset.abs() <= MAX_OFFSET_NANOS as f64 { Ok(()) } else { Err(ClockError::OffsetOutOfRange(offset as i128)) }
}

impl VirtualClock {
    /// Starts a clock at host time `host` with the configured offset and drift.
    pub fn new(config: ClockConfig, host: i64) -> Result<Self, ClockError> {
        check_drift_ppm(config.drift_ppm)?;
        if !(config.max_slew_ppm.is_finite() && config.max_slew_ppm > 0.0 && config.max_slew_ppm <= MAX_SLEW_PPM) {
            return Err(ClockError::SlewRateOutOfRange(config.max_slew_ppm));
        }
        if config.step_threshold_nanos < 0 {
            return Err(ClockError::NegativeStepThreshold(config.step_threshold_nanos));
        }
        if config.offset_nanos.unsigned_abs() > MAX_OFFSET_NANOS as u64 {
            return Err(ClockError::OffsetOutOfRange(config.offset_nanos.into()));
        }
        Ok(Self {
            config,
            anchor_host: host,
            anchor_offset: config.offset_nanos as f64,
            frequency_correction_ppm: 0.0,
            slew_remaining: 0.0,
            adjustments: 0,
            steps: 0,
        })
    }

    /// The configuration the clock was started with.
    pub fn config(&self) -> &ClockConfig {
        &self.config
    }

    /// How much of the pending slew has been applied by `host`, with its sign.
    fn slewed_by(&self, host: i64) -> f64 {
        if self.slew_remaining == 0.0 || host <= self.anchor_host {
            return 0.0;
        }
        let reach = self.config.max_slew_ppm * 1e-6 * (host - self.anchor_host) as f64;
        reach.min(self.slew_remaining.abs()).copysign(self.slew_remaining)
    }

    /// The clock's true offset (its error) at host time `host`, in nanoseconds, fractional.
    pub fn offset_at(&self, host: i64) -> f64 {
        let elapsed = (host - self.anchor_host) as f64;
        let rate = (self.config.drift_ppm + self.frequency_correction_ppm) * 1e-6;
        self.anchor_offset + rate * elapsed + self.slewed_by(host)
    }

    /// The clock's reading at host time `host`, in nanoseconds since the Unix epoch.
    pub fn read(&self, host: i64) -> i64 {
        host.saturating_add(self.offset_at(host).round() as i64)
    }

    /// The slew still to be applied at `host`, in nanoseconds.
    pub fn pending_slew(&self, host: i64) -> f64 {
        self.slew_remaining - self.slewed_by(host)
    }

    /// Where the clock's offset will settle once the pending slew is done (drift aside).
    pub fn settled_offset_at(&self, host: i64) -> f64 {
        self.offset_at(host) + self.pending_slew(host)
    }

    /// Folds everything up to `host` into the anchor, so a change of state starts from there.
    fn reanchor(&mut self, host: i64) {
        if host <= self.anchor_host {
            return;
        }
        let slewed = self.slewed_by(host);
        self.anchor_offset = self.offset_at(host);
        self.slew_remaining -= slewed;
        self.anchor_host = host;
    }

    /// Corrects the clock by `by_nanos` (positive = set it ahead) at host time `host`: a step if it is at
    /// least the step threshold, otherwise a slew. Like adjtime(2), a new correction replaces whatever was
    /// still to slew: it was measured against the clock as it reads now, pending slew not included.
    pub fn adjust(&mut self, host: i64, by_nanos: i64) -> Result<AdjustmentKind, ClockError> {
        self.reanchor(host);
        check_offset(self.anchor_offset + by_nanos as f64)?;
        self.adjustments += 1;
        if by_nanos.unsigned_abs() >= self.config.step_threshold_nanos as u64 {
            self.anchor_offset += by_nanos as f64;
            self.slew_remaining = 0.0;
            self.steps += 1;
            Ok(AdjustmentKind::Step)
        } else {
            self.slew_remaining = by_nanos as f64;
            Ok(AdjustmentKind::Slew)
        }
    }

    /// Steps the clock by `by_nanos` at once, whatever its size.
    pub fn step(&mut self, host: i64, by_nanos: i64) -> Result<(), ClockError> {
        self.reanchor(host);
        let target = self.anchor_offset + by_nanos as f64;
        check_offset(target)?;
        self.anchor_offset = target;
        self.adjustments += 1;
        self.steps += 1;
        Ok(())
    }

    /// Sets the frequency correction (ppm) the clock applies from `host` on, e.g. a drift estimate negated.
    pub fn set_frequency_correction(&mut self, host: i64, ppm: f64) -> Result<(), ClockError> {
        check_drift_ppm(ppm)?;
        self.reanchor(host);
        self.frequency_correction_ppm = ppm;
        Ok(())
    }

    /// Changes the clock's own frequency error (its drift, in ppm) from `host` on, as a failing
    /// oscillator would; the corrections it learned stay.
    pub fn set_drift(&mut self, host: i64, ppm: f64) -> Result<(), ClockError> {
        check_drift_ppm(ppm)?;
        self.reanchor(host);
        self.config.drift_ppm = ppm;
        Ok(())
    }

    /// The frequency correction in force, in ppm.
    pub fn frequency_correction_ppm(&self) -> f64 {
        self.frequency_correction_ppm
    }

    /// Adjustments applied so far (steps and slews).
    pub fn adjustments(&self) -> u64 {
        self.adjustments
    }

    /// Of the adjustments, how many were steps.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;
    const T0: i64 = 1_764_000_000 * SEC;

    fn clock(offset_nanos: i64, drift_ppm: f64) -> VirtualClock {
        VirtualClock::new(ClockConfig { offset_nanos, drift_ppm, ..ClockConfig::default() }, T0).unwrap()
    }

    #[test]
    fn offset_and_drift_add_up_as_configured() {
        // (offset, drift ppm, seconds later, expected offset in ns)
        let cases: &[(i64, f64, i64, f64)] = &[
            (0, 0.0, 100, 0.0),
            (2_500_000_000, 0.0, 10, 2_500_000_000.0),
            (-300_000_000, 0.0, 10, -300_000_000.0),
            (0, 100.0, 10, 1_000_000.0),  // 100 ppm fast: +1 ms after 10 s
            (0, -50.0, 20, -1_000_000.0), // 50 ppm slow: -1 ms after 20 s
            (-5 * SEC, 10.0, 1, -5.0 * SEC as f64 + 10_000.0),
            (0, 0.5, 1, 500.0), // sub-ppm drift is kept exactly
        ];
        for &(offset, drift, secs, want) in cases {
            let c = clock(offset, drift);
            let host = T0 + secs * SEC;
            assert!((c.offset_at(host) - want).abs() < 1e-3, "{offset} {drift} {secs}: {}", c.offset_at(host));
            assert_eq!(c.read(host), host + want.round() as i64);
        }
    }

    #[test]
    fn large_adjustments_step_and_small_ones_slew() {
        let mut c = clock(5 * SEC, 0.0);
        assert_eq!(c.adjust(T0, -5 * SEC), Ok(AdjustmentKind::Step));
        assert_eq!(c.offset_at(T0), 0.0);
        assert_eq!((c.adjustments(), c.steps()), (1, 1));

        // 1 ms at 500 ppm takes 2 s.
        assert_eq!(c.adjust(T0, 1_000_000), Ok(AdjustmentKind::Slew));
        assert_eq!(c.offset_at(T0), 0.0);
        assert_eq!(c.pending_slew(T0), 1_000_000.0);
        assert_eq!(c.settled_offset_at(T0), 1_000_000.0);
        assert!((c.offset_at(T0 + SEC) - 500_000.0).abs() < 1e-6);
        assert!((c.offset_at(T0 + 2 * SEC) - 1_000_000.0).abs() < 1e-6);
        assert!((c.offset_at(T0 + 100 * SEC) - 1_000_000.0).abs() < 1e-6, "a slew stops when used up");
        assert_eq!(c.pending_slew(T0 + 3 * SEC), 0.0);
        assert_eq!((c.adjustments(), c.steps()), (2, 1));
    }

    #[test]
    fn negative_slews_never_run_the_clock_backwards() {
        let cfg =
            ClockConfig { drift_ppm: -MAX_DRIFT_PPM, max_slew_ppm: MAX_SLEW_PPM, step_threshold_nanos: i64::MAX, ..ClockConfig::default() };
        let mut c = VirtualClock::new(cfg, T0).unwrap();
        c.set_frequency_correction(T0, -MAX_DRIFT_PPM).unwrap();
        c.adjust(T0, -SEC).unwrap();
        let mut last = c.read(T0);
        for i in 1..=200_000 {
            let now = c.read(T0 + i * 37);
            assert!(now >= last, "clock went backwards at step {i}: {last} -> {now}");
            last = now;
        }
        // It did slew: 70% of 7.4 ms of host time is gone from the reading.
        assert!(c.offset_at(T0 + 200_000 * 37) < -5_000_000.0);
    }

    #[test]
    fn a_new_correction_replaces_the_pending_slew_and_a_step_cancels_it() {
        let mut c = clock(0, 0.0);
        c.adjust(T0, 40_000_000).unwrap();
        // 1 s later 0.5 ms is slewed; a new measurement says 2 ms more is needed: that replaces the rest.
        c.adjust(T0 + SEC, 2_000_000).unwrap();
        assert!((c.offset_at(T0 + SEC) - 500_000.0).abs() < 1e-3);
        assert!((c.pending_slew(T0 + SEC) - 2_000_000.0).abs() < 1e-3);
        assert!((c.settled_offset_at(T0 + SEC) - 2_500_000.0).abs() < 1e-3);
        // A step moves the clock at once and drops what was pending.
        assert_eq!(c.adjust(T0 + SEC, 200_000_000), Ok(AdjustmentKind::Step));
        assert!((c.offset_at(T0 + SEC) - 200_500_000.0).abs() < 1e-3);
        assert_eq!(c.pending_slew(T0 + SEC), 0.0);
        assert_eq!((c.adjustments(), c.steps()), (3, 1));
    }

    #[test]
    fn frequency_correction_cancels_drift() {
        let mut c = clock(0, 80.0);
        c.set_frequency_correction(T0 + 10 * SEC, -80.0).unwrap();
        let at_10 = c.offset_at(T0 + 10 * SEC);
        assert!((at_10 - 800_000.0).abs() < 1e-3);
        assert!((c.offset_at(T0 + 1000 * SEC) - at_10).abs() < 1e-3, "corrected drift no longer accumulates");
        assert_eq!(c.frequency_correction_ppm(), -80.0);
    }

    #[test]
    fn explicit_steps_ignore_the_threshold() {
        let mut c = clock(0, 0.0);
        c.step(T0, 1_000).unwrap();
        assert_eq!(c.read(T0), T0 + 1_000);
        assert_eq!(c.steps(), 1);
    }

    #[test]
    fn a_zero_threshold_steps_everything() {
        let cfg = ClockConfig { step_threshold_nanos: 0, ..ClockConfig::default() };
        let mut c = VirtualClock::new(cfg, T0).unwrap();
        assert_eq!(c.adjust(T0, 1), Ok(AdjustmentKind::Step));
        assert_eq!(c.adjust(T0, 0), Ok(AdjustmentKind::Step));
    }

    #[test]
    fn refuses_settings_and_adjustments_out_of_range() {
        let bad: &[ClockConfig] = &[
            ClockConfig { drift_ppm: 100_001.0, ..ClockConfig::default() },
            ClockConfig { drift_ppm: f64::NAN, ..ClockConfig::default() },
            ClockConfig { max_slew_ppm: 0.0, ..ClockConfig::default() },
            ClockConfig { max_slew_ppm: 600_000.0, ..ClockConfig::default() },
            ClockConfig { step_threshold_nanos: -1, ..ClockConfig::default() },
            ClockConfig { offset_nanos: MAX_OFFSET_NANOS + 1, ..ClockConfig::default() },
        ];
        for cfg in bad {
            assert!(VirtualClock::new(*cfg, T0).is_err(), "{cfg:?}");
        }
        let mut c = clock(0, 0.0);
        let before = c.clone();
        assert!(matches!(c.adjust(T0, i64::MAX), Err(ClockError::OffsetOutOfRange(_))));
        assert!(c.set_frequency_correction(T0, f64::INFINITY).is_err());
        assert_eq!(c, before, "a refused adjustment changes nothing");
    }

    #[test]
    fn host_time_going_backwards_does_not_disturb_state() {
        let mut c = clock(1_000, 0.0);
        c.adjust(T0, 1_000).unwrap();
        assert_eq!(c.pending_slew(T0 - SEC), 1_000.0);
        assert_eq!(c.offset_at(T0 - SEC), 1_000.0);
        c.adjust(T0 - SEC, 3_000).unwrap();
        assert_eq!(c.pending_slew(T0), 3_000.0, "the new correction replaced the old");
    }
}
