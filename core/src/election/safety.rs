//! The safety invariants of leader election, written once: the simulator, the fuzz target and the lab's
//! checker hold the machines (or the histories their nodes leave) to these rules and no copies of them.
//!
//! - [`Claims`]: at most one coordinator per term, among nodes that can reach each other (the caller
//!   says which pairs could not: the lab excuses a split brain across a partition, which neither Bully
//!   nor Ring rules out; the simulator and the fuzz target excuse nothing).
//! - [`term_kept`]: a node's term never goes back, across restarts too, as long as its state file
//!   holds what the [`super::Ready`]s asked it to.
//! - [`node`] ([`state`]): a node's own state is sound: its term is at most [`MAX_TERM`], and a coordinator rules a
//!   term it owns and follows itself.
//! - [`request_step`]: one request moves a term by at most [`MAX_TERM_JUMP`] plus one round of terms
//!   (the election it may win at once), and a refused request moves it not at all.
//! - [`Watch`]: the per-node rules and one coordinator per term over a whole group, after every event.

use std::collections::{BTreeMap, BTreeSet};

use super::{Core, MAX_TERM, MAX_TERM_JUMP, NodeId, Role, Term, owner};

/// A safety invariant that broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Two nodes ruled one term (`first` claimed it before `second`).
    #[error("nodes {first} and {second} were both coordinator in term {term}")]
    TwoCoordinators {
        /// The term ruled twice.
        term: Term,
        /// The node that claimed it first.
        first: NodeId,
        /// The node that claimed it later.
        second: NodeId,
    },
    /// A node's term went back (below what it had, or what its state file holds).
    #[error("node {id}'s term went back from {from} to {to}")]
    TermWentBack {
        /// The node.
        id: NodeId,
        /// The term it had (or its state file holds).
        from: Term,
        /// The lower term it has now.
        to: Term,
    },
    /// A term beyond [`MAX_TERM`].
    #[error("node {id} reached term {term}, beyond MAX_TERM")]
    TermTooLarge {
        /// The node.
        id: NodeId,
        /// Its term, above [`MAX_TERM`].
        term: Term,
    },
    /// A coordinator rules a term another member owns.
    #[error("node {id} rules term {term}, which it does not own (its owner is {owner:?})")]
    NotOwner {
        /// The coordinator.
        id: NodeId,
        /// The term it rules.
        term: Term,
        /// The member that owns the term (see [`owner`]; `None` for an empty group).
        owner: Option<NodeId>,
    },
    /// A coordinator follows someone else.
    #[error("coordinator {id} follows {coordinator:?}")]
    CoordinatorFollowsAnother {
        /// The coordinator.
        id: NodeId,
        /// The coordinator it follows instead of itself (`None`: none).
        coordinator: Option<NodeId>,
    },
    /// One request raised a term further than a request may.
    #[error("a request moved node {id}'s term from {from} to {to}")]
    TermJump {
        /// The node that received the request.
        id: NodeId,
        /// Its term before the request.
        from: Term,
        /// Its term after the request.
        to: Term,
    },
    /// A refused request moved a term.
    #[error("a refused request moved node {id}'s term from {from} to {to}")]
    RefusalMovedTerm {
        /// The node that refused the request.
        id: NodeId,
        /// Its term before the request.
        from: Term,
        /// Its term after the request.
        to: Term,
    },
}

/// A node's term never goes back: `now` must be at least `before` (what it had, or what its state file
/// holds).
pub fn term_kept(id: NodeId, before: Term, now: Term) -> Result<(), Violation> {
    if now < before {
        return Err(Violation::TermWentBack { id, from: before, to: now });
    }
    Ok(())
}

/// A node's own state is sound: its term is at most [`MAX_TERM`]; as coordinator it rules a term it owns
/// and follows itself.
pub fn node(core: &Core) -> Result<(), Violation> {
    state(&core.config().members, core.id(), core.term(), core.role(), core.coordinator())
}

/// [`node`]'s rule over the parts of a state: node `id` of `members` in `term`, with `role`, following
/// `coordinator`.
pub fn state(members: &[NodeId], id: NodeId, term: Term, role: Role, coordinator: Option<NodeId>) -> Result<(), Violation> {
    if term > MAX_TERM {
        return Err(Violation::TermTooLarge { id, term });
    }
    if role == Role::Coordinator {
        let owner = owner(members, term);
        if owner != Some(id) {
            return Err(Violation::NotOwner { id, term, owner });
        }
        if coordinator != Some(id) {
            return Err(Violation::CoordinatorFollowsAnother { id, coordinator });
        }
    }
    Ok(())
}

