//! The fault lab's rules, with no I/O: the scenarios by name ([`scenario`]), each election scenario as a
//! pure plan of steps ([`mod@plan`]), what a run records ([`history`]), the checkers that judge a history
//! ([`check`]), a run's figures beyond them ([`stats`]: availability, leader changes, messages), and
//! the seeded randomness plans are drawn from ([`Rng`]). The runner that plays a plan
//! against a group and observes it lives in the `synclab` crate (`synclab::lab_runner`).

pub mod check;
pub mod history;
pub mod plan;
pub mod scenario;
pub mod stats;

pub use plan::{Plan, PlanError, plan};
pub use scenario::Scenario;

/// A small seeded generator (SplitMix64): the same seed gives the same schedule on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number of the sequence, any `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// `k` distinct items of `items`, in a random order.
    pub fn choose<T: Clone>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut pool: Vec<T> = items.to_vec();
        let mut out = Vec::new();
        while out.len() < k && !pool.is_empty() {
            let i = self.below(pool.len() as u64) as usize;
            out.push(pool.swap_remove(i));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..5).map(|_| r.choose(&[1, 2, 3, 4, 5, 6, 7], 3)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for pick in draw(9) {
            let mut sorted = pick.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "{pick:?}");
        }
    }
}
