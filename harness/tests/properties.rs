//! Election safety and liveness as properties, for Bully and Ring, on the simulated network under random
//! loss, jitter (reordering), duplication, crashes, restarts, pauses, cut-off nodes and forged requests
//! (from members and strangers, with any term):
//!
//! - safety: no two nodes are ever coordinator in the same term, and no term goes back (checked by the
//!   simulator after every event), whatever the faults;
//! - liveness: once the faults stop (the network is reliable again, nothing is forged, paused and cut-off
//!   nodes are back; crashed nodes may stay dead), the group settles on its highest live id within a
//!   bound.

use std::time::Duration;

use proptest::prelude::*;
use synclab_core::election::{Algorithm, MAX_TERM, Message, NodeId, Term};
use synclab_harness::sim::{Sim, SimConfig, Violation};

/// How long the faults last (simulated).
const FAULTS_FOR: u64 = 3_000;
/// How long a healed group may take to settle: the suspicion timeout and a few elections, with room.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum ForgedTerm {
    /// The receiver's term, plus or minus a little.
    Near(i8),
    Any(Term),
    Max,
}

#[derive(Debug, Clone)]
enum Forged {
    Election(ForgedTerm),
    Coordinator(ForgedTerm),
    Alive(ForgedTerm, Option<NodeId>),
    RingElection(ForgedTerm, NodeId, Vec<NodeId>),
    RingCoordinator(ForgedTerm, NodeId, NodeId),
}

#[derive(Debug, Clone)]
enum Fault {
    Kill(NodeId),
    Restart(NodeId),
    Pause(NodeId),
    Unpause(NodeId),
    Cut(NodeId, bool),
    Suspect(NodeId),
    /// A request to `to` that `from` (a member, or not) never sent.
    Forge {
        to: NodeId,
        from: NodeId,
        message: Forged,
    },
}

#[derive(Debug, Clone)]
struct Scenario {
    algorithm: Algorithm,
    n: u64,
    seed: u64,
    loss: f64,
    jitter_ms: u64,
    duplicate: f64,
    /// Faults at simulated milliseconds, in order.
    faults: Vec<(u64, Fault)>,
}

/// Ids a forger names: members mostly, and strangers (0, above the group, huge).
fn any_id(n: u64) -> impl Strategy<Value = NodeId> {
    prop_oneof![4 => 1..=n, 1 => Just(0), 1 => n + 1..n + 4, 1 => Just(u64::MAX)]
}

fn forged_term() -> impl Strategy<Value = ForgedTerm> {
    prop_oneof![4 => any::<i8>().prop_map(ForgedTerm::Near), 1 => any::<Term>().prop_map(ForgedTerm::Any), 1 => Just(ForgedTerm::Max)]
}

fn forged(n: u64) -> impl Strategy<Value = Forged> {
    prop_oneof![
        forged_term().prop_map(Forged::Election),
        forged_term().prop_map(Forged::Coordinator),
        (forged_term(), proptest::option::of(any_id(n))).prop_map(|(t, c)| Forged::Alive(t, c)),
        (forged_term(), any_id(n), proptest::collection::vec(any_id(n), 0..6)).prop_map(|(t, i, ids)| Forged::RingElection(t, i, ids)),
        (forged_term(), any_id(n), any_id(n)).prop_map(|(t, c, i)| Forged::RingCoordinator(t, c, i)),
    ]
}

