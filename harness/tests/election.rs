//! The election state machines on the in-memory network: every failure the issue tracker names, with
//! the safety invariants checked after every event (see [`synclab_harness::sim`]).

use std::time::Duration;

use synclab_core::election::*;
use synclab_harness::sim::{self, Sim, SimConfig};

const SETTLE: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn started(algorithm: Algorithm, n: u64) -> Sim {
    let mut sim = Sim::new(algorithm, n, SimConfig::default());
    sim.start_all();
    assert!(sim.run_until_settled(SETTLE).is_some(), "{algorithm} group of {n} never settled");
    sim
}

fn term_of(sim: &Sim, id: NodeId) -> Term {
    sim.node(id).core().term()
}

/// Settles, then checks what users rely on: one coordinator, the highest live id, everyone agreeing,
/// and no safety violation at any point.
fn assert_settled_on(sim: &mut Sim, expected: NodeId) {
    assert!(sim.run_until_settled(SETTLE).is_some(), "never settled on {expected}: {}", describe(sim));
    assert_eq!(sim.agreed(), Some(expected));
    assert_eq!(sim.coordinators(), vec![expected]);
    assert_eq!(sim.violations(), &[] as &[sim::Violation]);
}

fn describe(sim: &Sim) -> String {
    let mut out = format!("{}:", sim.node(1).algorithm());
    for id in sim.live() {
        let c = sim.node(id).core();
        out += &format!(" [{id}: {} t{} c{:?}]", c.role().as_str(), c.term(), c.coordinator());
    }
    out
}

const BOTH: [Algorithm; 2] = [Algorithm::Bully, Algorithm::Ring];

#[test]
fn a_fresh_group_elects_its_highest_id() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        assert_settled_on(&mut sim, 5);
        // Steady state stays quiet: no election for a long while.
        let term = term_of(&sim, 5);
        sim.reset_counts();
        sim.run_for(Duration::from_secs(60));
        assert_eq!(term_of(&sim, 5), term, "{algorithm}: the term moved in steady state");
        assert_eq!(sim.delivered_of(Kind::Election) + sim.delivered_of(Kind::RingElection), 0, "{algorithm}");
    }
}

#[test]
fn killing_the_coordinator_elects_the_next_highest_in_a_higher_term() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        let before = term_of(&sim, 5);
        sim.kill(5);
        assert_settled_on(&mut sim, 4);
        assert!(term_of(&sim, 4) > before, "{algorithm}");
        for id in 1..=4 {
            assert_eq!(term_of(&sim, id), term_of(&sim, 4), "{algorithm}: node {id}");
        }
    }
}

#[test]
fn killing_the_two_highest_elects_the_third() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        sim.kill(5);
        sim.kill(4);
        assert_settled_on(&mut sim, 3);
    }
}

#[test]
fn the_coordinator_dying_mid_election_is_survived() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        sim.kill(5);
        sim.run_for(ms(230)); // suspicion fires, elections run
        sim.kill(4);
        assert_settled_on(&mut sim, 3);
    }
}

#[test]
fn two_initiators_at_once_agree() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        sim.kill(5);
        sim.suspect(1);
        sim.suspect(2);
        assert_settled_on(&mut sim, 4);
    }
}

#[test]
fn the_highest_node_returns_and_takes_over_with_a_higher_term() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        sim.kill(5);
        assert_settled_on(&mut sim, 4);
        let term4 = term_of(&sim, 4);
        sim.start(5);
        assert_settled_on(&mut sim, 5);
        assert!(term_of(&sim, 5) > term4, "{algorithm}: {} <= {term4}", term_of(&sim, 5));
    }
}

/// A node that comes back to a ring whose members found it dead is on its own election's lap: the lap
/// names it, so the node before it passes the lap to it instead of around it, and it learns that it won
/// from its own lap, not from the first heartbeat a follower sends it (1.5 heartbeats later).
#[test]
fn a_ring_node_that_comes_back_takes_over_within_its_own_laps() {
    // At every phase of node 4's heartbeats (one of them reaching node 5 would also end node 4's
    // suspicion of it).
    for offset in (300..350).step_by(5) {
        let mut sim = started(Algorithm::Ring, 5);
        // Killed: every follower's line breaks at once, so all four find node 5 dead.
        sim.kill(5);
        sim.run_for(ms(2)); // answers node 5 sent before it died arrive first
        for id in 1..=4 {
            sim.lose_coordinator(id);
        }
        assert_settled_on(&mut sim, 4);
        sim.run_for(ms(offset));
        sim.start(5);
        let took = sim.run_until_settled(SETTLE).expect("settled");
        assert_eq!(sim.agreed(), Some(5));
        // Two laps of five hops at 0.5 ms each, on 5 ms ticks; a heartbeat is 50 ms.
        assert!(took <= ms(25), "node 5 took over after {took:?} (offset {offset} ms)");
    }
}

