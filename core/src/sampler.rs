//! The sampler of a sync: takes a client's exchanges as they complete, pairs each with the real transmit
//! time a later answer reports (NTP's interleaved mode), and chooses the sample, the minimum round trip.
//!
//! Both of synclab's clients feed it: the gRPC client (`TimeService`, whose server sends the real
//! transmit time of an answer in the next one, named by the earlier request's send time) and the NTP
//! client (whose interleaved replies carry the previous reply's kernel transmit stamp, named by the
//! previous reply's arrival). Each hands in one [`Completed`] per answer; the sampler keeps the
//! candidates and the one exchange still open to a later answer, and [`Sampler::choose`] estimates the
//! offset from the best of them ([`crate::cristian::estimate`]).
//!
//! The rules, one place for both protocols:
//!
//! * An answer may name an earlier exchange and give its real transmit time ([`Earlier`]). Only the
//!   exchange just before it can be paired, and only if the name is that exchange's own ([`Completed::key`]):
//!   a stale or foreign stamp is ignored. The paired exchange then counts with the real time, as
//!   *interleaved*, in its own place in the order.
//! * A real time that makes its exchange impossible ([`Exchange::new`] refuses it) is not used: the
//!   exchange counts by the time its own answer gave, if it has one, and otherwise fails the sync, as any
//!   impossible exchange does.
//! * What an answer's own transmit time is worth is the protocol's ([`Transmit`]): a basic NTP reply's
//!   counts at once; a gRPC answer's early reading counts only if the next answer brings no real one, so
//!   the last answer (sent only to carry its predecessor's real time) adds none; an interleaved NTP
//!   reply has none of its own.
//! * The sample is the candidate with the smallest round trip, the first of equals
//!   ([`crate::cristian::best_exchange`]).

use crate::cristian::{CristianError, Estimate, Estimator, Exchange, estimate};

/// An answer's own transmit time T3, and when it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// The time the answer left, as the server could read it before sending (a basic NTP reply): the
    /// exchange counts at once, and a real time a later answer reports replaces it.
    Sent(i64),
    /// An early reading, taken before the answer was handed to the transport, whose real transmit time
    /// the server reports in its next answer (synclab's gRPC `TimeService`): the exchange counts once the
    /// next answer is in, by the real time if that answer brought it, else by this one. The last
    /// answer's is never used.
    Early(i64),
    /// None of its own: the answer's transmit stamp is an earlier answer's (an interleaved NTP reply).
    /// The exchange counts only when a later answer reports its real transmit time.
    Later,
}

/// The real transmit time of an earlier answer, as a later answer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earlier<K> {
    /// The earlier exchange's name ([`Completed::key`]), as this answer gives it.
    pub key: K,
    /// The earlier answer's real transmit time T3, on the server's clock, ns.
    pub t3: i64,
}

/// One exchange as it completes: its own timestamps, and what its answer says of the exchange before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed<K> {
    /// What names this exchange when a later answer reports its real transmit time (the gRPC request's
    /// send time; the NTP reply's arrival, which the next request carries).
    pub key: K,
    /// When the request left, on the client's clock, ns.
    pub t1: i64,
    /// When the request arrived, on the server's clock, ns.
    pub t2: i64,
    /// The answer's own transmit time, if any.
    pub transmit: Transmit,
    /// When the answer arrived, on the client's clock, ns.
    pub t4: i64,
    /// The kernel's receive stamp of the request, on the server's clock (checked by
    /// [`Exchange::with_kernel_stamps`]).
    pub kernel_t2: Option<i64>,
    /// The kernel's receive stamp of the answer, on the client's clock (checked likewise).
    pub kernel_t4: Option<i64>,
    /// Whether T1 and T4 themselves are the kernel's departure and arrival stamps (NTP over UDP).
    pub kernel_t1_t4: bool,
    /// The real transmit time of an earlier exchange that this answer reports, if any.
    pub earlier: Option<Earlier<K>>,
}

impl<K> Completed<K> {
    /// The exchange with transmit time `t3`, if its timestamps are possible.
    fn exchange(&self, t3: i64) -> Result<Exchange, CristianError> {
        Ok(Exchange::new(self.t1, self.t2, t3, self.t4)?.with_kernel_stamps(self.kernel_t2, self.kernel_t4))
    }
}

