use std::time::Duration;

use proptest::prelude::*;

use super::*;

const HB: Duration = Duration::from_millis(50);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A deterministic jitter in `0..span` ms (a linear congruential sequence), so a failure reproduces.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self, span: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % span
    }
}

/// Feeds heartbeats every `HB` plus a jitter in `0..jitter` ms, each lost when `lost(i)`; returns
/// whether any arrival came after the deadline the detector set at the arrival before it, and the
/// arrivals.
fn run(detection: Detection, beats: usize, jitter: u64, lost: impl Fn(usize) -> bool) -> (bool, Arrivals) {
    let mut arrivals = Arrivals::new();
    let mut rng = Jitter(7);
    let mut last = Duration::ZERO;
    arrivals.heard(last, ms(10_000));
    let mut suspected = false;
    for i in 1..=beats {
        let sent = HB * u32::try_from(i).unwrap();
        if lost(i) {
            continue;
        }
        let at = sent + ms(rng.next(jitter.max(1)));
        if at >= detection.deadline(last, Some(&arrivals)) {
            suspected = true;
        }
        arrivals.heard(at, ms(10_000));
        last = at;
    }
    (suspected, arrivals)
}

/// Pins: the threshold's y is the normal tail's (logistic approximation) at 10^-φ: about 5.2 σ at φ = 8,
/// and φ computed at the adaptive timeout is the threshold (when neither bound applies).
#[test]
fn the_threshold_is_the_chosen_false_suspicion_probability() {
    let y = quantile(8);
    assert!((5.1..5.3).contains(&y), "{y}");
    assert!(quantile(1) < quantile(3) && quantile(3) < quantile(8), "a higher φ waits longer");
    let adaptive = Adaptive { floor: ms(1), ceiling: ms(10_000), ..Adaptive::for_heartbeat(HB) };
    let (_, arrivals) = run(Detection::Adaptive(adaptive), 200, 30, |_| false);
    let t = adaptive.timeout(Some(&arrivals));
    let phi = adaptive.phi_of(Some(&arrivals), t);
    assert!((phi - 8.0).abs() < 0.05, "φ at the timeout {t:?} is {phi}");
    assert!(adaptive.phi_of(Some(&arrivals), t / 2) < 1.0, "half the timeout is no suspicion");
}

/// Pins: a regular link with jitter (up to 10 ms on a 50 ms heartbeat) is never suspected in 20 000
/// heartbeats (over 16 minutes).
#[test]
fn a_regular_peer_with_jitter_is_not_suspected() {
    let (suspected, _) = run(Detection::Adaptive(Adaptive::for_heartbeat(HB)), 20_000, 10, |_| false);
    assert!(!suspected);
    // One heartbeat in 50 lost, and no answer to the follower's own question either: still never.
    let (suspected, _) = run(Detection::Adaptive(Adaptive::for_heartbeat(HB)), 20_000, 10, |i| i % 50 == 0);
    assert!(!suspected, "a single lost heartbeat is no suspicion");
    // Two in a row lost is one (the floor is two heartbeats and a fifth).
    let (suspected, _) = run(Detection::Adaptive(Adaptive::for_heartbeat(HB)), 200, 10, |i| i == 100 || i == 101);
    assert!(suspected, "two lost in a row are");
}

/// Pins: the detector adapts where a fixed timeout cannot: on a link whose heartbeats come up to 80 ms
/// late, a fixed timeout as short as the adaptive floor suspects a live peer, the adaptive one learns
/// the jitter and does not.
#[test]
fn a_late_link_is_learned_where_a_fixed_timeout_suspects() {
    let adaptive = Adaptive::for_heartbeat(HB);
    let (fixed, _) = run(Detection::Fixed(adaptive.floor), 2_000, 80, |_| false);
    assert!(fixed, "the fixed timeout suspects a live peer");
    // Having learned the link (a window of its heartbeats, with a few lost), the adaptive one does not.
    let (_, learned) = run(Detection::Adaptive(adaptive), 100, 80, |i| i % 7 == 0);
    let mut arrivals = learned;
    let mut rng = Jitter(11);
    let mut last = HB * 100 + ms(40);
    arrivals.heard(last, ms(10_000));
    for i in 101..2_000u32 {
        let at = HB * i + ms(rng.next(80));
        assert!(at < Detection::Adaptive(adaptive).deadline(last, Some(&arrivals)), "beat {i} suspected");
        arrivals.heard(at, ms(10_000));
        last = at;
    }
}

/// Pins: a burst of lost heartbeats raises the time to suspicion (the gaps are learned), and it falls
/// again once the link is quiet for a window.
#[test]
fn a_burst_of_loss_raises_the_threshold_time() {
    let adaptive = Adaptive::for_heartbeat(HB);
    let (_, steady) = run(Detection::Adaptive(adaptive), 200, 5, |_| false);
    let (_, burst) = run(Detection::Adaptive(adaptive), 200, 5, |i| i > 150 && i % 3 == 0);
    let (before, during) = (adaptive.timeout(Some(&steady)), adaptive.timeout(Some(&burst)));
    assert!(during > before + ms(20), "steady {before:?}, after a burst of loss {during:?}");
    let (_, after) = run(Detection::Adaptive(adaptive), 400, 5, |i| (151..200).contains(&i) && i % 3 == 0);
    assert_eq!(adaptive.timeout(Some(&after)), before, "a window of steady heartbeats later");
}