fn fault(n: u64) -> impl Strategy<Value = Fault> {
    let node = 1..=n;
    prop_oneof![
        2 => node.clone().prop_map(Fault::Kill),
        2 => node.clone().prop_map(Fault::Restart),
        1 => node.clone().prop_map(Fault::Pause),
        1 => node.clone().prop_map(Fault::Unpause),
        1 => (node.clone(), any::<bool>()).prop_map(|(id, cut)| Fault::Cut(id, cut)),
        1 => node.clone().prop_map(Fault::Suspect),
        4 => (node, any_id(n), forged(n)).prop_map(|(to, from, message)| Fault::Forge { to, from, message }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let algorithm = prop_oneof![Just(Algorithm::Bully), Just(Algorithm::Ring)];
    (algorithm, 2..=6u64, any::<u64>(), 0.0..0.3f64, 0..20u64, 0.0..0.3f64).prop_flat_map(
        |(algorithm, n, seed, loss, jitter_ms, duplicate)| {
            let faults = proptest::collection::vec((0..FAULTS_FOR, fault(n)), 0..24).prop_map(|mut faults| {
                faults.sort_by_key(|(at, _)| *at);
                faults
            });
            faults.prop_map(move |faults| Scenario { algorithm, n, seed, loss, jitter_ms, duplicate, faults })
        },
    )
}

fn term(sim: &Sim, to: NodeId, t: &ForgedTerm) -> Term {
    match *t {
        ForgedTerm::Near(d) => sim.node(to).core().term().saturating_add_signed(i64::from(d)),
        ForgedTerm::Any(t) => t,
        ForgedTerm::Max => MAX_TERM,
    }
}

fn message(sim: &Sim, to: NodeId, forged: &Forged) -> Message {
    match forged {
        Forged::Election(t) => Message::Election { term: term(sim, to, t) },
        Forged::Coordinator(t) => Message::Coordinator { term: term(sim, to, t) },
        Forged::Alive(t, coordinator) => Message::Alive { term: term(sim, to, t), coordinator: *coordinator },
        Forged::RingElection(t, initiator, ids) => {
            Message::RingElection { term: term(sim, to, t), initiator: *initiator, ids: ids.clone() }
        }
        Forged::RingCoordinator(t, coordinator, initiator) => {
            Message::RingCoordinator { term: term(sim, to, t), coordinator: *coordinator, initiator: *initiator }
        }
    }
}

/// Runs the scenario's faults; returns the simulator, faults still on.
fn run_faults(s: &Scenario) -> Sim {
    let config = SimConfig {
        seed: s.seed,
        loss: s.loss,
        jitter: Duration::from_millis(s.jitter_ms),
        duplicate: s.duplicate,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(s.algorithm, s.n, config);
    sim.start_all();
    let mut at = 0;
    for (when, fault) in &s.faults {
        sim.run_for(Duration::from_millis(when - at));
        at = *when;
        match fault {
            Fault::Kill(id) => sim.kill(*id),
            Fault::Restart(id) => sim.start(*id),
            Fault::Pause(id) => sim.pause(*id),
            Fault::Unpause(id) => sim.unpause(*id),
            Fault::Cut(id, cut) => sim.set_cut(*id, *cut),
            Fault::Suspect(id) => {
                if sim.live().contains(id) {
                    sim.suspect(*id);
                }
            }
            Fault::Forge { to, from, message: forged } => {
                let message = message(&sim, *to, forged);
                let _ = sim.forge(*to, *from, message);
            }
        }
    }
    sim.run_for(Duration::from_millis(FAULTS_FOR - at));
    sim
}

fn describe(sim: &Sim, n: u64) -> String {
    (1..=n)
        .map(|id| {
            let c = sim.node(id).core();
            let live = if sim.live().contains(&id) { "" } else { " (down)" };
            format!("[{id}{live}: {} t{} c{:?}]", c.role().as_str(), c.term(), c.coordinator())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 200, ..ProptestConfig::default() })]

    /// Whatever the network and the forgers do, no term ever has two coordinators and no term goes back.
    #[test]
    fn no_two_coordinators_in_a_term_under_any_faults(s in scenario()) {
        let sim = run_faults(&s);
        prop_assert_eq!(sim.violations(), &[] as &[Violation], "{}", describe(&sim, s.n));
    }

    /// Once the faults stop, the group settles on its highest live id within the bound, and stays safe.
    #[test]
    fn a_healed_group_settles_on_its_highest_live_id(s in scenario()) {
        let mut sim = run_faults(&s);
        sim.set_loss(0.0);
        sim.set_duplicate(0.0);
        for id in 1..=s.n {
            sim.set_cut(id, false);
            sim.unpause(id);
        }
        let live = sim.live();
        prop_assume!(!live.is_empty());
        let before = describe(&sim, s.n);
        let settled = sim.run_until_settled(SETTLE_WITHIN);
        prop_assert!(settled.is_some(), "never settled within {:?}; started healing as {}, now {}", SETTLE_WITHIN, before, describe(&sim, s.n));
        let highest = *live.last().expect("a live node");
        prop_assert_eq!(sim.agreed(), Some(highest));
        prop_assert_eq!(sim.coordinators(), vec![highest]);
        prop_assert_eq!(sim.violations(), &[] as &[Violation]);
    }
}