#[test]
fn a_restarted_node_never_claims_an_old_term() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 3);
        for _ in 0..5 {
            let before = term_of(&sim, 3);
            sim.kill(3);
            sim.run_for(ms(400));
            sim.start(3);
            assert_settled_on(&mut sim, 3);
            assert!(term_of(&sim, 3) > before, "{algorithm}");
        }
    }
}

#[test]
fn a_paused_coordinator_steps_down_when_it_thaws() {
    for algorithm in BOTH {
        // The README's experiment: node 5 is gone, node 4 rules, node 4 is paused and thawed.
        let mut sim = started(algorithm, 5);
        sim.kill(5);
        assert_settled_on(&mut sim, 4);
        let old = term_of(&sim, 4);
        sim.pause(4);
        assert_settled_on(&mut sim, 3);
        let t3 = term_of(&sim, 3);
        assert!(t3 > old);
        sim.unpause(4);
        // Node 4 still believes it rules `old` until it hears `t3`; never two coordinators per term.
        assert_eq!(sim.node(4).core().role(), Role::Coordinator);
        assert_settled_on(&mut sim, 4);
        assert!(term_of(&sim, 4) > t3, "{algorithm}");
    }
}

/// A coordinator that goes silent (a paused container) costs the suspicion timeout and no more: the
/// election that follows sends nothing to the node just found dead, so no one waits out an RPC deadline
/// on it.
#[test]
fn a_silent_coordinator_costs_the_timeout_and_not_a_deadline_more() {
    let config = SimConfig::default();
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        sim.run_for(ms(1_000));
        sim.pause(5);
        let took = sim.run_until_settled(SETTLE).expect("settles");
        assert_settled_on(&mut sim, 4);
        // Suspicion comes between timeout − heartbeat and timeout after the pause; the election on
        // loopback latencies takes a few milliseconds. Waiting on node 5 would add the whole deadline.
        assert!(took < config.timers.timeout + config.deadline / 2, "{algorithm}: {took:?} from the pause to node 4 ruling");
        assert!(took >= config.timers.timeout - config.timers.heartbeat, "{algorithm}: suspected after {took:?}, before the timeout");
        // Thawed, node 5 is heard from again and takes over as before.
        sim.unpause(5);
        assert_settled_on(&mut sim, 5);
    }
}

/// The same when a lower node suspects first and draws node 4 into the election before node 4's own
/// timer fires: node 4 asks node 5 as well, but stops waiting for it once node 5's silence reaches the
/// timeout, rather than after the RPC deadline.
#[test]
fn a_node_drawn_into_an_election_stops_waiting_for_a_silent_coordinator_at_the_timeout() {
    let config = SimConfig::default();
    let mut sim = started(Algorithm::Bully, 5);
    sim.run_for(ms(1_000));
    sim.pause(5);
    let paused = sim.now();
    // Node 3 suspects 150 ms after the pause (its own reason: say, a broken line); node 4 has heard
    // from node 5 within the last heartbeat and will not suspect for up to 50 ms more.
    sim.run_for(config.timers.timeout - config.timers.heartbeat);
    sim.suspect(3);
    assert!(sim.run_until_settled(SETTLE).is_some());
    assert_settled_on(&mut sim, 4);
    let took = sim.node(4).core().coordinator_since() - paused;
    assert!(took <= config.timers.timeout + 2 * config.tick, "{took:?} from the pause to node 4 ruling");
}

/// A Bully node that suspects a coordinator which lives (its heartbeats held up on the way, as a busy
/// coordinator's are) asks the nodes between, gets an OK and waits for an announcement that will not
/// come: nobody between runs an election the coordinator does not end. It follows the coordinator again
/// when its held-up heartbeat arrives, in the same term, instead of waiting out the election timeout and
/// holding a second election; nobody else moves.
#[test]
fn a_false_suspicion_ends_at_the_coordinators_next_heartbeat() {
    let config = SimConfig::default();
    let mut sim = started(Algorithm::Bully, 5);
    sim.run_for(ms(1_000));
    let term = term_of(&sim, 5);
    let elections: Vec<u64> = (1..=5).map(|id| sim.elections(id)).collect();
    // Node 5's messages to node 1 are held up 260 ms: node 1 hears nothing for longer than the timeout.
    sim.delay(5, 1, ms(260));
    let held = sim.now();
    sim.run_for(ms(300));
    sim.delay(5, 1, Duration::ZERO);
    sim.run_for(ms(1_000));
    assert_settled_on(&mut sim, 5);
    let node_1 = sim.node(1).core();
    assert_eq!((node_1.term(), term_of(&sim, 5)), (term, term), "the term moved");
    assert_eq!(sim.elections(1), elections[0] + 1, "node 1 held one election");
    let back = node_1.coordinator_since() - held;
    assert!(back <= ms(260) + config.timers.heartbeat + 2 * config.tick, "node 1 followed node 5 again {back:?} after the hold-up began");
    for id in 2..=5 {
        assert!(sim.elections(id) <= elections[id as usize - 1] + 1, "node {id} drawn into more than one election");
    }
}