/// Pins: a silent peer is suspected no later than the ceiling and no sooner than the floor, whatever its
/// history, and before any heartbeat was measured.
#[test]
fn a_silent_peer_is_suspected_between_the_floor_and_the_ceiling() {
    let adaptive = Adaptive::for_heartbeat(HB);
    let detection = Detection::Adaptive(adaptive);
    assert!((adaptive.floor..=adaptive.ceiling).contains(&adaptive.timeout(None)));
    let (_, regular) = run(detection, 200, 1, |_| false);
    assert_eq!(adaptive.timeout(Some(&regular)), adaptive.floor, "a regular link is suspected at the floor");
    let mut slow = Arrivals::new();
    for i in 0..200u64 {
        slow.heard(Duration::from_secs(i * i), Duration::from_secs(3_600));
    }
    assert_eq!(adaptive.timeout(Some(&slow)), adaptive.ceiling, "a link of ever longer gaps reaches the ceiling");
    assert_eq!(Detection::Fixed(ms(200)).deadline(ms(1_000), Some(&slow)), ms(1_200), "the fixed timeout learns nothing");
}

/// Pins: time going backwards learns nothing and moves nothing back; a gap past the cap is learned as
/// the cap.
#[test]
fn backwards_time_is_ignored_and_huge_gaps_are_capped() {
    let mut a = Arrivals::new();
    a.heard(ms(1_000), ms(500));
    a.heard(ms(900), ms(500));
    assert!(a.is_empty());
    a.restart(ms(800));
    a.heard(ms(1_050), ms(500));
    assert_eq!(a.stats(), Some((0.05, 0.0)), "one interval of 50 ms, from the latest arrival");
    a.heard(Duration::MAX, ms(500));
    assert_eq!(a.len(), 2);
    assert_eq!(a.stats().map(|(mean, _)| (mean * 1e3).round()), Some(275.0), "50 ms and the cap of 500 ms");
}

proptest! {
    /// Whatever the arrival times (backwards, equal, huge) and settings, nothing panics, the timeout stays
    /// within its bounds, and the deadline never comes before the last arrival.
    #[test]
    fn absurd_inputs_never_panic(
        times in proptest::collection::vec(any::<u64>(), 0..300),
        restarts in proptest::collection::vec(any::<bool>(), 0..300),
        heartbeat in 1u64..u64::MAX,
        phi in any::<u32>(),
        floor in any::<u64>(),
        ceiling in any::<u64>(),
        cap in any::<u64>(),
    ) {
        let adaptive = Adaptive {
            phi,
            heartbeat: Duration::from_nanos(heartbeat),
            min_std_dev: Duration::from_nanos(heartbeat / 10),
            floor: Duration::from_nanos(floor),
            ceiling: Duration::from_nanos(ceiling),
        };
        let mut a = Arrivals::new();
        for (i, &t) in times.iter().enumerate() {
            let now = Duration::from_nanos(t);
            if restarts.get(i).copied().unwrap_or(false) { a.restart(now) } else { a.heard(now, Duration::from_nanos(cap)) }
            let timeout = adaptive.timeout(Some(&a));
            prop_assert!(timeout <= adaptive.ceiling);
            prop_assert!(timeout >= adaptive.floor.min(adaptive.ceiling));
            prop_assert!(Detection::Adaptive(adaptive).deadline(now, Some(&a)) >= now);
            let phi = adaptive.phi_of(Some(&a), Duration::from_nanos(t));
            prop_assert!(!phi.is_nan());
            prop_assert!(a.len() <= WINDOW);
        }
    }

    /// A regular peer (any period from 1 ms to 10 s, jitter below a tenth of it) is never suspected
    /// between its heartbeats, and a silent one is suspected within the ceiling.
    #[test]
    fn regular_peers_live_and_silent_ones_are_suspected(period in 1u64..10_000, seed in any::<u64>(), beats in 1usize..400) {
        let heartbeat = ms(period);
        let adaptive = Adaptive::for_heartbeat(heartbeat);
        let mut rng = Jitter(seed);
        let mut a = Arrivals::new();
        let mut last = Duration::ZERO;
        a.heard(last, adaptive.ceiling);
        for i in 1..=beats {
            let at = heartbeat * u32::try_from(i).unwrap() + Duration::from_micros(rng.next(period * 100));
            prop_assert!(at < Detection::Adaptive(adaptive).deadline(last, Some(&a)), "beat {} suspected", i);
            a.heard(at, adaptive.ceiling);
            last = at;
        }
        prop_assert!(Detection::Adaptive(adaptive).deadline(last, Some(&a)) <= last + adaptive.ceiling);
    }
}