/// One candidate exchange and how it was stamped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The exchange.
    pub exchange: Exchange,
    /// Whether its transmit time is the real one a later answer reported.
    pub interleaved: bool,
    /// Whether its estimate rests on the kernel's timestamps: T1 and T4 taken by the kernel, or the
    /// kernel's receive stamps kept by the exchange.
    pub kernel: bool,
}

/// The sample a sync applies: the estimate from the chosen exchange, and how that exchange was stamped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// The offset and its bound, from the chosen exchange.
    pub estimate: Estimate,
    /// Whether the chosen exchange used the real transmit time a later answer reported.
    pub interleaved: bool,
    /// Whether the chosen exchange's estimate rests on the kernel's timestamps.
    pub kernel: bool,
}

/// The exchange still open to a later answer's real transmit time.
#[derive(Debug, Clone, Copy)]
struct Open<K> {
    completed: Completed<K>,
    /// Its exchange by its own answer's transmit time, once checked.
    own: Option<Exchange>,
    /// Whether that exchange is already among the candidates (its last one).
    counted: bool,
}

/// Pairs and collects one sync's exchanges, then chooses the sample. Generic over the name `K` an
/// exchange goes by on the wire.
#[derive(Debug, Clone)]
pub struct Sampler<K> {
    samples: Vec<Sample>,
    open: Option<Open<K>>,
}

impl<K: PartialEq + Copy> Default for Sampler<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: PartialEq + Copy> Sampler<K> {
    /// An empty sampler.
    pub fn new() -> Self {
        Self { samples: Vec::new(), open: None }
    }

    /// The candidates so far, in the order their exchanges were made.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// How many candidates there are so far.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no candidate yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Takes an exchange as it completes. Fails, and the sync with it, if its own timestamps are
    /// impossible, or if the earlier exchange it completes is impossible and has no transmit time of its
    /// own to fall back on.
    pub fn take(&mut self, completed: Completed<K>) -> Result<(), CristianError> {
        let own = match completed.transmit {
            Transmit::Sent(t3) | Transmit::Early(t3) => Some(completed.exchange(t3)?),
            Transmit::Later => None,
        };
        if let Some(open) = self.open.take() {
            self.close(open, completed.earlier)?;
        }
        let counted = matches!(completed.transmit, Transmit::Sent(_));
        if let (true, Some(exchange)) = (counted, own) {
            self.push(exchange, false, completed.kernel_t1_t4);
        }
        self.open = Some(Open { completed, own, counted });
        Ok(())
    }

    /// Settles the open exchange once the next answer is in: by the real transmit time that answer
    /// reports for it, else by its own.
    fn close(&mut self, open: Open<K>, earlier: Option<Earlier<K>>) -> Result<(), CristianError> {
        let kernel = open.completed.kernel_t1_t4;
        let real = earlier.filter(|e| e.key == open.completed.key).map(|e| open.completed.exchange(e.t3));
        match (real, open.own) {
            (Some(Ok(exchange)), _) => {
                if open.counted {
                    self.samples.pop();
                }
                self.push(exchange, true, kernel);
            }
            // No real time, or an impossible one: the exchange's own, counted now if it waited.
            (_, Some(exchange)) => {
                if !open.counted {
                    self.push(exchange, false, kernel);
                }
            }
            (Some(Err(e)), None) => return Err(e),
            (None, None) => {}
        }
        Ok(())
    }

    fn push(&mut self, exchange: Exchange, interleaved: bool, kernel_t1_t4: bool) {
        self.samples.push(Sample { exchange, interleaved, kernel: kernel_t1_t4 || exchange.has_kernel_stamps() });
    }

