//! Failure detection, sans-I/O: when a peer whose heartbeats a node expects counts as silent.
//!
//! Two ways, chosen per group ([`Detection`]):
//!
//! - [`Detection::Fixed`]: the textbook's fixed timeout: a peer silent for it is suspected. Too slow on a
//!   quiet link (the timeout must cover the worst delay ever seen) and too eager on a loaded or lossy one
//!   (a delay past it is a false suspicion).
//! - [`Detection::Adaptive`]: a φ-accrual detector (Hayashibara, Défago, Yared and Katayama, *The φ
//!   accrual failure detector*, 2004), as Cassandra and Akka use it: each peer's heartbeat inter-arrival
//!   times are learned over a sliding window ([`Arrivals`]), modelled as a normal distribution, and the
//!   peer is suspected once the silence is so long that a live peer would have kept that silent with a
//!   probability of at most 10^−φ. The deadline that gives, `mean + y·σ`, is kept between a floor (no
//!   suspicion sooner, whatever the history says) and a ceiling (never later).
//!
//! Time is passed in (as everywhere in this crate); nothing here panics, whatever the times: a time that
//! goes backwards records nothing, and a gap longer than the ceiling is recorded as the ceiling.

use std::collections::VecDeque;
use std::time::Duration;

/// How many inter-arrival times an [`Arrivals`] keeps (the newest).
pub const WINDOW: usize = 100;

/// How a node decides that a peer it expects heartbeats from is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// Suspect after this much silence, whatever the link has shown so far.
    Fixed(Duration),
    /// Suspect at a false-suspicion probability learned from the peer's heartbeats.
    Adaptive(Adaptive),
}

impl Detection {
    /// The name used in flags and logs: `fixed` or `adaptive`.
    pub fn name(&self) -> &'static str {
        match self {
            Detection::Fixed(_) => "fixed",
            Detection::Adaptive(_) => "adaptive",
        }
    }

    /// When a peer last heard from at `last`, with `history` learned, counts as silent.
    pub fn deadline(&self, last: Duration, history: Option<&Arrivals>) -> Duration {
        match self {
            Detection::Fixed(timeout) => last.saturating_add(*timeout),
            Detection::Adaptive(adaptive) => last.saturating_add(adaptive.timeout(history)),
        }
    }
}

/// Which detector a node runs, as flags name it (`fixed`, `adaptive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    /// [`Detection::Fixed`] at the node's timeout: the textbook's.
    Fixed,
    /// [`Detection::Adaptive`] with [`Adaptive::for_heartbeat`]'s settings.
    Adaptive,
}

impl crate::Named for Detector {
    const ALL: &'static [Self] = &[Detector::Adaptive, Detector::Fixed];

    fn as_str(self) -> &'static str {
        match self {
            Detector::Fixed => "fixed",
            Detector::Adaptive => "adaptive",
        }
    }
}

impl std::fmt::Display for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::Named::as_str(*self))
    }
}

impl Detector {
    /// The detection it means for a node with this `heartbeat` and `timeout`.
    pub fn detection(self, heartbeat: Duration, timeout: Duration) -> Detection {
        match self {
            Detector::Fixed => Detection::Fixed(timeout),
            Detector::Adaptive => Detection::Adaptive(Adaptive::for_heartbeat(heartbeat)),
        }
    }
}

/// The φ-accrual detector's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adaptive {
    /// The threshold φ: a live peer is suspected with a probability of at most 10^−φ per heartbeat (under
    /// the normal model of its inter-arrival times). Akka's and Cassandra's default is 8.
    pub phi: u32,
    /// The heartbeat period: the inter-arrival time assumed before the first one is measured.
    pub heartbeat: Duration,
    /// The least standard deviation assumed: a perfectly regular link (σ ≈ 0) would otherwise suspect a
    /// heartbeat late by a hair.
    pub min_std_dev: Duration,
    /// No suspicion sooner than this after the last heartbeat.
    pub floor: Duration,
    /// Always suspected this long after the last heartbeat.
    pub ceiling: Duration,
}

impl Adaptive {
    /// The settings for a heartbeat every `heartbeat`: φ = 8; σ at least a tenth of the heartbeat; a floor
    /// of two heartbeats and a fifth, so that one lost heartbeat is never a suspicion, whatever becomes of
    /// the follower's own `Alive` (at 1% loss per message a heartbeat and the follower's question are
    /// both lost once in 5 000 heartbeats: a floor below two heartbeats made that a false election every
    /// few minutes per follower); a ceiling of twenty heartbeats (a second at the default 50 ms), which a
    /// link only reaches when its heartbeats already came that late.
    pub fn for_heartbeat(heartbeat: Duration) -> Self {
        Self {
            phi: 8,
            heartbeat,
            min_std_dev: heartbeat / 10,
            floor: heartbeat.saturating_mul(11) / 5,
            ceiling: heartbeat.saturating_mul(20),
        }
    }