#[test]
fn a_coordinator_cut_off_is_replaced_and_rejoins() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        sim.set_cut(5, true);
        assert!(sim.run_until_settled(SETTLE).is_some());
        assert_eq!(sim.agreed(), Some(4), "{algorithm}");
        // Node 5 alone still thinks it rules, but in an older term than node 4's.
        assert!(term_of(&sim, 5) < term_of(&sim, 4), "{algorithm}");
        sim.set_cut(5, false);
        assert_settled_on(&mut sim, 5);
    }
}

#[test]
fn slow_links_do_not_break_safety() {
    for algorithm in BOTH {
        let mut sim = started(algorithm, 5);
        // Answers from 4 to 3 take longer than the deadline: 3 believes 4 dead.
        sim.delay(4, 3, ms(150));
        sim.delay(2, 3, ms(80));
        sim.kill(5);
        sim.run_for(Duration::from_secs(3));
        assert_eq!(sim.violations(), &[] as &[sim::Violation], "{algorithm}");
        assert!(sim.coordinators().contains(&4), "{algorithm}: {:?}", sim.coordinators());
    }
}

#[test]
fn message_loss_never_makes_two_coordinators_in_a_term() {
    for algorithm in BOTH {
        for seed in 1..=32 {
            let config = SimConfig { loss: 0.2, seed, ..SimConfig::default() };
            let mut sim = Sim::new(algorithm, 5, config);
            sim.start_all();
            for round in 0..4 {
                sim.run_for(Duration::from_secs(2));
                let victim = 5 - round % 2;
                sim.kill(victim);
                sim.run_for(Duration::from_secs(1));
                sim.start(victim);
            }
            assert_eq!(sim.violations(), &[] as &[sim::Violation], "{algorithm}, seed {seed}");
            sim.set_loss(0.0);
            assert_settled_on(&mut sim, 5);
        }
    }
}

#[test]
fn a_ring_skips_dead_successors() {
    let mut sim = started(Algorithm::Ring, 6);
    sim.kill(6);
    sim.kill(3);
    sim.kill(4);
    assert_settled_on(&mut sim, 5);
    // 2's successors 3 and 4 are dead: its messages went on to 5.
    assert!(sim.node(2).core().counters()[&Kind::RingElection].failed + sim.node(2).core().counters()[&Kind::RingCoordinator].failed > 0);
}

#[test]
fn a_ring_initiator_dying_mid_round_is_finished_by_another() {
    let mut sim = started(Algorithm::Ring, 5);
    sim.kill(5);
    sim.suspect(1);
    sim.run_for(Duration::from_micros(1200)); // the message is past node 2
    sim.kill(1);
    assert_settled_on(&mut sim, 4);
}

#[test]
fn concurrent_ring_elections_are_suppressed() {
    for n in [5u64, 20] {
        let mut sim = started(Algorithm::Ring, n);
        sim.kill(n);
        sim.reset_counts();
        for id in 1..n {
            sim.suspect(id);
        }
        assert_settled_on(&mut sim, n - 1);
        let live = n - 1;
        // Without suppression every initiator's message would go all the way round: live² messages.
        // With it, each lower initiator's message dies at the next initiator, and one goes round.
        let elections = sim.delivered_of(Kind::RingElection);
        assert!(elections <= 2 * live, "n = {n}: {elections} ring election messages");
    }
}

