//! The maths of Cristian's algorithm, and of NTP's four-timestamp refinement of it. No I/O.
//!
//! One exchange gives four timestamps: the client's clock when the request left (T1) and when the answer
//! arrived (T4), the server's clock when the request arrived (T2) and when the answer left (T3).
//!
//! * Cristian: the server's time T3 was read somewhere within the round trip, so the best guess for the
//!   server's time at T4 is T3 + RTT/2, and the offset `T3 + RTT/2 − T4` is right to within ±RTT/2.
//! * NTP: `θ = ((T2 − T1) + (T3 − T4)) / 2` removes the server's processing time from the estimate, and
//!   the bound shrinks to ±δ/2 with `δ = (T4 − T1) − (T3 − T2)`, the time actually spent on the wire.
//!
//! Both assume the two directions take equally long; the bounds hold whatever the asymmetry. Of several
//! samples the one with the smallest round trip carries the least queueing, so it is kept.
//!
//! An exchange may also carry the kernel's receive timestamps of the request (T2) and of the answer (T4):
//! closer to the true arrivals, so a better estimate, but not guaranteed to be the right segment's. They
//! serve the NTP estimate only when they agree with the four guaranteed timestamps, and the bound is then
//! widened by how far the estimate moved, so it stays true whatever the kernel said.

use serde::Serialize;

/// An exchange whose timestamps cannot be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CristianError {
    /// The answer arrived before the request left (T4 < T1).
    #[error("the answer arrived before the request left (T4 - T1 = {0} ns)")]
    NegativeRoundTrip(i64),
    /// The server says it sent the answer before the request arrived (T3 < T2).
    #[error("the server's transmit time is before its receive time (T3 - T2 = {0} ns)")]
    NegativeProcessing(i64),
    /// The server claims to have held the request longer than the whole round trip.
    #[error("the server held the request {processing} ns, longer than the {rtt} ns round trip")]
    ProcessingLongerThanRoundTrip {
        /// The server's hold time T3 - T2, ns.
        processing: i64,
        /// The round trip T4 - T1, ns.
        rtt: i64,
    },
    /// No usable sample at all.
    #[error("no samples")]
    NoSamples,
}

/// The four timestamps of one exchange, in nanoseconds since the Unix epoch. T1 and T4 are read on the
/// client's clock, T2 and T3 on the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    t1: i64,
    t2: i64,
    t3: i64,
    t4: i64,
    /// The kernel's T2 and T4, when they passed the checks of [`Exchange::with_kernel_stamps`].
    kernel: Option<(i64, i64)>,
}

impl Exchange {
    /// Checks the four timestamps for consistency. The clocks may differ by any amount, but on each side
    /// time must run forwards and the server cannot have held the request longer than the round trip.
    pub fn new(t1: i64, t2: i64, t3: i64, t4: i64) -> Result<Self, CristianError> {
        let rtt = t4.checked_sub(t1).ok_or(CristianError::NegativeRoundTrip(i64::MIN))?;
        let processing = t3.checked_sub(t2).ok_or(CristianError::NegativeProcessing(i64::MIN))?;
        if rtt < 0 {
            return Err(CristianError::NegativeRoundTrip(rtt));
        }
        if processing < 0 {
            return Err(CristianError::NegativeProcessing(processing));
        }
        if processing > rtt {
            return Err(CristianError::ProcessingLongerThanRoundTrip { processing, rtt });
        }
        Ok(Self { t1, t2, t3, t4, kernel: None })
    }

    /// Adds the kernel's receive timestamps of the request (on the server's clock) and of the answer (on
    /// the client's), either of which may be missing. They are kept only if they are consistent: no later
    /// than the reads that returned the data, the server's processing by them no longer than the round
    /// trip by them, and their offset inside the bound of the four guaranteed timestamps.
    pub fn with_kernel_stamps(mut self, t2: Option<i64>, t4: Option<i64>) -> Self {
        self.kernel = None;
        if t2.is_none() && t4.is_none() {
            return self;
        }
        let (k2, k4) = (t2.unwrap_or(self.t2), t4.unwrap_or(self.t4));
        let (t1, t3) = (self.t1 as i128, self.t3 as i128);
        let consistent = k2 <= self.t2 && k4 <= self.t4 && k2 <= self.t3 && t3 - k2 as i128 <= k4 as i128 - t1;
        let theta = ((k2 as i128 - t1) + (t3 - k4 as i128)) as f64 / 2.0;
        if consistent && (theta - self.ntp_offset()).abs() <= self.delay() as f64 / 2.0 {
            self.kernel = Some((k2, k4));
        }
        self
    }