    /// The sample: the minimum-round-trip candidate (the first of equals) and the offset `estimator`
    /// gives from it. `server_dispersion_nanos` is the server's own uncertainty, added to the bound. The
    /// exchange still open is left out: no later answer reported its real transmit time.
    pub fn choose(&self, estimator: Estimator, server_dispersion_nanos: u64) -> Result<Choice, CristianError> {
        let exchanges: Vec<Exchange> = self.samples.iter().map(|s| s.exchange).collect();
        let estimate = estimate(&exchanges, estimator, server_dispersion_nanos)?;
        // The same exchange `estimate` took: the first with the smallest round trip.
        let chosen = self.samples.iter().find(|s| s.exchange.round_trip() == estimate.round_trip_nanos);
        Ok(Choice { estimate, interleaved: chosen.is_some_and(|s| s.interleaved), kernel: chosen.is_some_and(|s| s.kernel) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_000_000_000_000_000;
    const US: i64 = 1_000;

    /// The `n`th exchange of a sync whose clocks agree: sent at `T + n ms`, `up` µs to the server, held
    /// 10 µs, `down` µs back. Its key is `n`; its own transmit time is `transmit(t3)`.
    fn completed(n: i64, up: i64, down: i64, transmit: fn(i64) -> Transmit) -> Completed<i64> {
        let t1 = T + n * 1_000 * US;
        let t2 = t1 + up * US;
        let t3 = t2 + 10 * US;
        Completed {
            key: n,
            t1,
            t2,
            transmit: transmit(t3),
            t4: t3 + down * US,
            kernel_t2: None,
            kernel_t4: None,
            kernel_t1_t4: false,
            earlier: None,
        }
    }

    /// `c` reporting the real transmit time `t3` of the exchange named `key`.
    fn reporting(mut c: Completed<i64>, key: i64, t3: i64) -> Completed<i64> {
        c.earlier = Some(Earlier { key, t3 });
        c
    }

    /// The transmit time the exchange `c` really had: its early reading plus 5 µs in the transport.
    fn real_t3(c: &Completed<i64>) -> i64 {
        c.t2 + 15 * US
    }

    #[test]
    fn each_exchange_is_paired_with_the_real_transmit_time_the_next_answer_reports() {
        // Pins the gRPC client's sync: n + 1 answers, each with an early reading and the previous
        // answer's real time; n candidates, all by the real time, the last answer adding none.
        let mut s = Sampler::new();
        let answers: Vec<_> = (0..5).map(|n| completed(n, 20, 20, Transmit::Early)).collect();
        s.take(answers[0]).unwrap();
        assert_eq!(s.len(), 0, "an early reading waits for the next answer");
        for n in 1..5 {
            s.take(reporting(answers[n], n as i64 - 1, real_t3(&answers[n - 1]))).unwrap();
        }
        assert_eq!(s.len(), 4, "the last answer only carries its predecessor's real time");
        for (sample, answer) in s.samples().iter().zip(&answers) {
            assert!(sample.interleaved);
            assert_eq!(sample.exchange.server_time(), real_t3(answer));
        }
    }

    #[test]
    fn a_stale_or_foreign_interleaved_stamp_does_not_pair() {
        // Pins the pairing by name: a real time named for an exchange other than the one just before
        // (two back, or one never made) must leave that exchange with its own early reading.
        let a = completed(0, 20, 20, Transmit::Early);
        let b = completed(1, 20, 20, Transmit::Early);
        let c = completed(2, 20, 20, Transmit::Early);
        let d = completed(3, 20, 20, Transmit::Early);
        let mut s = Sampler::new();
        s.take(a).unwrap();
        s.take(reporting(b, 0, real_t3(&a))).unwrap();
        // c names a again (stale): b must not take a's real time.
        s.take(reporting(c, 0, real_t3(&a))).unwrap();
        // d names an exchange never made.
        s.take(reporting(d, 42, real_t3(&c))).unwrap();
        let samples = s.samples();
        assert_eq!(samples.len(), 3);
        assert!(samples[0].interleaved);
        assert_eq!(samples[0].exchange.server_time(), real_t3(&a));
        for (sample, own) in samples[1..].iter().zip([&b, &c]) {
            assert!(!sample.interleaved, "{sample:?}");
            assert_eq!(sample.exchange, Exchange::new(own.t1, own.t2, own.t2 + 10 * US, own.t4).unwrap());
        }
    }

    #[test]
    fn interleaved_ntp_replies_replace_the_basic_first_and_count_once_each() {
        // Pins the NTP client's interleaved sync: a basic first reply counts at once, the second
        // (interleaved) replaces it with the real time; later replies have no time of their own and
        // count when the next one reports it; the last adds none.
        let mut s = Sampler::new();
        let first = completed(0, 20, 20, Transmit::Sent);
        s.take(first).unwrap();
        assert_eq!(s.len(), 1, "a basic reply counts at once");
        let mut previous = first;
        for n in 1..5 {
            let next = completed(n, 20, 20, |_| Transmit::Later);
            s.take(reporting(next, n - 1, real_t3(&previous))).unwrap();
            assert_eq!(s.len(), n as usize, "one candidate per exchange, the replaced one not twice");
            previous = next;
        }
        assert!(s.samples().iter().all(|x| x.interleaved));
        assert_eq!(s.samples()[0].exchange.server_time(), real_t3(&first));
    }

    #[test]
    fn basic_replies_all_count_the_last_too() {
        // Pins the NTP client against a server that does not interleave: every reply counts by its own
        // transmit time, the last included.
        let mut s = Sampler::new();
        for n in 0..5 {
            s.take(completed(n, 20, 20, Transmit::Sent)).unwrap();
        }
        assert_eq!(s.len(), 5);
        assert!(s.samples().iter().all(|x| !x.interleaved));
        // A reply with no time of its own that no later reply completes adds nothing.
        s.take(completed(5, 1, 1, |_| Transmit::Later)).unwrap();
        s.take(completed(6, 20, 20, Transmit::Sent)).unwrap();
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn an_impossible_real_time_falls_back_to_the_answer_s_own_or_fails() {
        let a = completed(0, 20, 20, Transmit::Early);
        // A real time before the request arrived: impossible.
        let b = reporting(completed(1, 20, 20, Transmit::Early), 0, a.t2 - 1);
        let mut s = Sampler::new();
        s.take(a).unwrap();
        s.take(b).unwrap();
        assert_eq!(s.len(), 1);
        assert!(!s.samples()[0].interleaved, "the early reading, not the impossible real time");
        assert_eq!(s.samples()[0].exchange.server_time(), a.t2 + 10 * US);
        // Without a time of its own the exchange cannot be formed: the sync fails.
        let a = completed(0, 20, 20, |_| Transmit::Later);
        let mut s = Sampler::new();
        s.take(a).unwrap();
        let err = s.take(reporting(completed(1, 20, 20, Transmit::Sent), 0, a.t2 - 1)).unwrap_err();
        assert_eq!(err, CristianError::NegativeProcessing(-1));
        // An answer's own impossible time fails it too.
        let mut bad = completed(0, 20, 20, Transmit::Sent);
        bad.transmit = Transmit::Sent(bad.t2 + (bad.t4 - bad.t1) + 1);
        assert!(matches!(Sampler::new().take(bad), Err(CristianError::ProcessingLongerThanRoundTrip { .. })));
    }

    #[test]
    fn the_choice_is_the_first_minimum_round_trip_with_its_own_stamps() {
        // Pins the choice: the smallest round trip, the first of equals, and the flags of that candidate
        // (not of the others): here the chosen one alone is basic and stamped by the kernel.
        let mut s = Sampler::new();
        let slow = completed(0, 50, 50, Transmit::Early);
        let mut fast = completed(1, 5, 5, Transmit::Early);
        fast.kernel_t1_t4 = true;
        let same = completed(2, 5, 5, Transmit::Early);
        let last = completed(3, 1, 1, Transmit::Early);
        s.take(slow).unwrap();
        s.take(reporting(fast, 0, real_t3(&slow))).unwrap();
        s.take(reporting(same, 9, 0)).unwrap(); // fast's real time never comes
        s.take(reporting(last, 2, real_t3(&same))).unwrap();
        let choice = s.choose(Estimator::Ntp, 7).unwrap();
        assert_eq!(choice.estimate.samples, 3, "the open exchange (the fastest) is left out");
        assert_eq!(choice.estimate.round_trip_nanos, 20 * US);
        assert_eq!(choice.estimate.server_time_nanos, fast.t2 + 10 * US, "the first of equals");
        assert!(!choice.interleaved && choice.kernel, "{choice:?}");
        assert_eq!(choice.estimate.error_bound_nanos, 5_000.0 + 7.0);
        assert_eq!(Sampler::<i64>::new().choose(Estimator::Ntp, 0), Err(CristianError::NoSamples));
    }

    #[test]
    fn kernel_receive_stamps_are_kept_on_the_paired_exchange() {
        // The real transmit time must not lose the kernel's receive stamps of the exchange it completes.
        let mut a = completed(0, 20, 20, Transmit::Early);
        a.kernel_t2 = Some(a.t2 - 2 * US);
        a.kernel_t4 = Some(a.t4 - 2 * US);
        let mut s = Sampler::new();
        s.take(a).unwrap();
        s.take(reporting(completed(1, 20, 20, Transmit::Early), 0, real_t3(&a))).unwrap();
        let sample = s.samples()[0];
        assert!(sample.interleaved && sample.kernel && sample.exchange.has_kernel_stamps(), "{sample:?}");
    }
}