/// One request to node `id` of a group of `members` took its term from `before` to `after`: by at most
/// [`MAX_TERM_JUMP`] plus one round of terms (an election it wins at once claims the next one it owns),
/// and not at all if the request was refused.
pub fn request_step(id: NodeId, members: usize, before: Term, after: Term, refused: bool) -> Result<(), Violation> {
    if refused && after != before {
        return Err(Violation::RefusalMovedTerm { id, from: before, to: after });
    }
    let round = u64::try_from(members).unwrap_or(u64::MAX);
    if after > before.saturating_add(MAX_TERM_JUMP).saturating_add(round) {
        return Err(Violation::TermJump { id, from: before, to: after });
    }
    Ok(())
}

/// Who claimed each term, and when (`T`: the caller's notion of when, or `()`): at most one coordinator
/// per term among nodes that can reach each other.
#[derive(Debug, Clone)]
pub struct Claims<T> {
    /// Each term's claimers, in the order they first claimed it.
    terms: BTreeMap<Term, Vec<(NodeId, T)>>,
    /// Terms with a pair of claimers not excused.
    violated: BTreeSet<Term>,
}

impl<T> Default for Claims<T> {
    fn default() -> Self {
        Self { terms: BTreeMap::new(), violated: BTreeSet::new() }
    }
}

impl<T> Claims<T> {
    /// No claims yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Node `id` rules `term` at `at`. Only its first claim of a term counts; the violations it makes
    /// are one per earlier claimer of the term that `apart(earlier, its at, id, at)` does not excuse.
    pub fn claim(&mut self, term: Term, id: NodeId, at: T, apart: impl Fn(NodeId, &T, NodeId, &T) -> bool) -> Vec<Violation> {
        let claimers = self.terms.entry(term).or_default();
        if claimers.iter().any(|(c, _)| *c == id) {
            return Vec::new();
        }
        let violations: Vec<Violation> = claimers
            .iter()
            .filter(|(first, first_at)| !apart(*first, first_at, id, &at))
            .map(|(first, _)| Violation::TwoCoordinators { term, first: *first, second: id })
            .collect();
        claimers.push((id, at));
        if !violations.is_empty() {
            self.violated.insert(term);
        }
        violations
    }

    /// When `id` first claimed `term`.
    pub fn claimed_at(&self, term: Term, id: NodeId) -> Option<&T> {
        self.terms.get(&term)?.iter().find(|(c, _)| *c == id).map(|(_, at)| at)
    }

    /// How many terms were claimed.
    pub fn terms(&self) -> usize {
        self.terms.len()
    }

    /// Terms that more than one node ruled, every pair of them excused (a split brain).
    pub fn excused_terms(&self) -> usize {
        self.terms.iter().filter(|(term, claimers)| claimers.len() > 1 && !self.violated.contains(term)).count()
    }
}

/// The rules over a whole group of machines, checked after every event: [`node`], [`term_kept`] and one
/// coordinator per term (nothing excused).
#[derive(Debug, Clone, Default)]
pub struct Watch {
    claims: Claims<()>,
    /// Each node's highest term so far.
    terms: BTreeMap<NodeId, Term>,
}