    /// The silence after which a peer with `history` is suspected: `mean + y·σ` for the threshold φ,
    /// between the floor and the ceiling (the ceiling wins if the floor is above it).
    pub fn timeout(&self, history: Option<&Arrivals>) -> Duration {
        let (mean, std_dev) = history.and_then(Arrivals::stats).unwrap_or((secs(self.heartbeat), secs(self.heartbeat) / 4.0));
        let std_dev = std_dev.max(secs(self.min_std_dev));
        let t = mean + quantile(self.phi) * std_dev;
        let t = if t.is_finite() && t > 0.0 { Duration::try_from_secs_f64(t).unwrap_or(self.ceiling) } else { self.ceiling };
        t.max(self.floor).min(self.ceiling)
    }

    /// φ for a peer with `history` silent for `silence`: −log10 of the probability that a live peer keeps
    /// silent that long (0 at no silence, growing without bound; compare with [`Adaptive::phi`]).
    pub fn phi_of(&self, history: Option<&Arrivals>, silence: Duration) -> f64 {
        let (mean, std_dev) = history.and_then(Arrivals::stats).unwrap_or((secs(self.heartbeat), secs(self.heartbeat) / 4.0));
        let std_dev = std_dev.max(secs(self.min_std_dev)).max(1e-9);
        let y = (secs(silence) - mean) / std_dev;
        // Log of P(later) = 1 / (1 + e^(y·(1.5976 + 0.070566·y²))), as Akka computes it, in log space so
        // that a long silence gives a large φ instead of infinity.
        let e = y * (1.5976 + 0.070566 * y * y);
        let ln_p = -ln_1p_exp(e);
        -ln_p / std::f64::consts::LN_10
    }
}

/// ln(1 + e^x) without overflow.
fn ln_1p_exp(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The y at which the logistic approximation of the normal tail is 10^−φ: the root of
/// `1.5976·y + 0.070566·y³ = ln(10^φ − 1)` (one real root: the left side only grows).
pub fn quantile(phi: u32) -> f64 {
    let c = if phi == 0 { 0.0 } else { (10f64.powi(i32::try_from(phi.min(300)).unwrap_or(300)) - 1.0).ln() };
    let (a, b) = (0.070566, 1.5976);
    // Cardano's formula for a·y³ + b·y − c = 0.
    let (p, q) = (b / a, -c / a);
    let d = (q * q / 4.0 + p * p * p / 27.0).sqrt();
    (-q / 2.0 + d).cbrt() + (-q / 2.0 - d).cbrt()
}

/// A peer's heartbeat inter-arrival times, the newest [`WINDOW`] of them, and its last arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arrivals {
    /// Inter-arrival times in nanoseconds, oldest first.
    intervals: VecDeque<u64>,
    sum: u128,
    sum_sq: u128,
    last: Option<Duration>,
}

impl Arrivals {
    /// No arrival seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// A heartbeat arrived at `now`: the time since the last one is learned, no longer than `cap` (a
    /// peer back from a long pause must not make its history useless for a whole window). A time before
    /// the last arrival learns nothing (a clock that went backwards, or events handed in out of order).
    pub fn heard(&mut self, now: Duration, cap: Duration) {
        match self.last {
            Some(last) if now < last => return,
            Some(last) => {
                let gap = now.saturating_sub(last).min(cap);
                self.push(u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX));
            }
            None => {}
        }
        self.last = Some(now);
    }

    /// The peer is heard from at `now`, but not as the next of a series (it just became the one this node
    /// follows): the time since the last arrival is no heartbeat interval and is not learned.
    pub fn restart(&mut self, now: Duration) {
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }

    /// How many intervals are learned.
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Mean and standard deviation of the learned intervals, in seconds; `None` before the first.
    pub fn stats(&self) -> Option<(f64, f64)> {
        let n = self.intervals.len();
        if n == 0 {
            return None;
        }
        let n = n as f64;
        let mean = self.sum as f64 / n;
        let variance = (self.sum_sq as f64 / n - mean * mean).max(0.0);
        Some((mean / 1e9, variance.sqrt() / 1e9))
    }

    fn push(&mut self, nanos: u64) {
        if self.intervals.len() >= WINDOW
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum = self.sum.saturating_sub(u128::from(old));
            self.sum_sq = self.sum_sq.saturating_sub(u128::from(old) * u128::from(old));
        }
        self.intervals.push_back(nanos);
        self.sum = self.sum.saturating_add(u128::from(nanos));
        self.sum_sq = self.sum_sq.saturating_add(u128::from(nanos) * u128::from(nanos));
    }
}

#[cfg(test)]
mod tests;