/// Message counts of one election on a quiet network, next to theory.
#[test]
fn message_counts_match_theory() {
    for n in [5u64, 20, 50] {
        // Bully, best case: the next highest notices first. One Election (to the dead node, unanswered),
        // no OK, n - 2 announcements.
        let mut sim = started(Algorithm::Bully, n);
        sim.kill(n);
        sim.reset_counts();
        sim.suspect(n - 1);
        assert_settled_on(&mut sim, n - 1);
        sim.run_for(ms(100)); // the last hops after everyone knows
        assert_eq!(sim.sent().get(&Kind::Election).copied(), Some(1), "n = {n}");
        assert_eq!(sim.delivered_of(Kind::Ok), 0);
        assert_eq!(sim.delivered_of(Kind::Coordinator), n - 2);

        // Bully, worst case: the lowest notices first; every node k < n asks all n - k above it.
        let mut sim = started(Algorithm::Bully, n);
        sim.kill(n);
        sim.reset_counts();
        sim.suspect(1);
        assert_settled_on(&mut sim, n - 1);
        sim.run_for(ms(100)); // the last hops after everyone knows
        assert_eq!(sim.sent().get(&Kind::Election).copied(), Some(n * (n - 1) / 2), "n = {n}");
        assert_eq!(sim.delivered_of(Kind::Ok), (n - 1) * (n - 2) / 2);
        assert_eq!(sim.delivered_of(Kind::Coordinator), n - 2);

        // Ring, one initiator: once round with the election, once with the announcement, over the
        // n - 1 live nodes.
        let mut sim = started(Algorithm::Ring, n);
        sim.kill(n);
        sim.reset_counts();
        sim.suspect(1);
        assert_settled_on(&mut sim, n - 1);
        sim.run_for(ms(100)); // the last hops after everyone knows
        assert_eq!(sim.delivered_of(Kind::RingElection), n - 1, "n = {n}");
        assert_eq!(sim.delivered_of(Kind::RingCoordinator), n - 1);
    }
}

#[test]
fn bad_messages_are_refused_without_changing_state() {
    for algorithm in BOTH {
        let sim = started(algorithm, 5);
        let mut node = sim.node(3).clone();
        let before = (node.core().term(), node.core().role(), node.core().coordinator());
        let now = sim.now();
        let term = node.core().term();
        let wrong_kind = match algorithm {
            Algorithm::Bully => Message::RingElection { term, initiator: 2, ids: vec![2] },
            Algorithm::Ring => Message::Election { term },
        };
        let cases = [
            (9, Message::Alive { term, coordinator: Some(5) }, "not a member"),
            (0, Message::Alive { term, coordinator: Some(5) }, "not a member"),
            (3, Message::Alive { term, coordinator: Some(5) }, "itself"),
            (2, Message::Alive { term, coordinator: Some(7) }, "not a member"),
            (2, wrong_kind, "is not a message of"),
        ];
        for (from, message, why) in cases {
            let err = node.on_request(now, from, message.clone()).expect_err(&format!("{message:?} from {from}"));
            assert!(err.to_string().contains(why), "{err}");
        }
        let algorithm_cases = match algorithm {
            Algorithm::Bully => vec![
                (4, Message::Election { term }, "go to higher ids"),
                // Term + 1 is owned by someone else than node 2 in most cases; find one node 2 does not own.
                (2, Message::Coordinator { term: next_owned_term(&[1, 2, 3, 4, 5], 4, term).unwrap() }, "belongs to node 4"),
            ],
            Algorithm::Ring => vec![
                (2, Message::RingElection { term, initiator: 2, ids: vec![] }, "no ids"),
                (2, Message::RingElection { term, initiator: 1, ids: vec![1, 7, 2] }, "not a member"),
                (2, Message::RingElection { term, initiator: 1, ids: vec![1, 2, 1, 2] }, "twice"),
                (2, Message::RingElection { term, initiator: 4, ids: vec![1, 2] }, "not the first"),
                (2, Message::RingElection { term, initiator: 1, ids: vec![1, 4] }, "not the last"),
                (
                    2,
                    Message::RingCoordinator { term: next_owned_term(&[1, 2, 3, 4, 5], 4, term).unwrap(), coordinator: 2, initiator: 2 },
                    "belongs to node 4",
                ),
            ],
        };
        for (from, message, why) in algorithm_cases {
            let err = node.on_request(now, from, message.clone()).expect_err(&format!("{message:?} from {from}"));
            assert!(err.to_string().contains(why), "{err}");
        }
        assert_eq!((node.core().term(), node.core().role(), node.core().coordinator()), before);
        // Nothing to persist, send, withdraw or publish.
        assert!(node.ready().is_empty(), "a refused message left the node something to do");

        // A stale announcement is answered (so the sender learns the term) but changes nothing.
        let stale_term = next_owned_term(&[1, 2, 3, 4, 5], 4, 0).unwrap();
        assert!(stale_term < term);
        let stale = match algorithm {
            Algorithm::Bully => Message::Coordinator { term: stale_term },
            Algorithm::Ring => Message::RingCoordinator { term: stale_term, coordinator: 4, initiator: 4 },
        };
        let reply = node.on_request(now, 4, stale).expect("answered");
        assert!(!reply.ok);
        assert_eq!(reply.term, term);
        assert_eq!((node.core().term(), node.core().role(), node.core().coordinator()), before);
        assert!(node.ready().is_empty(), "a stale announcement left the node something to do");
    }
}