    /// Whether kernel timestamps passed the checks and sharpen the NTP estimate.
    pub fn has_kernel_stamps(&self) -> bool {
        self.kernel.is_some()
    }

    /// The NTP offset by the kernel's timestamps where they are kept, else [`Exchange::ntp_offset`].
    pub fn precise_ntp_offset(&self) -> f64 {
        match self.kernel {
            Some((k2, k4)) => ((k2 as i128 - self.t1 as i128) + (self.t3 as i128 - k4 as i128)) as f64 / 2.0,
            None => self.ntp_offset(),
        }
    }

    /// The round trip as the client saw it, T4 − T1.
    pub fn round_trip(&self) -> i64 {
        self.t4 - self.t1
    }

    /// How long the server held the request, T3 − T2.
    pub fn server_processing(&self) -> i64 {
        self.t3 - self.t2
    }

    /// NTP's delay δ: the round trip less the server's processing, the time spent on the wire.
    pub fn delay(&self) -> i64 {
        self.round_trip() - self.server_processing()
    }

    /// NTP's offset θ = ((T2 − T1) + (T3 − T4)) / 2: how far the server's clock is ahead of the client's.
    pub fn ntp_offset(&self) -> f64 {
        ((self.t2 as i128 - self.t1 as i128) + (self.t3 as i128 - self.t4 as i128)) as f64 / 2.0
    }

    /// Cristian's offset T3 + RTT/2 − T4, which uses the server's transmit time alone.
    pub fn cristian_offset(&self) -> f64 {
        (self.t3 as i128 - self.t4 as i128) as f64 + self.round_trip() as f64 / 2.0
    }

    /// The server's transmit time T3.
    pub fn server_time(&self) -> i64 {
        self.t3
    }

    /// The client's clock when the answer arrived, T4.
    pub fn client_receive_time(&self) -> i64 {
        self.t4
    }
}

/// Which formula turns the chosen exchange into an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// NTP's four-timestamp θ (by the kernel's timestamps where they pass), bound ±δ/2 (plus how far the
    /// kernel's timestamps moved it).
    #[default]
    Ntp,
    /// Cristian's T3 + RTT/2, bound ±RTT/2.
    Cristian,
}

impl crate::Named for Estimator {
    const ALL: &'static [Self] = &[Estimator::Ntp, Estimator::Cristian];

    fn as_str(self) -> &'static str {
        match self {
            Estimator::Ntp => "ntp",
            Estimator::Cristian => "cristian",
        }
    }
}

/// The result of a sync: which offset to apply and how sure it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The estimator used for `offset_nanos`.
    pub estimator: Estimator,
    /// The correction to add to the client's clock, in nanoseconds.
    pub offset_nanos: f64,
    /// The true offset lies within ±this of `offset_nanos` (plus the server's own dispersion).
    pub error_bound_nanos: f64,
    /// NTP's θ for the chosen exchange.
    pub ntp_offset_nanos: f64,
    /// Cristian's offset for the chosen exchange.
    pub cristian_offset_nanos: f64,
    /// The chosen exchange's round trip.
    pub round_trip_nanos: i64,
    /// The chosen exchange's δ.
    pub delay_nanos: i64,
    /// Whether the chosen exchange's estimate used the kernel's receive timestamps.
    pub kernel_stamps: bool,
    /// The server's transmit time T3 of the chosen exchange.
    pub server_time_nanos: i64,
    /// The client's receive time T4 of the chosen exchange, before correction.
    pub client_time_nanos: i64,
    /// How many exchanges were considered.
    pub samples: usize,
}

/// Keeps the exchange with the smallest round trip (the first of equals).
pub fn best_exchange(exchanges: &[Exchange]) -> Option<&Exchange> {
    exchanges.iter().min_by_key(|e| e.round_trip())
}