impl Watch {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one node: `core` is its machine's state, `stored` the term its state file holds, and
    /// `running` whether it runs (a crashed node's stale role claims nothing).
    pub fn check(&mut self, core: &Core, stored: Term, running: bool) -> Vec<Violation> {
        let (id, term) = (core.id(), core.term());
        let mut violations: Vec<Violation> = node(core).err().into_iter().collect();
        let last = self.terms.entry(id).or_default();
        violations.extend(term_kept(id, (*last).max(stored), term).err());
        *last = (*last).max(term);
        if running && core.role() == Role::Coordinator {
            violations.extend(self.claims.claim(term, id, (), |_, _, _, _| false));
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::election::{Algorithm, GroupConfig, Machine};

    fn coordinator_of(id: NodeId, term: Term) -> Machine {
        let hb = Duration::from_millis(50);
        let mut m = Machine::new(Algorithm::Bully, GroupConfig::new(id, [1, 2, 3], hb, hb * 4).unwrap(), term);
        m.hold_election(Duration::ZERO, "test");
        m
    }

    /// Pins: two nodes ruling one term are caught once (a node's repeated claims count once); a pair
    /// the caller says could not reach each other is excused and counted as a split brain.
    #[test]
    fn two_coordinators_in_one_term_are_caught_unless_apart() {
        let mut claims = Claims::new();
        assert!(claims.claim(5, 2, 1.0, |_, _, _, _| false).is_empty());
        assert!(claims.claim(5, 2, 1.5, |_, _, _, _| false).is_empty(), "the same node again");
        assert_eq!(claims.claim(5, 3, 2.0, |_, _, _, _| false), vec![Violation::TwoCoordinators { term: 5, first: 2, second: 3 }]);
        assert_eq!(claims.claimed_at(5, 2), Some(&1.0));
        let mut apart = Claims::new();
        apart.claim(7, 1, 0.0, |_, _, _, _| true);
        assert!(apart.claim(7, 2, 0.1, |a, ta, b, tb| a == 1 && b == 2 && *ta < *tb).is_empty());
        assert_eq!((apart.terms(), apart.excused_terms()), (1, 1));
        assert_eq!((claims.terms(), claims.excused_terms()), (1, 0));
    }

    /// Pins: a term that goes back, below what the node had or what its state file holds, is caught.
    #[test]
    fn a_term_that_goes_back_is_caught() {
        assert_eq!(term_kept(1, 4, 3), Err(Violation::TermWentBack { id: 1, from: 4, to: 3 }));
        assert_eq!(term_kept(1, 4, 4), Ok(()));
        let m = coordinator_of(3, 0);
        let mut watch = Watch::new();
        assert!(watch.check(m.core(), 0, true).is_empty());
        // Its state file says it had a later term than the machine holds: a restart lost one.
        let term = m.core().term();
        assert_eq!(watch.check(m.core(), term + 3, true), vec![Violation::TermWentBack { id: 3, from: term + 3, to: term }]);
        // A restart from an older term than it had reached.
        let older = Machine::new(Algorithm::Bully, m.core().config().clone(), 0);
        assert_eq!(watch.check(older.core(), 0, true), vec![Violation::TermWentBack { id: 3, from: term, to: 0 }]);
    }

    /// Pins: a sound coordinator passes; the Watch catches a second coordinator of its term, but not
    /// one that is not running.
    #[test]
    fn the_watch_catches_a_second_coordinator_of_a_term() {
        let m = coordinator_of(3, 0);
        assert_eq!(node(m.core()), Ok(()));
        let mut watch = Watch::new();
        assert!(watch.check(m.core(), 0, true).is_empty());
        // Another node 3 (a second process with the same id) is harmless to itself: same claimer.
        assert!(watch.check(m.core(), 0, true).is_empty());
        let term = m.core().term();
        // Node 2 of a group of two owns term 5 as well, and wins it from term 2.
        let hb = Duration::from_millis(50);
        let mut other = Machine::new(Algorithm::Bully, GroupConfig::new(2, [1, 2], hb, hb * 4).unwrap(), 2);
        other.hold_election(Duration::ZERO, "test");
        assert_eq!((other.core().role(), other.core().term()), (Role::Coordinator, term));
        assert!(watch.check(other.core(), 0, false).is_empty(), "not running: no claim");
        assert_eq!(watch.check(other.core(), 0, true), vec![Violation::TwoCoordinators { term, first: 3, second: 2 }]);
    }

    /// Pins: a term beyond MAX_TERM, a coordinator of a term it does not own or that follows another, a
    /// request jumping further than allowed, and a refusal that moved the term are each caught.
    #[test]
    fn bad_terms_and_bad_steps_are_caught() {
        let hb = Duration::from_millis(50);
        let beyond = Machine::new(Algorithm::Ring, GroupConfig::new(1, [1, 2], hb, hb * 4).unwrap(), MAX_TERM + 1);
        assert_eq!(node(beyond.core()), Err(Violation::TermTooLarge { id: 1, term: MAX_TERM + 1 }));
        // Term 4 of 1..=3 is node 2's (rank 4 % 3 = 1).
        assert_eq!(state(&[1, 2, 3], 2, 4, Role::Coordinator, Some(2)), Ok(()));
        assert_eq!(state(&[1, 2, 3], 3, 4, Role::Coordinator, Some(3)), Err(Violation::NotOwner { id: 3, term: 4, owner: Some(2) }));
        assert_eq!(
            state(&[1, 2, 3], 2, 4, Role::Coordinator, Some(3)),
            Err(Violation::CoordinatorFollowsAnother { id: 2, coordinator: Some(3) })
        );
        assert_eq!(state(&[1, 2, 3], 3, 4, Role::Follower, Some(2)), Ok(()), "a follower rules nothing");
        assert_eq!(request_step(1, 3, 10, 10 + MAX_TERM_JUMP + 3, false), Ok(()));
        assert_eq!(
            request_step(1, 3, 10, 10 + MAX_TERM_JUMP + 4, false),
            Err(Violation::TermJump { id: 1, from: 10, to: 10 + MAX_TERM_JUMP + 4 })
        );
        assert_eq!(request_step(2, 3, 10, 11, true), Err(Violation::RefusalMovedTerm { id: 2, from: 10, to: 11 }));
    }
}