/// Random crashes, restarts, pauses, cuts and loss, for a long simulated while: never two coordinators
/// in a term, no term going back, and a settled group once the chaos stops.
#[test]
fn chaos_keeps_the_invariants() {
    for algorithm in BOTH {
        for seed in 1..=6u64 {
            let n = 7;
            let mut sim = Sim::new(algorithm, n, SimConfig { loss: 0.05, seed, ..SimConfig::default() });
            sim.start_all();
            let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut next = move |m: u64| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) % m
            };
            for _ in 0..60 {
                let id = 1 + next(n);
                match next(6) {
                    0 => sim.kill(id),
                    1 => sim.start(id),
                    2 => sim.pause(id),
                    3 => sim.unpause(id),
                    4 => sim.set_cut(id, true),
                    _ => sim.set_cut(id, false),
                }
                sim.run_for(ms(50 + next(400)));
                assert_eq!(sim.violations(), &[] as &[sim::Violation], "{algorithm}, seed {seed}");
            }
            sim.set_loss(0.0);
            for id in 1..=n {
                sim.set_cut(id, false);
                sim.unpause(id);
            }
            sim.start(1); // at least one node up
            let highest = *sim.live().last().expect("a live node");
            assert_settled_on(&mut sim, highest);
        }
    }
}

/// With uneven link delays, Election messages arrive after the announcement; they must not each start
/// a new round of elections (which grows into a storm).
#[test]
fn late_election_messages_do_not_restart_the_election() {
    let n = 20u64;
    let mut sim = started(Algorithm::Bully, n);
    let mut x = 7u64;
    for from in 1..=n {
        for to in 1..=n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            sim.delay(from, to, Duration::from_micros((x >> 33) % 30_000));
        }
    }
    sim.kill(n);
    sim.reset_counts();
    sim.suspect(1);
    assert_settled_on(&mut sim, n - 1);
    sim.run_for(Duration::from_secs(1));
    let elections = sim.sent().get(&Kind::Election).copied().unwrap_or(0);
    // Each node holds at most one election: n(n-1)/2 at most.
    assert!(elections <= n * (n - 1) / 2, "{elections} election messages");
    assert_eq!(sim.violations(), &[] as &[sim::Violation]);
}

/// A node that can receive but not send (a one-way link): it cannot win anyone over, but it must not
/// churn through elections either, and the rest of the group must stay settled under its coordinator.
#[test]
fn a_mute_node_does_not_churn_the_group() {
    for algorithm in BOTH {
        for mute in [3, 5] {
            let mut sim = started(algorithm, 5);
            sim.set_mute(mute, true);
            let before: Vec<u64> = (1..=5).map(|id| sim.elections(id)).collect();
            sim.run_for(Duration::from_secs(30));
            let elections: Vec<u64> = (1..=5).map(|id| sim.elections(id) - before[id as usize - 1]).collect();
            eprintln!("{algorithm}: with node {mute} mute, elections per node in 30 s: {elections:?}");
            assert!(elections.iter().all(|&e| e <= 30), "{algorithm}: with node {mute} mute, elections per node in 30 s: {elections:?}");
            assert_eq!(sim.violations(), &[] as &[sim::Violation]);
            sim.set_mute(mute, false);
            assert_settled_on(&mut sim, 5);
        }
    }
}

/// With the election stagger on (beyond the textbook, off by default), a large Bully group that loses
/// its coordinator holds far fewer elections, and elects the same node.
#[test]
fn staggered_elections_elect_the_same_node_with_fewer_messages() {
    let n = 30;
    let mut counts = Vec::new();
    for stagger in [Duration::ZERO, ms(2)] {
        let mut sim = Sim::new(Algorithm::Bully, n, SimConfig { election_stagger: stagger, ..SimConfig::default() });
        sim.start_all();
        assert!(sim.run_until_settled(SETTLE).is_some());
        sim.reset_counts();
        sim.kill(n);
        assert_settled_on(&mut sim, n - 1);
        counts.push(sim.sent().get(&Kind::Election).copied().unwrap_or(0));
    }
    eprintln!("Election messages after the coordinator's death, n = {n}: without stagger {}, with {}", counts[0], counts[1]);
    assert!(counts[1] * 4 < counts[0], "the stagger saved too little: {counts:?}");
}