/// Estimates the offset from the best of `exchanges`. `server_dispersion_nanos` is the server's own
/// uncertainty, added to the bound.
pub fn estimate(exchanges: &[Exchange], estimator: Estimator, server_dispersion_nanos: u64) -> Result<Estimate, CristianError> {
    let best = best_exchange(exchanges).ok_or(CristianError::NoSamples)?;
    let (offset, bound) = match estimator {
        Estimator::Ntp => {
            let precise = best.precise_ntp_offset();
            (precise, (precise - best.ntp_offset()).abs() + best.delay() as f64 / 2.0)
        }
        Estimator::Cristian => (best.cristian_offset(), best.round_trip() as f64 / 2.0),
    };
    Ok(Estimate {
        estimator,
        offset_nanos: offset,
        error_bound_nanos: bound + server_dispersion_nanos as f64,
        ntp_offset_nanos: best.precise_ntp_offset(),
        cristian_offset_nanos: best.cristian_offset(),
        round_trip_nanos: best.round_trip(),
        delay_nanos: best.delay(),
        kernel_stamps: best.has_kernel_stamps(),
        server_time_nanos: best.server_time(),
        client_time_nanos: best.client_receive_time(),
        samples: exchanges.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_000_000_000_000_000;

    /// Builds the exchange a client with clock `offset` (client − true) sees when the request takes `up`
    /// ns, the server holds it `hold` ns, and the answer takes `down` ns. The server's clock is true.
    fn exchange(offset: i64, up: i64, hold: i64, down: i64) -> Exchange {
        let t1 = T + offset;
        let t2 = T + up;
        let t3 = t2 + hold;
        let t4 = T + up + hold + down + offset;
        Exchange::new(t1, t2, t3, t4).unwrap()
    }

    #[test]
    fn symmetric_paths_give_the_exact_offset_both_ways() {
        // (client offset, up, hold, down)
        let cases = [(5_000_000_000, 50_000, 0, 50_000), (-5_000_000_000, 10_000, 0, 10_000), (0, 7, 0, 7), (-1, 1_000, 0, 1_000)];
        for (offset, up, hold, down) in cases {
            let e = exchange(offset, up, hold, down);
            assert_eq!(e.ntp_offset(), -offset as f64, "ntp {offset}");
            assert_eq!(e.cristian_offset(), -offset as f64, "cristian {offset}");
        }
    }

    #[test]
    fn ntp_removes_server_processing_that_cristian_carries() {
        // 40 µs of processing, symmetric 20 µs paths: Cristian's T3 + RTT/2 assumes T3 fell mid-way through
        // the round trip, but it fell half the processing time later.
        let e = exchange(2_000_000, 20_000, 40_000, 20_000);
        assert_eq!(e.ntp_offset(), -2_000_000.0);
        assert_eq!(e.cristian_offset(), -2_000_000.0 + 20_000.0);
        assert_eq!(e.round_trip(), 80_000);
        assert_eq!(e.delay(), 40_000);
        assert_eq!(e.server_processing(), 40_000);
    }

    #[test]
    fn asymmetry_errs_by_half_the_difference_and_stays_within_the_bound() {
        // (offset, up, hold, down)
        let cases = [(0, 90_000, 5_000, 10_000), (3_000_000, 10_000, 5_000, 90_000), (-7, 1, 0, 999_999), (0, 0, 0, 0)];
        for (offset, up, hold, down) in cases {
            let e = exchange(offset, up, hold, down);
            let est = estimate(&[e], Estimator::Ntp, 0).unwrap();
            let error = est.offset_nanos - (-offset as f64);
            assert_eq!(error, (up - down) as f64 / 2.0);
            assert!(error.abs() <= est.error_bound_nanos, "ntp {error} vs ±{}", est.error_bound_nanos);
            let est = estimate(&[e], Estimator::Cristian, 0).unwrap();
            let error = est.offset_nanos - (-offset as f64);
            assert!(error.abs() <= est.error_bound_nanos, "cristian {error} vs ±{}", est.error_bound_nanos);
        }
    }

    #[test]
    fn keeps_the_minimum_round_trip_sample() {
        let samples = [
            exchange(0, 500_000, 0, 20_000),
            exchange(0, 12_000, 1_000, 12_000),
            exchange(0, 30_000, 0, 30_000),
            exchange(0, 12_000, 1_000, 12_000),
        ];
        let est = estimate(&samples, Estimator::Ntp, 0).unwrap();
        assert_eq!(est.round_trip_nanos, 25_000);
        assert_eq!(est.delay_nanos, 24_000);
        assert_eq!(est.offset_nanos, 0.0);
        assert_eq!(est.error_bound_nanos, 12_000.0);
        assert_eq!(est.samples, 4);
        assert!(std::ptr::eq(best_exchange(&samples).unwrap(), &samples[1]), "first of equals");
    }

    #[test]
    fn the_server_dispersion_widens_the_bound() {
        let est = estimate(&[exchange(0, 10, 0, 10)], Estimator::Cristian, 1_000).unwrap();
        assert_eq!(est.error_bound_nanos, 1_010.0);
    }

    #[test]
    fn refuses_impossible_timestamps() {
        assert_eq!(Exchange::new(T, T, T, T - 1), Err(CristianError::NegativeRoundTrip(-1)));
        assert_eq!(Exchange::new(T, T, T - 5, T + 10), Err(CristianError::NegativeProcessing(-5)));
        assert_eq!(Exchange::new(T, T, T + 20, T + 10), Err(CristianError::ProcessingLongerThanRoundTrip { processing: 20, rtt: 10 }));
        assert!(Exchange::new(i64::MIN, 0, 0, i64::MAX).is_err());
        assert!(Exchange::new(0, i64::MIN, i64::MAX, 0).is_err());
        assert_eq!(estimate(&[], Estimator::Ntp, 0), Err(CristianError::NoSamples));
    }

    #[test]
    fn kernel_stamps_sharpen_the_estimate_and_the_bound_stays_true() {
        // True offset 0; 20 µs each way. The server reads the request 30 µs after it arrived, answers 5 µs
        // later, and the client reads the answer 5 µs after it arrived. The kernel saw both arrivals.
        let e = Exchange::new(T, T + 50_000, T + 55_000, T + 80_000).unwrap();
        assert_eq!(e.ntp_offset(), 12_500.0);
        let sharp = e.with_kernel_stamps(Some(T + 20_000), Some(T + 75_000));
        assert!(sharp.has_kernel_stamps());
        let est = estimate(&[sharp], Estimator::Ntp, 0).unwrap();
        assert!(est.kernel_stamps);
        assert_eq!(est.offset_nanos, 0.0);
        // The bound is the guaranteed one (δ/2 = 37.5 µs) widened by the 12.5 µs the estimate moved.
        assert_eq!(est.error_bound_nanos, 50_000.0);
        // Without the kernel's stamps: the plain estimate, within the plain bound.
        let plain = estimate(&[e], Estimator::Ntp, 0).unwrap();
        assert_eq!((plain.offset_nanos, plain.error_bound_nanos, plain.kernel_stamps), (12_500.0, 37_500.0, false));
    }

    #[test]
    fn inconsistent_kernel_stamps_are_dropped() {
        let e = Exchange::new(T, T + 20_000, T + 25_000, T + 50_000).unwrap();
        let cases = [
            (Some(T + 20_001), None),         // later than the read that returned it
            (None, Some(T + 50_001)),         // likewise on the client
            (Some(T + 26_000), None),         // after the answer left
            (Some(T - 10_000), Some(T + 10)), // processing longer than the round trip
            (Some(T - 1_000_000), None),      // an offset far outside the bound
        ];
        for (k2, k4) in cases {
            let x = e.with_kernel_stamps(k2, k4);
            assert!(!x.has_kernel_stamps(), "{k2:?} {k4:?}");
            assert_eq!(x.precise_ntp_offset(), e.ntp_offset());
        }
        assert!(!e.with_kernel_stamps(None, None).has_kernel_stamps());
        assert!(e.with_kernel_stamps(Some(T + 15_000), None).has_kernel_stamps());
    }

    #[test]
    fn clocks_far_apart_do_not_overflow() {
        // A client a decade behind a server: the offsets are large but exact.
        let decade = 315_360_000_000_000_000;
        let e = Exchange::new(T - decade, T + 10, T + 10, T - decade + 20).unwrap();
        assert_eq!(e.ntp_offset(), decade as f64);
    }
}
